"""depthlab.torch.kernels (Numba): the one-pass sums of Watch records on CPU tensors against
float64 NumPy, including float32 squares that underflow and a partial last block."""

from __future__ import annotations

import numpy as np
import pytest

from depthlab.probes import accel

pytestmark = pytest.mark.skipif(not accel.available(), reason="Numba is not installed")


def _wk():
    from depthlab.torch import kernels

    return kernels


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 511, 512, 513, 5000])
@pytest.mark.parametrize("scale", [1.0, 1e-25])
def test_sums_match_float64(dtype, n, scale):
    x = (np.random.default_rng(n).standard_normal(n) * scale).astype(dtype)
    s1, s2, ab = _wk().sums(x)
    d = x.astype(np.float64)
    assert s1 == pytest.approx(d.sum(), rel=1e-5, abs=1e-6 * scale)
    assert s2 == pytest.approx((d * d).sum(), rel=1e-5)  # no underflow at 1e-25 either
    assert ab == pytest.approx(np.abs(d).sum(), rel=1e-5)
    assert s2 > 0


@pytest.mark.parametrize("shape", [(7, 5, 1), (3, 4, 6)])
def test_relu_units_counts_and_live_units(shape):
    rng = np.random.default_rng(1)
    a = np.maximum(rng.standard_normal(shape), 0).astype(np.float32)
    a[:, 2, :] = 0  # a dead unit
    alive = np.zeros(shape[1], dtype=bool)
    s1, s2, z = _wk().relu_units(a, alive)
    d = a.astype(np.float64)
    assert (s1, s2) == pytest.approx((d.sum(), (d * d).sum()), rel=1e-6)
    assert z == int((a <= 0).sum())
    np.testing.assert_array_equal(alive, (a > 0).any(axis=(0, 2)))



@pytest.mark.parametrize("case", ["wide", "nan", "tiny", "float64", "strided"])
def test_relu_units_unit_axis_last(case):
    """The units-on-the-last-axis path (row sums in vector lanes, early-exit live-unit scan)
    against float64 NumPy: more units than one block, NaN entries (alive, not counted as
    inactive), float32 squares that underflow, float64 input, a non-contiguous view."""
    rng = np.random.default_rng(3)
    dtype = np.float64 if case == "float64" else np.float32
    a = np.maximum(rng.standard_normal((9, 1100 if case == "wide" else 37)), 0)
    a[:, 4] = 0  # dead units: one at the start, one in the last block
    a[:, -2] = 0
    a[-1, 5] = 0.5  # alive only in the last row
    a[:, 6] = 0
    if case == "tiny":
        a *= 1e-25
    a = a.astype(dtype)
    if case == "nan":
        a[3, 6] = np.nan  # an otherwise dead unit with a NaN entry is not dead
    if case == "strided":
        a = np.asfortranarray(a)
    alive = np.zeros(a.shape[1], dtype=bool)
    s1, s2, z = _wk().relu_units(a[:, :, None], alive)
    d = a.astype(np.float64)
    if case == "nan":
        assert np.isnan(s1)
    else:
        assert (s1, s2) == pytest.approx((d.sum(), (d * d).sum()), rel=1e-5)
        assert s2 > 0
    assert z == int((a <= 0).sum())
    np.testing.assert_array_equal(alive, ~(a <= 0).all(axis=0))

def test_weight_sums_and_snapshot_refresh():
    rng = np.random.default_rng(2)
    w, g, w0 = (rng.standard_normal(1500).astype(np.float32) for _ in range(3))
    d, e, f = (v.astype(np.float64) for v in (w, g, w0))
    want = (d.sum(), (d * d).sum(), e.sum(), (e * e).sum(), np.abs(e).sum(), (f * f).sum(),
            ((d - f) ** 2).sum())
    got = _wk().weight_sums(w, g, w0, True)
    assert got == pytest.approx(want, rel=1e-5, abs=1e-6)
    np.testing.assert_array_equal(w0, w)  # refreshed for the next record
