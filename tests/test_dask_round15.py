"""Round 15 (sweeps on Dask): an adversarial pass, the local executors as the reference.

Clusters are tiny (one or two workers, ``processes=False`` where the test allows) and
reached over loopback TCP only.
"""

from __future__ import annotations

import threading

import pytest
from helpers.net import tcp_server
from helpers.timed import timed_cli

distributed = pytest.importorskip("distributed")

from depthlab.experiments import Store, read_toml, run_sweep  # noqa: E402
from depthlab.experiments.executors import ClusterError, Task  # noqa: E402
from depthlab.experiments.executors.dask import (  # noqa: E402
    DaskExecutor,
    environment,
    run_chunk,
)

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
every = {every}
[sweep]
"train.lr" = [0.05, 0.1]
"train.seed" = [0, 1, 2]
"""


def write(tmp_path, n=300, epochs=1, every=20) -> str:
    path = tmp_path / "grid.toml"
    path.write_text(GRID.format(n=n, epochs=epochs, every=every))
    return str(path)


@pytest.fixture(scope="module")
def threads_cluster():
    """Two in-process workers (threads), reached over loopback TCP."""
    with distributed.LocalCluster(n_workers=2, processes=False, threads_per_worker=1,
                                  protocol="tcp", host="127.0.0.1",
                                  dashboard_address="127.0.0.1:0",
                                  silence_logs=50) as lc:
        yield lc


# -- a scheduler address that is not a scheduler ------------------------------------------

@pytest.fixture(scope="module")
def port_sweeps(tmp_path_factory):
    """``sweep --cluster`` at a port that never answers (``"silent"``) and at one that
    answers an HTTP error (``"http"``), both run at once (the first one waits 5 s doing
    nothing: the second one's imports fill that wait). Each: (address, Timed), timed from
    the grid's size line, said just before the scheduler is tried (not from the start:
    imports take seconds on a busy host)."""
    results: dict[str, tuple[str, object]] = {}
    with tcp_server(None) as silent, \
            tcp_server(b"HTTP/1.1 400 Bad Request\r\n\r\n" * 10) as http:
        def sweep(name: str, address: str) -> None:
            tmp = tmp_path_factory.mktemp(name)
            results[name] = (address, timed_cli("sweep", write(tmp), "--out", tmp / "o",
                                                "--cluster", address, mark="sweep ",
                                                timeout=120))

        threads = [threading.Thread(target=sweep, args=item)
                   for item in (("silent", silent), ("http", http))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert set(results) == {"silent", "http"}, results
    return results


def test_a_port_that_never_answers_fails_within_the_timeout_naming_it(port_sweeps):
    """A port that accepts the connection and never answers (another program, a stuck
    proxy): Dask's Client waited without end (the sweep was still there after 90 s)."""
    address, res = port_sweeps["silent"]
    assert res.returncode == 2, res.stderr
    err = res.stderr.strip().splitlines()
    assert len(err) == 1 and address in err[0] and "no answer within 5 s" in err[0], err
    assert res.after_mark is not None and res.after_mark < 15, res  # connect_timeout: 5 s


def test_a_port_that_answers_something_else_is_one_line_not_an_internal_error(port_sweeps):
    """An HTTP server's answer read as Dask frames: 'MemoryError: Unable to allocate 3.07
    EiB' as an internal error (exit 1), then 20 s in the Client's __del__ and its
    traceback."""
    address, res = port_sweeps["http"]
    assert res.returncode == 2, res.stderr
    err = res.stderr.strip().splitlines()
    assert len(err) == 1 and address in err[0], err
    assert res.after_mark is not None and res.after_mark < 15, res  # not Dask's 20 s wait
    assert "did not answer as a Dask scheduler" in err[0] and "internal error" not in err[0]


def test_a_worker_address_is_not_taken_for_the_scheduler(threads_cluster):
    worker = next(iter(threads_cluster.scheduler_info["workers"]))
    with pytest.raises(ClusterError, match=f"{worker}: that is a Dask Worker, not a sch"):
        DaskExecutor(worker).start()


# -- the executor's options ----------------------------------------------------------------

