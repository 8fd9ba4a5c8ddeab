"""Benchmark ComputeXLoss and its batched SimOTA assigner against official YOLOX, side by side in one run.

Run from the repository root as a module (``tests.reference`` and ``tests.simota_reference`` live
in the repo, not in the installed package):

    python -m benchmarks.bench_loss                                  # batch 16, 20 and 100 GTs per image
    python -m benchmarks.bench_loss --batch 4 --gts 20 --runs 2      # a quick check
    python -m benchmarks.bench_loss --skip-official --threads 1

Inputs: one batch at 640x640 (8400 anchors, strides 8/16/32), 80 classes, random head outputs
(per level [B, 85, H, W]: xy offsets 0.5 + 0.5 N, log-wh 1 + 0.5 N, logits 2 N - 2:
tests.support.random_preds) and --gts boxes per image with sides uniform in 8..300 px
and centres uniform inside the image, as [M, 6] targets (image, class, cx, cy, w, h) normalised.
Every measurement sees the very same tensors (fixed seeds).

Measured, each in a fresh subprocess:
  assign        utils.loss.simota_sparse.simota_assign alone, its inputs prepared by the loss
                (ComputeXLoss.assign_inputs; preparation not timed)
  assign dense  utils.loss.simota_dense.simota_assign_dense, the dense batched reference of the tests,
                on the same inputs
  loss          ComputeXLoss(model, {"simota_prior": prior})(preds, targets), forward only (preds
                without grad, so no autograd graph is kept); loss+bwd adds backward() into preds
                that require grad, as in training
  official      official YOLOX 0.3.0 YOLOXHead.get_losses via tests.simota_reference.official_losses
                (box_or_center; the time includes that helper's unpacking of our tensors, small
                next to the per-image assignment)
  reference     tests.simota_reference.reference_losses, the plain per-image, per-GT reference
Median ms per batch over --runs after --warmup for ours; official and reference are slow (seconds
per image), so they run --official-runs / --reference-runs times without warm-up (the table says
how many). Peak extra memory = peak RSS during warm-up and runs minus the RSS once the inputs are
built (torch's CPU allocator is invisible to tracemalloc); the peak RSS is reset through
/proc/self/clear_refs first, so whatever the process did before (imports, building inputs) is
not counted. With --device cuda ours runs on the GPU and its peak is max_memory_allocated over the
same span; official and reference still run on the CPU (tests.simota_reference builds its grids on
the CPU), so their ratios then compare a CPU run with a GPU run.

The loss items (5*iou, obj, cls, l1) of ours, official and reference with the box_or_center prior
(the one 0.3.0 implements) are printed with their max relative difference: the timings compare
the same computation. Targets (from the issue, CPU): our whole loss >= 20x faster than official
at 20 GTs per image and >= 40x at 100, with a peak well below official's (taken as at most half).
Exit status 1 when a measurement failed or the loss items differ by more than ITEMS_RTOL; a
missed target is reported, not an error (timings vary from machine to machine).

Timings need an otherwise idle machine (see benchmarks/bench_models.py): the header and the last
line print the load average.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Callable

import torch
from benchmarks import load_average

IMG = 640
STRIDES = [8, 16, 32]
NC = 80
MIN_SIDE, MAX_SIDE = 8.0, 300.0  # GT box sides in pixels
PREDS_SEED, TARGETS_SEED = 0, 1
ITEMS_RTOL = 1e-4  # loss items are sums over ~1e6 terms: float32 rounding differs in the last bits only
SPEED_TARGETS = {20: 20.0, 100: 40.0}  # GTs per image -> minimal official / ours loss time
MEMORY_TARGET = 2.0  # "well below official's": official peak / ours peak at least this
RESULT_PREFIX = "BENCH_LOSS_RESULT "  # marks the worker's result line among anything else it prints
MIB = 2 ** 20


@dataclass(frozen=True)
class Method:
    label: str
    kind: str        # 'assign', 'assign_dense', 'loss', 'loss_bwd', 'official' or 'reference'
    prior: str
    slow: bool = False  # slow per-image implementation: fewer runs, no warm-up, always on the CPU


METHODS = {
    "assign": Method("ours: simota_assign", "assign", "box_or_center"),
    "assign_center": Method("ours: simota_assign", "assign", "center"),
    "assign_dense": Method("ours: simota_assign_dense", "assign_dense", "box_or_center"),
    "assign_dense_center": Method("ours: simota_assign_dense", "assign_dense", "center"),
    "loss": Method("ours: ComputeXLoss", "loss", "box_or_center"),
    "loss_center": Method("ours: ComputeXLoss", "loss", "center"),
    "loss_center_bwd": Method("ours: ComputeXLoss + backward", "loss_bwd", "center"),
    "official": Method("official 0.3.0: get_losses", "official", "box_or_center", slow=True),
    "reference": Method("reference_losses (per image)", "reference", "box_or_center", slow=True),
    "reference_center": Method("reference_losses (per image)", "reference", "center", slow=True),
}


# ---- inputs (the same in every worker) --------------------------------------------------------
def make_preds(batch: int, seed: int = PREDS_SEED) -> list[torch.Tensor]:
    """Raw train-mode head outputs per level: boxes near their anchors, a few strides in size, mostly
    low scores, as a detector's."""
    from tests.support import random_preds

    return random_preds(batch, NC, h=IMG, w=IMG, seed=seed)


