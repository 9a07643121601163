"""Input-output Jacobian of a network and its singular values (small networks).

For an example ``x`` with outputs ``y = F(x)`` (logits), ``J[j, i] = dy_j / dx_i``. Row ``j`` is
the input gradient of a backward pass started from the one-hot output gradient ``e_j``. Here
the ``n_outputs`` backward passes for ``k`` examples run as one pass over the batch of each
example repeated ``n_outputs`` times with the one-hot gradients stacked (the same arithmetic).

The pass is in inference mode (dropout off, batch norm on its inference statistics): in
training mode batch norm couples the examples of a batch, so a per-example Jacobian is not
defined. Parameter gradients and layer caches are overwritten; parameter values and batch-norm
statistics are not changed.
"""

from __future__ import annotations

import numpy as np

from ..backend import Array, xp
from ..memory import batch_bytes, check_fits
from ..network import Network


def jacobian_bytes(net: Network, k: int) -> int:
    """Memory of the Jacobians of ``k`` examples: ``r = k * n_outputs`` backward rows, i.e.
    :func:`~depthlab.memory.batch_bytes` of ``r`` rows plus the repeated inputs and the
    one-hot seeds (``r * (n_inputs + n_outputs) * itemsize``) and the float64 Jacobians the
    singular values are computed from (``r * n_inputs * 8``)."""
    rows = int(k) * int(net.n_outputs)
    item = np.dtype(net.dtype).itemsize
    return (batch_bytes(net, rows) + rows * (int(net.n_inputs) + int(net.n_outputs)) * item
            + rows * int(net.n_inputs) * 8)


def check_jacobian(net: Network, k: int, what: str = "input_output_jacobian") -> None:
    """Refuse (:class:`~depthlab.memory.MemoryRefusal`, one line) the Jacobians of ``k``
    examples when :func:`jacobian_bytes` cannot fit, naming the examples and outputs whose
    product is the batch (a 784-4096-4096 network's 64 examples: 262,144 rows, ~28 GiB)."""
    rows = int(k) * int(net.n_outputs)
    check_fits(jacobian_bytes(net, k),
               f"{what} of {int(k):,} examples x {int(net.n_outputs):,} outputs ({rows:,} "
               "backward rows through the network; fewer examples)")


def input_output_jacobian(net: Network, x: Array) -> np.ndarray:
    """Jacobians ``J_e = dF(x_e)/dx_e`` of shape ``(k, n_outputs, n_inputs)`` for the ``k`` rows
    of ``x``, in the network's dtype."""
    if not isinstance(net, Network):
        raise TypeError(f"net must be a depthlab Network, got {type(net).__name__}")
    x = xp.asarray(x)
    if x.ndim == 1:
        x = x.reshape(1, -1)
    if x.ndim != 2 or x.shape[1] != net.n_inputs:
        raise ValueError(f"x has shape {x.shape}; expected (k, {net.n_inputs})")
    k, n_out = x.shape[0], net.n_outputs
    check_jacobian(net, k)
    xr = np.repeat(x.astype(net.dtype, copy=False), n_out, axis=0)
    with np.errstate(all="ignore"):
        out = net.forward(xr, training=False)
        if out.shape != (k * n_out, n_out):
            raise ValueError(
                f"network output shape {out.shape} is not (batch, {n_out}); "
                "a Jacobian needs a 2-D output"
            )
        seed = np.tile(np.eye(n_out, dtype=net.dtype), (k, 1))
        dx = net.backward(seed, input_grad=True, copy=False)
    net.clear_cache()
    return np.asarray(dx).reshape(k, n_out, net.n_inputs)


def jacobian_singular_values(net: Network, x: Array) -> np.ndarray:
    """Singular values (descending, float64) of each example's input-output Jacobian:
    shape ``(k, min(n_outputs, n_inputs))``; computed with ``numpy.linalg.svd``."""
    jac = input_output_jacobian(net, x).astype(np.float64)
    if not np.all(np.isfinite(jac)):
        return np.full((jac.shape[0], min(jac.shape[1:])), np.nan)
    return np.linalg.svd(jac, compute_uv=False)
