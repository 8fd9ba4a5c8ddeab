"""Train a YAML YOLOX model.

The training loop arrives with the trainer issue; until then this command builds the model from
its YAML and prints the layer table, parameters and GFLOPs, so the main job already checks a
model file end to end:

    python train.py --cfg models/yoloxs_rslu.yaml
"""
from __future__ import annotations

import argparse
import logging

from models.yolo import Model


def parse_opt(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cfg", default="models/yoloxs_rslu.yaml", help="model YAML")
    parser.add_argument("--img-size", "--imgsz", type=int, default=640, help="input size for GFLOPs")
    parser.add_argument("--nc", type=int, default=None, help="number of classes (overrides the YAML)")
    return parser.parse_args(argv)


def main(argv=None):
    opt = parse_opt(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    model = Model(opt.cfg, nc=opt.nc)
    model.info(opt.img_size)
    print("training is not implemented yet: this build only checks the model file")
    return model


if __name__ == "__main__":
    main()
