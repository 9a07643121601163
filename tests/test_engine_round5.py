"""Round 5 adversarial checks of the NumPy engine: regressions for the bugs found (LeakyReLU
with slope 0 at infinity, BatchNorm argument checks, constant features in the trainer's input
standardization, a residual block whose branch hands the gradient through) and the exactness
sweeps that found none elsewhere (every option combination of every optimizer against
``torch.optim`` over 25 steps, LeakyReLU slopes at edge inputs, float32 kept through a whole
training run with every optimizer and layer kind)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import depthlab as dl
from depthlab.activations import get_activation
from depthlab.layers import BatchNorm, Standardize
from depthlab.optimizers import get_optimizer
from depthlab.parameter import Parameter
from depthlab.training import Trainer

EDGES = [0.0, -0.0, 1e-300, -1e-300, 1e-8, -1e-8, 1.0, -1.0, 30.0, -30.0, 1e4, -1e4, 1e30,
         -1e30, np.inf]


# -- LeakyReLU(negative_slope=0) ----------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_leaky_relu_with_slope_zero_is_relu_at_infinity_too(dtype):
    """s * 0 is NaN at s = +-inf, so max(s, 0 * s) gave NaN for +inf (torch: inf)."""
    fn = get_activation("leaky_relu", negative_slope=0.0)
    s = np.array(EDGES, dtype=dtype)
    a = fn.forward(s.copy())
    ref = F.leaky_relu(torch.from_numpy(s.copy()), 0.0).numpy()
    assert a.dtype == dtype
    np.testing.assert_array_equal(a, ref)
    assert fn.forward(np.array([-np.inf], dtype=dtype))[0] == 0.0  # relu(-inf) = 0
    assert np.isnan(fn.forward(np.array([np.nan], dtype=dtype))[0])


@pytest.mark.parametrize("slope", [0.01, 0.5, 1.0, 1.5, -0.3])
def test_leaky_relu_other_slopes_match_torch_at_edges(slope):
    fn = get_activation("leaky_relu", negative_slope=slope)
    s = np.array(EDGES + [-np.inf])
    t = torch.tensor(s, requires_grad=True)
    F.leaky_relu(t, slope).sum().backward()
    np.testing.assert_array_equal(fn.forward(s.copy()), F.leaky_relu(t, slope).detach().numpy())
    a = fn.forward(s.copy())
    np.testing.assert_array_equal(fn.derivative(s, a), t.grad.numpy())


# -- BatchNorm arguments -------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(n=4, eps=float("inf")), ValueError,
     r"BatchNorm eps must be a finite number > 0, got inf"),
    (dict(n=4, eps=0.0), ValueError, r"BatchNorm eps must be a finite number > 0, got 0.0"),
    (dict(n=4, eps=-1e-5), ValueError, r"BatchNorm eps must be a finite number > 0"),
    (dict(n=4, eps="1e-5"), TypeError, r"BatchNorm eps must be a real number, got '1e-5'"),
    (dict(n=4, eps=None), TypeError, r"BatchNorm eps must be a real number, got None"),
    (dict(n=4, momentum=True), TypeError, r"BatchNorm momentum must be a real number, got True"),
    (dict(n=4, momentum="0.1"), TypeError, r"BatchNorm momentum must be a real number"),
    (dict(n=4, momentum=float("nan")), ValueError, r"BatchNorm momentum must be finite"),
    (dict(n=4, momentum=0.0), ValueError, r"BatchNorm momentum must be in \(0, 1\], got 0.0"),
    (dict(n=4, momentum=1.5), ValueError, r"BatchNorm momentum must be in \(0, 1\], got 1.5"),
    (dict(n=True), ValueError, r"BatchNorm size must be a positive integer, got True"),
    (dict(n=0), ValueError, r"BatchNorm size must be a positive integer, got 0"),
    (dict(n=4.0), ValueError, r"BatchNorm size must be a positive integer, got 4.0"),
])
def test_batchnorm_refuses_bad_arguments_with_one_clear_error(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        BatchNorm(**kwargs)


def test_batchnorm_accepts_numpy_numbers():
    bn = BatchNorm(np.int64(3), eps=np.float32(1e-3), momentum=np.float64(0.1))
    assert (bn.n, bn.eps, bn.momentum) == (3, float(np.float32(1e-3)), 0.1)
    assert type(bn.eps) is float and type(bn.n) is int


# -- input standardization: constant features ----------------------------------------------------


@pytest.mark.parametrize("value", [0.1, 0.3, 7.7, 1e5 + 0.1])
def test_standardize_maps_a_constant_feature_to_zero(value):
    """A constant column's float64 mean can differ from the value by rounding (std ~1e-17):
    it was divided by that std (float64: -1 instead of 0; float32: a new value 1e-5 away
    became ~1e9)."""
    x = np.c_[np.full(1000, value), np.arange(1000.0)]
    for dtype in ("float64", "float32"):
        st = Standardize.fit(x, dtype)
        assert st.std[0] == 1.0 and st.mean[0] == np.asarray(value, dtype=dtype)
        z = st.forward(x.astype(dtype))
        np.testing.assert_array_equal(z[:, 0], 0.0)
        np.testing.assert_allclose(z[:, 1], (x[:, 1] - x[:, 1].mean()) / x[:, 1].std(),
                                   rtol=1e-6)
        near = st.forward(np.array([[value * (1 + 1e-6), 0.0]], dtype=dtype))
        assert abs(near[0, 0]) < 1.0


def test_trainer_standardize_with_a_constant_feature_trains_as_without_it():
    """The constant input maps to 0 after standardization, so it changes nothing: the same
    losses as the network without that input (same weights on the other inputs)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, 3))
    y = (x[:, 0] > 0).astype(int)
    with_constant = dl.mlp([4, 8, 2], "tanh", seed=1, dtype="float64")
    without = dl.mlp([3, 8, 2], "tanh", seed=1, dtype="float64")
    for p, q in zip(without.parameters(), with_constant.parameters()):
        p.value[...] = q.value[: p.value.shape[0]]
    losses = []
    for net, data in ((without, x), (with_constant, np.c_[x, np.full(60, 0.3)])):
        tr = Trainer(net, optimizer="sgd", lr=0.1, batch_size=10, epochs=2, standardize=True)
        losses.append(np.array(tr.fit(data, y).step_loss))
    assert np.all(tr.transform(np.c_[x, np.full(60, 0.3)])[:, 3] == 0.0)
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-12)


