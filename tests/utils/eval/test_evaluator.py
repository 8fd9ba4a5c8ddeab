"""utils/eval/evaluator.py, the evaluation engine of val.py and the trainer, on a tiny generated dataset:
mAP 1 for ground truth, the same numbers from torch and ONNX, losses from the same forward, errors."""
import json
import re

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from models.yolo import Model
from tests.support import random_model
from utils.data.dataset_yaml import load_data_config
from utils.data.datasets import create_dataloader
from utils.data.demo import DEMO_NAMES, generate_demo_dataset
from utils.eval.evaluator import EvalOptions, ValOptions, evaluate, run_val
from utils.infer.backends import OnnxModel
from utils.loss import ComputeXLoss

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


# ---- the whole run --------------------------------------------------------------------------------
@pytest.mark.parametrize("which", [0, 1], ids=["gt-from-labels", "gt-from-val_json"])
def test_ground_truth_predictions_give_map_1(demo, which):
    data = load_data_config(demo[which])
    loader = loader_of(data)
    (p, r, map50, map_, *loss), maps, times = evaluate(GroundTruthModel(loader, 8), loader, data)
    assert map_ == pytest.approx(1.0, abs=1e-6) and map50 == pytest.approx(1.0, abs=1e-6)
    assert p == pytest.approx(1.0, abs=1e-3) and r == pytest.approx(1.0, abs=1e-3)
    assert loss == [] and len(times) == 3  # loss items only with a loss
    present = {int(lb[0]) for lbs in loader.dataset.labels for lb in lbs}
    assert maps.shape == (8,) and all(maps[c] == pytest.approx(1.0) for c in present)


def test_shifted_predictions_lower_map(demo):
    data = load_data_config(demo[1])
    loader = loader_of(data)
    maps = [evaluate(GroundTruthModel(loader, 8, shift=s), loader, data)[0][3] for s in (0.05, 0.15, 0.4)]
    assert 1.0 > maps[0] > maps[1] > maps[2]


def test_topleft_letterbox_maps_back(demo):
    data = load_data_config(demo[0])
    loader = loader_of(data, "topleft", batch_size=6)
    assert evaluate(GroundTruthModel(loader, 8), loader, data)[0][3] == pytest.approx(1.0, abs=1e-6)


def test_classwise_table_lists_every_class(demo, capsys):
    data = load_data_config(demo[0])
    loader = loader_of(data)
    evaluate(GroundTruthModel(loader, 8), loader, data, EvalOptions(classwise=True, verbose=True))
    out = capsys.readouterr().out
    table = [line for line in out.splitlines() if line.startswith("|")]
    assert table[0].split() == ["|", "category", "|", "AP", "|", "category", "|", "AP", "|", "category", "|", "AP", "|"]
    cells = [c.strip() for line in table[1:] for c in line.strip("|").split("|")]
    assert cells[0::2] == list(DEMO_NAMES) + [""]  # 8 classes: the last row's unused cells blank
    assert len(re.findall(r"Average (Precision|Recall)", out)) == 12


def test_real_model_end_to_end_with_loss_and_save_json(demo, tmp_path):
    data = load_data_config(demo[1])
    loader = loader_of(data)
    model = random_model(size=IMGSZ)
    compute_loss = ComputeXLoss(model)
    results, maps, times = evaluate(model, loader, data, EvalOptions(conf_thres=0.0, save_json=True),
                                    save_dir=tmp_path, compute_loss=compute_loss)
    plain = evaluate(model, loader, data, EvalOptions(conf_thres=0.0))[0]
    assert len(results) == 8 and all(np.isfinite(results))
    assert all(x > 0 for x in results[4:7])  # iou, obj, cls losses from the same forward
    assert results[:4] == pytest.approx(plain[:4], abs=1e-6)  # decoding the raw maps gives the eval output
    rows = json.loads((tmp_path / "predictions.json").read_text())
    assert rows and set(rows[0]) == {"image_id", "category_id", "bbox", "score"}
    assert {r["image_id"] for r in rows} <= set(range(1, 13)) and {r["category_id"] for r in rows} <= set(range(1, 9))
    assert not model.training and not model.detect.training


