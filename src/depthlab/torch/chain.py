"""``chain(model, x)``: the structure :func:`depthlab.torch.predict.predict` reads from one traced
forward -- the weight layers in order, each one's activation (a module or a function the forward
applies), BatchNorm after a layer, pooling and dropout between segments, residual blocks
``post(P(x) + F(x))`` -- or a ValueError naming the module, function or torch operation that
breaks the chain (and the user hooks that would change what the theory sees).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from . import norms, pooling
from .accumulators import _first_tensor
from .functional_acts import (
    ACT_NODES,
    HAND_WRITTEN,
    _below_views,
    _settings,
    chain_acts,
    hand_written,
    inplace_act_of,
)
from .functional_acts import _tensors as output_tensors
from .hooks import Recording
from .layers import (
    ACTIVATIONS,
    ActivationSpec,
    LayerInfo,
    activation_spec,
    check_model,
    is_norm,
    none_ran,
    replaced_forward,
)
from .norms import PER_EXAMPLE
from .norms import between as norm_between
from .probe import check_loss, check_targets, forward, trackable

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONVT = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def _storage(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


def chain(model: nn.Module, x: Any, y: Any = None,
          loss_fn: Callable[[Any, Any], torch.Tensor] | None = None) -> list[dict]:
    """The model as a chain of segments found in one forward of ``model(x)`` (model, buffers,
    mode, ``.grad`` and RNG left as found): ``{"kind": "layer", "index", "name", "module",
    "activation": ActivationSpec | None}`` or ``{"kind": "block", "name", "layers": [layer
    segments], "post": ActivationSpec | None}`` for a residual block ``y = post(x + F(x))``
    whose branch ``F`` is itself a chain and whose shortcut is the identity. Raises
    ValueError when the model is not such a chain: the first layer must read the input ``x``
    itself (or a view of it, or what the forward made of it without a tensor that requires
    grad, ``x.float() / 255``: the first segment's ``"input"`` then holds those values, which
    the theory starts from), each layer the previous segment's output not changed in place
    since, and a block's add must take the branch's and the shortcut's outputs as they are
    (``x + 0.1 * F(x)`` is refused; a sum on a copy, ``x = x.clone(); x += F(x)``, is the sum;
    an activation the block applies itself to the sum, ``F.relu(x + F(x))``, is its ``post``
    as the module would be); the loss
    (``loss_fn(model(x), y)``; without them the model's first output tensor) must depend on
    the layers only through the last segment (a skip or an auxiliary output after the last
    layer would add gradient paths that the chain does not have); a forward hook of the
    user's that replaces or changes the output of a layer, activation or normalization
    module is refused by name (the theory computes that output from the weights)."""
    check_model(model)
    if isinstance(x, torch.Tensor) and x.is_floating_point() and not x.requires_grad:
        # an equal input with an autograd node: a residual block that reads x itself (the
        # model's first module) is then found in the graph (it was refused as 'not the
        # previous layer's output')
        with torch.inference_mode(False), torch.enable_grad():
            x = (x.clone() if x.is_inference() else x.detach()).requires_grad_().clone()
    rec = Recording(model, ())
    inputs: dict[int, list[int]] = {}
    outputs: dict[int, tuple[int, int]] = {}  # layer -> (output storage, call sequence number)
    acts: list[tuple[int, int, ActivationSpec, int]] = []  # (input, output, spec, seq) per call
    norms: list[tuple[int, int, nn.Module, int]] = []  # (input, output, module, seq) per call
    norm_ins: dict[int, torch.Tensor] = {}  # output storage -> input of a per-example norm
    shapes: dict[int, tuple[int, ...]] = {}  # layer -> input shape
    others: dict[int, str] = {}  # output storage -> "'name' (Class)" of other leaf modules
    foreign: set[str] = set()  # labels of torch activation modules the theory has no f for
    # pooling and training-mode dropout: (input storage, output storage, Between, seq)
    betweens: list[tuple[int, int, pooling.Between, int]] = []
    names = {id(m): n for n, m in model.named_modules()}
    named = dict(model.named_modules())
    seq = iter(range(1 << 62))
    containers: dict[int, list[tuple[int, int]]] = {}
    box_fns: dict[int, tuple[Any, Any]] = {}  # block -> (input's grad_fn, output's grad_fn)
    held: list[torch.Tensor] = []  # containers' outputs
    box_made: dict[tuple, None] = {}  # (grad_fn, slot) of each container's output: an
    # activation applied in place to a block's output, F.relu(block(h), inplace=True), is its
    # post (_functional_reader), not a change of the next layer's input
    fns: dict[int, Any] = {}  # call sequence number -> grad_fn of that call's output
    labels: dict[int, str] = {}  # call sequence number -> "'name' (Class)"
    producers: dict[int, tuple[int, str]] = {}  # output storage -> (input storage, "'n' (C)")
    copies: dict[int, int] = {}  # output -> input storage of a shape-only module that copied
    versions: dict[int, int] = {}  # storage -> version counter after its last seen writer
    changed: dict[int, str] = {}  # layer -> the producer whose output changed in place since
    in_ops: dict[int, Any] = {}  # layer -> autograd node that made its input (not a module)
    graphless: set[int] = set()  # layers whose input has no autograd node though x has one
    # (the clone above): computed under torch.no_grad() or detached
    seg_outs: list[tuple[str, torch.Tensor]] = []  # "'name' (Class)", output of each
    # activation and norm call (a gradient hook the user's forward put on one is refused)
    custom: dict[int, str] = {}  # layer or activation -> a custom autograd.Function between
    # it and the module before (its backward may scale the gradient: GradReverse)
    sizes: dict[int, int] = {}  # storage -> entries of the tensor first written there (x, a
    # module's output): a layer reading a view with fewer (a slice, one time step) reads a part
    in_sizes: dict[int, int] = {}  # layer or container -> entries of its (last) input
    first_in: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # the first layer called ->
    # (its input, a copy of its values): the start of the theory after a weight-free
    # preprocessing of x in the forward (x / 255, a standardization), see peel()
    handles = []
    own: dict[int, tuple[torch.Tensor, int]] = {}  # module -> (its forward's output, version)
    out_tensors: dict[int, tuple[torch.Tensor, int]] = {}  # layer -> (output s, version)
    ops: dict[int, Any] = {}  # storage a module read -> autograd node of the torch operation
    # that made it (not a module): 'MulBackward0' for act(l1(x) * 3)
    # activations the forward applies itself (F.relu(self.fc1(x))): the (grad_fn, slot) of
    # each layer or norm call's output -> (storage, seq, module), and the grad_fn and storage
    # of each layer input (functional_acts.chain_acts reads the graph between them)
    made: dict[tuple, tuple[int, int, nn.Module]] = {}
    reads: list[tuple[Any, int]] = []

    def label(module) -> str:
        return f"{names.get(id(module), '')!r} ({type(module).__name__})"

    def own_post(module, args, out):
        """Registered to run before every other forward hook (``prepend``): the output the
        module's own forward returned, and its version counter."""
        t = _first_tensor(out)
        if t is not None:
            own[id(module)] = (t, t._version)

    def unhooked(module, out) -> None:
        """A ValueError when a forward hook of the user's replaced ``module``'s output or
        changed it in place: the theory computes the output from the weights and the input (a
        hook returning ``3 * out`` on a layer: every row was measured 3.0x the prediction)."""
        got, t = own.pop(id(module), None), _first_tensor(out)
        if got is not None and t is not None and (got[0] is not t or got[1] != t._version):
            raise ValueError(f"predict() computes each module's output from its weights and "
                             f"input; a forward hook on {label(module)} replaced or changed "
                             "that output, which the theory does not see; expected forward "
                             "hooks that only read (return None), or the model without that "
                             "hook")

    def wrote(module, t_in, t, at: int) -> None:
        """Bookkeeping for a module call that produced ``t`` from ``t_in``."""
        fns[at] = t.grad_fn
        labels[at] = label(module)
        versions[_storage(t)] = t._version
        sizes.setdefault(_storage(t), t.numel())
        if t_in is not None and t_in.grad_fn is not None:
            ops.setdefault(_storage(t_in), t_in.grad_fn)
        if t_in is not None and _storage(t_in) != _storage(t):  # not in place
            producers.setdefault(_storage(t), (_storage(t_in), label(module)))
            if _shape_only(module):  # e.g. Flatten of a non-contiguous tensor
                copies.setdefault(_storage(t), _storage(t_in))

    def pre(module, args):
        t = _first_tensor(args)
        inputs.setdefault(id(module), []).append(-1 if t is None else _storage(t))
        if t is not None:  # alive, so no later tensor takes its storage (a torch.cat's
            held.append(t)  # result that a checkpointed segment frees: producers looped)
        if not first_in and t is not None:
            first_in[id(module)] = (t, t.detach().clone())
        if t is not None and t.grad_fn is not None:
            reads.append((t.grad_fn, _storage(t)))
            if _storage(t) in versions and versions[_storage(t)] + 1 == t._version and (
                    inplace_act_of(t, made) or inplace_act_of(t, box_made)):
                # F.relu(h, inplace=True) on the layer output (or a residual block's)
                versions[_storage(t)] = t._version
        if t is not None:
            shapes[id(module)] = tuple(t.shape)
            in_sizes[id(module)] = t.numel()
            if t.grad_fn is None and not t.requires_grad and t.is_floating_point() \
                    and isinstance(x, torch.Tensor) and x.grad_fn is not None:
                graphless.add(id(module))
            if t.grad_fn is not None:
                in_ops.setdefault(id(module), t.grad_fn)
                fn = _custom_function(t.grad_fn, set(fns.values()))
                if fn is not None:
                    custom.setdefault(id(module), fn)
            if versions.get(_storage(t), t._version) != t._version:
                changed.setdefault(id(module), producers.get(_storage(t), (0, "x"))[1])

    def post(module, args, out):
        unhooked(module, out)
        at = next(seq)
        outputs[id(module)] = (_storage(_first_tensor(out)), at)
        t_out = _first_tensor(out)
        if t_out is not None:
            out_tensors[id(module)] = (t_out, t_out._version)
            if t_out.grad_fn is not None:
                made[(t_out.grad_fn, t_out.output_nr)] = (_storage(t_out), at, module)
        wrote(module, _first_tensor(args), _first_tensor(out), at)

    def act_pre(module, args):
        t = _first_tensor(args)
        if t is not None:
            module._dl_in = _storage(t)
            held.append(t)
            fn = _custom_function(t.grad_fn, set(fns.values()))
            if fn is not None:
                custom.setdefault(id(module), fn)

    def act_post(module, args, out):
        unhooked(module, out)
        t = _first_tensor(out)
        if t is not None:
            acts.append((module._dl_in, _storage(t), activation_spec(module), next(seq)))
            seg_outs.append((label(module), t))
            wrote(module, _first_tensor(args), t, acts[-1][3])
            del module._dl_in

    def norm_pre(module, args):
        t = _first_tensor(args)
        if t is not None:
            module._dl_in = _storage(t)
            held.append(t)

    def norm_post(module, args, out):
        unhooked(module, out)
        t = _first_tensor(out)
        if t is not None and hasattr(module, "_dl_in"):
            norms.append((module._dl_in, _storage(t), module, next(seq)))
            t_in = _first_tensor(args)
            nb = None if t_in is None else norm_between(module, t_in, label(module))
            if nb is not None:  # a LayerNorm/GroupNorm/RMSNorm that may read a block's output
                # or an activation's (pre-norm branch, final norm): modelled between segments
                betweens.append((module._dl_in, _storage(t), nb, norms[-1][3]))
                norm_ins[_storage(t)] = t_in
            if t.grad_fn is not None:
                made[(t.grad_fn, t.output_nr)] = (_storage(t), norms[-1][3], module)
            seg_outs.append((label(module), t))
            wrote(module, _first_tensor(args), t, norms[-1][3])
            del module._dl_in

    def box_pre(module, args):
        t = _first_tensor(args)
        containers.setdefault(id(module), []).append((-1 if t is None else _storage(t), -1))
        if t is not None:
            in_sizes[id(module)] = t.numel()
        box_fns[id(module)] = (None if t is None else t.grad_fn, None)

    def box_post(module, args, out):
        t = _first_tensor(out)
        calls = containers[id(module)]
        calls[-1] = (calls[-1][0], -1 if t is None else _storage(t))
        box_fns[id(module)] = (box_fns[id(module)][0], None if t is None else t.grad_fn)
        if t is not None:
            versions[_storage(t)] = t._version
            sizes.setdefault(_storage(t), t.numel())
            if t.grad_fn is not None:
                box_made[(t.grad_fn, t.output_nr)] = None
            held.append(t)  # alive: its storage is the block's key (not reused by a later one)

    def other_post(module, args, out):
        t = _first_tensor(out)
        t_in = _first_tensor(args)
        b = None if t is None or t_in is None else pooling.between(module, t_in, t,
                                                                     label(module))
        if t is not None:
            # the first producer: a view (flatten) shares the storage of what it reshapes
            others.setdefault(_storage(t), label(module))
            if (type(module).__module__ == nn.Threshold.__module__  # torch.nn activations
                    and next(module.parameters(), None) is None):  # not MultiheadAttention
                foreign.add(label(module))
            at = next(seq)
            if b is not None:
                betweens.append((_storage(t_in), _storage(t), b, at))
                if t.grad_fn is not None:
                    pool_nodes[(t.grad_fn, t.output_nr)] = betweens[-1]
            wrote(module, t_in, t, at)

    # pooling and reshapes the forward applies as functions (F.max_pool2d, torch.flatten,
    # x.view): found by _Functions, a TorchFunctionMode, with the call's own arguments and tensors
    fbetweens: list[tuple[int, int, pooling.Between, int]] = []
    fn_pools: dict[int, str] = {}  # output storage -> a pooling function predict() cannot model
    # (grad_fn, slot) of each pooling call's output -> its betweens entry; the layer segments
    # whose activation comes after a max pool (moved before it: max and f commute)
    pool_nodes: dict[tuple[Any, int], tuple[int, int, pooling.Between, int]] = {}
    moved: set[int] = set()
    # output storage -> (input storage, "the function F.max_pool2d"): producers after the
    # forward, where no module made that output (a module's own inner call is named by it)
    fproducers: dict[int, tuple[int, str]] = {}
    # autograd node of a product or quotient of one computed tensor and a constant (a number, a
    # parameter, a buffer: ``0.5 * F(x)``, ``self.gamma * F(x)``, ``F(x) / tau``) -> (the
    # node of that tensor, the constant factor): a residual branch's scale (_check_add)
    scales: dict[Any, tuple[Any, Any]] = {}
    # autograd node of the output of F.softsign / F.tanhshrink (Python compositions of torch
    # operations) -> (the input's node and slot, the equivalent module)
    composites: dict[Any, tuple[Any, int, nn.Module]] = {}
    # activation modules running now: a product inside one (the bridge's PenalizedTanh,
    # ``torch.where(x > 0, tanh(x), self.a * tanh(x))``) is the activation's own arithmetic,
    # no residual branch's scale (its read made the module's inner tanh a second activation)
    in_act = [0]

    def on_function(name: str, args: tuple, kwargs: dict, out: Any) -> None:
        """Bookkeeping for a torch function call ``name(*args, **kwargs) -> out``: a pooling
        function as its module (:func:`depthlab.torch.pooling.function_module`: the same
        :class:`~depthlab.torch.pooling.Between`), a reshape that copied as a copy of the
        values (as a Flatten module that copied)."""
        if name in _SCALES:
            if not in_act[0]:
                _record_scale(name, args, kwargs, out, scales, reads)
            return
        if name in _THRESHOLDS:  # F.threshold(s, th, value): its node keeps no value
            t_in = kwargs.get("input", args[0] if args else None)
            th = kwargs.get("threshold", args[1] if len(args) > 1 else None)
            value = kwargs.get("value", args[2] if len(args) > 2 else None)
            if not isinstance(out, torch.Tensor) or out.grad_fn is None \
                    or not isinstance(t_in, torch.Tensor) or t_in.grad_fn is None \
                    or not isinstance(th, (int, float)) or not isinstance(value, (int, float)):
                return
            if out is t_in or kwargs.get("inplace"):  # in place: the node reads the old s
                if out.grad_fn.name() == "ThresholdBackward1" and out.grad_fn.next_functions:
                    src, nr = out.grad_fn.next_functions[0]
                    composites[out.grad_fn] = (src, nr, nn.Threshold(float(th), float(value)))
                return
            composites[out.grad_fn] = (t_in.grad_fn, t_in.output_nr,
                                       nn.Threshold(float(th), float(value)))
            return
        if name in _COMPOSITE_ACTS:
            t_in = kwargs.get("input", args[0] if args else None)
            if isinstance(out, torch.Tensor) and out.grad_fn is not None \
                    and isinstance(t_in, torch.Tensor) and t_in.grad_fn is not None:
                composites[out.grad_fn] = (t_in.grad_fn, t_in.output_nr,
                                           _COMPOSITE_ACTS[name]())
            return
        if name in _ADDS:  # a residual sum's operands: x + F.relu(self.l(x)), a branch
            # ending with an activation the forward applies itself (chain_acts reads them;
            # only layer inputs were read, so the add's operand was 'another operation')
            for a in (*args, *kwargs.values()):
                if isinstance(a, torch.Tensor) and a.grad_fn is not None:
                    reads.append((a.grad_fn, _storage(a)))
            return
        t_in = kwargs.get("input", args[0] if args else None)
        t = _first_tensor(out)
        if not isinstance(t_in, torch.Tensor) or t is None or not t_in.is_floating_point() \
                or not t.requires_grad:  # (the hooks' own statistics: no graph, and freed
            return  # storages whose addresses a later tensor may reuse)
        base = name.lstrip("_").removesuffix("_with_indices")
        if base in _RESHAPES:
            if t.numel() == t_in.numel() and _storage(t) != _storage(t_in):
                copies.setdefault(_storage(t), _storage(t_in))
                fproducers.setdefault(_storage(t), (_storage(t_in), f"the function {base}"))
                sizes.setdefault(_storage(t), t.numel())
            return
        rest = args[1:] if "input" not in kwargs else args
        if base in ("mean", "amax"):  # h.mean((2, 3)): global pooling over the trailing dims
            module = pooling.global_module(base, t_in.dim(), rest,
                                           {k: v for k, v in kwargs.items() if k != "input"})
            if module is None:
                return
            d = pooling.pool_dims(module)
            who = f"the function {base}"  # (the pooled shape: keepdim or not)
            b = pooling.between(module, t_in, t.reshape(*t_in.shape[:-d], *[1] * d), who)
        elif "pool" not in base and "dropout" not in base:
            return
        else:
            module = pooling.function_module(name, rest, {k: v for k, v in kwargs.items()
                                                          if k != "input"})
            who = f"the function F.{base}"
            b = None if module is None else pooling.between(module, t_in, t, who)
        if b is None and _shape_only(module) and t.numel() == t_in.numel():
            # F.dropout(h, training=False) or p = 0: the values themselves
            if _storage(t) != _storage(t_in):
                copies.setdefault(_storage(t), _storage(t_in))
            return
        if b is None:
            fn_pools.setdefault(_storage(t), who)
            return
        fbetweens.append((_storage(t_in), _storage(t), b, next(seq)))
        if t.grad_fn is not None:
            pool_nodes[(t.grad_fn, t.output_nr)] = fbetweens[-1]
        if t_in.grad_fn is not None:
            ops.setdefault(_storage(t_in), t_in.grad_fn)
        sizes.setdefault(_storage(t), t.numel())
        fproducers.setdefault(_storage(t), (_storage(t_in), who))
        if t_in.grad_fn is not None:  # a functional activation before it (chain_acts)
            reads.append((t_in.grad_fn, _storage(t_in)))

    def between(storage: int, start: int | None = None) -> str:
        """The modules that produced ``storage`` from ``start`` (walked back), named."""
        path: list[str] = []
        seen = {storage}  # a storage freed and reused by a later tensor (an in-place ReLU
        # inside a checkpointed segment) can make the walk come back: stop there
        while storage in producers and storage != start and len(path) < 8:
            storage, who = producers[storage]
            path.append(who)
            if storage in seen:
                break
            seen.add(storage)
        who = path[0] if path else others.get(storage)
        bad = sorted({p for p in [*path, who] if p in foreign})
        # Threshold, RReLU, Softshrink, ...: not 'another operation' but an activation
        note = (f"; {', '.join(bad)} {'is an activation' if len(bad) == 1 else 'are activations'}"
                f" predict() has no theory for (modelled: {_modelled_acts()})" if bad else "")
        op = ""
        if path and storage != start and storage in fn_pools:  # F.alpha_dropout, F.lp_pool2d
            op = (f", and {path[-1]} reads the output of {fn_pools[storage]}, which predict() "
                  f"has no theory for (modelled: {_MODELLED_POOLS})")
        elif path and storage != start and storage not in producers and storage in ops \
                and not (isinstance(x, torch.Tensor) and storage == _storage(x)):
            fn = ops[storage]  # the first module on the path reads a torch operation's result
            node = fn.name()
            op = (f", and {path[-1]} reads the result of the torch operation "
                  f"{re.sub(r'Backward[0-9]*$', '', node)!r} (autograd node {node}), not the "
                  f"previous layer's output{_add_hint(fn)}")
        elif not path and who and storage != start and storage in ops \
                and not (isinstance(x, torch.Tensor) and storage == _storage(x)):
            # a view module (an nn.Flatten of a contiguous tensor shares its storage, so it is
            # no producer) reading a torch operation's result, h * w of a squeeze-excitation
            # gate: the refusal named the Flatten only, a module predict() models
            fn = ops[storage]
            node = fn.name()
            op = (f", which reads the result of the torch operation "
                  f"{re.sub(r'Backward[0-9]*$', '', node)!r} (autograd node {node}), not the "
                  f"previous layer's output{_add_hint(fn)}")
        if len(path) > 1:
            return ("; it is made by " + " -> ".join(reversed(path)) + op + note
                    + _dropout_inside(path[::-1]))
        return f"; it is the output of {who}{op}{note}" if who else ""

    def reg_pre(m, hook):
        """``hook(module, args)`` as a pre-hook that also sees keyword arguments, after the
        positional ones (``act(input=h)``: the activation's input; it was read from the
        positional arguments only, and predict failed with an AttributeError)."""
        def kw(module, args, kwargs):
            hook(module, args + tuple(kwargs.values()) if kwargs else args)
        handles.append(m.register_forward_pre_hook(kw, with_kwargs=True))

    def reg_post(m, hook):
        """``hook(module, args, out)`` as a forward hook seeing keyword arguments (reg_pre)."""
        def kw(module, args, kwargs, out):
            hook(module, args + tuple(kwargs.values()) if kwargs else args, out)
        handles.append(m.register_forward_hook(kw, with_kwargs=True))

    layers = list(rec.layers)
    layer_ids = {id(info.owner) for info in layers}
    for info in layers:
        kind = unsupported_layer([info])
        if kind:
            raise ValueError(kind)
        _check_stock_forward(info)
    _check_backward_hooks(model, names)
    returns = _HookReturns(model, names)
    try:
        # gradients on: residual blocks are found in the autograd graph
        with rec.isolated(), returns, _GlobalForwardHooks(model, names):
            rec.arm()
            for info in layers:
                reg_pre(info.owner, pre)
                handles.append(info.owner.register_forward_hook(own_post, prepend=True))
                reg_post(info.owner, post)
            for m in model.modules():
                spec = activation_spec(m)
                if spec is not None and not spec.scalar:
                    raise ValueError(f"predict() needs one activation function per layer; "
                                     f"{label(m)} has a learned slope "
                                     f"per channel ({m.weight.numel()} of them)")
                if spec is not None and spec.name in _SHRINKS:
                    raise ValueError(_shrink_refusal(label(m)))
                if type(m) in ACTIVATIONS or is_norm(m):  # (a replaced forward: no spec)
                    _check_instance_forward(m, repr(names.get(id(m), "")),
                                            "norm" if is_norm(m) else "activation")
                if spec is not None or is_norm(m):
                    handles.append(m.register_forward_hook(own_post, prepend=True))
                if spec is not None:
                    reg_pre(m, act_pre)
                    reg_post(m, act_post)
                    handles.append(m.register_forward_pre_hook(_count(in_act, 1)))
                    handles.append(m.register_forward_hook(_count(in_act, -1)))
                elif is_norm(m):
                    reg_pre(m, norm_pre)
                    reg_post(m, norm_post)
                elif next(iter(m.children()), None) is None and id(m) not in layer_ids:
                    reg_post(m, other_post)
                elif next(iter(m.children()), None) is not None:
                    reg_pre(m, box_pre)
                    reg_post(m, box_post)
            if isinstance(x, torch.Tensor):
                versions[_storage(x)] = x._version
                sizes[_storage(x)] = x.numel()
            with _Functions(on_function):
                output = forward(model, x)
    finally:
        for h in handles:
            h.remove()
    # a pooling module's own call of its function is the module's (named by it)
    pairs = {(b[0], b[1]) for b in betweens}
    betweens.extend(f for f in fbetweens if (f[0], f[1]) not in pairs)
    for k, v in fproducers.items():
        producers.setdefault(k, v)
    order = rec.ran_layers()
    if not order:
        raise ValueError(none_ran(model, rec.layers))
    for info in order:  # a module beside child layers that its forward showed to be a layer
        # (a LoRALinear's F.linear(x, self.weight): hooks.Recording._holder_post), not hooked
        # above: refused by its kind, as the layers above are ('ran 0 times' said nothing)
        if id(info.owner) not in layer_ids:
            kind = unsupported_layer([info])
            if kind:
                raise ValueError(kind)
    outs: list[torch.Tensor] = []
    output_tensors(output, outs)
    by_storage = {outputs[id(i.owner)][0]: i for i in order if id(i.owner) in outputs}
    module_acts = {(a[0], a[1]) for a in acts}  # an activation module's own call, named by it
    found = chain_acts(reads + [(o.grad_fn, _storage(o)) for o in outs if o.grad_fn is not None],
                       made)
    # F.softsign, F.tanhshrink: Python compositions of torch operations (x / (1 + |x|)), whose
    # last autograd node is no activation's; the call itself was seen (as the module)
    seen_nodes = {f[3] for f in found}
    for fn, a_store in reads + [(o.grad_fn, _storage(o)) for o in outs if o.grad_fn is not None]:
        node = _below_views(fn)[0]
        if node is None or node in seen_nodes or node not in composites:
            continue
        seen_nodes.add(node)
        src_fn, src_nr, module = composites[node]
        hit = made.get(_below_views(src_fn, made, src_nr))
        if hit is not None:
            found.append((hit, a_store, module, node))
    for (s_store, s_at, producer), a_store, act, node in found:
        spec = activation_spec(act)
        if spec is None or not spec.scalar or (s_store, a_store) in module_acts:
            continue
        if spec.name in _SHRINKS:  # F.softshrink(self.fc(x)): as the module, by name
            raise ValueError(_shrink_refusal(
                f"the function {re.sub(r'Backward[0-9]*$', '', node.name()).lower()} on the "
                f"output of {labels.get(s_at, 'a layer')}"))
        at = s_at + 0.5  # between the call that made s and the next one
        acts.append((s_store, a_store, spec, at))
        fns[at] = node
        labels[at] = (f"the function F.{composites[node][2].__class__.__name__.lower()}"
                      if node in composites else
                      f"{HAND_WRITTEN[type(act)]} ({type(act).__name__})"
                      if node.name() not in ACT_NODES and type(act) in HAND_WRITTEN else
                      f"the function {re.sub(r'Backward[0-9]*$', '', node.name()).lower()}")
        layer = by_storage.get(s_store) if not is_norm(producer) else next(
            (by_storage.get(n[0]) for n in norms if n[2] is producer), None)
        if layer is not None and layer.activation is None:
            layer.activation = labels[at]
    _act_after_max_pool(betweens, acts, fns, labels, made, by_storage, norms, pool_nodes,
                        reads + [(o.grad_fn, _storage(o)) for o in outs
                                 if o.grad_fn is not None], moved)
    after = {a[0]: a for a in acts}  # activation by input storage
    norm_after = {a[0]: a for a in norms}

    def walk(cur: int, start: int | None, lo: int, hi: int
             ) -> tuple[list[pooling.Between], int]:
        """The pooling/dropout calls (in forward order) that made storage ``cur`` from
        ``start`` between call numbers ``lo`` and ``hi`` (an in-place dropout keeps its
        storage), and the storage reached (``start`` when they connect)."""
        found: list[pooling.Between] = []
        hops = 0
        while hops < 64:
            while cur != start and cur in copies and hops < 64:  # copies of the values
                cur, hops = copies[cur], hops + 1
            hits = [b for b in betweens if b[1] == cur and lo < b[3] < hi]
            if not hits:
                break
            b_in, _, b, hi = max(hits, key=lambda h: h[3])
            found.append(b)
            cur, hops = b_in, hops + 1
        return found[::-1], cur

    def link(info: LayerInfo, start: int | None, lo: int = -1) -> tuple[dict, int, int]:
        """The layer's segment, the storage of its (last) output and that call's seq
        (``lo``: the call that made ``start``)."""
        calls = inputs.get(id(info.owner), [])
        if len(calls) != 1:
            raise ValueError(f"predict() needs each layer called once; {info.name!r} ran "
                             f"{len(calls)} times")
        mids, reached = walk(calls[0], start, lo, outputs[id(info.owner)][1])
        if start is not None and mids and reached == start:
            # pooling or dropout in between: the first reads the whole of start
            _whole(mids[0].label, mids[0].read, sizes.get(start), start in x_starts)
        elif start is not None and not mids:
            calls = [reached]  # through copies of the values (a Flatten that copied)
        if start is not None and calls[0] == start and not mids:
            _whole(repr(info.name), in_sizes.get(id(info.owner)), sizes.get(start),
                   start in x_starts)
        elif start is not None and calls[0] != start and not (mids and reached == start):
            what = "the model's input x" if start == x_store else "the previous layer's output"
            made = between(calls[0], start)
            made_start = [a for a in acts if a[1] == start]  # start: an activation's output
            second = [a for a in acts if a[0] == start and a[1] == calls[0]]
            if made_start and made_start[-1][0] == calls[0]:  # h = l1(x); a(h); l2(h)
                made = (f"; it reads the previous layer's output itself, not the output of "
                        f"its activation {labels[made_start[-1][3]]}")
            elif made_start and second:  # l2(b(a(l1(x)))): two activation modules in a row
                made = (f"; it is the output of {labels[second[-1][3]]}, a second activation "
                        f"module after {labels[made_start[-1][3]]} (predict() takes one "
                        "activation module per layer)")
            elif second and any(_storage(t) == start and t._version != v
                                for t, v in out_tensors.values()):  # h = l1(x); h.mul_(3)
                made = (f"; it is the output of {labels[second[-1][3]]}, which read the previous "
                        "layer's output after it was changed in place (predict() computes the "
                        "activation of the output as the layer made it)")
            elif not made and id(info.owner) in graphless:  # a torch.no_grad() section
                made = ("; it has no autograd graph (computed under torch.no_grad() or "
                        "detached), which predict() follows from layer to layer")
            elif not made and calls[0] == x_store:  # (x's copy that chain() made: 'Clone')
                made = ("; it reads the model's input x itself (a second path from the input, "
                        "e.g. l1(x) + l2(x))")
            elif not made and calls[0] in fn_pools:  # F.lp_pool2d, F.fractional_max_pool2d
                made = (f"; it is the output of {fn_pools[calls[0]]}, which predict() has no "
                        f"theory for (modelled: {_MODELLED_POOLS})")
            elif not made and id(info.owner) in in_ops:  # a torch function, not a module
                made = _operation(in_ops[id(info.owner)],
                                  {fn: labels[at] for at, fn in fns.items() if fn is not None},
                                  frozenset(t.grad_fn for t, _ in out_tensors.values()
                                            if t.grad_fn is not None))
            raise ValueError(f"predict() needs a chain of layers and elementwise activations; "
                             f"the input of {info.name!r} is not {what} (pooling or another "
                             f"operation in between){made}")
        act = [named[info.activation]] if info.activation in named else []
        odd = [(label(m), custom[id(m)]) for m in (info.owner, *act) if id(m) in custom]
        if odd and odd[0][1].startswith(_REENTRANT):
            raise ValueError(f"predict() needs a chain of layers and elementwise activations; "
                             f"the input of {odd[0][0]}{_REENTRANT_WORDS}")
        if odd:
            raise ValueError(f"predict() needs a chain of layers and elementwise activations; "
                             f"the input of {odd[0][0]} passes through the custom autograd "
                             f"Function {odd[0][1]!r}, whose backward the theory does not "
                             "know (it may scale or reverse the gradient)")
        if id(info.owner) in changed:
            raise ValueError(f"predict() needs a chain of layers and elementwise activations; "
                             f"the input of {info.name!r} was changed in place after "
                             f"{changed[id(info.owner)]} made it")
        end, at = outputs[id(info.owner)]
        norm = None
        if info.norm is not None:
            if end not in norm_after:
                raise ValueError(f"the output of {info.name!r} reaches {info.norm!r} through "
                                 "another operation")
            _, end, norm, at = norm_after[end]
            _check_norm(norm, info.norm, tuple(out_tensors[id(info.owner)][0].shape)
                        if id(info.owner) in out_tensors else None)
        spec = None
        if info.activation is not None and end in after:
            _, end, spec, at = after[end]
        return {"kind": "layer", "index": info.index, "name": info.name, "module": info.owner,
                "in_shape": shapes.get(id(info.owner)),
                "out_shape": tuple(out_tensors[id(info.owner)][0].shape)
                if id(info.owner) in out_tensors else None, "norm": norm, "activation": spec,
                "between": mids, "pooled_act": end in moved}, end, at

    # (a block whose sum is in its caller, h = h + blk(h): not a module y = post(x + F(x)),
    # its sum refused with the remedy, _add_hint)
    members = {key: {id(m) for m in b.module.modules()} for key, b in rec.blocks.items()
               if not b.outside}
    out: list[dict] = []
    x_store = _storage(x) if isinstance(x, torch.Tensor) else None
    prev_end: int | None = x_store  # the first layer reads x itself (or a view of it)
    prev_at = -1  # the call that made prev_end

    def peel(info: LayerInfo) -> tuple[int, int, torch.Tensor] | None:
        """The first layer's input as the chain's start, (its storage, the call that made
        it, a copy of its values), when the forward computed it from ``x`` alone, without a
        weight or another tensor that requires grad (``x / 255``, ``(x - mean) / std`` with
        buffers, a bridged ``TorchStandardize``, an input clamp): the theory then starts from
        the values the first layer reads (it was refused as 'the input of 'l1' is not the
        model's input x'). None where the chain reaches ``x`` itself (its views, copies, and
        the pooling and dropout modelled between), or the input depends on something else."""
        calls = inputs.get(id(info.owner), [])
        held = first_in.get(id(info.owner))
        if len(calls) != 1 or held is None or calls[0] == x_store \
                or not held[0].is_floating_point():
            return None
        hi = outputs[id(info.owner)][1]
        if walk(calls[0], x_store, -1, hi)[1] == x_store or not _from_input_alone(held[0], x):
            return None
        lo = max([b[3] for b in betweens if b[1] == calls[0] and b[3] < hi], default=-1)
        return calls[0], lo, held[1]

    x_starts = {x_store}  # the chain's start (x, or the first layer's input: peel())
    i = 0
    while i < len(order):
        info = order[i]
        keys = [k for k, ids in members.items() if id(info.owner) in ids]
        peeled = peel(info) if not keys and not out and x_store is not None else None
        if peeled is not None:
            prev_end, prev_at, _ = peeled
            x_starts.add(prev_end)
        if not keys:
            seg, prev_end, at = link(info, prev_end, prev_at)
            if peeled is not None:
                seg["input"] = peeled[2]
            prev_at = at
            out.append(seg)
            last = (fns.get(at), outputs[id(info.owner)][1], info.name)
            i += 1
            continue
        key = min(keys, key=lambda k: len(members[k]))  # the innermost block
        block = rec.blocks[key]
        if len(keys) > 1 or len(containers.get(key, [])) != 1:
            raise ValueError(f"predict() models residual blocks that are called once and not "
                             f"nested; {block.name!r} is not")
        b_in, b_out = containers[key][0]
        first_call = min(outputs[id(o.owner)][1] for o in order[i:]
                         if id(o.owner) in members[key])
        if (prev_end is not None and b_in != prev_end and out and out[-1]["kind"] == "layer"
                and isinstance(out[-1]["norm"], PER_EXAMPLE) and out[-1]["activation"] is None
                and id(out[-1]["norm"]) in members[key]
                and outputs[id(out[-1]["module"])][0] == b_in):
            # a pre-norm block x + F(LN(x)) after a layer (a transformer's embedding): the
            # LayerNorm is the branch's, between the block's input and its first layer (the
            # probe's hooks took it for the layer's follower)
            out[-1]["norm"] = None
            prev_end, prev_at = b_in, outputs[id(out[-1]["module"])][1]
        mids, reached = walk(b_in, prev_end, prev_at, first_call)
        if prev_end is not None and mids and reached == prev_end:
            _whole(mids[0].label, mids[0].read, sizes.get(prev_end), prev_end == x_store)
        elif (prev_end is not None and b_in != prev_end and out and out[-1]["kind"] == "layer"
              and outputs[id(out[-1]["module"])][0] == b_in):
            # the previous layer's follower (activation or BatchNorm) runs inside the block
            seg = out[-1]
            follower = (type(seg["norm"]).__name__ if seg["norm"] is not None
                        else seg["activation"].name if seg["activation"] is not None
                        else "a module")
            raise ValueError(f"predict() models residual blocks post(x + F(x)) whose branch F "
                             f"starts with a weight layer; residual block {block.name!r} "
                             f"starts with {follower} on {seg['name']!r}'s output (a "
                             "pre-activation block, norm/activation before the layer), which "
                             "is not modelled; expected a block whose branch begins with its "
                             "Linear/Conv layer")
        elif prev_end is not None and b_in != prev_end:
            raise ValueError(f"predict() needs a chain of layers, activations and residual "
                             f"blocks; the input of residual block {block.name!r} is not the "
                             f"previous layer's output (pooling or another operation in "
                             f"between){between(b_in)}")
        if prev_end is not None and not mids:
            _whole(f"residual block {block.name!r}", in_sizes.get(key), sizes.get(prev_end),
                   prev_end == x_store)
        paths: list[list[dict]] = [[]]  # the branch F, then a projection shortcut if any
        ends: list[Any] = [None]  # grad_fn of each path's output (the identity: the input's)
        end, done = b_in, 0
        lo = start_lo = max([prev_at, *(m[3] for m in betweens if any(m[2] is b for b in mids))])
        while i < len(order) and id(order[i].owner) in members[key]:
            if paths[-1] and inputs.get(id(order[i].owner)) == [b_in]:
                if len(paths) == 2:
                    raise ValueError(f"residual block {block.name!r} has more than two paths "
                                     f"from its input ({order[i].name!r} starts a third)")
                paths.append([])  # a second path from the block's input: the shortcut
                ends.append(None)
                end, lo = b_in, start_lo
            seg, end, at = link(order[i], end, lo)
            lo = at
            paths[-1].append(seg)
            ends[-1] = fns.get(at)
            done = max(done, at)
            i += 1
        if b_out == b_in:
            raise ValueError(f"residual block {block.name!r} does not output x + F(x)")
        # an activation applied to the sum: the last call whose output is the block's output
        # and that ran after both paths (torchvision adds in place, so storages coincide)
        hit = [a for a in acts if a[1] == b_out and a[3] > done]
        in_fn, out_fn = box_fns.get(key, (None, None))
        post_norm = next((b for b in betweens if b[1] == b_out and b[2].kind == "norm"
                          and b[3] > done and b_out in norm_ins), None)
        if post_norm is not None:
            # a post-norm block LN(x + F(x)): the block is the sum, the norm is modelled
            # between it and the next segment (which walk() finds)
            out_fn = norm_ins[b_out].grad_fn
            b_out = post_norm[0]
        else:
            late = [b for b in betweens if b[2].kind == "norm" and b[3] > done
                    and b[0] not in (b_in,) and any(id(m) in members[key] for _, _, m, at
                                                    in norms if at == b[3])]
            if late:  # F.relu(self.ln(x + F(x))): an operation after the block's norm
                raise ValueError(f"predict() models post-norm blocks that end with their norm, "
                                 f"LN(x + F(x)); in residual block {block.name!r} the output "
                                 f"of {late[-1][2].label} goes through another operation (an "
                                 "activation after the norm?), which is not modelled")
        if not hit:  # F.relu(x + F(x)) in the block's forward (kuangliu's BasicBlock)
            spec = _functional_post(out_fn, block.name, scales=scales)
            if spec is not None:
                hit = [(b_out, b_out, spec, done)]
        drops = {fn: b[2].p for (fn, _), b in pool_nodes.items()
                 if b[2].kind == "dropout" and not b[2].channel and fn is not None}
        scale, drop, sum_scale = _check_add(block.name, out_fn, bool(hit), ends[0],
                                 ends[1] if len(ends) > 1 else in_fn,
                                 {fn: labels[at] for at, fn in fns.items() if fn is not None},
                                 scales, drops)
        readers = [a for a in acts if a[0] == b_out and a[1] != b_out and a[3] > done]
        if not hit and len(readers) == 1 and not any(b_out in c for c in inputs.values()):
            # Sequential(..., Block(), nn.ReLU(), ...): the activation module after the block,
            # outside it, is its f in f(x + F(x)) (refused before: "the input of '4' is not the
            # previous layer's output; it is the output of '3' (ReLU)")
            hit, b_out = readers, readers[0][1]
        if not hit and not readers:
            # F.relu(block(h)), also in place: the activation the forward applies to the
            # block's output (read by nothing else: a layer reading it in place reads f's)
            found = _functional_reader(out_fn, reads + [(o.grad_fn, _storage(o)) for o in outs
                                                        if o.grad_fn is not None], block.name)
            if found is not None and (found[1] == b_out
                                      or not any(b_out in c for c in inputs.values())):
                hit, b_out = [(b_out, found[1], found[0], done)], found[1]
        last = (out_fn, min(outputs[id(s["module"])][1] for s in paths[0] + paths[-1]),
                block.name)
        out.append({"kind": "block", "name": block.name, "layers": paths[0],
                    "shortcut": paths[1] if len(paths) > 1 else [],
                    "post": hit[-1][2] if hit else None, "between": mids, "scale": scale,
                    "drop": drop, "sum_scale": sum_scale})
        prev_end = b_out
        prev_at = max(done, hit[-1][3] if hit else -1)
    stop, start, name = last
    if loss_fn is None:
        end = _first_tensor(output)
    else:
        with torch.inference_mode(False), torch.enable_grad():
            check_targets(output, y, loss_fn)
            end = check_loss(loss_fn(output, trackable(y)))  # a float: one TypeError line
    hooked = next((who for who, t in [*seg_outs, *((label(m), out_tensors[id(m)][0])
                                                   for m in (i.owner for i in order)
                                                   if id(m) in out_tensors)]
                   if any(not getattr(h, "__qualname__", "").startswith("Recording.")
                          for h in (t._backward_hooks or {}).values())), None)
    if hooked is not None:
        raise ValueError(f"predict() computes each gradient from the weights; a gradient hook "
                         f"(tensor.register_hook) on the output of {hooked} may change it, "
                         "which the theory does not see; expected the model without it")
    returns.check(end, x)
    _reaches_every_layer(end, [(info.name, out_tensors.get(id(info.owner)))
                               for info in order], loss_fn is None)
    other = _other_path(end, stop, {fn: at for at, fn in fns.items()
                                    if fn is not None and at < start})
    if other is not None:
        raise ValueError(f"predict() anchors the gradient at the model's last layer or block "
                         f"{name!r}, but the {'output' if loss_fn is None else 'loss'} also "
                         f"depends on {labels[other]} by another path (a skip or an extra "
                         "output after the last layer): the gradients before it would be "
                         "predicted without that path")
    if loss_fn is not None:
        out[-1]["top_grad"] = _top_moments(end, out_tensors.get(id(_top_module(out[-1]))))
    return out


def _monotone(spec: ActivationSpec) -> bool:
    """Whether ``f`` is non-decreasing (ReLU, tanh, sigmoid, ELU, ...; not GELU, SiLU, Mish):
    then ``max_i f(s_i) = f(max_i s_i)``, and the gradient goes to the same entry with the
    same ``f'``."""
    s = torch.linspace(-40.0, 40.0, 8001, dtype=torch.float64)
    with torch.no_grad():
        f = spec.function(s)
    return bool(torch.isfinite(f).all()) and bool((f.diff() >= -1e-12 * (1 + f.abs().max())).all())


def _act_after_max_pool(betweens: list, acts: list, fns: dict, labels: dict, made: dict,
                        by_storage: dict, norms: list, pool_nodes: dict, reads: list,
                        moved: set) -> None:
    """A max pool between a layer (or BatchNorm) output ``s`` and its activation,
    ``F.relu(F.max_pool2d(conv(x), 2))`` (pytorch/examples' MNIST net of 2018), or
    ``nn.MaxPool2d`` then ``nn.ReLU``: for a non-decreasing ``f`` it is ``max_pool(f(s))``
    exactly, forward and backward, so the activation is made the layer's and the pool put
    after it (``acts`` and ``betweens`` rewritten in place, linked through a storage key of
    their own, recorded in ``moved``). An average pool, or an activation that is not monotone
    (GELU, SiLU), is left as it is: refused by name."""
    outputs = {v[0]: v for v in made.values()}  # layer or norm output storage -> record
    taken = {a[0] for a in acts}
    for i, (p_in, p_out, b, p_seq) in enumerate(list(betweens)):
        if b.kind != "max" or p_in not in outputs or p_in in taken:
            continue
        hit = None  # (index in acts or None, output storage, spec, node, label)
        for j, a in enumerate(acts):  # an activation module reading the pool's output
            if a[0] == p_out and a[3] > p_seq:
                hit = (j, a[1], a[2], fns.get(a[3]), labels.get(a[3]))
                break
        node_key = next((k for k, v in pool_nodes.items() if v[3] == p_seq), None)
        if hit is None and node_key is not None:
            for fn, storage in reads:  # a function reading it (or a view of it)
                node, _ = _below_views(fn)
                if node is None or node.name() not in ACT_NODES or not node.next_functions:
                    continue
                src, nr = node.next_functions[0]
                if _below_views(src, None, nr) != node_key:
                    continue
                key = _settings(node)
                spec = None if key is None else activation_spec(key[0](*key[1:]))
                if spec is not None:
                    hit = (None, storage, spec, node, "the function "
                           + re.sub(r"Backward[0-9]*$", "", node.name()).lower())
                break
        if hit is None:
            continue
        j, a_out, spec, node, who = hit
        if not spec.scalar or spec.name in ("softshrink", "hardshrink") or not _monotone(spec):
            continue
        rec = outputs[p_in]
        at = rec[1] + 0.5  # as a functional activation of the layer's output
        key = -(1 << 40) - i  # a storage of its own: f(s), which no tensor of the model holds
        if j is not None:
            del acts[j]
        acts.append((p_in, key, spec, at))
        fns[at] = node
        labels[at] = who or "the activation"
        betweens[betweens.index((p_in, p_out, b, p_seq))] = (key, a_out, b, p_seq)
        moved.add(key)
        taken.add(p_in)
        layer = by_storage.get(p_in) if not is_norm(rec[2]) else next(
            (by_storage.get(n[0]) for n in norms if n[2] is rec[2]), None)
        if layer is not None and layer.activation is None:
            layer.activation = labels[at]


_SHRINKS = ("softshrink", "hardshrink")
"""Activations with a flat zone around 0 (:func:`_shrink_refusal`)."""


def _shrink_refusal(what: str) -> str:
    """The refusal of a Softshrink/Hardshrink (module or function) after a layer: a flat zone
    around 0 makes sparse outputs, whose sums in the next layer are not Gaussian
    (Softshrink(0.5) at torch's default init: 0.78x measured)."""
    return (f"predict() does not model {what}: its flat zone makes sparse outputs whose sums in "
            "the next layer are not Gaussian, so it is an activation predict() has no theory "
            f"for (dlt.probe measures it; modelled: {_modelled_acts()})")


def _modelled_acts() -> str:
    """The activation modules predict() models, named in its refusals: every probed one but
    Softshrink/Hardshrink (:func:`_shrink_refusal`; the refusal of a Softmax between layers
    listed them as modelled)."""
    return ", ".join(sorted(c.__name__ for c in ACTIVATIONS
                            if "shrink" not in c.__name__.lower() or c.__name__ == "Tanhshrink"))


_MODELLED_POOLS = ("max, average, adaptive max and adaptive average pooling and dropout, as "
                   "modules (nn.MaxPool2d, ...) or functions (F.max_pool2d, F.dropout, ...)")


def _operand(fn: Any, made_by: dict[Any, str]) -> str | None:
    """Words for one input of a torch operation: the output of the module that made it
    (``made_by``: autograd node of a module call's output -> "'name' (Class)"), below views on
    it, or the function of an elementwise activation applied to such an output; None for a
    constant or a parameter (no module's output)."""
    node = _below_views(fn)[0] or fn
    if node in made_by and not made_by[node].startswith("the "):  # a module's own output
        return made_by[node]
    if node.name() in ACT_NODES and node.next_functions and node.next_functions[0][0]:
        inner = _below_views(node.next_functions[0][0])[0] or node.next_functions[0][0]
        if inner in made_by:  # F.silu(self.c1(x)): named by the layer it reads
            op = re.sub(r"Backward[0-9]*$", "", node.name()).lower()
            return f"the function {op} of {made_by[inner]}"
    return made_by.get(node)


def _joined(node: Any, made_by: dict[Any, str]) -> str:
    """`` from the outputs of A and B`` for a torch operation whose inputs are two or more
    modules' outputs (a concatenation of skips, a gate's product), with why that is no chain;
    empty otherwise (``h * 2``, ``h - h.mean(0)``)."""
    parts: list[str] = []
    for fn, _ in node.next_functions:
        what = None if fn is None else _operand(fn, made_by)
        if what is not None and what not in parts:
            parts.append(what)
    op = re.sub(r"Backward[0-9]*$", "", node.name())
    words = (f" from the outputs of {', '.join(parts[:-1])} and {parts[-1]}" if len(parts) > 1
             else f" from the output of {parts[0]}" if parts else "")
    if op == "Cat":
        return words + (" (a concatenation, as of DenseNet or U-Net skips, joins paths that "
                        "one chain of layers does not describe)")
    if len(parts) < 2:
        return ""
    if op == "Mul":
        return words + (" (a product of two paths, a gate such as squeeze-and-excitation, "
                        "multiplies variances that one chain of layers does not describe)")
    return words


def _operation(fn: Any, made_by: dict[Any, str] | None = None,
               layers: frozenset = frozenset()) -> str:
    """The refusal's words for a layer input made by the autograd node ``fn`` (a torch
    operation, not a module), named below the views on it (a flatten of ``h * 2`` is named by
    ``Mul``, not by ``View``); an activation applied after pooling is named as such, one applied
    to another operation's result names that operation (``tanh(h - h.mean(0))``: ``Sub``), one
    applied to a module's output that is not a chain layer's (``relu(bn(torch.cat(...)))``, a
    DenseNet layer) names that module and what made its input; an operation joining several
    modules' outputs (``torch.cat``, a gate's ``x * w``) names them (``made_by``: autograd node
    of each module call's output -> "'name' (Class)"); one applied to a weight layer's output
    that is not the previous layer's (``layers``: those layers' output nodes) says so (the
    parallel branches of a Fire or Inception module read one activation)."""
    made_by = made_by or {}
    node, _ = _below_views(fn)
    node = fn if node is None else node
    name = node.name()
    op = re.sub(r"Backward[0-9]*$", "", name)
    below = _below_views(node.next_functions[0][0])[0] if node.next_functions else None
    if name == "RreluWithNoiseBackward0" and _settings(node) is None:
        return ("; it is the output of F.rrelu in training mode, whose slopes are random draws "
                "a function of the layer's output cannot repeat; expected nn.RReLU (modelled "
                "in training mode), or F.rrelu(..., training=False)")
    if name in ACT_NODES and _settings(node) is None:
        below = None  # settings no activation module has (h.clamp(min=1e-3)): an operation
    if name in ACT_NODES and below is not None and "Pool" in below.name():
        pool = re.sub(r"Backward[0-9]*$", "", below.name())
        return (f"; it is the output of the function {op.lower()} applied after the pooling "
                f"{pool!r} (autograd node {below.name()}): an activation after pooling is "
                "modelled only after a max pool of a layer's (or BatchNorm's) own output and "
                "for a non-decreasing activation (then f(max(s)) = max(f(s))); expected the "
                "activation before the pool (F.avg_pool2d(F.gelu(conv(x)), 2))")
    if name in ACT_NODES and below is not None and below in made_by and below in layers:
        return (f"; it is the output of the function {op.lower()} applied to the output of "
                f"{made_by[below]}, a layer that is not the previous one (two layers reading "
                "one input in parallel, as the branches of an Inception or Fire module, or a "
                "skip over a layer)")
    if name in ACT_NODES and below is not None and below in made_by \
            and below.next_functions and below.next_functions[0][0] is not None:
        # relu(bn(torch.cat(...))): a module's output whose input is no layer's
        inner = _below_views(below.next_functions[0][0])[0] or below.next_functions[0][0]
        under = re.sub(r"Backward[0-9]*$", "", inner.name())
        source = (f"is the output of {made_by[inner]}" if inner in made_by else
                  f"is computed by the torch operation {under!r} (autograd node "
                  f"{inner.name()}){_joined(inner, made_by)}")
        return (f"; it is the output of the function {op.lower()} applied to the output of "
                f"{made_by[below]}, whose input {source}, not a layer's output")
    if name in ACT_NODES and below is not None:  # tanh(h - h.mean(0)): name the Sub too
        under = re.sub(r"Backward[0-9]*$", "", below.name())
        return (f"; it is the output of the function {op.lower()} applied to the result of the "
                f"torch operation {under!r} (autograd node {below.name()}), not to a layer's "
                "(or normalization's) own output: an activation is modelled only on a layer's "
                "or normalization's output")
    joined = _joined(node, made_by)
    if name.startswith(_REENTRANT):
        return _REENTRANT_WORDS.replace(" is the output", "; it is the output", 1)
    return (f"; it is computed by the torch operation {op!r} (autograd node {name})"
            f"{joined}, not by a module{_add_hint(node)}"
            f"{'' if joined else _param_hint(node) or _hand_written_hint(node, layers)}")


_PARAM_OPS = {"AddBackward0": "adds", "SubBackward0": "subtracts", "MulBackward0": "multiplies by",
              "DivBackward0": "divides by"}


def _param_hint(node: Any) -> str:
    """Words for an elementwise operation (autograd ``node``) of a computed tensor and a
    parameter (one operand an ``AccumulateGrad`` leaf): ``h + self.pos``, a learned position
    embedding, or ``h * self.scale`` outside a residual block, which no variance propagation
    here models (``""`` otherwise). It was told an activation written out by hand is read from
    the graph only as ``x * torch.sigmoid(x)``, ..., which is beside the point."""
    verb = _PARAM_OPS.get(node.name())
    if verb is None:
        return ""
    ops = [fn for fn, _ in node.next_functions]
    leaves = [fn for fn in ops if fn is not None and fn.name() == "torch::autograd::AccumulateGrad"]
    if len(leaves) != 1 or len(ops) != 2:
        return ""
    shape = tuple(getattr(leaves[0], "variable", torch.empty(0)).shape)
    return (f"; it {verb} a parameter of shape {shape} (a learned position embedding, "
            "h + self.pos, or a scale or bias of its own applied in the forward), which "
            "predict() does not model: only a layer's own bias, a normalization's affine "
            "parameters and a residual branch's scale (x + self.gamma * F(x)) are")


_REENTRANT = "CheckpointFunction"  # autograd node of checkpoint(..., use_reentrant=True)
_REENTRANT_WORDS = (" is the output of reentrant activation checkpointing "
                    "(torch.utils.checkpoint(..., use_reentrant=True)), whose forward builds no "
                    "autograd graph, so the layers and activations inside it cannot be read; "
                    "expected use_reentrant=False (the same values and gradients)")

_HAND_OPS = frozenset({"WhereBackward0", "MulBackward0", "MaximumBackward0", "ClampBackward1",
                       "ClampMinBackward0", "AddBackward0", "DivBackward0", "SubBackward0"})
"""The last autograd nodes of the usual activations written out by hand (``torch.where(h > 0,
h, 0.01 * h)``, ``0.5 * h * (1 + torch.tanh(...))``, ``torch.maximum(h, 0 * h)``)."""


def _hand_written_hint(node: Any, layers: frozenset, depth: int = 6) -> str:
    """Words for an operation in :data:`_HAND_OPS` computed from a layer's output (a node of
    ``layers`` within ``depth`` steps below ``node``): what predict() reads as an activation
    written by hand (:func:`depthlab.torch.functional_acts.hand_written`, a ``clamp``), and the
    torch function to write instead; ``""`` otherwise."""
    if node.name() not in _HAND_OPS or not layers:
        return ""
    frontier, seen = [node], set()
    for _ in range(depth):
        nxt = []
        for n in frontier:
            for m, _nr in n.next_functions:
                if m is None or m in seen:
                    continue
                if m in layers:
                    return ("; an activation written out by hand is read from the graph only as "
                            "x * torch.sigmoid(x), x * torch.tanh(F.softplus(x)), "
                            "x - torch.tanh(x), x / (x.abs() + 1), x.clamp(min=0) or "
                            "x.clamp(lo, hi): expected "
                            "its torch function instead (F.leaky_relu(x, 0.01) for "
                            "torch.where(x > 0, x, 0.01 * x), F.gelu(x, approximate='tanh'), "
                            "F.silu(x))")
                seen.add(m)
                nxt.append(m)
        frontier = nxt
    return ""


def _add_hint(node: Any) -> str:
    """For a sum of two computed paths (autograd node ``node``; not ``h + self.pos``, whose
    other operand is a parameter) that no residual block owns, ``h = h + block(h)`` in a loop
    of a forward where ``block`` is an ``nn.Sequential``, or the second of two sums in one
    forward (an MLP-Mixer block's token and channel mixing), the remedy: predict() takes a
    residual block to be a module whose forward returns ``post(x + F(x))`` once."""
    if not re.match(r"AddBackward[0-9]*$", node.name()):
        return ""
    operands = [fn for fn, _ in node.next_functions]
    if len(operands) != 2 or any(fn is None or fn.name() == "torch::autograd::AccumulateGrad"
                                 for fn in operands):
        return ""
    return ("; a residual sum that is not a module's output of its own (h = h + block(h) in "
            "a loop of a forward, or two sums in one forward, x = x + a(x); x + b(x)) is not "
            "modelled: predict() takes a residual block to be a module whose forward returns "
            "x + F(x) once; give each sum a module of its own")


_ADDS = frozenset({"add", "add_", "__add__", "__radd__", "__iadd__"})
"""Torch functions and tensor methods of a sum (a residual block's add)."""

_SCALES = frozenset({"mul", "__mul__", "__rmul__", "multiply", "div", "__truediv__", "divide",
                     "true_divide"})
"""Torch functions and tensor methods of a product or quotient (a residual branch's scale,
``x + self.gamma * F(x)``; :func:`_record_scale`)."""

_COMPOSITE_ACTS: dict[str, Callable[[], nn.Module]] = {"softsign": nn.Softsign,
                                                       "tanhshrink": nn.Tanhshrink}
"""Functional activations that torch computes as several operations (``F.softsign``: ``x /
(1 + |x|)``), found by their call (:class:`_Functions`), as their module."""

_THRESHOLDS = frozenset({"_threshold", "threshold"})
"""``F.threshold`` (its Python function is ``_threshold``), ``torch.threshold``: an activation
whose autograd node keeps no ``value``, read from the call as ``nn.Threshold(threshold,
value)``."""

_RESHAPES = frozenset({"flatten", "view", "reshape", "view_as", "reshape_as", "contiguous",
                       "unflatten", "squeeze", "unsqueeze", "clone"})
"""Functions (``torch.flatten``, tensor methods) whose output holds every value of their input in
another shape (a reshape of a non-contiguous tensor copies them; ``h.clone()`` copies them in
the same shape: the identity, forward and backward)."""


class _Functions(TorchFunctionMode):
    """Calls ``on_call(name, args, kwargs, out)`` after each torch function the forward calls
    (``F.max_pool2d``, ``torch.flatten``, ``x.view``; not the calls inside a function:
    PyTorch runs the handler with the mode off). The autograd graph keeps neither the pooling
    arguments that matter to every torch version (adaptive pooling saves no output size) nor
    the storages :func:`chain` links by; the call itself has both, with or without gradients."""

    def __init__(self, on_call: Callable[[str, tuple, dict, Any], None]) -> None:
        super().__init__()
        self.on_call = on_call

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = getattr(func, "__name__", "")
        if name and ("pool" in name or "dropout" in name or name in _RESHAPES
                     or name in ("mean", "amax") or name in _ADDS or name in _SCALES
                     or name in _COMPOSITE_ACTS or name in _THRESHOLDS):
            try:
                self.on_call(name, args, kwargs, out)
            except (TypeError, ValueError, RuntimeError, IndexError):  # arguments no module
                pass  # takes: the call stays unrecorded, and a refusal names its operation
        return out


def _check_backward_hooks(model: nn.Module, names: dict[int, str]) -> None:
    """A ValueError naming the module that carries a backward hook of the deprecated kind
    (``module.register_backward_hook``, or ``nn.modules.module.register_module_backward_hook``
    for every module): torch registers it on the autograd node of the module's output, where
    what it returns replaces the gradient sent below, and nothing in the forward shows it (a
    hook returning ``grad_input * 10`` on an activation: grad_pre_std of the layers below
    predicted 0.1x the measurement). Full backward hooks are checked by what they return
    (:class:`_HookReturns`)."""
    from torch.nn.modules import module as torch_module

    if getattr(torch_module, "_global_backward_hooks", None) and \
            getattr(torch_module, "_global_is_full_backward_hook", None) is False:
        raise ValueError("predict() computes each gradient from the weights; a global module "
                         "backward hook (torch.nn.modules.module.register_module_backward_hook)"
                         " may change every module's gradient, which the theory does not see; "
                         "expected no such hook while predicting")
    for m in model.modules():
        if m._backward_hooks and getattr(m, "_is_full_backward_hook", None) is False:
            raise ValueError(f"predict() computes each gradient from the weights; a backward "
                             f"hook (register_backward_hook) on {names.get(id(m), '')!r} "
                             f"({type(m).__name__}) may change the gradient it sends below, "
                             "which the theory does not see; expected the model without it")


class _WrappedHooks:
    """Hooks wrapped for one forward (a context manager): each entry of ``tables``,
    ``(hook dict, *how)``, has its hooks replaced by ``self._wrap(hook, *how)`` on entry and
    put back on exit."""

    tables: list[tuple]
    saved: list[tuple[dict, Any, Any]]

    def _wrap(self, hook: Callable, *how: Any) -> Callable:
        raise NotImplementedError

    def __enter__(self) -> _WrappedHooks:
        self.saved = []
        for table, *how in self.tables:
            for key, hook in list(table.items()):
                self.saved.append((table, key, hook))
                table[key] = self._wrap(hook, *how)
        return self

    def __exit__(self, *exc: object) -> None:
        for table, key, hook in self.saved:
            if key in table:
                table[key] = hook
        self.saved = []


class _GlobalForwardHooks(_WrappedHooks):
    """The forward hooks that run before a module's own hooks, wrapped for one forward: the
    global forward hooks (``nn.modules.module.register_module_forward_hook``), the global
    forward pre-hooks and the forward pre-hooks of the model's modules. One that replaces or
    changes in place a module's output (hooks) or input (pre-hooks) is refused, naming the
    module and the hook: torch runs the global hooks before every module's own hooks, so the
    check of what a module's forward returned (``own_post``, prepended to the module's hooks)
    saw the changed output as the module's (a global hook doubling every Tanh's output: every
    row after the first layer predicted about 0.3-0.5x the measurement); an input changed by a
    pre-hook was refused as 'computed by the torch operation 'Mul'', naming no hook, or with a
    path of modules going round in circles."""

    def __init__(self, model: nn.Module, names: dict[int, str]) -> None:
        from torch.nn.modules import module as torch_module

        self.names = names
        self.tables: list[tuple[dict, str, bool]] = []  # (hook dict, what, pre-hooks)
        glob = getattr(torch_module, "_global_forward_hooks", {})
        if glob:
            self.tables.append((glob, "a global forward hook (register_module_forward_hook)",
                                False))
        glob_pre = getattr(torch_module, "_global_forward_pre_hooks", {})
        if glob_pre:
            self.tables.append((glob_pre, "a global forward pre-hook "
                                "(register_module_forward_pre_hook)", True))
        for m in model.modules():
            if m._forward_pre_hooks:
                self.tables.append((m._forward_pre_hooks, "a forward pre-hook", True))
        self.saved: list[tuple[dict, Any, Any]] = []

    def _wrap(self, hook: Callable, what: str, pre: bool) -> Callable:
        def wrapped(module, *rest):
            t = _first_tensor(rest[0] if pre else rest[-1])
            before = None if t is None else t._version
            got = hook(module, *rest)
            if id(module) in self.names and t is not None and (
                    (got is not None and _first_tensor(got) is not t)
                    or t._version != before):
                part = "input" if pre else "output"
                name = self.names[id(module)]
                who = repr(name) if name else "the model"
                raise ValueError(
                    f"predict() computes each module's output from its weights and input; "
                    f"{what} replaced or changed the {part} of {who} "
                    f"({type(module).__name__}), which the theory "
                    f"does not see; expected {'pre-' if pre else ''}hooks that only read "
                    "(return None), or the model without that hook")
            return got
        return wrapped


class _HookReturns(_WrappedHooks):
    """Full backward hooks and pre-hooks (``register_full_backward_hook``,
    ``register_full_backward_pre_hook``, on the model's modules or global) wrapped for one
    forward, so that what they return in a backward of it is known: ``None`` (or the
    gradients as given) leaves the gradient as autograd computed it, as the theory does (a
    logging hook); anything else replaces it. Without the hooks' returns every such model was
    refused ('custom autograd Function BackwardHookFunctionBackward')."""

    def __init__(self, model: nn.Module, names: dict[int, str]) -> None:
        from torch.nn.modules import module as torch_module

        self.tables: list[tuple[dict, str]] = []  # (hook dict, "'name' (Class)" or global)
        glob = "a global module backward hook"
        if getattr(torch_module, "_global_is_full_backward_hook", None) is True:
            self.tables.append((torch_module._global_backward_hooks, glob))
        self.tables.append((getattr(torch_module, "_global_backward_pre_hooks", {}),
                            "a global module backward pre-hook"))
        for m in model.modules():
            who = f"{names.get(id(m), '')!r} ({type(m).__name__})"
            if getattr(m, "_is_full_backward_hook", None) is True:
                self.tables.append((m._backward_hooks, f"a full backward hook on {who}"))
            self.tables.append((getattr(m, "_backward_pre_hooks", {}),
                                f"a full backward pre-hook on {who}"))
        self.tables = [(t, w) for t, w in self.tables if t]
        self.saved: list[tuple[dict, Any, Any]] = []
        self.changed: str | None = None

    def _wrap(self, hook: Callable, who: str) -> Callable:
        def wrapped(module, *grads):
            got = hook(module, *grads)
            if got is not None and self.changed is None and not _same(got, grads[0]):
                self.changed = who
            return got
        return wrapped

    def check(self, end: torch.Tensor, x: Any) -> None:
        """Run the wrapped hooks by a backward of ``end`` (the loss, else the output's sum) to
        ``x`` (no ``.grad`` written) and raise a ValueError naming the first that returned a
        changed gradient."""
        if not self.tables or not isinstance(x, torch.Tensor) or not x.requires_grad \
                or not isinstance(end, torch.Tensor) \
                or not end.requires_grad:
            return
        torch.autograd.grad(end.sum(), x, retain_graph=True, allow_unused=True)
        if self.changed is not None:
            raise ValueError(f"predict() computes each gradient from the weights; "
                             f"{self.changed} returned a changed gradient, which the theory "
                             "does not see; expected backward hooks that only read (return "
                             "None), or the model without that hook")


def _same(got: Any, given: tuple) -> bool:
    """Whether a backward hook's return ``got`` is the gradients ``given`` unchanged."""
    got = got if isinstance(got, (tuple, list)) else (got,)
    return len(got) == len(given) and all(
        (a is None and b is None) or (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)
                                      and a.shape == b.shape and torch.equal(a, b))
        for a, b in zip(got, given))


