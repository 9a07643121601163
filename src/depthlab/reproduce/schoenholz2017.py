"""Schoenholz, Gilmer, Ganguli & Sohl-Dickstein 2017 — "Deep information propagation".

Random tanh networks with weights ``N(0, sigma_w^2 / n)`` and biases ``N(0, sigma_b^2)``
(``sigma_b^2 = 0.05``) are ordered (``chi1 < 1``) or chaotic (``chi1 > 1``); signals propagate
over a depth scale ``xi_c`` that diverges at the critical ``sigma_w^2 ~= 1.76``, and networks
train only up to a depth of about ``6 xi_c``. Squared gradients grow towards the input as
``chi1^(L-1)``.

Measured here: (1) a grid over (sigma_w^2, depth) trained with SGD (momentum 0.9) at a step
that shrinks with depth as the deep nets need it (lr 1e-3 up to 48 layers, ``1e-3 (48/L)^2``
beyond, 2.3/L^2: the critical net's fitted state turns unstable at about 4.6/L^2), for a budget
growing as ``L`` (the same schedule for every sigma_w^2 at a depth), "trains" meaning a training
accuracy >= 90% (chance 10%) at one of ten checkpoints, compared point by point with
``depth < 6 xi_c`` (``depthlab.theory.meanfield``) and with the best rule that looks at depth
alone ("trains iff depth <= D", D chosen with hindsight on the same grid): the theory must beat
it; (2) the ratio of mean squared back-propagated gradients first/last layer of 50-layer nets at
initialisation against ``chi1^49``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

import depthlab as dl
from depthlab.backend import rng as make_rng
from depthlab.initializers import normal, variance_scaling
from depthlab.theory import critical_sigma_w2, meanfield
from depthlab.theory.meanfield import MeanField, slope_chi1
from depthlab.training import Callback, fit

from ..progress import ExperimentProgress
from .base import Claim, Result, load_data, register

SIGMA_B2 = 0.05
LR = 1e-3                 # SGD step (momentum 0.9) up to PHASE_DEPTH layers, see step_size
TRAIN_THRESHOLD = 0.9     # "trains": training accuracy >= 90% (chance 10%) at a checkpoint
CHECKPOINTS = 10          # training accuracy measured every budget / CHECKPOINTS steps
AGREEMENT_MIN = 0.8       # fraction of grid points agreeing with depth < 6 xi_c
PHASE_DEPTH = 48          # the depth where only the near-critical nets train
GRAD_DEPTH = 50
GRAD_FACTOR = 3.0         # measured vs chi1^(L-1): within a factor 3


@lru_cache(maxsize=512)
def tanh_meanfield(sigma_w2: float, sigma_b2: float) -> MeanField:
    """``meanfield("tanh", sigma_w2, sigma_b2)``, computed once per ``(sigma_w2, sigma_b2)``:
    a run asks for the same points several times (the grid's rows, the claims' ends, the
    gradient nets, the figure's curve from 1.0 to 4.0), each a correlation-map fixed point.
    The frozen result is shared."""
    return meanfield("tanh", float(sigma_w2), float(sigma_b2))


@lru_cache(maxsize=16)
def tanh_critical(sigma_b2: float) -> float:
    """``critical_sigma_w2("tanh", sigma_b2)``, the root of ``chi1 = 1``, computed once per
    ``sigma_b2`` (the transition claim, the gradient grid and its stage read it)."""
    return critical_sigma_w2("tanh", float(sigma_b2))


def tanh_net(sizes: list[int], sigma_w2: float, sigma_b2: float, seed: int,
             dtype: str = "float32") -> dl.Network:
    """``dl.mlp`` with tanh, ``W ~ N(0, sigma_w^2/n)``, ``b ~ N(0, sigma_b^2)`` in every layer."""
    return dl.mlp(sizes, activation="tanh", init=variance_scaling(sigma_w2, "fan_in", "normal"),
                  bias_init=normal(math.sqrt(sigma_b2)), dtype=dtype, seed=seed)


def gradient_growth_measured(sigma_w2: float, width: int, depth: int, seeds: list[int],
                             batch: int = 128) -> float:
    """``E[(dL/ds_1)^2] / E[(dL/ds_L)^2]`` at init over ``depth`` tanh layers (pooled over seeds).

    Inputs are Gaussian, scaled so that the first pre-activations have the fixed-point
    variance ``q*``; a standard-normal gradient is injected at a 10-way output.
    """
    mf = tanh_meanfield(sigma_w2, SIGMA_B2)
    x_var = max(mf.q_star - SIGMA_B2, 1e-6) / sigma_w2
    first = last = 0.0
    for seed in seeds:
        net = tanh_net([width] * (depth + 1) + [10], sigma_w2, SIGMA_B2, seed, "float64")
        gen = make_rng(50_000 + seed)
        x = gen.standard_normal((batch, width)) * math.sqrt(x_var)
        out = net.forward(x, training=False)
        net.backward(gen.standard_normal(out.shape), input_grad=False)
        pts = net.probe_points()
        first += float(np.mean(pts[0].activation.grad_s ** 2))
        last += float(np.mean(pts[-1].activation.grad_s ** 2))
    with np.errstate(divide="ignore", invalid="ignore"):  # a last-layer gradient of 0: inf
        return float(np.float64(first) / last)



class _BestAccuracy(Callback):
    """Training accuracy on ``(x, y)`` every ``every`` steps and at the end; keeps the best."""

    def __init__(self, x: np.ndarray, y: np.ndarray, every: int) -> None:
        self.x, self.y, self.every = x, y, every
        self.best = self.last = 0.0

    def measure(self, net: dl.Network) -> None:
        with np.errstate(all="ignore"):
            pred = net.predict(self.x)
        acc = float(np.mean(np.argmax(pred, axis=1) == self.y)) if np.isfinite(pred).all() else 0.0
        self.best, self.last = max(self.best, acc), acc

    def after_update(self, trainer: Any, step: int, loss: float) -> None:
        if step % self.every == 0 and math.isfinite(loss):
            self.measure(trainer.net)


def train_point(ds, sigma_w2: float, depth: int, width: int, steps: int, seed: int,
                progress: bool | str | None = None) -> dict:
    """Train a ``depth``-hidden-layer tanh net with SGD (momentum 0.9, batch 64) at
    :func:`step_size` for :func:`step_budget` steps; the best training accuracy over
    ``CHECKPOINTS`` evenly spaced checkpoints (a diverged run keeps the checkpoints before the
    non-finite loss) and the final one (``progress``: the trainer's bar or status lines)."""
    net = tanh_net([ds.n_features] + [width] * depth + [ds.n_classes], sigma_w2, SIGMA_B2, seed)
    budget = step_budget(steps, depth)
    acc = _BestAccuracy(ds.x_train, ds.y_train, max(1, budget // CHECKPOINTS))
    hist = fit(net, ds.x_train, ds.y_train, optimizer="sgd", lr=step_size(depth),
               optimizer_kwargs={"momentum": 0.9}, batch_size=64, epochs=None,
               max_steps=budget, seed=seed, eval_train=False, callbacks=[acc], progress=progress)
    if not hist.diverged and budget % acc.every:
        acc.measure(net)
    return {"acc": acc.best, "final_acc": 0.0 if hist.diverged else acc.last,
            "diverged": hist.diverged, "steps": budget, "lr": step_size(depth)}


def step_size(depth: int) -> float:
    """The SGD learning rate for a ``depth``-layer net: ``LR`` up to ``PHASE_DEPTH`` layers,
    ``LR (PHASE_DEPTH / depth)^2`` beyond. Measured on the critical net (width 64, momentum
    0.9): it fits and then turns unstable (the loss climbs back) at 5e-4 for 96 layers and
    1.25e-4 for 192, and trains at 2.5e-4 and 6e-5: the largest usable step falls as 1/L²."""
    return LR * min(1.0, (PHASE_DEPTH / depth) ** 2)


def step_budget(steps: int, depth: int) -> int:
    """SGD steps for a ``depth``-layer net: ``steps`` up to ``PHASE_DEPTH`` layers,
    ``steps * depth / PHASE_DEPTH`` beyond. At criticality every layer contributes alike to
    the update, so a step ∝ 1/L² moves the output ∝ 1/L per step; a budget ∝ L keeps the
    training time of the deep nets the same (the paper's trainable region grows with time)."""
    return round(steps * max(1.0, depth / PHASE_DEPTH))


def best_depth_only_rule(grid: pd.DataFrame) -> tuple[float, float]:
    """The depth-only baseline: among the rules "trains iff depth <= D" (D any grid depth, or
    below all of them), the agreement with the measured ``trains`` column of the best one;
    returns (agreement, D)."""
    best = (float((~grid["trains"]).mean()), 0.0)
    for d in sorted(set(grid["depth"])):
        agree = float(((grid["depth"] <= d) == grid["trains"]).mean())
        if agree > best[0]:
            best = (agree, float(d))
    return best


@dataclass(frozen=True)
class Inputs:
    """What the stages read: the data, the trainability grid and budget, the gradient nets."""

    quick: bool
    ds: Any
    dname: str
    sw2_grid: list[float]
    depths: list[int]
    steps: int
    width: int
    gwidth: int
    gseeds: list[int]
    progress: ExperimentProgress


TRANSITION_LABEL = "critical σ_w² where χ₁ = 1 (computed)"


def gradient_grid(quick: bool) -> list[float]:
    """The σ_w² values of the gradient-growth measurement."""
    sw_c = tanh_critical(SIGMA_B2)
    return [1.0, 1.25, 1.5, sw_c, 2.0, 2.5, 3.0] if not quick else [1.0, sw_c, 3.0]


def train_label(sw2: float, depth: int) -> str:
    """One trainability grid point, as a progress stage."""
    return f"depth {depth}, σ_w² = {sw2:g}"


def gradient_label(sw2: float) -> str:
    """One gradient-growth measurement, as a progress stage."""
    return f"gradient growth over {GRAD_DEPTH} layers at init, σ_w² = {sw2:.3g} (measured)"


def stage_labels(d: Inputs) -> list[str]:
    """Every stage of :func:`run`, in order (declared before the first one starts)."""
    return ([TRANSITION_LABEL]
            + [train_label(sw2, depth) for sw2 in d.sw2_grid for depth in d.depths]
            + [gradient_label(sw2) for sw2 in gradient_grid(d.quick)])


def stage_transition(d: Inputs, res: Result) -> None:
    """The order-to-chaos transition: critical sigma_w^2 where chi1 = 1."""
    with d.progress.stage(TRANSITION_LABEL):
        sw_c = tanh_critical(SIGMA_B2)
    C = res.claims
    C.append(Claim("tanh, σ_b² = 0.05: order-to-chaos transition at σ_w² ≈ 1.76 (χ₁ = 1)",
                   "critical σ_w² ≈ 1.76",
                   f"{sw_c:.4f} (computed: the root of χ₁(σ_w²) = 1 by Gaussian quadrature)",
                   abs(sw_c - 1.76) <= 0.01, value=sw_c))


def stage_trainability(d: Inputs, res: Result) -> None:
    """The (sigma_w^2, depth) grid trained; against 6 xi_c and the depth-only rule."""
    ds, dname, sw2_grid, depths = d.ds, d.dname, d.sw2_grid, d.depths
    steps, width = d.steps, d.width
    C = res.claims
    rows = []
    for sw2 in sw2_grid:
        mf = tanh_meanfield(sw2, SIGMA_B2)
        for depth in depths:
            with d.progress.stage(train_label(sw2, depth)):
                r = train_point(ds, sw2, depth, width, steps, seed=depth,
                                progress=d.progress.training)
            rows.append({"sigma_w2": sw2, "depth": depth, "steps": r["steps"], "lr": r["lr"],
                         "train_acc": r["acc"], "final_acc": r["final_acc"],
                         "diverged": r["diverged"], "trains": r["acc"] >= TRAIN_THRESHOLD,
                         "xi_c": mf.xi_c, "6 xi_c": 6 * mf.xi_c,
                         "predicted": depth < 6 * mf.xi_c})
    grid = pd.DataFrame(rows)
    grid["agrees"] = grid["trains"] == grid["predicted"]
    res.tables["grid"] = grid

    frac = float(grid["agrees"].mean())
    base_frac, base_depth = best_depth_only_rule(grid)
    C.append(Claim(f"trained (train acc ≥ {TRAIN_THRESHOLD:.0%} within {steps}·max(1, "
                   f"L/{PHASE_DEPTH}) steps at lr {LR:g}·min(1, ({PHASE_DEPTH}/L)²)) agrees "
                   f"with depth L < 6 ξ_c on ≥ {AGREEMENT_MIN:.0%} of the grid",
                   "networks are trainable when L ≲ 6 ξ_c",
                   f"{frac:.0%} of {len(grid)} points agree "
                   f"({int(grid['trains'].sum())} trained, {int(grid['predicted'].sum())} "
                   "predicted)", frac >= AGREEMENT_MIN, value=frac))
    C.append(Claim("the 6 ξ_c rule beats every depth-only rule (trains iff depth ≤ D) on the "
                   "same grid", "the trainable depth depends on σ_w², peaking at σ_w²,c",
                   f"6 ξ_c rule {frac:.0%} vs best depth-only rule (D = {base_depth:g}) "
                   f"{base_frac:.0%}", frac > base_frac, value=frac - base_frac))
    at = grid[grid["depth"] == PHASE_DEPTH].set_index("sigma_w2")["train_acc"]
    crit = float(at.loc[1.76])
    edges = (float(at.loc[1.0]), float(at.loc[4.0]))
    C.append(Claim(f"depth {PHASE_DEPTH}: the near-critical net (σ_w² = 1.76) trains while the "
                   "ordered (1.0) and chaotic (4.0) ones do not",
                   f"6 ξ_c = {6 * tanh_meanfield(1.0, SIGMA_B2).xi_c:.0f} and "
                   f"{6 * tanh_meanfield(4.0, SIGMA_B2).xi_c:.0f} < {PHASE_DEPTH} ≪ 6 ξ_c(1.76)",
                   f"train acc {crit:.2f} at 1.76; {edges[0]:.2f} at 1.0, {edges[1]:.2f} at 4.0",
                   crit >= TRAIN_THRESHOLD and max(edges) < TRAIN_THRESHOLD, value=crit))
    res.figures["trainability"] = _fig_grid(grid, sw2_grid, depths, steps)
    res.captions["trainability"] = (
        f"Best training accuracy (colour and number) of tanh nets (σ_b² = {SIGMA_B2}, width "
        f"{width}) over σ_w² (x) and depth (y, log scale), one seed per cell; dashed white: "
        "6 ξ_c, the mean-field depth below which a net should train (it diverges at the "
        f"critical σ_w² ≈ 1.76). {frac:.0%} of the cells agree with it."
    )
    res.notes.append(
        f"Trainability: data {dname!r} (standardized), tanh MLP of width {width} with "
        f"depth L = number of hidden layers, W ~ N(0, σ_w²/n), b ~ N(0, {SIGMA_B2}) in every "
        f"layer (output layer too), SGD momentum 0.9, batch 64, one seed per point; lr {LR:g} "
        f"and {steps} steps up to L = {PHASE_DEPTH}, lr {LR:g}·({PHASE_DEPTH}/L)² and "
        f"{steps}·L/{PHASE_DEPTH} steps beyond (the same for every σ_w² at a depth); 'trains' "
        f"= training accuracy ≥ {TRAIN_THRESHOLD:.0%} at one of {CHECKPOINTS} evenly spaced "
        "checkpoints (column train_acc; final_acc is the last one). The step matters: at lr "
        "1e-2 no network of depth 48 trains at any σ_w², so every rule that ignores σ_w² "
        "agrees with the grid; and a deep critical net that has fitted turns unstable at a "
        "step of about 4.6/L² (5e-4 at 96 layers, 1.25e-4 at 192) where 2.3/L² trains: at "
        "1e-3·48/L the 96-layer critical net reached 0.83 and the 192-layer one 0.11 in 2,000 "
        "steps, which made 'trains iff L ≤ 48' look better than the theory. Even at "
        "1e-3·(48/L)² = 2.3/L² the deepest nets can lose part of a fit late (edge of "
        "stability), hence the best checkpoint. The depth-only baseline is the best rule "
        "'trains iff depth ≤ D' chosen on the same grid. The paper's grids reach a few hundred "
        "layers and train longer; the CPU budget here stops at the grid's largest depth."
    )
    late = grid[grid["predicted"] & ~grid["trains"]]
    early = grid[~grid["predicted"] & grid["trains"]]

    def points(df: pd.DataFrame) -> str:
        return ", ".join(f"σ_w² {r.sigma_w2:g} depth {r.depth} (6 ξ_c = {6 * r.xi_c:.0f}, acc "
                         f"{r.train_acc:.2f})" for r in df.itertuples()) or "none"

    res.notes.append(
        f"Agreement {frac:.0%} against the depth-only rule's {base_frac:.0%} (D = "
        f"{base_depth:g}): {len(late)} point(s) predicted trainable did not train "
        f"({points(late)}); {len(early)} predicted untrainable did ({points(early)}). 6 ξ_c "
        "is an order-of-magnitude boundary: nets just past it can still train in the budget."
    )


def stage_gradient_growth(d: Inputs, res: Result) -> None:
    """First/last gradient ratios of 50-layer nets at init against chi1^49."""
    quick, gwidth, gseeds = d.quick, d.gwidth, d.gseeds
    C = res.claims
    sw_c = tanh_critical(SIGMA_B2)
    grows = []
    for sw2 in gradient_grid(quick):
        mf = tanh_meanfield(sw2, SIGMA_B2)
        with d.progress.stage(gradient_label(sw2)):
            meas = gradient_growth_measured(sw2, gwidth, GRAD_DEPTH, gseeds)
        pred = mf.chi1 ** (GRAD_DEPTH - 1)
        grows.append({"sigma_w2": sw2, "phase": mf.phase if abs(sw2 - sw_c) > 1e-6 else
                      "critical", "chi1": mf.chi1, "q*": mf.q_star,
                      "predicted chi1^(L-1)": pred, "measured": meas,
                      "measured / predicted": meas / pred})
    gdf = pd.DataFrame(grows)
    res.tables["gradient_growth"] = gdf

    by = {r["phase"]: r for r in grows if r["sigma_w2"] in (1.0, sw_c, 3.0)}
    o, c, h = by["ordered"], by["critical"], by["chaotic"]
    C.append(Claim(f"ordered phase (σ_w² = 1.0): gradients vanish towards the input, "
                   f"ratio first/last < 1 over {GRAD_DEPTH} layers",
                   "χ₁ < 1: ‖∇‖² shrinks as χ₁^(L−1)",
                   f"measured {o['measured']:.2g}, χ₁^{GRAD_DEPTH - 1} = "
                   f"{o['predicted chi1^(L-1)']:.2g}", o["measured"] < 1.0, value=o["measured"]))
    C.append(Claim("chaotic phase (σ_w² = 3.0): gradients explode towards the input, ratio > 1",
                   "χ₁ > 1: ‖∇‖² grows as χ₁^(L−1)",
                   f"measured {h['measured']:.2g}, χ₁^{GRAD_DEPTH - 1} = "
                   f"{h['predicted chi1^(L-1)']:.2g}", h["measured"] > 1.0, value=h["measured"]))
    C.append(Claim(f"critical σ_w² = {sw_c:.3f}: ratio ≈ 1 (within 0.5–2)",
                   "χ₁ = 1: gradients neither vanish nor explode",
                   f"measured {c['measured']:.3f}", 0.5 <= c["measured"] <= 2.0,
                   value=c["measured"]))
    # np.max, not max(): max([0.1, nan]) is 0.1 (a NaN chaotic ratio passed), max([nan, 0.1])
    # nan; a phase not measured is not within the factor
    errs = float(np.max([factor_error(r["measured"], r["predicted chi1^(L-1)"])
                         for r in (o, h)]))
    C.append(Claim(f"measured ratio within a factor {GRAD_FACTOR:g} of χ₁^(L−1) in the ordered "
                   "and chaotic phase",
                   "gradient growth χ₁^(L−1) (mean field)",
                   f"ordered {_times(o['measured'], o['predicted chi1^(L-1)'])}, chaotic "
                   f"{_times(h['measured'], h['predicted chi1^(L-1)'])} the prediction",
                   bool(errs <= math.log10(GRAD_FACTOR)), value=10 ** errs))

    res.figures["gradient_growth"] = _fig_growth(gdf, sw_c)
    res.captions["gradient_growth"] = (
        f"Mean squared back-propagated gradient of the first over the last of {GRAD_DEPTH} tanh "
        "layers at initialization (log scale) against σ_w²: red dots measured, black line the "
        f"mean-field χ₁^{GRAD_DEPTH - 1}; dotted: the critical σ_w² where χ₁ = 1. Left of it "
        "(ordered) gradients vanish towards the input, right of it (chaotic) they explode."
    )
    res.notes.append(
        f"Gradient growth: {GRAD_DEPTH} tanh layers of {gwidth}, float64, inputs scaled to "
        f"start at q*, {len(gseeds)} seed(s), a standard-normal gradient at a 10-way output; "
        "ratio = E[(dL/ds_1)²] / E[(dL/ds_50)²]."
    )


def factor_error(measured: float, predicted: float) -> float:
    """``|log10(measured / predicted)|``, the factor by which a measured gradient ratio misses
    the mean-field ``chi1^(L-1)`` (as a power of 10): ``inf`` for a measured ratio of 0 or
    ``inf`` (a first- or last-layer gradient of exactly 0, every tanh unit saturated by a
    wrong gain), ``nan`` for one not measured or not positive. ``math.log10(0)`` raised
    ``ValueError: math domain error`` and the whole run was lost instead of the claim failing."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        r = np.float64(measured) / np.float64(predicted)
        return float(np.abs(np.log10(r))) if r >= 0 else math.nan


def _times(measured: float, predicted: float) -> str:
    """``measured / predicted`` for the claims table, "0.34×" (two significant digits outside
    [0.01, 1000), so a miss reads "4.3e-05×", not "0.00×")."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        r = float(np.float64(measured) / np.float64(predicted))
    return f"{r:.2f}×" if 0.01 <= abs(r) < 1e3 else f"{r:.2g}×"


STAGES: tuple[Callable[[Inputs, Result], None], ...] = (
    stage_transition, stage_trainability, stage_gradient_growth)
"""The experiment, in order: each stage measures, appends its claims, tables, notes, figure."""


@register(
    "schoenholz2017",
    "Schoenholz et al. 2017: trainable depth 6·ξ_c and gradient growth χ₁^L of tanh nets",
    "Schoenholz, Gilmer, Ganguli, Sohl-Dickstein (2017), Deep Information Propagation",
    "tanh nets over (σ_w², depth): trained or not vs depth < 6 ξ_c; ordered/chaotic "
    "gradient growth vs χ₁^(L−1)",
)
def run(quick: bool = False, data: str | None = None,
        progress: bool | str | ExperimentProgress = False) -> Result:
    """Trainability grid and gradient growth against mean-field theory."""
    res = Result("schoenholz2017", "Schoenholz et al. 2017: deep information propagation")
    ds, dname = load_data("schoenholz2017", data, "digits", seed=0, standardize=True,
                          guess_below=TRAIN_THRESHOLD,
                          threshold=f"'trains': accuracy >= {TRAIN_THRESHOLD:.0%}")
    p = ExperimentProgress.of(progress)
    if quick:
        inputs = Inputs(quick, ds, dname, sw2_grid=[1.0, 1.5, 1.76, 2.5, 4.0],
                        depths=[12, PHASE_DEPTH], steps=800, width=64, gwidth=128, gseeds=[0],
                        progress=p)
    else:
        inputs = Inputs(quick, ds, dname, sw2_grid=[1.0, 1.25, 1.5, 1.76, 2.0, 2.5, 3.0, 4.0],
                        depths=[12, 24, PHASE_DEPTH, 96, 128], steps=2000, width=64, gwidth=256,
                        gseeds=[0, 1, 2], progress=p)
    p.plan(stage_labels(inputs))
    for stage in STAGES:
        stage(inputs, res)
    return res


def _fig_grid(grid: pd.DataFrame, sw2_grid: list[float], depths: list[int],
              steps: int) -> Figure:
    fig = Figure(figsize=(7.5, 5))
    ax = fig.subplots()
    acc = grid.pivot(index="depth", columns="sigma_w2", values="train_acc").loc[depths, sw2_grid]
    x_edges = _edges(np.asarray(sw2_grid, dtype=float), log=False)
    y_edges = _edges(np.asarray(depths, dtype=float), log=True)
    mesh = ax.pcolormesh(x_edges, y_edges, acc.to_numpy(), cmap="viridis", vmin=0, vmax=1)
    fig.colorbar(mesh, ax=ax, label=f"best training accuracy in {steps}·max(1, L/"
                 f"{PHASE_DEPTH}) steps")
    sw, six_xi = _six_xi_c(float(min(sw2_grid)), float(max(sw2_grid)), SIGMA_B2)
    ax.plot(sw, six_xi, "w--", lw=2, label="6 ξ_c (mean field)")
    for i, depth in enumerate(depths):  # each point's accuracy, readable on any grid size
        for j, sw2 in enumerate(sw2_grid):
            v = float(acc.iloc[i, j])
            ax.text(sw2, depth, f"{v:.2f}", ha="center", va="center", fontsize=8,
                    color="black" if v > 0.6 else "white")
    ax.set_yscale("log")
    ax.set_ylim(y_edges[0], y_edges[-1])
    ax.set_xlim(x_edges[0], x_edges[-1])
    ax.set_yticks(depths, [str(d) for d in depths])  # the grid's depths, not 6×10⁰ …
    ax.yaxis.set_minor_locator(NullLocator())
    ax.set_xticks(sw2_grid, [f"{v:g}" for v in sw2_grid])
    ax.set_xlabel("σ_w²")
    ax.set_ylabel("depth (hidden layers)")
    ax.set_title(f"tanh, σ_b² = {SIGMA_B2}: trainability vs 6 ξ_c")
    # below the axes: inside, it would cover a cell's number
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), fontsize=8,
              facecolor="0.45", labelcolor="white")  # grey: the white line must show
    fig.tight_layout()
    return fig


@lru_cache(maxsize=8)
def _six_xi_c(lo: float, hi: float, sigma_b2: float) -> tuple[np.ndarray, np.ndarray]:
    """The trainability figure's curve: ``6 xi_c`` of tanh (``meanfield``) at 200 ``sigma_w^2``
    from ``lo`` to ``hi`` (1e6 where ``xi_c`` is infinite). 200 correlation-map fixed points
    (~5 s): computed once per range, not for every figure drawn on it; read-only arrays."""
    sw = np.linspace(lo, hi, 200)
    six_xi = np.array([6 * tanh_meanfield(v, sigma_b2).xi_c for v in sw])
    six_xi = np.where(np.isfinite(six_xi), six_xi, 1e6)
    sw.setflags(write=False)
    six_xi.setflags(write=False)
    return sw, six_xi


def _edges(v: np.ndarray, log: bool) -> np.ndarray:
    """Cell edges around grid values (geometric midpoints on a log axis)."""
    if len(v) == 1:
        return np.array([v[0] * 0.8, v[0] * 1.25]) if log else np.array([v[0] - 0.5, v[0] + 0.5])
    if log:
        mid = np.sqrt(v[:-1] * v[1:])
        return np.concatenate([[v[0] ** 2 / mid[0]], mid, [v[-1] ** 2 / mid[-1]]])
    mid = 0.5 * (v[:-1] + v[1:])
    return np.concatenate([[2 * v[0] - mid[0]], mid, [2 * v[-1] - mid[-1]]])


def _fig_growth(gdf: pd.DataFrame, sw_c: float) -> Figure:
    fig = Figure(figsize=(6.5, 4.5))
    ax = fig.subplots()
    sw = np.linspace(0.9, max(3.1, float(gdf["sigma_w2"].max()) + 0.1), 120)
    # chi1 alone (slope_chi1: meanfield's own q* and chi1, identical values) without the
    # correlation map's fixed point, which the curve never reads: ~90x less time per figure
    pred = [slope_chi1("tanh", v, SIGMA_B2) ** (GRAD_DEPTH - 1) for v in sw]
    ax.semilogy(sw, pred, "k-", label=f"χ₁^{GRAD_DEPTH - 1} (mean field)")
    ax.semilogy(gdf["sigma_w2"], gdf["measured"], "o", color="C3", label="measured")
    ax.axvline(sw_c, color="grey", ls=":", label=f"critical σ_w² = {sw_c:.2f}")
    ax.axhline(1.0, color="grey", lw=0.5)
    ax.set_xlabel("σ_w²")
    ax.set_ylabel(f"E[(dL/ds_1)²] / E[(dL/ds_{GRAD_DEPTH})²]")
    ax.set_title(f"Gradient growth over {GRAD_DEPTH} tanh layers (σ_b² = {SIGMA_B2})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
