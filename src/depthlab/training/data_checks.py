"""Validation of training data before anything starts."""

from __future__ import annotations

import numpy as np

from ..backend import Array


def check_xy(x, y, *, n_inputs: int, dtype, what: str = "training") -> tuple[Array, Array]:
    """Return ``(x, y)`` as arrays (x in the network's dtype) or raise a clear ValueError."""
    x = np.asarray(x)
    y = np.asarray(y)
    if x.size == 0 or x.shape[0] == 0:
        raise ValueError(f"{what} data is empty: x has shape {x.shape}")
    if x.ndim != 2:
        raise ValueError(f"{what} x must be 2-D (samples, features), got shape {x.shape}")
    if x.shape[1] != n_inputs:
        raise ValueError(f"{what} x has {x.shape[1]} features; the network expects {n_inputs}")
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"{what} x has {x.shape[0]} rows but y has {y.shape[0]}")
    if not np.issubdtype(x.dtype, np.number):
        raise ValueError(f"{what} x must be numeric, got dtype {x.dtype}")
    x = x.astype(dtype, copy=False)
    if not np.isfinite(x).all():
        bad = np.argwhere(~np.isfinite(x))[0]
        raise ValueError(
            f"{what} x contains NaN or infinity (first at row {bad[0]}, column {bad[1]})"
        )
    if np.issubdtype(y.dtype, np.floating) and not np.isfinite(y).all():
        raise ValueError(f"{what} y contains NaN or infinity")
    return x, y
