"""Anchor points of a multi-level dense head, shared by decoding and label assignment."""
from __future__ import annotations

import torch


def make_grid(shapes, strides, dtype=torch.float32, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Cell indices and strides of every anchor, level-major then row-major (index = y * W + x).

    shapes: [(H, W), ...] per level; strides: [s, ...] per level.
    Returns grid [N, 2] as (x, y) cell indices and stride [N, 1], N = sum(H * W).
    Decoding uses the cell's top-left corner, (grid) * stride; assignment uses the centre,
    (grid + 0.5) * stride, as official YOLOX does.
    """
    grids, level_strides = [], []
    for (h, w), s in zip(shapes, strides):
        yv, xv = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
        grids.append(torch.stack((xv, yv), 2).view(-1, 2))
        level_strides.append(torch.full((h * w, 1), float(s), device=device))
    return torch.cat(grids).to(dtype), torch.cat(level_strides).to(dtype)
