"""The torch doctor's prescriptions: module transforms applied to a fresh copy of a model, and
training-setting changes, each a JSON-able dict of changes.

==========================  ====================================================================
change                      what it does
==========================  ====================================================================
``init``                    re-initialize every weight layer's ≥ 2-D weights (biases zeroed):
                            ``matched`` (each layer by the activation that follows it: He
                            ``Var = 2 / (fan_in (1 + a^2))`` for rectifiers with slope ``a``,
                            Glorot ``Var = 2 / (fan_in + fan_out)`` for sigmoid/tanh/softsign
                            and for layers without one, LeCun ``Var = 1 / fan_in`` for SELU),
                            ``he_normal``/``he_uniform``/``glorot_normal``/``glorot_uniform``/
                            ``lecun_normal`` for all layers, ``orthogonal`` (gain of the next
                            activation), ``lsuv`` (orthogonal, then each layer in forward order
                            rescaled until its output variance on a data batch is 1 ± 0.1,
                            Mishkin & Matas 2016)
``activation``              replace every activation module of a known kind by ``relu``,
                            ``leaky_relu``, ``elu``, ``selu``, ``tanh``, ``gelu`` or ``swish``
                            (the output layer's, e.g. a ``BCELoss`` model's sigmoid, is kept)
``normalization``           ``batchnorm``: insert ``BatchNorm1d/2d/3d`` after every
                            ``Linear``/``Conv``/``ConvTranspose`` layer followed by an
                            activation (not after the output layer): as the next child of an
                            ``nn.Sequential``, else the layer's slot becomes
                            ``nn.Sequential(layer, norm)``; not applicable when a hidden layer
                            outside a Sequential slot runs several times per forward
                            (weight-tied: it would get no norm)
``bias_init``               ``zeros``: every bias of a weight layer set to 0
``target_scale``            ``standardize``: the model trained as on standardized targets, its
                            outputs in the targets' units (applied by the doctor:
                            ``depthlab.torch.doctor.StandardizedTargets``)
``recurrent_init``          ``chrono``: the gate biases of every ``nn.GRU``/``nn.LSTM`` set so
                            that each unit keeps its state over ``U(1, T - 1)`` steps, ``T`` the
                            sequence length the layer sees (Tallec & Ollivier 2018): LSTM forget
                            bias ``log u``, input bias ``-log u``; GRU update-gate bias
                            ``log u``; other gate biases 0. ``orthogonal``: each gate's block
                            of every recurrent matrix ``weight_hh`` of an ``nn.RNN``/``GRU``/
                            ``LSTM`` drawn orthogonal, gain 1 (singular values 1: the state's
                            Jacobian ``W_hh^T diag(f')`` has norm <= 1, so the gradient cannot
                            grow through time; Saxe et al. 2014, Le et al. 2015), the input
                            weights and biases kept
``lr``, ``warmup``,         training settings (:class:`depthlab.torch.train.TorchTrainSpec`): a
``clip_grad_norm``,         smaller learning rate, linear warm-up steps, gradient-norm clipping
``optimizer``,              (``torch.nn.utils.clip_grad_norm_``), another optimizer (``adam``),
``bn_population``           batch-norm running statistics recomputed over the training set
==========================  ====================================================================

A transform that finds nothing to change raises :class:`NotApplicable` (the doctor then tries
the next cure). :func:`trace` discovers, in one forward pass with hooks, the order in which the
weight layers run and which activation module follows each one.
"""

from __future__ import annotations

import contextlib
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812
from torch.nn.utils import parametrize

from ..diagnosis.prescriptions import RECOMMENDED_INIT, init_caveat, recommended_init
from .layers import _holds_layers, _weight_holders, activation_spec, is_norm, own_weights, untouched
from .train import TorchTrainSpec

ACTIVATION_MODULES: dict[type[nn.Module], str] = {
    nn.ReLU: "relu", nn.LeakyReLU: "leaky_relu", nn.ELU: "elu", nn.SELU: "selu",
    nn.GELU: "gelu", nn.SiLU: "swish", nn.Mish: "mish", nn.Sigmoid: "sigmoid",
    nn.Tanh: "tanh", nn.Softsign: "softsign",
}
"""Activation module classes and their depthlab activation names."""

NEW_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "elu": nn.ELU, "selu": nn.SELU,
    "tanh": nn.Tanh, "gelu": nn.GELU, "swish": nn.SiLU,
}
"""Activations a prescription may swap in."""

NORM_MODULES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm,
    nn.modules.instancenorm._InstanceNorm, *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
)
PASS_THROUGH: tuple[type[nn.Module], ...] = NORM_MODULES + (
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.Identity,
    nn.Flatten, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d,
    nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d,
)
"""Modules that may sit between a weight layer and its activation."""

INITS: tuple[str, ...] = ("matched", "he_normal", "he_uniform", "glorot_normal",
                          "glorot_uniform", "lecun_normal", "orthogonal", "lsuv")
TRAINING_KEYS = frozenset({"lr", "warmup", "clip_grad_norm", "optimizer", "batch_size",
                           "bn_population", "optimizer_kwargs"})
MODEL_KEYS = frozenset({"init", "activation", "normalization", "bias_init", "recurrent_init",
                        "target_scale", "dropout"})
"""(``target_scale``: applied by the doctor, which knows the training targets:
:class:`depthlab.torch.doctor.StandardizedTargets`.)"""

LSUV_TOL = 0.1
LSUV_ITERS = 10


class NotApplicable(ValueError):
    """The prescription finds nothing to change in this model."""


ALPHA_DROPOUTS = (nn.AlphaDropout, nn.FeatureAlphaDropout)
"""Dropout modules that set dropped units to SELU's saturation value (alpha dropout)."""


def _plain_sequential(module: nn.Module) -> bool:
    """Whether ``module`` runs as an ``nn.Sequential``: its children in order, one after
    another (a subclass that overrides ``forward`` may route around one of them)."""
    return isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward


def chained_dropouts(model: nn.Module) -> list[nn.modules.dropout._DropoutNd]:
    """The dropout modules (``nn.Dropout``, ``Dropout1d/2d/3d``, ``AlphaDropout``,
    ``FeatureAlphaDropout``) with ``p > 0`` that the signal of a plain ``nn.Sequential``
    (:func:`_plain_sequential`) passes one after another: its children in order, nested plain
    ``nn.Sequential`` children entered. Any other module's forward may route around a dropout
    (a residual branch's), so its dropouts, and every dropout of a model that is not a plain
    ``nn.Sequential``, are not listed."""
    if not _plain_sequential(model):
        return []
    out: list[nn.modules.dropout._DropoutNd] = []
    for child in model.children():
        if isinstance(child, nn.modules.dropout._DropoutNd):
            if float(child.p) > 0.0:
                out.append(child)
        elif _plain_sequential(child):
            out.extend(chained_dropouts(child))
    return out


def lower_dropout(model: nn.Module, rate: float) -> int:
    """Set ``p = min(p, rate)`` on every dropout of :func:`chained_dropouts` (the cure of
    dropout whose compounded noise ``prod_i g(p_i) - 1`` buries the signal); the number of
    modules changed. Raises :class:`NotApplicable` when none has ``p > rate``, ValueError
    for a rate outside [0, 1)."""
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate < 1.0:
        raise ValueError(f"dropout must be a rate in [0, 1), got {rate!r}")
    changed = [m for m in chained_dropouts(model) if float(m.p) > rate]
    if not changed:
        raise NotApplicable(f"no dropout the signal passes in turn (in a plain nn.Sequential) "
                            f"has a rate above {rate:g}")
    for m in changed:
        m.p = float(rate)
    return len(changed)


INIT_KIN: dict[str, str] = {"relu6": "relu", "celu": "elu", "hardswish": "swish",
                            "hardtanh": "tanh", "hardsigmoid": "sigmoid",
                            "prelu": "leaky_relu"}
"""Activations the probes know (:data:`depthlab.torch.layers.ACTIVATIONS`) but depthlab's
NumPy registry does not, and the registry activation whose initialization they share."""


def activation_name(module: nn.Module) -> str | None:
    """The depthlab name of an activation module: its registry name for
    :data:`ACTIVATION_MODULES`, else the probes' name for any other of
    :data:`depthlab.torch.layers.ACTIVATIONS` (``hardtanh``, ``relu6``, ``celu``,
    ``softplus``, ...); None when not a known activation."""
    for cls, name in ACTIVATION_MODULES.items():
        if type(module) is cls:
            return name
    spec = activation_spec(module)
    return None if spec is None else spec.name


def recommended_for(name: str | None) -> str | None:
    """The initializer recommended for activation ``name`` (through :data:`INIT_KIN` for
    activations outside depthlab's registry)."""
    return recommended_init(INIT_KIN.get(name or "", name or ""))


def activation_kwargs(module: nn.Module | None) -> dict[str, float]:
    """The depthlab activation parameters of a module (LeakyReLU's slope, ELU's alpha,
    GELU's ``approximate="tanh"``, Softplus's beta and threshold, Hardtanh's range)."""
    if isinstance(module, nn.LeakyReLU):
        return {"negative_slope": float(module.negative_slope)}
    if isinstance(module, nn.ELU):
        return {"alpha": float(module.alpha)}
    if isinstance(module, nn.GELU) and module.approximate != "none":  # it was exact GELU's
        return {"approximate": str(module.approximate)}
    if isinstance(module, nn.PReLU) and module.weight.numel():  # its slopes' mean, as now
        return {"negative_slope": float(module.weight.detach().float().mean())}
    from ..bridge.torch_bridge import PenalizedTanh, Swish

    if type(module) is Swish:  # depthlab.bridge's modules
        return {"beta": float(module.beta)}
    if type(module) is PenalizedTanh:
        return {"a": float(module.a)}
    if type(module) is nn.Softplus:
        return {"beta": float(module.beta), "threshold": float(module.threshold)}
    if type(module) is nn.Hardtanh:  # ReLU6, a subclass, takes no arguments
        return {"min_val": float(module.min_val), "max_val": float(module.max_val)}
    return {}


def weight_tensors(module: nn.Module) -> list[nn.Parameter]:
    """The module's own parameters with at least 2 dimensions; a module with a parametrized
    weight (``weight_norm``, ``spectral_norm``, ...) owns its trainable original, and the
    parametrization's modules own none (the layers of :mod:`depthlab.torch.layers`); nor
    does a normalization, whose gain and shift are >= 2-dim over several axes
    (``nn.LayerNorm([C, H, W])``: it is the follower of the layer before, not a layer, as in
    the probe; taken for one, its gains were re-initialized to random values by the
    ``init`` cures and the convolution before it lost its activation)."""
    if isinstance(module, parametrize.ParametrizationList) or is_norm(module):
        return []
    return [p for _, p in own_weights(module)]


