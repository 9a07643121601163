"""Round 39 (clihunt39): the CLI, the store and data loading as a demanding user meets them."""

from __future__ import annotations

import io
import sys
import warnings

import numpy as np
import pytest

TINY = ('[data]\nname = "spirals"\nn = 60\n[model]\nsizes = ["auto", 4, "auto"]\n'
        '[train]\nepochs = 1\n[probes]\nevery = 0\njacobian = false\n')


def test_a_long_run_name_is_cut_in_the_runs_table_and_in_messages(tmp_path, capsys):
    # a run named with 5,000 characters padded every row of `depthlab runs` to 5,000 columns,
    # and `depthlab run` of its config again printed the whole name in its one-line error
    from depthlab.cli import main

    long = "n" * 5000
    (tmp_path / "c.toml").write_text(f'name = "{long}"\n' + TINY)
    out = str(tmp_path / "r")
    assert main(["run", str(tmp_path / "c.toml"), "--out", out, "--quiet"]) == 0
    capsys.readouterr()
    assert main(["runs", out]) == 0
    table = capsys.readouterr().out
    assert max(len(line) for line in table.splitlines()) < 200, table[:300]
    assert "nnn..." in table
    assert main(["run", str(tmp_path / "c.toml"), "--out", out, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "has this config" in err and len(err) < 400, err[:300]
    assert main(["runs", out, "--json"]) == 0  # the JSON keeps the whole name
    assert long in capsys.readouterr().out


def test_clip_counts_terminal_columns():
    from depthlab.cli.common import clip

    assert clip("abc", 5) == "abc"
    assert clip("abcdefgh", 5) == "ab..."
    assert clip("a\nb", 9) == "a\\nb"  # on one line, as the table shows it
    cut = clip("名前" * 10, 9)  # wide characters take two columns each
    assert cut == "名前名..."  # 6 + 3 columns


@pytest.mark.parametrize("text", ["null", "3", '"x"', "[1, 2]", "true", '[{"data": {}}]'])
def test_json_that_is_no_object_on_stdin_is_named_as_json(monkeypatch, text):
    # was a TOML syntax error ("Expected '=' after a key ...") for JSON that is no object
    from depthlab.experiments import ConfigError
    from depthlab.experiments.config import read_toml

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text.encode())))
    with pytest.raises(ConfigError) as err:
        read_toml("-")
    msg = str(err.value)
    assert "JSON config is an object of sections" in msg, msg
    assert "TOML syntax error" not in msg


def test_json_that_is_no_object_in_a_toml_file_stays_a_toml_error(tmp_path):
    from depthlab.experiments import ConfigError
    from depthlab.experiments.config import read_toml

    (tmp_path / "c.toml").write_text("[1, 2]\n")
    with pytest.raises(ConfigError, match="TOML syntax error"):
        read_toml(tmp_path / "c.toml")
    (tmp_path / "c.cfg").write_text("[1, 2]\n")  # a name that is neither: said as JSON
    with pytest.raises(ConfigError, match=r"got \[1, 2\] \(a list\)"):
        read_toml(tmp_path / "c.cfg")


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"n": 2.5}, "n=2.5 has the wrong type; accepted: a whole number"),
    ({"n": "30"}, "n='30' has the wrong type"),
    ({"n": True}, "n=True has the wrong type"),
    ({"n": 30.0}, "(did you mean 30?)"),
    ({"seed": 1.5}, "seed=1.5 has the wrong type; accepted: a whole number"),
    ({"seed": "1"}, "seed='1' has the wrong type"),
])
def test_load_dataset_names_a_count_or_seed_of_the_wrong_type(kwargs, words):
    # n=2.5 was a ValueError "must be a positive integer or None", unlike other wrong types
    from depthlab.data import load_dataset

    with pytest.raises(TypeError) as err:
        load_dataset("digits", **kwargs)
    assert isinstance(err.value, ValueError)  # still caught where ValueError was
    assert words in str(err.value)
    with pytest.raises(ValueError, match=r"n=0 .*accepted: n >= 1"):
        load_dataset("digits", n=0)
    with pytest.raises(ValueError, match=r"seed=-1 .*non-negative integer"):
        load_dataset("digits", seed=-1)
    assert load_dataset("digits", n=np.int64(50), seed=np.int32(1)).x_train.shape[0] > 0


def test_a_fraction_that_rounds_to_no_rows_is_said(tmp_path):
    # a 2-row CSV trained with no validation or test rows (val_fraction 0.1, test_fraction
    # 0.2 of 2 rows round to 0): "val_acc -" in the table, exit 0, not a word on why
    from depthlab.cli import main

    (tmp_path / "two.csv").write_text("a,b,label\n1,2,0\n3,4,1\n")
    (tmp_path / "c.toml").write_text('[data]\npath = "two.csv"\n[model]\ndepth = 1\n'
                                     'width = 4\n[train]\nepochs = 1\n')
    with pytest.warns(UserWarning, match=r"has 2 rows: data.val_fraction = 0.1 and data."
                      r"test_fraction = 0.2 round to no validation or test rows"):
        assert main(["run", str(tmp_path / "c.toml"), "--out", str(tmp_path / "r"),
                     "--quiet"]) == 0
    (tmp_path / "d.toml").write_text(TINY)  # 60 rows: 6 validation, 12 test rows; no warning
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*round to no|.*rounds to no")
        assert main(["run", str(tmp_path / "d.toml"), "--out", str(tmp_path / "r"),
                     "--quiet"]) == 0


