"""DAMO-YOLO's ZeroHead (modelscope 1.40.2, configs with stacked_convs=0) on the head contract, with the
GFL decoder: class scores without objectness, boxes as distributions over distances.

Per level k: cls = gfl_cls[k](x) (a 3x3 conv to nc logits, sigmoid), reg = scales[k] * gfl_reg[k](x)
(a 3x3 conv to 4 x (reg_max + 1) logits times a learnable scalar). Decoding (GFLDecoder): per side a
softmax over the reg_max + 1 bins and its expectation sum(i * p_i), a distance in strides; the anchor
point is the cell's top-left corner (x * s, y * s), without YOLOX's 0.5 offset; the box is
(px - l, py - t, px + r, py + b) times the stride, at most reg_max strides from the point.

The per-level maps (the ``per-level`` export) are the raw box logits and the sigmoid class scores: the
softmax and expectation stay out of the graph, which 8-bit NPUs need (Rockchip's model zoo does the same
for YOLOv8's DFL); the ``decoded`` layout puts them in. modelscope's ZeroHead builds nc + 1 class
channels (a legacy switch it ignores) and drops the last at inference: this head has nc, and
models/damo.py drops that row from its checkpoints.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from models.heads.base import BoxDecoder, DetectionHead

PRIOR_PROB = 0.01  # DAMO's bias_init_with_prob(0.01) for the class logits


class GFLDecoder(BoxDecoder):
    """GFL decoding (see the module docstring); ``reg_max`` + 1 bins per side."""

    name = "gfl"
    maps = ("reg", "cls")
    has_objectness = False

    def __init__(self, reg_max: int = 16):
        self.reg_max = int(reg_max)
        self.description = (f"reg_s [B, 4 x {self.reg_max + 1}, H, W] raw logits (l, t, r, b bins), cls_s [B, nc, H, W] "
                            f"sigmoid; d = sum(i * softmax(bins)_i) * s, box = (x * s - d_l, y * s - d_t, "
                            f"x * s + d_r, y * s + d_b)")

    def channels(self, nc: int) -> tuple[int, ...]:
        return (4 * (self.reg_max + 1), nc)

    def activate(self, logits: tuple) -> tuple:
        reg, cls = logits
        return reg, cls.sigmoid()

    def distances(self, reg: torch.Tensor) -> torch.Tensor:
        """Box logits [..., 4 * (reg_max + 1)] -> expected (l, t, r, b) [..., 4] in strides."""
        probs = reg.reshape(*reg.shape[:-1], 4, self.reg_max + 1).softmax(-1)  # not unflatten: opset 13+ only
        bins = torch.arange(self.reg_max + 1, dtype=probs.dtype, device=probs.device)
        return (probs * bins).sum(-1)

    def boxes(self, reg: torch.Tensor, grid: torch.Tensor, stride: torch.Tensor) -> torch.Tensor:
        d = self.distances(reg) * stride
        point = grid * stride
        top_left, bottom_right = point - d[..., :2], point + d[..., 2:]
        return torch.cat(((top_left + bottom_right) / 2, bottom_right - top_left), -1)

    def decode(self, flat: torch.Tensor, grid: torch.Tensor, stride: torch.Tensor) -> torch.Tensor:
        n_reg = 4 * (self.reg_max + 1)
        boxes = self.boxes(flat[..., :n_reg], grid, stride)
        return torch.cat((boxes, torch.ones_like(boxes[..., :1]), flat[..., n_reg:]), -1)  # objectness 1

    def params(self) -> dict:
        return {"reg_max": self.reg_max}


class Scale(nn.Module):
    """A learnable scalar factor (DAMO's Scale: parameter ``scale``)."""

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(scale, dtype=torch.float))

    def forward(self, x):
        return x * self.scale


class ZeroHead(DetectionHead):
    """``[[P3, P4, P5], 1, ZeroHead, [nc, anchors, {reg_max: 16}]]``: per level a 3x3 class conv and a 3x3 box conv."""

    loss = "gfl"

    def __init__(self, nc=80, anchors=1, ch=(), reg_max=16):
        if isinstance(anchors, (list, tuple)) or anchors != 1:
            raise ValueError(f"ZeroHead is anchor-free: anchors must be 1, got {anchors!r}")
        if not isinstance(nc, int) or nc < 1:
            raise ValueError(f"ZeroHead needs a positive integer nc, got {nc!r}")
        if not ch:
            raise ValueError("ZeroHead needs at least one input level")
        super().__init__(nc, len(ch))
        self.decoder = GFLDecoder(reg_max)
        self.reg_max = self.decoder.reg_max
        self.gfl_cls = nn.ModuleList(nn.Conv2d(c, nc, 3, padding=1) for c in ch)
        self.gfl_reg = nn.ModuleList(nn.Conv2d(c, 4 * (self.reg_max + 1), 3, padding=1) for c in ch)
        self.scales = nn.ModuleList(Scale(1.0) for _ in ch)
        self.initialize()

    def initialize(self) -> None:
        """DAMO's init_weights: normal(0, 0.01) convs, class biases at the 0.01 prior."""
        for conv in [*self.gfl_cls, *self.gfl_reg]:
            nn.init.normal_(conv.weight, 0.0, 0.01)
            nn.init.constant_(conv.bias, 0.0)
        for conv in self.gfl_cls:
            nn.init.constant_(conv.bias, -math.log((1 - PRIOR_PROB) / PRIOR_PROB))

    def level_sizes(self, xs: list[torch.Tensor]) -> list[tuple[int, int]]:
        return [tuple(x.shape[-2:]) for x in xs]

    def logits(self, xs: list[torch.Tensor]) -> list[tuple]:
        return [(scale(reg(x)), cls(x)) for x, cls, reg, scale in zip(xs, self.gfl_cls, self.gfl_reg, self.scales)]