def _top_module(seg: dict) -> nn.Module:
    """The weight layer of a segment whose row comes last (a block: the shortcut's last layer,
    else the branch's)."""
    if seg["kind"] == "layer":
        return seg["module"]
    return (seg["shortcut"] or seg["layers"])[-1]["module"]


def _top_moments(loss: torch.Tensor, held: tuple[torch.Tensor, int] | None
                 ) -> tuple[float, float] | None:
    """``(mean, mean square)`` of ``g = dL/ds`` at the last layer's output ``s`` (None when it
    cannot be had: ``s`` changed in place since, or no gradient reaches it). The back-propagated
    ``W^T g`` carries ``g``'s mean as well as its spread, so the gradient scale is anchored at
    ``E[g^2] = std^2 + mean^2``: with the std alone (MSE towards targets of mean 5, outputs
    near 0) every lower layer's gradient was predicted 0.045x the measurement."""
    if held is None or held[0]._version != held[1] or not loss.requires_grad:
        return None
    try:
        (g,) = torch.autograd.grad(loss, held[0], allow_unused=True)
    except RuntimeError:
        return None
    if g is None:
        return None
    g = g.detach().to(torch.float64)
    return float(g.mean()), float(g.pow(2).mean())


def _check_stock_forward(info: LayerInfo) -> None:
    """A ValueError for a subclass of ``nn.Linear``/``nn.ConvNd`` with its own ``forward`` (or
    ``_conv_forward``): the theory computes ``s = W a + b`` from the module's ``weight`` and
    ``bias``, and a forward that transforms them (weight standardization ``(W - mean) / std``,
    an equalized-learning-rate scale, a low-rank update) computes something else (a
    weight-standardized ReLU CNN: pre_std predicted 0.003-0.11x the measurement). A
    parametrization (``torch.nn.utils.parametrize``) changes ``weight`` itself and is
    modelled."""
    m = info.owner
    base = next(c for c in (nn.Linear, *_CONV, *_CONVT) if isinstance(m, c))
    names = ("forward", "_conv_forward") if base in _CONV else ("forward",)
    own = next((n for n in names if getattr(type(m), n) is not getattr(base, n)), None)
    if own is not None:
        raise ValueError(f"predict() models nn.Linear/Conv layers as torch computes them; layer "
                         f"{info.name!r} is a {type(m).__name__}, a {base.__name__} subclass "
                         f"with its own {own}() (a transformed weight or output, which the "
                         f"theory does not see); expected {base.__name__}'s own {own}()")
    _check_instance_forward(m, repr(info.name), "layer")


