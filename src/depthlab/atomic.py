"""Atomic file writes: a temporary file in the target's folder, then ``os.replace``.

A crash or an exception mid-write never leaves a half-written file and never destroys the
previous version; the temporary file is removed on failure. A process killed mid-write
(SIGKILL) cannot remove its temporary file, so each temporary is named
``.<target>.depthlab-<host>-<pid>-<random>.tmp`` and the next write into the same folder removes
the temporaries of this host whose writer process is gone, and those of other hosts (a shared
file system) older than a day (:func:`remove_stale_temporaries`).

A write that fails for lack of space or permission raises :class:`AtomicWriteError` (an
``OSError``) whose message is one line naming the file and the reason.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import socket
import stat
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO

_TMP_TAG = "depthlab"
_TMP_RE = re.compile(r"^\..+\." + _TMP_TAG + r"-([A-Za-z0-9_]+)-(\d+)-[^.]+\.tmp$")
_FOREIGN_AGE = 86400.0  # seconds after which another host's temporary counts as stale


def expand_home(path: str | os.PathLike) -> Path:
    """``path`` as a :class:`~pathlib.Path` with a leading ``~`` or ``~user`` read as the shell
    reads it (``os.path.expanduser``): the home folder where one is known, else the name as
    written (``~nobody/runs`` is a folder named ``~nobody``, as bash leaves it).
    ``Path.expanduser`` raised ``RuntimeError: Could not determine home directory`` there,
    which the CLI reported as an internal error."""
    return Path(os.path.expanduser(os.fspath(path)))


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname())[:40] or "host"


class AtomicWriteError(OSError):
    """A file could not be written (disk full, permission, ...); the old version is intact.
    ``str(err)`` is the one-line message (no ``[Errno N]`` prefix); ``filename`` is the file
    (the command line told a full disk under an export's table as "cannot write the output to
    stdout", the case of an OSError without a file name)."""

    def __str__(self) -> str:
        return str(self.strerror)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete this module's temporaries in ``folder`` left by killed writers: this host's whose
    process no longer exists, other hosts' older than a day. Other files, and temporaries of
    live writers, are kept. Returns the removed paths."""
    removed: list[Path] = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    host = _host()
    for name in names:
        m = _TMP_RE.match(name)
        if m is None:
            continue
        p = Path(folder) / name
        with contextlib.suppress(OSError):
            if m.group(1) == host:
                if _pid_alive(int(m.group(2))):
                    continue
            elif time.time() - p.stat().st_mtime < _FOREIGN_AGE:
                continue
            p.unlink()
            removed.append(p)
    return removed


NAME_MAX = 255
"""Longest file name (bytes) of common file systems (ext4, XFS, APFS, NTFS)."""
_TMP_EXTRA = 1 + 1 + len(_TMP_TAG) + 1 + 40 + 1 + 10 + 1 + 8 + 4
"""Bytes a temporary's name adds to the target's: dots, tag, host (<= 40), pid, mkstemp's
random part (8) and ``.tmp``."""


def _short(name: str) -> str:
    """``name`` cut so its temporary's name fits :data:`NAME_MAX` bytes (a 250-byte file
    name is valid, but its temporary's name was not: "File name too long")."""
    room = NAME_MAX - _TMP_EXTRA
    data = name.encode("utf-8", "surrogateescape")
    return name if len(data) <= room else data[:room].decode("utf-8", "ignore") or "x"


def _reason(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "no space left on device"
    if exc.errno == errno.EDQUOT:
        return "disk quota exceeded"
    return exc.strerror or str(exc) or type(exc).__name__


def in_the_way(folder: str | os.PathLike) -> str | None:
    """Why ``folder`` cannot be created when ``mkdir(parents=True)`` fails with "File exists"
    or "Not a directory": the first path from the root down that is in the way (a file, a
    device or pipe, or a symbolic link that leads to no folder: a missing target, a loop of
    links), e.g. ``"'results' is a file, not a folder"``; None when none is."""
    folder = Path(folder)
    for p in (*reversed(folder.parents), folder):
        if p.is_symlink() and not p.exists():
            return (f"{str(p)!r} is a symbolic link to {os.readlink(p)!r}, which leads to no "
                    "folder (its target is missing, or the links form a loop)")
        if p.exists() and not p.is_dir():
            return (f"{str(p)!r} is a file, not a folder" if p.is_file()
                    else f"{str(p)!r} is not a folder (a device or a pipe)")
    return None


def _stage(path: Path, write: Callable[[BinaryIO], object]) -> str:
    """Call ``write(binary_file)`` on a new temporary file next to ``path`` (mode 0644) and
    return the temporary's name; ``path`` is not touched. An ``OSError`` becomes
    :class:`AtomicWriteError` naming ``path``; on any failure the temporary is removed."""
    if path.is_dir():  # os.replace's "Is a directory (the previous version is kept)"
        raise AtomicWriteError(errno.EISDIR, f"cannot write {str(path)!r}: it is a folder; "
                               "expected a file name", str(path))
    made = _missing_folders(path.parent)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(path.parent)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{_short(path.name)}.{_TMP_TAG}-"
                                   f"{_host()}-{os.getpid()}-", suffix=".tmp")
    except OSError as exc:
        # mkdir of a parent: name the file in the way (FILE/x or FILE/sub/x)
        blocker = in_the_way(path.parent) if isinstance(
            exc, FileExistsError | NotADirectoryError) else None
        reason = blocker or _reason(exc)
        _remove_empty(made)
        raise AtomicWriteError(exc.errno, f"cannot write {str(path)!r}: {reason}",
                               str(path)) from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o644)  # mkstemp creates 0600
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException as exc:
        _unlink(tmp)
        _remove_empty(made)
        _raise_named(exc, path)
        raise
    return tmp


