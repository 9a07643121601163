"""The order pytest-xdist hands out the test files in ``make test`` (``--dist loadfile``): the
costliest first.

pytest-xdist's loadfile scheduler gives each worker a whole file at a time, in the order of its
queue, and by default it sorts that queue by the number of tests in each file
(``--loadscope-reorder``). A file of five slow tests (a quick reproduction, a trained doctor)
then waits behind hundreds of cheap parametrised ones, starts near the end, and runs alone on
one worker while the others have nothing left: the wall time is the total CPU divided by the
workers plus that tail. Handing out the costliest file first (the longest-processing-time rule)
leaves the cheapest files for the end, where they fill the gaps.

:class:`CostFirstScheduling` is the loadfile scheduler whose next file is always the one with
the largest expected cost (:func:`file_cost`): the seconds it took in the last run on this
checkout (``.pytest_cache``, written by :func:`record` at the session's end), else the
seconds recorded in :data:`COSTS_FILE` (``filecosts.json``, committed: a fresh checkout), else
its number of tests times :data:`PER_TEST` (a file nobody has timed). Which tests run, and on
which worker each file runs whole, are unchanged; only the order differs.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from xdist.scheduler import LoadFileScheduling

COSTS_FILE = Path(__file__).with_name("filecosts.json")
CACHE_KEY = "depthlab/filecosts"  # pytest's cache (config.cache), seconds per test file
PER_TEST = 0.3  # seconds: the suite's mean per test (round 50: 49 min CPU / 8,600 tests)


def file_of(nodeid: str) -> str:
    """The test file of a pytest node id (``tests/test_x.py::test_y[1]``: ``tests/test_x.py``),
    as loadfile groups them, with ``/`` separators."""
    return nodeid.split("::", 1)[0].replace("\\", "/")


def load_costs(path: Path = COSTS_FILE) -> dict[str, float]:
    """The committed seconds per file (``{}``: no file, or not a JSON object of numbers)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): float(v) for k, v in data.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and v >= 0}


def file_cost(name: str, n_tests: int, *tables: Mapping[str, float]) -> float:
    """Expected seconds of test file ``name``: its value in the first of ``tables`` that has it
    (the last run's, then the committed ones), else ``n_tests * PER_TEST``."""
    for table in tables:
        if name in table:
            return float(table[name])
    return n_tests * PER_TEST


def order(units: Mapping[str, Mapping[str, Any]], *tables: Mapping[str, float]) -> list[str]:
    """The files of ``units`` (file -> its tests) costliest first (:func:`file_cost`); equal
    costs keep their order in ``units``."""
    return sorted(units, key=lambda f: -file_cost(f, len(units[f]), *tables))


def totals(reports: Iterable[tuple[str, float]]) -> dict[str, float]:
    """Seconds per file from (node id, duration) pairs: a test's setup, call and teardown."""
    out: dict[str, float] = {}
    for nodeid, seconds in reports:
        f = file_of(nodeid)
        out[f] = out.get(f, 0.0) + max(float(seconds), 0.0)
    return out


class CostFirstScheduling(LoadFileScheduling):
    """pytest-xdist's loadfile scheduling, handing out the costliest remaining file first."""

    def __init__(self, config: Any, log: Any = None,
                 tables: tuple[Mapping[str, float], ...] | None = None) -> None:
        super().__init__(config, log)
        if tables is None:
            cache = getattr(config, "cache", None)
            last = cache.get(CACHE_KEY, {}) if cache is not None else {}
            tables = (last if isinstance(last, dict) else {}, load_costs())
        self.tables = tables

    def _assign_work_unit(self, node: Any) -> None:
        """Move the costliest file of the queue to its front, then assign as loadfile does."""
        if self.workqueue:
            first = order(self.workqueue, *self.tables)[0]
            self.workqueue.move_to_end(first, last=False)
        super()._assign_work_unit(node)


def record(config: Any, seconds: Mapping[str, float]) -> None:
    """Store this session's seconds per file in pytest's cache, for the next run's order (no
    cache, as under ``-p no:cacheprovider``: nothing). Files this session did not run keep
    their earlier value."""
    cache = getattr(config, "cache", None)
    if cache is None or not seconds:
        return
    last = cache.get(CACHE_KEY, {})
    merged = {**(last if isinstance(last, dict) else {}),
              **{k: round(v, 3) for k, v in seconds.items()}}
    cache.set(CACHE_KEY, merged)


def write_committed(root: Path, path: Path = COSTS_FILE) -> int:
    """Copy the last runs' seconds per file (``ROOT/.pytest_cache``) into ``path`` (the
    committed table a fresh checkout orders by), only files that still exist, rounded to 0.1 s;
    the number of files written."""
    cached = root / ".pytest_cache" / "v" / CACHE_KEY
    try:
        last = json.loads(cached.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise SystemExit(f"no file costs in {cached} ({err}): run `make test` first") from None
    costs = {**load_costs(path), **{k: float(v) for k, v in last.items()}}
    costs = {k: round(v, 1) for k, v in sorted(costs.items()) if (root / k).is_file()}
    path.write_text(json.dumps(costs, indent=0) + "\n", encoding="utf-8")
    return len(costs)


if __name__ == "__main__":  # after a full `make test`: refresh the committed table
    print(write_committed(Path(__file__).resolve().parents[2]), "files")
