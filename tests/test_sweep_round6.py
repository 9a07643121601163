"""Adversarial tests of sweeps, the store and reports over stores, round 6: worker counts from
the Python API refused before a process starts, argument types, a store written by a later
version (more columns), grids that overlap across sweeps and what the report then shows. Each
test failed before the fix it names."""

from __future__ import annotations

import math
import re
import sqlite3
from pathlib import Path

import pytest
from helpers.cli import assert_one_line_error, one_blas_thread, run_cli

from depthlab.equality import same
from depthlab.experiments import ConfigError, Store, read_toml, run_sweep
from depthlab.experiments.executors import InProcess, LocalPool, make_executor
from depthlab.experiments.executors.base import compute_point
from depthlab.experiments.store import StoreWriteError
from depthlab.experiments.sweep import SweepInterrupted
from depthlab.memory import MemoryRefusal
from depthlab.report import write_report

SWEEP = """\
name = "r6"
[data]
name = "spirals"
n = 60
[model]
sizes = ["auto", 4, "auto"]
[train]
max_steps = 2
batch_size = 8
[probes]
every = 1
batch = 5
[sweep]
{grid}
"""


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    one_blas_thread(monkeypatch)


def _raw(tmp_path: Path, grid: str) -> dict:
    path = tmp_path / "sweep.toml"
    path.write_text(SWEEP.format(grid=grid))
    return read_toml(path)


class Counting(InProcess):
    """Computes in this process and counts the points it computed."""

    def __init__(self) -> None:
        super().__init__()
        self.computed: list[str] = []

    def run(self, tasks, done):
        for task in tasks:
            self.computed.append(task.id)
            done(task, compute_point(task))


# -- fixed: the memory check of worker processes was only in the CLI: run_sweep(jobs=10**6) or
# cluster="local:100000" from Python started processes until the machine ran out of memory
def test_worker_processes_that_cannot_fit_are_refused_from_the_api(tmp_path, monkeypatch):
    monkeypatch.setenv("DEPTHLAB_MEMORY_LIMIT", "1G")  # about 10 workers of 100 MiB
    with pytest.raises(MemoryRefusal, match="jobs = 64 .*64 worker processes"):
        make_executor(64)
    with pytest.raises(MemoryRefusal, match="local:64"):
        make_executor(cluster="local:64")
    with pytest.raises(MemoryRefusal, match="jobs = 1,000,000|1,000,000 worker"):
        LocalPool(10**6)
    raw = _raw(tmp_path, '"train.seed" = [0, 1]')
    with pytest.raises(MemoryRefusal):
        run_sweep(raw, tmp_path / "out", jobs=10**6, echo=None)
    assert not (tmp_path / "out").exists()  # nothing written
    assert isinstance(make_executor(2), LocalPool)  # what fits is accepted


# -- fixed: jobs="2" (a wrong type) was a ValueError
@pytest.mark.parametrize("jobs", ["2", 2.0, True, None])
def test_jobs_of_the_wrong_type_is_a_type_error_naming_it(jobs):
    with pytest.raises(TypeError, match=f"jobs = {jobs!r} has the wrong type"):
        make_executor(jobs)


# -- fixed: an unknown kind was found when the first point was committed (after computing it,
# the store created)
def test_an_unknown_kind_is_refused_before_the_store_is_touched(tmp_path):
    raw = _raw(tmp_path, '"train.seed" = [0, 1]')
    ex = Counting()
    with pytest.raises(ValueError, match="kind = 'bogus' is not a run kind"):
        run_sweep(raw, tmp_path / "out", executor=ex, echo=None, kind="bogus")
    assert ex.computed == [] and not (tmp_path / "out").exists()


