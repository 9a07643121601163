"""Layer-by-layer variance propagation at initialisation (Glorot & Bengio 2010, He et al. 2015,
LeCun et al. 1998, Xu et al. 2016).

Network: ``s_l = a_{l-1} W_l + b_l``, ``a_l = f(s_l)`` for ``l = 1..L``, ``a_0 = x``; ``W_l`` has
shape ``(n_{l-1}, n_l)`` with i.i.d. zero-mean entries of variance ``v_l`` and biases of variance
``sigma_b^2``. Treating pre-activations as Gaussian (wide layers):

forward   ``Var(s_l) = n_{l-1} v_l E[a_{l-1}^2] + sigma_b^2``, ``E[s_l] = 0``
          (the second moment ``E[a^2] = Var(a) + E[a]^2``: a non-zero mean such as the sigmoid's
          1/2 feeds the next layer's variance);
backward  ``dL/da_l = dL/ds_{l+1} W_{l+1}^T``, ``dL/ds_l = dL/da_l * f'(s_l)``, hence
          ``Var(dL/ds_l) = n_{l+1} v_{l+1} E[f'(s_l)^2] Var(dL/ds_{l+1})``,
          reported relative to the top layer (``grad_pre_var[L] = 1``).

``method="exact"`` evaluates ``E[f(s)]``, ``E[f(s)^2]``, ``E[f'(s)^2]`` for ``s ~ N(0, Var s_l)`` by
Gaussian quadrature; ``method="linear"`` uses the linear regime ``f(s) ~= beta + alpha s``
(the Taylor coefficients at 0), which gives the classic closed forms; for an activation with a
kink at 0 each side keeps its own line (ReLU: He et al.'s ``E[f^2] = q/2``, ``E[f'^2] = 1/2``).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..validators import positive_int, real
from .gaussian import (
    ScalarActivation,
    activation_keywords,
    activation_rule,
    gaussian_rules,
    resolve_activation,
)
from .taylor import taylor

METHODS = ("exact", "linear")
COLUMNS = (
    "layer", "fan_in", "fan_out", "weight_var", "pre_var", "act_mean", "act_var", "act_sq",
    "deriv_sq", "grad_pre_var", "weight_grad_var", "grad_pre_log_var",
)


def _check_zero_mean(init: Any) -> None:
    """ValueError for an initializer whose weights have a non-zero mean (``constant`` with
    ``value != 0``): every recursion here assumes ``E[W] = 0``, and with ``E[W] = m`` the sum
    ``s = sum_i a_i W_ij`` has ``Var s = n m^2 Var a`` plus ``n^2 m^2 E[a]^2`` across units."""
    from ..initializers import Constant

    if isinstance(init, Constant) and init.value != 0.0:
        raise ValueError(f"init {init!r} gives weights with mean {init.value:g}; the variance "
                         "recursion assumes zero-mean weights")


def _init_variance(init: Any, fan_in: int, fan_out: int, init_kw: dict) -> float:
    """Weight variance of ``init`` for a layer: a number, a callable ``(fan_in, fan_out) ->
    variance``, an initializer name or an ``Initializer`` object (its ``variance``)."""
    from ..initializers import Initializer, get_initializer, weight_variance

    if isinstance(init, bool):
        raise TypeError(f"init must be a name, a variance or a callable, got {init!r}")
    if isinstance(init, str):
        try:
            _check_zero_mean(get_initializer(init, **init_kw))
        except (TypeError, ValueError) as exc:
            if "zero-mean" in str(exc):
                raise
    if isinstance(init, (int, float, np.floating, np.integer)):
        v = float(init)
    elif isinstance(init, Initializer):
        if init_kw:
            raise TypeError(f"init_kw {sorted(init_kw)} only apply to an initializer name, "
                            f"not to the initializer object {init!r}")
        _check_zero_mean(init)
        v = weight_variance(init, fan_in, fan_out)
    elif callable(init):
        v = float(init(fan_in, fan_out, **init_kw))
    elif isinstance(init, str):
        # Accept both "glorot_uniform" and the distribution-free "glorot" (same variance).
        candidates = [init]
        for suffix in ("_uniform", "_normal"):
            if init.endswith(suffix) and init not in ("fan_in_uniform",):
                candidates.append(init[: -len(suffix)])
        candidates.append(init + "_normal")
        first_error: Exception | None = None
        v = None
        for cand in candidates:
            try:
                v = float(weight_variance(cand, fan_in, fan_out, **init_kw))
                break
            except ValueError as exc:
                first_error = first_error or exc
        if v is None:
            assert first_error is not None
            raise first_error
    else:
        raise TypeError(
            f"init must be an initializer name (str), a weight variance (float) or a callable "
            f"(fan_in, fan_out) -> variance; got {type(init).__name__}: {init!r}"
        )
    if not np.isfinite(v) or v < 0:
        raise ValueError(f"weight variance of init {init!r} must be finite and >= 0, got {v}")
    return v


ROW_BYTES = 2000
"""Memory of one layer's row while a recursion runs (a dict of a dozen floats, ~1 KB
measured, then the DataFrame's row); a list of sizes is refused before the first layer when
its rows cannot fit (``depthlab.memory.check_fits``)."""


def input_mean_square(input_var: float, input_mean: float) -> float:
    """``E[x^2] = input_var + input_mean^2``, the inputs' mean square that the first layer's
    pre-activation variance scales; an OverflowError naming both when it is past float64's
    range (``|input_mean| >= 1.3e154``: Python's ``input_mean ** 2`` raised its bare
    "(34, 'Numerical result out of range')")."""
    sq = float(input_var) + float(input_mean) * float(input_mean)
    if not math.isfinite(sq):
        raise OverflowError(f"input_var={input_var!r} and input_mean={input_mean!r}: the "
                            "inputs' mean square input_var + input_mean^2 overflows float64; "
                            "expected one below 1.8e308 (|input_mean| below 1.3e154)")
    return sq


def check_rows(layers: int, what: str) -> None:
    """:class:`~depthlab.memory.MemoryRefusal` when ``layers`` rows of ``ROW_BYTES`` do not fit
    in the memory available (refused before computing, not after hours)."""
    from ..memory import check_fits

    check_fits(layers * ROW_BYTES, f"{what} ({layers:,} layers)")


def check_gradient(grad: float, layer: int, top: int) -> None:
    """:class:`OverflowError` naming ``layer`` when the relative gradient variance ``grad`` =
    Var(dL/ds_layer) / Var(dL/ds_top) is not finite (it passed float64's ~1.8e308): the
    gradients explode past any float towards the input, and an ``inf`` (or the ``nan`` it
    turns into) would read as "no prediction" in a table that says it covers the network."""
    if not np.isfinite(grad):
        raise OverflowError(f"the gradient variance overflowed at layer {layer}: Var(dL/ds) "
                            f"grows past 1.8e308 times layer {top}'s towards the input "
                            "(the gradients explode)")


def _check_sizes(sizes: Sequence[int]) -> list[int]:
    """``[int(n) for n in sizes]`` for >= 2 positive integer widths (integral floats such as
    3.0 too); text is refused, not parsed: ``propagate("555", ...)`` was the widths
    [5, 5, 5] and ``[5, "3", 5]`` a width of 3."""
    try:
        if isinstance(sizes, str | bytes):
            raise TypeError("text")
        sizes = list(sizes)  # a generator is read once
        if not all(isinstance(n, numbers.Real) for n in sizes):
            raise TypeError("a non-number")
        out = [int(n) for n in sizes]
    except (TypeError, ValueError, OverflowError) as exc:
        raise TypeError(f"sizes must be a sequence of positive integers, got {sizes!r}") from exc
    if len(out) < 2 or any(n < 1 for n in out) or any(  # 10**30 is an integer, 2.5 is not
        isinstance(n, bool) or (not isinstance(n, numbers.Integral) and float(n) != int(n))
        for n in sizes
    ):
        raise ValueError(
            f"sizes must list >= 2 positive integer widths [n_0 (input), n_1, ..., n_L], "
            f"got {sizes!r}"
        )
    return out


def _moments_exact(fn: ScalarActivation, q: float) -> tuple[float, float, float]:
    """``E[f(s)], E[f(s)^2], E[f'(s)^2]`` for ``s ~ N(0, q)`` by quadrature."""
    from .meanfield import _check_values

    s, w = activation_rule(fn, q)
    a = fn.f(s)
    d = fn.df(s)
    _check_values(fn, "f(s)", s, a)
    _check_values(fn, "f'(s)", s, d)
    return float(w @ a), float(w @ (a * a)), float(w @ (d * d))


_UNIFORM_NODES = np.polynomial.legendre.leggauss(24)


def _moments_uniform_bias(fn: ScalarActivation, qw: float, bvar: float
                          ) -> tuple[float, float, float]:
    """``E[f(s)], E[f(s)^2], E[f'(s)^2]`` for ``s = z + b``, ``z ~ N(0, qw)``, ``b ~ U[-a, a]``
    with ``a = sqrt(3 bvar)``: ``E_b`` by 24-point Gauss-Legendre on each of ``[-a, 0]`` and
    ``[0, a]``, ``E_z`` by :func:`~depthlab.theory.gaussian.activation_rule` (``qw = 0``:
    ``s = b``)."""
    from .meanfield import _check_values

    a = float(np.sqrt(3.0 * bvar))
    x, w = _UNIFORM_NODES
    bs = np.concatenate([-a / 2 * (1 + x), a / 2 * (1 + x)])
    bw = np.concatenate([w, w]) / 4.0  # the uniform density 1/(2a) times the panels' a/2
    if qw > 0 and all(k == 0 for k in fn.kinks) and (bs != 0).all():  # 0: an edge already
        # every b's shifted rule built at once (gaussian_rules: the same rules to rounding),
        # one activation evaluation: the loop below built 48 rules one by one, 16 s for a
        # gelu net of 8 layers with uniform biases once averaged over the input lengths
        s, ws, at = gaussian_rules(np.full(bs.size, qw), bs)
        f, d = fn.f(s), fn.df(s)
        _check_values(fn, "f(s)", s, f)
        _check_values(fn, "f'(s)", s, d)
        per_b = np.stack([np.add.reduceat(ws * f, at), np.add.reduceat(ws * f * f, at),
                          np.add.reduceat(ws * d * d, at)])
        m1, m2, m3 = per_b @ bw
        return float(m1), float(m2), float(m3)
    out = np.zeros(3)
    for b, wb in zip(bs, bw):
        if qw > 0:
            s, ws = activation_rule(fn, qw, float(b))
        else:
            s, ws = np.array([b]), np.array([1.0])
        f, d = fn.f(s), fn.df(s)
        _check_values(fn, "f(s)", s, f)
        _check_values(fn, "f'(s)", s, d)
        out += wb * np.array([ws @ f, ws @ (f * f), ws @ (d * d)])
    return float(out[0]), float(out[1]), float(out[2])


def _moments_linear(left: Sequence[float], right: Sequence[float], q: float
                    ) -> tuple[float, float, float]:
    """``E[f(s)], E[f(s)^2], E[f'(s)^2]`` for ``s ~ N(0, q)`` in the linear regime on each side of
    0: ``f(s) = l0 + l1 s`` for ``s < 0`` and ``r0 + r1 s`` for ``s > 0`` (``left = (l0, l1)``,
    ``right = (r0, r1)``; one line ``beta + alpha s`` when ``f`` is smooth). With
    ``E[s 1(s > 0)] = sqrt(q / (2 pi))`` and ``E[s^2 1(s > 0)] = q / 2``::

        E f    = (l0 + r0) / 2 + (r1 - l1) sqrt(q / (2 pi))
        E f^2  = (l0^2 + r0^2) / 2 + 2 (r0 r1 - l0 l1) sqrt(q / (2 pi)) + (l1^2 + r1^2) q / 2
        E f'^2 = (l1^2 + r1^2) / 2

    smooth: ``beta``, ``beta^2 + alpha^2 q``, ``alpha^2``; ReLU: ``sqrt(q / (2 pi))``, ``q / 2``,
    ``1 / 2`` (He et al. 2015), not the averaged slope's ``q / 4`` and ``1 / 4``."""
    l0, l1 = float(left[0]), float(left[1])
    r0, r1 = float(right[0]), float(right[1])
    h = float(np.sqrt(q / (2.0 * np.pi)))
    mean = 0.5 * (l0 + r0) + (r1 - l1) * h
    sq = 0.5 * (l0 * l0 + r0 * r0) + 2.0 * (r0 * r1 - l0 * l1) * h + 0.5 * (l1 * l1 + r1 * r1) * q
    return mean, sq, 0.5 * (l1 * l1 + r1 * r1)


@activation_keywords
def propagate(
    sizes: Sequence[int],
    activation: Any,
    init: str | float | Callable = "glorot_uniform",
    input_var: float = 1.0,
    input_mean: float = 0.0,
    bias_var: float | Sequence[float] = 0.0,
    *,
    method: str = "exact",
    init_kw: dict | None = None,
    bias_dist: str = "normal",
    **kw: Any,
) -> pd.DataFrame:
    """Predicted per-layer statistics at initialisation, one row per layer ``l = 1..L``.

    ``sizes = [n_0, n_1, ..., n_L]`` (input width first). ``init``: an initializer name
    (``depthlab.initializers.weight_variance``; ``_uniform``/``_normal`` suffixes accepted),
    a weight variance, or a callable ``(fan_in, fan_out) -> variance``. The input has i.i.d.
    entries of mean ``input_mean`` and variance ``input_var``. ``kw`` go to the activation.

    Columns: ``pre_var`` = Var(s_l) = n_{l-1} v_l E[a_{l-1}^2] + bias_var;
    ``act_mean`` = E[f(s_l)], ``act_var`` = Var(f(s_l)), ``act_sq`` = E[f(s_l)^2];
    ``deriv_sq`` = E[f'(s_l)^2]; ``grad_pre_var`` = Var(dL/ds_l) / Var(dL/ds_L) with
    ``grad_pre_var[l] = n_{l+1} v_{l+1} deriv_sq[l] grad_pre_var[l+1]``;
    ``weight_grad_var`` = E[a_{l-1}^2] grad_pre_var[l] (per example, same normalisation);
    ``grad_pre_log_var`` = ln grad_pre_var = sum_{k=l}^{L-1} ln(n_{k+1} v_{k+1} deriv_sq[k]),
    summed in log space: finite where ``grad_pre_var`` underflows float64 to 0 (400 sigmoid
    layers: e^-1100; its square root, the relative std, is still a float; -inf where a factor
    is exactly 0); ``weight_var`` = v_l. ``bias_var``: the variance sigma_b^2 of zero-mean
    random biases, one number for every layer or a sequence of one per layer
    (``bias_var[l-1]`` for layer ``l``).
    ``bias_dist``: their distribution, ``"normal"`` (``s_l ~ N(0, q_l)``) or ``"uniform"``
    (``U[-a, a]``, ``a = sqrt(3 bias_var)``; method ``"exact"`` only): then ``s_l = z + b`` is
    not Gaussian and each moment is ``E_b E_z[g(z + b)]``, ``z ~ N(0, q_l - bias_var)``
    (Gauss-Legendre in ``b`` on ``[-a, 0]`` and ``[0, a]``).
    """
    if bias_dist not in ("normal", "uniform"):
        raise ValueError(f"bias_dist={bias_dist!r} is not accepted; accepted: 'normal' or "
                         "'uniform'")
    if bias_dist == "uniform" and method != "exact":
        raise ValueError(f"bias_dist='uniform' needs method='exact', got method={method!r}")
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
    widths = _check_sizes(sizes)
    input_var = real("input_var", input_var, low=0.0)
    bias_vars = _bias_variances(bias_var, len(widths) - 1)
    input_mean = real("input_mean", input_mean)
    init_kw = dict(init_kw or {})
    fn = resolve_activation(activation, **kw)
    if method == "linear":
        tc = taylor(fn, order=1)
        left = tc.left if tc.left is not None else tc.coefficients
        right = tc.right if tc.right is not None else tc.coefficients

    L = len(widths) - 1
    check_rows(L, "propagate")
    wvar = [_init_variance(init, widths[l - 1], widths[l], init_kw) for l in range(1, L + 1)]
    prev_sq = input_mean_square(input_var, input_mean)
    rows = []
    for l in range(1, L + 1):
        q = widths[l - 1] * wvar[l - 1] * prev_sq + bias_vars[l - 1]
        if not np.isfinite(q):
            raise OverflowError(f"pre-activation variance overflowed at layer {l}")
        with np.errstate(over="ignore", invalid="ignore"):  # E[f^2] past 1.8e308: the next
            if bias_dist == "uniform" and bias_vars[l - 1] > 0:
                mean, sq, dsq = _moments_uniform_bias(fn, q - bias_vars[l - 1],
                                                      bias_vars[l - 1])
            elif method == "exact":                           # layer's q is inf, named above
                mean, sq, dsq = _moments_exact(fn, q)
            else:
                mean, sq, dsq = _moments_linear(left, right, q)
        rows.append({
            "layer": l, "fan_in": widths[l - 1], "fan_out": widths[l], "weight_var": wvar[l - 1],
            "pre_var": q, "act_mean": mean, "act_var": max(sq - mean * mean, 0.0),
            "act_sq": sq, "deriv_sq": dsq, "_prev_sq": prev_sq,
        })
        prev_sq = sq

    grad, log_grad = 1.0, 0.0
    rows[-1]["grad_pre_var"], rows[-1]["grad_pre_log_var"] = grad, log_grad
    for l in range(L - 1, 0, -1):  # row index l-1 holds layer l
        factor = widths[l + 1] * wvar[l] * rows[l - 1]["deriv_sq"]
        grad = factor * grad
        check_gradient(grad, l, L)
        log_grad += (math.log(factor) if factor > 0 else -math.inf if factor == 0 else math.nan)
        rows[l - 1]["grad_pre_var"], rows[l - 1]["grad_pre_log_var"] = grad, log_grad
    for r in rows:
        r["weight_grad_var"] = r.pop("_prev_sq") * r["grad_pre_var"]
    return pd.DataFrame(rows, columns=list(COLUMNS))


def _bias_variances(bias_var: Any, layers: int) -> list[float]:
    """``bias_var`` of :func:`propagate` as one variance (>= 0) per layer: a number repeated, or
    a sequence of exactly ``layers`` numbers."""
    if isinstance(bias_var, Sequence | np.ndarray) and not isinstance(bias_var, str | bytes):
        values = list(bias_var)
        if len(values) != layers:
            raise ValueError(f"bias_var has {len(values)} entries; expected one number or "
                             f"{layers} (one per layer)")
        return [real(f"bias_var[{i}]", v, low=0.0) for i, v in enumerate(values)]
    return [real("bias_var", bias_var, low=0.0)] * layers


@activation_keywords
def gradient_ratio(
    sizes: Sequence[int],
    activation: Any,
    init: str | float | Callable = "glorot_uniform",
    input_var: float = 1.0,
    input_mean: float = 0.0,
    bias_var: float = 0.0,
    **kw: Any,
) -> float:
    """Predicted ``Var(dL/ds_1) / Var(dL/ds_L)``: < 1 vanishing, > 1 exploding towards the input.

    Same arguments as :func:`propagate` (``method``, ``init_kw`` and activation
    keywords pass through).
    """
    df = propagate(sizes, activation, init, input_var, input_mean, bias_var, **kw)
    return float(df["grad_pre_var"].iloc[0] / df["grad_pre_var"].iloc[-1])


@activation_keywords
def preserving_weight_variance(
    activation: Any,
    fan_in: int,
    fan_out: int,
    mode: str = "fan_in",
    q: float = 1.0,
    **kw: Any,
) -> float:
    """Weight variance that keeps variances constant through a layer, pre-activations at Var ``q``.

    ``mode="fan_in"``: forward, ``v = q / (fan_in E[f(s)^2])`` (He: relu -> 2/fan_in;
    LeCun: tanh in the linear regime -> 1/fan_in). ``mode="fan_out"``: backward,
    ``v = 1 / (fan_out E[f'(s)^2])``. ``mode="average"``: Glorot's compromise, the harmonic
    mean ``2 / (fan_in / g_f + fan_out / g_b)`` with gains ``g_f = q / E[f^2]``,
    ``g_b = 1 / E[f'^2]`` (tanh, small q: ``2 / (fan_in + fan_out)``); ``"fan_avg"``, the mode's
    name in ``variance_scaling`` (whose ``scale`` this is times ``(fan_in + fan_out) / 2``),
    is the same. ``s ~ N(0, q)``.
    """
    modes = ("fan_in", "fan_out", "fan_avg", "average")
    if not isinstance(mode, str) or mode not in modes:
        raise ValueError(f"unknown mode {mode!r}; expected one of {modes}")
    q = real("q", q, positive=True)
    # a float or text fan is a TypeError (and still a ValueError), as the other widths are
    fan_in, fan_out = positive_int("fan_in", fan_in), positive_int("fan_out", fan_out)
    fn = resolve_activation(activation, **kw)
    _, sq, dsq = _moments_exact(fn, q)
    g_f = q / sq if sq > 0 else np.inf
    g_b = 1.0 / dsq if dsq > 0 else np.inf
    if mode == "fan_in":
        return float(g_f / fan_in)
    if mode == "fan_out":
        return float(g_b / fan_out)
    return float(2.0 / (fan_in / g_f + fan_out / g_b))
