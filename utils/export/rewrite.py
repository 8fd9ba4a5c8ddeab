"""Export-time rewrites of a model into an equivalent, NPU-friendlier one.

    model = prepare_for_export(model, fuse=True, focus_conv="s2d")   # a fused copy, Focus as convs

Focus slices the input four ways with stride 2 and concatenates (strided Slice + Concat, which
several NPU converters handle badly: ncnn needs a hand-written layer, ACUITY and RKNN fall back to
the CPU). Two equivalent convolutions replace it:

- ``s2d``: space-to-depth as a fixed 2x2 stride-2 conv with one-hot weights (3 -> 12 channels, in
  Focus's channel order), followed by Focus's own conv. Every output is one input pixel times 1.0,
  so the result is bit-identical to Focus.
- ``fold``: space-to-depth folded into Focus's conv: a k x k stride-s conv on the 4C-channel
  half-resolution map equals a 2k x 2k stride-2s conv (padding 2p) on the input, weight
  ``W'[o, c, 2i + dy, 2j + dx] = W[o, q(dy, dx) * C + c, i, j]``. One conv (6x6 stride 2 for
  YOLOX's 3x3 Focus conv), same outputs up to float summation order (~1e-5).

Nothing here changes the model it is given: ``prepare_for_export`` works on a deep copy.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from models.common import Focus

FOCUS_MODES = ("s2d", "fold")
# Focus's channel blocks in order (dy, dx): top-left, bottom-left, top-right, bottom-right.
FOCUS_ORDER = ((0, 0), (1, 0), (0, 1), (1, 1))


def space_to_depth_conv(c: int) -> nn.Conv2d:
    """A 2x2 stride-2 conv, c -> 4c channels, computing Focus's space-to-depth exactly.

    Output channel q * c + k is input channel k at offset FOCUS_ORDER[q] of every 2x2 cell.
    """
    conv = nn.Conv2d(c, 4 * c, kernel_size=2, stride=2, bias=False)
    with torch.no_grad():
        conv.weight.zero_()  # [4c, c, 2, 2]
        for q, (dy, dx) in enumerate(FOCUS_ORDER):
            for k in range(c):
                conv.weight[q * c + k, k, dy, dx] = 1.0
    conv.weight.requires_grad_(False)
    return conv


def fold_space_to_depth(conv: nn.Conv2d) -> nn.Conv2d:
    """The 2k x 2k stride-2s conv on the full-resolution input equal to ``conv`` after space-to-depth.

    conv: k x k, stride s, padding p, on 4C channels in Focus's order; groups and dilation must be 1.
    """
    if conv.groups != 1 or conv.dilation != (1, 1):
        raise ValueError(f"--focus-conv fold needs a plain Focus conv (groups 1, dilation 1), got groups="
                         f"{conv.groups}, dilation={conv.dilation}; use --focus-conv s2d")
    if conv.in_channels % 4:
        raise ValueError(f"a Focus conv takes 4 * C input channels, got {conv.in_channels}")
    c = conv.in_channels // 4
    (kh, kw), (sh, sw), (ph, pw) = conv.kernel_size, conv.stride, conv.padding
    folded = nn.Conv2d(c, conv.out_channels, (2 * kh, 2 * kw), (2 * sh, 2 * sw), (2 * ph, 2 * pw),
                       bias=conv.bias is not None).to(conv.weight.device, conv.weight.dtype)
    with torch.no_grad():
        w = folded.weight  # [out, c, 2kh, 2kw]
        for q, (dy, dx) in enumerate(FOCUS_ORDER):
            w[:, :, dy::2, dx::2] = conv.weight[:, q * c:(q + 1) * c]  # [out, c, kh, kw]
        if conv.bias is not None:
            folded.bias.copy_(conv.bias)
    return folded


class FocusConv(nn.Module):
    """Focus computed with convolutions only; built from a Focus layer, equal outputs (see module doc)."""

    def __init__(self, focus: Focus, mode: str = "s2d"):
        super().__init__()
        if mode not in FOCUS_MODES:
            raise ValueError(f"focus_conv must be one of {FOCUS_MODES}, got {mode!r}")
        self.mode = mode
        self.conv = copy.deepcopy(focus.conv)  # models.common.Conv: conv, bn, act
        c = self.conv.conv.in_channels // 4
        if mode == "s2d":
            self.space_to_depth = space_to_depth_conv(c).to(self.conv.conv.weight.device, self.conv.conv.weight.dtype)
        else:
            self.space_to_depth = nn.Identity()
            self.conv.conv = fold_space_to_depth(self.conv.conv)
        for attr in ("i", "f", "type", "np"):  # the parser's bookkeeping on every layer
            if hasattr(focus, attr):
                setattr(self, attr, getattr(focus, attr))

    def forward(self, x):
        return self.conv(self.space_to_depth(x))


def replace_focus(model: nn.Module, mode: str) -> int:
    """Replace every Focus in ``model`` (in place) by an equal FocusConv; returns how many."""
    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, Focus):
                setattr(parent, name, FocusConv(child, mode))
                count += 1
    return count


def prepare_for_export(model: nn.Module, fuse: bool = False, focus_conv: str | None = None) -> nn.Module:
    """An eval-mode deep copy of ``model``: BatchNorm folded when ``fuse``, Focus rewritten when ``focus_conv``.

    Activations stay torch's own modules: nn.SiLU exports as Sigmoid + Mul at every opset (>= 9),
    so no export-friendly SiLU replacement is needed (official YOLOX swaps one in for old exporters).
    """
    model = copy.deepcopy(model).eval()
    if fuse:
        model.fuse()
    if focus_conv:
        replace_focus(model, focus_conv)  # after fusing: the fold takes the fused conv and its bias
    for p in model.parameters():
        p.requires_grad_(False)
    return model
