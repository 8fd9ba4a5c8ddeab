"""Image and box augmentations (numpy/cv2) as pure functions of an explicit random generator.

Conventions, shared by every function here:

- images are ``HxWx3 uint8 BGR`` (official YOLOX weights expect BGR 0-255, not RGB and not /255);
- labels are ``float32 [n, 5] = (class, x1, y1, x2, y2)`` in pixels, edge coordinates (a box
  ``(0, 0, 2, 2)`` covers pixels 0 and 1);
- randomness comes only from the ``rng: numpy.random.Generator`` argument, never from ``random`` or
  ``np.random``'s global state, so a loader seeded per (epoch, index) is reproducible whatever the
  worker count;
- inputs are never modified, except by ``augment_hsv`` which works in place as YOLOv5's does.

The functions follow YOLOv5 (letterbox, augment_hsv, random_perspective, box_candidates, the
4-image mosaic, MixUp) and official YOLOX (``preproc`` = letterbox ``mode="topleft"``, its MixUp),
formula for formula, so that a pipeline built from them reproduces either recipe.
"""
from __future__ import annotations

import math
from typing import Sequence

import cv2
import numpy as np

__all__ = [
    "letterbox", "augment_hsv", "random_perspective", "perspective_matrix", "warp_labels", "box_candidates",
    "mosaic4_layout", "mosaic4", "mosaic4_warped", "mixup_yolov5",
    "mixup_yolox", "flip_lr", "flip_ud", "filter_boxes", "xyxy_to_cxcywh_norm", "cxcywh_norm_to_xyxy",
]

LETTERBOX_MODES = ("center", "topleft")


# ----------------------------------------------------------------------------- input checks
def _check_rng(rng, fn: str) -> None:
    # A RandomState or the np.random module would silently reintroduce global state.
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"{fn}: rng must be a numpy.random.Generator (np.random.default_rng(seed)), "
                        f"got {type(rng).__name__}")


def _check_image(img, fn: str, name: str = "img") -> None:
    if not isinstance(img, np.ndarray) or img.ndim != 3 or img.dtype != np.uint8:
        got = f"{img.dtype} array of shape {img.shape}" if isinstance(img, np.ndarray) else type(img).__name__
        raise ValueError(f"{fn}: {name} must be an HxWxC uint8 array (BGR), got {got}")


def _as_labels(labels, fn: str, name: str = "labels") -> np.ndarray:
    """A float32 [n, 5] copy of labels; an empty input of any shape becomes [0, 5]."""
    arr = np.asarray(labels, dtype=np.float32)
    if arr.size == 0:
        return np.zeros((0, 5), np.float32)
    if arr.ndim != 2 or arr.shape[1] != 5:
        raise ValueError(f"{fn}: {name} must have shape [n, 5] = (class, x1, y1, x2, y2), got {arr.shape}")
    return arr.copy()


def _size_hw(size, fn: str) -> tuple[int, int]:
    """An int (square) or a (height, width) pair -> (h, w) ints."""
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    if isinstance(size, Sequence) and len(size) == 2:
        return int(size[0]), int(size[1])
    raise ValueError(f"{fn}: size must be an int or a (height, width) pair, got {size!r}")


def _fill3(fill, channels: int) -> tuple:
    """A scalar or per-channel fill as the tuple cv2 border functions take."""
    if np.isscalar(fill):
        return (float(fill),) * channels
    return tuple(float(v) for v in fill)


