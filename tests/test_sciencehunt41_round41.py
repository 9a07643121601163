"""Round 41 (sciencehunt41): theory and doctor checked against measurement."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import depthlab as dl
from depthlab.diagnosis import prescriptions as rx


@pytest.fixture(scope="module")
def digits():
    from depthlab.data import load_dataset

    return load_dataset("digits", seed=0, standardize=True)


def _sigmoid_config(depth: int, width: int = 64, init: str = "normal") -> dict:
    return {"sizes": [64] + [width] * depth + [10], "activation": "sigmoid", "init": init}


def test_a_deep_sigmoid_nets_cure_is_not_an_init_the_mean_field_says_cannot_train() -> None:
    """Glorot's variance puts sigmoid layers deep in the ordered phase (chi1 = 0.056: trainable
    to 6 xi = -6 / ln chi1 = 2.1 layers). Measured (digits, sgd 0.01, 200 steps, val acc):
    Glorot sigmoid 1/2/3/4 hidden layers of 64: 0.51, 0.14, 0.067, 0.061; with batch norm
    0.52, 0.73, 0.69, 0.73. The saturation cure of a 5x128 N(0, 1) sigmoid net was Glorot (val
    acc 0.317 -> 0.061, 'did not help'), the vanishing cure of a 10x64 N(0, 0.01) one too."""
    chi1, _ = rx.ordered_init("sigmoid")
    assert -6.0 / math.log(chi1) == pytest.approx(2.08, abs=0.01)
    for depth in (3, 5, 20):
        changes, text = rx.for_saturation("sigmoid", 128.0, _sigmoid_config(depth))
        assert changes == {"batchnorm": True}, (depth, changes)
        assert "ordered phase" in text and f"{depth} hidden layers" in text
        changes, text = rx.for_vanishing("sigmoid", 1e-4, _sigmoid_config(depth))
        assert changes == {"batchnorm": True}, (depth, changes)
        assert rx.for_exploding("sigmoid", 500.0, _sigmoid_config(depth))[0] == {
            "batchnorm": True}
    # shallow enough for the init: the init is still the cure
    assert rx.for_saturation("sigmoid", 128.0, _sigmoid_config(2))[0] == {
        "init": "glorot_uniform"}
    assert rx.for_vanishing("sigmoid", 1e-4, _sigmoid_config(1))[0] == {"init": "glorot_uniform"}
    assert rx.for_exploding("sigmoid", 500.0, _sigmoid_config(2))[0] == {
        "init": "glorot_uniform"}
    # a residual net: the skip path carries the gradient past the blocks, no depth limit
    assert rx.for_saturation("sigmoid", 128.0, {**_sigmoid_config(20), "residual": True})[0] == {
        "init": "glorot_uniform"}
    # an activation whose recommended variance is not deep in the ordered phase: unchanged
    tanh = {**_sigmoid_config(20), "activation": "tanh"}
    assert rx.for_saturation("tanh", 10.0, tanh)[0] == {"init": "glorot_uniform"}
    assert rx.for_vanishing("tanh", 1e-4, tanh)[0] == {"init": "glorot_uniform"}


def test_the_doctor_cures_a_deep_saturated_sigmoid_net_with_a_cure_that_helps(digits) -> None:
    warnings.simplefilter("ignore")
    net = dl.mlp([64] + [128] * 5 + [10], activation="sigmoid", init=dl.initializers.Normal(1.0),
                 seed=0)
    d = dl.doctor(net, digits, verify=True)
    assert "saturation" in d.kinds
    i = d.kinds.index("saturation")
    assert d.findings[i].prescription == {"batchnorm": True}
    v = next(v for v in d.verifications if v.kind == "saturation")
    assert v.helped and v.after["val_acc"] > v.before["val_acc"] + 0.1


def test_the_length_maps_depth_scale_xi_q_is_its_slope_at_q_star() -> None:
    """Schoenholz et al. 2017: ``1 / xi_q = -ln chi_q``, ``chi_q = sigma_w^2 E[f'^2 + f f'']``
    at q*, the slope of the length map; finite at the order-to-chaos transition where xi_c
    diverges."""
    from depthlab import theory as T

    # relu with biases: the map q -> sigma_w^2 q / 2 + sigma_b^2 is linear, slope sigma_w^2 / 2
    mf = T.meanfield("relu", 1.5, 0.1)
    assert mf.q_star == pytest.approx(0.1 / (1 - 0.75), rel=1e-9)
    assert mf.chi_q == pytest.approx(0.75, rel=1e-12)
    assert mf.xi_q == pytest.approx(-1 / math.log(0.75), rel=1e-12)
    # tanh without biases below sigma_w^2 = 1: q* = 0, where the map's slope is sigma_w^2
    assert T.meanfield("tanh", 0.5).chi_q == pytest.approx(0.5, rel=1e-9)
    # relu at He's variance without biases: every q is a fixed point (no decay)
    assert T.meanfield("relu", 2.0).xi_q == math.inf
    # kinked, bounded, shifted activations: chi_q is the map's derivative at q*
    for name, kw, sw2, sb2 in (("tanh", {}, 1.5, 0.05), ("elu", {"alpha": 0.5}, 1.5, 0.1),
                               ("sigmoid", {}, 4.0, 0.1), ("penalized_tanh", {}, 2.0, 0.05),
                               ("leaky_relu", {"negative_slope": 0.3}, 1.2, 0.2)):
        mf = T.meanfield(name, sw2, sb2, **kw)
        h = 1e-5 * mf.q_star
        slope = (T.q_map(name, mf.q_star + h, sw2, sb2, **kw)
                 - T.q_map(name, mf.q_star - h, sw2, sb2, **kw)) / (2 * h)
        assert mf.chi_q == pytest.approx(slope, rel=1e-7), name
        assert T.length_map_slope(name, sw2, sb2, **kw) == pytest.approx(mf.chi_q, rel=1e-12)
        assert 0 < mf.chi_q < 1 and mf.xi_q == pytest.approx(-1 / math.log(mf.chi_q))
    # tanh, sigma_b^2 = 0.05 at the critical sigma_w^2 ~ 1.76: xi_c diverges, xi_q stays ~1.5
    crit = T.meanfield("tanh", T.critical_sigma_w2("tanh", 0.05), 0.05)
    assert crit.xi_c > 1e3 and 1.0 < crit.xi_q < 2.0


def test_taylor_coefficients_at_0_of_an_activation_with_a_kink_near_0() -> None:
    """A kink away from 0 inside the fit's interval [-0.5, 0.5] (hard-tanh clip(s, -0.2, 0.2),
    a shifted relu max(s - 0.3, 0)) is no part of the expansion at 0, but the fit across it
    raised 'the fit is not stable' (c_1 = 0.129 on [-0.5, 0.5], 1.33 on [-0.375, 0.375]), and
    with it propagate(method='linear')."""
    from depthlab import theory as T

    hard = T.taylor(lambda s: np.clip(s, -0.2, 0.2), order=3)
    assert hard.coefficients == pytest.approx((0.0, 1.0, 0.0, 0.0), abs=1e-9) and hard.smooth
    shifted = T.taylor(lambda s: np.maximum(s - 0.3, 0.0), order=2)
    assert shifted.coefficients == pytest.approx((0.0, 0.0, 0.0), abs=1e-9)
    bumped = T.taylor(lambda s: np.tanh(s) + np.maximum(s - 0.4, 0.0), order=3)
    assert bumped.coefficients == pytest.approx((0.0, 1.0, 0.0, -1 / 3), abs=1e-8)
    df = T.propagate([100, 100, 100], lambda s: np.clip(s, -0.2, 0.2), 1e-2, method="linear")
    assert df["deriv_sq"].tolist() == pytest.approx([1.0, 1.0])


def _dropout_noise_measured(net: dl.Network, x: np.ndarray) -> float:
    """Noise over signal variance at the last hidden layer's output: two passes with different
    dropout masks, noise ``E[(o1 - o2)^2] / 2``, signal their covariance over the examples."""
    def run() -> np.ndarray:
        h = x
        for layer in net.layers[:-1]:
            h = layer.forward(h, training=True)
        return h

    o1, o2 = run(), run()
    noise = 0.5 * np.mean((o1 - o2) ** 2)
    signal = np.mean((o1 - o1.mean(0)) * (o2 - o2.mean(0)))
    return float(noise / signal)


def test_alpha_dropouts_compounded_noise_is_its_own_not_inverted_dropouts() -> None:
    """An alpha dropout layer (a SELU net's default) sets dropped units to a' = -lambda alpha
    and rescales: its noise over the signal's variance is p (1 + a'^2) / (1 - p) at SELU's fixed
    point (0, 1), 4.1x inverted dropout's p / (1 - p). The doctor's dropout_too_strong metric
    took every layer for inverted dropout: 4 SELU layers at 0.1 read 0.52x, measured 3.8x;
    the prescribed rate (k layers to at most 1x) then still buried the signal."""
    from depthlab.diagnosis.rules import chained_dropout_rates, dropout_noise

    x = np.random.default_rng(0).standard_normal((1000, 64))
    for act, init, kind, p, k in (("selu", "lecun_normal", "alpha", 0.1, 4),
                                  ("selu", "lecun_normal", "alpha", 0.05, 3),
                                  ("tanh", "glorot_normal", "standard", 0.2, 4)):
        net = dl.mlp([64] + [512] * k + [10], act, init, dropout=p, dropout_type=kind, seed=1,
                     dtype="float64")
        predicted = dropout_noise(chained_dropout_rates(net), alpha=[
            type(layer).__name__ == "AlphaDropout" for layer in net.layers
            if type(layer).__name__ in ("Dropout", "AlphaDropout")])
        measured = _dropout_noise_measured(net, x)
        assert measured == pytest.approx(predicted, rel=0.2), (act, kind, p, k)
    a2 = (1.0507009873554805 * 1.6732632423543772) ** 2
    assert dropout_noise([0.1] * 4, alpha=[True] * 4) == pytest.approx(
        ((1 + 0.1 * a2) / 0.9) ** 4 - 1)
    assert dropout_noise([0.1] * 4) == pytest.approx((1 / 0.9) ** 4 - 1)  # inverted: unchanged
    # the cure's rate keeps k alpha dropout layers' noise at the limit or below
    changes, text = rx.for_dropout_too_strong([0.3] * 6, 1.0, 0.3, 0.0, alpha=True)
    p_new = changes["dropout"]
    assert ((1 + p_new * a2) / (1 - p_new)) ** 6 - 1 <= 1.0
    assert ((1 + (p_new + 0.01) * a2) / (1 - p_new - 0.01)) ** 6 - 1 > 1.0
    assert "alpha dropout" in text
