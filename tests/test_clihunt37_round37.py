"""Round 37 (clihunt37): CLI, data files and persistence inputs a new user types."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

import depthlab as dl
from depthlab.data import load_dataset
from depthlab.memory import available_memory


def _idx(path: Path, a: np.ndarray) -> None:
    head = struct.pack(">BBBB", 0, 0, 0x08, a.ndim) + b"".join(struct.pack(">I", s)
                                                             for s in a.shape)
    path.write_bytes(head + a.astype(np.uint8).tobytes())


@pytest.mark.parametrize("name", [".", "/"])
def test_load_of_a_folder_with_no_name_is_named_as_a_folder(name, monkeypatch, tmp_path):
    # was: ValueError "PosixPath('.') has an empty name" (pathlib's words, no file named)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"no saved network at '[./]+' \(a folder\)"):
        dl.load(name)
    with pytest.raises(FileNotFoundError, match=r"\(a folder\)"):
        dl.persist.load_meta(name)


@pytest.mark.parametrize(("text", "expected"), [("8Gi", 8 * 2**30), ("512Mi", 512 * 2**20),
                                                ("2 Ti", 2 * 2**40), ("64ki", 64 * 2**10)])
def test_memory_limit_takes_kubernetes_suffixes(text, expected, monkeypatch):
    # was: DEPTHLAB_MEMORY_LIMIT='8Gi' is not accepted (while '8GiB' and '8G' were)
    monkeypatch.setenv("DEPTHLAB_MEMORY_LIMIT", text)
    assert available_memory() == expected


def test_memory_limit_still_refuses_a_bare_i(monkeypatch):
    from depthlab.fieldcheck import ConfigError

    monkeypatch.setenv("DEPTHLAB_MEMORY_LIMIT", "8i")
    with pytest.raises(ConfigError, match="DEPTHLAB_MEMORY_LIMIT='8i' is not accepted"):
        available_memory()


def test_idx_labels_file_given_as_data_names_its_images_file(tmp_path):
    # was: "cannot derive the labels file name; an IDX images file name must contain
    # 'images'", which did not say the file given is the labels file
    x = np.arange(6 * 4, dtype=np.uint8).reshape(6, 2, 2)
    _idx(tmp_path / "train-images-idx3-ubyte", x)
    _idx(tmp_path / "train-labels-idx1-ubyte", np.array([0, 1, 0, 1, 0, 1]))
    with pytest.raises(ValueError, match=r"is an IDX labels file.*train-images-idx3-ubyte"):
        load_dataset(tmp_path / "train-labels-idx1-ubyte")


@pytest.mark.parametrize("first", [True, False])
def test_csv_integer_past_64_bits_beside_a_decimal_is_a_number(first, tmp_path):
    # README: integers too long for 64 bits (10**23) are read as the float64 numbers they
    # are. With 10**23 on a line before a 1.5, pandas read the column as text: refused as
    # "holds '100000000000000000000000' on line 2, which is not a number"
    rows = ["100000000000000000000000,2,0", "1.5,3,1"]
    rows = rows if first else rows[::-1]
    path = tmp_path / "ids.csv"
    path.write_text("a,b,label\n" + "\n".join(rows * 5) + "\n")
    d = load_dataset(path, dtype="float64", val_fraction=0.0, test_fraction=0.0)
    assert sorted(set(d.x_train[:, 0].tolist())) == [1.5, 1e23]


def test_csv_wide_integer_column_keeps_refusing_text_and_naming_empty_cells(tmp_path):
    path = tmp_path / "ids.csv"
    path.write_text("a,b,label\n" + "100000000000000000000000,2,0\n0x10,3,1\n" * 5)
    with pytest.raises(ValueError, match=r"holds '0x10' on line 3, which is not a number"):
        load_dataset(path)
    path.write_text("a,b,label\n" + "100000000000000000000000,2,0\n1.5,3,1\n,4,0\n" * 5)
    with pytest.raises(ValueError, match=r"has an empty cell on line 4"):
        load_dataset(path)


DEMO = """name = "d"
[data]
name = "clusters"
n = 60
[model]
sizes = ["auto", 4, "auto"]
[train]
epochs = {epochs}
[probes]
every = 0
[[recipes]]
name = "relu"
meaning = "m"
model = {{ activation = "relu" }}
"""


@pytest.mark.parametrize("where", ["option", "config"])
def test_demo_refuses_a_history_that_cannot_fit_before_anything_runs(where, tmp_path, capsys):
    # was: each recipe stored as failed with the memory line, exit 1, a store written
    from depthlab.cli import main

    config = tmp_path / "demo.toml"
    config.write_text(DEMO.format(epochs=1 if where == "option" else 10**12))
    out = tmp_path / "out"
    argv = ["demo", "--config", str(config), "--out", str(out), "--no-report", "-q", "-j", "1"]
    if where == "option":
        argv += ["--epochs", str(10**12)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "recipe 'relu': train.epochs = 1000000000000" in err and "needs about" in err
    assert not out.exists()


@pytest.mark.parametrize("bad", ["", "  "])
def test_store_export_to_an_empty_path_is_refused(bad, tmp_path, monkeypatch):
    # was: Store.export("") wrote runs.csv, ... into the current folder (Path("") is '.'),
    # while Store("") is refused as an empty path
    from depthlab.experiments import Store

    monkeypatch.chdir(tmp_path)
    with Store(tmp_path / "res") as store:
        with pytest.raises(ValueError, match=r"export folder '\s*' is an empty path"):
            store.export(bad)
        with pytest.raises(TypeError, match="export folder None has the wrong type"):
            store.export(None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["res"]


@pytest.mark.parametrize("bad", [None, 3, ["digits"]])
def test_load_dataset_of_a_non_name_is_a_type_error(bad):
    # was: ValueError "unknown data set None; built-ins: ..." (as if a name were misspelt)
    with pytest.raises(TypeError, match="name_or_path .* has the wrong type"):
        load_dataset(bad)


def test_csv_underscore_integer_beside_a_wide_one_is_refused_not_read_as_digits(tmp_path):
    # was: '1_5' read as 15 (pandas parses such a column with Python's int()), silently
    path = tmp_path / "ids.csv"
    path.write_text("a,b,label\n" + "100000000000000000000000,2,0\n1_5,3,1\n" * 5)
    with pytest.raises(ValueError, match=r"holds '1_5' on line 3, which is not a number"):
        load_dataset(path)


def test_a_tilde_the_shell_left_in_an_option_is_the_home_folder(tmp_path, monkeypatch, capsys):
    # bash leaves '~' in `--to=~/exports` (no expansion after '='): export and predict --to
    # wrote into a new folder named '~' in the current folder
    from depthlab.cli import main
    from depthlab.experiments import Store

    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    with Store(work / "res"):
        pass
    assert main(["export", "res", "--to=~/exports"]) == 0
    assert (home / "exports" / "runs.csv").is_file()
    net = dl.mlp([3, 4, 2])
    dl.save(net, home / "net.npz")
    np.save(work / "x.npy", np.ones((2, 3)))
    assert main(["predict", "~/net.npz", "x.npy", "--to=~/pred.csv"]) == 0
    assert (home / "pred.csv").read_text().startswith("class,output_0,output_1")
    with Store(work / "res") as store:
        store.export("~/exports2")
    assert (home / "exports2" / "runs.csv").is_file()
    assert not (work / "~").exists()
    capsys.readouterr()


def test_a_tilde_in_a_config_argument_is_the_home_folder(tmp_path, monkeypatch, capsys):
    # was: "config file '~/exp.toml' not found" (run, sweep, doctor) and "folder '~' does not
    # exist" (init), where every path option reads '~' as the home folder
    from depthlab.cli import main

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert main(["init", "~/exp"]) == 0
    assert (tmp_path / "exp.toml").is_file()
    (tmp_path / "bad.toml").write_text('[data]\nname = "digits"\n[train]\nlr = -1\n')
    for command in ("run", "sweep"):  # read (what it lacks named), not "not found"
        assert main([command, "~/bad.toml", "--out", "~/res"]) == 2
        err = capsys.readouterr().err
        assert "not found" not in err and f"{tmp_path / 'bad.toml'}: missing [model]" in err
    assert not (tmp_path / "~").exists()
