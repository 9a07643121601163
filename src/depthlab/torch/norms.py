"""Per-example normalizations in :func:`depthlab.torch.predict.predict`: ``LayerNorm``,
``GroupNorm`` and ``RMSNorm`` (affine or not, any ``normalized_shape`` / ``num_groups``), after a
layer (``Linear -> LayerNorm -> act``, a GroupNorm CNN's ``Conv -> GroupNorm -> ReLU``) or
between segments (a pre-norm residual branch ``x + F(LN(x))``, the final ``LN`` before a
transformer's head, a post-norm ``LN(x + F(x))``).

Each normalizes one example's ``n`` values (LayerNorm/RMSNorm: ``prod(normalized_shape)``;
GroupNorm: ``C / G`` channels times the positions) and applies the gain and bias of each unit,
``y_j = gamma_j xhat_j + beta_j``:

forward   LayerNorm/GroupNorm ``xhat = (x - mu) / sqrt(sigma^2 + eps)``, ``mu``, ``sigma^2`` the
          example's mean and (biased) variance over its ``n`` values, so ``mean_j xhat_j^2 =
          r = sigma^2 / (sigma^2 + eps)`` exactly and ``E[y^2] = mean(gamma^2) r + mean(beta^2)``,
          ``E[y] = mean(beta)``. ``sigma^2`` is the variance of the values about the example's
          mean: after a layer ``q - (q - qb) / k`` (``q`` the layer's variance over units and
          examples, ``qb`` its batch variance, ``k`` the units in one normalization group: the
          units' own means, bias and ``W_j E[a]``, are ``k`` draws of which the group's mean
          takes ``1/k``; ``k = 1`` for a GroupNorm with one channel per group, which removes
          them, as BatchNorm does); between segments ``Var(a) - (Var(a) - Var_batch(a)) / k``.
          RMSNorm ``xhat = x / sqrt(mean(x^2) + eps)``: ``sigma^2 = E[a^2]`` (the mean kept),
          ``E[xhat] = E[a] / sqrt(E[a^2] + eps)``.
          An activation after it (``Linear -> LN -> ReLU``) sees ``N(beta_j + gamma_j E[xhat],
          gamma_j^2 Var(xhat))`` per unit (its own ``gamma_j, beta_j``); between segments the
          input's own distribution of a unit's value (a ReLU output's skewed shape) is
          standardized and mapped by each ``(gamma_j, beta_j)``.
backward  ``J = d xhat / dx = (I - 1 1^T / n - xhat xhat^T (1 - r) / n) / s`` (``s^2 = sigma^2 +
          eps``; RMSNorm without the ``1 1^T / n``), so with ``gamma g`` isotropic of variance
          ``V``: ``E|J^T (gamma g)|^2 = V mean(gamma^2) (n - 1 - c + r'^2) / s^2`` per value
          ``* 1/n``, ``c = 1`` for mean subtraction (0 for RMSNorm), ``r' = eps / s^2``: the
          projection removes the mean (one degree of freedom) and all but ``r'`` of the
          normalized direction (another). ``sigma^2`` of one example is ``sigma_bar^2
          chi2_{n-c} / n`` for Gaussian values, and ``E[1 / s^2]`` exceeds ``1 / E[s^2]``
          for a small ``n`` (``n / (n - c - 2)``):
          ``Var(dL/dx) = mean(gamma^2) Var(dL/dy) E[(n - 1 - c + r'^2) / (n (sigma^2 + eps))]``
          (:func:`depthlab.torch.propagation._bn_inverse` with ``centered``), the same
          factor as BatchNorm's with the example's ``n`` values for the batch's ``B``.
A residual sum whose skip carries a norm's output (post-norm ``LN(x + F(x))`` stacks) has that
share of its variance fixed per example, so the next norm's ``sigma^2`` fluctuates less:
``chi2`` with ``k / (1 - fixed^2)`` degrees of freedom (:class:`Fixed`, :func:`inverse`).
Not modelled: the correlation of ``gamma_j`` with the gradient that reaches unit ``j`` (a
trained net's), and a GroupNorm group's positions taken as independent values (``chi2``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import torch
from torch import nn

from . import pooling

PER_EXAMPLE = (nn.LayerNorm, nn.GroupNorm, nn.RMSNorm, nn.InstanceNorm1d, nn.InstanceNorm2d,
               nn.InstanceNorm3d)
"""The normalizations of one example's values that :func:`depthlab.torch.predict.predict`
models (BatchNorm, over the batch, in :mod:`depthlab.torch.propagation`). InstanceNorm with
its per-example statistics (training mode, or ``track_running_stats=False``, its default) is
GroupNorm(C, C): each example's channel normalized over its positions,
``y = gamma_c (x - mu_nc) / sqrt(sigma_nc^2 + eps) + beta_c``."""


def groups(module: nn.Module) -> tuple[int, int] | None:
    """``(channels, groups)`` of a GroupNorm, or of an InstanceNorm (one channel per group);
    None for other modules."""
    if isinstance(module, nn.GroupNorm):
        return int(module.num_channels), int(module.num_groups)
    if isinstance(module, (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)):
        return int(module.num_features), int(module.num_features)
    return None


@dataclasses.dataclass(frozen=True)
class NormSpec:
    """One per-example normalization: ``n`` values per normalization, ``k`` units per group,
    ``centered`` (LayerNorm/GroupNorm) or not (RMSNorm), ``eps``, and its units' distinct
    ``(gamma, beta)`` pairs with their shares (1, 0 without affine parameters)."""

    kind: str
    n: int
    k: int
    centered: bool
    eps: float
    gamma: tuple[float, ...]
    beta: tuple[float, ...]
    share: tuple[float, ...]

    @property
    def gamma2(self) -> float:
        return float(np.dot(self.share, np.square(self.gamma)))

    def pairs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return np.array(self.gamma), np.array(self.beta), np.array(self.share)


def _eps(module: nn.Module) -> float:
    eps = getattr(module, "eps", None)
    if eps is None:  # RMSNorm(eps=None): torch takes the input dtype's machine epsilon
        p = next(module.parameters(), None)
        return float(torch.finfo(p.dtype if p is not None else torch.float32).eps)
    return float(eps)


def _affine(module: nn.Module, units: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-entry gains and biases of the module's output (ones and zeros where it has none);
    GroupNorm's per channel (``units`` positions each: the same share)."""
    w = getattr(module, "weight", None)
    b = getattr(module, "bias", None)
    g = (w.detach().to(torch.float64).reshape(-1).cpu().numpy() if w is not None
         else np.ones(units))
    be = (b.detach().to(torch.float64).reshape(-1).cpu().numpy() if b is not None
          else np.zeros(g.size))
    return g, be


