"""The SELU moment map and its fixed point (Klambauer et al. 2017, self-normalizing networks).

A unit receives ``z = sum_i w_i x_i`` from inputs with mean ``mu`` and variance ``nu``; with
``omega = sum_i w_i`` (= n E[w]) and ``tau = sum_i w_i^2`` (= n E[w^2]), ``z ~ N(mu omega, nu tau)``
(central limit). The output ``y = selu(z)`` has mean ``mu~`` and variance ``nu~``; the map
``g: (mu, nu) -> (mu~, nu~)`` has the fixed point ``(0, 1)`` at ``omega = 0, tau = 1``
(LeCun-normal weights), which is attracting: the spectral radius of its Jacobian is < 1.

Closed form used here (``m = mu omega``, ``s^2 = nu tau``, ``Phi`` the normal CDF, ``phi`` its
density; derived from the truncated-normal moments)::

    E[z 1(z>0)]          = m Phi(m/s) + s phi(m/s)
    E[z^2 1(z>0)]        = (m^2 + s^2) Phi(m/s) + m s phi(m/s)
    E[e^{kz} 1(z<=0)]    = exp(k m + k^2 s^2 / 2) Phi(-(m + k s^2)/s)
    mu~  = lambda E[z 1(z>0)] + lambda alpha (E[e^z 1(z<=0)] - Phi(-m/s))
    E[y^2] = lambda^2 E[z^2 1(z>0)]
             + lambda^2 alpha^2 (E[e^{2z} 1(z<=0)] - 2 E[e^z 1(z<=0)] + Phi(-m/s))
    nu~  = E[y^2] - mu~^2

The exponential terms are evaluated without cancellation: with ``r = m/s`` and ``t = r + k s``,
``E[e^{kz} 1(z<=0)] = erfcx(t/sqrt 2)/2 * exp(-r^2/2)`` for ``t > 0`` (the form ``exp(k m + k^2
s^2/2 + log Phi(-t))`` lost everything to rounding from a variance of ~1e20 on: 'math range
error'), else ``exp(k m + k^2 s^2/2) Phi(-t)`` (an exponent <= 0 then). For ``m > 0`` the
variance is taken without ``E[y^2] - mu~^2`` (which cancels for a mean far above the spread: a
mean of 1.05e10 with sd 1.05 gave 16384): ``y = lambda (z + d(z))`` with
``d = (alpha (e^z - 1) - z) 1(z <= 0)``, so ``nu~ = lambda^2 (s^2 + 2 Cov(z, d) + Var d)``,
``Cov(z, d) = s^2 E[d'(z)] = s^2 (alpha E[e^z 1(z<=0)] - Phi(-r))`` (Stein's lemma; d is continuous)
and ``Var d`` from ``E[z 1(z<=0)] = m Phi(-r) - s phi(r)``, ``E[z^2 1(z<=0)] = (m^2 + s^2) Phi(-r)
- m s phi(r)``, ``E[z e^z 1(z<=0)] = (m + s^2) E[e^z 1(z<=0)] - s phi(r)``: every term of ``d``
is as small as the chance of ``z <= 0``. Likewise for ``m + 2 s^2 < 0`` (a mean far below 0,
where ``nu~`` is ``e^{2m}``-small against ``mu~^2 ~ (lambda alpha)^2``): ``y = lambda (alpha
(e^z - 1) + u(z))``, ``u = (z - alpha (e^z - 1)) 1(z > 0)``, ``nu~ = lambda^2 (alpha^2 Var e^z +
2 alpha Cov(e^z, u) + Var u)`` with ``Var e^z = e^{2m + s^2} (e^{s^2} - 1)`` and the terms of ``u``
as small as the chance of ``z > 0``.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy.optimize import fsolve
from scipy.special import erfcx, ndtr

from ..activations import SELU_ALPHA, SELU_LAMBDA
from ..memory import check_fits
from ..validators import real

ROW_BYTES = 200
"""Memory of one layer's row of :func:`selu_trajectory` (a Python tuple of three numbers
while iterating, then the DataFrame's row)."""

