"""Losses: ``forward(pred, target) -> float`` caches what ``backward() -> dL/dpred`` needs.

All losses average over the batch (PyTorch ``reduction="mean"``); ``reduction="sum"`` sums
instead (the gradient is N times the mean's), ``reduction="none"`` returns the per-element
losses (per example for ``cross_entropy``) as an array, whose ``backward(grad)`` takes
dL/d(those losses) (default ones, i.e. the gradient of their sum), as torch's ``reduction``.
Gradients have the shape and dtype of ``pred``; targets are cast to the dtype of ``pred`` so
float32 stays float32.

* ``mse``: mean((pred - target)^2); grad 2 (pred - target) / N.
* ``cross_entropy``: logits (B, C), integer labels (B,) or probability rows (B, C);
  loss = -(1/B) sum_b sum_c y_bc log softmax(z_b)_c with log-softmax by log-sum-exp;
  grad (softmax(z) sum_c y_bc - y) / B, i.e. (softmax(z) - y) / B for rows summing to 1.
  ``label_smoothing`` eps mixes y with the uniform distribution:
  y <- (1 - eps) y + eps / C (as in PyTorch). ``weight`` (one number >= 0 per class,
  torch's): each row's loss is -sum_c w_c y_bc log softmax(z_b)_c, and the mean divides
  their sum by sum_b w[y_b] for labels (by B for probability rows), as torch.
  ``ignore_index`` (torch's, default -100): rows with that label add 0 (gradient 0) and the
  mean divides by the other rows' count (their weights' sum with ``weight``); labels only:
  another ``ignore_index`` with probability rows is a ValueError (torch's RuntimeError).
* ``binary_cross_entropy``: logits z, targets y in [0, 1];
  loss = mean(max(z, 0) - z y + log1p(e^-|z|)); grad (sigmoid(z) - y) / N.
  torch's ``pos_weight`` p and ``weight`` w: w (p y softplus(-z) + (1 - y) softplus(z)).
* ``huber``: mean of 0.5 d^2 for |d| <= delta, delta (|d| - delta / 2) otherwise;
  grad clip(d, -delta, delta) / N.
* ``bce_loss`` (torch's ``BCELoss``, sklearn's ``log_loss``): probabilities x in [0, 1];
  loss = mean(-(y max(log x, -100) + (1 - y) max(log(1 - x), -100))); grad
  (x - y) / max(x (1 - x), 1e-12) / N (torch's).
* ``nll_loss`` (torch's ``NLLLoss``, alias ``nll``): log-probabilities (B, C), labels (B,);
  loss = -sum_b w[y_b] x[b, y_b] / sum_b w[y_b]; grad -w[y_b] / sum_b w[y_b] at (b, y_b).
  These two are not listed in :data:`LOSSES` (a network's outputs are logits).

``mse`` and ``huber`` are regression losses (``has_accuracy`` False), but a classifier trained
on one-hot target rows with them (the quadratic cost of textbooks) gets an accuracy: the share
of rows whose largest output is at the row's 1 (:func:`one_hot_labels`); other targets: None.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from . import accel
from .backend import Array, _torch_values, expit, xp
from .registry import Registry
from .validators import real

__all__ = [
    "LOSSES",
    "REGISTRY",
    "BCELoss",
    "BinaryCrossEntropy",
    "CrossEntropy",
    "Huber",
    "L1Loss",
    "Loss",
    "MSE",
    "NLLLoss",
    "SmoothL1Loss",
    "get_loss",
    "one_hot_labels",
]


def _c_order(arr: Array) -> Array:
    """``arr`` in C order (copied only when it is not): the row-wise sums (softmax's
    ``sum_c e^z``, ``sum_c y``) then run in one order whatever the caller's layout (a
    Fortran-order pred gave a cross-entropy and its gradient 1 ulp off the C-order one)."""
    return arr if arr.flags.c_contiguous else xp.ascontiguousarray(arr)


def _as_float_array(x: Any, what: str) -> Array:
    arr = _c_order(xp.asarray(_torch_values(x)))  # a tensor: its values (on the host)
    if arr.dtype.kind not in "fiub":
        first = arr.flat[0] if arr.size else None
        first = first.item() if isinstance(first, np.generic) else first  # 'a', not np.str_('a')
        if isinstance(first, str | bytes):  # class names as labels
            raise TypeError(
                f"{what} must be a numeric array, got dtype {arr.dtype} (e.g. {first!r}); "
                "class labels are integers 0..C-1: np.unique(y, return_inverse=True)[1] "
                "encodes names as such (in sorted order)"
            )
        held = (" (numbers held as Python objects, as a pandas column of dtype object: "
                "np.asarray(y, dtype=int) converts class labels, dtype=float targets)"
                if arr.dtype == object and isinstance(first, int | float) else "")
        raise TypeError(f"{what} must be a numeric array, got dtype {arr.dtype}{held}")
    return arr


def _class_weights(weight: Any) -> Array:
    """torch's ``weight``: one finite number >= 0 per class (a 1-D array, float64), not all 0."""
    try:
        w = np.asarray(_torch_values(weight))  # a tensor on a GPU or requiring grad too
    except (TypeError, ValueError):
        w = np.asarray(None)
    if isinstance(weight, str | bytes) or w.ndim != 1 or w.size == 0 \
            or w.dtype.kind not in "iuf":
        raise TypeError(f"weight={weight!r:.60} is not accepted; accepted: one number >= 0 per "
                        "class, e.g. [1.0, 2.0, 0.5] (a list or 1-D array)")
    w = w.astype(np.float64)
    if not np.all(np.isfinite(w)) or w.min() < 0 or w.max() == 0:
        raise ValueError(f"weight={w.tolist()!r:.80} is not accepted; accepted: finite numbers "
                         ">= 0 (one per class), not all 0")
    return w


def _nonnegative(name: str, value: Any, max_ndim: int) -> Array:
    """torch's ``pos_weight`` / BCE ``weight``: finite numbers >= 0 (float64), at most
    ``max_ndim`` dimensions."""
    try:
        v = np.asarray(_torch_values(value))
    except (TypeError, ValueError):
        v = np.asarray(None)
    if isinstance(value, str | bytes) or v.ndim > max_ndim or v.size == 0 \
            or v.dtype.kind not in "iuf":
        shape = "one number or one per output column" if max_ndim == 1 else \
            "numbers broadcastable to pred's shape"
        raise TypeError(f"{name}={value!r:.60} is not accepted; accepted: {shape}, each >= 0")
    v = v.astype(np.float64)
    if not np.all(np.isfinite(v)) or v.min() < 0:
        raise ValueError(f"{name}={v.tolist()!r:.80} is not accepted; accepted: finite numbers "
                         ">= 0")
    return v


