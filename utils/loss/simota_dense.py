"""SimOTA computed densely and batched: every (GT, candidate) pair of the batch in [GTs, candidates]
tensors, the rules of utils/loss/simota.py applied in order. The reference the fast path
(simota_sparse.simota_assign) is tested against, and the path it takes for the GTs its windows cannot serve.

Layout: the batch's GTs are packed as rows (T = all GTs, ``gt_img`` says whose, non-decreasing); the
candidate anchors of each image become columns in ascending anchor order (official's candidate order),
padded to M, the most candidates of any image. Pairwise tensors are [T, M], the class costs need
[images, M, C]; official YOLOX builds [GTs, candidates, C] per image instead. No Python loop runs over
images or GTs; reading M (it sizes the columns) is the one host sync.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from utils.boxes import pairwise_iou_cxcywh
from utils.loss.simota import (PRIORS, TOPK_IOU, Assignment, assigner, dynamic_k, empty_assignment, geometry,
                               negative_total, pair_cost, per_anchor_outputs, score_prob)


@assigner
def simota_assign_dense(pred_boxes, cls_logits, obj_logits, anchor_xy, anchor_stride,
                        gt_boxes, gt_classes, gt_img, prior: str = "center") -> Assignment:
    """Assign the anchors of a batch to GTs with SimOTA (arguments: simota.assigner), as
    simota_sparse.simota_assign does.

    Ties: each GT's k cheapest columns come from one torch.topk over its row (its image's candidates,
    padded with +inf); on exactly equal costs the choice is topk's. Conflicts go to the first (lowest
    row) GT among equal minima, as official's argmin.
    """
    B, A, _ = cls_logits.shape
    T = gt_boxes.shape[0]
    device = pred_boxes.device
    pred_boxes, gt_boxes = pred_boxes.float(), gt_boxes.float()
    cls_logits, obj_logits = cls_logits.detach().float(), obj_logits.detach().float().reshape(B, A)
    anchor_xy, anchor_stride = anchor_xy.float(), anchor_stride.float().reshape(-1)

    # 1. candidates: the anchors some GT of the same image admits
    candidate, _ = geometry(anchor_xy, anchor_stride, gt_boxes, prior)  # [T, A]
    cand = torch.zeros(B, A, dtype=torch.int32, device=device).index_add_(0, gt_img, candidate.int()) > 0
    num_cand = cand.sum(1)  # [B]
    M = int(num_cand.max())
    if M == 0:
        return empty_assignment(B, A, T, device)

    # 2. IoU and cost of each GT with every candidate of its image
    rows = torch.arange(T, device=device)
    pairs = candidate_pairs(pred_boxes, cls_logits, obj_logits, anchor_xy, anchor_stride, gt_boxes, gt_classes,
                            gt_img, prior, rows, cand, num_cand, M)

    # 3. dynamic k from the 10 best IoUs, then each GT's k cheapest candidates
    k_top = min(TOPK_IOU, M)
    ks = dynamic_k(pairs.iou, k_top)  # [T]
    picked = pairs.cost.topk(k_top, dim=1, largest=False).indices  # [T, k_top], cheapest first
    take = (torch.arange(k_top, device=device) < ks[:, None]) & pairs.valid.gather(1, picked)
    matching = torch.zeros(T, M, dtype=torch.bool, device=device).scatter_(1, picked, take)  # [T, M]

    # 4. an anchor taken by several GTs goes to the cheapest GT of its image, the first on ties
    matching = _resolve_conflicts(matching, pairs.cost, pairs.img_of, len(pairs.images))

    # 5. per anchor: [images, M] columns back to [B, A]
    return _to_anchors(matching, pairs, B, A, gt_img, gt_classes)


@dataclass
class CandidatePairs:
    """GT rows x the candidates of their image: column j of a row is its image's j-th candidate."""

    images: torch.Tensor     # [I] images of the rows, ascending
    img_of: torch.Tensor     # [R] index into images of each row
    cand_idx: torch.Tensor   # [I, M] anchor of each column (padding columns: anchors of no meaning)
    anchor: torch.Tensor     # [R, M] cand_idx of the row's image
    valid: torch.Tensor      # [R, M] bool, the column is a candidate, not padding
    iou: torch.Tensor        # [R, M] IoU of the GT with the column's prediction (0 on padding)
    cost: torch.Tensor       # [R, M] official cost (+inf on padding)
    neg_total: torch.Tensor  # [I, M] the columns' all-negative class costs


