"""theoryhunt52 (round 52): regression tests for bugs found probing the NumPy engine's public
API, theory and probes with inputs earlier rounds did not try."""

from __future__ import annotations

import math

import numpy as np
import pytest

from depthlab.theory.meanfield import (
    c_map,
    gradient_growth,
    length_map_slope,
    meanfield,
    q_map,
    slope_chi1,
)
from depthlab.theory.variance import propagate


@pytest.mark.parametrize("name", ["tanh", "relu", "selu", "gelu", "sigmoid", "step"])
@pytest.mark.parametrize("sigma_b2", [0.0, 0.3, 1e-30])
def test_meanfield_accepts_zero_weight_variance(name: str, sigma_b2: float) -> None:
    # sigma_w2 = 0: every unit outputs its bias, q* = sigma_b2 and no gradient passes back
    # (chi1 = 0); meanfield refused it ("must be finite and > 0") while propagate accepts a
    # weight variance of 0 and predicts exactly that
    m = meanfield(name, 0.0, sigma_b2)
    assert m.q_star == sigma_b2 and m.converged
    assert (m.chi1, m.chi_c, m.chi_q) == (0.0, 0.0, 0.0)
    assert m.c_star == 1.0 and m.phase == "ordered"
    assert (m.xi_c, m.xi_q, m.trainable_depth) == (0.0, 0.0, 0.0)
    assert slope_chi1(name, 0.0, sigma_b2) == 0.0
    assert length_map_slope(name, 0.0, sigma_b2) == 0.0
    assert q_map(name, 2.0, 0.0, sigma_b2) == sigma_b2
    assert gradient_growth(name, 0.0, sigma_b2, 5) == 0.0
    rows = propagate([16, 16, 16, 16], name, init=0.0, bias_var=sigma_b2)
    assert np.allclose(rows["pre_var"].iloc[1:], sigma_b2, rtol=0, atol=0)


def test_meanfield_zero_weights_correlation_and_refusals() -> None:
    assert c_map("tanh", 0.2, 0.0, 0.3) == pytest.approx(1.0, rel=1e-14)  # all outputs = b
    for bad in (-1e-12, math.inf, math.nan):
        with pytest.raises(ValueError, match=r"sigma_w2 must be finite and >= 0"):
            meanfield("tanh", bad)


@pytest.mark.parametrize("norm_type", [-1.0, -2.0, -math.inf, 0.0, 0.5])
def test_clip_grad_norm_negative_order_matches_torch_without_warning(norm_type: float) -> None:
    # a zero gradient entry with a negative norm_type: NumPy's |x| ** p divided by zero and
    # clip_grad_norm_ leaked a RuntimeWarning (an error under -W error); torch warns nothing
    import warnings

    torch = pytest.importorskip("torch")
    from depthlab.optimizers import clip_grad_norm_
    from depthlab.parameter import Parameter

    rng = np.random.default_rng(3)
    grads = [rng.standard_normal((3, 4)), rng.standard_normal(5), np.zeros(2)]
    grads[0][0, 0] = 0.0
    ours = [Parameter("w", np.zeros_like(g)) for g in grads]
    theirs = [torch.nn.Parameter(torch.zeros(g.shape, dtype=torch.float64)) for g in grads]
    for p, t, g in zip(ours, theirs, grads):
        p.grad, t.grad = g.copy(), torch.tensor(g)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        total = clip_grad_norm_(ours, 1.5, norm_type=norm_type)
    expected = torch.nn.utils.clip_grad_norm_(theirs, 1.5, norm_type=norm_type).item()
    assert total == pytest.approx(expected, rel=1e-12, abs=0.0)
    for p, t in zip(ours, theirs):
        np.testing.assert_allclose(p.grad, t.grad.numpy(), rtol=1e-12, atol=0.0)


