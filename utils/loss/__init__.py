"""Losses and label assignment: one loss per head family, found by the name its head declares
(models/heads/base.py: ``head.loss``), and the assigners the losses use.

    compute_loss = build_loss(model, hyp)      # ComputeXLoss for YOLOX heads, ComputeGFLLoss for ZeroHead
    loss, items = compute_loss(preds, targets)

yolox_loss    ComputeXLoss: official YOLOX's IoU, objectness, class and L1 terms
gfl_loss      ComputeGFLLoss: DAMO-YOLO's QFL, GIoU and DFL for ZeroHead
align_ota     DAMO-YOLO's AlignOTA assignment, batched
distill       DAMO-YOLO's channel-wise feature distillation (its loss and weight schedule)
simota        SimOTA's rules (priors, geometry, costs, dynamic k), written once
simota_sparse the fast batched SimOTA the loss runs
simota_dense  the same assignment from dense [GTs, candidates] tensors: the reference of the tests
"""
from __future__ import annotations

from utils.loss.gfl_loss import ComputeGFLLoss
from utils.loss.yolox_loss import ComputeXLoss

LOSSES = {"yolox": ComputeXLoss, "gfl": ComputeGFLLoss}

__all__ = ["ComputeXLoss", "ComputeGFLLoss", "LOSSES", "build_loss"]


def build_loss(model, hyp: dict | None = None):
    """The loss that trains ``model``'s head (DDP wrappers are looked through)."""
    head = getattr(getattr(model, "module", model), "detect", None)
    if head is None:
        raise ValueError("the model has no detection head to train")
    if head.loss not in LOSSES:
        raise ValueError(f"{type(head).__name__} is trained by the loss {head.loss!r}, which is not in "
                         f"utils.loss.LOSSES ({', '.join(sorted(LOSSES))})")
    return LOSSES[head.loss](model, hyp)
