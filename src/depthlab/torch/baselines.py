"""What the torch doctor compares a training run with: the loss and accuracy of the best
constant prediction (cross-entropy: the label entropy ``H = -sum_k p_k log p_k``;
mean squared error: the targets' variance; absolute error and Huber: their robust
centre), and regression targets' scale with the exact standardized-target wrapper.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from ..diagnosis.doctor import huber_center
from .train import (
    binary_threshold,
    class_index_loss,
    loss_parts,
    one_hot_labels,
)


def _regression_kind(loss_fn: Callable) -> str | None:
    """``"mse"`` or ``"l1"`` for a mean squared / absolute error (modules, functions, also in
    a ``functools.partial``), else None: the losses whose gradient scales with the targets'
    unit in a known way (degree 2 and 1), so that training on standardized targets can be
    reproduced exactly (:class:`StandardizedTargets`)."""
    fn, _ = loss_parts(loss_fn)
    if isinstance(fn, nn.MSELoss) or fn is F.mse_loss:
        return "mse"
    if isinstance(fn, nn.L1Loss) or fn is F.l1_loss:
        return "l1"
    return None


def target_scale(loss_fn: Callable, y: torch.Tensor) -> dict[str, Any] | None:
    """For a mean squared or absolute error on floating targets: the training targets'
    per-column ``mean`` and population ``std`` (float64 lists, shaped as one target), which
    the shared rule ``unscaled_targets`` judges (``RunContext.target_stats``); None for any
    other loss (the doctor could not verify its cure exactly), and for 0/1 targets (labels,
    one-hot rows), as the NumPy doctor leaves them."""
    kind = _regression_kind(loss_fn)
    if kind is None or not y.is_floating_point() or y.dim() < 1 or len(y) < 2:
        return None
    yd = y.detach().double()
    if bool(((yd == 0) | (yd == 1)).all()):  # 0/1 labels, one-hot rows: classes, not a scale
        return None  # to fix (as the NumPy doctor's target statistics)
    return {"loss": kind, "mean": yd.mean(0).cpu().tolist(),
            "std": yd.std(0, unbiased=False).cpu().tolist()}


class StandardizedTargets(nn.Module):
    """``model`` trained as on standardized targets ``(y - mean) / std`` while its outputs,
    and so every loss, stay in the targets' units: the forward returns ``mean + std * z``
    (``z = model(x)``); the backward hands ``z`` the gradient that the same loss of ``z`` on
    the standardized targets has (``dL/dout / std`` for a mean squared error, ``dL/dout`` for a
    mean absolute error), so every update equals that of training on standardized targets
    (the torch doctor's cure for ``unscaled_targets``)."""

    def __init__(self, model: nn.Module, mean: Any, std: Any, loss: str) -> None:
        super().__init__()
        self.model = model
        p = next(model.parameters())
        std_t = torch.as_tensor(std, dtype=torch.float64)
        std_t = torch.where(std_t > 0, std_t, torch.ones_like(std_t))  # a constant column
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float64).to(p))
        self.register_buffer("std", std_t.to(p))
        self.register_buffer("back", (1.0 / std_t if loss == "mse" else
                                      torch.ones_like(std_t)).to(p))

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return _Destandardize.apply(self.model(*args, **kwargs), self.mean, self.std,
                                    self.back)


