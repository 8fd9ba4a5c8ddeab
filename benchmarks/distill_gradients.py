"""Does train.py --teacher pull the student the way its task does? The norms of the task loss's and the
distillation loss's gradients on the student's parameters, and the cosine between them, on training batches.

    python -m benchmarks.distill_gradients --teacher runs/train/teacher/weights/best.pt        # fresh damoyolo_t
    python -m benchmarks.distill_gradients --teacher T.pt --weights runs/train/exp/weights/last.pt

The batches and the forward are the trainer's (utils/train/trainer.py builds the model, the loader, the teacher and the align
convs from the same options as train.py, in a temporary run directory). --weights loads a checkpoint into the
student, and its align convs too where it holds them (a distilled run's last.pt); without it the student is
the seed's fresh model, as at the first step of a run. Reported per batch: the task loss, the unweighted
distillation loss, both gradient norms and their cosine. A distillation gradient much larger than the task's
and at right angles to it replaces the task's direction rather than adding to it.
"""
from __future__ import annotations

import argparse
import tempfile

import torch

import train
from utils.checkpoints import read_checkpoint
from utils.devices import dist_context
from utils.train.trainer import Trainer, prepare_save_dir


def gradient_agreement(task: torch.Tensor, distill: torch.Tensor, params) -> tuple[float, float, float]:
    """(|grad task|, |grad distill|, cosine) over the parameters both losses reach."""
    params = list(params)
    g_task = torch.autograd.grad(task, params, retain_graph=True, allow_unused=True)
    g_distill = torch.autograd.grad(distill, params, retain_graph=True, allow_unused=True)
    both = [(a.flatten(), b.flatten()) for a, b in zip(g_task, g_distill) if a is not None and b is not None]
    if not both:
        raise ValueError("the two losses reach no parameter in common")
    a = torch.cat([x for x, _ in both])
    b = torch.cat([y for _, y in both])
    return float(a.norm()), float(b.norm()), float(torch.nn.functional.cosine_similarity(a, b, dim=0))


def load_student(trainer: Trainer, weights: str) -> str:
    """The checkpoint's model (the weights the optimizer stepped, not their EMA) into the student; its align
    convs where it has them."""
    ckpt = read_checkpoint(weights)
    trainer.model.load_state_dict(ckpt["model"])
    if ckpt.get("distill"):
        trainer.distill.load_state_dict(ckpt["distill"])
        return f"{weights} (model and align convs)"
    return f"{weights} (model; fresh align convs)"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", required=True, help="teacher checkpoint, as train.py --teacher")
    p.add_argument("--teacher-cfg", default="", help="as train.py --teacher-cfg")
    p.add_argument("--cfg", default="models/damoyolo_t.yaml", help="the student's model file")
    p.add_argument("--weights", default="", help="a student checkpoint (default: the seed's fresh model)")
    p.add_argument("--data", default="data/demo.yaml")
    p.add_argument("--hyp", default="", help="as train.py --hyp")
    p.add_argument("--img-size", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--batches", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    opt = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        args = ["--cfg", opt.cfg, "--data", opt.data, "--teacher", opt.teacher, "--img-size", str(opt.img_size),
                "--batch-size", str(opt.batch_size), "--seed", str(opt.seed), "--workers", "0", "--device", "cpu",
                "--project", tmp, "--noplots"] + (["--teacher-cfg", opt.teacher_cfg] if opt.teacher_cfg else []) \
            + (["--hyp", opt.hyp] if opt.hyp else [])
        run = train.apply_defaults(train.parse_opt(args))
        run.save_dir = prepare_save_dir(run, dist_context(-1))
        trainer = Trainer(run)
        source = load_student(trainer, opt.weights) if opt.weights else f"fresh {opt.cfg} (seed {opt.seed})"
        trainer.model.train()
        params = [q for q in trainer.model.parameters() if q.requires_grad]
        print(f"student {source}, teacher {opt.teacher}, batch {opt.batch_size} at {opt.img_size} px")
        print("| batch | task loss | distill loss | task grad norm | distill grad norm | cosine |\n|---|---|---|---|---|---|")
        for i, (images, targets, _, _) in enumerate(trainer.train_loader):
            if i == opt.batches:
                break
            task, _, distill = trainer.losses(images.float(), targets)
            n_task, n_distill, cos = gradient_agreement(task, distill, params)
            print(f"| {i} | {task.item():.3f} | {distill.item():.3f} | {n_task:.3f} | {n_distill:.3f} | {cos:+.3f} |")


if __name__ == "__main__":
    main()
