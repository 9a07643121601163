"""Forward hooks and tensor hooks that measure one forward/backward pass of a ``nn.Module``.

:class:`Recording` owns the hooks. ``arm()`` installs them (module forward pre-hooks and
forward hooks; ``output.register_hook`` on each layer's output for ``dL/d output``);
``disarm()`` removes them, so unrecorded steps run the model untouched (no hook at all).
While armed, every forward of the model starts a new pass; the statistics of the last pass are
read by :meth:`Recording.collect`.

Correctness rules implemented here:

* **in-place activations** (``nn.ReLU(inplace=True)``): a layer's output statistics are taken
  in its forward hook, before anything downstream runs; the activation's derivative
  ``f'(s)`` in its forward *pre*-hook, before it overwrites ``s``; the tensor hook registered
  on the layer output before the in-place operation receives ``dL/ds`` for the value before
  the modification (PyTorch's documented rule).
* **followers** are matched by tensor identity *and* version counter: ``out += identity``
  between a BatchNorm and a ReLU breaks the link (the ReLU's input is no longer the layer's).
* **weight sharing**: a module called k times per pass pools its k outputs (and k output
  gradients): means and stds by exact pairwise combination of (n, mean, M2), percentiles over
  the concatenated values, dead units over the union.
* **torch.no_grad parts**: outputs that do not require grad get no tensor hook and no
  gradient rows.
* **mixed precision**: every statistic is computed in float32 (float64 for float64 tensors)
  from the raw bf16/fp16 values, never in the autocast dtype.
* **one host transfer**: statistics stay 0-d tensors on the model's device;
  :meth:`Recording.collect` stacks them and copies them to the host once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from ..probes.stats import PERCENTILES, SATURATION_RATIO, percentile_names
from .layers import (
    ActivationSpec,
    LayerInfo,
    activation_spec,
    check_model,
    is_norm,
    weight_modules,
)

__all__ = ["Acc", "BlockInfo", "Recording", "stat_dtype"]

_ADD_NODES = frozenset({"AddBackward0", "AddBackward1"})


def stat_dtype(t: torch.Tensor) -> torch.dtype:
    """float64 for float64 tensors, float32 for everything else (bf16/fp16 included)."""
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _first_tensor(obj) -> torch.Tensor | None:
    if isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, (tuple, list)):
        for o in obj:
            t = _first_tensor(o)
            if t is not None:
                return t
    return None


def _lerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """NumPy's linear interpolation form (exact at both ends)."""
    return torch.where(t < 0.5, a + t * (b - a), b - (1.0 - t) * (b - a))


