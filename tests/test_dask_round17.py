"""Round 17 (sweeps on Dask, the store, ``depthlab runs``): a demanding user's pass. Each test
failed before the fix it names. Clusters are tiny (``processes=False`` where the test allows)
and reached over loopback only."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.cli import one_blas_thread
from helpers.sweeps import TINY_GRID, tiny_grid

from depthlab.experiments import Store, expand, read_toml, run_sweep
from depthlab.experiments.executors import InProcess


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    one_blas_thread(monkeypatch)


def _raw(tmp_path: Path, grid: str = '"train.seed" = [0, 1, 2]') -> dict:
    return read_toml(tiny_grid(tmp_path, grid))


class Started(InProcess):
    """Computes in this process and counts its starts (a cluster's start-up)."""

    def __init__(self) -> None:
        super().__init__()
        self.starts = 0

    def start(self) -> None:
        self.starts += 1


# -- a sweep whose points are all stored starts no cluster ----------------------------------

def test_a_sweep_with_every_point_stored_starts_no_executor(tmp_path):
    raw = _raw(tmp_path)
    first = Started()
    res = run_sweep(raw, tmp_path / "out", executor=first, echo=None)
    assert first.starts == 1 and res.count("finished") == 3
    again = Started()  # the same sweep again: nothing to compute, no cluster to start
    lines: list[str] = []
    res = run_sweep(raw, tmp_path / "out", executor=again, echo=lines.append)
    assert again.starts == 0
    assert res.skipped == 3 and res.ran == 0
    assert not any("running on" in line for line in lines), lines
    with Store(tmp_path / "out", readonly=True) as store:  # still points of the sweep
        assert len(store.runs(sweep=res.sweep)) == 3


# -- a scheduler address with a port that cannot exist --------------------------------------

@pytest.mark.parametrize("address", ["tcp://127.0.0.1:99999", "tcp://127.0.0.1:0",
                                     "tcp://[::1]:65536"])
def test_a_port_outside_1_to_65535_is_refused_as_malformed_before_anything(tmp_path, address,
                                                                             capsys):
    """'tcp://127.0.0.1:99999' was taken as well formed: the grid's size was said, the store
    created, then 'cannot reach the Dask scheduler ...: Connection refused'."""
    from depthlab.cli import main
    from depthlab.experiments.executors import ClusterError
    from depthlab.experiments.executors.dask import check_address

    with pytest.raises(ClusterError, match=r"port .* 1\.\.65535"):
        check_address(address)
    path = tmp_path / "grid.toml"
    path.write_text(TINY_GRID.format(grid='"train.seed" = [0, 1]'))
    code = main(["sweep", str(path), "--out", str(tmp_path / "out"), "--cluster", address])
    out, err = capsys.readouterr()
    assert code == 2
    assert err.count("\n") == 1 and "65535" in err and address in err, err
    assert "points" not in out + err and not (tmp_path / "out").exists()


# -- a Client (or a cluster object) the user already has ------------------------------------

@pytest.fixture(scope="module")
def threads_cluster():
    """Two in-process workers (threads) and a client of the test's own."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, processes=False, threads_per_worker=1,
                                  dashboard_address=None, silence_logs=50) as lc:
        yield lc


def test_a_client_given_by_the_user_runs_the_sweep_and_is_left_open(tmp_path, threads_cluster):
    """A notebook's Client (e.g. of a dask-jobqueue SLURMCluster) was refused:
    'TypeError: cluster = <Client ...> has the wrong type', after the grid's size was said."""
    import distributed

    from depthlab.experiments.executors.dask import DaskExecutor

    with distributed.Client(threads_cluster, set_as_default=False) as client:
        raw = _raw(tmp_path)
        res = run_sweep(raw, tmp_path / "out", cluster=client, echo=None)
        assert res.count("finished") == 3
        assert client.status == "running"  # not closed by depthlab: still usable
        assert client.submit(sum, [1, 2], pure=False).result() == 3
        assert threads_cluster.status.name == "running"
        ref = run_sweep(raw, tmp_path / "ref", echo=None)  # the same numbers as in-process
        with Store(tmp_path / "out", readonly=True) as a, \
                Store(tmp_path / "ref", readonly=True) as b:
            ra = a.runs().set_index("id").sort_index()
            rb = b.runs().set_index("id").sort_index()
        assert list(ra.index) == list(rb.index) and ref.count("finished") == 3
        assert ra["train_loss"].tolist() == rb["train_loss"].tolist()
        ex = DaskExecutor(client)
        assert "Dask client" in ex.description
        with ex:
            pass
        assert client.status == "running"


def test_a_cluster_object_given_by_the_user_is_used_and_left_running(tmp_path,
                                                                       threads_cluster):
    res = run_sweep(_raw(tmp_path), tmp_path / "out", cluster=threads_cluster, echo=None)
    assert res.count("finished") == 3
    assert threads_cluster.status.name == "running"


def test_a_closed_client_is_one_line_before_the_store_is_touched(tmp_path, threads_cluster):
    import distributed

    from depthlab.experiments.executors import ClusterError

    client = distributed.Client(threads_cluster, set_as_default=False)
    client.close()
    with pytest.raises(ClusterError, match="the Dask client given is closed") as e:
        run_sweep(_raw(tmp_path), tmp_path / "out", cluster=client, echo=None)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "out").exists()


