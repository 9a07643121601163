"""On-disk cache (``$DEPTHLAB_CACHE``, default ``~/.cache/depthlab``) with atomic writes."""

from __future__ import annotations

import os
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np

from ..atomic import atomic_write, expand_home

CACHE_ENV = "DEPTHLAB_CACHE"


def cache_dir() -> Path:
    """The cache folder: ``$DEPTHLAB_CACHE`` if set, else ``~/.cache/depthlab`` (not created)."""
    env = os.environ.get(CACHE_ENV)
    return expand_home(env) if env else Path.home() / ".cache" / "depthlab"


def load_npz(name: str) -> dict[str, np.ndarray] | None:
    """Arrays of cache file ``name`` or None when it is missing or unreadable (damaged: a
    truncated or altered zip was an internal error, ``BadZipFile``, instead of a rebuilt
    cache)."""
    path = cache_dir() / name
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error):
        return None


def save_npz(name: str, **arrays: np.ndarray) -> Path | None:
    """Write ``arrays`` to cache file ``name`` atomically (temp file in the same folder, then
    ``os.replace``). Returns the path, or None (with a warning) if the folder is not writable."""
    folder = cache_dir()
    try:
        return atomic_write(folder / name, lambda fh: np.savez(fh, **arrays))
    except OSError as exc:
        warnings.warn(f"depthlab: could not write cache {folder / name}: {exc}", stacklevel=3)
        return None
