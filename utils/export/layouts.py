"""ExportModel: a model whose forward returns the tensors of an export layout, written through the head
contract (models/heads/base.py): the layouts, their names and their decoding are utils/infer/outputs.py's.

    wrapped = ExportModel(model, layout="per-level")   # what export.py traces; wrapped.format: its OutputFormat
"""
from __future__ import annotations

import torch
from torch import nn

from models.heads.base import boxes_and_scores
from utils.boxes import cxcywh_to_xyxy
from utils.grid import make_grid
from utils.infer.outputs import OutputFormat, check_layout


class ExportModel(nn.Module):
    """A Model (eval mode, a detection head last) whose forward returns the tensors of ``layout``.

    Runs the model's layers up to the head (Model.features), then the head's maps; every layout but
    per-level decodes them with the head's own decode_maps. ``dynamic_hw`` builds the anchor grid in the
    graph from the feature map sizes (Shape/Range ops) instead of storing it as a constant.
    ``nms`` (an EndToEndNMS) is required for layout "nms".
    """

    def __init__(self, model: nn.Module, layout: str = "decoded", dynamic_hw: bool = False, nms: nn.Module | None = None):
        super().__init__()
        check_layout(layout)
        head = getattr(model, "detect", None)
        if head is None:
            raise ValueError("export needs a detection model: the model has no detection head")
        if layout not in head.export_layouts:
            raise ValueError(f"{type(head).__name__} exports the layouts {head.export_layouts}, not {layout!r}")
        if layout == "nms" and nms is None:
            raise ValueError("layout 'nms' needs an EndToEndNMS module")
        self.model, self.layout, self.dynamic_hw, self.nms = model, layout, dynamic_hw, nms
        self.strides = [float(s) for s in model.stride.tolist()]
        self.format = OutputFormat(layout, tuple(self.strides), head.decoder)

    def forward(self, x: torch.Tensor):
        head = self.model.detect
        levels = head.maps(self.model.features(x))  # per level the decoder's maps, e.g. (reg, obj, cls)
        if self.layout == "per-level":
            return tuple(t for maps in levels for t in maps)
        grid = self._dynamic_grid(levels) if self.dynamic_hw else None
        decoded = head.decode_maps(levels, flat=self._flat, grid=grid)  # [B, N, 5 + nc]
        if self.layout == "decoded":
            return decoded
        boxes, scores = boxes_and_scores(decoded)  # [B, N, 4], [B, N, nc]
        if self.layout == "split":
            return boxes, scores
        return self.nms(cxcywh_to_xyxy(boxes).float(), scores.float())  # NonMaxSuppression takes float32 only

    def _flat(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> [B, C, H * W]; with fixed H, W a Reshape to a constant shape (no Shape ops)."""
        if self.dynamic_hw:
            return x.flatten(2)
        return x.reshape(-1, int(x.shape[1]), int(x.shape[2]) * int(x.shape[3]))

    def _dynamic_grid(self, levels) -> tuple[torch.Tensor, torch.Tensor]:
        """(grid [N, 2], stride [N, 1]) built in the graph from the traced map sizes."""
        first = levels[0][0]
        return make_grid([(maps[0].shape[2], maps[0].shape[3]) for maps in levels], self.strides, first.dtype,
                         first.device)