def candidate_pairs(pred_boxes, cls_logits, obj_logits, anchor_xy, anchor_stride, gt_boxes, gt_classes, gt_img,
                    prior: str, rows, cand, num_cand, M: int) -> CandidatePairs:
    """IoUs and costs of GT rows [R] (into the packed GTs) with every candidate of their image.

    cand [B, A] bool candidates per image, num_cand [B] their counts, M >= every count. Inputs in float32,
    obj_logits [B, A].
    """
    B, A = cand.shape
    device = cand.device
    images, img_of = torch.unique(gt_img[rows], return_inverse=True)  # [I], [R]
    cand_idx = torch.sort((~cand[images]).to(torch.uint8), dim=1, stable=True).indices[:, :M]  # [I, M] ascending
    valid = (torch.arange(M, device=device) < num_cand[images][:, None])[img_of]  # [R, M]
    anchor = cand_idx[img_of]  # [R, M]
    gt = gt_boxes[rows]  # [R, 4]
    inside = geometry(anchor_xy, anchor_stride, gt, prior)[1].gather(1, anchor) & valid  # [R, M]
    cand_boxes = pred_boxes[images[:, None], cand_idx]  # [I, M, 4]
    iou = pairwise_iou_cxcywh(gt[:, None], cand_boxes[img_of]).squeeze(1) * valid  # [R, M]
    neg_total = negative_total(cls_logits[images[:, None], cand_idx], obj_logits[images[:, None], cand_idx])  # [I, M]
    row_img = images[img_of][:, None]  # [R, 1]
    p_gt = score_prob(cls_logits[row_img, anchor, gt_classes[rows][:, None]], obj_logits[row_img, anchor])  # [R, M]
    cost = pair_cost(neg_total[img_of], p_gt, iou, inside, PRIORS[prior].penalty)
    return CandidatePairs(images, img_of, cand_idx, anchor, valid, iou, cost.masked_fill(~valid, float("inf")),
                          neg_total)


def _resolve_conflicts(matching, cost, img_of, n_images: int):
    """matching [T, M] with each contested column (taken by several rows of an image) given to the row of
    least cost among all the image's rows, the first one on ties."""
    T, M = matching.shape
    device = matching.device
    img_index = img_of[:, None].expand(T, M)  # [T, M] image of each entry
    claims = torch.zeros(n_images, M, dtype=torch.int32, device=device).scatter_add_(0, img_index, matching.int())
    contested = claims[img_of] > 1  # [T, M]
    col_min = torch.full((n_images, M), float("inf"), device=device).scatter_reduce_(0, img_index, cost, "amin")
    row = torch.arange(T, device=device)[:, None].expand(T, M)
    first_min_row = torch.full((n_images, M), T, dtype=torch.long, device=device).scatter_reduce_(
        0, img_index, row.masked_fill(cost != col_min[img_of], T), "amin")  # [images, M]
    return torch.where(contested, row == first_min_row[img_of], matching)


def _to_anchors(matching, pairs: CandidatePairs, B: int, A: int, gt_img, gt_classes) -> Assignment:
    """The Assignment [B, A] from the resolved matching [T, M] (each column taken by at most one row)."""
    T, M = matching.shape
    n_images, device = len(pairs.images), matching.device
    img_index = pairs.img_of[:, None].expand(T, M)
    row = torch.arange(T, device=device)[:, None].expand(T, M)
    col_fg = torch.zeros(n_images, M, dtype=torch.int32, device=device).scatter_add_(0, img_index, matching.int()) > 0
    col_row = torch.zeros(n_images, M, dtype=torch.long, device=device).scatter_add_(0, img_index, row * matching)
    col_iou = torch.zeros(n_images, M, device=device).scatter_add_(0, img_index, pairs.iou * matching)
    # each image's columns to its anchors; padding columns write to a dropped slot A
    flat = (pairs.images[:, None] * (A + 1) + pairs.cand_idx.masked_fill(~col_fg, A)).view(-1)

    def scatter(values, fill):
        out = torch.full((B * (A + 1),), fill, dtype=values.dtype, device=device)
        return out.scatter_(0, flat, values.view(-1)).view(B, A + 1)[:, :A]

    fg_mask = scatter(col_fg, False)
    unmatched = (~matching.any(1)).sum()
    return per_anchor_outputs(scatter(col_row, 0), scatter(col_iou, 0.0), fg_mask, gt_img, gt_classes, unmatched)