def _check_pred(pred: Any) -> Array:
    pred = _c_order(xp.asarray(_torch_values(pred)))
    if pred.dtype.kind != "f":
        raise TypeError(f"pred must be a float array, got dtype {pred.dtype}")
    if pred.size == 0:
        raise ValueError(f"pred is empty (shape {pred.shape})")
    return pred


def _check_finite_target(target: Array) -> None:
    """A ValueError naming the first NaN or infinite target by its row (and column), as the
    data checks name x's (was "target contains non-finite values (e.g. nan)", no row)."""
    if target.dtype.kind == "f" and not np.all(np.isfinite(target)):
        from .training.data_checks import first_nonfinite  # (training imports losses)

        idx = first_nonfinite(target) or ()
        where = (f" first at row {idx[0]}" + (f", column {idx[1]}" if len(idx) == 2 else "")
                 if 1 <= len(idx) <= 2 else f" first at index {idx}" if idx else "")
        raise ValueError(f"target contains non-finite values ({target[idx].item()!r}{where}); "
                         "accepted: finite numbers")


# float32 sums of squares longer than _CHUNK entries are float64 sums of float32 dots of rows
# of _ROW entries, taken a block of _BLOCK entries at a time (a temporary of _BLOCK / _ROW
# floats). One float32 dot of 4e6 squared errors erred by 9e-6 relative (torch's mean 7e-8);
# dots of chunks of 8192 by 2.6e-8 (2e4 entries) to 1.9e-9 (1e6; OpenBLAS's Haswell sdot), over
# the 1e-9 a float64 reference allows; rows of 64: 3e-10 to 3e-11, 1.2-1.5x the time.
_CHUNK = 8192
_ROW = 64
_BLOCK = 65536


def _sum_squares(flat: Array) -> float:
    """``sum(flat**2)`` of a 1-D array: a float32 one of over :data:`_CHUNK` entries as the
    float64 sum of float32 dots of rows of :data:`_ROW` entries (``sum_r sum_{i in r}
    flat_i^2``). A float32 sum that is not finite is taken again with each chunk cast to
    float64 (:func:`_sum_squares64`): entries above ~1.8e19, which float32 holds, have squares
    past its range (a float32 network's MSE on targets of 1e20 was inf, 'diverged' before any
    update, where float64's is 1.5e40: the sum is a Python float)."""
    with np.errstate(over="ignore"):
        if flat.dtype != np.float32 or flat.size <= _CHUNK:
            total = float(xp.dot(flat, flat))
        else:
            total = 0.0
            for start in range(0, flat.size, _BLOCK):
                total += _row_dots_sum(flat[start:start + _BLOCK])
    if flat.dtype == np.float32 and not math.isfinite(total):
        return _sum_squares64(flat)
    return total


def _row_dots_sum(part: Array) -> float:
    """``sum(part**2)`` as the float64 sum of the float32 dots of its rows of :data:`_ROW`
    entries (the last, shorter row one dot)."""
    whole = part.size - part.size % _ROW
    total = 0.0
    if whole:
        rows = part[:whole].reshape(-1, _ROW)
        total = float(xp.einsum("ij,ij->i", rows, rows).sum(dtype=np.float64))
    if whole < part.size:
        rest = part[whole:]
        total += float(xp.dot(rest, rest))
    return total


def _sum_squares64(flat: Array) -> float:
    """``sum(flat**2)`` of a 1-D array with each chunk of :data:`_CHUNK` entries cast to
    float64 first (a float32 array whose squares overflow float32)."""
    total = 0.0
    for start in range(0, flat.size, _CHUNK):
        part = flat[start:start + _CHUNK].astype(np.float64)
        total += float(xp.dot(part, part))
    return total


def _regression_target(target: Array, dtype: np.dtype, name: str) -> Array:
    """``target`` cast to the prediction's ``dtype``: ValueError for a non-finite target, or
    one the cast overflows (a float32 network's MSE with a target of 1e39 was an infinite loss
    at step 1, reported as a divergence of the network: 'use a variance-preserving
    initializer')."""
    _check_finite_target(target)
    with np.errstate(over="ignore"):
        cast = target.astype(dtype, copy=False)
    if cast is not target and not np.isfinite(cast).all():
        bad = target.ravel()[np.argmax(~np.isfinite(cast.ravel()))].item()
        raise ValueError(f"{name}: target value {bad:g} does not fit in {np.dtype(dtype).name} "
                         f"(the prediction's dtype); accepted: |target| <= "
                         f"{np.finfo(dtype).max:.3g}, or a float64 network")
    return cast


def _match_shapes(pred: Array, target: Array, name: str) -> Array:
    """Target reshaped to pred's shape; (B, 1) predictions accept (B,) targets."""
    if target.shape == pred.shape:
        return target
    if pred.ndim == 2 and pred.shape[1] == 1 and target.shape == (pred.shape[0],):
        return target.reshape(pred.shape)
    raise ValueError(
        f"{name}: pred shape {pred.shape} and target shape {target.shape} differ; expected "
        f"equal shapes (or pred (B, 1) with target (B,))" + _labels_hint(pred, target, name)
    )


def _labels_hint(pred: Array, target: Array, name: str) -> str:
    """The way out when ``target`` reads as class labels ``0..C-1`` of shape ``(B,)`` for ``C``
    output columns (a classifier trained with the quadratic cost: one-hot rows), else ``""``."""
    if not (pred.ndim == 2 and pred.shape[1] > 1 and target.shape == (pred.shape[0],)
            and target.size and target.dtype.kind in "biuf"):
        return ""
    with np.errstate(invalid="ignore"):
        t = target.astype(np.float64, copy=False)
        labels = bool(np.isfinite(t).all() and (t == np.floor(t)).all() and t.min() >= 0
                      and t.max() < pred.shape[1])
    c = pred.shape[1]
    return (f"; the targets look like class labels 0..{c - 1}: {name} takes one-hot rows "
            f"(np.eye({c})[y]), or use loss='cross_entropy' on the labels" if labels else "")


