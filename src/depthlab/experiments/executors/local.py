"""A local process pool that stops when told, at once: ``depthlab sweep --jobs N``.

Each worker is a child Python process (``subprocess``, no fork server, no semaphores, so no
resource-tracker warnings) connected to the client by a socket pair carrying pickled messages:
the client keeps up to :data:`PREFETCH` tasks queued at each worker (so a worker starts its
next point while the client commits the last one) and receives each ``RunRecord`` in order.

Signals and process lifetime:

* Workers ignore SIGINT: a Ctrl-C at a terminal reaches the whole process group, and only the
  client decides. It is blocked while a worker starts, so it is neither lost by the client nor
  delivered to a worker before the worker has ignored it.
* On any exception in the client (Ctrl-C, SIGTERM turned into an exception by the CLI, a store
  write that failed) every worker is killed with SIGKILL at once: queued points never start,
  running points are abandoned, and nothing half-done reaches the store (the client commits
  whole records only).
* A worker whose parent dies exits by itself: ``PR_SET_PDEATHSIG`` on Linux, and everywhere a
  watchdog thread that polls ``os.getppid()`` every 0.2 s.
* A worker that dies mid-point (killed, out of memory) has its point re-run by a fresh worker
  up to ``retries`` more times; after that the point's record is ``failed`` with the cause.
"""

from __future__ import annotations

import collections
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from multiprocessing.connection import Connection, wait
from pathlib import Path

from ...progress import warning_line
from .base import Compute, Done, Executor, Task, check_workers, compute_point, crash_record

_SIGNALS = {signal.SIGINT, signal.SIGTERM}
PREFETCH = 2  # tasks sent ahead to each worker
_BLAS_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _die_with_parent(parent: int) -> None:
    """Exit when the process ``parent`` is gone (prctl on Linux, else a polling thread)."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.2)
        os._exit(1)

    threading.Thread(target=watch, name="depthlab-parent-watch", daemon=True).start()


def worker_main() -> None:
    """Entry point of a worker process: ``argv = [fd, parent pid]``. Receives
    ``(seq, compute, task)`` messages and answers ``(seq, "ok", record)`` or
    ``(seq, "error", text)``; ``None`` or end of file stops it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
    warnings.formatwarning = warning_line  # a point's warning: one line, as the client's
    fd, parent = int(sys.argv[1]), int(sys.argv[2])
    _die_with_parent(parent)
    conn = Connection(fd)
    while True:
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):
            return
        try:
            msg = pickle.loads(data)
        except Exception as e:  # noqa: BLE001 - e.g. the compute function is not importable
            conn.send((None, "error", f"cannot read the task: {type(e).__name__}: {e}"))
            continue
        if msg is None:
            return
        seq, compute, task = msg
        try:
            reply = (seq, "ok", compute(task))
        except Exception as e:  # noqa: BLE001 - reported to the client, the worker lives on
            reply = (seq, "error", f"{type(e).__name__}: {e}")
        try:
            conn.send(reply)
        except (pickle.PicklingError, TypeError, AttributeError) as e:
            conn.send((seq, "error", f"cannot send the result back: {type(e).__name__}: {e}"))
        except (BrokenPipeError, ConnectionError, OSError):
            return


class _Worker:
    """The client's handle on one worker process."""

    def __init__(self, env: dict[str, str]) -> None:
        ours, theirs = socket.socketpair()
        cmd = [sys.executable, "-c",
               "from depthlab.experiments.executors.local import worker_main; worker_main()",
               str(theirs.fileno()), str(os.getpid())]
        old = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        try:
            self.proc = subprocess.Popen(cmd, pass_fds=(theirs.fileno(),), env=env,
                                         stdin=subprocess.DEVNULL, close_fds=True)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
            theirs.close()
        self.conn = Connection(ours.detach())
        #: (task, attempt) sent and not answered yet, oldest (the running one) first
        self.queue: collections.deque[tuple[Task, int]] = collections.deque()

    def send(self, compute: Compute, task: Task, attempt: int) -> None:
        self.queue.append((task, attempt))
        self.conn.send((len(self.queue), compute, task))

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.kill()
            except ProcessLookupError:
                pass

    def death(self) -> str:
        """Why the process ended (waits for it)."""
        try:
            code = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill()
            code = self.proc.wait()
        if code < 0:
            try:
                return f"killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exit status {code}"


