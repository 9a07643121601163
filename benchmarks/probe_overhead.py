"""Cost of probing during training: time per optimizer step without probes and with a
``ProbeRecorder`` at ``every=10`` and ``every=1``, on the engine's two benchmark networks
(float32, synthetic data of the right shape):

* 784-100-100-100-10 sigmoid, batch 60, probe batch 300 (Glorot & Bengio / Ioffe & Szegedy);
* 20 ReLU layers of 256 (He init), batch 128, probe batch 300.

Training runs with ``eval_train=False`` and no validation set, so the baseline is the bare
training step and the ratios are the strictest. Each configuration is timed ``--repeat`` times
interleaved; the minimum is reported.

    OPENBLAS_NUM_THREADS=1 python benchmarks/probe_overhead.py [--steps 300] [--repeat 3]

(On a shared 2-core machine multithreaded BLAS under contention makes timings erratic; one
BLAS thread gives stable ratios.)

Arithmetic floor: a probe pass over 300 examples costs about 300/batch training steps of
compute (5x for batch 60, 2.3x for batch 128), so at ``every=10`` the probe-batch mode cannot
cost less than roughly 35-50% (sigmoid) or 20-25% (ReLU) of training time; the training-batch
mode (``ProbeRecorder()`` without a probe batch) has no extra pass and only pays for the
statistics.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from depthlab.backend import rng as make_rng
from depthlab.models import mlp
from depthlab.probes import ProbeRecorder
from depthlab.training import fit

NETWORKS = {
    "sigmoid 784-100x3-10, batch 60": dict(
        sizes=[784, 100, 100, 100, 10], activation="sigmoid", init="glorot_uniform", batch=60),
    "relu 20x256, batch 128": dict(
        sizes=[256] + [256] * 20 + [10], activation="relu", init="he_normal", batch=128),
}

MODES = {
    "no probes": None,
    "every=10, probe batch 300": dict(every=10, probe=True),
    "every=10, probe batch 300, no histograms": dict(every=10, probe=True, histogram_steps=()),
    "every=10, training batch": dict(every=10, probe=False),
    "every=1, training batch": dict(every=1, probe=False),
    "every=1, training batch, no histograms": dict(every=1, probe=False, histogram_steps=()),
    "every=1, training batch, no histograms/percentiles": dict(every=1, probe=False,
                                                              histogram_steps=(),
                                                              percentiles=()),
    "every=1, probe batch 300": dict(every=1, probe=True),
}


def run(spec: dict, mode: dict | None, x, y, xp, yp, steps: int) -> float:
    net = mlp(spec["sizes"], activation=spec["activation"], init=spec["init"], seed=0)
    callbacks = []
    if mode is not None:
        kw = {k: v for k, v in mode.items() if k not in ("probe",)}
        if mode["probe"]:
            callbacks.append(ProbeRecorder(xp, yp, "cross_entropy", **kw))
        else:
            callbacks.append(ProbeRecorder(**kw))
    t = time.perf_counter()
    fit(net, x, y, loss="cross_entropy", optimizer="sgd", lr=0.01, batch_size=spec["batch"],
        epochs=None, max_steps=steps, eval_train=False, callbacks=callbacks)
    return (time.perf_counter() - t) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    gen = make_rng(0)
    for label, spec in NETWORKS.items():
        d = spec["sizes"][0]
        n = spec["batch"] * 50
        x = gen.standard_normal((n, d)).astype(np.float32)
        y = gen.integers(0, spec["sizes"][-1], n)
        xp = gen.standard_normal((300, d)).astype(np.float32)
        yp = gen.integers(0, spec["sizes"][-1], 300)
        best = {m: float("inf") for m in MODES}
        run(spec, None, x, y, xp, yp, 20)  # warm-up
        for _ in range(args.repeat):
            for m, mode in MODES.items():
                best[m] = min(best[m], run(spec, mode, x, y, xp, yp, args.steps))
        base = best["no probes"]
        print(f"\n{label}: {args.steps} steps, best of {args.repeat}")
        for m, t in best.items():
            extra = "" if m == "no probes" else f"  overhead {100 * (t / base - 1):6.1f}%"
            print(f"  {m:50s} {1e3 * t:8.3f} ms/step{extra}")


if __name__ == "__main__":
    main()