@pytest.mark.parametrize("name", ["softsign", "gelu"])
@pytest.mark.parametrize(("dtype", "big"), [(np.float32, 1e20), (np.float64, 1e160)])
def test_activation_derivative_at_huge_inputs_matches_torch_without_warning(
        name: str, dtype: type, big: float) -> None:
    # an exploding network's pre-activations past sqrt(max float) (1.9e19 in float32):
    # softsign's (1 + |s|)^2 and gelu's s^2 overflowed to inf (the right f' = 0 or Phi(s))
    # with a RuntimeWarning per forward/backward, an error under -W error
    import warnings

    torch = pytest.importorskip("torch")
    from depthlab.activations import get_activation

    fn = get_activation(name)
    s = np.array([[big, -big, 3.0 * big], [0.5, -2.0, 3.0]], dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        a = fn.forward(s.copy())
        d = fn.derivative(s.copy(), a.copy())
        g = fn.backward(s.copy(), a.copy(), np.ones_like(s))
    ts = torch.tensor(s, requires_grad=True)
    ta = getattr(torch.nn.functional, name)(ts)
    ta.backward(torch.ones_like(ta))
    tol = 1e-6 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(a, ta.detach().numpy(), rtol=tol, atol=0.0)
    np.testing.assert_allclose(d, ts.grad.numpy(), rtol=tol, atol=0.0)
    np.testing.assert_allclose(g, ts.grad.numpy(), rtol=tol, atol=0.0)
    assert a.dtype == d.dtype == g.dtype == np.dtype(dtype)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_regression_losses_at_huge_float32_differences_without_warning(reduction: str) -> None:
    # |pred - target| >= 1.9e19 in float32 (a diverging regression net): smooth_l1_loss
    # squared every difference before choosing the linear branch and mse(reduction="none")
    # squared into inf, each with an 'overflow' RuntimeWarning (an error under -W error)
    import warnings

    torch = pytest.importorskip("torch")
    from depthlab.losses import MSE, SmoothL1Loss

    rng = np.random.default_rng(5)
    pred = (rng.standard_normal((4, 3)) * 1e20).astype(np.float32)
    pred[0, 0] = 0.25  # one element on the quadratic side
    target = np.zeros((4, 3), np.float32)
    up = rng.standard_normal((4, 3)).astype(np.float32) if reduction == "none" else None
    tp = torch.tensor(pred.astype(np.float64), requires_grad=True)
    for loss, tfn in ((SmoothL1Loss(reduction=reduction, beta=0.5),
                       lambda a, b: torch.nn.functional.smooth_l1_loss(
                           a, b, reduction=reduction, beta=0.5)),
                      (MSE(reduction=reduction), None)):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            value = loss.forward(pred.copy(), target)
            grad = loss.backward(up) if up is not None else loss.backward()
        if tfn is None:  # mse: float32 squares past the range are inf (torch's too)
            if reduction == "none":
                too_big = pred.astype(np.float64) ** 2 > np.finfo(np.float32).max
                assert value.dtype == np.float32 and too_big.any()
                np.testing.assert_array_equal(np.isinf(value), too_big)
            continue
        tv = tfn(tp, torch.zeros(4, 3, dtype=torch.float64))
        tv.backward(torch.tensor(up, dtype=torch.float64) if up is not None else None)
        np.testing.assert_allclose(value, tv.detach().numpy(), rtol=1e-6)
        np.testing.assert_allclose(grad, tp.grad.numpy(), rtol=1e-6)
        tp.grad = None


@pytest.mark.parametrize("momentum", [0.0, 0.5])
@pytest.mark.parametrize(("dtype", "big"), [(np.float32, 1e30), (np.float64, 1e160)])
def test_centered_rmsprop_overflowing_gradient_matches_torch(momentum: float, dtype: type,
                                                             big: float) -> None:
    # an exploding gradient whose running mean's square overflows: v = inf and m^2 = inf, and
    # NumPy's v - m^2 = inf - inf made the weights NaN where torch's fused v - m*m is inf (a
    # step of 0: the weights stay finite)
    torch = pytest.importorskip("torch")
    from depthlab.optimizers import RMSprop
    from depthlab.parameter import Parameter

    w0 = np.array([1.0, -2.0, 0.5, 3.0], dtype)
    grads = [np.array([big, -big, 1.0, 0.0], dtype), np.array([0.3, 2.0, -1.0, 0.5], dtype)]
    p = Parameter("w", w0.copy())
    opt = RMSprop([p], lr=0.01, centered=True, momentum=momentum)
    tp = torch.nn.Parameter(torch.tensor(w0))
    topt = torch.optim.RMSprop([tp], lr=0.01, centered=True, momentum=momentum)
    for g in grads * 3:
        p.grad = g.copy()
        with np.errstate(over="ignore"):  # d^2 overflows (as in fit's loop, silenced there)
            opt.step()
        tp.grad = torch.tensor(g)
        topt.step()
        np.testing.assert_allclose(p.value, tp.detach().numpy(), rtol=1e-6, atol=0.0)
    assert np.isfinite(p.value).all()


def test_input_mean_past_float64_is_one_clear_overflow_error() -> None:
    # |input_mean| >= 1.3e154: Python's input_mean ** 2 raised its bare OverflowError
    # "(34, 'Numerical result out of range')", naming neither value
    import depthlab as dl
    from depthlab.theory import predict_gradients, propagate_residual

    named = r"input_var=1\.0 and input_mean=1e\+160: .*overflows float64"
    with pytest.raises(OverflowError, match=named):
        propagate([4, 4, 4], "tanh", input_mean=1e160)
    with pytest.raises(OverflowError, match=named):
        propagate_residual(4, 8, 2, "relu", input_mean=1e160, batchnorm=False)
    for options in ({}, {"residual": True}, {"residual": True, "batchnorm": True}):
        with pytest.raises(OverflowError, match=named):
            predict_gradients(dl.mlp([4, 8, 8, 2], **options), input_mean=1e160)


def test_predict_gradients_huge_input_spread_is_predicted() -> None:
    # input_var = 1e300: the length spread's input_var ** 2 raised a bare OverflowError
    # inside predict_gradients, though every layer's variance is finite (relu without biases
    # is scale-free: the profile is the one at input_var = 1)
    import depthlab as dl
    from depthlab.theory import predict_gradients

    net = dl.mlp([4, 8, 8, 2], "relu")
    huge = predict_gradients(net, input_var=1e300, input_mean=1e150)
    assert huge.covered
    assert huge.relative_std == pytest.approx(predict_gradients(net).relative_std, rel=1e-12)
    assert huge.relative_std == pytest.approx([math.sqrt(0.5), 1.0], rel=1e-12)


@pytest.mark.parametrize("y", [0.0, 1, np.array(2), np.float32(0.5)])
def test_probe_scalar_targets_are_one_clear_type_error(y: object) -> None:
    # a single number as the targets: y.shape[0] was a bare IndexError ("tuple index out of
    # range") from dl.probe and from ProbeRecorder's constructor
    import depthlab as dl

    net = dl.mlp([2, 3, 2])
    x = np.zeros((4, 2))
    with pytest.raises(TypeError, match=r"y=.* is not accepted \(one number\); accepted: an "
                       r"array of 4 labels or targets"):
        dl.probe(net, x, y)
    with pytest.raises(TypeError, match=r"probe_y=.* is not accepted \(one number\); "
                       r"accepted: an array of 4 labels"):
        dl.ProbeRecorder(x, y)


def test_initializer_overflowing_settings_are_named() -> None:
    # a gain, std, limit or slope whose square is past float64: Python's ** raised a bare
    # OverflowError "(34, 'Numerical result out of range')" naming nothing; a He slope whose
    # variance underflowed was "scale must be a finite number > 0, got 0.0" (no scale given)
    from depthlab import initializers as init
    from depthlab.theory import propagate as propagate_theory

    with pytest.raises(ValueError, match=r"gain=1e\+200: .*overflows float64"):
        init.GlorotNormal(1e200)
    with pytest.raises(ValueError, match=r"gain=1e\+308: .*overflows float64"):
        init.GlorotUniform(1e308)
    with pytest.raises(ValueError, match=r"negative_slope \(torch's a\) = 1e\+200: .*0"):
        init.HeNormal(a=1e200)
    # torch's formula sqrt(2 / (1 + a^2)) in its limit, not an OverflowError
    assert init.calculate_gain("leaky_relu", 1e200) == pytest.approx(math.sqrt(2) * 1e-200)
    assert init.calculate_gain("leaky_relu", 0.2) == math.sqrt(2.0 / (1.0 + 0.2**2))
    for name, kw in (("normal", {"std": 1e200}), ("uniform", {"limit": 1e200}),
                     ("orthogonal", {"gain": 1e200})):
        assert init.weight_variance(name, 3, 3, **kw) == math.inf
        with pytest.raises(ValueError, match=r"must be finite and >= 0, got inf"):
            propagate_theory([3, 3, 3], "tanh", init=init.get_initializer(name, **kw))


@pytest.mark.parametrize("name", ["sigmoid", "relu", "elu", "gelu", "softplus", "softmax",
                                  "step", "penalized_tanh", "hardswish", "mish"])
def test_activation_of_one_number_is_a_numpy_scalar(name: str) -> None:
    # dl.activation(name)(0.5): "return arrays must be of ArrayType" (sigmoid, relu, ...),
    # "'float' object has no attribute 'dtype'" (penalized_tanh) or "'numpy.float64' object
    # does not support item assignment" (softplus); NumPy's ufuncs give a scalar
    from depthlab.activations import get_activation

    fn = get_activation(name)
    for x, dtype in ((0.5, np.float64), (-2, np.float64), (np.float32(3.0), np.float32),
                     (np.array(-0.25), np.float64), (True, np.float64)):
        got = fn(x)
        want = fn(np.array([x], dtype=dtype))
        assert np.ndim(got) == 0 and got.dtype == dtype
        assert got == want[0]
    with pytest.raises(TypeError, match=r"complex128 are not accepted; accepted: real numbers"):
        fn(1 + 2j)


def test_theory_of_a_constant_callable_and_a_non_elementwise_one() -> None:
    # a callable returning one number (f(s) = 1): NumPy's "matmul: Input operand 1 does not
    # have enough dimensions" from the quadrature; a constant unit outputs 1, so
    # q* = sigma_w2 + sigma_b2 and no gradient passes back (chi1 = 0)
    m = meanfield(lambda s: 1.0, 1.5, 0.1)
    assert m.q_star == pytest.approx(1.6, rel=1e-12) and m.converged
    assert (m.chi1, m.c_star, m.phase) == (0.0, 1.0, "ordered")
    assert q_map(lambda s: 2.0, 1.0, 1.5, 0.1) == pytest.approx(1.5 * 4.0 + 0.1, rel=1e-12)
    with pytest.raises(ValueError, match=r"returned an array of shape .* expected an "
                                         r"elementwise function"):
        meanfield(lambda s: np.sum(s, axis=-1), 1.5)


def test_bn_gradient_factor_overflowing_gamma_is_named() -> None:
    # gamma = 1e200: "variance must be finite and >= 0, got inf" named neither gamma nor BN
    from depthlab.theory import bn_gradient_factor, propagate_batchnorm

    for call in (lambda: bn_gradient_factor("relu", gamma=1e200),
                 lambda: propagate_batchnorm([4, 8, 8], "relu", gamma=-1e160)):
        with pytest.raises(ValueError, match=r"gamma=-?1e\+(200|160): BN's output variance "
                                             r"gamma\^2 overflows float64"):
            call()
    # relu is positively homogeneous: the factor does not depend on gamma's scale
    assert bn_gradient_factor("relu", gamma=1e150).growth == pytest.approx(
        bn_gradient_factor("relu").growth, rel=1e-9)