def sorted_percentiles(v: torch.Tensor, percentiles: Sequence[float]) -> torch.Tensor:
    """Percentiles of the sorted 1-d ``v`` with NumPy's default ``linear`` rule:
    ``h = (n - 1) q / 100``, ``v[floor h] + (h - floor h)(v[ceil h] - v[floor h])``."""
    n = v.numel()
    lo, hi, frac = [], [], []
    for q in percentiles:
        h = (n - 1) * (float(q) / 100.0)
        f = int(h // 1)
        lo.append(f)
        hi.append(min(f + 1, n - 1))
        frac.append(h - f)
    idx_lo = torch.tensor(lo, device=v.device)
    idx_hi = torch.tensor(hi, device=v.device)
    t = torch.tensor(frac, dtype=v.dtype, device=v.device)
    return _lerp(v[idx_lo], v[idx_hi], t)


class Acc:
    """Pooled statistics of the entries of several tensors, kept on their device.

    ``add(x)`` accumulates ``n``, ``mean`` and ``M2 = sum (x - mean)^2`` (combined exactly:
    ``mean = mean_a + d n_b / n``, ``M2 = M2_a + M2_b + d^2 n_a n_b / n`` with
    ``d = mean_b - mean_a``), optionally ``sum |x|`` and the sorted values for percentiles.
    """

    __slots__ = ("n", "mean", "m2", "abssum", "sorted", "pct", "want_abs", "want_sorted")

    def __init__(self, want_abs: bool = False, want_sorted: bool = False) -> None:
        self.n = 0
        self.mean: torch.Tensor | None = None
        self.m2: torch.Tensor | None = None
        self.abssum: torch.Tensor | None = None
        self.sorted: torch.Tensor | None = None
        self.pct: torch.Tensor | None = None
        self.want_abs = want_abs
        self.want_sorted = want_sorted

    def add(self, x: torch.Tensor) -> None:
        f = x.detach().reshape(-1).to(stat_dtype(x))
        n = f.numel()
        if n == 0:
            return
        std, mean = torch.std_mean(f, correction=0)
        m2 = std * std * n
        if self.n == 0:
            self.mean, self.m2 = mean, m2
        else:
            tot = self.n + n
            d = mean - self.mean
            self.mean = self.mean + d * (n / tot)
            self.m2 = self.m2 + m2 + d * d * (self.n * n / tot)
        self.n += n
        if self.want_abs:
            a = f.abs().sum()
            self.abssum = a if self.abssum is None else self.abssum + a
        if self.want_sorted:
            v = torch.sort(f).values
            if self.sorted is not None:
                v = torch.sort(torch.cat([self.sorted, v])).values
            self.sorted = v
            self.pct = None

    def freeze(self, percentiles: Sequence[float]) -> None:
        """Compute the percentiles and drop the sorted values (memory)."""
        if self.sorted is not None:
            self.pct = sorted_percentiles(self.sorted, percentiles)
            self.sorted = None

    def std(self) -> torch.Tensor:
        return torch.sqrt(self.m2 / self.n)


@dataclass
class ActAcc:
    """Statistics of a layer's follower: output moments/percentiles and, for an activation,
    counts on its input ``s``: saturated entries (bounded activations), inactive entries
    ``s <= 0`` (ReLU family) and the units where ``f'(s) != 0`` somewhere."""

    out: Acc
    spec: ActivationSpec | None = None
    n: int = 0
    saturated: torch.Tensor | None = None
    inactive: torch.Tensor | None = None
    alive: torch.Tensor | None = None
    dead_ok: bool = True

    def add_derivative(self, s: torch.Tensor, spec: ActivationSpec, axis: int) -> None:
        f = s.detach().to(stat_dtype(s))
        d = spec.derivative(f).abs()
        self.spec = spec
        self.n += d.numel()
        if spec.bounded:
            sat = (d < SATURATION_RATIO * spec.max_derivative).sum()
            self.saturated = sat if self.saturated is None else self.saturated + sat
        if spec.relu_family:
            off = (f <= 0).sum()
            self.inactive = off if self.inactive is None else self.inactive + off
        if d.dim() == 0:
            self.dead_ok = False
            return
        nz = d.ne(0).movedim(axis, -1).reshape(-1, d.shape[axis]).any(dim=0)
        if self.alive is None:
            self.alive = nz
        elif self.alive.shape == nz.shape:
            self.alive = self.alive | nz
        else:
            self.dead_ok = False


@dataclass
class BlockInfo:
    """A residual block: dotted ``name``, the ``module`` and ``layer`` = the number of the last
    weight layer that ran inside it (its rows sort beside that layer)."""

    name: str
    module: nn.Module
    layer: int


@dataclass
class _Pass:
    pre: dict[int, Acc] = field(default_factory=dict)
    grad: dict[int, Acc] = field(default_factory=dict)
    act: dict[int, ActAcc] = field(default_factory=dict)
    norm: dict[int, Acc] = field(default_factory=dict)
    block_grad: dict[int, Acc] = field(default_factory=dict)
    links: dict[int, tuple[torch.Tensor, int, LayerInfo, str]] = field(default_factory=dict)
    pending: dict[int, LayerInfo] = field(default_factory=dict)
    block_inputs: dict[int, list] = field(default_factory=dict)
    device: torch.device | None = None


class Recording:
    """Hooks on ``model`` that measure the last forward/backward pass while armed.

    Parameters: ``model`` (a plain ``nn.Module``), ``percentiles`` (``pre_pK``/``act_pK``;
    ``()`` skips the sorts). Attributes: ``layers`` (every :class:`LayerInfo`, static order),
    ``order`` (the layers that ran, numbered in first-execution order), ``blocks``
    (:class:`BlockInfo` per residual block, found in the first armed pass).
    """

    def __init__(self, model: nn.Module, percentiles: Sequence[float] = PERCENTILES) -> None:
        self.model = check_model(model)
        self.layers: list[LayerInfo] = weight_modules(model)
        self.percentiles = tuple(float(q) for q in percentiles)
        self.order: list[LayerInfo] = []
        self.blocks: dict[int, BlockInfo] = {}
        self._blocks_found = False
        self._claimed: set = set()
        self._owners: dict[int, list[LayerInfo]] = {}
        for info in self.layers:
            self._owners.setdefault(id(info.owner), []).append(info)
        self._names = {id(m): n for n, m in model.named_modules()}
        self._specs: dict[int, ActivationSpec | None] = {}
        self._handles: list = []
        self._last_run = 0
        self.p = _Pass()

    # -- arming ----------------------------------------------------------------------------
    @property
    def armed(self) -> bool:
        return bool(self._handles)

    def arm(self) -> None:
        """Install the hooks (idempotent)."""
        if self._handles:
            return
        h = self._handles
        model = self.model
        h.append(model.register_forward_pre_hook(self._model_pre))
        h.append(model.register_forward_hook(self._model_post))
        for m in model.modules():
            key = id(m)
            if key in self._owners:
                h.append(m.register_forward_pre_hook(self._layer_pre))
                h.append(m.register_forward_hook(self._layer_post))
            spec = self._spec(m)
            if spec is not None:
                h.append(m.register_forward_pre_hook(self._act_pre))
                h.append(m.register_forward_hook(self._act_post))
            elif is_norm(m):
                h.append(m.register_forward_pre_hook(self._norm_pre))
                h.append(m.register_forward_hook(self._norm_post))
            has_children = next(iter(m.children()), None) is not None
            if (not self._blocks_found and has_children) or key in self.blocks:
                h.append(m.register_forward_pre_hook(self._block_pre))
                h.append(m.register_forward_hook(self._block_post))

    def disarm(self) -> None:
        """Remove every hook; the last pass's statistics stay readable."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _spec(self, m: nn.Module) -> ActivationSpec | None:
        key = id(m)
        if key not in self._specs:
            self._specs[key] = activation_spec(m)
        return self._specs[key]

    @contextlib.contextmanager
    def isolated(self) -> Iterator[None]:
        """Within the block the model's buffers, mode, ``.grad`` tensors and the random number
        generators are saved; on exit they are restored and the hooks removed."""
        model = self.model
        buffers = [(b, b.detach().clone()) for b in model.buffers()]
        modes = [(m, m.training) for m in model.modules()]
        grads = [(p, p.grad) for p in model.parameters()]
        devices = sorted({b.device.index for b in [*model.parameters(), *model.buffers()]
                          if b.device.type == "cuda" and b.device.index is not None})
        try:
            with torch.random.fork_rng(devices=devices):
                yield
        finally:
            self.disarm()
            with torch.no_grad():
                for b, saved in buffers:
                    if b.shape == saved.shape:
                        b.copy_(saved)
            for m, mode in modes:
                m.training = mode
            for p, g in grads:
                p.grad = g

    # -- pass bookkeeping ------------------------------------------------------------------
    def _model_pre(self, module, args) -> None:
        self.p = _Pass()
        self._last_run = 0

    def _model_post(self, module, args, output) -> None:
        p = self.p
        for acc in (*p.pre.values(), *p.norm.values(), *(a.out for a in p.act.values())):
            acc.freeze(self.percentiles)
        p.links.clear()
        p.pending.clear()
        p.block_inputs.clear()
        out = _first_tensor(output)
        if out is not None and out.requires_grad:
            self._blocks_found = True

    def _number(self, info: LayerInfo) -> int:
        if info.index == 0:
            info.index = len(self.order) + 1
            self.order.append(info)
        self._last_run = info.index
        return info.index

    def _acc(self, table: dict, index: int, want_abs: bool = False,
             want_sorted: bool | None = None) -> Acc:
        acc = table.get(index)
        if acc is None:
            sort = bool(self.percentiles) if want_sorted is None else want_sorted
            acc = table[index] = Acc(want_abs=want_abs, want_sorted=sort)
        return acc

    def _grad_hook(self, table: dict, index: int):
        def hook(g: torch.Tensor) -> None:
            self._acc(table, index, want_abs=True, want_sorted=False).add(g)
        return hook

    # -- weight layers ---------------------------------------------------------------------
    def _layer_pre(self, module, args) -> None:
        for info in self._owners[id(module)]:
            if not info.has_output:
                self._number(info)
                info.calls += 1

    def _layer_post(self, module, args, output) -> None:
        out = _first_tensor(output)
        for info in self._owners[id(module)]:
            if not info.has_output:
                continue
            index = self._number(info)
            info.calls += 1
            if out is None or not out.is_floating_point():
                continue
            p = self.p
            if p.device is None:
                p.device = out.device
            self._acc(p.pre, index).add(out)
            p.links[id(out)] = (out, out._version, info, "layer")
            if out.requires_grad:
                out.register_hook(self._grad_hook(p.grad, index))

    # -- followers -------------------------------------------------------------------------
    def _source(self, args) -> tuple[LayerInfo, str] | None:
        x = _first_tensor(args)
        if x is None:
            return None
        hit = self.p.links.get(id(x))
        if hit is None or hit[0] is not x or hit[1] != x._version:
            return None
        return hit[2], hit[3]

    def _norm_pre(self, module, args) -> None:
        src = self._source(args)
        if src is not None and src[1] == "layer":
            self.p.pending[id(module)] = src[0]

    def _norm_post(self, module, args, output) -> None:
        info = self.p.pending.pop(id(module), None)
        out = _first_tensor(output)
        if info is None or out is None:
            return
        info.norm = self._names.get(id(module))
        self._acc(self.p.norm, info.index).add(out)
        self.p.links[id(out)] = (out, out._version, info, "norm")

    def _act_pre(self, module, args) -> None:
        src = self._source(args)
        if src is None or src[1] not in ("layer", "norm"):
            return
        info = src[0]
        s = _first_tensor(args)
        p = self.p
        acc = p.act.get(info.index)
        if acc is None:
            acc = p.act[info.index] = ActAcc(Acc(want_sorted=bool(self.percentiles)))
        acc.add_derivative(s, self._spec(module), info.feature_axis)
        p.pending[id(module)] = info

    def _act_post(self, module, args, output) -> None:
        info = self.p.pending.pop(id(module), None)
        out = _first_tensor(output)
        if info is None or out is None:
            return
        info.activation = self._names.get(id(module))
        self.p.act[info.index].out.add(out)
        self.p.links[id(out)] = (out, out._version, info, "act")

    # -- residual blocks -------------------------------------------------------------------
    def _block_pre(self, module, args) -> None:
        x = _first_tensor(args)
        fn = x.grad_fn if x is not None else None
        self.p.block_inputs.setdefault(id(module), []).append(fn)

    def _block_post(self, module, args, output) -> None:
        stack = self.p.block_inputs.get(id(module))
        in_fn = stack.pop() if stack else None
        out = _first_tensor(output)
        if out is None or not out.requires_grad:
            return
        key = id(module)
        if not self._blocks_found and key not in self.blocks and module is not self.model:
            if in_fn is not None and out.grad_fn is not None:
                adds = _residual_adds(out.grad_fn, in_fn, self._claimed)
                if adds:
                    self._claimed.update(adds)
                    self.blocks[key] = BlockInfo(self._names.get(key, ""), module,
                                                 self._last_run)
        block = self.blocks.get(key)
        if block is not None:
            out.register_hook(self._grad_hook(self.p.block_grad, key))

    # -- results ---------------------------------------------------------------------------
    def ran_layers(self) -> list[LayerInfo]:
        """The layers that ran, in first-execution order."""
        return list(self.order)

    def collect(self, weight_grads: dict[int, torch.Tensor | None] | None = None,
                extra: Sequence[tuple[int, str, str, torch.Tensor]] = (),
                also: torch.Tensor | None = None,
                ) -> list[tuple[int, str, str, float]]:
        """Rows ``(layer, module, quantity, value)`` of the last pass, with one host transfer.

        ``weight_grads`` maps ``id(parameter)`` to its gradient (None: read ``p.grad``);
        ``extra`` rows (device tensors) travel in the same transfer, and so does the 1-d
        tensor ``also``, whose host values are left in ``self.also``.
        """
        p = self.p
        dev = p.device if p.device is not None else self.layers[0].weights[0].device
        wide = torch.float32 if dev.type == "mps" else torch.float64
        pct_pre = percentile_names("pre", self.percentiles)
        pct_act = percentile_names("act", self.percentiles)
        keys: list[tuple[int, str, str]] = []
        vals: list[torch.Tensor] = []

        def put(layer: int, module: str, names, value: torch.Tensor | None) -> None:
            if value is None:
                return
            if isinstance(names, str):
                keys.append((layer, module, names))
                vals.append(value.reshape(1))
            else:
                keys.extend((layer, module, n) for n in names)
                vals.append(value.reshape(-1))

        for layer, module, name, value in extra:
            put(layer, module, name, value)
        for info in self.order:
            i, nm = info.index, info.name
            pre = p.pre.get(i)
            if pre is not None and pre.n:
                put(i, nm, "pre_mean", pre.mean)
                put(i, nm, "pre_std", pre.std())
                if self.percentiles and pre.pct is not None:
                    put(i, nm, pct_pre, pre.pct)
            act = p.act.get(i)
            out = act.out if act is not None and act.out.n else p.norm.get(i)
            if out is not None and out.n:
                put(i, nm, "act_mean", out.mean)
                put(i, nm, "act_std", out.std())
                if self.percentiles and out.pct is not None:
                    put(i, nm, pct_act, out.pct)
            if act is not None and act.n:
                if act.saturated is not None:
                    put(i, nm, "saturated_frac", act.saturated.to(wide) / act.n)
                if act.dead_ok and act.alive is not None:
                    put(i, nm, "dead_frac", (~act.alive).to(wide).mean())
                if act.inactive is not None:
                    put(i, nm, "inactive_frac", act.inactive.to(wide) / act.n)
            g = p.grad.get(i)
            if g is not None and g.n:
                put(i, nm, "grad_pre_std", g.std())
                put(i, nm, "grad_pre_absmean", g.abssum / g.n)
            w = Acc()
            gw = Acc(want_abs=True)
            for param in info.weights:
                w.add(param)
                grad = param.grad if weight_grads is None else weight_grads.get(id(param))
                if grad is not None:
                    gw.add(grad)
            put(i, nm, "weight_std", w.std())
            if gw.n:
                put(i, nm, "weight_grad_std", gw.std())
                put(i, nm, "weight_grad_absmean", gw.abssum / gw.n)
        for key, block in self.blocks.items():
            g = p.block_grad.get(key)
            if g is not None and g.n:
                put(block.layer, block.name, "block_grad_std", g.std())
        n_also = 0
        if also is not None and also.numel():
            vals.append(also.reshape(-1))
            n_also = also.numel()
        self.also = []
        if not vals:
            return []
        host = torch.cat([v.to(device=dev, dtype=wide) for v in vals]).cpu().tolist()
        if n_also:
            self.also = host[len(host) - n_also:]
            host = host[: len(host) - n_also]
        return [(a, b, c, v) for (a, b, c), v in zip(keys, host)]


def _residual_adds(out_fn, in_fn, claimed: set) -> list:
    """Add nodes between ``out_fn`` and ``in_fn`` (autograd graph) both of whose operands
    depend on ``in_fn`` and that no inner block has claimed."""
    reach: dict = {in_fn: True}
    stack: list = [(out_fn, False)]
    order: list = []
    seen: set = set()
    while stack:
        node, done = stack.pop()
        if done:
            order.append(node)
            continue
        if node is None or node in seen or node is in_fn:
            continue
        seen.add(node)
        stack.append((node, True))
        for nxt, _ in node.next_functions:
            if nxt is not None and nxt not in seen:
                stack.append((nxt, False))
    for node in order:  # post-order: children first
        reach[node] = any(reach.get(nxt, False) for nxt, _ in node.next_functions
                          if nxt is not None)
    adds = []
    for node in order:
        if node.name() in _ADD_NODES and node not in claimed:
            branches = [reach.get(nxt, False) for nxt, _ in node.next_functions if nxt is not None]
            if len(branches) >= 2 and all(branches):
                adds.append(node)
    return adds