# ----------------------------------------------------------------------------- resizing
def letterbox(img: np.ndarray, new_shape=(640, 640), mode: str = "center", color=(114, 114, 114),
              auto: bool = False, scaleup: bool = True, stride: int = 32):
    """Resize keeping the aspect ratio, then pad to ``new_shape`` (h, w) or an int (square).

    mode "center": YOLOv5's letterbox. Size ``round(w*r), round(h*r)``, the padding split in two with
        YOLOv5's rounding (``round(d/2 -+ 0.1)``, the odd pixel going right/bottom).
    mode "topleft": official YOLOX ``preproc``. Size ``int(w*r), int(h*r)`` (truncated), pasted at the
        top-left of a canvas filled with ``color``; pad is (0, 0).
    ``auto`` pads only up to the next multiple of ``stride`` (rectangular inference); ``scaleup=False``
    only shrinks (r <= 1), as YOLOv5 does for validation.

    Returns (img, ratio, pad): ratio (rw, rh) = (r, r), the nominal scale both YOLOv5 and YOLOX map
    boxes with (the resized size is rounded, so the far edge may differ by < 1 px); pad (left, top)
    in whole pixels. A box maps as ``x * rw + left``, ``y * rh + top``.
    """
    fn = "letterbox"
    _check_image(img, fn)
    if mode not in LETTERBOX_MODES:
        raise ValueError(f"{fn}: mode must be one of {LETTERBOX_MODES}, got {mode!r}")
    h, w = img.shape[:2]
    th, tw = _size_hw(new_shape, fn)
    r = min(th / h, tw / w)
    if not scaleup:
        r = min(r, 1.0)
    if mode == "center":
        new_w, new_h = int(round(w * r)), int(round(h * r))  # YOLOv5 rounds
    else:
        new_w, new_h = int(w * r), int(h * r)  # official preproc truncates
    new_w, new_h = max(new_w, 1), max(new_h, 1)  # a 1000x1 strip must not become 0 wide
    dw, dh = tw - new_w, th - new_h  # total padding, pixels
    if auto:
        dw, dh = dw % stride, dh % stride
    if (new_w, new_h) != (w, h):  # cv2.resize to the same size is a copy; skip it
        img = cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    if mode == "center":
        left, right = int(round(dw / 2 - 0.1)), int(round(dw / 2 + 0.1))
        top, bottom = int(round(dh / 2 - 0.1)), int(round(dh / 2 + 0.1))
    else:
        left, top, right, bottom = 0, 0, dw, dh
    img = cv2.copyMakeBorder(img, top, bottom, left, right, cv2.BORDER_CONSTANT,
                             value=_fill3(color, img.shape[2]))
    return img, (r, r), (left, top)


# ----------------------------------------------------------------------------- colour
def augment_hsv(img: np.ndarray, hgain: float, sgain: float, vgain: float,
                rng: np.random.Generator) -> np.ndarray:
    """YOLOv5's HSV jitter, in place: H, S, V multiplied by U(1-g, 1+g) through 256-entry LUTs.

    Hue wraps modulo 180 (OpenCV's 8-bit hue range), S and V are clipped to 0..255. All gains 0 is a
    no-op that draws nothing from rng. Returns img (the same array). img: HxWx3 uint8 BGR.
    """
    fn = "augment_hsv"
    _check_image(img, fn)
    _check_rng(rng, fn)
    if img.shape[2] != 3:
        raise ValueError(f"{fn}: img must have 3 channels (BGR), got {img.shape[2]}")
    if not (hgain or sgain or vgain):
        return img
    r = rng.uniform(-1, 1, 3) * [hgain, sgain, vgain] + 1  # [3] multiplicative gains
    x = np.arange(0, 256, dtype=r.dtype)  # [256] LUT input
    lut_hue = ((x * r[0]) % 180).astype(np.uint8)
    lut_sat = np.clip(x * r[1], 0, 255).astype(np.uint8)
    lut_val = np.clip(x * r[2], 0, 255).astype(np.uint8)
    # per-plane LUTs: OpenCV's 3-channel-table LUT is about twice as slow as split, 3 LUTs and merge
    hue, sat, val = cv2.split(cv2.cvtColor(img, cv2.COLOR_BGR2HSV))
    im_hsv = cv2.merge((cv2.LUT(hue, lut_hue), cv2.LUT(sat, lut_sat), cv2.LUT(val, lut_val)))
    cv2.cvtColor(im_hsv, cv2.COLOR_HSV2BGR, dst=img)
    return img


