"""What 8 bits cost, per toolchain: fp32 against post-training int8, int8 with the recommended hybrid, and
quantisation-aware training, each measured on the dataset's val split (mAP50-95, mAP50) with its latency.

    python -m benchmarks.bench_int8 --weights best.pt --qat-weights qat/last.pt --data data/demo.yaml --img-size 256
    /tmp/venv_ov/bin/python -m benchmarks.bench_int8 ...       # adds OpenVINO (NNCF int8 IR; the QAT file as IR)
    /tmp/venv_rknn/bin/python -m benchmarks.bench_int8 ...     # adds RKNN (rk3588, rknn-toolkit2's simulator)
    python -m benchmarks.bench_int8 --weights best.pt --layouts-only --layouts   # int8 per output layout
    ... --qat-weights qat/last.pt --float-weights ft/last.pt   # with QAT's float baseline: the same fine-tune
                                                               # (train.py --weights best.pt, QAT's epochs and
                                                               # hyp) without --qat

The toolchains are those this Python environment imports (each lives in its own: README). For the float
checkpoint, export.run(--deploy --int8 --sensitivity) writes and measures every int8 model and the hybrid
(utils/quant/sensitivity.py); the QAT checkpoint (train.py --qat) is exported once (its QDQ file, and
converted for each toolchain: OpenVINO reads it as FakeQuantize, rknn-toolkit2 imports it as a QAT
model) and measured the same way. onnxruntime appears twice: the QDQ file run as written (the exact 8-bit
arithmetic, what an NPU computes) and through its fused int8 kernels (what this CPU gives; they saturate on
x86 CPUs without VNNI), and once more with the int8 files' activations rewritten as uint8 (the same
arithmetic; onnxruntime fuses its x86 int8 kernels for uint8 activations only: export.py --int8-activations
uint8). Latency: batch 1, median of 30 runs after a warm-up, on this CPU (RKNN: none, the
simulator is not the NPU). Timings need an otherwise idle machine.
"""
from __future__ import annotations

import argparse
import logging
import importlib.util
from pathlib import Path

from benchmarks import load_average
from utils.export.int8 import CALIB_METHODS
from utils.infer.outputs import DEPLOY_LAYOUTS

TOOLCHAINS = {"openvino": "nncf", "rknn": "rknn.api"}  # --include name: the module that must import


def available() -> list[str]:
    found = []
    for name, module in TOOLCHAINS.items():
        try:
            if importlib.util.find_spec(module) is not None:
                found.append(name)
        except ModuleNotFoundError:
            pass
    return found


def ptq(opt, toolchains: list[str]):
    """The float checkpoint through export --int8 --sensitivity: (SensitivityReport, results)."""
    import export

    out = Path(opt.out) / "ptq" / "model.onnx"
    out.parent.mkdir(parents=True, exist_ok=True)
    results = export.run(weights=opt.weights, deploy=True, include=("onnx", *toolchains), img_size=opt.img_size,
                         opset=13, int8=True, sensitivity=True, data=opt.data, calib_images=opt.calib_images,
                         calib_method=opt.calib_method, hybrid_budget=opt.budget, output=out, report=False)
    return results["sensitivity"], results


def qat_rows(opt, toolchains: list[str]) -> dict:
    """{toolchain: (Measure, latency ms or None)} of the QAT checkpoint's exported models."""
    import export
    from utils.infer.backends import DecodedRunner
    from utils.infer.outputs import OutputFormat
    from utils.quant.sensitivity import Judge, latency_ms, median_ms

    out = _qat_onnx(opt)
    out.parent.mkdir(parents=True, exist_ok=True)
    results = export.run(weights=opt.qat_weights, deploy=True, include=("onnx", *[t for t in toolchains if t != "rknn"]),
                         img_size=opt.img_size, opset=13, data=opt.data, output=out, report=False)
    onnx_path = results["onnx"]
    held = _held(opt)
    judge = Judge(onnx_path, opt.data, opt.img_size, held)
    image = held[:1]
    rows = {"onnxruntime, QDQ as written": (judge(onnx_path), None),
            "onnxruntime, int8 kernels": (judge(onnx_path, kernels=True), latency_ms(onnx_path, image))}
    if "openvino" in toolchains:
        from utils.infer.openvino_runtime import openvino_runner

        xml = results["openvino"]
        run = openvino_runner(xml, _names(onnx_path))
        rows["openvino"] = (judge(xml), median_ms(lambda: run(image)))
    if "rknn" in toolchains:
        from utils.export.rknn import build_rknn

        meta = _meta(onnx_path)
        rknn = build_rknn(onnx_path, out.with_suffix(".int8.rknn"), "rk3588", None, qat=True)
        try:
            nc = int(meta["nc"])
            rows["rknn"] = (judge.measure(DecodedRunner(rknn.run, OutputFormat.from_meta(meta), nc)), None)
        finally:
            rknn.release()
    return rows


