"""SimOTA label assignment (YOLOX), batched and sparse: one call assigns every image of a batch.

Official YOLOX builds, per image, [GTs, candidates] IoU and cost matrices (and a [GTs, candidates,
classes] tensor for the class cost). With the ``box_or_center`` prior nearly every anchor is a
candidate (~8400 at 640 px), yet a GT only ever takes dynamic_k <= 10 anchors, so almost none of
those entries matter. Here:

- Pairs inside the prior (the GT's centre region, and its box too for ``box_or_center``) cost less
  than the penalty every other pair carries, so a GT with at least dynamic_k inside pairs picks
  among those only. They lie in a small window of cells around the GT centre on each level (radius
  1.5 or 2.5 strides: 3 x 3 or 5 x 5 cells), found from the exact per-axis tests by binary search
  on the anchor grid. GTs with too few inside pairs (tiny or thin boxes, centres off the image)
  take the dense path over all candidates of their image (simota_dense.candidate_pairs).
- dynamic_k needs each GT's 10 best IoUs over all candidates of its image. The 10th best IoU in the
  window bounds them from below, and boolean tests on GTs x blocks of anchors, then GTs x anchors of
  the blocks that pass, keep the pairs that overlap enough to reach it; only those get an IoU.
- The class cost needs a sum over classes per anchor. It is estimated with a vectorised log(1 - p)
  for the window's anchors; exact (official BCE) totals are computed only where the estimate cannot
  decide.
- An anchor picked by several GTs goes to the cheapest GT of its image: costs are computed for the
  contested anchors only, against every GT of the image.

Every value that decides the assignment (geometry tests, IoU, cost, the dynamic_k sum) is computed
with official YOLOX's arithmetic, term by term, and the estimates only prune, with bounds on their
error, so assignments are those of the dense computation (simota_dense, the tests' reference); see
``simota_assign`` for ties. No Python
loop runs over images or GTs. Host syncs: one copy of the anchors and GT counts (the grid layout),
one read of two sizes, and the sizes of data-dependent sets (overlapping pairs, anchors needing a
class cost, GTs off the window path, contested anchors).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from utils.boxes import paired_iou_cxcywh
from utils.loss.simota import (PRIORS, TOPK_IOU, Assignment, assigner, bce_zero, dynamic_k, empty_assignment,
                               pair_cost, per_anchor_outputs, prior_tests, score_prob)
from utils.loss.simota_dense import candidate_pairs

# ---- float tolerances, each with its reason --------------------------------------------------------
# The fast path prunes with necessary conditions and bounds. These margins keep float32 rounding from
# pruning a pair or a pick that the exact computation (simota_dense) keeps; each is far wider than the
# rounding it covers, and a wider margin only sends a few more pairs to the exact computation.
REACH_LOOSENESS = 2 ** -7
# IoU >= t needs an intersection at least t * w wide and areas within a factor t of each other
# (_gt_reach); the bounds use t * (1 - 2^-7), since the IoU they stand for is a float32 quotient a few
# ulp (2^-23 each) away from the exact one.
COORD_SLACK = 2 ** -16
# Corners cx -/+ w / 2 are rounded to float32, by up to 2^-24 of the coordinates' size |cx| + |cy| + w + h;
# the reach bounds give way by 2^-16 of that size, 256 times the rounding of the corners they compare.
THIN_SIDE = 2 ** -10
# A box whose shorter side is under 2^-10 of its coordinates' size is thin: its corners, rounded at 2^-24
# of that size, can move its side by more than 2^-14, so the area and reach-depth tests skip it (its
# pairs are all kept). For thicker boxes the corners and the intersection computed from them stay within
# a relative 2^-11 of the width and height (_thick).


def class_cost_slack(total: torch.Tensor, C: int) -> torch.Tensor:
    """A bound on |class cost from the estimated all-negative total - exact class cost| (_ClassCost).

    Per term, 1 - p rounds by <= 2^-25 (exact for p >= 1/2), moving log(1 - p) by <= 2^-24, and the
    vectorised log and libm's log1pf err by <= 1 and 2 ulp; each sum of C non-negative terms rounds by
    <= C * 2^-24 of the total; the cost's later roundings, in both, by <= 6 * 2^-24 * (total + 156).
    Four times all that: total * (2^-14 + C * 2^-21) + 2^-12 + C * 2^-22.
    """
    return total * (2 ** -14 + C * 2 ** -21) + (2 ** -12 + C * 2 ** -22)


# A GT's window picks stand when its k-th pick surely costs less than half the penalty: every penalised
# pair costs at least the penalty. (Inside pairs cost < 100 * classes + 56, BCE terms being capped at 100
# and 3 * -log(1e-8) = 55.3; a GT whose picks might not clear the bar takes the exact dense path.)
SURE_PICK_FRACTION = 0.5


@assigner
def simota_assign(pred_boxes, cls_logits, obj_logits, anchor_xy, anchor_stride,
                  gt_boxes, gt_classes, gt_img, prior: str = "center") -> Assignment:
    """Assign the anchors of a batch to GTs with SimOTA (arguments: simota.assigner); anchor_xy must be
    in utils.grid.make_grid's layout (level-major, row-major; anything else raises ValueError).

    Ties: official YOLOX picks each GT's k cheapest candidates with torch.topk on that GT's own row
    and resolves conflicts with the first minimum over GTs. Here a GT with enough inside pairs takes
    them from its window of cells: the k cheapest when the estimated costs set them apart, else
    torch.topk over the exact costs of the pairs left in doubt (in ascending anchor order, others at
    +inf); the other GTs run topk over all candidates of their image, padded with +inf to the largest
    image's count. On exactly equal costs (float32 has a step of 0.0625 at the 1e6 penalty, and all
    zero-IoU pairs share -log(1e-8)) the choice among the tied anchors is topk's and may differ from
    official's. Conflicts take the first (lowest-index) GT among equal minima, as official. The class
    cost is summed as total-over-classes minus the GT class's negative term plus its positive term,
    which rounds differently from official's per-pair sum in the last bits only.
    """
    return _assign(_Inputs.build(pred_boxes, cls_logits, obj_logits, anchor_xy, anchor_stride, gt_boxes, gt_classes,
                                 gt_img, prior))


# ---- inputs and anchor layout ------------------------------------------------------------------
@dataclass
class _Grid:
    """Anchor layout: level l holds H_l x W_l anchors, row-major, from anchor offsets[l] on."""

    offsets: torch.Tensor  # [L] long
    widths: torch.Tensor   # [L] long
    strides: torch.Tensor  # [L] float
    xs: torch.Tensor       # [L, W_max] x of the anchors of each column, ascending (+inf past W_l)
    ys: torch.Tensor       # [L, H_max] y of the anchors of each row, ascending (+inf past H_l)
    cell: torch.Tensor     # [A] long, anchor -> flat index into [L, H_max + 1, W_max + 1]


@dataclass
class _Inputs:
    """simota_assign's arguments in fp32, and what every step needs to know about the batch."""

    pred_boxes: torch.Tensor   # [B * A, 4]
    cls_logits: torch.Tensor   # [B, A, C] as given (often a strided view: indexed, never copied whole)
    obj_logits: torch.Tensor   # [B, A]
    anchor_xy: torch.Tensor    # [A, 2]
    anchor_stride: torch.Tensor  # [A]
    gt_boxes: torch.Tensor     # [T, 4]
    gt_classes: torch.Tensor   # [T]
    gt_img: torch.Tensor       # [T]
    prior: str
    grid: _Grid
    per_image: torch.Tensor    # [B] GTs per image
    first_row: torch.Tensor    # [B] packed row of each image's first GT
    gts_per_image: list[int]   # per_image on the host
    class_cost: _ClassCost     # per-anchor class cost totals, filled where a cost needs them

    @classmethod
    def build(cls, pred_boxes, cls_logits, obj_logits, anchor_xy, anchor_stride, gt_boxes, gt_classes,
              gt_img, prior):
        B, A, _ = cls_logits.shape
        anchor_xy, anchor_stride = anchor_xy.float(), anchor_stride.float().reshape(-1)
        cls_logits, obj_logits = cls_logits.detach().float(), obj_logits.detach().float().reshape(B, A)
        per_image = torch.bincount(gt_img, minlength=B)
        grid, gts_per_image = _read_grid(anchor_xy, anchor_stride, per_image)
        return cls(pred_boxes.float().reshape(B * A, 4), cls_logits, obj_logits, anchor_xy, anchor_stride,
                   gt_boxes.float(), gt_classes, gt_img, prior, grid, per_image,
                   torch.cumsum(per_image, 0) - per_image, gts_per_image, _ClassCost(cls_logits, obj_logits))


