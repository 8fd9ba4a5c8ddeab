"""The optimizer with YOLOv5's three parameter groups: weight decay only on conv and linear weights.

SGD (YOLOv5's and official YOLOX's default), or Adam / AdamW with beta1 = the hyp's momentum (YOLOv5's
--optimizer choices). AdamW converges in far fewer steps from scratch on small data (ultralytics picks
it for runs under 10k iterations), which is why the demo recipe uses it; SGD stays the choice for COCO.
"""
from __future__ import annotations

import torch
from torch import nn

from utils.config import check_value



def build_optimizer(model: nn.Module, lr: float, momentum: float, weight_decay: float, nesterov: bool = False,
                    name: str = "SGD"):
    """Groups: 0 = BatchNorm weights (no decay), 1 = other weights (decay), 2 = biases (no decay).
    Warm-up moves each group's "momentum", which for Adam/AdamW is read back into beta1."""
    check_value("optimizer", name)  # SGD, Adam or AdamW (utils/config.py)
    bn_weights, weights, biases = [], [], []
    norm_types = tuple(v for k, v in vars(nn).items() if "Norm" in k and isinstance(v, type))
    for module in model.modules():
        for pname, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            if pname == "bias":
                biases.append(p)
            elif isinstance(module, norm_types):
                bn_weights.append(p)
            else:
                weights.append(p)
    # always three groups (the warm-up finds the biases at index 2), the first empty in a folded model (QAT)
    groups = [{"params": bn_weights, "weight_decay": 0.0}, {"params": weights, "weight_decay": weight_decay},
              {"params": biases, "weight_decay": 0.0}]
    if name == "SGD":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov)
    return getattr(torch.optim, name)(groups, lr=lr, betas=(momentum, 0.999))  # Adam, AdamW: torch's classes
