"""Reading the playground's websocket in tests."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any


def receive_matching(ws: Any, predicate: Callable[[dict], bool], timeout: float = 20.0) -> dict:
    """The first message (JSON) that satisfies ``predicate`` within ``timeout`` seconds; the
    others are skipped, error messages included (a test may wait for one)."""
    deadline = time.monotonic() + timeout
    while True:
        m = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
        if predicate(m):
            return m
