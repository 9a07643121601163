"""Lead, round 15: the training-batch recorder takes each update ratio in the record that reads
the same weights (one trip of them through the cache), or at the end of training; the rows are
those an independent copy of the weights after every update gives."""

from __future__ import annotations

import math

import numpy as np
import pytest

from depthlab import mlp
from depthlab.probes import ProbeRecorder, accel
from depthlab.training.trainer import Callback, Trainer


class _Weights(Callback):
    """Independent reference: a float64 copy of every probed layer's weights after each update
    (and before the first)."""

    def __init__(self) -> None:
        self.after: dict[int, dict[int, np.ndarray]] = {}

    def _take(self, trainer, step: int) -> None:
        self.after[step] = {p.index: p.dense.W.value.astype(np.float64)
                            for p in trainer.net.probe_points() if p.dense is not None}

    def on_train_begin(self, trainer) -> None:
        self._take(trainer, trainer.step)

    def before_update(self, trainer, step: int) -> None:
        pass

    def after_update(self, trainer, step: int, loss: float) -> None:
        self._take(trainer, step)

    def on_epoch_end(self, *args) -> None:
        pass

    def on_train_end(self, *args) -> None:
        pass

    def ratios(self, step: int) -> dict[int, float]:
        now, then = self.after[step], self.after[step - 1]
        return {i: float(np.linalg.norm(now[i] - then[i]) / np.linalg.norm(then[i]))
                for i in now}


def _data(n: int = 120, d: int = 12, seed: int = 3):
    g = np.random.default_rng(seed)
    return g.standard_normal((n, d)).astype(np.float32), g.integers(0, 3, n)


def _ratios(rec: ProbeRecorder) -> dict[tuple[int, int], float]:
    df = rec.frame()
    df = df[df["quantity"] == "update_ratio"]
    return {(int(s), int(layer)): float(v)
            for s, layer, v in zip(df["step"], df["layer"], df["value"])}


def _train(rec: ProbeRecorder, steps: int, dtype: str = "float32", trainer=None):
    x, y = _data()
    net = mlp([12, 9, 7, 3], activation="tanh", seed=1, dtype=dtype) if trainer is None \
        else trainer.net
    ref = _Weights()
    trainer = trainer or Trainer(net, loss="cross_entropy", optimizer="adam", lr=0.01,
                                 batch_size=20, epochs=None, max_steps=steps, eval_train=False,
                                 callbacks=[rec, ref], seed=0)
    trainer.fit(x, y)
    return trainer, ref


@pytest.mark.parametrize("numpy_path", [False, True])
@pytest.mark.parametrize("every,steps", [(1, 7), (3, 10), (4, 8)])
def test_training_batch_update_ratios_match_an_independent_copy(every, steps, numpy_path):
    """Every recorded update's ratio, the last one included (10 steps at every=3: updates 3, 6
    and 9 have records after them, none follows update... at every=4 update 8 is the last and
    is taken at the end of training), equals the float64 ratio of copies taken after each
    update, on the compiled and the NumPy path."""
    rec = ProbeRecorder(every=every)
    ctx = accel.numpy_only() if numpy_path else _null()
    with ctx:
        _, ref = _train(rec, steps)
    got = _ratios(rec)
    want_steps = [k for k in range(1, steps + 1) if k % every == 0]
    assert sorted({s for s, _ in got}) == want_steps
    for k in want_steps:
        for layer, r in ref.ratios(k).items():
            assert got[(k, layer)] == pytest.approx(r, rel=2e-4), (k, layer)


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def test_training_batch_ratios_equal_the_probe_batch_modes():
    """The probe-batch recorder takes the ratio right after each update (unchanged); both
    modes give the same rows for the same training (a probe batch does not change it)."""
    x, y = _data()
    a, b = ProbeRecorder(every=2), ProbeRecorder(x[:30], y[:30], every=2)
    for rec in (a, b):
        net = mlp([12, 9, 7, 3], activation="relu", seed=1)
        Trainer(net, loss="cross_entropy", optimizer="sgd", lr=0.05, batch_size=20,
                epochs=None, max_steps=9, eval_train=False, callbacks=[rec], seed=0).fit(x, y)
    ra, rb = _ratios(a), _ratios(b)
    assert set(ra) == set(rb) and len(ra) == 4 * 2  # updates 2, 4, 6, 8 x 2 hidden layers
    for key in ra:
        assert ra[key] == rb[key]