# ----------------------------------------------------------------------------- geometry
def box_candidates(box1: np.ndarray, box2: np.ndarray, wh_thr: float = 2, ar_thr: float = 100,
                   area_thr: float = 0.1, eps: float = 1e-16) -> np.ndarray:
    """YOLOv5's filter of boxes after an augmentation -> bool [n].

    box1 [4, n] before (scaled by the augmentation's scale), box2 [4, n] after, xyxy. Keeps a box when
    both sides > wh_thr px, the area kept > area_thr of the original and the aspect ratio < ar_thr.
    """
    w1, h1 = box1[2] - box1[0], box1[3] - box1[1]
    w2, h2 = box2[2] - box2[0], box2[3] - box2[1]
    ar = np.maximum(w2 / (h2 + eps), h2 / (w2 + eps))  # aspect ratio, >= 1
    return (w2 > wh_thr) & (h2 > wh_thr) & (w2 * h2 / (w1 * h1 + eps) > area_thr) & (ar < ar_thr)


def _warp_boxes(boxes: np.ndarray, M: np.ndarray, perspective: bool) -> np.ndarray:
    """Bounding boxes [n, 4] xyxy of the 4 corners of each box warped by the 3x3 M -> [n, 4]."""
    n = len(boxes)
    xy = np.ones((n * 4, 3))
    xy[:, :2] = boxes[:, [0, 1, 2, 3, 0, 3, 2, 1]].reshape(n * 4, 2)  # corners x1y1, x2y2, x1y2, x2y1
    xy = xy @ M.T  # [4n, 3]
    # A projective map sends lines to lines, so the corners' min/max bounds the warped rectangle exactly.
    xy = (xy[:, :2] / xy[:, 2:3] if perspective else xy[:, :2]).reshape(n, 8)
    x, y = xy[:, [0, 2, 4, 6]], xy[:, [1, 3, 5, 7]]  # [n, 4] each
    return np.stack((x.min(1), y.min(1), x.max(1), y.max(1)), 1)


def _span(n_in: int, n_out: int, scale: float, shift: float):
    """Integer source [a, b) and output [c, d) ranges along one axis for u = scale * x + shift, and the
    (scale, shift) that cv2.resize of the one onto the other really applies (pixel centres align)."""
    c = max(0, math.ceil(shift - 0.5 * scale))  # first output pixel whose centre falls on the image
    d = min(n_out, math.floor(scale * (n_in - 0.5) + shift - 1e-9) + 1)
    if d <= c:
        return None
    a = max(0, math.floor((c - shift) / scale))
    b = min(n_in, math.ceil((d - 1 - shift) / scale) + 1)
    k = (d - c) / (b - a)
    return (a, b), (c, d), k, c + (0.5 - a) * k - 0.5


def _scale_shift_plan(in_h: int, in_w: int, M: np.ndarray, width: int, height: int):
    """For an M without rotation or shear: ((source y, x ranges), (output y, x ranges), the 3x3 M a
    cv2.resize between them applies), or None when no output pixel falls on the image."""
    x = _span(in_w, width, M[0, 0], M[0, 2])
    y = _span(in_h, height, M[1, 1], M[1, 2])
    if x is None or y is None:
        return None
    (xa, xb), (xc, xd), kx, tx = x
    (ya, yb), (yc, yd), ky, ty = y
    return ((ya, yb), (xa, xb)), ((yc, yd), (xc, xd)), np.array([[kx, 0.0, tx], [0.0, ky, ty], [0.0, 0.0, 1.0]])


def _is_scale_shift(M: np.ndarray, perspective: float) -> bool:
    return not perspective and M[0, 1] == 0 and M[1, 0] == 0 and M[0, 0] > 0 and M[1, 1] > 0


def _filled(height: int, width: int, channels: int, value: tuple) -> np.ndarray:
    if len(set(value)) == 1:
        return np.full((height, width, channels), value[0], dtype=np.uint8)  # a memset
    out = np.empty((height, width, channels), dtype=np.uint8)
    out[:] = value
    return out


def _resize_into(out: np.ndarray, src: np.ndarray, dst_range) -> None:
    (yc, yd), (xc, xd) = dst_range
    out[yc:yd, xc:xd] = cv2.resize(src, (xd - xc, yd - yc), interpolation=cv2.INTER_LINEAR)


