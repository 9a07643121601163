"""``doctor`` for any ``torch.nn.Module``: train a fresh copy briefly with probes, diagnose it
with the NumPy doctor's rules, and verify cures by re-training.

The rules (:mod:`depthlab.diagnosis.rules`) read a probe table and a :class:`RunContext`;
:class:`TorchRunContext` gives them the torch model's view: the *hidden* layers are the weight
layers but the output layer (the last to run, even when a sigmoid follows it) followed (through
normalization, dropout or pooling) by a known activation module (all weight layers but the
last when fewer than two are), numbered as in the probe table; each
hidden layer's fans come from its weight (``torch.nn.init``'s convention, conv: channels x
kernel size) and its initializer is judged against the one recommended for *its own* following
activation. The network's ``activation`` is the most common one.

The vanishing/exploding rules measure depth along the gradient's path
(:mod:`depthlab.torch.gradient_path`): with ``g_k`` the gradient std at stage ``k`` of ``n``
stages in forward order, ``R = g_n / g_1`` (median over probes), the per-stage factor
``R^(1/(n-1))`` and the depth ``2 n ln(R) / (n - 1)`` depth scales. A residual block is one
stage (``g`` at its output, the residual stream: ``block_grad_std``), hidden layers outside
blocks that read the same input tensor are one stage (``g = sqrt(sum m_i sigma_i^2 /
sum m_i)``, ``m_i`` output entries per example), any other hidden layer a stage of its own;
a chain's stages are its hidden layers, read as the NumPy doctor reads them. A stage that one
forward applies ``k`` times (weight sharing) counts ``k`` in ``n``: the factor is per
application (:func:`~depthlab.torch.gradient_path.pooled_factor` where an end's reading pools
its calls).

Verification (``verify=True``): for each finding, the rule's prescription translated to a
module transform (:func:`depthlab.torch.prescriptions.translate`) and then the torch
alternatives for that kind (:func:`~depthlab.torch.prescriptions.alternatives`) are applied to
a fresh model (``make_model()`` after ``torch.manual_seed(seed)``, or a deep copy of the given
instance), trained with the same seed, data order and budget, and compared with the baseline:
``helped`` when the finding's metric went down by more than 1% (or the finding is gone)
*and* the final training loss went down or the validation accuracy up. Up to ``max_cures``
applicable cures are verified per finding; the finding's prescription becomes the one that
improved training most, and the findings are ranked by their best cure
(:func:`depthlab.diagnosis.doctor.rank_findings`).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import inspect
import json
import math
import random
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from numbers import Integral
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..activations import get_activation
from ..diagnosis.doctor import (
    _improved,
    judged_metric,
    name_nonfinite_weights,
    rank_findings,
    resolved_by,
    rows_per_step,
)
from ..diagnosis.findings import Diagnosis, Finding, Verification
from ..diagnosis.prescriptions import recommended_init
from ..diagnosis.rules import (
    EARLY_UPDATE_STEPS,
    INIT_MISMATCH,
    RULES,
    Rule,
    RunContext,
    _count,
    _shifted_off,
    evaluate,
    gradient_depth_scales,
    init_ratio,
    norm_gradient_frame,
)
from ..validators import did_you_mean, keyword_hints, run_name
from . import prescriptions as rx
from .baselines import (
    StandardizedTargets,
    _map_leaves,
    constant_accuracy,
    constant_loss,
    fitted_constant_loss,
    target_scale,
)
from .checks import (
    FLOAT_TARGET_LOSSES,
    _check_out,
    _check_runs,
    _check_step,
    _check_token_ids,
    _float_target_loss,
    _loss_on,
    _sample_output,
)
from .doctor_probe import (
    NORM_GRAD,
    _layer_index,
    _probe_fn,
    functional_act_rows,
)
from .exploding_time import EXPLODING_TIME_DECADES, rule_exploding_through_time
from .gradient_path import (
    POOLED_GRAD,
    LayerGraph,
    gradient_stages,
    parallel_layers,
    pooled_factor,
    stage_stds,
)
from .inputs import (
    VAL_FRACTION,
    _has_lazy,
    _shaped_dataset,
    pairs_from_torch,
    shape_inputs,
    tensor_data,
)
from .layers import activation_spec, check_materialized, check_model, kept_state
from .predict import theory_rows
from .probe import LOSSES, _single_value_norm, loss_by_name
from .through_time import (
    THROUGH_TIME_DECADES,
    rule_vanishing_through_time,
    through_time,
)
from .train import (
    OPTIMIZERS,
    TensorData,
    TorchTrainSpec,
    TrainResult,
    bn_channel_dim,
    calibrate_population,
    model_device_dtype,
    population_layers,
    scalar_loss,
    train,
)

__all__ = [
    "doctor",
    "TorchRunContext",
    "TORCH_RULES",
    "LOSSES",
    "PROBE_EXAMPLES",
    "TRACE_EXAMPLES",
    "NO_ACTIVATION",
    "LSUV_EXAMPLES",
    "SCALE_FREE",
    "scale_free",
    "bn_drift",
    "bn_losses",
    "describe",
    # defined in the modules split off this one (inputs, checks, baselines, doctor_probe,
    # through_time), importable from here as before
    "VAL_FRACTION",
    "tensor_data",
    "pairs_from_torch",
    "shape_inputs",
    "FLOAT_TARGET_LOSSES",
    "StandardizedTargets",
    "target_scale",
    "constant_loss",
    "constant_accuracy",
    "NORM_GRAD",
    "functional_act_rows",
    "THROUGH_TIME_DECADES",
    "through_time",
    "rule_vanishing_through_time",
    "EXPLODING_TIME_DECADES",
    "rule_exploding_through_time",
]


PROBE_EXAMPLES = 300
"""Size of the fixed probe batch (the first 300 validation examples, as the NumPy doctor)."""


TRACE_EXAMPLES = 8
"""Rows of the data used to trace layers and to check transformed models."""

NO_ACTIVATION = "no activation module"
"""``config["activation"]`` of a model whose layers feed no known activation module (e.g.
``torch.sigmoid`` called inside ``forward``): rules that need the activation stay silent."""

LSUV_EXAMPLES = 256
"""Rows of the training data LSUV rescales on."""


# -- the rules' view of a torch model ----------------------------------------------------------

@dataclass
class _Fans:
    fan_in: int
    fan_out: int
    units: int | None = None
    """Units on the layer's feature axis where they are not ``fan_out``: a convolution's
    ``out_channels`` (its ``fan_out`` is ``out_channels x kernel size``, torch.nn.init's
    convention), the count ``dead_frac`` is a fraction of and the dead-unit statistics use."""
    n_weights: int | None = None
    """The layer's weights whose sample variance the init rules judge (the numel of the
    fans' weight tensor): a convolution's ``cin x cout x k^2``, not ``fan_in x fan_out``
    (``cin k^2 x cout k^2``, k^2 times as many), which :func:`depthlab.diagnosis.rules.
    weight_count` falls back to for a NumPy Dense."""


@dataclass
class _Act:
    fn: Any


@dataclass
class _Point:
    """Duck-typed :class:`depthlab.network.ProbePoint`: what the rules read of a hidden layer."""

    index: int
    dense: _Fans | None
    activation: _Act | None
    module: str = ""
    activation_name: str | None = None
    recurrent: str | None = None
    """A recurrent layer's own nonlinearity (``tanh``; ``relu`` for ``nn.RNN(nonlinearity=
    'relu')``) when no activation module follows it: its initializer (the first weight,
    ``weight_ih_l0``) is judged for it, a too large variance only (saturated gates: an LSTM
    drawn from N(0, 3^2) stays at chance)."""
    matrices: tuple[tuple[float, int, int], ...] = ()
    """A recurrent layer's weight matrices at initialization (``weight_ih_l*``,
    ``weight_hh_l*``, ...), each as ``(variance, fan_in, fan_out)``: where the pooled
    ``weight_std`` judged against ``weight_ih_l0``'s fans is not above ``INIT_MISMATCH``, each
    matrix is judged against the recommended variance for its own fans and the layer's ratio
    is the largest (:meth:`TorchRunContext.init_variance_ratios`). The pooled reading alone
    missed an ``nn.RNN(4, 32)`` whose ``weight_hh`` was N(0, 1), 32x Glorot's for its 32 x 32
    fans but 3.6x the 4 -> 32 input weights' upper variance (chaotic: the loss stayed near a
    constant prediction's, 'vanishing through time' its only finding and no cure that
    helped; the Glorot cure trains it, 0.55 -> 0.12, val acc 0.59 -> 0.94)."""


class _ModelView:
    """Duck-typed network for :class:`RunContext`: ``probe_points()`` and ``batchnorms()``."""

    def __init__(self, points: list[_Point],
                 dropouts: list[tuple[float, bool]] | None = None) -> None:
        self._points = points
        self._dropouts = list(dropouts or [])

    def probe_points(self) -> list[_Point]:
        return list(self._points)

    def dropout_chain(self) -> list[tuple[float, bool]]:
        """Rate and alpha flag of each dropout the signal passes in turn
        (:func:`depthlab.torch.prescriptions.chained_dropouts`)."""
        return list(self._dropouts)

    def batchnorms(self) -> list:
        return []


UNGRADED_UNJUDGED = ("saturated_frac", "dead_frac", "act_mean")
"""Quantities that :meth:`TorchRunContext.at` leaves out for layers with no gradient at any
probed step (frozen layers on the input's side of every trainable one): their saturated or
dead units hold back no training, and no cure changes them (the re-initializations, the
activation swap and the inserted norms keep frozen layers; two frozen N(0, 1) tanh layers
under a trainable head read 'saturation ... the flat units pass little gradient back', both
cures 'did not help', the saturated fraction 0.68 -> 0.68). The mean activation too: six
frozen N(0, 1) sigmoid layers under four trainable ones read 'mean_shift (layers 1-10) ...
reaches 0.54 (layer 1)', and each verified swap, which keeps the frozen layers' sigmoids,
'did not help' with the metric 0.5374 -> 0.5374, the frozen layer 1's mean, whatever the
trainable layers' became."""


@dataclass
class TorchRunContext(RunContext):
    """:class:`RunContext` for a torch model: ``points`` from the traced layers; the initializer
    of each hidden layer is judged against its own following activation."""

    points_override: list[_Point] = field(default_factory=list)
    through_time: dict[str, Any] | None = None  # :func:`through_time` of the trained model
    through_time_init: dict[str, Any] | None = None  # ... and of the initial one
    residual_ends: frozenset[str] = frozenset()
    """Names of the layers that end a residual branch (:func:`rx.residual_ends`): a smaller
    initial variance than recommended, zeros included, is their design (a branch that starts
    near 0 leaves the block near the identity: Fixup, SkipInit, torchvision's
    ``zero_init_residual``, GPT-2's 1/sqrt(2 L)), not a mismatch; a larger one still is."""

    graph: LayerGraph = field(default_factory=LayerGraph)
    """The hidden layers that read one input tensor, each layer's output entries per example
    and the layers whose output does not follow the examples (:func:`parallel_layers`)."""

    dropouts: list[tuple[float, bool]] = field(default_factory=list)
    """Rate and alpha flag of each dropout the signal passes in turn (:func:`dropout_chain`),
    read by the shared ``dropout_too_strong`` rule."""

    def __post_init__(self) -> None:
        self.net = _ModelView(self.points_override, self.dropouts)
        frame = self.frame
        if "module" in frame.columns:
            self.frame = frame.drop(columns=["module"])
        super().__post_init__()
        self.frame = frame
        self.stages = gradient_stages(self.points, frame, self.graph.groups, self.graph.shared,
                                      self.graph.calls)
        # the layers with a grad_pre_std row at some probed step (not: frozen input-side ones)
        self._graded = ({int(i) for i in frame.loc[frame["quantity"] == "grad_pre_std", "layer"]}
                        if len(frame) and "quantity" in frame.columns else set())
        self._stage = {s.layer: s for s in self.stages}
        if all(s.block is None and len(s.members) == 1 and s.calls == 1 for s in self.stages) \
                and not any(p.module in self.graph.shared for p in self.points):
            self.stages = []  # a chain: its hidden layers, read as the NumPy doctor reads them
        elif any(s.calls > 1 for s in self.stages):
            self.gradient_unit = "application"  # weight sharing: a step per call
        else:
            self.gradient_unit = "stage"
        self._block_grads = pd.Series(dtype=float)
        if len(frame) and "module" in frame.columns:
            rows = frame[frame["quantity"] == "block_grad_std"]
            if len(rows):
                self._block_grads = rows.drop_duplicates(["step", "module"], keep="last") \
                    .set_index(["step", "module"])["value"]
        name = self.config.get("activation")
        if name and name != NO_ACTIVATION:
            self.fn = _depthlab_fn(name, self.config.get("activation_kwargs") or {}) or next(
                (p.activation.fn for p in self.points
                 if p.activation_name == name and p.activation is not None), None)
        own = {p.recurrent for p in self.points}
        if (not name or name == NO_ACTIVATION) and len(own) == 1 and None not in own:
            self.activation = own.pop()  # recurrent layers only: their own nonlinearity's

    @property
    def gradient_layers(self) -> list[int]:
        """The stages of the gradient path (:mod:`depthlab.torch.gradient_path`) by their
        layer numbers; a chain's hidden layers. Layers whose output has no gradient at any
        probed step are left out: frozen layers (``requires_grad=False``) on the input's side
        of every trainable one, through which nothing is back-propagated (two frozen layers
        under six sigmoid ones read 'the gradient at layer 1 is not finite (it overflowed)',
        the depth counted over eight)."""
        path = [s.layer for s in self.stages] if self.stages else self.hidden
        graded = self._graded
        if not graded:  # no gradient rows at all: nothing to tell frozen layers apart by
            return path
        return [i for i in path if (self.stages and self._stage[i].block is not None)
                or any(m in graded for m in self.gradient_members(i))]

    @property
    def gradient_depth(self) -> int:
        """The steps of the gradient path: each stage of :attr:`gradient_layers` counted once
        per call in a forward (a layer applied ``k`` times by weight sharing is ``k``
        steps)."""
        if not self.stages:
            return len(self.gradient_layers)
        return sum(self._stage[i].calls for i in self.gradient_layers)

    def gradient_depth_note(self) -> str:
        """``" (layer 2 applied 4 times)"``: the stages of the path that one forward applies
        several times (weight sharing), each counted once per application."""
        shared = [self._stage[i] for i in self.gradient_layers
                  if self.stages and self._stage[i].calls > 1]
        return (" (" + ", ".join(f"{s.what()} applied {s.calls} times"
                                 for s in shared) + ")") if shared else ""

    def gradient_scales(self, ratio: float, vanishing: bool) -> tuple[float, float]:
        """:meth:`RunContext.gradient_scales`; where an end of the path is a stage applied
        several times (its reading pooled over the calls), the factor per application is
        :func:`pooled_factor`'s ``q`` and the depth that of the ratio ``q^(n-1)``."""
        path, n = self.gradient_layers, self.gradient_depth
        ends = [self._stage[i].calls for i in (path[0], path[-1])] if self.stages and path \
            else [1, 1]
        if ends == [1, 1]:
            return gradient_depth_scales(ratio, n)
        q = pooled_factor(ratio if vanishing else 1.0 / ratio, ends[0], ends[1], n)
        if not math.isfinite(q):
            return math.nan, math.nan
        whole = q ** (n - 1)
        return gradient_depth_scales(whole if vanishing else 1.0 / whole, n)

    def gradient_stds(self, step: int) -> pd.Series:
        """Each stage's gradient std at ``step`` (:func:`stage_stds`): a residual block's
        ``block_grad_std``, a layer's ``grad_pre_std`` (dL/dxhat at a norm before its
        activation), the pooled std of layers run in parallel. Where a layer ``i``'s next
        layer reads its output averaged over positions and a later stage follows, every
        stage up to ``i`` (forward order) is multiplied by its :data:`POOLED_GRAD` factor
        ``f_i = std_{n,c}(sum_p g_{n,c,p}) / sqrt(P / k) / std(g)`` (``g = dL/ds_i``;
        :mod:`gradient_path`): the factor by which the mean divided the gradient of ``i``
        and of every layer below it."""
        grads = self.at(step, "grad_pre_std")
        if not self.stages:
            out = grads
        else:
            try:
                blocks = self._block_grads.xs(step, level="step")
            except (KeyError, TypeError):
                blocks = pd.Series(dtype=float)
            out = stage_stds(self.stages, grads, blocks, self.graph.sizes)
        return self._unpooled(step, out)

    def _unpooled(self, step: int, out: pd.Series) -> pd.Series:
        """``out`` with the stages up to each pooled layer multiplied by its factor ``f_i``
        (:meth:`gradient_stds`); unchanged without :data:`POOLED_GRAD` rows."""
        frame = self.frame  # not self.at: a pooled layer need not be hidden (a block's end)
        if not len(out) or not len(frame) or "quantity" not in frame.columns:
            return out
        rows = frame[(frame["quantity"] == POOLED_GRAD) & (frame["step"] == step)]
        last = max(out.index)
        out = out.copy()
        for i, f in zip(rows["layer"], rows["value"]):
            if i < last and float(f) > 0 and math.isfinite(float(f)):
                out[out.index <= i] *= float(f)
        return out

    def gradient_where(self, position: int) -> str:
        s = self._stage.get(position) if self.stages else None
        return s.where() if s is not None else f"layer {position}"

    def gradient_members(self, position: int) -> list[int]:
        s = self._stage.get(position) if self.stages else None
        return list(s.members or [s.layer]) if s is not None else [position]

    def bypass(self, index: int) -> str | None:
        """What carries the signal around hidden layer ``index`` (see
        :meth:`RunContext.bypass`): ``""`` in a chain, ``"a residual skip connection"`` inside
        a residual block, ``"the layers run in parallel with it"`` in a parallel group; None
        when the layer is in no stage."""
        if not self.stages:
            return "" if index in self.hidden else None
        for s in self.stages:
            if index in (s.members or [s.layer]):
                if s.block is not None:
                    return "a residual skip connection"
                return "the layers run in parallel with it" if len(s.members) > 1 else ""
        return None

    def at(self, step: int, quantity: str) -> pd.Series:
        """Per-hidden-layer values of ``quantity`` at ``step``: the output layer's row is left
        out, also when an activation module follows it (a ``BCELoss`` model's sigmoid is the
        model's output, its saturation confident predictions, not a hidden layer's)."""
        s = super().at(step, quantity)
        s = s[s.index.isin(self.hidden)]
        graded = getattr(self, "_graded", None)
        if quantity in UNGRADED_UNJUDGED and graded:
            s = s[s.index.isin(graded)]
        return s

    def init_variance_ratios(self, activation: str | None = None) -> dict[int, float]:
        """Initial Var(W) (``weight_std`` at step 0 squared) / the variance recommended for the
        layer's following activation (or for ``activation`` when given), per hidden layer."""
        w = self.at(0, "weight_std")
        out: dict[int, float] = {}
        if activation is None and recommended_init(self.activation) is None:
            return out  # the rules word their finding for the network's activation (hardtanh)
        for p in self.points:
            rec = recommended_init(activation or p.activation_name or p.recurrent or "")
            if rec is None or p.dense is None or p.index not in w.index:
                continue
            r = init_ratio(rec, float(w[p.index]) ** 2, p.dense.fan_in,
                           p.dense.fan_out)  # either He mode (fan_in / fan_out)
            if p.recurrent and p.matrices and not r > INIT_MISMATCH:
                # pooled weights within the band: each matrix for its own fans, the largest
                own = [init_ratio(rec, v, fi, fo) for v, fi, fo in p.matrices]
                r = max([v for v in own if math.isfinite(v)] + [r])
            if r < 1.0 and (p.module in self.residual_ends or p.recurrent):
                # a residual branch that starts small: its design; a recurrent layer's small
                # weights are PyTorch's default U(+-1/sqrt(hidden)) (0.17x He's in an
                # nn.RNN(relu) that trains), their cost vanishing_through_time's to judge
                continue
            out[p.index] = r
        return out


class _TorchActivationFn:
    """What the rules read of an activation function (``name``, ``forward(s)``,
    ``derivative(s, a)``, ``max_derivative``; NumPy arrays in and out, float64) for an
    activation module outside depthlab's NumPy registry (Hardtanh, ReLU6, CELU, Softplus, ...),
    computed by the module's own :class:`depthlab.torch.layers.ActivationSpec`."""

    def __init__(self, spec: Any) -> None:
        self.spec = spec
        self.name = spec.name
        self.max_derivative = spec.max_derivative

    def _call(self, fn: Callable, s: Any) -> np.ndarray:
        t = torch.from_numpy(np.ascontiguousarray(s, dtype=np.float64))
        return fn(t).numpy()

    def forward(self, s: Any) -> np.ndarray:
        return self._call(self.spec.function, s)

    def derivative(self, s: Any, a: Any = None) -> np.ndarray:
        return self._call(self.spec.derivative, s)


def _activation_fn(module: nn.Module | None) -> Any:
    """The rules' activation function of a module: depthlab's own when its registry has the
    activation, else :class:`_TorchActivationFn`; None for no known activation."""
    name = rx.activation_name(module) if module is not None else None
    if name is None:
        return None
    # PReLU: the leaky ReLU of its (mean) learned slope
    fn = _depthlab_fn(rx.INIT_KIN[name] if name == "prelu" else name,
                      rx.activation_kwargs(module))
    if fn is None:
        spec = activation_spec(module)
        fn = _TorchActivationFn(spec) if spec is not None else None
    return fn


def _depthlab_fn(name: str, kwargs: dict[str, float]) -> Any:
    try:
        return get_activation(name, **kwargs)
    except (ValueError, TypeError):
        return None


def recurrent_matrices(layers: list[rx.TracedLayer]
                       ) -> dict[str, tuple[tuple[float, int, int], ...]]:
    """Per recurrent layer (``nn.RNN``/``GRU``/``LSTM``) of ``layers``, by name: each
    trainable weight matrix's ``(variance, fan_in, fan_out)`` now (call it at initialization;
    population variance, ``torch.nn.init``'s fans) for :attr:`_Point.matrices`."""
    out: dict[str, tuple[tuple[float, int, int], ...]] = {}
    for t in layers:
        if not isinstance(t.module, nn.RNNBase):
            continue
        mats = []
        for w in rx.weight_tensors(t.module):
            if w.requires_grad and w.dim() == 2 and w.numel() > 1:
                v = float(w.detach().double().var(unbiased=False))
                mats.append((v, *rx.fans(w)))
        out[t.name] = tuple(mats)
    return out


def _points(table: pd.DataFrame, layers: list[rx.TracedLayer],
            matrices: dict[str, tuple[tuple[float, int, int], ...]] | None = None
            ) -> list[_Point]:
    index = _layer_index(table, layers)
    numbered = sorted(((index[t.name], t) for t in layers if t.name in index),
                      key=lambda it: it[0])
    # the output layer (the last to run) is not hidden even when an activation follows it
    # (a sigmoid for BCELoss), as the NumPy probe points exclude the output activation
    hidden = [(i, t) for i, t in numbered[:-1] if t.activation_name is not None]
    if len(hidden) < 2:
        hidden = numbered[:-1]
    out = []
    for i, t in hidden:
        ws = rx.weight_tensors(t.module)
        # no fans, so no init judgement, for embeddings, frozen (e.g. pretrained) layers and
        # weights whose scale the parametrization sets (spectral norm, orthogonal)
        judged = ws and ws[0].requires_grad and not isinstance(t.module, nn.Embedding) \
            and not scale_free(t.module)
        channels = getattr(t.module, "out_channels", None) \
            if isinstance(t.module, nn.modules.conv._ConvNd) else None
        fan = _Fans(*rx.fans(ws[0]), units=channels, n_weights=ws[0].numel()) \
            if judged else None
        own = None
        if isinstance(t.module, nn.RNNBase) and t.activation_name is None:
            own = "relu" if getattr(t.module, "nonlinearity", "tanh") == "relu" else "tanh"
        out.append(_Point(i, fan, _Act(_activation_fn(t.activation)), t.name,
                          t.activation_name, own, (matrices or {}).get(t.name, ())))
    return out


SCALE_FREE = ("_SpectralNorm", "_Orthogonal", "SpectralNorm")
"""Parametrizations (``torch.nn.utils.parametrizations.spectral_norm``/``orthogonal``) and the
deprecated ``torch.nn.utils.spectral_norm``'s forward pre-hook whose weight does not depend on
the scale of the trainable original (``W / sigma(W)``; an orthogonal matrix)."""


def scale_free(module: nn.Module) -> bool:
    """Whether the weight ``module`` uses is computed by a :data:`SCALE_FREE` parametrization
    or hook: the initial variance of its trainable original (which the probe's ``weight_std``
    reads) says nothing about it, so its initialization is not judged (a spectral-normed
    tanh net drawn from N(0, 0.02) got init_mismatch, 'the initial weight variance of layer 2
    is 0.00566x the glorot_uniform variance', while the weights it used had std 0.136)."""
    for plist in getattr(module, "parametrizations", {}).values():
        if any(type(p).__name__ in SCALE_FREE for p in plist):
            return True
    return any(type(h).__name__ in SCALE_FREE for h in module._forward_pre_hooks.values())


@torch.no_grad()
def bn_drift(model: nn.Module, x: torch.Tensor) -> list[dict[str, float]]:
    """Per batch norm with running statistics (forward order of ``model.modules()``): running
    (inference) statistics against the statistics of the probe batch ``x`` at its input (a
    forward with batch norms in training mode, all else in eval mode; buffers and modes
    restored); for depthlab's population batch norms (``bn_inference="population"`` through
    ``depthlab.bridge``) the population statistics their eval mode uses, as the NumPy doctor
    reads them. As the NumPy doctor: ``mean_shift`` = mean over channels of
    ``|mu_run - mu_batch| / sqrt(var_batch + eps)``, ``log_var_ratio`` = mean over channels of
    ``|log((var_run + eps) / (var_batch + eps))|``."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
           and m.track_running_stats and m.running_mean is not None]
    if not bns or len(x) < 2:
        return []
    seen: dict[nn.Module, tuple[torch.Tensor, torch.Tensor]] = {}

    def hook(m: nn.Module, inp: tuple, kwargs: dict, _out: Any) -> None:
        if m not in seen:
            t = (inp or tuple(kwargs.values()))[0].detach().double()  # bn(input=h) too
            ch = bn_channel_dim(m, t)  # FeatureBatchNorm on (N, T, C): the last axis
            dims = [d for d in range(t.dim()) if d != ch]
            seen[m] = (t.mean(dim=dims), t.var(dim=dims, unbiased=False))

    saved = {bn: [b.clone() for b in bn.buffers()] for bn in bns}
    modes = {m: m.training for m in model.modules()}
    handles = [bn.register_forward_hook(hook, with_kwargs=True) for bn in bns]
    try:
        for m in model.modules():
            m.train(m in saved)
        model(x.clone())  # a forward that changes its input in place: not our data
    finally:
        for h in handles:
            h.remove()
        for bn, bufs in saved.items():
            for b, v in zip(bn.buffers(), bufs):
                b.copy_(v)
        for m, was in modes.items():
            m.training = was
    population = {bn for bn in population_layers(model)
                  if not bool(torch.isnan(bn.population_mean).any())}
    out = []
    for bn in bns:
        if bn not in seen:
            continue
        mu_b, var_b = seen[bn]
        mu_r, var_r = bn.running_mean.double(), bn.running_var.double()
        if bn in population:  # its eval mode normalizes with these, not the running ones
            mu_r, var_r = bn.population_mean.double(), bn.population_var.double()
        sd = torch.sqrt(var_b + bn.eps)
        stats = torch.stack([((mu_r - mu_b).abs() / sd).mean(),
                             torch.log((var_r + bn.eps) / (var_b + bn.eps)).abs().mean()])
        ms, lv = (float(v) for v in stats.cpu())
        out.append({"mean_shift": ms, "log_var_ratio": lv})
    return out


def bn_losses(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: Callable
              ) -> dict[str, float]:
    """The probe batch's loss ``L(model(x), y)`` with the batch's own statistics
    (``loss_batch_stats``: batch norms in training mode, all else in eval mode, the running
    statistics restored) and in inference mode (``loss_inference``: eval mode, the running or
    population statistics), as the NumPy doctor's ``_bn_losses``, for a model with batch norms
    that keep running statistics (else ``{}``); the rule reads ``ln(L_inference / L_batch)``:
    drifts too small to flag in any one of many BN layers compound (a ResNet-18 layout, 20 BN
    layers each off by <= 0.26, gave 14.1 in inference mode where the batch statistics gave
    0.12). The buffers and modules' modes are restored; ``{}`` where the loss fails."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
           and m.track_running_stats and m.running_mean is not None]
    if not bns or len(x) < 2:
        return {}
    saved = {bn: [b.clone() for b in bn.buffers()] for bn in bns}
    modes = {m: m.training for m in model.modules()}
    try:
        with torch.no_grad():
            for m in model.modules():
                m.train(m in saved)
            batch = float(scalar_loss(loss_fn, model(x.clone()), y))
            for bn, bufs in saved.items():
                for b, v in zip(bn.buffers(), bufs):
                    b.copy_(v)
            model.eval()
            inference = float(scalar_loss(loss_fn, model(x.clone()), y))
    except Exception:  # noqa: BLE001 - a loss or forward that fails here: not measured
        return {}
    finally:
        for bn, bufs in saved.items():
            for b, v in zip(bn.buffers(), bufs):
                b.copy_(v)
        for m, was in modes.items():
            m.training = was
    return {"loss_batch_stats": batch, "loss_inference": inference}


