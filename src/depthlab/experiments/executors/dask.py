"""Sweep points on Dask distributed: ``depthlab sweep --cluster local:N`` or
``--cluster tcp://HOST:PORT`` (needs the ``cluster`` extra: ``pip install 'depthlab[cluster]'``).

``local:N`` starts a ``dask.distributed.LocalCluster`` of N worker processes with one thread
each on 127.0.0.1; ``tcp://HOST:PORT`` connects to a running scheduler (``dask scheduler``,
workers from ``dask worker`` or ``dask-jobqueue``). Workers only compute: each Dask task
computes a chunk of points, ``compute_chunk(compute, points) -> (records, s)``
(a chunk costs Dask's scheduling and transfer once, ~20 ms of worker and client time, instead
of once per point); the records come back to this client, which commits each in its own
transaction. Chunk size: ``ceil(points left / (4 × worker threads))``, so each worker still
gets several waves and chunks shrink towards the end of the grid, capped at 2 s of work at
the points' measured speed so progress stays smooth (see :meth:`DaskExecutor.chunk_size`).
Chunks are submitted in a sliding window (2 per worker thread in flight, refilled as they
finish), so the grid is never materialised. A point that raises is ``failed`` with its message
and the others of its chunk are stored normally. A worker that dies mid-chunk has its chunk
re-run elsewhere by the scheduler (a point delivered twice is committed once: the client
skips a run id it already committed), and so does a chunk that finished on a worker that
died before this client fetched its result; after ``distributed.scheduler.allowed-failures`` deaths
the chunk errs (``KilledWorker``) and its points are tried again one per Dask task, one at a
time, so that only a point that errs on its own is stored ``failed`` with that message (as the
local pool fails only the point whose worker died, not its neighbours in the chunk).

Start-up of ``local:N`` (most of what Dask costs a small sweep): no dashboard, and the worker
processes are forked from a ``forkserver`` that imported Dask, NumPy, pandas and the point
runner once, instead of Dask's default ``spawn`` (a fresh interpreter per worker importing all
of that and the caller's ``__main__``, whose shutdown also makes stopping slow): starting and
stopping the cluster takes about half as long (``benchmarks/sweep_scaling.py`` reports both,
``first result s`` and ``stop s``).
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import logging
import math
import os
import re
import signal
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .base import (
    ClusterError,
    Compute,
    Done,
    Executor,
    Task,
    check_workers,
    compute_chunk,
    compute_point,
    crash_record,
)

_LOCAL = re.compile(r"local:(\d+)")
SCHEMES = ("tcp", "tls", "ws", "wss")
"""The protocols of a remote scheduler's address: Dask's TCP, TLS and websockets (``dask
scheduler --protocol ws``, for a scheduler reached through an HTTP proxy; ``wss``: with TLS)."""
_REMOTE = re.compile(r"(tcp|tls|ws|wss)://([^\s/:\[\]]+|\[[0-9A-Fa-f:.]+\]):\d+")  # IPv6 in [ ]
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_BARE = re.compile(r"([^\s/:\[\]]+|\[[0-9A-Fa-f:.]+\]):\d+")
"""A bare ``HOST:PORT`` (``10.0.0.1:8786``, ``[::1]:8786``), read as ``tcp://HOST:PORT`` as
``dask worker`` and ``distributed.Client`` read it."""
#: chunk sizing (see :meth:`DaskExecutor.chunk_size`)
WAVES, FIRST_CHUNK, MAX_CHUNK, CHUNK_SECONDS = 4, 4, 256, 2.0
REFETCH = ("lost", "pending", "finished")
_DASK_LOGS = ("distributed", "distributed.client")
"""Dask's loggers with a level of their own in its default configuration (``distributed.client``
at WARNING, the rest under ``distributed``), held at CRITICAL while a sweep's own client runs."""
LOST_SCHEDULER_S = 3.0
"""How long a result fetch that met a closed connection waits for the client to say whether
it lost its scheduler (a worker's closed connection leaves the client running)."""
"""Statuses of a future yielded as done whose result could not be fetched that mean the
scheduler recomputes it (its worker died after it finished), so it is waited for again."""
ACCEPTED = ("local:N (N worker processes here) or tcp://HOST:PORT (a running Dask scheduler; "
            "tls://, ws:// and wss:// too; a bare HOST:PORT is read as tcp://HOST:PORT) or a "
            "scheduler file (the JSON file `dask scheduler --scheduler-file FILE` writes)")
GIVEN = "a distributed.Client or a Dask cluster object (left open)"
"""What the Python API takes besides an address (``run_sweep(..., cluster=client)``)."""
START_POLL_S = 0.05
"""While a ``local:N`` cluster starts, the main thread checks for an interrupt this often."""
LOCAL_NO_WORKERS_S = 120.0
"""Default ``no_workers_timeout`` of a ``local:N`` cluster: seconds its scheduler may have no
worker at all (every worker process died and none came back) before the sweep stops with
:class:`ClusterError` (a remote scheduler's or a given client's sweep waits without limit,
saying so: dask-jobqueue's workers may arrive later)."""
FETCH_WAIT_S = 10.0
"""A result fetch waits at most this long at a time (see :meth:`DaskExecutor._fetch`)."""
FETCH_FIRST_WAIT_S = 1.0
"""A result fetch's first wait, doubled at each retry up to ``FETCH_WAIT_S``."""
WORKERS_POLL_S = 1.0
"""While the sweep waits for chunks, it asks the scheduler how many workers it has this often."""
WORKERS_ASK_S = 0.5
"""The most that asking the scheduler for its workers may take (a scheduler lost meanwhile
would keep the question, and the sweep, waiting for the client's reconnect to fail)."""
THREADS_ASK_S = 2.0
"""The most that asking the scheduler for its workers' threads (the window's size) may take:
Dask's ``scheduler_info`` has no time limit, and a scheduler that stopped answering kept the
sweep waiting there without end."""
LAST_ASK_S = 5.0
"""Before a silent scheduler fails the sweep it is asked once more, waiting up to this long
(a busy scheduler answering slower than ``WORKERS_ASK_S`` is not taken for a stopped one)."""
ENV_CHECK_S = 20.0
"""The most that the workers' version check at the start (:meth:`DaskExecutor._check_workers`)
waits for their answers (then once more for each worker on its own); a worker that does not
answer (stopped, hung) has its points checked as they run."""
LOST_WORKER_S = 24 * 3600.0
"""``distributed.deploy.lost-worker-timeout`` held by a ``local:N`` cluster: Dask's 15 s
default hard-closes, for good, the nanny of a worker that died and was not back within 15 s
(a restart takes longer on a loaded machine), leaving the cluster with fewer or no workers;
``no_workers_timeout`` bounds the wait for them instead."""


def _forkserver_pid() -> int | None:
    """The process id of this process's multiprocessing fork server (None: none started)."""
    if not _forkserver_available():
        return None
    import multiprocessing.forkserver

    server = getattr(multiprocessing.forkserver, "_forkserver", None)
    return getattr(server, "_forkserver_pid", None)


def _masked_thread(target: Any, name: str) -> threading.Thread:
    """A started daemon thread running ``target`` with SIGINT blocked (so are the threads it
    starts: they inherit the mask)."""
    thread = threading.Thread(target=target, name=name, daemon=True)
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        thread.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
    return thread


def _timeout(name: str, value: Any) -> float | None:
    """``value`` as seconds: None stays None, ``math.inf`` means no limit, anything else must
    be a finite number > 0 (a bool, a string or a negative number is refused naming it)."""
    if value is None:
        return None
    if isinstance(value, float | int) and not isinstance(value, bool) and value == math.inf:
        return math.inf
    from ...validators import real

    return real(name, value, positive=True)


def spelled(address: str) -> str:
    """``address`` as the accepted forms spell it: blanks around it dropped, ``local`` and a
    scheme in lower case (``LOCAL:2`` is ``local:2``, ``TCP://Host:8786`` is
    ``tcp://Host:8786``; ``WS://`` is ``ws://``), as the CLI reads every fixed choice in any
    case; the host as given (a bare ``LOCAL:2`` was read as host ``LOCAL``, port 2, and failed
    on a name lookup)."""
    text = address.strip()
    head, sep, rest = text.partition("://")
    if sep and head.lower() in SCHEMES:
        return f"{head.lower()}://{rest}"
    head, sep, rest = text.partition(":")
    return f"local:{rest}" if sep and head.lower() == "local" else text


