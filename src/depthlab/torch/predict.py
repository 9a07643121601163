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

Residual blocks ``y = post(x + F(x))`` (an identity shortcut, ``F`` a chain as above, ``post``
an optional activation): ``x`` and ``F(x)`` are uncorrelated at initialization, so the means
and variances add, ``post``'s moments are taken for ``N(mean, var)`` (the skip carries e.g. a
ReLU output's positive mean), and ``Var(dL/dx) = Var(g) + Var(dL/dx through F)`` with
``g = dL/d(x + F(x))``. Without ``post`` this is as accurate as the plain chain; with it the
sum is not Gaussian and the prediction is an approximation (tested within a factor 2 in
variance).

The gradient scale is anchored at the last layer: with ``y`` and ``loss_fn`` the model is
measured with :func:`depthlab.torch.probe` on ``(x, y)`` and ``predicted grad_pre_std[L]`` =
measured ``grad_pre_std[L]``; without them the ``value`` column is NaN (nothing measured) and
``grad_pre_std`` is predicted relative to the last layer (= 1 there).

Result: the tidy table ``step, layer, module, quantity, value, predicted`` for the quantities
``pre_std``, ``act_std`` (layers with an activation) and ``grad_pre_std``.
Anything else between layers (pooling, normalization, dropout in training mode, a projection
shortcut, nested blocks, a layer called twice) breaks the chain: a ValueError names the layer.
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
from .layers import ActivationSpec, LayerInfo, activation_spec, check_model
from .probe import call_model, probe

