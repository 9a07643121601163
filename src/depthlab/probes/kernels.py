"""Compiled one-pass kernels of the probe statistics (Numba; the optional ``depthlab[fast]``).

Imported only through :func:`depthlab.probes.accel.kernels` (``import depthlab`` never loads
Numba). The kernels accumulate in float64 whatever the array's dtype (float32 or float64) and
are compiled with ``cache=True`` (machine code kept on disk, see :mod:`depthlab.probes.accel`).
The NumPy functions of :mod:`depthlab.probes.stats`, :mod:`~depthlab.probes.quantiles` and
:mod:`~depthlab.probes.histograms` define the results; a kernel returns the same counts, order
statistics and percentiles exactly and the same moments to rounding. A layer with a NaN or an
infinite entry is left to the NumPy path (the kernel says so).

Formulas (``n`` entries ``x_i``, a shift ``c`` near the mean, ``d_i = x_i - c``):

* :func:`moments`: ``S1 = sum d_i``, ``S2 = sum d_i^2``, ``A = sum |x_i|``, ``Z = #{x_i <= 0}``;
  ``mean = c + S1/n``, ``var = S2/n - (S1/n)^2`` (:func:`mean_std`: ``c`` = the first entry,
  and once more with ``c`` = that mean when ``(S1/n)^2 > CANCELLATION_RATIO var``);
  :func:`block_moments` the same sums, each block of 512 entries summed in the array's dtype.
* :func:`select` / :func:`positions`: bucket selection (see :mod:`depthlab.probes.quantiles`):
  entry ``x`` goes to bucket ``1 + min(floor((x - lo) nb / (hi - lo)), nb - 1)``, or to the
  tie buckets 0 (``x = lo``) and ``nb + 1`` (``x = hi``), a monotone map; counts per bucket,
  the buckets holding the wanted ranks, their entries gathered and sorted; rank ``r`` is
  element ``r - (entries in lower buckets)`` of its bucket's sorted run. A rank in a tie bucket
  is ``lo`` or ``hi`` without gathering (a ReLU output's zeros, saturated units).
* :func:`layer`: one hidden layer in one call: mean and std of ``s`` and ``a`` (the sums of
  :func:`shifted_sums`), ``#{|D| < thr} / n`` (saturation, ``D = f'(s)`` computed row by row),
  the fraction of units whose ``D`` is 0 on every example (dead), ``Z(s) / n`` (inactive), std
  and mean ``|.|`` of ``dL/ds`` and ``dL/dW``, std of ``W``, and the percentiles of ``s`` and
  ``a`` by NumPy's ``linear`` rule, ``v[lo] + t (v[hi] - v[lo])`` (:func:`lerp`, rounded as
  NumPy rounds it; ``s``'s range from :func:`column_range`); for a nondecreasing ``f`` the
  order statistics of ``a`` are the entries of ``a`` at the positions of those of ``s``. Each
  of these is a loop of its own over the layer's arrays (which stay in cache between them): a
  loop that mixes running minima, counts and float64 sums does not run in vector lanes and
  took 1.4-2x as long. The counts only where the table has them: :func:`_saturation_counts`
  (library sigmoid/tanh: saturation and dead units from ``a`` alone), :func:`_step_counts`
  (library ReLU: inactivity and dead units from ``s`` alone), else :func:`_row_counts`.
* :func:`bin_counts`: bin ``trunc(clip((x - lo) * scale, 0, nb - 1))`` with the subtraction and
  product rounded in the array's dtype exactly as the NumPy path rounds them, then moved to the
  bin whose edges (``np.linspace(lo, hi, nb + 1)``) hold the entry, as ``np.histogram`` counts
  (finite entries only).
* :func:`update_norms`: ``sum w0_i^2`` and ``sum (w_i - w0_i)^2`` (the update ratio
  ``||W - W0|| / ||W0||`` without writing the difference).
"""

from __future__ import annotations

import math

import numba
import numpy as np

_JIT = dict(nogil=True, cache=True, fastmath={"reassoc"})
"""``reassoc`` only: sums may be split into vector lanes (faster, still deterministic for one
machine and build); NaN and infinity keep IEEE semantics (no ``nnan``/``ninf``)."""

CANCELLATION_RATIO = 10.0
"""As ``depthlab.probes.stats._CANCELLATION_RATIO``: above this ``mean^2 / var`` of the
shifted entries the sums are taken again around the mean."""

DERIVATIVE_GIVEN, DERIVATIVE_SIGMOID, DERIVATIVE_TANH, DERIVATIVE_STEP = 0, 1, 2, 3
"""How :func:`layer` obtains ``D = f'(s)``: from the array ``d``, or computed in the pass, in
the array's dtype, as the activation's own ``derivative`` computes it: sigmoid
``(1 - a) a``, tanh ``1 - a a``, ReLU ``1 if s > 0 else 0``."""

FAMILY_OTHER, FAMILY_BOUNDED, FAMILY_RELU, FAMILY_BOUNDED_RELU = 0, 1, 2, 3
"""``stats.activation_family``: saturation is defined for bounded activations, inactivity for
the ReLU family, both for a bounded one of the ReLU family (ReLU6: saturation counted only
where ``s > 0``); the other entry is NaN."""

TERMS = 12
"""Non-percentile quantities of :func:`layer` (``stats._numpy_terms``)."""

OK, NOT_FINITE, NOT_SELECTED = 0, 1, 2
"""Status of :func:`layer` (its last entry): done; an entry is not finite (take the NumPy
path); percentiles not selected (a range the buckets cannot divide: select them otherwise)."""


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


BLOCK = 512
TINY_SQUARE_32, TINY_SQUARE_64 = 1e-30, 1e-290
"""Below this variance (float32 / float64 arrays) the block sums may have lost squares to
underflow (vanishing gradients): :func:`moments` sums again in float64 (as
``stats._TINY_SQUARE``)."""
"""Entries summed in the array's own dtype before the block's sums join the float64 totals
(:func:`block_moments`)."""


@numba.njit(**_JIT)
def block_moments(x: np.ndarray, c: float, dst: np.ndarray) -> tuple[float, float, float]:
    """``(S1, S2, A)`` of :func:`moments` with the sums of each block of :data:`BLOCK` entries
    taken in ``x``'s dtype (vector lanes of float32: twice the speed; each block's partial sums
    stay within a few float32 roundings of a float64 sum) and added up in float64. The shift is
    ``c`` rounded to that dtype, ``c'``; the sums are moved to ``c`` exactly: with
    ``delta = c - c'``, ``S1 = S1' - n delta``, ``S2 = S2' - 2 delta S1' + n delta^2``.
    ``dst``: empty, or an array of ``x``'s size that receives a copy of ``x`` block by block,
    right after each block's sums, from cache (the recorder's snapshot of the weights: one read
    of them from memory instead of two); in a loop of its own, so that the sums' vector lanes,
    and with them the last bit, do not depend on where ``dst`` lies."""
    n = x.size
    zero = x.dtype.type(0)
    ct = x.dtype.type(c)
    copy = dst.size > 0
    s1 = 0.0
    s2 = 0.0
    ab = 0.0
    full = n // BLOCK
    for b in range(full):
        t1 = zero
        t2 = zero
        ta = zero
        for i in range(b * BLOCK, b * BLOCK + BLOCK):
            v = x[i]
            d = v - ct
            t1 += d
            t2 += d * d
            ta += abs(v)
        if copy:  # a loop of its own: a store in the sums' loop made their lanes (and so
            for i in range(b * BLOCK, b * BLOCK + BLOCK):  # the last bit) depend on dst
                dst[i] = x[i]
        s1 += t1
        s2 += t2
        ab += ta
    cf = np.float64(ct)
    if copy:
        for i in range(full * BLOCK, n):
            dst[i] = x[i]
    for i in range(full * BLOCK, n):
        v = np.float64(x[i])
        d = v - cf
        s1 += d
        s2 += d * d
        ab += abs(v)
    delta = c - cf
    return s1 - n * delta, s2 - 2.0 * delta * s1 + n * delta * delta, ab


@numba.njit(**_JIT)
def mean_std(x: np.ndarray, c: float, s1: float, s2: float) -> tuple[float, float, bool]:
    """``(mean, std, finite)`` of the flat ``x`` from its sums ``S1``, ``S2`` around ``c``; the
    sums are taken again around the mean when they cancel (module docstring)."""
    n = x.size
    e = s1 / n
    var = s2 / n - e * e
    if not np.isfinite(var):
        return math.nan, math.nan, False
    if e * e > CANCELLATION_RATIO * var:
        c = c + e
        s1, s2, _, _ = moments(x, c)
        e = s1 / n
        var = s2 / n - e * e
    return c + e, math.sqrt(max(var, 0.0)), True


