"""Compiled one-pass kernels for ``Watch`` records on CPU tensors (Numba, ``depthlab[fast]``).

Imported only through :func:`depthlab.torch.accumulators.watch_kernels` (which follows
:func:`depthlab.probes.accel.kernels`: Numba installed and ``DEPTHLAB_PROBE_KERNELS`` not
``numpy``); the torch operations of
:mod:`depthlab.torch.accumulators` define the results and stay the path for CUDA/MPS, bf16/fp16 and
tensor subclasses. ``reassoc`` lets the sums run in vector lanes (deterministic for one machine and
build); NaN and infinity keep IEEE semantics. A float32 block sum of squares that overflows
(entries beyond ~1e19: sum x^2 > 3.4e38, where the torch operations' float64 norms do not)
is taken again in float64, as one that underflows is: a layer output of std 6e18 had
``pre_std`` NaN on this path and 6.0e18 on the torch operations' path.

* :func:`sums` of a tensor's entries: ``(S1, S2, A) = (sum x, sum x^2, sum |x|)``.
* :func:`relu_units` of ``a = relu(s)`` viewed as ``(outer, C, inner)`` (``C`` units on the
  feature axis): ``S1 = sum a``, ``S2 = sum a^2``, ``Z = #{a <= 0}`` and the mask
  ``alive_c = any(not a[:, c, :] <= 0)``: a unit is dead on the batch where every entry is 0
  (``f'(s) = 0`` exactly where ``a = 0``); a NaN entry is neither 0 nor counted in ``Z``, as
  on the torch path.
* :func:`layer_relu` of a layer's output ``s`` that an ``nn.ReLU`` takes next: the layer's
  ``(sum s, sum s^2)`` and the ReLU's ``(sum relu(s), sum relu(s)^2, #{s <= 0})`` and live
  units, in one read of ``s`` (the ReLU's hook then needs no pass of its own).
* :func:`weight_sums` of a weight ``W``, its gradient ``G`` and the snapshot ``W0`` of the
  previous step: ``(sum W, sum W^2, sum G, sum G^2, sum |G|, sum W0^2, sum (W - W0)^2)``
  in one loop, and with ``copy`` the snapshot is then overwritten by ``W`` (the next record's
  ``W0``).
* :func:`weight_sums_at`: :func:`weight_sums` of every weight of a record in one call, the
  arrays given by their addresses (no array objects to build and unbox per weight);
  :func:`sums_at` and :func:`layer_relu_at`: :func:`sums` and :func:`layer_relu` of a
  contiguous tensor given by its address, likewise (the same compiled functions on arrays of
  the same type: the same values to the bit).
"""

from __future__ import annotations

import numba
import numpy as np
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from ..probes.kernels import BLOCK, TINY_SQUARE_32, TINY_SQUARE_64, block_moments, moments

_JIT = dict(nogil=True, cache=True, fastmath={"reassoc"})


@numba.njit(**_JIT)
def sums(x: np.ndarray) -> tuple[float, float, float]:
    """``(S1, S2, A) = (sum x, sum x^2, sum |x|)`` of the flat array ``x``: each block of
    :data:`depthlab.probes.kernels.BLOCK` entries summed in ``x``'s dtype (float32 vector lanes,
    :func:`depthlab.probes.kernels.block_moments` around 0), the blocks in float64; everything
    again in float64 (:func:`depthlab.probes.kernels.moments`) when the mean square falls below
    the dtype's ``TINY_SQUARE`` (squares of vanishing gradients underflow in float32) or is not
    finite: a float32 block's ``sum x`` past 3.4e38 is ``inf - inf = NaN`` in the lanes (and so
    is ``S2``, moved by ``0 * S1``), which float32 outputs of std 3e37 read as ``pre_mean`` and
    ``pre_std`` NaN; float64 sums are finite there (NaN entries: NaN again)."""
    s1, s2, ab = block_moments(x, 0.0, x[:0])
    if s2 < (TINY_SQUARE_32 if x.itemsize == 4 else TINY_SQUARE_64) * x.size or not s2 < np.inf:
        s1, s2, ab, _ = moments(x, 0.0)
    return s1, s2, ab


