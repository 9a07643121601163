"""Adversarial tests of experiments run by a user who outgrows one machine: sweep point names
(floats that ``{:g}`` prints alike, swept tables), a store given as a ``.db`` file to every
command, stores on read-only or full disks or behind a file, two processes on one store
(export's snapshot, the WAL checkpoint at close), grids of many or repeated values, a sweep key
written twice, -0.0, the large-grid prompt at end of input, progress lines beside the bar with
``--json``, IPv6 scheduler addresses. Each test failed before the fix it names."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from helpers.cli import assert_one_line_error, one_blas_thread, run_cli

from depthlab.experiments import (
    ConfigError,
    RunRecord,
    Store,
    StoreError,
    expand,
    read_toml,
    run_sweep,
    validate,
)
from depthlab.experiments.executors.base import InProcess, compute_point
from depthlab.experiments.grid import value_str

SWEEP = """\
name = "r4"
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


def _config(tmp_path: Path, grid: str) -> Path:
    path = tmp_path / "sweep.toml"
    path.write_text(SWEEP.format(grid=grid))
    return path


# -- point names ------------------------------------------------------------------------------


def test_floats_that_print_alike_with_g_get_distinct_point_names(tmp_path, capsys):
    # {:g} printed 0.1 and 0.1000001 both as "0.1": two different runs named
    # "r4:lr=0.1" in `runs`, the report's headings and its figure file names
    cfg = _config(tmp_path, '"train.lr" = [0.1, 0.1000001, 1e-05, 1.000001e-05]')
    names = [p.name for p in expand(read_toml(cfg))]
    assert names == ["r4:lr=0.1", "r4:lr=0.1000001", "r4:lr=1e-05", "r4:lr=1.000001e-05"]
    code, _out, err = run_cli(capsys, "sweep", cfg, "--out", tmp_path / "o", "-q")
    assert code == 0, err
    with Store(tmp_path / "o", create=False) as s:
        assert sorted(s.runs()["name"]) == sorted(names)
    assert [value_str(v) for v in (0.5, 1e-30, 3.0, [64, 0.30000000000000004], True)] == \
        ["0.5", "1e-30", "3", "[64,0.30000000000000004]", "true"]


def test_table_values_are_named_like_lists(tmp_path):
    # a swept table was named with Python's dict repr: "activation_kwargs={'negative_slope':
    # 0.1}" (quotes and a space in a run name)
    cfg = _config(tmp_path, '"model.activation" = ["leaky_relu"]\n'
                  '"model.activation_kwargs" = [{negative_slope = 0.1}, {}]')
    names = [p.name for p in expand(read_toml(cfg))]
    assert names == ["r4:activation=leaky_relu,activation_kwargs={negative_slope=0.1}",
                     "r4:activation=leaky_relu,activation_kwargs={}"]


# -- a store named as a .db file --------------------------------------------------------------


def test_sweep_report_and_export_with_a_db_file_as_the_store(tmp_path, capsys):
    # sweep --json said "store": "o/r.db/depthlab.db" (a path that does not exist), and report
    # and export refused the same r.db ("a file with that name exists", "Not a directory")
    cfg = _config(tmp_path, '"train.seed" = [0, 1]')
    db = tmp_path / "o" / "r.db"
    code, out, err = run_cli(capsys, "sweep", cfg, "--out", db, "--json")
    assert code == 0, err
    assert json.loads(out)["store"] == str(db) and db.is_file()
    assert f"results: {db}\n" in err
    code, out, err = run_cli(capsys, "report", db, "-q")
    assert code == 0, err
    assert out.strip() == str(tmp_path / "o" / "report.html")
    assert (tmp_path / "o" / "report.html").is_file()
    code, out, err = run_cli(capsys, "export", db)
    assert code == 0, err
    assert Path(out.split()[0]).parent == tmp_path / "o" / "export"
    assert (tmp_path / "o" / "export" / "runs.csv").read_text().count("r4:seed=") == 2


