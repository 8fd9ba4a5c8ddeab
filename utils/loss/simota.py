"""SimOTA, YOLOX's label assignment: the rules both implementations share, each written once.

    simota_sparse.simota_assign        the fast path ComputeXLoss runs: per-GT windows, sparse pairs
    simota_dense.simota_assign_dense   the same assignment from plain [GTs, candidates] tensors, read top
                                       to bottom: the reference the tests hold the fast path to

Per image, as official YOLOX (yolo_head.py get_assignments / simota_matching):
1. candidates: anchors whose centre lies within ``radius`` strides of a GT's centre (and, for the
   ``box_or_center`` prior, also anchors inside a GT box): ``geometry``;
2. the cost of a (GT, candidate) pair: class cost (BCE of sqrt(sigmoid(cls) x sigmoid(obj)) against the
   GT's one-hot class) + 3 x -log(IoU + 1e-8) + a penalty when the pair is outside the prior
   (``pair_cost``);
3. dynamic k of a GT: the sum of its 10 best IoUs over the image's candidates, truncated, at least 1
   (``dynamic_k``); the GT takes its k cheapest candidates;
4. an anchor taken by several GTs goes to the cheapest GT of its image, the first one on equal costs.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F

from utils.config import check_value


class Prior(NamedTuple):
    radius: float    # centre region half-width, in strides
    penalty: float   # added to the cost of a pair outside the prior
    uses_box: bool   # candidates also inside the GT box; the prior is then box AND centre


# hyp simota_prior -> its rule (the allowed names are utils/config.py's)
PRIORS = {
    "center": Prior(1.5, 1e6, False),         # official HEAD (PR #1589, 2023): centre 3x3 cells only
    "box_or_center": Prior(2.5, 1e5, True),   # official 2021-2022, PyPI yolox 0.3.0
}
IOU_COST_WEIGHT = 3.0
IOU_COST_EPS = 1e-8  # -log(IoU + 1e-8): a pair that does not overlap costs 3 x 18.42
TOPK_IOU = 10        # dynamic k sums this many best IoUs


@dataclass
class Assignment:
    """Per-anchor results, [B, A] each; values at background anchors are meaningless (0)."""

    fg_mask: torch.Tensor        # bool
    matched_row: torch.Tensor    # long, row of the matched GT in the batch's packed GT list
    matched_gt: torch.Tensor     # long, index of the matched GT among its image's GTs
    matched_class: torch.Tensor  # long, class of the matched GT
    matched_iou: torch.Tensor    # float, IoU of the anchor's predicted box with its GT
    num_unmatched_gt: torch.Tensor  # long scalar: GTs that ended with no anchor at all


def assigner(assign):
    """What every SimOTA implementation does on entry, written once: the prior checked against the allowed
    ones, a batch without GTs assigned nothing, no gradients, and float32 costs under any autocast (as
    official). ``assign`` runs for batches with GTs, with the same arguments:

    pred_boxes [B, A, 4] decoded cxcywh pixels; cls_logits [B, A, C]; obj_logits [B, A] or [B, A, 1];
    anchor_xy [A, 2] anchor centres ((grid + 0.5) * stride); anchor_stride [A];
    gt_boxes [T, 4] cxcywh pixels; gt_classes [T] long; gt_img [T] long, non-decreasing; prior.
    """
    @functools.wraps(assign)
    @torch.no_grad()
    def entry(pred_boxes, cls_logits, obj_logits, anchor_xy, anchor_stride, gt_boxes, gt_classes, gt_img,
              prior: str = "center") -> Assignment:
        check_value("simota_prior", prior)
        if gt_boxes.shape[0] == 0:
            B, A, _ = cls_logits.shape
            return empty_assignment(B, A, 0, pred_boxes.device)
        with torch.autocast(device_type=pred_boxes.device.type, enabled=False):
            return assign(pred_boxes, cls_logits, obj_logits, anchor_xy, anchor_stride, gt_boxes, gt_classes, gt_img,
                          prior)

    return entry


def empty_assignment(B: int, A: int, unmatched: int, device) -> Assignment:
    zeros = torch.zeros(B, A, dtype=torch.long, device=device)
    return Assignment(torch.zeros(B, A, dtype=torch.bool, device=device), zeros, zeros, zeros,
                      torch.zeros(B, A, device=device), torch.tensor(unmatched, device=device))


def per_anchor_outputs(matched_row, matched_iou, fg_mask, gt_img, gt_classes, num_unmatched) -> Assignment:
    """The Assignment from each anchor's GT row and IoU ([B, A]; anything at background anchors)."""
    B = fg_mask.shape[0]
    per_image = torch.bincount(gt_img, minlength=B)
    first_row = torch.cumsum(per_image, 0) - per_image  # [B], packed row of each image's first GT
    matched_gt = (matched_row - first_row[:, None]) * fg_mask
    matched_class = gt_classes[matched_row] * fg_mask
    return Assignment(fg_mask, matched_row, matched_gt, matched_class, matched_iou, num_unmatched)


