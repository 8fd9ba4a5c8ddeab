"""Training-step throughput: this project's step (forward, ComputeXLoss, backward, SGD step) against
official YOLOX's (model(images, targets) -> loss, backward, step) on the same model size and batch.

    python -m benchmarks.bench_train                      # yoloxs and yoloxs_rslu at 320 and 640, batch 4
    python -m benchmarks.bench_train --models yoloxs --sizes 320 --batch 8 --gts 20

Images are random, targets realistic (sides 8..300 px at 640, scaled with the size), both sides
see identical tensors. Official YOLOX's step uses the box_or_center assigner of yolox 0.3.0, ours
runs its default (center); the ratio column is official time / ours (> 1: ours is faster).

Ours is timed as the trainer runs it on a CPU: channels_last, float32 ("fp32"), and with bfloat16
autocast ("bf16": the trainer's default where the CPU has native bf16, AMX or AVX512-BF16; the loss
stays float32). Official YOLOX trains in float32 on a CPU (its --fp16 is CUDA only). --contiguous
times ours without channels_last.
"""
from __future__ import annotations

import argparse
import os

import torch

from benchmarks import median_seconds
from models.yolo import Model
from tests.reference import OFFICIAL_SIZES, build_official, official_yolox
from utils.devices import cpu_has_native_bf16
from utils.loss import ComputeXLoss
from utils.optim import build_optimizer


def make_targets(batch, gts, size, nc, seed=0):
    """(ours [M, 6] normalised, official [B, gts, 5] pixels)."""
    g = torch.Generator().manual_seed(seed)
    sides = (8 + torch.rand(batch, gts, 2, generator=g) * 292) * size / 640
    centres = sides / 2 + torch.rand(batch, gts, 2, generator=g) * (size - sides)
    cls = torch.randint(0, nc, (batch, gts, 1), generator=g).float()
    official = torch.cat((cls, centres, sides), 2)
    img = torch.arange(batch).float()[:, None, None].expand(batch, gts, 1)
    ours = torch.cat((img, cls, centres / size, sides / size), 2).reshape(-1, 6)
    return ours, official


def ours_step(name, images, targets, channels_last=False, bf16=False):
    model = Model(f"models/{name}.yaml").train()
    if channels_last:  # what the trainer does on CPU
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    loss_fn = ComputeXLoss(model, {})
    opt = build_optimizer(model, 0.01, 0.9, 5e-4)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            preds = model(images)
        loss, _ = loss_fn(preds, targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return step


def official_step(name, images, targets):
    model = build_official(name).train()
    opt = build_optimizer(model, 0.01, 0.9, 5e-4)

    def step():
        out = model(images, targets)
        opt.zero_grad()
        out["total_loss"].backward()
        opt.step()
    return step


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["yoloxs", "yoloxs_rslu"])
    p.add_argument("--sizes", nargs="+", type=int, default=[320, 640])
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--gts", type=int, default=20)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--skip-official", action="store_true")
    p.add_argument("--contiguous", action="store_true", help="time ours without channels_last (the trainer's CPU default)")
    opt = p.parse_args(argv)
    if opt.threads:
        torch.set_num_threads(opt.threads)
    have_official = not opt.skip_official and official_yolox() is not None
    precisions = ["fp32", "bf16"] if cpu_has_native_bf16() else ["fp32"]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {opt.batch}, {opt.gts} GTs/image, "
          f"runs {opt.runs}; load average {os.getloadavg()[0]:.2f}")
    rows = []
    for size in opt.sizes:
        images = torch.rand(opt.batch, 3, size, size) * 255
        ours_t, official_t = make_targets(opt.batch, opt.gts, size, 80)
        for name in opt.models:
            t_off = None
            if have_official and name in OFFICIAL_SIZES:
                torch.manual_seed(0)
                t_off = median_seconds(official_step(name, images, official_t), opt.runs)
                print(f"  {name} @{size}: official {t_off:.3f} s")
            for precision in precisions:
                torch.manual_seed(0)
                t_ours = median_seconds(ours_step(name, images, ours_t, channels_last=not opt.contiguous,
                                              bf16=precision == "bf16"), opt.runs)
                rows.append((name, size, precision, t_ours, t_off))
                print(f"  {name} @{size}: ours {precision} {t_ours:.3f} s")
    print("\n| model | size | batch | ours | ours s/step | ours img/s | official (fp32) s/step | official img/s | ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, size, precision, t_ours, t_off in rows:
        off = f"{t_off:.3f} | {opt.batch / t_off:.2f} | {t_off / t_ours:.2f}" if t_off else "- | - | -"
        print(f"| {name} | {size} | {opt.batch} | {precision} | {t_ours:.3f} | {opt.batch / t_ours:.2f} | {off} |")
    print(f"\nratio = official s/step / ours (> 1: ours is faster); load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
