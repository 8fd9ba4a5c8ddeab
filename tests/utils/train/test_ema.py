"""utils/train/ema.py: the decay ramp and the update of weights and BatchNorm buffers, against hand values."""
import math

import pytest
import torch
from torch import nn

from utils.train.ema import ModelEMA, unwrap


def small_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 3, 1), nn.BatchNorm2d(3))


def test_decay_ramp():
    ema = ModelEMA(small_model(), decay=0.9999, tau=2000)
    assert ema.current_decay() == 0.0  # no update yet: the first update copies the model
    ema.updates = 2000
    assert ema.current_decay() == pytest.approx(0.9999 * (1 - math.exp(-1)))
    ema.updates = 10 ** 6
    assert ema.current_decay() == pytest.approx(0.9999)


def test_update_is_the_weighted_average_of_floats_the_rest_copied():
    model = small_model()
    ema = ModelEMA(model, decay=0.5, tau=1.0)
    assert not ema.ema.training and not any(p.requires_grad for p in ema.ema.parameters())
    before = {k: v.clone() for k, v in ema.ema.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
        model[1].running_mean.fill_(2.0)
        model[1].num_batches_tracked.fill_(7)
    ema.update(model)
    d = 0.5 * (1 - math.exp(-1))  # after one update, tau 1
    state, now = model.state_dict(), ema.ema.state_dict()
    for k, v in now.items():
        if v.dtype.is_floating_point:
            torch.testing.assert_close(v, d * before[k] + (1 - d) * state[k])
        else:
            assert torch.equal(v, state[k]), k  # the step counter is copied, not averaged
    assert ema.updates == 1


def test_the_ema_of_a_qat_model_keeps_its_ranges_in_eval():
    """A QAT model's activation ranges are float buffers (averaged) with a flag saying they are set (copied):
    validating the EMA does not observe the validation images into its ranges."""
    from tests.support import tiny_detect_model
    from utils.quant.fake_quant import SCHEMES
    from utils.quant.prepare import prepare_qat

    x = torch.rand(2, 3, 64, 64) * 255
    qat = prepare_qat(tiny_detect_model(3).eval(), SCHEMES["qdq"], x[:1])
    ema = ModelEMA(qat, decay=0.5, tau=1.0)
    qat.train()(x)
    ema.update(qat)
    ranges = [(q.lo.clone(), q.hi.clone()) for q in ema.ema.quantizers()]
    assert all(bool(q.initialised) for q in ema.ema.quantizers())
    with torch.no_grad():
        ema.ema(x * 0.1)  # other images
    assert all(torch.equal(q.lo, lo) and torch.equal(q.hi, hi) for q, (lo, hi) in zip(ema.ema.quantizers(), ranges))


def test_unwrap_looks_through_data_parallel():
    model = small_model()
    assert unwrap(nn.DataParallel(model)) is model and unwrap(model) is model
    ema = ModelEMA(nn.DataParallel(model))
    assert isinstance(ema.ema, nn.Sequential)