def check_batched(module: nn.Module, shape: tuple[int, ...] | None,
                  name: str | None = None) -> None:
    """A ValueError for an InstanceNorm given a tensor without a batch dimension: torch reads
    ``(N, C)`` into an InstanceNorm1d as ONE unbatched example (its ``N`` rows the channels,
    each normalized over its own values), which has no per-channel statistics to model (taken
    for ``N`` examples of one value each, the prediction was inf). ``name``: the module's."""
    if shape is None or not isinstance(module, (nn.InstanceNorm1d, nn.InstanceNorm2d,
                                                nn.InstanceNorm3d)) \
            or len(shape) >= module._get_no_batch_dim() + 1:
        return
    who = repr(name) if name is not None else "the module"
    raise ValueError(
        f"predict() models InstanceNorm on batches (N, C, ...); {who} is a "
        f"{type(module).__name__} given a tensor of shape {tuple(shape)}, which torch reads "
        f"as one unbatched example (its {shape[0]} rows as channels, each normalized over its "
        f"own values): use nn.LayerNorm({shape[-1]}) to normalize each example's features")


def norm_spec(module: nn.Module, shape: tuple[int, ...] | None,
              units_axis: int | None = None) -> NormSpec:
    """The :class:`NormSpec` of ``module`` on inputs of ``shape`` (a batch); ``units_axis``:
    the axis of the preceding layer's units (None between segments: all normalized values
    are taken for units)."""
    if shape is None:
        raise ValueError(f"predict() needs the input shape of the {type(module).__name__}")
    shape = tuple(int(v) for v in shape)
    check_batched(module, shape)
    cg = groups(module)
    if cg is not None:  # GroupNorm; InstanceNorm is GroupNorm(C, C)
        c, ng = cg
        spatial = math.prod(shape[2:]) if len(shape) > 2 else 1
        k = c // ng
        n = k * spatial
        g, b = _affine(module, c)
        kind, centered = type(module).__name__, True
    else:
        ns = tuple(int(v) for v in module.normalized_shape)
        n = math.prod(ns)
        d = len(shape)
        if units_axis is None:
            k = n
        else:  # the layer's units among the normalized axes: k of them per normalization
            ax = units_axis % d
            k = shape[ax] if ax >= d - len(ns) else 1
        g, b = _affine(module, n)
        kind = type(module).__name__
        centered = isinstance(module, nn.LayerNorm)
    pairs, counts = np.unique(np.round(np.stack([g, b], 1), 6), axis=0, return_counts=True)
    return NormSpec(kind, max(int(n), 1), max(int(k), 1), centered, _eps(module),
                    tuple(float(v) for v in pairs[:, 0]), tuple(float(v) for v in pairs[:, 1]),
                    tuple(float(v) for v in counts / counts.sum()))


def sigma2(spec: NormSpec, sq: float, mean: float, bvar: float) -> float:
    """``sigma^2`` (the value the example is divided by, less eps) from the input's ``E[a^2]``,
    ``E[a]`` and batch variance (module docstring)."""
    if not spec.centered:
        return max(sq, 0.0)
    var = max(sq - mean * mean, 0.0)
    return max(var - max(var - bvar, 0.0) / spec.k, 0.0)


