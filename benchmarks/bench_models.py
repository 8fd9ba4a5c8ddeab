"""Benchmark this project's YAML models against their reference code (official YOLOX, EasyCV's YOLOX-PAI),
side by side in one run.

Run from the repository root as a module (``tests.reference`` lives in the repo, not in the
installed package, so ``python benchmarks/bench_models.py`` cannot import it):

    python -m benchmarks.bench_models                                  # all models, defaults
    python -m benchmarks.bench_models --models yoloxn yoloxs --runs 2  # a quick check
    python -m benchmarks.bench_models --threads 2 --fuse --channels-last
    python -m benchmarks.bench_models --models pai_yoloxs pai_yoloxs_asff_tood3 --fuse --sizes 640

For every model it reports parameters, GFLOPs (torch.utils.flop_counter, at the model's input
size: 416 for n/t, 640 for the rest), build time, CPU eval latency at batch 1 (median of --runs
after --warmup, under torch.no_grad) at each of --sizes, and max|diff|: the largest absolute
difference between the two models' outputs for one random input, after the reference's weights
(with randomised norm layers) were loaded into ours. max|diff| shows that the two are the same
network: 0 when both run the same ops in the same order, about 1e-5 after --fuse (the fuse
formulas round differently; outputs are boxes in pixels).

References: official YOLOX (``yolox`` 0.3.0) for the yolox* files, loaded into ours through an
official-format checkpoint; EasyCV 0.11.7's YOLOX-PAI modules (tests/easycv_reference.py) for the
pai_* files, built from the same config and loaded by EasyCV's module names; DAMO-YOLO (modelscope
1.40.2, tests/damo_reference.py) for the damoyolo_* files, built by DAMO's build_local_model from its
configs (fed RGB, its outputs laid out as ours). --fuse adds the deployed forms: ours folds RepVGG
blocks / RepConvs and BatchNorm (model.fuse(), what export.py does); official YOLOX its fuse_model;
EasyCV and DAMO what their exports do before TorchScript / Blade / TensorRT (switch_to_deploy on every
RepVGG block or RepConv, BatchNorm left unfolded).

Build time of ours includes the stride dry run at 256x256; official's includes its bias init.
Latency ratio = reference / ours: above 1 means ours is faster. yoloxs_rslu has no reference; its
ref columns show '-', as do all of a reference that is not installed. Exit status 1 when a
comparison failed or outputs differ.

Timings need an otherwise idle machine: when another process keeps a core busy, torch's OpenMP
threads wait for each other at every op. On 2 cores with one busy process, yoloxs at 416 took
3.3 s a forward with 2 threads against 0.11 s with 1 thread. The header and the last line print
the load average; on a shared machine ``--threads 1`` is the steadier choice.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from benchmarks import load_average
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import models
from models.damo import DAMO_LAYOUTS, damo_to_project
from models.easycv import easycv_to_project
from models.weights import load_model, load_state_dict_checked
from models.yolo import Model
from tests.damo_reference import build_damo_model, damo_configs_root, damo_root
from tests.damo_reference import deploy as damo_deploy
from tests.easycv_reference import PAI_CONFIGS, easycv_module, easycv_pai_model, easycv_root
from tests.reference import OFFICIAL_SIZES, build_official, official_yolox, randomize_bn

# Model -> input side for its GFLOPs and max|diff| (official YOLOX evaluates nano/tiny at 416).
MODEL_INPUT = {"yoloxn": 416, "yoloxt": 416, "yoloxs": 640, "yoloxm": 640, "yoloxl": 640, "yoloxx": 640,
               "yoloxs_rslu": 640, **{name: 640 for name in PAI_CONFIGS},
               **{f"damoyolo_{size}": 640 for size in DAMO_LAYOUTS}}
# Outputs are boxes in input pixels (up to 640) and probabilities; rounding differences (fusing,
# channels_last kernels) move float32 boxes by ~1e-5..1e-4, so anything above this means the networks differ.
DIFF_WARN = 1e-2
MODELS_DIR = Path(models.__file__).parent


@dataclass
class Row:
    """Measurements of one model; reference values are absent where it has no (installed) reference."""
    name: str
    size: int
    reference: str | None = None                  # 'official YOLOX' / 'EasyCV', None: no reference
    params: dict = field(default_factory=dict)    # variant ('ours'/'ref') -> parameter count
    gflops: dict = field(default_factory=dict)    # variant -> GFLOPs at `size`
    build_s: dict = field(default_factory=dict)   # variant -> seconds to build
    diff: float | None = None                     # max|ours - ref| (unfused)
    diff_fused: float | None = None               # the same for the BN-fused pair
    load_error: str | None = None                 # why the reference's weights did not load into ours
    latency_ms: dict = field(default_factory=dict)  # (variant, input side) -> median ms


# ---- building ---------------------------------------------------------------------------------
def timed(fn, *args):
    """(fn(*args), seconds it took)."""
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def build_ours(name: str) -> tuple[Model, float]:
    return timed(Model, str(MODELS_DIR / f"{name}.yaml"))


def ours_with_official_weights(official: nn.Module, name: str) -> Model:
    """Our model loaded from an official-format checkpoint ({'model': state_dict}), as users load one."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}_official.pt"
        torch.save({"model": official.state_dict()}, path)
        return load_model(path, cfg=str(MODELS_DIR / f"{name}.yaml"))


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def reference_gflops(model: nn.Module, size: int) -> float:
    """As Model.gflops: one eval forward of zeros at batch 1, 2 FLOPs per multiply-add."""
    model.eval()
    with FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, size, size))
    return counter.get_total_flops() / 1e9


