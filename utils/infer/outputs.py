"""What exported models output, and how those outputs decode back to the eval output: the layouts, their
names and metadata (OutputFormat), read through the head's decoder (models/heads/base.py). The runtimes
(utils/infer/backends.py) and every check of an export (utils/export) read files with it; the torch module
that writes the layouts is utils/export/layouts.ExportModel.

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

from models.heads import decoder_from_meta, decoder_metadata
from models.heads.base import BoxDecoder, decode_levels

LAYOUTS = ("decoded", "per-level", "split", "nms")
DEPLOY_LAYOUTS = ("per-level", "split", "decoded")  # --deploy-outputs; the first is the default


def describe(layout: str, decoder: BoxDecoder) -> str:
    """The metadata's one-line description of a layout's outputs."""
    check_layout(layout)
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
    check_layout(layout)
    if layout == "decoded":
        return ["output"]
    if layout == "per-level":
        return [f"{name}_s{int(s)}" for s in strides for name in decoder.maps]
    if layout == "split":
        return ["boxes", "scores"]
    return ["num_dets", "boxes", "scores", "classes"]


def check_layout(layout: str) -> None:
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
        check_layout(self.layout)

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


# ---- post-processing: every layout back to the eval output [B, N, 5 + nc] -------------------------
def decode_outputs(outputs: Sequence, layout: str, strides: Sequence[float], decoder: BoxDecoder) -> torch.Tensor:
    """The eval-mode output [B, N, 5 + nc] (float32 torch) from an exported model's outputs.

    outputs: the model's outputs in order (numpy arrays or tensors), as onnxruntime returns them.
    ``split`` has no separate objectness: it comes back as obj = 1, cls = scores, which gives the same
    NMS scores (obj * cls) and detections. ``nms`` outputs are already final and are refused.
    """
    check_layout(layout)
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
