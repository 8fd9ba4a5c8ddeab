"""val.py, utils/eval/coco_eval.py and utils/eval/metrics.py on a tiny generated dataset."""
import json
import re

import numpy as np
import pytest
import torch
import yaml
from torch import nn

import val
from models.yolo import Model
from utils.eval import coco_eval
from utils.data.coco import COCO80_TO_91
from utils.data.dataset_yaml import load_data_config
from utils.data.datasets import create_dataloader
from utils.data.demo import DEMO_NAMES, generate_demo_dataset
from utils.loss.yolox_loss import ComputeXLoss
from utils.eval.metrics import ap_per_class, compute_ap, fitness, match_predictions

IMGSZ = 128  # the demo images are 96 x 128: no resize, 32 px of padding


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """(yaml without val_json, yaml with val_json): 12 val images of 96 x 128."""
    root = tmp_path_factory.mktemp("demo")
    generate_demo_dataset(root, seed=3, n_train=0, n_val=12, img_size=(96, 128), progress=False)
    plain = {"path": str(root), "train": "images/val", "val": "images/val", "names": list(DEMO_NAMES)}
    (root / "plain.yaml").write_text(yaml.safe_dump(plain))
    (root / "json.yaml").write_text(yaml.safe_dump({**plain, "val_json": "annotations/instances_val.json"}))
    return root / "plain.yaml", root / "json.yaml"


def loader_of(data, letterbox_mode="center", batch_size=4):
    return create_dataloader(data["val"], IMGSZ, batch_size, 32, workers=0, nc=data["nc"],
                             letterbox_mode=letterbox_mode)[0]


class GroundTruthModel(nn.Module):
    """Emits each batch's targets as eval-mode predictions (obj 1, one-hot class), batch after batch
    in the loader's order; ``shift`` moves every box right by that fraction of its width."""

    def __init__(self, loader, nc, shift=0.0, n_anchors=40):
        super().__init__()
        self.nc = nc
        self.outputs = [self._rows(images, targets, shift, n_anchors) for images, targets, _, _ in loader]
        self.calls = 0
        self.eval()  # val.run takes eval-mode models only

    def _rows(self, images, targets, shift, n_anchors):
        B, _, H, W = images.shape
        out = torch.zeros(B, n_anchors, 5 + self.nc)  # unused anchors: score 0
        slot = [0] * B
        for i, c, cx, cy, w, h in targets.tolist():
            i = int(i)
            out[i, slot[i], :5] = torch.tensor([(cx + shift * w) * W, cy * H, w * W, h * H, 1.0])
            out[i, slot[i], 5 + int(c)] = 1.0
            slot[i] += 1
        return out

    def forward(self, x):
        out = self.outputs[self.calls]
        self.calls += 1
        assert out.shape[0] == x.shape[0]
        return out


def random_model(nc=8):
    """A random yoloxn that makes varied predictions. A fresh one scores every anchor alike: with
    BatchNorm's initial statistics its features vanish. One pass in train mode over random images
    sets the statistics; small random prediction convs then give logits of order 1."""
    torch.manual_seed(0)
    model = Model("models/yoloxn.yaml", nc=nc)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # cumulative average: one pass sets the statistics
    with torch.no_grad():
        model.train()(torch.rand(4, 3, IMGSZ, IMGSZ) * 255)
    d = model.detect
    for conv, std in [(c, 0.003) for c in list(d.cls_preds) + list(d.obj_preds)] + [(c, 0.0015) for c in d.reg_preds]:
        nn.init.normal_(conv.weight, std=std)
        nn.init.zeros_(conv.bias)
    return model.eval()


# ---- the whole run --------------------------------------------------------------------------------
@pytest.mark.parametrize("which", [0, 1], ids=["gt-from-labels", "gt-from-val_json"])
def test_ground_truth_predictions_give_map_1(demo, which):
    data = load_data_config(demo[which])
    loader = loader_of(data)
    (p, r, map50, map_, *loss), maps, times = val.run(data, model=GroundTruthModel(loader, 8), dataloader=loader)
    assert map_ == pytest.approx(1.0, abs=1e-6) and map50 == pytest.approx(1.0, abs=1e-6)
    assert p == pytest.approx(1.0, abs=1e-3) and r == pytest.approx(1.0, abs=1e-3)
    assert loss == [0.0] * 4 and len(times) == 3
    present = {int(lb[0]) for lbs in loader.dataset.labels for lb in lbs}
    assert maps.shape == (8,) and all(maps[c] == pytest.approx(1.0) for c in present)


