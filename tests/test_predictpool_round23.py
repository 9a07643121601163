"""dlt.predict on models whose forward pools and reshapes with functions (issue 8, round 23).

The PyTorch tutorial CNN (``F.max_pool2d(F.relu(self.conv1(x)), 2)``, ``torch.flatten``) was
refused ('computed by the torch operation MaxPool2DWithIndices', or 'View' where a flatten
followed an unmodelled operation). A pooling function is now modelled as the module that
computes the same (same Between: the predictions equal the module twin's bit for bit), a
reshape as a Flatten; anything else between two layers is still refused by name."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import depthlab.torch as dlt
from depthlab.torch.predict import theory_rows

CE = nn.CrossEntropyLoss()


class TutorialNet(nn.Module):
    """The PyTorch 60-minute blitz CNN, pooling and activations applied in forward."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


def _twin(net: TutorialNet) -> nn.Sequential:
    """The same layers (shared weights) with pooling, activations and the flatten as modules."""
    return nn.Sequential(net.conv1, nn.ReLU(), nn.MaxPool2d(2), net.conv2, nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), net.fc1, nn.ReLU(), net.fc2, nn.ReLU(),
                         net.fc3)


def _data(shape, classes=10, n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, *shape, generator=g, dtype=torch.float64),
            torch.randint(0, classes, (n,), generator=g))


def test_tutorial_cnn_is_predicted_as_its_module_twin():
    torch.manual_seed(0)
    net = TutorialNet().double()
    x, y = _data((3, 32, 32))
    a = dlt.predict(net, x, y, CE)
    b = dlt.predict(_twin(net), x, y, CE)
    assert list(a.layer) == list(b.layer) and a.layer.nunique() == 5
    assert np.array_equal(a.predicted.to_numpy(), b.predicted.to_numpy())
    np.testing.assert_allclose(a.value, b.value, rtol=1e-12)  # the same function measured
    assert set(a.quantity[a.layer < 5]) == {"pre_std", "act_std", "grad_pre_std"}
    assert "F.max_pool2d" in a.attrs["approximation"]
    # the first conv reads x itself: its prediction is unaffected by the pools (exact theory)
    first = a[a.layer == 1].set_index("quantity")
    np.testing.assert_allclose(first.predicted[["pre_std", "act_std"]],
                               first.value[["pre_std", "act_std"]], rtol=0.02)


class _Fn(nn.Module):
    """conv -> act -> pool -> conv -> act -> pool -> reshape -> linear -> act -> linear, the
    pooling, activation and reshape given as functions."""

    def __init__(self, conv, pool, act, reshape, n_flat):
        super().__init__()
        self.c1, self.c2 = conv(2, 6, 3), conv(6, 6, 3)
        self.fc, self.head = nn.Linear(n_flat, 12), nn.Linear(12, 4)
        self.pool, self.act, self.reshape = pool, act, reshape

    def forward(self, x):
        h = self.pool(self.act(self.c1(x)))
        h = self.pool(self.act(self.c2(h)))
        return self.head(self.act(self.fc(self.reshape(h))))


def _mod(f: _Fn, pool: nn.Module, act: nn.Module) -> nn.Sequential:
    c = copy.deepcopy
    return nn.Sequential(f.c1, c(act), c(pool), f.c2, c(act), c(pool), nn.Flatten(), f.fc,
                         c(act), f.head)


_C = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_SIZE = {1: 20, 2: 12, 3: 10}


