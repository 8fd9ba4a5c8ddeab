"""How close a converted model (OpenVINO IR, RKNN, int8 ONNX) is to the float32 torch model.

    comparison = compare_with_torch(run, wrapped, model, held, path="m.int8.xml", runtime="OpenVINO CPU")
    print(comparison.text())          # cosine per output, decoded boxes and scores, top-100 agreement

``run`` is the converted model as a function: a float32 batch [B, 3, H, W] (BGR 0-255, letterboxed) in,
its outputs (numpy, in the order of the ExportModel's ``format.names``) out. Three comparisons on the same images:

1. each output against the traced torch module (``wrapped``, the ExportModel that wrote the ONNX):
   max |diff| and cosine similarity, the figure NPU toolchains print for a quantised layer;
2. (every layout but ``nms``) the outputs decoded by the head's decoder (utils/infer/outputs.py) against
   the eval output of the model as loaded: boxes in pixels and scores (obj * cls);
3. detection agreement: both sides through our NMS (val.py's settings), and the share of torch's
   top-100 detections per image that the converted model also finds among its own detections (up to
   val.py's 300): same class, IoU >= 0.5, matched one to one, greedily in torch's score order.
   Cosine can stay high while the few boxes that matter move; this says whether the detections a user
   sees survive conversion. The converted side is not cut at 100 too: a detection ranked 100th by
   torch and 101st by the converted model (near-equal scores are common) is found, not lost.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

TOP_K = 100  # torch's detections per image that are looked for
MAX_DET = 300  # the converted model's detections per image they may be found among (val.py's max_det)
MATCH_IOU = 0.5  # a converted detection matches a torch one of the same class from this IoU
NMS_CONF, NMS_IOU = 0.001, 0.65  # val.py's NMS: every detection mAP would count


def cosine(a, b) -> float:
    """Cosine similarity over the entries finite in both (an untrained model's exp() may overflow)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    den = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / den) if den else float(np.array_equal(a, b))


def max_diff(a, b) -> float:
    """max |a - b| over the entries finite in both."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    keep = np.isfinite(a) & np.isfinite(b)
    return float(np.abs(a[keep] - b[keep]).max()) if keep.any() else 0.0


def max_abs(a) -> float:
    a = np.abs(np.asarray(a, dtype=np.float64))
    a = a[np.isfinite(a)]
    return float(a.max()) if a.size else 0.0


def batches(images: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Batches of exactly batch_size (a fixed-batch model), the last one filled by repeating images."""
    if batch_size <= 1:
        return [images[i:i + 1] for i in range(len(images))]
    reps = -(-len(images) // batch_size) * batch_size
    idx = np.arange(reps) % len(images)
    return [images[idx[i:i + batch_size]] for i in range(0, reps, batch_size)]


@dataclass
class Agreement:
    """Top-k detections of torch found again by the converted model (summed over images)."""

    top_k: int
    iou_thres: float
    n_ref: int  # torch's detections, at most top_k per image
    n_got: int  # the converted model's, at most MAX_DET per image
    matched: int
    mean_iou: float  # over the matched pairs

    @property
    def share(self) -> float:
        if self.n_ref == 0:  # nothing to find: agreement means finding nothing either
            return float(self.n_got == 0)
        return self.matched / self.n_ref

    def line(self, ref: str = "torch", got: str = "the converted model") -> str:
        return (f"    top-{self.top_k} detections: {self.share:.1%} of {ref}'s {self.n_ref} found again (same class, "
                f"IoU >= {self.iou_thres:g}; mean IoU {self.mean_iou:.3f}); {got} gave {self.n_got}")


def detection_agreement(ref: Sequence[torch.Tensor], got: Sequence[torch.Tensor], top_k: int = TOP_K,
                        iou_thres: float = MATCH_IOU) -> Agreement:
    """Look for the first ``top_k`` rows of ``ref`` among all rows of ``got``, per image.

    ref, got: one [K, 6] tensor per image, (x1, y1, x2, y2, score, class), sorted by score (as
    utils.infer.nms.non_max_suppression returns them). In ref's score order each detection takes the still
    unmatched detection of got with the same class and the highest IoU, when that IoU >= iou_thres.
    """
    from utils.boxes import box_iou_xyxy

    n_ref = n_got = 0
    ious: list[float] = []
    for r, g in zip(ref, got):
        r, g = r[:top_k].float(), g.float()
        n_ref, n_got = n_ref + len(r), n_got + len(g)
        if not len(r) or not len(g):
            continue
        iou = box_iou_xyxy(r[:, :4], g[:, :4])  # [R, G]
        same_box = (r[:, None, :4] == g[None, :, :4]).all(-1)  # zero-area boxes (exp underflow) have IoU 0 with
        iou = torch.where(same_box, torch.ones_like(iou), iou)  # themselves; equal boxes are the same detection
        iou = torch.where(r[:, 5:6] == g[None, :, 5], iou, torch.zeros_like(iou))  # other classes never match
        free = torch.ones(len(g), dtype=torch.bool)
        for i in range(len(r)):
            candidates = torch.where(free, iou[i], torch.full_like(iou[i], -1.0))
            j = int(candidates.argmax())
            if candidates[j] >= iou_thres:
                free[j] = False
                ious.append(float(candidates[j]))
    return Agreement(top_k, iou_thres, n_ref, n_got, len(ious), float(np.mean(ious)) if ious else 0.0)


@dataclass
class ConversionComparison:
    path: Path
    runtime: str  # what ran the converted model, e.g. "OpenVINO CPU", "rknn-toolkit2 simulator, rk3588, int8"
    n_images: int
    lines: list = field(default_factory=list)  # (name, max |diff|, values up to, cosine)
    agreement: Agreement | None = None
    source: str = "images"
    reference: str = "fp32 torch"

    @property
    def cosine(self) -> float:
        """The worst cosine similarity over the outputs and the decoded boxes and scores."""
        return min((c for _, _, _, c in self.lines), default=1.0)

    def text(self) -> str:
        out = [f"{self.path.name} ({self.runtime}) vs {self.reference}, {self.n_images} {self.source}:"]
        out += [f"    {n:<22} max |diff| {d:.4g} (values up to {r:.4g}), cosine {c:.5f}" for n, d, r, c in self.lines]
        if self.agreement is not None:
            out.append(self.agreement.line())
        return "\n".join(out)


def detections(outputs: Sequence, fmt, max_det: int = MAX_DET) -> list[torch.Tensor]:
    """Per image [K, 6] (x1, y1, x2, y2, score, class), K <= max_det, from a model's outputs in the format
    ``fmt`` (an OutputFormat): decoded and through our NMS, or the rows an ``nms`` export keeps."""
    if fmt.layout != "nms":
        return eval_detections(fmt.decode(outputs), max_det)
    num, boxes, scores, classes = (torch.as_tensor(np.asarray(o)) for o in outputs)
    counts = [int(n) for n in num.reshape(-1).tolist()]  # int32 in the file; float where torch's were cast
    return [torch.cat((boxes[b, :n].float(), scores[b, :n, None].float(), classes[b, :n, None].float()), 1)[:max_det]
            for b, n in enumerate(counts)]


def eval_detections(decoded: torch.Tensor, max_det: int = MAX_DET) -> list[torch.Tensor]:
    """An eval output [B, N, 5 + nc] through our NMS with val.py's thresholds."""
    from utils.infer.nms import non_max_suppression

    return non_max_suppression(decoded, NMS_CONF, NMS_IOU, max_det=max_det)


def _torch_run(module: torch.nn.Module) -> Callable[[np.ndarray], list[np.ndarray]]:
    """A torch module as a function of the same form as ``run``: numpy batch in, numpy outputs out."""
    param = next(module.parameters())

    def run(batch: np.ndarray) -> list[np.ndarray]:
        with torch.no_grad():
            out = module(torch.from_numpy(batch).to(param.device, param.dtype))
        out = out if isinstance(out, (tuple, list)) else (out,)
        return [o.detach().float().cpu().numpy() for o in out]

    return run


def _run_all(run: Callable, images: np.ndarray, batch_size: int, n_outputs: int) -> list[np.ndarray]:
    """Each output of ``run`` over all images, concatenated (the repeats filling the last batch dropped)."""
    per_batch = [[np.asarray(o) for o in run(b)] for b in batches(images, batch_size)]
    if len(per_batch[0]) != n_outputs:
        raise ValueError(f"the converted model gives {len(per_batch[0])} outputs, the export has {n_outputs}")
    return [np.concatenate([outs[k] for outs in per_batch])[:len(images)] for k in range(n_outputs)]


def compare_outputs(got: Sequence[np.ndarray], want: Sequence[np.ndarray], names: Sequence[str]) -> list[tuple]:
    """(name, max |diff|, values up to, cosine) per output; shapes must agree."""
    lines = []
    for n, g, w in zip(names, got, want):
        if g.shape != w.shape:
            raise ValueError(f"{n}: the converted model gives shape {g.shape}, torch gives {w.shape}")
        lines.append((n, max_diff(g, w), max_abs(w), cosine(g, w)))
    return lines


def compare_with_torch(run: Callable[[np.ndarray], Sequence], wrapped: torch.nn.Module, reference: torch.nn.Module,
                       images: np.ndarray, path, runtime: str, batch_size: int = 1,
                       top_k: int = TOP_K) -> ConversionComparison:
    """Run the converted model and float32 torch on ``images`` [n, 3, H, W] and compare (see the module doc).
    ``wrapped`` is the ExportModel the converted file came from: its ``format`` says what the outputs are."""
    from utils.export.verify import boxes_scores

    fmt = wrapped.format
    images = np.ascontiguousarray(images, dtype=np.float32)
    got = _run_all(run, images, batch_size, len(fmt.names))
    want = _run_all(_torch_run(wrapped), images, batch_size, len(fmt.names))
    result = ConversionComparison(Path(path), runtime, len(images), compare_outputs(got, want, fmt.names))
    if fmt.layout != "nms":  # the decoded output of the model as loaded (before fusion and rewriting)
        eval_out = torch.from_numpy(np.concatenate(_run_all(_torch_run(reference), images, batch_size, 1)))
        (box_g, score_g), (box_w, score_w) = boxes_scores(fmt.decode(got)), boxes_scores(eval_out)
        for n, g, w in (("decoded boxes (px)", box_g, box_w), ("decoded scores", score_g, score_w)):
            result.lines.append((n, max_diff(g, w), max_abs(w), cosine(g, w)))
        ref_dets = eval_detections(eval_out, top_k)
    else:
        ref_dets = detections(want, fmt, top_k)
    result.agreement = detection_agreement(ref_dets, detections(got, fmt), top_k)
    return result