def _scale_shift(img: np.ndarray, M: np.ndarray, width: int, height: int, value):
    """warpAffine for an M without rotation or shear, as one cv2.resize of the visible source rectangle
    (3-4x faster). Rounding the rectangles to whole pixels moves the map by under a pixel, so this
    returns the 3x3 M it really applied and the boxes follow that one: pixels and boxes stay exact."""
    out = _filled(height, width, img.shape[2], value)
    plan = _scale_shift_plan(img.shape[0], img.shape[1], M, width, height)
    if plan is None:
        return out, M
    ((ya, yb), (xa, xb)), dst, applied = plan
    _resize_into(out, img[ya:yb, xa:xb], dst)
    return out, applied


def _warp(img: np.ndarray, M: np.ndarray, width: int, height: int, value, perspective: float):
    """img through the 3x3 M onto a height x width output -> (output, the M really applied): a
    perspective warp, a resize for scale and shift (``_scale_shift``), else an affine warp."""
    if perspective:
        return cv2.warpPerspective(img, M, dsize=(width, height), borderValue=value), M
    if _is_scale_shift(M, perspective):
        return _scale_shift(img, M, width, height, value)
    return cv2.warpAffine(img, M[:2], dsize=(width, height), borderValue=value), M


def perspective_matrix(in_hw, rng: np.random.Generator, degrees: float = 0, translate: float = 0.1,
                       scale: float = 0.5, shear: float = 0, perspective: float = 0.0, border=(0, 0)):
    """random_perspective's draws for an input of in_hw -> (3x3 M, scale s, out height, out width)."""
    height = in_hw[0] + border[0] * 2
    width = in_hw[1] + border[1] * 2
    if height <= 0 or width <= 0:
        raise ValueError(f"random_perspective: border {tuple(border)} leaves no output for an image of "
                         f"shape {tuple(in_hw)}")

    C = np.eye(3)  # input centre -> origin, so rotation and scale happen about the centre
    C[0, 2] = -in_hw[1] / 2
    C[1, 2] = -in_hw[0] / 2

    P = np.eye(3)
    P[2, 0] = rng.uniform(-perspective, perspective)  # x perspective (about y)
    P[2, 1] = rng.uniform(-perspective, perspective)  # y perspective (about x)

    R = np.eye(3)
    a = rng.uniform(-degrees, degrees)
    s = rng.uniform(1 - scale, 1 + scale)
    R[:2] = cv2.getRotationMatrix2D(angle=a, center=(0, 0), scale=s)

    S = np.eye(3)
    S[0, 1] = math.tan(rng.uniform(-shear, shear) * math.pi / 180)  # x shear
    S[1, 0] = math.tan(rng.uniform(-shear, shear) * math.pi / 180)  # y shear

    T = np.eye(3)  # origin -> a point near the output centre
    T[0, 2] = rng.uniform(0.5 - translate, 0.5 + translate) * width
    T[1, 2] = rng.uniform(0.5 - translate, 0.5 + translate) * height

    return T @ S @ R @ P @ C, s, height, width  # right to left: the order matters


def warp_labels(labels: np.ndarray, M: np.ndarray, s: float, width: int, height: int, perspective: bool):
    """Boxes through M: min/max of the warped corners, clipped to the output, filtered by
    ``box_candidates`` against the boxes scaled by s. labels [n, 5] -> [m, 5]."""
    if not len(labels):
        return labels
    new = _warp_boxes(labels[:, 1:5].astype(np.float64), M, bool(perspective))  # [n, 4]
    new[:, [0, 2]] = new[:, [0, 2]].clip(0, width)
    new[:, [1, 3]] = new[:, [1, 3]].clip(0, height)
    keep = box_candidates(box1=labels[:, 1:5].T * s, box2=new.T)  # [n]
    labels = labels[keep]
    labels[:, 1:5] = new[keep]
    return labels