def _check_instance_forward(m: nn.Module, label: str, what: str) -> None:
    """A ValueError when the module ``m`` (a layer, an activation or a normalization) has its
    ``forward`` replaced on the instance: the theory computes what the class computes (a
    Linear patched to return ``3 * F.linear(x, W, b)``: pre_std of the next layer predicted
    0.33x the measurement; a Tanh patched to ``tanh(3 x)``: act_std 0.6x)."""
    n = replaced_forward(m)
    if n is not None:
        raise ValueError(f"predict() models each module as its class computes it; {what} "
                         f"{label} ({type(m).__name__}) has its {n}() replaced on the instance "
                         f"(module.{n} = ...), which the theory does not see; expected "
                         f"{type(m).__name__}'s own {n}()")


def _graph(t: torch.Tensor, limit: int) -> list[Any] | None:
    """Every autograd node ``t`` is computed from (``t.grad_fn`` and all it reaches through
    ``next_functions``, each once), None beyond ``limit`` nodes."""
    seen: set[int] = set()
    nodes: list[Any] = []
    todo = [t.grad_fn]
    while todo:
        fn = todo.pop()
        if fn is None or id(fn) in seen:
            continue
        seen.add(id(fn))
        if len(seen) > limit:
            return None
        nodes.append(fn)
        todo.extend(f for f, _ in fn.next_functions)
    return nodes


