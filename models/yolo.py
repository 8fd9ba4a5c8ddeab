"""Model: a YAML layer list as an nn.Module, with its printed layer table, parameters and GFLOPs.

    python models/yolo.py --cfg models/yoloxs_rslu.yaml      # print the layer table

Checkpoints load through models/weights.py (``load_model``, also reachable as models.yolo.load_model).
"""
from __future__ import annotations

import argparse
import logging

import torch
from torch import nn

from models.common import Conv
from models.fuse import fuse_model
from models.heads import DetectionHead, DetectX
from models.input_norm import input_norm_from
from models.neck import neck_layers
from models.parser import LayerInfo, ModelConfigError, load_yaml_dict, parse_model

__all__ = ["Model", "parse_model", "DetectX", "ModelConfigError"]

LOGGER = logging.getLogger("yolox5.models")
DRY_RUN_SIZE = 256  # input side of the stride-finding dry run; a multiple of every stride up to 256


class Model(nn.Module):
    """A model built from a YAML file or dict: ``Model("models/yoloxs.yaml", ch=3, nc=None)``."""

    def __init__(self, cfg="yoloxs.yaml", ch: int = 3, nc: int | None = None):
        super().__init__()
        self.yaml, self.yaml_source = load_yaml_dict(cfg)
        if nc is not None and nc != self.yaml.get("nc"):
            LOGGER.info(f"Overriding nc={self.yaml.get('nc')} of {self.yaml_source} with nc={nc}")
            self.yaml["nc"] = nc
        self.model, self.save, self.layer_infos = parse_model(self.yaml, ch=ch, source=self.yaml_source)
        self.neck, self._no_neck_why = neck_layers(self.model, self.yaml, self.yaml_source)  # what --teacher distils
        self.save = sorted(set(self.save) | set(self.neck))
        try:  # what the weights expect of a BGR 0-255 image (models/input_norm.py); None: the image as is
            self.input_norm = input_norm_from(self.yaml.get("input"), self.yaml_source)
        except ValueError as e:
            raise ModelConfigError(str(e)) from None
        self.ch = ch
        heads = [m for m in self.model if isinstance(m, DetectionHead)]
        if len(heads) > 1 or (heads and self.model[-1] is not heads[0]):
            raise ModelConfigError(f"{self.yaml_source}: the detection head ({heads[0].type}) must be the last "
                                   f"layer, and the only one")
        self.nc = self.yaml.get("nc")
        names = self.yaml.get("names")
        self.names = list(names) if names else ([str(i) for i in range(self.nc)] if self.nc else [])
        self.stride, self.neck_channels = self._dry_run()
        if self.detect is not None:
            self.detect.stride = self.stride
        self._initialize(self.yaml.get("init", "default"))

    @property
    def detect(self) -> DetectionHead | None:
        """The detection head (always the last layer), or None for a plain feature graph."""
        last = self.model[-1]
        return last if isinstance(last, DetectionHead) else None

    # ---- forward -------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, neck: bool = False):
        """The head's output; with ``neck=True`` (output, neck outputs): one forward that a DDP wrapper
        sees whole, for feature distillation (train.py --teacher)."""
        if not neck:
            return self._run(x)
        return self._run(x, keep=self.neck_layers())

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The head's inputs: every layer but the head (exporters and one-forward evaluation call the
        head's own methods on them)."""
        return self._run(x, stop_at_detect=True)

    def neck_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The neck's outputs, one per level (models/neck.py), computing no layer after the last of them."""
        return self._run(x, keep=self.neck_layers(), stop_after=max(self.neck))[1]

    def neck_layers(self) -> list[int]:
        """The neck output layers (models/neck.py); a clear error for a graph whose neck is unknown."""
        if not self.neck:
            raise ModelConfigError(self._no_neck_why)
        return self.neck

    def _run(self, x, stop_at_detect: bool = False, name_errors: bool = False, keep=None, stop_after=None):
        """The graph on ``x``: the head's output, or its inputs (``stop_at_detect``); with ``keep``, also
        the outputs of those layers, as (output, [kept]), stopping after layer ``stop_after`` if given."""
        if self.input_norm is not None:
            x = self.input_norm(x)
        outputs = []  # outputs[j]: output of layer j when a later layer reads it, else None
        for m in self.model:
            if m.f != m.i - 1:
                x = outputs[m.f] if isinstance(m.f, int) else [x if j == m.i - 1 else outputs[j] for j in m.f]
            if stop_at_detect and m is self.detect:
                break
            if name_errors:
                try:
                    x = m(x)
                except (RuntimeError, TypeError) as e:
                    shapes = [tuple(t.shape) for t in x] if isinstance(x, list) else tuple(x.shape)
                    raise ModelConfigError(f"{self.yaml_source}: layer {m.i} ({m.type}) cannot take inputs of "
                                           f"shape {shapes}: {str(e).splitlines()[0]}") from None
            else:
                x = m(x)
            outputs.append(x if m.i in self.save else None)
            if m.i == stop_after:
                break
        return x if keep is None else (x, [outputs[j] for j in keep])

    @torch.no_grad()
    def _dry_run(self) -> tuple[torch.Tensor, list[int]]:
        """(level strides, channels of the neck outputs) from a dry run in eval mode (BatchNorm statistics
        stay untouched)."""
        was_training = self.training
        self.eval()
        try:
            x = torch.zeros(1, self.ch, DRY_RUN_SIZE, DRY_RUN_SIZE)
            feats, necks = self._run(x, stop_at_detect=True, name_errors=True, keep=self.neck)
        finally:
            self.train(was_training)
        channels = [int(f.shape[1]) for f in necks]
        if self.detect is None:
            feats = feats if isinstance(feats, list) else [feats]
            return torch.tensor([DRY_RUN_SIZE / f.shape[-2] for f in feats]), channels
        try:
            sizes = self.detect.level_sizes(feats)
        except ValueError as e:
            raise ModelConfigError(f"{self.yaml_source}: layer {self.detect.i}: {e}") from None
        return torch.tensor([DRY_RUN_SIZE / h for h, _ in sizes]), channels

    def _initialize(self, init: str) -> None:
        """Conv weights: PyTorch's default (as official YOLOX) or Kaiming-normal for ReLU convs."""
        if init in (None, "default"):
            return
        if init != "kaiming":
            raise ModelConfigError(f"{self.yaml_source}: unknown init {init!r}; known: default, kaiming")
        for m in self.modules():
            if isinstance(m, Conv) and isinstance(m.act, nn.ReLU):
                nn.init.kaiming_normal_(m.conv.weight, mode="fan_out", nonlinearity="relu")

    # ---- utilities -----------------------------------------------------------------------
    def fuse(self) -> "Model":
        """Fold BatchNorm into convs (for inference and export)."""
        fuse_model(self)
        return self

    def info(self, img_size=640, verbose: bool = True) -> dict:
        """Print the layer table, parameters and GFLOPs at ``img_size`` (int or (h, w))."""
        n_params = sum(p.numel() for p in self.parameters())
        gflops = self.gflops(img_size)
        lines = [f"{'':>3}{'from':>26}{'n':>3}{'params':>10}  {'module':<12}{'arguments'}"]
        for info in self.layer_infos:
            lines.append(_table_row(info))
        h, w = (img_size, img_size) if isinstance(img_size, int) else img_size
        lines.append(f"{self.yaml.get('yaml_file', 'model')} summary: {len(self.layer_infos)} layers, "
                     f"{n_params:,} parameters, {gflops:.2f} GFLOPs at {h}x{w}")
        if verbose:
            print("\n".join(lines))
        return {"params": n_params, "gflops": gflops, "table": "\n".join(lines)}

    @torch.no_grad()
    def gflops(self, img_size=640) -> float:
        """GFLOPs of one eval forward, counted by torch.utils.flop_counter (2 FLOPs per multiply-add)."""
        from torch.utils.flop_counter import FlopCounterMode

        h, w = (img_size, img_size) if isinstance(img_size, int) else img_size
        p = next(self.parameters())
        was_training = self.training
        self.eval()
        try:
            with FlopCounterMode(display=False) as counter:
                self(torch.zeros(1, self.ch, h, w, device=p.device, dtype=p.dtype))
        finally:
            self.train(was_training)
        return counter.get_total_flops() / 1e9


def _table_row(info: LayerInfo) -> str:
    return f"{info.index:>3}{str(info.source):>26}{info.number:>3}{info.params:>10,}  {info.module:<12}{info.args}"


def main(argv=None):
    parser = argparse.ArgumentParser(description="Build a YAML model and print its layer table")
    parser.add_argument("--cfg", default="models/yoloxs_rslu.yaml", help="model YAML")
    parser.add_argument("--img-size", "--imgsz", type=int, nargs="+", default=[640], help="h [w] for GFLOPs")
    parser.add_argument("--nc", type=int, default=None, help="override the number of classes")
    opt = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    model = Model(opt.cfg, nc=opt.nc)
    size = opt.img_size[0] if len(opt.img_size) == 1 else tuple(opt.img_size[:2])
    model.info(size)
    return model


def __getattr__(name):
    """models.yolo.load_model and load_pretrained, the documented entry points, live in models/weights.py
    (imported on first use: weights.py builds Models, so it imports this module)."""
    if name in ("load_model", "load_pretrained"):
        from models import weights

        return getattr(weights, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    main()
