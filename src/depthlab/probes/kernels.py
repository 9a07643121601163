"""Compiled one-pass kernels of the probe statistics (Numba; the optional ``depthlab[fast]``).

Imported only through :func:`depthlab.probes.accel.kernels` (``import depthlab`` never loads
Numba). Every kernel reads its array once, accumulates in float64 whatever the array's dtype
(float32 or float64), and is compiled with ``cache=True`` (machine code kept in ``__pycache__``
beside this file, or in Numba's user cache directory when that is read-only). The NumPy
functions of :mod:`depthlab.probes.stats`, :mod:`~depthlab.probes.quantiles` and
:mod:`~depthlab.probes.histograms` define the results; a kernel returns the same counts and
order statistics exactly and the same moments to rounding. Arrays with a NaN or an infinite
entry are left to the NumPy path (callers check the finiteness of the sums).

Formulas (``n`` entries ``x_i``, a shift ``c`` near the mean, e.g. ``x_0``, ``d_i = x_i - c``):

* :func:`moments`: ``S1 = sum d_i``, ``S2 = sum d_i^2``, ``A = sum |x_i|`` and
  ``Z = #{x_i <= 0}``; then ``mean = c + S1/n`` and ``var = S2/n - (S1/n)^2`` (the shifted
  one-pass formula: nothing cancels while ``(S1/n)^2`` is not large against ``var``).
* :func:`derivative_counts`: for ``D = f'(s)`` of shape (batch, units),
  ``#{|D_bj| < thr}`` and the number of units ``j`` with ``D_bj == 0`` for every ``b``.
* :func:`select`: bucket selection (see :mod:`depthlab.probes.quantiles`): entry ``x`` goes to
  bucket ``floor((x - lo) * nb / (hi - lo))`` (clipped to ``nb - 1``), a monotone map; counts per
  bucket, the buckets that hold the wanted ranks, their entries gathered and sorted; rank ``r``
  is element ``r - (entries in lower buckets)`` of its bucket's sorted run.
* :func:`bin_counts`: bin ``clip((x - lo) * scale, 0, nb - 1)`` truncated, with the
  subtraction and product rounded in the array's dtype exactly as the NumPy path rounds them
  (arrays without NaN; the bins are then the NumPy path's bins).
* :func:`update_norms`: ``sum w0_i^2`` and ``sum (w_i - w0_i)^2`` (the update ratio
  ``||W - W0|| / ||W0||`` without writing the difference).
"""

from __future__ import annotations

import numba
import numpy as np

_JIT = dict(nogil=True, cache=True, fastmath={"reassoc"})
"""``reassoc`` only: sums may be split into vector lanes (faster, still deterministic for one
machine and build); NaN and infinity keep IEEE semantics (no ``nnan``/``ninf``)."""


@numba.njit(**_JIT)
def moments(x: np.ndarray, c: float) -> tuple[float, float, float, int]:
    """``(S1, S2, A, Z)`` of the flat array ``x`` with the shift ``c`` (module docstring)."""
    s1 = 0.0
    s2 = 0.0
    ab = 0.0
    z = 0
    for i in range(x.size):
        v = np.float64(x[i])
        d = v - c
        s1 += d
        s2 += d * d
        ab += abs(v)
        z += v <= 0.0
    return s1, s2, ab, z


DERIVATIVE_GIVEN, DERIVATIVE_SIGMOID, DERIVATIVE_TANH, DERIVATIVE_STEP = 0, 1, 2, 3
"""How :func:`layer` obtains ``D = f'(s)``: from the array ``d``, or computed in the pass, in
the array's dtype, as the activation's own ``derivative`` computes it: sigmoid
``(1 - a) a``, tanh ``1 - a a``, ReLU ``1 if s > 0 else 0``."""

SLOTS = 5
"""Entries per array in :func:`layer`'s result: ``c, S1, S2, A, Z``."""


@numba.njit(**_JIT)
def _put(out: np.ndarray, k: int, c: float, s1: float, s2: float, ab: float, z: int) -> None:
    out[k] = c
    out[k + 1] = s1
    out[k + 2] = s2
    out[k + 3] = ab
    out[k + 4] = z


@numba.njit(**_JIT)
def layer(s: np.ndarray, a: np.ndarray, d: np.ndarray, how: int, thr: float, g: np.ndarray,
          w: np.ndarray, dw: np.ndarray) -> np.ndarray:
    """Everything of one hidden layer but its order statistics, in one call: for ``s`` and
    ``a`` (2-d, batch x units, read together in one pass), ``g``, ``w`` and ``dw`` (flat; empty
    when absent) the terms ``c, S1, S2, A, Z`` of :func:`moments` (shift ``c`` = the first
    entry), then ``#{|D_bj| < thr}``, the number of dead units (``D_bj == 0`` for every ``b``),
    ``min s`` and ``max s`` (float64 array of ``5 * SLOTS + 4``). ``D`` as ``how`` says
    (:data:`DERIVATIVE_GIVEN`, ...). ``min``/``max`` are meaningful only for finite ``s``."""
    out = np.zeros(5 * SLOTS + 4)
    rows, cols = s.shape
    one = s.dtype.type(1)
    zero = s.dtype.type(0)
    t = s.dtype.type(thr)
    cs = np.float64(s[0, 0])
    ca = np.float64(a[0, 0])
    alive = np.zeros(cols, dtype=np.bool_)
    cmin = s[0].copy()
    cmax = s[0].copy()
    s1 = s2 = sa = a1 = a2 = aa = 0.0
    zs = za = sat = 0
    for b in range(rows):
        for j in range(cols):
            u = s[b, j]
            v = a[b, j]
            if how == DERIVATIVE_SIGMOID:
                dv = (one - v) * v
            elif how == DERIVATIVE_TANH:
                dv = one - v * v
            elif how == DERIVATIVE_STEP:
                dv = one if u > zero else zero
            else:
                dv = d[b, j]
            sat += abs(dv) < t
            alive[j] |= dv != zero
            cmin[j] = u if u < cmin[j] else cmin[j]
            cmax[j] = u if u > cmax[j] else cmax[j]
            x = np.float64(u)
            e = x - cs
            s1 += e
            s2 += e * e
            sa += abs(x)
            zs += x <= 0.0
            y = np.float64(v)
            e = y - ca
            a1 += e
            a2 += e * e
            aa += abs(y)
            za += y <= 0.0
    _put(out, 0, cs, s1, s2, sa, zs)
    _put(out, SLOTS, ca, a1, a2, aa, za)
    k = 2 * SLOTS
    for arr in (g, w, dw):
        if arr.size:
            c = np.float64(arr[0])
            r1, r2, ra, rz = moments(arr, c)
            _put(out, k, c, r1, r2, ra, rz)
        k += SLOTS
    out[25] = sat
    out[26] = cols - alive.sum()
    out[27] = cmin.min()
    out[28] = cmax.max()
    return out


