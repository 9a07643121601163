"""probelean41 (round 41): the recorder's leaner per-record Python.

A record without histograms (the usual one) goes through a loop of its own in
``ProbeRecorder._layer_records`` (each point's snapshot buffer from a list kept with the snapshot
layout, ``_snapshot_list``), and :class:`depthlab.probes.fused.LayerStats` keeps its arguments
while ``s``, ``a`` and ``dL/ds`` keep the shape, dtype and strides they had when prepared
(C-ordered then). The reference for every value is the general loop (the same recorder with a
histogram at every record) and :func:`depthlab.probes.fused.kernel_layer_stats`: equal bit for
bit, NaN where NaN.
"""

from __future__ import annotations

import numpy as np
import pytest

from depthlab.losses import get_loss
from depthlab.models import mlp
from depthlab.probes import ProbeRecorder, accel
from depthlab.probes.fused import LayerStats, kernel_layer_stats
from depthlab.probes.stats import PERCENTILES
from depthlab.training import fit


def _frames(activation: str, dtype, every: int, options: dict) -> tuple:
    """The frames of two recorders on one training run: statistics only (the record loop of
    its own) and a histogram at every record (the general loop)."""
    g = np.random.default_rng(3)
    x = g.standard_normal((48, 7)).astype(dtype)
    y = g.integers(0, 3, 48)
    sizes = [7, 9, 9, 9, 3] if options.get("residual") else [7, 12, 9, 8, 3]
    net = mlp(sizes, activation=activation, seed=1, dtype=dtype, **options)
    fast = ProbeRecorder(every=every, histogram_steps=())
    general = ProbeRecorder(every=every, histogram_steps=range(0, 40, every))
    fit(net, x, y, lr=0.1, batch_size=8, epochs=None, max_steps=11,
        callbacks=[fast, general])
    return fast.frame(), general.frame(), general.histograms()


def _same_frames(a, b) -> None:
    assert a[["step", "layer", "quantity"]].equals(b[["step", "layer", "quantity"]])
    np.testing.assert_array_equal(a.value.to_numpy(), b.value.to_numpy())  # NaN where NaN


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("activation,options", [
    ("sigmoid", {}), ("relu", {"batchnorm": True}), ("gelu", {}), ("tanh", {"residual": True}),
])
@pytest.mark.parametrize("every", [1, 3])
def test_statistics_only_records_equal_the_general_loop(activation, options, dtype, every):
    fast, general, hist = _frames(activation, dtype, every, options)
    assert len(hist) and "update_ratio" in set(fast.quantity)
    _same_frames(fast, general)


def test_statistics_only_records_equal_the_general_loop_on_the_numpy_path():
    with accel.numpy_only():
        fast, general, _ = _frames("sigmoid", np.float32, 1, {})
    _same_frames(fast, general)


def _trainer(net):
    return type("T", (), {"net": net, "step": 0, "loss": get_loss("cross_entropy")})()


def test_snapshot_list_follows_the_snapshot_layout():
    net = mlp([5, 6, 4, 3], activation="tanh", seed=0)
    rec = ProbeRecorder(every=1)
    rec.on_train_begin(_trainer(net))
    points = net.probe_points()
    assert rec._snapshot_list(None) == (None,) * len(points)
    snaps = rec._snapshot_buffers()
    bufs = rec._snapshot_list(snaps)
    assert [b.shape for b in bufs] == [p.dense.W.value.shape for p in points]
    assert all(b is snaps[p.index][1] for b, p in zip(bufs, points))
    assert rec._snapshot_list(rec._snapshot_buffers()) is bufs  # same layout: kept
    net.dense_layers()[1].W.value = np.zeros((6, 7), np.float32)  # another shape
    again = rec._snapshot_list(rec._snapshot_buffers())
    assert again is not bufs and again[1].shape == (6, 7) and again[0] is bufs[0]


@pytest.mark.parametrize("which", ["s", "a", "grad_s", "all"])
@pytest.mark.parametrize("layout", ["fortran", "row of a larger array", "strided rows"])
def test_layer_stats_with_another_layout_equals_the_general_path(layout, which):
    g = np.random.default_rng(5)
    net = mlp([6, 9, 3], activation="sigmoid", seed=2)
    loss = get_loss("cross_entropy")
    x, y = g.standard_normal((10, 6)).astype(np.float32), g.integers(0, 3, 10)
    loss.forward(net.forward(x, training=True), y)
    net.backward(loss.backward(), input_grad=False, copy=False)
    p = net.probe_points()[0]
    fast = LayerStats(p, PERCENTILES)
    first = fast()
    assert fast._key is not None and np.array_equal(first, kernel_layer_stats(p, PERCENTILES),
                                                    equal_nan=True)
    act = p.activation
    s, a, gs = act.s, act.a, act.grad_s
    if layout == "fortran":  # not C-ordered: the general path
        new = [np.asfortranarray(v) for v in (s, a, gs)]
    elif layout == "row of a larger array":  # (1, 9) views, C-ordered, other strides
        new = [np.repeat(v, 2, axis=0)[::2][:1] for v in (s, a, gs)]
    else:  # every second row: not C-ordered
        new = [np.repeat(v, 2, axis=0)[::2] for v in (s, a, gs)]
    if which == "all":
        act.s, act.a, act.grad_s = new
    else:  # one array of another layout (the others keep theirs, made to match in shape)
        if layout == "row of a larger array":
            act.s, act.a, act.grad_s = (v[:1] for v in (s, a, gs))
        setattr(act, which, new[("s", "a", "grad_s").index(which)])
    got = fast()
    want = kernel_layer_stats(p, PERCENTILES)
    with accel.numpy_only(), np.errstate(all="ignore"):
        from depthlab.probes.stats import layer_stats

        ref = np.asarray(layer_stats(p, PERCENTILES), dtype=np.float64)
    if want is None:
        assert got is None
    else:
        assert np.array_equal(got, want, equal_nan=True)
        np.testing.assert_allclose(got, ref, rtol=2e-5, atol=1e-12)
    act.s, act.a, act.grad_s = s, a, gs  # back to the prepared layout: kept arguments again
    assert np.array_equal(fast(), first, equal_nan=True)
