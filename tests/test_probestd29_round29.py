"""Round 29 (probestd29): the torch statistics of tensors whose sums of squares overflow or
underflow (float64 entries of 1e200 or 1e-300, float32 sums past 3.4e38) are finite and match
a long-double computation on every path (CPU kernels, torch operations batched or not)."""

from __future__ import annotations

import math
import warnings
from contextlib import nullcontext

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import depthlab.torch as dlt  # noqa: E402
from depthlab.probes import accel  # noqa: E402
from depthlab.probes.stats import abs_mean, mean_std  # noqa: E402
from depthlab.torch import accumulators  # noqa: E402

PATHS = ("kernels", "torch", "torch-unbatched")


def _path(path: str, monkeypatch):
    if path == "torch-unbatched":
        monkeypatch.setattr(accumulators, "BATCH", False)
    return accel.numpy_only() if path != "kernels" else nullcontext()


def _ld(t: torch.Tensor) -> tuple[float, float, float]:
    """(mean, population std, mean |x|) in long double."""
    a = t.detach().double().numpy().astype(np.longdouble).ravel()
    m = a.mean()
    return float(m), float(np.sqrt(((a - m) ** 2).mean())), float(np.abs(a).mean())


def _mlp(dtype: torch.dtype, act=nn.Tanh) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(12, 10), act(), nn.Linear(10, 8), act(),
                         nn.Linear(8, 3)).to(dtype)