# -- fixed: a store whose tables have more columns (a later depthlab's) took the write check,
# then refused every computed point ("table steps has 4 columns but 3 values were supplied")
def test_a_store_with_more_columns_takes_runs_or_refuses_before_computing(tmp_path):
    raw = _raw(tmp_path, '"train.seed" = [0, 1, 2]')
    out = tmp_path / "out"
    run_sweep(raw, out, limit=1, echo=None)
    db = out / "depthlab.db"
    with sqlite3.connect(db) as conn:  # nullable new columns: depthlab's rows fit
        for table in ("runs", "steps", "probes", "histograms", "epochs", "findings"):
            conn.execute(f"ALTER TABLE {table} ADD COLUMN later_version TEXT")
    res = run_sweep(raw, out, echo=None)
    assert res.counts == {"finished": 2} and res.skipped == 1
    with Store(out, create=False) as s:
        assert len(s.runs()) == 3 and all(len(s.probes(r)) for r in s.runs()["id"])
    with sqlite3.connect(db) as conn:  # a new column depthlab cannot fill: refused up front
        conn.execute("ALTER TABLE jacobian ADD COLUMN unit TEXT NOT NULL DEFAULT 'x'")
        conn.execute("CREATE TABLE j2 AS SELECT * FROM jacobian")
        conn.execute("DROP TABLE jacobian")
        conn.execute("CREATE TABLE jacobian (run_id TEXT NOT NULL, step INTEGER, example "
                     "INTEGER, idx INTEGER, value REAL, unit TEXT NOT NULL)")
    ex = Counting()
    raw4 = _raw(tmp_path, '"train.seed" = [3]')
    with pytest.raises(StoreWriteError, match="not writable: NOT NULL constraint failed: "
                       "jacobian.unit"):
        run_sweep(raw4, out, executor=ex, echo=None)
    assert ex.computed == []
    with Store(out, create=False) as s:
        assert len(s.runs()) == 3


# -- fixed: a sweep skipped the points an earlier sweep of an overlapping grid had stored (an
# extended grid: more seeds) and they stayed that sweep's alone: Store.runs(sweep=...) and the
# report's section of the extended sweep showed only the points it computed itself
def test_an_extended_grid_holds_its_earlier_points_in_the_store_and_the_report(tmp_path):
    out = tmp_path / "out"
    no_probes = '\n"probes.every" = [0]'  # fewer figures to draw: a faster report
    a = run_sweep(_raw(tmp_path, '"train.seed" = [0, 1]' + no_probes), out, echo=None)
    ex = Counting()
    b = run_sweep(_raw(tmp_path, '"train.seed" = [0, 1, 2]' + no_probes), out, executor=ex,
                  echo=None)
    assert a.sweep != b.sweep and len(ex.computed) == 1 and b.skipped == 2  # none run twice
    with Store(out, create=False, readonly=True) as s:
        assert len(s.runs()) == 3
        assert len(s.runs(sweep=a.sweep)) == 2 and len(s.runs(sweep=b.sweep)) == 3
        assert {k: len(v) for k, v in s.sweep_points().items()} == {a.sweep: 2, b.sweep: 3}
    html = write_report(out, max_runs=2).read_text(encoding="utf-8")
    assert html.count("3 runs (3 finished)") == 1 and html.count("2 runs (2 finished)") == 1
    anchors = re.findall(r'<details class="run" id="(run-[^"]*)"', html)
    assert len(anchors) == len(set(anchors)) == 3  # a run of both sweeps is drawn once
    assert "detailed in an earlier section" in html
    with sqlite3.connect(out / "depthlab.db") as conn:  # a store from before the records
        conn.execute("DROP TABLE sweep_points")
    with Store(out, create=False, readonly=True) as s:
        assert len(s.runs(sweep=b.sweep)) == 1
        assert {k: len(v) for k, v in s.sweep_points().items()} == {a.sweep: 2, b.sweep: 1}
    html = write_report(out, max_runs=0).read_text(encoding="utf-8")
    assert "1 runs (1 finished)" in html or "1 run (1 finished)" in html


