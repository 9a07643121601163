"""``doctor``: train briefly with probes, diagnose, and (optionally) verify the prescriptions."""

from __future__ import annotations

import copy
import json
import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..backend import data_array
from ..backend import rng as make_rng
from ..data.standardize import target_moments
from ..jsonable import jsonable
from ..layers import Activation, AlphaDropout, BatchNorm, Dropout, Layer, Residual, Sequential
from ..losses import REGISTRY as LOSS_REGISTRY
from ..losses import one_hot_labels
from ..models import mlp
from ..network import Network
from ..optimizers import Optimizer, get_optimizer
from ..probes.recorder import ProbeRecorder, _update_ratio
from ..probes.stats import measurement_mode, probe_held_out
from ..spec import ModelSpec, TrainSpec, check_field
from ..training.data_checks import first_nonfinite, transposed_hint
from ..training.history import History
from ..training.trainer import Callback, Trainer, _check_callbacks, _check_unused, _optimizer_kwargs
from ..validators import did_you_mean, positive_int, torch_module_hint
from .findings import Diagnosis, Finding, Verification
from .prescriptions import TRAINING_KEYS
from .rules import (
    DATA_DRIVEN_INITS,
    DIVERGENCE_RISE,
    EARLY_UPDATE_STEPS,
    INIT_MISMATCH,
    INIT_SIGNAL_METRIC,
    NORM_GRAD,
    RULES,
    RunContext,
    evaluate,
    init_signal_factor,
    norm_gradient_frame,
)

PROBE_EXAMPLES = 300
"""Size of the fixed probe batch (Glorot & Bengio's 300 held-out examples)."""

VAL_FRACTION = 0.2
"""Share held out for validation when ``data`` is a bare ``(x, y)`` pair."""

LOSS_TOLERANCE = 0.01
"""Relative change of the final train loss within which a verified cure neither helped nor
hurt (run-to-run noise: a loss of 0.008158 -> 0.008156 is no improvement)."""

ACC_TOLERANCE = 0.01
"""Change of the validation accuracy (a fraction) within which a verified cure neither helped
nor hurt."""

CHANCE_ACC_Z = 2.0
"""Standard errors above the best constant prediction's validation accuracy ``a`` that an
accuracy must end to count as above it, on ``n`` validation examples:
``a + CHANCE_ACC_Z sqrt(a (1 - a) / n)`` (a guess's accuracy spreads about that much; after
one SGD step a cure's 0.15 against a constant prediction's 0.122 on 180 digits, 1.2 standard
errors, with its train loss above the constant's, read 'helped')."""

METRIC_TOLERANCE = 0.01
"""Relative change of a finding's own metric within which a verified cure that left the
finding in place did not lower it (run-to-run noise: gradient clipping, which rescales every
layer's gradient alike, moved an exploding-gradient depth of 39.63 depth scales to 39.49)."""


@dataclass
class _Data:
    x: np.ndarray
    y: np.ndarray
    x_val: np.ndarray | None
    y_val: np.ndarray | None


def _unpack(data: Any, seed: int | None) -> _Data:
    """Accept a Dataset-like object (``x_train``, ``y_train``, optional ``x_val``/``y_val``) or a
    tuple ``(x, y)`` / ``(x, y, x_val, y_val)``. A bare pair is split: a seeded permutation holds
    out ``VAL_FRACTION`` of the rows for validation (when there are at least 10)."""
    if hasattr(data, "x_train") and hasattr(data, "y_train"):
        x, y = data_array(data.x_train, "x_train"), data_array(data.y_train, "y_train")
        xv, yv = getattr(data, "x_val", None), getattr(data, "y_val", None)
        if xv is None or yv is None or len(xv) == 0:
            xv = yv = None
        return _Data(x, y, None if xv is None else data_array(xv, "x_val"),
                     None if yv is None else data_array(yv, "y_val"))
    if isinstance(data, (tuple, list)) and len(data) in (2, 4):
        x, y = data_array(data[0], "x"), data_array(data[1], "y")
        n = x.shape[0] if x.ndim else 0
        if y.ndim == 0 or n != y.shape[0]:
            raise ValueError(f"x has {n} rows but y has {y.shape[0] if y.ndim else 0}"
                             + transposed_hint(n, y.shape))
        if len(data) == 4:
            xv, yv = data_array(data[2], "validation x"), data_array(data[3], "validation y")
            nv = xv.shape[0] if xv.ndim else 0
            if yv.ndim == 0 or nv != yv.shape[0]:
                raise ValueError(f"validation x has {nv} rows but validation y has "
                                 f"{yv.shape[0] if yv.ndim else 0}")
            if nv == 0:  # an empty validation set is none, as for a Dataset
                xv = yv = None
            return _Data(x, y, xv, yv)
        if n < 10:
            return _Data(x, y, None, None)
        _check_finite_rows(x, y)  # before the split, whose rows are not the caller's
        order = make_rng(seed).permutation(n)
        k = max(1, int(round(VAL_FRACTION * n)))
        return _Data(x[order[k:]], y[order[k:]], x[order[:k]], y[order[:k]])
    raise TypeError(
        "data must be a Dataset (with x_train, y_train, x_val, y_val) or a tuple (x, y) or "
        f"(x, y, x_val, y_val), got {type(data).__name__}"
        + (f" of {len(data)} items" if isinstance(data, (tuple, list)) else "")
    )


def _check_finite_rows(x: np.ndarray, y: np.ndarray) -> None:
    """A ValueError naming the first NaN or infinite entry of a bare ``(x, y)`` pair by its row
    (and column) in the caller's arrays: after the seeded split, the training checks named it
    "validation x ... row 5" for the caller's row 2. Non-numeric data are left to those checks
    (their TypeErrors name the dtype)."""
    for name, a in (("x", x), ("y", y)):
        if a.dtype.kind != "f":
            continue
        bad = first_nonfinite(a)
        if bad is not None:
            where = f"row {bad[0]}" + (f", column {bad[1]}" if len(bad) >= 2 else "")
            raise ValueError(f"{name} contains NaN or infinity (first at {where}); accepted: "
                             "finite numbers")


def nonfinite_parameters(net: Network) -> list[tuple[str, int, int]]:
    """``(name, count, size)`` of each parameter ``p`` of ``net`` holding values with
    ``not isfinite(p)`` (NaN or +-inf, written into it by hand or loaded so)."""
    bad: list[tuple[str, int, int]] = []
    for p in net.parameters():
        value = np.asarray(p.value)
        n = int((~np.isfinite(value)).sum())
        if n:
            bad.append((p.name, n, int(value.size)))
    return bad


def name_nonfinite_weights(findings: list[Finding], bad: list[tuple[str, int, int]]) -> None:
    """A divergence at the first step of a model whose initial parameters ``bad`` (``(name,
    count, size)`` each, :func:`nonfinite_parameters` or the torch doctor's) hold NaN or
    infinity says so: its message gains ``Parameter 'NAME' holds N non-finite value(s) of SIZE
    before any update: nothing overflowed ...``, and 'the initial weights overflow' in its
    message and prescription reads 'the initial weights are not finite' (a re-initialization
    replaces them)."""
    if not bad:
        return
    name, n, size = bad[0]
    more = f" ({len(bad) - 1} more parameter(s) too)" if len(bad) > 1 else ""
    for f in findings:
        if f.kind != "divergence" or not (f.evidence.get("step") == 1
                                           or f.evidence.get("before_update")):
            continue
        f.evidence["nonfinite_parameter"] = name
        f.message += (f" Parameter {name!r} holds {n} non-finite value(s) of {size} before "
                      f"any update{more}: nothing overflowed, and the first loss is NaN at any "
                      f"learning rate.")
        f.message = f.message.replace("the initial weights overflow",
                                      "the initial weights are not finite")
        f.prescription_text = f.prescription_text.replace(
            "the initial weights overflow", "the initial weights are not finite")


def _check_mean_loss(loss: Any) -> None:
    """A ValueError for a loss object whose ``reduction`` is not "mean": the rules compare its
    values with mean losses (the best constant prediction's, a cure's), so a summed loss (B
    times the mean) read as a network far above chance. An unknown name is left to the
    training run's own check."""
    try:
        fn = LOSS_REGISTRY.build(loss)
    except (ValueError, TypeError):
        return
    reduction = getattr(fn, "reduction", "mean")
    if reduction != "mean":
        raise ValueError(f"loss={fn!r}: the doctor compares mean losses (the best constant "
                         f"prediction's, each cure's); accepted: reduction='mean', got "
                         f"{reduction!r}")


