"""Sweeps: expand a ``[sweep]`` grid into validated points and run them in parallel
processes, each point written to the store (one transaction) by the process that ran it.

Resuming is automatic: a point whose id is already stored as ``finished`` or ``diverged`` is
skipped; ``failed`` points are run again.
"""

from __future__ import annotations

import copy
import itertools
import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

from .config import ConfigError, canonical_json, run_id, set_dotted, validate
from .store import Store

DONE_STATUSES: tuple[str, ...] = ("finished", "diverged")


@dataclass
class SweepPoint:
    """One grid point: its run id, a short name (``activation=tanh,seed=0``), the overrides
    and the validated config."""

    id: str
    name: str
    overrides: dict[str, Any]
    config: dict[str, Any]


@dataclass
class SweepResult:
    """What :func:`run_sweep` did: the sweep id, every point, the ids it skipped (already
    stored) and ``{id: status}`` of the points it ran."""

    sweep: str
    points: list[SweepPoint]
    skipped: list[str] = field(default_factory=list)
    statuses: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def count(self, status: str) -> int:
        return sum(1 for s in self.statuses.values() if s == status)


def _short(key: str, keys: list[str]) -> str:
    tail = key.rsplit(".", 1)[-1]
    return tail if sum(k.rsplit(".", 1)[-1] == tail for k in keys) == 1 else key


def _value_str(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, list | tuple):
        return "[" + ",".join(_value_str(x) for x in v) + "]"
    return str(v)


def sweep_id(raw: dict[str, Any]) -> str:
    """Stable id of a sweep: a hash of its base config and grid."""
    import hashlib

    return "sw-" + hashlib.sha256(canonical_json(raw).encode()).hexdigest()[:10]


def expand(raw: dict[str, Any], *, base_dir: str | os.PathLike | None = None,
           grid: dict[str, list] | None = None) -> list[SweepPoint]:
    """The grid points of ``raw`` (a config dict as read from TOML, with ``[sweep]``).

    Every combination (``itertools.product`` in the order the keys are written) overrides the
    dotted keys of the base config and is validated on its own, so a bad value anywhere in the
    grid fails before anything runs. ``"model.depth" = [...]`` rebuilds the hidden sizes as
    ``[width] * depth`` (see :mod:`depthlab.experiments.config`). Points with identical
    validated configs are kept once.
    """
    base = validate(raw, base_dir=base_dir)
    if grid is None:
        grid = base.get("sweep") or {}
    body = {k: v for k, v in raw.items() if k != "sweep"}
    keys = list(grid)
    points: list[SweepPoint] = []
    seen: set[str] = set()
    for combo in itertools.product(*(grid[k] for k in keys)) if keys else [()]:
        point_raw = copy.deepcopy(body)
        overrides = dict(zip(keys, combo))
        for k, v in overrides.items():
            set_dotted(point_raw, k, v)
        try:
            cfg = validate(point_raw, base_dir=base_dir)
        except ConfigError as e:
            where = ", ".join(f"{k} = {_value_str(v)}" for k, v in overrides.items())
            raise ConfigError(f"sweep point ({where}): {e}", e.key) from None
        rid = run_id(cfg)
        if rid in seen:
            continue
        seen.add(rid)
        name = ",".join(f"{_short(k, keys)}={_value_str(v)}" for k, v in overrides.items())
        if base.get("name"):
            name = f"{base['name']}:{name}" if name else base["name"]
        points.append(SweepPoint(rid, name or rid, overrides, cfg))
    return points


def run_point(db_path: str, config: dict[str, Any], point_id: str, name: str,
              sweep: str | None, kind: str = "sweep-point") -> dict[str, Any]:
    """Run one point and write it to the store at ``db_path`` (one transaction). Any
    exception becomes a ``failed`` record. Returns a short summary dict (id, name, status,
    metrics, error). Runs in a worker process."""
    from .runner import execute, failed_record

    try:
        rec = execute(config, run_id=point_id, name=name, kind=kind, sweep=sweep, catch=True)
    except Exception as e:  # noqa: BLE001 - execute(catch=True) should not raise; be safe
        rec = failed_record(config, point_id, f"{type(e).__name__}: {e}", name=name,
                            kind=kind, sweep=sweep)
    with Store(db_path) as store:
        store.add_run(rec)
    return {"id": rec.id, "name": rec.name, "status": rec.status, "metrics": rec.metrics,
            "error": rec.error, "divergence": rec.divergence}


def _context() -> multiprocessing.context.BaseContext:
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


