"""Bucket selection returns exactly the order statistics and percentiles of a full sort."""

import numpy as np
import pytest

from depthlab.probes import accel, quantiles
from depthlab.probes.histograms import bin_counts, choose_edges
from depthlab.probes.quantiles import order_statistics, percentiles


def _arrays():
    g = np.random.default_rng(3)
    yield g.standard_normal(5000)
    yield g.integers(-3, 3, 4000).astype(float)  # heavy ties
    yield g.standard_cauchy(3000) * 1e30  # heavy tails: most entries in one bucket
    yield np.maximum(g.standard_normal(6000), 0)  # half zeros (ReLU outputs)
    yield g.standard_normal(2000) * 1e-42  # denormal range
    yield np.full(1000, 2.5)
    yield np.array([3e38, -3e38] * 400)  # x - min would overflow float32
    yield g.standard_normal(300)  # below the sort threshold


@pytest.fixture(params=["compiled kernels", "bucket selection", "partition"])
def path(request, monkeypatch):
    """Run a test through the compiled kernels (depthlab[fast], in the dev extra), and on the
    NumPy path through bucket selection (every size) and through np.partition."""
    if request.param == "compiled kernels":
        assert accel.available()
        yield request.param
        return
    limit = 0 if request.param == "bucket selection" else 10**9
    monkeypatch.setattr(quantiles, "PARTITION_UP_TO", limit)
    with accel.numpy_only():
        yield request.param


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_order_statistics_equal_a_full_sort(dtype, path):
    g = np.random.default_rng(0)
    for x in _arrays():
        x = x.astype(dtype)
        ranks = np.concatenate([[0, x.size - 1], g.integers(0, x.size, 20)])
        np.testing.assert_array_equal(order_statistics(x.reshape(-1, 10)
                                                       if x.size % 10 == 0 else x, ranks),
                                      np.sort(x)[ranks])


def test_non_finite_entries_sort_like_numpy(path):
    x = np.random.default_rng(1).standard_normal(4000).astype(np.float32)
    x[[5, 17, 900]] = [np.nan, np.inf, -np.inf]
    ranks = [0, 1, 2000, 3997, 3998, 3999]
    np.testing.assert_array_equal(order_statistics(x, ranks), np.sort(x)[ranks])


def test_percentiles_match_numpy_linear_rule(path):
    x = np.random.default_rng(2).standard_normal((128, 64)).astype(np.float32) * 3 + 1
    q = (0, 0.1, 2, 15, 50, 85, 98, 99.9, 100)
    np.testing.assert_allclose(percentiles(x, q), np.percentile(x.astype(np.float64), q),
                               rtol=1e-6)


def test_bad_ranks_and_empty_arrays_are_refused():
    with pytest.raises(ValueError, match="ranks must lie in 0..9"):
        order_statistics(np.arange(10.0), [10])
    with pytest.raises(ValueError, match="empty"):
        order_statistics(np.zeros(0), [0])


def test_histogram_edges_skip_non_finite_and_counts_keep_every_finite_entry(path):
    x = np.random.default_rng(4).standard_normal(5000).astype(np.float32)
    x[:3] = [np.nan, np.inf, -np.inf]
    lo, hi = choose_edges("pre", x)
    finite = x[np.isfinite(x)]
    m = np.abs(np.percentile(finite.astype(np.float64), (0.1, 99.9))).max()
    assert (lo, hi) == pytest.approx((-m, m), rel=1e-6)
    assert bin_counts(x, lo, hi, 50).sum() == x.size - 3  # NaN, +inf, -inf are in no bin