def hidden_biases(layers: list[rx.TracedLayer]) -> str:
    """``"nonzero"`` when a hidden layer (one an activation follows) has a bias with a non-zero
    entry, else ``"zeros"``: read at initialization, it is ``config["biases"]``, which the
    rules read (:func:`depthlab.diagnosis.rules.biases_nonzero`: biases that hold a
    rectifier's units on its flat side are the cause of their vanishing gradients)."""
    return "nonzero" if any(
        isinstance(getattr(t.module, "bias", None), torch.Tensor)
        and bool(torch.any(t.module.bias.detach() != 0)) for t in layers
        if t.activation_name) else "zeros"


def dropout_chain(model: nn.Module) -> list[tuple[float, bool]]:
    """``(p, alpha)`` of each dropout module the signal of ``model`` passes in turn
    (:func:`depthlab.torch.prescriptions.chained_dropouts`: a plain ``nn.Sequential``'s),
    ``alpha`` for ``nn.AlphaDropout`` / ``nn.FeatureAlphaDropout`` (listed in either mode:
    the doctor trains in training mode, where they drop)."""
    return [(float(m.p), isinstance(m, rx.ALPHA_DROPOUTS)) for m in rx.chained_dropouts(model)]


def describe(model: nn.Module, layers: list[rx.TracedLayer]) -> dict[str, Any]:
    """The diagnosis ``config`` of a torch model: class name, most common activation (and its
    parameters), whether normalization follows its layers (``batchnorm``, as the rules read it
    for a NumPy network, true for any normalization) and which (``normalization``: the module
    classes, e.g. ``"LayerNorm"``), the weight layers' module names; ``bn_inference``
    ``"population"`` when every batch norm is one of depthlab's population batch norms
    (``to_torch`` of ``bn_inference="population"``: eval mode on whole-training-set
    statistics, which the NumPy rules then read so)."""
    act = rx.dominant_activation(layers)
    act_module = next((t.activation for t in layers if t.activation_name == act), None)
    norms = sorted({type(m).__name__ for m in model.modules() if isinstance(m, rx.NORM_MODULES)})
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
           and m.track_running_stats]
    population = bool(bns) and len(population_layers(model)) == len(bns)
    return {
        "model": type(model).__name__,
        "framework": "torch",
        "activation": act or NO_ACTIVATION,
        "activation_kwargs": rx.activation_kwargs(act_module),
        "init": "as built",
        "batchnorm": any(t.normalized for t in layers if t.activation_name),
        "normalization": ", ".join(norms),
        "n_weight_layers": len(layers),
        "modules": [t.name for t in layers],
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "biases": hidden_biases(layers),
        **({"bn_inference": "population"} if population else {}),
    }


