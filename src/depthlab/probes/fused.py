"""The per-layer statistics of :func:`depthlab.probes.stats.layer_stats` by one call of the
compiled kernel :func:`depthlab.probes.kernels.layer` (used when :mod:`depthlab.probes.accel`
has the kernels; the NumPy path in ``stats`` defines every quantity, and takes over for a layer
with a non-finite entry, mixed dtypes or ``a`` and ``s`` of different shapes).

The kernel returns the quantities themselves, in the table's order (formulas in
:mod:`depthlab.probes.kernels`); this module prepares its arguments once per activation and
percentile list (derivative code, saturation threshold, family, ranks and fractions of NumPy's
``linear`` rule) and, for an activation not known to be nondecreasing, selects the percentiles
of ``a`` separately. Likewise :func:`kernel_histogram`: ``histograms.histogram`` (robust edges,
activation clip, counts) by one call of :func:`depthlab.probes.kernels.histogram`.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from ..activations import ActivationFn, ReLU, Sigmoid, Tanh
from ..network import ProbePoint
from . import accel
from .histograms import (
    HISTOGRAM_KINDS,
    ROBUST_PERCENTILE,
    activation_range,
    bin_counts,
    robust_sample,
    sample_stride,
)
from .quantiles import percentile_values, plan, select_ranks
from .quantiles import percentiles as quantile_values
from .stats import _TINY_STD, SATURATION_RATIO, activation_family, is_nondecreasing

_FAMILY = {"other": 0, "bounded": 1, "relu": 2, "bounded_relu": 3}  # kernels.FAMILY_*


def _derivative_code(fn: ActivationFn, kernels) -> int:
    """How the kernel obtains ``f'(s)`` (``kernels.DERIVATIVE_*``): computed in the pass for the
    library's own sigmoid, tanh and ReLU (exact classes, so an override is respected), else
    from ``fn.derivative``."""
    return {Sigmoid: kernels.DERIVATIVE_SIGMOID, Tanh: kernels.DERIVATIVE_TANH,
            ReLU: kernels.DERIVATIVE_STEP}.get(type(fn), kernels.DERIVATIVE_GIVEN)


_PLANS: dict[tuple, tuple] = {}


def _plan(fn: ActivationFn, n: int, percentiles: tuple[float, ...], kernels) -> tuple:
    """``(derivative code, saturation threshold, family code, nondecreasing, ranks,
    fractions)`` of ``fn`` on ``n`` entries (:func:`_ranks_fractions`): what the kernel needs
    besides the arrays, kept per activation object, size and percentile list (a recorder asks
    for the same ones at every record: one dictionary lookup)."""
    key = (id(fn), n, percentiles)
    got = _PLANS.get(key)
    if got is None or got[0] is not fn:
        if len(_PLANS) > 1024:
            _PLANS.clear()
        ranks, t = _ranks_fractions(n, percentiles)
        got = _PLANS[key] = (fn, _derivative_code(fn, kernels),
                             SATURATION_RATIO * float(fn.max_derivative),
                             _FAMILY[activation_family(fn)], is_nondecreasing(fn), ranks, t)
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
    return x.ravel()  # a view of a C-contiguous array, else a C-ordered copy


def kernel_layer_stats(point: ProbePoint, percentiles: tuple[float, ...],
                       w_copy: np.ndarray | None = None) -> np.ndarray | None:
    """:func:`depthlab.probes.stats.layer_stats` of ``point`` as a float64 array (same order), or
    None where the NumPy path must decide (module docstring). ``w_copy``: an array of the
    feeding weights' shape and dtype, C-ordered, that receives a copy of them in the same pass
    (left unspecified when None is returned)."""
    kernels = accel.kernels()
    act = point.activation
    s, a = act.s, act.a
    if kernels is None or s is None or a is None:
        return None
    dtype = s.dtype
    if dtype not in accel.KERNEL_DTYPES or not 0 < s.size <= accel.MAX_ENTRIES \
            or a.shape != s.shape or a.dtype != dtype:
        return None
    fn = act.fn
    how, thr, family, monotone, ranks, t = _plan(fn, s.size, percentiles, kernels)
    empty1, empty2 = _empty(dtype)
    dense = point.dense
    g = _flat(act.grad_s, dtype, empty1)
    w = dw = empty1
    if dense is not None:
        w = _flat(dense.W.value, dtype, empty1)
        dw = _flat(dense.W.grad, dtype, empty1)
    if g is None or w is None or dw is None:
        return None
    if s.ndim == 2 and s.flags.c_contiguous and a.flags.c_contiguous:
        s2, a2 = s, a  # (batch, units) already: no reshape per record
    else:
        s2 = np.ascontiguousarray(s.reshape(s.shape[0], -1))
        a2 = np.ascontiguousarray(a.reshape(s2.shape))
    d2 = empty2
    if how == kernels.DERIVATIVE_GIVEN:
        with np.errstate(all="ignore"):  # (s * s of GELU's f' overflows: the kernel checks)
            d2 = fn.derivative(s, a)
        if d2.dtype != dtype or d2.size != s.size:
            return None
        d2 = np.ascontiguousarray(d2.reshape(s2.shape))
    wc = empty1
    if w_copy is not None:
        if w_copy.dtype != dtype or w_copy.size != w.size or not w_copy.flags.c_contiguous:
            return None
        wc = w_copy.reshape(-1)
    out = kernels.layer(s2, a2, d2, how, thr, family, g, w, dw, ranks, t, monotone, wc)
    status = out[-1]
    values = out[:-1]
    if dtype == np.float64 and status != kernels.NOT_FINITE \
            and _squares_underflowed(values, t.size, w):
        return None
    if status == kernels.OK:
        return values if monotone or not percentiles else _act_percentiles(values, a2, percentiles)
    if status == kernels.NOT_FINITE:
        return None
    p = t.size
    if status == kernels.NOT_SELECTED:  # a range the buckets cannot divide: NumPy's selection
        pos, _ = plan(s.size, percentiles)
        v = select_ranks(s2.reshape(-1), ranks)
        values[2:2 + p] = percentile_values(v, pos)
        if monotone:
            values[4 + p:4 + 2 * p] = percentile_values(fn.forward(v), pos)
    if p and not monotone:
        _act_percentiles(values, a2, percentiles)
    return values


def _squares_underflowed(values: np.ndarray, p: int, w: np.ndarray) -> bool:
    """True where a float64 std of the kernel may have lost its squares to underflow (entries
    below ~1e-154: a layer of 1e-300 read std 0.0): a std in ``(0, _TINY_STD)``, or a std of 0
    beside a nonzero mean or mean ``|x|`` (for ``W``: a nonzero entry). The NumPy path then
    decides (:func:`depthlab.probes.stats.mean_std`'s scaled rule). ``p``: percentiles per
    part."""
    act = 2 + p
    rest = act + 2 + p
    for std, size in ((values[1], values[0]), (values[act + 1], values[act]),
                      (values[rest + 3], values[rest + 4]), (values[rest + 5], None),
                      (values[rest + 6], values[rest + 7])):
        if 0.0 < std < _TINY_STD or std == 0.0 and (
                size != 0.0 if size is not None else bool(w.any())):
            return True
    return False


def _act_percentiles(values: np.ndarray, a2: np.ndarray, percentiles: tuple[float, ...]
                     ) -> np.ndarray:
    """``values`` with the percentiles of ``a`` selected from ``a`` itself (an activation not
    known to be nondecreasing: the kernel leaves them NaN)."""
    p = len(percentiles)
    values[4 + p:4 + 2 * p] = quantile_values(a2, percentiles)
    return values


def _dead_at(p: int) -> int:
    """Position of ``dead_frac`` in :func:`kernel_layer_stats`'s values (``p`` percentiles
    per part): after the ``4 + 2 p`` moments and percentiles of ``s`` and ``a`` and
    ``saturated_frac``."""
    return 5 + 2 * p


def _dead_by_grad(fn: ActivationFn, family: int, kernels) -> bool:
    """Whether a layer of ``fn``, whose ``f'(s)`` the kernel would read from a computed array
    (:data:`kernels.DERIVATIVE_GIVEN`), may take its dead units from ``dL/ds`` instead: ``fn``
    keeps :class:`ActivationFn`'s ``backward``, ``dL/ds = dL/da * f'(s)``, so a unit with a
    nonzero, finite ``dL/ds`` on some example has ``f'(s) != 0`` there and is not dead; and
    ``fn`` is not bounded, so that no saturation count needs ``|f'(s)|`` itself. Where every
    unit has such an entry the dead fraction is 0, as ``f'(s)`` would give it, without
    computing ``f'(s)`` (GELU's ``erf``/``exp``: 9 GELU layers of 256, batch 128, recorded
    every step, 60% -> 20% of the training step); a unit whose ``dL/ds`` is 0 on every example
    is decided by ``f'(s)``."""
    return (family not in (kernels.FAMILY_BOUNDED, kernels.FAMILY_BOUNDED_RELU)
            and getattr(type(fn), "backward", None) is ActivationFn.backward)


