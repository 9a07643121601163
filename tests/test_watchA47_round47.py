"""Round 47 (watchA47): a recorded pass's per-layer work made cheaper, its results unchanged.

- ``Acc.add_plain`` (a gradient in a backward hook) and ``Acc.add_sums`` (a layer output's and
  its ReLU's sums from the fused kernel pass) leave an accumulator exactly as ``Acc.add`` does,
  to the bit, on every kind of tensor (cancelling, vanishing, huge, NaN, empty, strided,
  negative views, float64, bf16, tensors in autograd, percentiles, no kernels);
- ``ActAcc.add_relu_counts`` pools the live-unit masks as ``_pool_alive`` does;
- a Watch's frames, losses and trained parameters with the new paths equal those with every
  call routed through ``Acc.add`` (the general path), on models that take each branch: fused
  Linear -> ReLU (in place or not), a view output (a Linear on a sequence), a shared layer, a
  ``no_grad`` part, ``torch.func.vmap`` inside the forward, and a create_graph backward.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import depthlab.torch as dlt  # noqa: E402
from depthlab.torch import accumulators as A  # noqa: E402
from depthlab.torch.layers import activation_spec  # noqa: E402

K = A.watch_kernels()
needs_kernels = pytest.mark.skipif(K is None, reason="the CPU kernels (numba) are not in use")


def _state(acc: A.Acc) -> list:
    """The accumulator's lists as host floats (NaN as a string: compared to the bit)."""
    def f(v):
        v = float(v)
        return "nan" if math.isnan(v) else v.hex()
    return [acc.ns, [f(c) for c in acc.cs], [f(v) for v in acc.a], [f(v) for v in acc.b],
            [f(v) for v in acc.abs], acc.host, len(acc.sorted)]


def _tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(64, 33, generator=g)
    nan = x.clone()
    nan[3, 5] = float("nan")
    return {
        "plain": x,
        "cancelling": x * 1e-3 + 50.0,
        "vanishing": x * 1e-160,
        "huge": x * 1e200,
        "zeros": torch.zeros(7, 9),
        "nan": nan,
        "float64": x.double(),
        "transposed": x.t(),
        "negative view": torch._neg_view(x),
        "bf16": x.to(torch.bfloat16),
        "empty": torch.zeros(0, 33),
        "one entry": torch.tensor([2.5]),
        "in autograd": x.clone().requires_grad_(True) * 1.5,
        "constant": torch.full((5, 4), 3.7),
    }


@needs_kernels
@pytest.mark.parametrize("name", list(_tensors()))
@pytest.mark.parametrize("want_abs", [True, False])
def test_add_plain_is_add(name, want_abs):
    x = _tensors()[name]
    old, new = A.Acc(want_abs=want_abs), A.Acc(want_abs=want_abs)
    if name == "negative view":  # add refuses it (numpy() of a negative view); so does this
        with pytest.raises(RuntimeError) as e_old:
            old.add(x, None, K)
        with pytest.raises(RuntimeError) as e_new:
            new.add_plain(x, K)
        assert str(e_new.value) == str(e_old.value)
        return
    for _ in range(2):
        old.add(x, None, K)
        new.add_plain(x, K)
    assert _state(new) == _state(old)


@pytest.mark.parametrize("name", ["plain", "bf16", "in autograd"])
def test_add_plain_without_kernels_or_with_percentiles_is_add(name):
    x = _tensors()[name]
    for kw in ({"want_abs": True}, {"want_sorted": True}):
        old, new = A.Acc(**kw), A.Acc(**kw)
        old.add(x, None, None if "want_abs" in kw else K)
        new.add_plain(x, None if "want_abs" in kw else K)
        assert _state(new) == _state(old)
        if "want_sorted" in kw:
            old.freeze((25.0, 75.0))
            new.freeze((25.0, 75.0))
            assert torch.equal(old.pct, new.pct)


@needs_kernels
@pytest.mark.parametrize("name", [n for n in _tensors()
                                  if n not in ("bf16", "in autograd", "negative view")])
@pytest.mark.parametrize("kw", [{}, {"want_abs": True}, {"want_sorted": True}])
def test_add_sums_is_add_with_host_sums(name, kw):
    """The sums a kernel gave (here: float64 sums of the entries) give the same accumulator
    through add_sums as through add(x, (s1, s2)); cancelling and out-of-range sums read the
    values again in both."""
    x = _tensors()[name]
    f = x.detach().double()
    s1, s2 = float(f.sum()), float((f * f).sum())
    old, new = A.Acc(**kw), A.Acc(**kw)
    old.add(x, (s1, s2))
    new.add_sums(x, x.numel(), s1, s2)
    assert _state(new) == _state(old)


@needs_kernels
def test_layer_relu_sums_through_add_sums():
    """The fused kernel's own sums (layer output and ReLU output) as the hooks pass them."""
    x = torch.randn(32, 20, generator=torch.Generator().manual_seed(5)) + 0.2
    alive = np.zeros(20, dtype=bool)
    p1, p2, r1, r2, _ = K.layer_relu(x.numpy(), alive)
    r = torch.relu(x)
    for t, s1, s2 in ((x, p1, p2), (r, r1, r2)):
        old, new = A.Acc(), A.Acc()
        old.add(t, (s1, s2), K)
        new.add_sums(t, t.numel(), s1, s2)
        assert _state(new) == _state(old)