def check_address(address: str) -> str:
    """``address`` if it is ``local:N`` (N >= 1) or ``SCHEME://HOST:PORT`` (a scheme of
    :data:`SCHEMES`: ``tcp``, ``tls``, ``ws``, ``wss``; a port in 1..65535);
    a bare ``HOST:PORT`` as ``tcp://HOST:PORT``, as Dask reads it; a scheduler file (a name
    ending in ``.json``, or an existing file) as the address in it (:func:`_scheduler_file`);
    else :class:`ClusterError`."""
    if isinstance(address, os.PathLike):  # a scheduler file given as a Path
        address = os.fspath(address)
    if not isinstance(address, str):
        raise TypeError(f"cluster address {address!r} has the wrong type; accepted: {ACCEPTED}, "
                        f"or {GIVEN}")
    address = spelled(address)
    m = _LOCAL.fullmatch(address)
    if m and int(m.group(1)) >= 1:
        return address
    remote = (address if _REMOTE.fullmatch(address) else f"tcp://{address}"
              if _BARE.fullmatch(address) and not address.startswith("local:") else None)
    # (a bare HOST:PORT has tcp:// understood; local:0 stays a local cluster of no workers)
    if remote is not None:
        port = int(address.rpartition(":")[2])
        if 1 <= port <= 65535:
            return remote
        # tcp://127.0.0.1:99999 was tried ("Connection refused") once the store was created
        raise ClusterError(f"--cluster {address!r} is not accepted: port {port} is not in "
                           f"1..65535; accepted: {ACCEPTED}")
    if address.endswith(".json") or _home(address).is_file():
        return _scheduler_file(address)
    raise ClusterError(f"--cluster {address!r} is not accepted; accepted: {ACCEPTED}")


def _home(name: str) -> Path:
    """``name`` as a path, a leading ``~`` as the shell reads it (``--cluster=~/s.json`` keeps
    it); as written when there is no such home (``~nobody``)."""
    try:
        return Path(name).expanduser()
    except RuntimeError:
        return Path(name)


SCHEDULER_FILE_WAIT_S = 2.0
"""How long a scheduler file that is not JSON is read again before it is refused: ``dask
scheduler`` creates the file, then writes it (not atomically), so a job that waits for the file
to exist (``until [ -f sched.json ]``) may find it empty or half-written; Dask's own client
reads it again until it is JSON."""


def _scheduler_file(name: str) -> str:
    """The ``tcp://HOST:PORT`` (or ``tls://``, ``ws://``, ``wss://``) address in the Dask
    scheduler file ``name``
    (``{"address": ...}``, as ``dask scheduler --scheduler-file``, dask-mpi and a batch job's
    scheduler write it, for workers and clients to find the scheduler); :class:`ClusterError`
    for a missing or unreadable file, or one without such an address (it was refused as "not
    accepted", though it names a running scheduler). A file that is not JSON is read again for
    up to ``SCHEDULER_FILE_WAIT_S`` (its scheduler may still be writing it)."""
    deadline = time.monotonic() + SCHEDULER_FILE_WAIT_S
    while True:
        try:
            text = _home(name).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ClusterError(f"--cluster {name!r}: no such scheduler file (`dask scheduler "
                               f"--scheduler-file {name}` writes one); accepted: {ACCEPTED}"
                               ) from None
        except (OSError, UnicodeDecodeError) as e:
            why = getattr(e, "strerror", None) or type(e).__name__
            raise ClusterError(f"--cluster {name!r}: cannot read the scheduler file ({why})"
                               ) from None
        try:
            data = json.loads(text)
            break
        except ValueError:  # not JSON (yet: the scheduler may be writing it)
            data = None
            if time.monotonic() >= deadline:
                break
            time.sleep(0.05)
    inner = data.get("address") if isinstance(data, dict) else None
    scheme = _SCHEME.match(inner.strip()) if isinstance(inner, str) else None
    if scheme and scheme.group(1).lower() not in SCHEMES:
        # a scheduler of a protocol depthlab does not connect to (``ucx://``, ``inproc://``):
        # it was "not a Dask scheduler file", though it is one
        raise ClusterError(f"--cluster {name!r}: the scheduler file names {inner.strip()!r}, "
                           f"a {scheme.group(1)}:// scheduler; a sweep connects to "
                           f"{', '.join(x + '://' for x in SCHEMES)} schedulers only")
    if not isinstance(inner, str) or not _REMOTE.fullmatch(spelled(inner)):
        raise ClusterError(f"--cluster {name!r} is not a Dask scheduler file (a JSON object "
                           "whose \"address\" is tcp://HOST:PORT, as `dask scheduler "
                           "--scheduler-file FILE` writes it)")
    return check_address(inner)


def _given(thing: Any) -> tuple[Any, Any] | None:
    """``(client, None)`` for a ``distributed.Client``, ``(None, cluster)`` for a Dask cluster
    object (``LocalCluster``, dask-jobqueue's ``SLURMCluster``: a ``distributed.deploy.Cluster``),
    None for anything else (Dask is not imported here: a Client exists only if it was)."""
    distributed = sys.modules.get("distributed")
    if distributed is None or isinstance(thing, str):
        return None
    if isinstance(thing, distributed.Client):
        return thing, None
    cluster_type = getattr(getattr(distributed, "deploy", None), "Cluster", None)
    if cluster_type is not None and isinstance(thing, cluster_type):
        return None, thing
    return None


def _this_machine() -> set[str]:
    """The host names and addresses of this machine (loopback, its name, every interface's
    address), as a scheduler names its workers' hosts; no name lookup (a machine with a
    broken DNS waits seconds for one)."""
    import socket

    hosts = {"localhost", "::1", socket.gethostname()}
    try:
        import psutil

        for addrs in psutil.net_if_addrs().values():
            hosts.update(a.address.split("%")[0] for a in addrs
                         if a.family in (socket.AF_INET, socket.AF_INET6))
    except (ImportError, OSError):
        pass
    return hosts


def local_threads(workers: dict[str, Any]) -> int:
    """Threads of the ``workers`` (a scheduler's ``{address: info}``) that run on this machine
    (an ``inproc://`` worker, in this process, or one whose host is one of this machine's
    names or addresses): the points they compute at once share this machine's memory."""
    here = _this_machine()
    n = 0
    for address, info in workers.items():
        info = info if isinstance(info, dict) else {}
        host = str(info.get("host") or "")
        if (str(address).startswith("inproc://") or host.startswith("127.")
                or host in here):
            threads = info.get("nthreads", 1)
            n += threads if isinstance(threads, int) and threads > 0 else 1
    return n


def _probe(address: str, timeout: float) -> None:
    """Open and close a TCP connection to the scheduler's port, so a refused or unreachable
    address fails at once (or after ``timeout`` s) instead of after Dask's connect retries."""
    import socket

    host, _, port = address.split("://", 1)[1].rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        why = e.strerror or str(e) or type(e).__name__
        if isinstance(e, TimeoutError | socket.timeout):
            why = f"no answer within {timeout:g} s"
        hint = _local_meant(host, port) if isinstance(e, socket.gaierror) else None
        raise ClusterError(f"cannot reach the Dask scheduler at {address}: {why} ("
                           + (f"did you mean {hint}?" if hint else "start one with `dask "
                              "scheduler`, or check the address") + ")") from None


_COMM_WHERE = re.compile(r"^in <[^>]*>:\s*")
"""Where Dask's comm errors happened, ``in <TCP (closed) ConnectionPool.broadcast local=tcp://
127.0.0.1:35036 remote=tcp://127.0.0.1:8799>: `` (its internals, not the user's)."""


def _comm_reason(e: BaseException) -> str:
    """One line on why talking to the scheduler failed: the text of ``e`` without Dask's
    ``in <comm ...>:`` prefix; a ``CommClosedError`` (the scheduler stopped or dropped the
    connection while the sweep started) as ``the scheduler closed the connection (Stream is
    closed)``."""
    text = _COMM_WHERE.sub("", " ".join(str(e).split()))
    if type(e).__name__ == "CommClosedError":
        return f"the scheduler closed the connection ({text or 'no reason given'})"
    return text or type(e).__name__


