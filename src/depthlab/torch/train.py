"""A deterministic training loop for any ``torch.nn.Module`` (the torch doctor's yardstick).

Two runs with the same :class:`TorchTrainSpec` see the same mini-batches in the same order: the
order comes from a NumPy generator seeded with ``spec.seed`` (a fresh permutation of the
training rows per epoch), and ``torch.manual_seed(spec.seed)`` is set before the first step
(dropout masks), NumPy's and Python's global generators seeded likewise (``np.random.seed(seed
mod 2^32)``, ``random.seed(seed)``: noise a model draws from them). Training runs on the
model's device, in the model's floating dtype.

Step ``k`` means "the model after ``k`` optimizer updates". The loop records

* ``step_loss``: the training loss of every mini-batch (update ``k`` is ``step_loss[k - 1]``);
* probe tables (``probe(model, x, y, loss_fn)``, columns ``step, layer, module, quantity,
  value``) on a fixed probe batch at step 0, every ``spec.probe_every`` steps and at the end;
* ``update_ratio`` = ``||W_k - W_(k-1)|| / ||W_(k-1)||`` (Frobenius norms) per weight layer at
  the probed steps ``k >= 1`` (weights copied only before those updates);
* final metrics: inference-mode (``model.eval()``) loss and accuracy on the training and
  validation sets, as the NumPy trainer reports them.

Learning-rate warm-up (``spec.warmup = W``): update ``k`` uses ``lr * min(1, k / W)``.
Population batch-norm statistics (``spec.bn_population``): after the last update every
``_BatchNorm``'s running mean/variance are recomputed as the mean and unbiased variance of its
input over the whole training set (one pass in batches, every row counted once, no gradients)
before the final metrics. ``depthlab.bridge``'s population batch norms
(``PopulationBatchNorm1d``, ``inference="population"``, whose eval mode needs whole-training-set
statistics) get them from the training set under the trained weights after the last update
(:func:`calibrate_population`, as depthlab's trainer calibrates before its metrics).
Gradient clipping (``spec.clip_grad_norm = c``): ``torch.nn.utils.clip_grad_norm_(params, c)``
between backward and the update. A non-finite loss stops training (``History.divergence``).
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import dataclasses
import functools
import inspect
import math
import random
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from numbers import Real
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..probes.stats import probe_held_out
from ..training.history import DivergenceReport, History
from ..training.trainer import STEP_RECORD_BYTES
from ..validators import did_you_mean, positive_int
from .accumulators import NORM_HIGH, NORM_LOW, norm_dtype, scaled_norm

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "nadam": torch.optim.NAdam,
    "rmsprop": torch.optim.RMSprop,
    "adagrad": torch.optim.Adagrad,
    "adadelta": torch.optim.Adadelta,
    "radam": torch.optim.RAdam,
    "adamax": torch.optim.Adamax,
}
"""Optimizer names accepted by :class:`TorchTrainSpec` (``torch.optim`` classes)."""

L2_WEIGHT_DECAY = frozenset({"sgd", "adam", "nadam", "radam", "adamax", "rmsprop", "adagrad",
                             "adadelta"})
"""Optimizers whose ``weight_decay`` adds ``wd * w`` to the gradient (an L2 penalty on the
loss; NAdam and RAdam unless ``decoupled_weight_decay=True``), unlike AdamW's decoupled
decay."""

EVAL_BATCH = 1024
"""Rows per forward pass when evaluating the final metrics."""

TABLE_COLUMNS = ("step", "layer", "module", "quantity", "value")

ProbeFn = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor, Callable], pd.DataFrame]


@dataclass(frozen=True)
class TorchTrainSpec:
    """Everything that decides a training run besides the model and the data.

    ``optimizer``: a name of :data:`OPTIMIZERS`; ``lr``: its learning rate;
    ``optimizer_kwargs``: its other arguments (e.g. ``{"momentum": 0.9}``); ``steps``: optimizer
    updates; ``warmup``: linear warm-up steps (0: none); ``clip_grad_norm``: max gradient norm
    (None: no clipping); ``probe_every``: probe-table period in steps.
    """

    optimizer: str = "sgd"
    lr: float = 0.1
    optimizer_kwargs: dict[str, Any] = field(default_factory=dict)
    steps: int = 200
    batch_size: int = 64
    seed: int = 0
    warmup: int = 0
    clip_grad_norm: float | None = None
    probe_every: int = 20
    bn_population: bool = False

    def __post_init__(self) -> None:
        name = str(self.optimizer).lower() if isinstance(self.optimizer, str) else None
        if name not in OPTIMIZERS:
            hint = did_you_mean(name, OPTIMIZERS) if name is not None else ""
            raise ValueError(f"unknown optimizer {self.optimizer!r}{hint}; expected one of "
                             f"{sorted(OPTIMIZERS)}")
        object.__setattr__(self, "optimizer", name)
        if isinstance(self.lr, (bool, np.bool_)) or not isinstance(self.lr, Real) or \
                not math.isfinite(self.lr) or self.lr <= 0:  # NumPy floats (float32) too
            raise ValueError(f"lr must be a positive finite number, got {self.lr!r}")
        object.__setattr__(self, "lr", float(self.lr))
        if not isinstance(self.optimizer_kwargs, dict):
            raise TypeError(f"optimizer_kwargs must be a dict, got "
                            f"{type(self.optimizer_kwargs).__name__}")
        object.__setattr__(self, "optimizer_kwargs", dict(self.optimizer_kwargs))
        for label in ("steps", "batch_size", "probe_every"):
            positive_int(label, getattr(self, label))
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) \
                or not 0 <= self.seed < 2**64:
            raise ValueError(f"seed must be an integer from 0 to 2**64 - 1 (torch.manual_seed's "
                             f"range), got {self.seed!r}")
        if isinstance(self.warmup, bool) or not isinstance(self.warmup, (int, np.integer)) \
                or self.warmup < 0:
            raise ValueError(f"warmup must be a non-negative integer, got {self.warmup!r}")
        c = self.clip_grad_norm
        if c is not None and (isinstance(c, (bool, np.bool_)) or not isinstance(c, Real)
                              or not math.isfinite(c) or c <= 0):
            raise ValueError(f"clip_grad_norm must be None or a positive number, got {c!r}")
        if c is not None:
            object.__setattr__(self, "clip_grad_norm", float(c))

    def with_changes(self, **changes: Any) -> TorchTrainSpec:
        """A copy with ``changes``; a new optimizer drops the old one's extra arguments
        (SGD's momentum means nothing to Adam) except the L2 penalty: a ``weight_decay`` that
        both optimizers add to the gradient (:data:`L2_WEIGHT_DECAY`; AdamW's decoupled decay
        is another rule) is part of the objective ``loss + wd/2 ||w||^2`` they minimize, and is
        kept (switched to Adam, an SGD run with weight decay is trained without it, a lower
        training loss credited to Adam)."""
        if "optimizer" in changes and changes["optimizer"] != self.optimizer \
                and "optimizer_kwargs" not in changes:
            new = str(changes["optimizer"]).lower()
            wd = self.optimizer_kwargs.get("weight_decay")
            coupled = self.optimizer in L2_WEIGHT_DECAY and new in L2_WEIGHT_DECAY \
                and not self.optimizer_kwargs.get("decoupled_weight_decay")
            changes["optimizer_kwargs"] = {"weight_decay": wd} if coupled and wd else {}
        return replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer, "lr": self.lr,
                "optimizer_kwargs": dict(self.optimizer_kwargs), "steps": self.steps,
                "batch_size": self.batch_size, "seed": self.seed, "warmup": self.warmup,
                "clip_grad_norm": self.clip_grad_norm, "probe_every": self.probe_every,
                "bn_population": self.bn_population}


def make_optimizer(spec: TorchTrainSpec, params: Sequence[torch.nn.Parameter]
                   ) -> torch.optim.Optimizer:
    """``OPTIMIZERS[spec.optimizer](params, lr=spec.lr, **spec.optimizer_kwargs)``; a bad
    argument becomes a ValueError naming the optimizer."""
    try:
        return OPTIMIZERS[spec.optimizer](params, lr=spec.lr, **spec.optimizer_kwargs)
    except (TypeError, IndexError, KeyError, AttributeError) as e:  # an unknown keyword, a
        # value of the wrong kind (betas=(0.9,): IndexError inside Adam)
        accepted = [p for p in inspect.signature(OPTIMIZERS[spec.optimizer]).parameters
                    if p != "params"]
        unknown = next((k for k in spec.optimizer_kwargs if k not in accepted), None)
        hint = did_you_mean(unknown, accepted) if isinstance(unknown, str) else ""
        raise ValueError(f"optimizer {spec.optimizer!r} does not accept "
                         f"{spec.optimizer_kwargs}{hint}: {e}") from None
    except ValueError as e:  # a bad value (momentum -1), parameters it cannot take
        raise ValueError(f"optimizer {spec.optimizer!r} with lr {spec.lr:g} and "
                         f"{spec.optimizer_kwargs or 'no other arguments'} fails: {e}") from None


@dataclass
class TensorData:
    """Training and validation tensors on one device (``x_val``/``y_val`` may be None)."""

    x: torch.Tensor
    y: torch.Tensor
    x_val: torch.Tensor | None = None
    y_val: torch.Tensor | None = None

    @property
    def probe_source(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Validation data when there are at least 3 rows, else training data (when it has
        them): a batch norm in training mode, as the probe runs the model, maps each channel
        of a 2-row batch to -1 and +1 whatever its input, so no gradient reaches the layers
        below it (a healthy 2-BN-layer MLP on 10 rows: layer 1's grad_pre_std 1e-7, layer 3's
        0.25, a vanishing_gradients finding)."""
        if self.y_val is not None and probe_held_out(
                None if self.x_val is None else len(self.x_val), len(self.x)):
            return self.x_val, self.y_val
        return self.x, self.y


def model_device_dtype(model: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    """The device and floating dtype of the model's first floating parameter (CPU/float32
    for a model without one)."""
    for p in model.parameters():
        if p.is_floating_point():
            return p.device, p.dtype
    return torch.device("cpu"), torch.float32


def check_fits(nbytes: int, device: torch.device) -> None:
    """Refuse (ValueError) to copy ``nbytes`` onto a device that has less free memory (CUDA:
    ``torch.cuda.mem_get_info``; CPU: :func:`depthlab.memory.check_fits`)."""
    if device.type == "cpu":
        from ..memory import check_fits as check_host

        check_host(nbytes, "the training data as tensors")
    elif device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        if nbytes > free:
            raise ValueError(f"the data need {nbytes / 2**30:.2f} GiB on {device}, which has "
                             f"{free / 2**30:.2f} GiB free")


def scalar_loss(loss_fn: Callable, out: Any, y: torch.Tensor) -> torch.Tensor:
    """``loss_fn(out, y)``, checked to be a scalar tensor."""
    loss = loss_fn(out, y)
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise ValueError(f"loss_fn must return a scalar tensor (e.g. a mean over the batch), "
                         f"got {shape}")
    return loss.reshape(())


def loss_hint(loss_fn: Callable, error: BaseException) -> str:
    """A hint for a failure torch names without its cause, '' for any other: ``BCELoss``
    (``F.binary_cross_entropy``, also in a ``functools.partial``) on outputs outside
    ``[0, 1]``, i.e. a model without a sigmoid at its end."""
    while isinstance(loss_fn, functools.partial):
        loss_fn = loss_fn.func
    if binary_threshold(loss_fn) == 0.5 and "input should be between 0 and 1" in str(error):
        return ("; BCELoss takes the model's outputs as probabilities (a sigmoid at its end): "
                "for logits use nn.BCEWithLogitsLoss ('bce_with_logits')")
    return ""


@contextlib.contextmanager
def named_failure(where: str, loss_fn: Callable) -> Iterator[None]:
    """A failure of the model or the loss inside the block (torch's bare RuntimeError from a
    later mini-batch, e.g. ``BCELoss`` once the outputs leave ``[0, 1]``) as one ValueError
    saying where it happened, torch's message and :func:`loss_hint`; running out of memory
    and interrupts pass as they are."""
    try:
        yield
    except torch.OutOfMemoryError:
        raise
    except Exception as e:  # noqa: BLE001 - the user's model or loss failed
        said = " ".join(str(e).split())
        raise ValueError(f"the model or loss_fn failed {where}: {type(e).__name__}: {said}"
                         f"{loss_hint(loss_fn, e)}") from e


_TORCH_OOM = ("can't allocate memory", "out of memory")


@contextlib.contextmanager
def out_of_memory(what: str, x: Any) -> Iterator[None]:
    """Torch running out of memory inside the block (``torch.OutOfMemoryError`` on a GPU, the
    CPU allocator's multi-line ``RuntimeError: [enforce fail at alloc_cpu.cpp] ... can't
    allocate memory: you tried to allocate N bytes``) as one
    :class:`~depthlab.memory.MemoryRefusal` line naming ``what``, the batch ``x``'s examples
    and the size torch asked for. The model's activations are unknown before its forward
    runs, so this is where a batch that cannot fit is named."""
    try:
        yield
    except (torch.OutOfMemoryError, RuntimeError) as e:
        said = " ".join(str(e).split())
        if not isinstance(e, torch.OutOfMemoryError) and not any(
                k in said for k in _TORCH_OOM):
            raise
        from ..memory import MemoryRefusal, format_bytes

        found = re.search(r"tried to allocate (\d+) bytes", said, re.IGNORECASE)
        size = f" (torch asked for {format_bytes(int(found.group(1)))})" if found else ""
        rows = len(x) if isinstance(x, torch.Tensor) and x.dim() > 0 else None
        batch = f" on a batch of {rows:,} examples" if rows is not None else ""
        raise MemoryRefusal(f"{what}{batch} ran out of memory{size}; expected a batch whose "
                            "forward and backward fit: pass fewer examples") from None


def is_classification(out: Any, y: Any) -> bool:
    """Integer labels and one output column per class."""
    return (isinstance(out, torch.Tensor) and isinstance(y, torch.Tensor)
            and not y.is_floating_point() and y.dim() == 1 and out.dim() == 2
            and out.shape[0] == y.shape[0] and out.shape[1] > 1)


def _dense_classes(out: Any, y: Any) -> bool:
    """Integer labels ``(N, d1, ...)`` and class scores ``(N, C, d1, ...)``, ``C >= 2`` (a
    segmentation map, per-token classes in dim 1)."""
    return (isinstance(out, torch.Tensor) and isinstance(y, torch.Tensor)
            and not y.is_floating_point() and y.dtype != torch.bool and y.dim() >= 2
            and out.is_floating_point() and out.dim() == y.dim() + 1
            and out.shape[:1] + out.shape[2:] == y.shape and out.shape[1] > 1)


def class_axis(out: Any, y: Any, loss_fn: Callable) -> int | None:
    """The axis of ``out`` whose arg-max is compared with the integer labels ``y``: 1 for ``(N, C)``
    scores and ``(N, C, d1, ...)`` maps (:func:`is_classification`, :func:`_dense_classes`),
    else None. Scores whose shape reads as ``(N, d1, ..., C)`` for labels ``(N, d1, ...)`` (a
    sequence model's ``(N, T, C)``, whether or not ``T == C``), given to a loss other than a
    class-index loss called on them (:func:`class_index_loss`, which reads dim 1), are read on
    the axis the loss reads: a softmax cross-entropy is unchanged, ``L(s + r) = L(s)``, by a
    shift ``r`` constant along its class axis, so the axis (1 or -1) whose random shift (of std
    ``1 + std(out)``, on float32 copies of half-precision scores) leaves ``loss_fn(out, y)``
    unchanged (to ``1e-4 (1 + |L|)``) while the other's changes it; None when neither or both do
    (no accuracy). The arg-max over dim 1 of a loss reading the last axis gave 0.05 where the
    per-token accuracy was 0.0625."""
    if is_classification(out, y):
        return 1
    dense = _dense_classes(out, y)
    last = (isinstance(out, torch.Tensor) and isinstance(y, torch.Tensor)
            and out.is_floating_point() and not y.is_floating_point()
            and y.dtype != torch.bool and y.dim() >= 2 and out.dim() == y.dim() + 1
            and out.shape[:-1] == y.shape and out.shape[-1] > 1)
    if not dense and not last:
        return None
    if not last or class_index_loss(loss_fn) is not None:
        return 1 if dense else None
    gen = torch.Generator().manual_seed(0)  # the global generators untouched
    with torch.no_grad():
        scores = out.detach()
        if scores.dtype in (torch.float16, torch.bfloat16):  # (their rounding of s + r moved
            scores = scores.float()  # the loss by more than the tolerance)
        # shifts on the scale of the scores, so that one along the wrong axis moves the margins
        # as much as the scores differ (N(0, 1) shifts of scores of std 100 moved a saturated
        # loss by less than the tolerance: no acc)
        spread = 1.0 + float(scores.double().std()) if scores.numel() > 1 else 1.0
        try:
            base = float(loss_fn(scores, y))
            changes = []
            for axis in (1, out.dim() - 1):
                shape = list(scores.shape)
                shape[axis] = 1
                shift = torch.randn(shape, generator=gen, dtype=torch.float64) * spread
                moved = float(loss_fn(scores + shift.to(scores.device, scores.dtype), y))
                changes.append(abs(moved - base))
        except Exception:  # a loss that takes no plain tensor of these scores
            return None
    tol = 1e-4 * (1.0 + abs(base))
    if not math.isfinite(base) or (changes[0] <= tol) == (changes[1] <= tol):
        return None
    return (1 if dense else None) if changes[0] <= tol else -1


def one_hot_labels(loss_fn: Callable, y: Any) -> torch.Tensor | None:
    """The class indices of one-hot targets for a class-index loss: ``y.argmax(dim=1)`` when
    ``loss_fn`` is a ``CrossEntropyLoss``/``F.cross_entropy`` (:func:`class_index_loss`, which
    takes class probabilities of the outputs' shape) and ``y`` is a floating ``(N, C, ...)``
    tensor, ``C >= 2``, of exact 0/1 entries with one 1 in each row (per position of a map):
    such targets name a class as its index would (their accuracy was NaN, 'baseline: train
    loss 0.467' without a val acc); also for a squared-error loss (``MSELoss``/``F.mse_loss``,
    ``HuberLoss``/``SmoothL1Loss`` and their functions) on such ``(N, C)`` rows, a classifier
    trained on one-hot rows, scored by the arg-max as ``depthlab run`` and the NumPy doctor
    score ``mse`` on one-hot rows (the torch doctor reported no val acc for ``--loss mse
    --data digits``); else None (soft or smoothed targets name no class)."""
    regression = _squared_error_loss(loss_fn)
    if (class_index_loss(loss_fn) is None and not regression) \
            or not isinstance(y, torch.Tensor) or not y.is_floating_point() or y.dim() < 2 \
            or y.shape[1] < 2 or y.numel() == 0 or (regression and y.dim() != 2):
        return None
    if not bool(((y == 0) | (y == 1)).all()) or not bool((y.sum(dim=1) == 1).all()):
        return None
    return y.argmax(dim=1)


def _squared_error_loss(loss_fn: Callable) -> bool:
    """``loss_fn`` is a squared-error regression loss: ``MSELoss``, ``HuberLoss``,
    ``SmoothL1Loss`` or their functions (also inside ``functools.partial``)."""
    fn, _ = loss_parts(loss_fn)
    f = torch.nn.functional
    return isinstance(fn, (torch.nn.MSELoss, torch.nn.HuberLoss, torch.nn.SmoothL1Loss)) \
        or fn is f.mse_loss or fn is f.huber_loss or fn is f.smooth_l1_loss


def loss_parts(loss_fn: Callable) -> tuple[Callable, dict[str, Any]]:
    """``loss_fn`` without its ``functools.partial`` wrappers, and their keywords (an outer
    partial's keyword over an inner one's): ``partial(F.cross_entropy, ignore_index=255)`` is
    ``(F.cross_entropy, {"ignore_index": 255})``; any other callable comes back with ``{}``."""
    kw: dict[str, Any] = {}
    while isinstance(loss_fn, functools.partial):
        kw = {**loss_fn.keywords, **kw}
        loss_fn = loss_fn.func
    return loss_fn, kw


def class_index_loss(loss_fn: Callable) -> str | None:
    """The name of a class-index loss (``CrossEntropyLoss``/``NLLLoss`` modules, and
    ``F.cross_entropy``/``F.nll_loss``, also inside ``functools.partial``), else None."""
    fn, _ = loss_parts(loss_fn)  # partial(F.cross_entropy, ignore_index=255)
    if isinstance(fn, (torch.nn.CrossEntropyLoss, torch.nn.NLLLoss)):
        return type(fn).__name__
    if fn is torch.nn.functional.cross_entropy or fn is torch.nn.functional.nll_loss:
        return f"F.{fn.__name__}"
    return None


def binary_threshold(loss_fn: Callable) -> float | None:
    """The decision threshold of a binary cross-entropy's outputs: 0 for logits
    (``BCEWithLogitsLoss``, ``F.binary_cross_entropy_with_logits``), 0.5 for probabilities
    (``BCELoss``, ``F.binary_cross_entropy``), also inside a ``functools.partial``
    (``partial(F.binary_cross_entropy_with_logits, pos_weight=w)``: its accuracy was NaN);
    None for any other loss."""
    loss_fn, _ = loss_parts(loss_fn)
    if isinstance(loss_fn, torch.nn.BCEWithLogitsLoss) \
            or loss_fn is torch.nn.functional.binary_cross_entropy_with_logits:
        return 0.0
    if isinstance(loss_fn, torch.nn.BCELoss) or loss_fn is torch.nn.functional.binary_cross_entropy:
        return 0.5
    return None


def binary_hits(out: Any, y: Any, threshold: float) -> tuple[int, int] | None:
    """``(correct, entries)`` of a binary classifier's outputs against hard 0/1 targets of the
    same shape: ``out > threshold`` predicts 1 (every output column a label of its own, as
    Keras' ``binary_accuracy``); None when the targets are not all exactly 0 or 1 (soft
    targets have no accuracy)."""
    if not (isinstance(out, torch.Tensor) and isinstance(y, torch.Tensor)) \
            or out.shape != y.shape or not y.is_floating_point() or out.dim() == 0:
        return None
    hard = (y == 0) | (y == 1)
    if not bool(hard.all()):
        return None
    return int(((out > threshold) == (y == 1)).sum()), y.numel()


ACC_KEYS = ("logits", "out", "output", "outputs", "pred", "preds", "y_hat")
"""Keys of a dict output read first for the accuracy (torchvision's segmentation models
return ``{"out": ..., "aux": ...}``, Hugging Face's ``{"logits": ...}``)."""


def _parts_the_loss_reads(out: Any, loss: tuple[Callable, Any] | None) -> set[int] | None:
    """The ids of the floating tensors of a tuple/list/dict/dataclass output ``out`` that
    ``loss = (loss_fn, y)`` reads: each part replaced by ``2 * part + 1`` in turn, a part whose
    change changes the loss is read (None: not a container of two or more such tensors, or the
    loss fails). A ``(features, logits)`` pair whose loss takes ``out[1]``: the logits, where
    the first tensor of one column per class was the features' (val acc 0.017 at loss 0.43)."""
    if loss is None or isinstance(out, torch.Tensor):
        return None
    loss_fn, y = loss
    if dataclasses.is_dataclass(out) and not isinstance(out, type):
        keys = [f.name for f in dataclasses.fields(out)]
        get = lambda k: getattr(out, k, None)  # noqa: E731
        put = lambda k, v: dataclasses.replace(out, **{k: v})  # noqa: E731
    elif isinstance(out, dict):
        keys = list(out)
        get = out.get

        def put(k: Any, v: Any) -> Any:
            new = copy.copy(out)
            new[k] = v
            return new
    elif isinstance(out, (tuple, list)):
        keys = list(range(len(out)))
        get = out.__getitem__
        if hasattr(out, "_replace") and hasattr(out, "_fields"):  # a namedtuple
            put = lambda k, v: out._replace(**{out._fields[k]: v})  # noqa: E731
        else:  # a plain tuple or list keeps its type; another sequence type becomes a tuple

            def put(k: Any, v: Any) -> Any:
                seq = [v if i == k else p for i, p in enumerate(out)]
                return type(out)(seq) if type(out) in (tuple, list) else tuple(seq)
    else:
        return None
    parts = [(k, get(k)) for k in keys]
    parts = [(k, t) for k, t in parts if isinstance(t, torch.Tensor) and t.is_floating_point()]
    if len(parts) < 2:
        return None
    try:
        with torch.no_grad():
            base = float(scalar_loss(loss_fn, out, y))
            read = {id(t) for k, t in parts
                    if float(scalar_loss(loss_fn, put(k, t.detach() * 2 + 1), y)) != base}
    except Exception:  # noqa: BLE001 - the loss takes no changed copy: today's rule
        return None
    return read or None


def accuracy_output(out: Any, y: Any, threshold: float | None,
                    loss: tuple[Callable, Any] | None = None) -> Any:
    """The tensor the accuracy is read from: ``out`` itself when it is a tensor; for a
    tuple/list (``(logits, aux)``, torchvision's ``InceptionOutputs``), a dict (its
    :data:`ACC_KEYS` first, then its values in order) or a dataclass (its fields read as a
    dict's items, in field order), the first floating tensor that fits the
    targets as the loss's outputs would (one column per class with integer labels, or the
    targets' shape for a binary cross-entropy); else ``out`` (no accuracy: NaN)."""
    if isinstance(out, torch.Tensor):
        return out
    if dataclasses.is_dataclass(out) and not isinstance(out, type):
        # @dataclass Output(loss=None, logits=...): its fields in order, as a dict's values
        # (accumulators._first_tensor reads them so; the acc row and evaluate's accuracy
        # were missing, NaN)
        out_fields = {f.name: getattr(out, f.name, None) for f in dataclasses.fields(out)}
    else:
        out_fields = out
    if isinstance(out_fields, dict):
        keys = [k for k in ACC_KEYS if k in out_fields] + [k for k in out_fields
                                                            if k not in ACC_KEYS]
        parts = [out_fields[k] for k in keys]
    elif isinstance(out, (tuple, list)):
        parts = list(out)
    else:
        return out
    read = _parts_the_loss_reads(out, loss)
    if read:  # the parts the loss reads first
        parts = [t for t in parts if id(t) in read] + [t for t in parts if id(t) not in read]
    for t in parts:
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            continue
        if threshold is None and (is_classification(t, y) or _dense_classes(t, y)):
            return t  # (N, C) or a map (N, C, H, W): torchvision's {'out': ..., 'aux': ...}
        if threshold is not None and isinstance(y, torch.Tensor) and t.shape == y.shape:
            return t
    return out


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: Callable
             ) -> dict[str, float]:
    """Inference-mode (``eval()``) mean loss and accuracy on ``(x, y)`` in
    ``ceil(N / EVAL_BATCH)`` batches of equal size (at most :data:`EVAL_BATCH` rows; the loss
    weighted by batch size, or by what a class-index loss's mean divides by,
    :func:`_mean_mass`): no one-row batch at the end (1025 rows: 512 + 513, not 1024 + 1,
    which a model returning ``out.squeeze()`` turns into a scalar output); the model's mode
    is restored. Accuracy: the share of rows whose arg-max output is the integer
    label (one output per class; rows labelled with the loss's ``ignore_index``, a negative
    number or one past the classes left out, as :func:`depthlab.torch.probe.accuracy`
    does), or for a binary cross-entropy with hard 0/1 targets the share of entries on the
    right side of :func:`binary_threshold`; else NaN. A model returning a
    tuple or dict (its loss_fn taking the whole) gets the accuracy of the output
    :func:`accuracy_output` picks."""
    was_training = model.training
    model.eval()
    threshold = binary_threshold(loss_fn)
    from .probe import labelled, loss_ignore_index

    ignore = loss_ignore_index(loss_fn)
    try:
        total, correct, n, classify = 0.0, 0, 0, True
        entries = 0  # the accuracy's denominator (rows, or binary entries)
        rows = len(x)
        parts = math.ceil(rows / EVAL_BATCH)  # 0 rows: none
        for k in range(parts):
            lo, hi = k * rows // parts, (k + 1) * rows // parts
            xb, yb = x[lo:hi], y[lo:hi]
            out = model(xb.clone())  # a forward that divides its input in place (x /= 255)
            # would otherwise change the data every later evaluation and probe reads
            loss = float(scalar_loss(loss_fn, out, yb))
            mass = _mean_mass(loss_fn, yb)  # what this batch's mean divided by
            if mass != 0:  # (every label ignored: the batch's mean is 0/0, no part of the
                total += loss * mass  # whole set's)
                n += mass
            labels = one_hot_labels(loss_fn, yb) if threshold is None else None
            y_loss = yb
            if labels is not None:  # one-hot targets: their class indices name the classes
                yb = labels
            whole = out
            out = accuracy_output(out, yb, threshold, (loss_fn, y_loss))  # (logits, aux), ...
            hits = binary_hits(out, yb, threshold) if classify and threshold is not None \
                else None
            # the class axis a loss reads (N, T, C) scores on, T == C (class_axis); a part of
            # a tuple or dict output: dim 1
            axis = None if threshold is not None or not classify else (
                class_axis(out, yb, loss_fn) if out is whole and labels is None else
                1 if is_classification(out, yb) or _dense_classes(out, yb) else None)
            if hits is not None:
                correct += hits[0]
                entries += hits[1]
            elif classify and threshold is None and axis is not None:
                # (N, C) scores and (N,) labels, or (N, C, H, W) and (N, H, W): per entry,
                # the loss's ignore_index left out (probe.accuracy's rule; the rows of
                # CrossEntropyLoss(ignore_index=-1) labelled -1 counted as misses: train acc
                # 0.5875 where 0.7966 of the labelled rows were right)
                valid = labelled(yb, out.shape[axis], ignore)  # (255 of a lambda's loss)
                correct += int(((out.argmax(dim=axis) == yb) & valid).sum())
                entries += int(valid.sum())
            else:
                classify = False
    finally:
        model.train(was_training)
    loss = total / n if n else math.nan
    return {"loss": loss if math.isfinite(loss) else math.nan,
            "acc": correct / entries if classify and entries else math.nan}


def _mean_mass(loss_fn: Callable, y: Any) -> float:
    """The denominator of ``loss_fn``'s mean over the batch of targets ``y``, so that the
    batches' losses of :func:`evaluate` add up to the loss of the whole set: for a
    ``CrossEntropyLoss``/``NLLLoss`` (or ``F.cross_entropy``/``F.nll_loss``, also in a
    ``functools.partial``) of mean reduction on integer labels, the sum of the class weights
    of the labels it does not ignore (their number without weights); else the rows
    ``len(y)``. A batch mean of 1000 rows, 90% of them the ignored -100, weighed as much as one
    of 1000 labelled rows: 1.2265 for a whole-set loss of 1.2377."""
    from .probe import loss_ignore_index

    fn, kw = loss_parts(loss_fn)
    if class_index_loss(fn) is None \
            or kw.get("reduction", getattr(fn, "reduction", "mean")) != "mean" \
            or not isinstance(y, torch.Tensor) or y.is_floating_point() \
            or y.dtype == torch.bool:
        return float(len(y))
    ignore = loss_ignore_index(loss_fn)
    labels = y[y != (-100 if ignore is None else ignore)]
    weight = kw.get("weight", getattr(fn, "weight", None))
    if not isinstance(weight, torch.Tensor):
        return float(labels.numel())
    if labels.numel() and (bool((labels < 0).any()) or bool((labels >= len(weight)).any())):
        return float(len(y))  # labels the loss itself refuses
    return float(weight.detach().to(labels.device, torch.float64)[labels].sum())


@dataclass
class TrainResult:
    """What :func:`train` leaves behind: the per-step ``history`` (NumPy trainer's type), the
    probe table ``probes`` (with ``update_ratio`` rows), and the final ``metrics``."""

    history: History
    probes: pd.DataFrame
    metrics: dict[str, float]
    # update_ratio rows (the probe table's columns) of the first unprobed updates, measured
    # when train() is given ``early_steps``
    early_ratios: pd.DataFrame | None = None


def _difference(w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``W - W0`` in the norms' dtype (float64; float32 on MPS)."""
    wide = norm_dtype(b)
    return w.detach().to(wide) - b.to(wide)


def _ratio_of(w: torch.Tensor, b: torch.Tensor, n0: float, n1: float) -> float:
    """``||W - W0|| / ||W0||`` from the host norms; where ``||W0||`` (or a too large
    ``||W - W0||``) leaves the range whose squares float64 holds, both taken again by
    :func:`~depthlab.torch.accumulators.scaled_norm` (exact power-of-two scaling), as the
    Watch does. ``||W0|| = 0``: inf, or NaN when the update is 0 too (``0 / 0``, as before)."""
    if not NORM_LOW <= n0 <= NORM_HIGH or n1 > NORM_HIGH:
        n0, n1 = scaled_norm(b, n0), scaled_norm(_difference(w, b), n1)
    if n0 == 0.0:
        return math.nan if n1 == 0.0 or n1 != n1 else math.inf
    return n1 / n0


class _UpdateRatios:
    """Copies the weight layers' tensors before a probed update, then computes
    ``||W_k - W_(k-1)|| / ||W_(k-1)||`` on the device with one host transfer; only for the
    weights the backward reached (``.grad`` set): a layer the forward runs under
    ``torch.no_grad()`` (a fixed backbone whose weights still require grad) is no more
    updated than a frozen one, and its ratio of 0 at every step held the median over layers
    (lr_too_high's metric) at 0 while the trained head's updates rewrote its weights."""

    def __init__(self, layers: Sequence[tuple[int, str, torch.Tensor]]) -> None:
        self.layers = list(layers)
        self.before: list[tuple[int, str, torch.Tensor, torch.Tensor]] = []

    def snapshot(self) -> None:
        self.before = [(idx, name, w, w.detach().clone()) for idx, name, w in self.layers
                       if w.grad is not None]

    def rows(self, step: int) -> list[tuple]:
        if not self.before:
            return []
        with torch.no_grad():
            # float64 norms (float32 on MPS), one transfer: float32 ones read NaN for float64
            # weights of 1e200 (and inf for weights of 1e-50), or float32 weights of 1e20
            n0 = torch.stack([torch.linalg.vector_norm(b, dtype=norm_dtype(b))
                              for *_, b in self.before])
            n1 = torch.stack([torch.linalg.vector_norm(_difference(w, b))
                              for _, _, w, b in self.before])
            norms = torch.stack([n0, n1], dim=1).cpu().tolist()
        rows = [(step, idx, name, "update_ratio", _ratio_of(w, b, *pair))
                for (idx, name, w, b), pair in zip(self.before, norms)]
        self.before = []
        return rows


_RUN_PROGRESS: contextvars.ContextVar[list | None] = contextvars.ContextVar(
    "depthlab_torch_run_progress", default=None)


@contextlib.contextmanager
def runs_progress(progress: Any, label: str = "doctor") -> Iterator[None]:
    """Within the block every :func:`train` run shows its steps: ``progress`` as
    :func:`depthlab.fit`'s (True/``"bar"``: a bar per run, ``"lines"``: a status line every
    few seconds, False/None: nothing), labelled ``"{label} run k"``; a run ended by an
    exception has its bar closed on the way out."""
    from ..progress import mode

    if mode(progress) is None:
        yield
        return
    state = [progress, label, 0, None]  # setting, label, runs so far, the open bar
    token = _RUN_PROGRESS.set(state)
    try:
        yield
    finally:
        _RUN_PROGRESS.reset(token)
        if state[3] is not None:
            state[3].close()


def _run_bar(steps: int) -> Any:
    """The progress bar of a new :func:`train` run inside :func:`runs_progress`, else None."""
    state = _RUN_PROGRESS.get()
    if state is None:
        return None
    from ..progress import make_progress

    state[2] += 1
    state[3] = make_progress(steps, state[0], unit=f"{state[1]} run {state[2]} step")
    return state[3]


def _end_bar(bar: Any) -> None:
    if bar is not None:
        bar.close()
        state = _RUN_PROGRESS.get()
        if state is not None and state[3] is bar:
            state[3] = None


STEP_BYTES = STEP_RECORD_BYTES + 16
"""Memory of one training step's history, at least: its loss in ``History.step_loss`` (the
trainer's :data:`~depthlab.training.trainer.STEP_RECORD_BYTES`) and its row of the steps table
built at the end (int64 step and float64 loss, 16 B), as the runner's
``HISTORY_STEP_BYTES``."""
RATIO_ROW_BYTES = 120
"""Memory of one ``update_ratio`` row (a tuple of four values) per weight layer and probe."""


def check_history_fits(spec: TorchTrainSpec, first_probe: pd.DataFrame | None,
                       weight_layers: int = 0) -> None:
    """Refuse (:class:`~depthlab.memory.MemoryRefusal`, one line) before the first update a
    run whose records cannot fit: ``steps x`` :data:`STEP_BYTES` of loss history plus, for
    the ``r = steps // probe_every + 1`` probe records, ``r x`` the bytes of the first probe
    table (``first_probe``) and ``r x weight_layers x`` :data:`RATIO_ROW_BYTES`
    (``dlt.doctor(steps=10**10)`` trained until its history outgrew the machine)."""
    from ..memory import CHECK_FROM_BYTES, check_fits

    steps = int(spec.steps)
    records = steps // max(int(spec.probe_every), 1) + 1
    per_probe = 0 if first_probe is None else int(first_probe.memory_usage(deep=True).sum())
    need = steps * STEP_BYTES + records * (per_probe + weight_layers * RATIO_ROW_BYTES)
    if need < CHECK_FROM_BYTES:
        return
    probes = (f" and {records:,} probe records of {len(first_probe)} rows"
              if first_probe is not None else "")
    check_fits(need, f"training for {steps:,} steps (the loss history{probes}; fewer steps"
               f"{' or a larger probe_every' if first_probe is not None else ''})")


def train(
    model: torch.nn.Module,
    data: TensorData,
    loss_fn: Callable,
    spec: TorchTrainSpec,
    *,
    probe: ProbeFn | None = None,
    probe_batch: tuple[torch.Tensor, torch.Tensor] | None = None,
    weight_layers: Sequence[tuple[int, str, torch.Tensor]] = (),
    early_steps: int = 0,
) -> TrainResult:
    """Train ``model`` in place for ``spec.steps`` updates on ``data`` (see the module doc).

    ``probe(model, x, y, loss_fn)`` returns a table with columns ``layer, module, quantity,
    value`` (a ``step`` column is overwritten) for the ``probe_batch`` ``(x, y)``;
    ``weight_layers``: ``(layer index, module name, weight tensor)`` for ``update_ratio``;
    ``early_steps``: the ``update_ratio`` of each of the first ``early_steps`` updates that are
    not probed is measured too (``TrainResult.early_ratios``: a weight copy per update).
    """
    n = len(data.x)
    if n == 0:
        raise ValueError("the training data are empty")
    order_rng = np.random.default_rng(spec.seed)
    torch.manual_seed(spec.seed)
    np.random.seed(spec.seed % 2**32)  # a model or loss drawing from NumPy's or Python's
    random.seed(spec.seed)  # global generator: the same draws in every run
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters (every parameter has "
                         "requires_grad=False); expected at least one to train: unfreeze a "
                         "layer, e.g. model.head.requires_grad_(True)")
    opt = make_optimizer(spec, params)
    ratios = _UpdateRatios(weight_layers)
    rows: list[tuple] = []
    early_rows: list[tuple] = []
    frames: list[pd.DataFrame] = []

    def record(step: int) -> None:
        if probe is None or probe_batch is None:
            return
        with named_failure(f"in the probe at step {step} (the {len(probe_batch[0])} probe "
                           "rows)", loss_fn):
            df = probe(model, probe_batch[0].clone(), probe_batch[1], loss_fn)
        df = df.assign(step=step)
        frames.append(df)

    hist = History()
    t0 = time.perf_counter()
    model.train()
    record(0)
    check_history_fits(spec, frames[0] if frames else None, len(weight_layers))
    perm = order_rng.permutation(n)
    pos = 0
    bs = min(spec.batch_size, n)
    epoch = 0
    last_probed = 0
    bar = _run_bar(spec.steps)
    for step in range(1, spec.steps + 1):
        if pos + bs > n:
            perm, pos, epoch = order_rng.permutation(n), 0, epoch + 1
        idx = torch.from_numpy(perm[pos:pos + bs]).to(data.x.device)
        pos += bs
        xb, yb = data.x.index_select(0, idx), data.y.index_select(0, idx)
        if spec.warmup:
            for g in opt.param_groups:
                g["lr"] = spec.lr * min(1.0, step / spec.warmup)
        opt.zero_grad(set_to_none=True)
        with named_failure(f"at training step {step} of {spec.steps} (a mini-batch of "
                           f"{len(xb)} rows), after the checks on the first ones passed",
                           loss_fn):
            loss = scalar_loss(loss_fn, model(xb), yb)
        value = float(loss.detach())
        hist.step_loss.append(value)
        if not math.isfinite(value):
            hist.divergence = DivergenceReport(step=step, epoch=epoch, loss=value, layer=None,
                                               nonfinite_parameters=[])
            break
        loss.backward()
        if spec.clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, spec.clip_grad_norm)
        probed = step % spec.probe_every == 0 or step == spec.steps
        early = not probed and step <= early_steps
        if (probed or early) and weight_layers:
            ratios.snapshot()
        opt.step()
        if bar is not None:
            bar.update(1)
        if early:
            early_rows.extend(ratios.rows(step))
        if probed:
            rows.extend(ratios.rows(step))
            record(step)
            last_probed = step
    _end_bar(bar)
    if hist.diverged:
        opt.zero_grad(set_to_none=True)
    else:
        if spec.bn_population:
            population_batchnorm(model, data.x)
        calibrate_population(model, data.x)  # depthlab's "population" batch norms: the
        # final metrics in eval mode use the trained weights' whole-training-set statistics
        if last_probed != hist.steps or spec.bn_population:
            if frames and int(frames[-1]["step"].iloc[0]) == hist.steps:
                frames.pop()  # measured again with the population statistics
            record(hist.steps)
    hist.seconds = time.perf_counter() - t0
    with named_failure(f"on the final metrics after {hist.steps} steps (eval mode, the whole "
                       "training and validation sets)", loss_fn):
        metrics = final_metrics(model, data, loss_fn, hist, spec.steps)
    frames.append(pd.DataFrame(rows, columns=list(TABLE_COLUMNS)))
    table = pd.concat([f for f in frames if len(f)], ignore_index=True) \
        if any(len(f) for f in frames) else pd.DataFrame({c: [] for c in TABLE_COLUMNS})
    table = table[list(TABLE_COLUMNS) + [c for c in table.columns if c not in TABLE_COLUMNS]]
    table = table.sort_values(["step", "layer"], kind="stable").reset_index(drop=True)
    return TrainResult(history=hist, probes=table, metrics=metrics,
                       early_ratios=pd.DataFrame(early_rows, columns=list(TABLE_COLUMNS))
                       if early_steps else None)


def bn_channel_dim(bn: torch.nn.Module, v: torch.Tensor) -> int:
    """The axis of ``bn``'s input ``v`` that holds its channels, over whose other axes its
    statistics are taken: 1 for torch's batch norms (``(N, C, ...)``); the last for one over
    the features of ``(N, ..., C)`` inputs (``channels_last = True``, as
    :class:`depthlab.torch.prescriptions.FeatureBatchNorm`, the batch-norm cure's norm after a
    Linear layer applied to sequences), or where only the last axis has ``num_features``
    entries (a subclass that reshapes its input itself). Read as axis 1, such a norm's
    population statistics and BN drift were taken per sequence position (or failed on a
    shape mismatch)."""
    if v.dim() <= 2:
        return min(1, v.dim() - 1)
    last = v.dim() - 1
    if getattr(bn, "channels_last", False):
        return last
    c = getattr(bn, "num_features", None)
    return last if c is not None and v.shape[1] != c and v.shape[last] == c else 1


@torch.no_grad()
def population_batchnorm(model: torch.nn.Module, x: torch.Tensor) -> int:
    """Recompute every batch norm's running statistics over all of ``x``: one pass in
    batches of at most :data:`EVAL_BATCH` rows (batch norms in training mode, every other
    module in eval mode so dropout is off) accumulating, per channel, ``n``, ``S1 = sum u`` and
    ``S2 = sum u^2`` of ``u = v - K`` for each batch norm's input ``v`` (float64; ``K`` its first
    batch's mean), then ``running_mean = K + S1 / n`` and ``running_var = (S2 - S1^2 / n) /
    (n - 1)`` (unbiased, as torch keeps it): every row
    counts once, whatever the batch sizes (an average of batch averages would weigh a short
    last batch like a full one). Momenta and modes restored. Returns the number of batch
    norms."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
           and m.track_running_stats]
    if not bns:
        return 0
    modes = {m: m.training for m in model.modules()}
    momenta = {bn: bn.momentum for bn in bns}
    sums: dict[torch.nn.Module, list] = {bn: [0, 0.0, 0.0, None] for bn in bns}

    def accumulate(bn: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        v = (args or tuple(kwargs.values()))[0].detach().to(torch.float64)  # bn(input=h) too
        ch = bn_channel_dim(bn, v)
        dims = [d for d in range(v.dim()) if d != ch]
        acc = sums[bn]
        if acc[3] is None:  # sums of v - K, K the first batch's mean: S2 - S1^2 / n cancels
            acc[3] = v.mean(dim=dims)  # only to |mean - K| / std (mean 1e7, std 1: 2% off)
        v = v - acc[3].reshape([-1 if d == ch else 1 for d in range(v.dim())])
        acc[0] += v.numel() // max(v.shape[ch], 1)
        acc[1] = acc[1] + v.sum(dim=dims)
        acc[2] = acc[2] + (v * v).sum(dim=dims)

    handles = [bn.register_forward_pre_hook(accumulate, with_kwargs=True) for bn in bns]
    n = len(x)
    parts = max(1, math.ceil(n / EVAL_BATCH))  # equal batches: no one-row batch at the end
    try:
        for m in model.modules():
            m.train(m in momenta)
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None
        for k in range(parts):
            model(x[k * n // parts:(k + 1) * n // parts].clone())
        for bn, (count, s1, s2, shift) in sums.items():
            if count < 2:
                continue
            mean = s1 / count
            var = ((s2 - s1 * mean) / (count - 1)).clamp_min(0.0)
            mean = mean + shift
            bn.running_mean.copy_(mean)
            bn.running_var.copy_(var)
    finally:
        for h in handles:
            h.remove()
        for bn, mom in momenta.items():
            bn.momentum = mom
        for m, was in modes.items():
            m.training = was
    return len(bns)


class _Reached(Exception):
    """Stops a calibration pass at the batch norm being calibrated."""


def population_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The batch norms of ``model`` whose eval mode uses whole-training-set statistics
    (``depthlab.bridge``'s ``PopulationBatchNorm1d`` with ``inference="population"``: buffers
    ``population_mean`` and ``population_var``), in forward (module) order."""
    return [m for m in model.modules()
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
            and getattr(m, "inference", None) == "population"
            and isinstance(getattr(m, "population_mean", None), torch.Tensor)
            and isinstance(getattr(m, "population_var", None), torch.Tensor)]


@torch.no_grad()
def calibrate_population(model: torch.nn.Module, x: torch.Tensor) -> int:
    """Set the population statistics of every :func:`population_layers` module from ``x``
    (the training set) under the current weights, as depthlab's ``net.calibrate(x_train)``
    does: layer after layer in inference mode (dropout off, the batch norms before it
    normalizing with their fresh population statistics), ``mean = (1/N) sum v`` and the
    biased ``var = (1/N) sum (v - mean)^2`` of each one's input ``v`` over all ``N`` rows (in
    batches of at most :data:`EVAL_BATCH` rows, float64 sums). Without it such a module
    refuses eval mode. Modes restored. Returns the number of modules calibrated."""
    bns = population_layers(model)
    if not bns:
        return 0
    if len(x) < 2:
        raise ValueError(f"calibrating the population batch-norm statistics needs at least 2 "
                         f"training rows, got {len(x)}")
    modes = {m: m.training for m in model.modules()}
    n = len(x)
    parts = max(1, math.ceil(n / EVAL_BATCH))
    try:
        model.eval()
        for target in bns:
            acc: list[Any] = [0, 0.0, 0.0, None]

            def take(bn: torch.nn.Module, args: tuple, kwargs: dict,
                     target: torch.nn.Module = target, acc: list[Any] = acc) -> None:
                if bn is not target:
                    return
                v = (args or tuple(kwargs.values()))[0].detach().to(torch.float64)
                ch = bn_channel_dim(bn, v)
                dims = [d for d in range(v.dim()) if d != ch]
                if acc[3] is None:  # sums of v - K (K the first batch's mean): no cancellation
                    acc[3] = v.mean(dim=dims)
                v = v - acc[3].reshape([-1 if d == ch else 1 for d in range(v.dim())])
                acc[0] += v.numel() // max(v.shape[ch], 1)
                acc[1] = acc[1] + v.sum(dim=dims)
                acc[2] = acc[2] + (v * v).sum(dim=dims)
                raise _Reached

            handle = target.register_forward_pre_hook(take, with_kwargs=True)
            try:
                for k in range(parts):
                    try:
                        model(x[k * n // parts:(k + 1) * n // parts].clone())
                    except _Reached:
                        pass
            finally:
                handle.remove()
            count, s1, s2, shift = acc
            if shift is None:
                raise ValueError(f"calibrating the population batch-norm statistics: "
                                 f"{type(target).__name__} was not reached by the forward")
            mean = s1 / count
            var = ((s2 - s1 * mean) / count).clamp_min(0.0)
            target.population_mean.copy_(mean + shift)
            target.population_var.copy_(var)
    finally:
        for m, was in modes.items():
            m.training = was
    return len(bns)


def final_metrics(model: torch.nn.Module, data: TensorData, loss_fn: Callable, hist: History,
                  budget: int) -> dict[str, float]:
    """Final train/validation loss and accuracy (NaN after a divergence), steps run, budget,
    seconds; the same keys as the NumPy doctor's metrics."""
    nan = math.nan
    out = {"train_loss": nan, "train_acc": nan, "val_loss": nan, "val_acc": nan,
           "diverged": hist.diverged, "steps": hist.steps, "budget": int(budget),
           "seconds": float(hist.seconds)}
    if hist.diverged:
        return out
    tr = evaluate(model, data.x, data.y, loss_fn)
    out.update(train_loss=tr["loss"], train_acc=tr["acc"])
    if data.x_val is not None and data.y_val is not None and len(data.x_val):
        va = evaluate(model, data.x_val, data.y_val, loss_fn)
        out.update(val_loss=va["loss"], val_acc=va["acc"])
    return out
