"""Round 20 (torchdoctor20): the torch doctor on recurrent models, regression losses, optimizers
and data forms nobody had tried."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

import depthlab.torch as dlt
from depthlab.torch import prescriptions as rx
from depthlab.torch.doctor import through_time
from depthlab.torch.train import TorchTrainSpec


def _early_label_data(T: int = 40, n: int = 300):
    """Sequences whose label is the sign of the first 4 steps' sum: only a model whose gradient
    reaches the early steps can learn it."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, T, 2, generator=g)
    return x, (x[:, :4, 0].sum(1) > 0).long()


class _LastStep(nn.Module):
    def __init__(self, cell: type[nn.RNNBase] = nn.GRU, hidden: int = 8) -> None:
        super().__init__()
        self.rnn = cell(2, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(x)[0][:, -1])


class _MeanPooled(_LastStep):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(x)[0].mean(1))


def test_a_recurrent_model_at_chance_with_a_gradient_vanishing_through_time_is_found():
    # was "clean bill of health" (GRU on 40 steps: the gradient reaching step 0 is 1e-9 of the
    # last step's, the loss stays at ln 2); the chrono + Adam cure verified by re-training
    x, y = _early_label_data()
    d = dlt.doctor(_LastStep, (x, y), steps=80, verify=True, max_cures=1)
    kinds = [f.kind for f in d.findings]
    assert kinds == ["vanishing_through_time"], str(d)
    f = d.findings[0]
    ev = f.evidence
    assert ev["weakest_step"] == 0 and ev["strongest_step"] == 39 and ev["time_steps"] == 40
    assert ev["ratio"] < 1e-6 and ev["metric"] == pytest.approx(-math.log10(ev["ratio"]))
    assert ev["loss_end"] >= 0.99 * ev["chance_loss"]
    assert ev["chance_loss"] == pytest.approx(0.6931, abs=2e-3)
    assert "'rnn' (GRU)" in f.message
    v = d.verifications[0]
    assert v.prescription == {"recurrent_init": "chrono", "optimizer": "adam", "lr": 0.01}
    assert v.helped and v.resolved, str(d)
    assert v.after["val_acc"] > v.before["val_acc"] + 0.2
    assert v.metric.startswith("decades lost through time")


def test_the_chrono_cure_is_the_same_as_an_independent_training_loop():
    # before/after numbers of the verification against a hand-written loop: same seed, same
    # batch order (a fresh NumPy permutation per epoch), same chrono draws
    T, H, steps = 30, 8, 40
    x, y = _early_label_data(T, 200)
    xv, yv = _early_label_data(T, 260)
    xv, yv = xv[200:], yv[200:]

    def loop(cure: bool) -> tuple[float, float]:
        torch.manual_seed(0)
        m = _LastStep()
        if cure:
            torch.manual_seed(0)
            with torch.no_grad():
                for n, p in m.rnn.named_parameters():
                    if n.startswith("bias_"):
                        keep = torch.log(torch.empty(H, dtype=torch.float64).uniform_(1, T - 1))
                        p[H:2 * H] = 0
                        if n.startswith("bias_ih"):
                            p[H:2 * H] = keep.float()
            opt = torch.optim.Adam(m.parameters(), lr=0.01)
        else:
            opt = torch.optim.SGD(m.parameters(), lr=0.1)
        torch.manual_seed(0)
        rng = np.random.default_rng(0)
        perm, pos = rng.permutation(200), 0
        for _ in range(steps):
            if pos + 64 > 200:
                perm, pos = rng.permutation(200), 0
            idx = torch.from_numpy(perm[pos:pos + 64])
            pos += 64
            loss = F.cross_entropy(m(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        m.eval()
        with torch.no_grad():
            return (F.cross_entropy(m(x), y).item(),
                    (m(xv).argmax(1) == yv).double().mean().item())

    base, cured = loop(False), loop(True)
    d = dlt.doctor(_LastStep, (x, y, xv, yv), steps=steps, verify=True, max_cures=1)
    assert [f.kind for f in d.findings] == ["vanishing_through_time"], str(d)
    v = d.verifications[0]
    assert v.before["train_loss"] == pytest.approx(base[0], rel=1e-5)
    assert v.before["val_acc"] == pytest.approx(base[1])
    assert v.after["train_loss"] == pytest.approx(cured[0], rel=1e-5)
    assert v.after["val_acc"] == pytest.approx(cured[1])


def test_chrono_init_sets_the_memory_gate_biases():
    T = 25
    x = torch.randn(4, T, 2)
    torch.manual_seed(0)
    lstm = _LastStep(nn.LSTM, 6)
    assert rx.chrono_init(lstm, x) > 0
    H = 6
    b_ih, b_hh = lstm.rnn.bias_ih_l0.detach(), lstm.rnn.bias_hh_l0.detach()
    forget, inp = b_ih[H:2 * H], b_ih[:H]
    assert torch.all(forget >= 0) and torch.all(forget <= math.log(T - 1) + 1e-6)
    assert torch.equal(inp, -forget)
    assert torch.all(b_hh[:2 * H] == 0)
    gru = _LastStep(nn.GRU, 6)
    before = gru.rnn.bias_ih_l0.detach().clone()
    rx.chrono_init(gru, x)
    z = gru.rnn.bias_ih_l0.detach()[H:2 * H]
    assert torch.all(z >= 0) and torch.all(z <= math.log(T - 1) + 1e-6)
    assert torch.all(gru.rnn.bias_hh_l0.detach()[H:2 * H] == 0)
    assert torch.equal(gru.rnn.bias_ih_l0.detach()[:H], before[:H])  # the reset gate kept
    with pytest.raises(rx.NotApplicable, match="plain nn.RNN"):
        rx.chrono_init(_LastStep(nn.RNN), x)
    no_bias = _LastStep()
    no_bias.rnn = nn.GRU(2, 8, batch_first=True, bias=False)
    with pytest.raises(rx.NotApplicable, match="bias=False"):
        rx.apply({"recurrent_init": "chrono"}, no_bias, TorchTrainSpec(), x)


def test_through_time_reads_the_gradient_at_each_step_and_changes_nothing():
    x, y = _early_label_data(20, 16)
    torch.manual_seed(0)
    m = _LastStep()
    state = {k: v.clone() for k, v in m.state_dict().items()}
    tt = through_time(m, x, y, nn.CrossEntropyLoss())
    xi = x.clone().requires_grad_(True)
    F.cross_entropy(m(xi), y).backward()
    norms = xi.grad.double().norm(dim=(0, 2))
    assert tt["steps"] == 20 and tt["weakest"] == int(norms.argmin())
    assert tt["ratio"] == pytest.approx(float(norms.min() / norms.max()), rel=1e-6)
    assert all(torch.equal(v, state[k]) for k, v in m.state_dict().items())
    # a model reading every step (mean over time) keeps a gradient at step 0
    assert through_time(_MeanPooled(), x, y, nn.CrossEntropyLoss())["ratio"] > 1e-2
    assert through_time(nn.Sequential(nn.Flatten(), nn.Linear(40, 2)), x, y,
                        nn.CrossEntropyLoss()) is None
