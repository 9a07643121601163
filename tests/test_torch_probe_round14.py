"""depthlab.torch on models and loops the earlier rounds' tests were not shown (round 14):
U-Net skips by concatenation, residual adds in place / scaled / projected, ``Upsample``,
``PixelShuffle``, ``Unflatten``, ``Fold`` between layers, mixture-of-experts routing (an expert
on an empty slice, one called twice), parametrized weights, ``F.linear`` with a module's own
Parameter, dict and keyword inputs, channels-last, batch 1, huge float32 values, and Watch
corner cases (``every`` past the run, ``step`` after ``close()``, ``step`` under ``no_grad``).
Every value is compared with a direct autograd computation in float64 (population std), and
the compiled CPU kernels' path with the torch operations' path.

Bug found this round (``test_float32_squares_that_overflow_*``): on the compiled kernels' path
a float32 block of squares that overflowed (entries beyond ~1e19; a layer output of std 6e18)
gave ``pre_std``/``act_std``/``weight_*`` NaN, where the torch operations (float64 norms) gave
6.0e18; now such a sum is taken again in float64, as one that underflows is.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import depthlab.torch as dlt  # noqa: E402
from depthlab.torch.accumulators import watch_kernels  # noqa: E402

CE = nn.CrossEntropyLoss()
D = torch.float64


def _pstd(v: torch.Tensor) -> float:
    return float(v.detach().double().std(unbiased=False))


def _values(frame, step: int = 0):
    return frame[frame.step == step].set_index(["layer", "quantity"]).value


@pytest.fixture
def kernels():
    wk = watch_kernels()
    if wk is None:
        pytest.skip("Numba not installed: no compiled kernels' path")
    return wk


# -- the bug: float32 squares overflowing on the kernels' path -----------------------------------

def test_float32_squares_that_overflow_in_the_kernels(kernels):
    """Each kernel's sums of float32 entries of ~1e20 (squares 1e40 > float32's 3.4e38) equal
    float64 sums: they were inf (a std then NaN)."""
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(2048) * 1e20).astype(np.float32)
    x64 = x.astype(np.float64)
    s1, s2, ab = kernels.sums(x)
    assert s2 == pytest.approx(float((x64 ** 2).sum()), rel=1e-9)
    assert s1 == pytest.approx(float(x64.sum()), rel=1e-6, abs=1e-6 * float(np.abs(x64).sum()))
    a = np.maximum(x, 0).reshape(64, 32, 1)
    alive = np.zeros(32, dtype=bool)
    r1, r2, z = kernels.relu_units(a, alive)
    a64 = a.astype(np.float64)
    assert r2 == pytest.approx(float((a64 ** 2).sum()), rel=1e-9)
    assert z == int((a64 <= 0).sum()) and alive.all()
    alive = np.zeros(32, dtype=bool)
    p1, p2, r1, r2, z = kernels.layer_relu(x.reshape(64, 32), alive)
    assert p2 == pytest.approx(float((x64 ** 2).sum()), rel=1e-9)
    assert r2 == pytest.approx(float((np.maximum(x64, 0) ** 2).sum()), rel=1e-9)
    g = (rng.standard_normal(2048) * 1e-3).astype(np.float32)
    w0 = (x * np.float32(0.5)).copy()
    out = kernels.weight_sums(x, g, w0, False)
    assert out[1] == pytest.approx(float((x64 ** 2).sum()), rel=1e-9)
    assert out[3] == pytest.approx(float((g.astype(np.float64) ** 2).sum()), rel=1e-9)
    assert out[5] == pytest.approx(float((w0.astype(np.float64) ** 2).sum()), rel=1e-9)
    assert out[6] == pytest.approx(float(((x64 - w0.astype(np.float64)) ** 2).sum()), rel=1e-9)


def _huge_model() -> nn.Module:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(40, 64), nn.ReLU(), nn.Linear(64, 64), nn.Tanh(),
                      nn.Linear(64, 3))
    with torch.no_grad():
        m[0].weight.mul_(1e20)
        m[0].bias.mul_(1e20)
    return m


def _huge_reference(m: nn.Module, x: torch.Tensor) -> dict:
    with torch.no_grad():
        h = m[0](x).double()
        h2 = m[2](m[1](m[0](x))).double()
    return {(1, "pre_std"): _pstd(h), (1, "pre_mean"): float(h.mean()),
            (1, "act_std"): _pstd(h.relu()), (1, "act_mean"): float(h.relu().mean()),
            (1, "weight_std"): _pstd(m[0].weight), (2, "pre_std"): _pstd(h2)}


def test_float32_squares_that_overflow_probe_and_watch(kernels):
    """A float32 layer output of std ~1e20 (2048 entries): ``pre_std``, ``act_std`` of its ReLU
    (measured from the ReLU's output at the first record, in the layer's own pass from the
    second on) and ``weight_std`` (weights of ~1e19) equal the float64 values, as on the
    torch operations' path; they were NaN."""
    x, y = torch.randn(32, 40, generator=torch.Generator().manual_seed(1)), torch.arange(32) % 3
    m = _huge_model()
    want = _huge_reference(m, x)
    got = _values(dlt.probe(m, x, y, CE, percentiles=()))
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-5), key
    opt = torch.optim.SGD(m.parameters(), lr=0.0)
    with dlt.Watch(m, every=1, theory=False) as watch:
        for _ in range(3):
            opt.zero_grad()
            loss = CE(m(x), y)
            loss.backward()
            watch.step(loss)
            opt.step()
    for step in range(3):
        got = _values(watch.frame(), step)
        for key, value in want.items():
            assert got[key] == pytest.approx(value, rel=1e-5), (step, key)


# -- complex weights ------------------------------------------------------------------------------

class _ComplexFront(nn.Module):
    """A complex-valued linear layer, its magnitude into a real head."""

    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Linear(4, 6, dtype=torch.cfloat)
        self.act = nn.Tanh()
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        return self.head(self.act(self.c(x.to(torch.cfloat)).abs()))


def test_complex_weights_are_not_a_layer():
    """A module with a complex weight is no layer (only real floating-point weights are): probe
    and Watch measure the real head; both ran the model and then failed inside torch
    ('linalg.vector_norm: dtype should be complex for complex inputs, but got Double')."""
    torch.manual_seed(0)
    model = _ComplexFront()
    x, y = torch.randn(8, 4, generator=torch.Generator().manual_seed(1)), torch.arange(8) % 3
    assert [info.name for info in dlt.discover(model, x)] == ["head"]
    frame = dlt.probe(model, x, y, CE, percentiles=())
    assert frame[frame.layer > 0].module.unique().tolist() == ["head"]
    got = _values(frame)
    with torch.no_grad():
        h = model.head(model.act(model.c(x.to(torch.cfloat)).abs()))
    assert got[(1, "pre_std")] == pytest.approx(_pstd(h), rel=1e-6)
    assert got[(1, "weight_std")] == pytest.approx(_pstd(model.head.weight), rel=1e-6)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with dlt.Watch(model, every=1, theory=False) as watch:
        for _ in range(2):
            opt.zero_grad()
            loss = CE(model(x), y)
            loss.backward()
            watch.step(loss)
            opt.step()
    assert set(watch.frame().module.dropna()) <= {"head", ""}
    assert (1, "update_ratio") in _values(watch.frame(), 1).index
