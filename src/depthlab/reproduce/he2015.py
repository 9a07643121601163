"""He, Zhang, Ren & Sun 2015 — "Delving deep into rectifiers" (initialization part).

A ReLU layer halves the second moment of its input, so keeping the forward signal (and the
back-propagated gradient) at a constant scale needs ``Var(W) = 2 / fan_in`` (``he_normal``).
Xavier/Glorot's ``Var(W) = 2 / (fan_in + fan_out)`` (= 1 / n for square layers) loses a factor
2 in variance per layer: over a 30-layer ReLU net the first layer's back-propagated gradient is
about ``2^(29/2) ~ 2.3e4`` times smaller than with He's init, and training "completely stalls".

Setup: 30 hidden ReLU layers, 64-dim 10-class Gaussian clusters, batch 128 (papers.md NumPy
check); SGD with momentum 0.9 at lr 1e-3 (the check's plain-SGD step of 0.01, as an effective
step ``lr / (1 - momentum)``), divided by 10 twice as in the paper's schedule (here at fixed
points, 2/3 and 5/6 of the budget: with a constant step the fitted He net spikes late,
2.45 -> 0.0015 -> 0.88 in 1,500 steps); ``glorot_uniform`` against ``he_normal``, each seed
with the same data order for both.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

import depthlab as dl
from depthlab.data import load_dataset
from depthlab.probes import ProbeRecorder
from depthlab.training import Callback

from ..progress import ExperimentProgress
from .base import Claim, Result, readable, register

DEPTH = 30
LR = 1e-3
MOMENTUM = 0.9
DECAY_AT = (2 / 3, 5 / 6)  # fractions of the budget where the step is divided by 10
BATCH = 128
INITS = ("glorot_uniform", "he_normal")
INIT_NAMES = {"glorot_uniform": "Xavier init", "he_normal": "He init"}  # the paper's words
LABELS = {"glorot_uniform": "Xavier/Glorot (glorot_uniform)", "he_normal": "He (he_normal)"}
COLORS = {"glorot_uniform": "tab:red", "he_normal": "tab:blue"}
# Thresholds decided from the paper's statements before running:
STALL_RATIO = 0.95  # "stalls": final loss >= 95% of the initial loss
GRAD_FACTOR = 3.0  # first-layer gradient He / Xavier at step 0 within 3x of 2^((DEPTH-1)/2)


def _settings(quick: bool) -> dict:
    """``train_ratio``: He "trains" when the final loss of every seed is at most this fraction
    of its initial loss, a band set from this schedule's measured runs with room for seeds not
    run (about 2x-5x the worst seed): full (width 256, seeds 1-3) 0.12-0.21%, band 1%; quick
    (width 128) 2.6% on seed 1 and 2.4% on seed 2, band 5%."""
    if quick:
        return dict(width=128, steps=1500, probe_every=100, n_probe=256, train_ratio=0.05,
                    seeds=(1,))
    return dict(width=256, steps=1500, probe_every=50, n_probe=256, train_ratio=0.01,
                seeds=(1, 2, 3))


class StepDecay(Callback):
    """Divides the optimizer's step by 10 after each step in ``at``: ``lr_t = lr 0.1^k``,
    ``k`` the number of entries of ``at`` below ``t``."""

    def __init__(self, lr: float, at: list[int]) -> None:
        self.lr, self.at = lr, sorted(at)

    def before_update(self, trainer, step: int) -> None:
        trainer.optimizer.lr = self.lr * 0.1 ** sum(step > a for a in self.at)


def _loss(v: float) -> str:
    """A loss for a caption: 3 decimals near ln 10 (2.303 vs 2.287), 2 digits when small or
    huge (a broken run)."""
    return readable(v, ".3f") if v >= 0.1 else f"{v:.2g}"


def _window_mean(values: list[float], n: int, head: bool) -> float:
    """Mean of the first (``head``) or last ``n`` losses; NaN when there is none (a run that
    diverged at its first step records no finite mini-batch loss)."""
    v = values[:n] if head else values[-n:]
    return float(np.mean(v)) if len(v) else math.nan


@register(
    "he2015",
    "He et al. 2015: He init trains a 30-layer ReLU net, Xavier init stalls",
    "He, Zhang, Ren, Sun (2015), Delving Deep into Rectifiers, ICCV",
    "30 hidden ReLU layers trained with SGD (momentum 0.9, step divided by 10 twice) from "
    "glorot_uniform and he_normal weights: loss curves and first-layer gradient magnitudes.",
    data=(),  # the reference setup's 64-dim Gaussian clusters (load_dataset below)
)
def run(quick: bool = False, data: str | None = None,
        progress: bool | str | ExperimentProgress = False) -> Result:
    """Train the 30-layer ReLU net from both inits; compare loss and first-layer gradients."""
    cfg = _settings(quick)
    res = Result("he2015", "He et al. 2015 — initialization of deep rectifier networks")
    if data not in (None, "clusters"):
        res.notes.append(f"data={data!r} ignored: this experiment uses the 64-dim Gaussian "
                         "clusters of the reference setup.")
    ds = load_dataset("clusters", seed=0, n=5000, d=64, n_classes=10)
    px, py = ds.x_val[: cfg["n_probe"]], ds.y_val[: cfg["n_probe"]]
    sizes = [64] + [cfg["width"]] * DEPTH + [10]
    steps, seeds = cfg["steps"], cfg["seeds"]
    decay = [round(f * steps) for f in DECAY_AT]
    runs: dict[tuple[str, int], dict] = {}
    p = ExperimentProgress.of(progress)
    label = {(init, seed): f"{DEPTH} ReLU layers, {INIT_NAMES[init]}, seed {seed}"
             for seed in seeds for init in INITS}
    p.plan(label.values())
    for key in label:
        init, seed = key
        net = dl.mlp(sizes, activation="relu", init=init, seed=seed)
        rec = ProbeRecorder(px, py, every=cfg["probe_every"], histogram_steps=())
        t0 = time.perf_counter()
        with p.stage(label[key]):
            hist = dl.fit(net, ds.x_train, ds.y_train, optimizer="sgd", lr=LR,
                          optimizer_kwargs={"momentum": MOMENTUM}, batch_size=BATCH,
                          epochs=None, max_steps=steps, seed=seed + 1,
                          callbacks=[rec, StepDecay(LR, decay)], eval_train=False,
                          progress=p.training)
        frame = rec.frame()
        grad0 = frame[frame.step == 0].drop(columns="step")  # the network at initialization
        runs[key] = dict(hist=hist, grad0=grad0, rec=frame, seconds=time.perf_counter() - t0)

    # -- measurements ----------------------------------------------------------------------
    n_head, n_tail = 10, max(10, steps // 20)
    theory_ratio = 2.0 ** ((DEPTH - 1) / 2)
    rows = []
    for (init, seed), r in runs.items():
        g0 = r["grad0"]
        wg = g0[g0.quantity == "weight_grad_absmean"].set_index("layer")["value"]
        loss = np.asarray(r["hist"].step_loss, dtype=np.float64)
        # an empty curve (diverged at the first step) summarizes to NaN: np.convolve and
        # np.max of it raised, and a broken experiment crashed instead of failing its claims
        rows.append(dict(
            init=init, seed=seed,
            loss_first=_window_mean(loss, n_head, True),
            loss_last=_window_mean(loss, n_tail, False),
            loss_min10=(float(np.convolve(loss, np.ones(10) / 10, "valid").min())
                        if loss.size else math.nan),
            loss_max_late=float(np.max(loss[loss.size // 2:])) if loss.size else math.nan,
            grad_w1_step0=float(wg.loc[1]),
            grad_w30_step0=float(wg.loc[DEPTH]),
            diverged=r["hist"].diverged,
            seconds=r["seconds"],
        ))
    table = pd.DataFrame(rows)
    table["final/initial"] = table.loss_last / table.loss_first
    res.tables["summary"] = table
    lo = table[table.init == "glorot_uniform"].set_index("seed")
    hi = table[table.init == "he_normal"].set_index("seed")
    stall, train = lo["final/initial"], hi["final/initial"]
    # NumPy, not pandas (which skips NaN): a seed without a finite loss is not 'stalls/trains'
    stall_min = float(np.min(stall.to_numpy(dtype=np.float64)))
    train_max = float(np.max(train.to_numpy(dtype=np.float64)))
    ratio = (hi.grad_w1_step0 / lo.grad_w1_step0) / theory_ratio  # per seed, vs the theory
    r = ratio.to_numpy(dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        dev = np.abs(np.log(r))
    # the seed farthest from the theory; NaN when a seed was not measured (pandas' idxmax
    # raised on an all-NaN ratio)
    worst = math.nan if np.isnan(dev).any() else float(r[int(np.argmax(dev))])
    n = len(seeds)
    each = "" if n == 1 else f" on each of {n} seeds"

    def spread(v: pd.Series, fmt: str) -> str:
        """One seed's value, or the range over seeds (NumPy: a NaN seed shows as nan, pandas'
        min/max skipped it); readable for a broken run (:func:`_num`)."""
        a = v.to_numpy(dtype=np.float64)
        if n == 1:
            return readable(a[0], fmt)
        return f"{readable(np.min(a), fmt)}–{readable(np.max(a), fmt)}"

    def diverged(t: pd.DataFrame) -> str:
        """"; diverged (seed 2)": the seeds whose loss became non-finite (their summaries are
        of the finite steps before it, NaN when there was none)."""
        bad = [str(k) for k, v in t.diverged.items() if v]
        return f"; diverged (seed {', '.join(bad)})" if bad else ""

    band = cfg["train_ratio"]
    # "stalls" is the init's doing only beside a He net that trained in the same setup: with
    # nothing learning (a step of 1e-9) both curves are flat and Xavier 'stalled' at 100.0%
    he_trained = bool(train_max <= band and not hi.diverged.any())
    res.claims.append(Claim(
        f"{DEPTH}-layer ReLU net, Xavier init: training stalls (final loss ≥ "
        f"{STALL_RATIO:.0%} of initial{each}) where He init trains",
        "'completely stalls'; NumPy check 2.303 → 2.287 in 1,500 steps",
        f"{spread(lo.loss_first, '.3f')} → {spread(lo.loss_last, '.3f')} in {steps} steps "
        f"({spread(stall, '.1%')}){diverged(lo)}"
        + ("" if he_trained else
           f"; He init did not train either (final/initial {spread(train, '.1%')}, not ≤ "
           f"{band:.0%}): nothing trains in this setup, not a stall caused by the init"),
        bool(stall_min >= STALL_RATIO and not lo.diverged.any() and he_trained),
        value=stall_min,
    ))
    res.claims.append(Claim(
        f"{DEPTH}-layer ReLU net, He init: trains (final loss ≤ {band:.0%} of initial{each})",
        "converges; NumPy check 2.29 → 0.003 in 1,500 steps",
        f"{spread(hi.loss_first, '.3f')} → {spread(hi.loss_last, '.4f')} in {steps} steps "
        f"({spread(train, '.2%')}; largest loss in the second half "
        f"{readable(np.max(hi.loss_max_late.to_numpy()), '.3f')}){diverged(hi)}",
        bool(train_max <= band and not hi.diverged.any()), value=train_max,
    ))
    res.claims.append(Claim(
        f"first-layer mean |dL/dW| at step 0: He / Xavier within {GRAD_FACTOR:g}× of the "
        f"variance theory 2^({DEPTH - 1}/2) = {theory_ratio:.2g}{each}",
        "~10^4× (NumPy check 6.9e-3 vs 1.8e-7); each ReLU layer halves the back-propagated "
        "variance under Xavier, keeps it under He",
        f"{spread(hi.grad_w1_step0, '.2e')} vs {spread(lo.grad_w1_step0, '.2e')} "
        f"({spread(ratio, '.2f')}× the theory)",
        bool(((1 / GRAD_FACTOR <= ratio) & (ratio <= GRAD_FACTOR)).all()), value=worst,
    ))
    if not (train_max <= band and stall_min >= STALL_RATIO):  # NaN: not shown to hold
        res.notes.append(
            f"A training claim does not hold: He's final/initial loss "
            f"{spread(train, '.2%')} against the band {band:.0%} (lowest 10-step mean "
            f"{readable(np.min(hi.loss_min10.to_numpy()), '.4f')}, largest loss in the second half "
            f"{readable(np.max(hi.loss_max_late.to_numpy()), '.3f')}); Xavier's "
            f"{spread(stall, '.1%')}."
        )
    res.notes.append(
        f"Setup: {DEPTH} hidden ReLU layers of {cfg['width']} units, clusters (64-dim, 10 "
        f"classes, separation 3), batch {BATCH}, SGD momentum {MOMENTUM} at lr {LR:g} (the "
        f"reference check's plain-SGD 0.01 as an effective step lr/(1 − momentum); at an "
        f"effective 0.05 Xavier starts to learn and He becomes unstable), divided by 10 after "
        f"steps {decay[0]} and {decay[1]} of {steps} (the paper divides it by 10 twice when "
        "the error plateaus; with a constant step the fitted He net spiked late: 2.446 → "
        "0.0015 → 0.884 in 1,500 steps at width 256, and plain SGD at 0.01 with this "
        "schedule still spiked to a loss of 2–4 before the first division); seeds "
        f"{', '.join(map(str, seeds))}, each training both inits with the same data order. "
        f"Loss 'initial' = mean of the first {n_head} mini-batch losses, 'final' = mean of "
        f"the last {n_tail}. Gradients measured on {cfg['n_probe']} held-out examples.  Single "
        "networks scatter around 2^(29/2): at finite width the back-propagated signal's "
        "fluctuations grow with depth/width, so one net's first-layer gradient is off by a "
        "factor of order 1 (widths 64-256 measured 0.7-2.1x)."
        + (f" Quick version: {cfg['width']}-unit layers, one seed (the full run: 256, three)."
           if quick else "")
    )
    res.figures["loss_and_gradients"] = _figure(runs, dict(cfg, decay=decay))
    res.captions["loss_and_gradients"] = (
        f"Left: training loss of the {DEPTH}-layer ReLU nets per mini-batch (faint) and its "
        "10-step mean (line), log scale; dotted: ln 10, a uniform guess; dashed: the steps "
        f"where the lr is divided by 10. Xavier {_loss(lo.loss_first.mean())} → "
        f"{_loss(lo.loss_last.mean())}, He {_loss(hi.loss_first.mean())} → "
        f"{_loss(hi.loss_last.mean())}"
        ". Middle: first-layer mean |dL/dW| during training. Right: mean |dL/dW| of every "
        "hidden layer at step 0; the variance theory puts the Xavier curve 2^(29/2) ≈ 2.3e4 "
        f"below He's (measured at layer 1: {(hi.grad_w1_step0 / lo.grad_w1_step0).mean():.2g}×)."
    )
    return res


def _figure(runs: dict[tuple[str, int], dict], cfg: dict) -> Figure:
    fig = Figure(figsize=(14, 4.2))
    ax1, ax2, ax3 = fig.subplots(1, 3)
    labelled: set[str] = set()
    for (init, _seed), r in runs.items():
        lab = None if init in labelled else LABELS[init]
        labelled.add(init)
        loss = np.asarray(r["hist"].step_loss)
        k = 10
        smooth = np.convolve(loss, np.ones(k) / k, mode="valid") if loss.size >= k else loss
        ax1.plot(np.arange(1, loss.size + 1), loss, color=COLORS[init], alpha=0.15, lw=0.6)
        ax1.plot(np.arange(k, k + smooth.size), smooth, color=COLORS[init], label=lab)
        f = r["rec"]
        g1 = f[(f.layer == 1) & (f.quantity == "weight_grad_absmean")]
        ax2.semilogy(g1.step, g1.value, "o-", ms=3, color=COLORS[init], label=lab)
        g0 = r["grad0"]
        wg = g0[g0.quantity == "weight_grad_absmean"]
        ax3.semilogy(wg.layer, wg.value, "o-", ms=3, color=COLORS[init], label=lab)
    ax1.set_yscale("log")
    ax1.set_xlabel("SGD step")
    ax1.set_ylabel("training loss (mini-batch; line: 10-step mean)")
    n = len(cfg["seeds"])
    ax1.set_title(f"{DEPTH} ReLU layers × {cfg['width']}: training loss "
                  f"({n} seed{'s' if n > 1 else ''})")
    ax1.axhline(math.log(10), color="gray", ls=":", lw=1, label="ln 10 (uniform guess)")
    for k, step in enumerate(cfg["decay"]):
        ax1.axvline(step, color="gray", ls="--", lw=0.8,
                    label="lr ÷ 10" if k == 0 else None)
    ax2.set_xlabel("SGD step")
    ax2.set_ylabel("mean |dL/dW| of layer 1")
    ax2.set_title("first-layer gradient magnitude")
    ax3.set_xlabel("hidden layer")
    ax3.set_ylabel("mean |dL/dW| at step 0")
    ax3.set_title("weight gradients per layer at initialization")
    for ax in (ax1, ax2, ax3):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