def _read_grid(anchor_xy, anchor_stride, per_image) -> tuple[_Grid, list[int]]:
    """The levels of the anchors, checked against make_grid's layout, and the GT count of each image.

    One host copy (the anchors and the per-image GT counts); the layout is worked out on the CPU.
    """
    A, device = anchor_xy.shape[0], anchor_xy.device
    host = torch.cat((anchor_xy.T.reshape(-1), anchor_stride, per_image.float())).cpu()
    x, y, s = host[:A], host[A:2 * A], host[2 * A:3 * A]
    starts = [0] + (torch.nonzero(s[1:] != s[:-1]).flatten() + 1).tolist()
    shapes = []
    for start, end in zip(starts, starts[1:] + [A]):
        stride, w = s[start], max(int((y[start:end] == y[start]).sum()), 1)
        h = (end - start) // w
        col, row = torch.arange(w).repeat(h), torch.arange(h).repeat_interleave(w)
        if not (h * w == end - start and torch.equal(x[start:end], (col.float() + 0.5) * stride)
                and torch.equal(y[start:end], (row.float() + 0.5) * stride)):
            raise ValueError("simota_assign needs anchor_xy = (grid + 0.5) * stride in utils.grid.make_grid's "
                             "layout (levels in turn, each row-major)")
        shapes.append((h, w, col, row))
    L, h_max, w_max = len(shapes), max(h for h, *_ in shapes), max(w for _, w, *_ in shapes)
    xs, ys = torch.full((L, w_max), float("inf")), torch.full((L, h_max), float("inf"))
    cells = []
    for level, (start, (h, w, col, row)) in enumerate(zip(starts, shapes)):
        xs[level, :w], ys[level, :h] = x[start:start + w], y[start:start + h * w:w]
        cells.append((level * (h_max + 1) + row) * (w_max + 1) + col)
    grid = _Grid(torch.tensor(starts, device=device), torch.tensor([w for _, w, *_ in shapes], device=device),
                 s[starts].to(device), xs.to(device), ys.to(device), torch.cat(cells).to(device))
    return grid, [int(n) for n in host[3 * A:].tolist()]


