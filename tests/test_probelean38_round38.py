"""ProbeRecorder on the training batches (every=3) equals ``dl.probe`` row for row, bit for bit
(issue 14, round 38: the recorder's cached kernel arguments, reused snapshot layout and block
rows must not change a recorded value or row).

A ``_Spy`` callback placed before the recorder copies, in ``before_update`` of step ``k + 1``,
the network after ``k`` updates (``copy.deepcopy``) and the indices of that update's
mini-batch (its rows found in ``x``); afterwards ``dl.probe`` measures each copy on that
mini-batch: the record of step ``k`` must hold exactly those rows and values (the recorder's
loss is the training loss, which ``dl.probe`` recomputes; it has no ``acc``). Several
activations (one whose ``f'(s)`` the kernel reads from an array), batch norm, residual blocks,
float32 and float64; the update ratio against ``||W_k - W_{k-1}|| / ||W_{k-1}||`` of the same
copies by the public ``update_norms``."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest

import depthlab as dl
from depthlab.models import mlp
from depthlab.probes import ProbeRecorder, accel
from depthlab.probes.recorder import update_norms
from depthlab.training import Callback, fit

EVERY = 3
STEPS = 10


class _Spy(Callback):
    """The network before each update and the rows of its mini-batch."""

    def __init__(self, x: np.ndarray) -> None:
        self.rows = {r.tobytes(): i for i, r in enumerate(x)}
        self.nets: dict[int, object] = {}  # k -> network after k updates
        self.batches: dict[int, np.ndarray] = {}  # k -> indices of update k + 1's batch

    def before_update(self, trainer, step: int) -> None:
        net = trainer.net
        xb = net.dense_layers()[0].x  # the first layer's input: the mini-batch
        self.batches[step - 1] = np.array([self.rows[r.tobytes()] for r in xb])
        self.nets[step - 1] = copy.deepcopy(net)

    def after_update(self, trainer, step: int, loss: float) -> None:
        self.nets[step] = copy.deepcopy(trainer.net)


def _expected(spy: _Spy, x: np.ndarray, y: np.ndarray) -> dict:
    want: dict[tuple[int, int, str], float] = {}
    for k in range(0, STEPS, EVERY):
        idx = spy.batches[k]
        df = dl.probe(copy.deepcopy(spy.nets[k]), x[idx], y[idx])
        for r in df.itertuples():
            if r.quantity != "acc":
                want[(k, int(r.layer), r.quantity)] = float(r.value)
        if k > 0:  # the update ratio of step k: W_k against W_{k-1}
            before = spy.nets[k - 1].probe_points()
            after = spy.nets[k].probe_points()
            for p0, p1 in zip(before, after):
                if p1.dense is not None:
                    n0, n1 = update_norms(p1.dense.W.value, p0.dense.W.value.copy())
                    want[(k, p1.index, "update_ratio")] = n1 / n0
    return want


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("activation, options", [
    ("sigmoid", {}),
    ("relu", {"batchnorm": True}),
    ("tanh", {"residual": True}),
    ("gelu", {"residual": True, "batchnorm": True}),
])
def test_every_three_equals_probe_on_copies_row_for_row(activation, options, dtype):
    g = np.random.default_rng(5)
    x = g.standard_normal((64, 10)).astype(dtype)
    y = g.integers(0, 3, 64)
    net = mlp([10, 16, 16, 16, 3], activation=activation, dtype=dtype, seed=1, **options)
    spy = _Spy(x)
    rec = ProbeRecorder(every=EVERY)
    fit(net, x, y, loss="cross_entropy", optimizer="sgd", lr=0.05, batch_size=16, epochs=None,
        max_steps=STEPS, eval_train=False, callbacks=[spy, rec])
    want = _expected(spy, x, y)
    df = rec.frame()
    got = [(int(r.step), int(r.layer), r.quantity, float(r.value)) for r in df.itertuples()]
    keys = [(s, la, q) for s, la, q, _ in got]
    assert len(keys) == len(set(keys)), "a row recorded twice"
    # the recorded steps and their rows, no more and no fewer (step 9 is recorded from update
    # 10's batch; the update ratios of steps 3, 6 and 9)
    assert set(keys) == set(want), sorted(set(keys) ^ set(want))[:6]
    for s, la, q, v in got:
        w = want[(s, la, q)]
        assert v == w or (math.isnan(v) and math.isnan(w)), (s, la, q, v, w)
    # the frame's order: by step, then layer; within a layer the table's order
    assert list(df.step) == sorted(df.step)
    assert rec.steps == list(range(0, STEPS, EVERY))


@pytest.mark.parametrize("activation, options, dtype", [
    ("sigmoid", {}, "float32"),
    ("gelu", {"residual": True, "batchnorm": True}, "float64"),
])
def test_the_numpy_path_equals_probe_on_copies_too(activation, options, dtype):
    with accel.numpy_only():
        test_every_three_equals_probe_on_copies_row_for_row(activation, options, dtype)
