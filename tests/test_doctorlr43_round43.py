"""round43 doctorlr43: a far too high learning rate whose run stays finite (a bounded activation
saturates, so nothing overflows) is named with a cure scaled to the measured step size: lr/10
and the optimizer's usual rate did not help (sgd lr 1e6, tanh: 1e5 and 1e-3), the rate that
brings the first update's ratio to 0.1 or below (an adaptive optimizer's to 1) does."""

from __future__ import annotations

import math

import numpy as np
import pytest

import depthlab as dl
from depthlab.diagnosis.prescriptions import (
    ADAPTIVE_STEP_RATIO_LIMIT,
    STEP_RATIO_LIMIT,
    for_divergence,
    for_lr_too_high,
    lr_step_down,
)


def _blobs(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Four separable Gaussian blobs in 6 dimensions, standardized."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0.0, 2.0, size=(4, 6))
    y = rng.integers(0, 4, size=400)
    x = centers[y] + rng.normal(0.0, 1.0, size=(400, 6))
    x = (x - x.mean(0)) / x.std(0)
    return x, y


@pytest.mark.parametrize("activation, optimizer, lr", [
    ("tanh", "sgd", 1e6), ("sigmoid", "sgd", 1e4), ("tanh", "adam", 1e3)])
def test_a_finite_run_at_an_absurd_rate_is_cured_by_a_rate_that_trains(activation, optimizer,
                                                                       lr) -> None:
    x, y = _blobs()
    d = dl.doctor(dict(sizes=[6, 16, 16, 4], activation=activation, seed=0), (x, y),
                  steps=60, optimizer=optimizer, lr=lr, verify=True)
    assert d.baseline["diverged"] is False and math.isfinite(d.baseline["train_loss"]), d
    kinds = [f.kind for f in d.findings]
    assert "lr_too_high" in kinds and "divergence" in kinds, d
    for kind in ("lr_too_high", "divergence"):
        f = d.finding(kind)
        new_lr = f.prescription["lr"]
        # the cure brings the first update's ratio (it scales with the rate) to the limit
        limit = ADAPTIVE_STEP_RATIO_LIMIT if optimizer == "adam" else STEP_RATIO_LIMIT
        ratio = f.evidence["first_update_ratio"]
        assert ratio > 10.0 * limit, (kind, f.evidence)
        assert ratio * new_lr / lr <= limit, (kind, f.prescription, ratio)
        assert new_lr <= lr / 100.0, (kind, f.prescription)
        v = next(v for v in d.verifications if v.kind == kind)
        assert v.helped, (kind, v)


def test_the_step_down_factor() -> None:
    assert lr_step_down(None) == 10.0 and lr_step_down(math.nan) == 10.0
    # the known cases keep /10: tanh sgd lr 5 with momentum (first step 0.82), Adam lr 0.3
    # (first step 1.2 against the adaptive limit 1)
    assert lr_step_down(0.82) == 10.0 and lr_step_down(1.0) == 10.0
    assert lr_step_down(1.2, ADAPTIVE_STEP_RATIO_LIMIT) == 10.0
    assert lr_step_down(1.5) == 100.0 and lr_step_down(15.0, ADAPTIVE_STEP_RATIO_LIMIT) == 100.0
    assert lr_step_down(1.6e5) == 1e7
    assert for_lr_too_high(1e6, 1.6e5, 1.6e5)[0] == {"lr": pytest.approx(0.1)}
    assert for_lr_too_high(1e6, 1.6e5)[0] == {"lr": pytest.approx(1e5)}  # first step unknown
    changes, text = for_divergence(1e6, 1e-3, update_ratio=1.6e5)
    assert changes == {"lr": pytest.approx(0.1)} and "1e7x smaller" in text
    # without a measured first step (a non-finite run), the lead's rules stand
    assert for_divergence(1e6, 1e-3)[0] == {"lr": 1e-3}
    assert for_divergence(3.0, 1e-3, update_ratio=0.5)[0] == {"lr": 0.3}