@numba.njit(nogil=True, cache=True)  # no fast-math flag: NumPy's rounding, operation by operation
def lerp(a: float, b: float, t: float) -> float:
    """``a + t (b - a)`` in NumPy's form (``quantiles.lerp``)."""
    return a + t * (b - a) if t < 0.5 else b - (1.0 - t) * (b - a)


LANES = 4
"""Partial counts kept per bucket or bin (:func:`_counts`): consecutive entries of one bucket
increment different counters, so no increment waits for the one before."""


@numba.njit(**_JIT)
def _add_counts(idx: np.ndarray, m: int, lanes: np.ndarray, nb: int) -> None:
    """Add the first ``m`` unsigned bucket indices ``idx`` (each ``< nb``) to ``lanes``, the
    :data:`LANES` uint32 partial counts of ``nb`` buckets in one flat array (callers keep arrays
    below 2^31 entries)."""
    one = np.uint32(1)
    o1 = np.uint64(nb)  # unsigned offsets: no negative-index check
    o2 = np.uint64(2 * nb)
    o3 = np.uint64(3 * nb)
    m4 = m // LANES * LANES
    for i in range(0, m4, LANES):
        lanes[idx[i]] += one
        lanes[o1 + idx[i + 1]] += one
        lanes[o2 + idx[i + 2]] += one
        lanes[o3 + idx[i + 3]] += one
    for i in range(m4, m):
        lanes[idx[i]] += one


@numba.njit(**_JIT)
def _lane_totals(lanes: np.ndarray, nb: int) -> np.ndarray:
    """int64 totals of the partial counts of :func:`_add_counts`: ``out[k] = sum_u lanes[u nb
    + k]`` over the :data:`LANES` (= 4) lanes, each total written once (a read-modify-write of
    ``out`` per lane did not run in vector lanes: 752 buckets ~5 -> ~1 us)."""
    out = np.empty(nb, dtype=np.int64)
    l0 = lanes[:nb]
    l1 = lanes[nb:2 * nb]
    l2 = lanes[2 * nb:3 * nb]
    l3 = lanes[3 * nb:4 * nb]
    for k in range(nb):
        out[k] = (np.int64(l0[k]) + np.int64(l1[k])) + (np.int64(l2[k]) + np.int64(l3[k]))
    return out


CHUNK = 4096
"""Entries whose bins :func:`bin_counts` computes together before counting them (a fixed trip
count, so the computation vectorizes; 16 KiB of indices, whatever the array's size)."""


@numba.njit(**_JIT)
def _bucket_chunk(x: np.ndarray, start: int, m: int, lo: float, hi: float, nb: int,
                  idx: np.ndarray) -> None:
    """The bucket (uint16) of each of the ``m`` entries from ``start``:
    ``1 + min(floor((x_i - lo) nb / (hi - lo)), nb - 1) - [x_i = lo] + [x_i = hi]``, so 0 for
    an entry equal to the minimum ``lo``, ``nb + 1`` for one equal to the maximum ``hi`` (the
    floor is ``nb - 1`` there: ``nb`` times the rounding error is below 1), ``1..nb``
    between: a nondecreasing map of ``x_i``
    whose end buckets hold only ties (a ReLU output's zeros, a saturated unit's 1.0), which
    need no sorting. In float32 arithmetic for a float32 array whose range and scale are
    float32 numbers (vectorizes at twice the width), else in float64; both round
    monotonically, which is all the selection needs, and the same entry always gets the same
    bucket (the gather pass recomputes them rather than keeping an index per entry)."""
    scale = nb / (hi - lo)
    xs = x[start:start + m]  # indexed from 0: no negative-index check, the loop vectorizes
    one = np.int32(1)
    if x.itemsize == 4 and hi - lo < 1e38 and scale < 1e38:
        lo_t = x.dtype.type(lo)
        hi_t = x.dtype.type(hi)
        sc_t = x.dtype.type(scale)
        top_t = x.dtype.type(nb - 1)
        for i in range(m):  # int32 arithmetic: float32 -> int32 converts in vector lanes
            v = xs[i]
            u = np.int32(min((v - lo_t) * sc_t, top_t))
            idx[i] = np.uint16(u + one - np.int32(v == lo_t) + np.int32(v == hi_t))
    else:
        top_f = np.float64(nb - 1)
        for i in range(m):
            v = np.float64(xs[i])
            u = np.int32(min((v - lo) * scale, top_f))
            idx[i] = np.uint16(u + one - np.int32(v == lo) + np.int32(v == hi))


SMALL_UP_TO = 1 << 17
"""Arrays up to this many entries are counted into at most 2046 buckets (:func:`_buckets`;
32768 float32 entries: positions 31.4 -> 28.0 us), larger ones into 4094 (1M entries: 1084 us
with 4094, 1197 with 2046: more entries gathered and sorted)."""