@numba.njit(**_JIT)
def _relu_units64(a: np.ndarray, alive: np.ndarray) -> tuple[float, float, int]:
    """:func:`relu_units` with every entry taken to float64 first (no float32 square
    underflows)."""
    outer, units, inner = a.shape
    s1 = 0.0
    s2 = 0.0
    z = 0
    for o in range(outer):
        for c in range(units):
            for k in range(inner):
                v = np.float64(a[o, c, k])
                s1 += v
                s2 += v * v
                if v > 0.0:
                    alive[c] = True
                elif v <= 0.0:
                    z += 1
    if s1 != s1:  # NaN entries (a >= 0 otherwise): their units are not dead
        for o in range(outer):
            for c in range(units):
                for k in range(inner):
                    if a[o, c, k] != a[o, c, k]:
                        alive[c] = True
    return s1, s2, z


@numba.njit(**_JIT)
def relu_units(a: np.ndarray, alive: np.ndarray) -> tuple[float, float, int]:
    """``(S1, S2, Z)`` of the 3-d array ``a`` (outer, C, inner), read in memory order; sets
    ``alive[c]`` where unit ``c`` has a positive (or NaN) entry (``alive``: ``C`` bools, all
    False on entry). With ``inner == 1`` (units on the last axis) each row is summed in ``a``'s
    dtype over runs of at most :data:`~depthlab.probes.kernels.BLOCK` units (vector lanes, as
    :func:`sums`; ``Z`` counted in the same lanes, exact below 2^24; the runs added in
    float64), and a unit is alive at its first entry that is not ``<= 0``, found by a scan down
    its column that stops there (a few reads for a live unit); when the mean square falls below
    the dtype's ``TINY_SQUARE`` (float32 squares of vanishing activations underflow) everything
    is summed again in float64."""
    outer, units, inner = a.shape
    if inner != 1:
        return _relu_units64(a, alive)
    zero = a.dtype.type(0)
    one = a.dtype.type(1)
    s1 = 0.0
    s2 = 0.0
    z = 0.0
    for o in range(outer):
        for c0 in range(0, units, BLOCK):
            t1 = zero
            t2 = zero
            tz = zero
            for c in range(c0, min(c0 + BLOCK, units)):
                v = a[o, c, 0]
                t1 += v
                t2 += v * v
                tz += one if v <= zero else zero
            s1 += t1
            s2 += t2
            z += tz
    if s2 < (TINY_SQUARE_32 if a.itemsize == 4 else TINY_SQUARE_64) * a.size or s2 == np.inf:
        return _relu_units64(a, alive)
    for c in range(units):
        for o in range(outer):
            if not a[o, c, 0] <= zero:
                alive[c] = True
                break
    return s1, s2, int(z)


@numba.njit(**_JIT)
def _layer_relu64(x: np.ndarray) -> tuple[float, float, float, float, float]:
    """:func:`layer_relu`'s five sums with every entry taken to float64 first."""
    p1 = p2 = r1 = r2 = 0.0
    z = 0
    for i in range(x.size):
        v = np.float64(x[i])
        p1 += v
        p2 += v * v
        if v <= 0.0:
            z += 1
        else:  # positive or NaN: relu(s) = s
            r1 += v
            r2 += v * v
    return p1, p2, r1, r2, float(z)


