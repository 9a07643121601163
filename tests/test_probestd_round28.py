"""Round 28 (probestd28): probe statistics of finite arrays whose sums of squares overflow."""

from __future__ import annotations

import math

import numpy as np
import pytest

from depthlab.losses import get_loss
from depthlab.models import mlp
from depthlab.probes import ProbeRecorder, accel
from depthlab.probes.recorder import update_norms
from depthlab.probes.stats import abs_mean, layer_quantities, layer_stats, mean_std
from depthlab.training import Callback, fit


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


@pytest.mark.parametrize("scale", [1e160, 1e300])
@pytest.mark.parametrize("path", ["kernels", "numpy"])
def test_update_norms_of_huge_finite_weights_are_finite_and_correct(scale, path):
    rng = np.random.default_rng(2)
    w0 = rng.standard_normal((30, 20)) * scale
    w = w0 + rng.standard_normal((30, 20)) * (scale * 1e-3)
    m = max(np.abs(w).max(), np.abs(w0).max())
    want0 = m * np.linalg.norm(w0 / m)
    want1 = m * np.linalg.norm(w / m - w0 / m)
    with np.errstate(all="ignore"):
        if path == "numpy":
            with accel.numpy_only():
                n0, n1 = update_norms(w, w0.copy())
        else:
            n0, n1 = update_norms(w, w0.copy())
    assert n0 == pytest.approx(want0, rel=1e-12)
    assert n1 == pytest.approx(want1, rel=1e-9)


def test_update_norms_of_non_finite_or_empty_weights_are_as_before():
    w0 = np.array([1e200, np.inf, 1.0])
    with np.errstate(all="ignore"):
        n0, _ = update_norms(w0.copy(), w0.copy())
        assert n0 == math.inf
        assert update_norms(np.zeros(0), np.zeros(0)) == (0.0, 0.0)


class _Grow(Callback):
    """Multiplies every weight by 1.001 in place after the optimizer (before the recorder's
    after_update): an update ratio of ~1e-3 whatever the weights' size."""

    def after_update(self, trainer, step, loss):
        for d in trainer.net.dense_layers():
            d.W.value *= 1.001


def _record(scale):
    g = np.random.default_rng(3)
    x, y = g.standard_normal((40, 5)), g.integers(0, 3, 40)
    net = mlp([5, 16, 12, 3], activation="identity", init="glorot_uniform", seed=0,
              dtype="float64")
    net.dense_layers()[0].W.value *= scale
    rec = ProbeRecorder(every=1, probe_x=x[:20], probe_y=y[:20], percentiles=())
    with np.errstate(all="ignore"):
        fit(net, x, y, lr=1e-200, batch_size=20, epochs=None, max_steps=3,
            callbacks=[_Grow(), rec])
    return rec.frame()


@pytest.mark.parametrize("path", ["kernels", "numpy"])
def test_a_recorded_float64_run_with_huge_finite_layers_reads_finite_statistics(path):
    if path == "numpy":
        with accel.numpy_only():
            frame = _record(1e160)
    else:
        frame = _record(1e160)
    wanted = ["pre_std", "act_std", "weight_std", "pre_mean", "grad_pre_std", "update_ratio"]
    rows = frame[frame.quantity.isin(wanted)]
    assert len(rows) and np.isfinite(rows.value).all(), rows[~np.isfinite(rows.value)]
    ratio = frame[(frame.quantity == "update_ratio") & (frame.layer == 1)].value
    assert len(ratio) and np.allclose(ratio, 1e-3, rtol=1e-6)
    pre = frame[(frame.quantity == "pre_std") & (frame.layer == 1)].value.to_numpy()
    plain = _record(1.0)
    pre1 = plain[(plain.quantity == "pre_std") & (plain.layer == 1)].value.to_numpy()
    np.testing.assert_allclose(pre, pre1 * 1e160, rtol=1e-12)
