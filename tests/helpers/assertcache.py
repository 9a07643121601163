"""pytest's rewritten test modules cached before collection, once per file for all workers.

pytest rewrites every ``assert`` of a test module when it imports it (an AST pass per assert:
about 37 s of one core for this suite's ~10,000 asserts, two thirds of its collection) and caches
the result in ``__pycache__/NAME.cpython-311-pytest-X.pyc`` (a PEP 552 checked-hash pyc: read
only while the source's hash matches), but only where ``sys.dont_write_bytecode`` is false:
with ``PYTHONDONTWRITEBYTECODE=1`` every process rewrote every module at every run, and under
pytest-xdist each worker did it again (it collects every file).

:func:`warm` writes that cache with pytest's own functions (``_rewrite_test``, ``_write_pyc``:
the code object pytest's import hook would compile, in the file it reads first), for this
worker's share of the files, before collection: worker k of n takes the files ``i`` with
``i % n == k`` (:func:`share`), so the n workers rewrite each file once between them, in
parallel, and each then reads the others' pycs. A file whose cached pyc still matches its source
is skipped; a file another worker has not written yet when collection reaches it is rewritten by
pytest as before (nothing waits). Only test modules (``python_files``) are cached: the imported
library code is still left without bytecode as the environment asks.
"""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path
from typing import Any

try:  # pytest's own rewriting and pyc format (private, unchanged since pytest 6)
    from _pytest.assertion import rewrite as _rw
    from _pytest.assertion.rewrite import assertstate_key
except ImportError:  # another pytest: no cache ahead of collection, pytest rewrites as always
    _rw = None

SKIP_DIRS = {"__pycache__", "node_modules", "venv", "build", "dist"}


def share(files: list[Path], worker: int, workers: int) -> list[Path]:
    """Worker ``worker``'s (0-based) files of ``workers``: ``files[i]`` with
    ``i % workers == worker`` (every file in exactly one share)."""
    if not 0 <= worker < workers:
        raise ValueError(f"worker {worker} is not one of 0..{workers - 1}")
    return [f for i, f in enumerate(files) if i % workers == worker]


def _is_test_file(path: Path, patterns: list[str]) -> bool:
    """Whether pytest's ``python_files`` patterns match ``path``'s name."""
    return any(fnmatch.fnmatch(path.name, p) for p in patterns)


def collected_files(args: list[str], base: Path, patterns: list[str]) -> list[Path]:
    """The test modules that collecting ``args`` (paths, maybe ``::node`` ids, relative to
    ``base``) imports, sorted and without duplicates: each file argument, and the files
    matching ``patterns`` under each directory argument (not under hidden folders,
    ``__pycache__`` or the other folders pytest does not recurse into by default)."""
    found: set[Path] = set()
    for arg in args:
        path = (base / arg.split("::", 1)[0]).resolve()
        if path.is_file() and path.suffix == ".py":
            found.add(path)
        elif path.is_dir():
            for root, dirs, names in os.walk(path):
                dirs[:] = [d for d in dirs if not d.startswith(".") and d not in SKIP_DIRS]
                found.update(Path(root, n) for n in names
                             if n.endswith(".py") and _is_test_file(Path(n), patterns))
    return sorted(found)


def _cached(fn: Path, pyc: Path) -> bool:
    """Whether ``pyc`` holds pytest's rewrite of ``fn`` as it is now."""
    return _rw._read_pyc(fn, pyc) is not None


def warm_file(fn: Path, config: Any) -> bool:
    """Rewrite ``fn``'s asserts as pytest's import hook does and write the pyc it reads first;
    False where it was cached already, cannot be cached, or does not parse (pytest then
    reports the error when it collects the file)."""
    cache_dir = _rw.get_cache_dir(fn)
    pyc = cache_dir / (fn.name[:-3] + _rw.PYC_TAIL)
    if _cached(fn, pyc) or not _rw.try_makedirs(cache_dir):
        return False
    try:
        key, co = _rw._rewrite_test(fn, config)
    except (SyntaxError, ValueError, OSError):
        return False
    return bool(_rw._write_pyc(config.stash[assertstate_key], co, key, pyc))


def worker_slot(config: Any) -> tuple[int, int]:
    """(this worker's index, the number of workers): pytest-xdist's ``gwK`` of
    ``workercount``; (0, 1), i.e. every file, in a process without workers or with a worker
    id or count that does not read so (``--tx ...//id=NAME``)."""
    info = getattr(config, "workerinput", None) or {}
    try:
        worker = int(str(info["workerid"]).removeprefix("gw"))
        workers = int(info["workercount"])
    except (KeyError, TypeError, ValueError):
        return 0, 1
    return (worker, workers) if 0 <= worker < workers else (0, 1)


def warm(config: Any) -> int:
    """Cache this worker's share (:func:`share`) of the test modules the session collects;
    the number of files rewritten. Nothing where pytest does not rewrite asserts
    (``--assert=plain``) or its private rewrite functions are not there."""
    if _rw is None or config.getoption("assertmode") != "rewrite":
        return 0
    if not all(hasattr(_rw, n) for n in ("_read_pyc", "_rewrite_test", "_write_pyc",
                                         "get_cache_dir", "try_makedirs", "PYC_TAIL")):
        return 0
    files = collected_files(list(config.args), Path(config.invocation_params.dir),
                       list(config.getini("python_files")))
    worker, workers = worker_slot(config)
    return sum(warm_file(fn, config) for fn in share(files, worker, workers))
