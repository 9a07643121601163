"""Round 43 (tdochunt43): the torch doctor on recurrent models whose gradient explodes through
time (large recurrent weights), and the dead-unit rules' agreement."""

from __future__ import annotations

import math
import sys
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from torch import nn

import depthlab.torch as dlt
from depthlab.torch import prescriptions as rx
from depthlab.torch.exploding_time import (
    growth_decades,
    rule_exploding_through_time,
    threshold_decades,
)
from depthlab.torch.through_time import through_time
from depthlab.torch.train import TorchTrainSpec

T, F_IN, HIDDEN = 30, 4, 32


def _data(n: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 30, 4) sequences labelled by the sign of their last 5 steps' first feature: a
    recurrence that passes the gradient on learns it from the steps next to the loss."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, T, F_IN, generator=g)
    return x, (x[:, -5:, 0].sum(1) > 0).long()


class _LastStep(nn.Module):
    """An ``nn.RNN`` (or GRU/LSTM) read at its last step, its recurrent matrix drawn orthogonal
    at ``gain`` (spectral radius ``gain``), a Linear head."""

    def __init__(self, gain: float, cell: type[nn.RNNBase] = nn.RNN, **kw: str) -> None:
        super().__init__()
        self.rnn = cell(F_IN, HIDDEN, batch_first=True, **kw)
        self.head = nn.Linear(HIDDEN, 2)
        nn.init.orthogonal_(self.rnn.weight_hh_l0, gain=gain)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(x)[0][:, -1])


class _FirstStep(_LastStep):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(x)[0][:, 0])


def test_a_gradient_growing_back_in_time_is_exploding_not_vanishing():
    # tanh recurrence at orthogonal gain 3: the gradient at step 0's input is ~2e4x that at
    # step 29, next to the loss; at lr 1e-4 the loss stays at chance. It was read as
    # 'vanishes through time ... training learns from a few steps near step 0 only'
    d = dlt.doctor(lambda: _LastStep(3.0), _data(), optimizer=("sgd", {"lr": 1e-4}),
                   steps=30, verify=False)
    assert "vanishing_through_time" not in d.kinds, str(d)
    f = d.finding("exploding_through_time")
    assert f is not None, str(d)
    assert f.evidence["growth_init"] >= 1e3 and f.evidence["time_steps"] == T
    assert f.evidence["growth_per_step"] == pytest.approx(
        f.evidence["growth"] ** (1 / (T - 1)))
    assert "at step 0 is" in f.message and "step 29, the last" in f.message
    assert f.layers == [1]


def test_a_relu_rnn_diverging_through_time_gets_a_verified_recurrent_cure():
    # nn.RNN(relu) at orthogonal gain 2: 2.3e3x growth back over 30 steps, NaN at step 3 at
    # SGD lr 0.1; lr/10 and warm-up diverged too, clipping ended at chance. Before, the
    # divergence was the only finding and none of its cures helped
    d = dlt.doctor(lambda: _LastStep(2.0, nonlinearity="relu"), _data(),
                   optimizer=("sgd", {"lr": 0.1}), steps=60, verify=True, max_cures=1)
    assert d.baseline["diverged"]
    f = d.finding("exploding_through_time")
    assert f is not None, str(d)
    assert f.prescription == {"recurrent_init": "orthogonal"}
    v = next(v for v in d.verifications if v.kind == "exploding_through_time")
    assert v.helped and v.resolved, str(d)
    assert math.isnan(v.before["train_loss"]) and v.after["train_loss"] < 0.9 * d.chance_loss
    div = next(v for v in d.verifications if v.kind == "divergence")  # the same run, first
    assert div.prescription == {"recurrent_init": "orthogonal"} and div.helped, str(d)
    assert d.finding("divergence").prescription == {"recurrent_init": "orthogonal"}


