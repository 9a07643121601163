"""Where one NumPy-engine training step goes, and old code against new, bit for bit.

A step of the networks of the quick reproductions' trainings, ``he2015`` (64 -> 30 ReLU layers
of 128 -> 10, batch 128, SGD momentum 0.9) and ``glorot2010`` (1024 -> 5 tanh layers of 100 ->
6, batch 10, plain SGD), and of ``benchmarks/engine_speed.py``'s small network,
``sigmoid784`` (784 -> 3 sigmoid layers of 100 -> 10, batch 60, plain SGD), each in a fresh
process with the compiled kernels loaded (``DEPTHLAB_ENGINE_KERNELS=numba``) and one BLAS
thread (``--threads N``: N): the thread CPU time of the network's forward, the loss's
forward and backward, the network's backward and the optimizer's step, per step (medians over
blocks of steps, with ranges), and a SHA-1 of every parameter, gradient, optimizer state and
loss after the steps.

With ``--old SRC`` the same runs of the code under ``SRC`` (a ``src`` folder, e.g. a ``git
archive`` of an earlier commit) are interleaved with the new ones, process by process; the
table gives both and their ratio, and the digests must agree (exit status 1 if not).

Usage: ``python benchmarks/step_profile.py [--old /tmp/orig/src] [--pairs 3] [--steps N]
[--threads 1] [he2015] [glorot2010] [sigmoid784]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

NETS = {
    "he2015": dict(sizes=[64] + [128] * 30 + [10], activation="relu", init="he_normal",
                   batch=128, optimizer=dict(momentum=0.9), lr=0.01, steps=60),
    "glorot2010": dict(sizes=[1024] + [100] * 5 + [6], activation="tanh",
                       init="glorot_uniform", batch=10, optimizer={}, lr=0.1, steps=600),
    "sigmoid784": dict(sizes=[784, 100, 100, 100, 10], activation="sigmoid",
                       init="glorot_uniform", batch=60, optimizer={}, lr=0.1, steps=1000),
}
PARTS = ("forward", "loss_forward", "loss_backward", "backward", "optimizer")

CHILD = r"""
import hashlib, json, sys, time
import numpy as np
import depthlab as dl
from depthlab import accel
from depthlab.losses import get_loss
from depthlab.optimizers import get_optimizer

