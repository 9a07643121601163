"""Mean-field signal propagation in wide random networks.

Poole et al. 2016; Schoenholz et al. 2017. Weights ``W_ij ~ N(0, sigma_w^2 / n)``, biases
``b_i ~ N(0, sigma_b^2)``, ``z, z1, z2`` i.i.d. N(0, 1):

* length map    ``q_{l} = sigma_w^2 E[f(sqrt(q_{l-1}) z)^2] + sigma_b^2``, fixed point ``q*``;
* slope         ``chi1 = sigma_w^2 E[f'(sqrt(q*) z)^2]`` (per-layer growth of squared gradients);
* correlation   ``c_l = (sigma_w^2 E[f(u1) f(u2)] + sigma_b^2) / q*``,
                ``u1 = sqrt(q*) z1``, ``u2 = sqrt(q*) (c_{l-1} z1 + sqrt(1 - c_{l-1}^2) z2)``,
  fixed point ``c*`` (1 in the ordered phase ``chi1 < 1``, < 1 in the chaotic phase ``chi1 > 1``);
* depth scale   ``1 / xi_c = -ln(sigma_w^2 E[f'(u1) f'(u2)])`` at ``c = c*``
  (``= -ln chi1`` in the ordered phase, infinite at criticality ``chi1 = 1``);
* length scale  ``1 / xi_q = -ln |chi_q|``, ``chi_q = dq_l / dq_{l-1}`` at ``q*``
  ``= sigma_w^2 E[f'(s)^2 + f(s) f''(s)] = sigma_w^2 E[f(s) f'(s) s] / q*`` (Stein's lemma;
  no ``f''`` needed), ``s ~ N(0, q*)``: how fast the length map reaches ``q*``
  (``|q_l - q*| ~ e^(-l / xi_q)``), finite at the order-to-chaos transition;
* networks are trainable up to depth ``~ 6 xi_c``.

All expectations use composite Gaussian quadrature (``gaussian.normal_rule``; product rules
in 2-D).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import brentq

from ..validators import real
from .gaussian import ScalarActivation, activation_keywords, activation_rule, correlated_pair
from .gaussian import resolve_activation as _resolve

Q_MAX = 1e12       # q above this is reported as diverging (q* = inf)
Q_MIN = 1e-12      # q below this is reported as collapsing (q* = 0)
_Q_EVAL_MIN = 1e-20  # variance used for chi1 / c-map when q* = 0 (the small-signal limit)
CRITICAL_CHECK = 1e-6  # critical_sigma_w2: |chi1 - 1| at its answer above this is a jump, no zero


@dataclass(frozen=True)
class MeanField:
    """Mean-field fixed point and depth scale of a random network.

    ``q_star``: fixed point of the length map (``inf`` when it diverges, 0 when it collapses);
    ``chi1``: ``sigma_w^2 E[f'(sqrt(q*) z)^2]``; ``c_star``: fixed point of the correlation map;
    ``chi_c``: ``sigma_w^2 E[f'(u1) f'(u2)]`` at ``c*``; ``xi_c = -1 / ln chi_c``;
    ``phase`` in {ordered, critical, chaotic}; ``trainable_depth = 6 xi_c``;
    ``converged``: whether the length map reached a finite fixed point;
    ``chi_q``: the length map's slope at ``q*`` (:func:`length_map_slope`) and
    ``xi_q = -1 / ln |chi_q|`` its depth scale (``inf`` where no finite ``q*`` attracts:
    ``q* = inf``, ``|chi_q| >= 1`` or ``chi_q`` within ``critical_tol`` of 1).
    """

    name: str
    sigma_w2: float
    sigma_b2: float
    q_star: float
    chi1: float
    c_star: float
    chi_c: float
    xi_c: float
    phase: str
    trainable_depth: float
    converged: bool = True
    chi_q: float = math.nan
    xi_q: float = math.nan


def _check_sigmas(sigma_w2: float, sigma_b2: float) -> None:
    for label, v in (("sigma_w2", sigma_w2), ("sigma_b2", sigma_b2)):
        if isinstance(v, bool) or not isinstance(v, numbers.Real):  # "1.5", None, True
            raise TypeError(f"{label} must be a real number, got {v!r}")
    # sigma_w2 = 0 (zero weights, as propagate's weight variance 0): every unit outputs its
    # bias, so q* = sigma_b2, chi1 = chi_q = 0, c* = 1 and xi_c = 0 (the maps below give that)
    if not (np.isfinite(sigma_w2) and sigma_w2 >= 0):
        raise ValueError(f"sigma_w2 must be finite and >= 0, got {sigma_w2!r}")
    if not (np.isfinite(sigma_b2) and sigma_b2 >= 0):
        raise ValueError(f"sigma_b2 must be finite and >= 0, got {sigma_b2!r}")


def _fn(name: Any, kw: dict) -> ScalarActivation:
    return _resolve(name, **kw)


def _check_values(fn: ScalarActivation, what: str, s: np.ndarray, vals: np.ndarray) -> None:
    """ValueError naming the activation and the first ``s`` where ``f`` (or ``f'``) is NaN: a
    NaN there is not a diverging map (``inf``), it has no expectation at all."""
    bad = np.isnan(vals)
    if bad.any():
        raise ValueError(f"activation {fn.name!r} gives {what} = nan at s = "
                         f"{float(np.asarray(s)[bad][0]):.4g}: its Gaussian moments are undefined, "
                         "so there is no mean-field prediction (expected a function finite on "
                         "the whole real line)")


def _q_map(fn: ScalarActivation, q: float, sigma_w2: float, sigma_b2: float) -> float:
    s, w = activation_rule(fn, q)
    a = fn.f(s)
    _check_values(fn, "f(s)", s, a)
    with np.errstate(over="ignore"):  # inf: the map diverges, which the caller reports
        return float(sigma_w2 * (w @ (a * a)) + sigma_b2)


def _chi1(fn: ScalarActivation, q: float, sigma_w2: float) -> float:
    s, w = activation_rule(fn, q)
    d = fn.df(s)
    _check_values(fn, "f'(s)", s, d)
    return float(sigma_w2 * (w @ (d * d)))


def _chi_q(fn: ScalarActivation, q: float, sigma_w2: float) -> float:
    """``d q_map / dq = sigma_w^2 E[f(s) f'(s) s] / q``, ``s ~ N(0, q)`` (the derivative of
    ``E[f(sqrt(q) z)^2]`` in ``q``, exact for kinked ``f``)."""
    s, w = activation_rule(fn, q)
    a, d = fn.f(s), fn.df(s)
    _check_values(fn, "f(s)", s, a)
    _check_values(fn, "f'(s)", s, d)
    with np.errstate(over="ignore", invalid="ignore"):
        return float(sigma_w2 * (w @ (a * d * s)) / q)


def _on_rows(g, u1: np.ndarray) -> np.ndarray:
    """``g(u1)`` for an elementwise ``g``. The pair grid's ``u1`` usually repeats one column
    (stride 0 along axis 1): then ``g`` runs on that column only and the result is broadcast,
    the same values at a fraction of the cost."""
    if u1.ndim == 2 and u1.strides[1] == 0:
        return np.broadcast_to(g(u1[:, :1]), u1.shape)
    return g(u1)


PAIRS_KEPT = 3  # grids of correlated_pair a fixed-point search keeps (3 x 3 arrays of ~1 MB)


def _pair(fn: ScalarActivation, c: float, q: float, pairs: dict | None
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``correlated_pair(q, q, c, fn.kinks)``, taken from ``pairs`` (the last
    :data:`PAIRS_KEPT` grids of one fixed-point search at this ``q``, keyed by ``c``) when it
    was built there already: the correlation map and ``chi_c`` at ``c*`` read the same grid."""
    if pairs is None:
        return correlated_pair(q, q, c, fn.kinks)
    key = float(c)
    if key not in pairs:
        if len(pairs) >= PAIRS_KEPT:
            del pairs[next(iter(pairs))]  # the oldest
        pairs[key] = correlated_pair(q, q, c, fn.kinks)
    return pairs[key]


def _c_map(fn: ScalarActivation, c: float, q: float, sigma_w2: float, sigma_b2: float,
           pairs: dict | None = None) -> float:
    """c_{l+1} = (sigma_w^2 E[f(u1) f(u2)] + sigma_b^2) / q for the Gaussian pair of
    variances q and correlation c (``pairs``: :func:`_pair`'s grids)."""
    u1, u2, W = _pair(fn, c, q, pairs)
    return float(sigma_w2 / q * np.sum(W * _on_rows(fn.f, u1) * fn.f(u2)) + sigma_b2 / q)


def _chi_c(fn: ScalarActivation, c: float, q: float, sigma_w2: float,
           pairs: dict | None = None) -> float:
    """chi_c = sigma_w^2 E[f'(u1) f'(u2)] for the Gaussian pair of variances q and
    correlation c (``pairs``: :func:`_pair`'s grids)."""
    u1, u2, W = _pair(fn, c, q, pairs)
    return float(sigma_w2 * np.sum(W * _on_rows(fn.df, u1) * fn.df(u2)))


@activation_keywords
def q_map(name: Any, q: float, sigma_w2: float, sigma_b2: float = 0.0, **kw: Any) -> float:
    """One step of the length map: ``sigma_w^2 E[f(sqrt(q) z)^2] + sigma_b^2``."""
    _check_sigmas(sigma_w2, sigma_b2)
    q = real("q", q, low=0.0)
    return _q_map(_fn(name, kw), float(q), sigma_w2, sigma_b2)


@activation_keywords
def c_map(name: Any, c: float, sigma_w2: float, sigma_b2: float = 0.0, q: float | None = None,
          **kw: Any) -> float:
    """One step of the correlation map ``(sigma_w^2 E[f(u1) f(u2)] + sigma_b^2) / q``.

    ``u1, u2`` have variance ``q`` (default: ``q*``) and correlation ``c``.
    """
    _check_sigmas(sigma_w2, sigma_b2)
    c = real("c", c)
    if q is not None:
        q = real("q", q)
    fn = _fn(name, kw)
    if q is None:
        q, _, _ = _q_fixed_point(fn, sigma_w2, sigma_b2)
        q = _q_eval(q)
    if not (np.isfinite(q) and q > 0):
        raise ValueError(f"q must be finite and > 0, got {q!r}")
    if not -1.0 <= c <= 1.0:
        raise ValueError(f"c must lie in [-1, 1], got {c!r}")
    return _c_map(fn, float(c), float(q), sigma_w2, sigma_b2)


def _q_eval(q: float) -> float:
    """Variance at which to evaluate chi1 and the c-map when q* is 0 or infinite.

    q* = inf: the limit q -> inf, evaluated at ``Q_MAX`` (the relu family's chi1 does not depend
    on q; for elu, selu, gelu, swish, ... only the large-q limit describes a diverging net)."""
    if q == 0.0:
        return _Q_EVAL_MIN
    if not np.isfinite(q):
        return Q_MAX
    return q


def _root(h: Callable[[float], float], a: float, b: float) -> float:
    """The root of ``h`` in ``[a, b]`` (``0 < a < b <= 4 a``, a sign change), found by Brent's
    method on ``h(a t) / a`` for ``t`` in ``[1, b / a]``: the bracket of the search's last two
    points, in units of its lower end. Brent's method on ``h`` over ``(lo, q)`` failed to
    converge in its 100 iterations for a ``q*`` near ``sigma_b^2 = 1e-30`` (elu, softsign at
    ``sigma_w^2 = 1``: 19 decades to halve) or ``1e-300`` (every activation with
    ``sigma_w^2 f'(0)^2 < 1``: the tolerance and the iterates were subnormal numbers)."""
    t = brentq(lambda t: h(a * t) / a, 1.0, b / a, xtol=1e-15, rtol=1e-13)
    return float(a * t)


def _q_fixed_point(fn: ScalarActivation, sigma_w2: float, sigma_b2: float,
                   max_iter: int = 200, tol: float = 1e-12) -> tuple[float, bool, float]:
    """Fixed point of the length map by iteration from q = 1; returns (q*, converged, last q).

    Divergence beyond ``q_cap = Q_MAX max(1, sigma_w^2 + sigma_b^2)`` gives ``inf`` (relative
    to the weights' scale: a bounded ``|f| <= 1`` has a finite ``q* <= sigma_w^2 + sigma_b^2``
    however large ``sigma_w^2`` is); collapse below ``Q_MIN`` gives 0, only without biases
    (``q >= sigma_b^2 > 0`` otherwise, so a tiny ``q*`` is still a fixed point). When the
    iteration is slow (near a bifurcation) the fixed point is found by bracketing a root of
    ``h(q) = q_map(q) - q`` in the direction the iterates move, then Brent's method.
    """
    q_cap = min(Q_MAX * max(1.0, sigma_w2 + sigma_b2), 1e307)
    q = 1.0
    for _ in range(max_iter):
        q_new = _q_map(fn, q, sigma_w2, sigma_b2)
        if not np.isfinite(q_new) or q_new > q_cap:
            return math.inf, False, q
        if q_new < Q_MIN and sigma_b2 == 0.0:
            return 0.0, True, q_new
        if abs(q_new - q) <= tol * q:
            return q_new, True, q_new
        q = q_new

    def h(x: float) -> float:
        return _q_map(fn, x, sigma_w2, sigma_b2) - x

    h_q = h(q)
    if h_q < 0:  # moving down: find lo < q with h(lo) > 0
        lo = q
        floor = Q_MIN if sigma_b2 == 0.0 else 0.0  # h(lo) > 0 once lo < sigma_b^2
        while lo > floor:
            lo, above = lo / 4.0, lo  # h(above) <= 0
            if h(lo) > 0:
                return _root(h, lo, above), True, q
        # no positive root: the iterates drift to 0 (e.g. tanh, sigma_b2 = 0, sigma_w2 <= 1)
        return (0.0, True, q) if sigma_b2 == 0.0 else (q, False, q)
    if h_q > 0:  # moving up: find hi > q with h(hi) < 0
        hi = q
        while hi < q_cap:
            hi, below = hi * 4.0, hi  # h(below) >= 0
            if h(hi) < 0:
                return _root(h, below, hi), True, q
        return math.inf, False, q
    return q, True, q


def _memoized(h: Callable[[float], float]) -> Callable[[float], float]:
    """``h`` with its values remembered by argument: the fixed-point search asks for some
    points twice (Brent's method starts from the bracket's two ends, already evaluated while
    bracketing, and the upper end is checked once more), and each value of the correlation
    map is a 2-D quadrature. The same numbers, fewer grids."""
    seen: dict[float, float] = {}

    def cached(c: float) -> float:
        key = float(c)
        if key not in seen:
            seen[key] = h(key)
        return seen[key]

    return cached


def _c_fixed_point(fn: ScalarActivation, q: float, sigma_w2: float, sigma_b2: float,
                   chi1: float, critical_tol: float, pairs: dict | None = None) -> float:
    """Stable fixed point of the correlation map: 1 unless chi1 > 1, else the root in [-1, 1)
    (``pairs``: :func:`_pair`'s grids, left there for ``chi_c`` at the root)."""
    if chi1 <= 1.0 + critical_tol:
        return 1.0
    h = _memoized(lambda c: _c_map(fn, c, q, sigma_w2, sigma_b2, pairs) - c)
    # h(1) = 0 with slope chi1 - 1 > 0, so h < 0 just below 1; find such a point.
    hi = None
    for k in range(1, 13):
        c = 1.0 - 10.0 ** (-k)
        if h(c) < 0:
            hi = c
            break
    if hi is None:
        return 1.0
    lo = -1.0
    h_lo = h(lo)
    if h_lo == 0.0:  # odd f without biases: c = -1 is a fixed point, repelling when chi1 > 1
        for k in range(1, 13):
            if h(-1.0 + 10.0 ** (-k)) > 0:
                lo, h_lo = -1.0 + 10.0 ** (-k), 1.0
                break
    if h_lo <= 0:  # another root below (or -1 attracting): the sign change nearest to 1
        grid = np.linspace(-1.0, hi, 41)
        vals = [h(c) for c in grid]
        lo = None
        for a, b, va, vb in zip(grid[:-1], grid[1:], vals[:-1], vals[1:]):
            if va >= 0 > vb or va > 0 >= vb:
                lo, hi = a, b
        if lo is None:
            return 1.0
    if h(hi) == 0.0:
        return hi
    return float(brentq(h, lo, hi, xtol=1e-13, rtol=1e-13))


@activation_keywords
def meanfield(
    name: Any,
    sigma_w2: float,
    sigma_b2: float = 0.0,
    *,
    critical_tol: float = 1e-9,
    **kw: Any,
) -> MeanField:
    """Fixed points ``q*``, ``c*``, slope ``chi1`` and depth scale ``xi_c`` for activation ``name``.

    ``q*`` by iterating ``q <- sigma_w^2 E[f(sqrt q z)^2] + sigma_b^2`` from ``q = 1``;
    ``chi1 = sigma_w^2 E[f'(sqrt(q*) z)^2]``; phase ordered/chaotic as ``chi1 <> 1``
    (critical within ``critical_tol``); ``xi_c = -1 / ln(sigma_w^2 E[f'(u1) f'(u2)])`` at ``c*``;
    ``trainable_depth = 6 xi_c``. ``kw`` go to the activation. When the length map diverges
    (``q* = inf``) chi1 is its large-q limit (``sigma_w^2 (a_+^2 + a_-^2) / 2`` for asymptotic
    slopes ``a_+``, ``a_-``); when it collapses (``q* = 0``), its small-q limit.
    ``sigma_w2 = 0`` (zero weights, accepted as :func:`~depthlab.theory.variance.propagate`
    accepts a weight variance 0): ``q* = sigma_b2``, ``chi1 = chi_c = chi_q = 0``, ``c* = 1``,
    ``xi_c = xi_q = 0``, phase ordered. ValueError for an activation that gives NaN on the
    Gaussian (no expectation exists) and for a ``critical_tol`` that is not a finite number
    ``>= 0``.
    """
    _check_sigmas(sigma_w2, sigma_b2)
    sigma_w2, sigma_b2 = float(sigma_w2), float(sigma_b2)
    critical_tol = real("critical_tol", critical_tol, low=0.0)
    fn = _fn(name, kw)
    q_star, converged, _ = _q_fixed_point(fn, sigma_w2, sigma_b2)
    q = _q_eval(q_star)
    chi1 = _chi1(fn, q, sigma_w2)
    if abs(chi1 - 1.0) <= critical_tol:
        phase = "critical"
    else:
        phase = "ordered" if chi1 < 1.0 else "chaotic"
    pairs: dict = {}  # the search's last grids: chi_c at c* reads the one built for c*
    c_star = _c_fixed_point(fn, q, sigma_w2, sigma_b2, chi1, critical_tol, pairs)
    chi_c = chi1 if c_star == 1.0 else _chi_c(fn, c_star, q, sigma_w2, pairs)
    pairs.clear()
    if phase == "critical" or not 0.0 < chi_c < 1.0:
        xi_c = math.inf if phase == "critical" or chi_c >= 1.0 else 0.0
    else:
        xi_c = -1.0 / math.log(chi_c)
    chi_q = _chi_q(fn, q, sigma_w2)
    return MeanField(
        name=fn.name, sigma_w2=sigma_w2, sigma_b2=sigma_b2, q_star=q_star, chi1=chi1,
        c_star=c_star, chi_c=chi_c, xi_c=xi_c, phase=phase, trainable_depth=6.0 * xi_c,
        converged=converged, chi_q=chi_q, xi_q=_length_depth_scale(chi_q, q_star, critical_tol),
    )


def _length_depth_scale(chi_q: float, q_star: float, critical_tol: float) -> float:
    """``xi_q = -1 / ln |chi_q|``, and ``inf`` where no finite ``q*`` attracts: a diverging
    length map (``q* = inf``) or a slope within ``critical_tol`` of 1, as ``xi_c``'s rule (the
    identity at sigma_w^2 = 1 has ``chi_q = 1 - 3e-16`` by rounding: ``xi_q`` was 3e15)."""
    if math.isinf(q_star) or abs(chi_q - 1.0) <= critical_tol:
        return math.inf
    return _depth_scale(chi_q)


def _depth_scale(chi: float) -> float:
    """``-1 / ln |chi|``: the layers over which a deviation decaying by ``chi`` per layer
    shrinks by ``e``; ``inf`` for ``|chi| >= 1`` (no decay), 0 for ``chi = 0``, NaN for NaN."""
    r = abs(chi)
    if math.isnan(r):
        return math.nan
    if r >= 1.0:
        return math.inf
    return 0.0 if r == 0.0 else -1.0 / math.log(r)


@activation_keywords
def length_map_slope(name: Any, sigma_w2: float, sigma_b2: float = 0.0, q: float | None = None,
                     **kw: Any) -> float:
    """``chi_q = d q_l / d q_{l-1} = sigma_w^2 E[f'(s)^2 + f(s) f''(s)]
    = sigma_w^2 E[f(s) f'(s) s] / q``, ``s ~ N(0, q)`` (Stein's lemma), at ``q`` (default:
    the fixed point ``q*`` of :func:`meanfield`; its small- or large-``q`` limit where ``q*``
    is 0 or infinite). ``-1 / ln |chi_q|`` is Schoenholz et al. (2017)'s ``xi_q``
    (:attr:`MeanField.xi_q`)."""
    _check_sigmas(sigma_w2, sigma_b2)
    fn = _fn(name, kw)
    if q is None:
        q = _q_eval(_q_fixed_point(fn, float(sigma_w2), float(sigma_b2))[0])
    q = real("q", q, positive=True)
    return _chi_q(fn, float(q), float(sigma_w2))


def slope_chi1(name: Any, sigma_w2: float, sigma_b2: float = 0.0, **kw: Any) -> float:
    """``chi1 = sigma_w^2 E[f'(sqrt(q*) z)^2]`` alone (:func:`meanfield`'s, without the
    correlation map's fixed point, which is slow to reach near criticality: leaky_relu at He's
    ``sigma_w^2 = 2`` took 3 s); ``q*`` as in :func:`meanfield`."""
    _check_sigmas(sigma_w2, sigma_b2)
    fn = _fn(name, kw)
    q_star, _, _ = _q_fixed_point(fn, float(sigma_w2), float(sigma_b2))
    return _chi1(fn, _q_eval(q_star), float(sigma_w2))


@activation_keywords
def critical_sigma_w2(
    name: Any,
    sigma_b2: float = 0.0,
    *,
    bracket: tuple[float, float] = (1e-3, 1e3),
    **kw: Any,
) -> float:
    """The ``sigma_w^2`` where ``chi1(sigma_w^2, sigma_b^2) = 1`` (order-to-chaos transition).

    Solved with Brent's method on ``chi1 - 1`` over ``bracket``; ValueError if it has no sign
    change there (e.g. an activation whose chi1 never reaches 1), or if ``chi1`` jumps over 1
    instead of passing through it (the fixed point ``q*`` reached from ``q = 1`` switches from
    0 to infinity: gelu, swish, mish with ``sigma_b2`` 0 or 0.05; ``chi1`` is checked to be
    within ``CRITICAL_CHECK`` of 1 at the answer).
    """
    _check_sigmas(1.0, sigma_b2)
    fn = _fn(name, kw)

    def g(sw2: float) -> float:
        q, _, _ = _q_fixed_point(fn, sw2, float(sigma_b2))
        return _chi1(fn, _q_eval(q), sw2) - 1.0

    if not isinstance(bracket, (tuple, list)) or len(bracket) != 2:
        raise ValueError(f"bracket must be a pair (lo, hi), got {bracket!r}")
    lo, hi = (real(f"bracket[{i}]", v, positive=True) for i, v in enumerate(bracket))
    if not lo < hi:
        raise ValueError(f"bracket must satisfy 0 < lo < hi, got {bracket!r}")
    g_lo, g_hi = g(lo), g(hi)
    if g_lo * g_hi > 0:
        if g_lo == g_hi == -1.0:  # chi1 = sigma_w^2 E[f'(s)^2] with f' = 0 almost everywhere
            raise ValueError(
                f"{fn.name!r} has no critical sigma_w2: its derivative is 0 almost everywhere, "
                "so chi1 = sigma_w2 E[f'(s)^2] = 0 for every sigma_w2 (no gradient passes "
                "back; the order-to-chaos transition needs a differentiable activation)")
        raise ValueError(
            f"chi1 - 1 does not change sign on sigma_w2 in {bracket} for {fn.name!r} "
            f"(values {g_lo + 1:.4g} and {g_hi + 1:.4g}); pass a wider bracket"
        )
    # maxiter: chi1 - 1 is flat within rounding just past a q* = 0 transition (penalized_tanh,
    # sigma_b2 = 0: 104 iterations; scipy's default 100 raised RuntimeError)
    root = float(brentq(g, lo, hi, xtol=1e-12, rtol=1e-12, maxiter=1000))
    if abs(g(root)) > CRITICAL_CHECK:
        # a sign change by a jump, not a zero: the fixed point reached from q = 1 switches
        # there (gelu, swish, mish without large biases: q* = 0 with chi1 = sigma_w^2 f'(0)^2
        # below, q* = inf with chi1 = sigma_w^2 (a_+^2 + a_-^2) / 2 above), and chi1 never is 1
        below, above = (_q_fixed_point(fn, root * (1.0 + d), float(sigma_b2))[0]
                        for d in (-1e-9, 1e-9))
        raise ValueError(
            f"{fn.name!r} with sigma_b2 = {float(sigma_b2):g} has no critical sigma_w2 in "
            f"{tuple(bracket)}: chi1 jumps over 1 at sigma_w2 = {root:.6g} (from "
            f"{g(root * (1.0 - 1e-9)) + 1:.4g} to {g(root * (1.0 + 1e-9)) + 1:.4g}), where the "
            f"length map's fixed point reached from q = 1 jumps from q* = {below:.4g} to "
            f"{above:.4g}; a larger sigma_b2 gives a continuous transition"
        )
    return root


@activation_keywords
def gradient_growth(name: Any, sigma_w2: float, sigma_b2: float, depth: int,
                    **kw: Any) -> float:
    """Predicted ratio of mean squared gradients, first over last of ``depth`` layers:
    ``chi1^(depth - 1)`` (``chi1`` from :func:`slope_chi1`: the correlation map's fixed point
    that :func:`meanfield` also solves is not needed here)."""
    if isinstance(depth, bool) or not isinstance(depth, (int, np.integer)) or depth < 1:
        raise ValueError(f"depth must be a positive integer, got {depth!r}")
    chi1 = slope_chi1(name, sigma_w2, sigma_b2, **kw)
    try:
        return float(chi1 ** (int(depth) - 1))
    except OverflowError:  # chi1 > 1 over 10**30 layers: the ratio is beyond any float
        return math.inf