# -- inputs ------------------------------------------------------------------------------------


def _materialized(model: nn.Module, x: torch.Tensor, seed: int) -> nn.Module:
    """``model`` with its lazy modules initialized by one eval-mode forward on ``x``, their
    weights drawn after ``torch.manual_seed(seed)`` (the same in every run); the caller's
    random streams and the modules' modes are left as found."""
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    modes = {m: m.training for m in model.modules()}
    try:
        with torch.random.fork_rng(devices=cuda), torch.no_grad():
            torch.manual_seed(seed)
            model.eval()
            model(x.clone())
    except Exception as e:  # noqa: BLE001 - the user's model failed on the data
        raise ValueError(f"the model's lazy modules cannot be initialized on inputs of shape "
                         f"{tuple(x.shape[1:])} per example: {error_text(e)}") from None
    finally:
        for m, was in modes.items():
            m.training = was
    return model


def error_text(e: BaseException) -> str:
    """``'RuntimeError: message'`` for a refusal's line, or the type alone when the message is
    empty (``raise RuntimeError()``, ``sys.exit()``: no colon before nothing)."""
    said = " ".join(str(e).split())
    return f"{type(e).__name__}: {said}" if said else type(e).__name__


def not_a_module(obj: Any, article: bool = False) -> str:
    """What a model factory returned in place of a module: the type name of ``obj`` (with its
    article, ``an int``, when ``article``); ``None`` and a module class say what the factory
    misses (its ``return`` line; an instance); a coroutine (an ``async def`` factory) is
    closed, so Python adds no 'never awaited' warning under the one-line error, and the name
    says how to write the factory."""
    if obj is None:
        return "None (it returns nothing: end it with `return model`)"
    if isinstance(obj, type) and issubclass(obj, nn.Module):
        return f"the class {obj.__name__} (not an instance: return {obj.__name__}(...))"
    if inspect.iscoroutine(obj):
        obj.close()
        name = "coroutine (an async def function: define it with def)"
    else:
        name = type(obj).__name__
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}" if article else name


def _factory(make_model_or_model: Any
             ) -> tuple[Callable[[int], nn.Module], list[torch.Tensor]]:
    """``(fresh, rows)``: ``fresh(seed)`` -> a new model: a deep copy of an instance, or
    ``make_model()`` called after ``torch.manual_seed(seed)`` and checked to return a module.
    Lazy modules are initialized on ``rows[0]`` once the caller has put example inputs there
    (before that such a model comes back uninitialized, to read its device and dtype); the
    object ``make_model()`` returned stays lazy."""
    rows: list[torch.Tensor] = []
    if isinstance(make_model_or_model, nn.Module):
        template = make_model_or_model
        if isinstance(template, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            raise TypeError("DataParallel/DistributedDataParallel models are not supported: "
                            "pass the wrapped module (model.module)")

        def copied(seed: int) -> nn.Module:
            try:
                model = copy.deepcopy(template)
            except Exception as e:  # noqa: BLE001 - e.g. a lock or an open file held by it
                raise TypeError(f"the model cannot be deep-copied ({error_text(e)}); "
                                "the doctor trains copies and leaves the given model as it "
                                "is: pass a function that builds the model instead") from None
            return _materialized(model, rows[0], seed) if rows and _has_lazy(model) else model

        return copied, rows
    if isinstance(make_model_or_model, type) and issubclass(make_model_or_model, nn.Module):
        pass  # a module class is a factory: calling it builds one
    elif not callable(make_model_or_model):
        from ..network import Network

        if isinstance(make_model_or_model, Network):
            raise TypeError("expected a torch.nn.Module or a function returning one, got a "
                            "depthlab Network: diagnose it with dl.doctor(net, data), or give "
                            "its torch copy, depthlab.bridge.to_torch(net)")
        raise TypeError(f"expected a torch.nn.Module or a function returning one, got "
                        f"{type(make_model_or_model).__name__}")
    make = make_model_or_model
    first: list[Any] = []  # the first model built, its state as built (host memory), kinds
    calls = [0]  # models built, lazy ones once materialized

    def fresh(seed: int) -> nn.Module:
        torch.manual_seed(seed)
        # NumPy's and Python's global generators seeded too (a factory drawing its weights
        # from np.random: the same model in every call), and left as the caller had them
        np_state, py_state = np.random.get_state(), random.getstate()
        try:
            np.random.seed(seed % 2**32)
            random.seed(seed)
            model = make()
        except Exception as e:  # noqa: BLE001 - the user's factory failed
            kind = TypeError if isinstance(e, TypeError) else ValueError
            raise kind(f"make_model() raised {error_text(e)}; expected a function "
                       "that returns a fresh torch.nn.Module") from e
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)
        if not isinstance(model, nn.Module):
            raise TypeError(f"make_model() must return a torch.nn.Module, got "
                            f"{not_a_module(model)}")
        made = model
        if _has_lazy(model):
            if not rows:
                return model  # doctor() builds it again once it has the data
            model = _materialized(copy.deepcopy(model), rows[0], seed)
        calls[0] += 1
        if not first:
            check_materialized(model)  # a 'meta' model: by name, before copying its values
            first.extend((made, {k: v.detach().to("cpu", copy=True)
                                 for k, v in model.state_dict().items()}, _kinds(model)))
            if model is not made:
                return model
            try:  # the object returned is trained as a copy: a global instance that the
                return copy.deepcopy(model)  # factory returns (the caller's) stays as built
            except Exception:  # noqa: BLE001 - not copyable: trained itself, restored below
                return model
        if made is first[0]:  # one shared instance (``return model`` of a global): every
            if model is made:  # run starts from it as built
                try:
                    model = copy.deepcopy(model)
                except Exception as e:  # noqa: BLE001 - e.g. a lock held by it
                    raise TypeError(f"make_model() returns the same model object on every "
                                    f"call and it cannot be deep-copied ({type(e).__name__}: "
                                    f"{e}); the doctor trains several copies: build a new "
                                    "model in each call") from None
            model.load_state_dict(first[1])
        else:  # a factory drawing from an unseeded generator: every run (baseline and
            if model is made:  # cures) starts from the same weights; trained as a copy too:
                try:  # a new model around the caller's modules (a global pretrained
                    model = copy.deepcopy(model)  # backbone) leaves those as built
                except Exception:  # noqa: BLE001 - not copyable: trained itself
                    pass
            _check_same_model(model, first[1], first[2], calls[0])
            _load_if_same(model, first[1])
        return model

    return fresh, rows


class DifferentModel(ValueError):
    """A factory built another architecture than on its first call: the doctor's runs
    (baseline and cures) would not start from the same model."""


def _kinds(model: nn.Module) -> dict[str, str]:
    """Each submodule's dotted name -> its class name."""
    return {name: type(m).__name__ for name, m in model.named_modules()}


