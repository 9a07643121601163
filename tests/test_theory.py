"""Tests for depthlab.theory: closed values from the papers, and predictions checked against
measurements on random plain-NumPy networks (no depthlab layers involved)."""

from __future__ import annotations

import contextlib
import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
from scipy import integrate

from depthlab.activations import get_activation
from depthlab.theory import (
    MeanField,
    affine_activation,
    c_map,
    critical_sigma_w2,
    gauss_expect,
    gradient_growth,
    gradient_ratio,
    meanfield,
    normal_rule,
    numerical_taylor,
    preserving_weight_variance,
    propagate,
    q_map,
    rescaled_sigmoid,
    selu_fixed_point,
    selu_jacobian,
    selu_map,
    selu_spectral_radius,
    selu_trajectory,
    taylor,
)

try:  # the measurement tests are BLAS-bound: one thread avoids oversubscription on small boxes
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover
    threadpool_limits = None


def _one_blas_thread():
    return threadpool_limits(1) if threadpool_limits else contextlib.nullcontext()


def _sigmoid(s):
    return 0.5 * (1.0 + np.tanh(0.5 * s))


def _sech2(s):
    e = np.exp(-2.0 * np.abs(s))
    return 4.0 * e / (1.0 + e) ** 2


# --------------------------------------------------------------------------------------- taylor

def test_taylor_sigmoid_tanh_exact():
    sig = taylor("sigmoid")
    assert sig.coefficients == pytest.approx((0.5, 0.25, 0.0, -1.0 / 48.0), abs=1e-15)
    assert (sig.beta, sig.alpha) == (0.5, 0.25)
    assert sig.weight_variance_factor_vs_tanh == pytest.approx(16.0)
    th = taylor("tanh")
    assert th.coefficients == pytest.approx((0.0, 1.0, 0.0, -1.0 / 3.0), abs=1e-15)
    assert th.weight_variance_factor_vs_tanh == pytest.approx(1.0)
    assert taylor("tanh", order=5)[5] == pytest.approx(2.0 / 15.0)


def test_numerical_taylor_matches_tables_and_series():
    # plain callables: no table, Chebyshev interpolation only
    sig = numerical_taylor(_sigmoid, order=5)
    assert sig.coefficients == pytest.approx((0.5, 0.25, 0, -1 / 48, 0, 1 / 480), abs=1e-9)
    th = numerical_taylor(np.tanh, order=5)
    assert th.coefficients == pytest.approx((0, 1, 0, -1 / 3, 0, 2 / 15), abs=1e-9)
    assert th.smooth and sig.smooth
    # gelu(x) = x Phi(x) = x/2 + x^2/sqrt(2 pi) + 0 x^3 - x^4/(6 sqrt(2 pi))
    g = taylor("gelu", order=4)
    k = 1 / math.sqrt(2 * math.pi)
    assert g.coefficients == pytest.approx((0, 0.5, k, 0, -k / 6), abs=1e-9)
    # the activations module's own metadata agrees where it exists
    for name in ("swish", "mish", "gelu", "softsign"):
        meta = get_activation(name).taylor
        assert taylor(name).coefficients[: len(meta)] == pytest.approx(meta, abs=1e-8), name


def test_rescaled_sigmoid_behaves_like_tanh_near_zero():
    t = taylor(rescaled_sigmoid())
    assert t.coefficients == pytest.approx((0.0, 1.0, 0.0, -1.0 / 12.0), abs=1e-9)
    assert t.weight_variance_factor_vs_tanh == pytest.approx(1.0, abs=1e-9)
    # same thing from a lambda and from the affine helper with an input scale
    t2 = taylor(lambda s: 4.0 * _sigmoid(s) - 2.0)
    assert t2.alpha == pytest.approx(1.0, abs=1e-9)
    t3 = taylor(affine_activation("tanh", out_scale=2.0, in_scale=0.5))  # 2 tanh(s/2)
    assert t3.coefficients == pytest.approx(t.coefficients, abs=1e-9)