@torch.no_grad()  # official fuse_conv_and_bn copy_()s outside no_grad, leaving non-leaf weights with grad_fn
def fused_copy(model: nn.Module, reference: str | None) -> nn.Module:
    """The deployed form of a copy (see the module doc); the unfused model stays for the comparison."""
    model = copy.deepcopy(model)
    if reference == "official YOLOX":
        from yolox.utils import fuse_model  # imported late: needs the torchvision stub installed first
        return fuse_model(model).eval()
    if reference == "EasyCV":
        repvgg = easycv_module("easycv.models.backbones.repvgg_yolox_backbone").RepVGGBlock
        for m in model.modules():
            if isinstance(m, repvgg):
                m.switch_to_deploy()
        return model.eval()
    if reference == "DAMO-YOLO":
        damo_deploy(model.damo)  # DAMO's converter: every RepConv folded, BatchNorm left for TensorRT
        return model.eval()
    return model.fuse().eval()


class DamoModel(nn.Module):
    """DAMO's detector on the BGR images ours takes (DAMO's pipeline feeds RGB), its (scores, x1y1x2y2 boxes)
    written as our eval output [B, N, 5 + nc] (cx, cy, w, h, objectness 1, scores) for max|diff|."""

    def __init__(self, damo: nn.Module):
        super().__init__()
        self.damo = damo

    def forward(self, x):
        scores, boxes = self.damo(x.flip(1))
        return torch.cat(((boxes[..., :2] + boxes[..., 2:]) / 2, boxes[..., 2:] - boxes[..., :2],
                          torch.ones_like(scores[..., :1]), scores), -1)


class EasyCVModel(nn.Module):
    """EasyCV's YOLOX forward in eval mode (head over neck) on the ModuleDict the tests build."""

    def __init__(self, parts: nn.ModuleDict):
        super().__init__()
        self.backbone, self.head = parts["backbone"], parts["head"]

    def forward(self, x):
        return self.head(self.backbone(x))


def prepare(model: nn.Module, channels_last: bool) -> nn.Module:
    model.eval()
    return model.to(memory_format=torch.channels_last) if channels_last else model


def make_input(size: int, channels_last: bool, seed: int = 0) -> torch.Tensor:
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 255  # image-like range
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


# ---- measuring --------------------------------------------------------------------------------
@torch.no_grad()
def max_abs_diff(a: nn.Module, b: nn.Module, x: torch.Tensor) -> float:
    ya, yb = a(x), b(x)
    if ya.shape != yb.shape:
        raise ValueError(f"output shapes differ: {tuple(ya.shape)} vs {tuple(yb.shape)}")
    return (ya - yb).abs().max().item()


@torch.no_grad()
def median_latencies_ms(variants: dict[str, nn.Module], x: torch.Tensor, warmup: int, runs: int) -> dict:
    """Median ms per variant. Runs are interleaved (order reversed every other run) so that load
    from other processes and thermal drift hit every variant alike instead of whichever ran last."""
    for _ in range(warmup):
        for model in variants.values():
            model(x)
    times = {k: [] for k in variants}
    for i in range(runs):
        for k in (list(variants) if i % 2 == 0 else list(reversed(variants))):
            t0 = time.perf_counter()
            variants[k](x)
            times[k].append(time.perf_counter() - t0)
    return {k: 1000 * statistics.median(v) for k, v in times.items()}


