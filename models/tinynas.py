"""DAMO-YOLO's TinyNAS backbone blocks, as modelscope 1.40.2 builds them (DAMO-YOLO's code).

A TinyNAS structure (a searched list of stages) is written out as YAML rows, one row per block or
stack of equal blocks: the stride-2 first block of a stage, then its stride-1 repeats (a stack of
copies), and SPP after the first block of the last stage; the CSP variant (M, L) wraps each stage's
blocks in rows of their own (a stride-2 downsampling Conv, 1x1 shortcut and start Convs, the blocks on
half the channels, Concat, a 1x1 fusing Conv). models/damoyolo_*.yaml show both.

ResConvBlock c1 -> c2: conv1 (1x1 for 'k1kx', k x k for 'kxkx'; BN, activation), conv2 a RepConv
k x k with the stride (no activation of its own), a residual added unless the block has stride 2 (a
1x1 projection when c1 != c2), then the activation. DAMO's own ConvKXBN (conv1, bn1) is a Conv
without activation here (conv, bn): models/damo.py renames its keys.
"""
from __future__ import annotations

from torch import nn

from models.activations import make_activation, split_policy
from models.common import Conv
from models.repvgg import RepConv

RES_KINDS = ("k1kx", "kxkx")


class ResConvBlock(nn.Module):
    """One TinyNAS residual block c1 -> c2 with ``btn`` bottleneck channels; see the module docstring.
    ``act='relu_silu'``: ReLU after conv1, SiLU at the output."""

    def __init__(self, c1, c2, btn, k=3, s=1, kind="k1kx", act=None):
        super().__init__()
        if kind not in RES_KINDS:
            raise ValueError(f"ResConvBlock kind must be one of {', '.join(RES_KINDS)}, got {kind!r}")
        if s not in (1, 2):
            raise ValueError(f"ResConvBlock stride must be 1 or 2, got {s!r}")
        inner, out = split_policy(act)
        self.stride = s
        self.conv1 = Conv(c1, btn, 1 if kind == "k1kx" else k, 1, act=inner)
        self.conv2 = RepConv(btn, c2, k, s, act="identity")
        self.residual_proj = Conv(c1, c2, 1, 1, act=False) if c1 != c2 and s != 2 else None
        self.act = make_activation(out)

    def forward(self, x):
        y = self.conv2(self.conv1(x))
        if self.stride != 2:
            y = y + (x if self.residual_proj is None else self.residual_proj(x))
        return self.act(y)