def test_taylor_kinked_activations_average_the_sides():
    r = taylor("relu")
    assert not r.smooth
    assert r.left[1] == pytest.approx(0.0, abs=1e-9) and r.right[1] == pytest.approx(1.0)
    # the averaged slope is 1/2, but variances propagate with E[f'^2] = 1/2: He's factor 2
    assert r.alpha == pytest.approx(0.5) and r.weight_variance_factor_vs_tanh == pytest.approx(2)
    e = taylor("elu")
    assert e.alpha == pytest.approx(1.0) and not e.smooth  # f'' jumps from 1 to 0 at 0
    p = taylor("penalized_tanh", a=0.25)
    assert p.alpha == pytest.approx(0.625)


def test_taylor_bad_input():
    with pytest.raises(ValueError, match="unknown activation"):
        taylor("sigmoidd")
    with pytest.raises(ValueError, match="order"):
        taylor("tanh", order=0)
    with pytest.raises(TypeError, match="activation must be"):
        taylor(3.0)


# ------------------------------------------------------------------------------------ quadrature

@pytest.mark.parametrize("q", [0.01, 1.0, 16.0, 1e4, 1e10])
def test_normal_rule_resolves_narrow_features_at_any_variance(q):
    s, w = normal_rule(q)
    got = w @ _sech2(s)
    dens = lambda x: np.exp(-x * x / (2 * q)) / np.sqrt(2 * np.pi * q)  # noqa: E731
    ref = 2 * integrate.quad(lambda x: dens(x) * _sech2(x), 0, 60, epsrel=1e-12,
                             limit=200)[0]
    assert got == pytest.approx(ref, rel=1e-9)
    assert w @ (s * s) == pytest.approx(q, rel=1e-12)


# -------------------------------------------------------------------------------------- variance

def _measure_net(act, sizes=(1000,) * 11, batch=200, seed=0, bias_var=0.0, input_mean=0.0):
    """Plain NumPy net with glorot_uniform weights and N(0, bias_var) biases; returns per-layer
    measured Var(s), E[a], Var(a), and mean squared dL/ds relative to the top layer."""
    f, df = {
        "tanh": (np.tanh, lambda a: 1 - a * a),
        "sigmoid": (_sigmoid, lambda a: a * (1 - a)),
    }[act]
    rng = np.random.default_rng(seed)
    a = input_mean + rng.standard_normal((batch, sizes[0]))
    weights, derivs, rows = [], [], []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        lim = np.sqrt(6.0 / (fan_in + fan_out))
        w = rng.uniform(-lim, lim, (fan_in, fan_out))
        s = a @ w + np.sqrt(bias_var) * rng.standard_normal(fan_out)
        a = f(s)
        weights.append(w)
        derivs.append(df(a))
        rows.append((s.var(), a.mean(), a.var()))
    g = rng.standard_normal(a.shape) * derivs[-1]
    grads = [np.mean(g * g)]
    for l in range(len(weights) - 2, -1, -1):
        g = (g @ weights[l + 1].T) * derivs[l]
        grads.append(np.mean(g * g))
    return np.array(rows), np.array(grads[::-1]) / grads[0]


@pytest.mark.parametrize("act", ["tanh", "sigmoid"])
def test_propagate_matches_measured_network(act):
    with _one_blas_thread():
        rows, grads = _measure_net(act)
    pred = propagate([1000] * 11, act, init="glorot_uniform")
    assert list(pred["layer"]) == list(range(1, 11))
    np.testing.assert_allclose(rows[:, 0], pred["pre_var"], rtol=0.15)
    np.testing.assert_allclose(rows[:, 2], pred["act_var"], rtol=0.15)
    np.testing.assert_allclose(rows[:, 1], pred["act_mean"], atol=0.02)
    np.testing.assert_allclose(grads, pred["grad_pre_var"], rtol=0.15)
    if act == "sigmoid":
        # the mean 1/2 is what drives the next layer's variance (second moment, not variance)
        assert pred["act_mean"].iloc[0] == pytest.approx(0.5)
        assert pred["pre_var"].iloc[1] == pytest.approx(pred["act_sq"].iloc[0], rel=1e-12)
        assert pred["pre_var"].iloc[1] > 3 * pred["act_var"].iloc[0]
        # and sigmoid gradients vanish geometrically (about 16x per layer) towards the input
        assert grads[0] < 1e-4 and pred["grad_pre_var"].iloc[0] < 1e-4


