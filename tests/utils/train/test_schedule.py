"""utils/train/schedule.py: learning-rate factors per epoch and the warm-up ramps, against hand values."""
import pytest

from utils.train.schedule import LRSchedule, warmup


def test_schedules_and_warmup():
    s = LRSchedule("yolox_cos", epochs=300, lrf=0.05, warmup_epochs=5, no_aug_epochs=15)
    assert s.factor(5) == pytest.approx(1.0) and s.factor(285) == pytest.approx(0.05)
    assert s.factor(295) == pytest.approx(0.05) and s.factor(145) == pytest.approx(0.525)
    lin = LRSchedule("linear", epochs=10, lrf=0.2)
    assert lin.factor(0) == 1.0 and lin.factor(10) == pytest.approx(0.2)
    cos = LRSchedule("cos", epochs=10, lrf=0.2)
    assert cos.factor(5) == pytest.approx(0.6)
    assert warmup(50, 100, 0.01, 0.1) == pytest.approx(0.055)
    assert warmup(50, 100, 0.01, 0.0, quadratic=True) == pytest.approx(0.0025)
    assert warmup(100, 100, 0.01, 0.1) == 0.01
