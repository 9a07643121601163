"""Per-feature standardization with training statistics (LeCun et al. 1998, "Efficient BackProp").

``z = (x - mean_train) / std_train``; features that are constant on the training set get
``std = 1`` (and their exact value as the mean) so they map to 0 instead of dividing by zero.
"""

from __future__ import annotations

import numpy as np

from depthlab.backend import xp


def fit_standardizer(x_train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and std of ``x_train`` (population std, computed in float64).

    Returns ``(mean, std)`` in ``x_train``'s dtype; ``std`` is 1 where the feature is constant.
    A column whose squares overflow float64 (``|x|`` near 1e154 and above) gets
    ``mean = s mean(x / s)`` and ``std = s std(x / s)`` with ``s = max |x|``.
    """
    x = xp.asarray(x_train)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"fit_standardizer needs a non-empty 2-D array, got shape {x.shape}")
    with np.errstate(over="ignore", invalid="ignore"):  # overflowing columns: below
        mean = x.mean(axis=0, dtype=np.float64)
        std = x.std(axis=0, dtype=np.float64)
    big = ~(np.isfinite(mean) & np.isfinite(std))
    if big.any():  # |x| ~ 1e200: the squares (or the sum) overflow float64, the std was inf
        # and the feature became 0; computed on x / s (s = the column's max |x|), times s
        cols = np.asarray(x[:, big], dtype=np.float64)
        s = np.abs(cols).max(axis=0)
        mean[big] = (cols / s).mean(axis=0) * s
        std[big] = (cols / s).std(axis=0) * s
    constant = x.max(axis=0) == x.min(axis=0)
    mean[constant] = x[0, constant]
    std[constant] = 1.0
    # Guard against near-constant features whose std underflows after rounding.
    std[std < 1e-12] = 1.0
    return mean.astype(x.dtype), std.astype(x.dtype)


def apply_standardizer(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Return ``(x - mean) / std`` as a new array in ``x``'s dtype."""
    out = xp.subtract(x, mean.astype(x.dtype, copy=False))
    xp.divide(out, std.astype(x.dtype, copy=False), out=out)
    return out
