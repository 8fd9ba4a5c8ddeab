"""Benchmark exports: onnxruntime CPU latency of float32 / deploy / int8 files, what int8 costs, the NPU report.

    python -m benchmarks.bench_export                                   # yoloxs and yoloxs_rslu, random weights
    python -m benchmarks.bench_export --weights runs/train/s/weights/best.pt runs/train/rslu/weights/best.pt \
        --data data/demo.yaml --val                                     # trained: adds mAP through val.run
    python -m benchmarks.bench_export --img-size 320 --calib-images 16 --runs 5
    python -m benchmarks.bench_export --int8-activations uint8 --img-size 256   # int8 speed in onnxruntime's x86 kernels

Per model, four files through export.run:
  fp32           the eval output [B, N, 5 + nc] (no --deploy)
  deploy         --deploy: BatchNorm fused, per-level outputs (decoded on the CPU by utils.infer.outputs)
  int8 decoded   the fp32 file statically quantised (QDQ) on --calib-images images of --data
  int8 deploy    the deploy file quantised the same way
Columns: export seconds, file MB, median onnxruntime latency (ms, batch 1, --threads intra-op threads,
after one warm-up), fusable Conv+Relu vs SiLU pairs (utils/export/npu_report.py), and for int8 the agreement
with its fp32 file on held images: cosine similarity and max |diff| of the decoded scores (obj * cls)
and boxes (px). "int8 decoded" shows what one 8-bit scale shared by box pixels and probabilities does
to the scores; "int8 deploy" keeps them apart. With --val (trained weights and their dataset), mAP50-95
of each file on the val split through val.run. Timings need an otherwise idle machine.

Where the NPU toolchains import (each lives in its own virtual environment, see README: run this
script with that environment's python), the deploy file also goes through them with --int8 and a
second table gives each converted model's agreement with fp32 torch on held-out dataset images:
worst per-output cosine, decoded-score cosine and the share of torch's top-100 detections found again
(utils/export/compare.py): OpenVINO IR quantised by NNCF on OpenVINO's CPU runtime, RKNN (rk3588) int8
in rknn-toolkit2's simulator, and the onnxruntime int8 file for comparison.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import export
from utils.checkpoints import save_checkpoint
from utils.export.options import img_size_hw
from utils.quant.uint8_activations import ACTIVATION_DTYPES

VARIANTS = ("fp32", "deploy", "int8 decoded", "int8 deploy")


def latency_ms(path, imgsz, threads: int, runs: int) -> float:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    x = (np.random.default_rng(0).random((1, 3, *imgsz)) * 255).astype(np.float32)
    feed = {session.get_inputs()[0].name: x}
    session.run(None, feed)  # warm-up
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def val_map(path, data, imgsz: int) -> float:
    """mAP50-95 of an exported file on the val split through val.run (which decodes every layout)."""
    import val

    with tempfile.TemporaryDirectory() as tmp:
        results, _, _ = val.run(data, weights=str(path), imgsz=imgsz, batch_size=1, workers=0, save_dir=tmp)
    return results[3]


def bench_model(source: dict, opt, out_dir: Path) -> list[dict]:
    rows = []
    common = dict(img_size=opt.img_size, opset=opt.opset, simplify=True, data=opt.data, calib_images=opt.calib_images)
    runs = [("fp32", dict(deploy=False)), ("deploy", dict(deploy=True))]
    exported = {}
    for variant, kwargs in runs:
        t0 = time.perf_counter()
        res = export.run(weights=source["weights"], **common, **kwargs, int8=bool(opt.data),
                         int8_activations=opt.int8_activations,
                         output=out_dir / f"{source['label']}.{variant}.onnx")
        seconds = time.perf_counter() - t0
        exported[variant] = res
        report = res["report"]
        rows.append(dict(model=source["label"], variant=variant, export_s=seconds, path=res["onnx"],
                         mb=res["onnx"].stat().st_size / 1e6, relu=report.conv_relu, silu=report.silu))
        if "int8" in res:
            lines = {n: (d, r, c) for n, d, r, c in res["int8_comparison"].lines}
            name = "int8 decoded" if variant == "fp32" else "int8 deploy"
            rows.append(dict(model=source["label"], variant=name, export_s=float("nan"), path=res["int8"],
                             mb=res["int8"].stat().st_size / 1e6, relu=report.conv_relu, silu=report.silu,
                             score_cos=lines["decoded scores"][2], score_diff=lines["decoded scores"][0],
                             box_diff=lines["decoded boxes (px)"][0]))
    for row in rows:
        row["ms"] = latency_ms(row["path"], img_size_hw(opt.img_size), opt.threads, opt.runs)
        if opt.val:
            row["map"] = val_map(row["path"], opt.data, img_size_hw(opt.img_size)[0])
    if opt.data and "int8_comparison" in exported["deploy"]:
        rows[-1]["agreement"] = ("onnxruntime int8 (QDQ), against its fp32 ONNX", exported["deploy"]["int8_comparison"])
    for include, key in toolchains():
        res = export.run(weights=source["weights"], **common, deploy=True, int8=bool(opt.data), include=(include,),
                         output=out_dir / f"{source['label']}.{include}.onnx", report=False)
        rows.append(dict(model=source["label"], variant=include, agreement=(key, res[f"{include}_comparison"])))
    return rows


def toolchains() -> list[tuple[str, str]]:
    """(--include value, label) of the NPU toolchains importable here."""
    import importlib.util

    found = []
    if importlib.util.find_spec("openvino") and importlib.util.find_spec("nncf"):
        found.append(("openvino", "OpenVINO IR int8 (NNCF), OpenVINO CPU"))
    if importlib.util.find_spec("rknn"):
        found.append(("rknn", "RKNN rk3588 int8, rknn-toolkit2 simulator"))
    return found


def sources(opt, tmp: Path) -> list[dict]:
    """What to export: --weights files, or the --cfg files with random weights (BatchNorm statistics set
    by one pass over random images so that outputs are not all alike). Random weights measure latency
    and the graph; int8 agreement and mAP mean something only for trained weights."""
    if opt.weights:
        # runs/train/<name>/weights/best.pt is labelled <name>, so two runs' best.pt stay apart
        return [dict(weights=w, label=Path(w).parent.parent.name if Path(w).parent.name == "weights" else Path(w).stem)
                for w in opt.weights]
    from torch import nn

    from models.yolo import Model

    out = []
    for cfg in opt.cfg:
        torch.manual_seed(0)
        model = Model(cfg, nc=opt.nc)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = None
        with torch.no_grad():
            model.train()(torch.rand(2, 3, 256, 256) * 255)
            for conv in model.detect.reg_preds:  # keep exp(wh) finite on random features
                conv.weight.mul_(0.01)
        f = save_checkpoint(tmp / f"{Path(cfg).stem}.pt", {"model": model.eval().state_dict(), "yaml": model.yaml,
                                                           "names": model.names})
        out.append(dict(weights=f, label=Path(cfg).stem))
    return out


def print_table(rows: list[dict]) -> None:
    head = (f"{'model':<14}{'variant':<14}{'export s':>9}{'MB':>7}{'ORT ms':>9}{'ratio':>7}{'Conv+Relu':>10}"
            f"{'SiLU':>6}{'score cos':>10}{'score |d|':>10}{'box |d| px':>11}{'mAP50-95':>9}")
    print(head + "\n" + "-" * len(head))
    base = {r["model"]: r["ms"] for r in rows if r["variant"] == "fp32"}
    for r in rows:
        if "ms" not in r:
            continue
        def f(key, fmt):
            v = r.get(key)
            return format(v, fmt) if v is not None and v == v else "-"
        print(f"{r['model']:<14}{r['variant']:<14}{f('export_s', '9.1f'):>9}{r['mb']:>7.1f}{r['ms']:>9.1f}"
              f"{base[r['model']] / r['ms']:>7.2f}{r['relu']:>10}{r['silu']:>6}{f('score_cos', '10.5f'):>10}"
              f"{f('score_diff', '10.4f'):>10}{f('box_diff', '11.4g'):>11}{f('map', '9.4f'):>9}")
    print("ratio: fp32 latency / this latency (higher is faster); int8 columns: against the fp32 file it came from")
    agreements = [(r["model"], *r["agreement"]) for r in rows if "agreement" in r]
    if agreements:
        print("\nint8 models against fp32 torch on held-out images of --data (deploy layout)")
        print("| model | int8 model, runtime | images | worst output cosine | decoded-score cosine | top-100 found again |")
        print("|---|---|---|---|---|---|")
        for model, label, c in agreements:
            scores = next((cos for name, _, _, cos in c.lines if name == "decoded scores"), float("nan"))
            share = f"{100 * c.agreement.share:.1f}%" if c.agreement else "-"
            worst = min((cos for *_, cos in c.lines), default=float("nan"))
            print(f"| {model} | {label} | {c.n_images} | {worst:.4f} | {scores:.4f} | {share} |")


def parse_opt(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cfg", nargs="+", default=["models/yoloxs.yaml", "models/yoloxs_rslu.yaml"])
    p.add_argument("--weights", nargs="*", default=None, help="trained checkpoints (instead of random --cfg models)")
    p.add_argument("--nc", type=int, default=None, help="classes of the random models (default: the YAML's)")
    p.add_argument("--img-size", type=int, nargs="+", default=[640])
    p.add_argument("--opset", type=int, default=13)
    p.add_argument("--data", default="data/demo.yaml", help="calibration images (and --val); '' skips int8")
    p.add_argument("--calib-images", type=int, default=32)
    p.add_argument("--val", action="store_true", help="mAP of every file on --data's val split (trained weights)")
    p.add_argument("--int8-activations", choices=ACTIVATION_DTYPES, default=ACTIVATION_DTYPES[0],
                   help="uint8: the int8 files as onnxruntime's x86 int8 kernels take them (export.py's option)")
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    return p.parse_args(argv)


def main(argv=None):
    opt = parse_opt(argv)
    torch.set_num_threads(max(1, opt.threads))
    print(f"load average at start: {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rows = [row for source in sources(opt, tmp) for row in bench_model(source, opt, tmp)]
        print_table(rows)
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