def test_add_relu_counts_pools_masks_as_before():
    spec = activation_spec(nn.ReLU())
    masks = [np.array([True, False, False, True]), np.array([False, False, True, False]),
             np.array([False, True])]
    acc = A.ActAcc(A.Acc())
    acc.add_relu_counts(8, 3, masks[0], spec)
    assert acc.alive is masks[0] and acc.dead_ok
    acc.add_relu_counts(8, 5, masks[1], spec)
    assert acc.alive.tolist() == [True, False, True, True]
    assert acc.active == [5.0, 3.0] and acc.n == acc.n_active == 16
    acc.add_relu_counts(4, 1, masks[2], spec)  # another shape: no dead_frac
    assert not acc.dead_ok
    # a pending unit sum of a torch-path call is settled first, then pooled with the mask
    acc = A.ActAcc(A.Acc())
    acc.units = torch.tensor([0.0, 2.0, 0.0, 0.0])
    acc.add_relu_counts(8, 3, masks[0].copy(), spec)
    assert acc.units is None and acc.alive.tolist() == [True, True, False, True]


# -- whole Watch: new paths against every call routed through Acc.add ---------------------
class _Seq(nn.Module):
    """A Linear on a sequence (its output a reshaped view of the matmul's), then a ReLU."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(6, 8)
        self.r = nn.ReLU(inplace=True)
        self.b = nn.Linear(8, 3)

    def forward(self, x):
        return self.b(self.r(self.a(x.reshape(4, 3, 6))).mean(1))


class _Shared(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(6, 6)
        self.r = nn.ReLU()
        self.b = nn.Linear(6, 3)

    def forward(self, x):
        x = x.reshape(4, 18)[:, :6]
        for _ in range(3):
            x = self.r(self.a(x))
        return self.b(x)


class _NoGrad(nn.Module):
    def __init__(self):
        super().__init__()
        self.f = nn.Linear(18, 8)
        self.r = nn.ReLU()
        self.h = nn.Linear(8, 3)

    def forward(self, x):
        with torch.no_grad():
            z = self.r(self.f(x.reshape(4, 18)))
        return self.h(z)


class _Vmapped(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(18, 8)
        self.r = nn.ReLU()
        self.b = nn.Linear(8, 3)

    def forward(self, x):
        h = torch.func.vmap(lambda row: self.a(row))(x.reshape(4, 18))
        return self.b(self.r(h))


def _models():
    def mlp(inplace):
        torch.manual_seed(0)
        return nn.Sequential(nn.Flatten(), nn.Linear(18, 16), nn.ReLU(inplace=inplace),
                             nn.Linear(16, 16), nn.ReLU(inplace=inplace), nn.Linear(16, 3))
    return {"mlp": lambda: mlp(False), "inplace": lambda: mlp(True), "seq": _Seq,
            "shared": _Shared, "nograd": _NoGrad, "vmap": _Vmapped}


def _train(make, every, penalty=False):
    torch.manual_seed(0)
    model = make()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    g = torch.Generator().manual_seed(1)
    watch = dlt.Watch(model, every=every)
    losses = []
    for _ in range(7):
        x = torch.randn(4, 3, 6, generator=g)
        y = torch.randint(0, 3, (4,), generator=g)
        opt.zero_grad()
        if penalty:
            xi = x.clone().requires_grad_(True)
            (gx,) = torch.autograd.grad(model(xi).sum(), xi, create_graph=True)
            loss = nn.functional.cross_entropy(model(x), y) + 0.1 * gx.pow(2).sum()
        else:
            loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        watch.step(loss)
        opt.step()
        losses.append(float(loss))
    frame = watch.frame()
    watch.close()
    return frame, losses, [p.detach().clone() for p in model.parameters()]


def _general(monkeypatch):
    """Every call of the new paths routed through Acc.add and _pool_alive (the old code)."""
    monkeypatch.setattr(A.Acc, "add_plain", lambda self, x, k: self.add(x, None, k))
    monkeypatch.setattr(A.Acc, "add_sums",
                        lambda self, x, n, s1, s2: self.add(x, (s1, s2)))

    def counts(self, n, off, alive, spec):
        self.spec = spec
        self.n += n
        self.n_active += n
        self.active.append(float(n - off))
        self._pool_alive(alive)
    monkeypatch.setattr(A.ActAcc, "add_relu_counts", counts)


@pytest.mark.parametrize("name", list(_models()))
@pytest.mark.parametrize("every", [1, 3])
def test_watch_frames_equal_the_general_path(name, every, monkeypatch):
    make = _models()[name]
    new = _train(make, every)
    with monkeypatch.context() as m:
        _general(m)
        old = _train(make, every)
    assert new[0].equals(old[0]), name
    assert new[1] == old[1]
    assert all(torch.equal(a, b) for a, b in zip(new[2], old[2]))
    assert len(new[0]) > 0


def test_create_graph_backward_equals_the_general_path(monkeypatch):
    make = _models()["mlp"]
    new = _train(make, 1, penalty=True)
    with monkeypatch.context() as m:
        _general(m)
        old = _train(make, 1, penalty=True)
    assert new[0].equals(old[0])
    assert all(torch.equal(a, b) for a, b in zip(new[2], old[2]))


@pytest.mark.parametrize("name", ["mlp", "inplace"])
def test_training_is_the_same_with_and_without_a_watch(name):
    make = _models()[name]
    _, losses, params = _train(make, 1)
    torch.manual_seed(0)
    model = make()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    g = torch.Generator().manual_seed(1)
    plain = []
    for _ in range(7):
        x = torch.randn(4, 3, 6, generator=g)
        y = torch.randint(0, 3, (4,), generator=g)
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        plain.append(float(loss))
    assert plain == losses
    assert all(torch.equal(a, b) for a, b in zip(params, model.parameters()))
