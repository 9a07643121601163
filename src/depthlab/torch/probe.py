"""``probe(model, x, y, loss_fn)``: per-layer statistics of a ``torch.nn.Module`` at one instant.

One forward of ``model(x)`` in the model's current mode (``train()`` or ``eval()``, as found),
``loss = loss_fn(output, y)``, and the gradients of the loss with respect to the parameters by
``torch.autograd.grad`` (``.grad`` attributes are left as found). Hooks
(:mod:`depthlab.torch.hooks`) measure on the way. Afterwards the model is exactly as found:
parameters, buffers (batch-norm running statistics are restored), train/eval mode of every
module, every ``.grad`` (the same tensor objects, or None), and the random number generators
(dropout draws are undone).

Table (``pandas.DataFrame``): columns ``step`` (0), ``layer``, ``module``, ``quantity``,
``value``. Layer 0 (module ``""``): ``loss`` and, when ``y`` holds class indices for an output
of shape ``(N, C, ...)`` with ``C >= 2``, ``acc``. Layers 1..L (see
:mod:`depthlab.torch.layers`), with ``s`` the layer's output, ``g = dL/ds``, ``W`` its
weights, ``a`` the output of the activation/normalization module that follows it, ``f'`` the
activation's derivative:

========================  =====================================================================
quantity                  definition (population statistics over all entries)
========================  =====================================================================
``pre_mean/pre_std``      mean and std (ddof = 0) of ``s``; ``pre_pK``: K-th percentile (NumPy's
                          ``linear`` rule)
``act_mean/act_std``      the same for ``a`` (``act_pK`` percentiles); only with a follower
``saturated_frac``        fraction of entries with ``|f'(s)| < SATURATION_RATIO * sup|f'|``
                          (bounded activations; ReLU6: only ``s > 0``, its ``s <= 0`` side
                          is inactive, not saturated)
``inactive_frac``         ReLU-family activations: fraction of entries with ``s <= 0`` (the
                          flat or negative side, as ``depthlab.probes.stats``; PReLU, CELU,
                          Hardswish included)
``dead_frac``             fraction of units (features; channels for convolutions) with
                          ``f'(s) == 0`` on every entry of the batch
``grad_pre_std``          std of ``g``; ``grad_pre_absmean``: mean of ``|g|``
``weight_std``            std of the entries of ``W`` (all >= 2-dim parameters of the layer)
``weight_grad_std``       std of ``dL/dW``; ``weight_grad_absmean``: mean of ``|dL/dW|``
``block_grad_std``        residual blocks (module = the block): std of ``dL/d(block output)``;
                          ``layer`` = the last layer inside the block
========================  =====================================================================

A module called several times in the pass pools all its calls. Outputs computed under
``torch.no_grad()`` have no gradient rows. A weight layer that the model's forward runs through
``torch.vmap`` (or ``torch.func.grad``) is measured on the tensor under the transform's wrapper
(every vmapped call pooled); the activation and normalization modules inside the transform are
not matched to it (no ``act_*`` rows). Under autocast, statistics are computed in float32.
``torch.utils.checkpoint(..., use_reentrant=True)`` refuses ``torch.autograd.grad``: then the
gradients come from ``loss.backward()`` into emptied ``.grad`` slots (the user's put back
after), with a warning: the layers it wraps ran their forward without gradients, so they have no
``grad_pre_*`` rows, and an activation applied there as a function (``torch.relu(h)``: found in
the autograd graph, which that forward does not build) no ``act_*`` rows; an activation module
there has them (``use_reentrant=False`` has them all, and so has a
:class:`~depthlab.torch.watch.Watch`, armed while the backward recomputes them).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

from ..probes.stats import PERCENTILES, check_percentiles, percentile_names
from ..validators import closest_name, keyword_hints
from .hooks import Recording
from .layers import (
    LayerInfo,
    MapCapture,
    _broadcast_vector,
    check_materialized,
    check_model,
    check_nonempty_weights,
    inputs_kept,
    is_norm,
    none_ran,
    own_weights,
    weight_modules,
)
from .train import (
    accuracy_output,
    binary_hits,
    binary_threshold,
    class_axis,
    one_hot_labels,
    out_of_memory,
)

COLUMNS = ("step", "layer", "module", "quantity", "value")
"""Columns of every depthlab.torch table."""


def rows_frame(rows: list[tuple[int, int, str, str, float]]) -> pd.DataFrame:
    """``(step, layer, module, quantity, value)`` tuples -> the tidy table (sorted by step and
    layer, stable)."""
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    df = df.astype({"step": "int64", "layer": "int64", "module": object, "quantity": object,
                    "value": "float64"})
    return df.sort_values(["step", "layer"], kind="stable", ignore_index=True)


LOSSES: dict[str, type[nn.Module]] = {
    "cross_entropy": nn.CrossEntropyLoss, "nll": nn.NLLLoss, "mse": nn.MSELoss,
    "l1": nn.L1Loss, "smooth_l1": nn.SmoothL1Loss, "huber": nn.HuberLoss,
    "bce_with_logits": nn.BCEWithLogitsLoss, "bce": nn.BCELoss,
}
"""Loss names ``probe``/``predict``/``doctor(loss_fn=...)`` and ``depthlab doctor --torch
--loss`` accept, each the
``torch.nn`` loss with its defaults (mean over the batch)."""


LOSS_ALIASES: dict[str, str] = {
    # the NumPy engine's names (train.loss) and torch's function and class names
    "ce": "cross_entropy", "categorical_cross_entropy": "cross_entropy",
    "cross_entropy_loss": "cross_entropy", "crossentropyloss": "cross_entropy",
    "nll_loss": "nll", "nllloss": "nll",
    "mean_squared_error": "mse", "mse_loss": "mse", "mseloss": "mse",
    "l1_loss": "l1", "l1loss": "l1", "mean_absolute_error": "l1", "mae": "l1",
    "smooth_l1_loss": "smooth_l1", "smoothl1loss": "smooth_l1",
    "huber_loss": "huber", "huberloss": "huber",
    "binary_cross_entropy_with_logits": "bce_with_logits",
    "bcewithlogitsloss": "bce_with_logits", "bce_with_logits_loss": "bce_with_logits",
    "binary_cross_entropy": "bce", "bceloss": "bce", "bce_loss": "bce",
}
"""Other spellings of the :data:`LOSSES` names (lower case, ``_`` for ``-``): the NumPy
engine's (``"ce"``, ``"mean_squared_error"``) and torch's (``F.binary_cross_entropy``, which
is ``nn.BCELoss`` on probabilities; ``"CrossEntropyLoss"``)."""


def loss_key(name: str) -> str | None:
    """The :data:`LOSSES` name that ``name`` spells (case-insensitive, ``-`` or a space as
    ``_``, :data:`LOSS_ALIASES`), or None."""
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    key = LOSS_ALIASES.get(key, key)
    return key if key in LOSSES else None


def loss_by_name(name: str) -> nn.Module:
    """The loss module of a :data:`LOSSES` name or one of its :data:`LOSS_ALIASES`; a
    ValueError naming the accepted ones for any other."""
    key = loss_key(name)
    if key is None:
        close = closest_name(name.strip().lower().replace("-", "_"),
                             [*LOSSES, *LOSS_ALIASES])  # an alias is said as its name
        hint = f" (did you mean {LOSS_ALIASES.get(close, close)!r}?)" if close else ""
        raise ValueError(f"unknown loss {name!r}{hint}; expected one of {', '.join(LOSSES)} "
                         "(or a callable loss_fn(output, target))")
    return LOSSES[key]()


def resolve_loss(loss_fn: Any) -> Any:
    """``loss_fn`` itself, or the loss module of a :data:`LOSSES` name given as a string
    (``"cross_entropy"``, ``"mse"``; :func:`loss_by_name`'s ValueError for another name);
    a TypeError for a loss module's class given in place of a module (``nn.CrossEntropyLoss``
    without parentheses: called as ``nn.CrossEntropyLoss(output, y)`` it took the output for
    its class weights and failed with 'Boolean value of Tensor with more than one value is
    ambiguous')."""
    if isinstance(loss_fn, type) and issubclass(loss_fn, nn.Module):
        raise TypeError(f"loss_fn is the class {loss_fn.__name__}; expected a loss module "
                        f"(an instance: {loss_fn.__name__}()) or a callable loss_fn(output, y)")
    if isinstance(loss_fn, str):
        return loss_by_name(loss_fn)
    _check_arity(loss_fn)
    return loss_fn


def _check_arity(loss_fn: Any) -> None:
    """A TypeError for a loss that needs more than the two arguments ``loss_fn(output, y)``
    gives it: ``nn.CTCLoss()`` (``input_lengths``, ``target_lengths``),
    ``nn.MarginRankingLoss``, ``nn.TripletMarginLoss``, ``nn.GaussianNLLLoss``, ``F.ctc_loss``
    (torch said 'CTCLoss.forward() missing 2 required positional arguments', after the
    forward); the line names the arguments and a ``lambda`` that supplies the rest."""
    import inspect

    if not callable(loss_fn):
        return
    try:
        params = inspect.signature(loss_fn.forward if isinstance(loss_fn, nn.Module)
                                   else loss_fn).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature
        return
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD,
             inspect.Parameter.KEYWORD_ONLY)
    need = [p.name for p in params if p.kind in kinds and p.default is inspect.Parameter.empty]
    if len(need) <= 2:
        return
    rest = ", ".join(need[2:])
    if isinstance(loss_fn, nn.Module):
        name = type(loss_fn).__name__
        wrap = f"loss_fn=lambda out, y: loss(out, y, {rest}), with loss your {name}"
    else:
        name = getattr(loss_fn, "__name__", type(loss_fn).__name__)
        module = getattr(loss_fn, "__module__", None)
        call = f"F.{name}" if module == F.__name__ else name
        wrap = f"loss_fn=lambda out, y: {call}(out, y, {rest})"
    raise TypeError(f"loss_fn is called as loss_fn(output, y), but {name} takes {len(need)} "
                    f"arguments ({', '.join(need)}); expected a callable of (output, y) that "
                    f"gives it the rest: {wrap}")


def call_model(model: nn.Module, x: Any) -> Any:
    """``model(*x)`` for a tuple/list of inputs, ``model(**x)`` for a dict, else ``model(x)``."""
    if isinstance(x, (tuple, list)):
        return model(*x)
    if isinstance(x, dict):
        return model(**x)
    return model(x)


def check_batch(x: Any) -> None:
    """A ValueError for an input batch without examples (a tensor input with 0 rows) or on
    the ``meta`` device (shapes without values): nothing would be measured."""
    inputs = x.values() if isinstance(x, dict) else x if isinstance(x, (tuple, list)) else (x,)
    for t in inputs:
        if isinstance(t, torch.Tensor) and t.device.type == "meta":  # (torch: 'Tensor.item()
            # cannot be called on meta tensors' from inside predict, or a device mismatch)
            raise ValueError("x is on the 'meta' device (a shape without values), so nothing "
                             "can be measured; expected a tensor of values on the model's "
                             "device")
        if isinstance(t, torch.Tensor) and t.dim() >= 1 and t.shape[0] == 0:
            raise ValueError(f"x is an empty batch (a tensor of shape {tuple(t.shape)}); "
                             "expected at least one example")


