"""Where a ``ProbeRecorder``'s time goes on the networks of ``probe_overhead.py`` (training-batch
mode, every statistic): each part of a record timed call by call inside real training runs.

Parts (wall time per call, medians, one BLAS thread):

* ``layer kernel``: :func:`depthlab.probes.kernels.layer`, one probe point's statistics (per
  shape of its feeding weights; it also copies ``W`` for the update ratio when the record and the
  snapshot fall on the same step, i.e. with ``every=1``);
* ``percentiles (replayed)``: the percentile selection alone (:func:`kernels.positions` on the
  same pre-activations, run again right after the layer kernel: an estimate of the part of the
  layer kernel's time it takes; its share is included in the layer kernel's, not added);
* ``histograms``: one probe point's four histograms (``ProbeRecorder._histograms``);
* ``W snapshot copy``: ``before_update`` on a step that only copies the weights (``every > 1``);
* ``update_norms``: the update ratio's kernel, per weight shape;
* ``hooks, rest``: every ``before_update``/``after_update`` call minus the parts above (Python,
  dispatch, bookkeeping; on unrecorded steps only the schedule checks);
* ``whole hook calls, by what they do``: each ``before_update`` (and ``after_update``), whole,
  by kind: a record with histograms, a record without, a weights' snapshot alone (``every > 1``:
  the step after a record), a record and a snapshot together (``every=1``). A record at
  ``every=10`` costs more than one at ``every=1`` on average: a fifth of them carry histograms
  (steps 0, 10, 20, 40, 80, 160 of 300; at ``every=1`` 10 of 300), the snapshot is a copy
  pass of its own (at ``every=1`` the layer kernel makes it), and its code and data are cold;
* ``statistics, in the run`` (inside the hooks' parts above, not added to them) against
  ``statistics, replayed warm``: one record's statistics (``ProbeRecorder._statistics``: every
  probe point's kernel and its Python) as the run pays them, then the same calls again right
  after (same arrays, same snapshot buffers: the copy is made again with the same values; not
  counted in the hook): the difference is what the record pays for finding its code and data
  cold after the training steps between records;
* ``whole ... calls`` of a step that does nothing (neither records nor copies weights): the
  cost of the hooks on unrecorded steps.

The table gives the median per call, the calls per step and the share of the bare training step
(median CPU time per step of interleaved runs without probes): the shares of the parts add up
roughly to the overhead ``probe_overhead.py`` measures, minus what the records cost the training
step itself (data and code they evict); a part's share is its median per call times its calls
per step (medians: a call preempted by another process on a loaded host does not count). The
first calls of a part (cold caches, buffers allocated) weigh in its mean but not its median;
the share by the mean (given too) counts them, and preemptions.
Each timed call adds ~0.1 us.

    python benchmarks/probe_breakdown.py [--steps 300] [--rounds 3] [--only sigmoid]
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import sys
import time
from collections.abc import Callable
from types import ModuleType

import numpy as np
from threadpoolctl import threadpool_limits

from depthlab import accel as engine_accel
from depthlab.backend import rng as make_rng
from depthlab.models import mlp
from depthlab.probes import ProbeRecorder, accel
from depthlab.probes import recorder as recorder_module
from depthlab.training import fit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from probe_overhead import NETWORKS, training_data  # noqa: E402

clock = time.perf_counter_ns
"""Per-call timer: wall time (~0.1 us a call); ``process_time_ns`` is a system call here (1.7 us
a call, more than some of the parts). The runs' per-step totals are CPU time, as in
``probe_overhead.py``."""


class Timers:
    """Per-call CPU times of the wrapped functions, by label (nested calls are subtracted from
    the hook that contains them)."""

    def __init__(self) -> None:
        self.calls: dict[str, list[int]] = collections.defaultdict(list)
        self.inner = 0  # ns spent in timed parts inside the current hook call
        self.extra = 0  # ns spent in replays inside the current hook call (not the hook's)
        self.replayed = 0  # ns spent in the percentiles' replays so far (not the record's)
        self.kinds: dict[str, list[int]] = collections.defaultdict(list)

    def part(self, fn, label):
        def timed(*args):
            t = clock()
            out = fn(*args)
            dt = clock() - t
            self.calls[label(args) if callable(label) else label].append(dt)
            self.inner += dt
            return out
        return timed

    def hook(self, fn, label, kind=None):
        """``fn`` timed as ``label`` minus the parts inside it; with ``kind`` (a function of
        the call's arguments naming what the call did, or None), also its whole time under
        ``call kinds[kind]``."""
        def timed(*args):
            self.inner = 0
            self.extra = 0
            t = clock()
            out = fn(*args)
            dt = clock() - t - self.extra
            self.calls[label].append(dt - self.inner)
            what = kind(args) if kind is not None else None
            if what is not None:
                self.kinds[what].append(dt)
            return out
        return timed

    def statistics(self, fn: Callable, kernels: ModuleType | None, layer: Callable | None
                   ) -> Callable:
        """``ProbeRecorder._statistics`` timed as ``statistics, in the run``, then replayed
        (every probe point's kernel again, ``layer`` the unwrapped kernel) as ``statistics,
        replayed warm``; the replay's time is left out of the hook's."""
        def timed(rec, step, snapshots):
            r = self.replayed
            t = clock()
            out = fn(rec, step, snapshots)
            self.calls["statistics, in the run"].append(clock() - t - (self.replayed - r))
            t0 = clock()
            if kernels is not None:
                wrapped, kernels.layer = kernels.layer, layer
            try:
                bufs = rec._snapshot_list(snapshots)
                t1 = clock()
                for stats, buf in zip(rec._kernel_stats, bufs):
                    stats(buf)
                self.calls["statistics, replayed warm"].append(clock() - t1)
            finally:
                if kernels is not None:
                    kernels.layer = wrapped
            self.extra += clock() - t0
            return out
        return timed


def before_update_kind(args) -> str | None:
    """What ``ProbeRecorder.before_update(recorder, trainer, step)`` does in training-batch
    mode: a record of step ``step - 1`` (with or without histograms) and/or the weights'
    snapshot of step ``step`` (None: nothing)."""
    rec, _, step = args
    record = (step - 1) % rec.every == 0
    snap = step % rec.every == 0
    if not (record or snap):
        return "nothing (unrecorded step)"
    what = ("record with histograms" if rec._wants_hist(step - 1) else "record") if record \
        else ""
    return f"{what} + W snapshot" if what and snap else what or "W snapshot only"


def after_update_kind(args) -> str:
    """What ``ProbeRecorder.after_update(recorder, trainer, step, loss)`` does in
    training-batch mode: the update ratio of step ``step`` (weights copied before it) or
    nothing."""
    rec, _, step, _ = args
    return ("after_update: update ratio" if step % rec.every == 0
            else "after_update: nothing (unrecorded step)")


def replay_positions(kernels, timers: Timers):
    """Wrap ``kernels.layer`` so that each call is followed by the percentile selection alone
    on the same pre-activations (timed as ``percentiles (replayed)``, not counted in the
    hook)."""
    layer = kernels.layer

    def timed(s, a, d, how, thr, family, g, w, dw, ranks, t, monotone, w_copy):
        t0 = clock()
        out = layer(s, a, d, how, thr, family, g, w, dw, ranks, t, monotone, w_copy)
        dt = clock() - t0
        timers.calls[f"layer kernel, W {w.size}"].append(dt)
        timers.inner += dt
        if ranks.size and out[-1] == kernels.OK:
            t1 = clock()
            lo, hi = kernels.column_range(s)
            if lo < hi:
                t2 = clock()
                kernels.positions(s.reshape(-1), ranks, lo, hi)
                timers.calls["percentiles (replayed)"].append(clock() - t2)
            spent = clock() - t1
            timers.inner += spent  # the replay is not part of the hook's rest
            timers.replayed += spent  # nor of the statistics' time
        return out
    return timed


def run(spec: dict, x, y, steps: int, recorder: ProbeRecorder | None) -> float:
    """CPU seconds per step of one ``fit`` of ``steps`` steps (as ``probe_overhead.run``)."""
    net = mlp(spec["sizes"], activation=spec["activation"], init=spec["init"], seed=0)
    t = time.process_time()
    fit(net, x, y, loss="cross_entropy", optimizer="sgd", lr=0.01, batch_size=spec["batch"],
        epochs=None, max_steps=steps, eval_train=False,
        callbacks=[] if recorder is None else [recorder])
    return (time.process_time() - t) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", help="only the networks whose label contains this text")
    args = ap.parse_args()
    threadpool_limits(1)
    accel.warm_up()
    engine_accel.warm_up()  # (else loaded 3 s into the training, inside a timed run)
    kernels = accel.kernels()
    if kernels is None:
        sys.exit("probe_breakdown: the compiled kernels (depthlab[fast]) are not installed")
    gen = make_rng(0)
    print(f"ProbeRecorder breakdown: us per call (median), {args.rounds} rounds of "
          f"{args.steps} steps, one BLAS thread; load average {os.getloadavg()[0]:.1f}")
    for label, spec in NETWORKS.items():
        if args.only and args.only not in label:
            continue
        steps = max(10, int(args.steps * spec["steps"]))
        x, y = training_data(spec, gen)
        run(spec, x, y, steps, None)  # warm-up
        base = statistics.median(run(spec, x, y, steps, None) for _ in range(args.rounds))
        print(f"\n{label}: bare step {1e3 * base:.3f} ms")
        for every in (10, 1):
            timers = Timers()
            saved = {name: getattr(ProbeRecorder, name) for name in
                     ("before_update", "after_update", "_histograms", "_statistics")}
            saved_layer, saved_norms = kernels.layer, kernels.update_norms
            try:
                ProbeRecorder._histograms = timers.part(saved["_histograms"], "histograms")
                ProbeRecorder.before_update = timers.hook(saved["before_update"],
                                                          "before_update, rest",
                                                          before_update_kind)
                ProbeRecorder.after_update = timers.hook(saved["after_update"],
                                                         "after_update, rest",
                                                         after_update_kind)
                ProbeRecorder._statistics = timers.statistics(saved["_statistics"], kernels,
                                                              saved_layer)
                kernels.layer = replay_positions(kernels, timers)
                kernels.update_norms = timers.part(
                    saved_norms, lambda a: f"update_norms, W {a[0].size}")
                copyto = np.copyto
                recorder_module.np = _NumpyWithTimedCopy(timers)
                for _ in range(args.rounds):
                    run(spec, x, y, steps, ProbeRecorder(every=every))
            finally:
                for name, fn in saved.items():
                    setattr(ProbeRecorder, name, fn)
                kernels.layer, kernels.update_norms = saved_layer, saved_norms
                recorder_module.np = np
                assert np.copyto is copyto
            total_steps = steps * args.rounds
            print(f"  every={every}")
            for part, times in sorted(timers.calls.items()):
                med = statistics.median(times) / 1e3
                mean = statistics.fmean(times) / 1e3
                rate = len(times) / total_steps
                print(f"    {part:32s} {med:8.1f} us/call (mean {mean:8.1f})  {rate:5.2f} "
                      f"calls/step  {100 * med * rate / (1e6 * base):5.1f}% of the step "
                      f"(by the mean {100 * mean * rate / (1e6 * base):5.1f}%)")
            print("    whole hook calls, by what they do:")
            for what, times in sorted(timers.kinds.items()):
                med = statistics.median(times) / 1e3
                rate = len(times) / total_steps
                print(f"      {what:34s} {med:8.1f} us/call  {rate:5.3f} calls/step  "
                      f"{100 * med * rate / (1e6 * base):5.1f}% of the step")


class _NumpyWithTimedCopy:
    """NumPy for the recorder module, with ``copyto`` (the weights' snapshot) timed."""

    def __init__(self, timers: Timers) -> None:
        self._copy = timers.part(np.copyto, lambda a: f"W snapshot copy, W {a[0].size}")

    def __getattr__(self, name):
        return self._copy if name == "copyto" else getattr(np, name)


if __name__ == "__main__":
    main()
