"""The detection engine behind detect.py: PredictOptions in; images, folders, globs, videos or a webcam
through a Detector; annotated images and videos, YOLO txt rows and a json of detections written to
runs/detect/<name>.

    save_dir = run_predict(PredictOptions(weights="best.pt", source="shots/", save_txt=True))
"""
from __future__ import annotations

import glob
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import cv2

from utils.data.image_io import imread
from utils.data.verify import IMG_FORMATS
from utils.infer.backends import warn_dropped
from utils.infer.detector import Detector, draw
from utils.runs import increment_path

LOGGER = logging.getLogger("yolox5.detect")
VID_FORMATS = ("mp4", "avi", "mov", "mkv", "m4v", "mpeg", "mpg", "wmv", "webm")


@dataclass(frozen=True)
class PredictOptions:
    weights: str | Path              # checkpoint (.pt), official YOLOX (.pth), ONNX file or OpenVINO .xml
    source: str                      # image, folder, glob, video file or webcam index
    cfg: str | Path | None = None    # model YAML for official weights of another layout
    img_size: int = 640
    conf_thres: float = 0.25
    iou_thres: float = 0.45
    max_det: int = 300
    agnostic_nms: bool = False
    device: str = "cpu"
    view_img: bool = False           # show results where a display exists
    save_txt: bool = False           # YOLO rows per image in labels/
    save_conf: bool = False          # with save_txt: add the score column
    save_json: bool = False
    nosave: bool = False             # no annotated images and videos
    project: str | Path = "runs/detect"
    name: str = "exp"
    exist_ok: bool = False

    def __post_init__(self):
        for name in ("conf_thres", "iou_thres"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"--{name.replace('_', '-')} must be in [0, 1], got {getattr(self, name)}")
        for name in ("img_size", "max_det"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")


def run_predict(opts: PredictOptions) -> Path:
    """Detect in every source; returns the run folder."""
    images, videos, webcam = list_sources(opts.source)
    detector = Detector(opts.weights, opts.img_size, opts.conf_thres, opts.iou_thres, opts.device, opts.cfg,
                        opts.max_det, opts.agnostic_nms)
    save_dir = increment_path(Path(opts.project) / opts.name, opts.exist_ok)
    writer = Writer(save_dir, opts)
    for f in images:
        img = imread(f)
        if img is None:
            LOGGER.warning(f"WARNING {f}: unreadable image, skipped")
            continue
        det = detector(img)[0]
        writer.image(f, img, det)
        LOGGER.info(f"{f}: {len(det)} detections ({', '.join(sorted(set(det.class_names))) or 'none'})")
    for f in videos:
        frames = run_video(detector, cv2.VideoCapture(f), f, writer,
                           None if opts.nosave else save_dir / (Path(f).stem + ".mp4"))
        LOGGER.info(f"{f}: {frames} frames")
    if webcam is not None:
        run_video(detector, cv2.VideoCapture(webcam), f"webcam{webcam}", writer,
                  None if opts.nosave else save_dir / f"webcam{webcam}.mp4")
    writer.close()
    warn_dropped(detector.dropped)
    LOGGER.info(f"Results saved to {save_dir}")
    return save_dir


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

    def __init__(self, save_dir: Path, opt: PredictOptions):
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
