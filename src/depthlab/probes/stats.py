"""Per-layer summary statistics and the measurement pass they are computed on.

For hidden layer ``l`` (``ProbePoint.index``) with pre-activation ``s = x W + b``, activation
``a = f(s)``, back-propagated gradient ``g = dL/ds`` and the feeding weights ``W``:

========================  =====================================================================
quantity                  definition (all units and examples of the batch pooled)
========================  =====================================================================
``pre_mean/pre_std``      mean and (population) standard deviation of ``s``
``pre_pK``                K-th percentile of ``s`` (NumPy's default ``linear`` interpolation)
``act_*``                 the same for ``a``
``saturated_frac``        bounded activations (sigmoid, tanh, softsign, ...): fraction of
                          (example, unit) entries with ``|f'(s)| < SATURATION_RATIO * sup|f'|``;
                          NaN for unbounded ones (an inactive ReLU is not saturated)
``dead_frac``             fraction of units with ``f'(s) == 0`` on *every* example of the batch
                          (dead ReLUs; ~0 for sigmoid/tanh unless float32 rounds ``f'`` to 0)
``inactive_frac``         ReLU-family activations (:data:`RELU_FAMILY`): fraction of entries on
                          the flat or negative side, ``s <= 0``; NaN for other activations
``grad_pre_std``          std of ``dL/ds``
``grad_pre_absmean``      mean of ``|dL/ds|``
``weight_std``            std of the entries of ``W``
``weight_grad_std``       std of ``dL/dW``
``weight_grad_absmean``   mean of ``|dL/dW|``
========================  =====================================================================

The loss averages over the batch, so gradient magnitudes scale like ``1 / batch size``; compare
them within one recorder (one fixed probe batch), not across batch sizes.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np

from ..activations import ActivationFn
from ..backend import Array, ones_vector
from ..losses import Loss
from ..network import Network, ProbePoint
from . import accel
from .quantiles import lerp, percentile_positions, percentile_values, plan, select_ranks
from .quantiles import percentiles as quantile_values

PERCENTILES: tuple[float, ...] = (2, 15, 50, 85, 98)
"""Default percentiles (the Ioffe & Szegedy figure uses 15/50/85)."""

SATURATION_RATIO = 0.05
"""An entry is saturated when ``|f'(s)| < SATURATION_RATIO * max_derivative``."""

BN_PROBE_ROWS = 3
"""Fewest rows a probe batch of a batch-norm network is taken from: over 2 rows batch norm
maps each unit to -1 and +1 (up to epsilon) whatever its inputs, so no gradient reaches the
layers below it (a healthy 2-layer BN net: layer 1's grad_pre_std 125x below layer 2's)."""


def probe_held_out(n_val: int | None, n_train: int, least: int = BN_PROBE_ROWS) -> bool:
    """Whether a probe batch is taken from the ``n_val`` held-out rows (rather than the
    ``n_train`` training rows): when there are at least ``least`` of them, or when the
    training rows are no more numerous a source (fewer than ``least`` too); never from an
    empty held-out set (a 2-row data set split into 2 training rows and none held out: the
    probe batch was empty, and the torch doctor failed at its first probe)."""
    return n_val is not None and n_val > 0 and (n_val >= least or n_train < least)


RELU_FAMILY = frozenset({"relu", "leaky_relu", "elu", "selu", "gelu", "swish", "mish",
                         "relu6", "hardswish"})
"""Activations whose units are *inactive* (not saturated) for ``s <= 0`` (as
``depthlab.torch``'s probes: ReLU6 and Hardswish too)."""


def activation_family(fn: ActivationFn) -> str:
    """``"bounded"`` (finite range: saturation applies), ``"relu"`` (:data:`RELU_FAMILY`:
    inactivity applies), ``"bounded_relu"`` (both, ReLU6: inactive for ``s <= 0``, saturated
    only on its upper side, ``s > 0``, as ``depthlab.torch``'s probes count it) or ``"other"``
    (e.g. identity: neither). Cheap: the range is cached."""
    from .histograms import activation_range

    relu = fn.name in RELU_FAMILY
    if activation_range(fn) is not None:
        return "bounded_relu" if relu else "bounded"
    return "relu" if relu else "other"


def percentile_names(prefix: str, percentiles: Sequence[float]) -> list[str]:
    """Quantity names ``{prefix}_p{K}`` (``2.5`` -> ``p2.5``, ``15.0`` -> ``p15``)."""
    return [f"{prefix}_p{float(q):g}" for q in percentiles]


