"""Regression tests for the lead's fixes of the sixth round."""

from __future__ import annotations

import numpy as np
import pytest

from depthlab.data import apply_standardizer, fit_standardizer, load_dataset


def _offset_file(tmp_path, dtype=np.float64):
    rng = np.random.default_rng(0)
    x = np.column_stack([1e7 + rng.standard_normal(400), rng.standard_normal(400)]).astype(dtype)
    y = (x[:, 1] > 0).astype(np.int64)
    path = tmp_path / "offset.npz"
    np.savez(path, x=x, y=y)
    return path, x


def test_load_dataset_standardizes_before_the_float32_cast(tmp_path):
    path, _ = _offset_file(tmp_path)
    ds = load_dataset(path, standardize=True, seed=0)
    ref = load_dataset(path, standardize=True, seed=0, dtype="float64")
    assert ds.x_train.dtype == np.float32 and ds.info["dtype"] == "float32"
    assert ds.info["standardization"]["mean"].dtype == np.float32
    # before: the float32 cast left 8 distinct values of the offset feature, wrong signs
    assert len(np.unique(ds.x_train[:, 0])) > 200
    np.testing.assert_allclose(ds.x_train, ref.x_train, atol=1e-5)
    np.testing.assert_allclose(ds.x_test, ref.x_test, atol=1e-5)
    assert np.std(ds.x_train[:, 0]) == pytest.approx(1.0, abs=1e-5)


def test_load_dataset_exact_inputs_keep_the_float32_path(tmp_path):
    """uint8 or float32 data cast to float32 exactly: standardized as before, bit for bit."""
    path, x = _offset_file(tmp_path, dtype=np.float32)
    ds = load_dataset(path, standardize=True, seed=0)
    plain = load_dataset(path, seed=0)
    mean, std = fit_standardizer(plain.x_train)
    np.testing.assert_array_equal(ds.x_train, apply_standardizer(plain.x_train, mean, std))
