"""torchhunt51 (round 51): dlt.probe / dlt.Watch / dlt.predict on models not shown before.

Each quantity is checked against a direct float64 autograd computation (or, for the theory, a
measurement over seeds)."""

from __future__ import annotations

import math
import re

import pytest
import torch
from torch import nn

import depthlab.torch as dlt

CE = nn.functional.cross_entropy


# ---------------------------------------------------------------------------------------------
# grammar: "1 rows" in the doctor's training-step and x/y checks


def test_one_row_batches_say_row_not_rows():
    """Regression: 'fails on mini-batches of 1 rows'."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randint(0, 20, (20, 4), generator=g), torch.randint(0, 2, (20,), generator=g)

    class Bag(nn.Module):  # Adam cannot step on nn.Embedding(sparse=True)'s gradients
        def __init__(self) -> None:
            super().__init__()
            self.emb, self.fc = nn.Embedding(20, 8, sparse=True), nn.Linear(8, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.emb(x).mean(1))

    with pytest.raises(ValueError, match=r"fails on mini-batches of 1 row \(batch_size 1") as e:
        dlt.doctor(Bag, (x, y), steps=3, batch_size=1, optimizer="adam", verify=False)
    assert "1 rows" not in str(e.value)


def test_x_of_one_row_against_more_labels_says_row():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(1, 10, generator=g), torch.randint(0, 2, (3,), generator=g)

    def make():
        return nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 2))

    with pytest.raises(ValueError, match=r"^x has 1 row \(shape \(1, 10\)\) but y has 3"):
        dlt.doctor(make, (x, y), steps=3, verify=False)


# ---------------------------------------------------------------------------------------------
# dlt.predict on a convex length map: a Hardswish chain after weights of gain 1.5 (12 layers
# of 128) measured pre_std up to 1.9x the prediction at the last hidden layer, and the table's
# note said nothing; now it names the spread (the homogeneous ReLU note generalised by the
# length map's elasticity), which matches the spread measured over seeds


def _hardswish_chain(seed: int, gain: float = 1.5, depth: int = 12, width: int = 128):
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i in range(depth):
        lin = nn.Linear(32 if i == 0 else width, width)
        nn.init.normal_(lin.weight, 0.0, gain / math.sqrt(lin.in_features))
        nn.init.zeros_(lin.bias)
        layers += [lin, nn.Hardswish()]
    return nn.Sequential(*layers, nn.Linear(width, 10))


def _noted_spread(note: str) -> float | None:
    m = re.search(r"sd of log pre_std ([\d.]+) at the last hidden layer", note)
    return float(m.group(1)) if m else None


def test_predict_notes_the_spread_of_a_convex_length_map():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(256, 32, generator=g), torch.randint(0, 10, (256,), generator=g)
    logs = []
    for seed in range(4):
        df = dlt.predict(_hardswish_chain(seed), x, y, CE)
        note = df.attrs["approximation"]
        spread = _noted_spread(note)
        assert spread is not None, note
        assert "not linear" in note and "positively homogeneous" not in note, note
        pre = df[df.quantity == "pre_std"]
        logs.append(math.log(pre.value.iloc[-2] / pre.predicted.iloc[-2]))
    measured = float(torch.tensor(logs).std())
    assert 0.5 * spread < measured < 2.0 * spread, (measured, spread, logs)
    # the bias the note names: the mean over seeds lies above the prediction
    assert sum(logs) / len(logs) > 0, logs


def test_predict_no_spread_note_for_a_contracting_or_small_map():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(128, 32, generator=g), torch.randint(0, 10, (128,), generator=g)
    # PyTorch's default init: Hardswish's map contracts (slope below 1), nothing to note
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for i in range(8):
        layers += [nn.Linear(32 if i == 0 else 64, 64), nn.Hardswish()]
    note = dlt.predict(nn.Sequential(*layers, nn.Linear(64, 10)), x, y, CE).attrs[
        "approximation"]
    assert _noted_spread(note) is None, note
