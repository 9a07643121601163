"""Probes: statistics equal a direct computation, schedules, histograms, Jacobians, no side
effects, bounded memory."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import torch  # a dev dependency: required, never skipped

from depthlab.losses import get_loss
from depthlab.models import mlp
from depthlab.probes import (
    ProbeRecorder,
    jacobian_singular_values,
    percentiles_of,
    probe,
)
from depthlab.probes.stats import mean_std
from depthlab.training import Callback, fit


def _data(n=120, d=6, k=3, seed=0, dtype=np.float64):
    g = np.random.default_rng(seed)
    centers = g.standard_normal((k, d)) * 2.0
    y = g.integers(0, k, n)
    x = centers[y] + g.standard_normal((n, d))
    return x.astype(dtype), y


def _table(df: pd.DataFrame) -> pd.DataFrame:
    return df.pivot(index="layer", columns="quantity", values="value")


@pytest.mark.parametrize("dtype,rtol", [("float64", 1e-9), ("float32", 2e-4)])
def test_probe_matches_direct_numpy(dtype, rtol):
    x, y = _data(dtype=dtype)
    net = mlp([6, 9, 8, 3], activation="tanh", init="glorot_uniform", seed=1, dtype=dtype)
    got = _table(probe(net, x, y, "cross_entropy"))
    # Direct computation on the same batch.
    loss = get_loss("cross_entropy")
    out = net.forward(x, training=True)
    value = loss.forward(out, y)
    net.backward(loss.backward())
    assert got.loc[0, "loss"] == pytest.approx(value, rel=1e-6)
    assert got.loc[0, "acc"] == pytest.approx(np.mean(out.argmax(1) == y))
    for p in net.probe_points():
        s, a, g = (np.asarray(v, dtype=np.float64) for v in
                   (p.activation.s, p.activation.a, p.activation.grad_s))
        w, dw = (np.asarray(v, dtype=np.float64) for v in (p.dense.W.value, p.dense.W.grad))
        row = got.loc[p.index]
        expect = {
            "pre_mean": s.mean(), "pre_std": s.std(), "act_mean": a.mean(), "act_std": a.std(),
            "grad_pre_std": g.std(), "grad_pre_absmean": np.abs(g).mean(),
            "weight_std": w.std(), "weight_grad_std": dw.std(),
            "weight_grad_absmean": np.abs(dw).mean(),
            "saturated_frac": np.mean(np.abs(1 - a**2) < 0.05),
            "dead_frac": np.mean(np.all(1 - a**2 == 0, axis=0)),
        }
        for q, pct in zip((2, 15, 50, 85, 98), np.percentile(s, (2, 15, 50, 85, 98))):
            expect[f"pre_p{q}"] = pct
        for q, pct in zip((2, 15, 50, 85, 98), np.percentile(a, (2, 15, 50, 85, 98))):
            expect[f"act_p{q}"] = pct
        for name, v in expect.items():
            assert row[name] == pytest.approx(v, rel=rtol, abs=1e-6 * (rtol > 1e-6)), name


def test_gradient_stats_match_torch_autograd():
    x, y = _data(n=50, d=5, k=4, seed=3)
    net = mlp([5, 7, 6, 4], activation="sigmoid", init="glorot_normal", seed=2, dtype="float64")
    got = _table(probe(net, x, y))
    dense = net.dense_layers()
    h = torch.tensor(x)
    pres = []
    for i, d in enumerate(dense):
        z = h @ torch.tensor(d.W.value, requires_grad=True) + torch.tensor(d.b.value)
        if i < len(dense) - 1:
            z.retain_grad()
            pres.append(z)
            h = torch.sigmoid(z)
        else:
            logits = z
    torch.nn.functional.cross_entropy(logits, torch.tensor(y)).backward()
    for i, z in enumerate(pres, start=1):
        g = z.grad.numpy()
        assert got.loc[i, "grad_pre_std"] == pytest.approx(g.std(), rel=1e-9)
        assert got.loc[i, "grad_pre_absmean"] == pytest.approx(np.abs(g).mean(), rel=1e-9)


def test_percentiles_and_moments_match_numpy():
    g = np.random.default_rng(5)
    for n in (1, 2, 7, 300, 1001):
        v = g.standard_normal(n).astype(np.float32) * 3 + 1
        q = (0, 2, 15, 50, 85, 98, 100)
        np.testing.assert_allclose(percentiles_of(v, q), np.percentile(v, q), rtol=1e-6,
                                   atol=1e-6)
    # Large mean, tiny spread: the cancellation-safe path.
    v = (1.0 + 1e-4 * g.standard_normal(5000)).astype(np.float32)
    m, s = mean_std(v)
    assert s == pytest.approx(float(v.astype(np.float64).std()), rel=1e-3)
    # Vanishing magnitudes whose float32 squares underflow.
    v = (1e-21 * g.standard_normal(4000)).astype(np.float32)
    assert mean_std(v)[1] == pytest.approx(float(v.astype(np.float64).std()), rel=1e-4)


def test_saturated_fraction_huge_and_small_weights():
    x, y = _data(n=100, d=6)
    big = mlp([6, 20, 20, 3], activation="sigmoid", init="glorot_uniform", seed=0)
    small = mlp([6, 20, 20, 3], activation="sigmoid", init="glorot_uniform", seed=0)
    for d in big.dense_layers():
        d.W.value *= 100.0
    for d in small.dense_layers():
        d.W.value *= 1e-3
    sat_big = _table(probe(big, x, y)).loc[[1, 2], "saturated_frac"]
    sat_small = _table(probe(small, x, y)).loc[[1, 2], "saturated_frac"]
    assert (sat_big > 0.9).all()
    assert (sat_small == 0).all()


def test_dead_fraction_negative_bias():
    x, y = _data(n=100, d=6)
    net = mlp([6, 16, 16, 3], activation="relu", init="he_normal", seed=0)
    healthy = _table(probe(net, x, y)).loc[[1, 2], "dead_frac"]
    assert (healthy < 0.3).all()
    for d in net.dense_layers()[:-1]:
        d.b.value[...] = -100.0
    dead = _table(probe(net, x, y)).loc[[1, 2], "dead_frac"]
    assert (dead == 1.0).all()


def test_recorder_schedule_and_columns():
    x, y = _data(n=64)
    net = mlp([6, 8, 8, 3], activation="tanh", seed=0)
    rec = ProbeRecorder(x[:30], y[:30], "cross_entropy", every=5, histogram_steps=())
    hist = fit(net, x, y, lr=0.1, batch_size=8, epochs=None, max_steps=23, callbacks=[rec])
    assert hist.steps == 23
    assert rec.steps == [0, 5, 10, 15, 20, 23]
    f = rec.frame()
    assert list(f.columns) == ["step", "layer", "quantity", "value"]
    assert sorted(f.loc[f.quantity == "loss", "step"]) == [0, 5, 10, 15, 20, 23]
    assert set(f.loc[f.quantity == "update_ratio", "step"]) == {5, 10, 15, 20}
    assert set(f.loc[f.layer > 0, "layer"]) == {1, 2}
    for q in ("pre_p15", "act_p85", "saturated_frac", "dead_frac", "grad_pre_std",
              "weight_grad_absmean", "update_ratio"):
        assert q in set(f.quantity)


def test_no_percentiles_records_the_rest(monkeypatch):
    import depthlab.probes.stats as stats

    def no_sort(*args, **kwargs):
        raise AssertionError("percentiles=() must not sort")

    monkeypatch.setattr(stats, "_both_percentiles", no_sort)
    monkeypatch.setattr(stats, "percentiles_of", no_sort)
    x, y = _data(n=32)
    net = mlp([6, 8, 8, 3], activation="tanh", seed=0)
    rec = ProbeRecorder(every=2, histogram_steps=(), percentiles=())
    fit(net, x, y, lr=0.1, batch_size=8, epochs=None, max_steps=6, callbacks=[rec])
    q = set(rec.frame().quantity)
    assert not [name for name in q if re.search(r"_p\d", name)]
    assert {"pre_mean", "act_std", "saturated_frac", "grad_pre_std", "update_ratio"} <= q


class _Grab(Callback):
    def __init__(self):
        self.w, self.g = {}, {}

    def before_update(self, trainer, step):
        if step == 1:
            for i, d in enumerate(trainer.net.dense_layers()):
                self.w[i] = d.W.value.copy()
                self.g[i] = d.W.grad.copy()


def test_update_ratio_equals_hand_computation_for_sgd():
    x, y = _data(n=40)
    net = mlp([6, 8, 8, 3], activation="tanh", seed=0, dtype="float64")
    grab = _Grab()
    rec = ProbeRecorder(x[:20], y[:20], every=1, histogram_steps=())
    lr = 0.3
    fit(net, x, y, lr=lr, batch_size=10, epochs=None, max_steps=2, callbacks=[grab, rec])
    f = rec.frame()
    got = f[(f.step == 1) & (f.quantity == "update_ratio")].set_index("layer")["value"]
    for layer in (1, 2):
        w, g = grab.w[layer - 1], grab.g[layer - 1]
        assert got[layer] == pytest.approx(lr * np.linalg.norm(g) / np.linalg.norm(w), rel=1e-9)


def test_histogram_counts_sum_to_entries_and_edges_follow_the_data():
    x, y = _data(n=64)
    net = mlp([6, 10, 7, 3], activation="relu", init="he_normal", seed=0)
    rec = ProbeRecorder(x[:25], y[:25], every=4, n_bins=12)
    fit(net, x, y, lr=0.05, batch_size=8, epochs=None, max_steps=17, callbacks=[rec])
    h = rec.histograms()
    assert list(h.columns) == ["step", "layer", "kind", "bin_left", "bin_right", "count",
                               "n_neginf", "n_posinf", "n_nan"]
    assert {0, 4, 8, 16, 17} <= set(h.step)  # default: init, every * 2^j, end
    sums = h.groupby(["step", "layer", "kind"])["count"].sum()
    widths = {1: 10, 2: 7}
    fans = {1: 6 * 10, 2: 10 * 7}
    for (step, layer, kind), total in sums.items():
        assert total == (fans[layer] if kind == "weight" else 25 * widths[layer]), (step, kind)
    for (_layer, kind), grp in h.groupby(["layer", "kind"]):
        assert (grp.groupby("step").size() == 12).all()
        if kind == "act":  # ReLU outputs: [0, hi] from each step's own data
            assert (grp.groupby("step")["bin_left"].min() == 0).all()
    w = h[(h.kind == "weight") & (h.layer == 1)]  # weights move: the range follows them
    his = w.groupby("step")["bin_right"].max()
    assert his.nunique() > 1


def test_jacobian_with_population_batchnorm_during_training():
    """Inference-mode Jacobians need whole-training-set BN statistics: the recorder gets them."""
    x, y = _data(n=64, dtype=np.float32)
    net = mlp([6, 8, 8, 3], activation="relu", batchnorm=True, bn_inference="population",
              seed=0)
    rec = ProbeRecorder(x[:16], y[:16], every=5, jacobian_steps=(0, "end"))
    fit(net, x, y, lr=0.05, batch_size=16, epochs=None, max_steps=10, callbacks=[rec])
    jac = rec.jacobian()
    assert set(jac.step) == {0, 10} and np.isfinite(jac.value).all()


def test_jacobian_of_linear_net_is_product_of_weights():
    x, y = _data(n=10, d=5, k=4)
    net = mlp([5, 7, 6, 4], activation="identity", init="glorot_normal", seed=3,
              dtype="float64")
    prod = np.linalg.multi_dot([d.W.value for d in net.dense_layers()])
    expect = np.linalg.svd(prod.T, compute_uv=False)
    sv = jacobian_singular_values(net, x[:3])
    assert sv.shape == (3, 4)
    for row in sv:
        np.testing.assert_allclose(row, expect, rtol=1e-10)
    rec = ProbeRecorder(x, y, every=100, histogram_steps=(), jacobian_steps=(0, "end"),
                        jacobian_examples=2)
    fit(net, x, y, lr=0.01, batch_size=5, epochs=None, max_steps=3, callbacks=[rec])
    j = rec.jacobian()
    assert list(j.columns) == ["step", "example", "index", "value"]
    j0 = j[(j.step == 0) & (j.example == 1)].sort_values("index")["value"].to_numpy()
    np.testing.assert_allclose(j0, expect, rtol=1e-10)
    assert set(j.step) == {0, 3}


def test_probe_leaves_state_unchanged():
    x, y = _data(n=50, dtype=np.float32)
    net = mlp([6, 12, 12, 3], activation="relu", batchnorm=True, dropout=0.5, seed=0)
    fit(net, x, y, lr=0.05, batch_size=10, epochs=None, max_steps=5)  # non-trivial BN stats
    params = [p.value.copy() for p in net.parameters()]
    bn_stats = [(b.running_mean.copy(), b.running_var.copy(), b.num_batches)
                for b in net.batchnorms()]
    drops = [(d.p, d.rng.bit_generator.state) for d in net.dropouts()]
    first = probe(net, x, y)
    second = probe(net, x, y)
    pd.testing.assert_frame_equal(first, second)  # dropout off: deterministic
    assert list(first.columns) == ["layer", "quantity", "value"]
    for p, v in zip(net.parameters(), params):
        np.testing.assert_array_equal(p.value, v)
    for b, (m, v, n) in zip(net.batchnorms(), bn_stats):
        np.testing.assert_array_equal(b.running_mean, m)
        np.testing.assert_array_equal(b.running_var, v)
        assert b.num_batches == n and b.update_stats
    for d, (p, state) in zip(net.dropouts(), drops):
        assert d.p == p and d.rng.bit_generator.state == state


def test_probing_does_not_change_training():
    x, y = _data(n=80, dtype=np.float32)

    def run(callbacks):
        net = mlp([6, 12, 12, 3], activation="tanh", batchnorm=True, dropout=0.2, seed=4)
        return fit(net, x, y, lr=0.05, batch_size=16, epochs=None, max_steps=12,
                   callbacks=callbacks).step_loss

    plain = run([])
    probed = run([ProbeRecorder(x[:30], y[:30], every=2, jacobian_steps=(4,))])
    assert probed == plain


def test_training_batch_mode_reads_the_training_losses():
    x, y = _data(n=60)
    net = mlp([6, 8, 8, 3], activation="tanh", seed=0)
    rec = ProbeRecorder(every=1)
    hist = fit(net, x, y, lr=0.1, batch_size=12, epochs=None, max_steps=7, callbacks=[rec])
    assert rec.steps == list(range(7))  # the state after the last update has no batch
    f = rec.frame()
    losses = f[f.quantity == "loss"].sort_values("step")["value"].to_numpy()
    np.testing.assert_allclose(losses, hist.step_loss)
    assert "acc" not in set(f.quantity)
    assert set(f.loc[f.quantity == "update_ratio", "step"]) == set(range(1, 8))


def _arrays_in(obj, seen=None):
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return []
    seen.add(id(obj))
    if isinstance(obj, np.ndarray):
        return [obj]
    if isinstance(obj, dict):
        return [a for v in obj.values() for a in _arrays_in(v, seen)]
    if isinstance(obj, (list, tuple, set)):
        return [a for v in obj for a in _arrays_in(v, seen)]
    return []


def test_recorder_memory_is_bounded():
    x, y = _data(n=64, dtype=np.float32)
    counts = []
    for steps in (10, 40):
        net = mlp([6, 16, 16, 3], activation="tanh", seed=0)
        rec = ProbeRecorder(x[:32], y[:32], every=1, histogram_steps=(0, 5, "end"))
        fit(net, x, y, lr=0.05, batch_size=8, epochs=None, max_steps=steps, callbacks=[rec])
        state = {k: v for k, v in vars(rec).items()
                 if k not in ("probe_x", "probe_y", "_x", "_net", "_loss", "_loss_spec")}
        assert _arrays_in(state) == []  # summaries only: no NumPy arrays kept
        assert rec._w_before == {}
        counts.append(rec.n_records / (steps + 1))
    assert counts[0] == pytest.approx(counts[1], rel=0.05)  # rows per record constant


def test_bad_arguments():
    x, y = _data(n=10)
    with pytest.raises(ValueError, match="every"):
        ProbeRecorder(x, y, every=0)
    with pytest.raises(ValueError, match="probe_y"):
        ProbeRecorder(x, None)
    with pytest.raises(ValueError, match="percentile"):
        ProbeRecorder(x, y, percentiles=(50, 150))
    with pytest.raises(ValueError, match=r"distinct, got \(10, 50, 50\.0\) .*: p50\)"):
        ProbeRecorder(x, y, percentiles=(10, 50, 50.0))  # would be two pre_p50 rows
    with pytest.raises(ValueError, match="jacobian_steps"):
        ProbeRecorder(jacobian_steps=(0,))
    with pytest.raises(ValueError, match="histogram_steps"):
        ProbeRecorder(x, y, histogram_steps=(-1,))
    net = mlp([6, 4, 3], seed=0)
    with pytest.raises(ValueError, match="expected"):
        probe(net, x[:, :4], y)
    with pytest.raises(TypeError, match="Network"):
        probe("net", x, y)


@pytest.mark.parametrize("probe_batch", [False, True])
def test_recorder_continues_with_a_second_fit_of_the_same_trainer(probe_batch):
    """Two 1-epoch fits of one trainer record what one 2-epoch fit records (the probe batch
    also measures the end of the first fit); another trainer starts the records afresh."""
    from depthlab.training import Trainer

    rng = np.random.default_rng(3)
    x = rng.normal(size=(48, 6))
    y = rng.integers(0, 3, 48)
    probe = (x[:20], y[:20]) if probe_batch else (None, None)

    def trainer(epochs):
        net = mlp([6, 7, 5, 3], activation="tanh", seed=1, dtype="float64")
        rec = ProbeRecorder(*probe, every=2, histogram_steps=())
        return Trainer(net, loss="cross_entropy", lr=0.1, batch_size=16, epochs=epochs, seed=0,
                       callbacks=[rec]), rec

    one, rec_one = trainer(2)
    one.fit(x, y)
    two, rec_two = trainer(1)
    two.fit(x, y)
    two.fit(x, y)
    a, b = rec_one.frame(), rec_two.frame()
    if probe_batch:  # the first fit's end (step 3) is measured too
        assert sorted(set(b.step) - set(a.step)) == [3]
        b = b[b.step != 3].reset_index(drop=True)
    assert sorted(set(a.step)) == [0, 2, 4, 6]  # training batch: step 6 its update_ratio only
    pd.testing.assert_frame_equal(a, b)
    other, _ = trainer(1)
    other.callbacks = [rec_two]
    other.fit(x, y)  # a new trainer: records start again at step 0
    assert sorted(set(rec_two.frame().step)) == ([0, 2, 3] if probe_batch else [0, 2])
