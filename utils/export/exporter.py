"""The export engine behind export.py: ExportOptions in; ONNX (and TorchScript, OpenVINO, RKNN, int8) files
written, each verified against torch and reported; what was made out.

    results = run_export(ExportOptions(weights="best.pt", deploy=True, include=("onnx", "openvino"),
                                       int8=CalibrationOptions("data/demo.yaml")))

Returns {"layout", "onnx", "report", "int8", "int8_comparison", "int8_report", "torchscript", "openvino"
(float32 IR), "openvino_int8", "openvino_comparison" (of the int8 IR with int8, else of the float32
one; a ConversionComparison), "openvino_fp32_comparison" (with int8), "rknn", "rknn_comparison",
"verification": [Verification, ...]}, the keys of what was made; with --sensitivity also "sensitivity" (a
SensitivityReport), "sensitivity_text", "hybrid_terms" (files), "hybrid_int8", "openvino_hybrid_int8",
"rknn_hybrid" (the hybrid models each toolchain built). Raises on any failed check.

OpenVINO and RKNN convert the ONNX file once it is verified; int8 models calibrate on the same dataset
images and are compared with float32 on N_HELD images of the other split.
"""
from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models.weights import load_model
from models.yolo import Model
from utils.devices import select_device
from utils.export.layouts import ExportModel
from utils.export.options import ExportOptions
from utils.export.rewrite import prepare_for_export
from utils.infer.backends import letterbox_of

LOGGER = logging.getLogger("yolox5.export")
N_HELD = 8  # images int8 and converted models are compared with fp32 on


@dataclass
class _Job:
    """What every step of one export needs."""

    opts: ExportOptions
    model: torch.nn.Module    # as loaded, before fusion and rewrites: the reference of every check
    wrapped: ExportModel      # what is traced; its ``format`` says what the outputs are
    im: torch.Tensor          # the export input [B, 3, H, W], BGR 0-255
    meta: dict                # the files' metadata
    onnx_path: Path
    letterbox: str
    judge: object = None      # --sensitivity: measures a file of the model (utils/quant/sensitivity.Judge)

    @property
    def batch(self) -> int:
        """Batch size of the files' runs: 1 for a dynamic batch, else the exported one."""
        return 1 if "batch" in self.opts.dynamic else int(self.opts.batch_size)


def run_export(opts: ExportOptions) -> dict:
    device = select_device(str(opts.device))
    model, letterbox = _load(opts, device)
    opts.check_model(int(max(model.stride.tolist())))
    _check_quantised(opts, model)
    _require_toolchains(opts)
    job = _prepare(opts, model, device, letterbox)
    LOGGER.info(f"Exporting {job.meta['yaml']} ({'weights ' + str(opts.weights) if opts.weights else 'random weights'}) "
                f"at {opts.img_size[0]}x{opts.img_size[1]}, batch {opts.batch_size}, layout '{opts.layout}'"
                + (", BatchNorm fused" if opts.deploy else "")
                + (f", Focus as conv ({opts.focus_conv})" if opts.focus_conv else ""))
    results: dict = {"verification": [], "layout": opts.layout}
    if "onnx" in opts.include or opts.converted:  # openvino and rknn convert the ONNX file once it is verified
        results.update(_onnx(job))
        calib, held, source = _images(job)
        if opts.int8 and "onnx" in opts.include:
            results.update(_int8(job, calib, held, source))
        if opts.sensitivity:
            results.update(_sensitivity(job, calib, held))
        if "openvino" in opts.converted:
            results.update(_openvino(job, calib, held, source, results.get("sensitivity")))
        if "rknn" in opts.converted:
            results.update(_rknn(job, calib, held, source, results.get("sensitivity")))
    if "torchscript" in opts.include:
        results.update(_torchscript(job))
    results["verification"] = [results.pop(k) for k in ("onnx_check", "torchscript_check") if k in results]
    return results


def _load(opts: ExportOptions, device):
    """(model in eval mode, its letterbox) from a checkpoint or, without weights, a YAML with random weights."""
    if opts.weights:
        model = load_model(opts.weights, cfg=opts.cfg, device=device)
        return model, letterbox_of(model)
    LOGGER.warning(f"no --weights: exporting {opts.cfg} with random weights (for graph inspection only)")
    return Model(opts.cfg).to(device).eval(), "center"