def _held(opt):
    """The held-out val images every measure compares outputs on (as export.py's int8 check takes them)."""
    from utils.export.exporter import N_HELD
    from utils.export.int8 import calibration_images

    return calibration_images(opt.data, N_HELD, (opt.img_size, opt.img_size), split="val", purpose="int8 check")


def _qat_onnx(opt) -> Path:
    return Path(opt.out) / "qat" / "model.onnx"


def uint8_rows(opt, files: dict) -> dict:
    """{column: (Measure, latency ms)} of int8 ONNX files ({column: path}) with their activations rewritten as
    uint8 (utils/quant/uint8_activations.py), through onnxruntime's int8 kernels."""
    import shutil

    from utils.quant.sensitivity import Judge, latency_ms
    from utils.quant.uint8_activations import write_uint8_activations

    held = _held(opt)
    judge, rows = None, {}
    for column, path in files.items():
        if path is None:
            continue
        copy = Path(opt.out) / "uint8" / f"{column}.onnx"
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, copy)
        write_uint8_activations(copy)
        judge = judge or Judge(copy, opt.data, opt.img_size, held)
        rows[column] = (judge(copy, kernels=True), latency_ms(copy, held[:1]))
    return rows


def float_baseline(opt):
    """The Measure of ``--float-weights``, QAT's fair float baseline: QAT fine-tunes a model that may not have
    converged, so its gain over the original fp32 mixes training with quantisation; the same fine-tune without
    fake quantisation separates them. Exported and judged as the fp32 file is."""
    import export
    from utils.quant.sensitivity import Judge

    out = Path(opt.out) / "float_baseline" / "model.onnx"
    out.parent.mkdir(parents=True, exist_ok=True)
    fp32 = export.run(weights=opt.float_weights, deploy=True, include=("onnx",), img_size=opt.img_size, opset=13,
                      data=opt.data, output=out, report=False)["onnx"]
    held = _held(opt)
    return Judge(fp32, opt.data, opt.img_size, held)(fp32)


def layout_rows(opt) -> dict:
    """{layout: [fp32, PTQ, PTQ int8 kernels, PTQ with the decoding in int8 too, QAT or None]} (Measures; ONNX
    files run as written unless "kernels"): the checkpoints exported (BatchNorm folded) in each output layout
    and judged alike. Decoding concatenates box pixels (0 .. img size) and [0, 1] scores, so with the decoding
    in int8 they share one scale (what a toolchain that quantises the whole graph does); export.py's int8 keeps
    it in float (utils/quant/decode_tail.py); per-level has no decoding in the graph."""
    import export
    from utils.export.int8 import calibration_images, quantize_int8
    from utils.quant.sensitivity import Judge

    held = _held(opt)
    calib = calibration_images(opt.data, opt.calib_images, (opt.img_size, opt.img_size))
    rows = {}
    for layout in opt.layouts:
        out = Path(opt.out) / "layouts" / layout / "model.onnx"
        out.parent.mkdir(parents=True, exist_ok=True)
        common = dict(deploy=True, deploy_outputs=layout, include=("onnx",), img_size=opt.img_size, opset=13,
                      data=opt.data, report=False)
        fp32 = export.run(weights=opt.weights, output=out, **common)["onnx"]
        int8 = quantize_int8(fp32, out.with_name("model.int8.onnx"), calib, calib_method=opt.calib_method)
        whole = quantize_int8(fp32, out.with_name("model.all-int8.onnx"), calib, float_decode=False,
                              calib_method=opt.calib_method)
        judge = Judge(fp32, opt.data, opt.img_size, held)
        rows[layout] = [judge(fp32), judge(int8), judge(int8, kernels=True), judge(whole), None]
        if opt.qat_weights:
            rows[layout][4] = judge(export.run(weights=opt.qat_weights, output=out.with_name("qat.onnx"), **common)["onnx"])
    return rows


def layout_table(rows: dict) -> str:
    def cell(m) -> str:
        return "-" if m is None else f"{m.map:.3f} / {m.map50:.3f} (error {m.error:.3f})"

    lines = ["| layout | fp32 | PTQ | PTQ, int8 kernels | PTQ, decoding in int8 too | QAT |", "|---|---|---|---|---|---|"]
    lines += [f"| {layout} | " + " | ".join(cell(m) for m in measures) + " |" for layout, measures in rows.items()]
    return "\n".join(lines)


def _meta(onnx_path) -> dict:
    import onnx

    return {p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}


