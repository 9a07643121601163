"""Round 28 (daskhard28): sweeps on the local pool and Dask, the store, hardening."""
from __future__ import annotations

import pytest


def _big_point(seeds=(0,)):
    # one point of about 250 MiB (parameters, gradients and activations, float64)
    return {"name": "big", "data": {"name": "clusters", "n": 100},
            "model": {"sizes": ["auto", 3500, 3500, "auto"], "activation": "tanh",
                      "dtype": "float64"},
            "train": {"lr": 0.01, "batch_size": 32, "epochs": 1, "max_steps": 1},
            "probes": {"every": 0},
            "sweep": {"train.seed": list(seeds)}}


def test_a_local_cluster_runs_a_point_that_fits_in_memory_as_the_local_pool_does(
        tmp_path, monkeypatch):
    # Dask's LocalCluster gives each of its N workers memory_limit="auto", the machine's
    # memory / N, and its nanny kills a worker above 95% of that: a point larger than that
    # share (a depth x width grid's largest point on local:8), which depthlab's own memory
    # check let through and `--jobs N` runs, was killed on every try and stored failed
    # with KilledWorker. Simulated with a machine of 300 MiB (the point needs ~250 MiB
    # beside the worker process).
    system = pytest.importorskip("distributed.system")

    from depthlab.experiments import Store, run_sweep

    monkeypatch.setattr(system, "MEMORY_LIMIT", 300 * 2**20)
    res = run_sweep(_big_point(), tmp_path / "out", cluster="local:1", echo=None)
    assert res.counts == {"finished": 1}, res.failures
    with Store(tmp_path / "out") as store:
        assert list(store.runs().status) == ["finished"]


_TINY = {"name": "tiny", "data": {"name": "clusters", "n": 120},
         "model": {"sizes": ["auto", 8, "auto"]},
         "train": {"lr": 0.05, "batch_size": 32, "epochs": 1},
         "probes": {"every": 0},
         "sweep": {"train.seed": [0, 1]}}


def test_a_run_stored_by_another_process_while_its_point_computes_is_kept(tmp_path):
    # `depthlab run --name mine` of a point's config (or a sweep of an overlapping grid)
    # stored the run while the sweep computed it: the sweep's commit replaced it silently
    # (the user's named run became a sweep point, its name and kind lost)
    import dataclasses

    from depthlab.experiments import Store, run_sweep
    from depthlab.experiments.executors import InProcess, compute_point

    out = tmp_path / "out"

    def compute(task):
        rec = compute_point(task)
        if task.name.endswith("seed=0"):  # meanwhile, another process stores it
            with Store(out) as other:
                other.add_run(dataclasses.replace(rec, name="mine", kind="run", sweep=None),
                              replace=False)
        return rec

    res = run_sweep(_TINY, out, executor=InProcess(compute), echo=None)
    assert res.counts == {"finished": 1} and res.skipped == 1
    with Store(out) as store:
        runs = store.runs().set_index("name")
        assert sorted(runs.index) == ["mine", "tiny:seed=1"]
        assert runs.loc["mine", "kind"] == "run"
        assert sorted(store.sweep_points()[res.sweep]) == sorted(runs.id)


def _boom(task):
    from depthlab.experiments.executors import compute_point

    if task.name.endswith("seed=1"):
        raise ValueError(f"boom in {task.name}")
    return compute_point(task)


def test_a_point_whose_compute_raises_in_this_process_is_failed_as_on_a_pool(tmp_path):
    # LocalPool and Dask store such a point failed with "ValueError: boom ..." and run the
    # others; InProcess (jobs=1) let the exception end the whole sweep
    from depthlab.experiments import Store, run_sweep
    from depthlab.experiments.executors import InProcess

    raw = {**_TINY, "sweep": {"train.seed": [0, 1, 2]}}
    res = run_sweep(raw, tmp_path / "out", executor=InProcess(_boom), echo=None)
    assert res.counts == {"finished": 2, "failed": 1}
    assert [f[2] for f in res.failures] == ["ValueError: boom in tiny:seed=1"]
    with Store(tmp_path / "out") as store:
        runs = store.runs().set_index("name")
        assert runs.loc["tiny:seed=1", "error"] == "ValueError: boom in tiny:seed=1"


@pytest.mark.parametrize("readonly", [False, True])
def test_a_store_path_that_is_a_pipe_or_a_device_is_named_as_such(tmp_path, readonly):
    # SQLite said "disk I/O error" (a FIFO, a link to /dev/null) and the read-only open
    # "no results store at ..." where a pipe was
    import os

    from depthlab.experiments.store import Store, StoreError

    fifo = tmp_path / "fifo.db"
    os.mkfifo(fifo)
    device = tmp_path / "null.db"
    device.symlink_to(os.devnull)
    for path, kind in ((fifo, "a named pipe (FIFO)"), (device, "a device")):
        with pytest.raises(StoreError) as e:
            Store(path, readonly=readonly)
        assert f"it is {kind}, not a database file" in str(e.value)
        assert "\n" not in str(e.value)


def test_a_sweep_into_a_pipe_says_so_in_one_line(tmp_path, capsys):
    import os

    from tests.helpers.cli import assert_one_line_error, run_cli

    os.mkfifo(tmp_path / "fifo.db")
    config = tmp_path / "grid.toml"
    config.write_text('[data]\nname = "clusters"\nn = 120\n[model]\nsizes = ["auto", 8, "auto"]'
                      '\n[train]\nepochs = 1\n[sweep]\n"train.seed" = [0, 1]\n')
    code, _, err = run_cli(capsys, "sweep", config, "--out", tmp_path / "fifo.db")
    assert_one_line_error(code, err, "it is a named pipe (FIFO), not a database file")


