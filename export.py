"""Export to ONNX (TorchScript, OpenVINO, RKNN) for NPU toolchains, verified against torch, with a readiness report.

    python export.py --weights ./yolox_rslu.pt --include onnx --opset 10 --simplify --deploy
    python export.py --weights yolox_s.pth --cfg models/yoloxs.yaml --img-size 640 --simplify
    python export.py --weights best.pt --deploy --deploy-outputs split --dynamic batch
    python export.py --weights best.pt --deploy --focus-conv --int8 --data data/demo.yaml --calib-images 100
    python export.py --weights best.pt --nms --max-det 100 --conf-thres 0.25 --iou-thres 0.45
    python export.py --cfg models/yoloxs_rslu.yaml --deploy --simplify       # random weights: graph inspection
    python export.py --weights best.pt --deploy --include openvino --int8 --data data/demo.yaml  # openvino, nncf
    python export.py --weights best.pt --deploy --include rknn --int8 --data data/demo.yaml --rknn-platform rk3588

Output layouts (utils/export/layouts.py): without --deploy the eval output [B, N, 5 + nc] ("decoded");
--deploy folds BatchNorm and writes NPU-friendly separate outputs: "per-level" (default: raw reg,
sigmoid obj, sigmoid cls per level, decoded on the CPU) or "split" (boxes, scores); --nms adds ONNX
NonMaxSuppression (num_dets, boxes, scores, classes). Every export is checked by onnx.checker and
onnxruntime against torch (it fails when they differ) and reported (utils/export/npu_report.py).

--include openvino / rknn convert that ONNX file (utils/export/openvino.py, utils/export/rknn.py; optional
packages, a clear message names what to install) and, with --int8, quantise on the same calibration images
as the int8 ONNX. Each converted model runs in its toolchain's own runtime (OpenVINO CPU, the rknn-toolkit2
simulator) on held-out dataset images and is compared with float32 torch: cosine per output and the share
of torch's top-100 detections it finds again (utils/export/compare.py).
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import torch

from utils.export.layouts import DEPLOY_LAYOUTS, DESCRIPTIONS, ExportModel, output_names
from utils.export.rewrite import FOCUS_MODES, prepare_for_export
from utils.export.onnx_file import DYNAMIC_AXES, check_opset

LOGGER = logging.getLogger("yolox5.export")
INCLUDE = ("onnx", "torchscript", "openvino", "rknn")
CONVERTED = ("openvino", "rknn")  # converted from the ONNX file, so it is written for them too
N_HELD = 8  # images int8 and converted models are compared with fp32 on


def _img_size(size) -> tuple[int, int]:
    size = [size] if isinstance(size, int) else list(size)
    if len(size) not in (1, 2) or any(int(s) < 1 for s in size):
        raise ValueError(f"--img-size takes h [w], positive, got {size}")
    return (int(size[0]), int(size[-1]))


def _check_options(include, imgsz, stride, batch_size, deploy, deploy_outputs, nms, half, device, int8, data,
                   dynamic, rknn_platform="rk3588") -> None:
    for inc in include:
        if inc not in INCLUDE:
            raise ValueError(f"--include {inc!r}: choose from {INCLUDE}")
    bad = [s for s in imgsz if s % stride]
    if bad:
        raise ValueError(f"--img-size {imgsz[0]} {imgsz[1]}: every side must be a multiple of the largest stride "
                         f"{stride} (e.g. {(-(-imgsz[0] // stride)) * stride} {(-(-imgsz[1] // stride)) * stride})")
    if int(batch_size) < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    if deploy_outputs is not None and not deploy:
        raise ValueError("--deploy-outputs chooses the outputs of a --deploy export; add --deploy")
    if deploy_outputs is not None and deploy_outputs not in DEPLOY_LAYOUTS:
        raise ValueError(f"--deploy-outputs must be one of {DEPLOY_LAYOUTS}, got {deploy_outputs!r}")
    if nms and deploy_outputs is not None:
        raise ValueError("--nms writes its own outputs (num_dets, boxes, scores, classes); drop --deploy-outputs")
    if nms and "torchscript" in include:
        raise ValueError("--nms is ONNX only (NonMaxSuppression); export torchscript without --nms")
    if half and device.type != "cuda":
        raise ValueError("--half exports float16 for GPU runtimes and needs a CUDA device (--device 0); "
                         "for 8-bit NPUs use --int8")
    if half and int8:
        raise ValueError("--int8 quantises the float32 export; drop --half")
    converted = [inc for inc in CONVERTED if inc in include]
    if half and converted:
        raise ValueError(f"--include {converted[0]} converts the float32 ONNX and chooses its own precision "
                         f"(--int8 for 8 bits); drop --half")
    if int8 and not data:
        raise ValueError("--int8 calibrates on real images: pass --data (a dataset yaml, e.g. data/demo.yaml)")
    if int8 and nms:
        raise ValueError("--int8 with --nms would quantise the NMS tail: quantise the network (--deploy --int8) and "
                         "run NMS after it")
    if int8 and "onnx" not in include and not converted:
        raise ValueError("--int8 quantises the ONNX file, the OpenVINO IR or the RKNN model: add --include onnx, "
                         "openvino or rknn")
    if "rknn" in include:
        _check_rknn_options(batch_size, nms, dynamic, rknn_platform)
    bad = [d for d in dynamic if d not in DYNAMIC_AXES]
    if bad:
        raise ValueError(f"--dynamic takes {' and/or '.join(DYNAMIC_AXES)}, got {bad}")


def _check_rknn_options(batch_size, nms, dynamic, platform) -> None:
    from utils.export.rknn import check_platform

    if dynamic:
        raise ValueError("--include rknn needs a static input shape (RKNN models have one): drop --dynamic")
    if int(batch_size) != 1:
        raise ValueError(f"--include rknn converts batch 1 (the NPU runs one image at a time; rknn-toolkit2 "
                         f"multi-batch is its own build option), got --batch-size {batch_size}")
    if nms:
        raise ValueError("--include rknn: Rockchip NPUs do not run NonMaxSuppression; export --deploy (per-level "
                         "outputs) and run NMS after the model")
    check_platform(platform)


def _require_toolchains(include, int8) -> None:
    """Fail before any work when a toolchain package is missing, naming what to install."""
    if "openvino" in include:
        from utils.export.openvino import require_openvino

        require_openvino(int8)
    if "rknn" in include:
        from utils.export.rknn import require_rknn

        require_rknn()


def _load(weights, cfg, device):
    """(model in eval mode, official) from a checkpoint or, without weights, a YAML with random weights."""
    from models.yolo import Model, load_model

    if weights:
        model = load_model(weights, cfg=cfg, device=device)
        return model, bool(getattr(model, "official", False))  # official weights: top-left letterbox
    if not cfg:
        raise ValueError("pass --weights (a checkpoint) or --cfg (a model YAML, random weights)")
    LOGGER.warning(f"no --weights: exporting {cfg} with random weights (for graph inspection only)")
    return Model(cfg).to(device).eval(), False


def _default_output(weights, cfg) -> Path:
    """Beside the weights (or the YAML), same name: yolox_rslu.pt -> yolox_rslu.onnx."""
    return Path(weights or cfg).with_suffix(".onnx")


def metadata_of(model, imgsz, batch_size, layout, deploy, focus_conv, letterbox_mode, dynamic, half, nms_args) -> dict:
    """The ONNX metadata (strings; lists as JSON): what post-processing needs to read the file."""
    meta = {
        "exporter": "yolox5 export.py",
        "yaml": Path(str(model.yaml.get("yaml_file", getattr(model, "yaml_source", "model")))).name,
        "stride": [int(s) for s in model.stride.tolist()],
        "names": list(model.names),
        "nc": model.nc,
        "imgsz": list(imgsz),
        "batch": "dynamic" if "batch" in dynamic else batch_size,
        "dynamic": list(dynamic),
        "layout": layout,
        "outputs": output_names(layout, model.stride.tolist()),
        "output_layout": DESCRIPTIONS[layout],
        "input": f"images [B, 3, H, W] {'float16' if half else 'float32'} BGR 0-255, letterboxed "
                 f"({letterbox_mode}, pad 114), no normalisation",
        "letterbox": letterbox_mode,
        "deploy": deploy,
        "focus_conv": focus_conv or "none",
    }
    if nms_args:
        meta["nms"] = nms_args
    return meta


def run(weights=None, cfg=None, include=("onnx",), img_size=640, batch_size=1, opset=12, dynamic=(), simplify=False,
        deploy=False, deploy_outputs=None, half=False, device="cpu", output=None, focus_conv=None, nms=False,
        max_det=100, iou_thres=0.45, conf_thres=0.25, int8=False, data=None, calib_images=100, calib_split="train",
        rknn_platform="rk3588", report=True) -> dict:
    """Export, verify and report; returns what was made: {"layout", "onnx", "report", "int8", "int8_comparison",
    "int8_report", "torchscript", "openvino" (float32 IR), "openvino_int8", "openvino_comparison" (of the int8 IR
    with --int8, else of the float32 one; ConversionComparison), "openvino_fp32_comparison" (with --int8), "rknn",
    "rknn_comparison", "verification": [Verification, ...]}. Raises on any failed check."""
    from utils.devices import select_device
    from utils.export.int8 import calibration_images

    include, dynamic = tuple(include), tuple(dynamic or ())
    device = select_device(str(device))
    imgsz = _img_size(img_size)
    check_opset(opset)
    model, official = _load(weights, cfg, device)
    stride = int(max(model.stride.tolist()))
    _check_options(include, imgsz, stride, batch_size, deploy, deploy_outputs, nms, half, device, int8, data, dynamic,
                   rknn_platform)
    _require_toolchains(include, int8)
    layout = "nms" if nms else (deploy_outputs or "per-level") if deploy else "decoded"
    letterbox_mode = "topleft" if official else "center"
    nms_args = {"max_det": int(max_det), "iou_thres": float(iou_thres), "conf_thres": float(conf_thres),
                "class_aware": True, "multi_label": True} if nms else None

    end_to_end = None
    if nms:
        from utils.export.nms_graph import EndToEndNMS

        end_to_end = EndToEndNMS(max_det, iou_thres, conf_thres)
    prepared = prepare_for_export(model, fuse=deploy, focus_conv=focus_conv)
    wrapped = ExportModel(prepared, layout, dynamic_hw="hw" in dynamic, nms=end_to_end).eval()
    torch.manual_seed(0)
    im = torch.rand(int(batch_size), 3, *imgsz, device=device) * 255  # BGR 0-255, a real-size input
    if half:
        wrapped, im = wrapped.half(), im.half()
    meta = metadata_of(model, imgsz, int(batch_size), layout, deploy, focus_conv, letterbox_mode, dynamic, half,
                       nms_args)
    LOGGER.info(f"Exporting {meta['yaml']} ({'weights ' + str(weights) if weights else 'random weights'}) at "
                f"{imgsz[0]}x{imgsz[1]}, batch {batch_size}, layout '{layout}'"
                + (", BatchNorm fused" if deploy else "") + (f", Focus as conv ({focus_conv})" if focus_conv else ""))
    results: dict = {"verification": [], "layout": layout}
    target = Path(output) if output else _default_output(weights, cfg)
    converted = [inc for inc in CONVERTED if inc in include]
    if "onnx" in include or converted:  # openvino and rknn convert the ONNX file once it is verified
        results.update(_onnx(wrapped, model, im, target, meta, opset, dynamic, simplify, half, report))
        bs = 1 if "batch" in dynamic else int(batch_size)
        calib = calibration_images(data, calib_images, imgsz, letterbox_mode, calib_split) if int8 else None
        held, source = _held_images(data, calib_split, imgsz, letterbox_mode, calib, im) if int8 or converted \
            else (None, "")
        if int8 and "onnx" in include:
            results.update(_int8(results["onnx"], data, calib, held, source, imgsz, bs, meta, report))
        if "openvino" in converted:
            results.update(_openvino(results["onnx"], wrapped, model, meta, calib, held, source, bs))
        if "rknn" in converted:
            results.update(_rknn(results["onnx"], wrapped, model, meta, calib, held, source, rknn_platform))
    if "torchscript" in include:
        results.update(_torchscript(wrapped, im, target.with_suffix(".torchscript"), meta))
    results["verification"] = [results.pop(k) for k in ("onnx_check", "torchscript_check") if k in results]
    return results


def _onnx(wrapped, model, im, path: Path, meta: dict, opset, dynamic, simplify, half, report) -> dict:
    from utils.export.verify import verify_onnx
    from utils.export.onnx_file import export_onnx

    t0 = time.perf_counter()
    export_onnx(wrapped, im, path, opset=opset, output_names=meta["outputs"], dynamic=dynamic, layout=meta["layout"],
                simplify=simplify, metadata=meta)
    LOGGER.info(f"ONNX: {path} written in {time.perf_counter() - t0:.1f} s (opset {opset}"
                + (", simplified" if simplify else "") + ")")
    check = verify_onnx(path, wrapped, im, meta["layout"], meta["stride"], meta["outputs"], reference=model,
                        dynamic=dynamic, providers=_providers(half))
    LOGGER.info(check.text())
    check.raise_if_failed()
    out = {"onnx": path, "onnx_check": check}
    if report:
        from utils.export.npu_report import npu_report

        out["report"] = npu_report(path)
        LOGGER.info(out["report"].text())
    return out


def _torchscript(wrapped, im, path: Path, meta: dict) -> dict:
    from utils.export.torchscript import export_torchscript
    from utils.export.verify import verify_torchscript

    export_torchscript(wrapped, im, path, metadata=meta)
    check = verify_torchscript(path, wrapped, im, meta["outputs"], meta["layout"])
    LOGGER.info(f"TorchScript: {path} written\n{check.text()}")
    check.raise_if_failed()
    return {"torchscript": path, "torchscript_check": check}


def _providers(half: bool):
    """onnxruntime providers to verify with: CUDA for float16 when onnxruntime-gpu is installed."""
    import onnxruntime as ort

    if half and "CUDAExecutionProvider" in ort.get_available_providers():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def _held_images(data, split, imgsz, letterbox_mode, calib, im):
    """(images [n, 3, H, W], what they are) that int8 and converted models are compared with fp32 on:
    N_HELD images of the other split than calibration's, so none were calibrated on; without --data the
    export's random input (a check of the conversion, not of accuracy)."""
    from utils.export.int8 import calibration_images

    if not data:
        return im.detach().float().cpu().numpy(), "random inputs (--data for dataset images)"
    held_split = "val" if split != "val" else "train"
    try:
        held = calibration_images(data, N_HELD, imgsz, letterbox_mode, held_split, purpose="int8 check")
        return held, f"{held_split} images"
    except ValueError:  # a dataset with one split: the last calibration images (or the first ones of it)
        if calib is None:
            calib = calibration_images(data, N_HELD, imgsz, letterbox_mode, split, purpose="int8 check")
        return calib[-min(N_HELD, len(calib)):], f"{split} images (no other split)"


