"""Overhead of ``depthlab.torch.Watch`` on a PyTorch training loop.

Two models: a ResNet-18 (torchvision layout from :mod:`depthlab.torch.zoo`, batch 32, 3x32x32
inputs, 10 classes) and the 784-100-100-100-10 ReLU MLP of Cockpit's CPU measurement (batch
128). One step = ``zero_grad``, forward, cross-entropy, backward, (``watch.step(loss)``), SGD
update. Four settings per model, each with its own model and optimizer: no Watch (baseline),
``Watch(every=10)`` and ``Watch(every=1)`` with Watch's defaults (no percentiles), and
``Watch(every=10, percentiles=PERCENTILES)`` (``pre_pK``/``act_pK``: a selection over every
layer output on recorded steps), and a control: a second model without a Watch, timed like the
others against the baseline. The control measures the benchmark's resolution: two identical
unwatched loops differ by a few percent in one run (where each model's tensors lie in memory,
which block follows which), so a Watch overhead within the control's range of 0 is not
resolved. The settings are timed in blocks of steps (200 for the MLP,
40 for ResNet-18: multiples of 10, so every block records the same share of steps), the blocks
interleaved round after round so that a change of the shared machine's load hits all settings
alike; each round's overhead is ``time(setting) / time(baseline) - 1``. The table gives the
median and the range over rounds, at one thread and at all cores on the CPU, and on CUDA when
present (synchronised around each block). Beside the wall-clock overhead the table gives the
overhead in the process's CPU time, which other processes on a shared machine do not inflate.

Published references (Cockpit, Schneider et al. 2021, Fig. 8/9): 1.06x run time when tracking
every 16 steps on a GPU CNN; 63x (``+6200%``) every step for its full configuration on a CPU
MNIST MLP. Goals here: every 10 steps <= 5%, every step <= 50%.

On the CPU the statistics come from depthlab's compiled one-pass kernels when Numba is installed
(``depthlab[fast]``; the header says which path ran, ``DEPTHLAB_PROBE_KERNELS=numpy`` forces the
torch operations that CUDA uses).

Usage: ``python benchmarks/torch_probe_overhead.py [--rounds 15] [--steps N]
[--only cpu1|cpu|cuda] [--cases mlp,resnet18] [--json FILE]``; ``benchmarks/watch_readme.py``
renders the README block from the JSON file.

``--ab OLD_SRC [--ab-runs 6]`` instead: an A/B of two trees of depthlab in one run. The
benchmark (with the other options given, e.g. ``--only cpu1 --cases mlp --rounds 8``) runs
``2 x --ab-runs`` times in fresh processes, alternately with ``PYTHONPATH=OLD_SRC`` and with
this checkout's ``src``, the order alternating per pair (so a change of the shared machine's
load hits both alike); each process's overheads are its own ratios to its own baseline. Per
setting the table gives the median and range over all rounds of all runs of each tree, in the
process's CPU time and wall time, and ``new - old`` of the medians (percentage points): e.g.
``python benchmarks/torch_probe_overhead.py --ab /tmp/base51/src --only cpu1 --cases mlp``.

``--breakdown [CYCLES]`` instead: where a Watch's time goes on the CPU at one thread. For
``every=10`` and ``every=1``, beside a baseline, cycles of ``every`` steps interleaved (order
alternating); per step position (0: the recorded step; ``every - 1``: the step whose
``watch.step`` arms the hooks and copies the weights for the update ratio) the median over cycles
of each phase's thread CPU time (``time.thread_time_ns``: what other processes on a shared
machine do not add) minus the baseline's at that position: ``fwd`` (``zero_grad``, forward,
loss; the forward hooks), ``bwd`` (backward; the gradient hooks), ``watch`` (``watch.step``:
the record's host pass, arming), ``opt`` (``opt.step``), and the step's whole difference.
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
from pathlib import Path

import torch
from torch import nn

from depthlab.probes import accel
from depthlab.probes.stats import PERCENTILES
from depthlab.torch import Watch, zoo

STEPS = {"mlp": 200, "resnet18": 40}
SETTINGS = (("baseline", None, ()), ("every 10", 10, ()), ("every step", 1, ()),
            ("every 10 + percentiles", 10, PERCENTILES), ("control: no Watch", None, ()))
COCKPIT = {"every 10": "Cockpit: 1.06x every 16 steps (GPU CNN); goal <= 5%",
           "every step": "Cockpit: 63x every step (CPU MLP); goal <= 50%",
           "every 10 + percentiles": "pre_pK/act_pK too (not Watch's default)",
           "control: no Watch": "a second unwatched model: the benchmark's resolution"}


def _case(name: str, device: str):
    g = torch.Generator().manual_seed(0)
    if name == "resnet18":
        model = zoo.resnet18(num_classes=10)
        x = torch.randn(32, 3, 32, 32, generator=g)
        y = torch.randint(0, 10, (32,), generator=g)
    else:
        model = zoo.mlp([784, 100, 100, 100, 10])
        x = torch.randn(128, 784, generator=g)
        y = torch.randint(0, 10, (128,), generator=g)
    return model.to(device), x.to(device), y.to(device)


class Runner:
    """One setting: its own model, optimizer and (maybe) Watch, stepping on a fixed batch."""

    def __init__(self, case: str, device: str, every: int | None, percentiles) -> None:
        torch.manual_seed(0)
        self.model, self.x, self.y = _case(case, device)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9)
        self.watch = Watch(self.model, every=every, percentiles=percentiles) if every else None
        self.device = device

    def run(self, steps: int) -> tuple[float, float]:
        """(wall seconds, CPU seconds of this process) for ``steps`` steps."""
        loss_fn = nn.functional.cross_entropy
        if self.device == "cuda":
            torch.cuda.synchronize()
        c0 = time.process_time()
        t0 = time.perf_counter()
        for _ in range(steps):
            self.opt.zero_grad()
            loss = loss_fn(self.model(self.x), self.y)
            loss.backward()
            if self.watch is not None:
                self.watch.step(loss)
            self.opt.step()
        if self.device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0, time.process_time() - c0


def measure(case: str, device: str, rounds: int, steps: int
            ) -> dict[str, list[tuple[float, float]]]:
    runners = {label: Runner(case, device, every, pct) for label, every, pct in SETTINGS}
    for r in runners.values():  # warm-up: allocator, first-record discovery, caches
        r.run(10)
    times: dict[str, list[tuple[float, float]]] = {label: [] for label in runners}
    for k in range(rounds):
        order = list(runners) if k % 2 == 0 else list(reversed(runners))
        for label in order:
            times[label].append(runners[label].run(steps))
    for r in runners.values():
        if r.watch is not None:
            r.watch.close()
    return times


def _overheads(times, base, k: int) -> list[float]:
    """Per-round overhead in percent: ``100 (time / baseline time - 1)``."""
    return [100.0 * (t[k] / b[k] - 1.0) for t, b in zip(times, base)]


def _overhead(times, base, k: int) -> str:
    over = _overheads(times, base, k)
    return f"{statistics.median(over):+7.1f}% ({min(over):+.1f}% .. {max(over):+.1f}%)"


def report(case: str, where: str, times: dict[str, list[tuple[float, float]]],
           steps: int) -> None:
    """Median and range over rounds of the overhead in wall time and, beside it, in the
    process's CPU time (robust to other processes on a shared machine; at one thread it is
    the work added, with several threads it also counts spinning workers)."""
    base = times["baseline"]
    wall = statistics.median(t[0] for t in base)
    cpu = statistics.median(t[1] for t in base)
    print(f"{case:9s} {where:14s} baseline {1e3 * wall / steps:8.2f} ms/step wall, "
          f"{1e3 * cpu / steps:8.2f} ms/step CPU")
    for label, _, _ in SETTINGS[1:]:
        print(f"{'':9s} {'':14s} {label:22s} wall {_overhead(times[label], base, 0)}  "
              f"CPU {_overhead(times[label], base, 1)}   [{COCKPIT[label]}]")


PHASES = ("fwd", "bwd", "watch", "opt", "step")


def _cycle(r: Runner, every: int, sink: list | None) -> None:
    """``every`` steps of ``r``; with ``sink`` (per position, per phase a list) the thread CPU
    time of each phase is appended."""
    clock = time.thread_time_ns
    for pos in range(every):
        t0 = clock()
        r.opt.zero_grad()
        loss = nn.functional.cross_entropy(r.model(r.x), r.y)
        t1 = clock()
        loss.backward()
        t2 = clock()
        if r.watch is not None:
            r.watch.step(loss)
        t3 = clock()
        r.opt.step()
        t4 = clock()
        if sink is not None:
            for k, v in enumerate((t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0)):
                sink[pos][k].append(v)


def breakdown(case: str, cycles: int) -> None:
    """Print the per-phase CPU cost of ``Watch(every=10)`` and ``Watch(every=1)`` over a
    baseline, per step position (see the module docstring's ``--breakdown``)."""
    print(f"{case}: median thread CPU time per phase minus the baseline's (us), {cycles} "
          f"interleaved cycles; load average {os.getloadavg()[0]:.1f}")
    for every in (10, 1):
        runners = {"baseline": Runner(case, "cpu", None, ()),
                   "watch": Runner(case, "cpu", every, ())}
        times = {k: [[[] for _ in PHASES] for _ in range(every)] for k in runners}
        for _ in range(max(3, 30 // every)):  # warm-up: kernels, first record, allocator
            for r in runners.values():
                _cycle(r, every, None)
        for c in range(cycles * (10 // every)):
            for key in (runners if c % 2 == 0 else list(runners)[::-1]):
                _cycle(runners[key], every, times[key])
        runners["watch"].watch.close()
        print(f"  every={every:<3d}{'position':>9s}" + "".join(f"{p:>9s}" for p in PHASES))
        base = [[statistics.median(v) / 1e3 for v in pos] for pos in times["baseline"]]
        total = 0.0
        for pos in range(every):
            d = [statistics.median(v) / 1e3 - b
                 for v, b in zip(times["watch"][pos], base[pos])]
            total += d[-1]
            print(f"  {'':12s}{pos:>9d}" + "".join(f"{v:+9.0f}" for v in d))
        whole = sum(b[-1] for b in base)
        print(f"  {'':12s}{'cycle':>9s}{total:+45.0f} us ({100 * total / whole:+.1f}% of the "
              f"baseline's {whole:.0f} us)")


def ab(old: str, runs: int, argv: list[str]) -> None:
    """The A/B of ``--ab`` (module docstring): ``argv`` are the benchmark's other options."""
    trees = {"old": str(Path(old).resolve()), "new": str(Path(__file__).resolve().parents[1]
                                                          / "src")}
    got: dict[tuple, dict[str, list[tuple[float, float]]]] = {}
    for k in range(runs):
        for label in (("old", "new") if k % 2 == 0 else ("new", "old")):
            with tempfile.TemporaryDirectory() as tmp:
                out = os.path.join(tmp, "ab.json")
                env = {**os.environ, "PYTHONPATH": trees[label]}
                subprocess.run([sys.executable, __file__, *argv, "--json", out], env=env,
                               check=True, stdout=subprocess.DEVNULL)
                with open(out) as fh:
                    data = json.load(fh)
            for r in data["results"]:
                for setting, over in r["overhead_pct"].items():
                    rows = got.setdefault((r["case"], r["where"], setting), {"old": [], "new": []})
                    rows[label] += list(zip(over["cpu"], over["wall"]))
            print(f"  run {k + 1}/{runs} {label} done; load average {os.getloadavg()[0]:.1f}",
                  flush=True)
    print(f"A/B: old {trees['old']} vs new {trees['new']}; {runs} runs each, alternating; "
          "overhead per round over its own process's baseline: median (range) over all rounds")
    for (case, where, setting), rows in got.items():
        line = f"{case:9s} {where:14s} {setting:22s}"
        meds = {}
        for label in ("old", "new"):
            cpu = [v[0] for v in rows[label]]
            wall = [v[1] for v in rows[label]]
            meds[label] = (statistics.median(cpu), statistics.median(wall))
            line += (f"  {label} CPU {meds[label][0]:+6.1f}% ({min(cpu):+.1f}..{max(cpu):+.1f}) "
                     f"wall {meds[label][1]:+6.1f}%")
        line += (f"  new-old CPU {meds['new'][0] - meds['old'][0]:+.1f} pt, wall "
                 f"{meds['new'][1] - meds['old'][1]:+.1f} pt")
        print(line)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--steps", type=int, default=None,
                    help="steps per block, a multiple of 10 (default: mlp 200, resnet18 40)")
    ap.add_argument("--only", choices=("cpu1", "cpu", "cuda"), default=None)
    ap.add_argument("--cases", default="mlp,resnet18")
    ap.add_argument("--json", default=None, help="write the raw results to this file")
    ap.add_argument("--machine", default=None,
                    help="words naming the machine, for the README (e.g. 'a lent H200 machine')")
    ap.add_argument("--breakdown", type=int, nargs="?", const=200, default=None,
                    metavar="CYCLES", help="instead: per-phase CPU cost of every 10 and every "
                    "step at 1 thread, per step position (default 200 cycles)")
    ap.add_argument("--ab", default=None, metavar="OLD_SRC",
                    help="instead: A/B of the src tree OLD_SRC against this checkout's, each run "
                    "--ab-runs times in alternating fresh processes with the other options")
    ap.add_argument("--ab-runs", type=int, default=6)
    args = ap.parse_args()
    if args.ab is not None:
        if not os.path.isdir(os.path.join(args.ab, "depthlab")):
            ap.error(f"--ab must be a src folder holding the depthlab package, got {args.ab!r}")
        if args.ab_runs < 1:
            ap.error(f"--ab-runs must be a positive number of runs, got {args.ab_runs}")
        argv, rest = [], list(sys.argv[1:])  # the other options, passed on
        while rest:
            a = rest.pop(0)
            if a in ("--ab", "--ab-runs", "--json"):
                rest.pop(0)
            elif not a.startswith(("--ab=", "--ab-runs=", "--json=")):
                argv.append(a)
        ab(args.ab, args.ab_runs, argv)
        return
    if args.breakdown is not None:
        if args.breakdown < 1:
            ap.error(f"--breakdown must be a positive number of cycles, got {args.breakdown}")
        torch.set_num_threads(1)
        for case in args.cases.split(","):
            breakdown(case, args.breakdown)
        return
    if args.steps is not None and (args.steps < 10 or args.steps % 10):
        ap.error("--steps must be a positive multiple of 10")
    cores = os.cpu_count() or 1
    wheres = []
    if args.only in (None, "cpu1"):
        wheres.append(("cpu", 1, "cpu, 1 thread"))
    if args.only in (None, "cpu"):
        wheres.append(("cpu", cores, f"cpu, {cores} threads"))
    if args.only in (None, "cuda") and torch.cuda.is_available():
        wheres.append(("cuda", cores, f"cuda ({torch.cuda.get_device_name(0)[:20]})"))
    kernels = accel.warm_up()["kernels"] if accel.available() else None
    path = "compiled CPU kernels (Numba)" if kernels is not None else "torch operations"
    load_before = list(os.getloadavg())
    print(f"torch {torch.__version__}; {args.rounds} interleaved rounds per setting; "
          "overhead = time / baseline time - 1 per round: median (range); CPU statistics: "
          f"{path}; load average {', '.join(f'{v:.1f}' for v in load_before)} (1, 5, 15 min), "
          f"{cores} cores")
    results = []
    for device, threads, where in wheres:
        torch.set_num_threads(threads)
        for case in args.cases.split(","):
            steps = args.steps or STEPS[case]
            times = measure(case, device, args.rounds, steps)
            report(case, where, times, steps)
            base = times["baseline"]
            results.append({
                "case": case, "where": where, "steps": steps,
                "baseline_ms": {"wall": 1e3 * statistics.median(t[0] for t in base) / steps,
                                "cpu": 1e3 * statistics.median(t[1] for t in base) / steps},
                "overhead_pct": {label: {"wall": _overheads(times[label], base, 0),
                                         "cpu": _overheads(times[label], base, 1)}
                                 for label, _, _ in SETTINGS[1:]}})
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"torch": torch.__version__, "rounds": args.rounds, "cores": cores,
                       "only": args.only, "machine": args.machine,
                       "cpu_statistics": path, "load_before": load_before,
                       "load_after": list(os.getloadavg()), "results": results}, fh, indent=1)


if __name__ == "__main__":
    main()
