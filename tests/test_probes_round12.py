"""Round 12 of the probe-overhead work (issue 14): the layer kernel's loops split into
vectorizable passes (:func:`depthlab.probes.kernels.shifted_sums`,
:func:`~depthlab.probes.kernels.column_range`, a derivative row per activation), the recorder's
kept kernel arguments (:class:`depthlab.probes.fused.LayerStats`) and reused snapshot layout.
Each is checked against a direct float64 NumPy computation or the general path it shortcuts,
with NaN, infinity, empty and float32-underflowing inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from depthlab.activations import get_activation
from depthlab.losses import get_loss
from depthlab.models import mlp
from depthlab.probes import ProbeRecorder, accel
from depthlab.probes.fused import LayerStats, _plan, kernel_layer_stats
from depthlab.probes.stats import PERCENTILES, layer_quantities
from depthlab.training import Callback, fit

pytestmark = pytest.mark.skipif(not accel.available(), reason="compiled kernels not installed")

PCT = (0.0, 2.0, 15.0, 50.0, 85.0, 98.0, 100.0)


def _k():
    return accel.kernels()


def _layer(s, a, how, thr, family, g=None, w=None, dw=None, percentiles=PCT, d=None,
           monotone=True):
    k = _k()
    e1 = np.empty(0, s.dtype)
    ranks, t = _plan(get_activation("identity"), s.size, percentiles, k)[4:]
    return k.layer(s, a, np.empty((0, 0), s.dtype) if d is None else d, how, thr, family,
                   e1 if g is None else g.ravel(), e1 if w is None else w.ravel(),
                   e1 if dw is None else dw.ravel(), ranks, t, monotone, e1)


def _reference(s, a, dv, thr, percentiles=PCT):
    """The first quantities of ``layer`` by float64 NumPy (two-pass moments, np.percentile),
    and the counts in the arrays' dtype as the kernel takes them."""
    s64, a64 = s.astype(np.float64), a.astype(np.float64)
    p = len(percentiles)
    pre = [s64.mean(), s64.std(), *np.percentile(s64, percentiles)]
    act = [a64.mean(), a64.std(), *np.percentile(a64, percentiles)]
    sat = np.count_nonzero(np.abs(dv) < s.dtype.type(thr)) / s.size
    dead = np.count_nonzero(np.all(dv == 0, axis=0)) / s.shape[1]
    inactive = np.count_nonzero(s <= 0) / s.size
    return np.array(pre + act), sat, dead, inactive, p


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["sigmoid", "tanh", "relu"])
@pytest.mark.parametrize("shape", [(60, 100), (1, 1), (3, 7), (2, 700)])
def test_layer_kernel_against_float64_numpy(dtype, name, shape):
    fn = get_activation(name)
    g = np.random.default_rng(12)
    s = (g.standard_normal(shape) * 3 + 0.5).astype(dtype)
    a = fn.forward(s.copy())
    dv = fn.derivative(s, a)
    k = _k()
    how = {"sigmoid": k.DERIVATIVE_SIGMOID, "tanh": k.DERIVATIVE_TANH,
           "relu": k.DERIVATIVE_STEP}[name]
    family = k.FAMILY_RELU if name == "relu" else k.FAMILY_BOUNDED
    thr = 0.05 * float(fn.max_derivative)
    out = _layer(s, a, how, thr, family)
    assert out[-1] == k.OK
    ref, sat, dead, inactive, p = _reference(s, a, dv, thr)
    got = np.concatenate([out[:2 + p], out[2 + p:4 + 2 * p]])
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-300)
    rest = 4 + 2 * p
    if name == "relu":
        assert math.isnan(out[rest]) and out[rest + 2] == inactive
    else:
        assert out[rest] == sat and math.isnan(out[rest + 2])
    assert out[rest + 1] == dead
    # the derivative given as an array: the same counts
    out_given = _layer(s, a, k.DERIVATIVE_GIVEN, thr, family, d=dv.reshape(s.shape))
    np.testing.assert_array_equal(out_given, out)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dead_units_and_ties(dtype):
    """A unit whose derivative is 0 on every example is dead; one nonzero entry revives it;
    percentiles over many tied values are the tied value."""
    k = _k()
    s = np.zeros((5, 4), dtype)
    s[:, 1] = -1.0
    s[2, 2] = 3.0  # unit 2 alive on one example only
    a = np.maximum(s, 0)
    out = _layer(s, a, k.DERIVATIVE_STEP, 0.05, k.FAMILY_RELU)
    p = len(PCT)
    assert out[-1] == k.OK
    assert out[4 + 2 * p + 1] == 3 / 4  # units 0, 1, 3
    assert out[4 + 2 * p + 2] == 19 / 20  # s <= 0 everywhere but one entry
    np.testing.assert_array_equal(out[2:2 + p], np.percentile(s.astype(np.float64), PCT))


