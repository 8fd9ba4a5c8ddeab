"""The built-in demo dataset: coloured geometric shapes on textured backgrounds, made procedurally.

Nothing is downloaded. ``generate_demo_dataset(root)`` writes a small detection dataset in the YOLO
layout (``images/{train,val}/*.jpg``, ``labels/{train,val}/*.txt``) plus the val split's COCO ground
truth (``annotations/instances_val.json``), so the whole train -> val -> COCO AP path can run on a
laptop in minutes. ``ensure_demo_dataset(root)`` does that only when the data is missing, stale or
half-written.

What makes it a useful test of a detector rather than a toy:
- classes differ by geometry only (every object gets a random colour), so colour is never the cue;
- textured backgrounds (gradients, value noise, stripes, checkers, soft blobs, pixel noise) and
  unlabelled clutter (lines, dots, scribbles), some of it drawn over the objects;
- 0-10 objects per image (about 1 image in 11 is pure background), sizes log-uniform from 10 px to
  60% of the image side, partial occlusion, objects cut by the image border.

Boxes are tight around each object's *visible* pixels (modal boxes, as COCO's): an owner map records
which object (or clutter) drew each pixel last, and each box is the extent of the pixels its object
still owns. A label is dropped when more than half of its in-image pixels are hidden by later objects
or clutter (``MIN_VISIBLE``), when less than ``MIN_INSIDE`` of it lies inside the image, or when its
box is thinner than ``MIN_BOX_SIDE``; the object stays drawn, as an unlabelled sliver would in real data.

Every image is drawn by its own generator seeded from (seed, split, index), so output is
deterministic and independent of generation order.
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

DEMO_NAMES = ["circle", "square", "triangle", "star", "ring", "cross", "ellipse", "diamond"]
FORMAT_VERSION = 2  # bump whenever the drawing changes, so old datasets are regenerated
MARKER = ".demo_complete"
SPLITS = ("train", "val")
VAL_JSON = "annotations/instances_val.json"

MIN_SIZE = 10.0  # smallest object diameter, pixels
MAX_SIZE_FRAC = 0.6  # largest object diameter, as a fraction of the shorter image side
MAX_OBJECTS = 10
MIN_VISIBLE = 0.5  # keep a label only if at most half of its in-image pixels are hidden by later drawing
MIN_INSIDE = 0.5  # ... and at least this fraction of the whole object lies inside the image
MIN_BOX_SIDE = 2  # pixels
MIN_CONTRAST = 80  # an object's colour differs from the mean colour beneath it by this much (max channel)

_SHIFT = 4  # cv2 fractional bits: shapes are placed with 1/16 px precision, so tiny ones keep their form
_SCALE = 1 << _SHIFT
_CLUTTER = -2  # owner-map value of clutter drawn over objects; -1 is background


@dataclass(frozen=True)
class DemoObject:
    """One drawn object. ``box`` is (x1, y1, x2, y2) in pixels, x2/y2 exclusive: the pixel columns
    x1..x2-1 and rows y1..y2-1 hold the object's visible pixels, and each edge row/column holds some."""

    cls: int
    box: tuple[int, int, int, int]
    visible: float  # pixels still showing / the object's pixels inside the image (1 = not occluded)
    inside: float  # the object's pixels inside the image / all its pixels (1 = not cut by the border)
    colour: tuple[int, int, int]  # BGR, as drawn (before JPEG)


# ----------------------------------------------------------------------------- shapes


def shape_mask(cls: int, size: float, canvas_hw: tuple[int, int], centre: tuple[float, float],
               angle: float = 0.0, ratio: float | None = None) -> np.ndarray:
    """Boolean mask [H, W] of shape ``DEMO_NAMES[cls]`` on a canvas of ``canvas_hw``, rotated by
    ``angle`` degrees, inscribed in the circle of diameter ``size`` px centred at ``centre`` (x, y in
    pixel-centre coordinates; may lie outside the canvas). Every shape touches that circle.

    ``ratio`` is the shape's proportion: minor/major axis (ellipse, diamond), inner/outer radius
    (ring, star) or arm width/diameter (cross); ignored by the other shapes; None = mid-range.
    """
    if not 0 <= cls < len(DEMO_NAMES):
        raise ValueError(f"cls={cls} is not a demo class; allowed 0..{len(DEMO_NAMES) - 1}")
    name = DEMO_NAMES[cls]
    ratio = _RATIO_RANGE[name][0] / 2 + _RATIO_RANGE[name][1] / 2 if ratio is None else ratio
    canvas = np.zeros(canvas_hw, np.uint8)
    r = size / 2
    if name in ("circle", "ring", "ellipse"):
        _draw_round(canvas, name, r, centre, angle, ratio)
    else:
        pts = _polygon(name, r, ratio) @ _rotation(angle).T + np.asarray(centre)
        cv2.fillPoly(canvas, [np.round(pts * _SCALE).astype(np.int32)], 1, cv2.LINE_8, _SHIFT)
    return canvas.astype(bool)


