"""utils/plots.py: a plot never ends a run. Boxes of a diverging model (far outside the picture, not finite)
are clipped or skipped before OpenCV sees them (OpenCV 5 rejects coordinates beyond int32), and a plot
that fails for any other reason is a warning."""
import logging

import cv2
import numpy as np
import torch

from utils.plots import pixel_box, plot_images, plot_labels, plot_results


def test_wild_prediction_boxes_are_clipped_or_skipped(tmp_path):
    images = torch.full((2, 3, 64, 64), 80, dtype=torch.uint8)
    preds = torch.tensor([[0, 1, 1e12, -1e12, 3e12, 5.0, 0.9],  # beyond int32 on every side
                          [1, 0, float("nan"), 0, 10, 10, 0.8],  # not finite: skipped
                          [1, 0, -5.0, float("inf"), 10, 10, 0.8],
                          [1, 1, 8.0, 8.0, 40.0, 30.0, 0.7]])  # an ordinary box
    out = plot_images(images, preds, None, tmp_path / "pred.jpg", ["a", "b"])
    assert out == tmp_path / "pred.jpg"
    grid = cv2.imread(str(out))
    assert grid.shape == (64, 128, 3)
    assert (np.abs(grid[8:31, 64 + 8].astype(int) - 80) > 40).any()  # the ordinary box was drawn
    assert pixel_box([1e12, -1e12, 3e12, 5.0], 64, 48) == ((63, 0), (63, 5))
    assert pixel_box([float("nan"), 0, 1, 1], 64, 48) is None


def test_a_failing_plot_is_a_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="yolox5.plots"):
        assert plot_labels([np.zeros((2, 3))], ["a"], tmp_path / "labels.jpg") is None  # rows of 3, not 5
        assert plot_results(tmp_path / "missing.csv") is None
    assert "WARNING plot_labels: plot not written (IndexError" in caplog.text
    assert "WARNING plot_results: plot not written (FileNotFoundError" in caplog.text
