"""ComputeXLoss (utils/loss/yolox_loss.py) with its batched SimOTA against a per-image reference and
official YOLOX's get_losses."""
import math
import os
import subprocess
from pathlib import Path

import pytest
import torch

from tests.simota_reference import official_losses, reference_losses
from tests.support import ASSIGNMENT_CASES as CASES
from tests.support import STRIDES, random_preds, random_targets
from tests.support import tiny_detect_model as make_model
from tests.yolox_current_reference import current_official_env_python
from utils.loss import ComputeXLoss
from utils.loss.simota_dense import simota_assign_dense


def assert_same_assignment(model, loss_fn, preds, targets, nc, prior):
    """Foreground masks and matched GTs equal the per-image reference; loss items within 1e-5."""
    loss, items = loss_fn(preds, targets)
    ref_items, ref_images = reference_losses(preds, targets, STRIDES, nc, prior, loss_fn.use_l1, loss_fn.iou_loss)
    fg_ours = loss_fn.assign(preds, targets)
    for b, (fg, matched) in enumerate(ref_images):
        assert torch.equal(fg_ours.fg_mask[b], fg), f"image {b}: foreground masks differ"
        assert torch.equal(fg_ours.matched_gt[b][fg], matched), f"image {b}: matched GTs differ"
        img_targets = targets[targets[:, 0] == b]
        assert torch.equal(fg_ours.matched_class[b][fg], img_targets[matched, 1].long())
    torch.testing.assert_close(items, ref_items, rtol=1e-5, atol=1e-6)
    assert torch.isclose(loss, items.sum(), rtol=1e-6)
    return items


@pytest.mark.parametrize("assigner", ["sparse", "dense"])
@pytest.mark.parametrize("prior", ["center", "box_or_center"])
@pytest.mark.parametrize("case", list(CASES))
def test_batched_assignment_equals_per_image_reference(prior, case, assigner):
    spec = dict(CASES[case])
    counts = spec.pop("counts")
    nc = 20
    model = make_model(nc)
    preds = random_preds(len(counts), nc, seed=len(case))
    targets = random_targets(counts, nc, seed=len(case) + 1, **spec)
    loss_fn = ComputeXLoss(model, {"simota_prior": prior})
    if assigner == "dense":
        loss_fn.assigner = simota_assign_dense
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
        assignment = loss_fn.assign(preds, t)
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
    assignment = loss_fn.assign(preds, gt)
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
    with pytest.raises(ValueError, match=r"'simota_prior' must be one of \('center', 'box_or_center'\)"):
        ComputeXLoss(model, {"simota_prior": "centre"})
    with pytest.raises(ValueError, match="'iou_loss' must be one of"):
        ComputeXLoss(model, {"iou_loss": "wiou"})
    with pytest.raises(ValueError, match="classes outside"):
        loss_fn(preds, torch.tensor([[0, 9, 0.5, 0.5, 0.1, 0.1]]))


def test_image_without_ground_truth_has_only_objectness_loss():
    """Every anchor of an image without GTs is background: the box, class and L1 terms are 0, the
    objectness term is the BCE of every anchor against 0, summed and divided by max(foreground, 1) = 1."""
    nc = 4
    loss_fn = ComputeXLoss(make_model(nc), {})
    loss_fn.use_l1 = True
    preds = random_preds(1, nc, seed=9)
    loss, items = loss_fn(preds, torch.zeros(0, 6))
    obj = torch.cat([p[:, 4].flatten() for p in preds])
    expected_obj = torch.nn.functional.binary_cross_entropy_with_logits(obj, torch.zeros_like(obj), reduction="sum")
    assert items[0] == 0 and items[2] == 0 and items[3] == 0
    assert items[1] > 0 and torch.isclose(items[1], expected_obj, rtol=1e-6)
    assert torch.isclose(loss, items[1])
    # with a second image that has GTs, the empty image still adds only to the objectness term
    preds2 = random_preds(2, nc, seed=9)
    _, items2 = loss_fn(preds2, random_targets([0, 3], nc, seed=1))
    assert int(loss_fn.last_stats["num_fg"]) > 0 and all(v > 0 for v in items2.tolist())


# ---- the default prior against official YOLOX's current code --------------------------------------------
CURRENT_CASES = ["one_gt", "mixed_empty", "many", "smaller_than_stride", "huge_boxes", "crowded_200"]


@pytest.fixture(scope="module")
def current_official(tmp_path_factory):
    """Official YOLOX's current code (pixeltable-yolox 0.4.3, the ``center`` prior) on CURRENT_CASES, with
    and without L1, run in its own environment: {(case, use_l1): answer}. Skipped without that
    environment, an error in CI (REQUIRE_REFERENCE=1)."""
    python = current_official_env_python()
    if not python.is_file():
        if os.environ.get("REQUIRE_REFERENCE") == "1":
            pytest.fail(f"no environment with official YOLOX's current code at {python} (bash tests/install_reference.sh)")
        pytest.skip(f"no environment with official YOLOX's current code at {python} (bash tests/install_reference.sh)")
    cases, keys = [], []
    for case in CURRENT_CASES:
        spec = dict(CASES[case])
        counts = spec.pop("counts")
        preds = random_preds(len(counts), 20, seed=11 + len(case))
        targets = random_targets(counts, 20, seed=12 + len(case), **spec)
        for use_l1 in (False, True):
            cases.append({"preds": preds, "targets": targets, "nc": 20, "use_l1": use_l1})
            keys.append((case, use_l1))
    root = tmp_path_factory.mktemp("current")
    torch.save({"strides": STRIDES, "cases": cases}, root / "cases.pt")
    script = Path(__file__).resolve().parents[2] / "yolox_current_reference.py"
    r = subprocess.run([str(python), str(script), str(root / "cases.pt"), str(root / "answers.pt")],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    answers = torch.load(root / "answers.pt", weights_only=True)
    assert answers["version"] == "0.4.3"
    return {k: (c, a) for k, c, a in zip(keys, cases, answers["answers"])}


@pytest.mark.parametrize("use_l1", [False, True])
@pytest.mark.parametrize("case", CURRENT_CASES)
def test_center_prior_equals_current_official(current_official, case, use_l1):
    """ComputeXLoss's default prior (``center``) against official YOLOX's current get_losses and
    get_assignments: the same foreground anchors and matched GTs per image, loss items within 1e-5."""
    spec, answer = current_official[(case, use_l1)]
    loss_fn = ComputeXLoss(make_model(spec["nc"]), {})  # the default: simota_prior center
    loss_fn.use_l1 = use_l1
    assert loss_fn.prior == "center"
    _, items = loss_fn(spec["preds"], spec["targets"])
    torch.testing.assert_close(items, answer["items"], rtol=1e-5, atol=1e-6)
    ours = loss_fn.assign(spec["preds"], spec["targets"])
    for b, (fg, matched) in enumerate(zip(answer["fg"], answer["matched"])):
        assert torch.equal(ours.fg_mask[b], fg), f"image {b}: foreground anchors differ"
        assert torch.equal(ours.matched_gt[b][fg], matched), f"image {b}: matched GTs differ"
    assert sum(int(fg.sum()) for fg in answer["fg"]) > 0 or case == "zero_gts"