def check_loss(loss: Any) -> torch.Tensor:
    """The loss as a scalar floating tensor, or a ValueError/TypeError saying what was wrong."""
    if not isinstance(loss, torch.Tensor):
        raise TypeError(f"loss_fn must return a scalar torch.Tensor, got {type(loss).__name__}")
    if loss.numel() != 1:  # worded for Watch.step(loss) too, which has no loss_fn
        raise ValueError(f"the loss must be a scalar (one-element) tensor, got shape "
                         f"{tuple(loss.shape)}; reduce it over the batch (reduction='mean' or "
                         "'sum')")
    if not loss.is_floating_point():
        raise ValueError(f"loss must be a floating-point tensor, got dtype {loss.dtype}")
    return loss if loss.dim() == 0 else loss.reshape(())


def accuracy(output: Any, y: Any, ignore_index: int | None = None,
             axis: int = 1) -> torch.Tensor | None:
    """Fraction of argmax(output, dim=1) == y when ``y`` holds class indices for an output of
    shape ``(N, C, ...)``, ``C >= 2`` (``y`` of shape ``(N, ...)``), else None; ``axis=-1``:
    the arg-max over the last axis of ``(N, ..., C)`` scores (:func:`target_accuracy` reads
    the axis from the loss, :func:`~depthlab.torch.train.class_axis`). Targets that
    are no class (negative, ``>= C``, or the loss's ``ignore_index``, e.g. -100 for padding,
    read by :func:`loss_ignore_index`) are left out: ``acc = sum(hit & valid) / sum(valid)``.
    A label ``>= C`` that the loss took without an error is one it ignored, also where its
    ``ignore_index`` cannot be read (``lambda o, t: F.cross_entropy(o, t, ignore_index=255)``:
    the void label 255 of segmentation masks counted as a miss, acc 0.24 for 0.30). One
    column (``C = 1``) is a binary logit or probability, whose threshold is the loss's: no
    ``acc`` (its argmax is always 0, which gave the fraction of 0 labels, 0.49 where the
    logit's sign was right for 0.46)."""
    if not (isinstance(output, torch.Tensor) and isinstance(y, torch.Tensor)):
        return None
    if y.is_floating_point() or y.dtype == torch.bool or not output.is_floating_point():
        return None
    if axis == -1:
        if output.dim() != y.dim() + 1 or output.shape[:-1] != y.shape or output.shape[-1] < 2:
            return None
    elif output.dim() != y.dim() + 1 or output.shape[:1] + output.shape[2:] != y.shape \
            or output.shape[1] < 2:
        return None
    wide = torch.float32 if output.device.type == "mps" else torch.float64
    hit = output.detach().argmax(dim=axis) == y
    valid = labelled(y, output.shape[axis], ignore_index)
    return (hit & valid).to(wide).sum() / valid.to(wide).sum()


def labelled(y: torch.Tensor, classes: int, ignore_index: int | None = None) -> torch.Tensor:
    """The mask of the class-index labels ``y`` that name a class: ``0 <= y < classes`` and
    ``y != ignore_index`` (a label past the classes that the loss took without an error is one
    it ignored). The one rule of :func:`accuracy` and the doctor's ``train.evaluate``."""
    valid = (y >= 0) & (y < classes)
    if ignore_index is not None:
        valid &= y != ignore_index
    return valid


def target_accuracy(output: Any, y: Any, loss_fn: Any) -> torch.Tensor | None:
    """The ``acc`` row of a probe: the accuracy the doctor reads (``train.evaluate``), on the
    output tensor :func:`~depthlab.torch.train.accuracy_output` picks. Class indices:
    :func:`accuracy`; one-hot float rows of a ``CrossEntropyLoss`` or of a squared-error
    loss (``MSELoss``, ``HuberLoss``, ``SmoothL1Loss``; exact 0/1, one 1 per row or map
    position): the same, on their class indices (``dl.probe`` of a bridged network and the
    doctor scored them; this table had a loss row only); hard 0/1 targets of a binary
    cross-entropy (``BCEWithLogitsLoss``, ``BCELoss``, the functions): the share of outputs on
    the right side of the loss's threshold (0 for logits, 0.5 for probabilities), each column a
    label of its own. Soft targets and other losses: None."""
    threshold = binary_threshold(loss_fn)
    loss = (loss_fn, y)  # the parts of a tuple/dict output that the loss reads come first
    if threshold is not None:
        out = accuracy_output(output, y, threshold, loss)
        hits = binary_hits(out, y, threshold) if isinstance(out, torch.Tensor) else None
        if hits is None or hits[1] == 0:
            return None
        return torch.tensor(hits[0] / hits[1], dtype=torch.float64)
    labels = one_hot_labels(loss_fn, y)
    if labels is not None:
        y = labels
    scores = accuracy_output(output, y, None, loss)
    axis = 1
    if scores is output:  # (a part of a tuple or dict is not what the loss takes alone)
        axis = class_axis(output, y, loss_fn)
        if axis is None:
            return None
    return accuracy(scores, y, loss_ignore_index(loss_fn), axis)


def loss_ignore_index(loss_fn: Any) -> int | None:
    """The target value ``loss_fn`` ignores: its ``ignore_index`` attribute
    (``nn.CrossEntropyLoss(ignore_index=0)``, ``nn.NLLLoss``), or the keyword of a
    ``functools.partial`` (``partial(F.cross_entropy, ignore_index=0)``, nested partials and a
    partial of a loss module too), else None (the functions' default, -100, is no class
    anyway). A partial's keyword was not read: its padding targets (class 0) counted in
    ``acc`` (0.40 where the non-padding accuracy was 0.44)."""
    while True:
        value = getattr(loss_fn, "ignore_index", None)
        if value is not None or not isinstance(loss_fn, functools.partial):
            return value
        value = loss_fn.keywords.get("ignore_index")
        if value is not None:
            return value
        loss_fn = loss_fn.func


_ELEMENTWISE_LOSSES = (nn.MSELoss, nn.L1Loss, nn.SmoothL1Loss, nn.HuberLoss, nn.KLDivLoss,
                       nn.PoissonNLLLoss)
_ELEMENTWISE_FUNCTIONS = {F.mse_loss: "F.mse_loss", F.l1_loss: "F.l1_loss",
                          F.smooth_l1_loss: "F.smooth_l1_loss", F.huber_loss: "F.huber_loss",
                          F.kl_div: "F.kl_div", F.poisson_nll_loss: "F.poisson_nll_loss"}
# a binary cross-entropy takes targets of exactly the output's shape (torch raises 'Target
# size (torch.Size([4])) must be the same as input size (torch.Size([4, 1]))', no remedy)
_SAME_SHAPE_LOSSES = (nn.BCELoss, nn.BCEWithLogitsLoss)
_SAME_SHAPE_FUNCTIONS = {F.binary_cross_entropy: "F.binary_cross_entropy",
                         F.binary_cross_entropy_with_logits: "F.binary_cross_entropy_with_logits"}


def _check_elementwise_targets(output: Any, y: Any, loss_fn: Any) -> None:
    """For a loss that compares output and target entry by entry (``"mse"``, ``"l1"``,
    ``"smooth_l1"``, ``"huber"``, their modules and ``F.`` functions, also in a
    ``functools.partial``): a ValueError when ``y``'s shape is not the output's and
    broadcasting would pair every output with every target (a column output ``(N, 1)``
    against targets ``(N,)``: torch compared the ``N x N`` pairs, a loss of 1.22 where the
    examples' is 1.12, and only warned) or fails (torch's 'The size of tensor a (2) must
    match the size of tensor b (3)', naming neither)."""
    from .train import loss_parts

    fn, _ = loss_parts(loss_fn)
    same = isinstance(fn, _SAME_SHAPE_LOSSES)
    if isinstance(fn, _ELEMENTWISE_LOSSES + _SAME_SHAPE_LOSSES):
        name = type(fn).__name__
    else:
        try:
            name = _ELEMENTWISE_FUNCTIONS.get(fn) or _SAME_SHAPE_FUNCTIONS.get(fn)
            same = fn in _SAME_SHAPE_FUNCTIONS
        except TypeError:  # an unhashable callable
            name = None
    if name is None or not isinstance(output, torch.Tensor) or not isinstance(y, torch.Tensor) \
            or output.shape == y.shape:
        return
    hint = (f" (y.reshape({', '.join(map(str, output.shape))}))"
            if y.numel() == output.numel() else "")
    if same:
        raise ValueError(f"y has shape {tuple(y.shape)} but the model's output has shape "
                         f"{tuple(output.shape)}, and {name} takes targets of the output's "
                         f"shape; expected y of the output's shape{hint}")
    try:
        both = tuple(torch.broadcast_shapes(output.shape, y.shape))
    except RuntimeError:
        both = None
    if both == tuple(output.shape):
        return  # a target broadcast over the output (a constant per unit): torch's rule
    paired = (f"torch would broadcast them to {both}, pairing every output with every target"
              if both is not None else "they do not broadcast")
    raise ValueError(f"y has shape {tuple(y.shape)} but the model's output has shape "
                     f"{tuple(output.shape)}, and {name} compares them entry by entry "
                     f"({paired}); expected y of the output's shape{hint}")


def _check_target_type(y: Any, loss_fn: Any) -> None:
    """For a loss of :data:`LOSSES` (its module, ``F.`` function or name, also in a
    ``functools.partial``): an :class:`~depthlab.validators.ArgumentTypeError` (a TypeError
    and a ValueError) naming ``y``'s type or dtype when the loss cannot take it, before the
    loss runs. torch said 'cross_entropy_loss(): argument 'target' (position 2) must be
    Tensor, not numpy.ndarray', 'expected target dtype to be Long or Byte, but got Int' (class
    indices of dtype int32) and, for 0/1 targets of dtype int64 of a binary cross-entropy,
    'result type Float can't be cast to the desired output type Long', naming neither ``y``
    nor the remedy."""
    from ..validators import ArgumentTypeError
    from .train import binary_threshold, class_index_loss, loss_parts

    fn, _ = loss_parts(loss_fn)
    classes = class_index_loss(loss_fn)
    binary = binary_threshold(loss_fn) is not None
    if classes is None and not binary and not isinstance(fn, _ELEMENTWISE_LOSSES):
        try:
            if fn not in _ELEMENTWISE_FUNCTIONS:
                return
        except TypeError:  # an unhashable callable
            return
    name = (classes or (type(fn).__name__ if isinstance(fn, nn.Module)
                        else f"F.{getattr(fn, '__name__', type(fn).__name__)}"))
    if y is None:  # torch: "cross_entropy_loss(): argument 'target' (position 2) must be
        # Tensor, not NoneType"
        raise ArgumentTypeError(f"y is None, but {name} needs the targets; expected a "
                                "torch.Tensor of targets (a loss_fn of the output alone may "
                                "take y=None)")
    if not isinstance(y, torch.Tensor):
        if type(y).__module__.split(".")[0] == "numpy" or isinstance(y, (list, tuple, int,
                                                                          float)):
            raise ArgumentTypeError(f"y must be a torch.Tensor for {name}, got "
                                    f"{type(y).__name__} (torch.as_tensor(y) makes one)")
        # a string, dict or other object: torch said "cross_entropy_loss(): argument 'target'
        # (position 2) must be Tensor, not str", naming neither y nor what it takes
        raise ArgumentTypeError(f"y must be a torch.Tensor of targets for {name}, got "
                                f"{type(y).__name__}")
    if classes is not None and not y.is_floating_point() and not y.is_complex() \
            and y.dtype not in (torch.int64, torch.uint8):
        raise ArgumentTypeError(f"y has dtype {y.dtype}, but {classes} takes class indices "
                                "of dtype torch.int64 (y.long())")
    if binary and not y.is_floating_point():
        raise ArgumentTypeError(f"y has dtype {y.dtype}, but {name} takes targets in [0, 1] "
                                "of a floating-point dtype (y.float(), or y.to(output.dtype))")


