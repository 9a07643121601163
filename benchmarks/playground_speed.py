"""Speed of ``depthlab playground`` over a real server and WebSocket (no browser).

1. updates per second while a 20-layer, width-64 tanh net trains on spirals (target >= 10);
2. with the 1000-layer residual + batch-norm preset training, the time from sending ``pause``
   to the server's ``paused`` answer, and from ``play`` to ``running`` (target < 200 ms).

    python benchmarks/playground_speed.py [--seconds 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from websockets.sync.client import connect

from depthlab.playground.presets import PRESETS
from depthlab.playground.server import Background


def wait(ws, kind: str, timeout: float = 120.0, **match) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        m = json.loads(ws.recv(timeout=max(0.01, deadline - time.monotonic())))
        if m["type"] == "error":
            raise RuntimeError(m["message"])
        if m["type"] == kind and all(m.get(k) == v for k, v in match.items()):
            return m


def updates_per_second(url: str, seconds: float) -> tuple[float, int]:
    with connect(url) as ws:
        ws.send(json.dumps({"cmd": "setup", "query": {"model.depth": "20",
                                                      "model.width": "64"}}))
        wait(ws, "update")
        ws.send(json.dumps({"cmd": "play"}))
        wait(ws, "update")
        t0, n, last = time.monotonic(), 0, None
        while time.monotonic() - t0 < seconds:
            last = wait(ws, "update")
            n += 1
        return n / (time.monotonic() - t0), last["step"]


def command_latency(url: str, rounds: int) -> dict[str, list[float]]:
    query = {k: str(v).lower() if isinstance(v, bool) else str(v)
             for k, v in PRESETS["residual"]["set"].items()}
    out: dict[str, list[float]] = {"pause": [], "play": []}
    with connect(url) as ws:
        ws.send(json.dumps({"cmd": "setup", "query": query, "play": True}))
        wait(ws, "update")
        for _ in range(rounds):
            time.sleep(0.5)
            for cmd, state in (("pause", "paused"), ("play", "running")):
                t = time.perf_counter()
                ws.send(json.dumps({"cmd": cmd}))
                wait(ws, "state", state=state)
                out[cmd].append(1000 * (time.perf_counter() - t))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    with Background() as bg:
        url = bg.url.replace("http://", "ws://") + "ws"
        ups, steps = updates_per_second(url, args.seconds)
        print(f"20 x 64 tanh on spirals: {ups:.1f} updates/s ({steps} steps in "
              f"{args.seconds:g} s)")
        lat = command_latency(url, args.rounds)
        for cmd, ms in lat.items():
            print(f"1000-layer residual + BN training: {cmd} answered in median "
                  f"{statistics.median(ms):.1f} ms (max {max(ms):.1f} ms, {len(ms)} tries)")


if __name__ == "__main__":
    main()
