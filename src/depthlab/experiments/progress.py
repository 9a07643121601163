"""The sweep client's progress: points done / total, failures and time left.

On a terminal a single ``tqdm`` bar (per-point lines printed above it); elsewhere plain lines:
one per point for grids up to :data:`PER_POINT_LINES` points, above that only failed and
diverged points plus a status line every :data:`STATUS_EVERY` seconds.

Time left = (work still to do) × (elapsed time since the first point was sent) / (work
computed so far), a point's work from its config (:func:`point_work`: its layer-steps, wider
layers costing more), for grids of up to :data:`WORK_POINTS` points; larger ones count points
(each point one unit). Skipped points count as done and cost nothing. (Counting points, a
depth sweep 1..128 said "~2 s left" after depth 16 with 10 s to go.)

While points run and nothing was printed for :data:`HEARTBEAT_S` seconds, a heartbeat line
``sweep: 2 points running (the longest for 15 s); 0/4 done`` (a bar shows the count running
instead): a point of a large data file loads and standardizes it for 20-30 s in its worker,
and a silent sweep could not be told from a hung one.
"""

from __future__ import annotations

import collections
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from ..progress import LINE_EVERY_S, count, duration

PER_POINT_LINES = 1000
STATUS_EVERY = 10.0
HEARTBEAT_S = LINE_EVERY_S
"""Seconds without a line while points run before the heartbeat line (and between two)."""
WORK_POINTS = 2000
"""Grids up to this many points are listed before the first is sent, so the time left weighs
each point by its work; larger ones count points."""
MACS_PER_LAYER_STEP = 2**19
"""Multiply-adds of a layer's step that cost as much as its fixed part (Python calls, probes,
the update): measured on digits, batch 32, 9 Dense layers, 80 steps: width 64 0.36 s, 256
1.1 s, 1024 17 s."""
RATE_WINDOW = 0.25
"""The time left takes the rate of this last fraction of the time since its anchor (the first
result, or the first point sent), at least :data:`RATE_MIN_S` seconds: the workers' first
points (imports, the data's first load) and Dask's first small chunks made the rate since the
first result 2-3x too slow for most of a sweep."""
RATE_MIN_S = 5.0
TOGETHER = 0.1
"""Results that arrive within this fraction of the first wave's time (from the first point
sent to the rate's anchor) after the anchor arrived with it and give no estimate: a Dask
chunk's records come back together, so its third record, a millisecond after the anchor, said
"~0 s left" with 17 of 20 points (~9 s) to go."""
POINT_FIXED = 400
"""A point's own fixed part (building, data, final metrics, storing), in layer-steps of width
64 on a batch of 32 (each 1.25 units): a depth sweep on digits, 80 steps, took 0.2 s at depth
2 and 3.2 s at depth 64."""


def point_work(config: dict[str, Any]) -> float:
    """A point's relative cost for the time left: per step, each Dense layer's fixed part plus
    its multiply-adds over the batch (``batch * n_in * n_out / MACS_PER_LAYER_STEP``; twice
    with batch norm, twice for a residual block's two layers; ``"auto"`` ends as the hidden
    width beside them), times the steps (epochs over ``data.n`` rows, 1000 when not given,
    less the validation and test parts; or ``max_steps``). 1.0 when the config cannot be
    read (a refused combination)."""
    import math

    try:
        model, train, data = config["model"], config["train"], config["data"]
        sizes = list(model["sizes"])
        hidden = [s for s in sizes[1:-1] if isinstance(s, int)]
        edge = hidden[0] if hidden else 1
        sizes = [s if isinstance(s, int) else (hidden[0] if i == 0 and hidden else
                                               hidden[-1] if hidden else edge)
                 for i, s in enumerate(sizes)]
        n = (data.get("n") or 1000) * max(1e-3, 1 - data.get("val_fraction", 0.1)
                                          - data.get("test_fraction", 0.2))
        batch = train.get("batch_size", 32)
        batch = n if batch == "full" else min(float(batch), n)
        per_epoch = math.ceil(n / batch)
        epochs, max_steps = train.get("epochs"), train.get("max_steps")
        steps = max_steps if max_steps and not epochs else per_epoch * (epochs or 1)
        if max_steps:
            steps = min(steps, max_steps)
        factor = (2 if model.get("batchnorm") else 1) * (2 if model.get("residual") else 1)
        per_step = sum(factor * (1 + batch * a * b / MACS_PER_LAYER_STEP)
                       for a, b in zip(sizes, sizes[1:]))
        work = float(steps * per_step) + POINT_FIXED
    except (KeyError, TypeError, ValueError, OverflowError):
        return 1.0
    return work if math.isfinite(work) and work > 0 else 1.0