def _check_quantised(opts: ExportOptions, model) -> None:
    """A --qat checkpoint is its own int8 model: what post-training options would redo is refused."""
    from utils.export.int8 import PER_CHANNEL_OPSET

    if not _quantised(model):
        if opts.int8_activations == "uint8" and not opts.int8:
            raise ValueError(f"--int8-activations {opts.int8_activations} writes an int8 file's activations: add --int8 "
                             f"(or export a --qat checkpoint)")
        return
    if opts.opset < PER_CHANNEL_OPSET:
        raise ValueError(f"{opts.weights}: a --qat model exports per-channel QDQ, which needs --opset {PER_CHANNEL_OPSET} or "
                         f"newer (got {opts.opset})")
    if opts.int8:
        raise ValueError(f"{opts.weights}: a --qat model is already int8 (its ranges come from training); drop --int8")
    if opts.focus_conv or opts.half or opts.nms is not None:
        raise ValueError(f"{opts.weights}: a --qat model exports its trained graph as it is: drop --focus-conv, --half "
                         f"and --nms")
    LOGGER.info(f"{opts.weights}: {model.describe()}")


def _quantised(model) -> bool:
    """A --qat model (utils/quant): already int8, with its own QDQ graph."""
    from utils.quant.prepare import QATModel

    return isinstance(model, QATModel)


def _require_toolchains(opts: ExportOptions) -> None:
    """Fail before any work when a toolchain package is missing, naming what to install."""
    if "openvino" in opts.include:
        from utils.infer.openvino_runtime import require_openvino

        require_openvino(opts.int8)
    if "rknn" in opts.include:
        from utils.export.rknn import require_rknn

        require_rknn()


def _prepare(opts: ExportOptions, model, device, letterbox: str) -> _Job:
    end_to_end = None
    if opts.nms is not None:
        from utils.export.nms_graph import EndToEndNMS

        end_to_end = EndToEndNMS(opts.nms.max_det, opts.nms.iou_thres, opts.nms.conf_thres)
    prepared = prepare_for_export(model, fuse=opts.deploy, focus_conv=opts.focus_conv)
    wrapped = ExportModel(prepared, opts.layout, dynamic_hw="hw" in opts.dynamic, nms=end_to_end).eval()
    torch.manual_seed(0)
    im = torch.rand(int(opts.batch_size), 3, *opts.img_size, device=device) * 255  # BGR 0-255, a real-size input
    if opts.half:
        wrapped, im = wrapped.half(), im.half()
    target = Path(opts.output) if opts.output else Path(opts.weights or opts.cfg).with_suffix(".onnx")
    return _Job(opts, model, wrapped, im, metadata(model, opts, wrapped.format, letterbox), target, letterbox)


def metadata(model, opts: ExportOptions, fmt, letterbox: str) -> dict:
    """The files' metadata (strings; lists as JSON): what post-processing needs to read them."""
    meta = {
        "exporter": "yolox5 export.py",
        "yaml": Path(str(model.yaml.get("yaml_file", getattr(model, "yaml_source", "model")))).name,
        "names": list(model.names),
        "nc": model.nc,
        "imgsz": list(opts.img_size),
        "batch": "dynamic" if "batch" in opts.dynamic else int(opts.batch_size),
        "dynamic": list(opts.dynamic),
        **fmt.metadata(),  # stride, layout, outputs, output_layout, decoder, decoder_params
        "input": f"images [B, 3, H, W] {'float16' if opts.half else 'float32'} BGR 0-255, letterboxed "
                 f"({letterbox}, pad 114), no normalisation",
        "letterbox": letterbox,
        "deploy": opts.deploy,
        "focus_conv": opts.focus_conv or "none",
    }
    if opts.nms is not None:
        meta["nms"] = opts.nms.metadata()
    if _quantised(model):
        meta["quantization"] = model.describe() + (", activations as uint8" if opts.int8_activations == "uint8" else "")
    return meta


