"""Round 23 (watchfast23): the host path of a ``Watch`` record (``Recording._collect_host``, the
CPU kernels' path) with its one-weight shortcuts (``_std1``, the update ratio of one weight
tensor read from its two sums, the one-weight gradient check) must give, to the bit, the rows
of the general path (``collect``'s transfer path, which the same kernels feed). Each model is
trained twice from one seed on one data stream, once with the host path and once with it
refused, and the two frames must be equal, float32 and float64, every 1 and every 2; the host
path must have run where it applies (plain ReLU chains, a CNN chain, Dropout) and must refuse
where it does not (an activation measured by the torch operations)."""

from __future__ import annotations

import math

import pytest
import torch
from helpers.torchref import FunctionalReluNet, ResidualReluNet
from torch import nn

from depthlab.probes import accel
from depthlab.torch import Watch
from depthlab.torch.accumulators import _std
from depthlab.torch.hooks import Recording, _std1

pytestmark = pytest.mark.skipif(accel.kernels() is None,
                                reason="the host path needs the compiled kernels (Numba)")

ACTIVATIONS = [nn.ReLU, lambda: nn.ReLU(inplace=True), nn.Tanh, nn.Sigmoid, nn.GELU, nn.SiLU,
               nn.LeakyReLU, nn.ELU, nn.Softplus, nn.ReLU6, nn.Hardtanh, nn.Mish, nn.SELU]


class _Shared(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Linear(6, 16), nn.Linear(16, 16), nn.Linear(16, 3)
        self.act = nn.ReLU()

    def forward(self, x):
        h = self.act(self.a(x))
        h = self.act(self.b(h))
        h = self.act(self.b(h))  # the same layer (and weight) twice
        return self.c(h)


class _Transformer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(6, 8)
        self.enc = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
        self.out = nn.Linear(8, 3)

    def forward(self, x):
        return self.out(self.enc(self.inp(x).reshape(x.shape[0], 1, 8)).reshape(x.shape[0], 8))


class _GRU(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.GRU(6, 8, batch_first=True)
        self.out = nn.Linear(8, 3)

    def forward(self, x):
        y, _ = self.rnn(x.reshape(x.shape[0], 1, 6))
        return self.out(y[:, -1])


class _CNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3),
                                 nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(32, 3))

    def forward(self, x):
        return self.net(x[:, :6].reshape(x.shape[0], 1, 2, 3).repeat(1, 1, 2, 2))


def _chain(act, dropout=False):
    def make():
        layers = [nn.Linear(6, 16), act(), nn.Linear(16, 16), act()]
        if dropout:
            layers.insert(2, nn.Dropout(0.3))
        return nn.Sequential(*layers, nn.Linear(16, 3))
    return make


def _models():
    for i, act in enumerate(ACTIVATIONS):
        name = "relu-inplace" if i == 1 else act.__name__
        yield f"chain-{name}", _chain(act), act in (nn.ReLU,) or i == 1
    yield "dropout", _chain(nn.ReLU, dropout=True), True
    yield "cnn", _CNN, True
    yield "functional", FunctionalReluNet, False
    yield "residual", ResidualReluNet, False
    yield "shared", _Shared, False
    yield "batchnorm", lambda: nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(),
                                             nn.Linear(16, 3)), False
    yield "transformer", _Transformer, False
    yield "gru", _GRU, False


MODELS = list(_models())


def _train(make, dtype, every, host: bool, steps: int = 5):
    torch.manual_seed(0)
    model = make().to(dtype)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    g = torch.Generator().manual_seed(1)
    taken = []
    original = Recording._collect_host

    def spy(self, *args):
        got = original(self, *args) if host else None
        taken.append(bool(got))
        return got

    Recording._collect_host = spy
    try:
        w = Watch(model, every=every, theory=False)
        losses = []
        for _ in range(steps):
            x = torch.randn(24, 6, generator=g, dtype=dtype)
            y = torch.randint(0, 3, (24,), generator=g)
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            w.step(loss)
            opt.step()
            losses.append(loss.item())
        w.close()
    finally:
        Recording._collect_host = original
    return w.frame(), losses, taken, model


# float64: the models the host path measures and the structures, not every activation again
# (those take the torch operations in both runs; the whole file stays under a minute)
CASES = [(*m, torch.float32) for m in MODELS] + [
    (*m, torch.float64) for m in MODELS if m[2] or not m[0].startswith("chain-")]


@pytest.mark.parametrize("name,make,host,dtype", CASES,
                         ids=[f"{c[0]}-{str(c[3])[6:]}" for c in CASES])
def test_host_path_rows_equal_the_general_path_to_the_bit(name, make, host, dtype):
    for every in (1, 2):
        fast, losses_f, taken, _ = _train(make, dtype, every, host=True)
        slow, losses_s, _, _ = _train(make, dtype, every, host=False)
        assert losses_f == losses_s
        assert len(fast) and fast.equals(slow), (name, every, fast.compare(slow))
        # the shortcut's own rows are there (update ratios from the weight pass, weight stds)
        assert {"update_ratio", "weight_std", "weight_grad_std"} <= set(fast["quantity"])
        if host:  # a chain the kernels measure entirely: the host path ran at every record
            assert taken and all(taken), (name, taken)


@pytest.mark.parametrize("make", [_chain(nn.Tanh), _chain(nn.GELU)], ids=["tanh", "gelu"])
def test_host_path_refuses_activations_measured_by_torch_operations(make):
    _, _, taken, _ = _train(make, torch.float32, 1, host=True, steps=3)
    assert taken and not any(taken)


def test_training_is_bit_identical_with_and_without_watch():
    torch.manual_seed(0)
    plain = _chain(lambda: nn.ReLU(inplace=True))()
    opt = torch.optim.SGD(plain.parameters(), lr=0.1, momentum=0.9)
    g = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(5):
        x = torch.randn(24, 6, generator=g)
        y = torch.randint(0, 3, (24,), generator=g)
        opt.zero_grad()
        loss = nn.functional.cross_entropy(plain(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    _, losses_w, _, watched = _train(_chain(lambda: nn.ReLU(inplace=True)), torch.float32, 1,
                                     host=True, steps=5)
    assert losses == losses_w
    for p, q in zip(plain.parameters(), watched.parameters()):
        assert torch.equal(p, q)


def test_std1_is_std_of_one_partial_sum_to_the_bit():
    t = [torch.full((4,), 1.0)]
    cases = [(7, 3.5, 4.0), (4, 2.0, 1.0), (4, 2.0, 0.5), (5, -0.0, 0.0), (5, 0.0, 0.0),
             (3, math.inf, math.inf), (3, math.nan, 1.0), (4, 4.0, 4.0),  # cancelling: _std
             (10, -3.25, 9.0), (1, 1e-30, 1e-60)]
    for k in range(200):
        cases.append((k + 1, (k - 100) * 0.37, abs(k * 1.3 - 50) ** 2 + k))
    for n, s1, s2 in cases:
        got, want = _std1(n, s1, s2, t), _std(n, (s1,), (s2,), t)
        assert (math.isnan(got) and math.isnan(want)) or got == want, (n, s1, s2, got, want)