@numba.njit(**_JIT)
def derivative_counts(d: np.ndarray, thr: float) -> tuple[int, int]:
    """``(#{|d_bj| < thr}, #{j: d_bj == 0 for all b})`` of the 2-d array ``d`` (batch, units);
    ``thr`` compared in ``d``'s dtype."""
    rows, cols = d.shape
    t = d.dtype.type(thr)
    alive = np.zeros(cols, dtype=np.bool_)
    sat = 0
    for b in range(rows):
        for j in range(cols):
            v = d[b, j]
            sat += abs(v) < t
            alive[j] |= v != 0
    return sat, cols - alive.sum()


@numba.njit(**_JIT)
def select(x: np.ndarray, ranks: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``v[r]`` for each ``r`` in ``ranks``, ``v`` the flat array ``x`` sorted ascending.
    Preconditions (checked by the caller): every entry finite, ``lo``/``hi`` its minimum and
    maximum, ``lo < hi`` and ``nb / (hi - lo)`` finite."""
    n = x.size
    nb = max(2, min(n // 32, 4096))  # a few thousand buckets: the counts stay in L1
    scale = nb / (hi - lo)
    top = nb - 1
    idx = np.empty(n, dtype=np.uint16)  # each entry's bucket, computed once (vectorized)
    for i in range(n):
        idx[i] = min(int((np.float64(x[i]) - lo) * scale), top)
    lanes = np.zeros((4, nb), dtype=np.int64)  # 4 partial counts: no store-to-load stalls
    n4 = n // 4 * 4
    for i in range(0, n4, 4):
        for u in range(4):
            lanes[u, idx[i + u]] += 1
    for i in range(n4, n):
        lanes[0, idx[i]] += 1
    counts = lanes.sum(axis=0)
    below = np.cumsum(counts)  # entries in buckets 0..k
    wanted = np.searchsorted(below, ranks, side="right")
    take = np.zeros(nb, dtype=np.bool_)
    for k in wanted:
        take[k] = True
    start = np.zeros(nb, dtype=np.int64)  # offset of each taken bucket's run in vals
    m = 0
    for k in range(nb):
        if take[k]:
            start[k] = m
            m += counts[k]
    vals = np.empty(m, dtype=x.dtype)
    fill = start.copy()
    for i in range(n):
        k = idx[i]
        if take[k]:
            vals[fill[k]] = x[i]
            fill[k] += 1
    vals.sort()
    out = np.empty(ranks.size, dtype=x.dtype)
    for j in range(ranks.size):
        k = wanted[j]
        out[j] = vals[start[k] + ranks[j] - (below[k] - counts[k])]
    return out


@numba.njit(**_JIT)
def bin_counts(x: np.ndarray, lo: float, scale: float, nb: int) -> np.ndarray:
    """Counts of the flat array ``x`` in ``nb`` bins: ``trunc(clip((x - lo) * scale, 0,
    nb - 1))`` computed in ``x``'s dtype (``lo``, ``scale`` rounded to it first). Precondition
    (checked by the caller): no NaN entry."""
    lo_t = x.dtype.type(lo)
    sc_t = x.dtype.type(scale)
    top = x.dtype.type(nb - 1)
    zero = x.dtype.type(0)
    lanes = np.zeros((4, nb), dtype=np.int64)  # 4 partial counts: no store-to-load stalls
    n4 = x.size // 4 * 4
    for i in range(0, n4, 4):
        for u in range(4):
            p = (x[i + u] - lo_t) * sc_t
            p = min(max(p, zero), top)
            lanes[u, int(p)] += 1
    for i in range(n4, x.size):
        p = (x[i] - lo_t) * sc_t
        p = min(max(p, zero), top)
        lanes[0, int(p)] += 1
    return lanes.sum(axis=0)


@numba.njit(**_JIT)
def update_norms(w: np.ndarray, w0: np.ndarray) -> tuple[float, float]:
    """``(sum w0^2, sum (w - w0)^2)`` of two flat arrays of one shape (module docstring)."""
    n0 = 0.0
    n1 = 0.0
    for i in range(w.size):
        a = np.float64(w0[i])
        d = np.float64(w[i]) - a
        n0 += a * a
        n1 += d * d
    return n0, n1
