"""Where a ``Watch(every=10)`` cycle's cost goes on the MLP, beside the floor of any recorder
built on PyTorch hooks (issue 8's goal: every 10 steps <= 5%).

The 784-100-100-100-10 ReLU MLP (batch 128, SGD with momentum) of
``benchmarks/torch_probe_overhead.py``, one thread, the process pinned to one core. Four loops,
each with its own model, run in cycles of 10 steps, interleaved cycle by cycle (order
alternating):

* ``baseline``: no recorder;
* ``control``: a second model without a recorder (the resolution of the comparison: two
  identical loops differ by where their tensors lie in memory);
* ``Watch``: ``depthlab.torch.Watch(model, every=10)``, Watch's defaults;
* ``floor``: the least a hook-based recorder of the same sums does, and nothing else: the
  hooks installed before a recorded step and removed after it; one forward hook per ``Linear``
  that reads its output once (:func:`depthlab.torch.kernels.layer_relu`: the layer's and the
  following ReLU's sums in one compiled pass) and registers a gradient hook on the output's
  node (:func:`~depthlab.torch.kernels.sums` of ``dL/d output``); on the recorded step one
  pass over each weight, its gradient and the snapshot
  (:func:`~depthlab.torch.kernels.weight_sums`); before it, the snapshot copy. No rows, no
  checks, no bookkeeping: a lower bound, not a usable recorder.

For each step position of the cycle the table gives the median over cycles of the step's
time minus the baseline's at that position (position 0 is the recorded step, 9 the one before
it), and the whole cycle's difference as a share of the baseline cycle. Only ratios measured in
one run mean anything on a shared machine. ``net`` is that share minus the control's (what the
recorder costs beyond the difference between two identical loops), and ``per cycle`` the
median and interquartile range over cycles of ``cycle_k / baseline_k - 1`` (each cycle against
the baseline cycle run next to it): its spread, and the control's, are the resolution of the
table on this host.

With ``--clock cpu`` each step is timed by the thread's CPU time (``time.thread_time_ns``)
instead of the wall clock: on a host loaded by other processes the wall clock adds the time the
process waited for a core, which swamps a difference of a few percent.

With ``--hooks N`` a new Watch's loop then runs ``N`` more cycles alone, each method of
:data:`HOOKS` wrapped in a timer (the thread's CPU time, inclusive of what it calls), and the
median time per recorded step of each is printed: where the recorded step's time goes, inside
the real loop (caches as the training leaves them; a method run alone, warm, costs a fraction).
The wrappers add about 1 us per call (two clock reads) and are not there in the table above.
Beside it, the same methods of a ``Watch(every=1)`` (its loop run as many steps, per record):
its hooks and host pass run step after step, their code and objects still in the caches. The
ratio of the two columns is what the nine unrecorded steps between two records add to the
record's Python by evicting its code and objects from the caches (on the MLP, a loaded 2-core
host: the forward's hooks 1.5 to 2.7 times their every-step time, the host pass about 1.3
times); ``-`` for a method every=1 does not call (``disarm``).

    python benchmarks/watch_floor.py [--cycles 300] [--clock wall|cpu] [--hooks 100]
"""

from __future__ import annotations

import argparse
import collections
import functools
import os
import statistics
import time

import numpy as np
import torch
from torch import nn

from depthlab.torch import Watch, zoo
from depthlab.torch import hooks as _hooks
from depthlab.torch import watch as _watch
from depthlab.torch.accumulators import watch_kernels

EVERY = 10

HOOKS = (
    # the recorded forward's module hooks, and what the weight layers' hook calls
    "_model_pre", "_roll", "_layer_post", "_fuse", "_watch_grad", "_relu_post", "_model_post",
    # Watch.step's record
    "step", "_record", "_check_backward", "settle", "host_weights", "collect",
    "_collect_host", "_weight_sums", "new_pass", "_changed", "disarm")
"""The methods ``--hooks`` times (of :class:`depthlab.torch.hooks.Recording` or
:class:`depthlab.torch.Watch`; nested ones are included in their callers' times)."""


