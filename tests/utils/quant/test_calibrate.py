"""utils/quant/calibrate.py: QAT's activation ranges calibrated at a percentile and held while training."""
import copy

import numpy as np
import pytest
import torch

from tests.support import tiny_detect_model
from utils.quant.calibrate import _percentile_range, fix_percentile_ranges, hold_ranges
from utils.quant.fake_quant import SCHEMES, ActivationQuantizer
from utils.quant.prepare import QuantConv2d, prepare_qat


@pytest.mark.parametrize("symmetric", [True, False])
def test_percentile_range_is_numpys_inverted_cdf_and_clips_an_outlier(symmetric):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(100_000, generator=g) * 2 + 1
    x[17] = 1e6  # one outlier: min / max would take it
    lo, hi = _percentile_range(x, 99.99, symmetric)
    v = x.double().numpy()
    if symmetric:
        t = np.percentile(np.abs(v), 99.99, method="inverted_cdf")
        assert (lo, hi) == pytest.approx((-t, t))
    else:
        assert lo == pytest.approx(-np.percentile(-v, 99.99, method="inverted_cdf"))  # each tail by the same rule
        assert hi == pytest.approx(np.percentile(v, 99.99, method="inverted_cdf"))
    assert hi < 12  # 1 + 5 sigma at most; the outlier is clipped
    assert _percentile_range(torch.rand(1000), 99.99, True)[0] == 0.0  # no negative values: nothing below 0


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_each_range_is_set_from_unquantised_activations_and_held(scheme):
    """At the 100th percentile over one batch, each quantiser's range is the min / max (max |x|, symmetric) of
    the tensor it sees when no activation upstream is quantised (the model with its int8 weights); training
    then leaves the ranges as they are until hold_ranges(..., False)."""
    torch.manual_seed(0)
    images = (torch.rand(4, 3, 64, 64) * 255).numpy()
    qat = prepare_qat(tiny_detect_model(3).eval(), SCHEMES[scheme], torch.zeros(1, 3, 64, 64))
    reference = copy.deepcopy(qat).eval()
    seen = {}
    for name, m in reference.named_modules():
        if isinstance(m, ActivationQuantizer):
            m.forward = lambda x: x  # no quantisation anywhere: what each quantiser reads in float
            m.register_forward_hook(lambda m, args, _, name=name: seen.__setitem__(name, args[0].detach()))
        if isinstance(m, QuantConv2d):
            m._input = ()  # float biases
    with torch.no_grad():
        reference(torch.from_numpy(images))
    n = fix_percentile_ranges(qat, images, percentile=100)
    assert n == len(qat.quantizers()) == len(seen) > 0
    for name, q in qat.named_modules():
        if isinstance(q, ActivationQuantizer):
            x = seen[name]
            want = (-x.abs().max(), x.abs().max()) if SCHEMES[scheme].symmetric else (x.min(), x.max())
            got = (q.lo, q.hi) if x.min() < 0 or not SCHEMES[scheme].symmetric else (-q.hi, q.hi)
            torch.testing.assert_close(torch.stack(got), torch.stack(want), rtol=1e-4, atol=1e-4,
                                       msg=lambda m: f"{name}: {m}")  # int32 biases meanwhile: within rounding
    held = [(q.lo.clone(), q.hi.clone()) for q in qat.quantizers()]
    qat.train()(torch.rand(2, 3, 64, 64) * 1000)  # other images, a wider range
    assert all(torch.equal(q.lo, lo) and torch.equal(q.hi, hi) for q, (lo, hi) in zip(qat.quantizers(), held))
    hold_ranges(qat, False)
    qat(torch.rand(2, 3, 64, 64) * 1000)
    assert any(not torch.equal(q.hi, hi) for q, (_, hi) in zip(qat.quantizers(), held))
