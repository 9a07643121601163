"""Round 50 (nphunt50): histogram counts agree with the edges they are reported with.

A value exactly on a bin edge (a ReLU network's exact zeros at the middle edge of a symmetric
``[-m, m]`` range, saturated units, integer-valued data) is counted in the bin it starts,
``e_i <= v < e_(i+1)`` with ``e = np.linspace(lo, hi, n + 1)`` (``histograms.bin_edges``, the
``bin_left``/``bin_right`` of the recorder's table), as ``np.histogram`` counts it. Before, the
rounded position ``(v - lo) * n / (hi - lo)`` could fall just below the edge's integer and put
the value in the bin to its left (zeros reported among the negative values), on both the NumPy
path and the compiled kernels. The independent reference is ``np.histogram`` on the recorded
edges (with finite values beyond the range clipped into the end bins, as documented)."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

from depthlab.probes import accel
from depthlab.probes.histograms import bin_counts, bin_edges, histogram_nonfinite

PATHS = ["kernels", "numpy"]


def _path(name):
    if name == "kernels":
        if accel.kernels() is None:
            pytest.skip("compiled kernels not installed")
        return contextlib.nullcontext()
    return accel.numpy_only()


def _reference(x: np.ndarray, lo: float, hi: float, n: int) -> np.ndarray:
    """``np.histogram`` on the edges the recorder reports, finite values beyond them in the
    end bins, non-finite ones dropped."""
    f = x.reshape(-1).astype(np.float64)
    f = np.clip(f[np.isfinite(f)], lo, hi)
    return np.histogram(f, bins=bin_edges(lo, hi, n))[0]


def _ranges(rng, count):
    for k in range(count):
        n = int(rng.integers(1, 60))
        if k % 2:
            m = float(rng.exponential()) * 10.0 ** int(rng.integers(-6, 6))
            yield -m, m, n
        else:
            lo = float(rng.normal()) * 10.0 ** int(rng.integers(-3, 3))
            yield lo, lo + float(rng.exponential()) * 10.0 ** int(rng.integers(-3, 3)), n


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_values_on_edges_are_counted_as_numpy_histogram_counts_them(path, dtype):
    rng = np.random.default_rng(0)
    with _path(path):
        for lo, hi, n in _ranges(rng, 400):
            e = bin_edges(lo, hi, n)
            w = hi - lo
            x = np.concatenate([e, np.nextafter(e, np.inf), np.nextafter(e, -np.inf),
                                rng.uniform(lo - 0.1 * w, hi + 0.1 * w, 40),
                                np.zeros(3)]).astype(dtype)
            got = bin_counts(x, lo, hi, n)
            np.testing.assert_array_equal(got, _reference(x, lo, hi, n), err_msg=f"{lo, hi, n}")
            assert got.sum() == x.size


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_exact_zeros_of_a_symmetric_range_lie_in_the_bin_their_edge_starts(path, dtype):
    """Gradients of a ReLU network: many exact zeros in ``[-m, m]`` with an even bin count.
    Each zero is counted in the bin ``[e_i, e_(i+1))`` that holds 0 (old code: in ~5% of the
    float64 ranges and ~15% of the float32 ones, the bin to its left)."""
    rng = np.random.default_rng(1)
    with _path(path):
        for _ in range(300):
            m = float(rng.exponential()) * 10.0 ** int(rng.integers(-5, 5))
            n = 2 * int(rng.integers(1, 40))
            e = bin_edges(-m, m, n)
            holder = int(np.searchsorted(e, 0.0, side="right")) - 1
            got = bin_counts(np.zeros(7, dtype), -m, m, n)
            assert got[holder] == 7, (m, n, e[holder], e[holder + 1])


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_recorded_histograms_of_data_with_exact_zeros_match_numpy(path, dtype):
    """``histogram_nonfinite`` (the recorder's histograms, edges chosen from the data) on
    arrays of normal values and exact zeros, with and without a NaN and infinities."""
    rng = np.random.default_rng(2)
    with _path(path):
        for trial in range(120):
            s = float(10.0 ** rng.uniform(-4, 4))
            x = np.concatenate([rng.normal(size=500) * s, np.zeros(100)])
            if trial % 3 == 0:
                x[:3] = (np.nan, np.inf, -np.inf)
            x = x.astype(dtype).reshape(20, 30)
            for kind in ("grad", "pre"):
                lo, hi, counts, nonfinite = histogram_nonfinite(kind, x, 50)
                np.testing.assert_array_equal(counts, _reference(x, lo, hi, 50),
                                              err_msg=f"{trial} {s}")
                assert counts.sum() + sum(nonfinite) == x.size


def test_ranges_whose_width_overflows_still_count_every_finite_entry_once():
    """``[-m, m]`` with ``2m`` beyond float64 (no edges: ``linspace`` overflows): the
    positions decide, as before, and nothing fails."""
    m = np.finfo(np.float64).max * 0.9
    x = np.array([-m, m, 0.0, 1.0, -1.0])
    with accel.numpy_only(), np.errstate(over="ignore"):
        counts = bin_counts(x, -m, m, 20)
    assert counts.shape == (20,)
