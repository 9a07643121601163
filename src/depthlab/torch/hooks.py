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
* **CPU float tensors** (with the optional Numba, ``depthlab[fast]``): the sums of a tensor
  (``sum x``, ``sum x^2``, ``sum |x|``; a ReLU output's ``#{x <= 0}`` and live units) come from
  one compiled pass over its memory (:mod:`depthlab.torch.kernels`; bf16/fp16 read as float32)
  instead of one torch operation each; they are host numbers already, so they skip the
  transfer. CUDA/MPS tensors and tensor subclasses take the torch operations;
  ``DEPTHLAB_PROBE_KERNELS=numpy`` forces them everywhere.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import inspect
import math
import re
import sys
import textwrap
import weakref
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn.modules.module import _global_forward_hooks
from torch.utils.hooks import RemovableHandle

from ..probes.kernels import CANCELLATION_RATIO, TINY_SQUARE_64
from ..probes.stats import PERCENTILES, percentile_names
from .accumulators import KERNEL_LIKE as _LIKE
from .accumulators import (
    NORM_HIGH,
    NORM_LOW,
    Acc,
    ActAcc,
    Transfer,
    _first_tensor,
    _host_float,
    _std,
    _strided,
    pooled_mean_std_norms,
    update_norms,
    update_ratio,
    watch_kernels,
    weight_reductions,
)
from .functional_acts import record_functional
from .layers import (
    MAPPED,
    RECORDINGS,
    ActivationSpec,
    LayerInfo,
    MapCapture,
    MapWatch,
    _input_tensors,
    activation_spec,
    check_model,
    is_norm,
    layer_weights,
    output_feature_axis,
    untouched,
    weight_modules,
)

__all__ = ["BlockInfo", "Recording"]

_DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
             nn.FeatureAlphaDropout)
"""Dropout modules: their output is linked to the layer output they drop (``_dropout_post``)."""
_SHUFFLES = (nn.PixelShuffle, nn.PixelUnshuffle, nn.ChannelShuffle)
"""Modules that rearrange a layer output into a new tensor, entry for entry: their output is
linked to that layer output, with the map back into its layout (``_shuffle_post``)."""
_RESAMPLES = (nn.Upsample,)
"""Modules that resample a layer output over its spatial axes (``nn.Upsample`` and its
subclasses ``UpsamplingNearest2d``/``UpsamplingBilinear2d``): their output, whose channels are
the layer's, is linked to that layer output (``_resample_post``)."""
_ADD_NODES = frozenset({"AddBackward0", "AddBackward1"})
_UPSAMPLE_NODE = re.compile(r"Upsample\w+Backward\d+")
"""The autograd nodes of ``F.interpolate`` (``UpsampleNearest2DBackward0``, ...)."""
_FORWARDS: weakref.WeakSet = weakref.WeakSet()
"""The recordings whose model's forward is in progress: a module shared by two watched models
(a common trunk) runs inside the other model's forward, which is not a call of this one's pass
(see :attr:`Recording._idle`)."""
_CALL_CODES = frozenset(f.__code__ for f in (nn.Module._call_impl, nn.Module._wrapped_call_impl))


_PEEK = getattr(getattr(torch._C, "_functorch", None), "peek_interpreter_stack", None)


def _in_transform() -> bool:
    """Whether a ``torch.func`` transform (``vmap``, ``grad``, ``jacrev``, ...) is running: its
    tensors are wrappers without storage, which the hooks cannot read (the CPU kernels raised
    'Cannot access data pointer of Tensor that doesn't have storage' inside the user's
    per-example gradients, ``vmap(grad(loss))(params, x, y)``; the torch operations kept
    batched statistics that escaped the transform and raised at the record)."""
    return _PEEK is not None and _PEEK() is not None


_FT = getattr(torch._C, "_functorch", None)
_WRAPPED = getattr(_FT, "is_functorch_wrapped_tensor", None)
_UNWRAP = getattr(_FT, "get_unwrapped", None)
_NO_FUNCTORCH = getattr(torch._C, "_DisableFuncTorch", None)


def _plain(t: torch.Tensor | None) -> torch.Tensor | None:
    """The ordinary tensor under torch.func's wrappers (``vmap``'s batched tensor holds every
    vmapped call's values, the batch dimension included), or None when there is none to read."""
    if t is None or _WRAPPED is None or _UNWRAP is None:
        return None
    while _WRAPPED(t):
        t = _UNWRAP(t)
    return t


def _in_forward(model: nn.Module) -> bool:
    """Whether a call of ``model`` is on some thread's stack (a frame of ``Module.__call__``
    whose ``self`` is it)."""
    for frame in sys._current_frames().values():
        while frame is not None:
            if frame.f_code in _CALL_CODES and frame.f_locals.get("self") is model:
                return True
            frame = frame.f_back
    return False


def _others_in_forward(rec: Recording) -> bool:
    """Whether another recording's model is in its forward. An entry of :data:`_FORWARDS`
    whose forward raised (its closing hook never ran) is dropped: it stayed there until that
    Watch was re-armed or closed, and every submodule call of any other watched model was
    ignored meanwhile (a loop calling ``model[2](model[1](model[0](x)))`` recorded no layer
    after another model's forward had raised). Only reached while another entry is there."""
    busy = False
    for r in list(_FORWARDS):
        if r is rec:
            continue
        if _in_forward(r.model):
            busy = True
        else:
            _FORWARDS.discard(r)
            r._in_model = r._model_idle = False
    return busy


_ARMS = [0]
"""How many times a :class:`Recording` has put its hooks back into its modules' hook dicts
(:meth:`Recording.arm`, which does it without new handles) or moved them behind the others
(:meth:`Recording._last`): with ``RemovableHandle.next_id``,
which every hook registered through PyTorch's API advances, it tells whether any hook can have
been put behind a recording's since it last made its own the last ones (:func:`_hook_stamp`)."""


def _hook_stamp() -> tuple[int, int]:
    """What changes whenever a hook is added to any module (see :data:`_ARMS`)."""
    return RemovableHandle.next_id, _ARMS[0]


_READS_INPUT = frozenset({"_model_pre", "_norm_pre", "_act_pre", "_relu_post", "_block_pre",
                          "_inner_parent_pre", "_inner_pre", "_dropout_post",
                          "_shuffle_post", "_resample_post"})
"""The :class:`Recording` hooks that read their module's input: registered ``with_kwargs``, so a
call by keyword (``act(input=s)``, ``blk(hidden=h)``) is measured as a positional one."""

EARLIER_PASSES = 8
"""The passes of at most this many forwards of the model before the last are kept until a
record, for :meth:`Recording.settle` (each holds a few partial sums, no tensor of the size of
an activation)."""

OPEN_PASSES = 4096
"""The most passes kept while no backward has closed any of them (a watched submodule called
in a loop: each call a forward, all graded by one backward and pooled). A pass that no backward
graded and whose autograd graph is gone (a validation forward with gradients) is dropped at the
next forward (see ``_Pass.taps``): it held its percentile copies and its input."""


def _needs_grad(obj) -> bool:
    """Whether a tensor in ``obj`` (a model's output: a tensor, tuple, list or dict, nested)
    requires grad."""
    if isinstance(obj, torch.Tensor):
        return obj.requires_grad
    if isinstance(obj, dict):
        obj = tuple(obj.values())
    return isinstance(obj, (tuple, list)) and any(_needs_grad(o) for o in obj)


def _ver(t: torch.Tensor) -> int:
    """``t._version``, or -1 for an inference tensor (``torch.inference_mode()``: a validation
    pass while a Watch is armed), which has no version counter (reading it raised)."""
    try:
        return t._version
    except RuntimeError:
        return -1


def _weight_grad(w: torch.Tensor, weight_grads: dict | None) -> torch.Tensor | None:
    """The gradient of the weight ``w`` in this pass: ``weight_grads[id(w)]`` when given, else
    ``w.grad``; None for a frozen weight (``requires_grad`` False), whose ``.grad`` is what an
    earlier step left there (frozen mid-run, with an optimizer over the other weights only:
    its last gradient was recorded again at every later step)."""
    if weight_grads is not None:
        return weight_grads.get(id(w))
    return w.grad if w.requires_grad else None


def _first_parameter(module: nn.Module) -> tuple[str | None, bool]:
    """``(name, positional)`` of the first parameter of ``module.forward`` that a call can pass
    by keyword (``input`` of ``nn.Tanh``, ``src`` of ``nn.TransformerEncoderLayer``) and
    whether it can be passed positionally too; ``(None, False)`` for a
    ``forward(*args, **kwargs)`` or no signature to read."""
    try:
        params = inspect.signature(module.forward).parameters.values()
    except (TypeError, ValueError):
        return None, False
    first = next(iter(params), None)
    if first is None or first.kind not in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                           inspect.Parameter.KEYWORD_ONLY):
        return None, False
    return first.name, first.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD


def _compiled_call(model: nn.Module) -> str | None:
    """The one line refusing a forward of ``model`` compiled after the hooks were armed
    (``torch.compile(model)`` or ``model.compile()`` after a ``Watch``: dynamo ran depthlab's
    hooks through its frame evaluation and crashed inside Numba's dispatcher), else None.
    Read first in the model's pre-hook, before anything dynamo could not trace."""
    dynamo = sys.modules.get("torch._dynamo.eval_frame")  # imported once anything compiled
    if dynamo is None:
        return None
    if getattr(dynamo, "_in_optimized_module", False):
        how = "torch.compile(model)"
    elif torch.compiler.is_compiling() or torch._C._dynamo.eval_frame.get_eval_frame_callback() \
            not in (None, False):  # dynamo traces this hook, or runs it in a compiled region
        how = "a torch.compile'd function calls it"
    elif getattr(model, "_compiled_call_impl", None) is not None:
        how = "model.compile()"
    else:
        return None
    return (f"{type(model).__name__} runs compiled ({how}) while a depthlab Watch's hooks "
            "are on it, which a compiled forward cannot run; train it uncompiled while it is "
            "watched, or compile it after watch.close()")


def _call_note(args: tuple, kwargs: dict) -> str:
    """Why a forward called with ``args``/``kwargs`` has no single input tensor ``x`` for
    ``predict(model, x)``, which calls ``model(x)``."""
    if len(args) == 1 and not kwargs:
        what = f"a {type(args[0]).__name__} of inputs"
    else:
        parts = [f"{len(args)} positional argument{'s' if len(args) != 1 else ''}"] if args \
            else []
        parts += [f"keyword argument{'s' if len(kwargs) > 1 else ''} "
                  + ", ".join(map(repr, kwargs))] if kwargs else []
        what = " and ".join(parts)
    return (f"no theory: the model's forward was called with {what}, and predict() "
            "takes one input tensor x (it calls model(x))")


def _other_forward_hooks(module: nn.Module) -> bool:
    """Whether a forward hook that is not a :class:`Recording`'s runs on ``module`` (its own,
    or a global one from ``register_module_forward_hook``): it may change the output."""
    if _global_forward_hooks:
        return True
    hooks = module._forward_hooks
    return len(hooks) > 1 and any(type(h) is not _Hook for h in hooks.values())


def _inert(*args) -> None:
    """What a copy of a watched model gets in place of a :class:`Recording`'s hook: nothing."""
    return None


def _inert_hook() -> object:
    return _inert


class _Hook(functools.partial):
    """A :class:`Recording`'s module hook (a ``partial`` of its bound method: called at C
    speed). ``copy.deepcopy(model)`` (an EMA or best-model copy) and ``torch.save(model)``
    while the hooks are armed give the copy an inert hook (:func:`_inert`) instead of a copy
    of the recording: the copy measures nothing and never feeds the original's pass (it
    failed: ``cannot pickle 'module' object``)."""

    def __reduce__(self):
        return (_inert_hook, ())

    def __deepcopy__(self, memo) -> object:
        return _inert


@dataclass
class BlockInfo:
    """A residual block: dotted ``name``, the ``module`` and ``layer`` = the number of the last
    weight layer that ran inside it (its rows sort beside that layer)."""

    name: str
    module: nn.Module
    layer: int
    outside: bool = False
    """The sum is in the caller's forward (``h = h + blk(h)`` in a loop, ``h += blk(h)``,
    ``torch.add(h, blk(h))``): ``block_grad_std`` is the std of dL/d(that sum), not of
    dL/d(the module's output)."""


class _Pass:
    """The accumulators of one armed forward/backward pass (per layer number or module id)."""

    __slots__ = ("pre", "grad", "act", "norm", "block_grad", "links", "pending", "block_inputs",
                 "device", "input", "fused", "layouts", "open", "grad_cg", "block_grad_cg",
                 "cg_only", "swapped", "whole", "taps", "maps", "serial", "tasks")

    def __init__(self) -> None:
        self.pre: dict[int, Acc] = {}
        self.grad: dict[int, Acc] = {}
        self.act: dict[int, ActAcc] = {}
        self.norm: dict[int, Acc] = {}
        self.block_grad: dict[int, Acc] = {}
        # the gradients of a backward run with create_graph=True (a gradient penalty's
        # torch.autograd.grad(out.sum(), x, create_graph=True), MAML's inner step): part of
        # computing the loss, not its gradient; used only when no other backward graded the
        # pass (prefer_plain)
        self.grad_cg: dict[int, Acc] = {}
        self.block_grad_cg: dict[int, Acc] = {}
        self.links: dict[int, tuple[torch.Tensor, int, LayerInfo, str]] = {}
        self.pending: dict[int, LayerInfo] = {}
        # id(linked tensor or pending follower module) -> the map of a tensor of its shape
        # into its layer output's layout (a reshaped or permuted view of it: _view_link)
        self.layouts: dict[int, object] = {}
        self.block_inputs: dict[int, list] = {}
        self.device: torch.device | None = None
        self.input: torch.Tensor | None = None  # the model's input (Recording.want_input)
        # id(ReLU module) -> (layer output, its version, LayerInfo, ReLU sums): measured with
        # the layer's pre_* in one pass, taken by that ReLU's hook if it reads this very tensor
        self.fused: dict[int, tuple] = {}
        # no backward had run through it when the model's next forward began (a siamese pair,
        # a watched submodule called in a loop): one backward may grade it with the later ones
        self.open = False
        # only a create_graph backward had (a gradient penalty's interpolates, graded by
        # torch.autograd.grad(..., create_graph=True) before the real and fake forwards): open
        # too, pooled if the loss's ordinary backward grades it with the later ones
        self.cg_only = False
        # the forward ran with other weights than the model's parameters
        # (torch.func.functional_call(model, fast_weights, x): MAML's adapted forward)
        self.swapped = False
        # a forward of the model itself ended in this pass (see Recording._idle)
        self.whole = False
        # weak references to the gradient hooks of its layer outputs, which the autograd graph
        # holds: all dead (the graph freed) and none fired, no backward can grade it any more
        self.taps: list[weakref.ref] = []
        # the linear maps a MapCapture kept in its forwards (Recording._maps_post): [key,
        # detached output s, [dL/ds or None]] per map; None: no capture ran
        self.maps: list[list] | None = None
        # the number its model forward's output nodes carry in their autograd metadata
        # (_mark_outputs; 0: none marked): which pass a loss's graph reaches (Recording.settle)
        self.serial = 0
        # the backwards (autograd graph task ids) whose gradients reached its layer outputs
        self.tasks: set[int] = set()

    def gradeable(self) -> bool:
        """Whether a backward has graded this pass or still can: some of its gradient hooks
        are alive (its autograd graph, or a part of it, is still held): ``graded() or
        any(r() is not None for r in taps)``."""
        return self.graded() or self.tapped()

    def tapped(self) -> bool:
        """Whether one of its gradient hooks is alive: ``any(r() is not None for r in taps)``
        (a loop: these predicates run at every forward, where a generator cost more than the
        test)."""
        for r in self.taps:
            if r() is not None:
                return True
        return False

    def graded(self) -> bool:
        """Whether a backward has run through this pass (a layer output got its gradient):
        ``any(acc.ns for acc in (*grad.values(), *grad_cg.values()))``."""
        for acc in self.grad.values():
            if acc.ns:
                return True
        for acc in self.grad_cg.values():
            if acc.ns:
                return True
        return False

    def plainly_graded(self) -> bool:
        """Whether an ordinary backward (not one with ``create_graph=True``) has run through
        this pass: ``any(acc.ns for acc in grad.values())``."""
        for acc in self.grad.values():
            if acc.ns:
                return True
        return False

    def aside(self, table: dict) -> dict:
        """Where a create_graph backward's gradients for ``table`` go (see ``grad_cg``)."""
        return self.grad_cg if table is self.grad else self.block_grad_cg

    def prefer_plain(self) -> None:
        """Make the gradient rows those of the ordinary backwards (``loss.backward()``) when
        one graded this pass, else those of the create_graph ones (a loop whose only backward
        is ``loss.backward(create_graph=True)``). A gradient penalty's
        ``torch.autograd.grad(out.sum(), x, create_graph=True)`` before ``loss.backward()`` was
        pooled with the loss's gradient (a layer's ``grad_pre_std`` 0.041 where ``dL/ds``'s
        is 0.0041)."""
        if self.plainly_graded():
            self.grad_cg, self.block_grad_cg = {}, {}
        elif self.grad_cg:
            self.grad, self.block_grad = self.grad_cg, self.block_grad_cg
            self.grad_cg, self.block_grad_cg = {}, {}

    def _sorted(self) -> tuple[Acc, ...]:
        return (*self.pre.values(), *self.norm.values(), *(a.out for a in self.act.values()))

    def freeze(self, percentiles: Sequence[float], keep: bool = False) -> None:
        """Take the percentiles of the pooled outputs and drop their copies (``keep``: their
        values kept for a merge, see :meth:`Recording.settle`)."""
        for acc in self._sorted():
            acc.freeze(percentiles, keep)

    def release(self) -> None:
        """Drop the values kept for a merge (memory)."""
        for acc in self._sorted():
            acc.kept = None

    def merge(self, other: _Pass) -> None:
        """Pool the calls of ``other`` (an earlier forward that the same backward graded)."""
        for mine, theirs in ((self.pre, other.pre), (self.grad, other.grad),
                             (self.act, other.act), (self.norm, other.norm),
                             (self.block_grad, other.block_grad),
                             (self.grad_cg, other.grad_cg),
                             (self.block_grad_cg, other.block_grad_cg)):
            for key, acc in theirs.items():
                if key in mine:
                    mine[key].merge(acc)
                else:
                    mine[key] = acc
        self.tasks |= other.tasks
        if other.maps is not None:  # (other is the earlier forward: its maps first)
            self.maps = other.maps + (self.maps or [])