# -- a store on a read-only disk --------------------------------------------------------------


@pytest.fixture
def read_only_disk(tmp_path):
    """A small tmpfs holding a store of one finished sweep point, remounted read-only."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_sweep_on_a_read_only_disk_says_so(read_only_disk, tmp_path, capsys):
    # was "cannot open results store '.../depthlab.db': unable to open database file"
    mnt = read_only_disk
    cfg = _config(tmp_path, '"train.seed" = [0, 1]')
    code, _out, err = run_cli(capsys, "sweep", cfg, "--out", mnt, "-q", "--limit", "1")
    assert code == 0, err
    subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
    code, _out, err = run_cli(capsys, "sweep", cfg, "--out", mnt, "-q")
    assert_one_line_error(code, err, str(mnt / "depthlab.db"), "read-only")
    with pytest.raises(StoreError, match="the file system is read-only"):
        run_sweep(read_toml(cfg), mnt / "api.db", echo=None)
    with Store(mnt, readonly=True) as s:  # the point stored before is intact and readable
        assert list(s.runs()["name"]) == ["r4:seed=0"] and s.integrity_check() == "ok"


# -- grids of many values ---------------------------------------------------------------------


def test_a_key_of_many_values_is_checked_without_validating_each_on_the_whole_config(
        tmp_path, monkeypatch):
    # each of the 20,002 values was validated on the whole config (0.4 ms each: 8 s before the
    # first point of `--limit 3`, minutes for 10**6 values); a duplicate value was checked twice
    from depthlab.experiments import grid as grid_module

    calls = []
    real = grid_module._point_config
    monkeypatch.setattr(grid_module, "_point_config",
                        lambda body, over, base: calls.append(over) or real(body, over, base))
    seeds = ", ".join(map(str, range(20_000)))
    raw = read_toml(_config(tmp_path, f'"train.seed" = [{seeds}]\n"train.lr" = [0.1, 0.1]'))
    grid_module.check_values(raw, raw["sweep"])
    assert len(calls) == grid_module.FULL_CHECKS + 1  # the first seeds, and 0.1 once
    bad = read_toml(_config(tmp_path, f'"train.seed" = [{seeds}, -5]'))
    with pytest.raises(ConfigError, match=r"^sweep point \(train.seed = -5\): train.seed = -5 "
                       "is out of range"):
        grid_module.check_values(bad, bad["sweep"])
    # a string is always validated on the whole config (a data set name is checked there)
    names = ", ".join(['"spirals"'] * 1500 + ['"nosuchdata"'])
    bad = read_toml(_config(tmp_path, f'"data.name" = [{names}]'))
    with pytest.raises(ConfigError, match="nosuchdata"):
        grid_module.check_values(bad, bad["sweep"])


# -- two processes on one store ---------------------------------------------------------------


def _record(rid: str) -> RunRecord:
    steps = pd.DataFrame({"step": [1, 2], "loss": [0.5, 0.25]})
    return RunRecord(rid, name=rid, metrics={"val_acc": 0.5}, steps=steps)


def test_export_while_another_process_commits_is_one_snapshot(tmp_path, monkeypatch):
    # export read table after table: a run committed meanwhile (a sweep writing the store)
    # was in steps.csv but not in runs.csv
    with Store(tmp_path) as s:
        s.add_run(_record("first"))
    reader = Store(tmp_path, readonly=True)
    table = Store.table

    def table_then_a_commit(self, name):
        df = table(self, name)
        if name == "runs":
            with Store(tmp_path) as writer:  # another connection, as another process
                writer.add_run(_record("second"))
        return df

    monkeypatch.setattr(Store, "table", table_then_a_commit)
    try:
        reader.export(tmp_path / "export")
    finally:
        reader.close()
    runs = pd.read_csv(tmp_path / "export" / "runs.csv")
    steps = pd.read_csv(tmp_path / "export" / "steps.csv")
    assert list(runs["id"]) == ["first"] and set(steps["run_id"]) == {"first"}
    with Store(tmp_path, readonly=True) as s:
        assert sorted(s.statuses()) == ["first", "second"]


# -- the confirmation of a large grid ---------------------------------------------------------


class _Terminal:
    def isatty(self) -> bool:
        return True


def test_end_of_input_at_the_large_grid_prompt_is_a_no(tmp_path, capsys, monkeypatch):
    # Ctrl-D at "Run them all? [y/N]" was "depthlab: error: EOFError: EOFError (internal error)"
    def end_of_input(prompt: str) -> str:
        raise EOFError

    monkeypatch.setattr("sys.stdin", _Terminal())
    monkeypatch.setattr("builtins.input", end_of_input)
    values = ", ".join(map(str, range(400)))
    cfg = _config(tmp_path, f'"train.seed" = [{values}]\n"data.seed" = [{values}]')
    code, out, err = run_cli(capsys, "sweep", cfg, "--out", tmp_path / "o", "-q")
    assert_one_line_error(code, err, "160,000 points", "not confirmed")
    assert not (tmp_path / "o").exists()


# -- a sweep key written twice ----------------------------------------------------------------


@pytest.mark.parametrize("grid", [
    '"train.seed" = [0, 1]\ntrain.seed = [5, 6, 7]',
    'train.seed = [5, 6, 7]\n"train.seed" = [0, 1]',
    'train = {seed = [5, 6, 7]}\n"train.seed" = [0, 1]'], ids=["quoted-first", "dotted-first",
                                                             "inline-table"])
def test_a_sweep_key_written_quoted_and_dotted_is_refused(tmp_path, capsys, grid):
    # TOML holds both "train.seed" (one key) and train.seed (a table): the sweep kept one of
    # the lists and silently dropped the other (3 points instead of an error)
    cfg = _config(tmp_path, grid)
    code, _out, err = run_cli(capsys, "sweep", cfg, "--out", tmp_path / "o", "-q")
    assert_one_line_error(code, err, "sweep.train.seed is given twice")
    assert not (tmp_path / "o").exists()
    with pytest.raises(ConfigError, match="given twice"):
        validate(read_toml(cfg))


# -- progress on a terminal -------------------------------------------------------------------


def test_per_point_lines_beside_the_bar_stay_off_json_stdout(tmp_path, capsys, monkeypatch):
    # on a terminal (stderr a tty) with stdout redirected (`sweep --json > out.json`), the bar's
    # per-point lines went through tqdm.write to stdout: out.json began with "[1/2] ..."
    monkeypatch.setattr("depthlab.cli.sweep.progress_enabled", lambda args: True)
    cfg = _config(tmp_path, '"train.seed" = [0, 1]')
    code, out, err = run_cli(capsys, "sweep", cfg, "--out", tmp_path / "o", "--json")
    assert code == 0, err
    assert json.loads(out)["counts"] == {"finished": 2}
    assert "[1/2] " in err and "[2/2] " in err
    code, out, err = run_cli(capsys, "sweep", cfg, "--out", tmp_path / "p")  # no --json
    assert code == 0, err
    assert "[1/2] " in out and "[1/2] " not in err  # the lines where echo prints them


def test_minus_zero_is_the_same_config_as_zero(tmp_path, capsys):
    # model.dropout = -0.0 validated as -0.0: a second run id (and a second training) for the
    # same network, and `depthlab run` with 0.0 did not see the stored sweep point
    cfg = _config(tmp_path, '"model.dropout" = [0.0, -0.0]\n"data.val_fraction" = [-0.0]')
    points = expand(read_toml(cfg))
    assert len(points) == 1 and points[0].config["model"]["dropout"] == 0.0
    assert str(points[0].config["data"]["val_fraction"]) == "0.0"
    code, out, err = run_cli(capsys, "sweep", cfg, "--out", tmp_path / "o", "--json")
    assert code == 0, err
    assert json.loads(out)["counts"] == {"finished": 1} and json.loads(out)["skipped"] == 1


# -- a store path that cannot be a store ------------------------------------------------------


def test_store_paths_blocked_by_a_file_or_a_folder_name_what_is_in_the_way(tmp_path, capsys):
    # were "cannot create results folder 'f': File exists" / "...: Not a directory" and, for a
    # folder named depthlab.db, "cannot open results store ...: unable to open database file"
    cfg = _config(tmp_path, '"train.seed" = [0]')
    (tmp_path / "f").write_text("a file")
    for out in ("f", "f/x.db", "f/a/b"):
        code, _out, err = run_cli(capsys, "sweep", cfg, "--out", tmp_path / out, "-q")
        assert_one_line_error(code, err, f"{str(tmp_path / 'f')!r} is a file, not a folder")
    (tmp_path / "d" / "depthlab.db").mkdir(parents=True)
    code, _out, err = run_cli(capsys, "sweep", cfg, "--out", tmp_path / "d", "-q")
    assert_one_line_error(code, err, "depthlab.db' is a folder, not a database file")
    with pytest.raises(StoreError, match="is a folder, not a database file"):
        Store(tmp_path / "d")
    assert (tmp_path / "f").read_text() == "a file"


@pytest.mark.parametrize("out, error, match", [
    ("", ValueError, "results store '' is an empty path"),
    ("  ", ValueError, "is an empty path"),
    (None, TypeError, "results store None has the wrong type"),
    (5, TypeError, "results store 5 has the wrong type")])
def test_run_sweep_refuses_an_empty_or_non_path_store(tmp_path, monkeypatch, out, error, match):
    # out="" wrote depthlab.db into the current folder (the CLI refuses an empty --out), and
    # None or 5 ended in pathlib's "expected str, bytes or os.PathLike object"
    monkeypatch.chdir(tmp_path)
    raw = read_toml(_config(tmp_path, '"train.seed" = [0]'))
    with pytest.raises(error, match=match):
        run_sweep(raw, out, echo=None)
    assert not (tmp_path / "depthlab.db").exists()


def test_sweep_on_a_full_disk_stops_before_computing_a_point(tmp_path):
    # the sweep opened the store and computed a point (or started Dask) before finding that
    # nothing could be written: the point's training was thrown away each time it was rerun
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(mnt)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    try:
        seeds = ", ".join(map(str, range(40)))
        raw = read_toml(_config(tmp_path, f'"train.seed" = [{seeds}]'))
        raw["probes"]["every"] = 1000  # (every = 0 recorded no histogram: refused now)
        raw["probes"]["histogram_steps"] = [0]  # ~20 KiB per point: the disk fills
        with pytest.raises(StoreError, match="no space left on device"):
            run_sweep(raw, mnt, echo=None)
        with Store(mnt, readonly=True) as s:
            stored = len(s.statuses())
        computed = []

        def compute(task):
            computed.append(task.id)
            return compute_point(task)

        with pytest.raises(StoreError, match="not writable: no space left on device"):
            run_sweep(raw, mnt, echo=None, executor=InProcess(compute))
        assert computed == []
        with Store(mnt, readonly=True) as s:
            assert len(s.statuses()) == stored and s.integrity_check() == "ok"
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_runs_committed_while_a_reader_is_open_reach_the_database_file(tmp_path):
    # with a reader open (depthlab runs, a notebook) when the sweep closed the store, SQLite
    # skipped its checkpoint: the runs stayed in depthlab.db-wal and a copy of depthlab.db
    # alone (scp to another machine) held none of them
    import shutil
    import sqlite3

    cfg = _config(tmp_path, '"train.seed" = [0, 1, 2]')
    run_sweep(read_toml(cfg), tmp_path / "o", echo=None, limit=1)
    reader = Store(tmp_path / "o", readonly=True)
    try:
        assert len(reader.runs()) == 1
        run_sweep(read_toml(cfg), tmp_path / "o", echo=None)
    finally:
        reader.close()
    shutil.copy(tmp_path / "o" / "depthlab.db", tmp_path / "copy.db")
    conn = sqlite3.connect(tmp_path / "copy.db")
    try:
        assert conn.execute("SELECT COUNT(*) FROM runs").fetchone() == (3,)
        assert conn.execute("SELECT COUNT(DISTINCT run_id) FROM steps").fetchone() == (3,)
    finally:
        conn.close()


def test_a_blank_name_is_called_empty_not_a_wrong_type(tmp_path):
    # name = "" said 'has the wrong type' (and was a TypeError) although it is a string
    base = {"data": {"name": "spirals"}, "model": {"depth": 1, "width": 4}}
    for raw, key in (({**base, "name": ""}, "name"),
                     ({**base, "data": {"name": "  "}}, "data.name")):
        with pytest.raises(ConfigError, match=f"^{key} = .* is empty; accepted: a non-empty "
                           "string") as info:
            validate(raw)
        assert not isinstance(info.value, TypeError)
    with pytest.raises(TypeError, match="name = 5 has the wrong type"):
        validate({**base, "name": 5})


# -- Dask addresses ---------------------------------------------------------------------------


def test_an_ipv6_scheduler_address_is_accepted(tmp_path, capsys):
    # tcp://[::1]:PORT (Dask's form of an IPv6 address) was refused as "not accepted" before
    # any connection was tried; the brackets were even stripped for the connection probe
    import socket

    from depthlab.experiments.executors.dask import check_address

    assert check_address("tcp://[::1]:8786") == "tcp://[::1]:8786"
    assert check_address("tls://[fe80::1]:8786") == "tls://[fe80::1]:8786"
    cfg = _config(tmp_path, '"train.seed" = [0]')
    for bad in ("tcp://[::1]", "tcp://[::1:80", "tcp://[zz]:80", "tcp://a:b:80"):
        code, _out, err = run_cli(capsys, "sweep", cfg, "--out", tmp_path / "o", "--cluster", bad)
        assert_one_line_error(code, err, f"--cluster {bad!r} is not accepted")
    try:
        with socket.socket(socket.AF_INET6) as s:  # a free port on the IPv6 loopback
            s.bind(("::1", 0))
            port = s.getsockname()[1]
    except OSError:
        pytest.skip("no IPv6 loopback here")
    address = f"tcp://[::1]:{port}"
    code, _out, err = run_cli(capsys, "sweep", cfg, "--out", tmp_path / "o", "--cluster", address)
    assert_one_line_error(code, err, f"cannot reach the Dask scheduler at {address}")


def test_a_repeated_refused_combination_is_stored_and_counted_once(tmp_path, capsys):
    # a refused combination that the grid repeats was committed, counted and listed as a
    # failure once per repeat ("failed": 2, the same id twice in "failures")
    cfg = _config(tmp_path, '"model.batchnorm" = [true, true]\n"train.batch_size" = [1, 4]')
    code, out, err = run_cli(capsys, "sweep", cfg, "--out", tmp_path / "o", "--json")
    assert code == 1, err
    res = json.loads(out)
    assert res["counts"] == {"failed": 1, "finished": 1} and res["skipped"] == 2
    assert [f["name"] for f in res["failures"]] == ["r4:batchnorm=true,batch_size=1"]


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_repeated_failing_point_is_run_once_whatever_the_jobs(tmp_path, capsys, jobs):
    # in this process a point that failed was run again for each repeat in the grid (its id
    # was no longer in flight and failed points are not "done"): 'failed': 2 with --jobs 1,
    # 'failed': 1 with --jobs 2 (the repeat found it in flight)
    cfg = _config(tmp_path, '"data.n" = [1, 1, 60, 1]')
    code, out, err = run_cli(capsys, "sweep", cfg, "--out", tmp_path / "o", "--json",
                             "--jobs", jobs)
    assert code == 1, err
    res = json.loads(out)
    assert res["counts"] == {"failed": 1, "finished": 1} and res["skipped"] == 2
    assert len(res["failures"]) == 1 and "single class" in res["failures"][0]["error"]
