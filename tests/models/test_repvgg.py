"""models/repvgg.py and models/pai_yoloxs.yaml's backbone against EasyCV's RepVGGBlock and RepVGGYOLOX
(pai-easycv 0.11.7, tests/easycv_reference.py): same parameters, same outputs in training and eval
mode, and the same single conv after re-parameterisation."""
import pytest
import torch
from torch import nn

from models.easycv import EASYCV_INPUT, easycv_to_project
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


def test_backbone_equals_easycv_repvggyolox_s(easycv):
    ref = easycv.RepVGGYOLOX(depth=0.33, width=0.5)
    randomize_bn(ref, seed=1)
    model = Model("models/pai_yoloxs.yaml")
    backbone = model.model[:10]
    assert params(backbone) == params(ref) == 12_334_144
    state = easycv_to_project({"backbone.backbone." + k: v for k, v in ref.state_dict().items()})
    backbone.load_state_dict({k[len("model."):]: v for k, v in state.items()})  # strict: every key maps

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


def easycv_pai_yoloxs(easycv, nc=8, seed=5):
    """EasyCV's PAI-YOLOXs (YOLOPAFPN with RepVGGYOLOX, YOLOXHead) with random BN statistics, in eval mode."""
    pafpn = easycv_module("easycv.models.detection.detectors.yolox.yolo_pafpn")
    heads = easycv_module("easycv.models.detection.detectors.yolox.yolo_head")
    ref = nn.ModuleDict({"backbone": pafpn.YOLOPAFPN(0.33, 0.5, backbone="RepVGGYOLOX"),  # EasyCV's YOLOX
                         "head": heads.YOLOXHead(nc, model_type="s", width=0.5)})          # holds these names
    randomize_bn(ref, seed=seed)
    return ref.eval()


def test_pai_yoloxs_equals_easycv_model(easycv):
    ref = easycv_pai_yoloxs(easycv, seed=4)
    model = Model("models/pai_yoloxs.yaml", nc=8)
    assert params(model) == params(ref)
    model.load_state_dict(easycv_to_project(ref.state_dict()))
    model.eval()
    x = torch.rand(1, 3, 128, 96)

    def compare():
        expected = ref["head"](ref["backbone"](x))  # EasyCV's YOLOX.forward in eval mode: decoded [B, anchors, 5 + nc]
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


@pytest.mark.parametrize("deployed", [False, True])
def test_load_model_takes_easycv_checkpoints_with_their_input(easycv, tmp_path, deployed):
    from models.weights import load_model
    from utils.infer.backends import letterbox_of

    ref = easycv_pai_yoloxs(easycv)
    if deployed:  # what EasyCV's export saves
        for m in ref.modules():
            if isinstance(m, easycv.RepVGGBlock):
                m.switch_to_deploy()
    path = tmp_path / "pai_yoloxs.pth"
    torch.save({"state_dict": ref.state_dict(), "meta": {"config": "{}"}}, path)  # EasyCV's raw layout
    model = load_model(path)
    assert model.nc == 8 and model.official and letterbox_of(model) == "topleft"
    assert deployed == all(hasattr(m, "rbr_reparam") for m in model.modules() if isinstance(m, RepVGGBlock))
    bgr = torch.randint(0, 256, (1, 3, 96, 128)).float()  # what our loaders give: BGR 0-255
    mean, std = torch.tensor(EASYCV_INPUT["mean"]).view(1, 3, 1, 1), torch.tensor(EASYCV_INPUT["std"]).view(1, 3, 1, 1)
    expected = ref["head"](ref["backbone"]((bgr.flip(1) - mean) / std))  # EasyCV: RGB, normalised
    ours = model(bgr)
    ours = ours[0] if isinstance(ours, (list, tuple)) else ours
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())


@pytest.mark.parametrize("key, part", [
    ("backbone.asff_1.weight_level_0.conv.weight", r"ASFF \(use_att\)"),
    ("backbone.gsconv1.cv1.conv.weight", "GSConv neck"),
    ("backbone.vovGSCSP1.cv1.conv.weight", "GSConv neck"),
    ("head.inter_convs.0.conv.weight", "TOOD head"),
])
def test_easycv_checkpoints_of_other_configs_are_named(tmp_path, key, part):
    from models.weights import load_model

    state = {"backbone.backbone.stage0.rbr_dense.conv.weight": torch.zeros(32, 3, 3, 3), key: torch.zeros(2, 2, 1, 1)}
    torch.save({"state_dict": state}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match=f"other.pth: EasyCV checkpoint with {part}: not supported yet"):
        load_model(tmp_path / "other.pth")


def test_training_from_an_easycv_checkpoint_is_refused_clearly(tmp_path):
    from models.weights import load_pretrained

    torch.save({"state_dict": {"backbone.backbone.stage0.rbr_dense.conv.weight": torch.zeros(32, 3, 3, 3)}},
               tmp_path / "pai.pth")
    with pytest.raises(ValueError, match="pai.pth: an EasyCV YOLOX-PAI checkpoint: training from it is not supported"):
        load_pretrained(Model("models/pai_yoloxs.yaml", nc=8), tmp_path / "pai.pth")
