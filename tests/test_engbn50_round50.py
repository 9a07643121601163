"""engbn50 (round 50): the batch-norm step in fewer NumPy calls, and the trainer's
epoch-end calibration deferred until read -- every value bit for bit as before."""

from __future__ import annotations

import copy
import pickle
import warnings

import numpy as np
import pytest

import depthlab as dl
from depthlab.layers import batchnorm as bnmod
from depthlab.layers.batchnorm import BatchNorm
from depthlab.training import calibration
from depthlab.training.trainer import Callback, Trainer

# -- the pristine forward/backward, literally (the reference for bit identity) -------------


def old_moments(x):
    m = x.shape[0]
    acc = np.float64 if x.dtype == np.float32 and m >= bnmod.F64_SUMS_FROM else None
    mu = x.mean(axis=0, dtype=acc).astype(x.dtype, copy=False)
    xc = x - mu
    var = (np.einsum("ij,ij->j", xc, xc, dtype=acc) / m).astype(x.dtype, copy=False)
    return mu, xc, var


def old_forward(bn, x, stats=None):
    mu, xc, var = old_moments(x) if stats is None else (stats[0], x - stats[0], stats[1])
    inv_std = 1.0 / np.sqrt(var + bn.eps)
    xhat = xc * inv_std
    y = xhat * bn.gamma.value + bn.beta.value if bn.affine else xhat
    return y, xhat, inv_std, mu, var


def old_backward(bn, grad, xhat, inv_std, training):
    if bn.affine and grad.dtype == np.float32 and grad.shape[0] >= bnmod.F64_SUMS_FROM:
        dg = np.einsum("ij,ij->j", grad, xhat, dtype=np.float64).astype(grad.dtype)
        db = grad.sum(axis=0, dtype=np.float64).astype(grad.dtype)
    else:
        dg, db = np.einsum("ij,ij->j", grad, xhat), np.sum(grad, axis=0)
    dxhat = grad * bn.gamma.value if bn.affine else grad.copy()
    if not training:
        dxhat *= inv_std
        return dxhat, dg, db
    m = grad.shape[0]
    k_inv_std = np.einsum("ij,ij->j", dxhat, xhat) * (1.0 / m) * inv_std
    dmu = dxhat.sum(axis=0) * -inv_std + k_inv_std * xhat.sum(axis=0)
    dx = dxhat
    dx *= inv_std
    dx -= xhat * k_inv_std
    dx += dmu * (1.0 / m)
    return dx, dg, db


def same(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("rows,width", [(2, 8), (3, 1), (64, 32), (65, 100), (1024, 5),
                                        (1500, 3)])
@pytest.mark.parametrize("affine", [True, False])
def test_training_step_bits_match_the_pristine_formulas(dtype, rows, width, affine):
    rng = np.random.default_rng(rows * 7 + width)
    bn = BatchNorm(width, dtype=dtype, affine=affine, momentum=0.1)
    bn.gamma.value[...] = rng.uniform(0.5, 2.0, width)
    bn.beta.value[...] = rng.standard_normal(width)
    for step in range(3):  # the scratch buffer is reused from the second step on
        x = (rng.standard_normal((rows, width)) * 3 + 1).astype(dtype)
        x[:, 0] = 2.5  # a constant feature
        g = rng.standard_normal((rows, width)).astype(dtype)
        y_old, xhat, inv_std, mu, var = old_forward(bn, x)
        rm, rv = bn.running_mean.copy(), bn.running_var.copy()
        y = bn.forward(x, training=True)
        assert same(y, y_old) and same(bn.xhat, xhat) and same(bn.inv_std, inv_std)
        if step:  # the moving averages: r <- (1 - 0.1) r + 0.1 * batch statistic
            rm *= 1.0 - 0.1
            rm += 0.1 * mu
            rv *= 1.0 - 0.1
            rv += 0.1 * (var * (rows / (rows - 1)))
        else:  # the first batch's statistics (ema_start="first_batch")
            rm, rv = mu, var * (rows / (rows - 1))
        assert same(bn.running_mean, rm) and same(bn.running_var, rv)
        dx_old, dg, db = old_backward(bn, g.copy(), xhat, inv_std, True)
        dx = bn.backward(g.copy())
        assert same(dx, dx_old)
        if affine:
            assert same(bn.gamma.grad, dg) and same(bn.beta.grad, db)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_inference_and_track_false_bits_match(dtype):
    rng = np.random.default_rng(3)
    bn = BatchNorm(6, dtype=dtype)
    for _ in range(4):
        bn.forward(rng.standard_normal((9, 6)).astype(dtype), training=True)
    x = rng.standard_normal((5, 6)).astype(dtype)
    y_old, xhat, inv_std, *_ = old_forward(bn, x, (bn.running_mean, bn.running_var))
    assert same(bn.forward(x, training=False), y_old)
    g = rng.standard_normal((5, 6)).astype(dtype)
    assert same(bn.backward(g.copy()), old_backward(bn, g.copy(), xhat, inv_std, False)[0])
    free = BatchNorm(6, dtype=dtype, track_running_stats=False)
    y_old, xhat, inv_std, *_ = old_forward(free, x)
    assert same(free.forward(x, training=False), y_old)
    assert same(free.backward(g.copy()), old_backward(free, g.copy(), xhat, inv_std, True)[0])


def test_moments_of_other_inputs_are_those_of_ndarray_mean():
    """A direct ``calibrate`` of integers or float16 keeps ndarray.mean's promotion."""
    for x in (np.arange(12).reshape(4, 3), np.arange(12, dtype=np.float16).reshape(4, 3),
              np.random.default_rng(0).standard_normal((2000, 3)).astype(np.float32)):
        for a, b in zip(bnmod.batch_moments(x), old_moments(x), strict=True):
            assert same(a, b)


def test_backward_input_checks_unchanged():
    bn = BatchNorm(3)
    with pytest.raises(RuntimeError, match="before forward"):
        bn.backward(np.ones((4, 3), np.float32))
    bn.forward(np.ones((4, 3), np.float32) * np.arange(4)[:, None])
    with pytest.raises(ValueError, match=r"expected the forward output's shape \(4, 3\)"):
        bn.backward(np.ones((4, 2), np.float32))
    # float64 and Fortran-order gradients: cast and copied, the same bits as C-order float32
    g = np.random.default_rng(1).standard_normal((4, 3))
    want = bn.backward(g.astype(np.float32))
    assert same(bn.backward(np.asfortranarray(g)), want)


def test_scratch_buffer_is_not_pickled_and_cleared():
    bn = BatchNorm(4)
    x = np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32)
    bn.forward(x)
    bn.backward(np.ones((8, 4), np.float32))
    assert bn._buf is not None
    assert "_buf" not in pickle.loads(pickle.dumps(bn)).__dict__
    bn.clear_cache()
    assert bn._buf is None