def test_something_else_is_still_a_type_error_naming_it():
    from depthlab.experiments.executors.dask import DaskExecutor

    with pytest.raises(TypeError, match=r"cluster address \[1\] has the wrong type; accepted: "
                       r"local:N .* a distributed\.Client"):
        DaskExecutor([1])


def test_an_interrupt_with_a_given_client_cancels_its_points_and_leaves_the_client_open(
        tmp_path, threads_cluster):
    import time

    import distributed

    from depthlab.experiments.executors import Task
    from depthlab.experiments.executors.dask import DaskExecutor

    def slow(task):
        time.sleep(0.2)
        from depthlab.experiments.executors import crash_record
        return crash_record(task, "not computed")

    tasks = [Task(f"p{i}", f"p{i}", {}, None) for i in range(40)]
    with distributed.Client(threads_cluster, set_as_default=False) as client:
        ex = DaskExecutor(client, compute=slow, chunk=1)
        seen = []

        def done(task, rec):
            seen.append(task.id)
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt), ex:
            ex.run(iter(tasks), done)
        assert seen and client.status == "running"
        # (a poll, not a promise: the scheduler forgets the cancelled tasks in its own time,
        # which a loaded host stretched past a few seconds)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and client.run_on_scheduler(
                lambda dask_scheduler: len(dask_scheduler.tasks)):
            time.sleep(0.05)
        assert client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)) == 0


# -- a data file that differs where the point is computed -----------------------------------

def test_a_data_file_that_differs_on_the_worker_fails_its_points_naming_it(tmp_path):
    """The run id holds the data file's content fingerprint taken by the sweep client; a
    worker reading another file at that path (a cluster machine with a stale copy, or the
    file edited mid-sweep) trained on it and stored the result under the id of the other
    content: a later sweep took it for that data's finished point."""
    import numpy as np

    from depthlab.experiments.executors import compute_point

    rng = np.random.default_rng(0)
    csv = tmp_path / "data.csv"

    def write_csv(shift: float) -> None:
        x = rng.normal(size=(40, 3)) + shift
        rows = ["a,b,c,label"] + [f"{r[0]},{r[1]},{r[2]},{int(r[0] > shift)}" for r in x]
        csv.write_text("\n".join(rows) + "\n")

    write_csv(0.0)
    (tmp_path / "grid.toml").write_text(
        '[data]\npath = "data.csv"\nlabel = "label"\n[model]\nsizes = ["auto", 4, "auto"]\n'
        '[train]\nmax_steps = 2\nbatch_size = 8\n[probes]\nevery = 1\nbatch = 5\n[sweep]\n'
        '"train.seed" = [0, 1]\n')
    raw = read_toml(tmp_path / "grid.toml")

    class OtherFileOnTheWorker(InProcess):
        def run(self, tasks, done):
            write_csv(5.0)  # the worker's copy differs (same path, other content)
            for task in tasks:
                done(task, compute_point(task))

    res = run_sweep(raw, tmp_path / "out", executor=OtherFileOnTheWorker(), echo=None,
                    base_dir=tmp_path)
    # both ids were taken before the worker read the other file (a grid of up to 2,000
    # points is listed first): neither is trained on it
    assert res.count("failed") == 2 and res.ran == 2
    now = {p.id for p in expand(raw, base_dir=tmp_path)}  # the ids of the file as it is now
    with Store(tmp_path / "out", readonly=True) as store:
        runs = store.runs().set_index("id")
    assert set(runs["status"]) == {"failed"} and not set(runs.index) & now
    error = runs["error"].iloc[0]
    assert error.startswith("DataChanged: ") and str(csv) in error and "\n" not in error
    # run again with the file as it is now: new ids, computed
    res = run_sweep(raw, tmp_path / "out", executor=InProcess(), echo=None, base_dir=tmp_path)
    assert res.count("finished") == 2 and res.skipped == 0


