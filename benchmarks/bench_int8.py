"""What 8 bits cost, per toolchain: fp32 against post-training int8, int8 with the recommended hybrid, and
quantisation-aware training, each measured on the dataset's val split (mAP50-95, mAP50) with its latency.

    python -m benchmarks.bench_int8 --weights best.pt --qat-weights qat/last.pt --data data/demo.yaml --img-size 256
    /tmp/venv_ov/bin/python -m benchmarks.bench_int8 ...       # adds OpenVINO (NNCF int8 IR; the QAT file as IR)
    /tmp/venv_rknn/bin/python -m benchmarks.bench_int8 ...     # adds RKNN (rk3588, rknn-toolkit2's simulator)

The toolchains are those this Python environment imports (each lives in its own: README). For the float
checkpoint, export.run(--deploy --int8 --sensitivity) writes and measures every int8 model and the hybrid
(utils/quant/sensitivity.py); the QAT checkpoint (train.py --qat) is exported once (its QDQ file, and
converted for each toolchain: OpenVINO reads it as FakeQuantize, rknn-toolkit2 imports it as a QAT
model) and measured the same way. onnxruntime appears twice: the QDQ file run as written (the exact 8-bit
arithmetic, what an NPU computes) and through its fused int8 kernels (what this CPU gives; they saturate on
x86 CPUs without VNNI). Latency: batch 1, median of 30 runs after a warm-up, on this CPU (RKNN: none, the
simulator is not the NPU). Timings need an otherwise idle machine.
"""
from __future__ import annotations

import argparse
import logging
import importlib.util
from pathlib import Path

from benchmarks import load_average

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
                         hybrid_budget=opt.budget, output=out, report=False)
    return results["sensitivity"], results


def qat_rows(opt, toolchains: list[str]) -> dict:
    """{toolchain: (Measure, latency ms or None)} of the QAT checkpoint's exported models."""
    import export
    from utils.export.exporter import N_HELD
    from utils.export.int8 import calibration_images
    from utils.infer.backends import DecodedRunner
    from utils.infer.outputs import OutputFormat
    from utils.quant.sensitivity import Judge, latency_ms, median_ms

    out = Path(opt.out) / "qat" / "model.onnx"
    out.parent.mkdir(parents=True, exist_ok=True)
    results = export.run(weights=opt.qat_weights, deploy=True, include=("onnx", *[t for t in toolchains if t != "rknn"]),
                         img_size=opt.img_size, opset=13, data=opt.data, output=out, report=False)
    onnx_path = results["onnx"]
    held = calibration_images(opt.data, N_HELD, (opt.img_size, opt.img_size), split="val", purpose="int8 check")
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


def _meta(onnx_path) -> dict:
    import onnx

    return {p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}


def _names(onnx_path) -> list[str]:
    import onnx

    return [o.name for o in onnx.load(str(onnx_path)).graph.output]


def table(report, qat: dict) -> str:
    """model x toolchain: fp32, PTQ, PTQ + hybrid, QAT (mAP50-95 / mAP50, latency ms)."""
    def cell(m, ms=None) -> str:
        if m is None:
            return "-"
        return f"{m.map:.3f} / {m.map50:.3f}" + (f" ({ms:.1f} ms)" if ms else "")

    h = report.hybrid
    ptq_rows = {"onnxruntime, QDQ as written": (report.int8, h.measure if h else None, {}),
                "onnxruntime, int8 kernels": (report.kernels.get("int8"), report.kernels.get("hybrid"), report.latency_ms)}
    for name, t in report.toolchains.items():
        ptq_rows[name] = (t.int8, t.hybrid, t.latency_ms)
    lines = ["| toolchain | fp32 | PTQ | PTQ + hybrid | QAT |", "|---|---|---|---|---|"]
    for name, (int8, hybrid, lat) in ptq_rows.items():
        q = qat.get(name)
        lines.append(f"| {name} | {cell(report.fp32, lat.get('fp32'))} | {cell(int8, lat.get('int8'))} | "
                     f"{cell(hybrid, lat.get('hybrid'))} | {cell(*q) if q else '-'} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", required=True, help="the float checkpoint")
    p.add_argument("--qat-weights", default=None, help="its train.py --qat checkpoint")
    p.add_argument("--data", default="data/demo.yaml")
    p.add_argument("--img-size", type=int, default=256)
    p.add_argument("--calib-images", type=int, default=100)
    p.add_argument("--budget", type=float, default=0.015)
    p.add_argument("--out", default="runs/bench_int8")
    opt = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    toolchains = available()
    print(f"toolchains in this environment: onnxruntime{''.join(', ' + t for t in toolchains)}; {load_average()}")
    report, _ = ptq(opt, toolchains)
    qat = qat_rows(opt, toolchains) if opt.qat_weights else {}
    print(report.text())
    print(f"\n{Path(opt.weights).name}, {opt.img_size} px, val split of {opt.data}: mAP50-95 / mAP50 (latency, batch 1)")
    print(table(report, qat))
    print(load_average())
    return report, qat


if __name__ == "__main__":
    main()
