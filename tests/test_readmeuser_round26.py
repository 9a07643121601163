"""README promises of early stopping checked on new inputs (round 26, readmeuser26)."""

from __future__ import annotations

import numpy as np
import pytest

import depthlab as dl
from depthlab.training import Callback


def _blobs(n=160, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5))
    y = (x[:, 0] - x[:, 2] > 0).astype(np.int64)
    return x, y


class _BlowUpInEpoch(Callback):
    """Huge gradients from the first update of ``epoch`` on: the loss turns non-finite a few
    updates later, mid-epoch (no epoch row is logged after the last good one)."""

    def __init__(self, epoch):
        self.epoch = epoch

    def before_update(self, trainer, step):
        if trainer.epoch >= self.epoch:
            for p in trainer.net.parameters():
                p.grad[...] = 1e30


def test_a_run_that_diverges_after_its_best_epoch_gets_the_best_epoch_back():
    """README: EarlyStopping 'puts back the parameters and batch-norm statistics of the best
    epoch'. A run whose loss turns non-finite mid-epoch right after its best epoch kept the
    blown-up weights (only 'the last logged epoch is not the best' triggered the restore)."""
    x, y = _blobs()
    net = dl.mlp([5, 16, 16, 2], activation="identity", batchnorm=True, seed=0)
    seen = {}

    class Keep(Callback):
        def on_epoch_end(self, trainer, epoch, metrics):
            seen[epoch] = [p.value.copy() for p in trainer.net.parameters()]
            seen[epoch, "bn"] = [bn.running_mean.copy() for bn in trainer.net.batchnorms()]

    stop = dl.EarlyStopping("val_loss", patience=5)
    hist = dl.fit(net, x[:120], y[:120], x[120:], y[120:], loss="cross_entropy",
                  optimizer="sgd", lr=0.05, batch_size=16, epochs=10, seed=0,
                  callbacks=[_BlowUpInEpoch(3), Keep(), stop])
    assert hist.divergence is not None
    assert [e["epoch"] for e in hist.epochs] == [1, 2] and stop.best_epoch == 2
    assert stop.restored
    for got, want in zip(net.parameters(), seen[2], strict=True):
        np.testing.assert_array_equal(got.value, want)
    for bn, want in zip(net.batchnorms(), seen[2, "bn"], strict=True):
        np.testing.assert_array_equal(bn.running_mean, want)
    out = net.predict(x[120:])
    assert np.isfinite(out).all()
    assert dl.loss("cross_entropy").forward(out, y[120:]) == pytest.approx(stop.best, rel=1e-6)


def test_no_restore_reported_when_no_update_followed_the_best_epoch():
    x, y = _blobs()
    net = dl.mlp([5, 8, 2], activation="tanh", seed=0)
    stop = dl.EarlyStopping("val_loss", patience=50)
    dl.fit(net, x[:120], y[:120], x[120:], y[120:], loss="cross_entropy", optimizer="adam",
           lr=0.01, batch_size=16, epochs=3, seed=0, callbacks=[stop])
    assert stop.best_epoch == 3 and not stop.restored


