"""Plain per-image references for the loss tests: official YOLOX's definitions, followed literally.

``reference_losses`` loops over images and GTs like the official code (one topk per GT, one argmin
per contested anchor), for both priors; ``official_losses`` calls the official package's
``YOLOXHead.get_losses`` (yolox 0.3.0 implements the 2021-2022 ``box_or_center`` prior; the current code,
pixeltable-yolox, the ``center`` prior: tests/yolox_current_reference.py runs it in its own environment).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def flatten_preds(preds, strides):
    """Train-mode outputs -> (raw [B, A, 5+nc], decoded outputs [B, A, 5+nc], grid x, grid y, stride [A])."""
    raw = torch.cat([p.flatten(2) for p in preds], 2).permute(0, 2, 1).float()
    xs, ys, ss = [], [], []
    for p, s in zip(preds, strides):
        h, w = p.shape[2:]
        yv, xv = torch.meshgrid(torch.arange(h, device=p.device), torch.arange(w, device=p.device), indexing="ij")
        xs.append(xv.reshape(-1).float())
        ys.append(yv.reshape(-1).float())
        ss.append(torch.full((h * w,), float(s), device=p.device))
    x, y, s = torch.cat(xs), torch.cat(ys), torch.cat(ss)
    decoded = torch.cat(((raw[..., 0:1] + x[:, None]) * s[:, None], (raw[..., 1:2] + y[:, None]) * s[:, None],
                         torch.exp(raw[..., 2:4]) * s[:, None], raw[..., 4:]), -1)
    return raw, decoded, x, y, s


def labels_per_image(targets, batch, in_w, in_h):
    """[M, 6] normalised -> list of (classes [G], boxes [G, 4] pixels) per image, in target order."""
    out = []
    scale = torch.tensor([in_w, in_h, in_w, in_h], dtype=torch.float32, device=targets.device)
    for b in range(batch):
        t = targets[targets[:, 0] == b]
        out.append((t[:, 1].long(), t[:, 2:6].float() * scale))
    return out


def bboxes_iou_cxcywh(a, b):
    tl = torch.max(a[:, None, :2] - a[:, None, 2:] / 2, b[:, :2] - b[:, 2:] / 2)
    br = torch.min(a[:, None, :2] + a[:, None, 2:] / 2, b[:, :2] + b[:, 2:] / 2)
    area_a, area_b = torch.prod(a[:, 2:], 1), torch.prod(b[:, 2:], 1)
    en = (tl < br).type(tl.type()).prod(dim=2)
    area_i = torch.prod(br - tl, 2) * en
    return area_i / (area_a[:, None] + area_b - area_i)


def assign_image(gt_boxes, gt_cls, boxes, cls, obj, x, y, s, nc, prior):
    """One image, the official way. Returns (fg [A] bool, matched gt [F], matched iou [F], cost, candidates)."""
    cx, cy = (x + 0.5) * s, (y + 0.5) * s
    gx, gy = gt_boxes[:, 0:1], gt_boxes[:, 1:2]
    radius = 1.5 if prior == "center" else 2.5
    d = s[None] * radius
    in_center = torch.stack([cx - (gx - d), cy - (gy - d), (gx + d) - cx, (gy + d) - cy], 2).min(-1).values > 0
    if prior == "center":
        cand = in_center.any(0)
        inside = in_center[:, cand]
        penalty = 1e6
    else:
        hw, hh = 0.5 * gt_boxes[:, 2:3], 0.5 * gt_boxes[:, 3:4]
        in_box = torch.stack([cx - (gx - hw), cy - (gy - hh), (gx + hw) - cx, (gy + hh) - cy], 2).min(-1).values > 0
        cand = in_box.any(0) | in_center.any(0)
        inside = in_box[:, cand] & in_center[:, cand]
        penalty = 1e5
    A = boxes.shape[0]
    fg = torch.zeros(A, dtype=torch.bool)
    if cand.sum() == 0:
        return fg, torch.zeros(0, dtype=torch.long), torch.zeros(0), None, cand
    ious = bboxes_iou_cxcywh(gt_boxes, boxes[cand])
    p = (cls[cand].float().sigmoid() * obj[cand].float().sigmoid()[:, None]).sqrt()
    onehot = F.one_hot(gt_cls, nc).float()
    cls_cost = F.binary_cross_entropy(p[None].repeat(len(gt_cls), 1, 1),
                                      onehot[:, None].repeat(1, p.shape[0], 1), reduction="none").sum(-1)
    cost = cls_cost + 3.0 * -torch.log(ious + 1e-8) + penalty * (~inside)
    M = cost.shape[1]
    matching = torch.zeros_like(cost, dtype=torch.uint8)
    ks = torch.clamp(torch.topk(ious, min(10, M), dim=1).values.sum(1).int(), min=1).tolist()
    for g, k in enumerate(ks):
        matching[g, torch.topk(cost[g], k=k, largest=False).indices] = 1
    multi = matching.sum(0) > 1
    if multi.any():
        argmin = cost[:, multi].min(0).indices
        matching[:, multi] = 0
        matching[argmin, multi] = 1
    fg_cand = matching.sum(0) > 0
    fg[cand.nonzero()[:, 0][fg_cand]] = True
    matched = matching[:, fg_cand].argmax(0)
    matched_iou = (matching * ious).sum(0)[fg_cand]
    return fg, matched, matched_iou, cost, cand


def reference_losses(preds, targets, strides, nc, prior="center", use_l1=False, iou_loss="iou"):
    """Loss items (5*iou, obj, cls, l1) and the per-image assignments, computed per image and per GT."""
    raw, decoded, x, y, s = flatten_preds(preds, strides)
    B = raw.shape[0]
    in_h, in_w = preds[0].shape[2] * strides[0], preds[0].shape[3] * strides[0]
    fgs, reg_t, cls_t, l1_t, per_image = [], [], [], [], []
    for b, (gt_cls, gt_boxes) in enumerate(labels_per_image(targets, B, in_w, in_h)):
        if len(gt_cls) == 0:
            fg, matched, miou = torch.zeros(raw.shape[1], dtype=torch.bool), torch.zeros(0, dtype=torch.long), torch.zeros(0)
        else:
            fg, matched, miou, _, _ = assign_image(gt_boxes, gt_cls, decoded[b, :, :4], raw[b, :, 5:],
                                                   raw[b, :, 4], x, y, s, nc, prior)
        per_image.append((fg, matched))
        fgs.append(fg)
        boxes = gt_boxes[matched] if len(gt_cls) else torch.zeros(0, 4)
        reg_t.append(boxes)
        cls_t.append(F.one_hot(gt_cls[matched], nc).float() * miou[:, None] if len(gt_cls) else torch.zeros(0, nc))
        sf = s[fg][:, None]
        l1_t.append(torch.cat((boxes[:, 0:1] / sf - x[fg][:, None], boxes[:, 1:2] / sf - y[fg][:, None],
                               torch.log(boxes[:, 2:4] / sf + 1e-8)), 1))
    fg = torch.cat(fgs)
    num_fg = max(int(fg.sum()), 1)
    pred_boxes = decoded[..., :4].reshape(-1, 4)[fg]
    target = torch.cat(reg_t)
    tl = torch.max(pred_boxes[:, :2] - pred_boxes[:, 2:] / 2, target[:, :2] - target[:, 2:] / 2)
    br = torch.min(pred_boxes[:, :2] + pred_boxes[:, 2:] / 2, target[:, :2] + target[:, 2:] / 2)
    area_i = torch.prod(br - tl, 1) * (tl < br).float().prod(1)
    area_u = torch.prod(pred_boxes[:, 2:], 1) + torch.prod(target[:, 2:], 1) - area_i
    iou = area_i / (area_u + 1e-16)
    if iou_loss == "iou":
        l_iou = 1 - iou ** 2
    else:
        c_tl = torch.min(pred_boxes[:, :2] - pred_boxes[:, 2:] / 2, target[:, :2] - target[:, 2:] / 2)
        c_br = torch.max(pred_boxes[:, :2] + pred_boxes[:, 2:] / 2, target[:, :2] + target[:, 2:] / 2)
        area_c = torch.prod(c_br - c_tl, 1)
        l_iou = 1 - (iou - (area_c - area_u) / area_c.clamp(1e-16)).clamp(-1.0, 1.0)
    loss_iou = l_iou.sum() / num_fg
    loss_obj = F.binary_cross_entropy_with_logits(raw[..., 4].reshape(-1), fg.float(), reduction="sum") / num_fg
    loss_cls = F.binary_cross_entropy_with_logits(raw[..., 5:].reshape(-1, nc)[fg], torch.cat(cls_t), reduction="sum") / num_fg
    loss_l1 = (raw[..., :4].reshape(-1, 4)[fg] - torch.cat(l1_t)).abs().sum() / num_fg if use_l1 else torch.tensor(0.0)
    items = torch.stack([5.0 * loss_iou, loss_obj, loss_cls, loss_l1])
    return items, per_image


def official_losses(preds, targets, strides, nc, use_l1=False, head_class=None):
    """Loss items from the official package's YOLOXHead.get_losses (yolox 0.3.0: box_or_center; the current
    code, pixeltable-yolox's YoloxHead: center)."""
    head, raw, decoded, x, y, s, labels = _official_inputs(preds, targets, strides, nc, head_class)
    head.use_l1 = use_l1
    sizes = [p.shape[2] * p.shape[3] for p in preds]
    split = lambda t: list(torch.split(t[None], sizes, dim=1))  # noqa: E731
    origin = list(torch.split(raw[..., :4], sizes, dim=1))
    out = head.get_losses(None, split(x), split(y), split(s), labels, decoded, origin, torch.float32)
    loss, iou, obj, cls, l1 = out[:5]
    return torch.stack([torch.as_tensor(v, dtype=torch.float32) for v in (iou, obj, cls, l1)])


