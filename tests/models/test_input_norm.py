"""models/input_norm.py: a model file's ``input`` (order, mean, std) applied as the model's first step."""
import pytest
import torch

from models.parser import ModelConfigError, load_yaml_dict
from models.yolo import Model

INPUT = {"order": "rgb", "mean": [10.0, 20.0, 30.0], "std": [2.0, 4.0, 8.0]}


def test_the_model_normalises_its_bgr_input_as_its_file_says():
    cfg, _ = load_yaml_dict("yoloxn.yaml")
    plain, normed = Model(cfg, nc=3).eval(), Model({**cfg, "input": INPUT}, nc=3).eval()
    normed.load_state_dict(plain.state_dict())  # mean and std are not weights
    assert set(plain.state_dict()) == set(normed.state_dict())
    bgr = torch.rand(1, 3, 64, 64) * 255
    rgb_normed = (bgr.flip(1) - torch.tensor([10.0, 20.0, 30.0]).view(1, 3, 1, 1)) / torch.tensor([2.0, 4.0, 8.0]).view(1, 3, 1, 1)
    torch.testing.assert_close(normed(bgr)[0], plain(rgb_normed)[0])
    assert len(normed.features(bgr)) == len(plain.features(bgr))  # exporters' path normalises too
    torch.testing.assert_close(normed.features(bgr)[0], plain.features(rgb_normed)[0])


@pytest.mark.parametrize("spec, message", [
    ({"order": "hsv"}, "input order must be one of"),
    ({"mean": [1, 2]}, "3 values each"),
    ({"std": [1, 0, 1]}, "std > 0"),
    ({"scale": 255}, "'input' must be a mapping of order, mean and std"),
])
def test_a_bad_input_spec_is_named(spec, message):
    cfg, _ = load_yaml_dict("yoloxn.yaml")
    with pytest.raises(ModelConfigError, match=message):
        Model({**cfg, "input": spec, "yaml_file": "bad.yaml"})