class InterruptAfter(InProcess):
    """Computes ``n`` points, then raises KeyboardInterrupt as a Ctrl-C would."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def run(self, tasks, done):
        for k, task in enumerate(tasks):
            if k == self.n:
                raise KeyboardInterrupt
            done(task, compute_point(task))


def _tables(out: Path) -> dict:
    with Store(out, create=False, readonly=True) as s:
        runs = s.runs().sort_values("id")
        return {rid: (s.run(rid)["config"], s.steps(rid), s.probes(rid), s.histograms(rid),
                      s.jacobian(rid)) for rid in runs["id"]}


def test_an_interrupted_then_resumed_sweep_equals_an_uninterrupted_one(tmp_path):
    grid = '"train.seed" = [0, 1, 2]\n"model.activation" = ["tanh", "relu"]'
    raw = _raw(tmp_path, grid)
    with pytest.raises(SweepInterrupted) as info:
        run_sweep(raw, tmp_path / "cut", executor=InterruptAfter(2), echo=None)
    assert info.value.result.ran == 2
    ex = Counting()
    res = run_sweep(raw, tmp_path / "cut", executor=ex, echo=None)
    assert len(ex.computed) == 4 and res.skipped == 2 and res.counts == {"finished": 4}
    run_sweep(raw, tmp_path / "whole", echo=None)
    cut, whole = _tables(tmp_path / "cut"), _tables(tmp_path / "whole")
    assert cut.keys() == whole.keys() and len(cut) == 6
    assert same(cut, whole)  # same seeds: the same numbers, row for row (NaN = NaN)


# -- fixed: the last update of a run overflowed the weights' outputs (every step's loss finite,
# each computed before its update): the run was stored as "finished" with a NaN train_loss
def test_a_run_whose_last_update_overflows_is_diverged_not_finished(tmp_path):
    raw = _raw(tmp_path, '"train.lr" = [1e12]\n"model.activation" = ["relu"]')
    res = run_sweep(raw, tmp_path / "out", echo=None)
    assert res.counts == {"diverged": 1}
    with Store(tmp_path / "out", create=False, readonly=True) as s:
        (rid,) = s.runs()["id"]
        run = s.run(rid)
        losses = s.steps(rid)["loss"]
        assert len(losses) == 2 and losses.map(math.isfinite).all()  # no step showed it
        assert run["status"] == "diverged" and run["divergence"]["step"] == 2
        assert run["divergence"]["layer"] and "diverged at step 2" in run["divergence"][
            "message"]


# -- fixed: each value was checked alone on the base config, so a value that needs another
# swept key (train.betas with a swept train.optimizer = "adam" over a base using sgd; the
# activation_kwargs of a swept activation) refused the whole grid before anything ran
def test_a_value_that_needs_another_swept_value_is_not_refused(tmp_path):
    raw = _raw(tmp_path, '"train.optimizer" = ["sgd", "adam"]\n"train.betas" = [[0.8, 0.99]]')
    res = run_sweep(raw, tmp_path / "out", echo=None)
    assert res.counts == {"finished": 1, "failed": 1}  # the sgd point: a refused combination
    (failure,) = res.failures
    assert "optimizer=sgd" in failure[1] and "not a hyperparameter of optimizer 'sgd'" in \
        failure[2]
    raw = _raw(tmp_path, '"model.activation" = ["leaky_relu", "elu"]\n'
               '"model.activation_kwargs" = [{negative_slope = 0.2}]')
    res = run_sweep(raw, tmp_path / "out2", echo=None)
    assert res.counts == {"finished": 1, "failed": 1}


@pytest.mark.parametrize("grid, fragment", [
    # wrong with any value of the other keys: the value's own refusal, before anything runs
    ('"train.optimizer" = ["adam"]\n"train.betas" = [[0.8, 2.0]]',
     "train.betas = [0.8, 2.0] is not accepted"),
    ('"model.activation" = ["tanh", "nope"]\n"train.seed" = [0, 1]',
     'model.activation = "nope" is not a known activation'),
    ('"model.activation" = ["leaky_relu"]\n"model.activation_kwargs" = [{alpha = 0.5}]',
     "unknown argument 'alpha' for activation 'leaky_relu'"),
])
def test_a_value_wrong_with_every_other_value_still_refuses_the_grid(tmp_path, grid, fragment):
    raw = _raw(tmp_path, grid)
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        run_sweep(raw, tmp_path / "out", echo=None)
    assert not (tmp_path / "out").exists()


# -- fixed: a point refused before its data were read (a refused combination) keeps "auto"
# ends in model.sizes where the others have the data's widths, and its direct optimizer keys
# (train.betas) outside train.optimizer_kwargs: the report listed model.sizes, train.betas and
# train.optimizer_kwargs as varying, and a 2 × 2 grid was drawn as bars instead of a heatmap
def test_a_refused_point_does_not_make_model_sizes_vary_in_the_report(tmp_path):
    from depthlab.report.build import _runs_table, varying_keys

    raw = _raw(tmp_path, '"model.batchnorm" = [true, false]\n"train.batch_size" = [1, 8]\n'
               '"probes.every" = [0]')
    res = run_sweep(raw, tmp_path / "out", echo=None)
    assert res.counts == {"finished": 3, "failed": 1}
    with Store(tmp_path / "out", create=False, readonly=True) as s:
        assert sorted(varying_keys(_runs_table(s))) == ["model.batchnorm", "train.batch_size"]
    raw = _raw(tmp_path, '"train.optimizer" = ["sgd", "adam"]\n'
               '"train.betas" = [[0.8, 0.99], [0.9, 0.999]]\n"probes.every" = [0]')
    res = run_sweep(raw, tmp_path / "betas", echo=None)  # the sgd points: refused, as written
    assert res.counts == {"finished": 2, "failed": 2}
    with Store(tmp_path / "betas", create=False, readonly=True) as s:  # 2 keys: a heatmap
        assert sorted(varying_keys(_runs_table(s))) == ["train.optimizer",
                                                        "train.optimizer_kwargs.betas"]
    raw = _raw(tmp_path, '"model.sizes" = [["auto", 4, "auto"], ["auto", 6, 6, "auto"]]\n'
               '"probes.every" = [0]')
    run_sweep(raw, tmp_path / "sizes", echo=None)
    with Store(tmp_path / "sizes", create=False, readonly=True) as s:  # still told apart
        assert set(varying_keys(_runs_table(s))) == {"depth", "width"}


# -- fixed: a grid passed as grid= to expand/iter_points was not checked like a [sweep] table:
# 3 for a list was "object of type 'int' has no len()", an unknown key a message about a
# section, {"train": [1]} "not enough values to unpack", an empty list an empty grid
@pytest.mark.parametrize("grid, fragment", [
    ({"train.seed": 3}, "sweep.train.seed = 3 has the wrong type"),
    ({"train.seed": []}, "sweep.train.seed = [] is empty"),
    ({"bogus.key": [1]}, "unknown key 'sweep.bogus.key'"),
    ({"train": [1]}, "unknown key 'sweep.train'"),
    ("x", "sweep = \"x\" must be a table"),
])
def test_a_grid_given_to_expand_or_iter_points_is_checked(tmp_path, grid, fragment):
    from depthlab.experiments.grid import expand, iter_points

    raw = _raw(tmp_path, '"train.seed" = [0]')
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        expand(raw, grid=grid)
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        next(iter_points(raw, grid=grid))
    assert [p.overrides for p in expand(raw, grid={"train.seed": [3, 3, 4]})] == [
        {"train.seed": 3}, {"train.seed": 4}]


# -- fixed: run_sweep("grid.toml", ...) said "a config must be a table of sections, got str"
# as a ValueError; a wrong type is a TypeError, and a path is pointed to read_toml
def test_a_config_path_instead_of_a_config_is_a_type_error_with_a_hint(tmp_path):
    with pytest.raises(TypeError, match=r"got str \(a TOML file's path\? read it with "
                       r"depthlab\.experiments\.read_toml"):
        run_sweep(str(tmp_path / "grid.toml"), tmp_path / "out", echo=None)
    with pytest.raises(ConfigError, match="got int"):
        run_sweep(5, tmp_path / "out", echo=None)
    assert not (tmp_path / "out").exists()


# -- fixed: with --json (messages on stderr) a bad grid value came after the grid's size line:
# two lines on stderr instead of the one error line
def test_a_bad_value_is_the_only_line_on_stderr_with_json(tmp_path, capsys):
    cfg = tmp_path / "sweep.toml"
    cfg.write_text(SWEEP.format(grid='"train.lr" = [0.1, -1]'))
    code, out, err = run_cli(capsys, "sweep", cfg, "--out", tmp_path / "out", "--json")
    assert_one_line_error(code, err, "train.lr = -1", "out of range")
    assert out == "" and not (tmp_path / "out").exists()
