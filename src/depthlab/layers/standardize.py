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
        ``std64`` for :meth:`forward`, ``mean`` and ``std`` in ``dtype``): the statistics of
        :func:`depthlab.data.fit_standardizer`, as ``load_dataset(standardize=True)`` computes
        them. A constant feature (up to the rounding of its mean) gets std 1 and maps to 0; a
        feature whose squares overflow or underflow float64 (``|x|`` about 1e160 or 1e-170)
        keeps its spread (its std was inf, every value then 0, or 0, the feature left
        unscaled). ``std64`` is the float64 std even where ``dtype``'s is 0 (a spread of
        1e-300 in float32): float64 data are divided by it before the cast."""
        from ..data.standardize import fit_standardizer

        mean, std = fit_standardizer(xp.asarray(x, dtype="float64"))
        with np.errstate(over="ignore"):  # a mean of 1e160 is inf in float32 (float64 data
            layer = cls(mean.astype(dtype), std.astype(dtype))  # use mean64, std64)
        layer.mean64 = mean
        layer.std64 = std
        return layer

    def forward(self, x: Array, training: bool = True) -> Array:
        """``(x - mean) / std``. After :meth:`fit`, float64 data (also for a float32 layer) are
        standardized with the float64 statistics (:meth:`standardize64`), then cast to the
        layer's dtype (a float32 mean of 1e8 + 3.7 is 1e8: such a feature came out
        centred at 3.7 instead of 0). An input whose last axis is not the features is a
        ValueError naming its shape (a ``(B, 1)`` input was broadcast against the
        statistics)."""
        shape = np.shape(x)
        if not shape or shape[-1] != self.mean.shape[0]:
            raise ValueError(f"{self.name}: input of shape {tuple(shape)}; expected (batch, "
                             f"{self.mean.shape[0]}) (one column per standardized feature)")
        self.x = x
        if getattr(self, "mean64", None) is None or (
                xp.asarray(x).dtype == self.mean.dtype != np.float64):
            # in the layer's dtype: a float32 layer built from its statistics returned float64
            # for float64 rows (computed in the wider dtype, then cast)
            return ((x - self.mean) / self.std).astype(self.mean.dtype, copy=False)
        return self.standardize64(x).astype(self.mean.dtype, copy=False)

    def standardize64(self, x: Array) -> Array:
        """``(x - mean64) / std64`` in float64 (a new array) with
        :func:`depthlab.data.apply_standardizer`, as ``load_dataset(standardize=True)``: a column
        where ``x - mean`` overflows (1.7e308 beside a mean of -1.4e308) is computed as
        ``x / std - mean / std``."""
        from ..data.standardize import apply_standardizer

        return apply_standardizer(xp.asarray(x, dtype=np.float64), self.mean64, self.std64)

    def backward(self, grad: Array, input_grad: bool = True) -> Array:
        """``dL/dx = dL/dz / std``."""
        grad /= self.std
        return grad

    def __repr__(self) -> str:
        return f"Standardize({self.mean.shape[0]} features)"
