"""ComputeXLoss: official YOLOX's loss on a YAML model's train-mode output, with batched SimOTA.

    compute_loss = ComputeXLoss(model, hyp)          # hyp: dict; missing keys take defaults
    compute_loss.use_l1 = True                       # the trainer's no-augmentation epochs
    loss, loss_items = compute_loss(preds, targets)  # targets [M, 6] = (img, cls, cx, cy, w, h), normalised
    assignment = compute_loss.assign(preds, targets) # the SimOTA assignment the loss makes (tests, benchmarks)

loss = 5 * iou + obj + cls + l1, each term summed and divided by max(foreground anchors in the
batch, 1); loss_items = (5 * iou, obj, cls, l1), detached, summing to loss, named by ``item_names``.
No scaling by batch size or world size: that is the trainer's business.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from utils.config import with_defaults
from utils.loss.box_losses import BOX_LOSSES
from utils.grid import GridCache
from utils.loss.simota import Assignment
from utils.loss.simota_sparse import simota_assign
from utils.loss.targets import targets_in_pixels

IOU_WEIGHT = 5.0


@dataclass
class _Predictions:
    """The raw outputs of all levels, flattened to anchors, and what decoding them needs."""

    reg: torch.Tensor     # [B, A, 4] raw box regression
    obj: torch.Tensor     # [B, A] objectness logits
    cls: torch.Tensor     # [B, A, nc] class logits
    boxes: torch.Tensor   # [B, A, 4] decoded cxcywh, input pixels
    grid: torch.Tensor    # [A, 2] anchor cells
    stride: torch.Tensor  # [A, 1]


class ComputeXLoss:
    item_names = ("iou_loss", "obj_loss", "cls_loss", "l1_loss")  # loss_items, in order

    def __init__(self, model, hyp: dict | None = None):
        model = getattr(model, "module", model)  # DDP / DataParallel wrappers
        head = model.detect
        if head is None:
            raise ValueError("ComputeXLoss needs a model whose last layer is a detection head")
        hyp = with_defaults(hyp)  # checks simota_prior and iou_loss against their allowed values
        self.prior = hyp["simota_prior"]
        self.iou_loss = hyp["iou_loss"]
        self.nc = head.nc
        self.decoder = head.decoder  # decodes the raw regression exactly as the head's eval output does
        self.strides = [float(s) for s in model.stride]
        self.use_l1 = False
        self.assigner = simota_assign  # the sparse fast path; utils.loss.simota_dense has the same signature
        self.last_stats: dict = {}  # num_fg, num_gt, unmatched_gt of the last call, for the log line
        self._grids = GridCache()

    def __call__(self, preds: list[torch.Tensor], targets: torch.Tensor):
        """preds: per level [B, 5 + nc, H, W] raw outputs; targets: [M, 6] normalised."""
        # The loss runs in fp32 whatever the forward ran in: fp16 exp() and BCE sums overflow.
        with torch.autocast(device_type=preds[0].device.type, enabled=False):
            p = self._predictions(preds)
            gt_img, gt_cls, gt_boxes = self._targets(targets, preds)
            assignment = self.assigner(*self._assign_args(p, gt_img, gt_cls, gt_boxes))
            return self._loss(p, gt_boxes, assignment)

    def assign(self, preds: list[torch.Tensor], targets: torch.Tensor) -> Assignment:
        """The SimOTA assignment this loss makes for these predictions and targets."""
        return self.assigner(*self.assign_inputs(preds, targets))

    def assign_inputs(self, preds: list[torch.Tensor], targets: torch.Tensor) -> tuple:
        """The assigner's arguments for these predictions and targets, as the loss prepares them."""
        with torch.autocast(device_type=preds[0].device.type, enabled=False):
            return self._assign_args(self._predictions(preds), *self._targets(targets, preds))

    def _predictions(self, preds: list[torch.Tensor]) -> _Predictions:
        if len(preds) != len(self.strides):
            raise ValueError(f"expected {len(self.strides)} prediction levels, got {len(preds)}")
        shapes = [tuple(p.shape[2:]) for p in preds]
        grid, stride = self._grids(shapes, self.strides, torch.float32, preds[0].device)  # [A, 2], [A, 1]
        raw = torch.cat([p.float().flatten(2) for p in preds], 2).permute(0, 2, 1)  # [B, A, 5 + nc]
        reg = raw[..., :4]
        return _Predictions(reg, raw[..., 4], raw[..., 5:], self.decoder.boxes(reg, grid, stride), grid, stride)

    def _assign_args(self, p: _Predictions, gt_img, gt_cls, gt_boxes) -> tuple:
        return (p.boxes.detach(), p.cls.detach(), p.obj.detach(), (p.grid + 0.5) * p.stride, p.stride[:, 0],
                gt_boxes, gt_cls, gt_img, self.prior)

    def _loss(self, p: _Predictions, gt_boxes, assignment: Assignment):
        fg = assignment.fg_mask  # [B, A]
        num_fg = fg.sum().clamp(min=1).float()
        rows = assignment.matched_row[fg]  # [F], matched GT per foreground anchor, in anchor order
        reg_target = gt_boxes[rows]
        loss_iou = BOX_LOSSES[self.iou_loss](p.boxes[fg], reg_target).sum() / num_fg
        loss_obj = F.binary_cross_entropy_with_logits(p.obj, fg.float(), reduction="sum") / num_fg
        cls_target = F.one_hot(assignment.matched_class[fg], self.nc).float() * assignment.matched_iou[fg][:, None]
        loss_cls = F.binary_cross_entropy_with_logits(p.cls[fg], cls_target, reduction="sum") / num_fg
        if self.use_l1:
            B = fg.shape[0]
            anchor = p.grid.expand(B, -1, -1)[fg]  # [F, 2]
            s = p.stride.expand(B, -1, -1)[fg]  # [F, 1]
            l1_target = torch.cat((reg_target[:, :2] / s - anchor, torch.log(reg_target[:, 2:] / s + 1e-8)), 1)
            loss_l1 = (p.reg[fg] - l1_target).abs().sum() / num_fg
        else:
            loss_l1 = torch.zeros((), device=fg.device)

        loss = IOU_WEIGHT * loss_iou + loss_obj + loss_cls + loss_l1
        items = torch.stack((IOU_WEIGHT * loss_iou, loss_obj, loss_cls, loss_l1)).detach()
        self.last_stats = {"num_fg": fg.sum().detach(), "num_gt": gt_boxes.shape[0],
                           "unmatched_gt": assignment.num_unmatched_gt}
        return loss, items

    def _targets(self, targets, preds):
        """[M, 6] normalised rows -> (image index [T], class [T], cxcywh pixels [T, 4]), sorted by image."""
        return targets_in_pixels(targets, preds, self.strides[0], self.nc)
