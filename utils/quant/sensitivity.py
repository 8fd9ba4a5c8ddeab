"""Which layers 8 bits hurt: quantise one layer group at a time, measure what it costs, and recommend the
groups to keep in float for the least mAP lost per unit of latency (export.py --int8 --sensitivity).

    judge = Judge("best.onnx", "data/demo.yaml", imgsz=256, held=held_images)
    report = analyse_sensitivity("best.onnx", calib_images, judge, workdir="runs/export")
    print(report.text())                        # the ranked table and the recommended hybrid
    report.hybrid.exclude                       # ONNX nodes to keep in float (onnxruntime's nodes_to_exclude)

Each group (utils/quant/layer_groups.py: the nodes one YAML row wrote) is quantised alone, everything else
in float, with onnxruntime's static QDQ quantisation on ranges calibrated once; the file is measured by
``Judge``: COCO mAP on the dataset's val split (what the user loses) and the error of its decoded boxes
and scores against the float file's on held images (how far the outputs move, relative to their spread).
The table ranks by mAP lost, then by output error.

The recommendation is greedy by value for money: groups that lost mAP alone, ordered by mAP lost per
share of the model's multiply-accumulates (the work int8 speeds up), are kept in float one more at a time,
each hybrid quantised and measured, until the measured loss against float is within the budget (1.5
points of mAP50-95 by default), the float share would pass MAX_FLOAT_SHARE, or MAX_STEPS hybrids were
tried; the best measured hybrid is kept either way and the report says whether it met the budget. Every
figure in the report is measured on a file, none is estimated.
"""
from __future__ import annotations

import contextlib
import io
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from utils.quant.cpu_int8 import int8_kernels_saturate
from utils.quant.layer_groups import LayerGroup, layer_groups

LOGGER = logging.getLogger("yolox5.export")
DEFAULT_BUDGET = 0.015   # mAP50-95 the hybrid may lose against float (1.5 points)
MAX_FLOAT_SHARE = 0.5    # the hybrid keeps at most this share of the multiply-accumulates in float
MAX_STEPS = 8            # hybrids tried at most
MIN_COST = 1e-3          # the cost of a group without convolutions (elementwise ops are not free)


@dataclass(frozen=True)
class Measure:
    map50: float
    map: float             # mAP50-95
    error: float           # decoded outputs against the float file's, on held images (normalised_error)

    def cells(self) -> str:
        return f"{self.map50:.3f} | {self.map:.3f} | {self.error:.4f}"


def normalised_error(got: np.ndarray, want: np.ndarray, weight: np.ndarray | None = None) -> float:
    """RMS of the difference over the spread (standard deviation) of ``want``: 0 equal, 1 an error as large
    as the outputs' own variation. Unlike cosine it sees an offset on near-constant maps (scores of a
    weak model sit close to one value, and an 8-bit grid shifts them all). ``weight`` [...] (one per row of
    the last axis: a box's score) weights both means: a box counts as much as its score, since the boxes of
    background anchors swing freely (a DFL box of score 0.015 went from 6 to 512 px wide in int8) and no
    detection keeps them."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    w = np.ones_like(want) if weight is None else np.broadcast_to(np.asarray(weight, np.float64)[..., None], want.shape)
    got, want, w = got.ravel(), want.ravel(), w.ravel()
    keep = np.isfinite(got) & np.isfinite(want) & (w > 0)
    got, want, w = got[keep], want[keep], w[keep]
    if not want.size:
        return 0.0
    spread = np.sqrt(np.average((want - np.average(want, weights=w)) ** 2, weights=w))
    return float(np.sqrt(np.average((got - want) ** 2, weights=w)) / max(spread, 1e-12))


class Judge:
    """Measures a file of one model (.onnx or OpenVINO .xml): COCO mAP on the val split of ``data`` and the
    error of its decoded boxes and scores (obj x cls) against the reference file's on ``held`` images
    [n, 3, H, W] (normalised_error, the larger of the two; each box weighted by its reference score). An ONNX file runs as written: its QDQ
    arithmetic exactly, what an 8-bit NPU computes up to its rounding, the same on every CPU; with
    ``kernels=True`` through onnxruntime's fused int8 kernels, what this CPU gives (utils/quant/cpu_int8.py)."""

    def __init__(self, reference, data, imgsz: int, held: np.ndarray, letterbox: str = "center",
                 batch_size: int = 8, workers: int = 0):
        from utils.data.dataset_yaml import load_data_config, split_source
        from utils.data.datasets import create_dataloader

        self.data = data if isinstance(data, dict) else load_data_config(data)
        self.imgsz, self.held = int(imgsz), torch.from_numpy(np.ascontiguousarray(held, dtype=np.float32))
        self.loader, _ = create_dataloader(imgsz=self.imgsz, batch_size=batch_size, stride=32, augment=False,
                                           workers=workers, prefix="sensitivity: ", nc=self.data["nc"],
                                           letterbox_mode=letterbox, **split_source(self.data, "val"))
        self.reference = self._outputs(self._load(reference))

    def _load(self, path, kernels: bool = False):
        """An ONNX file as written (its exact 8-bit arithmetic), or with onnxruntime's int8 ``kernels``."""
        from utils.infer.backends import OnnxModel, load_weights

        if Path(path).suffix.lower() == ".onnx":
            return OnnxModel(path, self.imgsz, as_written=not kernels)
        return load_weights(path, device=torch.device("cpu"), imgsz=self.imgsz)[0]

    def _outputs(self, model) -> tuple[np.ndarray, np.ndarray]:
        from utils.export.verify import boxes_scores

        return tuple(t.numpy() for t in boxes_scores(model(self.held)))

    def __call__(self, path, kernels: bool = False) -> Measure:
        return self.measure(self._load(path, kernels))

    def measure(self, model) -> Measure:
        """The same for a model called like OnnxModel: images [B, 3, H, W] -> decoded [B, N, 5 + nc]."""
        from utils.eval.evaluator import EvalOptions, evaluate

        with _quiet():
            _, _, map50, map_ = evaluate(model, self.loader, self.data, EvalOptions()).metrics[:4]
        (boxes, scores), (ref_boxes, ref_scores) = self._outputs(model), self.reference
        error = max(normalised_error(boxes, ref_boxes, weight=ref_scores.max(-1)), normalised_error(scores, ref_scores))
        return Measure(float(map50), float(map_), error)


