"""The plain recursion averaged over the examples' input lengths, fast.

A plain network's pre-activation at layer 1 is ``s_1 = W x``: over the weight draws, an example
``x`` gives ``Var(s_1 | x) = v_1 |x|^2``, so each example runs its own variance recursion from
its own squared length per feature ``r(x) = |x|^2 / n_in`` (relu-like units without biases
excepted, whose ratios do not depend on it), and a batch measures the average over examples::

    E_x[h(r(x))] ~= sum_k w_k h(m t_k),   m = mean_x r(x),   t = r / m

:func:`empirical_length_rule` builds ``(t_k, w_k)`` from a data set's own inputs (their exact
distinct lengths when there are few, else equal-count quantile bins), where
:func:`depthlab.theory.predict.input_length_rule` assumes i.i.d. Gaussian features (a
chi-square law). :func:`propagate_nodes` runs
:func:`~depthlab.theory.variance.propagate`'s recursion for every node at once (one activation
evaluation per layer over all nodes' quadrature points, no table per node: the same rules and
sums, so the same numbers to rounding) and :func:`average_nodes` combines them as
:func:`depthlab.theory.predict.average_over_lengths` does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

EMPIRICAL_NODES = 48
"""Nodes :func:`interpolated_nodes` runs the recursion at when a data set has more distinct
lengths (Chebyshev-Lobatto in the length ``sqrt(t)`` over the data's range, each example's
values then read off a monotone cubic (PCHIP) through them): within 2e-3 (gelu) and 5e-5
(tanh, selu) of running every example (digits, spirals, a standardized log-normal table; 20
layers of 256), where 48 equal-count bins of the lengths, each at its
mean, were up to 19% off (2-D spirals, tanh under He: the shortest examples, nearly linear,
lead a deep net's gradient average)."""


MAX_DISTINCT = 4096
"""At most this many lengths are kept (:func:`empirical_length_rule`): beyond, equal-count bins
of the sorted lengths at their means (60,000 rows: 15 to a bin, a spread within a bin ~1e-3 of
the whole; the interpolated arrays stay 4096 x layers instead of 60,000 x layers)."""


def example_lengths(x: Any, n_in: int) -> np.ndarray:
    """``r_i = |x_i|^2 / n_in`` for each row of ``x``, an array ``(n, n_in)`` of finite
    numbers; ValueError/TypeError naming what is wrong otherwise."""
    if isinstance(x, (str, bytes)) or x is None:
        raise TypeError(f"x must be an array of input rows (n, {n_in}), got {type(x).__name__}")
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"x must be an array of numbers (n, {n_in}); {exc}") from None
    if arr.ndim != 2 or arr.shape[1] != n_in or arr.shape[0] < 1:
        raise ValueError(f"x must have shape (n >= 1, {n_in}) (the network's {n_in} input "
                         f"features), got shape {arr.shape}")
    if not np.isfinite(arr).all():
        row, col = (int(i) for i in np.argwhere(~np.isfinite(arr))[0])
        raise ValueError(f"x must hold finite numbers; x[{row}, {col}] = {arr[row, col]}")
    return np.einsum("ij,ij->i", arr, arr) / float(n_in)


def empirical_length_rule(lengths: np.ndarray, nodes: int = EMPIRICAL_NODES
                          ) -> tuple[np.ndarray, np.ndarray, float]:
    """``(t, w, m)``: the examples' squared lengths per feature ``lengths`` (``r_i``) as ratios
    ``t = r / m`` to their mean ``m``, with weights ``w`` summing to 1 (``E_x[h(r)] = sum_k w_k
    h(m t_k)``): the distinct values and their frequencies (:func:`interpolated_nodes` then
    runs the recursion at ``nodes`` of them only), or beyond :data:`MAX_DISTINCT` of them that
    many equal-count bins at their means.
    ``([1], [1], 0)`` when every length is 0."""
    r = np.asarray(lengths, dtype=np.float64).ravel()
    m = float(r.mean())
    if not m > 0:
        return np.ones(1), np.ones(1), 0.0
    values, counts = np.unique(r / m, return_counts=True)
    if values.size > MAX_DISTINCT:  # a large data set: equal-count bins at their means, the
        # shortest and the longest example each its own (they lead a deep net's average)
        t = np.repeat(values, counts)
        bins = [t[:1], *np.array_split(t[1:-1], MAX_DISTINCT - 2), t[-1:]]
        sizes = np.array([b.size for b in bins], dtype=np.float64)
        return np.array([b.mean() for b in bins]), sizes / sizes.sum(), m
    return values, counts / counts.sum(), m


