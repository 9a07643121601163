"""The results store: one SQLite file ``DIR/depthlab.db`` (WAL mode).

Every run is written by :meth:`Store.add_run` in a single transaction (the ``runs`` row and
all of its per-step, per-epoch, probe, histogram, Jacobian and findings rows), so a process
killed at any moment leaves either the whole run or nothing. Commits use
``synchronous=NORMAL`` (no fsync per commit): durable against process kills; a power loss or
OS crash may drop the last few committed runs, never corrupt the store. Several processes may
write at once (SQLite serialises the writers; a busy writer is waited for).
"""

from __future__ import annotations

import functools
import gc
import json
import math
import operator
import os
import re
import shutil
import sqlite3
import tempfile
import time
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..atomic import atomic_write_all, expand_home, in_the_way
from ..equality import value_eq
from ..jsonable import jsonable
from ..validators import as_number

DB_NAME = "depthlab.db"
STATUSES: tuple[str, ...] = ("finished", "diverged", "failed", "interrupted")
KINDS: tuple[str, ...] = ("run", "sweep-point", "doctor", "reproduce")
METRIC_KEYS: tuple[str, ...] = ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss",
                                "test_acc", "steps", "seconds", "epochs", "n_parameters")
"""The final metrics every run has a column for (:meth:`Store.runs`, the export's runs table,
`depthlab runs --json`), NaN/None where a run has none: the columns do not depend on what the
store holds (a store of failed points only had no ``epochs`` or ``n_parameters`` column)."""
TABLES: tuple[str, ...] = ("runs", "steps", "epochs", "evals", "probes", "histograms",
                           "jacobian", "findings")
EXPORTED: tuple[str, ...] = (*TABLES, "sweep_points")
"""What :meth:`Store.table` reads and :meth:`Store.export` writes: every table, ``sweep_points``
(the runs each sweep holds) too."""
EXPORT_MARKER = ".depthlab-export"
"""The file :meth:`Store.export` writes beside its tables, naming the files exports wrote there
(one a line, after a comment line): the next export may replace those (``depthlab export --to``
refuses to replace any other file of a table's name, unless ``--force``)."""
_MARKER_HEAD = "# files written by `depthlab export`; the next export to this folder replaces them"


COUNT_KEYS: tuple[str, ...] = ("steps", "epochs", "n_parameters")
"""The final metrics that count (steps, epochs, parameters): whole numbers in an export's runs
table, empty where a run has none."""


def exported_files(folder: str | os.PathLike) -> set[str]:
    """The names of the files that exports wrote in ``folder`` (its :data:`EXPORT_MARKER`;
    empty without one)."""
    try:
        text = (Path(folder) / EXPORT_MARKER).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    return {line.strip() for line in text.splitlines()
            if line.strip() and not line.startswith("#")}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, name TEXT, kind TEXT NOT NULL, sweep TEXT, status TEXT NOT NULL,
    config TEXT NOT NULL, metrics TEXT NOT NULL, divergence TEXT, error TEXT,
    created REAL NOT NULL, seconds REAL);
CREATE TABLE IF NOT EXISTS steps (run_id TEXT NOT NULL, step INTEGER, loss REAL);
CREATE TABLE IF NOT EXISTS epochs (run_id TEXT NOT NULL, epoch INTEGER, step INTEGER,
    metrics TEXT);
CREATE TABLE IF NOT EXISTS evals (run_id TEXT NOT NULL, step INTEGER, metrics TEXT);
CREATE TABLE IF NOT EXISTS probes (run_id TEXT NOT NULL, step INTEGER, layer INTEGER,
    quantity TEXT, value REAL);
CREATE TABLE IF NOT EXISTS histograms (run_id TEXT NOT NULL, step INTEGER, layer INTEGER,
    kind TEXT, bin_left REAL, bin_right REAL, count INTEGER);
CREATE TABLE IF NOT EXISTS jacobian (run_id TEXT NOT NULL, step INTEGER, example INTEGER,
    idx INTEGER, value REAL);
