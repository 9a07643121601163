"""The test session's shared work (tests/helpers/background.py) under pytest-xdist (round 38:
``make test`` runs the suite in one worker per core). The quick reproductions are computed
once for the whole session, so a worker that needs a run another process claimed waits for its
``NAME.pkl``. Each test failed before the fix it names."""

from __future__ import annotations

import pickle
import signal
import subprocess
import sys
import time

import pytest
from helpers import background


@pytest.fixture
def folder(tmp_path, monkeypatch):
    """A session folder of this process alone (``quick`` finds its runs there)."""
    monkeypatch.setattr(background, "_folder", tmp_path)
    monkeypatch.setattr(background, "_results", {})
    monkeypatch.setattr(background, "_plan", ["one", "two"])
    monkeypatch.setattr(background, "_proc", None)  # a worker: the controller started it
    computed: list[str] = []

    def compute(name):
        computed.append(name)
        return f"run {name}"

    monkeypatch.setattr(background, "compute", compute)
    old = signal.signal(signal.SIGALRM, _hung)
    signal.alarm(20)
    try:
        yield tmp_path, computed
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _hung(signum, frame):
    raise AssertionError("quick() waited for a run nobody computes")


def _ended_unreaped() -> int:
    """The id of a child process that has ended and is not reaped yet (a zombie: its id is
    still taken, as the background process's is until the controller's ``stop``)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with open(f"/proc/{proc.pid}/stat") as fh:
            if fh.read().rsplit(")", 1)[1].split()[0] == "Z":
                return proc.pid
        time.sleep(0.01)
    raise AssertionError("the child did not end")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_run_claimed_by_a_process_that_ended_is_computed_by_the_worker_that_needs_it(folder):
    # a pytest-xdist worker has no handle on the background process (its controller started
    # it): quick() called `_proc.poll()` on None (AttributeError); and a run claimed by a
    # process that then ended without it (killed, or failed) was waited for forever
    tmp, computed = folder
    (tmp / "one.claim").write_text(str(_ended_unreaped()))
    assert background.quick("one") == "run one"
    assert computed == ["one"]


def test_a_run_computed_by_a_worker_is_pickled_for_the_others(folder):
    # the worker that claimed a run kept it to itself: another worker that needed it waited
    # until the background process ended, then computed it a second time
    tmp, computed = folder
    assert background.quick("two") == "run two"
    with open(tmp / "two.pkl", "rb") as f:
        assert pickle.load(f) == "run two"
    assert (tmp / "two.claim").read_text().strip().isdigit()  # who computes it
    background._results.clear()
    assert background.quick("two") == "run two"
    assert computed == ["two"]  # read back, not computed again