@numba.njit(**_JIT)
def _buckets(x: np.ndarray, ranks: np.ndarray, lo: float, hi: float):
    """The counting pass of :func:`positions`, :data:`CHUNK` entries at a time (no index kept
    per entry: one read of ``x``): ``(interior buckets nb, counts, cumulative counts, bucket
    of each rank, whether a bucket is gathered, start of each gathered bucket's run, entries
    gathered)``; the two tie buckets (0 and ``nb + 1``, :func:`_bucket_chunk`) are never
    gathered."""
    n = x.size
    # ~8 entries a bucket; nb + 2 <= 4096 (uint16 indices); at most 2046 up to SMALL_UP_TO
    # entries, whose 4 x 2048 lane counters stay in L1 and whose fixed per-bucket work halves
    nb = max(2, min(n // 8, 4094 if n > SMALL_UP_TO else 2046))
    nt = nb + 2
    keep = n <= KEEP_UP_TO  # the buckets kept for the gather pass
    idx = np.empty(n if keep else CHUNK, dtype=np.uint16)
    lanes = np.zeros(LANES * nt, dtype=np.uint32)
    for s in range(0, n, CHUNK):
        m = min(CHUNK, n - s)
        part = idx[s:s + m] if keep else idx
        _bucket_chunk(x, s, m, lo, hi, nb, part)
        _add_counts(part, m, lanes, nt)
    counts = _lane_totals(lanes, nt)
    below = np.cumsum(counts)  # entries in buckets 0..k
    wanted = np.searchsorted(below, ranks, side="right")
    take = np.zeros(nt, dtype=np.int32)  # int32: looked up in vector lanes (_gather)
    for k in wanted:
        take[k] = 1
    take[0] = take[nt - 1] = 0  # ties: answered without gathering
    start = np.zeros(nt, dtype=np.int64)  # offset of each gathered bucket's run
    m = 0
    for k in range(nt):
        if take[k]:
            start[k] = m
            m += counts[k]
    return nb, counts, below, wanted, take, start, m, idx[:n] if keep else idx[:0]


GATHER_BLOCK = 32
"""Entries whose buckets :func:`_gather` looks up together (vector lanes) before it goes
through them one by one, only where one of them is wanted: for the chunks of an array whose
buckets are computed again (more than :data:`KEEP_UP_TO` entries). With the buckets kept, the
plain loop over them was faster than this test (round 26, float32, b+gather: 6000 entries 8.8
-> 7.1 us, 32768 31.0 -> 28.1 us, 262144 212.6 -> 201.1 us); :func:`_gather_kept` (round 47)
is faster than both."""


KEPT_RUN = 16
"""Consecutive kept buckets :func:`_gather_kept` tests with one branch (the OR of their
``take`` flags) before it goes through them one by one (round 47, thread CPU time, interleaved,
medians of the ratio new/old of the gathering pass: 128 x 256 normal entries float32 0.53,
float64 0.64; 60 x 100 0.71 / 0.62; a ReLU-like array gathering half its entries 0.84-1.03)."""


@numba.njit(**_JIT)
def _gather_kept(x: np.ndarray, take: np.ndarray, kept: np.ndarray, vals: np.ndarray,
                 where: np.ndarray, fill: np.ndarray) -> None:
    """The kept-buckets case of :func:`_gather`: entry ``i`` goes to ``vals[fill[k]]`` (and
    its index to ``where``), ``fill[k]`` then incremented, for each ``i`` in increasing order
    whose bucket ``k = kept[i]`` has ``take[k] != 0``. A run of :data:`KEPT_RUN` entries is
    skipped when ``OR_i take[kept[i]] = 0`` over the run (no wanted entry in it: nothing
    would be stored), so the entries gathered and their order are those of the plain loop
    over every entry (the same ``vals`` and ``where``, element for element); one
    well-predicted branch per run instead of one per entry."""
    n = x.size
    full = n // KEPT_RUN * KEPT_RUN
    for b in range(0, full, KEPT_RUN):
        run = kept[b:b + KEPT_RUN]  # indexed from 0: no negative-index check
        hit = np.int32(0)
        for i in range(KEPT_RUN):
            hit |= take[run[i]]
        if hit == 0:
            continue
        for i in range(b, b + KEPT_RUN):
            k = kept[i]
            if take[k]:
                f = fill[k]
                vals[f] = x[i]
                where[f] = i
                fill[k] = f + 1
    for i in range(full, n):
        k = kept[i]
        if take[k]:
            f = fill[k]
            vals[f] = x[i]
            where[f] = i
            fill[k] = f + 1


@numba.njit(**_JIT)
def _gather(x: np.ndarray, lo: float, hi: float, nb: int, take: np.ndarray,
            start: np.ndarray, m: int, kept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The gathering pass of :func:`positions`: the ``m`` entries of the buckets marked in
    ``take`` (each bucket's entries from ``start[k]``, in the order of ``x``) and their
    indices; the buckets from ``kept`` (:func:`_buckets`), or computed again chunk by chunk
    where it is empty."""
    vals = np.empty(m, dtype=x.dtype)
    where = np.empty(m, dtype=np.intp)
    fill = start.copy()
    again = kept.size == 0
    idx = np.empty(CHUNK if again else 0, dtype=np.uint16)
    n = x.size
    if not again:  # the buckets of every entry kept: one pass over them
        _gather_kept(x, take, kept, vals, where, fill)
        return vals, where
    for s in range(0, n, CHUNK):
        c = min(CHUNK, n - s)
        _bucket_chunk(x, s, c, lo, hi, nb, idx)
        full = c // GATHER_BLOCK * GATHER_BLOCK
        for b in range(0, c, GATHER_BLOCK):
            if b < full:
                blk = idx[b:b + GATHER_BLOCK]
                hits = np.int32(0)
                for i in range(GATHER_BLOCK):  # vector lanes: most blocks have no wanted entry
                    hits += take[blk[i]]
                if hits == 0:
                    continue
            for i in range(b, min(b + GATHER_BLOCK, c)):
                k = idx[i]
                if take[k]:
                    f = fill[k]
                    vals[f] = x[s + i]
                    where[f] = s + i
                    fill[k] = f + 1
    return vals, where


@numba.njit(**_JIT)
def _first_equal(x: np.ndarray, value: float) -> int:
    """The index of the first entry of ``x`` equal to ``value`` (there is one)."""
    for i in range(x.size):
        if x[i] == value:
            return i
    return -1


KEEP_UP_TO = 1 << 18
"""Arrays up to this many entries keep their buckets from the counting pass for the gathering
pass (512 KiB of uint16, in cache); larger ones compute them again (cheaper than writing and
reading back an index per entry from memory: 28 -> 18 ms for 2^22 float32 entries)."""

@numba.njit(**_JIT)
def positions(x: np.ndarray, ranks: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Indices ``i`` with ``x[i] = v[r]`` for each ``r`` in ``ranks``, ``v`` the flat array
    ``x`` sorted ascending (any one of equal entries). Preconditions (checked by the caller):
    every entry finite, ``lo``/``hi`` its minimum and maximum, ``lo < hi`` and
    ``4096 / (hi - lo)`` finite."""
    nb, counts, below, wanted, take, start, m, kept = _buckets(x, ranks, lo, hi)
    vals, where = _gather(x, lo, hi, nb, take, start, m, kept)
    order = np.argsort(vals)
    out = np.empty(ranks.size, dtype=np.intp)
    at_lo = at_hi = -1
    for j in range(ranks.size):
        k = wanted[j]
        if k == 0:  # a tie bucket: the first entry equal to the minimum (or maximum)
            if at_lo < 0:
                at_lo = _first_equal(x, lo)
            out[j] = at_lo
        elif k == nb + 1:
            if at_hi < 0:
                at_hi = _first_equal(x, hi)
            out[j] = at_hi
        else:
            out[j] = where[order[start[k] + ranks[j] - (below[k] - counts[k])]]
    return out


@numba.njit(**_JIT)
def select(x: np.ndarray, ranks: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``v[r]`` for each ``r`` in ``ranks``, ``v`` the flat array ``x`` sorted ascending
    (:func:`positions`, same preconditions; the gathered values sorted alone)."""
    nb, counts, below, wanted, take, start, m, kept = _buckets(x, ranks, lo, hi)
    vals = _gather(x, lo, hi, nb, take, start, m, kept)[0]
    vals.sort()
    out = np.empty(ranks.size, dtype=x.dtype)
    for j in range(ranks.size):
        k = wanted[j]
        if k == 0:
            out[j] = x.dtype.type(lo)
        elif k == nb + 1:
            out[j] = x.dtype.type(hi)
        else:
            out[j] = vals[start[k] + ranks[j] - (below[k] - counts[k])]
    return out


TAIL_FROM = 1 << 18
"""Arrays of at least this many entries select their extreme order statistics (the
histogram's 0.1% and 99.9% percentiles) by :func:`tail_select` first; smaller ones by
:func:`select` (the sample's fixed cost outweighs the saved bucket counting)."""

TAIL_STEP = 127
"""Stride of :func:`tail_select`'s sample: a prime, so that the sample of a C-ordered matrix
visits every column (a stride of 128 sampled 16 of a 2048-wide layer's units, whose tails
differ from the rest's: the thresholds missed and the bucket selection ran as well)."""

TAIL_BLOCK = 64
"""Entries counted together in vector lanes by :func:`tail_select` before any is gathered."""


@numba.njit(**_JIT)
def _tail_count(xs: np.ndarray, tlo, thi) -> int:
    """``#{v < tlo} + #{v > thi}`` of one block (int32 lanes: vectorizes)."""
    c = np.int32(0)
    for i in range(xs.size):
        v = xs[i]
        c += np.int32(v < tlo) + np.int32(v > thi)
    return c


@numba.njit(**_JIT)
def _tail_margin(q: float) -> int:
    """Sample entries kept beyond a wanted rank expected at ``q`` sample entries from the
    end: ``q`` plus three standard deviations and three."""
    return int(q + 3.0 * math.sqrt(q) + 3.0)


@numba.njit(**_JIT)
def _tail_ranks(ranks: np.ndarray, n: int) -> tuple[int, int, int]:
    """``(rlo, rhi, nbelow)`` of the ranks of an ``n``-entry array: the highest rank below
    ``n // 2`` (-1 if none), the lowest at or above it (``n`` if none), how many are below."""
    half = n // 2
    rlo = -1
    rhi = n
    nbelow = 0
    for r in ranks:
        if r < half:
            rlo = max(rlo, r)
            nbelow += 1
        else:
            rhi = min(rhi, r)
    return rlo, rhi, nbelow


@numba.njit(**_JIT)
def _split_ranks(ranks: np.ndarray, n: int, nbelow: int, ntop: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The ranks below ``n // 2`` as they are, and the others as ranks among the ``ntop``
    largest entries (``r - (n - ntop)``), each in the order given."""
    half = n // 2
    below = np.empty(nbelow, dtype=ranks.dtype)
    above = np.empty(ranks.size - nbelow, dtype=ranks.dtype)
    ib = ia = 0
    for r in ranks:
        if r < half:
            below[ib] = r
            ib += 1
        else:
            above[ia] = r - (n - ntop)
            ia += 1
    return below, above


@numba.njit(**_JIT)
def _interleave(out: np.ndarray, ranks: np.ndarray, n: int, vb: np.ndarray,
                va: np.ndarray) -> None:
    """``out[j]``: the next of ``vb`` for a rank below ``n // 2``, else the next of ``va``
    (the values :func:`_split_ranks`' two lists selected, back in the ranks' order)."""
    half = n // 2
    ib = ia = 0
    for j in range(ranks.size):
        if ranks[j] < half:
            out[j] = vb[ib]
            ib += 1
        else:
            out[j] = va[ia]
            ia += 1


@numba.njit(**_JIT)
def tail_select(x: np.ndarray, ranks: np.ndarray, lo: float, hi: float
                ) -> tuple[np.ndarray, bool]:
    """``(v[r] for r in ranks, True)`` as :func:`select` when every rank lies in a thin tail
    of the flat ``x`` (same preconditions), else ``(_, False)``. Thresholds ``tlo``/``thi``
    are order statistics of a strided sample of ``n / TAIL_STEP`` entries a few standard deviations
    beyond the wanted ranks' fractions; one pass counts the entries beyond them block by block
    in vector lanes and gathers those of the blocks that have any. The entries below ``tlo``
    are exactly the lowest order statistics of ``x`` (likewise above ``thi``), so a rank among
    them is selected from them alone (:func:`select`). ``False`` when the sample missed (too
    few entries beyond a threshold), gathered too many, or a rank is not in a thin tail."""
    n = x.size
    out = np.empty(ranks.size, dtype=x.dtype)
    rlo, rhi, nbelow = _tail_ranks(ranks, n)
    step = TAIL_STEP
    sample = x[::step].copy()
    m = sample.size
    jl = _tail_margin((rlo + 1) * m / n) if rlo >= 0 else 0
    jh = _tail_margin((n - rhi) * m / n) if rhi < n else 0
    if 16 * max(jl, jh) > m:
        return out, False
    k2 = np.empty(2, dtype=ranks.dtype)
    k2[0] = jl
    k2[1] = m - 1 - jh
    smin = np.float64(sample.min())
    smax = np.float64(sample.max())
    if not smin < smax:
        return out, False
    th = select(sample, k2, smin, smax)
    tlo = th[0] if rlo >= 0 else x.dtype.type(lo)  # nothing is below the minimum
    thi = th[1] if rhi < n else x.dtype.type(hi)
    cap = 4 * (max(jl, jh) + 1) * step + 1024
    vlo = np.empty(cap, dtype=x.dtype)
    vhi = np.empty(cap, dtype=x.dtype)
    nlo = nhi = 0
    full = n // TAIL_BLOCK * TAIL_BLOCK
    for b in range(0, n, TAIL_BLOCK):
        xs = x[b:min(b + TAIL_BLOCK, n)]
        c = _tail_count(xs, tlo, thi) if b < full else 1
        if c > 0:
            if nlo + c > cap or nhi + c > cap:
                return out, False
            for i in range(xs.size):
                v = xs[i]
                if v < tlo:
                    vlo[nlo] = v
                    nlo += 1
                elif v > thi:
                    vhi[nhi] = v
                    nhi += 1
    if rlo >= nlo or n - rhi > nhi:  # the sample missed
        return out, False
    below, above = _split_ranks(ranks, n, nbelow, nhi)
    _interleave(out, ranks, n, _small_select(vlo[:nlo], below), _small_select(vhi[:nhi], above))
    return out, True


EXTREME_FROM = 2048
"""Arrays of this many entries up to :data:`TAIL_FROM` select their extreme order statistics
(the histogram's 0.1% and 99.9% percentiles) by :func:`extreme_select` first; smaller ones by
:func:`select` (round 27, float32, both tails: 78400 entries 65 -> 21 us, 6000 entries 7.8 ->
4-5 us)."""

EXTREME_ROWS = 64
"""Entries per group of :func:`extreme_select` (a column of the array viewed as about this
many rows)."""


KTH_INSERT_UP_TO = 32
"""Largest ``k`` whose ``k``-th smallest group extreme :func:`extreme_select` finds by
insertion (1216 minima: k = 7 1.3 us, partition 1.6; k = 80 5.7 us, partition 4.6)."""


@numba.njit(**_JIT)
def _kth_smallest(m: np.ndarray, k: int):
    """The ``k``-th smallest entry of ``m`` (``1 <= k <= m.size``, no NaN): the ``k`` smallest
    so far kept sorted, a later entry inserted only when it is below the largest of them
    (NumPy's partition for ``k`` above :data:`KTH_INSERT_UP_TO`)."""
    if k > KTH_INSERT_UP_TO:
        return np.partition(m, k - 1)[k - 1]
    buf = np.sort(m[:k])
    last = buf[k - 1]
    for i in range(k, m.size):
        v = m[i]
        if v < last:
            j = k - 1
            while j > 0 and buf[j - 1] > v:
                buf[j] = buf[j - 1]
                j -= 1
            buf[j] = v
            last = buf[k - 1]
    return last


@numba.njit(**_JIT)
def _kth_largest(m: np.ndarray, k: int):
    """The ``k``-th largest entry of ``m`` (as :func:`_kth_smallest`)."""
    if k > KTH_INSERT_UP_TO:
        return np.partition(m, m.size - k)[m.size - k]
    buf = np.sort(m[m.size - k:])[::-1].copy()  # the last k entries, largest first
    last = buf[k - 1]
    for i in range(m.size - k):
        v = m[i]
        if v > last:
            j = k - 1
            while j > 0 and buf[j - 1] < v:
                buf[j] = buf[j - 1]
                j -= 1
            buf[j] = v
            last = buf[k - 1]
    return last


KEY_MASK_32, KEY_MASK_64 = 0x7FFFFFFF, 0x7FFFFFFFFFFFFFFF
"""The order key of a float's bit pattern ``u`` (a signed integer of its width):
``key(u) = u ^ ((u >> (bits - 1)) & mask)``: nonnegative floats keep their bits, negative ones
have their magnitude bits flipped, so ``a < b`` exactly when ``key(a) < key(b)`` for any two
floats that are not NaN (except ``-0.0 < +0.0``, which compare equal as floats: either is the
same zero to every caller). ``key`` is its own inverse. A NaN's key lies beyond the
infinities' (a positive NaN above ``key(+inf)``, a negative one below ``key(-inf)``), so an
array is finite exactly when its smallest key exceeds ``key(-inf)`` and its largest is below
``key(+inf)``. Minima and maxima of integer keys run in vector lanes; the float comparison and
select loops they replace did not with this Numba (78400 float32 entries, 2 shared cores:
finite_range 90-160 -> ~25 us; per-column extremes 135-150 -> ~35 us)."""


@numba.njit(**_JIT)
def _key_extremes(x: np.ndarray) -> tuple[int, int]:
    """``(min key(x_i), max key(x_i))`` of the flat, non-empty, C-ordered float ``x``
    (:data:`KEY_MASK_32`), as int64."""
    if x.itemsize == 4:
        xi = x.view(np.int32)
        m = np.int32(KEY_MASK_32)
        sh = np.int32(31)  # (an int64 literal would widen the lanes to int64)
        lo = hi = xi[0] ^ ((xi[0] >> sh) & m)
        for i in range(xi.size):
            u = xi[i]
            k = u ^ ((u >> sh) & m)
            lo = min(lo, k)
            hi = max(hi, k)
        return np.int64(lo), np.int64(hi)
    xl = x.view(np.int64)
    ml = np.int64(KEY_MASK_64)
    lo64 = hi64 = xl[0] ^ ((xl[0] >> 63) & ml)
    for i in range(xl.size):
        u = xl[i]
        k = u ^ ((u >> 63) & ml)
        lo64 = min(lo64, k)
        hi64 = max(hi64, k)
    return lo64, hi64


@numba.njit(**_JIT)
def _key_to_float(x: np.ndarray, key: int) -> float:
    """The float (of ``x``'s dtype, as float64) whose order key is ``key``."""
    if x.itemsize == 4:
        k = np.int32(key)
        b = np.empty(1, dtype=np.int32)
        b[0] = k ^ ((k >> np.int32(31)) & np.int32(KEY_MASK_32))
        return np.float64(b.view(np.float32)[0])
    k64 = np.int64(key)
    b64 = np.empty(1, dtype=np.int64)
    b64[0] = k64 ^ ((k64 >> 63) & np.int64(KEY_MASK_64))
    return b64.view(np.float64)[0]


@numba.njit(**_JIT)
def _infinity_keys(x: np.ndarray) -> tuple[int, int]:
    """``(key(-inf), key(+inf))`` of ``x``'s dtype."""
    if x.itemsize == 4:
        b = np.array([-np.inf, np.inf], dtype=np.float32).view(np.int32)
        m = np.int32(KEY_MASK_32)
        sh = np.int32(31)
        return np.int64(b[0] ^ ((b[0] >> sh) & m)), np.int64(b[1] ^ ((b[1] >> sh) & m))
    bl = np.array([-np.inf, np.inf], dtype=np.float64).view(np.int64)
    ml = np.int64(KEY_MASK_64)
    return bl[0] ^ ((bl[0] >> 63) & ml), bl[1] ^ ((bl[1] >> 63) & ml)


@numba.njit(**_JIT)
def _column_key_extremes(x: np.ndarray, ints: np.ndarray, mask, shift, cols: int
                         ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_column_extremes` on ``ints``, the bit patterns of ``x`` (a view of the same
    width): per column the smallest and largest order key (elementwise integer minima: vector
    lanes), turned back into floats of ``x``'s dtype (``key`` is its own inverse)."""
    n = ints.size
    rows = n // cols
    cmin = np.empty(cols, dtype=ints.dtype)
    for j in range(cols):
        u = ints[j]
        cmin[j] = u ^ ((u >> shift) & mask)
    cmax = cmin.copy()
    last = 1 + (rows - 1) // 4 * 4  # rows 1..last-1 four at a time, then one at a time
    for b in range(1, last, 4):  # four rows a pass: a quarter of the loads and stores of cmin,
        r0 = ints[b * cols:(b + 1) * cols]  # cmax
        r1 = ints[(b + 1) * cols:(b + 2) * cols]
        r2 = ints[(b + 2) * cols:(b + 3) * cols]
        r3 = ints[(b + 3) * cols:(b + 4) * cols]
        for j in range(cols):
            u0 = r0[j]
            k0 = u0 ^ ((u0 >> shift) & mask)
            u1 = r1[j]
            k1 = u1 ^ ((u1 >> shift) & mask)
            u2 = r2[j]
            k2 = u2 ^ ((u2 >> shift) & mask)
            u3 = r3[j]
            k3 = u3 ^ ((u3 >> shift) & mask)
            cmin[j] = min(cmin[j], min(min(k0, k1), min(k2, k3)))
            cmax[j] = max(cmax[j], max(max(k0, k1), max(k2, k3)))
    for b in range(last, rows):
        xr = ints[b * cols:(b + 1) * cols]
        for j in range(cols):
            u = xr[j]
            k = u ^ ((u >> shift) & mask)
            cmin[j] = min(cmin[j], k)
            cmax[j] = max(cmax[j], k)
    xr = ints[rows * cols:]
    for j in range(xr.size):
        u = xr[j]
        k = u ^ ((u >> shift) & mask)
        cmin[j] = min(cmin[j], k)
        cmax[j] = max(cmax[j], k)
    for j in range(cols):
        u = cmin[j]
        cmin[j] = u ^ ((u >> shift) & mask)
        u = cmax[j]
        cmax[j] = u ^ ((u >> shift) & mask)
    return cmin.view(x.dtype), cmax.view(x.dtype)


@numba.njit(**_JIT)
def _column_extremes(x: np.ndarray, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """Minimum and maximum of each column ``j`` of the flat, C-ordered ``x`` (no NaN) viewed
    as rows of ``cols`` entries, ``{x[b cols + j]}``, the last (partial) row included: by
    their order keys (:func:`_column_key_extremes`, :data:`KEY_MASK_32`)."""
    if x.itemsize == 4:
        return _column_key_extremes(x, x.view(np.int32), np.int32(KEY_MASK_32), np.int32(31),
                                     cols)
    return _column_key_extremes(x, x.view(np.int64), np.int64(KEY_MASK_64), np.int64(63),
                                     cols)


@numba.njit(**_JIT)
def _pick(v: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """``sort(v)[r]`` for each ``r`` in ``ranks`` (:func:`_small_select` for a large ``v``)."""
    if v.size > 512:
        return _small_select(v, ranks)
    s = np.sort(v)
    out = np.empty(ranks.size, dtype=v.dtype)
    for j in range(ranks.size):
        out[j] = s[ranks[j]]
    return out


@numba.njit(**_JIT)
def extreme_select(x: np.ndarray, ranks: np.ndarray) -> tuple[np.ndarray, bool]:
    """``(v[r] for r in ranks, True)`` as :func:`select` when every rank lies in a thin tail
    of the flat ``x`` (every entry finite), else ``(_, False)``. No sample, no guess: the
    entries are split into ``C`` groups (the columns of ``x`` viewed as about
    :data:`EXTREME_ROWS` rows of ``C`` entries, ``C`` a multiple of 16) and one pass takes
    each group's minimum and maximum. ``k`` groups have a minimum at most the ``k``-th
    smallest group minimum ``t``, so at least ``k`` entries are ``<= t``: the ``k`` lowest
    order statistics of ``x`` are the lowest of the entries ``<= t``, which lie in the groups
    whose minimum is ``<= t`` and are gathered from those alone (likewise above the ``k``-th
    largest group maximum). ``False`` when a rank is not in a thin tail (``8 k > C``) or the
    groups to read hold more than a quarter of the entries (many ties at ``t``)."""
    cols = extreme_columns(x.size)
    rlo, rhi, _ = _tail_ranks(ranks, x.size)
    if cols == 0 or 8 * max(rlo + 1, x.size - rhi) > cols:
        return np.empty(ranks.size, dtype=x.dtype), False
    cmin, cmax = _column_extremes(x, cols)
    return _extreme_select_columns(x, ranks, cmin, cmax)


@numba.njit(**_JIT)
def extreme_columns(n: int) -> int:
    """``C``, the groups of :func:`extreme_select` for ``n`` entries: ``n / EXTREME_ROWS``
    rounded down to a multiple of 16 (0: too few entries)."""
    return (n // EXTREME_ROWS) // 16 * 16


@numba.njit(**_JIT)
def _extreme_select_columns(x: np.ndarray, ranks: np.ndarray, cmin: np.ndarray,
                            cmax: np.ndarray) -> tuple[np.ndarray, bool]:
    """:func:`extreme_select` given the minimum ``cmin`` and maximum ``cmax`` of each of its
    ``C = cmin.size`` groups (:func:`_column_extremes` of ``x`` with ``C`` columns)."""
    n = x.size
    out = np.empty(ranks.size, dtype=x.dtype)
    rlo, rhi, nbelow = _tail_ranks(ranks, n)
    kl = rlo + 1  # entries wanted from the low end, from the high end
    kh = n - rhi
    cols = cmin.size
    if cols == 0 or 8 * max(kl, kh) > cols:
        return out, False
    rows = n // cols  # full rows; a column j below n - rows cols has one entry more
    cap = n // 4
    vlo = x[:0]
    vhi = x[:0]
    if kl > 0:
        t = _kth_smallest(cmin, kl)
        read = 0
        for j in range(cols):
            read += cmin[j] <= t
        if read * rows > cap:
            return out, False
        vlo = np.empty(read * (rows + 1), dtype=x.dtype)
        m = 0
        for j in range(cols):
            if cmin[j] <= t:
                for i in range(j, n, cols):
                    v = x[i]
                    if v <= t:
                        vlo[m] = v
                        m += 1
        vlo = vlo[:m]
    if kh > 0:
        t = _kth_largest(cmax, kh)
        read = 0
        for j in range(cols):
            read += cmax[j] >= t
        if read * rows > cap:
            return out, False
        vhi = np.empty(read * (rows + 1), dtype=x.dtype)
        m = 0
        for j in range(cols):
            if cmax[j] >= t:
                for i in range(j, n, cols):
                    v = x[i]
                    if v >= t:
                        vhi[m] = v
                        m += 1
        vhi = vhi[:m]
    below, above = _split_ranks(ranks, n, nbelow, vhi.size)
    _interleave(out, ranks, n, _pick(vlo, below), _pick(vhi, above))
    return out, True


@numba.njit(**_JIT)
def _small_select(v: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """:func:`select` of ``ranks`` in the gathered ``v`` (a sort where its range is one
    value or one the buckets cannot divide)."""
    out = np.empty(ranks.size, dtype=v.dtype)
    if ranks.size == 0:
        return out
    a = v.min()
    b = v.max()
    if a == b:
        out[:] = a
        return out
    if np.isfinite(b - a) and np.isfinite(4096.0 / (np.float64(b) - np.float64(a))):
        return select(v, ranks, np.float64(a), np.float64(b))
    s = np.sort(v)
    for j in range(ranks.size):
        out[j] = s[ranks[j]]
    return out


@numba.njit(**_JIT)
def _bin_index(x: np.ndarray, start: int, m: int, lo_t, sc_t, top, idx: np.ndarray) -> None:
    """``idx[i] = trunc(clip((x[start + i] - lo) * scale, 0, nb - 1))`` for ``i < m``, in
    ``x``'s dtype. The clipped value lies in ``[0, nb - 1]``, ``nb < 2^24``, so it is truncated
    to int32 (float -> int32 converts in vector lanes; the direct float -> uint32 conversion
    did not: 78400 entries, float32 14.0 -> 8.8 us, float64 32.5 -> 18.3 us) and stored as
    the same uint32."""
    zero = x.dtype.type(0)
    xs = x[start:start + m]  # indexed from 0: no negative-index check, the loop vectorizes
    for i in range(m):
        u = np.int32(min(max((xs[i] - lo_t) * sc_t, zero), top))  # (a variable of its own:
        idx[i] = np.uint32(u)  # nested in the uint32 cast, the conversion stayed scalar)


@numba.njit(**_JIT)
def _fix_bins(x: np.ndarray, start: int, m: int, e: np.ndarray, idx: np.ndarray) -> None:
    """Move each ``idx[i]`` by one bin to the bin ``k`` with ``e[k] <= x[start + i] < e[k + 1]``
    (:func:`search_edges`): the bin NumPy's ``histogram`` gives a value, also where the rounded
    position ``(x - lo) * scale`` of a value on an edge (a ReLU layer's exact zeros at the middle
    edge of ``[-m, m]``) fell just below its integer. Finite entries whose rounded bin is at
    most one bin off (``histograms.one_bin_off``); branch-free."""
    xs = x[start:start + m]
    for i in range(m):
        v = np.float64(xs[i])
        k = np.int64(idx[i])
        k = k + np.int64(v >= e[k + 1]) - np.int64(v < e[k])
        idx[i] = np.uint32(k)


@numba.njit(nogil=True, cache=True)  # no fast-math flag: NumPy's rounding, operation by operation
def search_edges(lo: float, hi: float, nb: int) -> np.ndarray:
    """The ``nb + 1`` edges of ``histograms.bin_edges`` as :func:`bin_counts` searches them:
    ``e[i] = i step + lo``, ``step = (hi - lo) / nb``, rounded as ``np.linspace(lo, hi, nb + 1)``
    rounds them (``fl(fl(i step) + lo)``), with ``e[0] = -inf`` and ``e[nb] = +inf`` (finite
    values beyond the range belong to the end bins)."""
    e = np.empty(nb + 1, dtype=np.float64)
    step = (hi - lo) / nb
    for i in range(1, nb):
        e[i] = np.float64(i) * step + lo
    e[0] = -np.inf
    e[nb] = np.inf
    return e


@numba.njit(nogil=True, cache=True)
def one_bin_off(lo: float, hi: float, scale: float, nb: int, eps: float) -> bool:
    """Whether the bin ``trunc(clip((x - lo) * scale, 0, nb - 1))`` rounded in a dtype of
    machine epsilon ``eps`` is at most one bin from the bin whose edges hold ``x``, so that
    :func:`_fix_bins`'s one step finds it: the roundings of ``lo``, ``scale``, ``x - lo`` and
    the product, and the edges' own, move the position by less than
    ``eps (2 nb + (|lo| + |hi|) scale) < 1/2`` bin (``histograms.one_bin_off``)."""
    return eps * (2.0 * nb + (abs(lo) + abs(hi)) * scale) < 0.5


# no fast-math flag: Numba compiles search_edges with its caller's flags, and `reassoc` turned
# i * step into a running sum (edges an ulp off linspace's, values on them in the wrong bin)
@numba.njit(nogil=True, cache=True)
def bin_counts(x: np.ndarray, lo: float, scale: float, nb: int, hi: float = math.nan
               ) -> np.ndarray:
    """Counts of the flat array ``x`` in ``nb`` bins over ``[lo, hi]``: first
    ``trunc(clip((x - lo) * scale, 0, nb - 1))`` computed in ``x``'s dtype (``lo``, ``scale``
    rounded to it first), then each bin moved to the one whose edges hold the entry
    (:func:`_fix_bins`: ``e[k] <= x < e[k + 1]`` on the edges of :func:`search_edges`, as
    ``np.histogram`` counts). Precondition (checked by the caller): every entry finite. The
    bins of each :data:`CHUNK` entries are computed first (vectorized), then counted
    (:func:`_add_counts`). ``hi``: the range's top (NaN: ``lo + nb / scale``)."""
    lo_t = x.dtype.type(lo)
    sc_t = x.dtype.type(scale)
    top = x.dtype.type(nb - 1)
    e = search_edges(lo, lo + nb / scale if math.isnan(hi) else hi, nb)
    idx = np.empty(CHUNK, dtype=np.uint32)
    lanes = np.zeros(LANES * nb, dtype=np.uint32)
    full = x.size // CHUNK
    for c in range(full):
        _bin_index(x, c * CHUNK, CHUNK, lo_t, sc_t, top, idx)
        _fix_bins(x, c * CHUNK, CHUNK, e, idx)
        _add_counts(idx, CHUNK, lanes, nb)
    rest = x.size - full * CHUNK
    _bin_index(x, full * CHUNK, rest, lo_t, sc_t, top, idx)
    _fix_bins(x, full * CHUNK, rest, e, idx)
    _add_counts(idx, rest, lanes, nb)
    return _lane_totals(lanes, nb)


NOT_BINNED = 3
"""Status of :func:`histogram`: edges found, but the bin scale is not a normal number of the
array's dtype (count them otherwise)."""


@numba.njit(**_JIT)
def finite_range(x: np.ndarray) -> tuple[float, float]:
    """``(min x, max x)`` of the flat, non-empty, C-ordered ``x`` in one pass, or ``(nan, nan)``
    when an entry is NaN or infinite: the extremes of the entries' order keys
    (:func:`_key_extremes`; finite exactly when they lie strictly between the infinities'
    keys), turned back into floats. NumPy's ``min`` and ``max`` are two passes and check
    nothing."""
    klo, khi = _key_extremes(x)
    kneg, kpos = _infinity_keys(x)
    if not (kneg < klo and khi < kpos):
        return math.nan, math.nan
    return _key_to_float(x, klo), _key_to_float(x, khi)


@numba.njit(nogil=True, cache=True)  # no fast-math flag: the edges rounded as in Python
def _robust_edges(x: np.ndarray, slo: float, shi: float, low: float, high: float,
                  ranks: np.ndarray, t: np.ndarray) -> tuple[float, float, int]:
    """:func:`_robust_edges_columns` without the group extremes (computed where needed)."""
    return _robust_edges_columns(x, slo, shi, low, high, ranks, t, x[:0], x[:0])


@numba.njit(nogil=True, cache=True)  # no fast-math flag: the edges rounded as in Python
def _robust_edges_columns(x: np.ndarray, slo: float, shi: float, low: float, high: float,
                          ranks: np.ndarray, t: np.ndarray, cmin: np.ndarray,
                          cmax: np.ndarray) -> tuple[float, float, int]:
    """``(lo, hi, status)``: the edges of ``histograms.choose_edges`` before any activation
    clip, from the order statistics of ``x`` (the array, or its robust sample; minimum ``slo``,
    maximum ``shi``) at the interleaved ``ranks`` (floor and ceil of the low and the high
    robust percentile, with fractions ``t``) and the whole array's minimum ``low`` and maximum
    ``high``: ``[0, p_hi]`` when ``low >= 0`` (only the high ones are selected), else
    ``[-m, m]``, ``m = max(|p_lo|, |p_hi|)``; status :data:`NOT_SELECTED` for a range the
    buckets cannot divide. ``cmin``/``cmax``: empty, or the group extremes of
    :func:`extreme_select` for ``x`` (:func:`histogram_whole`: not computed again)."""
    if low >= 0.0:
        r = ranks[2:]
    else:
        r = ranks
    if slo == shi:
        v = np.full(r.size, x[0])
    elif np.isfinite(shi - slo) and np.isfinite(4096.0 / (shi - slo)):
        ok = False
        if x.size >= TAIL_FROM:
            v, ok = tail_select(x, r, slo, shi)
        elif x.size >= EXTREME_FROM:
            if cmin.size:  # the groups' extremes known (histogram_whole)
                v, ok = _extreme_select_columns(x, r, cmin, cmax)
            else:
                v, ok = extreme_select(x, r)
        if not ok:
            v = select(x, r, slo, shi)
    else:
        return math.nan, math.nan, NOT_SELECTED
    if low >= 0.0:
        hi = lerp(np.float64(v[0]), np.float64(v[1]), t[1])
        return 0.0, (hi if hi > 0 else max(high, 1.0)), OK
    m = max(abs(lerp(np.float64(v[0]), np.float64(v[1]), t[0])),
            abs(lerp(np.float64(v[2]), np.float64(v[3]), t[1])))
    if m > 0:
        return -m, m, OK
    return -1.0, 1.0, OK


@numba.njit(nogil=True, cache=True)
def histogram(x: np.ndarray, sample: np.ndarray, slo: float, shi: float, low: float,
              high: float, ranks: np.ndarray, t: np.ndarray, nb: int, clip: bool,
              clip_lo: float, clip_hi: float, tiny: float, big: float
              ) -> tuple[float, float, int, np.ndarray]:
    """``(lo, hi, status, counts)`` of ``histograms.histogram`` for the flat array ``x`` whose
    entries are all finite, ``low``/``high`` its minimum and maximum, ``sample`` its robust
    sample (``histograms.robust_sample``: ``x`` itself or a strided copy; minimum ``slo``,
    maximum ``shi``; ``ranks``, ``t`` for its size): the edges (:func:`_robust_edges`; for
    ``clip``, intersected with the activation's range ``[clip_lo, clip_hi]``, or that range
    when the intersection is empty), then the counts of every entry of ``x``
    (:func:`bin_counts` with ``scale = nb / (hi - lo)``). Status :data:`NOT_SELECTED` (nothing
    done) or :data:`NOT_BINNED` (edges only: the scale is not in ``[tiny, big)``, the dtype's
    normal numbers) hands the rest to the NumPy path."""
    lo, hi, status = _robust_edges(sample, slo, shi, low, high, ranks, t)
    return _clipped_counts(x, lo, hi, status, nb, clip, clip_lo, clip_hi, tiny, big)


@numba.njit(nogil=True, cache=True)
def histogram_whole(x: np.ndarray, ranks: np.ndarray, t: np.ndarray, nb: int, clip: bool,
                    clip_lo: float, clip_hi: float, tiny: float, big: float
                    ) -> tuple[float, float, int, np.ndarray]:
    """:func:`histogram` of a flat array ``x`` that is its own robust sample, of
    ``EXTREME_FROM <= n < TAIL_FROM`` entries, without a separate pass for its range: the
    group extremes of :func:`extreme_select` (one pass, :func:`_column_extremes`) give the
    minimum and maximum too, ``min_j cmin_j`` and ``max_j cmax_j`` by order key (the same
    floats as :func:`finite_range`'s, the same finiteness test), and are then used for the
    selection. Status :data:`NOT_FINITE` (nothing else done) where an entry is NaN or infinite;
    otherwise as :func:`histogram` ``(x, x, low, high, low, high, ...)``."""
    empty = np.zeros(0, dtype=np.int64)
    cmin, cmax = _column_extremes(x, extreme_columns(x.size))
    klo = _key_extremes(cmin)[0]
    khi = _key_extremes(cmax)[1]
    kneg, kpos = _infinity_keys(x)
    if not (kneg < klo and khi < kpos):
        return math.nan, math.nan, NOT_FINITE, empty
    low = _key_to_float(cmin, klo)
    high = _key_to_float(cmax, khi)
    lo, hi, status = _robust_edges_columns(x, low, high, low, high, ranks, t, cmin, cmax)
    return _clipped_counts(x, lo, hi, status, nb, clip, clip_lo, clip_hi, tiny, big)


@numba.njit(nogil=True, cache=True)
def _clipped_counts(x: np.ndarray, lo: float, hi: float, status: int, nb: int, clip: bool,
                    clip_lo: float, clip_hi: float, tiny: float, big: float
                    ) -> tuple[float, float, int, np.ndarray]:
    """The end of :func:`histogram` from the robust edges ``lo``, ``hi`` (and their
    ``status``): the activation clip, then the counts."""
    empty = np.zeros(0, dtype=np.int64)
    if status != OK:
        return lo, hi, status, empty
    if clip:
        c0 = max(lo, clip_lo)
        c1 = min(hi, clip_hi)
        lo, hi = (c0, c1) if c1 > c0 else (clip_lo, clip_hi)
    scale = nb / (hi - lo)
    if not (tiny <= scale < big and one_bin_off(lo, hi, scale, nb, np.finfo(x.dtype).eps)):
        return lo, hi, NOT_BINNED, empty
    return lo, hi, OK, bin_counts(x, lo, scale, nb, hi)


@numba.njit(**_JIT)
def update_norms(w: np.ndarray, w0: np.ndarray) -> tuple[float, float]:
    """``(sum w0^2, sum (w - w0)^2)`` of two flat arrays of one shape (module docstring): each
    block of :data:`BLOCK` entries summed in the arrays' dtype, the blocks in float64 (all in
    float64 when a mean square is below the dtype's ``TINY_SQUARE``, underflow, or a sum is not
    finite: float32 weights of 1e35 square past float32's range)."""
    n = w.size
    zero = w.dtype.type(0)
    n0 = 0.0
    n1 = 0.0
    full = n // BLOCK
    for b in range(full):
        t0 = zero
        t1 = zero
        for i in range(b * BLOCK, b * BLOCK + BLOCK):
            a = w0[i]
            d = w[i] - a
            t0 += a * a
            t1 += d * d
        n0 += t0
        n1 += t1
    for i in range(full * BLOCK, n):
        a = np.float64(w0[i])
        d = np.float64(w[i]) - a
        n0 += a * a
        n1 += d * d
    tiny = TINY_SQUARE_32 if w.itemsize == 4 else TINY_SQUARE_64
    if n0 < tiny * n or n1 < tiny * n or not (n0 < np.inf and n1 < np.inf):
        n0 = 0.0
        n1 = 0.0
        for i in range(n):
            a = np.float64(w0[i])
            d = np.float64(w[i]) - a
            n0 += a * a
            n1 += d * d
    return n0, n1


@numba.njit(**_JIT)
def _std_abs(x: np.ndarray, dst: np.ndarray) -> tuple[float, float, bool]:
    """``(std, mean |x|, finite)`` of the flat ``x``; NaN for an empty (absent) array.
    ``dst``: empty, or receives a copy of ``x`` (:func:`block_moments`)."""
    if x.size == 0:
        return math.nan, math.nan, True
    c = np.float64(x[0])
    s1, s2, ab = block_moments(x, c, dst)
    n = x.size
    if s2 / n - (s1 / n) ** 2 < (TINY_SQUARE_32 if x.itemsize == 4 else TINY_SQUARE_64):
        s1, s2, ab, _ = moments(x, c)  # squares near underflow in the blocks: float64 sums
    _, sd, ok = mean_std(x, c, s1, s2)
    return sd, ab / x.size, ok and np.isfinite(ab)


@numba.njit(**_JIT)
def shifted_sums(x: np.ndarray, c: float) -> tuple[float, float]:
    """``(S1, S2) = (sum d_i, sum d_i^2)``, ``d_i = x_i - c``, of the flat ``x`` in float64
    (:func:`moments` without ``A`` and ``Z``, in a loop of its own: float64 vector lanes)."""
    s1 = 0.0
    s2 = 0.0
    for i in range(x.size):
        d = np.float64(x[i]) - c
        s1 += d
        s2 += d * d
    return s1, s2


@numba.njit(**_JIT)
def column_range(s: np.ndarray) -> tuple[float, float]:
    """``(min s, max s)`` of the 2-d ``s`` (no NaN entry; infinities allowed) from the extremes
    of its entries' order keys (:func:`_key_extremes`: integer minima in vector lanes; the
    float comparison and select loop it replaces did not vectorize with this Numba: 60 x 100
    float32 8-15 -> ~2 us on 2 shared cores)."""
    f = np.ascontiguousarray(s).reshape(s.size)
    klo, khi = _key_extremes(f)
    return _key_to_float(f, klo), _key_to_float(f, khi)


@numba.njit(inline="always", **_JIT)  # inlined in layer's row loop (a call per row: slower)
def _row_counts(sr: np.ndarray, ar: np.ndarray, d: np.ndarray, b: int, how: int, th,
                dead: np.ndarray) -> tuple[int, int]:
    """``(#{|D| < th}, #{s <= 0})`` of one row ``b`` (``sr = s[b]``, ``ar = a[b]``), and
    ``dead[j]`` set to 0 where ``D[j] != 0``; ``D = f'(s)`` is computed in the loop as the
    activation's own ``derivative`` computes it (sigmoid ``(1 - a) a``, tanh ``1 - a a``, ReLU
    ``1 if s > 0 else 0``) or read from ``d[b]`` (:data:`DERIVATIVE_GIVEN`). One loop per
    activation with int32 counts: no ``D`` row written and read back, no branch in the loop,
    and twice the vector lanes of float64 counts."""
    one = sr.dtype.type(1)
    zero = sr.dtype.type(0)
    cols = sr.size
    n_sat = np.int32(0)
    n_zs = np.int32(0)
    if how == DERIVATIVE_SIGMOID:
        for j in range(cols):
            aj = ar[j]
            dj = (one - aj) * aj
            n_sat += np.int32(abs(dj) < th)
            n_zs += np.int32(sr[j] <= zero)
            dead[j] = zero if dj != zero else dead[j]
    elif how == DERIVATIVE_TANH:
        for j in range(cols):
            aj = ar[j]
            dj = one - aj * aj
            n_sat += np.int32(abs(dj) < th)
            n_zs += np.int32(sr[j] <= zero)
            dead[j] = zero if dj != zero else dead[j]
    elif how == DERIVATIVE_STEP:
        for j in range(cols):
            v = sr[j]
            dj = one if v > zero else zero
            n_sat += np.int32(abs(dj) < th)
            n_zs += np.int32(v <= zero)
            dead[j] = zero if dj != zero else dead[j]
    else:
        db = d[b]
        for j in range(cols):
            dj = db[j]
            n_sat += np.int32(abs(dj) < th)
            n_zs += np.int32(sr[j] <= zero)
            dead[j] = zero if dj != zero else dead[j]
    return n_sat, n_zs


@numba.njit(**_JIT)
def _upper_saturation(s: np.ndarray, d: np.ndarray, th) -> float:
    """``#{|D| < th and s > 0}`` (``D = d``, 2-d as ``s``): the saturated entries of a bounded
    ReLU-family activation (ReLU6), whose flat side ``s <= 0`` is inactive, not saturated."""
    zero = s.dtype.type(0)
    total = 0.0
    for b in range(s.shape[0]):
        n = np.int32(0)
        for j in range(s.shape[1]):
            n += np.int32((abs(d[b, j]) < th) & (s[b, j] > zero))
        total += n
    return total


@numba.njit(**_JIT)
def _saturation_counts(a: np.ndarray, how: int, th, dead: np.ndarray) -> float:
    """``#{|D| < th}`` of a bounded activation whose ``D = f'(s)`` is computed from ``a``
    (:data:`DERIVATIVE_SIGMOID`: ``(1 - a) a``; :data:`DERIVATIVE_TANH`: ``1 - a a``), and
    ``dead[j]`` set to 0 where ``D[j] != 0`` on some row, as :func:`_row_counts` counts them
    without the count of ``s <= 0`` (``inactive_frac`` is not defined for a bounded
    activation): one loop that reads only ``a`` (sigmoid 60 x 100 float32: 5.8 -> 3.1 us),
    with one int32 flag per unit or-ed row by row as :func:`_step_counts` does (a float select
    on ``dead`` per entry did not run in vector lanes with this Numba)."""
    one = a.dtype.type(1)
    zero = a.dtype.type(0)
    alive = np.zeros(a.shape[1], dtype=np.int32)
    total = 0.0
    for b in range(a.shape[0]):
        ar = a[b]
        n_sat = np.int32(0)
        if how == DERIVATIVE_SIGMOID:
            for j in range(ar.size):
                aj = ar[j]
                dj = (one - aj) * aj
                n_sat += np.int32(abs(dj) < th)
                alive[j] |= np.int32(dj != zero)
        else:
            for j in range(ar.size):
                aj = ar[j]
                dj = one - aj * aj
                n_sat += np.int32(abs(dj) < th)
                alive[j] |= np.int32(dj != zero)
        total += n_sat
    for j in range(alive.size):
        dead[j] = zero if alive[j] else dead[j]
    return total


@numba.njit(**_JIT)
def _step_counts(s: np.ndarray, dead: np.ndarray) -> float:
    """``#{s <= 0}`` of a ReLU layer (``D = [s > 0]``, :data:`DERIVATIVE_STEP`) and ``dead[j]``
    set to 0 where ``s[j] > 0`` on some row, as :func:`_row_counts` counts them without the
    saturation count (not defined for an unbounded activation): one int32 flag per unit,
    or-ed row by row (ReLU 128 x 256 float32: 22 -> 9 us)."""
    zero = s.dtype.type(0)
    alive = np.zeros(s.shape[1], dtype=np.int32)
    total = 0.0
    for b in range(s.shape[0]):
        sr = s[b]
        n_zs = np.int32(0)
        for j in range(sr.size):
            v = sr[j]
            n_zs += np.int32(v <= zero)  # (a NaN is neither: counted as _row_counts does)
            alive[j] |= np.int32(v > zero)
        total += n_zs
    for j in range(alive.size):
        dead[j] = zero if alive[j] else dead[j]
    return total


@numba.njit(**_JIT)
def layer(s: np.ndarray, a: np.ndarray, d: np.ndarray, how: int, thr: float, family: int,
          g: np.ndarray, w: np.ndarray, dw: np.ndarray, ranks: np.ndarray, t: np.ndarray,
          monotone: bool, w_copy: np.ndarray) -> np.ndarray:
    """The quantities of one hidden layer (module docstring). ``s``, ``a``: 2-d (batch x units)
    C-ordered; ``d``: ``f'(s)`` of that shape when ``how`` is :data:`DERIVATIVE_GIVEN`;
    ``g``, ``w``, ``dw``: flat, empty when absent; ``ranks``/``t``: the interleaved ranks
    ``floor h, ceil h`` and fractions ``h - floor h`` of the P percentiles; ``w_copy``: when
    not empty, ``w`` is copied into it (the recorder's snapshot for the next update ratio) in
    the pass that sums its moments. Returns float64 ``[quantities, status]``, the quantities in
    ``stats.layer_quantities`` order (mean, std and the P percentiles of ``s``, the same of
    ``a`` (its percentiles NaN unless ``monotone``), then the other 8)."""
    p = t.size
    out = np.full(TERMS + 2 * p + 1, math.nan)
    rows, cols = s.shape
    zero = s.dtype.type(0)
    th = s.dtype.type(thr)
    cs = np.float64(s[0, 0])
    ca = np.float64(a[0, 0])
    dead = np.ones(cols, dtype=s.dtype)  # 1 while every D of the unit so far was 0
    zs = sat = 0.0  # float64 totals of each row's int32 counts: exact
    if family == FAMILY_BOUNDED and (how == DERIVATIVE_SIGMOID or how == DERIVATIVE_TANH):
        sat = _saturation_counts(a, how, th, dead)
    elif family == FAMILY_RELU and how == DERIVATIVE_STEP:
        zs = _step_counts(s, dead)
    else:
        for b in range(rows):
            n_sat, n_zs = _row_counts(s[b], a[b], d, b, how, th, dead)
            sat += n_sat
            zs += n_zs
    s1, s2 = shifted_sums(s.reshape(s.size), cs)
    a1, a2 = shifted_sums(a.reshape(a.size), ca)
    n = s.size
    sf = s.reshape(n)
    act = 2 + p  # act_mean's position: pre_mean, pre_std and the P pre_pK come first
    rest = act + 2 + p  # saturated_frac's position, after act_mean, act_std and the act_pK
    out[0], out[1], ok_s = mean_std(sf, cs, s1, s2)
    out[act], out[act + 1], ok_a = mean_std(a.reshape(n), ca, a1, a2)
    if family == FAMILY_BOUNDED_RELU:  # an inactive unit (s <= 0) is not saturated
        sat = _upper_saturation(s, d, th) if how == DERIVATIVE_GIVEN else sat
    if family == FAMILY_BOUNDED or family == FAMILY_BOUNDED_RELU:
        out[rest] = sat / n
    out[rest + 1] = (dead != zero).sum() / cols
    if family == FAMILY_RELU or family == FAMILY_BOUNDED_RELU:
        out[rest + 2] = zs / n
    out[rest + 3], out[rest + 4], ok_g = _std_abs(g, g[:0])
    out[rest + 5], _, ok_w = _std_abs(w, w_copy)
    out[rest + 6], out[rest + 7], ok_dw = _std_abs(dw, dw[:0])
    if not (ok_s and ok_a and ok_g and ok_w and ok_dw):
        out[-1] = NOT_FINITE
        return out
    out[-1] = OK
    if p == 0:
        return out
    lo, hi = column_range(s)
    if lo == hi:
        at = np.zeros(ranks.size, dtype=np.intp)
    elif np.isfinite(hi - lo) and np.isfinite(4096.0 / (hi - lo)):
        at = positions(sf, ranks, lo, hi)
    else:
        out[-1] = NOT_SELECTED
        return out
    af = a.reshape(n)
    for k in range(p):
        out[2 + k] = lerp(np.float64(sf[at[2 * k]]), np.float64(sf[at[2 * k + 1]]), t[k])
        if monotone:
            out[act + 2 + k] = lerp(np.float64(af[at[2 * k]]), np.float64(af[at[2 * k + 1]]),
                                    t[k])
    return out