def _check_same_model(model: nn.Module, state: dict[str, torch.Tensor],
                      kinds: dict[str, str], call: int) -> None:
    """Refuse (:class:`DifferentModel`) a factory's model whose modules or state
    (names, classes, shapes) differ from its first model's ``kinds`` and ``state``."""
    own, diff, now_kinds = model.state_dict(), "", _kinds(model)
    if now_kinds != kinds:
        name = next(n for n in [*now_kinds, *kinds] if now_kinds.get(n) != kinds.get(n))
        was, now = kinds.get(name, "no such module"), now_kinds.get(name, "no such module")
        diff = f"module {name or '(the model)'!r} is {now} ({was} in the first call)"
    elif own.keys() != state.keys():
        name = next(iter(set(own) ^ set(state)))
        diff = (f"state entry {name!r} is " + ("new" if name in own else "missing")
                + " (unlike the first call)")
    else:
        name = next((k for k, v in state.items() if own[k].shape != v.shape), "")
        if name:
            diff = (f"{name!r} has shape {tuple(own[name].shape)} "
                    f"({tuple(state[name].shape)} in the first call)")
    if diff:
        raise DifferentModel(f"make_model() built a different model on a later call (the "
                             f"doctor's call {call}): {diff}; the doctor's runs (the baseline "
                             "and each cure) must start from the same model: expected a "
                             "function that builds the same architecture on every call")


def _calibrating(fresh: Callable[[int], nn.Module], x: torch.Tensor
                 ) -> Callable[[int], nn.Module]:
    """``fresh`` whose models have their population batch-norm statistics
    (:func:`~depthlab.torch.train.calibrate_population`) set from ``x`` as built."""

    def calibrated(seed: int) -> nn.Module:
        model = fresh(seed)
        calibrate_population(model, x)
        return model

    return calibrated


def _scratch_copy(model: nn.Module, fresh: Callable[[int], nn.Module], seed: int
                  ) -> nn.Module:
    """A copy of ``model`` to change (a checking step): a deep copy, or for a factory's model
    that cannot be deep-copied (a lock, an open file) another build, ``fresh(seed)``, which
    starts from the same weights."""
    try:
        return copy.deepcopy(model)
    except Exception:  # noqa: BLE001 - e.g. 'cannot pickle _thread.lock object'
        return fresh(seed)


