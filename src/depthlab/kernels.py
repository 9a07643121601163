"""Compiled fast paths of the engine's elementwise work (Numba; the optional ``depthlab[fast]``).

Imported only through :func:`depthlab.accel.kernels` (``import depthlab`` never loads Numba).
Each kernel is one pass over its arrays in place of the few NumPy calls (one pass and a few
microseconds of call overhead each) of the expression it replaces. That NumPy expression, kept
beside each caller, is the definition: every kernel performs the same IEEE operations in the
same order on the same dtype (no fused multiply-add, no reassociation: ``fastmath`` is off), so
its results are bit-for-bit those of the NumPy path, NaN and infinity included. The callers pass
C-contiguous arrays of one dtype (float32 or float64, each compiled on first use and cached on
disk with ``cache=True``, see :mod:`depthlab.accel`).

Formulas (``y``, ``g`` of shape ``(batch, n)``, ``b`` of shape ``(n,)``):

* :func:`add_rows`: ``y += b`` (the bias of every row; ``Dense.forward``);
* :func:`column_sum`: ``out = sum_batch g``, rows added in order to 0,
  ``out = ((0 + g_0) + g_1) + ...`` as NumPy reduces a C-contiguous array of two or more
  columns along axis 0 (a single column is a contiguous run, which NumPy sums pairwise);
  ``Dense.backward``'s ``dL/db``;
* :func:`negate_over`, :func:`sigmoid_tail`: ``a = -s`` (and whether ``e^-s`` may overflow),
  then, after NumPy's ``np.exp(a, out=a)``, ``a = 1 / (1 + a)``: the sigmoid's forward around
  its exponential (which stays NumPy's: its bits are NumPy's SIMD ``exp``);
* :func:`sigmoid_backward`: ``g = g a (1 - a)`` as ``(g a)(1 - a)``;
* :func:`tanh_backward`: ``g = g ((1 - a)(1 + a))``;
* :func:`relu_forward`: ``a = max(s, 0)`` as ``np.maximum(s, 0)``: ``s`` where ``s > 0`` or ``s``
  is NaN (its bits kept), ``+0`` where ``s <= 0`` (``-0`` included);
* :func:`relu_backward`: ``g = g * 1[not s <= 0]``: ``g`` where ``s > 0`` or ``s`` is NaN,
  ``g * 0`` where ``s <= 0``, and ``+0`` at every such unit when the result holds a NaN (an ``inf``
  or NaN gradient at an inactive unit gives 0, as torch's ``threshold_backward``);
* :func:`sub_scaled`: ``w -= c v`` with the product rounded before the subtraction (the SGD
  step ``w -= lr d``);
* :func:`momentum_step`: ``b = b mu + c d`` then ``w -= lr b`` (or Nesterov's
  ``w -= (b mu + c d) lr``) in one pass over ``w``, ``b``, ``d`` (the SGD momentum step);
* :func:`shift_rows`, :func:`normalize_rows`, :func:`subtract_pick`: the softmax
  cross-entropy's passes around NumPy's ``exp`` and ``log`` (which stay NumPy's):
  ``logp = z - max_row z``; ``sums = sum_row p`` (NumPy's pairwise order, :func:`row_sum`,
  rows of at most 128 entries) and ``p /= sums``; ``logp -= log(sums)`` and
  ``picked = logp[i, y_i]`` (``CrossEntropy.forward`` of integer labels);
  :func:`softmax_grad`: its backward, ``g = (p - onehot(y)) s``.
"""

from __future__ import annotations

import numba
import numpy as np

_JIT = dict(nogil=True, cache=True)
"""No ``fastmath``: the IEEE operations of the NumPy definition, in its order. The loops are
written without branches in their bodies (a select of two values, then arithmetic) so that
LLVM turns them into SIMD code: a branch on the sign of ``s`` mispredicts at about every other
unit of a ReLU layer (the earlier branchy ReLU backward took 24 us on a 128 x 256 float32
batch, this one 5.7 us; ``np.maximum(s, 0)`` takes 25 us, :func:`relu_forward` 5.7 us)."""


@numba.njit(**_JIT)
def add_rows(y: np.ndarray, b: np.ndarray) -> None:
    """``y[i, j] += b[j]`` for a C-contiguous ``(batch, n)`` ``y`` and an ``(n,)`` ``b``."""
    rows, n = y.shape
    for i in range(rows):
        for j in range(n):
            y[i, j] += b[j]


@numba.njit(**_JIT)
def column_sum(g: np.ndarray, out: np.ndarray) -> None:
    """``out[j] = ((0 + g[0, j]) + g[1, j]) + ...`` (rows in order from NumPy's start, 0)."""
    rows, n = g.shape
    for j in range(n):
        out[j] = 0
    for i in range(rows):
        for j in range(n):
            out[j] += g[i, j]