def make_targets(batch: int, gts: int, seed: int = TARGETS_SEED) -> torch.Tensor:
    """[batch * gts, 6] rows (image, class, cx, cy, w, h), normalised to the input side."""
    g = torch.Generator().manual_seed(seed)
    n = batch * gts
    img = torch.arange(batch).repeat_interleave(gts)[:, None].float()
    cls = torch.randint(0, NC, (n, 1), generator=g).float()
    xy = torch.rand(n, 2, generator=g) * IMG
    wh = MIN_SIDE + torch.rand(n, 2, generator=g) * (MAX_SIDE - MIN_SIDE)
    return torch.cat((img, cls, xy / IMG, wh / IMG), 1)


def make_model():
    """ComputeXLoss reads only .detect (nc) and .stride; yoloxs builds in a fraction of a second."""
    from models.yolo import Model

    model = Model("models/yoloxs.yaml")
    if [float(s) for s in model.stride] != [float(s) for s in STRIDES] or model.detect.nc != NC:
        raise RuntimeError(f"expected strides {STRIDES} and nc {NC}, got {model.stride.tolist()} and {model.detect.nc}")
    return model


def make_call(method: Method, preds: list[torch.Tensor], targets: torch.Tensor) -> Callable[[], list | None]:
    """The function to time; it returns the loss items (or None for the assigner alone).
    Everything it needs is built here, before the memory baseline."""
    if method.kind == "official":
        from tests.reference import official_yolox
        from tests.simota_reference import official_losses

        if official_yolox() is None:  # also installs the torchvision stub yolox needs
            raise RuntimeError("the official yolox package is not installed")
        return lambda: official_losses(preds, targets, STRIDES, NC).tolist()
    if method.kind == "reference":
        from tests.simota_reference import reference_losses

        return lambda: reference_losses(preds, targets, STRIDES, NC, method.prior)[0].tolist()

    from utils.loss import ComputeXLoss
    from utils.loss.simota_dense import simota_assign_dense
    from utils.loss.simota_sparse import simota_assign

    loss_fn = ComputeXLoss(make_model(), {"simota_prior": method.prior})
    if method.kind in ("assign", "assign_dense"):
        args = loss_fn.assign_inputs(preds, targets)
        assign = simota_assign if method.kind == "assign" else simota_assign_dense

        def assign_only():
            assign(*args)  # no loss items: the assignment alone is timed

        return assign_only
    if method.kind == "loss":
        return lambda: loss_fn(preds, targets)[1].tolist()
    return lambda: loss_with_backward(loss_fn, preds, targets)


def loss_with_backward(loss_fn, preds: list[torch.Tensor], targets: torch.Tensor) -> list:
    """Forward and backward into preds (leaf tensors that require grad, standing in for the model)."""
    for p in preds:
        p.grad = None  # every run allocates its gradients afresh, as a training step does
    loss, items = loss_fn(preds, targets)
    loss.backward()
    return items.tolist()


# ---- memory -----------------------------------------------------------------------------------
def rss_bytes() -> int:
    """Current resident set size of this process."""
    try:
        import psutil
    except ImportError:  # a dev dependency only; /proc serves on Linux
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return psutil.Process().memory_info().rss


