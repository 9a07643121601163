"""Round 23: the torch-operations path of a record (every device, and the CPU without the
compiled kernels) defers the reductions of small tensors to the record's end and takes them
together (depthlab.torch.accumulators.BATCH): the same frames as one reduction per tensor, on
many models; a bounded number of launching operations per layer; the row reductions exact
per tensor at chunk boundaries, reproducible, NaN/inf as before, within the memory caps."""

from __future__ import annotations

import collections
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import ProfilerActivity, profile

import depthlab.torch as dlt
from depthlab.probes import accel
from depthlab.torch import accumulators as accm
from depthlab.torch import zoo


@pytest.fixture
def torch_ops(monkeypatch):
    """The torch-operations path on the CPU (as DEPTHLAB_PROBE_KERNELS=numpy)."""
    monkeypatch.setattr(accel, "kernels", lambda: None)


def _mlp(depth: int, dtype=torch.float32) -> nn.Module:
    mods: list[nn.Module] = [nn.Linear(12, 16), nn.ReLU()]
    for _ in range(depth - 2):
        mods += [nn.Linear(16, 16), nn.ReLU()]
    mods.append(nn.Linear(16, 3))
    return nn.Sequential(*mods).to(dtype)


class _Tanh(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(12, 16), nn.Linear(16, 3)
        self.act = nn.Tanh()

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


def _case(name: str):
    """(model, input, targets) of one case; float64 where the name says so."""
    g = torch.Generator().manual_seed(1)
    if name == "mlp64":
        return _mlp(4, torch.float64), torch.randn(20, 12, generator=g, dtype=torch.float64), 3
    if name == "mlp":
        return _mlp(4), torch.randn(20, 12, generator=g), 3
    if name == "tanh":
        return _Tanh(), torch.randn(20, 12, generator=g), 3
    if name == "cnn":
        return zoo.bn_cnn((3, 8, 16), classes=4), torch.randn(6, 3, 12, 12, generator=g), 4
    if name == "resnet18":
        return zoo.resnet18(num_classes=3), torch.randn(2, 3, 16, 16, generator=g), 3
    if name == "transformer":
        m = zoo.transformer_classifier()
        return m, None, 3
    if name == "lstm":
        return zoo.lstm_classifier(), torch.randn(5, 7, 8, generator=g), 3
    raise AssertionError(name)


def _frame(name: str, batch: bool, monkeypatch, steps: int = 2, bf16: bool = False,
           device: str = "cpu", **kw) -> pd.DataFrame:
    monkeypatch.setattr(accm, "BATCH", batch)
    torch.manual_seed(0)
    model, x, classes = _case(name)
    model = model.to(device)
    x = x.to(device) if x is not None else None
    if x is None:  # a transformer: token ids
        x = torch.randint(0, 50, (4, 9), generator=torch.Generator().manual_seed(2))
        try:
            model(x.to(device))
        except Exception:  # a float-feature transformer
            x = torch.randn(4, 9, 16, generator=torch.Generator().manual_seed(2))
        x = x.to(device)
    y = (torch.arange(x.shape[0]) % classes).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with dlt.Watch(model, every=1, **kw) as watch:
        for _ in range(steps):
            opt.zero_grad()
            if bf16:
                with torch.autocast(device, dtype=torch.bfloat16):
                    out = model(x)
                loss = F.cross_entropy(out.float(), y)
            else:
                loss = F.cross_entropy(model(x), y)
            loss.backward()
            watch.step(loss)
            opt.step()
    return watch.frame()


def _same(a: pd.DataFrame, b: pd.DataFrame, rtol: float, atol: float) -> None:
    key = ["step", "layer", "module", "quantity"]
    assert len(a) == len(b) and len(a) > 0
    a = a.sort_values(key).reset_index(drop=True)
    b = b.sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(a[key], b[key])
    va, vb = a.value.to_numpy(float), b.value.to_numpy(float)
    np.testing.assert_array_equal(np.isnan(va), np.isnan(vb))
    ok = ~np.isnan(va)
    np.testing.assert_allclose(va[ok], vb[ok], rtol=rtol, atol=atol)


@pytest.mark.parametrize("name", ["mlp64", "mlp", "tanh", "cnn", "resnet18", "transformer",
                                  "lstm"])
def test_batched_frames_equal_per_tensor_frames(name, torch_ops, monkeypatch):
    """Every quantity of every recorded step as with one reduction per tensor: float64 to
    1e-12, float32 to float32 rounding (sum |x| is now accumulated in float64)."""
    new = _frame(name, True, monkeypatch)
    old = _frame(name, False, monkeypatch)
    rtol, atol = (1e-12, 1e-15) if name == "mlp64" else (2e-5, 1e-7)
    _same(new, old, rtol, atol)


def test_bf16_autocast_and_percentiles(torch_ops, monkeypatch):
    new = _frame("cnn", True, monkeypatch, bf16=True, percentiles=(5, 50, 95))
    old = _frame("cnn", False, monkeypatch, bf16=True, percentiles=(5, 50, 95))
    assert new.quantity.str.contains("_p50").any()
    _same(new, old, 2e-5, 1e-7)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("name", ["mlp64", "mlp", "cnn", "resnet18", "transformer", "lstm",
                                  "bf16"])
def test_cuda_batched_frames_equal_per_tensor_frames(name, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)  # same training
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    bf16 = name == "bf16"
    name = "cnn" if bf16 else name
    kw = {"percentiles": (5, 50)} if name == "cnn" else {}
    new = _frame(name, True, monkeypatch, device="cuda", bf16=bf16, **kw)
    old = _frame(name, False, monkeypatch, device="cuda", bf16=bf16, **kw)
    rtol, atol = (1e-12, 1e-15) if name == "mlp64" else (2e-5, 1e-7)
    _same(new, old, rtol, atol)
    again = _frame(name, True, monkeypatch, device="cuda", bf16=bf16, **kw)
    np.testing.assert_array_equal(new.value.to_numpy(float), again.value.to_numpy(float))


def test_batched_path_is_reproducible(torch_ops, monkeypatch):
    a = _frame("cnn", True, monkeypatch, steps=3, percentiles=(50,))
    b = _frame("cnn", True, monkeypatch, steps=3, percentiles=(50,))
    np.testing.assert_array_equal(a.value.to_numpy(float), b.value.to_numpy(float))


def test_nan_and_inf_as_before(torch_ops, monkeypatch):
    """A weight entry of inf (NaN outputs and gradients downstream): the same NaN/inf rows on
    both paths."""
    def run(batch):
        monkeypatch.setattr(accm, "BATCH", batch)
        torch.manual_seed(0)
        model = _mlp(3)
        with torch.no_grad():
            model[2].weight[0, 0] = math.inf
        x, y = torch.randn(8, 12), torch.arange(8) % 3
        with dlt.Watch(model, every=1) as watch:
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            watch.step(loss)
        return watch.frame()
    new, old = run(True), run(False)
    assert np.isnan(new.value.to_numpy(float)).any()
    _same(new, old, 2e-5, 1e-7)


def test_row_reductions_of_nan_and_inf():
    """inf and -inf in different rows of one tensor: NaN, as one sum gives; a NaN entry: NaN
    sums and norms, counted as nonzero."""
    t = accm.Transfer()
    x = torch.zeros(3000)
    x[5], x[2500] = math.inf, -math.inf
    y = torch.tensor([1.0, math.nan, 0.0])
    z = torch.tensor([math.inf, 2.0])
    hs = [[t.add(accm.Lazy(d, s)) for s in range(4)]
          for d in (accm.defer(v, False) for v in (x, y, z))]
    t.run(torch.device("cpu"))
    got = [[t.one(k) for k in h] for h in hs]
    want = [[math.nan, math.inf, math.inf, 2.0], [math.nan, math.nan, math.nan, 2.0],
            [math.inf, math.inf, math.inf, 2.0]]
    np.testing.assert_array_equal(np.array(got), np.array(want))


@pytest.mark.parametrize("sizes", [[1], [1023, 1024, 1025], [5, 0, 3000, 1, 2048]])
def test_row_reductions_per_tensor(sizes, monkeypatch):
    """Tensors ending inside, at and past a row: each tensor's sum, norm, sum |x| and nonzero
    count exact to float64 rounding (a row never mixes two tensors); groups split by
    BATCH_GROUP give the same values."""
    g = torch.Generator().manual_seed(0)
    ts = [torch.randn(n, generator=g) * (torch.rand(n, generator=g) > 0.3) for n in sizes]
    for group in (accm.BATCH_GROUP, 2048):
        monkeypatch.setattr(accm, "BATCH_GROUP", group)
        t = accm.Transfer()
        hs = []
        for v in ts:
            d = accm.defer(v, False)
            if d is None:
                assert v.numel() == 0
                continue
            hs.append((v, [t.add(accm.Lazy(d, s)) for s in range(4)]))
        h0 = t.add(torch.tensor(2.5, dtype=torch.float64))
        t.run(torch.device("cpu"))
        assert t.one(h0) == 2.5
        for v, h in hs:
            w = v.double()
            want = [float(w.sum()), float(w.norm()), float(w.abs().sum()),
                    float((w != 0).sum())]
            np.testing.assert_allclose([t.one(k) for k in h], want, rtol=1e-13, atol=1e-13)
        assert all(d.t is None for d in (z.d for _, z in t.lazy))


def test_held_copies_are_capped(torch_ops, monkeypatch):
    """Past HELD_MAX entries of copies the reductions are taken at once (same frames)."""
    monkeypatch.setattr(accm, "HELD_MAX", 300)
    new = _frame("mlp", True, monkeypatch, steps=2)
    monkeypatch.setattr(accm, "HELD_MAX", 1 << 26)
    old = _frame("mlp", False, monkeypatch, steps=2)
    _same(new, old, 2e-5, 1e-7)


_NOLAUNCH = {"aten::detach", "aten::reshape", "aten::view", "aten::slice", "aten::t",
             "aten::select", "aten::resolve_conj", "aten::resolve_neg", "aten::alias",
             "aten::expand", "aten::as_strided", "aten::unsqueeze", "aten::squeeze",
             "aten::permute", "aten::transpose", "aten::_unsafe_view", "aten::flatten",
             "aten::lift_fresh", "aten::empty", "aten::empty_like"}


def _launching(prof) -> collections.Counter:
    """Top-level aten operations that run a kernel (views and no-op casts left out)."""
    def copies(e):
        return any(c.name == "aten::copy_" or copies(c) for c in e.cpu_children)
    out: collections.Counter = collections.Counter()
    for e in prof.events():
        if not e.name.startswith("aten::") or e.name in _NOLAUNCH:
            continue
        if e.cpu_parent is not None and e.cpu_parent.name.startswith("aten::"):
            continue
        if e.name in ("aten::to", "aten::_to_copy", "aten::contiguous") and not copies(e):
            continue
        out[e.name] += 1
    return out


def _record_ops(depth: int) -> int:
    """Launching operations that a recorded step adds to an unrecorded one."""
    torch.manual_seed(0)
    model = _mlp(depth)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(32, 12), torch.arange(32) % 3
    watch = dlt.Watch(model, every=2)

    def step():
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        watch.step(loss)
        opt.step()
    for _ in range(3):
        step()
    counts = []
    for _ in range(2):  # one unrecorded and one recorded step, in either order
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            step()
        counts.append(sum(_launching(prof).values()))
    watch.close()
    return max(counts) - min(counts)


def test_launching_ops_per_layer_are_bounded(torch_ops):
    """Six more Linear+ReLU layers add at most 5 launching operations each to a recorded step
    (4: a copy of the layer output, the ReLU output's copy and unit sums, the gradient's
    copy); one reduction per tensor and statistic added 17 each (54 and 156 operations)."""
    few, many = _record_ops(3), _record_ops(9)
    assert (many - few) / 6 <= 5, (few, many)
    assert few <= 30, few
