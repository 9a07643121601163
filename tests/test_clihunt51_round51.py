"""Round 51 CLI/store hunt: streamed grids' history screen, ..."""

from __future__ import annotations

import pytest

SMALL = {"name": "h51", "data": {"name": "clusters", "n": 64},
         "model": {"sizes": ["auto", 4, "auto"], "activation": "tanh"},
         "train": {"loss": "cross_entropy", "optimizer": "sgd", "lr": 0.1,
                   "batch_size": 16, "epochs": 1}, "probes": {"every": 0}}


def test_a_streamed_grid_whose_history_cannot_fit_is_refused_before_any_point(tmp_path,
                                                                              monkeypatch):
    """A grid above WORK_POINTS (2,000) points, streamed, was not screened for its history:
    ``train.epochs = 10**12`` over 2,001 points stored 2,001 failed points (77 s, exit 1) where
    a grid of 3 was refused at once (exit 2, nothing stored). Now refused likewise."""
    import depthlab.experiments.sweep as sweep_mod
    from depthlab.experiments import ExperimentError, run_sweep

    monkeypatch.setattr(sweep_mod, "WORK_POINTS", 2)  # 3 points: streamed, as 2,001 are
    raw = {**SMALL, "train": {**SMALL["train"], "epochs": 10**15},
           "sweep": {"train.seed": [0, 1, 2]}}
    out = tmp_path / "out"
    with pytest.raises(ExperimentError, match=r"train\.epochs = 10+ .*history.*no point ran"):
        run_sweep(raw, out, echo=None)
    assert not (out / "depthlab.db").exists()
    # a grid whose large-epochs point is one value of a swept epochs is refused too
    raw = {**SMALL, "sweep": {"train.epochs": [1, 10**15], "train.seed": [0, 1]}}
    with pytest.raises(ExperimentError, match="no point ran"):
        run_sweep(raw, out, echo=None)
    assert not (out / "depthlab.db").exists()
    # a grid that fits runs
    raw = {**SMALL, "sweep": {"train.seed": [0, 1, 2]}}
    assert run_sweep(raw, out, echo=None).count("finished") == 3


RUN_TOML = """\
name = "stopped"
[data]
name = "clusters"
n = 120
options = {d = 4, n_classes = 3}
[model]
sizes = ["auto", 6, "auto"]
activation = "tanh"
[train]
lr = 0.1
batch_size = 16
epochs = 6
[probes]
every = 4
"""


def _interrupt_at(monkeypatch, hook: str, when: int) -> None:
    """Ctrl-C (a real SIGINT to this process) from a training callback's ``hook`` at epoch
    (``on_epoch_end``) or step (``after_update``) ``when``."""
    import os
    import signal

    import depthlab.experiments.runner as runner_mod
    from depthlab.training import Callback

    class CtrlC(Callback):
        def on_epoch_end(self, trainer, epoch, metrics):
            if hook == "on_epoch_end" and epoch == when:
                os.kill(os.getpid(), signal.SIGINT)

        def after_update(self, trainer, step, loss):
            if hook == "after_update" and step == when:
                os.kill(os.getpid(), signal.SIGINT)

    make = runner_mod.make_trainer

    def with_ctrl_c(prep, callbacks=(), **kw):
        return make(prep, callbacks=[*callbacks, CtrlC()], **kw)

    monkeypatch.setattr(runner_mod, "make_trainer", with_ctrl_c)


def test_an_interrupted_run_keeps_its_finished_epochs(tmp_path, monkeypatch, capsys):
    """Ctrl-C during `depthlab run` stored nothing: the epochs that had finished (hours of
    training, their probes) were lost with the rest. Now a run with whole epochs is stored as
    ``interrupted`` (its epochs, steps and probes so far, no network), exit 130 still, one
    line saying so; the same command trains it again without --overwrite. Before its first
    epoch ends, nothing is stored, as before."""
    from depthlab.cli import main
    from depthlab.experiments import Store

    cfg = tmp_path / "stopped.toml"
    cfg.write_text(RUN_TOML)
    out = tmp_path / "out"
    with monkeypatch.context() as m:
        _interrupt_at(m, "after_update", 2)  # in the first epoch: nothing kept
        assert main(["run", str(cfg), "--out", str(out), "-q"]) == 130
    assert "not stored" not in capsys.readouterr().err
    with Store(out, create=False, readonly=True) as store:
        assert store.runs().empty
    with monkeypatch.context() as m:
        _interrupt_at(m, "on_epoch_end", 2)
        assert main(["run", str(cfg), "--out", str(out), "-q"]) == 130
    err = capsys.readouterr().err
    assert "interrupted after" in err and "stored as interrupted" in err, err
    assert err.strip().splitlines()[-1] == "depthlab: interrupted"
    with Store(out, create=False, readonly=True) as store:
        runs = store.runs()
        assert list(runs["status"]) == ["interrupted"]
        rid = runs["id"][0]
        run = store.run(rid)
        epochs = store.epochs(rid)
        assert 2 <= len(epochs) < 6 and run["metrics"]["epochs"] == len(epochs)
        assert run["metrics"]["steps"] == len(store.steps(rid)) >= epochs["step"].iloc[-1]
        assert run["metrics"]["train_loss"] == pytest.approx(epochs["train_loss"].iloc[-1])
        assert not store.probes(rid).empty and run["error"] is None
        assert list(store.runs(status="interrupted")["id"]) == [rid]
    assert not (out / "models" / f"{rid}.npz").exists()
    assert main(["runs", str(out), "--status", "interrupted"]) == 0
    assert rid in capsys.readouterr().out
    # the same command again: trained to its end, replacing the interrupted record
    assert main(["run", str(cfg), "--out", str(out), "-q"]) == 0
    with Store(out, create=False, readonly=True) as store:
        assert list(store.runs()["status"]) == ["finished"]
        assert len(store.epochs(rid)) == 6
    assert (out / "models" / f"{rid}.npz").is_file()
    # --overwrite of that finished run, interrupted: the finished run and its network stay
    with monkeypatch.context() as m:
        _interrupt_at(m, "on_epoch_end", 2)
        assert main(["run", str(cfg), "--out", str(out), "-q", "--overwrite"]) == 130
    err = capsys.readouterr().err
    assert "not stored" in err and "(finished) is kept" in err, err
    with Store(out, create=False, readonly=True) as store:
        assert list(store.runs()["status"]) == ["finished"]
    assert (out / "models" / f"{rid}.npz").is_file()


