"""The backend's small helpers."""

from __future__ import annotations

import numpy as np
import pytest

from depthlab.backend import ones_vector


def test_ones_vector_is_shared_and_read_only():
    a = ones_vector(5, np.float32)
    b = ones_vector(3000, np.float32)
    assert a.dtype == np.float32 and a.shape == (5,) and np.all(a == 1) and np.all(b == 1)
    with pytest.raises(ValueError):
        a[0] = 2.0
    g = np.random.default_rng(1).standard_normal((6, 4))
    np.testing.assert_allclose(ones_vector(6, np.float64) @ g, g.sum(axis=0), rtol=1e-14)
