"""EarlyStopping and Trainer.stop(): when a run ends, which weights it keeps, bad settings."""

from __future__ import annotations

import json

import numpy as np
import pytest

import depthlab as dl
from depthlab.training import Callback, Trainer


def _data(n=96, seed=0, noise=0.0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6))
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    flip = rng.random(n) < noise
    y[flip] = 1 - y[flip]
    return x.astype(np.float32), y


class _Scripted(Callback):
    """Replaces the epoch's metrics by a scripted sequence (before EarlyStopping reads them)."""

    def __init__(self, values, key="val_loss"):
        self.values, self.key = list(values), key

    def on_epoch_end(self, trainer, epoch, metrics):
        metrics[self.key] = self.values[epoch - 1]


def _trainer(callbacks, **kw):
    net = dl.mlp([6, 8, 2], activation="tanh", seed=0)
    kw = {"loss": "cross_entropy", "optimizer": "sgd", "lr": 0.1, "batch_size": 32,
          "epochs": 20, "seed": 0, **kw}
    return Trainer(net, callbacks=callbacks, **kw)


def test_stops_after_patience_epochs_without_improvement():
    es = dl.EarlyStopping("val_loss", patience=3, restore_best=False)
    values = [1.0, 0.8, 0.7, 0.71, 0.69, 0.72, 0.75, 0.74, 0.9, 0.9] + [1.0] * 10
    tr = _trainer([_Scripted(values), es])
    x, y = _data()
    hist = tr.fit(x, y, x[:32], y[:32])
    # best 0.69 at epoch 5; epochs 6, 7, 8 do not improve -> stop after epoch 8
    assert (es.best, es.best_epoch, es.stopped_epoch) == (0.69, 5, 8)
    assert len(hist.epochs) == 8 and tr.epoch == 8
    assert tr.step == 8 * 3  # 96 rows in batches of 32: no update after the stopping epoch
    assert len(hist.step_loss) == 24 and not es.restored


def test_min_delta_and_max_mode():
    es = dl.EarlyStopping("val_acc", patience=2, min_delta=0.05, restore_best=False)
    assert es.mode == "max"
    values = [0.5, 0.6, 0.64, 0.62, 0.9] + [0.95] * 15  # +0.04 and +0.02: not improvements
    tr = _trainer([_Scripted(values, "val_acc"), es])
    x, y = _data()
    tr.fit(x, y, x[:32], y[:32])
    assert (es.best, es.best_epoch, es.stopped_epoch) == (0.6, 2, 4)


def test_nonfinite_value_never_improves():
    es = dl.EarlyStopping("val_loss", patience=2, restore_best=False)
    tr = _trainer([_Scripted([1.0, float("nan"), float("inf")] + [0.1] * 17), es])
    x, y = _data()
    tr.fit(x, y, x[:32], y[:32])
    assert (es.best, es.best_epoch, es.stopped_epoch) == (1.0, 1, 3)


def test_restore_best_puts_back_the_best_epochs_parameters_and_bn_statistics():
    x, y = _data(noise=0.3)
    net = dl.mlp([6, 32, 32, 2], activation="relu", batchnorm=True, seed=1)
    snaps = {}

    class Snap(Callback):
        def on_epoch_end(self, trainer, epoch, metrics):
            metrics["val_loss"] = [3, 2, 1, 1.5, 1.6, 1.7, 1.8, 1.9][epoch - 1]
            bn = trainer.net.batchnorms()[0]
            snaps[epoch] = ([p.value.copy() for p in trainer.net.parameters()],
                            bn.running_mean.copy(), bn.running_var.copy(), bn.num_batches)

    es = dl.EarlyStopping("val_loss", patience=3)
    tr = Trainer(net, loss="cross_entropy", optimizer="adam", lr=0.05, batch_size=16,
                 epochs=8, seed=0, callbacks=[Snap(), es])
    params = net.parameters()
    before_ids = [id(p.value) for p in params]
    tr.fit(x, y, x[:32], y[:32])
    assert es.stopped_epoch == 6 and es.best_epoch == 3 and es.restored
    vals, rm, rv, nb = snaps[3]
    for p, v in zip(params, vals, strict=True):
        np.testing.assert_array_equal(p.value, v)
    bn = net.batchnorms()[0]
    np.testing.assert_array_equal(bn.running_mean, rm)
    np.testing.assert_array_equal(bn.running_var, rv)
    assert bn.num_batches == nb
    assert [id(p.value) for p in params] == before_ids  # restored in place
    # the epoch-6 parameters differ from the restored ones (the restore did something)
    assert any(not np.array_equal(a, b) for a, b in zip(snaps[6][0], vals, strict=True))


