"""utils/boxes.py (and the matched-row IoU and GIoU of utils/loss/box_losses.py): every IoU variant and
conversion against boxes computed by hand."""
import pytest
import torch

from utils.boxes import (box_area, box_iou_xyxy, cxcywh_to_xyxy, paired_iou_cxcywh, pairwise_iou_cxcywh,
                         xyxy_to_cxcywh, xyxy_to_xywh)
from utils.loss.box_losses import giou_loss, iou_cxcywh


def giou_cxcywh(a, b):
    return 1 - giou_loss(a, b)

# cxcywh boxes and, by hand, their IoU and GIoU with A = (5, 5, 10, 10), i.e. corners (0, 0)-(10, 10):
A = [5.0, 5.0, 10.0, 10.0]
CASES = {  # name: (box, IoU, GIoU)
    "overlap": ([10.0, 10.0, 10.0, 10.0], 25 / 175, 25 / 175 - (225 - 175) / 225),  # (5, 5)-(15, 15): hull 15 x 15
    "disjoint": ([30.0, 5.0, 10.0, 10.0], 0.0, -(350 - 200) / 350),  # (25, 0)-(35, 10): hull 35 x 10
    "same": (A, 1.0, 1.0),
    "inside": ([5.0, 5.0, 4.0, 4.0], 16 / 100, 16 / 100),  # (3, 3)-(7, 7): the hull is A
    "touching": ([15.0, 5.0, 10.0, 10.0], 0.0, 0.0),  # shares an edge: no overlap, hull = union
}


@pytest.mark.parametrize("name", list(CASES))
def test_iou_and_giou_hand_computed(name):
    box, iou, giou = CASES[name]
    a, b = torch.tensor([A]), torch.tensor([box])
    assert iou_cxcywh(a, b).item() == pytest.approx(iou, abs=1e-7)
    assert giou_cxcywh(a, b).item() == pytest.approx(giou, abs=1e-7)
    assert paired_iou_cxcywh(a, b).item() == pytest.approx(iou, abs=1e-7)
    assert box_iou_xyxy(cxcywh_to_xyxy(a), cxcywh_to_xyxy(b)).item() == pytest.approx(iou, abs=1e-7)


def test_pairwise_is_paired_on_every_pair():
    boxes = torch.tensor([A] + [c[0] for c in CASES.values()])  # [6, 4]
    matrix = pairwise_iou_cxcywh(boxes[:2], boxes)  # [2, 6]
    assert matrix.shape == (2, 6)
    assert matrix[0].tolist() == pytest.approx([1.0] + [c[1] for c in CASES.values()], abs=1e-7)
    for i in range(2):
        for j in range(6):
            assert torch.equal(matrix[i, j], paired_iou_cxcywh(boxes[i], boxes[j]))  # bit for bit
    batched = pairwise_iou_cxcywh(boxes[None, :2].expand(3, -1, -1), boxes[None].expand(3, -1, -1))  # [3, 2, 6]
    assert torch.equal(batched[2], matrix)


def test_empty_boxes_give_zero_not_nan():
    empty = torch.tensor([[5.0, 5.0, 0.0, 0.0]])
    assert pairwise_iou_cxcywh(empty, empty).item() == 0.0
    assert iou_cxcywh(empty, empty).item() == 0.0  # eps in the denominator (official's arithmetic)
    assert giou_cxcywh(torch.tensor([A]), empty).isfinite().all()
    assert box_iou_xyxy(torch.zeros(1, 4), torch.zeros(1, 4)).item() == 0.0


def test_giou_is_clamped_to_its_range():
    far = giou_cxcywh(torch.tensor([[0.0, 0.0, 1.0, 1.0]]), torch.tensor([[1e6, 1e6, 1.0, 1.0]]))
    assert -1.0 <= far.item() < -0.99


def test_conversions_hand_computed():
    cxcywh = torch.tensor([[10.0, 20.0, 4.0, 6.0]])
    xyxy = torch.tensor([[8.0, 17.0, 12.0, 23.0]])
    assert torch.equal(cxcywh_to_xyxy(cxcywh), xyxy) and torch.equal(xyxy_to_cxcywh(xyxy), cxcywh)
    assert xyxy_to_xywh(xyxy).tolist() == [[8.0, 17.0, 4.0, 6.0]]
    assert box_area(xyxy).tolist() == [24.0]


def test_box_iou_xyxy_hand_computed():
    a = torch.tensor([[0.0, 0, 2, 2], [0, 0, 0, 0], [5, 5, 5, 9]])
    b = torch.tensor([[1.0, 1, 3, 3], [0, 0, 0, 0], [0, 0, 2, 2]])
    iou = box_iou_xyxy(a, b)
    assert iou.shape == (3, 3)
    assert iou[0, 0].item() == pytest.approx(1 / 7)
    assert iou[0, 2].item() == 1.0
    assert iou[1, 1].item() == 0.0  # two empty boxes: 0, not NaN
    assert iou[2, 0].item() == 0.0 and not iou.isnan().any()
