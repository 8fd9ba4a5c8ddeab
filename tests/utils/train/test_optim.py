"""utils/train/optim.py: YOLOv5's three parameter groups for SGD, Adam and AdamW."""
import pytest

from models.yolo import Model


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW"])
def test_optimizer_choice_keeps_the_three_groups(name):
    from utils.train.optim import build_optimizer

    model = Model("models/yoloxn.yaml", nc=8)
    opt = build_optimizer(model, 0.002, 0.9, 5e-4, name=name)
    assert type(opt).__name__ == name and len(opt.param_groups) == 3
    assert [g["weight_decay"] for g in opt.param_groups] == [0.0, 5e-4, 0.0]
    n_params = sum(len(g["params"]) for g in opt.param_groups)
    assert n_params == len(list(model.parameters()))
    if name != "SGD":
        assert all(g["betas"] == (0.9, 0.999) for g in opt.param_groups)
    with pytest.raises(ValueError, match=r"'optimizer' must be one of \('SGD', 'Adam', 'AdamW'\), got 'RMSprop'"):
        build_optimizer(model, 0.01, 0.9, 0.0, name="RMSprop")
