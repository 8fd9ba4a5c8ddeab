"""Checks an export against torch: onnx.checker, onnxruntime on a real-size input, max |diff| per output.

    result = verify_onnx("m.onnx", wrapped, im, reference=model)   # wrapped: the traced ExportModel
    print(result.text()); result.raise_if_failed()

Two comparisons per export:
1. every output of the file against the traced torch module on the same input (the export itself);
2. for the decoded / per-level / split layouts, the file's outputs decoded by our post-processing
   (the ExportModel's OutputFormat.decode) against the eval output of ``reference`` (the model as loaded,
   before BN fusion and Focus rewriting), compared as boxes (input pixels) and scores (obj * cls).
A difference is acceptable when max |a - b| <= atol + rtol * max |b|: float32 1e-3 and 1e-3 (a deep
net's own float32 noise reaches ~1e-4 of the output range: torch float32 against float64 differs that
much; a wrong grid, order or channel is off by a stride or more), float16 2e-2 and 1e-2 (5e-2 and 5e-2
for a float16 file's decoded outputs against the float32 model). Every check runs two images; dynamic
axes are exercised with a third input (batch 2, or one max-stride step smaller).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from models.heads.base import boxes_and_scores
from utils.export.compare import cosine
from utils.infer.outputs import OutputFormat

TOLERANCES = {torch.float32: (1e-3, 1e-3), torch.float16: (2e-2, 1e-2)}  # (atol, rtol)
# a float16 file's decoded outputs against the float32 model: exp() turns float16's 1e-3 relative error
# on log w, log h of ~10 into a few percent of the box size
DECODED_FP16_TOLERANCE = (5e-2, 5e-2)
# an int8 QDQ file (train.py --qat) against its fake-quantised torch model: onnxruntime's int8 kernels round
# each layer their own way (a value on a rounding tie goes one step the other way), and later layers grow
# such steps, so element-wise tolerances do not apply; outputs must still point the same way. A trained
# damoyolo_s on the demo set: cosine 0.9995-0.9998 for box outputs, 0.986-0.999 for sparse class maps.
QDQ_MIN_COSINE = 0.97


class ExportCheckError(RuntimeError):
    """An exported file does not reproduce the torch model."""


@dataclass
class Diff:
    name: str
    max_abs: float
    ref_max: float
    tol: float
    measure: str = "max |diff|"  # or "1 - cosine" (int8 QDQ files)

    @property
    def ok(self) -> bool:
        return bool(np.isfinite(self.max_abs)) and self.max_abs <= self.tol

    def line(self) -> str:
        return (f"    {self.name:<28} {self.measure} {self.max_abs:.3g} (values up to {self.ref_max:.3g}; "
                f"tolerance {self.tol:.3g}) {'ok' if self.ok else 'FAILED'}")


@dataclass
class Verification:
    path: Path
    what: str
    diffs: list[Diff] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(d.ok for d in self.diffs)

    @property
    def max_abs(self) -> float:
        return max((d.max_abs for d in self.diffs), default=0.0)

    def text(self) -> str:
        head = f"Verification of {self.path.name} ({self.what}): {'PASSED' if self.ok else 'FAILED'}"
        return "\n".join([head] + [d.line() for d in self.diffs] + [f"    {n}" for n in self.notes])

    def raise_if_failed(self) -> None:
        if not self.ok:
            bad = ", ".join(f"{d.name} ({d.max_abs:.3g} > {d.tol:.3g})" for d in self.diffs if not d.ok)
            raise ExportCheckError(f"{self.path}: the export does not reproduce the torch model: {bad}\n{self.text()}")


def diff(name: str, got, want, atol: float, rtol: float) -> Diff:
    """Diff of two arrays of equal shape (a shape mismatch is an error naming both shapes)."""
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        raise ExportCheckError(f"{name}: the export gives shape {got.shape}, torch gives {want.shape}")
    if not want.size:
        return Diff(name, 0.0, 0.0, atol)
    with np.errstate(invalid="ignore"):  # equal values (also equal infinities) differ by 0; a NaN anywhere fails
        err = np.nan_to_num(np.where(got == want, 0.0, np.abs(got - want)), nan=np.inf, posinf=np.inf)
    finite = np.abs(want[np.isfinite(want)])
    ref_max = float(finite.max()) if finite.size else 0.0
    return Diff(name, float(err.max()), ref_max, atol + rtol * ref_max)


def cosine_diff(name: str, got, want, min_cosine: float = QDQ_MIN_COSINE) -> Diff:
    """1 - cosine similarity of two arrays, acceptable up to 1 - min_cosine."""
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        raise ExportCheckError(f"{name}: the export gives shape {got.shape}, torch gives {want.shape}")
    finite = np.abs(want[np.isfinite(want)])
    return Diff(name, 1.0 - cosine(got, want), float(finite.max()) if finite.size else 0.0, 1.0 - min_cosine,
                "1 - cosine")


def check_onnx_file(path) -> None:
    """onnx.checker with full shape inference; errors name the file."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as e:  # noqa: BLE001 - re-raised with the file named
        raise ExportCheckError(f"{path}: onnx.checker rejects the file: {e}") from None