@pytest.mark.parametrize("kw, fragment", [
    ({"window": -1}, "window must be a positive integer, got -1"),
    ({"window": 0}, "window must be a positive integer, got 0"),
    ({"window": 1.5}, "window must be a positive integer, got 1.5"),
    ({"retries": -1}, "retries must be an integer >= 0, got -1"),
    ({"retries": True}, "retries must be an integer >= 0, got True"),
    ({"allowed_failures": "3"}, "allowed_failures must be an integer >= 0, got '3'"),
    ({"connect_timeout": 0}, "connect_timeout must be a finite number > 0, got 0"),
    ({"connect_timeout": "5"}, "connect_timeout must be a real number, got '5'"),
    ({"connect_timeout": float("inf")}, "connect_timeout must be a finite number > 0"),
])
def test_executor_options_are_checked_naming_the_value(kw, fragment):
    """window=-1 took no point from the grid: a 6-point sweep ended with nothing run and
    nothing said; retries=-1, allowed_failures='3' went to Dask as given; connect_timeout=0
    said 'Operation now in progress', -1 'Timeout value out of range'."""
    with pytest.raises((ValueError, TypeError), match=fragment.replace("(", r"\(")):
        DaskExecutor("tcp://127.0.0.1:8786", **kw)


def test_an_address_of_the_wrong_type_names_it():
    with pytest.raises(TypeError, match="cluster address 8786 has the wrong type; accepted"):
        DaskExecutor(8786)


# -- workers that would not compute as this machine does -----------------------------------

@pytest.fixture(scope="module")
def process_cluster():
    """One worker process of its own (its modules are not the test's)."""
    with distributed.LocalCluster(n_workers=1, processes=True, threads_per_worker=1,
                                  host="127.0.0.1", dashboard_address="127.0.0.1:0",
                                  silence_logs=50) as lc:
        yield lc


def test_workers_with_another_depthlab_are_refused_naming_the_difference(process_cluster,
                                                                          monkeypatch):
    """A worker with another depthlab (or NumPy) computed the points with no word said."""
    import depthlab

    monkeypatch.setattr(depthlab, "__version__", "0.0.9")
    ex = DaskExecutor(process_cluster.scheduler_address)
    with pytest.raises(ClusterError) as err:
        ex.start()
    text = str(err.value)
    assert "\n" not in text and process_cluster.scheduler_address in text
    assert "has depthlab 0.1.0 (here 0.0.9); install the same versions there" in text
    assert "NumPy" not in text
    assert ex.client is None


def test_workers_that_cannot_import_depthlab_are_refused_before_any_point(process_cluster,
                                                                          tmp_path):
    """Every chunk erred on the worker's import: the whole grid stored failed, exit 1."""
    hide = ("import sys\nfor k in [k for k in sys.modules if k.split('.')[0] == 'depthlab']:"
            "\n    del sys.modules[k]\nsys.modules['depthlab'] = None")
    client = distributed.Client(process_cluster, set_as_default=False)
    try:
        client.run(exec, hide)
        raw = read_toml(write(tmp_path))
        with pytest.raises(ClusterError, match="cannot run depthlab's points "
                           r"\(ModuleNotFoundError.*\); install depthlab 0\.1\.0 there"):
            run_sweep(raw, tmp_path / "o", echo=None,
                      executor=DaskExecutor(process_cluster.scheduler_address))
    finally:
        client.run(exec, "import sys\nsys.modules.pop('depthlab', None)")
        client.close()
    assert not any(Store(tmp_path / "o").runs()["status"] == "failed")


def test_a_worker_that_joins_later_with_other_probe_kernels_fails_its_points_saying_so(
        tmp_path):
    """Probe statistics by Numba's kernels and by NumPy differ in the last digits (3,348 of
    8,052 probe values of a 6-point grid with probes every step): a worker without Numba
    (or with DEPTHLAB_PROBE_KERNELS=numpy) gave other numbers than a local run."""
    here = environment()
    other = "NumPy" if here["probe kernels"] != "NumPy" else "Numba 0.0"
    raw = read_toml(write(tmp_path))
    cfg = {k: v for k, v in raw.items() if k != "sweep"}
    from depthlab.experiments import validate

    task = Task("abc", "seed=0", validate(cfg), "sw-x")
    records, _ = run_chunk({**here, "probe kernels": other}, _never, [task, task])
    assert [r.status for r in records] == ["failed", "failed"]
    assert records[0].error == (f"WorkerMismatch: this Dask worker has probe kernels "
                                f"{here['probe kernels']} (here {other}), so it would not give "
                                "this machine's results; install the same versions on it")
    same, _ = run_chunk(here, _finished, [task])
    assert [r.status for r in same] == ["finished"]


