"""Anchor points of a multi-level dense head, shared by decoding, label assignment and export."""
from __future__ import annotations

import torch


def make_grid(shapes, strides, dtype=torch.float32, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Cell indices and strides of every anchor, level-major then row-major (index = y * W + x).

    shapes: [(H, W), ...] per level (ints, or sizes traced from feature maps for a dynamic-size export);
    strides: [s, ...] per level. Returns grid [N, 2] as (x, y) cell indices and stride [N, 1], N = sum(H * W).
    YOLOX decodes from the cell's top-left corner, (grid) * stride, and assigns with the centre,
    (grid + 0.5) * stride, as official YOLOX does.
    """
    grids, level_strides = [], []
    for (h, w), s in zip(shapes, strides):
        yv, xv = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
        cells = torch.stack((xv, yv), 2).reshape(-1, 2)  # [H * W, 2]
        grids.append(cells)
        level_strides.append(torch.ones_like(cells[:, :1], dtype=torch.float32) * float(s))  # [H * W, 1]
    return torch.cat(grids).to(dtype), torch.cat(level_strides).to(dtype)


class GridCache:
    """make_grid for the last (shapes, strides, dtype, device) asked for: training and evaluation at one
    input size build it once."""

    def __init__(self):
        self._key, self._value = None, None

    def __call__(self, shapes, strides, dtype=torch.float32, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        key = (tuple(tuple(int(v) for v in s) for s in shapes), tuple(float(s) for s in strides), dtype,
               torch.device(device) if device is not None else None)
        if key != self._key:
            self._key, self._value = key, make_grid(shapes, strides, dtype, device)
        return self._value