class Floor:
    """The minimal recorder (module docstring): sums only, kept in ``self.sums``."""

    def __init__(self, model: nn.Module, kernels) -> None:
        self.k = kernels
        self.layers = [m for m in model.modules() if isinstance(m, nn.Linear)]
        self.snap = [torch.empty_like(m.weight) for m in self.layers]
        self.handles: list = []
        self.sums: list = []
        self.calls = 0
        self._arm()

    def _forward(self, module, args, out: torch.Tensor) -> None:
        v = out.detach().numpy()
        alive = np.zeros(v.shape[-1], dtype=bool)
        self.sums.append(self.k.layer_relu(v.reshape(-1, v.shape[-1]), alive))
        out.grad_fn.register_prehook(self._backward)

    def _backward(self, grads: tuple) -> None:
        self.sums.append(self.k.sums(grads[0].numpy().reshape(-1)))

    def _arm(self) -> None:
        self.handles = [m.register_forward_hook(self._forward) for m in self.layers]
        for m, buf in zip(self.layers, self.snap):
            buf.copy_(m.weight.detach())

    def step(self, loss: torch.Tensor) -> None:
        n = self.calls
        self.calls += 1
        if n % EVERY == 0:
            for h in self.handles:
                h.remove()
            for m, buf in zip(self.layers, self.snap):
                self.sums.append(self.k.weight_sums(
                    m.weight.detach().numpy().reshape(-1), m.weight.grad.numpy().reshape(-1),
                    buf.numpy().reshape(-1), False))
            self.sums = [float(loss.detach())]
        if (n + 1) % EVERY == 0:
            self._arm()


def _timed_hooks(spent: dict[str, int]) -> None:
    """Wrap each method of :data:`HOOKS` so that its thread CPU time adds to ``spent``."""
    for name in HOOKS:
        cls = _hooks.Recording if name in vars(_hooks.Recording) else _watch.Watch
        f = vars(cls)[name]

        @functools.wraps(f)
        def timed(*args, _f=f, _name=name, **kwargs):
            t = time.thread_time_ns()
            try:
                return _f(*args, **kwargs)
            finally:
                spent[_name] += time.thread_time_ns() - t
        setattr(cls, name, timed)


def _loop(kind: str, kernels, every: int = EVERY):
    torch.manual_seed(0)
    model = zoo.mlp([784, 100, 100, 100, 10])
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    rec = Watch(model, every=every) if kind == "Watch" else \
        Floor(model, kernels) if kind == "floor" else None
    return model, opt, rec


def _share(times: list[list[int]], base: list[float]) -> float:
    """The cycle's cost as a share of the baseline cycle: ``sum_i median(t_i) / sum_i b_i - 1``
    over the step positions ``i`` (``times[i]``: ns per cycle; ``base[i]``: the baseline's
    median, us)."""
    return sum(statistics.median(t) / 1e3 for t in times) / sum(base) - 1