def _resolve_auto(sizes: Any, data: Any, seed: int | None, loss: Any) -> Any:
    """``sizes`` with an ``"auto"`` first width replaced by the data's features and an
    ``"auto"`` last one by the targets: a 2-D ``y``'s columns (one-hot, probabilities,
    multi-label or regression targets), 1 for a 1-D ``y`` under ``binary_cross_entropy`` or a
    regression loss, else the classes of integer labels; ValueError when ``y`` tells none
    (strings, booleans, NaN). Other sizes unchanged (``mlp`` checks them)."""
    if isinstance(sizes, str | bytes) or not hasattr(sizes, "__len__") or len(sizes) < 2 or \
            not any(isinstance(s, str) and s == "auto" for s in (sizes[0], sizes[-1])):
        return sizes
    d = _unpack(data, seed)
    sizes = list(sizes)
    if isinstance(sizes[0], str) and sizes[0] == "auto":
        if d.x.ndim != 2:  # was: '"auto" is resolved from the data by `depthlab run`'
            raise ValueError(f"sizes[0] = \"auto\" cannot be resolved from x with "
                             f"{d.x.ndim} dimension{'s' if d.x.ndim != 1 else ''} (rows of "
                             f"shape {d.x.shape[1:]}); accepted: x of shape (n, features), "
                             "e.g. images as x.reshape(len(x), -1)")
        sizes[0] = int(d.x.shape[1])
    if isinstance(sizes[-1], str) and sizes[-1] == "auto":
        y = d.y
        if d.y_val is not None and d.y.ndim == 1 and d.y_val.ndim == 1:  # a class only in val
            y = np.concatenate([d.y, d.y_val])
        try:
            fn = LOSS_REGISTRY.build(loss)
        except (ValueError, TypeError):
            fn = None  # named by the training run's own check
        bce = fn is not None and fn.name == "binary_cross_entropy"
        # a regression loss (mse, huber) fits the target's own width: 1 for a 1-D y (its
        # largest value + 1, as for class labels, gave 6 outputs for targets up to 5.2 and
        # 0 for negative ones; the loss then refused the shapes)
        regression = fn is not None and not fn.has_accuracy
        if y.ndim == 2:
            sizes[-1] = int(y.shape[1])
        elif bce or (regression and y.ndim == 1):
            sizes[-1] = 1
        elif y.ndim == 1 and y.size and np.issubdtype(y.dtype, np.number) and \
                not np.issubdtype(y.dtype, np.bool_) and np.isfinite(y).all():
            sizes[-1] = max(int(np.max(y)) + 1, 1)
        else:
            what = ("no rows" if not y.size else f"values of dtype {y.dtype}"
                    if not np.issubdtype(y.dtype, np.number) or
                    np.issubdtype(y.dtype, np.bool_) else "NaN or infinity"
                    if y.ndim == 1 else f"shape {y.shape}")
            raise ValueError(f"sizes[-1] = \"auto\" cannot be resolved from y, which holds "
                             f"{what}; accepted: integer class labels 0..K-1 (one per row) or "
                             f"an (n, K) array of targets, or the output width in sizes")
    return sizes


@dataclass
class _Run:
    ctx: RunContext
    findings: list[Finding]
    metrics_by_kind: dict[str, float]
    probes: Any = None  # the probe table stored (ctx.frame: the rules' frame; see _Recorder)

    @property
    def final(self) -> dict[str, float]:
        """Final train/validation metrics of the run."""
        return self.ctx.metrics


def _final_metrics(hist: History, steps: int) -> dict[str, float]:
    last = hist.final()
    diverged = hist.diverged
    nan = math.nan
    return {
        "train_loss": nan if diverged else float(last.get("train_loss", nan)),
        "train_acc": nan if diverged else float(last.get("train_acc", nan)),
        "val_loss": nan if diverged else float(last.get("val_loss", nan)),
        "val_acc": nan if diverged else float(last.get("val_acc", nan)),
        "diverged": bool(diverged),
        # the step whose loss was not finite, as the divergence finding and the trainer's
        # report number it (``steps`` counts the updates before it: one fewer)
        "diverged_step": int(hist.divergence.step) if diverged else nan,
        "steps": int(hist.steps),
        "budget": int(steps),
        "seconds": float(hist.seconds),
    }


def _bn_drift(net: Network, x: np.ndarray) -> list[dict[str, float]]:
    """Per BatchNorm (forward order): running (inference) statistics vs the statistics of the
    probe batch ``x`` (training-mode forward without updating the running statistics).
    ``mean_shift`` = mean over units of |mu_run - mu_batch| / sqrt(var_batch + eps);
    ``log_var_ratio`` = mean over units of |log((var_run + eps) / (var_batch + eps))|."""
    bns = net.batchnorms()
    if not bns or x.shape[0] < 2:
        return []
    out = []
    with measurement_mode(net), np.errstate(all="ignore"):
        net.forward(x, training=True)
        for bn in bns:
            xin = np.asarray(bn.x, dtype=np.float64)
            mu_b, var_b = xin.mean(axis=0), xin.var(axis=0)
            try:
                mu_r, var_r = (np.asarray(v, dtype=np.float64) for v in bn.inference_stats())
            except RuntimeError:
                continue
            sd = np.sqrt(var_b + bn.eps)
            out.append({
                "mean_shift": float(np.mean(np.abs(mu_r - mu_b) / sd)),
                "log_var_ratio": float(np.mean(np.abs(np.log((var_r + bn.eps)
                                                              / (var_b + bn.eps))))),
            })
    net.clear_cache()
    return out


def _bn_losses(net: Network, x: np.ndarray, y: np.ndarray, loss: Any) -> dict[str, float]:
    """The probe batch's loss with the batch's own statistics (training-mode forward, the
    running statistics left alone) and in inference mode (the running or population
    statistics), for a network with batch norm (else ``{}``): drifts too small to flag in any
    one BN layer compound over many (20 BN layers each off by <= 0.25 gave an inference loss
    of 6.2 at chance where the batch statistics gave 0.66)."""
    if not net.batchnorms() or x.shape[0] < 2:
        return {}
    try:
        fn = LOSS_REGISTRY.build(loss)
        with measurement_mode(net), np.errstate(all="ignore"):
            batch = float(fn(net.forward(x, training=True), y))
            inference = float(fn(net.forward(x, training=False), y))
    except (ValueError, TypeError, RuntimeError):
        return {}
    finally:
        net.clear_cache()
    return {"loss_batch_stats": batch, "loss_inference": inference}


def _point_norms(net: Network) -> tuple[dict[int, BatchNorm], dict[int, BatchNorm]]:
    """``(before, after)``, each ``id(activation) -> BatchNorm``: ``before`` the norm whose
    output the activation takes (``Dense -> BatchNorm -> act``, a pre-activation residual
    branch's ``BatchNorm -> act``; not an activation of a residual block's sum), ``after``
    the norm that takes the activation's output itself (``Dense -> act -> BatchNorm``), both
    through dropout (the identity in a measurement pass)."""
    before: dict[int, BatchNorm] = {}
    after: dict[int, BatchNorm] = {}

    def walk(layer: Layer, prev: Layer | None) -> Layer | None:
        if isinstance(layer, Residual):
            walk(layer.branch, prev)
            return layer  # its output is a sum, no norm's or activation's output
        if isinstance(layer, Sequential):
            for child in layer.layers:
                prev = walk(child, prev)
            return prev
        if isinstance(layer, Dropout | AlphaDropout):
            return prev
        if isinstance(layer, Activation) and isinstance(prev, BatchNorm):
            before[id(layer)] = prev
        if isinstance(layer, BatchNorm) and isinstance(prev, Activation):
            after[id(prev)] = layer
        return layer

    walk(net, None)
    return before, after


