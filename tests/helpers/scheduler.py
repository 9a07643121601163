"""A ``dask scheduler`` process on loopback for the tests that kill or stop it. It picks its
own port (``--port 0``) and says it: a port found free by the test and then given to the
scheduler could be taken meanwhile by another process of a busy host (a Dask worker of a
test running beside it), and the test would have talked to that one."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time

from helpers.cli import ENV


def start_scheduler(timeout: float = 120) -> tuple[subprocess.Popen, str]:
    """``(process, "tcp://127.0.0.1:PORT")`` of a new scheduler listening there (in its own
    process group: ``os.killpg(process.pid, ...)`` reaches it alone). Its log is read to the
    end in the background, so that it never blocks on a full pipe."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
         "--port", "0", "--dashboard-address", "127.0.0.1:0"], env=ENV,
        start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    found: list[str] = []
    log: list[str] = []
    ready = threading.Event()

    def read() -> None:
        for line in proc.stderr:
            if not found and (m := re.search(r"Scheduler at:\s*(tcp://127\.0\.0\.1:\d+)", line)):
                found.append(m.group(1))
                ready.set()
            elif not found:
                log.append(line)
        ready.set()  # the process ended

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + timeout
    while not ready.wait(0.2):
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise AssertionError(f"the scheduler did not start in {timeout:g} s: {log[-20:]}")
    if not found:
        proc.wait()
        raise AssertionError(f"the scheduler ended ({proc.returncode}): {''.join(log[-20:])}")
    return proc, found[0]
