"""Adversarial tests of the results store, sweeps, export and report (round 16): stores left by
killed writers, read-only folders, grids with repeated values. Each test failed before the fix
it names."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile

import pytest
from helpers.cli import run_cli

from depthlab.experiments import Store, StoreError

KILLED_WRITER = """
import os, signal, sys
from depthlab.experiments import RunRecord, Store
folder = sys.argv[1]
with Store(folder) as s:  # closed: checkpointed into depthlab.db
    for i in range(3):
        s.add_run(RunRecord(f"old{i}", name=f"old {i}"))
s = Store(folder)  # then killed before any checkpoint: these runs are in the WAL only
for i in range(2):
    s.add_run(RunRecord(f"new{i}", name=f"new {i}"))
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.fixture
def tmpfs(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _copies() -> set[str]:
    return {n for n in os.listdir(tempfile.gettempdir()) if n.startswith("depthlab-store-")}


def test_runs_in_the_wal_of_a_killed_writer_are_read_on_a_read_only_folder(tmpfs, capsys,
                                                                           monkeypatch):
    # a writer killed before its checkpoint leaves its last runs in depthlab.db-wal; on a
    # read-only folder without depthlab.db-shm, SQLite cannot read that WAL and the fallback
    # (immutable=1) read depthlab.db alone: `depthlab runs` listed 3 of the 5 runs, silently,
    # and a store whose runs were all in the WAL was "empty ... remove the file"
    private = tmpfs.parent / "tmp"  # this test's temporary folder: the copies of another
    private.mkdir()  # process (a pytest-xdist worker) are not counted as this one's
    monkeypatch.setattr(tempfile, "tempdir", str(private))
    res = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(tmpfs)], capture_output=True)
    assert res.returncode == -9, res.stderr
    (tmpfs / "depthlab.db-shm").unlink()  # e.g. copied without it
    assert (tmpfs / "depthlab.db-wal").stat().st_size > 32
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    before = _copies()
    with Store(tmpfs, readonly=True) as s:
        assert sorted(s.statuses()) == ["new0", "new1", "old0", "old1", "old2"]
        assert s.run("new1")["name"] == "new 1"
    assert _copies() == before  # the temporary copy is removed on close
    code, out, err = run_cli(capsys, "runs", tmpfs, "--json")
    assert code == 0, err
    assert out.count('"id"') == 5
    code, out, err = run_cli(capsys, "export", tmpfs, "--to", tmpfs.parent / "ex")
    assert code == 0, err
    assert (tmpfs.parent / "ex" / "runs.csv").read_text().count("new ") == 2
    assert _copies() == before
    assert sorted(os.listdir(tmpfs)) == ["depthlab.db", "depthlab.db-wal"]  # untouched


@pytest.mark.parametrize("rename, match", [
    (lambda k: k.replace("param:0:", "param:x:"), r"entry 'param:x:.*' is not a parameter"),
    (lambda k: "param:", r"entry 'param:' is not a parameter"),
    (lambda k: k.replace("param:0:", "param:1:") + "2",
     r"its parameters are numbered \[1, 1, 2, 3\]; expected 0 to 3"),
])
def test_a_saved_network_with_a_misnamed_parameter_entry_is_refused_naming_it(
        tmp_path, capsys, rename, match):
    # an archive whose parameter entry was renamed (edited, or another tool's) failed with
    # int()'s "invalid literal for int() with base 10: 'x'", naming neither the file nor the
    # entry (also as `depthlab predict`'s one line)
    import numpy as np

    import depthlab as dl

    path = dl.save(dl.mlp([2, 3, 2], "tanh", seed=0), tmp_path / "net.npz")
    arrays = dict(np.load(path))
    first = next(k for k in arrays if k.startswith("param:0:"))
    arrays[rename(first)] = arrays.pop(first)
    bad = tmp_path / "bad.npz"
    np.savez(bad, **arrays)
    with pytest.raises(ValueError, match=f"^'{re.escape(str(bad))}': {match}"):
        dl.load(bad)
    code, _out, err = run_cli(capsys, "predict", bad, "spirals")
    assert code == 2 and "bad.npz" in err and "invalid literal" not in err, err
    assert dl.load(path).parameters()[0].value.shape == (2, 3)


