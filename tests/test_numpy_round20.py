"""Round 20, NumPy engine / doctor / theory (numpy20)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import depthlab as dl

# -- mse / huber on one-hot rows report an accuracy ---------------------------------------------

def _one_hot_blobs(n: int = 120, k: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    centres = rng.normal(0.0, 3.0, (k, 4))
    x = centres[y] + rng.normal(size=(n, 4))
    return x, y, np.eye(k)[y]


@pytest.mark.parametrize("loss", ["mse", "huber"])
def test_a_classifier_trained_with_a_regression_loss_on_one_hot_rows_reports_its_accuracy(loss):
    # was: val_acc NaN in every epoch (a Nielsen-style 64-64-10 sigmoid net trained with mse
    # on digits reached 0.906 arg-max accuracy while its history said NaN)
    x, y, yy = _one_hot_blobs()
    net = dl.mlp([4, 16, 3], activation="tanh", seed=0)
    hist = dl.fit(net, x[:90], yy[:90], x[90:], yy[90:], loss=loss, optimizer="sgd", lr=0.1,
                  epochs=3, seed=0)
    last = hist.epochs_frame().iloc[-1]
    expect_val = float(np.mean(net.predict(x[90:]).argmax(axis=1) == y[90:]))
    expect_train = float(np.mean(net.predict(x[:90]).argmax(axis=1) == y[:90]))
    assert last["val_acc"] == pytest.approx(expect_val)
    assert last["train_acc"] == pytest.approx(expect_train)
    df = dl.probe(net, x, yy, loss=loss)
    acc = df[(df.layer == 0) & (df.quantity == "acc")]["value"]
    assert len(acc) == 1 and acc.iloc[0] == pytest.approx(
        np.mean(net.forward(x, training=True).argmax(axis=1) == y))


@pytest.mark.parametrize("target", [
    "regression", "soft rows", "two ones", "one column", "float labels"])
def test_regression_targets_still_have_no_accuracy(target):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 4))
    y = {"regression": rng.normal(size=(30, 3)),
         "soft rows": np.full((30, 3), 1 / 3),
         "two ones": np.tile([1.0, 1.0, 0.0], (30, 1)),
         "one column": np.ones((30, 1)),
         "float labels": rng.integers(0, 3, 30).astype(float)}[target]
    net = dl.mlp([4, 8, y.shape[1] if y.ndim == 2 else 1], seed=0)
    hist = dl.fit(net, x, y, x, y, loss="mse", optimizer="sgd", lr=0.01, epochs=1, seed=0)
    assert math.isnan(hist.epochs_frame().iloc[-1]["val_acc"])
    assert dl.losses.get_loss("mse").accuracy(net.predict(x), y) is None


def test_constant_accuracy_of_a_one_hot_regression_loss_is_the_majority_share():
    from depthlab.diagnosis.doctor import constant_accuracy

    y = np.array([0, 1, 1, 2, 1])
    yv = np.array([1, 0, 2, 1])
    assert constant_accuracy("mse", np.eye(3)[y], np.eye(3)[yv]) == 0.5
    assert constant_accuracy("huber", np.eye(3)[y], np.eye(3)[yv]) == 0.5
    assert math.isnan(constant_accuracy("mse", np.eye(3)[y], np.eye(4)[yv]))
    assert math.isnan(constant_accuracy("mse", np.random.default_rng(0).normal(size=(5, 3)),
                                        np.eye(3)[yv]))


def test_the_doctor_of_a_one_hot_mse_classifier_reports_and_judges_accuracy():
    x, y, yy = _one_hot_blobs(200)
    diag = dl.doctor({"sizes": [4, 16, 16, 3], "activation": "tanh"},
                     (x[:150], yy[:150], x[150:], yy[150:]), steps=60, loss="mse", lr=0.1)
    acc = diag.baseline["val_acc"]
    assert math.isfinite(acc) and acc > 0.9


# -- critical_sigma_w2: a jump of chi1 over 1 is no critical point --------------------------------

@pytest.mark.parametrize("name,sigma_b2", [("gelu", 0.0), ("gelu", 0.05), ("swish", 0.0),
                                           ("mish", 0.05), ("swish", 0.5)])
def test_critical_sigma_w2_refuses_a_jump_of_chi1_over_1(name, sigma_b2):
    # was: gelu, sigma_b2 0 -> 2.3517, where meanfield gives q* = 1 (the unstable fixed point
    # the iteration starts on) and chi1 1.072, phase "chaotic": brentq found the jump of the
    # fixed point reached from q = 1 (q* 0, chi1 0.588 below; q* inf, chi1 1.18 above)
    with pytest.raises(ValueError, match=f"'{name}' with sigma_b2 = {sigma_b2:g} has no "
                                         "critical sigma_w2.*jumps over 1"):
        dl.theory.critical_sigma_w2(name, sigma_b2=sigma_b2)


@pytest.mark.parametrize("name,sigma_b2,kw", [
    ("gelu", 0.5, {}), ("mish", 0.5, {}), ("swish", 2.0, {}), ("selu", 0.05, {}),
    ("softsign", 0.05, {}), ("elu", 0.05, {"alpha": 0.5}), ("elu", 0.5, {"alpha": 2.0}),
    ("tanh", 0.05, {}), ("sigmoid", 0.0, {})])
def test_critical_sigma_w2_gives_chi1_of_1(name, sigma_b2, kw):
    sw = dl.theory.critical_sigma_w2(name, sigma_b2=sigma_b2, **kw)
    mf = dl.theory.meanfield(name, sigma_w2=sw, sigma_b2=sigma_b2, **kw)
    assert mf.chi1 == pytest.approx(1.0, abs=1e-7) and mf.phase == "critical"


def test_critical_sigma_w2_of_penalized_tanh_without_biases():
    # was: RuntimeError "Failed to converge after 100 iterations" from scipy's brentq (chi1 - 1
    # is flat within rounding just above the transition, where q* is tiny). Exact: q* = 0 and
    # chi1 = sigma_w^2 (1 + 0.25^2) / 2 = 1 at sigma_w^2 = 1 / 0.53125
    sw = dl.theory.critical_sigma_w2("penalized_tanh", sigma_b2=0.0)
    assert sw == pytest.approx(1 / 0.53125, rel=1e-7)
