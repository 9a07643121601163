"""Pooling and dropout between the layers of a chain, for :func:`depthlab.torch.predict`.

A unit's value at initialization is carried as a distribution (nodes ``u`` and weights ``w``,
see :mod:`depthlab.torch.predict`) with its second moment ``E[a^2]``, mean ``E[a]`` and batch
variance; the gradient as ``Var(dL/da)``, a constant or a table ``V(u)`` of the unit's own
value. Each module here maps both, treating the entries a window reads as independent draws
(exact for the gradient's mean square where the windows do not overlap; an approximation
where neighbouring positions are correlated). Per channel, ``N_in`` and ``N_out`` are the
input and output positions and ``r = N_out / N_in``.

Average pooling (``AvgPool*``, ``AdaptiveAvgPool*``): ``out_i = sum_j A_ij x_j`` with
``A_ij = 1 / d_i`` on the ``n_i`` entries window ``i`` reads inside the input (``d_i``: the
divisor, ``n_i`` with ``count_include_pad=False``, the padded window size with ``True``, or
``divisor_override``); ``R_i = sum_j A_ij`` (1 without padding in the divisor),
``S_i = sum_j A_ij^2 = R_i^2 / n_i``. Forward ``E[out] = mean_i(R_i) E[a]``,
``E[out^2] = mean_i(R_i^2) E_c[mu_c^2] + mean_i(S_i) Var_batch(a)`` (a Gaussian of those
moments): a window reads one channel ``c``, whose mean ``mu_c`` over the batch is its own (its
bias, the weights on the inputs' means), so ``E_c[mu_c^2] = E[a^2] - Var_batch(a)`` (the
state's batch variance) is kept like a constant and only the batch variance shrinks;
backward ``Var(dL/da) = r mean_i(S_i) Var(dL/d out)`` (``g_in = A^T g_out``).

Max pooling (``MaxPool*``, ``AdaptiveMaxPool*``; padding never wins): a window of ``n``
entries outputs their maximum, with ``F`` the distribution function of ``a`` (``F_-`` just
below ``u``) ``P(max <= u) = F(u)^n``, so ``P(out = u) = sum_n pi_n (F(u)^n - F_-(u)^n)``
over the fraction ``pi_n`` of windows of ``n`` entries, for ``F`` of one unit (channel):
a window reads one unit, so where the state carries each unit's own distribution (its mean
over the batch held: biases, BatchNorm's betas) the maxima are taken per unit and mixed after
(the maximum of the mixture over units was too large: spread betas before a 4x4 max pool had
the next pre_std 1.23x the measurement, now 0.99x). Backward the whole gradient of a
window goes to its largest entry: an entry of value ``u`` in a window of ``n`` is that entry
with probability ``(F^n - F_-^n) / (n p(u))`` (ties shared), an entry lies in ``n r`` windows
on average, so ``V_in(u) = r sum_n pi_n (F(u)^n - F_-(u)^n) / p(u) V_out(u)``: a table of the
unit's value, since the gradient reaches the large entries, where e.g. a ReLU's derivative is
1, and not half of them at random (the product of means: gradient std 0.73x the measured
on ReLU -> MaxPool2d(2) of independent positions, tests/test_torch_pooling.py).

Dropout in training mode (``p > 0``): ``a' = a m / (1 - p)``, ``m ~ Bernoulli(1 - p)``:
``E[a'^2] = E[a^2] / (1 - p)``, the distribution gets an atom ``0`` of weight ``p``;
backward ``V_in(u) = V_out(u / (1 - p)) / (1 - p)``. With ``p = 1`` every entry is 0 and
no gradient passes (it raised ZeroDivisionError). A channel dropout (``Dropout1d/2d/3d``: one
mask per channel of an example) before pools is applied after them (:func:`commuted`: the pool
of a dropped channel is the dropped pool of the channel).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import torch
from torch import nn

from ..theory.gaussian import normal_rule

__all__ = ["FUNCTIONS", "NODES", "Between", "backward", "between", "commuted", "compress",
           "forward", "function_module", "global_module", "mean_of", "pool_dims", "table"]

_MAX = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)
_ADAPTIVE_MAX = (nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)
_AVG = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
_ADAPTIVE_AVG = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)
_DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)
_DIMS = {1: (nn.MaxPool1d, nn.AdaptiveMaxPool1d, nn.AvgPool1d, nn.AdaptiveAvgPool1d),
         2: (nn.MaxPool2d, nn.AdaptiveMaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d),
         3: (nn.MaxPool3d, nn.AdaptiveMaxPool3d, nn.AvgPool3d, nn.AdaptiveAvgPool3d)}
NODES = 512
"""Nodes kept of a distribution of a unit's value (:func:`compress`)."""