def _puts_pops(slots: list) -> tuple[list, list]:
    """The slots of :meth:`Recording.arm` (``(hooks dict, handle id, hook, mark dicts)``) as
    two flat lists, in slot order: ``(dict, id, value)`` that arming stores (the hook into its
    dict, then ``True`` into each mark dict) and ``(dict, id)`` that disarming pops (the hooks
    dicts that are alive, then the mark dicts)."""
    puts, pops = [], []
    for hooks, key, fn, marks in slots:
        puts.append((hooks, key, fn))
        puts.extend((d, key, True) for d in marks)
        if hooks is not None:
            pops.append((hooks, key))
        pops.extend((d, key) for d in marks)
    return puts, pops


def _any_graded(passes: list[_Pass]) -> bool:
    """``any(q.graded() for q in passes)``, without a generator."""
    for q in passes:
        if q.graded():
            return True
    return False


def _swapped(slots: list) -> bool:
    """Whether a forward found another tensor than its weight in a layer's slot:
    ``any(m._parameters.get(n) is not w for m, n, w in slots)`` (``_Pass.swapped``)."""
    for m, n, w in slots:
        if m._parameters.get(n) is not w:
            return True
    return False


def _links_need_grad(links: dict) -> bool:
    """``any(link[0].requires_grad for link in links.values())``: a layer output of the pass
    requires grad."""
    for link in links.values():
        if link[0].requires_grad:
            return True
    return False


