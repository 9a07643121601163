"""probelean40 (round 40): the layer kernel's per-activation count loops.

For the library's sigmoid and tanh (bounded: ``saturated_frac``) and ReLU (``inactive_frac``)
:func:`depthlab.probes.kernels.layer` counts saturation, inactivity and dead units in loops of
their own (``_saturation_counts`` reads only ``a``, ``_step_counts`` only ``s``) instead of the
general row loop (``_row_counts``, which counts both and takes ``f'(s)`` from any source). The
reference is the same kernel with ``f'(s)`` given as an array (``DERIVATIVE_GIVEN``: the
general loop), computed as the activation's own ``derivative`` computes it: every quantity
must be the same bit for bit, NaN where NaN, status included, and the recorder's fractions
those of the NumPy path.
"""

from __future__ import annotations

import numpy as np
import pytest

from depthlab.models import mlp
from depthlab.probes import ProbeRecorder, accel
from depthlab.probes.fused import _ranks_fractions
from depthlab.training import fit

pytestmark = pytest.mark.skipif(not accel.available(), reason="compiled kernels not installed")

PCT = (2.0, 15.0, 50.0, 85.0, 98.0)


def _layer_case(k, how: int, dtype, shape: tuple[int, int], kind: str, gen):
    """``(s, a, D, family)``: pre-activations of ``kind`` (plain; dead: a unit whose ``s`` is
    <= 0 on every row, zeros included; saturated: units far in the tails; nan; inf), the
    activation and its derivative as the library computes them, in ``dtype``."""
    s = (gen.standard_normal(shape) * 3).astype(dtype)
    c = shape[1]
    if kind == "dead":
        s[:, 0] = -np.abs(s[:, 0])
        s[:, c // 2] = 0
        s[0, c - 1] = 0
    elif kind == "saturated":
        s[:, 0] = 60
        s[:, c // 2] = -60
    elif kind == "nan":
        s[-1, -1] = np.nan
    elif kind == "inf":
        s[0, 0] = -np.inf
    one = s.dtype.type(1)
    with np.errstate(all="ignore"):
        if how == k.DERIVATIVE_SIGMOID:
            a = (one / (one + np.exp(-s))).astype(dtype)
            d, family = (one - a) * a, k.FAMILY_BOUNDED
        elif how == k.DERIVATIVE_TANH:
            a = np.tanh(s)
            d, family = one - a * a, k.FAMILY_BOUNDED
        else:
            a = np.maximum(s, 0)
            d, family = np.where(s > 0, one, s.dtype.type(0)), k.FAMILY_RELU
    return s, a, np.ascontiguousarray(d, dtype=dtype), family


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("how_name", ["DERIVATIVE_SIGMOID", "DERIVATIVE_TANH",
                                      "DERIVATIVE_STEP"])
def test_count_loops_equal_the_general_loop(dtype, how_name):
    """Every quantity of ``kernels.layer`` with the derivative computed in the pass equals the
    same call with the derivative given (the general row loop), bit for bit: shapes down to one
    entry, dead and saturated units, NaN and infinite entries, percentiles on and off."""
    k = accel.kernels()
    how = getattr(k, how_name)
    gen = np.random.default_rng(40)
    empty = np.empty(0, dtype=dtype)
    for shape in ((1, 1), (2, 3), (60, 100), (5, 517)):
        for kind in ("plain", "dead", "saturated", "nan", "inf"):
            s, a, d, family = _layer_case(k, how, dtype, shape, kind, gen)
            g = (gen.standard_normal(s.size) * 1e-3).astype(dtype)
            w = gen.standard_normal(shape[1] * 3).astype(dtype)
            dw = gen.standard_normal(w.size).astype(dtype)
            for pct in (PCT, ()):
                ranks, t = _ranks_fractions(s.size, pct)
                for fam in (family, k.FAMILY_OTHER):
                    fast = k.layer(s, a, empty.reshape(0, 0), how, 0.0125, fam, g, w, dw,
                                   ranks, t, True, empty)
                    ref = k.layer(s, a, d, k.DERIVATIVE_GIVEN, 0.0125, fam, g, w, dw,
                                  ranks, t, True, empty)
                    np.testing.assert_array_equal(fast, ref, err_msg=f"{shape} {kind} {pct}")


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_recorder_fractions_equal_the_numpy_path(activation, dtype):
    """A recorder every step on a small network with saturated or dead units (shifted biases)
    and a batch of 2: ``saturated_frac``, ``dead_frac`` and ``inactive_frac`` exactly those of
    the NumPy path (NaN where the activation has none)."""
    gen = np.random.default_rng(7)
    x = gen.standard_normal((24, 6)).astype(dtype)
    y = gen.integers(0, 3, 24)
    frames = []
    for numpy in (False, True):
        net = mlp([6, 9, 7, 3], activation=activation, init="glorot_uniform", seed=3,
                  dtype=dtype)
        layers = net.dense_layers()
        shift = -30.0 if activation == "relu" else 1000.0  # f'(s) exactly 0 in float64 too
        layers[0].b.value[:3] = shift
        layers[1].b.value[:2] = shift
        rec = ProbeRecorder(every=1, histogram_steps=())
        with accel.numpy_only() if numpy else np.errstate():
            fit(net, x, y, loss="cross_entropy", optimizer="sgd", lr=0.1, batch_size=2,
                epochs=None, max_steps=4, eval_train=False, callbacks=[rec])
        df = rec.frame()
        frames.append(df[df.quantity.isin(["saturated_frac", "dead_frac", "inactive_frac"])]
                      .reset_index(drop=True))
    assert len(frames[0]) == 3 * 2 * 4  # three fractions, two layers, four records
    assert frames[0][["step", "layer", "quantity"]].equals(frames[1][["step", "layer",
                                                                       "quantity"]])
    np.testing.assert_array_equal(frames[0]["value"].to_numpy(), frames[1]["value"].to_numpy())
    dead = frames[0][frames[0].quantity == "dead_frac"]["value"]
    assert (dead > 0).any()  # the shifted units are dead (derivative 0 on every example)
