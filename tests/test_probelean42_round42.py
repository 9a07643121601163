"""Round 42 (issue 14, probe CPU cost): a large array's histogram range (the 0.1% and 99.9%
percentiles) comes from a fixed strided sample of about 2^16 of its entries, the counts from
every entry; the kernel and the NumPy path take the same sample (same edges, same counts), and
the sampled edge is the full array's percentile at a level within the sample quantile's own
standard error."""

from __future__ import annotations

import math

import numpy as np
import pytest

from depthlab.probes import accel
from depthlab.probes.fused import kernel_histogram
from depthlab.probes.histograms import _edges, bin_counts

P = 0.1  # the robust percentile
M = 1 << 16  # the sample's target size


def _stride(n: int, width: int) -> int:
    """The rule: the least p >= n // 2^16 coprime with the row width (arrays >= 2^18)."""
    p = n // M
    while math.gcd(p, width) != 1:
        p += 1
    return p


def _cases() -> dict[str, np.ndarray]:
    g = np.random.default_rng(42)
    return {
        "normal": g.standard_normal((512, 2048)).astype(np.float32),
        "relu": np.maximum(g.standard_normal((512, 2048)), 0).astype(np.float32),
        "cauchy64": g.standard_cauchy((256, 1024)),
        # a width that n // 2^16 divides: a stride of 15 or 17 would see 1/5 or 1/17 of it
        "column_scales": (g.standard_normal((3072, 340)) * np.linspace(0.01, 5, 340)).astype(
            np.float32),
    }


CASES = _cases()


@pytest.mark.parametrize("name", sorted(CASES))
def test_large_edges_are_the_strided_samples_percentiles_on_both_paths(name):
    x = CASES[name]
    width = x.shape[1]
    p = _stride(x.size, width)
    sample = x.reshape(-1)[::p].astype(np.float64)
    assert 2**15 < sample.size <= M
    assert len({i * p % width for i in range(sample.size)}) == width  # every column sampled
    lo_q, hi_q = np.percentile(sample, (P, 100 - P))
    want = (0.0, hi_q) if x.min() >= 0 else (-max(-lo_q, hi_q), max(-lo_q, hi_q))
    with accel.numpy_only():
        (lo, hi), finite = _edges("pre", x, None)
        counts = bin_counts(x, lo, hi, 50, _finite=finite)
    assert (lo, hi) == pytest.approx(want, rel=1e-12, abs=0)
    assert counts.sum() == x.size  # every entry counted
    if accel.available():
        got = kernel_histogram("pre", x, 50, None)
        assert got is not None and got[:2] == (lo, hi)
        np.testing.assert_array_equal(got[2], counts)


@pytest.mark.parametrize("name", sorted(CASES))
def test_sampled_edge_is_within_the_quantile_estimators_error(name):
    """F(edge), the fraction of the whole array below the sampled percentile, is within four
    binomial standard errors ``sqrt(p (1 - p) / m)`` (plus a rank) of ``p``."""
    x = CASES[name]
    flat = np.sort(x.reshape(-1).astype(np.float64))
    m = x.reshape(-1)[::_stride(x.size, x.shape[1])].size
    q = P / 100
    tol = 4 * math.sqrt(q * (1 - q) / m) + 1 / m
    with accel.numpy_only():
        (lo, hi), _ = _edges("pre", x, None)
    high = np.searchsorted(flat, hi, side="left") / flat.size  # F at the upper edge
    if x.min() >= 0:
        assert abs((1 - high) - q) <= tol
    else:  # the symmetric range: the larger of the two tails' edges
        low = np.searchsorted(flat, lo, side="right") / flat.size
        assert min(abs(low - q), abs((1 - high) - q)) <= tol


def test_small_arrays_keep_every_entry():
    x = np.random.default_rng(1).standard_normal((128, 2047)).astype(np.float32)  # < 2^18
    with accel.numpy_only():
        (lo, hi), _ = _edges("pre", x, None)
    m = np.abs(np.percentile(x.astype(np.float64), (P, 100 - P))).max()
    assert (lo, hi) == pytest.approx((-m, m), rel=1e-12, abs=0)
