"""The five YOLOX-PAI model files against EasyCV's models built from the same configs (pai-easycv 0.11.7,
tests/easycv_reference.py): parameters, eval outputs before and after re-parameterisation, EasyCV
checkpoints through load_model; and the new blocks (models/asff.py, models/gsconv.py,
models/heads/tood.py) on their own."""
import pytest
import torch
from torch import nn

from models.asff import ASFF
from models.easycv import EASYCV_INPUT, easycv_layout, easycv_to_project
from models.gsconv import GSConv, VoVGSCSP, channel_shuffle
from models.heads import TOODHead
from models.parser import ModelConfigError
from models.repvgg import RepVGGBlock, reparameterize_model
from models.yolo import Model
from tests.easycv_reference import (PAI_CONFIGS, easycv_forward, easycv_module, easycv_pai_model, easycv_root,
                                    randomize_norms)

# EasyCV's models at nc=80, (training, deployed) parameters; the figures: 17.09 / 15.91 M, 21.31 M
# deployed, 23.24 / 22.06 M, ASFF_sim 19.01 M and GSConv 14.29 M deployed
PARAMS_NC80 = {"pai_yoloxs": (17_089_727, 15_905_343), "pai_yoloxs_asff": (22_490_923, 21_306_539),
               "pai_yoloxs_asff_sim": (20_193_579, 19_009_195), "pai_yoloxs_asff_tood3": (23_239_837, 22_055_453),
               "pai_yoloxs_gsconv": (15_477_647, 14_293_263)}


def params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def assert_same_detections(ours, expected):
    """Decoded outputs [B, N, 5 + nc]: boxes within 1e-4 of their scale, scores within 1e-5."""
    ours = ours[0] if isinstance(ours, (list, tuple)) else ours
    assert ours.shape == expected.shape
    scale = expected[..., :4].abs().max().item()
    torch.testing.assert_close(ours[..., :4], expected[..., :4], rtol=1e-4, atol=1e-4 * scale)
    torch.testing.assert_close(ours[..., 4:], expected[..., 4:], rtol=1e-4, atol=1e-5)


def deploy_easycv(ref: nn.Module, easycv) -> None:
    """What EasyCV's export does: every RepVGG block switched to its single conv."""
    for m in ref.modules():
        if isinstance(m, easycv.RepVGGBlock):
            m.switch_to_deploy()


@pytest.mark.parametrize("name", sorted(PAI_CONFIGS))
def test_model_file_equals_easycv_model(easycv, name):
    ref = easycv_pai_model(name, nc=8, seed=4)
    model = Model(f"models/{name}.yaml", nc=8)
    assert params(model) == params(ref)
    model.load_state_dict(easycv_to_project(ref.state_dict()))  # strict: every EasyCV key has its place
    model.eval()
    x = torch.rand(2, 3, 128, 96)
    expected = easycv_forward(ref, x)
    assert expected.shape == (2, 16 * 12 + 8 * 6 + 4 * 3, 5 + 8)
    assert_same_detections(model(x), expected)

    before = model(x)[0]
    deploy_easycv(ref, easycv)
    assert reparameterize_model(model) > 0
    assert params(model) == params(ref)
    assert_same_detections(model(x), easycv_forward(ref, x))
    torch.testing.assert_close(model(x)[0], before, rtol=1e-5, atol=1e-5 * before.abs().max().item())


@pytest.mark.parametrize("name", sorted(PAI_CONFIGS))
def test_parameters_at_80_classes_equal_easycv(easycv, name):
    ref, model = easycv_pai_model(name, nc=80), Model(f"models/{name}.yaml")
    assert params(model) == params(ref) == PARAMS_NC80[name][0]
    deploy_easycv(ref, easycv)
    reparameterize_model(model)
    assert params(model) == params(ref) == PARAMS_NC80[name][1]


