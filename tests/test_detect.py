"""detect.py and the Detector API: sources, files written, boxes in original pixels, torch vs ONNX."""
import json

import cv2
import numpy as np
import pytest
import torch

import detect
from models.yolo import Model
from tests.reference import randomize_bn
from utils.checkpoints import save_checkpoint
from utils.infer.detector import Detector

NAMES = ["cat", "dog", "car"]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    model = randomize_bn(Model("models/yoloxn.yaml", nc=3))
    with torch.no_grad():  # scores around 0.35 (not saturated, so no ties), detections in every image
        for conv in model.detect.obj_preds:
            conv.bias.fill_(1.0)
        for conv in model.detect.cls_preds:
            conv.bias.fill_(0.0)
    path = tmp_path_factory.mktemp("w") / "m.pt"
    save_checkpoint(path, {"model": model.state_dict(), "yaml": model.yaml, "names": NAMES})
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(120, 200), (150, 90)]):
        cv2.imwrite(str(root / f"im{i}.jpg"), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    writer = cv2.VideoWriter(str(root / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 5, (96, 64))
    for _ in range(3):
        writer.write(rng.integers(0, 255, (64, 96, 3), dtype=np.uint8))
    writer.release()
    return root


def test_detector_on_paths_and_arrays(weights, images):
    det = Detector(weights, img_size=128, conf=0.1, max_det=1000)
    by_path = det([str(images / "im0.jpg"), str(images / "im1.jpg")])
    by_array = det(cv2.imread(str(images / "im1.jpg")))
    assert len(by_path) == 2 and by_path[0].shape == (120, 200) and by_path[1].shape == (150, 90)
    np.testing.assert_allclose(sorted_rows(by_path[1].boxes), sorted_rows(by_array[0].boxes), atol=1e-3)
    for r in by_path:
        assert 0 < len(r) and set(r.class_names) <= set(NAMES)
        assert (r.boxes[:, [0, 2]] >= 0).all() and (r.boxes[:, [0, 2]] <= r.shape[1]).all()
        assert (r.boxes[:, [1, 3]] <= r.shape[0]).all() and (r.scores >= 0.1).all()
    with pytest.raises(FileNotFoundError, match="image not found"):
        det(str(images / "missing.jpg"))


def test_detect_writes_what_it_claims(weights, images, tmp_path):
    save_dir = detect.main(["--weights", str(weights), "--source", str(images), "--img-size", "128", "--conf-thres", "0.1",
                            "--save-txt", "--save-conf", "--save-json", "--project", str(tmp_path), "--name", "run"])
    assert (save_dir / "im0.jpg").is_file() and (save_dir / "im1.jpg").is_file() and (save_dir / "clip.mp4").is_file()
    rows = (save_dir / "labels" / "im0.txt").read_text().split("\n")[0].split()
    assert len(rows) == 6 and int(rows[0]) in range(3) and all(0 <= float(v) <= 1 for v in rows[1:5])
    assert len(list((save_dir / "labels").glob("clip_*.txt"))) == 3  # one per video frame
    entries = json.loads((save_dir / "predictions.json").read_text())
    assert {e["name"] for e in entries} <= set(NAMES) and any(e["frame"] == 2 for e in entries)
    glob_dir = detect.main(["--weights", str(weights), "--source", str(images / "*.jpg"), "--img-size", "128",
                            "--project", str(tmp_path), "--name", "glob"])
    assert sorted(p.name for p in glob_dir.iterdir()) == ["im0.jpg", "im1.jpg"]
    with pytest.raises(FileNotFoundError, match="--source not found"):
        detect.main(["--weights", str(weights), "--source", str(images / "nope"), "--project", str(tmp_path)])


def test_onnx_detector_matches_torch(weights, images, tmp_path):
    from models.yolo import load_model

    model = load_model(weights)
    f = tmp_path / "m.onnx"
    torch.onnx.export(model, torch.zeros(1, 3, 128, 128), f, opset_version=13, input_names=["images"],
                      output_names=["output"], dynamo=False)
    a = Detector(weights, img_size=128, conf=0.1)(str(images / "im0.jpg"))[0]
    b = Detector(f, img_size=128, conf=0.1)(str(images / "im0.jpg"))[0]
    assert len(a) == len(b) > 0
    np.testing.assert_allclose(sorted_rows(a.boxes), sorted_rows(b.boxes), atol=1e-2)
    np.testing.assert_allclose(np.sort(a.scores), np.sort(b.scores), atol=1e-4)


def sorted_rows(boxes):
    """Rows in a fixed order, so that equal detections compare equal whatever NMS's order of ties."""
    return boxes[np.lexsort(np.round(boxes).T[::-1])]
