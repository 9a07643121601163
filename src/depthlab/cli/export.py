"""``depthlab export [DIR]``: write the result tables as CSV or Parquet."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from .common import Command, UserError, add_dir, choice_arg, folder_arg, open_store


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_dir(p)
    p.add_argument("--format", choices=("csv", "parquet"), type=choice_arg, default="csv",
                   help="file format (default csv)")
    p.add_argument("--to", metavar="PATH", type=folder_arg,
                   help="output folder (default DIR/export; beside the file for a DIR.db)")
    p.add_argument("--force", action="store_true",
                   help="replace files of the tables' names (runs.csv, ...) in a --to folder "
                   "that no export wrote (without it they are refused; an earlier export's "
                   "tables are always replaced)")


def run(args: argparse.Namespace) -> int:
    store = open_store(args.dir, create=False, readonly=True)
    # default: DIR/export, or beside the store file for a DIR naming one (results.db)
    default = store.path.parent / "export"
    target = Path(args.to) if args.to else default
    if target.exists() and not target.is_dir():
        raise UserError(f"--to {str(target)!r} is a file; expected a folder")
    _check_not_a_file_name(target, args.format)
    # the default folder is the export's own (also when named, and one an older depthlab
    # wrote without the marker)
    # (realpath, not Path.resolve: a loop of links raised RuntimeError, an internal error,
    # before store.export could name it)
    with _one_export_at_a_time(target):
        if (args.to and not args.force
                and os.path.realpath(target) != os.path.realpath(default)):
            foreign = _not_an_export(target, args.format)
            if foreign is not None:
                store.close()
                raise UserError(f"--to {str(target)!r} holds {foreign.name!r}, which no "
                                "`depthlab export` wrote there; pass --force to replace it, "
                                "or choose another folder")
        with _tables_progress() as on_table:
            paths = store.export(target, args.format, on_table=on_table)
    store.close()
    for p in paths:
        print(p)
    return 0


FILE_SUFFIXES = frozenset((".csv", ".tsv", ".parquet", ".pq", ".json", ".jsonl", ".xlsx",
                           ".xls", ".feather", ".arrow", ".txt", ".zip", ".gz", ".db"))
"""Suffixes of a table file: a new ``--to`` folder ending in one was meant as a file."""


def _check_not_a_file_name(target: Path, fmt: str) -> None:
    """A :class:`UserError` when ``target`` does not exist yet and its suffix is that of a
    table file (``--to runs.csv``, ``--to tables.parquet``): it was created as a folder named
    ``runs.csv`` holding ``runs.csv``, ``steps.csv``, ... An existing folder of such a name
    (an earlier export's) is accepted."""
    suffix = target.suffix.lower()
    if target.is_dir() or suffix not in FILE_SUFFIXES:
        return
    bare = str(target.with_suffix(""))
    raise UserError(f"--to {str(target)!r} ends in {target.suffix}, a file name; expected a "
                    f"folder (each table is one file in it: runs.{fmt}, steps.{fmt}, ...), "
                    f"such as --to {bare!r}")


LINE_EVERY_S = 5.0
"""Seconds between the status lines of a long export."""


@contextlib.contextmanager
def _tables_progress() -> Iterator[Callable[[str], None]]:
    """A status line on stderr every few seconds while a long export runs (``export: 10 s
    elapsed; writing histograms.csv, file 6 of 9``); nothing for one that ends sooner. An
    export of a 5000-run store (12M histogram rows) wrote nothing for over ten minutes.
    Yields the ``on_table`` function of :meth:`~depthlab.experiments.store.Store.export`."""
    from ..experiments.store import EXPORTED
    from ..progress import waiting

    current = {"name": "", "k": 0}

    def on_table(name: str) -> None:
        current["name"], current["k"] = name, current["k"] + 1

    def write(line: str) -> None:
        where = (f"; writing {current['name']}, file {current['k']} of {len(EXPORTED)}"
                 if current["name"] else "")
        print(line + where, file=sys.stderr, flush=True)

    with waiting("export", "lines", every_s=LINE_EVERY_S, write=write):
        yield on_table


@contextlib.contextmanager
def _one_export_at_a_time(target: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``target``'s parent folder (its nearest existing
    ancestor) while one export checks and writes ``target``: each export reads the folder's
    :data:`~depthlab.experiments.store.EXPORT_MARKER` before writing its tables and writes it
    back after, so two at once (a CSV and a Parquet export, `make -j`) lost the first one's
    names, and the next export was refused for files an export wrote. Where ``flock`` is not
    available (no ``fcntl``, a file system without locks) the export goes on unlocked."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield
        return
    folder = Path(os.path.abspath(target)).parent
    while not folder.is_dir() and folder != folder.parent:
        folder = folder.parent
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:  # no locks there: unlocked, as before
            pass
        yield
    finally:
        os.close(fd)  # (releases the lock)


def _not_an_export(folder: Path, fmt: str) -> Path | None:
    """The first file of ``folder`` that an export in ``fmt`` would replace although no export
    wrote it (not named in the folder's :data:`~depthlab.experiments.store.EXPORT_MARKER`): a
    user's own ``runs.csv`` in ``--to .`` was replaced without a word. A device or FIFO is
    written in place (nothing replaced); ``None`` when nothing would be lost."""
    from ..experiments.store import EXPORTED, exported_files

    if not folder.is_dir():
        return None
    ours = exported_files(folder)
    for name in EXPORTED:
        path = folder / f"{name}.{fmt}"
        if path.name not in ours and path.is_file():  # a regular file, or a link to one
            return path  # (its target would be replaced)
    return None


COMMAND = Command("export", "write the result tables as CSV or Parquet", add_arguments, run)