_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_INV_SQRT_2 = 1.0 / math.sqrt(2.0)


def _check(mu: float, nu: float, omega: float, tau: float, lam: float = SELU_LAMBDA,
           alpha: float = SELU_ALPHA) -> None:
    for label, value in (("mu", mu), ("nu", nu), ("omega", omega), ("tau", tau)):
        real(label, value)  # a real number (strings, None and bools refused)
    real("lam", lam, positive=True)  # SELU's scale lambda > 0
    real("alpha", alpha, low=0.0)  # SELU's negative saturation alpha >= 0
    if not (np.isfinite(mu) and np.isfinite(omega)):
        raise ValueError(f"mu and omega must be finite, got mu={mu!r}, omega={omega!r}")
    if not (np.isfinite(nu) and nu > 0):
        raise ValueError(f"nu (input variance) must be finite and > 0, got {nu!r}")
    if not (np.isfinite(tau) and tau > 0):
        raise ValueError(f"tau (sum of squared weights) must be finite and > 0, got {tau!r}")


def selu_map(
    mu: float,
    nu: float,
    omega: float = 0.0,
    tau: float = 1.0,
    lam: float = SELU_LAMBDA,
    alpha: float = SELU_ALPHA,
) -> tuple[float, float]:
    """One layer of the SELU moment map ``(mu, nu) -> (mu~, nu~)`` (closed form, module doc).

    An OverflowError when ``nu * tau`` or the output's variance exceeds float64's range."""
    _check(mu, nu, omega, tau, lam, alpha)
    m = float(mu) * float(omega)
    s2 = float(nu) * float(tau)
    s = math.sqrt(s2)
    if not math.isfinite(s2):
        raise OverflowError(f"selu_map: nu * tau = {nu!r} * {tau!r} exceeds float64's range")
    r = m / s
    p_pos, p_neg, dens = float(ndtr(r)), float(ndtr(-r)), _INV_SQRT_2PI * math.exp(-0.5 * r * r)

    def exp_neg(k: float) -> float:  # E[e^{k z} 1(z <= 0)], module doc
        t = r + k * s
        if t > 0.0:
            return 0.5 * float(erfcx(t * _INV_SQRT_2)) * math.exp(-0.5 * r * r)
        return math.exp(k * m + 0.5 * k * k * s2) * float(ndtr(-t))

    e1, e2 = exp_neg(1.0), exp_neg(2.0)
    with np.errstate(over="ignore", invalid="ignore"):
        mean = lam * (m * p_pos + s * dens) + lam * alpha * (e1 - p_neg)
        if m > 0.0:  # y = lam (z + d(z)), module doc: no E[y^2] - mean^2 cancellation
            if p_neg == 0.0 and dens == 0.0:
                var = lam * lam * s2  # z <= 0 has no weight in float64: d = 0
            else:
                cov = s2 * (alpha * e1 - p_neg)
                ez = m * p_neg - s * dens
                ez2 = (m * m + s2) * p_neg - m * s * dens
                eze = (m + s2) * e1 - s * dens
                ed = alpha * (e1 - p_neg) - ez
                ed2 = alpha * alpha * (e2 - 2.0 * e1 + p_neg) - 2.0 * alpha * (eze - ez) + ez2
                var = lam * lam * (s2 + 2.0 * cov + (ed2 - ed * ed))
        elif m + 2.0 * s2 < 0.0:  # y = lam (alpha (e^z - 1) + u(z)), module doc: no
            # cancellation against mean^2 ~ (lam alpha)^2 where the variance is e^{2m}-small
            ee = math.exp(m + 0.5 * s2)                         # E[e^z]
            eep = ee * float(ndtr(r + s))                       # E[e^z 1(z>0)]
            ee2p = math.exp(2.0 * m + 2.0 * s2) * float(ndtr(r + 2.0 * s))
            ezp = m * p_pos + s * dens                          # E[z 1(z>0)]
            ez2p = (m * m + s2) * p_pos + m * s * dens          # E[z^2 1(z>0)]
            ezep = (m + s2) * eep + s * dens                    # E[z e^z 1(z>0)]
            eu = ezp - alpha * (eep - p_pos)
            eu2 = ez2p - 2.0 * alpha * (ezep - ezp) + alpha * alpha * (
                ee2p - 2.0 * eep + p_pos)
            eeu = ezep - alpha * (ee2p - eep)
            var_e = math.exp(2.0 * m + s2) * math.expm1(s2)   # Var(e^z)
            var = lam * lam * (alpha * alpha * var_e + 2.0 * alpha * (eeu - ee * eu)
                               + (eu2 - eu * eu))
        else:
            second = lam**2 * ((m * m + s2) * p_pos + m * s * dens) + (lam * alpha) ** 2 * (
                e2 - 2.0 * e1 + p_neg
            )
            var = second - mean * mean
    if not (math.isfinite(mean) and math.isfinite(var)):
        raise OverflowError(f"selu_map: the output's moments exceed float64's range at mu={mu!r}, "
                            f"nu={nu!r}, omega={omega!r}, tau={tau!r}")
    return float(mean), float(max(var, 0.0))


