"""Exact order statistics and percentiles without sorting the whole array.

The ``r``-th order statistic of ``x`` is ``v[r]``, ``v`` the entries of ``x`` sorted ascending
(0-based ranks). Percentile ``q`` follows NumPy's default ``linear`` rule: position
``h = (n - 1) q / 100`` and value ``v[floor h] + (h - floor h)(v[ceil h] - v[floor h])``.

Bucket selection finds a few order statistics in a handful of linear passes instead of a sort:
every entry gets the bucket ``floor((x - min) * nb / (max - min))`` (``nb`` equal buckets over
``[min, max]``); rounding is monotone, so a larger entry never lands in a lower bucket and the
buckets hold consecutive runs of ``v``. The cumulative bucket counts say which bucket holds each
wanted rank; only the entries of those few buckets are gathered and sorted. The result is
exactly ``v[r]`` (the same value a full sort gives). Arrays of up to ``PARTITION_UP_TO``
entries use ``np.partition`` at the wanted ranks instead (tiny arrays: fewer calls); arrays with
NaN or infinite entries (NaN sorts last, as in ``np.sort``) and ranges too narrow to divide take
the full sort. With the compiled kernels (:mod:`depthlab.probes.accel`) bucket selection runs as
one compiled function (:func:`depthlab.probes.kernels.select`) at every size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from ..backend import Array
from . import accel

PARTITION_UP_TO = 1024
"""Arrays with at most this many entries are partitioned at the wanted ranks (introselect);
larger ones take bucket selection. (On random normal test arrays partition looked faster up to
~16k entries, but on a training run's own layer arrays bucket selection was faster already at
6000: measure in place.)"""

ENTRIES_PER_BUCKET = 4
"""Mean number of entries per bucket (``nb = n / ENTRIES_PER_BUCKET``)."""


def order_statistics(x: Array, ranks: Sequence[int],
                     bounds: tuple[float, float] | None = None) -> np.ndarray:
    """``v[r]`` for every rank ``r`` in ``ranks`` (0 <= r < x.size), ``v`` = the entries of ``x``
    sorted ascending; an array of ``x``'s dtype. Exact (see the module docstring). ``bounds``:
    ``(x.min(), x.max())`` when the caller already has them (saves two passes)."""
    f = np.asarray(x).reshape(-1)
    n = f.size
    r = np.asarray(ranks, dtype=np.intp)
    if n == 0:
        raise ValueError("order statistics of an empty array are undefined")
    if r.size and (r.min() < 0 or r.max() >= n):
        raise ValueError(f"ranks must lie in 0..{n - 1}, got {ranks!r}")
    return select_ranks(f, r, bounds)


def select_ranks(f: np.ndarray, r: np.ndarray, bounds: tuple[float, float] | None = None
                 ) -> np.ndarray:
    """:func:`order_statistics` of the flat non-empty ``f`` at the valid ranks ``r``."""
    n = f.size
    kernels = accel.for_array(f)
    if kernels is None and (n <= PARTITION_UP_TO or f.dtype.kind != "f"):
        return np.partition(f, np.unique(r))[r] if r.size else f[:0]
    if not r.size:
        return f[:0]
    lo, hi = (float(f.min()), float(f.max())) if bounds is None else bounds
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return np.sort(f)[r]
    if lo == hi:
        return np.full(r.size, f[0], dtype=f.dtype)
    if kernels is not None:
        if math.isfinite(hi - lo) and math.isfinite(4096.0 / (hi - lo)):
            return kernels.select(np.ascontiguousarray(f), r, lo, hi)
        return np.sort(f)[r]
    nb = max(2, n // ENTRIES_PER_BUCKET)
    scale = nb / (hi - lo)
    big = float(np.finfo(f.dtype).max) / 4  # x - lo and (x - lo) * scale stay finite
    if not (hi - lo < big and scale < big):
        return np.sort(f)[r]
    pos = np.subtract(f, f.dtype.type(lo))  # >= 0: lo is the minimum
    pos *= scale
    np.minimum(pos, nb - 1, out=pos)
    bucket = pos.astype(np.int32 if nb < 2**31 else np.intp)  # the faster conversion
    counts = np.bincount(bucket, minlength=nb)
    below = np.cumsum(counts)  # entries in buckets 0..b
    wanted = np.searchsorted(below, r, side="right")  # the bucket holding each rank
    take = np.zeros(nb, dtype=bool)
    take[wanted] = True
    vals = f[take[bucket]]
    vals.sort()
    # offset of each bucket's run within vals: entries of the wanted buckets below it
    kept = np.where(take, counts, 0)
    start_in_vals = np.cumsum(kept) - kept
    start_in_v = below - counts
    return vals[start_in_vals[wanted] + (r - start_in_v[wanted])]


def percentile_positions(n: int, percentiles: Sequence[float]) -> list[tuple[int, int, float]]:
    """``(floor h, ceil h, h - floor h)`` of NumPy's ``linear`` rule, ``h = (n - 1) q / 100``."""
    out = []
    for q in percentiles:
        h = (n - 1) * (float(q) / 100.0)
        lo = int(math.floor(h))
        out.append((lo, min(lo + 1, n - 1), h - lo))
    return out


def lerp(a: float, b: float, t: float) -> float:
    """``a + t (b - a)`` in NumPy's form: exact at both ends, monotone in ``t``."""
    return a + t * (b - a) if t < 0.5 else b - (1.0 - t) * (b - a)


def percentile_values(stats: np.ndarray, positions: list[tuple[int, int, float]]
                      ) -> list[float]:
    """Percentiles from the order statistics ``stats`` = ``v[floor h], v[ceil h]`` of each
    position (in that interleaved order)."""
    v = stats.tolist()
    return [lerp(v[2 * k], v[2 * k + 1], t) for k, (_, _, t) in enumerate(positions)]


@lru_cache(maxsize=256)
def plan(n: int, percentiles: tuple[float, ...]
         ) -> tuple[list[tuple[int, int, float]], np.ndarray]:
    """``(positions, ranks)`` of the percentiles of ``n`` entries: :func:`percentile_positions`
    and the ranks ``floor h, ceil h`` of each, interleaved (cached: a recorder asks for the same
    ones at every record)."""
    pos = percentile_positions(n, percentiles)
    ranks = np.array([i for lo, hi, _ in pos for i in (lo, hi)], dtype=np.intp)
    ranks.flags.writeable = False
    return pos, ranks


def percentiles(x: Array, qs: Sequence[float],
                bounds: tuple[float, float] | None = None) -> list[float]:
    """Percentiles ``qs`` (in [0, 100]) of all entries of ``x`` by NumPy's ``linear`` rule, from
    the needed order statistics only (``bounds`` as in :func:`order_statistics`)."""
    f = np.asarray(x).reshape(-1)
    if f.size == 0:
        raise ValueError("percentiles of an empty array are undefined")
    pos, ranks = plan(f.size, tuple(float(q) for q in qs))
    return percentile_values(select_ranks(f, ranks, bounds), pos)
