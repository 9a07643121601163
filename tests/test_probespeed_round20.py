"""Round 20 (issue 14, probe overhead): the histograms' robust range (the 0.1% and 99.9%
percentiles) of large arrays is selected from their thin tails (``kernels.tail_select``: a
sample's thresholds, one counting pass in vector lanes, the entries beyond them gathered and
selected) instead of counting every entry into buckets; the order statistics stay exact, and
where the tails cannot be told from the sample the bucket selection answers (same values)."""

from __future__ import annotations

import numpy as np
import pytest

from depthlab.probes import accel
from depthlab.probes.fused import _ROBUST, _ranks_fractions, kernel_histogram
from depthlab.probes.histograms import _edges, bin_counts

pytestmark = pytest.mark.skipif(not accel.available(), reason="needs the compiled kernels")


def _cases():
    g = np.random.default_rng(20)
    n = 1 << 18
    return {
        "normal": g.standard_normal(n).astype(np.float32),
        "relu": np.maximum(g.standard_normal(n), 0).astype(np.float32),
        "cauchy64": g.standard_cauchy(n),
        "ties": np.round(g.standard_normal(n) * 2).astype(np.float32),
        "saturated": np.clip(g.standard_normal(n) * 3, -1, 1).astype(np.float32),
        "sorted": np.sort(g.standard_normal(n)).astype(np.float32),
        "reversed": np.sort(g.standard_normal(n))[::-1].copy(),
        "tied_tail": np.concatenate([np.full(1000, -5.0), g.standard_normal(n)]).astype(
            np.float32),
        "periodic": np.tile(g.standard_normal(64), n // 64).astype(np.float32),
        "column_scales": (g.standard_normal((512, 512)) * np.linspace(0.01, 5, 512)).astype(
            np.float32).ravel(),
        # a 2048-wide layer whose units are wide but for every 128th: a sample taken with a
        # stride of 128 saw only the narrow ones (thresholds far inside the tails)
        "wide_units": (g.standard_normal((128, 2048))
                       * np.where(np.arange(2048) % 128 == 0, 1.0, 3.0)).astype(np.float32)
                      .ravel(),
    }


CASES = _cases()


@pytest.mark.parametrize("name", sorted(CASES))
def test_tail_select_is_exact_or_declines(name):
    k = accel.kernels()
    x = CASES[name]
    ranks, _ = _ranks_fractions(x.size, _ROBUST)
    lo, hi = float(x.min()), float(x.max())
    r = ranks[2:] if lo >= 0 else ranks
    v, ok = k.tail_select(x, r, lo, hi)
    if ok:
        np.testing.assert_array_equal(v, np.sort(x)[r])
    np.testing.assert_array_equal(k.select(x, r, lo, hi), np.sort(x)[r])


@pytest.mark.parametrize("name", ["normal", "relu", "cauchy64", "sorted", "column_scales",
                                  "wide_units"])
def test_tail_select_answers_the_plain_tails(name):
    """Thin tails of a continuous distribution: the tails answer (no bucket counting)."""
    k = accel.kernels()
    x = CASES[name]
    ranks, _ = _ranks_fractions(x.size, _ROBUST)
    lo, hi = float(x.min()), float(x.max())
    r = ranks[2:] if lo >= 0 else ranks
    assert k.tail_select(x, r, lo, hi)[1]


def test_tail_select_declines_a_middle_rank():
    k = accel.kernels()
    x = CASES["normal"]
    r = np.array([10, x.size // 2], dtype=np.intp)
    assert not k.tail_select(x, r, float(x.min()), float(x.max()))[1]


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("kind", ["pre", "act", "grad", "weight"])
def test_large_histograms_equal_the_numpy_path(name, kind):
    x = CASES[name]
    lo, hi, counts = kernel_histogram(kind, x, 50, None)
    with accel.numpy_only():
        (lo2, hi2), finite = _edges(kind, x, None)
        counts2 = bin_counts(x, lo2, hi2, 50, _finite=finite)
    assert (lo, hi) == (lo2, hi2)
    np.testing.assert_array_equal(counts, counts2)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("n", [1, 5, 63, 64, 65, 6000, 78400])
def test_finite_range_is_numpys_min_and_max(dtype, n):
    k = accel.kernels()
    x = np.random.default_rng(n).standard_normal(n).astype(dtype)
    assert k.finite_range(x) == (float(x.min()), float(x.max()))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("n", [5, 64, 6000])
def test_finite_range_refuses_a_non_finite_entry(bad, n):
    """NaN anywhere (the first lane block included), or an infinity: (nan, nan), so the
    histogram goes to the NumPy path, which drops the non-finite entries."""
    k = accel.kernels()
    for at in (0, n // 2, n - 1):
        x = np.random.default_rng(at).standard_normal(n).astype(np.float32)
        x[at] = bad
        lo, hi = k.finite_range(x)
        assert np.isnan(lo) and np.isnan(hi)


def test_histogram_of_a_layer_with_a_nan_drops_it():
    x = np.random.default_rng(1).standard_normal(6000).astype(np.float32)
    x[100] = np.nan
    lo, hi, counts = kernel_histogram("pre", x, 50, None) or (None, None, None)
    assert lo is None  # the kernel declines; histograms.histogram counts the finite entries
    from depthlab.probes.histograms import histogram

    assert histogram("pre", x, 50)[2].sum() == 5999


@pytest.mark.parametrize("n", [33, 4097, 3 * 4096 + 17, (1 << 18) + 5])
def test_positions_gather_every_block_and_remainder(n):
    """The gathering pass looks the buckets of 32 entries up together (an int32 table, vector
    lanes) and goes through a block one by one only where one is wanted; the wanted entries of
    a chunk's partial last block (and of the recomputed buckets above KEEP_UP_TO) are found."""
    k = accel.kernels()
    g = np.random.default_rng(n)
    x = g.standard_normal(n).astype(np.float32)
    x[-1] = np.median(x[:-1])  # a wanted entry in the remainder
    ranks, _ = _ranks_fractions(n, (2, 15, 50, 85, 98))
    lo, hi = float(x.min()), float(x.max())
    assert k._buckets(x, ranks, lo, hi)[4].dtype == np.int32
    at = k.positions(x, ranks, lo, hi)
    np.testing.assert_array_equal(x[at], np.sort(x)[ranks])
    np.testing.assert_array_equal(k.select(x, ranks, lo, hi), np.sort(x)[ranks])