@pytest.mark.parametrize("scale", [1e-20, 1e-30])
def test_tiny_float32_values_whose_squares_underflow(scale):
    """Entries whose float32 squares are 0 or denormal: the kernel's moments are float64 sums
    of the converted entries, so the std is the float64 std of the same numbers."""
    g = np.random.default_rng(3)
    s = (g.standard_normal((20, 30)) * scale).astype(np.float32)
    assert np.all(s.astype(np.float32) ** 2 < 1e-38)  # below float32's normal range
    k = _k()
    out = _layer(s, s.copy(), k.DERIVATIVE_GIVEN, 0.0, k.FAMILY_OTHER, g=s, w=s, dw=s,
                 d=np.ones_like(s))
    assert out[-1] == k.OK
    s64 = s.astype(np.float64)
    p = len(PCT)
    np.testing.assert_allclose(out[[0, 1, 2 + p, 3 + p]],
                               [s64.mean(), s64.std(), s64.mean(), s64.std()], rtol=1e-9)
    rest = 4 + 2 * p
    np.testing.assert_allclose(out[[rest + 3, rest + 4, rest + 5]],
                               [s64.std(), np.abs(s64).mean(), s64.std()], rtol=1e-6)
    assert out[rest + 3] > 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_entries_are_left_to_the_numpy_path(dtype, bad):
    k = _k()
    g = np.random.default_rng(4)
    s = g.standard_normal((6, 5)).astype(dtype)
    s[3, 2] = bad
    with np.errstate(all="ignore"):
        a = get_activation("tanh").forward(s.copy())
        assert _layer(s, a, k.DERIVATIVE_TANH, 0.05, k.FAMILY_BOUNDED)[-1] == k.NOT_FINITE


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_shifted_sums_and_column_range(dtype):
    k = _k()
    g = np.random.default_rng(5)
    x = (g.standard_normal((37, 11)) * 4 + 1e3).astype(dtype)
    c = float(x[0, 0])
    s1, s2 = k.shifted_sums(x.reshape(-1), c)
    d = x.astype(np.float64).ravel() - c
    np.testing.assert_allclose([s1, s2], [d.sum(), (d * d).sum()], rtol=1e-12)
    assert k.shifted_sums(x[:0, 0], 0.0) == (0.0, 0.0)  # no entries
    assert k.column_range(x) == (float(x.min()), float(x.max()))
    one = x[:1, :1].copy()
    assert k.column_range(one) == (float(one[0, 0]),) * 2
    z = np.array([[0.0, -0.0], [-0.0, 0.0]], dtype)
    assert k.column_range(z) == (0.0, 0.0)
    y = x.copy()
    y[5, 3], y[20, 7] = -np.inf, np.inf
    assert k.column_range(y) == (-math.inf, math.inf)


def _trained_net(dtype=np.float32, activation="sigmoid", steps=3):
    g = np.random.default_rng(6)
    net = mlp([9, 16, 12, 3], activation=activation, init="glorot_uniform", seed=1, dtype=dtype)
    x, y = g.standard_normal((40, 9)).astype(dtype), g.integers(0, 3, 40)
    fit(net, x, y, lr=0.1, batch_size=8, epochs=None, max_steps=steps)
    loss = get_loss("cross_entropy")
    loss.forward(net.forward(x[:10], training=True), y[:10])
    net.backward(loss.backward(), input_grad=False, copy=False)
    return net, x, y, loss