def test_a_further_fit_continues_the_ratios():
    """A second fit of the same trainer: the update copied at the end of the first fit has no
    record after it and is taken at its end; the second fit's ratios carry their own steps."""
    rec = ProbeRecorder(every=2)
    trainer, ref1 = _train(rec, 4)
    ref2 = _Weights()
    trainer.callbacks.append(ref2)
    trainer.max_steps = 4
    x, y = _data()
    trainer.fit(x, y)
    got = _ratios(rec)
    assert sorted({s for s, _ in got}) == [2, 4, 6, 8]
    for k in (6, 8):
        for layer, r in ref2.ratios(k).items():
            assert got[(k, layer)] == pytest.approx(r, rel=2e-4)
    for layer, r in ref1.ratios(4).items():
        assert got[(4, layer)] == pytest.approx(r, rel=2e-4)


def test_a_zero_weight_matrix_gives_an_infinite_ratio_and_a_reshaped_one_none():
    """``||W0|| = 0``: inf, as before; weights given another shape between the copy and the
    record (a user's surgery): no ratio row for that layer, the other layers keep theirs."""

    class Surgery(Callback):
        def on_train_begin(self, trainer):
            pass

        def before_update(self, trainer, step):
            pass

        def after_update(self, trainer, step, loss):
            if step == 2:
                d = trainer.net.dense_layers()[0]
                d.W.value[...] = 0.0  # W_2 = 0: the ratio of update 3 is inf

        def on_epoch_end(self, *a):
            pass

        def on_train_end(self, *a):
            pass

    rec = ProbeRecorder(every=1)
    x, y = _data()
    net = mlp([12, 9, 7, 3], activation="tanh", seed=1)
    Trainer(net, loss="cross_entropy", optimizer="sgd", lr=0.05, batch_size=20, epochs=None,
            max_steps=4, eval_train=False, callbacks=[Surgery(), rec], seed=0).fit(x, y)
    got = _ratios(rec)
    assert math.isinf(got[(3, 1)]) and math.isfinite(got[(3, 2)])
    from depthlab.probes.recorder import _update_ratio

    class W:
        value = np.ones((2, 3), np.float32)

    assert _update_ratio(W, np.ones((3, 2), np.float32)) is None
    assert _update_ratio(W, np.ones((2, 3), np.float64)) is None
    assert _update_ratio(W, np.full((2, 3), 2.0, np.float32)) == pytest.approx(0.5)


def test_float64_network_ratios():
    rec = ProbeRecorder(every=1)
    _, ref = _train(rec, 3, dtype="float64")
    got = _ratios(rec)
    for k in (1, 2, 3):
        for layer, r in ref.ratios(k).items():
            assert got[(k, layer)] == pytest.approx(r, rel=1e-12)


@pytest.mark.parametrize("activation", ["gelu", "softsign"])
@pytest.mark.parametrize("probe_batch", [False, True])
def test_huge_pre_activations_raise_no_warning_in_the_recorder(activation, probe_batch):
    """GELU's f' squares s (overflow beyond ~1.8e19 in float32) and softsign's (1 + |s|)^2: the
    compiled path called the activation's derivative outside NumPy's error state, so the
    probe-batch record at the start of training printed 'overflow encountered in multiply'
    (and failed a sweep point under warnings-as-errors); the values are those of the NumPy
    path."""
    import warnings

    g = np.random.default_rng(0)
    x = g.standard_normal((64, 8)).astype(np.float32)
    y = g.integers(0, 3, 64)
    tables = []
    for numpy_path in (False, True):
        net = mlp([8, 16, 16, 3], activation=activation, seed=0)
        for d in net.dense_layers()[:2]:
            d.W.value[...] *= np.float32(1e12)
        rec = ProbeRecorder(x[:20], y[:20], every=1) if probe_batch else ProbeRecorder(every=1)
        with warnings.catch_warnings(), (accel.numpy_only() if numpy_path else _null()):
            warnings.simplefilter("error")
            Trainer(net, loss="cross_entropy", optimizer="sgd", lr=1e-30, batch_size=32,
                    epochs=None, max_steps=2, eval_train=False, callbacks=[rec],
                    seed=0).fit(x, y)
        df = rec.frame()
        tables.append(df[df["quantity"].isin(["saturated_frac", "act_std"])])
    fast, slow = tables
    assert len(fast) == len(slow) > 0
    np.testing.assert_allclose(fast["value"].to_numpy(), slow["value"].to_numpy(), rtol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [192, 1100, 23100])