@pytest.mark.parametrize("d, fpool, mpool, fact, mact, reshape", [
    (2, lambda h: F.max_pool2d(h, 2), nn.MaxPool2d(2), F.relu, nn.ReLU(),
     lambda h: torch.flatten(h, 1)),
    (2, lambda h: F.max_pool2d(h, 2, return_indices=True)[0], nn.MaxPool2d(2), torch.tanh,
     nn.Tanh(), lambda h: h.view(h.size(0), -1)),
    (2, lambda h: F.max_pool2d(h, 3, stride=2, padding=1), nn.MaxPool2d(3, 2, 1), F.gelu,
     nn.GELU(), lambda h: h.reshape(h.shape[0], -1)),
    (2, lambda h: torch.max_pool2d(h, 2), nn.MaxPool2d(2), F.relu, nn.ReLU(),
     lambda h: h.flatten(1)),
    (2, lambda h: F.avg_pool2d(h, 2), nn.AvgPool2d(2), F.relu, nn.ReLU(),
     lambda h: h.flatten(1)),
    (2, lambda h: F.avg_pool2d(h, 3, 2, 1, count_include_pad=False),
     nn.AvgPool2d(3, 2, 1, count_include_pad=False), F.silu, nn.SiLU(),
     lambda h: torch.flatten(h, 1)),
    (2, lambda h: F.adaptive_avg_pool2d(h, 3), nn.AdaptiveAvgPool2d(3), F.relu, nn.ReLU(),
     lambda h: h.contiguous().view(len(h), -1)),
    (2, lambda h: F.adaptive_max_pool2d(h, (4, 3)), nn.AdaptiveMaxPool2d((4, 3)),
     torch.sigmoid, nn.Sigmoid(), lambda h: torch.flatten(h, 1)),
    (1, lambda h: F.max_pool1d(h, 2), nn.MaxPool1d(2), F.relu, nn.ReLU(),
     lambda h: torch.flatten(h, 1)),
    (1, lambda h: F.avg_pool1d(h, 2), nn.AvgPool1d(2), F.leaky_relu, nn.LeakyReLU(),
     lambda h: torch.flatten(h, 1)),
    (1, lambda h: F.adaptive_max_pool1d(h, 3), nn.AdaptiveMaxPool1d(3), F.relu, nn.ReLU(),
     lambda h: torch.flatten(h, 1)),
    (1, lambda h: F.adaptive_avg_pool1d(h, 3), nn.AdaptiveAvgPool1d(3), F.relu, nn.ReLU(),
     lambda h: torch.flatten(h, 1)),
    (3, lambda h: F.max_pool3d(h, 2), nn.MaxPool3d(2), F.relu, nn.ReLU(),
     lambda h: torch.flatten(h, 1)),
    (3, lambda h: F.adaptive_avg_pool3d(h, 4), nn.AdaptiveAvgPool3d(4), F.relu, nn.ReLU(),
     lambda h: torch.flatten(h, 1)),
])
def test_each_pooling_function_equals_its_module(d, fpool, mpool, fact, mact, reshape):
    torch.manual_seed(d)
    with torch.no_grad():
        probe = mpool(_C[d](6, 6, 3)(mpool(_C[d](2, 6, 3)(torch.zeros(1, 2, *[_SIZE[d]] * d)))))
    f = _Fn(_C[d], fpool, fact, reshape, probe.numel()).double()
    x, _ = _data((2, *[_SIZE[d]] * d), classes=4, n=12, seed=d)
    a = dlt.predict(f, x)  # (the theory alone: the measurement's twin is checked above)
    b = dlt.predict(_mod(f, mpool, mact), x)
    assert np.array_equal(a.predicted.to_numpy(), b.predicted.to_numpy())
    assert a.layer.nunique() == 4 and np.isfinite(a.predicted).all()


def test_functional_and_module_pieces_mix():
    """A module activation before a pooling function, a functional activation before a
    pooling module, a non-contiguous reshape (a copy) after a permute: all link up."""

    class Mixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.c2 = nn.Conv2d(2, 6, 3), nn.Conv2d(6, 6, 3)
            self.r, self.pool = nn.ReLU(), nn.AvgPool2d(2)
            self.fc = nn.Linear(6 * 2 * 2, 4)

        def forward(self, x):
            h = F.max_pool2d(self.r(self.c1(x)), 2)
            h = self.pool(torch.tanh(self.c2(h)))
            return self.fc(h.permute(0, 2, 3, 1).reshape(len(h), -1))

    torch.manual_seed(3)
    m = Mixed().double()
    x, y = _data((2, 14, 14), classes=4, n=12)
    df = dlt.predict(m, x, y, CE)
    assert df.layer.nunique() == 3 and np.isfinite(df.predicted).all()
    assert {"act_std"} <= set(df.quantity[df.layer == 2])
    twin = nn.Sequential(m.c1, nn.ReLU(), nn.MaxPool2d(2), m.c2, nn.Tanh(), nn.AvgPool2d(2))
    with torch.no_grad():
        fc = nn.Linear(24, 4).double()  # the permute reorders fc's inputs: same columns
        perm = torch.arange(24).reshape(6, 2, 2).permute(1, 2, 0).reshape(-1)
        fc.weight.copy_(m.fc.weight[:, torch.argsort(perm)])
        fc.bias.copy_(m.fc.bias)
    ref = dlt.predict(nn.Sequential(*twin, nn.Flatten(), fc), x, y, CE)
    np.testing.assert_allclose(df.value, ref.value, rtol=1e-10)
    np.testing.assert_allclose(df.predicted, ref.predicted, rtol=1e-10)


