"""Round 30 (dochealth30b): the NumPy doctor's saturation finding claims harm, so it needs it.

More than half of a bounded activation's entries in the flat tails is a state: residual tanh
nets on digits end 50-55% saturated at val acc 0.95-0.97 (batch norm, the cure offered, did not
help), and a tanh net on inputs x10 fits exactly as well as on the unscaled ones. The finding
now also needs the probe batch's loss to end above ``SATURATION_FIT`` (0.2) x a constant
prediction's: healthy saturated nets 0.010-0.17 of it, sick ones (N(0, 1) sigmoid / tanh, tanh
at lr 2, a deep tanh net on inputs x100) 0.21-8."""

from __future__ import annotations

import math

import numpy as np

import depthlab as dl
from depthlab.data import load_dataset
from depthlab.diagnosis import rules


def _probe_loss(dg, step):
    p = dg.probes
    return float(p[(p.quantity == "loss") & (p.layer == 0) & (p.step == step)]["value"].iloc[0])


def _constant_loss(y, classes):
    m = np.bincount(np.asarray(y, dtype=np.intp), minlength=classes) / len(y)
    m = m[m > 0]
    return float(-np.sum(m * np.log(m)))


def test_a_saturated_residual_tanh_net_that_fits_gets_no_saturation_finding():
    # 12 pre-activation residual tanh blocks of 32, Glorot, adam 1e-3, digits: 51.5% of a
    # layer's entries flat at the end, probe loss 0.32 against a constant's 2.29, val acc 0.91;
    # was "saturated" with a batch-norm cure (12 blocks of 64: 6 of 6 runs, val acc 0.95-0.97)
    data = load_dataset("digits", seed=0, standardize=True)
    dg = dl.doctor(dict(sizes=[64] + [32] * 12 + [10], activation="tanh",
                        init="glorot_uniform", residual=True),
                   data, steps=200, optimizer="adam", lr=1e-3, seed=2)
    p = dg.probes
    sat = p[(p.quantity == "saturated_frac") & (p.step == 200)]["value"]
    assert sat.max() > rules.SATURATION_FRAC  # the state the old rule reported
    chance = _constant_loss(data.y_val[:300], 10)
    assert _probe_loss(dg, 200) < 0.15 * chance  # it fitted: 0.32 against 2.29
    assert dg.baseline["val_acc"] > 0.85
    assert "saturation" not in dg.kinds, str(dg)
    assert dg.healthy, str(dg)


def test_a_saturated_net_that_does_not_fit_is_still_found_with_its_loss():
    # sigmoid, N(0, 1) weights, 20 layers of 32: 53% of layer 1 flat, loss at a constant's
    data = load_dataset("digits", seed=0, standardize=True)
    dg = dl.doctor(dict(sizes=[64] + [32] * 20 + [10], activation="sigmoid", init="normal"),
                   data, steps=200, optimizer="sgd", lr=0.1, seed=0)
    f = dg.finding("saturation")
    assert f is not None and dg.kinds[0] == "saturation", str(dg)
    assert f.prescription == {"batchnorm": True}
    chance = _constant_loss(data.y_val[:300], 10)
    end = _probe_loss(dg, 200)
    assert math.isclose(f.evidence["chance_loss"], chance, rel_tol=1e-9)
    assert f.evidence["loss_end"] == end and end > 0.2 * chance
    assert (f"The probe batch's loss ended at {end:.4g}, {end / chance:.3g}x a constant "
            f"prediction's {chance:.4g} (a net that fits ends below 0.2x)") in f.message
