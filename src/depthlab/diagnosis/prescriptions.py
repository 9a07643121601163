"""Prescriptions: the config change to try for each finding, and the reasoning behind it.

A prescription is a dict of ``mlp()`` arguments (``init``, ``activation``, ``batchnorm``,
``bias_init``, ``bn_inference``, ``bn_momentum``) and/or training settings (``lr``,
``optimizer``, ``batch_size``, ``standardize``, ``standardize_targets``, ``l1``, ``l2``,
``optimizer_kwargs``:
:data:`TRAINING_KEYS`), plus a sentence saying why.
"""

from __future__ import annotations

import functools
import math
from typing import Any

TRAINING_KEYS = frozenset({"lr", "optimizer", "batch_size", "standardize",
                           "standardize_targets", "l1", "l2", "optimizer_kwargs"})
"""Prescription keys that change training settings rather than the network config."""

RECOMMENDED_INIT: dict[str, str] = {
    # Rectifier family: He et al. (2015), Var(W) = 2 / fan_in.
    "relu": "he_normal", "leaky_relu": "he_normal", "elu": "he_normal", "gelu": "he_normal",
    "swish": "he_normal", "mish": "he_normal", "softplus": "he_normal", "relu6": "he_normal",
    "hardswish": "he_normal",
    # Symmetric saturating units: Glorot & Bengio (2010), Var(W) = 2 / (fan_in + fan_out).
    "tanh": "glorot_uniform", "sigmoid": "glorot_uniform", "softsign": "glorot_uniform",
    "penalized_tanh": "glorot_uniform", "identity": "glorot_uniform",
    "hardtanh": "glorot_uniform", "hardsigmoid": "glorot_uniform", "logsigmoid": "glorot_uniform",
    # SELU's fixed point needs Var(W) = 1 / fan_in (Klambauer et al. 2017).
    "selu": "lecun_normal",
}

INIT_SHORTFALL = 0.75
"""Measured Var(W) below this fraction of the recommended one counts as 'too small' when
choosing the cure for vanishing gradients."""

INIT_EXCESS = 1.33
"""Measured Var(W) above this multiple of the recommended one counts as 'too large' when
choosing the cure for exploding gradients or saturation."""


ORDERED_CHI1 = 0.25
"""An activation whose recommended initializer gives its mean field a slope ``chi1`` below this
(each layer passes back under half of the gradient's std) has that variance deep in the ordered
phase: a larger variance, up to the critical one (``chi1 = 1``), is no init mismatch
(:func:`ordered_init`). Of depthlab's activations only the sigmoid (Glorot's variance: chi1
0.056) and the hardsigmoid (Glorot's: 0.028, critical 107x); gelu and swish at He's (0.5),
penalized_tanh at Glorot's (0.53), mish at He's (0.72) are above it."""


def recommended_init(activation: str) -> str | None:
    """The initializer recommended for ``activation`` (None when there is no rule)."""
    return RECOMMENDED_INIT.get(activation)


@functools.lru_cache(maxsize=64)
def ordered_init(activation: str) -> tuple[float, float] | None:
    """``(chi1, critical)`` where the recommended initializer's variance lies deep in the
    ordered phase of ``activation``'s mean field (zero biases, a square layer, whose
    ``sigma_w^2 = n Var(W)``: Glorot's 1, He's 2, LeCun's 1): ``chi1 = sigma_w^2
    E[f'(sqrt(q*) z)^2]`` at that ``sigma_w^2`` is below :data:`ORDERED_CHI1`, and ``critical``
    is the critical ``sigma_w^2`` (``chi1 = 1``, :func:`~depthlab.theory.meanfield.
    critical_sigma_w2`) as a multiple of it (sigmoid at Glorot's: chi1 = 0.0557, critical
    103x); None otherwise (also where no critical variance exists)."""
    rec = recommended_init(activation)
    if rec is None:
        return None
    from ..initializers import weight_variance
    from ..theory.meanfield import critical_sigma_w2, slope_chi1

    n = 1000  # any square layer: n Var(W) does not depend on n for these initializers
    try:
        sigma_w2 = n * weight_variance(rec, n, n)
        chi1 = slope_chi1(activation, sigma_w2)
        if not chi1 < ORDERED_CHI1:
            return None
        return float(chi1), float(critical_sigma_w2(activation) / sigma_w2)
    except (TypeError, ValueError):
        return None


def init_upper_ratio(activation: str) -> float:
    """The largest initial Var(W), as a multiple of the recommended initializer's, that is not
    too large for ``activation``: the critical variance's multiple (:func:`ordered_init`) where
    the recommended one is deep in the ordered phase (sigmoid: 103), else 1."""
    ordered = ordered_init(activation) if isinstance(activation, str) else None
    return max(1.0, ordered[1]) if ordered else 1.0


def init_trainable_depth(activation: str) -> float:
    """Schoenholz et al. (2017)'s trainable depth ``6 xi = -6 / ln chi1`` at the recommended
    initializer's variance where that lies deep in the ordered phase of ``activation``'s mean
    field (:func:`ordered_init`; sigmoid at Glorot's: chi1 = 0.056, 2.08 layers), else ``inf``
    (no mean-field limit on the depth the init cure can train)."""
    ordered = ordered_init(activation) if isinstance(activation, str) else None
    if not ordered or not 0.0 < ordered[0] < 1.0:
        return math.inf
    return -6.0 / math.log(ordered[0])


def _hidden_depth(config: dict[str, Any]) -> int | None:
    """The number of hidden layers of a plain network's ``config`` (``len(sizes) - 2``); None
    for a residual one (the skip path carries the gradient past the blocks) or unknown sizes."""
    sizes = config.get("sizes")
    if config.get("residual") or not isinstance(sizes, list | tuple) or len(sizes) < 3:
        return None
    return len(sizes) - 2