def build_reference(name: str, reference: str) -> nn.Module:
    """The reference model in eval mode with random norm statistics: default BN (1, 0, 0, 1) is almost
    identity and would hide mismatches."""
    if reference == "EasyCV":
        return EasyCVModel(easycv_pai_model(name, nc=80)).eval()
    if reference == "DAMO-YOLO":
        return DamoModel(build_damo_model(name[len("damoyolo_"):], nc=80)).eval()
    return randomize_bn(build_official(name)).eval()


def ours_with_reference_weights(ref: nn.Module, name: str, reference: str) -> Model:
    if reference == "DAMO-YOLO":  # the model file's input step flips BGR to RGB, as DamoModel does
        ours = Model(str(MODELS_DIR / f"{name}.yaml"))
        layout = DAMO_LAYOUTS[name[len("damoyolo_"):]]
        load_state_dict_checked(ours, damo_to_project(ref.damo.state_dict(), layout, nc=80), source=f"DAMO {name}")
        return ours
    if reference == "EasyCV":  # by EasyCV's names; load_model would add EasyCV's input normalisation
        ours = Model(str(MODELS_DIR / f"{name}.yaml"))
        state = {f"{part}.{k}": v for part in ("backbone", "head") for k, v in getattr(ref, part).state_dict().items()}
        load_state_dict_checked(ours, easycv_to_project(state), source=f"EasyCV {name}")
        return ours
    return ours_with_official_weights(ref, name)


def measure_reference(row: Row, ours: Model) -> tuple[nn.Module, Model]:
    """Builds and counts the reference model; returns it and ours with its weights (or ours as
    built, with row.load_error set, when they do not load)."""
    ref, row.build_s["ref"] = timed(build_reference, row.name, row.reference)
    row.params["ref"] = count_params(ref)
    row.gflops["ref"] = reference_gflops(ref, row.size)
    try:
        ours = ours_with_reference_weights(ref, row.name, row.reference)  # time the very network compared
    except ValueError as e:  # keep benchmarking (same architecture), but say so in the table
        row.load_error = str(e)
    return ref, ours


def reference_of(name: str, available: set) -> str | None:
    """Which reference a model file has, if it is installed."""
    ref = ("official YOLOX" if name in OFFICIAL_SIZES else "EasyCV" if name in PAI_CONFIGS
           else "DAMO-YOLO" if name.startswith("damoyolo_") else None)
    return ref if ref in available else None


def bench_model(name: str, opt, available: set) -> Row:
    row = Row(name, MODEL_INPUT[name], reference_of(name, available))
    ours, row.build_s["ours"] = build_ours(name)
    row.params["ours"] = count_params(ours)
    row.gflops["ours"] = ours.gflops(row.size)
    ref = None
    if row.reference is not None:
        ref, ours = measure_reference(row, ours)

    variants = {"ours": ours} if ref is None else {"ours": ours, "ref": ref}
    if opt.fuse:
        for k in list(variants):
            variants[f"{k}_fused"] = fused_copy(variants[k], row.reference if k == "ref" else None)
    # channels_last only after fusing: official fuse_conv_and_bn .view()s the weight, which fails on it
    variants = {k: prepare(m, opt.channels_last) for k, m in variants.items()}

    x = make_input(row.size, opt.channels_last)
    if ref is not None and row.load_error is None:
        row.diff = max_abs_diff(variants["ours"], variants["ref"], x)
        if opt.fuse:
            row.diff_fused = max_abs_diff(variants["ours_fused"], variants["ref_fused"], x)

    for size in opt.sizes:
        for k, ms in median_latencies_ms(variants, make_input(size, opt.channels_last), opt.warmup, opt.runs).items():
            row.latency_ms[(k, size)] = ms
    return row


# ---- reporting --------------------------------------------------------------------------------
def fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def ref_of(variant: str) -> str:
    """'ours' -> 'ref', 'ours_fused' -> 'ref_fused'."""
    return variant.replace("ours", "ref")


def ratio(row: Row, variant: str, size: int) -> float | None:
    """reference / ours latency: above 1 means ours is faster."""
    ours, ref = row.latency_ms.get((variant, size)), row.latency_ms.get((ref_of(variant), size))
    return None if ours is None or ref is None else ref / ours


def diff_cell(row: Row, diff: float | None) -> str:
    return "load failed" if row.load_error else fmt(diff, ".1e")


