"""Elementwise nonlinearity layer ``a = f(s)``; keeps ``s``, ``a`` and ``dL/ds`` for probes."""

from __future__ import annotations

from typing import Any

from ..activations import get_activation
from ..backend import Array
from .base import Layer


class Activation(Layer):
    """``a = f(s)``; backward ``dL/ds = dL/da * f'(s)`` (one factor of the delta rule), kept
    as ``grad_s`` (``keeps_grad``)."""

    keeps_grad = True

    def __init__(self, fn: Any = "relu", name: str = "act", **kwargs: Any) -> None:
        self.fn = get_activation(fn, **kwargs)
        self.name = name
        self.s: Array | None = None
        self.a: Array | None = None
        self.grad_s: Array | None = None

    def forward(self, x: Array, training: bool = True) -> Array:
        """``a = f(s)`` elementwise, with ``s = x``; both kept (``s``, ``a``) for the probes."""
        self.s = x = self._as_input(x)  # nested lists, a torch tensor: as arrays
        self.a = self.fn.forward(x)
        return self.a

    def backward(self, grad: Array, input_grad: bool = True) -> Array:
        """``dL/ds = dL/da * f'(s)`` elementwise, kept as ``grad_s`` and returned."""
        self._check_backward(self.a, grad, () if self.a is None else self.a.shape)
        self.grad_s = self.fn.backward(self.s, self.a, grad)
        return self.grad_s

    def cached_input(self) -> Array | None:
        return self.s

    def __repr__(self) -> str:
        return f"Activation({self.fn.name!r})"
