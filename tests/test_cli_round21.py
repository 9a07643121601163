"""Round 21, the command line and the experiment machinery."""

from __future__ import annotations

import errno

import numpy as np
import pandas as pd
import pytest

from depthlab.cli import main


def _csv_config(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3))
    y = (x[:, 0] + x[:, 1] > 0).astype(int)
    pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "label": y}).to_csv(
        tmp_path / "d.csv", index=False)
    config = tmp_path / "p.toml"
    config.write_text('[data]\npath = "d.csv"\n[model]\nsizes = ["auto", 8, "auto"]\n'
                      '[train]\nepochs = 2\n[probes]\nevery = 0\n')
    return config


def test_a_full_disk_while_saving_the_network_says_the_run_is_stored(tmp_path, capsys,
                                                                     monkeypatch):
    # a disk that filled up after the run was stored, while its network was saved, said
    # "cannot write 'r/models/ID.npz': no space left on device (the previous version is kept)":
    # there was no previous version, and nothing said that the run itself was stored (a rerun
    # of the config is refused as "already stored" without --overwrite)
    import depthlab.atomic as atomic

    config = _csv_config(tmp_path)
    out = tmp_path / "r"

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", no_space)
    assert main(["run", str(config), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "previous version" not in err
    assert "no space left on device" in err and "models" in err
    assert "is stored in" in err and "--overwrite" in err
    assert not list((out / "models").glob("*"))  # no temporary left
    monkeypatch.undo()
    assert main(["runs", str(out), "--json"]) == 0
    (row,) = __import__("json").loads(capsys.readouterr().out)
    assert row["id"] in err and row["status"] == "finished"
    # what the message says to do works: the network is saved
    assert main(["run", str(config), "--out", str(out), "--quiet", "--overwrite"]) == 0
    assert (out / "models" / f"{row['id']}.npz").is_file()


def test_atomic_write_error_says_previous_version_kept_only_when_there_was_one(tmp_path):
    from depthlab.atomic import AtomicWriteError, atomic_write

    def full(fh):
        raise OSError(errno.ENOSPC, "No space left on device")

    target = tmp_path / "new.npz"
    with pytest.raises(AtomicWriteError) as info:
        atomic_write(target, full)
    assert str(info.value) == f"cannot write {str(target)!r}: no space left on device"
    assert not target.exists() and not list(tmp_path.iterdir())


def _npz_run(tmp_path, y):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(len(y), 3))
    np.savez(tmp_path / "d.npz", x=x, y=y, extra=np.zeros(4))
    (tmp_path / "n.toml").write_text('[data]\npath = "d.npz"\n[model]\nsizes = ["auto", 8, '
                                     '"auto"]\n[train]\nepochs = 2\n[probes]\nevery = 0\n')
    out = tmp_path / "r"
    assert main(["run", str(tmp_path / "n.toml"), "--out", str(out), "--quiet"]) == 0
    (net,) = (out / "models").glob("*.npz")
    return net, x


def test_predict_on_the_runs_own_npz_prints_the_accuracy(tmp_path, capsys):
    # a classification run given its own .npz (x and y) printed the classes and no accuracy at
    # all (its CSV gets one on stderr, a regression run's .npz its mean squared error)
    y = (np.arange(60) % 3).astype(np.int64)
    net, x = _npz_run(tmp_path, y)
    capsys.readouterr()
    assert main(["predict", str(net), str(tmp_path / "d.npz")]) == 0
    got = capsys.readouterr()
    classes = pd.read_csv(__import__("io").StringIO(got.out))["class"].to_numpy()
    expected = float((classes == y).mean())
    assert got.err.strip() == f"{tmp_path / 'd.npz'}: 60 rows, accuracy {expected:.4f}"
    # one-hot rows are the same classes; a float y with a NaN leaves that row out
    np.savez(tmp_path / "oh.npz", x=x, y=np.eye(3)[y])
    assert main(["predict", str(net), str(tmp_path / "oh.npz")]) == 0
    assert capsys.readouterr().err.strip().endswith(f"60 rows, accuracy {expected:.4f}")
    yf = y.astype(np.float64)
    yf[4] = np.nan
    np.savez(tmp_path / "nan.npz", x=x, y=yf)
    assert main(["predict", str(net), str(tmp_path / "nan.npz")]) == 0
    keep = np.arange(60) != 4
    part = float((classes[keep] == y[keep]).mean())
    assert capsys.readouterr().err.strip().endswith(
        f"59 of 60 rows labelled, accuracy {part:.4f}")
    # a y that holds no classes (text, another length): outputs, no accuracy, no error
    np.savez(tmp_path / "txt.npz", x=x, y=np.array(["a"] * 60))
    assert main(["predict", str(net), str(tmp_path / "txt.npz")]) == 0
    assert "accuracy" not in capsys.readouterr().err
    np.savez(tmp_path / "short.npz", x=x, y=y[:10])
    assert main(["predict", str(net), str(tmp_path / "short.npz")]) == 0
    assert "accuracy" not in capsys.readouterr().err


@pytest.mark.parametrize("encoding, name", [("utf-16", "UTF-16"), ("utf-16-le", "UTF-16"),
                                            ("utf-16-be", "UTF-16"), ("utf-32", "UTF-32")])
@pytest.mark.parametrize("suffix", [".toml", ".json"])
def test_a_config_saved_as_utf16_is_named_as_such(tmp_path, capsys, encoding, name, suffix):
    # a config written by PowerShell 5's Out-File (UTF-16 with a byte-order mark) said "not a
    # UTF-8 text file (invalid start byte)", one without a byte-order mark "TOML syntax error:
    # Invalid initial character for a key part (at line 1, column 2)"; a CSV says its encoding
    _csv_config(tmp_path)
    text = ('[data]\r\npath = "d.csv"\r\n[model]\r\nsizes = ["auto", 8, "auto"]\r\n'
            if suffix == ".toml" else '{"data": {"path": "d.csv"}, "model": {"sizes": '
            '["auto", 8, "auto"]}}')
    config = tmp_path / f"w{suffix}"
    config.write_bytes(text.encode(encoding))
    out = tmp_path / "r"
    assert main(["run", str(config), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"depthlab: error: {config}: the file is {name} text; accepted: UTF-8 text "
                   "(re-save the file as UTF-8)")
    assert not out.exists()
    # the same text in UTF-8 runs
    config.write_text(text, encoding="utf-8")
    assert main(["run", str(config), "--out", str(out), "--quiet"]) == 0


@pytest.mark.parametrize("labels, said", [("0", "all 60 labels are 0 (a single class)"),
                                          ("-1", "labels must be non-negative")])
@pytest.mark.parametrize("loss", ["cross_entropy", "binary_cross_entropy"])
def test_class_labels_refused_for_a_classification_loss_suggest_no_regression(
        tmp_path, capsys, labels, said, loss):
    # a CSV whose labels are all 0 (or negative) trained with cross_entropy said "...; accepted:
    # data with at least 2 classes; data.targets = "classes" reads the labels as classes:
    # "values" (or "auto") reads them as real regression targets" - a remedy that cross_entropy
    # refuses in turn ('data.targets = "values" ... needs train.loss = "mse" or "huber"')
    rng = np.random.default_rng(0)
    rows = "\n".join(f"{a:.6f},{b:.6f},{labels}" for a, b in rng.normal(size=(60, 2)))
    (tmp_path / "d.csv").write_text("a,b,label\n" + rows + "\n")
    config = tmp_path / "p.toml"
    config.write_text(f'[data]\npath = "d.csv"\n[model]\nsizes = ["auto", 8, "auto"]\n'
                      f'[train]\nloss = "{loss}"\nepochs = 1\n')
    assert main(["run", str(config), "--out", str(tmp_path / "r"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and said in err, err
    assert "regression" not in err and "data.targets" not in err, err
    assert not (tmp_path / "r").exists()


def test_an_empty_feature_cell_is_named_as_empty_not_as_nan(tmp_path, capsys):
    # an empty cell among the features said "feature column 'a' holds nan on line 9": the file
    # holds no "nan" to look for (predict says "line 9 has an empty cell in column 'a'")
    config = _csv_config(tmp_path)
    lines = (tmp_path / "d.csv").read_text().splitlines()
    lines[8] = "," + lines[8].split(",", 1)[1]
    (tmp_path / "d.csv").write_text("\n".join(lines) + "\n")
    assert main(["run", str(config), "--out", str(tmp_path / "r"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "feature column 'a' has an empty cell on line 9 (1 such value(s))" in err, err
    assert "holds nan" not in err
    # a cell holding a text pandas reads as missing is named by its text, as before
    lines[8] = "n/a," + lines[8].split(",", 1)[1]
    (tmp_path / "d.csv").write_text("\n".join(lines) + "\n")
    assert main(["run", str(config), "--out", str(tmp_path / "r"), "--quiet"]) == 2
    assert "column 'a' holds 'n/a' on line 9 (read as a missing value)" in capsys.readouterr().err
