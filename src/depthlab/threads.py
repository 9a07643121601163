"""How many BLAS threads a computation gets: chosen from the work and the idle cores.

A matrix product too small to split gains nothing from more threads and, on a busy machine,
loses a lot: the extra threads spin waiting for cores that other processes hold (a 30-layer
ReLU network of width 100 trained at 19 instead of 191 steps/s on a loaded 2-core machine).
So :func:`choose_threads` gives

* 1 thread when the largest product of a training step, ``batch * n_in * n_out``
  multiply-adds, is below :data:`SMALL_WORK` (2**24);
* otherwise the idle cores: the cores this process may run on minus the 1-minute load
  average of the *other* processes (at least 1). The load average counts this process too: one
  that has kept a core busy for minutes (a benchmark, a long sweep) adds about 1 to it and must
  not read that as a neighbour. Its own share is estimated as its CPU utilization since it
  started (CPU seconds / wall seconds) times ``1 - exp(-age / 60 s)``, the weight the kernel's
  exponentially damped 1-minute average has given a process of that age. While that average
  is falling (below the 5-minute one: other jobs have ended, and it still holds them for
  minutes), the other processes' tasks runnable now count instead where they are fewer.

An explicit setting always wins: ``DEPTHLAB_THREADS``, ``OMP_NUM_THREADS`` or
``OPENBLAS_NUM_THREADS``/``MKL_NUM_THREADS`` in the environment (the ``depthlab --threads N``
option sets them), or ``threads=`` passed to :func:`blas_threads`.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import os
import threading
import time
from collections.abc import Iterator, Sequence

SMALL_WORK = 2**24
THREADS_ENV = "DEPTHLAB_THREADS"
_USER_VARS = (THREADS_ENV, "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
MAX_THREADS = 4096
"""The most threads a setting may ask for (BLAS libraries take a C int and cap far lower;
10**23 failed inside ctypes as an internal error)."""
ACCEPTED = f"an integer >= 1 and <= {MAX_THREADS}"


def check_threads(n: object, what: str = "threads") -> int:
    """``n`` must be an integer in 1..MAX_THREADS (``what`` names it in the error)."""
    if (isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1
            or n > MAX_THREADS):
        raise ValueError(f"{what}={n!r} is not accepted; accepted: {ACCEPTED}")
    return int(n)


def cores_available() -> int:
    """CPU cores this process may run on (its affinity mask, else ``os.cpu_count()``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def own_load() -> float:
    """This process's estimated share of the 1-minute load average (module docstring); 0 where
    its start time is unknown (no ``/proc``)."""
    try:
        with open("/proc/self/stat") as fh:
            start_ticks = int(fh.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as fh:
            uptime = float(fh.read().split()[0])
        age = uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0
    if age <= 0:
        return 0.0
    busy = min(time.process_time() / age, float(cores_available()))
    return busy * (1.0 - math.exp(-age / 60.0))


RUN_QUEUE_SAMPLES = 5
"""Readings of the run queue (``procs_running`` in ``/proc/stat``), 2 ms apart, whose largest
:func:`running_others` takes."""


def running_others() -> int | None:
    """Tasks of other processes runnable right now: the most ``procs_running`` (every runnable
    thread of the machine, this one included) read over :data:`RUN_QUEUE_SAMPLES` readings,
    less this thread; None where ``/proc/stat`` cannot be read."""
    most = -1
    for k in range(RUN_QUEUE_SAMPLES):
        if k:
            time.sleep(0.002)
        try:
            with open("/proc/stat", "rb") as fh:
                for line in fh:
                    if line.startswith(b"procs_running"):
                        most = max(most, int(line.split()[1]))
                        break
        except (OSError, ValueError, IndexError):
            return None
    return None if most < 0 else max(0, most - 1)


def idle_cores() -> int:
    """Cores available minus the 1-minute load average of the other processes (the load average
    less :func:`own_load`), at least 1. The 1-minute average lags: after other jobs end it
    still holds them for minutes (it decays by ``1/e`` a minute). So while it is falling (below
    the 5-minute average), the other processes' tasks runnable now (:func:`running_others`)
    count instead when they are fewer: a wide network trained right after a test suite
    finished got 1 of 2 idle cores (372 instead of 205 ms a step)."""
    cores = cores_available()
    try:
        load1, load5, _ = os.getloadavg()
    except (AttributeError, OSError):
        return cores
    others = max(0.0, load1 - own_load())
    if load1 < load5 and others > 0:
        now = running_others()
        if now is not None:
            others = min(others, float(now))
    return max(1, min(cores, round(cores - others)))


def user_threads() -> int | None:
    """The thread count the user set in the environment (see the module docstring), or None."""
    for var in _USER_VARS:
        value = os.environ.get(var, "").strip()
        if value.isdigit() and 1 <= int(value) <= MAX_THREADS:
            return int(value)
        if var == THREADS_ENV and value:  # depthlab's own setting: a typo is not ignored
            from .fieldcheck import ConfigError

            raise ConfigError(f"{THREADS_ENV}={value!r} is not accepted; accepted: "
                              f"{ACCEPTED} (or unset it)", THREADS_ENV)
    return None


def choose_threads(sizes: Sequence[int] | None = None, batch_rows: int | None = None, *,
                   weight_shapes: Sequence[tuple[int, ...]] | None = None) -> int:
    """BLAS threads for training a network of layer ``sizes`` (or with weight matrices of
    ``weight_shapes``) on batches of ``batch_rows`` (see the module docstring); without a
    size, the idle cores."""
    if weight_shapes is None and sizes is not None:
        s = [int(v) for v in sizes]
        weight_shapes = list(zip(s[:-1], s[1:]))
    if weight_shapes is not None and batch_rows:
        largest = max((int(a) * int(b) for a, b, *_ in weight_shapes), default=0)
        if largest * int(batch_rows) < SMALL_WORK:
            return 1
    return idle_cores()


@contextlib.contextmanager
def blas_threads(threads: int | None = None, *, sizes: Sequence[int] | None = None,
                 batch_rows: int | None = None,
                 weight_shapes: Sequence[tuple[int, ...]] | None = None) -> Iterator[int]:
    """Limit the BLAS/OpenMP thread pools for the ``with`` block and yield the count:
    ``threads`` if given, else the user's environment setting, else
    :func:`choose_threads` of the work. The pools belong to the process: blocks that overlap
    (nested, or in several threads) keep (and yield) the limit of the first, and the last one
    to leave restores the original."""
    n = check_threads(threads) if threads is not None else user_threads()
    if n is None:
        n = choose_threads(sizes, batch_rows, weight_shapes=weight_shapes)
    controller = _controller()
    if controller is None:  # pragma: no cover - threadpoolctl comes with scikit-learn
        yield n
        return
    with _LOCK:  # the pools are process-wide: the first block sets them, the last restores
        if _ACTIVE["count"] == 0:
            _ACTIVE["limiter"] = controller.limit(limits=n)
            _ACTIVE["n"] = n
        _ACTIVE["count"] += 1
        n = _ACTIVE["n"]
    try:
        yield n
    finally:
        with _LOCK:
            _ACTIVE["count"] -= 1
            if _ACTIVE["count"] == 0:
                _ACTIVE.pop("limiter").restore_original_limits()


_LOCK = threading.Lock()
_ACTIVE: dict = {"count": 0}


_CONTROLLER: list = []


def _controller():
    """One ``threadpoolctl.ThreadpoolController`` per process (finding the BLAS libraries
    takes milliseconds; limiting them afterwards takes microseconds)."""
    if not _CONTROLLER:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:  # pragma: no cover
            return None
        _CONTROLLER.append(ThreadpoolController())
    return _CONTROLLER[0]


def set_process_threads(n: int) -> None:
    """Make ``n`` the thread count of this process and of the processes it starts
    (environment variables read by :func:`user_threads`, OpenMP and OpenBLAS)."""
    check_threads(n)
    for var in _USER_VARS:
        os.environ[var] = str(n)