class _Recorder(ProbeRecorder):
    """The doctor's :class:`ProbeRecorder`: at each statistics record also a
    :data:`~depthlab.diagnosis.rules.NORM_GRAD` row per hidden layer whose activation takes a
    batch norm's output, or (when none) whose activation's output a batch norm takes: the std
    of dL/dxhat = gamma * dL/dy at that norm (float64), which the gradient rules read in place
    of ``grad_pre_std`` (:func:`~depthlab.diagnosis.rules.norm_gradient_frame`; the stored
    table keeps the probe's own rows), as the torch doctor does at a norm module. Either way
    the gradient at the layer's own output is the norm's divided by the std of the norm's
    input, which follows the input's scale (``Dense -> relu -> BatchNorm`` on pixels 0..255:
    'vanishing', 39x; on x 0.05 'exploding', 121x, in a network that trains the same)."""

    def _probe_record(self, step: int, final: bool = False) -> None:
        # the gradient reaching each norm after an activation, taken in its backward (a
        # NumPy layer keeps no output gradient): the instance's backward wrapped meanwhile
        before, after = _point_norms(self._net) if self._net is not None else ({}, {})
        self._norms = (before, after)
        self._after_grads: dict[int, float] = {}
        wrapped = [bn for act_id, bn in after.items() if act_id not in before]

        def wrap(bn: BatchNorm) -> Any:
            inner = bn.backward

            def backward(grad: Any, input_grad: bool = True) -> Any:
                self._after_grads[id(bn)] = _xhat_std(grad, bn)
                return inner(grad, input_grad)

            return backward

        for bn in wrapped:
            bn.backward = wrap(bn)
        try:
            super()._probe_record(step, final)
        finally:
            for bn in wrapped:
                del bn.backward

    def _layer_records(self, step: int, hist: bool, stats: bool = True,
                       snapshots: dict | None = None) -> int:
        copied = super()._layer_records(step, hist, stats, snapshots)
        before, after = getattr(self, "_norms", ({}, {}))
        if stats and self._points and (before or after):
            got = getattr(self, "_after_grads", {})
            for p in self._points:
                key = id(p.activation)
                if key in before:
                    g = p.activation.grad_s
                    value = math.nan if g is None else _xhat_std(g, before[key])
                elif key in after and id(after[key]) in got:
                    value = got[id(after[key])]
                else:
                    continue
                self._add(step, p.index, NORM_GRAD, value)
        return copied


class _EarlyRatios(Callback):
    """``||W_k - W_(k-1)|| / ||W_(k-1)||`` of each probe point's Dense at the first
    ``EARLY_UPDATE_STEPS`` updates that the recorder does not probe (step ``k`` not a multiple
    of ``every``): the rules' ``RunContext.early_update_ratios`` (Adam's first steps are its
    largest; the probed steps 10, 20, ... missed them). One weight copy per such update."""

    def __init__(self, net: Network, every: int) -> None:
        self.points = [p for p in net.probe_points() if p.dense is not None]
        self.every = every
        self.values: dict[tuple[int, int], float] = {}
        self._before: dict[int, Any] = {}

    def before_update(self, trainer: Trainer, step: int) -> None:
        if step <= EARLY_UPDATE_STEPS and step % self.every:
            self._before = {id(p.dense): p.dense.W.value.copy() for p in self.points}

    def after_update(self, trainer: Trainer, step: int, loss: float) -> None:
        if not self._before:
            return
        ratios: dict[int, float | None] = {}
        for p in self.points:
            key = id(p.dense)
            if key not in ratios:  # w0 may be overwritten: one ratio per Dense
                ratios[key] = _update_ratio(p.dense.W, self._before[key])
            r = ratios[key]
            self.values[(step, p.index)] = math.nan if r is None else float(r)
        self._before = {}

    def series(self) -> pd.Series | None:
        if not self.values:
            return None
        return pd.Series(list(self.values.values()), index=pd.MultiIndex.from_tuples(
            list(self.values), names=["step", "layer"]), dtype=np.float64)


def _xhat_std(grad: Any, bn: BatchNorm) -> float:
    """The population std of dL/dxhat = gamma * ``grad`` (``grad`` = dL/dy at ``bn``'s
    output), in float64."""
    g = np.asarray(grad, dtype=np.float64)
    if not g.size:
        return math.nan
    with np.errstate(all="ignore"):
        return float((g * np.asarray(bn.gamma.value, dtype=np.float64)).std())


def _train(net: Network, config: dict[str, Any], data: _Data, settings: dict[str, Any],
           callbacks: Sequence[Callback] = ()) -> _Run:
    # batch norm over a batch of 2 rows maps each unit to -1 and +1 whatever the inputs, so
    # no gradient reaches the layers below it (layer 1's grad_pre_std 125x below layer 2's in
    # a healthy 2-layer net): with fewer than BN_PROBE_ROWS held-out rows every run of the
    # diagnosis (a batch-norm cure's too, compared with the baseline) probes training rows
    if settings.get("standardize"):
        data = _standardized(data)
    original = data
    if settings.get("standardize_targets"):
        data = _standardized_targets(data)
    held_out = probe_held_out(None if data.x_val is None else len(data.x_val), len(data.x))
    src_x = data.x_val if held_out else data.x
    src_y = data.y_val if held_out else data.y
    px, py = src_x[:PROBE_EXAMPLES], src_y[:PROBE_EXAMPLES]
    rec = _Recorder(px, py, settings["loss"], every=settings["probe_every"],
                    histogram_steps=())
    early = _EarlyRatios(net, settings["probe_every"])
    trainer = Trainer(net, loss=settings["loss"], optimizer=settings["optimizer"],
                      lr=settings["lr"], optimizer_kwargs=settings["optimizer_kwargs"],
                      batch_size=settings["batch_size"], epochs=None,
                      max_steps=settings["steps"], seed=settings["seed"],
                      l1=settings.get("l1", 0.0), l2=settings.get("l2", 0.0),
                      callbacks=[rec, early, *callbacks])
    with np.errstate(all="ignore"):
        hist = trainer.fit(data.x, data.y, data.x_val, data.y_val)
        drift = [] if hist.diverged else _bn_drift(net, px.astype(net.dtype, copy=False))
        bn_losses = {} if hist.diverged else _bn_losses(
            net, px.astype(net.dtype, copy=False), py, settings["loss"])
    metrics = _final_metrics(hist, settings["steps"])
    if data is not original and not hist.diverged:
        # in the targets' own units, as the runs it is compared with (and constant_loss) are
        metrics.update(_original_losses(net, original, data, settings["loss"]))
    rules_frame, probes = norm_gradient_frame(rec.frame())
    ctx = RunContext(net=net, config=config, settings=settings, frame=rules_frame,
                     history=hist, metrics=metrics,
                     bn_drift=drift, probe_examples=int(px.shape[0]), bn_losses=bn_losses,
                     chance_loss=constant_loss(settings["loss"], py, _outputs(config)),
                     input_stats=_input_stats(data.x),
                     target_stats=_target_stats(settings["loss"], data.y),
                     early_update_ratios=early.series())
    findings, by_kind = evaluate(ctx)  # in the rules' priority order
    return _Run(ctx, findings, by_kind, probes)


def _standardized(data: _Data) -> _Data:
    """``data`` with every ``x`` standardized by the training rows' per-feature mean and std
    (``depthlab.data.fit_standardizer``: float64, a constant feature maps to 0), as
    ``fit(standardize=True)`` does; the probe batch is then standardized alike."""
    from ..data.standardize import apply_standardizer, fit_standardizer

    x = np.asarray(data.x, dtype=np.float64)
    mean, std = fit_standardizer(x)
    xv = None if data.x_val is None else apply_standardizer(
        np.asarray(data.x_val, dtype=np.float64), mean, std)
    return _Data(apply_standardizer(x, mean, std), data.y, xv, data.y_val)


def _target_columns(y: Any) -> np.ndarray | None:
    """``y`` as float64 columns (n, k), or None when it is not a finite 1-D or 2-D array."""
    y = np.asarray(y)
    if y.ndim not in (1, 2) or y.shape[0] == 0 or y.dtype.kind not in "fiub":
        return None
    cols = y.astype(np.float64).reshape(y.shape[0], -1)
    return cols if np.isfinite(cols).all() else None


