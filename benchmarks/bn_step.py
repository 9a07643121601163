"""Batch-norm training step of the NumPy engine: old code against new, interleaved.

Each case trains a ReLU + BatchNorm MLP with SGD (momentum 0.9) through ``depthlab.fit`` in a
fresh subprocess that imports depthlab from ``--old`` (a pristine ``src`` folder) or from this
checkout, one BLAS thread. The subprocess prints the process CPU time of the training and a
sha1 of everything the training produced (every parameter, every BatchNorm's running and
population statistics and ``num_batches``, every step loss, the epoch metrics); the two codes
must agree bit for bit (``--check`` exits 1 when not).

Cases (``--cases``): ``yang`` (yang2019's cures: depth 100, width 32, batch 64),
``yang-population`` (the same in ``population`` mode: the trainer's epoch-end calibration,
19 epochs that compute no metric), ``wide`` (depth 20, width 100, batch 64), ``narrow``
(depth 50, width 8, batch 64) and ``grid`` (an identity check over dtypes, batch sizes,
momentum, affine, inference modes, train/eval, residual nets; its timing is not
meaningful). Reported: the median CPU seconds of each code over ``--pairs`` interleaved pairs
and their range, and the new/old ratio.

    python benchmarks/bn_step.py --old /tmp/orig/src --pairs 5 --cases yang wide narrow
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
NEW_SRC = HERE.parent / "src"

# name: (depth, width, batch, rows, steps, BN inference mode)
TIMED = {"yang": (100, 32, 64, 1000, 300, "ema"), "wide": (20, 100, 64, 2000, 300, "ema"),
         "narrow": (50, 8, 64, 1000, 300, "ema"),
         "yang-population": (100, 32, 64, 1000, 300, "population")}

CHILD = r"""
import hashlib, json, sys, time, warnings
import numpy as np
import depthlab as dl

def digest(net, hist):
    h = hashlib.sha1()
    for p in net.parameters():
        h.update(p.name.encode()); h.update(np.ascontiguousarray(p.value).tobytes())
    for bn in net.batchnorms():
        for a in (bn.running_mean, bn.running_var, bn.population_mean, bn.population_var):
            h.update(b"none" if a is None else np.ascontiguousarray(a).tobytes())
        h.update(str(bn.num_batches).encode())
    h.update(np.asarray(hist.step_loss, dtype=np.float64).tobytes())
    h.update(json.dumps([{k: v for k, v in e.items() if k != "seconds"}
                         for e in hist.epochs], sort_keys=True, default=str).encode())
    return h.hexdigest()

