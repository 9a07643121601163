"""Interrupting `depthlab sweep --jobs 2`: real signals to a real process group.

Ctrl-C (SIGINT to the whole group, as a terminal sends it) and SIGTERM stop the sweep within
a bound, print one line, exit 130 / 143, store only whole runs and leave no process behind; a
second Ctrl-C exits at once; SIGKILL of the parent alone makes its workers exit.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import psutil
import pytest
from helpers.cli import ENV

# 16 points of a few tenths of a second each: the sweep is mid-grid when it is signalled
CONFIG = """\
[data]
name = "clusters"
n = 1500
options = {d = 16, n_classes = 4}
[model]
sizes = ["auto", 32, 32, "auto"]
[train]
lr = 0.05
batch_size = 4
epochs = 4
[probes]
every = 50
[sweep]
"train.seed" = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]
"""

# generous for a loaded 2-core CI machine; the sweep itself needs well under a second
EXIT_BOUND_S = 4.0


def _stored(db) -> list[tuple]:
    if not os.path.exists(db):
        return []
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return conn.execute("SELECT id, status, metrics FROM runs").fetchall()
        finally:
            conn.close()
    except sqlite3.Error:
        return []


def _group(pgid: int) -> list[psutil.Process]:
    """Live (non-zombie) processes of process group ``pgid``."""
    out = []
    for p in psutil.process_iter():
        try:
            if os.getpgid(p.pid) == pgid and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except (ProcessLookupError, psutil.Error):
            continue
    return out


def _start(tmp_path, *how: str) -> tuple[subprocess.Popen, str]:
    cfg = tmp_path / "sweep.toml"
    cfg.write_text(CONFIG)
    db = str(tmp_path / "o" / "depthlab.db")
    proc = subprocess.Popen([sys.executable, "-m", "depthlab", "sweep", str(cfg), "--out",
                             str(tmp_path / "o"), *(how or ("--jobs", "2"))], env=ENV,
                            start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not _stored(db):  # mid-sweep: one point stored, both workers busy
        if proc.poll() is not None:
            pytest.fail(f"the sweep ended early: {proc.communicate()}")
        assert time.monotonic() < deadline, "no point finished in time"
        time.sleep(0.05)
    return proc, db


def _assert_whole(db) -> list[tuple]:
    rows = _stored(db)
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        for rid, status, metrics in rows:
            assert status == "finished"
            n = conn.execute("SELECT COUNT(*) FROM steps WHERE run_id = ?", (rid,)).fetchone()[0]
            assert n == json.loads(metrics)["steps"] > 0
    finally:
        conn.close()
    return rows


def _wait_gone(pgid: int, bound: float) -> list[psutil.Process]:
    deadline = time.monotonic() + bound
    while (left := _group(pgid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


@pytest.mark.parametrize("sig, code, times, how", [
    (signal.SIGINT, 130, 1, ()), (signal.SIGTERM, 143, 1, ()), (signal.SIGINT, 130, 2, ()),
    (signal.SIGINT, 130, 1, ("--cluster", "local:2"))],
    ids=["sigint", "sigterm", "sigint-twice", "sigint-dask-local-cluster"])
def test_signal_stops_sweep_promptly_and_cleanly(tmp_path, sig, code, times, how):
    if how:
        pytest.importorskip("distributed")
    proc, db = _start(tmp_path, *how)
    try:
        t0 = time.monotonic()
        for _ in range(times):
            os.killpg(proc.pid, sig)
            time.sleep(0.02)
        _out, err = proc.communicate(timeout=60)
        elapsed = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == code, err
    assert elapsed < EXIT_BOUND_S, f"took {elapsed:.1f}s to exit"
    lines = err.strip().splitlines()
    # a second signal may land while the first one's summary is printed: then its own line
    # follows ("interrupted again; exiting now"), as a terminal user pressing Ctrl-C twice sees
    assert 1 <= len(lines) <= times, err
    assert all(line.startswith("depthlab: interrupted") for line in lines), err
    assert "leaked" not in err and "Traceback" not in err
    left = _wait_gone(proc.pid, 3.0)
    assert not left, f"left running: {[p.cmdline() for p in left]}"
    rows = _assert_whole(db)
    assert 1 <= len(rows) < 16  # queued points were cancelled, not run on
    time.sleep(0.5)
    assert len(_stored(db)) == len(rows)  # and nothing arrives later


def test_sigkill_of_the_parent_alone_ends_its_workers(tmp_path):
    proc, db = _start(tmp_path)
    workers = psutil.Process(proc.pid).children(recursive=True)
    assert len(workers) == 2
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    deadline = time.monotonic() + 3.0
    while any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers):
        assert time.monotonic() < deadline, "workers outlived their parent"
        time.sleep(0.05)
    _assert_whole(db)


def test_a_hanging_shutdown_after_an_interrupt_still_ends_the_command():
    """After an interrupt, a library's shutdown that hangs (here a non-daemon thread that
    sleeps 30 s) cannot keep the command alive: it ends with the interrupt's status once the
    grace period is over."""
    code = ("import threading, time\n"
            "from depthlab.cli.common import exit_within\n"
            "threading.Thread(target=time.sleep, args=(30,)).start()\n"
            "exit_within(0.3, 130)\n")
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code], env=ENV, timeout=20)
    assert proc.returncode == 130
    assert time.monotonic() - t0 < 10
