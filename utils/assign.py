"""SimOTA label assignment (YOLOX), batched: one call assigns every image of a batch.

Layout: the batch's GTs are packed as rows (T = all GTs of all images, ``gt_img`` says whose);
each image's candidate anchors are gathered into columns padded to the largest image's count M
(with a validity mask). Every pairwise tensor is [T, M]; the class cost needs [B, M, C]. No
[GTs, candidates, classes] tensor is ever built (official YOLOX builds one per image), no Python
loop runs over images or GTs, and the only host sync is reading M, which sizes the columns.

The arithmetic follows official YOLOX (geometry, IoU, cost order, dynamic k, conflict argmin)
so that assignments agree with it; see ``simota_assign`` for the one place that differs.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from utils.boxes import pairwise_iou_cxcywh

# prior -> (centre radius in strides, penalty for a pair outside the prior, uses the GT box)
PRIORS = {
    "center": (1.5, 1e6, False),          # official HEAD (PR #1589, 2023): centre 3x3 cells only
    "box_or_center": (2.5, 1e5, True),    # official 2021-2022, PyPI yolox 0.3.0
}
IOU_COST_WEIGHT = 3.0
TOPK_IOU = 10


@dataclass
class Assignment:
    """Per-anchor results, [B, A] each; values at background anchors are meaningless (0)."""

    fg_mask: torch.Tensor        # bool
    matched_row: torch.Tensor    # long, row of the matched GT in the batch's packed GT list
    matched_gt: torch.Tensor     # long, index of the matched GT among its image's GTs
    matched_class: torch.Tensor  # long, class of the matched GT
    matched_iou: torch.Tensor    # float, IoU of the anchor's predicted box with its GT
    num_unmatched_gt: torch.Tensor  # long scalar: GTs that ended with no anchor at all


def geometry(anchor_xy: torch.Tensor, anchor_stride: torch.Tensor, gt_boxes: torch.Tensor, prior: str):
    """Which anchors may take which GT.

    anchor_xy [A, 2] anchor centres (pixels); anchor_stride [A]; gt_boxes [T, 4] cxcywh pixels.
    Returns (candidate [T, A] bool: the pair counts towards the image's candidate set,
             inside [T, A] bool: the pair is free of the cost penalty).
    Comparisons are strict and computed term by term exactly as official YOLOX does.
    """
    radius, _, use_box = PRIORS[prior]
    x, y = anchor_xy[:, 0][None], anchor_xy[:, 1][None]  # [1, A]
    gx, gy = gt_boxes[:, 0:1], gt_boxes[:, 1:2]  # [T, 1]
    dist = anchor_stride[None] * radius if prior == "center" else radius * anchor_stride[None]
    in_center = ((x - (gx - dist)) > 0) & (((gx + dist) - x) > 0) & ((y - (gy - dist)) > 0) & (((gy + dist) - y) > 0)
    if not use_box:
        return in_center, in_center
    half_w, half_h = 0.5 * gt_boxes[:, 2:3], 0.5 * gt_boxes[:, 3:4]
    in_box = ((x - (gx - half_w)) > 0) & (((gx + half_w) - x) > 0) & ((y - (gy - half_h)) > 0) & (((gy + half_h) - y) > 0)
    return in_box | in_center, in_box & in_center


@torch.no_grad()
def simota_assign(pred_boxes, cls_logits, obj_logits, anchor_xy, anchor_stride,
                  gt_boxes, gt_classes, gt_img, prior: str = "center") -> Assignment:
    """Assign the anchors of a batch to GTs with SimOTA.

    pred_boxes [B, A, 4] decoded cxcywh pixels; cls_logits [B, A, C]; obj_logits [B, A] or [B, A, 1];
    anchor_xy [A, 2] anchor centres ((grid + 0.5) * stride); anchor_stride [A];
    gt_boxes [T, 4] cxcywh pixels; gt_classes [T] long; gt_img [T] long, non-decreasing.

    Ties: official YOLOX picks each GT's k cheapest candidates with torch.topk on that GT's own row
    and resolves conflicts with the first minimum over GTs. Here all rows go through one topk; on
    exactly equal costs (float32 has a step of 0.0625 at the 1e6 penalty, and all zero-IoU pairs
    share -log(1e-8)) the choice among the tied anchors is topk's and may differ from official's.
    Conflicts take the first (lowest-index) GT among equal minima, as official. The class cost is
    summed as total-over-classes minus the GT class's negative term plus its positive term, which
    rounds differently from official's per-pair sum in the last bits only.
    """
    if prior not in PRIORS:
        raise ValueError(f"simota_prior must be one of {sorted(PRIORS)}, got {prior!r}")
    B, A, C = cls_logits.shape
    T = gt_boxes.shape[0]
    device = pred_boxes.device
    pred_boxes = pred_boxes.float()
    zeros = torch.zeros(B, A, dtype=torch.long, device=device)
    empty = Assignment(torch.zeros(B, A, dtype=torch.bool, device=device), zeros, zeros, zeros,
                       torch.zeros(B, A, device=device), torch.zeros((), dtype=torch.long, device=device))
    if T == 0:
        return empty
    gt_boxes = gt_boxes.float()
    _, penalty, _ = PRIORS[prior]

    # 1. candidates: anchors that any GT of the same image admits
    candidate, inside = geometry(anchor_xy.float(), anchor_stride.float(), gt_boxes, prior)  # [T, A]
    per_image = torch.zeros(B, A, dtype=torch.int32, device=device).index_add_(0, gt_img, candidate.to(torch.int32))
    cand_mask = per_image > 0  # [B, A]
    num_cand = cand_mask.sum(1)  # [B]
    M = int(num_cand.max())  # the one host sync: it sizes every [T, M] tensor
    if M == 0:
        empty.num_unmatched_gt = torch.tensor(T, device=device)
        return empty
    # candidate anchor indices per image, ascending (the official candidate order), padded
    cand_idx = torch.sort((~cand_mask).to(torch.uint8), dim=1, stable=True).indices[:, :M]  # [B, M]
    cand_valid = torch.arange(M, device=device)[None] < num_cand[:, None]  # [B, M]
    row_idx, row_valid = cand_idx[gt_img], cand_valid[gt_img]  # [T, M]
    inside = inside.gather(1, row_idx) & row_valid  # [T, M]

    # 2. pairwise IoU of each GT with its image's candidate predictions
    cand_boxes = pred_boxes.gather(1, cand_idx[..., None].expand(B, M, 4))  # [B, M, 4]
    ious = pairwise_iou_cxcywh(gt_boxes[:, None], cand_boxes[gt_img]).squeeze(1)  # [T, M]
    ious = ious * row_valid

    # 3. cost = class cost + 3 * IoU cost + penalty outside the prior, fp32 even under autocast
    with torch.autocast(device_type=device.type, enabled=False):
        cls_cost = _class_cost(cls_logits, obj_logits, cand_idx, gt_classes, gt_img)  # [T, M]
        cost = cls_cost + IOU_COST_WEIGHT * -torch.log(ious + 1e-8) + penalty * (~inside)
    cost = cost.masked_fill(~row_valid, float("inf"))

    # 4. dynamic k per GT, then its k cheapest candidates
    k_top = min(TOPK_IOU, M)
    dynamic_k = ious.topk(k_top, dim=1).values.sum(1).int().clamp(min=1)  # [T]
    picked = cost.topk(k_top, dim=1, largest=False).indices  # [T, k_top], cheapest first
    # an image without candidates has only padded columns: its GTs take nothing (counted below)
    take = (torch.arange(k_top, device=device)[None] < dynamic_k[:, None]) & row_valid.gather(1, picked)
    matching = torch.zeros(T, M, dtype=torch.bool, device=device).scatter_(1, picked, take)

    # 5. an anchor claimed by several GTs goes to the cheapest GT of its image (first on ties)
    img_index = gt_img[:, None].expand(T, M)
    claims = torch.zeros(B, M, dtype=torch.int32, device=device).scatter_add_(0, img_index, matching.to(torch.int32))
    contested = claims[gt_img] > 1  # [T, M]
    col_min = torch.full((B, M), float("inf"), device=device).scatter_reduce_(0, img_index, cost, "amin")
    rows = torch.arange(T, device=device)[:, None].expand(T, M)
    first_min_row = torch.full((B, M), T, dtype=torch.long, device=device).scatter_reduce_(
        0, img_index, rows.masked_fill(cost != col_min[gt_img], T), "amin")
    matching = torch.where(contested, rows == first_min_row[gt_img], matching)

    # 6. back to dense per-anchor tensors [B, A]
    col_fg = claims > 0  # [B, M] (the same set after conflicts)
    col_row = torch.full((B, M), -1, dtype=torch.long, device=device).scatter_reduce_(
        0, img_index, rows.masked_fill(~matching, -1), "amax")
    col_iou = torch.zeros(B, M, device=device).scatter_add_(0, img_index, ious * matching)
    dense_idx = cand_idx.masked_fill(~cand_valid, A)  # padded columns write to a spare slot
    fg_mask = _to_dense(col_fg, dense_idx, A, False)
    matched_row = _to_dense(col_row.clamp(min=0), dense_idx, A, 0)
    matched_iou = _to_dense(col_iou, dense_idx, A, 0.0)
    gts_per_image = torch.bincount(gt_img, minlength=B)
    first_row = torch.cumsum(gts_per_image, 0) - gts_per_image  # [B], packed row of each image's first GT
    matched_gt = (matched_row - first_row[:, None]) * fg_mask
    matched_class = gt_classes[matched_row] * fg_mask
    return Assignment(fg_mask, matched_row, matched_gt, matched_class, matched_iou, (~matching.any(1)).sum())


def _class_cost(cls_logits, obj_logits, cand_idx, gt_classes, gt_img):
    """sum_c BCE(sqrt(sigmoid(cls) * sigmoid(obj)), one_hot(gt class)) for every (GT, candidate) pair.

    Computed from [B, M, C] per-candidate terms: the all-negative sum over classes, corrected at
    the GT's class. Returns [T, M].
    """
    B, M = cand_idx.shape
    C = cls_logits.shape[-1]
    cls = cls_logits.detach().float().gather(1, cand_idx[..., None].expand(B, M, C))  # [B, M, C]
    obj = obj_logits.detach().float().reshape(B, -1).gather(1, cand_idx)[..., None]  # [B, M, 1]
    p = (cls.sigmoid() * obj.sigmoid()).sqrt()  # [B, M, C]
    neg = F.binary_cross_entropy(p, torch.zeros_like(p), reduction="none")  # [B, M, C]
    neg_total = neg.sum(-1)  # [B, M]
    p_gt = p.permute(0, 2, 1)[gt_img, gt_classes]  # [T, M]
    neg_gt = neg.permute(0, 2, 1)[gt_img, gt_classes]  # [T, M]
    pos_gt = F.binary_cross_entropy(p_gt, torch.ones_like(p_gt), reduction="none")
    return neg_total[gt_img] - neg_gt + pos_gt


def _to_dense(values: torch.Tensor, dense_idx: torch.Tensor, A: int, fill) -> torch.Tensor:
    """Scatter [B, M] column values to [B, A] anchors (padded columns go to a dropped slot A)."""
    B = values.shape[0]
    out = torch.full((B, A + 1), fill, dtype=values.dtype, device=values.device)
    return out.scatter_(1, dense_idx, values)[:, :A]
