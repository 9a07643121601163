"""The fast paths behind the probe-overhead work (issue 14) give the NumPy path's results:
histograms in one compiled call (activation clip included), bucket selection in float32 and in
float64 arithmetic, the layer kernel's table order, and the recorder's tables in both dtypes
and at both schedules."""

from __future__ import annotations

import re

import numpy as np
import pytest

from depthlab.activations import get_activation
from depthlab.losses import get_loss
from depthlab.models import mlp
from depthlab.probes import ProbeRecorder, accel
from depthlab.probes.fused import kernel_histogram, kernel_layer_stats
from depthlab.probes.histograms import HISTOGRAM_KINDS, histogram
from depthlab.probes.quantiles import order_statistics
from depthlab.probes.stats import layer_quantities, layer_stats
from depthlab.training import fit

pytestmark = pytest.mark.skipif(not accel.available(), reason="compiled kernels not installed")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["sigmoid", "tanh", "relu", "softsign"])
def test_activation_histograms_agree_with_the_numpy_path(dtype, name):
    fn = get_activation(name)
    g = np.random.default_rng(5)
    for scale in (0.5, 4.0, 60.0):  # inside the range, near it, far beyond a bounded one
        s = (g.standard_normal((40, 30)) * scale).astype(dtype)
        a = fn.forward(s)
        for kind, x in (("pre", s), ("act", a)):
            fast = kernel_histogram(kind, x, 20, fn)
            assert fast is not None
            with accel.numpy_only():
                slow = histogram(kind, x, 20, fn)
            assert fast[:2] == slow[:2]
            np.testing.assert_array_equal(fast[2], slow[2])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_histograms_of_nonnegative_and_constant_arrays(dtype):
    g = np.random.default_rng(6)
    arrays = [np.maximum(g.standard_normal(3000), 0), np.zeros(500), np.full(64, -2.0),
              np.abs(g.standard_normal(10)) * 1e-30]
    for x in arrays:
        x = x.astype(dtype)
        for kind in HISTOGRAM_KINDS:
            for n_bins in (1, 5, 50):
                fast = histogram(kind, x, n_bins)
                with accel.numpy_only():
                    slow = histogram(kind, x, n_bins)
                assert fast[:2] == slow[:2]
                np.testing.assert_array_equal(fast[2], slow[2])


def test_histogram_kernel_declines_what_the_numpy_path_decides():
    x = np.ones(10, dtype=np.float32)
    assert kernel_histogram("pre", x, 2**24) is None  # too many bins
    assert kernel_histogram("nope", x, 5) is None  # the NumPy path raises the error
    assert kernel_histogram("pre", x[:0], 5) is None
    x[3] = np.nan
    assert kernel_histogram("pre", x, 5) is None
    assert kernel_histogram("pre", np.arange(5), 5) is None  # integers: no kernel


@pytest.mark.parametrize("x", [
    np.array([3e38, -3e38, 1.0, 0.0] * 50, dtype=np.float32),  # range beyond float32
    (np.random.default_rng(7).standard_normal(5000) * 1e-36).astype(np.float32),  # scale big
    np.random.default_rng(8).standard_normal(7000).astype(np.float32),
    np.random.default_rng(9).standard_normal(7000),
])
def test_bucket_selection_in_either_arithmetic_is_exact(x):
    ranks = [0, 1, 17, x.size // 2, x.size - 2, x.size - 1]
    np.testing.assert_array_equal(order_statistics(x, ranks), np.sort(x)[ranks])


@pytest.mark.parametrize("activation", ["sigmoid", "relu", "elu"])
def test_layer_kernel_returns_the_table_order(activation):
    g = np.random.default_rng(10)
    net = mlp([5, 16, 8, 3], activation=activation, init="glorot_uniform", seed=1)
    loss = get_loss("cross_entropy")
    loss.forward(net.forward(g.standard_normal((24, 5)).astype(np.float32), training=True),
                 g.integers(0, 3, 24))
    net.backward(loss.backward(), input_grad=False)
    qs = (5.0, 50.0, 95.0)
    names = layer_quantities(qs)
    for p in net.probe_points():
        fast = kernel_layer_stats(p, qs)
        assert fast is not None and fast.dtype == np.float64 and fast.shape == (len(names),)
        with accel.numpy_only():
            slow = np.array(layer_stats(p, qs))
        for j, name in enumerate(names):
            if re.search(r"_p\d", name) or name.endswith("_frac"):  # order statistics, counts
                assert fast[j] == slow[j] or (np.isnan(fast[j]) and np.isnan(slow[j])), name
            else:
                np.testing.assert_allclose(fast[j], slow[j], rtol=2e-5, err_msg=name)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("every", [1, 4])
def test_recorder_tables_agree_with_the_numpy_path(dtype, every):
    g = np.random.default_rng(11)
    x, y = g.standard_normal((80, 9)).astype(dtype), g.integers(0, 4, 80)

    def record():
        net = mlp([9, 20, 14, 4], activation="tanh", init="glorot_uniform", seed=2, dtype=dtype)
        rec = ProbeRecorder(every=every, percentiles=(10, 50, 90))
        fit(net, x, y, lr=0.05, batch_size=16, epochs=None, max_steps=13, callbacks=[rec])
        return rec.frame(), rec.histograms()

    frame, hist = record()
    with accel.numpy_only():
        frame2, hist2 = record()
    assert frame[["step", "layer", "quantity"]].equals(frame2[["step", "layer", "quantity"]])
    rtol = 2e-5 if dtype == "float32" else 1e-10
    np.testing.assert_allclose(frame.value, frame2.value, rtol=rtol, atol=1e-12)
    assert hist.equals(hist2)
    ratios = frame[frame.quantity == "update_ratio"]
    assert sorted(set(ratios.step)) == [s for s in range(1, 14) if s % every == 0]
