"""The doctor: findings on known-sick networks, a clean bill for a healthy one, verified
prescriptions reported honestly."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from depthlab.diagnosis import Diagnosis, Finding, doctor
from depthlab.models import mlp


def clusters(n=800, d=20, k=4, seed=0):
    """Standardized Gaussian clusters (an easy, linearly separable task)."""
    g = np.random.default_rng(seed)
    centers = g.standard_normal((k, d)) * 6.0 / np.sqrt(d)
    y = g.integers(0, k, n)
    x = centers[y] + 0.5 * g.standard_normal((n, d))
    x = (x - x.mean(0)) / x.std(0)
    return x.astype(np.float32), y


X, Y = clusters()


def _check_finding(f: Finding):
    assert f.layers and all(isinstance(i, int) for i in f.layers)
    assert f.evidence["metric"] > f.evidence["threshold"]
    assert f.message.endswith(".") and any(ch.isdigit() for ch in f.message)
    assert f.severity in ("low", "medium", "high")


def test_healthy_network_gets_a_clean_bill():
    dg = doctor(dict(sizes=[20, 32, 32, 32, 4], activation="tanh", init="glorot_uniform"),
                (X, Y), lr=0.05, verify=True)
    assert isinstance(dg, Diagnosis)
    assert dg.healthy and dg.findings == [] and dg.verifications == []
    assert dg.baseline["val_acc"] > 0.9
    assert "clean bill" in str(dg)
    assert json.loads(json.dumps(dg.to_dict()))["healthy"] is True
    assert {"step", "layer", "quantity", "value"} <= set(dg.probes.columns)


def test_deep_sigmoid_vanishing_gradients():
    dg = doctor(dict(sizes=[20] + [32] * 8 + [4], activation="sigmoid",
                     init="glorot_uniform"), (X, Y), lr=0.1)
    f = dg.finding("vanishing_gradients")
    assert f is not None
    _check_finding(f)
    assert f.evidence["metric"] > 1e3  # sigmoid' <= 1/4 per layer
    assert 1 in f.layers and 8 not in f.layers
    assert f.prescription == {"batchnorm": True}
    assert dg.finding("mean_shift") is not None  # sigmoid's mean ~0.5


def test_sigmoid_normal_init_mismatch_and_mean_shift():
    dg = doctor(dict(sizes=[20] + [32] * 8 + [4], activation="sigmoid", init="normal"),
                (X, Y), lr=0.05)
    f = dg.finding("init_mismatch")
    _check_finding(f)
    # normal(std=1) vs Glorot 2/(32+32): a factor 32 (layer 1: 2/(20+32) -> 26).
    assert 20 < f.evidence["variance_ratio"] < 45
    assert f.prescription == {"init": "glorot_uniform"}
    m = dg.finding("mean_shift")
    _check_finding(m)
    assert m.prescription["activation"] == "tanh"


def test_sigmoid_saturation_on_large_inputs():
    dg = doctor(dict(sizes=[20, 32, 32, 32, 4], activation="sigmoid", init="normal"),
                (10 * X, Y), lr=0.05)
    f = dg.finding("saturation")
    _check_finding(f)
    assert 1 in f.layers and f.evidence["metric"] > 0.8


def test_deep_relu_with_glorot_init_vanishes_and_he_is_prescribed():
    dg = doctor(dict(sizes=[20] + [32] * 30 + [4], activation="relu", init="glorot_uniform"),
                (X, Y), lr=0.01, steps=100)
    f = dg.finding("vanishing_gradients")
    _check_finding(f)
    assert f.evidence["metric"] > 1e3
    assert f.prescription == {"init": "he_normal"}


def test_divergence_gets_lr_prescription_verified():
    dg = doctor(dict(sizes=[20, 32, 32, 32, 4], activation="relu", init="he_normal"),
                (X, Y), lr=3.0, verify=True)
    f = dg.finding("divergence")
    assert f is not None and f.severity == "high"
    assert f.prescription == {"lr": pytest.approx(0.3)}
    assert dg.baseline["diverged"]
    v = next(v for v in dg.verifications if v.kind == "divergence")
    assert v.before["diverged"] and not v.after["diverged"]
    assert np.isfinite(v.after["train_loss"]) and v.helped and v.resolved
    d = json.loads(json.dumps(dg.to_dict()))  # NaN/inf become null
    assert d["baseline"]["train_loss"] is None


def test_verify_reports_before_after_and_helped_for_each_finding():
    dg = doctor(dict(sizes=[20, 32, 32, 32, 4], activation="sigmoid", init="normal"),
                (10 * X, Y), lr=0.05, verify=True)
    with_rx = [f for f in dg.findings if f.prescription]
    assert with_rx and len(dg.verifications) == len(with_rx)
    for v in dg.verifications:
        assert isinstance(v.helped, bool) and isinstance(v.resolved, bool)
        for side in (v.before, v.after):
            assert {"train_loss", "val_acc", "diverged"} <= set(side)
        assert np.isfinite(v.metric_before)
        assert v.before == dg.baseline
    text = str(dg)
    assert text.count("verified:") == len(dg.verifications)
    assert ("did NOT help" in text) == any(not v.helped for v in dg.verifications)


def test_network_input_is_not_modified_and_dataset_like_data_is_accepted():
    net = mlp([20, 16, 16, 4], activation="tanh", init="glorot_uniform", seed=0)
    before = [p.value.copy() for p in net.parameters()]
    data = SimpleNamespace(x_train=X[:600], y_train=Y[:600], x_val=X[600:], y_val=Y[600:],
                           n_classes=4)
    dg = doctor(net, data, lr=0.05, steps=50)
    for p, v in zip(net.parameters(), before):
        np.testing.assert_array_equal(p.value, v)
    assert dg.config["sizes"] == [20, 16, 16, 4]
    assert dg.baseline["steps"] == 50


def test_bad_input():
    with pytest.raises(TypeError, match="data must be"):
        doctor(dict(sizes=[20, 8, 4]), X)
    with pytest.raises(ValueError, match="expects"):
        doctor(dict(sizes=[5, 8, 4]), (X, Y))
    with pytest.raises(TypeError, match="net_or_config"):
        doctor("mlp", (X, Y))
    with pytest.raises(ValueError, match="steps"):
        doctor(dict(sizes=[20, 8, 4]), (X, Y), steps=0)


def test_optimizer_kwargs_are_used_and_reported():
    cfg = dict(sizes=[20, 16, 16, 4], activation="tanh", init="glorot_uniform", seed=0)
    plain = doctor(cfg, (X, Y), steps=40, lr=0.01)
    heavy = doctor(cfg, (X, Y), steps=40, lr=0.01, optimizer_kwargs={"momentum": 0.9})
    assert heavy.settings["optimizer_kwargs"] == {"momentum": 0.9}
    assert heavy.baseline["train_loss"] != plain.baseline["train_loss"]
    assert "momentum 0.9" in str(heavy)
