"""Sweeps on Dask distributed (loopback only): the same records as the local pool, a worker
killed mid-sweep, a client killed and rerun, points that raise, an unreachable scheduler.

One ``LocalCluster(n_workers=2, processes=True)`` is shared by the module and reached through
``--cluster tcp://127.0.0.1:PORT``; one test starts its own with ``--cluster local:2``.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import contextmanager

import psutil
import pytest
from helpers.cli import ENV, cli
from helpers.timed import timed_cli

distributed = pytest.importorskip("distributed")

from depthlab.experiments import read_toml, run_sweep  # noqa: E402
from depthlab.experiments.executors import Executor, compute_point  # noqa: E402
from depthlab.experiments.executors.dask import DaskExecutor  # noqa: E402

GRID = """\
[data]
name = "clusters"
n = {n}
options = {{d = 16, n_classes = 4}}
[model]
sizes = ["auto", 16, 16, "auto"]
[train]
lr = 0.05
batch_size = 8
epochs = {epochs}
[probes]
every = 20
[sweep]
"train.lr" = [0.05, 0.1]
"train.seed" = [0, 1, 2, 3, 4, 5]
"""


def write(tmp_path, n=300, epochs=1) -> str:
    path = tmp_path / "grid.toml"
    path.write_text(GRID.format(n=n, epochs=epochs))
    return str(path)


def rows(db) -> list[tuple]:
    if not os.path.exists(db):
        return []
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return conn.execute("SELECT id, status, created, metrics, error FROM runs "
                                "ORDER BY id").fetchall()
        finally:
            conn.close()
    except sqlite3.Error:
        return []


def steps_rows(db, rid) -> list[tuple]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT step, loss FROM steps WHERE run_id = ? ORDER BY step",
                            (rid,)).fetchall()
    finally:
        conn.close()


NO_WORKERS_S = 300
"""The tests that kill workers fail (ClusterError) rather than hang when no worker is left."""


@contextmanager
def _local_cluster(allowed_failures: int):
    """Held while the cluster lives, as depthlab's own local:N holds them: a killed worker's
    nanny is not closed for good after Dask's 15 s lost-worker-timeout (a restart on a loaded
    CI host took longer: the cluster was left without workers and the sweep hung), and workers
    are forked from a fork server that imported Dask, NumPy, pandas and the runner once."""
    import multiprocessing

    import dask

    cfg = {"distributed.deploy.lost-worker-timeout": "1h"}
    if "forkserver" in multiprocessing.get_all_start_methods():
        # as DaskExecutor._start_local: Dask sets its own preload list on first use (replaced
        # here), and whichever cluster starts the fork server first decides its preloads
        with dask.config.set({"distributed.worker.multiprocessing-method": "forkserver"}):
            getattr(distributed.utils, "get_mp_context", lambda: None)()
        multiprocessing.get_context("forkserver").set_forkserver_preload(
            ["distributed", "numpy", "pandas", "depthlab.experiments.runner",
             "depthlab.experiments.executors.dask"])
        cfg["distributed.worker.multiprocessing-method"] = "forkserver"
    with dask.config.set(cfg):
        with dask.config.set({"distributed.scheduler.allowed-failures": allowed_failures}):
            lc = distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                          host="127.0.0.1", dashboard_address="127.0.0.1:0",
                                          silence_logs=50)
        try:
            yield lc
        finally:
            lc.close()


@pytest.fixture(scope="module")
def cluster():
    """Dask's default tolerance (a task survives 3 worker deaths): a loaded machine's slow
    worker must not make a point fail in the tests that kill one worker."""
    with _local_cluster(3) as lc:
        yield lc


@pytest.fixture(scope="module")
def fragile_cluster():
    """A task is bad after the first worker death it is involved in: the every-try test."""
    with _local_cluster(1) as lc:
        yield lc


def worker_pids(lc) -> list[int]:
    return [n.process.process.pid for n in lc.workers.values()
            if getattr(n, "process", None) is not None and n.process.process is not None]


def _comparable(metrics: str) -> dict:
    m = json.loads(metrics)
    m.pop("seconds", None)
    return m


@pytest.fixture(scope="module")
def local_pool_db(tmp_path_factory):
    """The store of :func:`write`'s grid swept by the local pool (``--jobs 2``): the reference
    both Dask sweeps below are compared with (read only)."""
    tmp = tmp_path_factory.mktemp("local-pool")
    local = cli("sweep", write(tmp), "--out", tmp / "a", "--jobs", "2")
    assert local.returncode == 0, local.stderr
    return tmp / "a" / "depthlab.db"


@pytest.mark.parametrize("own", [False, True], ids=["scheduler", "local-cluster"])
def test_same_records_as_the_local_pool(tmp_path, cluster, own, local_pool_db):
    cfg = write(tmp_path)
    address = "local:2" if own else cluster.scheduler_address  # local:2: forked workers
    dask = cli("sweep", cfg, "--out", tmp_path / "b", "--cluster", address)
    assert dask.returncode == 0, dask.stderr
    assert "12 points" in dask.stdout.splitlines()[0]  # the grid size comes first
    a, b = rows(local_pool_db), rows(tmp_path / "b" / "depthlab.db")
    assert len(a) == len(b) == 12
    assert [r[0] for r in a] == [r[0] for r in b] and {r[1] for r in b} == {"finished"}
    for ra, rb in zip(a, b):
        assert _comparable(ra[3]) == _comparable(rb[3])  # bit-identical floats via JSON repr
        assert steps_rows(local_pool_db, ra[0]) == \
            steps_rows(tmp_path / "b" / "depthlab.db", rb[0])


def test_worker_killed_mid_sweep(tmp_path, cluster):
    cfg = write(tmp_path, n=1500, epochs=3)
    db = tmp_path / "o" / "depthlab.db"
    proc = subprocess.Popen([sys.executable, "-m", "depthlab", "sweep", cfg, "--out",
                             tmp_path / "o", "--cluster", cluster.scheduler_address],
                            env=ENV, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while len(rows(db)) < 2:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        victim = worker_pids(cluster)[0]
        os.kill(victim, signal.SIGKILL)  # mid-point: both workers are always busy
        during = cli("runs", tmp_path / "o")  # the store is readable while the sweep runs
        assert during.returncode == 0 and "sweep-point" in during.stdout, during.stderr
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, (out, err)
    got = rows(db)
    assert len(got) == 12 and {r[1] for r in got} == {"finished"}
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT COUNT(*), COUNT(DISTINCT id) FROM runs").fetchone() == (12, 12)
    for rid, *_rest in got:  # no run's rows stored twice
        n = conn.execute("SELECT COUNT(*) FROM steps WHERE run_id = ?", (rid,)).fetchone()[0]
        assert n == json.loads(_rest[2])["steps"]
    conn.close()
    assert "12 finished" in out


class LosesAFinishedResult(DaskExecutor):
    """The first time finished chunks are to be fetched, the worker holding the first one's
    result is killed and the test waits until the client has heard that the result is lost:
    the race of a worker dying between a chunk finishing and its result being fetched."""

    def __init__(self, cluster, **kw) -> None:
        super().__init__(cluster.scheduler_address, **kw)
        self.lc, self.killed = cluster, []

    def _gather(self, futures):
        if futures and not self.killed:
            fut = futures[0]
            holder = self.client.who_has([fut])[fut.key][0]
            pid = next(n.process.process.pid for n in self.lc.workers.values()
                       if n.worker_address == holder)
            os.kill(pid, signal.SIGKILL)
            self.killed.append(fut.key)
            deadline = time.monotonic() + 60
            while fut.status == "finished" and time.monotonic() < deadline:
                time.sleep(0.01)
            assert fut.status != "finished", "the client never heard of the lost result"
        return super()._gather(futures)


def test_result_lost_before_it_was_fetched_is_recomputed(tmp_path, cluster):
    raw = read_toml(write(tmp_path))
    raw["sweep"] = {"train.seed": [0, 1, 2, 3, 4, 5]}
    ex = LosesAFinishedResult(cluster, chunk=2)
    res = run_sweep(raw, tmp_path / "o", echo=None, executor=ex)
    assert ex.killed  # the race happened
    got = rows(tmp_path / "o" / "depthlab.db")
    assert res.count("finished") == 6 and len(got) == 6
    assert {r[1] for r in got} == {"finished"}, [r[4] for r in got]


def raising_compute(task):
    """Seed 1 raises in the worker every time; the others compute normally."""
    if task.config["train"]["seed"] == 1:
        raise RuntimeError(f"boom in point {task.name}")
    return compute_point(task)


@pytest.mark.parametrize("chunk", [None, 3])  # 3: a raising point shares its chunk
def test_point_that_raises_is_failed_with_its_message(tmp_path, cluster, chunk):
    raw = read_toml(write(tmp_path))
    raw["sweep"] = {"train.seed": [0, 1, 2], "model.sizes": [["auto", 8, "auto"],
                                                             [3, 8, "auto"]]}
    res = run_sweep(raw, tmp_path / "o", echo=None,
                    executor=DaskExecutor(cluster.scheduler_address, compute=raising_compute,
                                          chunk=chunk))
    got = {r[0]: r for r in rows(tmp_path / "o" / "depthlab.db")}
    assert len(got) == 6 and res.count("failed") == 4 and res.count("finished") == 2
    errors = sorted(r[4] for r in got.values() if r[1] == "failed")
    assert sum("RuntimeError: boom in point seed=1," in e for e in errors) == 2
    assert sum("model.sizes[0] = 3 but data set 'clusters' has 16" in e for e in errors) == 2


def dying_compute(task):
    """Seed 1 kills its worker process every time it is tried."""
    if task.config["train"]["seed"] == 1:
        os._exit(3)
    return compute_point(task)


def test_chunk_that_fails_in_every_try_stores_its_points_failed(tmp_path, fragile_cluster):
    raw = read_toml(write(tmp_path))
    raw["sweep"] = {"train.seed": [0, 1, 2, 3, 4, 5]}
    res = run_sweep(raw, tmp_path / "o", echo=None,  # chunks: seeds 0-2 (dies), seeds 3-5
                    executor=DaskExecutor(fragile_cluster.scheduler_address,
                                          compute=dying_compute, chunk=3,
                                          no_workers_timeout=NO_WORKERS_S))
    conn = sqlite3.connect(tmp_path / "o" / "depthlab.db")
    got = conn.execute("SELECT name, status, error FROM runs ORDER BY name").fetchall()
    conn.close()
    # the chunk that died is tried again one point per task: only seed 1 fails (round 15)
    assert res.count("failed") == 1 and res.count("finished") == 5
    assert [(n, st) for n, st, _ in got] == [(f"seed={i}", "failed" if i == 1 else "finished")
                                             for i in range(6)]
    assert all("KilledWorker" in e for _, st, e in got if st == "failed")


def test_chunk_size_follows_grid_workers_and_point_speed():
    ex = DaskExecutor("local:2")
    assert ex.chunk_size(400, 2) == 4  # no point timed yet: small first chunks
    ex._point_s = 0.01
    assert ex.chunk_size(400, 2) == 50  # 4 waves per worker thread
    assert ex.chunk_size(9, 2) == 2 and ex.chunk_size(1, 2) == 1  # shrinking at the end
    assert ex.chunk_size(10**6, 100) == 200  # at most 2 s of work per chunk
    ex._point_s = 30.0
    assert ex.chunk_size(10**6, 2) == 1
    ex._point_s = 1e-6
    assert ex.chunk_size(10**9, 2) == 256 and ex.chunk_size(None, 2) == 256
    assert DaskExecutor("local:2", chunk=7).chunk_size(400, 2) == 7
    with pytest.raises(ValueError, match="chunk must be a positive integer"):
        DaskExecutor("local:2", chunk=0)


def dies_once(marker: str, task):
    """The first point tried anywhere kills its worker process; every point then computes."""
    try:
        with open(marker, "x"):
            pass
    except FileExistsError:
        return compute_point(task)
    os._exit(3)


class Started(Executor):
    """An executor started (and closed) by the test, so the test can look at its cluster."""

    def __init__(self, inner: DaskExecutor) -> None:
        self.inner, self.description = inner, inner.description

    def expect(self, total):
        self.inner.expect(total)

    def run(self, tasks, done):
        self.inner.run(tasks, done)


PRELOADED = "__import__('sys').modules.get('depthlab.experiments.runner') is not None"


def test_local_cluster_forks_preloaded_workers_and_restarts_a_dead_one(tmp_path):
    raw = read_toml(write(tmp_path))
    marker = tmp_path / "died"
    with DaskExecutor("local:2", compute=functools.partial(dies_once, str(marker))) as ex:
        # forked from a fork server (their parent is not this process) that imported the
        # point runner before any point was sent
        parents = set(ex.client.run(os.getppid).values())
        assert len(parents) == 1 and os.getpid() not in parents
        assert all(ex.client.run(eval, PRELOADED).values())
        res = run_sweep(raw, tmp_path / "o", echo=None, executor=Started(ex))
        assert marker.exists() and res.count("finished") == 12 and res.ran == 12
        ex.client.wait_for_workers(2, timeout=60)  # the dead worker was replaced, forked too
        assert set(ex.client.run(os.getppid).values()) == parents
    conn = sqlite3.connect(tmp_path / "o" / "depthlab.db")
    assert conn.execute("SELECT COUNT(*), COUNT(DISTINCT id) FROM runs WHERE status = "
                        "'finished'").fetchone() == (12, 12)
    conn.close()


def test_client_killed_then_rerun_finishes(tmp_path, cluster):
    cfg = write(tmp_path, n=1500, epochs=8)
    db = tmp_path / "o" / "depthlab.db"
    proc = subprocess.Popen([sys.executable, "-m", "depthlab", "sweep", cfg, "--out",
                             tmp_path / "o", "--cluster", "local:2"], env=ENV,
                            start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while len(rows(db)) < 1:
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        children = psutil.Process(proc.pid).children(recursive=True)
        os.kill(proc.pid, signal.SIGKILL)  # the client alone
        proc.wait(timeout=30)
        deadline = time.monotonic() + 10
        while any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children):
            assert time.monotonic() < deadline, "the cluster's workers outlived the client"
            time.sleep(0.1)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    before = rows(db)
    assert 1 <= len(before) < 12 and {r[1] for r in before} == {"finished"}
    again = cli("sweep", cfg, "--out", tmp_path / "o", "--cluster", cluster.scheduler_address)
    assert again.returncode == 0, again.stderr
    assert f"skipped {len(before)} already stored" in again.stdout
    after = rows(db)
    assert len(after) == 12 and {r[1] for r in after} == {"finished"}
    old = {r[0]: r[2] for r in before}
    assert {r[0]: r[2] for r in after if r[0] in old} == old  # finished runs not redone


def test_unreachable_scheduler_is_one_line_exit_2(tmp_path):
    # timed from the grid's size line, said just before the scheduler is tried (imports
    # alone took 12 s on a busy host): a refused port is said at once, not after Dask's 10 s
    res = timed_cli("sweep", write(tmp_path), "--out", tmp_path / "o", "--cluster",
                    "tcp://127.0.0.1:1", mark="sweep ")
    assert res.after_mark is not None and res.after_mark < 8, res
    assert res.returncode == 2
    err = res.stderr.strip().splitlines()
    assert len(err) == 1 and "cannot reach the Dask scheduler at tcp://127.0.0.1:1" in err[0]
    assert not (tmp_path / "o" / "depthlab.db").exists() or not rows(tmp_path / "o" /
                                                                    "depthlab.db")


@pytest.mark.parametrize("value", ["local:0", "local:x", "tcp://host", "http://h:1"])
def test_bad_cluster_address(tmp_path, value):
    from depthlab.experiments.executors import ClusterError
    from depthlab.experiments.executors.dask import check_address

    with pytest.raises(ClusterError, match="accepted: local:N"):
        check_address(value)


def test_interrupt_does_not_wait_on_a_scheduler_that_does_not_answer():
    """After Ctrl-C the executor cancels its tasks on the scheduler; the client's ``cancel``
    has no time limit, so a scheduler that does not answer held the interrupted sweep (a
    flake seen once: a SIGINT'd local:2 sweep still running after 60 s). The cancel now gives
    up after its timeout."""
    import threading

    class Stuck:
        def __init__(self):
            self.calls = []
            self.release = threading.Event()
            self.answered = threading.Event()

        def cancel(self, futures, force=False):
            self.calls.append((len(futures), force))
            self.release.wait(30)  # a scheduler that does not answer (until the test ends)
            self.answered.set()

    ex = DaskExecutor("tcp://127.0.0.1:8786")
    ex.client = stuck = Stuck()
    try:
        ex._cancel([object(), object()], timeout=0.3)
        # back while the scheduler still has not answered (was: a wall-clock bound of 2 s,
        # which a loaded host can exceed without any wait on the scheduler)
        assert not stuck.answered.is_set()
        deadline = time.monotonic() + 60  # the cancel was sent (its thread may start late)
        while not stuck.calls and time.monotonic() < deadline:
            time.sleep(0.01)
        assert stuck.calls == [(2, True)]
    finally:
        stuck.release.set()