def test_trainer_standardizes_in_float64_before_casting_to_float32():
    """x = 1e7 + N(0, 1): cast to float32 first, the noise was rounded to integers (8 distinct
    standardized values, errors up to 0.6 std); standardized in float64, then cast, it keeps
    its spread."""
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(2000)
    x = np.c_[1e7 + noise, rng.standard_normal(2000)]
    y = (noise > 0).astype(int)
    net = dl.mlp([2, 4, 2], seed=0)
    tr = Trainer(net, optimizer="sgd", lr=0.1, batch_size=100, max_steps=1, standardize=True)
    x_before = x.copy()
    tr.fit(x, y)
    z = tr.transform(x)
    np.testing.assert_array_equal(x, x_before)  # the caller's float64 array is not changed
    assert z.dtype == np.float32
    exact = (noise - noise.mean()) / noise.std()
    # the standardizer's mean is stored in float32 (1e7 + 0.03 -> 1e7): a constant shift only
    shift = float(np.mean(z[:, 0] - exact))
    assert abs(shift) < 0.1
    np.testing.assert_allclose(z[:, 0] - shift, exact, atol=1e-5)
    assert len(np.unique(z[:, 0])) > 1900


def test_trainer_refuses_a_standardized_value_too_large_for_float32():
    x = np.c_[np.arange(10.0), np.r_[np.zeros(9), 1.0]]
    net = dl.mlp([2, 3, 2], seed=0)
    tr = Trainer(net, max_steps=1, standardize=True)
    tr.fit(x, np.arange(10) % 2)
    with pytest.raises(ValueError, match=r"standardized x value .* \(row 0, column 0\) does not "
                                         r"fit in float32"):
        tr.evaluate(np.array([[1e300, 0.0]]), np.array([0]))


# -- every optimizer option combination against torch.optim, step for step ---------------------


