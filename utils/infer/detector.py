"""A small inference API for code that embeds the detector.

    from utils.infer.detector import Detector
    det = Detector("runs/train/exp/weights/best.pt", img_size=640, conf=0.25, device="cpu")
    for r in det(["a.jpg", bgr_array]):      # a path, a BGR numpy image, or a list of them
        print(r.boxes, r.scores, r.class_names)  # boxes xyxy in original-image pixels

Works with this project's checkpoints, official YOLOX .pth files (official preprocessing), ONNX files and
OpenVINO IRs.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from utils.data.augment import letterbox
from utils.devices import select_device
from utils.data.image_io import imread
from utils.infer.backends import detections_to_original, load_weights
from utils.infer.nms import non_max_suppression


@dataclass
class Detections:
    """One image's detections, in original-image pixels."""

    boxes: np.ndarray     # [K, 4] x1, y1, x2, y2
    scores: np.ndarray    # [K] obj x class probability
    classes: np.ndarray   # [K] class indices
    class_names: list     # [K] names
    shape: tuple          # (height, width) of the image

    def __len__(self):
        return len(self.scores)


class Detector:
    def __init__(self, weights, img_size: int = 640, conf: float = 0.25, iou: float = 0.45, device="cpu",
                 cfg=None, max_det: int = 300, agnostic: bool = False, letterbox_mode: str | None = None):
        self.device = select_device(device) if isinstance(device, str) else device
        self.model, letterbox = load_weights(weights, cfg, self.device, img_size)
        self.letterbox_mode = letterbox_mode or letterbox  # default: what the weights expect
        self.img_size, self.conf, self.iou, self.max_det, self.agnostic = img_size, conf, iou, max_det, agnostic
        nc = getattr(self.model, "nc", None)
        self.names = list(getattr(self.model, "names", None) or [str(i) for i in range(nc or 0)])
        self.dropped = 0  # detections with a non-finite box or score, left out of every result so far

    @torch.no_grad()
    def __call__(self, source) -> list[Detections]:
        images = source if isinstance(source, (list, tuple)) else [source]
        images = [self._read(im) for im in images]
        batch, shapes = [], []
        for im in images:
            padded, ratio, pad = letterbox(im, self.img_size, mode=self.letterbox_mode, auto=False)
            batch.append(np.ascontiguousarray(padded.transpose(2, 0, 1)))
            shapes.append((im.shape[:2], ((ratio[1], ratio[0]), pad)))
        x = torch.from_numpy(np.stack(batch)).to(self.device).float()  # BGR 0-255, as the models expect
        out = self.model(x)
        dets = non_max_suppression(out.float(), self.conf, self.iou, agnostic=self.agnostic, max_det=self.max_det)
        return [self._result(d.cpu(), shape, tuple(x.shape[2:])) for d, shape in zip(dets, shapes)]

    def _result(self, det, shape, input_hw) -> Detections:
        (h0, w0) = shape[0]
        det, dropped = detections_to_original(det, shape, input_hw, self.letterbox_mode)
        self.dropped += dropped
        classes = det[:, 5].long().numpy()
        names = [self.names[c] if 0 <= c < len(self.names) else str(c) for c in classes]
        return Detections(det[:, :4].numpy(), det[:, 4].numpy(), classes, names, (h0, w0))

    @staticmethod
    def _read(im) -> np.ndarray:
        if isinstance(im, np.ndarray):
            if im.ndim != 3 or im.shape[2] != 3:
                raise ValueError(f"images must be HxWx3 BGR arrays, got shape {im.shape}")
            return im
        path = Path(im)
        img = imread(str(path)) if path.is_file() else None
        if img is None:
            raise FileNotFoundError(f"image not found or unreadable: {path}")
        return img


def draw(image: np.ndarray, det: Detections, line: int = 2) -> np.ndarray:
    """A copy of ``image`` with the detections drawn (boxes outside it clipped, non-finite ones skipped)."""
    from utils.plots import COLOURS, pixel_box

    out = image.copy()
    h, w = out.shape[:2]
    for box, score, cls, name in zip(det.boxes, det.scores, det.classes, det.class_names):
        corners = pixel_box(box, w, h)
        if corners is None:
            continue
        (x1, y1), (x2, y2) = corners
        colour = COLOURS[int(cls) % len(COLOURS)]
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, line)
        cv2.putText(out, f"{name} {score:.2f}", (x1, max(y1 - 4, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1,
                    cv2.LINE_AA)
    return out