def _check_probability_targets(output: Any, y: Any, loss_fn: Any) -> None:
    """``BCELoss``/``F.binary_cross_entropy`` (probabilities) take targets of the output's
    dtype only: float64 targets (``torch.from_numpy`` of NumPy's default) for a float32 model
    failed inside torch with 'Found dtype Double but expected Float', naming neither ``y``
    nor the remedy; an :class:`~depthlab.validators.ArgumentTypeError` line instead."""
    from ..validators import ArgumentTypeError
    from .train import binary_threshold, loss_parts

    if binary_threshold(loss_fn) != 0.5 or not isinstance(output, torch.Tensor) \
            or not isinstance(y, torch.Tensor) or not y.is_floating_point() \
            or not output.is_floating_point() or y.dtype == output.dtype:
        return
    fn, _ = loss_parts(loss_fn)
    name = type(fn).__name__ if isinstance(fn, nn.Module) else "F.binary_cross_entropy"
    raise ArgumentTypeError(f"y has dtype {y.dtype}, but {name} takes targets of the output's "
                            f"dtype {output.dtype} (y.to({output.dtype}))")


def _check_target_device(output: Any, y: Any, loss_fn: Any) -> None:
    """One of torch's own losses (:func:`_torch_loss_name`) takes ``y`` on the output's
    device: a ValueError naming both devices and the remedy before the loss runs (torch said
    'Expected all tensors to be on the same device, but found at least two devices, cuda:0
    and cpu!', or for a meta ``y`` 'Tensor on device meta is not on the expected device
    cpu!' and an error of ``torch.nonzero``'s meta registration). A loss of the user's own
    may move ``y`` itself, and is left alone."""
    if not isinstance(output, torch.Tensor) or not isinstance(y, torch.Tensor) \
            or y.device == output.device or _torch_loss_name(loss_fn) is None:
        return
    raise ValueError(f"y is on device {y.device} but the model's output is on "
                     f"{output.device}; expected y on the output's device "
                     f"(y.to({str(output.device)!r}))")


def _check_probability_range(output: Any, y: Any, loss_fn: Any) -> None:
    """torch's ``BCELoss``/``F.binary_cross_entropy`` take probabilities: an output and
    targets ``y`` in ``[0, 1]`` (``-sum y log p + (1 - y) log(1 - p)``). A ValueError naming
    the range found and the remedy before the loss runs; torch said 'all elements of input
    should be between 0 and 1' (a model without a final sigmoid) or '... of target ...',
    naming neither. Only for torch's own losses (:func:`_torch_loss_name`); a subclass of the
    user's may squash the output itself."""
    from .train import binary_threshold

    if binary_threshold(loss_fn) != 0.5 or _torch_loss_name(loss_fn) is None:
        return
    name = _torch_loss_name(loss_fn)
    for what, t in (("the model's output", output), ("y", y)):
        if not isinstance(t, torch.Tensor) or not t.is_floating_point() or t.numel() == 0 \
                or t.device.type == "meta":
            continue
        lo, hi = float(t.detach().min()), float(t.detach().max())
        if lo >= 0.0 and hi <= 1.0 or lo != lo or hi != hi:  # (NaN: torch's own message)
            continue
        if what == "y":
            raise ValueError(f"y holds targets outside [0, 1] (from {lo:g} to {hi:g}), but "
                             f"{name} takes probabilities in [0, 1]; expected targets in [0, 1] "
                             "(y.clamp(0, 1), or labels of 0 and 1)")
        raise ValueError(f"the model's output holds values outside [0, 1] (from {lo:g} to "
                         f"{hi:g}), but {name} takes probabilities; expected a model that ends "
                         "with a sigmoid, or loss_fn 'bce_with_logits' "
                         "(nn.BCEWithLogitsLoss()) for logits")


def _check_class_weights(output: Any, loss_fn: Any) -> None:
    """A class-index loss's ``weight`` (``nn.CrossEntropyLoss(weight=w)``, ``NLLLoss``, or
    ``weight=`` of ``functools.partial(F.cross_entropy, ...)``) must hold one float of the
    output's dtype per class: class weights from NumPy (``torch.from_numpy(w)``, float64)
    for a float32 model failed inside torch with 'expected scalar type Float but found
    Double', naming neither the weight nor the remedy; an
    :class:`~depthlab.validators.ArgumentTypeError` line instead (not under autocast, which
    casts both), and a ValueError for a weight of another number of entries than the output's
    classes (dimension 1)."""
    from ..validators import ArgumentTypeError
    from .train import class_index_loss, loss_parts

    name = class_index_loss(loss_fn)
    fn, kw = loss_parts(loss_fn)
    w = kw.get("weight", getattr(fn, "weight", None))
    if name is None or not isinstance(w, torch.Tensor) or not isinstance(output, torch.Tensor) \
            or not output.is_floating_point() or output.dim() < 1:
        return
    classes = output.shape[1] if output.dim() >= 2 else output.shape[0]
    if w.dtype != output.dtype and not torch.is_autocast_enabled(output.device.type):
        # (under autocast torch computes the loss in float32, casting both)
        raise ArgumentTypeError(f"{name}'s class weight has dtype {w.dtype}, but the model's "
                                f"output is {output.dtype}; expected weights of the output's "
                                f"dtype (weight=w.to({output.dtype}))")
    if w.numel() != classes:
        raise ValueError(f"{name}'s class weight has {w.numel()} entries (shape "
                         f"{tuple(w.shape)}), but the model's output {tuple(output.shape)} has "
                         f"{classes} classes; expected one weight per class")


def check_targets(output: Any, y: Any, loss_fn: Any) -> None:
    """For a class-index loss (``CrossEntropyLoss``/``NLLLoss``, ``F.cross_entropy``/
    ``F.nll_loss``, also in a ``functools.partial``) on an output ``(N, C, ...)`` with integer
    targets ``(N, ...)``: a ValueError naming the first label outside ``[0, C)`` (and not the
    loss's ``ignore_index``) before the loss runs; also one line for labels of another number
    of examples, a column ``(N, 1)``, one-hot integer rows and floats of shape ``(N, ...)``
    (torch's 'multi-target not supported', 'expected target dtype to be Long'), an output of
    None (a forward without its ``return``: a TypeError), and any other
    shape than ``(N, ...)`` (integers) or the output's (float probabilities): a segmentation
    mask ``(N, 1, H, W)`` (remedy ``y.squeeze(1)``), ``(N, k)`` columns. For the
    labels torch said only 'IndexError: Target 4 is out of bounds.' on the CPU, and on CUDA
    such a label is a device-side assert that leaves the process's CUDA context unusable."""
    from .train import class_index_loss

    if output is None:  # torch: "cross_entropy_loss(): argument 'input' (position 1) must be
        # Tensor, not NoneType", which named neither the model nor the missing return
        raise TypeError("the model's forward returned None (a missing `return`?); expected a "
                        "tensor, or a tuple or dict of tensors that loss_fn reads")
    _check_structured_output(output, loss_fn)
    _check_target_type(y, loss_fn)
    _check_target_device(output, y, loss_fn)
    _check_probability_range(output, y, loss_fn)
    _check_class_weights(output, loss_fn)
    _check_probability_targets(output, y, loss_fn)
    _check_elementwise_targets(output, y, loss_fn)
    name = class_index_loss(loss_fn)
    if name is None or not isinstance(output, torch.Tensor) or not isinstance(y, torch.Tensor) \
            or output.dim() < 2:
        return
    shape, want = tuple(y.shape), (output.shape[0], *output.shape[2:])
    if y.dim() >= 1 and y.shape[0] != output.shape[0] and not y.is_floating_point():
        raise ValueError(f"y has {y.shape[0]} labels (shape {shape}) but the model gave "
                         f"{output.shape[0]} outputs (output shape {tuple(output.shape)}); "
                         f"expected y of shape {want}, one class index per example")
    if not y.is_floating_point() and y.dtype != torch.bool and y.shape == output.shape \
            and bool(((y == 0) | (y == 1)).all()) and bool((y.sum(dim=1) == 1).all()):
        raise ValueError(f"y holds one-hot rows of {output.shape[1]} integers (shape {shape}), "
                         f"but {name} takes class indices: give y.argmax(1) (or the rows as "
                         "floats: class probabilities)")
    if not y.is_floating_point() and y.dtype != torch.bool and output.dim() == 2 \
            and shape == (output.shape[0], 1) and output.shape[1] > 1:
        raise ValueError(f"y has shape {shape}, a column of class indices, but {name} takes "
                         f"them of shape {want}: give y.squeeze(1)")
    if y.is_floating_point() and shape == want and output.shape[1] > 1 and \
            name != "NLLLoss" and name != "F.nll_loss":
        raise ValueError(f"y holds floats of shape {shape}, but {name} takes class indices "
                         f"(integers: y.long()) of shape {want}, or class probabilities of the "
                         f"output's shape {tuple(output.shape)}")
    if y.dtype != torch.bool and shape != want and _library_forward(loss_fn) \
            and not (y.is_floating_point() and shape == tuple(output.shape)):
        # torch: 'only batches of spatial targets supported (3D tensors) but got targets of
        # dimension: 4' for a (N, 1, H, W) mask, '0D or 1D target tensor expected,
        # multi-target not supported' for (N, k) targets of an (N, C) output
        where = " and output position" if output.dim() > 2 else ""
        fix = ": give y.squeeze(1)" if y.dim() == output.dim() and y.shape[1] == 1 \
            and (y.shape[0], *y.shape[2:]) == want else ""
        if output.dim() > 2 and shape == tuple(output.shape[:-1]) and not y.is_floating_point():
            # a sequence tagger's (N, T, C) scores with (N, T) labels: the classes are last
            nll = name in ("NLLLoss", "F.nll_loss")
            fix = (f"; its classes look last, where {'NLLLoss' if nll else name} reads them in "
                   f"dimension 1: give loss_fn=lambda out, y: "
                   f"F.{'nll_loss' if nll else 'cross_entropy'}(out.movedim(-1, 1), y)")
        probs = "" if name in ("NLLLoss", "F.nll_loss") else \
            f", or class probabilities (floats) of the output's shape {tuple(output.shape)}"
        raise ValueError(f"y has shape {shape}, but {name} takes class indices (integers) of "
                         f"shape {want}, one per example{where}{probs}; the model's output "
                         f"has shape {tuple(output.shape)}{fix}")
    if y.is_floating_point() or y.dtype == torch.bool \
            or output.dim() != y.dim() + 1 or output.shape[0] != y.shape[0] \
            or output.shape[2:] != y.shape[1:]:
        return
    classes = int(output.shape[1])
    found = loss_ignore_index(loss_fn)
    ignore = -100 if found is None else int(found)  # the functions' default
    flat = y.reshape(-1)
    bad = flat[((flat < 0) | (flat >= classes)) & (flat != ignore)]
    if len(bad):
        raise ValueError(f"y holds the label {int(bad[0])} ({len(bad)} of {len(flat)} outside 0 "
                         f"to {classes - 1}), but the model's output has {classes} classes in "
                         f"dimension 1 for {name}; expected class indices 0 to {classes - 1}")


def _torch_loss_name(loss_fn: Any) -> str | None:
    """How the user wrote ``loss_fn`` when it is one of torch's own losses, which take one
    tensor of outputs: ``"nn.CrossEntropyLoss()"`` for a module of ``torch.nn.modules.loss``
    (not a subclass of the user's), ``"F.cross_entropy"`` for a function of
    ``torch.nn.functional`` (also inside a ``functools.partial``); None for anything else."""
    from .train import loss_parts

    fn, _ = loss_parts(loss_fn)
    if isinstance(fn, nn.Module):
        cls = type(fn)
        return f"nn.{cls.__name__}()" if cls.__module__ == "torch.nn.modules.loss" else None
    if getattr(fn, "__module__", None) == "torch.nn.functional" and hasattr(fn, "__name__"):
        return f"F.{fn.__name__}"
    return None