def interpolated_nodes(t: np.ndarray, run: Any, nodes: int = EMPIRICAL_NODES
                       ) -> dict[str, np.ndarray]:
    """:func:`propagate_nodes`' arrays at every value of ``t`` (sorted, distinct), computed by
    ``run(ts)`` (that function at the ratios ``ts``) at ``t`` itself when there are at most
    ``nodes`` values, else at ``nodes`` Chebyshev-Lobatto points ``u_k`` in ``u = sqrt(t)``
    over ``[sqrt(t_min), sqrt(t_max)]`` and read off a PCHIP (monotone cubic, no overshoot) in
    ``u`` through them: ``pre_var``, ``act_mean``, ``act_sq``, ``deriv_sq``, ``prev_sq`` as
    values, ``grad_pre_log_var`` as its log (``grad_pre_var = exp``). Where a log is not
    finite (a gradient exactly 0) every value is run instead."""
    from scipy.interpolate import PchipInterpolator

    t = np.asarray(t, dtype=np.float64)
    if t.size <= nodes:
        return run(t)
    u = np.sqrt(t)
    a, b = float(u[0]), float(u[-1])
    k = np.arange(nodes)
    grid = 0.5 * (a + b) - 0.5 * (b - a) * np.cos(np.pi * k / (nodes - 1))
    grid[0], grid[-1] = a, b
    at = run(grid * grid)
    if not all(np.isfinite(v).all() for v in at.values()):
        return run(t)
    out = {}
    for key, v in at.items():
        if key == "grad_pre_var":
            continue
        out[key] = PchipInterpolator(grid, v, axis=0)(u)
    if "grad_pre_log_var" in out:
        out["grad_pre_var"] = np.exp(out["grad_pre_log_var"])
    return out


