"""Round 47 (probes47): the gathering pass of the bucket selection skips runs of entries with
no wanted bucket (``kernels._gather_kept``); the entries gathered, their order, and so every
position and percentile, are those of the plain loop over every entry."""

from __future__ import annotations

import numpy as np
import pytest

kernels = pytest.importorskip("depthlab.probes.kernels")

PERCENTILE_SETS = [(2, 15, 50, 85, 98), (0, 100), (0.1, 99.9), (25, 50, 75), (1, 5, 95, 99)]


def _ranks(n: int, qs) -> np.ndarray:
    from depthlab.probes.quantiles import plan
    return np.asarray(plan(n, tuple(float(q) for q in qs))[1])


def _plain_gather(x, take, start, m, kept):
    """The reference: every entry whose bucket is taken, in bucket order, then index order."""
    i = np.flatnonzero(take[kept] != 0)
    order = np.argsort(kept[i], kind="stable")
    where = i[order]
    return x[where], where


def _arrays(rng):
    """Arrays of many sizes (around multiples of KEPT_RUN and of the blocks), dtypes, ties."""
    run = kernels.KEPT_RUN
    sizes = [2, 3, run - 1, run, run + 1, 2 * run + 5, 97, 1000, 6000, 32768 + 7]
    for n in sizes:
        for dtype in (np.float32, np.float64):
            yield rng.standard_normal(n).astype(dtype)
            yield np.maximum(rng.standard_normal(n), 0).astype(dtype)  # ReLU: tied zeros
            yield rng.integers(-3, 4, n).astype(dtype)  # few distinct values
            yield (1 / (1 + np.exp(-8 * rng.standard_normal(n)))).astype(dtype)  # saturated


@pytest.mark.parametrize("qs", PERCENTILE_SETS)
def test_gather_is_the_plain_loop_element_for_element(qs):
    rng = np.random.default_rng(47)
    for x in _arrays(rng):
        lo, hi = float(x.min()), float(x.max())
        if lo == hi:
            continue
        ranks = _ranks(x.size, qs)
        nb, counts, below, wanted, take, start, m, kept = kernels._buckets(x, ranks, lo, hi)
        assert kept.size == x.size
        vals, where = kernels._gather(x, lo, hi, nb, take, start, m, kept)
        ref_vals, ref_where = _plain_gather(x, take, start, m, kept)
        assert np.array_equal(where, ref_where), (x.size, x.dtype)
        assert np.array_equal(vals, ref_vals)


@pytest.mark.parametrize("qs", PERCENTILE_SETS)
def test_positions_and_select_are_exact_order_statistics(qs):
    rng = np.random.default_rng(4747)
    for x in _arrays(rng):
        lo, hi = float(x.min()), float(x.max())
        if lo == hi:
            continue
        ranks = _ranks(x.size, qs)
        v = np.sort(x)[ranks]
        assert np.array_equal(x[kernels.positions(x, ranks, lo, hi)], v)
        assert np.array_equal(kernels.select(x, ranks, lo, hi), v)


def test_gather_kept_takes_every_entry_when_every_bucket_is_wanted():
    """A run whose every entry is wanted, and a last partial run: nothing skipped or doubled."""
    n = 3 * kernels.KEPT_RUN + 5
    x = np.arange(n, dtype=np.float64)[::-1].copy()
    kept = np.arange(n, dtype=np.uint16)[::-1].copy()
    take = np.ones(n, dtype=np.int32)
    start = np.arange(n, dtype=np.int64)
    vals = np.empty(n)
    where = np.empty(n, dtype=np.intp)
    kernels._gather_kept(x, take, kept, vals, where, start.copy())
    assert np.array_equal(vals, np.arange(n, dtype=np.float64))
    assert np.array_equal(where, np.arange(n)[::-1])