def one_hot_labels(target: Any) -> Array | None:
    """The class index of each row when ``target`` is one-hot rows (2-D, at least 2 columns,
    every entry 0 or 1 and exactly one 1 per row), else None (regression targets)."""
    t = np.asarray(target)
    if t.ndim != 2 or t.shape[1] < 2 or t.shape[0] == 0 or not (
            np.issubdtype(t.dtype, np.number) or np.issubdtype(t.dtype, np.bool_)):
        return None
    for rows in (t[:1], t):  # the first row rejects most regression targets at once (an
        ones = rows == 1     # autoencoder's 60000 x 784 targets: no two full-size passes)
        if not ((ones | (rows == 0)).all() and (ones.sum(axis=1) == 1).all()):
            return None
    return ones.argmax(axis=1)


def _one_hot_accuracy(pred: Array, target: Array) -> float | None:
    """Arg-max accuracy of ``pred`` against one-hot ``target`` rows of its shape, else None."""
    labels = one_hot_labels(target)
    p = np.asarray(pred)
    if labels is None or p.shape != np.shape(target):
        return None
    return float(np.mean(p.argmax(axis=1) == labels))


REDUCTIONS = ("mean", "sum", "none")
"""torch's ``reduction`` values: the mean of the per-element losses, their sum, or each."""

IGNORE_INDEX = -100
"""torch's default ``ignore_index`` of ``cross_entropy``: rows labelled so are left out."""


class Loss:
    """Base class of the losses. ``forward`` returns a Python float (``reduction`` "mean" or
    "sum"; an array for "none") and caches what ``backward`` needs; ``backward`` returns
    dL/dpred (a new array each call)."""

    name = "loss"
    has_accuracy = False
    reduction = "mean"

    def __init__(self, reduction: str = "mean") -> None:
        self._set_reduction(reduction)

    def _set_reduction(self, reduction: Any) -> None:
        if not isinstance(reduction, str):
            raise TypeError(f"reduction={reduction!r} is not accepted; accepted: "
                            f"{', '.join(map(repr, REDUCTIONS))}")
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction={reduction!r} is not accepted; accepted: "
                             f"{', '.join(map(repr, REDUCTIONS))}")
        self.reduction = reduction

    def _reduced(self, total: float, n: int) -> float:
        """``total / n`` (mean) or ``total`` (sum): the sum of the ``n`` per-item losses."""
        return total / n if self.reduction == "mean" else total

    def _scale(self, n: int) -> float:
        """d(reduced loss) / d(each item's loss): ``1 / n`` (mean) or 1 (sum, none)."""
        return 1.0 / n if self.reduction == "mean" else 1.0

    def _per_element(self, g: Array, grad: Any, w: Array | None = None) -> Array:
        """``g`` (each element's d loss / d input, scaled in place) times the element weights
        ``w`` (torch's ``weight``, when given) times d(reduced loss) / d(element's loss):
        ``1 / g.size`` (mean) or 1 (sum), or the given per-element ``grad`` (reduction
        "none")."""
        if w is not None:
            g *= w
        g *= self._scale(g.size)
        up = self._upstream(grad, g.shape, g.dtype)
        return g if up is None else g * up

    def _upstream(self, grad: Any, shape: tuple[int, ...], dtype: np.dtype) -> Array | None:
        """The gradient w.r.t. the ``reduction="none"`` losses (of ``shape``), None for ones
        (or for a scalar loss: ``grad`` must then be None)."""
        if grad is None:
            return None
        if self.reduction != "none":
            raise TypeError(f"{self.name}: backward(grad) takes a gradient only with "
                            f"reduction='none'; this loss's reduction is {self.reduction!r}")
        g = np.asarray(_torch_values(grad))
        if g.dtype.kind not in "fiu" or g.shape != shape:
            raise ValueError(f"{self.name}: backward(grad) takes real numbers of the per-item "
                             f"losses' shape {shape}, got {g.dtype} of shape {g.shape}")
        return g.astype(dtype, copy=False)

    @property
    def params(self) -> dict[str, Any]:
        """The settings of this loss (empty when it has none; ``reduction`` when not mean)."""
        return {} if self.reduction == "mean" else {"reduction": self.reduction}

    def forward(self, pred: Array, target: Array) -> Any:
        """The mean loss over the batch (the sum, or each item's: ``reduction``)."""
        raise NotImplementedError

    def backward(self, grad: Any = None) -> Array:
        """dL/dpred for the last ``forward`` (``grad``: dL/d(per-item losses), only with
        ``reduction="none"``)."""
        raise NotImplementedError

    def accuracy(self, pred: Array, target: Array) -> float | None:
        """Fraction of correct predictions; None for regression losses."""
        return None

    def __call__(self, pred: Array, target: Array) -> float:
        return self.forward(pred, target)

    def _cached(self) -> Any:
        cache = getattr(self, "_cache", None)
        if cache is None:
            raise RuntimeError(f"{self.name}: backward() called before forward()")
        return cache

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({args})"


class _RegressionLoss(Loss):
    """A loss of the element-wise differences ``d = pred - target`` (:meth:`_diff`: the
    target checked, matched to the prediction's shape and dtype), with the arg-max accuracy
    of one-hot target rows (a classifier trained with the quadratic cost)."""

    def _diff(self, pred: Any, target: Any) -> Array:
        pred = _check_pred(pred)
        target = _match_shapes(pred, _as_float_array(target, "target"), self.name)
        return pred - _regression_target(target, pred.dtype, self.name)

    def accuracy(self, pred: Array, target: Array) -> float | None:
        """Arg-max accuracy for one-hot target rows; None for regression targets."""
        return _one_hot_accuracy(pred, target)


class MSE(_RegressionLoss):
    """Mean squared error mean((pred - target)^2) over all elements; grad 2 (pred - target) / N."""

    name = "mse"

    def forward(self, pred: Array, target: Array) -> Any:
        diff = self._diff(pred, target)
        self._cache = diff
        if self.reduction == "none":
            with np.errstate(over="ignore"):  # inf past the dtype's range, as torch's
                return diff * diff
        flat = diff.ravel()
        return self._reduced(_sum_squares(flat), diff.size)

    def backward(self, grad: Any = None) -> Array:
        diff = self._cached()
        with np.errstate(over="ignore"):  # 2 d past the dtype's range: inf, as torch's
            g = diff * (2.0 * self._scale(diff.size))
        up = self._upstream(grad, diff.shape, diff.dtype)
        return g if up is None else g * up