Dist = tuple[np.ndarray, np.ndarray]
Table = tuple[np.ndarray, np.ndarray]


@dataclasses.dataclass(frozen=True)
class Between:
    """One module between two segments of a chain: ``kind`` ``"avg"``, ``"max"`` or
    ``"dropout"``; ``ratio`` = ``N_out / N_in``; window sizes ``sizes`` with their fractions
    ``pi`` (max); ``mean_r``, ``mean_r2``, ``mean_s`` = means over windows of ``R_i``,
    ``R_i^2``, ``S_i`` (avg); ``p`` (dropout); ``read``: entries of its input."""

    kind: str
    label: str
    read: int
    ratio: float = 1.0
    sizes: tuple[int, ...] = ()
    pi: tuple[float, ...] = ()
    mean_r: float = 1.0
    mean_r2: float = 1.0
    mean_s: float = 1.0
    p: float = 0.0
    channel: bool = False
    """Dropout1d/2d/3d: one mask per channel of an example, shared by its positions, so it
    commutes with the pools after it (:func:`commuted`)."""
    norm: Any = None
    """kind ``"norm"``: the :class:`depthlab.torch.norms.NormSpec` of a per-example
    normalization (LayerNorm, GroupNorm, RMSNorm) between segments."""
    overlap: bool = False
    """Pools whose windows share entries (``sum_i n_i > N_in``: ``MaxPool2d(3, 2, 1)``,
    ``AvgPool2d(3, 2, 1)``, ``AdaptiveAvgPool2d(3)`` of 8 positions)."""
    out_positions: int = 0
    """Pools: output positions per channel (1: a global pool)."""


def commuted(betweens: list[Between]) -> list[Between]:
    """``betweens`` in an order with the same result, each channel dropout (``Dropout2d``, ...)
    moved after the pools that follow it: a pool's window reads one channel of one example,
    whose mask is one number ``m >= 0``, so ``pool(m a) = m pool(a)`` (average and max, and the
    gradient reaches the same entries); taken entry by entry before an average pool, the mask
    was averaged away (Conv -> ReLU -> Dropout2d(0.5) -> global average pool -> Linear: that
    Linear's pre_std predicted 0.78x the measurement, 2x2 average pool 0.90x; 2x2 max pool: the
    conv's grad_pre_std 1.2x)."""
    out = list(betweens)
    i = 0
    while i < len(out):
        j = i
        if out[i].kind == "dropout" and out[i].channel:
            while j + 1 < len(out) and out[j + 1].kind in ("avg", "max"):
                out[j], out[j + 1] = out[j + 1], out[j]
                j += 1
        i = j + 1
    return out


def _dims(module: nn.Module) -> int:
    return next(d for d, kinds in _DIMS.items() if isinstance(module, kinds))


def _tuple(v: Any, d: int) -> list[int]:
    return [int(x) for x in v] if isinstance(v, (tuple, list)) else [int(v)] * d


