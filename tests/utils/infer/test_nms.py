"""utils.infer.nms against a plain greedy loop, on random and adversarial inputs."""
import pytest
import torch

from utils.boxes import box_iou_xyxy, cxcywh_to_xyxy
from utils.infer.nms import nms, non_max_suppression


def reference_nms(prediction, conf_thres=0.001, iou_thres=0.65, classes=None, agnostic=False, max_det=300):
    """The obvious algorithm: per anchor its best class, score = obj * class prob, keep score >=
    conf; visit by decreasing score (ties by anchor index); keep a box unless a kept box of the same
    class (any class when agnostic) overlaps it by IoU > iou_thres; first max_det kept."""
    out = []
    for x in prediction:
        cls_conf, cls = x[:, 5:].max(1)
        score = x[:, 4] * cls_conf
        boxes = cxcywh_to_xyxy(x[:, :4])
        s, c = score.tolist(), cls.tolist()
        cand = [a for a in range(x.shape[0]) if s[a] >= conf_thres and (classes is None or c[a] in classes)]
        cand.sort(key=lambda a: (-s[a], a))
        iou = box_iou_xyxy(boxes, boxes)  # elementwise the same arithmetic as one pair at a time
        kept = []
        for a in cand:  # suppressed if a kept box (of its class) overlaps it by more than iou_thres
            k = torch.tensor(kept, dtype=torch.long)
            over = iou[k, a] > iou_thres
            if not agnostic:
                over &= cls[k] == cls[a]
            if not over.any():
                kept.append(a)
        kept = kept[:max_det]
        out.append(torch.cat((boxes[kept], score[kept, None], cls[kept, None].float()), 1).reshape(-1, 6))
    return out


