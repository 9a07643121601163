"""``depthlab sweep CONFIG``: run a ``[sweep]`` grid here (``--jobs N``) or on Dask
(``--cluster local:N`` / ``--cluster tcp://HOST:PORT``); resumable.

The grid's size is printed before anything runs; above :data:`CONFIRM_ABOVE` points the sweep
needs ``--limit N`` (the first N points), ``--yes``, or a "y" at the terminal prompt.

Interrupts: the first Ctrl-C (SIGINT) or SIGTERM drops every queued point, stops the workers
(running points are abandoned, nothing half-done is stored), prints one line and exits with
130 (SIGINT) or 143 (SIGTERM); a second one exits at once.
"""

from __future__ import annotations

import _thread
import argparse
import os
import re
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .common import (
    Command,
    Terminated,
    UserError,
    add_out,
    arm_shutdown_timer,
    check_jobs,
    entry_command,
    home_arg,
    later,
    progress_enabled,
    say,
)

CONFIRM_ABOVE = 100_000
_EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", type=home_arg,
                   help="TOML config with a [sweep] table of \"section.key\" = [...] "
                   "(or a .json object with a \"sweep\" object; '-': read from standard input)")
    add_out(p)
    p.add_argument("--jobs", "-j", type=int, default=None, metavar="N",
                   help="parallel processes on this machine (default 1)")
    p.add_argument("--cluster", metavar="ADDRESS",
                   help="run on Dask: local:N (a LocalCluster of N worker processes) or "
                   "tcp://HOST:PORT (a running `dask scheduler`; tls://, ws://, wss:// too; a "
                   "bare HOST:PORT is read as tcp://HOST:PORT) or FILE.json (the scheduler "
                   "file that `dask scheduler --scheduler-file FILE.json` writes); needs "
                   "depthlab[cluster] (default: none, --jobs processes here)")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="run only the first N points of the grid (default: all)")
    p.add_argument("--yes", "-y", action="store_true",
                   help=f"run grids above {CONFIRM_ABOVE:,} points without asking")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    p.add_argument("--json", action="store_true",
                   help="print a JSON summary on stdout at the end (messages go to stderr)")
    p.epilog = ("exit status: 0 every point finished or diverged (a diverged point is a "
                "result, stored as diverged); 1 some point failed; 2 bad input; 130 Ctrl-C, "
                "143 SIGTERM (the points stored stay; the same command finishes the grid)")


class _Interrupts(list):
    """The signals seen (a list of numbers); ``taken``: the command has caught the interrupt."""

    taken = False


@contextmanager
def _signals() -> Iterator[_Interrupts]:
    """SIGINT and SIGTERM: the first raises (KeyboardInterrupt / :class:`Terminated`), the
    second exits at once. Yields the signals seen; the command sets ``taken`` when it catches
    the interrupt. An interrupt raised where Python discards exceptions (a garbage-collector
    callback, e.g. Dask's ``GCDiagnosis``, or a ``__del__``: "Exception ignored in ...") is
    raised again in the main thread, so the command still stops (it ran on, stuck)."""
    seen = _Interrupts()
    if threading.current_thread() is not threading.main_thread():
        yield seen
        return
    again = threading.Event()  # the next handler call re-raises a lost first interrupt

    def interrupt() -> BaseException:
        return Terminated() if seen[0] == signal.SIGTERM else KeyboardInterrupt()

    def raise_again() -> None:
        if seen and not seen.taken and not again.is_set():
            again.set()
            _thread.interrupt_main(seen[0])

    def handler(signum: int, _frame: object) -> None:
        if again.is_set():
            again.clear()
            raise interrupt()
        seen.append(signum)
        if len(seen) > 1:
            os.write(2, b"depthlab: interrupted again; exiting now\n")
            os._exit(_EXIT.get(seen[0], 130))
        raise interrupt()

    def unraisable(info: Any) -> None:
        if isinstance(info.exc_value, KeyboardInterrupt) and seen:
            later(0.05, raise_again)  # discarded: raised again, from outside this hook
            return
        old_hook(info)

    old = {s: signal.signal(s, handler) for s in _EXIT}
    old_hook, sys.unraisablehook = sys.unraisablehook, unraisable
    try:
        yield seen
    finally:
        sys.unraisablehook = old_hook
        ignore = bool(seen) and entry_command()
        for s, h in old.items():
            # After a signal the sweep has stopped its workers and closed the store: only the
            # interpreter's shutdown is left, and one more Ctrl-C must not turn the clean exit
            # status (130/143) into a death by signal. Not in a program calling main(): its
            # Ctrl-C stayed ignored for good (a later KeyboardInterrupt never came).
            signal.signal(s, signal.SIG_IGN if ignore else h)


