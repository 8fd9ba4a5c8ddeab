"""Activation choice per layer.

Every conv gets a fresh activation module built from a name, so one YAML line decides what an
NPU will fuse (Conv+ReLU fuses on most 8-bit NPUs, SiLU = Sigmoid+Mul does not). Nothing here is
process-wide state: the file-wide default travels through the parser as an argument.

Block-level policies: besides the plain names, ``relu_silu`` means "ReLU inside the block, SiLU on
the conv that produces the block's output" (for C3 that is conv3; for a single Conv it is that conv).
"""
from __future__ import annotations

from torch import nn

# name -> factory of a fresh module; torch's own modules so that exporters and fusers know them.
_ACTIVATIONS = {
    "silu": lambda: nn.SiLU(inplace=True),
    "relu": lambda: nn.ReLU(inplace=True),
    "lrelu": lambda: nn.LeakyReLU(0.1, inplace=True),
    "relu6": lambda: nn.ReLU6(inplace=True),
    "hardswish": lambda: nn.Hardswish(inplace=True),
    "sigmoid": lambda: nn.Sigmoid(),
    "identity": lambda: nn.Identity(),
}
# Policies that give different activations to the inner convs and the output conv of a block.
_POLICIES = {
    "relu_silu": ("relu", "silu"),
}
DEFAULT_ACTIVATION = "silu"
KNOWN_ACTIVATIONS = tuple(sorted(_ACTIVATIONS)) + tuple(sorted(_POLICIES))


def normalize_activation(act) -> str:
    """Map the YAML spellings (a name, True/None = the default, False = none) to a known name."""
    if act is None or act is True:
        return DEFAULT_ACTIVATION
    if act is False:
        return "identity"
    if not isinstance(act, str):
        raise ValueError(f"activation must be a name, got {act!r}; known: {', '.join(KNOWN_ACTIVATIONS)}")
    name = act.lower().replace("-", "_")
    name = {"leakyrelu": "lrelu", "swish": "silu", "none": "identity", "linear": "identity"}.get(name, name)
    if name not in _ACTIVATIONS and name not in _POLICIES:
        raise ValueError(f"unknown activation {act!r}; known: {', '.join(KNOWN_ACTIVATIONS)}")
    return name


def split_policy(act) -> tuple[str, str]:
    """(inner, output) activation names of a block: equal unless ``act`` is a policy like relu_silu."""
    name = normalize_activation(act)
    return _POLICIES.get(name, (name, name))


def make_activation(act) -> nn.Module:
    """A fresh activation module; a policy name resolves to its output activation."""
    return _ACTIVATIONS[split_policy(act)[1]]()