def _target_moments(y: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-column mean and std (float64, a constant column's std 1) of the targets ``y``."""
    cols = _target_columns(y)
    return None if cols is None else target_moments(cols)


def _standardized_targets(data: _Data) -> _Data:
    """``data`` with ``y`` and ``y_val`` as ``(y - mean) / std`` per column, the training
    rows' statistics (the unscaled_targets cure; unchanged when ``y`` is not numeric)."""
    m = _target_moments(data.y)
    if m is None:
        return data
    mean, std = m

    def scale(y: Any) -> Any:
        if y is None:
            return None
        a = np.asarray(y, dtype=np.float64)
        return ((a.reshape(a.shape[0], -1) - mean) / std).reshape(a.shape)

    return _Data(data.x, scale(data.y), data.x_val, scale(data.y_val))


def _original_losses(net: Network, original: _Data, scaled: _Data, loss: Any
                     ) -> dict[str, float]:
    """``train_loss``/``val_loss`` of a network trained on standardized targets, with its
    predictions mapped back (``pred * std + mean``) against the original targets."""
    m = _target_moments(original.y)
    out: dict[str, float] = {}
    if m is None:
        return out
    mean, std = m
    fn = LOSS_REGISTRY.build(loss)
    for key, x, y in (("train_loss", scaled.x, original.y), ("val_loss", scaled.x_val,
                                                              original.y_val)):
        if x is None or y is None:
            continue
        with np.errstate(all="ignore"):
            pred = np.asarray(net.predict(x), dtype=np.float64)
            pred = pred.reshape(pred.shape[0], -1) * std + mean  # (n, k), as the columns
            out[key] = float(fn.forward(pred, np.asarray(y, dtype=np.float64)))
        fn._cache = None
    return out


def _target_stats(loss: Any, y: Any) -> dict[str, Any]:
    """Per-column ``mean`` and ``std`` (float64) of regression targets (``mse``, ``huber``;
    not one-hot rows or 0/1 labels): what ``rules.rule_unscaled_targets`` judges; ``{}``
    otherwise."""
    try:
        name = LOSS_REGISTRY.build(loss).name
    except (ValueError, TypeError):
        return {}
    if name not in ("mse", "huber") or one_hot_labels(y) is not None:
        return {}
    cols = _target_columns(y)
    # 0/1 labels (mse on a binary class, 90% ones: offset 3) are classes, not a scale to fix
    if cols is None or ((cols == 0) | (cols == 1)).all():
        return {}
    return {"mean": cols.mean(axis=0), "std": cols.std(axis=0)}


def _input_stats(x: np.ndarray) -> dict[str, Any]:
    """Per-feature ``mean`` and ``std`` (float64) of the training inputs ``x`` (``{}`` when
    not a finite 2-D array): what ``rules.rule_unscaled_inputs`` judges."""
    if x.ndim != 2 or x.shape[0] == 0 or x.dtype.kind not in "fiub":
        return {}
    chunk = max(1, (1 << 22) // max(1, x.shape[1]))  # float64 temporaries of <= 32 MiB
    with np.errstate(all="ignore"):
        mean = sum(np.sum(x[i:i + chunk], axis=0, dtype=np.float64)
                   for i in range(0, x.shape[0], chunk)) / x.shape[0]
        var = sum(np.sum((np.asarray(x[i:i + chunk], dtype=np.float64) - mean) ** 2, axis=0)
                  for i in range(0, x.shape[0], chunk)) / x.shape[0]
        std = np.sqrt(var)
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std))):
        return {}
    return {"mean": mean, "std": std}


def _same_parameters(a: Network, b: Network) -> bool:
    pa, pb = a.parameters(), b.parameters()
    return len(pa) == len(pb) and all(
        p.value.shape == q.value.shape and np.array_equal(p.value, q.value) for p, q in zip(pa, pb)
    )


def constant_loss(loss: Any, y: Any, n_outputs: int | None = None) -> float:
    """The loss of the best constant prediction of the training targets ``y``: what a network
    that learned nothing of its inputs can reach. ``cross_entropy``: ``-sum_c m_c log(m_c /
    sum m)``, ``m`` the mean (label-smoothed) target row (``ln 2`` for two balanced classes;
    ``n_outputs`` classes for integer labels); ``binary_cross_entropy``: the mean binary entropy
    of each column's mean; ``mse``: the mean of each column's variance; ``huber``: the mean
    over the columns of each one's Huber loss at its best constant (where the mean clipped
    residual is 0); NaN for other losses or targets it cannot read."""
    try:
        fn = LOSS_REGISTRY.build(loss)
        y = np.asarray(y, dtype=np.float64)
        if y.ndim == 0 or y.shape[0] == 0 or not np.isfinite(y).all():
            return math.nan
        with np.errstate(all="ignore"):
            if fn.name == "cross_entropy":
                if y.ndim == 1:
                    n_cls = int(n_outputs) if n_outputs else int(y.max()) + 1
                    m = np.bincount(y.astype(np.intp), minlength=n_cls) / y.shape[0]
                elif y.ndim == 2:
                    m = y.mean(axis=0)
                else:
                    return math.nan
                eps = float(getattr(fn, "label_smoothing", 0.0))
                m = (1.0 - eps) * m + eps / m.size
                pos = m > 0
                return float(-np.sum(m[pos] * np.log(m[pos] / m.sum())))
            cols = y.reshape(y.shape[0], -1)
            if fn.name == "binary_cross_entropy":
                m = np.clip(cols.mean(axis=0), 0.0, 1.0)
                h = -(np.where(m > 0, m * np.log(m), 0.0)
                      + np.where(m < 1, (1 - m) * np.log1p(-m), 0.0))
                return float(h.mean())
            if fn.name == "mse":
                return float(cols.var(axis=0).mean())
            if fn.name == "huber":
                d = float(fn.delta)
                a = np.abs(cols - huber_center(cols, d))
                q = np.minimum(a, d)
                return float((0.5 * q * q + d * (a - q)).mean(axis=0).mean())
    except (ValueError, TypeError, OverflowError):
        pass
    return math.nan


def huber_center(cols: np.ndarray, delta: float) -> np.ndarray:
    """Each column's best constant under a Huber loss of width ``delta`` (rows x columns,
    float64): the ``c`` where the mean clipped residual ``clip(c - y, -delta, delta)`` is 0,
    increasing in ``c``, found by bisection between the column's extremes (200 halvings:
    float64's resolution well before). Shared by :func:`constant_loss` and the torch doctor's
    (Huber and smooth L1)."""
    lo, hi = cols.min(axis=0), cols.max(axis=0)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        up = np.clip(mid - cols, -delta, delta).mean(axis=0) > 0
        lo, hi = np.where(up, lo, mid), np.where(up, mid, hi)
    return 0.5 * (lo + hi)


def constant_accuracy(loss: Any, y: Any, y_val: Any) -> float:
    """The validation accuracy of the best constant prediction: the most that a network that
    learned nothing of its inputs scores on ``y_val``, ``max_c (share of y_val in class c)``.
    ``cross_entropy``: the share of validation rows in their most frequent class (integer
    labels, or the arg-max of target rows); ``binary_cross_entropy``: per column, the share of
    validation entries on that column's more frequent side (> 0.5 or not), averaged;
    ``mse``/``huber`` on one-hot rows (both sets): as ``cross_entropy``; NaN for other
    targets of these (no accuracy), without validation targets, or for targets it cannot
    read (``y`` the training targets: checked for their kind). Not the training majority's
    share: a two-class cure whose loss stayed at chance read "helped" for a validation
    accuracy 0.45 -> 0.47, where the training majority scores 0.45 and the other class 0.55."""
    try:
        fn = LOSS_REGISTRY.build(loss)
        if y_val is None:
            return math.nan
        y, yv = np.asarray(y, dtype=np.float64), np.asarray(y_val, dtype=np.float64)
        if y.ndim == 0 or yv.ndim == 0 or y.shape[0] == 0 or yv.shape[0] == 0 \
                or not (np.isfinite(y).all() and np.isfinite(yv).all()):
            return math.nan
        if fn.name in ("mse", "huber"):  # a classifier trained on one-hot rows, else NaN
            labels, held = one_hot_labels(y), one_hot_labels(yv)
            if labels is None or held is None or yv.shape[1] != y.shape[1]:
                return math.nan
            return _best_share(held)
        if fn.name == "cross_entropy" and y.ndim in (1, 2) and yv.ndim == y.ndim:
            labels = y.astype(np.intp) if y.ndim == 1 else y.argmax(axis=1)
            held = yv.astype(np.intp) if yv.ndim == 1 else yv.argmax(axis=1)
            if labels.min() < 0 or held.min() < 0:
                return math.nan
            return _best_share(held)
        if fn.name == "binary_cross_entropy" and yv.shape[1:] == y.shape[1:]:
            up = (yv > 0.5).mean(axis=0)  # each column's share of entries above 0.5
            return float(np.mean(np.maximum(up, 1.0 - up)))
    except (ValueError, TypeError, OverflowError):
        pass
    return math.nan


def _best_share(labels: np.ndarray) -> float:
    """``max_c mean(labels == c)``: the share of the most frequent class in ``labels``."""
    return float(np.bincount(labels).max() / labels.size)


def _outputs(config: dict[str, Any]) -> int | None:
    """The output width ``config["sizes"][-1]`` (None when not an integer)."""
    sizes = config.get("sizes")
    last = sizes[-1] if isinstance(sizes, list | tuple) and sizes else None
    return int(last) if isinstance(last, int) and not isinstance(last, bool) else None


NOT_LEARNED_RISE = DIVERGENCE_RISE
"""A run whose final train loss ends above this multiple of the best constant prediction's
(:func:`constant_loss`) did not learn, unless its validation error is at most
:data:`LEARNED_ERROR_SHARE` of that prediction's: its cure never "helped" (the divergence
rule's factor, :data:`depthlab.diagnosis.rules.DIVERGENCE_RISE`)."""


LEARNED_ERROR_SHARE = 0.5
"""A run whose validation error ``1 - A`` is at most this share of the best constant
prediction's, ``1 - A_chance`` (:func:`constant_accuracy`), learned, whatever its loss."""


