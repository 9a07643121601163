"""The path along which the torch doctor's gradient rules measure depth.

The vanishing/exploding rules (:func:`depthlab.diagnosis.rules.rule_vanishing`) compare the
std of the back-propagated gradient at the two ends of the network, ``R = g_last / g_first``,
across ``n`` positions in series (per-position factor ``R^(1/(n-1))``, depth scale
``xi = (n - 1) / ln(R^2)``). For a chain (an MLP, a plain CNN) the positions are the hidden
weight layers. A module graph that is not a chain has layers that do not follow each other on
the gradient's way back, and comparing them is no depth reading (a pre-norm transformer with
a SwiGLU MLP: the embedding's gradient against the last block's ``w3``, behind the gate and a
0.02-scaled ``w2``, read 110x, 'exploding_gradients', on a healthy model). There the
positions (*stages*) of the path are, in forward order:

* a residual block (a module whose output is its input plus a branch: the probe's
  ``block_grad_std`` rows) is one stage, its gradient the std of dL/d(block output): the
  residual stream that the gradient actually travels along; the hidden layers inside it
  (q/k/v, the MLP) are grouped into it (blocks nested in another block are part of it);
* hidden layers outside every block that read the same input tensor in the same forward
  (q/k/v projections, SwiGLU's gate and up projections, a gated unit's two halves, the
  branches of an Inception cell) run in parallel: they are one stage, its gradient the std
  of their outputs' gradients pooled as one fused layer's output,
  ``sqrt(sum_i m_i sigma_i^2 / sum_i m_i)`` with ``m_i`` entries per example of layer ``i``'s
  output (what a fused ``Linear(d, 3d)`` would read);
* every other hidden layer is a stage of its own, except a layer whose output does not
  follow the examples (a learned position embedding of ``arange(T)``, the same shape for any
  batch size): its gradient is the sum of the batch's examples' (sqrt(N) times a stream
  position's), on no example's path, and it is no stage.

A layer (or block) that one forward calls ``k`` times (weight sharing: ``for _ in range(4):
h = f(self.h(h))``, a universal transformer's repeated block) is ``k`` steps of the path, one
per application: the depth ``n`` counts applications (:attr:`Stage.calls`), so the factor
``R^(1/(n-1))`` is per application, not the ``k``-th power of it per module. Its gradient
reading is the probe's, pooled over the calls (:func:`pooled_factor` reads the per-application
factor off readings so pooled at the ends of the path).

A chain has neither blocks nor layers reading one input: its stages are its hidden layers,
one each, and its readings are the NumPy doctor's.

A mean over positions between a layer and the next (``AdaptiveAvgPool2d(1)``, ``AvgPool2d``,
``emb(x).mean(1)`` over tokens) divides each position's gradient by the ``k`` positions it
averages, and so the gradient of every layer below it, while the layers' weight and bias
gradients sum those positions and are not smaller: read per element, the layers below a
global average pool between two hidden layers read 'vanishing' (47.6x under a He ReLU CNN
whose convs' weight gradients are at or above the hidden Linear's). A layer ``i`` whose output
has ``P`` positions per channel (a conv's ``(N, C, *spatial)``, else ``(N, *positions, C)``)
and whose next traced layer reads ``k`` times fewer entries per example (``k > 1`` dividing
``P``; :attr:`LayerGraph.pools`) gets, at each probed step, the factor (:data:`POOLED_GRAD`)

``f_i = std_{n,c}( sum_p g_{n,c,p} ) / sqrt(P / k) / std(g)``,  ``g = dL/ds_i``

(each example's gradient of the channel's bias per position left after the pooling, the
``P / k`` of them taken as independent, against the per-element reading), and where a later
stage of the path follows, every stage up to ``i`` is multiplied by ``f_i`` (the doctor's
``TorchRunContext.gradient_stds``). A mean pool gives ``f ~ k`` (``sum_p g / k * phi'_p = g *
mean phi'``); a max pool, which routes ``g`` to one of the ``k``, ``f ~ sqrt(k)``, its
zeros' dilution. Layers with equal positions, a pool into the output layer (no later stage),
a layer in a parallel group or applied more than once, or one whose output is not one tensor
(a recurrent layer's tuple) get no factor: their readings are as before.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
from torch import nn

from . import prescriptions as rx
from .accumulators import _first_tensor

__all__ = ["Stage", "LayerGraph", "parallel_layers", "gradient_stages", "stage_stds",
           "pooled_factor", "POOLED_GRAD", "position_pools"]

POOLED_GRAD = "grad_pooled_std"
"""The probe quantity of a layer read per channel over the positions pooling into one (module
docstring); the doctor's gradient path reads it in place of ``grad_pre_std``."""


