"""Sweep throughput: the local process pool against Dask ``LocalCluster`` with the same workers.

    python benchmarks/sweep_scaling.py [--points 400] [--workers 2] [--rounds 3] [--json PATH]

Each round runs the same ``--points`` tiny points (clusters data, one hidden layer of 8 units,
one epoch, no probes) through ``LocalPool(W)`` and through ``DaskExecutor("local:W")``, in
alternating order (the machine may be shared and noisy: rounds are interleaved and medians and
ranges reported). Every record is committed to a fresh store by the client, as in a real sweep.
Each measurement runs in a fresh Python process (``--measure KIND``), timed as a user of
``depthlab sweep`` waits for it: from before the executor is made (the depthlab modules both
need already imported) until :func:`run_points` returns, so it includes everything that
differs between the two: importing Dask in the client, starting the cluster or the pool's
processes (and their imports), the points, and stopping the workers again.

First, two costs without training: expanding a ``--grid``-point grid lazily and checking
each point against the store (what the client does before submitting), with the peak memory,
and Dask's own cost per point with no-op points (submission, scheduling, result transfer).

Reported per executor:

* ``points/s``: points divided by the wall time, start-up and shutdown included, and the
  steady rate: results 10%..100% over the time between them; ``first result s``: the time
  until the first record came back (the start-up a user sees);
* ``client commit ms/point``: the client's time in ``done`` (one SQLite transaction per run),
  serial by design (single writer);
* ``overhead ms/point`` = W × (1/steady_dask − 1/steady_local): worker time each point costs
  on Dask beyond the local pool (scheduling, serialising the record, the extra hop);
* a projection for 100,000 points on 50 machines of ``W`` cores: compute
  ``N × t_point / (50 W)`` with ``t_point`` = W / (steady local points/s), bounded below by the
  serial parts, scheduler ``N × overhead / (50 W)`` and client commits ``N × t_commit``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from depthlab.experiments import run_points  # noqa: E402
from depthlab.experiments.executors import Executor, LocalPool, Task  # noqa: E402
from depthlab.experiments.executors.dask import DaskExecutor  # noqa: E402
from depthlab.experiments.grid import iter_points  # noqa: E402

BASE = {"data": {"name": "clusters", "n": 200, "options": {"d": 8, "n_classes": 2}},
        "model": {"sizes": ["auto", 8, "auto"]},
        "train": {"lr": 0.05, "epochs": 1, "batch_size": 32}, "probes": {"every": 0}}


class Timed(Executor):
    """Wraps an executor; records when each result arrived and the client's time in ``done``."""

    def __init__(self, inner: Executor) -> None:
        self.inner = inner
        self.description = inner.description
        self.arrivals: list[float] = []
        self.commit_s = 0.0
        self.start_s = self.close_s = 0.0
        self.t0 = 0.0

    def start(self) -> None:
        t = time.perf_counter()
        self.inner.start()
        self.start_s = time.perf_counter() - t

    def close(self) -> None:
        t = time.perf_counter()
        self.inner.close()
        self.close_s = time.perf_counter() - t

    def expect(self, total: int | None) -> None:
        self.inner.expect(total)

    def run(self, tasks: Iterator[Task], done) -> None:
        def timed(task: Task, rec) -> None:
            t = time.perf_counter()
            done(task, rec)
            self.commit_s += time.perf_counter() - t
            self.arrivals.append(t)

        self.t0 = time.perf_counter()
        self.inner.run(tasks, timed)