def _never(task):
    raise AssertionError("a point computed on a worker that differs")


def _finished(task):
    from depthlab.experiments.executors import compute_point

    return compute_point(task)


# -- a worker that dies ----------------------------------------------------------------------

def dies_on_seed_1(task):
    """Seed 1 kills its worker process every time it is tried."""
    import os

    from depthlab.experiments.executors import compute_point

    if task.config["train"]["seed"] == 1:
        os._exit(3)
    return compute_point(task)


def test_a_point_that_kills_its_worker_fails_alone_not_its_chunk(tmp_path):
    """The local pool stores only the killer point failed (seeds 0-5, seed 1 dies: 1 failed,
    5 finished); Dask stored its whole chunk failed with KilledWorker (chunks of 3: seeds
    0, 1, 2 failed, seed 2 never computed; default chunks are up to 256 points)."""
    raw = read_toml(write(tmp_path))
    raw["sweep"] = {"train.seed": [0, 1, 2, 3, 4, 5]}
    ex = DaskExecutor("local:2", chunk=3, retries=0, allowed_failures=1,
                      compute=dies_on_seed_1)
    res = run_sweep(raw, tmp_path / "o", echo=None, executor=ex)
    runs = Store(tmp_path / "o").runs().set_index("name").sort_index()
    assert list(runs.index) == [f"seed={i}" for i in range(6)]
    assert runs["status"].to_dict() == {f"seed={i}": "failed" if i == 1 else "finished"
                                        for i in range(6)}
    assert runs.loc["seed=1", "error"].startswith("KilledWorker: ")
    assert res.count("failed") == 1 and res.count("finished") == 5 and res.ran == 6


def test_a_scheduler_without_workers_is_said_not_waited_on_in_silence():
    """A scheduler whose workers have not come (dask-jobqueue's still queued, or none
    started): the sweep waited with no word after its 'running on' line."""
    with distributed.LocalCluster(n_workers=0, processes=False, protocol="tcp",
                                  host="127.0.0.1", dashboard_address="127.0.0.1:0",
                                  silence_logs=50) as lc:
        ex = DaskExecutor(lc.scheduler_address)
        with pytest.warns(UserWarning, match=f"the Dask scheduler at {lc.scheduler_address} "
                          r"has no workers yet; the sweep waits for them \(Ctrl-C stops\)"):
            ex.start()
        ex.close()


def test_the_scheduler_handshake_uses_the_clients_tls_settings(monkeypatch):
    """The identity check must connect as the Client does: with the TLS context of Dask's
    configuration for a tls:// scheduler (without it a TLS cluster the Client reaches
    would be refused)."""
    import distributed.comm
    from distributed.security import Security

    from depthlab.experiments.executors.dask import _handshake

    seen = {}

    async def connect(address, timeout=None, **kwargs):
        seen.update(kwargs, address=address)
        raise OSError("refused by the test")

    monkeypatch.setattr(Security, "get_connection_args",
                        lambda self, role: {"ssl_context": f"context for {role}"})
    monkeypatch.setattr(distributed.comm, "connect", connect)
    with pytest.raises(ClusterError, match="did not answer as a Dask scheduler"):
        _handshake("tls://127.0.0.1:8786", 2.0)
    assert seen == {"address": "tls://127.0.0.1:8786", "ssl_context": "context for client"}


# -- a record that cannot come back ----------------------------------------------------------

def _refuse_to_load(text):
    raise ValueError(text)


class _Unloadable:
    """Pickled on the worker; loading it on the client raises."""

    def __reduce__(self):
        return (_refuse_to_load, ("this record cannot be loaded here",))


