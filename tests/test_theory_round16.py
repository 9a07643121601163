"""Round 16: depthlab.theory against direct Monte-Carlo computation on random networks, for
activations, initializers and input statistics the earlier rounds did not measure (softsign,
penalized tanh, mish, gelu, elu with uniform and orthogonal inits and shifted inputs; the
mean-field fixed points of non-odd and chaotic activations; batch-normalized and residual
chains of saturating activations). Each tolerance is several times the seeds' own spread at
these sizes and below the size of a wrong formula (a missing E[a]^2 term, a fan_out variance,
an averaged slope)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import depthlab as dl
from depthlab.activations import get_activation
from depthlab.theory import meanfield, predict_gradients, propagate

W = 256


def _probe_profile(net, x, seed):
    y = np.random.default_rng(seed).integers(0, 10, x.shape[0])
    df = dl.probe(net, x, y, loss="cross_entropy")
    df = df[df.layer >= 1]
    grad = df[df.quantity == "grad_pre_std"].sort_values("layer").value.to_numpy()
    act = df[df.quantity == "act_std"].sort_values("layer").value.to_numpy()
    return grad / grad[-1], act


@pytest.mark.parametrize("act, init, mean", [
    ("softsign", "he_uniform", 1.0),
    ("penalized_tanh", "orthogonal", 0.0),
    ("mish", "lecun_uniform", 1.0),
    ("elu", "glorot_uniform", 1.0),
    ("sigmoid", "he_uniform", 1.0),
])
def test_plain_chain_profile_matches_monte_carlo(act, init, mean):
    """Per-layer activation std and first/last gradient std of 5 layers of 256 (float64, 3
    seeds, 256 inputs of mean ``mean``) against propagate / predict_gradients: within 6%
    (measured 0.1-4% at width 400)."""
    depth = 5
    sizes = [W] * (depth + 1) + [10]
    pred = predict_gradients(dl.mlp(sizes, act, init), input_mean=mean)
    frame = propagate([W] * (depth + 1), act, init, 1.0, mean)
    assert pred.covered
    grads, acts = [], []
    for seed in range(3):
        net = dl.mlp(sizes, act, init, seed=seed, dtype="float64")
        x = np.random.default_rng(100 + seed).normal(size=(256, W)) + mean
        g, a = _probe_profile(net, x, seed)
        grads.append(g[0])
        acts.append(a)
    ratio = np.mean(grads) / pred.relative_std[0]
    act_ratio = np.mean(acts, axis=0) / np.sqrt(frame.act_var.to_numpy())
    assert abs(ratio - 1) < 0.06, ratio
    assert np.all(np.abs(act_ratio - 1) < 0.06), act_ratio


def _mean_field_mc(act: str, sw2: float, sb2: float, q_start: float, depth: int = 24,
                   n: int = 600, seeds: int = 3) -> tuple[float, float, float]:
    """(q, chi1, c) measured: pre-activation second moment over the upper half of the layers,
    the per-layer growth of the squared gradient over all of them, and the correlation of two
    inputs (starting at 0.3) at the top; inputs at the fixed point's variance."""
    f = get_activation(act)
    qs, chis, cs = [], [], []
    for seed in range(seeds):
        g = np.random.default_rng(seed)
        z = g.standard_normal((2, n))
        z[1] = 0.3 * z[0] + math.sqrt(1 - 0.09) * z[1]
        s = z * math.sqrt(q_start)
        ss, ws = [s], []
        for _ in range(depth - 1):
            w = g.standard_normal((n, n)) * math.sqrt(sw2 / n)
            s = f.forward(s) @ w + g.standard_normal(n) * math.sqrt(sb2)
            ws.append(w)
            ss.append(s)
        qs.append(np.mean([np.mean(t * t) for t in ss[depth // 2:]]))
        top = ss[-1]
        cs.append(float(np.mean(top[0] * top[1]) / math.sqrt(np.mean(top[0] ** 2)
                                                            * np.mean(top[1] ** 2))))
        gr = g.standard_normal((2, n))
        last = np.mean(gr * gr)
        for k in range(depth - 1, 0, -1):
            gr = (gr @ ws[k - 1].T) * f.derivative(ss[k - 1], f.forward(ss[k - 1]))
        chis.append((np.mean(gr * gr) / last) ** (1 / (depth - 1)))
    return float(np.mean(qs)), float(np.mean(chis)), float(np.mean(cs))


@pytest.mark.parametrize("act, sw2, sb2, c_tol", [
    ("sigmoid", 4.0, 0.05, 0.01),      # non-zero mean: E[f^2] includes E[f]^2 = ~1/4
    ("selu", 1.5, 0.0, 0.08),          # chaotic, c* = 0.44
    ("softsign", 10.0, 0.0, 0.08),     # odd, chaotic, c* = 0
    ("elu", 1.2, 0.1, 0.02),           # ordered, c* = 1
])
def test_mean_field_fixed_points_match_monte_carlo(act, sw2, sb2, c_tol):
    """q*, chi1 and c* of meanfield against random networks of width 600 (3 seeds): q* within
    5%, chi1 within 2%, c* within c_tol (measured at width 1000: sigmoid q* 1.253 vs 1.258,
    chi1 0.1695 vs 0.1691; selu c* 0.443 vs 0.474 +- 0.03; softsign chi1 1.456 vs 1.452)."""
    mf = meanfield(act, sw2, sb2)
    assert math.isfinite(mf.q_star)
    q, chi, c = _mean_field_mc(act, sw2, sb2, mf.q_star)
    assert q == pytest.approx(mf.q_star, rel=0.05)
    assert chi == pytest.approx(mf.chi1, rel=0.02)
    assert abs(c - mf.c_star) < c_tol, (c, mf.c_star)


@pytest.mark.parametrize("act, residual", [("softsign", False), ("sigmoid", False),
                                           ("selu", True)])
def test_batchnorm_and_residual_chains_of_saturating_activations_match(act, residual):
    """First/last gradient std of batch-normalized (plain, 8 layers) and residual (with and
    without BN, 4 blocks) nets of width 256, 200 Gaussian inputs, 2 seeds: within 8% of
    predict_gradients (measured 0.2-6% over 3 seeds of 300 inputs)."""
    for bn in ((True,) if not residual else (False, True)):
        sizes = [W] + [W] * (5 if residual else 8) + [10]
        pred = predict_gradients(dl.mlp(sizes, act, "lecun_normal", batchnorm=bn,
                                        residual=residual))
        assert pred.covered, pred.note
        got = []
        for seed in range(2):
            net = dl.mlp(sizes, act, "lecun_normal", batchnorm=bn, residual=residual,
                         seed=seed, dtype="float64")
            x = np.random.default_rng(100 + seed).normal(size=(200, W))
            got.append(_probe_profile(net, x, seed)[0][0])
        assert np.mean(got) / pred.relative_std[0] == pytest.approx(1.0, abs=0.08), (bn, got)


@pytest.mark.parametrize("max_iter", [1, 2])
def test_lsuv_returns_the_variance_each_layer_ends_with(max_iter):
    """Mishkin & Matas's LSUV rescales each layer until its output variance is 1; lsuv says
    it returns 'the final output variance of each Dense layer'. was: when max_iter ran out,
    the variance measured before the last rescale ([12.45, 0.39, 0.39] for max_iter=1 on
    inputs of std 5, while the layers then gave [1.0, 1.0, 1.0])."""
    from depthlab.lsuv import lsuv

    net = dl.mlp([50, 100, 100, 10], "tanh", "glorot_uniform", seed=0, dtype="float64")
    x = np.random.default_rng(0).normal(size=(200, 50)) * 5.0
    got = lsuv(net, x, max_iter=max_iter, tol=1e-6)
    net.forward(x, training=False)
    final = [float(np.var(d.x @ d.W.value)) for d in net.dense_layers()]
    net.clear_cache()
    assert got == pytest.approx(final, rel=1e-9)
    assert got == pytest.approx([1.0, 1.0, 1.0], rel=1e-6)  # no biases: one rescale is exact