# ---- the steps ---------------------------------------------------------------------------------
def _onnx(job: _Job) -> dict:
    from utils.export.onnx_file import export_onnx
    from utils.export.verify import verify_onnx

    opts, path = job.opts, job.onnx_path
    t0 = time.perf_counter()
    export_onnx(job.wrapped, job.im, path, opset=opts.opset, output_names=job.wrapped.format.names,
                dynamic=opts.dynamic, layout=opts.layout, simplify=opts.simplify, metadata=job.meta)
    if _quantised(job.model) and opts.int8_activations == "uint8":
        from utils.quant.uint8_activations import write_uint8_activations

        LOGGER.info(f"ONNX: {write_uint8_activations(path)} activation grids rewritten as uint8 (the same arithmetic)")
    LOGGER.info(f"ONNX: {path} written in {time.perf_counter() - t0:.1f} s (opset {opts.opset}"
                + (", simplified" if opts.simplify else "") + ")")
    check = verify_onnx(path, job.wrapped, job.im, reference=job.model, dynamic=opts.dynamic,
                        providers=_providers(opts.half), quantised=_quantised(job.model))
    LOGGER.info(check.text())
    check.raise_if_failed()
    return {"onnx": path, "onnx_check": check, **_report(job, "report", path)}


def _report(job: _Job, key: str, path: Path) -> dict:
    if not job.opts.report:
        return {}
    from utils.export.npu_report import npu_report

    report = npu_report(path)
    LOGGER.info(report.text())
    return {key: report}


def _torchscript(job: _Job) -> dict:
    from utils.export.torchscript import export_torchscript
    from utils.export.verify import verify_torchscript

    path = job.onnx_path.with_suffix(".torchscript")
    export_torchscript(job.wrapped, job.im, path, metadata=job.meta)
    check = verify_torchscript(path, job.wrapped, job.im)
    LOGGER.info(f"TorchScript: {path} written\n{check.text()}")
    check.raise_if_failed()
    return {"torchscript": path, "torchscript_check": check}


def _providers(half: bool):
    """onnxruntime providers to verify with: CUDA for float16 when onnxruntime-gpu is installed."""
    import onnxruntime as ort

    if half and "CUDAExecutionProvider" in ort.get_available_providers():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def _images(job: _Job):
    """(calibration images or None, held images or None, what the held images are).

    int8 models calibrate on the dataset's calibration images; int8 and converted models are compared with
    float32 on N_HELD held images of the other split, so none were calibrated on (a dataset with one split:
    its last calibration images), or without --data on the export's random input (a check of the
    conversion, not of accuracy)."""
    from utils.export.int8 import calibration_images

    opts, d = job.opts, job.opts.images
    calib = calibration_images(d.data, d.calibration, opts.img_size, job.letterbox, d.split) if opts.int8 else None
    if not (opts.int8 or opts.converted):
        return calib, None, ""
    if d is None:
        return calib, job.im.detach().float().cpu().numpy(), "random inputs (--data for dataset images)"
    held_split = "val" if d.split != "val" else "train"
    try:
        held = calibration_images(d.data, N_HELD, opts.img_size, job.letterbox, held_split, purpose="int8 check")
        return calib, held, f"{held_split} images"
    except ValueError:  # a dataset with one split
        last = calib if calib is not None else calibration_images(d.data, N_HELD, opts.img_size, job.letterbox,
                                                                  d.split, purpose="int8 check")
        return calib, last[-min(N_HELD, len(last)):], f"{d.split} images (no other split)"


def _int8(job: _Job, calib: np.ndarray, held: np.ndarray, source: str) -> dict:
    from utils.export.int8 import compare_int8, quantize_int8

    path = job.onnx_path
    t0 = time.perf_counter()
    opts = job.opts
    int8_path = quantize_int8(path, path.with_name(path.stem + ".int8.onnx"), calib, batch_size=job.batch,
                              activations=opts.int8_activations, calib_method=opts.calib_method)
    LOGGER.info(f"int8: {int8_path} written in {time.perf_counter() - t0:.1f} s (QDQ, per-channel int8 weights, "
                f"{opts.int8_activations} activations, {opts.calib_method} ranges over {len(calib)} images)")
    comparison = compare_int8(path, int8_path, held, job.wrapped.format, batch_size=job.batch)
    comparison.source = source
    LOGGER.info(comparison.text())
    LOGGER.info(f"  the accuracy cost of 8 bits: python val.py --data {job.opts.images.data} --weights {int8_path} "
                f"--img-size {job.opts.img_size[0]}")
    return {"int8": int8_path, "int8_comparison": comparison, **_report(job, "int8_report", int8_path)}


