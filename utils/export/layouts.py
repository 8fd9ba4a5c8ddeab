"""Output layouts of exported models, written and read back through the head contract (models/heads/base.py).

    wrapped = ExportModel(model, layout="per-level")                    # what export.py traces
    decoded = decode_outputs(outputs, "per-level", strides, decoder)   # -> [B, N, 5 + nc], like model(x) in eval
    decoded = decode_onnx_outputs(session.run(None, feed), session.get_modelmeta().custom_metadata_map)

Nothing here knows a head: the per-level maps, their names and their decoding are the head's decoder's
(an exported file names its decoder in its metadata). The descriptions below are for YOLOX's.

Layouts (``--deploy-outputs``; the ONNX output names in brackets):

- ``decoded`` [output]: the eval-mode output [B, N, 5 + nc] (cx, cy, w, h in input pixels, sigmoid
  obj, sigmoid cls), built with Concat only (no ScatterND). The default without --deploy. One 8-bit
  scale cannot hold box pixels (hundreds) and probabilities (0..1) at once, so not for int8 NPUs.
- ``per-level`` [reg_s8, obj_s8, cls_s8, reg_s16, ...]: per level the decoder's maps, for YOLOX the raw box regression
  [B, 4, H, W] (x, y offsets in cells, log w, log h: values of a few units), sigmoid objectness
  [B, 1, H, W] and sigmoid class probabilities [B, nc, H, W]. The graph ends at the prediction
  convs: no Reshape, Transpose, Exp or Concat on the outputs, every tensor in a narrow range of its
  own. The default with --deploy; what the RKNN, ACUITY (A311D) and most 8-bit NPU flows want, the
  decoding (grid, stride, exp) done on the CPU by ``decode_outputs`` with the head's decoder.
- ``split`` [boxes, scores]: boxes [B, N, 4] (cx, cy, w, h, input pixels) and scores [B, N, nc]
  (obj * cls) as two tensors, each quantised with its own scale. For runtimes that decode in the
  graph and read two tensors (TensorRT / OpenVINO, EfficientNMS-style plugins).
- ``nms`` [num_dets, boxes, scores, classes]: ``split`` followed by ONNX NonMaxSuppression
  (utils/export/nms_graph.py). Already post-processed: ``decode_outputs`` refuses it.

Anchors are ordered level by level, row-major, in every layout (the official YOLOX order).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
import torch
from torch import nn

from models.heads import decoder_from_meta, decoder_metadata
from models.heads.base import BoxDecoder, boxes_and_scores, decode_levels
from utils.boxes import cxcywh_to_xyxy
from utils.grid import make_grid

LAYOUTS = ("decoded", "per-level", "split", "nms")
DEPLOY_LAYOUTS = ("per-level", "split")


def describe(layout: str, decoder: BoxDecoder) -> str:
    """The metadata's one-line description of a layout's outputs."""
    _check_layout(layout)
    return {
        "decoded": "output [B, N, 5+nc]: cx, cy, w, h (input pixels), sigmoid obj, sigmoid cls; anchors level-major, "
                   "row-major",
        "per-level": f"per level s: {decoder.description}",
        "split": "boxes [B, N, 4]: cx, cy, w, h (input pixels); scores [B, N, nc]: sigmoid obj * sigmoid cls",
        "nms": "num_dets [B, 1] int32; boxes [B, max_det, 4] x1, y1, x2, y2 (input pixels); scores [B, max_det]; "
               "classes [B, max_det] int32; rows past num_dets are padding (class -1)",
    }[layout]


def output_names(layout: str, strides: Sequence[int], decoder: BoxDecoder) -> list[str]:
    """The ONNX output names of ``layout`` for a head with this decoder and these level strides."""
    _check_layout(layout)
    if layout == "decoded":
        return ["output"]
    if layout == "per-level":
        return [f"{name}_s{int(s)}" for s in strides for name in decoder.maps]
    if layout == "split":
        return ["boxes", "scores"]
    return ["num_dets", "boxes", "scores", "classes"]


def _check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise ValueError(f"output layout must be one of {LAYOUTS}, got {layout!r}")


@dataclass(frozen=True)
class OutputFormat:
    """What an exported file's outputs are, and how they decode back to the eval output: the layout, the
    head's level strides and its decoder. Every check and comparison of an export takes one; the file's
    metadata carries it (``metadata`` / ``from_meta``)."""

    layout: str
    strides: tuple
    decoder: BoxDecoder

    def __post_init__(self):
        _check_layout(self.layout)

    @property
    def names(self) -> list[str]:
        return output_names(self.layout, self.strides, self.decoder)

    def decode(self, outputs: Sequence) -> torch.Tensor:
        """The eval output [B, N, 5 + nc] of the file's outputs (see decode_outputs)."""
        return decode_outputs(outputs, self.layout, self.strides, self.decoder)

    def with_layout(self, layout: str) -> OutputFormat:
        return replace(self, layout=layout)

    def metadata(self) -> dict:
        return {"stride": [int(s) for s in self.strides], "layout": self.layout, "outputs": self.names,
                "output_layout": describe(self.layout, self.decoder), **decoder_metadata(self.decoder)}

    @classmethod
    def from_meta(cls, meta: dict) -> OutputFormat:
        """From an exported file's metadata (ONNX and OpenVINO: strings, lists as JSON; TorchScript: JSON values);
        no layout given = decoded."""
        strides = meta.get("stride") or []
        strides = json.loads(strides) if isinstance(strides, str) else strides
        return cls(meta.get("layout", "decoded"), tuple(float(s) for s in strides), decoder_from_meta(meta))


