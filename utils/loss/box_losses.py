"""Box regression losses of matched rows (prediction, target), both [N, 4] cxcywh: the hyp ``iou_loss``.

    loss = BOX_LOSSES[hyp["iou_loss"]](pred, target)   # [N], summed and normalised by the caller

- iou: 1 - IoU^2, official YOLOX's default.
- giou: 1 - GIoU clamped to [-1, 1], official YOLOX's giou (the enclosing area minus the union).
- diou, ciou, eiou: 1 - (IoU minus the penalty) clamped to [-1, 1], as EasyCV's YOLOX_IOULoss
  writes them: 1e-7 on the enclosing diagonal and sides; CIoU's alpha without gradient.
- siou: EasyCV's SIoU: 1 - IoU + (distance cost + shape cost) / 2, with the angle cost
  2 |dx| |dy| / (dx^2 + dy^2) setting the distance cost's exponent and theta 4 for the shape cost.
  Where the centres coincide EasyCV divides 0 by 0 (NaN); here the denominator has a floor of 1e-16,
  which gives angle cost 0 there.
- easycv_giou: EasyCV's own 'giou', which subtracts (enclosing area - intersection) / enclosing
  area instead of the union's share: only to reproduce EasyCV's numbers.
"""
from __future__ import annotations

import math

import torch

EPS = 1e-16  # official YOLOX's IoU arithmetic
EPS_DIAG = 1e-7  # EasyCV's on the enclosing box's squared diagonal and sides


def _corners(b: torch.Tensor):
    return b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2


def _parts(pred: torch.Tensor, target: torch.Tensor):
    """(iou, intersection, union, enclosing box top-left, bottom-right) of matched rows."""
    p_tl, p_br = _corners(pred)
    t_tl, t_br = _corners(target)
    tl, br = torch.max(p_tl, t_tl), torch.min(p_br, t_br)
    area_i = (br - tl).prod(dim=1) * (tl < br).to(tl.dtype).prod(dim=1)
    area_u = pred[:, 2:].prod(dim=1) + target[:, 2:].prod(dim=1) - area_i
    iou = area_i / (area_u + EPS)
    return iou, area_i, area_u, torch.min(p_tl, t_tl), torch.max(p_br, t_br)


def _centre_term(pred, target, c_tl, c_br):
    """Squared centre distance over the enclosing box's squared diagonal (DIoU's penalty)."""
    diag = ((c_br - c_tl) ** 2).sum(dim=1) + EPS_DIAG
    return ((pred[:, :2] - target[:, :2]) ** 2).sum(dim=1) / diag


def iou_cxcywh(pred, target):
    """IoU of matched rows [N, 4] cxcywh, official YOLOX's IOUloss arithmetic (eps 1e-16)."""
    return _parts(pred, target)[0]


def iou_loss(pred, target):
    return 1 - iou_cxcywh(pred, target) ** 2


def giou_loss(pred, target):
    iou, _, area_u, c_tl, c_br = _parts(pred, target)
    area_c = (c_br - c_tl).prod(dim=1)
    return 1 - (iou - (area_c - area_u) / area_c.clamp(EPS)).clamp(-1.0, 1.0)


def easycv_giou_loss(pred, target):
    iou, area_i, _, c_tl, c_br = _parts(pred, target)
    area_c = (c_br - c_tl).prod(dim=1)
    return 1 - (iou - (area_c - area_i) / area_c.clamp(EPS)).clamp(-1.0, 1.0)


def diou_loss(pred, target):
    iou, _, _, c_tl, c_br = _parts(pred, target)
    return 1 - (iou - _centre_term(pred, target, c_tl, c_br)).clamp(-1.0, 1.0)


def ciou_loss(pred, target):
    iou, _, _, c_tl, c_br = _parts(pred, target)
    v = (4 / math.pi ** 2) * (torch.atan(target[:, 2] / target[:, 3].clamp(min=EPS_DIAG))
                              - torch.atan(pred[:, 2] / pred[:, 3].clamp(min=EPS_DIAG))) ** 2
    with torch.no_grad():
        alpha = v / ((1 + EPS_DIAG) - iou + v)
    return 1 - (iou - (_centre_term(pred, target, c_tl, c_br) + alpha * v)).clamp(-1.0, 1.0)


def eiou_loss(pred, target):
    iou, _, _, c_tl, c_br = _parts(pred, target)
    c_wh2 = (c_br - c_tl) ** 2 + EPS_DIAG  # [N, 2] enclosing width^2, height^2
    side = ((pred[:, 2:] - target[:, 2:]) ** 2 / c_wh2).sum(dim=1)
    return 1 - (iou - _centre_term(pred, target, c_tl, c_br) - side).clamp(-1.0, 1.0)


def siou_loss(pred, target):
    iou = _parts(pred, target)[0]
    d = (pred[:, :2] - target[:, :2]).abs()  # [N, 2] centre offsets |dx|, |dy|
    angle = 2 * d[:, 0] * d[:, 1] / (d ** 2).sum(dim=1).clamp(min=EPS)
    gamma = 2 - angle
    c_d = d + (pred[:, 2:] + target[:, 2:]) / 2  # [N, 2] enclosing width, height
    rho = (d / c_d) ** 2
    dist = 2 - torch.exp(-gamma * rho[:, 0]) - torch.exp(-gamma * rho[:, 1])
    w = (pred[:, 2:] - target[:, 2:]).abs() / torch.max(pred[:, 2:], target[:, 2:])  # [N, 2]
    shape = ((1 - torch.exp(-w)) ** 4).sum(dim=1)
    return 1 - iou + (dist + shape) / 2


BOX_LOSSES = {"iou": iou_loss, "giou": giou_loss, "siou": siou_loss, "diou": diou_loss, "ciou": ciou_loss,
              "eiou": eiou_loss, "easycv_giou": easycv_giou_loss}
