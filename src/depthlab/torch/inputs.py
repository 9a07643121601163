"""Turn the user's data into tensors for the torch doctor: arrays, tensors, lists of
batches, ``Dataset``/``DataLoader`` objects (their order kept), and inputs shaped for
the model's first layer (flat rows for ``Linear``, ``(N, C, H, W)`` images for ``Conv2d``).
"""

from __future__ import annotations

import copy
import math
import os
import warnings
from typing import Any

import numpy as np
import torch
from torch import nn

from . import prescriptions as rx
from .train import (
    TensorData,
    check_fits,
    model_device_dtype,
)

VAL_FRACTION = 0.2
"""Share of a bare ``(x, y)`` pair held out for validation (seeded), as the NumPy doctor."""


def _has_lazy(model: nn.Module) -> bool:
    """Whether a lazy module (``nn.LazyLinear``, ``nn.LazyConv2d``, ...) is not initialized."""
    return any(isinstance(m, nn.modules.lazy.LazyModuleMixin) and m.has_uninitialized_params()
               for m in model.modules())


def _rows(v: Any) -> int | None:
    """The number of rows of an array or tensor ``v`` (``v.shape[0]``), None for anything else
    or a scalar."""
    shape = getattr(v, "shape", None) if isinstance(v, (torch.Tensor, np.ndarray)) else None
    return int(shape[0]) if shape else None


def _check_one_input(x: Any, y: Any, label: str) -> None:
    """Refuse an ``x`` that holds several inputs of one batch each: a tuple or list of k >= 2
    arrays/tensors with n rows each, n the rows of ``y`` and k != n (a list of n examples is
    data). Equal shapes stacked into one (k, n, ...) array were caught later; unequal ones
    (``(src, tgt_in)`` of a seq2seq model, ``(image, mask)``) reached ``np.asarray``, whose
    'inhomogeneous shape' error named neither the inputs nor what the doctor takes."""
    if not isinstance(x, (tuple, list)) or len(x) < 2:
        return
    n = _rows(y) if not isinstance(y, (tuple, list)) else len(y)
    rows = [_rows(v) for v in x]
    if n is None or len(x) == n or any(r != n for r in rows):
        return
    shapes = ", ".join(str(tuple(v.shape)) for v in x)
    raise ValueError(f"x{label} is a {type(x).__name__} of {len(x)} arrays of {n} "
                     f"row{'s' if n != 1 else ''} each; "
                     "expected one array or tensor x, as the doctor calls model(x) (a model of "
                     f"several inputs, here of shapes {shapes}: give one tensor and split it "
                     "in a wrapper's forward, e.g. torch.cat of the inputs)")


def _as_tensor(v: Any, label: str) -> torch.Tensor:
    if isinstance(v, torch.Tensor):  # an inference-mode tensor cannot be saved for backward
        return v.clone() if v.is_inference() else v.detach()
    if v is None:
        raise TypeError(f"{label} is None; expected an array or a tensor" + (
            " (give x_val and y_val together, or neither)" if label.endswith("_val") else ""))
    try:
        a = np.asarray(v)
    except (TypeError, ValueError, RuntimeError) as e:
        raise TypeError(f"{label} must be an array or a tensor, got {type(v).__name__}: "
                        f"{e}") from None
    if a.dtype.kind == "O" and a.ndim == 0:  # not an array at all
        raise TypeError(f"{label} must be an array or a tensor, got {type(v).__name__}")
    if a.dtype.kind == "O":  # numbers held as Python objects (a pandas object column)
        try:
            b = np.array(a.tolist())
        except (TypeError, ValueError):
            b = a
        a = b if b.dtype.kind in "biuf" and b.shape == a.shape else a
    kinds = {"U": "strings", "S": "bytes", "O": "Python objects", "M": "datetimes",
             "m": "timedeltas", "V": "records"}
    if a.dtype.kind in kinds:  # was 'y must be an array or a tensor, got ndarray: can't
        # convert np.ndarray of type numpy.str_. The only supported types are: ...'
        hint = " (class names: give their indices, np.unique(y, return_inverse=True)[1])" \
            if label.startswith("y") and (a.dtype.kind in "US" or (
                a.size and isinstance(a.flat[0], (str, bytes)))) else ""
        raise TypeError(f"{label} must hold numbers, got {type(v).__name__} of dtype "
                        f"{a.dtype} ({kinds[a.dtype.kind]}){hint}")
    if not a.flags.writeable:  # a pandas column, np.load(mmap_mode="r"): torch warns
        a = a.copy()  # that it cannot share a read-only array's memory
    try:
        return torch.as_tensor(a)
    except (TypeError, ValueError, RuntimeError) as e:
        raise TypeError(f"{label} must be an array or a tensor of numbers, got "
                        f"{type(v).__name__} of dtype {a.dtype}: {e}") from None