def _layer_modules(model: nn.Module) -> set[nn.Module]:
    """The modules of ``model`` that are weight layers (:func:`weight_tensors`), the model
    itself not when it has submodules (its own parameters, e.g. a positional embedding
    ``nn.Parameter(torch.zeros(1, T, E))`` beside its layers, are no layer of the probe's;
    taken for one, the ``init`` cures re-initialized the embedding as a weight matrix), nor
    any module one of whose submodules owns a weight (torchvision ViT's
    ``Encoder.pos_embedding`` beside its blocks, re-initialized as a weight matrix before;
    the probe's rule, :func:`depthlab.torch.layers.weight_modules`)."""
    holders = _weight_holders(model)
    return {m for m in model.modules() if weight_tensors(m)
            and (m is not model or next(iter(m.children()), None) is None)
            and not _holds_layers(m, holders)}


def fans(weight: torch.Tensor) -> tuple[int, int]:
    """(fan_in, fan_out) as ``torch.nn.init`` computes them (conv: channels x kernel size)."""
    fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(weight)
    return int(fan_in), int(fan_out)


@dataclass
class TracedLayer:
    """A weight layer in forward order: dotted ``name``, ``module``, the ``activation`` module
    that follows it (through normalization, dropout or pooling; None if none), whether a
    normalization module sits in between (``normalized``) and whether it ran on the traced
    batch (``ran``); a function the forward applies itself is given by an equivalent module
    (``functional``)."""

    name: str
    module: nn.Module
    activation: nn.Module | None
    normalized: bool
    ran: bool = True
    functional: bool = False
    """``activation`` is a stand-in, not a module of the model: the forward applies that
    function itself (``torch.sigmoid(self.fc(x))``, ``F.relu``), found by
    :func:`functional_activation`."""
    calls: int = 1
    """How many times the layer ran in the traced forward (2 for a layer shared by two
    places)."""
    norm: nn.Module | None = None
    """The normalization module between the layer and its activation whose input is the
    layer's output itself (``conv -> bn -> relu``; through dropout, pooling or reshapes), the
    last one when there are several; when there is none, the one right after its activation
    module that takes the activation's output itself (``conv -> relu -> bn``, the norm after
    the activation); None when there is neither (or a sum or another function comes between,
    e.g. a post-norm residual ``norm(x + layer(h))``). The doctor's gradient rules read the
    gradient at its output: either way the norm's backward divides the gradient reaching
    the layer's output by the std of the norm's input, which follows the scale of the
    network's input (pixels 0..255 or x 0.05: 'vanishing' or 'exploding' in a network that
    trains the same)."""

    @property
    def activation_name(self) -> str | None:
        return activation_name(self.activation) if self.activation is not None else None


def _forward_with_hook(model: nn.Module, x: torch.Tensor, modules: list[nn.Module],
                       hook: Callable) -> None:
    """One forward of ``model`` on ``x`` with ``hook`` as the forward hook of ``modules``
    (removed after it): no gradient, buffers and modes left as found."""
    handles = [m.register_forward_hook(hook) for m in modules]
    try:
        with torch.no_grad(), untouched(model):
            model(x.clone())  # the shared probe input stays as given
    finally:
        for h in handles:
            h.remove()


FUNCTIONAL_EPS = float(torch.finfo(torch.float32).eps)
"""The finest precision :func:`functional_activation` assumes of a forward's arithmetic (a
float64 model may compute its activation by another formula)."""

FUNCTIONAL_CANDIDATES: tuple[Callable[[], nn.Module], ...] = (
    nn.ReLU, nn.Sigmoid, nn.Tanh, nn.GELU, lambda: nn.GELU(approximate="tanh"), nn.SiLU,
    nn.ELU, nn.SELU, nn.Softplus, nn.Mish, nn.Softsign, nn.Hardswish, nn.Hardsigmoid,
    nn.ReLU6, nn.Hardtanh, nn.CELU,
)
"""Activations :func:`functional_activation` recognizes, tried in this order (the first that
reproduces the data wins: ReLU before ReLU6 and Hardtanh, which agree with it on small
values); a leaky ReLU is recognized with the slope its negative entries show, an ELU with
their alpha."""


def functional_activation(s: torch.Tensor, nxt: torch.Tensor,
                          extra: tuple[nn.Module, ...] | list[nn.Module] = ()
                          ) -> nn.Module | None:
    """The activation ``f`` with ``f(s) = nxt`` entry by entry (or in another order, a
    transpose after it: :func:`_permuted_activation`), for a layer output ``s`` and
    the next weight layer's input ``nxt`` (same entries in the same order, e.g. through a
    ``flatten``), as a module: one of :data:`FUNCTIONAL_CANDIDATES`, or ``nn.LeakyReLU(a)``
    when ``nxt = s`` for ``s >= 0`` and ``nxt = a s`` with one slope ``0 < a < 1`` for
    ``s < 0``. None when ``nxt`` is ``s`` itself (no activation), has other entries, or no
    candidate reproduces it, also through a dropout (:func:`_dropped_activation`):
    ``|f(s) - nxt| <= 16 eps (|s| + |nxt|)`` with ``f`` in float64
    and ``eps`` the coarser of the two tensors' precisions and float32's (the rounding of an
    activation computed in that precision, e.g. float32 GELU's ``1 + erf`` at ``s = -3.7``:
    3.7e-7 on a value of 4e-4)."""
    if s.numel() != nxt.numel() or s.numel() == 0 or not s.is_floating_point() \
            or not nxt.is_floating_point():
        return None
    eps = max(torch.finfo(s.dtype).eps, torch.finfo(nxt.dtype).eps, FUNCTIONAL_EPS)
    a = s.detach().reshape(-1).double()
    b = nxt.detach().reshape(-1).double()
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        return None
    tol = 16.0 * eps * (a.abs() + b.abs())  # rounding of f at the scale of its argument

    def same(v: torch.Tensor) -> bool:
        return bool(((v - b).abs() <= tol).all())

    if same(a):
        return None  # the identity: no activation between the layers
    sums: list[tuple[nn.Module, float, float]] = []  # for _permuted_activation
    for module in (*(make() for make in FUNCTIONAL_CANDIDATES), *extra):
        v = module(a)
        if same(v):
            return module
        sums.append((module, float(v.sum()), float(v.abs().sum())))
    neg = a < 0
    if neg.any() and same(torch.where(neg, b, a)):  # leaky: one slope on the negative side
        slopes = b[neg] / a[neg]
        slope = float(slopes.median())
        if 0.0 < slope < 1.0 and same(torch.where(neg, slope * a, a)):
            return nn.LeakyReLU(slope)
    if neg.any() and same(torch.where(neg, b, a)):  # ELU of another alpha (F.elu(h, 0.5)):
        em = torch.expm1(a[neg])  # alpha (e^s - 1) on the negative side; was read as no
        alpha = float((b[neg] / em).median())  # activation, its layer judged as linear
        if 0.0 < alpha and math.isfinite(alpha) and \
                same(torch.where(neg, alpha * torch.expm1(a), a)):
            return nn.ELU(alpha)
    return _dropped_activation(a, b, tol) or _permuted_activation(a, b, eps, sums)


def _permuted_activation(a: torch.Tensor, b: torch.Tensor, eps: float,
                         sums: list[tuple[nn.Module, float, float]]) -> nn.Module | None:
    """:func:`functional_activation` of a next input whose entries are ``f(s)``'s in another
    order: a transpose or permute after the function (``torch.relu(conv(x)).transpose(1, 2)``
    into an ``nn.LSTM``, channels moved last), compared sorted, ``sort(f(a)) = sort(b)``
    within the same rounding; None when the sorted entries are ``a``'s own (a permute with no
    activation) or no candidate's. (Read entry by entry, the conv's ReLU was no activation:
    the network had none, and no initialization was judged.) The sums, which a permutation
    keeps (``|sum f(a) - sum b| <= 16 eps sum(|f(a)| + |b|)`` follows from the entries'
    bound), are compared first (``sums``: each candidate with ``sum f(a)``, ``sum |f(a)|``):
    the sort only for a candidate that passes."""
    total, scale = float(b.sum()), float(b.abs().sum())

    def close(v_sum: float, v_abs: float) -> bool:
        return abs(v_sum - total) <= 16.0 * eps * (v_abs + scale)

    def same(v: torch.Tensor) -> bool:
        vs, bs = v.sort().values, b.sort().values
        return bool(((vs - bs).abs() <= 16.0 * eps * (vs.abs() + bs.abs())).all())

    if close(float(a.sum()), float(a.abs().sum())) and same(a):
        return None  # a permute with no activation
    for module, v_sum, v_abs in sums:
        if close(v_sum, v_abs) and same(module(a)):
            return module
    return None


def _dropped_activation(a: torch.Tensor, b: torch.Tensor, tol: torch.Tensor
                        ) -> nn.Module | None:
    """:func:`functional_activation` through a dropout the forward applies itself in training
    mode (``F.dropout(F.relu(h), p, self.training)``): ``b`` is 0 or ``f(a) / (1 - p)``, one
    scale above 1, with at least one nonzero ``f(a)`` dropped (a scaled activation such as
    ``2 tanh(h)`` drops none; a dropout alone is no activation)."""
    kept = b != 0
    if not kept.any() or bool(kept.all()):
        return None
    for module in (make() for make in FUNCTIONAL_CANDIDATES):  # a dropout alone keeps some
        # entries below 0 that a rectifier would zero, and no bounded f reproduces it
        fa = module(a)
        if not bool((fa[~kept] != 0).any()) or bool((fa[kept] == 0).any()):
            continue
        scale = float((b[kept] / fa[kept]).median())
        if scale > 1.0 + 1e-6 and bool(((scale * fa[kept] - b[kept]).abs()
                                        <= tol[kept] * scale).all()):
            return module
    return None


POOLED_MAX_ENTRIES = 2**18
"""The most entries of one example's layer output :func:`pooled_activation` searches (a
sort per candidate activation: larger outputs, e.g. 64 x 112 x 112, are left unmatched)."""


