"""Round 44, the lead's own fixes."""

from __future__ import annotations

import depthlab as dl
from depthlab.data import load_dataset


def test_a_relu_net_whose_loss_overflowed_is_cured_by_a_rate_scaled_to_its_first_update():
    """A relu net at sgd lr 100 went NaN at step 5 and was prescribed lr/10 (10), which went
    NaN at step 7 ('did not help'); the first update, measured before the overflow, rewrote
    the weights 13x their norm, so the cure is 1e3x smaller (0.1: val acc 0.96)."""
    data = load_dataset("digits", seed=0, standardize=True)
    net = dl.mlp([64, 64, 64, 10], activation="relu", seed=0)
    d = dl.doctor(net, data, steps=200, lr=100.0, verify=True)
    f = d.finding("divergence")
    assert "non-finite" in f.message
    assert f.evidence["first_update_ratio"] > 1.0
    assert f.prescription["lr"] <= 1.0, f.prescription
    v = next(v for v in d.verifications if v.kind == "divergence")
    assert v.prescription == f.prescription and v.helped and v.resolved, d
