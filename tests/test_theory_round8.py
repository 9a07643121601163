"""Round 8 (theory): predictions against the papers' numbers, closed forms and float64 Monte Carlo
simulations of wide random networks, on settings the other theory tests do not use (tanh at
sigma_w^2 = 1.5 / 2.5 / 4, erf, hard-tanh, leaky relu, elu, SELU off the standard init, widths
changing per layer, bias-only nets, depth 1 and 300, BN with sigmoid / leaky relu / tanh with
gamma, beta != 1, 0); plus bad input (an activation that gives NaN, a NaN critical_tol).

Monte Carlo tolerances: ``k`` standard errors over seeds plus a finite-width allowance of a few
``1/n`` (the mean field is the ``n -> inf`` limit).
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import pytest
from scipy.optimize import brentq
from scipy.special import erf
from scipy.stats import norm

from depthlab import theory as T

try:
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover
    threadpool_limits = None


def _one_thread():
    return threadpool_limits(1) if threadpool_limits else contextlib.nullcontext()


# activations given as callables (not registered in depthlab): the theory takes f'(s) by
# central differences; the simulations use the exact derivatives
def _erf(s):  # erf scaled to slope 1 at 0 (Poole et al. 2016's "erf" network)
    return erf(math.sqrt(math.pi) / 2 * s)


def _hard_tanh(s):
    return np.clip(s, -1.0, 1.0)


_SIM = {
    "tanh": (np.tanh, lambda s: 1.0 - np.tanh(s) ** 2),
    "erf": (_erf, lambda s: np.exp(-math.pi / 4 * s * s)),
    "hard_tanh": (_hard_tanh, lambda s: (np.abs(s) < 1.0).astype(float)),
    "leaky_relu": (lambda s: np.where(s > 0, s, 0.2 * s), lambda s: np.where(s > 0, 1.0, 0.2)),
    "elu": (lambda s: np.where(s > 0, s, np.expm1(np.minimum(s, 0.0))),
            lambda s: np.where(s > 0, 1.0, np.exp(np.minimum(s, 0.0)))),
    "sigmoid": (lambda s: 0.5 * (1.0 + np.tanh(0.5 * s)),
                lambda s: 0.25 * (1.0 - np.tanh(0.5 * s) ** 2)),
}
_THEORY = {"tanh": ("tanh", {}), "erf": (_erf, {}), "hard_tanh": (_hard_tanh, {}),
           "leaky_relu": ("leaky_relu", {"negative_slope": 0.2}), "elu": ("elu", {}),
           "sigmoid": ("sigmoid", {})}


def _chain(act, sw2, sb2, q0, depth, n, seed, batch=4):
    """Wide random net W ~ N(0, sw2/n), b ~ N(0, sb2) from pre-activations of variance q0;
    returns per-layer mean q (over units and examples) and per-layer mean squared dL/ds
    (a random upstream gradient back-propagated)."""
    f, df = _SIM[act]
    rng = np.random.default_rng(seed)
    h = math.sqrt(q0) * rng.standard_normal((batch, n))
    qs, ws, ds = [], [], []
    for _ in range(depth):
        w = rng.standard_normal((n, n)) * math.sqrt(sw2 / n)
        ds.append(df(h))
        h = f(h) @ w + rng.standard_normal(n) * math.sqrt(sb2)
        ws.append(w)
        qs.append(np.mean(h * h))
    g = rng.standard_normal(h.shape) * df(h)
    gs = [np.mean(g * g)]
    for w, d in zip(ws[::-1], ds[::-1]):
        g = (g @ w.T) * d
        gs.append(np.mean(g * g))
    return np.array(qs), np.array(gs[::-1])


def _slope(g):
    """Per-layer factor of the squared gradient towards the input (log-linear fit)."""
    return float(np.exp(-np.polyfit(np.arange(len(g)), np.log(g), 1)[0]))


# -- mean field: papers' numbers and closed forms ---------------------------------------------
def test_tanh_critical_line_q_star_and_depth_scales_against_papers_md():
    # papers.md (Poole 2016 / Schoenholz 2017, tanh, sigma_b^2 = 0.05): critical sigma_w^2 ~ 1.76
    # with q* ~ 0.57; xi_c ~ 25 at 2.0 (chaotic side)
    crit = T.critical_sigma_w2("tanh", 0.05)
    assert crit == pytest.approx(1.76, abs=0.005)
    at = T.meanfield("tanh", crit, 0.05)
    assert at.q_star == pytest.approx(0.57, abs=0.01)
    assert at.chi1 == pytest.approx(1.0, abs=1e-9) and at.phase == "critical"
    assert math.isinf(at.xi_c)
    # xi_c diverges on both sides of the line, finite away from it
    near = [T.meanfield("tanh", crit * (1 + d), 0.05).xi_c for d in (-0.01, 0.01)]
    assert min(near) > 100
    # sigma_b^2 = 0: the line is sigma_w^2 = 1 (tanh'(0) = 1, q* -> 0)
    assert T.critical_sigma_w2("tanh", 0.0) == pytest.approx(1.0, abs=1e-6)


def _erf_moments(q):  # f = erf(sqrt(pi)/2 s): E f^2 = (2/pi) asin(pi q / (2 + pi q))
    return 2 / math.pi * math.asin(math.pi * q / (2 + math.pi * q)), 1 / math.sqrt(1 + math.pi * q)


def _hard_tanh_moments(q):  # E f^2 = q (P(|z|<t) - 2 t phi(t)) + 2 Phi(-t), t = 1/sqrt(q)
    t = 1 / math.sqrt(q)
    inside = math.erf(t / math.sqrt(2))
    return q * (inside - 2 * t * norm.pdf(t)) + 2 * norm.cdf(-t), inside


# hard-tanh's kinks at s = +-1 fall inside quadrature panels (only s = 0 is a breakpoint): the
# documented accuracy there (theory.gaussian) is ~1e-3 relative for E f^2, ~2e-2 for E f'^2
_CLOSED = [("erf", _erf_moments, 1e-7, 1e-6), ("hard_tanh", _hard_tanh_moments, 2e-3, 3e-2)]


@pytest.mark.parametrize("act,moments,tol_q,tol_chi", _CLOSED)
@pytest.mark.parametrize("sw2,sb2", [(0.8, 0.05), (2.0, 0.05), (4.0, 0.3)])
def test_erf_and_hard_tanh_fixed_point_and_chi1_closed_forms(act, moments, tol_q, tol_chi, sw2,
                                                             sb2):
    fn = _THEORY[act][0]
    mf = T.meanfield(fn, sw2, sb2)
    q_star = brentq(lambda q: sw2 * moments(q)[0] + sb2 - q, sb2, sw2 + sb2 + 10)
    assert mf.q_star == pytest.approx(q_star, rel=tol_q)
    assert mf.chi1 == pytest.approx(sw2 * moments(q_star)[1], rel=tol_chi)
    assert mf.phase == ("chaotic" if mf.chi1 > 1 else "ordered")


@pytest.mark.parametrize("act,moments,tol_q,tol_chi", _CLOSED)
def test_erf_and_hard_tanh_critical_lines_closed_forms(act, moments, tol_q, tol_chi):
    # on the line: sw2 = 1 / E f'^2(q) and q = sw2 E f^2(q) + sb2
    sb2 = 0.05
    q = brentq(lambda q: moments(q)[0] / moments(q)[1] + sb2 - q, 1e-3, 50)
    crit = T.critical_sigma_w2(_THEORY[act][0], sb2)
    assert crit == pytest.approx(1 / moments(q)[1], rel=tol_chi)


@pytest.mark.parametrize("sw2,sb2", [(2.0, 0.05), (4.0, 0.05), (3.0, 0.3)])
def test_erf_correlation_fixed_point_and_depth_scale_closed_forms(sw2, sb2):
    """erf(a s), a^2 = pi/4, has an arcsine kernel (Williams 1997): for u1, u2 of variance q and
    correlation c, E[f(u1) f(u2)] = (2/pi) asin(2 a^2 q c / (1 + 2 a^2 q)) and
    E[f'(u1) f'(u2)] = 1 / sqrt((1 + 2 a^2 q)^2 - (2 a^2 q c)^2): c* and xi_c exactly."""
    mf = T.meanfield(_erf, sw2, sb2)
    q, a2 = mf.q_star, math.pi / 4
    assert mf.phase == "chaotic"

    def c_next(c):
        return (sw2 * 2 / math.pi * math.asin(2 * a2 * q * c / (1 + 2 * a2 * q)) + sb2) / q

    c_star = brentq(lambda c: c_next(c) - c, -0.99, 1 - 1e-6)
    chi_c = sw2 / math.sqrt((1 + 2 * a2 * q) ** 2 - (2 * a2 * q * c_star) ** 2)
    assert mf.c_star == pytest.approx(c_star, abs=1e-9)
    assert mf.chi_c == pytest.approx(chi_c, rel=1e-8)
    assert mf.xi_c == pytest.approx(-1 / math.log(chi_c), rel=1e-7)


def test_quadrature_error_at_kinks_off_zero_is_within_the_documented_bound():
    """theory.gaussian documents that the plain rule integrates a kink or jump away from s = 0
    to ~1e-3 / ~2e-2 relative; gauss_expect adds the integrand's own kinks (find_kinks) and is
    exact to rounding; checked on hard-tanh against its closed forms over the variances a
    mean-field iteration visits."""
    worst_sq = worst_d = 0.0
    for q in np.geomspace(0.05, 50, 40):
        e_sq, e_d = _hard_tanh_moments(q)
        worst_sq = max(worst_sq, abs(T.gauss_expect(lambda s: _hard_tanh(s) ** 2, q) / e_sq - 1))
        worst_d = max(worst_d, abs(T.gauss_expect(lambda s: (np.abs(s) < 1) * 1.0, q) / e_d - 1))
    assert worst_sq < 1e-12 and worst_d < 1e-12
    doc = " ".join(T.gaussian.__doc__.split())
    assert "away from s = 0" in doc and "2e-2" in doc


# -- mean field against simulated wide random networks ----------------------------------------
@pytest.mark.parametrize("act,sw2,sb2", [
    ("tanh", 1.5, 0.05), ("tanh", 2.5, 0.05), ("tanh", 4.0, 0.05), ("erf", 2.0, 0.05),
    ("hard_tanh", 2.0, 0.05), ("leaky_relu", 1.5, 0.1), ("elu", 1.5, 0.1)])
def test_q_star_and_chi1_match_simulated_wide_nets(act, sw2, sb2):
    fn, kw = _THEORY[act]
    mf = T.meanfield(fn, sw2, sb2, **kw)
    n, depth, seeds = 400, 20, 4
    with _one_thread():
        runs = [_chain(act, sw2, sb2, mf.q_star, depth, n, seed) for seed in range(seeds)]
    q = np.array([r[0][5:].mean() for r in runs])  # started at q*: stays there
    chi = np.array([_slope(r[1]) for r in runs])
    # finite width: per-layer q fluctuates by ~sqrt(2/n) relative; averaged over layers, seeds
    assert abs(q.mean() / mf.q_star - 1) < 4 * q.std(ddof=1) / mf.q_star / math.sqrt(seeds) + 0.02
    assert abs(chi.mean() / mf.chi1 - 1) < 4 * chi.std(ddof=1) / mf.chi1 / math.sqrt(seeds) + 0.01


def test_depth_300_gradient_ratio_propagate_meanfield_and_simulation_agree():
    # 300 tanh layers, W ~ N(0, 1.5/n), sigma_b^2 = 0.05: propagate (a weight variance as init)
    # settles to the mean field's q*, and its bottom-to-top gradient ratio to chi1^(L-1)
    n, depth, sw2, sb2 = 200, 300, 1.5, 0.05
    mf = T.meanfield("tanh", sw2, sb2)
    frame = T.propagate([n] * (depth + 1), "tanh", sw2 / n,
                        input_var=(mf.q_star - sb2) / sw2, bias_var=sb2)
    # input chosen so that q_1 = sw2 input_var + sb2 = q*: every layer stays at q*
    np.testing.assert_allclose(frame.pre_var, mf.q_star, rtol=1e-9)
    ratio = frame.grad_pre_var.iloc[0]
    assert ratio == pytest.approx(T.gradient_growth("tanh", sw2, sb2, depth), rel=1e-7)
    assert ratio < 1e-7  # chi1 = 0.9386: vanishing over 300 layers
    # simulation: the log of the ratio, off by a few finite-width percent per 100 layers
    with _one_thread():
        logs = [math.log(_chain("tanh", sw2, sb2, mf.q_star, depth, n, s, batch=2)[1][0])
                for s in range(2)]
    for lg in logs:  # -ln ratio ~ 19; a 1/n error in chi1 per layer would give 1.5
        assert lg == pytest.approx(math.log(ratio), abs=0.1 * abs(math.log(ratio)))


def test_depth_one_is_a_single_row_with_no_gradient_to_propagate():
    frame = T.propagate([30, 20], "elu", "he_normal", input_var=2.0, bias_var=0.1)
    assert len(frame) == 1
    assert frame.pre_var.iloc[0] == pytest.approx(30 * (2 / 30) * 2.0 + 0.1)
    assert frame.grad_pre_var.iloc[0] == 1.0
    assert T.gradient_growth("elu", 1.5, 0.1, 1) == 1.0
    p = T.predict_gradients({"sizes": [30, 20, 3], "activation": "elu", "init": "he_normal"})
    assert p.relative_std == [1.0]


def _plain_net(sizes, act, init_var, bias_var, input_mean, seeds, batch=64):
    f, df = _SIM[act]
    pres, grads = [], []
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        a = input_mean + rng.standard_normal((batch, sizes[0]))
        ws, ds, pre = [], [], []
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            w = rng.standard_normal((fan_in, fan_out)) * math.sqrt(init_var(fan_in, fan_out))
            s = a @ w + rng.standard_normal(fan_out) * math.sqrt(bias_var)
            pre.append(np.mean(s * s))
            ws.append(w)
            ds.append(df(s))
            a = f(s)
        g = rng.standard_normal(a.shape) * ds[-1]
        gs = [np.mean(g * g)]
        for w, d in zip(ws[:0:-1], ds[-2::-1]):
            g = (g @ w.T) * d
            gs.append(np.mean(g * g))
        pres.append(pre)
        grads.append(np.array(gs[::-1]) / gs[0])
    return np.array(pres), np.array(grads)


@pytest.mark.parametrize("act,init,init_var", [
    ("leaky_relu", "he_normal", lambda i, o: 2 / i),
    ("elu", "glorot_normal", lambda i, o: 2 / (i + o)),
    ("sigmoid", "lecun_normal", lambda i, o: 1 / i)])
def test_widths_that_change_per_layer_match_simulation(act, init, init_var):
    sizes = [64, 600, 200, 800, 300, 500]
    fn, kw = _THEORY[act]
    pred = T.propagate(sizes, fn, init, input_var=1.0, input_mean=0.5, bias_var=0.1, **kw)
    with _one_thread():
        pre, grad = _plain_net(sizes, act, init_var, 0.1, 0.5, seeds=4)
    for measured, col in ((pre, "pre_var"), (grad, "grad_pre_var")):
        m, se = measured.mean(0), measured.std(0, ddof=1) / 2
        p = pred[col].to_numpy()
        assert np.all(np.abs(m - p) <= 4 * se + 0.05 * p), (col, m, p)
    # fan_out enters glorot's variance: the recursion really used each layer's own widths
    assert pred.weight_var.tolist() == pytest.approx([init_var(i, o)
                                                      for i, o in zip(sizes, sizes[1:])])


def _probe_grads(net, n_in, seed, mean, batch=300):
    from depthlab.losses import get_loss
    from depthlab.probes.stats import layer_quantities, measurement_pass, network_stats

    grad = layer_quantities(()).index("grad_pre_std")
    r = np.random.default_rng(seed + 100)
    x = (mean + r.standard_normal((batch, n_in))).astype(np.float32)
    measurement_pass(net, x, r.integers(0, 10, batch), get_loss("cross_entropy"))
    g = np.array([st[grad] for _, st in network_stats(net, ())])
    return g / g[-1]


@pytest.mark.parametrize("cfg,mean,tol", [
    # widths changing per layer, shifted inputs (input_mean enters E[x^2])
    ({"sizes": [64, 600, 200, 800, 300, 10], "activation": "elu", "init": "glorot_normal"},
     0.5, 0.08),
    ({"sizes": [64] + [400] * 5 + [10], "activation": "leaky_relu", "init": "he_normal",
      "activation_kwargs": {"negative_slope": 0.2}}, 0.0, 0.08),
    # residual without BN, elu (measured 0.95-1.07 at width 256, 10 blocks)
    ({"sizes": [64] + [256] * 11 + [10], "activation": "elu", "init": "he_normal",
      "residual": True}, 0.0, 0.12),
])
def test_predict_gradients_matches_depthlab_nets_on_new_settings(cfg, mean, tol):
    import depthlab as dl

    kw = {k: v for k, v in cfg.items() if k not in ("sizes", "activation", "init")}
    for seed in range(2):
        net = dl.mlp(cfg["sizes"], cfg["activation"], cfg["init"], seed=seed, **kw)
        pred = T.predict_gradients(net, input_mean=mean)
        assert pred.covered
        with _one_thread():
            measured = _probe_grads(net, cfg["sizes"][0], seed, mean)
        ratio = measured / np.array(pred.relative_std, dtype=float)
        assert np.all(np.abs(ratio - 1) < tol), ratio


def test_bias_only_net_keeps_the_bias_variance_and_passes_no_gradient():
    # all weights 0: every pre-activation is its bias, s_l ~ N(0, sigma_b^2); below the top the
    # gradient dL/ds_l = (dL/ds_{l+1} W^T) f' is exactly 0
    frame = T.propagate([10, 50, 50, 50], "tanh", 0.0, bias_var=0.3)
    assert frame.pre_var.tolist() == pytest.approx([0.3] * 3)
    e_tanh2 = T.gauss_expect(lambda s: np.tanh(s) ** 2, 0.3)
    assert frame.act_sq.tolist() == pytest.approx([e_tanh2] * 3)
    assert frame.grad_pre_var.tolist() == [0.0, 0.0, 1.0]
    mf = T.meanfield("tanh", 1e-12, 0.3)  # the sigma_w^2 -> 0 limit of the mean field
    assert mf.q_star == pytest.approx(0.3, rel=1e-10) and mf.phase == "ordered"
    assert mf.chi1 < 1e-11


# -- SELU off the standard initialization -----------------------------------------------------
@pytest.mark.parametrize("tau", [0.9, 1.1])
def test_selu_fixed_point_with_non_standard_tau_matches_simulation(tau):
    """Weights with each unit's sum exactly 0 (omega = 0) and sum of squares exactly tau: the
    Klambauer map is then exact for wide layers, so its fixed point is what the net reaches."""
    mu_star, nu_star = T.selu_fixed_point(0.0, tau)
    assert (nu_star > 1) == (tau > 1) and abs(mu_star) < 0.1
    n, depth, batch = 400, 25, 8

    def selu(z):
        return T.gaussian.resolve_activation("selu").f(z)

    means, vars_ = [], []
    with _one_thread():
        for seed in range(3):
            rng = np.random.default_rng(seed)
            x = 1.0 + 2.0 * rng.standard_normal((batch, n))  # far from the fixed point
            for layer in range(depth):
                w = rng.standard_normal((n, n))
                w -= w.mean(axis=0)
                w *= np.sqrt(tau / np.sum(w * w, axis=0))
                x = selu(x @ w)
                if layer >= 15:
                    means.append(x.mean())
                    vars_.append(x.var())
    m, v = np.array(means), np.array(vars_)
    assert abs(m.mean() - mu_star) < 4 * m.std(ddof=1) / math.sqrt(3) + 0.01
    assert abs(v.mean() / nu_star - 1) < 4 * v.std(ddof=1) / nu_star / math.sqrt(3) + 0.02
    # with Gaussian weights the mean field's q* = tau E[a^2] = tau (nu* + mu*^2) to O(mu*^2)
    mf = T.meanfield("selu", tau)
    assert mf.q_star == pytest.approx(tau * (nu_star + mu_star ** 2), rel=0.01)


def test_selu_map_keeps_theorem_1_domain_and_its_fixed_points_attract():
    """Klambauer et al. 2017, Theorem 1 (papers.md): for omega in [-0.1, 0.1], tau in
    [0.95, 1.1] the map sends mu in [-0.1, 0.1], nu in [0.8, 1.5] into itself (the proof bounds
    the new mean by [-0.03106, 0.06773], reached at the corners) with an attracting fixed
    point there."""
    grid = np.linspace(0, 1, 5)
    out = np.array([T.selu_map(mu, nu, om, tau)
                    for om in -0.1 + 0.2 * grid for tau in 0.95 + 0.15 * grid
                    for mu in -0.1 + 0.2 * grid for nu in 0.8 + 0.7 * grid])
    assert out[:, 0].min() == pytest.approx(-0.03106, abs=1e-5)
    assert out[:, 0].max() == pytest.approx(0.06773, abs=1e-5)
    assert 0.8 <= out[:, 1].min() and out[:, 1].max() <= 1.5
    for om in (-0.1, 0.1):
        for tau in (0.95, 1.1):
            mu, nu = T.selu_fixed_point(om, tau)
            assert -0.1 <= mu <= 0.1 and 0.8 <= nu <= 1.5
            assert T.selu_spectral_radius(om, tau) < 0.8


# -- batch norm with other activations / gamma, beta ------------------------------------------
def _bn_net(act, gamma, beta, width, depth, batch, seed):
    f, df = _SIM[act]
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((batch, width))
    cache = []
    for _ in range(depth):
        w = rng.standard_normal((width, width)) * math.sqrt(2 / width)
        h = a @ w
        sd = np.sqrt(h.var(0) + 1e-5)
        xhat = (h - h.mean(0)) / sd
        s = gamma * xhat + beta
        cache.append((w, xhat, sd, df(s)))
        a = f(s)
    g = rng.standard_normal(a.shape) * cache[-1][3]
    gs = [np.mean(g * g)]
    for l in range(depth - 1, 0, -1):
        w, xhat, sd, _ = cache[l]
        dx = g * gamma
        dh = (dx - dx.mean(0) - xhat * (dx * xhat).mean(0)) / sd
        g = (dh @ w.T) * cache[l - 1][3]
        gs.append(np.mean(g * g))
    return np.array(gs[::-1])


@pytest.mark.parametrize("act,gamma,beta", [
    ("sigmoid", 1.0, 0.0), ("leaky_relu", 1.0, 0.0), ("tanh", 1.5, 0.3), ("elu", 0.7, -0.2)])
def test_bn_gradient_growth_matches_simulation(act, gamma, beta):
    fn, kw = _THEORY[act]
    factor = T.bn_gradient_factor(fn, gamma, beta, **kw)
    assert factor.covered
    width, depth, batch = 256, 16, 256
    with _one_thread():
        slopes = [_slope(_bn_net(act, gamma, beta, width, depth, batch, s)[2:-2])
                  for s in range(2)]
    # finite width and batch: corrections of order 1/n + 1/B (documented: relu 1.200-1.213)
    for sl in slopes:
        assert sl == pytest.approx(factor.growth_sq, rel=0.03), (slopes, factor.growth_sq)


def test_bn_leaky_relu_closed_form_and_yang_relu_number():
    # leaky relu (slope a), s ~ N(0, 1): E f'^2 = (1 + a^2)/2,
    # Var f = (1 + a^2)/2 - (1 - a)^2/(2 pi)
    a = 0.2
    dsq = (1 + a * a) / 2
    var = dsq - (1 - a) ** 2 / (2 * math.pi)
    f = T.bn_gradient_factor("leaky_relu", negative_slope=a)
    assert f.growth_sq == pytest.approx(dsq / var, rel=1e-10)
    # papers.md (Yang et al. 2019): relu, large batch, pi/(pi-1) ~ 1.47 squared, ~1.21 the norm
    r = T.bn_gradient_factor("relu")
    assert r.growth_sq == pytest.approx(1.47, abs=0.005)
    assert r.growth == pytest.approx(1.21, abs=0.005)


# -- bad input --------------------------------------------------------------------------------
def _nan_below_zero(s):
    return np.where(s >= 0, s, np.nan)


@pytest.mark.parametrize("call", [
    lambda f: T.meanfield(f, 1.5, 0.05),
    lambda f: T.critical_sigma_w2(f, 0.05),
    lambda f: T.gradient_growth(f, 1.5, 0.05, 10),
    lambda f: T.propagate([4, 5, 6], f),
    lambda f: T.gradient_ratio([4, 5, 6], f),
    lambda f: T.propagate_residual(4, 5, 2, f, batchnorm=False),
])
def test_activation_giving_nan_is_one_clear_error(call):
    """An activation that returns NaN (here for s < 0, as np.log or sqrt would) was read as a
    diverging length map: meanfield gave q* = inf, chi1 = nan, phase 'chaotic', xi_c = 0;
    propagate said 'pre-activation variance overflowed at layer 2', the residual recursion
    'the residual stream's variance overflowed', critical_sigma_w2 scipy's 'The function value
    at x=0.001 is NaN'."""
    with pytest.raises(ValueError, match="nan"), np.errstate(invalid="ignore"):
        call(_nan_below_zero)


