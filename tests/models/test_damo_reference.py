"""DAMO-YOLO's reference detectors (modelscope 1.40.2, tests/damo_reference.py): the importer builds T/S/M/L
from DAMO's configs as DAMO's build functions do, and deploy() (what DAMO's converter does before export)
keeps the eval outputs."""
import pytest
import torch

from tests.damo_reference import (DAMO_SIZES, build_damo_model, damo_config, damo_configs_root,
                                  damo_head_outputs, damo_root, deploy)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# modelscope's models at nc=80, (training, deployed) parameters. Its ZeroHead has nc + 1 class channels:
# upstream DAMO's (legacy=False, nc channels) are 4,035 (T) / 8,067 (S, M, L) fewer, which gives the
# deployed 8.48 / 16.25 / 28.18 / 42.06 M of shared/reference/pai_damo_modules.md
PARAMS_NC80 = {"t": (8_879_762, 8_483_666), "s": (16_943_714, 16_259_698),
               "m": (29_249_794, 28_186_242), "l": (43_869_826, 42_066_178)}


def params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def damo():
    """Skipped without modelscope or DAMO's configs, an error in CI (REQUIRE_REFERENCE=1)."""
    if damo_root() is None:
        pytest.skip("modelscope not installed (bash tests/install_reference.sh)")
    if damo_configs_root() is None:
        pytest.skip("DAMO-YOLO configs not found (shared/reference/damo_configs or $DAMO_CONFIGS)")


def test_config_is_read_as_damo_reads_it(damo):
    cfg = damo_config("m")
    assert cfg["backbone"]["name"] == "TinyNAS_csp" and cfg["backbone"]["out_indices"] == (2, 3, 4)
    assert cfg["neck"]["depth"] == 1.5 and cfg["head"]["legacy"] is False
    assert cfg["backbone"]["net_structure_str"].count("nbitsA") == 6  # the text as DAMO's config holds it
    assert [(b["class"], b["out"], b.get("L")) for b in cfg["structure"]] == [
        ("ConvKXBNRELU", 32, None), ("SuperResConvKXKX", 128, 2), ("SuperResConvKXKX", 128, 4),
        ("SuperResConvKXKX", 256, 4), ("SuperResConvKXKX", 256, 4), ("SuperResConvKXKX", 512, 3)]
    assert not any("nbitsA" in b or "nbitsW" in b for b in cfg["structure"])


@pytest.mark.parametrize("size", DAMO_SIZES)
def test_builds_each_size(damo, size):
    model = build_damo_model(size, nc=80)
    assert not model.training and model.head.nms is False
    assert params(model) == PARAMS_NC80[size][0]
    with torch.no_grad():
        out = damo_head_outputs(model, torch.rand(1, 3, 128, 128) * 255)
    assert [tuple(t.shape) for t in out["cls_logits"]] == [(1, 81, s, s) for s in (16, 8, 4)]  # nc + 1
    assert [tuple(t.shape) for t in out["reg_logits"]] == [(1, 68, s, s) for s in (16, 8, 4)]
    scores, boxes = out["scores"], out["boxes"]
    assert scores.shape == (1, 336, 80) and boxes.shape == (1, 336, 4)
    logits = torch.cat([t.flatten(2) for t in out["cls_logits"]], 2).transpose(1, 2)
    torch.testing.assert_close(scores, logits.sigmoid()[..., :80])  # the extra class channel is dropped
    assert torch.isfinite(boxes).all() and scores.std() > 0 and boxes.std() > 0


@pytest.mark.parametrize("size", DAMO_SIZES)
def test_deploy_keeps_eval_outputs(damo, size):
    model = build_damo_model(size, nc=80, seed=3)
    x = torch.rand(1, 3, 128, 128) * 255
    with torch.no_grad():
        expected = model(x)
        deploy(model)
        deployed = model(x)
    keys = model.state_dict()
    assert any("rbr_reparam" in k for k in keys) and not any("rbr_dense" in k or "rbr_1x1" in k for k in keys)
    assert params(model) == PARAMS_NC80[size][1]
    for ours, ref in zip(deployed, expected):
        assert ours.shape == ref.shape
        assert (ours - ref).abs().max() <= 1e-4 * ref.abs().max()