def _reference(model: nn.Sequential, x: torch.Tensor, loss_fn) -> dict:
    """Every std/absmean quantity of the probe, from tensors caught by hooks."""
    lin = [m for m in model if isinstance(m, nn.Linear)]
    seen: dict = {}
    handles = []
    for i, m in enumerate(lin):
        def hook(mod, inp, out, i=i):
            seen["pre", i] = out.detach().clone()
            out.register_hook(lambda g, i=i: seen.__setitem__(("grad", i), g.clone()))
        handles.append(m.register_forward_hook(hook))
    for j, m in enumerate(model):
        if not isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(
                lambda mod, inp, out, i=j // 2: seen.__setitem__(("act", i), out.detach().clone())))
    loss = loss_fn(model(x), None)
    grads = torch.autograd.grad(loss, [m.weight for m in lin])
    for h in handles:
        h.remove()
    ref = {}
    for i, m in enumerate(lin):
        k = i + 1
        ref[k, "pre_mean"], ref[k, "pre_std"], _ = _ld(seen["pre", i])
        if ("act", i) in seen:
            ref[k, "act_mean"], ref[k, "act_std"], _ = _ld(seen["act", i])
        _, ref[k, "grad_pre_std"], ref[k, "grad_pre_absmean"] = _ld(seen["grad", i])
        ref[k, "weight_std"] = _ld(m.weight)[1]
        _, ref[k, "weight_grad_std"], ref[k, "weight_grad_absmean"] = _ld(grads[i])
    return ref


def _check(model, x, loss_fn, rtol: float, **kw) -> None:
    ref = _reference(model, x, loss_fn)
    df = dlt.probe(model, x, None, loss_fn, **kw)
    got = {(int(r.layer), r.quantity): float(r.value) for r in df.itertuples()}
    bad = []
    for key, want in ref.items():
        v = got.get(key, math.nan)
        # (a std from sum x^2 / n - mean^2 on the torch path: within ~1e-8 |mean|)
        mean = ref.get((key[0], key[1].replace("std", "mean")),
                       ref.get((key[0], key[1].replace("std", "absmean")), 0.0))
        scale = max(abs(want), ref.get((key[0], key[1].replace("mean", "std")), 0.0))
        slack = 1e-7 * abs(mean) if key[1].endswith("std") else 0.0
        if not (math.isfinite(v) and abs(v - want) <= rtol * scale + slack):
            bad.append((key, v, want))
    assert not bad, bad


def _scaled(dtype: torch.dtype, factor: float, act=nn.Tanh) -> nn.Sequential:
    model = _mlp(dtype, act)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(factor)
    return model


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("pct", [(), (50,)])
def test_float64_entries_of_1e200_have_finite_exact_statistics(path, pct, monkeypatch):
    """Layer outputs, gradients and weights of ~1e200 (squares past 1.8e308): every std was
    NaN (pre_std, act_std, grad_pre_std, weight_std, weight_grad_std)."""
    with _path(path, monkeypatch), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x = torch.randn(9, 12, dtype=torch.float64)
        _check(_mlp(torch.float64, nn.ReLU), x * 1e200, lambda o, y: o.sum() * 1e-190, 1e-9,
               percentiles=pct)
        _check(_mlp(torch.float64), x, lambda o, y: o.sum() * 1e200, 1e-9, percentiles=pct)
        _check(_scaled(torch.float64, 1e200), x, lambda o, y: o.sum() * 1e-200, 1e-9,
               percentiles=pct)


@pytest.mark.parametrize("path", PATHS)
def test_float64_entries_of_1e300_tiny_have_exact_statistics(path, monkeypatch):
    """Entries of ~1e-300 (squares underflow to 0): weight_grad_std was 0.0, not 1e-300."""
    with _path(path, monkeypatch):
        x = torch.randn(9, 12, dtype=torch.float64)
        _check(_mlp(torch.float64), x * 1e-300, lambda o, y: o.sum() * 1e-300, 1e-9,
               percentiles=())
        _check(_scaled(torch.float64, 1e-300), x, lambda o, y: o.sum(), 1e-9, percentiles=())


@pytest.mark.parametrize("path", PATHS)
def test_float32_sums_past_float32_range_stay_finite(path, monkeypatch):
    """float32 gradients of ~3e37: sum |g| over 10 entries passes 3.4e38 (absmean inf on the
    torch path, which summed |g| in float32)."""
    with _path(path, monkeypatch), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x = torch.randn(9, 12)
        _check(_mlp(torch.float32), x, lambda o, y: o.sum() * 3e37, 1e-5, percentiles=())
        _check(_mlp(torch.float32, nn.ReLU), x * 3e37, lambda o, y: o.sum() * 1e-30, 1e-5,
               percentiles=())


def test_numpy_mean_std_of_subnormal_scale_entries():
    """The NumPy twin: entries of ~1e-300 had std 0.0 (squares underflow), not 1e-300."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(1000) * 1e-300
    want = float(np.std(x.astype(np.longdouble)))
    assert mean_std(x)[1] == pytest.approx(want, rel=1e-9, abs=0.0)
    assert abs_mean(x) == pytest.approx(float(np.abs(x).mean()), rel=1e-12, abs=0.0)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("every", [1, 2])
@pytest.mark.parametrize("scale", [1e200, 1e-300])
def test_watch_update_ratio_of_float64_weights_out_of_the_squares_range(path, every, scale,
                                                                      monkeypatch):
    """update_ratio of weights of ~1e200 read NaN (||W0||^2 and ||W - W0||^2 overflowed) and
    of weights of ~1e-300 read inf (||W0||^2 underflowed to 0); the ratio is scale free."""
    with _path(path, monkeypatch), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = _scaled(torch.float64, scale)
        watch = dlt.Watch(model, every=every)
        x = torch.randn(9, 12, dtype=torch.float64)
        gen = torch.Generator().manual_seed(1)
        want = []
        for _ in range(2 * every + 1):
            for p in model.parameters():
                p.grad = None
            loss = model(x).sum() / scale
            loss.backward()
            before = [model[i].weight.detach().clone() for i in (0, 2, 4)]
            watch.step(loss)
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 1e-3 * scale)
            want.append([float(np.sqrt(
                ((model[i].weight.detach().numpy().astype(np.longdouble)
                  - w0.numpy().astype(np.longdouble)) ** 2).sum()
                / (w0.numpy().astype(np.longdouble) ** 2).sum()))
                for i, w0 in zip((0, 2, 4), before)])
        watch.close()
        df = watch.frame()
        rows = df[df.quantity == "update_ratio"].sort_values(["step", "layer"])
        got = rows.value.to_numpy().reshape(-1, 3)
        steps = rows.step.unique()
        expected = [want[s - 1] for s in steps]  # (step n: ||W_n - W_{n-1}|| / ||W_{n-1}||)
        assert len(got) >= 1
        np.testing.assert_allclose(got, expected, rtol=1e-9)


@pytest.mark.parametrize("path", ["kernels", "numpy"])
@pytest.mark.parametrize("scale", [1e-300, 1e-200])
def test_numpy_layer_stats_of_float64_layers_of_vanishing_scale(path, scale):
    """The NumPy probes' layer_stats of float64 caches of ~1e-300 (and 1e-200, whose squares
    underflow as well): every std read 0.0 on the compiled kernels' path."""
    from depthlab.losses import get_loss
    from depthlab.models import mlp
    from depthlab.probes.stats import layer_quantities, layer_stats

    rng = np.random.default_rng(0)
    net = mlp([5, 12, 3], activation="identity", seed=0, dtype="float64")
    loss = get_loss("cross_entropy")
    loss.forward(net.forward(rng.standard_normal((10, 5)), training=True), rng.integers(0, 3, 10))
    net.backward(loss.backward(), input_grad=False)
    for p in net.probe_points():
        p.activation.s = (p.activation.s + 0.3) * scale
        p.activation.a = p.activation.s.copy()
        p.activation.grad_s = p.activation.grad_s * scale
        p.dense.W.value *= scale
        p.dense.W.grad[...] *= scale
    with accel.numpy_only() if path == "numpy" else nullcontext():
        rows = [dict(zip(layer_quantities(()), layer_stats(p, ()))) for p in net.probe_points()]
    for p, got in zip(net.probe_points(), rows):
        for name, x in (("pre_std", p.activation.s), ("act_std", p.activation.a),
                        ("grad_pre_std", p.activation.grad_s), ("weight_std", p.dense.W.value),
                        ("weight_grad_std", p.dense.W.grad)):
            want = float(np.std(x.astype(np.longdouble)))
            assert got[name] == pytest.approx(want, rel=1e-9, abs=0.0), (p.index, name)


