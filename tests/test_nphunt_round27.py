"""Round 27 (nphunt27): NumPy engine and command line regressions."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import depthlab as dl
from depthlab.data import fit_standardizer


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3)) + np.array([0.0, 2.0, -1.0])
    y = (x[:, 0] > 0).astype(int)
    return x, y


def _fit(x, y, dtype):
    net = dl.mlp([3, 8, 2], seed=0, dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warning either
        hist = dl.fit(net, x, y, standardize=True, epochs=3, batch_size=10, seed=0,
                      optimizer="adam", lr=0.01)
    return hist


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("scale", [1e-170, 1e-300, 1e160, 1e300])
def test_fit_standardize_keeps_features_whose_squares_leave_float64(scale, dtype):
    # dl.fit(standardize=True) computed the std from squares in float64: features of 1e160
    # overflowed (std inf: every feature became 0), of 1e-170 underflowed (std 0 -> 1: the
    # network saw the unscaled 1e-170 inputs, training at chance) without a word, while
    # load_dataset(standardize=True) (fit_standardizer) scaled them. The standardized inputs do
    # not depend on the features' unit.
    x, y = _data()
    ref = _fit(x, y, dtype)
    hist = _fit(x * scale, y, dtype)
    tol = 1e-9 if dtype == "float64" else 1e-4
    np.testing.assert_allclose(hist.step_loss, ref.step_loss, rtol=tol)
    mean, std = fit_standardizer(x * scale)
    np.testing.assert_allclose(hist.standardizer.mean64, mean, rtol=1e-12)
    np.testing.assert_allclose(hist.standardizer.std64, std, rtol=1e-12)
