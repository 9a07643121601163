"""Round 49 (reprospeed49): the quick reproductions and the theory they call made cheaper with
the same numbers, bit for bit.

* ``gaussian.correlated_pair``: the panels of the inner (``z2``) rule that a row's one cut
  does not split are computed once per rule (``_panel_nodes_with_cut``), not per row;
* ``meanfield``: the correlation map's fixed-point search evaluates each ``c`` once (Brent's
  method restarted from two ends already evaluated) and ``chi_c`` at ``c*`` reads the grid
  built for ``c*``;
* ``reproduce.base.train_accuracy``: batch norms in ``population`` mode are calibrated once,
  at the end, not at every epoch's end;
* ``schoenholz2017``: each tanh mean-field point and the critical ``sigma_w^2`` once per run.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest

import depthlab as dl
from depthlab.reproduce import schoenholz2017
from depthlab.reproduce.base import train_accuracy
from depthlab.theory import critical_sigma_w2, meanfield

G = importlib.import_module("depthlab.theory.gaussian")
M = importlib.import_module("depthlab.theory.meanfield")


def _sorted_rows(key: float, cut: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The former construction: every row's edges sorted, every panel computed."""
    base = G._full_breaks(key)
    breaks = np.sort(np.concatenate([np.broadcast_to(base, (cut.size, base.size)),
                                     cut[:, None]], axis=1), axis=1)
    return G._panel_nodes(breaks)


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


