"""What train.py --teacher costs per step: a training step of the student alone against the same step with
DAMO-YOLO's channel-wise distillation from a teacher (its forward, the align convs, the KL), in one run.

    python -m benchmarks.bench_distill                                     # damoyolo_t taught by damoyolo_s
    python -m benchmarks.bench_distill --student yoloxn --teacher damoyolo_s --size 256 --batch 8

Random weights (the cost does not depend on them), random images, realistic targets (bench_train's); the
step is the trainer's: forward (the student returns its neck outputs with its predictions), the loss its
head declares, the distillation loss, backward, SGD step, float32 on the CPU. The teacher is prepared as
--teacher prepares it (utils/train/teacher.py: folded, frozen, stopping at its neck). Reported: the median
step time with and without the teacher, the teacher's forward alone, and the peak memory of a step above
the built models (RSS on the CPU, allocator peak on CUDA: benchmarks/bench_loss.py's PeakMemory).
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from benchmarks import load_average, median_seconds
from benchmarks.bench_loss import PeakMemory
from benchmarks.bench_train import make_targets
from models.yolo import Model
from utils.checkpoints import save_checkpoint
from utils.loss import build_loss
from utils.loss.distill import ChannelDistillation
from utils.train.optim import build_optimizer
from utils.train.teacher import Teacher


def student_step(student, images, targets, teacher: Teacher | None):
    loss_fn = build_loss(student, {})
    distill = ChannelDistillation(student.neck_channels, teacher.channels) if teacher else None
    opt = build_optimizer(torch.nn.ModuleList([student, distill]) if distill else student, 0.01, 0.9, 5e-4)

    def step():
        if teacher is None:
            loss, _ = loss_fn(student(images), targets)
        else:
            preds, feats = student(images, neck=True)
            loss, _ = loss_fn(preds, targets)
            loss = loss + distill(feats, teacher.features(images))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return step


def peak_mib(fn, device) -> float:
    peak = PeakMemory(device)
    peak.start()
    fn()
    return peak.extra_mib()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--student", default="damoyolo_t")
    p.add_argument("--teacher", default="damoyolo_s")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--gts", type=int, default=10)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu")
    opt = p.parse_args(argv)
    if opt.threads:
        torch.set_num_threads(opt.threads)
    device = torch.device(opt.device)
    torch.manual_seed(0)
    student = Model(f"models/{opt.student}.yaml", nc=8).to(device).train()
    with tempfile.TemporaryDirectory() as tmp:
        source = Model(f"models/{opt.teacher}.yaml", nc=8)
        ckpt = save_checkpoint(Path(tmp) / "teacher.pt", {"model": source.state_dict(), "yaml": source.yaml})
        teacher = Teacher.load(ckpt, None, student, device)
    images = torch.rand(opt.batch, 3, opt.size, opt.size, device=device) * 255
    targets = make_targets(opt.batch, opt.gts, opt.size, 8)[0].to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    print(f"{opt.student} taught by {opt.teacher}, batch {opt.batch} at {opt.size} px, {device}, "
          f"{torch.get_num_threads()} threads, median of {opt.runs}; {load_average()}")
    plain = student_step(student, images, targets, None)
    distilled = student_step(student, images, targets, teacher)
    rows = [("student step", plain), ("student step + distillation", distilled),
            ("teacher forward alone", lambda: teacher.features(images))]
    times = {}
    print("| step | ms | peak MiB |\n|---|---|---|")
    for name, fn in rows:
        times[name] = median_seconds(fn, opt.runs, warmup=1, sync=sync)
        print(f"| {name} | {times[name] * 1e3:.0f} | {peak_mib(fn, device):.0f} |")
    extra = times["student step + distillation"] / times["student step"] - 1
    print(f"distillation adds {extra:.0%} per step; the teacher's forward is "
          f"{times['teacher forward alone'] / times['student step + distillation']:.0%} of the distilled step; "
          f"{load_average()}")


if __name__ == "__main__":
    main()
