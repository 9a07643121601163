"""Issue 11, files and stores: full disks, damaged or foreign stores, read-only stores, killed
writers, silent overwrites, BLAS threads. CLI errors are one line on stderr and exit 2."""

from __future__ import annotations

import errno
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers.cli import assert_one_line_error, one_blas_thread, run_cli

from depthlab.atomic import AtomicWriteError, atomic_write, atomic_write_text
from depthlab.experiments import RunRecord, Store, StoreError, run_id, validate
from depthlab.experiments.store import RunExistsError, StoreWriteError

TINY = """\
[data]
name = "spirals"
n = 120
[model]
sizes = ["auto", 6, "auto"]
[train]
epochs = 1
batch_size = 40
[probes]
every = 0
"""
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    one_blas_thread(monkeypatch)


def tiny_config(tmp_path: Path) -> Path:
    p = tmp_path / "tiny.toml"
    p.write_text(TINY)
    return p


def record(rid: str, **kw) -> RunRecord:
    return RunRecord(id=rid, config={"x": 1}, metrics={"train_loss": 1.5}, **kw)


# -- damaged, foreign and read-only stores ----------------------------------------------------


def test_foreign_runs_table_is_refused_with_one_line(tmp_path, capsys):
    db = tmp_path / "depthlab.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE runs (a INTEGER, b TEXT)")
    conn.execute("INSERT INTO runs VALUES (1, 'theirs')")
    conn.commit()
    conn.close()
    code, _, err = run_cli(capsys, "runs", tmp_path)
    assert_one_line_error(code, err, str(db), "not a depthlab results store", "'runs'")
    with pytest.raises(StoreError, match="not a depthlab results store"):
        Store(tmp_path)
    conn = sqlite3.connect(db)  # untouched
    assert conn.execute("SELECT * FROM runs").fetchall() == [(1, "theirs")]
    conn.close()
    other = tmp_path / "app.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE customers (id INTEGER)")
    conn.commit()
    conn.close()
    code, _, err = run_cli(capsys, "run", tiny_config(tmp_path), "--out", other, "-q")
    assert_one_line_error(code, err, str(other), "no 'runs' table")
    conn = sqlite3.connect(other)  # no depthlab tables added to someone else's database
    assert [r[0] for r in conn.execute("SELECT name FROM sqlite_master")] == ["customers"]
    conn.close()


def test_damaged_store_and_non_sqlite_file(tmp_path, capsys):
    with Store(tmp_path) as s:
        for i in range(30):
            s.add_run(record(f"r{i}", error="x" * 3000))
    db = tmp_path / "depthlab.db"
    raw = bytearray(db.read_bytes())
    page = int.from_bytes(raw[16:18], "big")
    raw[page:] = b"\xa5" * (len(raw) - page)  # every page after the first is garbage
    db.write_bytes(bytes(raw))
    code, _, err = run_cli(capsys, "runs", tmp_path)
    assert_one_line_error(code, err, str(db))
    assert "malformed" in err or "damaged" in err
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "depthlab.db").write_bytes(b"this is not a database" * 100)
    code, _, err = run_cli(capsys, "runs", junk)
    assert_one_line_error(code, err, str(junk / "depthlab.db"), "not an SQLite database")


@pytest.fixture
def tmpfs(tmp_path):
    """A 1 MiB tmpfs (root only); yields (mount point, remount function)."""
    if not IS_ROOT:
        pytest.skip("mounting a size-limited tmpfs needs root")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")

    def remount(mode: str) -> None:
        subprocess.run(["mount", "-o", f"remount,{mode}", str(mnt)], check=True)

    try:
        yield mnt, remount
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_runs_reads_a_read_only_store(tmpfs, tmp_path, capsys):
    mnt, remount = tmpfs
    with Store(mnt) as s:
        s.add_run(record("kept", name="old"))
    remount("ro")
    code, out, err = run_cli(capsys, "runs", mnt)
    assert code == 0, err
    assert "kept" in out and "old" in out
    code, out, err = run_cli(capsys, "export", mnt, "--to", tmp_path / "exp")
    assert code == 0, err
    code, _, err = run_cli(capsys, "run", tiny_config(tmp_path), "--out", mnt, "-q")
    assert_one_line_error(code, err, str(mnt / "depthlab.db"))


# -- full disks -------------------------------------------------------------------------------


def _fill(folder: Path) -> Path:
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as e:
        assert e.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