def test_growth_is_read_only_where_every_step_reaches_the_loss():
    x, y = _data(64)
    torch.manual_seed(0)
    grown = through_time(_LastStep(3.0), x, y, nn.CrossEntropyLoss())
    assert growth_decades(grown) > 3
    torch.manual_seed(0)  # read at step 0: the later steps get no gradient, no growth
    assert math.isnan(growth_decades(through_time(_FirstStep(3.0), x, y,
                                                  nn.CrossEntropyLoss())))
    for cell in (nn.RNN, nn.GRU, nn.LSTM):  # torch's default initializations: no growth
        torch.manual_seed(0)
        m = _LastStep(1.0, cell)
        m.rnn.reset_parameters()
        assert growth_decades(through_time(m, x, y, nn.CrossEntropyLoss())) < 1
    assert math.isnan(growth_decades(None))
    assert growth_decades({"first": math.inf, "last": 1.0}) == math.inf


@pytest.mark.parametrize("cell,gates", [(nn.RNN, 1), (nn.GRU, 3), (nn.LSTM, 4)])
def test_orthogonal_recurrent_draws_each_gate_block_and_keeps_the_rest(cell, gates):
    torch.manual_seed(0)
    m = nn.Sequential()
    m.add_module("rnn", cell(3, 5, num_layers=2, bidirectional=True))
    m.add_module("frozen", cell(10, 5))
    for p in m.frozen.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(7.0)
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    assert rx.orthogonal_recurrent(m) == 4  # 2 layers x 2 directions, the frozen one kept
    for n, p in m.named_parameters():
        if n.startswith("rnn.weight_hh"):
            for k in range(gates):
                block = p[k * 5:(k + 1) * 5].double()
                assert torch.allclose(block @ block.T, torch.eye(5, dtype=torch.float64),
                                      atol=1e-5), n
        else:
            assert torch.equal(p, before[n]), n
    with pytest.raises(rx.NotApplicable, match="no nn.RNN"):
        rx.orthogonal_recurrent(nn.Linear(3, 3))
    with pytest.raises(ValueError, match="unknown recurrent_init 'identity'"):
        rx.apply({"recurrent_init": "identity"}, m, TorchTrainSpec(), torch.randn(2, 4, 3))


def test_a_recurrence_at_chance_under_adam_is_not_healthy():
    # the same gain-2 ReLU RNN under Adam lr 0.01 does not diverge: its loss stays at a
    # constant prediction's (0.686 against 0.693) and the doctor found nothing. The
    # orthogonal recurrent matrices trained it to 0.033, val acc 0.51 -> 0.98
    d = dlt.doctor(lambda: _LastStep(2.0, nonlinearity="relu"), _data(),
                   optimizer=("adam", {"lr": 0.01}), steps=60, verify=True, max_cures=1)
    assert not d.baseline["diverged"]
    assert not d.healthy, str(d)  # (it was: no finding at all)
    f = d.finding("exploding_through_time")
    assert f is not None, str(d)
    assert "not below a constant prediction's" in f.message
    v, = (v for v in d.verifications if v.kind == "exploding_through_time")
    assert v.prescription == {"recurrent_init": "orthogonal"}
    assert v.helped and v.after["train_loss"] < 0.5 * v.before["train_loss"], str(d)
    assert v.after["val_acc"] > v.before["val_acc"] + 0.2


def test_a_model_with_every_parameter_frozen_is_refused_naming_requires_grad():
    def make() -> nn.Module:
        return nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3)).requires_grad_(False)

    x, y = torch.randn(40, 5), torch.randint(0, 3, (40,))
    with pytest.raises(ValueError, match=r"no trainable parameters \(every parameter has "
                                         r"requires_grad=False\).*unfreeze"):
        dlt.doctor(make, (x, y), steps=5, verify=False)


def _ctx(first: float, last: float, steps: int, diverged: bool = True) -> SimpleNamespace:
    reading = {"layer": "rnn", "module": "LSTM", "steps": steps, "first": first, "last": last,
               "index": 1}
    return SimpleNamespace(through_time_init=reading, through_time=None, end=100,
                           history=SimpleNamespace(diverged=diverged), chance_loss=0.69,
                           table=pd.DataFrame(), steps=[])