def _leaves(t: torch.Tensor, limit: int = 4096) -> set[int] | None:
    """``id`` of every leaf tensor requiring grad that ``t`` is computed from (its autograd
    graph's ``AccumulateGrad`` nodes; ``t`` itself when it is one), None beyond ``limit``
    nodes."""
    if t.grad_fn is None:
        return {id(t)} if t.requires_grad else set()
    nodes = _graph(t, limit)
    if nodes is None:
        return None
    return {id(var) for fn in nodes
            if isinstance(var := getattr(fn, "variable", None), torch.Tensor)}


def _from_input_alone(t: torch.Tensor, x: Any) -> bool:
    """Whether ``t`` depends on the model's input ``x`` and on no other tensor that requires
    grad (no trainable weight: a preprocessing of ``x`` by fixed operations). For an integer
    ``x`` (pixels 0-255 that the forward converts, ``x.float() / 255``), which no gradient
    reaches: whether ``t`` is real and depends on no tensor that requires grad."""
    if not isinstance(x, torch.Tensor) or not t.is_floating_point():
        return False
    if not x.is_floating_point() and not x.is_complex():
        return not t.requires_grad
    if not x.requires_grad or not t.requires_grad:
        return False
    mine, its = _leaves(x), _leaves(t)
    return bool(mine) and its is not None and bool(its) and its <= mine


