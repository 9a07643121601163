"""Round 27 (issue 14, probe overhead): the histograms' robust range (the 0.1% and 99.9%
percentiles) of arrays from EXTREME_FROM (2048) up to TAIL_FROM entries is selected by
``kernels.extreme_select``: each column's minimum and maximum in one pass (the array viewed as
about 64 rows), the k-th smallest column minimum ``t`` bounds the k lowest entries from above
(k columns each hold an entry ``<= t``), and those are gathered from the columns whose minimum
is ``<= t`` alone (likewise the high tail). No sample, no guess: exact whenever it answers, and
the bucket selection answers where it declines (a middle rank, too many ties at ``t``). The
recorded edges and counts are the NumPy path's, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from depthlab.activations import ReLU, Sigmoid, Tanh
from depthlab.probes import accel
from depthlab.probes.fused import _ROBUST, _ranks_fractions, kernel_histogram
from depthlab.probes.histograms import _edges, bin_counts, histogram

needs_kernels = pytest.mark.skipif(not accel.available(), reason="needs the compiled kernels")


def _arrays(n: int, dtype, seed: int) -> dict[str, np.ndarray]:
    g = np.random.default_rng(seed)
    z = g.standard_normal(n)
    cols = max(16, (n // 64) // 16 * 16)
    return {
        "normal": z,
        "uniform": g.uniform(-0.08, 0.08, n),
        "relu": np.maximum(z, 0),
        "sigmoid": 1 / (1 + np.exp(-3 * z)),
        "ties": np.round(z * 2),
        "saturated": np.clip(z * 3, -1, 1),
        "sorted": np.sort(z),
        "reversed": np.sort(z)[::-1].copy(),
        "tied_low_tail": np.concatenate([np.full(n // 50, -7.0), z[: n - n // 50]]),
        "tied_high_tail": np.concatenate([z[: n - n // 50], np.full(n // 50, 7.0)]),
        # every column constant (the period is the column count): the group minima are the
        # entries themselves, repeated
        "column_period": np.tile(g.standard_normal(cols), n // cols + 1)[:n],
        "one_wide_column": np.where(np.arange(n) % cols == 3, z * 50, z),
        "two_values": np.where(z > 1.5, 1.0, -1.0),
        "cauchy": g.standard_cauchy(n),
        "tiny_spread": 1.0 + z * 1e-6,
        "huge": z * (1e300 if dtype == np.float64 else 1e30),
    }


SIZES = [2048, 2049, 4095, 6000, 10000, 78400, (1 << 18) - 1]


def _robust_ranks(x: np.ndarray) -> np.ndarray:
    ranks, _ = _ranks_fractions(x.size, _ROBUST)
    return ranks[2:] if x.min() >= 0 else ranks


@needs_kernels
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", SIZES)
def test_extreme_select_is_exact_or_declines(n, dtype):
    k = accel.kernels()
    for name, x in _arrays(n, dtype, n).items():
        x = x.astype(dtype)
        r = _robust_ranks(x)
        want = np.sort(x)[r]
        v, ok = k.extreme_select(x, r)
        if ok:
            np.testing.assert_array_equal(v, want, err_msg=name)
        lo, hi = float(x.min()), float(x.max())
        if lo < hi:
            np.testing.assert_array_equal(k.select(x, r, lo, hi), want, err_msg=name)


@needs_kernels
@pytest.mark.parametrize("name", ["normal", "uniform", "relu", "sigmoid", "sorted", "reversed",
                                  "cauchy", "one_wide_column", "tiny_spread"])
@pytest.mark.parametrize("n", [2048, 6000, 78400])
def test_extreme_select_answers_the_plain_tails(name, n):
    """The new path runs (and is exact) for the layers' usual arrays. (A tail of ties in
    every column, 2% of the entries equal to the minimum, declines: the bucket selection's
    tie buckets answer it without sorting.)"""
    k = accel.kernels()
    x = _arrays(n, np.float32, 7)[name].astype(np.float32)
    r = _robust_ranks(x)
    v, ok = k.extreme_select(x, r)
    assert ok
    np.testing.assert_array_equal(v, np.sort(x)[r])


@needs_kernels
def test_extreme_select_on_many_random_arrays_and_tail_ranks():
    """Random sizes, scales, tie densities and tail ranks (up to the largest it accepts, one
    eighth of the column count): exact whenever it answers, and it answers the thin ones."""
    k = accel.kernels()
    g = np.random.default_rng(27)
    answered = 0
    for trial in range(300):
        n = int(g.integers(2048, 40000))
        dtype = np.float32 if trial % 2 else np.float64
        x = g.standard_normal(n) * 10.0 ** g.uniform(-5, 5)
        if trial % 3 == 0:
            x = np.round(x, int(g.integers(0, 3)))  # ties, up to a handful of values
        if trial % 7 == 0:
            x[g.integers(0, n, int(g.integers(1, n // 10)))] = x.min()  # a tied minimum
        x = x.astype(dtype)
        cols = (n // 64) // 16 * 16
        top = max(1, cols // 8)
        kl, kh = int(g.integers(0, top + 1)), int(g.integers(0, top + 1))
        r = np.unique(np.concatenate([g.integers(0, max(kl, 1), 2) if kl else [],
                                      n - 1 - g.integers(0, max(kh, 1), 2) if kh else []]))
        r = r.astype(np.intp)
        if r.size == 0:
            continue
        v, ok = k.extreme_select(x, r)
        if ok:
            answered += 1
            np.testing.assert_array_equal(v, np.sort(x)[r], err_msg=str(trial))
    assert answered > 150


@needs_kernels
def test_extreme_select_declines_a_middle_rank_and_constant_arrays():
    k = accel.kernels()
    x = np.random.default_rng(3).standard_normal(6000).astype(np.float32)
    assert not k.extreme_select(x, np.array([5, 3000], dtype=np.intp))[1]
    assert not k.extreme_select(x, np.array([1000], dtype=np.intp))[1]
    c = np.full(6000, 0.25, dtype=np.float32)  # every column at the threshold: too many ties
    v, ok = k.extreme_select(c, np.array([5, 5994], dtype=np.intp))
    assert not ok or (v == 0.25).all()


@needs_kernels
@pytest.mark.parametrize("n", [2047, 2048, 6000, 10000, 78400])
@pytest.mark.parametrize("kind,fn", [("pre", None), ("act", Sigmoid()), ("act", Tanh()),
                                     ("act", ReLU()), ("grad", None), ("weight", None)])
def test_histograms_equal_the_numpy_path(n, kind, fn):
    for name, x in _arrays(n, np.float32, n + 1).items():
        for dtype in (np.float32, np.float64):
            x = x.astype(dtype)
            got = kernel_histogram(kind, x, 30, fn)
            with accel.numpy_only():
                (lo2, hi2), finite = _edges(kind, x, fn)
                counts2 = bin_counts(x, lo2, hi2, 30, _finite=finite)
            assert got is not None, name
            assert got[:2] == (lo2, hi2), name
            np.testing.assert_array_equal(got[2], counts2, err_msg=name)


@pytest.mark.parametrize("n", [1, 2, 5, 64, 2048, 6000])
@pytest.mark.parametrize("bad", [None, np.nan, np.inf, -np.inf, "constant"])
def test_histogram_with_or_without_kernels_is_the_same(n, bad):
    """NaN and infinite entries (the kernel declines: the NumPy path drops them), constant and
    tiny arrays: ``histogram`` gives the same edges and counts with the kernels (when Numba is
    installed) as on the NumPy path alone."""
    x = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    if bad == "constant":
        x[:] = 0.5
    elif bad is not None:
        x[n // 2] = bad
    got = histogram("pre", x, 20)
    with accel.numpy_only():
        want = histogram("pre", x, 20)
    assert got[:2] == want[:2]
    np.testing.assert_array_equal(got[2], want[2])


def _recorded_histograms(numpy_path: bool):
    from depthlab.models import mlp
    from depthlab.probes import ProbeRecorder
    from depthlab.training import fit

    g = np.random.default_rng(0)
    x = g.standard_normal((256, 100)).astype(np.float32)
    y = g.integers(0, 10, 256)
    net = mlp([100, 64, 48, 10], activation="sigmoid", init="glorot_uniform", seed=0)
    rec = ProbeRecorder(every=1, histogram_steps=range(0, 12, 1))
    if numpy_path:
        with accel.numpy_only():
            fit(net, x, y, loss="cross_entropy", optimizer="sgd", lr=0.5, batch_size=64,
                epochs=None, max_steps=12, eval_train=False, callbacks=[rec])
    else:
        fit(net, x, y, loss="cross_entropy", optimizer="sgd", lr=0.5, batch_size=64,
            epochs=None, max_steps=12, eval_train=False, callbacks=[rec])
    return [(s, i, kind, lo, hi, list(c)) for s, i, kind, lo, hi, c, *_ in rec._hist]


@needs_kernels
def test_recorded_histograms_equal_the_numpy_path():
    """In situ: the recorder's histograms of 64 x 64 = 4096-entry layers and 6400-entry
    weights (through the new selection) are the NumPy path's, step by step."""
    got = _recorded_histograms(False)
    assert len(got) > 50
    assert got == _recorded_histograms(True)
