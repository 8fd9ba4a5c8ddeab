"""train.py --teacher: a frozen teacher whose neck outputs (models/neck.py) a student learns from.

    teacher = Teacher.load("runs/train/exp/weights/best.pt", None, student, device, memory_format)
    with autocast:
        preds, feats = student(images, neck=True)
        teacher_feats = teacher.features(images)
    loss = task_loss + distill_weight(i, total) * distill(feats, teacher_feats)   # utils/loss/distill.py

Any family's checkpoint teaches (this project's, official YOLOX's, EasyCV's, DAMO-YOLO's, through
models.weights.load_model; ``cfg`` picks the model file of an official or reference checkpoint): it only
needs the student's strides. Channels may differ, the align convs of the distillation map them. The
teacher takes the same BGR 0-255 batch as the student and converts it to the input its weights expect.
It runs in eval mode under no_grad, folded (BatchNorm into convs, RepVGG blocks into one conv), and stops
at its last neck layer: the same features within float rounding for less time per step, which is the
whole cost distillation adds besides the align convs.
"""
from __future__ import annotations

import time

import torch

from models.weights import load_model
from models.yolo import Model


class Teacher:
    """A folded, frozen model whose ``features`` time themselves (``seconds`` over ``calls``)."""

    def __init__(self, model: Model, source: str, device: torch.device, memory_format=torch.contiguous_format):
        self.source = source
        self.params = sum(p.numel() for p in model.parameters())
        self.channels = list(model.neck_channels)
        self.stride = model.stride.clone()
        model.fuse()
        for p in model.parameters():
            p.requires_grad_(False)
        self.model = model.to(device, memory_format=memory_format).eval()
        self.device = device
        self.weight_bytes = sum(t.numel() * t.element_size() for t in self.model.state_dict().values())
        self.seconds, self.calls, self.peak_bytes = 0.0, 0, None

    @classmethod
    def load(cls, weights, cfg, student: Model, device, memory_format=torch.contiguous_format) -> "Teacher":
        """The teacher of ``student`` from a checkpoint; a clear error when its strides differ."""
        try:
            model = load_model(weights, cfg=cfg or None)
        except (OSError, ValueError) as e:  # name the option: --weights reads checkpoints too
            raise type(e)(f"--teacher: {e}") from None
        check_compatible(model, student, weights)
        return cls(model, str(weights), torch.device(device), memory_format)

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The teacher's neck outputs for a batch, [B, C_t, H / s, W / s] per level."""
        cuda = self.device.type == "cuda"
        measure_memory = cuda and self.peak_bytes is None  # once: the first batch has the training size
        if measure_memory:
            torch.cuda.synchronize(self.device)
            before = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        t0 = time.perf_counter()
        self.model.eval()  # a caller's model.train() on a parent never reaches it, but be sure
        feats = self.model.neck_features(images)
        if cuda:  # kernels run asynchronously: wait for them, or the time is only the launch
            torch.cuda.synchronize(self.device)
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        if measure_memory:
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device) - before
        return feats

    def describe(self) -> str:
        """One line for the log: what teaches, its size, and the memory it holds."""
        memory = f"{self.weight_bytes / 2**20:.1f} MiB of weights"
        return (f"teacher {self.source}: {self.params / 1e6:.2f} M parameters ({memory}), strides "
                f"{[int(s) for s in self.stride]}, neck channels {self.channels}; eval mode, no gradients, folded")

    def cost(self, step_seconds: float, steps: int) -> str:
        """The teacher's share of the training time since the last call, then resets its clock."""
        per_step = self.seconds / max(self.calls, 1)
        share = self.seconds / step_seconds if step_seconds > 0 else 0.0
        memory = (f", {self.peak_bytes / 2**20:.0f} MiB peak GPU memory in its forward" if self.peak_bytes is not None
                  else "")
        self.seconds, self.calls = 0.0, 0
        return (f"teacher forward: {per_step * 1e3:.0f} ms per batch, {share:.0%} of the epoch's "
                f"{step_seconds / max(steps, 1) * 1e3:.0f} ms per batch{memory}")


def check_compatible(teacher: Model, student: Model, source) -> None:
    """Feature distillation pairs level with level: the teacher needs the student's strides."""
    student.neck_layers(), teacher.neck_layers()  # both must know their neck outputs
    t, s = [int(x) for x in teacher.stride], [int(x) for x in student.stride]
    if t != s:
        raise ValueError(f"--teacher {source}: its levels have strides {t}, the student's {s}; feature "
                         f"distillation pairs levels of the same stride")