class LayerStats:
    """:func:`kernel_layer_stats` of one probe point, for a caller that measures the point again
    and again (the recorder, at every record). What does not change from record to record (the
    activation's plan for the layer's size, the flat views of ``W``, ``dL/dW`` and the snapshot
    buffer, the empty stand-ins) is kept while those arrays stay the same objects and ``s``,
    ``a``, ``dL/ds`` keep their shape and dtype; a record then costs a few identity and shape
    checks and the kernel call (a float64 layer's squares checked for underflow as there; an
    activation whose ``f'(s)`` is computed by ``fn.derivative`` gets its dead units from
    ``dL/ds``, :func:`_dead_by_grad`, and its ``a`` percentiles selected from ``a`` when not
    nondecreasing). Anything else goes through :func:`kernel_layer_stats` (and a changed layout
    is prepared anew), so the results are the same."""

    __slots__ = ("point", "percentiles", "_key", "_args")

    def __init__(self, point: ProbePoint, percentiles: tuple[float, ...]) -> None:
        self.point = point
        self.percentiles = percentiles
        self._key: tuple | None = None
        self._args: tuple | None = None

    def __call__(self, w_copy: np.ndarray | None = None) -> np.ndarray | None:
        """:func:`kernel_layer_stats` ``(point, percentiles, w_copy)``."""
        point = self.point
        act = point.activation
        s, a, g = act.s, act.a, act.grad_s
        key = self._key
        if key is None or s is None or a is None or g is None:
            return self._prepare(w_copy)
        kernels, w, dw, wc, fn, shape, dtype, strides, d2 = key
        dense = point.dense
        # the kept arguments hold while the kernels, weight arrays, snapshot buffer and
        # activation are the same objects and s, a, dL/ds the same layout (shape, dtype and
        # strides as when prepared, all C-ordered then)
        if (kernels is not accel._state["kernels"] or wc is not w_copy or act.fn is not fn
                or dense is not None and (dense.W.value is not w or dense.W.grad is not dw)
                or s.shape != shape or a.shape != shape or g.shape != shape
                or s.dtype is not dtype or a.dtype is not dtype or g.dtype is not dtype
                or s.strides != strides or a.strides != strides or g.strides != strides):
            return self._prepare(w_copy)
        how, thr, family, monotone, ranks, t, wf, dwf, wcf, by_grad, f64, p = self._args
        # (g.ravel(): a view, g being C-ordered as when prepared)
        out = kernels.layer(s, a, g if by_grad else d2, how, thr, family, g.ravel(), wf, dwf,
                            ranks, t, monotone, wcf)
        values = out[:-1]
        if out[-1] != kernels.OK or f64 and _squares_underflowed(values, p, wf) \
                or by_grad and values[_dead_at(p)] != 0.0:
            # not finite, percentiles to select otherwise, squares that may have underflowed,
            # or units whose dL/ds is 0 throughout: the general path decides
            return kernel_layer_stats(point, self.percentiles, w_copy)
        if not monotone and p:
            _act_percentiles(values, a, self.percentiles)
        return values

    def _prepare(self, w_copy: np.ndarray | None) -> np.ndarray | None:
        """The general path; the arguments kept when the layer is the plain case."""
        self._key = self._args = None
        values = kernel_layer_stats(self.point, self.percentiles, w_copy)
        kernels = accel.kernels()
        act = self.point.activation
        s, a, g = act.s, act.a, act.grad_s
        if values is None or kernels is None or g is None or s.ndim != 2 \
                or a.shape != s.shape or g.shape != s.shape \
                or not (a.dtype == s.dtype == g.dtype) \
                or not (s.flags.c_contiguous and a.flags.c_contiguous and g.flags.c_contiguous) \
                or not (a.strides == s.strides == g.strides):
            return values
        fn = act.fn
        how, thr, family, monotone, ranks, t = _plan(fn, s.size, self.percentiles, kernels)
        by_grad = how == kernels.DERIVATIVE_GIVEN
        if by_grad and not _dead_by_grad(fn, family, kernels):
            return values
        empty1, empty2 = _empty(s.dtype)
        wf = dwf = wc = empty1
        w = dw = None
        dense = self.point.dense
        if dense is not None:
            w, dw = dense.W.value, dense.W.grad
            if not (w.flags.c_contiguous and dw.flags.c_contiguous):
                return values  # flattened copies would go stale: the general path each time
            wf, dwf = w.reshape(-1), dw.reshape(-1)  # views
        if w_copy is not None:
            wc = w_copy.reshape(-1)
        self._args = (how, thr, family, monotone, ranks, t, wf, dwf, wc, by_grad,
                      s.dtype == np.float64, t.size)
        self._key = (kernels, w, dw, w_copy, fn, s.shape, s.dtype, s.strides, empty2)
        return values