class Huber(_RegressionLoss):
    """Huber loss (PyTorch HuberLoss, mean): 0.5 d^2 if |d| <= delta else delta (|d| - delta/2),
    d = pred - target; grad clip(d, -delta, delta) / N."""

    name = "huber"

    def __init__(self, delta: float = 1.0, reduction: str = "mean") -> None:
        self.delta = real("delta", delta)
        if self.delta <= 0:
            raise ValueError(f"delta must be > 0, got {delta!r}")
        self._set_reduction(reduction)

    @property
    def params(self) -> dict[str, Any]:
        return {"delta": self.delta, **super().params}

    def forward(self, pred: Array, target: Array) -> Any:
        diff = self._diff(pred, target)
        self._cache = diff
        a = xp.abs(diff)
        q = xp.minimum(a, self.delta)
        a -= q  # linear part |d| - min(|d|, delta)
        if self.reduction == "none":
            return 0.5 * q * q + self.delta * a
        total = 0.5 * _sum_squares(q.ravel()) + self.delta * float(
            a.sum(dtype=np.float64)
        )
        return self._reduced(total, diff.size)

    def backward(self, grad: Any = None) -> Array:
        diff = self._cached()
        g = xp.clip(diff, -self.delta, self.delta)
        return self._per_element(g, grad)


class L1Loss(_RegressionLoss):
    """Mean absolute error (torch's ``L1Loss``): mean(|d|), d = pred - target; grad sign(d) / N
    (0 at d = 0, as torch's)."""

    name = "l1_loss"

    def _losses(self, diff: Array) -> Array:
        """Each element's loss |d| (a new array)."""
        return xp.abs(diff)

    def forward(self, pred: Array, target: Array) -> Any:
        diff = self._diff(pred, target)
        self._cache = diff
        per = self._losses(diff)
        if self.reduction == "none":
            return per
        return self._reduced(float(per.sum(dtype=np.float64)), diff.size)

    def _slope(self, diff: Array) -> Array:
        """d(each element's loss) / d(pred): sign(d)."""
        return xp.sign(diff)

    def backward(self, grad: Any = None) -> Array:
        return self._per_element(self._slope(self._cached()), grad)


class SmoothL1Loss(L1Loss):
    """torch's ``SmoothL1Loss``: per element 0.5 d^2 / beta for |d| < beta, |d| - 0.5 beta
    otherwise (d = pred - target); grad clip(d / beta, -1, 1) / N. ``beta = 0`` is
    :class:`L1Loss` (as torch's): |d|, grad sign(d). ``huber`` with ``delta = beta`` is beta
    times this loss."""

    name = "smooth_l1_loss"

    def __init__(self, reduction: str = "mean", beta: float = 1.0) -> None:
        self._set_reduction(reduction)
        self.beta = real("beta", beta)
        if self.beta < 0:
            raise ValueError(f"beta must be >= 0 (torch's SmoothL1Loss), got {beta!r}")

    @property
    def params(self) -> dict[str, Any]:
        return {**super().params, "beta": self.beta}

    def _losses(self, diff: Array) -> Array:
        z = xp.abs(diff)
        if self.beta == 0.0:
            return z
        beta = self.beta
        q = xp.minimum(z, beta)  # z where z < beta (the quadratic part's only inputs): the
        # same values, without squaring the rest (float32 |d| >= 1.9e19 overflowed, warning)
        return xp.where(z < beta, 0.5 * q * q / beta, z - 0.5 * beta)

    def _slope(self, diff: Array) -> Array:
        if self.beta == 0.0:
            return xp.sign(diff)
        g = diff / self.beta
        xp.clip(g, -1.0, 1.0, out=g)
        return g


# a softmax over one column is 1 whatever the logit: cross_entropy on it is 0, untrainable
_ONE_COLUMN = ("; one output column: binary_cross_entropy takes its 0/1 labels (a logit per "
               "example), or give the network one output per class")


@functools.lru_cache(maxsize=64)
def _unsigned(dtype: np.dtype) -> np.dtype:
    """The unsigned integer dtype of ``dtype``'s width and byte order (itself when unsigned),
    made once per dtype (parsing its name cost a third of the label check)."""
    return np.dtype(dtype.str.replace("i", "u"))


@functools.lru_cache(maxsize=64)
def _scale_array(dtype: np.dtype, scale: float) -> Array:
    """``[scale]`` rounded to ``dtype`` as NumPy rounds a Python float operand of an array of
    that dtype (``g *= scale``), read-only, one per setting: a compiled kernel's argument (a
    NumPy scalar costs the call more)."""
    out = np.array([scale], dtype=dtype)
    out.flags.writeable = False
    return out


