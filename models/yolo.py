"""Model: a YAML layer list as an nn.Module, and load_model for this project's and official checkpoints.

    python models/yolo.py --cfg models/yoloxs_rslu.yaml      # print the layer table
"""
from __future__ import annotations

import argparse
import copy
import logging
from pathlib import Path

import torch
from torch import nn

from models.common import Conv
from models.fuse import fuse_model
from models.heads.yolox import DetectX
from models.parser import LayerInfo, ModelConfigError, load_yaml_dict, parse_model
from models import yolox_official
from utils.checkpoints import read_checkpoint

__all__ = ["Model", "load_model", "parse_model", "DetectX", "ModelConfigError"]

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
        self.ch = ch
        detects = [m for m in self.model if isinstance(m, DetectX)]
        if len(detects) > 1 or (detects and self.model[-1] is not detects[0]):
            raise ModelConfigError(f"{self.yaml_source}: DetectX must be the last layer, and the only one")
        self.nc = self.yaml.get("nc")
        names = self.yaml.get("names")
        self.names = list(names) if names else ([str(i) for i in range(self.nc)] if self.nc else [])
        self.stride = self._find_strides()
        if self.detect is not None:
            self.detect.stride = self.stride
        self._initialize(self.yaml.get("init", "default"))

    @property
    def detect(self) -> DetectX | None:
        """The DetectX layer (always the last one), or None for a plain feature graph."""
        last = self.model[-1]
        return last if isinstance(last, DetectX) else None

    # ---- forward -------------------------------------------------------------------------
    def forward(self, x: torch.Tensor):
        return self._run(x)

    def _run(self, x, stop_at_detect: bool = False, name_errors: bool = False):
        outputs = []  # outputs[j]: output of layer j when a later layer reads it, else None
        for m in self.model:
            if m.f != m.i - 1:
                x = outputs[m.f] if isinstance(m.f, int) else [x if j == m.i - 1 else outputs[j] for j in m.f]
            if stop_at_detect and m is self.detect:
                return x
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
        return x

    @torch.no_grad()
    def _find_strides(self) -> torch.Tensor:
        """Level strides from a dry run in eval mode (BatchNorm statistics stay untouched)."""
        was_training = self.training
        self.eval()
        try:
            x = torch.zeros(1, self.ch, DRY_RUN_SIZE, DRY_RUN_SIZE)
            feats = self._run(x, stop_at_detect=True, name_errors=True)
        finally:
            self.train(was_training)
        if self.detect is None:
            feats = feats if isinstance(feats, list) else [feats]
            return torch.tensor([DRY_RUN_SIZE / f.shape[-2] for f in feats])
        try:
            sizes = self.detect.level_sizes(feats)
        except ValueError as e:
            raise ModelConfigError(f"{self.yaml_source}: layer {self.detect.i}: {e}") from None
        return torch.tensor([DRY_RUN_SIZE / h for h, _ in sizes])

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


def load_model(weights, cfg=None, device="cpu", nc: int | None = None) -> Model:
    """A model in eval mode from this project's checkpoint or an official YOLOX checkpoint.

    Project checkpoints carry their YAML; the EMA weights are used when present. Official YOLOX
    checkpoints (``{'model': state_dict}``) load onto ``cfg`` or, without one, onto the bundled
    model file their shapes identify. Mismatches fail with the missing and unexpected keys and
    the shape differences listed.
    """
    ckpt = read_checkpoint(weights)
    state = ckpt.get("ema") or ckpt.get("model")
    shown_names = {}
    if not isinstance(state, dict):
        raise ValueError(f"{weights}: no 'model' state_dict in the checkpoint (keys: {sorted(ckpt)})")
    if yolox_official.is_official(state):
        state = yolox_official.as_float_tensors(state)
        if cfg is None:
            cfg, official_nc = yolox_official.infer_official_cfg(state)
            LOGGER.info(f"{weights}: official YOLOX checkpoint, building {cfg} (nc={official_nc})")
            nc = nc or official_nc
        converted = yolox_official.official_to_project(state)
        shown_names = dict(zip(converted, state))  # name unexpected keys as the checkpoint spells them
        state = converted
        model = Model(cfg, nc=nc if nc is not None else _nc_of(state))
    else:
        model_cfg = cfg if cfg is not None else ckpt.get("yaml")
        if model_cfg is None:
            raise ValueError(f"{weights}: the checkpoint holds no model YAML; pass cfg")
        model = Model(model_cfg, nc=nc if nc is not None else _nc_of(state))
        if ckpt.get("names"):
            model.names = list(ckpt["names"])
    load_state_dict_checked(model, state, source=str(weights), shown_names=shown_names)
    model.official = bool(shown_names)  # official weights expect official preprocessing (top-left letterbox)
    return model.to(device).eval()


def _nc_of(state: dict) -> int | None:
    """Classes of a state_dict, from the first cls prediction conv of its DetectX layer."""
    for key, value in state.items():
        if key.endswith("cls_preds.0.weight"):
            return int(value.shape[0])
    return None


def load_state_dict_checked(model: nn.Module, state: dict, source: str = "checkpoint",
                            shown_names: dict | None = None) -> None:
    """load_state_dict(strict) with one message listing missing, unexpected and mis-shaped keys.

    ``shown_names`` maps converted keys back to the checkpoint's own spelling for the message.
    """
    own = model.state_dict()
    shown_names = shown_names or {}
    missing = [k for k in own if k not in state]
    unexpected = [shown_names.get(k, k) for k in state if k not in own]
    mismatched = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                  for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or mismatched:
        def block(title, items):
            shown = items[:20] + ([f"... and {len(items) - 20} more"] if len(items) > 20 else [])
            return f"\n  {title} ({len(items)}):\n    " + "\n    ".join(shown) if items else ""
        raise ValueError(f"{source} does not fit the model {getattr(model, 'yaml_source', '')}:"
                         + block("missing keys", missing) + block("unexpected keys", unexpected)
                         + block("shape mismatches", mismatched))
    model.load_state_dict(state, strict=True)


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


if __name__ == "__main__":
    main()


def load_pretrained(model: Model, weights, log=LOGGER) -> None:
    """Start ``model`` from a checkpoint (this project's or official YOLOX's) for training.

    Weights load by name; when only the class predictions differ in shape (another nc), those are
    left freshly initialised, with a message. Any other mismatch is an error listing the keys.
    """
    ckpt = read_checkpoint(weights)
    state = ckpt.get("ema") or ckpt.get("model")
    if not isinstance(state, dict):
        raise ValueError(f"{weights}: no 'model' state_dict in the checkpoint (keys: {sorted(ckpt)})")
    if yolox_official.is_official(state):
        state = yolox_official.official_to_project(yolox_official.as_float_tensors(state))
    own = model.state_dict()
    cls_keys = [k for k in state if ".cls_preds." in k and k in own and state[k].shape != own[k].shape]
    if cls_keys:
        log.info(f"{weights}: class predictions re-initialised for nc={model.nc} "
                 f"(checkpoint has nc={state[cls_keys[0]].shape[0]}); every other weight transferred")
        state = {k: (own[k] if k in cls_keys else v) for k, v in state.items()}
    load_state_dict_checked(model, {k: v.to(own[k].dtype) if k in own and v.is_floating_point() else v
                                    for k, v in state.items()}, source=str(weights))