def _whole(name: str, read: int | None, made: int | None, first: bool) -> None:
    """A ValueError unless a segment reads every entry (``read``) of the tensor before it
    (``made`` entries): a slice or a selection (``h[:, :k]``, a sequence's last step) shares
    its storage, and was taken for the whole output, while the gradient reaches only the
    entries read (the prediction of the layers before was 0.7x the measurement for half the
    units, 0.2x for one of 32 time steps)."""
    if first or read is None or made is None or read == made:  # part of x: no gradient rows
        return
    if read > made:  # h[:, None].expand(-1, 4, -1): a stride-0 view of more entries
        raise ValueError(f"predict() needs a chain in which each layer reads each entry of the "
                         f"previous output once; the input of {name} repeats the previous "
                         f"layer's output ({read} entries read from its {made}: a broadcast "
                         "view such as expand), so each entry's gradient is a sum over its "
                         "copies")
    raise ValueError(f"predict() needs a chain in which each layer reads all of the previous "
                     f"output; the input of {name} is a part of the previous layer's output "
                     f"({read} of its {made} entries: a slice or a selection), whose other "
                     "entries get no gradient")


def _custom_function(fn: Any, modules: set) -> str | None:
    """The class name of a custom ``torch.autograd.Function``'s node (its backward is the
    user's: a gradient reversal or scale) on the single-input path from ``fn`` back to the
    last module output (a node in ``modules``), views and copies included; else None."""
    for _ in range(16):
        if fn is None or fn in modules:
            return None
        if isinstance(fn, torch.autograd.function.BackwardCFunction) \
                and fn.name() != "BackwardHookFunctionBackward":  # a full backward hook's
            return type(fn).__name__  # view: checked by what the hooks return (_HookReturns)
        nxt = [n for n, _ in fn.next_functions if n is not None]
        if len(nxt) != 1:
            return None
        fn = nxt[0]
    return None