def _missing_folders(folder: Path) -> list[Path]:
    """The folders ``mkdir(parents=True)`` of ``folder`` would create, deepest first."""
    out: list[Path] = []
    with contextlib.suppress(OSError, ValueError):
        while not os.path.lexists(folder) and folder != folder.parent:
            out.append(folder)
            folder = folder.parent
    return out


def _remove_empty(folders: list[Path]) -> None:
    """Remove the folders a failed write created (deepest first), as long as they are empty:
    ``dl.save(net, "new/sub/net.npz")`` on a full disk left ``new/sub`` behind."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:  # not empty (another writer), or not created after all
            return


def _unlink(tmp: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)


def _raise_named(exc: BaseException, path: Path) -> None:
    """Raise ``exc`` as an :class:`AtomicWriteError` naming ``path`` when it is a plain
    ``OSError`` with an errno; return otherwise (the caller re-raises ``exc``)."""
    if isinstance(exc, OSError) and not isinstance(exc, AtomicWriteError) \
            and exc.errno is not None:
        # "the previous version is kept" only when there is one (a first save that failed
        # said it of a file that never existed)
        kept = " (the previous version is kept)" if path.is_file() else ""
        raise AtomicWriteError(exc.errno, f"cannot write {str(path)!r}: {_reason(exc)}{kept}",
                               str(path)) from exc


def _resolve(path: Path) -> tuple[Path, bool]:
    """``(where to write, whether it is a stream)``. An existing path that is not a regular
    file or a folder (``/dev/null``, ``/dev/stdout``, a FIFO, a terminal) is written in place:
    renaming a temporary onto it would replace the device node or the pipe by a plain file (as
    root, ``--to /dev/null --force`` turned /dev/null into a file for the whole machine). A
    symbolic link to a file is followed: its target is replaced atomically and the link
    stays a link."""
    try:
        st = os.stat(path)  # follows links
    except OSError:
        return path, False
    if stat.S_ISDIR(st.st_mode):
        return path, False
    if not stat.S_ISREG(st.st_mode):
        return path, True
    if path.is_symlink():
        return Path(os.path.realpath(path)), False
    return path, False


def _write_stream(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write into an existing device, FIFO or terminal in place (it cannot be replaced)."""
    try:
        with open(path, "wb") as fh:
            write(fh)
            fh.flush()
    except OSError as exc:
        if isinstance(exc, AtomicWriteError) or exc.errno is None:
            raise
        raise AtomicWriteError(exc.errno, f"cannot write {str(path)!r}: {_reason(exc)}",
                               str(path)) from exc


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(binary_file)`` on a temporary file next to ``path``, then rename it to
    ``path`` (mode 0644: results are meant to be shared). Returns ``path``.

    Stale temporaries of killed writers in the folder are removed first. An ``OSError`` while
    creating, writing or renaming becomes :class:`AtomicWriteError` ("cannot write PATH: no
    space left on device"); ``path`` keeps its previous content. An existing device, FIFO or
    terminal (``/dev/null``) is written in place, never replaced; a symbolic link to a file
    keeps the link and replaces its target."""
    path = Path(path)
    where, stream = _resolve(path)
    if stream:
        _write_stream(where, write)
        return path
    path = where
    tmp = _stage(path, write)
    try:
        os.replace(tmp, path)
    except BaseException as exc:
        _unlink(tmp)
        _raise_named(exc, path)
        raise
    return path


def atomic_write_all(items: Iterable[tuple[str | os.PathLike,
                                           Callable[[BinaryIO], object]]]) -> list[Path]:
    """Write several files as one: each ``(path, write)`` is written to a temporary file next
    to its path, and only once all n are complete are the n renamed, so an error or a Ctrl-C
    while writing the k-th leaves every one of them as it was (an export interrupted after 5
    of its 9 tables left runs.csv of 34 runs beside the previous histograms.csv of 10). A
    KeyboardInterrupt among the renames (microseconds) finishes them before it goes on.
    ``items`` may be a generator (each write's data made only when its turn comes). Returns
    the paths."""
    staged: list[tuple[str, Path]] = []
    given: list[Path] = []
    try:
        for path, write in items:
            given.append(Path(path))
            where, stream = _resolve(Path(path))
            if stream:  # a device or FIFO: written in place, in its turn
                _write_stream(where, write)
                continue
            staged.append((_stage(where, write), where))
    except BaseException:
        for tmp, _ in staged:
            _unlink(tmp)
        raise
    done = 0
    try:
        for tmp, path in staged:
            os.replace(tmp, path)
            done += 1
    except KeyboardInterrupt:
        for tmp, path in staged[done:]:
            with contextlib.suppress(FileNotFoundError):  # the one renamed as it came
                os.replace(tmp, path)
        raise
    except BaseException as exc:
        for tmp, _ in staged[done:]:
            _unlink(tmp)
        _raise_named(exc, staged[done][1])
        raise
    return given


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda fh: fh.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


class Staged:
    """A file written in full to its temporary next to ``path`` but not yet renamed onto it
    (:func:`stage_bytes`): :meth:`commit` renames it (microseconds), :meth:`discard` removes
    it and the folders its write created. What a second write must agree with (a results
    store's record) is written between the two, so an interrupt during the long part, the
    write, leaves neither (``depthlab run``: a Ctrl-C while a large network was written left
    the run stored without it)."""

    def __init__(self, path: Path, tmp: str | None, made: list[Path], data: bytes) -> None:
        self.path = path
        self._tmp = tmp  # None: a device or FIFO, written in place at commit
        self._made = made
        self._data = data if tmp is None else b""

    def commit(self) -> Path:
        """Rename the temporary onto ``path`` (a KeyboardInterrupt as it is renamed finishes
        the rename before it goes on); returns ``path``."""
        if self._tmp is None:
            _write_stream(self.path, lambda fh: fh.write(self._data))
            return self.path
        tmp, self._tmp = self._tmp, None
        try:
            os.replace(tmp, self.path)
        except KeyboardInterrupt:
            with contextlib.suppress(FileNotFoundError):  # renamed as the interrupt came
                os.replace(tmp, self.path)
            raise
        except BaseException as exc:
            _unlink(tmp)
            _raise_named(exc, self.path)
            raise
        return self.path

    def discard(self) -> None:
        """Remove the temporary (``path`` keeps its previous content) and the empty folders
        the write created."""
        if self._tmp is not None:
            _unlink(self._tmp)
            self._tmp = None
            _remove_empty(self._made)


def stage_bytes(path: str | os.PathLike, data: bytes) -> Staged:
    """Write ``data`` to a temporary next to ``path`` as :func:`atomic_write` does (missing
    folders created, an ``OSError`` an :class:`AtomicWriteError` naming ``path``, nothing left
    on failure or Ctrl-C) and return it :class:`Staged`: ``path`` is untouched until its
    :meth:`Staged.commit`."""
    path = Path(path)
    where, stream = _resolve(path)
    if stream:
        return Staged(where, None, [], data)
    made = _missing_folders(where.parent)
    tmp = _stage(where, lambda fh: fh.write(data))
    return Staged(where, tmp, made, b"")


def replace_marked_block(path: str | os.PathLike, begin: str, end: str, block: str) -> Path:
    """Replace the text from the first ``begin`` marker through the next ``end`` marker in the
    UTF-8 file ``path`` by ``block`` (which carries its own markers), atomically; a file without
    the two markers in that order is left as it is and :class:`ValueError` names it."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    start = text.find(begin)
    stop = text.find(end, start + len(begin)) if start >= 0 else -1
    if stop < 0:
        raise ValueError(f"{path}: no {begin!r} ... {end!r} block to replace")
    return atomic_write_text(path, text[:start] + block + text[stop + len(end):])
