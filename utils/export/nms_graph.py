"""NMS inside the exported graph: ONNX NonMaxSuppression plus fixed-size, padded outputs.

    num_dets, boxes, scores, classes = EndToEndNMS(max_det=100, iou_thres=0.45, conf_thres=0.25)(boxes, scores)

Inputs: boxes [B, N, 4] (x1, y1, x2, y2, input pixels) and scores [B, N, nc] (obj * cls).
Outputs (TensorRT EfficientNMS's layout, so the same post-processing reads either):
    num_dets [B, 1] int32, boxes [B, max_det, 4] float (x1, y1, x2, y2), scores [B, max_det] float,
    classes [B, max_det] int32; rows past num_dets are padding (box 0, score 0, class -1).

Multi-label, class-aware: NonMaxSuppression runs per (image, class) over every anchor whose score
for that class is > conf_thres, keeps boxes of IoU <= iou_thres, at most max_det per class; the
max_det best of all classes are kept. (val.py's NMS keeps one best class per anchor instead, so
its detections can differ slightly for anchors with two confident classes.)

Everything after NonMaxSuppression uses opset-10 ops (Gather, Equal, Where, Concat, TopK): the
selected [K, 3] (image, class, anchor) rows are scored, spread over a [B, K + max_det] table padded
with -1, and TopK picks each image's best max_det.
"""
from __future__ import annotations

import torch
from torch import nn

from utils.infer.nms import nms

MIN_OPSET = 10  # NonMaxSuppression-10, TopK-10 (k as an input)
NMS_DEFAULTS = {"max_det": 100, "iou_thres": 0.45, "conf_thres": 0.25}  # export.py --nms's


def check_nms_args(max_det, iou_thres, conf_thres) -> None:
    if int(max_det) < 1:
        raise ValueError(f"max_det must be >= 1, got {max_det}")
    for name, v in (("iou_thres", iou_thres), ("conf_thres", conf_thres)):
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {v}")


class _NonMaxSuppression(torch.autograd.Function):
    """ONNX NonMaxSuppression (center_point_box 0); forward computes the same in torch for tracing."""

    @staticmethod
    def forward(ctx, boxes, scores, max_output, iou_threshold, score_threshold):
        # boxes [B, N, 4] xyxy, scores [B, C, N] -> selected [K, 3] int64 (image, class, anchor).
        # The exporter records this Function as one NonMaxSuppression node (symbolic); the torch ops
        # computing its value must stay out of the trace, or they leave dangling nodes in the graph
        # that break the exporter's passes ("Argument passed to at() was not in the map").
        state = torch._C._get_tracing_state()
        torch._C._set_tracing_state(None)
        try:
            return _select(boxes, scores, int(max_output), float(iou_threshold), float(score_threshold))
        finally:
            torch._C._set_tracing_state(state)

    @staticmethod
    def symbolic(g, boxes, scores, max_output, iou_threshold, score_threshold):
        selected = g.op("NonMaxSuppression", boxes, scores, max_output, iou_threshold, score_threshold,
                        center_point_box_i=0)
        # [K, 3] with K unknown: without this the exporter takes the traced K as fixed and folds the
        # shapes computed from it into constants, and the graph breaks on any other image.
        selected.setType(selected.type().with_dtype(torch.int64).with_sizes([None, 3]))
        return selected


def _select(boxes: torch.Tensor, scores: torch.Tensor, max_out: int, iou: float, conf: float) -> torch.Tensor:
    """NonMaxSuppression's semantics in torch: boxes [B, N, 4] xyxy, scores [B, C, N] -> [K, 3]."""
    rows = []
    for b in range(scores.shape[0]):
        for c in range(scores.shape[1]):
            s = scores[b, c]  # [N]
            idx = (s > conf).nonzero().squeeze(1)  # [n] (ONNX: strictly greater)
            kept = idx[nms(boxes[b, idx], s[idx], iou, max_keep=max_out)] if idx.numel() else idx
            rows.append(torch.stack((torch.full_like(kept, b), torch.full_like(kept, c), kept), 1))
    return torch.cat(rows) if rows else torch.zeros(0, 3, dtype=torch.long, device=boxes.device)


class EndToEndNMS(nn.Module):
    """(boxes [B, N, 4] xyxy, scores [B, N, nc]) -> (num_dets, boxes, scores, classes), see module doc."""

    def __init__(self, max_det: int = NMS_DEFAULTS["max_det"], iou_thres: float = NMS_DEFAULTS["iou_thres"],
                 conf_thres: float = NMS_DEFAULTS["conf_thres"]):
        super().__init__()
        check_nms_args(max_det, iou_thres, conf_thres)
        self.max_det, self.iou_thres, self.conf_thres = int(max_det), float(iou_thres), float(conf_thres)

    def forward(self, boxes: torch.Tensor, scores: torch.Tensor):
        B, N, nc = scores.shape  # traced sizes: a dynamic batch stays dynamic
        selected = _NonMaxSuppression.apply(
            boxes, scores.transpose(1, 2).contiguous(),  # [B, nc, N]
            torch.tensor([self.max_det], dtype=torch.long), torch.tensor([self.iou_thres]),
            torch.tensor([self.conf_thres]))  # [K, 3]
        b, c, a = selected[:, 0], selected[:, 1], selected[:, 2]  # [K] each
        det_scores = scores.reshape(-1).index_select(0, (b * N + a) * nc + c)  # [K]
        det_boxes = boxes.reshape(-1, 4).index_select(0, b * N + a)  # [K, 4]
        images = torch.arange(B, dtype=torch.long).unsqueeze(1)  # [B, 1]
        table = torch.where(b.unsqueeze(0) == images, det_scores.unsqueeze(0),
                            torch.full_like(det_scores, -1.0).unsqueeze(0))  # [B, K]: -1 off the image
        pad = torch.full((1, self.max_det), -1.0, dtype=scores.dtype).expand(table.shape[0], -1)
        top_scores, top = torch.cat((table, pad), 1).topk(self.max_det, dim=1)  # [B, max_det]
        valid = top_scores > -0.5  # [B, max_det]; real scores are >= 0
        top = top.reshape(-1)  # [B * max_det] rows of the padded [K + max_det] tables
        box_rows = torch.cat((det_boxes, torch.zeros(self.max_det, 4, dtype=boxes.dtype)), 0)  # [K + max_det, 4]
        class_rows = torch.cat((c, torch.full((self.max_det,), -1, dtype=torch.long)), 0)  # [K + max_det]
        out_boxes = box_rows.index_select(0, top).reshape(-1, self.max_det, 4) * valid.unsqueeze(2).to(boxes.dtype)
        out_classes = torch.where(valid, class_rows.index_select(0, top).reshape(-1, self.max_det),
                                  torch.full_like(top, -1).reshape(-1, self.max_det))
        out_scores = top_scores * valid.to(scores.dtype)
        num_dets = valid.to(torch.int32).sum(1, keepdim=True).to(torch.int32)  # [B, 1]
        return num_dets, out_boxes, out_scores, out_classes.to(torch.int32)
