"""Theory for the two cures: batch-normalized plain nets (Yang et al. 2019) and pre-activation
residual nets, checked in closed form and against measurements on random depthlab networks.

Tolerances come from the measured spread (batch 300, 512 Gaussian inputs, 3 seeds, depth 30;
see theory/batchnorm.py): the per-layer factor of BN nets sits within 0.4% across seeds and
within 1.1% of the large-width limit at width 256-512 (relu 1.199-1.210 against 1.2112, tanh
1.089-1.094 against 1.0853, selu 1.040-1.047 against 1.0352, elu 1.043-1.046 against 1.0388,
softsign 1.120 against 1.1154), so 2.5% is allowed. Swish, outside the argument (D'(1) > 1),
measures 1.16-1.18 against its Gaussian value 1.1009. Residual-net gradient variances at 20
blocks of width 256 fall within 0.78-1.17x of the prediction, stream variances within 5%.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import depthlab as dl
from depthlab.layers import Residual
from depthlab.losses import get_loss
from depthlab.probes.stats import layer_quantities, measurement_pass, network_stats
from depthlab.spec import ModelSpec
from depthlab.theory import (
    bn_gradient_factor,
    predict_gradients,
    propagate,
    propagate_batchnorm,
    propagate_residual,
)

GRAD = layer_quantities(()).index("grad_pre_std")


def _measure(net, n_in: int, seed: int, batch: int = 300) -> np.ndarray:
    r = np.random.default_rng(seed + 100)
    x = r.standard_normal((batch, n_in)).astype(np.float32)
    y = r.integers(0, 10, batch)
    measurement_pass(net, x, y, get_loss("cross_entropy"))
    return np.array([s[GRAD] for _, s in network_stats(net, ())])


def _slope_factor(g: np.ndarray, skip: int = 3) -> float:
    """Per-layer growth towards the input, fitted away from both ends."""
    n = len(g)
    return float(np.exp(-np.polyfit(np.arange(skip, n - skip), np.log(g[skip:n - skip]), 1)[0]))


# -- batch norm: closed forms ------------------------------------------------------------------
def test_relu_factor_is_pi_over_pi_minus_one():
    f = bn_gradient_factor("relu")
    assert f.covered
    assert f.growth_sq == pytest.approx(math.pi / (math.pi - 1), rel=1e-10)
    assert f.growth == pytest.approx(math.sqrt(math.pi / (math.pi - 1)), rel=1e-10)
    # relu is positively homogeneous: BN's gamma does not change the factor
    assert bn_gradient_factor("relu", gamma=2.5).growth_sq == pytest.approx(f.growth_sq, rel=1e-9)


def test_leaky_relu_and_shifted_relu_closed_forms():
    a = 0.1
    f = bn_gradient_factor("leaky_relu", negative_slope=a)
    var = (1 + a * a) / 2 - ((1 - a) / math.sqrt(2 * math.pi)) ** 2
    assert f.growth_sq == pytest.approx((1 + a * a) / 2 / var, rel=1e-9)
    # relu(s), s ~ N(beta, 1): E[f'^2] = Phi(beta), moments of the rectified Gaussian
    b = 0.7
    from scipy.stats import norm

    m = b * norm.cdf(b) + norm.pdf(b)
    sq = (1 + b * b) * norm.cdf(b) + b * norm.pdf(b)
    g = bn_gradient_factor("relu", beta=b)
    assert g.growth_sq == pytest.approx(norm.cdf(b) / (sq - m * m), rel=1e-8)


def test_uncovered_activations_return_no_number():
    for name in ("identity", "softmax", "gelu", "swish", "mish"):
        f = bn_gradient_factor(name)
        assert not f.covered and math.isnan(f.growth) and "no prediction" in f.note
    assert bn_gradient_factor("swish").norm_mode > 1.1 > bn_gradient_factor("gelu").norm_mode > 1
    # relu is positively homogeneous: the examples' norms neither drift nor settle
    assert bn_gradient_factor("relu").norm_mode == pytest.approx(1.0, abs=1e-12)
    assert bn_gradient_factor("tanh").norm_mode < 0.5
    th = propagate_batchnorm([8, 16, 16, 16], "identity")
    assert th["grad_pre_var"].iloc[-1] == 1.0 and th["grad_pre_var"].iloc[:-1].isna().all()
    p = predict_gradients(ModelSpec(sizes=(8, 16, 16, 2), batchnorm=True, activation="identity"))
    assert not p.covered and p.relative_std[:-1] == [None] and "affine" in p.note


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="gamma"):
        bn_gradient_factor("relu", gamma=0.0)
    with pytest.raises(TypeError, match="beta"):
        bn_gradient_factor("relu", beta="1")
    with pytest.raises(ValueError, match="blocks"):
        propagate_residual(4, 8, -1, "relu")
    with pytest.raises(ValueError, match="explicit integers"):
        predict_gradients({"sizes": ["auto", 8, 8, "auto"]})
    with pytest.raises(TypeError, match="ModelSpec"):
        predict_gradients(3.0)


# -- batch norm: measured on random depthlab nets ---------------------------------------------
@pytest.mark.parametrize("activation,width,depth", [
    ("relu", 256, 30), ("tanh", 256, 30), ("selu", 256, 30), ("softsign", 256, 30),
    ("relu", 512, 50), ("tanh", 512, 10)])
def test_bn_factor_matches_measurement(activation, width, depth):
    n_in = 512
    net = dl.mlp([n_in] + [width] * depth + [10], activation, "he_normal", seed=1,
                 batchnorm=True)
    g = _measure(net, n_in, seed=1)
    skip = 3 if depth > 12 else 1
    measured = _slope_factor(g, skip)
    pred = predict_gradients(net)
    assert pred.architecture == "batchnorm" and pred.covered
    assert measured == pytest.approx(pred.layer_growth, rel=0.025)
    # the network-level prediction has the same slope (equal widths, eps << q)
    rel = np.asarray(pred.relative_std, dtype=float)
    assert _slope_factor(rel, skip) == pytest.approx(pred.layer_growth, rel=1e-4)


def test_swish_is_rightly_left_out():
    """Swish's examples' norms drift apart (D'(1) = 1.10): the Gaussian formula would be off by
    far more than the tolerance, which is why bn_gradient_factor gives no number for it."""
    n_in, width, depth = 512, 256, 30
    net = dl.mlp([n_in] + [width] * depth + [10], "swish", "he_normal", seed=1, batchnorm=True)
    measured = _slope_factor(_measure(net, n_in, seed=1))
    f = bn_gradient_factor("swish")
    gaussian = math.sqrt(f.deriv_sq / f.act_var)
    assert measured / gaussian - 1 > 0.03
    assert not predict_gradients(net).covered


# -- residual ----------------------------------------------------------------------------------
def test_residual_relu_he_closed_form_without_bn():
    # n v = 2, E[relu'^2] = 1/2, E[relu^2] = q/2: each block doubles the stream and its gradient
    th = propagate_residual(16, 32, 5, "relu", "he_normal", batchnorm=False)
    assert list(th["site"]) == ["block_in", "block_mid"] * 5 + ["head"]
    ins = th[th.site == "block_in"]
    assert np.allclose(ins["grad_pre_var"], [2.0 ** (5 - b + 1) for b in range(1, 6)])
    assert np.allclose(ins["stream_sq"], [2.0 * 2 ** (b - 1) for b in range(1, 6)])
    assert th["grad_pre_var"].iloc[-1] == 1.0


def test_residual_bn_stream_grows_additively():
    th = propagate_residual(16, 32, 8, "relu", "he_normal", batchnorm=True, eps=0.0)
    q = th[th.site == "block_in"]["stream_batch_var"].to_numpy()
    # q_{b+1} - q_b = n v2 Var relu(z) = 2 (pi - 1) / (2 pi), from q_1 = n_0 v_0 = 2
    assert np.allclose(np.diff(q), (math.pi - 1) / math.pi)
    assert q[0] == pytest.approx(2.0)
    assert np.allclose(th["pre_var"], 1.0)


@pytest.mark.parametrize("activation,init,batchnorm,tol", [
    ("relu", "he_normal", True, 0.25), ("tanh", "glorot_normal", True, 0.25),
    ("tanh", "glorot_normal", False, 0.12)])
def test_residual_matches_measurement(activation, init, batchnorm, tol):
    blocks, width, n_in = 20, 256, 64
    net = dl.mlp([n_in] + [width] * (blocks + 1) + [10], activation, init, seed=0,
                 batchnorm=batchnorm, residual=True)
    g = _measure(net, n_in, seed=0)
    pred = predict_gradients(net)
    th = pred.frame
    assert len(th) == len(g) == 2 * blocks + 1
    measured = (g / g[-1]) ** 2
    ratio = measured / th["grad_pre_var"].to_numpy()
    assert np.all(np.abs(ratio - 1) < tol), ratio
    streams = [layer.x.astype(np.float64) for layer in net.layers if isinstance(layer, Residual)]
    ins = th[th.site == "block_in"]
    sq = np.array([np.mean(x * x) for x in streams])
    assert np.allclose(sq / ins["stream_sq"].to_numpy(), 1.0, atol=0.06)
    if batchnorm:
        bv = np.array([np.mean(x.var(axis=0)) for x in streams])
        assert np.allclose(bv / ins["stream_batch_var"].to_numpy(), 1.0, atol=0.06)


# -- the one entry -----------------------------------------------------------------------------
def test_predict_gradients_dispatches_and_accepts_every_form():
    cfg = {"sizes": [8, 32, 32, 32, 3], "activation": "tanh", "init": "glorot_uniform"}
    plain = predict_gradients(cfg)
    assert plain.architecture == "plain" and plain.covered
    ref = propagate([8, 32, 32, 32], "tanh", "glorot_uniform")["grad_pre_var"]
    assert np.allclose(plain.frame["grad_pre_var"], ref)
    net = dl.mlp(cfg["sizes"], "tanh", "glorot_uniform", residual=True, batchnorm=True)
    for form in (net, net.config, {"model": net.config}, ModelSpec(**{**cfg, "sizes": tuple(
            cfg["sizes"]), "residual": True, "batchnorm": True})):
        p = predict_gradients(form)
        assert p.architecture == "residual+batchnorm" and len(p.relative_std) == 5
    nz = predict_gradients({**cfg, "bias_init": dl.initializers.Constant(0.5)})
    assert not nz.covered and "bias_init" in nz.note
    nz = predict_gradients({**cfg, "bias_init": "normal"})  # zero-mean: sigma_b^2 added (37)
    assert nz.covered and "sigma_b^2 = 1" in nz.note
    nz = predict_gradients({**cfg, "bias_init": "normal", "residual": True})
    assert not nz.covered and "bias_init" in nz.note


# -- consumers ---------------------------------------------------------------------------------
@pytest.mark.parametrize("options", [{"batchnorm": True}, {"residual": True},
                                     {"residual": True, "batchnorm": True}])
def test_gradient_figure_draws_theory_for_bn_and_residual_runs(options):
    from types import SimpleNamespace

    from depthlab import plot

    net = dl.mlp([16, 32, 32, 32, 32, 3], "relu", "he_normal", seed=0, **options)
    rng = np.random.default_rng(0)
    table = dl.probe(net, rng.standard_normal((64, 16)).astype(np.float32),
                     rng.integers(0, 3, 64))
    run = SimpleNamespace(probes=table.assign(step=0), config={"model": net.config})
    fig = plot.gradient_per_layer({"run": run})
    theory = [ln for ln in fig.axes[0].lines if ln.get_label() == "run: theory"]
    assert len(theory) == 1
    expected = predict_gradients(net).relative_std
    y = theory[0].get_ydata()
    assert y[0] / y[-1] == pytest.approx(expected[0] / expected[-1], rel=1e-9)
