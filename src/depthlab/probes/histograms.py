"""Histograms of activations, pre-activations, back-propagated gradients and weights.

Bin edges are chosen for every histogram (each layer, kind and step) from that array's data,
so a layer whose values span 0-3 at initialization and 0-16 later is resolved at both times,
and a layer of ~1e-3 gradients is not one spike on another layer's range:

* from the central ``ROBUST_PERCENTILE``-th to ``100 - ROBUST_PERCENTILE``-th percentile of
  the finite entries: ``[0, hi]`` when every entry is >= 0 (ReLU outputs), else the symmetric
  ``[-m, m]`` with ``m = max(|lo|, |hi|)``; an array of ``ROBUST_SAMPLE_FROM`` entries or more
  takes these two percentiles from a fixed strided sample of about ``ROBUST_SAMPLE`` of its
  finite entries (:func:`robust_sample`), its counts from every entry;
* ``act`` of a bounded activation (sigmoid, tanh, softsign, ...) is clipped to the
  activation's range ``[f(-1e6), f(1e6)]``.

Finite values outside the edges are counted in the outermost bins, so the counts of a
histogram sum to the number of finite entries; ``-inf``, ``+inf`` and NaN entries are in no bin
(an infinity in an end bin read as a value at the range's edge: a diverged layer's ``+inf``
pre-activations drawn at ``+1``). :func:`histogram_nonfinite` also gives how many entries were
``-inf``, ``+inf`` and NaN; the recorder keeps them with each histogram (``n_neginf``,
``n_posinf``, ``n_nan``), beside its edges (``bin_left``, ``bin_right``). A histogram without a
finite entry has all counts 0 on the placeholder range ``[-1, 1]``.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from ..activations import ActivationFn
from ..backend import Array
from . import accel
from .quantiles import percentiles

HISTOGRAM_KINDS: tuple[str, ...] = ("pre", "act", "grad", "weight")
"""``pre`` = s, ``act`` = f(s), ``grad`` = dL/ds, ``weight`` = entries of the feeding W."""

NONFINITE_COLUMNS: tuple[str, ...] = ("n_neginf", "n_posinf", "n_nan")
"""The columns of a histogram table counting a histogram's ``-inf``, ``+inf`` and NaN entries
(in no bin), repeated on each of its rows."""

HISTOGRAM_COLUMNS: tuple[str, ...] = ("step", "layer", "kind", "bin_left", "bin_right", "count",
                                      *NONFINITE_COLUMNS)
"""The columns of ``ProbeRecorder.histograms()`` (one row per bin)."""

ROBUST_PERCENTILE = 0.1
"""Percentile cut at each end of the data range (a few extreme entries do not squeeze the
bulk of the distribution into one or two bins)."""

ROBUST_SAMPLE = 1 << 16
"""Target size of the strided sample whose percentiles give a large array's robust range (the
sample holds ``ceil(n / p)`` entries, ``p`` of :func:`sample_stride`: between about 0.6 and 1.25
times this). The 0.1% tail of 2^16 entries holds ~65 of them, so the sampled edge's rank is off
by ~8 sample entries (binomial standard deviation ``sqrt(m p (1 - p))``: ~12% of the tail's
mass, a few percent of a normal layer's edge) where the full array's edge is exact; the counts
still use every entry."""

ROBUST_SAMPLE_FROM = 1 << 18
"""Arrays with at least this many finite entries take their robust range from
:func:`robust_sample` (sampling stride >= 4); smaller ones from every entry. A 2048-wide layer's
weights (2^22 entries) then select from ~2^16 entries instead of counting all of them (the
robust range was ~half of a 4x2048 network's histogram time)."""

BOUNDED_LIMIT = 100.0
"""An activation with ``|f(+-1e6)| <= BOUNDED_LIMIT`` is treated as bounded."""


def activation_range(fn: ActivationFn) -> tuple[float, float] | None:
    """``(f(-1e6), f(1e6))`` sorted, for a bounded activation; None when unbounded (cached per
    activation: activations compare and hash by name and settings; an unhashable custom one is
    evaluated every time)."""
    try:
        return _cached_range(fn)
    except TypeError:  # unhashable
        return _range(fn)


def _range(fn: ActivationFn) -> tuple[float, float] | None:
    with np.errstate(all="ignore"):
        v = np.asarray(fn.forward(np.array([-1e6, 1e6], dtype=np.float64)), dtype=np.float64)
    if not np.all(np.isfinite(v)) or np.max(np.abs(v)) > BOUNDED_LIMIT:
        return None
    lo, hi = float(v.min()), float(v.max())
    return (lo, hi) if hi > lo else None


_cached_range = lru_cache(maxsize=256)(_range)


@lru_cache(maxsize=256)
def sample_stride(n: int, shape: tuple[int, ...]) -> int:
    """Stride of :func:`robust_sample` for ``n`` finite entries of an array of ``shape``: 1
    below ``ROBUST_SAMPLE_FROM``, else the least ``p >= n // ROBUST_SAMPLE`` coprime with
    ``prod(shape[1:])`` (the C-ordered row width), so that the entries ``i p`` fall on every
    column of a layer (unit) alike: a stride dividing the width sampled a few units only."""
    if n < ROBUST_SAMPLE_FROM:
        return 1
    width = math.prod(shape[1:])
    p = n // ROBUST_SAMPLE
    while math.gcd(p, width) != 1:
        p += 1
    return p


def robust_sample(finite: Array, shape: tuple[int, ...]) -> Array:
    """The entries whose robust percentiles give the histogram range of the finite entries
    ``finite`` (in C order) of an array of ``shape``: ``finite`` itself, or for
    ``sample_stride > 1`` the C-contiguous copy of ``finite.reshape(-1)[::stride]`` (entries
    ``0, p, 2p, ...``; a deterministic sample: the same array gives the same edges)."""
    p = sample_stride(finite.size, tuple(shape))
    return finite if p == 1 else np.ascontiguousarray(finite.reshape(-1)[::p])


def choose_edges(kind: str, x: Array, fn: ActivationFn | None = None) -> tuple[float, float]:
    """The histogram range ``(lo, hi)`` for ``kind`` from the array ``x`` (see the module
    docstring)."""
    return _edges(kind, x, fn)[0]


def histogram(kind: str, x: Array, n_bins: int, fn: ActivationFn | None = None
              ) -> tuple[float, float, np.ndarray]:
    """``(lo, hi, counts)``: :func:`choose_edges` and :func:`bin_counts` of one array, its
    minimum and maximum found once for both (with the compiled kernels: one call,
    :func:`depthlab.probes.fused.kernel_histogram`)."""
    return histogram_nonfinite(kind, x, n_bins, fn)[:3]


def histogram_nonfinite(kind: str, x: Array, n_bins: int, fn: ActivationFn | None = None
                        ) -> tuple[float, float, np.ndarray, tuple[int, int, int]]:
    """``(lo, hi, counts, (n_neginf, n_posinf, n_nan))``: :func:`histogram` of ``x`` (counts of
    its finite entries only) and how many entries of ``x`` are ``-inf``, ``+inf`` and NaN, so
    ``counts.sum() + n_neginf + n_posinf + n_nan == x.size``. The all-finite case costs what
    :func:`histogram` did (the compiled kernel's one pass finds it)."""
    from .fused import kernel_histogram

    fast = kernel_histogram(kind, x, n_bins, fn)  # None when some entry is not finite
    if fast is not None:
        return (*fast, (0, 0, 0))
    (lo, hi), finite = _edges(kind, x, fn)
    if finite:
        return lo, hi, bin_counts(x, lo, hi, n_bins, _finite=True), (0, 0, 0)
    flat = x.reshape(-1)
    ok = np.isfinite(flat)
    n_nan = int(np.count_nonzero(np.isnan(flat)))
    n_pos = int(np.count_nonzero(flat == np.inf))
    n_neg = int(flat.size - np.count_nonzero(ok)) - n_nan - n_pos
    return lo, hi, bin_counts(flat[ok], lo, hi, n_bins, _finite=True), (n_neg, n_pos, n_nan)


def _edges(kind: str, x: Array, fn: ActivationFn | None) -> tuple[tuple[float, float], bool]:
    """``choose_edges`` and whether every entry of ``x`` is finite."""
    if kind not in HISTOGRAM_KINDS:
        raise ValueError(f"unknown histogram kind {kind!r}; expected one of {HISTOGRAM_KINDS}")
    if x.size == 0:
        return (-1.0, 1.0), True
    low, high = float(x.min()), float(x.max())  # NaN or infinite iff some entry is
    all_finite = bool(np.isfinite(low) and np.isfinite(high))
    finite = x if all_finite else x[np.isfinite(x)]
    if finite.size == 0:
        return (-1.0, 1.0), False
    if finite is not x:
        low, high = float(finite.min()), float(finite.max())
    # the robust range: order statistics by bucket selection, not a sort or partition (the low
    # one only where it is used: a ReLU output's many zeros are never gathered and sorted), of
    # a strided sample of a large array; the rule (>= 0 or symmetric) from the whole array's
    sample = robust_sample(finite, x.shape)
    bounds = (low, high) if sample is finite else (float(sample.min()), float(sample.max()))
    top = 100.0 - ROBUST_PERCENTILE
    if low >= 0.0:
        hi = percentiles(sample, (top,), bounds=bounds)[0]
        out = (0.0, hi if hi > 0 else max(high, 1.0))
    else:
        lo, hi = percentiles(sample, (ROBUST_PERCENTILE, top), bounds=bounds)
        m = max(abs(lo), abs(hi))
        out = (-m, m) if m > 0 else (-1.0, 1.0)
    if kind == "act" and fn is not None:
        r = activation_range(fn)
        if r is not None:
            clipped = (max(out[0], r[0]), min(out[1], r[1]))
            out = clipped if clipped[1] > clipped[0] else r
    return out, all_finite


def bin_counts(x: Array, lo: float, hi: float, n_bins: int, *, _finite: bool = False
               ) -> np.ndarray:
    """Counts of the entries of ``x`` in ``n_bins`` equal bins over ``[lo, hi]``: bin ``i`` holds
    the ``v`` with ``e_i <= v < e_(i+1)`` (the last bin closed), ``e`` = :func:`bin_edges` (the
    edges ``np.linspace(lo, hi, n_bins + 1)`` that ``np.histogram(x, n_bins, (lo, hi))`` uses,
    so a value exactly on an edge is counted in the bin it starts, as NumPy counts it); finite
    values beyond the range go to the end bins, ``-inf``, ``+inf`` and NaN entries are dropped
    (so the counts sum to the number of finite entries). Returns int64 counts of length
    ``n_bins``. (The bin of ``v`` is first ``trunc(clip((v - lo) * n_bins / (hi - lo), 0,
    n_bins - 1))``, rounded in ``x``'s dtype, then moved to the bin whose edges hold ``v``
    (:func:`fix_bins`); the compiled kernel does the same.) ``_finite``: the caller knows every
    entry is finite."""
    if not hi > lo:
        raise ValueError(f"histogram range must have hi > lo, got ({lo}, {hi})")
    flat = x.reshape(-1)
    scale = n_bins / (hi - lo)
    kernels = accel.for_array(flat)
    if not _finite and flat.size and flat.dtype.kind == "f" and not _all_finite(flat, kernels):
        flat = flat[np.isfinite(flat)]  # then no bin position is NaN or an infinity's
    if (kernels is not None and flat.size and n_bins < 2**24
            and _representable(scale, flat.dtype)
            and kernels.one_bin_off(lo, hi, scale, n_bins, float(np.finfo(flat.dtype).eps))):
        return kernels.bin_counts(np.ascontiguousarray(flat), lo, scale, n_bins, hi)
    with np.errstate(all="ignore"):
        pos = flat - x.dtype.type(lo) if x.dtype.kind == "f" else flat - lo
        pos *= scale
        np.clip(pos, 0, n_bins - 1, out=pos)  # infinities go to the end bins, NaN stays
        if not np.isfinite(pos.sum()):  # finite bounded entries cannot overflow the sum
            kept = np.isfinite(pos)
            pos, flat = pos[kept], flat[kept]
    # float -> int32 converts several times faster than float -> int64
    idx = pos.astype(np.int32 if n_bins < 2**31 else np.intp)
    idx = fix_bins(flat, idx, lo, hi, n_bins)
    return np.bincount(idx, minlength=n_bins)[:n_bins].astype(np.int64)


def fix_bins(flat: np.ndarray, idx: np.ndarray, lo: float, hi: float, n_bins: int
             ) -> np.ndarray:
    """The bins ``k`` with ``e_k <= v < e_(k+1)`` (``e`` = :func:`bin_edges`, ``e_0 = -inf``
    and ``e_n = +inf`` for the end bins) of the finite entries ``flat``, from ``idx``, their bins
    by the rounded position (a value on an edge, e.g. a ReLU layer's exact zeros at the middle
    edge of ``[-m, m]``, may have rounded into the bin below): moved one bin at a time until
    every entry lies within its bin's edges."""
    if not (flat.size and math.isfinite(hi - lo)):  # (no edges where linspace overflows)
        return idx
    e = bin_edges(lo, hi, n_bins)
    e[0], e[-1] = -np.inf, np.inf
    while True:
        move = (flat >= e[idx + 1]).astype(idx.dtype)
        move -= flat < e[idx]
        if not move.any():
            return idx
        idx += move


def _all_finite(flat: np.ndarray, kernels) -> bool:
    """Whether every entry of the flat, non-empty float array is finite (one pass)."""
    if kernels is not None:
        low, high = kernels.finite_range(np.ascontiguousarray(flat))  # NaN if one is not
        return bool(np.isfinite(low) and np.isfinite(high))
    with np.errstate(all="ignore"):
        return bool(np.isfinite(flat.min()) and np.isfinite(flat.max()))


def _representable(v: float, dtype: np.dtype) -> bool:
    """``v`` rounds to a positive, finite, normal number of ``dtype``."""
    info = np.finfo(dtype)
    return float(info.tiny) <= v < float(info.max)


def bin_edges(lo: float, hi: float, n_bins: int) -> np.ndarray:
    """The ``n_bins + 1`` edges of :func:`bin_counts`."""
    return np.linspace(lo, hi, n_bins + 1)
