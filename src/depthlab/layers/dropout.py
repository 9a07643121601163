"""Dropout (inverted) and alpha dropout (for SELU networks).

The keep mask is ``u >= p`` for uniforms ``u`` drawn as float32 whatever the network's dtype
(:func:`keep_mask`), so a float32 and a float64 network built from one seed drop the same
units, as their initializers give them the same weights."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..backend import Array
from ..backend import rng as make_rng
from ..validators import rate
from .base import Layer

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_LAMBDA = 1.0507009873554804934193349852946


def keep_mask(rng, shape: tuple[int, ...], p: float) -> Array:
    """``u >= p`` for ``u ~ U[0, 1)`` drawn as float32 (the same draws for every dtype)."""
    return rng.random(shape, dtype=np.float32) >= np.float32(p)


class Dropout(Layer):
    """Inverted dropout: in training ``y = x * (m / (1 - p))`` with ``m ~ Bernoulli(1 - p)``;
    identity at inference unless ``mc`` is set (Monte Carlo dropout)."""

    def __init__(self, p: float = 0.5, *, rng: Any = None, name: str = "dropout") -> None:
        self.p = rate("dropout rate", p)
        self.rng = make_rng(rng)
        self.name = name
        self.mc = False
        self.mask: Array | None = None

    def _active(self, training: bool) -> bool:
        return (training or self.mc) and self.p > 0.0

    def forward(self, x: Array, training: bool = True) -> Array:
        """``y = x * m / (1 - p)``, ``m ~ Bernoulli(1 - p)`` drawn per entry, in training (or
        with ``mc``); ``y = x`` otherwise."""
        self.x = x = self._as_input(x)
        if not self._active(training):
            self.mask = None
            return x
        self.mask = keep_mask(self.rng, x.shape, self.p).astype(x.dtype)
        # m / (1 - p) with 1 - p rounded to x's dtype first, as torch's noise.div_(1 - p):
        # float32 m * (1 / (1 - p)) was an ulp off torch's scale for p = 0.45 (1.8181819 vs
        # 1.8181817) and p = 0.123
        self.mask /= x.dtype.type(1.0 - self.p)
        return x * self.mask

    def backward(self, grad: Array, input_grad: bool = True) -> Array:
        """``dL/dx = dL/dy * mask`` (the forward's scaled mask; ``dL/dy`` when it was off)."""
        x = getattr(self, "x", None)  # before any forward: no mask, but no pass to undo either
        self._check_backward(x, grad, () if x is None else x.shape)
        if self.mask is not None:
            grad *= self.mask
        return grad

    def __repr__(self) -> str:
        return f"Dropout(p={self.p})"


class AlphaDropout(Dropout):
    """Alpha dropout (Klambauer et al. 2017): dropped units are set to ``a' = -lambda*alpha``
    and ``y = A (x m + a' (1 - m)) + B`` with ``A = ((1-p)(1 + p a'^2))^(-1/2)`` and
    ``B = -A a' p`` so that zero mean and unit variance are kept."""

    def forward(self, x: Array, training: bool = True) -> Array:
        """``y = A (x m + a' (1 - m)) + B`` in training (or with ``mc``), ``y = x``
        otherwise; backward ``dL/dx = A m dL/dy``."""
        self.x = x = self._as_input(x)
        if not self._active(training):
            self.mask = None
            return x
        p = self.p
        a_prime = -SELU_LAMBDA * SELU_ALPHA
        A = 1.0 / math.sqrt((1.0 - p) * (1.0 + p * a_prime**2))
        B = -A * a_prime * p
        keep = keep_mask(self.rng, x.shape, p).astype(x.dtype)
        self.mask = keep * x.dtype.type(A)
        # y = A*x*m + (A*a'*(1-m) + B)
        y = x * self.mask
        y += (1.0 - keep) * x.dtype.type(A * a_prime) + x.dtype.type(B)
        return y

    def __repr__(self) -> str:
        return f"AlphaDropout(p={self.p})"
