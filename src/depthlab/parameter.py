"""Trainable parameter: a value array and the gradient array of the same shape."""

from __future__ import annotations

from .backend import Array, _torch_values, xp

KINDS = ("weight", "bias", "gamma", "beta")


class Parameter:
    """A trainable array.

    ``value`` is updated in place by optimizers; ``grad`` holds dL/d(value) after a
    backward pass (overwritten each pass, never accumulated). ``regularized`` is True
    only for weights: L1/L2 penalties skip biases and batch-norm parameters.
    """

    __slots__ = ("name", "value", "grad", "kind")

    def __init__(self, name: str, value: Array, kind: str = "weight") -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown parameter kind {kind!r}; expected one of {KINDS}")
        value = xp.asarray(_torch_values(value))  # a list of numbers, a tensor's values too
        if value.dtype.kind != "f":
            raise TypeError(f"Parameter {name!r}: value of dtype {value.dtype} is not "
                            "accepted; accepted: a float array")
        self.name = name
        self.value = value
        self.grad = xp.zeros_like(value)
        self.kind = kind

    def grad_buffer(self) -> Array:
        """The array a backward pass writes dL/d(value) into: ``.grad`` itself when it is a
        writable ndarray of the value's shape and dtype, else a new zeros array of those, set
        as ``.grad``. A ``p.grad = None`` (torch's ``zero_grad()`` habit) or an array of
        another shape or dtype is replaced, so every backward fills every ``.grad`` (a None
        stayed None: ``matmul(out=None)`` dropped the result)."""
        g = self.grad
        if (isinstance(g, xp.ndarray) and g.shape == self.value.shape
                and g.dtype == self.value.dtype and g.flags.writeable):
            return g
        self.grad = xp.zeros_like(self.value)
        return self.grad

    @property
    def regularized(self) -> bool:
        return self.kind == "weight"

    @property
    def shape(self) -> tuple[int, ...]:
        return self.value.shape

    @property
    def dtype(self):
        return self.value.dtype

    def __repr__(self) -> str:
        return f"Parameter({self.name!r}, shape={self.value.shape}, dtype={self.value.dtype})"