class _Hung(BaseException):
    """Not an Exception: nothing of the sweep's may swallow it."""


def test_an_interrupted_sweep_does_not_wait_for_another_process_lock(tmp_path):
    # after Ctrl-C the sweep records the stored points it found as its own; with another
    # process holding the store's lock (a sweep committing, an open sqlite3 session) it
    # waited for it up to the store's 120 s timeout, saying "waiting ... Ctrl-C stops"
    import signal
    import sqlite3

    from depthlab.experiments import Store, run_sweep
    from depthlab.experiments.executors import InProcess
    from depthlab.experiments.sweep import SweepInterrupted

    out = tmp_path / "out"
    raw = {**_TINY, "sweep": {"train.seed": [0, 1, 2]}}
    run_sweep(raw, out, limit=1, echo=None)  # seed 0 stored: found by the next sweep
    other = sqlite3.connect(out / "depthlab.db", isolation_level=None)

    def compute(task):  # Ctrl-C while another process holds the lock
        other.execute("BEGIN IMMEDIATE")
        raise KeyboardInterrupt

    def hung(*_):
        raise _Hung("the interrupted sweep still waited for the lock after 20 s")

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(20)
    try:
        with pytest.raises(SweepInterrupted):
            run_sweep(raw, out, executor=InProcess(compute), echo=None)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
        other.execute("ROLLBACK")
        other.close()
    with Store(out) as store:
        assert list(store.runs().status) == ["finished"]


def test_numpy_grid_values_are_named_as_their_python_values():
    # np.float32(0.1) trains with lr 0.10000000149011612 (its own run id) but its point was
    # named "lr=0.1", the name of the point of 0.1; an array of sizes read "[5 8 4]"
    import numpy as np

    from depthlab.experiments.sweep import iter_points

    raw = {**_TINY, "sweep": {"train.lr": [0.1, np.float32(0.1)],
                              "model.sizes": [np.array([64, 8, 4]), [64, 8, 4]]}}
    points = list(iter_points(raw))
    names = [p.name.split(":", 1)[1] for p in points]
    assert names[0] == "lr=0.1,sizes=[64,8,4]"
    assert names[2] == "lr=0.10000000149011612,sizes=[64,8,4]"
    assert names[1] == names[0] and points[1].id == points[0].id  # the same point twice
    assert points[2].config["train"]["lr"] == float(np.float32(0.1))
    assert len({p.id for p in points}) == 2


def test_jobs_follow_one_rule_with_or_without_a_cluster():
    # jobs=True alone was refused (wrong type) but beside a cluster it was taken for 1
    # (True == 1) and the cluster started; a NumPy integer was refused where limit takes one
    import numpy as np

    from depthlab.experiments.executors import InProcess, LocalPool, make_executor

    for cluster in (None, "local:2"):
        with pytest.raises(TypeError, match="jobs = True has the wrong type"):
            make_executor(True, cluster)
    pool = make_executor(np.int64(2))
    assert isinstance(pool, LocalPool) and pool.workers == 2 and type(pool.workers) is int
    assert isinstance(make_executor(np.int32(1)), InProcess)


def test_a_point_beyond_a_dask_workers_memory_limit_is_refused_not_killed(tmp_path):
    # a worker started with a memory limit (dask worker --memory-limit, dask-jobqueue's
    # memory=) is restarted by its nanny above 95% of it: such a point was killed in each of
    # 4 tries and stored failed "KilledWorker: Attempted to run task ..."; the others ran
    pytest.importorskip("distributed")
    from distributed import Client, LocalCluster

    from depthlab.experiments import Store, run_sweep

    raw = _big_point()
    raw["sweep"] = {"model.sizes": [["auto", 3500, 3500, "auto"], ["auto", 8, "auto"]]}
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, memory_limit="300MiB",
                      dashboard_address=None) as cluster, \
            Client(cluster, set_as_default=False) as client:
        res = run_sweep(raw, tmp_path / "out", cluster=client, echo=None)
    assert res.counts == {"failed": 1, "finished": 1}, res.failures
    with Store(tmp_path / "out") as store:
        runs = store.runs()
    error = runs.loc[runs.status == "failed", "error"].iloc[0]
    assert error.startswith("MemoryRefusal: model.sizes = [64, 3500, 3500, 10]"), error
    assert "memory limit of 300 MiB" in error and "\n" not in error


def test_a_local_cluster_from_a_script_read_from_stdin_is_one_line_before_any_store(
        tmp_path, monkeypatch):
    # `python - <<EOF` calling run_sweep(cluster="local:2"): every worker process failed to
    # start (it imports __main__ again from '<stdin>', FileNotFoundError), "RuntimeError:
    # Nanny failed to start." after ~7 s with the workers' tracebacks
    import sys

    pytest.importorskip("distributed")
    from depthlab.experiments import run_sweep
    from depthlab.experiments.executors.base import ClusterError

    main = sys.modules["__main__"]
    monkeypatch.setattr(main, "__spec__", None, raising=False)
    monkeypatch.setattr(main, "__file__", "<stdin>", raising=False)
    with pytest.raises(ClusterError, match=r"from '<stdin>', which is not a file .* or use "
                                           r"jobs=N"):
        run_sweep(_TINY, tmp_path / "out", cluster="local:2", echo=None)
    assert not (tmp_path / "out").exists()
    monkeypatch.setattr(main, "__file__", __file__)  # a script file: accepted
    from depthlab.experiments.executors.dask import DaskExecutor

    DaskExecutor("local:2").check()