def ort_session(path, providers: Sequence[str] | None = None, as_written: bool = False):
    """An onnxruntime session; ``as_written``: no graph optimisation, so a QDQ file runs every QuantizeLinear /
    DequantizeLinear as written (the exact 8-bit arithmetic) instead of fusing them into int8 kernels, whose
    rounding differs and which saturate on CPUs without VNNI (utils/quant/cpu_int8.py)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if as_written:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=list(providers or ["CPUExecutionProvider"]))


def run_onnx(session, x: torch.Tensor) -> list[np.ndarray]:
    inp = session.get_inputs()[0]
    dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
    return session.run(None, {inp.name: x.detach().cpu().numpy().astype(dtype)})


def _torch_outputs(module, x: torch.Tensor) -> list[np.ndarray]:
    with torch.no_grad():
        out = module(x)
    out = out if isinstance(out, (tuple, list)) else (out,)
    return [o.detach().float().cpu().numpy() for o in out]


def boxes_scores(decoded: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(boxes [B, N, 4], scores [B, N, nc]) of an eval output, in float32 (models.heads.base.boxes_and_scores)."""
    return boxes_and_scores(decoded.float())


def compare_outputs(got: Sequence[np.ndarray], want: Sequence[np.ndarray], fmt: OutputFormat, atol: float,
                    rtol: float, suffix: str = "", half: bool = False) -> list[Diff]:
    """One Diff per output; the nms layout is compared by compare_nms."""
    if fmt.layout == "nms":
        return compare_nms(got, want, atol, rtol, suffix, tie=NMS_TIE[half], count_share=NMS_COUNT_SHARE[half])
    return [diff(n + suffix, g, w, atol, rtol) for n, g, w in zip(fmt.names, got, want)]


NMS_TIE = {False: 1e-5, True: 1e-2}  # scores this close may swap order / cross a threshold (float32, float16)
NMS_COUNT_SHARE = {False: 0.0, True: 0.1}  # share of detections that may differ (float16 decides near-ties apart)


def compare_nms(got, want, atol: float, rtol: float, suffix: str = "", tie: float = 1e-5,
                count_share: float = 0.0) -> list[Diff]:
    """(num_dets, boxes, scores, classes) of the file against torch's, robust to the order of near-ties.

    Each torch detection must have a file detection of the same class and a close box, unless its score
    is within ``tie`` of another kept score or of the cut-off (float differences may then legitimately
    swap it): those are counted, not failed. num_dets must agree and unmatched detections be none, up
    to ``count_share`` of the detections (0 for float32; float16 files decide near-ties differently).
    """
    n_got, b_got, s_got, c_got = (np.asarray(a) for a in got)
    n_want, b_want, s_want, c_want = (np.asarray(a) for a in want)
    n_got, n_want = n_got.reshape(-1).astype(np.int64), n_want.reshape(-1).astype(np.int64)
    count_tol = float(np.floor(count_share * n_want.max())) if n_want.size else 0.0
    diffs = [Diff("num_dets" + suffix, float(np.abs(n_got - n_want).max()), float(n_want.max()), count_tol)]
    if not diffs[0].ok:
        return diffs
    k_common = np.minimum(n_got, n_want)
    rows = np.arange(s_want.shape[1])[None, :] < k_common[:, None]  # [B, max_det] rows both have
    diffs.append(diff("scores (sorted)" + suffix, np.sort(s_got * rows, 1), np.sort(s_want * rows, 1), atol, rtol))
    box_max = float(np.abs(b_want[rows]).max()) if rows.any() else 0.0
    box_tol = atol + rtol * box_max
    worst, unmatched, ambiguous = 0.0, 0, 0
    for b in range(len(n_want)):
        k, k_got = int(n_want[b]), int(n_got[b])
        scores = s_want[b, :k].astype(np.float64)
        free = np.ones(k_got, dtype=bool)
        for i in range(k):
            close = free & (c_got[b, :k_got] == c_want[b, i]) & \
                (np.abs(b_got[b, :k_got] - b_want[b, i]).max(1) <= box_tol)
            if close.any():
                j = int(np.flatnonzero(close)[np.argmin(np.abs(s_got[b, :k_got][close] - scores[i]))])
                free[j] = False
                worst = max(worst, float(np.abs(b_got[b, j] - b_want[b, i]).max()))
                continue
            others = np.delete(scores, i)
            at_cutoff = abs(scores[i] - scores.min()) <= tie
            if at_cutoff or (others.size and np.abs(others - scores[i]).min() <= tie):
                ambiguous += 1
            else:
                unmatched += 1
    diffs.append(Diff("boxes + classes (matched)" + suffix, worst, box_max, box_tol))
    diffs.append(Diff(f"unmatched detections ({ambiguous} near-ties skipped)" + suffix, float(unmatched), 0.0,
                      count_tol))
    return diffs