@pytest.mark.parametrize("scale", [1e-3, 0.7, 1.0, 1.19, 31.6, 1e4])
def test_panels_with_one_cut_equal_the_sorted_rows_bit_for_bit(scale):
    key = G._rule_key(scale)
    base = G._full_breaks(key)
    rng = np.random.default_rng(7)
    # random cuts, cuts on edges (ties), the clipped ends, unsorted and repeated rows
    cut = np.concatenate([rng.uniform(-10, 10, 50), base[[1, 2, base.size // 2 + 1, -2]],
                          [-10.0, 10.0, 9.999999, -9.999999], rng.uniform(-0.01, 0.01, 5)])
    rng.shuffle(cut)
    for got, want in zip(G._panel_nodes_with_cut(key, cut), _sorted_rows(key, cut)):
        assert _same_bits(got, want)


@pytest.mark.parametrize("c", [0.0, -0.0, 1e-300, -1e-300, 0.3, -0.7, 0.8])
def test_correlated_pair_keeps_the_sorted_grid_also_for_zero_cuts(c):
    """c = 0: every cut is +-0 beside the edge -0.0, whose signs np.sort's tie order decides
    (the sorted path is kept there); other c: the new rows."""
    q = 1.7
    u1, u2, W = G.correlated_pair(q, q, c)
    r = float(np.sqrt(q))
    sc = np.sqrt(max(0.0, 1.0 - c * c))
    z1, w1 = G.standard_rule(r)
    cut = np.clip(-c * z1 / sc, -10.0, 10.0)
    z2, w2 = _sorted_rows(G._rule_key(r), cut)
    w2 = w2 / w2.sum(axis=1, keepdims=True)
    assert _same_bits(np.ascontiguousarray(u1), np.ascontiguousarray(
        np.broadcast_to(r * z1[:, None], z2.shape)))
    assert _same_bits(u2, r * (c * z1[:, None] + sc * z2))
    assert _same_bits(W, w1[:, None] * w2)


def test_meanfield_builds_each_correlation_grid_once(monkeypatch):
    """A chaotic point: every correlated_pair call is for a new c (the search's repeated
    points and chi_c at c* reuse their grids); the pristine code built 3-4 grids twice."""
    asked: list[float] = []
    real = M.correlated_pair

    def counting(q1, q2, c, kinks=()):
        asked.append(float(c))
        return real(q1, q2, c, kinks)

    monkeypatch.setattr(M, "correlated_pair", counting)
    mf = meanfield("tanh", 3.0, 0.05)
    assert mf.phase == "chaotic" and 0 < mf.c_star < 1
    assert len(asked) == len(set(asked)) and mf.c_star in asked
    # the values are those of an evaluation without any reuse
    monkeypatch.setattr(M, "correlated_pair", real)
    q = mf.q_star
    fn = G.resolve_activation("tanh")
    assert mf.chi_c == M._chi_c(fn, mf.c_star, q, 3.0)
    assert M._c_map(fn, mf.c_star, q, 3.0, 0.05) == M._c_map(fn, mf.c_star, q, 3.0, 0.05, {})


def test_memoized_search_function_calls_once_per_point():
    calls: list[float] = []
    h = M._memoized(lambda c: calls.append(c) or c * c)
    assert [h(0.5), h(0.5), h(np.float64(0.5)), h(-1.0)] == [0.25, 0.25, 0.25, 1.0]
    assert calls == [0.5, -1.0]


class _Data:
    def __init__(self, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.x_train = rng.standard_normal((300, 6)).astype(np.float32)
        self.y_train = (self.x_train[:, 0] > 0).astype(np.int64) + 2 * (
            self.x_train[:, 1] > 0).astype(np.int64)


def _bn_net(seed: int = 3) -> dl.Network:
    return dl.mlp([6, 16, 16, 4], activation="relu", init="he_normal", batchnorm=True,
                  bn_inference="population", seed=seed)


def test_train_accuracy_calibrates_population_batchnorms_once(monkeypatch):
    """300 rows, batch 64: 5 epochs in 25 steps; the trainer calibrated at each epoch's end
    (5 passes over the training set) before the final one."""
    ds, net = _Data(), _bn_net()
    calls = []
    real = dl.Network.calibrate
    monkeypatch.setattr(dl.Network, "calibrate",
                        lambda self, x: calls.append(len(x)) or real(self, x))
    acc, diverged = train_accuracy(net, ds, 25, seed=1)
    assert not diverged and calls == [300]
    assert all(bn.inference == "population" for bn in net.batchnorms())


def test_train_accuracy_is_that_of_per_epoch_calibration():
    """The accuracy, the weights and the population statistics of the former loop (the
    trainer calibrating at every epoch's end, then once more)."""
    from depthlab.training import fit

    ds = _Data(1)
    net = _bn_net(5)
    acc, _ = train_accuracy(net, ds, 25, seed=2)
    ref = _bn_net(5)
    fit(ref, ds.x_train, ds.y_train, optimizer="sgd", lr=0.01,
        optimizer_kwargs={"momentum": 0.9}, batch_size=64, epochs=None, max_steps=25, seed=2,
        eval_train=False)
    ref.calibrate(ds.x_train)
    want = float(np.mean(np.argmax(ref.predict(ds.x_train), axis=1) == ds.y_train))
    assert acc == want
    for a, b in zip(net.parameters(), ref.parameters()):
        assert a.value.tobytes() == b.value.tobytes()
    for a, b in zip(net.batchnorms(), ref.batchnorms()):
        assert a.population_mean.tobytes() == b.population_mean.tobytes()
        assert a.population_var.tobytes() == b.population_var.tobytes()
        assert a.running_mean.tobytes() == b.running_mean.tobytes()


def test_train_accuracy_restores_the_modes_when_training_raises(monkeypatch):
    import depthlab.reproduce.base as base

    net = _bn_net()

    def boom(*args, **kwargs):
        assert all(bn.inference == "ema" for bn in net.batchnorms())
        raise RuntimeError("stop")

    monkeypatch.setattr(base, "fit", boom)
    with pytest.raises(RuntimeError, match="stop"):
        train_accuracy(net, _Data(), 5, seed=0)
    assert all(bn.inference == "population" for bn in net.batchnorms())


def test_schoenholz_mean_field_points_are_computed_once_and_unchanged():
    schoenholz2017.tanh_meanfield.cache_clear()
    a = schoenholz2017.tanh_meanfield(np.float64(1.0), 0.05)
    assert schoenholz2017.tanh_meanfield(1.0, 0.05) is a
    assert a == meanfield("tanh", 1.0, 0.05)
    assert schoenholz2017.tanh_meanfield.cache_info().hits == 1
    assert schoenholz2017.tanh_critical(0.05) == critical_sigma_w2("tanh", 0.05)
