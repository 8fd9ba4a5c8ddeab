"""Export to ONNX (TorchScript, OpenVINO, RKNN) for NPU toolchains, verified against torch, with a readiness report.

    python export.py --weights ./yolox_rslu.pt --include onnx --opset 10 --simplify --deploy
    python export.py --weights yolox_s.pth --cfg models/yoloxs.yaml --img-size 640 --simplify
    python export.py --weights best.pt --deploy --deploy-outputs split --dynamic batch
    python export.py --weights best.pt --deploy --focus-conv --int8 --data data/demo.yaml --calib-images 100
    python export.py --weights best.pt --deploy --int8 --sensitivity --data data/demo.yaml --img-size 256
    python export.py --weights best.pt --nms --max-det 100 --conf-thres 0.25 --iou-thres 0.45
    python export.py --cfg models/yoloxs_rslu.yaml --deploy --simplify       # random weights: graph inspection
    python export.py --weights best.pt --deploy --include openvino --int8 --data data/demo.yaml  # openvino, nncf
    python export.py --weights best.pt --deploy --include rknn --int8 --data data/demo.yaml --rknn-platform rk3588

The engine is utils/export/exporter.py (options: utils/export/options.py).
Output layouts (utils/infer/outputs.py): without --deploy the eval output [B, N, 5 + nc] ("decoded");
--deploy folds BatchNorm and writes NPU-friendly separate outputs: "per-level" (default: raw reg,
sigmoid obj, sigmoid cls per level, decoded on the CPU), "split" (boxes, scores) or "decoded" (the eval
output, folded: to measure what one shared output costs in int8); --nms adds ONNX
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

from utils.infer.outputs import DEPLOY_LAYOUTS
from utils.cli import fraction, positive_int, run_reporting_user_errors
from utils.export.options import INCLUDE, DatasetImages, ExportOptions, NmsOptions
from utils.export.int8 import CALIB_METHODS, CALIB_PERCENTILE
from utils.export.rewrite import FOCUS_MODES
from utils.quant.uint8_activations import ACTIVATION_DTYPES


def run(**kwargs) -> dict:
    """Export as the command line would (its option names as keywords, e.g. ``run(weights="best.pt",
    deploy=True, int8=True, data="data/demo.yaml")``); returns utils.export.exporter.run_export's results."""
    from utils.export.exporter import run_export

    return run_export(ExportOptions.from_flat(**kwargs))


def parse_opt(argv=None):
    D = ExportOptions  # the defaults are the options' own
    p = argparse.ArgumentParser(description="Export to ONNX / TorchScript / OpenVINO / RKNN for NPU toolchains, "
                                            "verified against torch")
    p.add_argument("--weights", default=None, help="project checkpoint (.pt) or official YOLOX weights (.pth)")
    p.add_argument("--cfg", default=None, help="model YAML (official .pth on another model file; alone: random weights)")
    p.add_argument("--include", nargs="+", default=list(D.include), help=f"formats: {', '.join(INCLUDE)}")
    p.add_argument("--img-size", "--imgsz", type=positive_int, nargs="+", default=list(D.img_size[:1]),
                   help="input h [w] (multiples of 32)")
    p.add_argument("--batch-size", type=positive_int, default=D.batch_size, help="batch size of the exported input")
    p.add_argument("--opset", type=int, default=D.opset, help="ONNX opset (10 and up; 10 for OpenVINO 2021 / old NPU flows)")
    p.add_argument("--dynamic", nargs="*", default=None, metavar="AXES",
                   help="dynamic axes: 'batch' and/or 'hw' (alone: batch, as official YOLOX)")
    p.add_argument("--simplify", action="store_true", help="simplify with onnx-simplifier (onnxsim)")
    p.add_argument("--deploy", action="store_true", help="fold BatchNorm and write NPU-friendly separate outputs")
    p.add_argument("--deploy-outputs", choices=DEPLOY_LAYOUTS, default=None,
                   help="with --deploy: per-level (raw reg, sigmoid obj, sigmoid cls per level; default), "
                        "split (boxes [B,N,4] and scores [B,N,nc]) or decoded (one [B,N,5+nc], as without --deploy)")
    p.add_argument("--focus-conv", nargs="?", const="s2d", choices=FOCUS_MODES, default=None,
                   help="write Focus as convs: s2d (fixed 2x2 stride-2 conv, then Focus's conv; default) or fold "
                        "(one 6x6 stride-2 conv)")
    p.add_argument("--nms", action="store_true", help="end-to-end graph with ONNX NonMaxSuppression")
    p.add_argument("--max-det", type=positive_int, default=NmsOptions.max_det, help="--nms: detections per image")
    p.add_argument("--iou-thres", type=fraction, default=NmsOptions.iou_thres, help="--nms: IoU threshold")
    p.add_argument("--conf-thres", type=fraction, default=NmsOptions.conf_thres, help="--nms: score threshold (obj * cls)")
    p.add_argument("--half", action="store_true", help="float16 export (CUDA device only)")
    p.add_argument("--int8", action="store_true",
                   help="also write int8 models calibrated on --data: QDQ ONNX (onnx), NNCF IR (openvino), RKNN (rknn)")
    p.add_argument("--sensitivity", action="store_true",
                   help="with --int8: quantise one layer group at a time, rank the groups by mAP lost and recommend "
                        "which to keep in float (written for onnxruntime, OpenVINO and RKNN, and measured)")
    p.add_argument("--hybrid-budget", type=fraction, default=D.hybrid_budget,
                   help="--sensitivity: mAP50-95 the recommended hybrid may lose against float (0.015: 1.5 points)")
    p.add_argument("--int8-activations", choices=ACTIVATION_DTYPES, default=D.int8_activations,
                   help="int8 ONNX (--int8, or a --qat checkpoint): uint8 writes the same activation grids shifted "
                        "by 128 (identical arithmetic), which onnxruntime fuses into its fast int8 kernels on x86; "
                        "int8 (default) is what TensorRT, OpenVINO and the NPU toolchains read")
    p.add_argument("--calib-method", choices=CALIB_METHODS, default=D.calib_method,
                   help="--int8 ONNX: each activation's range from the calibration images' min/max, or their "
                        f"{CALIB_PERCENTILE}th percentile (clips outliers for a finer grid)")
    p.add_argument("--data", default=None, help="dataset yaml with the calibration images (--int8)")
    p.add_argument("--calib-images", type=positive_int, default=DatasetImages.calibration,
                   help="--int8: number of calibration images")
    p.add_argument("--calib-split", default=DatasetImages.split, help="--int8: split the calibration images come from")
    p.add_argument("--rknn-platform", default=D.rknn_platform,
                   help="--include rknn: target chip (rk3588, rk3576, rk3568, ...)")
    p.add_argument("--device", default=D.device, help="cpu or a CUDA device: 0")
    p.add_argument("--output", default=None, help="output ONNX path (default: beside the weights)")
    p.add_argument("--verbose", action="store_true", help="show the traceback of errors in the input, not one line")
    opt = p.parse_args(argv)
    if opt.dynamic is not None and not opt.dynamic:
        opt.dynamic = ["batch"]
    return opt


def main(argv=None):
    from utils.export.rknn import RknnError
    from utils.export.verify import ExportCheckError

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    opt = parse_opt(argv)
    verbose = vars(opt).pop("verbose")
    return run_reporting_user_errors("export.py", lambda: run(**vars(opt)), verbose, (ExportCheckError, RknnError))


if __name__ == "__main__":
    main()
