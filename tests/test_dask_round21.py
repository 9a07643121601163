"""Round 21 (dask21b): a sweep whose Dask scheduler dies mid-sweep. Each test failed before
the fix it names. The scheduler and its two workers are separate processes (``dask
scheduler`` / ``dask worker`` on loopback), so the test can kill the scheduler alone.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from helpers.cli import ENV, assert_one_line_error
from helpers.scheduler import start_scheduler

distributed = pytest.importorskip("distributed")

GRID = """\
[data]
name = "clusters"
n = 1500
options = {d = 16, n_classes = 4}
[model]
sizes = ["auto", 16, 16, "auto"]
[train]
lr = 0.05
batch_size = 8
epochs = 3
[probes]
every = 20
[sweep]
"model.dtype" = ["float32", "float64"]
"train.seed" = [0, 1, 2, 3]
"""


def _rows(db) -> list[tuple]:
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return conn.execute("SELECT id, status, error FROM runs").fetchall()
        finally:
            conn.close()
    except sqlite3.Error:
        return []


def _start(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", *args], env=ENV, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def test_a_scheduler_killed_mid_sweep_is_one_line_and_stores_no_point_failed(tmp_path):
    """Before: the points left were stored ``failed`` ("the Dask task ended cancelled
    without a result", "its record computed on a Dask worker could not be loaded here:
    CommClosedError ..."; measured: 3 finished, 5 failed of 8), exit 1, and Dask's
    traceback of the client's cancelled reconnect on stderr. Now: exit 2, one line naming
    the scheduler, only the finished points stored; a rerun finishes the grid."""
    (tmp_path / "grid.toml").write_text(GRID)
    sched, address = start_scheduler()  # listening, on a port of its own choosing
    workers = None
    try:
        workers = _start("distributed.cli.dask_worker", address, "--nworkers", "2",
                         "--nthreads", "1", "--no-dashboard")
        db = tmp_path / "o" / "depthlab.db"
        client = subprocess.Popen([sys.executable, "-m", "depthlab", "sweep",
                                   str(tmp_path / "grid.toml"), "--out", str(tmp_path / "o"),
                                   "--cluster", address], env=ENV, start_new_session=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 180
            while not _rows(db):
                assert client.poll() is None, client.communicate()
                assert time.monotonic() < deadline
                time.sleep(0.05)
            os.killpg(sched.pid, signal.SIGKILL)  # the scheduler alone; workers stay
            out, err = client.communicate(timeout=120)
        finally:
            _stop(client)
    finally:
        _stop(sched)
        if workers is not None:
            _stop(workers)
    got = _rows(db)
    assert 1 <= len(got) < 8, out
    assert [r for r in got if r[1] != "finished"] == []  # none of them stored failed
    # (a worker slow to register may add the "has no workers yet" warning line first)
    err = "".join(line for line in err.splitlines(keepends=True)
                  if not line.startswith("depthlab: warning: the Dask scheduler"))
    assert_one_line_error(client.returncode, err, f"lost the Dask scheduler at {address}",
                          "run the same command again")


class _Fut:
    def __init__(self, key, status):
        self.key, self.status = key, status


class _Client:
    """Says "running" the first ``n`` times it is asked, then "connecting"."""

    def __init__(self, n):
        self.n = n

    @property
    def status(self):
        self.n -= 1
        return "running" if self.n >= 0 else "connecting"


def test_a_fetch_that_met_the_closed_connection_first_is_the_lost_scheduler():
    """Before: a chunk whose result fetch failed with CommClosedError while the client still
    said "running" (it had not yet noticed the lost scheduler) was waited for again, then its
    points stored failed ("could not be loaded here: CommClosedError ..."), a race seen once
    in the test above. Now the client's status is looked at again before deciding."""
    from depthlab.experiments.executors import ClusterError
    from depthlab.experiments.executors.dask import DaskExecutor

    ex = DaskExecutor("tcp://127.0.0.1:8786")
    ex.client = _Client(2)
    ex._fetch_errors["k"] = "CommClosedError: in <TCP (closed) ConnectionPool.gather>"
    with pytest.raises(ClusterError, match="lost the Dask scheduler at tcp://127.0.0.1:8786"):
        ex._check_scheduler([_Fut("k", "finished")], {})
    ex.client = _Client(10**9)  # a worker's closed connection: the client stays running
    ex._check_scheduler([_Fut("k", "finished")], {})  # not a lost scheduler: waited again
    ex.client = None
