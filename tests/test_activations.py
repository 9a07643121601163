"""Activation functions: values and gradients against PyTorch and finite differences,
stability, dtype handling, registry errors and the max_derivative / taylor metadata."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch  # a dev dependency: required, never skipped

from depthlab.activations import ACTIVATIONS, ActivationFn, get_activation

F = torch.nn.functional


def _pen_tanh(a):
    return lambda x: torch.where(x > 0, torch.tanh(x), a * torch.tanh(x))


# (name, kwargs, torch reference, has a kink at 0)
CASES = [
    ("sigmoid", {}, torch.sigmoid, False),
    ("tanh", {}, torch.tanh, False),
    ("identity", {}, lambda x: x.clone(), False),
    ("step", {}, lambda x: (x > 0).to(x.dtype) + 0 * x, True),
    ("relu", {}, F.relu, True),
    ("leaky_relu", {}, lambda x: F.leaky_relu(x, 0.01), True),
    ("leaky_relu", {"negative_slope": 0.2}, lambda x: F.leaky_relu(x, 0.2), True),
    ("leaky_relu", {"negative_slope": 1.5}, lambda x: F.leaky_relu(x, 1.5), True),
    ("leaky_relu", {"negative_slope": -0.5}, lambda x: F.leaky_relu(x, -0.5), True),
    ("elu", {}, F.elu, False),
    ("elu", {"alpha": 2.0}, lambda x: F.elu(x, alpha=2.0), True),
    ("selu", {}, F.selu, True),
    ("swish", {}, F.silu, False),
    ("swish", {"beta": 1.7}, lambda x: x * torch.sigmoid(1.7 * x), False),
    ("softmax", {}, lambda x: torch.softmax(x, dim=-1), False),
    ("softsign", {}, F.softsign, False),
    ("gelu", {}, lambda x: F.gelu(x, approximate="none"), False),
    ("mish", {}, F.mish, False),
    ("penalized_tanh", {}, _pen_tanh(0.25), True),
    ("penalized_tanh", {"a": 0.5}, _pen_tanh(0.5), True),
    ("softplus", {}, F.softplus, False),
    ("softplus", {"beta": 2.0, "threshold": 5.0}, lambda x: F.softplus(x, 2.0, 5.0), False),
    ("logsigmoid", {}, F.logsigmoid, False),
    ("hardtanh", {}, F.hardtanh, False),
    ("hardtanh", {"min_val": -2.0, "max_val": 0.5}, lambda x: F.hardtanh(x, -2.0, 0.5), False),
    ("relu6", {}, F.relu6, True),
    ("hardsigmoid", {}, F.hardsigmoid, False),
    ("hardswish", {}, F.hardswish, False),
]
IDS = [n + "".join(f"-{k}={v}" for k, v in kw.items()) for n, kw, _, _ in CASES]


def _assert_rel(actual, expected, rtol, atol=0.0, what=""):
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, what
    err = np.abs(actual - expected)
    bound = rtol * np.abs(expected) + atol
    bad = err > bound
    assert not bad.any(), (
        f"{what}: {bad.sum()} elements off, worst at input index {np.argmax(err - bound)}: "
        f"got {actual.ravel()[np.argmax(err - bound)]!r}, "
        f"expected {expected.ravel()[np.argmax(err - bound)]!r}"
    )


def _inputs(seed: int) -> np.ndarray:
    """Rows of N(0,1), saturated |x| in [5, 30] of both signs, and exact zeros."""
    g = np.random.default_rng(seed)
    near = g.standard_normal((16, 24))
    sat = g.uniform(5.0, 30.0, (16, 24)) * g.choice([-1.0, 1.0], (16, 24))
    x = np.concatenate([near, sat])
    x[::7, ::5] = 0.0
    return x


def _torch_value_and_grad(tfn, x: np.ndarray, g: np.ndarray):
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    yt = tfn(xt)
    (gx,) = torch.autograd.grad(yt, xt, grad_outputs=torch.tensor(g, dtype=torch.float64))
    return yt.detach().numpy(), gx.numpy()


def test_registry_lists_every_activation():
    expected = {
        "sigmoid", "tanh", "identity", "step", "relu", "leaky_relu", "elu", "selu", "swish",
        "softmax", "softsign", "gelu", "mish", "penalized_tanh", "softplus", "logsigmoid",
        "hardtanh", "relu6", "hardsigmoid", "hardswish",
    }
    assert set(ACTIVATIONS) == expected
    assert {c[0] for c in CASES} == expected


@pytest.mark.parametrize("name,kwargs,tfn,kink", CASES, ids=IDS)
def test_forward_and_backward_match_torch(name, kwargs, tfn, kink):
    f = get_activation(name, **kwargs)
    x = _inputs(1)
    g = np.random.default_rng(2).standard_normal(x.shape)
    ref_y, ref_gx = _torch_value_and_grad(tfn, x, g)
    a = f.forward(x.copy())
    _assert_rel(a, ref_y, 1e-10, 1e-14, f"{name} forward")
    gx = f.backward(x, a, g.copy())
    _assert_rel(gx, ref_gx, 1e-10, 1e-14, f"{name} backward")
    if f.elementwise:
        ones = np.ones_like(x)
        _, ref_d = _torch_value_and_grad(tfn, x, ones)
        _assert_rel(f.derivative(x, a), ref_d, 1e-10, 1e-14, f"{name} derivative")
        # backward is grad_a * f'(s)
        _assert_rel(gx, g * f.derivative(x, a), 1e-12, 1e-300, f"{name} backward vs derivative")
    else:  # softmax: derivative is the Jacobian diagonal a (1 - a)
        _assert_rel(f.derivative(x, a), ref_y * (1 - ref_y), 1e-10, 1e-14, "softmax diagonal")


def test_kink_conventions_match_torch():
    zero = np.zeros(3)
    assert np.all(get_activation("relu").derivative(zero, zero) == 0.0)
    assert np.all(get_activation("leaky_relu", negative_slope=0.3).derivative(zero, zero) == 0.3)
    assert np.all(get_activation("elu", alpha=2.0).derivative(zero, zero) == 2.0)
    assert np.all(get_activation("step").derivative(zero, zero) == 0.0)
    assert np.all(get_activation("penalized_tanh", a=0.25).derivative(zero, zero) == 0.25)
    selu = get_activation("selu")
    assert np.allclose(selu.derivative(zero, zero), selu.max_derivative, rtol=1e-15)


def _fd_check(f: ActivationFn, x: np.ndarray, g: np.ndarray, what: str, h: float = 1e-6):
    """Central finite differences of sum(g * f(x)) against backward (float64)."""
    a = f.forward(x)
    an = f.backward(x, a, g.copy())
    if f.elementwise:
        fd = g * (f.forward(x + h) - f.forward(x - h)) / (2 * h)
        fscale = np.maximum(1.0, np.abs(a))
    else:  # row-wise function: perturb one entry at a time
        fd = np.empty_like(x)
        for idx in np.ndindex(*x.shape):
            xp_, xm_ = x.copy(), x.copy()
            xp_[idx] += h
            xm_[idx] -= h
            fd[idx] = np.sum(g * (f.forward(xp_) - f.forward(xm_))) / (2 * h)
        fscale = np.maximum(1.0, np.abs(g).sum(axis=-1, keepdims=True)) * np.ones_like(x)
    # relative error 1e-6 plus the round-off floor of a central difference (~eps |f| / h)
    _assert_rel(an, fd, 1e-6, 1e-9 * fscale, what)


@pytest.mark.parametrize("name,kwargs,tfn,kink", CASES, ids=IDS)
def test_finite_differences_near_zero_and_saturated(name, kwargs, tfn, kink):
    f = get_activation(name, **kwargs)
    r = np.random.default_rng(3)
    shape = (6, 7) if not f.elementwise else (40, 50)
    near = r.standard_normal(shape)
    if kink:  # keep central differences off the kink at 0
        near = np.where(np.abs(near) < 1e-3, 1e-3 * np.sign(near) + 1e-3, near)
        near[near == 0] = 0.5
    sat = r.uniform(5.0, 30.0, shape) * r.choice([-1.0, 1.0], shape)
    for x, regime in ((near, "near zero"), (sat, "saturated")):
        g = r.standard_normal(shape)
        _fd_check(f, x, g, f"{name} {regime}")


@pytest.mark.parametrize("name", ACTIVATIONS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_stable_finite_and_dtype_preserving_at_large_inputs(name, dtype):
    f = get_activation(name)
    x = np.array([[-1000.0, -100.0, -30.0, -1.0, 0.0, 1.0, 30.0, 100.0, 1000.0]], dtype=dtype)
    x = np.concatenate([x, -x, np.full_like(x, 1000.0), np.full_like(x, -1000.0)])
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error")
        a = f.forward(x)
        d = f.derivative(x, a)
        grad = f.backward(x, a, np.ones_like(x))
    for arr, what in ((a, "forward"), (d, "derivative"), (grad, "backward")):
        assert arr.dtype == dtype, f"{name} {what}: {arr.dtype} from {np.dtype(dtype)} input"
        assert arr.shape == x.shape
        assert np.all(np.isfinite(arr)), f"{name} {what} not finite: {arr}"


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_float32_stays_float32_with_random_inputs(name):
    f = get_activation(name)
    r = np.random.default_rng(4)
    x = r.standard_normal((32, 10)).astype(np.float32)
    g = r.standard_normal((32, 10)).astype(np.float32)
    a = f.forward(x)
    assert a.dtype == np.float32
    out = f.backward(x, a, g.copy())
    assert out.dtype == np.float32
    # float32 results agree with the float64 computation
    x64 = x.astype(np.float64)
    a64 = f.forward(x64)
    np.testing.assert_allclose(a, a64, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out, f.backward(x64, a64, g.astype(np.float64)), rtol=1e-4,
                               atol=1e-5)


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_backward_leaves_inputs_untouched(name):
    f = get_activation(name)
    r = np.random.default_rng(5)
    x = r.standard_normal((8, 6))
    a = f.forward(x)
    x0, a0 = x.copy(), np.array(a, copy=True)
    f.backward(x, a, r.standard_normal(x.shape))
    f.derivative(x, a)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(a, a0)


def test_hot_path_backward_works_in_place():
    x = np.random.default_rng(6).standard_normal((5, 4)).astype(np.float32)
    for name in ("sigmoid", "tanh", "relu"):
        f = get_activation(name)
        g = np.ones_like(x)
        out = f.backward(x, f.forward(x), g)
        assert out is g and out.dtype == np.float32


MAXD_CASES = [(n, {}) for n in ACTIVATIONS] + [
    ("leaky_relu", {"negative_slope": 1.5}),
    ("leaky_relu", {"negative_slope": -2.0}),
    ("elu", {"alpha": 2.0}),
    ("swish", {"beta": 3.0}),
    ("swish", {"beta": -0.5}),
    ("penalized_tanh", {"a": -2.0}),
]


@pytest.mark.parametrize("name,kwargs", MAXD_CASES)
def test_max_derivative_is_the_numerical_sup(name, kwargs):
    f = get_activation(name, **kwargs)
    grid = np.concatenate([np.linspace(-60.0, 60.0, 1_200_001), [0.0, -1e-12, 1e-12]])
    if f.elementwise:
        d = f.derivative(grid, f.forward(grid))
    else:  # softmax of (t, 0): the largest Jacobian entry is the diagonal at a = 1/2
        s = np.stack([grid, np.zeros_like(grid)], axis=-1)
        d = f.derivative(s, f.forward(s))
    sup = float(np.max(np.abs(d)))
    assert abs(sup - f.max_derivative) <= 1e-3 * max(1.0, f.max_derivative), (name, sup)


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_taylor_coefficients_match_numerical_derivatives(name):
    f = get_activation(name)
    if f.taylor is None:
        return
    zero = np.zeros(1)
    c = f.taylor
    assert abs(f.forward(zero)[0] - c[0]) < 1e-12
    assert abs(f.derivative(zero, f.forward(zero))[0] - c[1]) < 1e-12
    h = 1e-3
    pts = np.array([-2 * h, -h, 0.0, h, 2 * h])
    d = f.derivative(pts, f.forward(pts))
    if len(c) > 2:  # f''(0)/2 and f'''(0)/6 from differences of f'
        assert abs((d[3] - d[1]) / (2 * h) / 2 - c[2]) < 1e-5
    if len(c) > 3:
        assert abs((d[3] - 2 * d[2] + d[1]) / h**2 / 6 - c[3]) < 1e-5


def test_sigmoid_linear_regime_is_quarter_slope():
    sig = get_activation("sigmoid")
    assert sig.taylor[:2] == (0.5, 0.25)
    assert get_activation("tanh").taylor[:2] == (0.0, 1.0)


def test_unknown_name_message_lists_choices():
    with pytest.raises(ValueError, match=r"unknown activation 'foo'; expected one of: .*relu"):
        get_activation("foo")
    with pytest.raises(TypeError, match="activation"):
        get_activation(3)


def test_unknown_kwarg_is_named():
    with pytest.raises(TypeError, match="'slope'"):
        get_activation("leaky_relu", slope=0.1)
    with pytest.raises(TypeError, match="'alpha'"):
        get_activation("relu", alpha=1.0)
    with pytest.raises(TypeError):
        get_activation(get_activation("relu"), alpha=1.0)


def test_bad_parameter_values():
    with pytest.raises(TypeError, match="alpha"):
        get_activation("elu", alpha="big")
    with pytest.raises(ValueError, match="beta"):
        get_activation("swish", beta=math.nan)


def test_instances_pass_through_and_expose_params():
    f = get_activation("leaky_relu", negative_slope=0.2)
    assert get_activation(f) is f
    assert f.params == {"negative_slope": 0.2}
    assert "0.2" in repr(f) and "LeakyReLU" in repr(f)
    assert get_activation("Leaky-ReLU", negative_slope=0.2) == f
    assert get_activation("silu") == get_activation("swish")
    assert get_activation("logistic").name == "sigmoid"
    assert get_activation("elu", alpha=2).params == {"alpha": 2.0}
    assert isinstance(get_activation("elu", alpha=np.float64(2)).alpha, float)
    for name in ACTIVATIONS:
        f = get_activation(name)
        assert f.name == name
        assert isinstance(f.params, dict)
        assert repr(f).endswith(")")


def test_selu_constants_match_torch():
    selu = get_activation("selu")
    x = np.linspace(-5, 5, 101)
    ref = torch.nn.SELU()(torch.tensor(x, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(selu.forward(x), ref, rtol=1e-15, atol=1e-15)
