"""What depthlab measures inside a ``torch.nn.Module``: weight layers, the activation and
normalization modules that follow them, and residual blocks.

Weight layers
    A module that owns (directly, not through a child) a parameter of >= 2 dimensions
    (normalizations, :data:`NORMS`, excepted: a ``LayerNorm((C, H, W))``'s gain is a follower's):
    ``Linear``, ``Conv1d/2d/3d``, ``ConvTranspose*``, ``Embedding``, ``Bilinear``,
    ``RNN/LSTM/GRU`` (all their ``weight_ih``/``weight_hh`` pooled), any custom module with such
    a parameter. ``MultiheadAttention`` gives two layers: ``NAME`` (the input projection
    ``in_proj_weight`` or ``q/k/v_proj_weight``; its output is internal to the attention
    function, so only weight quantities are measured) and ``NAME.out_proj`` (whose output is
    the attention module's output). The model itself counts only when it has no children (a
    parameter such as a learned position table on the top-level module is not a layer), and
    any other module only when none of its submodules owns such a weight (torchvision ViT's
    ``Encoder.pos_embedding`` beside its blocks is no more a layer than a top-level one; a
    custom layer with an activation or dropout module as its child still is), unless its
    forward uses one of its own such weights as the weight of a linear map (``F.linear``,
    ``conv*``, ``@``/``matmul``, ``mm``/``bmm``/``addmm``, ``einsum``, ``bilinear``,
    ``embedding``: :data:`MAP_OPERATIONS`), as a hand-written ``LoRALinear`` with its own
    frozen ``weight`` beside its adapters, or OpenAI CLIP's ``visual`` returning
    ``x @ self.proj``: then it is a layer of those weights alone (``proj``, not the added
    ``positional_embedding``). A forward tells: the first armed pass of
    :class:`~depthlab.torch.hooks.Recording` watches such modules' calls with a
    ``TorchFunctionMode`` (:class:`MapWatch`; no mode where the model has no such module),
    and :data:`MAPPED` keeps the answer for :func:`weight_modules`.
    Layers are numbered 1, 2, ... in the order they first run
    in a forward pass (:func:`discover`); a module that never runs gets no number.

Followers
    The activation (:data:`ACTIVATIONS`) or normalization (:data:`NORMS`) module whose input is
    the very tensor a layer produced (optionally a normalization and then an activation, as in
    conv -> BatchNorm -> ReLU). Functional activations (``F.relu`` inside ``forward``) are not
    modules and are not seen.

Residual blocks
    A module with children whose forward pass adds two paths that both start at its input
    (``y = F(x) + x`` or ``F(x) + downsample(x)``: an ``add`` node of the autograd graph both of
    whose operands depend on the input), innermost such module owning each ``add``; e.g.
    torchvision's ``BasicBlock``/``Bottleneck`` and ``nn.TransformerEncoderLayer``.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
import random
import sys
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.overrides import TorchFunctionMode

from ..activations import get_activation
from ..probes.stats import SATURATION_RATIO

__all__ = [
    "ACTIVATIONS",
    "NORMS",
    "ActivationSpec",
    "LayerInfo",
    "activation_spec",
    "check_materialized",
    "check_model",
    "check_nonempty_weights",
    "discover",
    "feature_axis",
    "is_norm",
    "none_ran",
    "output_feature_axis",
    "own_weights",
    "replaced_forward",
    "weight_modules",
]


# ----------------------------------------------------------------------------------------------
# activations: derivative f'(s) and sup |f'|


@dataclass(frozen=True)
class ActivationSpec:
    """An elementwise activation module seen by the probes.

    ``derivative(s)`` computes ``f'(s)`` (same shape, float dtype of ``s``); ``max_derivative``
    is ``sup_s |f'(s)|`` (the saturation threshold is ``SATURATION_RATIO * max_derivative``);
    ``relu_family`` marks activations whose units are *inactive* (not saturated) for ``s <= 0``
    (ReLU, LeakyReLU, ELU, SELU, CELU, GELU, SiLU, Mish, ReLU6, Hardswish: the same family as
    ``depthlab.probes.stats.RELU_FAMILY``; ``inactive_frac``); ``bounded`` marks activations
    with a bounded range (sigmoid, tanh, softsign, hardtanh, ...) whose units saturate
    (``saturated_frac``); ``function(s)`` evaluates ``f`` without
    touching its input (for theory).
    """

    name: str
    derivative: Callable[[torch.Tensor], torch.Tensor]
    function: Callable[[torch.Tensor], torch.Tensor]
    max_derivative: float
    relu_family: bool
    bounded: bool
    scalar: bool = True
    """One function for every unit (False: PReLU with a learned slope per channel, which
    ``derivative`` applies along axis 1 and the theory's scalar Gaussian integrals cannot)."""
    mean_function: Callable[[torch.Tensor], torch.Tensor] | None = None
    """For an activation with random draws (RReLU in training mode), ``E f(s)`` over the
    draws where ``function`` gives their root-mean-square value (the theory's ``E f^2``);
    None: ``function`` is both."""

    def saturated(self, s: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        """Boolean mask of the saturated entries of input ``s`` (``d = |f'(s)|``): ``d <
        SATURATION_RATIO * max_derivative``; for a ReLU-family activation with a bounded
        range (ReLU6) only on its upper side ``s > 0``, its flat side ``s <= 0`` being
        *inactive* (``inactive_frac``): an inactive unit is not saturated, as in the NumPy
        probes."""
        mask = d < SATURATION_RATIO * self.max_derivative
        return mask & (s > 0) if self.relu_family else mask


def _max_deriv(name: str, **kw) -> float:
    return float(get_activation(name, **kw).max_derivative)


def _autograd_derivative(fn: Callable[[torch.Tensor], torch.Tensor]
                         ) -> Callable[[torch.Tensor], torch.Tensor]:
    def d(s: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            leaf = s.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(fn(leaf).sum(), leaf)
        return g

    return d


def _grid_sup(d: Callable[[torch.Tensor], torch.Tensor]) -> float:
    """``max |f'|`` on a fine grid of [-30, 30] (float64) for activations without a table."""
    s = torch.linspace(-30.0, 30.0, 60001, dtype=torch.float64)
    return float(d(s).abs().max())


def replaced_forward(m: nn.Module) -> str | None:
    """The name of the method (``forward``, a conv's ``_conv_forward``) that the instance
    ``m`` replaced by one of its own (``m.forward = types.MethodType(f, m)``, a patched
    ``functools.partial``), else None. A wrapper that only calls the class's own method (its
    ``__wrapped__``, as accelerate's device hooks set) is no replacement."""
    for n in ("forward", "_conv_forward"):
        fn = vars(m).get(n)
        if fn is None:
            continue
        own = getattr(type(m), n, None)
        inner = getattr(fn, "__wrapped__", None)
        if own is not None and getattr(inner, "__func__", inner) is own:
            continue
        return n
    return None


def activation_spec(module: nn.Module) -> ActivationSpec | None:
    """The :class:`ActivationSpec` of an activation module, or None if it is not one of
    :data:`ACTIVATIONS`, or its ``forward`` was replaced on the instance
    (:func:`replaced_forward`: a Tanh patched to compute a ReLU had its saturated_frac counted
    by tanh's derivative, 0.18 where nothing saturates)."""
    for cls, make in _SPECS:
        if type(module) is cls:
            return None if replaced_forward(module) else make(module)
    return None


def _relu(m):
    return ActivationSpec("relu", lambda s: (s > 0).to(s.dtype), torch.relu, 1.0, True, False)


def _leaky(m):
    k = float(m.negative_slope)
    return ActivationSpec(
        "leaky_relu", lambda s: torch.where(s > 0, 1.0, k).to(s.dtype),
        lambda s: torch.nn.functional.leaky_relu(s, k), max(1.0, abs(k)), True, False)


def _rrelu(m):
    """RReLU: ``s`` for ``s > 0``, ``a s`` otherwise, ``a`` drawn uniformly from ``[lower,
    upper]`` for every entry in training mode, their mean in eval mode (torch's own eval
    function). The act rows are measured on the actual output. In eval mode ``function`` /
    ``derivative`` are the mean slope's; in training mode (read when called) the slope is the
    draws' root mean square ``sqrt(E a^2) = sqrt((lower^2 + lower upper + upper^2) / 3)``
    (signed as their mean), so the theory's ``E f(s)^2`` and ``E f'(s)^2`` are the random
    slope's (the mean slope missed ``(upper - lower)^2 / 12`` of ``E a^2``: 0.3% of ``E f^2``
    at the default bounds, but 5 layers of RReLU(0, 1) had layer 1's ``grad_pre_std`` predicted
    0.83x the measurement, RReLU(-1, 1) 0.48x), and a unit below 0 keeps a nonzero slope as
    its draws do (RReLU(-1, 1), mean slope 0, counted units whose inputs are all negative as
    dead while each has a gradient); ``mean_function`` is the mean slope's, ``E f(s)``."""
    lo, hi = float(m.lower), float(m.upper)
    mean = (lo + hi) / 2
    rms = math.copysign(math.sqrt((lo * lo + lo * hi + hi * hi) / 3), mean if mean else 1.0)

    def slope() -> float:
        return rms if m.training else mean

    return ActivationSpec(
        "rrelu", lambda s: torch.where(s > 0, 1.0, slope()).to(s.dtype),
        lambda s: torch.nn.functional.leaky_relu(s, slope()), max(1.0, abs(lo), abs(hi)),
        True, False, mean_function=lambda s: torch.nn.functional.leaky_relu(s, mean))


def _threshold(m):
    """Threshold: ``s`` for ``s > threshold``, ``value`` otherwise (``f' = 0`` there); of the
    ReLU family (inactive entries ``s <= 0``) when the threshold is 0."""
    t, v = float(m.threshold), float(m.value)
    return ActivationSpec(
        "threshold", lambda s: (s > t).to(s.dtype),
        lambda s: torch.nn.functional.threshold(s, t, v), 1.0, t == 0.0, False)


def _prelu(m):
    """PReLU ``f(s) = s`` for ``s > 0``, ``a s`` otherwise, ``a`` learned: one slope, or one
    per channel on axis 1 (torch's layout); read when called, so the spec follows training.
    Per-channel slopes that are all equal (``nn.PReLU(C)`` at its init, every ``a_c = 0.25``)
    are one function, ``scalar``, as ``nn.PReLU()`` is: the theory's integrals take it."""
    w = m.weight

    def slope(s: torch.Tensor) -> torch.Tensor:
        a = w.detach().to(device=s.device, dtype=s.dtype)
        if a.numel() == 1:
            return a.reshape(())
        if s.dim() >= 2:  # a layer's output: each channel its own slope
            return a.reshape((1, -1) + (1,) * (s.dim() - 2))
        # the theory's nodes (1-d): the one slope of equal ones
        return a[0] if bool((a == a[0]).all()) else a

    flat = w.detach().reshape(-1)
    return ActivationSpec(
        "prelu", lambda s: torch.where(s > 0, torch.ones_like(s), slope(s)),
        lambda s: torch.where(s > 0, s, slope(s) * s),
        max(1.0, float(w.detach().abs().max())) if w.numel() else 1.0, True, False,
        scalar=w.numel() == 1 or (w.numel() > 1 and bool((flat == flat[0]).all())))


def _neg_exp(s: torch.Tensor, scale: float = 1.0, alpha: float = 1.0) -> torch.Tensor:
    """``1`` for ``s > 0``, ``alpha exp(s / scale)`` otherwise (ELU/CELU/SELU derivatives)."""
    return torch.where(s > 0, torch.ones_like(s), alpha * torch.exp(torch.clamp(s, max=0) / scale))


def _elu(m):
    a = float(m.alpha)
    return ActivationSpec(
        "elu", lambda s: _neg_exp(s, alpha=a),
        lambda s: torch.nn.functional.elu(s, a), max(1.0, abs(a)), True, False)


def _selu(m):
    lam, alpha = 1.0507009873554804934193349852946, 1.6732632423543772848170429916717
    return ActivationSpec(
        "selu", lambda s: lam * _neg_exp(s, alpha=alpha),
        torch.selu, _max_deriv("selu"), True, False)


def _celu(m):
    a = float(m.alpha)
    return ActivationSpec(
        "celu", lambda s: _neg_exp(s, scale=a),
        lambda s: torch.nn.functional.celu(s, a), 1.0, True, False)


def _gelu(m):
    if m.approximate == "none":
        def d(s):
            phi = torch.exp(-0.5 * s * s) / math.sqrt(2 * math.pi)
            return 0.5 * (1 + torch.erf(s / math.sqrt(2))) + s * phi
        return ActivationSpec("gelu", d, torch.nn.functional.gelu, _max_deriv("gelu"), True, False)

    def f(s):
        return torch.nn.functional.gelu(s, approximate="tanh")
    d = _autograd_derivative(f)
    return ActivationSpec("gelu_tanh", d, f, _grid_sup(d), True, False)


def _silu(m):
    def d(s):
        g = torch.sigmoid(s)
        return g * (1 + s * (1 - g))
    return ActivationSpec("silu", d, torch.nn.functional.silu, _max_deriv("swish"), True, False)


def _sigmoid(m):
    def d(s):
        g = torch.sigmoid(s)
        return g * (1 - g)
    return ActivationSpec("sigmoid", d, torch.sigmoid, 0.25, False, True)


def _tanh(m):
    def d(s):
        t = torch.tanh(s)
        return 1 - t * t
    return ActivationSpec("tanh", d, torch.tanh, 1.0, False, True)


def _softsign(m):
    return ActivationSpec("softsign", lambda s: 1.0 / (1.0 + s.abs()) ** 2,
                          torch.nn.functional.softsign, 1.0, False, True)


def _mish(m):
    d = _autograd_derivative(torch.nn.functional.mish)
    return ActivationSpec("mish", d, torch.nn.functional.mish, _max_deriv("mish"), True, False)


def _softplus(m):
    beta, thr = float(m.beta), float(m.threshold)

    def d(s):
        return torch.where(s * beta > thr, torch.ones_like(s), torch.sigmoid(beta * s))
    return ActivationSpec("softplus", d,
                          lambda s: torch.nn.functional.softplus(s, beta, thr), 1.0, False, False)


def _hardtanh(m):
    lo, hi = float(m.min_val), float(m.max_val)
    name = "relu6" if type(m) is nn.ReLU6 else "hardtanh"
    return ActivationSpec(name, lambda s: ((s > lo) & (s < hi)).to(s.dtype),
                          lambda s: torch.clamp(s, lo, hi), 1.0, name == "relu6", True)


def _hardsigmoid(m):
    return ActivationSpec("hardsigmoid", lambda s: ((s > -3) & (s < 3)).to(s.dtype) / 6.0,
                          torch.nn.functional.hardsigmoid, 1.0 / 6.0, False, True)


def _hardswish(m):
    def d(s):
        mid = (2 * s + 3) / 6
        return torch.where(s <= -3, torch.zeros_like(s),
                           torch.where(s >= 3, torch.ones_like(s), mid))  # torch's convention
    return ActivationSpec("hardswish", d, torch.nn.functional.hardswish, 1.5, True, False)


def _logsigmoid(m):
    return ActivationSpec("logsigmoid", lambda s: torch.sigmoid(-s),
                          torch.nn.functional.logsigmoid, 1.0, False, False)


def _tanhshrink(m):
    return ActivationSpec("tanhshrink", lambda s: torch.tanh(s) ** 2,
                          torch.nn.functional.tanhshrink, 1.0, False, False)


def _shrink(m):
    """``Softshrink``/``Hardshrink``: 0 on ``[-lambd, lambd]``, ``s -+ lambd`` (soft) or ``s``
    (hard) outside; ``f' = 1`` outside."""
    lam = float(m.lambd)
    soft = type(m) is nn.Softshrink
    fn = torch.nn.functional.softshrink if soft else torch.nn.functional.hardshrink
    return ActivationSpec("softshrink" if soft else "hardshrink",
                          lambda s: (s.abs() > lam).to(s.dtype), lambda s: fn(s, lam), 1.0,
                          False, False)


def _swish(m):
    """depthlab.bridge's ``Swish`` (``s sigmoid(beta s)``; ``nn.SiLU`` is beta = 1)."""
    beta = float(m.beta)

    def f(s):
        return s * torch.sigmoid(beta * s)

    def d(s):
        g = torch.sigmoid(beta * s)
        return g + beta * s * g * (1 - g)
    return ActivationSpec("swish", d, f, _max_deriv("swish", beta=beta), True, False)


def _penalized_tanh(m):
    """depthlab.bridge's ``PenalizedTanh`` (``tanh(s)`` for s > 0, ``a tanh(s)`` otherwise)."""
    a = float(m.a)

    def f(s):
        t = torch.tanh(s)
        return torch.where(s > 0, t, a * t)

    def d(s):
        t = torch.tanh(s)
        return torch.where(s > 0, 1 - t * t, a * (1 - t * t))
    return ActivationSpec("penalized_tanh", d, f, _max_deriv("penalized_tanh", a=a), False,
                          True)


def _step(m):
    """depthlab.bridge's ``Step`` (``1[s > 0]``: ``f' = 0``, a bounded range)."""
    return ActivationSpec("step", torch.zeros_like, lambda s: (s > 0).to(s.dtype),
                          _max_deriv("step"), False, True)


def _bridge_specs() -> list[tuple[type, Callable[[nn.Module], ActivationSpec]]]:
    """The activation modules :mod:`depthlab.bridge.torch_bridge` writes for depthlab
    activations torch has no module for (a bridged network's probe rows match ``dl.probe``)."""
    from ..bridge.torch_bridge import PenalizedTanh, Step, Swish

    return [(Swish, _swish), (PenalizedTanh, _penalized_tanh), (Step, _step)]


_SPECS: list[tuple[type, Callable[[nn.Module], ActivationSpec]]] = [
    (nn.ReLU, _relu), (nn.LeakyReLU, _leaky), (nn.PReLU, _prelu), (nn.ELU, _elu), (nn.SELU, _selu),
    (nn.CELU, _celu), (nn.GELU, _gelu), (nn.SiLU, _silu), (nn.Sigmoid, _sigmoid),
    (nn.Tanh, _tanh), (nn.Softsign, _softsign), (nn.Mish, _mish), (nn.Softplus, _softplus),
    (nn.Hardtanh, _hardtanh), (nn.ReLU6, _hardtanh), (nn.Hardsigmoid, _hardsigmoid),
    (nn.Hardswish, _hardswish), (nn.LogSigmoid, _logsigmoid), (nn.Tanhshrink, _tanhshrink),
    (nn.Softshrink, _shrink), (nn.Hardshrink, _shrink), (nn.RReLU, _rrelu),
    (nn.Threshold, _threshold),
    *_bridge_specs(),
]

ACTIVATIONS: tuple[type, ...] = tuple(cls for cls, _ in _SPECS)
"""Activation module classes the probes recognise (exact class match)."""

NORMS: tuple[type, ...] = (
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.LayerNorm,
    nn.GroupNorm, nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.RMSNorm,
    nn.LocalResponseNorm,
)
"""Normalization module classes the probes recognise (and subclasses)."""


def is_norm(module: nn.Module) -> bool:
    return isinstance(module, NORMS)


# ----------------------------------------------------------------------------------------------
# weight layers

_CHANNEL_FIRST = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
                  nn.ConvTranspose3d)


def feature_axis(module: nn.Module) -> int:
    """Axis of a layer's output that indexes its units (features): the channels of a
    convolution over ``d`` spatial dimensions, ``-(d + 1)`` (axis 1 of a batch ``(N, C, ...)``
    and axis 0 of an unbatched input ``(C, ...)``, where axis 1 was taken and a dead channel
    was not counted), -1 (the last) otherwise. ``dead_frac`` counts units along this axis."""
    if isinstance(module, _CHANNEL_FIRST):
        return -len(module.kernel_size) - 1
    return -1


_KNOWN_LAYOUT = (nn.Linear, nn.Bilinear, nn.Embedding, nn.EmbeddingBag, nn.RNNBase,
                 nn.RNNCellBase, nn.MultiheadAttention, *_CHANNEL_FIRST)


def output_feature_axis(module: nn.Module, weights: list[torch.Tensor], x: object,
                        out: torch.Tensor) -> int:
    """:func:`feature_axis` refined on a layer's first call: a custom module (no torch layer
    class) with one convolution-shaped weight ``(C_out, C_in, *kernel)`` that maps an input
    ``x`` of ``(N, G C_in, *spatial)`` to ``(N, C_out, *spatial')`` (or unbatched, without
    ``N``; the output's last axis then not of size ``C_out``) has its units on the channel
    axis, as ``nn.ConvNd``: a weight-standardized conv written with ``F.conv2d`` had
    ``dead_frac`` counted along the image width (0.0 with one of its 4 channels dead); one
    matrix applied from the left, ``W @ x`` (:func:`_left_product_axis`), likewise on axis -2.
    Else :func:`feature_axis`."""
    axis = feature_axis(module)
    if isinstance(module, _KNOWN_LAYOUT) or len(weights) != 1:
        return axis
    w = weights[0]
    d = w.dim()
    if d == 2:
        return _left_product_axis(w, x, out, axis)
    if d < 3 or out.dim() not in (d, d - 1) or out.shape[-(d - 1)] != w.shape[0]:
        return axis
    if not (isinstance(x, torch.Tensor) and x.dim() == out.dim() and w.shape[1] > 0
            and x.shape[-(d - 1)] % w.shape[1] == 0):
        return axis
    if out.dim() == d - 1 and out.shape[-1] == weights[0].shape[0]:
        return axis  # (N, C_out) of a bilinear-like weight (C_out, in1, in2)
    return -(d - 1)


def _left_product_axis(w: torch.Tensor, x: object, out: torch.Tensor, axis: int) -> int:
    """The units' axis of a custom module with one matrix ``W`` applied from the left,
    ``W @ x`` on ``x`` of ``(..., I, L)`` giving ``(..., O, L)`` (a 1x1 convolution or a
    channel mixing written as a product, ``W`` of ``(O, I)`` or ``(I, O)``): -2, where the
    last axis keeps ``x``'s length and is of neither of ``W``'s sizes, so it cannot hold the
    units (``dead_frac`` was counted along the positions: 0.0 with 1 of 4 channels dead).
    Else ``axis``."""
    if not isinstance(x, torch.Tensor) or out.dim() < 2 or x.dim() != out.dim():
        return axis
    if out.shape[-1] in w.shape or x.shape[-1] != out.shape[-1]:
        return axis
    pair = (out.shape[-2], x.shape[-2])
    return -2 if tuple(w.shape) in (pair, pair[::-1]) else axis


def check_model(model: object) -> nn.Module:
    """Raise a clear TypeError for anything but a plain ``nn.Module``; returns the model."""
    if isinstance(model, type) and issubclass(model, nn.Module):  # dlt.probe(nn.Linear, ...)
        raise TypeError(f"model must be a torch.nn.Module, got the class {model.__name__} "
                        f"itself; expected an instance ({model.__name__}(...))")
    if not isinstance(model, nn.Module) and callable(model) and not isinstance(model, type) \
            and getattr(model, "__code__", None) is not None \
            and model.__code__.co_argcount == 0:  # a factory: def make_model(): ...
        raise TypeError(f"model must be a torch.nn.Module, got the function "
                        f"{getattr(model, '__name__', type(model).__name__)!r}, which takes no "
                        "arguments; expected the module it makes (call it: model = "
                        f"{getattr(model, '__name__', 'make_model')}())")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        raise TypeError(f"{type(model).__name__} models are not supported; pass the wrapped "
                        "module (model.module)")
    scripted = next((n for n, m in model.named_modules()
                     if isinstance(m, torch.jit.ScriptModule)), None)
    if scripted is not None:  # torch: 'register_forward_pre_hook is not supported on
        # ScriptModules', a RuntimeError naming neither the module nor the way out
        what = f"module {scripted!r} of {type(model).__name__} is" if scripted else \
            f"{type(model).__name__} is"
        raise TypeError(f"{what} a TorchScript module (torch.jit.script or torch.jit.trace), "
                        "which takes no hooks; pass the original nn.Module")
    dynamo = sys.modules.get("torch._dynamo.eval_frame")  # imported once anything compiled
    if dynamo is not None and isinstance(model, dynamo.OptimizedModule):
        raise TypeError("compiled models (torch.compile) are not supported; pass the original "
                        "module (model._orig_mod)")
    # nn.Module.compile() compiles in place (the module is still plain): the hooks then ran
    # inside the compiled forward, where the activation rows (act_*, dead_frac, ...) were
    # silently lost and every recorded step recompiled; so for a compiled submodule
    compiled = next((n for n, m in model.named_modules()
                     if getattr(m, "_compiled_call_impl", None) is not None
                     or (dynamo is not None and isinstance(m, dynamo.OptimizedModule))), None)
    if compiled is not None:
        what = f"module {compiled!r} of {type(model).__name__} is" if compiled else \
            f"{type(model).__name__} is"
        raise TypeError(f"{what} compiled (model.compile() or torch.compile), whose compiled "
                        "forward would run depthlab's hooks and lose rows; pass a module that "
                        "is not compiled")
    inlined = _inlined_weights(model)
    if inlined:
        raise TypeError(f"{type(model).__name__} is a graph (torch.export(...).module() or an fx "
                        f"GraphModule) that reads the weights of {', '.join(inlined[:3])} "
                        "directly instead of calling their modules, so no layer's forward runs "
                        "and nothing would be measured; pass the original nn.Module")
    return model


def _inlined_weights(model: nn.Module) -> list[str]:
    """For an fx ``GraphModule`` that calls none of its weight-owning submodules but reads
    their weights as graph attributes (``torch.export(model, args).module()``), the names of
    those modules; else ``[]``. (``dlt.probe`` ran it and said the weights were 'read
    directly, e.g. F.linear(x, self.0.weight)', suggesting an edit of a generated graph; a
    Watch warned at its first record only.) A traced graph that calls its modules
    (``torch.fx.symbolic_trace``) is measured as the original."""
    fx = sys.modules.get("torch.fx.graph_module")
    if fx is None or not isinstance(model, fx.GraphModule):
        return []
    owners = {n: m for n, m in model.named_modules()
              if n and any(p.dim() >= 2 for p in m.parameters(recurse=False))}
    if not owners:
        return []
    read: list[str] = []
    for node in model.graph.nodes:
        target = str(node.target)
        if node.op == "call_module" and target in owners:
            return []
        if node.op == "get_attr" and "." in target:
            owner = target.rsplit(".", 1)[0]
            if owner in owners and repr(owner) not in read:
                read.append(repr(owner))
    return read


def check_materialized(model: nn.Module) -> nn.Module:
    """Raise a one-line ValueError when a parameter or buffer of ``model`` is on the ``meta``
    device (shapes without values: ``torch.device('meta')`` construction, ``to_empty`` not
    yet called), where every statistic is undefined (torch raised 'Cannot copy out of meta
    tensor; no data!' or 'Tensor.item() cannot be called on meta tensors' from deep inside
    the probe); returns the model. :func:`discover` computes no statistic and takes such a
    model."""
    named = [*model.named_parameters(), *model.named_buffers()]
    meta = next((n for n, t in named if t.device.type == "meta"), None)
    if meta is not None:
        raise ValueError(f"{meta!r} of {type(model).__name__} is on the 'meta' device (a shape "
                         "without values), so nothing can be measured; expected a model with "
                         "values (model.to_empty(device='cpu') and initialize it, or "
                         "load_state_dict(..., assign=True))")
    return model


def check_nonempty_weights(ran: Iterable[tuple[str, nn.Module]]) -> None:
    """Raise a one-line ValueError naming the first ``(name, module)`` of the layers a forward
    ran whose weights (:func:`own_weights`) all have no entries (``nn.Linear(5, 0)``,
    ``nn.Linear(0, 8)``, ``nn.Conv2d(3, 0, 3)``): its ``weight_std`` =
    sqrt(sum(w^2) / n - (sum(w) / n)^2) has ``n = 0`` (``dlt.probe`` failed with
    'ZeroDivisionError: float division by zero', ``dlt.predict`` with 'cannot reshape tensor of
    0 elements'). Such a module that the forward never calls is left alone, as before."""
    for name, module in ran:
        weights = own_weights(module)
        if weights and all(p.numel() == 0 for _, p in weights):
            pname, p = weights[0]
            raise ValueError(f"layer {name or type(module).__name__!r} "
                             f"({type(module).__name__}) has {pname} of shape "
                             f"{tuple(p.shape)}, no entries, so it has no statistics; expected "
                             "every layer the forward runs to have at least one input and one "
                             "output unit")


def own_weights(module: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The parameters of >= 2 dims that ``module`` owns; for a tensor parametrized with
    ``torch.nn.utils.parametrize`` (``weight_norm``, ``spectral_norm``, ``orthogonal``, ...)
    the trainable original it is computed from (the largest of several, e.g. weight norm's
    direction ``v`` rather than its magnitudes ``g``; the same for the deprecated
    ``torch.nn.utils.weight_norm``). A ``MultiheadAttention``'s ``bias_k``/``bias_v``
    (``add_bias_kv=True``: shape ``(1, 1, E)``, biases appended to the keys and values) are
    not weights of its input projection. Only real floating-point parameters are weights: a
    complex one (``nn.Linear(..., dtype=torch.cfloat)``) is not measured (its module's output
    is complex too); ``dlt.probe`` and ``Watch`` ran the model and then failed inside torch
    ('linalg.vector_norm: dtype should be complex for complex inputs'). A module of a class
    not from torch with a matrix or kernel beside parameters shaped to broadcast (at most one
    dimension > 1: a bias ``(1, out)`` or ``(1, C, 1, 1)``, :func:`_broadcast_vector`) owns
    only the former."""
    own = [(n, p) for n, p in module.named_parameters(recurse=False)
           if p.dim() >= 2 and p.is_floating_point()]
    if isinstance(module, nn.MultiheadAttention):  # pooled with the projections, they moved
        # weight_std 0.2529 -> 0.2533 and weight_grad_std 0.0130 -> 0.0125 (add_bias_kv=True)
        own = [(n, p) for n, p in own if n not in ("bias_k", "bias_v")]
    # the deprecated torch.nn.utils.weight_norm: a forward pre-hook computes ``NAME`` from
    # ``NAME_v`` and the magnitudes ``NAME_g`` (2-dim for a Linear: pooled with v, they
    # made weight_std 0.326 where v's is 0.255); v alone, as with the parametrization
    magnitudes = {f"{h.name}_g" for h in module._forward_pre_hooks.values()
                  if type(h).__name__ == "WeightNorm" and hasattr(h, "name")}
    if magnitudes:
        own = [(n, p) for n, p in own if n not in magnitudes]
    for tensor_name, plist in getattr(module, "parametrizations", {}).items():
        originals = [(f"parametrizations.{tensor_name}.{n}", p)
                     for n, p in plist.named_parameters(recurse=False)
                     if p.dim() >= 2 and p.is_floating_point()]
        if originals:
            own.append(max(originals, key=lambda np_: np_[1].numel()))
    if len(own) > 1 and not type(module).__module__.startswith("torch."):
        # a hand-written layer's bias or gain shaped to broadcast, (1, out) beside W (in, out),
        # (1, C, 1, 1) beside a kernel, is no weight of its map: pooled with the kernel it
        # made weight_std 4.71 (the kernel's 0.21, a bias of -50 in it) and, two weights being
        # no convolution layout, dead_frac was counted along the image width (0.0, 1 of 4
        # channels dead). torch's own layers keep theirs (a GRU's weight_hh (3, 1) at hidden 1)
        matrices = [(n, p) for n, p in own if not _broadcast_vector(p)]
        if matrices:
            own = matrices
    return own


def _broadcast_vector(p: torch.Tensor) -> bool:
    """A parameter of >= 2 dims with at most one of size > 1: a vector shaped to broadcast
    (a bias ``(1, out)`` or ``(1, C, 1, 1)``, a per-channel gain), not a matrix or kernel."""
    return sum(1 for s in p.shape if s > 1) <= 1


def layer_weights(module: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The weights a layer's ``weight_*`` and ``update_ratio`` rows are of: :func:`own_weights`,
    except for a parametrized tensor whose original is frozen (``requires_grad=False``) while
    the parametrization's own modules hold trainable parameters of >= 2 dims, a low-rank
    adapter ``W + B A`` registered with ``torch.nn.utils.parametrize`` on a frozen pretrained
    ``W`` (LoRA): then those trainable tensors, pooled (``A`` and ``B``), which are what
    training changes (the frozen original gave a constant ``weight_std``, ``update_ratio``
    0.0 at every step and no ``weight_grad_*`` rows while the weight the layer uses moved).
    The re-initializations of the doctor keep :func:`own_weights` (a frozen original is
    kept, and so is the adapter)."""
    own = own_weights(module)
    for tensor_name, plist in getattr(module, "parametrizations", {}).items():
        prefix = f"parametrizations.{tensor_name}."
        mine = [(n, p) for n, p in own if n.startswith(prefix)]
        if not mine or mine[0][1].requires_grad:
            continue
        adapters = [(prefix + n, p) for n, p in plist.named_parameters()
                    if "." in n and p.dim() >= 2 and p.is_floating_point() and p.requires_grad]
        if adapters:
            own = [(n, p) for n, p in own if not n.startswith(prefix)] + adapters
    return own


@dataclass
class LayerInfo:
    """One weight layer.

    ``index`` (1-based, first-execution order; 0 until the layer has run), ``name`` (dotted
    name from ``model.named_modules()``; ``NAME.out_proj`` for attention outputs), ``module``
    (whose forward output is the layer's output, or None when it is internal, as for an
    attention input projection), ``owner`` (the module whose forward hook sees it), ``weights``
    (the parameters of >= 2 dims pooled as the layer's ``W``), ``kind`` (class name),
    ``feature_axis`` (see :func:`feature_axis`), ``activation`` / ``norm`` (names of the
    follower modules seen in the last pass, or None), ``calls`` (forward calls seen while
    hooks were armed).
    """

    name: str
    owner: nn.Module
    weights: list[nn.Parameter]
    kind: str
    feature_axis: int = -1
    has_output: bool = True
    index: int = 0
    norm: str | None = None
    activation: str | None = None
    calls: int = 0

    def __repr__(self) -> str:
        """One short line per layer, the weights as their shapes: the dataclass repr printed
        ``owner`` (the whole module) and every weight tensor, so ``print(dlt.discover(model,
        x))`` of a 3-layer MLP was a wall of ~60 lines of numbers."""
        shapes = ", ".join(str(tuple(w.shape)) for w in self.weights)
        extra = "" if self.has_output else ", has_output=False"
        return (f"LayerInfo(index={self.index}, name={self.name!r}, kind={self.kind!r}, "
                f"weights=[{shapes}], feature_axis={self.feature_axis}, norm={self.norm!r}, "
                f"activation={self.activation!r}, calls={self.calls}{extra})")


def check_initialized(model: nn.Module) -> None:
    """Refuse in one line a model with a lazy module not yet run (``nn.LazyLinear``):
    torch's own error ('Attempted to use an uninitialized parameter', several lines) named
    no module, and ``dlt.predict`` raised it from its check of the weights."""
    lazy = [(n, type(m).__name__) for n, m in model.named_modules()
            if any(isinstance(p, nn.parameter.UninitializedParameter)
                   for p in m.parameters(recurse=False))]
    if lazy:
        n, kind = lazy[0]
        raise ValueError(f"module {n!r} ({kind}) of {type(model).__name__} has uninitialized "
                         "lazy parameters: run the model once on a batch (model(x)) before "
                         "attaching depthlab")


def _weight_holders(model: nn.Module) -> set[int]:
    """``id`` of every module of ``model`` that owns a weight a layer could be of (a real
    floating-point parameter of >= 2 dims, normalizations excepted), the modules that compute
    a parametrized weight left out (they belong to the parametrized module)."""
    inner = {id(c) for m in model.modules() if parametrize.is_parametrized(m)
             for c in m.parametrizations.modules()}
    return {id(m) for m in model.modules()
            if id(m) not in inner and not is_norm(m) and own_weights(m)}


def _holds_layers(module: nn.Module, holders: set[int]) -> bool:
    """Whether a submodule of ``module`` (not itself, not its parametrizations) owns a weight:
    then ``module``'s own parameters sit beside layers, as the model's own do (torchvision
    ViT's ``Encoder.pos_embedding`` ``(1, S, D)`` beside its encoder blocks, Swin's
    ``relative_position_bias_table`` beside the attention's ``qkv``/``proj``, Mamba's
    ``A_log``, a ``(1, D)`` shift in an MLP body): its output is its children's, not that of
    a map by those parameters, and it is no layer (it gave a "layer" whose ``pre_*`` rows
    repeated the last child's output, e.g. a LayerNorm's std 1.0, shifted the numbering of
    every later layer, and made ``dlt.predict`` refuse the model by its name).
    ``MultiheadAttention`` holds none in this sense: its ``in_proj`` weight is a layer of its
    own beside ``out_proj`` (the doctor's ``init`` cures and residual ends kept it only so)."""
    if isinstance(module, nn.MultiheadAttention):
        return False
    inner = {id(c) for c in module.parametrizations.modules()} \
        if parametrize.is_parametrized(module) else set()
    return any(id(c) in holders and id(c) not in inner
               for c in module.modules() if c is not module)


MAPPED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
"""Modules holding child layers that a forward pass showed to be layers all the same: one of
their own >= 2-dim parameters was the weight of a linear map during their own forward
(:data:`MAP_OPERATIONS`; a hand-written ``LoRALinear``'s ``F.linear(x, self.weight) +
self.lora_B(self.lora_A(x))``, OpenAI CLIP's ``visual`` returning ``x @ self.proj``) ->
the names of those parameters, the layer's weights (CLIP's ``positional_embedding``, only
added, is not pooled with ``proj``). Added by :class:`depthlab.torch.hooks.Recording` in
its first armed pass; :func:`weight_modules` counts them as layers from then on."""

MAP_OPERATIONS: dict[str, tuple[int, ...] | None] = {
    **dict.fromkeys(("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d",
                     "conv_transpose2d", "conv_transpose3d", "embedding", "embedding_bag"),
                    (1,)),
    "bilinear": (2,),
    **dict.fromkeys(("matmul", "__matmul__", "__rmatmul__", "mm", "bmm", "mv", "tensordot"),
                    (0, 1)),
    **dict.fromkeys(("addmm", "baddbmm", "addbmm", "addmv"), (1, 2)),
    "einsum": None,
}
"""The torch functions (by ``__name__``) that apply a weight as a linear map, and the
positions of their arguments a weight can take (None: every tensor operand, ``einsum``);
the keyword arguments ``weight``, ``other``, ``mat2``, ``vec``, ``mat1``, ``batch1``,
``batch2`` count too. Addition, multiplication and indexing (a position table added to the
input, a LayerScale gain, Swin's bias table looked up) do not."""

MAP_KEYWORDS = ("weight", "other", "mat2", "vec", "mat1", "batch1", "batch2")


class MapWatch(TorchFunctionMode):
    """A ``TorchFunctionMode`` that notes, while active, which of the tensors in ``params``
    (``id(parameter)`` -> key) was the weight of a linear map (:data:`MAP_OPERATIONS`; a view
    of it, ``self.proj.T``, too) while ``active(key)`` holds: ``seen[key]`` gets its id."""

    def __init__(self, params: dict[int, int], active: Callable[[int], bool]) -> None:
        super().__init__()
        self.params = params
        self.active = active
        self.seen: dict[int, set[int]] = {}

    def _mapped(self, func, args: tuple, kwargs: dict) -> list[tuple[int, torch.Tensor]]:
        """``(key, parameter)`` of each watched tensor that ``func(*args, **kwargs)`` applies
        as the weight of a linear map (a view of it, ``self.proj.T``, counts as itself)."""
        name = getattr(func, "__name__", None)
        if name not in MAP_OPERATIONS:
            return []
        pos = MAP_OPERATIONS[name]
        if pos is None:
            operands = [a for b in args[1:] for a in (b if isinstance(b, (list, tuple))
                                                      else (b,))]
        else:
            operands = [args[i] for i in pos if i < len(args)]
        operands += [kwargs[k] for k in MAP_KEYWORDS if k in kwargs]
        found = []
        for t in operands:
            if not isinstance(t, torch.Tensor):
                continue
            if id(t) not in self.params and t._is_view():
                t = t._base
            key = self.params.get(id(t))
            if key is not None and self.active(key):
                found.append((key, t))
        return found

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        for key, t in self._mapped(func, args, kwargs):
            self.seen.setdefault(key, set()).add(id(t))
        return func(*args, **kwargs)


_WRAPPED = getattr(getattr(torch._C, "_functorch", None), "is_functorch_wrapped_tensor", None)


class MapCapture(MapWatch):
    """A :class:`MapWatch` over the whole forward that also keeps the output ``s = x W`` of
    every linear map whose weight is one of ``params`` (``id(parameter)`` -> key): weights no
    module's output tells (a model's own ``self.weight`` in ``F.linear(x, self.weight)`` beside
    child layers, the tensors of an ``nn.ParameterList``) and those of layer modules of the
    user's own class, whose output may be more than their map's (``torch.relu(x @ self.W +
    self.b)``). A bias added to such an output next, ``s + self.b`` (a parameter of at most
    one dimension above 1; also in place, ``s += self.b``), is part of it: ``s = x W + b``, as
    an ``nn.Linear``'s output; so is a constant gain next, ``s * 0.5``, ``s / c`` (a number).
    ``skip``: key -> operations not kept for it (an ``nn.Embedding``'s own ``embedding``
    lookup, where only its table's use as a tied output projection, ``h @ emb.weight.T``, is
    kept). ``calls``: ``[key, s, at]`` per map, ``at`` = ``where()`` when it ran (the layers
    numbered so far). The forward goes on with a copy of ``s`` (same values), so that
    in-place work on it (``h.relu_()``) leaves the kept ``s`` and its gradient ``dL/ds`` as
    the map gave them. Maps inside a ``torch.func`` transform (``vmap``) are not kept: their
    outputs are wrappers with no values once it ends."""

    ADDS = frozenset(("add", "__add__", "__radd__"))
    IN_PLACE = frozenset(("add_", "__iadd__"))
    SCALES = frozenset(("mul", "__mul__", "__rmul__", "__truediv__", "div"))

    def __init__(self, params: dict[int, int], where: Callable[[], int],
                 skip: dict[int, frozenset[str]] | None = None) -> None:
        super().__init__(params, lambda key: True)
        self.where = where
        self.skip = skip or {}  # key -> the operations that are its module's own use
        self.calls: list[list] = []
        self._open: dict[int, tuple[torch.Tensor, int]] = {}  # id(copy) -> (copy, call index)

    def _bias_of(self, args: tuple) -> int | None:
        """The call whose map output ``args`` adds a bias parameter to, or None."""
        ts = [a for a in args[:2] if isinstance(a, torch.Tensor)]
        if len(ts) != 2:
            return None
        for a, b in (ts, ts[::-1]):
            hit = self._open.get(id(a))
            base = b._base if b._is_view() else b
            if hit is not None and hit[0] is a and isinstance(base, nn.Parameter) \
                    and _broadcast_vector(b.reshape(1, -1) if b.dim() < 2 else b):
                return hit[1]
        return None

    def _scaled(self, args: tuple, name: str) -> int | None:
        """The call whose map output ``args`` multiplies (divides) by a Python number, a
        constant gain of the map (StyleGAN's equalized ``F.linear(x, self.W) * self.scale``),
        or None."""
        if len(args) != 2:
            return None
        a, c = args if name != "__rmul__" else args[::-1]
        if name in ("__truediv__", "div") and a is not args[0]:
            return None
        if isinstance(a, (int, float)) and name in ("mul", "__mul__", "__rmul__"):
            a, c = c, a
        hit = self._open.get(id(a)) if isinstance(a, torch.Tensor) else None
        ok = isinstance(c, (int, float)) and not isinstance(c, bool)
        return hit[1] if ok and hit is not None and hit[0] is a else None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        found = self._mapped(func, args, kwargs)
        name = getattr(func, "__name__", None)
        if found and self.skip:
            found = [(k, t) for k, t in found if name not in self.skip.get(k, ())]
        at = self._bias_of(args) if not found and self._open and not kwargs \
            and name in self.ADDS | self.IN_PLACE else None
        if at is None and not found and self._open and not kwargs and name in self.SCALES:
            at = self._scaled(args, name)
        if at is not None and name in self.IN_PLACE:
            if self._open.get(id(args[0]), (None,))[0] is not args[0]:
                return func(*args, **kwargs)
            # h += self.b on the map's copy: s + b kept out of place, the copy given its
            # values (and its gradient path) so that later in-place work leaves s + b alone
            self.calls[at][1] = s = torch.add(args[0], args[1])
            return args[0].copy_(s)
        out = func(*args, **kwargs)
        if not isinstance(out, torch.Tensor) or not out.is_floating_point() or out.is_complex() \
                or (_WRAPPED is not None and _WRAPPED(out)):  # (vmap's: no values past it)
            return out
        if found:
            self.calls.append([found[0][0], out, self.where()])
            at = len(self.calls) - 1
        elif at is not None:
            self.calls[at][1] = out  # s + b
        else:
            return out
        out = out.clone()
        self._open[id(out)] = (out, at)
        return out


def weight_modules(model: nn.Module, holders_out: list | None = None) -> list[LayerInfo]:
    """Every weight layer of ``model`` in ``named_modules()`` order (not yet numbered).

    ``holders_out``: a list that gets a :class:`LayerInfo` for every module (the model itself
    excepted) left out only because submodules of it own weights (:func:`_holds_layers`) and
    not yet known to use its own weight as a linear map (:data:`MAPPED`): whether it is a
    layer is for a forward pass to tell (:class:`depthlab.torch.hooks.Recording`).
    Raises ValueError when the model has none.
    """
    check_model(model)
    check_initialized(model)
    out: list[LayerInfo] = []
    skip: set[int] = set()
    holders = _weight_holders(model)
    for name, m in model.named_modules():
        if id(m) in skip:
            continue
        if parametrize.is_parametrized(m):  # the parametrization modules compute the weight
            skip.update(id(c) for c in m.parametrizations.modules())
        if isinstance(m, nn.MultiheadAttention):
            own = own_weights(m)
            if own:
                out.append(LayerInfo(name, m, [p for _, p in own], "MultiheadAttention.in_proj",
                                     -1, has_output=False))
            op = m.out_proj
            skip.add(id(op))
            out.append(LayerInfo(f"{name}.out_proj" if name else "out_proj", m, [op.weight],
                                 "MultiheadAttention.out_proj", -1))
            continue
        # a normalization's elementwise gain and shift are >= 2-dim for a LayerNorm/RMSNorm
        # over several axes (LayerNorm((C, H, W))): it stays a normalization, the follower of
        # the layer before (it was a weight layer, which took that layer's norm and activation
        # rows and shifted the numbering of every later layer)
        own = [] if is_norm(m) else layer_weights(m)
        if own and (m is not model or next(iter(m.children()), None) is None):
            info = LayerInfo(name, m, [p for _, p in own], type(m).__name__, feature_axis(m))
            used = MAPPED.get(m)
            if used is not None and m is not model:
                info.weights = [p for n, p in own if n in used] or info.weights
                out.append(info)
            elif not _holds_layers(m, holders):
                out.append(info)
            elif holders_out is not None and m is not model:
                holders_out.append(info)
    if not out:
        kind = type(model).__name__
        root = [n for n, _ in own_weights(model)] if not is_norm(model) else []
        if root:  # the model's own weights beside submodules: not a layer (said so; the
            # message claimed it owned no parameter of >= 2 dimensions)
            kids = ", ".join(repr(n) for n, _ in list(model.named_children())[:3])
            raise ValueError(f"model {kind} has no weight layers: its own parameters "
                             f"{', '.join(repr(n) for n in root)} (>= 2 dimensions) are not "
                             f"one, since {kind} also has submodules ({kids}) and a layer is the "
                             "output of a module owning its weight; expected them in a "
                             "submodule that forward calls (e.g. an nn.Linear)")
        held = [(n, tuple(b.shape)) for n, b in model.named_buffers()
                if b.dim() >= 2 and b.is_floating_point()]
        if held:  # weights kept with register_buffer: the message said only what a layer is
            n, shape = held[0]
            more = f" and {len(held) - 1} more" if len(held) > 1 else ""
            raise ValueError(f"model {kind} has no weight layers: its tensor {n!r} (shape "
                             f"{shape}){more} is a buffer (register_buffer), not a parameter, "
                             "so it is neither trained nor measured; expected the weights as "
                             "nn.Parameter of a module that forward calls (e.g. an nn.Linear)")
        raise ValueError(f"model {kind} has no weight layers (modules owning a real "
                         "floating-point parameter of >= 2 dimensions: Linear, Conv*, "
                         "Embedding, RNN, ...)")
    return out


def none_ran(model: nn.Module, layers: list[LayerInfo]) -> str:
    """The one-line ValueError message when none of the weight layers ``layers`` of ``model``
    ran in a forward pass: it names them and why a module's weights can be used without its
    forward running (read directly, ``F.linear(x, self.fc.weight)``; a ``ParameterList`` or
    ``ParameterDict``, which has no forward), since only a module's forward is seen."""
    names = ", ".join(f"{info.name!r} ({info.kind})" for info in layers[:4])
    more = f" and {len(layers) - 4} more" if len(layers) > 4 else ""
    holders = (nn.ParameterList, nn.ParameterDict)
    if all(isinstance(info.owner, holders) for info in layers):
        why = ("a ParameterList/ParameterDict has no forward of its own; expected each weight "
               "in a module that forward calls (e.g. an nn.Linear)")
    else:
        first = next(info for info in layers if not isinstance(info.owner, holders))
        why = (f"weights read directly, e.g. F.linear(x, self.{first.name}.weight), are not "
               f"measured; expected forward to call the module (self.{first.name}(x))")
    return (f"no weight layer of {type(model).__name__} ran in the forward pass: {names}{more} "
            f"own weights but never ran ({why})")


def discover(model: nn.Module, *inputs: Any, **kwargs: Any) -> list[LayerInfo]:
    """The weight layers of ``model`` that run in ``model(*inputs, **kwargs)``, numbered in
    first-execution order, with the names of their follower modules (``norm``,
    ``activation``). The pass runs with gradients enabled but computes none; the model, its
    buffers (batch-norm running statistics), its mode, every ``.grad`` and the random number
    generators are left exactly as found. For residual blocks as well, use
    :class:`depthlab.torch.hooks.Recording` (``.blocks``).

    The layers and numbers are those of :func:`depthlab.torch.probe`'s table: a weight the
    forward uses as a linear map that no module's output tells (``F.linear(x, self.weight)``
    in a model with child layers, ``h @ w`` for ``w`` in an ``nn.ParameterList``, a tied
    projection by an embedding table, ``h @ self.emb.weight.T``) and the maps of a layer
    module of the user's class whose output is not its map's (``torch.relu(x @ self.W +
    self.b)``) are layers of kind ``"map"``, named by the parameter (``weight``, ``ws.0``,
    ``emb.weight``, ``c.W1``) or by the module they replace, numbered where their first map
    ran (:func:`depthlab.torch.probe.map_layers`); they were missing, so the numbers of the
    layers after them differed from the probe's."""
    from .hooks import Recording
    from .probe import (
        _LOOKUPS,
        _loose_weights,
        _replaced,
        _untied,
        check_callable,
        forward,
        map_layers,
        trackable,
    )

    rec = Recording(model, ())
    loose, candidates = _loose_weights(model, rec.layers)
    tables = {id(w): _LOOKUPS for info in rec.layers if isinstance(info.owner, nn.Embedding)
              for w in info.weights}
    cap = MapCapture({k: k for k in loose}, lambda: rec.numbered, tables) if loose else None
    with torch.inference_mode(False), torch.enable_grad(), rec.isolated():
        rec.arm()
        with cap if cap is not None else contextlib.nullcontext():
            try:
                if kwargs:
                    check_callable(model)
                    model(*trackable(list(inputs)), **trackable(kwargs))
                else:  # probe's one-line errors for a wrong input (shape, dtype, token ids)
                    forward(model, tuple(trackable(list(inputs))))  # model(*inputs)
            except TypeError as exc:
                said = _unbound_inputs(model, inputs, kwargs)
                if said is None:
                    raise
                raise TypeError(said) from exc
        rec.disarm()
        calls = _untied(cap.calls, tables, rec.order) if cap is not None else []
        if not calls:
            return rec.ran_layers()
        # (the pre_mean/pre_std rows tell whether a user-class layer's output is its map's)
        calls, gone = _replaced(rec.collect(weight_grads={}), calls, candidates)
        return map_layers(model, rec, calls, loose, gone) if calls else rec.ran_layers()


def _unbound_inputs(model: nn.Module, inputs: tuple, kwargs: dict) -> str | None:
    """One line for :func:`discover` when ``model.forward`` cannot take ``(*inputs,
    **kwargs)`` (no inputs, or the targets given too: ``discover(model, x, y)``), which was
    told probe's wording for an ``x`` that discover does not have ('x is a tuple of 0 inputs
    ... give x=(xs,)'); None where the call binds (the TypeError came from inside the
    forward) or no signature is readable."""
    import inspect

    try:
        sig = inspect.signature(model.forward)
    except (TypeError, ValueError):
        return None
    try:
        sig.bind(*inputs, **kwargs)
        return None
    except TypeError as exc:
        why = str(exc)
    takes = f"{type(model).__name__}.forward{sig}"
    if kwargs:
        return (f"discover(model, *inputs, **kwargs) runs model(*inputs, **kwargs), but {takes} "
                f"does not take them ({why}); expected the inputs and keyword inputs the "
                "forward takes")
    if not inputs:
        return (f"discover(model, *inputs) runs model(*inputs), and was given no inputs; "
                f"expected discover(model, x) with the inputs {takes} takes")
    return (f"discover(model, *inputs) runs model(*inputs), but {takes} does not take the "
            f"{len(inputs)} inputs given ({why}); expected discover(model, x) with the inputs "
            "the forward takes (no targets or loss)")


RECORDINGS: weakref.WeakSet = weakref.WeakSet()
"""Every live :class:`depthlab.torch.hooks.Recording` (``model``, ``armed``, ``arm()``,
``disarm()``), so that :func:`untouched` can pause the armed ones."""


def _paused(model: nn.Module) -> list:
    """Disarm the armed recordings on ``model``, a module inside it or a model containing it
    (a :class:`~depthlab.torch.watch.Watch` between its arming and its record) and return
    them: a probe, a prediction or a discovery run inside a watched training loop must not
    become the pass the watch records (it did: the probe's batch replaced the training
    batch's statistics)."""
    armed = [r for r in list(RECORDINGS) if r.armed]
    if not armed:
        return []
    mine = {id(m) for m in model.modules()}
    paused = [r for r in armed if any(id(m) in mine for m in r.model.modules())]
    for r in paused:
        r.disarm()
    return paused


def _ver(t: torch.Tensor) -> int:
    try:
        return t._version
    except RuntimeError:  # an inference tensor has no version counter
        return -1


def _saved(t: torch.Tensor) -> tuple[torch.Tensor, int, torch.Tensor]:
    """``(t, its version, a copy of it)``, which :func:`_write_back` puts back."""
    return t, _ver(t), t.detach().clone()


def _write_back(saved: list[tuple[torch.Tensor, int, torch.Tensor]]) -> None:
    """Each saved tensor (:func:`_saved`) changed in place since (its version) gets its copy
    back, through ``.data``: no version bump, so a graph that saved it still back-propagates."""
    with torch.no_grad():
        for t, version, copy in saved:
            if _ver(t) != version and t.shape == copy.shape:
                t.data.copy_(copy)


def _renormed_weights(model: nn.Module) -> list[tuple[torch.Tensor, int, torch.Tensor]]:
    """``(weight, version, copy)`` of the ``nn.Embedding``/``nn.EmbeddingBag`` modules with
    ``max_norm``: their forward rescales the rows it looks up in place (``embedding_renorm_``),
    so a probe's forward changed the user's weights (a row of norm 3.1 left at 1.0)."""
    out = []
    for m in model.modules():  # no other module's weight read: a parametrized one (spectral
        # norm in training mode) would run a power iteration on reading
        if isinstance(m, (nn.Embedding, nn.EmbeddingBag)) and m.max_norm is not None \
                and not parametrize.is_parametrized(m):
            w = m.weight
            out.append(_saved(w))
    return out


_IN_PLACE_DUNDERS = frozenset({"__iadd__", "__isub__", "__imul__", "__itruediv__",
                               "__ifloordiv__", "__imod__", "__ipow__", "__iand__", "__ior__",
                               "__ixor__", "__ilshift__", "__irshift__", "__setitem__"})


def _writes_first_argument(name: str) -> bool:
    """Whether the torch function or tensor method ``name`` writes its first argument in place
    (``clamp_``, ``mul_``, ``copy_``, ``normal_``; ``w += ...``, ``w[i] = ...``)."""
    return (name.endswith("_") and not name.endswith("__")) or name in _IN_PLACE_DUNDERS


class _ParameterWrites(TorchFunctionMode):
    """Copy-on-write of the model's parameters while a forward that must leave no trace runs:
    the first in-place write to one (weight clipping or a max-norm constraint inside the
    forward, ``self.fc.weight.clamp_(-c, c)``, ``w.data.mul_(0.5)``, ``torch.clamp(w, ...,
    out=w)``), found by its storage, saves a copy of it first, which :func:`untouched` writes
    back (a probe left such weights clipped). Only the parameters written are copied."""

    def __init__(self, params: list[torch.Tensor]) -> None:
        super().__init__()
        self.by_storage: dict[int, list[torch.Tensor]] = {}  # (views of one flat buffer: all)
        for prm in params:
            ptr = _storage_ptr(prm)
            if ptr:
                self.by_storage.setdefault(ptr, []).append(prm)
        self.saved: dict[int, tuple[torch.Tensor, int, torch.Tensor]] = {}

    def _note(self, t: Any) -> None:
        if isinstance(t, torch.Tensor):
            for prm in self.by_storage.get(_storage_ptr(t), ()):
                if id(prm) not in self.saved:
                    self.saved[id(prm)] = _saved(prm)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.by_storage:
            if args and _writes_first_argument(getattr(func, "__name__", "")):
                self._note(args[0])
            out = kwargs.get("out")
            for t in (out if isinstance(out, (tuple, list)) else (out,)):
                self._note(t)
        return func(*args, **kwargs)


def _storage_ptr(t: torch.Tensor) -> int:
    """The address of ``t``'s storage, 0 where it has none (a functorch wrapper, meta, an
    uninitialized lazy parameter). Read with torch-function dispatch off: called from
    :class:`_ParameterWrites`' handler, ``untyped_storage()`` would otherwise reach the modes
    below it (``prescriptions.residual_ends``' sum tracker took the lookup for a use of the
    tensor, and an in-place residual sum, ``out += x``, was no longer found)."""
    if nn.parameter.is_lazy(t):  # an uninitialized lazy parameter: no storage yet
        return 0
    try:
        with torch._C.DisableTorchFunction():
            return int(t.untyped_storage().data_ptr())
    except (RuntimeError, NotImplementedError, TypeError, ValueError):
        return 0


_MODULE_KEYS = frozenset(nn.Module().__dict__)
"""The attributes every ``nn.Module`` has (its parameters, buffers, children and hooks)."""
_CONTAINERS = (list, dict, set)


def _attributes(model: nn.Module) -> list[tuple[nn.Module, dict[str, Any], list, list, list]]:
    """Per module of ``model``: its own attributes (``self.calls``, ``self.seen``,
    ``self.last_attention``: not those of :data:`_MODULE_KEYS`), the contents of those that
    are lists, dicts or sets, and a copy of those that are tensors (not registered as buffers:
    ``self.steps = torch.zeros(())`` that the forward increments in place) or the state of
    those that are ``torch.Generator``s (a module drawing its noise from its own), for
    :func:`_put_back` after a forward that must leave no trace (:func:`untouched`)."""
    return [_own_state(m) for m in model.modules()]


def _own_state(obj: Any) -> tuple[Any, dict[str, Any], list, list, list]:
    """One object's entry of :func:`_attributes` (a module, or a plain object with a
    ``__dict__``: a loss that is no module, :func:`_state_holders`)."""
    own = {k: v for k, v in obj.__dict__.items() if k not in _MODULE_KEYS}
    contents = [(v, type(v)(v)) for v in own.values() if type(v) in _CONTAINERS]
    tensors = [_saved(v) for v in own.values()
               if isinstance(v, torch.Tensor) and not isinstance(v, nn.Parameter)
               and not v.is_inference()]
    generators = [(v, v.get_state()) for v in own.values()  # a module's own generator
                  if isinstance(v, torch.Generator)]  # (its dropout or noise draws)
    return obj, own, contents, tensors, generators


def _state_holders(obj: Any, depth: int = 0) -> tuple[list[nn.Module], list[Any]]:
    """The modules and the plain objects whose state a call of ``obj`` (a loss) may change:
    a module itself; an instance of a class of the user's (a callable object with its own
    ``__dict__``: a call counter, a running average) and the modules among its attributes;
    the function and arguments of a ``functools.partial``; the instance of a bound method. A
    plain function's closure is not reached (its cells are no object's attributes)."""
    if depth > 4 or obj is None or isinstance(obj, (torch.Tensor, type)):
        return [], []
    if isinstance(obj, nn.Module):
        return [obj], []
    if isinstance(obj, functools.partial):
        parts = [obj.func, *obj.args, *obj.keywords.values()]
    elif inspect.ismethod(obj):
        parts = [obj.__self__]
    elif inspect.isroutine(obj) or not hasattr(obj, "__dict__") or inspect.ismodule(obj):
        return [], []
    else:
        return [v for v in vars(obj).values() if isinstance(v, nn.Module)], [obj]
    mods: list[nn.Module] = []
    objs: list[Any] = []
    for part in parts:
        m, o = _state_holders(part, depth + 1)
        mods += m
        objs += o
    return mods, objs


def _put_back(saved: list[tuple[nn.Module, dict[str, Any], list, list, list]]) -> None:
    """Undo what a forward did to the modules' own attributes (a call counter the forward
    increments, a list it appends to, a tensor it caches or updates in place, an attribute it
    adds): the theory's forward left a model whose forward reads them training differently
    from one without a Watch (a counter one ahead), and so did every
    ``dlt.probe``/``dlt.predict`` in a loop."""
    for m, own, contents, tensors, generators in saved:
        now = m.__dict__
        for k in [k for k in now if k not in _MODULE_KEYS and k not in own]:
            del now[k]
        for k, v in own.items():
            if now.get(k, _put_back) is not v:
                now[k] = v
        for v, old in contents:  # once a run: no comparison (of tensors, say) needed
            if type(v) is list:
                v[:] = old
            else:
                v.clear()
                v.update(old)
        _write_back(tensors)  # changed in place (their version)
        for g, state in generators:
            g.set_state(state)


def _input_tensors(v: Any) -> list[torch.Tensor]:
    """The tensors in ``v`` (a tensor, or nested tuples, lists and dicts of them)."""
    if isinstance(v, torch.Tensor):
        return [v]
    if isinstance(v, (tuple, list)):
        return [t for u in v for t in _input_tensors(u)]
    if isinstance(v, dict):
        return [t for u in v.values() for t in _input_tensors(u)]
    return []


@contextmanager
def inputs_kept(*values: Any) -> Iterator[None]:
    """The tensors in ``values`` (the caller's ``x`` and ``y``) hold on exit the values they
    held on entry: a forward that works on its input in place (a model that starts with
    ``nn.Dropout(inplace=True)`` or ``nn.ReLU(inplace=True)``, an ``x.mul_(...)``) changed the
    caller's batch, so the next probe of the same batch (or the training step after it) read
    a doubly dropped and rescaled ``x``. Written back (through ``.data``: no version bump) only
    when their version changed."""
    saved = [_saved(t) for t in _input_tensors(values)
             if not t.is_inference()]  # (an inference tensor cannot be changed outside it)
    try:
        yield
    finally:
        _write_back(saved)


def _slots_as_found(now: dict, found: dict) -> None:
    """``now`` (a module's ``_buffers``, ``_modules`` or ``_parameters``) made ``found``
    again where an entry was added, removed or re-assigned."""
    if len(now) != len(found) or any(now.get(k, _put_back) is not v for k, v in found.items()):
        now.clear()
        now.update(found)


def _module_state(mods: list[nn.Module], objects: Sequence[Any] = ()) -> Callable[[], None]:
    """Save what a forward may change in the modules ``mods`` (and their submodules): their
    buffers (values; re-assigned, added or removed ones), submodules and parameters (added
    or re-assigned ones: a head the forward builds on its first call, ``self.head =
    nn.Linear(...)``, stayed on the caller's model), modes and own attributes
    (:func:`_attributes`), and the own attributes of the plain ``objects`` (a loss that is no
    module); the function returned puts them back."""
    attributes = [a for m in mods for a in _attributes(m)] + [_own_state(o) for o in objects]
    slots = [(m, dict(m._buffers), dict(m._modules), dict(m._parameters))
             for mod in mods for m in mod.modules()]
    buffers = [_saved(b) for mod in mods for b in mod.buffers()]
    modes = [(m, m.training) for mod in mods for m in mod.modules()]

    def restore() -> None:
        for m, found, kids, params in slots:  # re-assigned, added or removed entries
            _slots_as_found(m._buffers, found)
            _slots_as_found(m._modules, kids)
            _slots_as_found(m._parameters, params)
        with torch.no_grad():
            for b, version, saved in buffers:  # only if changed, and through .data: no
                # version bump (batch norm's kernel updates its running statistics in place
                # without one; a copy_ of every buffer broke the caller's held graph)
                if b.shape == saved.shape and (version == -1 or _ver(b) != version
                                               or not torch.equal(b, saved)):
                    (b if version == -1 else b.data).copy_(saved)
        for m, mode in modes:
            m.training = mode
        _put_back(attributes)  # a call counter the forward increments, a list it appends to

    return restore


@contextmanager
def kept_state(module: Any) -> Iterator[None]:
    """A loss's state as found on exit: a module's buffers, modes and own attributes
    (:func:`_module_state`), a callable object's own attributes and modules
    (:func:`_state_holders`; nothing for a plain function): the doctor's loss, which every
    run starts from."""
    mods, objects = _state_holders(module)
    if not mods and not objects:
        yield
        return
    restore = _module_state(mods, objects)
    try:
        yield
    finally:
        restore()


@contextmanager
def untouched(model: nn.Module, *also: Any) -> Iterator[None]:
    """Forward passes inside the block leave no trace: buffers (batch-norm running
    statistics; a buffer the forward re-assigned, ``self.ema = 0.9 * self.ema + ...``, or
    registered is put back as found), module modes, the modules' own attributes and the random
    number generators (torch's, and Python's and NumPy's global ones, which a forward may draw
    from) are restored on exit, and so are the weights an ``nn.Embedding(max_norm=...)``
    renormalizes in its forward; a buffer is written back only when the block changed it (its
    version), so a graph the caller holds that saved it (an ``eval()`` batch norm's running
    statistics) can still be back-propagated. The modules among ``also`` (a loss module with
    its own state) are restored likewise. The hooks of other armed recordings of the model are
    off within it (:func:`_paused`)."""
    paused = _paused(model)
    mods, objects = [model], []
    for a in also:  # a loss module, or a loss object of the user's class with its own state
        held = _state_holders(a)
        mods += [m for m in held[0] if all(m is not k for k in mods)]
        objects += [o for o in held[1] if all(o is not k for k in objects)]
    restore = _module_state(mods, objects)
    renormed = _renormed_weights(model)
    devices = sorted({t.device.index for t in [*model.parameters(), *model.buffers()]
                      if t.device.type == "cuda" and t.device.index is not None})
    np_state, py_state = np.random.get_state(), random.getstate()
    writes = _ParameterWrites([*model.parameters()])
    try:
        with torch.random.fork_rng(devices=devices), writes:
            yield
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
        with torch.no_grad():
            for w, version, saved in renormed:
                if _ver(w) != version and w.shape == saved.shape:
                    w.copy_(saved)
        with torch.no_grad():  # weights the forward wrote in place (through .data too,
            for w, _, saved in writes.saved.values():  # which bumps no version)
                if w.shape == saved.shape and not torch.equal(w, saved):
                    w.data.copy_(saved)
        restore()
        for r in paused:
            r.arm()
