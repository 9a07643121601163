"""theoryhunt51, round 51: LSUV on layers with random biases."""

import numpy as np
import pytest

import depthlab as dl


def _net(bias_std: float):
    return dl.mlp([8, 16, 16, 4], "tanh", bias_init=dl.initializers.normal(bias_std),
                  dtype="float64", seed=3)


def test_lsuv_reaches_unit_variance_with_random_biases():
    """Biases of variance 0.8 add their spread to each Dense output's variance; the rule
    W <- W / sqrt(Var) overshoots every pass. LSUV must end each layer within tol of 1 (the
    old code returned 1.031 for the last layer after 10 passes, outside tol=0.01, silently)."""
    x = np.random.default_rng(0).standard_normal((128, 8))
    net = _net(np.sqrt(0.8))
    out = dl.lsuv(net, x, tol=0.01)
    assert all(abs(v - 1.0) < 0.01 for v in out), out
    # the returned variances are the layers' own: measured independently
    h = x
    for k, d in enumerate(net.dense_layers()):
        s = h @ d.W.value + d.b.value
        assert np.var(s) == pytest.approx(out[k], rel=1e-9)
        h = np.tanh(s)


def test_lsuv_refuses_biases_too_large_and_leaves_weights_unchanged():
    """Biases of variance 4: no scale of W brings Var(xW + b) to 1. The old code divided W by
    ~2 ten times (W x 1e-3, a dead network) and returned variances near 4 without a word."""
    x = np.random.default_rng(0).standard_normal((128, 8))
    net = _net(2.0)
    before = [d.W.value.copy() for d in net.dense_layers()]
    with pytest.raises(ValueError, match=r"dense1.*cannot reach 1.*biases"):
        dl.lsuv(net, x)
    for d, w in zip(net.dense_layers(), before):
        np.testing.assert_array_equal(d.W.value, w)


def test_lsuv_zero_biases_unchanged_rule():
    """Zero biases keep the paper's rule exactly: each layer's variance is 1 after one pass."""
    x = np.random.default_rng(1).standard_normal((64, 8))
    net = dl.mlp([8, 16, 16, 4], "relu", dtype="float64", seed=0)
    out = dl.lsuv(net, x)
    assert np.allclose(out, 1.0, atol=1e-9)