def _rules(fn: Any, q: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """``activation_rule(fn, q_k)`` for each ``q_k``: for an activation without listed kinks
    (``fn.kinks`` empty) the cached standard rule scaled by ``sqrt(q_k)`` directly (what
    ``activation_rule`` returns for a zero mean, without its argument checks, ``q`` being finite
    and >= 0 here)."""
    from .gaussian import _rule_key, _standard_rule, activation_rule

    if fn.kinks or not (np.isfinite(q).all() and (q >= 0).all()):
        return [activation_rule(fn, float(qk)) for qk in q]
    out = []
    for qk in q:
        sd = math.sqrt(float(qk))
        z, w = _standard_rule(_rule_key(sd))
        out.append((sd * z + 0.0, w))
    return out


def propagate_nodes(widths: Sequence[int], fn: Any, wvar: Sequence[float],
                    input_sq: np.ndarray, bias_vars: Sequence[float],
                    bias_dist: str = "normal") -> dict[str, np.ndarray]:
    """:func:`~depthlab.theory.variance.propagate`'s recursion (method ``"exact"``) from each of
    the first-layer inputs' ``E[x_i^2] = input_sq[k]``, as arrays ``(nodes, layers)``:
    ``pre_var`` ``q_l = n_{l-1} v_l E[a_{l-1}^2] + sigma_b^2``, ``act_mean``, ``act_sq``,
    ``deriv_sq`` (quadrature over the same :func:`~depthlab.theory.gaussian.activation_rule`
    per node; ``f`` evaluated once per layer on all nodes' points), ``prev_sq`` (``E[a_{l-1}^2]``),
    ``grad_pre_var`` and ``grad_pre_log_var`` (``prod``/``sum`` of ``ln(n_{l+1} v_{l+1}
    E[f'(s_l)^2])`` from the top). ``fn``: a resolved activation; ``wvar``: each layer's weight
    variance. OverflowError naming the layer as in ``propagate``."""
    from .meanfield import _check_values
    from .variance import _moments_uniform_bias, check_gradient

    n = [int(v) for v in widths]
    L = len(n) - 1
    prev = np.asarray(input_sq, dtype=np.float64).copy()
    K = prev.size
    out = {k: np.zeros((K, L)) for k in ("pre_var", "act_mean", "act_sq", "deriv_sq",
                                         "prev_sq")}
    for l in range(1, L + 1):
        bv = float(bias_vars[l - 1])
        q = n[l - 1] * wvar[l - 1] * prev + bv
        if not np.isfinite(q).all():
            raise OverflowError(f"pre-activation variance overflowed at layer {l}")
        mean, sq, dsq = np.zeros(K), np.zeros(K), np.zeros(K)
        with np.errstate(over="ignore", invalid="ignore"):
            if bias_dist == "uniform" and bv > 0:
                for k in range(K):
                    mean[k], sq[k], dsq[k] = _moments_uniform_bias(fn, float(q[k]) - bv, bv)
            else:
                rules = _rules(fn, q)
                s = np.concatenate([r[0] for r in rules])
                a, d = fn.f(s), fn.df(s)
                _check_values(fn, "f(s)", s, a)
                _check_values(fn, "f'(s)", s, d)
                at = 0
                for k, (sk, wk) in enumerate(rules):
                    ak, dk = a[at:at + sk.size], d[at:at + sk.size]
                    at += sk.size
                    mean[k], sq[k], dsq[k] = wk @ ak, wk @ (ak * ak), wk @ (dk * dk)
        out["pre_var"][:, l - 1], out["act_mean"][:, l - 1] = q, mean
        out["act_sq"][:, l - 1], out["deriv_sq"][:, l - 1] = sq, dsq
        out["prev_sq"][:, l - 1] = prev
        prev = sq
    grad, log_grad = np.ones((K, L)), np.zeros((K, L))
    for l in range(L - 1, 0, -1):  # column l-1 holds layer l
        factor = n[l + 1] * wvar[l] * out["deriv_sq"][:, l - 1]
        grad[:, l - 1] = factor * grad[:, l]
        for g in grad[:, l - 1]:
            check_gradient(float(g), l, L)
        with np.errstate(divide="ignore", invalid="ignore"):
            log_grad[:, l - 1] = log_grad[:, l] + np.where(
                factor > 0, np.log(np.where(factor > 0, factor, 1.0)),
                np.where(factor == 0, -math.inf, math.nan))
    out["grad_pre_var"], out["grad_pre_log_var"] = grad, log_grad
    return out


def average_nodes(one: pd.DataFrame, nodes: dict[str, np.ndarray], weights: np.ndarray
                  ) -> pd.DataFrame:
    """The frame of :func:`depthlab.theory.predict.average_over_lengths` from
    :func:`propagate_nodes`' arrays: ``pre_var``, ``act_mean``, ``act_sq``, ``deriv_sq`` are
    ``sum_k w_k (.)_k``, ``act_var = E[act_sq] - E[act_mean]^2``, and with each node's top
    ``D_k = deriv_sq_L``: ``grad_pre_var_l = sum_k w_k D_k G_lk / sum_k w_k D_k`` (in log space,
    ``grad_pre_log_var``), ``weight_grad_var_l = sum_k w_k D_k E[a_{l-1}^2]_k G_lk / sum_k w_k
    D_k``. ``one``: a frame of the same network (its layer, fan and weight columns are kept)."""
    out = one.copy()
    w = np.asarray(weights, dtype=float)
    for col in ("pre_var", "act_mean", "act_sq", "deriv_sq"):
        out[col] = w @ nodes[col]
    out["act_var"] = np.maximum(out["act_sq"] - out["act_mean"] ** 2, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        logw = np.log(w)
        d_top = nodes["deriv_sq"][:, -1]
        top = np.where(d_top > 0, np.log(np.where(d_top > 0, d_top, 1.0)), -math.inf)
        logs = nodes["grad_pre_log_var"]
        base = logw[:, None] + top[:, None] + logs
        log_norm = np.logaddexp.reduce(logw + top)
        log_g = np.logaddexp.reduce(base, axis=0) - log_norm
        log_wg = np.logaddexp.reduce(base + np.log(nodes["prev_sq"]), axis=0) - log_norm
    out["grad_pre_log_var"] = log_g
    out["grad_pre_var"] = np.exp(log_g)
    out["weight_grad_var"] = np.exp(log_wg)
    return out


RESIDUAL_NODES = 24
"""Lengths :func:`average_residual` runs the residual recursion at (one table each, ~0.05 s for
10 blocks), the rest read off the PCHIP through them (:func:`interpolated_nodes`)."""


def average_residual(one: pd.DataFrame, lengths: np.ndarray, run: Any) -> pd.DataFrame:
    """The residual recursion's frame averaged over the examples' squared lengths per feature
    ``lengths``, ``run(v)`` being :func:`~depthlab.theory.residual.propagate_residual` at
    ``input_var = v``: ``pre_var``, ``act_mean``, ``act_sq``, ``deriv_sq``, ``stream_sq`` and
    ``stream_batch_var`` are ``E_x[.]``; ``grad_pre_var`` and ``stream_grad_var`` are ``E_x[D(x)
    G(x)] / E_x[D(x)]`` with each example's head ``D = deriv_sq`` (its output gradient
    independent of ``x``), as :func:`average_nodes` does for a plain net. ``one``: the frame at
    the mean length (its other columns are kept)."""
    t, w, m = empirical_length_rule(lengths)
    if t.size < 2:
        return one
    value_cols = [c for c in ("pre_var", "act_mean", "act_sq", "deriv_sq", "stream_sq",
                              "stream_batch_var") if c in one.columns]
    grad_cols = [c for c in ("grad_pre_var", "stream_grad_var") if c in one.columns]

    def nodes_at(ts: np.ndarray) -> dict[str, np.ndarray]:
        frames = [run(float(m * tk)) for tk in ts]
        out = {c: np.array([f[c].to_numpy(float) for f in frames]) for c in value_cols}
        with np.errstate(divide="ignore"):
            for c in grad_cols:
                out["log_" + c] = np.log(np.array([f[c].to_numpy(float) for f in frames]))
        return out

    at = interpolated_nodes(t, nodes_at, RESIDUAL_NODES)
    out = one.copy()
    for c in value_cols:
        out[c] = w @ at[c]
    if "act_var" in out.columns:
        out["act_var"] = np.maximum(out["act_sq"] - out["act_mean"] ** 2, 0.0)
    d_top = at["deriv_sq"][:, -1]
    norm = float(w @ d_top)
    for c in grad_cols:
        out[c] = (w * d_top) @ np.exp(at["log_" + c]) / norm if norm > 0 else one[c]
    return out
