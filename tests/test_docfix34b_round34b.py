"""Round 34b (docfix34b): lr_too_low is not read from a loss far above a constant prediction's."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
dlt = pytest.importorskip("depthlab.torch")


def _digits() -> tuple[np.ndarray, ...]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    return x[:600], y[:600], x[1200:1500], y[1200:1500]


def _maker(std: float, depth: int):
    def make() -> nn.Module:
        layers: list[nn.Module] = []
        d = 64
        for _ in range(depth):
            lin = nn.Linear(d, 32)
            nn.init.normal_(lin.weight, 0.0, std)
            nn.init.zeros_(lin.bias)
            layers += [lin, nn.ReLU()]
            d = 32
        layers.append(nn.Linear(32, 10))
        return nn.Sequential(*layers)
    return make


def _entropy(y: np.ndarray) -> float:
    m = np.bincount(y, minlength=10) / y.size
    m = m[m > 0]
    return float(-(m * np.log(m)).sum())


def test_exploded_init_far_above_chance_is_not_a_too_low_learning_rate() -> None:
    # N(0, 4) weights (68x He's): the logits are huge, the loss hundreds of times a constant
    # prediction's; with lr 1e-8 the updates are tiny, but the prediction is not near-constant:
    # the init is the problem (init_mismatch / exploding_gradients), not the learning rate
    x, y, xv, yv = _digits()
    make = _maker(2.0, 4)
    torch.manual_seed(0)
    model = make()
    with torch.no_grad():
        init_loss = float(nn.functional.cross_entropy(model(torch.from_numpy(xv)),
                                                       torch.from_numpy(yv)))
    chance = _entropy(y)
    assert init_loss > 100 * chance  # the premise: a loss far above a constant prediction's
    d = dlt.doctor(make, (x, y, xv, yv), steps=40, verify=False,
                   optimizer=("sgd", {"lr": 1e-8}))
    kinds = [f.kind for f in d.findings]
    assert "init_mismatch" in kinds
    assert "lr_too_low" not in kinds


def test_too_low_learning_rate_near_chance_is_still_named() -> None:
    # a moderate init (4x He) at lr 1e-5: loss within a few times ln 10, updates ~1e-4
    x, y, xv, yv = _digits()
    d = dlt.doctor(_maker(0.5, 3), (x, y, xv, yv), steps=40, verify=False,
                   optimizer=("sgd", {"lr": 1e-5}))
    f = next(f for f in d.findings if f.kind == "lr_too_low")
    chance = _entropy(y)
    assert math.isclose(f.evidence["chance_loss"], chance, rel_tol=1e-6)
    assert f.evidence["loss_end"] < 10 * chance
    assert "1e-05 is too low" in f.message