@pytest.mark.parametrize("name, deployed", [(n, False) for n in sorted(PAI_CONFIGS)] + [("pai_yoloxs_asff_tood3", True)])
def test_load_model_takes_easycv_checkpoints_with_their_input(easycv, tmp_path, name, deployed):
    from models.weights import load_model
    from utils.infer.backends import letterbox_of

    ref = easycv_pai_model(name, nc=8, seed=1)
    if deployed:
        deploy_easycv(ref, easycv)
    path = tmp_path / f"{name}.pth"
    torch.save({"state_dict": ref.state_dict(), "meta": {"config": "{}"}}, path)  # EasyCV's raw layout
    model = load_model(path)
    assert model.yaml["yaml_file"] == f"{name}.yaml" and model.nc == 8
    assert model.official and letterbox_of(model) == "topleft"
    assert deployed == all(hasattr(m, "rbr_reparam") for m in model.modules() if isinstance(m, RepVGGBlock))
    bgr = torch.randint(0, 256, (1, 3, 96, 128)).float()  # what our loaders give: BGR 0-255
    mean = torch.tensor(EASYCV_INPUT["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(EASYCV_INPUT["std"]).view(1, 3, 1, 1)
    assert_same_detections(model(bgr), easycv_forward(ref, (bgr.flip(1) - mean) / std))  # EasyCV: RGB, normalised


@pytest.mark.parametrize("keys, message", [
    (["backbone.gsconv1.cv1.conv.weight", "backbone.C3_p4.conv1.conv.weight"], "the partial GSConv neck"),
    (["backbone.gsconv1.cv1.conv.weight", "backbone.asff_1.stride_level_1.conv.weight"],
     r"ASFF \+ GSConv neck: no bundled model file"),
    (["head.inter_convs.0.conv.weight"], "TOOD head: no bundled model file"),
    (["backbone.asff_1.expand.conv.weight", "head.inter_convs.0.conv.weight"], r"ASFF_sim \+ TOOD head"),
])
def test_easycv_checkpoints_without_a_model_file_are_named(tmp_path, keys, message):
    from models.weights import load_model

    state = {"backbone.backbone.stage0.rbr_dense.conv.weight": torch.zeros(32, 3, 3, 3)}
    state.update({k: torch.zeros(2, 2, 1, 1) for k in keys})
    torch.save({"state_dict": state}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match=f"other.pth: EasyCV checkpoint with {message}"):
        load_model(tmp_path / "other.pth")


def test_layouts_are_told_by_module_names():
    stage0 = {"backbone.backbone.stage0.rbr_dense.conv.weight": 0}
    assert easycv_layout(stage0).file == "pai_yoloxs.yaml"
    assert easycv_layout({**stage0, "backbone.asff_1.stride_level_1.conv.weight": 0}).file == "pai_yoloxs_asff.yaml"
    assert easycv_layout({**stage0, "backbone.asff_1.expand.conv.weight": 0}).file == "pai_yoloxs_asff_sim.yaml"


# ---- the blocks on their own ----------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["asff", "sim"])
@pytest.mark.parametrize("level", [0, 1, 2])
def test_asff_reads_its_channels_from_its_inputs(easycv, mode, level):
    """At width 0.25 (channels 64/128/256), not the s model's: EasyCV's ASFF with multiplier 0.25."""
    asff = easycv_module("easycv.models.detection.detectors.yolox.asff")
    ref = asff.ASFF(level=2 - level, type="ASFF" if mode == "asff" else "ASFF_sim", multiplier=0.25)
    ours = ASFF([64, 128, 256], level, mode)
    assert ours.c2 == [64, 128, 256][level] and params(ours) == params(ref)
    randomize_norms(ref, seed=level)
    ours.load_state_dict(ref.state_dict())
    xs = [torch.randn(2, 64, 32, 24), torch.randn(2, 128, 16, 12), torch.randn(2, 256, 8, 6)]
    ref.eval(), ours.eval()
    expected = ref(xs)
    assert expected.shape[-2:] == xs[level].shape[-2:]
    torch.testing.assert_close(ours(xs), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("args, message", [
    (([64, 128, 256], 3), "level must index the from list"),
    (([64, 128, 256], 0, "fast"), "mode must be one of asff, sim"),
    (([64, 96, 256], 0, "sim"), "channels C, 2C"),
    (([64], 0), "at least 2 layers"),
])
def test_asff_refuses_what_it_cannot_build(args, message):
    with pytest.raises(ValueError, match=message):
        ASFF(*args)


def test_asff_rows_are_checked_by_the_parser(tmp_path):
    text = open("models/pai_yoloxs_asff.yaml").read().replace("[[17, 20, 23], 1, ASFF, [1]]", "[[17, 20, 23], 1, ASFF, [5]]")
    (tmp_path / "m.yaml").write_text(text)
    with pytest.raises(ModelConfigError, match=r"m.yaml: layer 25: ASFF\(5.*\): ASFF level must index"):
        Model(str(tmp_path / "m.yaml"))


def test_gsconv_shuffle_equals_easycvs_and_the_activation_is_the_rows(easycv):
    blocks = easycv_module("easycv.models.backbones.network_blocks")
    ref = blocks.GSConv(16, 24, 3, 2)
    randomize_norms(ref)  # also BN eps 1e-3, as EasyCV's detector sets it
    ours = GSConv(16, 24, 3, 2)
    ours.load_state_dict(ref.state_dict())  # conv biases included: EasyCV's act-in-bias slip
    x = torch.randn(2, 16, 10, 8)
    torch.testing.assert_close(ours.eval()(x), ref.eval()(x))
    y = torch.arange(2 * 6 * 1 * 1.0).view(2, 6, 1, 1)
    assert channel_shuffle(y)[0, :, 0, 0].tolist() == [0, 2, 4, 1, 3, 5]
    relu = VoVGSCSP(16, 32, 1, act="relu_silu")
    assert isinstance(relu.cv2.act, nn.SiLU) and isinstance(relu.m[0].conv_lighting[1].cv2.act, nn.ReLU)


@pytest.fixture
def easycv_tood():
    if easycv_root() is None:
        pytest.skip("pai-easycv not installed (bash tests/install_reference.sh)")
    return easycv_module("easycv.models.detection.detectors.yolox.tood_head")


def test_tood_head_with_repvgg_branches_equals_easycvs_and_folds(easycv, easycv_tood):
    """EasyCV's conv_type='repconv' (what the paper may call RTOOD): RepVGG branch convs, folded at export."""
    ref = easycv_tood.TOODHead(5, model_type="s", conv_type="repconv")
    ours = TOODHead(5, 1, [128, 256, 512], width=0.5, act="silu", conv_type="repconv")
    randomize_norms(ref, seed=7)
    ours.load_state_dict(ref.state_dict())
    ours.stride = torch.tensor([8.0, 16.0, 32.0])
    ref.eval(), ours.eval()
    xs = [torch.randn(1, 128, 16, 12), torch.randn(1, 256, 8, 6), torch.randn(1, 512, 4, 3)]
    assert_same_detections(ours(xs), ref(xs))
    before = ours(xs)
    deploy_easycv(ref, easycv)
    assert reparameterize_model(ours) == 12  # 2 per branch, 2 branches, 3 levels
    assert_same_detections(ours(xs), ref(xs))
    torch.testing.assert_close(ours(xs), before, rtol=1e-5, atol=1e-5 * before.abs().max().item())


def test_tood_head_shares_its_interactive_convs_and_refuses_bad_arguments():
    head = TOODHead(3, 1, [64, 128, 256], width=0.25, stacked_convs=2)
    assert len(head.inter_convs) == 2 and len(head.cls_decomps) == len(head.reg_decomps) == 3
    assert isinstance(head.inter_convs[0].act, nn.ReLU) and isinstance(head.stems[0].act, nn.SiLU)
    with pytest.raises(ValueError, match="conv_type must be one of conv, dwconv, repconv"):
        TOODHead(3, 1, [64, 128, 256], conv_type="rep")
    with pytest.raises(ValueError, match="GroupNorm with 32 groups"):
        TOODHead(3, 1, [64, 128, 256], width=0.3125)  # 80 channels


def test_training_starts_from_an_easycv_checkpoint_with_its_input(easycv, tmp_path):
    from models.weights import load_model, load_pretrained
    from utils.checkpoints import save_checkpoint

    ref = easycv_pai_model("pai_yoloxs_asff", nc=8, seed=2)
    torch.save({"state_dict": ref.state_dict()}, tmp_path / "asff.pth")
    model = Model("models/pai_yoloxs_asff.yaml", nc=8)
    load_pretrained(model, tmp_path / "asff.pth")
    assert model.yaml["input"] == EASYCV_INPUT
    model.eval()
    bgr = torch.randint(0, 256, (1, 3, 64, 96)).float()
    mean = torch.tensor(EASYCV_INPUT["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(EASYCV_INPUT["std"]).view(1, 3, 1, 1)
    assert_same_detections(model(bgr), easycv_forward(ref, (bgr.flip(1) - mean) / std))
    save_checkpoint(tmp_path / "last.pt", {"model": model.state_dict(), "yaml": model.yaml})  # as train.py saves
    assert_same_detections(load_model(tmp_path / "last.pt")(bgr), model(bgr))  # the input travels with the YAML

    deploy_easycv(ref, easycv)
    torch.save({"state_dict": ref.state_dict()}, tmp_path / "deployed.pth")
    with pytest.raises(ValueError, match="deployed.pth: a deployed EasyCV checkpoint .* cannot train"):
        load_pretrained(Model("models/pai_yoloxs_asff.yaml", nc=8), tmp_path / "deployed.pth")
    with pytest.raises(ValueError, match="asff.pth does not fit the model"):  # another config: keys listed
        load_pretrained(Model("models/pai_yoloxs.yaml", nc=8), tmp_path / "asff.pth")
