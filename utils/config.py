"""Hyperparameters: one typed table of every hyp key, its default, its allowed values and who reads it.

The data pipeline, the loss, the assigner, the optimiser, the schedule and the trainer take their keys
through this table, so a default or an allowed value is written here and nowhere else:

    hyp = load_hyp("data/hyps/hyp.scratch.yolox.yaml")   # a file: complete, checked, missing keys named
    hyp = with_defaults({"mosaic": 0.5})                   # a partial dict from code: checked, defaults added
    check_value("simota_prior", prior)                     # one value against its allowed set

Unknown keys are errors with a close-match suggestion (as ultralytics' cfg checks), a value of the
wrong type or outside the allowed set is an error naming the key. The default fixes the type: a
numeric key takes any number, a bool key true/false, a string key a string, a list key a list.
"""
from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass
from pathlib import Path

from utils.yaml_io import HYPS_DIR, read_mapping

LOGGER = logging.getLogger("yolox5.train")


@dataclass(frozen=True)
class Hyp:
    """One hyperparameter: its default (which also fixes its type), who reads it, what it means."""

    default: object
    reader: str               # optim, schedule, ema, train, augment, loss, assign; "yolov5" = accepted, unused
    help: str
    choices: tuple = ()       # the allowed values; empty = any value of the default's type
    warn_missing: bool = True  # a hyp file without it gets a warning (False for keys added after YOLOv5's files)


# Defaults are the seed's hyp.scratch.yolox.yaml (YOLOv5's recipe for YOLOX) unless said otherwise.
HYPS: dict[str, Hyp] = {
    # optimiser and schedule
    "lr0": Hyp(0.01, "optim", "initial learning rate, applied to the mean gradient of nbs images"),
    "lrf": Hyp(0.2, "schedule", "final learning rate as a fraction of lr0"),
    "momentum": Hyp(0.937, "optim", "SGD momentum (beta1 for Adam and AdamW)"),
    "weight_decay": Hyp(0.0005, "optim", "weight decay of conv and linear weights, per nbs images"),
    "nesterov": Hyp(False, "optim", "Nesterov momentum (official YOLOX's recipe: true)", warn_missing=False),
    "optimizer": Hyp("SGD", "optim", "SGD, Adam or AdamW (train.py --optimizer overrides it)",
                     ("SGD", "Adam", "AdamW"), warn_missing=False),
    "nbs": Hyp(64, "train", "nominal batch: gradients accumulate until a step has seen this many images",
               warn_missing=False),
    "grad_clip": Hyp(0.0, "train", "max gradient norm, 0 = off (official YOLOX does not clip)", warn_missing=False),
    "warmup_epochs": Hyp(3.0, "schedule", "warm-up epochs (fractions allowed; at least 100 iterations)"),
    "warmup_momentum": Hyp(0.8, "schedule", "momentum at the start of warm-up"),
    "warmup_bias_lr": Hyp(0.1, "schedule", "bias learning rate at the start of warm-up"),
    "warmup_quadratic": Hyp(False, "schedule", "official YOLOX's warm-up lr * (iter / warmup_iters) ** 2 from 0",
                            warn_missing=False),
    "scheduler": Hyp("linear", "schedule", "linear (YOLOv5), cos, or yolox_cos (official YOLOX's warm cosine)",
                     ("linear", "cos", "yolox_cos"), warn_missing=False),
    "ema_decay": Hyp(0.9999, "ema", "EMA decay (YOLOv5's; official YOLOX's recipe: 0.9998)", warn_missing=False),
    "no_aug_epochs": Hyp(15, "train", "last epochs without mosaic and mixup, with the L1 loss on"),
    "distill_weight": Hyp(1.0, "train", "--teacher: distillation weight at the first iteration, decaying by cosine to 0.1 "
                          "of it at the last (DAMO's code: 1.0; its paper found 0.5 better than larger weights)",
                          warn_missing=False),
    "distill_ramp_epochs": Hyp(0.0, "train", "--teacher: epochs over which the distillation weight ramps in linearly "
                               "from 0 (DAMO's code: 0, no ramp)", warn_missing=False),
    # augmentation
    "hsv_h": Hyp(0.015, "augment", "HSV hue gain (fraction)"),
    "hsv_s": Hyp(0.7, "augment", "HSV saturation gain (fraction)"),
    "hsv_v": Hyp(0.4, "augment", "HSV value gain (fraction)"),
    "degrees": Hyp(0.0, "augment", "rotation (+/- degrees)"),
    "translate": Hyp(0.1, "augment", "translation (+/- fraction)"),
    "scale": Hyp(0.5, "augment", "scale gain: U(1 - scale, 1 + scale)"),
    "shear": Hyp(0.0, "augment", "shear (+/- degrees)"),
    "perspective": Hyp(0.0, "augment", "perspective (+/- fraction), 0-0.001"),
    "flipud": Hyp(0.0, "augment", "up-down flip probability"),
    "fliplr": Hyp(0.5, "augment", "left-right flip probability"),
    "mosaic": Hyp(1.0, "augment", "mosaic probability"),
    "mixup": Hyp(0.0, "augment", "mixup probability"),
    "mixup_mode": Hyp("yolov5", "augment", "yolov5: blend two mosaics; yolox: official YOLOX's scale-jittered paste",
                      ("yolov5", "yolox"), warn_missing=False),
    "partner_batches": Hyp(0, "augment", "mosaic and mixup take their other images from the last N batches this "
                           "loader process built, kept decoded: faster, but 0.06 mAP50 lower on the demo (README); "
                           "0: uniform over the data set, as YOLOv5 (utils/data/partner_pool.py)", warn_missing=False),
    "mixup_scale": Hyp([0.5, 1.5], "augment", "mixup_mode yolox: scale jitter of the pasted image",
                       warn_missing=False),
    "mixup_ratio": Hyp(0.5, "augment", "mixup_mode yolox: weight of the pasted image", warn_missing=False),
    # loss and assignment
    "simota_prior": Hyp("center", "assign", "SimOTA candidates: center (official YOLOX today) or box_or_center "
                        "(official 2021-2022, yolox 0.3.0)", ("center", "box_or_center"), warn_missing=False),
    "iou_loss": Hyp("iou", "loss", "box loss (utils/loss/box_losses.py): iou (1 - IoU^2, official YOLOX), giou "
                    "(official), siou, diou, ciou, eiou (as EasyCV), easycv_giou (EasyCV's variant, to reproduce it)",
                    ("iou", "giou", "siou", "diou", "ciou", "eiou", "easycv_giou"), warn_missing=False),
    # YOLOv5 keys that YOLOv5 hyp files carry: accepted so those files load, read by nothing here
    "box": Hyp(0.05, "yolov5", "YOLOv5 box loss gain (unused)", warn_missing=False),
    "cls": Hyp(0.5, "yolov5", "YOLOv5 class loss gain (unused)", warn_missing=False),
    "cls_pw": Hyp(1.0, "yolov5", "YOLOv5 class BCE positive weight (unused)", warn_missing=False),
    "obj": Hyp(1.0, "yolov5", "YOLOv5 objectness loss gain (unused)", warn_missing=False),
    "obj_pw": Hyp(1.0, "yolov5", "YOLOv5 objectness BCE positive weight (unused)", warn_missing=False),
    "copy_paste": Hyp(0.0, "yolov5", "segment copy-paste probability (unused: needs segment labels)",
                      warn_missing=False),
}


