"""Detect objects in images, folders, globs, videos or a webcam; write annotated results.

    python detect.py --weights runs/train/exp/weights/best.pt --source data/images     # a folder
    python detect.py --weights yolox_s.pth --source 'shots/*.jpg' --save-txt --save-conf
    python detect.py --weights model.onnx --img-size 320 --source clip.mp4
    python detect.py --weights best.pt --source 0 --view-img                             # webcam 0

Results go to runs/detect/<name>: annotated images and videos, labels/*.txt (YOLO rows) with
--save-txt, predictions.json with --save-json. The engine is utils/infer/predict.py.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from utils.cli import fraction, positive_int, run_reporting_user_errors
from utils.infer.predict import PredictOptions, run_predict


def parse_opt(argv=None):
    D = PredictOptions  # the defaults are the options' own
    p = argparse.ArgumentParser(description="Detect objects with a YAML YOLOX model")
    p.add_argument("--weights", required=True, help="checkpoint (.pt), official YOLOX (.pth), ONNX file or OpenVINO .xml")
    p.add_argument("--cfg", default=None, help="model YAML for official weights of another layout")
    p.add_argument("--source", required=True, help="image, folder, glob, video file or webcam index")
    p.add_argument("--img-size", "--imgsz", type=positive_int, default=D.img_size)
    p.add_argument("--conf-thres", type=fraction, default=D.conf_thres)
    p.add_argument("--iou-thres", type=fraction, default=D.iou_thres)
    p.add_argument("--max-det", type=positive_int, default=D.max_det)
    p.add_argument("--agnostic-nms", action="store_true")
    p.add_argument("--device", default=D.device)
    p.add_argument("--view-img", action="store_true", help="show results where a display exists")
    p.add_argument("--save-txt", action="store_true", help="YOLO rows per image in labels/")
    p.add_argument("--save-conf", action="store_true", help="with --save-txt: add the score column")
    p.add_argument("--save-json", action="store_true")
    p.add_argument("--nosave", action="store_true", help="do not write annotated images and videos")
    p.add_argument("--project", default=D.project)
    p.add_argument("--name", default=D.name)
    p.add_argument("--exist-ok", action="store_true")
    p.add_argument("--verbose", action="store_true", help="show the traceback of errors in the input, not one line")
    return p.parse_args(argv)


def main(argv=None) -> Path:
    opt = parse_opt(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    verbose = vars(opt).pop("verbose")
    return run_reporting_user_errors("detect.py", lambda: run_predict(PredictOptions(**vars(opt))), verbose)


if __name__ == "__main__":
    main()
