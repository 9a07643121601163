"""Content fingerprints of user data files, so that a run id changes when its data do.

``digest(path)``: the first 16 hex digits of sha256 over the file's bytes; for a folder (of IDX
files) over each regular file's name and digest, in name order; for an IDX images file over its
and its labels file's (read with it) name and digest. Each file is read once per
process while its size, modification and status-change times and inode stay the same (a cache
keyed by them: the status-change time, which no tool sets back, also follows a file replaced
or rewritten with its modification time kept, as ``cp -p``, ``rsync -a`` and ``tar x`` do), in 1 MiB
pieces (no whole-file copy in memory). A path that cannot be read, or that the loader
refuses unread (:func:`depthlab.data.files.loadable`: a ``.npy``, a ``.parquet``) gives None,
and a folder without IDX files the names, sizes and modification times of its files: the
loader names what is wrong with them, and their content is not read.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

__all__ = ["builtin_digest", "digest", "file_digest"]

_CHUNK = 1 << 20
_CACHE: dict[tuple[str, int, int, int, int, int], str] = {}


def _file_digest(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino,
           st.st_dev)
    hit = _CACHE.get(key)
    if hit is None:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
        hit = _CACHE[key] = h.hexdigest()[:16]
    return hit


def file_digest(path: Path) -> str:
    """The first 16 hex digits of sha256 over the bytes of the file ``path`` (read once while
    its size, times and inode stay the same)."""
    return _file_digest(path)


def _companions(path: Path) -> list[Path]:
    """The other files the loader reads for the data file ``path`` (an IDX images file's
    labels file), :func:`depthlab.data.files.companion_files`."""
    from depthlab.data.files import companion_files

    return companion_files(path)


def digest(path: str | os.PathLike) -> str | None:
    """The content fingerprint of the data file or folder ``path`` (None when unreadable)."""
    from depthlab.data.files import loadable

    p = Path(path)
    try:
        if p.is_dir():
            data = loadable(p)  # else refused by the loader: its listing, not its content
            h = hashlib.sha256()
            for child in sorted(p.iterdir(), key=lambda c: c.name):
                if child.is_file():
                    st = child.stat()
                    content = _file_digest(child) if data else f"{st.st_size} {st.st_mtime_ns}"
                    h.update(f"{child.name}\0{content}\0".encode())
            return h.hexdigest()[:16]
        if not loadable(p):  # refused by the loader unread: its content is not read either
            return None
        companions = _companions(p)
        if not companions:
            return _file_digest(p)
        h = hashlib.sha256()  # an IDX images file and the labels file read with it
        for f in (p, *companions):
            h.update(f"{f.name}\0{_file_digest(f)}\0".encode())
        return h.hexdigest()[:16]
    except OSError:
        return None


def builtin_digest(name: str, options: dict | None = None) -> str | None:
    """The content fingerprint of the files the built-in data set ``name`` reads with
    ``options`` when they are a user's copy (``fashion-mnist`` from ``options["path"]`` or
    ``$DEPTHLAB_FASHION_MNIST``: :func:`depthlab.data.fashion_mnist.fingerprint`); None for
    a generated or packaged data set, or files that cannot be read (the loader says so)."""
    from depthlab.data.registry import find_builtin

    spec = find_builtin(name)
    if spec is None or spec.fingerprint is None:
        return None
    options = options if isinstance(options, dict) else {}
    try:
        return spec.fingerprint(**{k: v for k, v in options.items() if k == "path"})
    except (OSError, TypeError, ValueError):
        return None
