"""Round 25 (sweeps, the run store, resume, the CLI around them): a user who outgrows one
machine. Each test failed before the fix it names. Servers are loopback only."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.cli import assert_one_line_error, one_blas_thread, run_cli
from helpers.net import tcp_server
from helpers.sweeps import tiny_grid


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    one_blas_thread(monkeypatch)


def _grid(tmp_path: Path, grid: str = '"train.seed" = [0, 1]') -> Path:
    return tiny_grid(tmp_path, grid)


# -- a port that is not a scheduler's creates no store ---------------------------------------

def test_a_port_of_another_server_creates_no_store(tmp_path, capsys):
    """`--cluster tcp://head:8787` (the dashboard's HTTP port, a common slip) failed in one
    line, exit 2, but only after `--out` and its depthlab.db were created: only the TCP
    connect was tried before the store was opened, the scheduler handshake after."""
    pytest.importorskip("distributed")
    path = _grid(tmp_path)
    with tcp_server(b"HTTP/1.1 400 Bad Request\r\n\r\n" * 10) as address:
        code, _, err = run_cli(capsys, "sweep", path, "--out", tmp_path / "out",
                               "--cluster", address)
    assert_one_line_error(code, err, "did not answer as a Dask scheduler", address)
    assert not (tmp_path / "out").exists()


def test_a_port_that_never_answers_creates_no_store(tmp_path):
    pytest.importorskip("distributed")
    from depthlab.experiments import read_toml, run_sweep
    from depthlab.experiments.executors import ClusterError
    from depthlab.experiments.executors.dask import DaskExecutor

    raw = read_toml(_grid(tmp_path))
    with tcp_server(None) as address:
        with pytest.raises(ClusterError, match="no answer within 0.5 s"):
            run_sweep(raw, tmp_path / "out", echo=None,
                      executor=DaskExecutor(address, connect_timeout=0.5))
    assert not (tmp_path / "out").exists()


def test_a_missing_dask_is_said_before_the_store_is_created(tmp_path, capsys, monkeypatch):
    """Without Dask distributed installed, `--cluster local:2` said "pip install
    'depthlab[cluster]'" only once `--out` and its store had been created."""
    import sys

    monkeypatch.setitem(sys.modules, "distributed", None)  # `import distributed` fails
    code, _, err = run_cli(capsys, "sweep", _grid(tmp_path), "--out", tmp_path / "out",
                           "--cluster", "local:2")
    assert_one_line_error(code, err, "needs Dask distributed", "depthlab[cluster]")
    assert not (tmp_path / "out").exists()


# -- a grid too large to list has its workers' memory checked too ---------------------------

BIG_NET = '["auto", 4000, 4000, "auto"]'  # 245 MiB with Adam on 60 rows


def _big_grid(tmp_path: Path, seeds: int) -> Path:
    return _grid(tmp_path, f'"model.sizes" = [["auto", 4, "auto"], {BIG_NET}]\n'
                           f'"train.optimizer" = ["adam"]\n'
                           f'"train.seed" = {list(range(seeds))}')


def test_a_grid_above_2000_points_is_refused_when_its_workers_cannot_fit(tmp_path, capsys,
                                                                         monkeypatch):
    """`--jobs N` refuses a grid whose N largest points and the workers do not fit at once,
    but only for grids of at most 2,000 points (those listed to weigh the time left): 2,001
    points of 245 MiB ran two at once on 600 MiB (`--limit 2001` of a larger grid the same)."""
    monkeypatch.setenv("DEPTHLAB_MEMORY_LIMIT", "600M")
    path = _big_grid(tmp_path, 1001)  # 2,002 points, half of them the large network
    for extra in ([], ["--limit", "2001"]):
        code, _, err = run_cli(capsys, "sweep", path, "--out", tmp_path / "out", "--jobs", "2",
                               *extra)
        assert_one_line_error(code, err, "2 points at once", "[4, 4000, 4000, 2]",
                              "245 MiB", "use 1 worker process")
        assert not (tmp_path / "out").exists()


def test_the_grid_memory_check_counts_each_network_once_per_point(tmp_path, monkeypatch):
    from depthlab.experiments import read_toml
    from depthlab.experiments.config import validate
    from depthlab.experiments.executors.local import LocalPool
    from depthlab.experiments.runner import ExperimentError
    from depthlab.experiments.sweep import check_grid_memory

    raw = read_toml(_big_grid(tmp_path, 1001))
    grid = validate(raw)["sweep"]
    pool = LocalPool(2)  # not started
    monkeypatch.setenv("DEPTHLAB_MEMORY_LIMIT", "600M")
    with pytest.raises(ExperimentError, match="2 points at once"):
        check_grid_memory(pool, raw, grid)
    # the first 1,001 points are the small network only (the seed varies fastest)
    check_grid_memory(pool, raw, grid, limit=1001)
    # one large point among them: it fits beside one small one
    check_grid_memory(pool, raw, grid, limit=1002)
    with pytest.raises(ExperimentError, match="2 points at once"):
        check_grid_memory(pool, raw, grid, limit=1003)
    monkeypatch.setenv("DEPTHLAB_MEMORY_LIMIT", "2G")
    check_grid_memory(pool, raw, grid)
