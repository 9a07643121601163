"""Round 17 (sweeps on Dask, the store, ``depthlab runs``): a demanding user's pass. Each test
failed before the fix it names. Clusters are tiny (``processes=False`` where the test allows)
and reached over loopback only."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.cli import one_blas_thread

from depthlab.experiments import Store, read_toml, run_sweep
from depthlab.experiments.executors import InProcess

GRID = """\
[data]
name = "clusters"
n = 60
options = {{d = 4, n_classes = 2}}
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


def _raw(tmp_path: Path, grid: str = '"train.seed" = [0, 1, 2]') -> dict:
    path = tmp_path / "grid.toml"
    path.write_text(GRID.format(grid=grid))
    return read_toml(path)


class Started(InProcess):
    """Computes in this process and counts its starts (a cluster's start-up)."""

    def __init__(self) -> None:
        super().__init__()
        self.starts = 0

    def start(self) -> None:
        self.starts += 1


# -- a sweep whose points are all stored starts no cluster ----------------------------------

def test_a_sweep_with_every_point_stored_starts_no_executor(tmp_path):
    raw = _raw(tmp_path)
    first = Started()
    res = run_sweep(raw, tmp_path / "out", executor=first, echo=None)
    assert first.starts == 1 and res.count("finished") == 3
    again = Started()  # the same sweep again: nothing to compute, no cluster to start
    lines: list[str] = []
    res = run_sweep(raw, tmp_path / "out", executor=again, echo=lines.append)
    assert again.starts == 0
    assert res.skipped == 3 and res.ran == 0
    assert not any("running on" in line for line in lines), lines
    with Store(tmp_path / "out", readonly=True) as store:  # still points of the sweep
        assert len(store.runs(sweep=res.sweep)) == 3
