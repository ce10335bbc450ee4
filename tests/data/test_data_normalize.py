"""Normalisation as the reference: q01/q99 bounds, clipping, mask, constant dimensions, exact inverse."""

from __future__ import annotations

import numpy as np
import pytest

from openvla.data.normalize import Normalizer

STATS = {
    "action": {"q01": [-1.0, 0.0, 2.0, 0.0], "q99": [1.0, 4.0, 2.0, 1.0], "min": [-2.0, -1.0, 2.0, 0.0],
               "max": [2.0, 5.0, 2.0, 1.0], "mean": [0.0, 2.0, 2.0, 0.5], "std": [0.5, 1.0, 0.0, 0.5],
               "mask": [True, True, True, False]},
    "proprio": {"q01": [0.0, -1.0], "q99": [10.0, 1.0], "min": [0.0, -1.0], "max": [10.0, 1.0],
                "mean": [5.0, 0.0], "std": [1.0, 1.0]},
}


def test_bounds_q99_formula_clip_mask_and_constant_dims():
    norm = Normalizer(STATS)
    x = np.array([[0.0, 1.0, 2.0, 1.0], [3.0, -5.0, 2.0, 0.0]], np.float32)
    y = norm.normalize_actions(x)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y[0], [0.0, 2 * 1 / 4 - 1, 0.0, 1.0], atol=1e-6)  # gripper untouched (mask)
    np.testing.assert_allclose(y[1], [1.0, -1.0, 0.0, 0.0], atol=1e-6)  # clipped; min == max -> 0
    np.testing.assert_allclose(norm.normalize_state([5.0, 0.5]), [0.0, 0.5], atol=1e-6)


def test_inverse_recovers_actions_inside_bounds():
    norm = Normalizer({"d": STATS})  # the whole dataset_statistics file with one entry is accepted too
    rng = np.random.default_rng(0)
    x = np.stack([rng.uniform(-1, 1, 100), rng.uniform(0, 4, 100), np.full(100, 2.0), rng.integers(0, 2, 100)], 1)
    back = norm.unnormalize_actions(norm.normalize_actions(x))
    np.testing.assert_allclose(back, x, atol=1e-5)
    np.testing.assert_allclose(norm.unnormalize_actions([[1.0, -1.0, 0.0, 1.0]]), [[1.0, 0.0, 2.0, 1.0]], atol=1e-6)


@pytest.mark.parametrize("mode", ["bounds", "normal"])
def test_other_modes(mode):
    norm = Normalizer(STATS, mode=mode)
    x = np.array([[2.0, 5.0, 2.0, 1.0]], np.float32)
    y = norm.normalize_actions(x)
    if mode == "bounds":
        np.testing.assert_allclose(y, [[1.0, 1.0, 0.0, 1.0]], atol=1e-6)
    else:  # (x - mean) / std, not clipped, as the reference
        np.testing.assert_allclose(y, [[4.0, 3.0, 0.0, 1.0]], atol=1e-5)
    np.testing.assert_allclose(norm.unnormalize_actions(y), x, atol=1e-5)
    with pytest.raises(ValueError, match="unknown normalisation mode"):
        Normalizer(STATS, mode="minmax")
    with pytest.raises(ValueError, match="got 3 dimensions, statistics have 4"):
        norm.normalize_actions(np.zeros(3))
