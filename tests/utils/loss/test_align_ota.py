"""AlignOTA (utils/loss/align_ota.py) against DAMO-YOLO's AlignOTAAssigner (modelscope 1.40.2, run per image as
ZeroHead.get_target_single runs it): identical assignments on random batches, and each arbitrary point of the
reference (the module docstring's list) tested as decided.

The reference is run three ways: as it is; with its torch.topk replaced by a stable one (lowest index first
on equal values: our documented tie rule, everything else DAMO's code unchanged); and recording the cost and
IoU matrices it passes to dynamic_k_matching, from which the tests tell tie-free cases from tied ones.
"""
from __future__ import annotations

import contextlib

import pytest
import torch

from tests.damo_reference import damo_module, damo_root
from utils.loss import align_ota
from utils.loss.align_ota import AlignOTAResult, align_ota_assign

pytestmark = pytest.mark.usefixtures("one_torch_thread")
STRIDES = (8, 16, 32)
PENALTY = 100000000  # DAMO's INF


# ---- the reference -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def damo():
    """DAMO's ota_assigner module; skipped without modelscope, an error in CI (REQUIRE_REFERENCE=1)."""
    if damo_root() is None:
        pytest.skip("modelscope not installed (bash tests/install_reference.sh)")
    return damo_module("damo.base_models.core.ota_assigner")


class _TorchWithTopk:
    """The torch module as DAMO's ota_assigner sees it, with topk replaced."""

    def __init__(self, topk):
        self.topk = topk

    def __getattr__(self, name):
        return getattr(torch, name)


def stable_topk(input, k, dim=-1, largest=True, sorted=True):
    """torch.topk with ties in ascending index order (a stable sort)."""
    values, indices = torch.sort(input, dim=dim, descending=largest, stable=True)
    return torch.return_types.topk((values.narrow(dim, 0, k), indices.narrow(dim, 0, k)))


@contextlib.contextmanager
def patched_topk(damo, topk):
    saved = damo.torch
    damo.torch = _TorchWithTopk(topk)
    try:
        yield
    finally:
        damo.torch = saved


def reference(damo, batch, stable=False, records=None, **settings):
    """DAMO's assignment of the batch, one assign() call per image with GTs, as ZeroHead makes it:
    (gt_index [B, A], -1 for background; iou [B, A], 0 for background). stable: with stable_topk.
    records: a list that receives (cost [V, G], pairwise IoUs [V, G]) per image. settings: the assigner's
    (ZeroHead's defaults otherwise)."""
    scores, pred, priors, gt_boxes, gt_classes, gt_img = batch
    B, A, _ = scores.shape
    settings = {"center_radius": 2.5, "candidate_topk": 10, "iou_weight": 3.0, "cls_weight": 1.0, **settings}
    assigner = damo.AlignOTAAssigner(**settings)
    if records is not None:
        matching = assigner.dynamic_k_matching

        def recording(cost, pairwise_ious, num_gt, valid_mask):
            records.append((cost.clone(), pairwise_ious.clone()))
            return matching(cost, pairwise_ious, num_gt, valid_mask)

        assigner.dynamic_k_matching = recording
    gt_index, iou = torch.full((B, A), -1), torch.zeros(B, A)
    with patched_topk(damo, stable_topk) if stable else contextlib.nullcontext():
        for b in range(B):
            rows = (gt_img == b).nonzero().squeeze(1)
            if rows.numel() == 0:
                continue  # ZeroHead returns before assigning
            result = assigner.assign(scores[b], priors, pred[b], gt_boxes[rows], gt_classes[rows])
            fg = result.gt_inds > 0
            gt_index[b, fg] = rows[result.gt_inds[fg] - 1]
            iou[b, fg] = result.max_overlaps[fg]
    return gt_index, iou


def dynamic_ks(cost, ious):
    """DAMO's dynamic k of each GT from its recorded matrices."""
    return torch.topk(ious, min(10, ious.shape[0]), dim=0).values.sum(0).int().clamp(min=1)


def tied_gts(records) -> int:
    """GTs whose k-th cheapest candidate costs the same as the next one: where topk's choice is arbitrary."""
    tied = 0
    for cost, ious in records:
        ks = dynamic_ks(cost, ious).long()
        ordered = cost.sort(0).values  # [V, G]
        nxt = (ks < cost.shape[0]).nonzero().squeeze(1)
        tied += int((ordered[ks[nxt] - 1, nxt] == ordered[ks[nxt], nxt]).sum())
    return tied


