"""What a model's weights expect of the BGR 0-255 images the loaders and exporters give it.

Official YOLOX and this project's models take the image as it is. Weights trained elsewhere may
expect RGB order and normalised values (EasyCV's YOLOX-PAI: RGB, ImageNet mean and std on 0-255).
A model file says so with a top-level ``input`` key, and the model applies it as its first step,
so val.py, detect.py, the Detector API and every export feed it correctly without being told:

    input: {order: rgb, mean: [123.675, 116.28, 103.53], std: [58.395, 57.12, 57.375]}
"""
from __future__ import annotations

import torch
from torch import nn

ORDERS = ("bgr", "rgb")


class InputNorm(nn.Module):
    """BGR 0-255 [B, 3, H, W] -> the order and (x - mean) / std the weights expect (per channel, in
    the target order). mean and std are buffers outside the state_dict: the model file holds them."""

    def __init__(self, order: str = "bgr", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)):
        super().__init__()
        if order not in ORDERS:
            raise ValueError(f"input order must be one of {ORDERS}, got {order!r}")
        if len(mean) != 3 or len(std) != 3 or any(s <= 0 for s in std):
            raise ValueError(f"input mean and std need 3 values each, std > 0; got mean {mean}, std {std}")
        self.order = order
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.order == "rgb":
            x = x.flip(1)
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)


def input_norm_from(spec, source: str) -> InputNorm | None:
    """The model file's ``input`` mapping as a module, or None when absent; errors name the file."""
    if spec is None:
        return None
    if not isinstance(spec, dict) or set(spec) - {"order", "mean", "std"}:
        raise ValueError(f"{source}: 'input' must be a mapping of order, mean and std, got {spec!r}")
    try:
        return InputNorm(**spec)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{source}: 'input': {e}") from None