@contextlib.contextmanager
def _quiet():
    """One evaluation per layer group: no result row, per-class table or progress bar for each (warnings still
    show: they go through logging's handlers)."""
    log = logging.getLogger("yolox5.val")
    level = log.level
    log.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        log.setLevel(level)


@dataclass
class GroupResult:
    group: LayerGroup
    share: float       # the group's share of the model's multiply-accumulates
    measure: Measure   # the model with this group alone in int8


@dataclass
class Hybrid:
    float_groups: list      # group names kept in float
    exclude: list           # their ONNX nodes (onnxruntime's nodes_to_exclude)
    share: float            # share of the multiply-accumulates kept in float
    measure: Measure
    path: Path
    within_budget: bool


@dataclass
class ToolchainResult:
    """One toolchain's own int8 model, measured, and the hybrid applied in its terms with the proof it took."""

    int8: Measure                  # the toolchain's full int8 model
    hybrid: Measure | None = None  # the same with the hybrid setting
    terms: dict = field(default_factory=dict)  # the setting in the toolchain's own terms (JSON-ready)
    effect: str = ""               # what changed in the converted model, e.g. "FakeQuantize 161 -> 139"
    latency_ms: dict = field(default_factory=dict)  # "fp32", "int8", "hybrid": batch 1, median, this CPU