def check_percentiles(percentiles: Sequence[float]) -> tuple[float, ...]:
    """Validate percentiles (distinct numbers in [0, 100], distinct also as the quantity names
    ``pK`` they get); returns them as a tuple of floats."""
    try:
        if not isinstance(percentiles, str | bytes):
            percentiles = tuple(percentiles)  # a generator read once, not consumed by a check
        if isinstance(percentiles, str | bytes) or any(isinstance(q, str | bytes | bool)
                                                       for q in percentiles):
            raise TypeError  # "50" is not [5, 0]; True is not 1
        qs = tuple(float(q) for q in percentiles)
    except (TypeError, ValueError):
        raise TypeError(
            f"percentiles must be a sequence of numbers in [0, 100], got {percentiles!r}"
        ) from None
    for q in qs:
        if not 0.0 <= q <= 100.0:
            raise ValueError(f"percentile {q!r} out of range; expected numbers in [0, 100]")
    names = percentile_names("p", qs)
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"percentiles must be distinct, got {percentiles!r} (the same "
                         f"quantity twice: {', '.join(n[2:] for n in twice)})")
    return qs


_positions = percentile_positions
_lerp = lerp


def percentiles_of(x: Array, percentiles: Sequence[float]) -> list[float]:
    """Percentiles of all entries of ``x`` with NumPy's default (``linear``) rule:
    position ``h = (n - 1) q / 100``, value ``v[floor h] + (h - floor h)(v[ceil h] - v[floor h])``
    on the sorted values ``v``. Only the needed order statistics ``v[floor h], v[ceil h]`` are
    found (bucket selection, :func:`depthlab.probes.quantiles.order_statistics`: a few linear
    passes, no sort of the whole array)."""
    return quantile_values(x, percentiles)


def _both_percentiles(s: Array, fn: ActivationFn, percentiles: Sequence[float],
                      bounds: tuple[float, float] | None = None
                      ) -> tuple[list[float], list[float]]:
    """Percentiles of ``s`` and of ``a = f(s)``. For a nondecreasing ``f`` the order statistics
    of ``a`` are ``f`` of those of ``s``, so one selection serves both. ``bounds``:
    ``(s.min(), s.max())`` when known."""
    f = s.reshape(-1)
    pos, ranks = plan(f.size, tuple(percentiles))
    v = select_ranks(f, ranks, bounds)
    return percentile_values(v, pos), percentile_values(fn.forward(v), pos)


def is_nondecreasing(fn: ActivationFn) -> bool:
    """True for activations known to be nondecreasing elementwise functions."""
    name, params = fn.name, fn.params
    if name in _MONOTONE:
        return True
    key = _MONOTONE_IF_NONNEGATIVE.get(name)
    return key is not None and params.get(key, -1.0) >= 0.0


_MONOTONE = frozenset({"sigmoid", "tanh", "identity", "step", "relu", "selu", "softsign"})
_MONOTONE_IF_NONNEGATIVE = {"leaky_relu": "negative_slope", "elu": "alpha", "penalized_tanh": "a"}

# Above this mean^2 / variance the one-pass formula E[x^2] - E[x]^2 loses precision and the
# two-pass np.std is used instead.
_CANCELLATION_RATIO = 10.0
# Squares below this (per dtype itemsize) may be denormal: use the float64 two-pass path.
_TINY_SQUARE = {4: 1e-30, 8: 1e-290}


def mean_std(x: Array) -> tuple[float, float]:
    """Mean and population std of all entries. Fast path: sums by BLAS dot products,
    ``var = E[x^2] - E[x]^2``. When the mean is large relative to the spread (cancellation) the
    entries are shifted by that mean first, ``d = x - m``, and ``var = E[d^2] - E[d]^2`` (the
    shifted mean is ~0, so nothing cancels). Squares near underflow (vanishing gradients) or
    values that are not finite take the two-pass float64 ``mean``/``std``."""
    f = x.reshape(-1)
    n = f.size
    if f.dtype.kind == "f" and f.dtype.itemsize in (4, 8):
        ones = ones_vector(n, f.dtype)
        s1 = float(np.dot(f, ones))
        s2 = float(np.dot(f, f))
        m = s1 / n
        var = s2 / n - m * m
        tiny = _TINY_SQUARE[f.dtype.itemsize]
        if math.isfinite(var) and var > tiny:
            if m * m <= _CANCELLATION_RATIO * var:
                return m, math.sqrt(var)
            shift = f.dtype.type(m)
            d = np.subtract(f, shift, out=_scratch(n, f.dtype))
            e = float(np.dot(d, ones)) / n
            var = float(np.dot(d, d)) / n - e * e
            if math.isfinite(var) and var > tiny and e * e <= _CANCELLATION_RATIO * var:
                return float(shift) + e, math.sqrt(var)
    mean, std = float(f.mean(dtype=np.float64)), float(f.std(dtype=np.float64))
    if not (math.isfinite(mean) and _TINY_STD <= std < math.inf) and f.dtype.kind == "f":
        return _scaled_mean_std(f, mean, std)
    return mean, std