def _metrics(m: dict[str, Any]) -> str:
    """A point's line: train loss and accuracies; a regression point (no accuracy: mse or
    huber on real targets) its validation and test losses instead."""
    keys = ("train_loss", "val_acc", "test_acc")
    if not any(isinstance(m.get(k), int | float) for k in keys[1:]):
        keys = ("train_loss", "val_loss", "test_loss")
    return " ".join(f"{k}={m[k]:.4g}" for k in keys if isinstance(m.get(k), int | float))


class SweepProgress:
    """Counts and prints; ``echo`` receives plain lines (None: silent), ``bar`` asks for a
    tqdm bar (only sensible on a terminal). ``slots``: points computed at once, or a
    callable asked at each beat (the executor's ``slots``); None: every point sent counts as
    running."""

    def __init__(self, total: int, echo: Callable[[str], None] | None, *, bar: bool = False,
                 clock: Callable[[], float] = time.monotonic,
                 work: list[tuple[str, float]] | None = None, workers: int = 1,
                 slots: int | Callable[[], int | None] | None = None) -> None:
        self.total = total
        self.slots = slots
        self._sent: dict[str, float] = {}  # run id -> when handed to the executor
        self._lock = threading.Lock()  # the heartbeat thread writes beside the caller's
        self._stop = threading.Event()
        self._beater: threading.Thread | None = None
        # the workers' first points end together: the rate is taken from the last of them
        # (from the first, two workers' first results 0.01 s apart said "~0 s left" with 6
        # of 8 points to go)
        self.workers = max(1, int(workers))
        self._computed = 0
        self.work: dict[str, float] | None = None
        self.work_left = self.work_ran = 0.0
        self._first: tuple[float, float] | None = None  # (time, work) of the anchor result
        # (time, work or points computed) at each result after the anchor, oldest first; the
        # oldest is the latest one before the rate window (older ones dropped)
        self._samples: collections.deque[tuple[float, float]] = collections.deque()
        if work is not None:
            self.set_work(work)
        self.echo = echo
        self.clock = clock
        self.done = self.ran = self.failed = self.skipped = 0
        self.t0: float | None = None
        self._last_status = self._last_line = clock()
        self.bar: Any = None
        if bar and echo is not None and total > 0:
            from ..progress import tqdm_bar

            self.bar = tqdm_bar(total, "pt", leave=False)

    def set_work(self, work: list[tuple[str, float]]) -> None:
        """(run id, :func:`point_work`) of every point in grid order (a repeated point once
        per occurrence), before the first point is sent: the time left then weighs each
        point by its work."""
        self.work = dict(work)
        self.work_left = float(sum(w for _, w in work))

    def started(self) -> None:
        """The first point was sent (the clock for time left starts)."""
        if self.t0 is None:
            self.t0 = self._last_line = self.clock()

    def sent(self, run_id: str) -> None:
        """``run_id`` was handed to the executor (running until :meth:`returned`)."""
        with self._lock:
            self._sent.setdefault(run_id, self.clock())

    def returned(self, run_id: str) -> None:
        """``run_id``'s record came back."""
        with self._lock:
            self._sent.pop(run_id, None)

    def watch(self, every_s: float | None = None) -> None:
        """Start the heartbeat (a daemon thread calling :meth:`beat`; stopped by
        :meth:`close`); the points sent so far count as running from now (the executor has
        just started). Nothing without ``echo``."""
        if self.echo is None or self._beater is not None:
            return
        every = HEARTBEAT_S if every_s is None else float(every_s)
        with self._lock:
            now = self._last_line = self.clock()
            self._sent = dict.fromkeys(self._sent, now)

        def run() -> None:
            while not self._stop.wait(min(1.0, every / 5)):
                self.beat(every)

        self._beater = threading.Thread(target=run, name="depthlab-sweep-heartbeat",
                                        daemon=True)
        self._beater.start()

    def running(self) -> tuple[int, float]:
        """(points running, seconds the longest of them has run): at most ``slots`` of
        those sent, the oldest first."""
        with self._lock:
            times = list(self._sent.values())
        if not times:
            return 0, 0.0
        slots = self.slots() if callable(self.slots) else self.slots
        n = len(times) if slots is None else min(len(times), slots)
        return n, self.clock() - min(times)

    def beat(self, every_s: float = HEARTBEAT_S) -> str | None:
        """The heartbeat line, written, when points run and nothing was written for
        ``every_s`` seconds (else None): ``sweep: 2 points running (the longest for 15 s);
        0/4 done``; with a bar, its count running (and elapsed time) refreshed."""
        n, longest = self.running()
        if n == 0 or self.echo is None or self.clock() - self._last_line < every_s:
            return None
        line = (f"sweep: {count(n, 'point')} running (the longest for {duration(longest)}); "
                f"{self.done}/{self.total} done")
        bar = self.bar
        if bar is not None:  # tqdm's own lock, not under ours (its writes hold it, then ours)
            self._last_line = self.clock()
            bar.set_postfix_str(f"{self.failed} failed, {n} running", refresh=True)
            return line
        with self._lock:  # a point's line written meanwhile: none
            if self.clock() - self._last_line < every_s:
                return None
            self._last_line = self.clock()
            self.echo(line)
        return line

    def say(self, line: str) -> None:
        """``echo(line)`` for a line of the sweep's own (not a point's): with a bar drawn, the
        bar is cleared, the line written and the bar drawn again below it (was written after
        the bar on its own line: ``0/6 [00:00<?, ?pt/s]sweep ...: running on 2 processes``)."""
        if self.echo is None:
            return
        if self.bar is not None:
            with type(self.bar).external_write_mode(file=sys.stderr):
                self._say(line)
            return
        self._say(line)

    def _say(self, line: str) -> None:
        """``echo(line)``, not beside a heartbeat line."""
        with self._lock:
            self._last_line = self.clock()
            if self.echo is not None:
                self.echo(line)

    def left(self) -> float | None:
        """Estimated seconds until the grid is done (None before the first result)."""
        if not self.ran or self.t0 is None:
            return None
        now = self.clock()
        if self.work is not None:
            # from the first result on: the first point's one-time costs (imports, the data's
            # first load: 2.7 s of a depth-1 point's 2.9 s) left out of the rate, so no
            # estimate before a second result
            if self._first is None or self.work_ran <= self._first[1]:
                return None
            if now - self._first[0] < TOGETHER * (self._first[0] - self.t0):
                return None  # delivered with the anchor: no time measured since
            since, rate = self._rate(self._first, self.work_ran, now)
            return max(self.work_left, 0.0) * since / rate
        since, rate = self._rate((self.t0, 0.0), float(self.ran), now)
        return max(self.total - self.done, 0) * since / rate

    def _rate(self, anchor: tuple[float, float], amount: float, now: float
              ) -> tuple[float, float]:
        """(seconds, amount computed in them) since :meth:`_base`; since ``anchor`` when
        nothing was computed after the base (failed points only, or none yet)."""
        since, base = self._base(anchor, now)
        if amount - base <= 0:
            since, base = anchor
        return max(now - since, 0.0), amount - base

    def _base(self, anchor: tuple[float, float], now: float) -> tuple[float, float]:
        """The (time, amount computed) the rate is measured from: the latest result at least
        :data:`RATE_WINDOW` of the time since ``anchor`` (and :data:`RATE_MIN_S`) ago, else
        ``anchor``."""
        cutoff = now - max(RATE_MIN_S, RATE_WINDOW * (now - anchor[0]))
        samples = self._samples
        while len(samples) > 1 and samples[1][0] <= cutoff:
            samples.popleft()  # the cutoff only moves on: older ones are never the base again
        if samples and anchor[0] <= samples[0][0] <= cutoff:
            return samples[0]
        return anchor

    def status(self) -> str:
        left = self.left()
        eta = f", ~{duration(left)} left" if left is not None and self.done < self.total else ""
        return (f"{self.done}/{self.total} points done, {self.failed} failed, "
                f"{self.skipped} skipped{eta}")

    def _finished(self, run_id: str | None, ran: bool) -> None:
        if self.work is None:
            return
        w = self.work.get(run_id, 0.0) if run_id is not None else 0.0
        self.work_left -= w
        if ran:
            self.work_ran += w
            self._computed += 1
            if self._first is None and self._computed >= self.workers:
                self._first = (self.clock(), self.work_ran)

    def skip(self, run_id: str | None = None) -> None:
        self._last_line = self.clock()  # news: no heartbeat for a while
        self._finished(run_id, False)
        self.done += 1
        self.skipped += 1
        if self.bar is not None:
            self.bar.update(1)

    def point(self, run_id: str, name: str, status: str, metrics: dict[str, Any],
              error: str | None) -> None:
        """One point finished with ``status`` (a failed one's work is not counted as computed:
        a refused combination takes no time)."""
        self._last_line = self.clock()  # news, a line or not (a grid above PER_POINT_LINES)
        self._finished(run_id, status != "failed")
        self.done += 1
        self.ran += 1
        self.failed += status == "failed"
        self._samples.append((self.clock(), self.work_ran if self.work is not None
                              else float(self.ran)))
        extra = ""
        if status == "failed" and error:
            extra = "error: " + without_point(error.strip().splitlines()[0])
        said = " ".join(part for part in (status, _metrics(metrics), extra) if part)
        line = f"[{self.done}/{self.total}] {run_id} {name}: {said}"
        every = self.total <= PER_POINT_LINES or status != "finished"
        if self.bar is not None:
            self.bar.set_postfix_str(f"{self.failed} failed", refresh=False)
            self.bar.update(1)
            if every and self.echo is not None:  # through echo: never onto --json's stdout
                with type(self.bar).external_write_mode(file=sys.stderr):
                    self._say(line)
            return
        if self.echo is None:
            return
        if every:
            left = self.left()
            tail = (f" ({self.failed} failed, ~{duration(left)} left)"
                    if left is not None and self.done < self.total else "")
            self._say(line.rstrip() + tail)
        elif self.clock() - self._last_status >= STATUS_EVERY:
            self._last_status = self.clock()
            self._say(self.status())

    def close(self) -> None:
        self._stop.set()
        if self._beater is not None:
            self._beater.join(1.0)
            self._beater = None
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def without_point(error: str | None) -> str:
    """A failed point's error without the ``sweep point (train.lr = 0.05, ...): `` it starts
    with when the point's config was refused: the lines showing it name the point already
    (``[1/8] ID lr=0.05,...: failed error: sweep point (train.lr = 0.05, ...): ...``)."""
    import re

    return re.sub(r"^sweep point \(.*?\): ", "", error or "")
