"""The probe kernels of a git revision (default ``HEAD``) against the working tree's, in one
process: ``ProbeRecorder`` overhead on the networks of ``probe_overhead.py``, training-batch
mode, every statistic, ``every=10`` and ``every=1``.

The revision's ``src/depthlab/probes/kernels.py`` is written to a directory of its own
(``--cache``, kept so that Numba compiles it once) and imported as a second module; the
recorder uses one kernels module or the other (:mod:`depthlab.probes.accel`'s switch), so both
sides run the same recorder, engine and process. Each round runs the bare step and both sides
of each mode, their order alternating round after round, and times each run in CPU seconds of
the process (``time.process_time``, one BLAS thread). First each network's recorder frame is
checked to be identical bit for bit with both kernels (a short run, every=1, percentiles and
histograms on). The table gives per mode the median CPU ms per step with the range over the
rounds, the overhead over the bare step (ratio of medians minus one), the wall time spent in the
recorder's two update hooks on a step that records (median over the run's recording steps, so
that a preemption on a shared host does not count; then median and range over the rounds),
and the ratios of the two sides' costs (after / before: below 1 is a gain).

First, per network, the cost of one record's statistics alone (every probe point's kernel on
the caches of a real training step, no histograms), the sides alternating round after round:
the probe cost without the training step's noise (``--records-only``: only that).

    python benchmarks/probe_kernels_ab.py [--rev HEAD] [--rounds 7] [--steps 300] [--only relu]
        [--records-only]
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
from probe_overhead import NETWORKS, training_data  # noqa: E402

from depthlab import accel as engine_accel  # noqa: E402
from depthlab.backend import rng as make_rng  # noqa: E402
from depthlab.models import mlp  # noqa: E402
from depthlab.probes import ProbeRecorder, accel  # noqa: E402
from depthlab.probes.fused import LayerStats  # noqa: E402
from depthlab.probes.stats import PERCENTILES  # noqa: E402
from depthlab.training import fit  # noqa: E402

KERNELS = "src/depthlab/probes/kernels.py"


def load_revision(rev: str, cache: Path):
    """The kernels module of git revision ``rev``, imported from ``cache/<blob>/`` (the file's
    git blob: revisions with the same kernels share one compiled cache)."""
    root = Path(__file__).resolve().parent.parent
    sha = subprocess.run(["git", "rev-parse", f"{rev}:{KERNELS}"], cwd=root,
                         capture_output=True, text=True, check=True).stdout.strip()
    where = cache / sha
    where.mkdir(parents=True, exist_ok=True)
    path = where / f"kernels_{sha[:10]}.py"
    if not path.exists():
        text = subprocess.run(["git", "cat-file", "blob", sha], cwd=root, capture_output=True,
                              text=True, check=True).stdout
        path.write_text(text)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    # registered before it runs: Numba's cache, read back in a later process, imports the
    # kernels' module by name (unregistered, it was '<dynamic>': the second run failed)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module, sha[:10]


def timed_hooks(rec: ProbeRecorder, clock=time.perf_counter_ns) -> dict[int, int]:
    """Wrap the recorder's two update hooks (on the instance): ns of ``clock`` spent in them,
    per step."""
    spent: dict[int, int] = {}

    def wrap(hook):
        def timed(trainer, step, *rest):
            t = clock()
            hook(trainer, step, *rest)
            spent[step] = spent.get(step, 0) + clock() - t
        return timed

    rec.before_update = wrap(rec.before_update)
    rec.after_update = wrap(rec.after_update)
    return spent


def timed_fit(spec: dict, x, y, steps: int, rec, every: int | None, frame: bool = False,
              clock=time.perf_counter_ns):
    """``(CPU seconds per step, median us of ``clock`` in the hooks of a step that records)``
    of one ``fit`` with recorder ``rec`` (None: the bare step); with ``frame``, the recorder's
    frame and histograms instead."""
    net = mlp(spec["sizes"], activation=spec["activation"], init=spec["init"], seed=0)
    spent = timed_hooks(rec, clock) if rec and not frame else {}
    t = time.process_time()
    fit(net, x, y, loss="cross_entropy", optimizer="sgd", lr=0.01, batch_size=spec["batch"],
        epochs=None, max_steps=steps, eval_train=False, callbacks=[rec] if rec else [])
    dt = (time.process_time() - t) / steps
    if frame:
        return rec.frame(), rec.histograms()
    # a step records when its before_update measures label step - 1 (a multiple of every)
    rec_steps = [spent[s] for s in spent if (s - 1) % every == 0] if every else []
    return dt, statistics.median(rec_steps) / 1e3 if rec_steps else math.nan


def run(spec: dict, x, y, steps: int, kernels, every: int | None, frame: bool = False):
    """:func:`timed_fit` with the recorder on ``kernels`` (no recorder for ``every=None``),
    its hooks timed in wall time."""
    accel._state["kernels"] = kernels
    return timed_fit(spec, x, y, steps, ProbeRecorder(every=every) if every else None, every,
                     frame)


def compare(label: str, spec: dict, x, y, steps: int, sides: dict, everies, rounds: int,
            run_side, what: str, hooks_unit: str = "us") -> None:
    """Print the A/B table of one network: ``run_side(spec, x, y, steps, side, every,
    frame=False)`` for the bare step and each side at each ``every``, in an order alternating
    round after round, after checking both sides' frames identical (a short run, every=1)."""
    check = min(steps, 12)
    got = [run_side(spec, x, y, check, side, 1, frame=True) for side in sides.values()]
    same = got[0][0].equals(got[1][0]) and got[0][1].equals(got[1][1])
    modes = [("no probes", None, None)] + [
        (f"every={e}, {name}", e, side) for e in everies for name, side in sides.items()]
    times: dict[str, list[float]] = {m[0]: [] for m in modes}
    hooks: dict[str, list[float]] = {m[0]: [] for m in modes}
    run_side(spec, x, y, max(2, steps // 10), list(sides.values())[-1], None)  # warm-up
    for r in range(rounds):
        for name, every, side in modes if r % 2 == 0 else modes[::-1]:
            dt, us = run_side(spec, x, y, steps, side, every)
            times[name].append(dt)
            hooks[name].append(us)
    base = statistics.median(times["no probes"])
    print(f"\n{label}: {steps} steps per run; frames identical with both {what}: {same}")
    print(f"  {'mode':34s} {'CPU ms per step':>26s}  {'overhead':>8s}  "
          f"hooks of a recording step, {hooks_unit} (median per run: median, range)")
    for name, t in times.items():
        med = statistics.median(t)
        line = f"  {name:34s} {1e3 * med:9.3f} ({1e3 * min(t):.3f}-{1e3 * max(t):.3f}) ms"
        if name != "no probes":
            h = hooks[name]
            line += (f"  {100 * (med / base - 1):7.1f}%  {statistics.median(h):9.1f} "
                     f"({min(h):.1f}-{max(h):.1f})")
        print(line)
    for e in everies:
        b, a = (statistics.median(times[f"every={e}, {s}"]) - base for s in sides)
        hb, ha = (statistics.median(hooks[f"every={e}, {s}"]) for s in sides)
        print(f"  every={e}: after / before: probe CPU cost "
              f"{a / b if b > 0 else math.nan:.2f}, hooks of a recording step {ha / hb:.2f}")


def ab_arguments(doc: str, what: str, more=None) -> argparse.Namespace:
    """The options of both A/B scripts (``--rev``, ``--rounds``, ``--steps``, ``--only``, and
    those ``more(parser)`` adds), parsed; then one BLAS thread and the kernels loaded outside
    the timings (``what``: the compared part, for ``--rev``'s help)."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--rev", default="HEAD", help=f"git revision of the 'before' {what}")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--steps", type=int, default=300,
                    help="steps per run on the two small networks (a tenth on the wide one)")
    ap.add_argument("--only", help="only the networks whose label contains this text")
    if more is not None:
        more(ap)
    args = ap.parse_args()
    threadpool_limits(1)
    accel.warm_up()
    engine_accel.warm_up()  # (else loaded 3 s into the training, inside a timed run)
    return args


def record_cost(spec: dict, x, y, sides: dict, rounds: int, reps: int) -> dict[str, list]:
    """CPU us (this thread's) of one record's statistics (every probe point's kernel call, no
    histograms) on the caches of a real training step, per side: the median of ``reps``
    records, ``rounds`` times, the sides alternating; the two sides' values checked equal bit
    for bit."""
    net = mlp(spec["sizes"], activation=spec["activation"], init=spec["init"], seed=0)
    accel._state["kernels"] = None
    fit(net, x, y, loss="cross_entropy", optimizer="sgd", lr=0.01, batch_size=spec["batch"],
        epochs=None, max_steps=2, eval_train=False)
    points = net.probe_points()
    stats, values = {}, {}
    for name, k in sides.items():
        accel._state["kernels"] = k
        stats[name] = [LayerStats(p, PERCENTILES) for p in points]
        values[name] = [ls() for ls in stats[name]]  # (prepares the kept arguments)
    first, second = values.values()
    if not all(np.array_equal(u, v, equal_nan=True) for u, v in zip(first, second)):
        raise SystemExit("probe_kernels_ab: the two kernels' statistics differ")
    out: dict[str, list] = {name: [] for name in sides}
    names = list(sides)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            accel._state["kernels"] = sides[name]
            one = []
            for _ in range(reps):
                t = time.thread_time_ns()  # CPU time: a preemption does not count
                for ls in stats[name]:
                    ls()
                one.append(time.thread_time_ns() - t)
            out[name].append(statistics.median(one) / 1e3)
    return out


def main() -> None:
    def options(ap: argparse.ArgumentParser) -> None:
        ap.add_argument("--records-only", action="store_true",
                        help="only the per-record statistics cost (no training runs timed)")
        ap.add_argument("--cache", default=os.path.join(os.path.expanduser("~"), ".cache",
                                                        "depthlab-probe-ab"),
                        help="directory for the revision's kernels and their Numba cache")

    args = ab_arguments(__doc__, "kernels", options)
    after = accel.kernels()
    if after is None:
        sys.exit("probe_kernels_ab: the compiled kernels (depthlab[fast]) are not installed")
    before, _ = load_revision(args.rev, Path(args.cache))
    accel._state["kernels"] = before
    accel.warm_up()  # the revision's kernels compiled (or loaded) outside the timings
    sides = {f"before ({args.rev})": before, "after (tree)": after}
    print(f"probe kernels A/B: CPU ms per step, median (min-max) over {args.rounds} rounds, "
          f"one BLAS thread; load average {os.getloadavg()[0]:.1f} before")
    gen = make_rng(0)
    for label, spec in NETWORKS.items():
        if args.only and args.only not in label:
            continue
        steps = max(10, int(args.steps * spec["steps"]))
        x, y = training_data(spec, gen)
        cost = record_cost(spec, x, y, sides, max(args.rounds, 5),
                           5 if spec["sizes"][1] > 1000 else 50)
        print(f"\n{label}: one record's statistics (all layers, no histograms), CPU us, "
              "median of its repetitions per round; median (min-max) over the rounds")
        for name, v in cost.items():
            print(f"  {name:34s} {statistics.median(v):10.1f} ({min(v):.1f}-{max(v):.1f})")
        if args.records_only:
            continue
        compare(label, spec, x, y, steps, sides, (10, 1), args.rounds, run, "kernels")
        accel._state["kernels"] = after
    print(f"\nload average {os.getloadavg()[0]:.1f} after")


if __name__ == "__main__":
    main()
