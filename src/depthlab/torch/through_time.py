"""``vanishing_through_time``, the finding only a recurrent torch model shows: the norm of
dL/d(input at time t) of the first recurrent layer per time step, and the rule that
reads its weakest/strongest ratio (Bengio et al. 1994; Pascanu et al. 2013).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..diagnosis.findings import Finding
from ..diagnosis.rules import (
    RunContext,
    _count,
    probe_loss_ends,
    stuck_at_chance,
)
from .layers import untouched

THROUGH_TIME_DECADES = 3.0
"""``vanishing_through_time``: the smallest time step's input-gradient norm at least 10^3 times
below the largest one's (see :func:`rule_vanishing_through_time`)."""


def through_time(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: Callable
                 ) -> dict[str, Any] | None:
    """The gradient of the loss on ``(x, y)`` with respect to the input of the model's first
    recurrent layer (``nn.RNN``/``nn.GRU``/``nn.LSTM``): the first one the forward runs, on a
    floating ``(N, T, F)`` tensor (``(T, N, F)`` without ``batch_first``), whatever the order
    the model registers them in (a recurrent module registered first but run later, or never,
    gave None), as the norm ``||dL/dx_t||`` over examples and features at each time step:
    ``{"layer", "steps", "ratio" (smallest / largest step norm), "weakest",
    "strongest" (their steps), "strongest_norm", "first", "last" (norms at the first and last
    step)}``; None when the model has no recurrent layer, the first one that runs is given
    anything else (a ``PackedSequence``: a later layer given a tensor is not the first), it
    has fewer than 2 steps, or no gradient reaches it. The loss is the doctor's: a tensor of one
    element (shape ``()`` or ``(1,)``, as :func:`~depthlab.torch.train.scalar_loss` takes;
    a ``(1,)`` loss gave None). The model's weights, gradients, buffers, modes and random
    streams are left as they were (one forward and backward pass in training mode, as the
    doctor trains)."""
    rnns = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.RNNBase)]
    if not rnns:
        return None
    seen: dict[str, Any] = {}

    def leaf(name: str, m: nn.Module, args: tuple) -> tuple | None:
        t = args[0] if args else None
        if seen:  # a later recurrent call (the second layer of a stack)
            return None
        seen.update(name=name, layer=m)  # the first call, whatever it is given
        if not isinstance(t, torch.Tensor) or t.dim() != 3 or not t.is_floating_point():
            return None  # (a PackedSequence: no reading, not the next layer's instead)
        seen["x"] = t.detach().requires_grad_(True)
        return (seen["x"], *args[1:])

    hooks = [m.register_forward_pre_hook(functools.partial(leaf, n)) for n, m in rnns]
    try:  # in training mode, as the doctor trains (a cuDNN RNN has no backward in eval mode)
        with untouched(model), torch.enable_grad():
            model.train()
            loss = loss_fn(model(x), y)
            if "x" not in seen or not isinstance(loss, torch.Tensor) or loss.numel() != 1:
                return None
            g, = torch.autograd.grad(loss.reshape(()), seen["x"], allow_unused=True)
    except (RuntimeError, ValueError, TypeError):
        return None
    finally:
        for hook in hooks:
            hook.remove()
    name, layer = seen["name"], seen["layer"]
    if g is None:
        return None
    dim = 1 if layer.batch_first else 0
    norms = g.detach().double().transpose(0, dim).reshape(g.shape[dim], -1).norm(dim=1).cpu()
    steps = int(norms.numel())
    top = float(norms.max())
    if steps < 2 or not (math.isfinite(top) and top > 0):
        return None
    low = float(norms.min())
    return {"layer": name, "module": type(layer).__name__, "steps": steps, "ratio": low / top,
            "weakest": int(norms.argmin()), "strongest": int(norms.argmax()), "strongest_norm": top,
            "first": float(norms[0]), "last": float(norms[-1])}


def rule_vanishing_through_time(ctx: RunContext) -> tuple[float, Finding | None]:
    """A recurrent model that did not learn while the gradient vanished through time: after
    training, the loss gradient reaching the first recurrent layer's input at its weakest time
    step is ``10^-THROUGH_TIME_DECADES`` or less of that at its strongest (metric: those
    decades, ``-log10 ratio``), and the probe batch's loss did not end below a constant
    prediction's (``RunContext.chance_loss``), as ``rule_lr_too_low`` judges it. Such a model
    learns from its last few steps only; a label set by early steps stays at chance (a GRU on
    200 steps: 0 at steps 0..100)."""
    tt = getattr(ctx, "through_time", None)
    if not tt:
        return math.nan, None
    ratio = float(tt["ratio"])
    metric = -math.log10(ratio) if ratio > 0 else math.inf
    if metric < THROUGH_TIME_DECADES:
        return metric, None
    chance = ctx.chance_loss
    start, end = probe_loss_ends(ctx)
    if not stuck_at_chance(ctx, end):
        return metric, None
    layer = tt.get("index")
    ev = {"metric": metric, "threshold": THROUGH_TIME_DECADES, "ratio": ratio,
          "time_steps": tt["steps"], "weakest_step": tt["weakest"],
          "strongest_step": tt["strongest"], "grad_first_step": tt["first"],
          "grad_last_step": tt["last"], "ratio_step0": tt.get("ratio_step0", math.nan),
          "loss_step0": start, "loss_end": end, "chance_loss": chance}
    msg = (f"The gradient vanishes through time in the recurrent layer {tt['layer']!r} "
           f"({tt['module']}): after {_count(ctx.end, 'step')} the loss gradient reaching its "
           f"input at step {tt['weakest']} is "
           + (f"{ratio:.3g} of that at step {tt['strongest']}" if ratio > 0 else
              f"exactly 0 (underflowed), that at step {tt['strongest']} "
              f"{tt['strongest_norm']:.3g}")
           + f" (of {tt['steps']} time steps), so training learns from a few steps near step "
           f"{tt['strongest']} only, and the probe batch's loss went from {start:.4g} to "
           f"{end:.4g}, not below a constant prediction's {chance:.4g}.")
    text = ("Chrono-initialize the gate biases (Tallec & Ollivier 2018) so that the state is "
            "kept over up to T steps, or read every step (pool the outputs over time) instead "
            "of the last one.")
    return metric, Finding("vanishing_through_time", [] if layer is None else [int(layer)], ev,
                           msg, {}, text, "high" if metric >= 2 * THROUGH_TIME_DECADES
                           else "medium")
