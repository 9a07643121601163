"""Residual shortcut ``y = x + F(x)`` (He et al. 2016, pre-activation form)."""

from __future__ import annotations

from collections.abc import Iterator

from ..backend import Array
from ..parameter import Parameter
from .base import Layer
from .sequential import Sequential


class Residual(Layer):
    """``y = x + F(x)``; backward ``dL/dx = dL/dy + dL/dy * dF/dx`` (the identity path keeps
    the gradient from vanishing however deep the stack)."""

    overwrites_grad = False

    def __init__(self, branch: Sequential, name: str = "res") -> None:
        self.branch = branch
        self.name = name

    def forward(self, x: Array, training: bool = True) -> Array:
        self.x = x
        y = self.branch.forward(x, training)
        y += x
        return y

    def backward(self, grad: Array, input_grad: bool = True) -> Array:
        g_in = grad.copy() if self.branch.overwrites_grad else grad
        gx = self.branch.backward(g_in, input_grad=True)
        gx += grad
        return gx

    def calibrate(self, x: Array) -> Array:
        y = self.branch.calibrate(x)
        y += x
        return y

    def parameters(self) -> list[Parameter]:
        return self.branch.parameters()

    def leaves(self) -> Iterator[Layer]:
        yield from self.branch.leaves()

    def clear_cache(self) -> None:
        self.x = None
        self.branch.clear_cache()

    def __repr__(self) -> str:
        return f"Residual({self.branch!r})"