def _window_counts(module: nn.Module, size: list[int], out: list[int]) -> np.ndarray:
    """Entries inside the input read by each output position (outer product over dims)."""
    counts = np.ones(1)
    d = len(size)
    if isinstance(module, (*_ADAPTIVE_MAX, *_ADAPTIVE_AVG)):
        per = [np.array([-(-((i + 1) * L) // O) - (i * L) // O for i in range(O)])
               for L, O in zip(size, out)]
    else:
        k = _tuple(module.kernel_size, d)
        s = _tuple(module.stride if module.stride else module.kernel_size, d)
        p = _tuple(module.padding, d)
        dil = _tuple(getattr(module, "dilation", 1), d)
        per = []
        for L, O, K, S, P, D in zip(size, out, k, s, p, dil):
            pos = np.arange(O)[:, None] * S - P + np.arange(K)[None, :] * D
            per.append(((pos >= 0) & (pos < L)).sum(1))
    for c in per:
        counts = np.multiply.outer(counts, c).ravel()
    return counts


def between(module: nn.Module, x: torch.Tensor, out: torch.Tensor, label: str
            ) -> Between | None:
    """The :class:`Between` of a pooling or training-mode dropout call ``out = module(x)``,
    or None for any other module (including dropout that does nothing)."""
    if isinstance(module, _DROPOUT):
        if not module.training or module.p == 0:
            return None
        return Between("dropout", label, x.numel(), p=float(module.p),
                       channel=isinstance(module, _DROPOUT[1:]) and x.dim() >= 3)
    if not isinstance(module, (*_MAX, *_ADAPTIVE_MAX, *_AVG, *_ADAPTIVE_AVG)):
        return None
    d = _dims(module)
    if x.dim() < d + 1 or out.dim() != x.dim():
        return None
    size, osize = [int(v) for v in x.shape[-d:]], [int(v) for v in out.shape[-d:]]
    n_in, n_out = math.prod(size), math.prod(osize)
    if n_in == 0 or n_out == 0:
        return None
    counts = _window_counts(module, size, osize)
    if counts.size != n_out or (counts <= 0).any():
        return None
    ratio = n_out / n_in
    overlap = bool(counts.sum() > n_in)
    if isinstance(module, (*_MAX, *_ADAPTIVE_MAX)):
        sizes, k = np.unique(counts.astype(np.int64), return_counts=True)
        return Between("max", label, x.numel(), ratio, tuple(int(v) for v in sizes),
                       tuple(float(v) for v in k / counts.size), overlap=overlap,
                       out_positions=n_out)
    if isinstance(module, _AVG):  # R_i: the module on ones (its own divisor rule)
        with torch.no_grad():
            ones = torch.ones((1, 1, *size), dtype=torch.float64)
            r = module.forward(ones).reshape(-1).numpy()  # not __call__: no hooks
    else:
        r = np.ones(n_out)
    if r.size != n_out:
        return None
    s = r * r / counts
    return Between("avg", label, x.numel(), ratio, mean_r=float(r.mean()),
                   mean_r2=float((r * r).mean()), mean_s=float(s.mean()), overlap=overlap,
                   out_positions=n_out)


_MAX_ARGS = ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
_AVG_ARGS = ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad",
             "divisor_override")
FUNCTIONS: dict[str, tuple[type[nn.Module], tuple[str, ...]]] = {
    **{f"max_pool{d}d": (_MAX[d - 1], _MAX_ARGS) for d in (1, 2, 3)},
    "avg_pool1d": (nn.AvgPool1d, _AVG_ARGS[:-1]),  # (no divisor_override)
    **{f"avg_pool{d}d": (_AVG[d - 1], _AVG_ARGS) for d in (2, 3)},
    **{f"adaptive_max_pool{d}d": (_ADAPTIVE_MAX[d - 1], ("output_size", "return_indices"))
       for d in (1, 2, 3)},
    **{f"adaptive_avg_pool{d}d": (_ADAPTIVE_AVG[d - 1], ("output_size",)) for d in (1, 2, 3)},
    **{name: (cls, ("p", "training", "inplace"))
       for name, cls in zip(("dropout", "dropout1d", "dropout2d", "dropout3d"), _DROPOUT)},
}
"""The pooling and dropout functions (``torch.nn.functional``'s and ``torch``'s:
``F.max_pool2d``, ``F.max_pool2d(..., return_indices=True)`` (``max_pool2d_with_indices``),
``torch.max_pool2d``, ``F.avg_pool1d`` = ``torch.avg_pool1d``, ``F.adaptive_avg_pool2d``,
``F.dropout(h, p, training)``, ...) -> the module that computes the same (its class and the
functions' argument names after ``input``, in order)."""


def function_module(name: str, args: tuple, kwargs: dict) -> nn.Module | None:
    """The pooling module equivalent to the call ``name(input, *args, **kwargs)`` of a pooling
    function (:data:`FUNCTIONS`; a leading ``_`` and a trailing ``_with_indices`` are dropped
    from ``name``), or None for any other function or arguments no module takes. The module
    gets the call's own arguments, so :func:`between` models the call exactly as it models
    that module (``stride=None``, torch's ``stride=[]``: the kernel size)."""
    base = name.lstrip("_").removesuffix("_with_indices")
    hit = FUNCTIONS.get(base)
    if hit is None:
        return None
    cls, names = hit
    if len(args) > len(names) or any(k not in names for k in kwargs):
        return None
    given = {**dict(zip(names, args)), **kwargs}
    given.pop("return_indices", None)  # (the output: the first tensor of the pair)
    training = bool(given.pop("training", True))
    if cls in (*_MAX, *_AVG) and not given.get("stride"):  # None or torch's [] default
        given["stride"] = None
    try:
        return cls(**given).train(training)
    except (TypeError, ValueError):
        return None


def pool_dims(module: nn.Module) -> int:
    """The number of pooled (trailing) dimensions of a pooling module: 1, 2 or 3."""
    return _dims(module)


def global_module(name: str, ndim: int, args: tuple, kwargs: dict) -> nn.Module | None:
    """``AdaptiveAvgPoolNd(1)`` for ``h.mean(dims)`` / ``torch.mean(h, dims)`` and
    ``AdaptiveMaxPoolNd(1)`` for ``h.amax(dims)`` over the ``N`` = 1-3 trailing dimensions of
    a tensor of ``ndim >= N + 2`` dimensions (batch, channels, positions: global pooling, as
    torchvision's ShuffleNetV2 does with ``x.mean([2, 3])``; ``keepdim`` either way), else
    None (a mean over the channels, over every dimension, with a ``dtype``, ...)."""
    names = ("dim", "keepdim")
    if len(args) > len(names) or any(k not in names for k in kwargs):
        return None
    dim = {**dict(zip(names, args)), **kwargs}.get("dim")
    if dim is None:
        return None
    dims = dim if isinstance(dim, (tuple, list)) else (dim,)
    try:
        got = sorted(int(v) % ndim for v in dims)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    n = len(got)
    if not 1 <= n <= 3 or ndim < n + 2 or got != list(range(ndim - n, ndim)):
        return None
    return (_ADAPTIVE_AVG if name == "mean" else _ADAPTIVE_MAX)[n - 1](1)


def _atoms(dist: Dist) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values (sorted) and their probabilities."""
    v, w = dist
    u, inv = np.unique(np.asarray(v, np.float64), return_inverse=True)
    p = np.bincount(inv.ravel(), weights=np.asarray(w, np.float64).ravel(), minlength=u.size)
    return u, p / p.sum()


def _max_weights(b: Between, p: np.ndarray) -> np.ndarray:
    """``P(max = u_k) = sum_n pi_n (F_k^n - F_{k-1}^n)`` per atom ``u_k`` of probability
    ``p_k`` (``F_k = p_1 + ... + p_k``)."""
    f = np.minimum(np.cumsum(p), 1.0)
    f0 = np.concatenate([[0.0], f[:-1]])
    return np.asarray(sum(pi * (f ** n - f0 ** n) for n, pi in zip(b.sizes, b.pi)), np.float64)


def compress(vals: np.ndarray, w: np.ndarray, nodes: int = NODES) -> Dist:
    """At most ``nodes`` (:data:`NODES`) nodes: equal-weight quantile groups of the sorted
    values, each replaced by its weighted mean (the mean is kept exactly)."""
    if vals.size <= nodes:
        return vals, w
    order = np.argsort(vals, kind="stable")
    v, ww = vals[order], w[order]
    cw = np.cumsum(ww)
    cuts = np.searchsorted(cw, np.linspace(0, cw[-1], nodes + 1)[1:-1], side="right")
    starts = np.unique(np.concatenate([[0], cuts]))
    starts = starts[starts < v.size]
    gw = np.add.reduceat(ww, starts)
    gv = np.add.reduceat(ww * v, starts) / np.where(gw > 0, gw, 1.0)
    return gv, gw


def forward(b: Between, state: tuple) -> tuple:
    """``(E[a^2], E[a], batch variance, distribution[, units])`` after the module (module
    docstring); ``units``, where the state has them, is each unit's own distribution
    ``(share, values, probabilities)`` (its mean over the batch held), which a max pool's
    window reads, and a dropout keeps."""
    sq, mean, bvar, dist = state[:4]
    units = state[4] if len(state) > 4 else None
    var = max(sq - mean * mean, 0.0)
    if b.kind == "dropout":
        keep = 1.0 - b.p
        if keep <= 0.0:  # p = 1: every entry zeroed (a ZeroDivisionError, NumPy warnings)
            return 0.0, 0.0, 0.0, (np.zeros(1), np.ones(1))
        v, w = dist
        out = compress(np.concatenate([[0.0], np.asarray(v) / keep]),
                        np.concatenate([[b.p], np.asarray(w) * keep]))
        kept = None if units is None else [
            (k, np.concatenate([[0.0], np.asarray(v) / keep]),
             np.concatenate([[b.p], np.asarray(w) * keep])) for k, v, w in units]
        return sq / keep, mean, max(sq / keep - (sq - bvar), 0.0), out, kept
    if b.kind == "avg":
        # a window's entries are draws of one unit (channel), whose mean over the batch is its
        # own (bias, W_j E[a]): that part, E_j[mu_j^2] = E[a^2] - batch variance, is averaged
        # like a constant (R_i^2), only the batch variance shrinks by S_i (with the layer's
        # (E[a])^2 as the constant part, the units' spread of mu_j shrank too: channels with
        # biases of std 1 before a global average pool had the next pre_std 0.78x measured)
        const = min(max(sq - bvar, mean * mean), sq)
        m2 = b.mean_r2 * const + b.mean_s * (sq - const)
        m1 = b.mean_r * mean
        z, w = normal_rule(max(m2 - m1 * m1, 0.0))
        return m2, m1, (sq - const) * b.mean_s, (z + m1, w)
    if units:
        # the maximum of a window's entries of ONE unit (the mixture over units: a wider
        # distribution whose maxima were too large where the units' means differ, e.g. a
        # BatchNorm's spread betas: the next pre_std 1.15x (2x2) to 1.31x (global))
        outs = []
        for k, v, w in units:
            uu, pp = _atoms((v, w))
            outs.append((k, uu, _max_weights(b, pp)))
        m1 = sum(k * float(pm @ uu) for k, uu, pm in outs)
        m2 = sum(k * float(pm @ (uu * uu)) for k, uu, pm in outs)
        bvar_out = sum(k * max(float(pm @ (uu * uu)) - float(pm @ uu) ** 2, 0.0)
                       for k, uu, pm in outs)
        return m2, m1, bvar_out, compress(np.concatenate([uu for _, uu, _ in outs]),
                                          np.concatenate([k * pm for k, _, pm in outs])), outs
    u, p = _atoms(dist)
    pm = _max_weights(b, p)
    m1 = float(pm @ u)
    m2 = float(pm @ (u * u))
    var_out = max(m2 - m1 * m1, 0.0)
    return m2, m1, var_out * (bvar / var if var > 0 else 0.0), compress(u, pm)


def table(values: np.ndarray, v: np.ndarray) -> Table:
    """``(u, V)`` sorted by ``u`` with one entry per distinct value (for ``np.interp``)."""
    u, idx = np.unique(np.asarray(values, np.float64), return_index=True)
    return u, np.asarray(v, np.float64)[idx]


def mean_of(g: float, t: Table | None, dist: Dist) -> float:
    """``E[V(a)]`` over ``dist`` (``g`` when there is no table)."""
    if t is None:
        return g
    v, w = dist
    return float(np.asarray(w) @ np.interp(np.asarray(v), t[0], t[1]))


def backward(b: Between, g: float, t: Table | None, dist_in: Dist, dist_out: Dist,
             units: list | None = None) -> tuple[float, Table | None]:
    """``Var(dL/da)`` before the module from ``Var(dL/d out)`` after it (``g`` and, when the
    gradient depends on the unit's value, its table ``t``): the mean over ``dist_in`` and
    the table on ``dist_in``'s values (None where it is constant). ``units``: the input's
    per-unit distributions (:func:`forward`), whose maxima a max pool's gradient reaches."""
    if b.kind == "avg":  # a linear mix of positions: no dependence on one entry's value
        return b.ratio * b.mean_s * mean_of(g, t, dist_out), None
    if b.kind == "max" and units:
        # an entry of value u gets r P(it is its window's max | its unit) V_out(u): summed
        # over the units at each value, divided by how often the value occurs
        vals, num, den = [], [], []
        for k, v, w in units:
            uu, pp = _atoms((v, w))
            pm = _max_weights(b, pp)
            vout = np.full(uu.size, g) if t is None else np.interp(uu, t[0], t[1])
            vals.append(uu)
            num.append(k * pm * vout)
            den.append(k * pp)
        u, inv = np.unique(np.concatenate(vals), return_inverse=True)
        nsum = np.bincount(inv, weights=np.concatenate(num), minlength=u.size)
        dsum = np.bincount(inv, weights=np.concatenate(den), minlength=u.size)
        vin = b.ratio * np.divide(nsum, dsum, out=np.zeros_like(nsum), where=dsum > 0)
        return float(b.ratio * nsum.sum() / max(dsum.sum(), 1e-300)), (u, vin)
    if units:  # the units' own values, not the compressed mixture's group means (a dropout
        # before a max pool read the max's table, one value per unit's atom, at group means)
        dist_in = (np.concatenate([np.asarray(v) for _, v, _ in units]),
                   np.concatenate([k * np.asarray(w) for k, _, w in units]))
    u, p = _atoms(dist_in)
    if b.kind == "dropout":
        keep = 1.0 - b.p
        if keep <= 0.0:  # p = 1: no entry passes a gradient
            return 0.0, None
        if t is None:
            return g / keep, None
        vin = np.interp(u / keep, t[0], t[1]) / keep
    else:
        pm = _max_weights(b, p)
        share = np.divide(pm, p, out=np.zeros_like(pm), where=p > 0)
        vout = np.full(u.size, g) if t is None else np.interp(u, t[0], t[1])
        vin = b.ratio * share * vout
    return float(p @ vin), (u, vin)
