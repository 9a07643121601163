"""Wall-time checks that hold on a loaded machine: time a command from a line it prints, not
from its start (importing NumPy, pandas and SciPy alone took 12 s on a host running 16
processes on 2 cores, which a bound on the whole command counted as the product's delay)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from dataclasses import dataclass

from helpers.cli import ENV


@dataclass
class Timed:
    """A finished command: its exit status, its output, and the seconds from the first
    stdout line starting with ``mark`` to its exit (None: no such line)."""

    returncode: int
    stdout: str
    stderr: str
    after_mark: float | None


def timed_cli(*args, mark: str, timeout: float = 180) -> Timed:
    """``python -m depthlab ARGS`` in a subprocess (stdout unbuffered, so each line arrives
    when printed), timed from its first stdout line starting with ``mark``."""
    proc = subprocess.Popen([sys.executable, "-m", "depthlab", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**ENV, "PYTHONUNBUFFERED": "1"})
    lines: list[str] = []
    errs: list[str] = []
    seen: list[float] = []

    def read() -> None:
        for line in proc.stdout:
            if not seen and line.startswith(mark):
                seen.append(time.monotonic())
            lines.append(line)

    readers = [threading.Thread(target=read, daemon=True),
               threading.Thread(target=lambda: errs.append(proc.stderr.read()), daemon=True)]
    for reader in readers:
        reader.start()
    try:
        proc.wait(timeout=timeout)
        end = time.monotonic()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for reader in readers:
        reader.join(10)
    return Timed(proc.returncode, "".join(lines), "".join(errs), end - seen[0] if seen else None)
