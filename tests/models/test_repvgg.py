"""models/repvgg.py and models/pai_yoloxs.yaml's backbone against EasyCV's RepVGGBlock and RepVGGYOLOX
(pai-easycv 0.11.7, tests/easycv_reference.py): same parameters, same outputs in training and eval
mode, and the same single conv after re-parameterisation."""
import re

import pytest
import torch
from torch import nn

from models.fuse import fuse_model
from models.repvgg import RepVGGBlock, reparameterize_model
from models.yolo import Model
from tests.easycv_reference import easycv_module, easycv_root

BACKBONE_OUTPUTS = (4, 6, 9)  # pai_yoloxs.yaml's P3, P4, P5 layers = EasyCV's stage2, stage3, stage4


@pytest.fixture(scope="module")
def easycv():
    if easycv_root() is None:
        pytest.skip("pai-easycv not installed (bash tests/install_reference.sh)")
    return easycv_module("easycv.models.backbones.repvgg_yolox_backbone")


def randomize_bn(module: nn.Module, seed: int = 0) -> None:
    """Random BN statistics and affine values, and EasyCV YOLOX's eps 1e-3 / momentum 0.03 (its
    detector sets them on every BatchNorm2d, as official YOLOX does)."""
    g = torch.Generator().manual_seed(seed)
    for bn in module.modules():
        if isinstance(bn, nn.BatchNorm2d):
            n = bn.num_features
            bn.eps, bn.momentum = 1e-3, 0.03
            bn.running_mean.copy_(torch.randn(n, generator=g) * 0.2)
            bn.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            bn.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            bn.bias.data.copy_(torch.randn(n, generator=g) * 0.2)


def params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("c1, c2, s", [(16, 16, 1), (16, 24, 1), (16, 32, 2)])
def test_block_equals_easycv_in_training_eval_and_deployed_form(easycv, c1, c2, s):
    ref = easycv.RepVGGBlock(c1, c2, ksize=3, stride=s)
    ours = RepVGGBlock(c1, c2, 3, s)
    randomize_bn(ref)
    ours.load_state_dict(ref.state_dict())  # EasyCV's names: its checkpoints load as they are
    assert (ours.rbr_identity is None) == (ref.rbr_identity is None) and params(ours) == params(ref)
    x = torch.randn(2, c1, 20, 20)
    torch.testing.assert_close(ours.train()(x), ref.train()(x))  # batch statistics
    ours.eval(), ref.eval()
    before = ours(x)
    torch.testing.assert_close(before, ref(x))
    ours.reparameterize()
    ref.switch_to_deploy()
    assert set(ours.state_dict()) == set(ref.state_dict()) == {"rbr_reparam.weight", "rbr_reparam.bias"}
    torch.testing.assert_close(ours.rbr_reparam.weight, ref.rbr_reparam.weight)
    torch.testing.assert_close(ours.rbr_reparam.bias, ref.rbr_reparam.bias)
    after = ours(x)
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5 * before.abs().max().item())
    torch.testing.assert_close(after, ref(x))


def test_grouped_block_folds_its_identity_per_group():
    block = RepVGGBlock(8, 8, 3, 1, g=2)
    randomize_bn(block, seed=3)
    block.eval()
    x = torch.randn(1, 8, 9, 9)
    before = block(x)
    block.reparameterize()
    torch.testing.assert_close(block(x), before, rtol=1e-5, atol=1e-5)


def test_yaml_rows_keep_relu_unless_they_choose(tmp_path):
    model = Model("models/pai_yoloxs.yaml")
    assert isinstance(model.model[0].act, nn.ReLU) and isinstance(model.model[2][0].act, nn.ReLU)  # file: silu
    assert isinstance(model.model[10].act, nn.SiLU)  # the PAFPN keeps the file-wide SiLU
    text = open("models/pai_yoloxs.yaml").read().replace("[-1, 1, RepVGGBlock, [64, 3, 2]]",
                                                         "[-1, 1, RepVGGBlock, [64, 3, 2, 1, silu]]")
    (tmp_path / "m.yaml").write_text(text)
    assert isinstance(Model(str(tmp_path / "m.yaml")).model[0].act, nn.SiLU)


