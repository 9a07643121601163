"""Round 28 hunt of the torch doctor (dlt.doctor, its cures, `depthlab doctor --torch`)."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from depthlab.torch import prescriptions as rx  # noqa: E402
from depthlab.torch.train import TorchTrainSpec  # noqa: E402


class _PooledConvs(nn.Module):
    """Six convolutions, each followed by an activation function the forward applies itself;
    a max pooling after every second one (a common functional CNN)."""

    def __init__(self, act) -> None:
        super().__init__()
        self.act = act
        self.cs = nn.ModuleList([nn.Conv2d(1 if i == 0 else 8, 8, 3, padding=1)
                                 for i in range(6)])
        self.o = nn.Linear(8, 10)
        for c in self.cs:
            nn.init.normal_(c.weight, 0.0, 0.05)

    def forward(self, x):
        for i, c in enumerate(self.cs):
            x = self.act(c(x))
            if i % 2:
                x = F.max_pool2d(x, 2)
        return self.o(x.flatten(1))


@pytest.mark.parametrize(("act", "expected"), [
    (lambda t: F.leaky_relu(t, 0.2), nn.LeakyReLU(0.2)),
    (F.leaky_relu, nn.LeakyReLU()),
    (lambda t: F.elu(t, 0.5), nn.ELU(0.5)),
    (lambda t: F.celu(t, 2.0), nn.CELU(2.0)),
    (lambda t: F.softplus(t, beta=2.0), nn.Softplus(beta=2.0)),
])
def test_a_parametrized_activation_function_before_a_max_pooling_is_recognized(act, expected):
    # F.max_pool2d(F.leaky_relu(conv(x), 0.2), 2): the pooled layers had no activation (the
    # pooled activation was searched among fixed candidates only), so the batch-norm cure
    # followed 3 of the 6 hidden convolutions and the matched init gave them Glorot
    torch.manual_seed(0)
    model = _PooledConvs(act)
    x = torch.randn(64, 1, 8, 8)
    traced = rx.trace(model, x)
    assert [t.name for t in traced][:6] == [f"cs.{i}" for i in range(6)]
    for t in traced[:6]:
        assert repr(t.activation) == repr(expected), t.name
        assert t.functional
    assert traced[6].activation is None  # the output layer


def test_the_cures_reach_every_layer_of_a_pooled_functional_leaky_relu_cnn():
    x = torch.randn(64, 1, 8, 8)
    torch.manual_seed(0)
    model, _ = rx.apply({"normalization": "batchnorm"},
                        _PooledConvs(lambda t: F.leaky_relu(t, 0.2)), TorchTrainSpec(), x)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 6
    torch.manual_seed(0)
    model, _ = rx.apply({"init": "matched"}, _PooledConvs(lambda t: F.leaky_relu(t, 0.2)),
                        TorchTrainSpec(), x)
    for c in model.cs:  # He for a leaky ReLU of slope 0.2: 2 / ((1 + 0.2^2) fan_in)
        want = math.sqrt(2.0 / (1.04 * c.weight[0].numel()))
        assert float(c.weight.std()) == pytest.approx(want, rel=0.12)


class _AvgPooledConvs(nn.Module):
    """LeNet-style: each convolution's activation applied by the forward, then an average
    pooling (``F.avg_pool2d(torch.tanh(self.conv(x)), 2)``)."""

    def __init__(self, act) -> None:
        super().__init__()
        self.act = act
        self.c1 = nn.Conv2d(1, 6, 3, padding=1)
        self.c2 = nn.Conv2d(6, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 2 * 2, 16)
        self.o = nn.Linear(16, 10)

    def forward(self, x):
        x = F.avg_pool2d(self.act(self.c1(x)), 2)
        x = F.adaptive_avg_pool2d(self.act(self.c2(x)), 2)
        return self.o(self.act(self.fc(x.flatten(1))))


@pytest.mark.parametrize(("act", "expected"), [
    (F.relu, nn.ReLU()), (torch.tanh, nn.Tanh()), (lambda t: t.sigmoid(), nn.Sigmoid()),
    (lambda t: F.leaky_relu(t, 0.1), nn.LeakyReLU(0.1)),
])
def test_an_activation_function_before_an_average_pooling_is_recognized(act, expected):
    # a pooled mean is no entry of f(s): the convolutions were judged linear (Glorot as the
    # matched init for ReLU units, no batch norm after them)
    torch.manual_seed(0)
    model = _AvgPooledConvs(act)
    traced = rx.trace(model, torch.randn(32, 1, 8, 8))
    assert [(t.name, repr(t.activation)) for t in traced] == [
        ("c1", repr(expected)), ("c2", repr(expected)), ("fc", repr(expected)), ("o", "None")]
    torch.manual_seed(0)
    model, _ = rx.apply({"normalization": "batchnorm"}, _AvgPooledConvs(act),
                        TorchTrainSpec(), torch.randn(32, 1, 8, 8))
    assert sum(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) for m in model.modules()) == 3


@pytest.mark.parametrize("data", ["digits", "house.csv"])
def test_data_given_by_name_says_how_to_load_it(data):
    # the command line takes --data NAME_OR_PATH; the API refused a name by its type alone
    import depthlab.torch as dlt

    with pytest.raises(TypeError) as e:
        dlt.doctor(lambda: nn.Linear(64, 10), data, steps=1, verify=False)
    said = str(e.value)
    assert "\n" not in said and f"depthlab.data.load_dataset({data!r})" in said, said


class _SqueezeExcite(nn.Module):
    """A conv whose channels a squeeze-excitation gate scales: ``x * torch.sigmoid(fc2(...))``."""

    def __init__(self) -> None:
        super().__init__()
        self.c, self.a = nn.Conv2d(1, 8, 3, padding=1), nn.ReLU()
        self.f1, self.f2 = nn.Linear(8, 4), nn.Linear(4, 8)
        self.c2, self.a2, self.o = nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Linear(8, 10)

    def forward(self, x):
        x = self.a(self.c(x))
        g = torch.sigmoid(self.f2(F.relu(self.f1(F.adaptive_avg_pool2d(x, 1).flatten(1)))))
        return self.o(self.a2(self.c2(x * g[:, :, None, None])).mean((2, 3)))


def test_a_gate_applied_by_the_forward_is_no_activation_of_its_layer():
    # the activation function applied to a layer's output is its activation only where the
    # next layer's input can be a pooling of it: a gate's product is not (f2 stays without one)
    torch.manual_seed(0)
    traced = rx.trace(_SqueezeExcite(), torch.randn(16, 1, 8, 8))
    assert [(t.name, t.activation_name) for t in traced] == [
        ("c", "relu"), ("f1", "relu"), ("f2", None), ("c2", "relu"), ("o", None)]


class _NoGradBackbone(nn.Module):
    """A fixed feature extractor run under torch.no_grad() in the forward (its weights still
    require grad) and a trained head."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                                      nn.Linear(64, 64), nn.ReLU())
        self.head = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        with torch.no_grad():
            h = self.backbone(x)
        return self.head(h)