def did_not_learn(after: dict[str, float], chance: float,
                  chance_acc: float = math.nan) -> bool:
    """The run whose final metrics are ``after`` did not learn: its train loss is finite and
    above ``NOT_LEARNED_RISE`` x ``chance`` (a NaN or non-positive ``chance``, not known:
    False; a non-finite train loss is judged as the worst loss by :func:`_better`), and its
    validation accuracy ``A`` did not take away half of the constant prediction's error:
    not ``1 - A <= LEARNED_ERROR_SHARE (1 - chance_acc)`` (a NaN ``chance_acc`` or ``A``: the
    loss alone decides). A run that classifies held-out examples far better than a constant
    did learn; its mean loss is then that of over-confident logits on the examples it gets
    wrong (6 ReLU conv layers at 9x He's variance, the baseline at chance, 2.30 and val acc
    0.08: Adam's run reached val acc 0.86 against a constant prediction's 0.12 at a train loss
    of 3.67, 1.6x the constant's 2.30, and read 'did not help (... the run did not learn)';
    by :func:`_better`'s trade-off, which a run that left chance for learning passes, it
    helped)."""
    la = after.get("train_loss", math.nan)
    if not (isinstance(chance, (int, float)) and math.isfinite(chance) and chance > 0
            and isinstance(la, (int, float)) and math.isfinite(la)
            and la > NOT_LEARNED_RISE * chance):
        return False
    return not _learned_accuracy(after.get("val_acc", math.nan), chance_acc)


def _better(after: dict[str, float], before: dict[str, float], n_val: int | None = None,
            chance: float = math.nan, chance_acc: float = math.nan) -> bool:
    """Training improved: one of the final train loss ``L`` and the validation accuracy ``A``
    got clearly better and neither clearly worse (non-finite counts as worst). Changes within
    the noise of one seed's run are neither: ``L`` is better when
    ``L_after < (1 - LOSS_TOLERANCE) L_before``, worse when ``L_after > (1 + LOSS_TOLERANCE)
    L_before``; ``A`` better when ``A_after > A_before + ACC_TOLERANCE``, worse when
    ``A_after < A_before - ACC_TOLERANCE`` (a loss 1.387 -> 1.384 at chance level with the
    accuracy down 0.27 -> 0.25 did not help). With ``n_val`` validation examples one example's
    flip is noise too: the accuracy tolerance is ``max(ACC_TOLERANCE, 1.5 / n_val)`` (a cure
    that cut the loss 29% "did not help" when one of 24 validation examples flipped).

    When the two disagree, the held-out accuracy weighs more, as the generalization measure
    (:func:`accuracy_outweighs`): a clear rise of ``A`` with ``L`` clearly worse is an
    improvement when the run left chance for learning (its validation error at most half the
    constant prediction's, the baseline's not), or when the validation error fell by a larger
    factor than ``L`` rose, ``(1 - A_before) / (1 - A_after) > L_after / L_before`` (batch
    norm curing vanishing gradients: held-out accuracy 0.485 -> 0.645 with the train loss
    0.7076 -> 0.722, +2%, was "did not help"; Adam's val acc 0.078 -> 0.774 at a train loss
    2.303 -> 5.615 was too, by the earlier points-vs-percent rule); a fall of ``A`` never is
    (the loss halved with the accuracy 20 points down: over-fitting). Without an accuracy
    (regression) the loss alone decides.

    ``chance``: the loss of the best constant prediction (:func:`constant_loss`). A train loss
    that does not end below it by ``LOSS_TOLERANCE`` is no improvement: a cure that took a
    two-class net from 0.7076 to 0.6932 (ln 2: a 50/50 prediction for every input) with the
    held-out accuracy unchanged at 0.485 had only stopped being wrong with confidence, and read
    "helped".

    ``chance_acc``: the validation accuracy of that constant prediction
    (:func:`constant_accuracy`). An accuracy that does not end above it by the tolerance is no
    improvement either: a diverged baseline's cure at chance ("train loss nan -> 2.383, val acc
    nan -> 0.1", ten classes) and a rise from below chance to it (0.028 -> 0.061, the constant
    prediction's own accuracy) read "helped". With ``n_val`` the margin above ``chance_acc`` is
    at least :data:`CHANCE_ACC_Z` standard errors of an accuracy there (:func:`_chance_noise`).

    A run that did not learn never improved: its final train loss more than
    ``NOT_LEARNED_RISE`` x ``chance`` (the divergence rule's factor), worse than predicting a
    constant by half again, is no improvement unless its validation error is at most half the
    constant prediction's (:func:`did_not_learn`: a
    gradient-clipping cure of a diverged ResNet ended at a train loss of 1.4e12, chance 2.29,
    and read "helped" for a validation accuracy 0.19 against a constant prediction's 0.14)."""
    def val(d: dict[str, float], key: str, worst: float) -> float:
        v = d.get(key, math.nan)
        return v if isinstance(v, (int, float)) and math.isfinite(v) else worst

    if did_not_learn(after, chance, chance_acc):
        return False
    lb, la = val(before, "train_loss", math.inf), val(after, "train_loss", math.inf)
    ab, aa = val(before, "val_acc", -math.inf), val(after, "val_acc", -math.inf)
    # not ">= chance", so that a NaN chance (not known) keeps the loss's verdict
    loss_better = la < (1.0 - LOSS_TOLERANCE) * lb and not la >= (1.0 - LOSS_TOLERANCE) * chance
    loss_worse = la > (1.0 + LOSS_TOLERANCE) * lb
    tol = max(ACC_TOLERANCE, 1.5 / n_val) if n_val else ACC_TOLERANCE
    # not "<= chance_acc + ...", so that a NaN chance_acc (not known) keeps the accuracy's verdict
    acc_better = aa > ab + tol and not aa <= chance_acc + _chance_noise(chance_acc, n_val, tol)
    acc_worse = aa < ab - tol
    if acc_better and loss_worse:
        return accuracy_outweighs(before, after, chance_acc)
    return (loss_better or acc_better) and not (loss_worse or acc_worse)


def _chance_noise(chance_acc: float, n_val: int | None, tol: float) -> float:
    """How far above the constant prediction's accuracy ``a`` an accuracy on ``n_val``
    examples must end to be above it: ``max(tol, CHANCE_ACC_Z sqrt(a (1 - a) / n_val))``
    (``tol`` without ``n_val`` or a finite ``a`` in [0, 1])."""
    if not n_val or not (isinstance(chance_acc, (int, float)) and 0.0 <= chance_acc <= 1.0):
        return tol
    return max(tol, CHANCE_ACC_Z * math.sqrt(chance_acc * (1.0 - chance_acc) / n_val))


def _learned_accuracy(acc: float, chance_acc: float) -> bool:
    """The validation accuracy ``acc`` took away at least half of the best constant
    prediction's error: ``1 - acc <= LEARNED_ERROR_SHARE (1 - chance_acc)`` (False when either
    is not a finite number, or ``chance_acc`` is 1)."""
    return (isinstance(acc, (int, float)) and math.isfinite(acc)
            and isinstance(chance_acc, (int, float)) and math.isfinite(chance_acc)
            and chance_acc < 1.0 and 1.0 - acc <= LEARNED_ERROR_SHARE * (1.0 - chance_acc))


def accuracy_outweighs(before: dict[str, float], after: dict[str, float],
                       chance_acc: float = math.nan) -> bool:
    """The trade-off of a cure whose validation accuracy ``A`` rose while its final train loss
    ``L`` rose too: the held-out result decides, as what a user trains for. The cure helped
    when its run left chance for learning (its accuracy took away at least half of the
    constant prediction's error, :data:`LEARNED_ERROR_SHARE`, and the baseline's had not:
    the loss may then rise by any factor, that of over-confident logits on the examples still
    wrong), or else when its validation error fell by a larger factor than the loss rose,
    ``(1 - A_before) / (1 - A_after) > L_after / L_before`` (both factors scale-free; the rule
    before compared accuracy points with the loss's rise in percent, so no accuracy could
    outweigh a loss rise over 100%: Adam on a 6-layer ReLU CNN at chance, val acc 0.078 ->
    0.774 with the train loss 2.303 -> 5.615, "did not help", and warm-up's val acc 0.159 was
    prescribed). Never when the cure's loss or accuracy is not finite (a diverged run), nor
    when the baseline's loss is not positive and finite."""
    def num(d: dict[str, float], key: str) -> float:
        v = d.get(key, math.nan)
        return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else math.nan

    lb, la = num(before, "train_loss"), num(after, "train_loss")
    ab, aa = num(before, "val_acc"), num(after, "val_acc")
    if not (math.isfinite(la) and math.isfinite(aa)):
        return False
    if _learned_accuracy(aa, chance_acc) and not _learned_accuracy(ab, chance_acc):
        return True  # a NaN baseline accuracy (diverged) has not learned either
    if not (math.isfinite(lb) and lb > 0):
        return not math.isfinite(lb)  # a non-finite baseline loss: every finite one is lower
    if not math.isfinite(ab) or aa >= 1.0:
        return True  # from no accuracy, or to no error left: a fall by an infinite factor
    return (1.0 - ab) / (1.0 - aa) > la / lb


