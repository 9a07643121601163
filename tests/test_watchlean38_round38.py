"""Round 38 (watchlean38): a Watch's tables, to the bit, against a reference run.

The reference for every Watch frame below (5 SGD steps, every=3) is the same training with the
losses handed to ``Watch.step`` as host floats (``loss.item()`` computed by the loop: the numbers
path), and an unwatched run for the training itself: frames equal to the bit, on an MLP with
in-place ReLU, a CNN with BatchNorm, an LSTM classifier, a transformer encoder and a model with a
shared layer.
"""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from helpers.torchmodels import EncoderHead, LstmHead
from torch import nn

import depthlab.torch as dlt


class _Shared(nn.Module):
    """One Linear called twice per forward (weight sharing)."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(6, 8)
        self.mid = nn.Linear(8, 8)
        self.out = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.inp(x))
        h = torch.relu(self.mid(h))
        return self.out(torch.relu(self.mid(h)))


def _case(kind: str) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    if kind == "mlp":
        model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(inplace=True), nn.Linear(16, 16),
                              nn.ReLU(inplace=True), nn.Linear(16, 3))
        x = torch.randn(12, 6)
    elif kind == "cnn_bn":
        model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                              nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                              nn.Flatten(), nn.Linear(4 * 5 * 5, 3))
        x = torch.randn(12, 2, 5, 5)
    elif kind == "lstm":
        model, x = LstmHead(), torch.randn(12, 4, 6)
    elif kind == "transformer":
        model, x = EncoderHead(), torch.randn(12, 4, 6)
    else:
        model, x = _Shared(), torch.randn(12, 6)
    return model, x


def _train(kind: str, watch: str | None, steps: int = 5):
    """Train ``kind`` for ``steps`` SGD steps; ``watch``: None (no Watch), "tensor" (the loss
    tensor to Watch.step) or "float" (its .item()). The Watch, the losses, the parameters."""
    model, x = _case(kind)
    y = torch.arange(x.shape[0]) % 3
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    w = dlt.Watch(model, every=3) if watch else None
    losses = []
    for i in range(steps):
        opt.zero_grad()
        xi = x + 0.1 * i
        loss = nn.functional.cross_entropy(model(xi), y)
        loss.backward()
        losses.append(loss.item())
        if w is not None:
            w.step(loss if watch == "tensor" else loss.item())
        opt.step()
    if w is not None:
        w.close()
    return w, losses, [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("kind", ["mlp", "cnn_bn", "lstm", "transformer", "shared"])
def test_frames_equal_to_the_bit_and_training_unchanged(kind):
    w_tensor, losses, params = _train(kind, "tensor")
    w_float, losses_f, params_f = _train(kind, "float")
    _, losses0, params0 = _train(kind, None)
    assert losses == losses0 == losses_f  # a Watch does not change training
    for a, b, c in zip(params, params0, params_f):
        assert torch.equal(a, b) and torch.equal(a, c)
    f1, f2 = w_tensor.frame(), w_float.frame()
    assert len(f1) > 0 and set(f1["step"]) == {0, 3}
    pd.testing.assert_frame_equal(f1, f2, check_exact=True)
    assert w_tensor.losses()["loss"].tolist() == losses  # every step's value, exactly
    assert w_tensor.losses()["step"].tolist() == list(range(len(losses)))
    loss_rows = f1[f1["quantity"] == "loss"]
    assert loss_rows["value"].tolist() == [losses[s] for s in loss_rows["step"]]


def _mlp_watch():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    return model, dlt.Watch(model, every=10)


def test_a_loss_tensor_written_after_the_step_keeps_its_value_at_the_step():
    """A loop that reuses one loss tensor (written in place after Watch.step) records the value
    each step had, on the recorded and the unrecorded steps alike."""
    model, watch = _mlp_watch()
    x, y = torch.randn(8, 6), torch.arange(8) % 3
    total = torch.zeros(())
    seen = []
    for i in range(12):
        model.zero_grad()
        loss = nn.functional.cross_entropy(model(x + i), y)
        loss.backward()
        total.zero_()
        total += loss.detach()
        seen.append(total.item())
        watch.step(total)
    total.fill_(-1.0)
    watch.close()
    assert watch.losses()["loss"].tolist() == seen