# proportions sampled per object; chosen so that no class can pass for another (a diamond is never
# square, an ellipse never round, a ring's hole is always visible)
_RATIO_RANGE = {
    "circle": (1.0, 1.0), "square": (1.0, 1.0), "triangle": (1.0, 1.0),
    "star": (0.38, 0.5), "ring": (0.45, 0.7), "cross": (0.22, 0.36),
    "ellipse": (0.35, 0.65), "diamond": (0.4, 0.62),
}


def _draw_round(canvas: np.ndarray, name: str, r: float, centre, angle: float, ratio: float) -> None:
    c = tuple(int(round(v * _SCALE)) for v in centre)
    if name == "ellipse":
        axes = (int(round(r * _SCALE)), int(round(r * ratio * _SCALE)))
        cv2.ellipse(canvas, c, axes, angle, 0, 360, 1, -1, cv2.LINE_8, _SHIFT)
        return
    cv2.circle(canvas, c, int(round(r * _SCALE)), 1, -1, cv2.LINE_8, _SHIFT)
    if name == "ring":  # punch the hole, so the background shows through it
        cv2.circle(canvas, c, int(round(r * ratio * _SCALE)), 0, -1, cv2.LINE_8, _SHIFT)


def _polygon(name: str, r: float, ratio: float) -> np.ndarray:
    """Vertices [K, 2] of a polygon shape of radius ``r`` centred at the origin, unrotated."""
    if name == "square":
        return _regular(4, r, phase=math.pi / 4)
    if name == "triangle":
        return _regular(3, r, phase=-math.pi / 2)
    if name == "star":
        radii = np.where(np.arange(10) % 2 == 0, r, r * ratio)
        return _regular(10, 1.0, phase=-math.pi / 2) * radii[:, None]
    if name == "diamond":
        return np.array([(0, -r), (r * ratio, 0), (0, r), (-r * ratio, 0)], np.float64)
    if name == "cross":
        arm = r / math.hypot(1, ratio)  # arm length, so the arm-end corners lie on the circle of radius r
        t = arm * ratio  # half the arm width; the arm is 2*t = ratio * (2 * arm) wide
        quarter = np.array([(-t, -arm), (t, -arm), (t, -t)])  # one arm's end and the inner corner
        return np.concatenate([quarter @ _rotation(90 * k).T for k in range(4)])
    raise ValueError(f"{name!r} is not a polygon shape")


def _regular(n: int, r: float, phase: float) -> np.ndarray:
    a = phase + 2 * math.pi * np.arange(n) / n
    return r * np.stack([np.cos(a), np.sin(a)], 1)


def _rotation(degrees: float) -> np.ndarray:
    a = math.radians(degrees)
    return np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])