def _improved(before: float, after: float, resolved: bool) -> bool:
    """The finding's metric improved: the finding is gone, or its metric ``M`` (lower is
    healthier) fell beyond noise, ``M_after < M_before - METRIC_TOLERANCE |M_before|``
    (from an infinite ``M_before``, any finite value); never when either is NaN."""
    if resolved:
        return True
    if math.isnan(before) or math.isnan(after):
        return False
    if math.isinf(before):
        return after < before
    return after < before - METRIC_TOLERANCE * abs(before)


def judged_metric(kind: str, changes: dict[str, Any], before: _Run | Any, after: _Run | Any,
                  metric: str) -> tuple[str, float, float]:
    """The metric a verified cure of a ``kind`` finding is judged by, and its values on the
    baseline run ``before`` and the cure's ``after`` (runs with ``ctx`` and
    ``metrics_by_kind``, either engine's): the finding's own ``metric``, except for an
    init_mismatch cured by a data-driven init (``changes["init"]`` in
    :data:`~depthlab.diagnosis.rules.DATA_DRIVEN_INITS`, LSUV): its weights are scaled for
    the data, so their distance from the variance formula (the finding's metric: LSUV on a
    tanh CNN with inputs in [0, 1], 15.1 -> 39.8 for the first layer scaled by E[x^2]) is not
    what it is for; it is judged by the step-0 signal it gives,
    :func:`~depthlab.diagnosis.rules.init_signal_factor` (6 tanh convolutions at 0.09x
    Glorot's variance on digits: 550 -> 1.73, where the weight factor read 15.1 -> 39.8),
    where both runs measured it (else by the finding's own metric)."""
    if kind == "init_mismatch" and str(changes.get("init", "")).lower() in DATA_DRIVEN_INITS:
        ctxs = getattr(before, "ctx", None), getattr(after, "ctx", None)
        signal = [math.nan if c is None else init_signal_factor(c) for c in ctxs]
        if not any(math.isnan(v) for v in signal):
            return INIT_SIGNAL_METRIC, signal[0], signal[1]
    return (metric, before.metrics_by_kind.get(kind, math.nan),
            after.metrics_by_kind.get(kind, math.nan))


def resolved_by(kind: str, changes: dict[str, Any], after_kinds: list[str], metric: str,
                after_metric: float) -> bool:
    """The cure's run no longer has the finding: ``kind`` is not among its findings; for a
    data-driven init judged by its signal (:func:`judged_metric`), the signal factor is at
    most ``INIT_MISMATCH`` (the rule's own threshold on a factor: the weight formula does not
    apply to weights set from data)."""
    if (kind == "init_mismatch" and str(changes.get("init", "")).lower() in DATA_DRIVEN_INITS
            and metric == INIT_SIGNAL_METRIC):
        return math.isfinite(after_metric) and after_metric <= INIT_MISMATCH
    return kind not in after_kinds


