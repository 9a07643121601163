"""More checks of the theory, initializers, activations and the torch bridge against independent
computations (closed forms, scipy quadrature, seeded Monte Carlo with tolerances from the
standard error), on inputs the other test files do not use."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy.integrate import quad
from scipy.stats import norm

import depthlab as dl
from depthlab import theory as T
from depthlab.activations import ACTIVATIONS, SELU_ALPHA, SELU_LAMBDA, Softmax, get_activation
from depthlab.initializers import Constant, Zeros, get_initializer, weight_variance

PDF = norm.pdf


# -- regressions -------------------------------------------------------------------------------
@pytest.mark.parametrize("call", [
    lambda a: T.propagate([4, 5, 6], a),
    lambda a: T.gradient_ratio([4, 5, 6], a),
    lambda a: T.meanfield(a, 1.0),
    lambda a: T.critical_sigma_w2(a),
    lambda a: T.taylor(a),
    lambda a: T.preserving_weight_variance(a, 3, 4),
])
@pytest.mark.parametrize("act", ["softmax", "Softmax", Softmax()])
def test_softmax_is_refused_not_integrated_over_the_quadrature_grid(call, act):
    # softmax normalises a whole row: applied to the quadrature nodes it used to return
    # meaningless numbers (meanfield q* ~ 1e-5, preserving variance ~ 5e9) without complaint
    with pytest.raises(ValueError, match="not elementwise"):
        call(act)


def test_softmax_stays_uncovered_where_it_was_and_plot_draws_no_curve():
    assert not T.bn_gradient_factor("softmax").covered
    assert not T.propagate_batchnorm([3, 4, 4], "softmax").attrs["covered"]
    assert not T.predict_gradients(dl.mlp([3, 4, 4, 2], "softmax")).covered
    frame, note = dl.plot.theory_for_config(
        {"model": {"sizes": [3, 4, 4, 2], "activation": "softmax"}})
    assert frame is None and "elementwise" in note


@pytest.mark.parametrize("bias_init", ["zero", "constant", Zeros(), Constant(0.0)])
def test_zero_biases_in_any_spelling_are_predicted(bias_init):
    # was: only the exact string "zeros" counted, so Zeros() or constant 0 gave no prediction
    net = dl.mlp([8, 32, 32, 3], "tanh", bias_init=bias_init)
    p = T.predict_gradients(net)
    assert p.covered
    ref = T.propagate([8, 32, 32], "tanh", "glorot_uniform")["grad_pre_var"]
    np.testing.assert_allclose(p.frame["grad_pre_var"], ref, rtol=1e-12)


@pytest.mark.parametrize("bias_init", ["normal", Constant(0.5)])
def test_plot_draws_no_zero_bias_curve_for_non_zero_biases(bias_init):
    # was: the gradient figure drew the zero-bias recursion for plain nets with random biases
    # random zero-mean biases are predicted since round 37 (sigma_b^2 added), constant ones not:
    # the figure draws that prediction, never the zero-bias recursion
    pred = T.predict_gradients(dl.mlp([8, 32, 32, 3], "tanh", bias_init=bias_init))
    assert pred.covered is (bias_init == "normal")
    frame, note = dl.plot.theory_for_config(
        {"model": {"sizes": [8, 32, 32, 3], "activation": "tanh", "bias_init": bias_init}})
    if bias_init == "normal":
        zero = T.propagate([8, 32, 32], "tanh", "glorot_uniform")["grad_pre_var"]
        np.testing.assert_allclose(frame["grad_pre_var"], pred.frame["grad_pre_var"], rtol=1e-12)
        assert not np.allclose(frame["grad_pre_var"], zero) and "sigma_b^2 = 1" in note
    else:
        assert frame is None and "bias_init" in note
    frame, _ = dl.plot.theory_for_config(
        {"model": {"sizes": [8, 32, 32, 3], "activation": "tanh", "bias_init": "constant"}})
    assert frame is not None


@pytest.mark.parametrize("mean", [0.3, -1.1, 4.0])
@pytest.mark.parametrize("var", [0.25, 1.0, 100.0])
def test_gauss_expect_off_centre_integrates_the_relu_kink_exactly(mean, var):
    # the centred rule had no breakpoint at s = 0 when mean != 0: 3.5e-4 relative error
    sd = math.sqrt(var)
    exact = mean * norm.cdf(mean / sd) + sd * norm.pdf(mean / sd)
    got = T.gauss_expect(lambda s: np.maximum(s, 0.0), var, mean)
    assert got == pytest.approx(exact, rel=1e-12)
    sq = (mean**2 + var) * norm.cdf(mean / sd) + mean * sd * norm.pdf(mean / sd)
    assert T.gauss_expect(lambda s: np.maximum(s, 0.0) ** 2, var, mean) == pytest.approx(
        sq, rel=1e-12)
    with pytest.raises(ValueError):
        T.gauss_expect(np.tanh, -1.0, mean)


@pytest.mark.parametrize("mean,var", [(0.7, 2.0), (-3.0, 0.5)])
def test_gauss_expect_off_centre_smooth_against_scipy_quad(mean, var):
    sd = math.sqrt(var)
    ref = quad(lambda s: (1 - np.tanh(s) ** 2) ** 2 * PDF(s, mean, sd), mean - 12 * sd,
               mean + 12 * sd, limit=200, epsabs=1e-14)[0]
    got = T.gauss_expect(lambda s: (1 - np.tanh(s) ** 2) ** 2, var, mean)
    assert got == pytest.approx(ref, rel=1e-10)


# -- variance propagation against Monte Carlo --------------------------------------------------
def _mc_net(sizes, act, init, input_var, input_mean, bias_var, trials, seed):
    """Mean over independent networks (one input each) of E[s_l^2] and E[(dL/ds_l)^2]."""
    rng = np.random.default_rng(seed)
    f = get_activation(act)
    init_fn = get_initializer(init)
    L = len(sizes) - 1
    pre, grads = np.zeros((trials, L)), np.zeros((trials, L))
    for t in range(trials):
        a = input_mean + math.sqrt(input_var) * rng.standard_normal((1, sizes[0]))
        ss, ws = [], []
        for l in range(L):
            w = init_fn((sizes[l], sizes[l + 1]), rng, "float64")
            s = a @ w + math.sqrt(bias_var) * rng.standard_normal(sizes[l + 1])
            ss.append(s)
            ws.append(w)
            a = f.forward(s.copy())
            pre[t, l] = np.mean(s * s)
        g = rng.standard_normal((1, sizes[-1])) * f.derivative(ss[-1], f.forward(ss[-1]))
        grads[t, L - 1] = np.mean(g * g)
        for l in range(L - 2, -1, -1):
            g = (g @ ws[l + 1].T) * f.derivative(ss[l], f.forward(ss[l]))
            grads[t, l] = np.mean(g * g)
    return pre, grads


@pytest.mark.parametrize("init", ["he_uniform", "lecun_normal", "fan_in_uniform"])
def test_relu_forward_variance_exact_at_width_one_with_bias_and_mean(init):
    # E[relu(s)^2] = E[s^2] / 2 for any symmetric s, so the forward recursion is exact at any
    # width, width 1 included, with a shifted input and random biases
    sizes = [5, 1, 30, 1, 7]
    df = T.propagate(sizes, "relu", init, input_var=2.0, input_mean=1.5, bias_var=0.3)
    pre, _ = _mc_net(sizes, "relu", init, 2.0, 1.5, 0.3, trials=3000, seed=0)
    se = pre.std(axis=0) / math.sqrt(len(pre))
    assert np.all(np.abs(pre.mean(axis=0) - df.pre_var.to_numpy()) < 5 * se)


@pytest.mark.parametrize("init", ["glorot_normal", "orthogonal", "he_uniform"])
def test_linear_net_gradients_exact_at_odd_widths(init):
    sizes = [3, 1, 40, 2, 9]
    df = T.propagate(sizes, "identity", init, input_var=0.5, input_mean=-2.0, bias_var=0.1)
    pre, grads = _mc_net(sizes, "identity", init, 0.5, -2.0, 0.1, trials=3000, seed=1)
    se = pre.std(axis=0) / math.sqrt(len(pre))
    assert np.all(np.abs(pre.mean(axis=0) - df.pre_var.to_numpy()) < 5 * se)
    # first-layer gradient relative to the top: ratio of means, delta-method tolerance
    ratio = grads[:, 0].mean() / grads[:, -1].mean()
    rel_se = math.hypot(grads[:, 0].std() / grads[:, 0].mean(),
                        grads[:, -1].std() / grads[:, -1].mean()) / math.sqrt(len(grads))
    assert ratio == pytest.approx(df.grad_pre_var.iloc[0], rel=5 * rel_se)


def test_depth_one_and_two_hundred():
    one = T.propagate([7, 3], "tanh", "glorot_uniform")
    assert len(one) == 1 and one.grad_pre_var.iloc[0] == 1.0
    assert T.gradient_ratio([7, 3], "tanh") == 1.0
    # He init keeps relu exactly: Var(s_l) = 2 for every l, gradients flat over 200 layers
    deep = T.propagate([50] * 201, "relu", "he_normal")
    np.testing.assert_allclose(deep.pre_var, 2.0, rtol=1e-12)
    np.testing.assert_allclose(deep.grad_pre_var, 1.0, rtol=1e-12)
    # tanh with LeCun weights (sigma_w^2 = 1, no bias): q_l -> 0 slowly, each layer multiplies the
    # squared gradient by E[tanh'(s_l)^2] < 1; recomputed here with scipy quad
    q, ratio = 1.0, 1.0  # q_1 = 1 (unit-variance input, n v = 1)
    for _ in range(199):  # layers 1..199 below the top one
        ratio *= _quad_e(lambda s: (1 - np.tanh(s) ** 2) ** 2, q)
        q = _quad_e(lambda s: np.tanh(s) ** 2, q)
    assert T.gradient_ratio([50] * 201, "tanh", "lecun_normal") == pytest.approx(ratio, rel=1e-7)


# -- mean field and SELU against independent integrals -----------------------------------------
def _quad_e(g, var):
    sd = math.sqrt(var)
    return quad(lambda z: g(sd * z) * PDF(z), -12, 12, limit=200, epsabs=1e-14)[0]


@pytest.mark.parametrize("act,sw2,sb2", [("tanh", 1.5, 0.05), ("elu", 1.2, 0.3),
                                         ("sigmoid", 4.0, 0.1), ("relu", 1.0, 0.5)])
def test_meanfield_fixed_point_and_chi1_by_scipy_quad(act, sw2, sb2):
    f = get_activation(act)
    mf = T.meanfield(act, sw2, sb2)
    q = mf.q_star
    def fwd(s):
        return f.forward(np.atleast_1d(s))[0]

    def d(s):
        x = np.atleast_1d(s)
        return f.derivative(x, f.forward(x))[0] ** 2

    assert sw2 * _quad_e(lambda s: fwd(s) ** 2, q) + sb2 == pytest.approx(q, rel=1e-9)
    assert mf.chi1 == pytest.approx(sw2 * _quad_e(d, q), rel=1e-9)
    if act == "relu":  # closed form q* = sb2 / (1 - sw2 / 2), chi1 = sw2 / 2
        assert q == pytest.approx(1.0, rel=1e-10) and mf.chi1 == pytest.approx(0.5, rel=1e-10)


@pytest.mark.parametrize("act,kw,slopes_sq", [
    ("selu", {}, SELU_LAMBDA**2), ("elu", {"alpha": 0.3}, 1.0), ("gelu", {}, 1.0),
    ("relu", {}, 1.0), ("leaky_relu", {"negative_slope": 0.3}, 1.09)])
def test_diverging_length_map_reports_the_large_q_slope(act, kw, slopes_sq):
    # q* = inf: only the large-q limit chi1 = sigma_w^2 (a_+^2 + a_-^2) / 2 (asymptotic slopes
    # a_+, a_-) describes the net; was evaluated at q = 1 (selu, sigma_w^2 = 2: 2.14, not 1.10)
    mf = T.meanfield(act, 2.5, 0.1, **kw)
    assert math.isinf(mf.q_star) and mf.phase == "chaotic"
    assert mf.chi1 == pytest.approx(2.5 * slopes_sq / 2, rel=1e-5)


def test_tanh_chaotic_correlation_fixed_point_by_monte_carlo():
    mf = T.meanfield("tanh", 3.0, 0.05)
    assert mf.phase == "chaotic" and 0 < mf.c_star < 1 and mf.xi_c == pytest.approx(9, abs=0.5)
    rng = np.random.default_rng(3)
    z1, z2 = rng.standard_normal((2, 1_000_000))
    q, c = mf.q_star, mf.c_star
    u1, u2 = math.sqrt(q) * z1, math.sqrt(q) * (c * z1 + math.sqrt(1 - c * c) * z2)
    cmap = (3.0 * np.tanh(u1) * np.tanh(u2) + 0.05) / q
    assert abs(cmap.mean() - c) < 5 * cmap.std() / 1000
    chi = 3.0 * (1 - np.tanh(u1) ** 2) * (1 - np.tanh(u2) ** 2)
    assert abs(chi.mean() - mf.chi_c) < 5 * chi.std() / 1000


def test_critical_lines_of_other_activations():
    # positively homogeneous: chi1 = sw2 E[f'^2] does not depend on q
    assert T.critical_sigma_w2("leaky_relu", negative_slope=0.2) == pytest.approx(
        2 / 1.04, rel=1e-9)
    assert T.critical_sigma_w2("relu", 0.3) == pytest.approx(2.0, rel=1e-9)


@pytest.mark.parametrize("mu,nu,omega,tau", [(0.3, 1.4, 0.1, 1.05), (-2.0, 0.5, 1.0, 1.0),
                                             (5.0, 9.0, 0.2, 0.9), (30.0, 1.0, 1.0, 1.0)])
def test_selu_map_off_the_fixed_point_by_scipy_quad(mu, nu, omega, tau):
    def selu(z):
        return SELU_LAMBDA * np.where(z > 0, z, SELU_ALPHA * np.expm1(np.minimum(z, 0)))

    m, s = mu * omega, math.sqrt(nu * tau)
    lo, hi = m - 12 * s, m + 12 * s
    pts = [0.0] if lo < 0 < hi else None
    e1 = quad(lambda z: selu(z) * PDF(z, m, s), lo, hi, points=pts, limit=200)[0]
    e2 = quad(lambda z: selu(z) ** 2 * PDF(z, m, s), lo, hi, points=pts, limit=200)[0]
    got = T.selu_map(mu, nu, omega, tau)
    assert got[0] == pytest.approx(e1, rel=1e-9, abs=1e-12)
    assert got[1] == pytest.approx(e2 - e1 * e1, rel=1e-8, abs=1e-12)


def test_selu_constants_and_fixed_point():
    assert SELU_LAMBDA == 1.0507009873554804934193349852946
    assert SELU_ALPHA == 1.6732632423543772848170429916717
    mu, nu = T.selu_fixed_point()
    assert abs(mu) < 1e-12 and nu == pytest.approx(1.0, abs=1e-12)


# -- initializers --------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["fan_in", "fan_out", "fan_avg"])
@pytest.mark.parametrize("dist", ["normal", "uniform"])
@pytest.mark.parametrize("shape", [(300, 700), (700, 300)])
def test_variance_scaling_empirical_variance(mode, dist, shape):
    init = get_initializer("variance_scaling", scale=2.5, mode=mode, distribution=dist)
    w = init(shape, 1, "float64")
    v = weight_variance(init, *shape)
    fan = {"fan_in": shape[0], "fan_out": shape[1], "fan_avg": sum(shape) / 2}[mode]
    assert v == pytest.approx(2.5 / fan, rel=1e-15)
    kurt = 3.0 if dist == "normal" else 1.8  # Var(w^2) = (kurtosis - 1) v^2
    assert abs(w.var() - v) < 5 * v * math.sqrt((kurt - 1) / w.size)
    if dist == "uniform":
        assert np.abs(w).max() <= math.sqrt(3 * v)


@pytest.mark.parametrize("shape", [(3, 7), (7, 3), (5, 5), (1, 9), (9, 1)])
def test_orthogonal_non_square_and_its_variance(shape):
    w = get_initializer("orthogonal", gain=1.7)(shape, 0, "float64")
    gram = w.T @ w if shape[0] >= shape[1] else w @ w.T
    np.testing.assert_allclose(gram, 1.7**2 * np.eye(min(shape)), atol=1e-12)
    assert np.mean(w * w) == pytest.approx(weight_variance("orthogonal", *shape, gain=1.7),
                                           rel=1e-12)


# -- activations at extreme inputs -------------------------------------------------------------
@pytest.mark.parametrize("name", [n for n in ACTIVATIONS if n != "softmax"])
def test_derivatives_finite_and_match_differences_at_extreme_inputs(name):
    f = get_activation(name)
    s = np.array([-1e4, -700.0, -50.0, -20.0, -1e-3, 0.3, 20.0, 50.0, 700.0, 1e4])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for dt in ("float64", "float32"):
            x = s.astype(dt)
            a = f.forward(x.copy())
            d = f.derivative(x.copy(), a.copy())
            assert a.dtype == x.dtype and d.dtype == x.dtype
            assert np.all(np.isfinite(a)) and np.all(np.isfinite(d))
        small = s[np.abs(s) <= 50]
        # no difference across a kink away from 0 (softplus's threshold: s = 20)
        small = small[[all(abs(v - t) > 1e-4 * max(1.0, abs(t)) for t in f.kinks) for v in small]]
        h = 1e-6 * np.maximum(1.0, np.abs(small))
        fd = (f.forward(small + h) - f.forward(small - h)) / (2 * h)
        d = f.derivative(small.copy(), f.forward(small.copy()))
    np.testing.assert_allclose(d, fd, rtol=1e-5, atol=1e-9)


# -- LSUV ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("act", ["tanh", "selu", "relu"])
def test_lsuv_reaches_unit_variance_on_shifted_inputs(act):
    x = np.random.default_rng(0).normal(size=(256, 20)) * 4 + 3
    net = dl.mlp([20, 50, 30, 7], act, seed=0, dtype="float64")
    got = dl.lsuv(net, x)
    net.forward(x, training=False)
    measured = [float(np.var(d.x @ d.W.value + d.b.value)) for d in net.dense_layers()]
    np.testing.assert_allclose(got, measured, rtol=1e-12)
    assert all(abs(v - 1) < 0.1 for v in measured)


# -- the torch bridge ----------------------------------------------------------------------------
BRIDGE_OPTIONS = [{}, {"batchnorm": True}, {"residual": True}, {"dropout": 0.3},
                  {"batchnorm": True, "residual": True, "dropout": 0.2, "bn_momentum": 0.3}]


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-12), ("float32", 2e-5)])
def test_to_torch_same_outputs_for_every_activation_and_option(dtype, tol):
    torch = pytest.importorskip("torch")
    from depthlab.bridge.torch_bridge import to_torch

    x = (np.random.default_rng(0).normal(size=(32, 7)) * 3).astype(dtype)
    kwargs = {"leaky_relu": {"negative_slope": 0.2}, "elu": {"alpha": 0.5},
              "swish": {"beta": 1.7}, "penalized_tanh": {"a": 0.1}}
    for act in ACTIVATIONS:
        if act == "softmax":
            continue
        for opts in BRIDGE_OPTIONS:
            net = dl.mlp([7, 13, 13, 13, 4], act, "he_normal", seed=1, dtype=dtype,
                         activation_kwargs=kwargs.get(act, {}), **opts)
            for _ in range(2):  # move the BN running statistics away from (0, 1)
                net.forward(x, training=True)
            y = net.forward(x, training=False)
            with torch.no_grad():
                yt = to_torch(net).eval()(torch.from_numpy(x)).numpy()
            err = np.max(np.abs(y - yt)) / np.max(np.abs(y))
            assert err < tol, (act, opts, err)