def assert_same(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        torch.testing.assert_close(g, w, rtol=0, atol=0)


def random_prediction(B=2, N=300, nc=4, size=200.0, wh=(4.0, 60.0), seed=0):
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(B, N, 5 + nc, generator=g)
    p[..., :2] *= size
    p[..., 2:4] = wh[0] + p[..., 2:4] * (wh[1] - wh[0])
    return p


def clustered_prediction(N=3000, nc=3, n_objects=15, seed=0):
    """Boxes jittered around a few objects, as a real detector's candidates are."""
    g = torch.Generator().manual_seed(seed)
    objects = torch.rand(n_objects, 4, generator=g) * torch.tensor([640.0, 640.0, 150.0, 150.0]) + torch.tensor([0, 0, 8.0, 8.0])
    k = torch.randint(0, n_objects, (N,), generator=g)
    p = torch.rand(1, N, 5 + nc, generator=g)
    p[0, :, :4] = objects[k] * (1 + 0.1 * torch.randn(N, 4, generator=g))
    p[0, :, 2:4] = p[0, :, 2:4].abs()
    return p


def one_box(cx, cy, w, h, obj, cls, nc):
    row = torch.zeros(5 + nc)
    row[:5] = torch.tensor([cx, cy, w, h, obj])
    row[5 + cls] = 1.0
    return row


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("iou_thres", [0.3, 0.65])
def test_random_matches_reference(seed, iou_thres):
    p = random_prediction(seed=seed)
    for agnostic in (False, True):
        assert_same(non_max_suppression(p, 0.05, iou_thres, agnostic=agnostic),
                    reference_nms(p, 0.05, iou_thres, agnostic=agnostic))


def test_thousands_of_candidates_across_chunks():
    p = clustered_prediction(N=3000)
    for agnostic in (False, True):
        for max_det in (300, 5000):
            assert_same(non_max_suppression(p, 0.001, 0.65, agnostic=agnostic, max_det=max_det),
                        reference_nms(p, 0.001, 0.65, agnostic=agnostic, max_det=max_det))


def test_many_classes():
    p = random_prediction(B=1, N=800, nc=200, size=100.0, seed=3)
    assert_same(non_max_suppression(p, 0.0, 0.5, max_det=1000), reference_nms(p, 0.0, 0.5, max_det=1000))


def test_identical_boxes_keep_the_first_of_each_class():
    nc = 3
    rows = [one_box(50, 50, 20, 20, 0.9, c, nc) for c in (0, 1, 0, 1, 2, 0)]
    p = torch.stack(rows)[None]  # equal scores, equal boxes
    out = non_max_suppression(p, 0.1, 0.65)[0]
    assert out[:, 5].tolist() == [0.0, 1.0, 2.0]  # one per class, in anchor order (0, 1, 4)
    assert_same([out], reference_nms(p, 0.1, 0.65))
    assert non_max_suppression(p, 0.1, 0.65, agnostic=True)[0].shape == (1, 6)


def test_zero_area_boxes_never_suppress():
    nc = 1
    rows = [one_box(10, 10, 0, 0, 0.9, 0, nc), one_box(10, 10, 0, 0, 0.8, 0, nc),
            one_box(10, 10, 0, 6, 0.7, 0, nc), one_box(10, 10, 6, 6, 0.6, 0, nc)]
    p = torch.stack(rows)[None]
    out = non_max_suppression(p, 0.1, 0.1)[0]
    assert out.shape == (4, 6)
    assert_same([out], reference_nms(p, 0.1, 0.1))


def test_suppression_chain_is_greedy():
    """Each box overlaps its neighbour (IoU 0.667) but not the one after (0.43): greedy keeps every
    other box, which needs the chain to be followed, not a single "suppressed by anything" pass."""
    nc, n = 1, 700  # longer than one chunk
    rows = [one_box(4.0 * i, 50, 20, 20, 1.0 - i / 1000, 0, nc) for i in range(n)]
    p = torch.stack(rows)[None]
    out = non_max_suppression(p, 0.1, 0.65, max_det=n)[0]
    torch.testing.assert_close(out[:, 0], torch.arange(0, n, 2).float() * 4 - 10)
    assert_same([out], reference_nms(p, 0.1, 0.65, max_det=n))


def test_nms_small_chunks_match_one_chunk():
    p = clustered_prediction(N=500, nc=2, seed=5)[0]
    boxes, scores, cls = cxcywh_to_xyxy(p[:, :4]), p[:, 4], p[:, 5:].argmax(1)
    whole = nms(boxes, scores, 0.5, cls, chunk=10_000)
    for chunk in (1, 7, 64):
        assert torch.equal(nms(boxes, scores, 0.5, cls, chunk=chunk), whole)


def test_classes_are_kept_apart_exactly_at_large_and_negative_coordinates():
    """torchvision's offset trick (class * (max + 1)) lets classes overlap when boxes reach below 0."""
    nc = 80
    rows = [one_box(-40, -40, 100, 100, 0.9, 0, nc), one_box(-40, -40, 100, 100, 0.8, 1, nc),
            one_box(1e5, 1e5, 10, 10, 0.7, 79, nc), one_box(1e5 + 0.5, 1e5, 10, 10, 0.6, 79, nc)]
    p = torch.stack(rows)[None]
    out = non_max_suppression(p, 0.1, 0.5)[0]
    assert out[:, 4].tolist() == pytest.approx([0.9, 0.8, 0.7])


def test_agnostic_vs_class_aware():
    nc = 2
    p = torch.stack([one_box(50, 50, 20, 20, 0.9, 0, nc), one_box(51, 50, 20, 20, 0.8, 1, nc)])[None]
    assert non_max_suppression(p, 0.1, 0.5)[0].shape == (2, 6)
    out = non_max_suppression(p, 0.1, 0.5, agnostic=True)[0]
    assert out.shape == (1, 6) and out[0, 5] == 0


def test_conf_filter_is_inclusive_and_uses_obj_times_class():
    nc = 2
    p = torch.zeros(1, 3, 5 + nc)
    p[0, :, :4] = torch.tensor([[10.0, 10, 4, 4], [100, 100, 4, 4], [200, 200, 4, 4]])
    p[0, :, 4] = torch.tensor([0.5, 0.5, 0.5])
    p[0, :, 5:] = torch.tensor([[0.2, 0.5], [0.5, 0.1], [0.49, 0.3]])  # scores 0.25, 0.25, 0.245
    out = non_max_suppression(p, 0.25, 0.65)[0]
    assert out.shape == (2, 6)
    assert out[:, 4].tolist() == [0.25, 0.25] and out[:, 5].tolist() == [1.0, 0.0]
    torch.testing.assert_close(out[0, :4], torch.tensor([8.0, 8, 12, 12]))


def test_max_det_keeps_the_best():
    p = random_prediction(B=1, N=1000, nc=3, size=2000.0, wh=(2.0, 5.0))
    out = non_max_suppression(p, 0.0, 0.65, max_det=50)[0]
    assert out.shape == (50, 6)
    assert_same([out], reference_nms(p, 0.0, 0.65, max_det=50))


def test_classes_filter():
    p = random_prediction(B=2, N=200, nc=5, seed=7)
    out = non_max_suppression(p, 0.05, 0.5, classes=[1, 3])
    assert all(set(o[:, 5].tolist()) <= {1.0, 3.0} for o in out)
    assert_same(out, reference_nms(p, 0.05, 0.5, classes=[1, 3]))


def test_max_nms_caps_candidates_to_the_best_scored():
    p = random_prediction(B=1, N=400, nc=2, size=5000.0, wh=(2.0, 3.0), seed=2)
    out = non_max_suppression(p, 0.0, 0.65, max_det=1000, max_nms=40)[0]
    assert out.shape == (40, 6)
    assert_same([out], reference_nms(p, 0.0, 0.65, max_det=1000)[0][None, :40])


def test_empty_inputs():
    assert non_max_suppression(torch.zeros(0, 10, 7)) == []
    out = non_max_suppression(torch.zeros(2, 0, 7))
    assert [o.shape for o in out] == [(0, 6), (0, 6)]
    out = non_max_suppression(torch.zeros(1, 50, 7), conf_thres=0.01)  # all scores 0 < conf
    assert out[0].shape == (0, 6)


def test_dtype_and_float16():
    p = random_prediction(B=1, N=100, nc=2, seed=1)
    out = non_max_suppression(p.double(), 0.05)[0]
    assert out.dtype == torch.float64
    assert non_max_suppression(p.half(), 0.05)[0].dtype == torch.float16


@pytest.mark.parametrize("bad, message", [
    (dict(prediction=torch.zeros(10, 7)), r"\[B, N, 5 \+ nc\].*\(10, 7\)"),
    (dict(prediction=torch.zeros(1, 10, 5)), r"nc >= 1, got \(1, 10, 5\)"),
    (dict(conf_thres=1.5), r"conf_thres must be in \[0, 1\], got 1.5"),
    (dict(iou_thres=-0.1), r"iou_thres must be in \[0, 1\], got -0.1"),
    (dict(max_det=0), r"max_det must be >= 1, got 0"),
])
def test_errors_name_the_value(bad, message):
    kwargs = dict(prediction=torch.zeros(1, 10, 7), **{k: v for k, v in bad.items() if k != "prediction"})
    if "prediction" in bad:
        kwargs["prediction"] = bad["prediction"]
    with pytest.raises(ValueError, match=message):
        non_max_suppression(**kwargs)
