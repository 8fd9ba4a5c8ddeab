"""DAMO-YOLO's Efficient RepGFPN fusion block (GiraffeNeckV2's CSPStage with BasicBlock_3x3_Reverse), as
modelscope 1.40.2 builds it. The neck's five fusion nodes and their stride-2 convs are YAML rows
(models/damoyolo_*.yaml); each node is one CSPStage row over a Concat.

CSPStage c1 -> c2 over n blocks: conv1 (1x1 to c2 // 2) and conv2 (1x1 to the rest, c_mid); the blocks
run in turn on conv2's output and EVERY block output is kept (ELAN-style), so conv3 (1x1) fuses
cat(conv1, block_1, ..., block_n) of c2 // 2 + n * c_mid channels. BasicBlock_3x3_Reverse c -> c:
x + conv1(conv2(x)), conv2 a RepConv 3x3 to int(c * ratio) hidden channels, conv1 a 3x3 Conv back.
Submodule names are DAMO's (conv1, conv2, convs, conv3).
"""
from __future__ import annotations

import torch
from torch import nn

from models.activations import split_policy
from models.common import Conv
from models.repvgg import RepConv


class BasicBlock3x3Reverse(nn.Module):
    """DAMO's BasicBlock_3x3_Reverse: x + Conv3x3(RepConv3x3(x)) through int(c * ratio) channels."""

    def __init__(self, c, ratio=1.0, act=None, shortcut=True):
        super().__init__()
        hidden = int(c * ratio)
        self.conv2 = RepConv(c, hidden, 3, 1, act=act)
        self.conv1 = Conv(hidden, c, 3, 1, act=act)
        self.shortcut = shortcut

    def forward(self, x):
        y = self.conv1(self.conv2(x))
        return x + y if self.shortcut else y


class CSPStage(nn.Module):
    """A RepGFPN fusion node c1 -> c2 over n BasicBlock3x3Reverse blocks with hidden ratio ``ratio``.
    ``act='relu_silu'``: ReLU inside, SiLU on conv3."""

    def __init__(self, c1, c2, n=1, ratio=1.0, act=None):
        super().__init__()
        inner, out = split_policy(act)
        c_first = c2 // 2
        c_mid = c2 - c_first
        self.conv1 = Conv(c1, c_first, 1, 1, act=inner)
        self.conv2 = Conv(c1, c_mid, 1, 1, act=inner)
        self.convs = nn.Sequential(*(BasicBlock3x3Reverse(c_mid, ratio, act=inner) for _ in range(n)))
        self.conv3 = Conv(c_mid * n + c_first, c2, 1, 1, act=out)

    def forward(self, x):
        outs = [self.conv1(x)]
        y = self.conv2(x)
        for block in self.convs:
            y = block(y)
            outs.append(y)
        return self.conv3(torch.cat(outs, 1))
