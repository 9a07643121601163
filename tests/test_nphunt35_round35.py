"""Round 35 (nphunt35): the NumPy doctor on nets nobody tried yet."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import depthlab as dl
from depthlab.data import load_dataset
from depthlab.diagnosis.doctor import PROBE_EXAMPLES


def _entropy(y: np.ndarray) -> float:
    q = np.bincount(y) / len(y)
    q = q[q > 0]
    return float(-(q * np.log(q)).sum())


def _probe_losses(d) -> np.ndarray:
    p = d.probes
    return p[(p.layer == 0) & (p.quantity == "loss")].sort_values("step").value.to_numpy()


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=0, standardize=True)


def test_too_low_a_learning_rate_is_named_below_chance_too(digits):
    # 64-32-32-10 tanh, adam 3e-5, 100 steps: updates of at most 1.2e-4 of the weights' norm,
    # probe loss 2.31 -> 2.22 = 0.97x a constant prediction's (val acc 0.16) was a clean
    # bill of health ("not below 0.99x" was the gate); 10x the lr: val acc 0.61
    warnings.simplefilter("ignore")
    net = dl.mlp([64, 32, 32, 10], activation="tanh", init="glorot_uniform", seed=0)
    d = dl.doctor(net, digits, optimizer="adam", lr=3e-5, steps=100, verify=True)
    assert d.kinds == ["lr_too_low"]
    f = d.findings[0]
    losses = _probe_losses(d)
    chance = _entropy(digits.y_val[:PROBE_EXAMPLES])
    p = d.probes
    largest = p[(p.layer >= 1) & (p.quantity == "update_ratio")].value.max()
    assert f.evidence["loss_end"] == pytest.approx(losses[-1])
    assert f.evidence["chance_loss"] == pytest.approx(chance)
    assert f.evidence["largest_update_ratio"] == pytest.approx(largest)
    assert 0.5 < losses[-1] / chance < 0.99 and largest < 1e-3 / 3
    assert f"{losses[-1] / chance:.3g}x a constant prediction's {chance:.4g}" in f.message
    assert f.prescription == {"lr": 3e-4}
    v = d.verifications[0]
    assert v.helped and v.after["val_acc"] > v.before["val_acc"] + 0.3


def test_a_slow_wide_net_that_fits_is_no_learning_rate_finding():
    # one ReLU layer of 1024 on clusters, sgd 0.01: updates of 1.7e-4 of the weights' norm (a
    # wide layer's outputs move sqrt(width) times its weights' relative change) while the
    # probe loss falls to 0.27x a constant prediction's, val acc 0.75
    warnings.simplefilter("ignore")
    data = load_dataset("clusters", seed=0, standardize=True, d=16, n=600)
    net = dl.mlp([16, 1024, 10], activation="relu", init="he_normal", seed=0)
    d = dl.doctor(net, data, steps=100)
    assert _probe_losses(d)[-1] < 0.5 * _entropy(data.y_val[:PROBE_EXAMPLES])
    assert "lr_too_low" not in d.kinds and d.baseline["val_acc"] > 0.6


def test_a_default_torch_style_init_on_a_net_that_fits_is_no_init_mismatch(digits):
    # U(+-1/sqrt(fan_in)) (PyTorch's nn.Linear default, "fan_in_uniform"), Var 1/(3 fan_in) =
    # 1/6 He's, in a 64-64-64-10 relu net at adam 3e-3: the probe loss ends at 0.07x a
    # constant prediction's, val acc 0.96, and was "[low] init_mismatch ... 0.16x the
    # he_normal variance"; He's init does no better on such a net (adam 1e-3, 200 steps:
    # 0.939 -> 0.928)
    warnings.simplefilter("ignore")
    net = dl.mlp([64, 64, 64, 10], activation="relu", init="fan_in_uniform", seed=0)
    w = np.asarray(net.layers[2].W.value, dtype=np.float64)
    d = dl.doctor(net, digits, optimizer="adam", lr=3e-3, steps=100)
    assert _probe_losses(d)[-1] < 0.2 * _entropy(digits.y_val[:PROBE_EXAMPLES])
    assert d.baseline["val_acc"] > 0.9
    assert "init_mismatch" not in d.kinds
    assert 0.1 < w.var() / (2 / 64) < 0.25  # the shortfall is there, and did no harm


def test_the_same_init_on_a_deep_net_at_chance_is_still_named_with_its_loss(digits):
    # 6 relu layers of 32 at sgd 0.05: the signal shrinks 6x in variance per layer and the
    # net stays at chance; the init is named first and its message quotes the probe loss
    warnings.simplefilter("ignore")
    net = dl.mlp([64] + [32] * 6 + [10], activation="relu", init="fan_in_uniform", seed=0)
    d = dl.doctor(net, digits, steps=60, lr=0.05)
    assert d.kinds[0] == "init_mismatch"
    f = d.findings[0]
    end, chance = _probe_losses(d)[-1], _entropy(digits.y_val[:PROBE_EXAMPLES])
    assert f.evidence["loss_end"] == pytest.approx(end)
    assert f.evidence["chance_loss"] == pytest.approx(chance)
    assert (f"The probe batch's loss ended at {end:.4g}, {end / chance:.3g}x a constant "
            f"prediction's {chance:.4g}") in f.message


def test_dropout_whose_compounded_noise_buries_the_signal_is_named_and_lowered(digits):
    # 6 relu layers of 32, dropout 0.5 after each, adam 1e-3: the probe loss ends at a constant
    # prediction's (val acc 0.09) and was a clean bill of health; each mask m / (1 - p) has
    # variance p / (1 - p) = 1 and six multiply to 2^6 - 1 = 63x the signal's variance
    warnings.simplefilter("ignore")
    net = dl.mlp([64] + [32] * 6 + [10], activation="relu", init="he_normal", seed=0,
                 dropout=0.5)
    d = dl.doctor(net, digits, optimizer="adam", lr=1e-3, steps=100, verify=True)
    assert d.kinds == ["dropout_too_strong"]
    f = d.findings[0]
    noise = (1 / (1 - 0.5)) ** 6 - 1
    end, chance = _probe_losses(d)[-1], _entropy(digits.y_val[:PROBE_EXAMPLES])
    assert f.evidence["metric"] == pytest.approx(noise)
    assert f.evidence["loss_end"] == pytest.approx(end) and end >= 0.99 * chance
    assert f"compounding to {noise:.3g}x the signal's variance" in f.message
    assert f"{end / chance:.3g}x a constant prediction's {chance:.4g}" in f.message
    # the cure: the rate whose 6 layers compound to at most 1x, 1 - 2^(-1/6) = 0.109 -> 0.1
    assert f.prescription == {"dropout": 0.1}
    assert (1 / 0.9) ** 6 - 1 < 1 < (1 / 0.89) ** 6 - 1
    v = d.verifications[0]
    assert v.helped and v.resolved and v.after["val_acc"] > v.before["val_acc"] + 0.3
    # three such layers (noise 7x) still learn (val acc 0.54 after 100 steps): no finding
    net3 = dl.mlp([64, 64, 64, 64, 10], activation="relu", init="he_normal", seed=0, dropout=0.5)
    assert dl.doctor(net3, digits, optimizer="adam", lr=1e-3, steps=100).healthy


def test_a_shallow_sigmoid_net_at_the_doctors_default_lr_is_too_slow(digits):
    # 64-32-32-10 sigmoid, Glorot, the doctor's default sgd 0.01: the hidden layers move at most
    # 6e-4 of their weights' norm per step (the sigmoid's slope is 1/4), the probe loss ends at
    # 1.0x a constant prediction's, val acc 0.19, and was a clean bill of health (the bar was a
    # third of 1e-3); lr 0.1 trains it to 0.59
    warnings.simplefilter("ignore")
    net = dl.mlp([64, 32, 32, 10], activation="sigmoid", init="glorot_uniform", seed=0)
    d = dl.doctor(net, digits, verify=True)
    assert d.kinds == ["lr_too_low"]
    f = d.findings[0]
    p = d.probes
    largest = p[(p.layer >= 1) & (p.quantity == "update_ratio")].value.max()
    assert 1e-3 / 3 < largest < 1e-3
    assert f"exceeded {largest:.2g} of its weights' norm in 200 steps" in f.message
    assert f.prescription == {"lr": 0.1}
    v = d.verifications[0]
    assert v.helped and v.after["val_acc"] > v.before["val_acc"] + 0.3