class ExportModel(nn.Module):
    """A Model (eval mode, a detection head last) whose forward returns the tensors of ``layout``.

    Runs the model's layers up to the head (Model.features), then the head's maps; every layout but
    per-level decodes them with the head's own decode_maps. ``dynamic_hw`` builds the anchor grid in the
    graph from the feature map sizes (Shape/Range ops) instead of storing it as a constant.
    ``nms`` (an EndToEndNMS) is required for layout "nms".
    """

    def __init__(self, model: nn.Module, layout: str = "decoded", dynamic_hw: bool = False, nms: nn.Module | None = None):
        super().__init__()
        _check_layout(layout)
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


# ---- post-processing: every layout back to the eval output [B, N, 5 + nc] -------------------------
def decode_outputs(outputs: Sequence, layout: str, strides: Sequence[float], decoder: BoxDecoder) -> torch.Tensor:
    """The eval-mode output [B, N, 5 + nc] (float32 torch) from an exported model's outputs.

    outputs: the model's outputs in order (numpy arrays or tensors), as onnxruntime returns them.
    ``split`` has no separate objectness: it comes back as obj = 1, cls = scores, which gives the same
    NMS scores (obj * cls) and detections. ``nms`` outputs are already final and are refused.
    """
    _check_layout(layout)
    if layout == "nms":
        raise ValueError("outputs of an end-to-end NMS export (num_dets, boxes, scores, classes) are final "
                         "detections: read them directly, there is nothing to decode")
    outs = [torch.as_tensor(np.asarray(o) if not isinstance(o, torch.Tensor) else o).float() for o in outputs]
    names = output_names(layout, strides, decoder)
    if len(outs) != len(names):
        raise ValueError(f"layout {layout!r} has {len(names)} outputs ({', '.join(names)}), got {len(outs)}")
    if layout == "decoded":
        return outs[0]
    if layout == "split":
        boxes, scores = outs
        return torch.cat((boxes, torch.ones_like(boxes[..., :1]), scores), -1)
    k = len(decoder.maps)
    levels = [tuple(outs[i:i + k]) for i in range(0, len(outs), k)]
    _check_levels(levels, decoder)
    return decode_levels(decoder, levels, strides)


def _check_levels(levels, decoder: BoxDecoder) -> None:
    """Per-level outputs must be [B, C, H, W] maps of one size per level, with the decoder's channels."""
    for k, maps in enumerate(levels):
        nc = int(maps[-1].shape[1]) if maps[-1].dim() == 4 else -1
        want = decoder.channels(nc)
        shapes = [tuple(m.shape) for m in maps]
        if any(m.dim() != 4 or m.shape[1] != c or m.shape[2:] != maps[0].shape[2:] for m, c in zip(maps, want)):
            expected = ", ".join(f"{n} [B, {c if n != decoder.maps[-1] else 'nc'}, H, W]"
                                 for n, c in zip(decoder.maps, want))
            raise ValueError(f"per-level outputs must be {expected}; got {', '.join(map(str, shapes))} at level {k}")


def decode_onnx_outputs(outputs: Sequence, meta: dict) -> torch.Tensor:
    """decode_outputs for an exported file's outputs, reading layout, strides and decoder from its metadata
    (``session.get_modelmeta().custom_metadata_map``). A file without this exporter's metadata is
    taken as the decoded layout: its first output."""
    if "layout" not in meta:
        return torch.as_tensor(np.asarray(outputs[0])).float()
    fmt = OutputFormat.from_meta(meta)
    if fmt.layout == "per-level" and not fmt.strides:
        raise ValueError("a per-level ONNX file must carry its strides in the metadata ('stride')")
    return fmt.decode(outputs)
