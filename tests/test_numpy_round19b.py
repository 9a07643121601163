"""Round 19b (numpy19b): the doctor's unscaled_inputs finding."""

from __future__ import annotations

import math

import numpy as np

import depthlab as dl
from depthlab.diagnosis import KINDS, Diagnosis, rules


def _regression(scale: float, offset: float, n: int = 600, seed: int = 0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 3))
    y = (np.tanh(z @ np.array([1.0, -0.5, 0.3])) + 0.1 * rng.normal(size=n)).reshape(-1, 1)
    return (z * scale + offset).astype(np.float32), y.astype(np.float32)


CFG = {"sizes": [3, 16, 1], "activation": "relu", "init": "he_normal"}


def test_inputs_of_std_100_get_a_finding_whose_cure_is_verified_by_standardizing():
    # x ~ N(50, 100^2) at lr 1e-3 diverged with only "use a 10x smaller learning rate"
    # (which diverged too); at lr 1e-5 it ended 13x above a constant prediction, clean
    x, y = _regression(100.0, 50.0)
    d = dl.doctor(CFG, (x, y), loss="mse", lr=1e-3, steps=100, verify=True)
    assert d.kinds[0] == "unscaled_inputs"
    f = d.finding("unscaled_inputs")
    assert f.prescription == {"standardize": True}
    assert f.evidence["scale"] > 100 and f.evidence["metric"] > 10
    v = next(v for v in d.verifications if v.kind == "unscaled_inputs")
    assert v.before["diverged"] and not v.after["diverged"]
    assert v.after["train_loss"] < v.chance_loss and v.helped and v.resolved
    assert abs(v.metric_after - 0.1) < 1e-6  # standardized: every feature's RMS is 1
    back = Diagnosis.from_dict(d.to_dict(), d.probes)
    assert back == d
    low = dl.doctor(CFG, (x, y), loss="mse", lr=1e-5, steps=100)
    assert "unscaled_inputs" in low.kinds


def test_standardize_true_runs_the_doctor_on_standardized_inputs():
    x, y = _regression(100.0, 50.0)
    d = dl.doctor(CFG, (x, y), loss="mse", lr=1e-2, steps=100, standardize=True)
    assert d.healthy and d.settings["standardize"] is True
    assert "inputs standardized" in str(d)
    plain = dl.doctor(CFG, _regression(1.0, 0.0), loss="mse", steps=20)
    assert "standardize" not in plain.settings


def test_unscaled_inputs_threshold_cases():
    rng = np.random.default_rng(1)

    def metric(x):
        x = np.asarray(x, np.float64)
        return rules.input_scale(x.mean(0), x.std(0))["metric"]

    digits = dl.data.load_dataset("digits", seed=0).x_train
    assert metric(digits) < 1 and metric(digits * 255) > 1  # images in 0..1 / 0..255
    assert metric(digits + 2) > 1 and metric(digits + 0.5) < 1  # mean offsets (O 8.6 / 3.1)
    assert metric(rng.normal(size=(500, 4)) * 3) < 1 and metric(rng.normal(size=(500, 4)) * 20) > 1
    mixed = np.c_[rng.normal(size=(500, 3)), 1000 * rng.normal(size=500)]
    assert metric(mixed) > 1
    assert metric(np.eye(10)[rng.integers(0, 10, 500)]) < 1  # one-hot
    assert metric(rng.random((500, 20)) < 0.5) < 1  # binary
    assert metric(np.zeros((5, 3))) < 1  # constant features: no spread, scale 0
    assert KINDS.index("unscaled_inputs") < KINDS.index("lr_too_high")
    assert math.isnan(rules.input_scale([], [])["metric"])


def test_images_in_0_to_255_are_flagged_under_cross_entropy_but_a_10x_scale_is_not():
    ds = dl.data.load_dataset("digits", seed=0)
    cfg = {"sizes": [64, 64, 64, 10], "activation": "relu", "init": "he_normal"}
    raw = (ds.x_train * 255, ds.y_train, ds.x_val * 255, ds.y_val)
    d = dl.doctor(cfg, raw, verify=True)
    assert d.kinds[0] == "unscaled_inputs"  # before the dead units it causes
    f = d.finding("unscaled_inputs")
    assert f.evidence["scale_limit"] == rules.INPUT_SCALE_LOGITS
    assert "(standardize=True in dl.doctor" in "(" + f.prescription_text.split(": ", 1)[1]
    v = next(v for v in d.verifications if v.kind == "unscaled_inputs")
    assert v.helped and v.after["val_acc"] > v.before["val_acc"] + 0.5  # 0.06 -> 0.82
    ten = dl.doctor(cfg, (ds.x_train * 10, ds.y_train, ds.x_val * 10, ds.y_val), steps=20)
    assert "unscaled_inputs" not in ten.kinds


def test_a_learning_rate_too_low_to_move_is_a_finding_cured_by_a_larger_one():
    # digits 64-64-64-10 relu, sgd lr 1e-5: train loss 2.99 above ln 10, val acc 0.09, and a
    # clean bill of health; updates of at most 2.8e-6 of the weights' norm
    ds = dl.data.load_dataset("digits", seed=0, standardize=True)
    cfg = {"sizes": [64, 64, 64, 10], "activation": "relu", "init": "he_normal"}
    d = dl.doctor(cfg, ds, lr=1e-5, verify=True)
    assert d.kinds == ["lr_too_low"]
    f = d.findings[0]
    assert f.prescription == {"lr": 0.01} and f.evidence["largest_update_ratio"] < 1e-5
    v = d.verifications[0]
    assert v.helped and v.resolved and v.after["val_acc"] > 0.8
    adam = dl.doctor(cfg, ds, optimizer="adam", lr=1e-6, steps=30)
    assert adam.kinds == ["lr_too_low"] and adam.findings[0].prescription == {"lr": 1e-3}
    # lr 1e-3: 2.5e-4 per step, loss 2.23 = 0.98x a constant prediction's, val acc 0.24 (lr
    # 1e-2: 0.82) was a clean bill of health; a net that learns ends below 0.5x (nphunt35)
    slow = dl.doctor(cfg, ds, lr=1e-3)
    assert slow.kinds == ["lr_too_low"] and slow.findings[0].prescription == {"lr": 0.01}


def test_standardizing_unscaled_inputs_at_a_tiny_learning_rate_names_the_learning_rate_next():
    x, y = _regression(100.0, 50.0)
    d = dl.doctor(CFG, (x, y), loss="mse", lr=1e-5, steps=200, verify=True)
    v = d.verifications[0]
    assert v.kind == "unscaled_inputs" and not v.helped and "lr_too_low" in v.new_findings
    s = dl.doctor(CFG, (x, y), loss="mse", lr=1e-5, steps=200, standardize=True, verify=True)
    assert s.kinds == ["lr_too_low"] and s.verifications[0].helped