def init_too_shallow(activations: Any, config: dict[str, Any]) -> str:
    """Why the recommended initializer cannot be the cure of this plain network (``config``):
    for some activation among ``activations`` (one name or several) its variance lies deep in
    the ordered phase and the network has more hidden layers than the mean field's trainable
    depth there (:func:`init_trainable_depth`), so gradients still vanish by ``sqrt(chi1)`` per
    layer (sigmoid at Glorot's: 1-4 hidden layers of 64, digits, sgd 0.01, 200 steps: val acc
    0.51, 0.14, 0.067, 0.061; with batch norm 0.52, 0.73, 0.69, 0.73); ``""`` when it can."""
    depth = _hidden_depth(config)
    names = [activations] if isinstance(activations, str) else list(activations or ())
    for name in dict.fromkeys(names):
        limit = init_trainable_depth(name)
        if depth is not None and depth > limit:
            chi1 = ordered_init(name)[0]
            return (f"{recommended_init(name)}'s variance puts {name} layers deep in the ordered "
                    f"phase (chi1 = {chi1:.2g}: each passes back {math.sqrt(chi1):.2g}x of the "
                    f"gradient's std), trainable to about 6 xi = {limit:.2g} layers by the mean "
                    f"field (Schoenholz et al. 2017), fewer than this network's {depth} hidden "
                    "layers, so that init would not cure it")
    return ""


def mean_field_note(activation: str) -> str:
    """What the mean field predicts at the recommended variance where it is deep in the ordered
    phase (:func:`ordered_init`): ``"at glorot_uniform's variance the mean field has a sigmoid
    layer pass back 0.24x of the gradient's std (chi1 = 0.056, the ordered phase); the critical
    variance (chi1 = 1) is 103x it"``; else ``""``."""
    ordered = ordered_init(activation) if isinstance(activation, str) else None
    if not ordered:
        return ""
    chi1, critical = ordered
    return (f"at {recommended_init(activation)}'s variance the mean field has a {activation} "
            f"layer pass back {math.sqrt(chi1):.2g}x of the gradient's std (chi1 = {chi1:.2g}, "
            f"the ordered phase); the critical variance (chi1 = 1) is {critical:.3g}x it")


def _too_large(activation: str, init_ratio: float) -> bool:
    """Whether weights of ``init_ratio`` times the recommended variance are too large for
    ``activation``: above :data:`INIT_EXCESS` and above :func:`init_upper_ratio` (a sigmoid
    net's N(0, 1) weights at width 64, 64x Glorot's, are below its critical 103x: Glorot's
    variance moves it deep into the ordered phase, a measured 'did not help')."""
    return init_ratio > max(INIT_EXCESS, init_upper_ratio(activation))


def _init_fix(activation: str, why: str, derived: bool = False) -> tuple[dict[str, Any], str]:
    """``{"init": rec}`` and its sentence; ``derived``: ``why`` states what the variance was
    derived to do, which is qualified where it was derived for other units (sigmoid)."""
    rec = recommended_init(activation)
    caveat = _not_derived_for(activation) if derived else ""
    if caveat:
        why = f"{why.rstrip('.')} ({INIT_DERIVATION[rec][0]}; {caveat})."
    return {"init": rec}, f"Initialize with {rec}: {why}"


PER_LAYER_INIT = "matched"
"""The ``init`` of a cure that re-initializes each hidden layer with the initializer recommended
for its own activation (:func:`per_layer_init`; a network of several activations), as the torch
doctor's ``matched`` re-initialization does."""


def several(layers: dict[int, str] | None) -> bool:
    """Whether ``layers`` (hidden layer -> its activation) holds several activations."""
    return bool(layers) and len(set(layers.values())) > 1


def per_layer_init(layers: dict[int, str], why: str, derived: bool = False
                   ) -> tuple[dict[str, Any], str]:
    """``{"init": "matched"}`` and its sentence, for a network whose hidden layers use several
    activations: each layer ``k`` re-initialized with ``recommended_init(layers[k])`` (He's
    ``Var(W) = 2 / fan_in`` for a relu layer, Glorot's ``2 / (fan_in + fan_out)`` for a tanh or
    sigmoid one, LeCun's ``1 / fan_in`` for selu), each layer named with its activation and
    initializer; one initializer for the whole network (the first layer's) is wrong for the
    others. ``derived``: as :func:`_init_fix`, the caveats of the activations the variance was
    not derived for."""
    # (an activation outside the registry, a torch model's Hardtanh: the initializer of its
    # kin, torch's "matched" re-initialization)
    named = "; ".join(f"layer {k} ({a}): {recommended_init(a) or 'the one matched to it'}"
                      for k, a in sorted(layers.items()))
    text = (f"Initialize each hidden layer with the initializer recommended for its own "
            f"activation ({named}): {why}")
    if derived:
        caveats = [f"{a}: {c}" for a in dict.fromkeys(layers.values())
                   if (c := _not_derived_for(a))]
        if caveats:
            text = f"{text.rstrip('.')} ({'; '.join(caveats)})."
    return {"init": PER_LAYER_INIT}, text


def _layers_too_large(layers: dict[int, str], ratios: dict[int, float]) -> bool:
    """Whether some layer's initial variance (``ratios``: each over its own activation's
    recommended one) is too large for its own activation (:func:`_too_large`)."""
    return any(_too_large(layers[k], r) for k, r in ratios.items() if k in layers)


def _bn(why: str) -> tuple[dict[str, Any], str]:
    return {"batchnorm": True}, f"Add batch normalization before each nonlinearity: {why}"


