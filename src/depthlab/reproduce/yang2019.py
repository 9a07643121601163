"""Yang, Pennington, Rao, Sohl-Dickstein & Schoenholz 2019 — "A mean field theory of batch
normalization".

At initialization batch normalization itself makes the gradients of a plain (non-residual)
network grow geometrically towards the input, whatever ``sigma_w`` and ``sigma_b``: for ReLU and
large batches the squared gradient norm grows by ``pi / (pi - 1)`` per layer, so the norm by
``sqrt(pi / (pi - 1)) ~= 1.211``; smaller batches explode faster. This is why plain
batch-normalized MLPs stop training long before a hundred layers.

Measured here: (1) the per-layer growth of ``||dL/dW_l||`` in plain ReLU + BN MLPs at
initialization (He init, Gaussian inputs, batch 256, a standard-normal gradient injected at a
10-way output, float64), ``exp(-slope)`` of a least-squares line through ``ln ||dL/dW_l||``
against ``l`` (the last two layers left out: the output boundary), over depths and widths,
beside ``sqrt(pi / (pi - 1))``; the same at batch sizes 8, 32, 256; (2) 100-layer networks on
digits (the depth ladder's recipes, SGD with momentum 0.9): plain BN at the ladder's lr, the
same with residual connections, and plain BN with a 10x smaller learning rate and more steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

import depthlab as dl
from depthlab.backend import rng as make_rng

from ..progress import ExperimentProgress
from .base import Claim, Result, guess_rate, load_data, register, train_accuracy
from .depth_ladder import BN, RES, build

PREDICTED = math.sqrt(math.pi / (math.pi - 1.0))  # per-layer growth of the gradient norm
GROWTH_TOL = 0.03  # measured within 3% of the prediction at widths >= TIGHT_WIDTH
TIGHT_WIDTH = 128
BATCH = 256
TRAIN_DEPTH = 100  # weight layers of the trainability comparison
LR = 0.01
TRAINS = 0.9  # training accuracy >= 90%: trains
FAILS = 0.5  # training accuracy < 50%: does not train (chance 10%; see load_data)


def gradient_norms(depth: int, width: int, batch: int, seed: int) -> np.ndarray:
    """``||dL/dW_l||_F`` of the ``depth`` hidden layers of a plain ReLU + BN MLP
    ``[width] * (depth + 1) + [10]`` (He init, float64) at initialization: training-mode
    forward of ``x ~ N(0, I)`` (``batch`` rows), a standard-normal gradient at the output."""
    net = dl.mlp([width] * (depth + 1) + [10], activation="relu", init="he_normal",
                 batchnorm=True, dtype="float64", seed=seed)
    gen = make_rng(1000 + seed)
    x = gen.standard_normal((batch, width))
    out = net.forward(x, training=True)
    net.backward(gen.standard_normal(out.shape), input_grad=False)
    norms = np.array([np.linalg.norm(p.dense.W.grad) for p in net.probe_points()])
    net.clear_cache()
    return norms


def growth_factor(norms: np.ndarray) -> float:
    """Per-layer growth towards the input: ``exp(-slope)`` of the least-squares line through
    ``ln norms[l]`` against ``l``, leaving out the last two layers (the output boundary)."""
    keep = norms[:-2] if norms.size > 4 else norms
    slope = np.polyfit(np.arange(keep.size, dtype=float), np.log(keep), 1)[0]
    return float(math.exp(-slope))


def growth_table(depths: list[int], widths: list[int], seeds: list[int],
                 batch: int = BATCH) -> pd.DataFrame:
    rows = []
    for width in widths:
        for depth in depths:
            for seed in seeds:
                norms = gradient_norms(depth, width, batch, seed)
                g = growth_factor(norms)
                rows.append({"width": width, "depth": depth, "batch": batch, "seed": seed,
                             "growth": g, "deviation": g / PREDICTED - 1.0,
                             "first / last": float(norms[0] / norms[-1])})
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class Inputs:
    """What the stages read: the growth grid, the batch-size comparison, the training set-up."""

    depths: list[int]
    widths: list[int]
    seeds: list[int]
    batch_width: int
    ds: Any
    dname: str
    steps: int
    train_width: int
    progress: ExperimentProgress


BATCHES = (8, 32, BATCH)  # the batch-size comparison at depth 50


def cures(steps: int) -> list[tuple[str, str, float, int]]:
    """The trainability comparison: (label, recipe, lr, steps)."""
    return [("plain BN", BN, LR, steps), ("plain BN + residual", RES, LR, steps),
            ("plain BN, lr/10, 5x steps", BN, LR / 10, 5 * steps)]


def growth_label(width: int, depths: list[int]) -> str:
    """One width of the growth grid, as a progress stage."""
    return f"gradient growth at init, width {width}, depths {depths} (measured)"


def batch_label(batch: int) -> str:
    """One batch size of the batch comparison, as a progress stage."""
    return f"gradient growth at init, depth 50, batch {batch} (measured)"


def cure_label(label: str) -> str:
    """One training of the trainability comparison, as a progress stage."""
    return f"{TRAIN_DEPTH} layers, {label}"


def stage_labels(d: Inputs) -> list[str]:
    """Every stage of :func:`run`, in order (declared before the first one starts)."""
    return ([growth_label(w, d.depths) for w in d.widths] + [batch_label(b) for b in BATCHES]
            + [cure_label(c[0]) for c in cures(d.steps)])


def stage_growth(d: Inputs, res: Result) -> None:
    """Per-layer gradient growth at init over depths and widths against the prediction."""
    depths, widths, seeds = d.depths, d.widths, d.seeds
    parts = []
    for width in widths:
        with d.progress.stage(growth_label(width, depths)):
            parts.append(growth_table(depths, [width], seeds))
    gt = pd.concat(parts, ignore_index=True)
    res.tables["growth"] = gt
    wide = gt[gt["width"] >= TIGHT_WIDTH]
    # NumPy reductions, not pandas' (which skip NaN): a depth whose growth is not finite was
    # not shown to match, so "at every depth" must not hold on the others (it did: depth 30
    # NaN, "worst deviation 0.3%" from depth 10 alone)
    dev_wide = wide["deviation"].to_numpy(dtype=float)
    worst = float(np.max(np.abs(dev_wide))) if dev_wide.size else math.nan
    n_bad = int((~np.isfinite(dev_wide)).sum())
    C = res.claims
    C.append(Claim(f"per-layer growth of ||dL/dW|| within {GROWTH_TOL:.0%} of √(π/(π−1)) at "
                   f"every depth {depths} for widths ≥ {TIGHT_WIDTH} (batch {BATCH})",
                   f"√(π/(π−1)) = {PREDICTED:.4f} per layer (ReLU, large batch)",
                   f"growth {wide['growth'].min():.4f}–{wide['growth'].max():.4f}; worst "
                   f"deviation {worst:.1%}"
                   + (f" ({n_bad} of {dev_wide.size} growths not finite)" if n_bad else ""),
                   bool(worst <= GROWTH_TOL), value=worst))
    by_width = gt.groupby("width")["deviation"].apply(
        lambda v: float(np.mean(np.abs(v.to_numpy(dtype=float)))))  # NaN stays NaN
    narrow, widest = by_width.iloc[0], by_width.iloc[-1]
    C.append(Claim(f"the prediction tightens with width: mean |deviation| at width "
                   f"{widths[-1]} < at width {widths[0]}",
                   "mean-field theory is exact as the width grows",
                   ", ".join(f"width {w}: {v:.2%}" for w, v in by_width.items()),
                   widest < narrow, value=widest / narrow))
    res.notes.append(
        f"Gradient growth: plain MLPs Dense → BN → ReLU, He normal init, float64, batch {BATCH} "
        f"of N(0, I) inputs in training mode, seeds {seeds}; growth = exp(−slope) of ln‖dL/dW_l‖ "
        "against l without the last two layers. Batch sizes 8/32/256 at depth 50."
    )
    dev = gt.groupby("width")["deviation"].mean()
    res.notes.append(
        "Mean signed deviation from √(π/(π−1)) per width: "
        + ", ".join(f"{w}: {v:+.2%}" for w, v in dev.items())
        + f" (the prediction is the infinite-width, infinite-batch limit; batch {BATCH} "
        "here)."
    )


def stage_batch(d: Inputs, res: Result) -> None:
    """Growth at batch sizes 8, 32 and 256: smaller batches explode faster."""
    seeds, batch_width = d.seeds, d.batch_width
    C = res.claims
    parts = []
    for b in BATCHES:
        with d.progress.stage(batch_label(b)):
            parts.append(growth_table([50], [batch_width], seeds, batch=b))
    bt = pd.concat(parts)
    res.tables["batch"] = bt
    # NaN stays NaN (pandas' mean skips it: a batch size with one seed unmeasured would be
    # judged on the others)
    by_batch = bt.groupby("batch")["growth"].apply(
        lambda v: float(np.mean(v.to_numpy(dtype=float))))
    C.append(Claim(f"smaller batches explode faster (depth 50, width {batch_width}): growth at "
                   f"batch 8 > 32 > {BATCH}",
                   "gradient explosion is worse for smaller batches",
                   ", ".join(f"batch {b}: {v:.3f}" for b, v in by_batch.items()),
                   bool(by_batch.loc[8] > by_batch.loc[32] > by_batch.loc[BATCH]),
                   value=float(by_batch.loc[8] / by_batch.loc[BATCH])))
    res.figures["growth"] = _fig_growth(res.tables["growth"], bt)
    res.captions["growth"] = (
        "Per-layer growth of ‖dL/dW_l‖ towards the input in plain ReLU + BN MLPs at "
        "initialization (exp(−slope) of a line through ln‖dL/dW_l‖; mean ± std over seeds "
        f"{d.seeds}). Left: against depth, one line per width; dashed: the mean-field "
        f"√(π/(π−1)) ≈ {PREDICTED:.3f}. Right: at depth 50 against the batch size: growth "
        "above the dashed line is faster explosion."
    )


def stage_cures(d: Inputs, res: Result) -> None:
    """100-layer nets trained: plain BN, with residual connections, with a smaller lr."""
    ds, dname, steps, train_width = d.ds, d.dname, d.steps, d.train_width
    C = res.claims
    rows = []
    for label, recipe, lr, n in cures(steps):
        net = build(recipe, TRAIN_DEPTH, ds.n_features, ds.n_classes, train_width, seed=1)
        with d.progress.stage(cure_label(label)):
            acc, diverged = train_accuracy(net, ds, n, seed=1, lr=lr,
                                           progress=d.progress.training)
        rows.append({"network": label, "lr": lr, "steps": n, "train_acc": acc,
                     "diverged": diverged})
    tt = pd.DataFrame(rows).set_index("network")
    res.tables["cures"] = tt.reset_index()
    plain, resid, slow = (float(tt.loc[k, "train_acc"]) for k in tt.index)
    # "does not train" is the explosion's doing only beside the residual net that trained on
    # the same data, lr and steps: with nothing learning (every net at chance) both held
    control = bool(resid >= TRAINS)
    no_control = ("" if control else
                  f"; the residual net did not train either ({resid:.2f} < {TRAINS:.0%}): "
                  "nothing trains in this setup, not the explosion's doing")
    C.append(Claim(f"a plain {TRAIN_DEPTH}-layer ReLU + BN net does not train (train acc < "
                   f"{FAILS:.0%} after {steps} steps)",
                   "plain BN nets become untrainable with depth (gradient explosion)",
                   f"train acc {plain:.2f}" + (" (diverged)" if tt.iloc[0].diverged else "")
                   + no_control, bool(plain < FAILS and control), value=plain))
    C.append(Claim(f"residual connections restore it (train acc ≥ {TRAINS:.0%}, same lr and "
                   "steps)", "skip connections remove the explosion's effect on training",
                   f"train acc {resid:.2f}", resid >= TRAINS, value=resid))
    C.append(Claim(f"a 10x smaller learning rate with 5x the steps does not (train acc < "
                   f"{FAILS:.0%}): a smaller step does not undo the explosion at init",
                   "the explosion cannot be removed by choosing σ_w, σ_b (the learning rate "
                   "is this project's test: plain BN nets of depth 50 trained at none of lr "
                   "1e-3, 1e-2, 1e-1)",
                   f"train acc {slow:.2f} after {5 * steps} steps at lr {LR / 10:g}"
                   + no_control, bool(slow < FAILS and control), value=slow))
    res.figures["cures"] = _fig_cures(tt, dname)
    res.captions["cures"] = (
        f"Training accuracy of {TRAIN_DEPTH}-layer ReLU + BN nets on {dname} after the steps "
        "under each bar: plain, with residual connections (same lr and steps), and plain with "
        f"a 10× smaller lr and 5× the steps. Dotted: 'trains' (≥ {TRAINS:.0%}); dashed: 'does "
        f"not train' (< {FAILS:.0%}); chance, always guessing the commonest class, scores "
        f"{guess_rate(ds.y_train):.0%}."
    )
    res.notes.append(
        f"Trainability: data {dname!r}, {TRAIN_DEPTH} weight layers of {train_width} (the "
        "residual net: a stem, 49 blocks of two layers, the output), population statistics "
        "for inference, SGD momentum 0.9, batch 64, training accuracy on the training set; "
        f"'trains' ≥ {TRAINS:.0%}, 'does not train' < {FAILS:.0%}."
    )


STAGES: tuple[Callable[[Inputs, Result], None], ...] = (stage_growth, stage_batch, stage_cures)
"""The experiment, in order: each stage measures, appends its claims, tables, notes, figure."""


@register(
    "yang2019",
    "Yang et al. 2019: batch norm makes plain deep nets' gradients explode at init",
    "Yang, Pennington, Rao, Sohl-Dickstein, Schoenholz (2019), A Mean Field Theory of Batch "
    "Normalization, ICLR",
    "per-layer gradient growth of plain ReLU + BN MLPs at init against sqrt(pi/(pi-1)) over "
    "depths, widths and batch sizes; which cures let a 100-layer net train",
)
def run(quick: bool = False, data: str | None = None,
        progress: bool | str | ExperimentProgress = False) -> Result:
    """Gradient growth at init against the mean-field prediction; cures at 100 layers."""
    res = Result("yang2019", "Yang et al. 2019: a mean field theory of batch normalization")
    ds, dname = load_data("yang2019", data, "digits", seed=0, standardize=True,
                          guess_below=FAILS,
                          threshold=f"'does not train': accuracy < {FAILS:.0%}")
    p = ExperimentProgress.of(progress)
    if quick:
        inputs = Inputs([10, 50], [32, TIGHT_WIDTH], [0, 1, 2], batch_width=64, ds=ds,
                        dname=dname, steps=300, train_width=32, progress=p)
    else:
        inputs = Inputs([10, 25, 50, 100, 200], [32, 64, 128, 256, 512], [0, 1],
                        batch_width=128, ds=ds, dname=dname, steps=300, train_width=32,
                        progress=p)
    p.plan(stage_labels(inputs))
    for stage in STAGES:
        stage(inputs, res)
    return res


def _fig_growth(gt: pd.DataFrame, bt: pd.DataFrame) -> Figure:
    fig = Figure(figsize=(11, 4.2))
    ax1, ax2 = fig.subplots(1, 2)
    for k, (w, d) in enumerate(gt.groupby("width")):
        m = d.groupby("depth")["growth"]
        ax1.errorbar(m.mean().index, m.mean(), yerr=m.std().fillna(0), fmt="o-", ms=4,
                     color=f"C{k}", label=f"width {w}")
    ax1.axhline(PREDICTED, color="k", ls="--", label=f"√(π/(π−1)) = {PREDICTED:.3f}")
    ax1.set_xscale("log")
    depths = sorted(set(gt["depth"]))
    ax1.set_xticks(depths, [str(d) for d in depths])  # the measured depths, not 2×10¹ …
    ax1.xaxis.set_minor_locator(NullLocator())
    ax1.set_xlabel("depth (hidden layers)")
    ax1.set_ylabel("per-layer growth of ‖dL/dW_l‖")
    ax1.set_title("Plain ReLU + BN at init: growth vs mean field")
    ax1.legend(fontsize=8)
    m = bt.groupby("batch")["growth"]
    ax2.errorbar(m.mean().index, m.mean(), yerr=m.std().fillna(0), fmt="o-", color="C3")
    ax2.axhline(PREDICTED, color="k", ls="--", label="large-batch prediction")
    ax2.set_xscale("log")
    ax2.set_xticks(list(m.mean().index), [str(b) for b in m.mean().index])
    ax2.xaxis.set_minor_locator(NullLocator())
    ax2.set_xlabel("batch size")
    ax2.set_ylabel("per-layer growth")
    ax2.set_title("Smaller batches explode faster (depth 50)")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _fig_cures(tt: pd.DataFrame, dname: str) -> Figure:
    fig = Figure(figsize=(6.5, 3.8))
    ax = fig.subplots()
    x = np.arange(len(tt))
    ax.bar(x, tt["train_acc"], color=["C3", "C2", "C1"][: len(tt)])
    ax.set_xticks(x, [f"{k}\n(lr {r.lr:g}, {r.steps} steps)" for k, r in tt.iterrows()],
                  fontsize=8)
    ax.axhline(TRAINS, color="grey", ls=":", lw=1, label=f"trains (≥ {TRAINS:.0%})")
    ax.axhline(FAILS, color="grey", ls="--", lw=1, label=f"does not train (< {FAILS:.0%})")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("training accuracy")
    ax.set_title(f"{TRAIN_DEPTH}-layer ReLU + BN nets on {dname}")
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    return fig
