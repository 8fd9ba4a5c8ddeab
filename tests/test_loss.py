"""ComputeXLoss and the batched SimOTA assigner against per-image references and official YOLOX."""
import math

import pytest
import torch

from models.yolo import Model
from tests.simota_reference import official_losses, reference_losses
from utils.loss.yolox_loss import ComputeXLoss

STRIDES = [8, 16, 32]


def make_model(nc):
    cfg = {"nc": nc, "depth_multiple": 0.33, "width_multiple": 0.25,
           "backbone": [[-1, 1, "Conv", [16, 3, 2]], [-1, 1, "Conv", [16, 3, 2]], [-1, 1, "Conv", [16, 3, 2]],
                        [-1, 1, "Conv", [16, 3, 2]], [-1, 1, "Conv", [16, 3, 2]]],
           "head": [[2, 1, "Conv", [16, 1, 1]], [2, 1, "Conv", [16, 1, 1]], [3, 1, "Conv", [16, 1, 1]],
                    [3, 1, "Conv", [16, 1, 1]], [4, 1, "Conv", [16, 1, 1]], [4, 1, "Conv", [16, 1, 1]],
                    [[5, 6, 7, 8, 9, 10], 1, "DetectX", ["nc", 1]]]}
    return Model(cfg)


def random_preds(batch, nc, h=256, w=320, seed=0, spread=0.5):
    """Random raw head outputs: boxes near their anchors, sizes around a few strides."""
    g = torch.Generator().manual_seed(seed)
    preds = []
    for s in STRIDES:
        p = torch.randn(batch, 5 + nc, h // s, w // s, generator=g)
        p[:, :2] = p[:, :2] * spread + 0.5
        p[:, 2:4] = p[:, 2:4] * spread + 1.0
        p[:, 4:] = p[:, 4:] * 2 - 2
        preds.append(p)
    return preds


def random_targets(counts, nc, seed=0, min_side=0.01, max_side=0.5, outside=False):
    """[M, 6] normalised targets with the given number of GTs per image."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for b, n in enumerate(counts):
        if n == 0:
            continue
        wh = min_side + torch.rand(n, 2, generator=g) * (max_side - min_side)
        lo = -0.2 if outside else 0.0
        xy = lo + torch.rand(n, 2, generator=g) * (1 - 2 * lo)
        if not outside:  # centres inside the image, as clipped labels have them
            xy = xy.clamp(0.001, 0.999)
        cls = torch.randint(0, nc, (n, 1), generator=g).float()
        rows.append(torch.cat((torch.full((n, 1), float(b)), cls, xy, wh), 1))
    return torch.cat(rows) if rows else torch.zeros(0, 6)


CASES = {
    "one_gt": dict(counts=[1, 0]),
    "zero_gts": dict(counts=[0, 0]),
    "mixed_empty": dict(counts=[0, 7, 0, 3]),
    "crowded_200": dict(counts=[200, 5]),
    "smaller_than_stride": dict(counts=[12, 9], min_side=0.002, max_side=0.02),
    "huge_boxes": dict(counts=[4, 6], min_side=0.8, max_side=1.6),
    "partly_outside": dict(counts=[10, 10], max_side=0.6, outside=True),
    "many": dict(counts=[30, 20, 10]),
}


def assert_same_assignment(model, loss_fn, preds, targets, nc, prior):
    """Foreground masks and matched GTs equal the per-image reference; loss items within 1e-5."""
    loss, items = loss_fn(preds, targets)
    ref_items, ref_images = reference_losses(preds, targets, STRIDES, nc, prior, loss_fn.use_l1, loss_fn.iou_loss)
    fg_ours = loss_fn_assignment(loss_fn, preds, targets)
    for b, (fg, matched) in enumerate(ref_images):
        assert torch.equal(fg_ours.fg_mask[b], fg), f"image {b}: foreground masks differ"
        assert torch.equal(fg_ours.matched_gt[b][fg], matched), f"image {b}: matched GTs differ"
        img_targets = targets[targets[:, 0] == b]
        assert torch.equal(fg_ours.matched_class[b][fg], img_targets[matched, 1].long())
    torch.testing.assert_close(items, ref_items, rtol=1e-5, atol=1e-6)
    assert torch.isclose(loss, items.sum(), rtol=1e-6)
    return items


def loss_fn_assignment(loss_fn, preds, targets):
    """Re-run the assignment the loss made, to compare it with the reference."""
    from utils.loss.simota_sparse import simota_assign

    raw = torch.cat([p.flatten(2) for p in preds], 2).permute(0, 2, 1).float()
    grid, stride = loss_fn._anchors([tuple(p.shape[2:]) for p in preds], raw.device)
    boxes = torch.cat(((raw[..., :2] + grid) * stride, torch.exp(raw[..., 2:4]) * stride), -1)
    in_h, in_w = preds[0].shape[2] * STRIDES[0], preds[0].shape[3] * STRIDES[0]
    gt_img, gt_cls, gt_boxes = loss_fn._targets(targets, raw.shape[0], in_w, in_h, raw.device)
    return simota_assign(boxes, raw[..., 5:], raw[..., 4], (grid + 0.5) * stride, stride[:, 0],
                         gt_boxes, gt_cls, gt_img, loss_fn.prior)


@pytest.mark.parametrize("prior", ["center", "box_or_center"])
@pytest.mark.parametrize("case", list(CASES))
def test_batched_assignment_equals_per_image_reference(prior, case):
    spec = dict(CASES[case])
    counts = spec.pop("counts")
    nc = 20
    model = make_model(nc)
    preds = random_preds(len(counts), nc, seed=len(case))
    targets = random_targets(counts, nc, seed=len(case) + 1, **spec)
    loss_fn = ComputeXLoss(model, {"simota_prior": prior})
    loss_fn.use_l1 = True
    items = assert_same_assignment(model, loss_fn, preds, targets, nc, prior)
    assert torch.isfinite(items).all()


@pytest.mark.parametrize("seed", range(6))
def test_random_batches_both_priors_and_giou(seed):
    nc = 80
    model = make_model(nc)
    counts = torch.randint(0, 40, (4,), generator=torch.Generator().manual_seed(seed)).tolist()
    preds = random_preds(4, nc, seed=100 + seed, spread=1.0)
    targets = random_targets(counts, nc, seed=200 + seed, min_side=0.005, max_side=0.9)
    for prior in ("center", "box_or_center"):
        for iou_loss in ("iou", "giou"):
            loss_fn = ComputeXLoss(model, {"simota_prior": prior, "iou_loss": iou_loss})
            loss_fn.use_l1 = seed % 2 == 0
            assert_same_assignment(model, loss_fn, preds, targets, nc, prior)


@pytest.mark.parametrize("case", ["one_gt", "mixed_empty", "many", "smaller_than_stride", "huge_boxes"])
def test_box_or_center_equals_official_get_losses(yolox_pkg, case):
    spec = dict(CASES[case])
    counts = spec.pop("counts")
    nc = 20
    preds = random_preds(len(counts), nc, seed=7)
    targets = random_targets(counts, nc, seed=8, **spec)
    loss_fn = ComputeXLoss(make_model(nc), {"simota_prior": "box_or_center"})
    for use_l1 in (False, True):
        loss_fn.use_l1 = use_l1
        _, items = loss_fn(preds, targets)
        expected = official_losses(preds, targets, STRIDES, nc, use_l1)
        torch.testing.assert_close(items, expected, rtol=1e-5, atol=1e-6)


def test_duplicate_gts_share_their_anchors():
    nc = 5
    preds = random_preds(1, nc, seed=3)
    t = torch.tensor([[0, 1, 0.5, 0.5, 0.2, 0.2]] * 2 + [[0, 2, 0.3, 0.7, 0.1, 0.3]])
    for prior in ("center", "box_or_center"):
        loss_fn = ComputeXLoss(make_model(nc), {"simota_prior": prior})
        assert_same_assignment(None, loss_fn, preds, t, nc, prior)
        # the first of two identical GTs wins every contested anchor, as official argmin does
        assignment = loss_fn_assignment(loss_fn, preds, t)
        rows = assignment.matched_row[0][assignment.fg_mask[0]]
        assert 1 not in rows.tolist()


def test_ties_do_not_change_the_loss():
    """Two anchors with identical predictions, symmetric about a GT, cost exactly the same; dynamic k
    is 1, so one of them is taken, and whichever the topk keeps, no loss item moves."""
    nc = 3
    preds = [torch.full((1, 5 + nc, 128 // s, 128 // s), -4.0) for s in STRIDES]  # tiny boxes: IoU 0
    gt = torch.tensor([[0, 1, 64 / 128, 68 / 128, 30 / 128, 10 / 128]])  # centre between cells x=7, x=8
    level = preds[0]  # stride 8
    for x in (7, 8):  # both predict a 16 x 8 box centred on (64, 68): IoU 128 / 300 with the GT
        level[0, :4, 8, x] = torch.tensor([64 / 8 - x, 68 / 8 - 8, math.log(2.0), 0.0])
        level[0, 4:, 8, x] = 1.0
    loss_fn = ComputeXLoss(make_model(nc), {"simota_prior": "center"})
    _, items = loss_fn(preds, gt)
    assignment = loss_fn_assignment(loss_fn, preds, gt)
    assert int(assignment.fg_mask.sum()) == 1
    assert assignment.fg_mask[0, 8 * 16 + 7] or assignment.fg_mask[0, 8 * 16 + 8]
    ref_items, _ = reference_losses(preds, gt, STRIDES, nc, "center")
    torch.testing.assert_close(items, ref_items, rtol=1e-5, atol=1e-6)


def test_no_nan_for_degenerate_input():
    nc = 4
    loss_fn = ComputeXLoss(make_model(nc), {})
    loss_fn.use_l1 = True
    preds = random_preds(2, nc, seed=1)
    preds[0][:, 2:4] = -200.0  # predicted boxes of zero area (exp underflows)
    preds[1][:, 0:2] = 1e4     # predictions far outside the image
    targets = torch.tensor([[0, 1, 0.5, 0.5, 0.0, 0.0],   # zero-area GT
                            [0, 2, 0.3, 0.3, 0.2, 0.0],
                            [1, 3, 0.5, 0.5, 0.3, 0.3]])
    loss, items = loss_fn(preds, targets)
    assert torch.isfinite(loss) and torch.isfinite(items).all()
    half = [p.half() for p in random_preds(2, nc, seed=2)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, items = loss_fn(half, targets)
    assert torch.isfinite(loss) and torch.isfinite(items).all()


def test_unassignable_gt_is_counted():
    nc = 2
    loss_fn = ComputeXLoss(make_model(nc), {"simota_prior": "center"})
    preds = random_preds(2, nc, seed=4)
    targets = torch.tensor([[0, 1, 1.5, 1.5, 0.1, 0.1],   # centre far outside: no anchor can take it
                            [1, 0, 0.5, 0.5, 0.2, 0.2]])
    loss, items = loss_fn(preds, targets)
    assert torch.isfinite(loss)
    assert int(loss_fn.last_stats["unmatched_gt"]) == 1 and loss_fn.last_stats["num_gt"] == 2


def test_500_gts_in_one_image_and_gradients_flow():
    nc = 80
    model = make_model(nc).train()
    x = torch.rand(2, 3, 256, 256)
    preds = model(x)
    targets = random_targets([500, 3], nc, seed=5, min_side=0.01, max_side=0.2)
    loss, items = ComputeXLoss(model, {})(preds, targets)
    loss.backward()
    assert torch.isfinite(loss)
    assert model.model[-1].cls_preds[0].weight.grad.abs().sum() > 0


def test_loss_items_and_interface():
    nc = 6
    model = make_model(nc)
    loss_fn = ComputeXLoss(model, {"lr0": 0.01})  # other hyp keys belong to the trainer
    assert loss_fn.prior == "center" and loss_fn.iou_loss == "iou" and not loss_fn.use_l1
    preds = random_preds(2, nc, seed=6)
    loss, items = loss_fn(preds, random_targets([3, 2], nc, seed=6))
    assert items.shape == (4,) and not items.requires_grad and items[3] == 0
    assert torch.isclose(loss, items.sum())
    with pytest.raises(ValueError, match="'simota_prior' must be one of"):
        ComputeXLoss(model, {"simota_prior": "centre"})
    with pytest.raises(ValueError, match="'iou_loss' must be one of"):
        ComputeXLoss(model, {"iou_loss": "ciou"})
    with pytest.raises(ValueError, match="classes outside"):
        loss_fn(preds, torch.tensor([[0, 9, 0.5, 0.5, 0.1, 0.1]]))