def test_no_restore_when_the_last_epoch_is_the_best():
    es = dl.EarlyStopping("train_loss", patience=2)
    tr = _trainer([_Scripted([5, 4, 3], "train_loss"), es], epochs=3)
    x, y = _data()
    tr.fit(x, y)
    assert es.best_epoch == 3 and es.stopped_epoch is None and not es.restored


def test_real_training_stops_on_a_validation_loss_that_rises():
    # 24 noisy rows, a wide net, a large lr: the validation loss turns up within 40 epochs
    x, y = _data(n=24, seed=3, noise=0.35)
    xv, yv = _data(n=200, seed=4)
    net = dl.mlp([6, 64, 64, 2], activation="relu", seed=0)
    es = dl.EarlyStopping(patience=3)
    hist = dl.fit(net, x, y, xv, yv, loss="cross_entropy", optimizer="adam", lr=0.01,
                  batch_size=8, epochs=200, seed=0, callbacks=[es])
    losses = [e["val_loss"] for e in hist.epochs]
    assert es.stopped_epoch is not None and len(hist.epochs) < 200
    assert es.best == min(losses) and losses[es.best_epoch - 1] == es.best
    assert all(v >= es.best for v in losses[es.best_epoch:])
    assert es.restored
    assert dl.Trainer(net, loss="cross_entropy").evaluate(xv, yv)["loss"] == pytest.approx(
        es.best, rel=1e-5)


def test_second_fit_call_trains_again_after_a_stop():
    class StopAt(Callback):
        def after_update(self, trainer, step, loss):
            if step == 2:
                trainer.stop()

    tr = _trainer([StopAt()], epochs=2)
    x, y = _data()
    tr.fit(x, y)
    assert tr.step == 2  # stopped mid-epoch, no further update
    tr.fit(x, y)
    assert tr.step == 2 + 6  # the next call runs its whole budget


@pytest.mark.parametrize("kwargs, match", [
    # monitor, patience and min_delta are read by the [train] rules, as by dl.fit (round 32)
    ({"monitor": "val_los"}, 'monitor = "val_los"'),
    ({"patience": 0}, "patience = 0"),
    ({"patience": 2.5}, "patience = 2.5"),
    ({"patience": True}, "patience = true"),
    ({"min_delta": -1.0}, "min_delta = -1.0"),
    ({"min_delta": float("nan")}, "min_delta = nan"),
    ({"mode": "lower"}, "mode='lower'"),
])
def test_bad_settings_are_refused_by_name(kwargs, match):
    with pytest.raises(ValueError, match=match):
        dl.EarlyStopping(**kwargs)
    with pytest.raises(TypeError, match="restore_best=1"):
        dl.EarlyStopping(restore_best=1)


def test_missing_metric_refused_before_training():
    x, y = _data()
    net = dl.mlp([6, 8, 2], seed=0)
    w0 = [p.value.copy() for p in net.parameters()]
    with pytest.raises(ValueError, match="needs validation data"):
        dl.fit(net, x, y, loss="cross_entropy", callbacks=[dl.EarlyStopping()])
    with pytest.raises(ValueError, match="needs eval_train=True"):
        dl.fit(net, x, y, loss="cross_entropy", eval_train=False,
               callbacks=[dl.EarlyStopping("train_loss")])
    for p, v in zip(net.parameters(), w0, strict=True):
        np.testing.assert_array_equal(p.value, v)  # refused before any update
    yr = x[:, :2].astype(np.float32)
    with pytest.raises(ValueError, match="reports no accuracy"):
        dl.fit(dl.mlp([6, 8, 2], seed=0), x, yr, x, yr, loss="mse",
               callbacks=[dl.EarlyStopping("val_acc")])


