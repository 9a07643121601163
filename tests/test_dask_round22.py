"""Round 22: a sweep never waits without end on a Dask scheduler that has no worker.

CI hang (tests/test_dask_sweep.py's every-try test on a loaded host): a worker killed by its
point was not back within Dask's ``distributed.deploy.lost-worker-timeout`` (15 s; a spawned
worker took ~35 s to start there), so the cluster hard-closed its nanny for good; with every
nanny closed the scheduler had no worker and the sweep waited in ``as_completed`` forever.
``lost-worker-timeout: 0`` below makes that deterministic.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
from contextlib import contextmanager

import pytest

distributed = pytest.importorskip("distributed")
import dask  # noqa: E402
from test_dask_sweep import Started  # noqa: E402

from depthlab.experiments import read_toml, run_sweep  # noqa: E402
from depthlab.experiments.executors import compute_point  # noqa: E402
from depthlab.experiments.executors.base import ClusterError  # noqa: E402
from depthlab.experiments.executors.dask import (  # noqa: E402
    LOCAL_NO_WORKERS_S,
    DaskExecutor,
)

GRID = """\
[data]
name = "clusters"
n = 200
options = {d = 16, n_classes = 4}
[model]
sizes = ["auto", 16, "auto"]
[train]
lr = 0.05
batch_size = 8
epochs = 1
[probes]
every = 20
[sweep]
"train.seed" = [0, 1, 2]
"""

DEADLINE_S = 120
"""A test that would wait without end fails after this many seconds instead."""


class Hung(BaseException):
    """Not an Exception: no ``except Exception`` of the sweep's may swallow it."""


@contextmanager
def deadline(seconds: int = DEADLINE_S):
    """SIGALRM ends a hung sweep (the main thread waits in short waits, so the handler runs)
    with a message instead of hanging CI until its limit."""
    def hung(*_):
        raise Hung(f"the sweep still waited after {seconds} s on a scheduler with no workers")

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def raw_grid(tmp_path) -> dict:
    path = tmp_path / "grid.toml"
    path.write_text(GRID)
    return read_toml(str(path))


def stored(out) -> dict[str, str]:
    db = out / "depthlab.db"
    if not db.exists():
        return {}
    conn = sqlite3.connect(db)
    try:
        return dict(conn.execute("SELECT name, status FROM runs").fetchall())
    finally:
        conn.close()


def dies_on_seed_1(task):
    """Seed 1 kills its worker process every time it is tried."""
    if task.config["train"]["seed"] == 1:
        os._exit(3)
    return compute_point(task)