def _int8(path, data, images, held, source, imgsz, bs, meta: dict, report) -> dict:
    from utils.export.int8 import compare_int8, quantize_int8

    t0 = time.perf_counter()
    int8_path = quantize_int8(path, path.with_name(path.stem + ".int8.onnx"), images, batch_size=bs)
    LOGGER.info(f"int8: {int8_path} written in {time.perf_counter() - t0:.1f} s (QDQ, per-channel int8 weights, "
                f"int8 activations, MinMax over {len(images)} images)")
    comparison = compare_int8(path, int8_path, held, meta["layout"], meta["stride"], meta["outputs"], batch_size=bs)
    comparison.source = source
    LOGGER.info(comparison.text())
    LOGGER.info(f"  the accuracy cost of 8 bits: python val.py --data {data} --weights {int8_path} "
                f"--img-size {imgsz[0]}")
    out = {"int8": int8_path, "int8_comparison": comparison}
    if report:
        from utils.export.npu_report import npu_report

        out["int8_report"] = npu_report(int8_path)
        LOGGER.info(out["int8_report"].text())
    return out


def _openvino(onnx_path: Path, wrapped, model, meta: dict, calib, held, source, bs) -> dict:
    from utils.export.compare import compare_with_torch
    from utils.export.openvino import export_openvino, openvino_runner, quantize_openvino

    t0 = time.perf_counter()
    xml = export_openvino(onnx_path, onnx_path.with_suffix(".xml"), meta)
    LOGGER.info(f"OpenVINO: {xml} (+ .bin, float32) written in {time.perf_counter() - t0:.1f} s")
    out = {"openvino": xml}
    files = [("openvino_comparison", xml)]
    if calib is not None:
        t0 = time.perf_counter()
        int8_xml = quantize_openvino(xml, onnx_path.with_name(onnx_path.stem + ".int8.xml"), calib, batch_size=bs)
        LOGGER.info(f"OpenVINO int8: {int8_xml} written in {time.perf_counter() - t0:.1f} s (NNCF, {len(calib)} "
                    f"calibration images)")
        out["openvino_int8"] = int8_xml
        files = [("openvino_fp32_comparison", xml), ("openvino_comparison", int8_xml)]
    for key, f in files:
        run = openvino_runner(f, meta["outputs"])
        out[key] = compare_with_torch(run, wrapped, model, held, meta["layout"], meta["stride"], meta["outputs"], f,
                                      "OpenVINO CPU", batch_size=bs)
        out[key].source = source
        LOGGER.info(out[key].text())
    return out