def verify_onnx(path, wrapped, im: torch.Tensor, reference=None, dynamic: Sequence[str] = (),
                providers: Sequence[str] | None = None, quantised: bool = False) -> Verification:
    """Check ``path`` against ``wrapped`` (the traced ExportModel, whose ``format`` says what the outputs are)
    and, decoded, against ``reference``; a ``quantised`` (int8 QDQ) file by cosine (QDQ_MIN_COSINE), its QDQ
    graph run as written: what is checked is the file, not onnxruntime's int8 kernels on this CPU."""
    fmt = wrapped.format
    check_onnx_file(path)
    atol, rtol = TOLERANCES.get(im.dtype, TOLERANCES[torch.float32])
    session = ort_session(path, providers, as_written=quantised)
    result = Verification(Path(path), f"onnxruntime {session.get_providers()[0]} vs torch, 2 inputs "
                                      f"{list(im.shape)} {str(im.dtype).replace('torch.', '')}"
                                      + (", QDQ run as written (the file's 8-bit arithmetic)" if quantised else ""))
    g = torch.Generator(device=im.device).manual_seed(12345)
    other = (torch.rand(im.shape, generator=g, device=im.device) * 255).to(im.dtype)
    inputs = [im, other]  # another image: a value traced into a constant by mistake shows here
    if "batch" in dynamic:
        inputs.append(torch.cat((im, im.flip(-1)))[: max(2, len(im) + 1)])  # another batch size
    if "hw" in dynamic:  # another size: one max-stride step smaller (cropped), or larger (padded)
        h, w = im.shape[2:]
        step = int(max(fmt.strides))
        smaller = h > step and w > step
        inputs.append(im[..., :h - step, :w - step].contiguous() if smaller
                      else torch.nn.functional.pad(im, (0, step, 0, step), value=114.0))
    per_input = []
    for k, x in enumerate(inputs):
        suffix = "" if k < 2 else f" @{list(x.shape)}"
        got = run_onnx(session, x)
        if quantised:
            diffs = [cosine_diff(n + suffix, g, w) for n, g, w in zip(fmt.names, got, _torch_outputs(wrapped, x))]
        else:
            diffs = compare_outputs(got, _torch_outputs(wrapped, x), fmt, atol, rtol, suffix,
                                    half=im.dtype == torch.float16)
        if reference is not None and fmt.layout != "nms":
            with torch.no_grad():
                want = boxes_scores(reference(x.to(next(reference.parameters()).dtype)))
            decoded = boxes_scores(fmt.decode(got))
            if quantised:
                diffs += [cosine_diff("decoded boxes (px)" + suffix, decoded[0], want[0]),
                          cosine_diff("decoded scores" + suffix, decoded[1], want[1])]
            else:
                d_atol, d_rtol = DECODED_FP16_TOLERANCE if im.dtype == torch.float16 else (atol, rtol)
                diffs += [diff("decoded boxes (px)" + suffix, decoded[0], want[0], d_atol, d_rtol),
                          diff("decoded scores" + suffix, decoded[1], want[1], d_atol, d_rtol)]
        per_input.append(diffs)
    # the two images at the export shape: one line per output, the worse of the two
    result.diffs = [max(pair, key=lambda d: d.max_abs / d.tol if d.tol else d.max_abs)
                    for pair in zip(per_input[0], per_input[1])]
    result.diffs += [d for diffs in per_input[2:] for d in diffs]
    if reference is not None and fmt.layout != "nms":
        result.notes.append("decoded: the file's outputs through the head's decoder (utils.infer.outputs) vs the "
                            "eval output of the model as loaded (before fusion)")
    return result


def verify_torchscript(path, wrapped, im: torch.Tensor) -> Verification:
    """Load the saved TorchScript file and compare its outputs with the traced ExportModel's."""
    atol, rtol = TOLERANCES.get(im.dtype, TOLERANCES[torch.float32])
    from utils.export.torchscript import load_torchscript

    loaded = load_torchscript(path, map_location=im.device)
    result = Verification(Path(path), f"torch.jit.load vs torch, input {list(im.shape)}")
    result.diffs += compare_outputs(_torch_outputs(loaded, im), _torch_outputs(wrapped, im), wrapped.format, atol, rtol,
                                    half=im.dtype == torch.float16)
    return result