def run_sweep(raw: dict[str, Any], out_dir: str | os.PathLike, *, jobs: int = 1,
              base_dir: str | os.PathLike | None = None,
              echo: Callable[[str], None] | None = print,
              progress: bool = False, kind: str = "sweep-point") -> SweepResult:
    """Expand ``raw``'s grid and run every point not yet stored as finished/diverged.

    ``jobs > 1`` runs points in that many processes (``ProcessPoolExecutor``, forkserver or
    spawn start method); each worker writes its point to ``out_dir/depthlab.db`` itself, so a
    finished point survives even a SIGKILL of the whole process group. ``echo`` receives one
    line per event (None: silent).
    """
    points = expand(raw, base_dir=base_dir)
    sid = sweep_id({k: v for k, v in validate(raw, base_dir=base_dir).items() if k != "name"})
    return run_points(points, out_dir, sweep=sid, jobs=jobs, echo=echo, progress=progress,
                      kind=kind)


def run_points(points: list[SweepPoint], out_dir: str | os.PathLike, *, sweep: str,
               jobs: int = 1, echo: Callable[[str], None] | None = print,
               progress: bool = False, kind: str = "sweep-point") -> SweepResult:
    """Run the given points (skipping those stored as finished/diverged) like
    :func:`run_sweep`; for sweeps that are not a product grid (e.g. ``depthlab demo``)."""
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a positive integer, got {jobs!r}")
    say = echo or (lambda _line: None)
    sid = sweep
    t0 = time.perf_counter()
    store = Store(out_dir)
    db_path = str(store.path)
    stored = store.statuses()
    store.close()
    todo = [p for p in points if stored.get(p.id) not in DONE_STATUSES]
    todo_ids = {p.id for p in todo}
    result = SweepResult(sid, points, [p.id for p in points if p.id not in todo_ids])
    say(f"sweep {sid}: {len(points)} points; skipped {len(result.skipped)} already in the "
        f"store; running {len(todo)} with {min(jobs, max(len(todo), 1))} process(es)")
    bar = None
    if progress and todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), unit="run", dynamic_ncols=True)

    def done(summary: dict[str, Any], i: int) -> None:
        result.statuses[summary["id"]] = summary["status"]
        m = summary.get("metrics") or {}
        parts = [f"{k}={m[k]:.4g}" for k in ("train_loss", "val_acc", "test_acc")
                 if isinstance(m.get(k), int | float)]
        extra = ""
        if summary["status"] == "failed" and summary.get("error"):
            extra = " error: " + summary["error"].splitlines()[0]
        line = (f"[{i}/{len(todo)}] {summary['id']} {summary['name']}: {summary['status']} "
                + " ".join(parts) + extra)
        if bar is not None:
            bar.update(1)
            bar.write(line)
        else:
            say(line)

    try:
        if jobs == 1 or len(todo) <= 1:
            for i, p in enumerate(todo, 1):
                done(run_point(db_path, p.config, p.id, p.name, sid, kind), i)
        else:
            _run_parallel(todo, db_path, sid, kind, jobs, done)
    finally:
        if bar is not None:
            bar.close()
    result.seconds = time.perf_counter() - t0
    return result


def _run_parallel(todo: list[SweepPoint], db_path: str, sid: str, kind: str, jobs: int,
                  done: Callable[[dict[str, Any], int], None]) -> None:
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    n = 0
    with ProcessPoolExecutor(max_workers=min(jobs, len(todo)), mp_context=_context()) as pool:
        futures = {pool.submit(run_point, db_path, p.config, p.id, p.name, sid, kind): p
                   for p in todo}
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                p = futures[fut]
                n += 1
                try:
                    summary = fut.result()
                except BrokenProcessPool as e:
                    summary = _record_crash(db_path, p, sid, kind,
                                            f"worker process died: {e or 'BrokenProcessPool'}")
                except Exception as e:  # noqa: BLE001 - e.g. the store write failed
                    summary = _record_crash(db_path, p, sid, kind, f"{type(e).__name__}: {e}")
                done(summary, n)


def _record_crash(db_path: str, p: SweepPoint, sid: str, kind: str, error: str) -> dict:
    from .runner import failed_record

    rec = failed_record(p.config, p.id, error, name=p.name, kind=kind, sweep=sid)
    with Store(db_path) as store:
        if not store.has_run(p.id, DONE_STATUSES):
            store.add_run(rec)
    return {"id": p.id, "name": p.name, "status": "failed", "metrics": {}, "error": error}

