"""One entry for every architecture ``dl.mlp`` builds: :func:`predict_gradients`.

It reads a model recipe (a :class:`~depthlab.spec.ModelSpec`, a run config or its ``model``
table, or a :class:`~depthlab.network.Network`'s ``config``) and dispatches:

* plain MLP            :func:`~depthlab.theory.variance.propagate`:
                       ``Var(g_l) = n_{l+1} v_{l+1} E[f'(s_l)^2] Var(g_{l+1})``;
* batch-normalized     :func:`~depthlab.theory.batchnorm.propagate_batchnorm`:
                       ``Var(g_l) = (n_{l+1}/n_l) gamma^2 E[f'(s)^2] / Var f(s) Var(g_{l+1})``,
                       ``s ~ N(beta, gamma^2)`` (Yang et al. 2019; relu ``pi / (pi - 1)``);
* residual (+/- BN)    :func:`~depthlab.theory.residual.propagate_residual`:
                       ``Var(dL/dx_b) = Var(dL/dx_{b+1}) + Var(branch term)``; with BN and an
                       affine activation no number (as for a plain BN chain: the batch is
                       never whitened, rank-8 inputs gave the first block 2.2x the formula).

``g_l = dL/ds_l`` at each probed nonlinearity (the probes' ``grad_pre_std``), relative to the
last one. Dropout is ignored (the probes measure with dropout off), so is the output layer
(it only sets the common scale).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..equality import value_eq
from .batchnorm import bn_gradient_factor, propagate_batchnorm
from .gaussian import NOT_ELEMENTWISE
from .residual import propagate_residual
from .variance import input_mean_square, propagate


@dataclass(frozen=True)
class GradientPrediction:
    """What :func:`predict_gradients` returns.

    ``frame``: one row per probed hidden nonlinearity (``layer`` 1..L as the probes number
    them) with at least ``pre_var``, ``act_var``, ``deriv_sq`` and ``grad_pre_var`` (Var(dL/ds)
    relative to the last row); ``relative_std`` = ``sqrt(grad_pre_var)`` as a list (None where
    not predicted); ``architecture`` in {plain, batchnorm, residual, residual+batchnorm};
    ``covered``: False when the argument does not hold for this network (then ``relative_std``
    holds None below the top and ``note`` says why); ``layer_growth``: for batch-normalized
    plain nets the per-layer factor of the gradient std (NaN otherwise); ``formula``: the
    recursion used, in words.
    """

    __eq__ = value_eq()  # arrays/tables compared by value (the generated one raised)

    architecture: str
    frame: pd.DataFrame = field(repr=False)
    covered: bool
    note: str
    formula: str
    layer_growth: float = math.nan

    @property
    def relative_std(self) -> list[float | None]:
        out: list[float | None] = []
        logs = (self.frame["grad_pre_log_var"] if "grad_pre_log_var" in self.frame.columns
                else [math.nan] * len(self.frame))
        for v, lv in zip(self.frame["grad_pre_var"], logs):
            v, lv = float(v), float(lv)
            if v == 0.0 and math.isfinite(lv):  # underflowed: sqrt(e^lv) = e^(lv / 2)
                out.append(math.exp(0.5 * lv))
            else:
                out.append(math.sqrt(v) if math.isfinite(v) and v >= 0 else None)
        return out


_FORMULAS = {
    "plain": "Var(g_l) = n_{l+1} v_{l+1} E[f'(s_l)^2] Var(g_{l+1}) (Gaussian variance "
             "propagation)",
    "batchnorm": "Var(g_l) = (n_{l+1}/n_l) gamma^2 E[f'(s)^2] / Var f(s) Var(g_{l+1}), "
                 "s ~ N(beta, gamma^2) (batch-norm mean field, Yang et al. 2019)",
    "residual": "Var(dL/dx_b) = Var(dL/dx_{b+1}) + n v1 n v2 E[f'(x_b)^2] E[f'(h_b)^2] "
                "Var(dL/dx_{b+1}); stream variance adds per block",
    "residual+batchnorm": "Var(dL/dx_b) = Var(dL/dx_{b+1}) (1 + branch gain / q_b), q_b = "
                          "stream batch variance growing by n v2 Var f(s) per block",
}


def _model_spec(model: Any) -> Any:
    """The :class:`~depthlab.spec.ModelSpec` of ``model`` (ModelSpec, Network, run config or
    model table; a table is validated by ``ModelSpec.from_dict``)."""
    from ..spec import ModelSpec

    if isinstance(model, ModelSpec):
        return model
    from ..network import Network

    config = getattr(model, "config", None)
    if isinstance(config, Mapping) and not isinstance(model, Mapping):
        if isinstance(model, Network) and not config:
            raise ValueError("this Network has no recipe (it was built from layers or by "
                             "depthlab.bridge.from_torch, not by dl.mlp): the prediction needs "
                             "one; pass a ModelSpec or a model table {'sizes': [...], "
                             "'activation': ..., 'init': ...}, or predict its torch copy with "
                             "depthlab.torch.predict")
        model = config
    if isinstance(model, Mapping):
        inner = model.get("model")
        raw = dict(inner) if isinstance(inner, Mapping) else dict(model)
        raw.pop("seed", None)
        return ModelSpec.from_dict(raw)
    raise TypeError(f"expected a ModelSpec, a Network, a run config or its model table; got "
                    f"{type(model).__name__}: {model!r}")


def _own_weight_moments(model: Any, init: Any, sizes: list[int]) -> tuple[list[float], str]:
    """``(E[W^2] of each hidden layer's feeding weights, where they leave the recipe)`` for a
    :class:`~depthlab.network.Network` whose weights are not its recipe's init
    (:func:`depthlab.initializers.off_recipe_ratio`; the output layer only sets the common
    scale and is not read);
    ``([], "")`` for a recipe, or a network still at it. ``E[W^2]`` is what the variance
    recursion multiplies by (``Var(s) = n E[W^2] E[a^2]`` for weights independent of the
    activations)."""
    from ..initializers import off_recipe_ratio
    from ..network import Network
    from .variance import _init_variance

    if not isinstance(model, Network):
        return [], ""
    dense = model.dense_layers()
    if len(dense) < len(sizes) - 1:
        return [], ""
    moments, worst = [], (0.0, 0, 1.0)
    for k, d in enumerate(dense[: len(sizes) - 2], start=1):
        w = np.asarray(d.W.value, dtype=np.float64)
        m2 = float(np.mean(w * w))
        moments.append(m2)
        ratio = off_recipe_ratio(w, _init_variance(init, w.shape[0], w.shape[1], {}))
        off = abs(math.log(ratio)) if ratio is not None and 0 < ratio < math.inf else math.inf
        if ratio is not None and off > worst[0]:
            worst = (off, k, ratio)
    if worst[1] == 0:
        return [], ""
    return moments, (f"layer {worst[1]}'s E[W^2] is {worst[2]:.3g}x the variance of its "
                     f"recipe's init {init!r}: trained, rescaled or dl.lsuv")


def _uncovered(arch: str, points: int, note: str) -> GradientPrediction:
    frame = pd.DataFrame({"layer": range(1, points + 1), "grad_pre_var": math.nan})
    return GradientPrediction(arch, frame, False, note, _FORMULAS[arch])


def has_zero_biases(bias_init: Any) -> bool:
    """Whether the bias initializer ``bias_init`` (a name or an Initializer) sets every bias to
    0 (``zeros``, ``constant`` with value 0, their objects): the case the recursions assume."""
    from ..initializers import Constant, get_initializer

    try:
        init = get_initializer(bias_init)
    except (ValueError, TypeError):
        return False
    return isinstance(init, Constant) and init.value == 0.0


def random_bias_variances(bias_init: Any, fans: list[tuple[int, int]]) -> list[float] | None:
    """The variance ``sigma_b^2`` of one bias entry at each layer of ``widths`` for a bias
    initializer that draws zero-mean random biases, Gaussian or uniform (``normal`` with any
    ``std``, ``uniform`` ``limit^2 / 3``, the variance-scaling ones ``scale / fan`` of the
    layer weight's ``fans`` (fan_in, fan_out): a Dense layer draws its bias with them, torch's
    nn.Linear rule; their objects too; :func:`bias_distribution` says which): the mean-field
    recursion ``q_l = n_{l-1} v_l E[f(s_{l-1})^2] + sigma_b^2`` takes them (uniform ones with
    ``s = z + b`` integrated over ``b``, as :func:`~depthlab.theory.variance.propagate`'s
    ``bias_dist="uniform"``), one per layer of ``fans``. ``[0, ...]`` for zero biases; None
    for constant non-zero biases (every pre-activation's mean is then ``b``, not 0) and any
    other initializer."""
    from ..initializers import get_initializer

    if has_zero_biases(bias_init):
        return [0.0] * len(fans)
    if bias_distribution(bias_init) is None:
        return None
    try:
        init = get_initializer(bias_init)
        out = [float(init.variance(int(a), int(b))) for a, b in fans]
    except (ValueError, TypeError, ArithmeticError):
        return None
    return out if all(math.isfinite(v) and v >= 0 for v in out) else None


def bias_distribution(bias_init: Any) -> str | None:
    """``"normal"`` or ``"uniform"`` for a bias initializer drawing zero-mean random biases of
    that shape (``normal``, ``*_normal``, untruncated; ``uniform``, ``fan_in_uniform``,
    ``*_uniform``), else None (constant, unknown)."""
    from ..initializers import Normal, Uniform, VarianceScaling, get_initializer

    try:
        init = get_initializer(bias_init)
    except (ValueError, TypeError):
        return None
    if isinstance(init, Normal):
        return "normal"
    if isinstance(init, Uniform):
        return "uniform"
    if isinstance(init, VarianceScaling) and init.distribution in ("normal", "uniform"):
        return init.distribution
    return None


def _init_of(init: Any) -> Any:
    """A name or an Initializer object, as the recursions take it (they read its variance and
    refuse weights with a non-zero mean)."""
    return init


def has_zero_mean_weights(init: Any) -> bool:
    """Whether the weight initializer ``init`` (a name or an Initializer) draws zero-mean
    weights (everything except ``constant`` with a non-zero value)."""
    from ..initializers import Constant, get_initializer

    try:
        obj = get_initializer(init)
    except (ValueError, TypeError):
        return True
    return not (isinstance(obj, Constant) and obj.value != 0.0)


NARROW_WIDTH = 16
"""A plain prediction's note warns when a hidden layer has fewer units: 4 hidden layers of
width w, 256 Gaussian inputs, 20 seeds, first-layer gradient relative to the last, measured /
predicted: tanh (Glorot) median 0.12, 0.53, 0.98, 0.96, 0.87, 1.07 for w = 1, 2, 4, 8, 16,
64 with a spread (std of the log) of 1.67, 0.67, 0.49, 0.40, 0.14, 0.12; relu (He) median
0.29, 0.42, 1.08, 0.81, 0.91, 1.09, spread 1.69, 1.41, 0.73, 0.51, 0.21, 0.10 (at widths 1
and 2, 18 and 10 of the 20 networks had no gradient at all)."""

AMPLIFICATION_NOTE = 3.0
"""A plain prediction's note warns when :func:`length_map_amplification` reaches this (gelu
with He init over 20 layers: 8.7; at width 256 its last layer's variance measured x2.6, x7.4
and x50 the prediction over three seeds and the first layer's relative gradient x3.5, against
at most 16% for tanh, relu, elu and selu at the same width and depth; swish, He, 10 layers:
3.1). Part of that was the one input length (:func:`input_length_rule`): averaged over the
examples' lengths, the same gelu net's last-layer variance measures 2.1x the prediction and the
first layer's relative gradient 4.1x (medians of 6 seeds, 64 inputs; 6.3x and 12x before); the
rest is finite-width noise the unstable map magnifies."""


DEEP_NARROW = 1.0
"""A plain prediction's note warns when the hidden layers' ``sum(1 / width)`` (depth / width
for equal widths) reaches this: the recursion is the average over weight draws, and one
network's finite-width fluctuations compound layer by layer (Hanin 2018), so its gradients
depart by factors that grow with depth / width. 64 Gaussian inputs, first layer's gradient
relative to the last, measured / predicted over seeds: relu (He) 100 layers of width 64
0.16-0.37 (4 seeds), 200 of 64 0.04-0.18, 200 of 256 0.29-0.61; tanh (Glorot) 50 of 32
0.31-0.54 (6 seeds); selu (LeCun) 100 of 64 0.97-2.9; at depth / width 0.25-0.5 (relu 16 of
64, 16 of 32, 64 of 128) 0.36-2.6 with medians 0.71-0.88."""


WIDE_OUTPUT = 0.25
"""A prediction's note warns when the output layer has at least this fraction of the last hidden
layer's units (``n_out / n_L``): with a regression loss the output gradient ``2 (f - y) / N``,
``f = W_out a_L``, is correlated with ``W_out`` and ``a_L``, which the recursion's independence
assumption ignores. relu/He, 5 hidden layers of 300, mse on N(0, 1) targets, 6 seeds, first
layer's gradient measured / predicted: 1.09 at 10 outputs, 1.51 at 100, 1.91 at 300;
cross-entropy 1.01-1.02 at each; tanh (LeCun, Glorot), 300 outputs, mse: 1.04."""


DEEP_REGRESSION = 0.03
"""A prediction's note warns, for positively homogeneous units (relu, leaky_relu), when the
hidden layers' ``sum(1 / width)`` reaches this, whatever the output width: their output is
``f = J_l s_l`` at every layer, so a regression loss's output gradient ``f - y`` carries
``J_l^T J_l s_l`` back, whose variance grows over the independent-gradient recursion with
depth / width (the finite-width spread of ``J_l``'s singular values). relu/He, 10 outputs,
mse on N(0, 1) targets, 512 Gaussian inputs, 4 seeds, first layer's gradient measured /
predicted (median): 1.41 at 10 layers of 256, 1.75 at 20 of 256, 2.29 at 40 of 256, 2.84 at
20 of 128; with an output gradient independent of the outputs 0.96-1.01; cross-entropy at 20
of 128: 1.13; leaky_relu(0.5) 20 of 256: 1.36; tanh (Glorot) 20 of 128: 0.89 for mse and
cross-entropy alike."""


LOSS_KINDS = ("regression", "cross_entropy", "binary_cross_entropy")
"""What :func:`loss_kind` tells of a loss, for the output-gradient notes of
:func:`predict_gradients`: ``regression`` (mse, huber, l1_loss, smooth_l1_loss: every loss of the
element-wise difference ``f - y``), ``cross_entropy`` (softmax over the outputs: cross_entropy,
nll_loss), ``binary_cross_entropy`` (a sigmoid per output: binary_cross_entropy, bce_loss)."""


def loss_kind(loss: Any) -> tuple[str, str] | None:
    """``(kind, name)`` for the loss ``loss`` (a name as a config's ``train.loss`` takes it,
    aliases included, or a :class:`~depthlab.losses.Loss`): ``kind`` one of
    :data:`LOSS_KINDS` (``""`` for a registered loss of none of them), ``name`` the canonical
    name; None for None (the loss is not known: the notes then speak of "a regression loss").
    ValueError for an unknown name, TypeError for anything else."""
    from ..losses import (
        REGISTRY,
        BCELoss,
        BinaryCrossEntropy,
        CrossEntropy,
        Loss,
        _RegressionLoss,
    )

    if loss is None:
        return None
    if isinstance(loss, Loss):
        cls, name = type(loss), str(loss.name)
    elif isinstance(loss, str):
        name = REGISTRY.key(loss)  # ValueError: unknown loss 'msee' (did you mean 'mse'?) ...
        cls = REGISTRY.factories[name]
    else:
        raise TypeError(f"loss must be a loss name as a config's train.loss takes it (one of "
                        f"{', '.join(REGISTRY.names)}), a Loss or None, got "
                        f"{type(loss).__name__} {loss!r:.60}")
    kind = ("regression" if isinstance(cls, type) and issubclass(cls, _RegressionLoss) else
            "cross_entropy" if isinstance(cls, type) and issubclass(cls, CrossEntropy) else
            "binary_cross_entropy" if isinstance(cls, type)
            and issubclass(cls, (BinaryCrossEntropy, BCELoss)) else "")
    return kind, name


def _wide_output_note(n_out: int, n_last: int, depth_width: float = 0.0,
                      homogeneous: bool = False,
                      loss: tuple[str, str] | None = None) -> str:
    """The note for an output layer with ``n_out / n_last >= WIDE_OUTPUT``, or positively
    homogeneous units with ``depth_width >= DEEP_REGRESSION``; "" otherwise. ``loss``: the
    :func:`loss_kind` of the loss the network trains with (None: not known, the note then
    speaks of "a regression loss"): a regression loss gets the correction, with its name;
    cross-entropy the figure measured with it; binary cross-entropy its own (relu/He, 128
    features, 512 Gaussian rows, 10 outputs, 20 layers of 128, 12 seeds, Var(g_1) / Var(g_L)
    measured / predicted, median: mse 2.64, binary cross-entropy 1.42, cross-entropy 1.17;
    5 layers of 300, 300 outputs, 6 seeds, std measured / predicted: mse 1.92, l1_loss 1.74,
    binary cross-entropy 1.49, cross-entropy 1.02); a loss of none of :data:`LOSS_KINDS`: as
    not known."""
    kind, name = loss if loss is not None and loss[0] in LOSS_KINDS else ("regression", "")
    # the losses' own words: today's for an unknown loss, the loss named where known
    regression = f"the regression loss {name}" if name else "a regression loss (mse, huber)"
    if n_out < WIDE_OUTPUT * n_last:
        if not (homogeneous and depth_width >= DEEP_REGRESSION):
            return ""
        head = f"; sum(1 / width) = {depth_width:.3g} over the hidden layers: "
        if kind == "cross_entropy":
            return (head + f"with {name} the output gradient softmax(f) - y depends little on "
                    "the output f at initialization, so the gradients near the input stay "
                    "close to this recursion (relu/He, 10 outputs: the first layer's 1.1x the "
                    "prediction at 20 layers of 128)")
        if kind == "binary_cross_entropy":
            return (head + f"with {name} the output gradient sigmoid(f) - y carries the output "
                    "f = J s back through the same weights, which this recursion ignores, so "
                    "the gradients near the input come out larger than predicted by a factor "
                    "growing with the number of layers over their width (relu/He, 10 outputs, "
                    "20 layers of 128: the first layer's 1.4x; cross-entropy 1.2x, mse 2.6x "
                    "in the same 12 seeds)")
        return (head + f"with {regression} the output gradient f - y carries the output "
                "f = J s back through the same weights, which this recursion ignores, so "
                "the gradients near the input come out larger than predicted by a factor "
                "growing with the number of layers over their width (relu/He, 10 outputs, "
                "mse on unit-variance targets: the first layer's 1.4x at 10 layers of 256, "
                "1.75x at 20, 2.3x at 40, 2.8x at 20 of 128; cross-entropy 1.1x)")
    head = f"; the output layer is wide ({n_out} outputs for {n_last} last hidden units): "
    if kind == "cross_entropy":
        return (head + f"with {name} the output gradient softmax(f) - y is nearly independent "
                "of the output weights at initialization, and the gradients near the input "
                "stay close to this recursion (relu/He, 5 hidden layers of 300: the first "
                "layer's 1.01-1.02x at 10, 100 and 300 outputs)")
    if kind == "binary_cross_entropy":
        return (head + f"with {name} the output gradient sigmoid(f) - y is correlated with "
                "the output weights, which this recursion ignores, and the gradients near the "
                "input come out larger than predicted (relu/He, 5 hidden layers of 300, 300 "
                "outputs: the first layer's 1.5x; mse 1.9x, cross-entropy 1.02x in the same "
                "6 seeds)")
    return (head + f"with {regression} the output gradient f - y is correlated with the "
            "output weights, which this recursion ignores, and the gradients near the input "
            "come out larger than predicted when the outputs outweigh the targets (relu/He, 5 "
            "hidden layers of 300, mse on unit-variance targets: the first layer's 1.5x at 100 "
            "outputs, 1.9x at 300; cross-entropy 1.01x)")


def _underflow_note(frame: pd.DataFrame) -> str:
    """A note naming the layers whose ``grad_pre_var`` underflowed float64 to 0 although its
    log, ``ln Var(g_l) = sum_k ln(n_{k+1} v_{k+1} E[f'(s_k)^2])``, is finite; "" when none."""
    if "grad_pre_log_var" not in frame.columns:
        return ""
    var = frame["grad_pre_var"].to_numpy(float)
    log = frame["grad_pre_log_var"].to_numpy(float)
    gone = (var == 0.0) & np.isfinite(log)
    if not gone.any():
        return ""
    top = int(frame["layer"].to_numpy()[gone].max())
    first = float(log[0]) / (2.0 * math.log(10.0))
    return (f"; Var(dL/ds) underflows float64 to 0 at layers 1-{top} (the gradients vanish "
            f"towards the input): relative_std there is exp(grad_pre_log_var / 2), "
            f"10^{first:.1f} at layer 1")


def length_map_amplification(frame: pd.DataFrame, activation: Any, **kw: Any) -> float:
    """The largest factor by which a relative error in one layer's forward variance grows by the
    last layer: ``max_l prod_{k=l}^{L-1} e_k`` with the length map's elasticity
    ``e_k = d ln q_{k+1} / d ln q_k = d ln E[f(s)^2] / d ln q``, ``s ~ N(0, q_k)`` (``q_{k+1} =
    n v E[f(s_k)^2]``). 1 for relu and identity, < 1 per layer for tanh (errors shrink), > 1 for
    gelu, swish, mish under He init, whose variance slides down an unstable map; 1 when a
    variance is 0 or not finite (nothing to say)."""
    from .gaussian import resolve_activation
    from .variance import _moments_exact

    fn = resolve_activation(activation, **kw)
    q = frame["pre_var"].to_numpy(dtype=float)
    h = 1e-4
    grow, worst = 1.0, 1.0
    for ql in q[-2::-1]:  # layers L-1 .. 1: the map from q_l to q_{l+1}
        if not (math.isfinite(ql) and ql > 0):
            break
        lo, hi = _moments_exact(fn, ql * (1 - h))[1], _moments_exact(fn, ql * (1 + h))[1]
        if not (lo > 0 and hi > 0):
            break
        grow *= math.log(hi / lo) / math.log((1 + h) / (1 - h))
        worst = max(worst, grow)
    return worst


def _zero_gradients(arch: str, frame: pd.DataFrame, act: Any) -> GradientPrediction | None:
    """An uncovered prediction when ``E[f'(s)^2] = 0`` at the last probed nonlinearity (``step``,
    or relu on an all-zero pre-activation): ``dL/ds = dL/da f'(s)`` is then exactly 0 there and,
    every other gradient flowing through it, everywhere, so a profile relative to the top
    would be 0/0 however confident its numbers; None otherwise."""
    top = float(frame["deriv_sq"].iloc[-1])
    if top != 0.0:
        return None
    return _uncovered(arch, len(frame), f"no prediction: E[f'(s)^2] = 0 at the last hidden "
                                        f"layer (the derivative of {act!r} is 0 on its "
                                        "pre-activations), so every hidden gradient is exactly 0 "
                                        "at initialization: no scale to compare")


RESIDUAL_BN_NOTE = (", large batches; assumes a white (well-spread) input batch: the skip "
                    "path carries the inputs' batch correlations to every block unwhitened, "
                    "so low-rank inputs give larger gradients near the input (rank-8 inputs, "
                    "width 256, 10 relu blocks: the first layer's 1.33x)")
"""The note of a covered residual + batch-norm prediction. In a plain BN chain each layer
whitens the batch (the note gives the depth it takes); along a skip path nothing does, so the
input batch's correlations stay in the stream (width 256, 10 relu blocks, 300 examples, 3
seeds: first layer's gradient 1.008x the prediction for Gaussian inputs, 1.33x for rank-8
inputs)."""


FEW_INPUTS = 16
"""A prediction's note warns when the network has fewer input features and the recursion is not
exact per example (batch norm, or an activation that is not positively homogeneous): the
recursions take every example's squared input length ``|x|^2 / n_in`` as ``input_var`` and,
with batch norm, a batch spread in every direction; with few features neither holds. Gaussian
inputs, 20 hidden layers of width 256, 3 seeds, first layer's gradient measured / predicted at
1, 2, 4, 16, 64 features: relu + BN 14, 1.8, 1.16, 0.97, 0.88; tanh + BN 2325, 33, 3.6, 1.39,
1.12; selu (LeCun) 10.9, 2.4, 1.39, 1.05, 0.92; elu (He) 5.9, 1.7, 1.2, 1.01, 0.91; residual
relu + BN (10 blocks) 3.6 at 2 features, 0.97 at 64; residual tanh 1.6 and 1.0; plain relu
(He) 0.95 and 1.0, gelu 1.07 and 1.14 (the 2-D spirals gave the playground's 3.7x and 5.5x at
width 32). Plain nets are now averaged over Gaussian inputs' lengths (:func:`input_length_rule`):
selu at 2 features 1.07-2.0 (3.0-5.6 before), elu at 1 feature 4-22 (15-84), tanh (He) at 4
features 0.98-1.05 (1.46-1.56); 3 seeds each. A data set's own lengths spread otherwise."""


def _positively_homogeneous(act: Any, **kw: Any) -> bool:
    """Whether ``f(c s) = c f(s)`` for ``c > 0`` (relu, leaky_relu, identity): then each
    example's variance map is linear and an example's input length cancels from the gradient
    ratios, however few the features."""
    import numpy as np

    from .gaussian import resolve_activation

    try:
        fn = resolve_activation(act, **kw)
        s = np.array([-3.0, -1.0, -0.25, 0.25, 1.0, 3.0])
        with np.errstate(all="ignore"):
            a1, a2 = np.asarray(fn.f(s)), np.asarray(fn.f(2.0 * s))
        return bool(np.allclose(a2, 2.0 * a1, rtol=1e-9, atol=1e-12))
    except (ValueError, TypeError, AttributeError):
        return False


def _few_inputs_note(n_in: int, act: Any, bn: bool, **kw: Any) -> str:
    """The note's warning for fewer than :data:`FEW_INPUTS` input features (see there), or
    ``""``."""
    if n_in >= FEW_INPUTS or (not bn and _positively_homogeneous(act, **kw)):
        return ""
    why = ("a batch spread in every direction, which batch norm takes many layers to make of "
           "a low-rank one" if bn else "i.i.d. Gaussian features (it averages over their "
           "examples' lengths |x|^2 / n_in, a chi-square; a data set's spread otherwise)")
    return (f"; {n_in} input feature{'s' if n_in != 1 else ''}: the recursion assumes {why}, "
            f"so with fewer than {FEW_INPUTS} features the gradients near the input depart "
            "from it (2 features, 20 layers of width 256, first layer measured/predicted: "
            "relu + BN 1.8x, selu 1.3x, tanh + BN 33x; 16 features: within 40%)")


LENGTH_NODES = 24
"""Nodes of the rule :func:`input_length_rule` averages the plain recursion over (half of them
for a Gamma shape k >= 4, n_in >= 8 zero-mean features: within 0.2% of 24 nodes there)."""


def input_length_rule(n_in: int, input_var: float, input_mean: float = 0.0
                      ) -> tuple[np.ndarray, np.ndarray]:
    """``(t, w)``: a quadrature rule for ``E_x[h(t)]`` over the ratio ``t = |x|^2 / (n_in m)`` of
    an example's squared input length to its mean ``m = input_var + input_mean^2``, for
    ``n_in`` i.i.d. ``N(input_mean, input_var)`` features: ``t`` is a Gamma variable of mean 1
    and shape ``k = m^2 / Var(|x|^2 / n_in)``, ``Var = (2 input_var^2 + 4 input_var
    input_mean^2) / n_in`` (exact, a scaled chi-square with ``n_in`` degrees of freedom, for
    ``input_mean = 0``; moment-matched otherwise): generalized Gauss-Laguerre with ``alpha =
    k - 1`` for ``k <= 100``, Gauss-Hermite on ``t ~ N(1, 1/k)`` above (``t`` stays above 0.3;
    the Laguerre weights overflow float64 there); :data:`LENGTH_NODES` nodes. ``([1], [1])``
    when every length is equal (``input_var = 0``). Weights sum to 1."""
    from scipy.special import roots_genlaguerre

    # products, not ** 2: Python's float power raised a bare OverflowError past 1.3e154
    # (input_var = 1e308); an infinite spread takes the one-length rule below
    mean_sq = float(input_mean) * float(input_mean)
    m = float(input_var) + mean_sq
    var = (2.0 * input_var * input_var + 4.0 * input_var * mean_sq) / max(int(n_in), 1)
    if not (m > 0 and var > 0 and math.isfinite(m * var)):
        return np.ones(1), np.ones(1)
    k = m * m / var
    nodes = LENGTH_NODES if k < 4.0 else LENGTH_NODES // 2  # a narrow spread: 12 do (1e-3)
    if k <= 100.0:
        x, w = roots_genlaguerre(nodes, k - 1.0)
        return x / k, w / w.sum()
    z, w = np.polynomial.hermite_e.hermegauss(nodes)
    return 1.0 + z / math.sqrt(k), w / w.sum()


def average_over_lengths(frames: list[pd.DataFrame], weights: np.ndarray,
                         input_sq: np.ndarray) -> pd.DataFrame:
    """One plain-recursion frame from ``frames``, the recursion run at each node of
    :func:`input_length_rule` (every example's own input length, ``weights`` summing to 1):
    what a batch of such examples measures. ``pre_var``, ``act_mean``, ``act_sq``, ``deriv_sq``
    are averages over the examples (``E_x[.]``), ``act_var = E_x[act_sq] - E_x[act_mean]^2``;
    the gradients are averaged before the normalisation to the last layer, each example's
    ``Var(dL/ds_l | x) = grad_pre_var_l(x) deriv_sq_L(x)`` (its last layer's
    ``Var(dL/ds_L | x) ∝ E[f'(s_L)^2 | x]`` under an output gradient independent of ``x``):
    ``grad_pre_var_l = E_x[Var(dL/ds_l | x)] / E_x[Var(dL/ds_L | x)]``, summed in log space
    (``grad_pre_log_var``; the deep sigmoid's e^-1100 stays finite there), likewise
    ``weight_grad_var = E_x[E[a_{l-1}^2 | x] Var(dL/ds_l | x)]`` relative to the same
    (``input_sq``: each node's ``E[x_i^2]``, the layer-1 ``a_0``)."""
    out = frames[0].copy()
    w = np.asarray(weights, dtype=float)
    for col in ("pre_var", "act_mean", "act_sq", "deriv_sq"):
        out[col] = sum(wi * f[col].to_numpy(float) for wi, f in zip(w, frames))
    out["act_var"] = np.maximum(out["act_sq"] - out["act_mean"] ** 2, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        logw = np.log(w)
        top = np.array([math.log(f["deriv_sq"].iloc[-1]) if f["deriv_sq"].iloc[-1] > 0
                        else -math.inf for f in frames])
        logs = np.array([f["grad_pre_log_var"].to_numpy(float) for f in frames])
        wg = np.array([np.concatenate([[sq], f["act_sq"].to_numpy(float)[:-1]])
                       for sq, f in zip(input_sq, frames)])  # E[a_{l-1}^2 | x]
        log_norm = np.logaddexp.reduce(logw + top)
        log_g = np.logaddexp.reduce(logw[:, None] + top[:, None] + logs, axis=0) - log_norm
        log_wg = np.logaddexp.reduce(logw[:, None] + top[:, None] + logs + np.log(wg),
                                     axis=0) - log_norm
    out["grad_pre_log_var"] = log_g
    out["grad_pre_var"] = np.exp(log_g)
    out["weight_grad_var"] = np.exp(log_wg)
    return out


LENGTH_SPREAD_TOL = 0.1
"""The plain prediction takes the average over input lengths (:func:`average_over_lengths`) only
where it departs from the one-length recursion by more than this relative amount at some layer
(pre-activation variance or gradient): below it the one-length frame is kept, bit-identical to
:func:`~depthlab.theory.variance.propagate`, as the difference is within one net's measurement
noise (width 256, 10-20 layers: 5-15% per layer over 3 seeds). Tanh, Glorot, 3 layers of 32:
1.3% at 16 inputs, 0.2% at 256 (kept); tanh, He, 6 layers, 4 inputs: 45%; gelu, He, 20
layers, 64 inputs: 3x (averaged)."""


def _departs(a: pd.DataFrame, b: pd.DataFrame, tol: float) -> bool:
    """Whether ``pre_var`` or ``grad_pre_log_var`` of frames ``a`` and ``b`` differ by more than
    ``tol`` (relative; the gradient compared in log space) at some layer."""
    with np.errstate(divide="ignore", invalid="ignore"):
        pre = np.abs(a["pre_var"].to_numpy(float) / b["pre_var"].to_numpy(float) - 1.0)
        grad = np.abs(np.expm1(a["grad_pre_log_var"].to_numpy(float)
                               - b["grad_pre_log_var"].to_numpy(float)))
    return bool(np.any(np.nan_to_num(pre, nan=0.0) > tol)
                or np.any(np.nan_to_num(grad, nan=0.0) > tol))


def _spread(lengths: np.ndarray) -> float:
    """The relative std of the examples' squared lengths ``std(r) / mean(r)`` (0 when all 0)."""
    m = float(np.mean(lengths))
    return float(np.std(lengths)) / m if m > 0 else 0.0


def _is_number(value: Any, target: float) -> bool:
    """Whether ``value`` is the real number ``target`` (a bool or a string is not)."""
    return (isinstance(value, (int, float, np.integer, np.floating))
            and not isinstance(value, bool) and float(value) == target)


def predict_gradients(model: Any, *, input_var: float = 1.0,
                      input_mean: float = 0.0, x: Any = None,
                      y: Any = None, loss: Any = None) -> GradientPrediction:
    """Predicted per-layer std of the back-propagated gradient ``dL/ds`` at initialization,
    relative to the last hidden layer, for the network ``model`` describes (plain, batch-
    normalized, residual or both; the module docstring gives each recursion).

    ``input_var``/``input_mean``: per-feature statistics of the inputs (standardized data:
    1 and 0). Wide layers and (with BN) large batches are assumed; measured agreement and the
    cases the argument does not cover (under BN: affine activations, and gelu, swish, mish whose
    examples' norms drift apart; softmax; constant non-zero biases; random biases in a residual
    net or in one whose weights left its recipe) are documented in
    :mod:`depthlab.theory.batchnorm` and the tests; then ``covered`` is False, as when every
    hidden gradient is exactly 0 at initialization (``E[f'(s)^2] = 0`` at the last hidden layer,
    as for ``step``, or an all-zero output layer: a profile relative to a zero top is 0/0).
    A :class:`~depthlab.network.Network` is predicted from its recipe (``config``) while its
    weights are that recipe's draw; once a hidden layer's ``E[W^2]`` has left the recipe's
    variance (by more than ``initializers.OFF_RECIPE_LOG`` in log, or six sampling errors: trained,
    rescaled by hand, or :func:`depthlab.lsuv`) a plain network is predicted from its own
    weights (each layer's ``E[W^2]``; the note says so) and a residual one not at all
    (``covered`` False); batch norm divides each layer's scale out.
    Random zero-mean biases of a plain net (``bias_init`` normal/uniform with their std/limit,
    ``*_normal``/``*_uniform``) add their variance: ``q_l = n_{l-1} v_l E[f(s_{l-1})^2] +
    sigma_b^2`` (:func:`random_bias_variances`; uniform ones integrated over ``b``).
    A plain net's recursion is averaged over the examples' own input lengths ``|x|^2 / n_in``
    (:func:`input_length_rule`, :func:`average_over_lengths`; i.i.d. Gaussian features of
    ``input_var``/``input_mean``): a batch measures that average, which departs from the
    recursion at the mean length where the length map is not linear (gelu, He, 20 layers of 256,
    64 inputs: last layer's variance 3x; exact, so skipped, for relu-like units without biases;
    kept only where it departs from the one-length value by more than
    :data:`LENGTH_SPREAD_TOL`).
    ``x``: the inputs themselves, an array ``(n, n_in)`` (a probe batch, the validation rows):
    their own squared lengths per feature ``|x_i|^2 / n_in`` replace the chi-square law
    (:func:`depthlab.theory.lengths.empirical_length_rule`: digits, one-hot rows, a standardized
    table have other spreads), and their mean replaces ``input_var + input_mean^2``, so
    ``input_var``/``input_mean`` must then be left at their defaults (batch-normalized and
    residual nets take only that mean).
    ``y``: the batch's labels (class labels ``(n,)`` or one-hot rows ``(n, k)``, as many as the
    rows of ``x`` when both are given): they change no number; a batch-normalized prediction's
    note warns when their largest class holds at least
    :data:`~depthlab.theory.labels.ONE_CLASS_SHARE` of them (batch norm's backward pass removes
    the batch mean of a nearly constant output gradient: residual relu + BN, one class, the
    first layer's gradient 0.54x the prediction; :mod:`depthlab.theory.labels`).
    ``loss``: the loss the network trains with, a name as a config's ``train.loss`` takes it
    (aliases too) or a :class:`~depthlab.losses.Loss`; None: a run config's ``train.loss``,
    else not known. It changes no number, only the note's output-gradient terms
    (:func:`loss_kind`): the recursion takes the output gradient independent of the outputs,
    which a regression loss's ``f - y`` is not (deep relu-like nets, :data:`DEEP_REGRESSION`;
    wide output layers, :data:`WIDE_OUTPUT`): the note gives that correction for a regression
    loss (mse, huber, l1_loss, smooth_l1_loss) or an unknown one, binary cross-entropy's own
    figure, and for cross-entropy the figure measured with it instead. ValueError for an
    unknown loss name, TypeError for another type.
    Raises ValueError for sizes that are not explicit integers (``"auto"``), OverflowError
    naming the layer where a variance passes float64's range (exploding gradients).
    """
    spec = _model_spec(model)
    if loss is None and isinstance(model, Mapping) and isinstance(model.get("train"), Mapping):
        loss = model["train"].get("loss")  # a run config knows its loss (train.loss)
    kind = loss_kind(loss)  # ValueError/TypeError for a bad loss before any work
    sizes = spec.sizes
    if not isinstance(sizes, (list, tuple)) or not all(
            isinstance(s, int) and not isinstance(s, bool) for s in sizes):
        raise ValueError(f"model sizes must be explicit integers [n_in, hidden..., n_out], got "
                         f"{sizes!r}")
    lengths = None
    if x is not None:
        from .lengths import example_lengths

        if not (_is_number(input_var, 1.0) and _is_number(input_mean, 0.0)):
            raise ValueError(f"give the inputs x or their statistics input_var/input_mean, not "
                             f"both (got input_var={input_var!r}, input_mean={input_mean!r} "
                             "with x)")
        lengths = example_lengths(x, int(sizes[0]))
        input_var, input_mean = float(lengths.mean()), 0.0
    labels_note = ""
    if y is not None:
        from .labels import largest_class_share, one_class_note

        share = largest_class_share(y, None if lengths is None else int(lengths.size))
        labels_note = one_class_note(share) if spec.batchnorm else ""
    hidden = [int(h) for h in sizes[1:-1]]
    if not hidden:
        raise ValueError(f"sizes = {list(sizes)} has no hidden layer: nothing to predict")
    act, kw = spec.activation, dict(spec.activation_kwargs or {})
    init = _init_of(spec.init)
    bn, residual = bool(spec.batchnorm), bool(spec.residual)
    eps = float(spec.bn_eps)
    arch = ("residual+batchnorm" if bn else "residual") if residual else (
        "batchnorm" if bn else "plain")
    formula = _FORMULAS[arch]
    points = 2 * len(hidden) - 1 if residual else len(hidden)
    # random zero-mean biases: q_l = n v E[f^2] + sigma_b^2 (plain nets; BN's Dense has none)
    bias_vars = None if bn or has_zero_biases(spec.bias_init) else random_bias_variances(
        spec.bias_init, [(int(a), int(b)) for a, b in zip(sizes[:-2], sizes[1:-1])])
    if not bn and not has_zero_biases(spec.bias_init) and (bias_vars is None or residual):
        why = ("the residual recursion assumes zero biases" if bias_vars is not None else
               "the recursion assumes zero-mean biases (constant non-zero biases shift every "
               "pre-activation's mean)" if not has_zero_mean_weights(spec.bias_init) else
               "the recursion takes zero biases or zero-mean normal or uniform ones")
        return _uncovered(arch, points, f"no prediction: bias_init = {spec.bias_init!r}; {why}")
    if not has_zero_mean_weights(spec.init):
        return _uncovered(arch, points, f"no prediction: init = {spec.init!r} gives weights "
                                        "with a non-zero mean; the recursions assume E[W] = 0")
    if isinstance(act, str) and act.lower() in NOT_ELEMENTWISE:
        return _uncovered(arch, points, "no prediction: a softmax hidden layer is not "
                                        "elementwise")
    out_init = spec.output_init if spec.output_init is not None else spec.init
    if has_zero_biases(out_init):
        return _uncovered(arch, points, f"no prediction: the output layer's weights are all 0 "
                                        f"(init {out_init!r}), so every hidden gradient is "
                                        "exactly 0 at initialization: no scale to compare")
    wide = _wide_output_note(int(sizes[-1]), hidden[-1], sum(1.0 / h for h in hidden),
                             not bn and not residual and has_zero_biases(spec.bias_init)
                             and _positively_homogeneous(act, **kw), kind)
    # with the inputs at hand a plain net is averaged over their own lengths: the few-inputs
    # warning (a chi-square assumed for a data set's spread) no longer applies to it
    few = ("" if lengths is not None and not bn and not residual
           else _few_inputs_note(int(sizes[0]), act, bn, **kw)) + wide
    # a Network's weights may have left its recipe (dl.lsuv rescales them in place): the
    # recipe's glorot prediction for an LSUV'd ReLU net read 0.0014 at layer 1, measured 0.93.
    # Batch norm divides each layer's scale out (its recursion reads no weight variance).
    own, own_note = ([], "") if bn else _own_weight_moments(model, init, list(sizes))
    if own and bias_vars is not None:
        return _uncovered(arch, points, "no prediction: the network's weights are not its "
                                        f"recipe's ({own_note}), and its random biases' "
                                        f"variance is taken from the recipe (bias_init = "
                                        f"{spec.bias_init!r})")
    if own and residual:
        return _uncovered(arch, points, "no prediction: the network's weights are not its "
                                        f"recipe's ({own_note}), and the residual recursion "
                                        "takes one weight variance for every block")
    if residual and bn:
        factor = bn_gradient_factor(act, **kw)
        if factor.whitening >= 1.0 - 1e-9:  # affine: as in a plain BN chain, no number
            return _uncovered(arch, points, f"no prediction: {factor.name} is affine (K'(0) = "
                                            "1), so batch norm never whitens the batch and the "
                                            "blocks' gradient gains depend on the data's batch "
                                            "covariance (rank-8 inputs: the first block's "
                                            "gradient 2.2x the large-batch formula)")
    if residual:
        frame = propagate_residual(int(sizes[0]), hidden[0], len(hidden) - 1, act, init,
                                   input_var, input_mean, batchnorm=bn, eps=eps, **kw)
        data_note = ""
        if lengths is not None and not bn and not _positively_homogeneous(act, **kw):
            from .lengths import average_residual

            # each example runs its own stream recursion from its own length (a standardized
            # log-normal table, 10 tanh blocks under He: the first layer's gradient 1.75x the
            # recursion at the mean length, 1.0x the average)
            frame = average_residual(frame, lengths, lambda v: propagate_residual(
                int(sizes[0]), hidden[0], len(hidden) - 1, act, init, v, 0.0,
                batchnorm=False, eps=eps, **kw))
            data_note = (f"; averaged over the input lengths of the {lengths.size} rows of x "
                         f"(mean |x|^2 / n_in = {input_var:.4g})")
        dead = _zero_gradients(arch, frame, act)
        if dead is not None:
            return dead
        return GradientPrediction(arch, frame, True, "wide-layer mean field at initialization"
                                  + (RESIDUAL_BN_NOTE if bn else "") + data_note
                                  + (wide if bn or data_note else few) + labels_note, formula)
    if bn:
        frame = propagate_batchnorm([int(sizes[0]), *hidden], act, init, input_var, eps=eps,
                                    **kw)
        factor = bn_gradient_factor(act, **kw)
        dead = _zero_gradients(arch, frame, act)
        if dead is not None:
            return dead
        return GradientPrediction(arch, frame, factor.covered,
                                  factor.note + (few + labels_note if factor.covered else ""),
                                  formula,
                                  factor.growth)

    def run(var: float, mean: float) -> pd.DataFrame:
        if own:  # each layer's own E[W^2], in the order propagate reads its layers
            moments = iter(own)
            weights = lambda fan_in, fan_out: next(moments)  # noqa: E731
        else:
            weights = init
        if bias_vars is None:  # zero biases: the call as it always was
            return propagate([int(sizes[0]), *hidden], act, weights, var, mean, **kw)
        return propagate([int(sizes[0]), *hidden], act, weights, var, mean, bias_vars,
                         bias_dist=bias_distribution(spec.bias_init) or "normal", **kw)

    # every example has its own input length |x|^2 / n_in (a chi-square spread, relative std
    # sqrt(2 / n_in)), and an unstable length map widens the spread: the batch measures the
    # average over examples, not the recursion at the average length (gelu, He, 20 layers of
    # 256, 64 inputs: last layer's variance 6.3x the one-length value, 2.1x the average).
    # Positively homogeneous units with zero biases: the ratios do not depend on the length.
    from ..validators import real

    input_var, input_mean = real("input_var", input_var, low=0.0), real("input_mean", input_mean)
    if lengths is None:
        t, w = input_length_rule(int(sizes[0]), input_var, input_mean)
    else:  # the data's own lengths (input_var is their mean, input_mean 0)
        from .lengths import empirical_length_rule

        t, w, _ = empirical_length_rule(lengths)
    frame = one = run(input_var, input_mean)
    if len(t) > 1 and not (bias_vars is None and _positively_homogeneous(act, **kw)):
        from .gaussian import resolve_activation
        from .lengths import average_nodes, interpolated_nodes, propagate_nodes

        fn = resolve_activation(act, **kw)
        wvar = one["weight_var"].to_numpy(float)
        layer_bias = bias_vars if bias_vars is not None else [0.0] * len(hidden)
        bdist = (bias_distribution(spec.bias_init) or "normal") if bias_vars is not None \
            else "normal"
        sq0 = input_mean_square(input_var, input_mean)

        def average(ts: np.ndarray, ws: np.ndarray) -> pd.DataFrame:
            # every node's recursion at once (the same quadrature as propagate, one activation
            # evaluation per layer): 15 propagate tables cost 4x the prediction (gelu 50x256)
            # (a data set's many distinct lengths: run at 48 of them, the rest interpolated)
            nodes = interpolated_nodes(ts, lambda g: propagate_nodes(
                [int(sizes[0]), *hidden], fn, wvar, sq0 * g, layer_bias, bdist))
            return average_nodes(one, nodes, ws)

        # a cheap screen first: the two-point rule t = 1 +- sd (t's mean and variance) is the
        # average to second order; the full rule (12-48 recursions) only where it departs
        sd = math.sqrt(float(np.sum(w * (t - 1.0) ** 2)))
        if sd >= 0.5 or _departs(average(np.array([1.0 - sd, 1.0 + sd]), np.full(2, 0.5)),
                                 frame, 0.5 * LENGTH_SPREAD_TOL):
            averaged = average(t, w)
            if _departs(averaged, frame, LENGTH_SPREAD_TOL):
                frame = averaged
    dead = _zero_gradients(arch, frame, act)
    if dead is not None:
        return dead
    note = "Gaussian variance propagation at initialization (wide layers)" + (
        f"; random {bias_distribution(spec.bias_init)} biases (bias_init = "
        f"{spec.bias_init!r}): sigma_b^2 = "
        f"{', '.join(f'{v:.3g}' for v in dict.fromkeys(bias_vars))} added to each layer's "
        "pre-activation variance" if bias_vars is not None else "") + (
        f"; from the network's own weights (each hidden layer's E[W^2]; {own_note})"
        if own else "")
    if lengths is not None:
        note += (f"; input lengths from the {lengths.size} rows of x (mean |x|^2 / n_in = "
                 f"{input_var:.4g}, its relative spread {_spread(lengths):.3g})"
                 + ("" if frame is one else ", averaged over them"))
    narrow = min(hidden)
    if narrow < NARROW_WIDTH:
        note += (f"; hidden layers as narrow as {narrow} unit{'s' if narrow != 1 else ''}: this "
                 "is an average over weight draws, and one network's gradients depart from it "
                 "by large factors (4 hidden tanh or relu layers, 20 seeds: the first layer's "
                 "typically 1.5x off at width 8, 2x at width 4, and at widths 1-2 the median "
                 "itself 2-8x below)")
    depth_width = sum(1.0 / h for h in hidden)
    if depth_width >= DEEP_NARROW:
        note += (f"; depth / width = {depth_width:.3g}: this is an average over weight draws, "
                 "and one network's finite-width fluctuations compound layer by layer, so its "
                 "gradients near the input depart from it by factors that grow with depth / "
                 "width (relu, 100 layers of width 64: the first layer's 0.16-0.37x the "
                 "prediction over 4 seeds; 200 of 64: 0.04-0.18x; selu 100 of 64: 1-2.9x)")
    under = _underflow_note(frame)
    if under:
        note += under
    gain = length_map_amplification(one, act, **kw)  # along the mean length's trajectory
    if gain >= AMPLIFICATION_NOTE:
        note += (f"; the length map is unstable here: a relative error in one layer's variance "
                 f"(finite-width noise, ~sqrt(2/width) per layer) grows up to x{gain:.3g} by "
                 "the last layer, so expect larger errors than the width alone suggests")
    return GradientPrediction(arch, frame, True, note + few, formula)