def _check_structured_output(output: Any, loss_fn: Any) -> None:
    """A TypeError in one line for a tuple/list/dict/dataclass/namedtuple output given to one of
    torch's losses (:func:`_torch_loss_name`), which take one tensor: a model returning what
    ``nn.GRU``/``nn.LSTM``/``nn.MultiheadAttention`` return, ``(out, h)``, or
    ``{"logits": ...}``, got torch's "cross_entropy_loss(): argument 'input' (position 1) must
    be Tensor, not tuple". The message names the parts (a dataclass's or namedtuple's fields by
    name) and a loss that picks one (the first tensor)."""
    fields = ({f.name: getattr(output, f.name, None) for f in dataclasses.fields(output)}
              if dataclasses.is_dataclass(output) and not isinstance(output, type) else None)
    sort = "dataclass"
    if fields is None and isinstance(output, tuple) and hasattr(type(output), "_fields"):
        # a namedtuple: its fields by name too (it was "a Out of 2 tensors", out[0])
        fields, sort = dict(zip(type(output)._fields, output)), "namedtuple"
    if isinstance(output, torch.Tensor) or (fields is None and not isinstance(
            output, (tuple, list, dict))):
        return
    call = _torch_loss_name(loss_fn)
    if call is None:
        return

    def part(v: Any) -> str:
        return str(tuple(v.shape)) if isinstance(v, torch.Tensor) else type(v).__name__

    kind = type(output).__name__
    if fields is not None:  # a dataclass (torch: "must be Tensor, not Out") or namedtuple:
        # its fields by name, as the remedy reads them, out.logits
        what = f"a {sort} {kind} with fields " + ", ".join(
            f"{k} {part(v)}" for k, v in fields.items())
        key = next((k for k, v in fields.items() if isinstance(v, torch.Tensor)), None)
        name = call[3:-2] if call.startswith("nn.") else call
        fix = f": give a loss_fn that picks the part it reads, e.g. lambda out, y: " \
              f"{call}(out.{key}, y)" if key is not None else ""
        raise TypeError(f"the model's output is {what}, but {name} takes one tensor{fix}")
    if isinstance(output, dict):
        keys = list(output)
        what = f"a {kind} with keys {keys}"
        pick = next((k for k in keys if isinstance(output[k], torch.Tensor)), keys[0] if keys
                    else None)
    else:
        parts = list(output)
        tensors = all(isinstance(v, torch.Tensor) for v in parts)
        what = (f"a {kind} of {len(parts)} " + ("tensors (shapes " if tensors else "(")
                + ", ".join(part(v) for v in parts) + ")")
        pick = next((i for i, v in enumerate(parts) if isinstance(v, torch.Tensor)), 0)
    name = call[3:-2] if call.startswith("nn.") else call
    fix = f": give a loss_fn that picks the part it reads, e.g. lambda out, y: " \
          f"{call}(out[{pick!r}], y)" if pick is not None else ""
    raise TypeError(f"the model's output is {what}, but {name} takes one tensor{fix}")


def _library_forward(loss_fn: Any) -> bool:
    """Whether ``loss_fn`` (a class-index loss, :func:`~depthlab.torch.train.class_index_loss`)
    runs torch's own forward on the output and ``y`` as given: ``F.cross_entropy``/
    ``F.nll_loss`` and the modules, not a subclass whose ``forward`` reshapes them first
    (``super().forward(o.flatten(0, 1), y.flatten())`` takes ``(N, T, C)`` scores)."""
    from .train import loss_parts

    fn, _ = loss_parts(loss_fn)
    return not isinstance(fn, nn.Module) \
        or type(fn).forward in (nn.CrossEntropyLoss.forward, nn.NLLLoss.forward)


@contextmanager
def no_fast_path() -> Iterator[None]:
    """torch's inference fast path of ``nn.TransformerEncoder``/``TransformerEncoderLayer``/
    ``MultiheadAttention`` off within the block (``torch.backends.mha``), restored after. In
    eval mode with frozen weights the encoder packed a padded batch into a nested tensor, so
    its layers' outputs had no flat memory and the probe gave them no ``pre_*`` rows (8 layers
    of a 2-layer encoder: weight rows only); off, they run as in training (padded positions
    included)."""
    mha = getattr(torch.backends, "mha", None)
    if mha is None or not mha.get_fastpath_enabled():
        yield
        return
    mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        mha.set_fastpath_enabled(True)


def _tensors_in(x: Any) -> list[torch.Tensor]:
    inputs = x.values() if isinstance(x, dict) else x if isinstance(x, (tuple, list)) else (x,)
    return [t for t in inputs if isinstance(t, torch.Tensor)]


def check_callable(model: nn.Module) -> None:
    """A TypeError for a model that is a container without a forward of its own
    (``nn.ModuleList``, ``nn.ModuleDict``, ``nn.ParameterList``/``ParameterDict``, a module
    of a class that defines no ``forward``): torch said 'Module [ModuleList] is missing the
    required "forward" function' or 'ParameterList should not be called.', which said
    neither what the probe needs nor the remedy."""
    kind = type(model).__name__
    if isinstance(model, (nn.ParameterList, nn.ParameterDict)):
        what = "holds parameters and cannot be called"
    elif getattr(type(model), "forward", None) is getattr(nn.Module, "forward", None) \
            and "forward" not in vars(model):
        what = "has no forward of its own"
    else:
        return
    fix = " (nn.Sequential(*layers) runs a list of layers in turn)" \
        if isinstance(model, (nn.ModuleList, nn.ModuleDict)) else ""
    raise TypeError(f"model is a {kind}, a container that {what}; expected the module whose "
                    f"forward computes the output from x{fix}")


def _unbound(model: nn.Module, x: Any) -> str | None:
    """One line when the model's ``forward`` cannot take ``x`` as :func:`call_model` spreads
    it (a list or tuple as positional inputs, ``model(*x)``; a dict as keyword inputs,
    ``model(**x)``): a forward that takes one list of tensors, ``forward(self, xs)`` given
    ``[a, b]``, failed with Python's 'forward() takes 2 positional arguments but 3 were
    given', which said neither how the probe called it nor the remedy; None where the call
    binds (the TypeError came from inside the forward) or no signature is readable."""
    import inspect

    if not isinstance(x, (tuple, list, dict)):
        return None
    try:
        sig = inspect.signature(model.forward)
    except (TypeError, ValueError):
        return None
    try:
        sig.bind(**x) if isinstance(x, dict) else sig.bind(*x)
        return None
    except TypeError as exc:
        why = str(exc)
    takes = f"{type(model).__name__}.forward{sig}"
    if isinstance(x, dict):
        return (f"x is a dict with keys {list(x)}, given to the model as keyword inputs "
                f"(model(**x)), but {takes} does not take them ({why}); expected a dict of "
                "the forward's argument names, or x=(d,) for a forward that takes one dict")
    return (f"x is a {type(x).__name__} of {len(x)} inputs, given to the model as positional "
            f"inputs (model(*x)), but {takes} does not take them ({why}); for a forward "
            f"that takes one {type(x).__name__}, give x=(xs,), a tuple holding it")


def forward(model: nn.Module, x: Any) -> Any:
    """:func:`call_model`; a RuntimeError about types raised while an input tensor's dtype is
    not that of the model's (floating) weights becomes a one-line TypeError saying so (torch
    said e.g. 'mat1 and mat2 must have the same dtype, but got Double and Float'); an ``x`` of
    the wrong shape for the layer it goes straight into (a Linear's in_features, a conv's
    channels, dimensions or kernel, a recurrent layer's input_size) a one-line ValueError
    naming ``x``'s shape and what that layer expects (:func:`_wrong_width`,
    :func:`_wrong_shape`); an input tensor on another device than the model's weights a
    one-line ValueError naming both (:func:`_elsewhere`); an input of a type torch refused
    (a ``str``, ``set``, a user object: :func:`_refused`) the TypeError 'x must be a
    torch.Tensor'; a container that cannot be called a TypeError (:func:`check_callable`)."""
    check_callable(model)
    try:
        return call_model(model, x)
    except TypeError as exc:  # torch's own message names an argument of an inner function
        inputs = (x.values() if isinstance(x, dict) else x if isinstance(x, (tuple, list))
                  else (x,))
        said = _first_line(exc)
        odd = next((v for v in inputs if v is None or type(v).__module__ == "numpy"
                    or type(v) in (list, tuple, int, float, bool) or _refused(v, said)),
                   False)
        if odd is False:
            unbound = _unbound(model, x)
            if unbound is not None:
                raise TypeError(unbound) from exc
            raise
        what = type(odd).__name__
        if isinstance(x, (list, tuple)) and odd is not x and type(odd) in (list, tuple, int,
                                                                           float, bool):
            # a nested Python list of numbers was called as model(*x), one row per argument
            what = f"a {type(x).__name__} of {what}"
        raise TypeError(f"x must be a torch.Tensor (or a tuple, list or dict of them), got "
                        f"{what} (torch.as_tensor(x) makes one) (the model said: {said})"
                        ) from exc
    except IndexError as exc:
        wrong = _wrong_ids(model, x, exc)
        if wrong is None:
            raise
        raise ValueError(wrong) from exc
    except ValueError as exc:  # torch: 'Expected more than 1 value per channel when
        # training, got input size torch.Size([1, 8])', naming neither the norm nor a remedy
        single = _single_value_norm(model, exc)
        if single is None:
            raise
        raise ValueError(single) from exc
    except AssertionError as exc:  # MultiheadAttention: 'was expecting embedding dimension
        # of 16, but got 12'
        said = _first_line(exc)
        misfit = _misfit(model, x, exc, said)
        if misfit is None:
            raise
        raise ValueError(misfit) from exc
    except RuntimeError as exc:
        failed = _failed_layer(exc)  # a conv of no channels: torch refused its weight, not x
        if failed is not None:
            check_nonempty_weights((n, m) for n, m in model.named_modules() if m is failed[0])
        dtypes = {p.dtype for p in model.parameters() if p.is_floating_point()}
        said = _first_line(exc)
        wrong = (_wrong_width(model, x, said) or _wrong_shape(model, x, exc, said)
                 or _wrong_ids(model, x, exc)  # an EmbeddingBag's 'Expected i < index_size'
                 or _too_few_positions(model, x, exc, said))
        if wrong is None:
            wrong = _elsewhere(model, x, said)
        if wrong is None and isinstance(x, torch.Tensor) and x.dim() == 0:
            # torch: 'both arguments to linear need to be at least 1D, but they are 0D and 2D'
            wrong = ("x is a 0-dimensional tensor (a single number); expected a batch of "
                     f"examples (N, ...) (torch: {said})")
        if wrong is not None:
            raise ValueError(wrong) from exc
        bad = next((t for t in _tensors_in(x) if len(dtypes) == 1 and t.dtype not in dtypes),
                   None)
        emb = next((n for n, m in model.named_modules()
                    if isinstance(m, (nn.Embedding, nn.EmbeddingBag))), None)
        given = _embedding_input(exc)
        if emb is not None and ("'indices'" in said or given is not None):  # an Embedding
            # given float ids, or ids of a dtype it refuses (uint8, int8, int16, bool: torch
            # takes int64, int32; EmbeddingBag: '"arange_cpu" not implemented for 'Bool'')
            odd = _not_ids(x, given)
            if odd is not None:
                raise TypeError(f"x has dtype {odd.dtype} but the model's "
                                f"{type(model.get_submodule(emb)).__name__} {emb!r} takes "
                                "integer token ids of dtype torch.int64 or torch.int32; "
                                f"expected x of dtype torch.int64 (x.long()) (torch: {said})"
                                ) from exc
        if bad is None or not _said_dtype(said) or "indices" in said:
            misfit = _misfit(model, x, exc, said)
            if misfit is None:
                raise
            raise ValueError(misfit) from exc
        (w,) = dtypes
        raise TypeError(f"x has dtype {bad.dtype} but the model's weights are {w}; expected x "
                        f"of the model's dtype (x.to({w})) (torch: {said})") from exc


