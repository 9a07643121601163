"""Round 34 (nphunt34): the NumPy doctor on a network that an over-strong weight penalty holds
at a constant prediction."""

from __future__ import annotations

import numpy as np
import pytest

import depthlab as dl


def _data(n: int = 120, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5))
    y = (x @ rng.normal(size=(5, 3))).argmax(axis=1)  # learnable labels
    return x, y


@pytest.mark.parametrize("penalty", [{"l2": 1.0}, {"l1": 1.0}])
def test_a_penalty_that_pins_the_weights_at_0_is_named_and_its_cure_lowers_it(penalty):
    # SGD lr 0.01 with l2 = 1 multiplies the weights by 1 - 2 lr l2 = 0.98 per step (0.018
    # after 200 steps); l1 = 1 pulls each weight 0.01 towards 0 per step: the network ends at
    # a constant prediction. Before: "clean bill of health" (l2) or lr_too_high + a batch-norm
    # cure for vanishing gradients (l1), neither of which helps.
    x, y = _data()
    net = dl.mlp([5, 16, 16, 3], activation="relu", init="he_normal", seed=0)
    d = dl.doctor(net, (x, y), **penalty)
    kinds = [f.kind for f in d.findings]
    assert "penalty_too_strong" in kinds, str(d)
    assert "lr_too_high" not in kinds, str(d)
    # nor units "killed by large updates, use a 10x smaller learning rate": the penalty's doing
    assert "dead_relu" not in kinds, str(d)
    f = d.findings[kinds.index("penalty_too_strong")]
    (key, value), = penalty.items()
    assert f.prescription == {key: value / 10}
    assert f"{key} = {value:g}" in f.message and "constant prediction" in f.message
    # the weights' shrinkage the message gives is the network's own: every hidden layer's
    # weight std at the end is below a quarter of its initial one
    assert f.evidence["weight_shrink"] >= 4.0
    # ... and the probe loss it names (the probe table's last) stayed at a constant
    # prediction's (3 classes: at most ln 3)
    t = d.probes
    losses = t[(t.quantity == "loss") & (t.layer == 0)].sort_values("step")["value"]
    assert f.evidence["loss_end"] == pytest.approx(losses.iloc[-1])
    assert 0.99 * f.evidence["chance_loss"] <= f.evidence["loss_end"]
    assert f.evidence["chance_loss"] <= np.log(3) + 1e-12


def test_a_moderate_penalty_on_a_network_that_learns_gives_no_penalty_finding():
    x, y = _data()
    net = dl.mlp([5, 16, 16, 3], activation="relu", init="he_normal", seed=0)
    d = dl.doctor(net, (x, y), l2=1e-3, optimizer="adam", lr=0.01)
    assert "penalty_too_strong" not in d.kinds, str(d)


@pytest.mark.parametrize("loss", ["mse", "huber"])
def test_class_labels_given_to_a_quadratic_loss_are_told_the_one_hot_rows_it_takes(loss):
    # a classifier trained with the quadratic cost (the seed's digits setup): labels of shape
    # (N,) for 3 output columns were only "pred shape (6, 3) and target shape (6,) differ"
    x, y = _data(6)
    with pytest.raises(ValueError) as e:
        dl.fit(dl.mlp([5, 4, 3], seed=0), x, y, loss=loss)
    assert "np.eye(3)[y]" in str(e.value) and "cross_entropy" in str(e.value)
    # the one-hot rows it names train
    assert dl.fit(dl.mlp([5, 4, 3], seed=0), x, np.eye(3)[y], loss=loss).step_loss
    # real-valued regression targets of the wrong shape get no label advice
    with pytest.raises(ValueError) as e:
        dl.fit(dl.mlp([5, 4, 3], seed=0), x, x[:, 0], loss=loss)
    assert "np.eye" not in str(e.value)


def test_the_optimizers_own_weight_decay_that_pins_the_weights_is_named_too():
    # sgd weight_decay = 2 at lr 0.01: the weights x0.98 per step, as l2 = 1 (torch's
    # weight_decay = wd is l2 = wd / 2); before: a clean bill of health at a constant prediction
    x, y = _data()
    net = dl.mlp([5, 16, 16, 3], activation="relu", init="he_normal", seed=0)
    d = dl.doctor(net, (x, y), optimizer_kwargs={"momentum": 0.5, "weight_decay": 2.0},
                  lr=0.005, verify=True)
    f = next((f for f in d.findings if f.kind == "penalty_too_strong"), None)
    assert f is not None, str(d)
    assert "weight_decay = 2 (the optimizer's)" in f.message
    # the cure keeps the optimizer's other settings and lowers only the decay
    assert f.prescription == {"optimizer_kwargs": {"momentum": 0.5, "weight_decay": 0.2}}
    v = next(v for v in d.verifications if v.kind == "penalty_too_strong")
    assert v.resolved, str(d)
