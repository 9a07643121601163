"""Input standardization (LeCun et al. 1998) as a fixed first layer: ``y = (x - mean) / std``."""

from __future__ import annotations

import numpy as np

from ..backend import Array, xp
from .base import Layer


class Standardize(Layer):
    """``y = (x - mean) / std`` with statistics from the training set only; not trainable.

    Backward: ``dL/dx = dL/dy / std``. Constant features get ``std = 1``.
    """

    def __init__(self, mean: Array, std: Array, name: str = "standardize") -> None:
        self.mean = mean
        self.std = xp.where(std > 0, std, 1).astype(mean.dtype)
        self.name = name
        self.mean64: Array | None = None  # float64 statistics, set by fit
        self.std64: Array | None = None

    @classmethod
    def fit(cls, x: Array, dtype) -> Standardize:
        """Mean and population std of ``x`` per feature (in float64; kept as ``mean64`` and
        ``std64`` for :meth:`forward`, ``mean`` and ``std`` in ``dtype``). A constant feature
        (max = min) gets its value as the mean and std 1, so it maps to exactly 0: its float64
        mean may differ from the value by rounding, leaving a std of ~1e-17 to divide by."""
        x = xp.asarray(x, dtype="float64")
        mean, std = x.mean(axis=0), x.std(axis=0)
        constant = x.max(axis=0) == x.min(axis=0)
        mean[constant] = x[0, constant]
        std[constant] = 1.0
        narrow = std.astype(dtype)
        layer = cls(mean.astype(dtype), narrow)
        layer.mean64 = mean
        layer.std64 = xp.where(narrow > 0, std, 1.0)  # 1 where the dtype's std was 0, as std
        return layer

    def forward(self, x: Array, training: bool = True) -> Array:
        """``(x - mean) / std``. After :meth:`fit`, an ``x`` of a wider dtype than the layer's
        (float64 data, float32 layer) is standardized with the float64 statistics, then cast
        to the layer's dtype (a float32 mean of 1e8 + 3.7 is 1e8: such a feature came out
        centred at 3.7 instead of 0)."""
        self.x = x
        if getattr(self, "mean64", None) is None or xp.asarray(x).dtype == self.mean.dtype:
            return (x - self.mean) / self.std
        z = xp.subtract(xp.asarray(x, dtype=np.float64), self.mean64)
        z /= self.std64
        return z.astype(self.mean.dtype, copy=False)

    def backward(self, grad: Array, input_grad: bool = True) -> Array:
        """``dL/dx = dL/dz / std``."""
        grad /= self.std
        return grad

    def __repr__(self) -> str:
        return f"Standardize({self.mean.shape[0]} features)"