_INTEGER_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.bool)


def tensor_data(data: Any, device: torch.device, dtype: torch.dtype, seed: int,
                float_targets: bool = False) -> TensorData:
    """``data`` -> tensors on ``device``: a Dataset-like object (``x_train``, ``y_train``,
    ``x_val``, ``y_val``), ``(x, y)`` (``VAL_FRACTION`` held out by a seeded permutation when
    there are at least 10 rows) or ``(x, y, x_val, y_val)`` (validation parts None: as ``(x, y)``;
    examples of the same shape as the training ones). Inputs are cast to the model's
    floating ``dtype`` (integer inputs such as token ids become int64, uint8/bool ``dtype``);
    integer labels become int64, float targets ``dtype``; boolean targets ``dtype`` too when
    ``float_targets`` (a loss of float targets: BCE, MSE, ...). A ``torch.utils.data`` Dataset of
    ``(x, y)`` pairs or a DataLoader (the examples its sampler draws, through its own
    ``collate_fn`` when that is not torch's default; the doctor keeps its own batch order) is
    taken as ``(x, y)`` (:func:`pairs_from_torch`), and a pair ``(train, val)`` of them as
    ``(x, y, x_val, y_val)``; so is a list of mini-batches ``[(x_b, y_b), ...]`` (e.g.
    ``list(loader)``), concatenated (:func:`_joined_batches`), a list of examples
    ``[(x_i, y_i), ...]`` (``list(dataset)``; or of dicts with keys ``'x'`` and ``'y'``), stacked
    (:func:`_is_example_list`), and a dict ``{'x': x, 'y': y}`` (with ``'x_val'``, ``'y_val'``)
    of whole arrays (:func:`_dict_parts`)."""
    torch_data = (torch.utils.data.Dataset, torch.utils.data.DataLoader)
    if isinstance(data, dict):
        data = _dict_parts(data)
    if _is_batch_list(data):
        data = _joined_batches(data)
    elif _is_example_list(data):  # [(x_i, y_i), ...]: a map-style dataset as a list
        data = pairs_from_torch(data, device, seed=seed)
    elif isinstance(data, (tuple, list)) and len(data) == 2 and \
            all(_is_example_list(p) for p in data):  # (train examples, val examples)
        data = (*pairs_from_torch(data[0], device, seed=seed),
                *pairs_from_torch(data[1], device, "validation", seed))
    if isinstance(data, torch_data):
        data = pairs_from_torch(data, device, seed=seed)
    elif isinstance(data, (tuple, list)) and len(data) == 2 and \
            any(isinstance(p, torch_data) for p in data):
        # (train_loader, val_loader): was taken for (x, y), 'x must be an array or a tensor,
        # got Subset: setting an array element with a sequence ...'
        bad = next((p for p in data if not isinstance(p, torch_data)), None)
        if bad is not None:
            raise TypeError(f"data is a pair of a torch Dataset/DataLoader and a "
                            f"{type(bad).__name__}; expected (train, val) as two torch "
                            "Datasets/DataLoaders of (x, y) pairs, or (x, y) arrays/tensors")
        data = (*pairs_from_torch(data[0], device, seed=seed),
                *pairs_from_torch(data[1], device, "validation", seed))
    if hasattr(data, "x_train") and hasattr(data, "y_train"):
        parts = [data.x_train, data.y_train, getattr(data, "x_val", None),
                 getattr(data, "y_val", None)]
        if parts[2] is None or parts[3] is None or len(parts[2]) == 0:
            parts = parts[:2]
    elif isinstance(data, (tuple, list)) and len(data) in (2, 4):
        parts = list(data)
        if len(parts) == 4 and parts[2] is None and parts[3] is None:
            parts = parts[:2]  # no validation set given: held out as for (x, y)
    else:
        hint = ""
        if isinstance(data, (str, os.PathLike)):  # the command line's --data NAME_OR_PATH
            hint = (f" {os.fspath(data)!r}: load a data set by name or path first, "
                    f"depthlab.data.load_dataset({os.fspath(data)!r})")
        raise TypeError("data must be a Dataset (x_train, y_train, x_val, y_val), a tuple "
                        "(x, y) or (x, y, x_val, y_val), a dict {'x': x, 'y': y}, a list of "
                        "(x, y) examples or batches, or a torch Dataset/DataLoader of (x, y) "
                        f"pairs, got {type(data).__name__}{hint}")
    for k, label in ((0, ""), (2, "_val")):
        if k < len(parts):
            _check_one_input(parts[k], parts[k + 1], label)
    ts = [_as_tensor(v, label) for v, label in zip(parts, ("x", "y", "x_val", "y_val"))]
    for xs, ys, label in ((ts[0], ts[1], ""), *(((ts[2], ts[3], "_val"),) if len(ts) == 4
                                                 else ())):
        raw = parts[0 if not label else 2]
        if isinstance(raw, (tuple, list)) and xs.dim() >= 2 and ys.dim() >= 1 and \
                xs.shape[0] != ys.shape[0] and xs.shape[1] == ys.shape[0] and \
                all(isinstance(v, (torch.Tensor, np.ndarray)) for v in raw):
            # (x1, x2) for a model of several inputs: was 'x has (2, 200, 4) rows but y has
            # (200,)', the two inputs stacked into one array
            raise ValueError(f"x{label} is a {type(raw).__name__} of {len(raw)} arrays of "
                             f"{ys.shape[0]} rows each; expected one array or tensor x, as the "
                             "doctor calls model(x) (a model of several inputs: give one tensor "
                             "and split it in a wrapper's forward, e.g. torch.cat of the inputs)")
        if xs.dim() < 1 or ys.dim() < 1 or xs.shape[0] != ys.shape[0]:
            n_x = xs.shape[0] if xs.dim() else 0
            n_y = ys.shape[0] if ys.dim() else 0
            raise ValueError(f"x{label} has {n_x} row{'s' if n_x != 1 else ''} (shape "
                             f"{tuple(xs.shape)}) but y{label} "
                             f"has {n_y} (shape {tuple(ys.shape)}); expected the same number "
                             "of rows")
    if ts[0].shape[0] == 0:
        raise ValueError("the training data are empty")
    for k, label in ((2, "x"), (3, "y")):
        if len(ts) == 4 and ts[k].shape[1:] != ts[k - 2].shape[1:]:
            raise ValueError(f"{label}_val has examples of shape {tuple(ts[k].shape[1:])} but "
                             f"{label} has {tuple(ts[k - 2].shape[1:])}; expected the same")
    check_fits(sum(t.numel() * max(t.element_size(), 4) for t in ts), device)

    def conv(t: torch.Tensor, is_x: bool, label: str) -> torch.Tensor:
        if t.is_complex() or not (t.is_floating_point() or t.dtype in _INTEGER_DTYPES):
            raise TypeError(f"{'inputs' if is_x else 'targets'} must be real numbers, got "
                            f"dtype {t.dtype}")
        if t.is_floating_point():
            return _check_finite(t, t.to(device=device, dtype=dtype), label)
        if is_x and t.dtype in (torch.uint8, torch.bool):
            return t.to(device=device, dtype=dtype)  # pixels / masks: numbers, not indices
        if not is_x and float_targets and t.dtype == torch.bool:
            return t.to(device=device, dtype=dtype)  # BCE's 0/1 targets (torch takes floats)
        return t.to(device=device, dtype=torch.int64)  # labels, token ids

    _warn_unscaled_pixels(ts[0])
    x, y = conv(ts[0], True, "x"), conv(ts[1], False, "y")
    if len(ts) == 4:
        return TensorData(x, y, conv(ts[2], True, "x_val"), conv(ts[3], False, "y_val"))
    n = x.shape[0]
    if n < 10:
        return TensorData(x, y)
    order = torch.from_numpy(np.random.default_rng(seed).permutation(n)).to(device)
    k = max(1, int(round(VAL_FRACTION * n)))
    return TensorData(x[order[k:]], y[order[k:]], x[order[:k]], y[order[:k]])


