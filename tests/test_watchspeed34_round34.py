"""Round 34 (watchspeed34): the CPU weight pass reads each snapshot buffer's facts once.

``Recording._weight_sums_at`` keeps, per snapshot dict, each buffer's size, dtype, layout and
address (the buffers are the Watch's own), and the one-weight update ratio is taken inline.
Checked for what a user sees: the ``update_ratio`` rows equal ``||W_n - W_{n-1}|| /
||W_{n-1}||`` computed directly, also when the snapshot buffers are replaced between records
(a weight re-assigned, ``model.double()``, ``model.float()`` back), when the squares leave
float64's range (the inline ratio's fallback), and the buffers are freed by ``close()``.
"""

from __future__ import annotations

import gc
import math
import weakref

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import depthlab.torch as dlt  # noqa: E402
from depthlab.probes import accel  # noqa: E402

pytestmark = pytest.mark.skipif(not accel.available(), reason="Numba (depthlab[fast]) is not "
                                "installed: the CPU kernels' path")


def _ratio(w1: torch.Tensor, w0: torch.Tensor) -> float:
    """``||w1 - w0|| / ||w0||`` in float64, scaled by a power of two (no square leaves the
    range)."""
    a, b = w0.detach().double(), w1.detach().double()
    e = math.frexp(float(a.abs().max()))[1]
    a, b = torch.ldexp(a, torch.tensor(-e)), torch.ldexp(b, torch.tensor(-e))
    return float((b - a).norm() / a.norm())


def _ratios(watch) -> dict:
    f = watch.frame()
    f = f[f.quantity == "update_ratio"]
    return {(int(s), int(layer)): v for s, layer, v in zip(f.step, f.layer, f.value)}


def _train(model, watch, steps, change=None, dtype=torch.float32):
    """SGD steps; ``change(step)`` may alter the model before that step's forward. Returns
    {(step, layer): direct ratio} for the steps whose previous step's weights were kept."""
    g = torch.Generator().manual_seed(3)
    expected, before = {}, None
    for step in range(steps):
        if change is not None and change(step):
            before = None
            dtype = next(model.parameters()).dtype
        x = torch.randn(16, 6, generator=g).to(dtype)
        y = torch.randint(0, 3, (16,), generator=g)
        opt = torch.optim.SGD(model.parameters(), lr=0.2)
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        now = [m.weight.detach().clone() for m in model if isinstance(m, nn.Linear)]
        if before is not None and step % watch.every == 0:
            for i, (w1, w0) in enumerate(zip(now, before), start=1):
                expected[(step, i)] = _ratio(w1, w0)
        watch.step(loss)
        opt.step()
        before = now
    return expected


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3))


@pytest.mark.parametrize("every", [1, 2])
def test_update_ratio_across_snapshots_replaced(every):
    """Ratios equal the direct ones after a weight is re-assigned (a new parameter: the layers
    and every snapshot buffer found again), after ``model.double()`` (every buffer replaced:
    another dtype) and after ``model.float()`` back (new float32 buffers, of the size, dtype
    and layout of the first ones): no earlier buffer is read."""
    model = _model()
    watch = dlt.Watch(model, every=every, theory=False)

    def change(step):
        if step == 3:  # the layers found again: every snapshot buffer a new one
            with torch.no_grad():
                model[2].weight = nn.Parameter(torch.randn(4, 5) * 0.3)
            return True
        if step in (6, 10):  # every buffer replaced (another dtype), then again (float32
            model.to(torch.float64 if step == 6 else torch.float32)  # buffers as before)
            return True
        return False

    with pytest.warns(RuntimeWarning, match="modules of Sequential changed"):
        expected = _train(model, watch, 14, change)
    watch.close()
    got = _ratios(watch)
    assert expected
    for key, v in expected.items():
        assert key in got, key
        assert got[key] == pytest.approx(v, rel=1e-6), key
    after = {4, 8, 12} if every == 2 else {4, 7, 11}  # the first ratio after each change
    assert {(step, i) for step in after for i in (1, 2, 3)} <= expected.keys()


@pytest.mark.parametrize("scale", [2.0 ** -540, 2.0 ** 520])
def test_update_ratio_when_squares_leave_the_range(scale):
    """Float64 weights of size ~1e-163 or ~1e156 (sum W^2 under- or overflows): the ratio is
    still ``||W_n - W_{n-1}|| / ||W_{n-1}||`` (the inline ratio falls back to the scaled
    one)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)).double()
    with torch.no_grad():
        model[0].weight.mul_(scale)
    watch = dlt.Watch(model, every=1, theory=False)
    g = torch.Generator().manual_seed(1)
    expected, before = {}, None
    for step in range(3):
        x = torch.randn(8, 6, generator=g, dtype=torch.float64)
        loss = model(x).square().mean()
        model.zero_grad()
        loss.backward()
        w = model[0].weight.detach().clone()
        if before is not None:
            expected[step] = _ratio(w, before)
        watch.step(loss)
        with torch.no_grad():  # an update proportional to W: finite at any scale
            model[0].weight.mul_(1.0 + 0.25 * (step + 1))
            model[2].weight.sub_(0.1 * model[2].weight.grad)
        before = w
    watch.close()
    got = _ratios(watch)
    for step, v in expected.items():
        assert math.isfinite(got[(step, 1)])
        assert got[(step, 1)] == pytest.approx(v, rel=1e-9)
        assert got[(step, 1)] == pytest.approx(0.25 * step, rel=1e-9)  # W_s = W_{s-1} (1 + s/4)


def test_close_frees_the_snapshot_buffers():
    """After ``close()`` no copy of the weights is kept alive (the buffers' facts held them)."""
    model = _model()
    watch = dlt.Watch(model, every=1, theory=False)
    _train(model, watch, 3)
    refs = [weakref.ref(b) for b in watch._buffers.values()]
    assert refs
    watch.close()
    gc.collect()
    assert all(r() is None for r in refs)
    assert len(watch.frame()) > 0
