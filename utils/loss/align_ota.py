"""AlignOTA, DAMO-YOLO's label assignment (ZeroHead's ``AlignOTAAssigner``), batched: one call assigns every
image of a batch, with no Python loop over images or GTs (only over a few chunks, to bound memory).

DAMO (modelscope 1.40.2, damo/base_models/core/ota_assigner.py) runs per image, with V candidates and G GTs:
1. candidates: priors (x, y, stride, stride), x = column * stride, strictly inside some GT box or some GT's
   centre square of half-width center_radius strides; a (candidate, GT) pair is *inside* when the prior is in
   that GT's box AND its centre square (``geometry``);
2. cost of a pair, u = IoU(predicted box, GT) (``iou``: DAMO's bbox_overlaps), p = the prior's scores:
   cls_weight * sum_c BCE(p_c, y_c) * |y_c - p_c|^2 with the soft label y = u at the GT's class and 0
   elsewhere (the modulating exponent is 2 in the code, 1 in the paper), + iou_weight * -log(u + 1e-7),
   + 1e8 when the pair is not inside (``pair_costs``, ``damo_cost``);
3. dynamic k of a GT: the sum of its candidate_topk best IoUs over the image's V candidates, truncated, at
   least 1 (``dynamic_k``); each GT takes its k cheapest candidates (``cheapest``);
4. a prior taken by several GTs goes to the GT of least cost among ALL G GTs of the image, the first on
   equal costs (``torch.min(cost[contested, :], dim=1)``), whether or not that GT's own top-k took it
   (``resolve_conflicts``).

DAMO builds [V, G, C] tensors per image (~200 MiB at 20 GTs, 640 px, 81 channels). Here:
- geometry is separable (an x test and a y test, each a function of (coordinate, stride) only): it is
  computed per GT for the few distinct (x, stride) and (y, stride) values, then gathered to [GTs, priors]
  uint8 codes, a chunk of GTs at a time;
- dynamic k needs each GT's best IoUs over all candidates of its image, but only overlapping pairs have any:
  blocks of 16 consecutive priors are tested against the GTs (rows of GTs of one image, ``Slots``) with the
  blocks' extreme box sides, and IoUs computed for the blocks that may overlap;
- any inside pair costs less than any penalised one (class cost <= 100 * C, IoU cost <= iou_weight * 16.2,
  against 1e8), so a GT with at least k inside pairs takes its k cheapest inside pairs: only inside pairs
  get a cost, except for the few GTs (tiny, thin, degenerate, off the image) with fewer inside pairs than
  their k, which choose among their overlapping penalised candidates, or among all candidates of their
  image when those may not be enough (``penalised_pairs``);
- a pair's class-cost row differs from its prior's all-negative row only at the GT's class: the BCE terms
  (the expensive part) are computed once per prior, and a pair's row is that row with one entry replaced.

Exactness. Every value that decides the assignment is computed with DAMO's float32 operations, term by term
and in DAMO's order, so it rounds the same: the IoU, each class term (F.binary_cross_entropy, the same scalar
kernel), the sum over the C channels (torch rounds the sum of a contiguous row the same way whatever rows
surround it), -log, the weights and the float32 addition of the penalty. Costs and IoUs are DAMO's bit for
bit, and so are the assignments, except at the arbitrary points below.

Arbitrary points of the reference and the decision taken at each (tests/utils/loss/test_align_ota.py tests
every one; ``<>`` marks those where our result may differ from a run of DAMO's code, ``==`` those matched):
1. <> The penalty's rounding. DAMO adds ``(~inside) * 100000000``, an int64 tensor, to the float32 costs;
   the sum is float32, whose step at 1e8 is 8, so a penalised cost rounds to a multiple of 8 and many
   penalised candidates of an image tie (a non-overlapping pair's IoU cost is 48.4, class costs are mostly
   below 8). Only a GT with fewer inside pairs than its k reaches them, and DAMO then takes whichever of
   the tied candidates torch.topk returns (point 2). We keep DAMO's rounded costs and take the lowest prior
   index among equal ones: DAMO's algorithm with a stable top-k, which the tests run (DAMO's code with its
   torch.topk swapped for a stable sort) and match exactly on every batch, tiny GTs included. (Ordering by
   the cost before rounding would also give k cheapest by DAMO's costs, but no run of DAMO's code would
   reproduce it.)
2. <> torch.topk's choice among equal values. CPU topk (std::partial_sort when k * 64 <= n, else
   std::nth_element; no index comparison) returns neither the lowest tied indices nor the same ones for
   another length or k, and torch documents ties as unstable. Exactly equal costs arise at the penalty
   (point 1) and, for inside pairs, only from identical scores and IoUs; we take the lowest prior index.
3. == Conflicts go to the least cost over all GTs of the image, the first on ties (torch.min documents the
   first minimal index), also to a GT whose own top-k did not take the prior, and, when every claimant is
   penalised, to the first GT whose rounded cost ties (possibly an unrelated, non-overlapping GT): DAMO's
   deterministic rule, matched exactly.
4. == An exact duplicate GT (same box and class, later in its image's list) gets no positives: both copies
   take the same priors at the same costs and every conflict goes to the first. Deterministic, matched.
5. <> Dynamic k's float32 sum. DAMO sums the [k, G] top-k IoUs over k; torch vectorises that reduction
   across the G GTs, so the same 10 IoUs round differently with the image's GT count and the GT's place in
   it. We sum in float64 (``truncated_sum``): k can differ only where the float32 sum is within a few ulp
   of an integer.
6. == The class cost sums over every channel given: ZeroHead passes modelscope's nc + 1 sigmoid channels
   (the last a legacy class no GT has); pass the same channels as the reference for the same assignment.
DAMO's results per image are 1-based gt_inds (0 background) and max_overlaps (-1e8 for background); ours are
the batch GT index (-1 background) and the IoU (0 background).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

PENALTY = 100000000  # DAMO's INF: an int, added as an int64 tensor to float32 costs (arbitrary point 1)
IOU_LOG_EPS = 1e-7   # -log(IoU + 1e-7): a pair that does not overlap costs iou_weight x 16.12
UNION_EPS = 1e-6     # bbox_overlaps' floor on the union
# chunk sizes, in elements of one temporary: GT slots x priors (x blocks in dynamic_k), pairs x classes
GT_CHUNK_ELEMENTS = 2 ** 21
PAIR_CHUNK_ELEMENTS = 2 ** 21
BLOCK = 16  # consecutive priors dynamic_k tests together (on a row-major grid: 16 cells of one row)
IN_BOX, IN_CENTRE = 1, 2  # bits of a geometry code
INSIDE = IN_BOX | IN_CENTRE  # in the GT's box and centre square: a pair without penalty


@dataclass
class AlignOTAResult:
    fg: torch.Tensor        # [B, A] bool, positive anchors
    gt_index: torch.Tensor  # [B, A] long, index into the G ground truths of the batch, -1 for background
    iou: torch.Tensor       # [B, A] float, IoU of the anchor's predicted box with its matched GT (0 for background)


@torch.no_grad()
def align_ota_assign(cls_scores, pred_boxes, priors, gt_boxes, gt_classes, gt_img,
                     center_radius=2.5, candidate_topk=10, iou_weight=3.0, cls_weight=1.0) -> AlignOTAResult:
    """Assign the anchors of a batch to GTs as DAMO's AlignOTAAssigner.assign does per image.

    cls_scores [B, A, C] probabilities (after sigmoid), pred_boxes [B, A, 4] x1y1x2y2 pixels (both detached),
    priors [A, 4] (x, y, stride, stride) shared by all images, gt_boxes [G, 4] x1y1x2y2, gt_classes [G] long,
    gt_img [G] long image index of each GT (any order; images may have no GT). Costs are float32 under any
    autocast, whatever the input dtype (DAMO computes in the dtype it is given). cls_scores may be a strided
    view: only the rows of priors that get a cost are read (and converted). Ties: see the module docstring.
    """
    B, A, C = cls_scores.shape
    device = cls_scores.device
    with torch.autocast(device_type=device.type, enabled=False):
        inp = _Inputs(cls_scores.detach(), pred_boxes.detach().float().reshape(B * A, 4),
                      priors.float(), gt_boxes.float(), gt_classes.long(), gt_img.long(), B, A,
                      center_radius, candidate_topk, iou_weight, cls_weight)
        if inp.gt_boxes.shape[0] == 0 or A == 0:
            return AlignOTAResult(torch.zeros(B, A, dtype=torch.bool, device=device),
                                  torch.full((B, A), -1, dtype=torch.long, device=device),
                                  torch.zeros(B, A, device=device))
        return _assign(inp)


@dataclass
class _Inputs:
    scores: torch.Tensor      # [B, A, C] as given, any dtype and strides (_class_costs reads the rows it needs)
    pred: torch.Tensor        # [B * A, 4] x1y1x2y2
    priors: torch.Tensor      # [A, 4] (x, y, stride_x, stride_y)
    gt_boxes: torch.Tensor    # [T, 4] x1y1x2y2
    gt_classes: torch.Tensor  # [T]
    gt_img: torch.Tensor      # [T]
    B: int
    A: int
    center_radius: float
    candidate_topk: int
    iou_weight: float
    cls_weight: float


def _assign(inp: _Inputs) -> AlignOTAResult:
    B, A, T = inp.B, inp.A, inp.gt_boxes.shape[0]
    # 1. geometry: per-axis codes, the candidates of each image, every inside pair
    codes = geometry(inp.priors, inp.gt_boxes, inp.center_radius)
    slots = Slots.build(inp.gt_img, B)
    cand, t, a = candidates_and_inside_pairs(codes, slots, B)  # [B, A], [P_in] x 2
    num_inside = torch.bincount(t, minlength=T)  # [T]
    # 2. dynamic k from the best IoUs over the image's candidates; the overlapping candidates of the GTs
    #    with fewer inside pairs than their k
    ks, near_t, near_a = dynamic_k(inp, slots, cand, num_inside)  # [T], [N] x 2
    # 3. costs: of every inside pair (enough for a GT with k of them) and of the penalised pairs the others
    #    choose from
    x, u = pair_costs(inp, t, a)  # [P_in] cost before the penalty, IoU
    inside = torch.ones_like(t, dtype=torch.bool)
    if bool((num_inside < ks).any()):
        more = penalised_pairs(inp, codes, cand, ks, num_inside, near_t, near_a)
        t, a, inside, x, u = (torch.cat(v) for v in zip((t, a, inside, x, u), more))
    cost = damo_cost(x, inside)
    # 4. each GT's k cheapest, then conflicts
    take = cheapest(t, a, cost, ks)
    gt_index, matched_iou = resolve_conflicts(inp, codes, take, t, a, inside, cost, u)
    return AlignOTAResult((gt_index >= 0).view(B, A), gt_index.view(B, A), matched_iou.view(B, A))


# ---- 1. geometry ---------------------------------------------------------------------------------
@dataclass
class Codes:
    """Geometry of every (GT, prior) pair, factored by axis: code = x[t, ix[a]] & y[t, iy[a]], with bit
    IN_BOX set when the prior is strictly inside the GT box and IN_CENTRE when it is strictly inside the GT's
    centre square (DAMO's get_in_gt_and_in_center_info)."""

    x: torch.Tensor   # [T, Ux] uint8, codes of the distinct (x, stride_x) of the priors
    y: torch.Tensor   # [T, Uy] uint8
    ix: torch.Tensor  # [A] long, the prior's column in x
    iy: torch.Tensor  # [A] long


def geometry(priors, gt_boxes, center_radius: float) -> Codes:
    """Codes from priors [A, 4] (x, y, stride_x, stride_y) and GTs [T, 4] x1y1x2y2.

    DAMO's tests are separable: l = x - x1 > 0 and r = x2 - x > 0 (with t, b in y) for the box, and
    x - (cx - r * s) > 0, (cx + r * s) - x > 0 for the centre square, cx = (x1 + x2) / 2.0. Each is
    evaluated here term by term as DAMO does, for the distinct (x, stride) values only (140 for a 3-level
    640 grid against 8400 priors). min(l, t, r, b) > 0 is the conjunction of the four tests, NaN failing both.
    """
    ux, ix = _distinct_rows(priors[:, 0::2])  # [Ux, 2] (x, stride_x), [A]
    uy, iy = _distinct_rows(priors[:, 1::2])
    return Codes(_axis_codes(ux, gt_boxes[:, 0], gt_boxes[:, 2], center_radius),
                 _axis_codes(uy, gt_boxes[:, 1], gt_boxes[:, 3], center_radius), ix, iy)


def _distinct_rows(pairs):
    """(distinct rows [U, 2], inverse [N]) of float32 pairs [N, 2], compared bit for bit (torch.unique with
    dim=0 loops in Python over the rows)."""
    bits = pairs.contiguous().view(torch.int32).long()  # [N, 2]
    keys, inverse = torch.unique(bits[:, 0] * 2 ** 32 + (bits[:, 1] & 0xFFFFFFFF), return_inverse=True)
    first = torch.full_like(keys, pairs.shape[0]).scatter_reduce_(
        0, inverse, torch.arange(pairs.shape[0], device=pairs.device), "amin")
    return pairs[first], inverse


def _axis_codes(coord_stride, lo, hi, center_radius: float):
    """[T, U] uint8 codes along one axis: coord_stride [U, 2] (coordinate, stride), GT sides lo, hi [T]."""
    c, s = coord_stride[None, :, 0], coord_stride[None, :, 1]  # [1, U]
    lo, hi = lo[:, None], hi[:, None]  # [T, 1]
    in_box = ((c - lo) > 0) & ((hi - c) > 0)
    centre = (lo + hi) / 2.0
    reach = center_radius * s
    in_centre = ((c - (centre - reach)) > 0) & (((centre + reach) - c) > 0)
    return in_box.to(torch.uint8) * IN_BOX | in_centre.to(torch.uint8) * IN_CENTRE


def pair_codes(codes: Codes, t, a):
    """Codes of (GT t, prior a) pairs, any matching shapes."""
    return codes.x[t, codes.ix[a]] & codes.y[t, codes.iy[a]]


@dataclass
class Slots:
    """The batch's GTs laid out in R rows of W slots, each row holding GTs of one image (W = ceil(T / B), so
    R < 2B whatever the spread of GTs over images): a row's [W, A] pair tensors broadcast its GTs against its
    image's priors, which are then read once per row rather than once per GT."""

    gt: torch.Tensor       # [R * W] long, the GT in each slot, T for an empty slot
    row_img: torch.Tensor  # [R] long, the image of each row
    W: int

    @classmethod
    def build(cls, gt_img, B: int) -> Slots:
        T, device = gt_img.shape[0], gt_img.device
        W = -(-T // B)
        per_image = torch.bincount(gt_img, minlength=B)  # [B]
        rows_per_image = (per_image + W - 1) // W
        first_row = torch.cumsum(rows_per_image, 0) - rows_per_image  # [B]
        first_gt = torch.cumsum(per_image, 0) - per_image
        by_image = torch.argsort(gt_img, stable=True)  # [T] GTs grouped by image, in order
        img = gt_img[by_image]
        rank = torch.arange(T, device=device) - first_gt[img]  # [T] within its image
        R = int(rows_per_image.sum())  # host sync
        gt = torch.full((R * W,), T, dtype=torch.long, device=device)
        gt[(first_row[img] + rank // W) * W + rank % W] = by_image
        row_img = torch.repeat_interleave(torch.arange(B, device=device), rows_per_image, output_size=R)
        return cls(gt, row_img, W)

    def chunks(self, A: int, per_pair: int):
        """Ranges of rows whose [rows * W, A] tensors, per_pair of them, stay within GT_CHUNK_ELEMENTS."""
        R = self.row_img.shape[0]
        rows = max(1, GT_CHUNK_ELEMENTS // max(self.W * A * per_pair, 1))
        return [(lo, min(lo + rows, R)) for lo in range(0, R, rows)]


def candidates_and_inside_pairs(codes: Codes, slots: Slots, B: int):
    """(cand [B, A] bool: the prior is a candidate of its image (in some GT's box or centre square),
        t, a [P_in] long: every inside pair, each GT's in ascending prior order)."""
    A, W = codes.ix.shape[0], slots.W
    x, y = _padded(codes.x), _padded(codes.y)  # a row of zeros for empty slots
    claims = torch.zeros(B, A, dtype=torch.int32, device=x.device)
    ts, as_ = [], []
    for lo, hi in slots.chunks(A, per_pair=1):
        gt = slots.gt[lo * W:hi * W]
        ix, iy = codes.ix.expand(gt.shape[0], A), codes.iy.expand(gt.shape[0], A)  # gather: 4x index's speed
        code = x[gt].gather(1, ix) & y[gt].gather(1, iy)  # [rows * W, A]
        claims.index_add_(0, slots.row_img[lo:hi], (code.view(hi - lo, W, A) != 0).any(1).to(torch.int32))
        s, a = (code == INSIDE).nonzero().unbind(1)
        ts.append(gt[s])
        as_.append(a)
    return claims > 0, torch.cat(ts), torch.cat(as_)


def _padded(table):
    """table [T, ...] with a row of zeros appended (row T: an empty slot)."""
    return torch.cat((table, table.new_zeros(1, *table.shape[1:])))


def _all_candidate_pairs(rows, cand, gt_img):
    """(t, a) [P] of GT rows [R] with every candidate of their image, by GT then prior."""
    r, a = cand[gt_img[rows]].nonzero().unbind(1)
    return rows[r], a


# ---- 2. IoU and dynamic k ----------------------------------------------------------------------
def iou(pred, gt, pred_area=None):
    """DAMO's bbox_overlaps (mode 'iou'), elementwise over broadcast x1y1x2y2 boxes pred [..., 4], gt [..., 4],
    with its operations in its order: the same float32 values."""
    if pred_area is None:
        pred_area = (pred[..., 2] - pred[..., 0]) * (pred[..., 3] - pred[..., 1])
    gt_area = (gt[..., 2] - gt[..., 0]) * (gt[..., 3] - gt[..., 1])
    w = torch.minimum(pred[..., 2], gt[..., 2]).sub_(torch.maximum(pred[..., 0], gt[..., 0])).clamp_(min=0)
    h = torch.minimum(pred[..., 3], gt[..., 3]).sub_(torch.maximum(pred[..., 1], gt[..., 1])).clamp_(min=0)
    overlap = w.mul_(h)
    union = (pred_area + gt_area).sub_(overlap).clamp_(min=UNION_EPS)  # torch.max(union, eps) for non-NaN
    return overlap.div_(union)


def dynamic_k(inp: _Inputs, slots: Slots, cand, num_inside):
    """(ks [T] long, near_t, near_a [N] long) from the candidates cand [B, A] and each GT's inside pairs
    num_inside [T]: each GT's sum of its candidate_topk best IoUs over the candidates of its image, truncated,
    at least 1; and the candidates overlapping (IoU > 0) the GTs with fewer inside pairs than their k (for
    penalised_pairs).

    Only overlapping pairs have IoU > 0, so IoUs are computed in blocks of BLOCK consecutive priors whose
    predicted boxes, taken together, reach the GT (the least x1 below its x2, the greatest x2 above its x1,
    the same in y): a test of GTs x blocks, then exact IoUs (``iou``) for the blocks that pass. Non-candidates
    count as IoU 0 (their boxes are replaced by one that reaches nothing): with fewer than candidate_topk
    candidates DAMO sums fewer values, the same sum. The sum is in float64 (arbitrary point 5).
    """
    B, A, T, W = inp.B, inp.A, inp.gt_boxes.shape[0], slots.W
    k = min(inp.candidate_topk, A)
    blocks = -(-A // BLOCK)
    nowhere = torch.tensor([float("inf"), float("inf"), -float("inf"), -float("inf")], device=cand.device)
    padded = blocks * BLOCK
    pred = nowhere[:, None, None].expand(4, B, padded).clone()  # [4, B, A'] planar; the padding reaches nothing
    pred[:, :, :A] = torch.where(cand, inp.pred.view(B, A, 4).permute(2, 0, 1), nowhere[:, None, None])
    pred_area = ((pred[2] - pred[0]) * (pred[3] - pred[1])).view(-1)  # [B * A'], as DAMO's area1 (inf if none)
    by_block = pred.view(4, B, blocks, BLOCK)
    reach = torch.cat((by_block[:2].amin(3), by_block[2:].amax(3))).permute(1, 2, 0)  # [B, blocks, 4]
    pred = pred.view(4, -1)
    gt_boxes, num_inside = _padded(inp.gt_boxes), _padded(num_inside)  # empty slots: an empty box, no IoU
    ks = torch.empty(T + 1, dtype=torch.long, device=cand.device)
    lanes = torch.arange(BLOCK, device=cand.device)
    near_t, near_a = [], []
    for lo, hi in slots.chunks(blocks, per_pair=BLOCK * 8):  # at worst every block hit: ~8 [H, BLOCK] temporaries
        img, gt = slots.row_img[lo:hi], slots.gt[lo * W:hi * W]
        g = gt_boxes[gt].view(hi - lo, W, 1, 4)
        r = reach[img, None]  # [rows, 1, blocks, 4]
        hit = (r[..., 0] < g[..., 2]) & (g[..., 0] < r[..., 2]) & (r[..., 1] < g[..., 3]) & (g[..., 1] < r[..., 3])
        s, blk = hit.view(-1, blocks).nonzero().unbind(1)  # [H] (slot in the chunk, block), by slot
        a = blk[:, None] * BLOCK + lanes  # [H, BLOCK]
        flat = (img[s // W, None] * padded + a).view(-1)  # [H * BLOCK] into [B * A']
        boxes = pred.index_select(1, flat).view(4, -1, BLOCK).permute(1, 2, 0)  # [H, BLOCK, 4]
        u = iou(boxes, gt_boxes[gt[s], None], pred_area[flat].view(-1, BLOCK))  # [H, BLOCK]
        # each slot's IoUs in a zero-padded table, a row per slot: its top values are those of all its pairs
        counts = torch.bincount(s, minlength=gt.shape[0])
        rank = torch.arange(s.shape[0], device=s.device) - (torch.cumsum(counts, 0) - counts)[s]
        width = max(int(counts.max()), -(-k // BLOCK))  # blocks in the widest row, host sync
        table = u.new_zeros(gt.shape[0], width, BLOCK)
        table[s, rank] = u
        k_slots = truncated_sum(table.view(gt.shape[0], -1).topk(k, dim=1).values)
        ks[gt] = k_slots
        short = (num_inside[gt] < k_slots) & (gt < T)  # [rows * W]
        pick = short[s, None] & (u > 0)  # [H, BLOCK]
        h, lane = pick.nonzero().unbind(1)
        near_t.append(gt[s[h]])
        near_a.append(a[h, lane])
    return ks[:T], torch.cat(near_t), torch.cat(near_a)


def truncated_sum(top):
    """[N] long from each row's best IoUs [N, k]: their sum, truncated, at least 1, the sum in float64
    (arbitrary point 5)."""
    return top.double().sum(1).long().clamp_(min=1)


# ---- 3. costs ------------------------------------------------------------------------------------
def pair_costs(inp: _Inputs, t, a):
    """(cost before the penalty, IoU), [P] float32 each, of (GT t, prior a of the GT's image) pairs:

        cls_weight * sum_c BCE(p_c, y_c) * |y_c - p_c|^2 + iou_weight * -log(u + 1e-7)

    as DAMO computes it. The per-class terms of a prior against soft label 0 are computed once per prior
    (F.binary_cross_entropy, the same scalar kernel as DAMO's); a pair's row is its prior's with the GT
    class's term replaced, summed over the contiguous C like DAMO's [V, G, C] rows. A pair with IoU 0 has
    soft label 0 everywhere, so its row is the prior's, whose sum is reused.
    """
    P, C = t.shape[0], inp.scores.shape[2]
    flat = inp.gt_img[t] * inp.A + a  # [P] into [B * A]
    u = iou(inp.pred[flat], inp.gt_boxes[t])  # [P]
    iou_cost = -torch.log(u + IOU_LOG_EPS)
    iou_cost = iou_cost * inp.iou_weight
    cls_cost = torch.empty(P, device=t.device)
    rows = max(1, PAIR_CHUNK_ELEMENTS // max(C, 1))
    for lo in range(0, P, rows):
        sl = slice(lo, lo + rows)
        cls_cost[sl] = _class_costs(inp.scores, flat[sl], inp.gt_classes[t[sl]], u[sl])
    return cls_cost * inp.cls_weight + iou_cost, u


def _class_costs(scores, flat, cls, u):
    """sum_c BCE(p_c, y_c) * |y_c - p_c|^2, [N], for priors flat [N] (into scores [B, A, C] flattened to
    [B * A, C]), GT classes cls [N], IoUs u [N] (the soft label at the GT class)."""
    priors, inverse = torch.unique(flat, return_inverse=True)  # [U], [N]
    A = scores.shape[1]
    p = scores[priors // A, priors % A].float()  # [U, C]: the rows only, never a copy of the whole tensor
    negative = bce_terms(p, p.new_zeros(()))  # [U, C]: every class against soft label 0
    total = negative.sum(-1)[inverse]  # [N]: the row sum of a pair with u = 0
    hit = (u > 0).nonzero().squeeze(1)  # [H] pairs whose GT-class entry differs
    if hit.numel():
        rows = negative[inverse[hit]]  # [H, C]
        cols = cls[hit, None]  # [H, 1]
        rows.scatter_(1, cols, bce_terms(p[inverse[hit]].gather(1, cols), u[hit, None]))
        total[hit] = rows.sum(-1)
    return total


def bce_terms(p, soft):
    """DAMO's per-class term BCE(p, soft) * |soft - p|^2 (binary_cross_entropy, then .abs().pow(2.0)), soft
    broadcast to p."""
    return F.binary_cross_entropy(p, soft.expand_as(p), reduction="none") * (soft - p).abs().pow(2.0)


def damo_cost(x, inside):
    """DAMO's cost from the cost before the penalty x and the inside flags (any matching shapes): the int
    penalty added to float32, which rounds a penalised cost to a multiple of 8 (arbitrary point 1)."""
    return x + (~inside) * PENALTY


def penalised_pairs(inp: _Inputs, codes: Codes, cand, ks, num_inside, near_t, near_a):
    """(t, a, inside, x, u) [Q] each: the penalised pairs that the GTs with fewer inside pairs than their k
    choose from (they take all their inside pairs, then their cheapest penalised ones).

    A pair without overlap costs at least the IoU cost of IoU 0 (its class cost is >= 0 when cls_weight
    is), so its DAMO cost is at least ``floor``. A GT with enough overlapping penalised pairs (near_t,
    near_a, from dynamic_k) below the floor takes its picks among them, ties at its last pick included;
    the others (boxes of no area, far from every prediction) are costed against every candidate of their
    image.
    """
    T = ks.shape[0]
    out = pair_codes(codes, near_t, near_a) != INSIDE
    t, a = near_t[out], near_a[out]
    x, u = pair_costs(inp, t, a)
    penalised = torch.zeros_like(t, dtype=torch.bool)  # inside flags
    zero_iou_cost = -torch.log(x.new_zeros(1) + IOU_LOG_EPS) * inp.iou_weight  # as pair_costs computes it
    floor = damo_cost(zero_iou_cost, penalised.new_zeros(1))
    need = (ks - num_inside).clamp(min=0)  # [T] penalised picks, > 0 for the GTs concerned
    below = torch.bincount(t[damo_cost(x, penalised) < floor], minlength=T)  # [T]
    hard = (need > 0) & ((below < need) if inp.cls_weight >= 0 else True)  # the floor needs cls_weight >= 0
    if bool(hard.any()):
        h_t, h_a = _all_candidate_pairs(hard.nonzero().squeeze(1), cand, inp.gt_img)
        h_out = pair_codes(codes, h_t, h_a) != INSIDE
        h_t, h_a = h_t[h_out], h_a[h_out]
        h_x, h_u = pair_costs(inp, h_t, h_a)
        keep = ~hard[t]  # the hard GTs' overlapping pairs are among their candidates
        t, a, x, u = (torch.cat((v[keep], h)) for v, h in ((t, h_t), (a, h_a), (x, h_x), (u, h_u)))
    return t, a, torch.zeros_like(t, dtype=torch.bool), x, u


def cheapest(t, a, cost, ks):
    """[P] bool: the pair is among the ks[t] cheapest of its GT t by DAMO's cost, the lowest prior first on
    equal costs (arbitrary points 1 and 2: a stable top-k). Stable sorts, the last key first."""
    order = torch.argsort(a, stable=True)
    for key in (cost, t):
        order = order[torch.argsort(key[order], stable=True)]
    sorted_t = t[order]
    counts = torch.bincount(sorted_t, minlength=ks.shape[0])
    rank = torch.arange(t.shape[0], device=t.device) - (torch.cumsum(counts, 0) - counts)[sorted_t]
    return torch.zeros_like(t, dtype=torch.bool).index_fill_(0, order[rank < ks[sorted_t]], True)


def resolve_conflicts(inp: _Inputs, codes: Codes, take, t, a, inside, cost, iou_):
    """Per prior of the batch, [B * A] each: (GT index, -1 if none; IoU with it, 0 if none), from the pairs
    (t, a, inside, DAMO cost, IoU) [P] and which of them their GT took.

    A prior taken once goes to its GT. A prior taken several times goes to the least DAMO cost over all GTs
    of its image, the first on ties (arbitrary point 3). Every inside pair of the batch is among the pairs
    (a GT choosing from all candidates has its inside pairs there too), and any inside cost is below any
    penalised one, so a contested prior with an inside pair goes to its cheapest inside GT; one with none is
    costed against every GT of its image (rare: only GTs short of inside pairs take penalised priors).
    """
    B, A, T = inp.B, inp.A, inp.gt_boxes.shape[0]
    n = B * A
    device = t.device
    flat = inp.gt_img[t] * A + a  # [P] into [B * A]
    claims = torch.bincount(flat[take], minlength=n)  # [B * A]
    gt_index = torch.full((n,), -1, dtype=torch.long, device=device)
    matched_iou = torch.zeros(n, device=device)
    single = take & (claims[flat] == 1)
    gt_index[flat[single]], matched_iou[flat[single]] = t[single], iou_[single]
    contested = claims > 1  # [B * A]
    if not contested.any():
        return gt_index, matched_iou
    # contested priors with inside pairs: the least cost among them, then the least GT index
    mine = inside & contested[flat]
    winner = _cheapest_gt(flat[mine], t[mine], cost[mine], n, T)  # [B * A], T where none
    _write(gt_index, matched_iou, winner, flat[mine], t[mine], iou_[mine])
    # contested priors without any inside pair: every GT of the image, all penalised
    rest = (contested & (winner == T)).nonzero().squeeze(1)  # [R] into [B * A]
    if rest.numel():
        r_flat, r_t = _every_gt_of_image(rest, inp.gt_img, A)
        r_a = r_flat % A
        r_x, r_iou = pair_costs(inp, r_t, r_a)
        r_cost = damo_cost(r_x, pair_codes(codes, r_t, r_a) == INSIDE)
        _write(gt_index, matched_iou, _cheapest_gt(r_flat, r_t, r_cost, n, T), r_flat, r_t, r_iou)
    return gt_index, matched_iou


def _cheapest_gt(flat, t, cost, n: int, T: int):
    """[n] long: per prior, the least GT index among its pairs (flat, t, cost) [P] of least cost (torch.min's
    first minimum over the image's GTs); T for priors without pairs."""
    least = torch.full((n,), float("inf"), device=t.device).scatter_reduce_(0, flat, cost, "amin")
    at_least = cost == least[flat]
    return torch.full((n,), T, dtype=torch.long, device=t.device).scatter_reduce_(
        0, flat[at_least], t[at_least], "amin")


def _write(gt_index, matched_iou, winner, flat, t, iou_):
    """gt_index and matched_iou at the priors of the pairs (flat, t) [P] that their winner [n] names."""
    won = t == winner[flat]
    gt_index[flat[won]], matched_iou[flat[won]] = t[won], iou_[won]


def _every_gt_of_image(priors, gt_img, A: int):
    """(flat, t) pairs [R * GTs of the image] of priors [R] (into [B * A]) with every GT of their image."""
    by_image = torch.argsort(gt_img, stable=True)  # GT rows grouped by image, in order
    per_image = torch.bincount(gt_img)
    first = torch.cumsum(per_image, 0) - per_image
    img = priors // A
    n = per_image[img]  # [R]
    owner = torch.repeat_interleave(torch.arange(priors.shape[0], device=priors.device), n)
    rank = torch.arange(owner.shape[0], device=priors.device) - (torch.cumsum(n, 0) - n)[owner]
    return priors[owner], by_image[first[img[owner]] + rank]
