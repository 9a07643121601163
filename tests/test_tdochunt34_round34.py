"""Round 34 (tdochunt34): the torch doctor's lr_too_high message names the largest update."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import depthlab.torch as dlt  # noqa: E402
from depthlab.data import load_dataset  # noqa: E402


def _mlp() -> nn.Module:
    m = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
                      nn.Linear(32, 1))
    for layer in m:
        if isinstance(layer, nn.Linear):
            nn.init.kaiming_normal_(layer.weight)
            nn.init.zeros_(layer.bias)
    return m


def test_lr_too_high_message_quotes_the_largest_update_it_measured():
    """Regression: with Adam at lr 1 on an MSE regression the first (unprobed) updates
    rewrote the weights 3.61x their norm while the training loss rose to 9.1e5 (from 1.12),
    and the probed steps 4 and 8 changed them by 0.30 and less; both made the rule fire, and
    the message quoted the probed step ('at step 4 an update changed the weights by 0.301 of
    their norm'), not the 3.61 that is the finding's metric (its severity). The message now
    describes the larger of the two (and still counts the probed steps)."""
    ds = load_dataset("digits", seed=0)
    x = np.asarray(ds.x_train)[:256]
    y = (x[:, :32].mean(1, keepdims=True) * 2).astype(np.float32)
    d = dlt.doctor(_mlp, (x, y), loss_fn="mse", optimizer=("adam", {"lr": 1.0}), steps=12,
                   batch_size=32, probe_every=4, verify=False)
    f = next(f for f in d.findings if f.kind == "lr_too_high")
    metric = f.evidence["metric"]
    assert metric > 1.0
    assert f"{metric:.3g}" in f.message, (metric, f.message)
    assert "probed steps were at or above 0.1 too" in f.message