def _single_value_norm(model: nn.Module, exc: BaseException) -> str | None:
    """The one-line message for torch's ValueError of a norm given one value per channel, or
    None for another error: a BatchNorm in training mode (batch statistics over ``N x
    positions``: 'Expected more than 1 value per channel when training') or an InstanceNorm
    that normalizes with each example's own statistics (training mode, or no running
    statistics), given one position per channel ('Expected more than 1 spatial element
    when training', which named neither the module nor ``x``). The module named is the first
    such one whose ``num_features`` is the failing input's channel count (``size[1]``)."""
    said = str(exc).strip()
    if "more than 1 value per channel" in said:
        kind, why = nn.modules.batchnorm._BatchNorm, "one value per channel"
        uses_batch = (lambda m: m.training)  # noqa: E731
    elif "more than 1 spatial element" in said:
        kind, why = nn.modules.instancenorm._InstanceNorm, "one position per channel"
        uses_batch = (lambda m: m.training or not m.track_running_stats)  # noqa: E731
    else:
        return None
    size = _ints(said[said.rfind("[") + 1:said.rfind("]")]) if "[" in said else ()
    norms = [(n, m) for n, m in model.named_modules() if isinstance(m, kind) and uses_batch(m)]
    fits = [nm for nm in norms if len(size) > 1 and nm[1].num_features == size[1]]
    if not (fits or norms):
        return None
    name, norm = (fits or norms)[0]
    if kind is nn.modules.batchnorm._BatchNorm:
        return (f"{type(norm).__name__} {name!r} is in training mode, where it needs more than "
                f"one value per channel (batch statistics), and x gives it {why} ({said}); "
                "expected a batch of 2 or more examples, or model.eval() first")
    return (f"{type(norm).__name__} {name!r} normalizes each example's channels over their "
            f"positions (its own statistics), and x gives it {why} ({said}); expected an x "
            "whose input reaches it with 2 or more positions (a larger x, or fewer "
            "downsampling steps before it)")


def _embedding_input(exc: BaseException) -> torch.Tensor | None:
    """The ids tensor given to the innermost ``nn.Embedding`` or ``nn.EmbeddingBag`` whose
    ``forward`` is in ``exc``'s traceback (the module that raised), or None."""
    given = None
    tb = exc.__traceback__
    while tb is not None:
        local = tb.tb_frame.f_locals
        if isinstance(local.get("self"), (nn.Embedding, nn.EmbeddingBag)) \
                and isinstance(local.get("input"), torch.Tensor):
            given = local["input"]
        tb = tb.tb_next
    return given


def _not_ids(x: Any, given: torch.Tensor | None) -> torch.Tensor | None:
    """The tensor of ``x`` that an ``nn.Embedding`` (or ``EmbeddingBag``) refused as ids (a
    dtype other than int64 or int32: float, uint8, int8, int16, bool): ``given``, the one its
    forward was given (:func:`_embedding_input`), when that is a tensor of ``x`` (the same
    storage); without it the first tensor of ``x`` of no id dtype, a floating one first.
    None when the refused ids are the model's own (made inside the forward) or every
    tensor of ``x`` has an id dtype."""
    ids = (torch.int64, torch.int32)
    tensors = _tensors_in(x)
    if given is not None:
        return next((t for t in tensors if t.dtype not in ids and t.dtype == given.dtype
                     and t.numel() == given.numel()
                     and (t.numel() == 0 or t.data_ptr() == given.data_ptr())), None)
    odd = [t for t in tensors if t.dtype not in ids]
    return next((t for t in odd if t.is_floating_point()), odd[0] if odd else None)


def _said_dtype(said: str) -> bool:
    """Whether torch's message is about a dtype: it names a type ('Input type (long int) and
    bias type (float) should be the same', 'mixed dtype') or an operation missing for one
    ('"batch_norm" not implemented for 'Long'')."""
    return "type" in said.lower() or "not implemented for '" in said


def _first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type's name when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _refused(v: Any, said: str) -> bool:
    """Whether ``v``, an input that is not a tensor, is what torch's TypeError refused: it
    names ``v``'s type (``linear(): argument 'input' (position 1) must be Tensor, not str``;
    a ``str``, ``set`` or user object given as x). A number or flag the forward takes is left
    alone unless torch refused exactly its type."""
    return not isinstance(v, torch.Tensor) and re.search(
        rf"\bnot {re.escape(type(v).__name__)}\b", said) is not None


def _elsewhere(model: nn.Module, x: Any, said: str) -> str | None:
    """One line when torch refused tensors on different devices (``Expected all tensors to be
    on the same device, but found at least two devices, cuda:0 and cpu!``) and an input
    tensor of ``x`` is not on the device of the model's weights (all on one device): it names
    both devices and the remedy; None otherwise (a mismatch inside the model, or a model
    across devices). A floating-point input is named before an integer one (the lengths of a
    ``pack_padded_sequence`` stay on the CPU)."""
    devices = {p.device for p in model.parameters()}
    if "device" not in said.lower() or len(devices) != 1:
        return None
    (dev,) = devices
    away = sorted((t for t in _tensors_in(x) if t.device != dev and t.dim() > 0),
                  key=lambda t: not t.is_floating_point())
    if not away:
        return None
    return (f"x has a tensor on device {away[0].device} but the model's weights are on {dev}; "
            f"expected x on the model's device (x.to({str(dev)!r})) (torch: {said})")


_MATMUL = re.compile(r"mat1 and mat2 shapes cannot be multiplied \((\d+)x(\d+) and "
                     r"(\d+)x(\d+)\)")


def _wrong_width(model: nn.Module, x: Any, said: str) -> str | None:
    """One line naming ``x``'s shape and the first layer's ``in_features`` when torch's
    'mat1 and mat2 shapes cannot be multiplied (16x5 and 4x8)' came from the model's first
    weight layer, an ``nn.Linear``, given the input's last dimension (or its values per
    example, through a Flatten); None for any other failure (a mismatch deeper inside)."""
    m = _MATMUL.search(said)
    tensors = _tensors_in(x)
    if m is None or len(tensors) != 1 or tensors[0].dim() < 1:
        return None
    first = next(((n, mod) for n, mod in model.named_modules()
                  if next(mod.parameters(recurse=False), None) is not None), None)
    if first is None or not isinstance(first[1], nn.Linear):
        return None
    name, layer = first
    t = tensors[0]
    got, want = int(m.group(2)), int(m.group(3))
    per_example = t[0].numel() if t.dim() > 1 else t.numel()
    if want != layer.in_features or got == want or got not in (t.shape[-1], per_example):
        return None
    where = f"the model's first layer {name!r} (Linear)" if name else "the model (a Linear)"
    if got == t.shape[-1] and t.dim() > 2 and per_example == layer.in_features:
        # images (N, 1, 28, 28) into Linear(784): each example holds the right number of
        # values, it is not flat (the fix was 'x of shape (4, 1, 28, 784)')
        what = f"{got} feature{'s' if got != 1 else ''} in its last dimension"
        fix = (f"x of shape {(t.shape[0], per_example)}: each example flattened "
               "(x.flatten(1), or nn.Flatten() before the layer)")
    elif got == t.shape[-1]:
        what = f"{got} feature{'s' if got != 1 else ''} in its last dimension"
        fix = f"x of shape {(*t.shape[:-1], layer.in_features)}"
    else:
        what, fix = f"{got} values per example", f"{layer.in_features} values per example"
    return (f"x has shape {tuple(t.shape)}, {what}, but {where} expects "
            f"in_features={layer.in_features}; expected {fix}")


_CHANNELS = re.compile(r"weight of size \[([\d, ]*)\], expected input\[([\d, ]*)\] to have "
                       r"(\d+) channels, but got (\d+) channels")
_DIMS = re.compile(r"Expected (\d+)D \(unbatched\) or (\d+)D \(batched\) input to "
                   r"(conv|conv_transpose)(\d)d, but got input of size: \[([\d, ]*)\]")
_KERNEL = re.compile(r"Calculated padded input size per channel: \(([\d x]*)\)\. Kernel size: "
                     r"\(([\d x]*)\)")
_RNN = re.compile(r"input\.size\(-1\) must be equal to input_size\. Expected (\d+), got (\d+)"
                  r"|input has inconsistent input_size: got (\d+) expected (\d+)")
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
          nn.ConvTranspose3d)


def _ints(text: str, sep: str = ",") -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(sep) if v.strip())


def _failed_layer(exc: BaseException) -> tuple[nn.Module, torch.Tensor] | None:
    """The innermost convolution or recurrent module whose ``forward`` raised ``exc`` (from
    its traceback), with the tensor it was given."""
    found = None
    tb = exc.__traceback__
    while tb is not None:
        local = tb.tb_frame.f_locals
        m, t = local.get("self"), local.get("input")
        if isinstance(m, (*_CONVS, nn.RNNBase, nn.RNNCellBase)) and isinstance(t, torch.Tensor):
            found = (m, t)
        tb = tb.tb_next
    return found


def _misfit(model: nn.Module, x: Any, exc: BaseException, said: str) -> str | None:
    """One line when the innermost ``torch.nn`` module in ``exc``'s traceback (the building
    block that refused: a LayerNorm, a BatchNorm, a MultiheadAttention, a Bilinear) was given
    tensors of ``x`` themselves (or views holding all their values): it names their shapes and the
    module, with torch's message, which says what the module expected ('Given
    normalized_shape=[16], expected input with shape [*, 16], but got input of size[4, 12]',
    'running_mean should contain 12 elements not 16', 'was expecting embedding dimension of
    16, but got 12'; they named neither x nor the module). None when that module was given a
    tensor the model made (a mismatch inside the model is the model's: torch's line stays)."""
    found = None
    tb = exc.__traceback__
    while tb is not None:
        m = tb.tb_frame.f_locals.get("self")
        if isinstance(m, nn.Module) and type(m).__module__.startswith("torch.nn.modules") \
                and tb.tb_frame.f_code.co_name == "forward":
            found = (m, [v for v in tb.tb_frame.f_locals.values()
                         if isinstance(v, torch.Tensor)])
        tb = tb.tb_next
    if found is None:
        return None
    m, given = found
    mine = [t for t in _tensors_in(x) if any(  # (MultiheadAttention's batch_first
        # transposes its query: a view holding all of x)
        g.numel() == t.numel() and g.data_ptr() == t.data_ptr() for g in given)]
    name = next((n for n, mod in model.named_modules() if mod is m), None)
    if not mine or name is None:
        return None
    where = f"{name!r} ({type(m).__name__})" if name else f"the model (a {type(m).__name__})"
    shapes = ", ".join(str(tuple(t.shape)) for t in mine)
    what = f"a tensor of shape {shapes}" if len(mine) == 1 else f"tensors of shapes {shapes}"
    return (f"x has {what} that {where} cannot take (torch: {said}); expected x of the shape "
            "it takes")