def assert_same(ours: AlignOTAResult, ref):
    gt_index, iou = ref
    assert torch.equal(ours.gt_index, gt_index), f"{int((ours.gt_index != gt_index).sum())} anchors differ"
    assert torch.equal(ours.fg, gt_index >= 0)
    torch.testing.assert_close(ours.iou, iou, rtol=0, atol=1e-6)


# ---- inputs ---------------------------------------------------------------------------------------
def damo_priors(h: int, w: int, strides=STRIDES) -> torch.Tensor:
    """[A, 4] (x, y, stride, stride) as ZeroHead.get_single_level_center_priors makes them: x = column * stride
    (no half-cell offset), levels in turn, each row-major."""
    levels = []
    for s in strides:
        y, x = torch.meshgrid(torch.arange(h // s), torch.arange(w // s), indexing="ij")
        n = x.numel()
        levels.append(torch.stack((x.flatten() * s, y.flatten() * s, torch.full((n,), s), torch.full((n,), s)), 1))
    return torch.cat(levels).float()


def make_batch(counts, channels: int = 81, h: int = 320, w: int = 320, seed: int = 0, min_side: float = 4.0,
               max_side: float | None = None):
    """A batch as ZeroHead's assigner sees it: (cls_scores [B, A, channels] sigmoid probabilities,
    pred_boxes [B, A, 4] x1y1x2y2, priors [A, 4], gt_boxes [G, 4], gt_classes [G], gt_img [G]).

    counts[b] GTs in image b, listed in a shuffled order; sides log-uniform in [min_side, max_side], centres
    uniform in the image; classes below channels - 1 (the last channel is modelscope's legacy extra class).
    Predictions as from a detector in training: a prior inside a GT box predicts that box (the smallest
    containing it) with a jitter of 15% of its size per side and scores its class higher; other priors
    predict boxes of 0.3 to 3.3 strides around their point; scores sigmoid(N(-4, 1.5)).
    """
    g = torch.Generator().manual_seed(seed)
    priors = damo_priors(h, w)
    A, B, G = priors.shape[0], len(counts), sum(counts)
    max_side = max_side or 0.6 * max(h, w)
    gt_img = torch.repeat_interleave(torch.arange(B), torch.tensor(counts))[torch.randperm(G, generator=g)]
    log_lo, log_hi = torch.tensor([min_side, max_side]).log().tolist()
    wh = torch.empty(G, 2).uniform_(log_lo, log_hi, generator=g).exp()
    centre = torch.rand(G, 2, generator=g) * torch.tensor([w, h])
    gt_boxes = torch.cat((centre - wh / 2, centre + wh / 2), 1)
    gt_classes = torch.randint(0, channels - 1, (G,), generator=g)
    reach = (torch.rand(B, A, 4, generator=g) * 3 + 0.3) * priors[:, 2:3]
    pred = torch.cat((priors[:, :2] - reach[..., :2], priors[:, :2] + reach[..., 2:]), 2)
    logits = torch.randn(B, A, channels, generator=g) * 1.5 - 4
    for b in range(B):
        rows = (gt_img == b).nonzero().squeeze(1)
        box = gt_boxes[rows]
        inside = ((priors[:, None, :2] > box[None, :, :2]) & (priors[:, None, :2] < box[None, :, 2:])).all(2)
        area = ((box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1]))[None].expand(A, -1)
        owner = torch.where(inside, area, float("inf")).argmin(1) if rows.numel() else torch.zeros(A, dtype=torch.long)
        hit = inside.any(1) if rows.numel() else torch.zeros(A, dtype=torch.bool)
        own = box[owner[hit]]
        size = (own[:, 2:] - own[:, :2]).repeat(1, 2)
        jittered = own + torch.randn(own.shape, generator=g) * 0.15 * size
        lo, hi = jittered[:, :2], jittered[:, 2:]
        jittered = torch.cat((torch.minimum(lo, hi), torch.maximum(lo, hi)), 1)
        pred[b, hit] = jittered
        logits[b, hit, gt_classes[rows[owner[hit]]]] += 3 + torch.randn(int(hit.sum()), generator=g)
    return logits.sigmoid(), pred, priors, gt_boxes, gt_classes, gt_img


def with_odd_gts(batch, seed: int):
    """The batch with a zero-width GT, a GT off the image, one across its corner, and an image whose only GT is
    off the image (no candidates at all) appended."""
    scores, pred, priors, gt_boxes, gt_classes, gt_img = batch
    B = scores.shape[0]
    g = torch.Generator().manual_seed(seed)
    extra = torch.tensor([[40.0, 50.0, 40.0, 90.0], [900.0, 900.0, 950.0, 960.0], [-30.0, -25.0, 6.0, 9.0],
                          [1000.0, 1000.0, 1100.0, 1040.0]])
    img = torch.tensor([0, 0, B - 1, B])
    scores = torch.cat((scores, scores[:1]))
    pred = torch.cat((pred, pred[:1]))
    classes = torch.randint(0, scores.shape[2] - 1, (4,), generator=g)
    return (scores, pred, priors, torch.cat((gt_boxes, extra)), torch.cat((gt_classes, classes)),
            torch.cat((gt_img, img)))


# ---- identical to DAMO --------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(3))
def test_equals_damo_on_random_batches(damo, seed):
    """80 classes (+ the legacy channel), GTs of 40 to 190 px: no GT short of inside pairs, so no tie at
    anyone's k-th pick (asserted) and DAMO's own run is the expectation, bit for bit."""
    counts = [[12, 0, 30, 5], [1, 25, 0, 18], [40, 9, 3, 0]][seed]
    batch = make_batch(counts, 81, 256, 320, seed=seed, min_side=40, max_side=190)
    records = []
    ref = reference(damo, batch, records=records)
    assert tied_gts(records) == 0
    ours = align_ota_assign(*batch)
    assert_same(ours, ref)
    assert int(ours.fg.sum()) > 10 * len(records)
    assert not ours.fg[torch.tensor(counts) == 0].any()


def test_equals_damo_with_500_gts(damo):
    """500 GTs in one image (and an image without any), tie-free sizes; 10 + 1 channels to keep DAMO's
    [V, 500, C] tensors small."""
    batch = make_batch([500, 0, 30], 11, 320, 320, seed=7, min_side=40, max_side=160)
    records = []
    ref = reference(damo, batch, records=records)
    assert tied_gts(records) == 0
    assert_same(align_ota_assign(*batch), ref)


@pytest.mark.parametrize("seed", range(2))
def test_equals_damo_with_stable_topk_on_tiny_and_odd_gts(damo, seed):
    """GTs down to 2 px, a box of no width, GTs off the image and an image without candidates: GTs short of
    inside pairs pick among penalised costs, rounded to multiples of 8, so many tie (asserted). With topk
    made stable, DAMO's code gives our assignment exactly."""
    batch = with_odd_gts(make_batch([20, 0, 35, 6], 81, 256, 256, seed=10 + seed, min_side=2, max_side=120), seed)
    records = []
    ref = reference(damo, batch, stable=True, records=records)
    assert tied_gts(records) > 0
    ours = align_ota_assign(*batch)
    assert_same(ours, ref)
    assert not ours.fg[4].any()  # the image whose only GT is off the image: no candidates


def test_equals_damo_with_stable_topk_with_500_tiny_gts(damo):
    batch = make_batch([3, 500], 11, 320, 320, seed=8, min_side=2, max_side=60)
    records = []
    ref = reference(damo, batch, stable=True, records=records)
    assert tied_gts(records) > 0
    assert_same(align_ota_assign(*batch), ref)


@pytest.mark.parametrize("settings", [
    {"center_radius": 1.5, "candidate_topk": 5, "iou_weight": 2.0, "cls_weight": 0.5},
    {"center_radius": 3.0, "candidate_topk": 20, "iou_weight": 1.0, "cls_weight": 2.0}])
def test_equals_damo_with_other_settings(damo, settings):
    batch = with_odd_gts(make_batch([15, 0, 40], 81, 256, 320, seed=81, min_side=2, max_side=200), 81)
    assert_same(align_ota_assign(*batch, **settings), reference(damo, batch, stable=True, **settings))


# ---- the arbitrary points, as decided -----------------------------------------------------------------
def test_penalty_rounds_costs_to_multiples_of_8():
    """Point 1: DAMO's ``cost + (~inside) * INF`` is float32 (an int64 tensor added to float32), whose step
    at 1e8 is 8; damo_cost computes the same."""
    x = torch.tensor([0.5, 3.9, 4.1, 11.9, 12.1, 48.35])
    inside = torch.tensor([True, False, False, False, False, False])
    damo_style = x + (~inside) * PENALTY
    assert damo_style.dtype == torch.float32
    assert damo_style.tolist() == [0.5, 1e8, 1e8 + 8, 1e8 + 8, 1e8 + 16, 1e8 + 48]
    assert torch.equal(align_ota.damo_cost(x, inside), damo_style)


def test_cpu_topk_does_not_prefer_the_lowest_index():
    """Point 2, the reason for a rule of our own: with one cheapest value and the rest tied, CPU topk takes
    neither the lowest tied indices nor the same ones for another length (std::partial_sort when
    k * 64 <= n, std::nth_element otherwise)."""
    for n in (200, 1000):
        tied = torch.full((n,), 1e8)
        tied[n // 2] = 0.0
        picked = sorted(torch.topk(tied, 5, largest=False).indices.tolist())
        assert n // 2 in picked and sorted(set(picked) - {n // 2}) != [0, 1, 2, 3]


def test_damo_picks_among_equal_costs_where_we_take_the_lowest_index(damo):
    """Points 1 and 2: on tiny GTs DAMO's own topk returns, call by call, the same costs as the stable topk
    (so both are k cheapest), at other priors where several tie; ours is the stable one's."""
    batch = make_batch([20, 6], 81, 256, 320, seed=28, min_side=4, max_side=150)
    calls = []

    def recording_topk(input, k, dim=-1, largest=True, sorted=True):
        out = torch.topk(input, k, dim=dim, largest=largest, sorted=sorted)
        if not largest:
            calls.append((input.clone(), k, out.indices))
        return out

    with patched_topk(damo, recording_topk):
        ref = reference(damo, batch)
    differing = 0
    for cost, k, indices in calls:
        lowest = torch.sort(cost, stable=True).indices[:k]
        assert torch.equal(cost[indices].sort().values, cost[lowest].sort().values)  # the same k costs
        differing += not torch.equal(indices.sort().values, lowest.sort().values)
    assert differing > 0
    ours = align_ota_assign(*batch)
    assert int((ours.gt_index != ref[0]).sum()) > 0
    assert_same(ours, reference(damo, batch, stable=True))


def test_conflicts_go_to_the_cheapest_gt_even_if_it_did_not_pick_the_prior(damo):
    """Point 3: a prior picked by several GTs goes to torch.min's first least cost over ALL the image's GTs.
    The recorded matrices show both kinds of such winners: GTs whose own top-k skipped the prior, and
    (every claimant penalised, costs rounded) the first of GTs that tie at a multiple of 8."""
    batch = with_odd_gts(make_batch([60, 45, 8], 81, 256, 256, seed=31, min_side=3, max_side=150), 31)
    records = []
    ref = reference(damo, batch, stable=True, records=records)
    outsiders = penalised = 0
    for cost, ious in records:
        ks = dynamic_ks(cost, ious)
        picks = torch.zeros_like(cost, dtype=torch.bool)
        for j in range(cost.shape[1]):
            picks[torch.sort(cost[:, j], stable=True).indices[:ks[j]], j] = True
        contested = picks.sum(1) > 1
        least, winner = cost[contested].min(1)
        outsiders += int((~picks[contested].gather(1, winner[:, None])).sum())
        penalised += int((least >= PENALTY).sum())
    assert outsiders > 0 and penalised > 0
    assert_same(align_ota_assign(*batch), ref)


def test_exact_duplicate_gt_gets_no_positives(damo):
    """Point 4: both copies take the same priors at the same costs and every conflict goes to the first."""
    scores, pred, priors, gt_boxes, gt_classes, gt_img = make_batch([8, 5], 81, 256, 256, seed=41, min_side=40,
                                                                       max_side=150)
    first = int((gt_img == 0).nonzero()[2])
    batch = (scores, pred, priors, torch.cat((gt_boxes, gt_boxes[first:first + 1])),
             torch.cat((gt_classes, gt_classes[first:first + 1])), torch.cat((gt_img, gt_img[first:first + 1])))
    ref = reference(damo, batch)
    ours = align_ota_assign(*batch)
    assert_same(ours, ref)
    copy = batch[3].shape[0] - 1
    assert (ours.gt_index == first).any() and not (ours.gt_index == copy).any()


def test_dynamic_k_truncates_the_exact_sum():
    """Point 5: DAMO's float32 sum of the 10 IoUs rounds with the image's GT count and the GT's place
    (torch vectorises the sum across GTs); ours is float64. Here float32 rounds 3 - 2^-24 up to 3."""
    top = torch.tensor([[1.0, 1.0, 1 - 2 ** -24, 0.0]])
    assert int(top.sum(1).int()) == 3
    assert align_ota.truncated_sum(top).tolist() == [2]
    assert align_ota.truncated_sum(torch.zeros(2, 10)).tolist() == [1, 1]  # at least 1


def test_class_cost_counts_every_channel_given(damo):
    """Point 6: the class cost sums over every channel passed (modelscope passes nc + 1, the last a legacy
    class): without the extra channel DAMO and ours both assign differently, and still identically."""
    batch = make_batch([10, 20], 81, 256, 256, seed=51, min_side=40, max_side=190)
    narrow = (batch[0][..., :80], *batch[1:])  # a strided view, as a head's output may be
    ref = reference(damo, narrow)
    assert_same(align_ota_assign(*narrow), ref)
    assert not torch.equal(ref[0], reference(damo, batch)[0])


# ---- interface ------------------------------------------------------------------------------------
def test_batch_without_gts_and_result_types():
    scores, pred, priors, *_ = make_batch([0, 0], 5, 64, 96, seed=0)
    none = torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    result = align_ota_assign(scores, pred, priors, *none)
    A = priors.shape[0]
    assert result.fg.shape == result.gt_index.shape == result.iou.shape == (2, A)
    assert not result.fg.any() and (result.gt_index == -1).all() and (result.iou == 0).all()
    batch = make_batch([3, 0], 5, 64, 96, seed=1, min_side=20, max_side=40)
    result = align_ota_assign(*batch)
    assert result.fg.dtype == torch.bool and result.gt_index.dtype == torch.long
    assert result.iou.dtype == torch.float32 and result.fg[0].any() and not result.fg[1].any()
    assert torch.equal(result.fg, result.gt_index >= 0) and (result.iou[~result.fg] == 0).all()
    assert (result.iou[result.fg] > 0).all()


def test_gt_order_and_chunking_do_not_change_the_assignment(monkeypatch):
    """GTs listed in any order give the same assignment (renumbered); tiny chunks give the same result."""
    batch = make_batch([25, 4, 0, 30], 21, 192, 256, seed=61, min_side=3, max_side=150)
    result = align_ota_assign(*batch)
    perm = torch.randperm(batch[3].shape[0], generator=torch.Generator().manual_seed(0))
    shuffled = align_ota_assign(*batch[:3], batch[3][perm], batch[4][perm], batch[5][perm])
    renumbered = torch.where(shuffled.fg, perm[shuffled.gt_index.clamp(min=0)], -1)
    assert torch.equal(renumbered, result.gt_index) and torch.equal(shuffled.iou, result.iou)
    monkeypatch.setattr(align_ota, "GT_CHUNK_ELEMENTS", 1)
    monkeypatch.setattr(align_ota, "PAIR_CHUNK_ELEMENTS", 7)
    chunked = align_ota_assign(*batch)
    assert torch.equal(chunked.gt_index, result.gt_index) and torch.equal(chunked.iou, result.iou)


def test_low_precision_inputs_are_assigned_in_float32():
    """Half scores and bfloat16 boxes, under autocast: the float32 assignment of the same values."""
    scores, pred, priors, gt_boxes, gt_classes, gt_img = make_batch([6, 9], 21, 128, 192, seed=71, min_side=8,
                                                                       max_side=90)
    scores, pred = scores.half(), pred.bfloat16()
    expected = align_ota_assign(scores.float(), pred.float(), priors, gt_boxes, gt_classes, gt_img)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        result = align_ota_assign(scores, pred, priors, gt_boxes, gt_classes, gt_img)
    assert result.iou.dtype == torch.float32 and int(result.fg.sum()) > 0
    assert torch.equal(result.gt_index, expected.gt_index) and torch.equal(result.iou, expected.iou)
