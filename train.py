"""Train a YAML YOLOX model, YOLOv5-style.

    python train.py                      # a small model on the built-in demo dataset, CPU, a few minutes
    python train.py --cfg models/yoloxs_rslu.yaml --data coco.yaml --hyp data/hyps/hyp.scratch.yolox.yaml \\
        --weights '' --batch-size 64 --epochs 150 --img-size 640
    python -m torch.distributed.run --nproc_per_node 2 train.py ... --device 0,1    # DDP
    python train.py --resume             # continue the latest run where it stopped
    python train.py --cfg models/damoyolo_t.yaml --hyp data/hyps/hyp.damo.yaml --teacher damoyolo_s_best.pt
"""
from __future__ import annotations

import argparse
import logging
import sys

from utils.cli import non_negative_int, positive_int, run_reporting_user_errors
from utils.config import choices
from utils.quant.calibrate import QAT_RANGES
from utils.quant.fake_quant import SCHEMES
from utils.yaml_io import DATA_DIR, read_mapping

# The demo dataset's defaults for options left unset: a detector that works within 5 minutes on 2 CPU
# cores (README measures it). yoloxn_dense learns faster than yoloxn at the same step time on a CPU; 256 px
# (the images are 320) buys more epochs, which beat 15 at 320 (mAP50 0.58 after 24 against 0.40, same recipe).
DEMO_DEFAULTS = {"cfg": "models/yoloxn_dense.yaml", "epochs": 24, "imgsz": 256, "batch_size": 8,
                 "hyp": "data/hyps/hyp.demo.yaml"}
DEFAULTS = {"cfg": "models/yoloxs.yaml", "epochs": 100, "imgsz": 640, "batch_size": 16,
            "hyp": "data/hyps/hyp.scratch.yolox.yaml"}
QAT_HYP = "data/hyps/hyp.qat.yaml"  # --qat without --hyp: a gentle fine-tune (its header has the measurements)


