"""Cost of probing during training: time per optimizer step without probes and with a
``ProbeRecorder``, on the engine's three benchmark networks (float32, synthetic data of the
right shape, one BLAS thread):

* 784-100-100-100-10 sigmoid, batch 60 (Glorot & Bengio / Ioffe & Szegedy);
* 20 ReLU layers of 256 (He init), batch 128;
* 4 ReLU layers of 2048 (He init), batch 512 (a tenth of the steps, and only the goal modes:
  one step costs ~1000 of the first network's).

Training runs with ``eval_train=False`` and no validation set, so the baseline is the bare
training step and the ratios are the strictest. The modes of one network are run in rounds,
their order alternating every round, so that a change of the shared machine's load hits every
mode alike; each run is timed in CPU seconds of this process (``time.process_time``: with one
BLAS thread it counts only this process's own work, not the time other processes hold the core).
The engine's compiled kernels are loaded before the first run (``depthlab.accel.warm_up``: by
default a process loads them 3 s into its training, so the first runs took the engine's NumPy
path and one run paid the ~0.5 s load). Before each run a full garbage collection
(``gc.collect()``) clears what earlier runs left: a gen-2 collection of this process's ~150000
objects costs ~100 ms, a third of a millisecond per step of a 300-step run, and otherwise landed
in whichever run's allocations happened to trigger it.
The table gives the median per step over the rounds with the range, and three overheads:

* ``whole run``: the ratio of medians minus one (runs of one mode against those without probes);
* ``paired``: the median over the rounds of each round's ratio minus one (a run against the
  same round's run without probes);
* ``hooks``: the recorder's own time, measured inside the same runs: the share ``f`` of each
  run's wall time spent in the recorder's hooks (``on_train_begin``, ``before_update``,
  ``after_update``, ``on_train_end``; ``time.perf_counter_ns`` at their entry and exit, ~0.1 us
  a call), as ``f / (1 - f)`` (the hooks' time over the rest of the same run: both see the same
  load), median over the rounds. It leaves out what the records cost the training step itself
  (data and code they evict from the caches).

On a shared machine the runs without probes alone spread by 20-40% (other processes' use of
the caches and memory bandwidth changes CPU time too), so the whole-run ratio of 5 rounds moves by
more than the 5% goal; the hooks' share does not depend on the other runs. The goal line gives
the verdict of each.

    python benchmarks/probe_overhead.py [--rounds 5] [--steps 300] [--quick] [--no-startup]
        [--activation gelu] [--goals-only]

Statistics are computed by the compiled kernels of ``depthlab[fast]`` (Numba) when installed;
the ``NumPy path`` modes run the same recorder with them switched off
(:func:`depthlab.probes.accel.numpy_only`), and the first line gives what a fresh process spends
on the kernels (Numba's import; compiling them into an empty cache; loading them when cached).
``--no-startup`` leaves that line out (the compilation into an empty cache costs about a minute
of CPU: skip it for quick A/B comparisons on a shared machine).

Goals (issue 14): training-batch mode (``ProbeRecorder()``, every statistic, default percentiles
and histograms) at ``every=10`` <= 5% and at ``every=1`` <= 25%.

Old against new in one run: ``--old SRC`` (a source tree holding ``depthlab/``, e.g. the
round's starting copy ``/tmp/base51/src``) runs every mode with that tree's depthlab and with
this checkout's, each side in a worker process of its own (``PYTHONPATH`` set to its tree;
same interpreter, one BLAS thread, kernels loaded before the first run, the same data sent to
both), one run at a time, the sides' order alternating run after run, so both see the same
load. First both sides record a short run (every=1, 12 steps, every statistic) and the
table says whether their frames and histograms are identical. Per mode it gives each side's
median and range, each side's overhead over its own bare step (whole run / paired / hooks) and
the new/old ratio of the time per step (paired by round, median and range):

    python benchmarks/probe_overhead.py --old /tmp/base51/src --no-startup --goals-only

Arithmetic floor of the probe-batch mode: a probe pass over 300 examples costs about 300/batch
training steps of compute, so at ``every=10`` it cannot cost less than roughly 35-50% (batch 60)
or 20-25% (batch 128) of training time; the training-batch mode has no extra pass and only pays
for the statistics.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

# one BLAS thread (set before NumPy's OpenBLAS starts its pool)
from threadpoolctl import threadpool_limits

from depthlab import accel as engine_accel
from depthlab.activations import get_activation
from depthlab.backend import rng as make_rng
from depthlab.models import mlp
from depthlab.probes import ProbeRecorder, accel
from depthlab.training import fit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # host_blas, beside this file
from host_blas import numpy_blas  # noqa: E402

NETWORKS = {
    "sigmoid 784-100x3-10, batch 60": dict(
        sizes=[784, 100, 100, 100, 10], activation="sigmoid", init="glorot_uniform", batch=60,
        steps=1.0),
    "relu 20x256, batch 128": dict(
        sizes=[256] + [256] * 20 + [10], activation="relu", init="he_normal", batch=128,
        steps=1.0),
    "relu 4x2048, batch 512": dict(
        sizes=[2048] * 5 + [10], activation="relu", init="he_normal", batch=512, steps=0.1,
        modes=("no probes", "every=10, training batch", "every=1, training batch")),
}


def training_data(spec: dict, gen) -> tuple[np.ndarray, np.ndarray]:
    """A network's synthetic training set: 50 batches of N(0, 1) inputs (float32) and uniform
    class labels, drawn from ``gen`` in that order (x, then y)."""
    n = spec["batch"] * 50
    x = gen.standard_normal((n, spec["sizes"][0])).astype(np.float32)
    return x, gen.integers(0, spec["sizes"][-1], n)

MODES = {
    "no probes": None,
    "every=10, training batch": dict(every=10, probe=False),
    "every=1, training batch": dict(every=1, probe=False),
    "every=1, training batch, no histograms/percentiles": dict(every=1, probe=False,
                                                              histogram_steps=(),
                                                              percentiles=()),
    "every=10, probe batch 300": dict(every=10, probe=True),
    "every=10, training batch, NumPy path": dict(every=10, probe=False, numpy=True),
    "every=1, training batch, NumPy path": dict(every=1, probe=False, numpy=True),
}
GOALS = {"every=10, training batch": 5.0, "every=1, training batch": 25.0}


def kernel_startup() -> dict:
    """Seconds a fresh process spends on the compiled kernels before its first record
    (:func:`depthlab.probes.accel.warm_up` in a child process): Numba's import, then the
    kernels compiled into an empty cache directory, then loaded from that cache."""
    code = ("import json; from depthlab.probes import accel; "
            "print(json.dumps({**accel.warm_up(), 'compiled': accel.available()}))")
    out: dict = {}
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        for label in ("empty cache", "cached"):
            res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                                 text=True, check=True)
            out[label] = json.loads(res.stdout)
    if not out["cached"]["compiled"]:
        out["line"] = "compiled kernels: no (Numba not installed): the NumPy path"
    else:
        out["line"] = (f"compiled kernels (Numba): import {out['cached']['import']:.2f} s; "
                       f"kernels compiled in {out['empty cache']['kernels']:.1f} s (empty "
                       f"cache), loaded in {out['cached']['kernels']:.2f} s (cached)")
    return out


class TimedRecorder(ProbeRecorder):
    """A ``ProbeRecorder`` whose hooks add their wall time (``perf_counter_ns``, entry to exit)
    to ``hook_ns``."""

    hook_ns = 0

    def on_train_begin(self, trainer) -> None:
        t = time.perf_counter_ns()
        super().on_train_begin(trainer)
        self.hook_ns += time.perf_counter_ns() - t

    def before_update(self, trainer, step: int) -> None:
        t = time.perf_counter_ns()
        super().before_update(trainer, step)
        self.hook_ns += time.perf_counter_ns() - t

    def after_update(self, trainer, step: int, loss: float) -> None:
        t = time.perf_counter_ns()
        super().after_update(trainer, step, loss)
        self.hook_ns += time.perf_counter_ns() - t

    def on_train_end(self, trainer, history) -> None:
        t = time.perf_counter_ns()
        super().on_train_end(trainer, history)
        self.hook_ns += time.perf_counter_ns() - t


def run(spec: dict, mode: dict | None, x, y, xp, yp, steps: int) -> tuple[float, float]:
    """``(CPU seconds per step, f)`` of one ``fit`` of ``steps`` steps, ``f`` the share of its
    wall time spent in the recorder's hooks (0 without a recorder), after a full garbage
    collection."""
    net = mlp(spec["sizes"], activation=spec["activation"], init=spec["init"], seed=0)
    callbacks = []
    if mode is not None:
        kw = {k: v for k, v in mode.items() if k not in ("probe", "numpy")}
        if mode["probe"]:
            callbacks.append(TimedRecorder(xp, yp, "cross_entropy", **kw))
        else:
            callbacks.append(TimedRecorder(**kw))
    numpy_only = mode is not None and mode.get("numpy", False)
    gc.collect()
    with accel.numpy_only() if numpy_only else contextlib.nullcontext():
        t = time.process_time()
        w = time.perf_counter_ns()
        fit(net, x, y, loss="cross_entropy", optimizer="sgd", lr=0.01,
            batch_size=spec["batch"], epochs=None, max_steps=steps, eval_train=False,
            callbacks=callbacks)
        cpu = (time.process_time() - t) / steps
        wall = time.perf_counter_ns() - w
    return cpu, (callbacks[0].hook_ns / wall if callbacks else 0.0)


def overheads(times: dict[str, list[float]], hooks: dict[str, list[float]], mode: str
              ) -> dict[str, float]:
    """A mode's overheads in percent (see the module docstring): ``whole run`` (ratio of the
    medians - 1), ``paired`` (median over rounds of the round's ratio - 1) and ``hooks``
    (median over rounds of ``f / (1 - f)``; left out where ``hooks`` has no times for
    ``mode``, as in results written before round 45)."""
    base = times["no probes"]
    t = times[mode]
    out = {
        "whole run": 100 * (statistics.median(t) / statistics.median(base) - 1),
        "paired": 100 * (statistics.median(a / b for a, b in zip(t, base)) - 1),
    }
    if hooks.get(mode):
        out["hooks"] = 100 * statistics.median(f / (1 - f) for f in hooks[mode])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300,
                    help="steps per run on the two small networks (a tenth on the wide one)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="only the two small networks")
    ap.add_argument("--only", help="only the networks whose label contains this text")
    ap.add_argument("--activation",
                    help="another hidden activation for every network (e.g. gelu: one whose "
                         "f'(s) the kernel reads from dL/ds); the labels name it")
    ap.add_argument("--goals-only", action="store_true",
                    help="only the bare step and the two goal modes on every network")
    ap.add_argument("--json", help="also write the per-run times to this file")
    ap.add_argument("--no-startup", action="store_true",
                    help="skip the kernel start-up line (compiling into an empty cache: ~1 min)")
    ap.add_argument("--old", metavar="SRC",
                    help="also run a source tree holding depthlab/ (e.g. /tmp/base51/src), "
                         "interleaved with this checkout's, and compare (module docstring)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker_main()
        return
    if args.old is not None:
        try:
            args.old = old_source(args.old)
        except ValueError as err:
            ap.error(str(err))
    if args.activation:
        try:
            get_activation(args.activation)
        except (ValueError, TypeError) as err:
            ap.error(f"--activation {args.activation!r}: {err}")
    threadpool_limits(1)
    print(f"ProbeRecorder overhead: CPU ms per step, median (min-max) over {args.rounds} "
          f"interleaved rounds, one BLAS thread, {os.cpu_count()} cores")
    blas = numpy_blas()
    print(blas)
    startup = {} if args.no_startup else kernel_startup()
    accel.warm_up()  # Numba's import and the kernels' cache load, outside the timings
    # the engine's own kernels too: by default they load 3 s into a process's training
    # (depthlab.accel.LOAD_AFTER_S), so the first runs took the engine's NumPy path and one
    # run paid their load (~0.5 s: 1.7 ms a step of a 300-step run)
    engine_accel.warm_up()
    if startup:
        print(startup["line"])
    gen = make_rng(0)
    load_before = os.getloadavg()
    results: dict[str, dict] = {}
    networks = NETWORKS
    if args.activation:
        act = args.activation
        networks = {label.replace(spec["activation"], act, 1): {**spec, "activation": act}
                    for label, spec in NETWORKS.items()}
    if args.old is not None:
        compare_trees(args, networks, gen)
        return
    for label, spec in networks.items():
        if args.quick and spec["sizes"][1] == 2048 or args.only and args.only not in label:
            continue
        steps = max(10, int(args.steps * spec["steps"]))
        d = spec["sizes"][0]
        x, y = training_data(spec, gen)
        xp = gen.standard_normal((300, d)).astype(np.float32)
        yp = gen.integers(0, spec["sizes"][-1], 300)
        names = ["no probes", *GOALS] if args.goals_only else list(spec.get("modes", MODES))
        times: dict[str, list[float]] = {m: [] for m in names}
        hooks: dict[str, list[float]] = {m: [] for m in names}
        run(spec, None, x, y, xp, yp, max(2, steps // 10))  # warm-up
        run(spec, MODES[names[1]], x, y, xp, yp, max(2, steps // 10))  # (first record's)
        for r in range(args.rounds):
            for m in names if r % 2 == 0 else names[::-1]:
                cpu, f = run(spec, MODES[m], x, y, xp, yp, steps)
                times[m].append(cpu)
                hooks[m].append(f)
        results[label] = {"steps": steps, "times": times, "hooks": hooks}
        print(f"\n{label}: {steps} steps per run; overheads: whole run / paired / in hooks")
        for m, t in times.items():
            med = statistics.median(t)
            line = f"  {m:52s} {1e3 * med:9.3f} ({1e3 * min(t):.3f}-{1e3 * max(t):.3f}) ms"
            if m != "no probes":
                over = overheads(times, hooks, m)
                line += "  " + " / ".join(f"{v:5.1f}%" for v in over.values())
                if m in GOALS:
                    line += f"  (goal <= {GOALS[m]:g}%: " + ", ".join(
                        f"{k} {'met' if v <= GOALS[m] else 'NOT met'}"
                        for k, v in over.items()) + ")"
            print(line)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"rounds": args.rounds, "load_before": load_before, "blas": blas,
                       "load_after": os.getloadavg(), "goals": GOALS, "kernels": startup,
                       "results": results}, fh)


def old_source(path: str) -> str:
    """The absolute source directory ``path`` for ``--old``: it must hold the ``depthlab``
    package (``depthlab/__init__.py``, ``depthlab/probes/recorder.py``); ValueError naming
    the path otherwise."""
    src = os.path.abspath(os.path.expanduser(path))
    if not os.path.isfile(os.path.join(src, "depthlab", "probes", "recorder.py")):
        raise ValueError(f"--old {path!r}: no depthlab package there (expected a source "
                         "directory holding depthlab/probes/recorder.py, e.g. /tmp/base51/src)")
    return src


def record_digest(spec: dict, x, y, steps: int) -> str:
    """SHA-256 of the frame and histograms a ``ProbeRecorder(every=1)`` records over ``steps``
    steps of ``spec``'s network (every statistic): equal digests, equal records bit for
    bit."""
    import hashlib

    rec = ProbeRecorder(every=1)
    net = mlp(spec["sizes"], activation=spec["activation"], init=spec["init"], seed=0)
    fit(net, x, y, loss="cross_entropy", optimizer="sgd", lr=0.01, batch_size=spec["batch"],
        epochs=None, max_steps=steps, eval_train=False, callbacks=[rec])
    h = hashlib.sha256()
    for df in (rec.frame(), rec.histograms()):
        h.update(repr(list(df.columns)).encode())
        for col in df.columns:
            if df[col].dtype.kind not in "iufb":  # names: their text, not their addresses
                h.update("\0".join(map(str, df[col])).encode())
            else:
                h.update(np.ascontiguousarray(df[col].to_numpy()).tobytes())
    return h.hexdigest()


def worker_main() -> None:
    """``--worker``: run the requests read from stdin, one JSON object a line (``{"data":
    npz path, "spec": network, "mode": name or null, "steps": n}``, or ``"check": true`` for
    :func:`record_digest`), answering each with one JSON line on stdout; the first line
    answered names the depthlab imported."""
    import depthlab

    threadpool_limits(1)
    accel.warm_up()
    engine_accel.warm_up()
    print(json.dumps({"depthlab": os.path.dirname(depthlab.__file__)}), flush=True)
    cache: dict[str, tuple] = {}
    for line in sys.stdin:
        req = json.loads(line)
        if req["data"] not in cache:
            with np.load(req["data"]) as d:
                cache[req["data"]] = (d["x"], d["y"], d["xp"], d["yp"])
        x, y, xp, yp = cache[req["data"]]
        if req.get("check"):
            out = {"digest": record_digest(req["spec"], x, y, req["steps"])}
        else:
            mode = None if req["mode"] is None else MODES[req["mode"]]
            cpu, f = run(req["spec"], mode, x, y, xp, yp, req["steps"])
            out = {"cpu": cpu, "f": f}
        print(json.dumps(out), flush=True)


class Worker:
    """A ``--worker`` process on the source tree ``src`` (its ``PYTHONPATH``)."""

    def __init__(self, src: str) -> None:
        env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker"],
                                     env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)
        self.package = self._answer()["depthlab"]

    def _answer(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"probe_overhead worker exited (status {self.proc.wait()})")
        return json.loads(line)

    def ask(self, **req) -> dict:
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        return self._answer()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def compare_trees(args: argparse.Namespace, networks: dict, gen: np.random.Generator
                  ) -> None:
    """``--old``: every mode of every network with the old tree and this checkout's, in
    worker processes, interleaved (module docstring)."""
    import depthlab

    new_src = os.path.dirname(os.path.dirname(os.path.abspath(depthlab.__file__)))
    sides = {"old": Worker(args.old), "new": Worker(new_src)}
    print(f"old: {sides['old'].package}\nnew: {sides['new'].package}")
    tmp = tempfile.TemporaryDirectory()
    load_before = os.getloadavg()
    results: dict[str, dict] = {}
    try:
        for label, spec in networks.items():
            if args.quick and spec["sizes"][1] == 2048 or args.only and args.only not in label:
                continue
            steps = max(10, int(args.steps * spec["steps"]))
            x, y = training_data(spec, gen)
            xp = gen.standard_normal((300, spec["sizes"][0])).astype(np.float32)
            yp = gen.integers(0, spec["sizes"][-1], 300)
            data = os.path.join(tmp.name, f"{len(os.listdir(tmp.name))}.npz")
            np.savez(data, x=x, y=y, xp=xp, yp=yp)
            wire = {k: list(v) if isinstance(v, tuple) else v for k, v in spec.items()}
            digests = {s: w.ask(data=data, spec=wire, mode=None, steps=12, check=True)["digest"]
                       for s, w in sides.items()}
            same = digests["old"] == digests["new"]
            names = ["no probes", *GOALS] if args.goals_only else list(spec.get("modes", MODES))
            times = {s: {m: [] for m in names} for s in sides}
            hooks = {s: {m: [] for m in names} for s in sides}
            for w in sides.values():  # warm-up
                w.ask(data=data, spec=wire, mode=None, steps=max(2, steps // 10))
                w.ask(data=data, spec=wire, mode=names[1], steps=max(2, steps // 10))
            k = 0
            for r in range(args.rounds):
                for m in names if r % 2 == 0 else names[::-1]:
                    for s in (("old", "new") if k % 2 == 0 else ("new", "old")):
                        got = sides[s].ask(data=data, spec=wire, mode=m, steps=steps)
                        times[s][m].append(got["cpu"])
                        hooks[s][m].append(got["f"])
                    k += 1
            results[label] = {"steps": steps, "records_identical": same, "times": times,
                              "hooks": hooks}
            print(f"\n{label}: {steps} steps per run, {args.rounds} rounds; records identical "
                  f"(every=1, 12 steps, frame and histograms): {'yes' if same else 'NO'}")
            print(f"  {'mode':52s} {'old ms':>22s} {'new ms':>22s}  overhead old -> new "
                  "(whole run / paired / hooks)  new/old median (range)")
            for m in names:
                cells = []
                for s in sides:
                    t = times[s][m]
                    cells.append(f"{1e3 * statistics.median(t):7.3f} ({1e3 * min(t):.3f}-"
                                 f"{1e3 * max(t):.3f})")
                line = f"  {m:52s} {cells[0]:>22s} {cells[1]:>22s}"
                if m != "no probes":
                    over = [overheads(times[s], hooks[s], m) for s in sides]
                    line += "  " + " -> ".join(
                        "/".join(f"{v:.1f}" for v in o.values()) + "%" for o in over)
                ratio = [a / b for a, b in zip(times["new"][m], times["old"][m])]
                line += (f"  {statistics.median(ratio):.3f} ({min(ratio):.3f}-"
                         f"{max(ratio):.3f})")
                if m in GOALS:
                    o = overheads(times["new"], hooks["new"], m)
                    line += f"  (goal <= {GOALS[m]:g}%, new: " + ", ".join(
                        f"{key} {'met' if v <= GOALS[m] else 'NOT met'}"
                        for key, v in o.items()) + ")"
                print(line)
    finally:
        for w in sides.values():
            w.close()
        tmp.cleanup()
    print(f"\nload average {os.getloadavg()[0]:.1f} after")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"rounds": args.rounds, "load_before": load_before,
                       "load_after": os.getloadavg(), "goals": GOALS,
                       "sides": {s: w.package for s, w in sides.items()},
                       "results": results}, fh)


if __name__ == "__main__":
    main()