@numba.njit(**_JIT)
def layer_relu(s: np.ndarray, alive: np.ndarray) -> tuple[float, float, float, float, int]:
    """One pass over a layer's output ``s`` (2-d, C-contiguous, ``C`` units on the last axis)
    that a ``ReLU`` takes next: ``(P1, P2, R1, R2, Z)`` with ``P1 = sum s``, ``P2 = sum s^2``
    (the layer's ``pre_*``), ``R1 = sum relu(s)``, ``R2 = sum relu(s)^2`` (the ReLU's output,
    ``relu(s) = s`` where ``s > 0`` or NaN, else 0, as ``torch.relu``) and
    ``Z = #{s <= 0} = #{relu(s) <= 0}``; sets ``alive[c]`` where some ``s[:, c]`` is not
    ``<= 0`` (``f'(s) != 0``; ``alive``: ``C`` bools, all False on entry). Blocks of
    :data:`~depthlab.probes.kernels.BLOCK` entries are summed in ``s``'s dtype (vector lanes),
    the blocks in float64, as :func:`sums`; when a mean square falls below the dtype's
    ``TINY_SQUARE`` everything is summed again in float64. The ReLU's own hook then only
    checks that it read this very tensor (the layer's output, unchanged since)."""
    x = s.reshape(-1)
    n = x.size
    zero = x.dtype.type(0)
    one = x.dtype.type(1)
    p1 = p2 = r1 = r2 = z = 0.0
    full = n // BLOCK
    for b in range(full):
        t1 = t2 = u1 = u2 = tz = zero
        for i in range(b * BLOCK, b * BLOCK + BLOCK):
            v = x[i]
            t1 += v
            t2 += v * v
            off = v <= zero
            r = zero if off else v
            u1 += r
            u2 += r * r
            tz += one if off else zero
        p1 += t1
        p2 += t2
        r1 += u1
        r2 += u2
        z += tz
    rest = _layer_relu64(x[full * BLOCK:])
    p1 += rest[0]
    p2 += rest[1]
    r1 += rest[2]
    r2 += rest[3]
    z += rest[4]
    tiny = (TINY_SQUARE_32 if x.itemsize == 4 else TINY_SQUARE_64) * n
    if p2 < tiny or r2 < tiny or p2 == np.inf:
        p1, p2, r1, r2, z = _layer_relu64(x)
    outer, units = s.shape
    for c in range(units):
        for o in range(outer):
            if not s[o, c] <= zero:
                alive[c] = True
                break
    return p1, p2, r1, r2, int(z)


@numba.njit(**_JIT)
def _weight_sums64(w: np.ndarray, g: np.ndarray, w0: np.ndarray, start: int) -> tuple[
        float, float, float, float, float, float, float]:
    """:func:`weight_sums` of the entries from ``start`` on, every square taken and summed in
    float64 (no underflow)."""
    sw = sw2 = sg = sg2 = sga = s02 = sd2 = 0.0
    for i in range(start, w.size):
        x = np.float64(w[i])
        y = np.float64(g[i])
        z = np.float64(w0[i])
        d = x - z
        sw += x
        sw2 += x * x
        sg += y
        sg2 += y * y
        sga += abs(y)
        s02 += z * z
        sd2 += d * d
    return sw, sw2, sg, sg2, sga, s02, sd2