@numba.njit(**_JIT)
def negate_over(s: np.ndarray, a: np.ndarray, limit: float) -> bool:
    """``a = -s`` (exact), and whether any ``-s > limit`` (``+inf`` included, NaN not): the
    first pass of the sigmoid's ``1 / (1 + e^-s)``, telling whether ``e^-s`` can overflow
    (``s``, ``a`` C-contiguous, one shape; ``a`` is written)."""
    sf = s.reshape(-1)
    af = a.reshape(-1)
    big = False
    for i in range(sf.size):
        v = -sf[i]
        af[i] = v
        big |= v > limit
    return big


@numba.njit(**_JIT, error_model="numpy")
def sigmoid_tail(a: np.ndarray) -> None:
    """``a = 1 / (1 + a)`` in place, the sum rounded first (NumPy's ``a += 1``, then
    ``np.reciprocal``): the sigmoid's last two passes, given ``a = e^-s``. NumPy's error model
    (IEEE division, no ZeroDivisionError check), without which the division is not
    vectorized (3.8 us for 60 x 100 float32 against NumPy's 2.0, with it 0.5)."""
    af = a.reshape(-1)
    one = af.dtype.type(1)
    for i in range(af.size):
        af[i] = one / (af[i] + one)


@numba.njit(**_JIT)
def sigmoid_backward(g: np.ndarray, a: np.ndarray) -> None:
    """``g = (g a)(1 - a)`` in place (``g``, ``a`` C-contiguous, one shape)."""
    gf = g.reshape(-1)
    af = a.reshape(-1)
    one = gf.dtype.type(1)
    for i in range(gf.size):
        ai = af[i]
        gf[i] = gf[i] * ai * (one - ai)


@numba.njit(**_JIT)
def tanh_backward(g: np.ndarray, a: np.ndarray) -> None:
    """``g = g ((1 - a)(1 + a))`` in place (``g``, ``a`` C-contiguous, one shape)."""
    gf = g.reshape(-1)
    af = a.reshape(-1)
    one = gf.dtype.type(1)
    for i in range(gf.size):
        ai = af[i]
        gf[i] = gf[i] * ((one - ai) * (one + ai))


@numba.njit(**_JIT)
def relu_forward(s: np.ndarray, a: np.ndarray) -> None:
    """``a = max(s, 0)`` as ``np.maximum(s, 0)``: ``+0`` where ``s <= 0``, else ``s`` (NaN kept)
    (``s``, ``a`` C-contiguous, one shape; ``a`` is written)."""
    sf = s.reshape(-1)
    af = a.reshape(-1)
    zero = af.dtype.type(0)
    for i in range(sf.size):
        v = sf[i]
        af[i] = zero if v <= zero else v


@numba.njit(**_JIT)
def relu_backward(g: np.ndarray, s: np.ndarray) -> None:
    """``g = g * 1[not s <= 0]`` in place, the 0/1 factor a float as NumPy's ``g *= keep``;
    ``+0`` at every inactive unit when the product holds a NaN anywhere (as the NumPy
    definition: ``grad_a *= keep``, then ``grad_a[~keep] = 0``)."""
    gf = g.reshape(-1)
    sf = s.reshape(-1)
    zero = gf.dtype.type(0)
    one = gf.dtype.type(1)
    nan = False
    for i in range(gf.size):
        v = gf[i] * (zero if sf[i] <= zero else one)  # s > 0 or NaN: 1 (f'(NaN) = 1, torch)
        gf[i] = v
        nan |= v != v
    if nan:
        for i in range(gf.size):
            if sf[i] <= 0:
                gf[i] = zero


@numba.njit(**_JIT)
def sub_scaled(w: np.ndarray, v: np.ndarray, c: float) -> None:
    """``w -= c v`` in place, ``c v`` rounded to the dtype first (``c`` of the arrays' dtype)."""
    wf = w.reshape(-1)
    vf = v.reshape(-1)
    for i in range(wf.size):
        wf[i] -= c * vf[i]



@numba.njit(**_JIT)
def momentum_step(w: np.ndarray, buf: np.ndarray, d: np.ndarray, coef: np.ndarray,
                  nesterov: bool) -> None:
    """One SGD momentum step in place, one pass, with ``(mu, c, lr) = coef`` (an array of the
    dtype of ``w``, ``buf``, ``d``: C-contiguous, one shape): ``b = b mu + c d`` (for ``c = 1``
    and ``c = -1`` the sum ``b mu + d`` and the difference ``b mu - d``, as ``axpy``), then
    ``w -= lr b``, or with ``nesterov`` ``w -= (b mu + c d) lr`` (``c = +-1`` there), each
    product and sum rounded to the dtype in the order of the NumPy definition
    (``SGD._update``)."""
    wf = w.reshape(-1)
    bf = buf.reshape(-1)
    df = d.reshape(-1)
    mu, c, lr = coef[0], coef[1], coef[2]
    n = wf.size
    if nesterov:
        if c == 1:
            for i in range(n):
                b = bf[i] * mu + df[i]
                bf[i] = b
                wf[i] -= (b * mu + df[i]) * lr
        else:
            for i in range(n):
                b = bf[i] * mu - df[i]
                bf[i] = b
                wf[i] -= (b * mu - df[i]) * lr
    elif c == 1:
        for i in range(n):
            b = bf[i] * mu + df[i]
            bf[i] = b
            wf[i] -= lr * b
    elif c == -1:
        for i in range(n):
            b = bf[i] * mu - df[i]
            bf[i] = b
            wf[i] -= lr * b
    else:
        for i in range(n):
            b = bf[i] * mu + df[i] * c
            bf[i] = b
            wf[i] -= lr * b