def easycv_backbone_key(key: str) -> str:
    """EasyCV RepVGGYOLOX state_dict key -> pai_yoloxs.yaml's (layers 0-9)."""
    stage, rest = re.fullmatch(r"stage(\d)\.(.*)", key).groups()
    stage = int(stage)
    if stage == 0:  # one block, not a Sequential
        return f"0.{rest}"
    block, rest = rest.split(".", 1)
    block = int(block)
    if stage == 4 and block == 3:  # MT_SPPF
        return "9." + rest.replace("cv1.", "conv1.").replace("cv2.", "conv2.")
    down = 2 * stage - 1  # layers 1, 3, 5, 7; their repeats are the next layer, a stack of copies
    return f"{down}.{rest}" if block == 0 else f"{down + 1}.{block - 1}.{rest}"


def test_backbone_equals_easycv_repvggyolox_s(easycv):
    ref = easycv.RepVGGYOLOX(depth=0.33, width=0.5)
    randomize_bn(ref, seed=1)
    model = Model("models/pai_yoloxs.yaml")
    backbone = model.model[:10]
    assert params(backbone) == params(ref) == 12_334_144
    state = {easycv_backbone_key(k): v for k, v in ref.state_dict().items()}
    backbone.load_state_dict(state)  # strict: every key maps, none is left over

    def ours(x):
        outs = []
        for i, layer in enumerate(backbone):
            x = layer(x)
            if i in BACKBONE_OUTPUTS:
                outs.append(x)
        return outs

    model.eval(), ref.eval()
    x = torch.randn(1, 3, 96, 128)
    for a, b in zip(ours(x), ref(x)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * b.abs().max().item())
    assert reparameterize_model(model) == 1 + 3 + 5 + 7 + 3  # stage0, then stages 1-4 (MT_SPPF has none)
    for m in ref.modules():
        if isinstance(m, easycv.RepVGGBlock):
            m.switch_to_deploy()
    assert params(backbone) == params(ref)
    for a, b in zip(ours(x), ref(x)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * b.abs().max().item())


def test_fuse_reparameterizes_the_whole_model_and_keeps_its_outputs():
    model = Model("models/pai_yoloxs.yaml", nc=8)
    randomize_bn(model, seed=2)
    model.eval()
    x = torch.rand(1, 3, 64, 64) * 255
    before = model(x)
    before = before[0] if isinstance(before, (list, tuple)) else before
    model.fuse()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert all(hasattr(m, "rbr_reparam") for m in model.modules() if isinstance(m, RepVGGBlock))
    after = model(x)
    after = after[0] if isinstance(after, (list, tuple)) else after
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4 * before.abs().max().item())
    assert fuse_model(model) == 0  # nothing left to fold


def easycv_pai_yoloxs_key(key: str) -> str:
    """EasyCV YOLOX (YOLOPAFPN with RepVGGYOLOX, YOLOXHead) key -> pai_yoloxs.yaml's. The neck and head
    keep official YOLOX's names, so official YOLOX's prefix table converts them."""
    from models.yolox_official import official_to_project

    if key.startswith("backbone.backbone."):
        return "model." + easycv_backbone_key(key[len("backbone.backbone."):])
    return next(iter(official_to_project({key: None})))


def test_pai_yoloxs_equals_easycv_model(easycv):
    pafpn = easycv_module("easycv.models.detection.detectors.yolox.yolo_pafpn")
    heads = easycv_module("easycv.models.detection.detectors.yolox.yolo_head")
    neck = pafpn.YOLOPAFPN(0.33, 0.5, backbone="RepVGGYOLOX")
    head = heads.YOLOXHead(8, model_type="s", width=0.5)
    ref = nn.ModuleDict({"backbone": neck, "head": head})  # EasyCV's YOLOX holds them under these names
    randomize_bn(ref, seed=4)
    model = Model("models/pai_yoloxs.yaml", nc=8)
    assert params(model) == params(ref)
    model.load_state_dict({easycv_pai_yoloxs_key(k): v for k, v in ref.state_dict().items()})
    model.eval(), ref.eval()
    x = torch.rand(1, 3, 128, 96)

    def compare():
        expected = head(neck(x))  # EasyCV's YOLOX.forward in eval mode: decoded [B, anchors, 5 + nc]
        ours = model(x)
        ours = ours[0] if isinstance(ours, (list, tuple)) else ours
        assert ours.shape == expected.shape == (1, 16 * 12 + 8 * 6 + 4 * 3, 5 + 8)
        torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())

    compare()
    for m in ref.modules():
        if isinstance(m, easycv.RepVGGBlock):
            m.switch_to_deploy()
    reparameterize_model(model)
    assert params(model) == params(ref) == 15_877_479  # 15,905,343 at nc=80
    compare()