def _grid() -> list[tuple[str, type, dict, dict]]:
    O = torch.optim
    grid = []
    for mom, damp, nest, wd, mx in itertools.product((0.0, 0.9), (0.0, 0.3), (False, True),
                                                     (0.0, 0.1), (False, True)):
        if nest and (mom == 0 or damp != 0):
            continue
        kw = dict(lr=0.05, momentum=mom, dampening=damp, nesterov=nest, weight_decay=wd,
                  maximize=mx)
        grid.append(("sgd", O.SGD, kw, kw))
    for b, eps, wd, ams, mx, dec in itertools.product(
            ((0.9, 0.999), (0.0, 0.5)), (1e-8, 1e-3), (0.0, 0.1), (False, True), (False, True),
            (False, True)):
        kw = dict(lr=0.01, betas=b, eps=eps, weight_decay=wd, amsgrad=ams, maximize=mx,
                  decoupled_weight_decay=dec)
        grid.append(("adam", O.Adam, kw, kw))
        if dec:  # torch's AdamW is Adam with decoupled weight decay
            grid.append(("adam", O.AdamW, kw,
                         {k: v for k, v in kw.items() if k != "decoupled_weight_decay"}))
    for a, mom, c, wd, mx in itertools.product((0.99, 0.5), (0.0, 0.9), (False, True),
                                               (0.0, 0.1), (False, True)):
        kw = dict(lr=0.01, alpha=a, momentum=mom, centered=c, weight_decay=wd, maximize=mx)
        grid.append(("rmsprop", O.RMSprop, kw, kw))
    for ld, iav, wd, mx, eps in itertools.product((0.0, 0.1), (0.0, 0.5), (0.0, 0.1),
                                                  (False, True), (1e-10, 1e-3)):
        kw = dict(lr=0.1, lr_decay=ld, initial_accumulator_value=iav, weight_decay=wd,
                  maximize=mx, eps=eps)
        grid.append(("adagrad", O.Adagrad, kw, kw))
    for rho, wd, mx in itertools.product((0.9, 0.0, 0.5), (0.0, 0.1), (False, True)):
        kw = dict(lr=1.0, rho=rho, weight_decay=wd, maximize=mx)
        grid.append(("adadelta", O.Adadelta, kw, kw))
    for b, wd, md, dec, mx in itertools.product(((0.9, 0.999), (0.5, 0.9)), (0.0, 0.1),
                                                (4e-3, 0.1), (False, True), (False, True)):
        kw = dict(lr=0.01, betas=b, weight_decay=wd, momentum_decay=md,
                  decoupled_weight_decay=dec, maximize=mx)
        grid.append(("nadam", O.NAdam, kw, kw))
    return grid


def _trajectories(name, tcls, kw, tkw, dtype, steps=25):
    """Parameter values of depthlab and torch after each step from the same gradients (a
    weight matrix and a bias; some gradient entries exactly 0)."""
    rng = np.random.default_rng(7)
    w0 = [rng.standard_normal((3, 4)).astype(dtype), rng.standard_normal(4).astype(dtype)]
    grads = [[rng.standard_normal(w.shape).astype(dtype) for w in w0] for _ in range(steps)]
    for gs in grads[::5]:
        gs[0][0, 0] = 0.0
    ps = [Parameter("w", w0[0].copy()), Parameter("b", w0[1].copy(), "bias")]
    opt = get_optimizer(name, ps, **kw)
    tp = [torch.tensor(w.copy(), requires_grad=True) for w in w0]
    topt = tcls(tp, **tkw)
    for step_grads in grads:
        for p, t, g in zip(ps, tp, step_grads):
            p.grad[...] = g
            t.grad = torch.tensor(g)
        opt.step()
        topt.step()
        yield ps, tp, opt


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "rmsprop", "adagrad", "adadelta", "nadam"])
def test_every_option_combination_matches_torch_optim_for_25_steps(optimizer):
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # torch's scalar state (NAdam mu_product) too
    try:
        cases = [c for c in _grid() if c[0] == optimizer]
        assert cases
        for name, tcls, kw, tkw in cases:
            start = None
            for k, (ps, tp, _opt) in enumerate(_trajectories(name, tcls, kw, tkw, np.float64)):
                if start is None:
                    start = [p.value.copy() for p in ps]
                for p, t in zip(ps, tp):
                    ref = t.detach().numpy()
                    err = np.max(np.abs(p.value - ref) / (1e-3 + np.abs(ref)))
                    assert err < 1e-11, f"{tcls.__name__} {kw} step {k + 1}: rel err {err:.2e}"
            # the 24 steps after the first moved the parameters (not a no-op comparison)
            assert max(np.max(np.abs(p.value - w)) for p, w in zip(ps, start)) > 1e-3
    finally:
        torch.set_default_dtype(old)


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "rmsprop", "adagrad", "adadelta", "nadam"])
def test_float32_optimizer_state_stays_float32_for_every_option(optimizer):
    for name, tcls, kw, tkw in [c for c in _grid() if c[0] == optimizer][::3]:
        *_, (ps, _tp, opt) = _trajectories(name, tcls, kw, tkw, np.float32, steps=3)
        for p in ps:
            assert p.value.dtype == np.float32 and p.grad.dtype == np.float32
            for key, buf in opt.state[p].items():
                assert buf.dtype == np.float32, (name, kw, key)


