"""Benchmark AlignOTA, DAMO-YOLO's label assignment: utils.loss.align_ota.align_ota_assign (batched) against
DAMO's AlignOTAAssigner (modelscope 1.40.2) run per image as ZeroHead.get_target_single runs it, in one run.

Run from the repository root as a module (the inputs and the reference come from the tests):

    python -m benchmarks.bench_align_ota                      # batch 16, 20 GTs per image, 640 px, 3 repeats
    python -m benchmarks.bench_align_ota --repeats 1          # a quick check
    python -m benchmarks.bench_align_ota --threads 1 --no-stable-check

Inputs (tests/utils/loss/test_align_ota.py make_batch, fixed seed): --batch images at --img x --img (8400
priors at strides 8/16/32 for 640, as ZeroHead's get_single_level_center_priors lays them out), --nc classes
plus modelscope's legacy channel (cls_scores [B, A, nc + 1] probabilities, as ZeroHead passes them), --gts GTs
per image with sides log-uniform in 8..300 px, predictions near the GTs as from a detector in training.

Measured, each in a fresh subprocess: the median wall time of --repeats calls (ours after --warmup untimed
calls; the reference, seconds per batch, without warm-up) and the peak memory above the built inputs (peak
RSS reset through /proc/self/clear_refs, as benchmarks/bench_loss.py measures it: torch's CPU allocator is
invisible to tracemalloc). The assignments are compared: ours against DAMO as it is (anchors may differ
where DAMO's torch.topk chooses among equal costs: utils/loss/align_ota.py, arbitrary points 1 and 2) and,
unless --no-stable-check, against DAMO with its topk made stable (one more untimed reference run), which
must be identical. Target (issue 18): ours >= 20x faster than the reference, with a lower peak.

Exit status 1 when a measurement failed or ours differs from the stable-topk reference. Timings need an
otherwise idle machine: the header and the last line print the load average.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks import load_average
from benchmarks.bench_loss import PeakMemory, fmt, markdown_table

SEED = 0
MIN_SIDE, MAX_SIDE = 8.0, 300.0  # GT sides in pixels
SPEED_TARGET = 20.0  # reference time / ours
RESULT_PREFIX = "BENCH_ALIGN_OTA_RESULT "
METHODS = {"ours": "ours: align_ota_assign (batched)",
           "reference": "DAMO AlignOTAAssigner.assign (per image)",
           "stable": "DAMO, topk made stable (check only)"}


def make_inputs(opt):
    from tests.utils.loss.test_align_ota import make_batch

    return make_batch([opt.gts] * opt.batch, opt.nc + 1, opt.img, opt.img, seed=SEED, min_side=MIN_SIDE,
                      max_side=MAX_SIDE)


def make_call(name: str, batch):
    """The function to time, returning gt_index [B, A]; everything it needs is built here."""
    if name == "ours":
        from utils.loss.align_ota import align_ota_assign

        return lambda: align_ota_assign(*batch).gt_index
    from tests.damo_reference import damo_module
    from tests.utils.loss.test_align_ota import reference

    damo = damo_module("damo.base_models.core.ota_assigner")
    return lambda: reference(damo, batch, stable=name == "stable")[0]


def worker(opt) -> int:
    """One method: times it, saves its last assignment to --save and prints the result as one JSON line."""
    batch = make_inputs(opt)
    fn = make_call(opt.worker, batch)
    if opt.worker == "ours":
        warmup, runs = opt.warmup, opt.repeats
    else:  # seconds per call: no warm-up; the stable-topk run only checks the assignment
        warmup, runs = 0, 1 if opt.worker == "stable" else opt.repeats
    memory = PeakMemory(torch.device("cpu"))
    memory.start()
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    peak = memory.extra_mib()
    torch.save(out, opt.save)
    print(RESULT_PREFIX + json.dumps({"ms": 1000 * statistics.median(times), "runs": runs, "peak_mib": peak,
                                      "peak_exact": memory.exact}), flush=True)
    return 0


def run_worker(name: str, opt, save: Path) -> dict:
    """Runs `name` in a fresh interpreter, so that its peak memory is its own; {'error': ...} on failure."""
    cmd = [sys.executable, "-m", "benchmarks.bench_align_ota", "--worker", name, "--save", str(save),
           "--batch", str(opt.batch), "--gts", str(opt.gts), "--img", str(opt.img), "--nc", str(opt.nc),
           "--repeats", str(opt.repeats), "--warmup", str(opt.warmup)]
    if opt.threads is not None:
        cmd += ["--threads", str(opt.threads)]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return {"error": f"exit status {proc.returncode}: {tail}"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=16, help="images per batch")
    p.add_argument("--gts", type=int, default=20, help="GTs per image")
    p.add_argument("--img", type=int, default=640, help="image side (a multiple of 32)")
    p.add_argument("--nc", type=int, default=80, help="classes (the scores get one legacy channel more)")
    p.add_argument("--repeats", type=int, default=3, help="timed calls of each (median)")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls of ours first")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--no-stable-check", action="store_true", help="skip the identity check against DAMO with a "
                                                                   "stable topk (one more reference run)")
    p.add_argument("--worker", choices=list(METHODS), help=argparse.SUPPRESS)  # internal: one measurement
    p.add_argument("--save", help=argparse.SUPPRESS)
    opt = p.parse_args(argv)
    if min(opt.batch, opt.gts, opt.repeats, opt.nc) < 1 or opt.warmup < 0 or opt.img % 32:
        p.error("--batch, --gts, --repeats and --nc must be >= 1, --warmup >= 0, --img a multiple of 32")
    return opt


def main(argv=None) -> int:
    opt = parse_args(argv)
    if opt.threads is not None:
        torch.set_num_threads(opt.threads)
    if opt.worker:
        return worker(opt)
    names = ["ours", "reference"] + ([] if opt.no_stable_check else ["stable"])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU; batch {opt.batch} at "
          f"{opt.img}x{opt.img}, {opt.nc} classes (+1 legacy channel), {opt.gts} GTs/img; repeats {opt.repeats} "
          f"(ours after {opt.warmup} warm-up); {load_average()} before start", flush=True)
    results, failed = {}, []
    with tempfile.TemporaryDirectory() as tmp:
        assignments = {}
        for name in names:
            t0 = time.perf_counter()
            save = Path(tmp) / f"{name}.pt"
            results[name] = r = run_worker(name, opt, save)
            if "error" in r:
                failed.append(f"WARNING: {name} failed: {r['error']}")
            else:
                assignments[name] = torch.load(save, weights_only=True)
            print(f"  {name}: {'FAILED' if 'error' in r else 'done'} in {time.perf_counter() - t0:.1f} s", flush=True)
    rows = []
    for name in names:
        r = results[name]
        peak = fmt(r.get("peak_mib"), ".1f") + (" (>=)" if r.get("peak_exact") is False else "")
        rows.append([METHODS[name], str(r.get("runs", "-")), fmt(r.get("ms"), ".1f"), peak])
    print()
    print(markdown_table(["method", "runs", "median ms", "peak MiB"], rows))
    ours, ref = results["ours"], results["reference"]
    if "ms" in ours and "ms" in ref:
        speed = ref["ms"] / ours["ms"]
        memory = ref["peak_mib"] / ours["peak_mib"] if ours["peak_mib"] > 0 else float("inf")
        print(f"\nspeed-up {speed:.1f}x (target >= {SPEED_TARGET:g}x: {'met' if speed >= SPEED_TARGET else 'NOT met'});"
              f" peak memory reference / ours {memory:.1f}x (target > 1: {'met' if memory > 1 else 'NOT met'})")
    if "ours" in assignments:
        total = assignments["ours"].numel()
        for name, label in (("reference", "DAMO as is"), ("stable", "DAMO with a stable topk")):
            if name in assignments:
                differ = int((assignments["ours"] != assignments[name]).sum())
                print(f"assignments vs {label}: {differ} of {total} anchors differ"
                      + (" (ties among equal costs, chosen by DAMO's topk)" if differ and name == "reference" else ""))
                if differ and name == "stable":
                    failed.append("WARNING: ours differs from DAMO with a stable topk")
    print(f"\nms: median per batch of {opt.batch}; peak MiB: peak RSS above the built inputs, in a fresh process "
          f"('(>=)': peak not resettable, a lower bound); {load_average()} at the end (this run included)")
    for line in failed:
        print(line)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