def _wrong_ids(model: nn.Module, x: Any, exc: BaseException) -> str | None:
    """One line naming the first id outside an ``nn.Embedding``'s (or ``EmbeddingBag``'s)
    rows when its forward raised torch's bare 'IndexError: index out of range in self' (from
    the traceback: the module and the ids it was given), else None."""
    found = None
    tb = exc.__traceback__
    while tb is not None:
        local = tb.tb_frame.f_locals
        m, t = local.get("self"), local.get("input")
        if isinstance(m, (nn.Embedding, nn.EmbeddingBag)) and isinstance(t, torch.Tensor):
            found = (m, t)
        tb = tb.tb_next
    if found is None:
        return None
    m, ids = found
    rows = int(m.num_embeddings)
    flat = ids.detach().reshape(-1)
    bad = flat[(flat < 0) | (flat >= rows)]
    if not len(bad):
        return None
    name = next((n for n, mod in model.named_modules() if mod is m), "")
    given = next((t for t in _tensors_in(x) if t.shape == ids.shape
                  and t.data_ptr() == ids.data_ptr()), None)
    what = f"x (shape {tuple(given.shape)})" if given is not None else "the input"
    return (f"{what} of {f'{name!r} ({type(m).__name__})' if name else 'the model'} holds the "
            f"id {int(bad[0])} ({len(bad)} of {len(flat)} outside 0 to {rows - 1}), but it has "
            f"num_embeddings={rows}; expected ids 0 to {rows - 1}")


def _wrong_shape(model: nn.Module, x: Any, exc: BaseException, said: str) -> str | None:
    """One line naming ``x``'s shape and what the layer it went into expects, when torch's
    error is a convolution's (channels, number of dimensions, positions fewer than the
    kernel) or a recurrent layer's (``input_size``) and that layer was given ``x`` itself (or
    a view of it of the same shape); None for any other failure (a mismatch deeper inside the
    model is the model's, and torch's message stays)."""
    failed = _failed_layer(exc)
    if failed is None:
        return None
    m, given = failed
    t = next((t for t in _tensors_in(x) if t.shape == given.shape and t.dim() >= 1
              and t.data_ptr() == given.data_ptr()), None)
    name = next((n for n, mod in model.named_modules() if mod is m), None)
    if t is None or name is None:
        return None
    shape = tuple(t.shape)
    where = (f"the model's first layer {name!r} ({type(m).__name__})" if name
             else f"the model (a {type(m).__name__})")
    if isinstance(m, _CONVS):
        spatial = {1: "L", 2: "H, W", 3: "D, H, W"}[len(m.kernel_size)]
        batch = f"(N, {m.in_channels}, {spatial})"
        if (hit := _CHANNELS.search(said)) is not None and t.dim() >= 2:
            want, got = int(hit.group(3)), int(hit.group(4))
            if t.dim() == len(m.kernel_size) + 1 and shape[0] == got:  # one example without
                # its batch dimension, as torch reads it: its channels on axis 0 (the line
                # said 'dimension 1' and a shape of too few dimensions, (8, 3, 6))
                return (f"x has shape {shape}, read as one example without a batch dimension "
                        f"(C, {spatial}), {got} channel{'s' if got != 1 else ''} in "
                        "dimension 0, but "
                        f"{where} expects in_channels={want}; expected a batch "
                        f"(N, {want}, {spatial}) or one example {(want, *shape[1:])}")
            return (f"x has shape {shape}, {got} channel{'s' if got != 1 else ''} in "
                    f"dimension 1, but {where} "
                    f"expects in_channels={want}; expected x of shape "
                    f"{(shape[0], want, *shape[2:])}")
        if (hit := _DIMS.search(said)) is not None:
            return (f"x has shape {shape} ({len(shape)} dimensions), but {where} expects "
                    f"{hit.group(2)}-dimensional batches {batch}; expected x of shape {batch}")
        if (hit := _KERNEL.search(said)) is not None:
            padded, kernel = _ints(hit.group(1), "x"), _ints(hit.group(2), "x")
            size = shape[-len(kernel):]
            least = "x".join(str(max(k - (p - s), 1))
                             for k, p, s in zip(kernel, padded, size))
            return (f"x has shape {shape}: {'x'.join(map(str, size))} positions "
                    f"({'x'.join(map(str, padded))} with padding) are fewer than the kernel "
                    f"{'x'.join(map(str, kernel))} of {where}; expected at least {least}")
        return None
    if (hit := _RNN.search(said)) is not None:
        want, got = ((int(hit.group(1)), int(hit.group(2))) if hit.group(1) is not None
                     else (int(hit.group(4)), int(hit.group(3))))
        if shape[-1] != got:
            return None
        return (f"x has shape {shape}, {got} feature{'s' if got != 1 else ''} in its last "
                f"dimension, but {where} expects input_size={want}; expected x of shape "
                f"{(*shape[:-1], want)}")
    return None


_RAN_OUT = re.compile(r"Kernel size can't be greater than actual input size"
                      r"|Output size is too small|Invalid computed output size")


def _too_few_positions(model: nn.Module, x: Any, exc: BaseException, said: str) -> str | None:
    """One line when a convolution or pooling module of the model ran out of positions (torch:
    'Calculated padded input size per channel: (1 x 1). Kernel size: (3 x 3). Kernel size
    can't be greater than actual input size', 'Given input size: (8x1x1). Calculated output
    size: (8x0x0). Output size is too small', 'max_pool1d() Invalid computed output size: 0';
    none named x or the module): the spatial size of ``x`` (one tensor of >= 3 dimensions,
    ``(N, C, *spatial)``) is too small for the model, whose layers reduce it (``out =
    floor((in + 2 pad - dil (k - 1) - 1) / stride) + 1`` per conv or pool) to fewer positions
    than that module's window. It names ``x``'s shape, the module (the innermost
    ``torch.nn`` module in the traceback) and the shape it was given, with torch's line; None
    for any other failure. (A first conv given ``x`` itself is :func:`_wrong_shape`'s.)"""
    tensors = _tensors_in(x)
    if _RAN_OUT.search(said) is None or len(tensors) != 1 or tensors[0].dim() < 3:
        return None
    found = None
    tb = exc.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        m = frame.f_locals.get("self")
        if isinstance(m, nn.Module) and type(m).__module__.startswith("torch.nn.modules") \
                and frame.f_code.co_name == "forward":
            given = frame.f_locals.get("input")
            found = (m, given if isinstance(given, torch.Tensor) else None)
        tb = tb.tb_next
    if found is None:
        return None
    m, given = found
    name = next((n for n, mod in model.named_modules() if mod is m), None)
    if name is None:
        return None
    t = tensors[0]
    where = f"{name!r} ({type(m).__name__})" if name else f"the model (a {type(m).__name__})"
    got = f"a tensor of shape {tuple(given.shape)}" if given is not None else "an input"
    spatial = "x".join(str(v) for v in t.shape[2:])
    return (f"x has shape {tuple(t.shape)}, {spatial} positions per channel, too few for the "
            f"model: {where} is given {got}, fewer positions than its window (torch: {said}); "
            "expected x with more positions (the input size the model was built for)")