def random_perspective(img: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
                       degrees: float = 0, translate: float = 0.1, scale: float = 0.5, shear: float = 0,
                       perspective: float = 0.0, border=(0, 0), fill=114):
    """YOLOv5's random_perspective: M = T @ S @ R @ P @ C applied to the image and the boxes.

    C moves the input centre to the origin, P is a random perspective (+-perspective), R a rotation by
    U(+-degrees) and a scale U(1 +- scale) about it, S a shear U(+-shear) degrees, T puts the centre at
    U(0.5 +- translate) of the output. Output size = input size + 2*border, border = (bh, bw); a
    negative border crops, e.g. (-s//2, -s//2) turns a 2s mosaic canvas into an s x s image.
    Without rotation, shear and perspective the warp is a resize of the visible rectangle (see
    ``_scale_shift``): the map moves by under a pixel and the boxes follow the map really applied.

    Boxes become the min/max of their 4 warped corners, clipped to the output, and are kept when
    ``box_candidates`` accepts them. labels [n, 5] -> (img [H+2bh, W+2bw, 3], labels [m, 5]).
    """
    fn = "random_perspective"
    _check_image(img, fn)
    _check_rng(rng, fn)
    labels = _as_labels(labels, fn)
    M, s, height, width = perspective_matrix(img.shape[:2], rng, degrees, translate, scale, shear, perspective,
                                             border)
    if border[0] != 0 or border[1] != 0 or (M != np.eye(3)).any():
        img, M = _warp(img, M, width, height, _fill3(fill, img.shape[2]), perspective)
    return img, warp_labels(labels, M, s, width, height, perspective)


def mosaic4_layout(sizes_hw, size, rng: np.random.Generator):
    """Where YOLOv5's mosaic puts 4 images of sizes_hw [(h, w)] * 4 on its 2*size canvas.

    Draws the centre (yc, xc) ~ U(size/2, 3*size/2) (ints, y first as YOLOv5) and returns
    (canvas_hw, [(canvas (x1, y1, x2, y2), image (x1, y1, x2, y2))] * 4): the images go top-left,
    top-right, bottom-left, bottom-right of the centre, each cut only by the canvas edge.
    """
    sh, sw = _size_hw(size, "mosaic4")
    yc = int(rng.uniform(sh * 0.5, sh * 1.5))  # YOLOv5 draws y first
    xc = int(rng.uniform(sw * 0.5, sw * 1.5))
    places = []
    for k, (h, w) in enumerate(sizes_hw):
        if k == 0:  # top left: image's bottom-right corner at the centre
            x1a, y1a, x2a, y2a = max(xc - w, 0), max(yc - h, 0), xc, yc
            x1b, y1b, x2b, y2b = w - (x2a - x1a), h - (y2a - y1a), w, h
        elif k == 1:  # top right
            x1a, y1a, x2a, y2a = xc, max(yc - h, 0), min(xc + w, 2 * sw), yc
            x1b, y1b, x2b, y2b = 0, h - (y2a - y1a), min(w, x2a - x1a), h
        elif k == 2:  # bottom left
            x1a, y1a, x2a, y2a = max(xc - w, 0), yc, xc, min(2 * sh, yc + h)
            x1b, y1b, x2b, y2b = w - (x2a - x1a), 0, w, min(y2a - y1a, h)
        else:  # bottom right
            x1a, y1a, x2a, y2a = xc, yc, min(xc + w, 2 * sw), min(2 * sh, yc + h)
            x1b, y1b, x2b, y2b = 0, 0, min(w, x2a - x1a), min(y2a - y1a, h)
        places.append(((x1a, y1a, x2a, y2a), (x1b, y1b, x2b, y2b)))
    return (2 * sh, 2 * sw), places


def _paste_tiles(canvas: np.ndarray, origin, places, load) -> None:
    """Copy each image's part that falls on canvas (the full mosaic canvas, or its window at origin
    (y, x)); load(k) is called only for images that show."""
    oy, ox = origin
    ch, cw = canvas.shape[:2]
    for k, ((x1a, y1a, x2a, y2a), (x1b, y1b, _, _)) in enumerate(places):
        x1, y1, x2, y2 = max(x1a, ox), max(y1a, oy), min(x2a, ox + cw), min(y2a, oy + ch)  # visible part
        if x2 <= x1 or y2 <= y1:
            continue
        im = load(k)
        bx, by = x1b + x1 - x1a, y1b + y1 - y1a  # the same corner in the image
        canvas[y1 - oy:y2 - oy, x1 - ox:x2 - ox] = im[by:by + y2 - y1, bx:bx + x2 - x1]


