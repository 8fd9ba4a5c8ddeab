"""utils/loss/box_losses.py: every hyp iou_loss choice against EasyCV's YOLOX_IOULoss (pai-easycv 0.11.7)
and official YOLOX's IOUloss, with finite gradients, and SIoU where EasyCV's gives NaN."""
import pytest
import torch

from tests.easycv_reference import easycv_module, easycv_root
from utils.config import choices
from utils.loss.box_losses import BOX_LOSSES

EASYCV_NAMES = {"iou": "iou", "siou": "siou", "diou": "diou", "ciou": "ciou", "eiou": "eiou", "easycv_giou": "giou"}


@pytest.fixture(scope="module")
def easycv_iou_loss():
    if easycv_root() is None:
        pytest.skip("pai-easycv not installed (bash tests/install_reference.sh)")
    return easycv_module("easycv.models.loss.iou_loss").YOLOX_IOULoss


def random_pairs(n=500, seed=0):
    g = torch.Generator().manual_seed(seed)
    target = torch.cat([torch.rand(n, 2, generator=g) * 100, torch.rand(n, 2, generator=g) * 40 + 1], 1)
    pred = target + torch.randn(n, 4, generator=g) * torch.tensor([8.0, 8.0, 5.0, 5.0])
    pred[:, 2:] = pred[:, 2:].abs() + 0.5  # predictions come through exp(): positive sizes
    return pred, target


def test_the_choices_are_the_table():
    assert set(BOX_LOSSES) == set(choices("iou_loss"))


@pytest.mark.parametrize("ours", list(EASYCV_NAMES))
def test_each_loss_equals_easycvs_with_finite_gradients(easycv_iou_loss, ours):
    pred, target = random_pairs()
    expected = easycv_iou_loss(reduction="none", loss_type=EASYCV_NAMES[ours])(pred, target)
    pred = pred.clone().requires_grad_(True)
    got = BOX_LOSSES[ours](pred, target)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    got.sum().backward()
    assert pred.grad.isfinite().all()


def test_giou_is_official_yoloxs_and_differs_from_easycvs(yolox_pkg):
    from yolox.models.losses import IOUloss

    pred, target = random_pairs(seed=1)
    torch.testing.assert_close(BOX_LOSSES["giou"](pred, target), IOUloss(loss_type="giou")(pred, target))
    torch.testing.assert_close(BOX_LOSSES["iou"](pred, target), IOUloss(loss_type="iou")(pred, target))
    apart = (BOX_LOSSES["giou"](pred, target) - BOX_LOSSES["easycv_giou"](pred, target)).abs()
    assert apart.max() > 1e-3  # EasyCV subtracts the intersection's share, not the union's


def test_siou_is_finite_where_the_centres_coincide(easycv_iou_loss):
    target = torch.tensor([[50.0, 50.0, 20.0, 10.0]])
    pred = torch.tensor([[50.0, 50.0, 10.0, 20.0]], requires_grad=True)
    assert easycv_iou_loss(loss_type="siou")(pred.detach(), target).isnan().all()  # EasyCV: 0 / 0
    loss = BOX_LOSSES["siou"](pred, target)
    loss.sum().backward()
    assert loss.isfinite().all() and pred.grad.isfinite().all()
    near = torch.tensor([[50.0 + 1e-3, 50.0, 10.0, 20.0]])  # continuous with the coincident case
    torch.testing.assert_close(BOX_LOSSES["siou"](near, target), loss.detach(), rtol=1e-4, atol=1e-4)