def _load_if_same(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load ``state`` into ``model`` when its state has the same keys and shapes."""
    own = model.state_dict()
    if own.keys() != state.keys() or any(own[k].shape != v.shape for k, v in state.items()):
        return
    try:
        model.load_state_dict(state)
    except (RuntimeError, ValueError, TypeError):
        return


def _short(v: Any, limit: int = 80) -> str:
    """``repr(v)`` on one line, at most ``limit`` characters (an optimizer's repr spans many
    lines)."""
    text = " ".join(repr(v).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _optimizer_name(opt: Any) -> str | None:
    """The :data:`OPTIMIZERS` name of ``opt``: a name as given, or that of a ``torch.optim``
    class of the table (``torch.optim.Adam`` -> ``"adam"``); a TypeError for another class
    (its name and the accepted ones) or an optimizer instance (the doctor builds a new
    optimizer for each fresh model); None for anything else."""
    if isinstance(opt, str):
        return opt
    if isinstance(opt, type) and issubclass(opt, torch.optim.Optimizer):
        name = next((k for k, cls in OPTIMIZERS.items() if cls is opt), None)
        if name is None:
            raise TypeError(f"optimizer class {opt.__module__}.{opt.__qualname__} is not "
                            f"supported; expected one of "
                            f"{', '.join('torch.optim.' + c.__name__ for c in OPTIMIZERS.values())}"
                            f" (or their names {sorted(OPTIMIZERS)})")
        return name
    if isinstance(opt, torch.optim.Optimizer):
        name = next((k for k, cls in OPTIMIZERS.items() if type(opt) is cls), None)
        hint = f"('{name}', {{'lr': {opt.defaults.get('lr')!r}}})" if name else \
            "('sgd', {'lr': 0.1})"
        raise TypeError(f"optimizer is a {type(opt).__name__} instance bound to one model's "
                        f"parameters; the doctor trains fresh models, each with a new "
                        f"optimizer: give its name or class and arguments, e.g. {hint}")
    return None


def _from_factory(make_opt: Callable) -> tuple[str, dict[str, Any]]:
    """``(name, kwargs)`` of an optimizer factory ``make_opt(params) -> optimizer`` (``lambda
    ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9)`` -> ``("sgd", {"lr": 0.05, "momentum":
    0.9})``): it is called once on a scratch parameter and its optimizer's class and
    parameter group read (arguments equal to the class's own defaults left out), so every fresh
    model gets a new optimizer of the same kind, and the lr/optimizer cures apply to it."""
    scratch = nn.Parameter(torch.zeros(2, 2))
    what = _short(make_opt, 60)
    try:
        opt = make_opt([scratch])
    except Exception as e:  # noqa: BLE001 - not a factory of parameters
        said = " ".join(str(e).split())[:200]
        raise TypeError(f"optimizer {what} was called as optimizer(params) and raised "
                        f"{type(e).__name__}: {said}; expected a name, (name, kwargs), a "
                        "torch.optim class, or a function params -> torch.optim optimizer") \
            from None
    if not isinstance(opt, torch.optim.Optimizer):
        raise TypeError(f"optimizer {what} returned a {type(opt).__name__} when called as "
                        "optimizer(params); expected a torch.optim optimizer")
    name = _optimizer_name(type(opt))  # a class outside OPTIMIZERS: refused by name
    signature = inspect.signature(type(opt)).parameters
    # its parameter group: what it trains with (SGD([{"params": ps, "lr": 0.01}], lr=0.1)
    # trains at 0.01, its defaults say 0.1)
    settings = [_group_kwargs(g, signature) for g in opt.param_groups] or \
        [_group_kwargs(opt.defaults, signature)]
    differ = sorted({k for g in settings for k in set(g) | set(settings[0])
                     if repr(g.get(k)) != repr(settings[0].get(k))})
    if differ:  # (its defaults were taken: weight decay only on the weights was none at all)
        said = "; ".join(f"{k}: " + ", ".join(repr(g.get(k, signature[k].default))
                                             for g in settings) for k in differ[:3])
        raise ValueError(f"optimizer {what} makes {len(settings)} parameter groups with "
                         f"different settings ({said}); the doctor trains every fresh model "
                         f"with one setting for all its parameters: give it as (name, kwargs), "
                         f"e.g. ({name!r}, {settings[0]})")
    return name or "", settings[0]


def _group_kwargs(group: dict[str, Any], signature: Any) -> dict[str, Any]:
    """The arguments of an optimizer's parameter group that the class takes, those equal to
    the class's own defaults left out (``lr`` always kept, as a float)."""
    kwargs: dict[str, Any] = {}
    for k, v in group.items():
        if k == "params" or k not in signature:
            continue
        if isinstance(v, torch.Tensor) and v.numel() == 1:
            v = v.item()  # lr=torch.tensor(0.01)
        if k == "lr":
            kwargs[k] = float(v)
            continue
        default = signature[k].default
        try:
            same = default is not inspect.Parameter.empty and bool(default == v)
        except Exception:  # noqa: BLE001 - a value without a plain truth value
            same = False
        if not same:
            kwargs[k] = v
    return kwargs


def _spec(optimizer: Any, steps: int, batch_size: int, seed: int,
          probe_every: int | None) -> TorchTrainSpec:
    if isinstance(optimizer, functools.partial) and not optimizer.args \
            and "lr" in optimizer.keywords:
        optimizer = (optimizer.func, dict(optimizer.keywords))  # partial(torch.optim.SGD, lr=.1)
        # (one without lr is a factory: partial(torch.optim.SGD, momentum=0.9)(params) builds
        # SGD at torch's lr 1e-3, as the lambda does; its class alone reads as its name, 0.1)
    elif callable(optimizer) and not isinstance(optimizer, (str, type, torch.optim.Optimizer)):
        optimizer = _from_factory(optimizer)  # lambda params: torch.optim.SGD(params, lr=.05)
    pair = isinstance(optimizer, (tuple, list)) and len(optimizer) == 2 \
        and isinstance(optimizer[1], dict)
    name = _optimizer_name(optimizer[0] if pair else optimizer)
    if name is None:
        raise TypeError(f"optimizer must be a name or (name, kwargs) such as ('sgd', "
                        f"{{'lr': 0.1}}), or a torch.optim class (alone or in place of the "
                        f"name), got {type(optimizer).__name__} {_short(optimizer)}")
    kwargs = dict(optimizer[1]) if pair else {}
    if name.lower() not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}{did_you_mean(name, OPTIMIZERS)}; expected "
                         f"one of {sorted(OPTIMIZERS)}")
    default_lr = 0.1 if name.lower() == "sgd" else 1e-3
    lr = kwargs.pop("lr", default_lr)
    if isinstance(lr, torch.Tensor) and lr.numel() == 1:
        lr = lr.item()  # lr=torch.tensor(1e-3), which torch.optim takes (read as a factory's)
    for label, v in (("steps", steps), ("batch_size", batch_size)):
        if isinstance(v, bool) or not isinstance(v, Integral) or v < 1:
            raise ValueError(f"{label} must be a positive integer, got {v!r}")
    steps, batch_size = int(steps), int(batch_size)
    every = probe_every if probe_every is not None else max(1, steps // 10)
    return TorchTrainSpec(optimizer=name, lr=lr, optimizer_kwargs=kwargs, steps=steps,
                     batch_size=batch_size, seed=seed, probe_every=every)


# -- one diagnosed run -------------------------------------------------------------------------

@dataclass
class _Run:
    ctx: TorchRunContext
    result: TrainResult
    findings: list[Finding]
    metrics_by_kind: dict[str, float]
    unnormalized: bool = False
    """Some trainable hidden layer followed by an activation has no normalization before it
    (a model whose stem alone is batch-normalized): the batch-norm cure, which normalizes
    those layers only (:func:`depthlab.torch.prescriptions.insert_batchnorm`), applies though
    the model has a norm (``config["batchnorm"]``)."""


def _run(model: nn.Module, data: TensorData, loss_fn: Callable, spec: TorchTrainSpec,
         settings: dict[str, Any], percentiles: bool = False, chance: float = math.nan
         ) -> _Run:
    """Train ``model`` with probes and apply the rules (``chance``: the best constant
    prediction's loss, :func:`constant_loss`, which the rules judge a loss against, as the
    NumPy doctor's do: a learning rate too low to move leaves the loss above it). A loss module
    with its own state (a call counter, a running average buffer) starts every run from the
    state the caller gave it (each prescription's run started from the state the previous run
    left: not the same training as the baseline's) and is left so (:func:`kept_state`)."""
    with kept_state(loss_fn):
        return _train_run(model, data, loss_fn, spec, settings, percentiles, chance)


def _train_run(model: nn.Module, data: TensorData, loss_fn: Callable, spec: TorchTrainSpec,
               settings: dict[str, Any], percentiles: bool, chance: float) -> _Run:
    px, py = (t[:PROBE_EXAMPLES] for t in data.probe_source)
    layers = rx.trace(model, px[:TRACE_EXAMPLES])
    names = {m: n for n, m in model.named_modules()}
    ends = frozenset(names.get(m, "?") for m in rx.residual_ends(model, px[:TRACE_EXAMPLES]))
    if not layers:
        raise ValueError(f"{type(model).__name__} has no weight layers (modules owning a "
                         "parameter of at least 2 dimensions) to diagnose")
    # update ratios of the layers the optimizer updates: a frozen layer's ratio is 0 at every
    # step, and four frozen backbone layers held the median over layers (lr_too_high's
    # metric) at 0 while the trained head's updates rewrote its weights
    weights = [(i, t.name, w) for i, t in enumerate(layers, 1)
               for w in rx.weight_tensors(t.module)[:1] if w.requires_grad]
    graph = parallel_layers(model, px[:TRACE_EXAMPLES], layers)
    before = through_time(model, px, py, loss_fn)
    biases = hidden_biases(layers)  # at initialization (describe reads the trained model)
    matrices = recurrent_matrices(layers)  # at initialization too
    result = train(model, data, loss_fn, spec, probe=_probe_fn(percentiles, layers, graph.pools),
                   probe_batch=(px, py), weight_layers=weights,
                   early_steps=EARLY_UPDATE_STEPS)
    index = _layer_index(result.probes, layers)
    ratios = result.probes["quantity"] == "update_ratio"
    if ratios.any():  # update ratios were numbered in trace order: renumber as the probe does
        by_name = result.probes.loc[ratios, "module"].map(index)
        result.probes.loc[ratios, "layer"] = by_name.fillna(-1).astype(int)
        result.probes = result.probes[result.probes["layer"] >= 0].reset_index(drop=True)
    rules_frame, result.probes = norm_gradient_frame(result.probes)
    if "quantity" in result.probes.columns \
            and (result.probes["quantity"] == POOLED_GRAD).any():  # the rules' reading only
        result.probes = result.probes[result.probes["quantity"] != POOLED_GRAD] \
            .reset_index(drop=True)
    early = _early_ratios(result.early_ratios, index)
    config = {**describe(model, layers), "biases": biases}
    drift = [] if result.history.diverged else bn_drift(model, px)
    losses = {} if result.history.diverged else bn_losses(model, px, py, loss_fn)
    tt = None if before is None or result.history.diverged else through_time(model, px, py,
                                                                               loss_fn)
    if tt is not None:
        tt["ratio_step0"] = before["ratio"]
        tt["index"] = index.get(tt["layer"])
    if before is not None:
        before["index"] = index.get(before["layer"])
        rnn = dict(model.named_modules()).get(before["layer"])  # frozen (a pretrained encoder):
        before["frozen"] = rnn is not None and not any(  # its growth trains nothing of it
            p.requires_grad for p in rnn.parameters())
    targets = target_scale(loss_fn, data.y if not isinstance(model, StandardizedTargets) else
                           (data.y - model.mean) / model.std)  # as the network learns them
    stats = {} if targets is None else {  # one column per target entry: (N,), (N, C) and
        "mean": np.ravel(targets["mean"]), "std": np.ravel(targets["std"])}  # (N, C, L) alike
    ctx = TorchRunContext(net=None, config=config, settings=settings, frame=rules_frame,
                          history=result.history, metrics=result.metrics, bn_drift=drift,
                          bn_losses=losses,
                          probe_examples=int(px.shape[0]),  # dead units, BN drift: not on 2
                          points_override=_points(result.probes, layers, matrices),
                          chance_loss=chance,
                          through_time=tt, through_time_init=before,
                          target_stats=stats, residual_ends=ends,
                          early_update_ratios=early, graph=graph,
                          dropouts=dropout_chain(model))
    findings, by_kind = evaluate(ctx)  # in the rules' priority order
    with np.errstate(all="ignore"):
        for kind, rule in TORCH_RULES.items():
            by_kind[kind], finding = rule(ctx)
            if finding is not None:
                findings.append(finding)
    last = rx.output_layer(layers)
    bare = any(t.ran and t.activation is not None and not t.normalized and t is not last
               and any(w.requires_grad for w in rx.weight_tensors(t.module)) for t in layers)
    return _Run(ctx, result, findings, by_kind, bare)


def _early_ratios(rows: pd.DataFrame | None, index: dict[str, int]) -> pd.Series | None:
    """:class:`TrainResult`'s ``early_ratios`` rows numbered as the probe table (by module
    name, ``index``), as a Series indexed by (step, layer) (None: none measured)."""
    if rows is None or not len(rows):
        return None
    layer = rows["module"].map(index)
    keep = layer.notna()
    if not keep.any():
        return None
    return pd.Series(rows.loc[keep, "value"].to_numpy(dtype=np.float64),
                     index=pd.MultiIndex.from_arrays(
                         [rows.loc[keep, "step"].astype(int).to_numpy(),
                          layer[keep].astype(int).to_numpy()], names=["step", "layer"]))


def _apply_cure(changes: dict[str, Any], model: nn.Module, spec: TorchTrainSpec,
                xs: torch.Tensor, d: TensorData, loss_fn: Callable
                ) -> tuple[nn.Module, TorchTrainSpec]:
    """:func:`depthlab.torch.prescriptions.apply`, then ``target_scale="standardize"``: the
    model wrapped in :class:`StandardizedTargets` with the training targets' statistics."""
    model, spec = rx.apply(changes, model, spec, xs)
    if changes.get("target_scale") is not None:
        t = target_scale(loss_fn, d.y)
        if changes["target_scale"] != "standardize" or t is None:
            raise rx.NotApplicable("standardizing the targets needs a mean squared or absolute "
                                   "error on floating targets")
        model = StandardizedTargets(model, t["mean"], t["std"], t["loss"])
    return model, spec


def _vanishing_through_time(ctx: RunContext) -> tuple[float, Finding | None]:
    """:func:`rule_vanishing_through_time`, silent where the gradient grows going back in time
    (its strongest step before its weakest, the first step's input gradient above the last
    one's): that is no vanishing gradient but an exploding one, whose weak step is the last,
    next to the loss (a tanh ``nn.RNN`` with orthogonal recurrent weights at gain 3 read
    'vanishes through time ... learns from a few steps near step 0 only', and its cure, chrono
    initialization, keeps the state longer: more growth). :func:`rule_exploding_through_time`
    judges it. A frozen recurrent layer (every parameter ``requires_grad=False``, a pretrained
    encoder under a trained head) is not judged either: no weight of it, nor any before it,
    trains on that gradient (a frozen GRU read 'training learns from a few steps near step 39
    only', its cures chrono initialization, which keeps frozen biases, and Adam, which does not
    move frozen weights)."""
    tt = getattr(ctx, "through_time", None)
    if (getattr(ctx, "through_time_init", None) or {}).get("frozen"):
        return math.nan, None
    metric, finding = rule_vanishing_through_time(ctx)
    if finding is not None and tt and tt["strongest"] < tt["weakest"] \
            and float(tt["first"]) > float(tt["last"]):
        return metric, None
    return metric, finding


TORCH_RULES: dict[str, Rule] = {r.kind: r for r in (
    Rule("exploding_through_time", "decades gained through time (log10 first/last step's "
         "input gradient)", EXPLODING_TIME_DECADES, rule_exploding_through_time),
    Rule("vanishing_through_time", "decades lost through time (-log10 weakest/strongest "
         "step's input gradient)", THROUGH_TIME_DECADES, _vanishing_through_time),
)}
"""The torch doctor's own rules (after :data:`depthlab.diagnosis.rules.RULES`): findings only
a torch model can show (recurrence through time: the gradient growing going back in time,
:mod:`depthlab.torch.exploding_time`, or vanishing)."""


def _settings(spec: TorchTrainSpec, loss_fn: Callable, device: torch.device) -> dict[str, Any]:
    return {**spec.as_dict(), "loss": type(loss_fn).__name__ if isinstance(loss_fn, nn.Module)
            else getattr(loss_fn, "__name__", "loss_fn"), "device": str(device)}


def _better(after: dict[str, Any], before: dict[str, Any], n_val: int | None = None,
            chance: float = math.nan, chance_acc: float = math.nan) -> bool:
    """Training improved beyond one run's noise, by the NumPy doctor's rule
    (:func:`depthlab.diagnosis.doctor._better`: the final train loss more than 1% lower or the
    validation accuracy more than one point higher, and more than one of the ``n_val``
    validation examples, neither clearly worse; where they disagree, a clear rise of the
    accuracy by more points than the loss rose in percent is an improvement and a fall of the
    accuracy never is; non-finite counts as worst; a train loss that does not end 1% below
    ``chance``, the best constant prediction's loss (:func:`constant_loss`), is no
    improvement, nor is an accuracy that does not end above ``chance_acc``, that prediction's
    (:func:`constant_accuracy`))."""
    from ..diagnosis.doctor import _better as better

    return better(after, before, n_val, chance, chance_acc)


# -- the doctor --------------------------------------------------------------------------------

@keyword_hints
def doctor(
    make_model_or_model: nn.Module | Callable[[], nn.Module],
    data: Any,
    *,
    loss_fn: Callable | str | None = None,
    optimizer: str | tuple[str, dict[str, Any]] = ("sgd", {"lr": 0.1}),
    steps: int = 200,
    batch_size: int = 64,
    seed: int = 0,
    verify: bool = True,
    max_cures: int = 3,
    probe_every: int | None = None,
    out: str | Path | None = None,
    name: str | None = None,
    progress: bool | str | None = None,
) -> Diagnosis:
    """Diagnose a torch model and (``verify=True``) verify cures; see the module doc.

    ``make_model_or_model``: a function returning a fresh ``nn.Module`` (called after
    ``torch.manual_seed(seed)``) or a module instance (deep-copied, never modified). Forward
    hooks and pre-hooks on the model or its modules are part of what it computes: the copies
    keep them, so they run in every training run (the baseline, each cure and the probes'
    forward passes: a hook that counts or records its calls sees those too), and the caller's
    model keeps them as registered.
    ``data``: ``(x, y)``, ``(x, y, x_val, y_val)``, a Dataset, or a ``torch.utils.data``
    Dataset/DataLoader of ``(x, y)`` pairs, or a pair ``(train, val)`` of them, a list of
    examples ``[(x_i, y_i), ...]`` or of mini-batches, or a dict ``{'x': x, 'y': y}`` (with
    ``'x_val'``, ``'y_val'``); arrays or tensors, moved to the model's device.
    ``loss_fn(model(x), y)`` must return a scalar tensor (default
    ``nn.CrossEntropyLoss()``), or a name of :data:`LOSSES` (``"mse"``, ...).
    ``optimizer``: ``(name, kwargs)`` with a name of
    :data:`depthlab.torch.train.OPTIMIZERS` (``lr`` in kwargs; other kwargs such as
    ``momentum`` go to the optimizer), or its ``torch.optim`` class in place of the name
    (``torch.optim.Adam``, ``(torch.optim.Adam, {"lr": 0.01})``,
    ``functools.partial(torch.optim.Adam, lr=0.01)``), or a factory ``lambda params:
    torch.optim.SGD(params, lr=0.05, momentum=0.9)`` (read as its class and arguments, called
    once on a scratch parameter; a ``partial`` without ``lr`` is such a factory: torch's lr
    of its class, as it builds it); not an optimizer instance, which is
    bound to one model's parameters. ``probe_every``: probe-table period (default
    ``steps // 10``). ``max_cures``: cures verified per finding. ``out``: a results folder;
    the diagnosis, its probe table and step losses are stored there (kind ``doctor``).
    ``progress``: the steps of each training run (the baseline, then each cure verified) on
    stderr, labelled ``doctor run k``: True/``"bar"`` a bar, ``"lines"`` a status line every
    few seconds and one at each run's end, None/False nothing (as :func:`depthlab.fit`).

    Returns the NumPy doctor's :class:`~depthlab.diagnosis.Diagnosis` (``config`` describes the
    torch model, ``settings`` the training run, ``probes`` the baseline's probe table).
    """
    if isinstance(max_cures, bool) or not isinstance(max_cures, Integral) or max_cures < 1:
        raise ValueError(f"max_cures must be a positive integer, got {max_cures!r}")
    from ..progress import mode
    from .train import runs_progress

    mode(progress)  # a bad setting: one ValueError before any work
    if isinstance(seed, bool) or not isinstance(seed, Integral) or not 0 <= seed < 2**64:
        raise ValueError(f"seed must be an integer from 0 to 2**64 - 1 (torch.manual_seed's "
                         f"range), got {seed!r}")
    max_cures, seed = int(max_cures), int(seed)  # NumPy integers too
    if name is not None and not isinstance(name, str):
        raise TypeError(f"name must be a string or None, got {type(name).__name__}")
    name = run_name(name)  # a blank or non-UTF-8 name: refused before the runs, not at the store
    if out is not None:
        _check_out(out)
    if not isinstance(verify, (bool, np.bool_)):
        raise TypeError(f"verify must be True or False, got {verify!r}")
    verify = bool(verify)
    loss_fn = nn.CrossEntropyLoss() if loss_fn is None else loss_fn
    if isinstance(loss_fn, str):
        loss_fn = loss_by_name(loss_fn)
    if isinstance(loss_fn, type):
        raise TypeError(f"loss_fn must be a loss, not the class {loss_fn.__name__}: pass an "
                        f"instance such as {loss_fn.__name__}()")
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable as loss_fn(output, target), got "
                        f"{type(loss_fn).__name__}")
    spec = _spec(optimizer, steps, batch_size, seed, probe_every)
    fresh, rows = _factory(make_model_or_model)
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    # the caller's random streams left as found; training needs autograd even when the call
    # sits inside torch.no_grad() or torch.inference_mode()
    with torch.random.fork_rng(devices=cuda), _host_generators(seed), kept_state(loss_fn), \
            torch.inference_mode(False), torch.enable_grad(), runs_progress(progress, "doctor"):
        t0 = time.perf_counter()
        model = check_model(fresh(seed))  # TorchScript, compiled, DataParallel: by name
        check_materialized(model)  # a 'meta' model: no values to train
        device, dtype = model_device_dtype(model)
        # a Dataset's random transforms (torch.randn in __getitem__, torchvision's random
        # crops) draw the same in every call, also for a model instance (not seeded by fresh)
        torch.manual_seed(seed)
        d = tensor_data(_shaped_dataset(data, model), device, dtype, seed,
                        float_targets=_float_target_loss(loss_fn))
        if _has_lazy(model):  # nn.LazyLinear, ...: initialized on the data's first rows
            rows.append(d.x[:TRACE_EXAMPLES])
            model = fresh(seed)
        loss_fn = _loss_on(loss_fn, device, dtype)  # class weights as the data: model's dtype
        if population_layers(model):  # depthlab's bn_inference="population" (to_torch): eval
            fresh = _calibrating(fresh, d.x)  # mode needs the training set's statistics, at
            calibrate_population(model, d.x)  # the start too (train() sets them at the end)
        _check_token_ids(model, d)  # first: else torch's 'index out of range in self'
        bad_weights = nonfinite_parameters(model)  # named in a divergence finding
        with kept_state(loss_fn):  # the checks leave a stateful loss module as given
            with _named_norm(model):  # InstanceNorm on one position: named, not torch's line
                _check_runs(model, d, loss_fn)
            _check_pairing_loss(model, d, loss_fn)
            _check_log_probabilities(model, d, loss_fn)
            _check_first_step(_scratch_copy(model, fresh, seed), spec, d, loss_fn)
            if not bad_weights:  # NaN weights: the divergence finding names them
                _check_finite_forward(model, d, min(spec.batch_size, len(d.x)))
            _check_finite_loss(model, d, loss_fn, min(spec.batch_size, len(d.x)))
        settings = {**_settings(spec, loss_fn, device),
                    **rows_per_step(spec.batch_size, len(d.x))}
        theory, theory_note = (theory_rows(model, d.probe_source[0][:PROBE_EXAMPLES].clone())
                               if out is not None else (None, ""))
        if verify and not isinstance(make_model_or_model, nn.Module):
            fresh(seed)  # a factory that builds another model each call: refused before training
        sample = _sample_output(model, d)  # the classes, for the chance loss and accuracy
        with kept_state(loss_fn):  # a loss with no formula (a plain function): fitted
            chance = constant_loss(loss_fn, d.y, sample)
            if math.isnan(chance):
                chance = fitted_constant_loss(loss_fn, d.y, sample, len(d.x[:2]))
        base = _run(model, d, loss_fn, spec, settings, percentiles=True, chance=chance)
        # the constant prediction's loss kept (findings.unlearned_text)
        diagnosis = Diagnosis(findings=base.findings, baseline=dict(base.result.metrics),
                              chance_loss=chance,
                              probes=base.result.probes, config=base.ctx.config, settings=settings,
                              bn_drift=base.ctx.bn_drift)
        xs = d.x[:LSUV_EXAMPLES]
        n_val = None if d.y_val is None else len(d.y_val)  # one example's flip is noise
        with kept_state(loss_fn):
            chance_acc = constant_accuracy(loss_fn, d.y, d.y_val, sample) if verify \
                else math.nan
        runs: dict[str, _Run] = {}
        for f in diagnosis.findings:
            skipped: list[str] = []
            passed_over: list[str] = []  # cures that come before the first applicable one
            cures = _cures(f, base, spec, fresh, seed, xs, d, loss_fn, skipped, passed_over)
            own = rx.translate(f.prescription, spec) if f.prescription else None
            key = json.dumps(own, sort_keys=True, default=str) + " " if own else None
            own_skipped = next((r for r in skipped if key and r.startswith(key)), None)
            why = f"; {skipped[0]}" if skipped else ""
            if cures:
                f.prescription, f.prescription_text = cures[0]
                if own_skipped:  # the rule's own cure did not apply: say why, not silently
                    f.prescription_text += f" (the rule's own cure {own_skipped})"
                elif passed_over and not own:  # a rule with advice but no transform of its
                    # own (vanishing_through_time: chrono init, which a plain nn.RNN cannot
                    # take): its first cures' reasons, not a silent switch to the next one
                    f.prescription_text += f" (the first cure for it, {passed_over[0]})"
            else:
                f.prescription, f.prescription_text = {}, (
                    f.prescription_text + f" (no module transform applies to this model{why})")
            if not verify:
                continue
            tried: list[tuple[Verification, str]] = []
            for changes, text in cures[:max_cures]:
                key = json.dumps(changes, sort_keys=True, default=str)
                if key not in runs:
                    runs[key] = _verify_run_or_error(changes, fresh, seed, spec, d, loss_fn,
                                                     settings, xs, chance)
                run = runs[key]
                tried.append((_failed_verification(f, changes, base, run, n_val, chance,
                                                   chance_acc) if isinstance(run, str) else
                              _verification(f, changes, base, run, n_val, chance, chance_acc),
                              text))
            tried.sort(key=lambda vt: (not vt[0].helped, tuple(-g for g in vt[0].gain)))
            diagnosis.verifications.extend(v for v, _ in tried)
            if tried and tried[0][0].helped:
                f.prescription, f.prescription_text = dict(tried[0][0].prescription), tried[0][1]
            elif tried:  # the prescription line alone read as a recommendation that works
                which = "the cure verified did not help" if len(tried) == 1 else \
                    f"none of the {len(tried)} cures verified helped"
                f.prescription_text += f" ({which} within {_count(spec.steps, 'step')})"  # why: in
                # each verified line (a higher val acc with a clearly worse train loss too)
        if verify and diagnosis.verifications:
            best = {}  # each finding ranked by its best cure, as the NumPy doctor ranks
            for v in diagnosis.verifications:
                best.setdefault(v.kind, v)
            diagnosis.findings = rank_findings(diagnosis.findings, list(best.values()))
            order = {f.kind: i for i, f in enumerate(diagnosis.findings)}
            diagnosis.verifications.sort(key=lambda v: order.get(v.kind, len(order)))
    name_nonfinite_weights(diagnosis.findings, bad_weights)
    if out is not None:
        _store(diagnosis, base, out, name, time.perf_counter() - t0, verify, theory,
               theory_note, data_key=data_fingerprint(d), max_cures=max_cures)
    return diagnosis


