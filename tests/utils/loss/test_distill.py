"""utils/loss/distill.py against DAMO-YOLO's FeatureLoss(distiller='cwd') (modelscope 1.40.2) on the same features."""
import pytest
import torch

from tests.damo_reference import damo_module, damo_root
from utils.loss.distill import ChannelDistillation, distill_weight


@pytest.fixture(scope="module")
def distill_loss():
    if damo_root() is None:
        pytest.skip("modelscope not installed (bash tests/install_reference.sh)")
    return damo_module("damo.base_models.losses.distill_loss")


@pytest.mark.parametrize("tau", [1.0, 2.0])
def test_equals_damos_feature_loss(distill_loss, tau):
    torch.manual_seed(0)
    cs, ct = [8, 16, 32], [16, 24, 48]  # e.g. T's neck (64/128/256) taught by S's (128/256/512), scaled down
    ref = distill_loss.FeatureLoss(cs, ct, distiller="cwd")
    ref.feature_loss.tau = tau
    ours = ChannelDistillation(cs, ct, tau=tau)
    ours.align_module.load_state_dict(ref.align_module.state_dict())
    student = [torch.randn(2, c, 16 // 2 ** k, 12 // 2 ** k, requires_grad=True) for k, c in enumerate(cs)]
    teacher = [torch.randn(2, c, 16 // 2 ** k, 12 // 2 ** k) * 3 + 1 for k, c in enumerate(ct)]
    expected = ref(student, teacher)
    got = ours(student, teacher)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    got.backward()
    assert all(torch.isfinite(s.grad).all() for s in student) and ours.align_module[0].weight.grad is not None


def test_weight_decays_by_a_cosine_from_1_to_0_1():
    assert distill_weight(0, 100) == 1.0 and distill_weight(100, 100) == pytest.approx(0.1)
    assert distill_weight(50, 100) == pytest.approx(0.55)
    assert distill_weight(0, 100, 0.5) == 0.5 and distill_weight(100, 100, 0.5) == pytest.approx(0.05)  # hyp distill_weight
    assert distill_weight(50, 100, 0.5) == pytest.approx(0.275)
    with pytest.raises(ValueError, match="as many feature levels"):
        ChannelDistillation([8, 16], [16])


def test_ramp_scales_the_cosine_linearly_from_0_then_leaves_it():
    assert distill_weight(0, 100, 1.0, ramp=10) == 0.0
    assert distill_weight(5, 100, 1.0, ramp=10) == pytest.approx(0.5 * distill_weight(5, 100))
    assert distill_weight(10, 100, 1.0, ramp=10) == distill_weight(10, 100)
    assert distill_weight(60, 100, 0.5, ramp=10) == distill_weight(60, 100, 0.5)
