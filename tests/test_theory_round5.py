"""Adversarial checks of the theory and of the reproductions' reports (round 5).

The tests before "independent simulations" each pin a bug found by comparing a theory
function with an independent computation (SciPy quadrature, a closed form, a NumPy network) or
a report's words with its own data, and fail on the code before its fix; the last section
checks predictions against wide random networks and the papers' own numbers.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate
from threadpoolctl import threadpool_limits

import depthlab as dl
from depthlab.data import load_dataset
from depthlab.initializers import get_initializer
from depthlab.progress import ExperimentProgress
from depthlab.reproduce import glorot2010
from depthlab.reproduce.base import Result
from depthlab.theory import (
    critical_sigma_w2,
    gauss_expect,
    hermite_rule,
    meanfield,
    normal_rule,
    numerical_taylor,
    predict_gradients,
    propagate,
    propagate_batchnorm,
    propagate_residual,
    selu_fixed_point,
    selu_jacobian,
    selu_map,
    taylor,
)


@pytest.fixture(autouse=True)
def _one_thread():
    with threadpool_limits(1):
        yield


def _e_sech(q: float, power: int) -> float:
    """E[sech(sqrt(q) z)^power], z ~ N(0, 1), by SciPy on the scale where the bump lives."""
    sd = math.sqrt(q)
    dens = lambda s: math.exp(-0.5 * (s / sd) ** 2) / (sd * math.sqrt(2 * math.pi))  # noqa: E731
    return 2 * integrate.quad(lambda s: dens(s) / math.cosh(s) ** power, 0, 40, epsrel=1e-13,
                              limit=400, points=[0.5, 1, 2, 4, 8, 16])[0]


# ------------------------------------------------------------------ mean field, huge sigma_w^2

def test_bounded_activation_has_a_finite_q_star_however_large_sigma_w2():
    """tanh is bounded, so q* <= sigma_w^2 + sigma_b^2 is finite at any sigma_w^2: q* = 1e13
    was reported as diverging (q* = inf, converged False) with chi1 taken at q = 1e12 instead
    of q*, off by sqrt(10)."""
    sw2, sb2 = 1e13, 0.05
    mf = meanfield("tanh", sw2, sb2)
    assert mf.converged and math.isfinite(mf.q_star)
    # q* = sw2 E[tanh^2(sqrt(q*) z)] + sb2 = sw2 (1 - E[sech^2]) + sb2, E[sech^2] ~ 2/sqrt(2 pi q)
    assert mf.q_star == pytest.approx(sw2 * (1 - 2 / math.sqrt(2 * math.pi * sw2)), rel=1e-9)
    assert mf.chi1 == pytest.approx(sw2 * _e_sech(mf.q_star, 4), rel=1e-6)
    assert mf.phase == "chaotic" and mf.chi1 > 1e6


def test_chaotic_correlation_fixed_point_is_the_stable_one_not_minus_one():
    """tanh without biases: c = -1 is also a fixed point of the correlation map (odd f), a
    repelling one when chi1 > 1. At sigma_w^2 = 1e4 the quadrature makes h(-1) exactly 0 and
    c* = -1 with xi_c = inf came back; the stable fixed point is c* = 0, where
    chi_c = sigma_w^2 E[f'(u)]^2 (u1, u2 independent)."""
    sw2 = 1e4
    mf = meanfield("tanh", sw2, 0.0)
    assert mf.c_star == pytest.approx(0.0, abs=1e-9)
    e_sech2 = _e_sech(mf.q_star, 2)
    assert mf.chi_c == pytest.approx(sw2 * e_sech2 ** 2, rel=1e-6)
    assert mf.xi_c == pytest.approx(-1 / math.log(sw2 * e_sech2 ** 2), rel=1e-6)


def test_sigma_w2_at_the_float_limit_gives_the_sign_network_limit_without_warnings():
    """sigma_w^2 = sigma_b^2 = 1e300: tanh acts as sign, q* = sigma_w^2 + sigma_b^2 = 2e300
    (was capped at 1e300 and called diverging), the correlation map is
    c -> 1/2 + arcsin(c) / pi with slope 1 / (pi sqrt(1 - c^2)) at c*; relu at 1e300 diverges
    without NumPy overflow warnings (the c-map multiplied sigma_w^2 by q before dividing)."""
    import warnings

    from scipy.optimize import brentq

    mf = meanfield("tanh", 1e300, 1e300)
    assert mf.converged and mf.q_star == pytest.approx(2e300, rel=1e-9)
    c = brentq(lambda c: 0.5 + math.asin(c) / math.pi - c, 0.5, 0.99)
    assert mf.c_star == pytest.approx(c, abs=5e-3)
    assert mf.xi_c == pytest.approx(-1 / math.log(1 / (math.pi * math.sqrt(1 - c * c))),
                                    rel=0.02)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        relu = meanfield("relu", 1e300, 0.0)
    assert relu.q_star == math.inf and relu.chi1 == pytest.approx(5e299)


@pytest.mark.parametrize("act,slope2", [("tanh", 1.0), ("relu", 0.5), ("elu", 1.0)])
def test_tiny_bias_variance_is_a_fixed_point_not_a_collapse(act, slope2):
    """With sigma_b^2 = 1e-14 > 0 the length map never goes below sigma_b^2; its fixed point
    in the linear regime is q* = sigma_b^2 / (1 - sigma_w^2 E[f'(0)^2]) (f(0) = 0), not the 0
    of a collapse (q* was reported as 0 once q fell under 1e-12)."""
    sw2, sb2 = 0.5, 1e-14
    mf = meanfield(act, sw2, sb2)
    assert mf.q_star == pytest.approx(sb2 / (1 - sw2 * slope2), rel=1e-6, abs=0.0)
    assert mf.chi1 == pytest.approx(sw2 * slope2, rel=1e-6)


# ------------------------------------------------------------------ off-centre quadrature

@pytest.mark.parametrize("var,mean", [(1e6, 0.5), (1e10, 1.0), (1e10, -3e5), (1e20, 5.0)])
def test_off_centre_expectation_resolves_unit_features_at_large_variance(var, mean):
    """E[sech(s)^4], s ~ N(mean, var): the bump of width ~1 at s = 0 sat inside one panel
    5000 wide in s at var = 1e12 (panels were at least 0.005 wide in z): 54% low at
    var = 1e10, mean = 1. For sd >> 1, expanding the density about s = 0:
    phi(mean/sd) / sd [4/3 - (1 - mean^2/var) / (2 var) (pi^2 - 6)/9]."""
    sd = math.sqrt(var)
    exact = (math.exp(-0.5 * (mean / sd) ** 2) / (sd * math.sqrt(2 * math.pi))
             * (4 / 3 - (1 - mean ** 2 / var) / (2 * var) * (math.pi ** 2 - 6) / 9))
    with np.errstate(over="ignore"):
        got = gauss_expect(lambda s: 1 / np.cosh(s) ** 4, var, mean)
    assert got == pytest.approx(exact, rel=1e-8)


# ------------------------------------------------------------------ linear regime, kinks

def test_linear_regime_keeps_each_side_of_a_kink():
    """method="linear" replaced a kinked activation by one line with the averaged slope:
    ReLU at He init then lost half its variance per layer (E[f^2] = q/4, E[f'^2] = 1/4)
    where He et al.'s closed form keeps it (q/2, 1/2). Each side now keeps its own line:
    E f = (l0 + r0)/2 + (r1 - l1) sqrt(q/2pi), E f'^2 = (l1^2 + r1^2)/2."""
    lin = propagate([100] * 5, "relu", "he_normal", method="linear")
    np.testing.assert_allclose(lin.pre_var, 2.0, rtol=1e-9)
    np.testing.assert_allclose(lin.act_mean, math.sqrt(2.0 / (2 * math.pi)), rtol=1e-9)
    np.testing.assert_allclose(lin.deriv_sq, 0.5, rtol=1e-9)
    np.testing.assert_allclose(lin.grad_pre_var, 1.0, rtol=1e-9)
    exact = propagate([100] * 5, "relu", "he_normal")  # relu is its own linear regime
    np.testing.assert_allclose(lin.act_sq, exact.act_sq, rtol=1e-9)
    pt = propagate([50, 50], "penalized_tanh", 1 / 50, input_var=1e-6, method="linear")
    assert pt.deriv_sq.iloc[0] == pytest.approx((1 + 0.25 ** 2) / 2, rel=1e-9)
    smooth = propagate([50, 50, 50], "sigmoid", 1 / 50, method="linear")
    assert smooth.act_sq.iloc[0] == pytest.approx(0.25 + 0.25 ** 2 * 1.0, rel=1e-9)


@pytest.mark.parametrize("act,factor", [("relu", 2.0), ("leaky_relu", 2 / (1 + 0.01 ** 2)),
                                        ("penalized_tanh", 2 / (1 + 0.25 ** 2)),
                                        ("step", math.inf), ("sigmoid", 16.0), ("tanh", 1.0)])
def test_weight_variance_factor_of_a_kink_is_he_not_the_averaged_slope(act, factor):
    """weight_variance_factor_vs_tanh was 1 / alpha^2 of the averaged slope: 4 for ReLU, where
    He et al. need 2 (E[f'^2] = 1/2); checked against the exact gradient recursion, which
    keeps Var(dL/ds) constant at that weight variance for small signals."""
    tc = taylor(act)
    assert tc.weight_variance_factor_vs_tanh == pytest.approx(factor, rel=1e-9)
    if math.isfinite(factor) and tc.beta == 0.0:
        n = 64
        df = propagate([n] * 4, act, factor / n, input_var=1e-8)
        np.testing.assert_allclose(df.grad_pre_var, 1.0, rtol=1e-4)


@pytest.mark.parametrize("act", ["elu", "softsign"])
def test_first_order_taylor_of_a_second_order_kink_is_exact(act):
    """elu and softsign have f'(0) = 1 from both sides but f'' jumps at 0; asked for order 1,
    only c0, c1 of the one-sided fits were compared (equal), so the slow central fit gave
    alpha = 0.992 (elu) and 0.968 (softsign)."""
    tc = numerical_taylor(act, order=1)
    assert not tc.smooth and tc.alpha == pytest.approx(1.0, abs=1e-9)
    assert tc.coefficients == pytest.approx(numerical_taylor(act, order=3).coefficients[:2])


# ------------------------------------------------------------------ initializers as objects

def _measured_pre_var(sizes, init, act="tanh", batch=400, seed=0):
    """Per-layer Var(s) of a plain NumPy network whose weights ``init`` draws."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((batch, sizes[0]))
    f = dl.get_activation(act)
    out = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        s = a @ init((n_in, n_out), rng, np.float64)
        out.append(float(s.var()))
        a = f.forward(s)
    return np.array(out)


@pytest.mark.parametrize("init", [get_initializer("orthogonal", gain=2.0),
                                  get_initializer("he_uniform"),
                                  get_initializer("variance_scaling", scale=0.5, mode="fan_out",
                                                  distribution="uniform")])
def test_initializer_objects_are_read_by_their_variance(init):
    """An Initializer object (``dl.mlp(init=obj)`` accepts one) was called as a variance
    function ``init(fan_in, fan_out)`` -- a weight sample -- and propagate failed with NumPy's
    'only 0-dimensional arrays'; now its ``variance(fan_in, fan_out)`` is used, checked against
    non-square layers drawn by the same object."""
    sizes = [300, 500, 200, 400]
    df = propagate(sizes, "tanh", init)
    measured = np.mean([_measured_pre_var(sizes, init, seed=k) for k in range(3)], axis=0)
    np.testing.assert_allclose(measured, df.pre_var.to_numpy(), rtol=0.08)
    bn = propagate_batchnorm(sizes, "relu", init)
    assert np.isfinite(bn.grad_pre_var).all()
    res = propagate_residual(30, 40, 2, "relu", init, batchnorm=False)
    assert np.isfinite(res.grad_pre_var).all()


def test_constant_non_zero_weights_are_refused_not_predicted_as_zero_variance():
    """constant(0.3) weights have Var(W) = 0 but mean 0.3: s = 0.3 sum_i x_i is far from 0,
    yet the recursion predicted pre_var = 0. Refused (ValueError) in the recursions,
    uncovered in predict_gradients; zeros stay predicted."""
    c = get_initializer("constant", value=0.3)
    for call in (lambda: propagate([4, 8, 8], "tanh", c),
                 lambda: propagate([4, 8, 8], "tanh", "constant", init_kw={"value": 0.3}),
                 lambda: propagate_batchnorm([4, 8, 8], "relu", c),
                 lambda: propagate_residual(4, 8, 2, "relu", c)):
        with pytest.raises(ValueError, match="zero-mean"):
            call()
    pred = predict_gradients(dl.mlp([4, 8, 8, 2], "tanh", init=c, seed=0))
    assert not pred.covered and "non-zero mean" in pred.note
    assert propagate([4, 8, 8], "tanh", "zeros").pre_var.tolist() == [0.0, 0.0]


# ------------------------------------------------------------------ bad arguments, one message

@pytest.mark.parametrize("call,exc,fragment", [
    (lambda: numerical_taylor("tanh", order=-1), ValueError, "order"),
    (lambda: numerical_taylor("tanh", order=0), ValueError, "order"),
    (lambda: numerical_taylor("tanh", radius="0.5"), TypeError, "radius"),
    (lambda: selu_map(0.0, 1.0, lam="1"), TypeError, "lam"),
    (lambda: selu_map(0.0, 1.0, lam=float("nan")), ValueError, "lam"),
    (lambda: selu_map(0.0, 1.0, alpha=-1.0), ValueError, "alpha"),
    (lambda: selu_fixed_point(start=("a", "b")), TypeError, "mu"),
    (lambda: selu_fixed_point(start=(0.0,)), ValueError, "start"),
    (lambda: selu_jacobian(h="1e-6"), TypeError, "h"),
    (lambda: gauss_expect(np.tanh, "1"), TypeError, "variance"),
    (lambda: gauss_expect(np.tanh, 1.0, "1"), TypeError, "mean"),
    (lambda: normal_rule(None), TypeError, "variance"),
    (lambda: critical_sigma_w2("tanh", 0.05, bracket=(1.0, math.inf)), ValueError, "bracket"),
    (lambda: critical_sigma_w2("tanh", 0.05, bracket=("a", 2.0)), TypeError, "bracket"),
    (lambda: critical_sigma_w2("tanh", 0.05, bracket=(1.0, 2.0, 3.0)), ValueError, "bracket"),
])
def test_bad_arguments_name_themselves(call, exc, fragment):
    """Each was an IndexError, NumPy's ufunc message, a bare float() error, a silent NaN
    result or SciPy's 'failed to converge' before."""
    with pytest.raises(exc, match=fragment):
        call()


def test_quadrature_rules_still_take_numpy_scalars_and_zero_d_arrays():
    """The checks added above refuse strings, not the NumPy numbers other modules pass."""
    ref = normal_rule(2.0)
    for var in (np.float32(2.0), np.float64(2.0), np.array(2.0), 2):
        np.testing.assert_array_equal(normal_rule(var)[0], ref[0])
    assert gauss_expect(np.tanh, np.array(1.0), np.float32(0.5)) == pytest.approx(
        gauss_expect(np.tanh, 1.0, 0.5), rel=1e-7)


# ------------------------------------------------------------------ glorot2010's report words

def test_glorot_table_note_reports_the_sigmoid_top_layer_it_measured():
    """The Table 1 note said the sigmoid net's 'top layer saturated as in Fig. 2' whenever it
    had not learned, without measuring it. Now the table carries each net's top hidden layer
    mean activation and the note quotes it, saying 'saturated' only below Fig. 2's 0.1."""
    shapes = glorot2010.shapeset_split(300, 60, 100, seed=0)
    digits = load_dataset("digits", seed=0, standardize=True)
    tiny = dict(lrs=(0.1,), select_steps=2, keep=1, steps=2)
    cfg = dict(table_width=8, shapeset=tiny, mnist5k=tiny)
    labels = [lab for lab in glorot2010.stage_labels()
              if lab.startswith("Table 1")]
    res = Result("glorot2010", "t")
    d = glorot2010.Inputs(shapes, digits, cfg, ExperimentProgress.planned(labels))
    glorot2010.stage_table1(d, res)
    table = res.tables["table1"]
    for dname in ("shapeset", "mnist5k"):
        row = table[(table.data == dname) & (table.net == "sigmoid")].iloc[0]
        assert 0.0 < row.top_mean < 1.0
        (note,) = [n for n in res.notes if n.startswith(f"Table 1, {dname}, after")]
        assert f"top hidden layer's mean activation {row.top_mean:.3f}" in note
        assert ("saturated" in note) == (row.top_mean < glorot2010.TOP_SATURATED)
    # two updates leave the sigmoid's top layer near sigmoid's 0.5: never called saturated
    assert not any("saturated" in n for n in res.notes if n.startswith("Table 1, "))
    net = dl.mlp([4, 6, 6, 3], activation="sigmoid", init="zeros", seed=0)
    assert glorot2010.top_hidden_mean(net, np.ones((5, 4))) == pytest.approx(0.5)


def test_recursions_refuse_depths_whose_rows_cannot_fit_before_computing(monkeypatch):
    """propagate kept ~1 KB per layer and took ~0.4 ms per layer: ten million layers ran for an
    hour towards 10 GB. Now refused up front (MemoryRefusal, a ValueError) like
    selu_trajectory; a depth that fits still runs."""
    from depthlab.memory import MemoryRefusal

    monkeypatch.setenv("DEPTHLAB_MEMORY_LIMIT", "1M")
    for call in (lambda: propagate([10] * 2001, "tanh"),
                 lambda: propagate_batchnorm([10] * 2001, "relu"),
                 lambda: propagate_residual(10, 10, 1000, "relu")):
        with pytest.raises(MemoryRefusal, match="layers"):
            call()
    assert len(propagate([10] * 101, "tanh")) == 100
    with pytest.raises(MemoryRefusal, match="hermite_rule"):  # an n x n companion matrix
        hermite_rule(10**6)
    assert len(hermite_rule(50)[0]) == 50


def test_reproduce_output_folder_keeps_no_checks_of_an_earlier_experiment(tmp_path):
    """Two experiments written into one ``--out`` folder: the second has no sanity checks, and
    the first's checks.json stayed beside the second's claims.json as if it were its own."""
    from depthlab.reproduce.base import Claim, Experiment
    from depthlab.reproduce.page import write_result

    exp = Experiment("t", "T", "paper", lambda **kw: None)
    first = Result("a", "A", claims=[Claim("c", "p", "m", True, 1.0)],
                   checks=[Claim("identity", "p", "m", True, 0.0)])
    write_result(first, tmp_path, exp)
    assert (tmp_path / "checks.json").exists()
    write_result(Result("b", "B", claims=[Claim("c2", "p", "m", False, 2.0)]), tmp_path, exp)
    assert not (tmp_path / "checks.json").exists()
    assert '"c2"' in (tmp_path / "claims.json").read_text()


# ------------------------------------------------------------------ independent simulations

def test_ordered_phase_correlations_approach_one_at_the_rate_chi_c():
    """Depth scale by simulation: two inputs at q* with correlation 0.6 through wide tanh
    layers (sigma_w^2 = 1, sigma_b^2 = 0.05, ordered: c* = 1); 1 - c shrinks by
    chi_c = exp(-1/xi_c) per layer (Schoenholz et al. 2017)."""
    sw2, sb2, n = 1.0, 0.05, 1000
    mf = meanfield("tanh", sw2, sb2)
    assert mf.c_star == 1.0 and mf.xi_c == pytest.approx(3.63, abs=0.01)  # papers.md: 3.6
    rng = np.random.default_rng(3)
    gaps = []
    for _ in range(6):
        z = rng.standard_normal((2, n))
        s = np.stack([z[0], 0.6 * z[0] + 0.8 * z[1]]) * math.sqrt(mf.q_star)
        gap = []
        for _ in range(10):
            s = np.tanh(s) @ rng.normal(0, math.sqrt(sw2 / n), (n, n)) + rng.normal(
                0, math.sqrt(sb2), n)
            gap.append(1 - s[0] @ s[1] / math.sqrt((s[0] @ s[0]) * (s[1] @ s[1])))
        gaps.append(gap)
    gap = np.mean(gaps, axis=0)
    rate = math.exp(np.polyfit(np.arange(2, 10), np.log(gap[2:]), 1)[0])
    assert rate == pytest.approx(mf.chi_c, rel=0.05)


@pytest.mark.parametrize("act,sizes", [("relu", [100, 400, 200, 300, 300, 300, 10]),
                                       ("tanh", [50, 300, 150, 400, 200, 200, 10])])
def test_batchnorm_prediction_with_unequal_widths_matches_measurement(act, sizes):
    """Dense -> BN -> f with widths changing layer to layer: each step towards the input
    multiplies Var(g) by (n_{l+1} / n_l) gamma^2 E[f'^2] / Var f (the width ratio does not
    cancel); measured on He-initialized float64 nets, batch 500, two seeds."""
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((500, sizes[0])), rng.integers(0, 10, 500)
    ratios = []
    for seed in range(2):
        net = dl.mlp(sizes, act, init="he_normal", batchnorm=True, seed=seed, dtype="float64")
        df = dl.probe(net, x, y, loss="cross_entropy")
        g = df[(df.quantity == "grad_pre_std") & (df.layer >= 1)].sort_values("layer")
        ratios.append(g.value.to_numpy() / g.value.iloc[-1])
    pred = np.array(predict_gradients(net).relative_std, dtype=float)
    np.testing.assert_allclose(np.mean(ratios, axis=0), pred, rtol=0.08)


def test_selu_jacobian_at_the_fixed_point_is_the_papers():
    """Klambauer et al. 2017, proof of Theorem 1: at (mu, nu) = (0, 1) with omega = 0, tau = 1
    the Jacobian of the moment map is ((0, 0.088834), (0, 0.782648)), spectral norm 0.7877."""
    jac = selu_jacobian()
    np.testing.assert_allclose(jac, [[0.0, 0.088834], [0.0, 0.782648]], atol=2e-6)
    assert np.linalg.norm(jac, 2) == pytest.approx(0.7877, abs=1e-4)
