"""Round 42 (sweepdask42): ``--cluster`` given a Dask scheduler file.

``dask scheduler --scheduler-file sched.json`` (and dask-mpi, and a batch job's scheduler) writes
the scheduler's address into a JSON file that the workers and clients are pointed at; ``depthlab
sweep --cluster sched.json`` was refused ("not accepted") though it names a running scheduler.
"""

from __future__ import annotations

import json
import sqlite3

import pytest
from helpers.cli import run_cli

from depthlab.experiments import run_sweep
from depthlab.experiments.executors import ClusterError
from depthlab.experiments.executors.dask import DaskExecutor, check_address

distributed = pytest.importorskip("distributed")

RAW = {"data": {"name": "digits", "n": 60}, "model": {"sizes": ["auto", 4, "auto"]},
       "train": {"max_steps": 1, "batch_size": 8}, "probes": {"every": 0},
       "sweep": {"train.seed": [0, 1]}}


def test_a_scheduler_file_names_its_scheduler(tmp_path):
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp://",
                                  host="127.0.0.1", dashboard_address=None) as cluster:
        sched = tmp_path / "sched.json"
        sched.write_text(json.dumps({"type": "Scheduler", "id": "x",
                                     "address": cluster.scheduler_address}))
        assert check_address(str(sched)) == cluster.scheduler_address
        ex = DaskExecutor(str(sched))
        assert ex.scheduler_file == str(sched) and str(sched) in ex.description
        res = run_sweep(RAW, tmp_path / "out", executor=ex, echo=None)
    assert res.count("finished") == 2
    with sqlite3.connect(tmp_path / "out" / "depthlab.db") as con:
        assert con.execute("SELECT COUNT(DISTINCT id) FROM runs").fetchone()[0] == 2


@pytest.mark.parametrize(("content", "words"), [
    (None, "no such scheduler file"),
    ("{not json", "not a Dask scheduler file"),
    ('{"address": "local:2"}', "not a Dask scheduler file"),
    ('{"type": "Scheduler"}', "not a Dask scheduler file"),
])
def test_a_bad_scheduler_file_is_one_line_and_exit_2(tmp_path, capsys, content, words):
    sched = tmp_path / "sched.json"
    if content is not None:
        sched.write_text(content)
    with pytest.raises(ClusterError, match=words):
        check_address(str(sched))
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(RAW))
    code, _out, err = run_cli(capsys, "sweep", cfg, "--out", tmp_path / "o", "--cluster", sched)
    assert code == 2 and words in err and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists()  # refused before the store was created


def test_a_stale_scheduler_file_is_named_in_the_unreachable_line(tmp_path, capsys):
    import socket

    with socket.socket() as s:  # a loopback port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sched = tmp_path / "sched.json"
    sched.write_text(json.dumps({"address": f"tcp://127.0.0.1:{port}"}))
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(RAW))
    code, _out, err = run_cli(capsys, "sweep", cfg, "--out", tmp_path / "o", "--cluster", sched,
                              "--quiet")
    assert code == 2 and err.count("\n") == 1, err
    assert f"127.0.0.1:{port}" in err and str(sched) in err, err


def test_a_scheduler_file_under_home_is_read_as_the_shell_reads_it(tmp_path, monkeypatch):
    # --cluster=~/sched.json: the shell leaves the ~ (after "="), as it leaves a quoted one
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "sched.json").write_text(json.dumps({"address": "tcp://127.0.0.1:8786"}))
    assert check_address("~/sched.json") == "tcp://127.0.0.1:8786"


@pytest.mark.parametrize("address", ["~nosuchuser42/sched.json", "~nosuchuser42"])
def test_an_unknown_home_is_one_line(address):
    with pytest.raises(ClusterError, match="no such scheduler file|not accepted"):
        check_address(address)


def test_a_scheduler_file_may_be_given_as_a_path(tmp_path):
    from depthlab.experiments.executors import make_executor

    sched = tmp_path / "sched.json"
    sched.write_text(json.dumps({"address": "tcp://127.0.0.1:8786"}))
    ex = make_executor(1, sched)
    assert ex.address == "tcp://127.0.0.1:8786" and ex.scheduler_file == str(sched)