def test_a_pooled_readout_over_many_steps_is_not_growth():
    # a readout pooling T outputs gives step 0 the gradient of all T of them, the last step one:
    # up to ~T without any growth through the recurrence. 1.5e3x over 2000 steps is that (no
    # finding); over 30 steps it is a factor 1.29 per step (a finding)
    assert threshold_decades(30) == 3.0 and threshold_decades(2000) == pytest.approx(4.301, 1e-3)
    assert rule_exploding_through_time(_ctx(1.5e3, 1.0, 2000))[1] is None
    f = rule_exploding_through_time(_ctx(1.5e3, 1.0, 30))[1]
    assert f is not None and f.evidence["threshold"] == 3.0
    assert rule_exploding_through_time(_ctx(1e5, 1.0, 2000))[1] is not None
    # a run that did not diverge and whose probe loss is unknown: nothing says it failed
    assert rule_exploding_through_time(_ctx(1e5, 1.0, 30, diverged=False))[1] is None


def test_a_frozen_recurrent_layer_is_not_judged_for_its_growth():
    def make() -> nn.Module:
        m = _LastStep(2.0, nonlinearity="relu")
        m.rnn.requires_grad_(False)  # a pretrained encoder: the head alone trains
        return m

    d = dlt.doctor(make, _data(), optimizer=("sgd", {"lr": 0.1}), steps=20, verify=False)
    assert "exploding_through_time" not in d.kinds, str(d)


def test_a_frozen_recurrent_encoder_is_not_told_its_gradient_vanishes_through_time():
    # a frozen GRU under a trained head, labels set by the first 4 of 40 steps: it read 'training
    # learns from a few steps near step 39 only'; no weight of the GRU trains
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 40, 2, generator=g)
    y = (x[:, :4, 0].sum(1) > 0).long()

    class Frozen(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = nn.GRU(2, 8, batch_first=True).requires_grad_(False)
            self.head = nn.Linear(8, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.rnn(x)[0][:, -1])

    d = dlt.doctor(Frozen, (x, y), steps=40, verify=False)
    assert "vanishing_through_time" not in d.kinds, str(d)


def test_the_dead_unit_cure_is_the_shared_rules_own(monkeypatch):
    # 8-wide ReLU MLP on digits at SGD lr 1: layer 1 0% -> 50% dead, lr_too_high found. The
    # shared rule told He's init while the torch doctor's own 'killed by updates' test put
    # lr/10 first (verified: lr/10 helped, val acc 0.15 -> 0.27; He's init did not, dead 0.5 ->
    # 0.875). Now one judgement, the shared rule's, and the doctor's first cure is its own
    from depthlab.data import load_dataset

    doctor_mod = sys.modules["depthlab.torch.doctor"]
    seen: dict[str, dict] = {}
    cures = doctor_mod._cures

    def spy(f, base, *a, **k):
        if f.kind == "dead_relu":
            seen["rule"] = dict(f.prescription)
        return cures(f, base, *a, **k)

    monkeypatch.setattr(doctor_mod, "_cures", spy)

    def make() -> nn.Module:
        return nn.Sequential(nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(),
                             nn.Linear(8, 10))

    d = dlt.doctor(make, load_dataset("digits", seed=0), steps=60, verify=False,
                   optimizer=("sgd", {"lr": 1.0}))
    f = d.finding("dead_relu")
    assert f.evidence["dead_frac_worst_init"] == 0.0 and "lr_too_high" in d.kinds, str(d)
    assert seen["rule"] == f.prescription == {"lr": 0.1}, (seen, f.prescription)
    assert "Units died during training" in f.prescription_text
    assert not hasattr(doctor_mod, "_killed_by_updates")  # one judgement, not two


def test_the_exploding_kind_is_known_to_a_diagnosis_without_it():
    x, y = torch.randn(40, 5), torch.randint(0, 3, (40,))
    d = dlt.doctor(lambda: nn.Linear(5, 3), (x, y), steps=5, verify=False)
    assert d.finding("exploding_through_time") is None