# ----------------------------------------------------------------------------- backgrounds and clutter


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A textured float32 [h, w, 3] image: one pattern, sometimes blended with a second, soft blobs, grain.

    The smooth layers are made at half resolution and upsampled (a quarter of the arithmetic; they
    have no detail to lose); only the grain is per pixel.
    """
    hs, ws = (h + 1) // 2, (w + 1) // 2
    img = _pattern(rng, hs, ws)
    if rng.random() < 0.5:
        alpha = rng.uniform(0.2, 0.6)
        img = (1 - alpha) * img + alpha * _pattern(rng, hs, ws)
    if rng.random() < 0.5:
        img = _add_soft_blobs(rng, img)
    img = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
    # grain: one noise plane shared by the channels (a third of the cost of per-channel noise)
    img += np.float32(rng.uniform(0, 10)) * rng.standard_normal((h, w, 1), dtype=np.float32)
    return img


def _pattern(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """One float32 [h, w, 3] pattern: value noise, a linear gradient, stripes or a checkerboard.
    Lengths are in the (half-resolution) pixels of this array."""
    kind = rng.integers(4)
    c0, c1 = rng.uniform(0, 255, (2, 3)).astype(np.float32)
    if kind == 0:  # value noise: a coarse random grid, smoothly upsampled
        k = int(rng.integers(2, 12))
        return cv2.resize(rng.uniform(0, 255, (k, k, 3)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    yy, xx = np.arange(h, dtype=np.float32)[:, None], np.arange(w, dtype=np.float32)[None, :]
    theta = rng.uniform(0, 2 * math.pi)
    u = xx * np.float32(math.cos(theta)) + yy * np.float32(math.sin(theta))  # distance along a random direction
    if kind == 1:  # linear gradient
        t = (u - u.min()) / max(float(u.max() - u.min()), 1.0)
    elif kind == 2:  # stripes; the colour pair is pulled together so stripes stay low-contrast
        c1 = c0 + (c1 - c0) * rng.uniform(0.2, 0.6)
        frequency, phase = np.float32(2 * math.pi / rng.uniform(3, 30)), np.float32(rng.uniform(0, 2 * math.pi))
        t = 0.5 + 0.5 * np.sin(u * frequency + phase)
    else:  # checkerboard, also low-contrast
        c1 = c0 + (c1 - c0) * rng.uniform(0.2, 0.6)
        cell = np.float32(rng.uniform(4, 32))
        t = (np.floor(xx / cell) + np.floor(yy / cell)) % 2
    return c0 + t[..., None] * (c1 - c0)


def _add_soft_blobs(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Blend in blurry ellipses: drawn at half the resolution of ``img``, blurred and upsampled, so their
    edges stay soft and they never look like the crisp labelled shapes."""
    h, w = img.shape[:2]
    small = np.zeros((max(h // 2, 1), max(w // 2, 1), 3), np.float32)
    weight = np.zeros(small.shape[:2], np.float32)
    for _ in range(int(rng.integers(1, 7))):
        centre = (int(rng.integers(0, small.shape[1])), int(rng.integers(0, small.shape[0])))
        axes = tuple(int(a) for a in rng.integers(3, max(small.shape[:2]) // 2 + 4, 2))
        angle, colour = float(rng.uniform(0, 180)), tuple(float(c) for c in rng.uniform(0, 255, 3))
        cv2.ellipse(small, centre, axes, angle, 0, 360, colour, -1)
        cv2.ellipse(weight, centre, axes, angle, 0, 360, 1.0, -1)
    small = cv2.GaussianBlur(small, (0, 0), 2.0)
    weight = cv2.GaussianBlur(weight, (0, 0), 2.0) * np.float32(rng.uniform(0.3, 0.8))
    blobs = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    weight = cv2.resize(weight, (w, h), interpolation=cv2.INTER_LINEAR)[..., None]
    return img * (1 - weight) + blobs * weight


def _clutter(rng: np.random.Generator, h: int, w: int, n_lines: int, n_dots: int,
             n_scribbles: int) -> tuple[np.ndarray, np.ndarray]:
    """Unlabelled distractors: straight lines, 1-px-radius dots (smaller than the smallest object, so
    never a tiny 'circle') and short random-walk scribbles. Returns (ids uint8 [h, w]: 0 where nothing
    was drawn, else the item's number; colours float [items + 1, 3], row 0 unused)."""
    ids = np.zeros((h, w), np.uint8)
    item = 0
    for _ in range(n_lines):
        p0, p1 = (tuple(int(v) for v in rng.integers(0, (w, h))) for _ in range(2))
        item += 1
        cv2.line(ids, p0, p1, item, int(rng.integers(1, 3)))
    if n_dots:
        item += 1  # all dots of an image share one colour
        for x, y in rng.integers(0, (w, h), (n_dots, 2)):
            cv2.circle(ids, (int(x), int(y)), 1, item, -1)
    for _ in range(n_scribbles):
        steps = rng.normal(0, 12, (int(rng.integers(3, 7)), 2)).cumsum(0)
        item += 1
        cv2.polylines(ids, [(steps + rng.integers(0, (w, h))).astype(np.int32)], False, item, 1)
    return ids, rng.uniform(0, 255, (item + 1, 3))


# ----------------------------------------------------------------------------- scenes


def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of one image: a function of (seed, split, index) only, so images can be drawn
    in any order (or in parallel) and still come out identical."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r}; allowed {SPLITS}")
    return np.random.default_rng([int(seed), SPLITS.index(split), int(index)])


def render_scene(seed: int, split: str, index: int, img_size=(320, 320)) -> tuple[np.ndarray, list[DemoObject]]:
    """Draw image ``index`` of ``split``: returns (BGR uint8 [H, W, 3], the labelled objects)."""
    h, w = _hw(img_size)
    rng = image_rng(seed, split, index)
    img = _background(rng, h, w)
    ids, colours = _clutter(rng, h, w, int(rng.integers(0, 4)), int(rng.integers(0, 24)), int(rng.integers(0, 3)))
    img[ids > 0] = colours[ids[ids > 0]]
    img = np.clip(img, 0, 255).astype(np.uint8)
    owner = np.full((h, w), -1, np.int16)  # who drew each pixel last: object index, -1 background
    drawn = [_draw_object(rng, img, owner, k) for k in range(int(rng.integers(0, MAX_OBJECTS + 1)))]
    # a little clutter over the objects too, so occluders are not always labelled shapes
    ids, colours = _clutter(rng, h, w, int(rng.integers(0, 3)), 0, int(rng.integers(0, 2)))
    over = ids > 0
    img[over] = np.round(colours[ids[over]]).astype(np.uint8)
    owner[over] = _CLUTTER
    objects = [_label(owner, k, *d) for k, d in enumerate(drawn) if d is not None]
    return img, [o for o in objects if o is not None]


def _draw_object(rng: np.random.Generator, img: np.ndarray, owner: np.ndarray, k: int):
    """Draw one random object into ``img`` and claim its pixels in ``owner``. Returns (cls, colour,
    inside fraction, in-image pixel count, window slices) or None when it fell entirely outside."""
    h, w = owner.shape
    cls = int(rng.integers(len(DEMO_NAMES)))
    size = math.exp(rng.uniform(math.log(MIN_SIZE), math.log(MAX_SIZE_FRAC * min(h, w))))
    # centres may lie a little outside the image, so some objects are cut by the border
    cx, cy = rng.uniform(-0.2 * size, w + 0.2 * size), rng.uniform(-0.2 * size, h + 0.2 * size)
    lo, hi = _RATIO_RANGE[DEMO_NAMES[cls]]
    angle = rng.uniform(-30, 30) if DEMO_NAMES[cls] == "diamond" else rng.uniform(0, 360)
    # draw on a small window around the object: cheap, and it counts the pixels outside the image
    half = int(math.ceil(size / 2)) + 2
    x0, y0 = int(math.floor(cx)) - half, int(math.floor(cy)) - half
    mask = shape_mask(cls, size, (2 * half + 1, 2 * half + 1), (cx - x0, cy - y0), angle, rng.uniform(lo, hi))
    full = int(mask.sum())
    # the part of the window inside the image (empty slices when the window lies wholly outside)
    ys = slice(min(max(y0, 0), h), max(min(y0 + mask.shape[0], h), 0))
    xs = slice(min(max(x0, 0), w), max(min(x0 + mask.shape[1], w), 0))
    inside = mask[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0]
    if not inside.any():
        return None
    colour = _contrasting_colour(rng, img[ys, xs][inside])
    img[ys, xs][inside] = colour
    owner[ys, xs][inside] = k
    n_inside = int(inside.sum())
    return cls, colour, n_inside / full, n_inside, (ys, xs)


def _contrasting_colour(rng: np.random.Generator, beneath: np.ndarray) -> tuple[int, int, int]:
    """A random colour at least MIN_CONTRAST from the mean of the pixels it will cover, so the object
    is visible; random otherwise, so colour carries no class information."""
    mean = beneath.reshape(-1, 3).mean(0)
    for _ in range(20):
        colour = rng.integers(0, 256, 3)
        if np.abs(colour - mean).max() >= MIN_CONTRAST:
            return tuple(int(c) for c in colour)
    return tuple(int(c) for c in np.where(mean < 128, 255, 0))  # pathological grey: black or white


def _label(owner: np.ndarray, k: int, cls: int, colour, inside: float, n_inside: int, window) -> DemoObject | None:
    """The object's box from the pixels it still owns; None when too little of it shows."""
    ys, xs = window
    mine = owner[ys, xs] == k
    visible = int(mine.sum())
    if inside < MIN_INSIDE or visible < MIN_VISIBLE * n_inside:
        return None
    rows, cols = np.flatnonzero(mine.any(1)), np.flatnonzero(mine.any(0))
    box = (xs.start + int(cols[0]), ys.start + int(rows[0]), xs.start + int(cols[-1]) + 1, ys.start + int(rows[-1]) + 1)
    if min(box[2] - box[0], box[3] - box[1]) < MIN_BOX_SIDE:
        return None
    return DemoObject(cls, box, visible / n_inside, inside, colour)


def _hw(img_size) -> tuple[int, int]:
    """(height, width) from an int or a (height, width) pair."""
    h, w = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
    if int(h) < 32 or int(w) < 32:
        raise ValueError(f"img_size={img_size!r}: each side must be at least 32 px")
    return int(h), int(w)


# ----------------------------------------------------------------------------- files


def yolo_rows(objects: list[DemoObject], h: int, w: int) -> str:
    """Label-file text: one ``class cx cy w h`` row per object, normalised, 6 decimals."""
    rows = []
    for o in objects:
        x1, y1, x2, y2 = o.box
        cx, cy, bw, bh = (x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h
        rows.append(f"{o.cls} {cx:.6f} {cy:.6f} {bw:.6f} {bh:.6f}\n")
    return "".join(rows)


def _params(seed=0, n_train=400, n_val=100, img_size=(320, 320), jpeg_quality=90) -> dict:
    """What the marker records; a dataset is reused only when all of it matches."""
    return {"format_version": FORMAT_VERSION, "seed": int(seed), "n_train": int(n_train), "n_val": int(n_val),
            "img_size": list(_hw(img_size)), "jpeg_quality": int(jpeg_quality)}


def generate_demo_dataset(root, seed: int = 0, n_train: int = 400, n_val: int = 100, img_size=(320, 320),
                          jpeg_quality: int = 90, progress: bool = True) -> Path:
    """Write the demo dataset under ``root`` (see the module docstring) and return ``root`` as a Path.

    ``img_size`` is (height, width) or an int. Earlier demo output under ``root`` is removed first,
    and the marker file is written last, so an interrupted run is detected and redone.
    Image ids in the COCO json are ``int(file stem)`` (stems are 1-based, 6 digits), as YOLOv5's
    val assumes for COCO; category ids are class + 1.
    """
    root = Path(root)
    params = _params(seed, n_train, n_val, img_size, jpeg_quality)
    h, w = params["img_size"]
    remove_demo_output(root)
    coco_images, coco_anns = [], []
    for split, n in (("train", n_train), ("val", n_val)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in _progress(range(n), f"demo dataset {split}", progress):
            img, objects = render_scene(seed, split, i, (h, w))
            stem = f"{i + 1:06d}"
            image_path = root / "images" / split / f"{stem}.jpg"
            if not cv2.imwrite(str(image_path), img, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality]):
                raise OSError(f"could not write {image_path}")
            (root / "labels" / split / f"{stem}.txt").write_text(yolo_rows(objects, h, w))
            if split == "val":
                coco_images.append({"id": i + 1, "file_name": f"{stem}.jpg", "width": w, "height": h})
                coco_anns += [_coco_annotation(len(coco_anns) + j + 1, i + 1, o) for j, o in enumerate(objects)]
    _write_atomic(root / VAL_JSON, json.dumps(_coco_json(coco_images, coco_anns)))
    _write_atomic(root / MARKER, json.dumps(params, indent=1) + "\n")  # last: it certifies all of the above
    return root


def ensure_demo_dataset(root, **kwargs) -> Path:
    """``root`` as a Path, generating the demo dataset first unless a complete one with the same
    parameters (see ``generate_demo_dataset``) is already there."""
    root = Path(root)
    kwargs_params = {k: v for k, v in kwargs.items() if k != "progress"}
    try:
        if json.loads((root / MARKER).read_text()) == _params(**kwargs_params):
            return root
    except (OSError, ValueError):
        pass  # no marker, or a torn one: generate
    return generate_demo_dataset(root, **kwargs)


_DEMO_FILE = re.compile(r"\d{6}\.(jpg|txt)")


def remove_demo_output(root) -> None:
    """Delete what ``generate_demo_dataset`` writes under ``root`` (the marker first), and the label
    caches beside it; other files are left alone, so a mistyped ``path`` cannot wipe a real dataset's
    differently named files."""
    root = Path(root)
    (root / MARKER).unlink(missing_ok=True)
    for split in SPLITS:
        for folder in (root / "images" / split, root / "labels" / split):
            if folder.is_dir():
                for f in folder.iterdir():
                    if _DEMO_FILE.fullmatch(f.name):
                        f.unlink()
        for cache in (root / "labels").glob(f"{split}.cache*"):
            cache.unlink()
    (root / VAL_JSON).unlink(missing_ok=True)


def _coco_annotation(ann_id: int, image_id: int, o: DemoObject) -> dict:
    x1, y1, x2, y2 = o.box
    # no segmentation is stored, so the area is the box's, as a YOLO-txt -> COCO conversion would give
    return {"id": ann_id, "image_id": image_id, "category_id": o.cls + 1, "bbox": [x1, y1, x2 - x1, y2 - y1],
            "area": (x2 - x1) * (y2 - y1), "iscrowd": 0}


def _coco_json(images: list, annotations: list) -> dict:
    return {
        "info": {"description": "yolox5 procedural demo dataset, val split", "version": str(FORMAT_VERSION)},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(DEMO_NAMES)],
    }


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _progress(iterable, desc: str, enabled: bool):
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, unit="img", leave=False)