def _rknn(onnx_path: Path, wrapped, model, meta: dict, calib, held, source, platform) -> dict:
    from utils.export.compare import compare_with_torch
    from utils.export.rknn import build_rknn

    t0 = time.perf_counter()
    path = onnx_path.with_name(onnx_path.stem + (".int8" if calib is not None else "") + ".rknn")
    rknn = build_rknn(onnx_path, path, platform, calib, meta)
    try:
        LOGGER.info(f"RKNN: {path} written in {time.perf_counter() - t0:.1f} s ({platform}, "
                    + (f"int8, calibrated on {len(calib)} images)" if calib is not None else
                       "float16; add --int8 --data for the 8-bit model)"))
        comparison = compare_with_torch(rknn.run, wrapped, model, held, meta["layout"], meta["stride"],
                                        meta["outputs"], path, rknn.runtime)
    finally:
        rknn.release()
    comparison.source = source
    LOGGER.info(comparison.text())
    return {"rknn": path, "rknn_comparison": comparison}


def parse_opt(argv=None):
    p = argparse.ArgumentParser(description="Export to ONNX / TorchScript / OpenVINO / RKNN for NPU toolchains, "
                                            "verified against torch")
    p.add_argument("--weights", default=None, help="project checkpoint (.pt) or official YOLOX weights (.pth)")
    p.add_argument("--cfg", default=None, help="model YAML (official .pth on another model file; alone: random weights)")
    p.add_argument("--include", nargs="+", default=["onnx"], help=f"formats: {', '.join(INCLUDE)}")
    p.add_argument("--img-size", "--imgsz", type=int, nargs="+", default=[640], help="input h [w] (multiples of 32)")
    p.add_argument("--batch-size", type=int, default=1, help="batch size of the exported input")
    p.add_argument("--opset", type=int, default=12, help="ONNX opset (10 and up; 10 for OpenVINO 2021 / old NPU flows)")
    p.add_argument("--dynamic", nargs="*", default=None, metavar="AXES",
                   help="dynamic axes: 'batch' and/or 'hw' (alone: batch, as official YOLOX)")
    p.add_argument("--simplify", action="store_true", help="simplify with onnx-simplifier (onnxsim)")
    p.add_argument("--deploy", action="store_true", help="fold BatchNorm and write NPU-friendly separate outputs")
    p.add_argument("--deploy-outputs", choices=DEPLOY_LAYOUTS, default=None,
                   help="with --deploy: per-level (raw reg, sigmoid obj, sigmoid cls per level; default) or "
                        "split (boxes [B,N,4] and scores [B,N,nc])")
    p.add_argument("--focus-conv", nargs="?", const="s2d", choices=FOCUS_MODES, default=None,
                   help="write Focus as convs: s2d (fixed 2x2 stride-2 conv, then Focus's conv; default) or fold "
                        "(one 6x6 stride-2 conv)")
    p.add_argument("--nms", action="store_true", help="end-to-end graph with ONNX NonMaxSuppression")
    p.add_argument("--max-det", type=int, default=100, help="--nms: detections per image")
    p.add_argument("--iou-thres", type=float, default=0.45, help="--nms: IoU threshold")
    p.add_argument("--conf-thres", type=float, default=0.25, help="--nms: score threshold (obj * cls)")
    p.add_argument("--half", action="store_true", help="float16 export (CUDA device only)")
    p.add_argument("--int8", action="store_true",
                   help="also write int8 models calibrated on --data: QDQ ONNX (onnx), NNCF IR (openvino), RKNN (rknn)")
    p.add_argument("--data", default=None, help="dataset yaml with the calibration images (--int8)")
    p.add_argument("--calib-images", type=int, default=100, help="--int8: number of calibration images")
    p.add_argument("--calib-split", default="train", help="--int8: split the calibration images come from")
    p.add_argument("--rknn-platform", default="rk3588",
                   help="--include rknn: target chip (rk3588, rk3576, rk3568, ...)")
    p.add_argument("--device", default="cpu", help="cpu or a CUDA device: 0")
    p.add_argument("--output", default=None, help="output ONNX path (default: beside the weights)")
    opt = p.parse_args(argv)
    if opt.dynamic is not None and not opt.dynamic:
        opt.dynamic = ["batch"]
    return opt


def main(argv=None):
    from utils.export.rknn import RknnError
    from utils.export.verify import ExportCheckError

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    opt = parse_opt(argv)
    try:
        return run(weights=opt.weights, cfg=opt.cfg, include=opt.include, img_size=opt.img_size,
                   batch_size=opt.batch_size, opset=opt.opset, dynamic=opt.dynamic or (), simplify=opt.simplify,
                   deploy=opt.deploy, deploy_outputs=opt.deploy_outputs, half=opt.half, device=opt.device,
                   output=opt.output, focus_conv=opt.focus_conv, nms=opt.nms, max_det=opt.max_det,
                   iou_thres=opt.iou_thres, conf_thres=opt.conf_thres, int8=opt.int8, data=opt.data,
                   calib_images=opt.calib_images, calib_split=opt.calib_split, rknn_platform=opt.rknn_platform)
    except (ValueError, FileNotFoundError, ImportError, ExportCheckError, RknnError) as e:
        raise SystemExit(f"export.py: {e}") from None


if __name__ == "__main__":
    main()