def test_propagate_unequal_widths_with_bias_and_input_mean():
    # widths change from layer to layer: catches fan-in/fan-out index slips in either direction
    sizes = (200, 1500, 300, 1200, 400, 900)
    with _one_blas_thread():
        rows, grads = _measure_net("sigmoid", sizes, batch=300, bias_var=0.3, input_mean=0.5)
    pred = propagate(list(sizes), "sigmoid", "glorot_uniform", input_mean=0.5, bias_var=0.3)
    np.testing.assert_allclose(rows[:, 0], pred["pre_var"], rtol=0.15)
    np.testing.assert_allclose(rows[:, 2], pred["act_var"], rtol=0.15)
    np.testing.assert_allclose(grads, pred["grad_pre_var"], rtol=0.15)
    # glorot's variance differs per layer here, and so does the predicted gradient decay
    assert pred["weight_var"].nunique() == len(sizes) - 1
    assert pred["grad_pre_var"].iloc[0] < 1e-3


def test_propagate_he_relu_and_glorot_derivations():
    he = propagate([500] * 8, "relu", init="he_normal", input_var=2.0)
    np.testing.assert_allclose(he["pre_var"], 4.0, rtol=1e-9)  # 500 * 2/500 * E[x^2] = 4
    np.testing.assert_allclose(he["grad_pre_var"], 1.0, rtol=1e-9)
    np.testing.assert_allclose(he["act_sq"], 2.0, rtol=1e-9)  # E[relu(s)^2] = q/2
    # Glorot with relu halves the signal per layer (equal widths): 1/2^(L-1)
    gl = propagate([500] * 8, "relu", init="glorot_normal")
    assert gl["pre_var"].iloc[-1] / gl["pre_var"].iloc[0] == pytest.approx(0.5**6, rel=1e-9)
    assert gradient_ratio([500] * 8, "relu", "glorot_normal") == pytest.approx(0.5**6, rel=1e-9)
    # linear regime reproduces the closed forms: Var(s_2) = n v (beta^2 + alpha^2 q1)
    lin = propagate([100, 100, 100], "sigmoid", init=0.01, method="linear")
    assert lin["pre_var"].iloc[1] == pytest.approx(1.0 * (0.25 + 0.0625 * 1.0))
    assert lin["deriv_sq"].iloc[0] == pytest.approx(1 / 16)
    # and agrees with the exact version for tanh with small variances
    ex = propagate([1000] * 4, "tanh", init=1e-3, input_var=1e-4, method="exact")
    li = propagate([1000] * 4, "tanh", init=1e-3, input_var=1e-4, method="linear")
    np.testing.assert_allclose(ex["pre_var"], li["pre_var"], rtol=1e-3)
    assert not np.allclose(ex["pre_var"], li["pre_var"], rtol=1e-6, atol=0)  # E tanh^2 < q
    # input mean enters via the second moment; bias variance adds
    mv = propagate([10, 10], "tanh", init=0.1, input_var=1.0, input_mean=2.0, bias_var=0.5)
    assert mv["pre_var"].iloc[0] == pytest.approx(10 * 0.1 * 5.0 + 0.5)


