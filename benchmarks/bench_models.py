"""Benchmark this project's YAML models against official YOLOX, side by side in one run.

Run from the repository root as a module (``tests.reference`` lives in the repo, not in the
installed package, so ``python benchmarks/bench_models.py`` cannot import it):

    python -m benchmarks.bench_models                                  # all models, defaults
    python -m benchmarks.bench_models --models yoloxn yoloxs --runs 2  # a quick check
    python -m benchmarks.bench_models --threads 2 --fuse --channels-last

For every model it reports parameters, GFLOPs (torch.utils.flop_counter, at the model's input
size: 416 for n/t, 640 for the rest), build time, CPU eval latency at batch 1 (median of --runs
after --warmup, under torch.no_grad) at each of --sizes, and max|diff|: the largest absolute
difference between the two models' outputs for one random input, after the official weights
(with randomised BatchNorm) were loaded into ours through an official-format checkpoint.
max|diff| shows that the two are the same network: 0 when both run the same ops in the same
order, about 1e-5 after --fuse (the two fuse formulas round differently; outputs are boxes in pixels).

Build time of ours includes the stride dry run at 256x256; official's includes its bias init.
Latency ratio = official / ours: above 1 means ours is faster. yoloxs_rslu has no official
counterpart; its official columns show '-'. Needs the official ``yolox`` package; without it
every official column shows '-'. Exit status 1 when a comparison failed or outputs differ.

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
from models.weights import load_model
from models.yolo import Model
from tests.reference import OFFICIAL_SIZES, build_official, official_yolox, randomize_bn

# Model -> input side for its GFLOPs and max|diff| (official YOLOX evaluates nano/tiny at 416).
MODEL_INPUT = {"yoloxn": 416, "yoloxt": 416, "yoloxs": 640, "yoloxm": 640, "yoloxl": 640, "yoloxx": 640,
               "yoloxs_rslu": 640}
# Outputs are boxes in input pixels (up to 640) and probabilities; rounding differences (fusing,
# channels_last kernels) move float32 boxes by ~1e-5..1e-4, so anything above this means the networks differ.
DIFF_WARN = 1e-2
MODELS_DIR = Path(models.__file__).parent


@dataclass
class Row:
    """Measurements of one model; official values are None where there is no official model."""
    name: str
    size: int
    params: dict = field(default_factory=dict)    # variant ('ours'/'official') -> parameter count
    gflops: dict = field(default_factory=dict)    # variant -> GFLOPs at `size`
    build_s: dict = field(default_factory=dict)   # variant -> seconds to build
    diff: float | None = None                     # max|ours - official| (unfused)
    diff_fused: float | None = None               # the same for the BN-fused pair
    load_error: str | None = None                 # why the official weights did not load into ours
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
def official_gflops(model: nn.Module, size: int) -> float:
    """As Model.gflops: one eval forward of zeros at batch 1, 2 FLOPs per multiply-add."""
    model.eval()
    with FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, size, size))
    return counter.get_total_flops() / 1e9


@torch.no_grad()  # official fuse_conv_and_bn copy_()s outside no_grad, leaving non-leaf weights with grad_fn
def fused_copy(model: nn.Module, official: bool) -> nn.Module:
    """A BN-fused copy; the unfused model stays for the comparison."""
    model = copy.deepcopy(model)
    if official:
        from yolox.utils import fuse_model  # imported late: needs the torchvision stub installed first
        return fuse_model(model).eval()
    return model.fuse().eval()


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


def measure_official(row: Row, ours: Model) -> tuple[nn.Module, Model]:
    """Builds and counts the official model; returns it and ours with its weights (or ours as
    built, with row.load_error set, when they do not load)."""
    official, row.build_s["official"] = timed(build_official, row.name)
    randomize_bn(official)  # default BN (1, 0, 0, 1) is almost identity and would hide mismatches
    official.eval()
    row.params["official"] = count_params(official)
    row.gflops["official"] = official_gflops(official, row.size)
    try:
        ours = ours_with_official_weights(official, row.name)  # time the very network that is compared
    except ValueError as e:  # keep benchmarking (same architecture), but say so in the table
        row.load_error = str(e)
    return official, ours


def bench_model(name: str, opt, have_official: bool) -> Row:
    row = Row(name, MODEL_INPUT[name])
    ours, row.build_s["ours"] = build_ours(name)
    row.params["ours"] = count_params(ours)
    row.gflops["ours"] = ours.gflops(row.size)
    official = None
    if have_official and name in OFFICIAL_SIZES:
        official, ours = measure_official(row, ours)

    variants = {"ours": ours} if official is None else {"ours": ours, "official": official}
    if opt.fuse:
        for k in list(variants):
            variants[f"{k}_fused"] = fused_copy(variants[k], official=k == "official")
    # channels_last only after fusing: official fuse_conv_and_bn .view()s the weight, which fails on it
    variants = {k: prepare(m, opt.channels_last) for k, m in variants.items()}

    x = make_input(row.size, opt.channels_last)
    if official is not None and row.load_error is None:
        row.diff = max_abs_diff(variants["ours"], variants["official"], x)
        if opt.fuse:
            row.diff_fused = max_abs_diff(variants["ours_fused"], variants["official_fused"], x)

    for size in opt.sizes:
        for k, ms in median_latencies_ms(variants, make_input(size, opt.channels_last), opt.warmup, opt.runs).items():
            row.latency_ms[(k, size)] = ms
    return row


# ---- reporting --------------------------------------------------------------------------------
def fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def official_of(variant: str) -> str:
    """'ours' -> 'official', 'ours_fused' -> 'official_fused'."""
    return variant.replace("ours", "official")


def ratio(row: Row, variant: str, size: int) -> float | None:
    """official / ours latency: above 1 means ours is faster."""
    ours, official = row.latency_ms.get((variant, size)), row.latency_ms.get((official_of(variant), size))
    return None if ours is None or official is None else official / ours


def diff_cell(row: Row, diff: float | None) -> str:
    return "load failed" if row.load_error else fmt(diff, ".1e")


def table_columns(opt) -> list[tuple[str, Callable[[Row], str]]]:
    """(header, row -> cell) for every column, in order."""
    cols = [
        ("model", lambda r: r.name),
        ("input", lambda r: f"{r.size}x{r.size}"),
        ("params ours", lambda r: fmt(r.params.get("ours"), ",")),
        ("params official", lambda r: fmt(r.params.get("official"), ",")),
        ("GFLOPs ours", lambda r: fmt(r.gflops.get("ours"), ".2f")),
        ("GFLOPs official", lambda r: fmt(r.gflops.get("official"), ".2f")),
        ("build s ours", lambda r: fmt(r.build_s.get("ours"), ".2f")),
        ("build s official", lambda r: fmt(r.build_s.get("official"), ".2f")),
        ("max\\|diff\\|", lambda r: diff_cell(r, r.diff)),
    ]
    if opt.fuse:
        cols.append(("max\\|diff\\| fused", lambda r: diff_cell(r, r.diff_fused)))
    for variant, label in [("ours", "")] + ([("ours_fused", " fused")] if opt.fuse else []):
        for size in opt.sizes:
            cols += [
                (f"ms@{size}{label} ours", lambda r, v=variant, s=size: fmt(r.latency_ms.get((v, s)), ".1f")),
                (f"ms@{size}{label} official",
                 lambda r, v=official_of(variant), s=size: fmt(r.latency_ms.get((v, s)), ".1f")),
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
            warnings.append(f"WARNING: {r.name}: official weights did not load into ours, no output comparison; "
                            f"timed our freshly built model instead. load_model said: {first_lines(r.load_error, 4)}")
        for diff, label in ((r.diff, ""), (r.diff_fused, " (fused)")):
            if diff is not None and diff > DIFF_WARN:
                warnings.append(f"WARNING: {r.name}: max|diff|{label} {diff:.3g} > {DIFF_WARN:g}: "
                                f"ours and official differ")
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
    have_official = official_yolox() is not None  # also installs the torchvision stub yolox needs
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, official yolox: "
          f"{'yes' if have_official else 'not installed'}; runs {opt.runs}, warmup {opt.warmup}, "
          f"sizes {opt.sizes}, fuse {opt.fuse}, channels_last {opt.channels_last}; "
          f"{load_average()} before start", flush=True)
    rows = []
    for name in opt.models:
        t0 = time.perf_counter()
        rows.append(bench_model(name, opt, have_official))
        print(f"  {name}: done in {time.perf_counter() - t0:.1f} s", flush=True)
    print()
    print(markdown_table(rows, opt))
    print("\nratio = official ms / ours ms (> 1: ours is faster); max|diff| at the model's input size, "
          f"official weights (random BN) loaded into ours; {load_average()} at the end (this run included)")
    warnings = mismatch_warnings(rows)
    for line in warnings:
        print(line)
    return 1 if warnings else 0  # a failed comparison fails the run, so scripts and CI notice


if __name__ == "__main__":
    raise SystemExit(main())