# ---- 1. geometry -------------------------------------------------------------------------------
def geometry(anchor_xy: torch.Tensor, anchor_stride: torch.Tensor, gt_boxes: torch.Tensor, prior: str):
    """Which anchors may take which GT.

    anchor_xy [A, 2] anchor centres (pixels); anchor_stride [A]; gt_boxes [T, 4] cxcywh pixels.
    Returns (candidate [T, A] bool: the pair counts towards the image's candidate set,
             inside [T, A] bool: the pair is free of the cost penalty).
    """
    in_center, in_box = prior_tests(anchor_xy[None], anchor_stride[None], gt_boxes[:, None], prior)
    if in_box is None:
        return in_center, in_center
    return in_box | in_center, in_box & in_center


def axis_test(coord, centre, half):
    """Official YOLOX's strict test along one axis: coord - (centre - half) > 0 and (centre + half) - coord > 0,
    term by term as official computes it (the fast path's binary search relies on this form)."""
    return ((coord - (centre - half)) > 0) & (((centre + half) - coord) > 0)


def prior_tests(xy, stride, gt, prior: str):
    """(in_center, in_box or None) for broadcastable anchor centres xy [..., 2], strides [...], GTs [..., 4]."""
    rule = PRIORS[prior]
    x, y, gx, gy = xy[..., 0], xy[..., 1], gt[..., 0], gt[..., 1]
    dist = stride * rule.radius
    in_center = axis_test(x, gx, dist) & axis_test(y, gy, dist)
    if not rule.uses_box:
        return in_center, None
    return in_center, axis_test(x, gx, 0.5 * gt[..., 2]) & axis_test(y, gy, 0.5 * gt[..., 3])


# ---- 2. costs ----------------------------------------------------------------------------------
def score_prob(cls_logits: torch.Tensor, obj_logits: torch.Tensor) -> torch.Tensor:
    """sqrt(sigmoid(cls) x sigmoid(obj)), the probability the class cost is a BCE of (shapes broadcast)."""
    return (cls_logits.sigmoid() * obj_logits.sigmoid()).sqrt()


def bce_zero(p: torch.Tensor) -> torch.Tensor:
    """Official's BCE(p, 0) elementwise: -max(log1p(-p), -100)."""
    return F.binary_cross_entropy(p, p.new_zeros(()).expand_as(p), reduction="none")


def negative_total(cls_logits: torch.Tensor, obj_logits: torch.Tensor) -> torch.Tensor:
    """sum_c BCE(score_prob, 0) for cls [..., C], obj [...]: an anchor's class cost against no class at all."""
    return bce_zero(score_prob(cls_logits, obj_logits[..., None])).sum(-1)


def pair_cost(neg_total, p_gt, iou, inside, penalty: float) -> torch.Tensor:
    """Official cost of (GT, anchor) pairs, any matching shapes.

    The class cost, official's sum over classes of BCE(p, one_hot(GT class)), is the anchor's all-negative
    total ``neg_total`` with the GT class's negative term swapped for its positive one (p_gt = score_prob
    at the GT class): it rounds differently from official's per-pair sum in the last bits only, and needs
    no [GTs, anchors, classes] tensor.
    """
    cls_cost = neg_total - bce_zero(p_gt) + F.binary_cross_entropy(p_gt, torch.ones_like(p_gt), reduction="none")
    return cls_cost + IOU_COST_WEIGHT * -torch.log(iou + IOU_COST_EPS) + penalty * (~inside)


# ---- 3. dynamic k ------------------------------------------------------------------------------
def dynamic_k(ious: torch.Tensor, k_top: int) -> torch.Tensor:
    """[T] int32 from [T, >= k_top] IoUs over each GT's candidates (zeros elsewhere): the sum of the k_top
    best, truncated by int(), at least 1. Official takes min(10, candidates of the image); both paths
    here take min(10, most candidates of any image), so an image with fewer sums zeros too (which can
    move the sum by its last bit)."""
    return ious.topk(max(k_top, 1), dim=1).values[:, :k_top].sum(1).int().clamp(min=1)
