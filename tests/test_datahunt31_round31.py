"""Round 31, data hunt: user data files read the same way by training and by
``depthlab predict``."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
from helpers.cli import one_blas_thread, run_cli


def _numbered_header_run(tmp_path, capsys, monkeypatch):
    """A run trained on a CSV written by ``pd.DataFrame(array).to_csv(index=False)`` (header
    row ``0,1,2,3``, the label column ``3``); (run id, results folder, features)."""
    one_blas_thread(monkeypatch)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3))
    y = (x[:, 0] > 0).astype(int)
    pd.DataFrame(np.c_[x, y]).to_csv(tmp_path / "train.csv", index=False)
    (tmp_path / "run.toml").write_text(
        '[data]\npath = "train.csv"\nlabel = 3\n[model]\nsizes = ["auto", 4, "auto"]\n'
        "[train]\nepochs = 1\nbatch_size = 20\n[probes]\nevery = 0\n")
    out = str(tmp_path / "out")
    code, printed, err = run_cli(capsys, "run", tmp_path / "run.toml", "--out", out,
                                 "--quiet", "--json")
    assert code == 0, err
    return json.loads(printed)["id"], out, x


def test_predict_reads_a_numbered_header_row_as_training_does(tmp_path, capsys, monkeypatch):
    # training reads the header `0,1,2` (pandas' names of an array's columns) as a header;
    # predict read it as a row of data: 5 rows gave 6 predictions, the first of the inputs
    # (0, 1, 2), and the training CSV itself was refused ("4 features per row")
    run_id, out, x = _numbered_header_run(tmp_path, capsys, monkeypatch)
    pd.DataFrame(x[:5]).to_csv(tmp_path / "new.csv", index=False)
    code, printed, err = run_cli(capsys, "predict", run_id, tmp_path / "new.csv", "--dir", out,
                                 "--json")
    assert code == 0, err
    outputs = np.asarray(json.loads(printed)["outputs"])
    assert outputs.shape == (5, 2)
    np.savez(tmp_path / "new.npz", x=x[:5])
    code, printed, err = run_cli(capsys, "predict", run_id, tmp_path / "new.npz", "--dir", out,
                                 "--json")
    assert code == 0, err
    np.testing.assert_allclose(outputs, json.loads(printed)["outputs"], rtol=1e-6)
    code, printed, err = run_cli(capsys, "predict", run_id, tmp_path / "train.csv", "--dir",
                                 out, "--json")
    assert code == 0, err
    assert len(json.loads(printed)["outputs"]) == 60


def test_a_first_row_one_two_three_is_data_in_training_as_in_predict(tmp_path):
    # training took a first row `1,2,3` for column names (one row of 4 lost without a word)
    # where predict reads it as data; a row of numbers is data unless it is pandas' 0, 1, 2
    from depthlab.data import load_dataset

    text = "1,2,3\n4,5,0\n6,7,1\n8,9,2\n"
    (tmp_path / "t.csv").write_text(text)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        ds = load_dataset(tmp_path / "t.csv", label=2, val_fraction=0, test_fraction=0,
                          dtype="float64")
    assert any("is read as data" in str(w.message) for w in seen)
    table = np.loadtxt(tmp_path / "t.csv", delimiter=",")
    order = np.argsort(ds.x_train[:, 0])
    np.testing.assert_array_equal(ds.x_train[order], table[:, :2])
    np.testing.assert_array_equal(ds.y_train[order], table[:, 2])
    assert ds.n_classes == 4


def test_reading_a_gzip_idx_file_closes_it(tmp_path):
    # the .gz stream was opened on a file object that closing it left open: one file
    # descriptor leaked per IDX file read (4 per Fashion-MNIST load; ResourceWarning)
    import gc

    from depthlab.data.idx import idx_header, read_idx, write_idx

    images = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", images)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        got = read_idx(tmp_path / "train-images-idx3-ubyte.gz")
        assert idx_header(tmp_path / "train-images-idx3-ubyte.gz") == ((2, 3, 3),
                                                                       np.dtype(">u1"))
        gc.collect()
    np.testing.assert_array_equal(got, images)
    assert not [w for w in seen if issubclass(w.category, ResourceWarning)], \
        [str(w.message) for w in seen]


def test_predict_reads_the_training_csvs_numeric_column_names_as_its_header(tmp_path, capsys,
                                                                          monkeypatch):
    # a run trained on columns named by numbers (wavelengths "400,410,420" beside "label")
    # given new rows under the same header: the header was predicted as a row of inputs
    # (the first output 536 on inputs 400, 410, 420; one row too many)
    one_blas_thread(monkeypatch)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3))
    frame = pd.DataFrame(x, columns=["400", "410", "420"])
    frame["label"] = (x[:, 0] > 0).astype(int)
    frame.to_csv(tmp_path / "train.csv", index=False)
    (tmp_path / "run.toml").write_text(
        '[data]\npath = "train.csv"\n[model]\nsizes = ["auto", 4, "auto"]\n'
        "[train]\nepochs = 1\nbatch_size = 20\n[probes]\nevery = 0\n")
    out = str(tmp_path / "out")
    code, printed, err = run_cli(capsys, "run", tmp_path / "run.toml", "--out", out,
                                 "--quiet", "--json")
    assert code == 0, err
    run_id = json.loads(printed)["id"]
    frame.iloc[:4, [2, 0, 1]].to_csv(tmp_path / "new.csv", index=False)  # another order too
    np.savez(tmp_path / "new.npz", x=x[:4])
    got = []
    for name in ("new.csv", "new.npz"):
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            code, printed, err = run_cli(capsys, "predict", run_id, tmp_path / name, "--dir",
                                         out, "--json")
        assert code == 0, err
        got.append(np.asarray(json.loads(printed)["outputs"]))
        assert any("in another order" in str(w.message) for w in seen) == (name == "new.csv")
    assert got[0].shape == (4, 2)
    np.testing.assert_allclose(got[0], got[1], rtol=1e-6)


def test_standardizer_of_integer_features_is_exact_float64():
    # depthlab.data.fit_standardizer on uint8 pixels returned its mean and std cast back to
    # uint8 (mean 2.33 -> 2, std 1.25 -> 1) and apply_standardizer raised NumPy's
    # "Cannot cast ufunc 'divide' output from float64 to uint8"
    from depthlab.data import apply_standardizer, fit_standardizer

    x = np.array([[1, 10, 7], [2, 30, 7], [4, 50, 7]], dtype=np.uint8)
    for given in (x, x.astype(np.int64), x.astype(bool)):
        mean, std = fit_standardizer(given)
        direct = given.astype(np.float64)
        spread = np.where(direct.std(axis=0) > 0, direct.std(axis=0), 1.0)
        assert mean.dtype == std.dtype == np.float64
        np.testing.assert_allclose(mean, direct.mean(axis=0), rtol=1e-15)
        np.testing.assert_allclose(std, spread, rtol=1e-15)
        z = apply_standardizer(given, mean, std)
        assert z.dtype == np.float64
        np.testing.assert_allclose(z, (direct - direct.mean(axis=0)) / spread, rtol=1e-12,
                                   atol=1e-15)


def test_a_data_file_replaced_keeping_size_and_time_gets_a_new_fingerprint(tmp_path):
    # the fingerprint cache was keyed by (path, size, mtime): a file replaced by one of the
    # same size with its time kept (cp -p, rsync -a, tar x) kept the old digest in a running
    # process (the playground, a sweep): the new data's runs took the old data's ids
    import hashlib
    import os

    from depthlab.data.fingerprint import digest

    data = tmp_path / "d.csv"
    data.write_text("a,label\n1,0\n2,1\n")
    first = digest(data)
    stamp = data.stat().st_mtime_ns
    other = tmp_path / "other.csv"
    other.write_text("a,label\n3,0\n4,1\n")
    os.utime(other, ns=(stamp, stamp))
    os.replace(other, data)  # as cp -p / rsync write a new file into place
    assert data.stat().st_mtime_ns == stamp
    assert digest(data) == hashlib.sha256(data.read_bytes()).hexdigest()[:16] != first


def test_predict_scales_integer_pixels_as_training_scaled_its_idx_file(tmp_path, capsys,
                                                                       monkeypatch):
    # a run trained on IDX uint8 images (read as pixels / 255) given the same uint8 images in
    # a .npz predicted them unscaled: outputs of about 1000 instead of about 1, other classes
    from depthlab.data.idx import write_idx

    one_blas_thread(monkeypatch)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(80, 3, 3), dtype=np.uint8)
    (tmp_path / "d").mkdir()
    write_idx(tmp_path / "d" / "train-images-idx3-ubyte.gz", images)
    write_idx(tmp_path / "d" / "train-labels-idx1-ubyte.gz",
              (images[:, 0, 0] > 127).astype(np.uint8))
    (tmp_path / "run.toml").write_text(
        '[data]\npath = "d"\n[model]\nsizes = ["auto", 4, "auto"]\n'
        "[train]\nepochs = 1\nbatch_size = 20\n[probes]\nevery = 0\n")
    out = str(tmp_path / "out")
    code, printed, err = run_cli(capsys, "run", tmp_path / "run.toml", "--out", out,
                                 "--quiet", "--json")
    assert code == 0, err
    run_id = json.loads(printed)["id"]
    np.savez(tmp_path / "raw.npz", x=images[:6])
    np.savez(tmp_path / "scaled.npz", x=images[:6].astype(np.float32) / np.float32(255))
    got = []
    for name in ("raw.npz", "scaled.npz"):
        code, printed, err = run_cli(capsys, "predict", run_id, tmp_path / name, "--dir", out,
                                     "--json")
        assert code == 0, err
        got.append(np.asarray(json.loads(printed)["outputs"]))
    np.testing.assert_allclose(got[0], got[1], rtol=1e-6, atol=1e-7)
