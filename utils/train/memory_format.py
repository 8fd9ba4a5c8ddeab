"""The memory format a model trains in: channels_last on CPU (1.15x faster steps: benchmarks/bench_train.py,
yoloxs at 320), unless the model has a conv whose weight gradient crashes oneDNN in channels_last.

torch 2.13's CPU build aborts the process (heap corruption: "double free or corruption", "free(): invalid
size") in the backward of a 1x1 stride-2 conv with 2 to 15 input channels on inputs of 80 px and more
in channels_last; contiguous tensors, 1 or 16+ input channels, stride 1 and 3x3 kernels are fine
(probed on this machine's 2-core Xeon, 2026-12-06). EasyCV's RepVGG backbone starts with such a conv:
the 1x1 branch of its first, stride-2 block reads the 3-channel image.
"""
from __future__ import annotations

import torch
from torch import nn


def crashes_onednn_in_channels_last(conv: nn.Conv2d) -> bool:
    """A conv whose weight gradient aborts torch 2.13 on CPU in channels_last (see the module doc)."""
    return conv.kernel_size == (1, 1) and max(conv.stride) > 1 and 1 < conv.in_channels < 16


def training_memory_format(model: nn.Module, device: torch.device) -> tuple[torch.memory_format, str]:
    """(memory format, why) for training ``model`` on ``device``; why is empty for the usual choice."""
    if device.type != "cpu":
        return torch.contiguous_format, ""
    hazards = [name for name, m in model.named_modules()
               if isinstance(m, nn.Conv2d) and crashes_onednn_in_channels_last(m)]
    if hazards:
        return torch.contiguous_format, (f"training in the contiguous format, not channels_last: the 1x1 stride-2 conv "
                                         f"{hazards[0]} on few input channels crashes torch's CPU backward there")
    return torch.channels_last, ""