cfg = json.loads(sys.argv[1])
accel.warm_up()
rng = np.random.default_rng(0)
sizes, batch = cfg["sizes"], cfg["batch"]
x = rng.standard_normal((batch * 8, sizes[0])).astype(np.float32)
y = rng.integers(0, sizes[-1], batch * 8)
net = dl.mlp(sizes, activation=cfg["activation"], init=cfg["init"], seed=1)
loss = get_loss("cross_entropy")
opt = get_optimizer("sgd", net.parameters(), lr=cfg["lr"], **cfg["optimizer"])
tick = time.thread_time_ns
parts = {k: [] for k in cfg["parts"]}
losses = []
blocks = 5
per_block = max(1, cfg["steps"] // blocks)
for b in range(blocks):
    acc = dict.fromkeys(parts, 0)
    for s in range(per_block):
        i = (b * per_block + s) % 8
        xb, yb = x[i * batch:(i + 1) * batch], y[i * batch:(i + 1) * batch]
        t0 = tick(); out = net.forward(xb)
        t1 = tick(); losses.append(loss.forward(out, yb))
        t2 = tick(); g = loss.backward()
        t3 = tick(); net.backward(g, input_grad=False)
        t4 = tick(); opt.step()
        t5 = tick()
        for k, d in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
            acc[k] += d
    for k in parts:
        parts[k].append(acc[k] / per_block / 1e3)
h = hashlib.sha1(np.asarray(losses, dtype=np.float64).tobytes())
for p in net.parameters():
    h.update(p.value.tobytes()); h.update(p.grad.tobytes())
    for key, v in sorted(opt.state.get(p, {}).items()):
        h.update(key.encode()); h.update(np.asarray(v).tobytes())
print(json.dumps({"parts": parts, "sha1": h.hexdigest()}))
"""


def run_child(src: Path, cfg: dict, threads: int = 1) -> dict:
    """One fresh process of the code under ``src`` with ``threads`` BLAS threads: per-part
    microseconds per step (one value per block) and the digest."""
    n = str(threads)
    env = dict(os.environ, PYTHONPATH=str(src), DEPTHLAB_ENGINE_KERNELS="numba",
               OMP_NUM_THREADS=n, OPENBLAS_NUM_THREADS=n, MKL_NUM_THREADS=n)
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps({**cfg, "parts": PARTS})],
                         env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def summary(values: list[float]) -> str:
    """``median [min-max]``."""
    return f"{statistics.median(values):.1f} [{min(values):.1f}-{max(values):.1f}]"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("nets", nargs="*", help=f"networks (default: all of {', '.join(NETS)})")
    ap.add_argument("--old", type=Path, help="the src folder of the code to compare with")
    ap.add_argument("--pairs", type=int, default=3, help="processes per side (default 3)")
    ap.add_argument("--steps", type=int, help="steps per process (default: per network)")
    ap.add_argument("--threads", type=int, default=1,
                    help="BLAS threads (default 1; the thread CPU time is the main thread's)")
    args = ap.parse_args(argv)
    if args.pairs < 1 or (args.steps is not None and args.steps < 5) or args.threads < 1:
        ap.error("--pairs and --threads must be >= 1 and --steps >= 5")
    unknown = [n for n in args.nets if n not in NETS]
    if unknown:
        ap.error(f"unknown network {unknown[0]!r}; accepted: {', '.join(NETS)}")
    if args.old is not None and not (args.old / "depthlab").is_dir():
        ap.error(f"--old {args.old}: no depthlab package there; expected a src folder")
    same = True
    for name in args.nets or list(NETS):
        cfg = dict(NETS[name])
        if args.steps:
            cfg["steps"] = args.steps
        sides = {"new": SRC} if args.old is None else {"old": args.old, "new": SRC}
        got: dict[str, dict[str, list[float]]] = {s: {k: [] for k in PARTS} for s in sides}
        digests: dict[str, set[str]] = {s: set() for s in sides}
        for _ in range(args.pairs):
            for side, src in sides.items():
                res = run_child(src, cfg, args.threads)
                digests[side].add(res["sha1"])
                for k in PARTS:
                    got[side][k].extend(res["parts"][k])
        print(f"\n{name} ({args.threads} BLAS thread{'s' if args.threads > 1 else ''}): "
              f"{cfg['sizes'][0]} -> {len(cfg['sizes']) - 2} x {cfg['sizes'][1]} "
              f"{cfg['activation']} -> {cfg['sizes'][-1]}, batch {cfg['batch']}, SGD "
              f"{cfg['optimizer'] or 'plain'}; us per step (thread CPU), median [range]")
        print(f"{'part':<14}" + "".join(f"{s:>26}" for s in sides)
              + ("    new/old" if len(sides) == 2 else ""))
        for k in (*PARTS, "step"):
            cols = {s: ([sum(v) for v in zip(*(got[s][p] for p in PARTS))] if k == "step"
                        else got[s][k]) for s in sides}
            ratio = (f"{statistics.median(cols['new']) / statistics.median(cols['old']):>10.2f}"
                     if len(sides) == 2 else "")
            print(f"{k:<14}" + "".join(f"{summary(cols[s]):>26}" for s in sides) + ratio)
        for side in sides:
            print(f"digest {side}: {', '.join(sorted(digests[side]))}")
        if len(sides) == 2:
            ok = digests["old"] == digests["new"] and len(digests["new"]) == 1
            same &= ok
            print("bits: " + ("identical" if ok else "DIFFER"))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
