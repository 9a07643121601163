"""Gradient explosion in batch-normalized plain networks at initialization (Yang et al. 2019).

Layer ``l`` of ``dl.mlp(..., batchnorm=True)``: ``h_l = a_{l-1} W_l`` (no bias),
``s_l = gamma BN(h_l) + beta``, ``a_l = f(s_l)``, where BN uses the batch's own mean and
(biased) variance ``q_l``: ``BN(h) = (h - mean_B h) / sqrt(q_l + eps)``. In the large-width,
large-batch limit each BN output is, over the batch, a standard Gaussian, so
``s ~ N(beta, gamma^2)`` whatever the weights, and the backward pass through BN is
``dL/dh = gamma (P g) / sqrt(q + eps)`` with ``P`` the projection removing, per unit, the batch
mean and the ``BN(h)`` direction (two directions out of ``B``: negligible for large batches when
the gradient is independent of the forward pass). Since ``q_{l+1} = n_l v_{l+1} Var f(s_l)``, the
weight variance ``v`` cancels and, for ``g_l = dL/ds_l`` (the gradient the probes measure)::

    Var(g_l) = n_{l+1} v_{l+1} gamma^2 E[f'(s_l)^2] / (n_l v_{l+1} Var f(s_l) + eps) Var(g_{l+1})

so for equal widths (and ``eps`` small against ``q``) the squared gradient grows towards the
input by ``lambda^2 = gamma^2 E[f'(s)^2] / Var f(s)`` per layer, ``s ~ N(beta, gamma^2)``;
for ReLU (``gamma = 1, beta = 0``) ``E[f'^2] = 1/2``, ``Var f = (pi - 1) / (2 pi)``, hence
``lambda^2 = pi / (pi - 1)`` (Yang et al. 2019's large-batch limit), ``lambda = 1.2112`` for the
gradient norm. No choice of ``sigma_w``, ``sigma_b`` removes it.

When the argument holds (the two conditions below are derived here from the same mean field;
they are not quoted from Yang et al.). It needs the batch at its fixed point to be:

1. *white*: the per-unit batch vectors spread over all batch directions, so that the two
   projected-out directions carry a negligible share of the gradient. BN + ``f`` maps the
   correlation ``c`` of two examples to ``K(c) = Cov(f(u1), f(u2)) / Var f`` (``u`` Gaussian
   with correlation ``c``), and departures from a white batch shrink by
   ``K'(0) = gamma^2 E[f'(s)]^2 / Var f(s)`` per layer (Price's theorem; ``whitening``);
   ``K'(0) <= 1`` with equality exactly for affine ``f``;
2. *of equal norms*: an example whose BN'ed pre-activations have variance ``nu`` (over units)
   has ``D(nu) = E[(f(beta + gamma sqrt(nu) z) - mu)^2] / Var f`` in the next layer
   (``mu = E f(s)``), so a spread of the examples' norms grows by
   ``D'(1) = gamma E[(f(s) - mu) f'(s) z] / Var f(s)`` per layer (``norm_mode``).

Hence:

* ``K'(0) < 1`` and ``D'(1) <= 1`` (tanh 0.46, sigmoid 0.72, selu 0.78, elu 0.86, relu and
  leaky relu exactly 1, being positively homogeneous): the prediction holds once the depth
  exceeds a few ``whitening_depth = -1 / ln K'(0)`` layers or the input batch is already well
  spread (relu 3.2 layers, tanh 14, sigmoid 63);
* ``D'(1) > 1`` (gelu 1.062, swish 1.101, mish 1.001): the norms break apart with depth, the
  BN'ed pre-activations stop being Gaussian over the batch and the formula fails (swish
  measured 1.16-1.18 per layer against the Gaussian 1.10, gelu 1.16-1.17 against 1.148 and
  more at depth 50; mish, barely unstable, stays within 0.6% at depth 50), so these return
  ``covered = False``;
* affine ``f`` (identity): the batch is never whitened; the factor depends on the data's batch
  covariance (1 for a full-rank white batch, measured ~1.02 per layer for 300 examples of rank
  32), so no number is returned (``covered = False``);
* ``Var f(s) = 0`` (``f`` constant on the Gaussian), ``E[f'(s)^2] = 0`` (``step``: every
  gradient is exactly 0, and ``E[f']`` misses its jump, so ``K'(0)`` would read 0) or an
  activation that is not elementwise (softmax): no prediction either.

Finite width and batch add corrections of order ``1/n`` and ``1/B`` (measured on width 256-1024,
batch 300: relu 1.200/1.206/1.213, tanh 1.094/1.089/1.089 against 1.2112 and 1.0853; batch 64
explodes faster, relu ~1.22).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .gaussian import (
    NOT_ELEMENTWISE,
    ScalarActivation,
    activation_keywords,
    activation_rule,
    resolve_activation,
)

_AFFINE_TOL = 1e-9
_NORM_TOL = 1e-9  # relu's D'(1) is exactly 1 (quadrature error ~1e-15)


@dataclass(frozen=True)
class BNGradientFactor:
    """Per-layer gradient growth of a batch-normalized plain network (see the module docstring).

    ``growth_sq = gamma^2 E[f'(s)^2] / Var f(s)`` (squared gradient, one layer towards the input),
    ``growth = sqrt(growth_sq)`` (gradient norm or std); ``whitening = K'(0)`` and
    ``whitening_depth = -1 / ln K'(0)``; ``norm_mode = D'(1)`` (growth of a spread of the
    examples' norms); moments of ``f(s)``, ``s ~ N(beta, gamma^2)``.
    ``covered`` is False, and ``growth``/``growth_sq`` NaN, where the argument does not hold;
    ``note`` says why (or what the numbers assume).
    """

    name: str
    gamma: float
    beta: float
    act_mean: float
    act_var: float
    act_sq: float
    deriv_sq: float
    deriv_mean: float
    growth_sq: float
    growth: float
    whitening: float
    whitening_depth: float
    norm_mode: float
    covered: bool
    note: str


def norm_mode(fn: ScalarActivation, gamma: float, beta: float) -> float:
    """``D'(1) = gamma E[(f(s) - mu) f'(s) z] / Var f(s)``, ``s = beta + gamma z``,
    ``mu = E f(s)`` (module docstring); NaN when ``Var f(s) = 0``."""
    s, w = activation_rule(fn, gamma * gamma, beta)
    z = (s - beta) / gamma
    a = np.asarray(fn.f(s), dtype=np.float64)
    d = np.asarray(fn.df(s), dtype=np.float64)
    mu = float(w @ a)
    var = float(w @ (a * a)) - mu * mu
    return float(gamma * (w @ ((a - mu) * d * z)) / var) if var > 0 else math.nan


def bn_moments(fn: ScalarActivation, var: float, mean: float) -> tuple[float, float, float, float]:
    """``E[f(s)]``, ``E[f(s)^2]``, ``E[f'(s)^2]``, ``E[f'(s)]`` for ``s ~ N(mean, var)`` by
    Gaussian quadrature (:func:`~depthlab.theory.gaussian.activation_rule`: the kinks of ``fn``
    are panel edges)."""
    s, w = activation_rule(fn, var, mean)
    a = np.asarray(fn.f(s), dtype=np.float64)
    d = np.asarray(fn.df(s), dtype=np.float64)
    return float(w @ a), float(w @ (a * a)), float(w @ (d * d)), float(w @ d)


def _check(label: str, value: Any, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{label} must be a real number, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or (positive and v <= 0):
        raise ValueError(f"{label} must be finite{' and > 0' if positive else ''}, got {value!r}")
    return v


@activation_keywords
def bn_gradient_factor(activation: Any, gamma: float = 1.0, beta: float = 0.0,
                       **kw: Any) -> BNGradientFactor:
    """Per-layer growth of the back-propagated gradient in ``Dense -> BN -> f`` stacks.

    ``lambda^2 = gamma^2 E[f'(s)^2] / Var f(s)``, ``s ~ N(beta, gamma^2)`` (BN's output scale
    ``gamma`` and shift ``beta``, 1 and 0 at initialization), by Gaussian quadrature. ReLU:
    ``pi / (pi - 1)`` exactly. ``kw`` go to the activation. Affine activations, activations
    whose examples' norms drift apart (``norm_mode = D'(1) > 1``: gelu, swish, mish),
    activations constant on the Gaussian and non-elementwise ones return ``covered=False``
    with NaN growth (the module docstring explains why).
    """
    gamma = _check("gamma", gamma)
    beta = _check("beta", beta)
    if gamma == 0.0:
        raise ValueError("gamma must be non-zero (BN's output scale), got 0")
    if not math.isfinite(gamma * gamma):  # "variance must be finite ..., got inf" named no gamma
        raise ValueError(f"gamma={gamma!r}: BN's output variance gamma^2 overflows float64; "
                         "expected |gamma| below 1.3e154")
    name = activation if isinstance(activation, str) else None
    if name is not None and name.lower() in NOT_ELEMENTWISE:
        nan = math.nan
        return BNGradientFactor(name, gamma, beta, nan, nan, nan, nan, nan, nan, nan, nan, nan,
                                nan, False, f"no prediction: {name} is not elementwise (the "
                                "argument treats each unit's pre-activation as a Gaussian)")
    fn = resolve_activation(activation, **kw)
    mean, sq, dsq, dmean = bn_moments(fn, gamma * gamma, beta)
    var = max(sq - mean * mean, 0.0)
    if not all(math.isfinite(v) for v in (mean, sq, dsq, dmean)):
        raise ValueError(f"moments of {fn.name} on N({beta:g}, {gamma * gamma:g}) are not finite")
    if var <= 1e-14 * max(sq, 1e-300):
        return BNGradientFactor(fn.name, gamma, beta, mean, var, sq, dsq, dmean, math.nan,
                                math.nan, math.nan, math.nan, math.nan, False,
                                f"no prediction: {fn.name} is constant on N({beta:g}, "
                                f"{gamma * gamma:g}), so the next batch norm divides by ~0")
    if dsq == 0.0:  # step: f' = 0 almost everywhere, and E[f'] says nothing of its jump
        return BNGradientFactor(fn.name, gamma, beta, mean, var, sq, dsq, dmean, math.nan,
                                math.nan, math.nan, math.nan, math.nan, False,
                                f"no prediction: E[f'(s)^2] = 0 for {fn.name} on "
                                f"N({beta:g}, {gamma * gamma:g}), so every back-propagated "
                                "gradient is exactly 0: there is no growth to give")
    growth_sq = gamma * gamma * dsq / var
    whitening = gamma * gamma * dmean * dmean / var
    mode = norm_mode(fn, gamma, beta)
    if whitening >= 1.0 - _AFFINE_TOL:
        return BNGradientFactor(fn.name, gamma, beta, mean, var, sq, dsq, dmean, math.nan,
                                math.nan, whitening, math.inf, mode, False,
                                f"no prediction: {fn.name} is affine (K'(0) = 1), so batch norm "
                                "never whitens the batch and the per-layer factor depends on the "
                                "data's batch covariance (1 only for a white full-rank batch)")
    wdepth = -1.0 / math.log(whitening) if whitening > 0 else 0.0
    if mode > 1.0 + _NORM_TOL:
        return BNGradientFactor(fn.name, gamma, beta, mean, var, sq, dsq, dmean, math.nan,
                                math.nan, whitening, wdepth, mode, False,
                                f"no prediction: with {fn.name} the examples' norms drift apart "
                                f"(x{mode:.4g} per layer, D'(1) > 1), so batch-normalized "
                                "pre-activations stop being Gaussian over the batch")
    note = (f"large-width, large-batch limit; holds beyond ~{wdepth:.3g} layers of whitening "
            f"(K'(0) = {whitening:.4g}, D'(1) = {mode:.4g})")
    return BNGradientFactor(fn.name, gamma, beta, mean, var, sq, dsq, dmean, growth_sq,
                            math.sqrt(growth_sq), whitening, wdepth, mode, True, note)


COLUMNS = ("layer", "fan_in", "fan_out", "weight_var", "dense_var", "pre_var", "act_mean",
           "act_var", "act_sq", "deriv_sq", "grad_pre_var")


@activation_keywords
def propagate_batchnorm(
    sizes: Sequence[int],
    activation: Any,
    init: str | float | Callable = "glorot_uniform",
    input_var: float = 1.0,
    *,
    gamma: float = 1.0,
    beta: float = 0.0,
    eps: float = 1e-5,
    init_kw: dict | None = None,
    **kw: Any,
) -> pd.DataFrame:
    """Per-layer statistics of ``Dense -> BN -> f`` layers at initialization, rows ``l = 1..L``.

    ``sizes = [n_0, ..., n_L]`` (input width, then the hidden widths); ``init`` as in
    :func:`~depthlab.theory.propagate`; the inputs have per-feature batch variance ``input_var``.

    Columns: ``dense_var`` = ``q_l`` = batch variance of ``h_l = a_{l-1} W_l``
    (``n_0 v_1 input_var``, then ``n_{l-1} v_l act_var[l-1]``); ``pre_var`` = Var of
    ``s_l = gamma BN(h_l) + beta`` = ``gamma^2 q_l / (q_l + eps)``; ``act_*``, ``deriv_sq``:
    moments of ``f(s_l)``, ``s_l ~ N(beta, pre_var)``; ``grad_pre_var`` = Var(dL/ds_l) /
    Var(dL/ds_L)::

        grad_pre_var[l] = deriv_sq[l] n_{l+1} v_{l+1} gamma^2 / (q_{l+1} + eps) grad_pre_var[l+1]

    (module docstring). Where :func:`bn_gradient_factor` does not cover the activation,
    ``grad_pre_var`` is NaN below the top layer and ``frame.attrs["note"]`` says why.
    """
    from .variance import _check_sizes, _init_variance, check_gradient, check_rows

    widths = _check_sizes(sizes)
    check_rows(len(widths) - 1, "propagate_batchnorm")
    input_var = _check("input_var", input_var, positive=True)
    eps = _check("eps", eps)
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps!r}")
    factor = bn_gradient_factor(activation, gamma, beta, **kw)
    init_kw = dict(init_kw or {})
    elementwise = not (isinstance(activation, str) and activation.lower() in NOT_ELEMENTWISE)
    fn = resolve_activation(activation, **kw) if elementwise else None
    L = len(widths) - 1
    wvar = [_init_variance(init, widths[l - 1], widths[l], init_kw) for l in range(1, L + 1)]
    rows = []
    prev_var = input_var
    for l in range(1, L + 1):
        q = widths[l - 1] * wvar[l - 1] * prev_var
        pre_var = gamma * gamma * q / (q + eps) if q + eps > 0 else 0.0
        if fn is None:
            mean = sq = dsq = math.nan
        else:
            mean, sq, dsq, _ = bn_moments(fn, pre_var, beta)
        act_var = max(sq - mean * mean, 0.0) if math.isfinite(sq) else math.nan
        rows.append({"layer": l, "fan_in": widths[l - 1], "fan_out": widths[l],
                     "weight_var": wvar[l - 1], "dense_var": q, "pre_var": pre_var,
                     "act_mean": mean, "act_var": act_var, "act_sq": sq, "deriv_sq": dsq})
        prev_var = act_var
    grad = 1.0
    rows[-1]["grad_pre_var"] = grad
    for l in range(L - 1, 0, -1):  # rows[l - 1] is layer l, rows[l] layer l + 1
        if not factor.covered:
            grad = math.nan
        else:
            nxt = rows[l]
            grad = (rows[l - 1]["deriv_sq"] * widths[l + 1] * wvar[l] * gamma * gamma
                    / (nxt["dense_var"] + eps) * grad)
            check_gradient(grad, l, L)
        rows[l - 1]["grad_pre_var"] = grad
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    frame.attrs["note"] = factor.note
    frame.attrs["covered"] = factor.covered
    return frame