# ---- the assignment ----------------------------------------------------------------------------
def _assign(inp: _Inputs) -> Assignment:
    B, A = inp.obj_logits.shape
    T = inp.gt_boxes.shape[0]
    # 1. per GT and level, the cells of each geometric test (separable: an interval per axis)
    centre, box = _gt_intervals(inp.grid, inp.gt_boxes, inp.prior)
    inside = centre if box is None else (torch.maximum(centre[0], box[0]), torch.minimum(centre[1], box[1]),
                                         torch.maximum(centre[2], box[2]), torch.minimum(centre[3], box[3]))
    cand = _paint(inp.grid, [centre] if box is None else [centre, box], inp.gt_img, B, A)  # [B, A]
    num_cand = cand.sum(1)  # [B]
    # 2. each GT's window of cells around its centre
    win = _window(inp, centre, inside)
    # 3. dynamic k from the 10 best IoUs over the image's candidates
    dynamic_k, M = _dynamic_k(inp, cand, num_cand, _iou_floor(win.iou, win.in_centre))  # [T], host int
    if M == 0:
        return empty_assignment(B, A, T, inp.gt_boxes.device)
    # 4. each GT's dynamic_k cheapest inside pairs, from its window, and the GTs it cannot serve
    picks, dense = _window_picks(inp, win, dynamic_k)
    # 5. those GTs pick among all candidates of their image (rare)
    if dense.numel():
        more = _dense_picks(inp, dense, cand, num_cand, M, min(TOPK_IOU, M), dynamic_k)
        picks = tuple(torch.cat((a.reshape(-1), b.reshape(-1))) for a, b in zip(picks, more))
    # 6. conflicts, then per-anchor outputs
    return _matches(inp, *(v.reshape(-1) for v in picks))


@dataclass
class _Window:
    """Each GT's window of cells around its centre, [T, S] each (S = levels * size * size slots)."""

    img: torch.Tensor        # [T, 1] image of the GT
    anchor: torch.Tensor     # anchor of the slot (0 outside the centre region)
    row: torch.Tensor        # [T, 1] the GT's row
    in_centre: torch.Tensor  # bool, the cell passes the centre test (so it is a candidate)
    inside: torch.Tensor     # bool, the pair is free of the penalty (a sub-rectangle of the centre region)
    iou: torch.Tensor        # IoU of the GT with the slot's prediction
    overflow: torch.Tensor   # [T] bool, the centre region is wider than the window on some level


def _window_picks(inp: _Inputs, win: _Window, dynamic_k):
    """Each GT's dynamic_k cheapest inside pairs, from its window, with estimated class costs where
    they set the picks apart and exact ones where they leave a doubt.

    Returns ((row, anchor, iou, take), [T, k] each), rows [D] of the GTs the window cannot serve.
    """
    penalty = PRIORS[inp.prior].penalty
    B, A = inp.obj_logits.shape
    flat = win.img * A + win.anchor  # [T, S] into [B * A]
    inp.class_cost.estimate(flat.masked_fill(~win.inside, B * A).view(-1))
    estimate, _ = _pair_cost(inp, win.img, win.anchor, win.row, win.inside, win.iou, inp.class_cost.estimated)
    slack = inp.class_cost.slack(flat)  # [T, S]: |estimate - exact cost| < slack
    k = min(TOPK_IOU, estimate.shape[1])
    upper = (estimate + slack).masked_fill(~win.inside, float("inf")).topk(k, dim=1, largest=False).values
    kth_upper = upper.gather(1, (dynamic_k.long() - 1).clamp(max=k - 1)[:, None])  # [T, 1] >= k-th exact cost
    # the window serves a GT only if its k-th pick is surely cheaper than every penalised pair
    # (SURE_PICK_FRACTION); kth_upper is +inf with too few inside pairs
    dense = (kth_upper[:, 0] >= penalty * SURE_PICK_FRACTION) | win.overflow | (dynamic_k > k)
    # dearer than kth_upper for sure: not a pick; k or more left: those are the picks
    maybe = win.inside & (estimate - slack <= kth_upper) & ~dense[:, None]  # [T, S]
    unsure = maybe.sum(1) > dynamic_k
    special = (unsure | dense).nonzero().squeeze(1)  # one host sync, both are rare
    unsure, dense = (special[unsure[special]], special[dense[special]]) if special.numel() else (special, special)
    if unsure.numel():
        maybe[unsure] = _exact_picks(inp, unsure, win, maybe, dynamic_k, k)
    take, order = maybe.to(torch.uint8).topk(k, dim=1)  # the (at most k) picks of each row first
    return (win.row.expand_as(order), win.anchor.gather(1, order), win.iou.gather(1, order), take.bool()), dense