def for_vanishing(activation: str, init_ratio: float, config: dict[str, Any],
                  layers: dict[int, str] | None = None) -> tuple[dict[str, Any], str]:
    """Cure for vanishing gradients: a variance-preserving init when the weights are too small
    for the activation, batch normalization otherwise (e.g. sigmoid: f' <= 1/4 per layer).
    ``layers``: each hidden layer's activation where they are several (:func:`several`):
    the init is each layer's own (:func:`per_layer_init`). Not the init where the mean field
    says it cannot train this depth (:func:`init_too_shallow`: a 10x64 N(0, 0.01^2) sigmoid
    net was prescribed Glorot's, val acc 0.061 -> 0.061)."""
    if config.get("batchnorm"):
        if not config.get("residual") and _equal_widths(config):
            return {"residual": True}, ("Add residual connections: the identity path carries "
                                        "the gradient past every layer (He et al. 2016).")
        return {}, "Batch normalization is already on; reduce depth or add skip connections."
    why = "its variance keeps the back-propagated gradient's variance constant from layer to layer."
    shallow = init_too_shallow(list(layers.values()) if several(layers) else activation, config)
    if several(layers) and init_ratio < INIT_SHORTFALL and not shallow \
            and any(recommended_init(a) for a in layers.values()):
        return per_layer_init(layers, why.replace("its variance keeps", "their variances keep"),
                              derived=True)
    if recommended_init(activation) and init_ratio < INIT_SHORTFALL and not shallow:
        return _init_fix(activation, why, derived=True)
    return _bn("it rescales each layer's back-propagated gradient by 1/std of its input, "
               "so the gradient no longer shrinks by f'(s) * ||W|| at every layer"
               + (f"; {shallow}." if shallow else "."))


def for_shifted_units(activation: str) -> tuple[dict[str, Any], str]:
    """Cure for vanishing gradients whose layers start with nearly every unit on the flat side
    of a rectifier (``leaky_relu``, ``elu``, ``gelu``, ...) because of their biases: zero
    biases (batch normalization, the general cure, also removes the shift, at a cost)."""
    return {"bias_init": "zeros"}, (
        f"Initialize biases at zero: they push the units onto the flat side of {activation}, "
        "whose small slope there shrinks the gradient at every layer; at zero, half of the "
        "units start on the steep side.")


def for_exploding(activation: str, init_ratio: float, config: dict[str, Any],
                  layers: dict[int, str] | None = None,
                  ratios: dict[int, float] | None = None) -> tuple[dict[str, Any], str]:
    """Cure for exploding gradients: smaller (recommended) init, else batch normalization; in a
    plain batch-normalized network (where batch norm itself makes gradients grow about
    sqrt(pi/(pi-1)) per ReLU layer, Yang et al. 2019) residual connections. ``layers`` (each
    hidden layer's activation, several) and ``ratios`` (each layer's initial variance over its
    own activation's recommended one): the init cure when some layer's is too large for its
    own activation, each layer re-initialized for its own (:func:`per_layer_init`), unless the
    mean field says that init cannot train this depth (:func:`init_too_shallow`)."""
    shallow = init_too_shallow(list(layers.values()) if several(layers) else activation, config)
    if several(layers) and not config.get("batchnorm") and not shallow \
            and _layers_too_large(layers, ratios or {}):
        return per_layer_init(layers, "the current weights amplify the gradient at every layer.")
    if not several(layers) and recommended_init(activation) and not shallow \
            and _too_large(activation, init_ratio) and not config.get("batchnorm"):
        return _init_fix(activation, "the current weights amplify the gradient at every layer.")
    if not config.get("batchnorm"):
        return _bn("it normalizes each layer's scale, bounding the per-layer gradient gain"
                   + (f"; {shallow}." if shallow else "."))
    if not config.get("residual") and _equal_widths(config):
        return {"residual": True}, (
            "Add residual connections: in a plain batch-normalized network batch norm itself "
            "makes the gradient grow at every layer (Yang et al. 2019); the identity path "
            "bounds the growth.")
    return {}, "Lower the learning rate or clip gradients."


def for_bounded_logits(output_activation: str, loss: str) -> tuple[dict[str, Any], str]:
    """Cure for a loss on logits fed a bounded output activation's values: no output
    activation (the loss applies its own softmax or sigmoid)."""
    return {"output_activation": None}, (
        f"Remove output_activation={output_activation!r}: {loss} takes logits and applies "
        f"{'softmax' if loss == 'cross_entropy' else 'the sigmoid'} itself, so the network's "
        f"last Dense layer must output unbounded logits.")


