"""The recorded step's fast path for ``layer -> nn.ReLU(inplace=True)`` in an ``nn.Sequential``.

A :class:`~depthlab.torch.hooks.Recording` measures a layer output ``s`` and the in-place ReLU
that takes it in one compiled pass (:func:`depthlab.torch.kernels.layer_relu`): ``pre_*`` from
``sum s``, ``sum s^2``; ``act_*`` from ``sum relu(s)``, ``sum relu(s)^2``; ``#{s <= 0}`` and the
live units. Where a :class:`Chain` holds, the layer's own forward hook also books the ReLU's
part (what the ReLU's hook did from its output), so the ReLU runs with no hook at all (its hook
is *parked*: taken out of its hook dicts for the model's forward).

The chain holds for one call of the layer when the ReLU is certain to run next on that very
output, in place, exactly once:

* the layer was called directly by ``nn.Sequential.forward`` of its parent ``S`` (the calling
  frame is that forward's, its loop variable the layer), and the ReLU is the entry right after
  the layer in ``S`` (so the loop calls it next with the layer's output);
* ``S`` is a plain ``nn.Sequential``, the ReLU a plain ``nn.ReLU`` with ``inplace=True``
  (``F.relu`` and the classes' ``forward`` not replaced);
* no hook of anyone else can change what the ReLU reads or returns: no global module hook, no
  hook on the ReLU, no backward hook on the layer, no other forward hook on it; no torch
  function or dispatch mode, no JIT tracing.

Otherwise the ReLU's hook is put back at once (before the ReLU runs) and the general hooks take
the call (:meth:`Chain.unpark`).
"""

from __future__ import annotations

import math
import sys

import torch
from torch import nn
from torch.nn.modules import module as _module

from ..probes.kernels import CANCELLATION_RATIO
from .accumulators import NORM_HIGH, NORM_LOW

__all__ = ["Chain", "chains", "reads_values"]

_SEQ_CODE = nn.Sequential.forward.__code__
_RELU_FORWARD = nn.ReLU.forward
_F_RELU = torch.nn.functional.relu
_CALL_CODES = (nn.Module._call_impl.__code__, nn.Module._wrapped_call_impl.__code__,
               *(c for c in nn.Module._call_impl.__code__.co_consts if hasattr(c, "co_name")))
_CALL_IDS = frozenset(map(id, _CALL_CODES))
"""The ids of the code of torch's module call machinery (``_wrapped_call_impl``,
``_call_impl`` and its nested ``inner``; ``_CALL_CODES`` keeps them alive): the frames between
a module's forward hook and the caller of the module. By id: a code object's hash is computed
from its contents at each lookup (15 us for a walk of four frames)."""