def _local_meant(host: str, port: str) -> str | None:
    """``local:N`` when a host name that did not resolve is a misspelling of ``local``
    (``locl:2``, ``lokal:4``, ``loacl:2``: difflib ratio >= 0.6, the form ``local:N`` being
    what was meant) with N the port given when it reads as a worker count (1..1024), else
    ``local:N``; None for any other name."""
    import difflib

    name = host.strip("[]").lower()
    if name == "local" or not difflib.get_close_matches(name, ["local"], n=1, cutoff=0.6):
        return None
    return f"local:{port}" if port.isdigit() and 1 <= int(port) <= 1024 else "local:N"


def _handshake(address: str, timeout: float) -> dict[str, Any]:
    """Ask the server at ``address`` who it is (Dask's ``identity``, its workers included)
    within ``timeout`` seconds and return the answer; :class:`ClusterError` unless it answers
    as a Dask scheduler. Dask's ``Client``
    waits without end for a server that accepts the connection and never answers (a port
    of another program, a stuck proxy), and a server that answers something else (an HTTP
    port) made its frame reader allocate exabytes: a ``MemoryError`` "internal error"."""
    import asyncio

    from distributed.comm import connect
    from distributed.security import Security

    # as the Client connects: TLS settings from Dask's configuration for a tls:// address
    args = Security().get_connection_args("client")

    async def ask() -> Any:
        comm = await connect(address, timeout=timeout, **args)
        try:
            await comm.write({"op": "identity", "reply": True})
            return await comm.read()
        finally:
            comm.abort()

    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["reply"] = asyncio.run(asyncio.wait_for(ask(), timeout))
        except BaseException as e:  # noqa: BLE001 - judged in the caller's thread
            box["error"] = e

    thread = _masked_thread(run, "depthlab-dask-handshake")
    deadline = time.monotonic() + timeout + 1.0
    while thread.is_alive() and time.monotonic() < deadline:
        thread.join(START_POLL_S)  # an interrupt is seen at once
    where = f"the Dask scheduler at {address}"
    error, reply = box.get("error"), box.get("reply")
    if thread.is_alive() or isinstance(error, TimeoutError):
        why = f"no answer within {timeout:g} s; is it a Dask scheduler's address?"
    elif isinstance(error, MemoryError | OverflowError):
        # Dask's frame reader took the first bytes of the answer for a length ("Unable to
        # allocate 3.07 EiB ..."): a server of another protocol (HTTP, SSH, a database)
        why = ("it did not answer as a Dask scheduler (it answered in another protocol; is "
               "the port that of another server, e.g. the dashboard's HTTP port 8787?)")
    elif error is not None:
        text = " ".join(str(error).split())[:100]
        why = (f"it did not answer as a Dask scheduler ({type(error).__name__}"
               f"{': ' + text if text else ''})")
    elif not isinstance(reply, dict) or reply.get("type") != "Scheduler":
        kind = reply.get("type") if isinstance(reply, dict) else None
        why = (f"that is a Dask {kind}, not a scheduler" if isinstance(kind, str)
               else "it did not answer as a Dask scheduler")
    else:
        return reply
    raise ClusterError(f"cannot use {where}: {why}")


def environment() -> dict[str, str]:
    """What decides a point's numbers in this process besides its config: depthlab's and
    NumPy's versions and the code computing the probe statistics (Numba's kernels or NumPy,
    :mod:`depthlab.probes.accel`, whose results agree closely but not bit for bit)."""
    import numpy

    from ... import __version__
    from ...probes import accel

    kernels = "NumPy"
    if accel.kernels() is not None:
        import numba

        kernels = f"Numba {numba.__version__}"
    return {"depthlab": __version__, "NumPy": numpy.__version__, "probe kernels": kernels}


def differences(there: dict[str, str], here: dict[str, str]) -> str:
    """``there``'s entries that differ from ``here``'s, in words ("" if none)."""
    return ", ".join(f"{k} {there.get(k, '?')} (here {v})" for k, v in here.items()
                     if there.get(k) != v)


_WORKER_ENV: dict[str, dict[str, str]] = {}


def run_chunk(expected: dict[str, str] | None, compute: Compute, tasks: list[Task],
              tries: int = 1) -> tuple[list[Any], float]:
    """:func:`~depthlab.experiments.executors.base.compute_chunk` on a worker whose
    :func:`environment` is ``expected`` (the client's; None: not checked); on another one
    (a worker that joined after the sweep's start) every point is ``failed`` saying how the
    worker differs, and none is computed. A point whose memory need exceeds what this worker's
    nanny lets it use (:func:`_nanny_budget`) is ``failed`` with a ``MemoryRefusal`` before it
    allocates (its nanny killed the worker in every try: ``KilledWorker``)."""
    if expected is not None:
        if "env" not in _WORKER_ENV:
            _WORKER_ENV["env"] = environment()
        diff = differences(_WORKER_ENV["env"], expected)
        if diff:
            error = (f"WorkerMismatch: this Dask worker has {diff}, so it would not give "
                     "this machine's results; install the same versions on it")
            return [crash_record(t, error) for t in tasks], 0.0
    try:
        refused = _over_budget(tasks)
    except Exception:  # noqa: BLE001 - the check itself must never fail a chunk's points
        refused = {}
    if not refused:
        return compute_chunk(compute, tasks, tries)
    records, seconds = compute_chunk(compute, [t for t in tasks if t.id not in refused], tries)
    computed = iter(records)
    return [refused[t.id] if t.id in refused else next(computed) for t in tasks], seconds


def _nanny_budget() -> tuple[int, int, float] | None:
    """``(bytes, memory_limit, fraction)`` on a Dask worker whose nanny restarts it above
    ``fraction`` of its ``memory_limit`` (``dask worker --memory-limit``, dask-jobqueue's
    ``memory=``; Dask's ``distributed.worker.memory.terminate``): the bytes a point may still
    allocate here; None elsewhere (no limit, no nanny, not a Dask worker)."""
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return None
    limit = getattr(getattr(worker, "memory_manager", None), "memory_limit", None)
    if not limit or getattr(worker, "nanny", None) is None:
        return None
    import dask
    import psutil

    fraction = dask.config.get("distributed.worker.memory.terminate", 0.95)
    if not fraction:
        return None
    used = psutil.Process().memory_info().rss
    return max(0, int(float(fraction) * limit) - used), int(limit), float(fraction)


def _over_budget(tasks: list[Task]) -> dict[str, Any]:
    """``{id: failed record}`` of the ``tasks`` whose memory need exceeds
    :func:`_nanny_budget` (empty when there is none)."""
    budget = _nanny_budget()
    if budget is None:
        return {}
    from ...memory import format_bytes
    from ..runner import memory_need

    left, limit, fraction = budget
    out = {}
    for task in tasks:
        try:
            need = memory_need(task.config)
        except (KeyError, TypeError, ValueError):  # a bad config: the runner says why
            need = None
        if need is not None and need[0] > left:
            out[task.id] = crash_record(
                task, f"MemoryRefusal: {need[1]} needs about {format_bytes(need[0])} of memory "
                f"but this Dask worker may use only about {format_bytes(left)} more: its nanny "
                f"restarts it above {fraction:.0%} of its memory limit of "
                f"{format_bytes(limit)}; nothing was allocated (give the workers more memory, "
                "e.g. `dask worker --memory-limit`)")
    return out


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise ClusterError("--cluster needs Dask distributed, which is not installed; "
                           "install it with: pip install 'depthlab[cluster]'") from None
    return distributed


def _forkserver_available() -> bool:
    """Whether worker processes can be forked from a fork server here (not on Windows)."""
    import multiprocessing

    return "forkserver" in multiprocessing.get_all_start_methods()


def _main_not_a_file() -> str | None:
    """The file name of this program's ``__main__`` when the worker processes that Python's
    fork server or spawn start would import it again from there and it is not a file
    (``'<stdin>'``); None otherwise (a file, a module run with ``-m``, ``-c``, a notebook)."""
    main = sys.modules.get("__main__")
    if main is None or getattr(main, "__spec__", None) is not None:
        return None
    path = getattr(main, "__file__", None)
    if not isinstance(path, str) or os.path.isfile(path):
        return None
    return path


