"""Training-step speed of depthlab against PyTorch CPU, measured in the same run.

One step = forward + loss + backward + optimizer update (plain SGD), float32, same number of
threads for both. Also reports the share of the machine's float32 matrix-multiply rate that the
wide network reaches. Usage: ``python benchmarks/engine_speed.py [--repeat 5] [--threads N]``.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def _time(fn, steps: int, repeat: int) -> float:
    """Best-of-``repeat`` seconds per step (after one warm-up round)."""
    fn(max(3, steps // 10))
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn(steps)
        best = min(best, (time.perf_counter() - t) / steps)
    return best


def depthlab_step_fn(sizes, activation, init, batch, seed=0):
    import depthlab as dl

    net = dl.mlp(sizes, activation=activation, init=init, seed=seed)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, sizes[0]), dtype=np.float32)
    y = rng.integers(0, sizes[-1], batch)
    loss = dl.loss("cross_entropy")
    opt = dl.optimizer("sgd", net.parameters(), lr=1e-3)

    def run(steps: int) -> None:
        for _ in range(steps):
            out = net.forward(x, training=True)
            loss.forward(out, y)
            net.backward(loss.backward(), input_grad=False, copy=False)
            opt.step()

    return run


def torch_step_fn(sizes, activation, batch, seed=0):
    import torch

    torch.manual_seed(seed)
    act = {"sigmoid": torch.nn.Sigmoid, "relu": torch.nn.ReLU, "tanh": torch.nn.Tanh}[activation]
    layers = []
    for i in range(len(sizes) - 1):
        layers.append(torch.nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(act())
    net = torch.nn.Sequential(*layers)
    x = torch.randn(batch, sizes[0])
    y = torch.randint(0, sizes[-1], (batch,))
    opt = torch.optim.SGD(net.parameters(), lr=1e-3)
    lossf = torch.nn.CrossEntropyLoss()

    def run(steps: int) -> None:
        for _ in range(steps):
            opt.zero_grad(set_to_none=False)
            lossf(net(x), y).backward()
            opt.step()

    return run


def step_flops(sizes, batch) -> float:
    """Multiply-adds x2 of forward (x W), weight gradient (x^T g) and input gradient (g W^T,
    not needed for the first layer)."""
    total = 0.0
    for i in range(len(sizes) - 1):
        mm = 2.0 * batch * sizes[i] * sizes[i + 1]
        total += mm * (2 if i == 0 else 3)
    return total


def matmul_rate(n: int = 2048, repeat: int = 5) -> float:
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
    a @ b
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2.0 * n**3 / best


CASES = [
    ("784-100-100-100-10 sigmoid, batch 60", [784, 100, 100, 100, 10], "sigmoid",
     "glorot_uniform", 60, 400, 1.8),
    ("20 ReLU layers of 256, batch 128", [256] + [256] * 20 + [10], "relu",
     "he_normal", 128, 60, 1.1),
    ("4 ReLU layers of 2048, batch 512", [2048] * 5 + [10], "relu", "he_normal", 512, 6, 1.0),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.threads)
    except ImportError:
        pass
    peak = max(matmul_rate(2048), matmul_rate(1024))
    print(f"threads: {args.threads}; NumPy float32 2048x2048 matmul: {peak / 1e9:.1f} GFLOP/s")
    # All depthlab timings first, then all torch timings: torch's OpenMP worker threads keep
    # spinning after its last operation and would steal the cores from a NumPy run right after.
    t_dl = [_time(depthlab_step_fn(s, a, i, b), n, args.repeat) for _, s, a, i, b, n, _ in CASES]
    t_th = [_time(torch_step_fn(s, a, b), n, args.repeat) for _, s, a, i, b, n, _ in CASES]
    print(f"{'network':40s} {'depthlab ms':>12s} {'torch ms':>10s} {'ratio':>7s} {'target':>7s}")
    for (name, sizes, _act, _init, batch, _steps, target), t_d, t_t in zip(CASES, t_dl, t_th):
        ratio = t_t / t_d
        ok = "ok" if ratio >= target else "BELOW"
        print(f"{name:40s} {t_d * 1e3:12.3f} {t_t * 1e3:10.3f} {ratio:6.2f}x {target:5.1f}x {ok}")
        if sizes[1] == 2048:
            rate = step_flops(sizes, batch) / t_d
            print(f"{'':40s} depthlab reaches {rate / 1e9:.1f} GFLOP/s = "
                  f"{100 * rate / peak:.0f}% of the matmul rate (target >= 85%)")


if __name__ == "__main__":
    main()
