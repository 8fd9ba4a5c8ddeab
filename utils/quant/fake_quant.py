"""Fake quantisation as 8-bit toolchains compute it: round to a grid of 256 levels, clamp, map back.

    q = ActivationQuantizer(SCHEMES["rknn"])    # per tensor; observes its range in training mode
    y = q(x)                                    # torch.fake_quantize_per_tensor_affine: exports as Q + DQ
    w_q = quantize_weight(conv.weight)          # symmetric int8 per output channel

The arithmetic is torch's fake_quantize kernels: x -> (clamp(round_half_even(x / s) + z, qmin, qmax) - z) * s,
which is ONNX QuantizeLinear followed by DequantizeLinear, so the TorchScript exporter writes each one
as that pair (opset 13 for the per-channel weights) and onnxruntime runs the same grid. Gradients pass
straight through inside the range and are zero outside it (torch's kernels).

Schemes, one per family of targets (``--qat-target``):
- ``qdq``: symmetric int8 activations (zero point 0), the one grid every QDQ reader takes: TensorRT
  needs it, onnxruntime and OpenVINO run it too;
- ``rknn``: asymmetric int8 activations (a zero point per tensor): rknn-toolkit2's w8a8 scheme, which
  onnxruntime and OpenVINO also run. Most activations here are one-sided (after SiLU, ReLU, Sigmoid), so a
  symmetric grid leaves half its levels unused; on yoloxn this grid kept about 1.7 points of mAP more
  (README, QAT);
- ``acuity``: asymmetric uint8 activations: Amlogic's ACUITY (A311D) default.
Weights are symmetric int8 per output channel in all three (scale = max |w| / 127, so the grid is
[-127, 127] inside ONNX's int8 range), which each of those toolchains accepts.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

WEIGHT_QMAX = 127  # symmetric weights: [-127, 127], the int8 grid without -128, as TensorRT requires
EPS = 1e-8  # smallest scale: a tensor that is all zeros still gets a valid grid
RANGE_MOMENTUM = 0.01  # observed ranges follow each batch's min / max by this much (torch.ao's default)


@dataclass(frozen=True)
class QuantScheme:
    name: str
    qmin: int
    qmax: int
    symmetric: bool
    toolchains: str

    def scale_zero_point(self, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The grid of a range [lo, hi], widened to hold 0 exactly (zero padding, ReLU's zeros)."""
        lo, hi = torch.clamp(lo, max=0.0), torch.clamp(hi, min=0.0)
        if self.symmetric:
            scale = torch.maximum(-lo, hi) / ((self.qmax - self.qmin) / 2)
            return scale.clamp(min=EPS), torch.zeros_like(scale, dtype=torch.int32)
        scale = ((hi - lo) / (self.qmax - self.qmin)).clamp(min=EPS)
        zero_point = (self.qmin - torch.round(lo / scale)).clamp(self.qmin, self.qmax)
        return scale, zero_point.to(torch.int32)


SCHEMES = {
    "qdq": QuantScheme("qdq", -128, 127, True, "TensorRT, onnxruntime QDQ, OpenVINO"),
    "rknn": QuantScheme("rknn", -128, 127, False, "Rockchip rknn-toolkit2, onnxruntime QDQ, OpenVINO"),
    "acuity": QuantScheme("acuity", 0, 255, False, "Amlogic ACUITY (A311D)"),
}


