"""ASFF: adaptively spatial feature fusion after the PAFPN (YOLOX-PAI, as EasyCV 0.11.7 builds it).

One ASFF layer reads every pyramid level and writes one of them, with that level's channels and
stride, so three layers (one per level) drop in after the neck without changing anything downstream:

    [[17, 20, 23], 1, ASFF, [2]]   # P5 out of (P3, P4, P5)

``level`` is the index in ``from`` of the level this layer outputs (0 = the first, finest one);
channels come from the ``from`` layers. Each input is resized to the output level, every resized
map gets a weight logit map (a 1x1 Conv to ``asff_channel`` channels, BN and activation included,
as EasyCV), a 1x1 Conv and a softmax over the levels turn those into per-pixel weights, and an
``expand_kernel`` Conv follows the weighted sum.

Resizing, for a source ``d`` levels finer (d > 0) or coarser (d < 0) than the output:
  mode 'asff': finer: max-pool(3, s2) d - 1 times, then a 3x3 stride-2 Conv to the output channels;
               coarser: a 1x1 Conv to the output channels, then nearest upsampling by 2^-d.
  mode 'sim' (EasyCV's ASFF_sim, parameter-free resizing, needs 2 or 3 levels with channels C, 2C
               (, 4C) and strides doubling): finer: space-to-depth (4x channels, half size), then one level further a
               max-pool, one level nearer a mean of channel pairs; coarser: nearest upsampling, then
               -d means of channel pairs.

Submodule names are EasyCV's, whose levels count from the coarsest (its level 0 is P5):
``stride_level_i`` / ``compress_level_i`` resize source i, ``weight_level_i`` weighs it,
``weight_levels`` mixes them and ``expand`` follows; i = number of levels - 1 - index in ``from``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.common import Conv

ASFF_MODES = ("asff", "sim")


class ASFF(nn.Module):
    """ASFF over len(ch) levels (strides doubling), output at ``level``; see the module docstring."""

    def __init__(self, ch, level, mode="asff", asff_channel=2, expand_kernel=3, act=None):
        super().__init__()
        ch = list(ch)
        if len(ch) < 2:
            raise ValueError(f"ASFF fuses several levels: from must list at least 2 layers, got {len(ch)}")
        if not isinstance(level, int) or not 0 <= level < len(ch):
            raise ValueError(f"ASFF level must index the from list (0..{len(ch) - 1}), got {level!r}")
        if mode not in ASFF_MODES:
            raise ValueError(f"ASFF mode must be one of {', '.join(ASFF_MODES)}, got {mode!r}")
        if mode == "sim" and (len(ch) > 3 or any(ch[k] != ch[0] * 2 ** k for k in range(len(ch)))):
            raise ValueError(f"ASFF mode 'sim' resizes without convs and needs 2 or 3 levels with channels C, 2C "
                             f"(, 4C), got {ch}")
        self.mode, self.nl = mode, len(ch)
        self.target = self.nl - 1 - level  # EasyCV's numbering: 0 = coarsest
        self.c2 = c = ch[level]
        by_coarse = ch[::-1]
        if mode == "asff":
            for i, ci in enumerate(by_coarse):
                if i > self.target:  # finer source: stride-2 conv (after max-pools)
                    setattr(self, f"stride_level_{i}", Conv(ci, c, 3, 2, act=act))
                elif i < self.target:  # coarser source: 1x1 conv, then upsample
                    setattr(self, f"compress_level_{i}", Conv(ci, c, 1, 1, act=act))
        self.expand = Conv(c, c, expand_kernel, 1, act=act)
        for i in range(self.nl):
            setattr(self, f"weight_level_{i}", Conv(c, asff_channel, 1, 1, act=act))
        self.weight_levels = Conv(asff_channel * self.nl, self.nl, 1, 1, act=act)

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        resized = [self._resize(x, i) for i, x in enumerate(xs[::-1])]  # coarsest first, as EasyCV
        logits = torch.cat([getattr(self, f"weight_level_{i}")(r) for i, r in enumerate(resized)], 1)
        weights = F.softmax(self.weight_levels(logits), dim=1).split(1, 1)  # levels x [B, 1, H, W]: one Split op
        fused = resized[0] * weights[0]
        for i in range(1, self.nl):  # indexed, not zipped: torch.fx (QAT) cannot iterate a traced split
            fused = fused + resized[i] * weights[i]
        return self.expand(fused)

    def _resize(self, x: torch.Tensor, i: int) -> torch.Tensor:
        """Source level i (EasyCV's numbering) at the output level's size and channels."""
        d = i - self.target  # > 0: the source is d levels finer
        if d == 0:
            return x
        if self.mode == "asff":
            if d > 0:
                for _ in range(d - 1):
                    x = F.max_pool2d(x, 3, stride=2, padding=1)
                return getattr(self, f"stride_level_{i}")(x)
            return F.interpolate(getattr(self, f"compress_level_{i}")(x), scale_factor=2 ** -d, mode="nearest")
        if d > 0:
            x = space_to_depth(x)
            for _ in range(d - 1):
                x = F.max_pool2d(x, 3, stride=2, padding=1)
            return mean_channel_pairs(x) if d == 1 else x
        x = F.interpolate(x, scale_factor=2 ** -d, mode="nearest")
        for _ in range(-d):
            x = mean_channel_pairs(x)
        return x


def space_to_depth(x: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> [B, 4C, H/2, W/2], slices top-left, bottom-left, top-right, bottom-right (Focus's order)."""
    return torch.cat((x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]), 1)


def mean_channel_pairs(x: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> [B, C/2, H, W]: the mean of channels 2k and 2k + 1."""
    return (x[:, ::2] + x[:, 1::2]) * 0.5  # = / 2 exactly; a Mul, as every other scaling in the graph