def _warn_unscaled_pixels(x: torch.Tensor) -> None:
    """A UserWarning for uint8 inputs above 1 (pixels 0 to 255), which the model gets as
    those numbers: raw digits images as uint8 gave a CNN 94% dead ReLU units and chance
    accuracy, which the doctor blamed on the learning rate, where x / 255 trained to 0.67
    held-out accuracy with no such finding."""
    if x.dtype != torch.uint8 or x.numel() == 0:
        return
    top = int(x.max())
    if top > 1:
        warnings.warn(f"x holds uint8 values up to {top} (pixels?), which the model gets as the "
                      "numbers 0 to 255, not scaled to [0, 1] as torchvision's ToTensor does: "
                      "give x / 255 (or normalized inputs) unless the model scales them itself",
                      UserWarning, stacklevel=5)  # the caller of dlt.doctor


def _is_batch_list(data: Any) -> bool:
    """Whether ``data`` is a list (or tuple) of mini-batches ``(x_b, y_b)``, as
    ``list(loader)`` gives them: every item a pair of tensors/arrays with as many rows each,
    ``x_b`` of at least 2 dimensions (rows of features; a pair ``(x, y)`` of whole arrays
    has no such items)."""
    if not isinstance(data, (list, tuple)) or not data:
        return False
    for item in data:
        if not isinstance(item, (list, tuple)) or len(item) != 2 or \
                not all(isinstance(t, (torch.Tensor, np.ndarray)) for t in item):
            return False
        bx, by = item
        if bx.ndim < 2 or by.ndim < 1 or bx.shape[0] != by.shape[0]:
            return False
    return True