@dataclass
class SensitivityReport:
    fp32: Measure
    int8: Measure
    groups: list              # GroupResult, ranked: the most harmful first
    budget: float
    hybrid: Hybrid | None     # None: full int8 is within the budget, or no group alone loses mAP
    tried: list = field(default_factory=list)  # every hybrid measured, in order
    latency_ms: dict = field(default_factory=dict)  # "fp32", "int8", "hybrid": onnxruntime, batch 1, median
    kernels: dict = field(default_factory=dict)     # "int8", "hybrid": Measure with onnxruntime's int8 kernels
    toolchains: dict = field(default_factory=dict)  # "openvino", "rknn": ToolchainResult

    def drop(self, m: Measure) -> float:
        return self.fp32.map - m.map

    def table(self) -> str:
        rows = ["| rank | group | module | nodes | MACs share | mAP50 | mAP50-95 | output error | mAP50-95 lost |",
                "|---|---|---|---|---|---|---|---|---|"]
        for k, r in enumerate(self.groups, 1):
            rows.append(f"| {k} | {r.group.name} | {r.group.description} | {len(r.group.nodes)} | {r.share:.1%} | "
                        f"{r.measure.cells()} | {self.drop(r.measure):+.3f} |")
        return "\n".join(rows)

    def summary(self) -> str:
        lines = ["| model | mAP50 | mAP50-95 | output error | mAP50-95 lost | latency ms |", "|---|---|---|---|---|---|"]
        named = [("fp32", self.fp32), ("int8", self.int8)] + ([("hybrid", self.hybrid.measure)] if self.hybrid else [])
        for name, m in named:
            ms = self.latency_ms.get(name)
            lines.append(f"| {name} | {m.cells()} | {self.drop(m):+.3f} | {f'{ms:.2f}' if ms else '-'} |")
        for name, m in self.kernels.items():
            lines.append(f"| {name}, onnxruntime int8 kernels | {m.cells()} | {self.drop(m):+.3f} | - |")
        note = ("QDQ files run as written (their exact 8-bit arithmetic); the 'onnxruntime int8 kernels' rows are "
                "what onnxruntime's fused kernels give on this CPU")
        if self.kernels and int8_kernels_saturate():
            note += (", which has no VNNI: its u8 x s8 products saturate in 16 bits (onnxruntime recommends 7-bit "
                     "weights, reduce_range, on such CPUs)")
        return "\n".join(lines) + "\n\n" + note

    def recommendation(self) -> str:
        lost = self.drop(self.int8)
        if self.hybrid is None and lost > self.budget:
            return (f"int8 loses {lost:.3f} mAP50-95 (budget {self.budget:.3f}), but no layer group loses mAP when "
                    f"quantised alone: the loss is spread over the model; quantisation-aware training "
                    f"(train.py --qat) is the remedy")
        if self.hybrid is None:
            return (f"int8 loses {lost:.3f} mAP50-95, within the budget of {self.budget:.3f}: quantise everything, "
                    f"no layer needs float")
        h = self.hybrid
        verdict = "within" if h.within_budget else "NOT within"
        return (f"int8 loses {lost:.3f} mAP50-95 (budget {self.budget:.3f}); keeping {', '.join(h.float_groups)} in "
                f"float ({len(h.exclude)} nodes, {h.share:.1%} of the multiply-accumulates) loses {self.drop(h.measure):.3f}, "
                f"{verdict} the budget ({len(self.tried)} hybrids measured)")

    def toolchain_table(self) -> str:
        """fp32 against int8 (and the hybrid) per toolchain: mAP50 / mAP50-95 on the val split, latency."""
        def cell(m: Measure | None) -> str:
            return f"{m.map50:.3f} / {m.map:.3f}" if m is not None else "-"

        def ms(d: dict, key: str) -> str:
            return f"{d[key]:.2f}" if key in d else "-"

        rows = ["| toolchain | fp32 | int8 | int8 + hybrid | latency ms fp32 / int8 / hybrid | hybrid setting took effect |",
                "|---|---|---|---|---|---|"]
        h = self.hybrid
        ort_rows = [("onnxruntime, QDQ as written", self.int8, h.measure if h else None, {}),
                    ("onnxruntime, int8 kernels", self.kernels.get("int8"), self.kernels.get("hybrid"), self.latency_ms)]
        for name, int8, hybrid, lat in ort_rows:
            if int8 is not None:
                rows.append(f"| {name} | {cell(self.fp32)} | {cell(int8)} | {cell(hybrid)} | {ms(lat, 'fp32')} / "
                            f"{ms(lat, 'int8')} / {ms(lat, 'hybrid')} | "
                            f"{f'{len(h.exclude)} nodes without QDQ' if h and hybrid else '-'} |")
        for name, t in self.toolchains.items():
            rows.append(f"| {name} | {cell(self.fp32)} | {cell(t.int8)} | {cell(t.hybrid)} | {ms(t.latency_ms, 'fp32')} / "
                        f"{ms(t.latency_ms, 'int8')} / {ms(t.latency_ms, 'hybrid')} | {t.effect or '-'} |")
        return "\n".join(rows)

    def terms(self) -> dict:
        """The hybrid in each toolchain's own terms (hybrid.json)."""
        h = self.hybrid
        return {"budget_map50_95": self.budget, "float_groups": h.float_groups if h else [],
                "onnxruntime": {"nodes_to_exclude": h.exclude if h else []},
                **{name: t.terms for name, t in self.toolchains.items() if t.terms}}

    def text(self) -> str:
        parts = ["int8 sensitivity, one layer group quantised at a time (onnxruntime QDQ):", self.table(),
                 self.summary(), self.recommendation()]
        parts.append("mAP50 / mAP50-95 of each toolchain's own int8 model (fp32: the float ONNX file):\n\n"
                     + self.toolchain_table())
        return "\n\n".join(parts)