class CrossEntropy(Loss):
    """Softmax cross-entropy on logits (B, C) with integer labels (B,) or probability rows
    (B, C): -(1/B) sum y log softmax(z); grad (softmax(z) sum_c y - y) / B (PyTorch
    cross_entropy; probability rows need not sum to 1). ``weight`` (C,): torch's class
    weights, W_bc = w_c y_bc in place of y, the mean over sum_b w[y_b] (labels) or B."""

    name = "cross_entropy"
    has_accuracy = True
    _inputs = "logits"

    def __init__(self, label_smoothing: float = 0.0, reduction: str = "mean",
                 weight: Any = None, ignore_index: int = IGNORE_INDEX) -> None:
        self.label_smoothing = real("label_smoothing", label_smoothing)
        if not 0.0 <= self.label_smoothing <= 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing!r}")
        self._set_reduction(reduction)
        self.weight = None if weight is None else _class_weights(weight)
        if isinstance(ignore_index, bool) or not isinstance(ignore_index, int | np.integer):
            raise TypeError(f"ignore_index={ignore_index!r:.60} is not accepted; accepted: an "
                            f"integer class label whose rows are left out (torch's default "
                            f"{IGNORE_INDEX})")
        self.ignore_index = int(ignore_index)

    @property
    def params(self) -> dict[str, Any]:
        extra = {} if self.weight is None else {"weight": self.weight.tolist()}
        if self.ignore_index != IGNORE_INDEX:
            extra["ignore_index"] = self.ignore_index
        return {"label_smoothing": self.label_smoothing, **super().params, **extra}

    def _ignored(self, y: Array) -> Array | None:
        """The mask of rows whose label is ``ignore_index`` (labels only), None if none is."""
        if y.ndim != 1:
            return None
        mask = y == self.ignore_index
        return mask if mask.any() else None

    def _check(self, pred: Any, target: Any) -> tuple[Array, Array]:
        """(logits, target) with target either int64 labels (B,) or float rows (B, C)."""
        pred = _check_pred(pred)
        if pred.ndim != 2:
            raise ValueError(
                f"{self.name}: pred must be {self._inputs} of shape (B, C), got shape "
                f"{pred.shape}"
            )
        b, c = pred.shape
        target = _as_float_array(target, "target")
        if target.ndim == 1:
            if target.shape[0] != b:
                raise ValueError(
                    f"{self.name}: {target.shape[0]} labels (target shape {target.shape}) for "
                    f"pred shape {pred.shape}; expected target shape ({b},) or ({b}, {c})"
                )
            if target.dtype.kind == "f":
                _check_finite_target(target)
                frac = target != np.floor(target)
                if frac.any():
                    raise ValueError(
                        f"{self.name}: labels must be integers, got {target[frac][0].item()!r}"
                    )
            elif target.dtype.kind == "b":
                raise TypeError(f"{self.name}: labels must be integers, got a bool array; "
                                "y.astype(int) gives the labels 0 (False) and 1 (True)")
            if target.dtype.kind in "iu":
                # one pass: read as unsigned, a negative label is larger than any class index
                unsigned = target.view(_unsigned(target.dtype))
                ok = unsigned.max().item() < c
                # every label in 0..C-1 and ignore_index outside: no row is left out (forward
                # then skips _ignored's pass)
                self._all_counted = ok and not 0 <= self.ignore_index < c
            else:
                ok = False  # float labels: the bounds are read below
            counted = target
            if not ok and (target == self.ignore_index).any():  # torch's ignored rows
                counted = target[target != self.ignore_index]
                ok = counted.size == 0
            lo, hi = (0, 0) if ok else (counted.min().item(), counted.max().item())
            if lo < 0 or hi >= c:
                bad = lo if lo < 0 else hi
                raise ValueError(
                    f"{self.name}: label {bad!r} out of range; expected labels in 0..{c - 1} "
                    f"for pred shape {pred.shape}" + (_ONE_COLUMN if c == 1 else "")
                )
            return pred, target.astype(np.intp, copy=False)
        if target.shape != pred.shape:
            column = target.ndim == 2 and target.shape == (b, 1) and c > 1
            raise ValueError(
                f"{self.name}: pred shape {pred.shape} and target shape {target.shape} "
                f"differ; expected target shape ({b},) (labels) or ({b}, {c}) (probabilities)"
                + ("; a column of labels: y.ravel()" if column else "")
            )
        if self.ignore_index != IGNORE_INDEX:  # torch: "not supported for floating point target"
            raise ValueError(
                f"{self.name}: ignore_index={self.ignore_index} applies to integer labels of "
                f"shape ({b},); probability rows (target shape {target.shape}) have no label to "
                "leave out (torch refuses it too): give labels, or zero rows' weight via "
                "reduction='none'"
            )
        _check_finite_target(target)
        lo, hi = target.min().item(), target.max().item()
        if lo < 0 or hi > 1:
            bad = lo if lo < 0 else hi
            raise ValueError(
                f"cross_entropy: probability targets must lie in [0, 1], got {bad!r}"
            )
        return pred, target.astype(pred.dtype, copy=False)

    def forward(self, pred: Array, target: Array) -> Any:
        self._all_counted = False  # set by _check when no label can be ignore_index
        z, y = self._check(pred, target)
        b, c = z.shape
        if self._all_counted and self.weight is None and self.reduction != "none":
            nll = self._labels_nll(z, y)
            if nll is not None:
                return self._reduced(nll, b) + 0.0
        with np.errstate(over="ignore"):  # logits 1e308 apart: -inf, an infinite loss as torch's
            logp = z - z.max(axis=1, keepdims=True)
        p = xp.exp(logp)
        sums = p.sum(axis=1, keepdims=True)
        p /= sums
        logp -= xp.log(sums)
        eps = self.label_smoothing
        if self.weight is not None or (not self._all_counted and self._ignored(y) is not None):
            return self._weighted_forward(p, logp, y)
        if self.reduction == "none":
            self._cache = (p, y)
            return self._per_example(logp, y)
        if y.ndim == 1:
            picked = logp[xp.arange(b), y]
            nll = -float(picked.sum(dtype=np.float64))
            if eps:
                smooth = -float(logp.sum(dtype=np.float64)) / c
                nll = (1.0 - eps) * nll + eps * smooth
        else:
            yy = y * (1.0 - eps) + eps / c if eps else y
            nll = -float(xp.einsum("ij,ij->", yy, logp, dtype=np.float64))
        self._cache = (p, y)
        return self._reduced(nll, b) + 0.0  # a perfect fit is 0, not -0.0 ("train loss -0")

    def _labels_nll(self, z: Array, y: Array) -> float | None:
        """``-sum_i log softmax(z_i)[y_i]`` (smoothed: ``(1 - eps)`` of it plus ``eps`` times
        ``-sum_ij log softmax(z_i)_j / C``) for labels all in ``0..C-1``, through the compiled
        kernels (:func:`depthlab.kernels.shift_rows`, ``normalize_rows``, ``subtract_pick``:
        the passes of :meth:`forward`'s NumPy path around its ``exp`` and ``log``, the same
        bits), with ``(p, y)`` cached; None where they do not run (no kernels, logits not
        finite or a row's largest 0, more than 128 classes, another layout
        or dtype): the NumPy path then."""
        k = accel.fits(z, z)
        if k is None or y.dtype != np.intp or z.shape[1] > k.PAIRWISE_BLOCK:
            return None
        logp = xp.empty_like(z)
        if not k.shift_rows(z, logp):
            return None
        b, c = z.shape
        p = xp.exp(logp)
        sums = xp.empty((b, 1), dtype=z.dtype)
        k.normalize_rows(p, sums)
        picked = xp.empty(b, dtype=z.dtype)
        k.subtract_pick(logp, xp.log(sums), y, picked)
        nll = -float(picked.sum(dtype=np.float64))
        eps = self.label_smoothing
        if eps:
            smooth = -float(logp.sum(dtype=np.float64)) / c
            nll = (1.0 - eps) * nll + eps * smooth
        self._cache = (p, y)
        return nll

    def _per_example(self, logp: Array, y: Array) -> Array:
        """Each row's loss -sum_c y_c log softmax(z)_c (labels smoothed), shape (B,)."""
        b, c = logp.shape
        eps = self.label_smoothing
        if y.ndim == 1:
            out = -logp[xp.arange(b), y]
            if eps:
                out = (1.0 - eps) * out - eps * logp.sum(axis=1) / c
        else:
            yy = y * (1.0 - eps) + eps / c if eps else y
            out = -xp.einsum("ij,ij->i", yy, logp)
        return out + 0.0

    def _weighted_targets(self, y: Array, c: int, dtype: np.dtype) -> tuple[Array, float]:
        """``W = w_c * yy`` (yy: the one-hot rows of labels, or the probability rows, smoothed)
        and the mean's denominator: ``sum_i w[y_i]`` for labels (torch's weighted mean, also
        of the smoothing term), ``B`` for probability rows (as torch). Without ``weight``
        ``w_c = 1``; rows labelled ``ignore_index`` are rows of zeros, left out of the sum."""
        w = xp.ones(c) if self.weight is None else self.weight
        if w.shape[0] != c:
            raise ValueError(f"cross_entropy: weight has {w.shape[0]} entries for pred with {c} "
                             f"classes; expected one weight per class ({c})")
        w = w.astype(dtype)
        eps = self.label_smoothing
        b = y.shape[0]
        if y.ndim == 1:
            ignored = self._ignored(y)
            if ignored is not None:
                y = xp.where(ignored, 0, y)  # any class: its row is zeroed below
            yy = xp.full((b, c), eps / c, dtype=dtype)
            yy[xp.arange(b), y] += 1.0 - eps
            picked = w[y]
            if ignored is not None:
                yy[ignored] = 0
                picked[ignored] = 0
            denominator = float(picked.sum(dtype=np.float64))
        else:
            yy = y * (1.0 - eps) + eps / c if eps else y.copy()
            denominator = float(b)
        yy *= w
        return yy, denominator

    def _weighted_forward(self, p: Array, logp: Array, y: Array) -> Any:
        """Class-weighted loss (torch's ``weight``): each row's ``-sum_c W_ic log p_ic`` with
        ``W`` from :meth:`_weighted_targets`; "mean" divides their sum by its denominator."""
        big_w, denominator = self._weighted_targets(y, p.shape[1], p.dtype)
        self._cache = (p, y, big_w, denominator)
        if y.ndim == 1 and not self.label_smoothing:  # -w[y] log p[y] only, as torch's nll:
            rows = xp.arange(y.shape[0])  # 0 * log p = 0 * -inf was NaN for a far-off logit
            safe = xp.where(y == self.ignore_index, 0, y)  # an ignored row: any class
            per_row = -(big_w[rows, safe] * logp[rows, safe])
        else:
            per_row = -xp.einsum("ij,ij->i", big_w, logp)
        ignored = self._ignored(y)
        if ignored is not None:  # 0, not 0 * log p = NaN where p underflowed to 0
            per_row[ignored] = 0
        if self.reduction == "none":
            return per_row + 0.0
        total = float(per_row.sum(dtype=np.float64))
        if self.reduction == "sum":
            return total + 0.0
        # every row of a zero-weight class: 0 / 0, NaN as torch's (not a ZeroDivisionError)
        return total / denominator + 0.0 if denominator else float("nan")

    def backward(self, grad: Any = None) -> Array:
        cache = self._cached()
        if len(cache) == 4:  # class weights: d(-sum_c W_c log p_c)/dz = p sum_c W_c - W
            p, y, big_w, denominator = cache
            g = p * big_w.sum(axis=1, keepdims=True)
            g -= big_w
            if self.reduction == "mean" and denominator:
                g /= p.dtype.type(denominator)
            elif self.reduction == "mean":  # only zero-weight rows: 0 / 0, NaN as torch's
                g.fill(np.nan)
                ignored = self._ignored(y)
                if ignored is not None:  # torch's ignored rows: 0 whatever the denominator
                    g[ignored] = 0
            up = self._upstream(grad, (p.shape[0],), p.dtype)
            return g if up is None else g * up[:, None]
        p, y = cache
        b, c = p.shape
        eps = self.label_smoothing
        if y.ndim == 1 and not eps and y.dtype == np.intp \
                and (k := accel.fits(p, p)) is not None:
            # the same in one pass (depthlab.kernels; labels in range: forward checked them)
            g = xp.empty_like(p)
            k.softmax_grad(p, y, _scale_array(p.dtype, self._scale(b)), g)
            up = self._upstream(grad, (b,), p.dtype)
            return g if up is None else g * up[:, None]
        if y.ndim == 1:
            g = p - eps / c if eps else p.copy()
            g[xp.arange(b), y] -= 1.0 - eps
        else:  # rows need not sum to 1 (multi-hot, unnormalised): p * sum_c y_c - y
            yy = y * (1.0 - eps) + eps / c if eps else y
            g = p * yy.sum(axis=1, keepdims=True)
            g -= yy
        g *= self._scale(b)
        up = self._upstream(grad, (b,), p.dtype)
        return g if up is None else g * up[:, None]

    def accuracy(self, pred: Array, target: Array) -> float:
        """Fraction of rows whose argmax logit equals the label (argmax of probability rows);
        rows labelled ``ignore_index`` are left out (NaN when every row is)."""
        z, y = self._check(pred, target)
        labels = y if y.ndim == 1 else y.argmax(axis=1)
        hits = z.argmax(axis=1) == labels
        ignored = self._ignored(y)
        if ignored is not None:
            hits = hits[~ignored]
        return float(np.mean(hits)) if hits.size else float("nan")


