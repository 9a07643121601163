"""The ``depthlab`` command line: parse, call one function, print.

Each subcommand is a module of this package exposing ``COMMAND`` (a :class:`Command`:
name, help, ``add_arguments(parser)``, ``run(args) -> exit status``); :data:`COMMAND_MODULES`
lists them in the order ``depthlab --help`` shows them.

Every user error exits with status 2 and one line on stderr starting with
``depthlab: error:``; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import math
import os
import re
import signal
import sys
import threading
import traceback
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

from .common import (
    _ENTRY,
    Command,
    Terminated,
    UserError,
    arm_shutdown_timer,
    later,
    one_line,
)

__all__ = ["COMMAND_MODULES", "Command", "UserError", "build_parser", "commands", "main"]

COMMAND_MODULES: tuple[str, ...] = (
    "run", "sweep", "runs", "export", "report", "doctor", "datasets", "demo", "reproduce",
    "playground", "predict", "init",
)


def commands() -> list[Command]:
    """The subcommands, one per module of :data:`COMMAND_MODULES`."""
    return [importlib.import_module(f"{__name__}.{m}").COMMAND for m in COMMAND_MODULES]


def _user_errors() -> tuple[type[BaseException], ...]:
    from ..atomic import AtomicWriteError
    from ..experiments import ConfigError, ExperimentError, StoreError

    # OSError: a path the user gave cannot be read or written (a file where a folder is
    # expected, permissions, a full disk): the user's to fix, one line naming the path
    return (UserError, ConfigError, ExperimentError, StoreError, AtomicWriteError, OSError)


def _tell(text: str) -> None:
    """``text`` on stderr; a stderr that refuses it (``2>/dev/full``, a closed pipe) loses the
    line but not the exit status (the OSError made every user error an exit status 1)."""
    try:
        sys.stderr.write(text)
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


class _Once(argparse._StoreAction):
    """An option that takes one value: given twice with two values (``--kind run --kind
    doctor``) it is refused, naming both; argparse let the last one win silently. The same
    value twice is the same request and is accepted."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        given = namespace.__dict__.setdefault("_given", {})
        if option_string is not None and self.dest in given and given[self.dest][1] != values:
            first, value = given[self.dest]
            parser.error(f"{option_string} is given twice ({first} {value!r} and "
                         f"{option_string} {values!r}); accepted: one value")
        given[self.dest] = (option_string, values)
        super().__call__(parser, namespace, values, option_string)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``depthlab: error: ...`` and exit status 2; an option
    given twice with different values is refused (:class:`_Once`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.register("action", None, _Once)
        self.register("action", "store", _Once)

    def error(self, message: str) -> None:  # type: ignore[override]
        message = _not_a_number(message)
        _tell(f"depthlab: error: {message}{self._hint(message)} "
                         f"(see `{self.prog} --help`)\n")
        raise SystemExit(2)

    def _print_message(self, message: str, file: Any = None) -> None:
        """argparse's, without its ``except OSError: pass``: help or a version that cannot be
        written (a full disk) is an error (it exited 0 with nothing written); a closed pipe
        (``| head``) stays silent."""
        if not message:
            return
        file = file or sys.stderr
        try:
            file.write(message)
        except BrokenPipeError:
            if file is sys.stdout:
                _stdout_broken()
        except OSError:
            if file is sys.stdout:  # stderr cannot carry the error line either: as argparse
                raise
        except AttributeError:  # no stream at all: as argparse
            pass

    def _hint(self, message: str) -> str:
        """`` (did you mean 'run'?)`` for a mistyped command or choice (``invalid choice:
        'runn'``) and `` (did you mean --overwrite?)`` for a mistyped option (``unrecognized
        arguments: --ovrwrite``): the closest valid one, else ``""``."""
        from ..validators import closest_name

        choice = re.match(r"argument \S+: invalid choice: '(.*)' \(choose from (.*)\)$",
                          message)
        if choice:
            close = closest_name(choice[1], re.findall(r"'([^']*)'", choice[2]))
            return f" (did you mean {close!r}?)" if close else ""
        unknown = re.match(r"unrecognized arguments: (--[^\s=]+)", message)
        if unknown:
            options = [o[2:] for a in self._actions for o in a.option_strings
                       if o.startswith("--")]
            if unknown[1] == "--out" and "dir" in options:  # predict's results folder
                return " (did you mean --dir?)"
            if unknown[1] in ("--out", "--dir") and any(a.dest == "dir" and not
                                                        a.option_strings for a in self._actions):
                # `report --out results` as `run --out results` wrote it: no such option
                return (f" ({self.prog} takes the results folder as its argument: "
                        f"`{self.prog} DIR`)")
            close = closest_name(unknown[1][2:], options)
            return f" (did you mean --{close}?)" if close else ""
        return ""


def _not_a_number(message: str) -> str:
    """argparse's "argument --limit: invalid int value: '1e3'" said as what is accepted: "'1e3'
    is not a whole number; accepted: an integer written with digits only (did you mean
    1000?)", the hint when the text is a whole number written otherwise (``1e3``, ``8.0``);
    likewise "invalid float value" (a number such as 0.01). Other messages are returned as
    they are."""
    found = re.match(r"(argument \S+): invalid (int|float) value: '(.*)'$", message)
    if not found:
        return message
    where, kind, text = found.groups()
    if kind == "float":
        return f"{where}: {text!r} is not a number; accepted: a decimal number such as 0.01"
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    whole = math.isfinite(value) and value == int(value)
    hint = f" (did you mean {int(value)}?)" if whole else ""
    return (f"{where}: {text!r} is not a whole number; accepted: an integer written with "
            f"digits only{hint}")


def build_parser() -> argparse.ArgumentParser:
    """The ``depthlab`` parser with one subparser per command."""
    common = _Parser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks")
    common.add_argument("--threads", type=int, default=argparse.SUPPRESS, metavar="N",
                        help=THREADS_HELP)
    parser = _Parser(prog="depthlab", description="Train deep networks and watch gradients "
                     "vanish or explode: runs, sweeps, probes, reports.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument("--threads", type=int, default=argparse.SUPPRESS, metavar="N",
                        dest="threads_first",  # merged by _threads_before_and_after
                        help=THREADS_HELP)  # before or after the command: both work
    parser.add_argument("--version", action="version", version=f"depthlab {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    parser.epilog = _examples(EXAMPLES[""])
    parser.formatter_class = _HelpFormatter
    for cmd in commands():
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help, parents=[common],
                           formatter_class=_HelpFormatter)
        cmd.add_arguments(p)
        if EXAMPLES.get(cmd.name):  # after the command's own epilog (its exit statuses)
            p.epilog = "\n\n".join(filter(None, [p.epilog, _examples(EXAMPLES[cmd.name])]))
        p.set_defaults(_run=cmd.run)
    return parser


EXAMPLES: dict[str, tuple[str, ...]] = {
    "": ("depthlab init mine && depthlab run mine.toml --out results",
         "depthlab init --example digits_sweep && depthlab sweep digits_sweep.toml --out "
         "results --jobs 2",
         "depthlab report results", "depthlab COMMAND --help"),
    "run": ("depthlab init mine && depthlab run mine.toml --out results",
            "depthlab init --example digits_run && depthlab run digits_run.toml --out results "
            "--name tanh --overwrite",
            "depthlab init - | depthlab run - --out results --json --quiet"),
    "sweep": ("depthlab init --example digits_sweep && depthlab sweep digits_sweep.toml --out "
              "results --jobs 2",
              "depthlab sweep grid.toml --out results --cluster local:4 --limit 100",
              "depthlab sweep grid.toml --out results --cluster tcp://head:8786 --yes"),
    "runs": ("depthlab runs results", "depthlab runs results --sweep sw-1a2b --status failed",
             "depthlab runs results --kind run --json"),
    "export": ("depthlab export results",
               "depthlab export results --format parquet --to ~/tables --force"),
    "report": ("depthlab report results", "depthlab report results --quiet"),
    "doctor": ("depthlab doctor mine.toml", "depthlab doctor mine.toml --verify --steps 100",
               "depthlab doctor --torch models.py:make_model --data digits --lr 0.01"),
    "datasets": ("depthlab datasets", "depthlab datasets --json"),
    "demo": ("depthlab demo --out demo-out", "depthlab demo --epochs 3 --jobs 1 --no-report",
             "depthlab init my_demo --example demo && depthlab demo --config my_demo.toml"),
    "reproduce": ("depthlab reproduce --list", "depthlab reproduce he2015 --quick",
                  "depthlab reproduce ioffe2015 --data fashion-mnist --out repro --strict"),
    "playground": ("depthlab playground", "depthlab playground --port 0 --no-browser",
                   "depthlab playground --host 0.0.0.0 --port 8765 --max-sessions 8"),
    "predict": ("depthlab predict 1a2b3c new.csv --dir results",
                "depthlab predict net.npz digits --json --to preds.json --force"),
    "init": ("depthlab init mine", "depthlab init --list",
             "depthlab init sweep1 --example digits_sweep", "depthlab init - > mine.toml"),
}
"""Command lines shown under ``examples:`` at the end of each command's ``--help`` (``""``:
``depthlab --help``); every one parses (tests/test_clihunt38_round38.py)."""


def _examples(lines: tuple[str, ...]) -> str:
    """The ``examples:`` block of a ``--help``: one command line a line, indented."""
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, except that in a description or epilog the lines that start with
    a space (the examples) are kept as written, not wrapped into the paragraph before them."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        paragraphs, lines = [], text.splitlines() or [""]
        for line in lines:
            kept = not line.strip() or line.startswith(" ")
            paragraphs.append(indent + line if kept else
                              super()._fill_text(line, width, indent))
        return "\n".join(paragraphs)


def _threads_before_and_after(args: argparse.Namespace,
                              parser: argparse.ArgumentParser) -> None:
    """``args.threads`` from ``--threads`` given before the command or after it (parsed by
    different parsers: the one after silently won); two different values are refused."""
    first = getattr(args, "threads_first", None)
    if first is None:
        return
    del args.threads_first
    after = getattr(args, "threads", None)
    if after is not None and after != first:
        parser.error(f"--threads is given twice (--threads {first} before the command and "
                     f"--threads {after} after it); accepted: one value")
    args.threads = first


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Each command's parser by name."""
    return next((dict(a.choices) for a in parser._actions
                 if isinstance(a, argparse._SubParsersAction)), {})


THREADS_HELP = ("BLAS threads of this process and the worker processes it starts (default: "
                "chosen for each training run from its layer sizes, its batch and the idle "
                "cores: 1 for small networks)")


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("depthlab")
    except Exception:  # noqa: BLE001
        return "unknown"


@contextlib.contextmanager
def _thread_limit(n: int | None) -> Iterator[None]:
    """Limit BLAS/OpenMP threads to ``n`` (threadpoolctl) for the command's duration."""
    if n is None:
        yield
        return
    from ..threads import ACCEPTED, MAX_THREADS, blas_threads, set_process_threads

    if not 1 <= n <= MAX_THREADS:
        raise UserError(f"--threads {n} is not accepted; accepted: {ACCEPTED}")

    set_process_threads(n)  # read by every training run and inherited by worker processes
    with blas_threads(n):
        yield


PROBE_KERNELS_VALUES = ("numpy", "numba", "auto")
"""Values of ``DEPTHLAB_PROBE_KERNELS`` and ``DEPTHLAB_ENGINE_KERNELS`` (``numpy``: the NumPy
path; the others, as unset: the compiled kernels when Numba is installed; the engine's load
them at the first step with ``numba``, after 3 s with ``auto``)."""


def _check_environment() -> None:
    """The ``DEPTHLAB_*`` settings of the environment, checked before the command starts: a
    typo is one line naming the variable, not ignored (``DEPTHLAB_PROBE_KERNELS=nmupy``) nor
    blamed on the config file read first (``DEPTHLAB_MEMORY_LIMIT=8 G``)."""
    from ..threads import user_threads

    user_threads()
    if os.environ.get("DEPTHLAB_MEMORY_LIMIT"):
        from ..memory import available_memory  # imports NumPy: only when the variable is set

        available_memory()
    for name in ("DEPTHLAB_PROBE_KERNELS", "DEPTHLAB_ENGINE_KERNELS"):  # read by *.accel
        kernels = os.environ.get(name, "")
        if kernels.strip() and kernels.strip().lower() not in PROBE_KERNELS_VALUES:
            raise UserError(f"{name}={kernels!r} is not accepted; accepted: "
                            f"{', '.join(PROBE_KERNELS_VALUES)} (or unset it)")


def _encodes_all(stream: Any) -> bool:
    """Whether ``stream`` can write any text: its encoding is a UTF one (or it has none)."""
    encoding = str(getattr(stream, "encoding", None) or "utf-8").lower().replace("_", "-")
    return encoding.startswith("utf")


@contextlib.contextmanager
def _unencodable_escaped() -> Iterator[None]:
    """While the command runs, stdout and stderr opened in an encoding that lacks some
    characters (``PYTHONIOENCODING=ascii``, a latin-1 terminal) write those characters as
    backslash escapes (``\\xe9``) instead of failing: ``depthlab runs`` of a run named ``é``
    was "UnicodeEncodeError ... (internal error)" and exit 1, and ``depthlab run`` stored its
    run, then failed on the line saying where (exit 1). Each stream's error handler is set
    back afterwards."""
    restore: list[tuple[Any, str]] = []
    for stream in (sys.stdout, sys.stderr):
        if stream is None or _encodes_all(stream) or not hasattr(stream, "reconfigure"):
            continue
        errors = getattr(stream, "errors", None) or "strict"
        if errors in ("strict", "surrogateescape"):
            try:
                stream.reconfigure(errors="backslashreplace")
            except (OSError, ValueError, TypeError, AttributeError):
                continue
            restore.append((stream, errors))
    try:
        yield
    finally:
        for stream, errors in restore:
            try:
                stream.reconfigure(errors=errors)
            except (OSError, ValueError, TypeError, AttributeError):
                pass


def _stdout_broken() -> bool:
    """Whether stdout refuses the command's output (a full disk, a closed pipe); if so it is
    pointed at ``os.devnull``, so the interpreter's exit does not fail on it again."""
    if sys.stdout is None:
        return False
    try:
        sys.stdout.flush()
        return False
    except (OSError, ValueError):
        _onto_devnull(sys.stdout)
        return True


def _onto_devnull(stream: Any) -> None:
    """``stream``'s file descriptor pointed at ``os.devnull`` and what it still buffers
    flushed there; nothing where it has no descriptor or that fails too."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, stream.fileno())
        finally:
            os.close(null)
        stream.flush()
    except (OSError, ValueError, AttributeError):
        pass


class _OutputMayFail:
    """``sys.stdout`` while a command runs: output that cannot be written loses the output,
    not the work. The first write or flush that fails (a reader that stopped: ``depthlab
    sweep grid | head -1`` once ``head`` exited; a full disk: ``> /dev/full``) points stdout
    at ``os.devnull`` and the command goes on. A stopped reader is not an error (the exit
    status is the work's); any other failure is kept in :attr:`failed` for one line and exit
    status 2 at the end. It used to end the command wherever it printed: ``run`` stored its
    run but never saved its network (its first line comes after the store), ``sweep`` ran
    none of its points (its first line is the grid's size), and a closed pipe exited 0.
    As ``sys.stderr`` (``quiet``) every failure is silent: ``depthlab run cfg 2>&1 | head -1``
    stored its run as failed with "BrokenPipeError" (the progress line raised it mid-run)."""

    def __init__(self, stream: Any, quiet: bool = False) -> None:
        self._stream = stream
        self._quiet = quiet
        self.failed: OSError | None = None

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except OSError as e:
            self._lost(e)
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as e:
            self._lost(e)

    def _lost(self, e: OSError) -> None:
        """After ``e``: the stream's file descriptor onto ``os.devnull`` (what it still
        buffers goes there); ``e`` again when it is not the output's failure."""
        if e.filename is not None or not (isinstance(e, BrokenPipeError) or e.errno in (
                errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO)):
            raise e
        if not isinstance(e, BrokenPipeError) and self.failed is None and not self._quiet:
            self.failed = e
        _onto_devnull(self._stream)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextlib.contextmanager
def _output_may_fail() -> Iterator[_OutputMayFail | None]:
    """:class:`_OutputMayFail` as ``sys.stdout`` and (quiet) ``sys.stderr`` while the command
    runs; yields stdout's (None: stdout is already one, or there is none)."""
    out, err = sys.stdout, sys.stderr
    guard = quiet = None
    if out is not None and not isinstance(out, _OutputMayFail):
        sys.stdout = guard = _OutputMayFail(out)
    if err is not None and not isinstance(err, _OutputMayFail):
        sys.stderr = quiet = _OutputMayFail(err, quiet=True)
    try:
        yield guard
    finally:
        if guard is not None and sys.stdout is guard:
            sys.stdout = out
        if quiet is not None and sys.stderr is quiet:
            sys.stderr = err


def _by_sigterm(e: BaseException | None) -> bool:
    """Whether an interrupt is :class:`Terminated` or was raised because of one (a sweep's
    ``SweepInterrupted`` from it)."""
    seen = 0
    while e is not None and seen < 20:
        if isinstance(e, Terminated):
            return True
        e, seen = e.__cause__ or e.__context__, seen + 1
    return False


LOST_INTERRUPT_DELAY_S = 0.05
"""An interrupt Python discarded is raised again this long after, from a timer thread (raised
at once it could land in the same discarding context again)."""


@contextlib.contextmanager
def _interrupts(entry: bool) -> Iterator[None]:
    """While the command runs, in the main thread: SIGINT raises KeyboardInterrupt and SIGTERM
    :class:`Terminated` (a command that handles signals itself, as ``sweep`` does, installs
    its own handlers meanwhile). An interrupt raised where Python discards exceptions (a
    garbage-collector callback, a ``weakref.finalize`` or ``__del__``: "Exception ignored in
    ...") is raised again in the main thread: the command stops instead of running on (a
    ``depthlab run`` went on training). ``entry`` (the process's own command, not a call of
    :func:`main` inside a program): after an interrupt the signals are ignored for the
    interpreter's shutdown, so the exit status stays 130/143 (a late signal made it a death
    by SIGINT)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    import _thread

    seen: list[int] = []
    again = threading.Event()  # the next handler call re-raises a discarded interrupt
    done = threading.Event()  # the command has ended: nothing is raised again after it

    def interrupt(signum: int) -> BaseException:
        return Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()

    def handler(signum: int, _frame: object) -> None:
        if again.is_set():
            again.clear()
            raise interrupt(seen[0])
        seen.append(signum)
        raise interrupt(signum)

    def raise_again() -> None:
        if seen and not again.is_set() and not done.is_set():
            again.set()
            _thread.interrupt_main(seen[0])

    def unraisable(info: Any) -> None:
        if isinstance(info.exc_value, KeyboardInterrupt) and seen:
            later(LOST_INTERRUPT_DELAY_S, raise_again)  # from outside this hook
            return
        old_hook(info)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    old_hook, sys.unraisablehook = sys.unraisablehook, unraisable
    _ENTRY.append(entry)
    try:
        yield
    except KeyboardInterrupt as e:
        if seen and seen[0] == signal.SIGTERM and not _by_sigterm(e):
            # a library dropped the handler's Terminated and raised its own interrupt (an
            # SQLite statement aborted by it): the command still ends as SIGTERM's (143)
            raise Terminated() from e
        raise
    finally:
        try:
            done.set()
            if sys.unraisablehook is unraisable:
                sys.unraisablehook = old_hook
            for s, h in old.items():
                if signal.getsignal(s) is handler:  # not one a command left in place
                    signal.signal(s, signal.SIG_IGN if seen and entry else h)
            if seen:  # signals ignored now: a shutdown that hangs still ends
                arm_shutdown_timer(143 if seen[0] == signal.SIGTERM else 130)
        finally:
            _ENTRY.pop()


@contextlib.contextmanager
def _warnings_as_lines(debug: bool) -> Iterator[None]:
    """Warnings during the command as one line each, ``depthlab: warning: MESSAGE`` (Python's
    own format adds the file, the line number and a second line of source code); ``--debug``
    keeps Python's format."""
    if debug:
        yield
        return
    from ..progress import warning_line

    old = warnings.formatwarning
    warnings.formatwarning = warning_line
    try:
        yield
    finally:
        warnings.formatwarning = old


def _output_failed(e: BaseException) -> bool:
    """Whether ``e`` is the failure to write the command's output to stdout (an OSError
    without a file name: the user's files are named in their errors)."""
    if not isinstance(e, OSError) or e.filename is not None:
        return False
    return _stdout_broken() or e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO)


def _report_output_failure(e: OSError) -> int:
    """Exit status 2 and one line for output that could not be written to stdout; ``e``
    again when it is not that."""
    if not _output_failed(e):
        raise e
    _tell(f"depthlab: error: cannot write the output to stdout: "
                     f"{e.strerror or one_line(e)}\n")
    return 2


def _forget_handled_interrupt() -> None:
    """Clear CPython's "unhandled KeyboardInterrupt" mark. A Ctrl-C raised inside code
    compiled from a string (``exec``: a dataclass or namedtuple that a lazy import defines)
    sets it even when the interrupt is then caught, and ``python -m depthlab`` checks it at
    exit: the process killed itself with SIGINT (status -2) after main had printed
    ``depthlab: interrupted`` and returned 130. Evaluating a string resets the mark (CPython
    clears it before each such evaluation); an interrupt that is really unhandled sets it
    again as it leaves the module."""
    for _ in range(3):  # a Ctrl-C inside this evaluation would set the mark again
        try:
            exec("None")  # noqa: S102
            return
        except BaseException:  # noqa: BLE001, S112 - the status stays main's
            continue


@contextlib.contextmanager
def _sigterm_from_the_start(entry: bool) -> Iterator[None]:
    """SIGTERM raises :class:`Terminated` from the command's first line: :func:`_interrupts`
    is installed only once the command's modules are imported (a second or more on a loaded
    machine), and a SIGTERM before that killed the process silently with status -15 (Ctrl-C
    already raised KeyboardInterrupt there: Python's own handler). Only a SIGTERM left at its
    default action is taken over (an ignored one stays ignored, a program's handler stays).
    The process's own command (``entry``) started with SIGINT ignored (a background job of a
    script: POSIX's rule for ``cmd &``) raises KeyboardInterrupt for it from its first line
    too: :func:`_interrupts` and ``sweep`` take SIGINT over once they start, so a ``kill -INT``
    in the first seconds was ignored (the sweep ran to its end, exit 0) and the same signal a
    few seconds later stopped it (exit 130)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    taken = _signals_to_take_over(entry)
    seen: list[bool] = []

    def handler(signum: int, _frame: object) -> None:
        seen.append(True)
        raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()

    for s in taken:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, before in taken.items():
            if signal.getsignal(s) is handler:
                # after an interrupt the process's own command ignores the signals while the
                # interpreter shuts down, as _interrupts does (a late one changed the status)
                signal.signal(s, signal.SIG_IGN if seen and entry else before)


def _signals_to_take_over(entry: bool) -> dict[int, Any]:
    """The signals :func:`_sigterm_from_the_start` handles, each with its handler before:
    SIGTERM at its default action; SIGINT when ignored, for the process's own command."""
    taken: dict[int, Any] = {}
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        taken[signal.SIGTERM] = signal.SIG_DFL
    if entry and signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        taken[signal.SIGINT] = signal.SIG_IGN
    return taken


def _missing_example(e: BaseException, args: argparse.Namespace) -> str:
    """The hint of :func:`~depthlab.cli.common.shipped_example_hint` when the error ``e`` is
    about the command's config file (``config``, demo's ``--config``) that does not exist and
    is named like a shipped example; else ``""``."""
    from .common import shipped_example_hint

    given = getattr(args, "config", None)
    if not isinstance(given, str) or given not in str(e):
        return ""
    return shipped_example_hint(given)


def _interrupted(e: BaseException) -> int:
    """The line and exit status of a command stopped by Ctrl-C (130) or SIGTERM (143)."""
    if _by_sigterm(e):
        _tell("depthlab: terminated (SIGTERM)\n")
        return 143
    _tell("depthlab: interrupted\n")
    return 130


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``depthlab`` command; returns the exit status."""
    try:
        with _sigterm_from_the_start(entry=argv is None), _unencodable_escaped():
            return _main(argv)
    except KeyboardInterrupt as e:  # landed outside _main's own handlers (its first lines)
        return _interrupted(e)
    finally:
        _forget_handled_interrupt()


def _main(argv: Sequence[str] | None) -> int:
    """:func:`main`'s work."""
    for name in ("stdout", "stderr"):  # started with it closed (`2>&-`): output goes nowhere
        if getattr(sys, name) is None:
            setattr(sys, name, open(os.devnull, "w", encoding="utf-8"))  # noqa: SIM115
    nul = next((a for a in (sys.argv[1:] if argv is None else argv) if "\x00" in str(a)), None)
    if nul is not None:  # no path can hold one: os calls raised "embedded null byte" (exit 1)
        _tell(f"depthlab: error: argument {str(nul)!r} holds a NUL byte; accepted: "
                         "text without NUL characters\n")
        return 2
    try:
        parser = build_parser()
        args, extra = parser.parse_known_args(argv)
        if extra:  # the command's own parser names it and its options (was `depthlab --help`)
            command = _subparsers(parser).get(getattr(args, "command", None) or "", parser)
            command.error(f"unrecognized arguments: {' '.join(extra)}")
        _threads_before_and_after(args, parser)
    except SystemExit as e:
        if e.code:
            return int(e.code)
        try:  # --help, --version: output lost on a full disk was an exit status 0
            sys.stdout.flush()
        except BrokenPipeError:
            _stdout_broken()  # the reader stopped (`| head`): not an error
        except OSError as failed:
            return _report_output_failure(failed)
        return 0
    except OSError as failed:  # the help or version text could not be written
        return _report_output_failure(failed)
    except KeyboardInterrupt as e:
        return _interrupted(e)
    if getattr(args, "_run", None) is None:
        parser.print_help(sys.stderr)
        _tell("depthlab: error: give a command (see `depthlab --help`)\n")
        return 2
    debug = bool(getattr(args, "debug", False))
    user_errors: tuple[type[BaseException], ...] = (UserError,)
    try:
        # imports pandas and SciPy (a second or more): a Ctrl-C meanwhile is the one line
        # and status 130 below (it printed a traceback of the import and died by SIGINT)
        user_errors = _user_errors()
        _check_environment()  # a bad DEPTHLAB_* setting fails here, before anything is written
        with _thread_limit(getattr(args, "threads", None)), _warnings_as_lines(debug), \
                _interrupts(entry=argv is None), _output_may_fail() as guard:
            code = int(args._run(args) or 0)
            if sys.stdout is not None:  # None: started with stdout closed (`>&-`)
                sys.stdout.flush()  # a full disk or a closed pipe fails here, not in the exit
        if guard is not None and guard.failed is not None:  # the work is done, its output lost
            failed = guard.failed
            _tell("depthlab: error: cannot write the output to stdout: "
                  f"{failed.strerror or one_line(failed)}\n")
            return code or 2
        return code
    except KeyboardInterrupt as e:
        return _interrupted(e)
    except BrokenPipeError:
        _stdout_broken()  # the reader stopped (`| head`): not an error
        return 0
    except Exception as e:
        if debug:
            traceback.print_exc()
        if _output_failed(e):
            _tell(f"depthlab: error: cannot write the output to stdout: "
                             f"{e.strerror or one_line(e)}\n")
            return 2
        if isinstance(e, user_errors):
            _tell(f"depthlab: error: {one_line(e)}{_missing_example(e, args)}\n")
            return 2
        if not debug:
            _tell(f"depthlab: error: {type(e).__name__}: {one_line(e)} "
                             "(internal error; run with --debug for the traceback)\n")
        return 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
