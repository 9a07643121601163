"""reprohunt29, round 29: theory numbers checked against independent computations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from depthlab import theory as T
from depthlab.theory.gaussian import resolve_activation


def _pair_expectation(g, q: float, c: float) -> float:
    """``E[g(u1, u2)]`` for a Gaussian pair of variance ``q`` and correlation ``c``, by nested
    composite Gauss-Legendre: over z1 with a break at 0, and for each z1 over z2 with a break
    where ``u2 = 0`` (so the kinks of f and jumps of f' at 0 are panel edges)."""
    gx, gw = np.polynomial.legendre.leggauss(20)

    def rule(extra: float) -> tuple[np.ndarray, np.ndarray]:
        br = np.unique(np.concatenate([np.linspace(-10, 10, 81), [extra]]))
        lo, hi = br[:-1, None], br[1:, None]
        h = (hi - lo) / 2
        z = (lo + h * (1 + gx)).ravel()
        return z, (h * gw * np.exp(-0.5 * (lo + h * (1 + gx)) ** 2)).ravel() / math.sqrt(
            2 * math.pi)

    r, s = math.sqrt(q), math.sqrt(1 - c * c)
    z1, w1 = rule(0.0)
    total = 0.0
    for a, wa in zip(z1, w1):
        z2, w2 = rule(float(np.clip(-c * a / s, -10, 10)))
        total += wa * float(np.sum(w2 * g(np.full_like(z2, r * a), r * (c * a + s * z2))))
    return total


@pytest.mark.parametrize("name, sigma_w2, sigma_b2", [
    ("penalized_tanh", 3.0, 0.0),    # chi_c was 3.5e-4 high: xi_c 37.37 vs 36.90
    ("penalized_tanh", 4.0, 0.05),   # chi_c 2.5e-4 low: xi_c 26.26 vs 26.44
    ("selu", 1.5, 0.05),             # chi_c 8e-5 low: xi_c 12.646 vs 12.659
])
def test_depth_scale_of_an_activation_whose_derivative_jumps_at_0_in_the_chaotic_phase(
        name: str, sigma_w2: float, sigma_b2: float) -> None:
    """chi_c = sigma_w^2 E[f'(u1) f'(u2)] at c*: the jump of f' on the line u2 = 0 (oblique in
    the product grid) was integrated inside a panel, so xi_c = -1/ln chi_c erred by ~1%."""
    mf = T.meanfield(name, sigma_w2, sigma_b2)
    assert mf.phase == "chaotic" and 0 < mf.c_star < 1
    fn = resolve_activation(name)
    ref = sigma_w2 * _pair_expectation(lambda u1, u2: fn.df(u1) * fn.df(u2), mf.q_star,
                                       mf.c_star)
    assert mf.chi_c == pytest.approx(ref, rel=1e-6)
    assert mf.xi_c == pytest.approx(-1.0 / math.log(ref), rel=1e-5)


def test_relu_pair_moments_match_the_arc_cosine_kernel() -> None:
    """c_map for relu against Cho & Saul's closed form; E[1(u1>0) 1(u2>0)] = (pi - arccos c)
    / (2 pi) through the internal chi_c (it was 1.8e-3 low at c = 0.5)."""
    from depthlab.theory.meanfield import _chi_c

    fn = resolve_activation("relu")
    for c in (-0.9, -0.5, 0.3, 0.5, 0.7, 0.9):
        k = (math.sqrt(1 - c * c) + (math.pi - math.acos(c)) * c) / (2 * math.pi)
        assert T.c_map("relu", c, 2.0, 0.0, q=1.3) == pytest.approx(2.0 * k, rel=1e-9)
        assert _chi_c(fn, c, 1.3, 2.0) == pytest.approx(
            2.0 * (math.pi - math.acos(c)) / (2 * math.pi), rel=1e-9)