class _Iid(nn.Module):
    """test_torch_pooling's independent-positions case (a 1x1 conv of i.i.d. positions), the
    pooling and the activation as functions: the theory's assumption holds."""

    def __init__(self, pool, out_hw):
        super().__init__()
        self.conv = nn.Conv2d(32, 256, 1)
        self.fc = nn.Linear(256 * out_hw * out_hw, 512)
        self.head = nn.Linear(512, 10)
        self.pool = pool

    def forward(self, x):
        h = self.pool(F.relu(self.conv(x)))
        return self.head(torch.tanh(self.fc(h.view(h.shape[0], -1))))


@pytest.mark.parametrize("pool, out_hw", [
    (lambda h: F.max_pool2d(h, 3, stride=2, padding=1), 4),
    (lambda h: F.avg_pool2d(h, 2), 4),
    (lambda h: F.adaptive_max_pool2d(h, 3), 3),
])
def test_functional_pooling_of_independent_positions_matches_the_measurement(pool, out_hw):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 32, 8, 8, generator=g)
    y = torch.randint(0, 10, (64,), generator=g)
    df = dlt.predict(_Iid(pool, out_hw), x, y, CE)

    def ratios(d, q):
        d = d[d.quantity == q]
        return (d.predicted / d.value).to_numpy()

    np.testing.assert_allclose(ratios(df[df.layer < 3], "pre_std"), 1.0, rtol=0.06)
    np.testing.assert_allclose(ratios(df, "grad_pre_std"), 1.0, rtol=0.08)


def test_theory_rows_and_watch_show_theory_for_the_tutorial_cnn():
    torch.manual_seed(0)
    net = TutorialNet()
    x, y = _data((3, 32, 32), n=8)
    x = x.float()
    rows, note = theory_rows(net, x)
    assert rows is not None and len(rows) == 5, note
    assert "F.max_pool2d" in note
    watch = dlt.Watch(net, every=1)
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    opt.zero_grad()
    loss = CE(net(x), y)
    loss.backward()
    watch.step(loss)
    opt.step()
    watch.close()
    assert watch.theory is not None and len(watch.theory) == 5, watch.theory_note


class _PoolThenAct(nn.Module):
    """conv -> [BatchNorm] -> max pool -> activation (pytorch/examples' 2018 MNIST net:
    F.relu(F.max_pool2d(self.conv1(x), 2))); ``first=True``: the activation before the pool."""

    def __init__(self, pool, act, bn=False, first=False, src=None):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(2, 8, 3), nn.Conv2d(8, 8, 3)
        self.fc = nn.Linear(8 * 2 * 2, 4)
        self.bn = nn.BatchNorm2d(8) if bn else nn.Identity()
        if src is not None:
            self.c1, self.c2, self.fc, self.bn = src.c1, src.c2, src.fc, src.bn
        self.pool, self.act, self.first = pool, act, first

    def forward(self, x):
        for conv in (lambda h: self.bn(self.c1(h)), self.c2):
            x = self.pool(self.act(conv(x))) if self.first else self.act(self.pool(conv(x)))
        return self.fc(torch.flatten(x, 1))


@pytest.mark.parametrize("pool, act, bn", [
    (lambda h: F.max_pool2d(h, 2), F.relu, False),
    (lambda h: F.max_pool2d(h, 2), torch.tanh, False),
    (nn.MaxPool2d(2), nn.ReLU(), False),  # as modules (refused before as well)
    (lambda h: F.max_pool2d(h, 2), F.relu, True),
    (nn.MaxPool2d(2), nn.ELU(), True),
])
def test_a_monotone_activation_after_max_pooling_is_the_pool_of_the_activation(pool, act, bn):
    """f(max(s)) = max(f(s)) for a non-decreasing f, gradient included: the prediction is that
    of the activation before the pool, without act_std rows (no tensor holds f(s))."""
    torch.manual_seed(0)
    a = _PoolThenAct(pool, act, bn).double()
    b = _PoolThenAct(pool, act, bn, first=True, src=a)
    x, y = _data((2, 14, 14), classes=4, n=16)
    pa, pb = dlt.predict(a, x, y, CE), dlt.predict(b, x, y, CE)
    assert "act_std" not in set(pa.quantity) and "act_std" in set(pb.quantity)
    pb = pb[pb.quantity != "act_std"].reset_index(drop=True)
    assert list(pa.quantity) == list(pb.quantity)
    assert np.array_equal(pa.predicted.to_numpy(), pb.predicted.to_numpy())
    np.testing.assert_allclose(pa.value, pb.value, rtol=1e-12)


