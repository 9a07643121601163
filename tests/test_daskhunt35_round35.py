"""Round 35 (daskhunt35): sweeps that outgrow one machine's memory or one process.

A caller's Dask cluster whose workers live on this machine (a notebook's
``LocalCluster(processes=False)``, ``LocalCluster(n_workers=4)``) runs as many points at once as
its workers have threads, all in this machine's memory: those points must fit together, as
``--jobs N`` and ``--cluster local:N`` check before anything runs.
"""

from __future__ import annotations

import sqlite3

import pytest

from depthlab.experiments import run_sweep
from depthlab.experiments.grid import iter_points
from depthlab.experiments.runner import ExperimentError, memory_need

distributed = pytest.importorskip("distributed")


def _stored(out) -> int:
    db = out / "depthlab.db"
    if not db.exists():
        return 0
    with sqlite3.connect(db) as con:
        return con.execute("SELECT COUNT(*) FROM runs").fetchone()[0]


def _two_fit(monkeypatch) -> dict:
    """A grid of 4 points of which 2 fit in memory at once (DEPTHLAB_MEMORY_LIMIT 2.5 points)."""
    raw = {"data": {"name": "digits", "n": 60}, "model": {"sizes": ["auto", 600, "auto"]},
           "train": {"max_steps": 1, "batch_size": 8}, "probes": {"every": 0},
           "sweep": {"train.seed": [0, 1, 2, 3]}}
    need = memory_need(next(iter(iter_points(raw))).config)[0]
    monkeypatch.setenv("DEPTHLAB_MEMORY_LIMIT", str(int(2.5 * need)))
    return raw


def test_a_callers_threaded_cluster_is_refused_points_that_do_not_fit_at_once(
        tmp_path, monkeypatch):
    # one point fits, three at once do not: the cluster's 3 threads in this process would
    # hold three points' arrays at once (each point passed its own check alone)
    raw = _two_fit(monkeypatch)
    with distributed.LocalCluster(processes=False, n_workers=1, threads_per_worker=3,
                                  dashboard_address=None) as lc, distributed.Client(lc) as c:
        with pytest.raises(ExperimentError, match=r"3 points at once.*at most 2 of these "
                                                  r"points fit at once"):
            run_sweep(raw, tmp_path / "out", cluster=c, echo=None)
        assert not c.futures  # nothing was submitted
    assert _stored(tmp_path / "out") == 0


def test_a_schedulers_workers_on_this_machine_are_refused_points_that_do_not_fit_at_once(
        tmp_path, monkeypatch):
    # `dask scheduler` and `dask worker --nthreads 3` started on this machine, the sweep given
    # their scheduler's tcp:// address: the same three points at once in this machine's memory
    raw = _two_fit(monkeypatch)
    with distributed.LocalCluster(processes=False, n_workers=1, threads_per_worker=3,
                                  protocol="tcp", dashboard_address=None) as lc:
        assert lc.scheduler_address.startswith("tcp://")
        with pytest.raises(ExperimentError, match=r"3 points at once.*at most 2 of these "
                                                  r"points fit at once"):
            run_sweep(raw, tmp_path / "out", cluster=lc.scheduler_address, echo=None)
    assert _stored(tmp_path / "out") == 0


def test_the_sweep_summary_says_how_many_failed_points_it_does_not_list(tmp_path, capsys):
    # 22 refused combinations (betas with sgd) are stored failed: the summary said "22 failed"
    # and listed 20 of them, nothing telling the other 2 exist or where to find them
    import json

    from depthlab.cli import main

    cfg = tmp_path / "grid.json"
    cfg.write_text(json.dumps({
        "data": {"name": "digits", "n": 60}, "model": {"sizes": ["auto", 4, "auto"]},
        "train": {"max_steps": 1}, "probes": {"every": 0},
        "sweep": {"train.optimizer": ["sgd", "adam"], "train.betas": [[0.9, 0.99]],
                  "train.seed": list(range(22))}}))  # its first 22 points: sgd, refused
    assert main(["sweep", str(cfg), "--out", str(tmp_path / "out"), "--limit", "22"]) == 1
    out = capsys.readouterr().out
    summary = out[out.index("22 failed"):]
    assert summary.count("\n  failed ") == 20
    assert "and 2 more failed points" in summary
    assert "depthlab runs" in summary and "--status failed" in summary
