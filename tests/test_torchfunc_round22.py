"""Activations a custom ``forward`` applies itself (``F.relu(self.fc1(x))``, ``torch.tanh``,
``x.sigmoid()``, ``F.gelu``, ``F.leaky_relu(h, 0.2)``, ``F.relu(h, inplace=True)``, the
PyTorch tutorial CNN's ``F.max_pool2d(F.relu(self.conv1(x)), 2)``): ``dlt.probe`` and
``dlt.Watch`` give the layer the ``act_*``, ``saturated_frac``, ``dead_frac`` and
``inactive_frac`` rows the same model built with activation modules gets (they gave none:
only ``pre_*``/``grad_*``/``weight_*``), read from the autograd graph of the recorded forward
(:mod:`depthlab.torch.functional_acts`)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import depthlab.torch as dlt
from depthlab.data import load_dataset

ACT_Q = ("act_", "saturated_frac", "dead_frac", "inactive_frac")


class FnMLP(nn.Module):
    """Linear layers, the activation applied by ``fn`` in forward."""

    def __init__(self, sizes, fn):
        super().__init__()
        self.fcs = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.fn = fn

    def forward(self, x):
        for fc in self.fcs[:-1]:
            x = self.fn(fc(x))
        return self.fcs[-1](x)


class ModMLP(nn.Module):
    """The same layers with activation modules ``acts[i]`` after each hidden layer."""

    def __init__(self, fcs, make):
        super().__init__()
        self.fcs = fcs
        self.acts = nn.ModuleList(make() for _ in fcs[:-1])

    def forward(self, x):
        for fc, act in zip(self.fcs[:-1], self.acts):
            x = act(fc(x))
        return self.fcs[-1](x)


def _table(model, x, y, loss=None, **kw) -> pd.DataFrame:
    df = dlt.probe(model, x, y, loss or nn.CrossEntropyLoss(), **kw)
    return df.sort_values(["layer", "quantity"]).reset_index(drop=True)


def _same(a: pd.DataFrame, b: pd.DataFrame, rtol: float = 1e-12) -> None:
    assert list(zip(a.layer, a.quantity)) == list(zip(b.layer, b.quantity))
    np.testing.assert_allclose(a.value.to_numpy(), b.value.to_numpy(), rtol=rtol, atol=1e-14)


def _data(n=64, d=12, k=4, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=dtype), torch.randint(0, k, (n,), generator=g)


CASES = [
    ("relu", F.relu, nn.ReLU),
    ("torch.relu", torch.relu, nn.ReLU),
    ("tanh", torch.tanh, nn.Tanh),
    ("sigmoid-method", lambda h: h.sigmoid(), nn.Sigmoid),
    ("gelu", F.gelu, nn.GELU),
    ("gelu-tanh", lambda h: F.gelu(h, approximate="tanh"), lambda: nn.GELU(approximate="tanh")),
    ("silu", F.silu, nn.SiLU),
    ("leaky0.2", lambda h: F.leaky_relu(h, 0.2), lambda: nn.LeakyReLU(0.2)),
    ("elu", lambda h: F.elu(h, 0.7), lambda: nn.ELU(0.7)),
    ("selu", F.selu, nn.SELU),
    ("celu", lambda h: F.celu(h, 1.5), lambda: nn.CELU(1.5)),
    ("softplus", lambda h: F.softplus(h, 2.0), lambda: nn.Softplus(2.0)),
    ("mish", F.mish, nn.Mish),
    ("hardtanh", lambda h: F.hardtanh(h, -0.5, 0.5), lambda: nn.Hardtanh(-0.5, 0.5)),
    ("relu6", F.relu6, nn.ReLU6),
    ("hardswish", F.hardswish, nn.Hardswish),
    ("hardsigmoid", F.hardsigmoid, nn.Hardsigmoid),
    ("relu-inplace", lambda h: F.relu(h, inplace=True), lambda: nn.ReLU(inplace=True)),
    ("tanh_", lambda h: h.tanh_(), nn.Tanh),
    ("leaky-inplace", lambda h: F.leaky_relu(h, 0.1, inplace=True),
     lambda: nn.LeakyReLU(0.1, inplace=True)),
    ("x*sigmoid(x)", lambda h: h * torch.sigmoid(h), nn.SiLU),
]


@pytest.mark.parametrize("name,fn,make", CASES, ids=[c[0] for c in CASES])
def test_functional_mlp_table_equals_module_mlp(name, fn, make):
    torch.manual_seed(0)
    fmodel = FnMLP([12, 16, 16, 4], fn).double()
    mmodel = ModMLP(fmodel.fcs, make).double()
    x, y = _data()
    x = 3 * x  # entries far into the saturated / negative sides
    a, b = _table(fmodel, x, y), _table(mmodel, x, y)
    assert a.quantity.str.startswith(ACT_Q).sum() > 0
    tol = 1e-9 if name == "x*sigmoid(x)" else 1e-12  # silu(x) vs x * sigmoid(x): rounding
    _same(a, b, tol)
    acts = set(a.quantity[a.quantity.str.startswith(ACT_Q)])
    assert "act_std" in acts and "dead_frac" in acts


class TutorialNet(nn.Module):
    """The PyTorch 60-minute blitz CNN (smaller), activations applied in forward."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3)
        self.conv2 = nn.Conv2d(4, 6, 3)
        self.fc1 = nn.Linear(6 * 2 * 2, 12)
        self.fc2 = nn.Linear(12, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        return self.fc2(x)


class TutorialMod(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.conv1, self.conv2, self.fc1, self.fc2 = net.conv1, net.conv2, net.fc1, net.fc2
        self.r1, self.r2, self.r3 = nn.ReLU(), nn.ReLU(), nn.ReLU()
        self.pool = nn.MaxPool2d(2)

    def forward(self, x):
        x = self.pool(self.r1(self.conv1(x)))
        x = self.pool(self.r2(self.conv2(x)))
        return self.fc2(self.r3(self.fc1(torch.flatten(x, 1))))


def test_tutorial_cnn_functional_equals_modules():
    torch.manual_seed(1)
    net = TutorialNet().double()
    g = torch.Generator().manual_seed(2)
    x = torch.randn(8, 1, 14, 14, generator=g, dtype=torch.float64)
    y = torch.randint(0, 10, (8,), generator=g)
    a, b = _table(net, x, y), _table(TutorialMod(net), x, y)
    _same(a, b)
    for layer in (1, 2, 3):
        q = set(a.quantity[a.layer == layer])
        assert {"act_mean", "act_std", "dead_frac", "inactive_frac"} <= q
    assert not a.quantity[a.layer == 4].str.startswith(ACT_Q).any()  # the head: none


class BnNet(nn.Module):
    """conv -> BatchNorm -> F.relu (in place), a flatten and F.relu on a view of the output."""

    def __init__(self, modules: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.fc = nn.Linear(3 * 16, 8)
        self.head = nn.Linear(2 * 8, 3)
        self.modules_ = modules
        self.r1, self.r2 = nn.ReLU(inplace=True), nn.Tanh()

    def forward(self, x):
        h = self.bn(self.conv(x))
        h = self.r1(h) if self.modules_ else F.relu(h, inplace=True)
        h = self.fc(h.flatten(1))
        h = h.view(-1, 2, 8)  # a view of all of the output
        h = self.r2(h) if self.modules_ else torch.tanh(h)
        return self.head(h.reshape(-1, 16))


def test_norm_inplace_and_view_functional_equals_modules():
    torch.manual_seed(3)
    fnet = BnNet().double()
    mnet = BnNet(True).double()
    mnet.load_state_dict(fnet.state_dict())
    g = torch.Generator().manual_seed(4)
    x = torch.randn(8, 2, 4, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (4,), generator=g)
    a, b = _table(fnet, x, y), _table(mnet, x, y)
    _same(a, b)
    assert {"act_std", "dead_frac"} <= set(a.quantity[a.layer == 1])
    assert {"act_std", "saturated_frac", "dead_frac"} <= set(a.quantity[a.layer == 2])
    # pre_* is the pre-activation (the in-place ReLU overwrote it after it was measured)
    with torch.no_grad():
        pre = fnet.conv(x)
        s = fnet.bn(pre)
    assert a.value[(a.layer == 1) & (a.quantity == "pre_mean")].item() == pytest.approx(
        float(pre.mean()), rel=1e-12)
    assert a.value[(a.layer == 1) & (a.quantity == "act_mean")].item() == pytest.approx(
        float(F.relu(s).mean()), rel=1e-12)


class Twice(nn.Module):
    """One layer called twice, each call through its own functional activation."""

    def __init__(self, second=torch.tanh):
        super().__init__()
        self.fc = nn.Linear(6, 6)
        self.head = nn.Linear(6, 2)
        self.second = second

    def forward(self, x):
        return self.head(self.second(self.fc(torch.tanh(self.fc(x)))))


def test_layer_called_twice_pools_and_mixed_kinds_get_no_rows():
    torch.manual_seed(5)
    x, y = _data(32, 6, 2, seed=6)
    m = Twice().double()
    t = _table(m, x, y)
    h1 = torch.tanh(m.fc(x))
    both = torch.cat([h1, torch.tanh(m.fc(h1))]).detach()
    got = t.set_index(["layer", "quantity"]).value
    assert got[(1, "act_mean")] == pytest.approx(float(both.mean()), rel=1e-12)
    assert got[(1, "act_std")] == pytest.approx(float(both.std(unbiased=False)), rel=1e-12)
    mixed = _table(Twice(F.relu).double(), x, y)
    assert not mixed.quantity[mixed.layer == 1].str.startswith(ACT_Q).any()


class Used(nn.Module):
    """Activations that are not the layer's: its output changed in place first, a sigmoid
    gating another tensor, and the layer's output also used elsewhere (rows: it has a ReLU)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(5, 5)
        self.b = nn.Linear(5, 5)
        self.c = nn.Linear(5, 5)
        self.head = nn.Linear(5, 2)

    def forward(self, x):
        h = self.a(x)
        h += 1.0  # changed in place before the ReLU: no follower
        h = F.relu(h)
        g = self.b(h)
        h = h * torch.sigmoid(g)  # a gate: sigmoid of b gating h
        k = self.c(h)
        return self.head(F.relu(k) + k)  # k also used elsewhere: still its ReLU


def test_not_the_layers_activation_gets_no_rows():
    torch.manual_seed(7)
    x, y = _data(16, 5, 2, seed=8)
    t = _table(Used().double(), x, y)
    has = {i: t.quantity[t.layer == i].str.startswith(ACT_Q).any() for i in (1, 2, 3, 4)}
    assert has == {1: False, 2: True, 3: True, 4: False}
    # the gate's sigmoid is b's activation (its output is not multiplied with b's output)
    assert "saturated_frac" in set(t.quantity[t.layer == 2])


def test_no_grad_part_has_no_functional_rows_and_nothing_breaks():
    class Frozen(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 4)
            self.b = nn.Linear(4, 2)

        def forward(self, x):
            with torch.no_grad():
                h = F.relu(self.a(x))
            return self.b(F.relu(h))

    torch.manual_seed(9)
    x, y = _data(8, 4, 2, seed=1)
    t = _table(Frozen().double(), x, y)
    assert not t.quantity[t.layer == 1].str.startswith(ACT_Q).any()
    assert {"pre_std", "weight_std"} <= set(t.quantity[t.layer == 1])


def _train(model, x, y, watch_every=None, steps=6):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    w = dlt.Watch(model, every=watch_every) if watch_every else None
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        if w is not None:
            w.step(loss)
        opt.step()
        losses.append(loss.item())
    if w is not None:
        w.close()
    return losses, w


def test_watch_rows_on_recorded_steps_equal_modules_and_training_unchanged():
    torch.manual_seed(10)
    x, y = _data(32, 12, 4, seed=11, dtype=torch.float32)
    base = FnMLP([12, 16, 16, 4], F.relu)
    state = {k: v.clone() for k, v in base.state_dict().items()}

    def fresh_fn():
        m = FnMLP([12, 16, 16, 4], F.relu)
        m.load_state_dict(state)
        return m

    def fresh_mod():
        m = fresh_fn()
        return ModMLP(m.fcs, nn.ReLU)

    plain_model = fresh_fn()
    plain, _ = _train(plain_model, x, y)
    fmodel = fresh_fn()
    watched, wf = _train(fmodel, x, y, watch_every=2)
    assert watched == plain  # bit-identical losses
    for p, q in zip(plain_model.parameters(), fmodel.parameters()):
        assert torch.equal(p, q)
    mmodel = fresh_mod()
    _, wm = _train(mmodel, x, y, watch_every=2)
    a = wf.frame().sort_values(["step", "layer", "quantity"]).reset_index(drop=True)
    b = wm.frame().sort_values(["step", "layer", "quantity"]).reset_index(drop=True)
    assert sorted(a.step.unique()) == [0, 2, 4]
    assert (a.quantity == "dead_frac").sum() == 3 * 2  # 2 hidden layers x 3 records
    assert list(zip(a.step, a.layer, a.quantity)) == list(zip(b.step, b.layer, b.quantity))
    # float32 sums; the recorded steps after the first take the fused ReLU pass in both
    np.testing.assert_allclose(a.value, b.value, rtol=1e-6, atol=1e-9)


def test_doctor_finds_dead_units_of_a_functional_relu_mlp():
    """The torch doctor on an F.relu MLP at a learning rate that kills its units: the same
    dead-units finding and evidence as the same MLP built from nn.ReLU (the probe's own rows
    now; the doctor's value-matching fallback, functional_act_rows, finds them present)."""
    ds = load_dataset("digits", seed=0)
    x, y = ds.x_train[:600].astype(np.float32), ds.y_train[:600]

    def make_fn():
        torch.manual_seed(0)
        m = FnMLP([64, 64, 64, 10], F.relu)
        for fc in m.fcs:
            nn.init.kaiming_normal_(fc.weight, nonlinearity="relu")
            nn.init.zeros_(fc.bias)
        return m

    def make_mod():
        return ModMLP(make_fn().fcs, nn.ReLU)

    found = []
    for make in (make_fn, make_mod):
        d = dlt.doctor(make, (x, y), optimizer=("sgd", {"lr": 3.0}), steps=60, batch_size=32,
                       verify=False, probe_every=20)
        f = d.finding("dead_relu")
        assert f is not None, str(d)
        found.append((sorted(g.kind for g in d.findings), f.evidence["metric"]))
    assert found[0][0] == found[1][0]
    assert found[0][1] == pytest.approx(found[1][1], rel=1e-6) and found[0][1] > 0.3


class PredNet(nn.Module):
    """conv -> BatchNorm -> F.relu (optionally in place) -> conv -> tanh/gelu -> flatten -> fc,
    or the same with activation modules."""

    def __init__(self, modules=False, inplace=False, act="tanh"):
        super().__init__()
        self.c1 = nn.Conv2d(2, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.c2 = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 36, 3)
        self.modules_, self.inplace, self.act = modules, inplace, act
        self.r = nn.ReLU(inplace=inplace)
        self.t = nn.Tanh() if act == "tanh" else nn.GELU()

    def forward(self, x):
        h = self.bn(self.c1(x))
        h = self.r(h) if self.modules_ else F.relu(h, inplace=self.inplace)
        h = self.c2(h)
        if self.modules_:
            h = self.t(h)
        else:
            h = torch.tanh(h) if self.act == "tanh" else F.gelu(h)
        return self.fc(h.flatten(1))


@pytest.mark.parametrize("kw", [{}, {"inplace": True}, {"act": "gelu"}],
                         ids=["relu-tanh", "inplace-relu", "gelu"])
def test_predict_covers_a_chain_with_functional_activations(kw):
    """dlt.predict refused ('it is computed by the torch operation 'Relu' ..., not by a
    module'); it gives the module model's theory now."""
    torch.manual_seed(12)
    f = PredNet(**kw).double()
    m = PredNet(modules=True, **kw).double()
    m.load_state_dict(f.state_dict())
    x = torch.randn(16, 2, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    a, b = dlt.predict(f, x), dlt.predict(m, x)
    assert list(zip(a.layer, a.quantity)) == list(zip(b.layer, b.quantity))
    np.testing.assert_allclose(a.predicted, b.predicted, rtol=1e-12)
    assert "act_std" in set(a.quantity[a.layer == 1])


def test_predict_functional_mlp_and_sigmoid_output():
    class S(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(5, 8), nn.Linear(8, 1)

        def forward(self, x):
            return torch.sigmoid(self.b(F.relu(self.a(x))))

    torch.manual_seed(13)
    s = S().double()
    seq = nn.Sequential(s.a, nn.ReLU(), s.b, nn.Sigmoid())
    x = torch.randn(32, 5, dtype=torch.float64)
    y = torch.randint(0, 2, (32, 1)).double()
    a, b = dlt.predict(s, x, y, nn.BCELoss()), dlt.predict(seq, x, y, nn.BCELoss())
    np.testing.assert_allclose(a.predicted, b.predicted, rtol=1e-12)
    # an activation that is not the layer's output's (a sum in between) is still refused
    class Sum(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(5, 5), nn.Linear(5, 2)

        def forward(self, x):
            h = self.a(x)
            return self.b(F.relu(h + 1.0))

    with pytest.raises(ValueError, match="chain of layers"):
        dlt.predict(Sum().double(), x)