def _mosaic_labels(labels_list, places, canvas_hw, fn: str) -> np.ndarray:
    out = []
    for k, (lab, ((x1a, y1a, _, _), (x1b, y1b, _, _))) in enumerate(zip(labels_list, places)):
        lab = _as_labels(lab, fn, f"labels_list[{k}]")
        lab[:, [1, 3]] += x1a - x1b  # image -> canvas offset
        lab[:, [2, 4]] += y1a - y1b
        out.append(lab)
    labels = np.concatenate(out, 0)  # [sum n_i, 5]
    # The images are cut only where they leave the canvas, so clipping to it = clipping to what is seen.
    labels[:, [1, 3]] = labels[:, [1, 3]].clip(0, canvas_hw[1])
    labels[:, [2, 4]] = labels[:, [2, 4]].clip(0, canvas_hw[0])
    return labels


def mosaic4(images: Sequence[np.ndarray], labels_list: Sequence[np.ndarray], size, rng: np.random.Generator,
            fill=114):
    """YOLOv5's 4-image mosaic on a 2*size canvas, before the random_perspective crop.

    images: 4 HxWx3 uint8, already resized so the long side is ``size``; labels_list: 4 [n_i, 5] in their
    image's pixels; size: int or (h, w). The mosaic centre (xc, yc) ~ U(size/2, 3*size/2) (ints); the
    images go top-left, top-right, bottom-left, bottom-right of it, each cut only by the canvas edge.
    Returns (canvas [2h, 2w, 3] uint8 filled with ``fill``, labels [sum n_i, 5] shifted and clipped to
    the canvas; boxes pushed out of the canvas become empty and are left for box_candidates to drop).
    """
    fn = "mosaic4"
    _check_rng(rng, fn)
    if len(images) != 4 or len(labels_list) != 4:
        raise ValueError(f"{fn}: needs 4 images and 4 label arrays, got {len(images)} and {len(labels_list)}")
    for k, im in enumerate(images):
        _check_image(im, fn, f"images[{k}]")
    (ch, cw), places = mosaic4_layout([im.shape[:2] for im in images], size, rng)
    canvas = np.full((ch, cw, images[0].shape[2]), fill, dtype=np.uint8)
    _paste_tiles(canvas, (0, 0), places, images.__getitem__)
    return canvas, _mosaic_labels(labels_list, places, (ch, cw), fn)