def test_run_on_a_full_disk_exits_2_and_keeps_older_runs(tmpfs, tmp_path, capsys):
    mnt, _ = tmpfs
    with Store(mnt) as s:
        s.add_run(record("older", name="older"))
    code, _, err = run_cli(capsys, "report", mnt, "-q")
    assert code == 0, err
    report = (mnt / "report.html").read_bytes()
    filler = _fill(mnt)
    code, _, err = run_cli(capsys, "run", tiny_config(tmp_path), "--out", mnt, "-q")
    assert_one_line_error(code, err, str(mnt / "depthlab.db"), "no space left on device")
    code, _, err = run_cli(capsys, "report", mnt, "-q")
    assert_one_line_error(code, err, "no space left on device")
    assert (mnt / "report.html").read_bytes() == report
    assert not list(mnt.rglob("*.tmp"))
    filler.unlink()
    with Store(mnt, readonly=True) as s:
        assert list(s.runs()["id"]) == ["older"] and s.integrity_check() == "ok"


def test_write_failure_after_training_keeps_the_record(tmp_path, capsys, monkeypatch):
    with Store(tmp_path / "o") as s:
        s.add_run(record("older"))

    def full(self, rec, replace):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(Store, "_add_run", full)
    code, _, err = run_cli(capsys, "run", tiny_config(tmp_path), "--out", tmp_path / "o", "-q")
    assert_one_line_error(code, err, "could not be written to", "no space left on device",
                          "runs stored earlier are intact")
    rec = record("new")
    with Store(tmp_path / "o") as s, pytest.raises(StoreWriteError) as info:
        s.add_run(rec)
    assert info.value.record is rec  # the caller still has the run
    monkeypatch.undo()
    with Store(tmp_path / "o") as s:
        assert list(s.runs()["id"]) == ["older"]


def test_report_on_a_full_disk_keeps_the_old_report(tmp_path, capsys, monkeypatch):
    code, _, err = run_cli(capsys, "run", tiny_config(tmp_path), "--out", tmp_path, "-q")
    assert code == 0, err
    code, out, err = run_cli(capsys, "report", tmp_path, "-q")
    assert code == 0, err
    report = tmp_path / "report.html"
    before = report.read_bytes()
    import depthlab.atomic as atomic

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", no_space)
    code, _, err = run_cli(capsys, "report", tmp_path, "-q")
    assert_one_line_error(code, err, "cannot write", "no space left on device")
    assert report.read_bytes() == before
    assert not [p for p in tmp_path.rglob("*.tmp")]


def test_atomic_write_error_is_one_line_and_keeps_the_old_file(tmp_path):
    target = tmp_path / "claims.json"
    atomic_write_text(target, "old")

    def full(fh):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(AtomicWriteError) as info:
        atomic_write(target, full)
    assert str(info.value) == (f"cannot write {str(target)!r}: no space left on device "
                               "(the previous version is kept)")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["claims.json"]


# -- killed writers -----------------------------------------------------------------------------


def test_temporaries_of_a_killed_writer_are_removed_by_the_next_write(tmp_path):
    target = tmp_path / "report.html"
    code = ("import sys, time; from depthlab.atomic import atomic_write; "
            "atomic_write(sys.argv[1], lambda fh: (fh.write(b'half'), fh.flush(), "
            "print('writing', flush=True), time.sleep(60)))")
    proc = subprocess.Popen([sys.executable, "-c", code, str(target)], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    left = [p.name for p in tmp_path.iterdir()]
    assert len(left) == 1 and left[0].endswith(".tmp"), left
    from depthlab.atomic import _host

    live = tmp_path / f".other.png.depthlab-{_host()}-{os.getpid()}-x.tmp"  # a live writer's
    live.write_bytes(b"")
    remote = tmp_path / ".a.png.depthlab-otherhost-1-x.tmp"  # another host's, recent: kept
    remote.write_bytes(b"")
    old_remote = tmp_path / ".b.png.depthlab-otherhost-1-y.tmp"  # another host's, 2 days old
    old_remote.write_bytes(b"")
    os.utime(old_remote, (time.time() - 2 * 86400,) * 2)
    atomic_write_text(target, "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, remote.name,
                                                                 "report.html"])
    assert target.read_text() == "new"


# -- never overwrite silently -------------------------------------------------------------------


