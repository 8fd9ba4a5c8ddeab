"""The head contract: what a detection head declares, so that the loss, evaluation, export and detection
work through it and never branch on the kind of head.

A head is the last layer of a Model (models/yolo.py) and subclasses DetectionHead. It declares:

- ``decoder``, a BoxDecoder: the one function from per-level maps to the eval output. The eval forward,
  the loss (boxes from the raw regression), every export layout, the post-processing of exported files
  (ONNX, OpenVINO, RKNN: utils/infer/outputs.py) and the tests all call it. An exported file names it in
  its metadata (``decoder``, ``decoder_params``), so its outputs decode without the model.
- ``logits(xs)``: per level the raw prediction tensors, one per ``decoder.maps`` entry. In train mode
  the head returns them concatenated per level, ``[B, sum(decoder.channels(nc)), H, W]``: the raw
  training outputs its loss takes.
- ``export_layouts``: which of utils.infer.outputs.LAYOUTS the exporter may write for it.
- ``loss``: the name of the loss that trains it, a key of utils.loss.LOSSES.

Per-level maps are the logits after ``decoder.activate`` (scores through their sigmoid, box regression
raw): what a ``per-level`` export outputs, each tensor with a narrow range of its own for 8-bit NPUs.

The eval output of every head is ``[B, N, 5 + nc]``: cx, cy, w, h in input pixels, objectness, class
scores, anchors level by level, row-major (official YOLOX's decoded output). A head without objectness
(``decoder.has_objectness`` False, as DAMO-YOLO's ZeroHead) writes 1 there, so scores (objectness x
class) are its class scores, and NMS, evaluation and export need no branch.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from utils.grid import GridCache, make_grid

Levels = list  # per level a tuple of [B, C_k, H, W] tensors, one per decoder map


class BoxDecoder:
    """How one head family turns its maps into boxes and scores: plain tensor functions, no parameters.

    ``grid`` [N, 2] holds each anchor's (x, y) cell and ``stride`` [N, 1] its level's stride, as
    utils.grid.make_grid lays them out (level-major, row-major).
    """

    name: str = ""                  # the key in models.heads.DECODERS and in export metadata
    maps: tuple[str, ...] = ()      # per-level maps in order, e.g. ("reg", "obj", "cls")
    has_objectness: bool = True
    description: str = ""           # the per-level maps of level s and their decoding, for export metadata

    def channels(self, nc: int) -> tuple[int, ...]:
        """Channels of each map for nc classes, in ``maps`` order."""
        raise NotImplementedError

    def activate(self, logits: tuple) -> tuple:
        """One level's logits -> its maps (the per-level export outputs)."""
        raise NotImplementedError

    def boxes(self, reg: torch.Tensor, grid: torch.Tensor, stride: torch.Tensor) -> torch.Tensor:
        """Raw box regression [..., N, R] -> boxes [..., N, 4] cx, cy, w, h in input pixels."""
        raise NotImplementedError

    def decode(self, flat: torch.Tensor, grid: torch.Tensor, stride: torch.Tensor) -> torch.Tensor:
        """Flattened maps [B, N, sum(channels)] (flatten_levels) -> the eval output [B, N, 5 + nc]."""
        raise NotImplementedError

    def params(self) -> dict:
        """Constructor arguments (JSON-able): export metadata carries them to decoder_from_meta."""
        return {}


def flatten_levels(levels: Levels, flat: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Per-level maps -> [B, N, C]: each level's maps concatenated along channels, flattened row-major by
    ``flat`` ([B, C, H, W] -> [B, C, H * W]; default flatten(2)), levels in turn."""
    flat = flat or (lambda t: t.flatten(2))
    return torch.cat([flat(torch.cat(tuple(maps), 1)) for maps in levels], 2).permute(0, 2, 1)


def level_shapes(levels: Levels) -> list[tuple[int, int]]:
    return [tuple(int(v) for v in maps[0].shape[-2:]) for maps in levels]


def decode_levels(decoder: BoxDecoder, levels: Levels, strides: Sequence[float]) -> torch.Tensor:
    """The eval output [B, N, 5 + nc] from per-level maps (for outputs read back from an exported file)."""
    first = levels[0][0]
    grid, stride = make_grid(level_shapes(levels), [float(s) for s in strides], first.dtype, first.device)
    return decoder.decode(flatten_levels(levels), grid, stride)


def boxes_and_scores(decoded: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(boxes [B, N, 4] cx, cy, w, h; scores [B, N, nc] = objectness x class) of an eval output."""
    return decoded[..., :4], decoded[..., 5:] * decoded[..., 4:5]


class DetectionHead(nn.Module):
    """Base of every head: the forward of the contract (see the module doc) on top of ``logits``."""

    decoder: BoxDecoder
    loss: str = ""
    export_layouts: tuple[str, ...] = ("decoded", "per-level", "split", "nms")

    def __init__(self, nc: int, nl: int):
        super().__init__()
        self.nc, self.nl = nc, nl
        self.stride = torch.ones(nl)  # set by Model from a dry run; not part of the state_dict
        self._grids = GridCache()

    def logits(self, xs: list[torch.Tensor]) -> Levels:
        """Per level the raw prediction tensors, in decoder.maps order."""
        raise NotImplementedError

    def level_sizes(self, xs: list[torch.Tensor]) -> list[tuple[int, int]]:
        """(H, W) of each level, from the head's inputs (Model finds the strides with it)."""
        raise NotImplementedError

    def forward(self, xs: list[torch.Tensor]):
        if self.training:
            return self.raw(xs)
        return self.decode_maps(self.maps(xs))

    def raw(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        """The raw training outputs: per level [B, sum(decoder.channels(nc)), H, W] logits."""
        return [torch.cat(level, 1) for level in self.logits(xs)]

    def maps(self, xs: list[torch.Tensor]) -> Levels:
        return [self.decoder.activate(level) for level in self.logits(xs)]

    def maps_from_raw(self, raw: list[torch.Tensor]) -> Levels:
        """The per-level maps of raw training outputs: one forward serves the loss and the eval output."""
        split = self.decoder.channels(self.nc)
        return [self.decoder.activate(r.split(split, 1)) for r in raw]

    def decode_maps(self, levels: Levels, flat=None, grid: tuple | None = None) -> torch.Tensor:
        """The eval output [B, N, 5 + nc] of per-level maps. ``grid`` (grid, stride) defaults to this
        head's cached anchors for the maps' sizes; ``flat`` as in flatten_levels."""
        if grid is None:
            first = levels[0][0]
            grid = self._grids(level_shapes(levels), self.stride.tolist(), first.dtype, first.device)
        return self.decoder.decode(flatten_levels(levels, flat), *grid)

    def decode_raw(self, raw: list[torch.Tensor]) -> torch.Tensor:
        """The eval output from raw training outputs, exactly as the eval forward computes it."""
        return self.decode_maps(self.maps_from_raw(raw))