class _Destandardize(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, z: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                back: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(back)
        return mean + std * z

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple:
        back, = ctx.saved_tensors
        return g * back, None, None, None


def constant_loss(loss_fn: Callable, y: torch.Tensor, out: Any) -> float:
    """The loss of the best constant prediction of the training targets ``y`` (what a model
    that learned nothing of its inputs reaches), as
    :func:`depthlab.diagnosis.doctor.constant_loss` computes it, for a torch loss of mean
    reduction without per-class weights: ``CrossEntropyLoss``/``NLLLoss`` (and their
    functions, also in a ``functools.partial``) the entropy of the (label-smoothed) class
    frequencies over the ``out.shape[1]`` classes, the loss's ``ignore_index`` left out, or of
    the mean probability row (with class weights, :func:`_weighted_label_entropy`);
    ``BCEWithLogitsLoss``/``BCELoss`` the mean binary entropy of each target column's mean;
    ``MSELoss`` the mean of each column's variance; ``L1Loss``, ``HuberLoss`` and
    ``SmoothL1Loss`` each column's mean loss at its best constant (the median for L1,
    :func:`_robust_constant_loss`), averaged over the columns. NaN for any other loss,
    ``pos_weight`` or the BCE's ``weight``, class weights with label smoothing, or a reduction
    other than ``"mean"``."""
    from .. import losses as dl_losses
    from ..diagnosis.doctor import constant_loss as shared
    from .probe import loss_ignore_index

    fn, kw = loss_parts(loss_fn)

    def opt(name: str, default: Any = None) -> Any:
        return kw.get(name, getattr(fn, name, default))

    weight = opt("weight")
    if opt("reduction", "mean") != "mean" or opt("pos_weight") is not None or \
            (weight is not None and class_index_loss(fn) is None):
        return math.nan
    if not isinstance(y, torch.Tensor):
        return math.nan
    t = y.detach()
    if class_index_loss(fn) is not None:
        eps = float(opt("label_smoothing", 0.0) or 0.0)
        if not isinstance(out, torch.Tensor) or out.dim() < 2:
            return math.nan
        if weight is not None:  # integer labels, no smoothing: the entropy of q_c ~ w_c n_c
            return _weighted_label_entropy(loss_fn, t, weight, int(out.shape[1])) \
                if eps == 0 else math.nan
        if t.is_floating_point():  # class probabilities (N, C)
            labels = t.cpu().double().numpy() if t.dim() == 2 else None
        else:
            ignore = loss_ignore_index(loss_fn)
            flat = t.reshape(-1)
            flat = flat[flat != (-100 if ignore is None else int(ignore))]
            if len(flat) == 0 or bool((flat < 0).any()) or bool((flat >= out.shape[1]).any()):
                return math.nan
            labels = flat.cpu().numpy()
        if labels is None:
            return math.nan
        return shared(dl_losses.get_loss("cross_entropy", label_smoothing=eps), labels,
                      int(out.shape[1]))
    if isinstance(fn, (nn.BCEWithLogitsLoss, nn.BCELoss)) or binary_threshold(fn) is not None:
        return shared("bce", t.cpu().double().numpy()) if t.is_floating_point() else math.nan
    if isinstance(fn, nn.MSELoss) or fn is F.mse_loss:
        return shared("mse", t.cpu().double().numpy()) if t.is_floating_point() else math.nan
    robust = _robust_loss(fn, opt)
    if robust is not None:
        return _robust_constant_loss(t, robust) if t.is_floating_point() else math.nan
    return math.nan


FITTED_ROWS = 8192
"""Training targets (evenly spaced over the set) on which :func:`fitted_constant_loss` fits
its constant: the mean loss of a constant over them estimates the whole set's."""

FITTED_ENTRIES = 1 << 22
"""At most this many output entries in one loss evaluation of :func:`fitted_constant_loss`
(fewer rows for a large per-example output)."""

FITTED_MIN_ROWS = 1024
"""Fewer rows than this (an output of more than ``FITTED_ENTRIES / FITTED_MIN_ROWS`` entries
per example, a segmentation map's (C, H, W)): not fitted (NaN); a constant per output entry
fitted on a few dozen rows overfits them (21 classes at 64x64, 48 rows: 2.81 against the
class-frequency formula's 3.04)."""


def _map_leaves(tree: Any, kind: type, leaf: Callable[[Any], Any]) -> Any:
    """``tree`` (a ``kind`` leaf, or tuples (named ones too), lists and dicts of them) with
    every instance of ``kind`` replaced by ``leaf(it)``, anything else kept: a model's output
    with its tensors replaced (``kind=torch.Tensor``), and back (``kind=_Constant``)."""
    if isinstance(tree, kind):
        return leaf(tree)
    if isinstance(tree, (tuple, list)):
        parts = [_map_leaves(o, kind, leaf) for o in tree]
        return type(tree)(*parts) if hasattr(tree, "_fields") else type(tree)(parts)
    if isinstance(tree, dict):
        return type(tree)({k: _map_leaves(v, kind, leaf) for k, v in tree.items()})
    return tree


def fitted_constant_loss(loss_fn: Callable, y: torch.Tensor, out: Any,
                         rows: int | None = None) -> float:
    """The best constant prediction's loss for a loss :func:`constant_loss` has no formula for
    (a plain function ``lambda o, t: F.cross_entropy(o, t)``, a custom loss module, a
    ``pos_weight``, a model returning a dict or tuple), found numerically: ``L_c = min_c
    loss_fn(c, y)`` over outputs constant across examples: each floating tensor of ``out`` (the
    model's output on ``rows`` examples: a tensor, or tuples, lists, dicts of them) whose first
    dimension is ``rows`` becomes one value ``c_k`` of its per-example shape, repeated for every
    example (L-BFGS in float64 from its mean over the rows); other parts are passed as ``out``
    has them. ``y``: up to :data:`FITTED_ROWS` evenly spaced training targets (fewer where
their outputs would exceed :data:`FITTED_ENTRIES` entries). Only for a loss
    that is a mean over examples, ``loss_fn(c, [y; y]) = loss_fn(c, y)`` (a sum over examples
    doubles: NaN, since the probe batch's loss and the set's are then not in one unit). NaN
    when no part of ``out`` is per-example, ``y`` is not a tensor, the loss fails or is not a
    finite scalar; the caller's random streams are left as they were."""
    n = len(out) if rows is None and isinstance(out, torch.Tensor) and out.dim() else rows
    if not isinstance(y, torch.Tensor) or y.dim() == 0 or len(y) == 0 or not n:
        return math.nan
    consts: list[torch.Tensor] = []

    def start(t: torch.Tensor) -> Any:
        if t.is_floating_point() and t.dim() >= 1 and len(t) == n:
            consts.append(t.detach().double().mean(dim=0).clone().requires_grad_(True))
            return _Constant(len(consts) - 1, t.dtype)
        return t.detach()

    template = _map_leaves(out, torch.Tensor, start)
    if not consts:
        return math.nan
    devices = [t.device for t in consts]
    most = min(FITTED_ROWS, FITTED_ENTRIES // max(1, sum(c.numel() for c in consts)))
    if most < min(len(y), FITTED_MIN_ROWS):  # a constant per entry fitted on a few rows
        return math.nan  # underestimates (segmentation maps: 2.81 against the formula's 3.04)
    picked = y[torch.linspace(0, len(y) - 1, min(len(y), most)).round().long()
               .to(y.device)] if len(y) > most else y

    def loss_of(targets: torch.Tensor) -> torch.Tensor:
        def fill(part: Any) -> Any:
            c = consts[part.index]
            return c.to(part.dtype).unsqueeze(0).expand(len(targets), *c.shape)

        o = _map_leaves(template, _Constant, fill)
        value = loss_fn(o, targets)
        if not isinstance(value, torch.Tensor) or value.numel() != 1:
            raise ValueError("not a scalar loss")
        return value.reshape(()).double()

    cuda = sorted({d.index or 0 for d in devices if d.type == "cuda"})
    try:
        with torch.random.fork_rng(devices=cuda), torch.enable_grad():
            opt = torch.optim.LBFGS(consts, lr=1.0, max_iter=100, tolerance_grad=1e-10,
                                    tolerance_change=1e-12, line_search_fn="strong_wolfe")

            def closure() -> torch.Tensor:
                opt.zero_grad()
                value = loss_of(picked)
                value.backward()
                return value

            opt.step(closure)
            with torch.no_grad():
                once = float(loss_of(picked))
                twice = float(loss_of(torch.cat([picked, picked])))
    except Exception:  # noqa: BLE001 - a loss that cannot take a constant output: not known
        return math.nan
    if not (math.isfinite(once) and math.isfinite(twice)) or \
            abs(twice - once) > 1e-3 * max(1.0, abs(once)):
        return math.nan
    return once


@dataclass(frozen=True)
class _Constant:
    """Where :func:`fitted_constant_loss` puts its constant number ``index`` (of ``dtype``)."""

    index: int
    dtype: torch.dtype


def _robust_loss(fn: Any, opt: Callable[[str, Any], Any]) -> float | None:
    """The transition point of an ``L1Loss`` (0), ``HuberLoss`` (``delta``, default 1) or
    ``SmoothL1Loss`` (``beta``, default 1; 0 is the L1 loss) as :func:`_huber_loss` takes it
    (a negative width for the smooth L1 loss, whose quadratic part is divided by ``beta``), or
    None for any other loss."""
    if isinstance(fn, nn.L1Loss) or fn is F.l1_loss:
        return 0.0
    if isinstance(fn, nn.HuberLoss) or fn is F.huber_loss:
        delta = opt("delta", 1.0)
        return float(delta) if isinstance(delta, (int, float)) and delta > 0 else None
    if isinstance(fn, nn.SmoothL1Loss) or fn is F.smooth_l1_loss:
        beta = opt("beta", 1.0)
        return -float(beta) if isinstance(beta, (int, float)) and beta >= 0 else None
    return None


def _huber_loss(r: np.ndarray, width: float) -> np.ndarray:
    """Entry-wise loss of the residuals ``r`` (see :func:`_robust_loss`): ``|r|`` for width 0,
    torch's ``huber_loss(delta=width)`` for width > 0, ``smooth_l1_loss(beta=-width)`` for
    width < 0."""
    a = np.abs(r)
    if width == 0:
        return a
    d = abs(width)
    huber = np.where(a < d, 0.5 * r * r, d * (a - 0.5 * d))
    return huber if width > 0 else huber / d


def _robust_constant_loss(y: torch.Tensor, width: float) -> float:
    """:func:`constant_loss` of an L1, Huber or smooth L1 loss (mean reduction): per target
    column, the loss is least at the column's median (L1), or where the mean clipped residual
    ``clip(c - y, -d, d)`` is 0 (Huber, smooth L1: increasing in ``c``, found by bisection
    between the column's extremes in float64); the mean over the columns of each one's mean
    loss there."""
    cols = y.detach().reshape(len(y), -1).cpu().double().numpy()
    if cols.size == 0 or not np.isfinite(cols).all():
        return math.nan
    if width == 0:
        c = np.median(cols, axis=0)
    else:
        c = huber_center(cols, abs(width))
    return float(_huber_loss(cols - c, width).mean(axis=0).mean())


def constant_accuracy(loss_fn: Callable, y: torch.Tensor, y_val: torch.Tensor | None,
                      output: Any = None) -> float:
    """The validation accuracy of the best constant prediction (the most a network that learned
    nothing of its inputs scores on ``y_val``), as
    :func:`depthlab.diagnosis.doctor.constant_accuracy` computes it and as
    :func:`depthlab.torch.train.evaluate` scores: for integer labels the share of the most
    frequent validation label (negative labels and the loss's ``ignore_index`` left out, per
    entry for dense labels); for a binary cross-entropy with 0/1 targets, per position the share
    of validation entries of its more frequent value, averaged. NaN without validation targets
    or for targets of another kind (no accuracy then; ``y``, the training targets, is checked
    for its kind). ``output``: the model's output on a few rows, ``(n, C, ...)``; labels
    ``>= C`` are left out too, as the accuracy leaves them out (a label past the classes that
    the loss took is one it ignored: ``lambda o, t: F.cross_entropy(o, t, ignore_index=255)``,
    whose 255s were the most frequent 'class', 0.5 where the best class scores 0.4)."""
    from .probe import loss_ignore_index

    if not isinstance(y, torch.Tensor) or not isinstance(y_val, torch.Tensor) \
            or y.dim() == 0 or y_val.dim() == 0 or len(y) == 0 or len(y_val) == 0:
        return math.nan
    if binary_threshold(loss_fn) is not None:
        hard = all(bool(((t == 0) | (t == 1)).all()) for t in (y, y_val))
        if not (y.is_floating_point() and hard and y.shape[1:] == y_val.shape[1:]):
            return math.nan
        up = (y_val == 1).double().mean(dim=0)  # each position's share of ones
        return float(torch.maximum(up, 1.0 - up).mean())
    hot, hot_val = one_hot_labels(loss_fn, y), one_hot_labels(loss_fn, y_val)
    if hot is not None and hot_val is not None:  # one-hot targets: as their class indices,
        y, y_val = hot, hot_val  # which evaluate's accuracy reads
    if y.is_floating_point() or y_val.is_floating_point() or y.is_complex() or y_val.is_complex():
        return math.nan
    ignore = loss_ignore_index(loss_fn)
    classes = int(output.shape[1]) if isinstance(output, torch.Tensor) and output.dim() >= 2 \
        and output.shape[1] >= 2 else None

    def kept(t: torch.Tensor) -> torch.Tensor:
        flat = t.reshape(-1)
        keep = flat >= 0
        if classes is not None:
            keep &= flat < classes
        if ignore is not None:
            keep &= flat != int(ignore)
        return flat[keep]

    labels, held = kept(y), kept(y_val)
    if len(labels) == 0 or len(held) == 0:
        return math.nan
    return float(torch.bincount(held.long()).max()) / len(held)


def _weighted_label_entropy(loss_fn: Callable, y: torch.Tensor, weight: Any, classes: int
                            ) -> float:
    """:func:`constant_loss` of a class-weighted ``CrossEntropyLoss``/``NLLLoss`` (mean
    reduction: ``sum_i w_(y_i) (-log p_(y_i)) / sum_i w_(y_i)``) on integer labels ``y``: a
    constant prediction ``p`` costs ``-sum_c q_c log p_c`` with ``q_c = w_c n_c / sum_k w_k
    n_k``, least at ``p = q``: the entropy of ``q`` (NaN for labels it cannot read)."""
    from .probe import loss_ignore_index

    if y.is_floating_point() or not isinstance(weight, torch.Tensor) or \
            weight.shape != (classes,):
        return math.nan
    ignore = loss_ignore_index(loss_fn)
    flat = y.reshape(-1)
    flat = flat[flat != (-100 if ignore is None else int(ignore))]
    if len(flat) == 0 or bool((flat < 0).any()) or bool((flat >= classes).any()):
        return math.nan
    counts = np.bincount(flat.cpu().numpy(), minlength=classes).astype(np.float64)
    mass = weight.detach().cpu().double().numpy() * counts
    if not np.isfinite(mass).all() or (mass < 0).any() or mass.sum() <= 0:
        return math.nan
    q = mass[mass > 0] / mass.sum()
    return float(-(q * np.log(q)).sum())