__all__ = ["chain", "predict"]

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _storage(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


def chain(model: nn.Module, x: Any) -> list[dict]:
    """The model as a chain of segments found in one forward of ``model(x)`` (model, buffers,
    mode, ``.grad`` and RNG left as found): ``{"kind": "layer", "index", "name", "module",
    "activation": ActivationSpec | None}`` or ``{"kind": "block", "name", "layers": [layer
    segments], "post": ActivationSpec | None}`` for a residual block ``y = post(x + F(x))``
    whose branch ``F`` is itself a chain and whose shortcut is the identity. Raises
    ValueError when the model is not such a chain."""
    check_model(model)
    rec = Recording(model, ())
    inputs: dict[int, list[int]] = {}
    outputs: dict[int, int] = {}
    acts: list[tuple[int, int, ActivationSpec]] = []  # (input, output storage, spec) per call
    containers: dict[int, list[tuple[int, int]]] = {}
    handles = []

    def pre(module, args):
        t = _first_tensor(args)
        inputs.setdefault(id(module), []).append(-1 if t is None else _storage(t))

    def post(module, args, out):
        outputs[id(module)] = _storage(_first_tensor(out))

    def act_pre(module, args):
        t = _first_tensor(args)
        if t is not None:
            module._dl_in = _storage(t)

    def act_post(module, args, out):
        t = _first_tensor(out)
        if t is not None:
            acts.append((module._dl_in, _storage(t), activation_spec(module)))
            del module._dl_in

    def box_pre(module, args):
        t = _first_tensor(args)
        containers.setdefault(id(module), []).append((-1 if t is None else _storage(t), -1))

    def box_post(module, args, out):
        t = _first_tensor(out)
        calls = containers[id(module)]
        calls[-1] = (calls[-1][0], -1 if t is None else _storage(t))

    layers = list(rec.layers)
    for info in layers:
        if not isinstance(info.owner, (nn.Linear, *_CONV)):
            raise ValueError(f"predict() supports chains of Linear/Conv layers; layer "
                             f"{info.name!r} is a {info.kind}")
    try:
        with rec.isolated():  # gradients on: residual blocks are found in the autograd graph
            rec.arm()
            for info in layers:
                handles.append(info.owner.register_forward_pre_hook(pre))
                handles.append(info.owner.register_forward_hook(post))
            for m in model.modules():
                if activation_spec(m) is not None:
                    handles.append(m.register_forward_pre_hook(act_pre))
                    handles.append(m.register_forward_hook(act_post))
                elif next(iter(m.children()), None) is not None:
                    handles.append(m.register_forward_pre_hook(box_pre))
                    handles.append(m.register_forward_hook(box_post))
            call_model(model, x)
    finally:
        for h in handles:
            h.remove()
    order = rec.ran_layers()
    if not order:
        raise ValueError(f"no weight layer of {type(model).__name__} ran in the forward pass")
    after = {a[0]: a for a in acts}  # activation by input storage

    def link(info: LayerInfo, start: int | None) -> tuple[dict, int]:
        calls = inputs.get(id(info.owner), [])
        if len(calls) != 1:
            raise ValueError(f"predict() needs each layer called once; {info.name!r} ran "
                             f"{len(calls)} times")
        if info.norm is not None:
            raise ValueError(f"predict() does not model normalization: {info.name!r} is "
                             f"followed by {info.norm!r}")
        if start is not None and calls[0] != start:
            raise ValueError(f"predict() needs a chain of layers and elementwise activations; "
                             f"the input of {info.name!r} is not the previous layer's output "
                             "(pooling or another operation in between)")
        end = outputs[id(info.owner)]
        spec = None
        if info.activation is not None and end in after:
            _, end, spec = after[end]
        return {"kind": "layer", "index": info.index, "name": info.name, "module": info.owner,
                "activation": spec}, end

    members = {key: {id(m) for m in b.module.modules()} for key, b in rec.blocks.items()}
    out: list[dict] = []
    prev_end: int | None = None
    i = 0
    while i < len(order):
        info = order[i]
        keys = [k for k, ids in members.items() if id(info.owner) in ids]
        if not keys:
            seg, prev_end = link(info, prev_end)
            out.append(seg)
            i += 1
            continue
        key = min(keys, key=lambda k: len(members[k]))  # the innermost block
        block = rec.blocks[key]
        if len(keys) > 1 or len(containers.get(key, [])) != 1:
            raise ValueError(f"predict() models residual blocks that are called once and not "
                             f"nested; {block.name!r} is not")
        b_in, b_out = containers[key][0]
        if prev_end is not None and b_in != prev_end:
            raise ValueError(f"the input of residual block {block.name!r} is not the previous "
                             "layer's output")
        inner: list[dict] = []
        end = b_in
        while i < len(order) and id(order[i].owner) in members[key]:
            seg, end = link(order[i], end)
            inner.append(seg)
            i += 1
        post_spec = None
        if b_out not in (end, b_in):
            hit = [a for a in acts if a[1] == b_out and a[0] not in (end, b_in)]
            post_spec = hit[-1][2] if hit else None
        else:
            raise ValueError(f"residual block {block.name!r} does not output x + F(x)")
        out.append({"kind": "block", "name": block.name, "layers": inner, "post": post_spec})
        prev_end = b_out
    return out


def _moments(spec: ActivationSpec | None, q: float, mean: float = 0.0
             ) -> tuple[float, float, float]:
    """``E[f(s)]``, ``E[f(s)^2]``, ``E[f'(s)^2]`` for ``s ~ N(mean, q)`` (identity without
    f: ``mean``, ``mean^2 + q``, 1)."""
    if spec is None:
        return mean, mean * mean + q, 1.0
    s, w = normal_rule(q)
    st = torch.from_numpy(np.ascontiguousarray(s + mean))
    a = spec.function(st).numpy()
    d = spec.derivative(st).numpy()
    return float(w @ a), float(w @ (a * a)), float(w @ (d * d))


def _forward(seg: dict, prev_sq: float, rows: list[dict]) -> float:
    """Append the layer's row (``q = n v E[a^2] + E[b^2]`` and its activation's moments);
    returns ``E[a^2]`` of its output."""
    m = seg["module"]
    v = float(m.weight.detach().to(torch.float64).pow(2).mean())
    b2 = 0.0 if m.bias is None else float(m.bias.detach().to(torch.float64).pow(2).mean())
    fan_in, fan_out = _fans(m)
    q = fan_in * v * prev_sq + b2
    mean, sq, dsq = _moments(seg["activation"], q)
    rows.append({"layer": seg["index"], "module": seg["name"], "q": q,
                 "act_var": max(sq - mean * mean, 0.0), "dsq": dsq, "v": v,
                 "fan_out": fan_out, "act": seg["activation"] is not None})
    return sq, mean


def _backward(rows: list[dict], grad: list[float], j: int, g_out: float) -> float:
    """``Var(dL/ds_j) = Var(dL/da_j) E[f_j'^2]``; returns ``Var(dL/d input of layer j)`` =
    ``m_j v_j Var(dL/ds_j)``."""
    grad[j] = g_out * rows[j]["dsq"]
    return rows[j]["fan_out"] * rows[j]["v"] * grad[j]


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
    segments = chain(model, x)
    rows: list[dict] = []
    with torch.no_grad():
        x64 = x.detach().to(torch.float64)
        prev_sq, prev_mean = float(x64.pow(2).mean()), float(x64.mean())
        for seg in segments:
            if seg["kind"] == "layer":
                prev_sq, prev_mean = _forward(seg, prev_sq, rows)
                continue
            inner_sq, inner_mean = prev_sq, prev_mean
            for layer in seg["layers"]:
                inner_sq, inner_mean = _forward(layer, inner_sq, rows)
            # x + F(x): x and F(x) uncorrelated at init; the skip carries x's mean (e.g. the
            # positive mean of a ReLU output), F(x) its own
            mean = prev_mean + inner_mean
            var = max(prev_sq - prev_mean ** 2 + inner_sq - inner_mean ** 2, 0.0)
            prev_mean, prev_sq, post_dsq = _moments(seg["post"], var, mean)
            seg["_rows"] = (len(rows) - len(seg["layers"]), len(rows), post_dsq)
    # backward: G = Var(dL/d output of the current segment), 1 at the last layer's output
    grad = [0.0] * len(rows)
    g_out = 1.0
    k = len(rows)
    for seg in reversed(segments):
        if seg["kind"] == "layer":
            k -= 1
            g_out = _backward(rows, grad, k, g_out)
            continue
        first, last, post_dsq = seg["_rows"]
        g_pre = g_out * post_dsq
        g_branch = g_pre
        for j in range(last - 1, first - 1, -1):
            g_branch = _backward(rows, grad, j, g_branch)
        g_out = g_pre + g_branch  # identity path + branch path
        k = first
    measured = None
    scale = 1.0
    if y is not None:
        measured = probe(model, x, y, loss_fn, percentiles=percentiles)
        top = measured[(measured.layer == rows[-1]["layer"])
                       & (measured.quantity == "grad_pre_std")]["value"]
        if len(top) and grad[-1] > 0:
            scale = float(top.iloc[0]) ** 2 / grad[-1]
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
