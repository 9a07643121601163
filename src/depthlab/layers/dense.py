"""Fully connected layer ``y = x W + b`` with ``W`` of shape (fan_in, fan_out)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import accel
from ..backend import Array, _torch_values, resolve_dtype, xp
from ..backend import rng as make_rng
from ..initializers import Initializer, get_initializer
from ..memory import CHECK_FROM_BYTES, check_fits
from ..parameter import Parameter
from .base import Layer
from .batchnorm import F64_SUMS_FROM


class Dense(Layer):
    """``y = x W + b``. A fan-based ``bias_init`` reads the weight's (fan_in, fan_out), as
    torch's ``nn.Linear`` (``bias_init="fan_in_uniform"``: U[-1/sqrt(fan_in), 1/sqrt(fan_in)]).

    Backward (generalized delta rule), with ``g = dL/dy``:
    ``dL/dW = x^T g``, ``dL/db = sum_batch g`` (summed in float64 for float32 batches of at
    least :data:`~depthlab.layers.batchnorm.F64_SUMS_FROM` rows), ``dL/dx = g W^T``.
    """

    overwrites_grad = False

    def __init__(
        self,
        fan_in: int,
        fan_out: int,
        *,
        bias: bool = True,
        init: Any = "glorot_uniform",
        bias_init: Any = "zeros",
        rng: Any = None,
        dtype: Any = "float32",
        name: str = "dense",
    ) -> None:
        for label, n in (("fan_in", fan_in), ("fan_out", fan_out)):
            if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
                raise ValueError(f"Dense {label} must be a positive integer, got {n!r}")
        self.name = name
        self.fan_in, self.fan_out = int(fan_in), int(fan_out)
        dt = resolve_dtype(dtype)
        # refused before the initializer draws (a Dense(10**6, 10**6) was NumPy's 'Unable to
        # allocate 7.28 TiB ... float64'): its float64 samples and their cast (float32), or
        # the values and their gradients (float64); small layers skip reading the memory
        n = self.fan_in * self.fan_out + (self.fan_out if bias else 0)
        need = n * (8 + dt.itemsize if dt.itemsize != 8 else 16)
        if need >= CHECK_FROM_BYTES:
            check_fits(need, f"Dense({self.fan_in}, {self.fan_out}) ({n:,} {dt.name} "
                             "parameters)")
        gen = make_rng(rng)
        w = xp.asarray(get_initializer(init)((self.fan_in, self.fan_out), gen, dt), dtype=dt)
        self.W = Parameter(f"{name}.W", w, "weight")
        self.b = None
        if bias:
            # the weight's fans, as torch's nn.Linear (its bias U(+-1/sqrt(fan_in)) is
            # fan_in_uniform's): the bias vector's own length read as both fans was Keras'
            binit = get_initializer(bias_init)
            fans = {"fans": (self.fan_in, self.fan_out)} if isinstance(binit, Initializer) \
                else {}
            b = xp.asarray(binit((self.fan_out,), gen, dt, **fans), dtype=dt)
            self.b = Parameter(f"{name}.b", b, "bias")
        self.init = init
        self.x: Array | None = None

    def forward(self, x: Array, training: bool = True) -> Array:
        """``y = x W + b``: ``(batch, fan_in) -> (batch, fan_out)``; ``x`` kept for backward.
        An input whose last axis is not ``fan_in`` wide is one ValueError naming both (it
        was NumPy's matmul signature message). Computed in the layer's dtype: an input of
        another dtype is cast first (a float32 layer returned float64 for float64 rows)."""
        if not isinstance(x, np.ndarray):  # a list of rows, a torch tensor (its values)
            x = np.asarray(_torch_values(x))
        shape = x.shape
        if not shape or shape[-1] != self.fan_in:
            raise ValueError(f"{self.name}: input of shape {tuple(shape)}; expected (batch, "
                             f"{self.fan_in}) (Dense({self.fan_in}, {self.fan_out}) takes "
                             f"{self.fan_in} features, the last axis)")
        self.x = x = self._in_dtype(x, self.W.value.dtype)
        y = x @ self.W.value
        if self.b is not None:
            b = self.b.value
            k = accel.fits(y, b)
            if k is None or y.ndim != 2:
                y += b
            else:
                k.add_rows(y, b)  # the same, one pass (depthlab.kernels)
        return y

    def backward(self, grad: Array, input_grad: bool = True) -> Array | None:
        """With ``g = dL/dy``: ``dL/dW = x^T g``, ``dL/db = sum_batch g`` (into ``W.grad``,
        ``b.grad``); returns ``dL/dx = g W^T`` (None with ``input_grad=False``).

        An input of shape ``(*, fan_in)`` (as ``nn.Linear`` takes; the forward maps it to
        ``(*, fan_out)``) is read as ``prod(*)`` rows: ``x`` and ``g`` are flattened to 2-D
        for the sums over every leading dimension (``x.T`` of a 3-D ``x`` reversed all its
        axes: a matmul error)."""
        x = self.x
        w = self.W.value
        if (x is not None and grad.__class__ is np.ndarray and x.ndim == 2
                and grad.shape == (x.shape[0], self.fan_out) and grad.dtype == w.dtype
                and grad.flags.c_contiguous):
            # the training step's case, which the checks below pass unchanged: checked once
            self._weight_grads(x, grad)
            return grad @ w.T if input_grad else None
        self._check_backward(x, grad, () if x is None else (*x.shape[:-1], self.fan_out))
        grad = self._in_dtype(grad, w.dtype)  # a float64 dL/dy gave a float64 dL/dx
        if x.ndim != 2:
            x = x.reshape(-1, self.fan_in)
            grad_rows = grad.reshape(-1, self.fan_out)
        else:
            grad_rows = grad
        self._weight_grads(x, grad_rows)
        if not input_grad:
            return None
        return grad @ self.W.value.T

    def _weight_grads(self, x: Array, grad: Array) -> None:
        """``W.grad = x^T g`` and ``b.grad = sum_rows g`` for 2-D ``x`` and ``g``."""
        np.matmul(x.T, grad, out=self.W.grad_buffer())
        if self.b is not None:
            out = self.b.grad_buffer()
            if grad.dtype == np.float32 and grad.shape[0] >= F64_SUMS_FROM:
                # float32 sums down a column of 60000 rows erred by 1e-5 relative (torch 8e-8)
                out[...] = grad.sum(axis=0, dtype=np.float64)
            else:
                k = accel.fits(out, grad)
                if k is None or grad.ndim != 2 or grad.shape[1] == 1:
                    np.sum(grad, axis=0, out=out)  # one column: summed pairwise (contiguous)
                else:
                    k.column_sum(grad, out)  # the same, rows added in order (depthlab.kernels)

    def parameters(self) -> list[Parameter]:
        """``[W, b]`` (``[W]`` without a bias)."""
        return [self.W] if self.b is None else [self.W, self.b]

    def __repr__(self) -> str:
        return (
            f"Dense({self.fan_in}->{self.fan_out}, bias={self.b is not None}, init={self.init!r})"
        )
