"""Round 48 (probes48): a histogram of 2048 <= n < 2^18 entries takes its range from the
selection's group extremes (``kernels.histogram_whole``, one pass fewer); every edge and count
equals the two-pass flow's (``finite_range`` then ``kernels.histogram``) and the NumPy path's."""

from __future__ import annotations

import math

import numpy as np
import pytest

from depthlab.activations import get_activation
from depthlab.probes import accel, fused
from depthlab.probes.histograms import activation_range, histogram_nonfinite

pytestmark = pytest.mark.skipif(accel.kernels() is None, reason="needs the compiled kernels")

SIGMOID = get_activation("sigmoid")


def _two_pass(kind, x, n_bins, fn):
    """The flow before round 48: ``finite_range``, then ``kernels.histogram`` with the array
    as its own sample."""
    k = accel.kernels()
    f = np.ascontiguousarray(x).reshape(-1)
    low, high = k.finite_range(f)
    if not (math.isfinite(low) and math.isfinite(high)):
        return None
    ranks, t = fused._ranks_fractions(f.size, fused._ROBUST)
    clip = activation_range(fn) if kind == "act" else None
    c0, c1 = clip if clip is not None else (0.0, 0.0)
    tiny, big = fused._normal_range(f.dtype)
    lo, hi, status, counts = k.histogram(f, f, low, high, low, high, ranks, t, n_bins,
                                         clip is not None, c0, c1, tiny, big)
    return lo, hi, status, counts


def _cases(seed):
    rng = np.random.default_rng(seed)
    for n in (2048, 2049, 3001, 6000, 10000, 78400, 262143):
        for dt in (np.float32, np.float64):
            z = rng.standard_normal(n)
            yield "normal", z.astype(dt)
            yield "shifted", (z * 1e-3 + 5).astype(dt)
            yield "relu", np.maximum(z, 0).astype(dt)
            yield "negative", (-np.abs(z)).astype(dt)
            yield "saturated", (1 / (1 + np.exp(-8 * z))).astype(dt)
            yield "few values", rng.integers(-2, 3, n).astype(dt)
            yield "constant", np.full(n, 0.25, dt)
            yield "signed zeros", np.where(z > 0, z, -0.0).astype(dt)
            yield "heavy", (rng.standard_cauchy(n) * 1e30).astype(dt)
            yield "near max", (np.sign(z) * np.finfo(dt).max * 0.9).astype(dt)
            for bad in (np.nan, np.inf, -np.inf):
                y = z.astype(dt)
                y[rng.integers(n)] = bad
                yield f"one {bad}", y


def _same(a, b):
    return a.tobytes() == b.tobytes()


@pytest.mark.parametrize("seed", [0, 1])
def test_histogram_whole_equals_two_pass_flow(seed):
    k = accel.kernels()
    for name, x in _cases(seed):
        for kind in ("pre", "act"):
            old = _two_pass(kind, x, 50, SIGMOID)
            ranks, t = fused._ranks_fractions(x.size, fused._ROBUST)
            clip = kind == "act"
            tiny, big = fused._normal_range(x.dtype)
            lo, hi, status, counts = k.histogram_whole(x, ranks, t, 50, clip, 0.0, 1.0,
                                                       tiny, big)
            if old is None:
                assert status == k.NOT_FINITE, (name, x.dtype, x.size)
                continue
            assert status == old[2], (name, x.dtype, x.size, kind)
            assert _same(np.float64([lo, hi]), np.float64(old[:2])), (name, x.dtype, x.size)
            assert np.array_equal(counts, old[3]), (name, x.dtype, x.size, kind)


def test_kernel_histogram_equals_numpy_path():
    """Edges and counts of the recorder's histograms (``histogram_nonfinite``) with the
    kernels and without them, on the arrays of the new path."""
    for name, x in _cases(3):
        if x.size > 80000:
            continue
        for kind in ("pre", "act", "weight"):
            got = histogram_nonfinite(kind, x.reshape(-1, 1) if x.size % 2 else
                                      x.reshape(2, -1), 20, SIGMOID)
            with accel.numpy_only():
                ref = histogram_nonfinite(kind, x.reshape(-1, 1) if x.size % 2 else
                                          x.reshape(2, -1), 20, SIGMOID)
            assert got[0] == ref[0] and got[1] == ref[1], (name, x.dtype, x.size, kind)
            assert np.array_equal(got[2], ref[2]) and got[3] == ref[3], (name, x.dtype, kind)


def test_range_from_group_extremes_is_finite_range():
    """The minimum and maximum read from the group extremes are ``finite_range``'s floats,
    bit for bit (``-0.0`` against ``+0.0`` included), so the rule ``low >= 0`` and the
    edges are the same."""
    k = accel.kernels()
    rng = np.random.default_rng(5)
    for dt in (np.float32, np.float64):
        for n in (2048, 5000, 78400):
            x = rng.standard_normal(n).astype(dt)
            x[x < 0] = -0.0
            x[rng.integers(n)] = 0.0
            cmin, cmax = k._column_extremes(x, k.extreme_columns(n))
            klo = k._key_extremes(cmin)[0]
            khi = k._key_extremes(cmax)[1]
            low, high = k.finite_range(x)
            assert _same(np.float64(k._key_to_float(cmin, klo)), np.float64(low))
            assert _same(np.float64(k._key_to_float(cmax, khi)), np.float64(high))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_column_extremes_four_rows_a_pass(dtype):
    """``_column_extremes`` (four rows a pass since round 48, then the rows left one at a
    time, then the partial row) equals NumPy's per-column minimum and maximum for every
    number of rows 1..11 and a partial last row."""
    k = accel.kernels()
    rng = np.random.default_rng(7)
    cols = 16
    for rows in range(1, 12):
        for extra in (0, 1, 7, 15):
            n = rows * cols + extra
            x = rng.standard_normal(n).astype(dtype)
            x[rng.integers(n)] = -0.0
            cmin, cmax = k._column_extremes(x, cols)
            padded = np.full(((n + cols - 1) // cols) * cols, np.nan, dtype)
            padded[:n] = x
            ref = padded.reshape(-1, cols)
            assert np.array_equal(cmin, np.nanmin(ref, axis=0)), (rows, extra)
            assert np.array_equal(cmax, np.nanmax(ref, axis=0)), (rows, extra)
            # each extreme is one of the column's own entries
            assert all(cmin[j] in ref[:, j] and cmax[j] in ref[:, j] for j in range(cols))
