"""The executor interface: something that computes sweep points and hands each finished
:class:`~depthlab.experiments.store.RunRecord` back to the caller.

Executors only compute; the caller (the sweep client) is the single writer of the store and
commits every record it receives in one transaction. An executor calls ``done(task, record)``
in the caller's thread, once per task it took from the iterator, and takes tasks lazily (a
bounded number in flight), so a grid of any size costs bounded memory.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ..config import data_digest
from ..runner import ExperimentError
from ..store import RunRecord


class ClusterError(ExperimentError):
    """The executor cannot start or reach its workers (one-line message, exit status 2)."""


WORKER_BYTES = 100 * 2**20
"""Memory of one worker process at least (an interpreter with NumPy, pandas and the runner)."""


def check_workers(workers: int, what: str) -> None:
    """``workers`` processes (:data:`WORKER_BYTES` each) must fit in memory: a
    :class:`~depthlab.memory.MemoryRefusal` naming ``what`` before the first one starts."""
    if workers > 1:
        from ...memory import check_fits

        check_fits(workers * WORKER_BYTES, f"{what} ({workers:,} worker processes of at least "
                   "100 MiB each)")


@dataclass(frozen=True)
class Task:
    """One point to compute: its run id, name, validated config, sweep id and run kind;
    ``data_digest``: the content fingerprint of the config's ``data.path`` that the run id
    was computed from (None: not checked), so a worker reading another file fails the point
    (:func:`data_changed`)."""

    id: str
    name: str
    config: dict[str, Any]
    sweep: str | None
    kind: str = "sweep-point"
    data_digest: str | None = None


def data_changed(task: Task) -> str | None:
    """Why ``task`` must not be computed here: its ``data.path`` holds other content than the
    file its run id was computed from (a cluster machine with another copy, or the file
    edited after the sweep started), so its record would be stored under the id of data it
    was not trained on; None if it may be (a missing file: the loader says so)."""
    if task.data_digest is None:
        return None
    here = data_digest(task.config)
    if here == task.data_digest:
        return None
    path = task.config["data"].get("path")
    if path is None:  # a built-in data set the sweep read from a user's copy (its files)
        where = "the system copy (or none)" if here is None else f"other files (fingerprint {here})"
        return (f"DataChanged: data set {task.config['data'].get('name')!r} here is read from "
                f"{where}, not the copy the sweep computed this point's id from "
                f"({task.data_digest}): give every machine the same copy (data.options.path, or "
                "the data set's environment variable, e.g. DEPTHLAB_FASHION_MNIST)")
    if here is None:
        return None
    return (f"DataChanged: data.path {path!r} here has other content (fingerprint {here}) "
            f"than the file the sweep computed this point's id from ({task.data_digest}): it "
            "was edited after the sweep started, or this worker has another copy; run the "
            "sweep again once every machine has the file")


Compute = Callable[[Task], RunRecord]
Done = Callable[[Task, RunRecord], None]


def compute_chunk(compute: Compute, tasks: list[Task], tries: int = 1
                  ) -> tuple[list[RunRecord], float]:
    """The records of ``tasks`` computed one after another by ``compute`` (one Dask task for
    a chunk of points), and the seconds it took. A point whose ``compute`` raises is tried up
    to ``tries`` times, then becomes a ``failed`` record with the error; the others of the
    chunk are unaffected."""
    t0 = time.perf_counter()
    out = []
    for task in tasks:
        for attempt in range(max(1, tries)):
            try:
                out.append(compute(task))
                break
            except Exception as e:  # noqa: BLE001 - one point's error fails that point only
                if attempt + 1 >= max(1, tries):
                    out.append(crash_record(task, f"{type(e).__name__}: {e}"))
    return out, time.perf_counter() - t0


def compute_point(task: Task) -> RunRecord:
    """Run one point and return its record; any exception becomes a ``failed`` record with
    the error text. Runs in a worker (process, Dask worker or the caller)."""
    from ..runner import execute

    changed = data_changed(task)
    if changed is not None:  # not trained on data its id does not name
        return crash_record(task, changed)
    try:
        return execute(task.config, run_id=task.id, name=task.name, kind=task.kind,
                       sweep=task.sweep, catch=True)
    except Exception as e:  # noqa: BLE001 - execute(catch=True) should not raise; be safe
        return crash_record(task, f"{type(e).__name__}: {e}")


def crash_record(task: Task, error: str) -> RunRecord:
    """The ``failed`` record of a point whose worker could not return one."""
    from ..runner import failed_record

    return failed_record(task.config, task.id, error, name=task.name, kind=task.kind,
                         sweep=task.sweep)


class Executor(ABC):
    """Computes tasks; ``with executor:`` starts and stops its workers."""

    #: how the executor describes itself in the sweep's first line ("2 processes")
    description: str = ""
    #: worker processes on this machine computing a point each at once: their points' memory
    #: adds up here (0: points are computed in this process, checked one by one by the
    #: runner, or on other machines)
    local_workers: int = 0
    #: memory each of those workers takes once started, beside its points (0: the workers
    #: already run, a caller's Dask cluster, so the memory available already counts them)
    worker_bytes: int = WORKER_BYTES

    @property
    def slots(self) -> int | None:
        """Points this executor computes at once now, for the sweep's progress: of the points
        it has taken, at most this many count as running (the rest wait in its queue); None:
        not known. By default its workers on this machine (``local_workers``); an executor
        whose workers are elsewhere says how many threads they have (a Dask cluster's). Cheap
        (no question to a scheduler): read by the progress heartbeat's thread."""
        return self.local_workers or None

    def __enter__(self) -> Executor:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def check(self) -> None:  # noqa: B027 - optional hook
        """A quick look, before the store is opened, that :meth:`start` can succeed (a
        remote scheduler's port answers); raises :class:`ClusterError` if not."""

    def start(self) -> None:  # noqa: B027 - optional hook
        """Start workers (or connect to them); raises :class:`ClusterError` on failure."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Stop what :meth:`start` started (idempotent)."""

    def expect(self, total: int | None) -> None:  # noqa: B027 - optional hook
        """Told before :meth:`run` how many tasks it will be given at most (None: unknown),
        so an executor that batches tasks can size its batches; told again, fewer, while it
        runs, as the sweep skips points found stored."""

    @abstractmethod
    def run(self, tasks: Iterator[Task], done: Done) -> None:
        """Compute every task of ``tasks`` (taken lazily) and call ``done(task, record)`` for
        each in the caller's thread. On any exception (``KeyboardInterrupt`` included) queued
        tasks are dropped, running ones abandoned, and the exception propagates."""


class InProcess(Executor):
    """Points one after another in the calling process (``--jobs 1``)."""

    description = "this process"
    slots = 1  # type: ignore[assignment]  # one point at a time

    def __init__(self, compute: Compute = compute_point) -> None:
        self.compute = compute

    def run(self, tasks: Iterator[Task], done: Done) -> None:
        for task in tasks:
            try:
                record = self.compute(task)
            except Exception as e:  # noqa: BLE001 - as on a pool or Dask worker: that point
                # is failed with its message and the others run (a compute that raised
                # ended the whole sweep here, with a traceback)
                record = crash_record(task, f"{type(e).__name__}: {e}")
            done(task, record)