def pooled_activation(s: torch.Tensor, nxt: torch.Tensor,
                      extra: tuple[nn.Module, ...] | list[nn.Module] = ()
                      ) -> nn.Module | None:
    """The activation ``f`` of :data:`FUNCTIONAL_CANDIDATES` whose values ``f(s)`` hold every
    entry of ``nxt``, a smaller tensor: ``f`` applied before (or, for a non-decreasing ``f``,
    after) a max pooling the forward applies itself, which picks entries
    (``F.max_pool2d(F.relu(self.conv(x)), 2)``); ``f`` computed by torch in ``s``'s dtype, as
    the forward computes it, each entry within ``8 eps |nxt|`` of a value of ``f(s)`` (a few
    units in the last place: a tolerance on the scale of ``s`` would let an average pooling's
    means fall among ``f(s)``'s dense values). The first example of each (the same leading
    size: a pooling keeps examples apart) is searched, at most :data:`POOLED_MAX_ENTRIES`
    entries. None when ``nxt``'s
    entries are among ``s``'s own (a pooling without activation), or for no candidate (an
    average pooling's means are no entries of anything)."""
    if not (0 < nxt.numel() < s.numel()) or not s.is_floating_point() \
            or not nxt.is_floating_point():
        return None
    if s.dim() and nxt.dim() and s.shape[0] == nxt.shape[0]:
        s, nxt = s[:1], nxt[:1]
    if s.numel() > POOLED_MAX_ENTRIES or nxt.numel() >= s.numel():
        return None
    eps = max(torch.finfo(s.dtype).eps, torch.finfo(nxt.dtype).eps)
    a = s.detach().reshape(-1)
    b = nxt.detach().reshape(-1).double()
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        return None
    tol = 8.0 * eps * b.abs()

    def among(v: torch.Tensor) -> bool:
        v = v.double().sort().values
        pos = torch.searchsorted(v, b).clamp(max=len(v) - 1)
        gap = torch.minimum((b - v[pos]).abs(), (b - v[(pos - 1).clamp(min=0)]).abs())
        return bool((gap <= tol).all())

    if among(a):
        return None
    with torch.no_grad():
        return next((m for m in (*(make() for make in FUNCTIONAL_CANDIDATES), *extra)
                     if among(m(a))), None)


def _unchanged(s: torch.Tensor, nxt: torch.Tensor) -> bool:
    """Whether ``nxt`` holds the entries of ``s`` in the same order (a reshape of it)."""
    return s.numel() == nxt.numel() and s.dtype == nxt.dtype and \
        torch.equal(s.reshape(-1), nxt.reshape(-1))


_IO = tuple[torch.Tensor | None, torch.Tensor | None]


def _param(args: tuple, kwargs: dict, name: str, position: int, default: float) -> float:
    """Argument ``name`` (or positional ``position``) of a call, as a float."""
    v = kwargs.get(name, args[position] if len(args) > position else default)
    return float(v.item() if isinstance(v, torch.Tensor) else v)


_PARAMETRIZED: dict[Any, Callable[[tuple, dict], nn.Module]] = {
    F.leaky_relu: lambda a, k: nn.LeakyReLU(_param(a, k, "negative_slope", 1, 0.01)),
    F.elu: lambda a, k: nn.ELU(_param(a, k, "alpha", 1, 1.0)),
    F.celu: lambda a, k: nn.CELU(_param(a, k, "alpha", 1, 1.0)),
    torch.celu: lambda a, k: nn.CELU(_param(a, k, "alpha", 1, 1.0)),
    F.softplus: lambda a, k: nn.Softplus(_param(a, k, "beta", 1, 1.0),
                                         _param(a, k, "threshold", 2, 20.0)),
    F.hardtanh: lambda a, k: nn.Hardtanh(_param(a, k, "min_val", 1, -1.0),
                                         _param(a, k, "max_val", 2, 1.0)),
}
"""Activation functions with a parameter (a leaky ReLU's slope, an ELU's alpha, ...): the
parameters a forward calls them with are candidates of :func:`functional_activation` and
:func:`pooled_activation` (``F.max_pool2d(F.leaky_relu(self.conv(x), 0.2), 2)``: a max pooling
keeps no negative entry beside its pre-activation to read a slope from)."""


_GELU_TANH = {"approximate": "tanh"}
_ACTIVATION_FUNCTIONS: dict[Any, Callable[[tuple, dict], nn.Module]] = {
    **_PARAMETRIZED,
    **{f: (lambda a, k: nn.ReLU()) for f in (F.relu, F.relu_, torch.relu, torch.relu_,
                                              torch.Tensor.relu, torch.Tensor.relu_)},
    **{f: (lambda a, k: nn.Sigmoid()) for f in (torch.sigmoid, torch.Tensor.sigmoid,
                                                 torch.Tensor.sigmoid_, F.sigmoid)},
    **{f: (lambda a, k: nn.Tanh()) for f in (torch.tanh, torch.Tensor.tanh,
                                              torch.Tensor.tanh_, F.tanh)},
    F.gelu: lambda a, k: nn.GELU(**(_GELU_TANH if k.get("approximate") == "tanh" else {})),
    F.silu: lambda a, k: nn.SiLU(), F.mish: lambda a, k: nn.Mish(),
    F.selu: lambda a, k: nn.SELU(), torch.selu: lambda a, k: nn.SELU(),
    F.hardswish: lambda a, k: nn.Hardswish(), F.hardsigmoid: lambda a, k: nn.Hardsigmoid(),
    F.relu6: lambda a, k: nn.ReLU6(), F.softsign: lambda a, k: nn.Softsign(),
    # the in-place variants: the same settings (recorded as calls only, not as candidates)
    F.leaky_relu_: _PARAMETRIZED[F.leaky_relu], F.elu_: _PARAMETRIZED[F.elu],
    F.celu_: _PARAMETRIZED[F.celu], F.hardtanh_: _PARAMETRIZED[F.hardtanh],
}
"""Activation functions a forward may apply to a layer's output itself, as modules: the one
applied to a layer's output tensor is its activation also where no value match shows it (an
average pooling after it, ``F.avg_pool2d(F.relu(self.conv(x)), 2)``: a pooled mean is no
entry of ``f(s)``)."""