def test_an_older_store_exports_the_same_columns(tmp_path):
    # a store written before histograms kept n_neginf/n_posinf/n_nan, exported read-only,
    # wrote a histograms.csv of 7 columns where a newer store's has 10 (Store.histograms
    # already read them as NaN: "unknown")
    import sqlite3

    import pandas as pd

    from depthlab.cli import main
    from depthlab.experiments import Store

    (tmp_path / "c.toml").write_text(TINY.replace("every = 0", "every = 2"))
    out = tmp_path / "r"
    assert main(["run", str(tmp_path / "c.toml"), "--out", str(out), "--quiet"]) == 0
    with Store(out, create=False, readonly=True) as s:
        new_cols = list(s.table("histograms").columns)
    conn = sqlite3.connect(out / "depthlab.db")
    for col in ("n_neginf", "n_posinf", "n_nan"):
        conn.execute(f"ALTER TABLE histograms DROP COLUMN {col}")
    conn.commit()
    conn.close()
    with Store(out, create=False, readonly=True) as s:
        old = s.table("histograms")
        assert list(old.columns) == new_cols
        assert len(old) and old["n_nan"].isna().all()
        s.export(tmp_path / "e")
        s.export(tmp_path / "p", "parquet")
    assert list(pd.read_csv(tmp_path / "e" / "histograms.csv").columns) == new_cols
    assert list(pd.read_parquet(tmp_path / "p" / "histograms.parquet").columns) == new_cols


def test_a_folder_of_one_prefixed_idx_set_loads_with_its_test_split(tmp_path):
    # EMNIST's files (emnist-letters-train-images-idx3-ubyte.gz, ...-test-...) in a folder:
    # "no IDX training images in folder", the folder full of them
    import gzip

    from depthlab.data import load_dataset
    from depthlab.data.idx import write_idx

    rng = np.random.default_rng(0)

    def idx_set(folder, prefix, gz):
        folder.mkdir(exist_ok=True)
        for split, n in (("train", 40), ("test", 12)):
            for kind, a in (("images-idx3", rng.integers(0, 256, (n, 3, 3), dtype=np.uint8)),
                            ("labels-idx1", (np.arange(n) % 3).astype(np.uint8))):
                f = folder / f"{prefix}{split}-{kind}-ubyte"
                write_idx(f, a)
                if gz:
                    f.with_name(f.name + ".gz").write_bytes(gzip.compress(f.read_bytes()))
                    f.unlink()

    idx_set(tmp_path / "one", "emnist-letters-", gz=True)
    d = load_dataset(tmp_path / "one")
    assert d.info["test_split"] == "official" and d.x_test.shape == (12, 9)
    assert d.x_train.shape[0] + d.x_val.shape[0] == 40
    idx_set(tmp_path / "one", "emnist-digits-", gz=False)
    with pytest.raises(ValueError, match=r"holds the IDX training images of 2 sets "
                       r"\('emnist-digits-train-images-idx3-ubyte', 'emnist-letters-train"):
        load_dataset(tmp_path / "one")


def test_a_dask_worker_lost_during_the_version_check_is_not_said_to_lack_depthlab():
    # a worker killed while the sweep checked the workers' versions answered CommClosedError
    # ("Stream is closed"): the sweep stopped, exit 2, saying "cannot run depthlab's points
    # (...); install depthlab 0.1.0 there"
    pytest.importorskip("distributed")
    from distributed.comm.core import CommClosedError

    from depthlab.experiments.executors.dask import DaskExecutor, environment

    ex = DaskExecutor.__new__(DaskExecutor)
    ex.address = "tcp://127.0.0.1:8786"
    ex.no_workers_timeout = None
    here = environment()
    ex._environments = lambda: ({"tcp://10.0.0.1:1": CommClosedError("Stream is closed"),
                                 "tcp://10.0.0.2:1": dict(here)}, [])
    with pytest.warns(UserWarning, match=r"tcp://10.0.0.1:1 of tcp://127.0.0.1:8786 closed "
                      r"the connection during the version check"):
        ex._check_workers()  # no ClusterError: the other worker computes as this machine
    ex._environments = lambda: ({"tcp://10.0.0.1:1": ModuleNotFoundError("depthlab")}, [])
    with pytest.raises(Exception, match="cannot run depthlab's points"):
        ex._check_workers()  # a worker without depthlab is still refused


@pytest.mark.parametrize(("arrays", "hint"), [
    (("X", "Y"), "(rename 'Y' to 'y'"),
    (("x", "Y"), "(rename 'Y' to 'y'"),
    (("X_train", "Y_train", "X_test", "Y_test"), "(rename 'Y_test' to 'y_test', 'Y_train' to "
                                                 "'y_train'"),
])
def test_an_npz_with_a_capital_y_says_to_rename_it(tmp_path, arrays, hint):
    # np.savez(path, X=X, Y=Y) was "unrecognised .npz keys ['X', 'Y']; accepted layouts: ..."
    # with no word that only the capital Y is wrong
    from depthlab.data import load_dataset

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", **{k: rng.normal(size=(20, 3)) if k.lower().startswith("x")
                                    else np.arange(20) % 2 for k in arrays})
    with pytest.raises(ValueError) as err:
        load_dataset(tmp_path / "d.npz")
    assert hint in str(err.value), str(err.value)
