"""A tiny sweep config for the sweep and Dask tests: 60 rows of 2-class clusters, a 4-wide
network, 2 steps per point, probes every step."""

from __future__ import annotations

from pathlib import Path

TINY_GRID = """\
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
"""The config with ``{grid}`` for its ``[sweep]`` lines (``TINY_GRID.format(grid=...)``)."""


def tiny_grid(tmp_path: Path, grid: str) -> Path:
    """``tmp_path / "grid.toml"`` holding :data:`TINY_GRID` with the sweep lines ``grid``."""
    path = tmp_path / "grid.toml"
    path.write_text(TINY_GRID.format(grid=grid))
    return path
