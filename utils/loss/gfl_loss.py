"""ComputeGFLLoss: DAMO-YOLO's loss for ZeroHead (GFL outputs), with batched AlignOTA assignment.

    compute_loss = ComputeGFLLoss(model, hyp)
    loss, loss_items = compute_loss(preds, targets)  # targets [M, 6] = (img, cls, cx, cy, w, h), normalised

As DAMO's ZeroHead.loss computes it (modelscope 1.40.2), per batch:
  QFL  (beta 2) over every anchor and class: BCE(p, y) * |y - p|^2 with y the IoU of the anchor's box with
       its matched GT at that GT's class and 0 elsewhere, divided by N_pos, the positives averaged over the
       DDP ranks (at least 1);
  GIoU (weight 2) over the positives: (1 - GIoU) weighted by w = the detached highest class score of the
       anchor, divided by W = sum(w) averaged over the ranks (at least 1);
  DFL  (weight 0.25): per side the cross entropy of the bin logits with the two bins around the target
       distance (clamped to reg_max - 0.1 strides), weighted linearly and by w, divided by 4 W.
loss = QFL + 2 GIoU + 0.25 DFL; loss_items = (QFL, 2 GIoU, 0.25 DFL), detached, summing to loss. No
scaling by batch or world size: that is the trainer's business. The QFL is computed from the logits
(BCE with logits), which equals DAMO's BCE on probabilities where those are not saturated.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from utils.boxes import cxcywh_to_xyxy
from utils.grid import GridCache
from utils.loss.align_ota import AlignOTAResult, align_ota_assign
from utils.loss.targets import targets_in_pixels

QFL_BETA = 2.0
GIOU_WEIGHT = 2.0
DFL_WEIGHT = 0.25
GIOU_EPS = 1e-6  # DAMO's GIoULoss eps (union and enclosing area floors)
DFL_MARGIN = 0.1  # DAMO's bbox2distance eps: target distances stop 0.1 bins short of reg_max


class ComputeGFLLoss:
    item_names = ("qfl_loss", "giou_loss", "dfl_loss")  # loss_items, in order

    def __init__(self, model, hyp: dict | None = None):
        model = getattr(model, "module", model)  # DDP / DataParallel wrappers
        head = model.detect
        if head is None:
            raise ValueError("ComputeGFLLoss needs a model whose last layer is a detection head")
        self.nc = head.nc
        self.decoder = head.decoder  # GFLDecoder: the distances and boxes of the eval output
        self.reg_max = self.decoder.reg_max
        self.strides = [float(s) for s in model.stride]
        self.use_l1 = False  # the trainer sets it for the no-augmentation epochs; GFL has no L1 term
        self.assigner = align_ota_assign
        self.last_stats: dict = {}
        self._grids = GridCache()

    def __call__(self, preds: list[torch.Tensor], targets: torch.Tensor):
        """preds: per level [B, 4 (reg_max + 1) + nc, H, W] raw outputs; targets: [M, 6] normalised."""
        with torch.autocast(device_type=preds[0].device.type, enabled=False):  # the loss runs in fp32
            reg, cls, points, stride = self._predictions(preds)
            gt_img, gt_cls, gt_xyxy = self._targets(targets, preds)
            boxes = self._boxes(reg, points, stride)  # [B, A, 4] x1y1x2y2
            scores = cls.sigmoid()
            priors = torch.cat((points, stride, stride), 1)  # [A, 4] DAMO's (x, y, s, s)
            assignment = self.assigner(scores.detach(), boxes.detach(), priors, gt_xyxy, gt_cls, gt_img)
            return self._loss(reg, cls, scores, boxes, points, stride, gt_cls, gt_xyxy, assignment)

    def assign(self, preds: list[torch.Tensor], targets: torch.Tensor) -> AlignOTAResult:
        """The AlignOTA assignment this loss makes for these predictions and targets."""
        with torch.autocast(device_type=preds[0].device.type, enabled=False):
            reg, cls, points, stride = self._predictions(preds)
            gt_img, gt_cls, gt_xyxy = self._targets(targets, preds)
            boxes = self._boxes(reg, points, stride)
            return self.assigner(cls.sigmoid(), boxes, torch.cat((points, stride, stride), 1), gt_xyxy, gt_cls, gt_img)

    def _predictions(self, preds):
        """(box logits [B, A, 4 (R + 1)], class logits [B, A, nc], anchor points [A, 2] px, strides [A, 1])."""
        if len(preds) != len(self.strides):
            raise ValueError(f"expected {len(self.strides)} prediction levels, got {len(preds)}")
        grid, stride = self._grids([tuple(p.shape[2:]) for p in preds], self.strides, torch.float32, preds[0].device)
        raw = torch.cat([p.float().flatten(2) for p in preds], 2).permute(0, 2, 1)  # [B, A, 4 (R + 1) + nc]
        n_reg = 4 * (self.reg_max + 1)
        return raw[..., :n_reg], raw[..., n_reg:], grid * stride, stride

    def _boxes(self, reg, points, stride):
        d = self.decoder.distances(reg) * stride  # [B, A, 4] l, t, r, b in pixels
        return torch.cat((points - d[..., :2], points + d[..., 2:]), -1)

    def _loss(self, reg, cls, scores, boxes, points, stride, gt_cls, gt_xyxy, a: AlignOTAResult):
        fg = a.fg  # [B, A]
        rows = a.gt_index[fg]  # [F] matched GT of each positive, in anchor order
        n_pos = _mean_over_ranks(fg.sum().float()).clamp(min=1.0)
        quality = torch.zeros_like(cls)  # [B, A, nc] the QFL target: IoU at the matched class
        quality[fg] = F.one_hot(gt_cls[rows], self.nc).float() * a.iou[fg][:, None]
        modulator = (quality - scores).abs().pow(QFL_BETA)
        qfl = (F.binary_cross_entropy_with_logits(cls, quality, reduction="none") * modulator).sum() / n_pos

        w = scores.detach().max(-1).values[fg]  # [F]
        w_total = _mean_over_ranks(w.sum()).clamp(min=1.0)
        target = gt_xyxy[rows]  # [F, 4]
        giou = (w * (1.0 - _giou(boxes[fg], target))).sum() / w_total
        B = fg.shape[0]
        s, p = stride.expand(B, -1, -1)[fg], points.expand(B, -1, -1)[fg]  # [F, 1], [F, 2]
        dist_target = torch.cat((p - target[:, :2], target[:, 2:] - p), 1) / s  # [F, 4] in strides
        dfl = (_dfl(reg[fg].reshape(-1, self.reg_max + 1), dist_target.clamp(0, self.reg_max - DFL_MARGIN).reshape(-1))
               * w.repeat_interleave(4)).sum() / (4.0 * w_total)

        loss = qfl + GIOU_WEIGHT * giou + DFL_WEIGHT * dfl
        items = torch.stack((qfl, GIOU_WEIGHT * giou, DFL_WEIGHT * dfl)).detach()
        self.last_stats = {"num_fg": fg.sum().detach(), "num_gt": gt_xyxy.shape[0]}
        return loss, items

    def _targets(self, targets, preds):
        """[M, 6] normalised rows -> (image index [T], class [T], x1y1x2y2 pixels [T, 4]), sorted by image."""
        img, cls, cxcywh = targets_in_pixels(targets, preds, self.strides[0], self.nc)
        return img, cls, cxcywh_to_xyxy(cxcywh)


def _mean_over_ranks(t: torch.Tensor) -> torch.Tensor:
    """DAMO's reduce_mean: the value averaged over the DDP ranks (itself without DDP). Only in training steps
    (gradients on): validation losses run on rank 0 alone, under no_grad, and a collective there would wait
    for ranks that never join it."""
    if torch.is_grad_enabled() and dist.is_available() and dist.is_initialized():
        t = t.clone()
        dist.all_reduce(t.div_(dist.get_world_size()))
    return t


def _giou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """GIoU of aligned x1y1x2y2 boxes [N, 4] (mmdet's bbox_overlaps mode 'giou' with DAMO's eps)."""
    lt, rb = torch.max(a[:, :2], b[:, :2]), torch.min(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(1)
    area_a, area_b = (a[:, 2:] - a[:, :2]).prod(1), (b[:, 2:] - b[:, :2]).prod(1)
    union = (area_a + area_b - inter).clamp(min=GIOU_EPS)
    enclose = (torch.max(a[:, 2:], b[:, 2:]) - torch.min(a[:, :2], b[:, :2])).clamp(min=0).prod(1).clamp(min=GIOU_EPS)
    return inter / union - (enclose - union) / enclose


def _dfl(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Distribution focal loss [N] of bin logits [N, R + 1] against real-valued targets [N] in [0, R)."""
    left = target.long()
    right = left + 1
    return (F.cross_entropy(logits, left, reduction="none") * (right.float() - target)
            + F.cross_entropy(logits, right, reduction="none") * (target - left.float()))
