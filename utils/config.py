"""Hyperparameters: a typed table of known keys with defaults; unknown keys are errors with suggestions."""
from __future__ import annotations

import difflib
import logging
from pathlib import Path

import yaml

LOGGER = logging.getLogger("yolox5.train")

# key -> default (the seed's hyp.scratch.yolox.yaml), with the type taken from the default
HYP_DEFAULTS = {
    "lr0": 0.01, "lrf": 0.2, "momentum": 0.937, "weight_decay": 0.0005,
    "warmup_epochs": 3.0, "warmup_momentum": 0.8, "warmup_bias_lr": 0.1,
    "box": 0.05, "cls": 0.5, "cls_pw": 1.0, "obj": 1.0, "obj_pw": 1.0,  # YOLOv5 loss gains: accepted, unused
    "hsv_h": 0.015, "hsv_s": 0.7, "hsv_v": 0.4, "degrees": 0.0, "translate": 0.1, "scale": 0.5,
    "shear": 0.0, "perspective": 0.0, "flipud": 0.0, "fliplr": 0.5, "mosaic": 1.0, "mixup": 0.0,
    "mixup_mode": "yolov5", "mixup_scale": [0.5, 1.5], "mixup_ratio": 0.5, "copy_paste": 0.0,
    "no_aug_epochs": 15, "simota_prior": "center", "iou_loss": "iou",
    # schedule and EMA: YOLOv5's by default; official YOLOX's recipe sets yolox_cos and 0.9998
    "scheduler": "linear", "warmup_quadratic": False, "ema_decay": 0.9999, "nesterov": False,
    "nbs": 64,  # nominal batch: gradients accumulate until a step has seen this many images
    "grad_clip": 0.0,  # max gradient norm, 0 = off (official YOLOX does not clip)
    "optimizer": "SGD",  # SGD, Adam or AdamW (train.py --optimizer overrides it)
}
CHOICES = {"mixup_mode": ("yolov5", "yolox"), "simota_prior": ("center", "box_or_center"),
           "iou_loss": ("iou", "giou"), "scheduler": ("linear", "cos", "yolox_cos"),
           "optimizer": ("SGD", "Adam", "AdamW")}
OPTIONAL = {"box", "cls", "cls_pw", "obj", "obj_pw", "copy_paste", "scheduler", "warmup_quadratic",
            "ema_decay", "nesterov", "nbs", "grad_clip", "optimizer", "simota_prior", "iou_loss", "mixup_mode", "mixup_scale", "mixup_ratio"}


def load_hyp(hyp) -> dict:
    """A hyp file or dict checked against HYP_DEFAULTS: unknown keys and wrong types are errors,
    missing keys are reported by name and take their defaults."""
    source = "hyp"
    if isinstance(hyp, (str, Path)):
        source = str(hyp)
        if not Path(hyp).is_file():
            raise FileNotFoundError(f"hyperparameter file not found: {hyp}")
        hyp = yaml.safe_load(Path(hyp).read_text()) or {}
    if not isinstance(hyp, dict):
        raise ValueError(f"{source}: hyperparameters must be a mapping")
    unknown = [k for k in hyp if k not in HYP_DEFAULTS]
    if unknown:
        hints = []
        for k in unknown:
            close = difflib.get_close_matches(k, HYP_DEFAULTS, n=1)
            hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ValueError(f"{source}: unknown hyperparameter(s) {', '.join(hints)}")
    missing = [k for k in HYP_DEFAULTS if k not in hyp and k not in OPTIONAL]
    if missing:
        LOGGER.warning(f"{source}: missing hyperparameter(s) {', '.join(missing)}; using defaults")
    out = {**HYP_DEFAULTS, **hyp}
    for k, v in out.items():
        default = HYP_DEFAULTS[k]
        if isinstance(default, bool):
            ok = isinstance(v, bool)
        elif isinstance(default, (int, float)):
            ok = isinstance(v, (int, float)) and not isinstance(v, bool)
        else:
            ok = isinstance(v, type(default))
        if not ok:
            raise ValueError(f"{source}: hyperparameter {k!r} must be {type(default).__name__}, got {v!r}")
        if k in CHOICES and v not in CHOICES[k]:
            raise ValueError(f"{source}: hyperparameter {k!r} must be one of {CHOICES[k]}, got {v!r}")
    return out
