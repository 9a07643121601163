"""Round 35b (tdocfix35b): the torch doctor's lr_too_high for first updates that made the loss
worse for good, and its verification / divergence wording."""
from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import depthlab.torch as dlt  # noqa: E402
from depthlab.data import load_dataset  # noqa: E402


class _PostNormClassifier(nn.Module):
    """Rows of an 8x8 digit as 8 tokens, a post-norm transformer encoder, mean pooling."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(8, 32)
        layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.enc(self.inp(x.view(-1, 8, 8))).mean(1))


def test_a_transformer_whose_first_sgd_steps_raised_the_loss_for_good_is_told_lr_too_high():
    d = load_dataset("digits", seed=0)
    x, y = d.x_train.astype(np.float32), d.y_train
    diag = dlt.doctor(_PostNormClassifier, (x, y, d.x_val.astype(np.float32), d.y_val),
                      optimizer=("sgd", {"lr": 1.0}), steps=12, verify=False)
    # what the user saw: no finding but dead_relu's "initialize with he_normal" before, while
    # the loss rose 2.45 -> 3.68 over the first updates and the model ended at chance
    assert abs(diag.baseline["train_loss"] - math.log(10)) < 0.1
    assert diag.baseline["val_acc"] < 0.2
    kinds = [f.kind for f in diag.findings]
    assert kinds[0] == "lr_too_high", kinds  # the first advice the user reads
    f = diag.findings[0]
    assert f.prescription == {"lr": 0.1}
    ev = f.evidence
    assert ev["early_loss_mean"] > 1.1 * ev["loss_step0"]
    assert ev["early_loss_peak"] > 1.4 * ev["loss_step0"]
    assert 0.03 <= ev["metric"] < 0.1  # below UPDATE_RATIO_HIGH: the case the rule missed
    for key in ("loss_step0", "early_loss_peak", "early_loss_mean", "loss_end"):
        assert f"{ev[key]:.4g}" in f.message
    assert "made the training loss worse" in f.message


def test_a_divergence_message_says_the_loss_fell_before_it_rose():
    """'Training loss rose to 1.067 (mean of the last 10 steps) from 1.157 at step 0 and a best
    moving average of 0.5969' read as a fall from 1.157 to 1.067: the loss fell to 0.60
    first, then rose 1.79x."""
    # (round 44: the rule on a recorded loss curve of that shape; the relu net at lr 3 whose
    # training drew it lost its units instead on another CPU's BLAS, a chaotic run)
    from types import SimpleNamespace

    import numpy as np
    import pandas as pd

    from depthlab.diagnosis.rules import rule_divergence

    steps = np.arange(100)
    losses = np.where(steps < 40, 1.157 - (1.157 - 0.6) * steps / 40,
                      0.6 + 0.47 * (steps - 40) / 59)
    ctx = SimpleNamespace(settings={"lr": 3.0, "optimizer": "sgd"}, table=pd.DataFrame(),
                          early_update_ratios=None,
                          history=SimpleNamespace(step_loss=list(losses), diverged=False,
                                                  divergence=None))
    _, f = rule_divergence(ctx)
    ev = f.evidence
    start, best, end = ev["loss_step0"], ev["loss_best"], ev["loss_end"]
    assert best < end < start  # fell, then rose again (not above its start)
    m = f.message
    assert m.startswith(f"Training loss rose to {end:.4g} (mean of the last {ev['window']} "
                        f"steps) after falling from {start:.4g} at step 0 to a best moving "
                        f"average of {best:.4g}: {ev['rise']:.3g}x"), m
    assert abs(ev["rise"] - end / best) < 1e-9


def test_a_verified_cure_that_removed_what_its_metric_measures_says_so_not_nan():
    """A relu swap of a saturated tanh net trained (4.08 -> 0.58) and has no saturating layer
    left: its line read 'max saturated fraction 0.8438 -> nan: helped', as if broken."""
    from depthlab.diagnosis.findings import Verification

    kw = dict(kind="saturation", prescription={"activation": "relu", "init": "matched"},
              before={"train_loss": 4.081, "val_acc": 0.25}, metric="max saturated fraction",
              metric_before=0.8438, metric_after=math.nan, resolved=True, helped=True)
    trained = Verification(after={"train_loss": 0.5765, "val_acc": 0.65}, **kw).summary()
    assert "max saturated fraction 0.8438 -> none (the cure left nothing this metric " \
           "measures): helped" in trained, trained
    assert "nan" not in trained
    # a re-run that diverged has no metric because it has no numbers at all: still nan
    diverged = Verification(after={"train_loss": math.nan, "val_acc": math.nan,
                                   "diverged": True, "diverged_step": 7},
                            **{**kw, "resolved": False, "helped": False}).summary()
    assert "max saturated fraction 0.8438 -> nan" in diverged, diverged