def unloadable_on_seed_1(task):
    import dataclasses

    from depthlab.experiments.executors import compute_point

    rec = compute_point(task)
    if task.config["train"]["seed"] == 1:
        rec = dataclasses.replace(rec, findings=[_Unloadable()])
    return rec


def test_a_record_the_client_cannot_load_is_failed_with_the_reason(tmp_path, threads_cluster,
                                                                    caplog):
    """Its points were stored 'the Dask task ended finished without a result' (the reason
    only in Dask's CRITICAL log with a traceback); its chunk-mates failed with it."""
    raw = read_toml(write(tmp_path))
    res = run_sweep(raw, tmp_path / "o", echo=None,
                    executor=DaskExecutor(threads_cluster.scheduler_address, chunk=3,
                                          compute=unloadable_on_seed_1))
    runs = Store(tmp_path / "o").runs().set_index("name")
    failed = runs[runs["status"] == "failed"]
    assert sorted(failed.index) == ["lr=0.05,seed=1", "lr=0.1,seed=1"]
    assert set(failed["error"]) == {"its record computed on a Dask worker could not be loaded "
                                    "here: ValueError: this record cannot be loaded here"}
    assert res.count("finished") == 4
    assert not [r for r in caplog.records if r.name == "distributed.protocol.core"]


# -- the same numbers as the local executors -------------------------------------------------

def _contents(db) -> dict[str, list[str]]:
    """Every table of a store as sorted JSON rows, without wall-clock columns (created,
    seconds) and in no particular completion order."""
    import json
    import sqlite3

    conn = sqlite3.connect(db)
    try:
        out = {}
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = "
                                             "'table' ORDER BY name")]
        for table in tables:
            cols = [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
            rows = []
            for row in conn.execute(f"SELECT * FROM {table}"):
                d = {c: v for c, v in zip(cols, row) if c not in ("created", "seconds")}
                if table in ("runs", "epochs", "evals") and d.get("metrics"):
                    d["metrics"] = {k: v for k, v in json.loads(d["metrics"]).items()
                                    if k != "seconds"}
                rows.append(json.dumps(d, sort_keys=True))
            out[table] = sorted(rows)
        return out
    finally:
        conn.close()


def test_a_dask_sweep_stores_bitwise_what_the_in_process_sweep_stores(tmp_path,
                                                                      threads_cluster):
    """Checked this round and found equal (runs, steps, epochs, probes every step,
    histograms, sweep points), whatever the completion order: one point per task on two
    workers."""
    raw = read_toml(write(tmp_path, every=1))
    run_sweep(raw, tmp_path / "here", echo=None, jobs=1)
    run_sweep(raw, tmp_path / "dask", echo=None,
              executor=DaskExecutor(threads_cluster.scheduler_address, chunk=1))
    here, there = (_contents(tmp_path / d / "depthlab.db") for d in ("here", "dask"))
    assert len(here["runs"]) == 6 and len(here["probes"]) > 1000
    assert here == there


class _Started(DaskExecutor):
    """Starts as usual, then expects workers of another depthlab: a worker that joined
    after the check."""

    def start(self):
        super().start()
        self._environment = {**self._environment, "depthlab": "0.0.9"}


def test_points_a_late_worker_refused_do_not_count_as_free_for_chunk_sizing(tmp_path,
                                                                         threads_cluster):
    """A refused chunk came back with 0 s for its points: the measured seconds per point
    became 0.0 and the next chunks were sized as free points (up to 256, no 2 s cap)."""
    raw = read_toml(write(tmp_path))
    ex = _Started(threads_cluster.scheduler_address)
    res = run_sweep(raw, tmp_path / "o", echo=None, executor=ex)
    assert res.count("failed") == 6
    errors = set(Store(tmp_path / "o").runs()["error"])
    assert len(errors) == 1 and errors.pop().startswith(
        "WorkerMismatch: this Dask worker has depthlab 0.1.0 (here 0.0.9)")
    assert ex._point_s is None
    assert ex.chunk_size(10_000, 2) == 4  # still the first chunks' size
