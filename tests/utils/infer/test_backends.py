"""utils/infer/backends.py: boxes back to original pixels, one forward for the eval output and the raw
outputs, the letterbox each kind of weights expects."""
import torch

from models.yolo import Model
from tests.support import random_model
from utils.infer.backends import forward, letterbox_of, to_original

IMGSZ = 128


def test_decode_raw_equals_eval_output():
    model = random_model(size=IMGSZ)
    x = torch.rand(2, 3, 64, 96) * 255
    out, raw = forward(model, x, with_raw=True)
    assert isinstance(raw, list) and len(raw) == 3
    torch.testing.assert_close(out, model(x))  # sigmoid over (obj, cls) at once may differ by an ulp


def test_to_original():
    boxes = torch.tensor([[10.0, 20.0, 30.0, 40.0]])
    centred = ((100, 200), ((0.5, 0.5), (0.0, 25.0)))  # 200x100 -> 100x50, 25 px of padding on top
    torch.testing.assert_close(to_original(boxes, centred, (100, 100), "center"), torch.tensor([[20.0, -10, 60, 30]]))
    topleft = ((300, 200), ((0.4266, 0.425), (0.0, 0.0)))  # official: divide by min(128/300, 128/200)
    torch.testing.assert_close(to_original(boxes, topleft, (128, 128), "topleft"), boxes * 300 / 128)


def test_letterbox_of_official_project_and_exported_weights():
    model = Model("models/yoloxn.yaml", nc=2)
    assert letterbox_of(model) == "center"
    model.official = True  # set by models.weights.load_model for official YOLOX checkpoints
    assert letterbox_of(model) == "topleft"

    class Exported:  # an ONNX / OpenVINO model: the export's metadata says how it was letterboxed
        meta = {"letterbox": "topleft"}

    assert letterbox_of(Exported()) == "topleft"
    Exported.meta = {}
    assert letterbox_of(Exported()) == "center"