class Fixed(tuple):
    """A distribution ``(values, weights)`` of a unit's value that also says which share
    ``fixed`` of its variance is the same in every example: a norm's output has exactly
    ``mean_j xhat_j^2 = r`` per example, and a residual sum ``LN(..) + F`` keeps that share
    of the skip's variance (post-norm stacks). Any other operation makes a plain tuple."""

    fixed: float

    def __new__(cls, dist: pooling.Dist, fixed: float) -> Fixed:
        out = super().__new__(cls, dist)
        out.fixed = float(min(max(fixed, 0.0), 1.0))
        return out


def fixed_share(dist: Any) -> float:
    """The share of a unit's variance that is the same in every example (:class:`Fixed`)."""
    return float(getattr(dist, "fixed", 0.0))


def inverse(spec: NormSpec, s2: float, fixed: float = 0.0) -> float:
    """``E[(n - 1 - c + r'^2) / (n (sigma^2 + eps))]`` (module docstring); for ``n - c > 32``
    and ``eps`` below ``1e-3 sigma^2`` in closed form, ``E[1 / chi2_k] = 1 / (k - 2)``:
    ``(n - 1 - c) / ((n - c - 2) (sigma^2 + eps))`` (the quadrature over ``chi2`` took 0.2 s
    per norm). ``fixed``: the share of the input's variance that does not vary over the
    examples (:class:`Fixed`; a post-norm ``LN(x + F(x))`` whose ``x`` is the previous norm's
    output): ``sigma^2 = s_fix + s_F`` fluctuates by ``Var = 2 (s_F^2 + 2 s_fix s_F) / k``
    instead of ``2 sigma^4 / k``, so ``chi2`` with ``k / (1 - fixed^2)`` degrees of freedom
    (taken as ``chi2_k``, a post-norm stack of width 32 had grad_pre_std 0.91-0.96x)."""
    c = 1 if spec.centered else 0
    k = spec.n - c
    if fixed > 0 and k > 4 and spec.eps < 1e-3 * s2:
        k_eff = k / max(1.0 - fixed * fixed, k / 1e9)
        return (spec.n - 1 - c) / spec.n * k_eff / (k_eff - 2) / (s2 * k / spec.n + spec.eps)
    if k > 32 and spec.eps < 1e-3 * s2:
        return (spec.n - 1 - c) / ((k - 2) * (s2 + spec.eps))
    from .propagation import _bn_inverse
    return _bn_inverse(np.array([s2]), spec.eps, spec.n, 1, centered=spec.centered)


def between(module: nn.Module, x: torch.Tensor, label: str) -> pooling.Between | None:
    """A :class:`depthlab.torch.pooling.Between` of kind ``"norm"`` for a per-example
    normalization that reads something other than a layer's output (None for other modules,
    and for an InstanceNorm on running statistics or on one unbatched example, which the chain
    then refuses by name)."""
    if not isinstance(module, PER_EXAMPLE) or (groups(module) is not None and not isinstance(
            module, nn.GroupNorm) and (x.dim() < module._get_no_batch_dim() + 1 or (
                not module.training and module.track_running_stats))):
        return None  # (an InstanceNorm on running statistics or one unbatched example)
    shape = tuple(x.shape) if x.dim() >= 2 else (1, *x.shape)
    return pooling.Between("norm", label, x.numel(), norm=norm_spec(module, shape))


def forward(spec: NormSpec, state: tuple) -> tuple:
    """``(E[y^2], E[y], batch variance, distribution)`` after the normalization between
    segments (module docstring)."""
    sq, mean, bvar, (v, w) = state[:4]
    s2 = sigma2(spec, sq, mean, bvar)
    s = math.sqrt(s2 + spec.eps)
    center = mean if spec.centered else 0.0
    xv = (np.asarray(v, np.float64) - center) / s  # the unit's value, standardized
    w = np.asarray(w, np.float64)
    xm, xsq = float(w @ xv), float(w @ (xv * xv))
    g, b, share = spec.pairs()
    out_sq = float(share @ (g * g * xsq + 2 * g * b * xm + b * b))
    out_mean = float(share @ (g * xm + b))
    out_bvar = float(share @ (g * g)) * max(bvar, 0.0) / (s * s)
    vals = (g[:, None] * xv[None, :] + b[:, None]).ravel()
    wts = (share[:, None] * w[None, :]).ravel()
    return out_sq, out_mean, min(out_bvar, max(out_sq - out_mean ** 2, 0.0)), \
        Fixed(pooling.compress(vals, wts), 1.0)


def backward(spec: NormSpec, g: float, t: Any, dist_in: pooling.Dist,
             dist_out: pooling.Dist, state_in: tuple) -> tuple[float, None]:
    """``Var(dL/dx)`` before the normalization from ``Var(dL/dy)`` after it (module
    docstring); no dependence on one unit's value is carried."""
    sq, mean, bvar = state_in[:3]
    g_mean = pooling.mean_of(g, t, dist_out)
    return g_mean * spec.gamma2 * inverse(spec, sigma2(spec, sq, mean, bvar),
                                          fixed_share(state_in[3])), None