def nonfinite_parameters(model: nn.Module) -> list[tuple[str, int, int]]:
    """``(name, count, size)`` of each trainable parameter ``p`` of ``model`` holding values
    with ``not isfinite(p)`` (NaN or +-inf: an uninitialized ``torch.empty`` tensor, a NaN
    written into it), in the order of ``named_parameters``. Buffers are not read (an attention
    mask buffer holds -inf by design)."""
    bad: list[tuple[str, int, int]] = []
    for name, p in model.named_parameters():
        if p.requires_grad and (p.is_floating_point() or p.is_complex()):
            n = int((~torch.isfinite(p.detach())).sum())
            if n:
                bad.append((name, n, p.numel()))
    return bad


OVERFLOW_SCALE = 1e30
""":func:`_check_finite_forward`: a module output above this in float64 is read as the
weights' overflow (a float32 net whose activations pass 3.4e38 passes it well before), so the
non-finite output is the initialization's business, not the forward's own."""


def _check_finite_forward(model: nn.Module, d: TensorData, rows: int) -> None:
    """A ValueError before any training when the model's output on the first ``rows`` (finite)
    training examples is non-finite at the initial (finite) weights, in eval mode, and stays
    non-finite in a float64 copy whose every module output ``o`` keeps ``max |o|`` (finite
    values) below :data:`OVERFLOW_SCALE`: the forward computes NaN or infinity itself (a square
    root or log of a negative number, 0/0), which no initialization or learning rate cures. It
    names the innermost module whose output is non-finite on finite inputs. Outputs that are
    finite in float64, or large values on the way, are the weights' overflow: the divergence
    finding's business (its re-initializations)."""
    try:
        with torch.no_grad(), rx.untouched(model):
            model.eval()
            found = _floating_leaves(model(d.x[:rows].clone()))
            if all(bool(torch.isfinite(t).all()) for t in found):
                return
            wide = copy.deepcopy(model).double().eval()
            peak, culprit = _float64_forward(wide, d.x[:rows].clone())
    except Exception:  # noqa: BLE001 - a model that takes no float64: cannot tell
        return
    if peak is None or peak >= OVERFLOW_SCALE:
        return
    where = f"module {culprit!r}" if culprit else "the model's forward"
    raise ValueError(f"the model's output is non-finite on the first {rows} training examples "
                     f"before any update, on finite inputs and finite weights, also in float64 "
                     f"with no module output above {OVERFLOW_SCALE:.0e} in magnitude (largest "
                     f"{peak:.3g}): {where} computes NaN or infinity itself (a square root or "
                     f"log of a negative number, 0/0?), not weights that overflow; expected a "
                     f"forward that is finite on finite inputs; nothing to diagnose")


def _float64_forward(wide: nn.Module, x: torch.Tensor) -> tuple[float | None, str]:
    """Run the float64 copy ``wide`` on ``x`` (its floating values as float64) with a hook on
    every module: ``(peak, culprit)``, ``peak`` the largest finite ``|v|`` of every module's
    floating outputs (None when the model's output is finite in float64: the float32 run
    overflowed) and ``culprit`` the qualified name of the first module, in call order, whose
    output holds a non-finite value while its floating inputs are all finite ('' for none or
    the root: an operation written in the forward itself)."""
    names = {id(m): n for n, m in wide.named_modules()}
    peak = [0.0]
    culprit: list[str] = []
    leaves = _floating_leaves

    def hook(m: nn.Module, inp: tuple, out: Any) -> None:
        outs = leaves(out)
        for t in outs:
            ok = t[torch.isfinite(t)]
            if ok.numel():
                peak[0] = max(peak[0], float(ok.abs().max()))
        if not culprit and any(not bool(torch.isfinite(t).all()) for t in outs) \
                and all(bool(torch.isfinite(t).all()) for t in leaves(inp)):
            culprit.append(names.get(id(m), ""))

    handles = [m.register_forward_hook(hook) for m in wide.modules()]
    try:
        out = wide(_map_leaves(x, torch.Tensor,
                               lambda t: t.double() if t.is_floating_point() else t))
    finally:
        for h in handles:
            h.remove()
    if all(bool(torch.isfinite(t).all()) for t in leaves(out)):
        return None, ""
    return peak[0], culprit[0] if culprit else ""


def _floating_leaves(obj: Any) -> list[torch.Tensor]:
    """The floating-point tensors among the leaves of ``obj`` (a tensor, or tuples (named ones
    too), lists and dicts of them: ``_map_leaves``), in leaf order."""
    got: list[torch.Tensor] = []
    _map_leaves(obj, torch.Tensor, lambda t: got.append(t) or t)
    return [t for t in got if t.is_floating_point()]


def _check_finite_loss(model: nn.Module, d: TensorData, loss_fn: Callable, rows: int) -> None:
    """A ValueError before any training when ``loss_fn`` is non-finite on the model's finite
    outputs ``o`` of the first ``rows`` training examples (eval mode, the initial weights;
    the targets are checked finite) and stays so on ``o / max(1, max |o|)`` in float64: the
    loss function (a log or square root of negative numbers, a mean over no example), not the
    weights (outputs large enough to overflow the loss give a finite loss once scaled into
    [-1, 1]: the divergence finding's, a re-initialization's, business). Such a loss read as
    'divergence ... the initial weights overflow', and every cure re-trained to NaN."""
    try:
        with torch.no_grad(), rx.untouched(model):
            model.eval()
            out = model(d.x[:rows].clone())
            found = _floating_leaves(out)
            if not found or not all(bool(torch.isfinite(t).all()) for t in found):
                return  # non-finite outputs: the weights' (or the inputs') overflow
            value = scalar_loss(loss_fn, out, d.y[:rows])
            if bool(torch.isfinite(value)):
                return
            big = max([0.0] + [float(t.abs().max()) for t in found if t.numel()])
            top = max(1.0, big)
            y = d.y[:rows].double() if d.y.is_floating_point() else d.y[:rows]
            wide = scalar_loss(_loss_on(loss_fn, value.device, torch.float64), _map_leaves(
                out, torch.Tensor, lambda t: t.double() / top if t.is_floating_point() else t),
                y)
    except Exception:  # noqa: BLE001 - e.g. a loss that takes no float64: cannot tell
        return  # (training names any failure of the model or the loss itself)
    if bool(torch.isfinite(wide)):
        return
    raise ValueError(f"loss_fn returned {float(value)} on the first {rows} training examples "
                     f"before any update, on finite model outputs (largest |output| {big:.3g}) "
                     f"and finite targets, also in float64 with the outputs scaled into [-1, "
                     f"1]: the loss function is non-finite, not the training (a log or square "
                     f"root of a negative number, a mean over no example?); nothing to "
                     f"diagnose")


def _log_probability_loss(loss_fn: Callable) -> str | None:
    """The name of a KL-divergence loss (``nn.KLDivLoss``, ``F.kl_div``, also in a
    ``functools.partial``), which takes log-probabilities as its input, else None
    (``NLLLoss``'s input is checked by :func:`~depthlab.torch.checks._check_runs`)."""
    while isinstance(loss_fn, functools.partial):
        loss_fn = loss_fn.func
    if isinstance(loss_fn, nn.KLDivLoss):
        return type(loss_fn).__name__
    if loss_fn is nn.functional.kl_div:
        return "kl_div"
    return None


def _check_log_probabilities(model: nn.Module, d: TensorData, loss_fn: Callable) -> None:
    """A ValueError before any training when a KL-divergence loss
    (:func:`_log_probability_loss`: ``L = sum(p (log p - o))``, linear in the outputs ``o``
    and so unbounded below on raw scores) gets outputs that are no
    log-probabilities: some ``o > 1e-6`` on the first :data:`BROADCAST_ROWS` training rows
    (eval mode, initial weights), where ``log p <= 0``. Such a run drives the loss to minus
    infinity (KLDivLoss on raw outputs: -5e8 in 30 steps) while the doctor found nothing."""
    name = _log_probability_loss(loss_fn)
    if name is None:
        return
    try:
        with torch.no_grad(), rx.untouched(model):
            model.eval()
            out = model(d.x[:BROADCAST_ROWS].clone())
    except Exception:  # noqa: BLE001 - the other checks name a failing forward
        return
    if not isinstance(out, torch.Tensor) or not out.is_floating_point() or not out.numel():
        return
    top = float(out.detach().max())
    if not (math.isfinite(top) and top > 1e-6):
        return
    raise ValueError(f"{name} takes log-probabilities (every entry <= 0), but the model's "
                     f"outputs are not: they reach {top:.4g} on the first "
                     f"{min(BROADCAST_ROWS, len(d.x))} training rows, and the loss of raw scores "
                     f"falls without bound in training; end the model with "
                     f"nn.LogSoftmax(dim=1), or give these scores with probability targets to "
                     f"nn.CrossEntropyLoss ('cross_entropy')")


