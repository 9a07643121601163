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

A chain has neither blocks nor layers reading one input: its stages are its hidden layers,
one each, and its readings are the NumPy doctor's.
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

__all__ = ["Stage", "LayerGraph", "parallel_layers", "gradient_stages", "stage_stds"]


@dataclass
class Stage:
    """One position of the gradient path: ``layer`` (the probe table's number it is listed
    under: a block's row number, else its first layer's), the hidden ``members`` (layer
    numbers) it groups, their module ``names`` and, for a residual block, its module name."""

    layer: int
    members: list[int] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    block: str | None = None

    def where(self) -> str:
        """The words a message names the stage by."""
        if self.block is not None:
            return f"the output of residual block {self.block} (layer {self.layer})"
        if len(self.members) > 1:
            return (f"layers {', '.join(str(i) for i in self.members)} (run in parallel on "
                    "one input)")
        return f"layer {self.layer}"


@dataclass
class LayerGraph:
    """What :func:`parallel_layers` reads of a model's forward: ``groups`` of hidden layers
    that read one input tensor, each layer's output entries per example (``sizes``), and the
    layers whose output does not follow the examples (``shared``: a position embedding of
    ``arange(T)``, the same for every batch size; its gradient is the sum over the batch's
    examples, on no example's path)."""

    groups: list[list[str]] = field(default_factory=list)
    sizes: dict[str, int] = field(default_factory=dict)
    shared: frozenset[str] = frozenset()


def _first_calls(model: nn.Module, x: torch.Tensor, names: dict[nn.Module, str]
                 ) -> tuple[dict[str, tuple[int, int]], dict[str, tuple[int, ...]]]:
    """``(input key, output shape)`` of each layer's first call in one forward on ``x``."""
    inputs: list[torch.Tensor] = []  # alive during the forward: ids stay unique
    keys: dict[str, tuple[int, int]] = {}
    shapes: dict[str, tuple[int, ...]] = {}

    def hook(module: nn.Module, inp: Any, out: Any) -> None:
        name = names.get(module)
        if name is None or name in keys:
            return
        i, o = _first_tensor(inp), _first_tensor(out)
        if i is None:
            return
        inputs.append(i)
        keys[name] = (id(i), int(getattr(i, "_version", 0)))
        if o is not None:
            shapes[name] = tuple(o.shape)

    rx._forward_with_hook(model, x, list(names), hook)
    return keys, shapes


def parallel_layers(model: nn.Module, x: torch.Tensor, layers: list[rx.TracedLayer]
                    ) -> LayerGraph:
    """The :class:`LayerGraph` of ``model`` from forwards on ``x`` and on ``x`` less its last
    row (no gradients; buffers, modes and generators left as found): ``groups``, the traced
    layers' names grouped by the input tensor of their first call (the same tensor object at
    the same version: q, k and v of ``attn(norm(x))``; a tensor changed in place in between is
    another input), only groups of two or more; ``sizes``, output entries / rows; ``shared``,
    the layers whose output shape is the same for both row counts. A forward that fails under
    the hooks gives an empty graph (the hidden layers read as a chain, as before)."""
    names = {t.module: t.name for t in layers if t.ran}
    n = int(x.shape[0]) if x.dim() else 0
    try:
        keys, shapes = _first_calls(model, x, names)
    except Exception:  # noqa: BLE001 - the trace's forward ran; this one is no requirement
        return LayerGraph()
    shared: set[str] = set()
    if n >= 3:
        try:
            _, fewer = _first_calls(model, x[:n - 1], names)
        except Exception:  # noqa: BLE001 - a forward that needs its batch size: none known
            fewer = {}
        shared = {k for k, v in fewer.items() if shapes.get(k) == v}
    sizes = {k: max(1, math.prod(v) // n) for k, v in shapes.items() if n and k not in shared}
    by: dict[tuple[int, int], list[str]] = {}
    for name, key in keys.items():
        by.setdefault(key, []).append(name)
    return LayerGraph([g for g in by.values() if len(g) > 1], sizes, frozenset(shared))


def gradient_stages(points: list[Any], frame: pd.DataFrame, groups: list[list[str]],
                    shared: frozenset[str] = frozenset()) -> list[Stage]:
    """The stages (module docstring) of hidden ``points`` (``index``, ``module``) given the
    probe ``frame`` (its ``block_grad_std`` rows name the residual blocks) and the parallel
    ``groups`` of :func:`parallel_layers`, in forward order; the ``shared`` layers (whose
    output does not follow the examples) are no stage."""
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