def _cycle_shares(times: list[list[int]], baseline: list[list[int]]
                  ) -> tuple[float, float, float]:
    """``(median, first quartile, third quartile)`` over cycles ``k`` of
    ``sum_i times[i][k] / sum_i baseline[i][k] - 1``: each cycle against the baseline's cycle
    of the same round (run next to it)."""
    cycles = len(times[0])
    ratios = [sum(t[k] for t in times) / sum(b[k] for b in baseline) - 1 for k in range(cycles)]
    if cycles < 2:
        return ratios[0], ratios[0], ratios[0]
    low, _, high = statistics.quantiles(ratios, n=4)
    return statistics.median(ratios), low, high


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cycles", type=int, default=300)
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="time steps by the wall clock (default) or the thread's CPU time")
    ap.add_argument("--hooks", type=int, default=0, metavar="N",
                    help="then time the Watch's methods in N more cycles of its loop")
    args = ap.parse_args()
    clock = time.perf_counter_ns if args.clock == "wall" else time.thread_time_ns
    kernels = watch_kernels()
    if kernels is None:
        raise SystemExit("the floor uses the compiled kernels: install depthlab[fast] (Numba)")
    torch.set_num_threads(1)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    g = torch.Generator().manual_seed(0)
    x = torch.randn(128, 784, generator=g)
    y = torch.randint(0, 10, (128,), generator=g)
    loss_fn = nn.functional.cross_entropy
    kinds = ("baseline", "control", "Watch", "floor")
    loops = {k: _loop(k, kernels) for k in kinds}

    def cycle(model, opt, rec) -> list[int]:
        out = []
        for _ in range(EVERY):
            t0 = clock()
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            if rec is not None:
                rec.step(loss)
            opt.step()
            out.append(clock() - t0)
        return out

    for _ in range(30):  # warm-up: kernels, allocator, Watch's first record (theory)
        for k in kinds:
            cycle(*loops[k])
    times = {k: [[] for _ in range(EVERY)] for k in kinds}
    for c in range(args.cycles):
        for k in (kinds if c % 2 == 0 else kinds[::-1]):
            for i, t in enumerate(cycle(*loops[k])):
                times[k][i].append(t)
    base = [statistics.median(t) / 1e3 for t in times["baseline"]]
    print(f"torch {torch.__version__}; MLP 784-100-100-100-10, batch 128, 1 thread, pinned; "
          f"{args.cycles} interleaved cycles of {EVERY} steps; {args.clock} clock; load average "
          f"{', '.join(f'{v:.1f}' for v in os.getloadavg())}")
    print(f"per step position: median {args.clock} time minus the baseline's (us); position 0 "
          "is the recorded step")
    print(f"{'':9s}" + "".join(f"{i:>8d}" for i in range(EVERY)) + f"{'cycle':>10s}{'share':>8s}"
          f"{'net':>8s}   per cycle: median [IQR]")
    print(f"{'baseline':9s}" + "".join(f"{b:8.0f}" for b in base) + f"{sum(base):10.0f}")
    control = _share(times["control"], base)
    for k in kinds[1:]:
        d = [statistics.median(t) / 1e3 - b for t, b in zip(times[k], base)]
        share = _share(times[k], base)  # = sum(d) / sum(base)
        mid, low, high = _cycle_shares(times[k], times["baseline"])
        print(f"{k:9s}" + "".join(f"{v:+8.0f}" for v in d)
              + f"{sum(d):+10.0f}{100 * share:+7.1f}%{100 * (share - control):+7.1f}%"
              + f"   {100 * mid:+5.1f}% [{100 * low:+.1f}..{100 * high:+.1f}]")
    if args.hooks > 0:
        spent: dict[str, int] = collections.defaultdict(int)
        _timed_hooks(spent)  # (a new Watch: the armed hooks are the methods bound at arming)
        per: dict[int, dict[str, list[float]]] = {}
        for every in (EVERY, 1):
            timed = _loop("Watch", kernels, every)
            for _ in range(30):
                cycle(*timed)
            per[every] = {name: [] for name in HOOKS}
            for _ in range(args.hooks):
                spent.clear()
                cycle(*timed)  # EVERY steps: one record at every=EVERY, EVERY at every=1
                for name in HOOKS:
                    per[every][name].append(spent[name] / 1e3 / (EVERY // every))
        print(f"Watch's methods, thread CPU time per cycle of {EVERY} steps, inclusive (step: "
              "all 10 calls; _changed: the arming call's too; the rest: the recorded step's); "
              f"median [min..max] of {args.hooks} cycles (us); beside it every=1's per record "
              "(step: one call, recording and arming) and the ratio")
        for name in HOOKS:
            v, w = per[EVERY][name], per[1][name]
            warm = statistics.median(w)
            ratio = f"x{statistics.median(v) / warm:.1f}" if warm else "-"
            print(f"  {name:15s}{statistics.median(v):8.1f}  [{min(v):.1f}..{max(v):.1f}]"
                  f"   every=1 {warm:8.1f}  {ratio}")


if __name__ == "__main__":
    main()
