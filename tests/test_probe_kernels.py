"""The compiled probe kernels (depthlab[fast], Numba) agree with the NumPy path that defines the
statistics: counts and order statistics exactly, moments to rounding; non-finite entries,
cancellation and every compiled dtype included; Numba is loaded only when first needed."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest

from depthlab.losses import get_loss
from depthlab.models import mlp
from depthlab.probes import ProbeRecorder, accel
from depthlab.probes.histograms import HISTOGRAM_KINDS, histogram
from depthlab.probes.recorder import update_norms
from depthlab.probes.stats import layer_quantities, layer_stats
from depthlab.training import Callback, fit

EXACT = ("saturated_frac", "dead_frac", "inactive_frac")


def test_kernels_are_installed_with_the_dev_extra():
    assert accel.available(), "numba is in the dev extra: the kernel path must be tested"


def _measured_net(activation, dtype, seed=0, shift=0.0):
    g = np.random.default_rng(seed)
    net = mlp([7, 33, 20, 4], activation=activation, init="glorot_uniform", seed=seed,
              dtype=dtype)
    for d in net.dense_layers()[:-1]:
        d.b.value += shift
    x = g.standard_normal((41, 7)).astype(dtype)
    y = g.integers(0, 4, 41)
    loss = get_loss("cross_entropy")
    loss.forward(net.forward(x, training=True), y)
    net.backward(loss.backward(), input_grad=False)
    return net


def _both_paths(net, percentiles=(0, 2, 15, 50, 85, 98, 100)):
    with np.errstate(all="ignore"):
        fast = [layer_stats(p, percentiles) for p in net.probe_points()]
        with accel.numpy_only():
            slow = [layer_stats(p, percentiles) for p in net.probe_points()]
    return np.array(fast), np.array(slow), layer_quantities(percentiles)


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu", "leaky_relu", "gelu",
                                        "softsign", "identity", "selu"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_layer_statistics_agree_with_the_numpy_path(activation, dtype):
    fast, slow, names = _both_paths(_measured_net(activation, dtype))
    rtol = 2e-5 if dtype == "float32" else 1e-11
    for j, name in enumerate(names):
        if name in EXACT or re.search(r"_p\d", name):  # counts, order statistics: exact
            np.testing.assert_array_equal(fast[:, j], slow[:, j], err_msg=name)
        else:
            np.testing.assert_allclose(fast[:, j], slow[:, j], rtol=rtol, atol=1e-30,
                                       err_msg=name)


def test_large_mean_small_spread_is_summed_again_around_the_mean():
    net = _measured_net("identity", "float32", shift=3e3)
    fast, _, names = _both_paths(net)
    s = net.probe_points()[0].activation.s.astype(np.float64)
    assert fast[0, names.index("pre_std")] == pytest.approx(s.std(), rel=1e-6)
    assert fast[0, names.index("pre_mean")] == pytest.approx(s.mean(), rel=1e-9)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_entries_give_the_numpy_results(bad):
    net = _measured_net("tanh", "float32")
    p = net.probe_points()[0]
    p.activation.s[3, 5] = bad
    p.dense.W.grad[0, 0] = bad
    fast, slow, _ = _both_paths(net)
    np.testing.assert_array_equal(fast[0], slow[0])  # the layer itself: the NumPy path
    np.testing.assert_allclose(fast[1:], slow[1:], rtol=2e-5)


def _arrays(dtype):
    g = np.random.default_rng(7)
    yield g.standard_normal((64, 50))
    yield np.maximum(g.standard_normal(5000), 0)  # ReLU outputs: half zeros
    yield g.standard_cauchy(3001) * 1e3
    yield np.full(100, 0.25)
    with_bad = g.standard_normal(999)
    with_bad[[1, 50, 700]] = [np.nan, np.inf, -np.inf]
    yield with_bad
    if dtype == np.float32:
        yield np.array([3e38, -3e38] * 300)  # differences overflow float32
    yield g.standard_normal(4000) * 1e-40  # denormal in float32


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_histograms_agree_with_the_numpy_path(dtype):
    for x in _arrays(dtype):
        x = x.astype(dtype)
        for kind in HISTOGRAM_KINDS:
            for n_bins in (1, 7, 50):
                with np.errstate(all="ignore"):
                    lo, hi, counts = histogram(kind, x, n_bins)
                    with accel.numpy_only():
                        lo2, hi2, counts2 = histogram(kind, x, n_bins)
                assert (lo, hi) == (lo2, hi2)
                np.testing.assert_array_equal(counts, counts2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("step", [1e-3, 1e-22])  # 1e-22: squares below float32 range
def test_update_norms_agree_with_the_numpy_path(dtype, step):
    g = np.random.default_rng(1)
    w0 = (g.standard_normal((30, 40)) * step * 1e3).astype(dtype)
    w = w0 + (step * g.standard_normal(w0.shape)).astype(dtype)
    exact = [np.linalg.norm(w0.astype(np.float64)),
             np.linalg.norm(w.astype(np.float64) - w0.astype(np.float64))]
    rtol = 1e-6 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(update_norms(w, w0.copy()), exact, rtol=rtol)
    if step > 1e-10:  # the NumPy path sums float32 squares in float32 (BLAS)
        with accel.numpy_only():
            np.testing.assert_allclose(update_norms(w, w0.copy()), exact, rtol=10 * rtol)


class _Shrink(Callback):
    """Changes the weights after the optimizer (max-norm style) or at the end of an epoch."""

    def __init__(self, when):
        self.when = when

    def _shrink(self, trainer):
        for d in trainer.net.dense_layers():
            d.W.value *= 0.97

    def after_update(self, trainer, step, loss):
        if self.when == "after_update":
            self._shrink(trainer)

    def on_epoch_end(self, trainer, epoch, metrics):
        if self.when == "epoch_end":
            self._shrink(trainer)


@pytest.mark.parametrize("every,other", [(1, None), (3, None), (1, "after_update"),
                                         (2, "epoch_end")])
def test_recorder_tables_agree_with_the_numpy_path(every, other):
    """Also with a callback that changes the weights after the recorder's after_update (its own
    after_update, or on_epoch_end)."""
    g = np.random.default_rng(2)
    x, y = g.standard_normal((96, 6)).astype(np.float32), g.integers(0, 3, 96)

    def record():
        net = mlp([6, 12, 9, 3], activation="relu", init="he_normal", seed=0)
        rec = ProbeRecorder(every=every)
        callbacks = {None: [rec], "after_update": [rec, _Shrink(other)],
                     "epoch_end": [_Shrink(other), rec]}[other]  # the recorder last
        fit(net, x, y, lr=0.1, batch_size=16, epochs=None, max_steps=14, callbacks=callbacks)
        return rec.frame(), rec.histograms()

    frame, hist = record()
    with accel.numpy_only():
        frame2, hist2 = record()
    assert frame[["step", "layer", "quantity"]].equals(frame2[["step", "layer", "quantity"]])
    np.testing.assert_allclose(frame.value, frame2.value, rtol=2e-5, atol=1e-12)
    assert hist.equals(hist2)


def _run(code, **env):
    import os

    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=120)


def test_numba_is_imported_on_the_first_measurement_only():
    code = ("import sys, numpy as np, depthlab, depthlab.probes as p\n"
            "from depthlab.probes.stats import percentiles_of\n"
            "assert 'numba' not in sys.modules\n"
            "percentiles_of(np.arange(5000.0), [50])\n"
            "print('numba' in sys.modules)")
    out = _run(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True"


def test_environment_variable_selects_the_numpy_path():
    code = ("import sys, numpy as np\n"
            "from depthlab.probes import accel\n"
            "from depthlab.probes.stats import percentiles_of\n"
            "print(percentiles_of(np.arange(5000.0), [50]), accel.available(),"
            " 'numba' in sys.modules)")
    out = _run(code, DEPTHLAB_PROBE_KERNELS="numpy")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[2499.5] False False"


def test_missing_numba_falls_back_to_numpy(monkeypatch):
    import depthlab.probes

    monkeypatch.delattr(depthlab.probes, "kernels", raising=False)
    monkeypatch.setitem(sys.modules, "depthlab.probes.kernels", None)  # import fails
    monkeypatch.setitem(accel._state, "kernels", accel._UNSET)
    assert accel.kernels() is None
    net = _measured_net("tanh", "float32")
    stats = layer_stats(net.probe_points()[0])
    with accel.numpy_only():
        assert stats == layer_stats(net.probe_points()[0])


def test_unusable_cache_directory_warns_and_falls_back(monkeypatch):
    import builtins

    import depthlab.probes

    real_import = builtins.__import__

    def no_locator(name, globals=None, locals=None, fromlist=(), level=0):
        if level == 1 and fromlist and "kernels" in fromlist:
            raise RuntimeError("cannot cache function 'moments': no locator available")
        return real_import(name, globals, locals, fromlist, level)

    monkeypatch.delattr(depthlab.probes, "kernels", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_locator)
    monkeypatch.setitem(accel._state, "kernels", accel._UNSET)
    with pytest.warns(RuntimeWarning, match="no locator available.*using NumPy"):
        assert accel.kernels() is None


def test_warm_up_reports_import_and_kernel_times():
    t = accel.warm_up()
    assert set(t) == {"import", "kernels"} and all(v >= 0 for v in t.values())


def test_ranges_the_buckets_cannot_divide_are_selected_otherwise():
    net = _measured_net("identity", "float64")
    p = net.probe_points()[0]
    tiny = np.random.default_rng(3).integers(-50, 50, p.activation.s.shape) * 5e-324
    p.activation.s = tiny  # a range of a few denormals: 4096 / (max - min) overflows
    p.activation.a = tiny.copy()
    fast, slow, names = _both_paths(net)
    j = [k for k, name in enumerate(names) if re.search(r"_p\d", name)]
    np.testing.assert_array_equal(fast[0, j], slow[0, j])
    np.testing.assert_array_equal(fast[0, j[:7]], np.percentile(tiny, (0, 2, 15, 50, 85, 98, 100)))


def test_kernel_constants_are_the_numpy_path_constants():
    from depthlab.probes import kernels, stats

    assert kernels.CANCELLATION_RATIO == stats._CANCELLATION_RATIO
    assert (kernels.TINY_SQUARE_32, kernels.TINY_SQUARE_64) == (stats._TINY_SQUARE[4],
                                                                stats._TINY_SQUARE[8])


@pytest.mark.parametrize("scale", [1e-20, 1e-22, 3e-23])
def test_vanishing_gradients_whose_float32_squares_underflow(scale):
    net = _measured_net("sigmoid", "float32")
    g = np.random.default_rng(4)
    for p in net.probe_points():
        for arr in (p.activation.grad_s, p.dense.W.grad):
            arr[...] = (g.standard_normal(arr.shape) * scale).astype(np.float32)
    fast, _, names = _both_paths(net)
    for i, p in enumerate(net.probe_points()):
        gs = p.activation.grad_s.astype(np.float64)
        dw = p.dense.W.grad.astype(np.float64)
        got = dict(zip(names, fast[i]))
        assert got["grad_pre_std"] == pytest.approx(gs.std(), rel=1e-6, abs=0)
        assert got["grad_pre_absmean"] == pytest.approx(np.abs(gs).mean(), rel=1e-6, abs=0)
        assert got["weight_grad_std"] == pytest.approx(dw.std(), rel=1e-6, abs=0)