def _names(onnx_path) -> list[str]:
    import onnx

    return [o.name for o in onnx.load(str(onnx_path)).graph.output]


def table(report, qat: dict, baseline=None, uint8: dict | None = None) -> str:
    """model x toolchain: fp32, PTQ, PTQ + hybrid, QAT (mAP50-95 / mAP50, latency ms); with ``baseline`` (the
    Measure of QAT's float fine-tune) a last column: the fp32 model QAT is to be compared with; with ``uint8``
    (uint8_rows: {"PTQ" | "hybrid" | "QAT": (Measure, ms)}) a row for onnxruntime's kernels on uint8 files."""
    def cell(m, ms=None) -> str:
        if m is None:
            return "-"
        return f"{m.map:.3f} / {m.map50:.3f}" + (f" ({ms:.1f} ms)" if ms else "")

    h = report.hybrid
    ptq_rows = {"onnxruntime, QDQ as written": (report.int8, h.measure if h else None, {}),
                "onnxruntime, int8 kernels": (report.kernels.get("int8"), report.kernels.get("hybrid"), report.latency_ms)}
    if uint8:
        ptq_rows["onnxruntime, int8 kernels, uint8 activations"] = (
            uint8.get("PTQ", (None,))[0], uint8.get("hybrid", (None,))[0],
            {"fp32": report.latency_ms.get("fp32"), "int8": uint8.get("PTQ", (None, None))[1],
             "hybrid": uint8.get("hybrid", (None, None))[1]})
        qat = {**qat, "onnxruntime, int8 kernels, uint8 activations": uint8["QAT"]} if "QAT" in uint8 else qat
    for name, t in report.toolchains.items():
        ptq_rows[name] = (t.int8, t.hybrid, t.latency_ms)
    extra = baseline is not None
    lines = ["| toolchain | fp32 | PTQ | PTQ + hybrid | QAT |" + (" fp32 fine-tuned as QAT |" if extra else ""),
             "|---|---|---|---|---|" + ("---|" if extra else "")]
    for name, (int8, hybrid, lat) in ptq_rows.items():
        q = qat.get(name)
        lines.append(f"| {name} | {cell(report.fp32, lat.get('fp32'))} | {cell(int8, lat.get('int8'))} | "
                     f"{cell(hybrid, lat.get('hybrid'))} | {cell(*q) if q else '-'} |" + (f" {cell(baseline)} |" if extra else ""))
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", required=True, help="the float checkpoint")
    p.add_argument("--qat-weights", default=None, help="its train.py --qat checkpoint")
    p.add_argument("--float-weights", default=None, help="QAT's float baseline: the same fine-tune without --qat")
    p.add_argument("--data", default="data/demo.yaml")
    p.add_argument("--img-size", type=int, default=256)
    p.add_argument("--calib-images", type=int, default=100)
    p.add_argument("--calib-method", choices=CALIB_METHODS, default=CALIB_METHODS[0], help="export.py --calib-method")
    p.add_argument("--budget", type=float, default=0.015)
    p.add_argument("--out", default="runs/bench_int8")
    p.add_argument("--layouts", nargs="*", default=None, choices=DEPLOY_LAYOUTS,
                   help="also the int8 cost of each output layout (alone: all of them)")
    p.add_argument("--layouts-only", action="store_true", help="only the layouts table (no sensitivity, no toolchains)")
    opt = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    toolchains = available()
    print(f"toolchains in this environment: onnxruntime{''.join(', ' + t for t in toolchains)}; {load_average()}")
    if opt.layouts is not None and not opt.layouts:
        opt.layouts = list(DEPLOY_LAYOUTS)
    report = qat = layouts = None
    if not opt.layouts_only:
        report, results = ptq(opt, toolchains)
        qat = qat_rows(opt, toolchains) if opt.qat_weights else {}
        baseline = float_baseline(opt) if opt.float_weights else None
        uint8 = uint8_rows(opt, {"PTQ": results.get("int8"), "hybrid": report.hybrid.path if report.hybrid else None,
                                 "QAT": _qat_onnx(opt) if opt.qat_weights else None})
        print(report.text())
        print(f"\n{Path(opt.weights).name}, {opt.img_size} px, val split of {opt.data}: mAP50-95 / mAP50 (latency, batch 1)")
        print(table(report, qat, baseline, uint8))
    if opt.layouts:
        layouts = layout_rows(opt)
        print(f"\nOutput layouts in int8 (onnxruntime; error: of decoded boxes and scores against the layout's fp32 file)")
        print(layout_table(layouts))
    print(load_average())
    return report, qat, layouts


if __name__ == "__main__":
    main()
