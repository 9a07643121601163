"""The sweep client's progress: points done / total, failures and time left.

On a terminal a single ``tqdm`` bar (per-point lines printed above it); elsewhere plain lines:
one per point for grids up to :data:`PER_POINT_LINES` points, above that only failed and
diverged points plus a status line every :data:`STATUS_EVERY` seconds.

Time left = (points still to do) × (elapsed time since the first point was sent) / (points
computed so far); skipped points count as done and cost nothing.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from ..progress import duration

PER_POINT_LINES = 1000
STATUS_EVERY = 10.0


def _metrics(m: dict[str, Any]) -> str:
    return " ".join(f"{k}={m[k]:.4g}" for k in ("train_loss", "val_acc", "test_acc")
                    if isinstance(m.get(k), int | float))


class SweepProgress:
    """Counts and prints; ``echo`` receives plain lines (None: silent), ``bar`` asks for a
    tqdm bar (only sensible on a terminal)."""

    def __init__(self, total: int, echo: Callable[[str], None] | None, *, bar: bool = False,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.total = total
        self.echo = echo
        self.clock = clock
        self.done = self.ran = self.failed = self.skipped = 0
        self.t0: float | None = None
        self._last_status = clock()
        self.bar: Any = None
        if bar and echo is not None and total > 0:
            from ..progress import tqdm_bar

            self.bar = tqdm_bar(total, "pt", leave=False)

    def started(self) -> None:
        """The first point was sent (the clock for time left starts)."""
        if self.t0 is None:
            self.t0 = self.clock()

    def left(self) -> float | None:
        """Estimated seconds until the grid is done (None before the first result)."""
        if not self.ran or self.t0 is None:
            return None
        return max(self.total - self.done, 0) * (self.clock() - self.t0) / self.ran

    def status(self) -> str:
        left = self.left()
        eta = f", ~{duration(left)} left" if left is not None and self.done < self.total else ""
        return (f"{self.done}/{self.total} points done, {self.failed} failed, "
                f"{self.skipped} skipped{eta}")

    def skip(self) -> None:
        self.done += 1
        self.skipped += 1
        if self.bar is not None:
            self.bar.update(1)

    def point(self, run_id: str, name: str, status: str, metrics: dict[str, Any],
              error: str | None) -> None:
        """One point finished with ``status``."""
        self.done += 1
        self.ran += 1
        self.failed += status == "failed"
        extra = ""
        if status == "failed" and error:
            extra = " error: " + error.strip().splitlines()[0]
        line = f"[{self.done}/{self.total}] {run_id} {name}: {status} {_metrics(metrics)}{extra}"
        every = self.total <= PER_POINT_LINES or status != "finished"
        if self.bar is not None:
            self.bar.set_postfix_str(f"{self.failed} failed", refresh=False)
            self.bar.update(1)
            if every and self.echo is not None:  # through echo: never onto --json's stdout
                with type(self.bar).external_write_mode(file=sys.stderr):
                    self.echo(line)
            return
        if self.echo is None:
            return
        if every:
            left = self.left()
            tail = (f" ({self.failed} failed, ~{duration(left)} left)"
                    if left is not None and self.done < self.total else "")
            self.echo(line.rstrip() + tail)
        elif self.clock() - self._last_status >= STATUS_EVERY:
            self._last_status = self.clock()
            self.echo(self.status())

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
