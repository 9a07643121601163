"""The recorder's Python (``src/depthlab/probes/recorder.py`` and ``fused.py``) of a git revision
(default ``HEAD``) against the working tree's, in one process, with the same compiled kernels:
``ProbeRecorder`` overhead on the networks of ``probe_overhead.py``, training-batch mode, every
statistic, ``every=10`` and ``every=1``.

The revision's two files are written to a temporary directory and imported as modules of
``depthlab.probes`` under other names (their relative imports resolve to the tree's package;
the revision's ``recorder`` imports the revision's ``fused``), so both sides share the engine,
the kernels and the process. First each network's recorder frame and histograms are checked to
be identical with both recorders (a short run, every=1). Then each round runs the bare step and
both sides at each ``every``, in an order alternating round after round, and times each run in
CPU seconds of the process (``time.process_time``, one BLAS thread) and the recorder's two
update hooks on the steps that record in CPU time of the thread (``time.thread_time_ns``: a
preemption on a shared host does not count). The table gives the median and range over the
rounds, the overhead over the bare step (ratio of medians minus one) and the ratio of the two
sides' hook costs (after / before: below 1 is a gain).

    python benchmarks/probe_recorder_ab.py [--rev HEAD] [--rounds 7] [--steps 300] [--only relu]
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
from probe_overhead import NETWORKS, training_data  # noqa: E402

import depthlab.probes  # noqa: E402,F401
from depthlab.backend import rng as make_rng  # noqa: E402
from depthlab.models import mlp  # noqa: E402
from depthlab.probes import accel  # noqa: E402
from depthlab.probes.recorder import ProbeRecorder  # noqa: E402
from depthlab.training import fit  # noqa: E402

FILES = ("fused", "recorder")


def load_revision(rev: str, where: Path) -> type:
    """``ProbeRecorder`` of git revision ``rev``: its ``fused.py`` and ``recorder.py`` imported
    as ``depthlab.probes._ab_fused`` and ``depthlab.probes._ab_recorder``."""
    root = Path(__file__).resolve().parent.parent
    module = None
    for name in FILES:
        text = subprocess.run(["git", "show", f"{rev}:src/depthlab/probes/{name}.py"],
                              cwd=root, capture_output=True, text=True, check=True).stdout
        text = text.replace("from .fused import", "from ._ab_fused import")
        path = where / f"_ab_{name}.py"
        path.write_text(text)
        full = f"depthlab.probes._ab_{name}"
        spec = importlib.util.spec_from_file_location(full, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[full] = module
        spec.loader.exec_module(module)
    return module.ProbeRecorder


def timed_hooks(rec) -> dict[int, int]:
    """Wrap the recorder's two update hooks (on the instance): CPU ns of this thread spent in
    them, per step."""
    spent: dict[int, int] = {}

    def wrap(hook):
        def timed(trainer, step, *rest):
            t = time.thread_time_ns()
            hook(trainer, step, *rest)
            spent[step] = spent.get(step, 0) + time.thread_time_ns() - t
        return timed

    rec.before_update = wrap(rec.before_update)
    rec.after_update = wrap(rec.after_update)
    return spent


def run(spec: dict, x, y, steps: int, cls, every: int | None, frame: bool = False):
    """``(CPU seconds per step, median CPU us in the hooks of a step that records)`` of one
    ``fit`` with recorder class ``cls`` (none for ``every=None``); with ``frame``, the
    recorder's frame and histograms instead."""
    net = mlp(spec["sizes"], activation=spec["activation"], init=spec["init"], seed=0)
    rec = cls(every=every) if every else None
    spent = timed_hooks(rec) if rec and not frame else {}
    t = time.process_time()
    fit(net, x, y, loss="cross_entropy", optimizer="sgd", lr=0.01, batch_size=spec["batch"],
        epochs=None, max_steps=steps, eval_train=False, callbacks=[rec] if rec else [])
    dt = (time.process_time() - t) / steps
    if frame:
        return rec.frame(), rec.histograms()
    # a step records when its before_update measures label step - 1 (a multiple of every)
    rec_steps = [spent[s] for s in spent if (s - 1) % every == 0] if every else []
    return dt, statistics.median(rec_steps) / 1e3 if rec_steps else math.nan


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rev", default="HEAD", help="git revision of the 'before' recorder")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--steps", type=int, default=300,
                    help="steps per run on the two small networks (a tenth on the wide one)")
    ap.add_argument("--only", help="only the networks whose label contains this text")
    ap.add_argument("--every", type=int, nargs="+", default=[10, 1],
                    help="the every= values compared (default: 10 1)")
    args = ap.parse_args()
    threadpool_limits(1)
    accel.warm_up()
    with tempfile.TemporaryDirectory() as tmp:
        before = load_revision(args.rev, Path(tmp))
    sides = {f"before ({args.rev})": before, "after (tree)": ProbeRecorder}
    print(f"probe recorder A/B: CPU ms per step, median (min-max) over {args.rounds} rounds, "
          f"one BLAS thread; load average {os.getloadavg()[0]:.1f} before")
    gen = make_rng(0)
    for label, spec in NETWORKS.items():
        if args.only and args.only not in label:
            continue
        steps = max(10, int(args.steps * spec["steps"]))
        x, y = training_data(spec, gen)
        check = min(steps, 12)
        got = [run(spec, x, y, check, cls, 1, frame=True) for cls in sides.values()]
        same = got[0][0].equals(got[1][0]) and got[0][1].equals(got[1][1])
        modes = [("no probes", None, None)] + [
            (f"every={e}, {name}", e, cls) for e in args.every for name, cls in sides.items()]
        times: dict[str, list[float]] = {m[0]: [] for m in modes}
        hooks: dict[str, list[float]] = {m[0]: [] for m in modes}
        run(spec, x, y, max(2, steps // 10), ProbeRecorder, None)  # warm-up
        for r in range(args.rounds):
            for name, every, cls in modes if r % 2 == 0 else modes[::-1]:
                dt, us = run(spec, x, y, steps, cls, every)
                times[name].append(dt)
                hooks[name].append(us)
        base = statistics.median(times["no probes"])
        print(f"\n{label}: {steps} steps per run; frames identical with both recorders: {same}")
        print(f"  {'mode':34s} {'CPU ms per step':>26s}  {'overhead':>8s}  "
              "hooks of a recording step, CPU us (median per run: median, range)")
        for name, t in times.items():
            med = statistics.median(t)
            line = f"  {name:34s} {1e3 * med:9.3f} ({1e3 * min(t):.3f}-{1e3 * max(t):.3f}) ms"
            if name != "no probes":
                h = hooks[name]
                line += (f"  {100 * (med / base - 1):7.1f}%  {statistics.median(h):9.1f} "
                         f"({min(h):.1f}-{max(h):.1f})")
            print(line)
        for e in args.every:
            b, a = (statistics.median(times[f"every={e}, {s}"]) - base for s in sides)
            hb, ha = (statistics.median(hooks[f"every={e}, {s}"]) for s in sides)
            print(f"  every={e}: after / before: probe CPU cost "
                  f"{a / b if b > 0 else math.nan:.2f}, hooks of a recording step {ha / hb:.2f}")
    print(f"\nload average {os.getloadavg()[0]:.1f} after")


if __name__ == "__main__":
    main()