def test_onnx_matches_torch(demo, tmp_path):
    pytest.importorskip("onnxruntime")
    model = random_model(size=IMGSZ)
    f = tmp_path / "m.onnx"
    dummy = torch.rand(1, 3, IMGSZ, IMGSZ) * 255
    torch.onnx.export(model, dummy, str(f), opset_version=13, input_names=["images"], output_names=["output"],
                      dynamo=False)
    onnx_model = OnnxModel(f, IMGSZ)
    x = torch.rand(3, 3, IMGSZ, IMGSZ) * 255  # batch 3 through a batch-1 file: sliced
    got, want = onnx_model(x), model(x)
    torch.testing.assert_close(got[..., :4], want[..., :4], rtol=1e-4, atol=1e-2)  # pixels
    torch.testing.assert_close(got[..., 4:], want[..., 4:], rtol=0, atol=1e-4)  # probabilities

    data = load_data_config(demo[1])
    by_onnx = run_val(ValOptions(data=data, weights=str(f), imgsz=IMGSZ, batch_size=4, workers=0, conf_thres=0.0,
                                 save_json=True, save_dir=tmp_path / "onnx"))[0]
    by_torch = evaluate(model, loader_of(data), data, EvalOptions(conf_thres=0.0, save_json=True),
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
        run_val(ValOptions(data=data, weights=str(f), imgsz=96, workers=0, project=str(tmp_path / "runs")))


# ---- errors ----------------------------------------------------------------------------------------
def test_errors(demo, tmp_path):
    data = load_data_config(demo[0])
    with pytest.raises(FileNotFoundError, match="weights not found: .*missing.pt"):
        run_val(ValOptions(data=data, weights=str(tmp_path / "missing.pt"), project=str(tmp_path)))
    model = Model("models/yoloxn.yaml", nc=3)
    torch.save({"model": model.state_dict(), "yaml": model.yaml}, tmp_path / "nc3.pt")
    with pytest.raises(ValueError, match=r"nc3.pt predicts 3 classes but .*plain.yaml names 8"):
        run_val(ValOptions(data=data, weights=str(tmp_path / "nc3.pt"), project=str(tmp_path)))
    (tmp_path / "empty" / "images").mkdir(parents=True)
    model = Model("models/yoloxn.yaml", nc=8)
    torch.save({"model": model.state_dict(), "yaml": model.yaml}, tmp_path / "nc8.pt")
    with pytest.raises(FileNotFoundError, match="no images in .*empty"):
        run_val(ValOptions(data={**data, "val": str(tmp_path / "empty" / "images")}, weights=str(tmp_path / "nc8.pt")))
    with pytest.raises(ValueError, match="no 'test' split"):
        evaluate(GroundTruthModel([], 8), [], data, EvalOptions(task="test"))
    with pytest.raises(ValueError, match="eval mode"):
        evaluate(Model("models/yoloxn.yaml", nc=8).train(), loader_of(data), data)
    with pytest.raises(ValueError, match="save_json and plots write to save_dir"):
        evaluate(GroundTruthModel([], 8), loader_of(data), data, EvalOptions(save_json=True))


def test_options_are_checked_once_when_made():
    with pytest.raises(ValueError, match=r"task must be one of \('val', 'test', 'speed'\), got 'train'"):
        EvalOptions(task="train")
    with pytest.raises(ValueError, match=r"conf_thres must be in \[0, 1\], got 1.5"):
        EvalOptions(conf_thres=1.5)
    with pytest.raises(ValueError, match="coco_backend must be one of"):
        EvalOptions(coco_backend="lvis")
    with pytest.raises(ValueError, match="needs --weights"):
        ValOptions(data="data/demo.yaml")
    with pytest.raises(ValueError, match="--batch-size must be >= 1, got 0"):
        ValOptions(weights="w.pt", batch_size=0)
    with pytest.raises(ValueError, match="letterbox must be one of"):
        ValOptions(weights="w.pt", letterbox="left")
    opts = ValOptions(weights="w.pt", conf_thres=0.25, classwise=True)
    assert opts.eval_options() == EvalOptions(conf_thres=0.25, classwise=True)


def test_speed_task_single_cls_and_unlabelled_test_split(demo, tmp_path, capsys):
    data = load_data_config(demo[1])
    loader = loader_of(data)
    results, maps, times = evaluate(GroundTruthModel(loader, 8), loader, data, EvalOptions(task="speed"))
    assert results[2:4] == (0.0, 0.0)  # timing only: no COCOeval
    assert len(times) == 3 and all(t > 0 for t in times)  # pre-process, inference, NMS each took some time
    assert "Average Precision" not in capsys.readouterr().out
    one = evaluate(GroundTruthModel(loader, 8), loader, data, EvalOptions(single_cls=True))
    assert one[0][3] == pytest.approx(1.0, abs=1e-6) and one[1].shape == (1,)

    test_images = tmp_path / "images" / "test"  # images without labels, as COCO test-dev
    test_images.mkdir(parents=True)
    for f in loader.dataset.im_files:
        (test_images / f.rsplit("/", 1)[-1]).write_bytes(open(f, "rb").read())
    unlabelled = {**data, "test": str(test_images)}
    test_loader = create_dataloader(str(test_images), IMGSZ, 4, 32, workers=0, nc=8)[0]
    evaluate(GroundTruthModel(test_loader, 8), test_loader, unlabelled, EvalOptions(task="test", save_json=True),
             save_dir=tmp_path / "out")
    rows = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert rows == []  # no labels, so the ground-truth model predicts nothing; the file is still written
    assert "Speed:" not in capsys.readouterr().out  # the trainer's calls print no speed line


class WildModel(GroundTruthModel):
    """Ground truth plus a diverging model's boxes: one far outside the picture (beyond int32), one NaN."""

    def forward(self, x):
        out = super().forward(x).clone()
        out[:, -1, :5] = torch.tensor([1e12, -1e12, 1e13, 1e13, 0.9])
        out[:, -1, 5] = 1.0
        out[:, -2, :5] = torch.tensor([float("nan"), 50.0, 10.0, 10.0, 0.9])
        out[:, -2, 6] = 1.0
        return out


def test_wild_boxes_are_clipped_dropped_and_counted_once(demo, tmp_path, caplog):
    """A diverging model's boxes never end a run: the json and the plots get them clipped to the image,
    non-finite ones are left out and counted in one warning."""
    import logging

    data = load_data_config(demo[0])
    loader = loader_of(data)
    with caplog.at_level(logging.WARNING):
        results, _, _ = evaluate(WildModel(loader, 8), loader, data, EvalOptions(save_json=True, plots=True),
                                 save_dir=tmp_path)
    assert (tmp_path / "val_batch0_pred.jpg").is_file() and (tmp_path / "val_batch0_labels.jpg").is_file()
    rows = json.loads((tmp_path / "predictions.json").read_text())
    boxes = np.array([r["bbox"] for r in rows])  # COCO x, y, w, h in original pixels (the images are 128 x 96)
    assert np.isfinite(boxes).all() and (boxes[:, :2] >= 0).all()
    assert (boxes[:, 0] + boxes[:, 2] <= 128 + 1e-3).all() and (boxes[:, 1] + boxes[:, 3] <= 96 + 1e-3).all()
    assert caplog.text.count("detections with a non-finite box or score left out") == 1
    assert "12 detections with a non-finite box" in caplog.text  # one per image
    assert results[3] > 0.9  # the ground truth is still found