def test_weight_sums_do_not_depend_on_where_the_snapshot_buffer_lies(dtype, n):
    """The copy of the weights into the recorder's snapshot buffer was a store in the loop of
    their sums: with the buffer right after the weights in memory (or right before), the
    compiled loop's overlap check took its scalar version, whose sums round otherwise (17 of
    160 placements: ``weight_std`` 0.27524803101375384 against ...39, and a test comparing two
    buffers failed about once in 40 runs). Every placement now gives the sums without a copy,
    bit for bit, and an exact copy."""
    k = accel.kernels()
    if k is None:
        pytest.skip("compiled kernels not installed")
    g = np.random.default_rng(0)
    pool = np.empty(4 * n + 256, dtype=dtype)
    base = 2 * n
    x = pool[base:base + n]
    x[:] = (g.standard_normal(n) * 0.3 + 0.01).astype(dtype)
    want = k.block_moments(x, float(x[0]), x[:0])
    for offset in [*range(-n - 40, -n + 1), *range(n, n + 40)]:
        dst = pool[base + offset:base + offset + n]
        assert k.block_moments(x, float(x[0]), dst) == want, offset
        np.testing.assert_array_equal(dst, x)


def test_predict_of_a_model_calling_its_modules_by_keyword():
    """``self.act(input=h)``, ``self.norm(input=h)``, ``self.lin(input=h)``: predict's hooks read
    positional arguments only and failed with "'Tanh' object has no attribute '_dl_in'" (also
    the Watch's theory note); now the same table as the positional model's."""
    torch = pytest.importorskip("torch")
    from torch import nn

    import depthlab.torch as dlt

    class Net(nn.Module):
        def __init__(self, keyword: bool) -> None:
            super().__init__()
            self.keyword = keyword
            self.l1, self.l2, self.out = nn.Linear(32, 48), nn.Linear(48, 48), nn.Linear(48, 3)
            self.a1, self.a2, self.bn = nn.Tanh(), nn.ReLU(), nn.BatchNorm1d(48)

        def forward(self, x):
            if self.keyword:
                h = self.a1(input=self.l1(input=x))
                h = self.a2(input=self.bn(input=self.l2(input=h)))
                return self.out(input=h)
            return self.out(self.a2(self.bn(self.l2(self.a1(self.l1(x))))))

    torch.manual_seed(0)
    positional = Net(False)
    keyword = Net(True)
    keyword.load_state_dict(positional.state_dict())
    x = torch.randn(64, 32)
    want, got = dlt.predict(positional, x), dlt.predict(keyword, x)
    assert len(want) > 0
    assert want.equals(got)



def test_batch_norms_called_by_keyword_in_the_torch_doctors_helpers():
    """``self.bn(input=h)``: the doctor's batch-norm drift and the population statistics after
    training read ``inputs[0]`` of a positional-only hook (IndexError: tuple index out of
    range); now the same numbers as the positional model's."""
    torch = pytest.importorskip("torch")
    from torch import nn

    from depthlab.torch.doctor import bn_drift
    from depthlab.torch.train import population_batchnorm

    class Net(nn.Module):
        def __init__(self, keyword: bool) -> None:
            super().__init__()
            self.keyword = keyword
            self.l1, self.bn, self.out = nn.Linear(6, 8), nn.BatchNorm1d(8), nn.Linear(8, 2)

        def forward(self, x):
            h = self.l1(x)
            h = self.bn(input=h) if self.keyword else self.bn(h)
            return self.out(torch.relu(h))

    torch.manual_seed(0)
    a, b = Net(False), Net(True)
    b.load_state_dict(a.state_dict())
    x = torch.randn(50, 6) * 3 + 1
    assert population_batchnorm(a, x) == population_batchnorm(b, x) == 1
    assert torch.equal(a.bn.running_mean, b.bn.running_mean)
    assert torch.equal(a.bn.running_var, b.bn.running_var)
    with torch.no_grad():
        b.bn.running_mean.add_(0.5)
        a.bn.running_mean.add_(0.5)
    want, got = bn_drift(a, x[:20]), bn_drift(b, x[:20])
    assert len(want) == 1 and want == got and want[0]["mean_shift"] > 0