def test_a_metric_named_like_a_runs_column_does_not_replace_it(tmp_path, capsys):
    # Store.runs() flattened every metric into a column of its name, over the row's own:
    # `seconds` was NaN for each run whose metrics lack it (a failed point stores 5.0 s in its
    # row), and a record's metric "status" or "name" replaced the run's status and name
    # (`depthlab runs` listed status 3, the report ranked on it)
    from depthlab.experiments import RunRecord

    with Store(tmp_path) as s:
        s.add_run(RunRecord("a", name="first", status="failed", seconds=5.0, metrics={}))
        s.add_run(RunRecord("b", name="second", seconds=7.0,
                            metrics={"seconds": 6.5, "status": 3.0, "name": 1.0, "kind": 2,
                                     "train_loss": 0.5, "lr_final": 0.01}))
        df = s.runs()
    assert list(df["status"]) == ["failed", "finished"]
    assert list(df["name"]) == ["first", "second"] and list(df["kind"]) == ["run", "run"]
    assert list(df["seconds"]) == [5.0, 7.0]
    assert df["train_loss"].iloc[1] == 0.5 and df["lr_final"].iloc[1] == 0.01  # still flat
    assert df["metrics"].iloc[1]["status"] == 3.0  # the metric itself is kept
    code, out, err = run_cli(capsys, "runs", tmp_path)
    assert code == 0, err
    rows = out.splitlines()[2:]
    assert rows[0].split()[:4] == ["a", "run", "failed", "first"], rows
    assert rows[1].split()[:4] == ["b", "run", "finished", "second"], rows
    assert rows[0].split()[-1] == "5" and rows[1].split()[-1] == "7"


def test_the_repr_of_a_failed_run_leaves_out_its_missing_metrics():
    # a failed point's metrics are all None: its repr ended "train_loss=, val_loss=, val_acc=)"
    from depthlab.experiments import RunRecord
    from depthlab.experiments.runner import failed_record

    rec = failed_record({"name": "n"}, "abc123", "ValueError: boom", kind="sweep-point")
    assert repr(rec) == "RunRecord('abc123', name='n', sweep-point, failed, 0 steps)"
    ok = RunRecord("d", metrics={"train_loss": 0.25, "val_loss": None, "val_acc": float("nan")})
    assert repr(ok) == "RunRecord('d', finished, 0 steps, train_loss=0.25, val_acc=nan)"


