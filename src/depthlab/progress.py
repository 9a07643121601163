"""Progress a person can follow, on a terminal or in a log.

``progress`` settings accepted by the trainer (and passed down by the CLI):

* ``"bar"`` or ``True``: a tqdm bar (only sensible on a terminal);
* ``"lines"``: a plain status line on stderr at most every :data:`LINE_EVERY_S` seconds
  (``step 120/400 (30%): loss 0.53, val_acc 0.81; 4 s elapsed, ~9 s left``) and one at the end:
  no carriage returns, so a log file stays readable;
* ``False``/``None``: nothing.

:class:`Stages` labels the parts of a longer job (a reproduction's trainings):
``stage 3/11: tanh, standard init (overall ~2 min left)``, the time left estimated from the
time per unit of work measured on the stages done so far and the work of the stages left
(``work=``: each stage's relative cost, e.g. layers x steps; 1 each by default).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["LINE_EVERY_S", "ExperimentProgress", "Stages", "StatusLines", "count", "duration",
           "make_progress", "mode", "tqdm_bar", "waiting", "warning_line"]

LINE_EVERY_S = 5.0


def mode(progress: Any) -> str | None:
    """``"bar"``, ``"lines"`` or None for a ``progress`` setting (see the module docstring)."""
    if progress is None or progress is False:
        return None
    if progress is True or progress == "bar":
        return "bar"
    if progress == "lines":
        return "lines"
    raise ValueError(f"progress={progress!r} is not accepted; expected True/'bar', 'lines', "
                     "False or None")


@contextlib.contextmanager
def waiting(label: str, progress: Any, *, every_s: float = LINE_EVERY_S,
            write: Callable[[str], None] | None = None) -> Iterator[None]:
    """Say ``"{label}: {k * every_s} s elapsed"`` every ``every_s`` seconds while the block
    runs (nothing when it ends sooner, nothing for ``progress`` False/None): a long silent
    step, such as loading a large data file before the first training step, shows that it
    is working. Lines are written by a daemon thread; an exception or Ctrl-C in the block
    stops them at once."""
    if mode(progress) is None:
        yield
        return
    out = write or (lambda line: print(line, file=sys.stderr, flush=True))
    done = threading.Event()
    start = time.monotonic()

    def beat() -> None:
        while not done.wait(every_s):
            out(f"{label}: {duration(time.monotonic() - start)} elapsed")

    thread = threading.Thread(target=beat, name="depthlab-waiting", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(1.0)


def warning_line(message: Any, category: Any = None, filename: Any = None, lineno: Any = None,
                 line: Any = None) -> str:
    """A warning as one line, ``depthlab: warning: MESSAGE`` (a ``warnings.formatwarning``
    for the command line and its worker processes; Python's own format adds the file, the
    line number and a line of source code)."""
    text = " ".join(str(message).split()).removeprefix("depthlab: ")
    return f"depthlab: warning: {text}\n"


def count(n: int, noun: str, plural: str | None = None, *, thousands: bool = False) -> str:
    """``n noun`` with the noun as English counts it: ``"1 row"``, ``"0 rows"``, ``"60 rows"``
    (``plural``: ``noun + "s"`` unless given); ``thousands``: ``"1,000 points"`` (lines such
    as predict's "1 rows, accuracy 1.0000" and the sweep's "1 points" read wrong)."""
    shown = f"{n:,}" if thousands else f"{n}"
    return f"{shown} {noun if n == 1 else (plural or noun + 's')}"


def duration(seconds: float) -> str:
    """A time span as a person reads it: ``"42 s"``, ``"3 min"``, ``"2.1 h"``, ``"3.5 days"``,
    ``"12 years"`` (a run of 10**20 epochs read "~215239521905832.9 h left"); ``"?"`` for a
    span that is not a number."""
    if seconds != seconds:  # NaN: max(nan, 0.0) is nan, which printed "nan s"
        return "?"
    seconds = max(seconds, 0.0)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    days = seconds / 86400
    if days < 730:
        return f"{days:.1f} days"
    years = days / 365.25
    return f"{years:,.0f} years" if years < 1e6 else (
        f"{years:.1e} years" if years < float("inf") else "?")


class StatusLines:
    """The tqdm subset the trainer uses (``update``, ``set_postfix``, ``close``), printing a
    plain line every ``every_s`` seconds instead of redrawing a bar."""

    def __init__(self, total: int, *, every_s: float = LINE_EVERY_S, unit: str = "step",
                 write: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.total, self.n, self.unit, self.every_s = int(total), 0, unit, float(every_s)
        self.postfix: dict[str, Any] = {}
        self._write = write or (lambda line: print(line, file=sys.stderr, flush=True))
        self._clock = clock
        self._t0 = self._last = clock()
        self._closed = False

    def line(self) -> str:
        elapsed = self._clock() - self._t0
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        post = ", ".join(f"{k} {v}" for k, v in self.postfix.items())
        left = ""
        if 0 < self.n < self.total:
            left = f", ~{duration(elapsed * (self.total - self.n) / self.n)} left"
        return (f"{self.unit} {self.n}/{self.total}{pct}" + (f": {post}" if post else "")
                + f"; {duration(elapsed)} elapsed{left}")

    def update(self, n: int = 1) -> None:
        self.n += n
        now = self._clock()
        if now - self._last >= self.every_s:
            self._last = now
            self._write(self.line())

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True,
                    **kwargs: Any) -> None:
        self.postfix.update(ordered_dict or {})
        self.postfix.update(kwargs)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._write(self.line())


def make_progress(total: int, progress: Any, unit: str = "step"):
    """A tqdm bar, :class:`StatusLines` or None for the ``progress`` setting."""
    m = mode(progress)
    if m is None:
        return None
    if m == "lines":
        return StatusLines(total, unit=unit)
    return tqdm_bar(total, unit)


def tqdm_bar(total: int, unit: str = "step", *, leave: bool = True):
    """A tqdm bar on stderr that follows the terminal's width; 80 columns on a terminal that
    reports no size (a bare pty, some CI runners and editors' shells), where tqdm would
    otherwise draw a bar of width 0, i.e. nothing."""
    from tqdm.auto import tqdm

    if _terminal_columns() <= 0:
        return tqdm(total=total, unit=unit, ncols=80, nrows=24, leave=leave)
    return tqdm(total=total, unit=unit, dynamic_ncols=True, leave=leave)


def _terminal_columns() -> int:
    """The width stderr's terminal reports (0 when it reports none or is no terminal)."""
    try:
        return os.get_terminal_size(sys.stderr.fileno()).columns
    except (AttributeError, OSError, ValueError):
        return 0


class Stages:
    """Labels for the stages of a job: ``with stages.stage("tanh, standard init"):``.

    Each stage prints ``stage k/n: LABEL`` (plus the overall time left once a stage has
    finished) through ``write`` (default: stderr); ``noun`` replaces "stage" (e.g.
    ``experiment 2/8: ...`` for ``reproduce all``). ``work``: each stage's relative cost (a
    number > 0 per stage; default 1 each): the time left is the seconds per unit of work
    measured so far times the work of the stages not yet done, so a ladder whose deep
    networks come last is not estimated from its shallow ones (skipped stages take no time
    and leave the estimate)."""

    def __init__(self, total: int, *, write: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic, noun: str = "stage",
                 work: Any = None) -> None:
        if total < 1:
            raise ValueError(f"total must be >= 1, got {total!r}")
        self.work = check_work(work, int(total))
        self._done_work = 0.0
        self.total, self.done, self.skipped = int(total), 0, 0
        self._write = write or (lambda line: print(line, file=sys.stderr, flush=True))
        self._clock = clock
        self._t0 = clock()
        self.noun = noun

    def start(self, label: str) -> str:
        """Announce the next stage; returns the line written."""
        k = self.done + 1
        left = ""
        if self.done > self.skipped and self._done_work > 0:
            per = (self._clock() - self._t0) / self._done_work
            left = f" (overall ~{duration(per * sum(self.work[self.done:]))} left)"
        line = f"{self.noun} {k}/{self.total}: {label}{left}"
        self._write(line)
        return line

    def finish(self) -> None:
        """Mark the current stage done."""
        if self.done < self.total:
            self._done_work += self.work[self.done]
        self.done = min(self.done + 1, self.total)

    def skip(self, n: int, reason: str) -> None:
        """Count the next ``n`` stages as done without running them (they take no time in
        the estimate); writes ``stages k-m/N skipped: REASON``."""
        n = min(int(n), self.total - self.done)
        if n <= 0:
            return
        first, last = self.done + 1, self.done + n
        span = f"{first}" if n == 1 else f"{first}-{last}"
        self._write(f"{self.noun}{'s' if n > 1 else ''} {span}/{self.total} skipped: {reason}")
        self.done += n
        self.skipped += n

    def stage(self, label: str):
        """Context manager: :meth:`start` on entry, :meth:`finish` on exit."""
        stages = self

        class _Ctx:
            def __enter__(self) -> str:
                return stages.start(label)

            def __exit__(self, *exc: Any) -> None:
                stages.finish()

        return _Ctx()


def check_work(work: Any, total: int) -> list[float]:
    """``work`` as one finite number > 0 per stage (None: 1 each); a ValueError names what is
    wrong."""
    import math
    import numbers

    if work is None:
        return [1.0] * total
    values = list(work)
    if len(values) != total:
        raise ValueError(f"work has {len(values)} values for {total} stages; expected one per "
                         "stage")
    for i, w in enumerate(values):
        if isinstance(w, bool) or not isinstance(w, numbers.Real) or not (
                math.isfinite(w) and w > 0):
            raise ValueError(f"work[{i}] = {w!r} is not accepted; accepted: a finite number > 0")
    return [float(w) for w in values]


class ExperimentProgress:
    """What a reproduction reports while it runs: its stages, declared up front, and each
    training's own bar or status lines beneath them.

    An experiment declares every stage before the first one starts (``plan(labels)``: N is
    known from the start), then wraps each training or measurement in
    ``with progress.stage(label):`` and passes ``progress.training`` to ``fit``::

        p = ExperimentProgress.of(progress)
        p.plan([f"{act}, {init} init" for act, init in configs])
        for act, init in configs:
            with p.stage(f"{act}, {init} init"):
                fit(..., progress=p.training)

    prints ``stage 3/11: tanh, standard init (overall ~2 min left)`` (see :class:`Stages`).
    With the setting False/None nothing is printed, but the plan is still enforced: a stage
    before :meth:`plan` or beyond the N declared is an error (a wrong N is a bug)."""

    def __init__(self, setting: Any = False, *, write: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.training = mode(setting)
        """The ``progress`` setting for each training: ``"bar"``, ``"lines"`` or None."""
        quiet = self.training is None
        self._write = (lambda _line: None) if quiet else write
        self._clock = clock
        self.stages: Stages | None = None
        self.labels: list[str] = []

    @classmethod
    def of(cls, progress: Any) -> ExperimentProgress:
        """``progress`` itself when it already is one, else a new one for the setting."""
        return progress if isinstance(progress, ExperimentProgress) else cls(progress)

    @classmethod
    def planned(cls, labels: Any, setting: Any = False) -> ExperimentProgress:
        """A new one for ``setting`` with ``labels`` already planned (for a helper called on
        its own, outside an experiment)."""
        p = cls(setting)
        p.plan(labels)
        return p

    def plan(self, labels: Any, work: Any = None) -> None:
        """Declare the stages (their labels, in order) before the first one starts; ``work``:
        their relative costs for the time left (see :class:`Stages`; default 1 each)."""
        labels = [str(label) for label in labels]
        if self.stages is not None:
            raise RuntimeError(f"stages already planned ({self.stages.total}); plan once")
        self.labels = labels
        self.stages = Stages(len(labels), write=self._write, clock=self._clock, work=work)

    @property
    def done(self) -> int:
        """Stages finished so far."""
        return 0 if self.stages is None else self.stages.done

    @property
    def total(self) -> int:
        """Stages declared (0 before :meth:`plan`)."""
        return 0 if self.stages is None else self.stages.total

    def skip(self, n: int, reason: str) -> None:
        """Count the next ``n`` declared stages as done without running them (a ladder that
        stops at its first failure): N stays the one declared."""
        if self.stages is None:
            raise RuntimeError("stages skipped before the stages were planned")
        self.stages.skip(n, reason)

    def say(self, line: str) -> None:
        """A line beside the stage lines (nothing when quiet)."""
        if self.training is not None:
            (self._write or (lambda t: print(t, file=sys.stderr, flush=True)))(line)

    def stage(self, label: str):
        """Context manager announcing the next declared stage (``stage k/N: label``)."""
        if self.stages is None:
            raise RuntimeError(f"stage {label!r} started before the stages were planned")
        if self.stages.done >= self.stages.total:
            raise RuntimeError(f"stage {label!r} is beyond the {self.stages.total} planned: "
                               f"{self.labels}")
        return self.stages.stage(label)
