"""Round 39 (watchlean39): the proof harness for a faster ``Watch`` record.

A record on the CPU kernels' path takes its values from the host path
(``Recording._collect_host``); the general path (``Recording.collect`` with the Transfer) must give
the same tables to the bit, and a Watch must leave training bit-identical. Any later "record
plan" (a cache of the general path's per-layer decisions) must keep both; these tests check them
on the model set of issue 8's speed work: an MLP, an MLP with ``nn.ReLU(inplace=True)``, a CNN
with BatchNorm2d, residual blocks, a model whose head is replaced after a record, a Linear called
twice, an LSTM, a TransformerEncoder layer and a model with a ``torch.no_grad`` section, each
recorded every step and every third step.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from helpers.torchmodels import EncoderHead, LstmHead
from torch import nn

from depthlab.torch import Watch, hooks
from depthlab.torch.accumulators import watch_kernels


class _Shared(nn.Module):
    """One Linear called twice per forward (weight sharing)."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(6, 8)
        self.mid = nn.Linear(8, 8)
        self.out = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.inp(x))
        h = F.relu(self.mid(h))
        return self.out(F.relu(self.mid(h)))


class _Block(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d, d)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(self.act(self.fc1(x)))


class _Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(6, 8)
        self.blocks = nn.Sequential(_Block(8), _Block(8))
        self.out = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.blocks(F.relu(self.inp(x))))


class _Frozen(nn.Module):
    """A frozen first layer run under ``torch.no_grad`` inside the forward."""

    def __init__(self) -> None:
        super().__init__()
        self.base = nn.Linear(6, 8)
        self.act = nn.ReLU()
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            h = self.act(self.base(x))
        return self.head(h)


KINDS = ("mlp", "mlp_inplace", "cnn_bn", "residual", "relayered", "shared", "lstm",
         "transformer", "no_grad")


def _case(kind: str) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    if kind in ("mlp", "relayered"):
        model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(),
                              nn.Linear(16, 3))
        x = torch.randn(12, 6)
    elif kind == "mlp_inplace":
        model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(inplace=True), nn.Linear(16, 16),
                              nn.ReLU(inplace=True), nn.Linear(16, 3))
        x = torch.randn(12, 6)
    elif kind == "cnn_bn":
        model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                              nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                              nn.Flatten(), nn.Linear(4 * 5 * 5, 3))
        x = torch.randn(12, 2, 5, 5)
    elif kind == "residual":
        model, x = _Residual(), torch.randn(12, 6)
    elif kind == "shared":
        model, x = _Shared(), torch.randn(12, 6)
    elif kind == "lstm":
        model, x = LstmHead(), torch.randn(12, 4, 6)
    elif kind == "transformer":
        model, x = EncoderHead(), torch.randn(12, 4, 6)
    else:
        model, x = _Frozen(), torch.randn(12, 6)
    return model, x


def _train(kind: str, watched: bool, steps: int = 7, every: int = 3):
    """Train ``kind`` for ``steps`` SGD steps (records at 0, 3, 6 with ``every=3``); the
    ``relayered`` model gets a new head after step 3. The Watch's frame (None unwatched), the
    losses, the parameters."""
    model, x = _case(kind)
    y = torch.randint(0, 3, (x.shape[0],), generator=torch.Generator().manual_seed(1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    watch = Watch(model, every=every, theory=False) if watched else None
    losses = []
    for step in range(steps):
        if kind == "relayered" and step == 4:
            torch.manual_seed(5)
            model[4] = nn.Linear(16, 3)
            opt.add_param_group({"params": model[4].parameters()})
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        if watch is not None:
            watch.step(loss)
        opt.step()
        losses.append(loss.item())
    frame = None
    if watch is not None:
        watch.close()
        frame = watch.frame()
    return frame, losses, [p.detach().clone() for p in model.parameters()]


def _bits(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    out["value"] = frame["value"].to_numpy(np.float64).view(np.int64)
    return out


def _general_only(monkeypatch) -> None:
    """Turn the host path off: every record takes the general path."""
    monkeypatch.setattr(hooks.Recording, "_collect_host", lambda self, *args: None)


@pytest.mark.parametrize("every", [1, 3])
@pytest.mark.parametrize("kind", KINDS)
def test_host_path_frames_equal_the_general_paths_to_the_bit(kind, every, monkeypatch):
    """The same training recorded with the host path and with the general path: the frames
    are identical to the bit, and training is bit-identical to an unwatched run."""
    if watch_kernels() is None:
        pytest.skip("no compiled CPU kernels (Numba not installed, or DEPTHLAB_PROBE_KERNELS="
                    "numpy): there is no host path")
    with pytest.warns(RuntimeWarning) if kind == "relayered" else _nothing():
        fast, losses_w, params_w = _train(kind, True, every=every)
    _, losses, params = _train(kind, False, every=every)
    assert losses_w == losses
    assert all(torch.equal(a, b) for a, b in zip(params_w, params))
    _general_only(monkeypatch)
    with pytest.warns(RuntimeWarning) if kind == "relayered" else _nothing():
        slow, losses_s, _ = _train(kind, True, every=every)
    assert losses_s == losses
    assert len(fast) == len(slow) > 0
    assert {"pre_std", "grad_pre_std", "weight_grad_std", "update_ratio"} <= set(fast.quantity)
    pd.testing.assert_frame_equal(_bits(fast), _bits(slow), check_exact=True)


def test_the_host_path_ran(monkeypatch):
    """The comparison above compares two paths: on the MLP every record took the host path."""
    if watch_kernels() is None:
        pytest.skip("no compiled CPU kernels (Numba not installed, or DEPTHLAB_PROBE_KERNELS="
                    "numpy): there is no host path")
    taken = []
    original = hooks.Recording._collect_host

    def spy(self, *args):
        out = original(self, *args)
        taken.append(out)
        return out
    monkeypatch.setattr(hooks.Recording, "_collect_host", spy)
    _train("mlp", True, every=3)
    assert taken == [True, True, True]


def _nothing():
    return contextlib.nullcontext()
