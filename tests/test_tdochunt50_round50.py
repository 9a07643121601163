"""Round 50 (tdochunt50): the torch doctor on new ground: a warm-up cure longer than the run."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import depthlab.torch as dlt  # noqa: E402
from depthlab.torch import prescriptions as rx  # noqa: E402
from depthlab.torch.train import TorchTrainSpec  # noqa: E402

KINDS_WITH_WARMUP = ["dead_relu", "divergence"]


def _warmups(cures: list[tuple[dict, str]]) -> list[dict]:
    return [c for c, _ in cures if "warmup" in c]


@pytest.mark.parametrize("kind", KINDS_WITH_WARMUP)
def test_no_warmup_cure_in_a_run_shorter_than_the_warmup(kind):
    # warm-up over W = max(2, steps // 10) updates, update k at lr * min(1, k / W): a 1-step
    # run's "warm-up" of 2 is lr / 2 for its only update (the old code offered it, reading
    # "over the first 10% of the steps"); a 2-step run's ends at its last update
    short = rx.alternatives(kind, "relu", TorchTrainSpec(steps=1), normalized=False)
    assert _warmups(short) == []
    assert [c for c, _ in short if "lr" in c]  # the smaller-rate cures stay
    for steps, w in [(2, 2), (20, 2), (60, 6)]:
        cures = rx.alternatives(kind, "relu", TorchTrainSpec(steps=steps), normalized=False)
        assert _warmups(cures) == [{"warmup": w}]
        assert rx.warmup_fits(steps) and rx.warmup_steps(steps) == w


def test_no_warmup_cure_for_gradients_that_vanished_in_training_in_one_step():
    spec = TorchTrainSpec(steps=1)
    cures = rx.alternatives("vanishing_gradients", "tanh", spec, normalized=False,
                            in_training=(1.5, 400.0))
    assert cures[0][0] == {"lr": spec.lr / 10.0} and _warmups(cures) == []
    longer = rx.alternatives("vanishing_gradients", "tanh", TorchTrainSpec(steps=30),
                             normalized=False, in_training=(1.5, 400.0))
    assert _warmups(longer) == [{"warmup": 3}]


def test_a_one_step_diagnosis_verifies_no_warmup():
    # units killed by one update at lr 50 (dead_relu, lr_too_high): the old code verified
    # {"warmup": 2} on the 1-step budget, its only update at lr 25
    g = torch.Generator().manual_seed(0)
    x = torch.randn(160, 16, generator=g)
    y = (x[:, :4] @ torch.randn(4, 3, generator=g)).argmax(1)

    def make():
        return nn.Sequential(nn.Linear(16, 48), nn.ReLU(), nn.Linear(48, 48), nn.ReLU(),
                             nn.Linear(48, 3))

    diag = dlt.doctor(make, (x, y), steps=1, optimizer=("sgd", {"lr": 50.0}), max_cures=4,
                      probe_every=1)
    assert diag.findings, str(diag)
    assert diag.verifications, str(diag)
    assert all("warmup" not in v.prescription for v in diag.verifications), str(diag)
    assert all(v.after.get("budget", 1) == 1 for v in diag.verifications)