def _reaches_every_layer(end: Any, outs: list, no_loss: bool) -> None:
    """A ValueError naming the first layer whose output the loss (or the model's output)
    does not reach in the autograd graph: computed under ``torch.no_grad()`` or detached on
    the way (``h.detach()``), it gets no gradient, and the chain's backward pass predicted one
    all the same (grad_pre_std 2.3e-4 where nothing is measured)."""
    stack = [t.grad_fn for t in _tensors(end) if t.grad_fn is not None]
    seen: set = set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        stack.extend(nxt for nxt, _ in node.next_functions)
    for name, held in outs:
        if held is None:
            continue
        fn = held[0].grad_fn
        if fn is None or fn not in seen:
            raise ValueError(f"predict() needs the gradient to flow through every layer of the "
                             f"chain; the {'output' if no_loss else 'loss'} does not reach "
                             f"{name!r} (its output was computed under torch.no_grad() or "
                             "detached on the way), so it gets no gradient")


def _other_path(end: Any, stop: Any, earlier: dict) -> int | None:
    """The call number of a module output in ``earlier`` (autograd node -> call) that
    ``end`` (the loss, or the model's output: a tensor or a structure of tensors) reaches in
    the autograd graph without passing through the node ``stop`` (the last segment's output),
    or None."""
    if stop is None:
        return None
    stack = [t.grad_fn for t in _tensors(end) if t.grad_fn is not None]
    seen: set = set()
    while stack:
        node = stack.pop()
        if node is None or node is stop or node in seen:
            continue
        seen.add(node)
        if node in earlier:
            return earlier[node]
        stack.extend(nxt for nxt, _ in node.next_functions)
    return None


