"""Exponential moving average of weights and BN buffers (YOLOv5's ModelEMA, official YOLOX's decay ramp)."""
from __future__ import annotations

import copy
import math

import torch
from torch import nn


class ModelEMA:
    """ema = d * ema + (1 - d) * model, d = decay * (1 - exp(-updates / tau)): a slow start, then ``decay``."""

    def __init__(self, model: nn.Module, decay: float = 0.9999, tau: float = 2000, updates: int = 0):
        self.ema = copy.deepcopy(unwrap(model)).eval()
        self.updates, self.decay, self.tau = updates, decay, tau
        for p in self.ema.parameters():
            p.requires_grad_(False)

    def current_decay(self) -> float:
        return self.decay * (1 - math.exp(-self.updates / self.tau))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.current_decay()
        model_state = unwrap(model).state_dict()
        for k, v in self.ema.state_dict().items():
            if v.dtype.is_floating_point:
                v.mul_(d).add_(model_state[k].detach(), alpha=1 - d)
            else:  # counters and flags follow the model: an averaged QAT range is observed once it is set
                v.copy_(model_state[k])


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside DDP / DataParallel wrappers."""
    return model.module if isinstance(model, (nn.parallel.DataParallel, nn.parallel.DistributedDataParallel)) else model
