"""``exploding_through_time``, the recurrent model's other finding beside
``vanishing_through_time`` (:mod:`depthlab.torch.through_time`): the loss gradient reaching the
first recurrent layer's input grows going back in time (a recurrent matrix whose spectral radius
is above 1 multiplies it at every step: Bengio et al. 1994; Pascanu et al. 2013), and the run
diverged or did not learn.
"""

from __future__ import annotations

import math
from typing import Any

from ..diagnosis.findings import Finding
from ..diagnosis.rules import LR_STEP_FALL, RunContext, _count, probe_loss_ends

EXPLODING_TIME_DECADES = 3.0
"""``exploding_through_time``: the input gradient at the first time step at least 10^3 times
that at the last one (see :func:`growth_decades`), and :data:`POOLED_GROWTH` times the number
of steps (:func:`threshold_decades`)."""

POOLED_GROWTH = 10.0
"""A readout that pools the outputs of ``T`` steps (a mean or sum over time) gives step 0 the
gradient of every later output and the last step that of one: a recurrence that keeps its state
without growth (gain 1) has ``g_0 / g_{T-1}`` up to about ``T``. Growth is judged above
``POOLED_GROWTH * T`` too, so that a long sequence (``T`` = 2000, a mean-pooled LSTM that
remembers) is not read as exploding; an exponential growth passes it at any length."""


def threshold_decades(steps: int) -> float:
    """The decades of growth :func:`rule_exploding_through_time` needs over ``steps`` time
    steps: ``max(EXPLODING_TIME_DECADES, log10(POOLED_GROWTH * steps))`` (3 up to 100 steps)."""
    return max(EXPLODING_TIME_DECADES, math.log10(POOLED_GROWTH * max(int(steps), 1)))


def growth_decades(tt: dict[str, Any] | None) -> float:
    """``log10(g_0 / g_{T-1})`` of a :func:`~depthlab.torch.through_time.through_time`
    reading ``tt``: how many decades the gradient norm at the first time step's input, ``g_0``,
    lies above the last step's, ``g_{T-1}``; for one recurrence ``h_t = f(W_ih x_t + W_hh
    h_{t-1})`` read at its last step, ``g_t`` is ``W_ih^T`` of
    ``prod_{k=t+1}^{T-1} W_hh^T diag(f'(s_k))`` applied to the last state's gradient, so it grows
    with ``T - 1 - t`` where that product's norm exceeds 1. NaN when unknown: no reading, a step
    with no gradient at all (``g_{T-1} = 0``: no path from the last step to the loss, as for a
    model that reads its first output, is no growth through the recurrence), or a non-finite
    norm. A gradient that overflowed at the first step (``inf``) reads ``inf``."""
    if not tt:
        return math.nan
    first, last = float(tt.get("first", math.nan)), float(tt.get("last", math.nan))
    if not (math.isfinite(last) and last > 0) or math.isnan(first):
        return math.nan
    if math.isinf(first):
        return math.inf
    return math.log10(first / last) if first > 0 else -math.inf


def rule_exploding_through_time(ctx: RunContext) -> tuple[float, Any]:
    """A recurrent model whose gradient explodes through time: at initialization
    (``ctx.through_time_init``) or after training (``ctx.through_time``), the loss gradient at
    the first recurrent layer's input at its first time step is ``10^EXPLODING_TIME_DECADES``
    times or more that at its last step, and more than ``POOLED_GROWTH`` times the number of
    steps (:func:`threshold_decades`; metric: the larger of the two readings' decades,
    :func:`growth_decades`), and the run diverged or its probe batch's loss did not end more
    than ``LR_STEP_FALL`` below a constant prediction's (``ctx.chance_loss``; a diverged run
    or a loss that grew counts, as an exploded network's loss is far above that). A tanh
    ``nn.RNN`` whose recurrent matrix is orthogonal at gain 3 reads 4e4x over 30 steps; an
    ``nn.RNN(nonlinearity='relu')`` at gain 2, 1.9e3x, diverged at SGD lr 0.1 (a 10x smaller
    rate and warm-up diverged too; the orthogonal recurrent matrices of gain 1 trained it).
    A frozen recurrent layer (every parameter ``requires_grad=False``: ``frozen`` in the
    step-0 reading) is not judged: none of its weights trains, and the cures keep it.
    Returns ``(metric, Finding or None)``."""
    init = getattr(ctx, "through_time_init", None)
    end_tt = getattr(ctx, "through_time", None)
    if (init or {}).get("frozen"):  # a frozen recurrent layer (requires_grad False): no
        return math.nan, None  # weight of it trains, and no cure here changes it
    d0, d1 = growth_decades(init), growth_decades(end_tt)
    known = [d for d in (d0, d1) if not math.isnan(d)]
    if not known:
        return math.nan, None
    metric = max(known)
    steps = int((init or end_tt or {}).get("steps", 0))
    if metric < threshold_decades(steps):
        return metric, None
    diverged = bool(ctx.history.diverged)
    chance = ctx.chance_loss
    start, end = probe_loss_ends(ctx)
    stuck = (math.isfinite(chance) and math.isfinite(end)
             and end >= (1.0 - LR_STEP_FALL) * chance)
    if not (diverged or stuck):
        return metric, None  # it learned anyway (or no loss to judge it by)
    tt = init if not math.isnan(d0) and (math.isnan(d1) or d0 >= d1) else end_tt
    when = "at initialization" if tt is init else f"after {_count(ctx.end, 'step')}"
    factor = 10.0 ** metric if math.isfinite(metric) else math.inf
    per_step = factor ** (1.0 / (steps - 1)) if steps > 1 and math.isfinite(factor) else math.inf
    layer = tt.get("index") if tt is end_tt else (end_tt or {}).get("index", tt.get("index"))
    ev = {"metric": metric, "threshold": threshold_decades(steps),
          "growth": factor, "growth_per_step": per_step, "time_steps": steps,
          "grad_first_step": float(tt["first"]), "grad_last_step": float(tt["last"]),
          "growth_init": 10.0 ** d0 if math.isfinite(d0) else d0,
          "growth_end": 10.0 ** d1 if math.isfinite(d1) else d1,
          "diverged": diverged, "loss_step0": start, "loss_end": end, "chance_loss": chance}
    outcome = ("the run diverged (its loss became non-finite)" if diverged else
               f"the probe batch's loss went from {start:.4g} to {end:.4g}, not below a "
               f"constant prediction's {chance:.4g}")
    msg = (f"The gradient explodes through time in the recurrent layer {tt['layer']!r} "
           f"({tt['module']}): {when} the loss gradient reaching its input at step 0 is "
           f"{factor:.3g}x that at step {steps - 1}, the last (a factor {per_step:.3g} per "
           f"step back in time over {steps} time steps), and {outcome}.")
    text = ("Keep the recurrence's gain at most 1: draw the recurrent matrices orthogonal "
            "(gain 1), or clip the gradient norm (Pascanu et al. 2013).")
    return metric, Finding("exploding_through_time", [] if layer is None else [int(layer)], ev,
                           msg, {}, text, "high" if metric >= 2 * EXPLODING_TIME_DECADES
                           else "medium")
