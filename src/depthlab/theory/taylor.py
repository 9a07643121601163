"""Taylor coefficients of activations at 0 (Xu, Huang & Li 2016's linear-regime argument).

Near 0 an activation behaves like ``f(s) ~= beta + alpha s``: ``beta = f(0)`` shifts the mean of
the next layer's input and ``alpha = f'(0)`` scales both the forward signal and the backward
gradient. Matching tanh's variance propagation therefore needs ``1 / alpha^2`` times the weight
variance of tanh: 16 for the sigmoid (``alpha = 1/4``).

Coefficients are exact (tables) for sigmoid, tanh and identity; otherwise numerical: ``f`` is
interpolated at Chebyshev points on ``[-r, r]`` and the interpolant converted to a power series
(spectrally accurate for analytic ``f``). Kinked functions are detected by one-sided fits on
``[0, r]`` and ``[-r, 0]``; their coefficients are the average of the two sides (for symmetric
inputs the average slope is what the linear regime sees, e.g. ReLU: alpha = 1/2).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
from numpy.polynomial import Chebyshev, Polynomial

from ..validators import real
from .gaussian import ScalarActivation, activation_keywords, resolve_activation

_EXACT: dict[str, tuple[Fraction, ...]] = {
    # sigmoid(x) = 1/2 + x/4 - x^3/48 + x^5/480 - 17 x^7/80640 + ...
    "sigmoid": (
        Fraction(1, 2), Fraction(1, 4), Fraction(0), Fraction(-1, 48), Fraction(0),
        Fraction(1, 480), Fraction(0), Fraction(-17, 80640),
    ),
    # tanh(x) = x - x^3/3 + 2 x^5/15 - 17 x^7/315 + ...
    "tanh": (
        Fraction(0), Fraction(1), Fraction(0), Fraction(-1, 3), Fraction(0),
        Fraction(2, 15), Fraction(0), Fraction(-17, 315),
    ),
    "identity": (Fraction(0), Fraction(1), Fraction(0), Fraction(0), Fraction(0),
                 Fraction(0), Fraction(0), Fraction(0)),
}

_RADIUS = 0.5      # half-width of the interpolation interval
_DEG_CENTRAL = 24  # Chebyshev degree of the central fit
_DEG_SIDE = 14     # Chebyshev degree of the one-sided fits
_SMOOTH_TOL = 1e-6
_SNAP = 1e-9       # |c_k| below this is numerical noise
_SMOOTH_ORDER = 4  # one-sided fits compared up to this order at least
_STABLE_ORDER = 3  # c_0..c_3 must agree between the fits on [-r, r] and [-0.75 r, 0.75 r]
_STABLE_TOL = 1e-6  # ... to this relative tolerance
KINK_MARGIN = 0.9  # the fit's radius as a share of the nearest kink away from 0 inside it


@dataclass(frozen=True)
class TaylorCoefficients:
    """Coefficients ``c_k`` of ``f(s) = sum_k c_k s^k`` at ``s = 0`` (``c_k = f^(k)(0) / k!``).

    ``beta = c0`` (mean shift), ``alpha = c1`` (slope),
    ``weight_variance_factor_vs_tanh = 1 / alpha^2`` (inf when alpha = 0): the weight variance,
    relative to tanh's, that keeps variances through a layer in the linear regime. ``smooth`` is
    False when the one-sided expansions differ (a kink); then ``coefficients`` is their average,
    ``left``/``right`` hold the one-sided ones and the factor is ``2 / (l1^2 + r1^2)`` (the mean
    of the squared one-sided slopes, ``E[f'(s)^2]`` for symmetric ``s``: ReLU 2, He et al.'s
    ``2 / fan_in``; penalized tanh 1.88), not ``1 / alpha^2`` of the averaged slope.
    """

    name: str
    coefficients: tuple[float, ...]
    beta: float
    alpha: float
    weight_variance_factor_vs_tanh: float
    smooth: bool = True
    exact: bool = False
    left: tuple[float, ...] | None = field(default=None, repr=False)
    right: tuple[float, ...] | None = field(default=None, repr=False)

    @property
    def order(self) -> int:
        return len(self.coefficients) - 1

    def __getitem__(self, k: int) -> float:
        return self.coefficients[k]

    def __call__(self, s: Any) -> np.ndarray:
        """Evaluate the truncated series ``sum_k c_k s^k``."""
        return np.polynomial.polynomial.polyval(np.asarray(s, dtype=np.float64),
                                                self.coefficients)


def _cheb_power(fn: ScalarActivation, lo: float, hi: float, deg: int, order: int) -> np.ndarray:
    """Power-series coefficients about 0 of the Chebyshev interpolant of fn on [lo, hi]."""
    cheb = Chebyshev.interpolate(fn.f, deg, domain=[lo, hi])
    power = cheb.convert(kind=Polynomial).coef
    out = np.zeros(order + 1)
    m = min(order + 1, power.size)
    out[:m] = power[:m]
    return out


def _clean(coefs) -> tuple[float, ...]:
    """Floats, with numerical noise below the achievable accuracy (1e-9) snapped to 0."""
    return tuple(0.0 if abs(float(c)) < _SNAP else float(c) for c in coefs)


def _make(name: str, coefs, smooth: bool = True, exact: bool = False,
          left=None, right=None) -> TaylorCoefficients:
    coefs = _clean(coefs)
    left = None if left is None else _clean(left)
    right = None if right is None else _clean(right)
    alpha = coefs[1] if len(coefs) > 1 else 0.0
    # the mean squared slope the linear regime propagates variances with: alpha^2, or at a kink
    # (l1^2 + r1^2) / 2 = E[f'(s)^2] for symmetric s (ReLU 1/2: He's 2x, not (1/2)^-2 = 4x)
    slope_sq = alpha**2 if left is None or right is None else 0.5 * (left[1]**2 + right[1]**2)
    factor = float("inf") if slope_sq == 0.0 else 1.0 / slope_sq
    return TaylorCoefficients(
        name=name, coefficients=coefs, beta=coefs[0], alpha=alpha,
        weight_variance_factor_vs_tanh=factor, smooth=smooth, exact=exact,
        left=left, right=right,
    )


def _check_order(order: Any) -> int:
    """``int(order)`` for an integer in 1..10, else ValueError naming it."""
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or not 1 <= order <= 10:
        raise ValueError(f"order must be an integer in 1..10, got {order!r}")
    return int(order)


@activation_keywords
def numerical_taylor(activation: Any, order: int = 3, radius: float = _RADIUS,
                     **kw: Any) -> TaylorCoefficients:
    """Taylor coefficients ``c_0..c_order`` at 0 from Chebyshev interpolation (no tables).

    Central fit on ``[-radius, radius]``, narrowed to ``KINK_MARGIN`` x the nearest kink of
    ``f`` away from 0 where one lies inside (``ScalarActivation.kinks``; hard-tanh
    ``clip(s, -0.2, 0.2)`` raised "the fit is not stable"); one-sided fits on each half decide
    smoothness, up to order ``max(order, 4)`` whatever ``order`` is asked: a kink in a higher
    derivative (elu, softsign: ``f''`` jumps at 0) slows the central fit's convergence, so
    even ``c_1`` comes from the one-sided fits then (elu's slope 1, not the central fit's
    0.992).
    """
    order = _check_order(order)
    r = real("radius", radius, positive=True)
    fn = resolve_activation(activation, **kw)
    # a kink or jump of f away from 0 inside [-r, r] (a user's clip(s, -0.2, 0.2), max(s -
    # 0.3, 0): ScalarActivation.kinks) is no part of the expansion at 0, but a fit across it
    # does not converge ("the fit is not stable"): fit inside the nearest one instead
    inside = [abs(float(t)) for t in fn.kinks if 0.0 < abs(float(t)) < r]
    if inside:
        r = KINK_MARGIN * min(inside)
    got = _fit(fn, r, order)
    # the same fit on 3/4 of the interval must agree on c_0..c_3: a radius too small leaves
    # rounding noise amplified by r^-k (elu at radius 1e-3: c_3 = -1110, softsign -4441), one
    # too large a fit that has not converged (tanh at radius 5: c_3 = -0.255, at 20 c_1 = 1.053)
    again = _fit(fn, 0.75 * r, order)
    for k in range(min(order, _STABLE_ORDER) + 1):
        a, b = got.coefficients[k], again.coefficients[k]
        if not abs(a - b) <= _STABLE_TOL * (1.0 + abs(a)):
            raise ValueError(
                f"numerical_taylor({fn.name!r}, radius={radius!r}): the fit is not stable: "
                f"c_{k} = {a:.6g} on [-r, r], {b:.6g} on [-0.75 r, 0.75 r] (a radius too small "
                f"leaves rounding noise, one too large a fit that has not converged); the "
                f"default radius is {_RADIUS}")
    return got


def _fit(fn: ScalarActivation, r: float, order: int) -> TaylorCoefficients:
    """:func:`numerical_taylor`'s fit on ``[-r, r]``."""
    check = max(order, _SMOOTH_ORDER)
    central = _cheb_power(fn, -r, r, _DEG_CENTRAL, check)
    left = _cheb_power(fn, -r, 0.0, _DEG_SIDE, check)
    right = _cheb_power(fn, 0.0, r, _DEG_SIDE, check)
    # Tolerance grows with the order: endpoint derivatives of a one-sided fit are less accurate.
    tol = _SMOOTH_TOL * (1.0 + np.abs(central)) * (4.0 / r) ** np.arange(check + 1)
    n = order + 1
    if np.all(np.abs(left - right) <= tol):
        return _make(fn.name, central[:n])
    return _make(fn.name, 0.5 * (left + right)[:n], smooth=False, left=left[:n],
                 right=right[:n])


@activation_keywords
def taylor(name: Any, order: int = 3, **kw: Any) -> TaylorCoefficients:
    """Taylor coefficients ``c_0..c_order`` of activation ``name`` at 0, ``c_k = f^(k)(0)/k!``.

    ``name``: a registered activation name (``kw`` go to ``get_activation``), an activation
    object, or a callable ``f(s)``. Exact tables are used for sigmoid, tanh and identity (up to
    order 7). Examples: sigmoid -> (1/2, 1/4, 0, -1/48); tanh -> (0, 1, 0, -1/3);
    the rescaled sigmoid ``4 sigmoid(s) - 2`` -> ``taylor(rescaled_sigmoid())`` = (0, 1, 0, -1/12).
    """
    order = _check_order(order)
    if isinstance(name, str) and name in _EXACT and not kw and order < len(_EXACT[name]):
        resolve_activation(name)  # validates that the name is registered
        return _make(name, _EXACT[name][: order + 1], exact=True)
    return numerical_taylor(name, order=order, **kw)
