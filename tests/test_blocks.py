"""Blocks, per-layer activations, DetectX outputs and decoding, BN fusion."""
import math

import pytest
import torch
from torch import nn

from models.activations import KNOWN_ACTIVATIONS, make_activation, split_policy
from models.common import C3, SPP, Conv, DWConv, Focus
from models.heads.yolox import DetectX
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


def test_detectx_bias_prior():
    head = DetectX(nc=4, ch=[8, 8])
    expected = -math.log((1 - 0.01) / 0.01)
    assert torch.allclose(head.cls_preds[0].bias, torch.full((4,), expected))
    assert torch.allclose(head.obj_preds[0].bias, torch.full((1,), expected))
    assert expected == pytest.approx(-4.59512, abs=1e-5)


TWO_LEVELS = {
    "nc": 2,
    "backbone": [[-1, 1, "Conv", [8, 3, 2]], [-1, 1, "Conv", [8, 3, 2]], [-1, 1, "Conv", [8, 3, 2]]],
    "head": [[1, 1, "Conv", [8, 1, 1]], [1, 1, "Conv", [8, 1, 1]],
             [2, 1, "Conv", [8, 1, 1]], [2, 1, "Conv", [8, 1, 1]],
             [[3, 4, 5, 6], 1, "DetectX", ["nc", 1]]],
}


def constant_head_model():
    """Prediction convs with zero weights and known biases, so outputs are hand-computable."""
    model = Model(TWO_LEVELS)
    head = model.detect
    with torch.no_grad():
        for convs in (head.cls_preds, head.reg_preds, head.obj_preds):
            for c in convs:
                c.weight.zero_()
        for k in range(2):
            head.reg_preds[k].bias.copy_(torch.tensor([0.5, 0.25, math.log(2.0), 0.0]))
            head.obj_preds[k].bias.fill_(0.0)
            head.cls_preds[k].bias.copy_(torch.tensor([1.0, -1.0]))
    return model


def test_detectx_train_output_layout():
    model = constant_head_model().train()
    out = model(torch.zeros(2, 3, 32, 64))
    assert model.stride.tolist() == [4.0, 8.0]
    assert [tuple(o.shape) for o in out] == [(2, 7, 8, 16), (2, 7, 4, 8)]
    # channels (x, y, w, h, obj, cls0, cls1), raw logits
    assert torch.allclose(out[0][0, :, 3, 5], torch.tensor([0.5, 0.25, math.log(2.0), 0.0, 0.0, 1.0, -1.0]))


def test_detectx_eval_decoding_against_hand_grid():
    model = constant_head_model().eval()
    y = model(torch.zeros(1, 3, 32, 64))
    assert y.shape == (1, 8 * 16 + 4 * 8, 7)
    sig = torch.sigmoid
    # level 0, stride 4, cell (x=5, y=3): index 3 * 16 + 5; anchor at the top-left corner
    assert torch.allclose(y[0, 3 * 16 + 5], torch.tensor(
        [(5 + 0.5) * 4, (3 + 0.25) * 4, 2 * 4, 1 * 4, 0.5, sig(torch.tensor(1.0)), sig(torch.tensor(-1.0))]))
    # level 1, stride 8, cell (x=7, y=2): after the 128 level-0 anchors, row-major
    assert torch.allclose(y[0, 128 + 2 * 8 + 7, :4], torch.tensor([(7 + 0.5) * 8, (2 + 0.25) * 8, 16.0, 8.0]))


def test_detectx_rejects_bad_arguments():
    with pytest.raises(ValueError, match="pairs"):
        DetectX(2, 1, [8, 8, 8])
    with pytest.raises(ValueError, match="positive integer nc"):
        DetectX(0, 1, [8, 8])


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