@dataclass
class Stage:
    """One position of the gradient path: ``layer`` (the probe table's number it is listed
    under: a block's row number, else its first layer's), the hidden ``members`` (layer
    numbers) it groups, their module ``names``, for a residual block its module name, and
    ``calls``: how many times one forward applies it (weight sharing; 1 without)."""

    layer: int
    members: list[int] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    block: str | None = None
    calls: int = 1

    def what(self) -> str:
        """The stage's name in a message: ``layer 3``, ``layers 2, 3, 4 (run in parallel on
        one input)``, ``the output of residual block b (layer 7)``."""
        if self.block is not None:
            return f"the output of residual block {self.block} (layer {self.layer})"
        if len(self.members) > 1:
            return (f"layers {', '.join(str(i) for i in self.members)} (run in parallel on "
                    "one input)")
        return f"layer {self.layer}"

    def where(self) -> str:
        """The words a message names the stage's reading by: :meth:`what`, and how many
        times a forward applies it when more than once (the reading pools the calls)."""
        times = f" (applied {self.calls} times in each forward)" if self.calls > 1 else ""
        return self.what() + times


@dataclass
class LayerGraph:
    """What :func:`parallel_layers` reads of a model's forward: ``groups`` of hidden layers
    that read one input tensor, each layer's output entries per example (``sizes``), and the
    layers whose output does not follow the examples (``shared``: a position embedding of
    ``arange(T)``, the same for every batch size; its gradient is the sum over the batch's
    examples, on no example's path) and each layer's ``calls`` in one forward (weight
    sharing: more than 1)."""

    groups: list[list[str]] = field(default_factory=list)
    sizes: dict[str, int] = field(default_factory=dict)
    shared: frozenset[str] = frozenset()
    calls: dict[str, int] = field(default_factory=dict)
    pools: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Layer name -> ``(channel dim, P / k)`` of the layers whose next layer reads their
    output averaged or pooled over ``k`` positions (:func:`position_pools`)."""


def _first_calls(model: nn.Module, x: torch.Tensor, names: dict[nn.Module, str],
                 in_shapes: dict[str, tuple[int, ...]] | None = None
                 ) -> tuple[dict[str, tuple[int, int]], dict[str, tuple[int, ...]],
                            dict[str, int]]:
    """``(input key, output shape)`` of each layer's first call in one forward on ``x``, and
    each layer's number of calls in that forward (its input shape put in ``in_shapes``)."""
    inputs: list[torch.Tensor] = []  # alive during the forward: ids stay unique
    keys: dict[str, tuple[int, int]] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    calls: dict[str, int] = {}
    ins = {} if in_shapes is None else in_shapes

    def hook(module: nn.Module, inp: Any, out: Any) -> None:
        name = names.get(module)
        if name is not None:
            calls[name] = calls.get(name, 0) + 1
        if name is None or name in keys:
            return
        i, o = _first_tensor(inp), _first_tensor(out)
        if i is None:
            return
        inputs.append(i)
        keys[name] = (id(i), int(getattr(i, "_version", 0)))
        ins[name] = tuple(i.shape)
        if o is not None:
            shapes[name] = tuple(o.shape)

    rx._forward_with_hook(model, x, list(names), hook)
    return keys, shapes, calls


def _reaches(start: Any, targets: set[Any], limit: int = 100_000) -> set[Any]:
    """The ``targets`` (autograd nodes) found walking back from node ``start``."""
    seen, todo, found = set(), [start], set()
    while todo and len(seen) < limit:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if node in targets:
            found.add(node)
        todo.extend(f for f, _ in getattr(node, "next_functions", ()))
    return found


def _series_calls(model: nn.Module, x: torch.Tensor, names: dict[nn.Module, str],
                  calls: dict[str, int]) -> dict[str, int]:
    """``calls`` with each layer called more than once counted by its calls *in series*: the
    longest run of calls each of which reads (through the autograd graph of one forward with
    gradients, on ``x`` made to require them) the output of the one before (``h = f(W h)``
    four times: 4; one encoder on the two halves of a Siamese input: 1). A forward without
    a graph leaves the count as it was."""
    many = {m: n for m, n in names.items() if calls.get(n, 1) > 1}
    if not many:
        return calls
    seen: dict[str, list[tuple[Any, Any]]] = {}

    def hook(module: nn.Module, inp: Any, out: Any) -> None:
        i, o = _first_tensor(inp), _first_tensor(out)
        seen.setdefault(many[module], []).append((getattr(i, "grad_fn", None),
                                                  getattr(o, "grad_fn", None)))

    xg = x.detach().clone()
    if xg.is_floating_point():
        xg.requires_grad_(True)
    handles = [m.register_forward_hook(hook) for m in many]
    try:
        with torch.enable_grad(), rx.untouched(model):
            model(xg)
    finally:
        for h in handles:
            h.remove()
    out = dict(calls)
    for name, rows in seen.items():
        if any(o is None for _, o in rows):
            continue  # no graph to tell series from parallel: every call a step
        depth: list[int] = []
        for j, (i, _) in enumerate(rows):
            found = _reaches(i, {o for _, o in rows[:j]}) if i is not None else set()
            depth.append(1 + max((depth[k] for k in range(j) if rows[k][1] in found),
                                 default=0))
        out[name] = max(depth)
    return out