def reset_peak_rss() -> bool:
    """Reset the peak RSS (Linux >= 4.0) so that ru_maxrss covers only what follows; False if unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


class PeakMemory:
    """Peak extra memory of a span: CUDA allocator stats on the GPU, RSS on the CPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.exact = True  # False when the CPU peak could not be reset: the result is then a lower bound

    def start(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            self.exact = reset_peak_rss()
            # without a reset, ru_maxrss still holds earlier peaks: measure from there (a lower bound)
            self.base = rss_bytes() if self.exact else peak_rss_bytes()

    def extra_mib(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
            return (torch.cuda.max_memory_allocated() - self.base) / MIB
        return max(peak_rss_bytes() - self.base, 0) / MIB


# ---- worker -----------------------------------------------------------------------------------
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed_runs(fn: Callable, device: torch.device, warmup: int, runs: int) -> tuple[list[float], object]:
    """Seconds per run after `warmup` untimed calls, and the last call's result."""
    for _ in range(warmup):
        out = fn()
    times = []
    for _ in range(runs):
        sync(device)
        t0 = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return times, out


def worker(opt) -> int:
    """Measures one method at one GT count and prints the result as one JSON line."""
    method = METHODS[opt.worker]
    device = torch.device("cpu" if method.slow else opt.device)  # the references build CPU grids
    preds = [p.to(device) for p in make_preds(opt.batch)]
    targets = make_targets(opt.batch, opt.gts[0]).to(device)
    if method.kind == "loss_bwd":
        preds = [p.requires_grad_() for p in preds]
    fn = make_call(method, preds, targets)
    warmup, runs = (0, opt.official_runs if method.kind == "official" else opt.reference_runs) if method.slow \
        else (opt.warmup, opt.runs)
    memory = PeakMemory(device)
    memory.start()
    times, items = timed_runs(fn, device, warmup, runs)
    result = {"ms": 1000 * statistics.median(times), "runs": runs, "peak_mib": memory.extra_mib(),
              "peak_exact": memory.exact, "items": items, "device": device.type}
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


def run_worker(name: str, gts: int, opt) -> dict:
    """Runs `name` in a fresh interpreter, so that its peak memory is its own; {'error': ...} on failure."""
    cmd = [sys.executable, "-m", "benchmarks.bench_loss", "--worker", name, "--gts", str(gts),
           "--batch", str(opt.batch), "--runs", str(opt.runs), "--warmup", str(opt.warmup),
           "--official-runs", str(opt.official_runs), "--reference-runs", str(opt.reference_runs),
           "--device", opt.device]
    if opt.threads is not None:
        cmd += ["--threads", str(opt.threads)]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return {"error": f"exit status {proc.returncode}: {tail}"}


# ---- reporting --------------------------------------------------------------------------------
def fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    cells = [header] + rows
    widths = [max(len(line[i]) for line in cells) for i in range(len(header))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(line, widths)) + " |" for line in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def get(results: dict, name: str, gts: int, key: str):
    """results[(name, gts)][key], or None when not measured or failed."""
    return results.get((name, gts), {}).get(key)


def peak_cell(results: dict, name: str, gts: int) -> str:
    cell = fmt(get(results, name, gts, "peak_mib"), ".1f")
    return cell + (" (>=)" if get(results, name, gts, "peak_exact") is False else "")


def runs_cell(results: dict, name: str, gts_list: list[int]) -> str:
    runs = sorted({get(results, name, g, "runs") for g in gts_list} - {None})
    return "/".join(map(str, runs)) or "-"


def timing_table(results: dict, names: list[str], opt) -> str:
    header = ["method", "prior", "device", "runs"]
    for g in opt.gts:
        header += [f"ms @{g} GTs", f"peak MiB @{g} GTs"]
    rows = []
    for name in names:
        m = METHODS[name]
        devices = {get(results, name, g, "device") for g in opt.gts} - {None}
        row = [m.label, m.prior, "/".join(sorted(devices)) or "-", runs_cell(results, name, opt.gts)]
        for g in opt.gts:
            row += [fmt(get(results, name, g, "ms"), ".1f"), peak_cell(results, name, g)]
        rows.append(row)
    return markdown_table(header, rows)


def max_rel_diff(a: list[float], b: list[float]) -> float:
    """max |a - b| / max(|a|, |b|) over items; items that are both 0 (l1 when unused) count as equal."""
    return max((abs(x - y) / max(abs(x), abs(y)) if x != y else 0.0) for x, y in zip(a, b))


def items_rows(results: dict, opt) -> tuple[list[list[str]], float]:
    """Rows (GTs, implementation, items..., diff vs ours) for box_or_center; and the largest diff."""
    rows, worst = [], 0.0
    for g in opt.gts:
        ours = get(results, "loss", g, "items")
        for name in ("loss", "official", "reference"):
            items = get(results, name, g, "items")
            if items is None:
                continue
            diff = max_rel_diff(items, ours) if ours is not None and name != "loss" else None
            worst = max(worst, diff or 0.0)
            rows.append([str(g), METHODS[name].label, *(f"{v:.6g}" for v in items), fmt(diff, ".1e")])
    return rows, worst


def ratio(results: dict, num: str, den: str, gts: int, key: str) -> float | None:
    a, b = get(results, num, gts, key), get(results, den, gts, key)
    return None if a is None or not b else a / b


def verdict(value: float | None, target: float | None) -> str:
    if value is None or target is None:
        return "-"
    return "met" if value >= target else "NOT met"


def targets_table(results: dict, opt) -> str:
    header = ["GTs/img", "official/ours loss time", "loss target", "official/ours assign time",
              "official/ours loss peak", "memory target"]
    rows = []
    for g in opt.gts:
        speed = ratio(results, "official", "loss", g, "ms")
        target = SPEED_TARGETS.get(g)
        memory = ratio(results, "official", "loss", g, "peak_mib")
        rows.append([str(g), fmt(speed, ".1f"),
                     "-" if target is None else f">= {target:g}x: {verdict(speed, target)}",
                     fmt(ratio(results, "official", "assign", g, "ms"), ".1f"), fmt(memory, ".1f"),
                     f">= {MEMORY_TARGET:g}x: {verdict(memory, MEMORY_TARGET)}"])
    return markdown_table(header, rows)


# ---- main -------------------------------------------------------------------------------------
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gts", type=int, nargs="+", default=[20, 100], help="GTs per image, one measurement each")
    p.add_argument("--batch", type=int, default=16, help="images per batch")
    p.add_argument("--runs", type=int, default=5, help="timed runs of ours (median)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs of ours first")
    p.add_argument("--official-runs", type=int, default=1, help="timed runs of official get_losses (slow)")
    p.add_argument("--reference-runs", type=int, default=2, help="timed runs of reference_losses (slow)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="device for ours")
    p.add_argument("--skip-official", action="store_true", help="do not run official YOLOX")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--worker", choices=list(METHODS), help=argparse.SUPPRESS)  # internal: one measurement
    opt = p.parse_args(argv)
    if min(opt.runs, opt.official_runs, opt.reference_runs, opt.batch) < 1 or opt.warmup < 0 or min(opt.gts) < 1:
        p.error("--runs, --official-runs, --reference-runs, --batch and --gts must be >= 1, --warmup >= 0")
    if opt.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: CUDA is not available")
    return opt




def main(argv=None) -> int:
    opt = parse_args(argv)
    if opt.threads is not None:
        torch.set_num_threads(opt.threads)
    if opt.worker:
        return worker(opt)
    names = [n for n in METHODS if not (opt.skip_official and n == "official")]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {opt.device}; batch {opt.batch} "
          f"at {IMG}x{IMG}, {NC} classes, GTs/img {opt.gts}; runs {opt.runs} (warmup {opt.warmup}), official "
          f"{'skipped' if opt.skip_official else opt.official_runs}, reference {opt.reference_runs}; "
          f"{load_average()} before start", flush=True)
    results, failed = {}, []
    for g in opt.gts:
        for name in names:
            t0 = time.perf_counter()
            results[(name, g)] = r = run_worker(name, g, opt)
            if "error" in r:
                failed.append(f"WARNING: {name} at {g} GTs failed: {r['error']}")
            print(f"  {name} @{g} GTs: {'FAILED' if 'error' in r else 'done'} in {time.perf_counter() - t0:.1f} s",
                  flush=True)
    rows, worst = items_rows(results, opt)
    print()
    print(timing_table(results, names, opt))
    print()
    print(markdown_table(["GTs/img", "box_or_center loss", "5*iou", "obj", "cls", "l1", "max rel diff vs ours"], rows))
    print()
    print(targets_table(results, opt))
    print(f"\nms: median per batch of {opt.batch}; peak MiB: peak memory above the built inputs (RSS on the CPU, "
          f"'(>=)': peak not resettable, a lower bound); official/ours = official value / ours (> 1: ours is "
          f"faster or smaller), both box_or_center, the assign column divides official's whole get_losses by our "
          f"assigner alone; {load_average()} at the end (this run included)")
    if worst > ITEMS_RTOL:
        failed.append(f"WARNING: loss items differ by {worst:.2g} (relative) > {ITEMS_RTOL:g}")
    for line in failed:
        print(line)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