@pytest.mark.parametrize("tol", [math.nan, -1e-3, math.inf])
def test_meanfield_critical_tol_is_checked(tol):
    # a NaN tolerance called tanh at sigma_w^2 = 1 (chi1 = 1 exactly) 'chaotic' with
    # c* = -0.014 and xi_c = 9e15
    with pytest.raises(ValueError, match="critical_tol"):
        T.meanfield("tanh", 1.0, 0.0, critical_tol=tol)


@pytest.mark.parametrize("call,fragment", [
    (lambda: T.meanfield("tanhh", 1.5, 0.05), "tanhh"),
    (lambda: T.meanfield("tanh", math.nan, 0.05), "sigma_w2"),
    (lambda: T.meanfield("tanh", 1.5, -0.05), "sigma_b2"),
    (lambda: T.critical_sigma_w2("erf", 0.05), "erf"),
    (lambda: T.gradient_growth("tanh", 1.5, 0.05, 0), "depth"),
    (lambda: T.propagate([8], "tanh"), "sizes"),
    (lambda: T.propagate([8, 8], "tanh", input_var=-1.0), "input_var"),
    (lambda: T.propagate([8, 8], "tanh", input_var=math.nan), "input_var"),
    (lambda: T.propagate([8, 8], "tanh", bias_var=-0.1), "bias_var"),
    (lambda: T.propagate_batchnorm([8, 8], "tanh", input_var=math.nan), "input_var"),
    (lambda: T.selu_fixed_point(0.0, -1.1), "tau"),
    (lambda: T.selu_map(0.0, math.nan), "nu"),
    (lambda: T.predict_gradients({"sizes": [4, 6, 2], "activation": "tanh"}, input_var=-2.0),
     "input_var"),
])
def test_bad_values_are_named(call, fragment):
    with pytest.raises(ValueError, match=fragment):
        call()