class BinaryCrossEntropy(Loss):
    """Binary cross-entropy on logits (PyTorch BCEWithLogitsLoss, mean):
    mean(max(z, 0) - z y + log1p(e^-|z|)); grad (sigmoid(z) - y) / N.
    torch's ``pos_weight`` p (one number >= 0, or one per output column) and ``weight`` w
    (>= 0, broadcast to pred's shape): l = w (p y softplus(-z) + (1 - y) softplus(z)),
    grad w (sigmoid(z) (p y + 1 - y) - p y) / N; the mean still divides by N."""

    name = "binary_cross_entropy"
    has_accuracy = True

    def __init__(self, reduction: str = "mean", weight: Any = None,
                 pos_weight: Any = None) -> None:
        self._set_reduction(reduction)
        self.weight = None if weight is None else _nonnegative("weight", weight, 2)
        self.pos_weight = None if pos_weight is None else _nonnegative("pos_weight",
                                                                       pos_weight, 1)

    @property
    def params(self) -> dict[str, Any]:
        extra = {k: v.tolist() for k, v in (("weight", self.weight),
                                           ("pos_weight", self.pos_weight)) if v is not None}
        return {**super().params, **extra}

    def _weights(self, z: Array) -> tuple[Array | None, Array | None]:
        """``(w, p)`` in z's dtype, broadcast to z's shape (a ValueError when they do not)."""
        out = []
        for name, v in (("weight", self.weight), ("pos_weight", self.pos_weight)):
            if v is not None:
                try:
                    v = np.broadcast_to(v.astype(z.dtype), z.shape)
                except ValueError:
                    want = "one per output column" if name == "pos_weight" else "broadcastable"
                    raise ValueError(f"binary_cross_entropy: {name} of shape {v.shape} for pred "
                                     f"of shape {z.shape}; expected {want} ({z.shape[-1]} "
                                     "columns) or one number") from None
            out.append(v)
        return out[0], out[1]

    def _check(self, pred: Any, target: Any) -> tuple[Array, Array]:
        pred = _check_pred(pred)
        target = _match_shapes(pred, _as_float_array(target, "target"), self.name)
        _check_finite_target(target)
        lo, hi = target.min().item(), target.max().item()
        if lo < 0 or hi > 1:
            raise ValueError(
                f"binary_cross_entropy: targets must lie in [0, 1], got {lo if lo < 0 else hi!r}"
            )
        return pred, target.astype(pred.dtype, copy=False)

    def forward(self, pred: Array, target: Array) -> Any:
        z, y = self._check(pred, target)
        t = xp.abs(z)
        xp.negative(t, out=t)
        xp.exp(t, out=t)
        xp.log1p(t, out=t)
        t += xp.maximum(z, 0)
        w, pw = self._weights(z)
        if pw is not None:  # softplus(z) - z y + (p - 1) y softplus(-z), softplus(-z) = t - z
            t += (pw - 1) * y * (t - z)
        t -= z * y
        if w is not None:
            t *= w
        self._cache = (z, y)
        if self.reduction == "none":
            return t
        return self._reduced(float(t.sum(dtype=np.float64)), z.size)

    def backward(self, grad: Any = None) -> Array:
        z, y = self._cached()
        g = expit(z)
        w, pw = self._weights(z)
        if pw is not None:  # sigmoid(z) (p y + 1 - y) - p y
            py = pw * y
            g *= py + 1 - y
            g -= py
        else:
            g -= y
        return self._per_element(g, grad, w)

    def accuracy(self, pred: Array, target: Array) -> float:
        """Fraction with (logit > 0) == (target > 0.5)."""
        z, y = self._check(pred, target)
        return float(np.mean((z > 0) == (y > 0.5)))


