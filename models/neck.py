"""Which layers of a YAML graph are its neck outputs, one per level: what feature distillation pairs between
a student and a teacher (train.py --teacher), as DAMO-YOLO distils its necks' outputs.

The head's inputs are not always those: YOLOX files write the decoupled head's stems and branch convs as
rows, so DetectX reads two maps per level (cls, reg) that start from a shared 1x1 stem; the neck output is
that stem's input (YOLOPAFPN's output in official YOLOX); where the branches part at a layer that other
rows read too, that layer is the neck output. Heads that take one map per level (ZeroHead,
TOODHead: their stems live inside the head) read the neck outputs themselves. A file whose graph fits
neither rule names them: ``neck: [17, 20, 23]``.
"""
from __future__ import annotations

from torch import nn

from models.parser import ModelConfigError


def neck_layers(layers: nn.Sequential, cfg: dict, source: str) -> tuple[list[int], str]:
    """(indices of the neck's output layers, P3 first; why they are unknown when that list is empty). Only
    a malformed ``neck:`` line is an error here: a graph whose neck cannot be told still builds, and
    distilling it fails with the reason."""
    head = layers[-1]
    nl = getattr(head, "nl", None)
    if cfg.get("neck") is not None:
        return _declared(cfg["neck"], len(layers), nl, source), ""
    if nl is None:
        return [], f"{source}: no detection head, so no neck outputs"
    inputs = list(head.f) if isinstance(head.f, list) else [head.f]
    if len(inputs) == nl:
        return inputs, ""
    if len(inputs) == 2 * nl:  # (cls, reg) per level
        try:
            return [_split_input(layers, cls, reg, source) for cls, reg in zip(inputs[::2], inputs[1::2])], ""
        except ValueError as e:
            return [], str(e)
    return [], (f"{source}: cannot tell the neck outputs from the head's {len(inputs)} inputs for {nl} levels; "
                f"name them with a 'neck: [layer, ...]' line")


def _split_input(layers: nn.Sequential, cls: int, reg: int, source: str) -> int:
    """Where a level's cls and reg branches part; when that layer is a 1x1 conv that nothing else reads, it
    is the head's own stem (YOLOX's, one per level), and the neck output is its input."""
    ancestors = set(_chain(layers, cls))
    split = next((j for j in _chain(layers, reg) if j in ancestors), None)
    if split is None:
        raise ValueError(f"{source}: head inputs {cls} and {reg} share no single-input ancestor, so the neck "
                               f"output of their level is unknown; name the neck outputs with 'neck: [layer, ...]'")
    readers = {m.i for m in layers if split in ([m.f] if isinstance(m.f, int) else m.f)}
    branches = (ancestors | set(_chain(layers, reg))) - {split}
    stem_input = layers[split].f
    if readers <= branches and _is_pointwise(layers[split]) and isinstance(stem_input, int) and stem_input >= 0:
        return stem_input
    return split


def _is_pointwise(layer: nn.Module) -> bool:
    conv = getattr(layer, "conv", None)
    return isinstance(conv, nn.Conv2d) and conv.kernel_size == (1, 1) and conv.stride == (1, 1)


def _chain(layers: nn.Sequential, j: int):
    """Layer j, then its input, its input's input, ... while each layer has exactly one input (``f`` holds
    absolute indices; -1 is the image)."""
    while j >= 0:
        yield j
        j = layers[j].f if isinstance(layers[j].f, int) else -1


def _declared(value, n_layers: int, nl: int | None, source: str) -> list[int]:
    if (not isinstance(value, list) or not all(isinstance(j, int) and not isinstance(j, bool) for j in value)
            or not all(0 <= j < n_layers - 1 for j in value)):
        raise ModelConfigError(f"{source}: 'neck' must list layer indices below the head's ({n_layers - 1}), "
                               f"got {value!r}")
    if nl is not None and len(value) != nl:
        raise ModelConfigError(f"{source}: 'neck' lists {len(value)} layers for a head with {nl} levels")
    return value
