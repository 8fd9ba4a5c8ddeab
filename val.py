"""Evaluate a detector on a dataset split: COCO AP (pycocotools), P and R, a per-class table, speed.

    python val.py --data data/coco.yaml --weights runs/train/exp/weights/last.pt --batch-size 64 \
        --device 0,1 --save-json --classwise
    python val.py --data data/coco.yaml --weights yolox_s.pth                  # official YOLOX weights
    python val.py --data data/demo.yaml --weights model.onnx --img-size 320     # an ONNX file, onnxruntime
    python val.py --data data/demo.yaml --weights model.int8.onnx --qdq-exact  # int8 as an NPU computes it
    python val.py --data data/demo.yaml --weights model.int8.xml --img-size 320 # an OpenVINO IR (pip install openvino)

The engine is utils/eval/evaluator.py; the trainer calls its ``evaluate`` every epoch. Official YOLOX
weights are evaluated as official YOLOX does (top-left letterbox, boxes divided by the resize ratio).
"""
from __future__ import annotations

import argparse
import logging

from utils.cli import fraction, non_negative_int, positive_int, run_reporting_user_errors
from utils.data.augment import LETTERBOX_MODES
from utils.eval.coco_eval import BACKENDS
from utils.eval.evaluator import TASKS, EvalResult, ValOptions, run_val


def run(data="data/demo.yaml", **kwargs) -> EvalResult:
    """Evaluate as the command line would (its option names as keywords); returns
    ((P, R, mAP50, mAP50-95), per-class mAP50-95 [nc], (pre-process, inference, NMS) ms per image)."""
    return run_val(ValOptions(data=data, **kwargs))


def parse_opt(argv=None):
    D = ValOptions  # the defaults are the options' own
    parser = argparse.ArgumentParser(description="Evaluate a detector: COCO AP, per-class table, speed")
    parser.add_argument("--data", default=D.data, help="dataset YAML")
    parser.add_argument("--weights", required=True, help="checkpoint (.pt), official YOLOX weights (.pth), .onnx or OpenVINO .xml")
    parser.add_argument("--cfg", default=None, help="model YAML for official weights (inferred when left out)")
    parser.add_argument("--batch-size", type=positive_int, default=D.batch_size)
    parser.add_argument("--img-size", "--imgsz", dest="imgsz", type=positive_int, default=D.imgsz,
                        help="inference size (pixels)")
    parser.add_argument("--conf-thres", type=fraction, default=D.conf_thres)
    parser.add_argument("--iou-thres", type=fraction, default=D.iou_thres, help="NMS IoU threshold")
    parser.add_argument("--max-det", type=positive_int, default=D.max_det, help="detections per image")
    parser.add_argument("--task", default=D.task, choices=TASKS, help="val, test, or speed (timing only)")
    parser.add_argument("--device", default=D.device, help="cpu, or CUDA device(s) 0 / 0,1 (the first one is used)")
    parser.add_argument("--workers", type=non_negative_int, default=D.workers, help="data loader workers")
    parser.add_argument("--single-cls", action="store_true", help="evaluate as one class")
    parser.add_argument("--half", action="store_true", help="FP16 inference (CUDA)")
    parser.add_argument("--save-json", action="store_true", help="write predictions.json (COCO results format)")
    parser.add_argument("--classwise", action="store_true", help="print the per-class AP table")
    parser.add_argument("--verbose", action="store_true",
                        help="P, R, AP per class; COCOeval's messages; the traceback of errors in the input")
    parser.add_argument("--project", default=D.project)
    parser.add_argument("--name", default=D.name)
    parser.add_argument("--exist-ok", action="store_true", help="reuse runs/val/<name> instead of numbering a new one")
    parser.add_argument("--coco-backend", default=D.coco_backend, choices=BACKENDS,
                        help="auto: faster-coco-eval where it is installed, else pycocotools (the log names the one "
                             "used); faster; or pycocotools")
    parser.add_argument("--qdq-exact", action="store_true",
                        help="run an int8 QDQ ONNX file as written (every QuantizeLinear / DequantizeLinear executed): "
                             "the 8-bit arithmetic an NPU performs, the same on every CPU, instead of onnxruntime's "
                             "fused int8 kernels, which saturate on x86 CPUs without VNNI")
    parser.add_argument("--letterbox", default=None, choices=LETTERBOX_MODES,
                        help="preprocessing; default topleft for official YOLOX .pth weights, center otherwise")
    return parser.parse_args(argv)


def main(argv=None):
    opt = parse_opt(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return run_reporting_user_errors("val.py", lambda: run(**vars(opt)), opt.verbose)


if __name__ == "__main__":
    main()
