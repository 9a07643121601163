"""Round 41 (diaghunt41): a diagnosis with no findings whose run did not learn says so (it read
"clean bill of health" at a constant prediction's loss), and the shared dead-unit rule judges
units that died in training as "died" with non-zero biases too (every default torch model)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from depthlab.diagnosis.findings import Diagnosis


def _healthy(baseline: dict, chance: float = math.nan) -> Diagnosis:
    probes = pd.DataFrame({"step": [], "layer": [], "quantity": [], "value": []})
    return Diagnosis(findings=[], baseline=baseline, probes=probes,
                     config={"model": "GapCNN"},
                     settings={"steps": 60, "optimizer": "sgd", "lr": 0.01, "batch_size": 32,
                               "seed": 0}, chance_loss=chance)


def test_a_healthy_diagnosis_at_a_constant_predictions_loss_says_the_run_did_not_learn():
    """The GAP CNN of poolgrad40: train loss 2.275 against ln 10 = 2.303, no findings, read
    "clean bill of health"; now the text says the run did not learn, with both losses, and it
    stays healthy (no rule fired). Through the store (to_dict / JSON / from_dict) too."""
    chance = math.log(10.0)
    dg = _healthy({"train_loss": 2.275, "val_acc": 0.11}, chance)
    text = str(dg)
    assert dg.healthy
    assert "clean bill" not in text, text
    assert "did not learn" in text and "2.275" in text and "2.303" in text and "0.99x" in text
    back = Diagnosis.from_dict(json.loads(json.dumps(dg.to_dict())))
    assert back.healthy and str(back) == text


def test_a_healthy_diagnosis_that_learned_or_was_stored_before_keeps_its_clean_bill():
    """A loss well below the constant prediction's, or a stored diagnosis without the chance
    loss (written before it was kept), or an unknown (NaN) chance loss: a clean bill."""
    for loss, chance in ((0.4, math.log(10.0)), (2.3, math.nan), (math.nan, 2.3)):
        dg = _healthy({"train_loss": loss}, chance)
        assert "clean bill of health" in str(dg), (loss, chance)
        back = Diagnosis.from_dict(json.loads(json.dumps(dg.to_dict())))
        assert "clean bill of health" in str(back), (loss, chance)
    old = _healthy({"train_loss": 2.3}).to_dict()
    del old["chance_loss"]  # stored before the chance loss was kept: still loads
    back = Diagnosis.from_dict(old)
    assert math.isnan(back.chance_loss) and "clean bill of health" in str(back)


def test_the_numpy_doctor_keeps_the_constant_predictions_loss_with_its_baseline():
    from depthlab import doctor

    rng = np.random.default_rng(0)
    x = rng.standard_normal((128, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + 2 * (x[:, 1] > 0)
    dg = doctor(dict(sizes=[6, 16, 4], activation="tanh", init="glorot_uniform"), (x, y),
                steps=5, lr=0.05, verify=False)
    counts = np.bincount(y, minlength=4) / len(y)
    # the class frequencies' entropy (of the training rows the doctor keeps: within 2%)
    want = -float(np.sum(counts * np.log(counts)))
    assert dg.chance_loss == pytest.approx(want, rel=0.02)
    back = Diagnosis.from_dict(json.loads(json.dumps(dg.to_dict())))
    assert back.chance_loss == dg.chance_loss


def _digits(n: int = 600) -> tuple:
    import torch

    from depthlab.data.digits import load

    raw = load()
    x = raw.x[:n].reshape(n, -1) * raw.scale
    return torch.tensor(x, dtype=torch.float32), torch.tensor(raw.y[:n]).long()


def test_units_killed_by_large_updates_with_default_torch_biases_are_judged_died():
    """A default-init (non-zero biases) 64-64-10 ReLU MLP at SGD lr 3: its layers 8% dead at
    step 0 end 100% dead. The shared rule judged every layer "biases" (non-zero biases), so its
    own "died in training" cure, the 10x smaller learning rate, never fired for torch (He's
    init was prescribed, and did not help). Now the rule says "died"/"all" and prescribes
    lr 0.3 itself (verify=False: no torch-side reordering of the cures)."""
    torch = pytest.importorskip("torch")
    import depthlab.torch as dlt

    x, y = _digits()

    def make() -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Linear(x.shape[1], 64), torch.nn.ReLU(),
                                   torch.nn.Linear(64, 64), torch.nn.ReLU(),
                                   torch.nn.Linear(64, 10))

    dg = dlt.doctor(make, (x, y), optimizer=("sgd", {"lr": 3.0}), steps=60, batch_size=32,
                    seed=0, verify=False)
    dead = dg.finding("dead_relu")
    assert dead is not None, dg.kinds
    assert dead.evidence["reason"] in ("died", "all"), dead.evidence
    assert dead.prescription == {"lr": pytest.approx(0.3)}, dead.prescription
    assert "died during training" in dead.prescription_text
    assert dg.chance_loss == pytest.approx(math.log(10.0), rel=0.02)  # kept by torch's too


def test_numpy_units_killed_by_large_updates_with_non_zero_biases_get_the_smaller_rate():
    """NumPy's doctor alike: a 64-64-64-10 He ReLU MLP with fan_in_uniform biases at SGD lr 1,
    60 steps: layer 9% dead at step 0, 95% at the end. The zero-bias cure was prescribed and
    did not help (2.313 -> 2.319, dead 0.95 -> 0.91); lr 0.1 helps (-> 0.316, dead 0.13)."""
    from depthlab import doctor
    from depthlab.data.digits import load

    raw, n = load(), 600
    x = (raw.x[:n].reshape(n, -1) * raw.scale).astype(np.float32)
    dg = doctor(dict(sizes=[x.shape[1], 64, 64, 64, 10], activation="relu", init="he_normal",
                     bias_init="fan_in_uniform"), (x, raw.y[:n]), steps=60, lr=1.0,
                batch_size=32, verify=True)
    dead = dg.finding("dead_relu")
    assert dead is not None and dead.evidence["reason"] == "died", dg.kinds
    assert dead.prescription == {"lr": pytest.approx(0.1)}, dead.prescription
    cure = next(v for v in dg.verifications if v.kind == "dead_relu")
    assert cure.helped and cure.after["train_loss"] < 0.5 * cure.before["train_loss"]