def test_functional_dropout_equals_the_dropout_module():
    """F.dropout(h, p, training=True) is modelled as nn.Dropout(p) (E[a^2] / (1 - p)); with
    training=False it is the values themselves."""

    class Drop(nn.Module):
        def __init__(self, fn):
            super().__init__()
            self.a, self.b, self.c = nn.Linear(16, 64), nn.Linear(64, 64), nn.Linear(64, 3)
            self.fn = fn

        def forward(self, x):
            return self.c(self.fn(torch.tanh(self.b(self.fn(F.relu(self.a(x)))))))

    torch.manual_seed(0)
    x, y = _data((16,), classes=3, n=32)
    f = Drop(lambda h: F.dropout(h, 0.3, training=True)).double()
    twin = nn.Sequential(f.a, nn.ReLU(), nn.Dropout(0.3), f.b, nn.Tanh(), nn.Dropout(0.3), f.c)
    assert np.array_equal(dlt.predict(f, x).predicted, dlt.predict(twin, x).predicted)
    off = Drop(lambda h: F.dropout(h, 0.3, training=False))
    off.load_state_dict(f.state_dict())
    plain = nn.Sequential(f.a, nn.ReLU(), f.b, nn.Tanh(), f.c)
    assert np.array_equal(dlt.predict(off.double(), x).predicted,
                          dlt.predict(plain, x).predicted)
    assert not np.array_equal(dlt.predict(f, x).predicted, dlt.predict(plain, x).predicted)


class _Global(nn.Module):
    def __init__(self, reduce):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 16, 3, padding=1)
        self.fc, self.reduce = nn.Linear(16, 5), reduce

    def forward(self, x):
        return self.fc(self.reduce(F.relu(self.c2(F.relu(self.c1(x))))))


@pytest.mark.parametrize("reduce, twin", [
    (lambda h: h.mean((2, 3)), nn.AdaptiveAvgPool2d(1)),  # torchvision's ShuffleNetV2
    (lambda h: torch.mean(h, dim=[-1, -2]), nn.AdaptiveAvgPool2d(1)),
    (lambda h: h.mean((2, 3), keepdim=True).flatten(1), nn.AdaptiveAvgPool2d(1)),
    (lambda h: h.mean(-1).mean(-1), nn.AdaptiveAvgPool2d(1)),
    (lambda h: h.amax((2, 3)), nn.AdaptiveMaxPool2d(1)),
])
def test_global_pooling_by_a_mean_over_the_positions(reduce, twin):
    torch.manual_seed(0)
    g = _Global(reduce).double()
    x, y = _data((3, 8, 8), classes=5, n=16)
    mod = nn.Sequential(g.c1, nn.ReLU(), g.c2, nn.ReLU(), twin, nn.Flatten(), g.fc)
    a, b = dlt.predict(g, x, y, CE), dlt.predict(mod, x, y, CE)
    assert np.array_equal(a.predicted.to_numpy(), b.predicted.to_numpy())
    np.testing.assert_allclose(a.value, b.value, rtol=1e-12)


def test_a_mean_over_the_channels_is_not_pooling():
    g = _Global(lambda h: h.mean(1).flatten(1)[:, :16])
    with pytest.raises(ValueError, match="not the previous layer's output"):
        dlt.predict(g, torch.randn(4, 3, 8, 8))


class _Pooled(nn.Module):
    def __init__(self, mid):
        super().__init__()
        self.c, self.f, self.mid = nn.Conv2d(2, 4, 3, padding=1), nn.Linear(16, 3), mid

    def forward(self, x):
        return self.f(torch.flatten(self.mid(self.c(x)), 1))


@pytest.mark.parametrize("mid, fragment", [
    (lambda h: F.lp_pool2d(F.relu(h), 2, 2), "the function F.lp_pool2d, which predict() "
                                             "has no theory for"),
    (lambda h: F.max_pool2d(F.relu(h), 2) * 2, "torch operation 'Mul'"),  # (not 'View')
    (lambda h: F.max_pool2d(F.relu(h) * 2, 2), "F.max_pool2d reads the result of the torch "
                                               "operation 'Mul'"),
    (lambda h: F.relu(F.avg_pool2d(h, 2)), "relu applied after the pooling 'AvgPool2D'"),
    (lambda h: F.gelu(F.max_pool2d(h, 2)), "gelu applied after the pooling"),  # not monotone
    (lambda h: F.relu(F.max_pool2d(F.dropout(h, 0.5), 2)), "relu applied after the pooling"),
    (lambda h: F.max_pool2d(F.alpha_dropout(F.relu(h), 0.5, training=True), 2),
     "the function F.alpha_dropout, which predict() has no theory for"),
])
def test_what_is_not_modelled_between_layers_is_refused_by_name(mid, fragment):
    with pytest.raises(ValueError, match="not the previous layer's output") as e:
        dlt.predict(_Pooled(mid), torch.randn(4, 2, 4, 4))
    assert fragment in str(e.value)