PAIRWISE_BLOCK = 128
"""NumPy's ``PW_BLOCKSIZE``: its pairwise sum adds up to this many entries in one block
(:func:`row_sum`); longer runs are halved recursively."""


@numba.njit(**_JIT)
def row_sum(a: np.ndarray, i: int, c: int) -> float:
    """``a[i, :c]`` (``c <= 128``) summed as NumPy's pairwise sum adds one block, in ``a``'s
    dtype: below 8 entries one by one from ``-0.0``; else in 8 running sums,
    ``((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))``, then the rest one by one."""
    if c < 8:
        res = a.dtype.type(-0.0)
        for j in range(c):
            res += a[i, j]
        return res
    r0, r1, r2, r3 = a[i, 0], a[i, 1], a[i, 2], a[i, 3]
    r4, r5, r6, r7 = a[i, 4], a[i, 5], a[i, 6], a[i, 7]
    end = c - c % 8
    j = 8
    while j < end:
        r0 += a[i, j]
        r1 += a[i, j + 1]
        r2 += a[i, j + 2]
        r3 += a[i, j + 3]
        r4 += a[i, j + 4]
        r5 += a[i, j + 5]
        r6 += a[i, j + 6]
        r7 += a[i, j + 7]
        j += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while j < c:
        res += a[i, j]
        j += 1
    return res


@numba.njit(**_JIT)
def shift_rows(z: np.ndarray, logp: np.ndarray) -> bool:
    """``logp = z - max_row(z)`` for ``(batch, c)`` arrays; False (``logp`` partly written)
    when some ``z`` is not finite or some row's maximum is 0 (the sign of a zero maximum is
    NumPy's reduction's to choose): the caller then takes the NumPy path."""
    rows, c = z.shape
    for i in range(rows):
        m = z[i, 0]
        ok = True
        for j in range(c):
            v = z[i, j]
            ok &= v - v == 0
            m = v if v > m else m
        if not ok or m == 0:
            return False
        for j in range(c):
            logp[i, j] = z[i, j] - m
    return True


@numba.njit(nogil=True, cache=True, error_model="numpy")
def normalize_rows(p: np.ndarray, sums: np.ndarray) -> None:
    """``sums[i, 0] = 0 + sum_j p[i, j]`` (NumPy's ``p.sum(axis=1, keepdims=True)``: its
    pairwise order, :func:`row_sum`, for rows of at most :data:`PAIRWISE_BLOCK` entries), then
    ``p[i, j] /= sums[i, 0]``."""
    rows, c = p.shape
    zero = p.dtype.type(0)
    for i in range(rows):
        t = zero + row_sum(p, i, c)
        sums[i, 0] = t
        for j in range(c):
            p[i, j] /= t


@numba.njit(**_JIT)
def subtract_pick(logp: np.ndarray, logs: np.ndarray, y: np.ndarray,
                  picked: np.ndarray) -> None:
    """``logp[i, j] -= logs[i, 0]``, then ``picked[i] = logp[i, y[i]]`` (labels in range)."""
    rows, c = logp.shape
    for i in range(rows):
        t = logs[i, 0]
        for j in range(c):
            logp[i, j] -= t
        picked[i] = logp[i, y[i]]


@numba.njit(**_JIT)
def softmax_grad(p: np.ndarray, y: np.ndarray, scale: np.ndarray, g: np.ndarray) -> None:
    """``g = (p - onehot(y)) s`` with ``s = scale[0]``: ``g[i, j] = p[i, j] s``, and at the label
    ``g[i, y_i] = (p[i, y_i] - 1) s`` (NumPy's ``g = p.copy(); g[rows, y] -= 1; g *= s``)."""
    rows, c = p.shape
    one = p.dtype.type(1)
    s = scale[0]
    for i in range(rows):
        for j in range(c):
            g[i, j] = p[i, j] * s
        k = y[i]
        if k < 0 or k >= c:  # forward checked them, but the caller's label array may have
            raise IndexError("softmax_grad: a label outside 0..C-1")  # changed since: no
        g[i, k] = (p[i, k] - one) * s  # write outside g (NumPy's indexing raised IndexError)