def test_layers_run_under_no_grad_do_not_hide_a_too_high_learning_rate():
    # their update ratio was 0 at every step (the backward never reaches them), so three
    # backbone layers held lr_too_high's median over layers at 0 at Adam lr 0.3, which the
    # same model with requires_grad=False backbone gets (lr 0.03: 1.40 -> 0.23, 100 steps)
    import depthlab.torch as dlt

    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 64, generator=g)
    y = (x @ torch.randn(64, 10, generator=g)).argmax(1)
    d = dlt.doctor(_NoGradBackbone, (x, y), optimizer=("adam", {"lr": 0.3}), steps=20,
                   probe_every=10, verify=False)
    assert "lr_too_high" in [f.kind for f in d.findings]
    ratios = d.probes[d.probes["quantity"] == "update_ratio"]
    assert sorted(ratios["module"].unique()) == ["head.0", "head.2"]


class _OwnSwish(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(x)


class _OwnGELU(nn.Module):  # a transformer library's tanh-approximated GELU class
    def forward(self, x):
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


class _OwnSigmoid(nn.Module):
    def forward(self, x):
        return torch.sigmoid(x)


@pytest.mark.parametrize(("cls", "name"), [(_OwnSwish, "swish"), (_OwnGELU, "gelu"),
                                           (_OwnSigmoid, "sigmoid")])
def test_an_activation_module_of_the_models_own_class_is_recognized(cls, name):
    # nn.Sequential(Linear, Swish(), ...) with Swish a class of the user's: no activation, the
    # layers judged linear, no init judgement, no batch norm cure ('no Linear/Conv layer
    # followed by an activation'); a deep N(0, 1) sigmoid net of them had no finding at all
    def make():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(8, 16), cls(), nn.Linear(16, 16), cls(),
                             nn.Linear(16, 3))

    x = torch.randn(32, 8)
    traced = rx.trace(make(), x)
    assert [t.activation_name for t in traced] == [name, name, None]
    model, _ = rx.apply({"normalization": "batchnorm"}, make(), TorchTrainSpec(), x)
    assert sum(isinstance(m, nn.BatchNorm1d) for m in model.modules()) == 2
    assert model(x).shape == (32, 3)
