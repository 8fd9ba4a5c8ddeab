"""SimOTA's two implementations: the sparse fast path (utils/loss/simota_sparse.py) equals the dense batched
reference (utils/loss/simota_dense.py) exactly, and both follow the rules of utils/loss/simota.py."""
import pytest
import torch

from tests.support import ASSIGNMENT_CASES, case_inputs, random_preds, random_targets, tiny_detect_model
from utils import config
from utils.loss import ComputeXLoss
from utils.loss import simota, simota_sparse
from utils.loss.simota_dense import simota_assign_dense
from utils.loss.simota_sparse import simota_assign

FIELDS = ("fg_mask", "matched_row", "matched_gt", "matched_class", "matched_iou", "num_unmatched_gt")


def both(preds, targets, nc, prior):
    """(sparse, dense) assignments of the same predictions and targets, through ComputeXLoss's inputs."""
    loss_fn = ComputeXLoss(tiny_detect_model(nc), {"simota_prior": prior})
    sparse = loss_fn.assign(preds, targets)
    loss_fn.assigner = simota_assign_dense
    return sparse, loss_fn.assign(preds, targets)


def assert_identical(sparse, dense):
    for f in FIELDS:
        a, b = getattr(sparse, f), getattr(dense, f)
        assert a.dtype == b.dtype and torch.equal(a, b), f"{f} differs"


@pytest.mark.parametrize("prior", ["center", "box_or_center"])
@pytest.mark.parametrize("case", list(ASSIGNMENT_CASES))
def test_sparse_equals_dense_on_every_case(prior, case):
    preds, targets = case_inputs(case, 20, seed=len(case))
    assert_identical(*both(preds, targets, 20, prior))


@pytest.mark.parametrize("seed", range(8))
def test_sparse_equals_dense_on_random_batches(seed):
    """80 classes, 0-60 GTs per image of every size, predictions spread far from their anchors."""
    g = torch.Generator().manual_seed(seed)
    counts = torch.randint(0, 60, (4,), generator=g).tolist()
    preds = random_preds(4, 80, seed=300 + seed, spread=0.5 + seed * 0.25)
    targets = random_targets(counts, 80, seed=400 + seed, min_side=0.003, max_side=0.95)
    for prior in ("center", "box_or_center"):
        sparse, dense = both(preds, targets, 80, prior)
        assert_identical(sparse, dense)
        assert int(sparse.fg_mask.sum()) > 0 or sum(counts) == 0


def test_sparse_equals_dense_with_500_gts_and_an_empty_image():
    preds = random_preds(3, 80, seed=5, spread=1.0)
    targets = random_targets([500, 0, 40], 80, seed=6, min_side=0.005, max_side=0.3)
    for prior in ("center", "box_or_center"):
        sparse, dense = both(preds, targets, 80, prior)
        assert_identical(sparse, dense)
        assert not sparse.fg_mask[1].any()


def test_empty_batch_and_no_candidates():
    for assign in (simota_assign, simota_assign_dense):
        loss_fn = ComputeXLoss(tiny_detect_model(3), {})
        loss_fn.assigner = assign
        preds = random_preds(2, 3, seed=1)
        empty = loss_fn.assign(preds, torch.zeros(0, 6))
        assert not empty.fg_mask.any() and int(empty.num_unmatched_gt) == 0
        off_image = torch.tensor([[0, 1, 1.8, 1.8, 0.05, 0.05], [1, 2, -0.9, 0.5, 0.05, 0.05]])  # no candidate at all
        none = loss_fn.assign(preds, off_image)
        assert not none.fg_mask.any() and int(none.num_unmatched_gt) == 2


def test_priors_are_the_configured_choices():
    """The prior names the assigners know are exactly the values utils/config.py allows."""
    assert set(simota.PRIORS) == set(config.choices("simota_prior"))
    with pytest.raises(ValueError, match="'simota_prior' must be one of"):
        simota_assign_dense(*[torch.zeros(1, 1, 4)] * 3, torch.zeros(1, 2), torch.ones(1), torch.zeros(1, 4),
                            torch.zeros(1, dtype=torch.long), torch.zeros(1, dtype=torch.long), prior="centre")


def test_geometry_against_hand_values():
    """Centre prior: anchors strictly within 1.5 strides of the GT centre; box_or_center: within 2.5 strides
    or inside the box, free of the penalty only when both."""
    anchor_xy = torch.tensor([[4.0, 4.0], [12.0, 4.0], [20.0, 4.0], [28.0, 4.0]])  # stride 8, row 0
    stride = torch.full((4,), 8.0)
    gt = torch.tensor([[14.0, 4.0, 30.0, 4.0]])  # centre x 14; box x 0..29
    cand, inside = simota.geometry(anchor_xy, stride, gt, "center")  # |x - 14| < 12
    assert cand.tolist() == [[True, True, True, False]] and torch.equal(cand, inside)
    cand, inside = simota.geometry(anchor_xy, stride, gt, "box_or_center")  # centre |x - 14| < 20, box 0 < x < 29
    assert cand.tolist() == [[True, True, True, True]]
    assert inside.tolist() == [[True, True, True, True]]
    thin = torch.tensor([[14.0, 4.0, 30.0, 0.5]])  # box 3.75 < y < 4.25: y = 4 inside
    assert simota.geometry(anchor_xy, stride, thin, "box_or_center")[1].tolist() == [[True, True, True, True]]
    # exactly at the limit is outside: official's strict comparisons
    edge = torch.tensor([[16.0, 4.0, 2.0, 2.0]])  # centre region 4 < x < 28
    assert simota.geometry(anchor_xy, stride, edge, "center")[0].tolist() == [[False, True, True, False]]


def test_dynamic_k_and_pair_cost_against_hand_values():
    ious = torch.tensor([[0.9, 0.8, 0.5, 0.0], [0.3, 0.2, 0.1, 0.0]])
    assert simota.dynamic_k(ious, 4).tolist() == [2, 1]  # int(2.2), max(int(0.6), 1)
    p = torch.tensor([0.5])
    cost = simota.pair_cost(torch.tensor([3.0]), p, torch.tensor([0.5]), torch.tensor([False]), 1e5)
    bce = -torch.log(torch.tensor(0.5))  # BCE(0.5, 0) = BCE(0.5, 1)
    expected = 3.0 - bce + bce + 3.0 * -torch.log(torch.tensor(0.5 + 1e-8)) + 1e5
    torch.testing.assert_close(cost, expected.reshape(1))


def test_float_tolerances_are_named_with_their_values():
    """The fast path's margins, each defined once with its reason (simota_sparse's tolerance section)."""
    assert simota_sparse.REACH_LOOSENESS == 2 ** -7
    assert simota_sparse.COORD_SLACK == 2 ** -16
    assert simota_sparse.THIN_SIDE == 2 ** -10
    slack = simota_sparse.class_cost_slack(torch.tensor([100.0]), 80)
    torch.testing.assert_close(slack, torch.tensor([100 * (2 ** -14 + 80 * 2 ** -21) + 2 ** -12 + 80 * 2 ** -22]))