class _ActivationCalls(torch.overrides.TorchFunctionMode):
    """Records, as modules, the parametrized activation functions a forward calls
    (:data:`_PARAMETRIZED`), each setting once (``modules``), and the activation function
    (:data:`_ACTIVATION_FUNCTIONS`) applied to each tensor of ``watched`` (by ``id``; the
    caller keeps those tensors alive) as its first argument (``applied``)."""

    def __init__(self) -> None:
        super().__init__()
        self.modules: list[nn.Module] = []
        self._seen: set[str] = set()
        self.watched: set[int] = set()
        self.applied: dict[int, nn.Module] = {}

    def __torch_function__(self, func: Any, types: Any, args: Any = (),
                           kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        try:
            make = _ACTIVATION_FUNCTIONS.get(func)
        except TypeError:  # an unhashable callable
            make = None
        if make is not None:
            first = args[0] if args else kwargs.get("input", kwargs.get("self"))
            try:
                module = make(tuple(args), kwargs)
            except (TypeError, ValueError, RuntimeError, IndexError):
                module = None
            if module is not None and func in _PARAMETRIZED and \
                    repr(module) not in self._seen:
                self._seen.add(repr(module))
                self.modules.append(module)
            if module is not None and id(first) in self.watched:
                self.applied.setdefault(id(first), module)
        return func(*args, **kwargs)


@dataclass
class _Calls:
    """:func:`_hooked_calls`' record of one forward."""

    calls: list[nn.Module]
    """The modules called, in order (weight layers and leaf modules)."""
    seen_io: list[_IO]
    """Per call of a weight layer, pass-through or activation module: copies of its first
    input and output tensors (a later in-place activation changes them); ``(None, None)``
    for the others."""
    extra: list[nn.Module]
    """The parametrized activation functions the forward called (:data:`_PARAMETRIZED`)."""
    applied: dict[int, nn.Module]
    """Call index -> the activation function the forward applied to that call's output
    tensor itself (weight layers and pass-through modules)."""


def _hooked_calls(model: nn.Module, x: torch.Tensor) -> _Calls:
    """One forward of ``model`` on ``x`` (no gradients, inside :func:`untouched`) with hooks
    and an :class:`_ActivationCalls` mode (without it when the forward fails under it)."""
    layers = _layer_modules(model)
    watched = [m for m in model.modules() if m in layers or not list(m.children())]
    for mode in (True, False):
        calls: list[nn.Module] = []
        seen_io: list[_IO] = []
        outputs: list[tuple[int, torch.Tensor]] = []  # alive during the forward: ids unique
        recorded = _ActivationCalls()

        def hook(module: nn.Module, inp: Any, out: Any, calls: list = calls,
                 seen_io: list = seen_io, outputs: list = outputs,
                 recorded: _ActivationCalls = recorded) -> None:
            calls.append(module)
            if module in layers or isinstance(module, PASS_THROUGH) or \
                    activation_name(module) is not None or \
                    next(module.parameters(), None) is None:  # (a norm after it:
                # _norm_after; a module of no parameters may be an activation of its own)
                i, o = _first_tensor(inp), _first_tensor(out)
                seen_io.append((None if i is None else i.detach().clone(),
                                None if o is None else o.detach().clone()))
                if o is not None and activation_name(module) is None:
                    outputs.append((len(calls) - 1, o))
                    recorded.watched.add(id(o))
            else:
                seen_io.append((None, None))

        try:
            with recorded if mode else contextlib.nullcontext():
                _forward_with_hook(model, x, watched, hook)
        except Exception:  # noqa: BLE001 - a forward the mode cannot follow: again without
            if mode:
                continue
            raise
        applied = {k: recorded.applied[id(o)] for k, o in outputs if id(o) in recorded.applied}
        return _Calls(calls, seen_io, recorded.modules, applied)
    raise AssertionError("unreachable")  # pragma: no cover


def _pooled_after(act: nn.Module | None, s: torch.Tensor, nxt: torch.Tensor
                  ) -> nn.Module | None:
    """``act``, the activation function the forward applied to ``s`` itself, when ``nxt``
    can be a pooling of ``act(s)``: as many examples, fewer entries each, every entry within
    the range of that example's ``act(s)`` (an average pooling's means are); None otherwise
    (a gate, ``x * torch.sigmoid(self.fc(s))``, whose product is no pooling of it)."""
    if act is None or s.dim() == 0 or nxt.dim() == 0 or s.shape[0] != nxt.shape[0] \
            or not s.shape[0] or not (0 < nxt[0].numel() < s[0].numel()) \
            or not s.is_floating_point() or not nxt.is_floating_point():
        return None
    with torch.no_grad():
        a = act(s.detach().double()).reshape(len(s), -1)
        b = nxt.detach().double().reshape(len(nxt), -1)
        tol = 16.0 * FUNCTIONAL_EPS * (a.abs().amax(1, keepdim=True) + 1e-30)
        inside = (b >= a.amin(1, keepdim=True) - tol) & (b <= a.amax(1, keepdim=True) + tol)
    return act if bool(inside.all()) else None


def _follower(record: _Calls, i: int
              ) -> tuple[nn.Module | None, bool, torch.Tensor | None, nn.Module | None]:
    """What follows call ``i`` (a weight layer) of :func:`_hooked_calls`: ``(activation,
    normalized, s, norm)``: the activation module that runs next before any other weight
    layer, or a stand-in for a function the forward applies itself, whose input ``s`` is then
    given (None for a module); ``norm``: see :attr:`TracedLayer.norm`. The function is found
    by its values (:func:`functional_activation`, :func:`pooled_activation`, also with the
    parametrized functions the forward called), else as the activation function the forward
    applied to that tensor itself (:attr:`_Calls.applied`: an average pooling after it)."""
    calls, seen_io, extra = record.calls, record.seen_io, record.extra
    act, normed, norm = None, False, None
    # the tensor the forward may apply an activation to itself: the layer's output, then
    # the output of each normalization, dropout, pooling or reshaping module after it as
    # long as each takes the previous one's output unchanged (conv -> bn -> F.relu)
    last, at = seen_io[i][1], i
    for j in range(i + 1, len(calls)):
        nxt = calls[j]
        nxt_in = seen_io[j][0]
        if last is not None and nxt_in is not None and activation_name(nxt) is None \
                and not _unchanged(last, nxt_in):  # (the usual case: checked first)
            act = functional_activation(last, nxt_in, extra) or \
                pooled_activation(last, nxt_in, extra) or \
                _pooled_after(record.applied.get(at), last, nxt_in)
            if act is not None:
                return act, normed, last, norm
            last = None  # something else between: a sum, a slice, a function
        if weight_tensors(nxt):
            break
        if activation_name(nxt) is not None:
            act = nxt
            if norm is None:
                norm = _norm_after(calls, seen_io, j)
            break
        if isinstance(nxt, NORM_MODULES):
            normed = True
            norm = nxt if last is not None else norm  # it takes the layer's output itself
        elif not isinstance(nxt, PASS_THROUGH):
            out_j = seen_io[j][1]
            if last is not None and nxt_in is not None and out_j is not None and \
                    next(nxt.parameters(), None) is None:  # (its input is ``last`` itself)
                # an activation module of the model's own (``x * torch.sigmoid(x)``, a
                # transformer library's GELU class), known by its values as a function is
                act = functional_activation(nxt_in, out_j, extra)
                if act is not None:
                    return act, normed, last, norm
            break
        last, at = (seen_io[j][1], j) if last is not None else (None, at)
    return act, normed, None, norm


def _norm_after(calls: list[nn.Module], seen_io: list[_IO], j: int) -> nn.Module | None:
    """The normalization module that takes the output of call ``j`` (an activation module)
    itself, through dropout, pooling or reshaping modules, before any other weight layer,
    activation or function (``conv -> relu -> bn``); None when there is none."""
    last = seen_io[j][1]
    for k in range(j + 1, len(calls)):
        nxt = calls[k]
        nxt_in = seen_io[k][0]
        if last is None or nxt_in is None or not _unchanged(last, nxt_in):
            return None  # something else between: a sum, a slice, a function
        if weight_tensors(nxt) or activation_name(nxt) is not None:
            return None
        if isinstance(nxt, NORM_MODULES):
            return nxt
        if not isinstance(nxt, PASS_THROUGH):
            return None
        last = seen_io[k][1]
    return None


def trace(model: nn.Module, x: torch.Tensor) -> list[TracedLayer]:
    """Weight layers (modules owning a ≥ 2-D parameter) in the order they first run on ``x``
    (one forward pass without gradients, inside :func:`untouched`), each with the activation
    module that runs next before any other weight layer; layers that never run come last.
    A layer with no activation module after it whose output reaches the next weight layer
    through a function the forward applies itself (``torch.sigmoid(self.fc1(x))``,
    ``F.relu``, ``x.tanh()``, reshapes such as ``flatten`` around it, also after a
    normalization, dropout or pooling module, ``F.relu(self.bn(self.conv(x)))``) gets that
    function as a stand-in module (:func:`functional_activation`, ``functional=True``)."""
    names = {m: n for n, m in model.named_modules()}
    record = _hooked_calls(model, x)
    calls = record.calls
    layers = _layer_modules(model)
    runs = Counter(calls)
    out: list[TracedLayer] = []
    seen: set[nn.Module] = set()
    for i, m in enumerate(calls):
        if m in seen or m not in layers:
            continue
        seen.add(m)
        act, normed, s, norm = _follower(record, i)
        out.append(TracedLayer(names.get(m, "?"), m, act, normed, functional=s is not None,
                               calls=runs[m], norm=norm))
    for m in model.modules():
        if m not in seen and m in layers:
            out.append(TracedLayer(names.get(m, "?"), m, None, False, ran=False, calls=0))
    return out


_ADDS = (torch.add, torch.Tensor.add, torch.Tensor.add_, torch.Tensor.__add__,
         torch.Tensor.__radd__, torch.Tensor.__iadd__)
_ROUTES = tuple(m for m in PASS_THROUGH if m not in NORM_MODULES)


def residual_ends(model: nn.Module, x: torch.Tensor) -> set[nn.Module]:
    """The weight layers whose output the forward on ``x`` adds to another tensor of its
    shape and uses for nothing else (itself or through dropout, identity, pooling or
    reshaping modules; not through a normalization, which sets its own scale): the last layer
    of a residual branch, ``x + conv2(relu(conv1(x)))``, a transformer's attention output
    and second feed-forward projection; not the layer whose output is the skip path (``x``,
    which the branch takes too). One forward without gradients, inside :func:`untouched`."""
    layers = _layer_modules(model)
    owner: dict[int, nn.Module] = {}
    alive: list[torch.Tensor] = []  # ids stay unique while the tensors live
    summed: set[nn.Module] = set()
    used: set[nn.Module] = set()
    inside = [0]  # depth of route-module forwards running

    def pre(module: nn.Module, _inp: Any) -> None:
        if isinstance(module, _ROUTES):
            inside[0] += 1

    def hook(module: nn.Module, inp: Any, out: Any) -> None:
        if isinstance(module, _ROUTES):
            inside[0] -= 1
        o = _first_tensor(out)
        if o is None:
            return
        if module in layers:
            owner[id(o)] = module
            alive.append(o)
        elif isinstance(module, _ROUTES):
            i = _first_tensor(inp)
            if i is not None and id(i) in owner:
                owner[id(o)] = owner[id(i)]
                alive.append(o)

    def tensors(args: Any, kwargs: dict) -> list[torch.Tensor]:
        out = []
        for a in (*args, *kwargs.values()):
            out.extend(t for t in (a if isinstance(a, (list, tuple)) else (a,))
                       if isinstance(t, torch.Tensor))
        return out

    class _Sums(torch.overrides.TorchFunctionMode):
        def __torch_function__(self, func: Any, types: Any, args: Any = (),
                               kwargs: Any = None) -> Any:
            kwargs = kwargs or {}
            ts = [t for t in tensors(args, kwargs) if id(t) in owner]
            if ts and func in _ADDS:
                pair = [a for a in (*args[:2], kwargs.get("other"))
                        if isinstance(a, torch.Tensor)]
                if len(pair) == 2 and pair[0].shape == pair[1].shape and \
                        pair[0] is not pair[1]:
                    summed.update(owner[id(t)] for t in ts)
                else:
                    used.update(owner[id(t)] for t in ts)
            elif ts and not inside[0] and getattr(func, "__name__", "") != "__get__":
                used.update(owner[id(t)] for t in ts)
            out = func(*args, **kwargs)
            if func in _ADDS and isinstance(out, torch.Tensor):
                owner.pop(id(out), None)  # ``out += x`` in place: the sum, no layer's output
            return out

    modules = [m for m in model.modules() if m in layers or isinstance(m, _ROUTES)]
    handles = [m.register_forward_pre_hook(pre) for m in modules]
    try:
        with _Sums():
            _forward_with_hook(model, x, modules, hook)
    except Exception:  # noqa: BLE001 -- a forward the mode cannot follow: no layer known
        return set()
    finally:
        for h in handles:
            h.remove()
    return summed - used


def functional_inputs(model: nn.Module, x: torch.Tensor, layers: list[nn.Module]
                      ) -> dict[nn.Module, list[torch.Tensor]]:
    """For each of ``layers``: the tensors (copies) that the forward on ``x`` applies an
    activation function to itself after the layer's calls (its output, or that of the
    normalization after it: see :func:`trace`), one per call followed by such a function;
    one forward without gradients, inside :func:`untouched` (buffers, modes and random
    streams as found, so in training mode the dropout masks are those of a forward that
    follows)."""
    wanted = set(layers)
    record = _hooked_calls(model, x)
    out: dict[nn.Module, list[torch.Tensor]] = {}
    for i, m in enumerate(record.calls):
        if m in wanted:
            _act, _normed, s, _norm = _follower(record, i)
            if s is not None:
                out.setdefault(m, []).append(s)
    return out


def output_layer(layers: list[TracedLayer]) -> TracedLayer | None:
    """The output layer: the last traced layer that ran (its ``activation``, e.g. the sigmoid
    of a ``BCELoss`` model, is part of the model's output, not a hidden activation)."""
    return next((t for t in reversed(layers) if t.ran), None)


def dominant_activation(layers: list[TracedLayer]) -> str | None:
    """The most common activation name after the weight layers (ties: the first seen)."""
    counts: dict[str, int] = {}
    for layer in layers:
        if layer.activation_name:
            counts[layer.activation_name] = counts.get(layer.activation_name, 0) + 1
    return max(counts, key=counts.get) if counts else None


# -- initialization ----------------------------------------------------------------------------

def _gain(act: nn.Module | None) -> float:
    """``torch.nn.init.calculate_gain`` of the activation (1 for none or unknown)."""
    name = activation_name(act) if act is not None else None
    name = INIT_KIN.get(name or "", name)
    if name in ("relu", "elu", "gelu", "swish", "mish"):
        return math.sqrt(2.0)
    if name == "leaky_relu":
        return nn.init.calculate_gain("leaky_relu", activation_kwargs(act)["negative_slope"])
    if name == "tanh":
        return 5.0 / 3.0
    return 1.0


def init_weight(w: torch.Tensor, name: str, act: nn.Module | None) -> None:
    """Re-initialize ``w`` in place with initializer ``name`` (see the module table)."""
    fan_in, fan_out = fans(w)
    with torch.no_grad():
        if name == "matched":
            rec = recommended_for(activation_name(act) or "identity") if act is not None \
                else "glorot_uniform"
            if rec == "he_normal":
                slope = activation_kwargs(act).get("negative_slope", 0.0)  # PReLU: mean
                w.normal_(0.0, math.sqrt(2.0 / ((1.0 + slope ** 2) * fan_in)))
                return
            name = rec or "glorot_uniform"
        if name == "he_normal":
            w.normal_(0.0, math.sqrt(2.0 / fan_in))
        elif name == "he_uniform":
            b = math.sqrt(6.0 / fan_in)
            w.uniform_(-b, b)
        elif name == "glorot_normal":
            w.normal_(0.0, math.sqrt(2.0 / (fan_in + fan_out)))
        elif name == "glorot_uniform":
            b = math.sqrt(6.0 / (fan_in + fan_out))
            w.uniform_(-b, b)
        elif name == "lecun_normal":
            w.normal_(0.0, math.sqrt(1.0 / fan_in))
        elif name in ("orthogonal", "lsuv"):
            if w.dtype in (torch.float16, torch.bfloat16):  # no QR in half precision: drawn
                q = torch.empty(w.shape, dtype=torch.float32, device=w.device)  # in float32
                w.copy_(nn.init.orthogonal_(q, gain=_gain(act)))
            else:
                nn.init.orthogonal_(w, gain=_gain(act))
        else:
            raise ValueError(f"unknown init {name!r}; expected one of {INITS}")


def reinitialize(model: nn.Module, layers: list[TracedLayer], name: str,
                 x: torch.Tensor | None = None) -> None:
    """Re-initialize every traced layer (embeddings and frozen layers excepted) with ``name``;
    biases zeroed.
    ``lsuv`` needs a data batch ``x``."""
    if name not in INITS:
        raise ValueError(f"unknown init {name!r}; expected one of {INITS}")
    # frozen layers (requires_grad False, e.g. a pretrained backbone) are kept: training
    # could never repair a random re-initialization of them
    todo = [t for t in layers if not isinstance(t.module, nn.Embedding)
            and any(w.requires_grad for w in weight_tensors(t.module))]
    if not todo:
        raise NotApplicable("the model has no trainable weight layers to re-initialize")
    for t in todo:
        def init(w: torch.Tensor, act: nn.Module | None = t.activation) -> None:
            init_weight(w, name, act)

        for w in _effective_weights(t.module, init):
            init(w)
        _zero_biases(t.module)
    if name == "lsuv":
        if x is None:
            raise ValueError("lsuv needs a data batch")
        _lsuv_scale(model, todo, x)


def _effective_weights(module: nn.Module, change: Callable[[torch.Tensor], Any]
                       ) -> list[nn.Parameter]:
    """Apply ``change`` (in place) to each parametrized weight of ``module`` *as computed*
    (e.g. ``weight_norm``'s ``g v / ||v||``) and store the result through the
    parametrization's ``right_inverse``, so the weight the layer uses is the changed one
    (changing ``v`` alone leaves the row norms ``g``, and so the scale, as they were).
    Returns the module's other weights (plain ones, and those of a parametrization without
    ``right_inverse``), for the caller to change directly."""
    rest = {id(p): p for p in weight_tensors(module)}
    for tensor_name, plist in getattr(module, "parametrizations", {}).items():
        current = getattr(module, tensor_name)
        if current.dim() < 2 or not all(hasattr(p, "right_inverse") for p in plist):
            continue
        with torch.no_grad():
            new = current.detach().clone()
            change(new)
            try:
                setattr(module, tensor_name, new)
            except (NotImplementedError, RuntimeError):
                continue
        for p in plist.parameters():
            rest.pop(id(p), None)
    for hook in list(module._forward_pre_hooks.values()):  # deprecated nn.utils.weight_norm
        if type(hook).__name__ != "WeightNorm" or not hasattr(hook, "compute_weight"):
            continue
        g, v = (getattr(module, f"{hook.name}_{k}", None) for k in "gv")
        if g is None or v is None:
            continue
        with torch.no_grad():
            new = hook.compute_weight(module).detach().clone()
            change(new)
            v.copy_(new)
            g.copy_(torch.norm_except_dim(new, 2, hook.dim))
        rest.pop(id(v), None)
    return list(rest.values())


def _zero_biases(module: nn.Module) -> None:
    with torch.no_grad():
        for n, p in module.named_parameters(recurse=False):
            if p.dim() == 1 and "bias" in n:
                p.zero_()


def _first_tensor(out: Any) -> torch.Tensor | None:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    return None


def _lsuv_scale(model: nn.Module, layers: list[TracedLayer], x: torch.Tensor) -> None:
    """LSUV's second phase: per layer in forward order, divide its weights by the std of its
    output on ``x`` until ``|Var - 1| < LSUV_TOL`` (at most ``LSUV_ITERS`` passes).
    Recurrent layers (``nn.RNN``/``GRU``/``LSTM``) keep the first phase's orthogonal
    matrices: their output, the hidden state (tanh-bounded, an LSTM's ``o * tanh(c)``), has a
    variance below 1 at any weight scale, so the division multiplied their weights up on
    every pass (an LSTM's weights 1.5e9x the recommended variance after the cure), into
    saturation; orthogonal recurrent weights (singular values 1) are the recurrent cure."""
    seen: list[float] = []

    def hook(_m: nn.Module, _i: Any, out: Any) -> None:
        o = _first_tensor(out)
        if o is not None and not seen:
            seen.append(float(o.detach().float().var(unbiased=False)))

    for t in layers:
        if isinstance(t.module, nn.RNNBase):
            continue
        h = t.module.register_forward_hook(hook)
        try:
            for _ in range(LSUV_ITERS):
                seen.clear()
                with torch.no_grad(), untouched(model):
                    model(x.clone())
                if not seen or not math.isfinite(seen[0]) or seen[0] <= 0:
                    break
                if abs(seen[0] - 1.0) < LSUV_TOL:
                    break
                scale = math.sqrt(seen[0])
                with torch.no_grad():
                    for w in _effective_weights(t.module, lambda w, c=scale: w.div_(c)):
                        w.div_(scale)
        finally:
            h.remove()


# -- activation swap and normalization ---------------------------------------------------------

def swap_activations(model: nn.Module, new: str, x: torch.Tensor | None = None) -> int:
    """Replace every known activation module by ``NEW_ACTIVATIONS[new]()`` (in-place flags
    kept for ReLU); returns how many were replaced (0: :class:`NotApplicable`). Every slot
    holding it is replaced, also when one instance fills several (``act`` shared in
    ``nn.Sequential(l1, act, l2, act)``), which ``named_children`` lists once. ``x``: a data
    batch, to find the output layer (:func:`output_layer`), whose activation is kept (a
    ``BCELoss`` model's sigmoid swapped for a ReLU gives outputs outside [0, 1]), and to check
    that a replaced module runs (:class:`NotApplicable` when none does: a module the forward
    never calls, beside activations it applies itself)."""
    if new not in NEW_ACTIVATIONS:
        raise ValueError(f"unknown activation {new!r}; expected one of {sorted(NEW_ACTIVATIONS)}")
    traced = trace(model, x) if x is not None else []
    out = output_layer(traced)
    keep = out.activation if out is not None else None
    if keep is not None and out is not None and not out.functional:
        # one activation instance after hidden layers and the output layer (self.act(...)
        # everywhere in a BCELoss model): kept for the output, so those hidden layers keep
        # it too, and the swap was refused as 'no activation module of a hidden layer'
        shared = [t for t in traced if t is not out and t.ran and t.activation is keep]
        if shared and activation_name(keep) not in (None, new):
            slot = next((n for n, m in model.named_modules() if m is keep), "?")
            said = ", ".join(repr(t.name) for t in shared[:3]) + (
                f" and {len(shared) - 3} more" if len(shared) > 3 else "")
            raise NotApplicable(
                f"the activation module {slot!r} ({type(keep).__name__}) follows the hidden "
                f"layer(s) {said} and also the output layer {out.name!r}, whose activation "
                f"is kept (the model's output): no swap to {new} changes those hidden layers "
                "alone; give the output its own activation module")
    # an activation after frozen layers only (a pretrained backbone, requires_grad False) is
    # kept, as reinitialize keeps their weights: training could never adapt those weights to
    # another activation, so the swap would break the features the model was given
    trainable = {id(t.activation) for t in traced if t.ran and t.activation is not None
                 and any(w.requires_grad for w in weight_tensors(t.module))}
    frozen = {id(t.activation) for t in traced if t.ran and t.activation is not None
              and id(t.activation) not in trainable}
    count = 0
    swapped: list[nn.Module] = []
    kept_frozen: list[str] = []
    for parent in model.modules():
        for child_name, child in list(parent._modules.items()):
            if child is None or child is keep:
                continue
            if id(child) in frozen:
                kept_frozen.append(child_name)
                continue
            old = activation_name(child)
            if old is None or (old == new and not activation_kwargs(child)):
                continue
            repl = NEW_ACTIVATIONS[new]()
            if new == "relu" and getattr(child, "inplace", False):
                repl = nn.ReLU(inplace=True)
            setattr(parent, child_name, repl)
            swapped.append(repl)
            count += 1
    if not count:
        fn = next((t.activation_name for t in traced if t.functional), None)
        raise NotApplicable(f"no activation module of a hidden layer to replace by {new}" + (
            f": the forward applies its activations itself ({fn} as a function), which no "
            "module swap changes" if fn else
            f": those after frozen layers (requires_grad False) are kept, their weights "
            f"made for them ({len(kept_frozen)} module(s))" if kept_frozen else ""))
    if x is not None:  # modules the forward never calls (it applies torch.sigmoid itself)
        ran: set[int] = set()
        _forward_with_hook(model, x, swapped, lambda m, _i, _o: ran.add(id(m)))
        if not ran:
            raise NotApplicable(f"the {count} activation module(s) replaced by {new} never "
                                "run: the forward applies its activations itself (e.g. "
                                "torch.sigmoid(...)), which no module swap changes")
        _refuse_functional_left(model, x, new)
    return count


def _refuse_functional_left(model: nn.Module, x: torch.Tensor, new: str) -> None:
    """:class:`NotApplicable` when, after a swap to ``new``, a hidden layer's activation of
    another kind is one the forward applies itself (``torch.sigmoid(self.l2(h))``): a model
    mixing modules and functions was swapped in part (``self.act(self.l1(x))`` became ReLU,
    ``torch.sigmoid(self.l2(...))`` stayed), and trained as "ReLU with He initialization"."""
    traced = trace(model, x)
    last = output_layer(traced)
    hidden = [t for t in traced if t.ran and t.activation is not None and t is not last]
    left = [t for t in hidden if t.functional and t.activation_name != new]
    if left:
        said = ", ".join(f"{t.name!r} ({t.activation_name})" for t in left[:3])
        raise NotApplicable(f"the forward applies the activation after {said} itself, as a "
                            f"function, which no module swap changes: {new} would replace "
                            f"{len(hidden) - len(left)} of the {len(hidden)} hidden layers' "
                            "activations only")


class FeatureBatchNorm(nn.BatchNorm1d):
    """``BatchNorm1d`` over a Linear layer's features, the last axis, for inputs of any rank:
    ``(N, C)`` as ``BatchNorm1d``; ``(N, ..., C)`` (e.g. a sequence ``(N, T, C)``) with every
    leading position a sample. ``BatchNorm1d`` itself would take ``T`` for the channels."""

    channels_last = True  # its statistics are per entry of the last axis (bn_channel_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() <= 2:
            return super().forward(x)
        return super().forward(x.reshape(-1, x.shape[-1])).reshape(x.shape)


def _norm_for(layer: nn.Module, rank: int = 2) -> nn.Module | None:
    """The batch norm for ``layer``'s output (of ``rank`` dimensions for a Linear)."""
    if isinstance(layer, nn.Linear):
        return (nn.BatchNorm1d if rank <= 2 else FeatureBatchNorm)(layer.out_features)
    # (a ConvTranspose got none: a decoder's Conv -> ReLU -> ConvTranspose -> ReLU had its
    # norm after the Conv only, the cure verified as "after each layer")
    if isinstance(layer, (nn.Conv1d, nn.ConvTranspose1d)):
        return nn.BatchNorm1d(layer.out_channels)
    if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
        return nn.BatchNorm2d(layer.out_channels)
    if isinstance(layer, (nn.Conv3d, nn.ConvTranspose3d)):
        return nn.BatchNorm3d(layer.out_channels)
    return None


def _linear_output_ranks(model: nn.Module, x: torch.Tensor | None) -> dict[int, int]:
    """``id(linear) -> rank of its output`` on ``x`` (one pass, inside :func:`untouched`)."""
    ranks: dict[int, int] = {}
    if x is None:
        return ranks

    def hook(module: nn.Module, _inp: Any, out: Any) -> None:
        if isinstance(out, torch.Tensor):
            ranks.setdefault(id(module), out.dim())

    _forward_with_hook(model, x, [m for m in model.modules() if isinstance(m, nn.Linear)], hook)
    return ranks


def chrono_init(model: nn.Module, x: torch.Tensor) -> int:
    """Chrono initialization (Tallec & Ollivier 2018, "Can recurrent neural networks warp
    time?") of every trainable ``nn.GRU``/``nn.LSTM`` of ``model``, in place: each unit's
    memory gate biased to keep its state for ``u ~ U(1, T - 1)`` steps, ``T`` the sequence
    length the layer sees on ``x`` (one forward pass). LSTM (gates i, f, g, o): forget-gate
    bias ``log u`` and input-gate bias ``-log u`` in ``bias_ih``, their ``bias_hh`` 0. GRU
    (gates r, z, n; ``h' = (1 - z) n + z h``): update-gate bias ``log u`` in ``bias_ih``, its
    ``bias_hh`` 0. Returns the number of layers changed; raises :class:`NotApplicable` when
    none can be (no GRU/LSTM, only ``nn.RNN``, ``bias=False``, frozen, sequences under 3
    steps)."""
    lengths: dict[int, int] = {}

    def seen(m: nn.Module, args: tuple) -> None:
        t = args[0] if args else None
        if isinstance(t, torch.Tensor) and t.dim() >= 2:
            lengths.setdefault(id(m), int(t.shape[1 if m.batch_first and t.dim() == 3 else 0]))

    rnns = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.GRU, nn.LSTM))]
    if not rnns:
        plain = [n for n, m in model.named_modules() if isinstance(m, nn.RNNBase)]
        raise NotApplicable("no nn.GRU or nn.LSTM to initialize" + (
            f" ({', '.join(map(repr, plain[:3]))} is a plain nn.RNN: it has no gates whose "
            "bias sets a memory)" if plain else ""))
    hooks = [m.register_forward_pre_hook(seen) for _, m in rnns]
    try:
        with torch.no_grad(), untouched(model):
            model(x.clone())
    finally:
        for h in hooks:
            h.remove()
    changed, why = 0, []
    for name, m in rnns:
        t = lengths.get(id(m))
        if not m.bias:
            why.append(f"{name!r} is built with bias=False")
            continue
        if t is None or t < 3:
            why.append(f"{name!r} " + ("did not run" if t is None else f"sees {t} step(s)"))
            continue
        h = m.hidden_size
        gate = slice(h, 2 * h)  # LSTM's forget gate, GRU's update gate: the second block
        with torch.no_grad():
            for pname, p in m.named_parameters():
                if not pname.startswith("bias_") or not p.requires_grad:
                    continue
                keep = torch.log(torch.empty(h, dtype=torch.float64).uniform_(1.0, t - 1.0))
                if isinstance(m, nn.LSTM):
                    p[: 2 * h] = 0
                    if pname.startswith("bias_ih"):
                        p[gate] = keep.to(p)
                        p[:h] = -keep.to(p)
                else:
                    p[gate] = 0
                    if pname.startswith("bias_ih"):
                        p[gate] = keep.to(p)
                changed += 1
    if not changed:
        raise NotApplicable("no gate bias to initialize: " + "; ".join(why or [
            "every recurrent bias is frozen"]))
    return changed