def test_a_full_disk_under_an_export_names_the_file_not_stdout(tmp_path, capsys, monkeypatch):
    # AtomicWriteError had no file name, so the command line took a full disk while writing
    # an exported table (or report.html, or a run's network) for its stdout: "depthlab:
    # error: cannot write the output to stdout: cannot write '.../steps.csv': no space left"
    import errno

    import depthlab.atomic as atomic
    from depthlab.experiments import RunRecord

    with Store(tmp_path / "o") as s:
        s.add_run(RunRecord("a", name="first"))

    def full(_fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", full)
    code, out, err = run_cli(capsys, "export", tmp_path / "o", "--to", tmp_path / "ex")
    assert code == 2 and out == "", err
    line = err.strip()
    assert line.startswith(f"depthlab: error: cannot write '{tmp_path / 'ex' / 'runs.csv'}': "
                           "no space left on device"), line
    assert "stdout" not in line and len(err.splitlines()) == 1
    assert not (tmp_path / "ex").exists() or not any((tmp_path / "ex").iterdir())
    with pytest.raises(atomic.AtomicWriteError) as info:
        atomic.atomic_write_text(tmp_path / "x.txt", "x")
    assert info.value.filename == str(tmp_path / "x.txt")
    assert str(info.value).startswith(f"cannot write '{tmp_path / 'x.txt'}': no space left")


def test_load_runs_reads_a_store_on_a_read_only_disk(tmpfs):
    # load_runs opened the store for writing: on a read-only disk it failed with "the file
    # system is read-only: unable to open database file", where `depthlab runs` lists it
    from depthlab.experiments import RunRecord, load_runs

    with Store(tmpfs) as s:
        s.add_run(RunRecord("a", name="first", metrics={"val_acc": 0.5}))
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    runs = load_runs(tmpfs)
    assert list(runs["id"]) == ["a"] and list(runs["val_acc"]) == [0.5]
    assert sorted(os.listdir(tmpfs)) == ["depthlab.db"]


@pytest.mark.parametrize("readonly", [False, True])
def test_a_very_long_lock_timeout_waits_rather_than_not_at_all(tmp_path, readonly):
    # SQLite's busy_timeout is a 32-bit count of milliseconds: timeout=1e10 ("wait for ever")
    # wrapped to 0, so a statement meeting another process's lock failed at once
    Store(tmp_path).close()
    for seconds, want in ((1e10, 2**31 - 1), (2_147_484, 2**31 - 1), (5, 5000), (0, 0)):
        with Store(tmp_path, timeout=seconds, readonly=readonly) as s:
            assert s._conn.execute("PRAGMA busy_timeout").fetchone()[0] == want, seconds


@pytest.mark.parametrize("column, value", [("seconds", "abc"), ("created", "yesterday"),
                                           ("seconds", b"\x00\x01")])
def test_a_runs_row_with_text_for_a_number_is_one_line_not_an_internal_error(
        tmp_path, capsys, column, value):
    # a store edited outside depthlab (seconds = 'abc'): `depthlab runs`, report and export
    # failed with "ValueError: could not convert string to float: 'abc' (internal error ...)"
    import sqlite3

    from depthlab.experiments import RunRecord

    with Store(tmp_path) as s:
        s.add_run(RunRecord("good", name="kept", seconds=2.0))
        s.add_run(RunRecord("bad", name="edited", seconds=3.0))
    with sqlite3.connect(tmp_path / "depthlab.db") as c:
        c.execute(f"UPDATE runs SET {column} = ? WHERE id = 'bad'", (value,))
    c.close()
    for command in ("runs", "report", "export"):
        code, _out, err = run_cli(capsys, command, tmp_path)
        assert code == 2, (command, err)
        assert err.count("\n") == 1 and "internal error" not in err, err
        assert f"run 'bad' has a {column} that is not a number" in err, err
    with Store(tmp_path, readonly=True) as s, pytest.raises(StoreError, match="not a number"):
        s.run("bad")
    with sqlite3.connect(tmp_path / "depthlab.db") as c:
        c.execute(f"UPDATE runs SET {column} = 4.5 WHERE id = 'bad'")
    c.close()
    with Store(tmp_path, readonly=True) as s:
        runs = s.runs().set_index("id")
        assert runs.loc["bad", column] == 4.5 and s.run("bad")[column] == 4.5
        assert s.run("good")["seconds"] == 2.0


@pytest.mark.parametrize("table, column, value", [
    ("steps", "loss", "x"), ("steps", "step", "x"), ("probes", "layer", "L"),
    ("probes", "value", "abc"), ("histograms", "count", "n")])
def test_a_per_run_table_with_text_for_a_number_is_one_line_not_an_internal_error(
        tmp_path, capsys, table, column, value):
    # `depthlab report` on a store edited outside depthlab: "TypeError: '<' not supported
    # between instances of 'str' and 'int'" or "could not convert string to float: 'x'"
    # (internal error, exit 1)
    import sqlite3

    import pandas as pd

    from depthlab.experiments import RunRecord

    rec = RunRecord("r", name="r", steps=pd.DataFrame({"step": [0, 1], "loss": [0.7, 0.6]}),
                    probes=pd.DataFrame({"step": [0, 0], "layer": [1, 2],
                                         "quantity": ["grad_std"] * 2, "value": [0.1, 0.2]}),
                    histograms=pd.DataFrame({"step": [0], "layer": [1], "kind": ["act"],
                                             "bin_left": [0.0], "bin_right": [1.0],
                                             "count": [3]}))
    with Store(tmp_path) as s:
        s.add_run(rec)
        assert s.steps("r")["loss"].tolist() == [0.7, 0.6]  # numbers read as numbers
    with sqlite3.connect(tmp_path / "depthlab.db") as c:
        c.execute(f"UPDATE {table} SET {column} = ? WHERE rowid = 1", (value,))
    c.close()
    code, _out, err = run_cli(capsys, "report", tmp_path, "-q")
    assert code == 2 and err.count("\n") == 1 and "internal error" not in err, err
    assert f"run 'r' has a {table}.{column} that is not a number ({value!r})" in err, err
    with Store(tmp_path, readonly=True) as s, pytest.raises(StoreError, match="not a number"):
        getattr(s, table)("r")
    code, _out, err = run_cli(capsys, "export", tmp_path)  # the tables as stored: still written
    assert code == 0, err