def _sensitivity(job: _Job, calib: np.ndarray, held: np.ndarray) -> dict:
    """Per-layer-group int8 sensitivity in onnxruntime, the recommended hybrid, and its terms for each toolchain."""
    from utils.export.int8 import quantize_int8
    from utils.quant.layer_groups import describe_rows
    from utils.quant.sensitivity import Judge, analyse_sensitivity

    path = job.onnx_path
    job.judge = Judge(path, job.opts.images.data, job.opts.img_size[0], held, letterbox=job.letterbox)
    report = analyse_sensitivity(path, calib, job.judge, path.parent, budget=job.opts.hybrid_budget,
                                 describe=describe_rows(job.model),
                                 quantize=functools.partial(quantize_int8, activations=job.opts.int8_activations,
                                                            calib_method=job.opts.calib_method))
    LOGGER.info(report.text())
    out = {"sensitivity": report, **_write_sensitivity(job, report)}
    if report.hybrid is not None:
        out["hybrid_int8"] = report.hybrid.path
    return out


def _write_sensitivity(job: _Job, report) -> dict:
    """<stem>.sensitivity.md (the tables) and <stem>.hybrid.json (the hybrid in each toolchain's terms)."""
    import json

    path = job.onnx_path
    text_path, terms_path = path.with_name(path.stem + ".sensitivity.md"), path.with_name(path.stem + ".hybrid.json")
    text_path.write_text(report.text() + "\n")
    terms_path.write_text(json.dumps(report.terms(), indent=1) + "\n")
    LOGGER.info(f"sensitivity: {text_path} and {terms_path} written"
                + (f"; the onnxruntime hybrid is {report.hybrid.path}" if report.hybrid else ""))
    return {"sensitivity_text": text_path, "hybrid_terms": terms_path}


def _openvino_sensitivity(job: _Job, xml: Path, int8_xml: Path, calib: np.ndarray, report) -> dict:
    """The OpenVINO int8 IR measured (mAP on the val split, latency against the float IR); with a recommended
    hybrid, the hybrid as NNCF's ignored scope, quantised, measured and shown to have taken effect."""
    import onnx
    import openvino as ov

    from utils.export.openvino import quantize_openvino
    from utils.infer.openvino_runtime import openvino_runner
    from utils.quant.hybrid_config import count_ops, openvino_ignored_names
    from utils.quant.sensitivity import ToolchainResult, median_ms

    image, names = calib[:1], job.wrapped.format.names
    result = ToolchainResult(job.judge(int8_xml))
    files = {"fp32": xml, "int8": int8_xml}
    out = {}
    if report.hybrid is not None:
        core = ov.Core()
        ignored = openvino_ignored_names(core.read_model(str(xml)), onnx.load(str(job.onnx_path)), report.hybrid.exclude)
        path = quantize_openvino(xml, int8_xml.with_name(job.onnx_path.stem + ".hybrid.int8.xml"), calib,
                                 batch_size=job.batch, ignored=ignored, source_onnx=job.onnx_path)
        before, after = (count_ops(core.read_model(str(f)), "FakeQuantize") for f in (int8_xml, path))
        result.hybrid, result.terms = job.judge(path), {"ignored_scope": {"names": ignored}}
        result.effect = f"FakeQuantize {before} -> {after}"
        files["hybrid"], out["openvino_hybrid_int8"] = path, path
        LOGGER.info(f"OpenVINO hybrid: {path} ({len(ignored)} ops in NNCF's ignored scope; {result.effect})")
    for key, f in files.items():
        run = openvino_runner(f, names)
        result.latency_ms[key] = median_ms(lambda: run(image))
    report.toolchains["openvino"] = result
    LOGGER.info(report.toolchain_table())
    _write_sensitivity(job, report)
    return out


