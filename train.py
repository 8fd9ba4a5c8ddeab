"""Train a YAML YOLOX model.

The full training loop (optimizer, schedules, EMA, AMP, resume, DDP, logs) arrives with the trainer
issue. Until then this command checks the whole path a training step takes, on the built-in demo
dataset by default: it builds the model from its YAML and prints the layer table, loads and
verifies the data (generating the demo set on first use), runs one augmented batch through the
model and ComputeXLoss, and back-propagates once.

    python train.py --cfg models/yoloxs_rslu.yaml --data data/demo.yaml --hyp data/hyps/hyp.scratch.yolox.yaml
"""
from __future__ import annotations

import argparse
import logging

import torch
import yaml

from models.yolo import Model
from utils.data_config import load_data_config
from utils.datasets import create_dataloader
from utils.loss import ComputeXLoss


def parse_opt(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cfg", default="models/yoloxs_rslu.yaml", help="model YAML")
    parser.add_argument("--data", default="data/demo.yaml", help="dataset YAML")
    parser.add_argument("--hyp", default="data/hyps/hyp.scratch.yolox.yaml", help="hyperparameters YAML")
    parser.add_argument("--img-size", "--imgsz", type=int, default=320, help="train size (pixels)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv=None):
    opt = parse_opt(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.manual_seed(opt.seed)
    data = load_data_config(opt.data)
    hyp = yaml.safe_load(open(opt.hyp))
    model = Model(opt.cfg, nc=data["nc"])
    model.info(opt.img_size)
    loader, dataset = create_dataloader(data["train"], opt.img_size, opt.batch_size, int(model.stride.max()), hyp=hyp,
                                        augment=True, workers=opt.workers, shuffle=True, seed=opt.seed,
                                        nc=data["nc"], prefix="train: ")
    compute_loss = ComputeXLoss(model, hyp)
    images, targets, _, _ = next(iter(loader))
    model.train()
    loss, items = compute_loss(model(images.float()), targets)  # BGR 0-255, as official YOLOX
    loss.backward()
    print(f"one step on {len(images)} images, {len(targets)} boxes: loss {loss.item():.3f} = "
          f"iou {items[0]:.3f} + obj {items[1]:.3f} + cls {items[2]:.3f} + l1 {items[3]:.3f}; "
          f"{int(compute_loss.last_stats['num_fg'])} foreground anchors")
    print("the training loop is not implemented yet (trainer issue): this checked model, data and loss end to end")
    return loss


if __name__ == "__main__":
    main()