# -- the deferred epoch-end calibration ----------------------------------------------------


def data(n=90, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 5))
    return x, (x[:, 0] + x[:, 1] > 0).astype(int)


def net_(residual=False, dtype="float32"):
    return dl.mlp([5, 12, 12, 12, 3], seed=2, batchnorm=True, bn_inference="population",
                  residual=residual, dtype=dtype)


def train(eager, monkeypatch, callbacks=(), net=None, **kw):
    """One training; ``eager`` forces the pristine epoch-end pass."""
    if eager:
        monkeypatch.setattr("depthlab.training.trainer.deferrable", lambda net: False)
    else:
        monkeypatch.setattr("depthlab.training.trainer.deferrable",
                            calibration.deferrable)
    net = net_() if net is None else net
    x, y = data()
    opts = dict(batch_size=16, epochs=4, seed=3, eval_train=False, progress=False, lr=0.05)
    opts.update(kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hist = Trainer(net, callbacks=list(callbacks), **opts).fit(x, y)
    return net, hist


def state(net):
    out = []
    for bn in net.batchnorms():
        out += [bn.population_mean, bn.population_var, bn.running_mean, bn.running_var]
    out += [p.value for p in net.parameters()]
    out += [getattr(leaf, "x", None) for leaf in net.leaves()]  # the caches left
    return out


def assert_same_states(a, b):
    assert len(a) == len(b)
    for u, v in zip(a, b, strict=True):
        assert (u is None) == (v is None)
        if u is not None:
            assert same(u, v)


@pytest.mark.parametrize("kw", [{}, {"batch_size": "full"}, {"max_steps": 13},
                                {"dtype": "float64"}, {"residual": True}])
def test_deferred_calibration_leaves_the_eager_state(kw, monkeypatch):
    build = {k: kw.pop(k) for k in ("dtype", "residual") if k in kw}
    a, ha = train(True, monkeypatch, net=net_(**build), **kw)
    b, hb = train(False, monkeypatch, net=net_(**build), **kw)
    assert_same_states(state(a), state(b))
    assert ha.step_loss == hb.step_loss
    x, _ = data()
    assert same(a.predict(x), b.predict(x))


def test_deferred_calibration_runs_once_per_fit(monkeypatch):
    """4 epochs computing no metric: one calibration pass (at the fit's end), not 4."""
    calls = []
    real = dl.Network.calibrate
    monkeypatch.setattr(dl.Network, "calibrate",
                        lambda self, x: calls.append(len(x)) or real(self, x))
    train(False, monkeypatch)
    assert len(calls) == 1
    calls.clear()
    train(False, monkeypatch, eval_train=True)  # a metric per epoch: the pass each epoch
    assert len(calls) == 4


class Reader(Callback):
    """Reads the population statistics (or predicts) at chosen steps and epoch ends."""

    def __init__(self, steps, how="attr", epochs=()):
        self.steps, self.how, self.epochs, self.seen = set(steps), how, set(epochs), []

    def read(self, trainer):
        net = trainer.net
        if self.how == "attr":
            self.seen += [bn.population_var.copy() for bn in net.batchnorms()]
        elif self.how == "predict":
            self.seen.append(net.predict(data()[0][:7]))
        elif self.how == "deepcopy":
            twin = copy.deepcopy(net)
            self.seen += [bn.population_mean for bn in twin.batchnorms()]
        elif self.how == "pickle":
            twin = pickle.loads(pickle.dumps(net))
            self.seen += [bn.population_mean for bn in twin.batchnorms()]
        elif self.how == "forward":  # caches of a pass after the epoch's end stay
            net.forward(data()[0][:5], training=False)
        elif self.how == "assign":  # one layer's statistic set by hand, the others kept
            bn = net.batchnorms()[1]
            bn.population_mean = np.full_like(bn.running_mean, 0.25)
            self.seen += [b.population_mean.copy() for b in net.batchnorms()]

    def after_update(self, trainer, step, loss):
        if step in self.steps:
            self.read(trainer)

    def on_epoch_end(self, trainer, epoch, metrics):
        if epoch in self.epochs:
            self.read(trainer)


@pytest.mark.parametrize("how", ["attr", "predict", "deepcopy", "pickle", "assign", "forward"])
def test_readers_mid_epoch_see_the_eager_values(how, monkeypatch):
    """Read 2 steps after an epoch's end (weights since moved), and at an epoch's end (the
    last one's too: the fit's end settles on the network itself, its caches put back)."""
    ra, rb = Reader({8, 14, 20}, how, {2, 4}), Reader({8, 14, 20}, how, {2, 4})
    a, _ = train(True, monkeypatch, callbacks=[ra])
    b, _ = train(False, monkeypatch, callbacks=[rb])
    assert len(ra.seen) == len(rb.seen) > (-1 if how == "forward" else 0)
    for u, v in zip(ra.seen, rb.seen, strict=True):
        assert same(u, v)
    assert_same_states(state(a), state(b))


class Poison(Callback):
    """A non-finite weight after the update of ``step``: the next step's loss diverges."""

    def __init__(self, step):
        self.step = step

    def after_update(self, trainer, step, loss):
        if step == self.step:
            trainer.net.dense_layers()[-1].W.value[0, 0] = np.inf


def test_divergence_mid_epoch_keeps_the_last_epoch_end_statistics(monkeypatch):
    """6 steps an epoch: diverged at step 10, the statistics of epoch 1's end stay."""
    a, ha = train(True, monkeypatch, callbacks=[Poison(9)])
    b, hb = train(False, monkeypatch, callbacks=[Poison(9)])
    assert ha.diverged and hb.diverged and ha.divergence.step == hb.divergence.step == 10
    assert ha.step_loss == hb.step_loss
    assert_same_states(state(a), state(b))


def test_eval_every_and_prepare_inference_replace_a_pending_pass(monkeypatch):
    ra, rb = Reader({7, 15}, "attr"), Reader({7, 15}, "attr")
    a, _ = train(True, monkeypatch, callbacks=[ra], eval_every=5)
    b, _ = train(False, monkeypatch, callbacks=[rb], eval_every=5)
    for u, v in zip(ra.seen, rb.seen, strict=True):
        assert same(u, v)
    assert_same_states(state(a), state(b))


def test_custom_layer_subclass_is_calibrated_eagerly():
    net = net_()
    assert calibration.deferrable(net)
    net.layers.append(BatchNorm(3))
    assert calibration.deferrable(net)

    class MyBN(BatchNorm):
        def calibrate(self, x):
            return super().calibrate(x)

    net.layers.append(MyBN(3))
    assert not calibration.deferrable(net)


def test_stateful_passes_are_calibrated_eagerly():
    """MC dropout draws masks in the pass and a user's activation function may keep state:
    the pass runs at the epoch's end as before."""
    net = dl.mlp([5, 12, 3], seed=2, batchnorm=True, dropout=0.2, bn_inference="population")
    assert calibration.deferrable(net)
    net.dropouts()[0].mc = True
    assert not calibration.deferrable(net)

    class Square:
        def forward(self, s):
            return s * s

        def backward(self, s, a, grad):
            return 2 * s * grad

    net = net_()
    act = next(leaf for leaf in net.leaves() if hasattr(leaf, "fn"))
    act.fn = Square()
    assert not calibration.deferrable(net)