def for_exploding_activations(config: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """Cure for a residual stream whose variance grows with depth: batch normalization (in a
    pre-activation block it normalizes the branch's input, so each block adds a bounded
    variance: the stream's variance grows linearly with depth, not geometrically)."""
    return _bn("in each pre-activation block it normalizes the branch's input, so every block "
               "adds a bounded variance to the stream (its std grows as the square root of the "
               "depth instead of geometrically; He et al. 2016's blocks: BN -> ReLU -> weight).")


def for_saturation(activation: str, init_ratio: float, config: dict[str, Any],
                   layers: dict[int, str] | None = None,
                   ratios: dict[int, float] | None = None) -> tuple[dict[str, Any], str]:
    """Cure for saturated units: the recommended init when the weights are too large, else
    batch normalization (keeps pre-activations in the linear range). ``layers``, ``ratios``:
    as :func:`for_exploding` (several activations: each layer's own init). Not the init where
    the mean field says it cannot train this depth (:func:`init_too_shallow`: a 5x128 N(0, 1)
    sigmoid net was prescribed Glorot's, val acc 0.317 -> 0.061)."""
    shallow = init_too_shallow(list(layers.values()) if several(layers) else activation, config)
    if several(layers) and not config.get("batchnorm") and not shallow \
            and _layers_too_large(layers, ratios or {}):
        return per_layer_init(layers, "smaller initial weights keep pre-activations out of the "
                                      "flat tails of the nonlinearities.")
    if not several(layers) and recommended_init(activation) and not shallow \
            and _too_large(activation, init_ratio) and not config.get("batchnorm"):
        return _init_fix(activation, "smaller initial weights keep pre-activations out of the "
                                     "flat tails of the nonlinearity.")
    if not config.get("batchnorm"):
        return _bn("it keeps pre-activations near zero mean and unit variance, where "
                   "f'(s) is large (Ioffe & Szegedy 2015)"
                   + (f"; {shallow}." if shallow else "."))
    return {"activation": "relu", "init": "he_normal", "activation_kwargs": {}}, (
        "Use a non-saturating activation (ReLU with He initialization).")


def for_dead_relu(init_ratio: float, dead_at_init: float, dead_threshold: float,
                  lr: float, config: dict[str, Any],
                  worst_layer: tuple[float, float] | None = None,
                  flat: str | None = None, layers: dict[int, str] | None = None,
                  large_updates: bool = False) -> tuple[dict[str, Any], str]:
    """Cure for dead rectifiers: a zero bias, the He init, a smaller learning rate (units died
    during training) or a leaky rectifier.

    ``flat``: the name of an activation whose derivative is 0 everywhere (the Heaviside
    ``step``): no bias, init or learning rate gives its layers a gradient, only another
    activation does (leaky_relu, as for rectifiers off from the start).

    ``worst_layer``: the most-dead layer's dead fraction ``(at initialization, at the end)``.
    "Units died during training" (the smaller learning rate) needs more than half of that
    layer's dead units at the end to have died after initialization; otherwise they were off
    from the start, as in deep He-initialized ReLU nets with zero biases, whose examples'
    representations grow correlated with depth (the ReLU correlation map's fixed point c* = 1),
    so a unit is off for every example of a batch more and more often (digits, width 64:
    ~24% of a layer at depth 8, ~36% at depth 16, the most-dead layer, 20 seeds): a 28%-dead
    layer at initialization that ended 31% dead was told "large updates pushed their
    pre-activations negative".

    ``layers``: each hidden layer's activation where they are several: the He re-initializations
    are each layer's own initializer (:func:`per_layer_init`; He's for a tanh layer was wrong).

    ``large_updates``: the learning rate's first or probed updates rewrote >= 10% of the
    weights (the lr_too_high rule's finding): units that were alive at initialization and died
    then were killed by those updates, whatever the init's shortfall, so the cure is the
    smaller learning rate (a Glorot-initialized 64-16-16-10 relu net at lr 2, 0.6x He's
    variance: He's init 'did not help', val acc 0.12 -> 0.12, lr / 10 took it to 0.96). The
    units' death is judged on the most-dead layer (``worst_layer``: more than half of its dead
    units, ``end - start > end / 2``, died after initialization), not on ``dead_at_init``, the
    largest fraction of any layer at initialization, which is read only when ``worst_layer``
    is unknown."""
    if flat is not None:
        return {"activation": "leaky_relu", "activation_kwargs": {}}, (
            f"Use leaky_relu: {flat}'s derivative is 0 for every input, so back-propagation "
            "cannot train the layers below the output; leaky_relu's is non-zero everywhere.")
    start, end = worst_layer if worst_layer is not None else (math.nan, math.nan)
    known = math.isfinite(start) and math.isfinite(end)
    off_from_start = known and end - start <= end / 2
    # the most-dead layer's own units (another layer's 31% at initialization vetoed the
    # smaller rate for a top layer that went 16% -> 100% dead under updates of 0.24 of the
    # weights' norm: He's init did not help, val acc 0.061 -> 0.061, lr / 10 reached 0.41)
    died = not off_from_start if known else dead_at_init <= dead_threshold
    # units alive at step 0 that large updates killed: the smaller rate whatever the biases
    # (non-zero biases did not hold them off); units off from the start: the zero bias below
    if large_updates and died:
        return {"lr": lr / 10.0}, ("Units died during training: large updates pushed their "
                                   "pre-activations negative for every input; use a 10x "
                                   "smaller learning rate.")
    if not config.get("batchnorm") and not _zero_biases(config.get("bias_init", "zeros")):
        return {"bias_init": "zeros"}, "Initialize biases at zero so units start active."
    if several(layers) and init_ratio < INIT_SHORTFALL and not config.get("batchnorm"):
        why = (f"with weights of {init_ratio:.2g}x their variances the signal shrinks at "
               "every layer, so the pre-activations of the top layers are too small to keep "
               "units active.")
        return per_layer_init(layers, why)
    if dead_at_init > dead_threshold and init_ratio < INIT_SHORTFALL:
        return {"init": "he_normal"}, ("Initialize with he_normal so that pre-activations are "
                                       "not too small to recover.")
    if init_ratio < INIT_SHORTFALL and not config.get("batchnorm"):
        # weights too small (without batch norm to rescale them): the signal shrinks at every
        # layer, so the top layers' pre-activations are tiny and the biases' first updates
        # decide their sign (N(0, 0.05) relu weights, 10 layers, lr 0.01: 20% dead at init,
        # 89% after 200 steps at a loss of ln 10; "a 10x smaller learning rate" did not help)
        return {"init": "he_normal"}, (
            f"Initialize with he_normal: with weights of {init_ratio:.2g}x its variance the "
            "signal shrinks at every layer, so the pre-activations of the top layers are too "
            "small to keep units active once the biases move.")
    if off_from_start:
        return {"activation": "leaky_relu", "activation_kwargs": {}}, (
            f"The units were already off at initialization ({100 * start:.0f}% of the layer, "
            f"{100 * end:.0f}% at the end): deep ReLU layers start with many units off for "
            "every example, the examples' representations growing correlated with depth. Use "
            "leaky_relu: its negative slope keeps a gradient flowing to inactive units.")
    if died:  # the most-dead layer's units died in training (a 16-wide layer 6% -> 100%
        # at SGD lr 2 beside one 31% dead at initialization was told leaky_relu)
        return {"lr": lr / 10.0}, ("Units died during training: large updates pushed their "
                                   "pre-activations negative for every input; use a 10x "
                                   "smaller learning rate.")
    return {"activation": "leaky_relu", "activation_kwargs": {}}, (
        "Use leaky_relu: its negative slope keeps a gradient flowing to inactive units.")


def for_mean_shift(init_ratio_tanh: float, names: str = "sigmoid",
                   mean: float = 0.5, bounded: bool = True) -> tuple[dict[str, Any], str]:
    """Cure for non-zero-centred activations: tanh (with Glorot init if needed). ``names``:
    the shifted layers' activations, ``mean`` the largest mean activation measured; the top
    layer's saturation (Glorot & Bengio 2010) is named only for a ``bounded`` activation (a
    softplus net's mean of 0.92 was told "a sigmoid's mean output near 0.5")."""
    changes: dict[str, Any] = {"activation": "tanh", "activation_kwargs": {}}
    if not 0.25 <= init_ratio_tanh <= 4.0:
        changes["init"] = "glorot_uniform"
    then = (" and drives the top layer into saturation (Glorot & Bengio 2010)" if bounded
            else "")
    return changes, (f"Use a zero-centred activation (tanh): the {names} layers' mean output "
                     f"({mean:.2g}) shifts every next layer's input{then}.")


INIT_DERIVATION: dict[str, tuple[str, tuple[str, ...]]] = {
    "he_normal": ("He et al. (2015)'s Var(W) = 2 / fan_in, derived for ReLU units",
                  ("relu",)),
    "glorot_uniform": ("Glorot & Bengio (2010)'s Var(W) = 2 / (fan_in + fan_out), derived in "
                       "the linear regime of units with f(0) = 0 and f'(0) = 1",
                       ("tanh", "softsign", "identity", "hardtanh")),
    "lecun_normal": ("Var(W) = 1 / fan_in, which keeps SELU units at their fixed point of "
                     "mean 0 and variance 1 (Klambauer et al. 2017)", ("selu",)),
}
"""What each recommended initializer's variance was derived for: its sentence and the
activations it was derived for (others share the recommendation without the derivation)."""


def linear_regime_factor(activation: str) -> float:
    """``1 / E[f'(0)^2]`` (the mean of the squared one-sided slopes at 0): the multiple of a
    Glorot variance that keeps variances through a layer in ``activation``'s linear regime
    (Xu et al. 2016; sigmoid 16, tanh 1); NaN when unknown."""
    from ..theory.taylor import taylor

    try:
        return float(taylor(activation, order=1).weight_variance_factor_vs_tanh)
    except (TypeError, ValueError):
        return float("nan")


def _not_derived_for(activation: str) -> str:
    """``""`` where the recommended initializer's variance was derived for ``activation``
    (:data:`INIT_DERIVATION`), else what it shares: ``"recommended for X units too"``, with the
    linear-regime factor where the slope at 0 is not 1 (sigmoid: 16x)."""
    rec = recommended_init(activation)
    if rec not in INIT_DERIVATION or activation in INIT_DERIVATION[rec][1]:
        return ""
    text = f"recommended for {activation} units too"
    factor = linear_regime_factor(activation) if rec == "glorot_uniform" else float("nan")
    if factor == factor and abs(factor - 1.0) > 0.1:  # not NaN, and the slope at 0 is not 1
        text += (f", though {activation}'s slope at 0 makes its linear regime keep variances "
                 f"at {factor:.3g}x this variance (Xu et al. 2016)")
    note = mean_field_note(activation)
    return f"{text}; {note}" if note else text


def init_caveat(activation: str) -> str:
    """The caveat of :func:`for_init_mismatch` where the recommended initializer is Glorot's
    but ``activation``'s slope at 0 is not 1, so its linear regime keeps variances at another
    multiple of Glorot's (:func:`linear_regime_factor`, off 1 by more than 10%): ``"recommended
    for sigmoid units too, though sigmoid's slope at 0 makes its linear regime keep variances
    at 16x this variance (Xu et al. 2016)"``; else ``""`` (the torch doctor's cure says it
    too)."""
    rec = recommended_init(activation)
    if rec != "glorot_uniform" or activation in INIT_DERIVATION[rec][1]:
        return ""
    factor = linear_regime_factor(activation)
    return _not_derived_for(activation) if factor == factor and abs(factor - 1.0) > 0.1 else ""


def for_init_mismatch(activation: str, layers: dict[int, str] | None = None
                      ) -> tuple[dict[str, Any], str]:
    """Cure for a mismatched initializer: the recommended one, with what its variance was
    derived for (it was "the variance derived for sigmoid units", which Glorot's is not: the
    sigmoid's slope at 0 is 1/4, and its linear regime asks 16x that variance). ``layers``
    (each hidden layer's activation, several): each layer's own (:func:`per_layer_init`; a
    relu layer's He variance was found wanting and Glorot's prescribed for it)."""
    if several(layers):
        return per_layer_init(layers, "each variance is the one derived for, or recommended "
                                      "for, that layer's units.", derived=True)
    rec = recommended_init(activation)
    why = INIT_DERIVATION[rec][0] if rec in INIT_DERIVATION else (
        f"the variance recommended for {activation} units")
    caveat = _not_derived_for(activation)
    return {"init": rec}, f"Use {rec}, {why}" + (f"; {caveat}" if caveat else "") + "."


ABSURD_LR = 1e7
"""A learning rate at least this many times the optimizer's usual one (torch's default: SGD
0.001, so 1e4 and above; Adadelta 1.0, 1e7) is past any that trains: a divergence there is
prescribed the usual rate, not a 10x smaller one (lr 1e300 was told 1e299, lr 1e38 1e37;
neither helped)."""


STEP_RATIO_LIMIT = 0.1
"""The first update's ``||dW|| / ||W||`` (median over layers) that a too-high learning rate's
cure brings it to or below: lr_too_high's threshold (``rules.UPDATE_RATIO_HIGH``). An SGD
step's size follows the gradient, which grows after an overshooting first step (a sigmoid net
at sgd lr 1e4: 276 at step 1, 4200 at step 2; brought to 1 at step 1, lr 10, it did not learn,
to 0.1, lr 1, it did)."""

ADAPTIVE_STEP_RATIO_LIMIT = 1.0
""":data:`STEP_RATIO_LIMIT` for an adaptive optimizer (Adam, RMSprop, ...): its first step is
its largest, about ``lr / rms(W)`` per weight (3.5 lr at step 1, 7e-4 lr at step 2 for a tanh
net at Adam lr 1e3), so a first step up to the weights' norm is no overshoot: a gelu He net's
1.2 at Adam lr 0.3 is cured by 0.03 (0.12), which trains it (0.1 prescribed 0.003)."""


def for_divergence(lr: float, usual: float | None = None, update_ratio: float | None = None,
                   limit: float = STEP_RATIO_LIMIT) -> tuple[dict[str, Any], str]:
    """Cure for divergence: a 10x smaller learning rate; the optimizer's ``usual`` one (its
    default) where ``lr`` is :data:`ABSURD_LR` times that or more. ``update_ratio``: the
    first update's ``||dW|| / ||W||`` of a run that stayed finite (median over layers), when
    known: a 10x smaller rate cannot bring one above ``10 limit`` down to ``limit``, so the
    cure is :func:`lr_step_down`'s, as :func:`for_lr_too_high`'s (a tanh net at sgd lr 1e6
    stayed finite, 3.6e5x its start; 1e5 and the usual 1e-3 did not help, 0.1 did)."""
    factor = lr_step_down(update_ratio, limit) if update_ratio is not None else 10.0
    if factor > 10.0:
        return {"lr": lr / factor}, (
            f"Use a {_decades(factor)}x smaller learning rate ({lr / factor:g}): "
            + _scaled_reason(update_ratio, factor, limit))
    if usual is not None and usual > 0 and lr >= ABSURD_LR * usual:
        decades = math.log10(lr / usual)
        return {"lr": usual}, (f"Use the optimizer's usual learning rate ({usual:g}): {lr:g} "
                               f"is {decades:.0f} decades above it, so a 10x smaller one "
                               f"({lr / 10.0:g}) diverges too.")
    return {"lr": lr / 10.0}, f"Use a 10x smaller learning rate ({lr / 10.0:g})."


def for_divergence_at_init(activation: str, config: dict[str, Any], matched: str | None,
                           layers: dict[int, str] | None = None
                           ) -> tuple[dict[str, Any], str] | None:
    """Cure for a loss already non-finite on the first mini-batch, before any update (no
    learning rate changes that loss: the initial weights overflow the forward pass): the
    initializer recommended for ``activation``, or batch normalization where the network
    already has that initializer (``matched``); None where neither applies."""
    why = "the loss is not finite before any update, so the initial weights overflow"
    if several(layers) and not matched and any(recommended_init(a) for a in layers.values()):
        return per_layer_init(layers, why + "; these initializers keep the activations' "
                                            "variance from layer to layer.", derived=True)
    if recommended_init(activation) and not matched:
        return _init_fix(activation, why + "; this initializer keeps the activations' variance "
                                            "from layer to layer.", derived=True)
    if not config.get("batchnorm"):
        return _bn(why + "; normalizing each layer's pre-activations bounds them.")
    return None


def for_bn_drift(config: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """Cure for lagging batch-norm running statistics: whole-training-set (population)
    statistics, or a larger EMA momentum if already on population statistics."""
    if config.get("bn_inference", "ema") != "population":
        return {"bn_inference": "population"}, (
            "Use population statistics computed in one pass over the training set instead of "
            "the lagging moving average.")
    mom = config.get("bn_momentum", 0.01)
    if isinstance(mom, str):  # "cumulative": the plain mean of every batch's statistics
        return {"bn_momentum": 0.1}, (
            "Use a moving average of the batch statistics (batch-norm momentum 0.1) instead "
            "of their cumulative mean, so the running statistics follow training.")
    return {"bn_momentum": min(1.0, float(mom) * 10.0)}, (
        "Use a 10x larger batch-norm momentum so the running statistics follow training.")


def for_population_drift() -> tuple[dict[str, Any], str]:
    """No cure in the network for a drift under ``bn_inference = "population"``: those
    statistics are the whole training set's under the final weights (the trainer computes
    them at the end), so the probe (held-out) batch differs from the training data; the
    momentum cure of :func:`for_bn_drift` acts on running statistics inference does not use
    (a verification read 'BN drift 2.134 -> 2.134: did not help')."""
    return {}, ("No network setting cures this: population statistics are the whole training "
                "set's under the final weights, so the probe (held-out) examples are "
                "distributed unlike the training examples; check that both come from one "
                "distribution and are standardized with the training set's statistics.")


def _zero_biases(bias_init: Any) -> bool:
    """Whether ``bias_init`` already sets every bias to 0: ``zeros`` by any spelling or as an
    object, ``constant`` with value 0 (the name's default) -- where ``{"bias_init": "zeros"}``
    would change nothing (it was prescribed for ``dl.initializers.Zeros()``, a no-op cure; so
    it was with batch normalization, whose hidden Dense layers have no bias)."""
    from ..theory.predict import has_zero_biases

    return has_zero_biases(bias_init)


def _equal_widths(config: dict[str, Any]) -> bool:
    sizes = config.get("sizes") or []
    hidden = sizes[1:-1]
    return len(hidden) >= 2 and all(h == hidden[0] for h in hidden)


def lr_step_down(update_ratio: float | None, limit: float = STEP_RATIO_LIMIT) -> float:
    """The factor to divide a too-high learning rate by: ``10^k``, ``k = max(1,
    ceil(log10(r / limit)))`` for the first update's ratio ``r``, the smallest power of 10 that
    brings ``r`` to ``limit`` (:data:`STEP_RATIO_LIMIT`, or :data:`ADAPTIVE_STEP_RATIO_LIMIT`)
    or below, as the first step scales with the learning rate (a first SGD step is ``lr x`` the
    initial gradient, an Adam step about ``lr`` per weight): 10 for ``r`` up to ``10 limit``
    (or unknown), 1e7 for a tanh net's 1.6e5 at sgd lr 1e6 on digits, 64-32-32-10 (10x
    smaller: 1.6e4, train loss 9.8e5 -> 9.0e4, 'did not help'; lr 0.1: 0.016, train loss
    0.15, val acc 0.44 -> 0.94)."""
    if update_ratio is None or not math.isfinite(update_ratio) or update_ratio <= 0:
        return 10.0
    k = math.ceil(math.log10(update_ratio / limit) - 1e-9)
    return 10.0 ** max(1, k)


def _decades(factor: float) -> str:
    """A power of 10 written ``1e7``."""
    return f"1e{round(math.log10(factor))}"


def _scaled_reason(update_ratio: float | None, factor: float, limit: float) -> str:
    """Why a learning rate ``factor`` (> 10) times smaller: the first update's ratio."""
    return (f"its first update changed the weights by {update_ratio:.2g}x their norm, and a "
            f"step grows with the learning rate, so a 10x smaller one still rewrites them; "
            f"{_decades(factor)}x smaller brings it to about {update_ratio / factor:.2g} of "
            f"their norm (at most {limit:g}; about 1e-3 per step is healthy).")


def for_lr_too_high(lr: float, update_ratio: float, first_ratio: float | None = None,
                    limit: float = STEP_RATIO_LIMIT) -> tuple[dict[str, Any], str]:
    """Cure for too-large steps: a learning rate :func:`lr_step_down` of ``first_ratio`` (the
    first update's ``||dW|| / ||W||``, which scales with the rate) and ``limit`` times smaller:
    10x for one up to ``10 limit``, or unknown. ``update_ratio``: the largest ratio
    (lr_too_high's metric)."""
    factor = lr_step_down(first_ratio, limit)
    if factor > 10.0:
        return {"lr": lr / factor}, (
            f"Use a {_decades(factor)}x smaller learning rate ({lr / factor:g}): "
            + _scaled_reason(first_ratio, factor, limit))
    return {"lr": lr / 10.0}, (
        f"Use a 10x smaller learning rate ({lr / 10.0:g}): updates of {update_ratio:.2g} of the "
        "weights' norm per step overshoot; about 1e-3 per step is a healthy size.")


def for_unscaled_inputs() -> tuple[dict[str, Any], str]:
    """Cure for unscaled inputs: standardize them with the training set's statistics (the
    doctor's and ``fit``'s ``standardize=True``; ``[data] standardize = true`` in a config)."""
    return {"standardize": True}, (
        "Standardize the inputs with the training set's statistics, (x - mean) / std per "
        "feature (LeCun et al. 1998): standardize=True in dl.doctor / fit, or [data] "
        "standardize = true in a config (validation and test inputs with the same mean and "
        "std).")


def for_unscaled_targets(inputs_too: bool = False) -> tuple[dict[str, Any], str]:
    """Cure for unscaled regression targets: train on ``(y - mean) / std`` per column (the
    training rows' statistics) and map predictions back (the doctor's
    ``standardize_targets=True``; ``fit`` has no such option: transform ``y`` before it).
    ``inputs_too``: the inputs are not standardized either: standardize both."""
    changes: dict[str, Any] = {"standardize_targets": True}
    if inputs_too:
        changes["standardize"] = True
    return changes, (
        "Standardize the regression targets with the training set's statistics, (y - mean) / "
        "std per column, and map the predictions back with pred * std + mean "
        "(standardize_targets=True in dl.doctor, [data] standardize_targets = true in a "
        "config; before fit, transform y_train and y_val alike)"
        + ("; and the inputs, which are not standardized either (standardize=True)."
           if inputs_too else "."))


def penalty_weakening(shrink: float, threshold: float = 4.0, most: int = 1000,
                      dominance: float = math.nan, dominance_threshold: float = 5.0,
                      l1_travel: float = math.nan) -> int:
    """The factor a too-strong penalty is divided by: the smallest power of 10, at least 10
    and at most ``most``, with ``ln(shrink) / factor <= ln(threshold)``. A penalty that holds
    the weights against a negligible data gradient shrinks them geometrically, ``ln(shrink)``
    proportional to its strength (SGD's ``(1 - lr (2 l2 + wd))`` per step), so the weaker one
    shrinks them less than the finding's ``threshold`` (``PENALTY_SHRINK``) over the same
    budget. 10x for the usual ~50-80x (``l2 = 1`` at SGD lr 0.01); ``weight_decay = 5`` at
    lr 0.05 shrank the weights 3e12x in 100 steps, and its 10x weaker 0.5 still 20x (loss at
    a constant prediction, "did not help"): 100x.

    ``dominance`` (an adaptive optimizer's: Adam and RMSprop move each weight ~lr per step
    whatever the gradient, so the shrink says little): the penalty's gradient over the data's
    at the end; the factor is then also at least ``dominance / dominance_threshold``, which
    brings it below the finding's ``PENALTY_DOMINANCE`` (Adam lr 1e-2, ``l2 = 10``: 1309x the
    data's; 10x and 100x weaker stayed at a constant prediction, 1000x trained).

    ``l1_travel`` (sgd with ``l1``): ``lr l1 T / std(W_0)``, how far the l1 pull alone moves
    each weight in the run's ``T`` steps, in initial weight stds; it moves them linearly, not
    geometrically, so the factor is also at least that: the weaker pull moves them less than
    their size (lr 0.05, ``l1 = 1``, 100 steps, std 0.25: 20, so 100x; ``l1 = 0.1`` still
    zeroed the weights)."""
    need = 1.0
    if shrink > threshold:
        need = math.log(shrink) / math.log(threshold) if math.isfinite(shrink) else math.inf
    if dominance >= dominance_threshold:  # NaN: not measured or not adaptive
        need = max(need, dominance / dominance_threshold)
    if l1_travel > 0:  # NaN: no l1, or an adaptive optimizer
        need = max(need, l1_travel)
    factor = 10
    while factor < most and need > factor:
        factor *= 10
    return factor


def for_penalty_too_strong(penalties: dict[str, float], shrink: float,
                           optimizer_kwargs: dict[str, Any] | None = None,
                           threshold: float = 4.0, dominance: float = math.nan,
                           dominance_threshold: float = 5.0, l1_travel: float = math.nan
                           ) -> tuple[dict[str, Any], str]:
    """Cure for a weight penalty that drove the weights to 0: each given penalty (``l1``,
    ``l2``, the optimizer's ``weight_decay``, kept in ``optimizer_kwargs`` with the others)
    :func:`penalty_weakening` times (10x, more when the weights shrank by more than
    ``threshold^10``, the finding's ``PENALTY_SHRINK`` to the 10th, an adaptive optimizer's
    ``dominance`` more than 10x its threshold, or sgd's ``l1_travel`` above 10) smaller."""
    factor = penalty_weakening(shrink, threshold, dominance=dominance,
                               dominance_threshold=dominance_threshold, l1_travel=l1_travel)
    smaller = {k: float(f"{v / factor:.12g}") for k, v in penalties.items()}
    named = ", ".join(f"{k} = {v:g}" for k, v in smaller.items())
    new: dict[str, Any] = {k: v for k, v in smaller.items() if k != "weight_decay"}
    if "weight_decay" in smaller:
        new["optimizer_kwargs"] = {**(optimizer_kwargs or {}),
                                   "weight_decay": smaller["weight_decay"]}
    return new, (
        f"Use a {factor}x weaker weight penalty ({named}): the penalty's pull towards 0 "
        f"outweighed the data's gradient, shrinking the weights {shrink:.3g}x until the output "
        "no longer depends on the input.")


ALPHA_DROP_SQ = (1.0507009873554804934193349852946 * 1.6732632423543772848170429916717) ** 2
"""``a'^2 = (lambda alpha)^2`` of SELU's constants: alpha dropout's dropped value squared."""


def dropout_gain(p: float, alpha: bool = False) -> float:
    """``g``: a dropout layer of rate ``p`` keeps ``1 / g`` of its output's variance as signal
    (the rest is noise; ``g - 1`` is noise over signal): inverted ``1 / (1 - p)``, alpha
    dropout ``(1 + p a'^2) / (1 - p)`` on an input at SELU's fixed point
    (:func:`depthlab.diagnosis.rules.dropout_noise`)."""
    return (1.0 + p * ALPHA_DROP_SQ) / (1.0 - p) if alpha else 1.0 / (1.0 - p)


def for_dropout_too_strong(rates: list[float], noise_limit: float, hidden: float,
                           input_rate: float, alpha: bool = False) -> tuple[dict[str, Any], str]:
    """Cure for dropout whose compounded noise buries the signal: one rate ``p'`` for the ``k``
    dropout layers such that ``g(p')^k - 1 <= noise_limit`` (:func:`dropout_gain`), rounded
    down to 0.01: inverted dropout ``p' = 1 - r^(-1)`` (6 layers: 0.1, noise 0.88), alpha
    dropout (``alpha``) ``p' = (r - 1) / (r + a'^2)``, ``r = (1 + noise_limit)^(1/k)`` (6
    layers: 0.02), as the hidden ``dropout`` where it is on (``hidden`` > 0, or neither rate is
    known) and as the ``input_dropout`` where that is on and larger."""
    k = len(rates)
    r = (1.0 + noise_limit) ** (1.0 / k)
    exact = (r - 1.0) / (r + ALPHA_DROP_SQ) if alpha else 1.0 - 1.0 / r
    new = math.floor(exact * 100.0) / 100.0
    changes: dict[str, Any] = {}
    if hidden > 0 or not input_rate > 0:
        changes["dropout"] = new
    if input_rate > new:
        changes["input_dropout"] = new
    noise = dropout_gain(new, alpha) ** k - 1.0
    if alpha:
        return changes, (
            f"Use dropout {new:g}: through {k} alpha dropout layers its noise compounds to "
            f"((1 + p (lambda alpha)^2)/(1 - p))^{k} - 1 = {noise:.2g}x the signal's variance, "
            "below the signal. Each alpha dropout layer sets a share p of its units to "
            "-lambda alpha = -1.758 and rescales, adding noise of p (1 + (lambda alpha)^2)/"
            "(1 - p) = 4.1 p/(1 - p) of the signal's variance, and these multiply layer after "
            "layer, so the top layers saw mostly noise and the network settled on a constant "
            "prediction.")
    return changes, (
        f"Use dropout {new:g}: through {k} dropout layers its noise compounds to "
        f"(1/(1 - p))^{k} - 1 = {noise:.2g}x the signal's variance, below the signal. Each "
        "inverted dropout layer multiplies its input by a mask of variance p/(1 - p), and "
        "these multiply layer after layer, so the top layers saw mostly noise and the "
        "network settled on a constant prediction.")


def for_lr_too_low(lr: float, factor: float, update_ratio: float) -> tuple[dict[str, Any], str]:
    """Cure for steps too small to train: the learning rate times ``factor`` (the smallest
    power of 10 that brings the largest update ratio to 1e-3 or more)."""
    new = float(f"{lr * factor:.12g}")  # 1e-6 x 100 is 1e-4, not 9.999999999999999e-05
    return {"lr": new}, (
        f"Use a {factor:g}x larger learning rate ({new:g}): updates of at most "
        f"{update_ratio:.2g} of the weights' norm per step leave the network where it started; "
        "about 1e-3 per step is a healthy size.")
