"""Round 33 (tdochunt33): the torch doctor's stored diagnoses and verdicts."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import depthlab.torch as dlt  # noqa: E402
from depthlab.data import load_dataset  # noqa: E402
from depthlab.experiments.store import Store  # noqa: E402


def _digits() -> tuple[np.ndarray, ...]:
    ds = load_dataset("digits", seed=0)
    return tuple(np.asarray(a) for a in (ds.x_train, ds.y_train, ds.x_val, ds.y_val))


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))


def test_diagnoses_of_one_model_on_two_training_sets_are_both_stored(tmp_path):
    """Regression: the stored id hashed the model's layout, the settings and the step-0 probe
    table, which reads the first 300 validation rows only, so the diagnosis of the same model
    on another training set with the same validation set (200 rows vs all 1257 of digits:
    train loss 2.119 vs 2.168) took the first one's id and silently replaced it; so did a
    second verified call with another ``max_cures`` (one verified cure vs two). (The same call
    again still replaces its own: test_torch_round3.)"""
    x, y, xv, yv = _digits()
    kw = dict(steps=3, out=tmp_path)
    small = dlt.doctor(_mlp, (x[:200], y[:200], xv, yv), verify=False, **kw)
    full = dlt.doctor(_mlp, (x, y, xv, yv), verify=False, **kw)
    one = dlt.doctor(_mlp, (x, y, xv, yv), verify=True, max_cures=1, **kw)
    two = dlt.doctor(_mlp, (x, y, xv, yv), verify=True, max_cures=2, **kw)
    assert small.baseline["train_loss"] != full.baseline["train_loss"]
    assert len(one.verifications) == 1 and len(two.verifications) == 2
    assert len({d.settings["run_id"] for d in (small, full, one, two)}) == 4
    with Store(tmp_path) as store:
        runs = store.runs().set_index("id")
    assert len(runs) == 4
    for d in (small, full, one, two):
        assert runs.loc[d.settings["run_id"], "train_loss"] == pytest.approx(
            d.baseline["train_loss"], rel=1e-6)


def test_a_diverged_runs_lr_evidence_gives_the_loss_it_measured_at_step_0():
    """Regression: in a run that diverged, lr_too_high's evidence carried ``loss_step0`` and
    ``early_loss_mean`` as NaN (the report: 'loss_step0=not finite') although the probe batch's
    loss at step 0 was 29.9 (a tanh regression on digits' labels at sgd lr 0.1, NaN at step
    35); they are now the numbers measured (the rule still fires on the probed steps)."""
    x, y, xv, yv = _digits()
    y, yv = y.astype(np.float32)[:, None], yv.astype(np.float32)[:, None]

    def reg() -> nn.Module:
        return nn.Sequential(nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 1))

    d = dlt.doctor(reg, (x, y, xv, yv), loss_fn="mse", steps=50, verify=False)
    found = {f.kind: f for f in d.findings}
    assert "divergence" in found
    ev = found["lr_too_high"].evidence
    torch.manual_seed(0)
    with torch.no_grad():
        direct = float(nn.MSELoss()(reg()(torch.as_tensor(xv[:300])), torch.as_tensor(yv[:300])))
    assert ev["loss_step0"] == pytest.approx(direct, rel=1e-5)
    assert np.isfinite(ev["early_loss_mean"])  # its first 10 updates' losses were finite
