"""Activations a custom ``forward`` applies itself (``torch.sigmoid(self.conv(x))``, ``F.relu``,
``x.tanh()``): :func:`depthlab.torch.prescriptions.functional_activation` and ``trace`` find
them, batch norms are inserted around layers outside an ``nn.Sequential``, and the torch doctor
diagnoses and cures such a model as it does the same model built from modules."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import depthlab.torch as dlt
from depthlab.data import load_dataset
from depthlab.torch import prescriptions as rx

CASES = [
    (nn.ReLU(), "relu"), (nn.Sigmoid(), "sigmoid"), (nn.Tanh(), "tanh"), (nn.GELU(), "gelu"),
    (nn.SiLU(), "swish"), (nn.ELU(), "elu"), (nn.SELU(), "selu"), (nn.Softplus(), "softplus"),
    (nn.Mish(), "mish"), (nn.Softsign(), "softsign"), (nn.Hardswish(), "hardswish"),
    (nn.Hardsigmoid(), "hardsigmoid"), (nn.ReLU6(), "relu6"),
]


@pytest.mark.parametrize("module,name", CASES, ids=[c[1] for c in CASES])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_functional_activation_names_the_function(module, name, dtype):
    s = 4.0 * torch.randn(64, 30, generator=torch.Generator().manual_seed(0), dtype=dtype)
    found = rx.functional_activation(s, module(s).flatten())
    assert found is not None and rx.activation_name(found) == name


def test_functional_activation_leaky_slope_identity_and_others():
    s = torch.randn(50, 20, generator=torch.Generator().manual_seed(1))
    leaky = rx.functional_activation(s, F.leaky_relu(s, 0.2))
    assert isinstance(leaky, nn.LeakyReLU) and leaky.negative_slope == pytest.approx(0.2)
    assert rx.activation_kwargs(leaky)["negative_slope"] == pytest.approx(0.2)
    assert rx.functional_activation(s, s.clone()) is None  # no activation in between
    assert rx.functional_activation(s, 2.0 * s) is None  # not an activation
    assert rx.functional_activation(s, torch.sigmoid(s) + 0.01) is None
    assert rx.functional_activation(s, torch.sigmoid(s[:10])) is None  # other entries
    half = s.to(torch.bfloat16)
    assert rx.activation_name(rx.functional_activation(half, torch.tanh(half))) == "tanh"


class FunctionalNet(nn.Module):
    """Linear layers with activations applied in ``forward``, a flatten before the head."""

    def __init__(self, act=torch.sigmoid, inplace_relu=False):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.fc1 = nn.Linear(3 * 64, 16)
        self.fc2 = nn.Linear(16, 16)
        self.head = nn.Linear(16, 4)
        self.act, self.inplace_relu = act, inplace_relu

    def forward(self, x):
        h = self.act(self.conv(x)).flatten(1)
        h = F.relu(self.fc1(h), inplace=True) if self.inplace_relu else self.act(self.fc1(h))
        return self.head(self.fc2(h).tanh())


def test_trace_finds_functional_activations_and_keeps_modules():
    torch.manual_seed(0)
    x = torch.randn(8, 1, 8, 8)
    layers = rx.trace(FunctionalNet(inplace_relu=True), x)
    assert [t.name for t in layers] == ["conv", "fc1", "fc2", "head"]
    assert [t.activation_name for t in layers] == ["sigmoid", "relu", "tanh", None]
    assert [t.functional for t in layers] == [True, True, True, False]
    seq = nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 2))
    t = rx.trace(seq, torch.randn(4, 8))
    assert t[0].activation is seq[1] and not t[0].functional
    # a pooling between the layers changes the entries: nothing inferred there
    pooled = nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(18, 2))
    assert rx.trace(pooled, torch.randn(4, 1, 8, 8))[0].activation is None


def test_batchnorm_wraps_layers_of_a_custom_forward():
    torch.manual_seed(0)
    x = torch.randn(8, 1, 8, 8)
    model = FunctionalNet()
    n = rx.insert_batchnorm(model, x)
    assert n == 3  # conv, fc1, fc2; not the head (the output layer)
    assert isinstance(model.conv, nn.Sequential) and isinstance(model.conv[1], nn.BatchNorm2d)
    assert isinstance(model.fc1[1], nn.BatchNorm1d) and isinstance(model.head, nn.Linear)
    assert model(x).shape == (8, 4)
    # module activations in a custom forward are covered too; a layer run twice is not wrapped
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.out = nn.Linear(6, 6), nn.Linear(6, 6), nn.Linear(6, 2)
            self.act = nn.Tanh()

        def forward(self, x):
            return self.out(self.act(self.b(self.act(self.b(self.act(self.a(x)))))))

    twice = Twice()
    assert rx.insert_batchnorm(twice, torch.randn(5, 6)) == 1
    assert isinstance(twice.a, nn.Sequential) and isinstance(twice.b, nn.Linear)


def test_wrapping_equals_inserting_into_a_sequential():
    """The same network as modules in an nn.Sequential and with functional activations: after
    the batch norms go in, both compute the same function (train mode)."""
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Linear(10, 12), nn.Sigmoid(), nn.Linear(12, 12), nn.Sigmoid(),
                        nn.Linear(12, 3))

    class Same(nn.Module):
        def __init__(self):
            super().__init__()
            self.l = nn.ModuleList([nn.Linear(10, 12), nn.Linear(12, 12), nn.Linear(12, 3)])

        def forward(self, x):
            return self.l[2](torch.sigmoid(self.l[1](torch.sigmoid(self.l[0](x)))))

    same = Same()
    for i, lin in enumerate(same.l):
        lin.load_state_dict(seq[2 * i].state_dict())
    x = torch.randn(16, 10)
    assert torch.equal(seq(x), same(x))
    assert rx.insert_batchnorm(seq, x) == 2 and rx.insert_batchnorm(same, x) == 2
    assert torch.allclose(seq(x), same(x), atol=1e-6)


@pytest.fixture(scope="module")
def digits():
    ds = load_dataset("digits", seed=0)
    return ds.x_train[:600].astype(np.float32).reshape(-1, 1, 8, 8), ds.y_train[:600]


class SigmoidCNN(nn.Module):
    """The doctor's vanishing case (20 sigmoid convolutions, N(0, 1) weights) with the sigmoid
    applied in forward."""

    def __init__(self, depth=20, ch=4):
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(1, ch, 3, padding=1)]
                                   + [nn.Conv2d(ch, ch, 3, padding=1) for _ in range(depth - 1)])
        self.head = nn.Linear(ch * 64, 10)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.normal_(m.weight, 0.0, 1.0)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        for conv in self.convs:
            x = torch.sigmoid(conv(x))
        return self.head(x.flatten(1))


def test_doctor_cures_a_functional_sigmoid_cnn(digits):
    x, y = digits
    diag = dlt.doctor(SigmoidCNN, (x, y), steps=60, batch_size=32, max_cures=1, probe_every=20)
    assert diag.config["activation"] == "sigmoid"
    f = diag.finding("vanishing_gradients")
    assert f is not None and f.layers[0] == 1, str(diag)
    # 36x Glorot's variance (fan_in 36): below the sigmoid's critical 103x, where its mean
    # field's chi1 reaches 1 (Glorot's: 0.056, deep in the ordered phase): no init_mismatch
    # whose Glorot cure would make the vanishing worse (siginit29)
    assert diag.finding("init_mismatch") is None
    best = next(v for v in diag.verifications if v.kind == "vanishing_gradients")
    assert best.prescription == {"normalization": "batchnorm"}
    assert best.helped and best.after["train_loss"] <= 0.5 * best.before["train_loss"]
