"""Residual shortcut ``y = x + F(x)`` (He et al. 2016, pre-activation form)."""

from __future__ import annotations

from collections.abc import Iterator

from ..backend import Array
from ..parameter import Parameter
from .base import Layer
from .batchnorm import BatchNorm
from .dense import Dense
from .sequential import Sequential


def _add_skip(branch: Sequential, y: Array, x: Array) -> Array:
    """``y + x``, in place when ``y`` is a new array that no layer keeps (the output of a
    Dense or BatchNorm ending the branch); otherwise a new array, so that an Activation's
    cached ``a`` (or the input itself, for a branch that passes it through) is not changed."""
    layers = getattr(branch, "layers", None)
    if layers and isinstance(layers[-1], Dense | BatchNorm) and y is not x:
        y += x
        return y
    return y + x


class Residual(Layer):
    """``y = x + F(x)``; backward ``dL/dx = dL/dy + dL/dy * dF/dx`` (the identity path keeps
    the gradient from vanishing however deep the stack)."""

    overwrites_grad = False

    @property
    def keeps_grad(self) -> bool:  # type: ignore[override]
        """A branch starting with an activation returns its ``grad_s``; the skip is added into
        it in place (its probes read ``dL/ds`` of the residual sum, as torch's ``s.grad``), and
        that array is what this block returns."""
        return self.branch.keeps_grad

    def __init__(self, branch: Sequential | list[Layer] | tuple[Layer, ...],
                 name: str = "res") -> None:
        """``branch``: the ``F`` of ``y = x + F(x)``, a ``Sequential`` (or one layer, or a
        list/tuple of layers, chained into one; each entry checked by ``Sequential``).
        Anything else is a TypeError naming it (``Residual(None)`` was accepted and failed
        at its first use with "'NoneType' object has no attribute 'leaves'")."""
        if isinstance(branch, list | tuple):
            branch = Sequential(list(branch), name="branch")
        elif isinstance(branch, Layer) and not isinstance(branch, Sequential):
            branch = Sequential([branch], name="branch")  # one layer: its width is checked too
        elif not isinstance(branch, Sequential):
            raise TypeError(f"Residual branch = {branch!r:.60} is not accepted; accepted: a "
                            "Sequential, a depthlab layer or a list of them (the F of "
                            "y = x + F(x))")
        self.branch = branch
        self.name = name

    def forward(self, x: Array, training: bool = True) -> Array:
        """``y = x + F(x)``."""
        self.x = x = self._as_input(x)  # nested lists, a torch tensor: as arrays
        return _add_skip(self.branch, self.branch.forward(x, training), x)

    def backward(self, grad: Array, input_grad: bool = True) -> Array:
        """``dL/dx = dL/dy + J_F^T dL/dy`` (the skip path's gradient plus the branch's)."""
        g_in = grad.copy() if self.branch.overwrites_grad else grad
        gx = self.branch.backward(g_in, input_grad=True)
        if gx is grad:  # a branch that hands the gradient through (empty): grad stays intact
            return gx + grad
        gx += grad
        return gx

    def calibrate(self, x: Array) -> Array:
        return _add_skip(self.branch, self.branch.calibrate(x), x)

    def parameters(self) -> list[Parameter]:
        """The branch ``F``'s parameters (the skip path has none)."""
        return self.branch.parameters()

    def leaves(self) -> Iterator[Layer]:
        yield from self.branch.leaves()

    def clear_cache(self) -> None:
        self.x = None
        self.branch.clear_cache()

    def __repr__(self) -> str:
        return f"Residual({self.branch!r})"
