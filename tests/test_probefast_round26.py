"""ProbeRecorder's tables on the training batches against a plain NumPy reference computed from
the same caches at the same moment (issue 14, round 26: the recorder's update-ratio fast path).

A ``_Reference`` callback runs after the recorder: in ``before_update`` of step ``k + 1`` it
measures the caches that the recorder's record of step ``k`` reads, by the textbook formulas in
float64 (mean, population std, NumPy's ``linear`` percentiles, fractions of entries), and it
copies the weights that the recorder's snapshot copies; in ``after_update`` it takes the update
ratio ``||W - W0|| / ||W0||`` in float64 and by the public ``recorder.update_norms`` (which the
recorder's fast path must reproduce bit for bit)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from depthlab.models import mlp
from depthlab.probes import ProbeRecorder, accel
from depthlab.probes.recorder import update_norms
from depthlab.probes.stats import PERCENTILES, SATURATION_RATIO
from depthlab.training import Callback, fit

DERIVATIVES = {  # f'(s) from (s, a), as the textbook writes it
    "sigmoid": lambda s, a: a * (1.0 - a),
    "tanh": lambda s, a: 1.0 - a * a,
    "relu": lambda s, a: (s > 0).astype(np.float64),
}
MAX_DERIVATIVE = {"sigmoid": 0.25, "tanh": 1.0, "relu": 1.0}


def _reference_stats(point, name: str) -> dict[str, float]:
    act = point.activation
    s = act.s.astype(np.float64)
    a = act.a.astype(np.float64)
    g = act.grad_s.astype(np.float64)
    d = DERIVATIVES[name](s, a)
    out = {"pre_mean": s.mean(), "pre_std": s.std(), "act_mean": a.mean(), "act_std": a.std()}
    for q in PERCENTILES:
        out[f"pre_p{q:g}"] = np.percentile(s, q)
        out[f"act_p{q:g}"] = np.percentile(a, q)
    bounded = name in ("sigmoid", "tanh")
    out["saturated_frac"] = (np.abs(d) < SATURATION_RATIO * MAX_DERIVATIVE[name]).mean() \
        if bounded else math.nan
    out["dead_frac"] = (np.abs(d).sum(axis=0) == 0).mean()
    out["inactive_frac"] = (s <= 0).mean() if name == "relu" else math.nan
    out["grad_pre_std"] = g.std()
    out["grad_pre_absmean"] = np.abs(g).mean()
    w = point.dense.W.value.astype(np.float64)
    dw = point.dense.W.grad.astype(np.float64)
    out["weight_std"] = w.std()
    out["weight_grad_std"] = dw.std()
    out["weight_grad_absmean"] = np.abs(dw).mean()
    return out


class _Reference(Callback):
    """What the recorder should have recorded, from the same caches at the same moment."""

    def __init__(self, every: int, name: str, replace_weights: bool = False) -> None:
        self.every = every
        self.name = name
        self.replace_weights = replace_weights
        self.rows: dict[tuple[int, int, str], float] = {}
        self.exact_ratio: dict[tuple[int, int], float] = {}
        self._w0: dict[int, np.ndarray] = {}

    def before_update(self, trainer, step: int) -> None:
        points = trainer.net.probe_points()
        label = step - 1
        if label % self.every == 0:
            for p in points:
                for q, v in _reference_stats(p, self.name).items():
                    self.rows[(label, p.index, q)] = float(v)
        if step % self.every == 0:
            self._w0 = {p.index: p.dense.W.value.copy() for p in points}

    def after_update(self, trainer, step: int, loss: float) -> None:
        if not self._w0:
            return
        for p in trainer.net.probe_points():
            w = p.dense.W.value
            w0 = self._w0[p.index]
            ref = np.linalg.norm((w.astype(np.float64) - w0.astype(np.float64)).ravel()) \
                / np.linalg.norm(w0.astype(np.float64).ravel())
            self.rows[(step, p.index, "update_ratio")] = float(ref)
            n0, n1 = update_norms(w, w0.copy())
            self.exact_ratio[(step, p.index)] = n1 / n0
            if self.replace_weights:  # a new value array for the next record (the old one
                p.dense.W.value = w * 0.5  # left as it was: a ratio read from it would differ)
        self._w0 = {}


class _ReplaceBeforeRecorder(Callback):
    """Placed before the recorder: gives every weight a new value array (half the updated
    weights, as a max-norm constraint might) right after the update, between the recorder's
    snapshot and its update ratio; the old array keeps the updated weights."""

    def after_update(self, trainer, step: int, loss: float) -> None:
        for p in trainer.net.probe_points():
            p.dense.W.value = p.dense.W.value * 0.5


def _run(name: str, dtype: str, every: int, batchnorm: bool = False,
         replace: str | None = None) -> tuple[ProbeRecorder, _Reference]:
    g = np.random.default_rng(7)
    x = g.standard_normal((90, 12))
    y = g.integers(0, 3, 90)
    net = mlp([12, 24, 16, 3], activation=name, dtype=dtype, seed=2, batchnorm=batchnorm)
    rec = ProbeRecorder(every=every)
    ref = _Reference(every, name, replace_weights=replace == "after")
    callbacks = [rec, ref] if replace != "before" else [_ReplaceBeforeRecorder(), rec, ref]
    fit(net, x, y, loss="cross_entropy", optimizer="sgd", lr=0.1, batch_size=30, epochs=None,
        max_steps=9, eval_train=False, callbacks=callbacks)
    return rec, ref


def _check(rec: ProbeRecorder, ref: _Reference, dtype: str) -> None:
    df = rec.frame()
    got = {(int(r.step), int(r.layer), r.quantity): float(r.value)
           for r in df.itertuples() if r.layer > 0}
    assert set(got) == set(ref.rows), sorted(set(got) ^ set(ref.rows))[:5]
    rtol = 2e-5 if dtype == "float32" else 1e-10
    for key, want in ref.rows.items():
        have = got[key]
        if math.isnan(want):
            assert math.isnan(have), (key, have)
        elif key[2].endswith("_frac"):  # counts: at most a rounding at a threshold apart
            assert abs(have - want) <= 1.5 / 30 / 24, (key, have, want)
        else:
            assert have == pytest.approx(want, rel=rtol, abs=1e-7 if dtype == "float32"
                                         else 1e-14), (key, have, want)
    # the update ratio is exactly that of the public update_norms on the same arrays
    for (step, layer), exact in ref.exact_ratio.items():
        assert got[(step, layer, "update_ratio")] == exact, (step, layer)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", ["sigmoid", "relu", "tanh"])
@pytest.mark.parametrize("every", [1, 3])
def test_training_batch_tables_equal_a_numpy_reference(name, dtype, every):
    rec, ref = _run(name, dtype, every)
    assert any(q == "update_ratio" for (_, _, q) in ref.rows)
    _check(rec, ref, dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_tables_with_batch_norm_equal_a_numpy_reference(dtype):
    rec, ref = _run("relu", dtype, 1, batchnorm=True)
    _check(rec, ref, dtype)


@pytest.mark.parametrize("replace", ["after", "before"])
def test_a_weight_given_a_new_array_keeps_its_update_ratio_exact(replace):
    # "after": between records (the reused snapshot layout must be built again);
    # "before": between the snapshot and the ratio (the ratio must read the new array)
    rec, ref = _run("sigmoid", "float32", 1, replace=replace)
    _check(rec, ref, "float32")


def test_the_numpy_path_tables_equal_the_reference():
    with accel.numpy_only():
        rec, ref = _run("tanh", "float64", 1)
    _check(rec, ref, "float64")


@pytest.mark.skipif(not accel.available(), reason="compiled kernels not installed")
@pytest.mark.parametrize("replace", [None, "after"])
def test_the_update_ratio_kernel_path_stays_on_when_a_weight_array_is_replaced(replace,
                                                                            monkeypatch):
    # the snapshot layout (flat views for the kernel) is built again for a new value array,
    # rather than every later ratio falling back to the general function
    from depthlab.probes import recorder as recorder_module

    calls = []
    general = recorder_module._update_ratio
    monkeypatch.setattr(recorder_module, "_update_ratio",
                        lambda weight, w0: calls.append(1) or general(weight, w0))
    rec, ref = _run("sigmoid", "float32", 1, replace=replace)
    _check(rec, ref, "float32")
    assert calls == []
