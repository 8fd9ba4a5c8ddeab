"""Training-step throughput: this project's step (forward, ComputeXLoss, backward, SGD step) against
official YOLOX's (model(images, targets) -> loss, backward, step) on the same model size and batch.

    python -m benchmarks.bench_train                      # CPU: yoloxs and yoloxs_rslu at 320 and 640, batch 4
    python -m benchmarks.bench_train --models yoloxs --sizes 320 --batch 8 --gts 20
    python -m benchmarks.bench_train --device cuda --batch 16 64 --runs 20
    python -m benchmarks.bench_train --compile            # adds rows with torch.compile'd models

Images are random, targets realistic (sides 8..300 px at 640, scaled with the size), both sides
see identical tensors. Official YOLOX's step uses the box_or_center assigner of yolox 0.3.0, ours
runs its default (center); the ratio column is official time / ours at the same precision
(> 1: ours is faster; ours bf16 on a CPU is compared with official float32, which has no CPU AMP).

Ours is timed as the trainer runs it. On a CPU: channels_last, float32 ("fp32"), and bfloat16
autocast ("bf16", the trainer's default where the CPU has native bf16: AMX or AVX512-BF16); the loss
stays float32. On CUDA: float32, and float16 autocast with a GradScaler (the trainer's default there),
contiguous and channels_last. Official YOLOX runs as its trainer does: float32, and on CUDA with
--fp16 its inputs and targets cast to float16 under autocast with a GradScaler.
"""
from __future__ import annotations

import argparse
import itertools
from dataclasses import dataclass

import torch

from benchmarks import load_average, median_seconds
from models.yolo import Model
from tests.reference import OFFICIAL_SIZES, build_official, official_yolox
from utils.devices import cpu_has_native_bf16
from utils.loss.yolox_loss import ComputeXLoss
from utils.train.optim import build_optimizer

AUTOCAST = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Variant:
    precision: str  # fp32 | bf16 | fp16
    channels_last: bool
    compiled: bool = False

    @property
    def label(self) -> str:
        return self.precision + (" channels_last" if self.channels_last else "") + (" compile" if self.compiled else "")


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


def ours_step(name, images, targets, variant: Variant):
    device = images.device
    model = Model(f"models/{name}.yaml").to(device).train()
    if variant.channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    loss_fn = ComputeXLoss(model, {})
    net = torch.compile(model) if variant.compiled else model
    opt = build_optimizer(model, 0.01, 0.9, 5e-4)
    dtype = AUTOCAST[variant.precision]
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)

    def step():
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            preds = net(images)
        loss, _ = loss_fn(preds, targets)
        opt.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    return step


def official_step(name, images, targets, precision):
    device = images.device
    model = build_official(name).to(device).train()
    opt = build_optimizer(model, 0.01, 0.9, 5e-4)
    fp16 = precision == "fp16"
    scaler = torch.amp.GradScaler(device.type, enabled=fp16)
    if fp16:  # official trainer: inps.to(self.data_type), targets.to(self.data_type)
        images, targets = images.half(), targets.half()

    def step():
        with torch.autocast(device.type, dtype=torch.float16, enabled=fp16):
            out = model(images, targets)
        opt.zero_grad()
        scaler.scale(out["total_loss"]).backward()
        scaler.step(opt)
        scaler.update()
    return step


def variants(device: torch.device, compiled: bool, contiguous: bool) -> tuple[list[Variant], list[str]]:
    """(ours, official precisions) for a device, as each trainer runs there."""
    if device.type == "cuda":
        ours = [Variant("fp32", False), Variant("fp16", False), Variant("fp16", True)]
        official = ["fp32", "fp16"]
    else:
        ours = [Variant("fp32", not contiguous)] + ([Variant("bf16", not contiguous)] if cpu_has_native_bf16() else [])
        official = ["fp32"]
    if compiled:
        ours += [Variant(v.precision, v.channels_last, True) for v in ours]
    return ours, official


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["yoloxs", "yoloxs_rslu"])
    p.add_argument("--sizes", nargs="+", type=int, default=[320, 640])
    p.add_argument("--batch", nargs="+", type=int, default=[4])
    p.add_argument("--gts", nargs="+", type=int, default=[20],
                   help="GTs per image; COCO averages 7.3, a mosaic of 4 about 29, with mixup about twice that")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--compile", action="store_true", help="also time ours under torch.compile (default mode)")
    p.add_argument("--skip-official", action="store_true")
    p.add_argument("--contiguous", action="store_true", help="CPU: time ours without channels_last (the trainer's CPU default)")
    opt = p.parse_args(argv)
    if opt.threads:
        torch.set_num_threads(opt.threads)
    device = torch.device(opt.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # both trainers set it
    have_official = not opt.skip_official and official_yolox() is not None
    ours_variants, official_precisions = variants(device, opt.compile, opt.contiguous)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, {where}, runs {opt.runs}; {load_average()}")
    rows = []
    for size, batch, gts in itertools.product(opt.sizes, opt.batch, opt.gts):
        images = (torch.rand(batch, 3, size, size) * 255).to(device)
        ours_t, official_t = (t.to(device) for t in make_targets(batch, gts, size, 80))
        for name in opt.models:
            t_off = {}
            if have_official and name in OFFICIAL_SIZES:
                for precision in official_precisions:
                    torch.manual_seed(0)
                    t_off[precision] = median_seconds(official_step(name, images, official_t, precision), opt.runs,
                                                      warmup=2, sync=sync)
                    print(f"  {name} @{size} b{batch} {gts} GTs: official {precision} {t_off[precision]:.4f} s", flush=True)
            for v in ours_variants:
                torch.manual_seed(0)
                t = median_seconds(ours_step(name, images, ours_t, v), opt.runs, warmup=2, sync=sync)
                ref = "fp16" if v.precision == "fp16" else "fp32"
                rows.append((name, size, batch, gts, v.label, t, ref, t_off.get(ref)))
                print(f"  {name} @{size} b{batch} {gts} GTs: ours {v.label} {t:.4f} s", flush=True)
    print("\n| model | size | batch | GTs/img | ours | ours s/step | ours img/s | official | official s/step | official img/s | ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, size, batch, gts, label, t, ref, t_ref in rows:
        off = f"{ref} | {t_ref:.4f} | {batch / t_ref:.1f} | {t_ref / t:.2f}" if t_ref else "- | - | - | -"
        print(f"| {name} | {size} | {batch} | {gts} | {label} | {t:.4f} | {batch / t:.1f} | {off} |")
    print(f"\nratio = official s/step / ours (> 1: ours is faster); {load_average()} at the end")


if __name__ == "__main__":
    main()