def selu_fixed_point(
    omega: float = 0.0,
    tau: float = 1.0,
    lam: float = SELU_LAMBDA,
    alpha: float = SELU_ALPHA,
    start: tuple[float, float] = (0.0, 1.0),
) -> tuple[float, float]:
    """Fixed point ``(mu*, nu*)`` of :func:`selu_map`: ``(0, 1)`` at ``omega = 0, tau = 1``.

    Found by iterating the map from ``start`` (up to 200 layers) then polishing with
    ``scipy.optimize.fsolve``; the answer maps to itself to 1e-9 of its scale (``|mu| +
    sqrt(nu)``) with ``nu > 0``. A ValueError where the map has no such point reachable from
    ``start``: weights too large (``omega = 0, tau >~ 2.66``: the variance grows without bound,
    by ``lambda^2 tau (1/2 - 1/(2 pi))`` per layer at large scale) or too small (``tau <~
    0.496``: it shrinks to 0); fsolve's answer there was a negative variance
    (``tau = 3``: ``(-4.9e-07, -9.3e+06)``).
    """
    if not isinstance(start, (tuple, list)) or len(start) != 2:
        raise ValueError(f"start must be a pair (mu, nu), got {start!r}")
    _check(start[0], start[1], omega, tau, lam, alpha)
    mu, nu = map(float, start)
    layers = 0
    try:
        for layers in range(1, 201):  # noqa: B007 - the count is reported
            mu_new, nu_new = selu_map(mu, nu, omega, tau, lam, alpha)
            done = abs(mu_new - mu) + abs(nu_new - nu) < 1e-13
            mu, nu = mu_new, nu_new
            if done or nu == 0.0:
                break
    except OverflowError:
        nu = math.inf

    def resid(v: np.ndarray) -> list[float]:
        mu_, nu_ = float(v[0]), max(float(v[1]), 1e-12)
        out = selu_map(mu_, nu_, omega, tau, lam, alpha)
        return [out[0] - mu_, out[1] - nu_]

    def is_fixed(mu_: float, nu_: float) -> bool:
        if not (math.isfinite(mu_) and math.isfinite(nu_) and nu_ > 0.0):
            return False
        try:
            out = selu_map(mu_, nu_, omega, tau, lam, alpha)
        except OverflowError:
            return False
        scale = abs(mu_) + math.sqrt(nu_)
        return abs(out[0] - mu_) <= 1e-9 * scale and abs(out[1] - nu_) <= 1e-9 * scale * scale

    sol = None
    if math.isfinite(nu) and nu > 0.0:
        try:
            sol, _info, _ier, _msg = fsolve(resid, [mu, nu], full_output=True, xtol=1e-14)
        except OverflowError:
            sol = None
    if sol is None or not is_fixed(float(sol[0]), float(sol[1])):
        trend = "it grows without bound" if nu > float(start[1]) else "it shrinks to 0"
        went = ("overflowed float64 (it grows without bound)" if not math.isfinite(nu)
                else "reached 0 (it shrinks to 0)" if nu == 0.0
                else f"went to {nu:.4g} ({trend})")
        raise ValueError(f"no SELU fixed point with variance > 0 found for omega={omega!r}, "
                         f"tau={tau!r}: iterating the map from start={tuple(start)!r}, the "
                         f"variance {went} after {layers} layers, and Newton's method from there "
                         "found none (at omega = 0 one exists for tau in about (0.496, 2.66))")
    return float(sol[0]), float(sol[1])