# -- depthlab runs: one sweep's runs, one status --------------------------------------------

def test_runs_lists_one_sweeps_points_and_one_status(tmp_path, capsys):
    """A store holding several sweeps listed all their runs mixed; there was no way to list
    one sweep's points (a sweep extended with more seeds holds its earlier ones too) or only
    the failed runs."""
    import json

    from depthlab.cli import main

    out = tmp_path / "out"
    first = run_sweep(_raw(tmp_path, '"train.seed" = [0, 1]'), out, echo=None)
    # an extended grid (its seeds 0, 1 found stored) with a refused combination: failed
    second = run_sweep(_raw(tmp_path, '"train.seed" = [0, 1, 2]\n'
                            '"model.batchnorm" = [false, true]\n"train.batch_size" = [8, 1]'),
                       out, echo=None)
    assert second.count("failed") == 3  # batch norm with batches of 1 row: refused
    assert main(["runs", str(out), "--json", "--sweep", first.sweep]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert sorted(r["name"] for r in listed) == ["seed=0", "seed=1"]
    assert main(["runs", str(out), "--json", "--sweep", second.sweep]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert len(listed) == 12 and {r["sweep"] for r in listed} == {first.sweep, second.sweep}
    assert main(["runs", str(out), "--json", "--sweep", second.sweep, "--status",
                 "failed"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert len(listed) == 3 and {r["status"] for r in listed} == {"failed"}
    assert main(["runs", str(out), "--status", "diverged"]) == 0
    assert capsys.readouterr().out.startswith("no diverged runs in ")
    # an unknown sweep id: one line naming it and the sweeps there, exit 2
    assert main(["runs", str(out), "--sweep", "sw-nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'sw-nope'" in err and first.sweep in err, err


def test_runs_table_says_why_a_run_failed(tmp_path, capsys):
    """The table showed 'failed' and dashes, no reason (only --json had the error): the
    first line of the error is its last column, cut to one short line."""
    from depthlab.cli import main

    out = tmp_path / "out"
    run_sweep(_raw(tmp_path, '"model.batchnorm" = [false, true]\n"train.batch_size" = [8, 1]'),
              out, echo=None)
    assert main(["runs", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[-1] == "error"
    failed = [line for line in lines if " failed " in line]
    assert len(failed) == 1 and "needs at least 2 rows per batch" in failed[0]
    assert len(failed[0]) < 250
    finished = [line for line in lines if " finished " in line]
    assert len(finished) == 3 and not any("needs" in line for line in finished)
    assert main(["runs", str(out), "--status", "finished"]) == 0  # no error: no column
    assert "error" not in capsys.readouterr().out.splitlines()[0]


# -- an unreachable scheduler leaves nothing behind ------------------------------------------

def test_an_unreachable_scheduler_creates_no_store(tmp_path, capsys):
    """'--cluster tcp://127.0.0.1:1' (nothing listening) failed in one line, exit 2, but only
    after the store was created: a mistyped address left an empty results folder behind."""
    from depthlab.cli import main
    from depthlab.experiments.executors import ClusterError

    path = tmp_path / "grid.toml"
    path.write_text(TINY_GRID.format(grid='"train.seed" = [0, 1]'))
    code = main(["sweep", str(path), "--out", str(tmp_path / "out"), "--cluster",
                 "tcp://127.0.0.1:1"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "cannot reach the Dask scheduler" in err
    assert not (tmp_path / "out").exists()
    with pytest.raises(ClusterError, match="cannot reach"):
        run_sweep(_raw(tmp_path), tmp_path / "api", cluster="tcp://127.0.0.1:1", echo=None)
    assert not (tmp_path / "api").exists()


def test_a_port_answering_another_protocol_is_said_without_an_allocation_error(tmp_path,
                                                                               capsys):
    """An HTTP port given as the scheduler: the one line read 'it did not answer as a Dask
    scheduler (MemoryError: Unable to allocate 3.07 EiB for an array with shape
    (3543824036068086856,) ...)', Dask's frame reader taking the answer for a length."""
    import socket
    import threading

    from depthlab.cli import main

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    stop = threading.Event()

    def serve() -> None:
        srv.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n" * 10)
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    address = f"tcp://127.0.0.1:{srv.getsockname()[1]}"
    path = tmp_path / "grid.toml"
    path.write_text(TINY_GRID.format(grid='"train.seed" = [0, 1]'))
    try:
        code = main(["sweep", str(path), "--out", str(tmp_path / "out"), "--cluster", address])
    finally:
        stop.set()
        thread.join(2)
        srv.close()
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "did not answer as a Dask scheduler" in err and "another protocol" in err, err
    assert "MemoryError" not in err and "allocate" not in err, err


# -- time left after the workers' warm-up ----------------------------------------------------

def test_time_left_follows_the_recent_rate_not_the_warm_up():
    """A 600-point sweep on local:2 said '~41 s left' at point 100 with 14 s to go (and '~67 s'
    at point 5, 21 s to go): the rate since the first result counted each worker's first
    points (imports, the data's first load) and Dask's first small chunks. The time left
    now takes the rate of the last quarter of the time since the first result (at least
    5 s; before that, since the first result)."""
    from depthlab.experiments.progress import SweepProgress

    now, lines = [0.0], []
    work = [(f"p{i}", 1.0) for i in range(40)]
    prog = SweepProgress(40, lines.append, clock=lambda: now[0], work=work)
    prog.started()
    for i in range(5):  # warm-up: 5 s a point
        now[0] += 5.0
        prog.point(f"p{i}", f"seed={i}", "finished", {}, None)
    for i in range(5, 25):  # then 0.5 s a point: 15 left take 7.5 s
        now[0] += 0.5
        prog.point(f"p{i}", f"seed={i}", "finished", {}, None)
    assert lines[-1].endswith("(0 failed, ~8 s left)"), lines[-1]  # was ~19 s
    assert prog.status().endswith("~8 s left"), prog.status()
    now[0] += 60.0  # nothing for a minute: the estimate stays defined (not a division by 0)
    assert "left" in prog.status()
    prog.point("p25", "seed=25", "failed", {}, "boom")  # no work computed since the base
    assert "left)" in lines[-1]


# -- a resumed sweep's chunks are sized from the points left, not the grid -------------------

def _fake_finished(task):
    import dataclasses

    from depthlab.experiments.executors import crash_record

    return dataclasses.replace(crash_record(task, "x"), status="finished", error=None)


def _slow_finished(task):
    import dataclasses
    import threading
    import time

    time.sleep(0.02)
    return dataclasses.replace(_fake_finished(task), error=threading.current_thread().name)


def test_a_resumed_sweep_spreads_its_points_left_over_the_workers(tmp_path, threads_cluster):
    """900 of 1000 points stored: the chunks were sized for 1000 points left, so the 100 left
    went to one worker in a chunk of up to 2 s of work (92 points on one worker, 8 on the
    other) while the other idled."""
    import collections

    import distributed

    from depthlab.experiments.executors.dask import DaskExecutor

    raw = _raw(tmp_path, '"train.seed" = ' + str(list(range(100))) +
               '\n"train.lr" = [0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.09, 0.1]')
    run_sweep(raw, tmp_path / "out", executor=InProcess(compute=_fake_finished), limit=900,
              echo=None)
    with distributed.Client(threads_cluster, set_as_default=False) as client:
        res = run_sweep(raw, tmp_path / "out", executor=DaskExecutor(client,
                                                                     compute=_slow_finished),
                        echo=None)
    assert res.skipped == 900 and res.count("finished") == 100
    with Store(tmp_path / "out", readonly=True) as store:
        runs = store.runs()
    by_thread = collections.Counter(e for e in runs["error"] if e)
    assert sum(by_thread.values()) == 100 and len(by_thread) == 2, by_thread
    assert min(by_thread.values()) >= 20, by_thread
