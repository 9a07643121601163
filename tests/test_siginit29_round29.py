"""Round 29 (siginit29): the doctor's init advice for sigmoid units, by its own mean field.

At Glorot's variance (sigma_w^2 = 1 on a square layer) a sigmoid layer's mean-field slope is
chi1 = sigma_w^2 E[sigmoid'(sqrt(q*) z)^2] = 0.056: each layer passes back 0.24x of the gradient's
std (the ordered phase), and the critical variance (chi1 = 1) is 103x Glorot's. The doctor
called N(0, 1) sigmoid weights at width 64 (64x Glorot's, chi1 0.80) an init_mismatch and
prescribed Glorot: 20 sigmoid layers, val acc 0.178 -> 0.061, 'did not help'.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import depthlab as dl
from depthlab.diagnosis import prescriptions as rx
from depthlab.initializers import Normal


def _chi1_by_hermite(f_prime, sigma_w2: float, f=None) -> float:
    """chi1 = sigma_w^2 E[f'(sqrt(q*) z)^2], q* the length map's fixed point (zero biases),
    on a uniform grid of 8001 points over [-10, 10] (independent of depthlab's theory module;
    at large q* sigmoid'(sqrt(q*) z) is a narrow bump that Gauss-Hermite nodes straddle)."""
    x = np.linspace(-10.0, 10.0, 8001)
    w = np.exp(-x * x / 2)
    w = w / w.sum()
    q = 1.0
    for _ in range(1000):
        q, q0 = sigma_w2 * float(w @ f(math.sqrt(q) * x) ** 2), q
        if abs(q - q0) <= 1e-13 * q:
            break
    return sigma_w2 * float(w @ f_prime(math.sqrt(q) * x) ** 2)


def _sigmoid(s):
    return 1.0 / (1.0 + np.exp(-s))


def _data(n: int = 96, d: int = 12, seed: int = 0):
    g = np.random.default_rng(seed)
    x = g.standard_normal((n, d))
    y = (x[:, 0] + x[:, 1] > 0).astype(int)
    return x[:64], y[:64], x[64:], y[64:]


def test_only_the_sigmoid_has_its_recommended_variance_deep_in_the_ordered_phase():
    chi1, critical = rx.ordered_init("sigmoid")
    sig_prime = lambda s: _sigmoid(s) * (1.0 - _sigmoid(s))  # noqa: E731
    assert chi1 == pytest.approx(_chi1_by_hermite(sig_prime, 1.0, _sigmoid), rel=1e-6)
    assert chi1 == pytest.approx(0.0557, abs=1e-3)
    # at the critical multiple of Glorot's variance chi1 is 1 (by the same quadrature)
    assert _chi1_by_hermite(sig_prime, critical, _sigmoid) == pytest.approx(1.0, abs=1e-4)
    assert rx.init_upper_ratio("sigmoid") == pytest.approx(103.0, abs=0.1)
    # hardsigmoid (slope 1/6 <= 1/4) too: chi1 = 0.028 at Glorot's, critical 107x (listacts42)
    assert [a for a in rx.RECOMMENDED_INIT if rx.ordered_init(a)] == ["sigmoid", "hardsigmoid"]
    for act in ("tanh", "softsign", "relu", "selu", "gelu", "penalized_tanh", "identity"):
        assert rx.init_upper_ratio(act) == 1.0 and rx.mean_field_note(act) == ""


def test_sigmoid_weights_between_glorot_and_the_critical_variance_are_no_init_mismatch():
    # N(0, 1) at width 32: 32x Glorot's variance, chi1 = 0.72 (Glorot's: 0.056)
    x, y, xv, yv = _data()
    dg = dl.doctor(dict(sizes=[12] + [32] * 4 + [2], activation="sigmoid", init="normal"),
                   (x, y, xv, yv), steps=10, lr=0.05, verify=False)
    assert "init_mismatch" not in dg.kinds
    # a tanh net at 32x Glorot's is still one (its recommended variance is critical)
    dt = dl.doctor(dict(sizes=[12] + [32] * 4 + [2], activation="tanh", init="normal"),
                   (x, y, xv, yv), steps=10, lr=0.05, verify=False)
    assert "init_mismatch" in dt.kinds


def test_sigmoid_weights_far_beyond_the_critical_variance_are_still_a_mismatch():
    # N(0, 25) at width 32: 800x Glorot's, 7.8x the critical variance (chaotic)
    x, y, xv, yv = _data()
    dg = dl.doctor(dict(sizes=[12] + [32] * 4 + [2], activation="sigmoid", init=Normal(5.0)),
                   (x, y, xv, yv), steps=10, lr=0.05, verify=False)
    f = dg.finding("init_mismatch")
    assert f is not None and f.prescription == {"init": "glorot_uniform"}
    assert f.evidence["critical_ratio"] == pytest.approx(103.0, abs=0.1)
    assert f.evidence["metric"] == pytest.approx(f.evidence["variance_ratio"] / 103.0, rel=1e-3)
    assert "critical variance" in f.message and "chaotic" in f.message
    assert "0.24x of the gradient's std" in f.prescription_text
    assert "chi1 = 0.056" in f.prescription_text
    # far below Glorot's is still flagged as before
    dl_ = dl.doctor(dict(sizes=[12] + [32] * 4 + [2], activation="sigmoid",
                         init=Normal(0.01)), (x, y, xv, yv), steps=10, verify=False)
    assert "init_mismatch" in dl_.kinds


def test_the_glorot_cures_for_sigmoid_units_say_what_the_mean_field_predicts():
    for changes, text in (rx.for_init_mismatch("sigmoid"), rx.for_vanishing("sigmoid", 0.1, {}),
                          rx.for_divergence_at_init("sigmoid", {}, None)):
        assert changes == {"init": "glorot_uniform"}
        assert "0.24x of the gradient's std (chi1 = 0.056, the ordered phase)" in text
        assert "103x" in text
    assert "ordered phase" in rx.init_caveat("sigmoid")
    for act in ("tanh", "relu", "selu", "softsign"):
        assert "ordered phase" not in rx.for_init_mismatch(act)[1]


def test_saturated_sigmoid_weights_below_the_critical_variance_are_not_cured_with_glorot():
    # 64x Glorot's (N(0, 1) at width 64): Glorot's variance is deeper in the ordered phase;
    # batch normalization is the cure; beyond the critical variance Glorot's still is
    assert rx.for_saturation("sigmoid", 64.0, {})[0] == {"batchnorm": True}
    assert rx.for_exploding("sigmoid", 64.0, {})[0] == {"batchnorm": True}
    assert rx.for_saturation("sigmoid", 500.0, {})[0] == {"init": "glorot_uniform"}
    assert rx.for_saturation("tanh", 2.0, {})[0] == {"init": "glorot_uniform"}
    assert rx.for_exploding("tanh", 2.0, {})[0] == {"init": "glorot_uniform"}


def test_the_torch_doctor_judges_sigmoid_init_by_the_mean_field_too():
    torch = pytest.importorskip("torch")
    from torch import nn

    import depthlab.torch as dlt

    def make(std: float):
        def build() -> nn.Module:
            model = nn.Sequential(nn.Linear(6, 32), nn.Sigmoid(), nn.Linear(32, 32),
                                  nn.Sigmoid(), nn.Linear(32, 32), nn.Sigmoid(),
                                  nn.Linear(32, 2))
            for m in model.modules():
                if isinstance(m, nn.Linear):
                    nn.init.normal_(m.weight, 0.0, std)
            return model
        return build

    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 6, generator=g)
    y = (x[:, 0] > 0).long()
    kw = dict(loss_fn=nn.CrossEntropyLoss(), optimizer=("sgd", {"lr": 0.1}), steps=10,
              batch_size=16, seed=0, verify=False)
    assert dlt.doctor(make(1.0), (x, y), **kw).finding("init_mismatch") is None
    f = dlt.doctor(make(5.0), (x, y), **kw).finding("init_mismatch")
    assert f is not None and f.prescription == {"init": "matched"}
    assert "chi1 = 0.056" in f.prescription_text