_TINY_STD = 1e-145
"""Below this std the float64 squares of the two-pass ``std`` may have underflowed (entries of
1e-300 read std 0.0): taken again by :func:`_scaled_mean_std` (a constant array, whose std is 0,
costs one more pass on this slow path)."""


def _power_scale(f: Array) -> int | None:
    """The exponent ``e`` with ``max |f| < 2^e`` of an array with a finite nonzero entry
    and no NaN or infinite one; None otherwise (the sums' inf/NaN are the array's own)."""
    if f.size == 0:
        return None
    with np.errstate(all="ignore"):
        top = float(np.max(np.abs(f)))
    if not math.isfinite(top) or top == 0.0:
        return None
    return math.frexp(top)[1]


def _scaled_mean_std(f: Array, mean: float, std: float) -> tuple[float, float]:
    """Mean and std of a float array whose float64 sums overflowed (squares of entries above
    ~1e154, a sum of entries near 1.8e308) or underflowed (squares of entries below ~1e-154)
    although every entry is finite: the two-pass
    float64 ``mean``/``std`` of ``f / 2^e`` (an exact scaling, ``max |f| < 2^e``), scaled
    back. ``(mean, std)`` as given where an entry is NaN or infinite."""
    e = _power_scale(f)
    if e is None:
        return mean, std
    g = np.ldexp(f.astype(np.float64), -e)
    return math.ldexp(float(g.mean()), e), math.ldexp(float(g.std()), e)


_SCRATCH = threading.local()


def _scratch(n: int, dtype: np.dtype) -> Array:
    """A reusable work vector of ``n`` entries (one per thread and dtype, grown on demand: no
    fresh allocation, and no page faults on large layers, per statistic)."""
    bufs = _SCRATCH.__dict__.setdefault("bufs", {})
    buf = bufs.get(dtype)
    if buf is None or buf.size < n:
        buf = bufs[dtype] = np.empty(max(n, 4096), dtype=dtype)
    return buf[:n]


def abs_mean(x: Array) -> float:
    """Mean of ``|x|`` over all entries (pairwise summation). Not SciPy's BLAS ``asum``: SciPy
    ships a second OpenBLAS whose spinning threads would slow down NumPy's next products."""
    f = x.reshape(-1)
    if f.dtype.kind != "f":
        return float(np.abs(f).sum()) / f.size
    out = float(np.abs(f, out=_scratch(f.size, f.dtype)).sum()) / f.size
    if not math.isfinite(out):  # a sum past the dtype's range (float32 entries of 1e35)
        e = _power_scale(f)
        if e is not None:
            out = math.ldexp(float(np.abs(np.ldexp(f.astype(np.float64), -e)).mean()), e)
    return out


def layer_stats(point: ProbePoint, percentiles: Sequence[float] = PERCENTILES) -> list[float]:
    """The per-layer quantities of :func:`layer_quantities` (same order) for one probe point,
    read from the caches of the last forward/backward pass. With the compiled kernels
    (:mod:`depthlab.probes.accel`) every array is read once for all of its moments and counts;
    a layer with a non-finite entry takes the NumPy path."""
    act = point.activation
    s, a = act.s, act.a
    if s is None or a is None:
        raise RuntimeError(f"{act.name}: no cached forward pass to measure")
    fn = act.fn
    if accel.for_array(s) is not None:
        from .fused import kernel_layer_stats

        out = kernel_layer_stats(point, tuple(percentiles))
        if out is not None:
            return out.tolist()
    terms = _numpy_terms(point, fn)
    if not percentiles:
        pre_p, act_p = [], []  # no sort at all
    elif is_nondecreasing(fn) and a.shape == s.shape:
        pre_p, act_p = _both_percentiles(s, fn, percentiles)
    else:
        pre_p, act_p = percentiles_of(s, percentiles), percentiles_of(a, percentiles)
    return [*terms[:2], *pre_p, *terms[2:4], *act_p, *terms[4:]]


