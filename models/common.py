"""The building blocks a YAML model is made of.

Definitions follow official YOLOX (BaseConv, DWConv, Bottleneck, CSPLayer, SPPBottleneck, Focus)
with YOLOv5's argument order, so that YOLOv5 layer lists and the seed's YOLOX files both build.
Submodule names are official YOLOX's (conv1/conv2/conv3/m, dconv/pconv), which keeps the official
checkpoint converter a plain table of layer prefixes.

Every block takes ``act``: an activation name or a policy such as ``relu_silu`` (ReLU inside the
block, SiLU on the conv producing its output), see models/activations.py.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from models.activations import make_activation, split_policy

# Official YOLOX sets these on every BatchNorm2d (init_yolo); YOLOv5 uses the same values.
BN_EPS = 1e-3
BN_MOMENTUM = 0.03


def autopad(k: int, p: int | None = None, d: int = 1) -> int:
    """'same' padding for odd kernels: (k - 1) // 2, dilation aware."""
    if p is None:
        p = (d * (k - 1) + 1) // 2 if isinstance(k, int) else [(d * (x - 1) + 1) // 2 for x in k]
    return p


class Conv(nn.Module):
    """Conv2d -> BatchNorm2d -> activation; official YOLOX's BaseConv. The conv has no bias unless
    ``bias`` (EasyCV's GSConv builds its convs with one)."""

    def __init__(self, c1, c2, k=1, s=1, p=None, g=1, act=None, d=1, *, bias=False):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, autopad(k, p, d), dilation=d, groups=g, bias=bias)
        self.bn = nn.BatchNorm2d(c2, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.act = make_activation(act)

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class DWConv(nn.Module):
    """Official YOLOX DWConv: depthwise k x k Conv (BN + act), then pointwise 1x1 Conv (BN + act).

    Not YOLOv5's DWConv (one grouped conv), which is ``GroupConv`` here.
    """

    def __init__(self, c1, c2, k=1, s=1, act=None):
        super().__init__()
        inner, out = split_policy(act)
        self.dconv = Conv(c1, c1, k, s, g=c1, act=inner)
        self.pconv = Conv(c1, c2, 1, 1, act=out)

    def forward(self, x):
        return self.pconv(self.dconv(x))


class GroupConv(Conv):
    """YOLOv5's DWConv: a single conv grouped by gcd(c1, c2)."""

    def __init__(self, c1, c2, k=1, s=1, act=None, d=1):
        super().__init__(c1, c2, k, s, g=math.gcd(c1, c2), act=act, d=d)


class Focus(nn.Module):
    """Space-to-depth (official YOLOX channel order) followed by a Conv on 4*c1 channels."""

    def __init__(self, c1, c2, k=1, s=1, p=None, g=1, act=None):
        super().__init__()
        self.conv = Conv(c1 * 4, c2, k, s, p, g, act=act)

    def forward(self, x):
        # [B, C, H, W] -> [B, 4C, H/2, W/2]: top-left, bottom-left, top-right, bottom-right
        return self.conv(torch.cat(
            (x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]), 1))


class Bottleneck(nn.Module):
    """1x1 Conv -> 3x3 Conv (DWConv when depthwise), residual add when shortcut and c1 == c2."""

    def __init__(self, c1, c2, shortcut=True, g=1, e=0.5, act=None, depthwise=False):
        super().__init__()
        inner, out = split_policy(act)
        c_ = int(c2 * e)
        self.conv1 = Conv(c1, c_, 1, 1, act=inner)
        self.conv2 = DWConv(c_, c2, 3, 1, act=out) if depthwise else Conv(c_, c2, 3, 1, g=g, act=out)
        self.add = shortcut and c1 == c2

    def forward(self, x):
        y = self.conv2(self.conv1(x))
        return x + y if self.add else y


class C3(nn.Module):
    """CSP bottleneck with three convs: official YOLOX's CSPLayer, YOLOv5's C3.

    With ``act='relu_silu'`` conv1, conv2 and every bottleneck use ReLU and conv3 uses SiLU.
    """

    def __init__(self, c1, c2, n=1, shortcut=True, g=1, e=0.5, act=None, depthwise=False):
        super().__init__()
        inner, out = split_policy(act)
        c_ = int(c2 * e)
        self.conv1 = Conv(c1, c_, 1, 1, act=inner)
        self.conv2 = Conv(c1, c_, 1, 1, act=inner)
        self.conv3 = Conv(2 * c_, c2, 1, 1, act=out)
        self.m = nn.Sequential(*(Bottleneck(c_, c_, shortcut, g, 1.0, inner, depthwise) for _ in range(n)))

    def forward(self, x):
        return self.conv3(torch.cat((self.m(self.conv1(x)), self.conv2(x)), 1))


class SPP(nn.Module):
    """Spatial pyramid pooling (official SPPBottleneck): 1x1, max-pools 5/9/13 (stride 1), concat, 1x1."""

    def __init__(self, c1, c2, k=(5, 9, 13), act=None):
        super().__init__()
        inner, out = split_policy(act)
        c_ = c1 // 2
        self.conv1 = Conv(c1, c_, 1, 1, act=inner)
        self.m = nn.ModuleList(nn.MaxPool2d(kernel_size=x, stride=1, padding=x // 2) for x in k)
        self.conv2 = Conv(c_ * (len(k) + 1), c2, 1, 1, act=out)

    def forward(self, x):
        x = self.conv1(x)
        return self.conv2(torch.cat([x] + [m(x) for m in self.m], 1))


class SPPF(nn.Module):
    """YOLOv5's fast SPP: three chained 5x5 max-pools equal SPP(5, 9, 13) at lower cost."""

    def __init__(self, c1, c2, k=5, act=None):
        super().__init__()
        inner, out = split_policy(act)
        c_ = c1 // 2
        self.conv1 = Conv(c1, c_, 1, 1, act=inner)
        self.conv2 = Conv(c_ * 4, c2, 1, 1, act=out)
        self.m = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)

    def forward(self, x):
        x = self.conv1(x)
        y1 = self.m(x)
        y2 = self.m(y1)
        return self.conv2(torch.cat((x, y1, y2, self.m(y2)), 1))


class Concat(nn.Module):
    """Concatenate a list of tensors along ``dimension``."""

    def __init__(self, dimension=1):
        super().__init__()
        self.d = dimension

    def forward(self, x):
        return torch.cat(x, self.d)
