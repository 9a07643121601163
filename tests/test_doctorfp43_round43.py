"""doctorfp43 (round 43): the NumPy doctor on networks that are learning; batch-norm
predictions with labels of (nearly) one class."""

from __future__ import annotations

import numpy as np
import pytest

import depthlab as dl
from depthlab.data import load_dataset
from depthlab.theory import predict_gradients

SPIRALS_NET = dict(sizes=[2, 64, 64, 64, 2], activation="relu", init="he_normal", seed=0)


@pytest.fixture(scope="module")
def spirals():
    return load_dataset("spirals", seed=0, standardize=True)


def test_units_that_died_in_a_net_that_learned_are_a_low_finding(spirals):
    # relu/He 3x64 on the 2-D spirals at Adam 1e-2 learns (val acc 0.885, loss 0.46x a constant
    # prediction's) while 60-77% of layer 2 dies: it was a [high] finding; leaky_relu (no dead
    # units) learns as well, so the dead units are not what holds it back
    d = dl.doctor(SPIRALS_NET, spirals, steps=600, optimizer="adam", lr=1e-2)
    f = d.finding("dead_relu")
    assert f is not None and f.evidence["reason"] == "died"
    assert f.severity == "low"
    from depthlab.diagnosis.rules import DEAD_LEARNED_FIT

    assert f.evidence["fit_threshold"] == DEAD_LEARNED_FIT
    assert f.evidence["loss_end"] <= DEAD_LEARNED_FIT * f.evidence["chance_loss"]
    assert "learned regardless" in f.message
    assert f.prescription == {"lr": 1e-3}  # the cure is unchanged (verification judges it)


def test_units_that_died_in_a_net_still_far_from_fitted_stay_high(spirals):
    # the same net after 200 steps (loss 0.81x a constant prediction's): not learned yet
    d = dl.doctor(SPIRALS_NET, spirals, steps=200, optimizer="adam", lr=1e-2)
    f = d.finding("dead_relu")
    assert f is not None and f.severity == "high"
    assert "fit_threshold" not in f.evidence and "learned regardless" not in f.message


def _first_layer_ratio(spec: dict, y_of, seeds=(0, 1, 2), rows=400) -> float:
    pred = predict_gradients(spec)
    ratios = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((rows, spec["sizes"][0]))
        net = dl.mlp(**spec, seed=seed, dtype="float64")
        df = dl.probe(net, x, y_of(rng, rows), loss="cross_entropy")
        g = df[(df.quantity == "grad_pre_std") & (df.layer >= 1)].sort_values("layer")
        g = g["value"].to_numpy()
        ratios.append(g[0] / g[-1] / pred.relative_std[0])
    return float(np.median(ratios))


RES_BN = dict(sizes=[64] + [128] * 11 + [10], activation="relu", init="he_normal",
              residual=True, batchnorm=True)


def test_a_batch_norm_prediction_notes_labels_of_one_class():
    x = np.random.default_rng(0).standard_normal((400, 64))
    one = predict_gradients(RES_BN, x=x, y=np.zeros(400, dtype=int))
    assert "all one class" in one.note and "batch mean" in one.note
    mixed = predict_gradients(RES_BN, x=x, y=np.arange(400) % 10)
    assert "one class" not in mixed.note
    # the numbers are the same: the labels only change the note
    np.testing.assert_array_equal(one.relative_std, mixed.relative_std)
    # nearly one class (85%), one-hot rows, and a plain batch-norm net
    y = np.where(np.arange(400) < 340, 0, 1 + np.arange(400) % 9)
    assert "85% one class" in predict_gradients(RES_BN, y=y).note
    assert "85% one class" in predict_gradients(RES_BN, y=np.eye(10)[y]).note
    bn = {**RES_BN, "residual": False}
    assert "one class" in predict_gradients(bn, y=np.zeros(50, dtype=int)).note
    # no batch norm: nothing removes the output gradient's batch mean
    plain = {**RES_BN, "residual": False, "batchnorm": False}
    assert "one class" not in predict_gradients(plain, y=np.zeros(50, dtype=int)).note


def test_the_one_class_note_matches_measurement():
    # residual relu + BN: random labels agree with the prediction, one class is below it
    mixed = _first_layer_ratio(RES_BN, lambda rng, n: rng.integers(0, 10, n))
    one = _first_layer_ratio(RES_BN, lambda rng, n: np.zeros(n, dtype=int))
    assert 0.85 < mixed < 1.2
    assert one < 0.7 and one < 0.75 * mixed


def test_labels_are_checked():
    x = np.zeros((5, 64))
    with pytest.raises(ValueError, match=r"one label per row of x \(5 rows\), got 4"):
        predict_gradients(RES_BN, x=x + 1, y=[0, 1, 2, 3])
    with pytest.raises(ValueError, match=r"y must hold finite numbers; y\[1, 0\] = nan"):
        predict_gradients(RES_BN, y=[[1.0, 0.0], [np.nan, 1.0]])
    with pytest.raises(TypeError, match="y must be an array of class labels"):
        predict_gradients(RES_BN, y="zeros")
    with pytest.raises(ValueError, match=r"y must have shape .* got shape \(0,\)"):
        predict_gradients(RES_BN, y=[])
    from depthlab.theory.labels import ONE_CLASS_SHARE, largest_class_share

    assert largest_class_share(["a", "b", "a", "a"]) == 0.75
    assert ONE_CLASS_SHARE == 0.8