def _numpy_terms(point: ProbePoint, fn: ActivationFn) -> list[float]:
    """``pre_mean, pre_std, act_mean, act_std, saturated_frac, dead_frac, inactive_frac,
    grad_pre_std, grad_pre_absmean, weight_std, weight_grad_std, weight_grad_absmean`` by NumPy
    (BLAS sums; see :func:`mean_std`)."""
    act = point.activation
    s, a, g = act.s, act.a, act.grad_s
    out = [*mean_std(s), *mean_std(a)]
    d = fn.derivative(s, a)
    np.abs(d, out=d)
    thr = SATURATION_RATIO * float(fn.max_derivative)
    family = activation_family(fn)
    if family == "bounded":
        out.append(np.count_nonzero(d < thr) / d.size)
    elif family == "bounded_relu":  # an inactive unit (s <= 0) is not saturated
        out.append(np.count_nonzero((d < thr) & (s > 0)) / d.size)
    else:
        out.append(math.nan)
    d2 = d.reshape(d.shape[0], -1)
    col = ones_vector(d2.shape[0], d2.dtype) @ d2  # per-unit sum of |f'| over the batch
    out.append(np.count_nonzero(col == 0) / col.size)
    out.append(np.count_nonzero(s <= 0) / s.size if family in ("relu", "bounded_relu")
               else math.nan)
    if g is None:
        out += [float("nan")] * 2
    else:
        out += [mean_std(g)[1], abs_mean(g)]
    dense = point.dense
    if dense is None:
        out += [float("nan")] * 3
    else:
        out += [mean_std(dense.W.value)[1], mean_std(dense.W.grad)[1], abs_mean(dense.W.grad)]
    return out


def layer_quantities(percentiles: Sequence[float] = PERCENTILES) -> list[str]:
    """Names of the per-layer quantities in the order :func:`layer_stats` returns them."""
    return ["pre_mean", "pre_std", *percentile_names("pre", percentiles),
            "act_mean", "act_std", *percentile_names("act", percentiles),
            "saturated_frac", "dead_frac", "inactive_frac", "grad_pre_std", "grad_pre_absmean",
            "weight_std", "weight_grad_std", "weight_grad_absmean"]


@contextmanager
def measurement_mode(net: Network) -> Iterator[None]:
    """Within the block a training-mode pass measures without side effects on training:
    every BatchNorm has ``update_stats = False`` (batch statistics are used, running statistics
    untouched) and every Dropout has ``p = 0`` (no units dropped, its random generator not
    advanced). Both are restored on exit."""
    bns = net.batchnorms()
    drops = net.dropouts()
    saved_bn = [bn.update_stats for bn in bns]
    saved_p = [d.p for d in drops]
    try:
        for bn in bns:
            bn.update_stats = False
        for d in drops:
            d.p = 0.0
        yield
    finally:
        for bn, flag in zip(bns, saved_bn):
            bn.update_stats = flag
        for d, p in zip(drops, saved_p):
            d.p = p


def measurement_pass(net: Network, x: Array, y: Array, loss: Loss) -> tuple[float, float | None]:
    """One forward (training mode, see :func:`measurement_mode`), loss and backward on ``(x, y)``.

    Afterwards every Activation holds ``s``, ``a``, ``grad_s`` and every Parameter ``grad`` for
    this batch (``p.grad`` is overwritten; parameter values are not changed).
    Returns ``(loss, accuracy)`` (accuracy None for regression targets).
    """
    with measurement_mode(net), np.errstate(all="ignore"):
        out = net.forward(x, training=True)
        value = float(loss.forward(out, y))
        # every Loss has ``accuracy`` (None for regression targets; mse and huber on one-hot
        # rows give the arg-max accuracy, as in the trainer's history)
        acc = loss.accuracy(out, y) if hasattr(loss, "accuracy") else None
        net.backward(loss.backward(), input_grad=False, copy=False)
    return value, (None if acc is None else float(acc))


def network_stats(net: Network, percentiles: Sequence[float] = PERCENTILES
                  ) -> list[tuple[int, list[float]]]:
    """``[(layer index, layer_stats), ...]`` for every probe point of ``net``."""
    with np.errstate(all="ignore"):
        return [(p.index, layer_stats(p, percentiles)) for p in net.probe_points()]
