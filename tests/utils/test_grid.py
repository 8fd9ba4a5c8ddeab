"""utils/grid.py: anchor cells and strides, level-major and row-major, and their cache."""
import torch

from utils.grid import GridCache, make_grid


def test_make_grid_hand_computed():
    grid, stride = make_grid([(2, 3), (1, 2)], [8, 16])
    assert grid.tolist() == [[0, 0], [1, 0], [2, 0], [0, 1], [1, 1], [2, 1],  # level 0: rows of 3 cells
                             [0, 0], [1, 0]]  # level 1
    assert stride.tolist() == [[8.0]] * 6 + [[16.0]] * 2
    assert grid.dtype == stride.dtype == torch.float32


def test_make_grid_dtype_and_anchor_centres():
    grid, stride = make_grid([(4, 4)], [32.0], dtype=torch.float16)
    assert grid.dtype == stride.dtype == torch.float16 and grid.shape == (16, 2) and stride.shape == (16, 1)
    centres = (grid.float() + 0.5) * stride.float()  # what SimOTA's geometry tests take
    assert centres[5].tolist() == [48.0, 48.0]  # cell (1, 1)


def test_grid_cache_reuses_and_rebuilds():
    cache = GridCache()
    a = cache([(2, 2)], [8.0])
    assert cache([(2, 2)], [8]) is a  # same sizes and strides: the same tensors
    b = cache([(2, 3)], [8.0])
    assert b is not a and b[0].shape == (6, 2)
    c = cache([(2, 3)], [8.0], dtype=torch.float64)
    assert c[0].dtype == torch.float64 and torch.equal(c[0].float(), b[0])