def _matches(inp: _Inputs, row, anchor, iou, take) -> Assignment:
    """Per-anchor outputs from the picks ([P] each): an anchor picked by several GTs goes to the cheapest
    GT of its image, the first on ties (official's argmin over all its GTs)."""
    B, A = inp.obj_logits.shape
    T = inp.gt_boxes.shape[0]
    device = row.device
    flat = inp.gt_img[row] * A + anchor  # [P] into [B * A]
    claims = torch.zeros(B * A, dtype=torch.int32, device=device).scatter_add_(0, flat, take.int())
    single = take & (claims[flat] == 1)
    matched_row, matched_iou = _scatter(B * A, flat, single, row, 0), _scatter(B * A, flat, single, iou, 0.0)
    contested = (claims > 1).nonzero().squeeze(1)  # [K] into [B * A], host sync (its size)
    if contested.numel():
        matched_row[contested], matched_iou[contested] = _resolve(inp, contested)
    fg_mask = (claims > 0).view(B, A)
    matched_row, matched_iou = matched_row.view(B, A), matched_iou.view(B, A)
    has_anchor = torch.zeros(T + 1, dtype=torch.bool, device=device).scatter_(
        0, matched_row.masked_fill(~fg_mask, T).view(-1), True)
    return per_anchor_outputs(matched_row, matched_iou, fg_mask, inp.gt_img, inp.gt_classes, T - has_anchor[:T].sum())


def _scatter(n, index, mask, values, fill):
    """[n] tensor of `fill`, with values written at index where mask (masked ones go to a dropped slot)."""
    out = torch.full((n + 1,), fill, dtype=values.dtype, device=values.device)
    return out.scatter_(0, index.masked_fill(~mask, n), values)[:n]


# ---- geometry on the grid ----------------------------------------------------------------------
def _gt_intervals(grid: _Grid, gt_boxes, prior):
    """Cells that pass each test of geometry(), per GT and level: (x_lo, x_hi, y_lo, y_hi), [T, L] each.

    geometry()'s tests are separable (an x test and a y test), and along one axis each passes on a
    run of cells, so the intervals describe them exactly. Returns (centre, box or None).
    """
    radius, _, use_box = PRIORS[prior]
    gx, gy = gt_boxes[:, 0, None], gt_boxes[:, 1, None]  # [T, 1]
    dist = (grid.strides * radius)[None]  # [1, L]
    centre = (*_interval(grid.xs, gx, dist), *_interval(grid.ys, gy, dist))
    if not use_box:
        return centre, None
    half_w, half_h = 0.5 * gt_boxes[:, 2, None], 0.5 * gt_boxes[:, 3, None]
    return centre, (*_interval(grid.xs, gx, half_w), *_interval(grid.ys, gy, half_h))


def _interval(coord, centre, half):
    """[lo, hi) of the cells passing simota.axis_test, [T, L] each; coord [L, N] ascending (+inf pads),
    centre and half broadcast to [T, L].

    A difference of two floats rounds to 0 only when they are equal, so coord - (centre - half) > 0
    is exactly coord > centre - half, and (centre + half) - coord > 0 is coord < centre + half: the
    cells strictly between, found by binary search. NaN bounds pass no cell, as in the test.
    """
    L = coord.shape[0]
    below = (centre - half).expand(-1, L).T.contiguous()  # [L, T]
    above = (centre + half).expand(-1, L).T.contiguous()
    lo = torch.searchsorted(coord, below, right=True)  # cells with coord <= centre - half
    hi = torch.searchsorted(coord, above)  # cells with coord < centre + half
    hi = torch.where(below.isnan() | above.isnan(), lo, torch.maximum(lo, hi))
    return lo.T.contiguous(), hi.T.contiguous()


def _paint(grid: _Grid, rects, gt_img, B, A):
    """[B, A] bool: anchors inside any of the rectangles (x_lo, x_hi, y_lo, y_hi; [T, L] each) of their image.

    Each rectangle adds +1/-1 at its corners of a per-level difference array; two cumulative sums
    give the count of rectangles covering each cell. Costs O(T + B * A), not O(T * A).
    """
    L = grid.strides.shape[0]
    h1, w1 = grid.ys.shape[1] + 1, grid.xs.shape[1] + 1
    base = (gt_img[:, None] * L + torch.arange(L, device=gt_img.device)) * h1  # [T, L]
    index, weight = [], []
    for x_lo, x_hi, y_lo, y_hi in rects:
        nonempty = ((x_hi > x_lo) & (y_hi > y_lo)).int()
        for y, x, sign in ((y_lo, x_lo, 1), (y_lo, x_hi, -1), (y_hi, x_lo, -1), (y_hi, x_hi, 1)):
            index.append(((base + y) * w1 + x).reshape(-1))
            weight.append((nonempty * sign).reshape(-1))
    diff = torch.zeros(B * L * h1 * w1, dtype=torch.int32, device=gt_img.device)
    diff.scatter_add_(0, torch.cat(index), torch.cat(weight))
    count = diff.view(B, L, h1, w1).cumsum(2, dtype=torch.int32).cumsum(3, dtype=torch.int32)
    return count.view(B, -1)[:, grid.cell] > 0


