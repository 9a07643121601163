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


# -- unscaled regression targets -----------------------------------------------------------------

def _regression(scale: float = 1.0, offset: float = 0.0, n: int = 600):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 5))
    f = np.sin(x[:, 0]) + x[:, 1] * x[:, 2] + 0.5 * x[:, 3] + 0.1 * rng.normal(size=n)
    y = (f - f.mean()) / f.std() * scale + offset
    k = n * 4 // 5
    return x[:k], y[:k], x[k:], y[k:]


_REG = {"sizes": [5, 32, 32, 1], "activation": "relu", "init": "he_normal", "seed": 0}


def test_targets_far_from_standardized_are_named_and_standardizing_them_is_verified():
    # was: targets with mean 5x their std (adam 1e-3, 300 steps): train loss 1.52 against the
    # targets' variance 1.02 (no better than a constant prediction) and a clean bill of health;
    # standardized, the same net ends at 0.086
    data = _regression(offset=5.0)
    diag = dl.doctor(_REG, data, loss="mse", optimizer="adam", lr=1e-3, steps=300, verify=True)
    assert [f.kind for f in diag.findings] == ["unscaled_targets"]
    f = diag.findings[0]
    assert f.prescription == {"standardize_targets": True}
    assert f.evidence["offset"] == pytest.approx(abs(data[1].mean()) / data[1].std(), rel=1e-9)
    assert diag.baseline["train_loss"] > np.var(data[1])
    v = diag.verifications[0]
    assert v.helped and v.resolved
    # the cure's losses are in the targets' units: the same as a run asked to standardize them
    cured = dl.doctor(_REG, data, loss="mse", optimizer="adam", lr=1e-3, steps=300,
                      standardize_targets=True)
    assert cured.findings == [] and cured.settings["standardize_targets"] is True
    assert v.after["train_loss"] == pytest.approx(cured.baseline["train_loss"], rel=1e-9)
    assert v.after["train_loss"] < 0.2 * np.var(data[1])


def test_the_standardized_targets_run_reports_losses_in_the_targets_units():
    from depthlab.training.trainer import Trainer

    x, y, xv, yv = _regression(scale=30.0, offset=7.0)
    diag = dl.doctor(_REG, (x, y, xv, yv), loss="mse", optimizer="sgd", lr=0.01, steps=100,
                     standardize_targets=True)
    m, s = y.mean(), y.std()
    net = dl.mlp(**_REG)
    Trainer(net, loss="mse", optimizer="sgd", lr=0.01, batch_size=32, epochs=None,
            max_steps=100, seed=0).fit(x, (y - m) / s)
    pred = net.predict(x)[:, 0] * s + m
    assert diag.baseline["train_loss"] == pytest.approx(np.mean((pred - y) ** 2), rel=1e-6)
    pred_v = net.predict(xv)[:, 0] * s + m
    assert diag.baseline["val_loss"] == pytest.approx(np.mean((pred_v - yv) ** 2), rel=1e-6)


@pytest.mark.parametrize("case", ["standardized", "fitted anyway", "one-hot mse"])
def test_targets_that_need_no_standardizing_get_no_finding(case):
    if case == "one-hot mse":
        x, y, yy = _one_hot_blobs(200)
        data = (x[:150], yy[:150] * 1.0, x[150:], yy[150:] * 1.0)
        cfg = {"sizes": [4, 16, 3], "seed": 0}
        kw = {"optimizer": "sgd", "lr": 0.1}
    else:
        # scale 15 with sgd 0.01 trains to 5% of the targets' variance unstandardized (better
        # than standardized, 10%): left alone
        data = _regression() if case == "standardized" else _regression(scale=15.0)
        cfg, kw = _REG, {"optimizer": "sgd", "lr": 0.01}
    diag = dl.doctor(cfg, data, loss="mse", steps=300, **kw)
    assert "unscaled_targets" not in [f.kind for f in diag.findings]


def test_standardize_targets_must_be_a_bool():
    with pytest.raises(TypeError, match="standardize_targets='yes' is not accepted"):
        dl.doctor(_REG, _regression(), loss="mse", standardize_targets="yes")


def test_binary_labels_under_mse_are_not_unscaled_targets():
    # 0/1 labels with 88.5% ones (mean 2.8x their std) were flagged unscaled_targets: classes,
    # not a scale to standardize
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 4))
    y = (x[:, 0] + 0.5 * rng.normal(size=400) > -1.4).astype(float)
    assert y.mean() / y.std() > 2
    diag = dl.doctor({"sizes": [4, 16, 1], "activation": "tanh", "seed": 0}, (x, y), loss="mse",
                     steps=50)
    assert "unscaled_targets" not in [f.kind for f in diag.findings]
    from depthlab.diagnosis.doctor import _target_stats
    assert _target_stats("mse", y) == {} and _target_stats("mse", y * 2 + 1) != {}


