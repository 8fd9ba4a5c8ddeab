"""utils/eval/metrics.py: YOLOv5's matching of predictions to labels, AP per class, fitness."""
import numpy as np
import pytest
import torch

from utils.eval.metrics import ap_per_class, compute_ap, fitness, match_predictions


def test_match_predictions_one_to_one():
    labels = torch.tensor([[0, 0, 0, 10, 10], [1, 20, 20, 30, 30]], dtype=torch.float32)
    dets = torch.tensor([[0, 0, 10, 10, 0.9, 0], [0, 0, 10, 10, 0.8, 0],  # duplicate: only one matches
                         [20, 20, 30, 31, 0.7, 1],  # IoU 10/11 = 0.909
                         [20, 20, 30, 30, 0.6, 0]])  # wrong class
    correct = match_predictions(dets, labels)
    assert correct[:, 0].tolist() == [True, False, True, False]
    assert correct[2].tolist() == [True] * 9 + [False]  # 0.909 < 0.95
    assert match_predictions(dets[:0], labels).shape == (0, 10)


def test_ap_per_class_and_fitness():
    assert compute_ap(np.array([1.0]), np.array([1.0])) == pytest.approx(1.0)
    tp = np.array([[True], [False], [True]])
    m = ap_per_class(tp, np.array([0.9, 0.8, 0.7]), np.array([0, 0, 0]), np.array([0, 0]))
    # envelope: precision 1 up to recall 0.5, then 2/3 up to recall 1
    assert m.ap[0, 0] == pytest.approx(0.5 * 1.0 + 0.5 * 2 / 3, abs=0.01)
    assert m.classes.tolist() == [0] and m.r[0] == pytest.approx(1.0, abs=1e-3)
    empty = ap_per_class(np.zeros((0, 10), bool), np.zeros(0), np.zeros(0), np.array([1, 1]))
    assert empty.ap.shape == (1, 10) and empty.ap.sum() == 0
    assert fitness([0.5, 0.5, 0.6, 0.4]) == pytest.approx(0.42)
    np.testing.assert_allclose(fitness(np.array([[0, 0, 1.0, 0], [0, 0, 0, 1.0]])), [0.1, 0.9])
