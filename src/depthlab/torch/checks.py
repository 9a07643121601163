"""The torch doctor's checks before any training: a usable results folder, a model that
runs on two rows, a loss that reads the right output part, labels and targets of the
kind the loss expects, token ids in range, and one optimizer step that changes the
weights. Each failure is one line naming the bad value and what was expected.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import inspect
import math
import os
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from . import prescriptions as rx
from .train import (
    TensorData,
    TorchTrainSpec,
    binary_threshold,
    class_index_loss,
    loss_hint,
    loss_parts,
    make_optimizer,
    scalar_loss,
)

FLOAT_TARGET_LOSSES = (nn.BCEWithLogitsLoss, nn.BCELoss, nn.MSELoss, nn.L1Loss, nn.SmoothL1Loss,
                       nn.HuberLoss)
"""Losses whose targets must be floating point (integer labels are kept as int64)."""


def _check_out(out: Any) -> None:
    """An unusable results folder (a file, an empty path, a read-only or foreign store) fails
    before any training, not after it: the store is opened and a scratch row written."""
    from ..experiments.store import Store, StoreError

    if not isinstance(out, (str, os.PathLike)):
        raise TypeError(f"out must be a folder path or None, got {type(out).__name__}")
    try:
        with Store(out) as store:
            store.check_writable()
    except StoreError as e:
        raise ValueError(f"out={str(out)!r} cannot hold the diagnosis: {e}") from None


def _check_runs(model: nn.Module, d: TensorData, loss_fn: Callable) -> None:
    """One forward and loss on two rows: a clear error before any training, also when the
    loss broadcasts outputs and targets of different shapes against each other (torch only
    warns, e.g. ``MSELoss`` on outputs ``(N, 1)`` and targets ``(N,)`` compares every output
    with every target)."""
    if isinstance(loss_fn, FLOAT_TARGET_LOSSES) and not d.y.is_floating_point():
        raise TypeError(f"{type(loss_fn).__name__} needs floating-point targets, got "
                        f"{str(d.y.dtype).removeprefix('torch.')} labels: give y as floats "
                        "(e.g. y.astype(np.float32))")
    _check_probability_targets(d, loss_fn)
    kind = class_index_loss(loss_fn)
    if kind and d.y.is_floating_point() and (d.y.dim() == 1 or "nll" in kind.lower()):
        raise TypeError(f"{kind} needs integer class labels, got "  # CE takes probabilities (N, C)
                        f"floating-point targets of shape {tuple(d.y.shape[1:])} per example: "
                        "give y as integers (e.g. y.astype(np.int64))")
    out: Any = None
    try:
        with torch.no_grad(), rx.untouched(model), warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            model.eval()
            out = model(d.x[:2].clone())
            _check_labels(out, d, loss_fn)  # before the loss: torch's 'Target 9 is out of
            scalar_loss(loss_fn, out, d.y[:2])  # bounds' names neither side
    except _LabelError as e:
        raise ValueError(str(e)) from None
    except Exception as e:  # noqa: BLE001 - the user's model or loss failed on the data
        if kind and not d.y.is_floating_point() and d.y.dim() == 2 and d.y.shape[1] == 1 \
                and isinstance(out, torch.Tensor) and out.dim() == 2:  # torch: '0D or 1D
            raise ValueError(f"{kind} takes one class index per example (y of shape (N,)), "
                             "got integer labels of shape (1,) per example (a column (N, "
                             "1)): give y.reshape(-1)") from None  # target tensor expected'
        if isinstance(e, ValueError) and str(e).startswith("loss_fn must return a scalar"):
            raise  # scalar_loss's own message; torch's ValueErrors (BCE's 'Target size
            # (torch.Size([2])) must be ...', of the 2 rows checked) get the shapes below
        hint = "" if d.x.is_floating_point() else (
            "; integer inputs are passed as int64 (token ids for an nn.Embedding): give "
            "floating-point inputs to other models")
        if "'indices'" in str(e) and d.x.is_floating_point() and any(
                isinstance(m, (nn.Embedding, nn.EmbeddingBag)) for m in model.modules()):
            hint += ("; an nn.Embedding takes integer token ids: give x as integers "
                     "(e.g. x.astype(np.int64))")
        if binary_threshold(loss_fn) is not None and isinstance(out, torch.Tensor) and \
                "Target size" in str(e) and out.shape[0] == 2 and d.y.dim() != out.dim() and \
                d.y[0].numel() == out[0].numel():
            hint += ("; a binary cross-entropy takes targets of the outputs' shape: give y as "
                     + ("a column, y.reshape(-1, 1)" if out.dim() == 2 and out.shape[1] == 1
                        else f"y.reshape(-1, {', '.join(map(str, out.shape[1:]))})"
                        if out.dim() > 1 else "y.reshape(-1)"))
        base_loss = loss_parts(loss_fn)[0]
        if _float_target_loss(loss_fn) and d.y.is_floating_point() and \
                isinstance(out, torch.Tensor) and out.dim() >= 1 and \
                out[0].numel() != d.y[0].numel():  # torch: 'The size of tensor a (10) must
            k = d.y[0].numel()  # match the size of tensor b (2) at non-singleton dimension 1'
            what = type(base_loss).__name__ if isinstance(base_loss, nn.Module) else \
                getattr(base_loss, "__name__", "loss_fn")  # (BCE: 'Target size ... must be')
            hint += (f"; {what} compares each output with its target: "
                     + _count_hint(out[0].numel(), k) + ", or targets of the outputs' shape")
            if binary_threshold(loss_fn) is not None and k == 1 and out[0].numel() == 2:
                hint += " (2 outputs for 2 classes: CrossEntropyLoss with integer labels)"
        if out is None and d.x.dim() == 1 and d.x.is_floating_point():
            hint += ("; x holds one number per example (shape (N,)): a model of one input "
                     "feature takes a column, x.reshape(-1, 1)")
        conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
        channels = "channels" in str(e)  # torch's conv: 'expected input[...] to have 3 channels'
        if conv is not None and out is None and channels and d.x.dim() == 4 and \
                d.x.shape[-1] == conv.in_channels != d.x.shape[1]:
            hint += ("; the images look channels-last (N, H, W, C): torch's Conv2d takes "
                     "(N, C, H, W), e.g. x.transpose(0, 3, 1, 2)")
        if conv is not None and out is None and channels and d.x.dim() == 3 and \
                conv.in_channels == 1:
            # (N, H, W): torch read the batch checked as one image of N channels
            hint += ("; the images have no channel axis (N, H, W): torch's Conv2d takes "
                     "(N, C, H, W), e.g. x[:, None] for one channel")
        if binary_threshold(loss_fn) == 0.5 and "input should be between 0 and 1" in str(e):
            hint += ("; BCELoss takes the model's outputs as probabilities (a sigmoid at its "
                     "end): for logits use nn.BCEWithLogitsLoss ('bce_with_logits')")
        if kind and isinstance(out, torch.Tensor) and not d.y.is_floating_point() and \
                out.dim() >= 3 and out.dim() == d.y.dim() + 1 and \
                tuple(out.shape[:-1]) == tuple(d.y[:2].shape) and out.shape[1] != out.shape[-1]:
            fn = "nll_loss" if "nll" in kind.lower() else "cross_entropy"  # (N, T, C), (N, T)
            hint += (f"; the model's outputs hold the {out.shape[-1]} classes last (shape "
                     f"{tuple(out.shape[1:])} per example, labels {tuple(d.y.shape[1:])}), but "
                     f"{kind} takes them in dim 1, (N, C, ...): give loss_fn=lambda out, y: "
                     f"nn.functional.{fn}(out.movedim(-1, 1), y)")
        if kind and isinstance(out, torch.Tensor) and out.dim() == 1 and \
                not d.y.is_floating_point():  # torch: 'Expected floating point type for target'
            hint += (f"; {kind} takes one score per class, (N, C): the model returns one "
                     "number per example; give it C outputs, or for two classes use "
                     "nn.BCEWithLogitsLoss with y.float()")
        if out is None and isinstance(e, TypeError):
            hint += _keyword_forward_hint(model)
        hint += _time_first_hint(model, d.x, out)
        if out is not None and not isinstance(out, torch.Tensor):  # (logits, aux), a dict
            what = type(out).__name__  # (an Out namedtuple, a dict)
            hint += (f"; the model returns {'an' if what[:1].lower() in 'aeiou' else 'a'} "
                     f"{what}, not a tensor: give a "
                     f"loss_fn that takes it, e.g. {_loss_of_part(out, d, loss_fn)}")
        raise ValueError(f"the model or loss_fn fails on inputs of shape "
                         f"{tuple(d.x.shape[1:])} per example (targets: shape "
                         f"{tuple(d.y.shape[1:])}, {str(d.y.dtype).removeprefix('torch.')}): "
                         f"{type(e).__name__}: {e}{hint}") from None
    broadcast = [w for w in seen if "broadcasting" in str(w.message) and "size" in str(w.message)]
    for w in seen:  # the user's other warnings, shown as they would have been
        if w not in broadcast:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if broadcast:
        shape = tuple(out.shape[1:]) if isinstance(out, torch.Tensor) else "?"
        raise ValueError(f"loss_fn broadcasts the model's outputs (shape {shape} per example) "
                         f"against the targets (shape {tuple(d.y.shape[1:])} per example); "
                         "expected the same shape: reshape the targets or the outputs"
                         + ("; for one output per example give y as a column, "
                            "y.reshape(-1, 1)" if shape == (1,) and tuple(d.y.shape[1:]) == ()
                            else "; " + _count_hint(out[0].numel(), d.y[0].numel())
                            if isinstance(out, torch.Tensor) and out.dim() >= 1
                            and out[0].numel() != d.y[0].numel() else ""))
    _check_score_kinds(model, d, loss_fn)
    if d.x_val is not None and d.y_val is not None and len(d.x_val) == 1:
        try:  # the final validation metrics see it as a batch of one row (out.squeeze(): a
            with torch.no_grad(), rx.untouched(model), warnings.catch_warnings():  # scalar)
                warnings.simplefilter("ignore")
                model.eval()
                scalar_loss(loss_fn, model(d.x_val.clone()), d.y_val)
        except Exception as e:  # noqa: BLE001 - the user's model or loss failed on one row
            raise ValueError(f"the model or loss_fn fails on the validation set's single row "
                             f"(a batch of 1; it runs on 2 rows): {type(e).__name__}: {e}; "
                             "give at least 2 validation rows, or none") from None


def _count_hint(n_out: int, k: int) -> str:
    """``the model returns 10 outputs per example, the targets hold 1: give the model 1
    output per example (e.g. a last nn.Linear(..., 1))``: a loss that compares each output
    with its target, on as many outputs as targets."""
    return (f"the model returns {n_out} output{'s' if n_out != 1 else ''} per example, the "
            f"targets hold {k}: give the model {k} output{'s' if k != 1 else ''} per example "
            f"(e.g. a last nn.Linear(..., {k}))")


def _loss_of_part(out: Any, d: TensorData, loss_fn: Callable) -> str:
    """``lambda out, y: LOSS(PART, y)`` for a model returning a tuple, dict or dataclass:
    PART reads the tensor the accuracy would (``out['logits']``, ``out.logits``, ``out[0]``;
    a dict was told ``out[0]``, a KeyError), LOSS is the given loss (its ``nn`` class, or
    ``nn.functional.cross_entropy``)."""
    from .train import accuracy_output

    part = "out[0]"
    try:
        t = accuracy_output(out, d.y[:2], binary_threshold(loss_fn))
        if isinstance(t, torch.Tensor) and not d.y.is_floating_point() and len(d.y) and \
                t.dim() >= 2 and t.shape[1] <= int(d.y.max()):  # too few columns for the
            t = None  # labels (features of a (features, logits) pair)
    except Exception:  # noqa: BLE001 - only a hint
        t = None
    if t is None:
        cands = list(out.values()) if isinstance(out, dict) else list(out) \
            if isinstance(out, (tuple, list)) else []
        t = next((v for v in cands if isinstance(v, torch.Tensor) and v.is_floating_point()
                  and v.dim() >= 2 and (d.y.is_floating_point() or not len(d.y)
                                        or v.shape[1] > int(d.y.max()))), None)
    fields = ({f.name: getattr(out, f.name, None) for f in dataclasses.fields(out)}
              if dataclasses.is_dataclass(out) and not isinstance(out, type) else None)
    items = fields if fields is not None else out if isinstance(out, dict) else None
    if items is not None:
        tensors = [k for k, v in items.items() if isinstance(v, torch.Tensor)]
        key = next((k for k, v in items.items() if v is t), tensors[0] if tensors else None)
        if key is not None:
            part = f"out.{key}" if fields is not None and str(key).isidentifier() else \
                f"out[{key!r}]"
    elif isinstance(out, (tuple, list)):
        i = next((i for i, v in enumerate(out) if v is t), next(
            (i for i, v in enumerate(out) if isinstance(v, torch.Tensor)), 0))
        part = f"out[{i}]"
    cls = type(loss_fn)
    loss = f"nn.{cls.__name__}()" if isinstance(loss_fn, nn.Module) and \
        getattr(nn, cls.__name__, None) is cls else "nn.functional.cross_entropy"
    return f"lambda out, y: {loss}({part}, y)"


def _time_first_hint(model: nn.Module, x: torch.Tensor, out: Any) -> str:
    """The hint for a recurrent layer built time-first (``nn.LSTM(8, 16)``: ``batch_first``
    False, torch's default) that reads the doctor's examples ``(N, T, features)`` with the
    time steps as its batch: its outputs have ``T`` rows for ``N`` targets (torch said only
    'Expected input batch_size (8) to match target batch_size (2)')."""
    rnn = next((m for m in model.modules() if isinstance(m, nn.RNNBase) and not m.batch_first),
               None)
    if rnn is None or x.dim() != 3 or not isinstance(out, torch.Tensor) or out.dim() == 0 \
            or out.shape[0] == 2:
        return ""
    name = next((n for n, m in model.named_modules() if m is rnn), "") or "model"
    return (f"; the model's {type(rnn).__name__} '{name}' has batch_first=False (time first, "
            f"(T, N, features)), but the doctor gives the examples along dim 0, (N, T, "
            f"features): its outputs have {out.shape[0]} rows (the time steps) for 2 examples; "
            f"build it with batch_first=True")


def _loss_on(loss_fn: Callable, device: torch.device, dtype: torch.dtype) -> Callable:
    """``loss_fn`` with its floating-point tensors (a ``CrossEntropyLoss``'s class weights, a
    ``BCEWithLogitsLoss``'s ``pos_weight``, the tensor keywords of a ``functools.partial``) on
    the model's device and in its floating dtype, as the doctor gives it the data: a copy
    where any differs (the caller's loss is left as it is), else ``loss_fn`` itself. A
    float64 model with ``CrossEntropyLoss(weight=torch.tensor([1., 3.]))`` was refused with
    torch's 'expected scalar type Double but found Float'."""
    def differs(t: Any) -> bool:
        return isinstance(t, torch.Tensor) and t.is_floating_point() and \
            (t.device != device or t.dtype != dtype)

    if isinstance(loss_fn, functools.partial):
        inner = _loss_on(loss_fn.func, device, dtype)
        kw = {k: v.to(device=device, dtype=dtype) if differs(v) else v
              for k, v in loss_fn.keywords.items()}
        if inner is loss_fn.func and all(kw[k] is v for k, v in loss_fn.keywords.items()):
            return loss_fn
        return functools.partial(inner, *loss_fn.args, **kw)
    if isinstance(loss_fn, nn.Module) and any(
            differs(t) for t in (*loss_fn.parameters(), *loss_fn.buffers())):
        try:
            return copy.deepcopy(loss_fn).to(device=device, dtype=dtype)
        except Exception:  # noqa: BLE001 - not copyable: torch's own error when it runs
            return loss_fn
    return loss_fn


def _sample_output(model: nn.Module, d: TensorData) -> Any:
    """The model's eval-mode output on two training rows (None when it fails), the model left
    as found: what :func:`constant_loss` reads the number of classes from."""
    try:
        with torch.no_grad(), rx.untouched(model), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.eval()
            return model(d.x[:2].clone())
    except Exception:  # noqa: BLE001 - it ran in _check_runs
        return None


def _keyword_forward_hint(model: nn.Module) -> str:
    """For a ``forward`` that takes no positional input (``def forward(self, *, x)``): how to
    give it to the doctor, which calls ``model(x)``; else ''."""
    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        return ""
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                  inspect.Parameter.VAR_POSITIONAL)
    if any(p.kind in positional for p in params):
        return ""
    names = [p.name for p in params if p.kind == inspect.Parameter.KEYWORD_ONLY]
    first = names[0] if names else "x"
    return (f"; the doctor calls model(x) with the inputs as its one positional argument, but "
            f"{type(model).__name__}.forward takes keywords only ({', '.join(names) or '**kwargs'})"
            f": give a wrapper module whose forward(self, x) returns self.inner({first}=x)")


def _check_token_ids(model: nn.Module, d: TensorData) -> None:
    """For integer inputs that go straight into an ``nn.Embedding``/``nn.EmbeddingBag`` (the
    model's input tensor itself is the module's input, seen by a hook on a two-row forward):
    every training and validation entry in ``[0, num_embeddings)``, else a ValueError naming
    the first bad one. The two-row check sees only two rows, and torch's 'IndexError: index
    out of range in self' would otherwise come from whichever mini-batch (or the probe or
    the final validation pass) first holds one, after training started; run before that
    check (a pre-hook finds the embeddings even when the two rows hold a bad id)."""
    embs = [m for m in model.modules() if isinstance(m, (nn.Embedding, nn.EmbeddingBag))]
    if d.x.is_floating_point() or not embs:
        return
    x2 = d.x[:2].clone()
    direct: list[nn.Module] = []

    def hook(m: nn.Module, inp: tuple) -> None:  # a pre-hook: an id out of range then fails
        if inp and inp[0] is x2 and m not in direct:  # in the module's own forward
            direct.append(m)

    handles = [m.register_forward_pre_hook(hook) for m in embs]
    try:
        with torch.no_grad(), rx.untouched(model), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.eval()
            model(x2)
    except Exception:  # noqa: BLE001 - _check_runs, next, names another failure
        pass
    finally:
        for h in handles:
            h.remove()
    if not direct:
        return
    names = {m: n for n, m in model.named_modules()}
    ids = torch.cat([t.reshape(-1) for t in (d.x, d.x_val) if t is not None])
    for m in direct:
        n = int(m.num_embeddings)
        bad = ids[(ids < 0) | (ids >= n)]
        if len(bad):
            raise ValueError(f"the inputs hold token id {int(bad[0])} ({len(bad)} of "
                             f"{len(ids)} outside 0 to {n - 1}) but the model's "
                             f"{type(m).__name__} {names.get(m, '?')!r} has {n} embeddings; "
                             f"expected token ids 0 to {n - 1}")


def _check_probability_targets(d: TensorData, loss_fn: Callable) -> None:
    """For a binary cross-entropy (``BCELoss``, ``BCEWithLogitsLoss``, their functions in
    ``torch.nn.functional``) with floating-point targets: every training and validation
    target in ``[0, 1]``, else a ValueError naming the first bad one (``BCELoss``: torch's
    'all elements of target should be between 0 and 1' from whichever mini-batch first holds
    one, after training started; ``BCEWithLogitsLoss`` takes it silently, its loss
    ``-t log p - (1 - t) log(1 - p)`` then unbounded below)."""
    kind = type(loss_fn).__name__ if isinstance(loss_fn, (nn.BCELoss, nn.BCEWithLogitsLoss)) \
        else next((f"F.{f.__name__}" for f in (F.binary_cross_entropy,
                                               F.binary_cross_entropy_with_logits)
                   if loss_fn is f), None)
    if kind is None or not d.y.is_floating_point():
        return
    ys = torch.cat([t.reshape(-1) for t in (d.y, d.y_val) if t is not None])
    bad = ys[(ys < 0) | (ys > 1)]
    if len(bad):
        raise ValueError(f"the targets hold {float(bad[0]):g} ({len(bad)} of {len(ys)} outside "
                         f"0 to 1) but {kind} takes probabilities from 0 to 1 (class labels "
                         "0 to K - 1 go with nn.CrossEntropyLoss and K outputs)")


LOG_PROB_TOLERANCE = 0.01
"""How far from 0 the log of the summed probabilities, ``logsumexp`` of an output along its
class axis, may be for it to read as log-probabilities (float32's ``log_softmax``: ~1e-7;
bf16's: ~1e-2 of a class's share at most; raw scores of K classes: about ``ln K``)."""


def _check_log_probabilities(out: Any, loss_fn: Callable) -> None:
    """The kind of scores a class-index loss reads (a cross-entropy: logits, not
    probabilities, :func:`_check_logits`). For a negative log-likelihood (``NLLLoss``,
    ``F.nll_loss``, also inside ``functools.partial``): the model's output must be
    log-probabilities along its class axis
    (dim 1), ``logsumexp_c out[n, c, ...] = 0`` for every example and position, within
    :data:`LOG_PROB_TOLERANCE`; else a ValueError naming the largest deviation. Torch takes
    any scores silently, and the loss ``-out[n, y_n]`` of raw scores is unbounded below: a
    logits CNN trained under it reached a train loss of -1.8e19 in 100 steps, and every
    finding read that run."""
    kind = class_index_loss(loss_fn)
    if kind is None or not isinstance(out, torch.Tensor) or out.dim() < 2 \
            or not out.is_floating_point() or out.shape[1] < 1:
        return
    if "nll" not in kind.lower():
        _check_logits(out.detach(), kind)
        return
    with torch.no_grad():
        lse = torch.logsumexp(out.detach().double(), dim=1)
    dev = lse.abs().nan_to_num(nan=float("inf"))
    if not bool((dev > LOG_PROB_TOLERANCE).any()):
        return
    rows = dev.reshape(len(dev), -1)
    where = int(rows.amax(dim=1).argmax())
    worst = float(lse.reshape(len(lse), -1)[where][rows[where].argmax()])
    raise ValueError(f"{kind} takes log-probabilities (log_softmax of the scores along dim 1), "
                     f"but the model's outputs are not: the log of their summed probabilities "
                     f"is {worst:.3g} at example {where}, not 0, and -out[y] of raw scores "
                     f"falls without bound in training; end the model with "
                     f"nn.LogSoftmax(dim=1), or give these scores to nn.CrossEntropyLoss "
                     f"('cross_entropy')")


def _check_logits(out: torch.Tensor, kind: str) -> None:
    """For a cross-entropy (``CrossEntropyLoss``, ``F.cross_entropy``), which applies
    ``log_softmax`` itself: a ValueError when the model's outputs are already probabilities
    along dim 1 (every entry in ``[0, 1]``, each example's and position's sum 1 within
    :data:`LOG_PROB_TOLERANCE`: a softmax at its end). The loss of probabilities ``p``,
    ``-p_y + ln sum_c e^(p_c)``, cannot fall below ``ln(K - 1 + e) - 1`` (1.46 for K = 10
    classes, against 0 for logits) and its gradient is the softmax's Jacobian times that of
    a nearly flat function: a 64-64-64-10 ReLU MLP on digits (sgd 0.1, 100 steps) ended at a
    train loss of 2.300 and val acc 0.25 (1.52 and 0.65 without the softmax), and the doctor
    found an init mismatch."""
    k = out.shape[1]
    if k < 2:
        return
    with torch.no_grad():
        o = out.double()
        probabilities = bool(((o >= 0) & (o <= 1)).all()) and bool(
            ((o.sum(dim=1) - 1.0).abs() <= LOG_PROB_TOLERANCE).all())
    if not probabilities:
        return
    floor = math.log(k - 1 + math.e) - 1.0
    raise ValueError(f"{kind} takes raw scores (logits) and applies log_softmax itself, but "
                     f"the model's outputs are probabilities (each example's {k} outputs in "
                     f"[0, 1], summing to 1: a softmax at its end), so the loss cannot fall "
                     f"below {floor:.3g} and its gradients are squashed; remove the final "
                     f"nn.Softmax (predict with the arg-max of the logits), or end with "
                     f"nn.LogSoftmax(dim=1) and use nn.NLLLoss ('nll')")


def _check_score_kinds(model: nn.Module, d: TensorData, loss_fn: Callable) -> None:
    """The kind of scores the loss reads, on a forward of 2 rows in training mode (the mode
    the loss trains in: a model that returns probabilities only in eval mode, for its
    users' predictions, trains on logits; its state and the random streams left as found):
    :func:`_check_log_probabilities` (NLL: log-probabilities; cross-entropy: not
    probabilities) and :func:`_check_no_final_sigmoid` (a binary cross-entropy on logits:
    no final ``nn.Sigmoid``)."""
    if class_index_loss(loss_fn) is None and binary_threshold(loss_fn) != 0.0:
        return
    sigmoids = {m: n for n, m in model.named_modules() if isinstance(m, nn.Sigmoid)} \
        if binary_threshold(loss_fn) == 0.0 else {}
    seen: dict[nn.Module, torch.Tensor] = {}

    def hook(m: nn.Module, _i: Any, o: Any) -> None:
        if isinstance(o, torch.Tensor):
            seen[m] = o

    handles = [m.register_forward_hook(hook) for m in sigmoids]
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    try:
        with torch.random.fork_rng(devices=cuda), torch.no_grad(), rx.untouched(model), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.train()
            out = model(d.x[:2].clone())
    except Exception:  # noqa: BLE001 - it ran in eval mode in _check_runs; training names it
        return
    finally:
        for h in handles:
            h.remove()
    _check_log_probabilities(out, loss_fn)
    _check_no_final_sigmoid(out, loss_fn, sigmoids, seen)


def _check_no_final_sigmoid(out: Any, loss_fn: Callable, sigmoids: dict[nn.Module, str],
                            seen: dict[nn.Module, torch.Tensor]) -> None:
    """For a binary cross-entropy on logits (``BCEWithLogitsLoss``,
    ``F.binary_cross_entropy_with_logits``, :func:`binary_threshold` 0): a ValueError when the
    model's output ``out`` is the output of one of its ``nn.Sigmoid`` modules (``seen``: each
    one's output in that forward; the same storage and size, also after a reshape), the
    double sigmoid: each probability ``p`` in (0, 1) is read as a logit, so the loss cannot
    fall below ``-ln sigmoid(1) = 0.313`` for a 1 and ``ln 2`` for a 0, and every output is on
    the 1 side of the logits' threshold 0."""
    if binary_threshold(loss_fn) != 0.0 or not isinstance(out, torch.Tensor) \
            or out.numel() == 0:
        return
    final = next((m for m, o in seen.items() if o.numel() == out.numel()
                  and o.data_ptr() == out.data_ptr()), None)
    if final is None:
        return
    fn, _ = loss_parts(loss_fn)
    kind = type(fn).__name__ if isinstance(fn, nn.Module) else \
        "F.binary_cross_entropy_with_logits"
    raise ValueError(f"{kind} takes logits and applies the sigmoid itself, but the model's "
                     f"output is that of its final nn.Sigmoid ({sigmoids[final]!r}): its "
                     f"probabilities in (0, 1) read as logits, the loss cannot fall below "
                     f"0.313 for a 1 and ln 2 = 0.693 for a 0, and every output predicts 1; "
                     f"remove the final nn.Sigmoid, or use nn.BCELoss ('bce') on its "
                     f"probabilities")


class _LabelError(ValueError):
    """Labels outside the model's classes (:func:`_check_labels`)."""


def _float_target_loss(loss_fn: Callable) -> bool:
    """Whether ``loss_fn`` takes floating-point targets (:data:`FLOAT_TARGET_LOSSES`, the
    binary cross-entropy functions; also inside ``functools.partial``): boolean targets are
    given to it as 0.0/1.0 in the model's dtype."""
    loss_fn, _ = loss_parts(loss_fn)
    return isinstance(loss_fn, FLOAT_TARGET_LOSSES) or binary_threshold(loss_fn) is not None


def _check_labels(out: Any, d: TensorData, loss_fn: Callable) -> None:
    """For a class-index loss (``CrossEntropyLoss``, ``NLLLoss``, their functions in
    ``torch.nn.functional``) on outputs ``(N, C, ...)``
    with integer targets ``(N, ...)``: every training and validation label in ``[0, C)`` (or
    the loss's ``ignore_index``), else a ValueError naming the first bad one. The two-row
    check sees only two labels, and torch's IndexError would otherwise come from whichever
    mini-batch (or the final validation pass) first holds one."""
    y2 = d.y[:2]
    if class_index_loss(loss_fn) is not None and isinstance(out, torch.Tensor) and \
            not y2.is_floating_point() and y2.dim() == 2 and out.shape == y2.shape and \
            bool(((d.y == 0) | (d.y == 1)).all()) and bool((d.y.sum(dim=1) == 1).all()):
        raise _LabelError(f"the labels are one-hot rows of {y2.shape[1]} integers, but "
                          f"{class_index_loss(loss_fn)} takes class indices: give "
                          "y.argmax(axis=1) (or the rows as floats: class probabilities)")
    if class_index_loss(loss_fn) is None or \
            not isinstance(out, torch.Tensor) or y2.is_floating_point() or \
            out.dim() != y2.dim() + 1 or out.dim() < 2 or out.shape[0] != y2.shape[0] or \
            out.shape[2:] != y2.shape[1:]:
        return
    classes = int(out.shape[1])
    from .probe import loss_ignore_index  # (a partial's keyword too: 255 for a void class)

    found = loss_ignore_index(loss_fn)
    ignore = -100 if found is None else int(found)  # the functions' default
    labels = torch.cat([y.reshape(-1) for y in (d.y, d.y_val) if y is not None])
    bad = labels[((labels < 0) | (labels >= classes)) & (labels != ignore)]
    if len(bad):
        raise _LabelError(f"the labels hold {int(bad[0])} ({len(bad)} of {len(labels)} outside "
                          f"0 to {classes - 1}) but the model has {classes} "
                          f"output{'s' * (classes != 1)}; expected "
                          f"class indices 0 to {classes - 1}")
    if bool((d.y == ignore).all()):  # the loss is 0 / 0 = NaN at every step,
        raise _LabelError(f"every training label is the loss's ignore_index "  # a 'divergence'
                          f"{ignore}: nothing to train on; expected class indices "
                          f"0 to {classes - 1}")


def _check_step(model: nn.Module, spec: TorchTrainSpec, d: TensorData, loss_fn: Callable
                ) -> None:
    """One training step of ``spec`` (its optimizer, gradient clipping) on the first
    mini-batch's number of rows, on ``model`` (a copy: it is changed): a clear ValueError before
    any training when it fails, e.g. Adam on the sparse gradients of
    ``nn.Embedding(sparse=True)``, or batch norm on batches of one row."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        return  # train() says so
    opt = make_optimizer(spec, params)
    rows = min(spec.batch_size, len(d.x))

    def failed(e: Exception) -> ValueError:  # (BCELoss on logits: the hint _check_runs gives)
        return ValueError(f"a training step with optimizer {spec.optimizer!r} fails on "
                          f"mini-batches of {rows} row{'s' if rows != 1 else ''} "
                          f"(batch_size {spec.batch_size}, "
                          f"{len(d.x)} training rows): {type(e).__name__}: {e}"
                          f"{loss_hint(loss_fn, e)}")

    try:
        model.train()
        loss = scalar_loss(loss_fn, model(d.x[:rows].clone()), d.y[:rows])
    except Exception as e:  # noqa: BLE001 - e.g. batch norm on one-row batches
        raise failed(e) from None
    if not loss.requires_grad:
        raise ValueError("loss_fn(model(x), y) does not depend on the model's parameters (no "
                         "grad_fn): expected a loss computed from the model's output with "
                         "torch operations (not .item(), NumPy or a detached tensor)")
    try:
        loss.backward()
        if spec.clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, spec.clip_grad_norm)
        opt.step()
    except Exception as e:  # noqa: BLE001 - the optimizer (or clipping) cannot train it
        raise failed(e) from None
