"""The per-layer statistics of :func:`depthlab.probes.stats.layer_stats` from one call of the
compiled kernel :func:`depthlab.probes.kernels.layer` (used when :mod:`depthlab.probes.accel`
has the kernels; the NumPy path in ``stats`` defines every quantity).

From the kernel's sums of each array (``n`` entries, shift ``c``, ``S1 = sum (x - c)``,
``S2 = sum (x - c)^2``, ``A = sum |x|``, ``Z = #{x <= 0}``):
``mean = c + S1/n``, ``std = sqrt(S2/n - (S1/n)^2)``, ``mean |x| = A/n``; when ``(S1/n)^2`` exceeds
``_CANCELLATION_RATIO`` times the variance the array is summed again shifted by its mean. From
its counts: ``saturated_frac = #{|f'(s)| < SATURATION_RATIO sup|f'|} / n`` (bounded
activations), ``dead_frac = dead units / units``, ``inactive_frac = Z(s) / n`` (ReLU family).
"""

from __future__ import annotations

import math

import numpy as np

from ..activations import ActivationFn, ReLU, Sigmoid, Tanh
from ..network import ProbePoint
from . import accel
from .stats import _CANCELLATION_RATIO, SATURATION_RATIO, activation_family

_NAN = math.nan


def _derivative_code(fn: ActivationFn) -> int:
    """How the kernel obtains ``f'(s)`` (``kernels.DERIVATIVE_*``): computed in the pass for the
    library's own sigmoid, tanh and ReLU (exact classes, so an override is respected), else
    from ``fn.derivative``."""
    k = accel.kernels()
    return {Sigmoid: k.DERIVATIVE_SIGMOID, Tanh: k.DERIVATIVE_TANH,
            ReLU: k.DERIVATIVE_STEP}.get(type(fn), k.DERIVATIVE_GIVEN)


_INFO: dict[int, tuple[ActivationFn, str, float, int]] = {}


def _info(fn: ActivationFn) -> tuple[str, float, int]:
    """``(family, saturation threshold, derivative code)`` of ``fn``, kept per activation object
    (a recorder asks for the same ones at every record)."""
    got = _INFO.get(id(fn))
    if got is None or got[0] is not fn:
        if len(_INFO) > 1024:
            _INFO.clear()
        got = _INFO[id(fn)] = (fn, activation_family(fn),
                               SATURATION_RATIO * float(fn.max_derivative), _derivative_code(fn))
    return got[1], got[2], got[3]


def _flat(x: np.ndarray | None, dtype: np.dtype) -> np.ndarray | None:
    """``x`` as a flat C-contiguous array of ``dtype``'s kernels; an empty one for None; None
    when ``x`` has another dtype."""
    if x is None:
        return np.empty(0, dtype=dtype)
    if x.dtype != dtype:
        return None
    return np.ascontiguousarray(x).reshape(-1)


def _mean_std_abs(kernels, res: np.ndarray, k: int, x: np.ndarray
                  ) -> tuple[float, float, float] | None:
    """``(mean, std, mean |x|)`` from slot ``k`` of the kernel's result (module docstring);
    None when a sum is not finite."""
    n = x.size
    c, s1, s2, ab = res[k], res[k + 1], res[k + 2], res[k + 3]
    e = s1 / n
    var = s2 / n - e * e
    if not (math.isfinite(var) and math.isfinite(ab)):
        return None
    if e * e > _CANCELLATION_RATIO * var:  # the first entry was far from the mean
        c += e
        s1, s2, _, _ = kernels.moments(x, c)
        e = s1 / n
        var = s2 / n - e * e
    return c + e, math.sqrt(max(var, 0.0)), ab / n


def kernel_terms(point: ProbePoint) -> tuple[list[float], tuple[float, float]] | None:
    """``(terms, (min s, max s))``: the 12 non-percentile quantities of ``stats._numpy_terms``
    (same order) by one kernel call, and the range of ``s`` for the percentile selection. None
    (the caller takes the NumPy path) when an array holds a non-finite entry, dtypes differ, or
    ``a`` and ``s`` differ in shape."""
    kernels = accel.kernels()
    act = point.activation
    s, a, fn = act.s, act.a, act.fn
    dtype = s.dtype
    if kernels is None or dtype not in accel.KERNEL_DTYPES or s.size == 0 \
            or a.shape != s.shape or a.dtype != dtype:
        return None
    dense = point.dense
    g = _flat(act.grad_s, dtype)
    w = _flat(None if dense is None else dense.W.value, dtype)
    dw = _flat(None if dense is None else dense.W.grad, dtype)
    if g is None or w is None or dw is None:
        return None
    family, thr, how = _info(fn)
    s2 = np.ascontiguousarray(s.reshape(s.shape[0], -1))
    a2 = np.ascontiguousarray(a.reshape(s2.shape))
    if how == kernels.DERIVATIVE_GIVEN:
        d2 = fn.derivative(s, a)
        if d2.dtype != dtype or d2.size != s.size:
            return None
        d2 = np.ascontiguousarray(d2.reshape(s2.shape))
    else:
        d2 = np.empty((0, 0), dtype=dtype)
    res = kernels.layer(s2, a2, d2, how, thr, g, w, dw)
    slots = kernels.SLOTS
    m: list[tuple[float, float, float] | None] = []
    for k, x in enumerate((s2.reshape(-1), a2.reshape(-1), g, w, dw)):
        r = _mean_std_abs(kernels, res, k * slots, x) if x.size else None
        if r is None and x.size:
            return None
        m.append(r)
    ms, ma, mg, mw, mdw = m
    n = s.size
    terms = [ms[0], ms[1], ma[0], ma[1],
             res[5 * slots] / n if family == "bounded" else _NAN,
             res[5 * slots + 1] / s2.shape[1],
             res[4] / n if family == "relu" else _NAN,
             _NAN if mg is None else mg[1], _NAN if mg is None else mg[2],
             _NAN if mw is None else mw[1], _NAN if mdw is None else mdw[1],
             _NAN if mdw is None else mdw[2]]
    return terms, (float(res[5 * slots + 2]), float(res[5 * slots + 3]))