def _window(inp: _Inputs, centre, inside) -> _Window:
    """Each GT's window: its centre region, size x size cells from the region's corner on each level.

    The centre test passes the cells strictly within radius strides of the GT centre: at most
    size = ceil(2 * radius) per axis, unless rounding admits a cell exactly at the limit (then the
    window overflows, and the GT takes the dense path). Slots run in ascending anchor order.
    centre, inside: (x_lo, x_hi, y_lo, y_hi) cell intervals, [T, L] each.
    """
    radius, _, _ = PRIORS[inp.prior]
    grid, size = inp.grid, math.ceil(2 * radius)
    cx_lo, cx_hi, cy_lo, cy_hi = (v[:, :, None, None] for v in centre)  # [T, L, 1, 1]
    ix_lo, ix_hi, iy_lo, iy_hi = (v[:, :, None, None] for v in inside)
    step = torch.arange(size, device=cx_lo.device)
    col, row = cx_lo + step, cy_lo + step[:, None]  # [T, L, 1, size], [T, L, size, 1]
    in_centre = (col < cx_hi) & (row < cy_hi)  # [T, L, size, size]
    in_prior = (col >= ix_lo) & (col < ix_hi) & (row >= iy_lo) & (row < iy_hi)
    T, A = col.shape[0], inp.obj_logits.shape[1]
    anchor = (grid.offsets[:, None, None] + row * grid.widths[:, None, None] + col).masked_fill(~in_centre, 0)
    anchor = anchor.view(T, -1)
    img = inp.gt_img[:, None]
    iou = paired_iou_cxcywh(inp.gt_boxes[:, None], inp.pred_boxes[img * A + anchor])
    overflow = ((centre[1] - centre[0] > size) | (centre[3] - centre[2] > size)).any(1)
    return _Window(img, anchor, torch.arange(T, device=anchor.device)[:, None], in_centre.view(T, -1),
                   in_prior.view(T, -1), iou, overflow)


def _iou_floor(iou, in_centre):
    """[T] a lower bound on each GT's 10th best IoU over its image's candidates: the 10th best over its
    centre region (all candidates), 0 with fewer than 10 positive there."""
    if iou.shape[1] < TOPK_IOU:
        return torch.zeros(iou.shape[0], device=iou.device)
    return iou.masked_fill(~in_centre, 0).topk(TOPK_IOU, dim=1).values[:, -1]


# ---- dynamic k ---------------------------------------------------------------------------------
def _dynamic_k(inp: _Inputs, cand, num_cand, iou_floor):
    """dynamic_k [T] (int32) and the largest image's candidate count M (a host int).

    Official: clamp(int(sum(topk(IoU row over the image's candidates, min(10, M_b)))), 1). Here, as in
    the dense version, min(10, M) for all images (an image with fewer than 10 candidates sums zeros
    too, which can move the sum by its last bit). IoU is 0 unless the boxes overlap, and the top 10 are
    at least iou_floor [T] (a lower bound on the 10th best), so only the pairs that may reach it
    (_reaching_pairs) get an IoU, computed with official arithmetic; each GT's row is rebuilt as those
    IoUs padded with zeros: the same top values, summed by the same topk().values.sum(), so the
    truncation by int() is the same too.
    """
    B, A = cand.shape
    T = inp.gt_boxes.shape[0]
    device = cand.device
    row, anchor = _reaching_pairs(inp, iou_floor, cand)  # [P] each, sorted by row
    iou = paired_iou_cxcywh(inp.gt_boxes[row], inp.pred_boxes[inp.gt_img[row] * A + anchor])
    counts = torch.bincount(row, minlength=T)  # [T]
    width, M = torch.stack((counts.max(), num_cand.max())).tolist()
    k_top = min(TOPK_IOU, M)
    rank = torch.arange(row.shape[0], device=device) - (torch.cumsum(counts, 0) - counts)[row]
    table = torch.zeros(T, max(width, k_top, 1), device=device).index_put_((row, rank), iou)
    return dynamic_k(table, k_top), M


