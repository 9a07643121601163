"""A layer's output and the ``nn.ReLU`` that takes it measured in one pass
(``kernels.layer_relu``, ``Recording._fuse``): the same rows as measuring each on its own, and
the ReLU's own measurement wherever it does not read the layer's output unchanged."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("numba")
from torch import nn  # noqa: E402

from depthlab.torch import Watch, hooks  # noqa: E402
from depthlab.torch import kernels as K  # noqa: E402


def _frames(make, x, y, steps=3, monkeypatch=None, fuse=True):
    torch.manual_seed(0)
    model = make()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    if not fuse:
        monkeypatch.setattr(hooks.Recording, "_fuse", lambda self, *a: False)
    w = Watch(model, every=1)
    fused = []
    for _ in range(steps):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x).reshape(-1, 4), y)
        loss.backward()
        fused.append(dict(w._rec._relu_of))
        w.step(loss)
        opt.step()
    w.close()
    if not fuse:
        monkeypatch.undo()
    df = w.frame()
    return df[df.layer > 0].set_index(["step", "layer", "quantity"])["value"], fused


class _Shared(nn.Module):
    """One ReLU module after two layers, and a layer whose output is changed in place first."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Linear(6, 8), nn.Linear(8, 8), nn.Linear(8, 4)
        self.act = nn.ReLU()

    def forward(self, x):
        h = self.act(self.a(x))
        h = self.b(h)
        h = h.mul_(2.0) if self.training else h  # in place: not the tensor the layer gave
        return self.c(self.act(h))


CASES = {
    "mlp inplace": lambda: nn.Sequential(nn.Linear(6, 16), nn.ReLU(inplace=True),
                                         nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4)),
    "shared relu": _Shared,
    "sequence": lambda: nn.Sequential(nn.Linear(6, 10), nn.ReLU(), nn.Linear(10, 4)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_fused_rows_match_separate_measurement(case, monkeypatch):
    g = torch.Generator().manual_seed(1)
    shape = (5, 3, 6) if case == "sequence" else (24, 6)
    x = torch.randn(*shape, generator=g) - 0.3
    y = torch.randint(0, 4, (15 if case == "sequence" else 24,), generator=g)
    fused, marks = _frames(CASES[case], x, y)
    plain, _ = _frames(CASES[case], x, y, monkeypatch=monkeypatch, fuse=False)
    assert list(fused.index) == list(plain.index)
    np.testing.assert_allclose(fused.to_numpy(), plain.to_numpy(), rtol=2e-6, atol=1e-7)
    assert any(marks[1:]), "the fused path never ran"
    if case == "shared relu":  # layer b's output is changed in place: never fused, no act rows
        assert not fused.xs(2, level="layer").index.isin(["act_mean"], level="quantity").any()


def test_fused_values_against_torch():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(inplace=True), nn.Linear(7, 3))
    with torch.no_grad():
        model[0].bias[:3] = -50.0  # three dead units
    x = torch.randn(40, 5)
    w = Watch(model, every=1)
    for _ in range(2):
        model.zero_grad()
        with torch.no_grad():  # the layer's output, computed beside the watched model
            s = torch.addmm(model[0].bias, x, model[0].weight.t())
        loss = model(x).pow(2).mean()
        loss.backward()
        w.step(loss)
    w.close()
    assert w._rec._relu_of
    df = w.frame()
    row = df[(df.step == 1) & (df.layer == 1)].set_index("quantity")["value"]
    a = torch.relu(s).double()
    s = s.double()
    assert row["pre_mean"] == pytest.approx(s.mean().item(), rel=1e-6)
    assert row["pre_std"] == pytest.approx(s.std(unbiased=False).item(), rel=1e-6)
    assert row["act_mean"] == pytest.approx(a.mean().item(), rel=1e-6)
    assert row["act_std"] == pytest.approx(a.std(unbiased=False).item(), rel=1e-6)
    assert row["dead_frac"] == pytest.approx(3 / 7)
    assert row["inactive_frac"] == pytest.approx((s <= 0).double().mean().item())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layer_relu_kernel(dtype):
    rng = np.random.default_rng(0)
    for rows, units in ((1, 1), (3, 700), (600, 100), (7, 5)):
        s = rng.standard_normal((rows, units)).astype(dtype)
        s[:, 0] = -1.0  # a dead unit
        s[0, -1] = np.nan if units > 2 else s[0, -1]
        alive = np.zeros(units, dtype=bool)
        p1, p2, r1, r2, z = K.layer_relu(s, alive)
        v = s.astype(np.float64)
        r = np.where(v <= 0, 0.0, v)
        for got, want in ((p1, v.sum()), (p2, (v * v).sum()), (r1, r.sum()), (r2, (r * r).sum())):
            if np.isnan(want):
                assert np.isnan(got)
            else:
                assert got == pytest.approx(want, rel=1e-5 if dtype == np.float32 else 1e-12)
        assert z == int((v <= 0).sum())
        np.testing.assert_array_equal(alive, ~(v <= 0).all(axis=0))


def test_layer_relu_kernel_tiny_values_do_not_underflow():
    s = np.full((4, 600), 1e-20, dtype=np.float32)  # squares 1e-40: float32 underflow
    p1, p2, r1, r2, z = K.layer_relu(s, np.zeros(600, dtype=bool))
    assert p2 == pytest.approx(2400 * float(np.float32(1e-20)) ** 2, rel=1e-6)
    assert r2 == pytest.approx(p2) and z == 0