def test_an_interrupted_run_with_json_prints_its_stored_record(tmp_path, monkeypatch, capsys):
    """`run --json` stopped by Ctrl-C printed nothing on stdout (a script reading the record
    failed on empty input, as `sweep --json` did before round 47); now the record stored as
    interrupted, exit 130."""
    import json

    from depthlab.cli import main

    cfg = tmp_path / "stopped.toml"
    cfg.write_text(RUN_TOML)
    _interrupt_at(monkeypatch, "on_epoch_end", 3)
    assert main(["run", str(cfg), "--out", str(tmp_path / "o"), "--json"]) == 130
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "interrupted" and out["network"] is None
    assert 3 <= out["metrics"]["epochs"] < 6 and out["store"].endswith("depthlab.db")


def test_a_second_ctrl_c_while_the_interrupted_run_is_stored_stores_nothing(tmp_path,
                                                                           monkeypatch,
                                                                           capsys):
    """The interrupted run's write can take seconds (906,000 probe rows: 3.5 s); a second
    Ctrl-C during it stops the write: nothing of the run is stored, the store stays whole,
    exit 130."""
    import os
    import signal

    import depthlab.experiments.store as store_mod
    from depthlab.cli import main
    from depthlab.experiments import Store

    cfg = tmp_path / "stopped.toml"
    cfg.write_text(RUN_TOML)
    out = tmp_path / "o"
    _interrupt_at(monkeypatch, "on_epoch_end", 2)
    monkeypatch.setattr(store_mod, "INTERRUPT_CHECK_OPS", 1)
    add = store_mod.Store._add_run

    def ctrl_c_in_the_write(self, record, replace):
        with self._transaction() as c:  # the lock taken, as the write's own
            c.execute("SELECT 1 FROM runs")
        os.kill(os.getpid(), signal.SIGINT)
        return add(self, record, replace)

    monkeypatch.setattr(store_mod.Store, "_add_run", ctrl_c_in_the_write)
    assert main(["run", str(cfg), "--out", str(out), "-q"]) == 130
    err = capsys.readouterr().err
    assert "storing it" in err and "stored as interrupted" not in err, err
    with Store(out, create=False, readonly=True) as store:
        assert store.runs().empty
        assert store._conn.execute("PRAGMA quick_check").fetchone()[0] == "ok"


def test_ctrl_c_in_the_test_pass_after_training_keeps_the_epochs(tmp_path, monkeypatch,
                                                                 capsys):
    """Every epoch trained, then Ctrl-C during the test split's pass (seconds on a large
    split): nothing was stored. Now the run is kept as interrupted, all its epochs in."""
    import os
    import signal

    from depthlab.cli import main
    from depthlab.experiments import Store
    from depthlab.training.trainer import Trainer

    cfg = tmp_path / "stopped.toml"
    cfg.write_text(RUN_TOML)
    evaluate = Trainer.evaluate

    def ctrl_c_on_the_test_split(self, x, y, *a, **kw):
        if getattr(self, "_test_pass", False):
            os.kill(os.getpid(), signal.SIGINT)
        return evaluate(self, x, y, *a, **kw)

    prepare_inference = Trainer.prepare_inference

    def marked(self, *a, **kw):  # _final_metrics calls it right before the test pass
        self._test_pass = True
        return prepare_inference(self, *a, **kw)

    monkeypatch.setattr(Trainer, "evaluate", ctrl_c_on_the_test_split)
    monkeypatch.setattr(Trainer, "prepare_inference", marked)
    assert main(["run", str(cfg), "--out", str(tmp_path / "o"), "-q"]) == 130
    assert "stored as interrupted" in capsys.readouterr().err
    with Store(tmp_path / "o", create=False, readonly=True) as store:
        (rid,) = store.runs()["id"]
        assert store.run(rid)["status"] == "interrupted" and len(store.epochs(rid)) == 6
