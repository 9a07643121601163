"""Round 49 (lead): a saved network whose arrays were rewritten big-endian loads and predicts as
the native one (nphunt49's finding in persist.py)."""

from __future__ import annotations

import numpy as np
import pytest

import depthlab as dl


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_big_endian_npz_loads_as_the_native_one(tmp_path, dtype):
    net = dl.mlp([5, 8, 8, 3], activation="relu", seed=0, dtype=dtype, batchnorm=True)
    x = np.random.default_rng(0).standard_normal((40, 5)).astype(dtype)
    net.calibrate(x)
    path = tmp_path / "m.npz"
    dl.save(net, path)
    with np.load(path, allow_pickle=False) as z:
        swapped = {k: (v.astype(v.dtype.newbyteorder(">")) if v.dtype.kind == "f" else v)
                   for k, v in z.items()}
    assert any(v.dtype.byteorder == ">" for v in swapped.values())
    other = tmp_path / "be.npz"
    np.savez(other, **swapped)
    a, b = dl.load(path), dl.load(other)
    assert all(q.value.dtype == np.dtype(dtype) and q.value.dtype.isnative for q in b.parameters())
    np.testing.assert_array_equal(a.predict(x), b.predict(x))