@numba.njit(**_JIT)
def weight_sums(w: np.ndarray, g: np.ndarray, w0: np.ndarray, copy: bool) -> tuple[
        float, float, float, float, float, float, float]:
    """The seven sums of the module docstring for flat arrays ``w``, ``g``, ``w0`` of one size and
    dtype, in one loop; a caller without a gradient or snapshot passes ``w`` in its place and
    ignores those sums. ``copy``: ``w0[:] = w`` afterwards, where ``sum W0^2`` is in
    ``[TINY_SQUARE_64 n, inf)`` and ``sum (W - W0)^2`` finite (else the caller takes the update's
    norms again on ``W / 2^e``, ``W0 / 2^e`` and copies: ``W0`` is still needed). Each block of
    :data:`depthlab.probes.kernels.BLOCK` entries is summed in the arrays' dtype (float32 vector
    lanes: four times the rate of float64 accumulators) and the blocks in float64; when a mean
    square falls below the dtype's ``TINY_SQUARE`` (vanishing gradients or updates, whose float32
    squares underflow) everything is summed again in float64."""
    n = w.size
    zero = w.dtype.type(0)
    sw = sw2 = sg = sg2 = sga = s02 = sd2 = 0.0
    full = n // BLOCK
    for b in range(full):
        t = tw2 = tg = tg2 = tga = t02 = td2 = zero
        for i in range(b * BLOCK, b * BLOCK + BLOCK):
            x = w[i]
            y = g[i]
            z = w0[i]
            d = x - z
            t += x
            tw2 += x * x
            tg += y
            tg2 += y * y
            tga += abs(y)
            t02 += z * z
            td2 += d * d
        sw += t
        sw2 += tw2
        sg += tg
        sg2 += tg2
        sga += tga
        s02 += t02
        sd2 += td2
    rest = _weight_sums64(w, g, w0, full * BLOCK)  # the last, partial block
    sw += rest[0]
    sw2 += rest[1]
    sg += rest[2]
    sg2 += rest[3]
    sga += rest[4]
    s02 += rest[5]
    sd2 += rest[6]
    tiny = (TINY_SQUARE_32 if w.itemsize == 4 else TINY_SQUARE_64) * n
    if sw2 < tiny or sg2 < tiny or s02 < tiny or sd2 < tiny \
            or sw2 == np.inf or sg2 == np.inf or s02 == np.inf or sd2 == np.inf:
        sw, sw2, sg, sg2, sga, s02, sd2 = _weight_sums64(w, g, w0, 0)
    if copy and TINY_SQUARE_64 * n <= s02 < np.inf and sd2 < np.inf:
        for i in range(n):
            w0[i] = w[i]
    return sw, sw2, sg, sg2, sga, s02, sd2


@intrinsic
def _pointer(typingctx, address):
    """The ``void *`` at the integer ``address`` (for :func:`numba.carray`)."""
    sig = types.voidptr(types.int64)

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], cgutils.voidptr_t)
    return sig, codegen


@numba.njit(**_JIT)
def weight_sums_at(addresses: np.ndarray, sizes: np.ndarray, copy: np.ndarray, like: np.ndarray,
                   out: np.ndarray) -> None:
    """:func:`weight_sums` of ``k`` weights in one call: row ``i`` of ``addresses`` (``k x 3``
    int64) holds the addresses of the first entries of contiguous arrays ``W``, ``G``, ``W0``
    of ``sizes[i]`` entries each, of ``like``'s dtype (a caller without a gradient or snapshot
    gives ``W``'s address in its place); ``out[i]`` (``k x 7`` float64) receives their seven
    sums, ``copy[i]`` as :func:`weight_sums`'s ``copy``. Each weight is summed by
    :func:`weight_sums` itself on arrays of the same type, so the values are those of one call
    per weight, to the bit. The caller keeps the tensors alive during the call."""
    dt = like.dtype
    for i in range(sizes.size):
        n = sizes[i]
        w = numba.carray(_pointer(addresses[i, 0]), n, dt)
        g = numba.carray(_pointer(addresses[i, 1]), n, dt)
        w0 = numba.carray(_pointer(addresses[i, 2]), n, dt)
        r = weight_sums(w, g, w0, copy[i])
        for j in range(7):
            out[i, j] = r[j]


@numba.njit(**_JIT)
def sums_at(address: int, n: int, like: np.ndarray) -> tuple[float, float, float]:
    """:func:`sums` of the ``n`` contiguous entries of ``like``'s dtype at ``address``."""
    return sums(numba.carray(_pointer(address), n, like.dtype))


@numba.njit(**_JIT)
def layer_relu_at(address: int, outer: int, units: int, like: np.ndarray, alive: np.ndarray
                  ) -> tuple[float, float, float, float, int]:
    """:func:`layer_relu` of the C-contiguous ``(outer, units)`` array of ``like``'s dtype at
    ``address``."""
    return layer_relu(numba.carray(_pointer(address), (outer, units), like.dtype), alive)