def worker_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The workers' environment: one BLAS thread each unless set, and this ``depthlab`` on
    ``PYTHONPATH`` (so a source checkout works without installing)."""
    env = dict(os.environ if base is None else base)
    for var in _BLAS_VARS:
        env.setdefault(var, "1")
    src = str(Path(__file__).resolve().parents[3])
    parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if src not in parts:
        env["PYTHONPATH"] = os.pathsep.join([src, *parts])
    return env


class LocalPool(Executor):
    """``workers`` child processes, started as points need them; a point whose worker dies
    is retried ``retries`` times by a fresh worker, then stored as ``failed``."""

    def __init__(self, workers: int, *, retries: int = 2, compute: Compute = compute_point,
                 env: dict[str, str] | None = None) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be a positive integer, got {workers!r}")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be an integer >= 0, got {retries!r}")
        check_workers(workers, f"jobs = {workers}")  # refused before a process starts
        self.workers = workers
        self.local_workers = workers
        self.retries = retries
        self.compute = compute
        self.env = worker_env(env)
        self.description = f"{workers} process" + ("es" if workers > 1 else "")
        self._pool: list[_Worker] = []

    def close(self) -> None:
        """Ask idle workers to stop, kill the rest; wait for all (at most ~2 s)."""
        pool, self._pool = self._pool, []
        for w in pool:
            if not w.queue and w.proc.poll() is None:
                try:
                    w.conn.send(None)
                except OSError:
                    pass
            else:
                w.kill()
        deadline = time.monotonic() + 2.0
        for w in pool:
            try:
                w.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                w.kill()
                w.proc.wait()
            w.conn.close()

    def _kill_all(self) -> None:
        for w in self._pool:  # SIGKILL first, every one, then reap
            w.kill()
        for w in self._pool:
            w.proc.wait()
            w.conn.close()
        self._pool = []

    def run(self, tasks: Iterator[Task], done: Done) -> None:
        tasks = iter(tasks)
        retry: collections.deque[tuple[Task, int]] = collections.deque()
        exhausted = False
        try:
            while True:
                # Fill: a new worker while there are fewer than asked for, else the least
                # loaded one, up to PREFETCH tasks each (the next point waits in the worker's
                # socket while the client commits the previous one).
                while retry or not exhausted:
                    load = min((len(w.queue) for w in self._pool), default=PREFETCH)
                    if len(self._pool) >= self.workers and load >= PREFETCH:
                        break
                    if retry:
                        task, attempt = retry.popleft()
                    else:
                        task = next(tasks, None)
                        if task is None:
                            exhausted = True
                            break
                        attempt = 1
                    if len(self._pool) < self.workers and load > 0:
                        w = _Worker(self.env)
                        self._pool.append(w)
                    else:
                        w = min(self._pool, key=lambda x: len(x.queue))
                    w.send(self.compute, task, attempt)
                busy = [w for w in self._pool if w.queue]
                if not busy:
                    return
                ready = wait([w.conn for w in busy], timeout=1.0)
                for w in busy:
                    if w.conn in ready:
                        self._receive(w, retry, done)
        except BaseException:
            self._kill_all()
            raise

    def _receive(self, w: _Worker, retry: collections.deque, done: Done) -> None:
        try:
            _seq, kind, payload = w.conn.recv()
        except (EOFError, OSError):
            why = w.death()
            w.conn.close()
            self._pool.remove(w)
            (task, attempt), *queued = w.queue
            retry.extendleft(reversed(queued))  # never started: same attempt, first in line
            if attempt <= self.retries:
                retry.appendleft((task, attempt + 1))
            else:
                done(task, crash_record(task, f"worker process died ({why}) in each of "
                                              f"{attempt} tries"))
            return
        task, _attempt = w.queue.popleft()  # answers come in the order tasks were sent
        done(task, payload if kind == "ok" else crash_record(task, str(payload)))
