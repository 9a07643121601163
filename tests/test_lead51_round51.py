"""The lead's regression tests of round 51."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from helpers.kernels import load_engine_kernels

from depthlab import accel
from depthlab.losses import CrossEntropy


@pytest.mark.parametrize("path", ["kernels", "numpy"])
def test_a_label_changed_between_forward_and_backward_is_an_index_error_not_a_stray_write(
        path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression (review51): the compiled cross-entropy backward wrote ``g[i, y[i]]`` for the
    cached labels without a bounds check; the cache holds the caller's own intp array, so a label
    changed in place after forward (to 99 for 10 classes) wrote outside the gradient (the NumPy
    path raises IndexError)."""
    if path == "kernels":
        pytest.importorskip("numba")
        load_engine_kernels(monkeypatch)
    rng = np.random.default_rng(0)
    z = rng.standard_normal((6, 10)).astype(np.float32)
    y = rng.integers(0, 10, 6).astype(np.intp)
    loss = CrossEntropy()
    with accel.numpy_only() if path == "numpy" else contextlib.nullcontext():
        loss.forward(z, y)
        assert np.isfinite(loss.backward()).all()
        loss.forward(z, y)
        y[2] = 99
        with pytest.raises(IndexError):
            loss.backward()
