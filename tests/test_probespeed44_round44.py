"""Round 44 (probespeed44): the probe kernels' minima and maxima by integer order keys.

The float comparison-and-select loops over heap lanes (``finite_range``, ``column_range``, the
per-column extremes of ``extreme_select``) did not run in vector lanes with this Numba: they
cost 5-15x NumPy's ``min`` + ``max`` on the same array, a large share of a record's layer
kernel and histograms. The order key of a float's bits, ``u ^ ((u >> (bits - 1)) & mask)``,
orders floats as they compare (NaN beyond the infinities), and integer minima vectorize. The
results must be the very same numbers (the recorder's frames are pinned to ``dl.probe``).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from depthlab.probes import accel

pytestmark = pytest.mark.skipif(not accel.available(), reason="needs the compiled kernels")


def _k():
    return accel.kernels()


def _special(dtype, n: int, seed: int) -> np.ndarray:
    """Normal entries with signed zeros, subnormals, the dtype's extremes and ties."""
    g = np.random.default_rng(seed)
    x = (g.standard_normal(n) * 10.0 ** g.integers(-6, 6, n)).astype(dtype)
    info = np.finfo(dtype)
    specials = np.array([0.0, -0.0, info.tiny / 4, -info.tiny / 4, info.tiny, info.max,
                         -info.max, 1.0, -1.0], dtype=dtype)
    x[g.integers(0, n, min(n, 40))] = g.choice(specials, min(n, 40))
    return x


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 2, 7, 64, 6000, 78401])
def test_finite_range_equals_numpy_on_extreme_values(dtype, n):
    k = _k()
    for seed in range(3):
        x = _special(dtype, n, seed)
        lo, hi = k.finite_range(x)
        assert (lo, hi) == (float(x.min()), float(x.max()))
        assert np.dtype(dtype).type(lo) == x.min() and np.dtype(dtype).type(hi) == x.max()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bad", ["nan", "-nan", "payload-nan", "inf", "-inf"])
def test_finite_range_refuses_every_kind_of_non_finite_entry(dtype, bad):
    """A NaN of either sign or with any payload, or an infinity: (nan, nan)."""
    k = _k()
    x = np.random.default_rng(2).standard_normal(5000).astype(dtype)
    for at in (0, 2500, 4999):
        y = x.copy()
        if bad == "payload-nan":
            bits = y.view(np.int32 if dtype == np.float32 else np.int64)
            bits[at] = (0x7F800001 if dtype == np.float32 else 0x7FF0000000000001)
        else:
            y[at] = {"nan": np.nan, "-nan": -np.nan, "inf": np.inf, "-inf": -np.inf}[bad]
            if bad == "-nan":
                y[at] = np.copysign(np.nan, -1.0)
        lo, hi = k.finite_range(y)
        assert math.isnan(lo) and math.isnan(hi), (bad, at)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (60, 100), (128, 256), (7, 3)])
def test_column_range_equals_numpy_with_infinities_and_zeros(dtype, shape):
    k = _k()
    s = _special(dtype, math.prod(shape), 11).reshape(shape)
    assert k.column_range(s) == (float(s.min()), float(s.max()))
    if s.size > 2:
        t = s.copy()
        t.flat[1], t.flat[-1] = -np.inf, np.inf
        assert k.column_range(t) == (-math.inf, math.inf)
    z = np.zeros(shape, dtype)
    z.flat[::2] = -0.0
    assert k.column_range(z) == (0.0, 0.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n,cols", [(78400, 1216), (6000, 80), (1000, 16), (4103, 64)])
def test_column_extremes_equal_numpy_per_column(dtype, n, cols):
    """Per column of the flat array viewed as rows of ``cols`` (the last, partial row
    included), with the dtype's extremes and signed zeros among the entries."""
    k = _k()
    x = _special(dtype, n, 5)
    cmin, cmax = k._column_extremes(x, cols)
    pad = np.concatenate([x, np.full((-n) % cols, np.nan, dtype)]).reshape(-1, cols)
    assert cmin.dtype == x.dtype and cmax.dtype == x.dtype
    np.testing.assert_array_equal(cmin, np.nanmin(pad, axis=0))
    np.testing.assert_array_equal(cmax, np.nanmax(pad, axis=0))


def test_extreme_select_and_histograms_are_exact_after_the_change():
    """The weight histogram's robust range (extreme_select on per-column extremes) is the
    exact order statistic of a full sort."""
    k = _k()
    x = _special(np.float32, 78400, 9)
    n = x.size
    ranks = np.array([0, 77, 78, n - 79, n - 78, n - 1], dtype=np.intp)
    ranks.flags.writeable = False
    got, ok = k.extreme_select(x, ranks)
    assert ok
    np.testing.assert_array_equal(got, np.sort(x)[ranks])


def test_lane_totals_sum_the_four_lanes():
    k = _k()
    g = np.random.default_rng(3)
    for nb in (1, 2, 52, 752, 4096):
        lanes = g.integers(0, 2**32 - 1, k.LANES * nb, dtype=np.uint32)
        want = lanes.astype(np.int64).reshape(k.LANES, nb).sum(axis=0)
        np.testing.assert_array_equal(k._lane_totals(lanes, nb), want)


@pytest.mark.parametrize("how", ["sigmoid", "tanh"])
def test_saturation_counts_and_dead_units(how):
    """``#{|D| < th}`` and ``dead[j] = 0`` where some row's D is nonzero (D from ``a``); a
    unit whose D is 0 on every row (a = 1 exactly for sigmoid / tanh) stays dead."""
    k = _k()
    g = np.random.default_rng(4)
    for dtype in (np.float32, np.float64):
        s = (g.standard_normal((60, 100)) * 8).astype(dtype)
        a = (1 / (1 + np.exp(-s)) if how == "sigmoid" else np.tanh(s)).astype(dtype)
        a[:, 7] = 1.0  # D = 0 on every row: dead
        a[:30, 9] = 1.0  # D != 0 on the other rows: alive
        d = (1 - a) * a if how == "sigmoid" else 1 - a * a
        th = dtype(0.025)
        dead = np.ones(100, dtype)
        code = k.DERIVATIVE_SIGMOID if how == "sigmoid" else k.DERIVATIVE_TANH
        total = k._saturation_counts(a, code, th, dead)
        assert total == float(np.count_nonzero(np.abs(d) < th))
        np.testing.assert_array_equal(dead, np.all(d == 0, axis=0).astype(dtype))
