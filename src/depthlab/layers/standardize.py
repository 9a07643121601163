"""Input standardization (LeCun et al. 1998) as a fixed first layer: ``y = (x - mean) / std``."""

from __future__ import annotations

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

    @classmethod
    def fit(cls, x: Array, dtype) -> Standardize:
        """Mean and population std of ``x`` per feature (in float64). A constant feature
        (max = min) gets its value as the mean and std 1, so it maps to exactly 0: its float64
        mean may differ from the value by rounding, leaving a std of ~1e-17 to divide by."""
        x = xp.asarray(x, dtype="float64")
        mean, std = x.mean(axis=0), x.std(axis=0)
        constant = x.max(axis=0) == x.min(axis=0)
        mean[constant] = x[0, constant]
        std[constant] = 1.0
        return cls(mean.astype(dtype), std.astype(dtype))

    def forward(self, x: Array, training: bool = True) -> Array:
        self.x = x
        return (x - self.mean) / self.std

    def backward(self, grad: Array, input_grad: bool = True) -> Array:
        grad /= self.std
        return grad

    def __repr__(self) -> str:
        return f"Standardize({self.mean.shape[0]} features)"
