"""Training-step throughput: this project's step (forward, ComputeXLoss, backward, SGD step) against
official YOLOX's (model(images, targets) -> loss, backward, step) on the same model size and batch.

    python -m benchmarks.bench_train                      # yoloxs and yoloxs_rslu at 320 and 640, batch 4
    python -m benchmarks.bench_train --models yoloxs --sizes 320 --batch 8 --gts 20

Images are random, targets realistic (sides 8..300 px at 640, scaled with the size), both sides
see identical tensors. Official YOLOX's step uses the box_or_center assigner of yolox 0.3.0, ours
runs its default (center); the ratio column is official time / ours (> 1: ours is faster).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from models.yolo import Model
from tests.reference import build_official, official_yolox
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


def time_steps(step, runs, warmup=1):
    for _ in range(warmup):
        step()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def ours_step(name, images, targets, channels_last=False):
    model = Model(f"models/{name}.yaml").train()
    if channels_last:  # what the trainer does on CPU
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    loss_fn = ComputeXLoss(model, {})
    opt = build_optimizer(model, 0.01, 0.9, 5e-4)

    def step():
        loss, _ = loss_fn(model(images), targets)
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
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {opt.batch}, {opt.gts} GTs/image, "
          f"runs {opt.runs}; load average {os.getloadavg()[0]:.2f}")
    rows = []
    for size in opt.sizes:
        images = torch.rand(opt.batch, 3, size, size) * 255
        ours_t, official_t = make_targets(opt.batch, opt.gts, size, 80)
        for name in opt.models:
            torch.manual_seed(0)
            t_ours = time_steps(ours_step(name, images, ours_t, channels_last=not opt.contiguous), opt.runs)
            base = name.replace("_rslu", "")
            t_off = None
            if have_official and base == name:
                torch.manual_seed(0)
                t_off = time_steps(official_step(base, images, official_t), opt.runs)
            rows.append((name, size, t_ours, t_off))
            print(f"  {name} @{size}: ours {t_ours:.3f} s, official {t_off if t_off is None else round(t_off, 3)} s")
    print("\n| model | size | batch | ours s/step | ours img/s | official s/step | official img/s | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for name, size, t_ours, t_off in rows:
        off = f"{t_off:.3f} | {opt.batch / t_off:.2f} | {t_off / t_ours:.2f}" if t_off else "- | - | -"
        print(f"| {name} | {size} | {opt.batch} | {t_ours:.3f} | {opt.batch / t_ours:.2f} | {off} |")
    print(f"\nratio = official s/step / ours (> 1: ours is faster); load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
