"""Round 27 (nphunt27): NumPy engine and command line regressions."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import depthlab as dl
from depthlab.data import fit_standardizer


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3)) + np.array([0.0, 2.0, -1.0])
    y = (x[:, 0] > 0).astype(int)
    return x, y


def _fit(x, y, dtype):
    net = dl.mlp([3, 8, 2], seed=0, dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warning either
        hist = dl.fit(net, x, y, standardize=True, epochs=3, batch_size=10, seed=0,
                      optimizer="adam", lr=0.01)
    return hist


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("scale", [1e-170, 1e-300, 1e160, 1e300])
def test_fit_standardize_keeps_features_whose_squares_leave_float64(scale, dtype):
    # dl.fit(standardize=True) computed the std from squares in float64: features of 1e160
    # overflowed (std inf: every feature became 0), of 1e-170 underflowed (std 0 -> 1: the
    # network saw the unscaled 1e-170 inputs, training at chance) without a word, while
    # load_dataset(standardize=True) (fit_standardizer) scaled them. The standardized inputs do
    # not depend on the features' unit.
    x, y = _data()
    ref = _fit(x, y, dtype)
    hist = _fit(x * scale, y, dtype)
    tol = 1e-9 if dtype == "float64" else 1e-4
    np.testing.assert_allclose(hist.step_loss, ref.step_loss, rtol=tol)
    mean, std = fit_standardizer(x * scale)
    np.testing.assert_allclose(hist.standardizer.mean64, mean, rtol=1e-12)
    np.testing.assert_allclose(hist.standardizer.std64, std, rtol=1e-12)


# -- sweeps: the base's value of a swept key -------------------------------------------------

_SWEEP_BASE = """
[data]
name = "clusters"
n = 80
[model]
sizes = ["auto", 8, "auto"]
{model}
[train]
epochs = 1
{train}
[probes]
every = 0
[sweep]
{sweep}
"""


def _sweep_file(tmp_path, model="", train="", sweep=""):
    path = tmp_path / "grid.toml"
    path.write_text(_SWEEP_BASE.format(model=model, train=train, sweep=sweep))
    return path


def test_a_sweep_runs_when_only_the_base_value_of_a_swept_key_is_refused(tmp_path, capsys):
    # batchnorm with the base's batch_size = 1 is refused, but every point sets batch_size:
    # the grid was refused naming train.batch_size = 1, a value no point trains with
    from depthlab.experiments import Store
    from tests.helpers.cli import run_cli

    path = _sweep_file(tmp_path, model="batchnorm = true", train="batch_size = 1",
                       sweep='"train.batch_size" = [8, 16]')
    code, _, err = run_cli(capsys, "sweep", path, "--out", tmp_path / "out")
    assert code == 0, err
    runs = Store(tmp_path / "out").runs()
    assert sorted(runs.status) == ["finished", "finished"]
    assert sorted(c["train"]["batch_size"] for c in runs.config) == [8, 16]


def test_a_sweep_of_the_monitor_over_data_without_validation_rows(tmp_path):
    # readmeuser26's case: data.val_fraction = 0 with patience refuses the base's default
    # monitor val_loss; the grid sweeps the monitor over training metrics only
    from depthlab.experiments import read_toml
    from depthlab.experiments.grid import expand

    path = _sweep_file(tmp_path, train="patience = 2",
                       sweep='"train.monitor" = ["train_loss", "train_acc"]')
    raw = read_toml(path)
    raw["data"]["val_fraction"] = 0.0
    points = expand(raw, base_dir=tmp_path)
    assert [p.config["train"]["monitor"] for p in points] == ["train_loss", "train_acc"]
    assert all(p.error is None for p in points)


def test_a_refused_base_value_of_a_key_the_grid_does_not_sweep_still_refuses(tmp_path, capsys):
    from tests.helpers.cli import assert_one_line_error, run_cli

    path = _sweep_file(tmp_path, model="batchnorm = true", train="batch_size = 1",
                       sweep='"train.seed" = [0, 1]')
    code, _, err = run_cli(capsys, "sweep", path, "--out", tmp_path / "out")
    assert_one_line_error(code, err, "train.batch_size = 1")
    assert not (tmp_path / "out").exists()


def test_fit_standardize_where_x_minus_mean_overflows_trains_as_load_dataset_scales():
    # a column whose x - mean overflows float64 (1.7e308 beside a mean of -1.4e308): the data
    # loader's apply_standardizer computes it as x/std - mean/std, dl.fit refused the finite x
    # ("standardized x contains NaN or infinity") after an overflow RuntimeWarning, and
    # History.standardizer.forward gave inf
    from depthlab.data import apply_standardizer

    x = np.full((20, 2), -1.5e308)
    x[0, 0] = 1.7e308
    x[:, 1] = np.arange(20.0)
    y = np.arange(20) % 2
    z = apply_standardizer(x, *fit_standardizer(x))
    assert np.isfinite(z).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        hist = dl.fit(dl.mlp([2, 4, 2], seed=0, dtype="float64"), x, y, standardize=True,
                      epochs=1, batch_size=5, seed=0)
        ref = dl.fit(dl.mlp([2, 4, 2], seed=0, dtype="float64"), z, y, epochs=1,
                     batch_size=5, seed=0)
        np.testing.assert_allclose(hist.step_loss, ref.step_loss, rtol=1e-12)
        np.testing.assert_allclose(hist.standardizer.forward(x), z, rtol=1e-12)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_predict_on_the_runs_own_csv_where_x_minus_mean_overflows(tmp_path, capsys, dtype):
    # the run standardized a column of -1.5e308 with one 1.7e308 (apply_standardizer: x/std -
    # mean/std where x - mean overflows) and trained; `depthlab predict RUN its.csv` computed
    # (x - mean) / std: 'overflow encountered in subtract', exit 2 ('contains NaN or infinity')
    import json

    from depthlab.data import apply_standardizer
    from depthlab.persist import load_meta
    from tests.helpers.cli import run_cli

    rng = np.random.default_rng(0)
    x = np.full((40, 3), -1.5e308)
    x[0, 0] = 1.7e308
    x[:, 1:] = rng.normal(size=(40, 2))
    y = (x[:, 1] > 0).astype(int)
    csv = tmp_path / "huge.csv"
    csv.write_text("a,b,c,label\n" + "".join(
        ",".join(repr(float(v)) for v in row) + f",{lab}\n" for row, lab in zip(x, y)))
    cfg = tmp_path / "run.toml"
    cfg.write_text(f'[data]\npath = "{csv.as_posix()}"\n[model]\nsizes = ["auto", 8, "auto"]\n'
                   f'dtype = "{dtype}"\n[train]\nepochs = 1\n[probes]\nevery = 0\n')
    code, _, err = run_cli(capsys, "run", cfg, "--out", tmp_path / "out")
    assert code == 0, err
    (model,) = (tmp_path / "out" / "models").glob("*.npz")
    code, out, err = run_cli(capsys, "predict", model, csv, "--json")
    assert code == 0, err
    got = np.asarray(json.loads(out)["outputs"])
    meta = load_meta(model)  # the run's training statistics (float64)
    z = apply_standardizer(x, np.asarray(meta["input_mean"]), np.asarray(meta["input_std"]))
    assert np.isfinite(z).all()
    net = dl.load(model)
    np.testing.assert_array_equal(got, net.predict(z.astype(dtype)))  # bit for bit


def test_one_hot_label_rows_declare_their_class_count(tmp_path):
    # a (n, 3) one-hot y whose rows use classes 0 and 1 only was read as max label + 1 = 2
    # classes: the network had no output for the third class the data's columns name
    from depthlab.data import load_dataset

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3))
    y = (x[:, 0] > 0).astype(int)
    path = tmp_path / "onehot3.npz"
    np.savez(path, x=x, y=np.eye(3)[y])
    ds = load_dataset(path)
    assert ds.n_classes == 3
    np.testing.assert_array_equal(np.unique(ds.y_train), [0, 1])
    # integer labels keep max label + 1; a two-column one-hot is two classes
    np.savez(path, x=x, y=y)
    assert load_dataset(path).n_classes == 2
    np.savez(path, x=x, y=np.eye(2)[y])
    assert load_dataset(path).n_classes == 2
