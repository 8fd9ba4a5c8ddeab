"""Output layouts of exported models, and the one decoder that maps each back to the eval output.

    wrapped = ExportModel(model, layout="per-level")            # what export.py traces
    decoded = decode_outputs(outputs, "per-level", strides)    # -> [B, N, 5 + nc], like model(x) in eval
    decoded = decode_onnx_outputs(session.run(None, feed), session.get_modelmeta().custom_metadata_map)

Layouts (``--deploy-outputs``; the ONNX output names in brackets):

- ``decoded`` [output]: the eval-mode output [B, N, 5 + nc] (cx, cy, w, h in input pixels, sigmoid
  obj, sigmoid cls), built with Concat only (no ScatterND). The default without --deploy. One 8-bit
  scale cannot hold box pixels (hundreds) and probabilities (0..1) at once, so not for int8 NPUs.
- ``per-level`` [reg_s8, obj_s8, cls_s8, reg_s16, ...]: per level the raw box regression
  [B, 4, H, W] (x, y offsets in cells, log w, log h: values of a few units), sigmoid objectness
  [B, 1, H, W] and sigmoid class probabilities [B, nc, H, W]. The graph ends at the prediction
  convs: no Reshape, Transpose, Exp or Concat on the outputs, every tensor in a narrow range of its
  own. The default with --deploy; what the RKNN, ACUITY (A311D) and most 8-bit NPU flows want, the
  decoding (grid, stride, exp) done on the CPU by ``decode_outputs``.
- ``split`` [boxes, scores]: boxes [B, N, 4] (cx, cy, w, h, input pixels) and scores [B, N, nc]
  (obj * cls) as two tensors, each quantised with its own scale. For runtimes that decode in the
  graph and read two tensors (TensorRT / OpenVINO, EfficientNMS-style plugins).
- ``nms`` [num_dets, boxes, scores, classes]: ``split`` followed by ONNX NonMaxSuppression
  (utils/export/nms_graph.py). Already post-processed: ``decode_outputs`` refuses it.

Anchors are ordered level by level, row-major, in every layout (the official YOLOX order).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from utils.boxes import cxcywh_to_xyxy
from utils.grid import make_grid

LAYOUTS = ("decoded", "per-level", "split", "nms")
DEPLOY_LAYOUTS = ("per-level", "split")
DESCRIPTIONS = {
    "decoded": "output [B, N, 5+nc]: cx, cy, w, h (input pixels), sigmoid obj, sigmoid cls; anchors level-major, row-major",
    "per-level": "per level s: reg_s [B, 4, H, W] raw (x, y cell offsets, log w, log h), obj_s [B, 1, H, W] sigmoid, "
                 "cls_s [B, nc, H, W] sigmoid; box = ((x, y) + cell) * s, exp(log w, log h) * s",
    "split": "boxes [B, N, 4]: cx, cy, w, h (input pixels); scores [B, N, nc]: sigmoid obj * sigmoid cls",
    "nms": "num_dets [B, 1] int32; boxes [B, max_det, 4] x1, y1, x2, y2 (input pixels); scores [B, max_det]; "
           "classes [B, max_det] int32; rows past num_dets are padding (class -1)",
}


def output_names(layout: str, strides: Sequence[int]) -> list[str]:
    """The ONNX output names of ``layout`` for a model with these level strides."""
    _check_layout(layout)
    if layout == "decoded":
        return ["output"]
    if layout == "per-level":
        return [f"{kind}_s{int(s)}" for s in strides for kind in ("reg", "obj", "cls")]
    if layout == "split":
        return ["boxes", "scores"]
    return ["num_dets", "boxes", "scores", "classes"]


def _check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise ValueError(f"output layout must be one of {LAYOUTS}, got {layout!r}")


class ExportModel(nn.Module):
    """A Model (eval mode, DetectX last) whose forward returns the tensors of ``layout``.

    The DetectX layer's per-instance ``export_levels`` switch is set on the model it is given (use a
    copy, see utils/export/rewrite.prepare_for_export). ``dynamic_hw`` builds the anchor grid in the
    graph from the feature map sizes (Shape/Range ops) instead of storing it as a constant.
    ``nms`` (an EndToEndNMS) is required for layout "nms".
    """

    def __init__(self, model: nn.Module, layout: str = "decoded", dynamic_hw: bool = False, nms: nn.Module | None = None):
        super().__init__()
        _check_layout(layout)
        detect = getattr(model, "detect", None)
        if detect is None:
            raise ValueError("export needs a detection model: the model has no DetectX layer")
        if layout == "nms" and nms is None:
            raise ValueError("layout 'nms' needs an EndToEndNMS module")
        detect.export_levels = True
        self.model, self.layout, self.dynamic_hw, self.nms = model, layout, dynamic_hw, nms
        self.strides = [float(s) for s in model.stride.tolist()]

    def forward(self, x: torch.Tensor):
        levels = self.model(x)  # per level (reg [B, 4, H, W], obj, cls logits)
        if self.layout == "per-level":
            return tuple(t for reg, obj, cls in levels for t in (reg, obj.sigmoid(), cls.sigmoid()))
        out = torch.cat([self._flat(torch.cat((reg, obj.sigmoid(), cls.sigmoid()), 1)) for reg, obj, cls in levels],
                        2).permute(0, 2, 1)  # [B, N, 5 + nc], DetectX's eval layout before decoding
        grid, stride = self._grid([reg for reg, _, _ in levels], out.dtype)
        xy, wh = (out[..., 0:2] + grid) * stride, torch.exp(out[..., 2:4]) * stride  # [B, N, 2] each
        if self.layout == "decoded":
            return torch.cat((xy, wh, out[..., 4:]), -1)
        boxes, scores = torch.cat((xy, wh), -1), out[..., 5:] * out[..., 4:5]  # [B, N, 4], [B, N, nc]
        if self.layout == "split":
            return boxes, scores
        return self.nms(cxcywh_to_xyxy(boxes).float(), scores.float())  # NonMaxSuppression takes float32 only

    def _flat(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> [B, C, H * W]; with fixed H, W a Reshape to a constant shape (no Shape ops)."""
        if self.dynamic_hw:
            return x.flatten(2)
        return x.reshape(-1, int(x.shape[1]), int(x.shape[2]) * int(x.shape[3]))

    def _grid(self, maps: list[torch.Tensor], dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """(grid [N, 2] cell (x, y), stride [N, 1]), DetectX's anchors: constants unless dynamic_hw."""
        if not self.dynamic_hw:
            shapes = [tuple(int(v) for v in m.shape[2:]) for m in maps]
            return make_grid(shapes, self.strides, dtype, maps[0].device)
        grids, strides = [], []
        for m, s in zip(maps, self.strides):
            h, w = m.shape[2], m.shape[3]  # traced sizes
            yv, xv = torch.meshgrid(torch.arange(h, dtype=dtype, device=m.device),
                                    torch.arange(w, dtype=dtype, device=m.device), indexing="ij")
            g = torch.stack((xv, yv), 2).reshape(-1, 2)  # [H * W, 2]
            grids.append(g)
            strides.append(torch.ones_like(g[:, :1]) * s)
        return torch.cat(grids), torch.cat(strides)


# ---- post-processing: every layout back to the eval output [B, N, 5 + nc] -------------------------
def decode_outputs(outputs: Sequence, layout: str, strides: Sequence[float]) -> torch.Tensor:
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
    expected = len(output_names(layout, strides))
    if len(outs) != expected:
        raise ValueError(f"layout {layout!r} has {expected} outputs ({', '.join(output_names(layout, strides))}), "
                         f"got {len(outs)}")
    if layout == "decoded":
        return outs[0]
    if layout == "split":
        boxes, scores = outs
        return torch.cat((boxes, torch.ones_like(boxes[..., :1]), scores), -1)
    return _decode_levels(outs, strides)


def _decode_levels(outs: list[torch.Tensor], strides: Sequence[float]) -> torch.Tensor:
    """Per-level (reg, obj, cls) maps -> [B, N, 5 + nc], the arithmetic of DetectX.decode."""
    shapes, flat = [], []
    for k in range(0, len(outs), 3):
        reg, obj, cls = outs[k:k + 3]
        if reg.dim() != 4 or reg.shape[1] != 4 or obj.shape[1] != 1 or reg.shape[2:] != cls.shape[2:]:
            raise ValueError(f"per-level outputs must be reg [B, 4, H, W], obj [B, 1, H, W], cls [B, nc, H, W]; "
                             f"got {tuple(reg.shape)}, {tuple(obj.shape)}, {tuple(cls.shape)} at level {k // 3}")
        shapes.append(tuple(reg.shape[2:]))
        flat.append(torch.cat((reg, obj, cls), 1).flatten(2))  # [B, 5 + nc, H * W]
    out = torch.cat(flat, 2).permute(0, 2, 1)  # [B, N, 5 + nc]
    grid, stride = make_grid(shapes, [float(s) for s in strides], out.dtype, out.device)  # [N, 2], [N, 1]
    return torch.cat(((out[..., 0:2] + grid) * stride, torch.exp(out[..., 2:4]) * stride, out[..., 4:]), -1)


def layout_of(meta: dict) -> tuple[str, list[float]]:
    """(layout, strides) from an exported ONNX file's metadata (custom_metadata_map); files without
    this exporter's metadata are taken as the decoded layout."""
    import json

    layout = meta.get("layout", "decoded")
    _check_layout(layout)
    strides = json.loads(meta["stride"]) if "stride" in meta else []
    return layout, [float(s) for s in strides]


def decode_onnx_outputs(outputs: Sequence, meta: dict) -> torch.Tensor:
    """decode_outputs for an ONNX file's outputs, reading layout and strides from its metadata
    (``session.get_modelmeta().custom_metadata_map``). A file without this exporter's metadata is
    taken as the decoded layout: its first output."""
    if "layout" not in meta:
        return torch.as_tensor(np.asarray(outputs[0])).float()
    layout, strides = layout_of(meta)
    if layout == "per-level" and not strides:
        raise ValueError("a per-level ONNX file must carry its strides in the metadata ('stride')")
    return decode_outputs(outputs, layout, strides)