# -- a whole float32 run keeps float32 everywhere ------------------------------------------------


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "rmsprop", "adagrad", "adadelta", "nadam"])
def test_float32_training_with_every_layer_kind_has_no_float64_array(optimizer):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 5)) * 3 + 1  # float64 data, standardized in the trainer
    y = rng.integers(0, 3, 40)
    for kind in ({"batchnorm": True}, {"residual": True, "batchnorm": True, "dropout": 0.2},
                 {"activation": "selu", "dropout": 0.1, "input_dropout": 0.1}):
        kind = {"activation": "gelu", **kind}
        net = dl.mlp([5, 8, 8, 3], seed=1, **kind)
        tr = Trainer(net, optimizer=optimizer, lr=1e-3, batch_size=8, epochs=1, l1=1e-3,
                     l2=1e-3, standardize=True, weight_decay=0.01)
        tr.fit(x, y)
        arrays = {}
        for p in net.parameters():
            arrays[p.name] = p.value
            arrays[p.name + ".grad"] = p.grad
            for key, buf in tr.optimizer.state[p].items():
                arrays[f"{p.name}.{key}"] = buf
        for layer in net.leaves():
            for attr in ("running_mean", "running_var", "s", "a", "grad_s", "mask", "xhat"):
                v = getattr(layer, attr, None)
                if isinstance(v, np.ndarray):
                    arrays[f"{layer.name}.{attr}"] = v
        arrays["predict"] = net.predict(x)
        wrong = {k: v.dtype for k, v in arrays.items() if v.dtype != np.float32}
        assert not wrong, (optimizer, kind, wrong)


# -- residual blocks -------------------------------------------------------------------------


def test_nested_residual_with_an_empty_branch_has_the_right_gradient_and_keeps_grad():
    """y = x + (x + x) = 3x. The empty inner branch handed the gradient object through and
    ``gx += grad`` doubled the caller's array in place (the outer block then got 4, not 3)."""
    from depthlab.layers import Residual, Sequential

    outer = Residual(Sequential([Residual(Sequential([]))]))
    x = np.random.default_rng(0).standard_normal((4, 3))
    np.testing.assert_array_equal(outer.forward(x), 3 * x)
    g = np.random.default_rng(1).standard_normal((4, 3))
    g_before = g.copy()
    np.testing.assert_allclose(outer.backward(g), 3 * g_before, rtol=1e-15)
    np.testing.assert_array_equal(g, g_before)  # Residual.overwrites_grad is False


# -- initializers: values that do not fit the dtype ----------------------------------------------


@pytest.mark.parametrize("name, kwargs", [
    ("constant", {"value": 1e39}),
    ("normal", {"std": 1e39}),
    ("uniform", {"limit": 1e39}),  # was clipped to +-3.4e38 silently: not U[-1e39, 1e39]
    ("variance_scaling", {"scale": 1e300}),
    ("orthogonal", {"gain": 1e39}),
])
def test_initializer_refuses_values_too_large_for_float32(name, kwargs):
    from depthlab.initializers import get_initializer

    init = get_initializer(name, **kwargs)
    with pytest.raises(ValueError, match=r"drew values that do not fit in float32 "
                                         r"\(\|w\| <= 3.4e\+38\); expected smaller settings"):
        init((3, 3), 0, "float32")
    w = init((3, 3), 0, "float64")  # fine in float64
    assert np.isfinite(w).all() and np.abs(w).max() > 1e37
    with pytest.raises(ValueError, match="do not fit in float32"):
        dl.mlp([3, 3, 2], init=init, seed=0)
