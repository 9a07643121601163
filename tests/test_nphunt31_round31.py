"""Round 31 (nphunt31): the SELU moment map off Klambauer's domain.

Each number is checked against a direct computation: scipy's quadrature of the SELU over the
Gaussian, an iteration of the map, or the exact large-scale limit of the map.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.integrate import quad

import depthlab as dl
from depthlab.activations import SELU_ALPHA, SELU_LAMBDA

T = dl.theory


def _selu(z):
    return SELU_LAMBDA * np.where(z > 0, z, SELU_ALPHA * np.expm1(np.minimum(z, 0)))


def _quad_moments(m: float, s: float) -> tuple[float, float]:
    """Mean and variance of selu(z), z = m + s u, u ~ N(0, 1), by quadrature over u of the
    deviation from c = selu(m) (lambda s u exactly where z and m are both > 0): no
    cancellation, whatever m."""
    c = float(_selu(np.float64(m)))

    def dev(u):
        z = m + s * u
        return SELU_LAMBDA * s * u if (z > 0 and m > 0) else float(_selu(np.float64(z))) - c

    def pdf(u):
        return math.exp(-0.5 * u * u) / math.sqrt(2 * math.pi)

    pts = [-m / s] if abs(m / s) < 14 else None
    e1 = quad(lambda u: dev(u) * pdf(u), -14, 14, points=pts, limit=400)[0]
    e2 = quad(lambda u: dev(u) ** 2 * pdf(u), -14, 14, points=pts, limit=400)[0]
    return c + e1, e2 - e1 * e1


@pytest.mark.parametrize("mu,nu,omega,tau", [(1e4, 1.0, 1.0, 1.0), (1e7, 2.0, 1.0, 1.5),
                                             (3e9, 1e-3, 1.5, 1.0), (4.0, 1.0, 1.0, 1.0)])
def test_selu_map_variance_of_a_large_mean_is_not_lost_to_cancellation(mu, nu, omega, tau):
    # the variance was E[y^2] - mean^2: at mean 1.05e10 (sd 1.05) it read 16384.0, at 3.2e9
    # (sd 0.033) 0.0, which made selu_fixed_point(omega=3, tau=3) refuse 'nu ... got 0.0'
    m, v = T.selu_map(mu, nu, omega, tau)
    qm, qv = _quad_moments(mu * omega, math.sqrt(nu * tau))
    assert m == pytest.approx(qm, rel=1e-12)
    assert v == pytest.approx(qv, rel=1e-7)


def test_selu_trajectory_of_growing_variances_follows_the_map_until_float64_ends():
    # tau = 3 (weights sqrt(3) too large): the variance grows by lambda^2 tau (1/2 - 1/(2 pi))
    # per layer at large scale; the map raised 'OverflowError: math range error' at a
    # variance of ~1e20 (E[e^z 1(z <= 0)] as exp(s^2/2 + log Phi(-s)) cancelled to exp(+-1e4))
    traj = T.selu_trajectory(0.0, 1.0, 1000, tau=3.0)
    var = traj["var"].to_numpy()
    assert np.all(np.isfinite(var)) and var[-1] > 1e50
    limit = SELU_LAMBDA**2 * 3.0 * (0.5 - 1 / (2 * math.pi))
    assert var[-1] / var[-2] == pytest.approx(limit, rel=1e-9)
    # past float64's range: an OverflowError naming the layer, not 'math range error'
    with pytest.raises(OverflowError, match=r"layer \d+"):
        T.selu_trajectory(0.0, 1.0, 8000, tau=3.0)


@pytest.mark.parametrize("tau", [3.0, 2.7, 0.3, 0.45])
def test_selu_fixed_point_where_there_is_none_is_refused(tau):
    # tau 3.0 / 2.7: the variance grows without bound; 0.3 / 0.45: it shrinks to 0. The
    # function returned (-4.9e-07, -9277652.4), (-4.6e-07, -9891.5), (-1.5e-07, -6.6e-08),
    # (-1.3e-06, 4.8e-11): negative or vanishing variances as fixed points
    with pytest.raises(ValueError, match=r"no SELU fixed point .*tau=.*variance"):
        T.selu_fixed_point(omega=0.0, tau=tau)


@pytest.mark.parametrize("omega,tau", [(0.0, 2.5), (0.0, 0.6), (0.1, 1.5), (1.5, 1.0)])
def test_selu_fixed_point_off_the_domain_is_a_fixed_point(omega, tau):
    # where one exists its (mu, nu) maps to itself with nu > 0 ((1.5, 1): (0, 1), since mu = 0
    # makes omega irrelevant, though it repels); the refusal above does not reach these
    mu, nu = T.selu_fixed_point(omega=omega, tau=tau)
    assert nu > 0
    m2, v2 = T.selu_map(mu, nu, omega, tau)
    assert m2 == pytest.approx(mu, rel=1e-9, abs=1e-12) and v2 == pytest.approx(nu, rel=1e-9)


@pytest.mark.parametrize("name,exact", [("elu", (0.0, 1.0, 0.25, 1 / 12)),
                                        ("tanh", (0.0, 1.0, 0.0, -1 / 3)),
                                        ("softsign", (0.0, 1.0, 0.0, 1.0))])
@pytest.mark.parametrize("radius", [1e-3, 5.0])
def test_numerical_taylor_at_an_odd_radius_is_right_or_refused(name, exact, radius):
    # radius 1e-3: elu c_3 = -1110, softsign -4441 (rounding noise / r^3); radius 5: tanh
    # c_3 = -0.255, softsign 0.958 (the fit had not converged), all returned as coefficients
    try:
        got = T.numerical_taylor(name, 3, radius=radius).coefficients
    except ValueError as err:
        assert f"radius={radius!r}" in str(err) and "not stable" in str(err)
        return
    assert got == pytest.approx(exact, abs=1e-5)
    assert T.numerical_taylor(name, 3).coefficients == pytest.approx(exact, abs=1e-6)


@pytest.mark.parametrize("mu,nu", [(-30.0, 1.0), (-20.0, 0.25), (-12.0, 0.5)])
def test_selu_map_variance_of_a_mean_far_below_0_is_not_lost_to_cancellation(mu, nu):
    # z ~ N(mu, nu) with z > 0 beyond float64's reach: selu(z) = lam alpha (e^z - 1), whose
    # variance is (lam alpha)^2 e^{2 mu + nu} (e^nu - 1); it was E[y^2] - mean^2 with both
    # ~ (lam alpha)^2 = 3.09: 0.0 at (-30, 1) (exact 8.2e-26), 4.4e-16 at (-20, 0.25) (4.8e-18)
    m, v = T.selu_map(mu, nu, 1.0, 1.0)
    la = SELU_LAMBDA * SELU_ALPHA
    assert m == pytest.approx(la * math.expm1(mu + nu / 2), rel=1e-12, abs=0)
    assert v == pytest.approx(la**2 * math.exp(2 * mu + nu) * math.expm1(nu), rel=1e-9, abs=0)
