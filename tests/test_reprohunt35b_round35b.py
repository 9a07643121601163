"""Round 35b (reprohunt35b): mean-field correlation map near c = 1."""

import math

import pytest

from depthlab.theory import c_map, meanfield


@pytest.mark.parametrize("c", [0.999, 0.9999, 0.99999])
def test_relu_correlation_map_near_one_matches_the_arc_cosine_kernel(c):
    # Cho & Saul: E[relu(u1) relu(u2)] = q (sin t + (pi - t) c) / (2 pi), t = arccos c; at He's
    # sigma_w2 = 2 without biases the map's step c' - c is what fixes c* and xi_c near 1
    t = math.acos(c)
    step = (math.sin(t) + (math.pi - t) * c) / math.pi - c
    got = c_map("relu", c, 2.0, 0.0, q=1.0) - c
    assert got == pytest.approx(step, rel=1e-3, abs=1e-13)


def test_chaotic_selu_near_its_transition_has_a_finite_depth_scale():
    # sigma_b2 = 0, sigma_w2 = 0.5: chaotic (chi1 = 1.0003), so the stable c* < 1 has
    # chi_c = sigma_w2 E[f'(u1) f'(u2)] < 1 and a finite xi_c; the correlation map's quadrature
    # across the jump of selu' at 0 near c = 1 read chi_c = 1.000055 and xi_c = inf
    m = meanfield("selu", 0.5, 0.0)
    assert m.phase == "chaotic"
    assert m.c_star < 1.0
    assert m.chi_c < 1.0
    assert math.isfinite(m.xi_c) and m.xi_c > 6 * meanfield("selu", 1.0, 0.0).xi_c
