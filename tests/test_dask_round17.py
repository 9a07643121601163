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


# -- a scheduler address with a port that cannot exist --------------------------------------

@pytest.mark.parametrize("address", ["tcp://127.0.0.1:99999", "tcp://127.0.0.1:0",
                                     "tcp://[::1]:65536"])
def test_a_port_outside_1_to_65535_is_refused_as_malformed_before_anything(tmp_path, address,
                                                                             capsys):
    """'tcp://127.0.0.1:99999' was taken as well formed: the grid's size was said, the store
    created, then 'cannot reach the Dask scheduler ...: Connection refused'."""
    from depthlab.cli import main
    from depthlab.experiments.executors import ClusterError
    from depthlab.experiments.executors.dask import check_address

    with pytest.raises(ClusterError, match=r"port .* 1\.\.65535"):
        check_address(address)
    path = tmp_path / "grid.toml"
    path.write_text(GRID.format(grid='"train.seed" = [0, 1]'))
    code = main(["sweep", str(path), "--out", str(tmp_path / "out"), "--cluster", address])
    out, err = capsys.readouterr()
    assert code == 2
    assert err.count("\n") == 1 and "65535" in err and address in err, err
    assert "points" not in out + err and not (tmp_path / "out").exists()
