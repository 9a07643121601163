"""Round 43 (daskhunt43): sweeps on Dask schedulers of every protocol Dask listens on.

``dask scheduler --protocol ws`` (websockets: a scheduler behind an HTTP proxy or a firewall
that passes only HTTP) listens on ``ws://HOST:PORT`` (``wss://`` with TLS) and writes that
address into its scheduler file. ``--cluster ws://HOST:PORT`` was refused as "not accepted"
and its scheduler file as "not a Dask scheduler file", though Dask's client reaches it.
"""

from __future__ import annotations

import json
import sqlite3

import pytest
from helpers.cli import run_cli

from depthlab.experiments import run_sweep
from depthlab.experiments.executors import ClusterError
from depthlab.experiments.executors.dask import DaskExecutor, check_address, spelled

distributed = pytest.importorskip("distributed")

RAW = {"data": {"name": "digits", "n": 60}, "model": {"sizes": ["auto", 4, "auto"]},
       "train": {"max_steps": 1, "batch_size": 8}, "probes": {"every": 0},
       "sweep": {"train.seed": [0, 1]}}


@pytest.mark.parametrize(("given", "read"), [
    ("ws://head:8786", "ws://head:8786"),
    ("WS://head:8786", "ws://head:8786"),
    ("wss://10.0.0.1:8786", "wss://10.0.0.1:8786"),
    ("WSS://[::1]:8786", "wss://[::1]:8786"),
])
def test_websocket_addresses_are_accepted(given, read):
    assert spelled(given) == read
    assert check_address(given) == read


def test_a_websocket_port_out_of_range_is_refused_naming_it():
    with pytest.raises(ClusterError, match="port 70000 is not in 1..65535"):
        check_address("ws://head:70000")


@pytest.mark.parametrize("address", ["ucx://10.0.0.1:8786", "udp://h:1", "ws://h"])
def test_other_protocols_stay_refused_in_one_line(address):
    with pytest.raises(ClusterError, match="not accepted") as info:
        check_address(address)
    assert "\n" not in str(info.value)


def test_a_scheduler_file_of_another_protocol_names_its_address(tmp_path):
    # a valid scheduler file of a protocol depthlab does not connect to: its address is
    # named (it was "not a Dask scheduler file", though it is one)
    sched = tmp_path / "sched.json"
    sched.write_text(json.dumps({"type": "Scheduler", "address": "ucx://10.0.0.1:8786"}))
    with pytest.raises(ClusterError, match="ucx://10.0.0.1:8786") as info:
        check_address(str(sched))
    assert "not a Dask scheduler file" not in str(info.value)


@pytest.fixture
def ws_cluster():
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  protocol="ws://", host="127.0.0.1",
                                  dashboard_address=None) as cluster:
        assert cluster.scheduler_address.startswith("ws://")
        yield cluster


def test_a_websocket_scheduler_runs_the_sweep_as_the_local_executor(tmp_path, ws_cluster):
    local = run_sweep(RAW, tmp_path / "local", echo=None)
    ex = DaskExecutor(ws_cluster.scheduler_address)
    res = run_sweep(RAW, tmp_path / "ws", executor=ex, echo=None)
    assert res.count("finished") == local.count("finished") == 2
    got = {}
    for name in ("local", "ws"):
        with sqlite3.connect(tmp_path / name / "depthlab.db") as con:
            rows = con.execute("SELECT id, status, metrics FROM runs ORDER BY id").fetchall()
        got[name] = [(i, s, {k: v for k, v in json.loads(m).items() if k != "seconds"})
                     for i, s, m in rows]
    assert got["ws"] == got["local"]  # the same points, the same numbers


def test_a_websocket_scheduler_file_on_the_command_line(tmp_path, capsys, ws_cluster):
    sched = tmp_path / "sched.json"
    sched.write_text(json.dumps({"type": "Scheduler", "address": ws_cluster.scheduler_address}))
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(RAW))
    code, out, err = run_cli(capsys, "sweep", cfg, "--out", tmp_path / "o", "--cluster", sched)
    assert code == 0, err
    assert "2 finished" in out and ws_cluster.scheduler_address in out, out


# --- how many points run at once, for the progress heartbeat --------------------------------
# The sweep counted every point its executor had taken as running ("sweep: 6 points running")
# unless the executor's workers were on this machine; a Dask executor takes whole chunks, a
# window of 2 per worker thread, so a remote cluster of 2 threads was said to run 6 points.


def test_each_executor_says_how_many_points_it_computes_at_once():
    from depthlab.experiments.executors.base import InProcess
    from depthlab.experiments.executors.local import LocalPool

    assert InProcess().slots == 1
    assert LocalPool(3).slots == 3


def test_a_dask_executor_counts_its_workers_threads_wherever_they_run(monkeypatch):
    import depthlab.experiments.executors.dask as dask_executor

    # workers on other machines: none of their threads counts for this machine's memory
    monkeypatch.setattr(dask_executor, "local_threads", lambda workers: 0)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=3, processes=False,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster, set_as_default=False) as client:
        ex = DaskExecutor(client)
        assert ex.local_workers == 0 and ex.slots is None  # not asked yet: not known
        with ex:
            ex.run(iter([]), lambda task, record: None)  # sizes its window: asks the threads
            assert ex.slots == 6
        assert ex.slots is None  # closed: asked again by the next sweep


# --- a scheduler file read while its scheduler writes it -----------------------------------
# `dask scheduler --scheduler-file F` opens F, then writes its JSON: a batch job that waits
# for F to exist and starts the sweep at once read an empty (or half-written) file and was
# refused "not a Dask scheduler file" (Dask's own client reads it again until it is JSON).


@pytest.mark.parametrize("first", ["", '{\n  "type": "Scheduler",\n  "addr'])
def test_a_scheduler_file_being_written_is_read_once_written(tmp_path, first):
    import threading

    sched = tmp_path / "sched.json"
    sched.write_text(first)
    address = "tcp://127.0.0.1:8786"
    writer = threading.Timer(0.3, sched.write_text,
                             [json.dumps({"type": "Scheduler", "address": address}, indent=2)])
    writer.start()
    try:
        assert check_address(str(sched)) == address
    finally:
        writer.join()