@pytest.mark.parametrize("monitor", ["val_acc", "train_acc"])
@pytest.mark.parametrize("loss", ["mse", "huber"])
def test_an_accuracy_monitor_on_regression_targets_is_refused_before_the_first_update(
        monitor, loss):
    """README: 'A monitor the run does not compute is refused before the first update'; an
    accuracy monitor on real targets trained a whole epoch (the caller's network changed)
    before the ValueError."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(90, 4))
    y = x @ rng.normal(size=(4, 2))
    net = dl.mlp([4, 8, 2], activation="tanh", seed=0)
    before = [p.value.copy() for p in net.parameters()]
    with pytest.raises(ValueError, match=f"monitor='{monitor}'.*no accuracy"):
        dl.fit(net, x[:60], y[:60], x[60:], y[60:], loss=loss, epochs=3, batch_size=10,
               callbacks=[dl.EarlyStopping(monitor, patience=2)])
    for p, b in zip(net.parameters(), before, strict=True):
        np.testing.assert_array_equal(p.value, b)


def test_an_accuracy_monitor_on_one_hot_mse_targets_is_accepted():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(90, 4))
    y = np.eye(3)[rng.integers(0, 3, 90)]
    stop = dl.EarlyStopping("val_acc", patience=2)
    dl.fit(dl.mlp([4, 8, 3], seed=0), x[:60], y[:60], x[60:], y[60:], loss="mse", epochs=4,
           batch_size=10, callbacks=[stop])
    assert stop.best is not None and 0 <= stop.best <= 1


def _csv_regression(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 3))
    y = x @ np.array([1.0, -2.0, 0.5])
    rows = "".join(",".join(f"{v:.6f}" for v in (*r, t)) + "\n" for r, t in zip(x, y,
                                                                                strict=True))
    path = tmp_path / "reg.csv"
    path.write_text("a,b,c,target\n" + rows)
    return path


@pytest.mark.parametrize("train, match", [
    ('monitor = "val_acc"', "train.monitor"),
    ("min_delta = 0.1", "train.min_delta"),
])
def test_monitor_or_min_delta_without_patience_is_refused_before_the_run(tmp_path, capsys,
                                                                         train, match):
    """README: 'every key is validated before anything starts (... exits with status 2 and
    one line naming the key)'; monitor/min_delta without patience was a failed run (exit 1)
    stored in the results."""
    from depthlab.cli import main

    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[data]\nname = "digits"\n[model]\nsizes = ["auto", 8, "auto"]\n'
                   f'[train]\nepochs = 1\n{train}\n[probes]\nevery = 0\n')
    assert main(["run", str(cfg), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0] and "patience" in err[0]
    assert not (tmp_path / "out").exists()


def test_an_accuracy_monitor_on_a_regression_file_is_refused_with_exit_2(tmp_path, capsys):
    from depthlab.cli import main

    data = _csv_regression(tmp_path)
    cfg = tmp_path / "r.toml"
    cfg.write_text(f'[data]\npath = "{data.as_posix()}"\nlabel = "target"\n[model]\n'
                   'sizes = ["auto", 8, "auto"]\n[train]\nloss = "mse"\nepochs = 3\n'
                   'patience = 1\nmonitor = "val_acc"\n[probes]\nevery = 0\n')
    assert main(["run", str(cfg), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train.monitor" in err[0] and "val_loss" in err[0]
    # a loss monitor on the same file runs
    cfg.write_text(cfg.read_text().replace('"val_acc"', '"val_loss"'))
    assert main(["run", str(cfg), "--out", str(tmp_path / "out"), "--quiet"]) == 0


def test_gradient_heatmap_refuses_a_quantity_no_probe_measures():
    """README: plot.gradient_heatmap(table, quantity) 'draws any per-layer quantity ...,
    titled by what it draws'; a misspelled quantity ('act_sdt') gave an untitled figure
    saying "no 'act_sdt' probes recorded", as if the probes had missed it."""
    from depthlab import plot

    x, y = _blobs(40)
    table = dl.probe(dl.mlp([5, 6, 6, 2], activation="tanh", seed=0), x, y,
                     loss="cross_entropy")
    with pytest.raises(ValueError, match="'act_sdt'.*act_std"):
        plot.gradient_heatmap(table, "act_sdt")
    with pytest.raises(TypeError, match="quantity"):
        plot.gradient_heatmap(table, 3)
    # a real quantity this table lacks (no training: no update ratio) still draws its note
    fig = plot.gradient_heatmap(table, "update_ratio")
    assert "no 'update_ratio' probes recorded" in [t.get_text() for t in fig.axes[0].texts]
    assert plot.gradient_heatmap(table, "act_p85").axes[0].get_title() == "act_p85 per layer"


def test_a_regression_runs_progress_line_shows_the_validation_loss_not_a_nan_accuracy(
        tmp_path, capsys):
    """The run's status line read 'val_acc nan' for a regression (README: regression runs
    have no accuracy and are shown by their validation and test losses)."""
    from depthlab.cli import main

    data = _csv_regression(tmp_path)
    cfg = tmp_path / "r.toml"
    cfg.write_text(f'[data]\npath = "{data.as_posix()}"\nlabel = "target"\n[model]\n'
                   'sizes = ["auto", 8, "auto"]\n[train]\nloss = "mse"\nepochs = 2\n'
                   '[probes]\nevery = 0\n')
    assert main(["run", str(cfg), "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert "step " in err and "val_loss " in err and "nan" not in err
    # a classification run keeps its accuracy
    cfg.write_text('[data]\nname = "digits"\n[model]\nsizes = ["auto", 8, "auto"]\n'
                   '[train]\nepochs = 1\n[probes]\nevery = 0\n')
    assert main(["run", str(cfg), "--out", str(tmp_path / "out")]) == 0
    assert "val_acc 0." in capsys.readouterr().err


def test_an_accuracy_monitor_on_one_hot_target_columns_under_mse_runs(tmp_path):
    """Two 0/1 target columns under mse report the arg-max accuracy (README: 'mse and huber
    on one-hot target rows report the arg-max accuracy'), so val_acc is a valid monitor."""
    from depthlab.cli import main

    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 2))
    k = (x[:, 0] > 0).astype(int)
    data = tmp_path / "oh.csv"
    data.write_text("a,b,y1,y2\n" + "".join(f"{a:.3f},{b:.3f},{1 - c},{c}\n"
                                            for (a, b), c in zip(x, k, strict=True)))
    cfg = tmp_path / "oh.toml"
    cfg.write_text(f'[data]\npath = "{data.as_posix()}"\nlabel = ["y1", "y2"]\n[model]\n'
                   'sizes = ["auto", 4, "auto"]\n[train]\nloss = "mse"\nepochs = 3\n'
                   'patience = 1\nmonitor = "val_acc"\n[probes]\nevery = 0\n')
    assert main(["run", str(cfg), "--out", str(tmp_path / "out"), "--quiet"]) == 0