CREATE TABLE IF NOT EXISTS findings (run_id TEXT NOT NULL, payload TEXT);
CREATE TABLE IF NOT EXISTS sweep_points (sweep TEXT NOT NULL, run_id TEXT NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS sweep_points_key ON sweep_points(sweep, run_id);
CREATE TABLE IF NOT EXISTS sweeps (id TEXT PRIMARY KEY, points INTEGER NOT NULL,
    created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS sweep_grids (id TEXT PRIMARY KEY, grid TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS steps_run ON steps(run_id);
CREATE INDEX IF NOT EXISTS epochs_run ON epochs(run_id);
CREATE INDEX IF NOT EXISTS evals_run ON evals(run_id);
CREATE INDEX IF NOT EXISTS probes_run ON probes(run_id);
CREATE INDEX IF NOT EXISTS histograms_run ON histograms(run_id);
CREATE INDEX IF NOT EXISTS jacobian_run ON jacobian(run_id);
CREATE INDEX IF NOT EXISTS findings_run ON findings(run_id);
"""

_TABLE_COLUMNS: dict[str, list[str]] = {
    m.group(1): [c.split()[0] for c in m.group(2).split(",")]
    for m in re.finditer(r"CREATE TABLE IF NOT EXISTS (\w+) \((.*?)\);", _SCHEMA, re.S)}

_ADDED_COLUMNS: dict[str, tuple[str, ...]] = {
    "histograms": ("n_neginf", "n_posinf", "n_nan"),
}
"""Columns (INTEGER) added to a table after stores were written without them: ``ALTER TABLE
... ADD COLUMN`` on a writable open; a store without them (opened read-only, or written by an
older depthlab) reads them as NaN (unknown), and its tables are not refused for lacking them.
``histograms``: the counts of each histogram's ``-inf``, ``+inf`` and NaN entries (in no bin)."""

_WRITE_COLUMNS: dict[str, list[str]] = {
    t: [*cols, *_ADDED_COLUMNS.get(t, ())] for t, cols in _TABLE_COLUMNS.items()}
"""The columns depthlab writes to each table (:func:`_insert`)."""

_TEXT_COLUMNS = frozenset({"quantity", "kind"})
"""The columns of text in the per-run tables (:meth:`Store.probes` ...); the others hold
numbers."""

_COLUMNS: dict[str, tuple[str, ...]] = {
    "steps": ("step", "loss"),
    "probes": ("step", "layer", "quantity", "value"),
    "histograms": ("step", "layer", "kind", "bin_left", "bin_right", "count",
                   *_ADDED_COLUMNS["histograms"]),
    "jacobian": ("step", "example", "idx", "value"),
}


LOCK_POLL_S = 0.25
"""While another process holds the store's write lock, SQLite waits this long at a time (its
own wait cannot be interrupted): a Ctrl-C is acted on between the waits."""
LOCK_NOTE_S = 2.0
"""After waiting this long for another process's lock, a warning says which store is waited
for (the command looked hung)."""


def _busy_ms(seconds: float) -> int:
    """SQLite's ``busy_timeout`` (milliseconds, a 32-bit int) for a wait of ``seconds``: a
    longer wait than 2**31 - 1 ms (~24.8 days; ``timeout=1e10`` for "wait for ever") gives the
    longest, where it wrapped to 0 (no wait at all)."""
    return min(int(seconds * 1000), 2**31 - 1)


def _is_locked(e: BaseException) -> bool:
    """SQLite's "database is locked" (another process holds the lock SQLite waited for)."""
    return isinstance(e, sqlite3.OperationalError) and (
        "database is locked" in str(e) or "database table is locked" in str(e))


class StoreError(RuntimeError):
    """The store cannot be opened or read (one-line message)."""


class StoreWriteError(StoreError):
    """A run could not be written (disk full, read-only, damaged store). ``record`` holds the
    run that was not stored, so the caller still has it; runs stored earlier are intact."""

    def __init__(self, message: str, record: RunRecord | None = None) -> None:
        super().__init__(message)
        self.record = record


class RunExistsError(StoreError):
    """``add_run(..., replace=False)`` found a stored run with the same id."""


STORE_VERSION = 1
"""The store's layout version, SQLite's ``user_version`` (0: a store written before it was
set, read as version 1). A store of a later version is refused, never half-understood."""
QUICK_CHECK_BYTES = 32 << 20
"""Largest store (file and WAL, bytes) :meth:`Store.check_intact` reads through before a run or
a sweep writes to it (``PRAGMA quick_check``: about 0.1 s CPU for 32 MiB here)."""
NAME_SHOWN = 80
"""Most characters of a run's name that a message quotes (:meth:`Store.describe`)."""
STORE_NAME_MAX = 247
"""Longest store file name (bytes): SQLite's ``NAME-wal`` and ``NAME-shm`` must fit the
common 255-byte limit (and -journal, which SQLite may use before WAL mode is set)."""


def _reason(e: BaseException, path: Path | None = None) -> str:
    """One line on why SQLite failed; a disk I/O error on a full disk says so."""
    text = str(e) or type(e).__name__
    if path is not None and path.is_dir():  # SQLite says "unable to open database file"
        return f"{str(path)!r} is a folder, not a database file: {text}"
    if path is not None and path.is_symlink() and not path.exists():  # the same words
        return (f"it is a symbolic link to {os.readlink(path)!r}, which cannot be opened "
                f"(its folder is missing, or the links form a loop): {text}")
    if path is not None and _read_only_disk(path):  # SQLite says "unable to open database file"
        return f"the file system is read-only: {text}"
    if path is not None and "database or disk is full" not in text:
        try:
            usage = shutil.disk_usage(path.parent)
        except OSError:
            usage = None
        free = None if usage is None else usage.free
        if usage is not None and usage.total == 0:  # /proc, /sys: was "no space left (0 free)"
            return (f"{str(path.parent)!r} is on a virtual file system (0 bytes in all, such as "
                    f"/proc or /sys), where no store can be created: {text}")
        if free is not None and free < 65536:
            return f"no space left on device ({free} bytes free): {text}"
    hints = {"database disk image is malformed": "the file is damaged (restore it from a "
             "copy or move it away)", "file is not a database": "not an SQLite database",
             "database or disk is full": "no space left on device"}
    for key, hint in hints.items():
        if key in text:
            return f"{hint}: {text}" if hint != text else text
    if isinstance(e, OSError) and e.strerror:
        return e.strerror.lower()
    return text


WAL_HEADER = 32
"""Bytes of a WAL file's header; a longer WAL holds frames (pages of committed runs that may
not be in the database file yet)."""


def _wal_path(path: Path) -> Path:
    return path.with_name(path.name + "-wal")


def _wal_frames(path: Path) -> bool:
    """Whether the store at ``path`` has a WAL file holding frames."""
    try:
        return _wal_path(path).stat().st_size > WAL_HEADER
    except OSError:
        return False


def _read_only_disk(path: Path) -> bool:
    """Whether the folder of ``path`` (or its nearest existing parent) is on a file system
    mounted read-only (``statvfs`` flag ``ST_RDONLY``)."""
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


def _not_a_file(path: Path) -> str | None:
    """What ``path`` is when it exists and is neither a regular file nor a folder (a FIFO, a
    device, a socket; through a symbolic link too), in words; else None."""
    import stat

    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    kind = ("a named pipe (FIFO)" if stat.S_ISFIFO(mode) else "a device"
            if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket"
            if stat.S_ISSOCK(mode) else "not a regular file")
    return f"it is {kind}"


def _storage_error(e: BaseException) -> bool:
    """An error of the file or its disk (full, read-only, damaged), not of the caller's data."""
    if isinstance(e, sqlite3.ProgrammingError | sqlite3.IntegrityError | sqlite3.DataError):
        return False
    return isinstance(e, sqlite3.DatabaseError | OSError)


def _reading(method: Callable) -> Callable:
    """Turn SQLite errors of a reading method into a one-line :class:`StoreError`."""

    @functools.wraps(method)
    def wrapper(self: Store, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.DatabaseError as e:
            if isinstance(e, sqlite3.OperationalError) and str(e) == "interrupted":
                # sqlite3's Connection.interrupt() (a Ctrl-C handler) ends the statement so:
                # an interrupt, not a damaged store (was exit 2, "cannot be read: interrupted")
                raise KeyboardInterrupt("a store statement was interrupted") from e
            if not _storage_error(e):
                raise
            raise StoreError(f"results store {str(self.path)!r} cannot be read: "
                             f"{_reason(e, self.path)}") from None
        except json.JSONDecodeError as e:  # a row edited or damaged outside depthlab
            raise StoreError(f"results store {str(self.path)!r} cannot be read: a stored "
                             f"value is not valid JSON ({e.msg} at character {e.pos}); the "
                             "store was changed outside depthlab or is damaged") from None

    return wrapper


def dumps(obj: Any) -> str:
    """Strict JSON (NaN/inf written as null)."""
    return json.dumps(jsonable(obj), sort_keys=True, default=str)


def _empty(columns: Iterable[str]) -> pd.DataFrame:
    return pd.DataFrame({c: [] for c in columns})


@dataclass
class RunRecord:
    """Everything one run leaves behind (see the store contract)."""

    __eq__ = value_eq()  # arrays/tables compared by value (the generated one raised)

    id: str
    name: str | None = None
    kind: str = "run"
    sweep: str | None = None
    status: str = "finished"
    config: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    divergence: dict | None = None
    error: str | None = None
    seconds: float = 0.0
    steps: pd.DataFrame = field(default_factory=lambda: _empty(_COLUMNS["steps"]))
    epochs: pd.DataFrame = field(default_factory=pd.DataFrame)
    evals: pd.DataFrame = field(default_factory=pd.DataFrame)
    probes: pd.DataFrame = field(default_factory=lambda: _empty(_COLUMNS["probes"]))
    histograms: pd.DataFrame = field(default_factory=lambda: _empty(_COLUMNS["histograms"]))
    jacobian: pd.DataFrame = field(default_factory=lambda: _empty(_COLUMNS["jacobian"]))
    findings: dict | None = None
    created: float | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"unknown run status {self.status!r}; expected one of {STATUSES}")
        if self.kind not in KINDS:
            raise ValueError(f"unknown run kind {self.kind!r}; expected one of {KINDS}")

    def __repr__(self) -> str:
        from ..report.notebook import run_record_repr

        return run_record_repr(self)

    def _repr_html_(self) -> str:
        """Status, metrics, training curves and gradient figure (Jupyter)."""
        from ..report.notebook import run_record_html

        return run_record_html(self)


def resolve_db_path(path_or_dir: str | os.PathLike) -> Path:
    """``DIR/depthlab.db`` for a folder (or a path without a ``.db`` suffix, or one ending in a
    slash), else the path.
    An empty path (``""``: the current folder, as ``--out "$UNSET"`` would say) or a
    non-path is refused (ValueError / TypeError naming it)."""
    if not isinstance(path_or_dir, str | os.PathLike):
        raise TypeError(f"results store {path_or_dir!r} has the wrong type; accepted: a folder "
                        "or a .db file path (str or os.PathLike)")
    if not str(os.fspath(path_or_dir)).strip():
        raise ValueError(f"results store {path_or_dir!r} is an empty path; accepted: a folder "
                         "or a .db file path")
    p = expand_home(path_or_dir)  # "~/runs" from Python: the home folder, not "./~"
    slash = str(os.fspath(path_or_dir)).endswith(("/", os.sep))  # "runs.db/": a folder (Path
    if slash or p.is_dir() or p.suffix not in (".db", ".sqlite", ".sqlite3"):  # drops it)
        return p / DB_NAME
    return p


class Store:
    """The SQLite results store at ``path_or_dir`` (a folder gets ``depthlab.db``).

    ``create=False`` refuses to create a missing database (for read-only commands);
    ``readonly=True`` opens an existing store for reading only (works on a read-only file
    system or file; runs a killed writer left in the WAL, which SQLite cannot read there without
    the store's ``-shm`` file, are read from a temporary copy). A file that is not a depthlab
    store (another program's ``runs`` table, damaged pages, not SQLite) is refused with a
    one-line :class:`StoreError` naming it.
    """

    def __init__(self, path_or_dir: str | os.PathLike, *, create: bool = True,
                 readonly: bool = False, timeout: float = 120.0) -> None:
        self.path = resolve_db_path(path_or_dir)
        for flag, value in (("create", create), ("readonly", readonly)):
            if not isinstance(value, bool | np.bool_):  # create="no" was truthy: created
                raise TypeError(f"{flag}={value!r:.40} is not accepted; accepted: True or False")
        self.readonly = readonly
        seconds = as_number(timeout) if not isinstance(timeout, bool) else math.nan
        if not 0 <= seconds < math.inf:  # 'x' or NaN: a raw float()/int() error later
            error = ValueError if isinstance(timeout, int | float) and not isinstance(
                timeout, bool) else TypeError
            raise error(f"timeout={timeout!r:.40} is not accepted; accepted: seconds to wait "
                        "for another process's lock, a finite number >= 0")
        self._timeout = seconds  # seconds another process's lock is waited for
        if len(os.fsencode(self.path.name)) > STORE_NAME_MAX:  # before SQLite creates it empty
            raise StoreError(f"cannot open results store {str(self.path)!r}: its file name is "
                             f"{len(os.fsencode(self.path.name))} bytes; accepted: at most "
                             f"{STORE_NAME_MAX} (SQLite adds -journal, -wal and -shm to it)")
        special = _not_a_file(self.path)
        if special:  # SQLite opened it: "disk I/O error", or a device taken for an empty store
            raise StoreError(f"cannot open results store {str(self.path)!r}: {special}, not a "
                             "database file; use another --out (a folder or a .db file)")
        if readonly:
            self._open_readonly(timeout)
            return
        if not self.path.exists():
            if not create:
                raise StoreError(f"no results store at {str(self.path)!r} (run `depthlab run` "
                                 "or `depthlab sweep` with --out first)")
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                # errno EEXIST or ENOTDIR: name what is in the way (a file, a broken link)
                why = in_the_way(self.path.parent) or e.strerror or str(e)
                raise StoreError(f"cannot create results folder {str(self.path.parent)!r}: "
                                 f"{why}") from None
        try:
            self._conn = sqlite3.connect(str(self.path), timeout=min(timeout, LOCK_POLL_S),
                                         isolation_level=None, check_same_thread=False)
            self._while_locked(self._open_schema)
            self._conn.execute(f"PRAGMA busy_timeout={_busy_ms(seconds)}")
        except sqlite3.DatabaseError as e:
            raise StoreError(f"cannot open results store {str(self.path)!r}: "
                             f"{_reason(e, self.path)}") from None

    def _open_schema(self) -> None:
        """WAL mode and depthlab's tables (one attempt; :meth:`_while_locked` repeats it).
        The file is checked first (:meth:`_check_schema`): another program's database, a
        newer store or a damaged one is refused untouched (WAL mode was set first, which
        rewrites the file's header: such a file was changed by the refused command)."""
        self._check_schema()
        self._conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL under WAL: a commit is appended to the WAL without an fsync (the WAL
        # is synced at checkpoints), ~10x cheaper per run. A killed process still
        # leaves each run whole or absent; only a power loss or OS crash can drop the
        # last commits (never corrupt the file) -- a rerun of the sweep redoes them.
        self._conn.execute("PRAGMA synchronous=NORMAL")
        with self._transaction(wait=False):
            for stmt in _SCHEMA.strip().split(";"):
                if stmt.strip():
                    self._conn.execute(stmt)
            for table, added in _ADDED_COLUMNS.items():
                have = {r[1] for r in self._conn.execute(f"PRAGMA table_info({table})")}
                for col in added:
                    if col not in have:  # a store written before the column existed
                        self._conn.execute(f"ALTER TABLE {table} ADD COLUMN {col} INTEGER")
            if self._conn.execute("PRAGMA user_version").fetchone()[0] < STORE_VERSION:
                self._conn.execute(f"PRAGMA user_version = {STORE_VERSION}")

    def _while_locked(self, action: Callable[[], Any]) -> Any:
        """``action()``, repeated while another process holds the store locked (a sweep
        writing a run, an open ``sqlite3`` session): SQLite waits :data:`LOCK_POLL_S` at a time,
        so Ctrl-C stops the wait promptly; after :data:`LOCK_NOTE_S` a warning names the store
        waited for, and after the store's ``timeout`` (seconds) a :class:`StoreError` says it
        stayed locked (it waited silently, then said only "database is locked")."""
        conn = self._conn
        conn.execute(f"PRAGMA busy_timeout={_busy_ms(min(self._timeout, LOCK_POLL_S))}")
        start, warned = time.monotonic(), False
        try:
            while True:
                try:
                    return action()
                except sqlite3.OperationalError as e:
                    if not _is_locked(e):
                        raise
                    waited = time.monotonic() - start
                    if waited >= self._timeout:
                        raise StoreError(
                            f"results store {str(self.path)!r} stayed locked by another process "
                            f"for {self._timeout:g} s (a run or sweep writing to it, or an "
                            "open sqlite3 session); try again once it is done") from None
                    if not warned and waited >= min(LOCK_NOTE_S, self._timeout / 2):
                        warnings.warn(
                            f"results store {str(self.path)!r} is locked by another process; "
                            f"waiting for it (up to {self._timeout:g} s; Ctrl-C stops)",
                            UserWarning, stacklevel=2)
                        warned = True
        finally:
            conn.execute(f"PRAGMA busy_timeout={_busy_ms(self._timeout)}")

    def _open_readonly(self, timeout: float) -> None:
        if self.path.is_dir():  # said "no results store", as if nothing were there
            raise StoreError(f"cannot open results store {str(self.path)!r} read-only: "
                             f"{str(self.path)!r} is a folder, not a database file")
        if not self.path.is_file():
            raise StoreError(f"no results store at {str(self.path)!r} (run `depthlab run` "
                             "or `depthlab sweep` with --out first)")
        uri = self.path.resolve().as_uri()
        err: sqlite3.DatabaseError | None = None
        # A store we may write is opened read-write with query_only on: the last connection
        # to close then removes the WAL and its index (a mode=ro one cannot: `depthlab report`
        # left empty depthlab.db-wal/-shm files beside the store). mode=ro shares the WAL with
        # live writers; immutable=1 also reads a store on a read-only file system, where
        # SQLite cannot create the WAL index.
        writable = os.access(self.path, os.W_OK) and os.access(self.path.parent, os.W_OK)
        for query in ("mode=rw", "mode=ro", "mode=ro&immutable=1")[0 if writable else 1:]:
            if query.endswith("immutable=1") and _wal_frames(self.path):
                # immutable=1 reads the database file alone: the runs committed to the WAL
                # (a writer killed before its checkpoint) were silently missing, or the store
                # was "empty ... remove the file"; SQLite reads that WAL only beside a -shm
                # file it can open or create, which a read-only folder may lack
                self._open_copy(timeout)
                return
            try:
                # waits LOCK_POLL_S at a time while another process locks the store (its
                # EXCLUSIVE locking mode): Ctrl-C stops it, a warning says what is waited for
                # and `timeout` ends it; it waited silently, deaf to Ctrl-C, twice `timeout`
                self._conn = sqlite3.connect(f"{uri}?{query}", uri=True,
                                             timeout=min(timeout, LOCK_POLL_S),
                                             isolation_level=None, check_same_thread=False)
                if query == "mode=rw":
                    self._conn.execute("PRAGMA query_only=ON")
                try:
                    self._while_locked(self._check_schema)
                    has_runs = self._while_locked(lambda: self._has_table("runs"))
                except StoreError:
                    self._conn.close()
                    raise
                if not has_runs:  # said "cannot be read: no such table: runs"
                    self._conn.close()
                    raise StoreError(self._empty_store_message())
                return
            except sqlite3.DatabaseError as e:
                err = e
                if "malformed" in str(e) or "not a database" in str(e):
                    break
        raise StoreError(f"cannot open results store {str(self.path)!r} read-only: "
                         f"{_reason(err, self.path)}") from None

    def _open_copy(self, timeout: float) -> None:
        """Read a store whose WAL holds committed runs but which SQLite cannot read in place
        (a read-only folder without the store's ``-shm`` file): the database file and its WAL
        are copied to a private temporary folder and read there (removed on :meth:`close`)."""
        wal = _wal_path(self.path)
        try:
            need = self.path.stat().st_size + wal.stat().st_size
            folder = Path(tempfile.mkdtemp(prefix="depthlab-store-"))
        except OSError as e:
            raise StoreError(self._copy_message(f"{e.strerror or e}")) from None
        self._copy_dir = folder
        self._cleanup = weakref.finalize(self, shutil.rmtree, str(folder), True)
        try:
            free = shutil.disk_usage(folder).free
            if free < need + (1 << 20):
                raise OSError(f"{need:,} bytes needed in {str(folder.parent)!r}, {free:,} free "
                              "(set TMPDIR to a larger folder)")
            copy = folder / self.path.name
            shutil.copyfile(self.path, copy)
            shutil.copyfile(wal, _wal_path(copy))
            self._conn = sqlite3.connect(str(copy), timeout=min(timeout, LOCK_POLL_S),
                                         isolation_level=None, check_same_thread=False)
            self._conn.execute("PRAGMA query_only=ON")
            self._check_schema()
            if not self._has_table("runs"):
                raise StoreError(self._empty_store_message())
        except BaseException as e:
            if getattr(self, "_conn", None) is not None:
                self._conn.close()
            self._cleanup()
            if not isinstance(e, OSError | sqlite3.DatabaseError):
                raise
            why = _reason(e) if isinstance(e, sqlite3.DatabaseError) else (e.strerror or str(e))
            raise StoreError(self._copy_message(why)) from None

    def _copy_message(self, why: str) -> str:
        return (f"cannot open results store {str(self.path)!r} read-only: its last runs are in "
                f"{_wal_path(self.path).name}, which SQLite reads only beside a "
                f"{self.path.name}-shm file it can create (the folder is read-only), and a "
                f"temporary copy failed: {why}")

    def _empty_store_message(self) -> str:
        """Why a database without depthlab's tables (a 0-byte file) cannot be read."""
        try:
            size = f"{self.path.stat().st_size} bytes"
        except OSError:
            size = "size unknown"
        return (f"results store {str(self.path)!r} is empty ({size}, no runs table): not a "
                "depthlab results store yet (a file created by another program, or a store "
                "whose creation was cut short); `depthlab run`/`sweep` with this --out "
                "starts one there, or remove the file")

    def _check_schema(self) -> None:
        """Refuse a database whose tables are not depthlab's (e.g. another program's
        ``runs`` table, or tables but no ``runs``): each of depthlab's tables that exists must
        have the columns depthlab writes."""
        version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        if version > STORE_VERSION:  # a layout this version cannot know
            raise StoreError(f"results store {str(self.path)!r} was written by a newer depthlab "
                             f"(store version {version}; this version reads up to "
                             f"{STORE_VERSION}): upgrade depthlab (pip install -U depthlab)")
        tables = [r[0] for r in self._conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
        if tables and "runs" not in tables:
            raise StoreError(
                f"{str(self.path)!r} is not a depthlab results store: it holds the tables "
                f"{', '.join(sorted(tables)[:8])} but no 'runs' table; use another --out folder")
        for table, cols in _TABLE_COLUMNS.items():
            have = [r[1] for r in self._conn.execute(f"PRAGMA table_info({table})")]
            if have and set(cols) - set(have):
                raise StoreError(
                    f"{str(self.path)!r} is not a depthlab results store: its table "
                    f"{table!r} has columns ({', '.join(have)}), depthlab expects "
                    f"({', '.join(cols)}); use another --out folder")

    def check_writable(self) -> None:
        """Write and remove a scratch row of 64 KiB (and one row of every table) in one
        committed transaction, so a read-only or full store, or one whose tables refuse
        depthlab's rows (a later version's), fails before training rather than after it. A
        store of at most :data:`QUICK_CHECK_BYTES` is checked for damage first
        (:meth:`check_intact`)."""
        self.check_intact()
        try:
            with self._transaction() as c:
                c.execute("INSERT INTO runs (id, kind, status, config, metrics, created) "
                          "VALUES ('.writecheck', 'run', 'failed', randomblob(65536), '{}', 0)")
                c.execute("DELETE FROM runs WHERE id = '.writecheck'")
                for table in TABLES[1:]:  # a table that refuses depthlab's rows fails here too
                    width = len(_WRITE_COLUMNS[table])
                    c.execute(_insert(table), (".writecheck", *[None] * (width - 1)))
                    c.execute(f"DELETE FROM {table} WHERE run_id = '.writecheck'")
        except (sqlite3.DatabaseError, OSError) as e:
            raise StoreWriteError(f"results store {str(self.path)!r} is not writable: "
                                  f"{_reason(e, self.path)}") from None

    def check_intact(self, most: int | None = None) -> None:
        """Raise :class:`StoreWriteError` when SQLite's ``PRAGMA quick_check`` finds damaged
        pages in a store file of at most ``most`` bytes (default :data:`QUICK_CHECK_BYTES`;
        larger ones are not read through: O(file)). A store overwritten in its middle was
        written to by `run` and `sweep` (exit 0) while `export` and `report` refused it as
        malformed."""
        most = QUICK_CHECK_BYTES if most is None else most
        try:
            size = self.path.stat().st_size
        except OSError:
            return
        with suppress(OSError):
            size += _wal_path(self.path).stat().st_size
        if size > most:
            return
        try:
            rows = self._while_locked(
                lambda: self._conn.execute("PRAGMA quick_check(1)").fetchall())
            problem = None if rows == [("ok",)] else str(rows[0][0] if rows else rows)
        except sqlite3.DatabaseError as e:
            problem = str(e) or type(e).__name__
        if problem is not None:
            problem = " ".join(problem.split())  # "*** in database main ***\nPage 704: ..."
            raise StoreWriteError(f"results store {str(self.path)!r} is damaged ({problem}); "
                                  "nothing was written to it; accepted: an intact store (move "
                                  "this one away, or use another --out)")

    # -- plumbing ---------------------------------------------------------------------------
    @contextmanager
    def _recording(self, what: str) -> Iterator[sqlite3.Connection]:
        """A write transaction for the sweep bookkeeping ``what`` names: a storage failure is
        one :class:`StoreWriteError` line ("the points of sweep S could not be recorded in
        ..."); nothing of it is written and earlier runs are intact."""
        try:
            with self._transaction() as c:
                yield c
        except (sqlite3.DatabaseError, OSError) as e:
            if not _storage_error(e):
                raise
            raise StoreWriteError(f"{what} could not be recorded in {str(self.path)!r}: "
                                  f"{_reason(e, self.path)} (runs stored earlier are intact)"
                                  ) from None

    @contextmanager
    def _transaction(self, wait: bool = True) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on any exception); ``BEGIN`` waits
        for another process's lock as :meth:`_while_locked` says (``wait=False``: inside it)."""
        conn = self._conn
        if wait:
            self._while_locked(lambda: conn.execute("BEGIN IMMEDIATE"))
        else:
            conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # a failed COMMIT (disk full) leaves it open
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.DatabaseError:
                    pass
            raise

    @contextmanager
    def lock_wait(self, seconds: float) -> Iterator[None]:
        """Inside, another process's lock is waited for at most ``seconds`` (then
        :class:`StoreError`), not the store's ``timeout``: what an interrupted command still
        writes must not keep it from stopping."""
        old = self._timeout
        self._timeout = min(old, max(0.0, float(seconds)))
        self._conn.execute(f"PRAGMA busy_timeout={_busy_ms(self._timeout)}")
        try:
            yield
        finally:
            self._timeout = old
            self._conn.execute(f"PRAGMA busy_timeout={_busy_ms(old)}")

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """Reads inside see the store as of their first read: one read transaction, so runs
        that other processes commit meanwhile appear in none of the tables rather than in some
        (nested use is one snapshot)."""
        if self._conn.in_transaction:
            yield
            return
        self._conn.execute("BEGIN")
        try:
            yield
        finally:
            if self._conn.in_transaction:
                self._conn.execute("COMMIT")

    def interruptible(self) -> AbstractContextManager[None]:
        """Reads inside stop at once on a Ctrl-C or SIGTERM, even within one long SQLite
        statement, raised as KeyboardInterrupt (a report's, an export's reads)."""
        return _interruptible(self._conn)

    def close(self) -> None:
        """Close; a writer first copies its committed runs from the WAL into the database file
        (a passive checkpoint, which never waits), so ``depthlab.db`` alone holds them even when
        a reader (``depthlab runs``, a notebook) is still open and SQLite's own checkpoint at
        the last close does not happen."""
        if not self.readonly:
            try:
                self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.Error:
                pass  # what is committed stays in the WAL, read from there
        self._conn.close()
        if getattr(self, "_cleanup", None) is not None:  # a read-only store's temporary copy
            self._cleanup()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @_reading
    def integrity_check(self) -> str:
        """SQLite's ``PRAGMA integrity_check`` result (``"ok"`` when healthy)."""
        return str(self._conn.execute("PRAGMA integrity_check").fetchone()[0])

    # -- writing ------------------------------------------------------------------------------
    def add_run(self, record: RunRecord, *, replace: bool = True) -> None:
        """Write ``record`` (the runs row and all its tables) in one transaction, replacing
        any earlier run with the same id (``replace=False``: raise :class:`RunExistsError`
        instead). A failed write raises :class:`StoreWriteError` carrying ``record``; nothing
        of it is stored and earlier runs are intact."""
        try:
            self._add_run(record, replace)
        except StoreError as e:
            if type(e) is not StoreError:  # RunExistsError, StoreWriteError: as they are
                raise
            raise StoreWriteError(f"run {record.id} could not be written: {e} (runs stored "
                                  "earlier are intact)", record) from None  # a lock held on
        except (sqlite3.DatabaseError, OSError) as e:
            if not _storage_error(e):
                raise
            raise StoreWriteError(
                f"run {record.id} could not be written to {str(self.path)!r}: "
                f"{_reason(e, self.path)} (runs stored earlier are intact)", record) from None

    @_reading
    def describe(self, run_id: str) -> str | None:
        """A short description of the stored run ``run_id`` (kind, sweep, name, status), or
        None when there is none."""
        row = self._conn.execute("SELECT kind, sweep, name, status FROM runs WHERE id = ?",
                                 (run_id,)).fetchone()
        if row is None:
            return None
        kind, sweep, name, status = row
        text = f"{kind} {run_id}" + (f" of sweep {sweep}" if sweep else "")
        if name and len(name) > NAME_SHOWN:  # a 100,000-character name in a one-line error
            name = name[:NAME_SHOWN - 3] + "..."
        return text + (f" named {name!r}" if name else "") + f" ({status})"

    def _add_run(self, record: RunRecord, replace: bool) -> None:
        created = record.created if record.created is not None else time.time()
        rid = record.id
        steps = _rows(record.steps, _COLUMNS["steps"], rid)
        probes = _rows(record.probes, _COLUMNS["probes"], rid)
        hists = _rows(record.histograms, _COLUMNS["histograms"], rid,
                      optional=_ADDED_COLUMNS["histograms"])
        jac = _rows(record.jacobian, _COLUMNS["jacobian"], rid)
        epochs = [(rid, _int_or_none(m.get("epoch")), _int_or_none(m.get("step")), dumps(m))
                  for m in _records(record.epochs)]
        evals = [(rid, _int_or_none(m.get("step")), dumps(m)) for m in _records(record.evals)]
        with self._transaction() as c:
            if not replace and c.execute("SELECT 1 FROM runs WHERE id = ?",
                                         (rid,)).fetchone():
                raise RunExistsError(f"{self.describe(rid)} is already stored in "
                                     f"{str(self.path)!r}")
            for table in TABLES[1:]:
                c.execute(f"DELETE FROM {table} WHERE run_id = ?", (rid,))
            c.execute("DELETE FROM runs WHERE id = ?", (rid,))
            c.execute(
                "INSERT INTO runs (id, name, kind, sweep, status, config, metrics, divergence, "
                "error, created, seconds) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (rid, record.name, record.kind, record.sweep, record.status,
                 dumps(record.config), dumps(record.metrics),
                 None if record.divergence is None else dumps(record.divergence),
                 record.error, created, float(record.seconds)))
            # columns named: a store with more columns (a later version's) takes the rows too
            c.executemany(_insert("steps"), steps)
            c.executemany(_insert("epochs"), epochs)
            c.executemany(_insert("evals"), evals)
            c.executemany(_insert("probes"), probes)
            c.executemany(_insert("histograms"), hists)
            c.executemany(_insert("jacobian"), jac)
            if record.findings is not None:
                c.execute(_insert("findings"), (rid, dumps(record.findings)))
            if record.sweep and self._has_table("sweep_points"):
                c.execute(_ADD_MEMBER, (record.sweep, rid))

    def add_sweep_points(self, sweep: str, run_ids: Iterable[str]) -> None:
        """Record the stored runs ``run_ids`` as points of ``sweep`` too, in one transaction: a
        sweep skips the points it finds stored (run by an earlier sweep whose grid overlaps
        it, e.g. before its grid was extended), and :meth:`runs` with ``sweep=``, the report
        and :meth:`sweep_points` count them in. A run stays a point of every sweep that
        recorded it; its ``sweep`` column names the sweep that computed it."""
        rows = [(sweep, str(r)) for r in run_ids]
        if not rows:
            return
        with self._recording(f"the points of sweep {sweep}") as c:
            c.executemany(_ADD_MEMBER, rows)

    def set_sweep_size(self, sweep: str, points: int) -> None:
        """Record that ``sweep`` has ``points`` points to run (its grid, or the first
        ``--limit`` of it; the last sweep run with this id says), so that a report of a sweep
        still running can say how many of them are stored (:meth:`sweep_sizes`)."""
        try:  # a NumPy integer too (run_sweep's limit)
            n = -1 if isinstance(points, bool) else operator.index(points)
        except TypeError:
            n = -1
        if n < 0:
            raise ValueError(f"points = {points!r} is not accepted; accepted: an integer >= 0")
        with self._recording(f"the size of sweep {sweep}") as c:
            # created: when the sweep was first run (wall clock, like a run's)
            c.execute("INSERT INTO sweeps (id, points, created) VALUES (?, ?, ?) ON "
                      "CONFLICT(id) DO UPDATE SET points = excluded.points",
                      (str(sweep), min(n, 2**63 - 1), time.time()))  # SQLite's

    def set_sweep_grid(self, sweep: str, grid: dict[str, list]) -> None:
        """Record the order of ``sweep``'s grid: ``{dotted key: [values, as the validated
        configs hold them, in the grid's order]}`` (keys in the grid's order), so that a report
        draws its points in that order whatever order they finished in (Dask, ``--jobs N``:
        ``["sgd", "adam"]`` drawn adam first when an adam point was stored first)."""
        text = json.dumps({str(k): list(v) for k, v in grid.items()}, default=str,
                          allow_nan=True)
        with self._recording(f"the grid of sweep {sweep}") as c:
            c.execute("INSERT INTO sweep_grids (id, grid) VALUES (?, ?) ON CONFLICT(id) DO "
                      "UPDATE SET grid = excluded.grid", (str(sweep), text))

    @_reading
    def sweep_grids(self) -> dict[str, dict[str, list]]:
        """``{sweep id: {dotted key: [values in the grid's order]}}`` as
        :meth:`set_sweep_grid` recorded them; a sweep stored by an earlier depthlab has no
        entry (its points are drawn in the order they were stored)."""
        if not self._has_table("sweep_grids"):  # a store written before it, read-only
            return {}
        out: dict[str, dict[str, list]] = {}
        for k, text in self._conn.execute("SELECT id, grid FROM sweep_grids"):
            try:
                grid = json.loads(text)
            except (TypeError, ValueError):  # damaged: no order known
                continue
            if isinstance(grid, dict):
                out[str(k)] = {str(key): v for key, v in grid.items() if isinstance(v, list)}
        return out

    @_reading
    def sweep_sizes(self) -> dict[str, int]:
        """``{sweep id: points}`` as :meth:`set_sweep_size` recorded them; a sweep stored by an
        earlier depthlab (or a run kept without one) has no entry."""
        if not self._has_table("sweeps"):  # a store written before it, read-only
            return {}
        return {str(k): int(v) for k, v in self._conn.execute("SELECT id, points FROM sweeps")
                if isinstance(v, int)}

    def _has_table(self, name: str) -> bool:
        """Whether the store has table ``name`` (a store written before it existed, opened
        read-only, has not)."""
        return self._conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name "
                                  "= ?", (name,)).fetchone() is not None

    # -- reading ------------------------------------------------------------------------------
    @_reading
    def sweep_points(self) -> dict[str, list[str]]:
        """``{sweep id: [run ids]}``: the stored runs of each sweep, those it computed and
        those it found stored (see :meth:`add_sweep_points`), in the order recorded; runs
        whose ``sweep`` column names a sweep are its points even without a record (stores
        written before these records existed)."""
        out: dict[str, list[str]] = {}
        for sweep, rid in self._conn.execute(
                "SELECT sweep, id FROM runs WHERE sweep IS NOT NULL AND sweep != '' "
                "ORDER BY created, id"):
            out.setdefault(sweep, []).append(rid)
        if self._has_table("sweep_points"):
            known = {s: set(ids) for s, ids in out.items()}
            for sweep, rid in self._conn.execute(
                    "SELECT p.sweep, p.run_id FROM sweep_points p JOIN runs r ON r.id = "
                    "p.run_id ORDER BY r.created, r.id"):
                if rid not in known.setdefault(sweep, set()):
                    known[sweep].add(rid)
                    out.setdefault(sweep, []).append(rid)
        return out

    @_reading
    def sweep_ids(self) -> list[str]:
        """The ids of the store's sweeps: those with stored points (:meth:`sweep_points`, in
        their order), then those recorded when they started (:meth:`set_sweep_size`) with no
        point stored yet (a sweep interrupted or killed before its first point finished)."""
        known = list(self.sweep_points())
        if self._has_table("sweeps"):
            seen = set(known)
            known += [str(r[0]) for r in self._conn.execute(
                "SELECT id FROM sweeps ORDER BY created") if str(r[0]) not in seen]
        return known

    @_reading
    def has_run(self, run_id: str, statuses: Iterable[str] | None = None) -> bool:
        """Whether a run with this id is stored (with one of ``statuses`` if given: names of
        :data:`STATUSES`; a str, which was read letter by letter, and an unknown name, which
        matched nothing, are refused: both answered False for a finished run)."""
        if statuses is not None:
            if isinstance(statuses, str | bytes):
                raise TypeError(f"statuses={statuses!r:.40} is not accepted; accepted: a list "
                                f"of run statuses, e.g. [{statuses!r:.40}]")
            statuses = tuple(statuses)
            unknown = [st for st in statuses if st not in STATUSES]
            if unknown:
                raise ValueError(f"statuses: {unknown[0]!r:.40} is not a run status; "
                                 f"accepted: {', '.join(STATUSES)}")
        row = self._conn.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            return False
        return statuses is None or row[0] in statuses

    @_reading
    def statuses(self) -> dict[str, str]:
        """``{run id: status}`` for every stored run."""
        return dict(self._conn.execute("SELECT id, status FROM runs").fetchall())

    @_reading
    def runs(self, kind: str | None = None, sweep: str | None = None,
             status: str | None = None) -> pd.DataFrame:
        """One row per run (oldest first): id, name, kind, sweep, status, created, seconds,
        ``config`` and ``metrics`` as dicts, ``divergence`` (dict or None), ``error``, and
        one column per final metric (``train_loss``, ``val_acc``, ``test_acc``, ...).
        ``kind``, ``sweep`` and ``status`` (one of :data:`STATUSES`, as ``depthlab runs
        --status``) select runs; None: all."""
        from ..validators import did_you_mean

        for name, value, accepted in (("kind", kind, KINDS), ("status", status, STATUSES)):
            if value is not None and value not in accepted:  # a typo would select nothing
                raise ValueError(f"{name} = {value!r} is not a run {name}; accepted: "
                                 f"{', '.join(accepted)} (or None for every run)"
                                 f"{did_you_mean(str(value), accepted)}")
        q = ("SELECT id, name, kind, sweep, status, created, seconds, config, metrics, "
             "divergence, error FROM runs")
        cond, args = [], []
        for column, value in (("kind", kind), ("status", status)):
            if value is not None:
                cond.append(f"{column} = ?")
                args.append(value)
        if sweep is not None:  # the runs it computed and those it found stored
            sweep = self._sweep_named(sweep)
            if self._has_table("sweep_points"):
                cond.append("(sweep = ? OR id IN (SELECT run_id FROM sweep_points WHERE "
                            "sweep = ?))")
                args += [sweep, sweep]
            else:
                cond.append("sweep = ?")
                args.append(sweep)
        if cond:
            q += " WHERE " + " AND ".join(cond)
        q += " ORDER BY created, id"
        rows = self._conn.execute(q, args).fetchall()
        cols = ["id", "name", "kind", "sweep", "status", "created", "seconds", "config",
                "metrics", "divergence", "error"]
        columns: dict[str, list] = {c: [r[i] for r in rows] for i, c in enumerate(cols)}
        for c in ("config", "metrics", "divergence"):
            columns[c] = [self._object(c, v, rid) for v, rid in zip(columns[c], columns["id"])]
        columns["metrics"] = [m or {} for m in columns["metrics"]]
        for c in ("created", "seconds"):
            columns[c] = [self._number(c, v, rid) for v, rid in zip(columns[c], columns["id"])]
        df = pd.DataFrame({c: pd.Series(v, dtype=object if c not in ("created", "seconds")
                                        else "float64")
                           for c, v in columns.items()})
        keys = list(METRIC_KEYS)
        for m in df["metrics"]:
            keys += [k for k in m if k not in keys and not isinstance(m[k], dict | list)]
        # a metric named like a column of the row (seconds, status, name, ...) does not replace
        # it: `seconds` was NaN for every run whose metrics lack it (a failed point) and a
        # record's metric "status" turned each run's status into a number
        for k in (k for k in keys if k not in cols):
            df[k] = pd.array([as_number(m.get(k)) for m in df["metrics"]], dtype="float64") \
                if len(df) else pd.Series([], dtype="float64")
        return df

    def _sweep_named(self, sweep: str) -> str:
        """The id of the sweep ``sweep`` names: its id, or the start of exactly one sweep's id
        (as ``depthlab runs --sweep`` reads it); a ValueError naming the store's sweeps
        otherwise (was: an empty table, read as a sweep that stored nothing)."""
        known = self.sweep_ids()
        if sweep in known:
            return sweep
        given = str(sweep).strip().lower()
        # the hex part alone, as its points' names show it, names it too ('3477' for sw-3477..)
        matches = [k for k in known if given and (str(k).lower().startswith(given) or str(
            k).lower().removeprefix("sw-").startswith(given))]
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise ValueError(f"sweep = {sweep!r} is the start of {len(matches)} sweeps of "
                             f"{str(self.path)!r} ({', '.join(map(str, matches[:10]))}"
                             f"{', ...' if len(matches) > 10 else ''}); give more of its id")
        shown = ", ".join(map(str, known[:10])) + (f" (and {len(known) - 10} more)"
                                                   if len(known) > 10 else "")
        raise ValueError(f"sweep = {sweep!r} is not a sweep of {str(self.path)!r}; its "
                         f"sweeps: {shown or 'none'}")

    def _no_run(self, run_id: str) -> KeyError:
        """The error of a per-run table read for an id that names no stored run (was: an empty
        table, read as a run that recorded nothing); the run it is the start of, if one."""
        starts = [r[0] for r in self._conn.execute(
            "SELECT id FROM runs WHERE substr(id, 1, ?) = ? LIMIT 2",
            (len(str(run_id)), str(run_id)))] if str(run_id) else []
        hint = (f"; did you mean {starts[0]!r} (the run id it starts)?" if len(starts) == 1
                else "")
        return KeyError(f"no run with id {run_id!r} in {str(self.path)!r}{hint}")

    def _check_run(self, run_id: str) -> None:
        """Raise :meth:`_no_run`'s KeyError unless a run ``run_id`` is stored."""
        if self._conn.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone() is None:
            raise self._no_run(run_id)

    @_reading
    def run(self, run_id: str) -> dict:
        """The runs row of ``run_id`` as a dict (config/metrics/divergence parsed)."""
        row = self._conn.execute(
            "SELECT id, name, kind, sweep, status, config, metrics, divergence, error, "
            "created, seconds FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise KeyError(f"no run with id {run_id!r} in {self.path}")
        keys = ("id", "name", "kind", "sweep", "status", "config", "metrics", "divergence",
                "error", "created", "seconds")
        out = dict(zip(keys, row))
        for c in ("config", "metrics", "divergence"):
            out[c] = self._object(c, out[c], run_id)
        for c in ("created", "seconds"):
            out[c] = self._number(c, out[c], run_id)
        return out

    def _number(self, column: str, value: Any, run_id: str) -> float | None:
        """A number column of a runs row (None stays None); a StoreError naming the run when
        it holds text (a store edited outside depthlab: ``seconds = 'abc'`` was "ValueError:
        could not convert string to float", an internal error of `depthlab runs`)."""
        if value is None or isinstance(value, int | float):
            return value
        raise StoreError(f"results store {str(self.path)!r} cannot be read: run {run_id!r} has "
                         f"a {column} that is not a number ({str(value)[:40]!r}); the store was "
                         "changed outside depthlab or is damaged")

    def _object(self, column: str, text: str | None, run_id: str) -> dict | None:
        """A JSON-object column of a runs row (None stays None); a StoreError naming the run
        when it holds something else (a store edited outside depthlab)."""
        try:
            value = None if text is None else json.loads(text)
        except json.JSONDecodeError as e:  # was "a stored value is not valid JSON": which?
            raise StoreError(f"results store {str(self.path)!r} cannot be read: run {run_id!r} "
                             f"has a {column} that is not valid JSON ({e.msg} at character "
                             f"{e.pos}: {str(text)[:40]!r}); the store was changed outside "
                             "depthlab or is damaged") from None
        if value is not None and not isinstance(value, dict):
            raise StoreError(f"results store {str(self.path)!r} cannot be read: run {run_id!r} "
                             f"has a {column} that is not a JSON object ({str(text)[:40]!r}); "
                             "the store was changed outside depthlab or is damaged")
        return value

    @_reading
    def _frame(self, table: str, run_id: str, columns: tuple[str, ...],
               order: str) -> pd.DataFrame:
        added = _ADDED_COLUMNS.get(table, ())
        have = ({r[1] for r in self._conn.execute(f"PRAGMA table_info({table})")} if added
                else set())
        # a column added later that this store lacks (an older store opened read-only): NULL
        select = [c if c not in added or c in have else f"NULL AS {c}" for c in columns]
        cursor = self._conn.execute(
            f"SELECT {', '.join(select)} FROM {table} WHERE run_id = ? ORDER BY {order}",
            (run_id,))
        # read ROW_CHUNK rows at a time, each chunk's columns made arrays at once (the rows of
        # a long run were all held as tuples, then a frame built from them)
        chunks: list[list[tuple[str, Any]]] = [[] for _ in columns]
        n = 0
        with _gc_paused():  # each chunk's tuples set off collections of the whole heap
            while rows := cursor.fetchmany(ROW_CHUNK):
                n += len(rows)
                for i, values in enumerate(zip(*rows)):
                    chunks[i].append(_read_chunk(values, columns[i] in _TEXT_COLUMNS))
        if not n:
            self._check_run(run_id)
            return pd.DataFrame([], columns=list(columns))
        df = pd.DataFrame({c: _read_column(chunks[i], n) for i, c in enumerate(columns)})
        for c in df.columns:  # numbers (None: NaN) in a column of numbers, else damage
            if c in _TEXT_COLUMNS or pd.api.types.is_numeric_dtype(df[c].dtype):
                continue
            bad = next((v for v in df[c] if v is not None and (
                isinstance(v, bool) or not isinstance(v, int | float))), None)
            if bad is not None:  # was a TypeError/ValueError of the report (internal error)
                raise StoreError(f"results store {str(self.path)!r} cannot be read: run "
                                 f"{run_id!r} has a {table}.{c} that is not a number "
                                 f"({str(bad)[:40]!r}); the store was changed outside depthlab "
                                 "or is damaged")
        return df

    def steps(self, run_id: str) -> pd.DataFrame:
        """Per-step training loss: columns step, loss."""
        return self._frame("steps", run_id, _COLUMNS["steps"], "step")

    def epochs(self, run_id: str) -> pd.DataFrame:
        """Per-epoch metrics, one column per metric (epoch, step, train_loss, val_acc, ...)."""
        return self._json_frame("epochs", run_id, "epoch")

    def evals(self, run_id: str) -> pd.DataFrame:
        """Periodic evaluations (``train.eval_every``): step, epoch, val_loss, val_acc."""
        return self._json_frame("evals", run_id, "step")

    @_reading
    def _json_frame(self, table: str, run_id: str, order: str) -> pd.DataFrame:
        rows = self._conn.execute(
            f"SELECT metrics FROM {table} WHERE run_id = ? ORDER BY {order}, rowid",
            (run_id,)).fetchall()
        if not rows:
            self._check_run(run_id)
        recs = [json.loads(r[0]) for r in rows]
        df = pd.DataFrame(recs)
        for c in df.columns:  # JSON null (a NaN metric) -> NaN, keep numeric columns float
            if df[c].dtype == object and all(v is None or isinstance(v, int | float)
                                             for v in df[c]):
                df[c] = df[c].astype("float64")
        return df

    def probes(self, run_id: str) -> pd.DataFrame:
        """Probe measurements: columns step, layer, quantity, value."""
        return self._frame("probes", run_id, _COLUMNS["probes"], "step, layer, quantity")

    def histograms(self, run_id: str) -> pd.DataFrame:
        """Histograms: columns step, layer, kind, bin_left, bin_right, count (finite entries),
        n_neginf, n_posinf, n_nan (the histogram's ``-inf``, ``+inf`` and NaN entries, in no
        bin; NaN where unknown: a run stored before depthlab kept them)."""
        return self._frame("histograms", run_id, _COLUMNS["histograms"],
                           "step, layer, kind, bin_left")

    def jacobian(self, run_id: str) -> pd.DataFrame:
        """Input-output Jacobian singular values: columns step, example, idx, value."""
        return self._frame("jacobian", run_id, _COLUMNS["jacobian"], "step, example, idx")

    @_reading
    def findings(self, run_id: str) -> dict | None:
        """The doctor's ``Diagnosis.to_dict()`` stored with ``run_id``, or None."""
        row = self._conn.execute("SELECT payload FROM findings WHERE run_id = ? LIMIT 1",
                                 (run_id,)).fetchone()
        return None if row is None else json.loads(row[0])

    @_reading
    def table(self, name: str) -> pd.DataFrame:
        """A whole table as stored (JSON columns as text): the frame of all its rows, read
        ``ROW_CHUNK`` rows at a time, each chunk's columns made arrays at once (as
        :meth:`probes` reads; every row was held as a tuple, then the frame built from them:
        a 1M-row probe table took ~3x the memory)."""
        if name not in EXPORTED:
            raise ValueError(f"unknown table {name!r}; expected one of {EXPORTED}")
        if name == "sweep_points" and not self._has_table(name):  # an older store, read-only
            return pd.DataFrame(columns=list(_TABLE_COLUMNS[name]))
        text = {r[1] for r in self._conn.execute(f"PRAGMA table_info({name})")
                if str(r[2]).upper() == "TEXT"}
        cur = self._conn.execute(f"SELECT * FROM {name}")
        cols = [d[0] for d in cur.description]
        chunks: list[list[tuple[str, Any]]] = [[] for _ in cols]
        n = 0
        with _gc_paused():  # each chunk's tuples set off collections of the whole heap
            while rows := cur.fetchmany(ROW_CHUNK):
                n += len(rows)
                for i, values in enumerate(zip(*rows, strict=True)):
                    chunks[i].append(_read_chunk(values, cols[i] in text))
        missing = self._missing_columns(name, cols)
        if not n:
            return pd.DataFrame([], columns=cols + missing)
        frame = pd.DataFrame({c: _read_column(chunks[i], n) for i, c in enumerate(cols)})
        for c in missing:
            frame[c] = np.full(n, np.nan)
        return frame

    @staticmethod
    def _missing_columns(name: str, cols: list[str]) -> list[str]:
        """The columns added to table ``name`` since an older store (read-only) was written
        that it lacks: :meth:`table` and exports give them as NaN ("unknown"), as the per-run
        readers do, so every store's export has the same columns (they were left out)."""
        return [c for c in _ADDED_COLUMNS.get(name, ()) if c not in cols]

    def _column_kinds(self, name: str, cols: list[str]) -> list[str]:
        """The dtype :meth:`table` gives each column of table ``name``, from the SQLite types
        of all its values (one scan): ``"int64"`` (integers only), ``"float64"`` (numbers with a
        real or a NULL among them), ``"text"`` (text, maybe NULLs: an object column of strings),
        else ``"object"`` (text beside numbers, blobs, or NULLs only)."""
        flags = ", ".join(f"max(typeof({_sql_name(c)}) = '{t}')" for c in cols
                          for t in ("null", "integer", "real", "text", "blob"))
        row = self._conn.execute(f"SELECT {flags} FROM {name}").fetchone()
        kinds = []
        for i in range(len(cols)):
            null, integer, real, text, blob = (bool(v) for v in row[5 * i:5 * i + 5])
            if text and not (integer or real or blob):
                kinds.append("text")
            elif text or blob or not (integer or real):
                kinds.append("object")
            elif integer and not (real or null):
                kinds.append("int64")
            else:
                kinds.append("float64")
        return kinds

    def _write_table(self, name: str, fh: Any, fmt: str) -> None:
        """Table ``name`` as :meth:`table` reads it, written to the open file ``fh`` as CSV or
        Parquet ``ROW_CHUNK`` rows at a time, each column of the dtype that the whole table gives
        it (so the file is the one the whole frame writes; export of a 3M-row probe table held
        every row as a tuple and the frame built from them)."""
        if name == "sweep_points" and not self._has_table(name):  # an older store, read-only
            return self._write_frame(self.table(name), fh, fmt)
        cur = self._conn.execute(f"SELECT * FROM {name}")
        cols = [d[0] for d in cur.description]
        kinds = self._column_kinds(name, cols)
        missing = self._missing_columns(name, cols)
        parquet = fmt == "parquet"
        if parquet and "object" in kinds:  # Arrow's type of such a column: from all of it
            return self._write_frame(self.table(name), fh, fmt)
        schema = None
        if parquet:
            import pyarrow as pa
            import pyarrow.parquet as pq

            text = pa.Schema.from_pandas(pd.DataFrame([("a",)], columns=["t"]),
                                         preserve_index=False).field("t").type  # as table()'s
            types = {"int64": pa.int64(), "float64": pa.float64(), "text": text}
            schema = pa.schema([(c, types[k]) for c, k in zip(cols, kinds)]
                               + [(c, pa.float64()) for c in missing])
        writer = None
        with _gc_paused():  # each chunk's tuples set off collections of the whole heap
            while rows := cur.fetchmany(ROW_CHUNK):
                df = pd.DataFrame({c: pd.Series(values, dtype=object) if kind in (
                                   "text", "object") else np.array(values, dtype=kind)
                                   for c, kind, values in zip(cols, kinds, zip(*rows))})
                for c in missing:
                    df[c] = np.full(len(rows), np.nan)
                if not parquet:
                    df.to_csv(fh, index=False, header=writer is None)
                    writer = True
                    continue
                table = pa.Table.from_pandas(df, schema=schema, preserve_index=False)
                if writer is None:
                    writer = pq.ParquetWriter(fh, table.schema)
                writer.write_table(table)
        if writer is None:  # no rows: the header (or schema) of an empty table
            return self._write_frame(pd.DataFrame([], columns=cols + missing), fh, fmt)
        if parquet:
            writer.close()
        return None

    @staticmethod
    def _write_frame(df: pd.DataFrame, fh: Any, fmt: str) -> None:
        (df.to_csv if fmt == "csv" else df.to_parquet)(fh, index=False)

    # -- export -------------------------------------------------------------------------------
    @_reading
    def export(self, out_path: str | os.PathLike, fmt: str = "csv", *,
               on_table: Callable[[str], object] | None = None) -> list[Path]:
        """Write every table to ``out_path/<table>.csv`` (or ``.parquet``); the runs table also
        gets its final metrics as columns. Every file is written to a temporary name and only
        then are they all renamed, so an interrupted export never leaves a half-written file,
        nor new tables beside an earlier export's (:func:`depthlab.atomic.atomic_write_all`).
        :data:`EXPORT_MARKER` is written with them, naming the files exports wrote there.
        ``on_table(file_name)`` is called as each table's file starts (progress)."""
        if on_table is not None and not callable(on_table):
            raise TypeError(f"on_table = {on_table!r:.60} has the wrong type; accepted: a "
                            "function of the file name, or None")
        if fmt not in ("csv", "parquet"):
            raise ValueError(f"unknown export format {fmt!r}; expected 'csv' or 'parquet'")
        if not isinstance(out_path, str | os.PathLike):  # (was Path()'s raw TypeError)
            raise TypeError(f"export folder {out_path!r:.60} has the wrong type; accepted: a "
                            "folder path (str or os.PathLike)")
        if not str(os.fspath(out_path)).strip():  # Path("") is '.': the tables were written
            raise ValueError(f"export folder {os.fspath(out_path)!r} is an empty path; "
                             "accepted: a folder path ('.' for the current folder)")
        if fmt == "parquet":
            try:
                import pyarrow  # noqa: F401
            except ImportError:
                raise StoreError("parquet export needs pyarrow (pip install pyarrow)") from None
        out = expand_home(out_path)  # "~/exports": the home folder, as Store("~/runs")
        # the folders this export creates: removed again (when still empty) if it fails, so a
        # full disk or a Ctrl-C leaves no empty export folder behind
        created = [p for p in (out, *out.parents) if not p.exists()]
        blocked = in_the_way(out)  # mkdir's raw "[Errno 17] File exists" otherwise
        if blocked:
            raise StoreError(f"cannot create folder {str(out)!r}: {blocked}")  # as the CLI says
        out.mkdir(parents=True, exist_ok=True)
        try:
            with self.snapshot(), _interruptible(self._conn):  # every table as of one moment,
                # while a sweep goes on writing; `on_table` only when given, so an override
                # of `_export(self, out, fmt)` (a test's, a subclass's) is still called alike
                return (self._export(out, fmt) if on_table is None
                        else self._export(out, fmt, on_table=on_table))
        except BaseException:
            for folder in created:  # deepest first
                try:
                    folder.rmdir()  # only an empty folder
                except OSError:
                    break
            raise

    def _export(self, out: Path, fmt: str,
                on_table: Callable[[str], object] | None = None) -> list[Path]:
        def tables() -> Iterator[tuple[Path, Callable[[Any], object]]]:
            for name in EXPORTED:
                if name != "runs":  # ROW_CHUNK rows in memory at a time (a long probe table)
                    yield out / f"{name}.{fmt}", lambda fh, n=name: self._write_table(n, fh, fmt)
                    continue
                df = self.table(name)  # one row per run, with its final metrics as columns
                flat = self.runs()
                for k in METRIC_KEYS + tuple(c for c in flat.columns if c not in df.columns
                                             and c not in METRIC_KEYS):
                    if k in flat.columns and k not in df.columns:
                        df[k] = flat.set_index("id")[k].reindex(df["id"]).to_numpy()
                for k in COUNT_KEYS:  # whole numbers, blank/null where a run has none (they
                    # were floats for a failed run's NaN: "15.0" in runs.csv, float64 Parquet)
                    v = pd.to_numeric(df[k], errors="coerce") if k in df else None
                    if v is not None and bool((((v % 1 == 0) & (v.abs() < 2 ** 53))
                                               | v.isna()).all()):
                        df[k] = v.astype("Int64")
                writer = df.to_csv if fmt == "csv" else df.to_parquet
                yield out / f"{name}.{fmt}", lambda fh, w=writer: w(fh, index=False)

        def with_marker() -> Iterator[tuple[Path, Callable[[Any], object]]]:
            names = exported_files(out)
            for path, write in tables():
                names.add(path.name)
                if on_table is not None:
                    on_table(path.name)
                yield path, write
            text = "\n".join([_MARKER_HEAD, *sorted(names)]) + "\n"
            yield out / EXPORT_MARKER, lambda fh: fh.write(text.encode("utf-8"))

        # every table written first, then all renamed: an export interrupted after a few
        # tables left them new beside the previous export's others (runs.csv listing 34 runs,
        # histograms.csv still of 10)
        return [p for p in atomic_write_all(with_marker()) if p.name != EXPORT_MARKER]


def _sql_name(name: str) -> str:
    """``name`` quoted as an SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


_ADD_MEMBER = "INSERT OR IGNORE INTO sweep_points (sweep, run_id) VALUES (?, ?)"


def _insert(table: str) -> str:
    """``INSERT INTO table (its columns) VALUES (?, ...)`` with depthlab's columns named."""
    cols = _WRITE_COLUMNS[table]
    return f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"


def _int_or_none(v: Any) -> int | None:
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return int(f) if math.isfinite(f) else None


def _records(df: Any) -> list[dict]:
    if df is None:
        return []
    if isinstance(df, list):
        return [dict(r) for r in df]
    if len(df) == 0:
        return []
    return [jsonable(r) for r in df.to_dict(orient="records")]


def _py(v: Any) -> Any:
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


ROW_CHUNK = 65536
"""Rows of a table converted for SQLite at a time while a run is written (the rows of a long
run are never all held as Python tuples at once)."""


def _column(values: pd.Series) -> list:
    """One column's values as SQLite takes them, the values :func:`_py` gives, converted per
    column: a NumPy int/bool column by ``tolist``, a float one with NaN -> None, a column of
    strings as it is; any other column value by value."""
    dtype = values.dtype
    if isinstance(dtype, np.dtype) and dtype.kind in "biu":
        return values.to_numpy().tolist()
    if isinstance(dtype, np.dtype) and dtype.kind == "f":
        array = values.to_numpy()
        nan = np.isnan(array)
        if not nan.any():
            return array.tolist()
        out = array.astype(object)  # Python floats, as .item() gives
        out[nan] = None
        return out.tolist()
    items = values.tolist()
    if pd.api.types.infer_dtype(items, skipna=False) == "string":  # str only, no None/NaN
        return items
    return [_py(v) for v in items]


def _rows(df: Any, columns: tuple[str, ...], run_id: str, optional: tuple[str, ...] = ()
          ) -> Iterable[tuple]:
    """The rows of ``df`` for a table of ``columns`` (``run_id`` first), made
    :data:`ROW_CHUNK` rows at a time as they are read (``executemany`` inside the run's
    transaction); a missing column is refused at once, except one of ``optional`` (NULL:
    a frame made before the column existed)."""
    if df is None or len(df) == 0:
        return []
    missing = [c for c in columns if c not in df.columns and c not in optional]
    if missing:
        raise ValueError(f"frame for the store lacks columns {missing}; has {list(df.columns)}")
    series = [df[c] if c in df.columns else pd.Series(np.full(len(df), np.nan))  # NULLs
              for c in columns]
    return _row_chunks(series, len(df), run_id)


def _row_chunks(series: list[pd.Series], n: int, run_id: str) -> Iterator[tuple]:
    for start in range(0, n, ROW_CHUNK):
        parts = [_column(s.iloc[start:start + ROW_CHUNK]) for s in series]
        yield from zip(repeat(run_id), *parts)


_NUMBERS = frozenset({"integer", "floating", "mixed-integer-float"})


INTERRUPT_CHECK_OPS = 20_000
"""SQLite virtual-machine steps between two looks for a Ctrl-C during a long statement (a few
milliseconds)."""


def _no_abort() -> int:
    """SQLite's progress callback: Python code, so a signal that arrived meanwhile has its
    handler run here; the KeyboardInterrupt it raises aborts the statement."""
    return 0


def _stopped_by_interrupt(e: BaseException) -> bool:
    """Whether ``e`` is, or was raised because of, a statement aborted by the progress
    callback (SQLite's ``OperationalError('interrupted')``, also as the cause or context of
    another error a caller raised while handling it)."""
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, sqlite3.OperationalError) and str(cur) == "interrupted":
            return True
        cur = cur.__cause__ or cur.__context__
    return False


@contextmanager
def _interruptible(conn: sqlite3.Connection) -> Iterator[None]:
    """Statements of ``conn`` that a Ctrl-C or SIGTERM can stop while they run: one SQLite call
    is uninterruptible from Python (an export's scan of a 490,000-row histogram table took
    10 s to answer a Ctrl-C; a report went on reading a long table). A signal's exception
    raised in the progress callback is dropped by ``sqlite3`` and the statement fails as
    "interrupted": raised here as KeyboardInterrupt (the CLI words it after the signal it saw:
    SIGTERM's 143), not as a store that "cannot be read"."""
    conn.set_progress_handler(_no_abort, INTERRUPT_CHECK_OPS)
    try:
        yield
    except Exception as e:
        if not _stopped_by_interrupt(e):
            raise
        raise KeyboardInterrupt("a store statement was interrupted") from e
    finally:
        try:
            conn.set_progress_handler(None, 0)
        except sqlite3.ProgrammingError:  # closed meanwhile
            pass


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off inside (on again after, if it was on): reading
    ROW_CHUNK rows makes as many tuples, which set off collections that scan every object of
    the process (reading 0.9M rows: 1.1 s of 3 s spent on them)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _read_chunk(values: tuple, text: bool) -> tuple[str, Any]:
    """One column of a chunk of rows read back: ``("int", int64 array)`` or ``("float",
    float64 array, None as NaN)`` for numbers, ``("none", count)`` for NULLs only, ``("str",
    Series)`` for text without NULLs, else ``("obj", list)`` (text with NULLs, or a number
    column holding text: a damaged store)."""
    if not text:
        kind = pd.api.types.infer_dtype(values, skipna=False)
        if kind == "integer":
            return "int", np.array(values, dtype=np.int64)
        if kind in _NUMBERS:
            return "float", np.array(values, dtype=np.float64)
        kind = pd.api.types.infer_dtype(values, skipna=True)  # with NULLs (SQLite has no NaN)
        if kind == "empty":
            return "none", len(values)
        if kind in _NUMBERS:
            return "float", np.array(values, dtype=np.float64)
    elif pd.api.types.infer_dtype(values, skipna=False) == "string":  # no NULL among them
        return "str", pd.Series(values)  # one string column, not a Python object a row
    return "obj", list(values)


def _read_column(chunks: list[tuple[str, Any]], n: int) -> pd.Series:
    """A column of ``n`` values read back from its chunks (:func:`_read_chunk`), of the dtype
    a frame built from all the rows at once infers: int64 for integers only, float64 (NULL:
    NaN) for numbers with NULLs or floats, otherwise inferred from the values as read."""
    kinds = {kind for kind, _ in chunks}
    if kinds == {"str"}:
        return pd.concat([a for _, a in chunks], ignore_index=True)
    if kinds == {"int"}:
        return pd.Series(np.concatenate([a for _, a in chunks]))
    if kinds <= {"int", "float", "none"} and kinds != {"none"}:
        return pd.Series(np.concatenate([
            np.full(a, np.nan) if kind == "none" else a.astype(np.float64, copy=False)
            for kind, a in chunks]))
    values: list = []
    for kind, a in chunks:  # as read: NULL is None again (a float chunk's NaN was a NULL)
        if kind == "none":
            values += [None] * a
        elif kind == "float":
            values += [None if v != v else v for v in a.tolist()]
        else:
            values += a if kind == "obj" else a.tolist()
    return pd.Series(values)


def load_runs(path_or_dir: str | os.PathLike) -> pd.DataFrame:
    """All runs of the store at ``path_or_dir`` as a DataFrame (see :meth:`Store.runs`). The
    store is only read (it was opened for writing: a store on a read-only disk failed with
    "unable to open database file", where ``depthlab runs`` lists it)."""
    with Store(path_or_dir, create=False, readonly=True) as s:
        return s.runs()


def runs_as_dicts(store: Store, *, sweep: str | None = None) -> list[dict[str, Any]]:
    """One JSON-ready dict per run of ``store`` (of sweep ``sweep`` only: the points it
    computed and those it found stored): the runs row plus the final metrics both under
    ``metrics`` and flattened at top level (missing metrics as None)."""
    out = []
    for row in store.runs(sweep=sweep).itertuples(index=False):
        d = {"id": row.id, "name": row.name, "kind": row.kind, "sweep": row.sweep,
             "status": row.status, "created": row.created, "seconds": row.seconds,
             "config": row.config, "metrics": row.metrics, "divergence": row.divergence,
             "error": row.error}
        for k, v in (row.metrics or {}).items():
            d.setdefault(k, v)
        for k in METRIC_KEYS:
            d.setdefault(k, None)
        out.append(jsonable(d))
    return out
