"""Activations a custom ``forward`` applies itself (``F.relu(self.fc1(x))``,
``torch.tanh(self.conv(x))``, ``x.sigmoid()``, ``F.gelu``, ``F.leaky_relu(h, 0.2)``,
``F.relu(h, inplace=True)``, ``F.max_pool2d(F.relu(self.conv1(x)), 2)``): the ``act_*``,
``saturated_frac``, ``dead_frac`` and ``inactive_frac`` rows of the layer whose output goes
through them, the rows an activation *module* there gives (:mod:`depthlab.torch.hooks`).

Found after the model's forward of an armed pass (:meth:`Recording._model_post`), in the
autograd graph: the layer (or normalization) outputs of the pass that no follower module took
are looked up among the inputs of the graph's nodes; a node of a known elementwise activation
(:data:`ACT_NODES`: ``ReluBackward0``, ``TanhBackward0``, ``GeluBackward0``, ...) that reads
such an output, itself or a reshaped/permuted view of it (``flatten``, ``view``,
``transpose``), is that layer's activation; its settings (slope, alpha, approximation, ...)
are the node's saved scalars, never its saved tensors (unpacking those would run a user's
saved-tensor hooks: activation checkpointing's recomputation, offloading). The statistics are
taken as a module's hooks take them, by the same accumulators, on the layer output ``s`` and
``f(s)`` computed again by the equivalent module (the same torch function: the same values);
an in-place activation (``F.relu(h, inplace=True)``, ``h.tanh_()``) is read from ``s``, which
holds ``f(s)`` now (ReLU, LeakyReLU, Tanh, Sigmoid, Hardtanh/ReLU6: their ``f'(s)`` is a
function of ``f(s)``, and so are Hardsigmoid's and the slopes of ELU, SELU and CELU below 0;
other in-place activations, SiLU, Mish, Hardswish, whose input ``f(s)`` does not tell, get no
rows).

Rules, as for modules: the first activation (in execution order) that reads an output is its
follower; an output changed in place before the end of the forward (``h += skip``) by anything
but that activation has no follower; ``x * torch.sigmoid(x)`` is SiLU,
``x * torch.tanh(F.softplus(x))`` Mish, ``x - torch.tanh(x)`` (``F.tanhshrink``) Tanhshrink
and ``x / (x.abs() + 1)`` (``F.softsign``) Softsign, its constant checked on the division's
saved tensors (:func:`_softsign_of`); ``F.threshold(h, th, value)``, whose node keeps no
``value``, is ``nn.Threshold`` where a later operation saved its output (the next layer's
input), from which ``value`` is read (:func:`_threshold_key`; else no rows) (a sigmoid gating
its own input is no sigmoid
activation, nor is that tanh a tanh activation); ``h.clamp(min=0)`` (``torch.clamp(h, 0)``,
``torch.clamp_min(h, 0)``) is ReLU and
``h.clamp(lo, hi)`` Hardtanh (ReLU6 for 0, 6), their bounds the node's saved scalars; a clamp
of other bounds is no activation (nor hides a later one); calls of one layer with activations
of different kinds get no rows (the module
case's ``mixed``). Parts without a graph (``torch.no_grad``, frozen layers fed data without
gradients, a reentrant checkpoint's inside) have no nodes to read: no functional rows there.
Unrecorded steps cost nothing (the hooks are not armed); a recorded pass without candidate
outputs (every layer followed by a module, or the model's output itself) returns at once.

``dlt.predict`` (:func:`depthlab.torch.predict.chain`) takes such an activation as the layer's
activation too (:func:`chain_acts`): a chain ``fc2(F.relu(fc1(x)))`` has the theory of
``nn.Sequential(fc1, nn.ReLU(), fc2)``, and so is an activation written out by hand that
:func:`hand_written` reads from the graph (``h * torch.sigmoid(h)``: ``nn.SiLU``).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable

import torch
from torch import nn

from ..probes.kernels import CANCELLATION_RATIO
from .accumulators import Acc, ActAcc
from .layers import ActivationSpec

__all__ = ["ACT_NODES", "HAND_WRITTEN", "chain_acts", "hand_written", "inplace_act_of",
           "record_functional"]

_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


def _f(v) -> float:
    return float(v)


def _elu(node) -> tuple | None:
    a, sc, isc = _f(node._saved_alpha), _f(node._saved_scale), _f(node._saved_input_scale)
    if sc == 1.0 and isc == 1.0:
        return (nn.ELU, a)
    if abs(a - _SELU_ALPHA) < 1e-12 and abs(sc - _SELU_SCALE) < 1e-12 and isc == 1.0:
        return (nn.SELU,)
    return None


def _hardtanh(node) -> tuple:
    lo, hi = _f(node._saved_min_val), _f(node._saved_max_val)
    return (nn.ReLU6,) if (lo, hi) == (0.0, 6.0) else (nn.Hardtanh, lo, hi)


def _clamp(node) -> tuple | None:
    """``h.clamp(min=0)``, ``torch.clamp(h, 0)``, ``torch.clamp_min(h, 0)``: ReLU (the same
    values, and the same slope but at exactly 0); ``h.clamp(lo, hi)``: Hardtanh (ReLU6 for 0,
    6), read from the node's saved scalar bounds; any other clamp (``min=1e-6`` alone, a bound
    given as a tensor) is no activation (None)."""
    lo = getattr(node, "_saved_min", None)
    hi = getattr(node, "_saved_max", None) if node.name() == "ClampBackward1" else None
    if lo is None or isinstance(lo, torch.Tensor) or isinstance(hi, torch.Tensor):
        return None
    lo = _f(lo)
    if hi is None:
        return (nn.ReLU,) if lo == 0.0 else None
    hi = _f(hi)
    if not lo < hi:
        return None
    return (nn.ReLU6,) if (lo, hi) == (0.0, 6.0) else (nn.Hardtanh, lo, hi)


def _rrelu(node) -> tuple | None:
    """``F.rrelu(h, lower, upper, training=False)``: torch's eval function, the leaky ReLU of
    the mean slope ``(lower + upper) / 2`` (as ``nn.RReLU`` in eval mode); in training mode
    its slopes are random draws that ``f(s)`` computed again would not repeat: None."""
    if bool(node._saved_training):
        return None
    return (nn.LeakyReLU, (_f(node._saved_lower) + _f(node._saved_upper)) / 2)


def _prelu_of(weight: torch.Tensor) -> nn.Module:
    """An ``nn.PReLU`` whose slope is the very tensor ``weight`` (not a copy: the stand-in,
    kept across a Watch's records, reads the trained slope as it is when called)."""
    m = nn.PReLU(max(weight.numel(), 1))
    del m.weight
    m.weight = weight
    return m


def _prelu(node) -> tuple | None:
    """``F.prelu(h, a)`` with ``a`` a leaf tensor that requires grad (a parameter: the node's
    input, read from its ``AccumulateGrad``, never from the saved tensors); None for a slope
    computed in the forward or one without gradient (no tensor to read). Below the node
    torch's own reshape of the slope (views only) is passed."""
    fns = node.next_functions
    acc = fns[1][0] if len(fns) > 1 else None
    while acc is not None and _VIEW.fullmatch(acc.name()) and acc.next_functions:
        acc = acc.next_functions[0][0]  # torch views the slope to broadcast it
    weight = getattr(acc, "variable", None)
    if not isinstance(weight, torch.Tensor) or weight.dim() > 1:
        return None
    return (_prelu_of, weight)


_CLAMPS = frozenset({"ClampBackward1", "ClampMinBackward0"})
"""Nodes of ``clamp`` calls: an activation only for the bounds :func:`_clamp` takes."""

ACT_NODES: dict[str, Callable] = {
    "ReluBackward0": lambda n: (nn.ReLU,),
    "TanhBackward0": lambda n: (nn.Tanh,),
    "SigmoidBackward0": lambda n: (nn.Sigmoid,),
    "GeluBackward0": lambda n: (nn.GELU, str(n._saved_approximate)),
    "SiluBackward0": lambda n: (nn.SiLU,),
    "MishBackward0": lambda n: (nn.Mish,),
    "EluBackward0": _elu,
    "EluBackward1": _elu,
    "CeluBackward0": lambda n: (nn.CELU, _f(n._saved_alpha)),
    "CeluBackward1": lambda n: (nn.CELU, _f(n._saved_alpha)),
    "LeakyReluBackward0": lambda n: (nn.LeakyReLU, _f(n._saved_negative_slope)),
    "LeakyReluBackward1": lambda n: (nn.LeakyReLU, _f(n._saved_negative_slope)),
    "HardtanhBackward0": _hardtanh,
    "SoftplusBackward0": lambda n: (nn.Softplus, _f(n._saved_beta), _f(n._saved_threshold)),
    "HardswishBackward0": lambda n: (nn.Hardswish,),
    "HardsigmoidBackward0": lambda n: (nn.Hardsigmoid,),
    "LogSigmoidBackward0": lambda n: (nn.LogSigmoid,),
    "SoftshrinkBackward0": lambda n: (nn.Softshrink, _f(n._saved_lambd)),
    "HardshrinkBackward0": lambda n: (nn.Hardshrink, _f(n._saved_lambd)),
    "RreluWithNoiseBackward0": _rrelu,
    "PreluKernelBackward0": _prelu,
    "ClampBackward1": _clamp,
    "ClampMinBackward0": _clamp,
}
"""Autograd nodes of elementwise activations -> ``(module class, *settings)`` of the
equivalent module (from the node's saved scalars), or None for settings no module has."""

_VIEW = re.compile(r"(View|UnsafeView|ReshapeAlias|Permute|Transpose|T|Squeeze|Unsqueeze|Alias"
                   r"|Clone)Backward\d+")
"""Nodes of views that hold every entry of their input (same values, another shape or order;
``h.clone()``: a copy of them)."""

_HOOK_NODE = "BackwardHookFunctionBackward"  # a user's full backward hook: identity per slot


def _alpha(node) -> float | None:
    """A ``SubBackward0``'s ``alpha`` (``torch.sub(a, b, alpha=...)``), None where unreadable."""
    try:
        return float(node._saved_alpha)
    except (AttributeError, RuntimeError, TypeError, ValueError):
        return None


def _out_derivative(spec: ActivationSpec, key: tuple) -> ActivationSpec | None:
    """The spec whose ``derivative`` reads ``f(s)`` instead of ``s`` (an in-place activation
    left only its output): the same values as ``f'(s)`` for these activations; None for the
    others."""
    cls = key[0]
    if cls is nn.Tanh:
        def d(a):
            return 1 - a * a
    elif cls is nn.Sigmoid:
        def d(a):
            return a * (1 - a)
    elif cls is nn.LeakyReLU and key[1] >= 0:  # sign(f(s)) = sign(s)
        d = spec.derivative
    elif cls in (nn.Hardtanh, nn.ReLU6):  # lo < f(s) < hi exactly where lo < s < hi
        d = spec.derivative
    elif cls is nn.Hardsigmoid:  # s / 6 + 1 / 2 clamped: 0 < f(s) < 1 where -3 < s < 3
        def d(a):
            return ((a > 0) & (a < 1)).to(a.dtype) / 6
    elif cls in (nn.ELU, nn.SELU, nn.CELU) and (cls is nn.SELU or key[1] > 0):
        # F.elu_(h), F.selu(h, inplace=True), F.celu(h, inplace=True): sign(f(s)) = sign(s),
        # and below 0 the slope is the output plus a constant (ELU: alpha e^s = f(s) + alpha;
        # SELU: scale alpha e^s = f(s) + scale alpha; CELU: e^(s / alpha) = f(s) / alpha + 1),
        # never 0 (where f(s) rounds to its floor, e^s is below the rounding: a unit is dead
        # only where its slope underflows, as for the module)
        if cls is nn.SELU:
            top, floor, div = _SELU_SCALE, _SELU_SCALE * _SELU_ALPHA, 1.0
        else:
            top, floor, div = 1.0, float(key[1]), float(key[1]) if cls is nn.CELU else 1.0

        def d(a):
            tiny = torch.finfo(a.dtype).tiny
            return torch.where(a > 0, torch.full_like(a, top), ((a + floor) / div).clamp_min(tiny))
    else:
        return None
    return dataclasses.replace(spec, derivative=d)


def _tensors(obj, out: list, depth: int = 0) -> None:
    """The tensors in a model's output (tensor, tuple, list, dict, dataclass; nested)."""
    if isinstance(obj, torch.Tensor):
        out.append(obj)
    elif depth < 4:
        if isinstance(obj, dict):
            obj = tuple(obj.values())
        elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            obj = tuple(getattr(obj, f.name, None) for f in dataclasses.fields(obj))
        if isinstance(obj, (tuple, list)):
            for o in obj:
                _tensors(o, out, depth + 1)


def _settings(node) -> tuple | None:
    """``ACT_NODES[name](node)``, None where the node lacks a saved scalar (another torch
    version's node layout: no rows rather than an error inside the user's forward)."""
    try:
        return ACT_NODES[node.name()](node)
    except (AttributeError, RuntimeError, TypeError, ValueError):
        return None


def _seq(node) -> int:
    try:
        return node._sequence_nr()
    except (AttributeError, RuntimeError):  # pragma: no cover - every node has one
        return -1


def _candidates(p, output) -> tuple[list[tuple], list[torch.Tensor]]:
    """The layer (or normalization) outputs of the pass ``p`` that a functional activation
    may follow, as ``(tensor, its version at the link, LayerInfo, the in-place activation's
    node or None)`` in link order, and the tensors the model returned (``output``'s; left
    empty when there is no candidate). An output that no follower module took and that is
    unchanged since its layer: a candidate unless the model returns it as it is (it has no
    follower inside the forward). One changed once, in place, by an activation's node
    (``F.relu(h, inplace=True)``): a candidate. Outputs of inference tensors (version -1) or
    without a graph: none. The usual pass (every layer followed by a module, the last one's
    output returned) reads no ``grad_fn``."""
    outs: list[torch.Tensor] | None = None
    returned: set[int] = set()
    todo: list[tuple] = []
    for t, v, info, kind in p.links.values():
        if kind != "layer" and kind != "norm" or v == -1:
            continue
        now = t._version  # (v is not -1: no inference tensor, which has no version counter)
        if now == v:
            if outs is None:
                outs = []
                _tensors(output, outs)
                returned = {id(o) for o in outs}
            if id(t) not in returned and t.grad_fn is not None:
                todo.append((t, v, info, None))
        elif now == v + 1:
            fn = t.grad_fn
            if fn is not None and fn.name() in ACT_NODES:
                todo.append((t, v, info, fn))
    if todo and outs is None:
        outs = []
        _tensors(output, outs)
    return todo, outs or []


def record_functional(rec, output) -> None:
    """Add the rows of the functional activations of the pass just forwarded (see the module
    docstring) to ``rec.p.act``; called by :meth:`Recording._model_post` before the pass's
    links are dropped and its percentiles frozen."""
    p = rec.p
    todo, outs = _candidates(p, output)
    if not todo:
        return
    consumers = _consumers(rec, p, outs, [c for c in todo if c[3] is None])
    # the activation modules' own nodes: measured by their hooks (a module reading a view of
    # the output leaves the output's own link untaken)
    done: set = {link[0].grad_fn for link in p.links.values() if link[3] == "act"}
    # what the activation modules read (a view of a layer output, ``act(h.view(...))``): a
    # node reading one of them is such a module's own, also when a forward hook of the user's
    # replaced the module's output (its grad_fn then not the activation's node): it was
    # measured twice, pooled with the hooked output (act_std 1.17 where it is 0.72)
    taken = {(link[0].grad_fn, link[0].output_nr) for link in p.links.values()
             if link[3] == "taken" and link[0].grad_fn is not None}
    for t, v, info, inplace in todo:
        if inplace is not None:
            if inplace in done:
                continue
            done.add(inplace)
            key = _settings(inplace)
            if key is not None:
                _add(rec, p, t, v, info, inplace, key, True)
            continue
        hit = _follower(t, consumers)
        if hit is None or hit[0] in done or (taken and hit[0].next_functions
                                             and hit[0].next_functions[0] in taken):
            continue
        done.add(hit[0])
        _add(rec, p, t, v, info, hit[0], hit[1], False)


def _consumers(rec, p, outs: list[torch.Tensor], cands: list[tuple]) -> dict:
    """node -> [(consumer node, its input slot, the node's output slot)] for the graph above
    the oldest candidate output (a node is made after its inputs: nothing older can read a
    candidate, so the part of the graph below it, e.g. a model upstream, is not walked)."""
    if not cands:
        return {}
    floor = min(_seq(c[0].grad_fn) for c in cands)
    roots = [o.grad_fn for o in outs if o.requires_grad and o.grad_fn is not None]
    # the layer outputs too: an activation whose output reaches no returned tensor but a
    # later layer (a model returning what _tensors cannot see)
    roots += [link[0].grad_fn for link in p.links.values() if link[0].grad_fn is not None]
    cons: dict = {}
    seen: set = set()
    stack = [r for r in roots if r is not None]
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        if _seq(node) <= floor:  # the oldest candidate or below: reads no candidate
            continue
        for j, (nxt, nr) in enumerate(node.next_functions):
            if nxt is None:
                continue
            cons.setdefault(nxt, []).append((node, j, nr))
            if nxt not in seen:
                stack.append(nxt)
    return cons


def _follower(t: torch.Tensor, cons: dict) -> tuple | None:
    """``(activation node, settings key)`` of the first activation (execution order) reading
    ``t`` or a view of all of it, else None."""
    found: list = []
    frontier = [(t.grad_fn, t.output_nr)]
    guard = 0
    while frontier and guard < 64:
        guard += 1
        node, nr = frontier.pop()
        for c, j, out_nr in cons.get(node, ()):
            if out_nr != nr:
                continue
            name = c.name()
            if name in ACT_NODES and (name not in _CLAMPS or _settings(c) is not None):
                found.append((c, node, nr))
            elif name == "DivBackward0" and j == 0 and _softsign_of(c) == (node, nr):
                found.append((c, node, nr))  # F.softsign: x / (x.abs() + 1) in Python
            elif name == "ThresholdBackward0" and j == 0:
                found.append((c, node, nr))  # F.threshold: its value read below
            elif name == _HOOK_NODE:
                frontier.append((c, j))
            elif j == 0 and _VIEW.fullmatch(name):
                frontier.append((c, 0))
    if not found:
        return None
    act, src, nr = min(found, key=lambda f: _seq(f[0]))
    name = act.name()
    key = _settings(act) if name in ACT_NODES else (nn.Softsign,) \
        if name == "DivBackward0" else _threshold_key(act, cons)
    if key is None:
        return None
    # combined with the very tensor it reads: x * sigmoid(x) (SiLU), x - tanh(x) (Tanhshrink:
    # F.tanhshrink is that in Python, whose tanh the next layer does not read),
    # x * tanh(softplus(x)) (Mish, below); any other product with it is a gate (no activation
    # of the layer); a sum with it (F.relu(k) + k) keeps the activation's rows
    for c, j, _out_nr in cons.get(act, ()):
        name = c.name()
        if name not in ("MulBackward0", "SubBackward0"):
            continue
        others = [e for k, e in enumerate(c.next_functions) if k != j]
        if (src, nr) not in others:
            continue
        if name == "MulBackward0":
            return (act, (nn.SiLU,)) if key == (nn.Sigmoid,) else None
        if j == 1 and key == (nn.Tanh,) and _alpha(c) == 1.0:
            return act, (nn.Tanhshrink,)
    if key == (nn.Softplus, 1.0, 20.0):
        for c, _j, _nr in cons.get(act, ()):
            if c.name() == "TanhBackward0":
                for m, k, _ in cons.get(c, ()):
                    if m.name() == "MulBackward0" and (src, nr) in \
                            [e for i, e in enumerate(m.next_functions) if i != k]:
                        return (act, (nn.Mish,))
    return act, key


def _stand_in(rec, info, key: tuple) -> nn.Module:
    """The module equivalent to an activation node (one per layer and setting: its id keys
    the layer's fused ReLU sums, :meth:`Recording._fuse`)."""
    table = rec.__dict__.setdefault("_fn_stand_ins", {})
    k = (id(info), key)
    m = table.get(k)
    if m is None:
        m = table[k] = key[0](*key[1:])
    return m


def _add(rec, p, t: torch.Tensor, v: int, info, node, key: tuple, inplace: bool) -> None:
    """Measure ``f(t)`` of the layer ``info`` as the module hooks measure a follower module."""
    module = _stand_in(rec, info, key)
    spec = rec._spec(module)
    if spec is None:
        return
    if inplace and spec.name != "relu":
        spec = _out_derivative(spec, key)
        if spec is None:
            return
    wk = rec._wk
    axis = info.feature_axis
    acc = p.act.get(info.index)
    if acc is None:
        acc = p.act[info.index] = ActAcc(Acc(want_sorted=bool(rec.percentiles)))
    with torch.no_grad():
        if spec.name == "relu":
            fused = p.fused.pop(id(module), None) if p.fused else None
            if fused is not None and fused[0] is t and t._version == fused[1] + inplace:
                acc.follower(module)
                n, r1, r2, z, alive = fused[3]
                acc.add_relu_counts(n, z, alive, spec)
                # (its values are read only where the sums cancel: Acc.add's _centered)
                e = r1 / n if n else 0.0
                var = r2 / n - e * e if n else 0.0
                cancels = math.isfinite(var) and e * e > CANCELLATION_RATIO * var
                acc.out.add(torch.relu(t.detach()) if cancels and not inplace else t,
                            (r1, r2), wk)
                return
            out = t.detach() if inplace else torch.relu(t.detach())
            acc.follower(module)
            acc.out.add(out, acc.add_relu_output(out, spec, axis, wk))
            rec._relu_of[id(info)] = id(module)  # the next pass measures both in one read
            return
        acc.follower(module)
        s = t.detach()
        acc.add_derivative(s, spec, axis, None)
        acc.out.add(s if inplace else module(s), None, wk)


# -- for dlt.predict's chain --------------------------------------------------------------------

def _below_views(node, made: dict | None = None, nr: int = 0) -> tuple:
    """``(node, slot)`` under any view nodes (a flatten of an activation's output, of a layer
    output before its activation), stopping at a key of ``made``."""
    for _ in range(16):
        if node is None or (made is not None and (node, nr) in made) \
                or not _VIEW.fullmatch(node.name()):
            break
        node, nr = node.next_functions[0]
    return node, nr


def chain_acts(reads: list[tuple], made: dict) -> list[tuple]:
    """For :func:`depthlab.torch.predict.chain`: the activations a forward applied itself
    between a layer (or norm) output and what a later layer (or the model's output) reads.
    ``reads``: ``(grad_fn, storage)`` of each tensor read (a layer input, an output of the
    model); ``made``: ``(grad_fn, slot)`` of each layer or norm output -> its record. Returns
    ``(made record, storage of the activation's output, equivalent module, node)`` for each
    tensor read that is an activation's output (or a view of it) whose input is such an
    output (or a view of it)."""
    out = []
    seen: set = set()
    for fn, storage in reads:
        node, _ = _below_views(fn)
        if node is None or node in seen:
            continue
        written = hand_written(node)
        if written is not None:
            src = _below_views(written[0][0], made, written[0][1])
            hit = made.get(src)
            key = written[1] if hit is not None else None
        elif node.name() not in ACT_NODES:
            continue
        else:
            src = _below_views(node.next_functions[0][0], made, node.next_functions[0][1]) \
                if node.next_functions else None
            hit = made.get(src) if src is not None else None
            key = _settings(node) if hit is not None else None
        if key is None:
            continue
        seen.add(node)
        out.append((hit, storage, key[0](*key[1:]), node))
    return out


HAND_WRITTEN: dict[type, str] = {nn.SiLU: "x * torch.sigmoid(x)",
                                 nn.Mish: "x * torch.tanh(F.softplus(x))",
                                 nn.Tanhshrink: "x - torch.tanh(x)",
                                 nn.Softsign: "x / (x.abs() + 1)"}
"""Activations a forward writes as several torch operations, recognised by
:func:`hand_written` from the autograd graph, and how they read."""


def _reads(node, src) -> bool:
    """Whether ``node`` (an elementwise node of one input) reads the very tensor ``src``
    (``(node, slot)`` of the graph)."""
    return bool(node.next_functions) and node.next_functions[0] == src


def _softsign_of(node) -> tuple | None:
    """``(input node, slot)`` of ``x`` where the autograd ``node`` is the division of
    ``x / (x.abs() + 1)`` (``F.softsign``, written so in Python; also ``x / (1 + x.abs())``),
    else None. The graph does not keep the added constant, so it is read from the division's
    saved denominator, compared with ``|x| + 1`` computed again from its saved numerator (the
    same torch operation: the same bits) on up to 256 entries; only where neither saved tensor
    has a user's saved-tensor hooks (their ``unpack`` would run: a checkpoint's recomputation,
    offloading), else None (a smooth sign ``x / (x.abs() + 1e-6)`` is no Softsign)."""
    if node is None or node.name() != "DivBackward0" or len(node.next_functions) != 2:
        return None
    x, (add, nr) = node.next_functions
    if x[0] is None or add is None or nr != 0 or add.name() not in ("AddBackward0",
                                                                    "AddBackward1"):
        return None
    fns = add.next_functions
    if not fns or fns[0][1] != 0 or fns[0][0] is None or fns[0][0].name() != "AbsBackward0" \
            or not _reads(fns[0][0], x) or any(f[0] is not None for f in fns[1:]) \
            or _alpha(add) != 1.0:
        return None
    a, b = _raw(node, "self"), _raw(node, "other")  # the saved numerator and denominator
    if a is None or b is None or a.shape != b.shape or a.dtype != b.dtype:
        return None
    with torch.no_grad():
        a, b = a.detach().flatten()[:256], b.detach().flatten()[:256]
        return x if torch.equal(b, a.abs() + 1) else None


def _raw(node, name: str) -> torch.Tensor | None:
    """The tensor ``node`` saved as ``name`` without unpacking it, None where a user's
    saved-tensor hooks were set on it (their ``unpack`` would run) or it is unreadable."""
    try:
        r = getattr(node, f"_raw_saved_{name}")
        if r.unpack_hook is not None:
            return None
        t = r.data
    except (AttributeError, RuntimeError, TypeError):
        return None
    return t if isinstance(t, torch.Tensor) else None


def _threshold_key(node, cons: dict) -> tuple | None:
    """``(nn.Threshold, threshold, value)`` of an ``F.threshold(s, threshold, value)`` node:
    ``f(s) = s`` for ``s > threshold``, else ``value``. The node keeps ``threshold`` and ``s``
    but not ``value``, which is read from the output itself where a later operation saved it
    (the next layer's input: ``addmm``'s ``mat1``, a conv's ``input``; through views of all
    of it in the same order): a saved tensor of ``s``'s size equal to ``s`` wherever ``s >
    threshold`` and to one number elsewhere (that number is ``value``). None where no such
    tensor is found (no rows rather than a guessed value) or ``s`` cannot be read."""
    try:
        th = float(node._saved_threshold)
    except (AttributeError, RuntimeError, TypeError, ValueError):
        return None
    s = _raw(node, "self")
    if s is None:
        return None
    with torch.no_grad():
        s = s.detach()
        keep = s > th
        flat_keep, flat_s = keep.reshape(-1), s.reshape(-1)
        if bool(flat_keep.all()):
            return (nn.Threshold, th, th)  # no entry at its value: any value gives these rows
        frontier, guard = [node], 0
        while frontier and guard < 16:
            guard += 1
            n = frontier.pop()
            for c, j, out_nr in cons.get(n, ()):
                if out_nr != 0:
                    continue
                if j == 0 and _VIEW.fullmatch(c.name()) and not c.name().startswith(
                        ("Permute", "Transpose", "T")):
                    frontier.append(c)
                    continue
                for attr in dir(c):
                    if not attr.startswith("_raw_saved_"):
                        continue
                    t = _raw(c, attr[len("_raw_saved_"):])
                    if t is None or t.numel() != s.numel() or t.dtype != s.dtype \
                            or t.device != s.device:
                        continue
                    f = t.detach().reshape(-1)
                    rest = f[~flat_keep]
                    if torch.equal(f[flat_keep], flat_s[flat_keep]) \
                            and bool((rest == rest[0]).all()):
                        return (nn.Threshold, th, float(rest[0]))
    return None


def hand_written(node) -> tuple | None:
    """``((input node, slot), settings key)`` where the autograd ``node`` is the last step of
    an activation written out by hand on one tensor ``x`` (the very tensor: the graph's same
    node and slot in both places, never a copy of equal values):

    - ``x * torch.sigmoid(x)`` or ``torch.sigmoid(x) * x``: SiLU, ``x sigma(x)``;
    - ``x * torch.tanh(F.softplus(x))`` (softplus of beta 1, threshold 20, its saved
      scalars): Mish, ``x tanh(ln(1 + e^x))``;
    - ``x - torch.tanh(x)`` (``torch.sub`` of alpha 1): Tanhshrink;
    - ``x / (x.abs() + 1)`` (``F.softsign``'s own Python, :func:`_softsign_of`): Softsign.

    None for anything else (another product, a gate ``x * torch.sigmoid(g)``)."""
    name = node.name()
    if name == "DivBackward0":
        x = _softsign_of(node)
        return (x, (nn.Softsign,)) if x is not None else None
    if name == "MulBackward0" and len(node.next_functions) == 2:
        a, b = node.next_functions
        for x, other in ((a, b), (b, a)):
            g = other[0]
            if x[0] is None or g is None or other[1] != 0:
                continue
            if g.name() == "SigmoidBackward0" and _reads(g, x):
                return x, (nn.SiLU,)
            if g.name() == "TanhBackward0" and g.next_functions:
                sp = g.next_functions[0][0]
                if sp is not None and sp.name() == "SoftplusBackward0" \
                        and _settings(sp) == (nn.Softplus, 1.0, 20.0) and _reads(sp, x):
                    return x, (nn.Mish,)
        return None
    if name == "SubBackward0" and len(node.next_functions) == 2 and _alpha(node) == 1.0:
        x, (g, nr) = node.next_functions
        if x[0] is not None and g is not None and nr == 0 and g.name() == "TanhBackward0" \
                and _reads(g, x):
            return x, (nn.Tanhshrink,)
    return None


def inplace_act_of(t: torch.Tensor, made: dict) -> bool:
    """Whether ``t`` is a layer (or norm) output an activation changed in place
    (``F.relu(h, inplace=True)``, ``F.threshold(h, th, v, inplace=True)``, whose value
    :func:`depthlab.torch.chain.chain` reads from the call): its node is that activation's,
    reading the output."""
    fn = t.grad_fn
    if fn is None or fn.name() not in ACT_NODES and fn.name() != "ThresholdBackward1" \
            or not fn.next_functions:
        return False
    return fn.next_functions[0] in made
