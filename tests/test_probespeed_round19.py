"""Round 19 (issue 14, probe overhead): the layer kernel's per-row counts (saturated, inactive,
dead units) come from one loop per activation that computes ``f'(s)`` in place
(``kernels._row_counts``, inlined) instead of a derivative row written and read back and float64
counts; the counts stay exact and equal to the NumPy definitions for every way the kernel
obtains ``f'(s)``, and so do the recorder's fractions."""

from __future__ import annotations

import numpy as np
import pytest

from depthlab.probes import accel
from depthlab.probes.stats import layer_quantities, layer_stats
from tests.test_probe_kernels import _measured_net

pytestmark = pytest.mark.skipif(not accel.available(), reason="needs the compiled kernels")


def _rows(dtype, how, k):
    """s, a, d (a 2-d f'(s) for DERIVATIVE_GIVEN) with exact zeros, saturated entries, a unit
    dead on every row, and s == 0 entries."""
    g = np.random.default_rng(3)
    s = g.standard_normal((9, 37)).astype(dtype) * 6
    s[:, 6] = -800.0  # f'(s) is 0 on every row (dead): sigmoid and tanh saturate, ReLU off
    s[2, :5] = 0.0  # s <= 0 counted; ReLU's f'(0) = 0
    s[5, 9] = 30.0
    if how == k.DERIVATIVE_SIGMOID:
        with np.errstate(over="ignore"):
            a = (1 / (1 + np.exp(-s.astype(np.float64)))).astype(dtype)
        d = (1 - a) * a
    elif how == k.DERIVATIVE_TANH:
        a = np.tanh(s)
        d = 1 - a * a
    elif how == k.DERIVATIVE_STEP:
        a = np.maximum(s, 0)
        d = (s > 0).astype(dtype)
    else:
        a = np.maximum(s, 0) + 0.01 * np.minimum(s, 0)
        d = np.where(s > 0, 1, 0.01).astype(dtype)
        d[:, 7] = 0  # a unit whose given derivative is 0 on every row
    return s, a, d.astype(dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("how_name", ["DERIVATIVE_SIGMOID", "DERIVATIVE_TANH",
                                      "DERIVATIVE_STEP", "DERIVATIVE_GIVEN"])
def test_row_counts_equal_the_numpy_counts(dtype, how_name):
    k = accel.kernels()
    how = getattr(k, how_name)
    s, a, d = _rows(np.dtype(dtype), how, k)
    th = np.dtype(dtype).type(0.0125)
    dead = np.ones(s.shape[1], dtype=dtype)
    sat = zs = 0
    for b in range(s.shape[0]):
        n_sat, n_zs = k._row_counts(s[b], a[b], d, b, how, th, dead)
        sat += n_sat
        zs += n_zs
    assert sat == int(np.count_nonzero(np.abs(d) < th))
    assert zs == int(np.count_nonzero(s <= 0))
    np.testing.assert_array_equal(dead == 0, np.any(d != 0, axis=0))
    assert dead[7 if how == k.DERIVATIVE_GIVEN else 6] == 1  # the unit dead on every row


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu", "gelu"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_layer_fractions_equal_the_numpy_path(activation, dtype):
    """Every derivative mode of the layer kernel (computed: sigmoid, tanh, ReLU; given: GELU):
    saturated_frac, dead_frac and inactive_frac exactly the NumPy path's, a saturated layer
    (shifted biases) included."""
    names = layer_quantities((50,))
    idx = [names.index(q) for q in ("saturated_frac", "dead_frac", "inactive_frac")]
    for shift in (0.0, 25.0):
        net = _measured_net(activation, dtype, seed=1, shift=shift)
        with np.errstate(all="ignore"):
            fast = np.array([layer_stats(p, (50,)) for p in net.probe_points()])
            with accel.numpy_only():
                slow = np.array([layer_stats(p, (50,)) for p in net.probe_points()])
        np.testing.assert_array_equal(fast[:, idx], slow[:, idx])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_column_range_is_the_minimum_and_maximum(dtype):
    """column_range by comparison and select (not np.minimum/np.maximum): the extrema of every
    shape the layer kernel gives it, signed zeros and a single row included."""
    k = accel.kernels()
    g = np.random.default_rng(5)
    for shape in ((1, 7), (9, 1), (60, 100), (128, 256)):
        s = g.standard_normal(shape).astype(dtype)
        s.flat[::7] = -0.0
        assert k.column_range(s) == (float(s.min()), float(s.max()))
    names = k.column_range.py_func.__code__.co_names
    assert "minimum" not in names and "maximum" not in names  # (NaN handling: 2x slower)


@pytest.mark.parametrize("n", [32768, (1 << 17), (1 << 17) + 1, 300000])
def test_bucket_count_and_exact_order_statistics_either_side_of_small_up_to(n):
    """Up to SMALL_UP_TO entries at most 2046 buckets (their lane counters in L1), above it
    4094; the order statistics (and positions) are exact either way."""
    k = accel.kernels()
    g = np.random.default_rng(n)
    x = g.standard_normal(n).astype(np.float32)
    x[::5] = np.round(x[::5], 1)  # ties
    ranks = np.array(sorted({0, 1, n // 50, n // 2, n // 2 + 1, n - 2, n - 1}), dtype=np.intp)
    lo, hi = float(x.min()), float(x.max())
    nb = k._buckets(x, ranks, lo, hi)[0]
    assert nb == (2046 if n <= k.SMALL_UP_TO else 4094)
    want = np.partition(x, ranks)[ranks]
    np.testing.assert_array_equal(k.select(x, ranks, lo, hi), want)
    np.testing.assert_array_equal(x[k.positions(x, ranks, lo, hi)], want)