def _confirm(size: int, shape: str, args: argparse.Namespace) -> None:
    if size <= CONFIRM_ABOVE or args.yes or args.limit is not None:
        return
    what = f"the grid has {size:,} points ({shape}), more than {CONFIRM_ABOVE:,}"
    if sys.stdin is None or not sys.stdin.isatty():  # None: stdin closed (`<&-`)
        raise UserError(f"{what}; pass --limit N to run the first N points, or --yes to run "
                        "them all")
    try:
        answer = _ask(f"{what}. Run them all? [y/N] ").strip().lower()
    except EOFError:  # Ctrl-D (or the input closed) at the prompt: not a yes
        sys.stderr.write("\n")
        answer = ""
    if answer not in ("y", "yes"):
        raise UserError(f"{what}; not confirmed (use --limit N or --yes)")


ASK_POLL_S = 0.1
"""How often :func:`_ask` wakes while it waits for the answer (the latest an interrupt that
landed just before it began to wait is acted on)."""


def _ask(prompt: str) -> str:
    """``input(prompt)`` from a terminal that a Ctrl-C stops at any moment: it waits for the
    answer with ``select`` every :data:`ASK_POLL_S` seconds, so Python runs the signal's
    handler between two waits. ``input()`` checks for signals only when its blocking read is
    interrupted: a Ctrl-C landing between the prompt's write and that read (a script sending
    SIGINT as the prompt appears: 3 of 4 tries) left the sweep waiting for a line for good.
    Raises EOFError at the end of the input (Ctrl-D), as ``input()``."""
    import select

    try:
        fd = sys.stdin.fileno()
    except (AttributeError, OSError, ValueError):  # not a file (a program's stream)
        return input(prompt)
    sys.stdout.write(prompt)
    sys.stdout.flush()
    while not select.select([fd], [], [], ASK_POLL_S)[0]:
        pass
    line = sys.stdin.readline()
    if not line:
        raise EOFError
    return line.rstrip("\n")


