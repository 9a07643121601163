"""The labels of the batch a batch-normalized prediction is compared with.

Batch norm's backward pass removes the batch mean of the gradient it receives
(``dL/dz_i - mean_j dL/dz_j - z_i mean_j(dL/dz_j z_j)``). The batch-norm recursions
(:mod:`depthlab.theory.batchnorm`, :func:`~depthlab.theory.residual.propagate_residual` with
``batchnorm=True``) assume an output gradient that varies across the batch, as with labels of
several classes: for cross-entropy at initialization ``g_i = p_i - e_{y_i}`` with ``p_i`` near
uniform, whose part that varies across the batch has power ``1 - sum_c f_c^2`` for class
frequencies ``f_c``. A batch of one class has a nearly constant ``g_i``, which batch norm
removes, so the measured gradient near the input falls below the prediction.

Measured (first hidden layer's gradient relative to the last, measured / predicted, median of
3 seeds, 400 rows, 11 layers of 128, He init, cross-entropy on 10 classes; a share ``s`` of the
rows in class 0, the rest uniform over the 10): residual relu + BN, Gaussian inputs: 1.08 at
``s = 0`` (largest class 0.1), 0.98 at 0.5 (0.55), 0.80 at 0.8 (0.82), 0.73 at 0.9, 0.63 at
0.95, 0.54 at one class; residual tanh + BN: 1.09, 1.00, 0.81, 0.73, 0.67, 0.58; plain relu +
BN: 0.97, 0.88, 0.71, 0.62, 0.56, 0.49.
"""

from __future__ import annotations

from typing import Any

import numpy as np

ONE_CLASS_SHARE = 0.8
"""A batch-norm prediction's note warns when the largest class holds at least this share of the
labels given (:func:`largest_class_share`): there the first layer's gradient measured about 0.8x
the prediction or less (see the module docstring)."""


def largest_class_share(y: Any, rows: int | None = None) -> float:
    """The largest class's share ``max_c f_c`` of the labels ``y``: a 1-D array of class labels
    (integers, or any values compared for equality) or 2-D rows of one-hot or class scores
    (each row's class is its largest column). ``rows``: the number of rows ``y`` must have (the
    inputs ``x`` given with it). ValueError/TypeError naming what is wrong otherwise."""
    if isinstance(y, (str, bytes)) or y is None:
        raise TypeError(f"y must be an array of class labels (n,) or one-hot rows (n, k), got "
                        f"{type(y).__name__}")
    arr = np.asarray(y)
    if arr.ndim not in (1, 2) or arr.shape[0] < 1 or (arr.ndim == 2 and arr.shape[1] < 1):
        raise ValueError(f"y must have shape (n >= 1,) of class labels or (n >= 1, k) of one-hot "
                         f"rows, got shape {arr.shape}")
    if rows is not None and arr.shape[0] != rows:
        raise ValueError(f"y must have one label per row of x ({rows} rows), got "
                         f"{arr.shape[0]}")
    if arr.dtype.kind in "fc" or arr.ndim == 2:
        try:
            num = arr.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"y must hold numbers in its one-hot rows; {exc}") from None
        if not np.isfinite(num).all():
            bad = tuple(int(i) for i in np.argwhere(~np.isfinite(num))[0])
            where = ", ".join(str(i) for i in bad)
            raise ValueError(f"y must hold finite numbers; y[{where}] = {num[bad]}")
        if arr.ndim == 2:
            arr = np.argmax(num, axis=1)
    _, counts = np.unique(arr, return_counts=True)
    return float(counts.max()) / float(arr.shape[0])


def one_class_note(share: float) -> str:
    """The note for a batch-norm prediction whose labels' largest class holds ``share`` (at
    least :data:`ONE_CLASS_SHARE`): empty below it."""
    if share < ONE_CLASS_SHARE:
        return ""
    which = "are all one class" if share >= 1.0 else f"are {100 * share:.0f}% one class"
    return (f"; assumes an output gradient that varies across the batch (labels of several "
            f"classes), but the labels y given {which}: the output gradient is then nearly "
            "the same for every example and batch norm's backward pass removes its batch mean, "
            "so the gradient near the input measures below the prediction (11 layers of 128, "
            "residual relu + BN: the first layer's 0.73x at 90% one class, 0.54x at one class)")