class Recording:
    """Hooks on ``model`` that measure the last forward/backward pass while armed.

    Parameters: ``model`` (a plain ``nn.Module``), ``percentiles`` (``pre_pK``/``act_pK``;
    ``()`` skips the sorts). Attributes: ``layers`` (every :class:`LayerInfo`, static order),
    ``order`` (the layers that ran, numbered in first-execution order), ``blocks``
    (:class:`BlockInfo` per residual block, found in the first armed pass).
    """

    def __init__(self, model: nn.Module, percentiles: Sequence[float] = PERCENTILES,
                 maps: bool = False) -> None:
        self.model = check_model(model)
        holders: list[LayerInfo] = []
        self.layers: list[LayerInfo] = weight_modules(model, holders)
        # modules that own a >= 2-dim parameter beside child layers (weight_modules'
        # holders_out): a layer only if their forward uses such a parameter as the weight of a
        # linear map, which a MapWatch mode tells in their first armed call (_holder_pre/_post;
        # none: no mode, no hook, nothing paid)
        self._holders = {id(info.owner): info for info in holders}
        self._holder_params = {id(w): id(info.owner) for info in holders for w in info.weights}
        self._holder_active: list[int] = []  # the holders whose forward is in progress
        self._holder_mode: MapWatch | None = None
        self.grown = False  # a holder joined self.layers (Watch reads its weights anew)
        self.percentiles = tuple(float(q) for q in percentiles)
        self.order: list[LayerInfo] = []
        self.numbered = 0  # the largest layer number given (numbers kept by Watch.relayer)
        self.blocks: dict[int, BlockInfo] = {}
        self._blocks_found = False
        self._plan: list[tuple[nn.Module, object, object]] | None = None
        self._claimed: set = set()
        # (module id, input node, output node, layer number) of the modules that ran in this
        # pass whose output may be added to their input by the caller (see _caller_sums)
        self._outside: list[tuple[int, object, object, int]] = []
        # ids of _input_node's requires-grad copies (first armed pass) and of the outputs of
        # frozen layers computed from them: no gradient rows of their own (see _layer_output)
        self._copied: set[int] = set()
        # ids of the modules given such a copy under saved-tensor hooks (a segment of
        # checkpoint(..., use_reentrant=False) fed the raw data): its recomputation in the
        # backward gets one too, so that both save the same tensors (see _input_node)
        self._saved_copies: set[int] = set()
        # (module, name, parameter) of each layer's first weight: a forward that finds another
        # tensor there ran with other weights (torch.func.functional_call; see _Pass.swapped)
        held = {}
        for m in model.modules():
            for n, q in m._parameters.items():
                if q is not None:
                    held.setdefault(id(q), (m, n, q))
        self._weight_slots = [held[id(info.weights[0])] for info in self.layers
                              if info.weights and id(info.weights[0]) in held]
        self._owners: dict[int, list[LayerInfo]] = {}
        for info in self.layers:
            self._owners.setdefault(id(info.owner), []).append(info)
        self._names = {id(m): n for n, m in model.named_modules()}
        self._specs: dict[int, ActivationSpec | None] = {}
        # id(LayerInfo) -> id(the nn.ReLU that took its output in the last pass): that
        # layer's output is measured for both at once (kernels.layer_relu)
        self._relu_of: dict[int, int] = {}
        self._axes: set[int] = set()  # id(LayerInfo) whose feature axis its output refined
        # a layer module of the user's own class calling its activation child on its map's
        # output (a Keras-style Dense: return self.act(F.linear(x, self.W, self.b))):
        # id(activation child) -> the layer module; the inputs of the layer's running call;
        # the calls whose output was measured at that activation's input (_inner_pre)
        self._inner_of: dict[int, nn.Module] = {}
        self._inner_calls: dict[int, tuple] = {}
        # id(output of a dropout module) -> that output, linked to the layer (or norm) output
        # it dropped (_dropout_post): a ReLU reading it is not fused with the layer's pass
        self._carried: dict[int, torch.Tensor] = {}
        self._inner_taken: dict[int, int] = {}
        self._handles: list = []  # (handle, hook) of the plan last registered
        self._first_params: dict[int, tuple] = {}  # id(module) -> _first_parameter
        self._slots: list = []  # (its hooks dict, handle id, hook, with_kwargs marks) per handle
        self._slots_plan: list | None = None
        self._armed = False
        self._stamp: tuple[int, int] | None = None  # _hook_stamp() when ours were last moved last
        self._last_run = 0
        self._wk = None  # the compiled kernels of the pass (see _kernels)
        # (the ``previous`` dict last given to _weight_sums_at, {id(parameter): its buffer's
        # (buffer, numel, dtype, contiguous, address)})
        self._snap_facts: tuple[dict, dict] | None = None
        self.p = _Pass()
        self._earlier: list[_Pass] = []  # the passes of earlier forwards since new_pass()
        # set (from a weak reference's callback) when a pass's gradient hook died with its
        # graph: _roll then drops the earlier passes no backward can grade any more
        self._tap_died = [False]
        # the weak references' one callback (holding the flag, not the recording: no cycle)
        self._on_tap_died = lambda _r, died=self._tap_died: died.__setitem__(0, True)
        self.weight_norms: dict[int, torch.Tensor] = {}
        self.update_sums: dict[int, tuple[float, float]] = {}
        self.refreshed = False
        self._layouts: dict[tuple, tuple[tuple, tuple, tuple]] = {}
        self.layout: tuple[tuple, tuple, tuple] = ((), (), ())
        self.values: list[float] = []
        self._pct_names = (percentile_names("pre", self.percentiles),
                           percentile_names("act", self.percentiles))
        self.want_input = False  # set: each armed forward keeps a copy of its input
        self.first_input: torch.Tensor | None = None
        self.input_seen = False  # an armed forward of the model ran while want_input was set
        self.input_note = ""  # why the last such forward's input is not predict()'s x
        self._model_idle = False  # the model's forward in progress runs without gradients
        self._in_model = False  # a forward of the model itself is in progress
        self.forwards = 0  # forwards of the model with gradients since new_pass()
        self.transformed = 0  # forwards of the model inside a torch.func transform, likewise
        # maps (a Watch): the weights used as linear maps that no module's output tells, the
        # model's own beside child layers, ParameterList tensors, an embedding table as a tied
        # projection, user-class layers whose output is not their map's (probe._loose_weights):
        # a MapCapture over each recorded forward keeps their maps (_maps_post), and collect
        # gives them the probe's layers (_add_maps). None found: no mode, no hook, no cost
        self._loose: dict = {}
        self._candidates: list[LayerInfo] = []
        self._map_keys: dict[int, int] = {}
        self._tables: dict[int, frozenset[str]] = {}
        if maps:
            from .probe import _LOOKUPS, _loose_weights

            self._loose, self._candidates = _loose_weights(model, self.layers)
            self._map_keys = {k: k for k in self._loose}
            self._tables = {id(w): _LOOKUPS for info in self.layers
                            if isinstance(info.owner, nn.Embedding) for w in info.weights}
        self._map_at: dict[int, int] = {}  # key -> the layers numbered before its first map
        self._cap: MapCapture | None = None  # the capture of the forward in progress
        self._maps_learned = False  # the first recorded forward told which maps to keep
        self.mapped = False  # a record had map layers (its rows numbered among them)
        self._weights_at: dict[int, set[int]] = {}  # the last such record's layer -> weights
        # key -> a copy of that map weight at the previous Watch.step call, for the next
        # record's update_ratio of its map layer (set by the Watch, read once by _add_maps)
        self.map_previous: dict[int, torch.Tensor] = {}
        RECORDINGS.add(self)  # paused by untouched(): probes inside a watched loop

    # -- arming ----------------------------------------------------------------------------
    @property
    def armed(self) -> bool:
        return self._armed

    @property
    def _idle(self) -> bool:
        """The armed hooks ignore the call in progress: a forward of the model without
        gradients (validation under ``no_grad``/``inference_mode``), any call inside a
        ``torch.func`` transform (:func:`_in_transform`; a weight layer run by ``vmap`` or
        ``func.grad`` inside the model's own forward is still measured,
        :meth:`_transformed_in_model`), or a submodule called on
        its own, outside any forward of the model, without gradients, once a backward has run
        through the pass (a loop that calls ``model.encoder(x)`` rather than ``model(x)``: a
        validation call between ``backward`` and ``Watch.step`` was pooled into the training
        pass). Before that backward such a call is part of the step and measured (without
        gradient rows): a frozen backbone a loop runs under ``no_grad`` before training the
        head (linear probing). ``no_grad`` parts inside a training forward of the model are
        measured too. Nor does a call of a shared module outside the model's forward
        count while another watched model's forward runs (a trunk shared by two models, each
        with a Watch: the second one's forward was pooled into the first one's pass; layer
        ``pre_std`` 1.28 where its own batch's is 1.64).

        A submodule call outside the model's forward, with gradients, after a backward has run
        through the pass (a metric on held-out data between ``backward`` and ``Watch.step``,
        gradients left on) opens a new pass, as a forward of the model does, and
        :meth:`settle` reads the last pass a backward ran through: it was pooled into the
        training pass (layer 1 ``pre_std`` 2.92 where the training batch's is 0.575). Not
        inside a backward: activation checkpointing recomputes a segment there, part of the
        pass being graded."""
        if self._model_idle:
            return True
        if _in_transform():  # torch.func's wrapped tensors: not measured (see above)
            return True
        if self._in_model:
            return False
        if any(r is not self for r in _FORWARDS) and _others_in_forward(self):
            return True
        if self.p.graded():
            if not torch.is_grad_enabled():
                return True
            if torch._C._current_graph_task_id() == -1:
                self._roll()
        elif self.p.whole and torch.is_grad_enabled() \
                and torch._C._current_graph_task_id() == -1:
            # a forward of the whole model ended in this pass and no backward ran through it
            # yet (a validation model(x_val) with gradients left on, before a loop's training
            # forward through its submodules, model.encoder(x)): another pass, pooled with it
            # only if one backward grades both (settle); the training pass was pooled with it
            self._roll()
        return False

    def arm(self) -> None:
        """Install the hooks (idempotent). Which module gets which hooks is worked out once the
        residual blocks are known (after the first armed pass) and reused: a plan's hooks are
        registered through ``register_forward_(pre_)hook`` once, and later arms put the same
        functions back under the same handle ids in the dicts those handles name (what
        registering does, without building new handles), in plan order."""
        if self._armed:
            return
        if self._in_model:  # (in _FORWARDS only while _in_model: see _model_pre)
            _FORWARDS.discard(self)
        self._in_model = self._model_idle = False  # a forward that raised left them set
        self._inner_calls.clear()  # (a forward that raised left its layer's call open)
        self._inner_taken.clear()
        plan = self._plan if self._plan is not None else self._hook_plan()
        if plan is self._slots_plan:
            for d, key, value in self._puts:  # hooks[key] = fn, then its marks, per slot
                d[key] = value
        else:
            self._handles = []
            for m, pre, post in plan:  # _Hook: copies of the model do not carry them
                # the hooks that read the module's input take its keyword arguments too
                # (blk(hidden=h), act(input=s): no block_grad_std, no act_* rows)
                if pre is not None:
                    kw = pre.__name__ in _READS_INPUT
                    pre = _Hook(pre)
                    self._handles.append((m.register_forward_pre_hook(pre, with_kwargs=kw),
                                          pre))
                if post is not None:
                    kw = post.__name__ in _READS_INPUT
                    always = post.__name__ in ("_holder_post", "_maps_post")
                    post = _Hook(post)
                    self._handles.append((m.register_forward_hook(
                        post, with_kwargs=kw, always_call=always), post))
            # (hooks dict, id, hook, the dicts that mark it a with_kwargs hook): disarm takes
            # the id out of both, arm puts it back
            self._slots = [(h.hooks_dict_ref(), h.id, fn,
                            tuple(d for d in (r() for r in h.extra_dict_ref)
                                  if d is not None and h.id in d))
                           for h, fn in self._handles]
            self._puts, self._pops = _puts_pops(self._slots)
            self._slots_plan = plan
        _ARMS[0] += 1
        self._armed = True
        # every hook just put in went to the end of its dict, in plan order: what _last does
        self._stamp = _hook_stamp()

    def _hook_plan(self) -> list[tuple[nn.Module, object, object]]:
        """``(module, pre-hook or None, hook or None)`` for every hook :meth:`arm` installs.
        The model's own hook comes last: a model that is itself a layer (``nn.Linear``,
        ``nn.GRU``, ``nn.MultiheadAttention``) is measured before the pass is closed."""
        model = self.model
        plan: list[tuple[nn.Module, object, object]] = [(model, self._model_pre, None)]
        self._inner_of.clear()
        for m in model.modules():
            key = id(m)
            if key in self._owners:
                # the pre-hook only numbers layers that produce no output of their own
                needs_pre = any(not info.has_output for info in self._owners[key])
                plan.append((m, self._layer_pre if needs_pre else None, self._layer_post))
                if not type(m).__module__.startswith("torch.") and any(
                        info.has_output for info in self._owners[key]):
                    returned = _returned_children(type(m))
                    inner = [c for n, c in m.named_children()
                             if n in returned and (self._spec(c) is not None or is_norm(c))]
                    if inner:  # a norm before the returned activation: where the map ends
                        inner += [c for c in m.children() if is_norm(c) and c not in inner]
                    if inner:
                        plan.append((m, self._inner_parent_pre, None))
                        self._inner_of.update((id(c), m) for c in inner)
            elif key in self._holders:  # (its hook runs even when its forward raises)
                plan.append((m, self._holder_pre, self._holder_post))
            if key in self._inner_of:
                plan.append((m, self._inner_pre, None))
            spec = self._spec(m)
            if spec is not None and spec.name == "relu":  # measured from its output alone
                plan.append((m, None, self._relu_post))
            elif spec is not None:
                plan.append((m, self._act_pre, self._act_post))
            elif is_norm(m):
                plan.append((m, self._norm_pre, self._norm_post))
            elif isinstance(m, _DROPOUTS):
                plan.append((m, None, self._dropout_post))
            elif isinstance(m, _SHUFFLES):
                plan.append((m, None, self._shuffle_post))
            elif isinstance(m, _RESAMPLES):
                plan.append((m, None, self._resample_post))
            has_children = next(iter(m.children()), None) is not None
            if (not self._blocks_found and has_children) or key in self.blocks:
                plan.append((m, self._block_pre, self._block_post))
        plan.append((model, None, self._model_post))
        if self._map_keys:  # (last: it ends the capture, also when the forward raised)
            plan.append((model, None, self._maps_post))
        if self._blocks_found:
            self._plan = plan
        return plan

    def _kernels(self) -> None:
        """Look up the compiled kernels for the coming pass: ``_wk`` is
        :mod:`depthlab.torch.kernels`, None on the torch operations' path."""
        self._wk = watch_kernels()

    def disarm(self) -> None:
        """Remove every hook (as ``handle.remove()`` does); the last pass's statistics stay
        readable."""
        if self._in_model:  # closed inside a forward that raised: not in one any more (in
            # _FORWARDS only while _in_model: see _model_pre)
            _FORWARDS.discard(self)
        self._holder_exit()
        self._maps_exit()
        if not self._armed:
            return
        for d, key in self._pops:  # its hook and marks per slot, as handle.remove() does
            d.pop(key, None)
        self._armed = False

    def _spec(self, m: nn.Module) -> ActivationSpec | None:
        key = id(m)
        if key not in self._specs:
            self._specs[key] = activation_spec(m)
        return self._specs[key]

    @contextlib.contextmanager
    def isolated(self, *also: object) -> Iterator[None]:
        """Within the block the model's buffers, mode, ``.grad`` tensors and the random number
        generators are saved; on exit they are restored and the hooks removed. ``also``: a loss
        module whose state (a call counter, a running average) is restored likewise
        (:func:`~depthlab.torch.layers.untouched`)."""
        grads = [(p, p.grad) for p in self.model.parameters()]
        try:
            with untouched(self.model, *also):
                yield
        finally:
            self.disarm()
            for p, g in grads:
                p.grad = g

    # -- pass bookkeeping ------------------------------------------------------------------
    def new_pass(self) -> None:
        """Start a new pass (the last one's accumulators are dropped): at every forward of the
        model, and by :class:`~depthlab.torch.watch.Watch` after each record, for training
        loops that call the model's submodules rather than the model. The passes of the
        forwards since the last call are dropped (see :meth:`settle`)."""
        self._earlier = []
        self.forwards = self.transformed = 0
        self._begin()

    def _begin(self) -> None:
        self.p = _Pass()
        self._last_run = 0
        self._copied.clear()  # (a forward that raised did not reach _model_post)
        self._carried.clear()
        self._saved_copies.clear()
        self._kernels()

    def settle(self, root: torch.autograd.graph.Node | None = None) -> None:
        """Make the pass to be read (``self.p``) the last forward of the model since
        :meth:`new_pass` through which a backward ran: a forward with gradients but no backward
        after the training step's (a validation pass in ``eval()`` mode without ``no_grad``,
        predictions for a metric) is not the training pass (it was: ``pre_*`` of the
        validation batch, no gradient rows). With no such forward, the last one stays.

        ``root``: the ``grad_fn`` of the loss being recorded. Where several forwards were
        graded, the last one whose output that loss's graph reaches is read: an input-gradient
        pass between ``loss.backward()`` and ``Watch.step(loss)`` (a saliency map's
        ``x.requires_grad_(); model(x).sum().backward()``) is not the training pass (it was:
        ``pre_std`` of the saliency batch, ``grad_pre_*`` of ``d sum / d s``). Idempotent;
        :meth:`collect` calls it."""
        self._settle(root)
        self.p.prefer_plain()

    def _settle(self, root: torch.autograd.graph.Node | None = None) -> None:
        earlier, self._earlier = self._earlier, []
        if not _any_graded(earlier):
            # (the usual record: the one earlier pass is the empty one begun after the last
            # record, which no backward graded) no earlier pass can be read or pooled: the
            # pass read is self.p, as the search below would conclude
            return
        chosen = len(earlier)
        if not self.p.graded():
            chosen = next((i for i in range(len(earlier) - 1, -1, -1) if earlier[i].graded()),
                          None)
            if chosen is None:
                return
        if root is not None:
            chosen = _loss_pass(root, [*earlier, self.p], chosen)
        if chosen < len(earlier):
            self.p = earlier[chosen]
            if self.p.input is not None:
                self.first_input = self.p.input
        # the forwards before it that no backward had graded when the next one began, graded
        # since (by the same backward: a siamese pair model(a), model(b) under one loss, a
        # watched submodule that the model calls in a loop) are pooled with it, as dlt.probe
        # pools a module's calls within one forward (the last forward alone was recorded:
        # one of the pair, the last of a cell's 6 calls); a forward no backward reached (a
        # detached target, a validation pass) is skipped, one graded before the next forward
        # (gradient accumulation, a backward per micro-batch) ends the run
        # (a pass only a create_graph backward had graded then, a gradient penalty's
        # interpolates forward before the real and fake ones, is pooled when the loss's
        # ordinary backward graded it too: its rows were left out; a loop whose only backwards
        # are create_graph ones, one per micro-batch, still ends the run there)
        for q in reversed(earlier[:chosen]):
            if not q.open:
                break
            if q.cg_only and (not q.plainly_graded() or q.swapped or self.p.swapped):
                break  # (MAML's inner forward, graded by the inner step's create_graph
                # backward, is not pooled with the adapted forward: another network's weights)
            if q.graded():
                self.p.merge(q)

    def drop_kept(self) -> None:
        """Drop the percentile values kept for pooling (see :meth:`settle`) when no other pass
        can be pooled with this one (``dlt.probe``'s single forward: the copies were held
        through the backward)."""
        if not any(q.pre or q.act or q.norm for q in self._earlier):
            self.p.release()

    def _last(self) -> None:
        """Move this recording's hooks behind every other hook of their modules, in plan order,
        so they see what the module hands on: its output after a user's forward hooks, its
        input after a user's pre-hooks. A user's hook registered after the hooks were armed
        (after ``Watch(model)``, which arms for step 0) ran after depthlab's at that record
        and before them from the next arm on (which re-inserts them at the end): a hook
        doubling a layer's output gave ``pre_std`` 0.207 at step 0 and 0.415 at step 2.
        Nothing to do when no hook was added anywhere since they were last put at the end
        (:func:`_hook_stamp`: a Watch's recorded forward after its arming call)."""
        if _hook_stamp() == self._stamp:
            return
        for hooks, key, fn, _ in self._slots:
            if hooks is not None and hooks.get(key) is fn:
                hooks.move_to_end(key)
        _ARMS[0] += 1  # (another recording on these modules puts its own last again)
        self._stamp = _hook_stamp()

    def _input(self, module: nn.Module, args: tuple, kwargs: dict
               ) -> tuple[torch.Tensor | None, int | str | None]:
        """``(x, where)``: the input a follower, block or the model reads (the first tensor of
        the positional arguments, ``where`` 0), else that of the keyword argument naming
        ``forward``'s first parameter (``act(input=s)``, ``blk(hidden=h)``; ``where`` its name;
        a ``forward(**kwargs)``: the first keyword argument holding a tensor); ``(None, None)``
        when there is none."""
        x = _first_tensor(args) if args else None
        if x is not None or not kwargs:
            return x, 0
        key = id(module)
        if key not in self._first_params:
            self._first_params[key] = _first_parameter(module)
        name = self._first_params[key][0]
        if name is not None:
            x = _first_tensor(kwargs.get(name))
            return (x, name) if x is not None else (None, None)
        for k, v in kwargs.items():
            x = _first_tensor(v)
            if x is not None:
                return x, k
        return None, None

    def _model_pre(self, module, args, kwargs) -> None:
        compiled = _compiled_call(module)
        if compiled:
            raise TypeError(compiled)
        self._last()
        self._outside.clear()  # (a forward that raised left its modules there)
        # a forward of the model without gradients (validation under no_grad/inference_mode
        # while armed) is not a training pass: its hooks return at once and the pass being
        # recorded stays the last training forward's (a validation between backward and
        # Watch.step replaced it, gradient rows lost)
        self._in_model = True  # (and in _FORWARDS: every place that sets it False takes it out)
        _FORWARDS.add(self)
        self._model_idle = not torch.is_grad_enabled() or _in_transform()
        if self._model_idle:
            self.transformed += _in_transform()
            return
        self.forwards += 1
        if self.want_input:
            # the model's input, for depthlab.torch.predict: the last training forward's (a
            # validation pass under no_grad/inference_mode before it is not the one recorded)
            self.input_seen = True
            x, where = self._input(module, args, kwargs)
            self.input_note = ""
            if isinstance(where, str) and not self._first_params[id(module)][1]:
                x = None  # keyword-only (forward(self, *, inputs)): predict calls model(x)
            elif x is not None and (len(args) + len(kwargs) > 1 or (args and x is not args[0])):
                # predict calls model(x): the theory of model(xs[0]) for forward(xs: list), of
                # model(a) without the call's other inputs (a scale, a mask) was another model's
                self.input_note = _call_note(args, kwargs)
                x = None
            self.first_input = None if x is None else x.detach().clone()
        self._roll()
        if self.want_input:
            self.p.input = self.first_input
        if self._map_keys:
            self._maps_exit()  # (a forward that raised where no hook could)
            self._cap = MapCapture(self._map_keys, lambda: self.numbered, self._tables)
            self._cap.__enter__()

    def _roll(self) -> None:
        """Keep the pass so far among the earlier ones (see :meth:`settle`) and begin another."""
        earlier = self._earlier
        p = self.p
        if self._tap_died[0] and earlier:
            # forwards with gradients but no backward whose graphs are gone (a validation
            # loop without no_grad while armed): none can be pooled or measured, and each kept
            # its partial sums, its percentile copies of every layer output and, before the
            # first record, a copy of its input, up to OPEN_PASSES of them (a 50-batch
            # validation of a small MLP held 201 MiB with percentiles)
            self._tap_died[0] = False
            earlier[:] = [q for q in earlier if q.gradeable()]
        plain = p.plainly_graded()
        graded = plain or p.graded()
        p.cg_only = not plain and graded
        p.open = not plain
        if graded:  # a later backward graded this pass and no ordinary one those only a
            # create_graph backward had (a loop whose backwards all take create_graph): closed
            for q in earlier:
                if q.open and q.cg_only and not q.plainly_graded():
                    q.open = False
        if self.percentiles and not p.open and not (earlier and earlier[-1].open):
            p.release()  # pooled with no other pass (see settle): its copies dropped
        if graded or not p.whole or p.tapped():  # (p.gradeable() or not p.whole: no gradient
            # hook at all, no backward reaches it)
            earlier.append(p)
        if len(earlier) > EARLIER_PASSES:  # gradient accumulation over many micro-batches
            # (while none is closed, the open passes are kept: a cell called in a loop, each
            # call a forward, is pooled; the oldest pass is never part of a later run)
            if len(earlier) > OPEN_PASSES or not all(q.open for q in earlier):
                del earlier[0]
        self._begin()

    def _model_post(self, module, args, output) -> None:
        if self._in_model:  # (in _FORWARDS only while _in_model: see _model_pre)
            _FORWARDS.discard(self)
        self._in_model = False
        if self._model_idle:
            self._model_idle = False
            return
        p = self.p
        p.whole = True
        p.swapped = _swapped(self._weight_slots)
        _mark_outputs(output, _serial(p))
        if p.links:  # activations the forward applies itself: F.relu(self.fc(x))
            record_functional(self, output)
        if self.percentiles:  # (the values kept until it is known whether an earlier or later
            p.freeze(self.percentiles, keep=True)  # forward is pooled with it: settle)
        # a layer output with gradients: the graph the residual-block search reads was there
        # (a model returning a dataclass, whose fields _needs_grad does not see, never
        # concluded: from the second record on, the container of its blocks was taken for a
        # block, a block_grad_std row of its own)
        graph = _links_need_grad(p.links)
        if self._outside:  # the sums of the model's own forward (h = h + blk(h) in a loop)
            self._caller_sums(_graph_nodes(output))
            self._outside.clear()
        p.links.clear()
        p.pending.clear()
        p.layouts.clear()
        p.fused.clear()
        p.block_inputs.clear()
        self._copied.clear()
        if graph or _needs_grad(output):  # any output: {"pred": argmax, "logits": ...} too
            # (the first alone never concluded: blocks re-searched each record, enclosing
            # containers taken for blocks)
            self._blocks_found = True
        self._claimed.clear()  # this pass's add nodes: not needed past it (kept its nodes alive)

    def _maps_exit(self) -> MapCapture | None:
        """Turn the capture off (the model's forward ended or raised); it is returned."""
        cap, self._cap = self._cap, None
        if cap is not None and torch.overrides._get_current_function_mode() is cap:
            cap.__exit__(None, None, None)
        return cap

    def _maps_post(self, module, args, output) -> None:
        """The end of the model's forward (or its exception, output None): the capture off,
        its maps kept in the pass, detached, each with a gradient hook that keeps ``dL/ds``
        (a Watch sees the user's own ``loss.backward()``); no graph is held."""
        cap = self._maps_exit()
        if cap is None or output is None:
            return
        maps = self.p.maps if self.p.maps is not None else []
        for key, s, at in cap.calls:
            self._map_at.setdefault(key, at)
            slot: list = [None]
            if s.requires_grad:
                s.register_hook(functools.partial(_keep_grad, slot))
            maps.append([key, s.detach(), slot])
        self.p.maps = maps

    def _add_maps(self, weight_grads: dict | None) -> None:
        """The last pass's columns (``values``, ``layout``) with the layers of its maps, as
        :func:`depthlab.torch.probe` gives them (:func:`~depthlab.torch.probe._replaced`,
        :func:`~depthlab.torch.probe._with_maps`); a replaced layer measured at one map keeps
        its ``update_ratio`` row there. The first such pass fixes which weights are watched
        from then on (those measured as maps; none: the capture is off for good)."""
        from .probe import _replaced, _untied, _with_maps

        previous, self.map_previous = self.map_previous, {}
        maps = self.p.maps
        calls = _untied([[k, s, self._map_at.get(k, self.numbered)] for k, s, _ in maps],
                        self._tables, self.order)
        grads: dict[int, torch.Tensor | None] = {id(s): g[0] for _, s, g in maps}
        grads.update((k, _weight_grad(w, weight_grads)) for k, (_, w) in self._loose.items())
        rows = self._rows()
        calls, gone = _replaced(rows, calls, self._candidates)
        if not self._maps_learned:
            self._maps_learned = True
            self._map_keys = {c[0]: c[0] for c in calls}
            if not self._map_keys:
                self._plan = None  # (the next arm installs a plan without _maps_post)
        if not calls:
            return
        ratios = [(gone[i], v) for i, _, q, v in rows if q == "update_ratio" and gone.get(i)]
        rows = _with_maps(rows, self, calls, self._loose, grads, gone, self.percentiles)
        if ratios:
            at = {m: i for i, m, q, _ in rows if q == "pre_mean"}
            rows += [(at[m], m, "update_ratio", v) for m, v in ratios if m in at]
            rows.sort(key=lambda r: r[0])
        if previous:
            rows = _map_ratios(rows, {self._loose[c[0]][0]: [] for c in calls}, self._loose,
                               previous)
        layers, modules, quantities, values = zip(*rows)
        self.layout = (layers, modules, quantities)
        self.values = list(values)
        self.mapped = True
        at = {m: i for i, m, q, _ in rows if q == "weight_std"}
        names = {k: self._loose[k][0] for k in {c[0] for c in calls}}
        names.update((id(w), gone[info.index]) for info in self.order if gone.get(info.index)
                     for w in info.weights if id(w) in names)
        self._weights_at = {}
        for info in self.order:
            if info.index not in gone and info.name in at:
                self._weights_at.setdefault(at[info.name], set()).update(map(id, info.weights))
        for k, name in names.items():
            if name in at:
                self._weights_at.setdefault(at[name], set()).add(k)

    def unscaled_layers(self, unscaled: set[int]) -> set[int]:
        """The layer numbers of the last record with map layers whose weights are among
        ``unscaled`` (``id(parameter)``)."""
        return {i for i, ws in self._weights_at.items() if ws & unscaled}

    def _number(self, info: LayerInfo) -> int:
        if info.index == 0:
            self.numbered += 1
            info.index = self.numbered
            self.order.append(info)
        self._last_run = info.index
        return info.index

    def _acc(self, table: dict, index: int) -> Acc:
        """The accumulator (with percentiles when requested) of a layer or follower output."""
        acc = table.get(index)
        if acc is None:
            acc = table[index] = Acc(want_sorted=bool(self.percentiles))
        return acc

    def _grad_hook(self, table: dict, index: int, aside: dict):
        k = self._wk
        tasks = self.p.tasks

        def hook(g: torch.Tensor) -> None:
            tasks.add(_task_id())
            t = aside if torch.is_grad_enabled() else table  # create_graph: see _Pass.grad_cg
            acc = t.get(index)
            if acc is None:
                acc = t[index] = Acc(want_abs=True)
            acc.add_plain(g, k)
        return hook

    def _watch_grad(self, out: torch.Tensor, table: dict, index: int) -> None:
        """Have ``dL/d out`` added to ``table[index]`` during backward. A non-view output with a
        ``grad_fn`` gets a pre-hook on that node (its gradient input number ``output_nr``, the
        value before any later in-place change, as a tensor hook would see it), which is
        cheaper to install than a tensor hook; other outputs get a tensor hook. A view of the
        whole of a tensor (``nn.Linear`` on a sequence returns its matmul's output reshaped; a
        batch-first attention output is a transpose) is watched at that tensor's node, whose
        gradient holds the same entries: a tensor hook on the view never fired once the view
        was changed in place (``nn.ReLU(inplace=True)``, ``h.mul_(2)``), which left such a
        layer without ``grad_pre_*`` rows."""
        view = out._is_view()
        base = out._base if view else None
        if base is not None and base.grad_fn is not None and base.numel() == out.numel():
            out, view = base, False  # (a view's _base is never a view itself)
        fn = out.grad_fn
        p = self.p  # a create_graph backward's table (grad mode on in its hooks): p.aside
        aside = p.grad_cg if table is p.grad else p.block_grad_cg
        # no hook added since ours were put last (_hook_stamp() inline)
        fresh = self._stamp == (RemovableHandle.next_id, _ARMS[0])
        if fn is None or view:
            hook = self._grad_hook(table, index, aside)
            out.register_hook(hook)
            self._tap(hook, fresh)
            return
        self._watch_node(fn, out.output_nr, table, index, aside, fresh)

    def _watch_node(self, fn, slot: int, table: dict, index: int, aside: dict | None = None,
                    fresh: bool | None = None) -> None:
        """Have the gradient input number ``slot`` of the autograd node ``fn`` (``dL/d`` its
        output number ``slot``) added to ``table[index]`` during backward."""
        if aside is None:
            aside = self.p.aside(table)
        if fresh is None:
            fresh = self._stamp == _hook_stamp()
        k = self._wk
        tasks = self.p.tasks

        def prehook(grad_outputs: tuple) -> None:
            g = grad_outputs[slot]
            if g is not None:
                tasks.add(_task_id())
                t = aside if torch.is_grad_enabled() else table
                acc = t.get(index)
                if acc is None:
                    acc = t[index] = Acc(want_abs=True)
                acc.add_plain(g, k)
        fn.register_prehook(prehook)
        self._tap(prehook, fresh)
        if not self._in_model:  # a submodule called outside the model's forward: its pass is
            # told by its layers' nodes in a loss's graph (_loss_pass)
            _mark(fn, _serial(self.p))

    def _tap(self, hook, fresh: bool = False) -> None:
        """Note a gradient hook of the pass (held by the autograd graph; see _Pass.taps), just
        registered. Its handle advanced ``RemovableHandle.next_id``; ``fresh`` (the stamp of
        :meth:`_last` was current right before): the stamp moves past it, since a tensor or
        node hook is put behind no module hook (every record re-ordered the module hooks at
        the next forward for the gradient hooks of the one before: every=1)."""
        self.p.taps.append(weakref.ref(hook, self._on_tap_died))
        if fresh:
            self._stamp = _hook_stamp()

    # -- weight layers ---------------------------------------------------------------------
    def _transformed_in_model(self) -> bool:
        """Whether the call in progress runs inside a ``torch.func`` transform that the
        model's own forward (with gradients) opened: ``torch.vmap(lambda r: self.fc(r))(x)``
        inside ``forward``. Such a layer is measured on the ordinary tensor under vmap's
        wrapper (all vmapped calls, pooled): it was skipped as :attr:`_idle`, so it had no
        number and no row at all, not even its weights'."""
        return self._in_model and not self._model_idle and _in_transform()

    def _holder_pre(self, module, args) -> None:
        """A module owning a >= 2-dim parameter beside child layers starts its forward: the
        :class:`~depthlab.torch.layers.MapWatch` mode is on (from the outermost such call)
        until its forward ends (:meth:`_holder_post`)."""
        key = id(module)
        if key not in self._holders:
            return
        self._holder_active.append(key)
        if self._holder_mode is None:
            active = self._holder_active
            self._holder_mode = MapWatch(self._holder_params, active.__contains__)
        if len(self._holder_active) == 1:
            self._holder_mode.__enter__()

    def _holder_exit(self) -> None:
        """Turn the mode off (the outermost holder's forward ended, or a disarm found it on
        after a forward that raised where no hook could)."""
        self._holder_active.clear()
        mode = self._holder_mode
        if mode is not None and torch.overrides._get_current_function_mode() is mode:
            mode.__exit__(None, None, None)

    def _holder_post(self, module, args, output) -> None:
        """The end of a holder's forward (or its exception, output None): it is a layer if one
        of its own weights was a linear map's in that forward (a LoRA's frozen ``F.linear(x,
        self.weight)`` beside its adapters, CLIP's ``x @ self.proj``): it joins the layers,
        is numbered and measured now, as a layer's own hook would have, and
        :data:`~depthlab.torch.layers.MAPPED` keeps it one for later recordings. Otherwise
        (its parameters only added, multiplied or indexed: ViT's position table, a LayerScale
        gain, Swin's bias table) it is none and no longer watched."""
        key = id(module)
        if key in self._owners:  # made a layer earlier in this arming
            self._layer_post(module, args, output)
            return
        if key not in self._holders or key not in self._holder_active:
            return
        active = self._holder_active
        del active[len(active) - 1 - active[::-1].index(key)]
        mode = self._holder_mode
        seen = mode.seen.pop(key, set()) if mode is not None else set()
        used = bool(seen)
        if not active:
            self._holder_exit()
        if output is None and not used:  # raised before telling: asked again next time
            return
        info = self._holders.pop(key)
        self._holder_params = {k: v for k, v in self._holder_params.items() if v != key}
        if mode is not None:
            mode.params = self._holder_params
        self._plan = None  # the next arming hooks it as a layer, or not at all
        if not used:
            return
        own = dict(layer_weights(module))
        MAPPED[module] = frozenset(n for n, w in own.items() if id(w) in seen)
        info.weights = [w for w in info.weights if id(w) in seen] or info.weights
        self.layers.append(info)
        self.grown = True
        self._owners.setdefault(key, []).append(info)
        w = info.weights[0]
        for n, q in module._parameters.items():
            if q is w:
                self._weight_slots.append((module, n, q))
                break
        if output is not None:
            self._layer_post(module, args, output)

    def _layer_pre(self, module, args) -> None:
        # (``self._idle`` with its first tests inline: in the model's forward, the usual case,
        # its answer without the property's and _in_transform's frames; see _layer_post)
        if (self._model_idle or _PEEK is not None and _PEEK() is not None
                or not self._in_model and self._idle) and not self._transformed_in_model():
            return
        for info in self._owners[id(module)]:
            if not info.has_output:
                self._number(info)
                info.calls += 1

    def _layer_post(self, module, args, output) -> None:
        # ``self._idle`` (the same tests in its order, the same side effects): it answers
        # True for _model_idle or a torch.func transform, False in the model's forward
        if self._model_idle or _PEEK is not None and _PEEK() is not None \
                or not self._in_model and self._idle:
            if self._transformed_in_model() and _NO_FUNCTORCH is not None:
                with _NO_FUNCTORCH():  # ordinary operations on the ordinary tensor
                    self._layer_output(module, args, _plain(_first_tensor(output)))
            return
        self._layer_output(module, args, output)

    def _layer_output(self, module, args, output) -> None:
        if self._inner_taken:
            key = id(module)
            taken = self._inner_taken.get(key, 0)
            if taken:  # measured at its activation child's input (_inner_pre)
                self._inner_taken[key] = taken - 1
                return
            self._inner_calls.pop(key, None)
        out = output if type(output) is torch.Tensor else _first_tensor(output)
        p = self.p
        for info in self._owners[id(module)]:
            if not info.has_output:
                continue
            index = info.index or self._number(info)
            self._last_run = index
            info.calls += 1
            if out is None or not out.is_floating_point():
                continue
            if out.is_nested:  # nn.TransformerEncoder's fast path with a padding mask (eval
                # mode, frozen weights; a validation pass without gradients is _idle): the
                # valid positions' values, flat (no gradient, no followers to match)
                out = torch.cat([t.reshape(-1) for t in out.unbind()])
            elif id(info) not in self._axes:  # a custom conv's units: its channels
                self._axes.add(id(info))
                info.feature_axis = output_feature_axis(
                    info.owner, info.weights, _first_tensor(args) if args else None, out)
            if p.device is None:
                p.device = out.device
            acc = p.pre.get(index)
            if acc is None:
                acc = p.pre[index] = Acc(want_sorted=bool(self.percentiles))
            relu = self._relu_of.get(id(info))
            if relu is None or not self._fuse(out, info, acc, relu):
                acc.add(out, None, self._wk)
            p.links[id(out)] = (out, _ver(out), info, "layer")
            if out.requires_grad and not (self._copied and self._from_copy(module, args, out)):
                self._watch_grad(out, p.grad, index)

    def _inner_parent_pre(self, module, args, kwargs) -> None:
        if self._idle:
            return
        self._inner_calls[id(module)] = (args, kwargs)

    def _inner_pre(self, module, args, kwargs) -> None:
        """The activation (or normalization) child of a layer module of the user's own class,
        called inside its forward on the output of its map (a Keras-style ``Dense`` returning
        ``self.act(F.linear(x, self.W, self.b))``, or ``self.act(self.bn(...))``): the layer's
        output is measured here, at that child's input, as for ``Linear -> ReLU`` (its
        ``pre_*`` rows were of the activation's output, ``pre_p15`` 0.0 after a ReLU, with no
        ``act_*``, ``dead_frac`` or ``inactive_frac`` rows); the layer's own hook then takes
        nothing. Only for the first such call in a call of the layer, and not on the layer's
        own input (an activation or norm before its map)."""
        if self._idle:
            return
        parent = self._inner_of.get(id(module))
        call = self._inner_calls.get(id(parent)) if parent is not None else None
        if call is None:
            return
        s = args[0] if args and type(args[0]) is torch.Tensor else \
            self._input(module, args, kwargs)[0]
        if not isinstance(s, torch.Tensor) or self._source(s) is not None:
            return
        given = {id(t) for t in _input_tensors(call)}
        if id(s) in given or (s._is_view() and id(s._base) in given):
            return
        del self._inner_calls[id(parent)]
        self._layer_output(parent, call[0], s)
        self._inner_taken[id(parent)] = self._inner_taken.get(id(parent), 0) + 1

    def _from_copy(self, module: nn.Module, args: tuple, out: torch.Tensor) -> bool:
        """Whether ``out`` of a frozen ``module`` requires grad only because its input is a
        copy :meth:`_input_node` made (a LoRA's frozen ``base(x)`` in ``base(x) + B(A(x))``):
        it had ``grad_pre_*`` rows in that first armed pass alone (a ``Watch``'s step 0; not in
        ``dlt.probe``, whose gradients reach the weights only)."""
        x = _first_tensor(args) if args else None
        if x is None or id(x) not in self._copied or any(
                q.requires_grad for q in module.parameters()):
            return False
        self._copied.add(id(out))  # a frozen layer after it: likewise
        return True

    def _fuse(self, out: torch.Tensor, info: LayerInfo, acc: Acc, relu: int) -> bool:
        """Measure the layer output ``out`` for its ``pre_*`` and, in the same pass, for the
        ``nn.ReLU`` (module id ``relu``) that took it in the last pass
        (:func:`depthlab.torch.kernels.layer_relu`); the ReLU's hook takes those sums if it
        reads this very tensor, unchanged (:meth:`_relu_post`). False (nothing done) where the
        kernels do not apply: no CPU kernels, not a plain contiguous CPU float tensor, units
        not on its last axis, no entries."""
        wk = self._wk
        if wk is None or self.percentiles or out.dim() == 0 or not _host_float(out) \
                or info.feature_axis % out.dim() != out.dim() - 1 or not out.is_contiguous():
            return False
        units = out.shape[-1]
        n = out.numel()
        if n == 0:
            return False
        alive = np.zeros(units, dtype=bool)
        if out.is_neg():  # (a negative view's memory holds -x: .numpy() refuses it)
            p1, p2, r1, r2, z = wk.layer_relu(out.detach().numpy().reshape(-1, units), alive)
        else:  # by address: no NumPy view to build and unbox (the same compiled pass)
            p1, p2, r1, r2, z = wk.layer_relu_at(out.data_ptr(), n // units, units,
                                                 _LIKE[out.dtype], alive)
        acc.add_sums(out, n, p1, p2)
        self.p.fused[relu] = (out, _ver(out), info, (n, r1, r2, z, alive))
        return True

    # -- followers -------------------------------------------------------------------------
    def _source(self, x: torch.Tensor | None) -> tuple[LayerInfo, str] | None:
        if x is None:
            return None
        hit = self.p.links.get(id(x)) or self._hooked_link(x) or self._view_link(x) \
            or self._resampled_link(x)
        if hit is None or hit[0] is not x or hit[1] != _ver(x):
            return None
        return hit[2], hit[3]

    def _view_link(self, x: torch.Tensor, ahead: int = 0) -> tuple | None:
        """The link of a layer (or norm) output that ``x`` is a reshaped or permuted view of
        (``nn.Unflatten``, ``.view``, ``nn.Flatten``, ``.transpose`` between a layer and its
        activation or norm: the same entries, so the follower is the layer's; it had no
        ``act_*`` rows). Linked under ``x``, with the map of a tensor of ``x``'s shape into the
        layer output's layout (:func:`_relayout`) in ``p.layouts``, so ``dead_frac`` counts
        the layer's units. None for other views (a slice: part of the output). ``ahead``: 1
        for the output of an in-place activation (the version counter one on)."""
        if not x._is_view():
            return None
        p = self.p
        base = x._base
        hit = p.links.get(id(base))
        hits = (hit,) if hit is not None and hit[0] is base else \
            [h for h in p.links.values() if h[0]._is_view() and h[0]._base is base]
        for hit in hits:
            t = hit[0]
            if hit[3] not in ("layer", "norm") or hit[1] != -1 and hit[1] + ahead != _ver(x):
                continue
            fn = _relayout(x, t)
            if fn is None:
                continue
            inner = p.layouts.get(id(t))  # t itself a reshaped norm output
            if inner is not None:
                fn = functools.partial(_compose, inner, fn)
            link = p.links[id(x)] = (x, *hit[1:])
            p.layouts[id(x)] = fn
            return link
        return None

    def _hooked_link(self, x: torch.Tensor) -> tuple | None:
        """The link of an output that a user's ``register_full_backward_hook`` on its module
        replaced by a view (``BackwardHookFunction``, after the forward hooks ran): the
        follower reads the view, same values and version counter; without this its ``act_*``,
        ``saturated_frac`` and ``dead_frac`` rows were missing."""
        fn = x.grad_fn
        if fn is None or fn.name() != "BackwardHookFunctionBackward":
            return None
        nexts = fn.next_functions
        if x.output_nr >= len(nexts):
            return None
        src, nr = nexts[x.output_nr]
        if src is None:
            return None
        for hit in self.p.links.values():
            if hit[0].grad_fn is src and hit[0].output_nr == nr:
                return (x, *hit[1:])
        return None

    def _resampled_link(self, x: torch.Tensor) -> tuple | None:
        """The link of ``u = F.interpolate(s)`` (an ``Upsample*Backward`` node reading a layer
        or norm output ``s``, unchanged since its layer) taken by an activation or norm
        module: ``u`` is linked to that layer (and ``s`` taken), as an ``nn.Upsample``
        module's output is (:meth:`_resample_post`, whose conditions apply: the channel axis
        kept, ``s`` no reshaped view). Found in the autograd graph: None without one
        (``torch.no_grad``) and for a ``u`` changed in place since (its node not the
        upsampling's)."""
        fn = x.grad_fn
        if fn is None or not _UPSAMPLE_NODE.fullmatch(fn.name()) or not fn.next_functions:
            return None
        src, nr = fn.next_functions[0]
        if src is None or x.dim() < 3:
            return None
        p = self.p
        for hit in list(p.links.values()):
            t = hit[0]
            if t.grad_fn is not src or t.output_nr != nr:
                continue
            if hit[3] not in ("layer", "norm") or hit[1] != -1 and _ver(t) != hit[1] \
                    or t.dim() != x.dim() or t.shape[:2] != x.shape[:2] \
                    or hit[2].feature_axis % x.dim() > 1 or (p.layouts and id(t) in p.layouts):
                return None
            p.links[id(t)] = (t, hit[1], hit[2], "taken")
            link = p.links[id(x)] = (x, _ver(x), hit[2], hit[3])
            self._carried[id(x)] = x
            return link
        return None

    def _norm_pre(self, module, args, kwargs) -> None:
        if self._idle:
            return
        x = args[0] if args and type(args[0]) is torch.Tensor else \
            self._input(module, args, kwargs)[0]
        src = self._source(x)
        if src is not None and src[1] == "layer":
            p = self.p
            p.pending[id(module)] = src[0]
            p.links[id(x)] = (x, _ver(x), src[0], "taken")  # one follower per output
            if p.layouts:
                fn = p.layouts.get(id(x))
                if fn is not None:
                    p.layouts[id(module)] = fn

    def _norm_post(self, module, args, output) -> None:
        if self._idle:
            return
        info = self.p.pending.pop(id(module), None)
        out = _first_tensor(output)
        if info is None or out is None:
            return
        info.norm = self._names.get(id(module))
        p = self.p
        self._acc(p.norm, info.index).add(out, None, self._wk)
        p.links[id(out)] = (out, _ver(out), info, "norm")
        if p.layouts:
            fn = p.layouts.pop(id(module), None)
            if fn is not None:  # a norm of a reshaped layer output: its output alike
                p.layouts[id(out)] = fn

    def _dropout_post(self, module, args, kwargs, output) -> None:
        """A dropout module (``nn.Dropout``, ``AlphaDropout``, ``FeatureAlphaDropout``,
        ``Dropout1d/2d/3d``) between a layer (or its norm) and the activation: in training mode
        its output, ``m * s / (1 - p)`` (or alpha dropout's ``a (m s + (1 - m) alpha') + b``),
        is what the activation takes, so the output is linked to the layer as the dropped
        tensor was: ``act_*``, ``saturated_frac``, ``inactive_frac`` and ``dead_frac`` are of
        the activation module's output (``Linear -> Dropout -> ReLU`` had none;
        ``Linear -> BatchNorm1d -> Dropout -> Tanh`` had act_* of the norm's output, act_std
        1.0 for the Tanh's 0.56). ``pre_*`` stay the layer's own output. In eval mode (the
        input returned as is) nothing changes; in place (``inplace=True``) the link moves to
        the dropped version."""
        if self._idle:
            return
        x = args[0] if args and type(args[0]) is torch.Tensor else \
            self._input(module, args, kwargs)[0]
        out = output if type(output) is torch.Tensor else None
        if type(x) is not torch.Tensor or out is None or x.is_nested or out.is_nested \
                or out.shape != x.shape:  # (a nested tensor: a transformer's fast path)
            return
        p = self.p
        ahead = int(out is x)
        hit = p.links.get(id(x)) or self._hooked_link(x)
        if hit is None and x._is_view():
            hit = self._view_link(x, ahead)
        if hit is None and not ahead:
            hit = self._resampled_link(x)
        if hit is None or hit[0] is not x or hit[3] not in ("layer", "norm") \
                or hit[1] != -1 and _ver(x) != hit[1] + ahead:
            return  # (also eval mode: the same tensor, unchanged, still linked)
        if out is not x:  # the output's one follower (see _act_pre)
            p.links[id(x)] = (x, hit[1], hit[2], "taken")
        p.links[id(out)] = (out, _ver(out), hit[2], hit[3])
        self._carried[id(out)] = out
        if p.layouts:
            fn = p.layouts.get(id(x))
            if fn is not None:  # a dropout of a reshaped layer output: its output alike
                p.layouts[id(out)] = fn

    def _shuffle_post(self, module, args, kwargs, output) -> None:
        """A ``nn.PixelShuffle(r)`` (``nn.PixelUnshuffle(r)``, ``nn.ChannelShuffle(g)``:
        ShuffleNet) of a layer or norm output (an
        ESPCN/SRGAN upsampler: ``Conv -> PixelShuffle(2) -> PReLU``): its output, a new tensor
        holding the same entries, is linked to that layer, with the map of a tensor of its
        shape back into the layer output's layout (``pixel_unshuffle``/``pixel_shuffle`` by
        ``r``: entry ``(c, h r + i, w r + j)`` is the layer's channel ``c r^2 + i r + j``), so
        the activation after it gives the layer its ``act_*``, ``inactive_frac`` and
        ``dead_frac`` rows (per layer channel); they were missing. ``pre_*`` stay the layer's
        own output; no fused ReLU pass through it (``_carried``)."""
        if self._idle:
            return
        x = args[0] if args and type(args[0]) is torch.Tensor else \
            self._input(module, args, kwargs)[0]
        out = output if type(output) is torch.Tensor else None
        if type(x) is not torch.Tensor or out is None or out is x or x.is_nested \
                or out.is_nested or out.numel() != x.numel() or x.dim() < 3:
            return
        p = self.p
        hit = p.links.get(id(x)) or self._hooked_link(x)
        if hit is None and x._is_view():
            hit = self._view_link(x)
        if hit is None or hit[0] is not x or hit[3] not in ("layer", "norm") \
                or hit[1] != -1 and _ver(x) != hit[1]:
            return
        if isinstance(module, nn.PixelShuffle):
            back = functools.partial(nn.functional.pixel_unshuffle,
                                     downscale_factor=module.upscale_factor)
        elif isinstance(module, nn.PixelUnshuffle):
            back = functools.partial(nn.functional.pixel_shuffle,
                                     upscale_factor=module.downscale_factor)
        else:  # ChannelShuffle(g): undone by channel_shuffle with C / g groups
            back = functools.partial(nn.functional.channel_shuffle,
                                     groups=x.shape[1] // module.groups)
        inner = p.layouts.get(id(x)) if p.layouts else None
        p.links[id(x)] = (x, hit[1], hit[2], "taken")
        p.links[id(out)] = (out, _ver(out), hit[2], hit[3])
        self._carried[id(out)] = out
        p.layouts[id(out)] = back if inner is None else functools.partial(_compose, inner,
                                                                           back)

    def _resample_post(self, module, args, kwargs, output) -> None:
        """An ``nn.Upsample`` (nearest, linear, bilinear, bicubic, trilinear; ``size`` or
        ``scale_factor``) of a convolution's (or its norm's) output ``s`` before the
        activation (``Conv -> Upsample -> ReLU``, a decoder's upsampling stage): the activation
        reads ``u = interpolate(s)``, a new tensor of other spatial size whose channels are the
        layer's, so ``u`` is linked to the layer and the activation after it gives the layer
        its ``act_*`` (of ``f(u)``, that module's output), ``saturated_frac`` and
        ``inactive_frac`` (of ``u``, its input) and ``dead_frac`` (channels with
        ``f'(u) == 0`` everywhere) rows; they were missing. Only where the layer's units are a
        channel axis the interpolation keeps (axis 0 or 1 of ``s``: not a Linear's last axis,
        which it would resample) and ``s`` is no reshaped view of the layer output. ``pre_*``
        stay the layer's own output; no fused ReLU pass through it (``_carried``)."""
        if self._idle:
            return
        x = args[0] if args and type(args[0]) is torch.Tensor else \
            self._input(module, args, kwargs)[0]
        out = output if type(output) is torch.Tensor else None
        if type(x) is not torch.Tensor or out is None or out is x or x.is_nested \
                or out.is_nested or x.dim() < 3 or out.dim() != x.dim() \
                or out.shape[:2] != x.shape[:2]:
            return
        p = self.p
        if p.layouts and id(x) in p.layouts:
            return
        hit = p.links.get(id(x)) or self._hooked_link(x)
        if hit is None or hit[0] is not x or hit[3] not in ("layer", "norm") \
                or hit[1] != -1 and _ver(x) != hit[1] or hit[2].feature_axis % x.dim() > 1:
            return
        p.links[id(x)] = (x, hit[1], hit[2], "taken")
        p.links[id(out)] = (out, _ver(out), hit[2], hit[3])
        self._carried[id(out)] = out

    def _act_pre(self, module, args, kwargs) -> None:
        if self._idle:
            return
        s = args[0] if args and type(args[0]) is torch.Tensor else \
            self._input(module, args, kwargs)[0]
        src = self._source(s)
        if src is None or src[1] not in ("layer", "norm"):
            return
        info = src[0]
        p = self.p
        # the output's one follower: a second activation module reading it (a gate,
        # tanh(h) * sigmoid(h)) was pooled with the first (act_std of neither)
        p.links[id(s)] = (s, _ver(s), info, "taken")
        acc = p.act.get(info.index)
        if acc is None:
            acc = p.act[info.index] = ActAcc(Acc(want_sorted=bool(self.percentiles)))
        spec = self._spec(module)
        if spec.name != "relu":
            acc.add_derivative(s, spec, info.feature_axis,
                               p.layouts.get(id(s)) if p.layouts else None)
        p.pending[id(module)] = info

    def _act_post(self, module, args, output) -> None:
        if self._idle:
            return
        info = self.p.pending.pop(id(module), None)
        out = _first_tensor(output)
        if info is None or out is None:
            return
        info.activation = self._names.get(id(module))
        acc = self.p.act[info.index]
        acc.follower(module)
        spec = self._spec(module)
        total = (acc.add_relu_output(out, spec, info.feature_axis, self._wk)
                 if spec.name == "relu" else None)
        acc.out.add(out, total, self._wk)
        self.p.links[id(out)] = (out, _ver(out), info, "act")

    def _relu_post(self, module, args, kwargs, output) -> None:
        """A ReLU needs no pre-hook: its input is linked to a layer here, where an in-place
        ReLU has returned that very tensor with its version counter one higher."""
        if self._model_idle or _PEEK is not None and _PEEK() is not None \
                or not self._in_model and self._idle:  # self._idle (see _layer_post)
            return
        out = output if type(output) is torch.Tensor else _first_tensor(output)
        x = args[0] if args and type(args[0]) is torch.Tensor else \
            self._input(module, args, kwargs)[0]
        if out is None or x is None:
            return
        p = self.p
        fused = p.fused.pop(id(module), None) if p.fused else None
        # another forward hook on this ReLU (the user's, or a global one) may change what it
        # returns: its output is then not relu(x), so the counts come from its input
        other = _other_forward_hooks(module)
        if fused is not None:
            if fused[0] is x and not other and (fused[1] == -1
                                                or x._version == fused[1] + (x is out)):
                info = fused[2]
                acc = p.act.get(info.index)
                if acc is None:
                    acc = p.act[info.index] = ActAcc(Acc())
                info.activation = self._names.get(id(module))
                acc.follower(module)
                n, r1, r2, z, alive = fused[3]
                acc.add_relu_counts(n, z, alive, self._spec(module))
                acc.out.add_sums(out, out.numel(), r1, r2)
                if x is not out:  # (in place: its link is the ReLU's now)
                    p.links[id(x)] = (x, fused[1], info, "taken")
                p.links[id(out)] = (out, _ver(out), info, "act")
                return
            self._relu_of.pop(id(fused[2]), None)  # it read another tensor: not fused again
        # in place: x is out, one version on (or, with another hook that replaced the
        # output, x is the ReLU's own output and out the hook's)
        ahead = int(x is out or (other and getattr(module, "inplace", False)))
        hit = p.links.get(id(x)) or self._hooked_link(x)
        if hit is None and x._is_view():
            hit = self._view_link(x, ahead)
        if hit is None and not ahead:  # (in place: x's node is the ReLU's now)
            hit = self._resampled_link(x)
        if hit is None or hit[0] is not x or hit[3] not in ("layer", "norm") \
                or hit[1] != -1 and x._version != hit[1] + ahead:
            return
        info = hit[2]
        acc = p.act.get(info.index)
        if acc is None:
            acc = p.act[info.index] = ActAcc(Acc(want_sorted=bool(self.percentiles)))
        info.activation = self._names.get(id(module))
        acc.follower(module)
        spec = self._spec(module)
        if x is not out:  # the output's one follower (see _act_pre)
            p.links[id(x)] = (x, hit[1], info, "taken")
        layout = p.layouts.get(id(x)) if p.layouts else None
        if other:  # (an in-place ReLU's x is its output as relu left it, before such hooks)
            acc.add_derivative(x, spec, info.feature_axis, layout)
            acc.out.add(out, None, self._wk)
            p.links[id(out)] = (out, _ver(out), info, "act")
            if ahead and x is not out:  # the relu's node: no activation of the forward's own
                p.links[id(x)] = (x, _ver(x), info, "act")
            return
        if layout is not None:  # a reshaped layer output: units in the layer's layout
            acc.out.add(out, acc.add_relu_output(layout(out), spec, info.feature_axis, None))
            p.links[id(out)] = (out, _ver(out), info, "act")
            return
        acc.out.add(out, acc.add_relu_output(out, spec, info.feature_axis, self._wk))
        p.links[id(out)] = (out, _ver(out), info, "act")
        if hit[3] == "layer" and hit[1] != -1 and self._carried.get(id(x)) is not x:
            # the next pass measures both in one read (not through a dropout)
            self._relu_of[id(info)] = id(module)

    # -- residual blocks -------------------------------------------------------------------
    def _block_pre(self, module, args, kwargs) -> tuple | None:
        if self._idle:
            return None
        x, where = self._input(module, args, kwargs)
        fn = x.grad_fn if x is not None else None
        new = None
        if fn is None and x is not None and module is not self.model and (
                not self._blocks_found or id(module) in self._saved_copies):
            fn, new = self._input_node(module, x, args, kwargs, where)
        elif fn is None and x is not None and x.requires_grad:  # a leaf (x + blk(x) in the
            # caller is matched by this node at every pass, _caller_sums)
            fn = torch.autograd.graph.get_gradient_edge(x).node
        self.p.block_inputs.setdefault(id(module), []).append(fn)
        return new

    def _input_node(self, module, x: torch.Tensor, args: tuple, kwargs: dict,
                    where: int | str | None) -> tuple:
        """``(node, args or None)`` for the residual-block search when the input ``x`` has no
        ``grad_fn`` (the first armed pass only): a leaf that requires grad is found through its
        ``AccumulateGrad`` node; an input without gradient (the raw data going into the
        model's first ``TransformerEncoderLayer`` or residual block) is replaced by an equal
        copy that requires grad (the block's forward computes the same values), whose node
        the skip path reaches; without it ``y = x + F(x)`` was not a block there (no
        ``block_grad_std`` row). Only for modules with trainable parameters, so frozen parts
        stay without gradients. The copy changes what autograd saves, and non-reentrant
        activation checkpointing (``checkpoint(..., use_reentrant=False)``, whose forward runs
        under saved-tensor hooks) compares the tensors its recomputation saves with the
        forward's: a module given a copy under such hooks gets one again when the backward
        recomputes it (without, a checkpointed segment fed the raw data raised
        ``CheckpointError``, "a different number of tensors was saved"; skipping the copy there
        left a checkpointed residual block on the raw data without ``block_grad_std``)."""
        if x.requires_grad:
            return torch.autograd.graph.get_gradient_edge(x).node, None
        given = kwargs.get(where) if isinstance(where, str) else args[0] if args else None
        if (given is not x or type(x) is not torch.Tensor
                or not x.is_floating_point() or x.is_nested or x.is_inference()
                or not torch.is_grad_enabled()
                or not any(p.requires_grad for p in module.parameters())):
            return None, None
        if torch._C._autograd._top_saved_tensors_default_hooks(False) is not None:
            if torch._C._current_graph_task_id() == -1:  # the forward
                if self._blocks_found:
                    return None, None
                self._saved_copies.add(id(module))
            elif id(module) not in self._saved_copies:  # a recomputation of another pass
                return None, None
        elif self._blocks_found:
            return None, None
        copy = x.detach().requires_grad_().clone()
        self._copied.add(id(copy))
        link = self.p.links.get(id(x))
        if link is not None and link[0] is x and link[1] == _ver(x):
            self.p.links[id(copy)] = (copy, _ver(copy), *link[2:])  # followers still match
        if isinstance(where, str):  # blk(hidden=h)
            return copy.grad_fn, (args, {**kwargs, where: copy})
        return copy.grad_fn, ((copy, *args[1:]), kwargs)

    @contextlib.contextmanager
    def recomputing(self) -> Iterator[None]:
        """For a backward run after :meth:`disarm` (``dlt.probe``'s): the modules given a
        requires-grad copy of their input under saved-tensor hooks (a residual block that
        ``checkpoint(..., use_reentrant=False)`` runs on the raw data, see
        :meth:`_input_node`) get one again when that backward recomputes them, so that it
        saves the tensors their forward saved (else torch's ``CheckpointError``)."""
        if not self._saved_copies:
            yield
            return
        handles = [m.register_forward_pre_hook(self._recompute_pre, with_kwargs=True)
                   for m in self.model.modules() if id(m) in self._saved_copies]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def _recompute_pre(self, module, args, kwargs) -> tuple | None:
        if torch._C._current_graph_task_id() == -1:  # a forward: not a recomputation
            return None
        x, where = self._input(module, args, kwargs)
        if x is None or x.grad_fn is not None or x.requires_grad:
            return None
        return self._input_node(module, x, args, kwargs, where)[1]

    def _block_post(self, module, args, output) -> None:
        if self._idle:
            return
        stack = self.p.block_inputs.get(id(module))
        in_fn = stack.pop() if stack else None
        out = _first_tensor(output)
        if out is None or not out.requires_grad or out.is_nested:
            return
        key = id(module)
        if not self._blocks_found and key not in self.blocks and module is not self.model:
            if in_fn is not None and out.grad_fn is not None:
                if self._outside:  # its children's sums (a loop h = h + blk(h) in its forward)
                    # first, but not the sum x + F(x) that is its own output
                    self._caller_sums(_post_order(out.grad_fn, in_fn),
                                      _own_sums(out.grad_fn, in_fn))
                adds = _residual_adds(out.grad_fn, in_fn, self._claimed)
                if adds:
                    self._claimed.update(adds)
                    self.blocks[key] = BlockInfo(self._names.get(key, ""), module,
                                                 self._last_run)
                elif key not in self._owners and out.grad_fn is not in_fn:
                    # its caller may add its output to its input (h = h + blk(h)); a layer
                    # (attention, a recurrent layer) or a module returning its input is not
                    self._outside.append((key, in_fn, out.grad_fn, self._last_run))
        block = self.blocks.get(key)
        if block is not None and block.outside:
            if in_fn is not None and out.grad_fn is not None:
                self._outside.append((key, in_fn, out.grad_fn, block.layer))
        elif block is not None:  # as a layer output: a view of the whole of a tensor is watched
            # at that tensor's node (a tensor hook on a view changed in place never fired)
            self._watch_grad(out, self.p.block_grad, key)

    def _caller_sums(self, nodes: Iterable, skip: frozenset = frozenset()) -> None:
        """Among the autograd ``nodes`` (a module's forward, or the model's whole graph), the
        sums ``x + blk(x)`` of a module ``blk`` of :attr:`_outside` (its output node and its
        input's node the two operands of one add, in either order; ``h += blk(h)``,
        ``torch.add``) that no block has claimed: ``blk`` is a residual block whose sum is in
        its caller (found in the first armed pass), and ``dL/d(sum)`` is watched at the add's
        node. ``a(x) + b(x)``, ``h + self.pos``, ``blk(h) + 2 h`` have no such add. The adds in
        ``skip`` stay the enclosing module's (:func:`_own_sums`)."""
        if not self._outside:
            return
        by_out: dict = {}
        for entry in self._outside:
            by_out.setdefault(entry[2], []).append(entry)
        found = set()
        for node in nodes:
            if len(found) == len(self._outside):
                break
            if node.name() not in _ADD_NODES or node in self._claimed or node in skip:
                continue
            ops = [nxt for nxt, _ in node.next_functions]
            if len(ops) != 2:
                continue
            for out_fn, in_fn in (ops, ops[::-1]):
                # the outermost of nested modules with the same input and output (a Sequential
                # holding one Sequential) is the block: the last to finish
                hit = next((e for e in reversed(by_out.get(out_fn, ())) if e[1] is in_fn
                            and in_fn is not None), None)
                if hit is None:
                    continue
                key, _, _, layer = hit
                block = self.blocks.get(key)
                if block is None and not self._blocks_found:
                    module = next(m for m in self.model.modules() if id(m) == key)
                    block = self.blocks[key] = BlockInfo(self._names.get(key, ""), module,
                                                         layer, outside=True)
                if block is not None and block.outside:
                    self._claimed.add(node)
                    self._watch_node(node, 0, self.p.block_grad, key)
                    found.add(id(hit))
                break
        self._outside = [e for e in self._outside if id(e) not in found]

    # -- results ---------------------------------------------------------------------------
    def ran_layers(self) -> list[LayerInfo]:
        """The layers that ran, in first-execution order."""
        return list(self.order)

    def host_weights(self) -> bool:
        """True when the weights' statistics take the CPU kernels (every weight and gradient a
        plain CPU float tensor, Numba in use): then :meth:`collect` can fold the update-ratio
        sums into the same pass (``previous``)."""
        if watch_kernels() is None:
            return False
        for info in self.layers:
            for w in info.weights:
                if not _host_float(w):
                    return False
                g = w.grad
                if g is not None and not _host_float(g):
                    return False
        return True

    def collect(self, weight_grads: dict[int, torch.Tensor | None] | None = None,
                extra: Sequence[tuple[int, str, str, torch.Tensor]] = (),
                also: torch.Tensor | Sequence[torch.Tensor] | None = None,
                previous: dict[int, torch.Tensor] | None = None,
                refresh: bool = False, rows: bool = True, settled: bool = False,
                ) -> list[tuple[int, str, str, float]] | None:
        """Rows ``(layer, module, quantity, value)`` of the last pass, with one host transfer.

        ``weight_grads`` maps ``id(parameter)`` to its gradient (None: read ``p.grad``);
        ``extra`` rows travel in the same transfer: a 0-d device tensor, or ``(tensors, fn)``
        whose value is ``fn(*host values of the tensors)``; so do ``also`` (a 1-d tensor or a
        list of 0-d tensors), whose host values are left in ``self.also``. The device tensors
        ``||W||`` of the weights are left in ``self.weight_norms`` (``id(parameter)`` -> a 0-d
        tensor, or a float from the CPU kernels).

        ``previous`` (CPU kernels only, see :meth:`host_weights`): ``id(parameter)`` -> a
        contiguous copy ``W0`` of its earlier values; the weight pass also sums ``W0^2`` and
        ``(W - W0)^2``, left in ``self.update_sums`` (``id(parameter)`` -> the norms
        ``(||W0||, ||W - W0||)``, see :func:`~depthlab.torch.accumulators.update_norms`), and
        with ``refresh`` overwrites ``W0`` by ``W``; the update ratios
        ``sqrt(sum (W - W0)^2 / sum W0^2)`` per layer then follow the ``extra`` rows.

        The same rows are left as columns: ``self.values`` and ``self.layout`` =
        ``(layers, modules, quantities)``, tuples reused while the record's structure repeats;
        ``rows=False`` (a caller that reads those columns, as ``Watch`` does): the rows are not
        built and None is returned. ``settled``: the caller has just called :meth:`settle`
        (no forward or backward since), which is then not repeated.
        """
        if not settled:
            self.settle()
        if self._wk is not None and not self.percentiles:
            if self._collect_host(weight_grads, extra, also, previous, refresh):
                if self.p.maps is not None:
                    self._add_maps(weight_grads)
                return self._rows() if rows else None
        if self.percentiles:  # a pass without a model forward (submodules called directly),
            self.p.freeze(self.percentiles)  # or pooled with earlier forwards'
        self.update_sums: dict[int, tuple[float, float]] = {}
        self.refreshed = False
        p = self.p
        dev = p.device if p.device is not None else self.layers[0].weights[0].device
        t = Transfer()
        plan: list = []  # per layer: handles and accumulators read after the transfer
        all_w: list[torch.Tensor] = []
        all_g: list[torch.Tensor] = []
        pairs: list[tuple[torch.Tensor, torch.Tensor | None]] = []  # (weight, its gradient)
        extra_h = [(a, b, c, (t.add(v), None) if isinstance(v, torch.Tensor) else
                    (t.add_all(list(v[0])), v[1])) for a, b, c, v in extra]
        for info in self.order:
            i = info.index
            item: dict = {"info": info}
            pre = p.pre.get(i)
            if pre is not None and pre.ns:
                pre.gather(t)
                item["pre"] = pre
            act = p.act.get(i)
            if act is not None and act.mixed:  # activations of two kinds: rows of neither
                act = None
            out = act.out if act is not None and act.out.ns else p.norm.get(i)
            if out is not None and out.ns:
                out.gather(t)
                item["act"] = out
            if act is not None and act.n:
                item["n_act"] = act.n
                if act.saturated:
                    item["sat"] = t.add_all(act.saturated)
                if act.inactive:
                    item["off"] = t.add_all(act.inactive)
                if act.active:
                    item["on"] = (t.add_all(act.active), act.n_active)
                live = act.live(t) if act.dead_ok else None
                if live is not None:
                    item["dead"] = live
            g = p.grad.get(i)
            if g is not None and g.ns:
                g.gather(t)
                item["grad"] = g
            grads = [_strided(_weight_grad(w, weight_grads)) for w in info.weights]
            item["w"] = info.weights
            item["n_w"] = sum(w.numel() for w in info.weights)
            item["gw"] = [g for g in grads if g is not None]
            all_w += item["w"]
            all_g += item["gw"]
            pairs += zip(info.weights, grads)
            plan.append(item)
        wk = watch_kernels() if all_w else None
        if wk is not None and all(_host_float(v) for v in (*all_w, *all_g)):
            # CPU: one compiled pass per weight over W, its gradient and its snapshot
            sums = self._weight_sums(wk, pairs, previous or {}, refresh)
            w_sum = [sums[id(w)][0] for w in all_w]
            norms = [math.sqrt(sums[id(w)][1]) for w in all_w]
            w_norm = norms
            self.weight_norms = {id(w): v for w, v in zip(all_w, norms)}
            gm = [sums[id(w)] for w, g in pairs if g is not None]
            g_sum = [m[2] for m in gm]
            g_norm = [math.sqrt(m[3]) for m in gm]
            g_abs = [m[4] for m in gm]
        elif not all_w:  # no layer ran while armed (a Watch attached after the forward)
            w_sum, w_norm, self.weight_norms = [], [], {}
        else:
            with torch.no_grad():  # weights and their gradients: fused calls over all layers
                # sums in float64 (float32 on MPS), as Acc's: the std is sqrt(sum W^2 / n -
                # mean^2), which a float32 sum W left 0.4% off for weights of mean 0.05 and
                # std 1e-4 (3% after one SGD step)
                # (tensors of at most BATCH_MAX entries: deferred, reduced together by the
                # transfer, see depthlab.torch.accumulators.BATCH)
                sums, norms = weight_reductions(all_w, False)
                w_sum, w_norm = t.add_all(sums), t.add_all(norms)
                self.weight_norms = {id(w): v for w, v in zip(all_w, norms)}
                if all_g:
                    g_sum, g_norm, g_abs = weight_reductions(all_g, True)
                    g_sum, g_norm, g_abs = t.add_all(g_sum), t.add_all(g_norm), t.add_all(g_abs)
        blocks = []
        for key, block in self.blocks.items():
            g = p.block_grad.get(key)
            if g is not None and g.ns:
                g.gather(t)
                blocks.append((block, g))
        if isinstance(also, torch.Tensor):
            h_also = t.add(also) if also.numel() else None
        else:
            h_also = t.add_all(list(also)) if also else None
        t.run(dev)
        self.also = t.get(h_also) if h_also is not None else []

        values: list[float] = []
        sig: list[tuple] = []  # what each value is: the layout's key (see _layout)
        for a, b, c, (h, fn) in extra_h:
            values.append(t.one(h) if fn is None else fn(*t.get(h)))
            sig.append((a, b, c))
        if self.update_sums:  # update ratios from the weight pass, where the extra rows are
            for info in self.order:
                ws = info.weights
                if ws and all(id(w) in self.update_sums for w in ws):
                    values.append(update_ratio(*(v for w in ws for v in self.update_sums[id(w)])))
                    sig.append((info.index, info.name, "update_ratio"))
        ws1, ws2 = t.get(w_sum), t.get(w_norm)
        gs1, gs2, gab = (t.get(g_sum), t.get(g_norm), t.get(g_abs)) if all_g else ([], [], [])
        put = values.append
        for item in plan:
            info = item["info"]
            npct = [-1, -1]  # percentiles of pre and act (-1: the part is absent)
            for j, part in enumerate(("pre", "act")):
                acc = item.get(part)
                if acc is not None:
                    r = acc.result(t)
                    pct = r.get("pct", ())
                    put(r["mean"])
                    put(r["std"])
                    values += pct
                    npct[j] = len(pct)
            n_act = item.get("n_act")
            sat = "sat" in item
            if sat:
                put(sum(t.get(item["sat"])) / n_act)
            dead = "dead" in item
            if dead:
                h, units = item["dead"]
                put((units - t.one(h)) / units)
            inactive = "off" in item or "on" in item
            if inactive:
                off = sum(t.get(item["off"])) if "off" in item else 0.0
                if "on" in item:
                    off += item["on"][1] - sum(t.get(item["on"][0]))
                put(off / n_act)
            grad = "grad" in item
            if grad:
                r = item["grad"].result(t)
                put(r["std"])
                put(r["absmean"])
            k = len(item["w"])
            put(_std(item["n_w"], ws1[:k], [v * v for v in ws2[:k]], item["w"]))
            ws1, ws2 = ws1[k:], ws2[k:]
            k = len(item["gw"])
            if k:
                n = sum(g.numel() for g in item["gw"])
                put(_std(n, gs1[:k], [v * v for v in gs2[:k]], item["gw"]))
                put(sum(gab[:k]) / n)
                gs1, gs2, gab = gs1[k:], gs2[k:], gab[k:]
            sig.append((info.index, info.name, npct[0], npct[1], sat, dead, inactive, grad,
                        bool(k)))
        for block, g in blocks:
            values.append(g.result(t)["std"])
            sig.append((block.layer, block.name, "block_grad_std"))
        self.layout = self._layout(tuple(sig))
        self.values = values
        if p.maps is not None:
            self._add_maps(weight_grads)
        return self._rows() if rows else None

    def _rows(self) -> list[tuple[int, str, str, float]]:
        """The last record's ``(layer, module, quantity, value)`` rows."""
        layers, modules, quantities = self.layout
        return list(zip(layers, modules, quantities, self.values))

    def _collect_host(self, weight_grads, extra, also, previous, refresh) -> bool | None:
        """:meth:`collect` when every statistic of the pass is a host float already (CPU
        kernels, no percentiles, activations measured by the kernels): the same values, in the
        same order and layout, without the transfer's handles (left in ``values`` and
        ``layout``): True. None, with nothing changed, when the pass does not qualify (a device
        tensor anywhere); then the general path runs."""
        p = self.p
        layers = []
        pairs: list[tuple[torch.Tensor, torch.Tensor | None]] = []
        for info in self.order:
            i = info.index
            pre, act, g = p.pre.get(i), p.act.get(i), p.grad.get(i)
            if act is not None and act.mixed:  # activations of two kinds: rows of neither
                act = None
            out = act.out if act is not None and act.out.ns else p.norm.get(i)
            if (pre is not None and not pre.host) or (out is not None and not out.host) \
                    or (act is not None and not act.host) or (g is not None and not g.host):
                return None
            ws = info.weights
            if len(ws) == 1 and weight_grads is None:  # the usual layer: one weight tensor
                w = ws[0]
                gw = w.grad if w.requires_grad else None  # (_weight_grad)
                if not _host_float(w) or (gw is not None and not _host_float(gw)):
                    return None
                pairs.append((w, gw))
                grads = [gw]
            else:
                grads = [_weight_grad(w, weight_grads) for w in ws]
                for w, gw in zip(ws, grads):
                    if not _host_float(w) or (gw is not None and not _host_float(gw)):
                        return None
                    pairs.append((w, gw))
            layers.append((info, pre, out, act, g, grads))
        blocks = []
        for key, block in self.blocks.items():
            g = p.block_grad.get(key)
            if g is not None and g.ns:
                if not g.host:
                    return None
                blocks.append((block, g))
        for v in extra:
            for x in ((v[3],) if isinstance(v[3], torch.Tensor) else v[3][0]):
                if type(x) is not float and not x.is_cpu:
                    return None
        if isinstance(also, torch.Tensor):
            if not also.is_cpu:
                return None
            self.also = also.detach().reshape(-1).tolist()
        else:
            if also and any(type(x) is not float and not x.is_cpu for x in also):
                return None
            self.also = [float(x) for x in also] if also else []

        self.update_sums = {}
        sums = self._weight_sums(self._wk, pairs, previous or {}, refresh)
        self.weight_norms = {key: math.sqrt(m[1]) for key, m in sums.items()}
        values: list[float] = []
        sig: list[tuple] = []
        put = values.append
        for a, b, c, v in extra:
            put(float(v) if isinstance(v, torch.Tensor) else
                v[1](*[x if type(x) is float else float(x) for x in v[0]]))
            sig.append((a, b, c))
        if self.update_sums:
            upd = self.update_sums
            for info in self.order:
                ws = info.weights
                if len(ws) == 1:  # one weight tensor: its two norms
                    u = upd.get(id(ws[0]))
                    if u is None:
                        continue
                    # update_ratio(*u) inline where its squares are in range (the same
                    # operations: a sum of one square is that square)
                    den, num = u[0] * u[0], u[1] * u[1]
                    put(math.sqrt(num / den) if TINY_SQUARE_64 < den < math.inf
                        and num < math.inf else update_ratio(*u))
                    sig.append((info.index, info.name, "update_ratio"))
                    continue
                elif ws and all(id(w) in upd for w in ws):
                    u = [v for w in ws for v in upd[id(w)]]
                else:
                    continue
                put(update_ratio(*u))
                sig.append((info.index, info.name, "update_ratio"))
        for info, pre, out, act, g, grads in layers:
            npre = nact = -1
            if pre is not None and pre.ns:
                values += _mean_std(pre)
                npre = 0
            if out is not None and out.ns:
                values += _mean_std(out)
                nact = 0
            dead = inactive = False
            if act is not None and act.n:
                if act.dead_ok and act.alive is not None:
                    units = act.alive.size
                    put((units - float(np.count_nonzero(act.alive))) / units)
                    dead = True
                if act.inactive or act.active:
                    off = sum(act.inactive) if act.inactive else 0.0
                    if act.active:
                        off += act.n_active - sum(act.active)
                    put(off / act.n)
                    inactive = True
            grad = g is not None and bool(g.ns)
            if grad:
                n = sum(g.ns)
                put(_mean_std(g)[1])
                put(sum(g.abs) / n)
            ws = info.weights
            if len(ws) == 1:  # the usual layer: one weight tensor
                m = sums[id(ws[0])]
                r = math.sqrt(m[1])  # (as the general path: the same values to the bit)
                put(_std1(ws[0].numel(), m[0], r * r, ws))
                gm = (m,) if grads[0] is not None else ()
                if gm:
                    n = grads[0].numel()
                    r = math.sqrt(m[3])
                    put(_std1(n, m[2], r * r, grads))
                    put(m[4] / n)
            else:
                m = [sums[id(w)] for w in ws]
                put(_std(sum(w.numel() for w in ws), [v[0] for v in m],
                         [r * r for r in (math.sqrt(v[1]) for v in m)], ws))
                gm = [sums[id(w)] for w, gw in zip(ws, grads) if gw is not None]
                if gm:
                    n = sum(gw.numel() for gw in grads if gw is not None)
                    put(_std(n, [v[2] for v in gm],
                             [r * r for r in (math.sqrt(v[3]) for v in gm)],
                             [gw for gw in grads if gw is not None]))
                    put(sum(v[4] for v in gm) / n)
            sig.append((info.index, info.name, npre, nact, False, dead, inactive, grad,
                        bool(gm)))
        for block, g in blocks:
            put(pooled_mean_std_norms(g.ns, g.cs, g.a, g.b)[1])
            sig.append((block.layer, block.name, "block_grad_std"))
        self.layout = self._layout(tuple(sig))
        self.values = values
        return True

    def _layout(self, sig: tuple) -> tuple[tuple[int, ...], tuple[str, ...], tuple[str, ...]]:
        """``(layers, modules, quantities)`` of the values :meth:`collect` produced for the
        signature ``sig`` (one entry per extra row, per layer and per block); built once per
        signature, so a record whose structure repeats reuses the tuples."""
        hit = self._layouts.get(sig)
        if hit is not None:
            return hit
        pct_pre, pct_act = self._pct_names
        layers: list[int] = []
        modules: list[str] = []
        quantities: list[str] = []
        for entry in sig:
            if len(entry) == 3:  # one named row
                names = [entry[2]]
            else:
                _, _, npre, nact, sat, dead, inactive, grad, gw = entry
                names = []
                for part, n, pct_names in (("pre", npre, pct_pre), ("act", nact, pct_act)):
                    if n >= 0:
                        names += [f"{part}_mean", f"{part}_std", *pct_names[:n]]
                names += ["saturated_frac"] * sat + ["dead_frac"] * dead
                names += ["inactive_frac"] * inactive
                names += ["grad_pre_std", "grad_pre_absmean"] * grad + ["weight_std"]
                names += ["weight_grad_std", "weight_grad_absmean"] * gw
            layers += [entry[0]] * len(names)
            modules += [entry[1]] * len(names)
            quantities += names
        if len(self._layouts) > 64:  # a model whose structure keeps changing
            self._layouts.clear()
        out = self._layouts[sig] = (tuple(layers), tuple(modules), tuple(quantities))
        return out


    def _weight_sums(self, wk, pairs, previous: dict[int, torch.Tensor], refresh: bool
                     ) -> dict[int, tuple[float, ...]]:
        """:func:`depthlab.torch.kernels.weight_sums` once per parameter (a weight tied between
        layers is read once): ``id(parameter)`` -> the seven sums."""
        batched = self._weight_sums_at(wk, pairs, previous, refresh)
        if batched is not None:
            return batched
        sums: dict[int, tuple[float, ...]] = {}
        self.refreshed = refresh
        kernel = wk.weight_sums
        for w, g in pairs:
            key = id(w)
            if key in sums:
                continue
            flat = w.detach().numpy().reshape(-1)  # logical order, as g and w0 are read
            w0 = previous.get(key)
            if w0 is not None and w0.numel() != flat.size:
                w0 = None  # a buffer of another shape: the caller's snapshot must be redone
            elif w0 is not None and (w0.dtype != w.dtype or not w0.is_contiguous()):
                # the model's dtype changed since the snapshot (model.double()): the update
                # is measured in the new dtype, the snapshot is redone by the caller
                w0 = w0.to(w.dtype).contiguous()
                self.refreshed = refresh = False
            if w0 is None:
                self.refreshed = False
            gf = None if g is None else g.detach().numpy().reshape(-1)
            if gf is not None and gf.dtype != flat.dtype:
                gf = gf.astype(flat.dtype)
            sums[key] = out = kernel(  # w stands in for a missing g or w0
                flat, flat if gf is None else gf, flat if w0 is None else w0.numpy().reshape(-1),
                refresh and w0 is not None)
            if w0 is not None:  # (||W0||, ||W - W0||), scaled where a square left the range
                s02, sd2 = out[5], out[6]
                self.update_sums[key] = (
                    (math.sqrt(s02), math.sqrt(sd2))
                    if TINY_SQUARE_64 * flat.size <= s02 < math.inf and sd2 < math.inf
                    else update_norms(flat, w0.numpy().reshape(-1), s02, sd2, refresh))
        return sums

    def _weight_sums_at(self, wk, pairs, previous: dict[int, torch.Tensor], refresh: bool
                        ) -> dict[int, Sequence[float]] | None:
        """:meth:`_weight_sums` in one compiled call over all weights
        (:func:`depthlab.torch.kernels.weight_sums_at`, the arrays by address: no NumPy view
        and no kernel dispatch per weight), the same seven sums per weight to the bit. None,
        with nothing done, unless every weight, gradient and snapshot is contiguous and of the
        first weight's dtype (then :meth:`_weight_sums` takes them one by one)."""
        if not pairs:
            return None
        dt = pairs[0][0].dtype
        keys: list[int] = []
        seen: set[int] = set()
        rows: list[tuple] = []  # (weight, its snapshot or None)
        addresses: list[int] = []
        sizes: list[int] = []
        copy: list[bool] = []
        fresh = False  # a weight without a usable snapshot: nothing refreshed
        # the snapshot buffers' (numel, dtype, contiguous, address), read once per buffer:
        # ``previous`` is the caller's dict of its own buffers, which nothing else resizes or
        # moves (a new snapshot is a new dict: the facts are read again)
        facts = self._snap_facts
        if facts is None or facts[0] is not previous:
            facts = self._snap_facts = (previous, {})
        facts = facts[1]
        for w, g in pairs:
            key = id(w)
            if key in seen:  # a weight tied between layers: read once
                continue
            if w.dtype != dt or not w.is_contiguous() or w.is_neg() or (g is not None and (
                    g.dtype != dt or not g.is_contiguous() or g.is_neg())):
                return None  # (a negative view's memory holds -x: .numpy() refuses it)
            n = w.numel()
            w0 = previous.get(key)
            if w0 is not None:
                f = facts.get(key)
                if f is None or f[0] is not w0:
                    f = facts[key] = (w0, w0.numel(), w0.dtype, w0.is_contiguous(),
                                      w0.data_ptr())
                if f[1] != n:
                    w0 = None  # a buffer of another shape: the caller's snapshot must be redone
                elif f[2] != dt or not f[3]:
                    return None
            a = w.data_ptr()
            seen.add(key)
            keys.append(key)
            rows.append((w, w0))
            addresses += (a, a if g is None else g.data_ptr(), a if w0 is None else f[4])
            sizes.append(n)
            copy.append(refresh and w0 is not None)
            fresh = fresh or w0 is None
        out = np.empty((len(sizes), 7))
        wk.weight_sums_at(np.array(addresses, dtype=np.int64).reshape(-1, 3),
                          np.array(sizes, dtype=np.int64), np.array(copy, dtype=np.bool_),
                          _LIKE[dt], out)
        self.refreshed = refresh and not fresh
        sums = {}
        upd = self.update_sums
        for key, (w, w0), n, m in zip(keys, rows, sizes, out.tolist()):
            sums[key] = m  # (a list: read by index only)
            if w0 is not None:  # (||W0||, ||W - W0||), scaled where a square left the range
                s02, sd2 = m[5], m[6]
                upd[key] = (
                    (math.sqrt(s02), math.sqrt(sd2))
                    if TINY_SQUARE_64 * n <= s02 < math.inf and sd2 < math.inf
                    else update_norms(w.detach().numpy().reshape(-1), w0.numpy().reshape(-1),
                                      s02, sd2, refresh))
        return sums


def _map_ratios(rows: list, names: dict[str, list], loose: dict, previous: dict) -> list:
    """``rows`` with an ``update_ratio`` row for each map layer in ``names`` (its module
    name) that has none yet: ``sqrt(sum ||W_n - W_{n-1}||^2 / sum ||W_{n-1}||^2)`` over its
    weights (``loose``: key -> (name, weight)) and their copies ``W_{n-1}`` in ``previous``
    (key -> copy), norms in float64 (:func:`~depthlab.torch.accumulators.update_ratio`)."""
    have = {m for _, m, q, _ in rows if q == "update_ratio"}
    at = {m: i for i, m, q, _ in rows if q == "weight_std"}
    for key, w0 in previous.items():
        name, w = loose[key]
        if name in names and name in at and name not in have:
            with torch.no_grad():
                a = w0.to(torch.float64)
                names[name] += [float(torch.linalg.vector_norm(a)),
                                float(torch.linalg.vector_norm(w.to(torch.float64) - a))]
    extra = [(at[m], m, "update_ratio", update_ratio(*v)) for m, v in names.items() if v]
    if not extra:
        return rows
    return sorted([*rows, *extra], key=lambda r: r[0])


def _keep_grad(slot: list, g: torch.Tensor) -> None:
    """A map output's gradient hook: ``dL/ds`` kept in ``slot`` (the last backward's)."""
    slot[0] = g.detach()


def _std1(n: int, s1: float, s2: float, tensors: Sequence[torch.Tensor]) -> float:
    """``_std(n, (s1,), (s2,), tensors)`` of one partial sum, to the bit, without the tuples:
    ``sum`` of one float is that float (``-0.0`` aside, which only the sign of a zero mean
    tells, and the mean is squared); the cancelling case is ``_std`` itself."""
    mean = s1 / n
    var = s2 / n - mean * mean
    if not math.isfinite(var) or mean * mean > CANCELLATION_RATIO * var \
            or s2 < TINY_SQUARE_64 * n:  # (squares out of float64's range: _std's rule)
        return _std(n, (s1,), (s2,), tensors)
    return math.sqrt(max(var, 0.0))


def _mean_std(acc: Acc) -> tuple[float, float]:
    """``pooled_mean_std`` of the host sums of ``acc``'s calls; a single call (the usual case)
    by the same operations inline, without the lists of squares."""
    ns = acc.ns
    if len(ns) != 1:
        return pooled_mean_std_norms(ns, acc.cs, acc.a, acc.b)
    n = ns[0]
    e = acc.a[0] / n
    b = acc.b[0]
    if not NORM_LOW <= b <= NORM_HIGH:  # b * b out of float64's range (or 0, or NaN)
        return pooled_mean_std_norms(ns, acc.cs, acc.a, acc.b)
    var = b * b / n - e * e
    return acc.cs[0] + e, (math.sqrt(max(var, 0.0)) if math.isfinite(var) else math.nan)


def _relayout(x: torch.Tensor, t: torch.Tensor):
    """The map of a tensor of ``x``'s shape into ``t``'s layout, entry for entry, when ``x`` is
    a reshaped or permuted view of all of ``t`` (same memory): ``reshape(t.shape)`` when both
    are contiguous, a ``permute`` when ``x``'s dimensions are ``t``'s in another order; else
    None."""
    if x.dtype != t.dtype or x.numel() != t.numel() or x.data_ptr() != t.data_ptr():
        return None
    if x.is_contiguous() and t.is_contiguous():
        return functools.partial(torch.reshape, shape=tuple(t.shape))
    if x.dim() != t.dim():
        # a permuted view of a reshaped contiguous output (h.view(N, C, L).transpose(1, 2)):
        # x's dimensions in the order of memory are a contiguous tensor of t's entries
        if not t.is_contiguous() or x.storage_offset() != t.storage_offset():
            return None
        order = sorted((j for j in range(x.dim()) if x.shape[j] != 1),
                       key=lambda j: -x.stride(j))
        step = 1
        for j in reversed(order):
            if x.stride(j) != step:
                return None
            step *= x.shape[j]
        order += [j for j in range(x.dim()) if x.shape[j] == 1]
        return functools.partial(_permuted_reshape, dims=tuple(order), shape=tuple(t.shape))
    free = list(range(x.dim()))
    perm = []
    for size, stride in zip(t.shape, t.stride()):
        j = next((j for j in free if x.shape[j] == size
                  and (size == 1 or x.stride(j) == stride)), None)
        if j is None:
            return None
        free.remove(j)
        perm.append(j)
    return functools.partial(torch.permute, dims=tuple(perm))


def _permuted_reshape(y: torch.Tensor, dims: tuple[int, ...], shape: tuple[int, ...]
                      ) -> torch.Tensor:
    return y.permute(dims).reshape(shape)


def _compose(first, second, y: torch.Tensor) -> torch.Tensor:
    """``first(second(y))``: a view of a view into the layer output's layout."""
    return first(second(y))


@functools.cache
def _returned_children(cls: type) -> frozenset[str]:
    """The attribute whose call ``cls.forward`` returns, ``return self.act(...)`` or ``h =
    self.act(...)`` then ``return h`` (a Keras-style ``Dense`` layer of the user's, its
    activation a child module), read from its source; empty where the source cannot be read
    or the forward returns anything else (a recurrent cell's ``(1 - z) * n + z * h``, whose
    activation children make gates, is measured at its output as before)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls.forward)))
    except (OSError, TypeError, SyntaxError, IndentationError):
        return frozenset()
    f = tree.body[0] if tree.body else None
    body = f.body if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)) else []
    if not body or not isinstance(body[-1], ast.Return) or body[-1].value is None \
            or not f.args.args:
        return frozenset()
    me = f.args.args[0].arg  # (self)
    v = body[-1].value
    if isinstance(v, ast.Name) and len(body) >= 2 and isinstance(body[-2], ast.Assign) \
            and len(body[-2].targets) == 1 and isinstance(body[-2].targets[0], ast.Name) \
            and body[-2].targets[0].id == v.id:
        v = body[-2].value
    if isinstance(v, ast.Call) and isinstance(v.func, ast.Attribute) \
            and isinstance(v.func.value, ast.Name) and v.func.value.id == me:
        return frozenset({v.func.attr})
    return frozenset()


_MIXING_NODE_PARTS = ("mm", "convolution", "attention", "embedding", "linear", "rnn",
                      "lstm", "gru")
"""Parts of the autograd node names of the operations that mix a tensor through weights or
other positions (matrix products, convolutions, attention, embeddings, recurrent layers)."""


def _is_mixing(node) -> bool:
    """True for an autograd node of a mixing operation (:data:`_MIXING_NODE_PARTS`, matched
    case-insensitively: ``MmBackward0``, ``AddmmBackward0``, ``ConvolutionBackward0``)."""
    name = node.name().lower()
    return any(part in name for part in _MIXING_NODE_PARTS)


def _output_tail(out_fn, in_fn) -> set:
    """The nodes from ``out_fn`` back to the last mixing operations (not included): what a
    module does to a sum after its last matrix product / convolution / attention (a ReLU, a
    normalization, a scale), where the add of a residual block lies."""
    tail: set = set()
    stack = [out_fn]
    while stack:
        node = stack.pop()
        if node is None or node is in_fn or node in tail or _is_mixing(node):
            continue
        tail.add(node)
        stack.extend(nxt for nxt, _ in node.next_functions)
    return tail


def _post_order(root, stop, keep=None) -> list:
    """The autograd nodes from ``root`` down to (not including) ``stop``, each after every node
    it reads (post-order, iterative: graphs of thousands of nodes), each once; with ``keep``,
    only through the nodes it accepts."""
    order: list = []
    seen: set = set()
    stack: list = [(root, False)]
    while stack:
        node, done = stack.pop()
        if done:
            order.append(node)
            continue
        if node is None or node in seen or node is stop or (keep is not None and not keep(node)):
            continue
        seen.add(node)
        stack.append((node, True))
        stack.extend((nxt, False) for nxt, _ in node.next_functions
                     if nxt is not None and nxt not in seen)
    return order


def _own_sums(out_fn, in_fn) -> frozenset:
    """The adds that make a module's output ``post(x + F(x))`` itself: reached from its output
    node ``out_fn`` through no add or mixing operation (only a ReLU, a scale, a view), with its
    input's node ``in_fn`` an operand. Such a module is the residual block, not ``F``; a loop
    ``h = h + blk(h)`` in its forward leaves its children the blocks."""
    own = set()
    stack, seen = [out_fn], set()
    while stack:
        node = stack.pop()
        if node is None or node is in_fn or node in seen or _is_mixing(node):
            continue
        seen.add(node)
        nxt = [n for n, _ in node.next_functions]
        if node.name() in _ADD_NODES:
            if in_fn in nxt:
                own.add(node)
            continue
        stack.extend(nxt)
    return frozenset(own)


def _graph_nodes(output) -> Iterator:
    """The autograd nodes of the tensors in ``output`` (a tensor, tuple, list or dict,
    nested), each once (iterative: graphs of thousands of nodes)."""
    roots: list = []
    todo = [output]
    while todo:
        obj = todo.pop()
        if isinstance(obj, torch.Tensor):
            if obj.grad_fn is not None:
                roots.append(obj.grad_fn)
        elif isinstance(obj, dict):
            todo.extend(obj.values())
        elif isinstance(obj, (tuple, list)):
            todo.extend(obj)
    seen: set = set(roots)
    queue = list(reversed(roots))
    while queue:
        node = queue.pop()
        yield node
        for nxt, _ in node.next_functions:
            if nxt is not None and nxt not in seen:
                seen.add(nxt)
                queue.append(nxt)



_SERIALS = [0]  # the last number given to a pass (_Pass.serial)
_task_id = torch._C._current_graph_task_id  # the backward running (in a gradient hook)
_MARK = "depthlab.pass"  # the key of a pass's number in its output nodes' metadata
LOSS_WALK = 20000  # at most this many nodes of a loss's graph are searched for a pass's mark


def _serial(p: _Pass) -> int:
    """The number of pass ``p`` (given at its first mark)."""
    if not p.serial:
        _SERIALS[0] += 1
        p.serial = _SERIALS[0]
    return p.serial


def _mark_outputs(output, serial: int) -> None:
    """Put ``serial`` into the autograd metadata of each node that produced a tensor of
    ``output`` (a tensor, tuple, list or dict, nested): a loss's graph tells which pass it
    came from (:func:`_loss_pass`). A tensor's node only; no graph is held. At most
    ``LOSS_WALK`` objects of a nested output are looked at; a node without metadata (none
    known) is left unmarked."""
    if type(output) is torch.Tensor:
        fn = output.grad_fn
        if fn is not None:
            _mark(fn, serial)
        return
    todo = [output]
    for _ in range(LOSS_WALK):
        if not todo:
            break
        obj = todo.pop()
        if isinstance(obj, torch.Tensor):
            if obj.grad_fn is not None:
                _mark(obj.grad_fn, serial)
        elif isinstance(obj, dict):
            todo.extend(obj.values())
        elif isinstance(obj, (tuple, list)):
            todo.extend(obj)


def _mark(fn: torch.autograd.graph.Node, serial: int) -> None:
    """``fn.metadata[_MARK] = serial`` where the node has metadata."""
    try:
        fn.metadata[_MARK] = serial
    except (AttributeError, RuntimeError, TypeError):
        pass


def _loss_pass(root: torch.autograd.graph.Node, passes: list, chosen: int) -> int:
    """The index in ``passes`` (oldest first) of the pass to read for the loss whose graph
    starts at ``root``: ``chosen`` (the last graded pass), unless another pass was graded too
    and ``chosen``'s output is not in the loss's graph while a graded one's is, and no
    backward that graded those (``_Pass.tasks``) graded ``chosen``: then the last pass such a
    backward graded, an input-gradient pass after the loss's backward being left out (a pass
    of submodule calls outside the model's forward is marked at its layers' nodes: a saliency
    map of ``model.encoder(x)``; a loss of ``model(a)`` and ``model[0](b)`` reaches both,
    which stay pooled; a WGAN-GP penalty's interpolates, graded through the gradient's graph,
    are kept). The graph is searched (breadth first, at most ``LOSS_WALK`` nodes, not past a
    marked node) only when two or more passes were graded, one of them marked."""
    graded = [i for i, q in enumerate(passes) if q.graded()]
    if len(graded) < 2 or not any(passes[i].serial for i in graded):
        return chosen
    found: set[int] = set()
    seen = {root}
    queue = [root]
    for node in queue:
        if len(queue) > LOSS_WALK:
            break
        try:
            mark = node.metadata.get(_MARK)
        except (AttributeError, RuntimeError, TypeError):
            mark = None
        if mark is not None:
            found.add(mark)
            continue
        for nxt, _ in node.next_functions:
            if nxt is not None and nxt not in seen:
                seen.add(nxt)
                queue.append(nxt)
    if passes[chosen].serial in found:
        return chosen
    # the backwards that graded a pass the loss's graph holds: the last pass one of them
    # graded is read (a WGAN-GP penalty's interpolates, graded through the graph of its
    # create_graph gradient, which does not hold their output: pooled as before)
    tasks = set().union(*(passes[i].tasks for i in graded if passes[i].serial in found))
    return next((i for i in reversed(graded) if passes[i].tasks & tasks), chosen)


def _residual_adds(out_fn, in_fn, claimed: set) -> list:
    """Add nodes between ``out_fn`` and ``in_fn`` (autograd graph) both of whose operands
    depend on ``in_fn``, that no inner block has claimed and that no mixing operation follows
    on the way to the output (:func:`_output_tail`): the module's output is its input (or a
    shortcut of it) plus a branch. An add inside the branch (a rotary embedding's
    ``a sin + b cos`` before the attention and output projection) does not make a block."""
    tail = _output_tail(out_fn, in_fn)
    reach: dict = {in_fn: True}
    order = _post_order(out_fn, in_fn)
    for node in order:  # post-order: children first
        reach[node] = any(reach.get(nxt, False) for nxt, _ in node.next_functions
                          if nxt is not None)
    adds = []
    for node in order:
        if node.name() in _ADD_NODES and node not in claimed and node in tail:
            branches = [reach.get(nxt, False) for nxt, _ in node.next_functions if nxt is not None]
            if len(branches) >= 2 and all(branches) and not _one_linear_map(node, in_fn, reach):
                adds.append(node)
    return adds


_LINEAR_NODES = frozenset({
    "AddBackward", "SubBackward", "MulBackward", "DivBackward", "NegBackward", "ViewBackward",
    "ReshapeAliasBackward", "UnsafeViewBackward", "TBackward", "TransposeBackward",
    "PermuteBackward", "ExpandBackward", "SqueezeBackward", "UnsqueezeBackward", "CloneBackward",
    "ToCopyBackward", "AliasBackward", "NativeDropoutBackward", "MmBackward", "AddmmBackward",
    "BmmBackward", "MvBackward", "ConvolutionBackward", "LinearBackward"})
"""Autograd nodes (names without their trailing number) linear in the tensors they read;
a product (:data:`_PRODUCT_NODES`) only when at most one factor depends on the input."""

_PRODUCT_NODES = frozenset({"MulBackward", "DivBackward", "MmBackward", "BmmBackward",
                            "MvBackward"})


def _one_linear_map(add, in_fn, reach: dict) -> bool:
    """True when the sum ``add`` is one linear map of the input, both of its operands
    reaching the input only through matrix products or convolutions and every operation in
    between linear (:data:`_LINEAR_NODES`): a low-rank adapter's ``base(x) + B(A(x)) * s``
    (PEFT's LoRA wrapper of a frozen Linear) is ``(W + s B A) x``, one re-parametrized layer,
    not a residual block (it was taken for one, as a projection shortcut's ``F(x) + P x``,
    whose branch is non-linear); an identity shortcut, ``x + W x``, stays a block."""
    free: dict = {in_fn: True}  # a path to the input without a matrix product / convolution
    for node in _post_order(add, in_fn, keep=lambda n: reach.get(n, False)):  # operands first
        kids = [nxt for nxt, _ in node.next_functions if nxt is not None and reach.get(nxt, False)]
        base = node.name().rstrip("0123456789")
        if base not in _LINEAR_NODES or (base in _PRODUCT_NODES and len(kids) > 1):
            return False
        free[node] = not _is_mixing(node) and any(free.get(k, False) for k in kids)
    return not free.get(add, True)
