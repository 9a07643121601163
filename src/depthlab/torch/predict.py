"""``predict(model, x)``: the mean-field (variance-propagation) prediction of each layer's
statistics at initialization, from the model's actual weights, beside the measurement.

For a chain of Linear/Conv layers ``s_l = W_l a_{l-1} + b_l``, each optionally followed by an
elementwise activation module ``a_l = f_l(s_l)`` (:data:`depthlab.torch.layers.ACTIVATIONS`;
``a_l = s_l`` without one), with shape-only operations (flatten, view) between them, and
treating pre-activations as zero-mean Gaussians (wide layers; Glorot & Bengio 2010, He et al.
2015, Poole et al. 2016 -- the rules of :mod:`depthlab.theory.variance`):

forward   ``q_l = Var(s_l) = n_l v_l E[a_{l-1}^2] + E[b_l^2]``, ``E[a_0^2]`` = mean of ``x^2``;
          ``n_l`` = fan-in (``in_features``; ``in_channels / groups * prod(kernel)``), ``v_l``
          = mean of ``W_l^2`` (the actual weights), ``E[a_l^2] = E[f_l(s)^2]`` for
          ``s ~ N(0, q_l)`` by Gaussian quadrature (:func:`depthlab.theory.gaussian.normal_rule`)
backward  ``Var(g_l) = m_{l+1} v_{l+1} E[f_l'(s)^2] Var(g_{l+1})``, ``g_l = dL/ds_l``, with
          ``m_{l+1}`` the number of outputs each input entry feeds (``out_features``;
          ``out_channels / groups * prod(kernel) / prod(stride)``).

The gradient scale is anchored at the last layer: with ``y`` and ``loss_fn`` the model is
measured with :func:`depthlab.torch.probe` on ``(x, y)`` and ``predicted grad_pre_std[L]`` =
measured ``grad_pre_std[L]``; without them the ``value`` column is NaN (nothing measured) and
``grad_pre_std`` is predicted relative to the last layer (= 1 there).

Result: the tidy table ``step, layer, module, quantity, value, predicted`` for the quantities
``pre_std``, ``act_std`` (layers with an activation) and ``grad_pre_std``.
Anything else between layers (pooling, normalization, dropout in training mode, residual
additions, a layer called twice) breaks the chain: a ValueError names the layer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..theory.gaussian import normal_rule
from .hooks import Recording, _first_tensor
from .layers import ActivationSpec, activation_spec, check_model
from .probe import call_model, probe

__all__ = ["chain", "predict"]

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _storage(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


def chain(model: nn.Module, x: Any) -> list[dict]:
    """The model as a chain ``[{"index", "name", "module", "activation": ActivationSpec|None},
    ...]`` found in one forward of ``model(x)`` (no gradients; model, buffers, mode and RNG
    left as found). Raises ValueError when the model is not such a chain."""
    check_model(model)
    rec = Recording(model, ())
    inputs: dict[int, list[int]] = {}
    outputs: dict[int, int] = {}
    acts: dict[int, tuple[int, int, ActivationSpec]] = {}  # layer index -> (in, out, spec)
    handles = []

    def pre(module, args):
        t = _first_tensor(args)
        inputs.setdefault(id(module), []).append(-1 if t is None else _storage(t))

    def act_pre(module, args):
        t = _first_tensor(args)
        if t is not None:
            module._dl_in = _storage(t)

    def act_post(module, args, out):
        t = _first_tensor(out)
        if t is not None:
            acts[len(acts)] = (module._dl_in, _storage(t), activation_spec(module))
            del module._dl_in

    layers = [info for info in rec.layers]
    for info in layers:
        if not isinstance(info.owner, (nn.Linear, *_CONV)):
            raise ValueError(f"predict() supports chains of Linear/Conv layers; layer "
                             f"{info.name!r} is a {info.kind}")
    try:
        with rec.isolated(), torch.no_grad():
            rec.arm()
            for info in layers:
                handles.append(info.owner.register_forward_pre_hook(pre))
                handles.append(info.owner.register_forward_hook(
                    lambda m, a, o: outputs.__setitem__(id(m), _storage(_first_tensor(o)))))
            for m in model.modules():
                if activation_spec(m) is not None:
                    handles.append(m.register_forward_pre_hook(act_pre))
                    handles.append(m.register_forward_hook(act_post))
            call_model(model, x)
    finally:
        for h in handles:
            h.remove()
    order = rec.ran_layers()
    if not order:
        raise ValueError(f"no weight layer of {type(model).__name__} ran in the forward pass")
    by_out = {v[0]: v for v in acts.values()}
    out: list[dict] = []
    prev_end: int | None = None
    for info in order:
        calls = inputs.get(id(info.owner), [])
        if len(calls) != 1:
            raise ValueError(f"predict() needs each layer called once; {info.name!r} ran "
                             f"{len(calls)} times")
        if info.norm is not None:
            raise ValueError(f"predict() does not model normalization: {info.name!r} is "
                             f"followed by {info.norm!r}")
        if prev_end is not None and calls[0] != prev_end:
            raise ValueError(f"predict() needs a chain of layers and elementwise activations; "
                             f"the input of {info.name!r} is not the previous layer's output "
                             "(pooling, a residual addition or another operation in between)")
        end = outputs[id(info.owner)]
        spec = None
        if info.activation is not None and end in by_out:
            _, end, spec = by_out[end]
        out.append({"index": info.index, "name": info.name, "module": info.owner,
                    "activation": spec})
        prev_end = end
    if rec.blocks:
        names = ", ".join(b.name for b in rec.blocks.values())
        raise ValueError(f"predict() does not model residual blocks ({names})")
    return out


def _moments(spec: ActivationSpec | None, q: float) -> tuple[float, float, float]:
    """``E[f(s)]``, ``E[f(s)^2]``, ``E[f'(s)^2]`` for ``s ~ N(0, q)`` (identity without f)."""
    if spec is None:
        return 0.0, q, 1.0
    s, w = normal_rule(q)
    st = torch.from_numpy(np.ascontiguousarray(s))
    a = spec.function(st).numpy()
    d = spec.derivative(st).numpy()
    return float(w @ a), float(w @ (a * a)), float(w @ (d * d))


def _fans(module: nn.Module) -> tuple[int, float]:
    """(fan-in of an output entry, number of outputs an input entry feeds)."""
    w = module.weight
    if isinstance(module, nn.Linear):
        return int(w.shape[1]), float(w.shape[0])
    groups = int(module.groups)
    kernel = math.prod(int(k) for k in w.shape[2:])
    stride = math.prod(int(s) for s in module.stride)
    return int(w.shape[1]) * kernel, float(w.shape[0]) / groups * kernel / stride


def predict(model: nn.Module, x: Any, y: Any = None,
            loss_fn: Callable[[Any, Any], torch.Tensor] | None = None,
            percentiles: Sequence[float] = ()) -> pd.DataFrame:
    """Predicted ``pre_std``, ``act_std`` and ``grad_pre_std`` per layer (see the module
    docstring) beside the values measured by :func:`depthlab.torch.probe` on ``(x, y)``
    (``value``; NaN without ``y``/``loss_fn``). ``x`` must be a floating tensor."""
    if (y is None) != (loss_fn is None):
        raise ValueError("give both y and loss_fn (to measure and anchor the gradient scale) "
                         "or neither")
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {type(x).__name__}")
    links = chain(model, x)
    with torch.no_grad():
        prev_sq = float(x.detach().to(torch.float64).pow(2).mean())
        rows: list[dict] = []
        for link in links:
            m = link["module"]
            v = float(m.weight.detach().to(torch.float64).pow(2).mean())
            b2 = 0.0 if m.bias is None else float(m.bias.detach().to(torch.float64).pow(2).mean())
            fan_in, fan_out = _fans(m)
            q = fan_in * v * prev_sq + b2
            mean, sq, dsq = _moments(link["activation"], q)
            rows.append({"layer": link["index"], "module": link["name"], "q": q,
                         "act_var": max(sq - mean * mean, 0.0), "dsq": dsq, "v": v,
                         "fan_out": fan_out, "act": link["activation"] is not None})
            prev_sq = sq
    grad = [0.0] * len(rows)
    grad[-1] = 1.0
    for i in range(len(rows) - 2, -1, -1):
        nxt = rows[i + 1]
        grad[i] = nxt["fan_out"] * nxt["v"] * rows[i]["dsq"] * grad[i + 1]
    measured = None
    scale = 1.0
    if y is not None:
        measured = probe(model, x, y, loss_fn, percentiles=percentiles)
        top = measured[(measured.layer == rows[-1]["layer"])
                       & (measured.quantity == "grad_pre_std")]["value"]
        if len(top):
            scale = float(top.iloc[0]) ** 2
    out = []
    for r, g in zip(rows, grad):
        preds = [("pre_std", math.sqrt(r["q"])), ("grad_pre_std", math.sqrt(g * scale))]
        if r["act"]:
            preds.insert(1, ("act_std", math.sqrt(r["act_var"])))
        for q, p in preds:
            out.append((0, r["layer"], r["module"], q, p))
    df = pd.DataFrame(out, columns=["step", "layer", "module", "quantity", "predicted"])
    if measured is not None:
        df = df.merge(measured[["layer", "quantity", "value"]], on=["layer", "quantity"],
                      how="left")
    else:
        df["value"] = math.nan
    df = df[["step", "layer", "module", "quantity", "value", "predicted"]]
    return df.astype({"step": "int64", "layer": "int64", "value": "float64",
                      "predicted": "float64"})