def _dict_parts(data: dict) -> tuple[Any, ...]:
    """A dict of whole arrays with keys ``'x'`` and ``'y'`` (and ``'x_val'``, ``'y_val'``), as
    :func:`_xy_of` reads a dict item or batch, as ``(x, y)`` (``(x, y, x_val, y_val)``); other
    keys unused. A TypeError naming its keys when it has no ``'x'`` or ``'y'``."""
    if "x" not in data or "y" not in data:
        keys = sorted(map(str, data))
        raise TypeError(f"data is a dict with keys {keys[:6]}{' ...' if len(keys) > 6 else ''}"
                        "; expected keys 'x' and 'y' (and 'x_val', 'y_val'), or a tuple (x, y)")
    if "x_val" in data or "y_val" in data:
        return data["x"], data["y"], data.get("x_val"), data.get("y_val")
    return data["x"], data["y"]


def _is_example_list(data: Any) -> bool:
    """Whether ``data`` is a list (or tuple) of examples, as ``list(dataset)`` gives them and a
    DataLoader takes them: every item a pair ``(x_i, y_i)`` (or a dict with keys ``'x'`` and
    ``'y'``) whose ``x_i`` is an array, tensor or list of one shape for all items and whose
    ``y_i`` a number, array or tensor. A pair ``(x, y)`` of whole arrays has no such items (its
    ``x`` is no pair; a list ``x`` of two rows pairs with a ``y`` whose items are numbers)."""
    if not isinstance(data, (list, tuple)) or not data:
        return False
    shape = None
    for item in data:
        item = _xy_of(item)
        if not isinstance(item, (list, tuple)) or len(item) != 2:
            return False
        x, y = item
        if not isinstance(x, (torch.Tensor, np.ndarray, list, tuple)) or not isinstance(
                y, (torch.Tensor, np.ndarray, np.generic, int, float, list, tuple)):
            return False
        try:
            s = tuple(x.shape) if isinstance(x, (torch.Tensor, np.ndarray)) else np.shape(x)
        except ValueError:  # ragged
            return False
        if len(s) == 0 or (shape is not None and s != shape):
            return False
        shape = s
    return True


