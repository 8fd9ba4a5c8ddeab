"""SGD with YOLOv5's three parameter groups: weight decay only on conv and linear weights."""
from __future__ import annotations

import torch
from torch import nn


def build_optimizer(model: nn.Module, lr: float, momentum: float, weight_decay: float, nesterov: bool = False):
    """Groups: 0 = BatchNorm weights (no decay), 1 = other weights (decay), 2 = biases (no decay)."""
    bn_weights, weights, biases = [], [], []
    norm_types = tuple(v for k, v in vars(nn).items() if "Norm" in k and isinstance(v, type))
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            if name == "bias":
                biases.append(p)
            elif isinstance(module, norm_types):
                bn_weights.append(p)
            else:
                weights.append(p)
    optimizer = torch.optim.SGD(bn_weights, lr=lr, momentum=momentum, nesterov=nesterov)
    optimizer.add_param_group({"params": weights, "weight_decay": weight_decay})
    optimizer.add_param_group({"params": biases, "weight_decay": 0.0})
    return optimizer
