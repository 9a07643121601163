"""Round 36 (probespeed36): the recorder's per-point fast path (``fused.LayerStats``) gives the
general path's values bit for bit (``fused.kernel_layer_stats``), also where it reads a layer's
dead units from dL/ds instead of computing f'(s) (activations with the default ``backward``:
GELU, swish, mish, ELU, SELU, leaky ReLU), and where float64 squares underflow."""

from __future__ import annotations

import numpy as np
import pytest

from depthlab.activations import ActivationFn, get_activation
from depthlab.layers import Activation
from depthlab.models import mlp
from depthlab.probes import ProbeRecorder, accel
from depthlab.probes import fused as fused_module
from depthlab.probes.fused import LayerStats, kernel_layer_stats
from depthlab.probes.stats import PERCENTILES, layer_quantities
from depthlab.training import fit

pytestmark = pytest.mark.skipif(not accel.available(), reason="compiled kernels not installed")

DEAD = layer_quantities(PERCENTILES).index("dead_frac")


def _pass(net, x, seed=0):
    """One training-mode forward and backward (the caches a record reads)."""
    out = net.forward(x, training=True)
    g = np.random.default_rng(seed).standard_normal(out.shape).astype(out.dtype)
    net.backward(g, input_grad=False)


def _same(fast, general):
    assert (fast is None) == (general is None)
    if fast is not None:
        np.testing.assert_array_equal(fast, general)


def _records(net, x, steps=3, percentiles=PERCENTILES, change=None):
    """LayerStats' values next to the general path's, record after record (the fast path is
    taken from the second record on)."""
    points = net.probe_points()
    stats = [LayerStats(p, percentiles) for p in points]
    for step in range(steps):
        if change is not None:
            change(net, step)
        _pass(net, x, step)
        for p, ls in zip(points, stats):
            fast = ls()
            _same(fast, kernel_layer_stats(p, percentiles))
            yield p, ls, fast


@pytest.mark.parametrize("name", ["gelu", "swish", "mish", "elu", "selu", "leaky_relu",
                                  "relu", "tanh", "sigmoid", "softsign"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fast_path_equals_general_path(name, dtype):
    net = mlp([7, 13, 11, 3], activation=name, seed=1, dtype=dtype)
    x = np.random.default_rng(2).standard_normal((9, 7)).astype(dtype)  # an odd batch
    kept = [ls._args is not None for _, ls, _ in _records(net, x)]
    if get_activation(name).name in ("gelu", "swish", "mish", "elu", "selu", "leaky_relu"):
        assert all(kept)  # the dL/ds route keeps their arguments: the fast path is taken


@pytest.mark.parametrize("name", ["gelu", "elu"])
def test_units_without_gradient_are_decided_by_the_derivative(name):
    net = mlp([6, 10, 8, 2], activation=name, seed=3)
    x = np.random.default_rng(4).standard_normal((16, 6)).astype(np.float32)
    first, second = net.dense_layers()[0], net.dense_layers()[1]
    # unit 0 of layer 1 gets no gradient (its outgoing weights are 0): dL/ds = 0 throughout,
    # yet f'(s) != 0 there (not dead); unit 1 has s << 0, where f'(s) is 0 (dead)
    second.W.value[0] = 0.0
    first.W.value[:, 1] = 0.0
    first.b.value[1] = -200.0
    rows = list(_records(net, x))
    for p, _, fast in rows:
        if p.index == 1:
            assert fast[DEAD] == 0.1  # unit 1 alone


def test_custom_backward_is_not_read_for_dead_units():
    class Doubled(ActivationFn):  # its own backward: dL/ds says nothing about f'(s)
        name = "doubled"
        max_derivative = 2.0

        def forward(self, s):
            return 2 * s

        def derivative(self, s, a):
            return np.zeros_like(s)  # (a wrong derivative: every unit reads as dead)

        def backward(self, s, a, grad_a):
            return 2 * grad_a

    net = mlp([5, 6, 2], activation="tanh", seed=0)
    act = next(layer for layer in net.leaves() if isinstance(layer, Activation))
    act.fn = Doubled()
    x = np.random.default_rng(0).standard_normal((8, 5)).astype(np.float32)
    for _, _, fast in _records(net, x):
        assert fast[DEAD] == 1.0


def test_float64_squares_that_underflow_take_the_numpy_path():
    net = mlp([8, 16, 16, 3], activation="tanh", seed=0, dtype="float64")
    x = np.random.default_rng(0).standard_normal((20, 8))

    def shrink(net, step):  # plain layers first (the fast path's arguments kept), then tiny
        if step == 2:
            for p in net.parameters():
                p.value *= 1e-160
    rows = list(_records(net, x, change=shrink))
    assert all(ls._args is not None for _, ls, _ in rows[:2])
    assert all(fast is None for _, _, fast in rows[-2:])  # as the general path: NumPy decides


@pytest.mark.parametrize("name, options", [
    ("gelu", dict(batchnorm=True, dropout=0.2)),
    ("swish", dict(batchnorm=True, dropout=0.2)),
    ("elu", dict(residual=True, dtype="float64")),
    ("mish", dict(residual=True, dropout=0.1, dtype="float64")),
    ("leaky_relu", dict(batchnorm=True, residual=True)),
])
def test_recorder_tables_equal_the_general_paths(name, options, monkeypatch):
    def run():
        net = mlp([10, 12, 12, 12, 4], activation=name, seed=5, **options)
        g = np.random.default_rng(6)
        x = g.standard_normal((45, 10)).astype(net.dtype)
        y = g.integers(0, 4, 45)
        rec = ProbeRecorder(every=1, histogram_steps=())
        fit(net, x, y, batch_size=15, epochs=2, callbacks=[rec], eval_train=False, seed=0)
        return rec.frame()

    general_calls = []
    general = fused_module.kernel_layer_stats
    monkeypatch.setattr(fused_module, "kernel_layer_stats",
                        lambda *a: general_calls.append(1) or general(*a))
    fast = run()
    dead = fast[fast["quantity"] == "dead_frac"]
    points = (dead["step"] == 0).sum()
    assert len(general_calls) == points  # each point prepared once: every later record
    assert len(dead) >= 5 * points  # (of 5 or more) took the fast path
    monkeypatch.setattr(fused_module, "kernel_layer_stats", general)
    monkeypatch.setattr(LayerStats, "__call__",
                        lambda self, w_copy=None: kernel_layer_stats(self.point,
                                                                     self.percentiles, w_copy))
    general = run()
    assert len(fast) == len(general) > 0
    np.testing.assert_array_equal(fast["value"].to_numpy(), general["value"].to_numpy())
    assert fused_module._dead_at(len(PERCENTILES)) == DEAD