def selu_trajectory(
    mu0: float,
    nu0: float,
    depth: int,
    omega: float = 0.0,
    tau: float = 1.0,
    lam: float = SELU_LAMBDA,
    alpha: float = SELU_ALPHA,
) -> pd.DataFrame:
    """Iterate the SELU moment map ``depth`` times from ``(mu0, nu0)``.

    Returns a DataFrame with columns ``layer`` (0 = input, then 1..depth), ``mean``, ``var``.
    """
    if isinstance(depth, bool) or not isinstance(depth, (int, np.integer)) or depth < 0:
        raise ValueError(f"depth must be a non-negative integer, got {depth!r}")
    _check(mu0, nu0, omega, tau, lam, alpha)
    check_fits((int(depth) + 1) * ROW_BYTES, f"selu_trajectory(depth={int(depth)}) "
               f"({int(depth) + 1:,} rows)")  # refused before iterating, not hours later
    rows = [(0, float(mu0), float(nu0))]
    mu, nu = float(mu0), float(nu0)
    for layer in range(1, int(depth) + 1):
        try:
            mu, nu = selu_map(mu, nu, omega, tau, lam, alpha)
        except OverflowError:
            raise OverflowError(f"selu_trajectory: the moments overflowed float64 at layer "
                                f"{layer} (tau={tau!r}: the variance grows without bound); "
                                f"layer {layer - 1} had mean {mu:.4g}, variance {nu:.4g}") from None
        if nu == 0.0:
            raise ValueError(f"selu_trajectory: the variance underflowed to 0 at layer {layer} "
                             f"(tau={tau!r}: it shrinks to 0); the map needs a variance > 0")
        rows.append((layer, mu, nu))
    return pd.DataFrame(rows, columns=["layer", "mean", "var"])


def selu_jacobian(
    mu: float = 0.0,
    nu: float = 1.0,
    omega: float = 0.0,
    tau: float = 1.0,
    lam: float = SELU_LAMBDA,
    alpha: float = SELU_ALPHA,
    h: float = 1e-6,
) -> np.ndarray:
    """2x2 Jacobian ``d(mu~, nu~) / d(mu, nu)`` of :func:`selu_map` by central differences."""
    _check(mu, nu, omega, tau, lam, alpha)
    h = real("h", h)
    if not 0 < h < nu:
        raise ValueError(f"step h must satisfy 0 < h < nu, got h={h!r}, nu={nu!r}")
    jac = np.empty((2, 2))
    for j, (dmu, dnu) in enumerate(((h, 0.0), (0.0, h))):
        plus = selu_map(mu + dmu, nu + dnu, omega, tau, lam, alpha)
        minus = selu_map(mu - dmu, nu - dnu, omega, tau, lam, alpha)
        jac[:, j] = (np.asarray(plus) - np.asarray(minus)) / (2.0 * h)
    return jac


def selu_spectral_radius(omega: float = 0.0, tau: float = 1.0, lam: float = SELU_LAMBDA,
                         alpha: float = SELU_ALPHA) -> float:
    """Largest ``|eigenvalue|`` of the Jacobian at the fixed point (< 1: attracting)."""
    mu, nu = selu_fixed_point(omega, tau, lam, alpha)
    return float(np.max(np.abs(np.linalg.eigvals(selu_jacobian(mu, nu, omega, tau, lam, alpha)))))