def _forked_workers() -> dict:
    """Worker processes forked from a preloaded fork server (as depthlab's local:N), not
    spawned: a restart is a fork, not a fresh interpreter's imports (seconds on a loaded host)."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return {}
    with dask.config.set({"distributed.worker.multiprocessing-method": "forkserver"}):
        getattr(distributed.utils, "get_mp_context", lambda: None)()  # Dask's preloads replaced
    multiprocessing.get_context("forkserver").set_forkserver_preload(
        ["distributed", "numpy", "pandas", "depthlab.experiments.runner",
         "depthlab.experiments.executors.dask"])
    return {"distributed.worker.multiprocessing-method": "forkserver"}


def test_a_cluster_that_closed_its_dead_workers_nanny_stops_the_sweep_in_one_line(tmp_path):
    """The CI hang made deterministic: the one worker dies on seed 1 and its nanny is closed
    at once (what 15 s did to a slow restart), so the scheduler has no worker left."""
    cfg = {"distributed.deploy.lost-worker-timeout": 0, **_forked_workers()}
    with dask.config.set(cfg), distributed.LocalCluster(
            n_workers=1, processes=True, threads_per_worker=1, host="127.0.0.1",
            dashboard_address="127.0.0.1:0", silence_logs=50) as lc:
        ex = DaskExecutor(lc.scheduler_address, compute=dies_on_seed_1, chunk=1,
                          no_workers_timeout=3)
        with deadline(), pytest.raises(ClusterError) as info, \
                pytest.warns(UserWarning, match="has no workers now"):
            run_sweep(raw_grid(tmp_path), tmp_path / "o", echo=None, executor=ex)
    text = str(info.value)
    assert "\n" not in text
    assert f"the Dask scheduler at {lc.scheduler_address} has had no workers for 3 s" in text
    assert "run the same command again to finish the grid" in text
    # no point was stored failed for want of a worker; those finished before are kept
    assert set(stored(tmp_path / "o").values()) <= {"finished"}




def test_a_local_cluster_whose_workers_never_come_back_is_a_cluster_error(tmp_path,
                                                                           monkeypatch):
    """local:N: losing every worker for good (a nanny that cannot bring its worker back) is
    the one-line ClusterError, not a wait without end; its nannies are never closed for a
    slow restart (Dask's lost-worker-timeout held far above its 15 s)."""
    async def no_restart(self, exitcode):
        return None

    monkeypatch.setattr(distributed.Nanny, "_on_worker_exit", no_restart)
    with DaskExecutor("local:1", compute=dies_on_seed_1, chunk=1, no_workers_timeout=2) as ex:
        lost = dask.config.get("distributed.deploy.lost-worker-timeout")
        assert dask.utils.parse_timedelta(lost) >= 3600
        with deadline(), pytest.raises(ClusterError, match=r"the Dask scheduler of the local:1 "
                                       r"cluster has had no workers for 2 s \(all 1 worker "
                                       r"process\(es\) died and none came back\)"), \
                pytest.warns(UserWarning, match="local:1 cluster has no workers now"):
            run_sweep(raw_grid(tmp_path), tmp_path / "o", echo=None, executor=Started(ex))
    assert set(stored(tmp_path / "o").values()) <= {"finished"}


def test_a_scheduler_without_workers_is_waited_for_at_most_the_timeout(tmp_path):
    with distributed.LocalCluster(n_workers=0, processes=False, protocol="tcp",
                                  host="127.0.0.1", dashboard_address="127.0.0.1:0",
                                  silence_logs=50) as lc:
        ex = DaskExecutor(lc.scheduler_address, no_workers_timeout=1)
        with deadline(), pytest.raises(ClusterError, match="has had no workers for 1 s"), \
                pytest.warns(UserWarning, match=r"has no workers yet; the sweep waits for "
                             r"them \(for at most 1 s; Ctrl-C stops\)"):
            run_sweep(raw_grid(tmp_path), tmp_path / "o", echo=None, executor=ex)
    assert stored(tmp_path / "o") == {}


def test_chunks_the_scheduler_failed_for_want_of_workers_store_no_point_failed(tmp_path):
    """A scheduler with Dask's own distributed.scheduler.no-workers-timeout errs the waiting
    chunks with NoWorkerError: that says nothing of their points (they were stored failed)."""
    with dask.config.set({"distributed.scheduler.no-workers-timeout": "0.5s"}), \
            distributed.LocalCluster(n_workers=0, processes=False, protocol="tcp",
                                     host="127.0.0.1", dashboard_address="127.0.0.1:0",
                                     silence_logs=50) as lc:
        ex = DaskExecutor(lc.scheduler_address)  # no limit of its own
        with deadline(), pytest.raises(ClusterError, match="NoWorkerError"), \
                pytest.warns(UserWarning, match="has no workers yet"):
            run_sweep(raw_grid(tmp_path), tmp_path / "o", echo=None, executor=ex)
    assert "failed" not in stored(tmp_path / "o").values()


def test_no_workers_timeout_defaults_and_checks():
    assert DaskExecutor("local:2").no_workers_timeout == LOCAL_NO_WORKERS_S
    assert DaskExecutor("tcp://127.0.0.1:8786").no_workers_timeout is None
    assert DaskExecutor("tcp://127.0.0.1:8786", no_workers_timeout=30).no_workers_timeout == 30
    assert DaskExecutor("local:2", no_workers_timeout=float("inf")).no_workers_timeout is None
    for bad in (0, -1, float("nan")):
        with pytest.raises(ValueError, match=f"no_workers_timeout must be .*got {bad!r}"):
            DaskExecutor("local:2", no_workers_timeout=bad)
    with pytest.raises(TypeError, match="no_workers_timeout must be a real number"):
        DaskExecutor("local:2", no_workers_timeout="60")