def latency_ms(path, image: np.ndarray, runs: int = 30) -> float:
    """Median onnxruntime CPU time of one run of ``path`` on ``image`` [1, 3, H, W] (after one warm-up)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: np.ascontiguousarray(image, dtype=np.float32)}
    return median_ms(lambda: session.run(None, feed), runs)


def median_ms(fn: Callable, runs: int = 30) -> float:
    """Median wall time of ``fn()`` in ms, after one warm-up call."""
    fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)


def analyse_sensitivity(fp32_path, images: np.ndarray, judge: Callable, workdir, budget: float = DEFAULT_BUDGET,
                        describe: dict | None = None, quantize: Callable | None = None,
                        max_float_share: float = MAX_FLOAT_SHARE, max_steps: int = MAX_STEPS) -> SensitivityReport:
    """The ranked per-group table and the recommended hybrid of the float ONNX file ``fp32_path``, calibrated on
    ``images``; candidate files go to ``workdir`` (the hybrid stays there as <stem>.hybrid.int8.onnx)."""
    import onnx

    from utils.export.int8 import quantize_int8

    quantize = quantize or quantize_int8
    fp32_path, workdir = Path(fp32_path), Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    cache = workdir / f"{fp32_path.stem}.calibration.json"
    cache.unlink(missing_ok=True)  # ranges of this model and these images only
    candidate = workdir / f"{fp32_path.stem}.candidate.int8.onnx"
    groups = layer_groups(onnx.load(str(fp32_path)), describe)
    total = max(sum(g.macs for g in groups), 1)

    t0 = time.perf_counter()
    fp32 = judge(fp32_path)
    full = quantize(fp32_path, workdir / f"{fp32_path.stem}.full.int8.onnx", images, calibration_cache=cache)
    int8 = judge(full)
    results = []
    for k, g in enumerate(groups, 1):
        results.append(GroupResult(g, g.macs / total, judge(quantize(fp32_path, candidate, images, only=g.nodes,
                                                                     calibration_cache=cache))))
        LOGGER.info(f"sensitivity {k}/{len(groups)}: {g.name} alone in int8: mAP50-95 {results[-1].measure.map:.3f} "
                    f"(float {fp32.map:.3f})")
    results.sort(key=lambda r: (-(fp32.map - r.measure.map), -r.measure.error))
    report = SensitivityReport(fp32, int8, results, budget, None)
    if report.drop(int8) > budget:
        report.hybrid = _recommend(report, fp32_path, images, workdir, cache, judge, quantize, max_float_share,
                                   max_steps)
    LOGGER.info(f"sensitivity: {len(groups)} groups and {len(report.tried)} hybrids measured in "
                f"{time.perf_counter() - t0:.0f} s")
    image = images[:1]
    report.latency_ms = {"fp32": latency_ms(fp32_path, image), "int8": latency_ms(full, image)}
    report.kernels["int8"] = judge(full, kernels=True)
    if report.hybrid is not None:
        report.latency_ms["hybrid"] = latency_ms(report.hybrid.path, image)
        report.kernels["hybrid"] = judge(report.hybrid.path, kernels=True)
    for scratch in (candidate, full):  # the full int8 file is the exporter's <stem>.int8.onnx again
        scratch.unlink(missing_ok=True)
    return report


def _recommend(report: SensitivityReport, fp32_path: Path, images: np.ndarray, workdir: Path, cache: Path, judge, quantize,
               max_float_share: float, max_steps: int) -> Hybrid | None:
    """Keep the groups with the most mAP per unit of MACs in float, one more at a time, until within budget."""
    harmful = [r for r in report.groups if report.drop(r.measure) > 0]
    harmful.sort(key=lambda r: -report.drop(r.measure) / max(r.share, MIN_COST))
    chosen: list[GroupResult] = []
    best = None
    for r in harmful:
        if len(report.tried) == max_steps:
            break
        if sum(c.share for c in chosen) + r.share > max_float_share:
            continue
        chosen.append(r)
        exclude = [n for c in chosen for n in c.group.nodes]
        path = workdir / f"{fp32_path.stem}.hybrid{len(report.tried) + 1}.int8.onnx"
        measure = judge(quantize(fp32_path, path, images, exclude=exclude, calibration_cache=cache))
        hybrid = Hybrid([c.group.name for c in chosen], exclude, sum(c.share for c in chosen), measure, path,
                        report.drop(measure) <= report.budget)
        report.tried.append(hybrid)
        LOGGER.info(f"hybrid {len(report.tried)}: {', '.join(hybrid.float_groups)} in float: mAP50-95 "
                    f"{measure.map:.3f} (float {report.fp32.map:.3f}, budget {report.budget:.3f})")
        if best is None or measure.map > best.measure.map:
            best = hybrid
        if hybrid.within_budget:
            break
    if best is None:  # nothing lost mAP alone, yet the whole did: the loss is spread over the model
        return None
    final = workdir / f"{fp32_path.stem}.hybrid.int8.onnx"
    best.path.replace(final)
    for h in report.tried:
        if h is not best:
            h.path.unlink(missing_ok=True)
    best.path = final
    return best
