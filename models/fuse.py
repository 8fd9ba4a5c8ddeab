"""Fold BatchNorm into the preceding convolution for inference and export."""
from __future__ import annotations

import torch
from torch import nn

from models.repvgg import reparameterize_model


@torch.no_grad()
def fuse_conv_and_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A Conv2d with bias computing bn(conv(x)) in eval mode."""
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      dilation=conv.dilation, groups=conv.groups, bias=True).to(conv.weight.device)
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # [C_out]
    fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
    conv_bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    fused.bias.copy_((conv_bias - bn.running_mean) * scale + bn.bias)
    fused.weight.requires_grad_(False)
    fused.bias.requires_grad_(False)
    return fused


def fuse_model(model: nn.Module) -> int:
    """Re-parameterise every RepVGG block into one conv, then fold every (conv, bn) pair of a module with
    ``.conv`` and ``.bn`` attributes; returns how many were folded (blocks and pairs)."""
    count = reparameterize_model(model)
    for m in model.modules():
        if isinstance(getattr(m, "conv", None), nn.Conv2d) and isinstance(getattr(m, "bn", None), nn.BatchNorm2d):
            m.conv = fuse_conv_and_bn(m.conv, m.bn)
            m.bn = nn.Identity()
            count += 1
    return count