def test_a_second_fit_call_keeps_the_first_calls_standardization():
    """Continuing training on other data keeps the input scale the network learned on."""
    x, y = _data()
    tr = _trainer([], standardize=True, epochs=1)
    tr.fit(x, y)
    first = tr.standardizer
    mean, std = first.mean64.copy(), first.std64.copy()
    tr.fit(x * 10.0 + 3.0, y)
    assert tr.standardizer is first and tr.history.standardizer is first
    np.testing.assert_array_equal(tr.standardizer.mean64, mean)
    np.testing.assert_array_equal(tr.standardizer.std64, std)
    np.testing.assert_allclose(tr.transform(x), (x - mean) / std, rtol=1e-6, atol=1e-6)


def test_train_section_patience_stops_a_run_and_stores_its_best_epoch(tmp_path, capsys):
    """[train] patience: the run ends early, its stored metrics and saved network are the best
    epoch's, the CLI line says so."""
    from depthlab.cli import main
    from depthlab.experiments.runner import prepare
    from depthlab.experiments.store import Store
    from depthlab.inference import model_path

    cfg = tmp_path / "es.toml"
    cfg.write_text('[data]\nname = "digits"\n[model]\nsizes = [64, 64, 64, 10]\n'
                   'activation = "relu"\ninit = "he_normal"\n[train]\noptimizer = "adam"\n'
                   'lr = 0.01\nepochs = 200\nbatch_size = 32\npatience = 3\n'
                   '[probes]\nevery = 0\n')
    assert main(["run", str(cfg), "--out", str(tmp_path / "out")]) == 0
    line = capsys.readouterr().out
    with Store(tmp_path / "out") as store:
        run = store.runs().iloc[0]
        epochs = store.table("epochs")
    m = run["metrics"]
    stopped, best = int(m["stopped_epoch"]), int(m["best_epoch"])
    assert stopped == best + 3 and stopped < 200 and int(m["epochs"]) == stopped
    val = {int(e): json.loads(v)["val_loss"] for e, v in zip(epochs["epoch"],
                                                             epochs["metrics"], strict=True)}
    assert m["val_loss"] == pytest.approx(val[best]) == pytest.approx(min(val.values()))
    assert f"early stop after epoch {stopped}; metrics and network of epoch {best}" in line
    # the saved network is the best epoch's: its validation loss is the stored one
    prep = prepare(run["config"])
    net = dl.load(model_path(tmp_path / "out", run["id"]))
    val = dl.get_loss("cross_entropy").forward(net.predict(prep.data.x_val), prep.y_val)
    assert float(val) == pytest.approx(m["val_loss"], rel=1e-5)


@pytest.mark.parametrize("train, data, match", [
    ("patience = 0", "", "train.patience"),
    ('patience = 2\nmonitor = "val_lossy"', "", "train.monitor"),
    ("patience = 2\nmin_delta = -0.1", "", "train.min_delta"),
    ("patience = 2", "val_fraction = 0.0\n", "data.val_fraction = 0"),
])
def test_train_section_early_stopping_refused_by_name(tmp_path, capsys, train, data, match):
    from depthlab.cli import main

    cfg = tmp_path / "bad.toml"
    cfg.write_text(f'[data]\nname = "digits"\n{data}[model]\nsizes = [64, 16, 10]\n'
                   f'[train]\n{train}\n')
    assert main(["run", str(cfg), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert match in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_fit_accepts_the_train_section_keys():
    x, y = _data(n=24, seed=3, noise=0.35)
    xv, yv = _data(n=200, seed=4)
    tr = Trainer(dl.mlp([6, 64, 64, 2], activation="relu", seed=0), loss="cross_entropy",
                 optimizer="adam", lr=0.01, batch_size=8, epochs=200, seed=0, patience=3,
                 monitor="val_loss", min_delta=0.0)
    tr.fit(x, y, xv, yv)
    assert tr.early_stopping.stopped_epoch is not None and tr.epoch < 200
    with pytest.raises(ValueError, match="need"):
        Trainer(dl.mlp([6, 2], seed=0), monitor="val_acc")