# torch's floors: BCELoss clamps each log at -100; its gradient divides by max(x (1 - x), 1e-12)
_LOG_FLOOR = -100.0
_BCE_EPSILON = float(np.float32(1e-12))  # a float constant in torch: 9.99999996e-13


class BCELoss(Loss):
    """torch's ``BCELoss`` on probabilities x in [0, 1] (a sigmoid output), targets y in
    [0, 1]: l = -w (y max(log x, -100) + (1 - y) max(log(1 - x), -100)), the mean over all
    N elements; grad w (x - y) / max(x (1 - x), 1e-12) / N (torch's formula, its floor).
    ``weight`` w (>= 0) broadcasts to pred's shape. Logits take ``binary_cross_entropy``
    (torch's ``BCEWithLogitsLoss``), which is exact where this one floors the logs."""

    name = "bce_loss"
    has_accuracy = True

    def __init__(self, weight: Any = None, reduction: str = "mean") -> None:
        self._set_reduction(reduction)
        self.weight = None if weight is None else _nonnegative("weight", weight, 2)

    @property
    def params(self) -> dict[str, Any]:
        extra = {} if self.weight is None else {"weight": self.weight.tolist()}
        return {**super().params, **extra}

    def _check(self, pred: Any, target: Any) -> tuple[Array, Array]:
        pred = _check_pred(pred)
        target = _match_shapes(pred, _as_float_array(target, "target"), self.name)
        _check_finite_target(target)
        lo, hi = target.min().item(), target.max().item()
        if lo < 0 or hi > 1:
            raise ValueError(f"{self.name}: targets must lie in [0, 1], got "
                             f"{lo if lo < 0 else hi!r}")
        bad = ~((pred >= 0) & (pred <= 1))  # NaN too (torch refuses it)
        if bad.any():
            raise ValueError(f"{self.name} (torch's BCELoss) takes probabilities in [0, 1], got "
                             f"{pred[bad].flat[0].item()!r}; for logits use "
                             "loss='binary_cross_entropy' (BCEWithLogitsLoss)")
        return pred, target.astype(pred.dtype, copy=False)

    def _weight(self, x: Array) -> Array | None:
        if self.weight is None:
            return None
        try:
            return np.broadcast_to(self.weight.astype(x.dtype), x.shape)
        except ValueError:
            raise ValueError(f"{self.name}: weight of shape {self.weight.shape} for pred of "
                             f"shape {x.shape}; expected a shape that broadcasts to it") from None

    def forward(self, pred: Array, target: Array) -> Any:
        x, y = self._check(pred, target)
        with np.errstate(divide="ignore"):  # log 0 = -inf, floored at -100 as torch
            log_x = xp.maximum(xp.log(x), _LOG_FLOOR)
            log_1mx = xp.maximum(xp.log1p(-x), _LOG_FLOOR)
        t = (y - 1) * log_1mx
        t -= y * log_x
        w = self._weight(x)
        if w is not None:
            t *= w
        self._cache = (x, y)
        if self.reduction == "none":
            return t + 0.0
        return self._reduced(float(t.sum(dtype=np.float64)), x.size) + 0.0

    def backward(self, grad: Any = None) -> Array:
        x, y = self._cached()
        g = x - y
        g /= xp.maximum(x * (1 - x), x.dtype.type(_BCE_EPSILON))
        return self._per_element(g, grad, self._weight(x))

    def accuracy(self, pred: Array, target: Array) -> float:
        """Fraction with (probability > 0.5) == (target > 0.5)."""
        x, y = self._check(pred, target)
        return float(np.mean((x > 0.5) == (y > 0.5)))


