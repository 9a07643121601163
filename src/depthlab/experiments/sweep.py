"""Sweeps: the client that walks a ``[sweep]`` grid, hands points to an executor and commits
what comes back.

The client is the single writer of ``DIR/depthlab.db``: an executor (this process, a local
process pool, or Dask distributed; see :mod:`depthlab.experiments.executors`) computes each
point and returns its :class:`~depthlab.experiments.store.RunRecord`, and the client stores it
in one transaction. Points are generated lazily (:func:`~depthlab.experiments.grid.iter_points`)
and executors keep a bounded number in flight, so memory does not grow with the grid.

Resuming is automatic: a point whose id is already stored as ``finished`` or ``diverged`` is
skipped before it is submitted (and recorded as a point of this sweep too, so a sweep whose
grid overlaps an earlier one's, e.g. one extended with more seeds, holds all of its points);
``failed`` points are run again. Killing the client loses no
committed run; running the same sweep again finishes the grid. A combination of values that
the config checks refuse (each value valid alone) is stored as a ``failed`` point with the
one-line reason, without being submitted, and the other points run: every executor does the
same.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..progress import count as count_of
from ..progress import waiting
from .config import ConfigError, data_digest
from .executors import Executor, InProcess, Task, make_executor
from .grid import (
    SweepPoint,
    as_raw,
    canonical_grid,
    check_limit,
    check_values,
    expand,
    grid_shape,
    grid_size,
    iter_points,
    sweep_id,
    validate_base,
)
from .progress import WORK_POINTS, SweepProgress, point_work
from .runner import ExperimentError, failed_record
from .store import KINDS, RunRecord, Store, StoreError

__all__ = ["DONE_STATUSES", "SweepInterrupted", "SweepPoint", "SweepResult", "expand",
           "iter_points", "run_points", "run_sweep", "sweep_id"]

DONE_STATUSES: tuple[str, ...] = ("finished", "diverged")
MAX_FAILURES_KEPT = 20
INTERRUPT_LOCK_WAIT_S = 1.0
"""After an interrupt, the sweep waits at most this long for another process's lock on the
store to record the stored points it found as its own (then it stops without)."""
MEMBERS_BATCH = 1000
"""Stored points a sweep finds (skips) are recorded as its points in transactions of this many
(:meth:`~depthlab.experiments.store.Store.add_sweep_points`)."""


class SweepInterrupted(KeyboardInterrupt):
    """The sweep was interrupted (Ctrl-C, or SIGTERM turned into this by the CLI) after its
    workers were stopped; ``result`` holds what was committed before."""

    def __init__(self, result: SweepResult) -> None:
        super().__init__(f"sweep {result.sweep} interrupted")
        self.result = result


@dataclass
class SweepResult:
    """What a sweep did: its id, the number of grid points, how many were skipped (already
    stored, or a duplicate of a point in flight), ``counts`` of the statuses of the points it
    ran, the first failures ``(id, name, first line of the error)`` and the wall time."""

    sweep: str
    total: int = 0
    skipped: int = 0
    repeated: int = 0
    """Of ``skipped``, the points listed again in the grid (``[7, 7, 8]``): the same id as an
    earlier point of this sweep, not a run stored before it."""
    counts: dict[str, int] = field(default_factory=dict)
    failures: list[tuple[str, str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def count(self, status: str) -> int:
        """Points run in this sweep that ended with ``status``."""
        return self.counts.get(status, 0)

    @property
    def ran(self) -> int:
        return sum(self.counts.values())


def run_sweep(raw: dict[str, Any], out_dir: str | os.PathLike, *, jobs: int = 1,
              cluster: Any = None, executor: Executor | None = None,
              base_dir: str | os.PathLike | None = None, limit: int | None = None,
              echo: Callable[[str], None] | None = print, progress: bool = False,
              kind: str = "sweep-point") -> SweepResult:
    """Walk ``raw``'s grid (the first ``limit`` points if given) and run every point not yet
    stored as finished/diverged.

    Where points run: ``executor`` if given, else ``cluster`` (``"local:N"`` or
    ``"tcp://HOST:PORT"`` or a bare ``"HOST:PORT"`` or a scheduler file ``"FILE.json"``,
    Dask; or a ``distributed.Client`` or
    Dask cluster object of the caller's, e.g. a dask-jobqueue ``SLURMCluster``, used and left
    open), else ``jobs`` processes (1: this process). ``echo``
    receives one line per event (None: silent); ``progress`` shows a bar instead.

    ``cluster="local:N"`` from a script: Dask's worker processes import the script's
    ``__main__`` module (Python's rule for processes that are not plain forks), so its
    top-level code runs in each of them unless the call sits under
    ``if __name__ == "__main__":``; ``jobs=N`` workers do not import it.
    """
    check_limit(limit)
    check_echo(echo)
    check_progress(progress)
    check_kind(kind)  # before the grid's values and data are read
    check_base_dir(base_dir)
    raw = as_raw(raw)  # a RunSpec: its config dict
    executor = _executor(executor, jobs, cluster)  # a bad one before the grid is said
    base = validate_base(raw, base_dir=base_dir)
    grid = base.get("sweep") or {}
    full = grid_size(grid)
    total = full if limit is None else min(full, limit)
    say = echo or (lambda _line: None)
    # every single value, before anything runs or is said: a bad one is the only line (a
    # large data file read here for its check and fingerprint: a line every few seconds)
    with waiting("sweep: reading its data", "lines" if echo is not None else None, write=say):
        check_values(raw, grid, base_dir=base_dir)
        check_shared_data(raw, grid, base_dir=base_dir)
        sid = sweep_id({**{k: v for k, v in base.items() if k != "name"},
                        **({"sweep": canonical_grid(grid)} if grid else {}),
                        **data_contents(base, grid, base_dir=base_dir)})
    shape = grid_shape(grid)  # a limit's points named as the first of the grid's (was
    # "3 points (train.lr 2 x train.seed 4)", a size its own factors contradict)
    shape = shape if total == full else f"the first {total:,} of the grid's {full:,}: {shape}"
    say(f"sweep {sid}: {count_of(total, 'point', thousands=True)} ({shape})")
    if total > WORK_POINTS:  # streamed, not listed: its workers' memory checked by group
        executor.check()  # (a scheduler's workers on this machine are counted here)
        check_grid_memory(executor, raw, grid, base_dir=base_dir, limit=limit)
        check_grid_histories(executor, raw, grid, base_dir=base_dir, limit=limit)
    points = iter_points(raw, base_dir=base_dir, grid=grid, limit=limit, check=False,
                         invalid="fail")
    return run_points(points, out_dir, sweep=sid, executor=executor, echo=echo,
                      progress=progress, kind=kind, total=total,
                      grid=grid_order(base, grid, base_dir=base_dir), limited=total < full)


DATA_READING_KEYS = ("train.loss", "model.dtype")
"""Swept keys outside ``data.*`` that change how a data file is read (its labels as classes
or real targets; its values' dtype): :func:`check_shared_data` skips a grid sweeping any."""


def check_shared_data(raw: dict[str, Any], grid: dict[str, list], *,
                      base_dir: str | os.PathLike | None = None) -> None:
    """A ``data.path`` file that every point reads alike (the grid sweeps no ``data.*`` key
    nor one of :data:`DATA_READING_KEYS`) is read once before any point runs: a file no point
    can read (text labels, a single class, ...) is a :class:`ConfigError` naming it, as
    ``depthlab run`` of the base config says (exit 2), not every point stored ``failed``."""
    if any(k.startswith("data.") or k in DATA_READING_KEYS for k in grid):
        return
    first = next(iter_points(raw, base_dir=base_dir, grid=grid, limit=1, check=False,
                             invalid="fail"), None)
    if first is None or first.error is not None or first.config["data"].get("path") is None:
        return
    from .runner import load_data

    try:
        load_data(first.config)
    except ExperimentError as e:
        raise ConfigError(f"{e} (every point of the grid reads this data)", "data.path") from None


def check_echo(echo: Any) -> None:
    """``echo`` is None or a callable taking one line (TypeError naming it otherwise, before
    anything is created: ``echo=3`` failed at the first line, "'int' object is not
    callable")."""
    if echo is not None and not callable(echo):
        raise TypeError(f"echo = {echo!r} has the wrong type; accepted: a function taking one "
                        "line of text, e.g. print (or None: silent)")


def check_progress(progress: Any) -> None:
    """``progress`` is True (a bar) or False (lines through ``echo``): a bool or a NumPy bool
    (TypeError naming it otherwise: ``progress="lines"``, fit's spelling, or ``progress=None``
    was taken for its truth value, a bar or none, without a word)."""
    import numpy as np

    if not isinstance(progress, bool | np.bool_):
        raise TypeError(f"progress = {progress!r:.60} has the wrong type; accepted: True (a "
                        "progress bar) or False (a line per event through echo)")


def check_kind(kind: Any) -> None:
    """``kind`` is one of the stored run kinds :data:`KINDS` (ValueError naming it)."""
    if not isinstance(kind, str) or kind not in KINDS:
        raise ValueError(f"kind = {kind!r:.60} is not a run kind; accepted: {', '.join(KINDS)}")


def check_base_dir(base_dir: Any) -> None:
    """``base_dir`` (the folder a relative ``data.path`` is read from) is None or an existing
    folder given as str or os.PathLike (TypeError or ValueError naming it otherwise:
    ``base_dir=3`` failed deep inside with "expected str, bytes or os.PathLike object, not
    int", and a folder that does not exist was taken without a word)."""
    if base_dir is None:
        return
    if not isinstance(base_dir, str | os.PathLike):
        raise TypeError(f"base_dir = {base_dir!r:.60} has the wrong type; accepted: a folder "
                        "path (str or os.PathLike) or None")
    if not os.path.isdir(base_dir):
        what = "is not a folder" if os.path.exists(base_dir) else "does not exist"
        raise ValueError(f"base_dir = {os.fspath(base_dir)!r} {what}; accepted: an existing "
                         "folder (relative data paths are read from it) or None")


def check_sweep_label(sweep: Any) -> None:
    """``sweep`` (the id the points are stored under) is a non-empty str (TypeError or
    ValueError naming it otherwise: ``sweep=3`` was stored as the sweep "3")."""
    if not isinstance(sweep, str):
        raise TypeError(f"sweep = {sweep!r:.60} has the wrong type; accepted: a non-empty "
                        "string, the sweep's id (e.g. sweep_id(config))")
    if not sweep.strip():
        raise ValueError(f"sweep = {sweep!r} is empty; accepted: a non-empty string, the "
                         "sweep's id (e.g. sweep_id(config))")


def check_total(total: Any) -> None:
    """``total`` (the number of points of a generator) is None or an integer >= 0."""
    import numbers

    if total is None:
        return
    if isinstance(total, bool) or not isinstance(total, numbers.Integral):
        raise TypeError(f"total = {total!r:.60} has the wrong type; accepted: an integer >= 0 "
                        "(the number of points) or None")
    if total < 0:
        raise ValueError(f"total = {total!r} is negative; accepted: an integer >= 0 (the "
                         "number of points) or None")


def check_grid(grid: Any) -> None:
    """``grid`` (the order of a sweep's values, :func:`grid_order`) is None or a dict of
    ``{dotted key (str): list or tuple of values}`` (TypeError naming it otherwise: ``grid=5``
    was an AttributeError after the sweep's size was recorded in the store)."""
    if grid is None:
        return
    if not isinstance(grid, dict):
        raise TypeError(f"grid = {grid!r:.60} has the wrong type; accepted: a dict of "
                        "{\"section.key\": [values]} (from grid_order) or None")
    for key, values in grid.items():
        if not isinstance(key, str) or not isinstance(values, list | tuple):
            raise TypeError(f"grid[{key!r:.40}] = {values!r:.60} has the wrong type; accepted: "
                            "a list of the values of a \"section.key\" (from grid_order)")


def check_limited(limited: Any) -> None:
    """``limited`` is True or False (TypeError naming it otherwise: ``limited="no"`` was
    truthy)."""
    if not isinstance(limited, bool | np.bool_):
        raise TypeError(f"limited = {limited!r:.60} has the wrong type; accepted: True or False")


POINT_FIELDS = ("id", "name", "config")
"""What :func:`run_points` reads of each point (a :class:`SweepPoint` has them all)."""


def checked_points(points: Any) -> Iterator[SweepPoint]:
    """``points``, each checked as it is taken: an iterable (TypeError naming it otherwise)
    whose items have a str ``id``, a ``name`` and a dict ``config`` (TypeError naming the
    item and its index: ``run_points([1, 2], ...)`` failed with "'int' object has no
    attribute 'id'")."""
    if isinstance(points, str | bytes | dict) or not isinstance(points, Iterable):
        raise TypeError(f"points = {points!r:.60} has the wrong type; accepted: an iterable "
                        "of SweepPoint (from expand or iter_points)")

    def each() -> Iterator[SweepPoint]:
        for i, p in enumerate(points):
            if not (all(hasattr(p, f) for f in POINT_FIELDS) and isinstance(p.id, str)
                    and p.id and isinstance(p.config, dict)):
                raise TypeError(f"points[{i}] = {p!r:.60} has the wrong type; accepted: a "
                                "SweepPoint (from expand or iter_points)")
            yield p

    return each()


GRID_ORDER_CHECKS = 100
"""Values of one swept key :func:`grid_order` validates to learn how the configs hold them
(1.7 ms each here); further values are recorded as given."""


def grid_order(base: dict[str, Any], grid: dict[str, list], *,
               base_dir: str | os.PathLike | None = None) -> dict[str, list]:
    """``{swept key: [its distinct values in the grid's order]}``, each value as the
    validated configs hold it (``"SGD"`` is ``"sgd"``): the order a report draws the sweep's
    points in (:meth:`~depthlab.experiments.store.Store.set_sweep_grid`), whatever order they
    finished in. A key of numbers only gets ``[]`` (a report orders numbers ascending
    itself; a million seeds were a million validations); the first
    :data:`GRID_ORDER_CHECKS` values of another key are validated, a value refused alone on
    the base (a swept combination lifts it), one the config stores elsewhere
    (``"train.momentum"`` in ``optimizer_kwargs``) or past that count is kept as given."""
    from .grid import _body, _distinct, _point_config

    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    body = _body(base)
    out: dict[str, list] = {}
    for key, values in grid.items():
        values = list(values)
        read: list = []
        seen: set[str] = set()  # (a list's `in` made 10,000 file names 50 million compares)
        if not all(number(v) for v in values):
            for k, v in enumerate(_distinct(values)):
                node: Any = v
                if k < GRID_ORDER_CHECKS:
                    try:
                        node = _point_config(body, {key: v}, base_dir)
                        for part in key.split("."):
                            node = node[part]
                    except (ConfigError, KeyError, TypeError):
                        node = v
                mark = json.dumps(node, sort_keys=True, default=str)
                if mark not in seen:
                    seen.add(mark)
                    read.append(node)
        out[key] = read
    return out


EXECUTOR_METHODS = ("check", "expect", "run", "__enter__", "__exit__")
"""The methods a sweep calls on its executor: an object that is not an :class:`Executor` but
has them all (a test's or a user's own, duck-typed) is one."""


def _executor(executor: Executor | None, jobs: int, cluster: Any) -> Executor:
    """``executor``, or :func:`make_executor` of ``jobs`` and ``cluster``; ``executor`` beside
    a ``cluster`` or ``jobs`` other than 1 is refused (one of them was silently ignored)."""
    if executor is None:
        return make_executor(jobs, cluster)
    if not isinstance(executor, Executor) and not all(
            callable(getattr(executor, name, None)) for name in EXECUTOR_METHODS):
        raise TypeError(f"executor = {executor!r:.60} has the wrong type; accepted: an "
                        "Executor (e.g. InProcess(), LocalPool(2), DaskExecutor(address)), an "
                        "object with its methods (check, expect, run, and with-statement's) or "
                        "None (then jobs or cluster choose)")
    if cluster is not None or jobs != 1:
        given = f"cluster = {cluster!r}" if cluster is not None else f"jobs = {jobs!r}"
        raise ValueError(f"executor = {executor!r} and {given} do not go together; give one")
    return executor


def data_contents(base: dict[str, Any], grid: dict[str, list], *,
                  base_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """``{"data_contents": [[path, fingerprint], ...]}`` of the data files the grid's points
    read (the validated ``base``'s ``data.path`` and each swept ``"data.path"``), mixed into
    the sweep id as the run ids take them: the same grid over an edited file is another sweep
    (rerun after the edit, its points ran under new ids but the old data's runs still counted
    as points of the sweep: 6 runs of a 4-point grid in its report). Empty without a file (the
    id is unchanged). Each file is sized from its header first: one too large for memory is
    not read (its points refuse it, those within ``--limit``)."""
    from .grid import _body, _distinct, _point_config
    from .runner import check_data_file

    configs = [base]
    if "data.path" in grid:  # the base's file is read by no point
        configs = []
        for v in _distinct(grid["data.path"]):
            try:
                configs.append(_point_config(_body(base), {"data.path": v}, base_dir))
            except ConfigError:  # refused alone (check_values said so) or with another value
                continue
    contents: dict[str, str | None] = {}
    for cfg in configs:
        path = cfg["data"].get("path")
        if isinstance(path, str) and path and path not in contents:
            try:
                check_data_file(cfg)
            except ExperimentError:  # too large to read: its points (if any run) refuse it
                contents[path] = None
                continue
            contents[path] = data_digest(cfg)
    return {"data_contents": sorted(contents.items())} if contents else {}


def check_workers_memory(executor: Executor, points: list[SweepPoint], store: Store) -> None:
    """The points left to compute (not stored as finished/diverged, not refused) that run at
    once on ``executor.local_workers`` processes of this machine must fit in memory together
    with the workers: the largest ``workers`` of them plus ``executor.worker_bytes`` per worker
    (``WORKER_BYTES``; 0 for a caller's running Dask cluster, whose workers on this machine
    count one point per thread). Raises
    :class:`ExperimentError` naming the largest point and how many workers fit (each point
    alone passed the runner's check, so ``--jobs 4`` of 3 GiB points on 8 GiB started them
    all and ran out of memory)."""
    workers = _workers_here(executor)
    if workers < 1:
        return
    from .runner import memory_need

    needs = []
    for p in points:
        if getattr(p, "error", None) is not None or store.has_run(p.id, DONE_STATUSES):
            continue
        try:
            need = memory_need(p.config)
        except (KeyError, TypeError, ValueError):  # not a validated config: its worker says
            need = None
        if need is not None:
            needs.append(need)
    _check_needs(executor, workers, needs)


def check_grid_memory(executor: Executor, raw: dict[str, Any], grid: dict[str, list], *,
                      base_dir: str | os.PathLike | None = None,
                      limit: int | None = None) -> None:
    """:func:`check_workers_memory` for a grid too large to list (above ``WORK_POINTS``
    points, streamed): its points grouped by the values their memory depends on
    (:func:`~depthlab.experiments.grid.memory_groups`), each group's need counted once per
    point up to the number of workers; stored points are counted too (they are not looked
    up one by one). A grid of 2,001 points of 258 MiB ran two at once on 600 MiB."""
    workers = _workers_here(executor)
    if workers < 1:
        return
    from .grid import memory_groups
    from .runner import memory_need

    needs = []
    for config, count in memory_groups(raw, grid, base_dir=base_dir, limit=limit):
        try:
            need = memory_need(config)
        except (KeyError, TypeError, ValueError):
            need = None
        if need is not None:
            needs.extend([need] * min(count, workers))
    _check_needs(executor, workers, needs)


def _check_needs(executor: Executor, workers: int, needs: list[tuple[int, str]]) -> None:
    """:class:`ExperimentError` unless the ``workers`` largest of ``needs`` (bytes, what)
    fit in memory beside ``workers`` worker processes."""
    from ..memory import MemoryRefusal, available_memory, check_fits, format_bytes
    from .executors.base import WORKER_BYTES

    needs = sorted(needs, key=lambda n: -n[0])
    k = min(workers, len(needs))
    if k < 1:
        return
    # workers started for the sweep cost their own memory; a caller's running cluster's
    # are already counted by the memory available, as this process is
    per_worker = (0 if isinstance(executor, InProcess)
                  else getattr(executor, "worker_bytes", WORKER_BYTES))
    _check_largest_alone(needs[0], per_worker)
    if k < 2:
        return

    def total(n: int) -> int:
        return n * per_worker + sum(b for b, _ in needs[:n])

    beside = (f" beside {workers} worker processes of {format_bytes(per_worker)}"
              if per_worker else "")
    try:
        check_fits(total(k), f"{executor.description}: {k} points at once (the largest, "
                   f"{needs[0][1]}, {format_bytes(needs[0][0])}){beside}")
    except MemoryRefusal as e:
        avail = available_memory()
        fit = max((n for n in range(1, k) if total(n) <= avail), default=1)
        use = (f"use {fit} worker process{'es' * (fit > 1)}" if per_worker else
               f"give its workers on this machine {fit} thread{'s' * (fit > 1)} in all")
        raise ExperimentError(f"{e}; at most {fit} of these points fit at once: "
                              f"{use}") from None


def check_histories(executor: Executor, points: list[SweepPoint], store: Store) -> None:
    """The points left to compute on this machine whose training history cannot fit in
    memory (:func:`~depthlab.experiments.runner.check_history`) are refused before any point
    runs: ``train.epochs = 10**12`` in a grid was stored as failed after the points before it
    trained (one process) or beside them (``--jobs 2``). Screened without the data by a lower
    bound, ``runner.history_bytes`` of ``min(epochs, max_steps)`` steps (an epoch has at least
    one step; its probes counted);
    only a point past it has its data loaded (once per data set), for the exact count and
    line. Not for workers elsewhere (their memory is their own) nor ``train.patience``."""
    if _workers_here(executor) < 1:
        return
    _screen_histories(p.config for p in points
                      if getattr(p, "error", None) is None
                      and not store.has_run(p.id, DONE_STATUSES))


def check_grid_histories(executor: Executor, raw: dict[str, Any], grid: dict[str, list], *,
                         base_dir: str | os.PathLike | None = None,
                         limit: int | None = None) -> None:
    """:func:`check_histories` for a grid too large to list (above ``WORK_POINTS`` points,
    streamed): one point of each group of points sharing the values their memory and history
    depend on (:func:`~depthlab.experiments.grid.memory_groups` with
    ``MEMORY_FREE_KEYS - HISTORY_KEYS`` free) is screened; stored points are not looked up. A
    grid of 2,001 points of ``train.epochs = 10**12`` stored 2,001 failed points (77 s, exit 1)
    where 2,000 were refused at once (exit 2)."""
    if _workers_here(executor) < 1:
        return
    from .grid import HISTORY_KEYS, MEMORY_FREE_KEYS, memory_groups

    _screen_histories(config for config, _count in memory_groups(
        raw, grid, base_dir=base_dir, limit=limit,
        free_keys=MEMORY_FREE_KEYS - HISTORY_KEYS))


def _screen_histories(configs: Iterable[dict[str, Any]]) -> None:
    """:class:`ExperimentError` for the first of ``configs`` (points to compute here) whose
    history cannot fit in memory: screened without the data by the lower bound
    ``runner.history_bytes`` of ``min(epochs, max_steps)`` steps, then, past it, the exact
    :func:`~depthlab.experiments.runner.check_history` on its data's training rows (loaded
    once per data set)."""
    from ..memory import available_memory
    from .runner import check_history, history_bytes, load_data

    avail = available_memory()
    rows: dict[str, int | None] = {}
    for config in configs:
        t = config["train"]
        bounds = [int(v) for v in (t.get("epochs"), t.get("max_steps")) if v is not None]
        if t.get("patience") is not None or not bounds:
            continue
        if history_bytes(config, min(bounds), 0) <= avail:
            continue
        key = json.dumps([config["data"], config["model"].get("dtype"), t.get("loss")],
                         sort_keys=True, default=str)
        if key not in rows:
            try:
                rows[key] = int(load_data(config).sizes["train"])
            except Exception:  # noqa: BLE001 - a data set it cannot load: its point says so
                rows[key] = None
        if rows[key] is not None:
            try:
                check_history(config, rows[key])
            except ExperimentError as e:
                raise ExperimentError(f"a point of the grid, {e}; no point ran") from None


def _workers_here(executor: Executor) -> int:
    """Points ``executor`` computes at once on this machine: its ``local_workers``, or 1 for
    :class:`InProcess` (``--jobs 1``: this process); 0 where its workers are elsewhere (a
    remote scheduler's), whose memory this machine cannot tell."""
    workers = getattr(executor, "local_workers", 0) or 0
    return max(workers, 1) if isinstance(executor, InProcess) else workers


def _check_largest_alone(largest: tuple[int, str], per_worker: int) -> None:
    """:class:`ExperimentError` unless the largest point (bytes, what) fits in memory by
    itself, beside the one worker process (``per_worker`` bytes) that would compute it:
    ``bytes + per_worker <= available``. Checked before any point runs: a point that cannot
    fit even alone was stored as failed after the points before it trained (one process), or
    was told "at most 1 of these points fit at once: use 1 worker process", a cure that
    could not work (``--jobs 2``)."""
    from ..memory import MemoryRefusal, check_fits, format_bytes

    beside = f" (beside its worker process of {format_bytes(per_worker)})" if per_worker else ""
    try:
        check_fits(largest[0] + per_worker, f"a point of the grid, {largest[1]}{beside},")
    except MemoryRefusal as e:
        raise ExperimentError(f"{e}; no point ran: leave that point out of the grid "
                              "(a smaller network, batch or data set)") from None


def _say_resumed(say: Callable[[str], None], sweep: str, store: Store,
                 points: list | None, skipped_first: int) -> None:
    """Tell, before any point runs, that a sweep run again skips its stored points (a rerun
    of an interrupted sweep said so only in its last line, after the rest had run):
    ``sweep sw-...: 2 of its 6 points are already stored (finished or diverged): skipped; 4
    to run`` (and how many of those are stored as failed, which run again). ``points``: the
    listed points (None for a grid streamed lazily, whose count
    is known only at the end: then the ``skipped_first`` stored points met before the first
    one to run are named); nothing is said when no point is stored."""
    if points is not None:
        ids = {p.id for p in points}
        stored = sum(1 for i in ids if store.has_run(i, DONE_STATUSES))
        # (a refused combination, stored failed again without running, is not counted)
        failed = len({p.id for p in points if getattr(p, "error", None) is None
                      and store.has_run(p.id, ("failed",))})
        again = (f" (of them {failed:,} stored as failed, run again)" if failed else "")
        if stored == len(ids):
            say(f"sweep {sweep}: all its {stored:,} points are already stored (finished or "
                "diverged): nothing to run")
        elif stored:
            say(f"sweep {sweep}: {stored:,} of its {len(ids):,} points are already stored "
                f"(finished or diverged): skipped; {len(ids) - stored:,} to run{again}")
        elif failed:
            say(f"sweep {sweep}: {failed:,} of its {len(ids):,} points are stored as failed: "
                "run again")
    elif skipped_first:
        say(f"sweep {sweep}: its first {skipped_first:,} points are already stored (finished "
            "or diverged): skipped, as every stored point met later is")


def run_points(points: Iterable[SweepPoint], out_dir: str | os.PathLike, *, sweep: str,
               jobs: int = 1, cluster: Any = None, executor: Executor | None = None,
               echo: Callable[[str], None] | None = print, progress: bool = False,
               kind: str = "sweep-point", total: int | None = None,
               grid: dict[str, list] | None = None, limited: bool = False) -> SweepResult:
    """Run the given points (skipping those stored as finished/diverged) like
    :func:`run_sweep`; for sweeps that are not a product grid (e.g. ``depthlab demo``).
    ``total`` is the number of points when ``points`` is a generator; ``grid`` (optional):
    the order of the grid's values (:func:`grid_order`), recorded for its report.
    ``limited``: the points are the first of a larger grid (``--limit``); the sweep's recorded
    size (:meth:`Store.set_sweep_size`) is then ``max(recorded, points here)``, so a
    ``--limit 4`` run after a longer one leaves its report saying how many are left."""
    check_kind(kind)  # refused before the store is opened or a point computed
    check_echo(echo)
    check_progress(progress)
    check_sweep_label(sweep)
    check_total(total)
    check_grid(grid)
    check_limited(limited)
    points = checked_points(points)
    executor = _executor(executor, jobs, cluster)
    if total is None:
        points = list(points)
        total = len(points)
    elif total <= WORK_POINTS:  # a bad point refused before the store is created
        points = list(points)
    say = echo or (lambda _line: None)
    t0 = time.perf_counter()
    result = SweepResult(sweep, total)
    executor.check()  # an unreachable scheduler: before the store is created
    store = Store(out_dir)
    try:  # a read-only or full store fails before any point is computed (or Dask started)
        store.check_writable()
        # a limited run of a sweep run further before keeps the larger size ("6 of 16", not
        # "6 of 4" read as finished)
        prior = store.sweep_sizes().get(sweep, 0) if limited else 0
        if total <= WORK_POINTS:  # points that cannot fit: refused before the sweep is
            points = list(points)  # recorded in the store (it was listed, with no point)
            check_workers_memory(executor, points, store)
            check_histories(executor, points, store)

        def set_size(n: int) -> None:
            store.set_sweep_size(sweep, max(n, prior))

        set_size(total)  # a report of it running says "17 of 24"
        if grid:  # its report draws the points in the grid's order, not as they finished
            store.set_sweep_grid(sweep, grid)
    except BaseException:
        store.close()
        raise
    prog = SweepProgress(total, echo, bar=progress, workers=executor.local_workers or 1)
    say = prog.say  # above the bar, once one is drawn
    in_flight: set[str] = set()
    failed_here: set[str] = set()  # points this sweep stored as failed (a repeat: skipped)
    found: list[str] = []  # points found stored (another sweep ran them): recorded as ours

    def remember(run_id: str) -> None:
        found.append(run_id)
        if len(found) >= MEMBERS_BATCH:
            record_found()

    def record_found() -> None:
        store.add_sweep_points(sweep, found)
        found.clear()

    listed: set[str] = set()  # ids of the points met so far: a second one is a repeat
    expected = [total]  # points that may still be handed to the executor

    def not_sent() -> None:
        # a Dask executor sizes its chunks from the points left: a resumed sweep (900 of 1000
        # stored) sent its 100 left to one worker in one chunk while the other idled
        expected[0] -= 1
        executor.expect(expected[0])

    def tasks() -> Iterator[Task]:
        for p in points:
            repeat = p.id in listed
            listed.add(p.id)
            stored = (p.id not in in_flight and p.id not in failed_here
                      and store.has_run(p.id, DONE_STATUSES))
            if stored or p.id in in_flight or p.id in failed_here:
                if stored and not repeat:
                    remember(p.id)
                result.skipped += 1
                result.repeated += repeat
                prog.skip(p.id)
                not_sent()
                continue
            prog.started()
            if getattr(p, "error", None) is not None:  # a refused combination: not computed
                commit(failed_record(p.config, p.id, p.error, name=p.name, kind=kind,
                                     sweep=sweep))
                not_sent()
                continue
            in_flight.add(p.id)
            prog.sent(p.id)
            # the data file's fingerprint the id holds: a worker with another file fails it
            content = (p.data_digest if isinstance(p, SweepPoint) else data_digest(p.config))
            yield Task(p.id, p.name, p.config, sweep, kind, content)

    def done(task: Task, rec: RunRecord) -> None:
        if task.id not in in_flight:
            return  # delivered again (a re-run batch of points): committed already
        in_flight.discard(task.id)
        prog.returned(task.id)
        if store.has_run(task.id, DONE_STATUSES):
            # stored meanwhile by another process (`depthlab run` of the same config, a sweep
            # of an overlapping grid): kept, a point of this sweep too. It was replaced: a
            # user's named run became this sweep's point (its name and kind lost), and a
            # failed retry would have replaced a finished run
            remember(task.id)
            result.skipped += 1
            prog.skip(task.id)
            return
        commit(rec)

    storing: list[RunRecord] = []  # the record being stored: an interrupt right after its
    # transaction (before it was counted) said "24 point(s) stored" beside 25 stored

    def commit(rec: RunRecord) -> None:
        storing[:] = [rec]
        store.add_run(rec)  # one transaction: the whole run or nothing
        storing.clear()
        count(rec)

    def count(rec: RunRecord) -> None:
        if rec.status == "failed":
            failed_here.add(rec.id)
        result.counts[rec.status] = result.counts.get(rec.status, 0) + 1
        if rec.status == "failed" and len(result.failures) < MAX_FAILURES_KEPT:
            first = (rec.error or "unknown error").strip().splitlines()[0]
            result.failures.append((rec.id, rec.name or rec.id, first))
        prog.point(rec.id, rec.name or rec.id, rec.status, rec.metrics or {}, rec.error)

    try:
        if total <= WORK_POINTS:  # (listed above) the time left weighs each point by its work
            prog.set_work([(p.id, point_work(p.config)) for p in points])
            distinct = len({p.id for p in points})  # a grid listing a point twice ([7, 7, 8])
            if distinct != total:  # stores it once: "2 of 3 points stored" read as unfinished
                set_size(distinct)
        # the stored points are skipped (and refused combinations stored) before the executor
        # starts, and it starts only if a point is left: the same sweep again started a
        # LocalCluster (4-9 s here) or connected to a scheduler to compute nothing
        listed_now = total <= WORK_POINTS
        if listed_now:  # said before any point is stored (a refused one is, as it is met)
            _say_resumed(say, sweep, store, points, 0)
        todo = tasks()
        first = next(todo, None)
        if first is not None:
            if not listed_now:
                _say_resumed(say, sweep, store, None, result.skipped - result.repeated)
            # told before it starts: a local:N cluster forks no more workers than points left
            executor.expect(expected[0])
            with executor:
                say(f"sweep {sweep}: running on {executor.description}; results: "
                    f"{store.path}")
                prog.t0 = None  # the time left counts from here, not the cluster's start
                prog.started()
                # points computed at once: a pool's workers (a cluster's once started), one
                # in this process, any number sent to a remote cluster
                prog.slots = lambda: executor.slots  # asked at each beat: workers come and go
                prog.watch()  # a line every few seconds while points run and none is printed
                executor.run(itertools.chain([first], todo), done)
        record_found()
        if len(listed) != total:  # every point met: the distinct ones are the sweep's size
            set_size(len(listed))
    except KeyboardInterrupt as e:
        # the stored points it found count as its own, unless another process holds the
        # store's lock: the interrupt waited for it (up to the store's 120 s, "Ctrl-C stops"
        # said after the Ctrl-C); a rerun finds them again
        with contextlib.suppress(StoreError), warnings.catch_warnings(), \
                store.lock_wait(INTERRUPT_LOCK_WAIT_S):
            warnings.simplefilter("ignore")
            if storing and store.has_run(storing[0].id, [storing[0].status]):
                count(storing.pop())  # its transaction was committed: a point of this sweep
            record_found()
        if isinstance(e, SweepInterrupted):
            raise
        result.seconds = time.perf_counter() - t0
        raise SweepInterrupted(result) from e
    finally:
        prog.close()
        store.close()
        result.seconds = time.perf_counter() - t0
    return result
