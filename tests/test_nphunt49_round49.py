"""Round 49 (nphunt49): NumPy engine regressions (unusual but valid arrays, ...)."""

from __future__ import annotations

import numpy as np
import pytest

import depthlab as dl


def _grads(net: dl.Network, x: np.ndarray, g: np.ndarray, **kw) -> list[np.ndarray]:
    """dL/dx and every parameter's gradient after one forward/backward with dL/dy = ``g``."""
    net.forward(x)
    out = [net.backward(g, **kw)]
    return out + [p.grad.copy() for p in net.parameters()]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid"])
@pytest.mark.parametrize("layout", ["fortran", "strided", "fortran_no_copy"])
def test_backward_gives_the_same_bits_for_any_layout_of_the_gradient(dtype, activation, layout):
    """A Fortran-order (or strided) dL/dy of the same values gave parameter gradients 1 ulp
    off the C-order ones (dL/db summed its columns pairwise instead of row by row)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((9, 6)).astype(dtype)
    g = rng.standard_normal((9, 3)).astype(dtype)
    ref = _grads(dl.mlp([6, 8, 8, 3], activation=activation, seed=0, dtype=dtype), x, g)
    if layout == "strided":
        other, kw = np.repeat(g, 2, axis=1)[:, ::2], {}
    else:
        other = np.asfortranarray(g)
        kw = {"copy": False} if layout == "fortran_no_copy" else {}
    assert not other.flags.c_contiguous
    got = _grads(dl.mlp([6, 8, 8, 3], activation=activation, seed=0, dtype=dtype), x, other,
                 **kw)
    for a, b in zip(ref, got):
        assert a.dtype == b.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(other, g)  # the caller's array is left as it was
