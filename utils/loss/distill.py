"""DAMO-YOLO's feature distillation (channel-wise, 'cwd'): a student's neck outputs against a teacher's.

    distill = ChannelDistillation(student_channels, teacher_channels)   # trains with the student
    loss = task_loss + distill_weight(iteration, total_iterations) * distill(student_feats, teacher_feats)

As DAMO's FeatureLoss (modelscope 1.40.2, damo/base_models/losses/distill_loss.py) with distiller='cwd':
per level, a trainable 1x1 conv (with bias) maps the student's channels to the teacher's; both maps are
standardised per channel over (N, H, W) with batch statistics (DAMO's BatchNorm2d(affine=False), kept
outside the module tree, so always in training mode: F.batch_norm without running statistics here, eps
1e-5); then per sample and channel the KL divergence of the student's spatial softmax from the teacher's
at temperature tau, times tau^2, summed and divided by N x C; the levels add up. The weight decays by a
cosine from 1.0 to 0.1 over all training iterations (DAMO's detector_trainer; the hyp ``distill_weight`` scales it).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

BN_EPS = 1e-5  # DAMO's norms are fresh BatchNorm2d layers (not in the detector, so not set to 1e-3)
FINAL_WEIGHT = 0.1


class ChannelDistillation(nn.Module):
    """Channel-wise distillation of per-level features; ``align_module`` (DAMO's name) trains with the student."""

    def __init__(self, student_channels, teacher_channels, tau: float = 1.0):
        super().__init__()
        if len(student_channels) != len(teacher_channels):
            raise ValueError(f"student and teacher must have as many feature levels, got {len(student_channels)} "
                             f"and {len(teacher_channels)}")
        self.tau = tau
        self.align_module = nn.ModuleList(nn.Conv2d(cs, ct, 1) for cs, ct in zip(student_channels, teacher_channels))

    def forward(self, student: list[torch.Tensor], teacher: list[torch.Tensor]) -> torch.Tensor:
        total = 0.0
        for align, s, t in zip(self.align_module, student, teacher):
            s, t = _standardise(align(s)), _standardise(t)
            if s.shape != t.shape:
                raise ValueError(f"student features {tuple(s.shape)} and teacher's {tuple(t.shape)} differ after aligning")
            N, C = s.shape[:2]
            s, t = s.flatten(2) / self.tau, t.flatten(2) / self.tau  # [N, C, H * W]
            p_t = t.softmax(-1)
            kl = (p_t * (t.log_softmax(-1) - s.log_softmax(-1))).sum()
            total = total + kl * self.tau ** 2 / (N * C)
        return total


def _standardise(x: torch.Tensor) -> torch.Tensor:
    """Per-channel standardisation over (N, H, W) with batch statistics (BatchNorm2d(affine=False) in training)."""
    return F.batch_norm(x, None, None, training=True, eps=BN_EPS)


def distill_weight(iteration: int, total: int, initial: float = 1.0, ramp: int = 0) -> float:
    """DAMO's distillation weight: cosine from ``initial`` (DAMO: 1.0) at the first iteration to 0.1 x it at the last.

    ``ramp`` > 0 (not in DAMO's code, which has no ramp) scales it by iteration / ramp over the first ``ramp``
    iterations: a fresh student's distillation gradient is 5-10x its task gradient and nearly orthogonal to it
    (benchmarks/distill_gradients.py), so without a ramp the first epochs follow the teacher's features instead
    of the labels.
    """
    cosine = initial * (1.0 - (1.0 - FINAL_WEIGHT) * (1.0 - math.cos(math.pi * iteration / total)) / 2)
    return cosine * min(1.0, iteration / ramp) if ramp > 0 else cosine
