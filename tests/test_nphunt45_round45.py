"""nphunt45 (round 45): the NumPy engine and its theory against closed forms and torch."""

from __future__ import annotations

import math

import numpy as np
import pytest

import depthlab.theory as T


def _normal_sf(a: float) -> float:
    """P(z > a) for a standard normal z."""
    return 0.5 * math.erfc(a / math.sqrt(2.0))


def _normal_pdf(a: float) -> float:
    return math.exp(-0.5 * a * a) / math.sqrt(2.0 * math.pi)


def _abs_shift_mean(mean: float, sd: float, c: float) -> float:
    """E|s - c| for s ~ N(mean, sd^2) (folded normal)."""
    mu = mean - c
    return sd * math.sqrt(2 / math.pi) * math.exp(-mu * mu / (2 * sd * sd)) + mu * (
        1 - 2 * _normal_sf(mu / sd))


@pytest.mark.parametrize("var,mean", [(1.0, 0.0), (4.0, 0.7), (0.01, 0.25), (100.0, -3.0)])
def test_gauss_expect_of_a_jump_or_kink_away_from_zero_is_exact(var, mean):
    """gauss_expect integrates a piecewise-smooth integrand to rounding: the step 1{s > 0.3}
    was 4% low at var 1 (1.4e-2 at var 4, 4e-3 at var 100), |s - 0.3| 4.7e-4 (the plain rule's
    only breakpoint was s = 0)."""
    sd = math.sqrt(var)
    step = T.gauss_expect(lambda s: (s > 0.3) * 1.0, var, mean)
    assert step == pytest.approx(_normal_sf((0.3 - mean) / sd), rel=1e-12, abs=1e-300)
    fold = T.gauss_expect(lambda s: np.abs(s - 0.3), var, mean)
    assert fold == pytest.approx(_abs_shift_mean(mean, sd, 0.3), rel=1e-12)


def test_gauss_expect_of_hard_tanh_moments_is_exact():
    """E[hardtanh(s)^2] and E[1{|s| < 1}] (its E[f'^2]) over the variances a mean-field
    iteration visits: 2e-15 (were 8.1e-4 and 1.9e-2 on the plain rule)."""
    for q in np.geomspace(0.05, 50, 12):
        sd = math.sqrt(q)
        inside = 1.0 - 2.0 * _normal_sf(1.0 / sd)
        # E[min(s^2, 1)] = q P(|s|<1) - 2 sd phi(1/sd) + P(|s|>1)
        sq = q * inside - 2.0 * sd * _normal_pdf(1.0 / sd) + (1.0 - inside)
        got_sq = T.gauss_expect(lambda s: np.clip(s, -1.0, 1.0) ** 2, q)
        got_d = T.gauss_expect(lambda s: (np.abs(s) < 1) * 1.0, q)
        assert got_sq == pytest.approx(sq, rel=1e-12)
        assert got_d == pytest.approx(inside, rel=1e-12)


def test_q_map_of_a_users_activation_with_a_jump_is_exact():
    """A callable activation with a jump (s + 1{s > 0.3}): the scan located the jump to
    ~1e-5 and q_map was 3.5e-6 relative off at q = 1; the jump is now bisected to the last
    bit."""
    def f(s):
        return s + (s > 0.3)

    for q in (0.01, 0.04, 1.0, 3.0):
        sd = math.sqrt(q)
        a = 0.3 / sd
        exact = q + 2 * sd * _normal_pdf(a) + _normal_sf(a)
        assert T.q_map(f, q, 1.0, 0.0) == pytest.approx(exact, rel=1e-12)


def test_find_kinks_places_jumps_and_kinks_to_the_last_bits():
    """find_kinks: a jump of f at 0.3 and at -2.2 located to a few ulps (was 1.2e-5 off),
    a kink between straight sides exactly, a jump of f' between curved sides (given df) to a
    few ulps."""
    from depthlab.theory.gaussian import find_kinks

    (t,) = find_kinks(lambda s: (s > 0.3) * 1.0)
    assert abs(t - 0.3) < 1e-15
    (t,) = find_kinks(lambda s: (s < -2.2) * 2.0)
    assert abs(t + 2.2) < 4e-15
    (t,) = find_kinks(lambda s: np.maximum(s - 0.7, 0.0))
    assert abs(t - 0.7) < 1e-12
    (t,) = find_kinks(lambda s: (s > 1.3) * (s * s - 1.69), lambda s: (s > 1.3) * 2.0 * s)
    assert abs(t - 1.3) < 1e-15