def test_shifted_predictions_lower_map(demo):
    data = load_data_config(demo[1])
    loader = loader_of(data)
    maps = [val.run(data, model=GroundTruthModel(loader, 8, shift=s), dataloader=loader)[0][3] for s in (0.05, 0.15, 0.4)]
    assert 1.0 > maps[0] > maps[1] > maps[2]


def test_topleft_letterbox_maps_back(demo):
    data = load_data_config(demo[0])
    loader = loader_of(data, "topleft", batch_size=6)
    assert val.run(data, model=GroundTruthModel(loader, 8), dataloader=loader)[0][3] == pytest.approx(1.0, abs=1e-6)


def test_classwise_table_lists_every_class(demo, capsys):
    data = load_data_config(demo[0])
    loader = loader_of(data)
    val.run(data, model=GroundTruthModel(loader, 8), dataloader=loader, classwise=True, verbose=True)
    out = capsys.readouterr().out
    table = [line for line in out.splitlines() if line.startswith("|")]
    assert table[0].split() == ["|", "category", "|", "AP", "|", "category", "|", "AP", "|", "category", "|", "AP", "|"]
    cells = [c.strip() for line in table[1:] for c in line.strip("|").split("|")]
    assert cells[0::2] == list(DEMO_NAMES) + ["None"]  # 8 classes: the last row padded
    assert len(re.findall(r"Average (Precision|Recall)", out)) == 12


def test_real_model_end_to_end_with_loss_and_save_json(demo, tmp_path):
    data = load_data_config(demo[1])
    loader = loader_of(data)
    model = random_model()
    compute_loss = ComputeXLoss(model)
    results, maps, times = val.run(data, model=model, dataloader=loader, conf_thres=0.0, save_json=True,
                                   save_dir=tmp_path, compute_loss=compute_loss)
    plain = val.run(data, model=model, dataloader=loader, conf_thres=0.0)[0]
    assert len(results) == 8 and all(np.isfinite(results))
    assert all(x > 0 for x in results[4:7])  # iou, obj, cls losses from the same forward
    assert results[:4] == pytest.approx(plain[:4], abs=1e-6)  # decoding the raw maps gives the eval output
    rows = json.loads((tmp_path / "predictions.json").read_text())
    assert rows and set(rows[0]) == {"image_id", "category_id", "bbox", "score"}
    assert {r["image_id"] for r in rows} <= set(range(1, 13)) and {r["category_id"] for r in rows} <= set(range(1, 9))
    assert not model.training and not model.detect.training


def test_decode_raw_equals_eval_output():
    model = random_model()
    x = torch.rand(2, 3, 64, 96) * 255
    out, raw = val.forward(model, x, with_raw=True)
    assert isinstance(raw, list) and len(raw) == 3
    torch.testing.assert_close(out, model(x))  # sigmoid over (obj, cls) at once may differ by an ulp


def test_checkpoint_from_the_command_line(demo, tmp_path, capsys):
    model = random_model()
    torch.save({"model": model.state_dict(), "yaml": model.yaml, "names": list(DEMO_NAMES)}, tmp_path / "w.pt")
    results, maps, times = val.main(["--data", str(demo[1]), "--weights", str(tmp_path / "w.pt"), "--img-size",
                                     str(IMGSZ), "--batch-size", "4", "--workers", "0", "--conf-thres", "0",
                                     "--project", str(tmp_path / "runs"), "--save-json", "--classwise"])
    out = capsys.readouterr().out
    assert re.search(r"Speed: [\d.]+ms pre-process, [\d.]+ms inference, [\d.]+ms NMS per image at shape "
                     r"\(4, 3, 128, 128\)", out)
    assert (tmp_path / "runs" / "exp" / "predictions.json").is_file()
    assert (tmp_path / "runs" / "exp" / "results.txt").is_file()


