"""The command line and the data files, probed as a demanding user for round 7: features of
extreme magnitude (1e200, 1e39, 1e7 + noise) through standardization, ``depthlab run`` and
``depthlab predict`` on the run's own CSV."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from tests.helpers.cli import assert_one_line_error, one_blas_thread, run_cli


def _run(tmp_path, capsys, monkeypatch, csv_text: str, epochs: int = 1) -> tuple[str, str]:
    """``depthlab run`` on a CSV (in this process): (run id, results folder)."""
    one_blas_thread(monkeypatch)
    (tmp_path / "d.csv").write_text(csv_text)
    (tmp_path / "c.toml").write_text(
        '[data]\npath = "d.csv"\n[model]\nsizes = ["auto", 8, "auto"]\n'
        f"[train]\nepochs = {epochs}\nbatch_size = 16\nlr = 0.1\n[probes]\nevery = 0\n")
    out = str(tmp_path / "res")
    code, _, err = run_cli(capsys, "run", tmp_path / "c.toml", "--out", out, "-q")
    assert code == 0, err
    (model,) = (tmp_path / "res" / "models").glob("*.npz")
    return model.stem, out


def _csv(x: np.ndarray, y: np.ndarray) -> str:
    head = ",".join(f"f{j}" for j in range(x.shape[1])) + ",label\n"
    return head + "".join(",".join(repr(float(v)) for v in row) + f",{int(k)}\n"
                          for row, k in zip(x, y))


# --- standardization of features whose squares overflow float64 -------------------------------


def test_standardizer_keeps_a_feature_of_1e200():
    """Was: std of a column of about 1e200 overflowed (its squares are 1e400) to inf, so the
    standardized column was all zeros (the feature silently dropped) with a warning."""
    from depthlab.data import apply_standardizer, fit_standardizer

    rng = np.random.default_rng(0)
    x = np.column_stack([rng.standard_normal(50) * 1e200, rng.standard_normal(50),
                         1e307 * rng.standard_normal(50) + 1e308])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mean, std = fit_standardizer(x)
        z = apply_standardizer(x, mean, std)
    assert np.isfinite(mean).all() and np.isfinite(std).all()
    np.testing.assert_allclose(z.std(axis=0), 1.0, rtol=1e-12)
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-12)
    # columns that do not overflow: exactly as before
    with np.errstate(over="ignore", invalid="ignore"):
        assert mean[1] == x.mean(axis=0)[1] and std[1] == x.std(axis=0)[1]


@pytest.mark.parametrize("scale", [1e-13, 1e-200, 1e200])
def test_standardized_data_do_not_depend_on_the_units_of_a_feature(tmp_path, scale):
    """A feature in tiny units (std about 1e-13: lengths in metres of atoms, probabilities)
    fell under the absolute 'near-constant' threshold std < 1e-12 and was set to 0 for every
    row; at 1e-200 its squares underflowed to std 0; at 1e200 they overflowed to inf. The
    standardized data are now those of the same feature in units of 1."""
    from depthlab.data import load_dataset

    rng = np.random.default_rng(4)
    x = rng.standard_normal((80, 2))
    y = (x[:, 0] > 0).astype(np.int64)
    np.savez(tmp_path / "ref.npz", x=x, y=y)
    np.savez(tmp_path / "scaled.npz", x=x * np.array([scale, 1.0]), y=y)
    ref = load_dataset(tmp_path / "ref.npz", standardize=True, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = load_dataset(tmp_path / "scaled.npz", standardize=True, seed=0)
    np.testing.assert_allclose(got.x_train, ref.x_train, atol=1e-5)
    np.testing.assert_allclose(got.x_test, ref.x_test, atol=1e-5)


def test_a_feature_constant_up_to_rounding_still_maps_to_0():
    """0.1 + 0.2 and 0.3 differ in the last bit: that spread is rounding, not signal."""
    from depthlab.data import fit_standardizer

    x = np.column_stack([np.where(np.arange(10) % 2, 0.1 + 0.2, 0.3), np.arange(10.0)])
    _, std = fit_standardizer(x)
    assert std[0] == 1.0 and std[1] == np.arange(10.0).std()


# --- predict on the run's own CSV: standardized as in training --------------------------------


def test_predict_on_the_training_csv_standardizes_in_float64_as_training_did(
        tmp_path, capsys, monkeypatch):
    """A feature 1e7 + N(0, 1) (a timestamp, a price): training standardizes it in float64
    before the float32 cast; predict cast it to float32 first (spacing 1 at 1e7) and used a
    float32 mean, so the same rows got other classes: accuracy 0.83 on the training CSV of a
    run with train accuracy 1.0 and test accuracy 0.99. Now predict's classes on the test rows
    are the run's own, and its accuracy there is the stored test_acc."""
    import json

    from depthlab.data import load_dataset
    from depthlab.persist import load

    rng = np.random.default_rng(0)
    a = rng.standard_normal(400)
    x = np.column_stack([1e7 + a, rng.standard_normal(400)])
    y = (a > 0).astype(np.int64)
    rid, out = _run(tmp_path, capsys, monkeypatch, _csv(x, y), epochs=5)
    csv = tmp_path / "d.csv"
    # the run's test split: raw float64 rows, and the float32 inputs its network was scored on
    raw = load_dataset(csv, seed=0, dtype="float64", val_fraction=0.1, test_fraction=0.2)
    seen = load_dataset(csv, seed=0, standardize=True, val_fraction=0.1, test_fraction=0.2)
    np.testing.assert_array_equal(raw.y_test, seen.y_test)
    (model,) = (tmp_path / "res" / "models").glob("*.npz")
    expected = np.argmax(load(model).predict(seen.x_test), axis=1)
    np.save(tmp_path / "test_rows.npy", raw.x_test)
    code, text, err = run_cli(capsys, "predict", rid, tmp_path / "test_rows.npy", "--dir", out,
                              "--json")
    assert code == 0, err
    got = np.array(json.loads(text)["classes"])
    assert got.tolist() == expected.tolist()
    code, runs, err = run_cli(capsys, "runs", out, "--json")
    assert code == 0, err
    test_acc = json.loads(runs)[0]["test_acc"]
    assert float((got == raw.y_test).mean()) == pytest.approx(test_acc, abs=1e-12)


