"""Round 21 (torchprobe21): depthlab.torch's measuring side on models written the way people
write them today, each checked against the same model measured another way (float64)."""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

import depthlab.torch as dlt


class _Res(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(6, 6)

    def forward(self, x):
        return x + torch.tanh(self.lin(x))


class _Checkpointed(nn.Module):
    """A segment run through ``checkpoint(..., use_reentrant=False)`` (torch's recommended
    mode) fed the raw data (no gradient): a Linear, a Tanh, a residual block, a Linear."""

    def __init__(self):
        super().__init__()
        self.ck = True
        self.seg = nn.Sequential(nn.Linear(6, 6), nn.Tanh(), _Res(), nn.Linear(6, 6))
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        h = checkpoint(self.seg, x, use_reentrant=False) if self.ck else self.seg(x)
        return self.head(h)


def _frame_key(df):
    return df.set_index(["layer", "module", "quantity"]).value.sort_index()


def test_non_reentrant_checkpoint_fed_raw_data_is_measured_and_trains_bit_identically(tmp_path):
    """The residual-block search replaced the raw input of the checkpointed segment by a copy
    that requires grad (first armed pass): the forward saved one more tensor than the
    backward's recomputation, and torch raised CheckpointError ("A different number of
    tensors was saved during the original forward and recomputation. ... forward: 6,
    recomputation: 5") from dlt.probe and from the first recorded step of a Watch."""
    torch.manual_seed(0)
    model = _Checkpointed().double()
    plain = copy.deepcopy(model)
    plain.ck = False
    x, y = torch.randn(16, 6, dtype=torch.float64), torch.randn(16, 2, dtype=torch.float64)
    got = _frame_key(dlt.probe(model, x, y, nn.MSELoss()))
    want = _frame_key(dlt.probe(plain, x, y, nn.MSELoss()))
    assert list(got.index) == list(want.index)
    assert (got - want).abs().max() == 0.0
    assert "block_grad_std" in got.index.get_level_values("quantity")

    def train(m, watched):
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        w = dlt.Watch(m, every=2, out=tmp_path / f"w{watched}") if watched else None
        for _ in range(3):
            opt.zero_grad()
            loss = nn.functional.mse_loss(m(x), y)
            loss.backward()
            if w is not None:
                w.step(loss)
            opt.step()
        if w is not None:
            w.close()
            return w.frame()

    a, b = copy.deepcopy(model), copy.deepcopy(model)
    train(a, False)
    frame = train(b, True)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert sorted(frame.step.unique()) == [0, 2]
    assert frame.query("quantity == 'grad_pre_std'").value.notna().all()
