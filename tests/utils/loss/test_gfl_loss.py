"""ComputeGFLLoss (utils/loss/gfl_loss.py) against DAMO-YOLO's ZeroHead.loss (modelscope 1.40.2) on the same
predictions and targets: loss items within 1e-5 relative; finite gradients with empty images."""
import math

import pytest
import torch

from models.yolo import Model
from tests.damo_reference import damo_module, damo_root
from utils.loss import build_loss
from utils.loss.gfl_loss import ComputeGFLLoss

pytestmark = pytest.mark.usefixtures("one_torch_thread")
NC, REG_MAX, SIZE = 5, 16, 128
SMALL_ZERO_HEAD_MODEL = {  # ZeroHead on three levels of a plain conv stack
    "nc": NC, "depth_multiple": 1.0, "width_multiple": 1.0, "anchors": 1, "activation": "relu",
    "backbone": [[-1, 1, "Conv", [16, 3, 2]], [-1, 1, "Conv", [16, 3, 2]], [-1, 1, "Conv", [24, 3, 2]],
                 [-1, 1, "Conv", [32, 3, 2]], [-1, 1, "Conv", [48, 3, 2]]],
    "head": [[[2, 3, 4], 1, "ZeroHead", ["nc", "anchors", {"reg_max": REG_MAX}]]],
}


@pytest.fixture(scope="module")
def zero_head():
    if damo_root() is None:
        pytest.skip("modelscope not installed (bash tests/install_reference.sh)")
    return damo_module("damo.base_models.heads.zero_head")


def random_case(seed: int, counts=(3, 0, 7)):
    """Raw outputs of a small ZeroHead model (boxes near the GTs) and normalised targets [M, 6]."""
    g = torch.Generator().manual_seed(seed)
    model = Model(SMALL_ZERO_HEAD_MODEL)
    B = len(counts)
    rows = []
    for b, n in enumerate(counts):
        for _ in range(n):
            wh = torch.rand(2, generator=g) * 0.4 + 0.05
            xy = torch.rand(2, generator=g) * (1 - wh) + wh / 2
            rows.append([b, int(torch.randint(0, NC, (1,), generator=g)), *xy.tolist(), *wh.tolist()])
    targets = torch.tensor(rows, dtype=torch.float32).reshape(-1, 6)
    preds = [torch.randn(B, 4 * (REG_MAX + 1) + NC, SIZE // s, SIZE // s, generator=g) * 2 for s in (8, 16, 32)]
    return model, [p.requires_grad_() for p in preds], targets


def damo_loss_items(zero_head, preds, targets, B):
    """DAMO's ZeroHead.loss on the same outputs: its inputs as its forward_train builds them (class
    probabilities with modelscope's extra class column at 0, softmaxed and raw box distributions, priors)."""
    head = zero_head.ZeroHead(NC, [8, 8, 8], stacked_convs=0, reg_max=REG_MAX, strides=[8, 16, 32])
    n_reg = 4 * (REG_MAX + 1)
    raw = torch.cat([p.detach().flatten(2) for p in preds], 2).permute(0, 2, 1)  # [B, A, 68 + nc]
    A = raw.shape[1]
    cls = torch.cat((raw[..., n_reg:].sigmoid(), torch.zeros(B, A, 1)), -1)  # the legacy class: probability 0
    before = raw[..., :n_reg].reshape(B, A, 4, REG_MAX + 1)
    priors = torch.cat([head.get_single_level_center_priors(B, p.shape[-2:], s, torch.float32, "cpu")
                        for p, s in zip(preds, (8, 16, 32))], 1)
    scale = torch.tensor([SIZE, SIZE, SIZE, SIZE], dtype=torch.float32)
    gt_boxes, gt_labels = [], []
    for b in range(B):
        t = targets[targets[:, 0] == b]
        xywh = t[:, 2:] * scale
        gt_boxes.append(torch.cat((xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2), 1))
        gt_labels.append(t[:, 1].long())
    out = head.loss(cls, before.softmax(-1), before, gt_boxes, gt_labels, priors)
    return torch.stack([out["loss_cls"], out["loss_bbox"], out["loss_dfl"]]).float()


@pytest.mark.parametrize("seed, counts", [(0, (3, 0, 7)), (1, (1, 1)), (2, (20, 5)), (3, (0, 12, 2, 4))])
def test_loss_items_equal_damos(zero_head, seed, counts):
    model, preds, targets = random_case(seed, counts)
    loss_fn = build_loss(model)
    assert isinstance(loss_fn, ComputeGFLLoss) and loss_fn.item_names == ("qfl_loss", "giou_loss", "dfl_loss")
    loss, items = loss_fn(preds, targets)
    expected = damo_loss_items(zero_head, preds, targets, len(counts))
    torch.testing.assert_close(items, expected, rtol=1e-5, atol=1e-7)
    assert torch.isclose(loss, items.sum(), rtol=1e-6)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in preds)


def test_images_without_targets_give_finite_gradients():
    model, preds, _ = random_case(5, (0, 0))
    loss, items = build_loss(model)(preds, torch.zeros(0, 6))
    loss.backward()
    assert math.isfinite(loss.item()) and items[1] == 0 and items[2] == 0  # no positives: only the QFL of negatives
    assert all(torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0 for p in preds)
