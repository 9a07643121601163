"""Shared pieces of the command modules: the user-error type, output helpers, the store opener.

Every user error exits with status 2 and one line on stderr starting with ``depthlab: error:``.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_OUT = "depthlab-out"


class UserError(Exception):
    """A problem the user must fix; printed as one line, exit status 2."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a batch system's time limit) during a command, raised like Ctrl-C so
    the command stops the same way (what was stored stays, nothing half-written); exit 143."""


@dataclass(frozen=True)
class Command:
    """One subcommand: ``add_arguments(parser)`` declares its options, ``run(args) -> int``
    does the work and returns the exit status."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int | None]


def draws_bars() -> bool:
    """Whether stderr is a terminal that can redraw a bar: a terminal (``isatty``) whose
    ``TERM`` is not ``dumb`` (Emacs' shell, some CI consoles: a bar's carriage returns
    left each redraw on the screen)."""
    return sys.stderr.isatty() and os.environ.get("TERM", "").strip().lower() != "dumb"


def progress_enabled(args: argparse.Namespace) -> bool:
    """Progress bars only for a person at a terminal that redraws them (:func:`draws_bars`;
    never into a log or a pipe)."""
    return not getattr(args, "quiet", False) and draws_bars()


def progress_mode(args: argparse.Namespace) -> bool | str:
    """The trainer's ``progress`` setting: a bar on a terminal (:func:`draws_bars`), plain
    status lines every few seconds into a log, a pipe or a ``TERM=dumb`` terminal
    (:mod:`depthlab.progress`), nothing with ``--quiet``."""
    if getattr(args, "quiet", False):
        return False
    return "bar" if draws_bars() else "lines"


def say(args: argparse.Namespace) -> Callable[[str], None]:
    """A ``print`` that respects ``--quiet`` (nothing) and ``--json`` (stderr)."""
    if getattr(args, "quiet", False):
        return lambda _line: None
    if getattr(args, "json", False):  # stdout holds the JSON only
        return lambda line: print(line, file=sys.stderr, flush=True)
    return lambda line: print(line, flush=True)


