"""Checkpoints onto YAML models: this project's checkpoints, official YOLOX's and EasyCV's, for inference
(``load_model``) and as a training start (``load_pretrained``). Loading never unpickles code
(utils/checkpoints.read_checkpoint: ``torch.load(..., weights_only=True)``); a checkpoint that does not
fit the model fails with the missing, unexpected and mis-shaped keys listed."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from models import damo, easycv, yolox_official
from models.input_norm import input_norm_from
from models.parser import load_yaml_dict
from models.repvgg import has_folded_blocks, reparameterize_model
from models.yolo import Model
from utils.checkpoints import read_checkpoint

LOGGER = logging.getLogger("yolox5.models")


def load_model(weights, cfg=None, device="cpu", nc: int | None = None) -> Model:
    """A model in eval mode from this project's checkpoint, an official YOLOX, an EasyCV YOLOX-PAI or a
    DAMO-YOLO one.

    Project checkpoints carry their YAML; the EMA weights are used when present. Official YOLOX
    checkpoints (``{'model': state_dict}``) load onto ``cfg`` or, without one, onto the bundled
    model file their shapes identify; EasyCV's (``{'state_dict': ...}``, training or deployed form)
    likewise, with EasyCV's input (RGB, ImageNet mean and std: models/easycv.py); DAMO-YOLO's
    (``{'model': ...}`` with DAMO's module names) onto models/damoyolo_*.yaml with RGB 0-255 input
    (models/damo.py). Mismatches fail with the missing and unexpected keys and the shape differences listed.
    """
    ckpt = read_checkpoint(weights)
    state = _state_of(ckpt, weights)
    shown_names = {}
    reference = next((r for r in _REFERENCES if r.recognises(state)), None)
    if reference is not None:
        model, state, shown_names = _reference_model(reference, state, weights, cfg, nc)
    elif yolox_official.is_official(state):
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
        if ckpt.get("qat"):  # train.py --qat: the folded model with its fake quantisers
            model = _qat_model(model, ckpt["qat"], weights)
        if ckpt.get("names"):
            model.names = list(ckpt["names"])
    load_state_dict_checked(model, state, source=str(weights), shown_names=shown_names)
    # official YOLOX's, EasyCV's and DAMO's weights expect their preprocessing: the top-left letterbox
    model.official = bool(shown_names)
    return model.to(device).eval()


def _qat_model(model: Model, qat: dict, weights):
    """The QATModel a --qat checkpoint holds the weights of, rebuilt as train.py built it (utils/quant)."""
    from utils.quant.fake_quant import SCHEMES
    from utils.quant.prepare import prepare_qat

    scheme = SCHEMES.get(qat.get("target")) if isinstance(qat, dict) else None
    if scheme is None:
        raise ValueError(f"{weights}: unknown quantisation target {qat!r} (known: {', '.join(sorted(SCHEMES))})")
    size = int(qat.get("imgsz", 640))
    qat_model = prepare_qat(model, scheme, torch.zeros(1, model.ch, size, size))
    qat_model.names = model.names
    return qat_model


@dataclass(frozen=True)
class _Reference:
    """A reference implementation whose checkpoints load by a layout of its module names (models/easycv.py,
    models/damo.py), with the input its weights expect."""

    name: str
    recognises: Callable[[dict], bool]
    layout: Callable[[dict], object]  # ValueError for a checkpoint without a bundled model file
    classes: Callable[[dict], int]
    to_project: Callable[[dict, object, int], dict]
    input: dict
    input_text: str


_REFERENCES = (
    _Reference("EasyCV YOLOX-PAI", easycv.is_easycv, easycv.easycv_layout, lambda state: _nc_of(state),
               lambda state, layout, nc: easycv.easycv_to_project(state, layout), easycv.EASYCV_INPUT,
               "RGB, ImageNet mean and std"),
    _Reference("DAMO-YOLO", damo.is_damo, damo.damo_layout, damo.damo_classes, damo.damo_to_project, damo.DAMO_INPUT,
               "RGB 0-255"),
)


def _reference_model(ref: _Reference, state: dict, weights, cfg, nc) -> tuple[Model, dict, dict]:
    """(model with the reference's input, the state renamed for it, renamed key -> checkpoint key)."""
    state = yolox_official.as_float_tensors(state)
    try:
        layout = ref.layout(state)
    except ValueError as e:
        raise ValueError(f"{weights}: {e}") from None
    cfg = load_yaml_dict(cfg or layout.file)[0]
    nc = nc if nc is not None else ref.classes(state)
    LOGGER.info(f"{weights}: {ref.name} checkpoint, building {cfg.get('yaml_file', 'its model file')} (nc={nc}) "
                f"with its input ({ref.input_text})")
    converted = ref.to_project(state, layout, nc)
    model = Model({**cfg, "input": ref.input}, nc=nc)
    if has_folded_blocks(state):  # RepVGG blocks / RepConvs saved folded: fold ours first
        reparameterize_model(model)
    return model, converted, dict(zip(converted, state))


def _state_of(ckpt: dict, weights) -> dict:
    """The state_dict of a checkpoint: this project's EMA or model weights, official YOLOX's 'model',
    EasyCV's 'state_dict'."""
    state = ckpt.get("ema") or ckpt.get("model") or ckpt.get("state_dict")
    if not isinstance(state, dict):
        raise ValueError(f"{weights}: no 'model' state_dict in the checkpoint (keys: {sorted(ckpt)})")
    return state


def _nc_of(state: dict) -> int | None:
    """Classes of a state_dict, from the first cls prediction conv of its DetectX layer."""
    for key, value in state.items():
        if key.endswith(("cls_preds.0.weight", "gfl_cls.0.weight")):  # DetectX, ZeroHead
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


def checkpoint_cfg(weights):
    """The model a training checkpoint holds, for --weights without --cfg: a project checkpoint's YAML, or the
    bundled file an official YOLOX checkpoint's shapes identify; None when neither says."""
    ckpt = read_checkpoint(weights)
    if ckpt.get("yaml"):
        return ckpt["yaml"]
    state = ckpt.get("model")
    if isinstance(state, dict) and yolox_official.is_official(state):
        return yolox_official.infer_official_cfg(yolox_official.as_float_tensors(state))[0]
    return None


def load_pretrained(model: Model, weights, log=LOGGER) -> None:
    """Start ``model`` from a checkpoint (this project's, official YOLOX's or EasyCV's) for training.

    Weights load by name; when only the class predictions differ in shape (another nc), those are
    left freshly initialised, with a message. Any other mismatch is an error listing the keys. EasyCV's
    weights bring their input (RGB, ImageNet mean and std) into the model and its saved YAML.
    """
    ckpt = read_checkpoint(weights)
    if ckpt.get("qat"):
        raise ValueError(f"{weights}: a --qat checkpoint (BatchNorm folded, fake-quantised): continue it with --resume "
                         f"or export it; --weights starts from a float checkpoint")
    state = _state_of(ckpt, weights)
    if easycv.is_easycv(state):
        state = _easycv_training_start(model, state, weights, log)
    elif yolox_official.is_official(state):
        state = yolox_official.official_to_project(yolox_official.as_float_tensors(state))
    own = model.state_dict()
    cls_keys = [k for k in state if ".cls_preds." in k and k in own and state[k].shape != own[k].shape]
    if cls_keys:
        log.info(f"{weights}: class predictions re-initialised for nc={model.nc} "
                 f"(checkpoint has nc={state[cls_keys[0]].shape[0]}); every other weight transferred")
        state = {k: (own[k] if k in cls_keys else v) for k, v in state.items()}
    load_state_dict_checked(model, {k: v.to(own[k].dtype) if k in own and v.is_floating_point() else v
                                    for k, v in state.items()}, source=str(weights))


def _easycv_training_start(model: Model, state: dict, weights, log) -> dict:
    """EasyCV keys renamed for ``model``, whose input becomes EasyCV's: its weights expect RGB, normalised."""
    if has_folded_blocks(state):
        raise ValueError(f"{weights}: a deployed EasyCV checkpoint (RepVGG blocks folded) cannot train: "
                         "start from the training checkpoint")
    try:
        layout = easycv.easycv_layout(state)
    except ValueError as e:
        raise ValueError(f"{weights}: {e}") from None
    own_input = model.yaml.get("input")
    if own_input is not None and own_input != easycv.EASYCV_INPUT:
        raise ValueError(f"{weights}: EasyCV weights expect the input {easycv.EASYCV_INPUT}, the model file says "
                         f"{own_input}")
    model.yaml["input"] = dict(easycv.EASYCV_INPUT)  # saved with the model: later loads feed it the same way
    model.input_norm = input_norm_from(model.yaml["input"], model.yaml_source)
    log.info(f"{weights}: EasyCV YOLOX-PAI weights ({layout.file}'s layout); the model now takes EasyCV's input "
             "(RGB, ImageNet mean and std) from the usual BGR 0-255 images")
    return easycv.easycv_to_project(yolox_official.as_float_tensors(state), layout)
