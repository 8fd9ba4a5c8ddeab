"""utils/config.py: the one table of hyperparameters, files checked against it, partial dicts completed."""
import pytest

from utils.config import HYPS, check_value, choices, defaults, load_hyp, with_defaults
from utils.yaml_io import HYPS_DIR


def test_hyp_unknown_and_missing_keys(tmp_path, caplog):
    p = tmp_path / "h.yaml"
    p.write_text("lr0: 0.01\nmomentun: 0.9\n")
    with pytest.raises(ValueError, match=r"unknown hyperparameter\(s\) 'momentun' \(did you mean 'momentum'\?\)"):
        load_hyp(p)
    p.write_text("lr0: 0.02\n")
    hyp = load_hyp(p)
    assert hyp["lr0"] == 0.02 and hyp["momentum"] == 0.937
    assert "missing hyperparameter(s)" in caplog.text and "momentum" in caplog.text
    p.write_text("lr0: fast\n")
    with pytest.raises(ValueError, match="'lr0' must be float"):
        load_hyp(p)
    p.write_text("scheduler: step\n")
    with pytest.raises(ValueError, match="'scheduler' must be one of"):
        load_hyp(p)
    for f in ("hyp.scratch.yolox.yaml", "hyp.yolox.official.yaml"):
        load_hyp(HYPS_DIR / f)


def test_hyp_optimizer_key_is_checked(tmp_path):
    p = tmp_path / "h.yaml"
    p.write_text("optimizer: Lion\n")
    with pytest.raises(ValueError, match="'optimizer' must be one of"):
        load_hyp(p)
    p.write_text("optimizer: AdamW\n")
    assert load_hyp(p)["optimizer"] == "AdamW"
    assert load_hyp(HYPS_DIR / "hyp.demo.yaml")["optimizer"] in ("SGD", "Adam", "AdamW")


def test_every_bundled_hyp_file_is_complete_and_within_the_table():
    for f in sorted(HYPS_DIR.glob("*.yaml")):
        hyp = load_hyp(f)
        assert set(hyp) == set(HYPS), f
    assert load_hyp("hyp.demo.yaml")["nbs"] == 8  # a bare name finds data/hyps/


def test_partial_dicts_take_defaults_and_are_checked():
    hyp = with_defaults({"mosaic": 0.5})
    assert hyp["mosaic"] == 0.5 and hyp["mixup_mode"] == "yolov5" and hyp["simota_prior"] == "center"
    assert with_defaults(None) == defaults()
    assert defaults("augment")["fliplr"] == 0.5 and "lr0" not in defaults("augment")
    hyp["mixup_scale"].append(9.0)  # callers get copies: the table's lists stay put
    assert defaults()["mixup_scale"] == [0.5, 1.5]
    with pytest.raises(ValueError, match=r"hyp: hyperparameter 'mixup_mode' must be one of \('yolov5', 'yolox'\), got 'cutmix'"):
        with_defaults({"mixup_mode": "cutmix"})
    with pytest.raises(ValueError, match=r"unknown hyperparameter\(s\) 'mosiac' \(did you mean 'mosaic'\?\)"):
        with_defaults({"mosiac": 1.0})
    with pytest.raises(ValueError, match="'nesterov' must be bool, got 1"):
        with_defaults({"nesterov": 1})
    with_defaults({"nbs": 64.0, "lr0": 1})  # numbers: ints and floats alike, as YAML writes them


def test_allowed_values_are_the_ones_the_readers_accept():
    """Each choice of the table is built by its reader, and check_value is what they call."""
    import torch

    from utils.train.optim import build_optimizer
    from utils.train.schedule import LRSchedule

    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 1), torch.nn.BatchNorm2d(2))
    for name in choices("optimizer"):
        assert type(build_optimizer(model, 0.01, 0.9, 0.0, name=name)).__name__ == name
    for kind in choices("scheduler"):
        assert 0 < LRSchedule(kind, 10, 0.1).factor(5) <= 1
    with pytest.raises(ValueError, match="'scheduler' must be one of"):
        LRSchedule("step", 10, 0.1)
    check_value("iou_loss", "giou")
    with pytest.raises(ValueError, match="'iou_loss' must be one of"):
        check_value("iou_loss", "wiou")