def _tensors(obj: Any) -> list[torch.Tensor]:
    """Every tensor in a model's output (a tensor, tuple, list, dict or dataclass)."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        obj = list(obj.values())
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = [getattr(obj, f.name) for f in dataclasses.fields(obj)]
    if isinstance(obj, (tuple, list)):
        return [t for o in obj for t in _tensors(o)]
    return []


_SHAPE_ONLY = (nn.Flatten, nn.Unflatten, nn.Identity, nn.PixelShuffle, nn.PixelUnshuffle,
               nn.ChannelShuffle)


_DROPOUT_LABEL = re.compile(r"\(Dropout[123]?d?\)$|^the function F\.dropout[123]?d?$")


def _dropout_inside(forward_path: list[str]) -> str:
    """A note when a training-mode dropout on the path from a layer (``forward_path``: the
    modules' and functions' labels, in forward order) is read by another module there
    (``Linear -> Dropout -> ReLU``: the activation reads ``m * s / (1 - p)``, not the layer's
    output): predict() models dropout between segments, ``E[a^2] / (1 - p)`` after the
    activation, not inside one; '' otherwise."""
    inside = [p for p in forward_path[:-1] if _DROPOUT_LABEL.search(p)]
    if not inside:
        return ""
    return (f"; {inside[0]} in training mode is modelled only between segments (after a "
            "layer's activation, Linear -> ReLU -> Dropout), not between a layer and its "
            "activation")


_DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
            nn.FeatureAlphaDropout)


def _shape_only(module: nn.Module) -> bool:
    """A module whose output holds its input's values (reshaped or moved): Flatten, Unflatten,
    Identity, PixelShuffle/PixelUnshuffle and ChannelShuffle (each value moved to another
    place: no variance changes, so ``Conv -> ReLU -> PixelShuffle -> Conv`` is a chain), dropout
    in eval mode or with ``p = 0``."""
    return isinstance(module, _SHAPE_ONLY) or (
        isinstance(module, _DROPOUT) and (not module.training or module.p == 0))


def _functional_post(out_fn: Any, name: str, add: Any = None,
                     scales: dict[Any, tuple[Any, Any]] | None = None) -> ActivationSpec | None:
    """The activation a block's forward applies itself to the residual sum as its last
    operation, ``F.relu(x + F(x))`` or ``F.relu(out, inplace=True)`` after ``out += x``
    (``out_fn``: the block output's autograd node, an activation node reading an add): the
    spec of the equivalent module (the settings read from the node, as
    :func:`~depthlab.torch.functional_acts.chain_acts` reads them after a layer), or None.
    Such a block was refused as 'not the plain sum of the branch and the shortcut'.
    ``add``: the node the activation must read (the block's output) instead of an add;
    ``scales``: the products with constants (:func:`_record_scale`), so that the sum may be
    scaled first, ``F.relu((x + F(x)) * k)``."""
    written = None if out_fn is None else hand_written(out_fn)
    if written is None and (out_fn is None or out_fn.name() not in ACT_NODES
                            or len(out_fn.next_functions) != 1):
        return None
    src = written[0][0] if written is not None else out_fn.next_functions[0][0]
    below = _below_views(src)[0] if add is not None else _unscaled_sum(src, scales or {})[0]
    if below is None or (below is not add if add is not None
                         else not below.name().startswith("AddBackward")):
        return None
    key = written[1] if written is not None else _settings(out_fn)
    spec = None if key is None else activation_spec(key[0](*key[1:]))
    if spec is None or not spec.scalar:
        return None
    if spec.name in _SHRINKS:
        raise ValueError(_shrink_refusal(
            f"the function {re.sub(r'Backward[0-9]*$', '', out_fn.name()).lower()} on the "
            f"residual sum of {name!r}"))
    return spec


def _functional_reader(out_fn: Any, reads: list[tuple[Any, int]], name: str
                       ) -> tuple[ActivationSpec, int] | None:
    """The activation a forward applies itself to a block's output outside the block,
    ``F.relu(block(h))`` (``reads``: ``(grad_fn, storage)`` of the tensors later layers,
    pooling and the model's output read; ``out_fn``: the block output's node): its spec (as
    :func:`_functional_post`) and the storage of its output, or None. Refused before as 'the
    input of residual block ... is not the previous layer's output', while ``nn.ReLU()`` after
    the block was its ``post``."""
    if out_fn is None:
        return None
    for fn, storage in reads:
        node, _ = _below_views(fn)
        written = None if node is None else hand_written(node)
        if written is None and (node is None or node.name() not in ACT_NODES
                                or len(node.next_functions) != 1):
            continue
        src = written[0][0] if written is not None else node.next_functions[0][0]
        if _below_views(src)[0] is not out_fn:
            continue
        spec = _functional_post(node, name, out_fn)
        return None if spec is None else (spec, storage)
    return None


def _copies_below(node: Any) -> Any:
    """``node`` under ``x.clone()`` nodes (the same values: ``x = x.clone(); x += F(x)``)."""
    for _ in range(16):
        if node is None or node.name() != "CloneBackward0" or len(node.next_functions) != 1:
            break
        node = node.next_functions[0][0]
    return node


def _count(counter: list[int], step: int) -> Callable[..., None]:
    """A forward (pre-)hook adding ``step`` to ``counter[0]``: how many activation modules are
    running (their own torch calls are no part of the chain's structure)."""
    def hook(*_: Any) -> None:
        counter[0] += step
    return hook


def _record_scale(name: str, args: tuple, kwargs: dict, out: Any,
                  scales: dict[Any, tuple[Any, Any]], reads: list[tuple[Any, int]]) -> None:
    """Note ``out = t * c`` (``c * t``, ``t / c``) of one tensor ``t`` with an autograd node and
    a constant ``c`` (a number, or a tensor without a node: a parameter, a buffer) in
    ``scales``: ``out``'s node -> (``t``'s node, the factor ``c`` or ``1 / c``, float64);
    ``t`` is read (an activation the forward applied itself, ``gamma * torch.tanh(l(x))``, is
    found by :func:`~depthlab.torch.functional_acts.chain_acts`). Anything else (two computed
    operands, a rounding division, ``c / t``) is no scale and is left out."""
    operands = [*args, *kwargs.values()]
    if not isinstance(out, torch.Tensor) or out.grad_fn is None or len(operands) != 2:
        return
    moving = [k for k, o in enumerate(operands)
              if isinstance(o, torch.Tensor) and not _of_parameters(o)]
    if len(moving) != 1:
        return
    k = moving[0]
    t, c = operands[k], operands[1 - k]
    divide = name in ("div", "__truediv__", "divide", "true_divide")
    if divide and k != 0:  # c / t: not a scale of t
        return
    if isinstance(c, torch.Tensor):
        if not (c.is_floating_point() or c.dtype in (torch.int32, torch.int64)):
            return
        c = c.detach().to(device="cpu", dtype=torch.float64)
    elif isinstance(c, (int, float)) and not isinstance(c, bool):
        c = torch.tensor(float(c), dtype=torch.float64)
    else:
        return
    scales[out.grad_fn] = (t.grad_fn, 1.0 / c if divide else c)
    reads.append((t.grad_fn, _storage(t)))


def _of_parameters(t: torch.Tensor, limit: int = 64) -> bool:
    """Whether ``t`` is a constant for the forward's activations: no autograd node, or one
    computed from parameters alone (LayerScale's ``self.gamma[:, None, None]``,
    ``self.gamma.view(1, -1, 1, 1)``, ``torch.exp(self.log_alpha)``), within ``limit`` nodes."""
    if t.grad_fn is None:
        return True
    nodes = _graph(t, limit)
    # a leaf that is no parameter: the input (chain's copy of x)
    return nodes is not None and not any(
        fn.name() == "torch::autograd::AccumulateGrad"
        and not isinstance(getattr(fn, "variable", None), nn.Parameter) for fn in nodes)


def _scale_value(name: str, factor: torch.Tensor, what: str = "branch") -> float:
    """The one number a residual branch is multiplied by: ``factor``'s value when its entries
    are all equal (a scalar, or LayerScale's ``gamma`` as initialized); a ValueError for
    unequal entries (a per-channel scale gives each unit its own variance, which one variance
    per layer does not describe) or a non-finite one."""
    flat = factor.reshape(-1)
    if flat.numel() == 0 or not bool(torch.isfinite(flat).all()):
        raise ValueError(f"predict() models a residual {what} scaled by a finite number; in "
                         f"{name!r} the {what} is multiplied by a factor of "
                         f"{flat.numel()} values that are not all finite")
    lo, hi = float(flat.min()), float(flat.max())
    if hi - lo > 1e-6 * max(abs(lo), abs(hi)):
        raise ValueError(f"predict() models a residual {what} scaled by one number (x + alpha "
                         f"* F(x), LayerScale's gamma as initialized); in {name!r} the {what} "
                         f"is multiplied by {flat.numel()} unequal values (from {lo:.4g} to "
                         f"{hi:.4g}: a scale per channel or per example, a trained LayerScale, "
                         "a stochastic-depth mask in training mode), which give the units or "
                         "examples unequal variances that one variance per layer does not "
                         "describe; expected a scalar or equal entries (stochastic depth: the "
                         "model in eval() mode)")
    return float(flat[0])


def _check_add(name: str, out_fn: Any, post: bool, branch_fn: Any, skip_fn: Any,
               made: dict | None = None, scales: dict[Any, tuple[Any, Any]] | None = None,
               drops: dict[Any, float] | None = None) -> tuple[float, float]:
    """The block's output is ``post(a + c b)`` (``post`` an activation module when ``post``) of
    exactly the shortcut's output ``a`` and the branch's ``b`` (autograd nodes; the check is
    skipped without gradients), the branch times a constant ``c`` (1 for the plain sum): ``x +
    alpha * F(x)``, ReZero's and LayerScale's ``x + self.gamma * F(x)`` with ``gamma`` of equal
    entries, ``x + F(x) / tau``, ``x.add(F(x), alpha=0.5)`` (``scales``: the products noted by
    :func:`_record_scale`), and optionally through one training-mode dropout ``x +
    drop(F(x))`` (a transformer's ``x + self.dropout(self.ff(x))``; ``drops``: the dropout
    calls' output nodes -> ``p``). Returns ``(c, p)``: the branch's output enters the sum with
    variance ``c^2 Var(F)`` (kept with probability ``1 - p``, times ``1 / (1 - p)``) and
    receives ``c^2 Var(dL/d sum)`` back. Another operation in between (a scale of the
    shortcut, a functional activation on one path) would make the prediction wrong, so it is
    refused."""
    if out_fn is None or branch_fn is None or skip_fn is None:
        return 1.0, 0.0, 1.0
    drops = drops or {}
    branch_fn, skip_fn = _copies_below(branch_fn), _copies_below(skip_fn)
    scales = scales or {}
    add, outer = _unscaled_sum(out_fn, scales)
    if post and not add.name().startswith("AddBackward"):  # (an in-place activation module
        # after the block, outside it, ran after the block's output was recorded)
        written = hand_written(add)  # (x + F(x)) * torch.sigmoid(x + F(x)): what it reads
        nxt = [written[0][0]] if written is not None else \
            [n for n, _ in add.next_functions if n is not None]
        add = nxt[0] if len(nxt) == 1 else None
        if add is not None:  # post((x + F(x)) / sqrt(2))
            add, outer = _unscaled_sum(add, scales)
    operands = [] if add is None else [_copies_below(n) for n, _ in add.next_functions
                                       if n is not None]
    factor: Any = 1.0
    drop = 0.0
    for k, node in enumerate(operands):  # gamma * F(x): the branch under its scales
        found = node
        f: Any = 1.0
        p = 0.0
        for _ in range(8):
            if found is branch_fn:
                break
            if found in drops and p == 0.0 and found.next_functions:  # (one dropout)
                p, found = drops[found], _copies_below(found.next_functions[0][0])
            elif found in scales:
                found, c = scales[found]
                found, f = _copies_below(found), f * c
            else:
                break
        if found is branch_fn and node is not branch_fn and skip_fn is not branch_fn:
            operands[k], factor, drop = branch_fn, f, p
            break
    if (add is None or not add.name().startswith("AddBackward") or len(operands) != 2
            or {id(n) for n in operands} != {id(branch_fn), id(skip_fn)}):
        other = [n for n in operands if n is not branch_fn] if branch_fn in operands else []
        who = (made or {}).get(other[0]) if len(other) == 1 else None
        if who is not None:  # x_pool + F(x): a module (not a weight layer) as the shortcut
            raise ValueError(f"predict() models residual blocks y = f(x + F(x)) or "
                             f"f(P(x) + F(x)) with a Linear/Conv projection P; in {name!r} the "
                             f"shortcut is the output of {who}, not the block's input itself "
                             "nor a Linear/Conv layer, which is not modelled; expected an "
                             "identity or a projection-layer shortcut")
        raise ValueError(f"predict() models residual blocks y = f(x + F(x)) or f(P(x) + F(x)) "
                         f"with an activation f (a module or a function, or none), the branch "
                         f"F optionally times a constant (x + alpha * F(x)); in {name!r} the "
                         f"output is not the plain sum of the branch and the shortcut (a scale "
                         f"of the shortcut or another operation in between)")
    alpha = getattr(add, "_saved_alpha", 1)
    if alpha != 1:  # x.add(F(x), alpha=0.5): the second operand scaled (the sum was once
        # modelled as x + F(x): grad_pre_std of the layer below 2.0x the measurement)
        if operands[-1] is not branch_fn:
            raise ValueError(f"predict() models residual blocks y = f(x + F(x)) or f(P(x) + "
                             f"F(x)), the branch F optionally times a constant; in {name!r} "
                             f"the sum is an add with alpha={alpha:g} that scales the "
                             f"shortcut (F(x).add(x, alpha={alpha:g})), which the theory does "
                             "not model; expected x.add(F(x), alpha=...) or x + alpha * F(x)")
        factor = factor * alpha
    if isinstance(outer, torch.Tensor):
        outer = _scale_value(name, outer, "sum")
    if isinstance(factor, torch.Tensor):
        return _scale_value(name, factor), drop, float(outer)
    return float(factor), drop, float(outer)


def _unscaled_sum(node: Any, scales: dict[Any, tuple[Any, Any]]) -> tuple[Any, Any]:
    """``(the sum, c)`` for ``node`` = ``c (a + b)`` (``(x + F(x)) / sqrt(2)``: products with
    constants noted by :func:`_record_scale` around an add); ``(node, 1.0)`` when no add lies
    under the scales (``c * relu(x + F(x))`` is no scaled sum)."""
    found, c = node, 1.0
    for _ in range(8):
        if found is None or found not in scales:
            break
        below, k = scales[found]
        found, c = _copies_below(below), c * k
    if found is not node and found is not None and found.name().startswith("AddBackward"):
        return found, c
    return node, 1.0


_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _check_norm(norm: nn.Module, name: str, shape: tuple[int, ...] | None = None) -> None:
    """BatchNorm in training mode (batch statistics), LayerNorm, GroupNorm, RMSNorm and
    InstanceNorm with each example's statistics on a batch ``shape`` (GroupNorm(C, C)) are
    modelled; anything else is refused."""
    norms.check_batched(norm, shape, name)
    if isinstance(norm, (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)) and \
            not norm.training and norm.track_running_stats:
        raise ValueError(f"predict() models InstanceNorm with each example's statistics; "
                         f"{name!r} is in eval mode with track_running_stats=True (running "
                         f"statistics): call model.train() first")
    if isinstance(norm, PER_EXAMPLE):
        return
    if not isinstance(norm, _BN):
        raise ValueError(f"predict() models BatchNorm1d/2d/3d, LayerNorm, GroupNorm, "
                         f"InstanceNorm1d/2d/3d and RMSNorm after a layer; {name!r} is a "
                         f"{type(norm).__name__}")
    if not norm.training and norm.track_running_stats:
        raise ValueError(f"predict() models BatchNorm in training mode (batch statistics); "
                         f"{name!r} is in eval mode: call model.train() first")


def unsupported_layer(layers) -> str:
    """The refusal of the first of ``layers`` (``LayerInfo``) that is no ``Linear``/``Conv``
    layer, or ``""``."""
    for info in layers:
        if not isinstance(info.owner, (nn.Linear, *_CONV, *_CONVT)):
            why = (" (attention: its softmax mixes the positions with weights that depend on "
                   "the inputs, which no variance propagation here models; LayerNorm, "
                   "GroupNorm, RMSNorm and pre-/post-norm residual MLP blocks are)"
                   if isinstance(info.owner, nn.MultiheadAttention) else "")
            return (f"predict() supports chains of Linear/Conv/ConvTranspose layers; layer "
                    f"{info.name!r} is a "
                    f"{info.kind}{why}")
    return ""
