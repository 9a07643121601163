"""Round 28 (npdoctor28): the NumPy doctor's dead_relu cure on deep He-initialized ReLU nets.

A He-initialized zero-bias ReLU net starts with many units off for every example of a batch in
its deep layers (the examples' representations grow correlated with depth; digits, width 64:
~24% of the most-dead layer at depth 8, ~36% at depth 16, 20 seeds). Such a layer, 25% dead at
initialization and 31% at the end, got "Units died during training: large updates pushed their
pre-activations negative; use a 10x smaller learning rate": false (a 6-point change)."""

from __future__ import annotations

import depthlab as dl
from depthlab.data import load_dataset
from depthlab.diagnosis.prescriptions import for_dead_relu


def test_units_off_from_initialization_are_not_said_to_have_died_in_training():
    changes, text = for_dead_relu(1.0, 0.28, 0.3, 1e-3, {}, worst_layer=(0.28, 0.31))
    assert changes == {"activation": "leaky_relu", "activation_kwargs": {}}, changes
    assert "died during training" not in text and "28% of the layer" in text, text
    # units that did die in training still get the smaller learning rate
    changes, text = for_dead_relu(1.0, 0.08, 0.3, 0.05, {}, worst_layer=(0.08, 0.70))
    assert changes == {"lr": 0.005} and "died during training" in text
    # and without the layer's fractions, as before
    assert for_dead_relu(1.0, 0.2, 0.3, 0.01, {})[0] == {"lr": 0.001}


def test_the_doctor_reads_the_worst_layer_at_initialization():
    # 8 He ReLU layers of 32 on digits, adam 1e-3, seed 1: layer 6 25% dead at step 0 and 31%
    # after 200 steps (loss 0.21, val acc 0.85: a healthy run); the cure was lr 1e-4.
    # (dochealth30: 31% of 32 zero-bias units is within chance, below 1/2, and 2 units more
    # than at step 0 is no die-off: no finding at all, so no false cure)
    data = load_dataset("digits")
    dg = dl.doctor(dict(sizes=[64] + [32] * 8 + [10], activation="relu", init="he_normal"),
                   data, steps=200, optimizer="adam", lr=1e-3, seed=1)
    assert dg.finding("dead_relu") is None, str(dg)
    # units a too-large learning rate kills (8% dead at init, 70% after 100 steps of sgd 1)
    dg = dl.doctor(dict(sizes=[64, 64, 64, 64, 10], activation="relu", init="he_normal"),
                   data, steps=100, optimizer="sgd", lr=1.0, seed=0)
    assert dg.finding("dead_relu").prescription == {"lr": 0.1}