def table_columns(opt) -> list[tuple[str, Callable[[Row], str]]]:
    """(header, row -> cell) for every column, in order."""
    cols = [
        ("model", lambda r: r.name),
        ("ref", lambda r: r.reference or "-"),
        ("input", lambda r: f"{r.size}x{r.size}"),
        ("params ours", lambda r: fmt(r.params.get("ours"), ",")),
        ("params ref", lambda r: fmt(r.params.get("ref"), ",")),
        ("GFLOPs ours", lambda r: fmt(r.gflops.get("ours"), ".2f")),
        ("GFLOPs ref", lambda r: fmt(r.gflops.get("ref"), ".2f")),
        ("build s ours", lambda r: fmt(r.build_s.get("ours"), ".2f")),
        ("build s ref", lambda r: fmt(r.build_s.get("ref"), ".2f")),
        ("max\\|diff\\|", lambda r: diff_cell(r, r.diff)),
    ]
    if opt.fuse:
        cols.append(("max\\|diff\\| fused", lambda r: diff_cell(r, r.diff_fused)))
    for variant, label in [("ours", "")] + ([("ours_fused", " fused")] if opt.fuse else []):
        for size in opt.sizes:
            cols += [
                (f"ms@{size}{label} ours", lambda r, v=variant, s=size: fmt(r.latency_ms.get((v, s)), ".1f")),
                (f"ms@{size}{label} ref",
                 lambda r, v=ref_of(variant), s=size: fmt(r.latency_ms.get((v, s)), ".1f")),
                (f"ratio@{size}{label}", lambda r, v=variant, s=size: fmt(ratio(r, v, s), ".2f")),
            ]
    return cols


def markdown_table(rows: list[Row], opt) -> str:
    cols = table_columns(opt)
    cells = [[h for h, _ in cols]] + [[cell(r) for _, cell in cols] for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(cols))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(line, widths)) + " |" for line in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def first_lines(text: str, n: int) -> str:
    """load_model lists every bad key; a few lines name the problem."""
    lines = text.splitlines()
    return "\n".join(lines[:n] + (["    ..."] if len(lines) > n else []))


def mismatch_warnings(rows: list[Row]) -> list[str]:
    warnings = []
    for r in rows:
        if r.load_error:
            warnings.append(f"WARNING: {r.name}: {r.reference}'s weights did not load into ours, no output comparison; "
                            f"timed our freshly built model instead. load_model said: {first_lines(r.load_error, 4)}")
        for diff, label in ((r.diff, ""), (r.diff_fused, " (fused)")):
            if diff is not None and diff > DIFF_WARN:
                warnings.append(f"WARNING: {r.name}: max|diff|{label} {diff:.3g} > {DIFF_WARN:g}: "
                                f"ours and {r.reference} differ")
    return warnings


# ---- main -------------------------------------------------------------------------------------
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=list(MODEL_INPUT), choices=list(MODEL_INPUT), metavar="NAME",
                   help=f"models to benchmark (default: all of {', '.join(MODEL_INPUT)})")
    p.add_argument("--runs", type=int, default=5, help="timed forward passes per model and size (median)")
    p.add_argument("--warmup", type=int, default=2, help="untimed forward passes first")
    p.add_argument("--sizes", type=int, nargs="+", default=[640, 416], help="input sides to time")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--fuse", action="store_true", help="also time BN-fused models")
    p.add_argument("--channels-last", action="store_true", help="channels_last models and inputs, for both")
    opt = p.parse_args(argv)
    if opt.runs < 1 or opt.warmup < 0:
        p.error("--runs must be >= 1 and --warmup >= 0")
    return opt




def main(argv=None) -> int:
    opt = parse_args(argv)
    if opt.threads is not None:
        torch.set_num_threads(opt.threads)
    available = {name for name, present in (("official YOLOX", official_yolox() is not None),  # + torchvision stub
                                            ("EasyCV", easycv_root() is not None),
                                            ("DAMO-YOLO", damo_root() is not None and damo_configs_root() is not None))
                 if present}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, references installed: "
          f"{', '.join(sorted(available)) or 'none'}; runs {opt.runs}, warmup {opt.warmup}, "
          f"sizes {opt.sizes}, fuse {opt.fuse}, channels_last {opt.channels_last}; "
          f"{load_average()} before start", flush=True)
    rows = []
    for name in opt.models:
        t0 = time.perf_counter()
        rows.append(bench_model(name, opt, available))
        print(f"  {name}: done in {time.perf_counter() - t0:.1f} s", flush=True)
    print()
    print(markdown_table(rows, opt))
    print("\nratio = reference ms / ours ms (> 1: ours is faster); max|diff| at the model's input size, "
          f"the reference's weights (random norms) loaded into ours; {load_average()} at the end (this run included)")
    warnings = mismatch_warnings(rows)
    for line in warnings:
        print(line)
    return 1 if warnings else 0  # a failed comparison fails the run, so scripts and CI notice


if __name__ == "__main__":
    raise SystemExit(main())
