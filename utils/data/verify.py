"""Checks of one image and its labels: every problem named with the file, nothing raised.

A sample is dropped only when its image cannot be used (unreadable, too small); bad label rows
are dropped one by one (or repaired: clipped, de-duplicated, polygons turned into boxes) and the
rest of the file is kept. Each file with problems gets one message listing them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

IMG_FORMATS = ("bmp", "jpeg", "jpg", "png", "tif", "tiff", "webp", "mpo", "dng", "pfm")
MIN_IMAGE_SIDE = 10
ABSURD_MARGIN = 0.5  # a box reaching further than half an image outside is dropped, not clipped
EDGE_TOLERANCE = 1e-4  # rounding of 6-decimal labels at the border: clipped without a warning


@dataclass
class SampleCheck:
    image: str
    shape: tuple = (0, 0)  # (height, width) as displayed, EXIF orientation applied
    labels: np.ndarray = field(default_factory=lambda: np.zeros((0, 5), np.float32))  # (cls, cx, cy, w, h)
    status: str = "found"  # found | missing (no label file) | empty | corrupt (image dropped)
    messages: list = field(default_factory=list)


def image_shape(path: str) -> tuple[tuple[int, int], str | None]:
    """(height, width) of a usable image and an optional warning; raises ValueError when unusable."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.verify()  # structure check without a full decode
        with Image.open(path) as im:
            fmt = (im.format or "").lower()
            w, h = im.size
            orientation = im.getexif().get(0x0112, 1)  # EXIF orientation tag
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"unreadable image ({type(e).__name__}: {e})") from None
    if orientation in (5, 6, 7, 8):  # rotated 90 or 270 degrees when displayed
        w, h = h, w
    if fmt and fmt not in IMG_FORMATS:
        raise ValueError(f"unsupported image format {fmt!r}")
    if w < MIN_IMAGE_SIDE or h < MIN_IMAGE_SIDE:
        raise ValueError(f"image smaller than {MIN_IMAGE_SIDE} px ({w}x{h})")
    warning = None
    if fmt in ("jpeg", "mpo"):
        with open(path, "rb") as f:
            f.seek(-2, 2)
            if f.read() != b"\xff\xd9":
                warning = "JPEG with a damaged or missing end marker: kept, it may decode partly grey"
    return (h, w), warning


def parse_label_file(path: Path) -> tuple[list[list[float]], list[int], list[str]]:
    """(numeric rows, their line numbers, problems) of a YOLO txt file."""
    rows, lines, problems = [], [], []
    for k, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        try:
            values = [float(v) for v in parts]
        except ValueError:
            problems.append(f"line {k}: not numbers: {line.strip()[:40]!r}")
            continue
        if len(values) == 5:
            rows.append(values)
        elif len(values) >= 7 and len(values) % 2 == 1:  # class + polygon: YOLOv5 segment labels
            xy = np.array(values[1:]).reshape(-1, 2)
            (x1, y1), (x2, y2) = xy.min(0), xy.max(0)
            rows.append([values[0], (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1])
        else:
            problems.append(f"line {k}: {len(values)} columns, expected 5 (class cx cy w h)")
            continue
        lines.append(k)
    return rows, lines, problems


def check_boxes(rows, nc: int | None, lines=None, unit: str = "line") -> tuple[np.ndarray, list[str]]:
    """Valid (cls, cx, cy, w, h) normalised rows from raw ones, with a note for each repair or drop.

    ``lines`` numbers the rows in messages ("line 3"); by default rows count from 1. Classes must be
    integers >= 0, and < nc when nc is given (None: any, as YOLOv5's loader takes them).
    """
    problems = []
    a = np.asarray(rows, dtype=np.float64).reshape(-1, 5)
    if not len(a):
        return np.zeros((0, 5), np.float32), problems
    line = np.asarray(lines) if lines is not None else np.arange(1, len(a) + 1)
    cls, xy, wh = a[:, 0], a[:, 1:3], a[:, 3:5]
    bad_cls = (cls != np.round(cls)) | (cls < 0) | ((cls >= nc) if nc is not None else False)
    for k, c in zip(line[bad_cls], cls[bad_cls]):
        problems.append(f"{unit} {k}: class {c:g} outside [0, {nc})" if nc is not None else
                        f"{unit} {k}: class {c:g} is not an integer >= 0")
    bad_size = ~bad_cls & ((wh[:, 0] <= 0) | (wh[:, 1] <= 0) | ~np.isfinite(a).all(1))
    for k in line[bad_size]:
        problems.append(f"{unit} {k}: zero, negative or non-finite size")
    x1y1, x2y2 = xy - wh / 2, xy + wh / 2
    outside = ((x1y1 < -EDGE_TOLERANCE) | (x2y2 > 1 + EDGE_TOLERANCE)).any(1) & ~bad_cls & ~bad_size
    absurd = outside & (((xy < 0) | (xy > 1)).any(1) | (x1y1 < -ABSURD_MARGIN).any(1) | (x2y2 > 1 + ABSURD_MARGIN).any(1))
    for k in line[absurd]:
        problems.append(f"{unit} {k}: box far outside the image, dropped")
    clipped = outside & ~absurd
    if clipped.any():
        problems.append(f"{int(clipped.sum())} box(es) slightly outside the image clipped")
    x1y1, x2y2 = np.clip(x1y1, 0, 1), np.clip(x2y2, 0, 1)
    keep = ~(bad_cls | bad_size | absurd) & ((x2y2 - x1y1) > 0).all(1)
    out = np.concatenate((cls[:, None], (x1y1 + x2y2) / 2, x2y2 - x1y1), 1)[keep].astype(np.float32)
    unique, first = np.unique(out, axis=0, return_index=True)
    if len(unique) < len(out):
        problems.append(f"{len(out) - len(unique)} duplicate row(s) removed")
        out = out[np.sort(first)]
    return out, problems


def verify_sample(image: str, label_file: str | None, rows, nc: int | None) -> SampleCheck:
    """Check one sample. Labels come from ``label_file`` (YOLO txt) or, for COCO json, from ``rows``."""
    check = SampleCheck(image)
    try:
        check.shape, warning = image_shape(image)
    except ValueError as e:
        check.status = "corrupt"
        check.messages.append(f"{image}: {e}; sample dropped")
        return check
    if warning:
        check.messages.append(f"{image}: {warning}")
    problems, source, lines, unit = [], label_file or image, None, "annotation"
    if label_file is not None:
        path = Path(label_file)
        if not path.is_file():
            check.status = "missing"  # a background image
            return check
        rows, lines, problems = parse_label_file(path)
        unit = "line"
    check.labels, box_problems = check_boxes(rows, nc, lines, unit)
    problems += box_problems
    if problems:
        check.messages.append(f"{source}: " + "; ".join(problems))
    if not len(check.labels):
        check.status = "empty"
    return check