def test_run_refuses_to_replace_a_sweep_point_or_a_named_run(tmp_path, capsys):
    cfg_path = tiny_config(tmp_path)
    import tomllib

    rid = run_id(validate(tomllib.loads(TINY)))
    out = tmp_path / "o"
    with Store(out) as s:
        s.add_run(record(rid, kind="sweep-point", sweep="s123"))
    code, _, err = run_cli(capsys, "run", cfg_path, "--out", out, "-q")
    assert_one_line_error(code, err, f"sweep-point {rid} of sweep s123", "--overwrite")
    with Store(out) as s:
        assert s.run(rid)["kind"] == "sweep-point" and s.run(rid)["sweep"] == "s123"
    code, _, err = run_cli(capsys, "run", cfg_path, "--out", out, "--overwrite", "--name",
                           "first", "-q")
    assert code == 0, err
    code, _, err = run_cli(capsys, "run", cfg_path, "--out", out, "--name", "second", "-q")
    assert_one_line_error(code, err, "named 'first'", "--overwrite")
    with Store(out) as s:
        row = s.run(rid)
        assert (row["kind"], row["name"]) == ("run", "first")
        with pytest.raises(RunExistsError, match="named 'first'"):
            s.add_run(record(rid), replace=False)


# -- BLAS threads -------------------------------------------------------------------------------


def test_threads_option_before_or_after_the_command(tmp_path, capsys):
    with Store(tmp_path) as s:
        s.add_run(record("r1"))
    for args in (["--threads", "1", "runs", tmp_path], ["runs", tmp_path, "--threads", "1"]):
        code, out, err = run_cli(capsys, *args)
        assert code == 0 and "r1" in out, err
    code, _, err = run_cli(capsys, "--threads", "0", "runs", tmp_path)
    assert_one_line_error(code, err, "--threads 0", "an integer >= 1")


def test_threads_chosen_from_the_work(monkeypatch):
    import numpy as np
    from threadpoolctl import threadpool_info

    import depthlab as dl
    from depthlab import threads
    from depthlab.training import Callback, Trainer

    for var in ("DEPTHLAB_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                "MKL_NUM_THREADS"):
        monkeypatch.delenv(var)
    monkeypatch.setattr(threads, "idle_cores", lambda: 2)
    assert threads.choose_threads([10, 100, 10], 32) == 1
    assert threads.choose_threads([256, 256, 2], 256) == 2
    seen: list[int] = []

    class Spy(Callback):
        def after_update(self, trainer, step, loss):
            seen.append(max(i["num_threads"] for i in threadpool_info()
                            if i["user_api"] == "blas"))

    rng = np.random.default_rng(0)
    for width, expected in ((8, 1), (256, 2)):
        x = rng.standard_normal((256, width)).astype("float32")
        y = np.arange(256) % 2
        Trainer(dl.mlp([width, width, 2]), batch_size=256, max_steps=1, epochs=None,
                callbacks=[Spy()]).fit(x, y)
        assert seen[-1] == expected
    monkeypatch.setenv("DEPTHLAB_THREADS", "1")
    assert threads.user_threads() == 1
    with pytest.raises(ValueError, match="threads=0 is not accepted"):
        Trainer(dl.mlp([2, 2]), threads=0)


def test_overlapping_thread_limits_restore_the_original_once():
    from threadpoolctl import threadpool_info

    from depthlab.threads import blas_threads

    def blas() -> int:
        return max(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")

    original = blas()
    first, second = blas_threads(2), blas_threads(1)  # e.g. two playground sessions
    assert first.__enter__() == 2 and blas() == 2
    assert second.__enter__() == 2  # the first block's limit holds
    first.__exit__(None, None, None)
    assert blas() == 2  # the second block is still running
    second.__exit__(None, None, None)
    assert blas() == original


def test_write_check_fails_on_a_read_only_connection(tmp_path):
    with Store(tmp_path) as s:
        s.check_writable()
        assert s.runs().empty  # the scratch row is gone
    with Store(tmp_path, readonly=True) as s, pytest.raises(StoreWriteError,
                                                            match="is not writable"):
        s.check_writable()


def test_idle_cores_do_not_count_this_process_as_a_neighbour(monkeypatch):
    """A process that has kept a core busy for minutes adds ~1 to the load average itself: on
    an otherwise idle 2-core machine it still gets both cores; a neighbour's load still
    counts."""
    from depthlab import threads

    monkeypatch.setattr(threads, "cores_available", lambda: 2)
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (1.0, 1.0, 1.0))
    monkeypatch.setattr(threads, "own_load", lambda: 0.97)
    assert threads.idle_cores() == 2
    monkeypatch.setattr(threads, "own_load", lambda: 0.0)  # the load is someone else's
    assert threads.idle_cores() == 1


def test_own_load_of_a_fresh_idle_process_is_small():
    """A just-started process has hardly entered the 1-minute average: its share is near 0
    (at most its utilization times 1 - exp(-age / 60 s))."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", "from depthlab import threads; "
                          "print(threads.own_load())"], capture_output=True, text=True,
                         check=True, timeout=60)
    assert 0.0 <= float(out.stdout) < 0.2