class DaskExecutor(Executor):
    """Points as Dask tasks on ``address`` (see the module docstring).

    ``window``: chunks in flight (default 2 per worker thread, at least 4, re-read from the
    scheduler every 5 s as workers come and go); ``chunk``: points per Dask task (default:
    sized from the grid, the workers and the points' speed); ``retries``: extra tries of a
    point that raised (in its chunk) and Dask ``retries`` of a chunk; ``allowed_failures``:
    worker deaths a chunk may cause before it errs (set on a ``local:N`` scheduler; a remote
    scheduler uses its own configuration); ``connect_timeout``: seconds to reach a remote scheduler;
    ``no_workers_timeout``: seconds the scheduler may have no worker at all while chunks wait
    before the sweep stops with :class:`ClusterError` (points stored so far kept; a rerun
    finishes the grid); None (default): ``LOCAL_NO_WORKERS_S`` for ``local:N``, no limit for a
    remote scheduler or a given client/cluster (said once as a warning; Ctrl-C stops);
    ``math.inf``: no limit. A chunk the scheduler itself failed for want of workers (its
    ``distributed.scheduler.no-workers-timeout``: ``NoWorkerError``) is the same error, its
    points not stored ``failed``. ``scheduler_timeout``: seconds the scheduler may answer
    nothing at all (no finished chunk, no worker count) while its connection stays open (its
    process stopped or hung, its machine frozen or cut off) before the sweep stops with
    :class:`ClusterError`, points stored so far kept; None (default): Dask's
    ``distributed.comm.timeouts.tcp`` (30 s); ``math.inf``: no limit.
    """

    def __init__(self, address: str | Any, *, window: int | None = None, chunk: int | None = None,
                 retries: int = 1,
                 allowed_failures: int = 3, connect_timeout: float = 5.0,
                 no_workers_timeout: float | None = None,
                 scheduler_timeout: float | None = None,
                 compute: Compute = compute_point) -> None:
        from ...validators import positive_int, real

        # a Client or a cluster object of the caller's (a notebook's, dask-jobqueue's): used
        # as it is and left open (only a client made here for a cluster object is closed)
        given = _given(address)
        self._given_client, self._given_cluster = given or (None, None)
        #: the scheduler file the address was read from (None: given as an address)
        self.scheduler_file: str | None = None
        if given is None:
            self.address = check_address(address)
            written = spelled(os.fspath(address) if isinstance(address, os.PathLike)
                              else address)
            if self.address not in (written, f"tcp://{written}"):
                self.scheduler_file = written
        else:
            thing = self._given_client or self._given_cluster
            where = (getattr(getattr(thing, "scheduler", None), "address", None)
                     if self._given_client is not None
                     else getattr(thing, "scheduler_address", None))
            self.address = where if isinstance(where, str) else repr(thing)
            self._check_given()  # a closed one: refused before the store is opened
            # its workers on this machine: their points' memory checked before any is sent
            # (a large grid's by check_grid_memory, before the sweep opens its store)
            self._count_local_workers()
        # every option checked here, before a cluster starts: a window of -1 took no point
        # from the grid and the sweep ended "0 finished" with nothing said; a retries,
        # allowed_failures or connect_timeout of a wrong type or sign went to Dask as given
        if window is not None:
            window = positive_int("window", window)
        if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, int)
                                  or chunk < 1):
            raise ValueError(f"chunk must be a positive integer or None, got {chunk!r}")
        self.window = window
        self.chunk = chunk
        retries = positive_int("retries", retries, minimum=0)
        allowed_failures = positive_int("allowed_failures", allowed_failures, minimum=0)
        connect_timeout = real("connect_timeout", connect_timeout, positive=True)
        unlimited = (no_workers_timeout == float("inf") and not isinstance(no_workers_timeout, bool)
                     if isinstance(no_workers_timeout, float | int) else False)
        if no_workers_timeout is not None and not unlimited:
            no_workers_timeout = real("no_workers_timeout", no_workers_timeout, positive=True)
        self._expected: int | None = None
        #: the client's environment() that a remote scheduler's workers must have (None:
        #: not checked, a local:N cluster's workers are forks of this interpreter's files)
        self._environment: dict[str, str] | None = None
        self._fetch_errors: dict[str, str] = {}  # key -> why its result could not be fetched
        self._point_s: float | None = None  # measured seconds per point (None: not yet)
        #: the scheduler's worker threads when last asked (None: not asked since start)
        self._threads: int | None = None
        self.retries = retries
        self.allowed_failures = allowed_failures
        self.connect_timeout = connect_timeout
        self.compute = compute
        self._said_no_workers = False  # the start-up's "no workers yet" warning was given
        self.client: Any = None
        self.cluster: Any = None
        self._config: Any = None  # dask.config.set(...) held from start() to close()
        self._loop: tuple[Any, Any, threading.Thread] | None = None  # local:N: its event loop
        self._quiet = False  # its loop's task errors not logged (an abandoned start-up)
        #: Dask's loggers and their levels before start() raised them to CRITICAL (a client
        #: made here for a remote scheduler), restored by close(); None: not raised
        self._log_levels: list[tuple[logging.Logger, int]] | None = None
        self._forkserver_pid: int | None = None  # the fork server running before start()
        m = None if given else _LOCAL.fullmatch(self.address)
        #: N of a ``local:N`` address (None: not a local cluster)
        self._local_n: int | None = int(m.group(1)) if m else None
        if m:  # a LocalCluster's worker processes must fit here, refused before any starts
            check_workers(int(m.group(1)), f"cluster {address!r}")
            self.local_workers = int(m.group(1))
        self.description = (f"the given Dask client of {self.address}"
                            if self._given_client is not None
                            else f"the given Dask cluster {self.address}" if given
                            else f"Dask LocalCluster of {m.group(1)} worker process(es)" if m
                            else f"Dask scheduler {self.address}" + (
                                f" (from {self.scheduler_file})" if self.scheduler_file else ""))
        #: seconds without any worker before ClusterError (None: waited for without limit)
        #: seconds the scheduler may answer nothing before ClusterError (None: Dask's
        #: distributed.comm.timeouts.tcp, read at run time; inf: no limit)
        self.scheduler_timeout = _timeout("scheduler_timeout", scheduler_timeout)
        self._answered = time.monotonic()  # when the scheduler last answered
        self.no_workers_timeout = (None if unlimited else no_workers_timeout
                                   if no_workers_timeout is not None
                                   else LOCAL_NO_WORKERS_S if m else None)

    def check(self) -> None:
        """Dask distributed must be installed, and a remote scheduler's port must accept a
        connection and answer as a Dask scheduler (within ``connect_timeout``): a missing
        Dask, an unreachable address or another server's port (the dashboard's HTTP port
        8787, a port that never answers) fails before the sweep creates its store."""
        if self._given_client is not None or self._given_cluster is not None:
            return
        import importlib.util

        if importlib.util.find_spec("distributed") is None:  # (not imported: a sweep whose
            _import_distributed()  # points are all stored never starts it)
        if not _LOCAL.fullmatch(self.address):
            try:
                _probe(self.address, self.connect_timeout)
                reply = _handshake(self.address, self.connect_timeout)
            except ClusterError as e:  # a stopped scheduler leaves its file: the file named
                if self.scheduler_file is None:
                    raise
                raise ClusterError(f"{e}; the address was read from the scheduler file "
                                   f"{self.scheduler_file} (left by a scheduler that has "
                                   "stopped?)") from None
            # its workers on this machine (`dask worker` started here too): their points'
            # memory is checked together before any is sent, as a caller's cluster's
            self.local_workers = local_threads(reply.get("workers") or {})
            self.worker_bytes = 0
            return
        script = _main_not_a_file()
        if script is not None:  # each worker failed to start: "RuntimeError: Nanny failed
            # to start." after ~7 s, with its tracebacks (FileNotFoundError: .../<stdin>)
            raise ClusterError(
                f"cluster {self.address!r} cannot start its worker processes from this "
                f"program: they import its main script again, from {script!r}, which is not a "
                "file (a script read from standard input, `python - <<EOF`); save the script "
                "to a file and run that, or use jobs=N")


    def _count_local_workers(self) -> None:
        """A caller's client or cluster: ``local_workers`` = the threads of its workers on
        this machine (a notebook's ``LocalCluster``, threads or processes), whose points at
        once must fit in this machine's memory (:func:`~depthlab.experiments.sweep.
        check_workers_memory`); they run already (``worker_bytes`` 0). Asked within
        ``THREADS_ASK_S``; no answer: 0 (each point checked alone, as on remote workers)."""
        self.worker_bytes = 0
        try:
            if self._given_client is not None:
                client = self._given_client
                info = client.sync(client.scheduler.identity, n_workers=-1,
                                   callback_timeout=THREADS_ASK_S)
            else:
                info = getattr(self._given_cluster, "scheduler_info", None) or {}
            workers = info.get("workers", {}) if isinstance(info, dict) else {}
            self.local_workers = local_threads(workers)
        except Exception:  # noqa: BLE001 - a silent scheduler is judged when the sweep runs
            self.local_workers = 0

    def start(self) -> None:
        if self._given_client is not None or self._given_cluster is not None:
            self._start_given()
            return
        m = _LOCAL.fullmatch(self.address)
        if not m:  # a refused or unreachable address fails before Dask is even imported
            _probe(self.address, self.connect_timeout)
        distributed = _import_distributed()
        import dask

        cfg: dict[str, Any] = {"distributed.scheduler.allowed-failures": self.allowed_failures}
        if m:  # a dead worker's nanny is never closed for being slow to bring it back
            cfg["distributed.deploy.lost-worker-timeout"] = f"{LOST_WORKER_S:g}s"
        if m and _forkserver_available():
            cfg["distributed.worker.multiprocessing-method"] = "forkserver"
        # Held until close(): a worker the nanny restarts (after a death) starts the same way.
        self._config = dask.config.set(cfg)
        try:
            if m:
                self._start_local(distributed, self._local_count(int(m.group(1))))
            else:
                _handshake(self.address, self.connect_timeout)
                # Dask's log lines are its own account of what depthlab says in one line: a
                # scheduler killed mid-sweep had the client's batched stream log "Batched
                # Comm Closed" and a CommClosedError traceback (INFO), a lost result "Couldn't
                # gather ... rescheduling" (WARNING), before depthlab's line. Held at CRITICAL
                # until close(), as a local:N cluster's silence_logs holds them; a given client
                # is the caller's, its logging too.
                if self._log_levels is None:
                    logs = [logging.getLogger(n) for n in _DASK_LOGS]
                    self._log_levels = [(log, log.level) for log in logs]
                    for log in logs:
                        log.setLevel(logging.CRITICAL)
                self.client = distributed.Client(self.address, set_as_default=False,
                                                 timeout=max(self.connect_timeout, 10.0))
                self._check_workers()
        except (OSError, TimeoutError) as e:
            self.close()
            raise ClusterError(f"cannot reach the Dask scheduler at {self.address}: "
                               f"{_comm_reason(e)}") from None
        except BaseException as e:
            if isinstance(e, KeyboardInterrupt) and self.cluster is not None:
                self._abandon_start()  # its processes killed, no graceful close to wait for
            self.close()
            raise

    def _check_given(self) -> None:
        """:class:`ClusterError` if the caller's client is closed or asynchronous, or their
        cluster object is closed."""
        client = self._given_client
        if client is not None:
            status = getattr(client, "status", None)
            if status != "running":
                raise ClusterError(f"the Dask client given is {status or 'not running'} "
                                   f"({client!r}); pass an open distributed.Client")
            if getattr(client, "asynchronous", False):
                raise ClusterError("the Dask client given is asynchronous; pass a client made "
                                   "with asynchronous=False (the default)")
        elif self._given_cluster is not None:
            status = getattr(getattr(self._given_cluster, "status", None), "name", "running")
            if status not in ("running", "created"):
                raise ClusterError(f"the Dask cluster given is {status} "
                                   f"({self._given_cluster!r}); pass a running cluster")

    def _start_given(self) -> None:
        """Use the caller's Client (or a client of the caller's cluster object); its workers
        are checked as a remote scheduler's are (:meth:`_check_workers`)."""
        distributed = _import_distributed()
        self._check_given()
        client = self._given_client
        if client is not None:
            self.client = client
        else:
            try:
                self.client = distributed.Client(self._given_cluster, set_as_default=False)
            except (OSError, TimeoutError) as e:
                why = " ".join(str(e).split()) or type(e).__name__
                raise ClusterError(f"cannot reach the Dask cluster given ({self.address}): "
                                   f"{why}") from None
        try:
            self._check_workers()
        except BaseException:
            self.close()
            raise

    def _check_workers(self) -> None:
        """A remote scheduler's workers must compute as this machine does (see
        :func:`environment`): one that cannot import depthlab, or has another depthlab,
        NumPy or probe-kernel code, is :class:`ClusterError` naming it and the difference
        (points were all stored ``failed`` with a ``ModuleNotFoundError``, or computed with
        other numbers than a local run's). Workers that join later are checked by
        :func:`run_chunk`, and so are those that do not answer within ``ENV_CHECK_S`` (a
        worker process stopped or hung: ``Client.run`` waited for it without end), said in
        a warning."""
        here = environment()
        self._environment = here
        there, silent = self._environments()
        # a worker lost during the check (killed, restarted: CommClosedError "Stream is
        # closed", an OSError) did not fail to run depthlab: it was said to need depthlab
        # installed. Like a silent one, it is checked by run_chunk if it comes back.
        lost = sorted(a for a, env in there.items() if isinstance(env, OSError))
        there = {a: env for a, env in there.items() if a not in lost}
        if lost:
            import warnings

            shown = ", ".join(lost[:3]) + (f" and {len(lost) - 3} more" if len(lost) > 3
                                           else "")
            warnings.warn(f"the Dask worker(s) {shown} of {self.address} closed the connection "
                          "during the version check (stopped or restarted); their points are "
                          "checked as they run", UserWarning, stacklevel=3)
        if silent:
            import warnings

            shown = ", ".join(silent[:3]) + (f" and {len(silent) - 3} more" if len(silent) > 3
                                             else "")
            warnings.warn(f"the Dask worker(s) {shown} of {self.address} did not answer the "
                          f"version check within {ENV_CHECK_S:g} s (stopped, hung or busy); "
                          "their points are checked as they run", UserWarning, stacklevel=3)
        bad = []
        for address, env in sorted(there.items()):
            if isinstance(env, BaseException):
                text = " ".join(str(env).split())
                if not re.match(r"\w+(Error|Exception)\(", text):  # Dask wraps a worker's
                    text = f"{type(env).__name__}: {text}"  # unpickling error as Exception
                bad.append(f"{address} cannot run depthlab's points ({text[:160]}); install "
                           f"depthlab {here['depthlab']} there (pip install "
                           "'depthlab[cluster]')")
            elif differences(env, here):
                bad.append(f"{address} has {differences(env, here)}; install the same "
                           "versions there")
        if not there and not silent and not lost:  # jobqueue workers may be queued: wait,
            import warnings  # but say so

            self._said_no_workers = True
            warnings.warn(f"the Dask scheduler at {self.address} has no workers yet; the "
                          f"sweep waits for them ({self._wait_words()})", UserWarning,
                          stacklevel=2)
        if bad:
            more = f" (and {len(bad) - 1} more worker(s) do not either)" if len(bad) > 1 else ""
            raise ClusterError(f"the Dask workers of {self.address} do not compute as this "
                               f"machine does: {bad[0]}{more}")

    def _environments(self) -> tuple[dict[str, Any], list[str]]:
        """``({worker: environment() or its exception}, [workers that did not answer])``:
        asked of all workers at once within ``ENV_CHECK_S``; if that times out, of each
        worker on its own (concurrently), again within ``ENV_CHECK_S``."""
        client = self.client
        try:
            return client.sync(client._run, environment, on_error="return",
                               callback_timeout=ENV_CHECK_S), []
        except TimeoutError:
            pass
        import asyncio

        async def ask_each() -> list[tuple[str, Any]]:
            info = await client.scheduler.identity(n_workers=-1)
            workers = sorted(info.get("workers", {}))

            async def one(worker: str) -> tuple[str, Any]:
                try:
                    answer = await asyncio.wait_for(client._run(
                        environment, workers=[worker], on_error="return"), ENV_CHECK_S)
                except TimeoutError:
                    return worker, None
                return worker, answer.get(worker)

            return list(await asyncio.gather(*(one(w) for w in workers)))

        answers = client.sync(ask_each, callback_timeout=2 * ENV_CHECK_S)
        return ({w: env for w, env in answers if env is not None},
                [w for w, env in answers if env is None])

    def _local_count(self, workers: int) -> int:
        """The worker processes a ``local:N`` cluster starts: ``min(N, points left)`` when
        :meth:`expect` was told how many points at most are left (a resumed sweep with one point
        left forked N Pythons of Dask, NumPy and the runner for it), else N; ``local_workers``
        and the description follow it."""
        if self._expected is not None and 1 <= self._expected < workers:
            workers = self._expected
        self._describe_local(workers)
        return workers

    def _describe_local(self, workers: int) -> None:
        """``local_workers`` and the description of a ``local:N`` cluster of ``workers``."""
        self.local_workers = workers
        self.description = f"Dask LocalCluster of {workers} worker process(es)"

    def _start_local(self, distributed: Any, workers: int) -> None:
        """A ``LocalCluster`` of ``workers`` processes on 127.0.0.1, and a client of it.

        Start-up is most of what a small sweep pays for Dask, so: no dashboard (nobody is told
        its address; where bokeh is installed it costs its import), and the worker processes
        are forked from a ``forkserver`` that imported Dask, NumPy, pandas and the point
        runner once (with ``spawn`` every worker is a fresh interpreter importing all of it and
        the caller's ``__main__``, and interpreter shutdown makes stopping them slow too)."""
        if _forkserver_available():
            import multiprocessing

            self._forkserver_pid = _forkserver_pid()
            # Dask sets its own preload list on first use (if this version does), replaced here
            getattr(distributed.utils, "get_mp_context", lambda: None)()

            multiprocessing.get_context("forkserver").set_forkserver_preload(
                ["distributed", "numpy", "pandas", "depthlab.experiments.runner", __name__])
        # The cluster runs on an event loop of this executor's own and is built in a helper
        # thread, both started with SIGINT blocked: every thread Dask starts from them (those
        # starting worker processes among them) inherits the mask. The main thread waits for
        # the helper in short joins, so it sees an interrupt at once, whichever thread the
        # signal landed in (it waited in Dask's sync(), 10 s waits that only a signal to the
        # main thread ends, and with SIGINT blocked for the whole start-up it saw the
        # interrupt once the cluster was up: 6-12 s). The worker processes do not keep the
        # mask (their /proc status shows SIGINT neither blocked nor ignored): on an interrupt
        # this client SIGKILLs them (_kill_local_workers).
        loop = self._start_loop()
        executor = self
        built: dict[str, BaseException] = {}

        class _LocalCluster(distributed.LocalCluster):  # type: ignore[misc, valid-type]
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                executor.cluster = self  # reachable (its workers killable) while it starts
                super().__init__(*args, **kwargs)

        def build() -> None:
            try:
                _LocalCluster(
                    n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                    dashboard_address=None, silence_logs=logging.CRITICAL, loop=loop,
                    # no memory limit per worker: Dask's "auto" (the machine's memory / N)
                    # made the nanny kill a worker whose point needs more than that share
                    # (stored failed, KilledWorker) where `--jobs N` runs it; the points'
                    # memory is checked by depthlab before any starts, as for --jobs N
                    memory_limit=0,
                    # its HTTP routes (health, metrics) on a free loopback port, not on :8787
                    scheduler_kwargs={"dashboard_address": "127.0.0.1:0"})
            except BaseException as e:  # noqa: BLE001 - raised again in the caller's thread
                built["error"] = e

        helper = _masked_thread(build, "depthlab-dask-start")
        while helper.is_alive():
            helper.join(START_POLL_S)
        if "error" in built:
            raise built["error"]
        self.client = distributed.Client(self.cluster, set_as_default=False)

    def _start_loop(self) -> Any:
        """A Tornado ``IOLoop`` running in a daemon thread started with SIGINT blocked (see
        :meth:`_start_local`); :meth:`close` stops it (Dask's runners of a loop they did not
        start leave it running)."""
        import asyncio

        from tornado.ioloop import IOLoop

        box: dict[str, Any] = {}
        ready = threading.Event()

        def on_error(aloop: Any, context: dict[str, Any]) -> None:
            if not self._quiet:  # after an abandoned start-up: its failed tasks, expected
                aloop.default_exception_handler(context)

        async def serve() -> None:
            asyncio.get_running_loop().set_exception_handler(on_error)
            box["loop"], box["stop"] = IOLoop.current(), asyncio.Event()
            ready.set()
            await box["stop"].wait()

        def run() -> None:
            try:
                asyncio.run(serve())
            except BaseException as e:  # noqa: BLE001 - raised again in start()
                box["error"] = e
                ready.set()

        thread = _masked_thread(run, "depthlab-dask-loop")
        while not ready.wait(START_POLL_S):
            pass
        if "error" in box:
            raise box["error"]
        self._loop = (box["loop"], box["stop"], thread)
        return box["loop"]

    def _stop_loop(self, timeout: float = 2.0) -> bool:
        """End the loop of :meth:`_start_loop` (its tasks cancelled), waiting at most
        ``timeout`` seconds for its thread; whether it ended (or there was none)."""
        if self._loop is None:
            return True
        loop, stop, thread = self._loop
        self._loop = None
        try:
            loop.add_callback(stop.set)
        except RuntimeError:  # closed already
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def _abandon_start(self) -> None:
        """After an interrupt during :meth:`_start_local`: SIGKILL the worker processes started
        so far and drop the half-built cluster without a graceful close (that would wait on
        its start-up, and Dask's exit handler would close it again for up to 10 s)."""
        cluster = self.cluster
        self._quiet = True
        self._kill_local_workers()
        # the fork server may still be importing its preloads with worker starts queued: it
        # would fork them after this process has gone (tracebacks on the terminal)
        pid = _forkserver_pid()
        if pid and self._forkserver_pid != pid:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        instances = getattr(type(cluster), "_instances", None)
        if instances is not None:  # SpecCluster's set that close_clusters() closes at exit
            instances.discard(cluster)
        self.cluster = None

    def threads(self) -> int | None:
        """Worker threads the scheduler has now (at least 1); None if it did not answer within
        ``THREADS_ASK_S`` (Dask's ``scheduler_info`` waited without end on a stopped one)."""
        client = self.client
        if client is None:
            return 1
        try:
            info = client.sync(client.scheduler.identity, n_workers=-1,
                               callback_timeout=THREADS_ASK_S)
        except Exception:  # noqa: BLE001 - silent or lost: judged by _check_answers / chunks
            return None
        self._heard()
        self._threads = sum(w.get("nthreads", 1) for w in info.get("workers", {}).values())
        return max(1, self._threads)

    @property
    def slots(self) -> int | None:
        """Points computed at once: the threads of the scheduler's workers when last asked
        (every 5 s while the sweep runs, as the window is sized; 0 while it has none), on
        this machine or not; before that, its workers' threads on this machine (None: none
        known). The points sent are whole chunks, a window of them (2 per thread): counted
        all as running, a remote cluster of 2 threads was said to run 6 points."""
        if self.client is not None and self._threads is not None:
            return self._threads
        return self.local_workers or None

    def _heard(self) -> None:
        """The scheduler answered (a question, a finished chunk): its silence starts again."""
        self._answered = time.monotonic()

    def _silence_limit(self) -> float | None:
        """Seconds the scheduler may answer nothing before the sweep stops (None: no limit):
        ``scheduler_timeout``, else Dask's ``distributed.comm.timeouts.tcp`` (30 s by default,
        Dask's own time "before calling an unresponsive connection dead")."""
        if self.scheduler_timeout is not None:
            return None if self.scheduler_timeout == math.inf else self.scheduler_timeout
        import dask
        from dask.utils import parse_timedelta

        try:
            limit = parse_timedelta(dask.config.get("distributed.comm.timeouts.tcp", "30s"),
                                    default="seconds")
        except (TypeError, ValueError, KeyError):
            limit = 30.0
        return float(limit) if limit and limit > 0 else None

    def _check_answers(self) -> None:
        """:class:`ClusterError` when the scheduler has answered nothing (no worker count, no
        finished chunk, no result) for :meth:`_silence_limit` seconds while this client still
        holds its connection: a scheduler process stopped (SIGSTOP, a debugger), hung, or on
        a machine that froze or left the network keeps the connection open and the sweep
        waited for it without end. It is asked once more (``LAST_ASK_S``) first. A client
        that lost its connection is judged by its chunks (:meth:`_check_scheduler`)."""
        limit = self._silence_limit()
        client = self.client
        if (limit is None or client is None or time.monotonic() - self._answered < limit
                or getattr(client, "status", "running") != "running"):
            return
        try:
            client.sync(client.scheduler.identity, n_workers=0,
                        callback_timeout=min(LAST_ASK_S, limit))
        except Exception:  # noqa: BLE001 - no answer again
            pass
        else:
            self._heard()
            return
        local = self.cluster is not None and self._given_cluster is None
        where = (f"the Dask scheduler of the {self.address} cluster" if local
                 else f"the Dask scheduler at {self.address}")
        raise ClusterError(f"{where} has not answered for {limit:g} s (its process stopped or "
                           "hung, or its machine is unreachable): the points stored so far "
                           "are kept, the rest were not run; run the same command again once "
                           "it answers")

    def _kill_local_workers(self) -> None:
        """SIGKILL the worker processes of our own LocalCluster (an interrupt: their running
        points are abandoned anyway, and a graceful close waits for them)."""
        nannies = list(getattr(self.cluster, "workers", {}).values())
        seen = {id(n) for n in nannies}
        nannies += [n for n in list(getattr(self.cluster, "_created", ())) if id(n) not in seen]
        for nanny in nannies:  # the started ones and, during start-up, those still starting
            pid = getattr(getattr(getattr(nanny, "process", None), "process", None), "pid", None)
            if pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass

    def close(self) -> None:
        client, cluster, config = self.client, self.cluster, self._config
        self.client = self.cluster = self._config = None
        if client is not None and client is self._given_client:
            client = None  # the caller's: left open (its futures of this sweep released)
        # The cluster's silence_logs lasts until its close restores Dask's handlers; the comms
        # of workers killed by an interrupt may still log their closed streams (INFO, with a
        # traceback) after that. Dask's loggers stay at CRITICAL until both closes return.
        # So is distributed.client, which has a level of its own: a client that lost its
        # scheduler logs its cancelled reconnect attempt (ERROR, a traceback) as it closes.
        logs = [logging.getLogger(n) for n in _DASK_LOGS]
        levels = [log.level for log in logs]
        for log in logs:
            log.setLevel(logging.CRITICAL)
        try:
            for thing in (client, cluster):
                if thing is not None:
                    try:
                        thing.close(timeout=2)
                    except Exception:  # noqa: BLE001 - closing is best effort
                        pass
        finally:
            for log, level in zip(logs, levels):
                log.setLevel(level)
        # the config is restored once the loop has ended: a start-up abandoned by an interrupt
        # that still ran would start its next worker with Dask's default method (spawn)
        if self._stop_loop() and config is not None:
            config.__exit__(None, None, None)
        if self._log_levels is not None:  # Dask's log lines again (start() raised them)
            for log, level in self._log_levels:
                log.setLevel(level)
            self._log_levels = None
        self._expected = None  # told again by the next sweep (a start without it: N workers)
        self._threads = None  # asked again by the next sweep
        if self._local_n is not None:  # used again: local:N, whatever this sweep started
            self._describe_local(self._local_n)

    def _gather(self, futures: list[Any]) -> dict[str, Any]:
        """``{key: result}`` of those ``futures`` that are finished, in one round trip; one by
        one if that fails (a future whose result cannot be fetched is left out)."""
        futures = [f for f in futures if f.status == "finished"]
        # a result this client cannot load is said in its points' error (it was "the Dask
        # task ended finished without a result"), not as Dask's CRITICAL log and traceback
        log = logging.getLogger("distributed.protocol.core")
        disabled, log.disabled = log.disabled, True
        try:
            return dict(zip((f.key for f in futures), self._fetch(futures)))
        except Exception:  # noqa: BLE001 - find the one that cannot be fetched
            out = {}
            for f in futures:
                if f.status != "finished":  # lost since: the caller waits for it again
                    continue
                try:
                    out[f.key] = self._fetch([f])[0]
                except TimeoutError:
                    continue  # lost during the fetch: waited for again
                except Exception as e:  # noqa: BLE001
                    text = " ".join(str(e).split())[:300] or "no message"
                    self._fetch_errors[f.key] = f"{type(e).__name__}: {text}"
            return out
        finally:
            log.disabled = disabled

    def _fetch(self, futures: list[Any]) -> list[Any]:
        """The results of finished ``futures``. Dask's ``gather`` of a result lost with its
        worker before this client fetched it waits for the scheduler to compute it again,
        without end if no worker is left (the sweep hung there): waited for ``FETCH_WAIT_S``
        at a time, :class:`TimeoutError` once one of them is no longer finished (the caller
        waits for it as for any chunk, where a lack of workers is seen)."""
        client = self.client
        wait = FETCH_FIRST_WAIT_S  # doubled up to FETCH_WAIT_S: a slow transfer gets its time
        while True:
            try:
                return client.sync(client._gather, futures, callback_timeout=wait)
            except TimeoutError:
                if any(f.status != "finished" for f in futures):
                    raise TimeoutError("a result was lost before it was fetched") from None
                if getattr(client, "status", "running") != "running":
                    # the scheduler was lost during the fetch: said by the chunks at once, not
                    # after the client's reconnect has failed (~10 s, Dask's ERROR log)
                    raise TimeoutError("the scheduler was lost during the fetch") from None
                if self._workers_now() is None:  # a stopped scheduler: waited for no more
                    self._check_answers()  # than its silence bound (it waited without end)
                wait = min(2 * wait, FETCH_WAIT_S)  # all still there: fetched again

    def chunk_size(self, remaining: int | None, threads: int) -> int:
        """Points per Dask task: ``ceil(remaining / (WAVES × threads))`` (several waves per
        worker thread, shrinking towards the end of the grid so workers finish together),
        at most ``CHUNK_SECONDS`` of work at the points' measured speed (progress stays
        smooth when points are slow), ``FIRST_CHUNK`` before any point was timed, and
        between 1 and ``MAX_CHUNK``; ``chunk`` if given."""
        if self.chunk:
            return self.chunk
        size = MAX_CHUNK if remaining is None else -(-max(remaining, 1) // (WAVES * threads))
        if self._point_s is None:
            size = min(size, FIRST_CHUNK)
        elif self._point_s > 0:
            size = min(size, int(CHUNK_SECONDS / self._point_s))
        return max(1, min(size, MAX_CHUNK))

    def expect(self, total: int | None) -> None:
        self._expected = total

    def run(self, tasks: Iterator[Task], done: Done) -> None:
        distributed = _import_distributed()
        if self.client is None:
            raise RuntimeError("DaskExecutor.run before start() (use `with executor:`)")
        sized = [float("-inf"), 4, 2]  # when the window was last sized, its size (chunks), threads

        def window() -> int:  # follows the cluster as workers join (dask-jobqueue scaling)
            if time.monotonic() - sized[0] > 5.0:
                threads = self.threads()
                if threads is None:  # no answer: the last size kept, asked again in 5 s
                    sized[0] = time.monotonic()
                    self._check_answers()
                else:
                    sized[:] = [time.monotonic(), max(4, 2 * threads), threads]
            return self.window or int(sized[1])

        tag = uuid.uuid4().hex[:8]
        self._heard()  # connected (start() asked it): its silence counts from here
        pending: dict[str, tuple[list[Task], Any]] = {}
        refetched: dict[str, int] = {}  # key -> times its lost result was waited for again
        ac = distributed.as_completed(loop=self.client.loop)
        tasks = iter(tasks)
        taken = [0, 0.0, 0]  # tasks taken, seconds and points of the chunks timed so far
        self._point_s = None

        # The points of a chunk that erred (a worker died in each try: KilledWorker) are tried
        # again one per Dask task, one such task in flight at a time, so that only the point
        # that kills its worker fails (the local pool's rule), not the innocent points of its
        # chunk: Dask counts a death against every task the worker held, so suspects sent
        # together would die together with the killer among them.
        alone: collections.deque[Task] = collections.deque()
        suspect: set[str] = set()  # the key of the suspect in flight

        def submit(n: int) -> None:  # n chunks, one message for the whole wave
            chunks = []
            for _ in range(n):
                left = None if self._expected is None else self._expected - taken[0]
                chunk = list(itertools.islice(tasks, self.chunk_size(left, int(sized[2]))))
                if not chunk:
                    break
                taken[0] += len(chunk)
                chunks.append(chunk)
            send(chunks)

        def send(chunks: list[list[Task]], retries: int | None = None) -> list[str]:
            if not chunks:
                return []
            keys = [f"depthlab-{c[0].id}-{len(c)}-{tag}" for c in chunks]
            futs = self.client.map(run_chunk, [self._environment] * len(chunks),
                                   [self.compute] * len(chunks), chunks,
                                   [1 + self.retries] * len(chunks), key=keys, pure=False,
                                   retries=self.retries if retries is None else retries)
            pending.update((f.key, (c, f)) for c, f in zip(chunks, futs))
            ac.update(futs)
            return keys

        try:
            window()
            submit(window())
            for batch in self._batches(ac):
                results = self._gather(batch)
                self._check_scheduler(batch, results)
                for fut in batch:
                    if fut.key not in results and fut.status in REFETCH \
                            and refetched.get(fut.key, 0) < self.allowed_failures:
                        # finished, then its result was lost with a worker that died before
                        # this client fetched it: the scheduler recomputes it (the client still
                        # holds the future), so it is waited for again, not failed
                        refetched[fut.key] = refetched.get(fut.key, 0) + 1
                        ac.add(fut)
                        continue
                    chunk, _ = pending.pop(fut.key)
                    suspect.discard(fut.key)
                    if fut.key in results:
                        records, seconds = results[fut.key]
                        if seconds > 0:  # not a worker's refusal (run_chunk: 0 s, no point
                            # computed), which made the points look free: chunks of 256
                            taken[1:] = [taken[1] + seconds, taken[2] + len(records)]
                            self._point_s = taken[1] / max(taken[2], 1)
                    elif len(chunk) > 1:  # each of its points on its own again
                        fut.release()
                        alone.extend(chunk)
                        continue
                    else:
                        records = [crash_record(chunk[0], self._chunk_error(fut))]
                    fut.release()
                    for task, record in zip(chunk, records):
                        done(task, record)
                if alone and not suspect:
                    # no Dask retry: its chunk has had them (each one more worker killed)
                    suspect.update(send([[alone.popleft()]], retries=0))
                if len(pending) <= window() // 2:  # the next wave
                    submit(window() - len(pending))
        except BaseException:
            if pending and self.client is not None:
                self._cancel([f for _, f in pending.values()])
            if self.cluster is not None:
                self._kill_local_workers()
            raise

    def _wait_words(self) -> str:
        """How a wait for workers ends, in words."""
        if self.no_workers_timeout is None:
            return "Ctrl-C stops"
        return f"for at most {self.no_workers_timeout:g} s; Ctrl-C stops"

    def _workers_now(self) -> int | None:
        """Workers the scheduler has now (None: it did not say, or this client is not
        connected: a client that lost its scheduler reconnects, and a question asked then
        waits for that to fail, ~10 s and Dask's ERROR log, where its chunks, cancelled at
        once, say :class:`ClusterError` (``_check_scheduler``))."""
        client = self.client
        if getattr(client, "status", "running") != "running":
            return None
        try:  # asked with a time limit: the scheduler may be lost while it answers
            info = client.sync(client.scheduler.identity, n_workers=0,
                               callback_timeout=WORKERS_ASK_S)
            n = info.get("n_workers")
            if not isinstance(n, int):  # an older scheduler: its workers listed
                n = len(client.sync(client.scheduler.identity,
                                    callback_timeout=WORKERS_ASK_S).get("workers", {}))
            self._heard()
            return n
        except Exception:  # noqa: BLE001 - a lost scheduler is judged by its chunks
            return None

    def _batches(self, ac: Any) -> Iterator[list[Any]]:
        """``ac.batches()`` (the finished futures, as they finish) that does not wait without
        end on a scheduler with no worker: while chunks wait, the scheduler's workers are
        counted every ``WORKERS_POLL_S``; none is said once (a warning: the sweep waits, they
        may come back or arrive) and, after ``no_workers_timeout`` seconds of none,
        :class:`ClusterError` (every worker process of a ``local:N`` cluster died and none
        came back; a remote scheduler's workers all died or left)."""
        condition = getattr(ac, "thread_condition", None)
        local = self.cluster is not None and self._given_cluster is None
        where = (f"the Dask scheduler of the {self.address} cluster" if local
                 else f"the Dask scheduler at {self.address}")
        since: float | None = None  # when the scheduler was first seen without workers
        said = self._said_no_workers
        looked = time.monotonic()
        while True:
            if ac.has_ready():
                self._heard()  # a chunk finished: the scheduler said so
                yield ac.next_batch(block=False)
                continue
            if ac.is_empty():
                return
            if condition is not None:
                with condition:
                    condition.wait(timeout=0.1)
            else:
                time.sleep(0.05)
            now = time.monotonic()
            if now - looked < WORKERS_POLL_S:
                continue
            looked = now
            workers = self._workers_now()
            if workers is None:  # a scheduler silent for too long stops the sweep
                self._check_answers()
            if workers is None or workers > 0:
                since, said = None, said and workers is None
                continue
            since = now if since is None else since
            if not said:
                said = True
                import warnings

                warnings.warn(f"{where} has no workers now (they died or left); the sweep "
                              f"waits for them ({self._wait_words()})", UserWarning,
                              stacklevel=2)
            if self.no_workers_timeout is not None and now - since >= self.no_workers_timeout:
                what = (f"all {self.local_workers} worker process(es) died and none came back"
                        if local else "its workers died or left and none came back")
                raise ClusterError(f"{where} has had no workers for "
                                   f"{self.no_workers_timeout:g} s ({what}): the points "
                                   "stored so far are kept, the rest were not run; run the "
                                   "same command again to finish the grid")

    def _check_scheduler(self, batch: list[Any], results: dict[str, Any]) -> None:
        """:class:`ClusterError` when a chunk came back without its result because this client
        lost the scheduler (killed, restarted, its machine gone): its chunks end ``cancelled``
        and their results cannot be fetched, which says nothing about their points, so none
        of them is stored ``failed`` (the sweep stops as on an interrupt; a rerun finishes
        the grid). The sweep never cancels its own chunks while they are waited for."""
        missing = [f for f in batch if f.key not in results]
        if not missing:
            return
        for f in missing:  # the scheduler's no-workers-timeout: says nothing of the points
            if f.status == "error" and type(self._exception(f)).__name__ == "NoWorkerError":
                raise ClusterError(f"the Dask scheduler at {self.address} failed a chunk "
                                   "because it had no workers for its no-workers-timeout "
                                   "(NoWorkerError): the points stored so far are kept, the "
                                   "rest were not run; run the same command again to finish "
                                   "the grid")
        status = getattr(self.client, "status", "running")
        if status == "running" and any(self._fetch_errors.get(f.key, "").startswith(
                "CommClosedError") for f in missing):
            # the fetch met the closed connection before the client noticed it: look again
            deadline = time.monotonic() + LOST_SCHEDULER_S
            while status == "running" and time.monotonic() < deadline:
                time.sleep(0.05)
                status = getattr(self.client, "status", "running")
        if status == "running" and not any(f.status == "cancelled" for f in missing):
            return
        raise ClusterError(f"lost the Dask scheduler at {self.address} (the client is "
                           f"{status}, {len(missing)} chunk(s) came back cancelled or "
                           f"unfetched): the points stored so far are "
                           f"kept, the rest were not run; run the same command again to "
                           f"finish the grid")

    @staticmethod
    def _exception(fut: Any) -> BaseException | None:
        """The exception of an erred future (None: it could not be fetched)."""
        try:
            return fut.exception()
        except Exception:  # noqa: BLE001
            return None

    def _cancel(self, futures: list[Any], timeout: float = 2.0) -> None:
        """Cancel ``futures`` on the scheduler, waiting at most ``timeout`` seconds (the
        client's ``cancel`` has no time limit of its own: an interrupt must not wait on a
        scheduler that does not answer)."""
        client = self.client

        def cancel() -> None:
            try:
                client.cancel(futures, force=True)
            except Exception:  # noqa: BLE001 - the client may be gone already
                pass

        worker = threading.Thread(target=cancel, name="depthlab-dask-cancel", daemon=True)
        worker.start()
        worker.join(timeout)

    def _chunk_error(self, fut: Any) -> str:
        """The error every point of a chunk that failed in every try is stored with."""
        if fut.status == "error":  # KilledWorker, an exception in every try
            exc = fut.exception()
            text = " ".join(str(exc).split()) or "no message"
            return f"{type(exc).__name__}: {text}"
        if fut.key in self._fetch_errors:
            return (f"its record computed on a Dask worker could not be loaded here: "
                    f"{self._fetch_errors[fut.key]}")
        return f"the Dask task ended {fut.status} without a result"