BROADCAST_ROWS = 8
"""Training rows :func:`_check_pairing_loss` evaluates the loss on."""


def _check_pairing_loss(model: nn.Module, d: TensorData, loss_fn: Callable) -> None:
    """A ValueError before any training when ``loss_fn`` (a plain function torch does not warn
    for, e.g. ``lambda o, y: ((o - y) ** 2).mean()``) silently broadcasts outputs ``o`` of
    shape ``(n, 1)`` against float targets ``y`` of shape ``(n,)`` (or any two shapes of one
    count per example) into an ``(n, n)`` grid, pairing every output with every target.

    On the first ``n`` (<= :data:`BROADCAST_ROWS`) rows, with ``o`` the model's outputs (eval
    mode, initial weights) plus a ramp ``linspace(-1, 1)`` (so that equal outputs still
    differ), it is refused when ``L(o, y)`` equals ``L(O, Y)`` (``O, Y =
    broadcast_tensors(o, y)``: the function is elementwise over the grid) within 1e-6
    relatively and differs from ``L(o, y.reshape(o.shape))`` (the matched pairs) by more than
    1e-4 relatively. A loss that pairs examples on purpose (a ranking loss ``s - s.T``) gives
    another value on the grid and is left alone; so is one that raises on either form."""
    if not d.y.is_floating_point() or len(d.x) < 2:
        return
    n = min(BROADCAST_ROWS, len(d.x))
    y = d.y[:n]
    try:
        with torch.no_grad(), rx.untouched(model), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.eval()
            out = model(d.x[:n].clone())
            if not isinstance(out, torch.Tensor) or not out.is_floating_point() or \
                    out.dim() < 1 or out.shape[0] != n or out.shape == y.shape or \
                    out[0].numel() != y[0].numel():
                return
            grid = torch.broadcast_shapes(out.shape, y.shape)
            if math.prod(grid) <= out.numel():
                return
            o = out + torch.linspace(-1.0, 1.0, out.numel(), dtype=out.dtype,
                                     device=out.device).reshape(out.shape)
            big_o, big_y = (t.contiguous() for t in torch.broadcast_tensors(o, y))
            paired = float(scalar_loss(loss_fn, o, y))
            on_grid = float(scalar_loss(loss_fn, big_o, big_y))
            matched = float(scalar_loss(loss_fn, o, y.reshape(o.shape)))
    except Exception:  # noqa: BLE001 - a loss that takes only one form: cannot tell
        return
    if not all(math.isfinite(v) for v in (paired, on_grid, matched)):
        return
    if abs(paired - on_grid) > 1e-6 * max(abs(paired), abs(on_grid), 1e-12) or \
            abs(paired - matched) <= 1e-4 * max(abs(paired), abs(matched), 1e-12):
        return
    shape, target = tuple(out.shape[1:]), tuple(y.shape[1:])
    fix = ("give y as a column, y.reshape(-1, 1)" if shape == (1,) and target == () else
           f"give y of the outputs' shape, y.reshape(-1, {', '.join(map(str, shape))})"
           if shape else "give y as y.reshape(-1)")
    raise ValueError(f"loss_fn broadcasts the model's outputs (shape {shape} per example) "
                     f"against the targets (shape {target} per example) into a "
                     f"{tuple(grid)} grid on the first {n} rows, pairing every output with "
                     f"every target (not the value of each output against its own target); "
                     f"expected the same shape: {fix}")


OVERFLOW = "without overflow"
"""The words of torch's error for a number that its target type cannot hold ("value cannot be
converted to type float without overflow"): an optimizer's ``lr`` (or ``lr / (1 - beta1)``,
Adam's first step) cast to the parameters' floating type."""


@contextlib.contextmanager
def _named_norm(model: nn.Module, batch_size: int | None = None) -> Iterator[None]:
    """A check's ValueError caused by torch's refusal of a norm given one value per channel
    (a training-mode BatchNorm on a one-row batch: 'Expected more than 1 value per channel
    when training'; an InstanceNorm without running statistics given one position per channel:
    'Expected more than 1 spatial element when training') re-raised as the probe's one line
    naming the norm module and what it needs (:func:`depthlab.torch.probe._single_value_norm`);
    any other error as raised. With ``batch_size`` (the training step's check) the remedy
    named is a ``batch_size`` of 2 or more: the doctor trains the model in training mode."""
    try:
        yield
    except ValueError as e:
        cause = e.__cause__ or e.__context__
        single = _single_value_norm(model, cause) if cause is not None else None
        if single is None:
            raise
        if batch_size is not None and "model.eval() first" in single:
            single = (single[:single.rfind("; expected")] + f"; expected batch_size 2 or "
                      f"more (got {batch_size}): the doctor trains the model in training mode")
        if batch_size is not None and str(e).startswith("a training step "):
            # the step's own words first (optimizer, rows, batch_size), then the norm named
            single = f"{str(e).split('): ', 1)[0]}): {single}"
        raise ValueError(single) from None


def _check_first_step(model: nn.Module, spec: TorchTrainSpec, d: TensorData,
                      loss_fn: Callable) -> None:
    """:func:`_check_step`, its failure on optimizer settings the parameters' floating type
    cannot hold (:data:`OVERFLOW`: sgd lr 1e39 on float32, whose largest value is
    ``torch.finfo(float32).max`` = 3.4e38; Adam's ``lr / (1 - beta1)`` above it; sgd lr 1e5 on
    float16, largest 65504) refused in one ValueError naming the optimizer, its lr and other
    arguments, and that largest value, not as a bare 'value cannot be converted'."""
    try:
        with _named_norm(model, spec.batch_size):  # BN on one-row batches: named
            _check_step(model, spec, d, loss_fn)
    except ValueError as e:
        if OVERFLOW not in str(e):
            raise
        dtype = model_device_dtype(model)[1]
        kind = str(dtype).removeprefix("torch.")
        most = f" (largest {kind} value {torch.finfo(dtype).max:.3g})" \
            if dtype.is_floating_point else ""
        extra = "".join(f", {k}={v!r}" for k, v in spec.optimizer_kwargs.items())
        raise ValueError(f"optimizer {spec.optimizer!r} with lr {spec.lr:g}{extra} overflows "
                         f"the model's {kind} parameters{most} at the first training step; "
                         f"expected settings that {kind} holds: a far smaller lr") from None


@contextlib.contextmanager
def _host_generators(seed: int) -> Iterator[None]:
    """NumPy's and Python's global generators seeded with ``seed`` inside the block (a
    Dataset's random transforms, noise a model draws from ``np.random``: the same draws in
    every call) and left as the caller had them after it."""
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        np.random.seed(seed % 2**32)
        random.seed(seed)
        yield
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)


def _without_reinit_for_bn_growth(f: Finding, cures: list[tuple[dict[str, Any], str]]
                                  ) -> list[tuple[dict[str, Any], str]]:
    """``cures`` less the re-initializations (``init`` changes) when ``f`` is an exploding
    finding whose growth is batch norm's own at initialization
    (:func:`depthlab.diagnosis.rules.batchnorm_own_growth`: its evidence holds
    ``bn_growth_predicted``): batch norm divides the weights' scale out, so no initialization
    changes that growth (a 16-layer ReLU + BN MLP: 1.22 per layer, Yang et al. 2019's 1.2112;
    'Re-initialize (He / Glorot / LeCun)' did not help). The others' texts say so and name
    residual connections, the cure no module transform here makes."""
    if f.kind != "exploding_gradients" or "bn_growth_predicted" not in f.evidence:
        return cures
    why = ("No re-initialization changes batch norm's own growth; residual connections bound "
           "it (Yang et al. 2019), a change to the model's code. ")
    return [(c, why + text) for c, text in cures if "init" not in c]


def _zero_bias_cure(f: Finding, ctx: RunContext) -> list[tuple[dict[str, Any], str]]:
    """``[({"bias_init": "zeros"}, why)]`` for a dead-unit finding whose most-dead layer
    started off: more than ``SHIFTED_FRAC`` of its pre-activations at or below 0 at step 0,
    their mean below 0, with non-zero biases (:func:`~depthlab.diagnosis.rules._shifted_off`):
    the biases hold its units on the rectifier's flat side, where no input reaches them and no
    learning rate, warm-up or optimizer changes that (He weights, biases -3, ``F.relu``
    applied by the forward, where the leaky swap does not apply: the three cures verified
    instead 'did not help'); ``[]`` otherwise (units that died in training, or off by the
    examples' correlation in a deep net)."""
    worst = f.evidence.get("worst_layer")
    if not isinstance(worst, (int, np.integer)):
        return []
    shifted = _shifted_off(ctx, [int(worst)])
    if shifted is None:
        return []
    return [({"bias_init": "zeros"},
             f"The units of layer {worst} were off from the start: "
             f"{100 * shifted['inactive']:.0f}% of its pre-activations at or below 0 at "
             f"initialization, their mean {shifted['pre_mean']:.3g} against a std of "
             f"{shifted['pre_std']:.3g}: the biases hold them on the rectifier's flat side, "
             "where no gradient reaches them. Initialize the biases at zero so that the units "
             "start active.")]


STEP_SIZE_KINDS = ("divergence", "lr_too_high")
"""Findings of steps too large that targets of a large scale cause (:func:`_standardize_first`)."""


def _standardize_first(findings: list[Finding]) -> list[tuple[dict[str, Any], str]]:
    """The unscaled_targets finding's cure (standardized targets), with why, for a divergence
    or a too-high learning rate of the same run, else ``[]``: a mean squared error's gradient
    is as large as the targets (``dL/do = 2 (o - y) / n``), so targets of scale 1000 make
    steps ~1000x those of standardized ones at any learning rate (MSE on such targets at SGD
    lr 0.1 diverged at step 4; lr/10 and warm-up diverged too, the standardization trained
    it; the run is the unscaled_targets finding's own, trained once)."""
    if not any(g.kind == "unscaled_targets" for g in findings):
        return []
    return [({"target_scale": "standardize"},
             "The targets are not standardized (see unscaled_targets): a mean squared error's "
             "gradient grows with their scale, and so does every step. Standardize them (train "
             "on (y - mean) / std, predict mean + std * output).")]


def _through_time_first(findings: list[Finding]) -> list[tuple[dict[str, Any], str]]:
    """The orthogonal recurrent matrices (:func:`~depthlab.torch.prescriptions.
    orthogonal_recurrent`), with why, for a divergence of a run whose exploding_through_time
    finding (:func:`rule_exploding_through_time`) read the growth at initialization; else
    ``[]``: the recurrent matrices multiply the gradient at every step back in time, so the
    first updates are that many times too large at any learning rate (an ``nn.RNN(relu)`` at
    orthogonal gain 2 diverged at SGD lr 0.1; lr/10 and warm-up diverged too, clipping ended at
    a constant prediction's loss, the gain-1 matrices trained it)."""
    ev = next((g.evidence for g in findings if g.kind == "exploding_through_time"), {})
    grown, needed = ev.get("growth_init"), ev.get("threshold", EXPLODING_TIME_DECADES)
    if not (isinstance(grown, float) and grown >= 10.0 ** needed):
        return []
    return [({"recurrent_init": "orthogonal"},
             f"The gradient explodes through time at initialization ({grown:.3g}x from the "
             "last time step to the first, see exploding_through_time): the first updates "
             "are that large at any learning rate. " + rx.ORTHOGONAL_RECURRENT)]