_ROBUST = (ROBUST_PERCENTILE, 100.0 - ROBUST_PERCENTILE)


@lru_cache(maxsize=8)
def _normal_range(dtype: np.dtype) -> tuple[float, float]:
    """``(tiny, max)`` of ``dtype``: the scales ``histograms.bin_counts`` gives the kernel."""
    info = np.finfo(dtype)
    return float(info.tiny), float(info.max)


def kernel_histogram(kind: str, x: np.ndarray, n_bins: int, fn: ActivationFn | None = None
                     ) -> tuple[float, float, np.ndarray] | None:
    """:func:`depthlab.probes.histograms.histogram` of ``x`` by one call of the compiled kernel
    :func:`depthlab.probes.kernels.histogram` (robust edges, activation clip and counts), or
    None where the NumPy path must decide: no kernels for ``x``'s dtype, an empty array, a
    non-finite entry, an unknown ``kind``, ``n_bins >= 2^24`` or a range the buckets cannot
    divide."""
    kernels = accel.for_array(x)
    if kernels is None or x.size == 0 or n_bins >= 2**24 or kind not in HISTOGRAM_KINDS:
        return None
    f = np.ascontiguousarray(x).reshape(-1)
    clip = activation_range(fn) if kind == "act" and fn is not None else None
    c0, c1 = clip if clip is not None else (0.0, 0.0)
    tiny, big = _normal_range(f.dtype)
    if kernels.EXTREME_FROM <= f.size < kernels.TAIL_FROM \
            and sample_stride(f.size, tuple(x.shape)) == 1:
        # its own robust sample: the range from the selection's pass (no pass of its own)
        ranks, t = _ranks_fractions(f.size, _ROBUST)
        lo, hi, status, counts = kernels.histogram_whole(f, ranks, t, n_bins, clip is not None,
                                                         c0, c1, tiny, big)
        if status == kernels.NOT_FINITE:
            return None
    else:
        low, high = kernels.finite_range(f)  # one pass; NaN when some entry is not finite
        if not (math.isfinite(low) and math.isfinite(high)):
            return None
        sample = robust_sample(f, x.shape)  # (the robust range of a large array from a sample)
        slo, shi = (low, high) if sample is f else kernels.finite_range(sample)
        ranks, t = _ranks_fractions(sample.size, _ROBUST)
        lo, hi, status, counts = kernels.histogram(f, sample, slo, shi, low, high, ranks, t,
                                                   n_bins, clip is not None, c0, c1, tiny, big)
    if status == kernels.NOT_SELECTED:
        return None
    if status == kernels.NOT_BINNED:
        counts = bin_counts(f, lo, hi, n_bins, _finite=True)
    return lo, hi, counts