def _joined_batches(batches: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)`` of a list of mini-batches (:func:`_is_batch_list`), concatenated in order;
    a ValueError naming the first batch whose examples differ in shape from the first's. A
    list of 2 or 4 batches was taken for ``(x, y)`` or ``(x, y, x_val, y_val)`` ('x must be
    an array or a tensor, got tuple: setting an array element with a sequence'), any other
    number refused."""
    xs = [_as_tensor(b[0], "x") for b in batches]
    ys = [_as_tensor(b[1], "y") for b in batches]
    for k, (bx, by) in enumerate(zip(xs, ys)):
        for t, first, label in ((bx, xs[0], "x"), (by, ys[0], "y")):
            if t.shape[1:] != first.shape[1:]:
                raise ValueError(f"data: batch {k} of the list of (x, y) batches has {label} "
                                 f"of shape {tuple(t.shape[1:])} per example, batch 0 "
                                 f"{tuple(first.shape[1:])}; expected the same in every "
                                 "batch")
    check_fits(2 * sum(t.numel() * max(t.element_size(), 4) for t in (*xs, *ys)),
               xs[0].device)
    return torch.cat([t.to(xs[0].device) for t in xs]), torch.cat([t.to(ys[0].device)
                                                                   for t in ys])


_FIRST_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Embedding, nn.EmbeddingBag,
                 nn.RNNBase)
"""Weight layers whose kind decides how :func:`shape_inputs` shapes a model's inputs."""


def _shaped_for(first: nn.Module | None, x: np.ndarray, image_shape: Any) -> np.ndarray:
    """Rows ``x`` shaped for a model whose inputs go first into ``first``."""
    n, d = x.shape[0], int(np.prod(x.shape[1:]))
    if isinstance(first, _CONVS) and image_shape and int(np.prod(image_shape)) == d:
        shape = tuple(int(s) for s in image_shape)
        shaped = _channels(first, x, shape)
        if shaped is not None:
            return shaped
        if isinstance(first, nn.Conv2d) and len(shape) == 3:
            return x.reshape(n, *shape)  # (C, H, W) as given
    if isinstance(first, nn.Conv1d):
        return x.reshape(n, 1, d)
    if isinstance(first, nn.Conv3d):
        return x.reshape(n, d)  # no (D, H, W) shape known: the model's own error names it
    if isinstance(first, nn.RNNBase) and image_shape and len(image_shape) == 2 \
            and int(np.prod(image_shape)) == d and first.input_size in image_shape:
        steps, size = (int(s) for s in image_shape)  # a file's (T, F), or (F, T): transposed
        if size == first.input_size:
            return x.reshape(n, steps, size)
        return np.ascontiguousarray(x.reshape(n, steps, size).transpose(0, 2, 1))
    if isinstance(first, nn.RNNBase) and d % first.input_size == 0:
        return x.reshape(n, d // first.input_size, first.input_size)
    if isinstance(first, (nn.Embedding, nn.EmbeddingBag)) and x.dtype.kind == "f" \
            and np.isfinite(x).all() and np.array_equal(x, np.round(x)):
        return x.reshape(n, d).astype(np.int64)  # token ids (a data set's rows are floats)
    return x.reshape(n, d)


_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _channels(first: nn.Module, x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
    """Rows ``x`` as the examples of shape ``shape`` (a data file's, e.g. ``(C, L)`` signals,
    ``(H, W, C)`` images or ``(C, D, H, W)`` volumes) for a ``Conv1d``/``Conv2d``/``Conv3d``
    first layer of ``k`` spatial axes: channels first as given when ``shape`` has ``k + 1``
    axes and its first is the layer's input channels, moved to the front when only its last
    is (channels-last files); ``k`` axes: one channel; a lazy layer's channels (unknown) are a
    first axis of at most 4 entries and fewer than the other axes', or a last axis of at most
    4 and fewer than the first's. None: the shape does not fit the layer."""
    n, k = x.shape[0], next(i + 1 for i, c in enumerate(_CONVS) if isinstance(first, c))
    if len(shape) == k:
        return x.reshape(n, 1, *shape)
    if len(shape) != k + 1:
        return None
    cin = first.in_channels
    if isinstance(first, nn.modules.lazy.LazyModuleMixin) and first.has_uninitialized_params():
        head = shape[0] <= 4 and shape[0] < min(shape[1:])
        last = not head and shape[-1] <= 4 and shape[-1] < shape[0]
    else:
        head = shape[0] == cin
        last = not head and shape[-1] == cin
    if head:
        return x.reshape(n, *shape)
    if last:
        return np.ascontiguousarray(np.moveaxis(x.reshape(n, *shape), -1, 1))
    return None


def _runs_on(model: nn.Module, x: np.ndarray) -> bool:
    """Whether one eval-mode forward of ``model`` on the rows ``x`` (cast to its device and
    floating dtype) runs; nothing of the model changes (a lazy model is tried as a copy)."""
    device, dtype = model_device_dtype(model)
    t = torch.as_tensor(np.ascontiguousarray(x))
    t = t.to(device=device, dtype=dtype if t.is_floating_point() or t.dtype in (
        torch.uint8, torch.bool) else torch.int64)
    try:
        m = copy.deepcopy(model) if _has_lazy(model) else model
        with torch.no_grad(), rx.untouched(m), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m.eval()
            m(t)
    except Exception:  # noqa: BLE001 - the user's model refused this shape
        return False
    return True


def shape_inputs(x: np.ndarray, image_shape: Any, model: nn.Module,
                 rows: np.ndarray | None = None) -> np.ndarray:
    """Rows ``x`` (N, D) shaped for ``model``, as ``depthlab doctor --torch`` gives them: images
    ``(N, C, H, W)`` when ``image_shape`` (``(H, W)``: one channel; ``(H, W, C)`` whose C is
    the convolution's input channels, or a lazy one's C of at most 4 and less than H: moved to
    channels-first) has D entries and the model's
    first weight layer is a ``Conv2d``; for a ``Conv1d``/``Conv3d`` a data file's examples of
    shape ``(C, L)``/``(C, D, H, W)`` (channels last moved to the front, see
    :func:`_channels`), else ``(N, 1, D)`` for a ``Conv1d``; sequences
    ``(N, D / input_size, input_size)`` for an ``RNN``/``LSTM``/``GRU`` (a data file's
    ``(F, T)`` examples whose first axis is the ``input_size``: transposed to ``(T, F)``);
    else ``(N, D)``, as int64 token ids for an ``Embedding``/``EmbeddingBag`` when every entry
    is a whole number (a data set's rows are floats).
    The first weight layer is the first of ``model.modules()``; when the model holds layers
    of other kinds too (a custom ``forward`` may run a conv declared after its linear head),
    each kind's shape is tried with one forward on two of ``rows`` (default ``x``; the
    training rows when shaping the validation rows, so both get the same shape) and the first
    that runs is taken, then a data file's own example shape ``image_shape`` (a per-step
    ``Linear`` before a GRU on ``(N, T, F)`` sequences); none: the first layer's."""
    kinds = [m for m in model.modules() if isinstance(m, _FIRST_LAYERS)]
    firsts: list[nn.Module | None] = [kinds[0] if kinds else None]
    for cls in (nn.Conv2d, nn.Conv1d, nn.Conv3d, nn.RNNBase, nn.Linear):
        m = next((k for k in kinds if isinstance(k, cls)), None)
        if m is not None and not any(type(f) is type(m) for f in firsts):
            firsts.append(m)
    shaped = _shaped_for(firsts[0], x, image_shape)
    trial = x if rows is None else rows
    own = tuple(int(s) for s in image_shape) if image_shape and len(image_shape) >= 2 and \
        int(np.prod(image_shape)) == int(np.prod(x.shape[1:])) else None
    if (len(firsts) == 1 and own is None) or len(trial) == 0:
        return shaped
    seen: list[tuple[int, ...]] = []
    for first in firsts:
        t = _shaped_for(first, trial[:2], image_shape)
        if t.shape[1:] in seen:
            continue
        seen.append(t.shape[1:])
        if _runs_on(model, t):
            return _shaped_for(first, x, image_shape)
    if own is not None and own not in seen and _runs_on(
            model, trial[:2].reshape(len(trial[:2]), *own)):
        return x.reshape(len(x), *own)
    return shaped


def _shaped_dataset(data: Any, model: nn.Module) -> Any:
    """A depthlab data set (``x_train`` rows ``(N, D)`` and an ``info`` dict) as
    ``(x, y, x_val, y_val)`` with its inputs shaped for ``model`` (:func:`shape_inputs`: a
    ``Conv2d`` model gets ``info["image_shape"]`` images); anything else as given."""
    info = getattr(data, "info", None)
    x = getattr(data, "x_train", None)
    if not isinstance(info, dict) or not isinstance(x, np.ndarray) or x.ndim != 2 \
            or not hasattr(data, "y_train"):
        return data
    shape = info.get("image_shape")
    xv = getattr(data, "x_val", None)
    shaped_val = shape_inputs(xv, shape, model, rows=x) if isinstance(xv, np.ndarray) and \
        xv.ndim == 2 and len(xv) else None
    return (shape_inputs(x, shape, model), data.y_train, shaped_val,
            getattr(data, "y_val", None) if shaped_val is not None else None)


def _default_collate(fn: Any) -> bool:
    """Whether ``fn`` is torch's own collation (``default_collate``, or ``default_convert``
    of a loader without batching): stacking the items adds nothing to them."""
    from torch.utils.data import _utils

    return fn in (_utils.collate.default_collate, _utils.collate.default_convert)


def _loader_indices(loader: torch.utils.data.DataLoader, seed: int = 0) -> list[int] | None:
    """The dataset indices a DataLoader visits in one pass, sorted (duplicates kept); None
    when it visits every index once (a ``SequentialSampler``, or a ``RandomSampler`` without
    replacement over the whole dataset). A ``SubsetRandomSampler`` (a train/validation split
    by indices), a ``WeightedRandomSampler`` or a custom ``batch_sampler`` decides which
    examples the loader trains on; their order is the doctor's own. A random draw (with
    replacement, a weighted one) takes torch's global generator seeded with ``seed`` (the same
    draw in every call), or the sampler's own ``generator``, whose state is restored after."""
    from torch.utils.data import BatchSampler, RandomSampler, SequentialSampler

    sampler, batches = loader.sampler, loader.batch_sampler
    custom_batches = batches is not None and type(batches) is not BatchSampler
    dropped = _dropped_tail(loader)
    if dropped is not None:
        return dropped
    if not custom_batches:
        if type(sampler) is SequentialSampler:
            return None
        if type(sampler) is RandomSampler and not sampler.replacement and \
                sampler.num_samples == len(loader.dataset):
            return None
    gens = [g for g in (getattr(sampler, "generator", None),
                        getattr(batches, "generator", None),
                        getattr(getattr(batches, "sampler", None), "generator", None))
             if isinstance(g, torch.Generator)]
    states = [(g, g.get_state()) for g in gens]
    try:
        with torch.random.fork_rng(devices=[]):  # the CPU generator, which samplers draw
            torch.default_generator.manual_seed(seed)  # from, left as found
            drawn = (i for b in batches for i in b) if custom_batches else iter(sampler)
            return sorted(int(i) for i in drawn)
    finally:
        for g, state in states:
            g.set_state(state)


def _dropped_tail(loader: torch.utils.data.DataLoader) -> list[int] | None:
    """The indices a ``drop_last=True`` loader with a fixed order yields (its sampler's order
    cut to whole batches, sorted): a ``SequentialSampler``, or any sampler without its own
    generator drawing the same order under two seeds of torch's global generator (a list or
    range of indices). None otherwise: without ``drop_last``, or a random order, which drops a
    different tail in every pass, so that every example is trained on."""
    from torch.utils.data import BatchSampler, SequentialSampler

    batches = loader.batch_sampler
    if type(batches) is not BatchSampler or not batches.drop_last:
        return None
    sampler = batches.sampler
    if type(sampler) is SequentialSampler:
        order = list(range(len(sampler)))
    elif isinstance(getattr(sampler, "generator", None), torch.Generator):
        return None
    else:
        draws = []
        with torch.random.fork_rng(devices=[]):
            for seed in (0, 1):
                torch.default_generator.manual_seed(seed)
                draws.append([int(i) for i in sampler])
        if draws[0] != draws[1]:
            return None
        order = draws[0]
    keep = len(order) // batches.batch_size * batches.batch_size  # (a sampler without len)
    if keep == 0:
        raise ValueError(f"data: the DataLoader yields no batch (drop_last=True with "
                         f"batch_size {batches.batch_size} and {len(order)} examples)")
    return sorted(order[:keep])


def pairs_from_torch(data: Any, device: torch.device, part: str = "training", seed: int = 0
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)`` of a ``torch.utils.data`` DataLoader or Dataset: a ``TensorDataset``'s two
    tensors, else every item ``dataset[i]`` (an ``(x, y)`` pair, or a dict with keys ``x`` and
    ``y``) stacked in index order, after
    checking that ``len`` times the first pair's size fits in memory. A DataLoader gives the
    examples its sampler draws in one pass (all of them for the default samplers; a
    ``SubsetRandomSampler``'s indices; a custom ``batch_sampler``'s), in index order (with
    ``drop_last=True`` and a fixed order, a ``SequentialSampler``'s, the examples of its whole
    batches only: the tail it never yields is not trained on; a shuffled loader drops a
    different tail in every pass, so all of its examples are used), and
    when its ``collate_fn`` is not torch's default (it normalizes, casts, pads, builds
    ``(x, y)`` from dicts) the batches that ``collate_fn`` makes of them, ``batch_size`` items
    each in index order, concatenated: it must return ``(x, y)`` with the same shape per
    example in every batch (a collate_fn padding each batch to its own longest sequence is
    refused by name: pad to one fixed length). Its ``batch_size`` and ``shuffle`` are not
    the doctor's (``batch_size=``, one fixed seeded order), and ``num_workers`` is not used."""
    loader = data if isinstance(data, torch.utils.data.DataLoader) else None
    ds = data.dataset if loader is not None else data
    what = type(ds).__name__
    if isinstance(ds, torch.utils.data.IterableDataset) or not hasattr(ds, "__len__"):
        raise TypeError(f"data: {what} has no length (an iterable dataset); give (x, y) tensors "
                        "or a map-style Dataset of (x, y) pairs")
    idx = _loader_indices(loader, seed) if loader is not None else None
    if idx is not None:
        ds = torch.utils.data.Subset(ds, idx)
    if loader is not None and not _default_collate(loader.collate_fn):
        return _collated(loader, ds, what, device, part)
    if isinstance(ds, torch.utils.data.Subset) and \
            isinstance(ds.dataset, torch.utils.data.TensorDataset) and len(ds):
        inner = ds.dataset.tensors
        if len(inner) == 2:
            rows = torch.as_tensor(ds.indices, dtype=torch.long, device=inner[0].device)
            return inner[0][rows], inner[1][rows.to(inner[1].device)]
    if isinstance(ds, torch.utils.data.TensorDataset):
        if len(ds.tensors) != 2:
            raise TypeError(f"a TensorDataset of (x, y) was expected, got {len(ds.tensors)} "
                            "tensors")
        return ds.tensors[0], ds.tensors[1]
    n = len(ds)
    if n == 0:
        raise ValueError(f"the {part} data are empty")
    first = _xy_of(_item(ds, 0, what))
    if not isinstance(first, (tuple, list)) or len(first) != 2:
        hint = (f" (keys {sorted(map(str, first))[:6]}): give a DataLoader whose collate_fn "
                "returns (x, y) batches" if isinstance(first, dict) else "")
        raise TypeError(f"data: {what}[0] is a {type(first).__name__}{hint}; expected an "
                        "(x, y) pair (or a dict with keys 'x' and 'y')")
    pair = [_as_tensor(v, label) for v, label in zip(first, ("x", "y"))]
    check_fits(2 * n * sum(t.numel() * max(t.element_size(), 4) for t in pair), device)  # items
    # and their stacked copy
    xs, ys = [pair[0]], [pair[1]]
    for i in range(1, n):
        x, y = _xy_of(_item(ds, i, what))
        xs.append(_as_tensor(x, "x"))
        ys.append(_as_tensor(y, "y"))
    try:
        return torch.stack(xs), torch.stack(ys)
    except RuntimeError as e:
        raise ValueError(f"data: the items of {what} differ in shape: {e}") from None


def _item(ds: Any, i: int, what: str) -> Any:
    """``ds[i]``; an exception the Dataset's ``__getitem__`` raises (a ``KeyError``, a missing
    file, a failing transform) becomes one ValueError naming the Dataset's class, the index
    it was asked for (a sampler's ``Subset``: the index into the user's Dataset) and what it
    raised (the user's exception kept as ``__cause__``); running out of memory is raised as
    it is."""
    try:
        return ds[i]
    except (MemoryError, torch.OutOfMemoryError):
        raise
    except Exception as e:  # noqa: BLE001 - any error of the user's __getitem__, named
        index = ds.indices[i] if isinstance(ds, torch.utils.data.Subset) else i
        said = " ".join(str(e).split())
        raised = f"{type(e).__name__}: {said}" if said else type(e).__name__
        raise ValueError(f"data: reading {what}[{index}] raised {raised}; expected its "
                         "__getitem__ to return an (x, y) pair for every index below its "
                         "len()") from e


def _xy_of(item: Any) -> Any:
    """A dict item or batch with keys ``'x'`` and ``'y'`` (its other keys unused) as the pair
    ``(x, y)``; anything else as it is."""
    if isinstance(item, dict) and "x" in item and "y" in item:
        return item["x"], item["y"]
    return item


def _collated(loader: torch.utils.data.DataLoader, ds: Any, what: str, device: torch.device,
              part: str) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`pairs_from_torch` for a loader with its own ``collate_fn``: the batches it makes
    of ``ds`` (the sampled items) in index order, concatenated."""
    n = len(ds)
    if n == 0:
        raise ValueError(f"the {part} data are empty")
    name = getattr(loader.collate_fn, "__name__", type(loader.collate_fn).__name__)
    batched = loader.batch_size is not None or loader.batch_sampler is not None
    size = loader.batch_size or (loader.batch_sampler.batch_size  # type: ignore[union-attr]
                                 if hasattr(loader.batch_sampler, "batch_size") else 64) \
        if batched else 1
    xs: list[torch.Tensor] = []
    ys: list[torch.Tensor] = []
    for start in range(0, n, size):
        items = [_item(ds, i, what) for i in range(start, min(n, start + size))]
        out = _xy_of(loader.collate_fn(items if batched else items[0]))
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            keys = f" with keys {sorted(map(str, out))[:6]}" if isinstance(out, dict) else ""
            raise TypeError(f"data: the DataLoader's collate_fn {name} returns a "
                            f"{type(out).__name__}{keys}; expected an (x, y) pair of tensors")
        bx, by = (_as_tensor(v, label) for v, label in zip(out, ("x", "y")))
        if not batched:
            bx, by = bx.unsqueeze(0), by.unsqueeze(0)
        if xs and (bx.shape[1:] != xs[0].shape[1:] or by.shape[1:] != ys[0].shape[1:]):
            raise ValueError(f"data: the DataLoader's collate_fn {name} makes batches of "
                             f"different shapes per example (x {tuple(xs[0].shape[1:])} in "
                             f"the first, {tuple(bx.shape[1:])} at item {start}); the doctor "
                             "takes the data as one tensor: pad to one fixed length")
        if not xs:
            per = sum(t.numel() * max(t.element_size(), 4) for t in (bx, by)) / max(1, len(bx))
            check_fits(int(2 * n * per), device)  # the batches and their concatenated copy
        xs.append(bx)
        ys.append(by)
    return torch.cat(xs), torch.cat(ys)


def _check_finite(original: torch.Tensor, cast: torch.Tensor, label: str) -> torch.Tensor:
    """``cast``, or a ValueError naming the first entry of ``label`` that is NaN, infinite or
    too large for the model's dtype (training on it would only report a divergence)."""
    bad = ~torch.isfinite(cast)
    if not bool(bad.any()):
        return cast
    where = tuple(int(i) for i in bad.nonzero()[0].cpu())
    at = f"row {where[0]}" + (f", index {where[1:]}" if len(where) > 2 else
                              f", column {where[1]}" if len(where) == 2 else "")
    value = float(original[where])
    if math.isfinite(value):
        raise ValueError(f"{label} value {value:g} ({at}) does not fit in the model's dtype "
                         f"{cast.dtype}; accepted: finite numbers of that dtype")
    raise ValueError(f"{label} contains NaN or infinity (first at {at}); accepted: finite "
                     "numbers")