def test_onnx_matches_torch(demo, tmp_path):
    pytest.importorskip("onnxruntime")
    model = random_model()
    f = tmp_path / "m.onnx"
    dummy = torch.rand(1, 3, IMGSZ, IMGSZ) * 255
    torch.onnx.export(model, dummy, str(f), opset_version=13, input_names=["images"], output_names=["output"],
                      dynamo=False)
    onnx_model = val.OnnxModel(f, IMGSZ)
    x = torch.rand(3, 3, IMGSZ, IMGSZ) * 255  # batch 3 through a batch-1 file: sliced
    got, want = onnx_model(x), model(x)
    torch.testing.assert_close(got[..., :4], want[..., :4], rtol=1e-4, atol=1e-2)  # pixels
    torch.testing.assert_close(got[..., 4:], want[..., 4:], rtol=0, atol=1e-4)  # probabilities

    data = load_data_config(demo[1])
    by_onnx = val.run(data, weights=str(f), imgsz=IMGSZ, batch_size=4, workers=0, conf_thres=0.0, save_json=True,
                      save_dir=tmp_path / "onnx")[0]
    by_torch = val.run(data, model=model, dataloader=loader_of(data), conf_thres=0.0, save_json=True,
                       save_dir=tmp_path / "torch")[0]
    np.testing.assert_allclose(by_onnx[:4], by_torch[:4], atol=1e-4)
    # the same detections, not only the same (possibly zero) AP of a random model
    # (row order may differ where scores tie: every ONNX detection must have a torch twin)
    got, want = (json.loads((tmp_path / d / "predictions.json").read_text()) for d in ("onnx", "torch"))
    assert len(got) == len(want) > 100
    as_array = lambda rows: np.array([[r["image_id"], r["category_id"], r["score"], *r["bbox"]] for r in rows])  # noqa: E731
    got, want = as_array(got), as_array(want)
    tol = np.array([1, 1, 1e-4, 0.05, 0.05, 0.05, 0.05]) + 1e-4 * np.abs(want) * [0, 0, 0, 1, 1, 1, 1]  # [N, 7]
    gap = np.abs(got[:, None] - want[None]) / tol[None]  # in tolerances
    worst = gap.max(2).min(1)
    assert (worst <= 1).all(), (worst.max(), got[worst.argmax()])
    with pytest.raises(ValueError, match=r"m.onnx: the ONNX input 'images' is 128x128 .*--img-size is 96; pass --img-size 128"):
        val.run(data, weights=str(f), imgsz=96, workers=0, project=str(tmp_path / "runs"))


# ---- errors ----------------------------------------------------------------------------------------
def test_errors(demo, tmp_path):
    data = load_data_config(demo[0])
    with pytest.raises(FileNotFoundError, match="weights not found: .*missing.pt"):
        val.run(data, weights=str(tmp_path / "missing.pt"), project=str(tmp_path))
    model = Model("models/yoloxn.yaml", nc=3)
    torch.save({"model": model.state_dict(), "yaml": model.yaml}, tmp_path / "nc3.pt")
    with pytest.raises(ValueError, match=r"nc3.pt predicts 3 classes but .*plain.yaml names 8"):
        val.run(data, weights=str(tmp_path / "nc3.pt"), project=str(tmp_path))
    (tmp_path / "empty" / "images").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no images in .*empty"):
        val.run({**data, "val": str(tmp_path / "empty" / "images")}, model=GroundTruthModel([], 8))
    with pytest.raises(ValueError, match="no 'test' split"):
        val.run(data, model=GroundTruthModel([], 8), task="test")
    with pytest.raises(ValueError, match="eval mode"):
        val.run(data, model=Model("models/yoloxn.yaml", nc=8).train())


def test_seed_command_parses():
    opt = val.parse_opt("--data data/coco.yaml --weights runs/train/exp/weights/last.pt --batch-size 64 "
                        "--device 0,1 --save-json --classwise".split())
    assert (opt.batch_size, opt.device, opt.save_json, opt.classwise, opt.imgsz) == (64, "0,1", True, True, 640)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="--device 0,1 asks for CUDA"):
            val.run(data={"names": ["a"], "val": "x"}, weights="last.pt", device="0,1")


