"""Round 38 (nphunt38): regressions found by a demanding user of the NumPy side."""

from __future__ import annotations

import numpy as np
import pytest

import depthlab as dl


def _pair(n: int = 40) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 5)), rng.integers(0, 3, n)


def test_doctor_names_the_callers_row_of_a_nan_in_a_bare_pair() -> None:
    # the seeded 80/20 split renumbered the rows: "validation x ... (first at row 5, column 1)"
    x, y = _pair()
    x[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"^x contains NaN or infinity \(first at row 2, "
                                         r"column 1\)"):
        dl.doctor(dl.mlp([5, 4, 3], seed=0), (x, y), steps=5)


def test_doctor_names_the_callers_row_of_an_infinite_target() -> None:
    x, _ = _pair()
    y = np.random.default_rng(1).normal(size=40)
    y[0] = np.inf
    with pytest.raises(ValueError, match=r"^y contains NaN or infinity \(first at row 0\)"):
        dl.doctor(dl.mlp([5, 4, 1], seed=0), (x, y), loss="mse", steps=5)


def test_doctor_data_of_three_items_says_how_many() -> None:
    x, y = _pair()
    with pytest.raises(TypeError, match="got tuple of 3 items"):
        dl.doctor(dl.mlp([5, 4, 3], seed=0), (x, y, x), steps=5)
