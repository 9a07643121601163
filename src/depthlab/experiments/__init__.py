"""Experiments: TOML configs, single runs, parallel resumable sweeps and the SQLite store.

>>> from depthlab.experiments import load_config, execute, Store   # doctest: +SKIP
>>> rec = execute(load_config("examples/digits_run.toml"))           # doctest: +SKIP
>>> Store("depthlab-out").add_run(rec)                               # doctest: +SKIP
>>> load_runs("depthlab-out")[["id", "status", "val_acc"]]           # doctest: +SKIP
"""

from .config import ConfigError, load_config, read_toml, run_id, validate
from .runner import ExperimentError, execute, prepare, train
from .store import RunRecord, Store, StoreError, load_runs
from .sweep import SweepPoint, SweepResult, expand, run_points, run_sweep, sweep_id

__all__ = [
    "ConfigError",
    "ExperimentError",
    "RunRecord",
    "Store",
    "StoreError",
    "SweepPoint",
    "SweepResult",
    "execute",
    "expand",
    "load_config",
    "load_runs",
    "prepare",
    "read_toml",
    "run_id",
    "run_points",
    "run_sweep",
    "sweep_id",
    "train",
    "validate",
]
