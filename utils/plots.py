"""Training plots: results.png, label statistics, image grids with boxes (ground truth or predictions).

A plot never ends a run: a failing one is a warning (never_fatal), and boxes far outside the picture or
not finite (a diverging model's) are clipped or skipped before they reach OpenCV, which rejects
coordinates beyond the int32 range.
"""
from __future__ import annotations

import csv
import functools
import logging
import math
from pathlib import Path

import cv2
import numpy as np

COLOURS = [(56, 56, 255), (151, 157, 255), (31, 112, 255), (29, 178, 255), (49, 210, 207), (10, 249, 72),
           (23, 204, 146), (134, 219, 61), (52, 147, 26), (187, 212, 0), (168, 153, 44), (255, 194, 0),
           (147, 69, 52), (255, 115, 100), (236, 24, 0), (255, 56, 132), (133, 0, 82), (255, 56, 203)]  # BGR


LOGGER = logging.getLogger("yolox5.plots")


def never_fatal(plot):
    """The plot function, or a warning naming it and what went wrong (None returned) when it fails."""
    @functools.wraps(plot)
    def safe(*args, **kwargs):
        try:
            return plot(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - a picture is never worth a run
            LOGGER.warning(f"WARNING {plot.__name__}: plot not written ({type(e).__name__}: {e})")
            return None

    return safe


def pixel_box(box, width: int, height: int):
    """((x1, y1), (x2, y2)) int corners of an xyxy box clipped to a width x height picture, None if not finite."""
    box = np.asarray(box, dtype=np.float64)
    if not np.isfinite(box).all():
        return None
    x1, x2 = (int(np.clip(v, 0, width - 1)) for v in box[[0, 2]])
    y1, y2 = (int(np.clip(v, 0, height - 1)) for v in box[[1, 3]])
    return (x1, y1), (x2, y2)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    return plt


@never_fatal
def plot_results(csv_path, out=None) -> Path:
    """One panel per results.csv column against the epoch."""
    csv_path = Path(csv_path)
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    plt = _pyplot()
    keys = [k for k in (rows[0] if rows else {}) if k != "epoch"]
    cols = 4
    fig, axes = plt.subplots(math.ceil(max(len(keys), 1) / cols), cols, figsize=(14, 2.6 * math.ceil(max(len(keys), 1) / cols)),
                             squeeze=False)
    epochs = [int(r["epoch"]) for r in rows]
    for ax, k in zip(axes.flat, keys):
        ax.plot(epochs, [float(r[k]) for r in rows], marker=".", linewidth=1.5)
        ax.set_title(k, fontsize=9)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.tight_layout()
    out = Path(out or csv_path.with_name("results.png"))
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


@never_fatal
def plot_labels(labels: list[np.ndarray], names: list[str], out) -> Path:
    """Instances per class and the box size distribution of a dataset's labels."""
    plt = _pyplot()
    lab = np.concatenate(labels) if labels else np.zeros((0, 5))
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(14, 4))
    counts = np.bincount(lab[:, 0].astype(int), minlength=len(names)) if len(lab) else np.zeros(len(names))
    a.bar(range(len(names)), counts, color="tab:blue")
    a.set_xticks(range(len(names)))
    a.set_xticklabels(names, rotation=90 if len(names) > 10 else 0, fontsize=7)
    a.set_title("instances per class")
    b.scatter(lab[:, 1], lab[:, 2], s=2, alpha=0.3) if len(lab) else None
    b.set(xlim=(0, 1), ylim=(1, 0), title="box centres (x, y)")
    c.scatter(lab[:, 3], lab[:, 4], s=2, alpha=0.3) if len(lab) else None
    c.set(xlim=(0, 1), ylim=(0, 1), title="box sizes (w, h)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return Path(out)


@never_fatal
def plot_images(images, targets, paths=None, out="images.jpg", names=None, max_images=16, conf_thres=0.25) -> Path:
    """A grid of a batch with boxes. images: uint8 [B, 3, H, W] BGR; targets: [M, 6] (img, cls, cx, cy, w, h)
    normalised (ground truth) or [M, 7] (img, cls, x1, y1, x2, y2, score) in pixels (predictions)."""
    images = images[:max_images].cpu().numpy() if hasattr(images, "cpu") else np.asarray(images[:max_images])
    targets = targets.cpu().numpy() if hasattr(targets, "cpu") else np.asarray(targets)
    b, _, h, w = images.shape
    cols = math.ceil(math.sqrt(b))
    rows = math.ceil(b / cols)
    grid = np.full((rows * h, cols * w, 3), 255, np.uint8)
    for i in range(b):
        y0, x0 = (i // cols) * h, (i % cols) * w
        tile = np.ascontiguousarray(images[i].transpose(1, 2, 0))
        for t in targets[targets[:, 0] == i]:
            cls = int(t[1])
            if t.shape[0] == 7:
                if t[6] < conf_thres:
                    continue
                x1, y1, x2, y2 = t[2:6]
                text = f"{_name(names, cls)} {t[6]:.2f}"
            else:
                cx, cy, bw, bh = t[2] * w, t[3] * h, t[4] * w, t[5] * h
                x1, y1, x2, y2 = cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2
                text = _name(names, cls)
            corners = pixel_box((x1, y1, x2, y2), w, h)
            if corners is None:
                continue
            (x1, y1), (x2, y2) = corners
            colour = COLOURS[cls % len(COLOURS)]
            cv2.rectangle(tile, (x1, y1), (x2, y2), colour, 1)
            cv2.putText(tile, text, (x1, max(y1 - 2, 8)), cv2.FONT_HERSHEY_SIMPLEX, 0.3, colour, 1, cv2.LINE_AA)
        if paths is not None:
            cv2.putText(tile, Path(paths[i]).name[:30], (3, h - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.3, (255, 255, 255), 1, cv2.LINE_AA)
        grid[y0:y0 + h, x0:x0 + w] = tile
    cv2.imwrite(str(out), grid)
    return Path(out)


def _name(names, cls: int) -> str:
    return names[cls] if names and 0 <= cls < len(names) else str(cls)