def run(args: argparse.Namespace) -> int:
    from ..experiments import ConfigError, read_toml
    from ..experiments.config import config_name
    from ..experiments.executors import make_executor
    from ..experiments.grid import grid_shape, grid_size, validate_base
    from ..experiments.store import resolve_db_path
    from ..experiments.sweep import SweepInterrupted, run_sweep

    if args.cluster is not None and args.jobs is not None:
        raise UserError("--jobs and --cluster do not go together; with --cluster local:N the "
                        "cluster has N worker processes")
    jobs = check_jobs(1 if args.jobs is None else args.jobs)
    if args.cluster is not None:  # LOCAL:2 as local:2, as the other fixed choices are read
        from ..experiments.executors.dask import spelled

        args.cluster = spelled(args.cluster)
    local = re.fullmatch(r"local:0*([1-9]\d*)", args.cluster or "")
    if local:  # a LocalCluster's N worker processes must fit like --jobs N
        check_jobs(int(local.group(1)), f"--cluster {args.cluster}")
    if args.limit is not None and args.limit < 1:
        raise UserError(f"--limit {args.limit} is not accepted; accepted: an integer >= 1")
    # a malformed --cluster named first (it came after the grid's confirmation: a user told to
    # pass --limit or --yes was then told that local:0 is not accepted)
    executor = make_executor(jobs, args.cluster)
    raw = read_toml(args.config)
    base_dir = Path(args.config).resolve().parent
    echo = say(args)
    with _signals() as seen:
        try:
            cfg = validate_base(raw, base_dir=base_dir)
            if not cfg.get("sweep"):
                what = "the [sweep] table is empty" if "sweep" in raw else "no [sweep] table"
                raise UserError(f"{config_name(args.config)}: {what}; add e.g. \"model.activation\""
                                " = [\"tanh\", \"relu\"] (or use `depthlab run`)")
            _confirm(grid_size(cfg["sweep"]), grid_shape(cfg["sweep"]), args)
            res = run_sweep(raw, args.out, executor=executor, base_dir=base_dir,
                            limit=args.limit, echo=echo, progress=progress_enabled(args))
        except ConfigError as e:
            raise ConfigError(f"{config_name(args.config)}: {e}", e.key) from None
        except KeyboardInterrupt as e:
            seen.taken = True
            name = signal.Signals(seen[0]).name if seen else "SIGINT"
            done = (f"{e.result.ran} point(s) stored in this sweep, the rest cancelled; "
                    if isinstance(e, SweepInterrupted) else "")
            sys.stderr.write(f"depthlab: interrupted ({name}): {done}run the same command "
                             "again to finish the grid\n")
            code = _EXIT.get(seen[0], 130) if seen else 130
            if args.json and isinstance(e, SweepInterrupted):  # what was stored, as --json
                # promises: stdout held nothing, a script reading it failed on empty input
                _print_json(e.result, resolve_db_path(args.out), interrupted=name)
            arm_shutdown_timer(code)  # the process's own command only
            return code
    store = resolve_db_path(args.out)  # DIR/depthlab.db, or the .db file given as --out
    if args.json:
        _print_json(res, store)
    from ..experiments.progress import without_point

    failed = "".join(f"\n  failed {i} {n}: {without_point(err)}" for i, n, err in res.failures)
    # the summary keeps the first MAX_FAILURES_KEPT: "25 failed" listed 20, nothing saying the
    # other 5 exist or where they are
    unlisted = res.count("failed") - len(res.failures)
    more = ""
    if unlisted > 0:
        import shlex

        more = (f"and {unlisted} more failed point{'s' * (unlisted != 1)}: depthlab runs "
                f"{shlex.quote(str(args.out))} --sweep {res.sweep} --status failed")
        failed += f"\n  {more}"
    # a value listed twice in the grid ([7, 7, 8]) was "skipped 1 already stored" on a new store
    repeated = (f" and {res.repeated} repeated grid point{'s' * (res.repeated != 1)}"
                if res.repeated else "")
    echo(f"sweep {res.sweep}: {res.count('finished')} finished, {res.count('diverged')} "
         f"diverged, {res.count('failed')} failed; skipped {res.skipped - res.repeated} "
         f"already stored{repeated} ({res.seconds:.1f}s); results: {store}{failed}")
    if args.quiet and not args.json:  # the exit status 1 is explained even with --quiet
        for i, n, err in res.failures:
            first = (err or "unknown error").strip().splitlines()[-1:] or ["unknown error"]
            sys.stderr.write(f"depthlab: sweep point {i} ({n}) failed: "
                             f"{without_point(first[0])}\n")
        if more:
            sys.stderr.write(f"depthlab: {more}\n")
    return 1 if res.count("failed") else 0


def _print_json(res: Any, store: Path, interrupted: str | None = None) -> None:
    """The ``--json`` summary of sweep result ``res`` on stdout; an interrupted sweep's (the
    points stored before the signal) adds ``"interrupted": "SIGINT"`` (or ``"SIGTERM"``)."""
    import json

    summary = {"sweep": res.sweep, "points": res.total, "skipped": res.skipped,
               "repeated": res.repeated, "counts": res.counts, "seconds": res.seconds,
               "failures": [{"id": i, "name": n, "error": err} for i, n, err in res.failures],
               "store": str(store)}
    if interrupted is not None:
        summary["interrupted"] = interrupted
    print(json.dumps(summary, indent=1), flush=True)


COMMAND = Command("sweep", "run a [sweep] grid in parallel, here or on Dask (resumable)",
                  add_arguments, run)
