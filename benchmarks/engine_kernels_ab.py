"""The engine's compiled kernels (:mod:`depthlab.kernels`) against its NumPy path, with JAX
``jit`` as the yardstick, in one process.

The two depthlab paths are switched in the same process (:mod:`depthlab.accel`), their blocks
of steps interleaved round after round with JAX's, so that the shared machine's load hits all
three alike; times are CPU seconds of the process (``time.process_time``: with the process
pinned to one core, ``taskset -c 0``, that is the step's own time, JAX's worker threads
included). First the two paths are checked to give the same parameters bit for bit after 30
steps of each network, float32 and float64.

With ``--old SRC`` (the ``src`` folder of another checkout, e.g. ``git archive HEAD src | tar -x
-C /tmp/old`` taken before a change) that version of depthlab is imported beside this one (as the
package ``depthlab_old``, the engine's relative imports make that work), checked to give the same
parameters bit for bit as this one after 30 steps, and timed in the same interleaved rounds as
``old``; the line ``old/new`` gives the median of the per-round ratios (old time / new time) with
their range.

Usage: ``env -u OMP_NUM_THREADS taskset -c 0 python benchmarks/engine_kernels_ab.py
[--rounds 21] [--cases 0,1,2] [--no-jax] [--old /tmp/old/src]`` (cases: those of
``engine_speed.py``).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import engine_speed as es  # noqa: E402


def same_bits(kernels, case) -> dict[str, bool]:
    """Parameters after 30 SGD steps (lr 0.1) on both paths: identical, per dtype."""
    import depthlab as dl
    from depthlab import accel

    _, sizes, act, init, batch, _ = case
    out = {}
    for dt in ("float32", "float64"):
        runs = []
        for k in (None, kernels):
            accel._state["kernels"] = k
            net = dl.mlp(sizes, activation=act, init=init, seed=0, dtype=dt)
            x, y = es._data(sizes, batch, dt)
            loss = dl.loss("cross_entropy")
            opt = dl.optimizer("sgd", net.parameters(), lr=0.1)
            for _ in range(30):
                loss.forward(net.forward(x, training=True), y)
                net.backward(loss.backward(), input_grad=False, copy=False)
                opt.step()
            runs.append([p.value.copy() for p in net.parameters()])
        out[dt] = all(np.array_equal(a, b) for a, b in zip(*runs))
    accel._state["kernels"] = kernels
    return out


def load_old(src: str):
    """The depthlab package in the folder ``src`` imported as ``depthlab_old``, its compiled
    kernels loaded (:func:`depthlab.accel.warm_up`; ``main`` points Numba's cache at a folder of
    its own first)."""
    root = Path(src).resolve() / "depthlab"
    spec = importlib.util.spec_from_file_location(
        "depthlab_old", root / "__init__.py", submodule_search_locations=[str(root)])
    mod = importlib.util.module_from_spec(spec)
    sys.modules["depthlab_old"] = mod
    spec.loader.exec_module(mod)
    importlib.import_module("depthlab_old.accel").warm_up()
    return mod


def module_step(dl, case, dtype="float32", steps_out=None):
    """``engine_speed``'s step (SGD lr 1e-3, cross-entropy, no input gradient) built with the
    depthlab module ``dl``; ``steps_out``: a list that receives the parameters after each
    block (for the bit check)."""
    _, sizes, act, init, batch, _ = case
    net = dl.mlp(sizes, activation=act, init=init, seed=0, dtype=dtype)
    x, y = es._data(sizes, batch, dtype)
    loss = dl.loss("cross_entropy")
    opt = dl.optimizer("sgd", net.parameters(), lr=0.1 if steps_out is not None else 1e-3)

    def run(steps: int) -> None:
        for _ in range(steps):
            loss.forward(net.forward(x, training=True), y)
            net.backward(loss.backward(), input_grad=False, copy=False)
            opt.step()
        if steps_out is not None:
            steps_out.append([p.value.copy() for p in net.parameters()])

    return run


def same_bits_as_old(old, case) -> dict[str, bool]:
    """Parameters after 30 SGD steps (lr 0.1) of this depthlab and of ``old``: identical, per
    dtype (both on their compiled kernels)."""
    import depthlab as dl

    out = {}
    for dt in ("float32", "float64"):
        runs: list = []
        for mod in (old, dl):
            module_step(mod, case, dt, runs)(30)
        out[dt] = all(np.array_equal(a, b) for a, b in zip(*runs))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=21)
    ap.add_argument("--cases", default="0,1")
    ap.add_argument("--no-jax", action="store_true")
    ap.add_argument("--old", default=None, help="src folder of the version to compare with")
    args = ap.parse_args()
    if args.old:
        # Numba's on-disk cache of the old tree's kernels would name the module depthlab_old
        # and fail a later plain import of that tree: a cache of this run's own
        import tempfile

        os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="depthlab-ab-numba-")
    from depthlab import accel

    kernels = accel.kernels()
    if kernels is None:
        sys.exit("the compiled kernels are not available (pip install -e '.[fast]')")
    accel.warm_up()
    old = load_old(args.old) if args.old else None
    for i in (int(c) for c in args.cases.split(",")):
        case = es.CASES[i]
        name, sizes, act, init, batch, steps = case
        print(f"{name}: same bits on both paths: {same_bits(kernels, case)}")
        fns = {}
        if old is not None:
            print(f"  same bits as the old version: {same_bits_as_old(old, case)}")
            fns["old"] = (kernels, module_step(old, case))
        for label, k in (("numpy", None), ("kernels", kernels)):
            accel._state["kernels"] = k
            fns[label] = (k, es.depthlab_step(sizes, act, init, batch))
        if not args.no_jax:
            fns["jax"] = (kernels, es.jax_step(sizes, act, init, batch))
        for k, fn in fns.values():  # warm-up block
            accel._state["kernels"] = k
            fn(steps)
        times: dict[str, list[float]] = {label: [] for label in fns}
        for _ in range(args.rounds):
            for label, (k, fn) in fns.items():
                accel._state["kernels"] = k
                t0 = time.process_time()
                fn(steps)
                times[label].append((time.process_time() - t0) / steps * 1e3)
        med = {label: statistics.median(v) for label, v in times.items()}
        for label, v in times.items():
            print(f"  {label:8s} {med[label]:9.4f} ms/step  (range {min(v):.4f}..{max(v):.4f})")
        line = f"  kernels/numpy {med['kernels'] / med['numpy']:.3f}"
        if "jax" in med:
            line += (f"; JAX/depthlab (above 1: depthlab faster) numpy "
                     f"{med['jax'] / med['numpy']:.3f}, kernels {med['jax'] / med['kernels']:.3f}")
        print(line)
        if old is not None:
            r = [a / b for a, b in zip(times["old"], times["kernels"])]
            print(f"  old/new {statistics.median(r):.3f} (range {min(r):.3f}..{max(r):.3f}; "
                  "above 1: the new version faster)")


if __name__ == "__main__":
    main()
