"""utils/infer/detector.py, the Detector API: paths and arrays, boxes in original pixels, torch vs ONNX."""
import cv2
import numpy as np
import pytest
import torch

from tests.conftest import DETECT_NAMES
from utils.infer.detector import Detector


def test_detector_on_paths_and_arrays(detect_weights, detect_images):
    det = Detector(detect_weights, img_size=128, conf=0.1, max_det=1000)
    by_path = det([str(detect_images / "im0.jpg"), str(detect_images / "im1.jpg")])
    by_array = det(cv2.imread(str(detect_images / "im1.jpg")))
    assert len(by_path) == 2 and by_path[0].shape == (120, 200) and by_path[1].shape == (150, 90)
    np.testing.assert_allclose(sorted_rows(by_path[1].boxes), sorted_rows(by_array[0].boxes), atol=1e-3)
    for r in by_path:
        assert 0 < len(r) and set(r.class_names) <= set(DETECT_NAMES)
        assert (r.boxes[:, [0, 2]] >= 0).all() and (r.boxes[:, [0, 2]] <= r.shape[1]).all()
        assert (r.boxes[:, [1, 3]] <= r.shape[0]).all() and (r.scores >= 0.1).all()
    with pytest.raises(FileNotFoundError, match="image not found"):
        det(str(detect_images / "missing.jpg"))


def test_onnx_detector_matches_torch(detect_weights, detect_images, tmp_path):
    from models.weights import load_model

    model = load_model(detect_weights)
    f = tmp_path / "m.onnx"
    torch.onnx.export(model, torch.zeros(1, 3, 128, 128), f, opset_version=13, input_names=["images"],
                      output_names=["output"], dynamo=False)
    a = Detector(detect_weights, img_size=128, conf=0.1)(str(detect_images / "im0.jpg"))[0]
    b = Detector(f, img_size=128, conf=0.1)(str(detect_images / "im0.jpg"))[0]
    assert len(a) == len(b) > 0
    np.testing.assert_allclose(sorted_rows(a.boxes), sorted_rows(b.boxes), atol=1e-2)
    np.testing.assert_allclose(np.sort(a.scores), np.sort(b.scores), atol=1e-4)


def sorted_rows(boxes):
    """Rows in a fixed order, so that equal detections compare equal whatever NMS's order of ties."""
    return boxes[np.lexsort(np.round(boxes).T[::-1])]


def test_wild_boxes_are_clipped_or_left_out(detect_weights, detect_images, monkeypatch):
    """Boxes of a diverging model come back inside the image, non-finite ones counted and left out, and the
    annotated picture is drawn (OpenCV 5 rejects coordinates beyond int32)."""
    from utils.infer.detector import draw

    det = Detector(detect_weights, img_size=128, conf=0.1)
    real = det.model

    def wild(x):
        out = real(x).clone()
        out[:, :5, :4] = torch.tensor([1e12, -1e12, 1e13, 1e13])  # huge boxes
        out[:, :5, 4:] = 1.0
        out[:, 5, 0] = float("nan")
        out[:, 5, 4:] = 1.0
        return out

    monkeypatch.setattr(det, "model", wild)
    img = cv2.imread(str(detect_images / "im0.jpg"))
    r = det(img)[0]
    assert len(r) > 0 and np.isfinite(r.boxes).all() and det.dropped == 1
    assert (r.boxes[:, [0, 2]] >= 0).all() and (r.boxes[:, [0, 2]] <= 200).all() and (r.boxes[:, [1, 3]] <= 120).all()
    assert draw(img, r).shape == img.shape