def official_assignments(preds, targets, strides, nc, head_class=None):
    """Per image (fg mask [A], matched GT per foreground anchor) from the official head's get_assignments,
    called as its get_losses calls it (the current code's signature: pixeltable-yolox's YoloxHead)."""
    head, raw, decoded, x, y, s, labels = _official_inputs(preds, targets, strides, nc, head_class)
    out = []
    for b in range(raw.shape[0]):
        num_gt = int((labels[b].sum(1) > 0).sum())
        if num_gt == 0:
            out.append((torch.zeros(raw.shape[1], dtype=torch.bool), torch.zeros(0, dtype=torch.long)))
            continue
        _, fg, _, matched, _ = head.get_assignments(b, num_gt, labels[b, :num_gt, 1:5], labels[b, :num_gt, 0],
                                                    decoded[b, :, :4], s[None], x[None], y[None], decoded[..., 5:],
                                                    decoded[..., 4:5])
        out.append((fg, matched))
    return out


def _official_inputs(preds, targets, strides, nc, head_class):
    if head_class is None:
        from yolox.models import YOLOXHead as head_class

    head = head_class(nc, width=0.25, strides=list(strides))
    raw, decoded, x, y, s = flatten_preds(preds, strides)
    B = raw.shape[0]
    in_h, in_w = preds[0].shape[2] * strides[0], preds[0].shape[3] * strides[0]
    per_image = labels_per_image(targets, B, in_w, in_h)
    max_g = max([len(c) for c, _ in per_image] + [1])
    labels = torch.zeros(B, max_g, 5, device=raw.device)
    for b, (c, boxes) in enumerate(per_image):
        labels[b, :len(c), 0] = c.float()
        labels[b, :len(c), 1:] = boxes
    return head, raw, decoded, x, y, s, labels
