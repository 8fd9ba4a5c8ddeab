"""RepVGG block (YOLOX-PAI's backbone, as EasyCV builds it): three branches to train, one conv to deploy.

Training form: ``act(BN(conv3x3(x)) + BN(conv1x1(x)) + BN(x))``, the identity branch only where the
input and output shapes agree (same channels, stride 1). ``reparameterize()`` folds every branch into
one 3x3 conv with bias, the same function in eval mode: each BN folds as W * g / sqrt(v + eps) and
b - m * g / sqrt(v + eps), the 1x1 kernel is zero-padded to 3x3, and the identity is a 3x3 kernel with
a 1 at the centre of its own channel. An NPU then sees plain Conv + ReLU.

Submodule names are EasyCV's (rbr_dense, rbr_1x1, rbr_identity, rbr_reparam), so its checkpoints
load by name. EasyCV ignores its ``act`` argument and always uses ReLU; here ReLU is the default and
the row may choose another activation.
"""
from __future__ import annotations

import torch
from torch import nn

from models.activations import make_activation
from models.common import BN_EPS, BN_MOMENTUM, SPPF


class ConvBN(nn.Sequential):
    """Conv2d (no bias) then BatchNorm2d, as one branch: EasyCV's conv_bn (names conv, bn)."""

    def __init__(self, c1, c2, k, s, p, g=1):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, p, groups=g, bias=False)
        self.bn = nn.BatchNorm2d(c2, eps=BN_EPS, momentum=BN_MOMENTUM)


class RepVGGBlock(nn.Module):
    """RepVGG block c1 -> c2 with a 3x3 kernel and stride s; see the module docstring."""

    def __init__(self, c1, c2, k=3, s=1, g=1, act="relu", identity=True):
        super().__init__()
        if k != 3:
            raise ValueError(f"{type(self).__name__} takes a 3x3 kernel only, got k={k}")
        self.c1, self.groups = c1, g
        with_identity = identity and c1 == c2 and s == 1
        self.rbr_identity = nn.BatchNorm2d(c1, eps=BN_EPS, momentum=BN_MOMENTUM) if with_identity else None
        self.rbr_dense = ConvBN(c1, c2, 3, s, 1, g)
        self.rbr_1x1 = ConvBN(c1, c2, 1, s, 0, g)
        self.act = make_activation(act)

    def forward(self, x):
        if hasattr(self, "rbr_reparam"):
            return self.act(self.rbr_reparam(x))
        identity = 0 if self.rbr_identity is None else self.rbr_identity(x)
        return self.act(self.rbr_dense(x) + self.rbr_1x1(x) + identity)

    @torch.no_grad()
    def equivalent_kernel_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(weight [c2, c1/g, 3, 3], bias [c2]) of the one conv equal to the three branches in eval mode."""
        k3, b3 = _fold(self.rbr_dense.conv.weight, self.rbr_dense.bn)
        k1, b1 = _fold(self.rbr_1x1.conv.weight, self.rbr_1x1.bn)
        kernel, bias = k3 + nn.functional.pad(k1, [1, 1, 1, 1]), b3 + b1
        if self.rbr_identity is not None:
            per_group = self.c1 // self.groups
            eye = torch.zeros_like(k3)
            eye[torch.arange(self.c1), torch.arange(self.c1) % per_group, 1, 1] = 1.0
            kid, bid = _fold(eye, self.rbr_identity)
            kernel, bias = kernel + kid, bias + bid
        return kernel, bias

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Replace the branches by one 3x3 conv with bias (rbr_reparam); idempotent."""
        if hasattr(self, "rbr_reparam"):
            return
        dense = self.rbr_dense.conv
        kernel, bias = self.equivalent_kernel_bias()
        self.rbr_reparam = nn.Conv2d(dense.in_channels, dense.out_channels, 3, dense.stride, 1, groups=dense.groups,
                                     bias=True).to(kernel.device)
        self.rbr_reparam.weight.copy_(kernel)
        self.rbr_reparam.bias.copy_(bias)
        del self.rbr_dense, self.rbr_1x1, self.rbr_identity


class RepConv(RepVGGBlock):
    """DAMO-YOLO's RepConv: a RepVGG block without the identity branch, act(BN(conv3x3) + BN(conv1x1)),
    folded the same way (DAMO's names rbr_dense, rbr_1x1, rbr_reparam)."""

    def __init__(self, c1, c2, k=3, s=1, g=1, act="relu"):
        super().__init__(c1, c2, k, s, g, act, identity=False)


class MTSPPF(SPPF):
    """EasyCV's MT_SPPF, the end of its RepVGG backbone: YOLOv5's SPPF with ReLU unless the row chooses
    (YOLOv6's SimSPPF). EasyCV's cv1 / cv2 are conv1 / conv2 here."""

    def __init__(self, c1, c2, k=5, act="relu"):
        super().__init__(c1, c2, k, act)


def _fold(kernel: torch.Tensor, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """(kernel, bias) of bn(conv(x)) for a bias-free conv with this kernel, in eval mode."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # [c2]
    return kernel * scale.view(-1, 1, 1, 1), bn.bias - bn.running_mean * scale


def has_folded_blocks(state_dict: dict) -> bool:
    """A state_dict saved after folding (EasyCV's and DAMO's exports call switch_to_deploy): rbr_reparam keys."""
    return any(".rbr_reparam." in k for k in state_dict)


def reparameterize_model(model: nn.Module) -> int:
    """Fold every RepVGG block of model into one conv; returns how many were folded."""
    blocks = [m for m in model.modules() if isinstance(m, RepVGGBlock) and not hasattr(m, "rbr_reparam")]  # RepConv too
    for m in blocks:
        m.reparameterize()
    return len(blocks)