def _cures(f: Finding, base: _Run, spec: TorchTrainSpec, fresh: Callable[[int], nn.Module],
           seed: int, xs: torch.Tensor, d: TensorData, loss_fn: Callable,
           skipped: list[str] | None = None, passed_over: list[str] | None = None
           ) -> list[tuple[dict[str, Any], str]]:
    """Applicable cures for finding ``f``: the rule's prescription translated, then the torch
    alternatives, duplicates, transforms that change nothing in this model and training
    changes whose step fails on it (:func:`_check_step`, e.g. Adam for sparse gradients) left
    out, each of those with its reason in ``skipped`` (``'{changes} does not apply: why'``),
    and in ``passed_over`` too when it came before the first applicable cure. A
    vanishing-gradient finding whose gradients vanished in training
    (:func:`~depthlab.torch.prescriptions.vanished_in_training`) tries a 10x smaller learning
    rate first, then the rule's own cure, then warm-up, as a divergence on the initial weights
    tries the re-initializations first. A vanishing-gradient finding whose rule cure is a
    normalization tries first the alternative that adds to it (a sigmoid network's batch norm
    with the tanh swap and Glorot's init, :func:`~depthlab.torch.prescriptions.alternatives`),
    then the norm alone."""
    config = base.ctx.config
    candidates: list[tuple[dict[str, Any], str]] = []
    first = rx.translate(f.prescription, spec) if f.prescription else None
    act = config.get("activation")
    # the loss of update 1 is computed on the initial weights: non-finite there, no training
    # setting can cure it, so the re-initializations are tried first
    at_init = f.kind == "divergence" and f.evidence.get("step") == 1
    # a later divergence of a network whose gradients explode at initialization: the initial
    # weights' doing too, so the re-initializations first as well
    exploded = None if f.kind != "divergence" or at_init else next(
        (r for g in base.findings if g.kind == "exploding_gradients"
         and (r := rx.exploded_at_init(g.evidence)) is not None), None)
    # gradients that vanished only in training (trainable at step 0): the step size first
    in_training = (rx.vanished_in_training(f.evidence) if f.kind == "vanishing_gradients"
                   else None)
    more = rx.alternatives(f.kind, None if act == NO_ACTIVATION else act, spec,
                           bool(config.get("batchnorm")) and not base.unnormalized,
                           at_init=at_init,
                           in_training=in_training, exploded=exploded)
    more = _without_reinit_for_bn_growth(f, more)
    if f.kind == "dead_relu":
        more = _zero_bias_cure(f, base.ctx) + more
    # (units alive at initialization that large updates killed: the shared rule's own cure is
    # then the 10x smaller learning rate, :func:`depthlab.diagnosis.prescriptions.for_dead_relu`
    # with ``large_updates``; a second judgement of it here, which disagreed with the rule's on
    # the same run, is gone)
    if first:
        # the shared rule's text speaks of NumPy's settings (unscaled_targets:
        # "standardize_targets=True in dl.doctor, [data] standardize_targets = true"): a torch
        # alternative with the same changes says it for a torch model
        # (a dead-unit rule's text says why from the run: "Units died during training ...",
        # kept over the generic "A 10x smaller learning rate keeps each update small.")
        same = {} if f.kind == "dead_relu" else {
            json.dumps(c, sort_keys=True, default=str): t for c, t in more}
        candidates.append((first, same.get(json.dumps(first, sort_keys=True, default=str),
                                           f.prescription_text)))
    # the rule's batch norm for vanishing gradients: an alternative that adds to it (a sigmoid
    # network's tanh swap: batch norm alone halved a 20-layer sigmoid CNN's loss for 1 seed of
    # 5, with tanh for all 5) is verified first, the norm alone after it
    if f.kind == "vanishing_gradients" and first and "normalization" in first:
        extends = [c for c in more if len(c[0]) > len(first)
                   and all(c[0].get(k) == v for k, v in first.items())]
        candidates = extends[:1] + candidates
    # (a smaller learning rate, then the rule's own cure, then warm-up and the rest: the
    # first two verified even at max_cures=2)
    candidates = (more[:2] + candidates + more[2:] if at_init or exploded is not None else
                  more[:1] + candidates + more[1:] if in_training else
                  candidates + more)
    if f.kind == "divergence":  # a recurrence whose gradient explodes through time
        candidates = _through_time_first(base.findings) + candidates
    if f.kind in STEP_SIZE_KINDS and not at_init:
        candidates = _standardize_first(base.findings) + candidates
    out: list[tuple[dict[str, Any], str]] = []
    seen: set[str] = set()
    for changes, text in candidates:
        key = json.dumps(changes, sort_keys=True, default=str)
        if key in seen:
            continue
        seen.add(key)
        if changes.get("bn_population") and config.get("bn_inference") == "population":
            if skipped is not None:  # recomputing running statistics its eval mode ignores
                skipped.append(f"{key} does not apply: the batch norms already use "
                               "population statistics in eval mode")
            continue
        new = spec.with_changes(**{k: v for k, v in changes.items() if k in rx.TRAINING_KEYS})
        model_changed = bool(set(changes) & rx.MODEL_KEYS)
        if model_changed or (new.optimizer, new.optimizer_kwargs, new.clip_grad_norm,
                             new.batch_size) != (spec.optimizer, spec.optimizer_kwargs,
                                                 spec.clip_grad_norm, spec.batch_size):
            try:  # the changed model must also take a training step (e.g. inserted batch
                model, new = _apply_cure(changes, fresh(seed), spec, xs, d,  # norms: not
                                         loss_fn)  # on 1-row
                with kept_state(loss_fn):
                    _check_step(model, new, d, loss_fn)  # mini-batches)
            except DifferentModel:
                raise
            except Exception as e:  # noqa: BLE001 - NotApplicable, a change this model cannot
                # take (an operation its dtype lacks), or the user's forward refusing the
                # changed model (an assert on its own modules: an AssertionError out of the
                # transform's traced forward ended the whole diagnosis)
                said = " ".join(str(e).split()) or type(e).__name__
                if not isinstance(e, (ValueError, RuntimeError, NotImplementedError)):
                    said = f"{type(e).__name__}: {said}"
                reason = (f"{json.dumps(changes, sort_keys=True, default=str)} does "
                          f"not apply: {said[:300]}")
                if skipped is not None:
                    skipped.append(reason)
                if passed_over is not None and not out:
                    passed_over.append(reason)
                continue
        out.append((changes, text))
    return out


def _verify_run(changes: dict[str, Any], fresh: Callable[[int], nn.Module], seed: int,
                spec: TorchTrainSpec, d: TensorData, loss_fn: Callable, settings: dict[str, Any],
                xs: torch.Tensor, chance: float = math.nan) -> _Run:
    model = fresh(seed)
    torch.manual_seed(seed)  # re-initializations draw from the same stream every time
    model, new_spec = _apply_cure(changes, model, spec, xs, d, loss_fn)
    return _run(model, d, loss_fn, new_spec, {**settings, **new_spec.as_dict()}, chance=chance)


def _verify_run_or_error(changes: dict[str, Any], fresh: Callable[[int], nn.Module], seed: int,
                         spec: TorchTrainSpec, d: TensorData, loss_fn: Callable,
                         settings: dict[str, Any], xs: torch.Tensor,
                         chance: float = math.nan) -> _Run | str:
    """:func:`_verify_run`, or the error its re-training raised in one line (``'ValueError: the
    model or loss_fn failed in the probe at step 8 ...'``): a cured model that fails later
    than the one step :func:`_cures` checks (its forward raising on the swapped activation,
    running out of memory) is that cure's verification, 'did not help', not the end of the
    whole diagnosis. A factory that builds another model (:class:`DifferentModel`) and
    interrupts still end it."""
    try:
        return _verify_run(changes, fresh, seed, spec, d, loss_fn, settings, xs, chance)
    except DifferentModel:
        raise
    except Exception as e:  # noqa: BLE001 - the user's model failed under the cure
        said = " ".join(str(e).split()) or "(no message)"
        if len(said) > VERIFY_ERROR_CHARS:
            said = said[:VERIFY_ERROR_CHARS - 3] + "..."
        return f"{type(e).__name__}: {said}"


VERIFY_ERROR_CHARS = 300
"""Characters of a failed re-training's error message kept in its verification."""


def _failed_verification(f: Finding, changes: dict[str, Any], base: _Run, error: str,
                         n_val: int | None = None, chance: float = math.nan,
                         chance_acc: float = math.nan) -> Verification:
    """The verification of a cure whose re-training raised ``error``: nothing measured after
    (``after`` empty, the metric NaN), not resolved, never helped."""
    rule = RULES.get(f.kind) or TORCH_RULES.get(f.kind)
    before = base.metrics_by_kind.get(f.kind, math.nan)
    return Verification(
        kind=f.kind, prescription=dict(changes), before=dict(base.result.metrics), after={},
        metric=str(getattr(rule, "metric", "metric")), metric_before=before,
        metric_after=math.nan, resolved=False, helped=False, chance_loss=chance,
        chance_acc=chance_acc, n_val=n_val, error=error)


def _verification(f: Finding, changes: dict[str, Any], base: _Run, run: _Run,
                  n_val: int | None = None, chance: float = math.nan,
                  chance_acc: float = math.nan) -> Verification:
    rule = RULES.get(f.kind) or TORCH_RULES.get(f.kind)
    metric, before_metric, after_metric = judged_metric(  # a data-driven init (LSUV): by its
        f.kind, changes, base, run, str(getattr(rule, "metric", "metric")))  # step-0 signal
    after_kinds = [g.kind for g in run.findings]
    resolved = resolved_by(f.kind, changes, after_kinds, metric, after_metric)
    improved = _improved(before_metric, after_metric, resolved)
    return Verification(
        kind=f.kind, prescription=dict(changes), before=dict(base.result.metrics),
        after=dict(run.result.metrics), metric=metric,
        metric_before=before_metric, metric_after=after_metric, resolved=resolved,
        helped=bool(improved and _better(run.result.metrics, base.result.metrics, n_val,
                                          chance, chance_acc)),
        new_findings=[k for k in after_kinds if k not in {g.kind for g in base.findings}],
        chance_loss=chance, chance_acc=chance_acc,  # the summary's reasons for a 'did not help'
        n_val=n_val,
    )


DATA_HASH_CHUNK = 1 << 26
"""Bytes of a data tensor hashed at a time by :func:`data_fingerprint` (a GPU tensor is
copied to the host in pieces of this size)."""


def data_fingerprint(data: TensorData) -> str:
    """SHA-256 (hex) of the training and validation tensors as the doctor trains on them
    (after shaping and casting: channels-last images moved to channels-first hash as the
    channels-first file does): each part's name, dtype, shape and bytes. Part of a stored
    diagnosis's id: the step-0 probe table reads the first validation rows only, so the same
    model on another training set (or another validation tail) took the first diagnosis's id
    and replaced it."""
    h = hashlib.sha256()
    for label in ("x", "y", "x_val", "y_val"):
        t = getattr(data, label)
        h.update(f"{label}:{None if t is None else (str(t.dtype), tuple(t.shape))};".encode())
        if t is None or t.numel() == 0:
            continue
        flat = t.detach().contiguous().reshape(-1).view(torch.uint8)
        for i in range(0, flat.numel(), DATA_HASH_CHUNK):
            h.update(flat[i:i + DATA_HASH_CHUNK].cpu().numpy())
    return h.hexdigest()


def _store(diagnosis: Diagnosis, base: _Run, out: str | Path, name: str | None,
           seconds: float, verify: bool, theory: list[dict[str, Any]] | None = None,
           theory_note: str = "", data_key: str = "", max_cures: int | None = None) -> str:
    """Write the diagnosis to the results store in ``out`` (one transaction); returns the id.
    ``theory``: :func:`theory_rows` of the untrained model, kept in ``config.model.theory``
    (the report draws it beside the measured gradients and activations); without it,
    ``theory_note`` (why not) is kept in ``config.model.theory_note``, the report's caption.
    ``data_key``: :func:`data_fingerprint` of the data; ``max_cures``: the cures verified per
    finding (a verified diagnosis with more of them is another result)."""
    from ..experiments.store import RunRecord, Store

    payload = diagnosis.to_dict()
    # the config names the model's class and layers, not its weights or the data: the step-0
    # probe table tells two models apart, the data's fingerprint two data sets (the probe
    # table reads the first validation rows only), so one diagnosis never replaces
    # another's; the same call again replaces its own
    first = diagnosis.probes[diagnosis.probes["step"] == 0]
    start = hashlib.sha256(pd.util.hash_pandas_object(first, index=False).values.tobytes())
    body = json.dumps({"config": payload["config"], "settings": payload["settings"],
                       "verify": verify, "start": start.hexdigest(), "data": data_key,
                       "max_cures": max_cures if verify else None}, sort_keys=True,
                      default=str)
    rid = "torch-" + hashlib.sha256(body.encode()).hexdigest()[:12]
    b = diagnosis.baseline
    metrics = {k: b[k] for k in ("train_loss", "train_acc", "val_loss", "val_acc", "steps")
               if k in b}
    metrics["seconds"] = seconds
    hist = base.result.history
    c, st, table = diagnosis.config, diagnosis.settings, diagnosis.probes
    named = table[(table["layer"] >= 1) & (table["quantity"] == "weight_std")]
    layers = dict(zip(named["layer"].astype(int).astype(str), named["module"].astype(str)))
    config = {  # the layout of a run config (and of a Watch run), so reports read it
        "source": "depthlab.torch.doctor",
        "model": {"class": c.get("model"), "layers": layers, "activation": c.get("activation"),
                  "batchnorm": c.get("batchnorm"), "parameters": c.get("parameters"),
                  **({"theory": theory} if theory else
                     {"theory_note": theory_note} if theory_note else {})},
        "train": {"optimizer": st["optimizer"], "lr": st["lr"],
                  "optimizer_kwargs": st["optimizer_kwargs"], "batch_size": st["batch_size"],
                  "max_steps": st["steps"], "seed": st["seed"], "loss": st["loss"],
                  "device": st["device"]},
        "probes": {"every": st["probe_every"]},
    }
    rec = RunRecord(id=rid, name=name or f"doctor {c.get('model')} (torch)",
                    kind="doctor", status="finished", config=config,
                    metrics=metrics, seconds=seconds, findings=payload,
                    probes=diagnosis.probes, steps=hist.steps_frame())
    with Store(out) as store:
        store.add_run(rec)
    diagnosis.settings["run_id"] = rid
    return rid