def mosaic4_warped(load, sizes_hw, labels_list: Sequence[np.ndarray], size, rng: np.random.Generator,
                   degrees: float = 0, translate: float = 0.1, scale: float = 0.5, shear: float = 0,
                   perspective: float = 0.0, fill=114):
    """``random_perspective(*mosaic4(...), border=(-h//2, -w//2))`` with the same draws and the same
    result, without building the 2*size canvas when the warp is a scale and shift (no rotation, shear
    or perspective): only the canvas window the output shows is assembled, and images that do not
    show in it are never loaded (about 1 in 10 with YOLOv5's hyps).

    load(k) -> image k (HxWx3 uint8 of size sizes_hw[k]); labels_list: 4 [n_i, 5] in image pixels.
    Returns (img [h, w, 3] uint8, labels [m, 5]).
    """
    fn = "mosaic4_warped"
    _check_rng(rng, fn)
    if len(sizes_hw) != 4 or len(labels_list) != 4:
        raise ValueError(f"{fn}: needs 4 images and 4 label arrays, got {len(sizes_hw)} and {len(labels_list)}")
    sh, sw = _size_hw(size, fn)

    def checked(k):
        im = load(k)
        if im.shape[:2] != tuple(sizes_hw[k]):
            raise ValueError(f"{fn}: image {k} is {im.shape[:2]}, its expected size was {tuple(sizes_hw[k])}")
        return im

    (ch, cw), places = mosaic4_layout(sizes_hw, (sh, sw), rng)
    labels = _mosaic_labels(labels_list, places, (ch, cw), fn)
    M, s, height, width = perspective_matrix((ch, cw), rng, degrees, translate, scale, shear, perspective,
                                             border=(-sh // 2, -sw // 2))
    value = _fill3(fill, 3)
    if _is_scale_shift(M, perspective):
        img = _filled(height, width, 3, value)
        plan = _scale_shift_plan(ch, cw, M, width, height)
        if plan is not None:
            ((ya, yb), (xa, xb)), dst, M = plan
            window = _filled(yb - ya, xb - xa, 3, value)
            _paste_tiles(window, (ya, xa), places, checked)
            _resize_into(img, window, dst)
    else:  # rotation, shear or perspective: the whole canvas, as mosaic4 builds it
        canvas = _filled(ch, cw, 3, value)
        _paste_tiles(canvas, (0, 0), places, checked)
        img, M = _warp(canvas, M, width, height, value, perspective)
    return img, warp_labels(labels, M, s, width, height, perspective)


# ----------------------------------------------------------------------------- mixing
def mixup_yolov5(img: np.ndarray, labels: np.ndarray, img2: np.ndarray, labels2: np.ndarray,
                 rng: np.random.Generator):
    """YOLOv5's MixUp: r ~ Beta(32, 32), img*r + img2*(1-r) rounded to uint8, labels concatenated.

    YOLOv5 blends in float64 and truncates; cv2.addWeighted rounds instead (no half-level darkening)
    and takes 0.3 ms instead of 4.5 ms for a 640x640 pair.

    img, img2: same-shape HxWx3 uint8; labels [n, 5], labels2 [m, 5] -> (img, labels [n+m, 5]).
    """
    fn = "mixup_yolov5"
    _check_image(img, fn)
    _check_image(img2, fn, "img2")
    _check_rng(rng, fn)
    if img.shape != img2.shape:
        raise ValueError(f"{fn}: img and img2 must have the same shape, got {img.shape} and {img2.shape}")
    labels, labels2 = _as_labels(labels, fn), _as_labels(labels2, fn, "labels2")
    r = rng.beta(32.0, 32.0)  # mixup ratio, ~0.5 +- 0.06
    out = cv2.addWeighted(img, r, img2, 1 - r, 0.0)
    return out, np.concatenate((labels, labels2), 0)


def mixup_yolox(img: np.ndarray, labels: np.ndarray, img2: np.ndarray, labels2: np.ndarray,
                rng: np.random.Generator, scale=(0.5, 1.5), ratio: float = 0.5, flip_p: float = 0.5):
    """Official YOLOX MixUp (``MosaicDetection.mixup``) of img2 into img.

    img2 is letterboxed top-left into img's size (pad 114), resized by jit ~ U(scale), flipped with
    p = flip_p, padded with 0 to at least img's size and randomly cropped back to it (offsets
    randint over the excess, as official); its boxes are scaled by r*jit, clipped, flipped, shifted
    and clipped to img, and those left empty are dropped. Blend ``(1-ratio)*img + ratio*img2`` in
    float32, truncated to uint8 (official: 0.5/0.5). The official draws, in order: jit, flip, y and x
    offsets; the caller picks img2 (official: another image with labels).

    img [H, W, 3], img2 [h2, w2, 3] uint8; labels [n, 5], labels2 [m, 5] in their own image's pixels
    -> (img [H, W, 3], labels [n + m', 5]): img's labels first, unchanged.
    """
    fn = "mixup_yolox"
    _check_image(img, fn)
    _check_image(img2, fn, "img2")
    _check_rng(rng, fn)
    labels, labels2 = _as_labels(labels, fn), _as_labels(labels2, fn, "labels2")
    th, tw = img.shape[:2]
    jit = rng.uniform(scale[0], scale[1])
    flip = rng.uniform(0.0, 1.0) < flip_p

    cp_img, (r, _), _ = letterbox(img2, (th, tw), mode="topleft", color=114)  # [th, tw, 3]
    cp_img = cv2.resize(cp_img, (max(int(tw * jit), 1), max(int(th * jit), 1)))  # INTER_LINEAR
    r *= jit  # boxes scale by the nominal ratio, as official (the pixels by the rounded size)
    if flip:
        cp_img = cp_img[:, ::-1]
    oh, ow = cp_img.shape[:2]
    padded = np.zeros((max(oh, th), max(ow, tw), cp_img.shape[2]), dtype=np.uint8)
    padded[:oh, :ow] = cp_img
    # Official randint(0, excess - 1) is inclusive; integers(0, excess) is the same range.
    y_off = int(rng.integers(0, padded.shape[0] - th)) if padded.shape[0] > th else 0
    x_off = int(rng.integers(0, padded.shape[1] - tw)) if padded.shape[1] > tw else 0
    crop = padded[y_off:y_off + th, x_off:x_off + tw]  # [th, tw, 3]

    boxes = labels2[:, 1:5].astype(np.float64) * r  # [m, 4] in the resized img2 (float64 as official)
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, ow)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, oh)
    if flip:
        boxes[:, [0, 2]] = ow - boxes[:, [2, 0]]
    boxes[:, [0, 2]] = (boxes[:, [0, 2]] - x_off).clip(0, tw)
    boxes[:, [1, 3]] = (boxes[:, [1, 3]] - y_off).clip(0, th)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])  # cropped away -> empty
    labels2 = np.concatenate((labels2[keep, :1], boxes[keep]), 1).astype(np.float32)

    out = ((1 - ratio) * img.astype(np.float32) + ratio * crop.astype(np.float32)).astype(np.uint8)
    return out, np.concatenate((labels, labels2), 0)


