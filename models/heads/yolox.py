"""YOLOX's decoupled head on the head contract (models/heads/base.py): its decoder, DetectX and YOLOXHead.

DetectX takes (cls, reg) feature pairs per level, e.g. ``[[27, 28, 29, 30, 31, 32], 1, DetectX, [nc, anchors]]``
= cls0, reg0, cls1, reg1, cls2, reg2: the stems and the stacked 3x3 convs of each branch are ordinary
YAML layers, so their activation is a YAML choice. DetectX owns the 1x1 prediction convs: cls (nc)
from the cls branch, reg (4) and obj (1) from the reg branch, as official YOLOX.

Train mode returns, per level, the raw [B, 5 + nc, H, W] = cat(reg, obj, cls) logits.
Eval mode returns [B, N, 5 + nc]: cx, cy, w, h in input pixels, then sigmoid(obj), sigmoid(cls),
anchors level-major and row-major: the official decoded output.
"""
from __future__ import annotations

import logging
import math

import torch
from torch import nn

from models.heads.base import BoxDecoder, DetectionHead

LOGGER = logging.getLogger("yolox5.models")
PRIOR_PROB = 0.01  # official initialize_biases(1e-2): cls and obj biases start at -4.59512


class YOLOXDecoder(BoxDecoder):
    """Official YOLOX decoding: per anchor (x, y) offsets in cells from the cell's top-left corner and
    log (w, h) in strides; sigmoid objectness and sigmoid class scores."""

    name = "yolox"
    maps = ("reg", "obj", "cls")
    has_objectness = True
    description = ("reg_s [B, 4, H, W] raw (x, y cell offsets, log w, log h), obj_s [B, 1, H, W] sigmoid, "
                   "cls_s [B, nc, H, W] sigmoid; box = ((x, y) + cell) * s, exp(log w, log h) * s")

    def channels(self, nc: int) -> tuple[int, ...]:
        return (4, 1, nc)

    def activate(self, logits: tuple) -> tuple:
        reg, obj, cls = logits
        return reg, obj.sigmoid(), cls.sigmoid()

    def boxes(self, reg: torch.Tensor, grid: torch.Tensor, stride: torch.Tensor) -> torch.Tensor:
        # concatenation, not in-place slice writes: those export as ScatterND, which 8-bit NPUs refuse
        return torch.cat(((reg[..., 0:2] + grid) * stride, torch.exp(reg[..., 2:4]) * stride), -1)

    def decode(self, flat: torch.Tensor, grid: torch.Tensor, stride: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.boxes(flat[..., :4], grid, stride), flat[..., 4:]), -1)


class DetectX(DetectionHead):
    loss = "yolox"

    def __init__(self, nc=80, anchors=1, ch=()):
        if isinstance(anchors, (list, tuple)) or anchors != 1:
            raise ValueError(f"DetectX is anchor-free: anchors must be 1, got {anchors!r}")
        if not isinstance(nc, int) or nc < 1:
            raise ValueError(f"DetectX needs a positive integer nc, got {nc!r}")
        if len(ch) < 2 or len(ch) % 2:
            raise ValueError(f"DetectX takes (cls, reg) input pairs per level, got {len(ch)} inputs")
        super().__init__(nc, len(ch) // 2)
        self.decoder = YOLOXDecoder()
        self.no = nc + 5  # outputs per anchor: x, y, w, h, obj, classes
        cls_ch, reg_ch = ch[0::2], ch[1::2]
        # Registration order cls, reg, obj matches official YOLOXHead's state_dict order.
        self.cls_preds = nn.ModuleList(nn.Conv2d(c, nc, 1) for c in cls_ch)
        self.reg_preds = nn.ModuleList(nn.Conv2d(c, 4, 1) for c in reg_ch)
        self.obj_preds = nn.ModuleList(nn.Conv2d(c, 1, 1) for c in reg_ch)
        self.initialize_biases()

    def initialize_biases(self, prior_prob: float = PRIOR_PROB) -> None:
        bias = -math.log((1 - prior_prob) / prior_prob)
        for conv in list(self.cls_preds) + list(self.obj_preds):
            nn.init.constant_(conv.bias, bias)

    def level_sizes(self, xs: list[torch.Tensor]) -> list[tuple[int, int]]:
        """(H, W) of each level's inputs; cls and reg maps of a level must agree."""
        sizes = []
        for k in range(self.nl):
            cls_shape, reg_shape = tuple(xs[2 * k].shape[-2:]), tuple(xs[2 * k + 1].shape[-2:])
            if cls_shape != reg_shape:
                raise ValueError(f"DetectX level {k}: cls input {cls_shape} and reg input {reg_shape} differ in size")
            sizes.append(reg_shape)
        return sizes

    def logits(self, xs: list[torch.Tensor]) -> list[tuple]:
        """Per level (reg [B, 4, H, W], obj [B, 1, H, W], cls [B, nc, H, W]) logits."""
        return [(self.reg_preds[i](xs[2 * i + 1]), self.obj_preds[i](xs[2 * i + 1]), self.cls_preds[i](xs[2 * i]))
                for i in range(self.nl)]


class YOLOXHead(DetectX):
    """The whole official YOLOX head on plain per-level features, for layer lists ending in YOLOv5's
    ``[[17, 20, 23], 1, Detect, [nc, anchors]]``: per level a 1x1 stem to int(256 * width) channels,
    then two 3x3 convs per branch (DWConv when depthwise), then DetectX's prediction convs.

    Module names are official YOLOX's (stems, cls_convs, reg_convs, *_preds). YOLOv5 anchors are
    ignored: the head is anchor-free.
    """

    def __init__(self, nc=80, anchors=1, ch=(), width=1.0, act=None, depthwise=False):
        from models.common import Conv, DWConv

        if not ch:
            raise ValueError("YOLOXHead needs at least one input level")
        hidden = int(256 * width)
        super().__init__(nc, 1, [hidden] * (2 * len(ch)))
        if anchors != 1:
            LOGGER.info(f"YOLOXHead: anchors {anchors!r} ignored, the YOLOX head is anchor-free")
        branch = DWConv if depthwise else Conv
        self.stems = nn.ModuleList(Conv(c, hidden, 1, 1, act=act) for c in ch)
        self.cls_convs = nn.ModuleList(
            nn.Sequential(branch(hidden, hidden, 3, 1, act=act), branch(hidden, hidden, 3, 1, act=act)) for _ in ch)
        self.reg_convs = nn.ModuleList(
            nn.Sequential(branch(hidden, hidden, 3, 1, act=act), branch(hidden, hidden, 3, 1, act=act)) for _ in ch)

    def level_sizes(self, xs: list[torch.Tensor]) -> list[tuple[int, int]]:
        return [tuple(x.shape[-2:]) for x in xs]

    def logits(self, xs: list[torch.Tensor]) -> list[tuple]:
        feats = []
        for x, stem, cls_convs, reg_convs in zip(xs, self.stems, self.cls_convs, self.reg_convs):
            x = stem(x)
            feats += [cls_convs(x), reg_convs(x)]
        return super().logits(feats)
