"""Round 27, papers: the constants and formulas of the papers depthlab implements, checked
against independent computations (closed forms, scipy quadrature, torch), and the doctor's
init prescription saying what each recommended variance was derived for."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate

import depthlab as dl
from depthlab.diagnosis.prescriptions import RECOMMENDED_INIT, for_init_mismatch
from depthlab.initializers import variance_scaling
from depthlab.theory import bn_gradient_factor, critical_sigma_w2, meanfield, selu_map


def _gauss(g, q: float = 1.0) -> float:
    """E[g(sqrt(q) z)], z ~ N(0, 1), by adaptive quadrature split at 0 (independent of the
    project's composite Gauss-Legendre rule)."""
    sd = math.sqrt(q)
    h = lambda z: g(sd * z) * math.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)  # noqa: E731
    return sum(integrate.quad(h, a, b, limit=200, epsabs=1e-14, epsrel=1e-12)[0]
               for a, b in ((-np.inf, 0.0), (0.0, np.inf)))


def _fixed_point(f, sw2: float, sb2: float) -> float:
    q = 1.0
    for _ in range(5000):
        q_new = sw2 * _gauss(lambda s: f(s) ** 2, q) + sb2
        if abs(q_new - q) < 1e-13 * q:
            return q_new
        q = q_new
    return q


@pytest.mark.parametrize("sw2", [1.0, 1.5, 3.0])
def test_tanh_mean_field_fixed_point_and_slope_match_adaptive_quadrature(sw2):
    # Poole et al. 2016 / Schoenholz et al. 2017: q* and chi1 = sw2 E[tanh'(sqrt(q*) z)^2]
    q = _fixed_point(math.tanh, sw2, 0.05)
    chi1 = sw2 * _gauss(lambda s: (1.0 - math.tanh(s) ** 2) ** 2, q)
    mf = meanfield("tanh", sw2, 0.05)
    assert mf.q_star == pytest.approx(q, rel=1e-9)
    assert mf.chi1 == pytest.approx(chi1, rel=1e-9)
    if chi1 < 1:  # ordered: xi_c = -1 / ln chi1 (papers.md: 3.6 at 1.0, 15.8 at 1.5)
        assert mf.xi_c == pytest.approx(-1.0 / math.log(chi1), rel=1e-8)


def test_critical_points_and_batch_norm_growth_closed_forms():
    assert critical_sigma_w2("relu", 0.0) == pytest.approx(2.0, rel=1e-9)  # He et al. 2015
    assert critical_sigma_w2("tanh", 0.05) == pytest.approx(1.76, abs=0.005)
    # Yang et al. 2019: sqrt(pi / (pi - 1)) per layer for ReLU
    assert bn_gradient_factor("relu").growth == pytest.approx(
        math.sqrt(math.pi / (math.pi - 1.0)), rel=1e-10)
    # tanh: E[tanh'(z)^2] / Var tanh(z), z ~ N(0, 1), by adaptive quadrature
    ratio = _gauss(lambda z: (1.0 - math.tanh(z) ** 2) ** 2) / _gauss(lambda z: math.tanh(z) ** 2)
    assert bn_gradient_factor("tanh").growth == pytest.approx(math.sqrt(ratio), rel=1e-9)


def test_selu_moment_map_matches_quadrature_off_the_fixed_point():
    lam, alpha = 1.0507009873554804934193349852946, 1.6732632423543772848170429916717
    selu = lambda s: lam * (s if s > 0 else alpha * math.expm1(s))  # noqa: E731
    mu, nu, omega, tau = 1.0, 9.0, 0.1, 1.0  # Klambauer et al.'s moment map, z ~ N(mu w, nu t)
    m, sd = mu * omega, math.sqrt(nu * tau)
    e1 = _gauss(lambda s: selu(m + s), sd * sd)
    e2 = _gauss(lambda s: selu(m + s) ** 2, sd * sd)
    got = selu_map(mu, nu, omega, tau)
    assert got[0] == pytest.approx(e1, rel=1e-9)
    assert got[1] == pytest.approx(e2 - e1 * e1, rel=1e-9)


