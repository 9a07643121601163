"""Round 24 (knowntorch24): the torch doctor's known answers after the norm-gradient change.

A batch norm *after* the activation (``Linear -> ReLU -> BatchNorm1d``, ``Conv -> ReLU ->
BatchNorm2d``) divides the gradient reaching the layer's output by the std of its own input,
as a norm before the activation does: the vanishing/exploding rules read the gradient at that
norm's output, so the network is judged the same at any input scale."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import depthlab.torch as dlt
from depthlab.data import load_dataset
from depthlab.torch import prescriptions as rx


@pytest.fixture(scope="module")
def digits():
    ds = load_dataset("digits", seed=0)
    return ds.x_train[:600].astype(np.float32), ds.y_train[:600]


def post_norm_mlp():
    mods: list[nn.Module] = []
    for c in (64, 64, 64):
        mods += [nn.Linear(c, 64), nn.ReLU(), nn.BatchNorm1d(64)]
    return nn.Sequential(*mods, nn.Linear(64, 10))


GRADIENT_KINDS = {"vanishing_gradients", "exploding_gradients"}


@pytest.mark.parametrize("scale", [255.0, 0.05])
def test_a_norm_after_the_activation_is_judged_the_same_at_any_input_scale(digits, scale):
    x, y = digits
    diag = dlt.doctor(post_norm_mlp, (x * scale, y), steps=60, batch_size=32, probe_every=20,
                      verify=False)
    # was vanishing_gradients (x255, 68x: the norm's backward divides by std 255x) or
    # exploding_gradients (x0.05, 20x) in layer 1 only
    assert not GRADIENT_KINDS & set(diag.kinds), str(diag)


def test_the_norm_after_an_activation_is_traced_for_its_layer():
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(inplace=True),
                          nn.Dropout(0.1), nn.BatchNorm2d(4),
                          nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.Conv2d(4, 4, 3, padding=1), nn.Tanh(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(64, 10))
    x = torch.randn(8, 1, 8, 8)
    t = {layer.name: layer for layer in rx.trace(model, x)}
    assert t["0"].norm is model[3]  # after its activation, through dropout
    assert t["4"].norm is model[5]  # before its activation (as before)
    assert t["7"].norm is None  # no norm: tanh, then pooling into the head
    assert t["11"].norm is None


def test_a_norm_after_something_else_is_not_the_layers():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.act, self.bn = nn.Linear(8, 8), nn.ReLU(), nn.BatchNorm1d(8)
            self.fc2 = nn.Linear(8, 2)

        def forward(self, x):
            h = self.act(self.fc1(x))
            return self.fc2(self.bn(h + x))  # a sum between: not the activation's output

    t = {layer.name: layer for layer in rx.trace(Net(), torch.randn(6, 8))}
    assert t["fc1"].activation is not None and t["fc1"].norm is None
