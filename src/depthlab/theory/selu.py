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

(the exponential terms are evaluated as ``exp(k m + k^2 s^2/2 + log Phi(...))`` to avoid overflow).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy.optimize import fsolve
from scipy.special import log_ndtr, ndtr

from ..activations import SELU_ALPHA, SELU_LAMBDA
from ..memory import check_fits
from ..validators import real

ROW_BYTES = 200
"""Memory of one layer's row of :func:`selu_trajectory` (a Python tuple of three numbers
while iterating, then the DataFrame's row)."""

_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


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
    """One layer of the SELU moment map ``(mu, nu) -> (mu~, nu~)`` (closed form, module doc)."""
    _check(mu, nu, omega, tau, lam, alpha)
    m = float(mu) * float(omega)
    s = math.sqrt(float(nu) * float(tau))
    r = m / s
    p_pos, p_neg, dens = float(ndtr(r)), float(ndtr(-r)), _INV_SQRT_2PI * math.exp(-0.5 * r * r)

    def exp_neg(k: float) -> float:  # E[e^{k z} 1(z <= 0)]
        return math.exp(k * m + 0.5 * k * k * s * s + float(log_ndtr(-(m + k * s * s) / s)))

    e1, e2 = exp_neg(1.0), exp_neg(2.0)
    mean = lam * (m * p_pos + s * dens) + lam * alpha * (e1 - p_neg)
    second = lam**2 * ((m * m + s * s) * p_pos + m * s * dens) + (lam * alpha) ** 2 * (
        e2 - 2.0 * e1 + p_neg
    )
    return float(mean), float(max(second - mean * mean, 0.0))


def selu_fixed_point(
    omega: float = 0.0,
    tau: float = 1.0,
    lam: float = SELU_LAMBDA,
    alpha: float = SELU_ALPHA,
    start: tuple[float, float] = (0.0, 1.0),
) -> tuple[float, float]:
    """Fixed point ``(mu*, nu*)`` of :func:`selu_map`: ``(0, 1)`` at ``omega = 0, tau = 1``.

    Found by iterating the map from ``start`` then polishing with ``scipy.optimize.fsolve``.
    """
    if not isinstance(start, (tuple, list)) or len(start) != 2:
        raise ValueError(f"start must be a pair (mu, nu), got {start!r}")
    _check(start[0], start[1], omega, tau, lam, alpha)
    mu, nu = map(float, start)
    for _ in range(200):
        mu_new, nu_new = selu_map(mu, nu, omega, tau, lam, alpha)
        done = abs(mu_new - mu) + abs(nu_new - nu) < 1e-13
        mu, nu = mu_new, nu_new
        if done:
            break

    def resid(v: np.ndarray) -> list[float]:
        mu_, nu_ = float(v[0]), max(float(v[1]), 1e-12)
        out = selu_map(mu_, nu_, omega, tau, lam, alpha)
        return [out[0] - mu_, out[1] - nu_]

    sol, _info, ier, msg = fsolve(resid, [mu, nu], full_output=True, xtol=1e-14)
    if ier != 1 and max(abs(x) for x in resid(sol)) > 1e-9:
        raise ValueError(f"no SELU fixed point found for omega={omega!r}, tau={tau!r}: {msg}")
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
        mu, nu = selu_map(mu, nu, omega, tau, lam, alpha)
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
