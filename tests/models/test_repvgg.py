"""models/repvgg.py and models/pai_yoloxs.yaml's backbone against EasyCV's RepVGGBlock and RepVGGYOLOX
(pai-easycv 0.11.7, tests/easycv_reference.py): same parameters, same outputs in training and eval
mode, and the same single conv after re-parameterisation. Whole models: tests/models/test_pai_models.py."""
import pytest
import torch
from torch import nn

from models.easycv import easycv_to_project
from models.fuse import fuse_model
from models.repvgg import RepVGGBlock, reparameterize_model
from models.yolo import Model
from tests.easycv_reference import randomize_norms

BACKBONE_OUTPUTS = (4, 6, 9)  # pai_yoloxs.yaml's P3, P4, P5 layers = EasyCV's stage2, stage3, stage4


def params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("c1, c2, s", [(16, 16, 1), (16, 24, 1), (16, 32, 2)])
def test_block_equals_easycv_in_training_eval_and_deployed_form(easycv, c1, c2, s):
    ref = easycv.RepVGGBlock(c1, c2, ksize=3, stride=s)
    ours = RepVGGBlock(c1, c2, 3, s)
    randomize_norms(ref)
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
    randomize_norms(block, seed=3)
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
    randomize_norms(ref, seed=1)
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
    randomize_norms(model, seed=2)
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
