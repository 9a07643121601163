"""Round 22 (watchspeed22): the record path of ``depthlab.torch.Watch`` made cheaper must give
the same rows as before. ``Recording.collect(rows=False)`` (what Watch calls) leaves the same
values and layout as ``rows=True`` without building the row list; the host path's inlined
one-call mean/std (``hooks._mean_std``) is ``pooled_mean_std`` to the bit; Watch's frame on the
compiled kernels' path matches the torch operations' path on an in-place ReLU Sequential, a
non-Sequential model and a model sharing one ReLU module; training stays bit-identical."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
from torch import nn

from depthlab.probes import accel
from depthlab.torch import Watch
from depthlab.torch.accumulators import Acc, pooled_mean_std
from depthlab.torch.hooks import Recording, _mean_std

pytestmark = pytest.mark.skipif(accel.kernels() is None,
                                reason="the host path needs the compiled kernels (Numba)")


def _acc(ns, cs, a, b) -> Acc:
    acc = Acc()
    acc.ns, acc.cs, acc.a, acc.b = list(ns), list(cs), list(a), list(b)
    return acc


def test_mean_std_is_pooled_mean_std_to_the_bit():
    rng = random.Random(22)
    cases = [((7,), (0.0,), (3.5,), (2.0,)),  # var > 0
             ((4,), (0.0,), (2.0,), (1.0,)),  # var exactly 0
             ((4,), (0.0,), (2.0,), (0.5,)),  # var < 0 by rounding: clipped to 0
             ((3,), (1.25,), (0.1,), (0.3,)),  # a shift c (cancellation path)
             ((5,), (0.0,), (math.inf,), (math.inf,)),  # overflow: std NaN
             ((5,), (0.0,), (math.nan,), (1.0,)),
             ((3, 5), (0.0, 0.5), (1.0, -2.0), (2.0, 3.0))]  # two calls: the pooled formula
    for _ in range(300):
        k = rng.choice((1, 1, 1, 2, 3))
        cases.append(([rng.randint(1, 10_000) for _ in range(k)],
                      [rng.choice((0.0, rng.uniform(-3, 3))) for _ in range(k)],
                      [rng.uniform(-1e3, 1e3) for _ in range(k)],
                      [rng.uniform(0, 1e3) for _ in range(k)]))
    for ns, cs, a, b in cases:
        got = _mean_std(_acc(ns, cs, a, b))
        want = pooled_mean_std(list(ns), list(cs), list(a), [v * v for v in b])
        for g, w in zip(got, want):
            assert (math.isnan(g) and math.isnan(w)) or g == w, (ns, cs, a, b, got, want)


def _models():
    class Net(nn.Module):  # not a Sequential: functional flow between modules
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.c = nn.Linear(6, 16), nn.Linear(16, 16), nn.Linear(16, 3)
            self.act = nn.ReLU()  # one ReLU module called twice

        def forward(self, x):
            return self.c(self.act(self.b(self.act(self.a(x)))))

    yield "inplace-sequential", lambda: nn.Sequential(
        nn.Linear(6, 16), nn.ReLU(inplace=True), nn.Linear(16, 16), nn.ReLU(inplace=True),
        nn.Linear(16, 3))
    yield "module", Net
    yield "tanh-and-relu", lambda: nn.Sequential(
        nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))


def _train(make, watch_kw, steps=6, numpy_path=False):
    torch.manual_seed(0)
    model = make()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    g = torch.Generator().manual_seed(1)
    w = Watch(model, theory=False, **watch_kw) if watch_kw is not None else None
    losses = []
    ctx = accel.numpy_only() if numpy_path else _nothing()
    with ctx:
        for _ in range(steps):
            x = torch.randn(24, 6, generator=g)
            y = torch.randint(0, 3, (24,), generator=g)
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            if w is not None:
                w.step(loss)
            opt.step()
            losses.append(loss.item())
        if w is not None:
            w.close()
    return model, losses, (w.frame() if w is not None else None)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.parametrize("name,make", list(_models()), ids=[n for n, _ in _models()])
@pytest.mark.parametrize("every", [1, 3])
def test_watch_rows_match_the_torch_operations_path(name, make, every):
    _, _, host = _train(make, {"every": every})
    _, _, ops = _train(make, {"every": every}, numpy_path=True)
    key = ["step", "layer", "module", "quantity"]
    assert host[key].equals(ops[key])
    assert {"pre_std", "act_std", "grad_pre_std", "weight_grad_std", "update_ratio",
            "dead_frac"} <= set(host["quantity"]) or name == "tanh-and-relu"
    np.testing.assert_allclose(host["value"].to_numpy(), ops["value"].to_numpy(),
                               rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("name,make", list(_models()), ids=[n for n, _ in _models()])
def test_training_is_bit_identical_with_and_without_watch(name, make):
    plain, losses0, _ = _train(make, None)
    watched, losses1, frame = _train(make, {"every": 1})
    assert losses0 == losses1 and len(frame)
    for p, q in zip(plain.parameters(), watched.parameters()):
        assert torch.equal(p, q)


@pytest.mark.parametrize("name,make", list(_models()), ids=[n for n, _ in _models()])
def test_collect_without_rows_leaves_the_same_values(name, make):
    torch.manual_seed(0)
    model = make()
    x, y = torch.randn(24, 6), torch.randint(0, 3, (24,))
    rec = Recording(model, ())
    rec.arm()
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    rec.disarm()
    extra = [(0, "", "loss", loss.detach())]
    rows = rec.collect(extra=extra)
    values, layout = list(rec.values), rec.layout
    assert rows == list(zip(*layout, values))
    assert rec.collect(extra=extra, rows=False) is None
    assert rec.values == values and rec.layout == layout
    with accel.numpy_only():  # the general (torch operations') path: the same contract
        rec._wk = None
        rows_g = rec.collect(extra=extra)
        values_g = list(rec.values)
        assert rec.collect(extra=extra, rows=False) is None
        assert rec.values == values_g and rows_g == list(zip(*rec.layout, values_g))
