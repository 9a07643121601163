"""Round 29 hunt of the NumPy engine (nphunt29): regression tests, each seen failing first."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import depthlab as dl
from depthlab.losses import MSE, Huber
from depthlab.parameter import Parameter
from depthlab.regularizers import penalty


def _targets_of_1e20() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.standard_normal((40, 5)), rng.standard_normal((40, 1)) * 1e20


@pytest.mark.parametrize("size", [40, 20000])  # one dot, and the float64 sum of chunk dots
def test_float32_mse_of_errors_whose_squares_overflow_float32_is_finite(size):
    # errors of 1e20 (float32 holds up to 3.4e38) have squares of 1e40, past float32's range:
    # the float32 dot of the squared errors was inf (and a RuntimeWarning), although the loss
    # is a Python float that holds 1e40; float64's is finite
    rng = np.random.default_rng(1)
    diff64 = rng.standard_normal((size, 1)) * 1e20
    pred = np.zeros((size, 1), np.float32)
    target = diff64.astype(np.float32)
    want = float(np.mean(target.astype(np.float64) ** 2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = MSE().forward(pred, target)
    assert np.isfinite(got) and got == pytest.approx(want, rel=1e-6)


def test_float32_huber_with_a_huge_delta_and_penalty_of_huge_weights_are_finite():
    pred = np.zeros((8, 2), np.float32)
    target = np.full((8, 2), 1e25, np.float32)
    got = Huber(delta=1e30).forward(pred, target)
    assert np.isfinite(got) and got == pytest.approx(0.5 * float(np.float32(1e25)) ** 2, rel=1e-6)
    w = Parameter("w", np.full((3, 3), 1e20, np.float32))
    assert penalty([w], l2=1.0) == pytest.approx(9 * float(np.float32(1e20)) ** 2, rel=1e-6)


def test_a_float32_network_on_targets_of_1e20_trains_instead_of_diverging_at_step_0():
    # fit said 'History(0 steps, diverged)' and the doctor 'the loss was non-finite on the
    # first mini-batch, before any update, so the initial weights overflow' (prescribing
    # batch norm) for Glorot weights: only the float32 sum of squares had overflowed
    x, y = _targets_of_1e20()
    net = dl.mlp([5, 8, 1], "tanh", dtype="float32", seed=0)
    hist = dl.fit(net, x, y, loss="mse", epochs=1, batch_size=40, progress=False)
    ref = dl.fit(dl.mlp([5, 8, 1], "tanh", dtype="float64", seed=0), x, y, loss="mse",
                 epochs=1, batch_size=40, progress=False)
    assert hist.status == "finished" and hist.steps == 1
    assert hist.step_loss[0] == pytest.approx(ref.step_loss[0], rel=1e-4)
    assert hist.final()["train_loss"] == pytest.approx(ref.final()["train_loss"], rel=1e-3)


def test_a_float32_sigmoid_net_whose_first_gradients_underflow_to_0_has_vanishing_gradients():
    # 70 sigmoid layers of 32, Glorot (the known vanishing case, 4.3x smaller per layer): in
    # float32 the gradients of layers 1-2 underflow to exactly 0 (layer 3: 1.2e-45, the last
    # 2.5e-4); the rule skipped every probe whose first-layer gradient was not > 0, so the
    # float32 doctor found no vanishing gradients where float64's finds 8e49x (80 layers)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((200, 16)), rng.integers(0, 4, 200)
    net = dl.mlp([16] + [32] * 70 + [4], "sigmoid", "glorot_uniform", seed=0)
    d = dl.doctor(net, (x, y), steps=10)
    f = d.finding("vanishing_gradients")
    assert f is not None
    assert f.evidence["ratio"] > 1e30 and 1 in f.layers and 2 in f.layers
    assert "at least" in f.message and "float32" in f.message


def test_a_float32_tanh_net_whose_first_gradients_overflow_has_exploding_gradients_at_init():
    # 200 tanh layers of 32 with N(0, 1) weights (the chaotic phase): in float32 the gradients
    # of layers 1-18 overflow (their std reads NaN; layer 19 ~1e38, the last 1.8e-3); the rule
    # skipped every probe whose first-layer gradient was not finite, and the doctor said only
    # 'divergence: use a 10x smaller learning rate', where float64's finds exploding gradients
    # at initialization (2.7e40x) with the initializer's cure
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((200, 16)), rng.integers(0, 4, 200)
    net = dl.mlp([16] + [32] * 200 + [4], "tanh", "normal", seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the overflowing backward pass
        d = dl.doctor(net, (x, y), steps=10)
    f = d.finding("exploding_gradients")
    assert f is not None and f.evidence["ratio"] > 1e30 and 1 in f.layers
    assert f.prescription == {"init": "glorot_uniform"}
    assert "at least" in f.message and "float32" in f.message
