"""readmeaudit29: README claims of "Python API" and "PyTorch models" checked against the code."""

from __future__ import annotations

import numpy as np
import pytest

import depthlab as dl


@pytest.mark.parametrize("bad", [None, "shape", "int"], ids=["none", "other_shape", "int_dtype"])
def test_backward_fills_every_grad_even_one_a_user_set_to_none_or_another_array(bad):
    """README: ``net.backward(...)`` -- "every parameter's .grad is filled". A ``p.grad = None``
    (torch's ``zero_grad()`` habit) stayed None after backward (Dense W: ``matmul(out=None)``
    discarded the result; its bias raised 'NoneType' ... item assignment); a grad of another
    shape or an int dtype raised numpy's matmul/cast error."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 4))
    g = rng.normal(size=(5, 3))
    ref = dl.mlp([4, 6, 6, 3], activation="tanh", batchnorm=True, dtype="float64", seed=0)
    ref.forward(x, training=True)
    ref.backward(g)
    net = dl.mlp([4, 6, 6, 3], activation="tanh", batchnorm=True, dtype="float64", seed=0)
    for p in net.parameters():
        if bad is None:
            p.grad = None
        elif bad == "shape":
            p.grad = np.zeros(p.value.shape + (1,))
        else:
            p.grad = np.zeros(p.value.shape, dtype=np.int64)
    net.forward(x, training=True)
    net.backward(g)
    for p, q in zip(net.parameters(), ref.parameters()):
        assert isinstance(p.grad, np.ndarray), p.name
        assert p.grad.shape == p.value.shape and p.grad.dtype == p.value.dtype, p.name
        np.testing.assert_array_equal(p.grad, q.grad, err_msg=p.name)


def test_optimizer_zero_grad_fills_a_grad_the_user_set_to_none_with_zeros():
    """``opt.zero_grad()`` ("fill every .grad with zeros") raised AttributeError 'NoneType'
    object has no attribute 'fill' on a ``p.grad = None``; then ``opt.step()`` is a no-op
    step on zero gradients, as the README's remedy for None ("fill it with zeros") says."""
    net = dl.mlp([3, 4, 2], activation="tanh", dtype="float64", seed=0)
    opt = dl.optimizer("sgd", net.parameters(), lr=0.1)
    before = [p.value.copy() for p in net.parameters()]
    net.parameters()[0].grad = None
    opt.zero_grad()
    for p in net.parameters():
        assert isinstance(p.grad, np.ndarray) and p.grad.shape == p.value.shape
        assert not p.grad.any()
    opt.step()
    for b, p in zip(before, net.parameters()):
        np.testing.assert_array_equal(b, p.value)


def test_backward_after_predict_says_predict_kept_no_forward_for_it():
    """``net.forward(x, training=True)``, then ``net.predict(...)`` (which frees the layers'
    cache), then ``net.backward(g)`` said 'backward called before forward', though forward
    had been called; the message now names predict/calibrate and the remedy."""
    net = dl.mlp([4, 8, 3], activation="tanh", seed=0)
    x = np.random.default_rng(0).normal(size=(2, 4))
    net.forward(x, training=True)
    net.predict(x[:1])
    with pytest.raises(RuntimeError, match=r"before forward.*predict.*net\.forward\(x") as e:
        net.backward(np.ones((2, 3)))
    assert "\n" not in str(e.value)