def test_unscaled_targets_with_unscaled_inputs_prescribes_standardizing_both():
    # was: each cure alone (inputs x 100 + 50, targets 300 +- 10, adam 1e-3, 300 steps: train
    # loss 7787) made it worse (3.2e4 inputs standardized, 1.4e4 targets standardized): both
    # "did not help"; both standardized: 7.0
    x, y, xv, yv = _regression(scale=10.0, offset=300.0, n=800)
    rng = np.random.default_rng(1)
    scale = rng.uniform(50, 150, 5)
    x, xv = x * scale + 50, xv * scale + 50
    diag = dl.doctor(_REG, (x, y, xv, yv), loss="mse", optimizer="adam", lr=1e-3, steps=300,
                     verify=True)
    kinds = [f.kind for f in diag.findings]
    assert kinds[0] == "unscaled_targets" and "unscaled_inputs" in kinds
    f = diag.findings[0]
    assert f.prescription == {"standardize_targets": True, "standardize": True}
    v = next(v for v in diag.verifications if v.kind == "unscaled_targets")
    assert v.helped and v.after["train_loss"] < 0.2 * np.var(y)


@pytest.mark.parametrize("delta", [0.3, 1.0, 5.0])
def test_constant_loss_of_huber_is_the_loss_at_the_best_constant(delta):
    # was NaN: the doctor judged a huber run against no constant prediction
    from scipy.optimize import minimize_scalar

    from depthlab.diagnosis.doctor import constant_loss

    rng = np.random.default_rng(0)
    y = np.column_stack([rng.normal(3, 2, 300), rng.exponential(4, 300), rng.normal(size=300)])
    fn = dl.loss("huber", delta=delta)
    best = np.mean([minimize_scalar(
        lambda c, j=j: fn.forward(np.full((300, 1), c), y[:, j:j + 1]),
        bounds=(y[:, j].min(), y[:, j].max()), method="bounded",
        options={"xatol": 1e-12}).fun for j in range(3)])
    assert constant_loss(fn, y) == pytest.approx(best, rel=1e-12)
    assert constant_loss(fn, y[:, 0]) == pytest.approx(constant_loss(fn, y[:, :1]), rel=1e-15)


def test_a_huber_net_that_fits_offset_targets_held_out_gets_no_finding():
    # targets 3 +- 1, huber, sgd 0.05, 300 steps: train loss 0.033, held-out probe loss 0.056,
    # 0.12x a constant prediction's 0.45; TARGET_FIT 0.1 flagged it (standardizing: 0.029)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(800, 5))
    f = np.sin(x[:, 0]) + x[:, 1] * x[:, 2] + 0.5 * x[:, 3]
    y = 3.0 + (f - f.mean()) / f.std()
    diag = dl.doctor(_REG, (x[:600], y[:600], x[600:], y[600:]), loss="huber", optimizer="sgd",
                     lr=0.05, steps=300)
    assert diag.baseline["train_loss"] < 0.1 * np.var(y)
    assert "unscaled_targets" not in [f.kind for f in diag.findings]


def test_the_run_line_says_the_targets_were_standardized_and_the_diagnosis_round_trips():
    import json

    from depthlab.diagnosis import Diagnosis

    diag = dl.doctor(_REG, _regression(offset=5.0), loss="mse", steps=20,
                     standardize_targets=True)
    assert "targets standardized (losses in their units)" in str(diag).splitlines()[1]
    back = Diagnosis.from_dict(json.loads(json.dumps(diag.to_dict())))
    assert back.settings["standardize_targets"] is True
    assert str(back) == str(diag)


@pytest.mark.parametrize("loss", ["cross_entropy", "bce"])
def test_standardize_targets_with_a_loss_on_classes_is_one_clear_error(loss):
    # was: "training y: cross_entropy: labels must be integers, got 1.1476..." (the labels had
    # been standardized)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(100, 4)), rng.integers(0, 2, 100)
    with pytest.raises(ValueError, match=r"standardize_targets=True needs a regression loss "
                                         rf"\(mse, huber\); got loss='{loss}'"):
        dl.doctor({"sizes": [4, 8, 2 if loss == "cross_entropy" else 1]}, (x, y), loss=loss,
                  steps=10, standardize_targets=True)
