"""Round 48 (tdochunt48): the torch doctor on fine-tuned models (a frozen sigmoid backbone: the
mean shift judged on the layers training can change), on a cure whose re-training raises (said
in its verification, the diagnosis goes on), and the CLI's factory errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import depthlab.torch as dlt
from depthlab.diagnosis import Diagnosis


@pytest.fixture(scope="module")
def blobs():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(4, 16)) * 2
    y = rng.integers(0, 4, 200)
    x = centers[y] + rng.normal(size=(200, 16))
    return x.astype(np.float32), y


def sigmoid_stack(depth: int, frozen: int = 0) -> nn.Sequential:
    """``depth`` Linear(., 32)-Sigmoid layers with N(0, 1) weights and a Linear(32, 4) head;
    the first ``frozen`` layers (and their sigmoids) with ``requires_grad=False``."""
    layers: list[nn.Module] = []
    width = 16
    for _ in range(depth):
        lin = nn.Linear(width, 32)
        nn.init.normal_(lin.weight, 0.0, 1.0)
        layers += [lin, nn.Sigmoid()]
        width = 32
    model = nn.Sequential(*layers, nn.Linear(32, 4))
    for module in model[:2 * frozen]:
        module.requires_grad_(False)
    return model


def test_mean_shift_of_a_frozen_backbone_is_judged_on_the_trainable_layers_only(blobs):
    """Six frozen N(0, 1) sigmoid layers under four trainable ones: the finding named layers
    1-10 with the frozen layer 1's mean (0.54) as its metric, which no swap changes (the swap
    keeps frozen layers' sigmoids): both verified cures read 'did not help', 0.5374 -> 0.5374.
    Now its layers and metric are the trainable layers' (7-10)."""
    dg = dlt.doctor(lambda: sigmoid_stack(10, frozen=6), blobs, steps=20, verify=False)
    f = dg.finding("mean_shift")
    assert f is not None
    assert f.layers and min(f.layers) >= 7, f.layers
    assert f.evidence["worst_layer"] >= 7


def test_mean_shift_without_frozen_layers_still_names_the_first_layers(blobs):
    dg = dlt.doctor(lambda: sigmoid_stack(10), blobs, steps=20, verify=False)
    f = dg.finding("mean_shift")
    assert f is not None and 1 in f.layers


class SigmoidOnly(nn.Module):
    """A sigmoid stack whose forward raises from its 9th call on once its second module is no
    longer the sigmoid it was built with: every cure that swaps the activation or inserts a
    norm fails in training, after the one step the doctor checks before it."""

    def __init__(self) -> None:
        super().__init__()
        self.net = sigmoid_stack(10)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls > 8 and not isinstance(self.net[1], nn.Sigmoid):
            raise RuntimeError("only sigmoid here")
        return self.net(x)


def test_a_cure_whose_retraining_raises_is_said_in_its_verification(blobs):
    """The doctor raised 'the model or loss_fn failed in the probe at step 8 ...' out of the
    first such cure's re-training, losing the whole diagnosis."""
    dg = dlt.doctor(SigmoidOnly, blobs, steps=12, max_cures=2)
    failed = [v for v in dg.verifications if v.error]
    assert failed, [v.summary() for v in dg.verifications]
    for v in failed:
        assert "only sigmoid here" in v.error and not v.helped and not v.resolved
        assert v.after == {}
        line = v.summary()
        assert "its re-training failed" in line and "only sigmoid here" in line
        assert "\n" not in line
    assert "its re-training failed" in str(dg)
    back = Diagnosis.from_dict(json.loads(json.dumps(dg.to_dict())), dg.probes)
    assert back == dg
    assert [v.error for v in back.verifications] == [v.error for v in dg.verifications]


def test_a_verification_that_ran_writes_no_error_key():
    from depthlab.diagnosis.findings import Verification

    v = Verification(kind="saturation", prescription={"init": "matched"},
                     before={"train_loss": 1.0}, after={"train_loss": 0.5}, metric="m",
                     metric_before=0.6, metric_after=0.1, resolved=True, helped=True)
    assert "error" not in v.to_dict()
    assert Verification.from_dict(v.to_dict()).error == ""