def rows_per_step(batch_size: Any, train_rows: int) -> dict[str, int]:
    """``{"rows_per_step": n}`` when an integer ``batch_size`` exceeds the ``n`` training rows
    (each step then trains on all ``n``: ``min(batch_size, n)``, as both trainers take it), else
    ``{}`` (the settings of a run whose batches are as asked stay as they were)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
        return {}  # "full": all rows, as asked
    return {"rows_per_step": int(train_rows)} if int(batch_size) > train_rows else {}


def doctor_train_kwargs(train: dict[str, Any]) -> dict[str, Any]:
    """The config's ``[train]`` settings as :func:`depthlab.doctor` keyword arguments: its
    ``loss_kwargs`` (a Loss object built with them) and ``l1``/``l2`` too (both were left out:
    a huber ``delta = 0.1`` or ``label_smoothing = 0.3`` config was diagnosed with the
    default loss, an ``l2 = 0.1`` one without its penalty)."""
    from ..losses import get_loss

    loss = train["loss"]
    if train.get("loss_kwargs"):
        loss = get_loss(loss, **train["loss_kwargs"])
    return {"loss": loss, "optimizer": train["optimizer"], "lr": train["lr"],
            "batch_size": train["batch_size"], "seed": train["seed"],  # "full" included
            "optimizer_kwargs": train["optimizer_kwargs"],
            "l1": train.get("l1", 0.0), "l2": train.get("l2", 0.0)}


def _doctor_hints(fn: Any) -> Any:
    """``fn`` (:func:`doctor`, which takes the optimizer's hyperparameters as ``**``) refusing,
    as :func:`~depthlab.validators.keyword_hints` does for a function without ``**``, a third
    positional argument (the data is one argument) and an unknown keyword, in one TypeError line
    naming the closest accepted name (the doctor's options and every optimizer
    hyperparameter), else the accepted ones."""
    import functools
    import inspect

    from ..spec import all_optimizer_hyperparameters

    params = inspect.signature(fn).parameters.values()
    names = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    positional = [p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD]
    hint = ("the data is one argument: dl.doctor(net, (x, y)), dl.doctor(net, (x, y, x_val, "
            "y_val)) or dl.doctor(net, dataset)")

    @functools.wraps(fn)
    def checked(*args: Any, **kwargs: Any) -> Any:
        if len(args) > len(positional):
            raise TypeError(f"doctor() takes {len(positional)} positional arguments "
                            f"({', '.join(positional)}) but {len(args)} were given; {hint}")
        known = all_optimizer_hyperparameters()
        for key in kwargs:
            if key not in names and key not in known:
                close = did_you_mean(key, names + known) or (
                    f"; accepted: {', '.join(names)} and the optimizer's hyperparameters "
                    f"({', '.join(known)})")
                raise TypeError(f"doctor() got an unexpected keyword argument {key!r}{close}")
        return fn(*args, **kwargs)
    checked.__defaults__, checked.__kwdefaults__ = fn.__defaults__, fn.__kwdefaults__
    return checked


@_doctor_hints
def doctor(
    net_or_config: Network | ModelSpec | dict[str, Any],
    data: Any,
    *,
    steps: int = 200,
    loss: str = "cross_entropy",
    optimizer: str | Optimizer = "sgd",
    lr: float = 0.01,
    optimizer_kwargs: dict[str, Any] | None = None,
    batch_size: int | str = 32,
    seed: int = 0,
    verify: bool = False,
    probe_every: int = 10,
    callbacks: Sequence[Callback] = (),
    standardize: bool = False,
    standardize_targets: bool = False,
    l1: float = 0.0,
    l2: float = 0.0,
    **hyperparameters: Any,
) -> Diagnosis:
    """Diagnose a network: train a copy for ``steps`` optimizer steps with a
    :class:`~depthlab.probes.ProbeRecorder` on a fixed probe batch (the first 300 validation
    examples; the training rows' when there are fewer than
    ``probes.stats.BN_PROBE_ROWS`` = 3 validation rows, over which batch norm passes no
    gradient), apply the rules of
    :mod:`depthlab.diagnosis.rules` and return a :class:`Diagnosis`.

    ``net_or_config``: a Network (not modified: a deep copy is trained; its ``config`` holds the
    ``mlp()`` arguments used to build prescribed variants), a dict of ``mlp()`` arguments or a
    :class:`~depthlab.spec.ModelSpec` (an ``"auto"`` first or last width is resolved from the
    data: the features; the classes, or 1 for binary cross-entropy and regression losses with
    a 1-D ``y``, or a 2-D ``y``'s columns).
    ``data``: a Dataset (``x_train``, ``y_train``, ``x_val``, ``y_val``) or ``(x, y)`` (20% held
    out, seeded) or ``(x, y, x_val, y_val)``. ``seed``: the one seed of the diagnosis: the
    held-out split, the batch order and dropout of every run, and the weights of a config dict
    that names no ``seed`` of its own (it built every dict with ``mlp``'s seed 0).

    With ``verify=True`` every finding's prescription is applied (``mlp(**{**config, **changes})``
    and/or changed training settings), the same budget is re-run with the same seed and data, and
    a :class:`Verification` records final train loss, validation accuracy and the finding's own
    metric before and after, with ``helped`` False when it did not help.

    ``callbacks``: :class:`~depthlab.training.trainer.Callback` objects added to every training
    run of the doctor (the baseline and each verification), e.g. progress, or a stop: an
    exception raised in one ends the doctor with it.

    ``standardize``: as ``fit(standardize=True)``, every run standardizes the inputs with the
    training rows' per-feature mean and std (the probe batch too); ``settings["standardize"]``
    is True then. The ``unscaled_inputs`` finding prescribes it.

    ``standardize_targets``: every run trains on regression targets standardized per column
    with the training rows' mean and std, and reports its train/validation losses with the
    predictions mapped back to the targets' units (``settings["standardize_targets"]``). The
    ``unscaled_targets`` finding prescribes it.

    ``l1``, ``l2``: the weight penalties of ``fit`` (``settings["l1"]``/``["l2"]`` when not 0),
    applied in every run of the diagnosis; ``loss`` also takes a Loss object
    (``dl.loss("huber", delta=0.1)``), as ``fit`` does, and ``optimizer`` an optimizer object
    (``dl.optimizer("adam", net.parameters(), lr=1e-3)``): its name, ``lr`` and other settings
    build a fresh one for each run (:func:`_optimizer_settings`).

    ``**hyperparameters``: the optimizer's hyperparameters given directly, as ``fit`` takes
    them (``dl.doctor(net, data, lr=0.1, momentum=0.9)``), merged into ``optimizer_kwargs``
    by fit's rules (the same value given both ways once; a different one, or one the optimizer
    does not take, is refused with fit's message): the baseline trains as ``dl.fit`` with the
    same keywords, and every cure that keeps the optimizer keeps them
    (``settings["optimizer_kwargs"]``).
    """
    steps, probe_every = (positive_int(label, v) for label, v in (
        ("steps", steps), ("probe_every", probe_every)))
    lr = check_field(TrainSpec, "lr", lr)  # the one learning-rate rule (a number > 0)
    batch_size = check_field(TrainSpec, "batch_size", batch_size)  # fit's rule: "full" too
    l1, l2 = (check_field(TrainSpec, k, v) for k, v in (("l1", l1), ("l2", l2)))
    if not isinstance(verify, bool | np.bool_):
        raise TypeError(f"verify={verify!r} is not accepted; accepted: True or False")
    verify = bool(verify)
    for label, v in (("standardize", standardize), ("standardize_targets", standardize_targets)):
        if not isinstance(v, bool | np.bool_):
            raise TypeError(f"{label}={v!r} is not accepted; accepted: True or False")
    if optimizer_kwargs is not None and not isinstance(optimizer_kwargs, dict):
        raise TypeError(f"optimizer_kwargs={optimizer_kwargs!r:.60} is not accepted; accepted: "
                        "a dict of the optimizer's arguments, e.g. {'momentum': 0.9}, or None")
    # fit's merge (dl.fit(..., momentum=0.9) and dl.doctor(..., momentum=0.9) train alike):
    # given both ways with different values, or optimizer_kwargs['lr'], is refused as fit does
    optimizer_kwargs = _optimizer_kwargs(optimizer_kwargs, hyperparameters)
    if isinstance(optimizer, Optimizer):
        _check_unused(optimizer, lr, optimizer_kwargs)  # fit's rule: set them on it
        optimizer, lr, optimizer_kwargs = _optimizer_settings(optimizer)
    if isinstance(callbacks, str | bytes) or not isinstance(callbacks, Iterable):
        raise TypeError(f"callbacks={callbacks!r:.60} is not accepted; accepted: a list of "
                        "depthlab.training.Callback objects")
    # checked here, as given: the trainer's check, after the doctor's own recorder, named the
    # first of them callbacks[1]
    callbacks = tuple(_check_callbacks(callbacks))
    if isinstance(net_or_config, ModelSpec):  # dl.ModelSpec(...): its mlp() arguments
        net_or_config = net_or_config.to_dict()
    if isinstance(net_or_config, Network):
        net = copy.deepcopy(net_or_config)
        config = dict(net_or_config.config) or _as_built(net_or_config)
    elif isinstance(net_or_config, dict):
        config = {"seed": seed, **net_or_config}  # the doctor's seed unless the dict has one
        if "sizes" not in config:
            run_config = "model" in config and isinstance(config["model"], dict)
            hint = ("; this is a run config: pass its [model] table, dl.doctor(config['model'], "
                    "data, ...) (its [train] settings as doctor's loss=, optimizer=, lr=, "
                    "batch_size=), or run `depthlab doctor CONFIG`" if run_config else "")
            raise ValueError(f"a config dict needs 'sizes' (mlp arguments), got keys "
                             f"{sorted(map(str, net_or_config))}{hint}")
        config["sizes"] = _resolve_auto(config["sizes"], data, seed, loss)
        net = mlp(**config)
        config = dict(net.config)
    else:
        raise TypeError(f"net_or_config must be a Network, a dl.ModelSpec or a dict of mlp() "
                        f"arguments, got {type(net_or_config).__name__}"
                        + torch_module_hint(net_or_config, "dlt.doctor(model, data, "
                                            "loss_fn=...)"))
    # fit's check, before any training: a hyperparameter the optimizer does not take (momentum
    # for adam) or a bad value is refused with the optimizer's own message (a throwaway one)
    get_optimizer(optimizer, net.parameters(), lr=lr, **optimizer_kwargs)
    bad_weights = nonfinite_parameters(net)  # named in a divergence finding
    _check_mean_loss(loss)
    if verify and "sizes" not in config:  # refused before training, not after it
        raise ValueError("verify=True needs a network built by mlp() (its config is empty), "
                         "or pass a dict of mlp() arguments")
    d = _unpack(data, seed)
    if d.x.ndim != 2 or d.x.shape[1] != net.n_inputs:
        raise ValueError(f"data has inputs of shape {d.x.shape}; the network expects "
                         f"(n, {net.n_inputs})")
    if d.x.shape[0] == 0:
        raise ValueError(f"data has no training examples (inputs of shape {d.x.shape}); "
                         "expected at least 1 row")
    settings = {"steps": steps, "loss": loss, "optimizer": optimizer, "lr": float(lr),
                "optimizer_kwargs": dict(optimizer_kwargs or {}), "batch_size": batch_size,
                "seed": seed, "probe_every": probe_every}
    # only when set: the settings of a run without penalties stay as they were (a config's
    # [train] l1/l2 were not passed, so `depthlab doctor` diagnosed another training)
    settings.update({k: float(v) for k, v in (("l1", l1), ("l2", l2)) if v})
    settings.update(rows_per_step(batch_size, d.x.shape[0]))
    if standardize:  # only then: the settings of a run on the data as given stay as they were
        settings["standardize"] = True
    if standardize_targets:
        try:
            regression = LOSS_REGISTRY.build(loss).name in ("mse", "huber")
        except (ValueError, TypeError):
            regression = True  # an unknown loss: named by the training run's own check
        if not regression:
            raise ValueError(f"standardize_targets=True needs a regression loss (mse, huber); "
                             f"got loss={loss!r}, whose targets are classes")
        settings["standardize_targets"] = True
    callbacks = tuple(callbacks)
    base = _train(net, config, d, settings, callbacks)
    # the constant prediction's loss kept: a diagnosis with no findings whose run did not learn
    # says so (findings.unlearned_text)
    name_nonfinite_weights(base.findings, bad_weights)  # not 'the initial weights overflow'
    diagnosis = Diagnosis(findings=base.findings, baseline=base.final,
                          chance_loss=base.ctx.chance_loss,
                          probes=base.probes, config=config, settings=settings,
                          bn_drift=base.ctx.bn_drift)
    if not verify or not base.findings:
        return diagnosis

    reference = base
    if isinstance(net_or_config, Network):
        fresh = mlp(**config)
        if not _same_parameters(net_or_config, fresh):
            # Not a fresh build (e.g. already trained): compare prescriptions against a fresh
            # build of the same config trained with the same budget.
            reference = _train(fresh, config, d, settings, callbacks)
    diagnosis.verifications = verify_prescriptions(base.findings, reference, config, d, settings,
                                                   callbacks, diagnosed=base)
    diagnosis.findings = rank_findings(base.findings, diagnosis.verifications)
    order = [f.kind for f in diagnosis.findings]
    diagnosis.verifications.sort(key=lambda v: order.index(v.kind))
    return diagnosis


AS_BUILT_KEYS = ("activation", "activation_kwargs", "batchnorm", "residual", "dropout",
                 "bn_inference", "bn_momentum")
"""The ``dl.mlp`` options the rules and prescriptions read that a network without a recipe
still has (:func:`_as_built`)."""


def _as_built(net: Network) -> dict[str, Any]:
    """What the rules and the text need of a network without a recipe (``from_torch``'s, or
    layers put together by hand): the :data:`AS_BUILT_KEYS` of the ``dl.mlp`` recipe that
    builds the same layers (:func:`depthlab.recipe.infer_recipe`), its sizes as the ``model``
    description and ``init = "as built"``; no ``sizes``, so ``verify=True`` stays refused (it
    rebuilds networks from a recipe). With the empty config the rules took batch norm as
    absent: a batch-normalized tanh network with N(0, 1) weights copied through
    ``to_torch``/``from_torch`` got an init_mismatch finding that the same ``dl.mlp`` network
    does not get, and the header read "network ?, init ?"."""
    from ..recipe import infer_recipe

    recipe = infer_recipe(net.layers, str(getattr(net, "dtype", "float32"))) or {}
    out: dict[str, Any] = {k: recipe[k] for k in AS_BUILT_KEYS if k in recipe}
    if recipe.get("sizes"):
        out["model"] = "-".join(str(v) for v in recipe["sizes"])
    else:  # layers dl.mlp does not build (a residual block of one Dense): its Dense widths
        widths = [net.n_inputs] + [d.W.value.shape[1] for d in net.dense_layers()]
        acts = dict.fromkeys(a.fn.name for a in net.leaves() if isinstance(a, Activation))
        out["model"] = ("-".join(str(v) for v in widths) + "".join(f" {a}" for a in acts)
                        + f" ({len(net.layers)} layers built by hand)")  # was "network ?"
    return {**out, "init": "as built"}


L2_WEIGHT_DECAY = frozenset({"sgd", "adam", "nadam", "radam", "adamax", "rmsprop", "adagrad",
                             "adadelta"})
"""Optimizers whose ``weight_decay`` adds ``wd * w`` to the gradient (an L2 penalty on the
loss; Adam, NAdam and RAdam unless ``decoupled_weight_decay=True``), unlike AdamW's decoupled
decay (as ``depthlab.torch.train.L2_WEIGHT_DECAY``)."""


def _optimizer_settings(opt: Optimizer) -> tuple[str, float, dict[str, Any]]:
    """An optimizer object given to the doctor as ``(name, lr, kwargs)``: its registered name,
    its ``lr`` and its other hyperparameters that differ from the defaults. The doctor trains
    copies (the baseline and each cure), each with a fresh optimizer of these settings; the
    object itself steps the original network's parameters, which were refused as "another
    network's"."""
    from ..optimizers import REGISTRY as OPTIMIZERS

    defaults = OPTIMIZERS.defaults(opt.name)
    kwargs = {k: v for k, v in opt.hyperparameters().items()
              if k != "lr" and (k not in defaults or v != defaults[k])}
    return opt.name, opt.lr, kwargs


def _kept_optimizer_kwargs(old: Any, new: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The arguments of the run's optimizer ``old`` that a cure switching to ``new`` keeps:
    none (sgd's momentum means nothing to adam) but an L2 ``weight_decay`` that both add to
    the gradient (:data:`L2_WEIGHT_DECAY`): it is part of the objective ``loss + wd/2
    ||w||^2`` both minimize, so the cure is trained on the run's objective (dropped, an SGD
    run with weight decay was compared with Adam without it, a lower training loss credited
    to Adam), as the torch doctor keeps it."""
    from ..optimizers import REGISTRY as OPTIMIZERS

    try:
        old_name, new_name = (OPTIMIZERS.key(n) for n in (old, new))
    except (ValueError, TypeError):
        return {}
    wd = (kwargs or {}).get("weight_decay")
    coupled = (old_name in L2_WEIGHT_DECAY and new_name in L2_WEIGHT_DECAY
               and not (kwargs or {}).get("decoupled_weight_decay"))
    return {"weight_decay": wd} if coupled and wd else {}


def verify_prescriptions(findings: list[Finding], reference: _Run, config: dict[str, Any],
                         data: _Data, settings: dict[str, Any],
                         callbacks: Sequence[Callback] = (),
                         diagnosed: _Run | None = None) -> list[Verification]:
    """Re-run each finding's prescription (``mlp(**{**config, **changes})`` and/or changed
    training settings) under ``settings``' budget and seed, once per distinct prescription, and
    judge it against ``reference``: ``resolved`` when the finding is gone, ``helped`` when its
    metric went down beyond noise (:func:`_improved`; or it is gone) and training improved
    (:func:`_better`).

    ``diagnosed``: the run of the diagnosed network when ``reference`` is a fresh build of its
    config instead (a network whose weights are not its recipe's: trained, or rescaled by
    hand). A prescription that changes nothing of the recipe (``init = "glorot_uniform"`` for a
    Glorot-built net whose weights were multiplied by 4) *is* that fresh build: it is judged
    against ``diagnosed`` (the fresh build against itself was "1.044 -> 1.044: did not
    help")."""
    # prescription -> (its run, its reference), None when it cannot be trained
    cache: dict[str, tuple[_Run, _Run] | None] = {}
    n_val = None if data.y_val is None else len(data.y_val)
    chance = constant_loss(settings["loss"], data.y, _outputs(config))
    chance_acc = constant_accuracy(settings["loss"], data.y, data.y_val)
    out = []
    for f in findings:
        if not f.prescription:
            continue
        key = repr(sorted(f.prescription.items(), key=lambda kv: kv[0]))
        if key not in cache:
            net_changes = {k: v for k, v in f.prescription.items() if k not in TRAINING_KEYS}
            train_changes = {k: v for k, v in f.prescription.items() if k in TRAINING_KEYS}
            try:
                variant = mlp(**{**config, **net_changes})
            except (ValueError, TypeError) as e:  # e.g. too large to fit in memory
                _unverifiable(f, e)
                cache[key] = None
                continue
            new_settings = {**settings, **train_changes}
            if new_settings["optimizer"] != settings["optimizer"]:
                new_settings["optimizer_kwargs"] = _kept_optimizer_kwargs(
                    settings["optimizer"], new_settings["optimizer"],
                    settings["optimizer_kwargs"])
            if (diagnosed is not None and new_settings == settings
                    and dict(variant.config) == dict(config)):
                cache[key] = (reference, diagnosed)  # the fresh build: already trained
            else:
                cache[key] = _trained_cure(f, variant, data, new_settings, callbacks, reference)
        if cache[key] is None:
            continue
        run, ref = cache[key]
        metric, before_metric, after_metric = judged_metric(
            f.kind, f.prescription, ref, run, RULES[f.kind].metric)
        after_kinds = [g.kind for g in run.findings]
        resolved = resolved_by(f.kind, f.prescription, after_kinds, metric, after_metric)
        improved = _improved(before_metric, after_metric, resolved)
        out.append(Verification(
            kind=f.kind, prescription=dict(f.prescription), before=dict(ref.final),
            after=dict(run.final), metric=metric,
            metric_before=before_metric, metric_after=after_metric, resolved=resolved,
            helped=bool(improved and _better(run.final, ref.final, n_val, chance, chance_acc)),
            new_findings=[k for k in after_kinds
                          if k not in {g.kind for g in ref.findings}],
            chance_loss=chance, chance_acc=chance_acc, n_val=n_val,
        ))
    return out


class _FirstStep(Callback):
    """Whether a training run has completed its first optimizer step."""

    def __init__(self) -> None:
        self.done = False

    def after_update(self, trainer: Trainer, step: int, loss: float) -> None:
        self.done = True


def _unverifiable(f: Finding, e: Exception) -> None:
    warnings.warn(f"doctor: the cure {json.dumps(jsonable(f.prescription))} of {f.kind} was "
                  f"not verified: it cannot be trained with these settings ({e})", stacklevel=2)


def _trained_cure(f: Finding, variant: Network, data: _Data, settings: dict[str, Any],
                  callbacks: Sequence[Callback], reference: _Run
                  ) -> tuple[_Run, _Run] | None:
    """``(the cure's run, reference)``, or None with a warning when the cure cannot be trained
    under these settings: a ValueError/TypeError before its first optimizer step (batch
    normalization prescribed for batches of one row, or for a probe batch of one example) is
    the cure's, not the user's (it ended the whole diagnosis)."""
    first = _FirstStep()
    try:
        run = _train(variant, dict(variant.config), data, settings, (first, *callbacks))
    except (ValueError, TypeError) as e:
        if first.done:
            raise
        _unverifiable(f, e)
        return None
    return run, reference


def rank_findings(findings: list[Finding], verifications: list[Verification]) -> list[Finding]:
    """Findings whose verified prescription helped first, the largest gain
    (:attr:`Verification.gain`) leading; then findings without a verification, then those whose
    prescription did not help; priority order within each group."""
    by_kind = {v.kind: v for v in verifications}

    def key(item: tuple[int, Finding]) -> tuple:
        pos, f = item
        v = by_kind.get(f.kind)
        if v is None:
            return (1, 0.0, 0.0, pos)
        if v.helped:
            acc, loss = v.gain
            return (0, -acc, -loss, pos)
        return (2, 0.0, 0.0, pos)

    return [f for _, f in sorted(enumerate(findings), key=key)]