def parallel_layers(model: nn.Module, x: torch.Tensor, layers: list[rx.TracedLayer]
                    ) -> LayerGraph:
    """The :class:`LayerGraph` of ``model`` from forwards on ``x`` and on ``x`` less its last
    row (no gradients; buffers, modes and generators left as found): ``groups``, the traced
    layers' names grouped by the input tensor of their first call (the same tensor object at
    the same version: q, k and v of ``attn(norm(x))``; a tensor changed in place in between is
    another input), only groups of two or more; ``sizes``, output entries / rows; ``shared``,
    the layers whose output shape is the same for both row counts; ``calls``, each layer's
    calls in series in the forward on ``x`` (:func:`_series_calls`). A forward that fails under
    the hooks gives an empty graph (the hidden layers read as a chain, as before)."""
    names = {t.module: t.name for t in layers if t.ran}
    n = int(x.shape[0]) if x.dim() else 0
    ins: dict[str, tuple[int, ...]] = {}
    try:
        keys, shapes, calls = _first_calls(model, x, names, ins)
    except Exception:  # noqa: BLE001 - the trace's forward ran; this one is no requirement
        return LayerGraph()
    shared: set[str] = set()
    if n >= 3:
        try:
            _, fewer, _ = _first_calls(model, x[:n - 1], names)
        except Exception:  # noqa: BLE001 - a forward that needs its batch size: none known
            fewer = {}
        shared = {k for k, v in fewer.items() if shapes.get(k) == v}
    try:
        calls = _series_calls(model, x, names, calls)
    except Exception:  # noqa: BLE001 - as the forwards above: the raw count stands
        pass
    sizes = {k: max(1, math.prod(v) // n) for k, v in shapes.items() if n and k not in shared}
    by: dict[tuple[int, int], list[str]] = {}
    for name, key in keys.items():
        by.setdefault(key, []).append(name)
    groups = [g for g in by.values() if len(g) > 1]
    pools = position_pools(layers, shapes, ins, n, {m for g in groups for m in g} | shared,
                           calls)
    return LayerGraph(groups, sizes, frozenset(shared), calls, pools)


def position_pools(layers: list[rx.TracedLayer], outs: dict[str, tuple[int, ...]],
                   ins: dict[str, tuple[int, ...]], n: int, skip: set[str],
                   calls: dict[str, int]) -> dict[str, tuple[int, int]]:
    """Layer name -> ``(channel dim, P / k)`` for each ran traced layer (forward order) whose
    output (shape ``outs``, ``n`` rows) has ``P`` positions per channel and whose next ran
    layer's input (``ins``) has ``k > 1`` times fewer entries per example, ``k`` dividing
    ``P`` (a mean or max over positions between them: module docstring). The channel dim is
    1 for a conv, the last otherwise; layers in ``skip`` (parallel groups, shared) or called
    more than once, and a next layer in ``skip``, give none."""
    ran = [t for t in layers if t.ran]
    out: dict[str, tuple[int, int]] = {}
    for t, nxt in zip(ran, ran[1:]):
        shape, after = outs.get(t.name), ins.get(nxt.name)
        if not n or shape is None or after is None or len(shape) < 3 or t.name in skip \
                or nxt.name in skip or calls.get(t.name, 1) > 1 or shape[0] != n \
                or not after or after[0] != n:
            continue
        dim = 1 if isinstance(t.module, nn.modules.conv._ConvNd) else len(shape) - 1
        per, fewer = math.prod(shape[1:]), math.prod(after[1:])
        positions = per // shape[dim]
        if fewer < 1 or per % fewer:
            continue
        k = per // fewer
        if k > 1 and positions % k == 0:
            out[t.name] = (dim, positions // k)
    return out


def gradient_stages(points: list[Any], frame: pd.DataFrame, groups: list[list[str]],
                    shared: frozenset[str] = frozenset(),
                    calls: dict[str, int] | None = None) -> list[Stage]:
    """The stages (module docstring) of hidden ``points`` (``index``, ``module``) given the
    probe ``frame`` (its ``block_grad_std`` rows name the residual blocks) and the parallel
    ``groups`` of :func:`parallel_layers`, in forward order; the ``shared`` layers (whose
    output does not follow the examples) are no stage. A stage's ``calls`` is the most
    calls (``calls``, by module name) of its members: a block or layer run ``k`` times."""
    blocks: dict[str, int] = {}
    if len(frame) and "module" in frame.columns:
        rows = frame[frame["quantity"] == "block_grad_std"]
        for name, layer in zip(rows["module"], rows["layer"]):
            if str(name):  # the model itself a block: its output is the model's, no stage
                blocks.setdefault(str(name), int(layer))
    top = {b: i for b, i in blocks.items()
           if not any(b.startswith(o + ".") for o in blocks if o != b)}
    group_of = {n: k for k, g in enumerate(groups) for n in g}
    stages: dict[Any, Stage] = {b: Stage(i, [], [], b) for b, i in top.items()}
    for p in points:
        if p.module in shared:
            continue
        block = next((b for b in top if p.module.startswith(b + ".")), None)
        key = block if block is not None else ("group", group_of[p.module]) \
            if p.module in group_of else ("layer", p.module)
        st = stages.setdefault(key, Stage(int(p.index)))
        st.members.append(int(p.index))
        st.names.append(p.module)
        st.calls = max(st.calls, int((calls or {}).get(p.module, 1)))
    out = sorted(stages.values(), key=lambda s: s.layer if s.block is not None
                 else min(s.members))
    for s in out:
        s.members.sort()
        if s.block is None:
            s.layer = s.members[0]
    return out


def stage_stds(stages: list[Stage], grads: pd.Series, block_grads: pd.Series,
               sizes: dict[str, int]) -> pd.Series:
    """The gradient std of each stage at one step (index: the stage's ``layer``): a block's
    ``block_grad_std`` (``block_grads``, by module name); a layer's ``grad_pre_std``
    (``grads``, by layer number); a parallel group's pooled ``sqrt(sum m_i sigma_i^2 /
    sum m_i)`` over its members with a value (``m_i``: ``sizes``, 1 when unknown; 0 stays 0,
    a non-finite member makes it non-finite)."""
    out: dict[int, float] = {}
    for s in stages:
        if s.block is not None:
            if s.block in block_grads.index:
                out[s.layer] = float(block_grads[s.block])
            continue
        vals = [(float(grads[i]), sizes.get(n, 1)) for i, n in zip(s.members, s.names)
                if i in grads.index and not math.isnan(float(grads[i]))]
        if not vals:
            continue
        if len(vals) == 1:
            out[s.layer] = vals[0][0]
            continue
        total = sum(m for _, m in vals)
        out[s.layer] = math.sqrt(sum(m * v * v for v, m in vals) / total)
    return pd.Series(out, dtype=float)


def _log_pooled(log_q: float, positions: range) -> float:
    """``ln sqrt(mean_p q^(2 p))`` over ``positions`` (log-sum-exp: no overflow)."""
    e = [2.0 * p * log_q for p in positions]
    top = max(e)
    return 0.5 * (top + math.log(sum(math.exp(v - top) for v in e) / len(e)))


def pooled_factor(ratio: float, first_calls: int, last_calls: int, n: int) -> float:
    """The per-application factor ``q`` of a path of ``n`` applications whose end readings
    pool calls: the first stage's ``a = first_calls`` applications (positions ``0..a-1``) and
    the last stage's ``b = last_calls`` (``n-b..n-1``), with the gradient std ``g_p = g_0 q^p``
    at position ``p`` and a stage's reading ``sqrt(mean_p g_p^2)`` (the probe's pooled std,
    equal-sized calls). Solves, by bisection on ``ln q``,

    ``sqrt(mean_{p in last} q^(2p)) / sqrt(mean_{p in first} q^(2p)) = ratio``

    (last reading / first reading; increasing in ``q``, every last position being past every
    first one). ``a = b = 1`` gives ``ratio^(1/(n-1))``; NaN when the ends overlap or the
    ratio is not finite and positive. A layer applied 4 times as the last stage, 2.3 per
    application, reads about ``2.3^4 / 2``: its calls nearest the input lower the pooled std."""
    a, b = int(first_calls), int(last_calls)
    if not (ratio > 0 and math.isfinite(ratio)) or a < 1 or b < 1 or n - b < a:
        return math.nan
    if a == 1 and b == 1:
        return ratio ** (1.0 / (n - 1))
    first, last = range(a), range(n - b, n)
    target = math.log(ratio)
    lo, hi = -abs(target) - 1.0, abs(target) + 1.0  # |h(ln q)| >= |ln q| - |target|
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if _log_pooled(mid, last) - _log_pooled(mid, first) < target:
            lo = mid
        else:
            hi = mid
    return math.exp(0.5 * (lo + hi))
