"""QAT's activation ranges from calibration instead of training: each quantiser's range set once from the
float activations on calibration images, clipped at a percentile, then held fixed while the weights train
(the recipe of NVIDIA's pytorch-quantization: calibrate, then fine-tune with fixed ranges).

    fix_percentile_ranges(qat, images)   # images: [N, 3, H, W] float32 BGR 0-255 (utils/export/int8.py)

Why offer it: an observed min / max range never clips, so one outlier pixel sets the grid for a whole
tensor and the weights cannot learn around it (nothing outside the grid gives a gradient). In post-training
int8, percentile calibration kept 6 of the 7.6 points of mAP50-95 that MinMax lost on yoloxn (README,
int8); in yoloxn's QAT it did not beat min / max ranges (README, quantisation-aware training).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from utils.export.int8 import CALIB_PERCENTILE
from utils.quant.fake_quant import ActivationQuantizer

QAT_RANGES = ("minmax", "percentile")  # --qat-ranges: observed min / max while training, or fixed percentiles
CALIB_BATCH = 10  # images per calibration forward pass; each batch's percentiles are averaged


def fix_percentile_ranges(qat: torch.nn.Module, images: np.ndarray, percentile: float = CALIB_PERCENTILE) -> int:
    """Sets every activation quantiser of ``qat`` (a QATModel) to the ``percentile`` range of the float
    activations it sees on ``images`` (of |x| where the scheme is symmetric, as onnxruntime's calibrator;
    both tails where it is not), averaged over batches of CALIB_BATCH, and fixes them (``hold_ranges``).
    Returns the number of quantisers set."""
    quantizers = [m for m in qat.modules() if isinstance(m, ActivationQuantizer)]
    sums = {id(q): torch.zeros(2, dtype=torch.float64) for q in quantizers}
    counts = {id(q): 0 for q in quantizers}

    def observe_and_pass(q, args, _):
        x = args[0].detach().float().flatten()
        lo, hi = _percentile_range(x, percentile, q.scheme.symmetric)
        sums[id(q)] += torch.tensor([lo, hi], dtype=torch.float64)
        counts[id(q)] += 1
        return args[0]  # the float activation goes on: every range is the float model's, as in calibration

    device = next(qat.parameters()).device
    was_training = qat.training
    hooks = [q.register_forward_hook(observe_and_pass) for q in quantizers]
    for q in quantizers:  # the first batch's min / max: the grid a conv's int32 bias takes meanwhile (on a
        q.initialised.fill_(False)  # range of zero it would saturate)
    try:
        with torch.no_grad():
            qat.eval()
            for start in range(0, len(images), CALIB_BATCH):
                qat(torch.from_numpy(images[start:start + CALIB_BATCH]).to(device))
    finally:
        for h in hooks:
            h.remove()
        qat.train(was_training)
    for q in quantizers:
        if counts[id(q)] == 0:
            raise RuntimeError(f"QAT calibration: a quantiser saw no activation ({q.extra_repr()})")
        lo, hi = (sums[id(q)] / counts[id(q)]).tolist()
        q.lo.fill_(lo)
        q.hi.fill_(hi)
    hold_ranges(qat)
    return len(quantizers)


def hold_ranges(qat: torch.nn.Module, hold: bool = True) -> None:
    """Training leaves the activation ranges of ``qat`` as they are (hold) or observes them (not hold). Not
    saved in checkpoints: the trainer applies it from its options, also on --resume."""
    for m in qat.modules():
        if isinstance(m, ActivationQuantizer):
            m.observing = not hold


def _percentile_range(x: torch.Tensor, percentile: float, symmetric: bool) -> tuple[float, float]:
    """(lo, hi) of a flat tensor: [-t, t] with t the percentile of |x| (symmetric), else the two tails."""
    n = x.numel()
    k_hi = min(max(math.ceil(n * percentile / 100), 1), n)
    if symmetric:
        t = float(x.abs().kthvalue(k_hi).values)
        return (-t if float(x.min()) < 0 else 0.0), t
    k_lo = max(n + 1 - k_hi, 1)
    return float(x.kthvalue(k_lo).values), float(x.kthvalue(k_hi).values)
