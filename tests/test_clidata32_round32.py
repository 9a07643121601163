"""Round 32 (clidata32): the CLI, the run store and data loading as a demanding user meets them."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.cli import TINY, one_blas_thread, run_cli


def _runs(out):
    from depthlab.experiments import Store

    with Store(out, create=False, readonly=True) as store:
        return list(store.runs()["id"])


def test_ctrl_c_while_the_network_is_saved_stores_nothing(tmp_path, capsys, monkeypatch):
    """README: Ctrl-C during `depthlab run` -> status 130, nothing stored. A Ctrl-C while the
    trained network was written (seconds for a large one) left the run stored without its
    network: the same command was then refused as already stored, and `predict` had no
    network for it."""
    one_blas_thread(monkeypatch)
    config = tmp_path / "tiny.toml"
    config.write_text(TINY)
    out = tmp_path / "results"
    real = np.savez

    def ctrl_c(*args, **kwargs):  # the network's file is being written
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", ctrl_c)
    code, _, err = run_cli(capsys, "run", config, "--out", out, "--quiet")
    assert code == 130, err
    assert _runs(out) == []
    assert not (out / "models").exists() or not any((out / "models").iterdir())
    monkeypatch.setattr(np, "savez", real)
    code, _, err = run_cli(capsys, "run", config, "--out", out, "--quiet")  # not "stored"
    assert code == 0, err
    (rid,) = _runs(out)
    assert (out / "models" / f"{rid}.npz").is_file()


def test_ctrl_c_while_the_run_is_stored_leaves_no_network(tmp_path, capsys, monkeypatch):
    """The other side: interrupted while its record is written, a run leaves no network file
    (nor a temporary) beside a store that does not hold it."""
    from depthlab.experiments import Store

    one_blas_thread(monkeypatch)
    config = tmp_path / "tiny.toml"
    config.write_text(TINY)
    out = tmp_path / "results"

    def ctrl_c(self, record, replace=True):
        raise KeyboardInterrupt

    monkeypatch.setattr(Store, "add_run", ctrl_c)
    code, _, err = run_cli(capsys, "run", config, "--out", out, "--quiet")
    assert code == 130, err
    assert not (out / "models").exists() or not any((out / "models").iterdir())


def _three_class_network(tmp_path):
    import depthlab as dl

    return dl.save(dl.mlp([2, 4, 3], seed=0), tmp_path / "net.npz",
                   meta={"loss": "cross_entropy"})


def test_predict_names_labels_the_network_has_no_class_for(tmp_path, capsys, monkeypatch):
    """Labels 3, 7, 9 given to a network of 3 classes (0..2) are never predicted: the
    accuracy said 0.0000 without a word on why. A warning names them and says they count as
    wrong; the accuracy itself is the direct computation."""
    import depthlab as dl

    one_blas_thread(monkeypatch)
    net = _three_class_network(tmp_path)
    x = np.random.default_rng(0).normal(size=(6, 2))
    y = np.array([0, 1, 2, 7, 9, 7])
    np.savez(tmp_path / "new.npz", x=x, y=y)
    with pytest.warns(UserWarning) as seen:
        code, out, err = run_cli(capsys, "predict", net, tmp_path / "new.npz")
    assert code == 0, err
    classes = dl.load(net).predict(x).argmax(axis=1)
    assert f"accuracy {float((classes == y).mean()):.4f}" in err
    (warning,) = [str(w.message) for w in seen]
    assert "(7, 9)" in warning and "3 of 6" in warning and "0..2" in warning, warning


def test_predict_says_why_an_npz_y_gives_no_accuracy(tmp_path, capsys, monkeypatch):
    """A .npz whose `y` holds text (or has another number of rows than `x`) was silently not
    scored; the CSV's label column of text says so in a warning, and so does the .npz now."""
    one_blas_thread(monkeypatch)
    net = _three_class_network(tmp_path)
    x = np.zeros((4, 2))
    for name, y, said in (("text.npz", np.array(["a", "b", "c", "d"]), "text"),
                          ("short.npz", np.array([0, 1, 2]), "3 rows")):
        np.savez(tmp_path / name, x=x, y=y)
        with pytest.warns(UserWarning) as seen:
            code, out, err = run_cli(capsys, "predict", net, tmp_path / name)
        assert code == 0 and len(out.splitlines()) == 5 and not err.strip(), err
        (warning,) = [str(w.message) for w in seen]
        assert said in warning and "'y'" in warning and "not scored" in warning, warning


def test_a_run_replaced_by_one_that_did_not_finish_keeps_no_network(tmp_path, capsys,
                                                                    monkeypatch):
    """`run --overwrite` whose new run diverged stored it as diverged but left the replaced
    run's network in DIR/models: `predict RUN` answered with the old weights for a record that
    has none."""
    import dataclasses

    import depthlab.experiments as experiments

    one_blas_thread(monkeypatch)
    config = tmp_path / "tiny.toml"
    config.write_text(TINY)
    out = tmp_path / "results"
    code, _, err = run_cli(capsys, "run", config, "--out", out, "--quiet")
    assert code == 0, err
    (rid,) = _runs(out)
    real = experiments.train
    monkeypatch.setattr(experiments, "train", lambda *a, **k: dataclasses.replace(
        real(*a, **k), status="diverged", divergence={"message": "loss = nan"}))
    code, _, err = run_cli(capsys, "run", config, "--out", out, "--quiet", "--overwrite")
    assert code == 3, err
    assert not (out / "models" / f"{rid}.npz").exists()
    code, out_, err = run_cli(capsys, "predict", rid, tmp_path / "tiny.toml", "--dir", out)
    assert code == 2 and "no saved network" in err, err


def test_predict_on_a_builtin_test_split_the_run_left_empty_names_it(tmp_path, capsys,
                                                                     monkeypatch):
    """`predict RUN spirals` of a run trained with data.test_fraction = 0 said only "input
    batch is empty (0 rows)": neither the DATA nor why."""
    import depthlab as dl

    one_blas_thread(monkeypatch)
    net = dl.save(dl.mlp([2, 4, 2], seed=0), tmp_path / "net.npz", meta={
        "loss": "cross_entropy", "data": {"name": "spirals", "n": 100, "seed": 0,
                                          "val_fraction": 0.0, "test_fraction": 0.0}})
    code, out, err = run_cli(capsys, "predict", net, "spirals")
    assert code == 2 and not out, err
    (line,) = err.strip().splitlines()
    assert line.startswith("depthlab: error: DATA 'spirals'") and "test_fraction = 0" in line, line


def test_an_npz_of_scikit_learn_style_names_trains_on_its_own_splits(tmp_path):
    """`X, y` was read but scikit-learn's `X_train, y_train, X_test, y_test` (the names of
    train_test_split's results) was "unrecognised .npz keys"; its X_test is the test split,
    and X_train beside x_train is one line naming both."""
    from depthlab.data import load_dataset

    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 3))
    y = (x[:, 0] > 0).astype(np.int64)
    path = tmp_path / "split.npz"
    np.savez(path, X_train=x[:40], y_train=y[:40], X_test=x[40:], y_test=y[40:])
    ds = load_dataset(path, seed=0, standardize=False, dtype="float64")
    assert ds.sizes["test"] == 10 and ds.sizes["train"] + ds.sizes["val"] == 40
    assert np.array_equal(np.sort(ds.x_test, axis=0), np.sort(x[40:], axis=0))
    np.savez(path, X_train=x, x_train=x, y_train=y)
    with pytest.raises(ValueError, match="'X_train'.*'x_train'|'x_train'.*'X_train'"):
        load_dataset(path)
