"""Round 41 (sciencehunt41): theory and doctor checked against measurement."""

from __future__ import annotations

import math
import warnings

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