def _slots(inp: _Inputs):
    """Rows of `width` GT slots for the tests of _reaching_pairs: image b's GTs fill ceil(n_b / width) rows.

    width = ceil(T / B), so the slots number less than 2T + B whatever the spread of GTs over images
    (a [B, most GTs per image] layout would waste most of itself on one crowded image).
    Returns (slot of each GT [T], image of each row [V] or None when row b is image b, width).
    """
    T, B = inp.gt_boxes.shape[0], inp.per_image.shape[0]
    width = -(-T // B)
    rows_per_image = [-(-n // width) for n in inp.gts_per_image]
    device = inp.gt_img.device
    first = torch.tensor([0] + rows_per_image[:-1], device=device).cumsum(0)  # [B], first row of each image
    rank = torch.arange(T, device=device) - inp.first_row[inp.gt_img]  # [T] among its image's GTs
    slot = (first[inp.gt_img] + rank // width) * width + rank % width
    if all(n == 1 for n in rows_per_image):
        return slot, None, width
    slot_img = torch.repeat_interleave(torch.arange(B, device=device), torch.tensor(rows_per_image, device=device),
                                       output_size=sum(rows_per_image))
    return slot, slot_img, width


REACH_BLOCK = 16  # anchors per block in the coarse pass of _reaching_pairs (a power of 2)


def _reaching_pairs(inp: _Inputs, iou_floor, cand):
    """(GT row, anchor) pairs [P] each, sorted, whose IoU may reach iou_floor [T]: every pair with IoU
    >= iou_floor > 0, or with IoU > 0 where the floor is 0, is among them (see _gt_reach).

    Two passes of the same test: GT slots x blocks of REACH_BLOCK consecutive anchors, with each
    block's least and greatest values (a block fails only if all its anchors do), then GT slots x
    the anchors of the blocks that passed. Both are dense boolean tests, but ~REACH_BLOCK times
    smaller than GTs x anchors.
    """
    B, A = cand.shape
    T = inp.gt_boxes.shape[0]
    device = cand.device
    slot, slot_img, width = _slots(inp)  # [T], [V] or None, host int
    V = B if slot_img is None else slot_img.shape[0]
    g = torch.full((V * width, 6), float("nan"), device=device)  # unused slots fail every test
    g[slot] = _gt_reach(inp.gt_boxes, iou_floor)
    slot_row = torch.zeros(V * width, dtype=torch.long, device=device).scatter_(0, slot, torch.arange(T, device=device))
    blocks = -(-A // REACH_BLOCK)
    p = _pred_reach(inp.pred_boxes.view(B, A, 4), cand, blocks)  # [6, REACH_BLOCK, B, blocks]
    least, most = p, p
    for half in (REACH_BLOCK // 2 ** i for i in range(1, REACH_BLOCK.bit_length())):  # halve the lanes
        least = torch.minimum(least[:, :half], least[:, half:2 * half])
        most = torch.maximum(most[:, :half], most[:, half:2 * half])
    least, most = least[:, 0], most[:, 0]  # [6, B, blocks]
    if slot_img is not None:
        least, most = least[:, slot_img], most[:, slot_img]  # [6, V, blocks]
    coarse = _reach(least[:, :, None].unbind(0), most[:, :, None].unbind(0), g.view(V, width, 6, 1).unbind(2))
    hit = coarse.view(-1).nonzero().squeeze(1)  # [H] into [V, width, blocks], host sync (its size)
    hit_slot, hit_block = hit // blocks, hit % blocks
    hit_img = hit_slot // width if slot_img is None else slot_img[hit_slot // width]
    values = p.view(6 * REACH_BLOCK, -1).index_select(1, hit_img * blocks + hit_block)
    values = values.view(6, REACH_BLOCK, -1).unbind(0)  # 6 x [REACH_BLOCK, H]
    fine = _reach(values, values, g[hit_slot].T[:, None].unbind(0))  # [REACH_BLOCK, H]
    h, lane = fine.T.nonzero().unbind(1)  # host sync (its size)
    return slot_row[hit_slot[h]], hit_block[h] * REACH_BLOCK + lane


# a predicted box's _pred_reach values that fail every test of _reach (+inf x_lo fails the first)
_FAIL = torch.tensor([float("inf"), float("inf"), -float("inf"), -float("inf"), -float("inf"), float("inf")])


def _reach(p_least, p_most, g):
    """The test of _reaching_pairs: bool, broadcast over the 6 components (tuples of tensors) of pred
    values and GT bounds.

    For one anchor p_least = p_most = its values; for a block of anchors, their least and greatest
    values (each comparison then passes if any anchor's does).
    """
    ok = p_least[0] < g[2]  # pred x_lo < GT x_hi - shrink
    ok &= g[0] < p_most[2]  # GT x_lo + shrink < pred x_hi
    ok &= p_least[1] < g[3]
    ok &= g[1] < p_most[3]
    ok &= g[4] <= p_most[4]  # least area <= pred area (+inf if thin)
    ok &= p_least[5] <= g[5]  # pred area (0 if thin) <= most area
    return ok


def _gt_reach(gt_boxes, iou_floor):
    """[T, 6] GT bounds of _reach: x_lo, y_lo (+ shrink), x_hi, y_hi (- shrink), least and most area.

    IoU >= t > 0 needs (each a necessary condition):
    - an intersection at least t * w wide (IoU <= I / area_gt <= i_w * h / (w * h)), so the predicted box
      reaches t * w into the GT from either side: GT x_lo + t * w < pred x_hi and pred x_lo < GT x_hi - t * w,
      and the same in y;
    - areas within a factor t of each other (IoU <= min(areas) / max(areas)).
    Each bound is loosened by far more than float32 can err (boxes too thin for that are not tested); with
    t = 0 only pairwise_iou_cxcywh's overlap test max(lo) < min(hi) remains, as four comparisons. Empty
    GTs get NaN, which fails every comparison.
    """
    inf, loose = float("inf"), 1 - REACH_LOOSENESS
    g_lo, g_hi = gt_boxes[:, :2] - gt_boxes[:, 2:] / 2, gt_boxes[:, :2] + gt_boxes[:, 2:] / 2  # [T, 2]
    t = torch.where(_thick(gt_boxes), iou_floor, 0.0)[:, None]  # [T, 1]
    size = gt_boxes[:, :2].abs().sum(1, keepdim=True) + gt_boxes[:, 2:].sum(1, keepdim=True)
    shrink = (t * gt_boxes[:, 2:] * loose - size * COORD_SLACK).clamp(min=0)  # [T, 2], 0 where t = 0
    area = gt_boxes[:, 2:3] * gt_boxes[:, 3:4]
    area_min, area_max = t * loose * area, torch.where(t > 0, area / (t * loose), inf)
    bounds = torch.cat((g_lo + shrink, g_hi - shrink, area_min, area_max), 1)
    return bounds.masked_fill(~(g_lo < g_hi).all(1, keepdim=True), float("nan"))


def _pred_reach(pred_boxes, cand, blocks):
    """[6, REACH_BLOCK, B, blocks] pred values of _reach for anchor block * REACH_BLOCK + lane: x_lo,
    y_lo, x_hi, y_hi (corners as pairwise_iou_cxcywh computes them), area (+inf if thin), area (0 if
    thin); _FAIL for empty boxes, non-candidates and the padding up to whole blocks.

    Laid out so that the per-block reductions and the gathers of blocks run along rows of B * blocks.
    """
    B, A, _ = pred_boxes.shape
    pad = blocks * REACH_BLOCK - A
    if pad:
        pred_boxes = torch.cat((pred_boxes, pred_boxes.new_zeros(B, pad, 4)), 1)  # empty boxes
        cand = torch.cat((cand, cand.new_zeros(B, pad)), 1)
    x, y, w, h = pred_boxes.view(B, blocks, REACH_BLOCK, 4).permute(3, 2, 0, 1).contiguous()  # [REACH_BLOCK, B, blocks]
    half_w, half_h = w / 2, h / 2
    p = torch.empty(6, *x.shape, device=x.device)
    torch.sub(x, half_w, out=p[0])
    torch.sub(y, half_h, out=p[1])
    torch.add(x, half_w, out=p[2])
    torch.add(y, half_h, out=p[3])
    thin = torch.minimum(w, h) < (x.abs() + y.abs() + (w + h)) * THIN_SIDE  # not _thick (see there)
    torch.mul(w, h, out=p[4]).masked_fill_(thin, float("inf"))
    torch.mul(w, h, out=p[5]).masked_fill_(thin, 0.0)
    ok = (p[0] < p[2]) & (p[1] < p[3]) & cand.view(B, blocks, REACH_BLOCK).permute(2, 0, 1)
    return torch.where(ok, p, _FAIL.to(p)[:, None, None, None], out=p)


def _thick(boxes):
    """[...] bool: the box is not thin (THIN_SIDE)."""
    size = boxes[..., :2].abs().sum(-1) + boxes[..., 2:].sum(-1)
    return boxes[..., 2:].min(-1).values >= size * THIN_SIDE


# ---- costs ---------------------------------------------------------------------------------------
class _ClassCost:
    """Per-anchor sum over classes of BCE(p, 0), p = sqrt(sigmoid(cls) * sigmoid(obj)): the class cost
    of a pair is this total minus the GT class's negative term plus its positive term.

    Official's BCE evaluates log1p one element at a time (libm's log1pf); the vectorised log(1 - p)
    is ~10x cheaper and within a bound of it. So the window's many anchors get an estimate, and
    only the few anchors where the estimate leaves a doubt get the exact total, computed from the
    same p (kept) by the same BCE and sum as the dense path.
    """

    def __init__(self, cls_logits, obj_logits):
        B, A, _ = cls_logits.shape
        self.cls_logits, self.obj_logits = cls_logits, obj_logits
        device = cls_logits.device
        # [B * A + 1] tables, the last entry a dropped slot for masked indices
        self.estimated = torch.zeros(B * A + 1, device=device)  # where estimate() saw the anchor
        self.exact = torch.zeros(B * A + 1, device=device)      # where self.known
        self.known = torch.zeros(B * A + 1, dtype=torch.bool, device=device)
        self.p = torch.zeros(1, cls_logits.shape[2], device=device)  # [U, C] of the estimated anchors
        self.row = torch.zeros(B * A + 1, dtype=torch.long, device=device)  # anchor -> row of self.p

    def estimate(self, flat):
        """Estimate at the [B * A] anchors given (duplicates and B * A itself are skipped)."""
        n = self.exact.shape[0] - 1
        need = torch.zeros(n + 1, dtype=torch.bool, device=flat.device).index_fill_(0, flat, True)
        idx = need[:n].nonzero().squeeze(1)  # [U], host sync (its size)
        A = self.obj_logits.shape[1]
        img, anchor = idx // A, idx % A
        # in place: each [U, C] op on a fresh tensor would fault in its pages first
        self.p = self.cls_logits[img, anchor].sigmoid_().mul_(self.obj_logits[img, anchor].sigmoid()[:, None]).sqrt_()
        self.row[idx] = torch.arange(idx.shape[0], device=idx.device)
        self.estimated[idx] = torch.rsub(self.p, 1.0).log_().clamp_(min=-100).sum(-1).neg_()

    def slack(self, flat):
        """A bound on |cost with the estimate - exact cost| at anchors flat (any shape): class_cost_slack."""
        return class_cost_slack(self.estimated[flat], self.p.shape[1])

    def make_exact(self, flat):
        """Fill self.exact at the anchors flat [N] (estimated or set before; duplicates and B * A allowed)."""
        if self.p.shape[0] == 0:  # nothing estimated: every anchor asked for was set before
            return
        values = bce_zero(self.p[self.row[flat]]).sum(-1)  # rows of anchors set before are not used
        self.exact[flat] = torch.where(self.known[flat], self.exact[flat], values)
        self.known[flat] = True

    def set_exact(self, flat, values):
        self.exact[flat], self.known[flat] = values, True


def _pair_cost(inp: _Inputs, img, anchor, row, inside, iou, neg_total):
    """Official cost and IoU of (GT row, anchor of image img) pairs, any matching shapes -> (cost, iou).

    iou: the pairs' IoU if known, else None; neg_total [B * A]: the class cost totals to use.
    """
    A = inp.obj_logits.shape[1]
    if iou is None:
        iou = paired_iou_cxcywh(inp.gt_boxes[row], inp.pred_boxes[img * A + anchor])
    p_gt = score_prob(inp.cls_logits[img, anchor, inp.gt_classes[row]], inp.obj_logits[img, anchor])
    return pair_cost(neg_total[img * A + anchor], p_gt, iou, inside, PRIORS[inp.prior].penalty), iou


def _exact_picks(inp: _Inputs, rows, win: _Window, maybe, dynamic_k, k):
    """[R, S] picks of GT rows [R] whose estimated costs leave a doubt: the dynamic_k cheapest by exact
    cost among their `maybe` slots (every other slot is surely dearer than dynamic_k of these)."""
    B, A = inp.obj_logits.shape
    maybe, img, anchor = maybe[rows], win.img[rows], win.anchor[rows]
    inp.class_cost.make_exact((img * A + anchor).masked_fill(~maybe, B * A).view(-1))
    cost, _ = _pair_cost(inp, img, anchor, win.row[rows], maybe, win.iou[rows], inp.class_cost.exact)
    order = cost.masked_fill(~maybe, float("inf")).topk(k, dim=1, largest=False).indices
    take = (torch.arange(k, device=rows.device) < dynamic_k[rows][:, None]) & maybe.gather(1, order)
    return torch.zeros_like(maybe).scatter_(1, order, take)


def _resolve(inp: _Inputs, contested):
    """For contested anchors [K] (index into [B * A]): (row, IoU) of the cheapest GT of the image, first on ties."""
    A = inp.obj_logits.shape[1]
    img, anchor = contested // A, contested % A
    gts = torch.arange(max(inp.gts_per_image), device=contested.device)
    valid = gts < inp.per_image[img][:, None]  # [K, G]
    row = (inp.first_row[img][:, None] + gts).masked_fill(~valid, 0)
    img, anchor = img[:, None], anchor[:, None]  # [K, 1], broadcast against the GTs
    in_center, in_box = prior_tests(inp.anchor_xy[anchor], inp.anchor_stride[anchor], inp.gt_boxes[row], inp.prior)
    inside = in_center if in_box is None else in_center & in_box
    inp.class_cost.make_exact(contested)
    cost, iou = _pair_cost(inp, img, anchor, row, inside, None, inp.class_cost.exact)
    cost = cost.masked_fill(~valid, float("inf"))
    best = (cost == cost.min(1, keepdim=True).values).to(torch.uint8).argmax(1, keepdim=True)  # first minimum
    return row.gather(1, best)[:, 0], iou.gather(1, best)[:, 0]


def _dense_picks(inp: _Inputs, rows, cand, num_cand, M, k_top, dynamic_k):
    """Official selection for GT rows [F] that their window cannot serve: simota_dense's pairs with every
    candidate of the image (ascending anchor order, +inf padding to M columns), topk of k_top.
    Returns (row, anchor, IoU, take), [F, k_top] each."""
    A = cand.shape[1]
    pairs = candidate_pairs(inp.pred_boxes.view(-1, A, 4), inp.cls_logits, inp.obj_logits, inp.anchor_xy,
                            inp.anchor_stride, inp.gt_boxes, inp.gt_classes, inp.gt_img, inp.prior, rows, cand,
                            num_cand, M)
    inp.class_cost.set_exact((pairs.images[:, None] * A + pairs.cand_idx).view(-1), pairs.neg_total.view(-1))  # conflicts
    picked = pairs.cost.topk(k_top, dim=1, largest=False).indices  # [F, k_top]
    take = (torch.arange(k_top, device=cand.device) < dynamic_k[rows][:, None]) & pairs.valid.gather(1, picked)
    return rows[:, None].expand_as(picked), pairs.anchor.gather(1, picked), pairs.iou.gather(1, picked), take
