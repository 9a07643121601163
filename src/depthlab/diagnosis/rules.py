"""Diagnostic rules: each reads a short probed training run and returns its metric (lower is
healthier) and, when the metric crosses its threshold, a :class:`Finding`.

Thresholds (module constants):

==========================  ==================================================================
``VANISHING_RATIO`` 100     std of dL/ds in the last hidden layer / in the first (median over
                            the probed steps) above this: vanishing gradients
``EXPLODING_RATIO`` 100     first / last above this: exploding gradients
``SATURATION_FRAC`` 0.5     fraction of entries with |f'(s)| < 5% of sup|f'| in a layer at the
                            end of training (bounded activations only)
``DEAD_FRAC`` 0.3           fraction of units with f'(s) = 0 on every probe example at the end
                            (activations with a zero-derivative region: ReLU, step)
``MEAN_SHIFT`` 0.25         |mean activation| at the end, for activations with f(0) != 0
                            (sigmoid) in networks with at least ``MEAN_SHIFT_MIN_LAYERS`` (4)
                            hidden layers and no batch normalization
``INIT_MISMATCH`` 4         measured initial Var(W) / the recommended initializer's variance
                            (He: relu family, Glorot: tanh/sigmoid/softsign, LeCun: selu)
                            above 4 or below 1/4 (not checked with batch normalization)
``DIVERGENCE_RISE`` 1.5     mean training loss of the last 10% of steps / the first 10% above
                            this, or a non-finite loss: divergence
``BN_DRIFT`` 0.5            batch-norm running mean off the probe batch's mean by more than
                            0.5 batch std (averaged over units), or mean |log variance ratio|
                            above 0.5 (a factor ~1.65)
==========================  ==================================================================
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..initializers import weight_variance
from ..network import Network
from ..probes.histograms import activation_range
from ..training.history import History
from . import prescriptions as rx
from .findings import Finding

VANISHING_RATIO = 100.0
EXPLODING_RATIO = 100.0
SATURATION_FRAC = 0.5
DEAD_FRAC = 0.3
MEAN_SHIFT = 0.25
MEAN_SHIFT_MIN_LAYERS = 4
INIT_MISMATCH = 4.0
DIVERGENCE_RISE = 1.5
BN_DRIFT = 0.5

KINDS: tuple[str, ...] = ("divergence", "vanishing_gradients", "exploding_gradients",
                          "saturation", "dead_relu", "mean_shift", "init_mismatch", "bn_drift")


@dataclass
class RunContext:
    """Everything a rule may read about one probed run."""

    net: Network
    config: dict[str, Any]
    settings: dict[str, Any]
    frame: pd.DataFrame
    history: History
    metrics: dict[str, float]
    bn_drift: list[dict[str, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        f = self.frame
        self.table = (f.pivot_table(index=["step", "layer"], columns="quantity", values="value",
                                    aggfunc="last", dropna=False)
                      if len(f) else pd.DataFrame())
        self.points = self.net.probe_points()
        self.hidden = [p.index for p in self.points]
        self.steps = sorted(set(f["step"])) if len(f) else []
        self.fn = self.points[0].activation.fn if self.points else None
        self.activation = str(self.config.get("activation") or (self.fn.name if self.fn else ""))

    @property
    def end(self) -> int:
        return self.steps[-1] if self.steps else 0

    def at(self, step: int, quantity: str) -> pd.Series:
        """Per-hidden-layer values of ``quantity`` at ``step`` (index: layer)."""
        if self.table.empty or quantity not in self.table.columns:
            return pd.Series(dtype=float)
        try:
            s = self.table.loc[step, quantity]
        except KeyError:
            return pd.Series(dtype=float)
        return s[s.index >= 1]

    def init_variance_ratios(self, activation: str | None = None) -> dict[int, float]:
        """Measured initial Var(W) (``weight_std`` at step 0 squared) / the variance of the
        initializer recommended for ``activation``, per hidden layer."""
        rec = rx.recommended_init(activation or self.activation)
        w = self.at(0, "weight_std")
        if rec is None or w.empty:
            return {}
        out = {}
        for p in self.points:
            if p.dense is None or p.index not in w.index:
                continue
            target = weight_variance(rec, p.dense.fan_in, p.dense.fan_out)
            out[p.index] = float(w[p.index]) ** 2 / target if target > 0 else math.nan
        return out

    def mean_init_ratio(self, activation: str | None = None) -> float:
        """Geometric mean of :meth:`init_variance_ratios` (NaN when unknown)."""
        r = [v for v in self.init_variance_ratios(activation).values() if v > 0]
        return float(np.exp(np.mean(np.log(r)))) if r else math.nan


RuleResult = tuple[float, Finding | None]


def _severity(metric: float, threshold: float, log: bool = True) -> str:
    if not math.isfinite(metric):
        return "high"
    x = metric / threshold
    if log:
        return "high" if x >= 100 else "medium" if x >= 10 else "low"
    return "high" if x >= 1.6 else "medium" if x >= 1.2 else "low"


def _grad_ratios(ctx: RunContext) -> list[float]:
    """std(dL/ds) last hidden / first hidden at each probed step (finite, positive only)."""
    if len(ctx.hidden) < 2:
        return []
    first, last = ctx.hidden[0], ctx.hidden[-1]
    out = []
    for t in ctx.steps:
        g = ctx.at(t, "grad_pre_std")
        if first in g.index and last in g.index:
            a, b = float(g[first]), float(g[last])
            if math.isfinite(a) and math.isfinite(b) and a > 0 and b > 0:
                out.append(b / a)
    return out


def rule_vanishing(ctx: RunContext) -> RuleResult:
    ratios = _grad_ratios(ctx)
    if not ratios:
        return math.nan, None
    metric = float(np.median(ratios))
    if metric <= VANISHING_RATIO:
        return metric, None
    g0 = ctx.at(0, "grad_pre_std")
    last = ctx.hidden[-1]
    med = ctx.table["grad_pre_std"].groupby(level="layer").median()
    layers = [int(i) for i in ctx.hidden if med.get(i, math.nan) < med.get(last) / 10.0]
    ratio = ctx.mean_init_ratio()
    changes, text = rx.for_vanishing(ctx.activation, ratio, ctx.config)
    ev = {"metric": metric, "threshold": VANISHING_RATIO, "ratio_init": ratios[0],
          "ratio_end": ratios[-1], "grad_pre_std_first_init": float(g0.get(ctx.hidden[0], np.nan)),
          "grad_pre_std_last_init": float(g0.get(last, np.nan)), "init_variance_ratio": ratio}
    msg = (f"Back-propagated gradients vanish: the std of dL/ds in layer {ctx.hidden[0]} is "
           f"{metric:.3g}x smaller than in layer {last} (median over {len(ratios)} probes; "
           f"{ratios[0]:.3g}x at initialization, {ratios[-1]:.3g}x at the end).")
    return metric, Finding("vanishing_gradients", layers, ev, msg, changes, text,
                           _severity(metric, VANISHING_RATIO))


def rule_exploding(ctx: RunContext) -> RuleResult:
    ratios = [1.0 / r for r in _grad_ratios(ctx)]
    if not ratios:
        return math.nan, None
    metric = float(np.median(ratios))
    if metric <= EXPLODING_RATIO:
        return metric, None
    first = ctx.hidden[0]
    med = ctx.table["grad_pre_std"].groupby(level="layer").median()
    layers = [int(i) for i in ctx.hidden if med.get(i, math.nan) > 10.0 * med.get(ctx.hidden[-1])]
    ratio = ctx.mean_init_ratio()
    changes, text = rx.for_exploding(ctx.activation, ratio, ctx.config)
    ev = {"metric": metric, "threshold": EXPLODING_RATIO, "ratio_init": ratios[0],
          "ratio_end": ratios[-1], "init_variance_ratio": ratio}
    msg = (f"Back-propagated gradients explode: the std of dL/ds in layer {first} is "
           f"{metric:.3g}x larger than in layer {ctx.hidden[-1]} (median over {len(ratios)} "
           f"probes; {ratios[0]:.3g}x at initialization).")
    return metric, Finding("exploding_gradients", layers, ev, msg, changes, text,
                           _severity(metric, EXPLODING_RATIO))


def rule_saturation(ctx: RunContext) -> RuleResult:
    if ctx.fn is None or activation_range(ctx.fn) is None:
        return math.nan, None
    sat = ctx.at(ctx.end, "saturated_frac").dropna()
    if sat.empty:
        return math.nan, None
    metric = float(sat.max())
    if metric <= SATURATION_FRAC:
        return metric, None
    layers = [int(i) for i, v in sat.items() if v > SATURATION_FRAC]
    worst = int(sat.idxmax())
    sat0 = ctx.at(0, "saturated_frac")
    ratio = ctx.mean_init_ratio()
    changes, text = rx.for_saturation(ctx.activation, ratio, ctx.config)
    ev = {"metric": metric, "threshold": SATURATION_FRAC, "worst_layer": worst,
          "saturated_frac_init_max": float(sat0.max()) if not sat0.empty else math.nan,
          "n_layers_saturated": len(layers), "init_variance_ratio": ratio}
    msg = (f"{len(layers)} of {len(ctx.hidden)} hidden {ctx.activation} layers are saturated "
           f"after {ctx.end} steps: up to {100 * metric:.0f}% of entries (layer {worst}) have "
           f"|f'(s)| below 5% of its maximum.")
    return metric, Finding("saturation", layers, ev, msg, changes, text,
                           _severity(metric, SATURATION_FRAC, log=False))


def _has_dead_region(ctx: RunContext) -> bool:
    if ctx.fn is None:
        return False
    s = np.array([-1.0, -10.0, -100.0])
    with np.errstate(all="ignore"):
        d = ctx.fn.derivative(s, ctx.fn.forward(s))
    return bool(np.all(np.asarray(d) == 0))


def rule_dead_relu(ctx: RunContext) -> RuleResult:
    if not _has_dead_region(ctx):
        return math.nan, None
    dead = ctx.at(ctx.end, "dead_frac").dropna()
    if dead.empty:
        return math.nan, None
    metric = float(dead.max())
    if metric <= DEAD_FRAC:
        return metric, None
    layers = [int(i) for i, v in dead.items() if v > DEAD_FRAC]
    worst = int(dead.idxmax())
    d0 = ctx.at(0, "dead_frac")
    dead_init = float(d0.max()) if not d0.empty else math.nan
    changes, text = rx.for_dead_relu(ctx.mean_init_ratio(), dead_init, DEAD_FRAC,
                                     float(ctx.settings.get("lr", 0.01)), ctx.config)
    ev = {"metric": metric, "threshold": DEAD_FRAC, "worst_layer": worst,
          "dead_frac_init_max": dead_init, "n_layers": len(layers)}
    msg = (f"{100 * metric:.0f}% of the units of layer {worst} are dead (zero derivative on "
           f"every probe example) after {ctx.end} steps ({100 * dead_init:.0f}% at "
           f"initialization); {len(layers)} "
           f"{'layer has' if len(layers) == 1 else 'layers have'} more than "
           f"{100 * DEAD_FRAC:.0f}%.")
    return metric, Finding("dead_relu", layers, ev, msg, changes, text,
                           _severity(metric, DEAD_FRAC, log=False))


def rule_mean_shift(ctx: RunContext) -> RuleResult:
    if ctx.fn is None or ctx.config.get("batchnorm"):
        return math.nan, None
    f0 = float(np.asarray(ctx.fn.forward(np.zeros(1)))[0])
    m = ctx.at(ctx.end, "act_mean").dropna().abs()
    if m.empty:
        return math.nan, None
    metric = float(m.max())  # measured for every activation, so a re-run can be compared
    if abs(f0) < 1e-6 or len(ctx.hidden) < MEAN_SHIFT_MIN_LAYERS or metric <= MEAN_SHIFT:
        return metric, None
    layers = [int(i) for i, v in m.items() if v > MEAN_SHIFT]
    worst = int(m.idxmax())
    changes, text = rx.for_mean_shift(ctx.mean_init_ratio("tanh"))
    ev = {"metric": metric, "threshold": MEAN_SHIFT, "worst_layer": worst, "f0": f0,
          "n_layers": len(layers)}
    msg = (f"{ctx.activation} activations are not zero-centred: the mean activation reaches "
           f"{metric:.2f} (layer {worst}) in a {len(ctx.hidden)}-hidden-layer network, shifting "
           f"every next layer's input.")
    return metric, Finding("mean_shift", layers, ev, msg, changes, text,
                           _severity(metric, MEAN_SHIFT, log=False))


def rule_init_mismatch(ctx: RunContext) -> RuleResult:
    if ctx.config.get("batchnorm"):
        return math.nan, None
    ratios = ctx.init_variance_ratios()
    ratios = {k: v for k, v in ratios.items() if v > 0 and math.isfinite(v)}
    if not ratios:
        return math.nan, None
    logs = {k: abs(math.log(v)) for k, v in ratios.items()}
    worst = max(logs, key=logs.get)
    metric = math.exp(logs[worst])  # the worst factor, >= 1 either way
    if metric <= INIT_MISMATCH:
        return metric, None
    layers = [k for k, v in logs.items() if v > math.log(INIT_MISMATCH)]
    rec = rx.recommended_init(ctx.activation)
    r = ratios[worst]
    changes, text = rx.for_init_mismatch(ctx.activation)
    ev = {"metric": metric, "threshold": INIT_MISMATCH, "worst_layer": worst,
          "variance_ratio": r, "n_layers": len(layers)}
    msg = (f"The initial weight variance of layer {worst} is {r:.3g}x the {rec} variance "
           f"recommended for {ctx.activation} units (init {ctx.config.get('init', '?')}).")
    return metric, Finding("init_mismatch", layers, ev, msg, changes, text,
                           _severity(metric, INIT_MISMATCH))


def rule_divergence(ctx: RunContext) -> RuleResult:
    lr = float(ctx.settings.get("lr", 0.01))
    hist = ctx.history
    losses = np.asarray(hist.step_loss, dtype=np.float64)
    changes, text = rx.for_divergence(lr)
    if hist.diverged or not np.all(np.isfinite(losses)):
        step = hist.divergence.step if hist.divergence is not None else int(losses.size)
        ev = {"metric": math.inf, "threshold": DIVERGENCE_RISE, "step": step, "lr": lr}
        msg = (f"Training diverged: the loss became non-finite at step {step} with learning "
               f"rate {lr:g}.")
        return math.inf, Finding("divergence", [], ev, msg, changes, text, "high")
    if losses.size < 2:
        return math.nan, None
    k = max(1, losses.size // 10)
    first, last = float(losses[:k].mean()), float(losses[-k:].mean())
    metric = last / first if first > 0 else math.nan
    if not metric > DIVERGENCE_RISE:
        return metric, None
    ev = {"metric": metric, "threshold": DIVERGENCE_RISE, "loss_first": first,
          "loss_last": last, "lr": lr}
    msg = (f"Training loss rose from {first:.4g} to {last:.4g} ({metric:.3g}x, mean of the "
           f"first and last {k} steps) with learning rate {lr:g}.")
    return metric, Finding("divergence", [], ev, msg, changes, text,
                           _severity(metric, DIVERGENCE_RISE, log=False))


def rule_bn_drift(ctx: RunContext) -> RuleResult:
    if not ctx.bn_drift:
        return math.nan, None
    scores = [max(d["mean_shift"], d["log_var_ratio"]) for d in ctx.bn_drift]
    metric = float(np.nanmax(scores)) if np.any(np.isfinite(scores)) else math.nan
    if not metric > BN_DRIFT:
        return metric, None
    worst = int(np.nanargmax(scores))
    layers = [i + 1 for i, s in enumerate(scores) if s > BN_DRIFT]
    d = ctx.bn_drift[worst]
    changes, text = rx.for_bn_drift(ctx.config)
    ev = {"metric": metric, "threshold": BN_DRIFT, "worst_layer": worst + 1,
          "mean_shift": d["mean_shift"], "log_var_ratio": d["log_var_ratio"]}
    msg = (f"Batch-norm running statistics lag the batch statistics: in BN layer {worst + 1} "
           f"the running mean is off by {d['mean_shift']:.2f} batch std and the variance by a "
           f"factor {math.exp(d['log_var_ratio']):.2f} (mean over units).")
    return metric, Finding("bn_drift", layers, ev, msg, changes, text,
                           _severity(metric, BN_DRIFT, log=False))


RULES: dict[str, Callable[[RunContext], RuleResult]] = {
    "divergence": rule_divergence,
    "vanishing_gradients": rule_vanishing,
    "exploding_gradients": rule_exploding,
    "saturation": rule_saturation,
    "dead_relu": rule_dead_relu,
    "mean_shift": rule_mean_shift,
    "init_mismatch": rule_init_mismatch,
    "bn_drift": rule_bn_drift,
}


def evaluate(ctx: RunContext) -> tuple[list[Finding], dict[str, float]]:
    """Run every rule: (findings, metric per kind)."""
    findings, metrics = [], {}
    with np.errstate(all="ignore"):
        for kind, rule in RULES.items():
            metric, finding = rule(ctx)
            metrics[kind] = metric
            if finding is not None:
                findings.append(finding)
    return findings, metrics