def unbatched_input(model: nn.Module, x: Any) -> str | None:
    """One line when ``x`` is one example without its batch dimension for the model's first
    layer (the first ``Linear`` or convolution it registers, whose input ``x`` fits exactly):
    ``(in_features,)`` for a ``Linear``, ``(C, H, W)`` for a ``Conv2d``. torch runs such a
    layer on the unbatched example, and a later layer or the loss may fail on its output
    ('mat1 and mat2 shapes cannot be multiplied (4x16 and 64x3)' after a flatten, 'size
    mismatch (got input: [3], target: [1])'); None otherwise."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        return None
    first = next((m for m in model.modules() if isinstance(m, (nn.Linear, *_CONVS))), None)
    if first is None:
        return None
    name = next((n for n, mod in model.named_modules() if mod is first), "")
    if isinstance(first, nn.Linear):
        fits, want = x.dim() == 1 and x.shape[0] == first.in_features, f"(N, {first.in_features})"
    else:
        dims = len(first.kernel_size)
        fits = x.dim() == dims + 1 and x.shape[0] == first.in_channels
        want = f"(N, {first.in_channels}, {', '.join(map(str, x.shape[1:]))})"
    if not fits:
        return None
    where = f"the first layer {name!r} ({type(first).__name__})" if name else "the model"
    return (f"x has shape {tuple(x.shape)}, one example without its batch dimension for "
            f"{where}; expected a batch of shape {want} (x[None] for one example)")


@contextmanager
def unbatched_named(model: nn.Module, x: Any) -> Iterator[None]:
    """A forward or loss that failed on an unbatched ``x`` (:func:`unbatched_input`) fails
    with that line (and torch's); a model that takes an unbatched example is measured as
    before (a conv's ``(C, H, W)``: its channels on axis 0)."""
    try:
        yield
    except (RuntimeError, IndexError) as exc:  # torch's; depthlab's own lines stay
        said = unbatched_input(model, x)
        if said is None:
            raise
        torch_said = _first_line(exc)
        raise ValueError(f"{said} (torch: {torch_said})") from exc


def trackable(v: Any) -> Any:
    """``v`` with every inference-mode tensor (also inside a tuple, list or dict) copied to an
    ordinary one, which autograd can record."""
    if isinstance(v, torch.Tensor):
        return v.clone() if v.is_inference() else v
    if isinstance(v, (tuple, list)):
        return type(v)(trackable(t) for t in v)
    if isinstance(v, dict):
        return {k: trackable(t) for k, t in v.items()}
    return v


@keyword_hints
def probe(model: nn.Module, x: Any, y: Any = None,
          loss_fn: Callable[[Any, Any], torch.Tensor] | str | None = None,
          percentiles: Sequence[float] = PERCENTILES) -> pd.DataFrame:
    """Measure every weight layer of ``model`` on the batch ``(x, y)``; see the module
    docstring for the table. ``x``: a tensor (or a tuple/list of positional inputs, or a dict
    of keyword inputs); ``loss_fn(model(x), y)`` must return a scalar tensor (or give a
    :data:`LOSSES` name: ``"cross_entropy"``, ``"mse"``, ...); ``loss_fn=None`` (with
    ``y=None``): the model computes its loss itself (:func:`output_loss`: a Hugging Face style
    model given its labels inside ``x``);
    ``percentiles=()`` skips the sorts behind ``pre_pK``/``act_pK``. Called inside
    ``torch.no_grad()`` or ``torch.inference_mode()`` it still back-propagates (the gradient
    rows were NaN); ``torch.no_grad()`` *inside* the model's forward keeps its meaning."""
    if loss_fn is None:
        _check_no_targets(y)
    with torch.inference_mode(False), torch.enable_grad(), inputs_kept(x, y), \
            out_of_memory("dlt.probe", x):
        fn = output_loss if loss_fn is None else resolve_loss(loss_fn)
        return _probe(model, trackable(x), trackable(y), fn, percentiles)


def _check_no_targets(y: Any) -> None:
    """A ValueError for targets given without a ``loss_fn`` to read them: ``loss_fn=None``
    takes the loss the model returns (:func:`output_loss`), so ``y`` would be left unread."""
    if y is not None:
        what = (f"a tensor of shape {tuple(y.shape)}" if isinstance(y, torch.Tensor)
                else type(y).__name__)
        raise ValueError(f"y is given ({what}) but loss_fn is None, which takes the loss the "
                         "model itself returns (a one-element tensor, out['loss'] or "
                         "out.loss), leaving y unread; expected a loss_fn(output, y) to read "
                         "y, or y=None with the targets inside x (x={..., 'labels': y})")


def _output_kind(output: Any) -> str:
    """A few words naming what a model returned (for :func:`output_loss`'s errors)."""
    if isinstance(output, torch.Tensor):
        return f"a tensor of shape {tuple(output.shape)}"
    kind = type(output).__name__
    if isinstance(output, dict):
        held = "its 'loss' None" if "loss" in output else "no 'loss'"
        return f"an output of type {kind} with keys {list(output)} ({held})"
    if hasattr(output, "loss"):
        return f"an output of type {kind} whose .loss is {type(output.loss).__name__}"
    if isinstance(output, (tuple, list)):
        return f"a {kind} of {len(output)} items"
    return f"an output of type {kind}"


def output_loss(output: Any, y: Any = None) -> torch.Tensor:
    """``loss_fn=None``: the loss ``L`` that the model's forward computed and returned, read
    from ``output``: ``L = output`` for a one-element tensor; ``L = output["loss"]`` for a
    dict (a ``transformers`` ``ModelOutput`` is one); ``L = output.loss`` for another object
    with that attribute (a dataclass, a namedtuple). A ValueError naming what the output holds
    for anything else (logits without a loss: a model given no labels). ``y`` is unused."""
    if isinstance(output, torch.Tensor):
        if output.numel() == 1:
            return output
        loss = None
    elif isinstance(output, dict):
        loss = output.get("loss")
    else:
        loss = getattr(output, "loss", None)
    if isinstance(loss, torch.Tensor):
        return loss
    raise ValueError(f"loss_fn is None, so the model must return its loss, but it returned "
                     f"{_output_kind(output)}; expected a one-element "
                     "tensor, a dict with 'loss' or an object with .loss (a Hugging Face "
                     "model computes it when x holds its labels), or give loss_fn(output, y)")


def _probe(model: nn.Module, x: Any, y: Any, loss_fn: Callable[[Any, Any], torch.Tensor],
           percentiles: Sequence[float]) -> pd.DataFrame:
    check_materialized(check_model(model))
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable (output, y) -> scalar tensor, got "
                        f"{type(loss_fn).__name__}")
    qs = check_percentiles(percentiles)  # (a generator too: read once, its pK rows kept)
    check_batch(x)
    rec = Recording(model, qs)
    params = [p for p in model.parameters() if p.requires_grad]
    loose, candidates = _loose_weights(model, rec.layers)
    tables = {id(w): _LOOKUPS for info in rec.layers if isinstance(info.owner, nn.Embedding)
              for w in info.weights}
    cap = MapCapture({k: k for k in loose}, lambda: rec.numbered, tables) if loose else None
    with rec.isolated(loss_fn):
        rec.arm()
        with no_fast_path(), unbatched_named(model, x), cap or contextlib.nullcontext():
            output = forward(model, x)
        rec.disarm()
        rec.drop_kept()
        check_nonempty_weights((info.name, info.owner) for info in rec.order)
        _warn_new_layers(model, rec.layers)
        with unbatched_named(model, x):  # (CrossEntropyLoss of (3,) and (1,) fails backward)
            check_targets(output, y, loss_fn)
            loss = check_loss(loss_fn(output, y))
            # a tuple or dict output ((logits, aux), {'logits': ...}, its loss_fn taking the
            # whole): the accuracy of the tensor that holds the classes, as the doctor reads it
            acc = target_accuracy(output, y, loss_fn)
        grads: dict[int, torch.Tensor | None] = {}
        # an x that requires grad (input gradients, adversarial examples): the backward runs
        # to x as loss.backward() does, so layers below every trainable parameter (a frozen
        # backbone, a frozen model) have their grad_pre_* rows (they had none: autograd.grad
        # stopped at the lowest trainable parameter, or ran not at all without one)
        mine = {id(p) for p in params}
        roots = params + [t for t in _tensors_in(x) if t.requires_grad and id(t) not in mine]
        calls = _untied(cap.calls, tables, rec.order) if cap is not None else []
        roots += [c[1] for c in calls if c[1].requires_grad]
        if params and not loss.requires_grad:
            warnings.warn("the loss does not require grad (loss_fn returned a detached tensor, "
                          "or the output it reads was computed under torch.no_grad()): the "
                          "table has no gradient rows (grad_pre_*, weight_grad_*); return the "
                          "loss tensor itself", RuntimeWarning, stacklevel=4)
        if loss.requires_grad and roots:
            with rec.recomputing(), unbatched_named(model, x):
                grads = _weight_grads(loss, roots)
        extra = [(0, "", "loss", loss.detach())]
        if acc is not None:
            extra.append((0, "", "acc", acc))
        rows = rec.collect(weight_grads=grads, extra=extra)
        calls, gone = _replaced(rows, calls, candidates)
        if calls:
            rows = _with_maps(rows, rec, calls, loose, grads, gone, qs)
        elif not rec.order:
            raise ValueError(none_ran(model, rec.layers))
        _warn_held_weights(rec, grads, {c[0] for c in calls})
    return rows_frame([(0, *r) for r in rows])


def _loose_weights(model: nn.Module, layers: Sequence[LayerInfo]
                   ) -> tuple[dict[int, tuple[str, nn.Parameter]], list[LayerInfo]]:
    """The weights whose linear maps :class:`~depthlab.torch.layers.MapCapture` watches,
    ``id`` -> ``(name, parameter)``: those no module's output tells, the model's own
    (``F.linear(x, self.weight)``, ``x @ self.w``) when the model is no layer itself (it has
    child layers: its output is theirs) and the tensors of an ``nn.ParameterList`` or
    ``ParameterDict`` (no forward of their own), an ``nn.Embedding``'s table (its use as a
    tied output projection, ``h @ self.emb.weight.T``, outside the lookup; named
    ``emb.weight``); and the weights of the layer modules of the
    user's own class without child layers, returned second (:func:`_replaced` tells whether
    their output is their map's)."""
    loose: dict[int, tuple[str, nn.Parameter]] = {}
    if not any(info.owner is model for info in layers) and not is_norm(model):
        loose.update((id(p), (n, p)) for n, p in own_weights(model))
    for info in layers:
        if isinstance(info.owner, (nn.ParameterList, nn.ParameterDict)):
            loose.update((id(p), (f"{info.name}.{n}" if info.name else n, p))
                         for n, p in own_weights(info.owner))
    candidates = [info for info in layers
                  if info.has_output and not type(info.owner).__module__.startswith("torch.")
                  and not isinstance(info.owner, (nn.ParameterList, nn.ParameterDict))
                  and not any(own_weights(c) for c in info.owner.modules()
                              if c is not info.owner)]
    for info in layers:  # a table also used as a map outside its lookup: a tied projection
        # (one a module of its own shares, nn.Linear's weight = emb.weight, is that module's
        # where that module runs: _untied)
        if isinstance(info.owner, nn.Embedding):
            loose.update((id(w), (f"{info.name}.weight" if info.name else "weight", w))
                         for w in info.weights)
    for info in candidates:
        named = dict(info.owner.named_parameters())
        names = {id(p): n for n, p in named.items()}
        for w in info.weights:
            short = names.get(id(w), "weight")
            loose.setdefault(id(w), (f"{info.name}.{short}" if info.name else short, w))
    return loose, candidates


def _replaced(rows: list[tuple[int, str, str, float]], calls: list[list],
              candidates: list[LayerInfo]) -> tuple[list[list], dict[int, str]]:
    """The maps measured as layers of their own, and the hooked layers they replace (number ->
    the name a single map of its takes). A layer module of the user's class is replaced by its
    maps when two or more of its weights were mapped (``torch.tanh(x @ self.W1) @ self.W2``:
    its weights were pooled as one matrix and its output was the last map's), or when its
    output is not its map's (``torch.relu(x @ self.W + self.b)``: its ``pre_*`` rows were of
    the ReLU's output, ``pre_p15`` 0, and ``grad_pre_*`` the gradient there): the pooled mean
    and std of the module's outputs differ from those of its map outputs ``x W (+ b)`` by
    more than rounding (``STAT_RTOL``). Otherwise its own rows stay (its maps dropped); so
    they do where its output is the sum of two or more of its maps (:func:`_sum_of_maps`: a
    LoRA layer of its own parameters, loralib's ``F.linear(x, self.weight, self.bias) + (x @
    self.lora_A.T @ self.lora_B.T) * self.scaling``, is one linear layer whose output its
    activation reads; it was three map layers, with no row of that output and no ``act_*``)."""
    stats = {(i, q): v for i, _, q, v in rows if q in ("pre_mean", "pre_std")}
    gone: dict[int, str] = {}
    drop: set[int] = set()
    for info in candidates:
        ws = {id(w) for w in info.weights}
        keys = {c[0] for c in calls if c[0] in ws}
        if not keys or not info.index:
            drop |= ws
            continue
        m, sd = stats.get((info.index, "pre_mean")), stats.get((info.index, "pre_std"))
        if len(keys) == 1:
            s = _pooled([c[1] for c in calls if c[0] in keys])
            if m is None or sd is None or _same_stats(s, m, sd):
                drop |= ws
                continue
        elif m is not None and sd is not None and _sum_of_maps(calls, keys, m, sd,
                                                                _biases(info)):
            drop |= ws
            continue
        gone[info.index] = info.name if len(keys) == 1 and info.name else ""
    return [c for c in calls if c[0] not in drop], gone


def _same_stats(s: torch.Tensor, mean: float, std: float) -> bool:
    """Whether the float64 vector ``s`` has the population ``mean`` and ``std`` up to
    rounding (``STAT_RTOL``): the same tensor's values summed in another order."""
    m, sd = s.mean().item(), s.std(correction=0).item()
    return abs(sd - std) <= STAT_RTOL * max(sd, std) and abs(m - mean) <= STAT_RTOL * (
        abs(mean) + std)


def _biases(info: LayerInfo) -> list[torch.Tensor]:
    """The module's own parameters shaped as a bias beside its weights (1-dim, or at most one
    dimension above 1), which a sum of its maps may add last (``x @ Wx + h @ Wh + b``)."""
    mine = {id(w) for w in info.weights}
    return [p.detach() for p in info.owner.parameters(recurse=False)
            if id(p) not in mine and p.is_floating_point()
            and (p.dim() <= 1 or _broadcast_vector(p))]


def _sum_of_maps(calls: list[list], keys: set[int], mean: float, std: float,
                 biases: Sequence[torch.Tensor] = ()) -> bool:
    """Whether the sum ``s_1 + s_2 + ...`` of the outputs of two or more of the maps of the
    weights ``keys`` (their ``j``-th calls added, each call's of one shape; every call pooled),
    alone or with one of the module's ``biases`` added, has the pooled ``mean`` and ``std`` of
    the module's outputs: the module is one linear layer (``x W^T + b + (x A^T) B^T c``, LoRA;
    ``x @ Wx + h @ Wh + b``), not a chain of layers (``tanh(x W1) W2``, whose output is one
    map's). At most :data:`SUM_KEYS` weights are tried (all their subsets)."""
    if len(keys) > SUM_KEYS:
        return False
    outs = {k: [c[1] for c in calls if c[0] == k] for k in keys}
    ordered = sorted(keys, key=lambda k: next(i for i, c in enumerate(calls) if c[0] == k))
    for r in range(len(ordered), 1, -1):
        for subset in itertools.combinations(ordered, r):
            n = {len(outs[k]) for k in subset}
            if len(n) != 1:
                continue
            sums = []
            for j in range(n.pop()):
                parts = [outs[k][j] for k in subset]
                if any(t.shape != parts[0].shape for t in parts):
                    break
                # in their own dtype and order, as the forward added them (a bf16 model's
                # sum rounded; its float64 sum differed by more than STAT_RTOL)
                sums.append(sum(t.detach() for t in parts))
            else:
                if sums and _same_stats(_pooled(sums), mean, std):
                    return True
                for b in biases:
                    try:
                        biased = [t + b for t in sums]
                    except RuntimeError:  # (not broadcastable to the sums)
                        continue
                    if all(t.shape == u.shape for t, u in zip(biased, sums)) \
                            and _same_stats(_pooled(biased), mean, std):
                        return True
    return False


SUM_KEYS = 6
"""The most mapped weights of one layer module whose sums :func:`_sum_of_maps` tries."""

_LOOKUPS = frozenset(("embedding", "embedding_bag"))
"""An ``nn.Embedding``'s own use of its table (not kept: its module's output tells it)."""

STAT_RTOL = 1e-5
"""How far apart (relative) the mean and std of a layer module's outputs and of its map
outputs may be and still be the same tensor's (float32 sums taken in another order)."""


def _untied(calls: list[list], tables: dict[int, frozenset[str]],
            ran: Sequence[LayerInfo]) -> list[list]:
    """``calls`` less the maps of an embedding table that a module of another kind sharing it
    ran (``self.head.weight = self.emb.weight`` and ``self.head(h)``: the head's own rows)."""
    shared = {id(w) for info in ran if not isinstance(info.owner, nn.Embedding)
              for w in info.weights if id(w) in tables}
    return [c for c in calls if c[0] not in shared] if shared else calls


def _pooled(tensors: list[torch.Tensor]) -> torch.Tensor:
    """The entries of ``tensors`` as one float64 vector (calls pooled)."""
    return torch.cat([t.detach().reshape(-1).to(torch.float64) for t in tensors])


def _map_rows(name: str, w: torch.Tensor, outs: list[torch.Tensor],
              gouts: list[torch.Tensor], gw: torch.Tensor | None,
              qs: tuple[float, ...]) -> list[tuple[str, str, float]]:
    """A mapped weight's rows ``(module, quantity, value)``, population statistics in float64
    over every call pooled: ``s`` the maps' outputs (``pre_mean``, ``pre_std``, ``pre_pK``
    by NumPy's ``linear`` rule), ``g = dL/ds`` (``grad_pre_std``, ``grad_pre_absmean``),
    ``W`` (``weight_std``) and ``dL/dW`` (``weight_grad_std``, ``weight_grad_absmean``)."""
    s = _pooled(outs)
    rows = [(name, "pre_mean", s.mean().item()), (name, "pre_std", s.std(correction=0).item())]
    if qs:
        vals = np.percentile(s.cpu().numpy(), qs)
        rows += zip([name] * len(qs), percentile_names("pre", qs), map(float, vals))
    if gouts:
        g = _pooled(gouts)
        rows += [(name, "grad_pre_std", g.std(correction=0).item()),
                 (name, "grad_pre_absmean", g.abs().mean().item())]
    rows.append((name, "weight_std", _pooled([w]).std(correction=0).item()))
    if gw is not None:
        g = _pooled([gw.to_dense() if gw.is_sparse else gw])
        rows += [(name, "weight_grad_std", g.std(correction=0).item()),
                 (name, "weight_grad_absmean", g.abs().mean().item())]
    return rows


def _numbering(numbered: int, calls: list[list], gone: dict[int, str]
               ) -> tuple[dict[int, int], dict[tuple[str, int], int]]:
    """Where the map layers go among the ``numbered`` hooked layers: ``first`` (weight -> the
    layers numbered before its first map, in the order the maps first ran) and the new
    numbers, ``("layer", i)`` for each hooked layer not in ``gone`` and ``("map", key)`` for
    each mapped weight, 1, 2, ... in the order they first ran."""
    first: dict[int, int] = {}
    for key, _, at in calls:
        first.setdefault(key, at)
    slots = [(float(i), 0, ("layer", i)) for i in range(1, numbered + 1) if i not in gone]
    slots += [(at + 0.5, n, ("map", key)) for n, (key, at) in enumerate(first.items())]
    slots.sort()
    return first, {what: k for k, (_, _, what) in enumerate(slots, start=1)}


def map_layers(model: nn.Module, rec: Recording, calls: list[list],
               loose: dict[int, tuple[str, nn.Parameter]], gone: dict[int, str]
               ) -> list[LayerInfo]:
    """The layers of :func:`probe`'s table as :class:`~depthlab.torch.layers.LayerInfo`, in
    its numbering (:func:`_numbering`): the hooked layers that ran, less those in ``gone``,
    and a layer per weight of ``loose`` that ``calls`` show as a linear map's (kind
    ``"map"``; ``owner`` the module holding the parameter; named as :func:`_with_maps` names
    it; ``feature_axis`` 1 for a kernel of more than 2 dimensions, else -1)."""
    first, new = _numbering(rec.numbered, calls, gone)
    named = {id(w): gone[info.index] for info in rec.order if gone.get(info.index)
             for w in info.weights}
    holder = {id(p): m for m in model.modules() for p in m._parameters.values()
              if p is not None}
    out = [dataclasses.replace(info, index=new[("layer", info.index)])
           for info in rec.order if info.index not in gone]
    for key in first:
        name, w = loose[key]
        out.append(LayerInfo(named.get(key, name), holder.get(key, model), [w], "map",
                             1 if w.dim() > 2 else -1, index=new[("map", key)],
                             calls=sum(1 for c in calls if c[0] == key)))
    return sorted(out, key=lambda info: info.index)


def _with_maps(rows: list[tuple[int, str, str, float]], rec: Recording, calls: list[list],
               loose: dict[int, tuple[str, nn.Parameter]],
               grads: dict[int, torch.Tensor | None], gone: dict[int, str],
               qs: tuple[float, ...]) -> list[tuple[int, str, str, float]]:
    """``rows`` with a layer per weight of ``loose`` that ``calls`` show as a linear map's
    (named by the parameter, or by the module it replaces when that has one mapped weight;
    its maps' outputs its ``pre_*``), each numbered where its first map ran among the hooked
    layers (the layers after it renumbered); the rows of the layers in ``gone`` dropped (a
    residual block's ``block_grad_std`` ended by one moves to its last map)."""
    first, new = _numbering(rec.numbered, calls, gone)
    last = {info.index: max(new[("map", id(w))] for w in info.weights if ("map", id(w)) in new)
            for info in rec.order if info.index in gone}
    # a residual block's row stays, at the last map of the replaced layer that ended it
    out = [(new[("layer", i)] if i and i not in gone else last.get(i, 0), m, q, v)
           for i, m, q, v in rows if i not in gone or q == "block_grad_std"]
    named = {id(w): gone[info.index] for info in rec.order if gone.get(info.index)
             for w in info.weights}
    for key in first:
        name, w = loose[key]
        mine = [(s, grads.get(id(s))) for k, s, _ in calls if k == key]
        gouts = [g for _, g in mine if g is not None]
        out += [(new[("map", key)], m, q, v) for m, q, v in
                _map_rows(named.get(key, name), w, [s for s, _ in mine], gouts,
                          grads.get(id(w)), qs)]
    return sorted(out, key=lambda r: r[0])


def _warn_held_weights(rec: Recording, grads: dict[int, torch.Tensor | None],
                       mapped: set[int] = frozenset()) -> None:
    """A RuntimeWarning naming the ``nn.ParameterList``/``nn.ParameterDict`` whose weights the
    loss depends on (a gradient reached them: the forward used them, ``h @ w`` for ``w`` in
    ``self.ws``) beside layers that ran: such a holder has no forward of its own, so there is
    no layer output to read and those weights had no rows and no word (with no other layer
    the probe refuses the model, naming them, :func:`none_ran`)."""
    ran = {id(info) for info in rec.order}
    held = [info for info in rec.layers
            if isinstance(info.owner, (nn.ParameterList, nn.ParameterDict))
            and id(info) not in ran and not any(id(w) in mapped for w in info.weights)
            and any(grads.get(id(w)) is not None for w in info.weights)]
    if held:
        names = ", ".join(f"{info.name!r} ({type(info.owner).__name__}, {len(info.weights)} "
                          f"weight{'s' if len(info.weights) > 1 else ''})" for info in held)
        warnings.warn(f"the forward used the weights in {names} but they are not measured: a "
                      "ParameterList/ParameterDict has no forward of its own, so there is no "
                      "layer output to read (no pre_*, act_*, weight_* rows); expected each "
                      "weight in a module that forward calls (e.g. an nn.Linear)",
                      RuntimeWarning, stacklevel=5)
    measured = {id(w) for info in rec.order for w in info.weights} | set(mapped)
    unrun = [info for info in rec.layers
             if id(info) not in ran and info.owner is not None
             and not isinstance(info.owner, (nn.ParameterList, nn.ParameterDict))
             and any(grads.get(id(w)) is not None and id(w) not in measured
                     for w in info.weights)]
    if unrun:  # F.linear(h, self.fc.weight): its module's forward never ran, so no rows
        names = ", ".join(f"{info.name!r} ({info.kind})" for info in unrun[:4])
        first = unrun[0].name
        warnings.warn(f"the forward used the weights of {names} without calling the module "
                      f"(e.g. F.linear(x, self.{first}.weight)), so they are not measured (no "
                      f"rows: only a module's forward is seen); expected forward to call it "
                      f"(self.{first}(x))", RuntimeWarning, stacklevel=5)


def _warn_new_layers(model: nn.Module, layers: Sequence[Any]) -> None:
    """A RuntimeWarning naming the weight layers the forward created (``self.head =
    nn.Linear(...)`` on its first call): they were not there to be hooked, so they have no
    rows (and the probe removes them again, leaving the model as found)."""
    known = {id(w) for info in layers for w in info.weights}
    new = [info.name for info in weight_modules(model)
           if not any(id(w) in known for w in info.weights)]
    if new:
        warnings.warn(f"the model's forward created the weight layer(s) {', '.join(map(repr, new))}"
                      " during the probe: they are not measured (and are removed again, the "
                      "model left as found); run one forward of the model before probing it",
                      RuntimeWarning, stacklevel=5)


def _weight_grads(loss: torch.Tensor, params: list[torch.Tensor]
                  ) -> dict[int, torch.Tensor | None]:
    """``id(tensor)`` -> ``dloss/dtensor`` (None where unused) for the trainable parameters
    and the inputs that require grad, by ``autograd.grad``; a model with reentrant activation
    checkpointing (``checkpoint(..., use_reentrant=True)``, which refuses ``autograd.grad``) by
    ``loss.backward()`` into emptied ``.grad`` slots, each put back as found after."""
    try:
        got = torch.autograd.grad(loss, params, allow_unused=True, retain_graph=True)
    except RuntimeError as exc:
        if "use_reentrant=True" not in str(exc):
            raise
        warnings.warn("reentrant activation checkpointing (use_reentrant=True): the layers it "
                      "wraps ran without gradients in the forward, so they have no grad_pre_* "
                      "rows, and an activation applied there as a function (torch.relu(h), "
                      "F.gelu(h), h * torch.sigmoid(h)) has no act_* rows (an activation "
                      "module there has them); use_reentrant=False measures them",
                      RuntimeWarning, stacklevel=5)
        leaves = [p for p in params if p.is_leaf]  # (a non-leaf x keeps no .grad)
        kept = [(p, p.grad) for p in leaves]
        for p in leaves:
            p.grad = None
        loss.backward()
        got = {id(p): p.grad for p in leaves}
        for p, g in kept:  # each .grad as found (x's too: it was left holding this backward's)
            p.grad = g
        return got
    return {id(p): g for p, g in zip(params, got)}