def _same(a, b):
    if a is None or b is None:
        return a is None and b is None
    return np.array_equal(a, b, equal_nan=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("activation", ["sigmoid", "relu", "gelu", "softsign"])
def test_layer_stats_keeps_arguments_with_the_same_results(dtype, activation):
    """LayerStats against kernel_layer_stats record after record: kept arguments, a new batch
    of another size, weights replaced by a new array, the snapshot buffer filled."""
    net, x, y, loss = _trained_net(dtype, activation)
    for p in net.probe_points():
        fast = LayerStats(p, PERCENTILES)
        buf, ref_buf = np.empty_like(p.dense.W.value), np.empty_like(p.dense.W.value)
        for rows in (10, 10, 7, 7):
            loss.forward(net.forward(x[:rows], training=True), y[:rows])
            net.backward(loss.backward(), input_grad=False, copy=False)
            got = fast(buf)
            want = kernel_layer_stats(p, PERCENTILES, w_copy=ref_buf)
            assert _same(got, want)
            np.testing.assert_array_equal(buf, p.dense.W.value)
            assert _same(fast(None), kernel_layer_stats(p, PERCENTILES))
        p.dense.W.value = p.dense.W.value * 0.5  # a new array: not the kept view
        assert _same(fast(buf), kernel_layer_stats(p, PERCENTILES, w_copy=ref_buf))
        np.testing.assert_array_equal(buf, p.dense.W.value)
        p.dense.W.value += 1.0  # in place: the kept view sees it
        assert _same(fast(buf), kernel_layer_stats(p, PERCENTILES, w_copy=ref_buf))


def test_layer_stats_follows_the_general_path_for_non_finite_and_numpy_only():
    net, x, y, loss = _trained_net()
    p = net.probe_points()[0]
    fast = LayerStats(p, PERCENTILES)
    assert fast() is not None and fast() is not None  # prepared, then kept
    p.activation.s[0, 0] = np.nan
    assert fast() is None  # the NumPy path decides
    p.activation.s[0, 0] = 0.25
    with accel.numpy_only():
        assert fast() is None
    assert _same(fast(), kernel_layer_stats(p, PERCENTILES))
    p.activation.s = np.zeros((0, 16), np.float32)
    p.activation.a = np.zeros((0, 16), np.float32)
    p.activation.grad_s = np.zeros((0, 16), np.float32)
    assert fast() is None  # an empty batch: nothing for the kernel


class _Replace(Callback):
    """Replaces every weight array by a new one (same values scaled) after some updates."""

    def after_update(self, trainer, step, loss):
        if step % 4 == 0:
            for d in trainer.net.dense_layers():
                d.W.value = d.W.value * 0.99


@pytest.mark.parametrize("every", [1, 3])
def test_recorder_with_replaced_weights_agrees_with_the_numpy_path(every):
    g = np.random.default_rng(8)
    x, y = g.standard_normal((64, 6)).astype(np.float32), g.integers(0, 3, 64)

    def record():
        net = mlp([6, 12, 9, 3], activation="tanh", seed=0)
        rec = ProbeRecorder(every=every)
        fit(net, x, y, lr=0.1, batch_size=8, epochs=None, max_steps=13,
            callbacks=[_Replace(), rec])
        return rec.frame(), rec.histograms(), net

    frame, hist, net = record()
    with accel.numpy_only():
        frame2, hist2, net2 = record()
    assert frame[["step", "layer", "quantity"]].equals(frame2[["step", "layer", "quantity"]])
    np.testing.assert_allclose(frame.value, frame2.value, rtol=2e-5, atol=1e-12)
    assert hist.equals(hist2)
    for d, d2 in zip(net.dense_layers(), net2.dense_layers()):
        np.testing.assert_array_equal(d.W.value, d2.W.value)


def test_training_is_bit_identical_with_the_recorder_and_keeps_no_arrays():
    g = np.random.default_rng(9)
    x, y = g.standard_normal((96, 8)).astype(np.float32), g.integers(0, 4, 96)

    def train(callbacks):
        net = mlp([8, 20, 20, 4], activation="sigmoid", seed=2)
        hist = fit(net, x, y, lr=0.1, batch_size=12, epochs=None, max_steps=17,
                   callbacks=callbacks)
        return net, hist

    net0, h0 = train([])
    rec = ProbeRecorder(every=1)
    net1, h1 = train([rec])
    assert h0.step_loss == h1.step_loss
    for p0, p1 in zip(net0.parameters(), net1.parameters()):
        np.testing.assert_array_equal(p0.value, p1.value)
    state = [v for k, v in vars(rec).items() if k != "_kernel_stats"]
    assert not any(isinstance(v, np.ndarray) for v in state)
    assert rec._w_before == {} and rec._snapshots is None and rec._w_buffers == {}
    assert all(ks._key is None and ks._args is None for ks in rec._kernel_stats)
    assert set(rec.frame().quantity) >= set(layer_quantities(PERCENTILES)) | {"update_ratio"}


def test_snapshot_layout_is_reused_and_rebuilt_when_a_weight_changes_shape():
    net, x, y, _ = _trained_net()
    rec = ProbeRecorder(every=1)
    trainer = type("T", (), {"net": net, "step": 0, "loss": get_loss("cross_entropy")})()
    rec.on_train_begin(trainer)
    first = rec._snapshot_buffers()
    assert rec._snapshot_buffers() is first
    d = net.dense_layers()[1]
    d.W.value = np.zeros((16, 5), np.float32)  # another shape: a new buffer and layout
    second = rec._snapshot_buffers()
    assert second is not first and second[2][1].shape == (16, 5)
    assert second[1][1] is first[1][1]  # the unchanged layer keeps its buffer
