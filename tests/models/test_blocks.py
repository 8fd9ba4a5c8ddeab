"""models/common.py blocks, models/activations.py per-layer activations, models/fuse.py BN folding."""
import math

import pytest
import torch
from torch import nn

from models.activations import KNOWN_ACTIVATIONS, make_activation, split_policy
from models.common import C3, SPP, Conv, DWConv, Focus
from models.parser import ModelConfigError
from models.yolo import Model


def act_of(conv: Conv) -> type:
    return type(conv.act)


def test_activation_names_and_policies():
    assert type(make_activation("relu")) is nn.ReLU
    assert type(make_activation("silu")) is nn.SiLU
    assert type(make_activation("lrelu")) is nn.LeakyReLU and make_activation("lrelu").negative_slope == 0.1
    assert type(make_activation("hardswish")) is nn.Hardswish
    assert type(make_activation("identity")) is nn.Identity
    assert type(make_activation(False)) is nn.Identity
    assert split_policy("relu_silu") == ("relu", "silu")
    assert make_activation("relu") is not make_activation("relu")  # fresh module every time
    with pytest.raises(ValueError, match="unknown activation 'gelu'; known: .*relu_silu"):
        make_activation("gelu")


def test_c3_relu_silu_puts_silu_only_on_conv3():
    block = C3(32, 64, n=2, act="relu_silu")
    silu = [name for name, m in block.named_modules() if isinstance(m, nn.SiLU)]
    relu = [name for name, m in block.named_modules() if isinstance(m, nn.ReLU)]
    assert silu == ["conv3.act"]
    assert sorted(relu) == sorted(["conv1.act", "conv2.act", "m.0.conv1.act", "m.0.conv2.act",
                                   "m.1.conv1.act", "m.1.conv2.act"])


def test_policy_in_other_blocks_puts_silu_on_output_conv():
    assert act_of(Conv(8, 8, act="relu_silu")) is nn.SiLU
    spp = SPP(16, 16, act="relu_silu")
    assert act_of(spp.conv1) is nn.ReLU and act_of(spp.conv2) is nn.SiLU
    dw = DWConv(8, 16, 3, 2, act="relu_silu")
    assert act_of(dw.dconv) is nn.ReLU and act_of(dw.pconv) is nn.SiLU


def test_every_conv_has_its_own_activation_module():
    model = Model("yoloxs_rslu.yaml")
    acts = [m.act for m in model.modules() if isinstance(m, Conv)]
    assert len(acts) == 74 and len({id(a) for a in acts}) == 74


def test_seed_rslu_file_places_silu_where_the_seed_says():
    model = Model("yoloxs_rslu.yaml")
    silu = {name for name, m in model.named_modules() if isinstance(m, nn.SiLU)}
    expected = {"model.1.act", "model.3.act", "model.5.act", "model.7.act",       # stride-2 convs
                "model.8.conv1.act", "model.8.conv2.act",                         # SPP 'silu'
                "model.10.act", "model.14.act", "model.18.act", "model.21.act",   # neck convs 'silu'
                "model.24.act", "model.25.act", "model.26.act"}                   # stems 'silu'
    expected |= {f"model.{i}.conv3.act" for i in (4, 6, 9, 13, 17, 20, 23)}       # relu_silu C3s
    expected |= {f"model.{i}.{k}.act" for i in range(27, 33) for k in (0, 1)}     # head convs: default
    assert silu == expected
    relu_convs = [m for m in model.modules() if isinstance(m, Conv) and isinstance(m.act, nn.ReLU)]
    assert len(relu_convs) == 74 - len(expected)
    # layer 2 is all-ReLU ('relu'), including its conv3; Focus is 'relu'
    assert act_of(model.model[2].conv3) is nn.ReLU and act_of(model.model[0].conv) is nn.ReLU


def test_file_wide_default_activation():
    cfg = {"nc": 1, "activation": "relu", "backbone": [[-1, 1, "Conv", [8, 3, 2]], [-1, 1, "Conv", [8, 3, 1, None, 1, "silu"]]]}
    model = Model(cfg)
    assert act_of(model.model[0]) is nn.ReLU and act_of(model.model[1]) is nn.SiLU
    cfg["activation"] = "mish"
    with pytest.raises(ModelConfigError, match="unknown activation 'mish'"):
        Model(cfg)
    cfg["activation"] = "relu"
    cfg["backbone"][1] = [-1, 1, "Conv", [8, 3, 1, None, 1, "swishy"]]
    with pytest.raises(ModelConfigError, match=r"layer 1: unknown activation 'swishy'; known: "):
        Model(cfg)
    assert "relu_silu" in KNOWN_ACTIVATIONS


def test_kaiming_init_for_relu_convs():
    cfg = {"nc": 1, "init": "kaiming", "backbone": [[-1, 1, "Conv", [256, 3, 1, None, 1, "relu"]],
                                                    [-1, 1, "Conv", [256, 3, 1, None, 1, "silu"]]]}
    torch.manual_seed(0)
    model = Model(cfg)
    w_relu, w_silu = model.model[0].conv.weight, model.model[1].conv.weight
    assert w_relu.std().item() == pytest.approx(math.sqrt(2 / (256 * 9)), rel=0.05)  # fan_out
    assert w_silu.std().item() == pytest.approx(1 / math.sqrt(3 * 256 * 9), rel=0.05)  # torch default
    cfg["init"] = "xavier"
    with pytest.raises(ModelConfigError, match="unknown init 'xavier'"):
        Model(cfg)


def test_bn_eps_and_momentum_are_official():
    bns = [m for m in Model("yoloxn.yaml").modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(m.eps == 1e-3 and m.momentum == 0.03 for m in bns)


def test_focus_matches_strided_slices():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    focus = Focus(3, 8, 1, act="identity")
    captured = {}
    focus.conv.register_forward_pre_hook(lambda m, a: captured.setdefault("x", a[0]))
    focus(x)
    expected = torch.cat([x[..., 0::2, 0::2], x[..., 1::2, 0::2], x[..., 0::2, 1::2], x[..., 1::2, 1::2]], 1)
    assert torch.equal(captured["x"], expected)


@pytest.mark.parametrize("cfg", ["yoloxn.yaml", "yoloxs_rslu.yaml"])
def test_fused_equals_unfused(cfg):
    from tests.reference import randomize_bn

    model = randomize_bn(Model(cfg)).eval()
    x = torch.rand(1, 3, 96, 128)
    with torch.no_grad():
        before = model(x)
        model.fuse()
        after = model(x)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    # 1e-5 relative to each quantity's range: box pixels and [0, 1] probabilities
    box_err = (after[..., :4] - before[..., :4]).abs().max() / before[..., :4].abs().max()
    prob_err = (after[..., 4:] - before[..., 4:]).abs().max()
    assert box_err < 1e-5 and prob_err < 1e-5
