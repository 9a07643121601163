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

import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from probe_kernels_ab import ab_arguments, compare, timed_fit  # noqa: E402
from probe_overhead import NETWORKS, training_data  # noqa: E402

import depthlab.probes  # noqa: E402,F401
from depthlab.backend import rng as make_rng  # noqa: E402
from depthlab.probes.recorder import ProbeRecorder  # noqa: E402

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


def run(spec: dict, x, y, steps: int, cls, every: int | None, frame: bool = False):
    """:func:`probe_kernels_ab.timed_fit` with recorder class ``cls`` (none for
    ``every=None``), its hooks timed in this thread's CPU time."""
    return timed_fit(spec, x, y, steps, cls(every=every) if every else None, every, frame,
                     clock=time.thread_time_ns)


def main() -> None:
    args = ab_arguments(__doc__, "recorder", lambda ap: ap.add_argument(
        "--every", type=int, nargs="+", default=[10, 1],
        help="the every= values compared (default: 10 1)"))
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
        compare(label, spec, x, y, steps, sides, args.every, args.rounds, run, "recorders",
                "CPU us")
    print(f"\nload average {os.getloadavg()[0]:.1f} after")


if __name__ == "__main__":
    main()