class NLLLoss(CrossEntropy):
    """torch's ``NLLLoss`` on log-probabilities x (B, C) (a log-softmax output) and integer
    labels y (B,): l_b = -w[y_b] x[b, y_b]; "mean" divides their sum by sum_b w[y_b] (w = 1
    without ``weight``); rows labelled ``ignore_index`` (default -100) add 0 and are left out
    of that sum; grad -w[y_b] / sum_b w[y_b] at (b, y_b), 0 elsewhere. Logits take
    ``cross_entropy`` (torch's ``CrossEntropyLoss`` = log-softmax + this)."""

    name = "nll_loss"
    _inputs = "log-probabilities"

    def __init__(self, weight: Any = None, ignore_index: int = IGNORE_INDEX,
                 reduction: str = "mean") -> None:
        super().__init__(0.0, reduction, weight, ignore_index)

    @property
    def params(self) -> dict[str, Any]:
        out = super().params
        del out["label_smoothing"]
        return out

    def _picked(self, pred: Any, target: Any) -> tuple[Array, Array, Array, Array | None]:
        """(x, safe labels, w[y] in x's dtype with ignored rows 0, the ignored mask)."""
        x, y = self._check(pred, target)
        if y.ndim != 1:
            raise ValueError(f"{self.name} (torch's NLLLoss) takes integer labels of shape "
                             f"({x.shape[0]},), got target shape {y.shape}; probability rows "
                             "take loss='cross_entropy' on logits")
        c = x.shape[1]
        w = np.ones(c) if self.weight is None else self.weight
        if w.shape[0] != c:
            raise ValueError(f"{self.name}: weight has {w.shape[0]} entries for pred with {c} "
                             f"classes; expected one weight per class ({c})")
        ignored = self._ignored(y)
        safe = y if ignored is None else xp.where(ignored, 0, y)
        wy = w.astype(x.dtype)[safe]
        if ignored is not None:
            wy[ignored] = 0
        return x, safe, wy, ignored

    def forward(self, pred: Array, target: Array) -> Any:
        x, safe, wy, ignored = self._picked(pred, target)
        per_row = -(wy * x[xp.arange(x.shape[0]), safe])
        if ignored is not None:  # 0, not 0 * (-inf) = NaN
            per_row[ignored] = 0
        denominator = float(wy.sum(dtype=np.float64))
        self._cache = (x, safe, wy, ignored, denominator)
        if self.reduction == "none":
            return per_row + 0.0
        total = float(per_row.sum(dtype=np.float64))
        if self.reduction == "sum":
            return total + 0.0
        return total / denominator + 0.0 if denominator else float("nan")  # torch's 0 / 0

    def backward(self, grad: Any = None) -> Array:
        x, safe, wy, ignored, denominator = self._cached()
        b = x.shape[0]
        g = xp.zeros_like(x)
        col = -wy
        if self.reduction == "mean":  # 1 / 0 for zero weights only: NaN there, as torch
            with np.errstate(divide="ignore", invalid="ignore"):
                col = col * x.dtype.type(1.0 / denominator if denominator else np.inf)
            if ignored is not None:
                col[ignored] = 0
        g[xp.arange(b), safe] = col
        up = self._upstream(grad, (b,), x.dtype)
        return g if up is None else g * up[:, None]


_LISTED = (MSE, CrossEntropy, BinaryCrossEntropy, Huber)

# :attr:`REGISTRY.names` lists the losses a network's raw outputs train with (``mse``,
# ``cross_entropy`` and ``binary_cross_entropy`` on logits, ``huber``); torch's losses on
# probabilities / log-probabilities (``bce_loss``, ``nll_loss``) and its ``l1_loss`` and
# ``smooth_l1_loss`` (ports of torch code) are found by their names too, but not listed (nor
# offered as config choices)
REGISTRY: Registry[Loss] = Registry(
    "loss",
    {cls.name: cls for cls in (*_LISTED, BCELoss, NLLLoss, L1Loss, SmoothL1Loss)},
    aliases={"mean_squared_error": "mse", "ce": "cross_entropy",
             "categorical_cross_entropy": "cross_entropy", "bce": "binary_cross_entropy",
             # torch's class names (CrossEntropyLoss, MSELoss, HuberLoss; BCELoss and NLLLoss
             # are their own classes: probabilities, log-probabilities) and sklearn's log_loss
             "cross_entropy_loss": "cross_entropy", "mse_loss": "mse", "huber_loss": "huber",
             "nll": "nll_loss", "log_loss": "bce_loss", "l1": "l1_loss", "mae": "l1_loss",
             "mean_absolute_error": "l1_loss", "smooth_l1": "smooth_l1_loss",
             # the logit loss under torch's own names for it (BCEWithLogitsLoss)
             "bce_with_logits_loss": "binary_cross_entropy", "bce_with_logits":
                 "binary_cross_entropy",
             "binary_cross_entropy_with_logits": "binary_cross_entropy"},
    passes=lambda obj: isinstance(obj, Loss),
    listed=tuple(cls.name for cls in _LISTED),
)

LOSSES: tuple[str, ...] = REGISTRY.names
"""The registered loss names."""


def get_loss(name: str | Loss, **kwargs: Any) -> Loss:
    """The loss registered under ``name`` built with ``kwargs``; a Loss instance passes through.

    Unknown names raise ValueError, unknown keyword arguments TypeError.
    """
    return REGISTRY.build(name, **kwargs)
