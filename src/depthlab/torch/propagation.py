"""The variance propagation :func:`depthlab.torch.predict.predict` runs along a chain: forward
``q_l = n_l Var(W_l) E[a_{l-1}^2] + Var(b_l)`` with each unit's own offset (its bias and the
weights on the inputs' batch means), BatchNorm's batch moments, the zero-padding border map of
conv chains (per-position tap counts), and backward
``Var(g_{l-1}) = n_{l+1} Var(W_{l+1}) Var(g_l) E[f'(s_l)^2]``, each expectation a Gaussian
quadrature (:func:`depthlab.theory.gaussian.normal_rule`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import lru_cache
from statistics import NormalDist
from typing import Any

import numpy as np
import torch
from torch import nn

from ..theory.gaussian import gaussian_rules, kinked_rule, normal_rule, shifted_normal_rule
from . import norms, pooling
from .chain import _CONV, _CONVT
from .layers import ActivationSpec, feature_axis


def _moments(spec: ActivationSpec | None, q: float, mean: float = 0.0
             ) -> tuple[float, float, float]:
    """``E[f(s)]``, ``E[f(s)^2]``, ``E[f'(s)^2]`` for ``s ~ N(mean, q)`` (identity without
    f: ``mean``, ``mean^2 + q``, 1)."""
    if spec is None:
        return mean, mean * mean + q, 1.0
    # the rule breaks at s = 0 and at the mean (a relu's kink inside a shifted panel was 1.8%
    # off at q 0.6, mean 0.3), and at any kink the activation spec names
    s, w = kinked_rule(q, mean, getattr(spec, "kinks", ()))
    st = torch.from_numpy(np.ascontiguousarray(s))
    a = spec.function(st).numpy()
    d = spec.derivative(st).numpy()
    am = a if spec.mean_function is None else spec.mean_function(st).numpy()
    return float(w @ am), float(w @ (a * a)), float(w @ (d * d))


def _bn_moments(norm: nn.Module, spec: ActivationSpec | None, qb: float,
                denom: float | None = None) -> tuple[float, float, float, float]:
    """Channel averages of ``E f(s)``, ``E f(s)^2``, ``Var f(s)`` and ``gamma^2 E f'(s)^2``
    for ``s ~ N(beta_c, gamma_c^2 qb / (denom + eps))`` (BN of a unit whose batch variance is
    ``denom``, default ``qb``, for examples whose variance about the batch mean is ``qb``; the
    module's own ``gamma_c``, ``beta_c``; 1 and 0 without affine parameters)."""
    denom = qb if denom is None else denom
    c = int(norm.num_features)
    if norm.affine:
        g = norm.weight.detach().to(torch.float64).cpu().numpy()
        b = norm.bias.detach().to(torch.float64).cpu().numpy()
    else:
        g, b = np.ones(c), np.zeros(c)
    r = qb / (denom + float(norm.eps)) if denom + norm.eps > 0 else 0.0
    pairs, counts = np.unique(np.stack([g, b], 1), axis=0, return_counts=True)
    return _pair_moments(pairs[:, 0], pairs[:, 1], counts / c, spec, r)


def _pair_moments(gs: np.ndarray, bs: np.ndarray, share: np.ndarray,
                  spec: ActivationSpec | None, r: float) -> tuple[float, float, float, float]:
    """The averages over the units' ``(gamma, beta)`` pairs (``share`` of the units each) of
    ``E f(s)``, ``E f(s)^2``, ``Var f(s)`` and ``gamma^2 E f'(s)^2`` for ``s ~ N(beta,
    gamma^2 r)`` (:func:`_bn_moments`)."""
    gs, bs = np.asarray(gs, np.float64), np.asarray(bs, np.float64)
    share = np.asarray(share, np.float64)
    var = gs * gs * r
    if spec is None:
        m, sq, dsq = bs, bs * bs + var, np.ones_like(bs)
    else:
        # every pair's quadrature in one pass: the rules built together
        # (:func:`~depthlab.theory.gaussian.gaussian_rules`), f and f' evaluated once on all
        # nodes (one Python call per pair was ~20 000 calls per prediction of a 16x256 BN MLP)
        flat = var == 0.0  # s = beta exactly
        rv, rb = var[~flat], bs[~flat]
        s, w, starts = gaussian_rules(rv, rb) if rv.size else (np.zeros(0), np.zeros(0),
                                                               np.zeros(0, np.intp))
        pts = np.concatenate([s, bs[flat]])
        st = torch.from_numpy(np.ascontiguousarray(pts, np.float64))
        a_all = spec.function(st).numpy()
        d_all = spec.derivative(st).numpy()
        # E f over an activation's random draws (RReLU in training: ``function`` holds the
        # root-mean-square slope, the mean slope here; with function's own mean Var f after
        # BN(beta 0) -> RReLU(-1, 1) was 0.64 for 0.51, the next BN's gradient 0.80x)
        am_all = a_all if spec.mean_function is None else spec.mean_function(st).numpy()
        a, d, am = a_all[:s.size], d_all[:s.size], am_all[:s.size]
        m, sq, dsq = np.empty_like(bs), np.empty_like(bs), np.empty_like(bs)
        if rv.size:
            m[~flat] = np.add.reduceat(w * am, starts)
            sq[~flat] = np.add.reduceat(w * (a * a), starts)
            dsq[~flat] = np.add.reduceat(w * (d * d), starts)
        a0 = a_all[s.size:]
        m[flat], sq[flat], dsq[flat] = am_all[s.size:], a0 * a0, d_all[s.size:] ** 2
    acc = [_dot(share, v) for v in (m, sq, np.maximum(sq - m * m, 0.0), gs * gs * dsq)]
    return tuple(acc)


def _bn_count(module: nn.Module, in_shape: Sequence[int] | None,
              out_shape: Sequence[int] | None = None) -> int | None:
    """The number of values BatchNorm normalizes each channel over after ``module``: the batch
    times the output positions (None where the input's shape is unknown)."""
    if in_shape is None or len(in_shape) < 2:
        return None
    if isinstance(module, (*_CONV, *_CONVT)):
        k = len(module.weight.shape) - 2
        if len(in_shape) < k + 2:
            return None
        return int(math.prod(in_shape[:-k - 1])) * _tap_counts(module, in_shape, out_shape)[2]
    return int(math.prod(in_shape[:-1]))


_CHI2_NODES = 4000  # log-spaced nodes of the batch variance's chi-square distribution


@lru_cache(maxsize=64)
def _chi2_grid(k: int, tail: float) -> tuple[np.ndarray, np.ndarray]:
    """Log-spaced nodes ``x`` of ``chi2_k`` from its ``tail`` quantile to its ``1 - 1e-14``
    one and weights ``pdf(x) x`` (normalised to 1): :func:`_bn_inverse`'s rule, computed once
    per ``(k, tail)`` (SciPy's quantiles and pdf were ~2 ms a BatchNorm layer, every run)."""
    from scipy.stats import chi2
    lo = float(chi2.ppf(tail, k))
    hi = float(chi2.isf(1e-14, k))
    t = np.linspace(math.log(max(lo, 1e-300)), math.log(hi), _CHI2_NODES)
    xs = np.exp(t)
    w = chi2.pdf(xs, k) * xs
    w = w / w.sum()
    xs.setflags(write=False)
    w.setflags(write=False)
    return xs, w


def _bn_inverse(qb_c: np.ndarray, eps: float, count: int | None,
                channels: int = 1, centered: bool = True) -> float:
    """``E |J^T g|^2 / (count Var(g))`` for BatchNorm's Jacobian ``J = (P - xhat xhat^T /
    count) / sigma`` (``P`` removes the batch mean, ``sigma^2 = var + eps``), averaged over the
    channels: ``E[(count - 2 + r^2) / (count (var + eps))]`` with ``r = eps / (var + eps)``
    (BN's backward removes the batch mean and the direction of ``xhat``, of which ``r`` is
    left) and the channel's batch variance ``var = qb_c chi2_{count-1} / count`` (Gaussian
    values). For a large ``count`` this is ``1 / (qb_c + eps)``; for a small batch it is not:
    ``(count - 2) / count`` of the gradient passes, but ``E[1 / var]`` exceeds ``1 / E var``
    (8 rows: ``1.2 / qb``; 2 rows: ``xhat = +-1`` whatever the input, and what passes is
    ``eps``'s share of ``d xhat / dx``, largest where the two values nearly coincide). For 2-3
    rows ``E[1 / var]`` is infinite but for ``eps``, and the mean over networks is set by
    channels rarer than the ``channels`` draws a measurement averages: the part of ``var``'s
    distribution below the ``1 / channels`` quantile is left out (the typical measurement;
    with it, 8 BN layers of 256 at 2 rows: layer 1's grad_pre_std 29x the 6 seeds' mean
    square). ``centered=False`` (RMSNorm: no mean removed): ``(count - 1 + r^2) / (count
    (ms + eps))`` with ``ms = qb_c chi2_count / count`` (:mod:`depthlab.torch.norms`)."""
    qb_c = np.asarray(qb_c, np.float64)
    c = 1 if centered else 0
    if count is None or count > 100_000:
        return float(np.mean(1.0 / (qb_c + eps)))
    if count < 1 + c:
        return 0.0
    k = count - c
    # 2-3 rows: E[1 / var] is infinite but for eps, and set by channels rarer than the
    # measurement's draws; 4 or more: the mean over networks (what seeds' mean squares give)
    tail = 1.0 / channels if k <= 2 and channels > 1 else 1e-14
    xs, w = _chi2_grid(k, tail)
    # the channels' qb_c on 1% levels (rounding errors average out over the channels)
    pos = qb_c > 0
    lv, inv = np.unique(np.round(np.log(np.where(pos, qb_c, 1.0)), 2), return_inverse=True)
    den = np.exp(lv)[:, None] * xs[None, :] / count + eps
    per = ((count - 1 - c + (eps / den) ** 2) / (count * den)) @ w
    zero = (count - c) / (count * eps) if eps > 0 else np.inf  # var = 0
    return float(np.mean(np.where(pos, per[inv.reshape(-1)], zero)))


def _apply(spec: ActivationSpec | None, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``f(s)`` and ``f'(s)`` on nodes (identity without ``f``)."""
    if spec is None:
        return s, np.ones_like(s)
    st = torch.from_numpy(np.ascontiguousarray(s, np.float64))
    return spec.function(st).numpy(), spec.derivative(st).numpy()


def _gauss_dist(spec: ActivationSpec | None, var: float, mean: float
                ) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of ``f(s)``, ``s ~ N(mean, var)``."""
    z, w = normal_rule(max(var, 0.0))
    return _apply(spec, z + mean)[0], w


def _dot(w: np.ndarray, a: np.ndarray) -> float:
    """``sum_i w_i a_i`` without BLAS (a multithreaded BLAS dot of 10^4 nodes took 35 ms on
    a busy 2-core machine, this 0.1 ms)."""
    return float(np.multiply(w, a).sum())


_UNIT_NODES = 32  # nodes of the distribution of a unit's mean over the batch (bias included)


def _equal_mass_atoms(k: int) -> tuple[np.ndarray, np.ndarray]:
    """``N(0, 1)`` as ``k`` equal-weight atoms, the means of its ``k`` equal-mass intervals
    ``phi(z_i) - phi(z_{i+1})`` times ``k`` (``z_i`` the ``i/k`` quantiles), rescaled to unit
    variance. Unlike Gauss-Hermite nodes (16 of them are ~0.5 apart and carry unequal weights),
    their spacing near 0 is ``~sqrt(2 pi) / k``, so a unit's mean spread over ``N(0, tw)``
    much wider than an activation's features (``tw`` >> the unit's batch variance) keeps
    them: 16 Gauss-Hermite atoms of ``N(0, 9)`` gave ``E tanh'(s)^2`` 0.35x its value."""
    nd = NormalDist()
    edges = np.array([0.0] + [nd.pdf(nd.inv_cdf(i / k)) for i in range(1, k)] + [0.0])
    z = (edges[:-1] - edges[1:]) * k
    return z / math.sqrt(float(np.mean(z * z))), np.full(k, 1.0 / k)


_ATOMS = _equal_mass_atoms(64)


def _spread_nodes(vals: np.ndarray, w: np.ndarray, var: float | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """At most :data:`_UNIT_NODES` quantile groups of ``vals`` (weights ``w``), their
    deviations from the mean rescaled so that the variance is ``var`` (default: that of
    ``vals``; grouping alone loses the spread within each group)."""
    w = w / w.sum()
    m = _dot(w, vals)
    if vals.max() == vals.min():  # one value (e.g. zero biases): one node
        return np.array([m]), np.ones(1)
    var = _dot(w, (vals - m) ** 2) if var is None else var
    gv, gw = pooling.compress(vals, w, _UNIT_NODES)
    gvar = float(gw @ (gv - m) ** 2)
    if gvar > 0:
        gv = m + (gv - m) * math.sqrt(var / gvar)
    return gv, gw


def _unit_nodes(qw: float, qb: float, shift: float, bias: torch.Tensor | None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nodes and weights of ``s = shift + b_j + W_j E_batch[a] + N(0, qb)`` over units and
    examples: the unit's mean over the batch is its own bias ``b_j`` (the layer's actual
    biases, as quantile groups: a uniform bias is not Gaussian, and a cubic-like activation
    such as Tanhshrink saw ``E f(s)^2`` 4x too large from a Gaussian of the same variance when
    the bias dominates) plus ``N(0, qw - qb)`` (the weights acting on the inputs' batch means,
    e.g. images in [0, 1]), and the example's deviation from it is ``N(0, qb)`` (``qb``: the
    unit's batch variance, ``qw``: the weights' whole part of the variance). Returns the
    nodes, their weights and where each unit mean's block of nodes starts."""
    if bias is None:
        mu, mw_ = np.zeros(1), np.ones(1)
    else:
        b = bias.reshape(-1).cpu().numpy()
        mu, mw_ = _spread_nodes(b, np.full(b.size, 1.0 / b.size))
    tw = max(qw - qb, 0.0)
    if tw > 1e-12 * max(qw, 1e-300):
        z, zw = _ATOMS
        mu, mw_ = _spread_nodes((mu[:, None] + math.sqrt(tw) * z[None, :]).ravel(),
                                (mw_[:, None] * zw[None, :]).ravel(),
                                float(mw_ @ (mu - mw_ @ mu) ** 2) + tw)
    if not qb > 0:
        return mu + shift, mw_, np.arange(mu.size)
    # rules with a breakpoint where s = 0 (a ReLU-family kink off a node was 5e-5 off)
    parts = [shifted_normal_rule(qb, float(m) + shift) for m in mu]
    s = np.concatenate([p[0] for p in parts])
    w = np.concatenate([p[1] * wk for p, wk in zip(parts, mw_)])
    return s, w, np.cumsum([0] + [p[0].size for p in parts[:-1]])


def _gauss_nodes(var: float, mean: float) -> tuple[np.ndarray, np.ndarray]:
    z, w = normal_rule(max(var, 0.0))
    return z + mean, w


def _weight_mean(name: str, numel: int, v: float, mw: float, fan: float) -> float:
    """The mean of a layer's weights as the theory uses it: 0 when it is within 4 standard
    errors of 0 (``mean^2 numel <= 16 Var(W)``: a zero-mean draw's sampling noise, which shifts
    no unit systematically), else ``mw``. A ValueError when ``fan mean^2 >= Var(W)`` (``fan``
    the larger of fan-in and fan-out): the common part of the units, ``mean(W) sum_j a_j`` per
    example (and its backward twin), then grows from layer to layer by up to that ratio and
    the independent-unit theory does not hold (weights N(0.02, 0.0625^2) in a 256-wide ReLU
    chain: pre_std 12x, grad_pre_std 5x off; e.g. ``nn.init.uniform_`` without bounds)."""
    var = max(v - mw * mw, 0.0)
    if mw * mw * numel <= 16.0 * var:
        return 0.0
    if fan * mw * mw >= var:
        raise ValueError(f"predict() models weights whose mean is small against their spread; "
                         f"layer {name!r} has weights of mean {mw:.3g} and std "
                         f"{math.sqrt(var):.3g} (fan {fan:g} * mean^2 / variance = "
                         f"{fan * mw * mw / var if var > 0 else math.inf:.3g} >= 1: its units "
                         "share a common part that grows with depth)")
    return mw


UNIT_SCALE_SPREAD = 0.05
"""The largest excess relative variance ``Var_j(v_j) / mean(v)^2`` of a layer's units' mean
squared weights ``v_j`` (rows; output channels of a conv) beyond i.i.d. sampling that
:func:`predict` accepts before an activation (:func:`_check_unit_scales`): an rms spread of
~22% of the units' weight scales. Measured, 5 tanh layers of 512 with rows scaled alternately
``1 -/+ a`` (3 seeds): a = 0.1 (excess 0.04) within 1.1% everywhere, a = 0.2 (0.15) act_std
0.967x and grad_pre_std 1.023x, a = 0.7 (0.88) act_std 0.75x and grad_pre_std 1.10x."""


def _homogeneous(spec: ActivationSpec) -> bool:
    """Whether ``f(c s) = c f(s)`` for ``c > 0`` (relu, leaky relu, a scalar PReLU): a unit's
    weight scale then factors out of ``E f(s)^2`` and ``E f'(s)^2``."""
    s = torch.tensor([-3.0, -1.0, -0.25, 0.25, 1.0, 3.0], dtype=torch.float64)
    return bool(torch.allclose(spec.function(2.0 * s), 2.0 * spec.function(s), rtol=1e-12,
                               atol=1e-12))


def _row_spread(sq: np.ndarray) -> float:
    """``Var_j(v_j) / mean(v)^2`` of the rows' means ``v_j`` of ``sq`` (ddof 1)."""
    ms = sq.mean(1)
    return float(ms.var(ddof=1)) / float(ms.mean()) ** 2


def _check_unit_scales(name: str, w64: torch.Tensor, spec: ActivationSpec,
                       offset: bool) -> None:
    """A ValueError when the units of a layer followed by an activation have weights of
    unequal scales beyond sampling noise, by more than :data:`UNIT_SCALE_SPREAD`: the theory
    gives every unit the same pre-activation variance ``n v E[a^2]``, which a unit-dependent
    scale (a custom init, rows rescaled by hand) breaks for any activation but a positively
    homogeneous one without offsets. The rows' relative variance of mean squares ``Var_j(v_j) /
    mean(v)^2`` is compared with its distribution when the same entries are shuffled over the
    matrix (i.i.d. weights: 99 shuffles from a fixed seed, the global generators untouched):
    refused when it exceeds their mean by :data:`UNIT_SCALE_SPREAD` and by 6 of their standard
    deviations (small layers, whose rows' scales spread by sampling alone: PyTorch's default
    init of Linear(12, 12) was refused 2 times in 300 at 99% confidence);
    the shuffles only run past a margin over ``(kurtosis - 1) / row length``, the i.i.d.
    expectation. Not checked below 32 rows or 32 entries per row."""
    rows = w64.detach().reshape(w64.shape[0], -1).cpu().numpy()
    m, k = rows.shape
    if m < 32 or k < 32 or (_homogeneous(spec) and not offset):  # too few to tell
        return
    sq = rows * rows
    v = float(sq.mean())
    if not v > 0:
        return
    spread = _row_spread(sq)
    if spread - max(float((sq * sq).mean()) / (v * v) - 1.0, 0.0) / k <= UNIT_SCALE_SPREAD:
        return
    gen = np.random.default_rng(0)
    flat = sq.ravel()
    null = np.array([_row_spread(gen.permutation(flat).reshape(m, k)) for _ in range(99)])
    if spread - null.mean() > max(UNIT_SCALE_SPREAD, 6.0 * float(null.std(ddof=1))):
        lo, hi = float(sq.mean(1).min()), float(sq.mean(1).max())
        raise ValueError(f"predict() models layers whose units share one weight scale; the "
                         f"{m} units of layer {name!r} have mean squared weights from "
                         f"{lo:.3g} to {hi:.3g} (relative variance {spread:.3g}, i.i.d. "
                         f"weights {null.mean():.3g}): with {spec.name} after it, units of "
                         "unequal scales saturate unequally, which one variance per layer "
                         "does not describe (a custom or hand-rescaled init)")


def _weight_stats(seg: dict, w64: torch.Tensor, rows: bool = False) -> Any:
    """``mean(W^2)``, ``mean(W)``, ``mean(b^2)``, ``mean(b)`` of the layer (``w64``: its
    weights in float64; ``rows``: each output unit's ``mean_j W_j^2``), computed once per
    segment while its weight and bias are unchanged (same storage and in-place version
    counter): :func:`~depthlab.torch.predict.predict` runs :func:`_forward` on each segment
    for every group of examples, and squaring ResNet-18's weights each time was a large part of
    it. Only these numbers are kept, no copy of the weights."""
    m = seg["module"]
    key = tuple((t.data_ptr(), t._version) if t is not None else None
                for t in (m.weight, m.bias))
    hit = seg.get("_weight_stats")
    if hit is None or hit[0] != key:
        b64 = None if m.bias is None else m.bias.detach().to(torch.float64)
        stats = (float(w64.pow(2).mean()), float(w64.mean()),
                 0.0 if b64 is None else float(b64.pow(2).mean()),
                 0.0 if b64 is None else float(b64.mean()))
        hit = seg["_weight_stats"] = [key, stats, None]
    if not rows:
        return hit[1]
    if hit[2] is None:
        hit[2] = _unit_rows(m, w64).pow(2).mean(1).cpu().numpy()
    return hit[2]


def _forward(seg: dict, prev: tuple, rows: list[dict]) -> tuple:
    """Append the layer's row and return ``(E[a^2], E[a], batch variance of a, distribution
    of a)`` of its output (the distribution, nodes and weights, is what a skip carries).
    ``q = n Var(W) E[a_prev^2] + Var(b)`` (``pre_std``; ``s ~ N(n mean(W) E[a_prev] +
    mean(b), q)``); the batch variance of a unit of ``s`` is
    ``qb = n v qb_prev`` (a unit's mean ``W E[a]`` and the bias are constant over the batch);
    after BatchNorm ``Var(dL/ds) = mean_c gamma_c^2 E[f'(s_c)^2] / (qb + eps)`` times
    ``Var(dL/da)`` (``dsq``)."""
    prev = _between_forward(seg, prev)
    prev_sq, prev_mean, prev_bvar = prev[:3]
    m = seg["module"]
    w64 = m.weight.detach().to(torch.float64)
    b64 = None if m.bias is None else m.bias.detach().to(torch.float64)
    v, mw, b2, mb = _weight_stats(seg, w64)
    fan_in, fan_out, spread = _fans(m, seg.get("in_shape"), seg.get("out_shape"))
    mw = _weight_mean(seg["name"], w64.numel(), v, mw, max(fan_in, fan_out))
    # zero padding: the input's E[a^2] is lower at the border, which fewer outputs read
    mats = (_tap_matrices(m, seg.get("in_shape"), seg.get("out_shape"))
            if not seg["_between"] else None)
    prof_in = seg.pop("_prof_in", None)
    prof_out = d_prof = hole = jensen = None
    if mats is not None:
        ones = np.ones([mm.shape[1] for mm in mats])
        a1 = _along(mats, ones)
        u = prof_in if prof_in is not None and prof_in.shape == ones.shape else ones
        au = _along(mats, u)
        fan_w = fan_in * (v - mw * mw) * prev_sq  # before the correction
        fan_in *= float(au.mean()) / float(a1.mean())
        act = seg["activation"]
        qmap = fan_w * au / float(a1.mean()) + max(b2 - mb * mb, 0.0)
        q_mean = float(qmap.mean())
        if seg.get("norm") is None and act is not None and q_mean > 0:
            # positions no tap reaches (a ConvTranspose's output padding, a strided one's
            # gaps) hold the constant shift: a point mass there (:func:`_holes`)
            hole = qmap <= 1e-12 * float(qmap.max())
            hole = hole if hole.any() else None
        if seg.get("norm") is None and q_mean > 0:
            if act is None or _homogeneous(act):
                prof_out = qmap / q_mean
            s_mean = fan_in * mw * prev_mean + mb
            on = qmap > 0 if hole is None else ~hole
            if act is not None and prof_out is not None and s_mean == 0.0:
                # homogeneous, centred: E f = c sqrt(q), E f^2 and E f'^2 linear and constant
                qr = qmap[on]
                jensen = np.array([_moments(act, 1.0)[0] * float(
                    np.sqrt(qr).mean() - math.sqrt(qr.mean())), 0.0, 0.0])
            elif act is not None:  # E f, E f^2, E f'^2 per position, at ~1% levels of q(p)
                rel = np.round(qmap / q_mean, 2)
                lv, inv = np.unique(rel, return_inverse=True)
                mom = np.array([_moments(act, float(r) * q_mean, s_mean) for r in lv])
                per = np.moveaxis(mom[inv.reshape(rel.shape)], -1, 0)
                # the reached positions' mean of each moment less its value at their mean
                # variance (which the row integrates): E f = c sqrt(q_p) of a ReLU averages
                # to less than c sqrt(mean q) (a ConvTranspose's 1, 2, 4 taps: act_std 1.015x)
                ref = _moments(act, float(rel[on].mean()) * q_mean, s_mean)
                jensen = per[:, on].mean(1) - np.array(ref)
                a2, d2 = per[1], per[2]
                if prof_out is None and a2.mean() > 0 and d2.mean() > 0:
                    prof_out = a2 / a2.mean()
                    d_prof = d2 / d2.mean()
    # s ~ N(n mean(W) E[a] + mean(b), n Var(W) E[a^2] + Var(b)) over units and examples: the
    # weights' and biases' common means shift every unit alike (they were taken for random
    # ones: a constant bias 2 made ReLU gradients 2x off)
    q = fan_in * (v - mw * mw) * prev_sq + b2 - mb * mb
    shift = fan_in * mw * prev_mean + mb
    qb = fan_in * v * prev_bvar + spread * v * prev_mean ** 2
    # the part of each unit's mean over the batch that its random weights make (W_j E[a]):
    # one draw per unit, whose spread the measurement takes about the layer's own average of
    # them, so it sees (1 - 1/n) of it for n units (:func:`_finite_units`)
    tw = max(max(fan_in * (v - mw * mw) * prev_sq, 0.0) - qb, 0.0)
    units = max(int(_unit_rows(m, w64).shape[0]), 1)
    a_fin = 0.0  # BatchNorm: the channels' actual gamma and beta, an exact average
    pool_fix = None  # a per-example norm's moments for a pool above it (:func:`pool_factor`)
    pool_src = None  # ... and its (gamma, beta) nodes, for an activation after a residual sum
    norm = seg.get("norm")
    spec = seg["activation"]
    if norm is not None and isinstance(norm, norms.PER_EXAMPLE):
        # LayerNorm/GroupNorm/RMSNorm after the layer: each example divided by its own
        # sigma^2 over its n values (:mod:`depthlab.torch.norms`), no batch pool
        nspec = norms.norm_spec(norm, seg.get("out_shape"), feature_axis(m))
        s2 = norms.sigma2(nspec, q + shift * shift, shift, qb)
        den = s2 + nspec.eps
        r = (s2 if nspec.centered else max(q, 0.0)) / den if den > 0 else 0.0
        mhat = 0.0 if nspec.centered or not den > 0 else shift / math.sqrt(den)
        g_p, b_p, share = nspec.pairs()
        b_p = b_p + g_p * mhat  # RMSNorm keeps the mean: E[xhat] = shift / sqrt(ms + eps)
        mean, sq, var_f, gdsq = _pair_moments(g_p, b_p, share, spec, r)
        # a unit's batch variance: the part of sigma^2 that varies over the batch
        bvar = var_f * (min(qb / s2, 1.0) if s2 > 0 else 0.0)
        inv = norms.inverse(nspec, s2)
        dsq = gdsq * inv
        parts = [_gauss_nodes(gc * gc * r, bc) for gc, bc in zip(g_p, b_p)]
        s_nodes = np.concatenate([p[0] for p in parts])
        s_w = np.concatenate([p[1] * k for p, k in zip(parts, share)])
        g2 = np.concatenate([np.full(p[0].size, gc * gc) for p, gc in zip(parts, g_p)])
        nodes = (s_nodes, s_w, g2, inv)
        a_all, d_all = _apply(spec, s_nodes)
        dist = pooling.compress(a_all, s_w)
        at = np.cumsum([0] + [pv.size for pv, _ in parts])
        per_unit = [(k, a_all[i:j], pw) for (_, pw), k, i, j in zip(parts, share, at[:-1],
                                                                     at[1:])]
        pool_fix = _pool_moments(nspec, g_p, b_p - g_p * mhat, share, s_nodes, d_all, at,
                                 gdsq, r, den)
        pool_src = (g_p, b_p - g_p * mhat, share, s_nodes, at, r)
    elif norm is not None:
        # a group of examples (:func:`_input_groups`) is divided by the batch's variance,
        # found by the run over the whole batch (``_bn_pool``); its own ``qb`` scales it
        pool = seg.get("_bn_pool")
        denom = qb if pool is None else pool[0]
        mean, sq, bvar, gdsq = _bn_moments(norm, spec, qb, denom)
        # each channel is divided by its own batch std: qb_c from the channel's own mean
        # squared weight (E[1 / qb_c] > 1 / E[qb_c] when few inputs feed a channel, e.g. a
        # first conv with 2 input channels: the gradient is larger than 1 / mean qb says)
        v_c = _weight_stats(seg, w64, rows=True)
        qb_c = fan_in * v_c * prev_bvar + spread * v_c * prev_mean ** 2
        count = _bn_count(m, seg.get("in_shape"), seg.get("out_shape"))
        inv = _bn_inverse(qb_c if v_c.size == norm.num_features else np.array([qb]),
                          float(norm.eps), count, int(norm.num_features))
        if pool is None:
            seg["_bn_pool"] = (qb, inv)
        else:
            inv = pool[1]
        dsq = gdsq * inv
        # the channels' mixture of f(N(beta_c, gamma_c^2 r))
        c = int(norm.num_features)
        g = (norm.weight.detach().to(torch.float64).cpu().numpy() if norm.affine
             else np.ones(c))
        b = (norm.bias.detach().to(torch.float64).cpu().numpy() if norm.affine
             else np.zeros(c))
        r = qb / (denom + float(norm.eps)) if denom + norm.eps > 0 else 0.0
        pairs, counts = np.unique(np.stack([g, b], 1), axis=0, return_counts=True)
        parts = [_gauss_nodes(gc * gc * r, bc) for gc, bc in pairs]
        s_nodes = np.concatenate([p[0] for p in parts])
        s_w = np.concatenate([p[1] * k / c for p, k in zip(parts, counts)])
        g2 = np.concatenate([np.full(p[0].size, gc * gc) for p, (gc, _) in zip(parts, pairs)])
        nodes = (s_nodes, s_w, g2, inv)
        a_all = _apply(spec, s_nodes)[0]
        dist = pooling.compress(a_all, s_w)
        # each channel's own distribution (a max pool's window reads one channel)
        at = np.cumsum([0] + [pv.size for pv, _ in parts])
        per_unit = [(k / c, a_all[i:j], pw) for (_, pw), k, i, j in zip(parts, counts, at[:-1],
                                                                         at[1:])]
    else:
        if spec is not None:
            _check_unit_scales(seg["name"], _unit_rows(m, w64), spec,
                               mw != 0.0 or (b64 is not None and bool(b64.any())))
        qw = max(fan_in * (v - mw * mw) * prev_sq, 0.0)
        reach = 1.0 - float(hole.mean()) if hole is not None else 1.0
        # the reached positions' variances (the holes' share of the mean is 0)
        qw, qb_r = qw / reach, qb / reach
        s_nodes, s_w, starts = _unit_nodes(qw, min(qb_r, qw), fan_in * mw * prev_mean, b64)
        a, d = _apply(spec, s_nodes)
        # over units and examples s is b_j + N(shift, qw): the units' means (atoms of
        # N(0, tw), each smoothed by the batch's N(0, qb)) are needed only for what a unit
        # holds over the batch (its batch variance, a max pool's window and its gradient's
        # table); E f, E f^2, E f'^2 and the distribution a skip carries are of that mixture,
        # integrated as one Gaussian per bias group (with tw >> qb the atoms resolve no
        # feature of f narrower than their spacing: tanh after inputs of mean 5, std 0.01
        # had E f'^2 0.38x, layer 1's grad_pre_std predicted 0.62x the measurement)
        if tw > 0:
            e_nodes, e_w, _ = _unit_nodes(qw, qw, fan_in * mw * prev_mean, b64)
            ea, ed = _apply(spec, e_nodes)
        else:
            e_nodes, e_w, ea, ed = s_nodes, s_w, a, d
        if spec is None:
            mean, sq, dsq, bvar = shift, shift * shift + q, 1.0, qb
        else:
            # E f over an activation's random draws (RReLU in training: the mean slope's;
            # ``a`` holds the root-mean-square slope's values, the draws' E f^2)
            def mean_f(nodes_: np.ndarray, vals: np.ndarray) -> np.ndarray:
                return vals if spec.mean_function is None else spec.mean_function(
                    torch.from_numpy(np.ascontiguousarray(nodes_, np.float64))).numpy()

            am = mean_f(s_nodes, a)
            mean, sq, dsq = _dot(e_w, mean_f(e_nodes, ea)), _dot(e_w, ea * ea), _dot(e_w, ed * ed)
            # the batch variance of a unit: its variance around its own mean (bias and
            # W_j E[a] held), averaged over the units (on the units' atoms throughout)
            wu = np.add.reduceat(s_w, starts)
            mu = np.add.reduceat(am * s_w, starts) / np.where(wu > 0, wu, 1.0)
            mu2 = float(wu @ (mu * mu))
            bvar = _dot(s_w, a * a) - mu2
        if spec is None:
            a_fin = tw / units
        elif tw > 0:  # the units' spread of E_batch f(s), the weights' share of it
            varb = max(b2 - mb * mb, 0.0)
            a_fin = max(mu2 - _dot(s_w, am) ** 2, 0.0) * tw / (tw + varb) / units
        # (a max pool's table of the unit's value is built on the units' atoms: read there)
        nodes = (s_nodes, s_w, np.ones_like(s_nodes), 1.0)
        dist = pooling.compress(ea, e_w)
        # each unit's own distribution (its mean over the batch held: a max pool's window
        # reads one unit, not draws of the mixture over units)
        ends = np.append(starts[1:], s_w.size)
        per_unit = []
        for i, j in zip(starts, ends):
            if j > i:
                share = float(s_w[i:j].sum())
                per_unit.append((share, a[i:j], s_w[i:j] / max(share, 1e-300)))
        if jensen is not None:
            mean, sq, dsq = mean + jensen[0], max(sq + jensen[1], 0.0), max(dsq + jensen[2], 0.0)
        if hole is not None:
            mean, sq, dsq, bvar, nodes, dist, per_unit, prof_out, d_prof = _holes(
                spec, hole, mb, (mean, sq, dsq, bvar), (e_nodes, ea, e_w), nodes, per_unit,
                prof_out, d_prof)
            a_fin *= 1.0 - float(hole.mean())
    seg["_prof_out"] = prof_out
    rows.append({"layer": seg["index"], "module": seg["name"], "q": q, "shift": shift,
                 "sq": sq, "mean": mean, "act_var": max(sq - mean * mean, 0.0), "dsq": dsq, "v": v,
                 "fan_out": fan_out,
                 # (an activation after a max pool: no tensor of the model holds f(s))
                 "act": (seg["activation"] is not None or norm is not None)
                 and not seg.get("pooled_act"),
                 "nodes": nodes, "spec": spec, "between": seg["_between"],
                 "q_fin": tw / units, "a_fin": a_fin, "mats": mats,
                 "plain": prof_out is not None, "d_prof": d_prof, "pool_fix": pool_fix,
                 "pool_src": pool_src})
    return sq, mean, max(bvar, 0.0), dist, per_unit


def _holes(spec: ActivationSpec, hole: np.ndarray, s0: float, moments: tuple,
           dist_in: tuple, nodes: tuple, per_unit: list, prof: np.ndarray | None,
           d_prof: np.ndarray | None) -> tuple:
    """The moments of a layer's output whose positions ``hole`` (a share ``z`` of them)
    receive no tap (a ``ConvTranspose``'s output padding or a strided one's gaps): there
    ``s = s0`` exactly (the bias, or 0), so ``E f = (1 - z) E_reached f + z f(s0)``, likewise
    ``E f^2`` with ``f(s0)^2`` and ``E f'^2`` with torch's own ``f'(s0)^2`` (ReLU'(0) = 0:
    the Gaussian's 1/2 everywhere made layer 1's grad_pre_std 1.09x the measurement), the
    batch variance ``(1 - z) bvar`` (the holes are constant), and the per-position maps of
    ``E f^2``, ``E f'^2`` (mean 1) hold ``f(s0)^2``, ``f'(s0)^2`` at the holes. ``moments``
    ``(E f, E f^2, E f'^2, bvar)`` and ``dist_in`` (``s`` nodes, ``f`` on them, weights) are
    those of the reached positions. Returns ``(E f, E f^2, E f'^2, bvar, nodes, dist,
    per_unit, prof, d_prof)``."""
    z = float(hole.mean())
    keep = 1.0 - z
    f0, d0 = (float(u[0]) for u in _apply(spec, np.array([s0], np.float64)))
    m0 = f0 if spec.mean_function is None else float(
        spec.mean_function(torch.tensor([s0], dtype=torch.float64))[0])
    mean, sq, dsq, bvar = moments
    e_nodes, ea, e_w = dist_in
    out = (keep * mean + z * m0, keep * sq + z * f0 * f0, keep * dsq + z * d0 * d0,
           keep * bvar)
    s_nodes, s_w, g2, scale = nodes
    nodes = (np.append(s_nodes, s0), np.append(s_w * keep, z), np.append(g2, 1.0), scale)
    dist = pooling.compress(np.append(ea, f0), np.append(e_w / e_w.sum() * keep, z))
    per_unit = [(share, np.append(vals, f0), np.append(w * keep, z))
                for share, vals, w in per_unit]
    maps = []
    for base, inside, at in ((prof, sq, f0 * f0), (d_prof, dsq, d0 * d0)):
        base = np.ones(hole.shape) if base is None else base
        ref = float(base[~hole].mean())
        m = np.where(hole, at, inside * base / ref if ref > 0 else inside)
        maps.append(m / float(m.mean()) if m.mean() > 0 else None)
    return (*out, nodes, dist, per_unit, *maps)


def _pool_moments(nspec: norms.NormSpec, g_p: np.ndarray, beta: np.ndarray, share: np.ndarray,
                  s_nodes: np.ndarray, d_all: np.ndarray, at: np.ndarray, m2: float,
                  r: float, den: float) -> tuple[float, ...]:
    """The moments that :func:`pool_factor` needs of a per-example norm followed by the
    activation ``f``, ``y_j = gamma_j xhat_j + beta_j``: ``A = mean_j gamma_j^2 E[f'(y_j)]^2``,
    ``B = mean_j gamma_j^2 E[xhat_j f'(y_j)]^2``, ``D = mean_j gamma_j^2 E[xhat_j^2 f'(y_j)^2]``
    (over the units' ``(gamma, beta)`` pairs), ``m2 = mean_j gamma_j^2 E[f'(y_j)^2]``, with
    ``n``, ``c`` (1: centered), ``r = mean xhat^2``, ``r' = eps / (sigma^2 + eps)`` and ``k``
    (units per group)."""
    acc = np.zeros(5)
    for gc, bc, k, i, j in zip(g_p, beta, share, at[:-1], at[1:]):
        if gc == 0.0 or j <= i:
            continue
        _, w = _gauss_nodes(gc * gc * r, 0.0)
        xh = (s_nodes[i:j] - bc) / gc
        d = d_all[i:j]
        acc += k * gc * gc * np.array([_dot(w, d) ** 2, _dot(w, xh * d) ** 2,
                                       _dot(w, xh * xh * d * d),
                                       *_explained(w, xh, d, r)])
    rp = nspec.eps / den if den > 0 else 1.0
    a, b, d, el, em = (float(v) for v in acc)
    return (a, b, d, float(m2), float(nspec.n), 1.0 if nspec.centered else 0.0,
            float(r), float(rp), float(nspec.k), el, em)


def _explained(w: np.ndarray, xh: np.ndarray, d: np.ndarray, r: float) -> tuple[float, float]:
    """The parts of ``Var(d)`` and ``Var(xhat d)`` (over the nodes ``xhat ~ N(0, r)``, weights
    ``w``) that are linear in ``xhat`` and in ``(xhat, xhat^2 - r)``: ``L = E[xhat d]^2 / r``,
    ``M = E[xhat^2 d]^2 / r + (E[xhat^3 d] - r E[xhat d])^2 / (2 r^2)``. A group's ``xhat``
    sums to 0 and its squares to ``n r``, so these parts of a window's mean do not vary as
    independent draws would: :func:`pool_factor` takes them with the finite-population factor
    ``1 - S / n``."""
    if r <= 0:
        return 0.0, 0.0
    e1, e2, e3 = _dot(w, xh * d), _dot(w, xh * xh * d), _dot(w, xh ** 3 * d)
    return e1 * e1 / r, e2 * e2 / r + (e3 - r * e1) ** 2 / (2.0 * r * r)


def sum_pool_moments(fix: tuple[float, ...], src: tuple,
                     deriv: Callable[[np.ndarray], np.ndarray],
                     xv: np.ndarray, xw: np.ndarray) -> tuple[float, ...]:
    """:func:`_pool_moments` of a per-example norm that ends a residual branch, whose output
    ``y_j = gamma_j xhat_j + beta_j`` is added to the other path's value ``x`` (independent at
    initialization: nodes ``xv``, weights ``xw``) before the block's activation ``post``
    (identity without one; ``deriv(s)`` = ``post'(s) h(post(s))``, ``h`` the relative size of
    the pooled gradient at the block's output value, :func:`depthlab.torch.predict._run`):
    ``u_p = gamma_j g post'(x_p + y_p)``, so ``A = mean_j gamma_j^2
    E[post'(x + y_j)]^2``, ``B = mean_j gamma_j^2 E[xhat_j post'(x + y_j)]^2``, ``D = mean_j
    gamma_j^2 E[xhat_j^2 post'^2]``, ``m2 = mean_j gamma_j^2 E[post'^2]`` (expectations over
    ``xhat_j`` and ``x``); the other entries of ``fix`` (``n, c, r, r', k``) are the norm's.
    Without ``post`` a spatially constant gradient is all mean: GroupNorm(C, C) passes none
    of it (``A = m2``)."""
    g_p, beta, share, s_nodes, at, r = src
    acc = np.zeros(6)
    xw = np.asarray(xw, float) / max(float(np.sum(xw)), 1e-300)
    for gc, bc, k, i, j in zip(g_p, beta, share, at[:-1], at[1:]):
        if gc == 0.0 or j <= i:
            continue
        _, w = _gauss_nodes(gc * gc * r, 0.0)
        y = s_nodes[i:j]
        xh = ((y - bc) / gc)[:, None]
        d = deriv((y[:, None] + np.asarray(xv)[None, :]).ravel()).reshape(y.size, -1)
        ww = w[:, None] * xw[None, :]
        acc += k * gc * gc * np.array([_dot(ww, d) ** 2, _dot(ww, xh * d) ** 2,
                                       _dot(ww, xh * xh * d * d), _dot(ww, d * d),
                                       *_explained(ww, xh, d, r)])
    a, b, d2, m2, el, em = (float(v) for v in acc)
    return (a, b, d2, m2, *fix[4:9], el, em)


def pool_factor(moments: tuple[float, ...], ratio: float, phi: float = 1.0
                ) -> tuple[float, float]:
    """The factor on a per-example norm's ``Var(dL/dx)`` (:func:`depthlab.torch.norms.inverse`
    takes ``dL/dxhat`` isotropic) when the gradient reaching its activation is, for a share
    ``phi`` of its variance, alike over windows of ``S = 1 / ratio`` positions (an average
    pool reads the activation: ``phi = 1``; a global average pool: ``S`` = all positions), and
    the share of ``Var(dL/dx)`` that is alike over a channel's positions (what a conv under
    it carries down: ``phi`` of the layer below). Returns ``(factor, phi_below)``.

    The pool sends ``g_w`` alike to the ``S`` positions of window ``w``, so ``u_p =
    dL/dxhat_p = gamma_j g_w f'(y_p)`` and ``J^T u = (u - mean(u) - xhat mean(u xhat)) / s``
    gives, per value, ``E|J^T u|^2 s^2 / n = E u^2 - c E[mean(u)^2] - (2 - r) E[mean(u
    xhat)^2]``. A group of ``n`` values holds ``n / S`` independent ``g_w`` (``k`` channels
    times the windows), each averaged over its ``S`` positions: ``E[mean(u)^2] = Var(g) (A +
    (m2 - A) / S) S / n``, ``E[mean(u xhat)^2] = Var(g) (B + (D - B) / S) S / n``
    (:func:`_pool_moments`), ``E u^2 = Var(g) m2``; the isotropic rest (``1 - phi``) loses
    ``(c + (2 - r) r) / n``:

    ``kept = 1 - phi S (c (A + (m2 - A) / S) + (2 - r) (B + (D - B) / S)) / (n m2) - (1 -
    phi) (c + (2 - r) r) / n``, ``factor = kept / ((n - 1 - c + r'^2) / n)``

    (``r = 1 - r'``: the isotropic case's own ``(n - 1 - c + r'^2) / n`` at ``phi = 0``).
    GroupNorm(C, C) -> ReLU -> global pool, ``S = n``: ``1 - 1/2 - 1/pi = 0.18``,
    grad_pre_std ``0.43x`` the isotropic one; tanh ``1 - E[f']^2 / E[f'^2]``. What stays alike
    over a channel's positions of ``dL/dx`` is its channel's ``gamma g E[f']`` less the group's
    mean of them: ``phi_below = phi c' A (1 - 1/k) / (m2 kept)`` (``c' = 1`` where the group
    mean is removed, ``1/k`` otherwise; 0 at one channel per group, which removes it all); a
    conv's transposed taps keep the share (their ``9`` independent weights times one value
    have the variance of ``9`` independent values)."""
    a, b, d, m2, n, c, r, rp, k = moments[:9]
    el, em = moments[9:11] if len(moments) >= 11 else (0.0, 0.0)
    s = 1.0 / ratio if ratio > 0 else n
    s = min(max(s, 1.0), n)
    if m2 <= 0 or n <= 1:
        return 1.0, 0.0
    iso = (n - 1 - c + rp * rp) / n
    pooled = s * (c * (a + (m2 - a) / s - el / n)
                  + (2.0 - r) * (b + (d - b) / s - em / n)) / (n * m2)
    kept = max(1.0 - phi * pooled - (1.0 - phi) * (c + (2.0 - r) * r) / n, 1e-12)
    keep_c = (1.0 - 1.0 / k) if c else 1.0
    below = min(max(phi * a * keep_c / (m2 * kept), 0.0), 1.0)
    return (kept / iso if iso > 0 else 1.0), below


def _finite_units(rows: list[dict]) -> list[tuple[float, float]]:
    """Per row, what the measured ``pre_std^2`` and ``act_std^2`` miss of the predicted
    variances: the measurement is the spread (ddof = 0) of all entries about their own mean,
    and the units' means ``b_j + W_j E_batch[a]`` are ``n`` draws (``n`` = ``out_features`` or
    ``out_channels``), whose average of squared deviations about their own average is
    ``(1 - 1/n)`` of their variance ``tw`` (the biases are taken as they are: no loss). So
    ``E[measured Var(s)] = q - tw / n`` (likewise for ``f(s)``, scaled by the weights' share of
    the units' spread). A one-unit output after a ReLU layer: ``E[a]^2 / E[a^2] = 1/pi`` of
    ``q`` is its mean over the batch, and pre_std was predicted 1.21x the measurement (3 units
    1.08x, 10 units 1.02x; more where the examples are correlated, deep in a net)."""
    return [(r.get("q_fin", 0.0), r.get("a_fin", 0.0)) for r in rows]


def _between_forward(seg: dict, state: tuple) -> tuple:
    """The state after the pooling/dropout modules before the segment (kept with the
    distributions each reads and makes, ``seg["_between"]``, for the backward pass)."""
    items = []
    for b in pooling.commuted(seg.get("between", [])):
        if b.kind == "norm":  # LayerNorm/GroupNorm/RMSNorm: the backward reads the state
            nxt = norms.forward(b.norm, state)
            items.append((b, state[3], nxt[3], state))
        else:
            nxt = pooling.forward(b, state)
            items.append((b, state[3], nxt[3], state[4] if len(state) > 4 else None))
        state = nxt
    seg["_between"] = items
    return state


def _between_backward(items: list, g: float, t: pooling.Table | None
                      ) -> tuple[float, pooling.Table | None]:
    """``Var(dL/da)`` (mean and table of the unit's value) before the pooling/dropout modules
    of a segment from the one after them (:func:`depthlab.torch.pooling.backward`)."""
    for b, din, dout, units in reversed(items):
        if b.kind == "norm":
            g, t = norms.backward(b.norm, g, t, din, dout, units)
        else:
            g, t = pooling.backward(b, g, t, din, dout, units)
    return g, t


def _backward(rows: list[dict], grad: list[float], j: int, g_out: float,
              v_of_a: tuple[np.ndarray, np.ndarray] | None = None
              ) -> tuple[float, pooling.Table | None]:
    """``Var(dL/ds_j) = Var(dL/da_j) E[f_j'^2]`` (through BN as in :func:`_forward`); returns
    ``Var(dL/d input of layer j)`` = ``m_j v_j Var(dL/ds_j)``, taken back through the
    pooling/dropout modules before the layer (mean, and table of the unit's value where it
    depends on it: after max pooling). With ``v_of_a`` (the output
    feeds identity skips, whose gradient depends on the unit's own value ``a``):
    ``E[gamma^2 f'(s)^2 Var(dL/da | a = f(s))] / (qb + eps)`` (no BN: ``gamma = 1``, no
    division) instead of the product of the means."""
    if v_of_a is None:
        grad[j] = g_out * rows[j]["dsq"]
    else:
        s_nodes, w, g2, scale = rows[j]["nodes"]
        a, d = _apply(rows[j]["spec"], s_nodes)
        grad[j] = scale * _dot(w, g2 * d * d * np.interp(a, v_of_a[0], v_of_a[1]))
    return _between_backward(rows[j]["between"], rows[j]["fan_out"] * rows[j]["v"] * grad[j],
                             None)


def _path_forward(layers: list[dict], state: tuple, rows: list[dict]) -> tuple:
    for layer in layers:
        state = _forward(layer, state, rows)
    return state


def _path_backward(rows: list[dict], grad: list[float], first: int, last: int,
                   g: float) -> float:
    t = None
    for j in range(last - 1, first - 1, -1):
        g, t = _backward(rows, grad, j, g, t)
    return g


def _transposed_taps(module: nn.Module, in_shape: Sequence[int] | None,
                     out_shape: Sequence[int] | None) -> list[np.ndarray] | None:
    """Per spatial dimension of a ``ConvTranspose``, ``M[o, i]`` = the number of its kernel's
    taps by which output position ``o`` receives input position ``i`` (``o = i S - P + k D``
    for tap ``k``, ``0 <= o < L_out``; ``L_out`` the output's own length, else torch's
    ``(L - 1) S - 2 P + D (K - 1) + output_padding + 1``); None without a known input shape.
    Unlike a conv's, its counts differ between interior positions too (kernel 3, stride 2:
    1 and 2 taps in turn), and the cropped border (``padding``) reads fewer."""
    k = [int(d) for d in module.weight.shape[2:]]
    if in_shape is None or len(in_shape) < len(k):
        return None
    size = [int(d) for d in in_shape[-len(k):]]
    outs = ([int(d) for d in out_shape[-len(k):]] if out_shape is not None
            and len(out_shape) >= len(k) else
            [(L - 1) * S - 2 * P + D * (K - 1) + op + 1 for L, K, S, P, D, op in
             zip(size, k, module.stride, module.padding, module.dilation,
                 module.output_padding)])
    mats = []
    for L, K, S, P, D, o in zip(size, k, module.stride, module.padding, module.dilation, outs):
        pos = np.arange(L)[:, None] * S - P + np.arange(K)[None, :] * D  # output written
        mm = np.zeros((o, L))
        for col in range(K):
            ok = (pos[:, col] >= 0) & (pos[:, col] < o)
            np.add.at(mm, (pos[ok, col], np.arange(L)[ok]), 1.0)
        mats.append(mm)
    return mats


def _transposed_counts(module: nn.Module, in_shape: Sequence[int] | None,
                       out_shape: Sequence[int] | None) -> tuple[float, float, int, int]:
    """:func:`_tap_counts` of a ``ConvTranspose``: ``N_k`` = the number of input positions
    whose tap ``k`` lands inside the output; without a known shape every tap lands
    (``N_k = P_in``, an output position receives ``prod(K) / prod(S)`` taps on average)."""
    k = [int(d) for d in module.weight.shape[2:]]
    mats = _transposed_taps(module, in_shape, out_shape)
    if mats is None:
        return float(math.prod(k)), float(math.prod(k)), math.prod(module.stride), 1
    s1 = s2 = 1.0
    p_out = p_in = 1
    for mm, L, K, S, P, D in zip(mats, [int(d) for d in in_shape[-len(k):]], k, module.stride,
                                 module.padding, module.dilation):
        o = mm.shape[0]
        pos = np.arange(L)[:, None] * S - P + np.arange(K)[None, :] * D
        n_k = ((pos >= 0) & (pos < o)).sum(0)
        s1, s2 = s1 * float(n_k.sum()), s2 * float((n_k * n_k).sum())
        p_out, p_in = p_out * o, p_in * L
    return s1, s2, p_out, p_in


def _tap_counts(module: nn.Module, in_shape: Sequence[int] | None,
                out_shape: Sequence[int] | None = None) -> tuple[float, float, int, int]:
    """Zero padding: ``N_k`` = number of output positions at which kernel tap ``k`` reads
    inside the input. Returns ``(sum_k N_k, sum_k N_k^2, P_out, P_in)`` (products over the
    spatial dimensions); without zero padding (or without a known input shape) every tap is
    always inside (``N_k = P_out``). A ``ConvTranspose``: :func:`_transposed_counts`."""
    if isinstance(module, _CONVT):
        return _transposed_counts(module, in_shape, out_shape)
    k = [int(d) for d in module.weight.shape[2:]]
    if in_shape is None or len(in_shape) < len(k):
        return float(math.prod(k)), float(math.prod(k)), 1, math.prod(module.stride)
    size = [int(d) for d in in_shape[-len(k):]]
    stride, dil = list(module.stride), list(module.dilation)
    pad = module.padding
    if pad == "valid":
        pads = [(0, 0)] * len(k)
    elif pad == "same":  # torch pads d (k - 1) in all, the odd one on the right
        pads = [(d * (kk - 1) // 2, d * (kk - 1) - d * (kk - 1) // 2) for d, kk in zip(dil, k)]
    else:
        pads = [(int(p), int(p)) for p in pad]
    s1 = s2 = 1.0
    p_out = p_in = 1
    zeros = module.padding_mode == "zeros"
    for L, K, S, (P, P_right), D in zip(size, k, stride, pads, dil):
        o = (L + P + P_right - D * (K - 1) - 1) // S + 1
        if o <= 0:
            raise ValueError(f"the input of {type(module).__name__} is too small for its kernel")
        pos = np.arange(o)[:, None] * S - P + np.arange(K)[None, :] * D  # input index read
        n_k = ((pos >= 0) & (pos < L)).sum(0) if zeros else np.full(K, o)
        s1, s2 = s1 * float(n_k.sum()), s2 * float((n_k * n_k).sum())
        p_out, p_in = p_out * o, p_in * L
    return s1, s2, p_out, p_in


def _tap_matrices(module: nn.Module, in_shape: Sequence[int] | None,
                  out_shape: Sequence[int] | None = None) -> list[np.ndarray] | None:
    """Per spatial dimension of a conv, ``M[o, i]`` = the number of its kernel's taps by which
    output position ``o`` reads input position ``i`` (the conv's tap count map is their
    Kronecker product): zero padding reads fewer at the border, and a conv without padding reads
    its input's border positions (and, strided, every other position) fewer times, which
    matters where that input's ``E[a^2]`` differs by position (a ConvTranspose's 1 and 2 taps
    in turn, read by a stride-2 conv at its 2-tap positions twice: pre_std was 1.06-1.13x the
    prediction); ``None`` for a Linear, another padding mode or an unknown input shape. A
    ``ConvTranspose``: :func:`_transposed_taps`, always."""
    if isinstance(module, _CONVT):
        return _transposed_taps(module, in_shape, out_shape)
    if not isinstance(module, _CONV) or in_shape is None or module.padding_mode != "zeros":
        return None
    k = [int(d) for d in module.weight.shape[2:]]
    if len(in_shape) < len(k):
        return None
    pad = module.padding
    if pad == "valid":
        pads = [0] * len(k)
    elif pad == "same":
        pads = [d * (kk - 1) // 2 for d, kk in zip(module.dilation, k)]
    else:
        pads = [int(q) for q in pad]
    mats = []
    for L, K, S, P, D in zip([int(d) for d in in_shape[-len(k):]], k, module.stride, pads,
                             module.dilation):
        o = (L + 2 * P - D * (K - 1) - 1) // S + 1 if pad != "same" else L
        if o <= 0:
            return None
        pos = np.arange(o)[:, None] * S - P + np.arange(K)[None, :] * D
        mm = np.zeros((o, L))
        for col in range(K):
            ok = (pos[:, col] >= 0) & (pos[:, col] < L)
            np.add.at(mm, (np.arange(o)[ok], pos[ok, col]), 1.0)
        mats.append(mm)
    return mats


def _along(mats: list[np.ndarray], u: np.ndarray, transpose: bool = False) -> np.ndarray:
    """The tap count map of :func:`_tap_matrices` (or its transpose) applied to a per-position
    map ``u``, one spatial dimension at a time."""
    for d, mm in enumerate(mats):
        u = np.moveaxis(np.tensordot(mm.T if transpose else mm, u, axes=([1], [d])), 0, d)
    return u


def _fans(module: nn.Module, in_shape: Sequence[int] | None = None,
          out_shape: Sequence[int] | None = None) -> tuple[float, float, float]:
    """(fan-in of an output entry, number of outputs an input entry feeds, mean spread).

    Linear: ``in_features``, ``out_features``, 0. Conv (``c_in = in_channels / groups``,
    ``N_k`` as in :func:`_tap_counts`): fan-in ``c_in sum_k N_k / P_out`` (averaged over the
    output positions; a border position of a zero-padded conv reads fewer taps), fan-out
    ``out_channels / groups * sum_k N_k / P_in``; the spread ``c_in (sum_k N_k / P_out -
    sum_k N_k^2 / P_out^2)`` is ``E_W`` of the variance over output positions of a unit's
    mean ``E[a] sum_{valid taps} W``, in units of ``v E[a]^2``: zero padding makes the unit's
    mean depend on the position, which adds to the batch variance BatchNorm divides by.
    ``ConvTranspose`` (weight ``(in_channels, out_channels / groups, *kernel)``, the reverse of
    a conv's, whose ``torch.nn.init`` fans are the conv's read the other way round): ``c_in =
    in_channels / groups`` and ``out_channels / groups`` from that layout, the same formulas
    with its own ``N_k`` (:func:`_transposed_counts`): fan-in ``c_in prod(K) / prod(S)`` in
    the interior on average, fan-out ``out_channels / groups * prod(K)``."""
    w = module.weight
    if isinstance(module, nn.Linear):
        return float(w.shape[1]), float(w.shape[0]), 0.0
    groups = int(module.groups)
    s1, s2, p_out, p_in = _tap_counts(module, in_shape, out_shape)
    if isinstance(module, _CONVT):
        c_in, c_out = int(w.shape[0]) / groups, float(w.shape[1])
    else:
        c_in, c_out = int(w.shape[1]), float(w.shape[0]) / groups
    fan_in = c_in * s1 / p_out
    spread = c_in * (s1 / p_out - s2 / (p_out * p_out))
    return fan_in, c_out * s1 / p_in, max(spread, 0.0)


def _unit_rows(module: nn.Module, w64: torch.Tensor) -> torch.Tensor:
    """The weights as one row per output unit (feature, channel): a ``ConvTranspose``'s
    output channel ``g * out_channels / groups + j`` holds ``w[group g's inputs, j]``."""
    if isinstance(module, _CONVT):
        g = int(module.groups)
        c_in, c_out = int(w64.shape[0]) // g, int(w64.shape[1])
        return w64.reshape(g, c_in, c_out, -1).transpose(1, 2).reshape(g * c_out, -1)
    return w64.reshape(w64.shape[0], -1)
