"""Round 28 (probestd28): probe statistics of finite arrays whose sums of squares overflow."""

from __future__ import annotations

import math

import numpy as np
import pytest

from depthlab.losses import get_loss
from depthlab.models import mlp
from depthlab.probes import accel
from depthlab.probes.stats import abs_mean, layer_quantities, layer_stats, mean_std


def _reference(x):
    """mean, std, mean |x| of ``x`` computed on ``x / max|x|`` in float64 and scaled back."""
    f = np.asarray(x, dtype=np.float64).reshape(-1)
    m = float(np.abs(f).max())
    g = f / m
    return m * float(g.mean()), m * float(g.std()), m * float(np.abs(g).mean())


def _to(x, top, dtype):
    """``x`` rescaled (in float64) so that its largest magnitude is ``top``."""
    f = np.asarray(x, dtype=np.float64)
    return (f * (top / np.abs(f).max())).astype(dtype)


def _huge_net(dtype, scale, seed=0):
    """A measured net whose probe caches (s, a, dL/ds, W, dL/dW) are then multiplied by
    ``scale``: finite entries whose squares (or sums) overflow the float64/float32 range."""
    g = np.random.default_rng(seed)
    net = mlp([5, 24, 16, 3], activation="identity", init="glorot_uniform", seed=seed,
              dtype=dtype)
    x = g.standard_normal((30, 5)).astype(dtype)
    y = g.integers(0, 3, 30)
    loss = get_loss("cross_entropy")
    loss.forward(net.forward(x, training=True), y)
    net.backward(loss.backward(), input_grad=False)
    for p in net.probe_points():
        act = p.activation
        # an offset so the mean is not ~0 (the cancellation branch is taken too)
        act.s = (act.s + 0.3).astype(dtype) * dtype(scale)
        act.a = act.s.copy()
        act.grad_s = _to(act.grad_s, scale, dtype)
        p.dense.W.value *= dtype(scale)
        p.dense.W.grad[...] = _to(p.dense.W.grad, scale, dtype)
    return net


@pytest.mark.parametrize("dtype,scale", [(np.float64, 1e160), (np.float64, 1e300),
                                         (np.float64, 1.5e305), (np.float32, 1e37)])
@pytest.mark.parametrize("path", ["kernels", "numpy"])
def test_probe_statistics_of_huge_finite_layers_are_finite_and_correct(dtype, scale, path):
    net = _huge_net(dtype, scale)
    names = layer_quantities(())
    with np.errstate(all="ignore"):
        if path == "numpy":
            with accel.numpy_only():
                rows = [layer_stats(p, ()) for p in net.probe_points()]
        else:
            rows = [layer_stats(p, ()) for p in net.probe_points()]
    rtol = 1e-12 if dtype == np.float64 else 1e-6
    for p, row in zip(net.probe_points(), rows):
        got = dict(zip(names, row))
        act = p.activation
        checks = {
            "pre_mean": _reference(act.s)[0], "pre_std": _reference(act.s)[1],
            "act_mean": _reference(act.a)[0], "act_std": _reference(act.a)[1],
            "grad_pre_std": _reference(act.grad_s)[1],
            "grad_pre_absmean": _reference(act.grad_s)[2],
            "weight_std": _reference(p.dense.W.value)[1],
            "weight_grad_std": _reference(p.dense.W.grad)[1],
            "weight_grad_absmean": _reference(p.dense.W.grad)[2],
        }
        for name, want in checks.items():
            assert math.isfinite(got[name]), (p.index, name, got[name])
            assert got[name] == pytest.approx(want, rel=rtol), (p.index, name)


@pytest.mark.parametrize("dtype,scale", [(np.float64, 1e155), (np.float64, 1e307),
                                         (np.float32, 1e20), (np.float32, 1e37)])
def test_mean_std_and_abs_mean_of_huge_finite_arrays(dtype, scale):
    rng = np.random.default_rng(1)
    x = ((rng.standard_normal(5000) + 0.4) * scale / 5).astype(dtype)
    with np.errstate(all="ignore"):
        m, s = mean_std(x)
        a = abs_mean(x)
    rm, rs, ra = _reference(x)
    rtol = 1e-12 if dtype == np.float64 else 1e-6
    assert m == pytest.approx(rm, rel=rtol)
    assert s == pytest.approx(rs, rel=rtol)
    assert a == pytest.approx(ra, rel=rtol)


def test_non_finite_entries_still_read_non_finite():
    x = np.array([1e200, -3e200, np.inf, 2.0])
    with np.errstate(all="ignore"):
        assert not math.isfinite(mean_std(x)[1])
        assert math.isnan(mean_std(np.array([1e200, np.nan]))[1])
        assert abs_mean(x) == math.inf
