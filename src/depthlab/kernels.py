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
  ``w -= (b mu + c d) lr``) in one pass over ``w``, ``b``, ``d`` (the SGD momentum step).
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