# ---- coco_eval ------------------------------------------------------------------------------------------
def test_coco_names_and_ids():
    names = load_data_config("data/coco.yaml")["names"]
    assert tuple(names) == coco_eval.COCO_NAMES
    assert coco_eval.category_ids_for(names) == COCO80_TO_91
    assert coco_eval.category_ids_for(["a", "b"]) == [1, 2]
    assert coco_eval.image_ids_for(["a/000000000139.jpg", "b/000000000285.jpg"]) == [139, 285]
    assert coco_eval.image_ids_for(["a/x.jpg", "b/y.jpg"]) == [1, 2]


def _gt_with_crowd():
    return {"images": [{"id": 1, "file_name": "1.jpg", "height": 100, "width": 100}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "area": 400, "iscrowd": 0},
                            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [50, 50, 40, 40], "area": 1600, "iscrowd": 1}],
            "categories": [{"id": 1, "name": "a"}]}


def test_crowd_ground_truth_is_kept(tmp_path):
    f = tmp_path / "gt.json"
    f.write_text(json.dumps(_gt_with_crowd()))
    gt = coco_eval.gt_from_json(f)
    det = [{"image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "score": 0.9},
           {"image_id": 1, "category_id": 1, "bbox": [52, 52, 30, 30], "score": 0.95}]  # inside the crowd region
    assert coco_eval.evaluate(gt, det).stats[0] == pytest.approx(1.0)  # the crowd match is ignored, not a FP
    without_crowd = {**gt, "annotations": gt["annotations"][:1]}
    assert coco_eval.evaluate(without_crowd, det).stats[0] < 0.9
    single = coco_eval.gt_from_json(f, single_cls=True)
    assert {a["category_id"] for a in single["annotations"]} == {1} and len(single["categories"]) == 1


def test_evaluate_without_detections_prints_zeros():
    result = coco_eval.evaluate(_gt_with_crowd(), [])
    assert result.stats[0] == 0 and len(result.summary.splitlines()) == 12
    assert result.summary.splitlines()[0] == \
        " Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = 0.000"


def test_gt_from_labels_boxes_in_original_pixels():
    labels = [np.array([[1, 0.5, 0.25, 0.2, 0.1]]), np.zeros((0, 5))]
    gt = coco_eval.gt_from_labels([7, 9], ["a/7.jpg", "b/9.jpg"], labels, np.array([[100, 200], [50, 50]]),
                                  ["x", "y"], [1, 2])
    assert gt["images"][0] == {"id": 7, "file_name": "7.jpg", "height": 100, "width": 200}
    ann = gt["annotations"][0]
    assert ann["bbox"] == pytest.approx([80, 20, 40, 10]) and ann["area"] == pytest.approx(400)
    assert (ann["category_id"], ann["iscrowd"], ann["image_id"]) == (2, 0, 7)


def test_classwise_table_layout():
    table = coco_eval.classwise_table(["person", "bicycle", "car", "traffic light"], [0.535, 0.28, 0.399, np.nan])
    assert table.splitlines() == [
        "+---------------+-------+----------+-------+----------+-------+",
        "| category      | AP    | category | AP    | category | AP    |",
        "+---------------+-------+----------+-------+----------+-------+",
        "| person        | 0.535 | bicycle  | 0.280 | car      | 0.399 |",
        "| traffic light | nan   | None     | None  | None     | None  |",
        "+---------------+-------+----------+-------+----------+-------+"]
    assert coco_eval.classwise_table(["a"], [1.0]).splitlines()[1] == "| category | AP    |"


def test_backends():
    with pytest.raises(ValueError, match="unknown COCO backend 'x'; known: pycocotools, faster"):
        coco_eval.coco_api("x")
    try:
        import faster_coco_eval  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install faster-coco-eval"):
            coco_eval.coco_api("faster")
        return
    gt = _gt_with_crowd()
    det = [{"image_id": 1, "category_id": 1, "bbox": [12, 10, 20, 20], "score": 0.9},
           {"image_id": 1, "category_id": 1, "bbox": [10, 14, 18, 20], "score": 0.95},
           {"image_id": 1, "category_id": 1, "bbox": [52, 52, 30, 30], "score": 0.5}]
    for dets in (det, []):
        faster, standard = coco_eval.evaluate(gt, dets, backend="faster"), coco_eval.evaluate(gt, dets)
        np.testing.assert_allclose(faster.stats, standard.stats, rtol=0, atol=1e-12)  # summation order only
        np.testing.assert_allclose(faster.class_ap, standard.class_ap, rtol=0, atol=1e-12)
        assert faster.summary == standard.summary


# ---- to_original and metrics --------------------------------------------------------------------------------
def test_to_original():
    boxes = torch.tensor([[10.0, 20.0, 30.0, 40.0]])
    centred = ((100, 200), ((0.5, 0.5), (0.0, 25.0)))  # 200x100 -> 100x50, 25 px of padding on top
    torch.testing.assert_close(val.to_original(boxes, centred, (100, 100), "center"), torch.tensor([[20.0, -10, 60, 30]]))
    topleft = ((300, 200), ((0.4266, 0.425), (0.0, 0.0)))  # official: divide by min(128/300, 128/200)
    torch.testing.assert_close(val.to_original(boxes, topleft, (128, 128), "topleft"), boxes * 300 / 128)


def test_match_predictions_one_to_one():
    labels = torch.tensor([[0, 0, 0, 10, 10], [1, 20, 20, 30, 30]], dtype=torch.float32)
    dets = torch.tensor([[0, 0, 10, 10, 0.9, 0], [0, 0, 10, 10, 0.8, 0],  # duplicate: only one matches
                         [20, 20, 30, 31, 0.7, 1],  # IoU 10/11 = 0.909
                         [20, 20, 30, 30, 0.6, 0]])  # wrong class
    correct = match_predictions(dets, labels)
    assert correct[:, 0].tolist() == [True, False, True, False]
    assert correct[2].tolist() == [True] * 9 + [False]  # 0.909 < 0.95
    assert match_predictions(dets[:0], labels).shape == (0, 10)


def test_ap_per_class_and_fitness():
    assert compute_ap(np.array([1.0]), np.array([1.0])) == pytest.approx(1.0)
    tp = np.array([[True], [False], [True]])
    m = ap_per_class(tp, np.array([0.9, 0.8, 0.7]), np.array([0, 0, 0]), np.array([0, 0]))
    # envelope: precision 1 up to recall 0.5, then 2/3 up to recall 1
    assert m.ap[0, 0] == pytest.approx(0.5 * 1.0 + 0.5 * 2 / 3, abs=0.01)
    assert m.classes.tolist() == [0] and m.r[0] == pytest.approx(1.0, abs=1e-3)
    empty = ap_per_class(np.zeros((0, 10), bool), np.zeros(0), np.zeros(0), np.array([1, 1]))
    assert empty.ap.shape == (1, 10) and empty.ap.sum() == 0
    assert fitness([0.5, 0.5, 0.6, 0.4]) == pytest.approx(0.42)
    np.testing.assert_allclose(fitness(np.array([[0, 0, 1.0, 0], [0, 0, 0, 1.0]])), [0.1, 0.9])


def test_speed_task_single_cls_and_unlabelled_test_split(demo, tmp_path, capsys):
    data = load_data_config(demo[1])
    loader = loader_of(data)
    results, maps, times = val.run(data, model=GroundTruthModel(loader, 8), dataloader=loader, task="speed")
    assert results[2:4] == (0.0, 0.0) and all(t >= 0 for t in times)  # timing only: no COCOeval
    one = val.run(data, model=GroundTruthModel(loader, 8), dataloader=loader, single_cls=True)
    assert one[0][3] == pytest.approx(1.0, abs=1e-6) and one[1].shape == (1,)

    test_images = tmp_path / "images" / "test"  # images without labels, as COCO test-dev
    test_images.mkdir(parents=True)
    for f in loader.dataset.im_files:
        (test_images / f.rsplit("/", 1)[-1]).write_bytes(open(f, "rb").read())
    unlabelled = {**data, "test": str(test_images)}
    test_loader = create_dataloader(str(test_images), IMGSZ, 4, 32, workers=0, nc=8)[0]
    val.run(unlabelled, model=GroundTruthModel(test_loader, 8), dataloader=test_loader, task="test",
            save_json=True, save_dir=tmp_path / "out")
    rows = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert rows == []  # no labels, so the ground-truth model predicts nothing; the file is still written
    assert "Speed:" not in capsys.readouterr().out  # the trainer's calls print no speed line