def defaults(reader: str | None = None) -> dict:
    """{key: default} of every hyperparameter, or of those ``reader`` reads (fresh copies of lists)."""
    return {k: list(h.default) if isinstance(h.default, list) else h.default
            for k, h in HYPS.items() if reader is None or h.reader == reader}


def choices(key: str) -> tuple:
    """The allowed values of ``key`` (empty when any value of its type is allowed)."""
    return HYPS[key].choices


def check_value(key: str, value, source: str = "hyp") -> None:
    """Raise ValueError naming ``source`` and ``key`` when value has the wrong type or is not allowed."""
    spec = HYPS[key]
    default = spec.default
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, (int, float)):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise ValueError(f"{source}: hyperparameter {key!r} must be {type(default).__name__}, got {value!r}")
    if spec.choices and value not in spec.choices:
        raise ValueError(f"{source}: hyperparameter {key!r} must be one of {spec.choices}, got {value!r}")


def with_defaults(hyp: dict | None, source: str = "hyp") -> dict:
    """A complete hyp dict from a partial one (None = all defaults): every given value checked, the rest
    defaulted silently. For code that takes hyp=None or a few keys (the loader, the loss)."""
    hyp = dict(hyp or {})
    _check_keys(hyp, source)
    for k, v in hyp.items():
        check_value(k, v, source)
    return {**defaults(), **hyp}


def load_hyp(hyp) -> dict:
    """A hyp file (bare names find data/hyps/) or dict, checked: unknown keys and wrong values are errors,
    missing keys are named in one warning (except those added after YOLOv5's files) and defaulted."""
    source = "hyp"
    if isinstance(hyp, (str, Path)):
        hyp, path = read_mapping(hyp, "hyperparameter file", bundled=HYPS_DIR, empty_ok=True)
        source = str(path)
    if not isinstance(hyp, dict):
        raise ValueError(f"{source}: hyperparameters must be a mapping")
    _check_keys(hyp, source)
    missing = [k for k, h in HYPS.items() if k not in hyp and h.warn_missing]
    if missing:
        LOGGER.warning(f"{source}: missing hyperparameter(s) {', '.join(missing)}; using defaults")
    return with_defaults(hyp, source)


def _check_keys(hyp: dict, source: str) -> None:
    unknown = [k for k in hyp if k not in HYPS]
    if unknown:
        hints = []
        for k in unknown:
            close = difflib.get_close_matches(str(k), HYPS, n=1)
            hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ValueError(f"{source}: unknown hyperparameter(s) {', '.join(hints)}")
