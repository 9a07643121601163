"""Round 42 (layerhunt42): a layer computes in its parameters' dtype whatever the input's.

A float32 ``BatchNorm`` (the default dtype) fed a float64 array (NumPy's default, nested
lists) failed in backward with NumPy's "Iterator requested dtype could not be cast from
dtype('float64') to dtype('float32') ... 'safe'", and a float32 ``Dense`` returned float64
outputs and input gradients: a silent upcast. torch's modules refuse a dtype mismatch; the
network casts its input to its dtype, and so does each layer with parameters now."""

from __future__ import annotations

import numpy as np
import pytest

from depthlab.layers import BatchNorm, Dense, Sequential


def _make(kind: str, dtype: str):
    if kind == "bn":
        return BatchNorm(4, dtype=dtype)
    if kind == "dense":
        return Dense(4, 4, rng=0, dtype=dtype, bias_init="fan_in_uniform")
    return Sequential([Dense(4, 4, rng=0, dtype=dtype), BatchNorm(4, dtype=dtype)])


@pytest.mark.parametrize("kind", ["bn", "dense", "seq"])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("in_dtype", [np.float64, np.float16, "list"])
def test_float32_layer_keeps_float32_for_other_inputs(kind, training, in_dtype):
    x = np.random.default_rng(1).normal(size=(5, 4))
    g = np.random.default_rng(2).normal(size=(5, 4)).astype(np.float32)
    layer, ref = _make(kind, "float32"), _make(kind, "float32")
    xin = x.tolist() if in_dtype == "list" else x.astype(in_dtype)
    x32 = (x if in_dtype == "list" else x.astype(in_dtype)).astype(np.float32)
    y = layer.forward(xin, training)
    dx = layer.backward(g.copy())
    y_ref = ref.forward(x32, training)
    dx_ref = ref.backward(g.copy())
    assert y.dtype == np.float32 and dx.dtype == np.float32
    np.testing.assert_array_equal(y, y_ref)  # the same as the input cast first
    np.testing.assert_array_equal(dx, dx_ref)
    for p, q in zip(layer.parameters(), ref.parameters()):
        assert p.grad.dtype == np.float32
        np.testing.assert_array_equal(p.grad, q.grad)


def test_float64_layer_takes_float32_input_in_float64():
    """The rule is the layer's dtype, both ways: a float64 BatchNorm given float32 rows
    computes (and returns) float64."""
    x = np.random.default_rng(3).normal(size=(6, 4)).astype(np.float32)
    bn = BatchNorm(4, dtype="float64")
    y = bn.forward(x)
    dx = bn.backward(np.ones((6, 4)))
    assert y.dtype == dx.dtype == bn.gamma.grad.dtype == np.float64
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(y, (x64 - x64.mean(0)) / np.sqrt(x64.var(0) + 1e-5), rtol=1e-12)


@pytest.mark.parametrize("kind", ["bn", "dense"])
def test_complex_input_is_one_clear_type_error(kind):
    """Casting to the layer's dtype must not drop an imaginary part (NumPy's ComplexWarning):
    a complex input is refused, naming the layer and the dtype."""
    layer = _make(kind, "float32")
    with pytest.raises(TypeError, match="complex128 is not accepted"):
        layer.forward(np.ones((3, 4)) * (1 + 1j))


def test_standardize_built_from_statistics_returns_its_dtype():
    """``Standardize(mean32, std32)`` (no float64 statistics from ``fit``) returned float64
    for float64 rows; now float32, the float64 result rounded once."""
    from depthlab.layers import Standardize

    mean, std = np.array([1.0, -2.0], np.float32), np.array([0.5, 3.0], np.float32)
    layer = Standardize(mean, std)
    x = np.random.default_rng(4).normal(size=(5, 2))
    y = layer.forward(x)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, ((x - mean.astype(np.float64)) / std).astype(np.float32))
    assert layer.backward(np.ones((5, 2), np.float32)).dtype == np.float32


@pytest.mark.parametrize("kind", ["bn", "dense", "seq"])
def test_float64_gradient_into_float32_layer(kind):
    """A float64 dL/dy (a loss computed in float64) into a float32 layer: BatchNorm's
    backward failed (NumPy's 'safe' cast), Dense returned a float64 dL/dx."""
    x = np.random.default_rng(5).normal(size=(5, 4)).astype(np.float32)
    g = np.random.default_rng(6).normal(size=(5, 4))
    layer, ref = _make(kind, "float32"), _make(kind, "float32")
    layer.forward(x)
    ref.forward(x)
    dx, dx_ref = layer.backward(g.copy()), ref.backward(g.astype(np.float32))
    assert dx.dtype == np.float32
    np.testing.assert_array_equal(dx, dx_ref)
    for p, q in zip(layer.parameters(), ref.parameters()):
        np.testing.assert_array_equal(p.grad, q.grad)