class ActivationQuantizer(nn.Module):
    """Per-tensor fake quantisation with an observed range: the first batch sets it, later training batches
    move it by RANGE_MOMENTUM, and in eval mode it stays fixed. The range is a
    buffer, so it is in checkpoints (exact --resume) and averaged by the EMA like BatchNorm statistics."""

    def __init__(self, scheme: QuantScheme):
        super().__init__()
        self.scheme = scheme
        self.register_buffer("lo", torch.tensor(0.0))
        self.register_buffer("hi", torch.tensor(0.0))
        self.register_buffer("initialised", torch.tensor(False))
        self.observing = True  # False: training holds the range (calibrated ranges, utils/quant/calibrate.py)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        exporting = torch.jit.is_tracing()
        if not exporting and ((self.training and self.observing) or not bool(self.initialised)):
            self._observe(x.detach())
        if exporting or not self.training:  # a fixed grid: plain numbers, constants in an exported graph
            scale, zero_point = self.grid()
        else:  # tensors: no device-to-host copy per quantiser and step
            scale, zero_point = self.scheme.scale_zero_point(self.lo, self.hi)
        y = x if x.dtype == torch.float32 else x.float()  # torch's kernels take float32 (autocast gives bf16 / fp16)
        if exporting:  # torch's op: what torch.onnx writes as QuantizeLinear + DequantizeLinear
            y = torch.fake_quantize_per_tensor_affine(y, scale, zero_point, self.scheme.qmin, self.scheme.qmax)
        else:
            y = _FakeQuantize.apply(y, scale, zero_point, self.scheme.qmin, self.scheme.qmax)
        return y if x.dtype == torch.float32 else y.to(x.dtype)

    @torch.no_grad()
    def _observe(self, x: torch.Tensor) -> None:
        lo, hi = x.min().float(), x.max().float()
        if not bool(self.initialised):
            self.lo.copy_(lo)
            self.hi.copy_(hi)
            self.initialised.fill_(True)
        else:
            self.lo.lerp_(lo, RANGE_MOMENTUM)
            self.hi.lerp_(hi, RANGE_MOMENTUM)

    def grid(self) -> tuple[float, int]:
        """(scale, zero point) of the current range."""
        scale, zero_point = self.scheme.scale_zero_point(self.lo, self.hi)
        return float(scale), int(zero_point)

    def extra_repr(self) -> str:
        return f"{self.scheme.name}, range [{float(self.lo):.4g}, {float(self.hi):.4g}]"


class _FakeQuantize(torch.autograd.Function):
    """Per-tensor fake quantisation as ONNX QuantizeLinear + DequantizeLinear compute it, with
    torch.fake_quantize_per_tensor_affine's gradient (straight through inside the grid, zero outside), in
    plain vectorised ops. Two reasons not to call torch's kernel outside export: it computes x * (1 / scale),
    which at ties rounds a value one step away from QuantizeLinear's x / scale, and through a deep model
    such steps grow (yoloxn's outputs to a cosine of 0.93 against its QDQ file; now equal bit for bit);
    and on CPUs its tensor-scale kernel was half of a QAT step, about twice this one's time."""

    @staticmethod
    def forward(ctx, x, scale, zero_point, qmin: int, qmax: int):
        scale = torch.as_tensor(scale, dtype=x.dtype, device=x.device)
        zero_point = torch.as_tensor(zero_point, device=x.device).to(x.dtype)
        q = torch.round(x / scale).add_(zero_point)  # x / scale as QuantizeLinear computes it
        inside = (q >= qmin) & (q <= qmax)
        ctx.save_for_backward(inside)
        return q.clamp_(qmin, qmax).sub_(zero_point).mul_(scale)

    @staticmethod
    def backward(ctx, grad):
        (inside,) = ctx.saved_tensors
        return grad * inside, None, None, None, None


BIAS_QMIN, BIAS_QMAX = -(2 ** 31), 2 ** 31 - 1  # toolchains hold a conv's bias in int32


def quantize_bias(bias: torch.Tensor, input_scale, weight_scale: torch.Tensor) -> torch.Tensor:
    """The bias as 8-bit toolchains hold it: int32 on the grid input scale x weight scale of each output
    channel, clamped to int32 (a layer whose inputs nearly vanish has a tiny grid, and a large bias
    saturates). Gradients pass straight through. Its values are exact multiples of that grid, so a toolchain
    that quantises the exported float bias again gets the same integers."""
    scale = torch.as_tensor(input_scale, dtype=torch.float32, device=bias.device) * weight_scale  # both >= EPS
    b = bias.float()
    q = torch.clamp(torch.round(b / scale), BIAS_QMIN, BIAS_QMAX) * scale
    return (q + (b - b.detach())).to(bias.dtype)  # q exactly, with b's gradient (q - b would lose digits)


def weight_scales(weight: torch.Tensor) -> torch.Tensor:
    """Symmetric per-output-channel scales, [C_out]: max |w| of the channel maps to 127."""
    return (weight.detach().abs().flatten(1).amax(1) / WEIGHT_QMAX).clamp(min=EPS).float()


def quantize_weight(weight: torch.Tensor) -> torch.Tensor:
    """Fake-quantised weights, symmetric int8 per output channel (axis 0). The scales follow the weights;
    when exported they are written as constants (the file's weights are fixed)."""
    scales = weight_scales(weight)
    if torch.jit.is_tracing():
        scales = torch.tensor(scales.tolist(), device=weight.device)
    zero_points = torch.zeros(scales.shape, dtype=torch.int32, device=weight.device)
    w = weight if weight.dtype == torch.float32 else weight.float()
    w = torch.fake_quantize_per_channel_affine(w, scales, zero_points, 0, -128, 127)
    return w if weight.dtype == torch.float32 else w.to(weight.dtype)
