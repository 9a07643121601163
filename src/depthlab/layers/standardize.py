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
        x = xp.asarray(x, dtype="float64")
        return cls(x.mean(axis=0).astype(dtype), x.std(axis=0).astype(dtype))

    def forward(self, x: Array, training: bool = True) -> Array:
        self.x = x
        return (x - self.mean) / self.std

    def backward(self, grad: Array, input_grad: bool = True) -> Array:
        grad /= self.std
        return grad

    def __repr__(self) -> str:
        return f"Standardize({self.mean.shape[0]} features)"