def test_preserving_weight_variance():
    assert preserving_weight_variance("relu", 100, 100) == pytest.approx(0.02, rel=1e-9)
    assert preserving_weight_variance("relu", 100, 300, mode="fan_out") == pytest.approx(2 / 300)
    v = preserving_weight_variance("tanh", 100, 300, mode="average", q=1e-6)
    assert v == pytest.approx(2 / 400, rel=1e-4)


def test_propagate_bad_input():
    with pytest.raises(ValueError, match="sizes"):
        propagate([10], "tanh")
    with pytest.raises(ValueError, match="unknown initializer"):
        propagate([10, 10], "tanh", init="glorotish")
    with pytest.raises(ValueError, match="method"):
        propagate([10, 10], "tanh", method="approx")
    with pytest.raises(ValueError, match="input_var"):
        propagate([10, 10], "tanh", input_var=-1.0)


# ------------------------------------------------------------------------------------- meanfield

def test_meanfield_tanh_depth_scales():
    expected = {1.0: 3.6, 1.5: 15.8, 2.0: 25.0, 3.0: 9.0}
    for sw2, xi in expected.items():
        mf = meanfield("tanh", sw2, 0.05)
        assert isinstance(mf, MeanField)
        assert mf.xi_c == pytest.approx(xi, rel=0.03), sw2
        assert mf.trainable_depth == pytest.approx(6 * mf.xi_c)
    ordered, chaotic = meanfield("tanh", 1.0, 0.05), meanfield("tanh", 3.0, 0.05)
    assert ordered.phase == "ordered" and ordered.c_star == 1.0
    assert ordered.xi_c == pytest.approx(-1 / math.log(ordered.chi1))
    assert chaotic.phase == "chaotic" and 0 < chaotic.c_star < 1 and chaotic.chi1 > 1
    # c* really is a fixed point of the correlation map, q* of the length map
    assert c_map("tanh", chaotic.c_star, 3.0, 0.05) == pytest.approx(chaotic.c_star, abs=1e-9)
    assert q_map("tanh", chaotic.q_star, 3.0, 0.05) == pytest.approx(chaotic.q_star, rel=1e-9)
    with pytest.raises(dataclasses.FrozenInstanceError):
        chaotic.q_star = 1.0


def test_critical_point_tanh():
    sw2 = critical_sigma_w2("tanh", 0.05)
    assert sw2 == pytest.approx(1.76, rel=0.01)
    mf = meanfield("tanh", sw2, 0.05)
    assert mf.q_star == pytest.approx(0.57, rel=0.01)
    assert mf.chi1 == pytest.approx(1.0, abs=1e-9) and mf.phase == "critical"
    assert math.isinf(mf.xi_c)
    assert critical_sigma_w2("tanh", 0.0) == pytest.approx(1.0, abs=1e-6)


def test_meanfield_relu_divergence_and_collapse():
    assert critical_sigma_w2("relu") == pytest.approx(2.0, rel=1e-9)
    collapse = meanfield("relu", 1.5)
    assert collapse.q_star == 0.0 and collapse.chi1 == pytest.approx(0.75)
    blowup = meanfield("relu", 2.5)
    assert math.isinf(blowup.q_star) and not blowup.converged
    assert blowup.chi1 == pytest.approx(1.25) and blowup.phase == "chaotic"
    with_bias = meanfield("relu", 1.5, 0.1)  # q* = sigma_b2 / (1 - sigma_w2/2)
    assert with_bias.q_star == pytest.approx(0.4, rel=1e-9)
    # relu's correlation map is the arc-cosine kernel (Cho & Saul): check the 2-D quadrature
    c = 0.3
    arccos = (math.sqrt(1 - c * c) + (math.pi - math.acos(c)) * c) / math.pi
    assert c_map("relu", c, 2.0, 0.0, q=1.0) == pytest.approx(arccos, abs=1e-6)
    with pytest.raises(ValueError, match="sigma_w2"):
        meanfield("relu", -1.0)


