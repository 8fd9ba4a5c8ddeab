"""Learning-rate schedules as factors of lr0, per (fractional) epoch, plus the warm-up rules.

linear: 1 -> lrf over the run (YOLOv5); cos: cosine 1 -> lrf (YOLOv5 --cos-lr);
yolox_cos: official YOLOX's warm cosine: cosine from 1 to lrf between the end of warm-up and the
start of the no-augmentation epochs, then flat at lrf.
"""
from __future__ import annotations

import math

import numpy as np

from utils.config import check_value


class LRSchedule:
    def __init__(self, kind: str, epochs: int, lrf: float, warmup_epochs: float = 0.0, no_aug_epochs: int = 0):
        check_value("scheduler", kind)
        self.kind, self.epochs, self.lrf = kind, epochs, lrf
        self.warmup_epochs, self.no_aug_epochs = warmup_epochs, no_aug_epochs

    def factor(self, epoch: float) -> float:
        """lr / lr0 at a fractional epoch (warm-up excluded, see ``warmup``)."""
        e, n = epoch, max(self.epochs, 1)
        if self.kind == "linear":
            return (1 - e / n) * (1.0 - self.lrf) + self.lrf
        if self.kind == "cos":
            return ((1 - math.cos(e * math.pi / n)) / 2) * (self.lrf - 1) + 1
        start, end = self.warmup_epochs, max(n - self.no_aug_epochs, self.warmup_epochs + 1e-9)
        if e >= end:
            return self.lrf
        t = min(max((e - start) / (end - start), 0.0), 1.0)
        return self.lrf + 0.5 * (1 - self.lrf) * (1 + math.cos(math.pi * t))


def warmup(step: int, warmup_steps: int, target: float, start: float, quadratic: bool = False) -> float:
    """Value during warm-up: linear from ``start`` to ``target`` (YOLOv5), or official YOLOX's
    quadratic ramp from 0; ``target`` after it."""
    if step >= warmup_steps:
        return target
    if quadratic:
        return target * (step / warmup_steps) ** 2
    return float(np.interp(step, [0, warmup_steps], [start, target]))