def test_predict_accepts_the_training_csv_of_a_run_with_features_beyond_float32(
        tmp_path, capsys, monkeypatch):
    """A feature of about 1e39 trains (standardized in float64, then cast to float32), but
    predict on the same CSV was refused ('value 3.5e+38 ... does not fit in float32') and the
    run saved an infinite float32 mean with an 'overflow encountered in cast' warning."""
    rng = np.random.default_rng(1)
    x = np.column_stack([1e39 * rng.standard_normal(60), rng.standard_normal(60)])
    y = (x[:, 0] > 0).astype(np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        rid, out = _run(tmp_path, capsys, monkeypatch, _csv(x, y))
    code, text, err = run_cli(capsys, "predict", rid, tmp_path / "d.csv", "--dir", out)
    assert code == 0, err
    assert len(text.splitlines()) == 61 and "60 rows, accuracy" in err


# --- a network too large for memory, refused before its data file is read ---------------------


@pytest.mark.parametrize("sizes", ['[2, 100000000000, 2]', '["auto", 100000000000, "auto"]'])
def test_memory_refusal_before_loading_a_file_does_not_claim_0_rows(tmp_path, capsys, sizes):
    """Was: '... with train.batch_size = 32 on 0 rows of data needs about 5.46 TiB' for a CSV
    of 4 rows (its rows are not counted before it is read), and "auto" ends were shown as
    their placeholder 1: 'model.sizes = [1, 100000000000, 1]'."""
    (tmp_path / "d.csv").write_text("a,b,label\n1,2,0\n3,4,1\n5,6,0\n7,8,1\n")
    (tmp_path / "c.toml").write_text(f'[data]\npath = "d.csv"\n[model]\nsizes = {sizes}\n')
    code, _, err = run_cli(capsys, "run", tmp_path / "c.toml", "--out", tmp_path / "res")
    line = assert_one_line_error(code, err, f"model.sizes = {sizes}",
                                 "for the network alone", "d.csv", "nothing was allocated")
    assert "0 rows" not in line
    assert not (tmp_path / "res").exists()


# --- predict reads every CSV name that `depthlab run` reads -----------------------------------


@pytest.mark.parametrize("name", ["d.csv.gz", "D.CSV"])
def test_predict_reads_the_runs_own_gz_or_upper_case_csv(tmp_path, capsys, monkeypatch, name):
    """`depthlab run` trains on data.csv.gz and DATA.CSV; predict on the same file was refused
    ("expected a .npy, .npz or .csv file")."""
    import gzip

    rng = np.random.default_rng(2)
    x = rng.standard_normal((40, 3))
    text = _csv(x, (x[:, 0] > 0).astype(np.int64))
    data = tmp_path / name
    if name.endswith(".gz"):
        data.write_bytes(gzip.compress(text.encode()))
    else:
        data.write_text(text)
    one_blas_thread(monkeypatch)
    (tmp_path / "c.toml").write_text(f'[data]\npath = "{name}"\n[model]\n'
                                     'sizes = ["auto", 4, "auto"]\n[train]\nepochs = 1\n')
    out = tmp_path / "res"
    code, _, err = run_cli(capsys, "run", tmp_path / "c.toml", "--out", out, "-q")
    assert code == 0, err
    (model,) = (out / "models").glob("*.npz")
    code, text_out, err = run_cli(capsys, "predict", model, data)
    assert code == 0, err
    assert len(text_out.splitlines()) == 41 and "40 rows, accuracy" in err  # label column dropped


def test_predict_names_a_corrupt_gz_csv_in_one_line(tmp_path, capsys, saved_net):
    """A .csv.gz whose deflate data are damaged (zlib.error) was an internal error."""
    import gzip

    blob = bytearray(gzip.compress(b"a,b\n" + b"1,2\n" * 200))
    blob[20] ^= 0xFF
    (tmp_path / "bad.csv.gz").write_bytes(bytes(blob))
    code, out, err = run_cli(capsys, "predict", saved_net, tmp_path / "bad.csv.gz")
    assert_one_line_error(code, err, "bad.csv.gz", "could not be read")
    assert out == ""


@pytest.fixture
def saved_net(tmp_path):
    """A network of 2 inputs saved by ``dl.save`` (no training)."""
    import depthlab as dl

    return dl.save(dl.mlp([2, 4, 2], activation="tanh", seed=0), tmp_path / "net.npz")


# --- CSV headers as people write them ---------------------------------------------------------


def test_csv_header_with_spaces_after_the_commas_trains_and_predicts(tmp_path, capsys,
                                                                     monkeypatch):
    """'a, b, label' was refused: "no label column 'label' (columns: ['a', ' b', ' label'])";
    predict must drop the same label column."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((40, 2))
    y = (x[:, 0] > 0).astype(np.int64)
    text = "a, b, label\n" + "".join(f"{a!r}, {b!r}, {k}\n" for (a, b), k in zip(x.tolist(), y))
    rid, out = _run(tmp_path, capsys, monkeypatch, text)
    code, lines, err = run_cli(capsys, "predict", rid, tmp_path / "d.csv", "--dir", out)
    assert code == 0, err
    assert len(lines.splitlines()) == 41 and "40 rows, accuracy" in err


@pytest.mark.parametrize("sep", [";", "\t"])
def test_csv_with_another_separator_is_named_in_one_line(tmp_path, capsys, sep):
    """A semicolon- or tab-separated file read as one column: the hint was "Pass label='COLUMN'
    to name the label column (columns: ['a;b;label'])", which cannot help."""
    (tmp_path / "d.csv").write_text(sep.join("ab") + f"{sep}label\n" +
                                    "".join(f"{i}{sep}{i % 3}{sep}{i % 2}\n" for i in range(8)))
    (tmp_path / "c.toml").write_text('[data]\npath = "d.csv"\n[model]\n'
                                     'sizes = ["auto", 4, "auto"]\n')
    code, _, err = run_cli(capsys, "run", tmp_path / "c.toml", "--out", tmp_path / "res")
    assert_one_line_error(code, err, "d.csv", f"looks separated by {sep!r}", "comma-separated")


# --- doctor --torch --lr: one rule for nan and inf --------------------------------------------


@pytest.mark.parametrize("value", ["inf", "nan"])
def test_torch_doctor_lr_must_be_finite_and_positive(tmp_path, capsys, value):
    """--lr nan was refused by the CLI but --lr inf reached the doctor's own check
    ('doctor: lr must be a positive finite number'): the CLI's rule said 'a number > 0'."""
    pytest.importorskip("torch")
    (tmp_path / "m.py").write_text("import torch.nn as nn\n\ndef make_model():\n"
                                   "    return nn.Sequential(nn.Linear(64, 10))\n")
    code, out, err = run_cli(capsys, "doctor", "--torch", f"{tmp_path / 'm.py'}:make_model",
                             "--data", "digits", "--lr", value, "--out", tmp_path / "res")
    assert_one_line_error(code, err, "--lr", "accepted: a finite number > 0")
    assert out == "" and not (tmp_path / "res").exists()


# --- .npz files that are not zip archives; boolean inputs -------------------------------------


@pytest.mark.parametrize("content", ["npy", "text"])
def test_a_npz_that_is_no_zip_archive_is_named_as_such(tmp_path, capsys, saved_net, content):
    """A .npy renamed .npz was refused with "'numpy.ndarray' object does not support the
    context manager protocol", other bytes with "This file contains pickled (object) data"."""
    data = tmp_path / "d.npz"
    if content == "npy":
        with open(data, "wb") as fh:
            np.save(fh, np.ones((4, 2)))
    else:
        data.write_text("x,y\n1,0\n")
    why = "a single .npy array" if content == "npy" else "not a zip archive"
    (tmp_path / "c.toml").write_text('[data]\npath = "d.npz"\n[model]\n'
                                     'sizes = ["auto", 4, "auto"]\n')
    code, _, err = run_cli(capsys, "run", tmp_path / "c.toml", "--out", tmp_path / "res")
    assert_one_line_error(code, err, "d.npz", "is not a .npz file", why)
    code, _, err = run_cli(capsys, "predict", saved_net, data)
    assert_one_line_error(code, err, "d.npz", "is not a .npz file", why)
    assert "pickled" not in err


def test_predict_reads_boolean_inputs_as_training_does(tmp_path, capsys, saved_net):
    """A training .npz of boolean features trains (0/1); predict refused the same array
    ('expected a 2-D array of real numbers, got shape (3, 2) bool')."""
    x = np.array([[True, False], [False, True], [True, True]])
    np.save(tmp_path / "b.npy", x)
    code, out, err = run_cli(capsys, "predict", saved_net, tmp_path / "b.npy", "--json")
    assert code == 0, err
    import depthlab as dl

    expected = dl.load(saved_net).predict(x.astype(np.float32))
    np.testing.assert_array_equal(np.array(__import__("json").loads(out)["outputs"],
                                           dtype=np.float32), expected)


# --- run --name: the config's rule for a name -------------------------------------------------


@pytest.mark.parametrize("name", ["", "   "])
def test_run_refuses_a_blank_name_as_the_config_does(tmp_path, capsys, name):
    """`name = ""` in a config is refused; `--name ""` was silently ignored (the run got the
    config's name) and `--name "   "` stored a blank name."""
    (tmp_path / "c.toml").write_text('[data]\nname = "digits"\n[model]\n'
                                     'sizes = ["auto", 4, "auto"]\n')
    code, out, err = run_cli(capsys, "run", tmp_path / "c.toml", "--name", name, "--out",
                             tmp_path / "res")
    assert_one_line_error(code, err, "--name", repr(name), "a non-empty name")
    assert out == "" and not (tmp_path / "res").exists()


def test_predict_keeps_the_first_row_of_a_headerless_csv_of_quoted_numbers(tmp_path, capsys,
                                                                           saved_net):
    """'"1","2"' was taken for a header (its cells were split on commas with the quotes
    kept, so not numbers): the first row of inputs was silently dropped."""
    (tmp_path / "q.csv").write_text('"1","2"\n"3","4"\n"5","6"\n')
    code, out, err = run_cli(capsys, "predict", saved_net, tmp_path / "q.csv", "--json")
    assert code == 0, err
    import depthlab as dl

    x = np.array([[1, 2], [3, 4], [5, 6]], dtype=np.float32)
    got = np.array(__import__("json").loads(out)["outputs"], dtype=np.float32)
    assert got.shape == (3, 2)
    np.testing.assert_allclose(got, dl.load(saved_net).predict(x), rtol=1e-6)


# --- data.options.scale of an IDX file --------------------------------------------------------


@pytest.mark.parametrize("value", ["0", "nan", "-1.0", '"x"'])
def test_idx_scale_option_is_checked_in_one_line(tmp_path, capsys, value):
    """scale = 0 was an internal error (ZeroDivisionError), nan 'cannot convert float NaN to
    integer', "x" 'could not convert string to float'."""
    from depthlab.data import write_idx

    rng = np.random.default_rng(5)
    write_idx(tmp_path / "train-images-idx3-ubyte",
              rng.integers(0, 255, (12, 2, 2)).astype(np.uint8))
    write_idx(tmp_path / "train-labels-idx1-ubyte", (np.arange(12) % 2).astype(np.uint8))
    (tmp_path / "c.toml").write_text(
        f'[data]\npath = "train-images-idx3-ubyte"\noptions = {{scale = {value}}}\n'
        '[model]\nsizes = ["auto", 4, "auto"]\n')
    code, _, err = run_cli(capsys, "run", tmp_path / "c.toml", "--out", tmp_path / "res")
    assert_one_line_error(code, err, "train-images-idx3-ubyte", "scale=",
                          "accepted: a finite number > 0")


# --- generator options whose features overflow ------------------------------------------------


@pytest.mark.parametrize("data", ['name = "clusters"\nn = 50\noptions = {separation = 1e308}',
                                  'name = "spirals"\nn = 50\noptions = {noise = 1e300}'])
def test_generator_option_that_overflows_is_one_line_naming_it(tmp_path, capsys, data):
    """separation = 1e308 printed two 'overflow encountered' warnings and then blamed the
    features ('features contain 12800 NaN/inf value(s)'), not the option."""
    option = "separation" if "separation" in data else "noise"
    (tmp_path / "c.toml").write_text(f'[data]\n{data}\n[model]\nsizes = ["auto", 4, "auto"]\n')
    code, _, err = run_cli(capsys, "run", tmp_path / "c.toml", "--out", tmp_path / "res")
    assert_one_line_error(code, err, f"{option}=1e+30", "float32", f"a smaller {option}")


@pytest.mark.parametrize("value", ['""', "3"])
def test_fashion_mnist_path_option_is_checked(tmp_path, capsys, value):
    """path = 3 was "expected str, bytes or os.PathLike object, not int" (no option named);
    path = "" searched the current folder."""
    (tmp_path / "c.toml").write_text(f'[data]\nname = "fashion-mnist"\noptions = {{path = '
                                     f'{value}}}\n[model]\nsizes = ["auto", 4, "auto"]\n')
    code, _, err = run_cli(capsys, "run", tmp_path / "c.toml", "--out", tmp_path / "res")
    assert_one_line_error(code, err, "fashion-mnist", "path=", "a folder holding")


def test_predict_reads_the_runs_own_csv_with_a_boolean_column(tmp_path, capsys, monkeypatch):
    """Training reads True/False columns as 1/0; predict on the same CSV was refused
    ('expected a 2-D array of real numbers, got shape (40, 3) object')."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((40, 2))
    y = (x[:, 0] > 0).astype(np.int64)
    text = "a,b,flag,label\n" + "".join(f"{a!r},{b!r},{bool(i % 3)},{k}\n"
                                         for i, ((a, b), k) in enumerate(zip(x.tolist(), y)))
    rid, out = _run(tmp_path, capsys, monkeypatch, text)
    code, lines, err = run_cli(capsys, "predict", rid, tmp_path / "d.csv", "--dir", out)
    assert code == 0, err
    assert len(lines.splitlines()) == 41 and "40 rows, accuracy" in err
    (tmp_path / "s.csv").write_text("a,b,flag\n1.5,2,x\n")
    code, _, err = run_cli(capsys, "predict", rid, tmp_path / "s.csv", "--dir", out)
    assert_one_line_error(code, err, "s.csv", "non-numeric column(s) ['flag']")


def test_runs_table_keeps_one_line_per_run_for_a_name_with_a_newline(tmp_path, capsys,
                                                                      monkeypatch):
    """A run named "a\\nb" (TOML allows it) split its row of `depthlab runs` in two."""
    one_blas_thread(monkeypatch)
    (tmp_path / "c.toml").write_text('name = "first\\nsecond"\n[data]\nname = "spirals"\n'
                                     'n = 60\n[model]\nsizes = ["auto", 4, "auto"]\n'
                                     '[train]\nepochs = 1\n[probes]\nevery = 0\n')
    code, _, err = run_cli(capsys, "run", tmp_path / "c.toml", "--out", tmp_path / "res", "-q")
    assert code == 0, err
    code, out, err = run_cli(capsys, "runs", tmp_path / "res")
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 3 and "first\\nsecond" in lines[2]


def test_standardizing_a_column_near_float64s_limit_stays_finite(tmp_path):
    """x - mean overflowed for values of +-1.7e308 (mean 5.7e307): the training data held
    -inf, silently."""
    from depthlab.data import load_dataset

    rng = np.random.default_rng(7)
    a = np.where(rng.random(60) < 0.66, 1.7e308, -1.7e308)
    np.savez(tmp_path / "edge.npz", x=np.column_stack([a, rng.standard_normal(60)]),
             y=(a > 0).astype(np.int64))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = load_dataset(tmp_path / "edge.npz", standardize=True, seed=0)
    assert np.isfinite(ds.x_train).all() and np.isfinite(ds.x_test).all()
    np.testing.assert_allclose(ds.x_train.std(axis=0), 1.0, rtol=1e-5)


def test_run_on_a_npy_file_says_how_to_give_labels(tmp_path, capsys):
    """data.path = "x.npy" was 'unsupported file type; accepted: .npz, .csv, IDX file or folder
    (IDX files start with the bytes 00 00 <type> <ndim>)': not why, nor what to do."""
    np.save(tmp_path / "x.npy", np.ones((4, 2)))
    (tmp_path / "c.toml").write_text('[data]\npath = "x.npy"\n[model]\n'
                                     'sizes = ["auto", 4, "auto"]\n')
    code, _, err = run_cli(capsys, "run", tmp_path / "c.toml", "--out", tmp_path / "res")
    assert_one_line_error(code, err, "x.npy", "no labels", "np.savez(path, x=x, y=y)")