# ----------------------------------------------------------------------------- flips, filters, formats
def flip_lr(img: np.ndarray, labels: np.ndarray):
    """Mirror left-right: x -> W - x (x1 and x2 swap). Returns a contiguous image (torch/cv2 need it)."""
    fn = "flip_lr"
    _check_image(img, fn)
    labels = _as_labels(labels, fn)
    w = img.shape[1]
    labels[:, [1, 3]] = w - labels[:, [3, 1]]
    return cv2.flip(img, 1), labels  # a contiguous copy, 5x faster than numpy's strided one


def flip_ud(img: np.ndarray, labels: np.ndarray):
    """Mirror up-down: y -> H - y (y1 and y2 swap). Returns a contiguous image."""
    fn = "flip_ud"
    _check_image(img, fn)
    labels = _as_labels(labels, fn)
    h = img.shape[0]
    labels[:, [2, 4]] = h - labels[:, [4, 2]]
    return cv2.flip(img, 0), labels


def filter_boxes(labels: np.ndarray, min_side: float = 1.0) -> np.ndarray:
    """Keep boxes whose width and height are both > min_side px (official YOLOX TrainTransform: > 1)."""
    labels = _as_labels(labels, "filter_boxes")
    w, h = labels[:, 3] - labels[:, 1], labels[:, 4] - labels[:, 2]
    return labels[(w > min_side) & (h > min_side)]


def xyxy_to_cxcywh_norm(labels: np.ndarray, w: float, h: float) -> np.ndarray:
    """[n, 5] (cls, x1, y1, x2, y2) pixels -> [n, 5] (cls, cx, cy, bw, bh) normalised by image w, h."""
    labels = _as_labels(labels, "xyxy_to_cxcywh_norm")
    out = np.empty_like(labels)
    out[:, 0] = labels[:, 0]
    out[:, 1] = (labels[:, 1] + labels[:, 3]) / 2 / w
    out[:, 2] = (labels[:, 2] + labels[:, 4]) / 2 / h
    out[:, 3] = (labels[:, 3] - labels[:, 1]) / w
    out[:, 4] = (labels[:, 4] - labels[:, 2]) / h
    return out


def cxcywh_norm_to_xyxy(labels: np.ndarray, w: float, h: float) -> np.ndarray:
    """[n, 5] (cls, cx, cy, bw, bh) normalised -> [n, 5] (cls, x1, y1, x2, y2) pixels of a w x h image."""
    labels = _as_labels(labels, "cxcywh_norm_to_xyxy")
    out = np.empty_like(labels)
    out[:, 0] = labels[:, 0]
    out[:, 1] = (labels[:, 1] - labels[:, 3] / 2) * w
    out[:, 2] = (labels[:, 2] - labels[:, 4] / 2) * h
    out[:, 3] = (labels[:, 1] + labels[:, 3] / 2) * w
    out[:, 4] = (labels[:, 2] + labels[:, 4] / 2) * h
    return out
