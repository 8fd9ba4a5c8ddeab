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
    a, b = a.unsqueeze(-2), b.unsqueeze(-3)  # [..., N, 1, 4], [..., 1, M, 4]
    tl = torch.max(a[..., :2] - a[..., 2:] / 2, b[..., :2] - b[..., 2:] / 2)
    br = torch.min(a[..., :2] + a[..., 2:] / 2, b[..., :2] + b[..., 2:] / 2)
    area_a = a[..., 2] * a[..., 3]
    area_b = b[..., 2] * b[..., 3]
    overlap = (tl < br).all(-1)
    area_i = (br[..., 0] - tl[..., 0]) * (br[..., 1] - tl[..., 1]) * overlap
    return torch.nan_to_num(area_i / (area_a + area_b - area_i), nan=0.0)


def iou_cxcywh(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-16) -> torch.Tensor:
    """Elementwise IoU of matching rows [..., 4] cxcywh; official IOUloss arithmetic (eps 1e-16)."""
    tl = torch.max(pred[..., :2] - pred[..., 2:] / 2, target[..., :2] - target[..., 2:] / 2)
    br = torch.min(pred[..., :2] + pred[..., 2:] / 2, target[..., :2] + target[..., 2:] / 2)
    area_p = pred[..., 2] * pred[..., 3]
    area_g = target[..., 2] * target[..., 3]
    overlap = (tl < br).to(tl.dtype).prod(dim=-1)
    area_i = (br - tl).prod(dim=-1) * overlap
    return area_i / (area_p + area_g - area_i + eps)


def giou_cxcywh(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-16) -> torch.Tensor:
    """Elementwise generalised IoU of matching rows [..., 4] cxcywh, clamped to [-1, 1] as official."""
    iou = iou_cxcywh(pred, target, eps)
    c_tl = torch.min(pred[..., :2] - pred[..., 2:] / 2, target[..., :2] - target[..., 2:] / 2)
    c_br = torch.max(pred[..., :2] + pred[..., 2:] / 2, target[..., :2] + target[..., 2:] / 2)
    area_c = (c_br - c_tl).prod(dim=-1)
    area_p = pred[..., 2] * pred[..., 3]
    area_g = target[..., 2] * target[..., 3]
    tl = torch.max(pred[..., :2] - pred[..., 2:] / 2, target[..., :2] - target[..., 2:] / 2)
    br = torch.min(pred[..., :2] + pred[..., 2:] / 2, target[..., :2] + target[..., 2:] / 2)
    area_i = (br - tl).prod(dim=-1) * (tl < br).to(tl.dtype).prod(dim=-1)
    area_u = area_p + area_g - area_i
    giou = iou - (area_c - area_u) / area_c.clamp(eps)
    return giou.clamp(min=-1.0, max=1.0)
