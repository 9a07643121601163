"""The layer protocol shared by every layer."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..backend import Array, _torch_values, xp
from ..parameter import Parameter


class Layer:
    """A differentiable map ``y = f(x)`` with an explicit backward pass.

    * ``forward(x, training)`` caches what ``backward`` needs (references, not copies).
    * ``backward(grad_y, input_grad=True)`` returns ``dL/dx`` and overwrites ``p.grad`` of
      every parameter. It may overwrite ``grad_y`` in place unless ``overwrites_grad`` is
      False. With ``input_grad=False`` a layer may skip computing ``dL/dx`` (returns None).
    * ``parameters()`` lists trainable parameters in forward order.
    * ``keeps_grad``: the array ``backward`` returns is also kept by the layer (an
      Activation's ``grad_s``, which the probes read), so whoever receives it must not
      overwrite it in place (``Sequential`` hands a copy to a layer that ``overwrites_grad``).
    """

    overwrites_grad: bool = True
    keeps_grad: bool = False
    name: str = "layer"

    def forward(self, x: Array, training: bool = True) -> Array:
        """``y = f(x)`` for a batch ``x`` of shape ``(batch, features)``; ``training`` selects
        batch statistics and dropout masks (True) or the inference behaviour (False). Caches
        what :meth:`backward` needs."""
        raise NotImplementedError

    def backward(self, grad: Array, input_grad: bool = True) -> Array | None:
        """``dL/dx = dL/dy * dy/dx`` for ``grad = dL/dy`` of the last :meth:`forward`; fills
        ``p.grad = dL/dp`` of every parameter (overwritten, not accumulated). ``None`` when
        ``input_grad=False`` lets the layer skip ``dL/dx``."""
        raise NotImplementedError

    def parameters(self) -> list[Parameter]:
        """The layer's trainable parameters in forward order (none here)."""
        return []

    def leaves(self) -> Iterator[Layer]:
        """Leaf layers in forward order (containers yield their children)."""
        yield self

    def _as_input(self, x: Any) -> Array:
        """``x`` as an array (nested lists too, as ``Dense`` and torch's tensors take them);
        anything but numbers is one TypeError naming the layer and the dtype (a list was
        "'list' object has no attribute 'ndim'"). Integers and booleans come as float64
        (NumPy's float of an integer: ``np.tanh`` of ints; torch's float ops promote them
        too): a standalone ``Dropout``, ``AlphaDropout`` or ``Activation("sigmoid")`` given
        integers was NumPy's "Cannot cast ufunc 'divide' output from dtype('float64') to
        dtype('int64')", ``Activation("tanh")`` of booleans float16."""
        if isinstance(x, xp.ndarray) and x.dtype.kind not in "iub":
            return x
        arr = xp.asarray(_torch_values(x))  # a tensor: its values (detached, on the host)
        if arr.dtype.kind not in "fiub":
            raise TypeError(f"{self.name}: input of dtype {arr.dtype} is not accepted; "
                            "accepted: an array (or nested lists) of numbers")
        if arr.dtype.kind in "iub":
            arr = arr.astype(xp.float64)
        return arr

    def _in_dtype(self, x: Array, dtype: Any) -> Array:
        """``x`` in the layer's parameter ``dtype`` (no copy when it already is): a layer with
        parameters computes in their dtype, as a ``Network`` casts its input to its own. A
        float64 array (NumPy's default, nested lists) in a float32 ``BatchNorm`` failed in
        backward ("could not be cast from dtype('float64') to dtype('float32') ... 'safe'");
        a float32 ``Dense`` returned float64 outputs and gradients (a silent upcast). Only
        real numbers are cast (a complex input would lose its imaginary part). The result is
        C-contiguous (copied only when ``x`` is not), so the sums over the batch run in one
        order whatever the caller's layout (a Fortran-order input of a ``BatchNorm`` gave its
        output 1 ulp off the C-order one)."""
        if x.dtype == dtype:
            return x if x.flags.c_contiguous else xp.ascontiguousarray(x)
        if x.dtype.kind not in "fiub":
            raise TypeError(f"{self.name}: input of dtype {x.dtype} is not accepted; "
                            "accepted: an array (or nested lists) of real numbers")
        return x.astype(dtype, order="C")

    def _check_backward(self, cached: Array | None, grad: Array, shape: tuple[int, ...]) -> None:
        """One clear line when :meth:`backward` cannot run: no forward pass cached (``cached``
        None: before any forward, or after an inference pass freed it) or ``grad`` not of the
        forward output's ``shape`` (NumPy's words were "'NoneType' object has no attribute
        'ndim'" or a matmul/einsum signature message)."""
        if cached is None:
            raise RuntimeError(f"{self.name}: backward() called before forward(): no forward "
                               "pass is cached; call forward(x) (training=True) first")
        got = getattr(grad, "shape", None)
        if got != shape:
            got = f"{type(grad).__name__}" if got is None else f"shape {got}"
            raise ValueError(f"{self.name}: backward(grad) got a gradient of {got}; expected "
                             f"the forward output's shape {shape}")

    def cached_input(self) -> Array | None:
        """The input seen by the last forward pass (None before any)."""
        return getattr(self, "x", None)

    def clear_cache(self) -> None:
        """Drop cached arrays (memory) after an inference-only pass."""
        for attr in ("x", "s", "a", "grad_s", "xhat", "mask"):
            if hasattr(self, attr):
                setattr(self, attr, None)

    def calibrate(self, x: Array) -> Array:
        """Inference pass used to compute whole-training-set batch-norm statistics."""
        y = self.forward(x, training=False)
        self.clear_cache()
        return y

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"