def _measured_gradient_ratio(sw2, sb2, depth=50, n=500, batch=100, seed=0):
    q_star = meanfield("tanh", sw2, sb2).q_star
    rng = np.random.default_rng(seed)
    a = np.tanh(np.sqrt(q_star) * rng.standard_normal((batch, n)))  # s_1 starts at q*
    weights, derivs = [], []
    for _ in range(depth):
        w = rng.standard_normal((n, n)) * np.sqrt(sw2 / n)
        b = rng.standard_normal(n) * np.sqrt(sb2)
        a = np.tanh(a @ w + b)
        weights.append(w)
        derivs.append(1 - a * a)
    g = rng.standard_normal((batch, n)) * derivs[-1]  # random upstream gradient
    top = np.mean(g * g)
    for l in range(depth - 2, -1, -1):
        g = (g @ weights[l + 1].T) * derivs[l]  # dL/ds_l = (dL/ds_{l+1} W_{l+1}^T) f'(s_l)
    return np.mean(g * g) / top


@pytest.mark.parametrize("sw2", [1.0, 1.76, 3.0])
def test_gradient_growth_matches_measured_50_layer_tanh(sw2):
    pred = gradient_growth("tanh", sw2, 0.05, 50)
    assert pred == pytest.approx(meanfield("tanh", sw2, 0.05).chi1 ** 49)
    with _one_blas_thread():
        measured = _measured_gradient_ratio(sw2, 0.05)
    assert 0.5 < measured / pred < 2.0, (measured, pred)


# ------------------------------------------------------------------------------------------ selu

def test_selu_fixed_point_and_jacobian():
    mu, nu = selu_fixed_point()
    assert mu == pytest.approx(0.0, abs=1e-10) and nu == pytest.approx(1.0, abs=1e-10)
    jac = selu_jacobian()
    # Klambauer et al.: J(0, 1) = [[0, 0.0888], [0, 0.7826]]
    np.testing.assert_allclose(jac, [[0.0, 0.088835], [0.0, 0.782648]], atol=2e-5)
    assert selu_spectral_radius() == pytest.approx(0.7826, abs=1e-3)
    # still attracting for weights slightly off (Theorem 1's domain)
    assert selu_spectral_radius(omega=0.1, tau=1.1) < 1.0


def test_selu_map_matches_gaussian_integral():
    f = get_activation("selu").forward
    for mu, nu, om, tau in [(1.0, 9.0, 0.0, 1.0), (0.3, 1.4, 0.1, 1.05), (-0.5, 0.5, -0.3, 0.9)]:
        m, v = selu_map(mu, nu, om, tau)
        mean = gauss_expect(f, nu * tau, mu * om)
        sq = gauss_expect(lambda s: f(s) ** 2, nu * tau, mu * om)  # noqa: B023
        assert m == pytest.approx(mean, abs=1e-4) and v == pytest.approx(sq - mean**2, abs=1e-4)


def test_selu_attraction_from_shifted_input():
    traj = selu_trajectory(1.0, 9.0, 32)
    assert isinstance(traj, pd.DataFrame) and len(traj) == 33
    assert (traj["mean"].iloc[0], traj["var"].iloc[0]) == (1.0, 9.0)
    assert abs(traj["mean"].iloc[-1]) < 0.01 and traj["var"].iloc[-1] == pytest.approx(1, abs=0.01)
    # measured on a plain NumPy SELU net with LeCun-normal weights
    f = get_activation("selu").forward
    rng = np.random.default_rng(0)
    n = 256
    a = 1.0 + 3.0 * rng.standard_normal((200, n))
    with _one_blas_thread():
        for _ in range(32):
            a = f(a @ (rng.standard_normal((n, n)) / np.sqrt(n)))
    assert abs(a.mean()) < 0.1 and a.var() == pytest.approx(1.0, abs=0.15)
    with pytest.raises(ValueError, match="depth"):
        selu_trajectory(0.0, 1.0, -1)