class Chain:
    """A layer ``L`` (one :class:`~depthlab.torch.layers.LayerInfo` ``info``) followed by the
    ``nn.ReLU`` ``R`` in the ``nn.Sequential`` ``S`` (keys ``kl``, ``kr``); ``slot``: the
    ReLU's hook slot of the arming (hooks dict, key, hook, with_kwargs marks). The ReLU's hook
    is *parked* while it is out of its dict (chains sharing a ReLU share its slot)."""

    __slots__ = ("L", "R", "S", "kl", "kr", "info", "rkey", "slot")

    def __init__(self, L: nn.Module, R: nn.Module, S: nn.Sequential, kl: str, kr: str,
                 info) -> None:
        self.L, self.R, self.S, self.kl, self.kr, self.info = L, R, S, kl, kr, info
        self.rkey = id(R)
        self.slot: tuple | None = None

    def parked(self) -> bool:
        """Whether the ReLU's hook is out of its dict."""
        slot = self.slot
        return slot is not None and slot[0].get(slot[1]) is not slot[2]

    def park(self) -> None:
        """Take the ReLU's hook out of its dicts (while the recording is armed)."""
        slot = self.slot
        if slot is None:
            return
        hooks, key, fn, marks = slot
        if hooks.get(key) is fn:
            del hooks[key]
            for d in marks:
                d.pop(key, None)

    def unpark(self) -> None:
        """Put the ReLU's hook back (last in its dict, as ``Recording._last`` orders); only
        while the recording is armed."""
        slot = self.slot
        if slot is None:
            return
        hooks, key, fn, marks = slot
        if hooks.get(key) is not fn:
            hooks[key] = fn
            for d in marks:
                d[key] = True

    def holds(self, out: torch.Tensor) -> bool:
        """Whether the ReLU is certain to run next, in place, on ``out`` (the layer's output
        just returned) with nothing of anyone else's between (see the module docstring)."""
        R, L = self.R, self.L
        if (not R.inplace or R._forward_hooks or R._forward_pre_hooks or R._backward_hooks
                or R._backward_pre_hooks or L._backward_hooks or L._backward_pre_hooks
                or _module._global_forward_hooks or _module._global_forward_pre_hooks
                or _module._global_backward_hooks or _module._global_backward_pre_hooks
                or "forward" in R.__dict__ or nn.ReLU.forward is not _RELU_FORWARD
                or torch.nn.functional.relu is not _F_RELU
                or torch._C._len_torch_function_stack() or torch._C._len_torch_dispatch_stack()
                or torch._C._get_tracing_state() is not None):
            return False
        hooks = L._forward_hooks
        if len(hooks) > 1 and any(type(h).__name__ != "_Hook" for h in hooks.values()):
            return False
        mods = self.S._modules
        if mods.get(self.kl) is not L or mods.get(self.kr) is not R:
            return False
        return self._called_by_sequential()

    def _called_by_sequential(self) -> bool:
        """Whether the layer's call in progress is ``S.forward``'s loop calling it directly."""
        f = sys._getframe(2)  # (up from the recording's hook, to torch's call machinery)
        for _ in range(8):
            if f is None or id(f.f_code) in _CALL_IDS:
                break
            f = f.f_back
        while f is not None and id(f.f_code) in _CALL_IDS:
            f = f.f_back
        if f is None or f.f_code is not _SEQ_CODE:
            return False
        loc = f.f_locals
        return loc.get("self") is self.S and loc.get("module") is self.L


def chains(model: nn.Module, owners: dict) -> dict[int, Chain]:
    """``id(layer) -> Chain`` for every plain ``nn.Sequential`` in ``model`` holding a layer
    (``owners``: ``id(module) -> [LayerInfo]``; exactly one, with an output of its own)
    followed at once by a plain ``nn.ReLU``; the layer once in that Sequential, the ReLU
    nowhere in ``model`` but after such layers."""
    found: dict[int, Chain] = {}
    seen: dict[int, int] = {}  # id(module) -> its places in the module tree
    for _, m in model.named_modules(remove_duplicate=False):
        seen[id(m)] = seen.get(id(m), 0) + 1
    for S in model.modules():
        if type(S) is not nn.Sequential or "forward" in S.__dict__:
            continue
        items = [(k, m) for k, m in S._modules.items() if m is not None]
        counts: dict[int, int] = {}
        for _, m in items:
            counts[id(m)] = counts.get(id(m), 0) + 1
        for (kl, L), (kr, R) in zip(items, items[1:]):
            infos = owners.get(id(L))
            if (infos is None or len(infos) != 1 or not infos[0].has_output
                    or counts[id(L)] != 1 or type(R) is not nn.ReLU
                    or id(L) in found):
                continue
            found[id(L)] = Chain(L, R, S, kl, kr, infos[0])
    # a ReLU also called elsewhere (after a module that is no such layer, or by a forward of
    # the user's) keeps its hook
    after: dict[int, int] = {}
    for c in found.values():
        after[c.rkey] = after.get(c.rkey, 0) + 1
    return {k: c for k, c in found.items() if after[c.rkey] == seen.get(c.rkey)}


def reads_values(n: int, s1: float, s2: float) -> bool:
    """Whether :meth:`~depthlab.torch.accumulators.Acc.add` given a tensor's host sums
    ``(s1, s2) = (sum x, sum x^2)`` of ``n`` entries reads the tensor's values: its sums
    cancel (``mean^2 > CANCELLATION_RATIO var``, ``mean = s1 / n``, ``var = s2 / n - mean^2``,
    taken again around an entry) or its norm ``sqrt(s2)`` is outside ``[NORM_LOW, NORM_HIGH]``
    (taken again, rescaled)."""
    e = s1 / n
    var = s2 / n - e * e
    if math.isfinite(var) and e * e > CANCELLATION_RATIO * var:
        return True
    r = math.sqrt(s2) if s2 >= 0.0 else math.nan
    return not NORM_LOW <= r <= NORM_HIGH