def one(kind: str, n: int, workers: int, epochs: int = 1, rows: int = 200,
        width: int = 8) -> dict[str, float]:
    """One measurement in this process (meant to be a fresh one: see :func:`fresh`)."""
    raw = {**BASE, "train": {**BASE["train"], "epochs": epochs},
           "data": {**BASE["data"], "n": rows}, "model": {"sizes": ["auto", width, "auto"]},
           "sweep": {"train.seed": list(range(n))}}
    with tempfile.TemporaryDirectory() as d:
        begin, cpu = time.perf_counter(), time.process_time()
        ex = Timed(LocalPool(workers) if kind == "local" else DaskExecutor(f"local:{workers}"))
        res = run_points(iter_points(raw), d, sweep="bench", executor=ex, echo=None, total=n)
        wall, cpu = time.perf_counter() - begin, time.process_time() - cpu
    assert res.count("finished") == n, res.counts
    k = max(1, n // 10)
    steady = (n - k) / (ex.arrivals[-1] - ex.arrivals[k - 1])
    return {"wall_s": wall, "points_per_s": n / wall, "steady_points_per_s": steady,
            "commit_ms": 1e3 * ex.commit_s / n, "startup_s": ex.start_s,
            "first_s": ex.arrivals[0] - begin, "close_s": ex.close_s,
            "client_cpu_ms": 1e3 * cpu / n}


def fresh(kind: str, n: int, workers: int, epochs: int, rows: int, width: int
          ) -> dict[str, float]:
    """:func:`one` in a fresh Python process (what a ``depthlab sweep`` command pays)."""
    cmd = [sys.executable, os.path.abspath(__file__), "--measure", kind, "--points", str(n),
           "--workers", str(workers), "--epochs", str(epochs), "--rows", str(rows),
           "--width", str(width)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{kind} measurement failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def noop(task: Task):
    """A point that computes nothing: its record only (for the scheduler's own cost)."""
    from depthlab.experiments.executors import crash_record

    return crash_record(task, "no-op")


def scheduler_only(n: int, workers: int) -> float:
    """Seconds per point of Dask with no-op points (submission, scheduling, result transfer)
    and a client that commits nothing."""
    raw = {**BASE, "sweep": {"train.seed": list(range(n))}}
    tasks = (Task(p.id, p.name, p.config, "bench") for p in iter_points(raw))
    with DaskExecutor(f"local:{workers}", compute=noop) as ex:
        ex.expect(n)
        t = time.perf_counter()
        ex.run(tasks, lambda _task, _rec: None)
        return (time.perf_counter() - t) / n


def expansion(n: int) -> tuple[float, float, float]:
    """Wall and CPU seconds to expand an ``n``-point grid lazily and check each point against a
    store (what the client does before submitting), and the peak traced memory (MB) of doing
    so for ``n / 5`` points (CPU time is what an idle machine would take)."""
    import tracemalloc

    from depthlab.experiments import Store

    raw = {**BASE, "sweep": {"train.seed": list(range(n // 10)),
                             "train.lr": [0.01 * (i + 1) for i in range(10)]}}
    with tempfile.TemporaryDirectory() as d, Store(d) as store:
        t, c = time.perf_counter(), time.process_time()
        k = sum(1 for p in iter_points(raw) if not store.has_run(p.id))
        seconds, cpu = time.perf_counter() - t, time.process_time() - c
        tracemalloc.start()
        sum(1 for p in iter_points(raw, limit=n // 5) if not store.has_run(p.id))
        peak = tracemalloc.get_traced_memory()[1] / 1e6
        tracemalloc.stop()
    assert k == n
    return seconds, cpu, peak


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):8.2f} [{min(values):.2f}..{max(values):.2f}]"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=400)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=1,
                    help="epochs per point (1: tiny points; more shows the overhead amortised)")
    ap.add_argument("--rows", type=int, default=200, help="data rows per point")
    ap.add_argument("--width", type=int, default=8, help="hidden units per point")
    ap.add_argument("--skip-costs", action="store_true",
                    help="skip the expansion and no-op scheduling measurements")
    ap.add_argument("--grid", type=int, default=10_000,
                    help="points of the expansion and no-op scheduling measurements")
    ap.add_argument("--json", help="write the measurements as JSON here")
    ap.add_argument("--measure", choices=("local", "dask"),
                    help="one measurement in this process; prints its JSON (used internally)")
    args = ap.parse_args(argv)
    n, w = args.points, args.workers
    if args.measure:
        print(json.dumps(one(args.measure, n, w, args.epochs, args.rows, args.width)))
        return 0
    exp_s = exp_cpu = exp_mb = sched = float("nan")
    if not args.skip_costs:
        exp_s, exp_cpu, exp_mb = expansion(args.grid)
        print(f"expanding a {args.grid:,}-point grid lazily and checking the store: "
              f"{exp_s:.2f}s wall, {exp_cpu:.2f}s CPU ({1e3 * exp_s / args.grid:.2f} ms/point); "
              f"peak memory for {args.grid // 5:,} points {exp_mb:.2f} MB", flush=True)
        sched = scheduler_only(args.grid, w)
        print(f"Dask, {args.grid:,} no-op points on {w} workers: {1e3 * sched:.2f} ms/point "
              f"({1 / sched:.0f} points/s)", flush=True)
    runs: dict[str, list[dict[str, float]]] = {"local": [], "dask": []}
    for r in range(args.rounds):
        order = ("local", "dask") if r % 2 == 0 else ("dask", "local")
        for kind in order:
            m = fresh(kind, n, w, args.epochs, args.rows, args.width)
            runs[kind].append(m)
            print(f"round {r + 1} {kind:5s}: {m['points_per_s']:.1f} points/s "
                  f"(steady {m['steady_points_per_s']:.1f}), commit {m['commit_ms']:.2f} ms/pt, "
                  f"first result {m['first_s']:.2f}s, stop {m['close_s']:.2f}s", flush=True)
    med = {k: {q: statistics.median(m[q] for m in v) for q in v[0]} for k, v in runs.items()}
    ratios = [d["points_per_s"] / lo["points_per_s"] for d, lo in zip(runs["dask"], runs["local"])]
    steady_ratios = [d["steady_points_per_s"] / lo["steady_points_per_s"]
                     for d, lo in zip(runs["dask"], runs["local"])]
    overhead = [1e3 * w * (1 / d["steady_points_per_s"] - 1 / lo["steady_points_per_s"])
                for d, lo in zip(runs["dask"], runs["local"])]
    print(f"\n{n} points ({args.rows} rows, {args.width} hidden units, {args.epochs} epochs), "
          f"{w} workers, {args.rounds} interleaved rounds (median [min..max]):")
    for kind in ("local", "dask"):
        v = runs[kind]
        print(f"  {kind:5s} points/s {summary([m['points_per_s'] for m in v])}   steady "
              f"{summary([m['steady_points_per_s'] for m in v])}   commit ms/pt "
              f"{summary([m['commit_ms'] for m in v])}   first result s "
              f"{summary([m['first_s'] for m in v])}   stop s {summary([m['close_s'] for m in v])}")
    print(f"  dask / local throughput {summary(ratios)}  (steady {summary(steady_ratios)}; "
          "goal >= 0.9)")
    print(f"  overhead per point on Dask, ms of worker time {summary(overhead)}")
    machines, big = 50, 100_000
    t_point = w / med["local"]["steady_points_per_s"]
    t_over = max(statistics.median(overhead), 0.0) / 1e3
    compute = big * (t_point + t_over) / (machines * w)
    commits = big * med["dask"]["commit_ms"] / 1e3
    print(f"  projection, {big:,} such points on {machines} machines x {w} cores: compute "
          f"{compute:.0f}s, client commits {commits:.0f}s (serial) -> about "
          f"{max(compute, commits):.0f}s; per point {1e3 * t_point:.1f} ms compute + "
          f"{1e3 * t_over:.2f} ms Dask overhead")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"points": n, "workers": w, "runs": runs, "expansion_s": exp_s,
                       "expansion_cpu_s": exp_cpu,
                       "expansion_peak_mb": exp_mb, "noop_ms": 1e3 * sched, "ratios": ratios,
                       "steady_ratios": steady_ratios, "overhead_ms": overhead,
                       "projection_s": max(compute, commits)}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