def run(case):
    depth, width, batch, rows, steps = case["depth"], case["width"], case["batch"], \
        case["rows"], case["steps"]
    rng = np.random.default_rng(case.get("data_seed", 0))
    x = rng.standard_normal((rows, 10))
    y = (x[:, 0] + x[:, 1] * x[:, 2] > 0).astype(int) + (x[:, 3] > 1)
    kw = dict(batchnorm=True, bn_inference=case.get("inference", "ema"),
              dtype=case.get("dtype", "float32"))
    if "momentum" in case:
        kw["bn_momentum"] = case["momentum"]
    if case.get("residual"):
        kw["residual"] = True
    net = dl.mlp([10] + [width] * (depth - 1) + [3], seed=1, **kw)
    for bn in net.batchnorms():
        if not case.get("affine", True):
            bn.affine = False
        if not case.get("track", True):
            bn.track_running_stats = False
    val = (x[:100], y[:100]) if case.get("val") else (None, None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.process_time()
        hist = dl.fit(net, x, y, *val, optimizer="sgd", lr=case.get("lr", 0.01),
                      optimizer_kwargs={"momentum": 0.9}, batch_size=batch, epochs=None,
                      max_steps=steps, seed=1, eval_train=case.get("eval_train", False),
                      progress=False, threads=1)
        cpu = time.process_time() - t0
    extra = hashlib.sha1()
    if case.get("predict") and case.get("track", True):  # inference after training
        with np.errstate(all="ignore"):
            extra.update(np.ascontiguousarray(net.predict(x[:257])).tobytes())
            net.set_bn_inference("population")
            net.calibrate(x)
            extra.update(np.ascontiguousarray(net.predict(x[:33])).tobytes())
    return cpu, digest(net, hist) + extra.hexdigest()[:8]

out = {}
for name, case in json.loads(sys.argv[1]).items():
    out[name] = run(case)
print(json.dumps(out))
"""


def grid_cases() -> dict[str, dict]:
    """The identity grid: each BN option, dtype and batch shape at least once."""
    cases: dict[str, dict] = {}
    for dtype in ("float32", "float64"):
        for width, depth in ((8, 20), (32, 30), (100, 20)):
            for batch, rows in ((2, 41), (64, 1000), (7, 50), (1024, 2100)):
                cases[f"{dtype}-w{width}-d{depth}-b{batch}-r{rows}"] = dict(
                    depth=depth, width=width, batch=batch, rows=rows, steps=40, dtype=dtype,
                    inference="population" if batch == 7 else "ema", val=batch == 64,
                    eval_train=batch == 2, predict=True)
    base = dict(depth=20, width=32, batch=16, rows=203, steps=50, predict=True)
    cases["mom-none"] = dict(base, momentum=None)
    cases["mom-0.1"] = dict(base, momentum=0.1)
    cases["affine-off"] = dict(base, affine=False)
    cases["affine-off-f64"] = dict(base, affine=False, dtype="float64")
    cases["no-track"] = dict(base, track=False)
    cases["population-val"] = dict(base, inference="population", val=True, eval_train=True)
    cases["population-quiet"] = dict(base, inference="population")
    cases["residual"] = dict(base, residual=True, depth=21, inference="population", val=True)
    cases["full-batch"] = dict(base, batch=203, steps=50, inference="population")
    cases["diverge"] = dict(base, lr=50.0, inference="population", val=True)
    return cases


def child(src: Path, cases: dict[str, dict]) -> dict[str, list]:
    """Run ``cases`` in one subprocess importing depthlab from ``src``."""
    env = dict(os.environ, PYTHONPATH=str(src), OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               MKL_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(cases)], env=env,
                          capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"child ({src}) failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--old", type=Path, required=True, help="pristine src folder")
    ap.add_argument("--new", type=Path, default=NEW_SRC,
                    help="src folder of the new code (default: this checkout's)")
    ap.add_argument("--pairs", type=int, default=3, help="interleaved old/new pairs")
    ap.add_argument("--cases", nargs="+", default=["yang", "wide", "narrow"],
                    choices=[*TIMED, "grid"])
    ap.add_argument("--check", action="store_true", help="exit 1 on any sha1 mismatch")
    args = ap.parse_args(argv)
    for flag, src in (("--old", args.old), ("--new", args.new)):
        if not (src / "depthlab").is_dir():
            ap.error(f"{flag} {src}: no depthlab package there; expected a src folder")
    if args.pairs < 1:
        ap.error(f"--pairs must be at least 1, got {args.pairs}")
    cases: dict[str, dict] = {}
    for name in args.cases:
        if name == "grid":
            cases.update(grid_cases())
        else:
            d, w, b, r, s, mode = TIMED[name]
            cases[name] = dict(depth=d, width=w, batch=b, rows=r, steps=s, inference=mode)
    times: dict[str, dict[str, list[float]]] = {k: {"old": [], "new": []} for k in cases}
    bad = []
    for i in range(args.pairs):
        order = [("old", args.old), ("new", args.new)]
        if i % 2:
            order.reverse()
        got = {label: child(src, cases) for label, src in order}
        for name in cases:
            for label in ("old", "new"):
                times[name][label].append(got[label][name][0])
            if got["old"][name][1] != got["new"][name][1]:
                bad.append(name)
    print(f"{'case':42s} {'old CPU s (range)':>24s} {'new CPU s (range)':>24s} {'new/old':>8s}")
    for name, t in times.items():
        o, n = statistics.median(t["old"]), statistics.median(t["new"])
        print(f"{name:42s} {o:9.3f} ({min(t['old']):.3f}-{max(t['old']):.3f})"
              f" {n:9.3f} ({min(t['new']):.3f}-{max(t['new']):.3f}) {n / o:8.3f}")
    bad = sorted(set(bad))
    print("bit-identical: " + ("all" if not bad else "NO: " + ", ".join(bad)))
    return 1 if bad and args.check else 0


if __name__ == "__main__":
    raise SystemExit(main())