def test_a_run_whose_monitor_is_never_finite_is_reported_not_crashed(tmp_path, capsys):
    """Early stopping with no finite validation loss in any epoch (validation rows that
    overflow the float32 network) stops after `patience` epochs with no best epoch: `depthlab
    run` crashed printing its line (int(None): 'internal error', exit 1) after storing the
    run, and the network was not saved."""
    from depthlab.cli import main
    from depthlab.inference import model_path

    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    data = tmp_path / "inf.npz"
    np.savez(data, x_train=x, y_train=y, x_val=np.full((20, 4), 3e38, np.float32),
             y_val=y[:20], x_test=x[:20], y_test=y[:20])
    cfg = tmp_path / "inf.toml"
    cfg.write_text(f'[data]\npath = "{data.as_posix()}"\nstandardize = false\n[model]\n'
                   'sizes = ["auto", 8, "auto"]\n[train]\nepochs = 6\npatience = 2\n'
                   '[probes]\nevery = 0\n')
    assert main(["run", str(cfg), "--out", str(tmp_path / "out"), "--json"]) == 0
    out = capsys.readouterr()
    import json

    rec = json.loads(out.out)
    assert rec["metrics"]["stopped_epoch"] == 2 and rec["metrics"]["best_epoch"] is None
    assert "early stop after epoch 2" in out.err and "no epoch had a finite val_loss" in out.err
    assert model_path(tmp_path / "out", rec["id"]).exists()


def test_a_npz_with_its_own_validation_split_early_stops_with_val_fraction_0(tmp_path,
                                                                            capsys):
    """README: a .npz's x_val/y_val are used as the validation split, so data.val_fraction
    does not matter for it; `patience` with val_fraction = 0 was refused ('needs a validation
    split but data.val_fraction = 0') although the file holds 15 validation rows. A .npz
    without x_val still gets one line and exit 2."""
    from depthlab.cli import main

    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    with_val = tmp_path / "split.npz"
    np.savez(with_val, x_train=x[:70], y_train=y[:70], x_val=x[70:85], y_val=y[70:85],
             x_test=x[85:], y_test=y[85:])
    without = tmp_path / "train_only.npz"
    np.savez(without, x_train=x[:85], y_train=y[:85], x_test=x[85:], y_test=y[85:])
    for data, code in ((with_val, 0), (without, 2)):
        cfg = tmp_path / f"{data.stem}.toml"
        cfg.write_text(f'[data]\npath = "{data.as_posix()}"\nval_fraction = 0\n[model]\n'
                       'sizes = ["auto", 8, "auto"]\n[train]\nepochs = 3\npatience = 1\n'
                       '[probes]\nevery = 0\n')
        assert main(["run", str(cfg), "--out", str(tmp_path / "out"), "--quiet"]) == code
        err = capsys.readouterr().err.strip().splitlines()
        if code:
            assert len(err) == 1 and "train.monitor" in err[0] and "validation" in err[0]


def test_a_refused_first_fit_call_does_not_fix_the_input_standardization():
    """README: the standardization is 'fitted by a Trainer's first fit call and kept by its
    later calls'. A first call refused before any update (no validation data for the early
    stopping monitor, a bad label) kept a standardizer fitted on its arrays, and the next,
    valid call trained on inputs scaled by the refused data's statistics."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3))
    y = (x[:, 0] > 0).astype(np.int64)
    tr = dl.Trainer(dl.mlp([3, 4, 2], seed=0), standardize=True, epochs=1, patience=2)
    with pytest.raises(ValueError, match="needs validation data"):
        tr.fit(x * 1000 + 50, y)
    bad = y.copy()
    bad[3] = 7
    with pytest.raises(ValueError, match="label 7"):
        tr.fit(x * 1000 + 50, bad, x, y)
    assert tr.standardizer is None and tr.step == 0
    hist = tr.fit(x, y, x, y)
    np.testing.assert_allclose(tr.standardizer.mean64, x.mean(axis=0))
    assert hist.standardizer is tr.standardizer
    # once a call has trained, a later call keeps it (even one that is refused)
    with pytest.raises(ValueError, match="label 7"):
        tr.fit(x * 1000 + 50, bad, x, y)
    np.testing.assert_allclose(tr.standardizer.mean64, x.mean(axis=0))
