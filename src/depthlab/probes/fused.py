"""The per-layer statistics of :func:`depthlab.probes.stats.layer_stats` by one call of the
compiled kernel :func:`depthlab.probes.kernels.layer` (used when :mod:`depthlab.probes.accel`
has the kernels; the NumPy path in ``stats`` defines every quantity, and takes over for a layer
with a non-finite entry, mixed dtypes or ``a`` and ``s`` of different shapes).

The kernel returns the quantities themselves (formulas in :mod:`depthlab.probes.kernels`); this
module prepares its arguments once per activation and percentile list (derivative code,
saturation threshold, family, ranks and fractions of NumPy's ``linear`` rule) and, for an
activation not known to be nondecreasing, selects the percentiles of ``a`` separately.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..activations import ActivationFn, ReLU, Sigmoid, Tanh
from ..network import ProbePoint
from . import accel
from .quantiles import percentile_values, plan, select_ranks
from .quantiles import percentiles as quantile_values
from .stats import SATURATION_RATIO, activation_family, is_nondecreasing

_FAMILY = {"other": 0, "bounded": 1, "relu": 2}  # kernels.FAMILY_*


def _derivative_code(fn: ActivationFn, kernels) -> int:
    """How the kernel obtains ``f'(s)`` (``kernels.DERIVATIVE_*``): computed in the pass for the
    library's own sigmoid, tanh and ReLU (exact classes, so an override is respected), else
    from ``fn.derivative``."""
    return {Sigmoid: kernels.DERIVATIVE_SIGMOID, Tanh: kernels.DERIVATIVE_TANH,
            ReLU: kernels.DERIVATIVE_STEP}.get(type(fn), kernels.DERIVATIVE_GIVEN)


_INFO: dict[int, tuple] = {}


def _info(fn: ActivationFn, kernels) -> tuple[int, float, int, bool]:
    """``(derivative code, saturation threshold, family code, nondecreasing)`` of ``fn``, kept
    per activation object (a recorder asks for the same ones at every record)."""
    got = _INFO.get(id(fn))
    if got is None or got[0] is not fn:
        if len(_INFO) > 1024:
            _INFO.clear()
        got = _INFO[id(fn)] = (fn, _derivative_code(fn, kernels),
                               SATURATION_RATIO * float(fn.max_derivative),
                               _FAMILY[activation_family(fn)], is_nondecreasing(fn))
    return got[1:]


@lru_cache(maxsize=256)
def _ranks_fractions(n: int, percentiles: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The interleaved ranks ``floor h, ceil h`` and the fractions ``h - floor h`` of the
    percentiles of ``n`` entries (read-only arrays: one compiled variant of the kernel)."""
    pos, ranks = plan(n, percentiles)
    t = np.array([f for _, _, f in pos], dtype=np.float64)
    t.flags.writeable = False
    return ranks, t


_EMPTY: dict[np.dtype, tuple[np.ndarray, np.ndarray]] = {}


def _empty(dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """Empty 1-d and 2-d arrays of ``dtype`` (absent arguments of the kernel)."""
    got = _EMPTY.get(dtype)
    if got is None:
        got = _EMPTY[dtype] = (np.empty(0, dtype=dtype), np.empty((0, 0), dtype=dtype))
    return got


def _flat(x: np.ndarray | None, dtype: np.dtype, empty: np.ndarray) -> np.ndarray | None:
    """``x`` as a flat C-contiguous array (``empty`` for None); None when its dtype differs."""
    if x is None:
        return empty
    if x.dtype != dtype:
        return None
    return np.ascontiguousarray(x).reshape(-1)


def kernel_layer_stats(point: ProbePoint, percentiles: tuple[float, ...],
                       w_copy: np.ndarray | None = None) -> list[float] | None:
    """:func:`depthlab.probes.stats.layer_stats` of ``point``, or None where the NumPy path must
    decide (module docstring). ``w_copy``: an array of the feeding weights' shape and dtype,
    C-ordered, that receives a copy of them in the same pass (left unspecified when None is
    returned)."""
    kernels = accel.kernels()
    act = point.activation
    s, a, fn = act.s, act.a, act.fn
    dtype = s.dtype
    if kernels is None or dtype not in accel.KERNEL_DTYPES or s.size == 0 \
            or s.size > accel.MAX_ENTRIES or a.shape != s.shape or a.dtype != dtype:
        return None
    empty1, empty2 = _empty(dtype)
    dense = point.dense
    g = _flat(act.grad_s, dtype, empty1)
    w = _flat(None if dense is None else dense.W.value, dtype, empty1)
    dw = _flat(None if dense is None else dense.W.grad, dtype, empty1)
    if g is None or w is None or dw is None:
        return None
    how, thr, family, monotone = _info(fn, kernels)
    s2 = np.ascontiguousarray(s.reshape(s.shape[0], -1))
    a2 = np.ascontiguousarray(a.reshape(s2.shape))
    d2 = empty2
    if how == kernels.DERIVATIVE_GIVEN:
        d2 = fn.derivative(s, a)
        if d2.dtype != dtype or d2.size != s.size:
            return None
        d2 = np.ascontiguousarray(d2.reshape(s2.shape))
    ranks, t = _ranks_fractions(s.size, percentiles)
    wc = empty1
    if w_copy is not None:
        if w_copy.dtype != dtype or w_copy.size != w.size or not w_copy.flags.c_contiguous:
            return None
        wc = w_copy.reshape(-1)
    out = kernels.layer(s2, a2, d2, how, thr, family, g, w, dw, ranks, t, monotone,
                        wc).tolist()
    status = out[-1]
    if status == kernels.NOT_FINITE:
        return None
    p = t.size
    pre_p, act_p = out[kernels.TERMS:kernels.TERMS + p], out[kernels.TERMS + p:-1]
    if status == kernels.NOT_SELECTED:  # a range the buckets cannot divide: NumPy's selection
        pos, _ = plan(s.size, percentiles)
        v = select_ranks(s2.reshape(-1), ranks)
        pre_p = percentile_values(v, pos)
        if monotone:
            act_p = percentile_values(fn.forward(v), pos)
    if p and not monotone:
        act_p = quantile_values(a2, percentiles)
    return [out[0], out[1], *pre_p, out[2], out[3], *act_p, *out[4:kernels.TERMS]]

