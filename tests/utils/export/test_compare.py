"""utils/export/compare.py: how close a converted model is to torch: detection agreement on hand-made
detections, every figure at its ideal for torch itself, a wrong output seen."""
import pytest
import torch

from tests.support import image_batch, varied_model
from utils.export.compare import compare_with_torch, detection_agreement
from utils.export.layouts import ExportModel
from utils.export.rewrite import prepare_for_export

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model():
    return varied_model("models/yoloxn.yaml")


def dets(*rows):
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 6)  # x1, y1, x2, y2, score, class


def test_agreement_matches_same_class_by_iou_one_to_one():
    ref = [dets([0, 0, 10, 10, 0.9, 0], [20, 20, 30, 30, 0.8, 1], [0, 0, 10, 10, 0.7, 0], [50, 50, 60, 60, 0.6, 2])]
    got = [dets([1, 0, 11, 10, 0.9, 0],  # IoU 9/11 with the first
                [20, 20, 30, 30, 0.8, 2],  # right box, wrong class
                [50, 54, 60, 64, 0.5, 2])]  # IoU 6/14 < 0.5
    a = detection_agreement(ref, got)
    # the first ref takes the only class-0 box; the third (same box, class 0) finds it taken
    assert (a.n_ref, a.n_got, a.matched) == (4, 3, 1) and a.share == 0.25
    assert a.mean_iou == pytest.approx(9 / 11)
    assert "25.0% of torch's 4 found again (same class, IoU >= 0.5; mean IoU 0.818); the converted model gave 3" \
        in a.line()


def test_agreement_top_k_and_empty():
    ref = [dets(*[[i, 0, i + 5, 5, 1 - i / 100, 0] for i in range(0, 60, 6)]), dets()]
    got = [ref[0].flip(0)[:8], dets()]  # ref's ten boxes but its best two, in reverse order
    a = detection_agreement(ref, got, top_k=4)  # ref's best 4 are looked for among all of got's
    assert (a.n_ref, a.n_got, a.matched) == (4, 8, 2)
    assert detection_agreement([dets()], [dets()]).share == 1.0  # nothing to find, nothing found
    assert detection_agreement([dets()], [dets([0, 0, 1, 1, 0.5, 0])]).share == 0.0


@pytest.mark.parametrize("layout", ["per-level", "split"])
def test_compare_with_torch_on_itself(model, layout):
    wrapped = ExportModel(prepare_for_export(model), layout).eval()

    def run(batch):
        with torch.no_grad():
            return [t.numpy() for t in wrapped(torch.from_numpy(batch))]

    images = image_batch(3).numpy()
    c = compare_with_torch(run, wrapped, model, images, "self.xml", "torch")
    assert [n for n, *_ in c.lines] == wrapped.format.names + ["decoded boxes (px)", "decoded scores"]
    assert c.cosine > 0.99999 and c.n_images == 3
    assert c.agreement.n_ref == 300 and c.agreement.share == 1.0 and c.agreement.mean_iou == pytest.approx(1.0)
    assert "self.xml (torch) vs fp32 torch, 3 images:" in c.text()


def test_compare_with_torch_sees_a_wrong_output(model):
    """A runtime that swaps two levels' class maps: cosine and detections drop, shapes are checked."""
    wrapped = ExportModel(prepare_for_export(model), "per-level").eval()

    def run(batch):
        with torch.no_grad():
            outs = [t.numpy() for t in wrapped(torch.from_numpy(batch))]
        outs[2] = outs[2][..., ::-1, :].copy()  # cls_s8 upside down
        return outs

    c = compare_with_torch(run, wrapped, model, image_batch(2).numpy(), "x", "x")
    cos = {n: v for n, _, _, v in c.lines}
    assert cos["reg_s8"] > 0.99999 and cos["cls_s8"] < 0.999 and c.agreement.share < 1.0
    with pytest.raises(ValueError, match=r"cls_s8: the converted model gives shape \(2, 3, 20, 10\), torch gives "
                                         r"\(2, 3, 20, 20\)"):
        compare_with_torch(lambda b: [o[..., :10] if k == 2 else o for k, o in enumerate(run(b))], wrapped, model,
                           image_batch(2).numpy(), "x", "x")
