"""Small pure box functions (torch). Boxes are [..., 4]; cxcywh = (cx, cy, w, h), xyxy = corners."""
from __future__ import annotations

import torch


def cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    half = boxes[..., 2:] / 2
    return torch.cat((boxes[..., :2] - half, boxes[..., :2] + half), -1)


def xyxy_to_cxcywh(boxes: torch.Tensor) -> torch.Tensor:
    return torch.cat(((boxes[..., :2] + boxes[..., 2:]) / 2, boxes[..., 2:] - boxes[..., :2]), -1)


def box_area(boxes_xyxy: torch.Tensor) -> torch.Tensor:
    return (boxes_xyxy[..., 2] - boxes_xyxy[..., 0]) * (boxes_xyxy[..., 3] - boxes_xyxy[..., 1])


def pairwise_iou_cxcywh(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of every box in a [..., N, 4] with every box in b [..., M, 4], cxcywh -> [..., N, M].

    The same arithmetic, in the same order, as official YOLOX's ``bboxes_iou(xyxy=False)`` (no eps),
    so costs built on it match the official ones bit for bit. Pairs of two empty boxes give 0, not NaN.
    """
    return paired_iou_cxcywh(a.unsqueeze(-2), b.unsqueeze(-3))  # [..., N, 1, 4] x [..., 1, M, 4]


def paired_iou_cxcywh(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of matching rows a [..., 4] and b [..., 4], cxcywh -> [...].

    Shapes broadcast, so ``pairwise_iou_cxcywh`` is this function on [N, 1] x [1, M] views: both give
    bit-identical values for a pair.
    """
    tl = torch.max(a[..., :2] - a[..., 2:] / 2, b[..., :2] - b[..., 2:] / 2)
    br = torch.min(a[..., :2] + a[..., 2:] / 2, b[..., :2] + b[..., 2:] / 2)
    area_a = a[..., 2] * a[..., 3]
    area_b = b[..., 2] * b[..., 3]
    overlap = (tl < br).all(-1)
    area_i = (br[..., 0] - tl[..., 0]) * (br[..., 1] - tl[..., 1]) * overlap
    return torch.nan_to_num(area_i / (area_a + area_b - area_i), nan=0.0)


def box_iou_xyxy(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of every box in a [N, 4] with every box in b [M, 4], xyxy -> [N, M].

    torchvision's ``box_iou`` arithmetic (inter / (area_a + area_b - inter)); a pair whose union is
    empty (two zero-area boxes) gives 0, not NaN, so it never counts as an overlap.
    """
    area_a, area_b = box_area(a), box_area(b)  # [N], [M]
    tl = torch.max(a[:, None, :2], b[None, :, :2])  # [N, M, 2]
    br = torch.min(a[:, None, 2:], b[None, :, 2:])  # [N, M, 2]
    wh = (br - tl).clamp(min=0)  # [N, M, 2]
    inter = wh[..., 0] * wh[..., 1]  # [N, M]
    union = area_a[:, None] + area_b[None, :] - inter
    return torch.where(union > 0, inter / union, torch.zeros_like(inter))


def xyxy_to_xywh(boxes: torch.Tensor) -> torch.Tensor:
    """Corners [..., 4] -> COCO's (x, y, w, h) with (x, y) the top-left corner."""
    return torch.cat((boxes[..., :2], boxes[..., 2:] - boxes[..., :2]), -1)


def clip_boxes_xyxy(boxes: torch.Tensor, height: float, width: float) -> torch.Tensor:
    """xyxy boxes [..., 4] clipped to the image [0, width] x [0, height] (YOLOv5's clip_boxes); a new tensor."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack((x1.clamp(0, width), y1.clamp(0, height), x2.clamp(0, width), y2.clamp(0, height)), -1)
