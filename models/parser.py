"""parse_model: a YOLOv5-style layer list (YAML dict) -> modules, with errors that name the layer.

Each row is ``[from, number, module, args]``:
  from    an int or list of ints, negative = relative to this row; -1 at row 0 is the image.
  number  repeats: scaled by depth_multiple for blocks that repeat internally (C3), stacked as
          written otherwise (see models/registry.py).
  module  a name from the block table.
  args    YAML literals; the names ``nc`` and ``anchors`` take the file's values, ``None`` is None,
          and a trailing mapping is passed as keyword arguments (e.g. ``{depthwise: true}``).
"""
from __future__ import annotations

import copy
import inspect
import math
from dataclasses import dataclass, field

from torch import nn

from models.activations import KNOWN_ACTIVATIONS, normalize_activation
from models.registry import BlockSpec, known_names, lookup


class ModelConfigError(ValueError):
    """A model YAML that cannot be built; the message names the file and the layer."""


@dataclass
class LayerInfo:
    """One row of the printed layer table."""

    index: int
    source: int | list[int]
    number: int
    module: str
    args: list = field(default_factory=list)
    params: int = 0


def make_divisible(x: float, divisor: int = 8) -> int:
    """Round a channel count up to a multiple of ``divisor`` (YOLOv5's width rule)."""
    return int(math.ceil(x / divisor) * divisor)


def parse_model(cfg: dict, ch: int = 3, source: str = "<dict>"):
    """Build the layers of a model description.

    Returns (layers: nn.Sequential, save: sorted indices whose outputs later rows read,
    infos: [LayerInfo]). Every layer module gets ``.i`` (index) and ``.f`` (from) attributes.
    """
    def fail(msg: str, index: int | None = None):
        where = f"{source}" if index is None else f"{source}: layer {index}"
        raise ModelConfigError(f"{where}: {msg}")

    if not isinstance(cfg, dict):
        fail(f"a model description must be a mapping, got {type(cfg).__name__}")
    rows = _rows(cfg, fail)
    gd = _multiple(cfg, "depth_multiple", fail)
    gw = _multiple(cfg, "width_multiple", fail)
    try:
        default_act = normalize_activation(cfg.get("activation"))
    except ValueError:
        fail(f"unknown activation {cfg.get('activation')!r} in 'activation'; known: {', '.join(KNOWN_ACTIVATIONS)}")
    nc = cfg.get("nc")
    names = {"nc": nc, "anchors": cfg.get("anchors", 1), "None": None}

    channels = [ch]  # channels[j + 1] = output channels of layer j; channels[0] = the image
    layers, save, infos = [], set(), []
    for i, row in enumerate(rows):
        if not isinstance(row, (list, tuple)) or len(row) != 4:
            fail(f"a row must be [from, number, module, args], got {row!r}", i)
        f, n, mname, args = row
        spec = lookup(mname)
        if spec is None:
            fail(f"unknown module {mname!r}; known modules: {', '.join(known_names())}", i)
        sources = _sources(f, i, fail)
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            fail(f"number must be a positive integer, got {n!r}", i)
        if not isinstance(args, (list, tuple)):
            fail(f"args must be a list, got {args!r}", i)
        args, kwargs = _resolve_args(list(args), names, fail, i)
        if nc is None and ("nc" in _names_used(row[3]) or spec.rule == "detect"):
            fail("'nc' (number of classes) is missing from the model description", i)
        in_ch = [channels[j + 1] for j in sources]
        if any(c is None for c in in_ch):
            fail(f"reads from a layer with no feature output (a detect layer): from={f!r}", i)

        n_used = max(round(n * gd), 1) if spec.repeats else n
        module, c2, shown_args = _build(spec, mname, args, kwargs, in_ch, n_used, gw, default_act, fail, i)
        # single-input blocks take a tensor, Concat, multi-level (ASFF) and detect layers a list
        module.i, module.f = i, (sources[0] if spec.rule in ("conv", "same") else sources)
        module.type = mname
        nparams = sum(p.numel() for p in module.parameters())
        infos.append(LayerInfo(i, f, n_used, mname, shown_args, nparams))
        save.update(j for j in sources if j != i - 1 and j >= 0)
        layers.append(module)
        channels.append(c2)
    return nn.Sequential(*layers), sorted(save), infos


def _rows(cfg, fail):
    backbone, head = cfg.get("backbone"), cfg.get("head", [])
    if not isinstance(backbone, list) or not backbone:
        fail("'backbone' must be a non-empty list of [from, number, module, args] rows")
    if head is None:
        head = []
    if not isinstance(head, list):
        fail("'head' must be a list of [from, number, module, args] rows")
    return backbone + head


def _multiple(cfg, key, fail) -> float:
    value = cfg.get(key, 1.0)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        fail(f"'{key}' must be a positive number, got {value!r}")
    return float(value)


def _sources(f, i, fail) -> list[int]:
    """Absolute layer indices of ``from``; -1 at row 0 means the input image (index -1)."""
    raw = [f] if isinstance(f, int) and not isinstance(f, bool) else f
    if not isinstance(raw, (list, tuple)) or not raw or not all(isinstance(x, int) and not isinstance(x, bool) for x in raw):
        fail(f"'from' must be an int or a list of ints, got {f!r}", i)
    out = []
    for x in raw:
        j = x + i if x < 0 else x
        if x >= i:
            fail(f"'from' {x} points forward (to layer {x}); a layer can only read earlier layers", i)
        if j < -1 or (j == -1 and i > 0) or (j == -1 and x != -1):
            fail(f"'from' {x} is out of range: layer {i} has {i} earlier layers", i)
        out.append(j)
    return out