@pytest.mark.parametrize("dtype,scale", [(torch.float64, 1e200), (torch.float64, 1e-300),
                                         (torch.float64, 1e-50), (torch.float32, 1e20)])
def test_the_doctors_update_ratios_of_weights_out_of_float32_range(dtype, scale):
    """The torch doctor's training (early_ratios, lr_too_high's metric) took the update ratio
    in float32: float64 weights of 1e200 read NaN, of 1e-50 or 1e-300 inf (or NaN), float32
    weights of 1e20 NaN (squares past 3.4e38)."""
    from depthlab.torch.train import _UpdateRatios

    gen = torch.Generator().manual_seed(0)
    w = nn.Parameter(torch.randn(6, 5, generator=gen, dtype=torch.float64).to(dtype) * scale)
    w.grad = torch.zeros_like(w)
    ratios = _UpdateRatios([(1, "fc", w)])
    ratios.snapshot()
    w0 = w.detach().clone()
    with torch.no_grad():
        w.add_(torch.randn(6, 5, generator=gen, dtype=torch.float64).to(dtype) * 1e-3 * scale)
    (row,) = ratios.rows(3)
    a = w.detach().double().numpy().astype(np.longdouble)
    b = w0.double().numpy().astype(np.longdouble)
    want = float(np.sqrt(((a - b) ** 2).sum() / (b ** 2).sum()))
    assert row[:4] == (3, 1, "fc", "update_ratio")
    assert row[4] == pytest.approx(want, rel=1e-9 if dtype == torch.float64 else 1e-5, abs=0.0)


@pytest.mark.parametrize("scale", [1e200, 1e-300])
def test_the_doctors_functional_activation_rows_of_float64_extremes(scale):
    """The torch doctor's act_std of an activation the forward applies itself (F.relu) was
    torch.std's: inf for float64 entries of 1e200, 0.0 for entries of 1e-300."""
    import torch.nn.functional as F

    from depthlab.torch import prescriptions as rx
    from depthlab.torch.doctor_probe import functional_act_rows

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(6, 8)
            self.b = nn.Linear(8, 2)

        def forward(self, x):
            return self.b(F.relu(self.a(x)))

    torch.manual_seed(0)
    model = Net().double()
    with torch.no_grad():
        model.a.weight.mul_(scale)
        model.a.bias.mul_(scale)
    x = torch.randn(5, 6, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = dlt.probe(model, x, None, lambda o, y: o.sum() / scale, percentiles=())
        # (rows of a probe that did not see the activation: the doctor measures it itself)
        table = table[~table.quantity.str.startswith("act_")
                      & ~table.quantity.isin(["dead_frac", "inactive_frac"])]
        out = functional_act_rows(table, model, x, rx.trace(model, x))
    got = float(out[(out.module == "a") & (out.quantity == "act_std")].value.iloc[0])
    with torch.no_grad():
        want = _ld(F.relu(model.a(x)))[1]
    assert got == pytest.approx(want, rel=1e-9, abs=0.0)