# -- the doctor's init prescription says what the variance was derived for ----------------------

def test_init_prescription_does_not_claim_glorot_was_derived_for_the_sigmoid():
    # Glorot & Bengio's normalized init assumes f(0) = 0, f'(0) = 1 (tanh, softsign); the
    # sigmoid's slope at 0 is 1/4, so its linear regime keeps variances at 16x that variance
    # (Xu et al. 2016, the seed text's Taylor argument). The prescription said "Use
    # glorot_uniform, the variance derived for sigmoid units."
    changes, text = for_init_mismatch("sigmoid")
    assert changes == {"init": "glorot_uniform"}
    assert "derived for sigmoid" not in text
    assert "f'(0) = 1" in text and "16x" in text
    _, text = for_init_mismatch("tanh")
    assert "derived in the linear regime of units with f(0) = 0 and f'(0) = 1" in text
    assert "x this variance" not in text  # tanh is what it was derived for
    _, text = for_init_mismatch("gelu")
    assert "derived for ReLU units" in text and "derived for gelu" not in text
    _, text = for_init_mismatch("selu")
    assert "Klambauer" in text
    for act, rec in RECOMMENDED_INIT.items():
        changes, text = for_init_mismatch(act)
        assert changes == {"init": rec} and text.startswith(f"Use {rec}, ")


def test_a_sigmoid_net_at_xu_s_variance_is_told_what_glorot_assumes():
    data = dl.data.load_dataset("digits", seed=0, standardize=True)
    net = dl.mlp([64] + [64] * 5 + [10], activation="sigmoid",
                 init=variance_scaling(16.0, "fan_avg", "uniform"), seed=0)
    dg = dl.doctor(net, data, steps=20, verify=False)
    # Xu's 16x Glorot's variance lies below the sigmoid's critical one (103x Glorot's, where
    # its mean field's chi1 reaches 1; Glorot's chi1 is 0.056): no mismatch (siginit29)
    assert dg.finding("init_mismatch") is None
    net = dl.mlp([64] + [64] * 5 + [10], activation="sigmoid",
                 init=variance_scaling(800.0, "fan_avg", "uniform"), seed=0)
    f = dl.doctor(net, data, steps=20, verify=False).finding("init_mismatch")
    assert f is not None and f.prescription == {"init": "glorot_uniform"}
    assert "derived for sigmoid" not in f.prescription_text and "16x" in f.prescription_text
    assert "chi1 = 0.056, the ordered phase" in f.prescription_text


def test_the_init_cures_qualify_keeps_the_variance_constant_for_other_units():
    # "Initialize with glorot_uniform: its variance keeps the back-propagated gradient's
    # variance constant from layer to layer" is Glorot's derivation for f'(0) = 1 units; for the
    # sigmoid at Glorot's variance mean field gives chi1 = 0.056 per layer (a 64-wide square
    # layer: sigma_w^2 = 1), so the sentence says what it was derived for
    from depthlab.diagnosis.prescriptions import for_divergence_at_init, for_vanishing

    assert meanfield("sigmoid", 1.0, 0.0).chi1 == pytest.approx(0.0557, abs=1e-3)
    changes, text = for_vanishing("sigmoid", 0.1, {})
    assert changes == {"init": "glorot_uniform"}
    assert "f'(0) = 1" in text and "16x" in text
    changes, text = for_divergence_at_init("gelu", {}, None)
    assert changes == {"init": "he_normal"} and "derived for ReLU units" in text
    for act in ("tanh", "relu", "selu"):  # what the variances were derived for: no caveat
        _, text = for_vanishing(act, 0.1, {})
        assert "(" not in text and text.endswith("constant from layer to layer.")
