"""GSConv, GSBottleneck and VoVGSCSP: the slim neck of YOLOX-PAI's 'gsconv' config, as EasyCV 0.11.7
builds them (after Li et al., slim-neck-by-gsconv).

GSConv c1 -> c2: a Conv to c2/2 channels, a depthwise 5x5 Conv of that, both concatenated and the
channels shuffled so that the dense and the depthwise halves interleave. EasyCV passes its ``act``
argument where BaseConv expects ``bias``, so its GSConv convs carry biases and always use SiLU: here
``bias=True`` is the default (EasyCV's checkpoints load and parameter counts agree) and ``act`` is
honoured, SiLU by default as every other neck block. GSBottleneck is two GSConvs without a shortcut
(EasyCV's request for no activation on the second has no effect there, so both have one here too);
VoVGSCSP is a CSP block over GSBottlenecks. Submodule names are EasyCV's.
"""
from __future__ import annotations

import torch
from torch import nn

from models.activations import split_policy
from models.common import Conv


class GSConv(nn.Module):
    """GSConv c1 -> c2 (kernel k, stride s for the dense half); see the module docstring."""

    def __init__(self, c1, c2, k=1, s=1, g=1, act=None, bias=True):
        super().__init__()
        if c2 % 2:
            raise ValueError(f"GSConv needs an even output channel count, got {c2}")
        c_ = c2 // 2
        self.cv1 = Conv(c1, c_, k, s, g=g, act=act, bias=bias)
        self.cv2 = Conv(c_, c_, 5, 1, g=c_, act=act, bias=bias)

    def forward(self, x):
        x1 = self.cv1(x)
        return channel_shuffle(torch.cat((x1, self.cv2(x1)), 1))


def channel_shuffle(x: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> the even channels, then the odd ones (EasyCV's shuffle, written as ShuffleNet's
    reshape-transpose-reshape, which NPU toolchains know)."""
    b, c, h, w = x.shape
    return x.reshape(b, c // 2, 2, h, w).transpose(1, 2).reshape(b, c, h, w)


class GSBottleneck(nn.Module):
    """GSConv c1 -> c2/2, then GSConv c2/2 -> c2, both 1x1; no shortcut."""

    def __init__(self, c1, c2, act=None):
        super().__init__()
        c_ = c2 // 2
        self.conv_lighting = nn.Sequential(GSConv(c1, c_, 1, 1, act=act), GSConv(c_, c2, 1, 1, act=act))

    def forward(self, x):
        return self.conv_lighting(x)


class VoVGSCSP(nn.Module):
    """CSP over n GSBottlenecks: cv2(cat(m(cv1(x)), cv1(x))) with c2 * e hidden channels.

    ``shortcut`` and ``g`` are accepted for C3's argument order and unused, as in EasyCV. With
    ``act='relu_silu'`` cv1 and the bottlenecks use ReLU and cv2 SiLU.
    """

    def __init__(self, c1, c2, n=1, shortcut=True, g=1, e=0.5, act=None):
        super().__init__()
        inner, out = split_policy(act)
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1, act=inner)
        self.cv2 = Conv(2 * c_, c2, 1, 1, act=out)
        self.m = nn.Sequential(*(GSBottleneck(c_, c_, act=inner) for _ in range(n)))

    def forward(self, x):
        x1 = self.cv1(x)
        return self.cv2(torch.cat((self.m(x1), x1), 1))
