"""Detect objects in images, folders, globs, videos or a webcam; write annotated results.

    python detect.py --weights runs/train/exp/weights/best.pt --source data/images     # a folder
    python detect.py --weights yolox_s.pth --source 'shots/*.jpg' --save-txt --save-conf
    python detect.py --weights model.onnx --img-size 320 --source clip.mp4
    python detect.py --weights best.pt --source 0 --view-img                             # webcam 0

Results go to runs/detect/<name>: annotated images and videos, labels/*.txt (YOLO rows) with
--save-txt, predictions.json with --save-json.
"""
from __future__ import annotations

import argparse
import glob
import json
import logging
import os
from pathlib import Path

import cv2

from utils.infer.detector import Detector, draw
from utils.data.image_io import imread
from utils.runs import increment_path
from utils.data.verify import IMG_FORMATS

LOGGER = logging.getLogger("yolox5.detect")
VID_FORMATS = ("mp4", "avi", "mov", "mkv", "m4v", "mpeg", "mpg", "wmv", "webm")


def list_sources(source: str) -> tuple[list[str], list[str], int | None]:
    """(image files, video files, webcam index) named by --source."""
    if source.isdigit():
        return [], [], int(source)
    paths = sorted(glob.glob(source, recursive=True)) if any(c in source for c in "*?[") else [source]
    files = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(str(f) for f in p.rglob("*") if f.is_file())
        elif p.is_file():
            files.append(str(p))
        else:
            raise FileNotFoundError(f"--source not found: {p}")
    ext = lambda f: f.rsplit(".", 1)[-1].lower()  # noqa: E731
    images = [f for f in files if ext(f) in IMG_FORMATS]
    videos = [f for f in files if ext(f) in VID_FORMATS]
    if not images and not videos:
        raise FileNotFoundError(f"--source {source}: no images ({', '.join(IMG_FORMATS)}) or videos ({', '.join(VID_FORMATS)})")
    return images, videos, None


class Writer:
    """Annotated images, videos, txt rows and json entries under the run folder."""

    def __init__(self, save_dir: Path, opt):
        self.dir, self.opt, self.json = save_dir, opt, []
        if opt.save_txt:
            (save_dir / "labels").mkdir(parents=True, exist_ok=True)

    def image(self, name: str, img, det, frame: int | None = None):
        stem = Path(name).stem + (f"_{frame}" if frame is not None else "")
        annotated = draw(img, det)
        if frame is None and not self.opt.nosave:
            cv2.imwrite(str(self.dir / Path(name).name), annotated)
        if self.opt.save_txt:
            h, w = det.shape
            with open(self.dir / "labels" / f"{stem}.txt", "w") as f:
                for (x1, y1, x2, y2), s, c in zip(det.boxes, det.scores, det.classes):
                    row = [int(c), (x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h]
                    row += [float(s)] if self.opt.save_conf else []
                    f.write(" ".join(f"{v:.6g}" if isinstance(v, float) else str(v) for v in row) + "\n")
        if self.opt.save_json:
            self.json += [{"image": name, "frame": frame, "bbox": [round(float(v), 2) for v in b], "score": round(float(s), 4),
                           "class": int(c), "name": n} for b, s, c, n in zip(det.boxes, det.scores, det.classes, det.class_names)]
        if self.opt.view_img and _has_display():
            cv2.imshow("detect", annotated)
            cv2.waitKey(1)
        return annotated

    def close(self):
        if self.opt.save_json:
            (self.dir / "predictions.json").write_text(json.dumps(self.json))


def run_video(detector, capture, name, writer, save_path):
    """Frame by frame; the annotated video keeps the source's size and frame rate."""
    fps = capture.get(cv2.CAP_PROP_FPS) or 25
    out = None
    frame = 0
    while True:
        ok, img = capture.read()
        if not ok:
            break
        annotated = writer.image(name, img, detector(img)[0], frame)
        if save_path is not None:
            if out is None:
                out = cv2.VideoWriter(str(save_path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (img.shape[1], img.shape[0]))
            out.write(annotated)
        frame += 1
    if out is not None:
        out.release()
    capture.release()
    return frame


def _has_display() -> bool:
    return bool(os.environ.get("DISPLAY") or os.name == "nt")


def parse_opt(argv=None):
    p = argparse.ArgumentParser(description="Detect objects with a YAML YOLOX model")
    p.add_argument("--weights", required=True, help="checkpoint (.pt), official YOLOX (.pth), ONNX file or OpenVINO .xml")
    p.add_argument("--cfg", default=None, help="model YAML for official weights of another layout")
    p.add_argument("--source", required=True, help="image, folder, glob, video file or webcam index")
    p.add_argument("--img-size", "--imgsz", type=int, default=640)
    p.add_argument("--conf-thres", type=float, default=0.25)
    p.add_argument("--iou-thres", type=float, default=0.45)
    p.add_argument("--max-det", type=int, default=300)
    p.add_argument("--agnostic-nms", action="store_true")
    p.add_argument("--device", default="cpu")
    p.add_argument("--view-img", action="store_true", help="show results where a display exists")
    p.add_argument("--save-txt", action="store_true", help="YOLO rows per image in labels/")
    p.add_argument("--save-conf", action="store_true", help="with --save-txt: add the score column")
    p.add_argument("--save-json", action="store_true")
    p.add_argument("--nosave", action="store_true", help="do not write annotated images and videos")
    p.add_argument("--project", default="runs/detect")
    p.add_argument("--name", default="exp")
    p.add_argument("--exist-ok", action="store_true")
    return p.parse_args(argv)


def main(argv=None):
    opt = parse_opt(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    images, videos, webcam = list_sources(opt.source)
    detector = Detector(opt.weights, opt.img_size, opt.conf_thres, opt.iou_thres, opt.device, opt.cfg,
                        opt.max_det, opt.agnostic_nms)
    save_dir = increment_path(Path(opt.project) / opt.name, opt.exist_ok)
    writer = Writer(save_dir, opt)
    for f in images:
        img = imread(f)
        if img is None:
            LOGGER.warning(f"WARNING {f}: unreadable image, skipped")
            continue
        det = detector(img)[0]
        writer.image(f, img, det)
        LOGGER.info(f"{f}: {len(det)} detections ({', '.join(sorted(set(det.class_names))) or 'none'})")
    for f in videos:
        frames = run_video(detector, cv2.VideoCapture(f), f, writer, None if opt.nosave else save_dir / (Path(f).stem + ".mp4"))
        LOGGER.info(f"{f}: {frames} frames")
    if webcam is not None:
        run_video(detector, cv2.VideoCapture(webcam), f"webcam{webcam}", writer, None if opt.nosave else save_dir / f"webcam{webcam}.mp4")
    writer.close()
    LOGGER.info(f"Results saved to {save_dir}")
    return save_dir


if __name__ == "__main__":
    main()