RECURRENT_INITS: tuple[str, ...] = ("chrono", "orthogonal")
"""The ``recurrent_init`` transforms: :func:`chrono_init`, :func:`orthogonal_recurrent`."""


def orthogonal_recurrent(model: nn.Module) -> int:
    """Draw every trainable recurrent matrix of ``model``'s ``nn.RNN``/``nn.GRU``/``nn.LSTM``
    layers (``weight_hh_l{k}``, ``_reverse`` too) orthogonal with gain 1, gate block by gate
    block (``G`` blocks of ``hidden_size`` rows: 1 for an RNN, 3 for a GRU, 4 for an LSTM), in
    place; input weights and biases are kept. With singular values 1 the backward map of one
    time step, ``dL/dh_{t-1} = W_hh^T (f'(s_t) * dL/dh_t)``, has norm at most
    ``max |f'| <= 1`` for tanh and ReLU states, so the gradient cannot grow going back in time
    (Saxe et al. 2014; Le et al. 2015 for ReLU RNNs), where a recurrent matrix with a
    spectral radius above 1 multiplies it at every step. Returns the number of matrices
    drawn; raises :class:`NotApplicable` when there is none (no recurrent layer, or every
    recurrent matrix frozen)."""
    rnns = [m for m in model.modules() if isinstance(m, nn.RNNBase)]
    if not rnns:
        raise NotApplicable("no nn.RNN, nn.GRU or nn.LSTM whose recurrent matrices to draw")
    changed = 0
    with torch.no_grad():
        for m in rnns:
            for pname, p in m.named_parameters():
                if not pname.startswith("weight_hh") or not p.requires_grad or p.dim() != 2:
                    continue
                h = m.hidden_size
                for k in range(max(1, p.shape[0] // h)):
                    block = torch.empty((h, p.shape[1]), dtype=torch.float32, device=p.device)
                    nn.init.orthogonal_(block)  # (float32: no QR in half precision)
                    p[k * h:(k + 1) * h] = block.to(p.dtype)
                changed += 1
    if not changed:
        raise NotApplicable("every recurrent matrix is frozen")
    return changed


def _frozen(module: nn.Module) -> bool:
    """A weight layer none of whose weights trains (``requires_grad`` False: a pretrained
    backbone), whose function the cures keep."""
    ws = weight_tensors(module)
    return bool(ws) and not any(w.requires_grad for w in ws)


def insert_batchnorm(model: nn.Module, x: torch.Tensor | None = None) -> int:
    """Insert a batch norm after every Linear/Conv layer that an activation follows; returns
    how many were inserted. A child of an ``nn.Sequential`` directly followed by its
    activation module gets the norm as the next child; with a data batch ``x``, any other
    such layer (an activation module or function applied in a custom ``forward``, see
    :func:`trace`) is replaced in its parent by ``nn.Sequential(layer, norm)``, unless it runs
    more than once per forward (a shared layer) or already has a normalization before its
    activation. ``x`` also shows a Linear applied to sequences ``(N, T, C)``, which gets a
    :class:`FeatureBatchNorm` (``BatchNorm1d`` would normalize over ``T``), and the output
    layer (:func:`output_layer`), which gets none (its activation, e.g. a ``BCELoss``
    model's sigmoid, is the model's output). Frozen layers (every weight ``requires_grad``
    False, a pretrained backbone) get none, as the re-initializations and the activation swap
    keep them: a norm after them would change the features they were trained to give."""
    ranks = _linear_output_ranks(model, x)
    traced = trace(model, x) if x is not None else []
    out = output_layer(traced)
    last = out.module if out is not None else None
    device, dtype = next(((p.device, p.dtype) for p in model.parameters()
                          if p.is_floating_point()), (torch.device("cpu"), torch.float32))
    count = 0
    inserted: list[tuple[nn.Module, nn.Module]] = []  # (layer, its new norm)
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        # every slot in order, also a module that fills several (one shared activation
        # instance), which named_children lists once
        items = [(n, c) for n, c in seq._modules.items() if c is not None]
        new: list[tuple[str, nn.Module]] = []
        for i, (name, child) in enumerate(items):
            new.append((name, child))
            nxt = items[i + 1][1] if i + 1 < len(items) else None
            bn = _norm_for(child, ranks.get(id(child), 2)) \
                if child is not last and not _frozen(child) else None
            if bn is not None and nxt is not None and activation_name(nxt) is not None:
                new.append((f"{name}_bn", bn.to(device=device, dtype=dtype)))
                inserted.append((child, bn))
                count += 1
        if len(new) != len(items):
            for name in list(seq._modules):
                delattr(seq, name)
            for name, child in new:
                seq.add_module(name, child)
    if x is not None:
        count += _wrap_with_norms(model, x, last, ranks, device, dtype, inserted)
    if not count:
        kept = [t.name for t in traced if t.ran and t.activation is not None
                and not t.normalized and t.module is not last and _frozen(t.module)]
        raise NotApplicable("no Linear/Conv layer followed by an activation (a module or a "
                            "function of the forward) without a normalization before it" + (
                                f", but for frozen layers (requires_grad False), which are "
                                f"kept ({', '.join(map(repr, kept[:3]))})" if kept else ""))
    if x is not None:
        _check_norms_run(model, x, traced, inserted)
    return count


def _check_norms_run(model: nn.Module, x: torch.Tensor, traced: list[TracedLayer],
                     inserted: list[tuple[nn.Module, nn.Module]]) -> None:
    """:class:`NotApplicable` when a norm inserted after a layer that ran on ``x`` does not
    run: the forward reaches that layer through a reference outside the module tree (a plain
    Python list of layers, a closure), so the model would train unchanged and the cure be
    judged on a model it never reached."""
    names = {id(t.module): t.name for t in traced if t.ran}
    check = [(layer, bn) for layer, bn in inserted if id(layer) in names]
    ran: set[int] = set()
    _forward_with_hook(model, x, [bn for _, bn in check], lambda m, _i, _o: ran.add(id(m)))
    idle = [names[id(layer)] for layer, bn in check if id(bn) not in ran]
    if idle:
        raise NotApplicable(f"a batch norm after {', '.join(map(repr, idle[:4]))} would never "
                            "run: the forward calls the layer through a reference outside the "
                            "model's modules (e.g. a plain Python list; use nn.ModuleList)")


def _refuse_unnormalized_repeats(model: nn.Module, x: torch.Tensor) -> None:
    """:class:`NotApplicable` when, after :func:`insert_batchnorm`, a hidden layer that an
    activation follows runs more than once per forward and has no normalization after it (a
    weight-tied layer a custom ``forward`` applies in a loop, which the insertion skips: one
    batch norm would pool the statistics of all its calls). The cure would then be a batch
    norm after some of the hidden layers only (a model applying one ``h`` 8 times after
    ``inp``: after 1 of the 9 hidden layer calls), judged under a prescription that says
    "after each layer"."""
    traced = trace(model, x)
    last = output_layer(traced)
    hidden = [t for t in traced if t.ran and t.activation is not None and t is not last]
    left = [t for t in hidden if t.calls > 1 and not t.normalized
            and _norm_for(t.module) is not None  # (an LSTMCell in a loop gets none anyway)
            and not _frozen(t.module)]
    if not left:
        return
    said = ", ".join(f"{t.name!r}: it runs {t.calls} times per forward" for t in left[:3])
    done = sum(t.calls for t in hidden if t.normalized)
    total = sum(t.calls for t in hidden)
    raise NotApplicable(f"no batch norm after {said} (one norm would pool the statistics of "
                        f"all its calls), so the norms would follow {done} of the {total} "
                        "hidden layer calls only, not each layer")


def _wrap_with_norms(model: nn.Module, x: torch.Tensor, last: nn.Module | None,
                     ranks: dict[int, int], device: torch.device, dtype: torch.dtype,
                     inserted: list[tuple[nn.Module, nn.Module]]) -> int:
    """:func:`insert_batchnorm` for the layers outside an ``nn.Sequential`` slot that is
    directly followed by its activation: each slot holding such a layer gets
    ``nn.Sequential(layer, norm)`` (after the Sequential pass, so those layers now show a
    normalization and are left alone)."""
    wrap = {}
    for t in trace(model, x):
        if not t.ran or t.activation is None or t.normalized or t.module is last \
                or t.calls != 1 or _frozen(t.module):
            continue
        bn = _norm_for(t.module, ranks.get(id(t.module), 2))
        if bn is not None:
            wrap[id(t.module)] = nn.Sequential(t.module, bn.to(device=device, dtype=dtype))
            inserted.append((t.module, wrap[id(t.module)][1]))
    placed: set[int] = set()  # layers, not slots: one layer may fill two (an attribute and
    for parent in list(model.modules()):  # an nn.ModuleList entry)
        for name, child in list(parent._modules.items()):
            if child is not None and id(child) in wrap and parent is not wrap[id(child)]:
                setattr(parent, name, wrap[id(child)])
                placed.add(id(child))
    return len(placed)


# -- applying a prescription -------------------------------------------------------------------

def apply(changes: dict[str, Any], model: nn.Module, spec: TorchTrainSpec, x: torch.Tensor
          ) -> tuple[nn.Module, TorchTrainSpec]:
    """Apply ``changes`` to ``model`` (in place; pass a fresh copy) and ``spec``: activation
    swap first, then normalization, then re-initialization, then the dropout rates
    (:func:`lower_dropout`), then biases. ``x``: a data batch
    (tracing, LSUV, checking that the transformed model still runs). Raises
    :class:`NotApplicable` when a change finds nothing to change, ValueError for a bad one."""
    unknown = set(changes) - TRAINING_KEYS - MODEL_KEYS
    if unknown:
        raise ValueError(f"unknown prescription keys {sorted(unknown)}; expected "
                         f"{sorted(TRAINING_KEYS | MODEL_KEYS)}")
    if "activation" in changes:
        swap_activations(model, str(changes["activation"]), x)
    if "normalization" in changes:
        if changes["normalization"] != "batchnorm":
            raise ValueError(f"unknown normalization {changes['normalization']!r}; expected "
                             f"'batchnorm'")
        insert_batchnorm(model, x)
        _refuse_unnormalized_repeats(model, x)
    if "init" in changes:
        reinitialize(model, trace(model, x), str(changes["init"]), x)
    if "dropout" in changes:
        lower_dropout(model, changes["dropout"])
    if changes.get("recurrent_init") is not None:
        if changes["recurrent_init"] not in RECURRENT_INITS:
            raise ValueError(f"unknown recurrent_init {changes['recurrent_init']!r}; expected "
                             f"one of {', '.join(map(repr, RECURRENT_INITS))}")
        if changes["recurrent_init"] == "chrono":
            chrono_init(model, x)
        else:
            orthogonal_recurrent(model)
    if changes.get("bias_init") is not None:
        if changes["bias_init"] not in ("zeros", "zero"):
            raise ValueError(f"unknown bias_init {changes['bias_init']!r}; expected 'zeros'")
        layers = trace(model, x)
        if not any(p.dim() == 1 and "bias" in n and bool(p.detach().abs().max() > 0)
                   for t in layers for n, p in t.module.named_parameters(recurse=False)):
            raise NotApplicable("every bias is already zero")
        for t in layers:
            if any(w.requires_grad for w in weight_tensors(t.module)):  # frozen layers kept
                _zero_biases(t.module)
    if MODEL_KEYS & set(changes):
        mode = "training"
        try:  # in both modes: the final metrics run eval(), where e.g. a
            with torch.no_grad(), untouched(model):  # TransformerEncoderLayer's fast path
                model(x.clone())  # reads linear1.weight, which nn.Sequential(linear1,
                mode = "eval"  # norm) lacks
                model.eval()
                model(x.clone())
        except Exception as e:  # noqa: BLE001 - any failure means the transform broke it
            raise NotApplicable(f"the transformed model does not run in {mode} mode: "
                                f"{type(e).__name__}: {e}") from None
    train_changes = {k: v for k, v in changes.items() if k in TRAINING_KEYS}
    return model, spec.with_changes(**train_changes) if train_changes else spec


# -- what to try for each finding ---------------------------------------------------------------

SATURATING = ("sigmoid", "tanh", "softsign", "hardtanh", "hardsigmoid")

ADAM_FAMILY = frozenset({"adam", "adamw", "nadam", "radam", "adamax"})
"""Optimizers for which no switch to Adam is offered (Adam itself and its variants)."""


def translate(rule_changes: dict[str, Any], spec: TorchTrainSpec) -> dict[str, Any] | None:
    """The NumPy rules' ``mlp()``-argument prescription as torch changes (None when it has
    no torch counterpart, e.g. ``residual``)."""
    out: dict[str, Any] = {}
    for k, v in rule_changes.items():
        if k == "init":
            out["init"] = v if v in INITS and v not in RECOMMENDED_INIT.values() else "matched"
        elif k == "activation":
            if v not in NEW_ACTIVATIONS:
                return None
            out["activation"] = v
            out["init"] = "matched"
        elif k == "batchnorm":
            if v:
                out["normalization"] = "batchnorm"
        elif k == "bias_init":
            out["bias_init"] = "zeros"
        elif k in ("lr", "optimizer", "batch_size"):
            out[k] = v
        elif k == "optimizer_kwargs":  # the weight penalty's cure: its weight_decay 10x lower
            out[k] = dict(v)  # (was no counterpart: the alternatives' lr / 10 came first)
        elif k == "bn_inference" and v == "population":
            out["bn_population"] = True
        elif k == "standardize_targets" and v:  # the doctor wraps the model: trained as on
            out["target_scale"] = "standardize"  # (y - mean) / std, outputs in y's units
        elif k in ("dropout", "input_dropout"):  # one rate for the dropouts passed in turn
            out["dropout"] = min(float(v), out.get("dropout", 1.0))
        elif k == "activation_kwargs":
            continue
        else:  # residual, bn_inference, bn_momentum: no generic module transform
            return None
    if out.get("optimizer") not in (None, spec.optimizer) and "lr" not in out:
        out["lr"] = 1e-3
    return out or None


CHRONO = ("Chrono initialization of the GRU/LSTM gate biases (Tallec & Ollivier 2018): each "
          "unit starts out keeping its state over 1 to T steps, so the gradient reaches the "
          "early steps.")


ORTHOGONAL_RECURRENT = (
    "Draw each recurrent matrix (W_hh, gate by gate) orthogonal with gain 1 (Saxe et al. 2014; "
    "Le et al. 2015): its singular values are 1, so the gradient is not multiplied by more than "
    "1 at each step back in time.")


def _matched_caveat(activation: str | None) -> str:
    """What the ``matched`` re-initialization gives ``activation``'s units when its variance was
    not derived for them (:func:`depthlab.diagnosis.prescriptions.init_caveat`): sigmoid units
    get Glorot's, derived for f'(0) = 1, while the sigmoid's linear regime keeps variances at
    16x it (a 12-layer sigmoid regression at 33x Glorot's variance trained to a loss of 7.4,
    Glorot's left it at 19.5, a constant prediction's); ``""`` otherwise."""
    if not activation:
        return ""
    caveat = init_caveat(activation)
    return f" The {recommended_init(activation)} variance is {caveat}." if caveat else ""


def warmup_steps(steps: int) -> int:
    """Length ``W = max(2, steps // 10)`` of the warm-up cure for a run of ``steps`` updates
    (update ``k`` at ``lr * min(1, k / W)``: 10% of the run, and at least 2 updates, since 1
    step of warm-up changes nothing)."""
    return max(2, steps // 10)


def warmup_fits(steps: int) -> bool:
    """Whether the warm-up cure ends within a run of ``steps`` updates,
    ``warmup_steps(steps) <= steps``: in a shorter run (``steps = 1``: its one update at
    ``lr / 2``) no update reaches the learning rate, so the "warm-up" is a smaller learning
    rate throughout, which the ``lr`` cures already verify; it is not offered there."""
    return warmup_steps(steps) <= steps


def alternatives(kind: str, activation: str | None, spec: TorchTrainSpec, normalized: bool,
                 at_init: bool = False, in_training: tuple[float, float] | None = None,
                 exploded: float | None = None) -> list[tuple[dict[str, Any], str]]:
    """Further cures to verify for a finding of ``kind`` (after the rule's own), each with
    the reason it may help. ``at_init``: a divergence whose first loss, on the initial weights
    before any update, was already non-finite (no learning rate, warm-up or clipping changes
    that loss: re-initializations come first). ``in_training``: ``(ratio at step 0, ratio)``
    of a vanishing-gradient finding whose gradient path was trainable at initialization and
    whose ratio grew ``>= GRADIENT_MIN_RATIO``-fold in training (:func:`vanished_in_training`):
    the updates, not the initial weights, made it, so a 10x smaller learning rate and warm-up
    come first, their texts saying why (the doctor verifies the smaller rate before the rule's
    own cure; a post-norm residual stack at Adam lr 0.1: 1.1x at step 0, 2.6e4x later;
    re-initializing and LSUV left it at a constant prediction's loss, lr/10 trained it).
    ``exploded``: the step-0 ratio of an exploding-gradient finding of the same run that
    crosses both thresholds at initialization (:func:`exploded_at_init`): a divergence there
    is the initial weights' too, so its re-initializations come first, as with ``at_init``
    (8 ReLU layers at 8x He's variance, 1.4e3x at step 0, NaN at step 3: lr/10, warm-up and
    clipping did not help, He's variance trained it)."""
    lower = {"lr": spec.lr / 10.0}, "A 10x smaller learning rate keeps each update small."
    if in_training is not None and kind == "vanishing_gradients":
        r0, r = in_training
        why = (f"The gradient path was trainable at initialization ({r0:.3g}x between its "
               f"ends at step 0) and vanished in training ({r:.3g}x, the median over its "
               "probes): the updates, not the initial weights, did it. ")
        first = [({"lr": spec.lr / 10.0}, why + "A 10x smaller learning rate keeps each "
                  "update small.")]
        if warmup_fits(spec.steps):
            first.append(({"warmup": warmup_steps(spec.steps)}, why + "Linear learning-rate "
                          "warm-up over the first 10% of the steps keeps the first updates "
                          "small."))
        return first + [c for c in alternatives(kind, activation, spec, normalized, at_init)
                        if "lr" not in c[0] and "warmup" not in c[0]]
    adam = ({"optimizer": "adam", "lr": 1e-3},
            "Adam (lr 1e-3) scales each parameter's step by its gradient's running RMS, so a "
            "layer with tiny gradients still moves.")
    relu = ({"activation": "relu", "init": "matched"},
            "ReLU with He initialization: f' = 1 on active units, so the gradient is not "
            "shrunk by f' <= 1/4 (sigmoid) at every layer.")
    bn = ({"normalization": "batchnorm"},
          "Batch normalization after each layer rescales the back-propagated gradient by "
          "1 / std of its input (Ioffe & Szegedy 2015).")
    lsuv = ({"init": "lsuv"}, "LSUV: orthogonal weights rescaled so that every layer's output "
                              "has unit variance on a data batch (Mishkin & Matas 2016).")
    matched = ({"init": "matched"}, "Re-initialize each layer for the activation that follows "
                                    "it (He / Glorot / LeCun)." + _matched_caveat(activation))
    warmup = ({"warmup": warmup_steps(spec.steps)},
              "Linear learning-rate warm-up over the first 10% of the steps.")
    clip = ({"clip_grad_norm": 1.0}, "Clip the gradient norm at 1 "
                                     "(torch.nn.utils.clip_grad_norm_).")
    leaky = ({"activation": "leaky_relu", "init": "matched"},
             "Leaky ReLU keeps a gradient flowing to inactive units.")
    tanh = ({"activation": "tanh", "init": "matched"},
            "tanh with Glorot initialization: zero-centred, with f'(0) = 1 instead of the "
            "sigmoid's 1/4 (Glorot & Bengio 2010).")
    tanh_bn = ({"activation": "tanh", "init": "matched", "normalization": "batchnorm"},
               "tanh with Glorot initialization and batch normalization after each layer: the "
               "norm keeps every pre-activation at unit variance and tanh's f'(0) = 1 passes "
               "the gradient on, where the sigmoid's 1/4 shrinks it at every layer.")
    saturating = activation in SATURATING
    sigmoid = [tanh] if activation == "sigmoid" else []
    norm = [] if normalized else [bn]
    table: dict[str, list[tuple[dict[str, Any], str]]] = {
        "vanishing_gradients": sigmoid + norm + ([tanh_bn] if sigmoid and norm else [])
        + [adam] + ([relu] if saturating else []) + [lsuv],
        "exploding_gradients": [matched, clip, lower] + norm,
        "saturation": [matched] + sigmoid + norm + ([relu] if saturating else []),
        "dead_relu": [lower, leaky, warmup, adam],
        "mean_shift": [tanh, relu],
        "init_mismatch": [matched, lsuv],
        "divergence": ([({"init": "matched"}, "The loss is non-finite on the first "
                          "mini-batch, before any update: the initial weights overflow. "
                          + matched[1]), lsuv] if at_init else
                       [({"init": "matched"}, f"The gradients explode at initialization "
                         f"({exploded:.3g}x larger in the first hidden layer than in the "
                         f"last at step 0): the first updates, largest in the first layers, "
                         f"blow their weights up. " + matched[1]), lsuv]
                       if exploded is not None else [])
        + [lower, warmup, clip, adam],
        "bn_drift": [({"bn_population": True}, "Recompute the batch-norm running statistics "
                      "over the whole training set after training (population statistics)."),
                     lower],
        "lr_too_low": [adam],  # (the rule's own cure raises the lr: never "lower" it)
        "vanishing_through_time": [
            ({"recurrent_init": "chrono", "optimizer": "adam", "lr": 0.01},
             CHRONO + " With Adam (lr 0.01), whose per-parameter step does not shrink with "
             "the small gradients of the early steps."),
            ({"recurrent_init": "chrono"}, CHRONO), adam],
        "exploding_through_time": [
            ({"recurrent_init": "orthogonal"}, ORTHOGONAL_RECURRENT),
            ({"clip_grad_norm": 1.0}, "Clip the gradient norm at 1 "
             "(torch.nn.utils.clip_grad_norm_; Pascanu et al. 2013): a step whose gradient "
             "grew through time keeps its direction and a bounded size."), lower],
        "unscaled_targets": [({"target_scale": "standardize"}, "Standardize the targets with "
                               "the training set's per-column mean and std (train on (y - mean) "
                               "/ std, predict mean + std * output): outputs and gradients of "
                               "scale 1, as the initialization expects."), adam],
    }
    cures = table.get(kind, [lower, adam])
    if not warmup_fits(spec.steps):  # a 1-step run: "warm-up" would be lr / 2 throughout
        cures = [c for c in cures if c is not warmup]
    if kind == "vanishing_through_time" and spec.optimizer in ADAM_FAMILY:
        return [c for c in cures if "recurrent_init" in c[0] and "optimizer" not in c[0]]
    # Adam's variants already scale each step by the gradient's RMS: "switch to Adam" would
    # only drop AdamW's decoupled weight decay (NAdam's momentum) and change the lr
    return [c for c in cures if c is not adam] if spec.optimizer in ADAM_FAMILY else cures


def exploded_at_init(evidence: dict[str, Any]) -> float | None:
    """The step-0 first/last gradient ratio ``r0`` of an exploding-gradient finding's
    ``evidence`` when it alone crosses both thresholds (``r0 >= GRADIENT_MIN_RATIO`` and
    ``gradient_depth_scales(r0, n) > GRADIENT_DEPTH_SCALES``): the initial weights' explosion;
    ``None`` otherwise, also when the first ratio is not step 0's."""
    from ..diagnosis.rules import GRADIENT_DEPTH_SCALES, GRADIENT_MIN_RATIO, gradient_depth_scales

    try:
        r0, n = float(evidence["ratio_init"]), int(evidence["n_hidden"])
    except (KeyError, TypeError, ValueError):
        return None
    if evidence.get("ratio_init_step", 0) != 0 or not (math.isfinite(r0)
                                                       and r0 >= GRADIENT_MIN_RATIO):
        return None
    return r0 if gradient_depth_scales(r0, n)[1] > GRADIENT_DEPTH_SCALES else None


def vanished_in_training(evidence: dict[str, Any]) -> tuple[float, float] | None:
    """``(ratio at step 0, ratio)`` of a vanishing-gradient finding's ``evidence`` when its
    gradient path was trainable at initialization (the step-0 first/last ratio ``r0`` below
    ``GRADIENT_MIN_RATIO`` or ``gradient_depth_scales(r0, n)`` within
    ``GRADIENT_DEPTH_SCALES``) and the judged ratio ``r`` is ``>= GRADIENT_MIN_RATIO`` times
    ``r0``: the attenuation was made in training. ``None`` otherwise, also when the first
    ratio is not step 0's (no gradient there)."""
    from ..diagnosis.rules import GRADIENT_DEPTH_SCALES, GRADIENT_MIN_RATIO, gradient_depth_scales

    try:
        r0, r, n = (float(evidence["ratio_init"]), float(evidence["ratio"]),
                    int(evidence["n_hidden"]))
    except (KeyError, TypeError, ValueError):
        return None
    if evidence.get("ratio_init_step", 0) != 0 or not (r0 > 0 and math.isfinite(r0)):
        return None
    depth = gradient_depth_scales(r0, n)[1] if r0 > 1 else 0.0
    trainable = r0 < GRADIENT_MIN_RATIO or not depth > GRADIENT_DEPTH_SCALES
    return (r0, r) if trainable and r >= GRADIENT_MIN_RATIO * r0 else None