def parse_opt(argv=None):
    p = argparse.ArgumentParser(description="Train a YAML YOLOX model", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--cfg", default=None, help="model YAML (default: yoloxn on the demo set, yoloxs otherwise)")
    p.add_argument("--weights", default="", help="initial weights: a project checkpoint or an official YOLOX .pth; '' = scratch")
    p.add_argument("--teacher", default="", help="distil the neck outputs of this checkpoint's model (DAMO-YOLO's "
                                                 "channel-wise distillation): any family with the student's strides")
    p.add_argument("--teacher-cfg", default="", help="the teacher's model YAML, for an official YOLOX, EasyCV or "
                                                     "DAMO-YOLO checkpoint (default: the file its keys identify)")
    p.add_argument("--qat", action="store_true", help="quantisation-aware fine-tuning of --weights: BatchNorm folded, "
                                                      "8-bit fake quantisation where --qat-target quantises")
    p.add_argument("--qat-target", default="qdq", choices=sorted(SCHEMES),
                   help="the 8-bit scheme to emulate: " + "; ".join(f"{k}: {v.toolchains}" for k, v in sorted(SCHEMES.items()))
                        + " (the asymmetric rknn grid loses less than the symmetric qdq one: use qdq for TensorRT)")
    p.add_argument("--qat-ranges", default=QAT_RANGES[0], choices=QAT_RANGES,
                   help="activation ranges: minmax observed while training, or percentile: calibrated once on "
                        "training images and held (long-tailed models such as yoloxn)")
    p.add_argument("--data", default="data/demo.yaml", help="dataset YAML")
    p.add_argument("--hyp", default=None, help="hyperparameters YAML (default: hyp.qat.yaml with --qat, else "
                                               "hyp.demo.yaml on the demo set, hyp.scratch.yolox.yaml otherwise)")
    p.add_argument("--epochs", type=positive_int, default=None)
    p.add_argument("--batch-size", type=positive_int, default=None, help="total batch size over all processes")
    p.add_argument("--img-size", "--imgsz", "--img", dest="imgsz", type=positive_int, default=None,
                   help="train and val size (pixels)")
    p.add_argument("--device", default="", help="cpu, 0 or 0,1 (default: CUDA when available)")
    p.add_argument("--workers", type=non_negative_int, default=8, help="data loader workers per process")
    p.add_argument("--cache", nargs="?", const="ram", default=None, choices=["ram", "disk"], help="cache images")
    p.add_argument("--resume", nargs="?", const=True, default=False, help="resume the latest run, or the given last.pt")
    p.add_argument("--project", default="runs/train")
    p.add_argument("--name", default="exp")
    p.add_argument("--exist-ok", action="store_true", help="reuse project/name instead of numbering a new one")
    p.add_argument("--multi-scale", action="store_true", help="random input size (0.75-1.25x) every 10 iterations")
    p.add_argument("--single-cls", action="store_true", help="train every class as one")
    p.add_argument("--cos-lr", action="store_true", help="cosine schedule instead of linear")
    p.add_argument("--optimizer", default=None, choices=choices("optimizer"),
                   help="optimizer (default: the hyp file's 'optimizer', SGD when it has none)")
    p.add_argument("--save-period", type=int, default=-1, help="also save a checkpoint every N epochs")
    p.add_argument("--patience", type=non_negative_int, default=100, help="stop after N epochs without improvement (0: never)")
    p.add_argument("--freeze", nargs="+", type=non_negative_int, default=[0],
                   help="freeze the first N layers, or the listed layers")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--noautoanchor", action="store_true", help="accepted for YOLOv5 command lines; YOLOX is anchor-free")
    p.add_argument("--noval", action="store_true", help="validate only after the last epoch")
    p.add_argument("--nosave", action="store_true", help="save only the final checkpoint")
    p.add_argument("--noplots", action="store_true", help="write no plots")
    p.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm under DDP on CUDA")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="mixed precision (default on): float16 on CUDA, bfloat16 autocast on CPUs with AMX or "
                        "AVX512-BF16 (--amp forces it on other CPUs, where it is slow); --no-amp for float32")
    p.add_argument("--local-rank", "--local_rank", dest="local_rank", type=int, default=-1, help="set by torch.distributed.launch")
    p.add_argument("--verbose", action="store_true", help="show the traceback of errors in the input, not one line")
    opt = p.parse_args(argv)
    if opt.teacher_cfg and not opt.teacher:
        p.error("--teacher-cfg names the model of a --teacher checkpoint; give --teacher too")
    if opt.qat and not (opt.weights or opt.resume):
        p.error("--qat fine-tunes a trained model: give its checkpoint with --weights")
    if opt.qat and opt.teacher:
        p.error("--qat and --teacher together are not supported: distil first, then fine-tune with --qat")
    if opt.qat_ranges != QAT_RANGES[0] and not opt.qat:
        p.error(f"--qat-ranges {opt.qat_ranges} sets the ranges of quantisation-aware training: add --qat")
    if opt.qat and opt.freeze != [0]:
        p.error("--qat trains the folded model as a whole: --freeze is not supported with it")
    if opt.freeze == [0]:
        opt.freeze = []
    return opt


def apply_defaults(opt):
    """Unset options take the demo set's small defaults when training on it, YOLOv5's otherwise; --qat's hyp is
    QAT_HYP on any data."""
    if opt.qat and opt.hyp is None:
        opt.hyp = QAT_HYP
    demo = False
    if not opt.resume:
        try:
            demo = read_mapping(opt.data, "dataset description", bundled=DATA_DIR)[0].get("generate") == "demo"
        except (OSError, ValueError):  # a missing or broken file is reported when the trainer reads it
            demo = False
    for k, v in (DEMO_DEFAULTS if demo else DEFAULTS).items():
        if k == "cfg" and opt.weights:  # the model the checkpoint holds (a project checkpoint carries its YAML)
            continue
        if getattr(opt, k) is None:
            setattr(opt, k, v)
    return opt


def main(argv=None):
    opt = apply_defaults(parse_opt(argv))
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    from utils.devices import dist_context
    from utils.train.trainer import Trainer, prepare_save_dir

    def train():
        ctx = dist_context(opt.local_rank)
        if not opt.resume:
            opt.save_dir = prepare_save_dir(opt, ctx)
        return Trainer(opt).train()

    return run_reporting_user_errors("train.py", train, opt.verbose)


if __name__ == "__main__":
    main()
