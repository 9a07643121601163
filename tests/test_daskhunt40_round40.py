"""Round 40 (daskhunt40): Dask sweeps started for the points that are left.

A ``local:N`` cluster forked all N worker processes (each a Python with Dask, NumPy and the
runner: memory and seconds of start-up on a loaded machine) however few points were left to
compute: a resumed sweep with one point left, or a grid smaller than N, paid for all N.
"""

from __future__ import annotations

import sqlite3

import pytest

from depthlab.experiments import run_sweep
from depthlab.experiments.executors.dask import DaskExecutor

pytest.importorskip("distributed")


def _runs(out) -> int:
    with sqlite3.connect(out / "depthlab.db") as con:
        return con.execute("SELECT COUNT(DISTINCT id) FROM runs").fetchone()[0]


def test_a_local_cluster_starts_no_more_workers_than_points_are_left(tmp_path):
    raw = {"data": {"name": "digits", "n": 60}, "model": {"sizes": ["auto", 4, "auto"]},
           "train": {"max_steps": 1, "batch_size": 8}, "probes": {"every": 0},
           "sweep": {"train.seed": [0, 1, 2, 3]}}
    out = tmp_path / "out"
    run_sweep(raw, out, limit=3, echo=None)  # 3 of the 4 points stored, in this process
    assert _runs(out) == 3
    lines: list[str] = []
    ex = DaskExecutor("local:3")
    res = run_sweep(raw, out, executor=ex, echo=lines.append)
    assert res.skipped == 3 and res.count("finished") == 1
    assert _runs(out) == 4
    started = [line for line in lines if "running on" in line]
    assert started and "LocalCluster of 1 worker process(es)" in started[0], lines
    # the executor used again (a script's sweeps in turn) is local:3 again: the next sweep's
    # memory check counts 3 workers, and a sweep with more points left starts 3
    assert ex.local_workers == 3 and "3 worker process(es)" in ex.description