def num(v: Any, digits: int = 4) -> str:
    """A number to ``digits`` significant digits; missing or non-finite as ``-``."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) >= 1e4 or v != int(v) else f"{v:g}"
    return str(v)


def format_table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    """Plain left-aligned text table (numbers to 4 significant digits, missing as '-'); a
    character stdout cannot encode is escaped (:func:`_encodable`) before the columns are
    measured."""
    encoding = getattr(sys.stdout, "encoding", None)
    cells = [[num(c) if not isinstance(c, str) else _encodable(_printable(c), encoding)
              for c in r] for r in rows]
    widths = [max([_width(h)] + [_width(r[i]) for r in cells]) for i, h in enumerate(header)]
    line = "  ".join(_pad(h, w) for h, w in zip(header, widths))
    out = [line.rstrip(), "  ".join("-" * w for w in widths)]
    out += ["  ".join(_pad(c, w) for c, w in zip(r, widths)).rstrip() for r in cells]
    return "\n".join(out)


def _encodable(text: str, encoding: str | None) -> str:
    """``text`` with each character that ``encoding`` (stdout's) cannot encode written as its
    backslash escape (``é`` -> ``\\xe9``), as stdout then writes it: in an ASCII stdout
    (``PYTHONIOENCODING=ascii``) a run named ``nämé`` was measured as 4 columns and printed
    as 10, so its row was wider than the header."""
    if text.isascii() or not encoding:
        return text
    try:
        text.encode(encoding)
        return text
    except (UnicodeEncodeError, LookupError):
        pass
    try:
        return text.encode(encoding, "backslashreplace").decode(encoding)
    except (UnicodeError, LookupError):
        return text


def _width(text: str) -> int:
    """Terminal columns ``text`` takes: a wide (CJK) character two, a combining accent none
    (``len`` counted characters: a run named "名前" shifted the columns after it)."""
    import unicodedata

    if text.isascii():
        return len(text)
    return sum(0 if unicodedata.combining(ch) or unicodedata.category(ch) in ("Mn", "Me", "Cf")
               else 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in text)


def clip(text: str, width: int) -> str:
    """``text`` on one line (:func:`_printable`) cut to at most ``width`` terminal columns
    (:func:`_width`), ending in ``...`` when cut: a run named with 5,000 characters widened
    every row of a table to 5,000 columns."""
    text = _printable(text)
    if _width(text) <= width:
        return text
    room, used = max(0, width - 3), 0
    for i, ch in enumerate(text):
        used += _width(ch)
        if used > room:
            return text[:i] + "..."
    return text[:room] + "..."


def _pad(text: str, width: int) -> str:
    """``text`` padded with spaces to ``width`` terminal columns (:func:`_width`)."""
    return text + " " * max(0, width - _width(text))


def _printable(text: str) -> str:
    """A table cell on one line: a newline or tab in a run's name shown escaped (``\\n``)."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def open_store(path: str, create: bool, readonly: bool = False):
    """The results store of folder ``path`` (``create=False``: it must exist; ``readonly``:
    opened for reading only, so a store on a read-only disk or file can be read)."""
    from ..experiments import Store

    p = Path(path)
    if not create and p.exists() and p.is_file() and p.suffix not in (".db", ".sqlite",
                                                                       ".sqlite3"):
        raise UserError(f"{path!r} is a file, not a results folder")
    return Store(path, create=create, readonly=readonly)


def metrics_line(metrics: dict[str, Any], monitor: str | None = None) -> str:
    """``key=value`` pairs of the final metrics that are present (with early stopping, what
    ended the run; ``monitor``: its metric's name)."""
    keys = ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc", "steps")
    line = " ".join(f"{k}={num(metrics.get(k))}" for k in keys if metrics.get(k) is not None)
    if metrics.get("stopped_epoch") is not None:  # train.patience ended the run
        stopped = int(metrics["stopped_epoch"])
        if metrics.get("best_epoch") is None:  # no epoch's monitored value was finite
            line += (f" (early stop after epoch {stopped}; no epoch had a finite "
                     f"{monitor or 'monitored value'}: metrics and network of epoch {stopped})")
        else:
            line += (f" (early stop after epoch {stopped}; metrics and network of epoch "
                     f"{int(metrics['best_epoch'])})")
    return line


def shipped_example_hint(given: Any) -> str:
    """`` (a shipped example: `depthlab init --example digits_run` writes digits_run.toml
    here)`` for a config path that does not exist and names one of the examples shipped with
    depthlab (``examples/digits_run.toml``, as README's commands write it, run outside a
    checkout of the repository; `` (did you mean digits_run.toml, in this folder?)`` when
    the current folder has it), else ``""``."""
    if not isinstance(given, str) or given in ("", "-"):
        return ""
    try:
        if os.path.exists(given):
            return ""
        from .init import shipped_examples

        wanted = Path(given).name.lower()
        found = next((e for e in shipped_examples() if e.lower() == wanted
                      and e.endswith(".toml")), None)
    except (OSError, ValueError):
        return ""
    if found is None:
        return ""
    if os.path.exists(found) and Path(found).resolve() != Path(given).resolve():
        return f" (did you mean {found}, in this folder?)"
    stem = found[:-len(".toml")]
    return (f" (a shipped example: `depthlab init --example {stem}` writes {found} here; "
            f"then give {found})")


def path_arg(text: str) -> str:
    """A path option's value: not empty (``--out "$UNSET"`` would write into the current
    folder). A leading ``~`` is the home folder, as from Python (``Store("~/runs")``): the
    shell leaves it in ``--to=~/exports`` (no expansion after ``=``), and ``export`` and
    ``predict --to`` wrote into a new folder literally named ``~`` in the current one."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path is not accepted; expected a folder or "
                                         "file name")
    return os.path.expanduser(text) if text.startswith("~") else text


def home_arg(text: str) -> str:
    """A file argument (a config, ``init NAME``) with a leading ``~`` as the home folder, as
    :func:`path_arg` reads it (``'~/exp.toml'`` was "config file '~/exp.toml' not found");
    other text as given (``-`` is standard input, an empty one is refused by the command)."""
    return os.path.expanduser(text) if text.startswith("~") else text


def folder_arg(text: str) -> str:
    """An output folder option's value (``--out``, ``export --to``): a :func:`path_arg` that
    is not ``-``, which means stdout to ``predict --to`` (``export --to -`` wrote its tables
    into a new folder named ``-``); ``./-`` names such a folder."""
    text = path_arg(text)
    if text.strip() == "-":
        raise argparse.ArgumentTypeError("'-' (stdout) is not accepted: this option names a "
                                         "folder that files are written into; expected a "
                                         "folder name ('./-' for a folder named '-')")
    return text


def choice_arg(text: str) -> str:
    """A fixed-choice option's value as the choices spell it: blanks stripped, lower case,
    ``_`` as ``-`` (``--format PARQUET``, ``--kind sweep_point`` were "invalid choice", while
    data set, experiment and example names are read in any case)."""
    return text.strip().lower().replace("_", "-")


def add_out(p: argparse.ArgumentParser) -> None:
    """The ``--out DIR`` option of the commands that write a store."""
    p.add_argument("--out", default=DEFAULT_OUT, metavar="DIR", type=folder_arg,
                   help=f"results folder (store DIR/depthlab.db; default ./{DEFAULT_OUT})")


def add_dir(p: argparse.ArgumentParser) -> None:
    """The positional results folder of the commands that read a store."""
    p.add_argument("dir", nargs="?", default=DEFAULT_OUT, type=path_arg,
                   help=f"results folder (default ./{DEFAULT_OUT})")


WORKER_BYTES = 100 * 2**20
"""Memory of one idle worker process (Python with NumPy, pandas and the runner imported:
about 120 MiB measured), a lower bound for ``--jobs`` worker processes."""


def check_jobs(jobs: int, option: str | None = None) -> int:
    """``--jobs`` (or ``option``, e.g. ``--cluster local:N``) must be a positive integer, and
    that many worker processes must fit in memory (refused before the first one starts)."""
    option = option or f"--jobs {jobs}"
    if jobs < 1:
        raise UserError(f"{option} is not accepted; accepted: an integer >= 1")
    if jobs > 1:
        from ..memory import MemoryRefusal, check_fits

        try:
            check_fits(jobs * WORKER_BYTES, f"{option} ({jobs} worker processes of at least "
                       "100 MiB each)")
        except MemoryRefusal as e:
            raise UserError(str(e)) from None
    return jobs


def _in_the_way(folder: Any) -> str | None:
    """What a broken symbolic link at ``folder`` leads to (None: not such a link)."""
    from ..atomic import in_the_way

    try:
        path = os.fsdecode(folder)
        return in_the_way(path) if os.path.islink(path) and not os.path.exists(path) else None
    except (OSError, TypeError, ValueError):
        return None


def one_line(e: BaseException) -> str:
    """An exception's message on one line."""
    text = str(e).strip() or type(e).__name__
    if isinstance(e, KeyError) and e.args:
        text = str(e.args[0])
    if isinstance(e, OSError) and e.strerror and e.filename is not None and text.startswith(
            "[Errno"):  # "[Errno 20] Not a directory: 'x/y'" -> "cannot use 'x/y': Not a ..."
        text = (f"cannot create folder {str(e.filename)!r}: "
                f"{_in_the_way(e.filename) or 'a file with that name exists'}"
                if isinstance(e, FileExistsError) else
                f"cannot use {str(e.filename)!r}: {e.strerror}")
    return " ".join(text.split())


def check_file_folder(target: Path, what: str) -> None:
    """Refuse an output FILE whose folder does not exist (one rule for every command: an
    output file, ``predict --to FILE`` or ``init NAME``, goes into an existing folder, a typo
    in a folder's name does not create a new tree; an output FOLDER, ``--out DIR`` or
    ``export --to DIR``, is created with its parents). The first existing folder above that is
    a file is named as one. ``what`` names the value in the message (``--to 'x/p.csv'``)."""
    folder = target.parent
    above = folder
    while not above.exists() and above != above.parent:
        above = above.parent
    if above.exists() and not above.is_dir():
        raise UserError(f"{what}: {str(above)!r} is a file, not a folder")
    if not folder.is_dir():
        raise UserError(f"{what}: folder {str(folder)!r} does not exist; expected a file in an "
                        "existing folder (create the folder first)")


SHUTDOWN_GRACE_S = 10.0
"""After an interrupt the command's own clean-up is done (store closed, workers stopped): the
interpreter's shutdown (a library's threads and exit handlers among it) gets this long before
the process exits anyway."""


_ENTRY: list[bool] = []
"""One entry per command running in this process: whether it is the process's own command
(``depthlab ...``, pushed by the CLI's signal handling); :func:`entry_command` reads the
innermost."""


def entry_command() -> bool:
    """Whether the command running is the process's own (``depthlab ...``), not a call of
    ``depthlab.cli.main`` inside a program: only then may it leave SIGINT/SIGTERM ignored when
    it ends after an interrupt (the program's Ctrl-C stayed ignored for good otherwise), or
    arm :func:`arm_shutdown_timer`'s timer."""
    return bool(_ENTRY and _ENTRY[-1])


def arm_shutdown_timer(code: int) -> None:
    """After an interrupt, the command's own clean-up done: :func:`exit_within`
    ``(SHUTDOWN_GRACE_S, code)``, so that a shutdown that hangs still ends the process, but
    only when the command is the process's own (:func:`entry_command`): a ``main()`` call
    inside a program (a notebook, a pytest worker) arms nothing, the timer would end that
    program ``SHUTDOWN_GRACE_S`` later."""
    if entry_command():
        exit_within(SHUTDOWN_GRACE_S, code)


def later(seconds: float, fn: Callable[[], Any]) -> None:
    """``fn()`` in a daemon thread after ``seconds``."""
    timer = threading.Timer(seconds, fn)
    timer.daemon = True
    timer.start()


def exit_within(seconds: float, code: int) -> None:
    """A daemon timer that ends the process with ``code`` (output flushed) if it still runs
    after ``seconds``: a Ctrl-C must end the command even if a library's shutdown hangs."""

    def end() -> None:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)

    later(seconds, end)
