"""Round 29 (daskhard29): sweeps on Dask and the local pool, hardening. Each test failed
before the fix it names."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from helpers.cli import ENV

_STOPPED_SCHEDULER = """\
import os, signal, sys, time
from depthlab.experiments import run_sweep
from depthlab.experiments.executors import ClusterError
from depthlab.experiments.executors.dask import DaskExecutor

address, pid, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
raw = {"data": {"name": "clusters", "n": 60}, "model": {"sizes": ["auto", 4, "auto"]},
       "train": {"epochs": 1}, "probes": {"every": 0}, "sweep": {"train.seed": [0, 1, 2]}}
stopped = []

def echo(line):
    if "running on" in line:  # connected: the scheduler is stopped (SIGSTOP) from here on
        os.kill(pid, signal.SIGSTOP)
        stopped.append(time.monotonic())

try:
    run_sweep(raw, out, executor=DaskExecutor(address, scheduler_timeout=2), echo=echo)
    print("RETURNED")
except ClusterError as e:
    print(f"CLUSTERERROR {time.monotonic() - stopped[0]:.1f} {e}")
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_stopped_scheduler_fails_the_sweep_within_its_bound(tmp_path):
    """A remote scheduler that stops answering mid-sweep (SIGSTOP, a hung or frozen head
    node: its TCP connection stays open) kept the sweep waiting without end (in
    ``DaskExecutor.threads``' question and the result wait; killed by a 150 s timeout).
    Now: ``ClusterError`` naming the scheduler after ``scheduler_timeout`` seconds of
    silence."""
    pytest.importorskip("distributed")
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    sched = subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
         "--port", str(port), "--dashboard-address", "127.0.0.1:0"], env=ENV,
        start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:  # the scheduler listens
            try:
                socket.create_connection(("127.0.0.1", port), 1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the scheduler did not start"
                time.sleep(0.2)
        try:
            done = subprocess.run([sys.executable, "-c", _STOPPED_SCHEDULER, address,
                                   str(sched.pid), str(tmp_path / "out")], env=ENV,
                                  capture_output=True, text=True, timeout=90)
        except subprocess.TimeoutExpired:
            pytest.fail("the sweep still waited on the stopped scheduler after 90 s")
        lines = done.stdout.strip().splitlines()
        assert lines and lines[-1].startswith("CLUSTERERROR"), (done.stdout, done.stderr[-2000:])
        _, seconds, message = lines[-1].split(" ", 2)
        assert f"the Dask scheduler at {address} has not answered for 2 s" in message
        assert "run the same command again" in message
        assert float(seconds) < 30
    finally:
        os.killpg(sched.pid, signal.SIGCONT)
        os.killpg(sched.pid, signal.SIGKILL)
        sched.wait(timeout=30)
