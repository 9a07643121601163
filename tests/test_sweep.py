"""Sweeps: grid expansion, parallel runs, SIGKILL-and-resume, diverged and failed points."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from helpers.cli import ENV, ISSUE_EXAMPLE, cli, one_blas_thread, run_cli

from depthlab.experiments.config import ConfigError, read_toml, run_id
from depthlab.experiments.sweep import expand


def rows(db) -> list[tuple]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT id, status, kind, sweep, created, error, metrics FROM runs "
                            "ORDER BY id").fetchall()
    finally:
        conn.close()


def test_expand_issue_example(tmp_path):
    path = tmp_path / "ex.toml"
    path.write_text(ISSUE_EXAMPLE)
    points = expand(read_toml(path))
    assert [p.name for p in points] == ["activation=tanh,seed=0", "activation=tanh,seed=1",
                                        "activation=relu,seed=0", "activation=relu,seed=1"]
    assert len({p.id for p in points}) == 4
    for p in points:
        assert "sweep" not in p.config
        assert p.config["model"]["activation"] == p.overrides["model.activation"]
        assert p.config["train"]["seed"] == p.overrides["train.seed"]
        assert p.id == run_id(p.config)
    # stable ids: expanding again gives the same ids (resume relies on it)
    assert [p.id for p in expand(read_toml(path))] == [p.id for p in points]


def test_expand_depth_and_direct_keys():
    raw = {"data": {"name": "digits"},
           "model": {"sizes": [64, 32, 10], "activation": "relu"},
           "train": {"optimizer": "sgd"},
           "sweep": {"model.depth": [1, 3], "train.momentum": [0.0, 0.9],
                     "model.batchnorm": [False]}}
    points = expand(raw)
    assert len(points) == 4
    sizes = {p.overrides["model.depth"]: p.config["model"]["sizes"] for p in points}
    assert sizes == {1: [64, 32, 10], 3: [64, 32, 32, 32, 10]}
    assert {p.config["train"]["optimizer_kwargs"]["momentum"] for p in points} == {0.0, 0.9}
    assert "depth=3" in points[-1].name and "momentum=0.9" in points[-1].name
    wide = expand({**raw, "sweep": {"model.depth": [2], "model.width": [16]}})
    assert wide[0].config["model"]["sizes"] == [64, 16, 16, 10]


def test_expand_rejects_bad_point_before_running():
    raw = {"data": {"name": "digits"}, "model": {"sizes": [64, 10]},
           "sweep": {"train.lr": [0.1, -1.0]}}
    with pytest.raises(ConfigError, match=r"sweep point \(train.lr = -1\): train.lr = -1.0 is "
                                          r"out of range"):
        expand(raw)
    with pytest.raises(ConfigError, match="did you mean"):
        expand({**raw, "sweep": {"train.l": [0.1]}})


SWEEP = """\
[data]
name = "clusters"
n = {n}
options = {{d = 16, n_classes = 4}}
[model]
sizes = {sizes}
activation = "relu"
init = "he_normal"
[train]
lr = 0.05
batch_size = {batch}
epochs = {epochs}
[probes]
every = {every}
[sweep]
{grid}
"""


def write(tmp_path, grid, n=300, epochs=1, batch=16, every=0,
          sizes='["auto", 8, "auto"]') -> str:
    path = tmp_path / "sweep.toml"
    path.write_text(SWEEP.format(n=n, epochs=epochs, batch=batch, every=every, grid=grid,
                                 sizes=sizes))
    return str(path)


def test_parallel_sweep_with_diverged_and_failed_points(tmp_path):
    cfg = write(tmp_path, '"train.lr" = [0.05, 1e9]\n'
                          '"model.sizes" = [["auto", 8, "auto"], [3, 8, "auto"]]\n', every=5)
    res = cli("sweep", cfg, "--out", tmp_path / "o", "--jobs", "2")
    assert res.returncode == 1, res.stderr  # failed points -> status 1, but the sweep went on
    assert "Traceback" not in res.stderr
    got = rows(tmp_path / "o" / "depthlab.db")
    assert len(got) == 4
    assert len({r[3] for r in got}) == 1 and got[0][3] is not None  # one sweep id
    assert {r[2] for r in got} == {"sweep-point"}
    by_status: dict[str, list] = {}
    for r in got:
        by_status.setdefault(r[1], []).append(r)
    assert len(by_status["finished"]) == 1 and len(by_status["diverged"]) == 1
    assert len(by_status["failed"]) == 2
    for r in by_status["failed"]:
        assert "model.sizes[0] = 3" in r[5]
    conn = sqlite3.connect(tmp_path / "o" / "depthlab.db")
    fin = by_status["finished"][0][0]
    assert conn.execute("SELECT COUNT(*) FROM probes WHERE run_id = ?", (fin,)).fetchone()[0]
    div = conn.execute("SELECT divergence FROM runs WHERE status = 'diverged'").fetchone()[0]
    assert json.loads(div)["step"] >= 1
    conn.close()
    # running again skips the finished and diverged points, retries the failed ones
    again = cli("sweep", cfg, "--out", tmp_path / "o", "--jobs", "2")
    assert "skipped 2" in again.stdout
    got2 = rows(tmp_path / "o" / "depthlab.db")
    kept = {r[0]: r[4] for r in got if r[1] != "failed"}
    assert {r[0]: r[4] for r in got2 if r[0] in kept} == kept  # not rewritten


def _count_done(db) -> int:
    if not os.path.exists(db):
        return 0
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            return conn.execute("SELECT COUNT(*) FROM runs WHERE status = 'finished'"
                                ).fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error:
        return 0


def test_sigkill_and_resume(tmp_path):
    # 8 points of ~0.2 s each; kill the whole process group once one is stored
    cfg = write(tmp_path, '"train.seed" = [0, 1, 2, 3, 4, 5, 6, 7]\n', n=4000, epochs=3,
                batch=4, sizes='["auto", 64, 64, 64, "auto"]')
    db = tmp_path / "o" / "depthlab.db"
    proc = subprocess.Popen([sys.executable, "-m", "depthlab", "sweep", cfg, "--out",
                             tmp_path / "o", "--jobs", "2"], env=ENV, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    try:
        while _count_done(db) < 1:
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no point finished in time"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    before = rows(db)
    assert 1 <= len(before) < 8, "the sweep should have been killed part-way"
    for rid, status, *_rest, metrics in before:
        assert status == "finished"
        n_steps = conn.execute("SELECT COUNT(*) FROM steps WHERE run_id = ?",
                               (rid,)).fetchone()[0]
        assert n_steps == json.loads(metrics)["steps"] > 0  # every stored run is whole
    conn.close()

    res = cli("sweep", cfg, "--out", tmp_path / "o", "--jobs", "2")
    assert res.returncode == 0, res.stderr
    assert f"skipped {len(before)}" in res.stdout
    after = rows(db)
    assert len(after) == 8 and {r[1] for r in after} == {"finished"}
    old = {r[0]: r[4] for r in before}
    assert {r[0]: r[4] for r in after if r[0] in old} == old  # earlier points not rerun
    conn = sqlite3.connect(db)
    for rid, *_rest, metrics in after:  # no duplicated child rows
        n_steps = conn.execute("SELECT COUNT(*) FROM steps WHERE run_id = ?",
                               (rid,)).fetchone()[0]
        assert n_steps == json.loads(metrics)["steps"]
    conn.close()


# -- large grids: size first, lazy expansion, the 100,000-point guard ----------------------

BIG = {"data": {"name": "clusters", "n": 200, "options": {"d": 8, "n_classes": 2}},
       "model": {"sizes": ["auto", 4, "auto"]}, "train": {"lr": 0.05, "epochs": 1},
       "probes": {"every": 0}}


def test_grid_size_and_lazy_points():
    import itertools
    import tracemalloc

    from depthlab.experiments.grid import grid_shape, grid_size, iter_points

    grid = {"train.seed": list(range(1000)), "train.lr": [0.01 * (i + 1) for i in range(100)],
            "model.width": [4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048]}
    raw = {**BIG, "sweep": grid}
    assert grid_size(grid) == 1_000_000 and grid_size({}) == 1
    assert grid_shape(grid) == "train.seed 1000 × train.lr 100 × model.width 10"
    first = list(itertools.islice(iter_points(raw), 3))
    assert [p.overrides for p in first] == [
        {"train.seed": 0, "train.lr": 0.01, "model.width": w} for w in (4, 8, 16)]
    import gc

    # The peak counts garbage too: the points' validation leaves reference cycles that wait
    # for a collection, so the peak depended on where the collector's counters stood when
    # tracing started (7.7 MB once, after test_dask_round17, test_newuser_round15 and
    # test_report_progress in one pytest). A collection every 20 points leaves what is kept;
    # the least of three tries leaves out another thread's allocations (tracemalloc counts
    # every thread's). gc.freeze() sets the suite's earlier objects aside, so that each
    # collection scans only this test's (a full collection over the whole suite's heap took
    # most of this test's 23 s in CI).
    peaks = []
    gc.collect()
    gc.freeze()
    try:
        for _ in range(3):
            gc.collect()
            tracemalloc.start()
            try:
                n = 0
                for _ in iter_points(raw, limit=200, check=False):
                    n += 1
                    if n % 20 == 0:
                        gc.collect()
                peaks.append(tracemalloc.get_traced_memory()[1])
            finally:
                tracemalloc.stop()
            assert n == 200
    finally:
        gc.unfreeze()
    peak = min(peaks)
    assert peak < 300_000, f"{peak} bytes: points are kept, not streamed"  # a list: ~800 kB
    # a bad value at the very end of a 10^6-point grid fails before the first point
    bad = {**raw, "sweep": {**grid, "model.width": [4, 0]}}
    with pytest.raises(ConfigError, match=r"sweep point \(model.width = 0\)"):
        next(iter_points(bad))


def test_cli_guards_grids_above_100000_points(tmp_path, capsys, monkeypatch):
    path = tmp_path / "big.toml"
    path.write_text(SWEEP.format(n=200, epochs=1, batch=16, every=0, sizes='["auto", 4, "auto"]',
                                 grid=f'"train.seed" = {list(range(1010))}\n'
                                      f'"train.lr" = {[0.01 * (i + 1) for i in range(100)]}\n'))
    one_blas_thread(monkeypatch)
    code, _, err = run_cli(capsys, "sweep", path, "--out", tmp_path / "o")  # (in this process)
    assert code == 2
    assert "the grid has 101,000 points" in err and "--limit" in err
    assert not (tmp_path / "o").exists()  # refused before anything ran
    ok = cli("sweep", path, "--out", tmp_path / "o", "--limit", "2", "--jobs", "2", "--json")
    assert ok.returncode == 0, ok.stderr
    said = [line for line in ok.stderr.splitlines()  # a loaded host may add a waiting line
            if not line.startswith("sweep: reading its data")]
    assert said[0].endswith(  # --limit 2: the first of the grid's points
        "2 points (the first 2 of the grid's 101,000: train.seed 1010 × train.lr 100)")
    summary = json.loads(ok.stdout)  # --json: the summary alone on stdout
    assert summary["points"] == 2 and summary["counts"] == {"finished": 2}
    assert [r[1] for r in rows(tmp_path / "o" / "depthlab.db")] == ["finished"] * 2


def test_cli_sweep_option_errors(tmp_path, capsys):
    from depthlab.cli import main

    path = write(tmp_path, '"train.seed" = [0, 1]\n')
    for bad, msg in ((["--limit", "0"], "--limit 0"), (["--jobs", "2", "--cluster", "local:2"],
                                                       "--jobs and --cluster"),
                     (["--cluster", "local:0"], "--cluster 'local:0' is not accepted")):
        assert main(["sweep", path, "--out", str(tmp_path / "o"), *bad]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and msg in err[0]


def suicidal(task):
    """Seed 1 kills its own worker process every time; the others compute normally."""
    from depthlab.experiments.executors import compute_point

    if task.config["train"]["seed"] == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return compute_point(task)


def test_local_pool_reruns_a_dead_workers_point_then_fails_it(tmp_path):
    from depthlab.experiments import run_sweep
    from depthlab.experiments.executors import LocalPool

    raw = {**BIG, "sweep": {"train.seed": [0, 1, 2]}}
    env = {**ENV, "PYTHONPATH": os.path.dirname(__file__)}
    res = run_sweep(raw, tmp_path / "o", echo=None,
                    executor=LocalPool(2, retries=1, compute=suicidal, env=env))
    assert res.count("finished") == 2 and res.count("failed") == 1
    got = rows(tmp_path / "o" / "depthlab.db")
    failed = [r for r in got if r[1] == "failed"]
    assert len(got) == 3 and len(failed) == 1
    assert "worker process died (killed by SIGKILL) in each of 2 tries" in failed[0][5]


def test_progress_lines_count_failures_and_time_left():
    from depthlab.experiments.progress import PER_POINT_LINES, STATUS_EVERY, SweepProgress

    now = [0.0]
    lines: list[str] = []
    prog = SweepProgress(4, lines.append, clock=lambda: now[0])
    prog.skip()
    prog.started()
    now[0] = 10.0
    prog.point("a1", "seed=1", "finished", {"train_loss": 0.5}, None)
    now[0] = 20.0
    prog.point("a2", "seed=2", "failed", {}, "ValueError: bad\ntraceback line")
    assert lines[0] == "[2/4] a1 seed=1: finished train_loss=0.5 (0 failed, ~20 s left)"
    assert lines[1] == "[3/4] a2 seed=2: failed error: ValueError: bad (1 failed, ~10 s left)"
    assert prog.status() == "3/4 points done, 1 failed, 1 skipped, ~10 s left"
    # large grids: finished points only in a status line every STATUS_EVERY seconds
    big: list[str] = []
    prog = SweepProgress(PER_POINT_LINES + 1, big.append, clock=lambda: now[0])
    prog.started()
    for i in range(5):
        now[0] += STATUS_EVERY / 2
        prog.point(f"b{i}", "x", "finished", {}, None)
    prog.point("bad", "y", "diverged", {}, None)
    assert len(big) == 3 and big[0].startswith("2/1001 points done, 0 failed")
    assert big[-1].startswith("[6/1001] bad y: diverged")


def test_dask_is_optional(tmp_path, monkeypatch):
    from depthlab.experiments.executors import ClusterError
    from depthlab.experiments.executors.dask import DaskExecutor

    # without --cluster, a sweep never imports Dask
    cfg = write(tmp_path, '"train.seed" = [0, 1]\n', n=100)
    code = ("import sys; from depthlab.cli import main; "
            f"rc = main(['sweep', {cfg!r}, '--out', {str(tmp_path / 'o')!r}, '-q']); "
            "print(rc, sorted(m for m in sys.modules if m.split('.')[0] in "
            "('dask', 'distributed')))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV,
                         timeout=180)
    assert res.stdout.split() == ["0", "[]"], res.stderr
    # with --cluster but without Dask installed: one line saying what to install
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(ClusterError, match=r"pip install 'depthlab\[cluster\]'"):
        DaskExecutor("local:1").start()


def test_a_record_delivered_twice_is_committed_once(tmp_path):
    """A re-run batch of points (a Dask chunk whose worker died) may deliver a run again: the
    client commits it once and counts it once."""
    from depthlab.experiments.executors import InProcess
    from depthlab.experiments.sweep import run_points

    class Twice(InProcess):
        def run(self, tasks, done):
            for task in tasks:
                rec = self.compute(task)
                done(task, rec)
                done(task, rec)

    raw = read_toml_text(tmp_path, 'data = {name = "clusters", n = 60}\n'
                         'model = {sizes = ["auto", 4, "auto"]}\n'
                         'train = {epochs = 1, batch_size = 32}\nprobes = {every = 0}\n'
                         '[sweep]\n"train.seed" = [0, 1]\n')
    from depthlab.experiments.grid import iter_points

    res = run_points(iter_points(raw), tmp_path / "o", sweep="s", executor=Twice(), echo=None)
    assert res.counts == {"finished": 2}
    conn = sqlite3.connect(tmp_path / "o" / "depthlab.db")
    ids = [r[0] for r in conn.execute("SELECT id FROM runs")]
    steps = conn.execute("SELECT COUNT(*) FROM steps").fetchone()[0]
    conn.close()
    assert len(ids) == 2 and steps == 2 * 2  # 60 rows, 80% train, batch 32: 2 steps each


def read_toml_text(tmp_path, text: str) -> dict:
    path = tmp_path / "grid.toml"
    path.write_text(text)
    return read_toml(str(path))
