"""sweepbeat41: a sweep whose points are slow to start (a large data file loaded and
standardized in each worker) says every few seconds that its points are running.

The points are made slow deterministically: their compute waits until the heartbeat line
has been printed (a generous timeout only as a safety net), so the assertions are on the
lines printed, never on how long anything took."""

from __future__ import annotations

import os
import re
import sqlite3
import threading
import time

import pytest
from helpers.cli import ENV

from depthlab.experiments import progress as sweep_progress
from depthlab.experiments import run_sweep
from depthlab.experiments.executors import InProcess, LocalPool, compute_point
from depthlab.experiments.progress import SweepProgress
from depthlab.experiments.sweep import SweepInterrupted

RAW = {"data": {"name": "clusters", "n": 120, "options": {"d": 4, "n_classes": 2}},
       "model": {"sizes": ["auto", 4, "auto"]}, "train": {"lr": 0.05, "epochs": 1},
       "probes": {"every": 0}, "sweep": {"train.seed": [0, 1]}}
BEAT = re.compile(r"^sweep: (\d+) points? running \(the longest for \d+ s\); (\d+)/(\d+) done$")
SAFETY_S = 20.0  # only if no heartbeat ever comes (the code before the fix)


def statuses(out) -> list[str]:
    conn = sqlite3.connect(out / "depthlab.db")
    try:
        return sorted(r[0] for r in conn.execute("SELECT status FROM runs"))
    finally:
        conn.close()


@pytest.fixture
def fast_beat(monkeypatch):
    # raising=False: the code before the fix has no HEARTBEAT_S; its test then fails on the
    # lines printed, not here
    monkeypatch.setattr(sweep_progress, "HEARTBEAT_S", 0.05, raising=False)


class Lines:
    """The sweep's echo: keeps its lines; ``beat`` is set at the first heartbeat line."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.beat = threading.Event()

    def __call__(self, line: str) -> None:
        self.lines.append(line)
        if BEAT.match(line):
            self.beat.set()

    def beats(self) -> list[str]:
        return [line for line in self.lines if BEAT.match(line)]


def test_a_slow_point_in_this_process_shows_a_heartbeat(tmp_path, fast_beat):
    echo = Lines()
    seen = []

    def slow(task):
        seen.append(echo.beat.wait(SAFETY_S))  # "preparing its data" until a heartbeat
        return compute_point(task)

    res = run_sweep(RAW, tmp_path / "o", executor=InProcess(slow), echo=echo)
    assert seen == [True, True], echo.lines
    beats = echo.beats()
    assert beats, echo.lines
    n, done, total = BEAT.match(beats[0]).groups()
    assert (n, total) == ("1", "2") and done in {"0", "1"}  # one point at a time here
    assert res.count("finished") == 2 and statuses(tmp_path / "o") == ["finished"] * 2
    assert not [t for t in threading.enumerate() if t.name == "depthlab-sweep-heartbeat"]


def waits_for_go(task):
    """A worker's point: waits until the file ``$SWEEPBEAT_GO`` exists (the client writes it
    once it printed a heartbeat), then computes."""
    go, t0 = os.environ["SWEEPBEAT_GO"], time.monotonic()
    while not os.path.exists(go) and time.monotonic() - t0 < SAFETY_S:
        time.sleep(0.02)
    return compute_point(task)


def test_slow_points_of_a_process_pool_show_how_many_run(tmp_path, fast_beat):
    go = tmp_path / "go"
    echo = Lines()

    def say(line: str) -> None:
        echo(line)
        if echo.beat.is_set():
            go.touch()

    env = {**ENV, "PYTHONPATH": os.path.dirname(__file__), "SWEEPBEAT_GO": str(go)}
    res = run_sweep(RAW, tmp_path / "o", echo=say,
                    executor=LocalPool(2, compute=waits_for_go, env=env))
    beats = echo.beats()
    assert beats, echo.lines
    # two workers, two points: both running (at most the pool's 2, though 4 may be queued)
    assert BEAT.match(beats[0]).groups() == ("2", "0", "2"), beats
    assert res.count("finished") == 2 and statuses(tmp_path / "o") == ["finished"] * 2


def test_a_quiet_sweep_starts_no_heartbeat(tmp_path, fast_beat):
    names = []

    def slow(task):
        time.sleep(0.3)  # several heartbeat periods (0.05 s): no thread to print them
        names.extend(t.name for t in threading.enumerate())
        return compute_point(task)

    res = run_sweep(RAW, tmp_path / "o", executor=InProcess(slow), echo=None)
    assert res.count("finished") == 2
    assert names and "depthlab-sweep-heartbeat" not in names


def test_ctrl_c_in_a_slow_point_stops_the_sweep_and_its_heartbeat(tmp_path, fast_beat):
    echo = Lines()

    def interrupted(task):
        assert echo.beat.wait(SAFETY_S)
        raise KeyboardInterrupt

    with pytest.raises(SweepInterrupted):
        run_sweep(RAW, tmp_path / "o", executor=InProcess(interrupted), echo=echo)
    assert echo.beats()
    assert not [t for t in threading.enumerate() if t.name == "depthlab-sweep-heartbeat"]


def test_heartbeat_only_after_a_silence_while_points_run():
    now = [0.0]
    lines: list[str] = []
    prog = SweepProgress(3, lines.append, clock=lambda: now[0], slots=2)
    prog.started()
    for rid in ("a", "b", "c"):
        prog.sent(rid)
    now[0] = 4.9
    assert prog.beat(5.0) is None  # a point finishing within 5 s: nothing
    prog.returned("a")
    prog.point("a", "seed=0", "finished", {}, None)
    now[0] = 9.0
    assert prog.beat(5.0) is None  # 4.1 s since the last line
    now[0] = 10.0
    assert prog.beat(5.0) == "sweep: 2 points running (the longest for 10 s); 1/3 done"
    now[0] = 12.0
    assert prog.beat(5.0) is None  # the heartbeat is a line too
    prog.returned("b")
    prog.returned("c")
    now[0] = 30.0
    assert prog.beat(5.0) is None  # nothing running
    assert lines[-1].startswith("sweep: 2 points running") and len(lines) == 2