def _names_used(args) -> set:
    if not isinstance(args, (list, tuple)):
        return set()
    return {a for a in args if isinstance(a, str)}


def _resolve_args(args, names, fail, i):
    """Substitute the file-level names; split a trailing mapping off as keyword arguments."""
    kwargs = {}
    if args and isinstance(args[-1], dict):
        kwargs = dict(args.pop())
        if not all(isinstance(k, str) for k in kwargs):
            fail(f"keyword names must be strings, got {list(kwargs)!r}", i)
    resolved = [names[a] if isinstance(a, str) and a in names else a for a in args]
    return resolved, kwargs


def _build(spec: BlockSpec, mname, args, kwargs, in_ch, n, gw, default_act, fail, i):
    """Instantiate one row; returns (module, output channels, args as shown in the table)."""
    shown = [*args, dict(kwargs)] if kwargs else list(args)
    kwargs = dict(kwargs)
    if spec.rule == "conv":
        if len(in_ch) != 1:
            fail(f"{mname} reads one layer, got from with {len(in_ch)} layers", i)
        if not args or isinstance(args[0], bool) or not isinstance(args[0], int) or args[0] < 1:
            fail(f"{mname} args must start with the output channel count, got {args!r}", i)
        c1, c2 = in_ch[0], make_divisible(args[0] * gw, 8)
        call_args = [c1, c2, *args[1:]]
        if spec.repeats:
            call_args.insert(2, n)
    elif spec.rule == "concat":
        call_args = args
        dim = args[0] if args else 1
        if dim in (1, -3):
            c2 = sum(in_ch)
        elif len(set(in_ch)) == 1:
            c2 = in_ch[0]
        else:
            fail(f"Concat along dimension {dim} needs equal channels, got {in_ch}", i)
    elif spec.rule == "levels":
        call_args, c2 = [in_ch, *args], None  # output channels: the module's c2, known once built
    elif spec.rule == "same":
        if len(in_ch) != 1:
            fail(f"{mname} reads one layer, got from with {len(in_ch)} layers", i)
        call_args, c2 = args, in_ch[0]
    else:  # detect
        call_args, c2 = [*args, in_ch], None
        if "width" in inspect.signature(spec.cls).parameters and "width" not in kwargs and len(call_args) < 4:
            kwargs["width"] = gw  # YOLOXHead's hidden channels follow width_multiple, as official YOLOX

    try:
        _fill_default_activation(spec.cls, call_args, kwargs, None if spec.own_act else default_act)
    except ValueError as e:
        fail(str(e), i)
    _check_signature(spec.cls, mname, call_args, kwargs, fail, i)
    try:
        if spec.rule == "conv" and not spec.repeats and n > 1:
            # Stacked copies: the first maps c1 -> c2, the others c2 -> c2.
            later_args = [call_args[1], *call_args[1:]]
            module = nn.Sequential(*(spec.cls(*(later_args if k else call_args), **kwargs) for k in range(n)))
        else:
            module = spec.cls(*call_args, **kwargs)
    except (TypeError, ValueError, RuntimeError) as e:
        fail(f"{mname}{_show(args, kwargs)}: {e}", i)
    if spec.rule == "levels":
        c2 = module.c2
    return module, c2, shown


def _fill_default_activation(cls, call_args, kwargs, default_act):
    """Pass the file-wide default activation to blocks whose row does not choose one (default_act None:
    leave the block's own default); check a chosen one."""
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return
    if "act" not in params:
        return
    pos = list(params).index("act")
    given = call_args[pos] if pos < len(call_args) else kwargs.get("act")
    if (given is None or given is True) and default_act is None:
        if pos < len(call_args):  # an explicit None: the block's own default
            call_args[pos] = params["act"].default
    elif given is None or given is True:
        if pos < len(call_args):
            call_args[pos] = default_act
        else:
            kwargs["act"] = default_act
    elif given is not False:
        normalize_activation(given)  # raises ValueError listing the known names


def _check_signature(cls, mname, call_args, kwargs, fail, i):
    try:
        inspect.signature(cls).bind(*call_args, **kwargs)
    except TypeError as e:
        try:
            sig = str(inspect.signature(cls))
        except (TypeError, ValueError):
            sig = "(...)"
        fail(f"wrong arguments for {mname}{sig}: {e}", i)


def _show(args, kwargs) -> str:
    return f"({', '.join(map(repr, args))}{', ' if args and kwargs else ''}{', '.join(f'{k}={v!r}' for k, v in kwargs.items())})"


def load_yaml_dict(cfg) -> tuple[dict, str]:
    """A model description from a path or a dict; returns (a deep copy, a name for messages).
    A bare file name finds the model files shipped in models/."""
    from pathlib import Path

    from utils.yaml_io import MODELS_DIR, read_mapping

    if isinstance(cfg, dict):
        return copy.deepcopy(cfg), cfg.get("yaml_file", "<dict>")
    if not isinstance(cfg, (str, Path)):
        raise ModelConfigError(f"a model description must be a mapping or a YAML path, got {type(cfg).__name__}")
    d, path = read_mapping(cfg, "model file", bundled=MODELS_DIR, error=ModelConfigError)
    d["yaml_file"] = path.name
    return d, str(path)