def _openvino(job: _Job, calib, held, source: str, sensitivity=None) -> dict:
    from utils.export.compare import compare_with_torch
    from utils.export.openvino import export_openvino, quantize_openvino
    from utils.infer.openvino_runtime import openvino_runner

    onnx_path = job.onnx_path
    t0 = time.perf_counter()
    xml = export_openvino(onnx_path, onnx_path.with_suffix(".xml"), job.meta)
    LOGGER.info(f"OpenVINO: {xml} (+ .bin) written in {time.perf_counter() - t0:.1f} s ("
                + ("int8: the QDQ pairs of the QAT file as FakeQuantize ops)" if _quantised(job.model) else "float32)"))
    out = {"openvino": xml}
    files = [("openvino_comparison", xml)]
    if calib is not None:
        t0 = time.perf_counter()
        int8_xml = quantize_openvino(xml, onnx_path.with_name(onnx_path.stem + ".int8.xml"), calib,
                                     batch_size=job.batch, source_onnx=onnx_path)
        LOGGER.info(f"OpenVINO int8: {int8_xml} written in {time.perf_counter() - t0:.1f} s (NNCF, {len(calib)} "
                    f"calibration images)")
        out["openvino_int8"] = int8_xml
        files = [("openvino_fp32_comparison", xml), ("openvino_comparison", int8_xml)]
        if sensitivity is not None:
            out.update(_openvino_sensitivity(job, xml, int8_xml, calib, sensitivity))
    for key, f in files:
        run = openvino_runner(f, job.wrapped.format.names)
        out[key] = compare_with_torch(run, job.wrapped, job.model, held, f, "OpenVINO CPU", batch_size=job.batch)
        out[key].source = source
        LOGGER.info(out[key].text())
    return out


def _rknn(job: _Job, calib, held, source: str, sensitivity=None) -> dict:
    from utils.export.compare import compare_with_torch
    from utils.export.rknn import build_rknn
    from utils.infer.backends import DecodedRunner
    from utils.quant.sensitivity import ToolchainResult

    platform = job.opts.rknn_platform
    t0 = time.perf_counter()
    qat = _quantised(job.model)
    if calib is not None and job.opts.layout != "per-level":
        LOGGER.warning(f"RKNN int8 of the {job.opts.layout!r} layout: rknn-toolkit2 quantises the decoding in the "
                       f"graph, box pixels and scores on one 8-bit scale (damoyolo_s: mAP 0.000 against 0.496 "
                       f"per-level); export with --deploy-outputs per-level and decode on the CPU")
    path = job.onnx_path.with_name(job.onnx_path.stem + (".int8" if calib is not None or qat else "") + ".rknn")
    rknn = build_rknn(job.onnx_path, path, platform, calib, job.meta, qat=qat)
    int8_measure = None
    try:
        LOGGER.info(f"RKNN: {path} written in {time.perf_counter() - t0:.1f} s ({platform}, "
                    + (f"int8, calibrated on {len(calib)} images)" if calib is not None else
                       "int8 from the QAT file's ranges)" if qat else
                       "float16; add --int8 --data for the 8-bit model)"))
        comparison = compare_with_torch(rknn.run, job.wrapped, job.model, held, path, rknn.runtime)
        if sensitivity is not None:
            int8_measure = job.judge.measure(DecodedRunner(rknn.run, job.wrapped.format, job.model.nc))
    finally:
        rknn.release()
    comparison.source = source
    LOGGER.info(comparison.text())
    out = {"rknn": path, "rknn_comparison": comparison}
    if int8_measure is not None:
        sensitivity.toolchains["rknn"] = ToolchainResult(int8_measure)
        if sensitivity.hybrid is not None:
            out.update(_rknn_hybrid(job, calib, sensitivity))
        LOGGER.info(sensitivity.toolchain_table())
        _write_sensitivity(job, sensitivity)
    return out


def _rknn_hybrid(job: _Job, calib: np.ndarray, report) -> dict:
    """The recommended hybrid as rknn-toolkit2's custom_quantize_layers, built, measured in the simulator and
    checked against the compiler's own report of the tensors it kept in float16."""
    from utils.export.rknn import build_rknn_hybrid
    from utils.infer.backends import DecodedRunner

    path = job.onnx_path.with_name(job.onnx_path.stem + ".hybrid.int8.rknn")
    rknn, tensors, reported = build_rknn_hybrid(job.onnx_path, path, job.opts.rknn_platform, calib,
                                                report.hybrid.exclude, job.meta)
    try:
        measure = job.judge.measure(DecodedRunner(rknn.run, job.wrapped.format, job.model.nc))
    finally:
        rknn.release()
    result = report.toolchains["rknn"]
    result.hybrid, result.terms = measure, {"custom_quantize_layers": {t: "float16" for t in tensors}}
    result.effect = f"{reported} of {len(tensors)} tensors compiled as float16"
    LOGGER.info(f"RKNN hybrid: {path} ({len(tensors)} tensors under custom_quantize_layers; the compiler kept "
                f"{reported} in float16)")
    return {"rknn_hybrid": path}
