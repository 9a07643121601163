"""Adversarial checks of the NumPy engine against PyTorch (float64) and finite differences:
activations at edge inputs, initializer statistics, layers (BatchNorm running statistics and
gradients, dropout, residual, standardize), losses at extreme logits, regularizers, optimizers
with every option, the bridge on every network kind, the trainer's batches and seeds, and the
probe recorder's quantities recomputed independently."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers.gradcheck import fd_err, numeric_grad
from helpers.torchref import depthlab_loss

import depthlab as dl
from depthlab.activations import REGISTRY as ACT_REGISTRY
from depthlab.activations import get_activation
from depthlab.backend import rng as make_rng
from depthlab.bridge.torch_bridge import to_torch
from depthlab.initializers import get_initializer, weight_variance
from depthlab.layers import (
    Activation,
    AlphaDropout,
    BatchNorm,
    Dense,
    Dropout,
    Residual,
    Sequential,
    Standardize,
)
from depthlab.losses import get_loss
from depthlab.network import Network
from depthlab.optimizers import get_optimizer
from depthlab.parameter import Parameter
from depthlab.probes.recorder import ProbeRecorder
from depthlab.regularizers import add_penalty_gradient, penalty


@pytest.fixture
def f64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


# -- activations -----------------------------------------------------------------------------

ACT_CASES = [
    ("sigmoid", {}, torch.sigmoid),
    ("tanh", {}, torch.tanh),
    ("identity", {}, lambda x: x * 1.0),
    ("relu", {}, torch.relu),
    ("leaky_relu", {}, lambda x: F.leaky_relu(x, 0.01)),
    ("leaky_relu", {"negative_slope": 0.2}, lambda x: F.leaky_relu(x, 0.2)),
    ("leaky_relu", {"negative_slope": 1.5}, lambda x: F.leaky_relu(x, 1.5)),
    ("leaky_relu", {"negative_slope": -0.3}, lambda x: F.leaky_relu(x, -0.3)),
    ("elu", {}, F.elu),
    ("elu", {"alpha": 0.5}, lambda x: F.elu(x, 0.5)),
    ("elu", {"alpha": 2.5}, lambda x: F.elu(x, 2.5)),
    ("selu", {}, F.selu),
    ("swish", {}, F.silu),
    ("swish", {"beta": 2.0}, lambda x: x * torch.sigmoid(2.0 * x)),
    ("softsign", {}, F.softsign),
    ("gelu", {}, F.gelu),
    ("mish", {}, F.mish),
    ("penalized_tanh", {}, lambda x: torch.where(x > 0, torch.tanh(x), 0.25 * torch.tanh(x))),
    ("penalized_tanh", {"a": 0.5}, lambda x: torch.where(x > 0, torch.tanh(x),
                                                          0.5 * torch.tanh(x))),
    ("softplus", {}, F.softplus),
    ("softplus", {"beta": 0.5, "threshold": 10.0}, lambda x: F.softplus(x, 0.5, 10.0)),
    ("logsigmoid", {}, F.logsigmoid),
    ("hardtanh", {}, F.hardtanh),
    ("relu6", {}, F.relu6),
    ("hardsigmoid", {}, F.hardsigmoid),
    ("hardswish", {}, F.hardswish),
    ("step", {}, lambda x: (x > 0).to(x.dtype)),
]
EDGE = np.array([-1000.0, -700.0, -50.0, -20.0, -3.0, -1.0, -1e-8, -1e-300, -0.0, 0.0, 1e-300,
                 1e-8, 0.5, 1.0, 3.0, 20.0, 50.0, 700.0, 1000.0])


def test_every_registered_activation_is_covered():
    assert {c[0] for c in ACT_CASES} | {"softmax"} == set(ACT_REGISTRY.names)


def _close_or_torch_underflow(ours, theirs, rtol):
    """Equal to rtol, except values below 1e-80 in the far negative tail, where torch loses
    digits (GELU: s Phi(s) at s = -20 is -5.5e-88, torch's x (1 + erf(x/sqrt 2)) / 2 cancels
    to -0; its derivative drops the Phi(s) term)."""
    tail = (EDGE <= -20) & (np.abs(ours) < 1e-80)
    np.testing.assert_allclose(ours[~tail], theirs[~tail], rtol=rtol, atol=1e-300)
    assert (np.abs(theirs[tail]) < 1e-80).all()


@pytest.mark.parametrize("name,kw,ref", ACT_CASES, ids=[f"{c[0]}{c[1]}" for c in ACT_CASES])
def test_activation_forward_and_derivative_match_torch_at_edges(name, kw, ref, f64):
    fn = get_activation(name, **kw)
    s = EDGE.copy()
    a = fn.forward(s.copy())
    t = torch.tensor(s, requires_grad=True)
    ta = ref(t)
    if ta.requires_grad:
        ta.sum().backward()
    else:  # the step function: no gradient flows
        t.grad = torch.zeros_like(t)
    _close_or_torch_underflow(a, ta.detach().numpy(), 1e-13)
    d = fn.derivative(s, a)
    _close_or_torch_underflow(d, t.grad.numpy(), 1e-12)
    # backward = grad * f' (it may work in place on its argument)
    g = np.linspace(-2, 2, s.size)
    np.testing.assert_allclose(fn.backward(s, a, g.copy()), g * d, rtol=1e-13, atol=1e-300)
    # infinities and NaN as in torch (NaN where torch gives NaN)
    special = np.array([-np.inf, np.inf, np.nan])
    want = ref(torch.tensor(special)).numpy()
    np.testing.assert_array_equal(fn.forward(special.copy()), want)


@pytest.mark.parametrize("name,kw,ref", ACT_CASES, ids=[f"{c[0]}{c[1]}" for c in ACT_CASES])
def test_activation_float32_stays_float32_and_close_to_the_float64_value(name, kw, ref):
    """float32 in, float32 out, within float32 rounding of torch's float64 values."""
    fn = get_activation(name, **kw)
    s = np.linspace(-30, 30, 241).astype(np.float32)
    a = fn.forward(s.copy())
    assert a.dtype == np.float32 and fn.derivative(s, a).dtype == np.float32
    t = torch.tensor(s.astype(np.float64), requires_grad=True)
    ta = ref(t)
    if ta.requires_grad:
        ta.sum().backward()
    else:
        t.grad = torch.zeros_like(t)
    np.testing.assert_allclose(a, ta.detach().numpy(), rtol=2e-6, atol=2e-7)
    np.testing.assert_allclose(fn.derivative(s, a), t.grad.numpy(), rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("name,kw,ref", ACT_CASES[:-1], ids=[f"{c[0]}{c[1]}" for c in
                                                             ACT_CASES[:-1]])
def test_activation_derivative_by_finite_differences(name, kw, ref):
    fn = get_activation(name, **kw)
    s = np.array([-6.0, -2.3, -0.7, -0.01, 0.013, 0.4, 1.7, 5.5])
    d = fn.derivative(s, fn.forward(s.copy()))
    h = 1e-6
    num = (fn.forward(s + h) - fn.forward(s - h)) / (2 * h)
    np.testing.assert_allclose(d, num, rtol=1e-7, atol=1e-9)


def test_softmax_matches_torch_with_extreme_logits(f64):
    fn = get_activation("softmax")
    s = np.array([[1000.0, -1000.0, 0.0], [-1e4, -1e4 + 1, -1e4 + 2], [0.0, 0.0, 0.0]])
    a = fn.forward(s.copy())
    t = torch.tensor(s, requires_grad=True)
    ta = torch.softmax(t, dim=-1)
    g = np.array([[0.3, -1.0, 2.0], [1.0, 0.5, -0.2], [0.1, 0.2, 0.3]])
    ta.backward(torch.tensor(g))
    np.testing.assert_allclose(a, ta.detach().numpy(), rtol=1e-14, atol=1e-300)
    np.testing.assert_allclose(fn.backward(s, a, g.copy()), t.grad.numpy(), rtol=1e-12,
                               atol=1e-15)


# -- initializers ------------------------------------------------------------------------------

INIT_VARIANCE = [
    ("glorot_uniform", {}, lambda fi, fo: 2 / (fi + fo)),
    ("glorot_normal", {}, lambda fi, fo: 2 / (fi + fo)),
    ("he_normal", {}, lambda fi, fo: 2 / fi),
    ("he_normal", {"mode": "fan_out"}, lambda fi, fo: 2 / fo),
    ("he_uniform", {}, lambda fi, fo: 2 / fi),
    ("he_uniform", {"mode": "fan_out"}, lambda fi, fo: 2 / fo),
    ("lecun_normal", {}, lambda fi, fo: 1 / fi),
    ("lecun_uniform", {}, lambda fi, fo: 1 / fi),
    ("fan_in_uniform", {}, lambda fi, fo: 1 / (3 * fi)),
    ("normal", {"std": 0.3}, lambda fi, fo: 0.09),
    ("uniform", {"limit": 0.2}, lambda fi, fo: 0.04 / 3),
    ("variance_scaling", {"scale": 3.0, "mode": "fan_avg", "distribution": "uniform"},
     lambda fi, fo: 6 / (fi + fo)),
    ("variance_scaling", {"scale": 0.5, "mode": "fan_out"}, lambda fi, fo: 0.5 / fo),
    ("orthogonal", {"gain": 1.7}, lambda fi, fo: 1.7**2 / max(fi, fo)),
    # torch's trunc_normal_(std=0.1, a=-0.15, b=0.15): beta = 1.5, the truncated normal's
    # variance std^2 (1 - 2 beta phi(beta) / (2 Phi(beta) - 1))
    ("trunc_normal", {"std": 0.1, "a": -0.15, "b": 0.15},
     lambda fi, fo: 0.01 * (1 - 2 * 1.5 * math.exp(-1.125) / math.sqrt(2 * math.pi)
                            / math.erf(1.5 / math.sqrt(2)))),
]


@pytest.mark.parametrize("name,kw,var", INIT_VARIANCE,
                         ids=[f"{c[0]}{c[1]}" for c in INIT_VARIANCE])
@pytest.mark.parametrize("shape", [(300, 200), (120, 400)])
def test_initializer_statistics_match_the_formula(name, kw, var, shape):
    fi, fo = shape
    w = get_initializer(name, **kw)(shape, make_rng(5), "float64")
    assert w.shape == shape and w.dtype == np.float64
    want = var(fi, fo)
    assert weight_variance(name, fi, fo, **kw) == pytest.approx(want, rel=1e-12)
    n = w.size
    assert abs(w.mean()) < 5 * math.sqrt(want / n)
    assert w.var() == pytest.approx(want, rel=0.03)
    if "uniform" in name or (name == "variance_scaling" and kw.get("distribution") == "uniform"):
        lim = math.sqrt(3 * want)
        assert np.abs(w).max() <= lim and np.abs(w).max() > 0.99 * lim
        w32 = get_initializer(name, **kw)(shape, make_rng(5), "float32")
        assert w32.dtype == np.float32 and float(np.abs(w32).max()) <= lim


def test_initializers_match_torch_nn_init_variance():
    """Same Var(W) as torch.nn.init for a torch weight (out, in) = depthlab (in, out)."""
    fi, fo = 250, 150
    torch.manual_seed(0)
    pairs = [
        ("glorot_uniform", lambda w: torch.nn.init.xavier_uniform_(w)),
        ("glorot_normal", lambda w: torch.nn.init.xavier_normal_(w)),
        ("he_normal", lambda w: torch.nn.init.kaiming_normal_(w, nonlinearity="relu")),
        ("he_uniform", lambda w: torch.nn.init.kaiming_uniform_(w, nonlinearity="relu")),
    ]
    for name, init in pairs:
        t = init(torch.empty(fo, fi, dtype=torch.float64)).numpy()
        assert t.var() == pytest.approx(weight_variance(name, fi, fo), rel=0.03), name
    t = torch.nn.init.kaiming_normal_(torch.empty(fo, fi, dtype=torch.float64), mode="fan_out",
                                      nonlinearity="relu").numpy()
    assert t.var() == pytest.approx(weight_variance("he_normal", fi, fo, mode="fan_out"),
                                    rel=0.03)
    t = torch.nn.init.orthogonal_(torch.empty(fo, fi, dtype=torch.float64), gain=2.0).numpy()
    w = get_initializer("orthogonal", gain=2.0)((fi, fo), make_rng(1), "float64")
    np.testing.assert_allclose(w.T @ w, 4 * np.eye(fo), atol=1e-12)
    np.testing.assert_allclose(t @ t.T, 4 * np.eye(fo), atol=1e-12)


@pytest.mark.parametrize("shape", [(7, 4), (4, 7), (5, 5)])
def test_orthogonal_is_q_of_the_gaussian_with_positive_r_diagonal(shape):
    w = get_initializer("orthogonal")(shape, make_rng(3), "float64")
    g = make_rng(3).standard_normal(shape)
    rows, cols = shape
    q, g2 = (w, g) if rows >= cols else (w.T, g.T)
    r = q.T @ g2  # = R of the QR factorization: upper triangular with positive diagonal
    np.testing.assert_allclose(np.tril(r, -1), 0, atol=1e-12)
    assert (np.diag(r) > 0).all()


def test_initializers_reproducible_from_one_seed_in_both_dtypes():
    for name in ("he_normal", "glorot_uniform", "orthogonal"):
        a = get_initializer(name)((30, 20), make_rng(9), "float64")
        b = get_initializer(name)((30, 20), make_rng(9), "float64")
        c = get_initializer(name)((30, 20), make_rng(9), "float32")
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(c, a, rtol=1e-6, atol=1e-7)
        assert not np.array_equal(a, get_initializer(name)((30, 20), make_rng(10), "float64"))


# -- layers --------------------------------------------------------------------------------


def _net_fd(net: Network, x: np.ndarray, up: np.ndarray, param: np.ndarray) -> np.ndarray:
    """d(sum(net(x) * up))/d param by central differences (training-mode forward)."""
    return numeric_grad(lambda _: float((net.forward(x, training=True) * up).sum()), param)


@pytest.mark.parametrize("act", ["tanh", "sigmoid", "softsign", "relu", "identity"])
def test_residual_whose_branch_ends_in_an_activation_by_finite_differences(act):
    """y = x + f(x W + b): the branch's cached activation output must not receive the skip
    (it did: ``y += x`` wrote into the Activation's ``a``, so sigmoid/tanh backward was wrong)."""
    g = make_rng(0)
    branch = Sequential([Dense(4, 4, rng=2, dtype="float64"), Activation(act)])
    net = Network([Dense(4, 4, rng=1, dtype="float64", init="he_normal"), Residual(branch),
                   Dense(4, 3, rng=3, dtype="float64")], n_inputs=4, dtype="float64")
    x, up = g.standard_normal((5, 4)), g.standard_normal((5, 3))
    net.forward(x)
    gx = net.backward(up)
    w = branch.layers[0].W
    analytic = w.grad.copy()
    assert fd_err(analytic, _net_fd(net, x, up, w.value)) < 1e-7
    num_x = numeric_grad(lambda z: float((net.forward(z) * up).sum()), x.copy())
    assert fd_err(gx, num_x) < 1e-7
    # the cached activation output is f(s) itself, and the forward matches torch
    a = branch.layers[1]
    net.forward(x)
    np.testing.assert_array_equal(a.a, a.fn.forward(a.s.copy()))
    with torch.no_grad():
        want = to_torch(net)(torch.tensor(x)).numpy()
    np.testing.assert_allclose(net.predict(x), want, rtol=1e-12, atol=1e-14)


def test_residual_calibrate_leaves_its_input_unchanged():
    x = make_rng(1).standard_normal((6, 3))
    res = Residual(Sequential([Dropout(0.5, rng=0)]))  # dropout off in calibrate: F(x) = x
    keep = x.copy()
    y = res.calibrate(x)
    np.testing.assert_array_equal(x, keep)
    np.testing.assert_allclose(y, 2 * keep)


def _bn_pair(n, momentum, eps=1e-5):
    bn = BatchNorm(n, momentum=momentum, eps=eps, ema_start="zero", dtype="float64")
    g = make_rng(4)
    bn.gamma.value[...] = g.uniform(0.5, 2.0, n)
    bn.beta.value[...] = g.standard_normal(n)
    tb = torch.nn.BatchNorm1d(n, momentum=momentum, eps=eps, dtype=torch.float64)
    with torch.no_grad():
        tb.weight.copy_(torch.tensor(bn.gamma.value))
        tb.bias.copy_(torch.tensor(bn.beta.value))
    return bn, tb


@pytest.mark.parametrize("momentum,m", [(0.1, 8), (0.37, 3), (1.0, 5), (0.1, 2)])
def test_batchnorm_train_and_running_stats_match_torch(momentum, m, f64):
    n = 5
    bn, tb = _bn_pair(n, momentum)
    g = make_rng(8)
    for _ in range(4):
        x = g.standard_normal((m, n)) * 3 + 1.5
        up = g.standard_normal((m, n))  # random upstream gradient (all-ones hides dx, dgamma)
        y = bn.forward(x, training=True)
        dx = bn.backward(up.copy())
        tx = torch.tensor(x, requires_grad=True)
        tb.train()
        ty = tb(tx)
        ty.backward(torch.tensor(up))
        np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-9, atol=1e-11)
        np.testing.assert_allclose(bn.gamma.grad, tb.weight.grad.numpy(), rtol=1e-11, atol=1e-12)
        np.testing.assert_allclose(bn.beta.grad, tb.bias.grad.numpy(), rtol=1e-12, atol=1e-12)
        tb.weight.grad = tb.bias.grad = None
        np.testing.assert_allclose(bn.running_mean, tb.running_mean.numpy(), rtol=1e-13)
        np.testing.assert_allclose(bn.running_var, tb.running_var.numpy(), rtol=1e-13)
    # inference: running statistics, their gradient by the constant scale
    x = g.standard_normal((7, n))
    up = g.standard_normal((7, n))
    y = bn.forward(x, training=False)
    dx = bn.backward(up.copy())
    tb.eval()
    tx = torch.tensor(x, requires_grad=True)
    ty = tb(tx)
    ty.backward(torch.tensor(up))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_batchnorm_gradients_by_finite_differences():
    g = make_rng(2)
    bn = BatchNorm(3, dtype="float64")
    bn.gamma.value[...] = [0.7, 1.3, -0.4]
    bn.beta.value[...] = [0.1, -0.2, 0.3]
    x, up = g.standard_normal((6, 3)), g.standard_normal((6, 3))

    def f(_):
        bn.update_stats = False
        out = float((bn.forward(x, training=True) * up).sum())
        bn.update_stats = True
        return out

    bn.forward(x)
    dx = bn.backward(up.copy())
    assert fd_err(dx, numeric_grad(lambda z: float((bn.forward(z) * up).sum()), x.copy())) < 1e-7
    bn.forward(x)
    bn.backward(up.copy())
    dg = bn.gamma.grad.copy()
    assert fd_err(dg, numeric_grad(f, bn.gamma.value)) < 1e-8


def test_batchnorm_first_batch_ema_start_and_unbiased_variance():
    x = make_rng(3).standard_normal((4, 2))
    bn = BatchNorm(2, momentum=0.1, dtype="float64")  # ema_start="first_batch"
    bn.forward(x)
    np.testing.assert_allclose(bn.running_mean, x.mean(0), rtol=1e-14)
    np.testing.assert_allclose(bn.running_var, x.var(0, ddof=1), rtol=1e-14)
    x2 = x[::-1] * 2 + 1
    bn.forward(x2)
    np.testing.assert_allclose(bn.running_mean, 0.9 * x.mean(0) + 0.1 * x2.mean(0), rtol=1e-14)
    np.testing.assert_allclose(bn.running_var, 0.9 * x.var(0, ddof=1) + 0.1 * x2.var(0, ddof=1),
                               rtol=1e-14)


def test_dropout_statistics_scaling_and_backward():
    p = 0.3
    d = Dropout(p, rng=5)
    x = np.ones((400, 50))
    y = d.forward(x, training=True)
    kept = y != 0
    n = x.size
    assert abs((~kept).mean() - p) < 4 * math.sqrt(p * (1 - p) / n)
    np.testing.assert_allclose(y[kept], 1 / (1 - p), rtol=1e-15)
    g = make_rng(0).standard_normal(x.shape)
    np.testing.assert_allclose(d.backward(g.copy()), g * kept / (1 - p), rtol=1e-15)
    assert d.forward(x, training=False) is x
    # float32 stays float32; reproducible from the seed
    y32 = Dropout(p, rng=5).forward(x.astype(np.float32))
    assert y32.dtype == np.float32
    np.testing.assert_array_equal(Dropout(p, rng=5).forward(x) != 0, Dropout(p, rng=5).forward(
        x) != 0)


def test_alpha_dropout_is_torch_formula_and_keeps_mean_and_variance():
    p = 0.1
    d = AlphaDropout(p, rng=11)
    x = make_rng(1).standard_normal((2000, 100))
    y = d.forward(x, training=True)
    alpha = 1.6732632423543772848170429916717 * 1.0507009873554804934193349852946
    a = 1.0 / math.sqrt((alpha * alpha * p + 1) * (1 - p))  # ATen's _dropout_impl
    dropped_value = -alpha * a + alpha * a * p
    kept = d.mask != 0
    np.testing.assert_allclose(y[kept], a * x[kept] + alpha * a * p, rtol=1e-13)
    np.testing.assert_allclose(y[~kept], dropped_value, rtol=1e-13)
    assert abs((~kept).mean() - p) < 0.005
    assert abs(y.mean()) < 0.01 and abs(y.var() - 1) < 0.02
    g = make_rng(2).standard_normal(x.shape)
    np.testing.assert_allclose(d.backward(g.copy()), g * kept * a, rtol=1e-14)


def test_standardize_forward_backward():
    g = make_rng(6)
    x = g.standard_normal((20, 3)) * [1.0, 5.0, 0.0] + [2.0, -1.0, 4.0]  # a constant column
    s = Standardize.fit(x, np.float64)
    y = s.forward(x)
    np.testing.assert_allclose(y[:, :2].mean(0), 0, atol=1e-14)
    np.testing.assert_allclose(y[:, :2].std(0), 1, rtol=1e-13)
    np.testing.assert_allclose(y[:, 2], 0)
    up = g.standard_normal(x.shape)
    dx = s.backward(up.copy())
    assert fd_err(dx, numeric_grad(lambda z: float((s.forward(z) * up).sum()), x.copy())) < 1e-8


def test_dense_gradients_by_finite_differences():
    g = make_rng(7)
    d = Dense(4, 3, rng=1, dtype="float64", bias_init="normal")
    x, up = g.standard_normal((5, 4)), g.standard_normal((5, 3))
    d.forward(x)
    dx = d.backward(up)
    f = lambda _: float((d.forward(x) * up).sum())  # noqa: E731
    assert fd_err(d.W.grad.copy(), numeric_grad(f, d.W.value)) < 1e-8
    assert fd_err(d.b.grad.copy(), numeric_grad(f, d.b.value)) < 1e-8
    assert fd_err(dx, numeric_grad(lambda z: float((d.forward(z) * up).sum()), x.copy())) < 1e-8


# -- losses --------------------------------------------------------------------------------


LOGITS = np.array([[1e4, -1e4, 0.0], [-800.0, 750.0, 1.0], [0.3, -0.2, 0.1],
                   [50.0, 50.0, -50.0], [-1e-9, 0.0, 1e-9]])
LOSS_CASES = [
    ("cross_entropy", {}, LOGITS, np.array([1, 0, 2, 2, 1])),
    ("cross_entropy", {"label_smoothing": 0.2}, LOGITS, np.array([1, 0, 2, 2, 1])),
    ("cross_entropy", {"label_smoothing": 1.0}, LOGITS, np.array([1, 0, 2, 2, 1])),
    ("cross_entropy", {}, LOGITS[1:], np.array([[0.2, 0.5, 0.3], [0, 1, 0], [0.5, 0.5, 0],
                                                 [1 / 3, 1 / 3, 1 / 3]])),
    ("cross_entropy", {"label_smoothing": 0.3}, LOGITS[1:],
     np.array([[0.2, 0.5, 0.3], [0, 1, 0], [0.5, 0.5, 0], [1 / 3, 1 / 3, 1 / 3]])),
    ("binary_cross_entropy", {}, LOGITS, np.tile([0.0, 1.0, 0.3], (5, 1))),
    ("mse", {}, LOGITS / 1e3, np.tile([0.5, -1.0, 2.0], (5, 1))),
    ("huber", {}, LOGITS / 1e3, np.tile([0.5, -1.0, 2.0], (5, 1))),
    ("huber", {"delta": 0.25}, LOGITS / 1e3, np.tile([0.5, -1.0, 0.3], (5, 1))),
]


@pytest.mark.parametrize("name,kw,z,y", LOSS_CASES, ids=[f"{c[0]}{c[1]}-{i}" for i, c in
                                                          enumerate(LOSS_CASES)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_loss_and_gradient_match_torch_at_extreme_logits(name, kw, z, y, dtype):
    loss = get_loss(name, **kw)
    z = z.astype(dtype)
    value = loss.forward(z.copy(), y)
    grad = loss.backward()
    assert isinstance(value, float) and grad.dtype == dtype and grad.shape == z.shape
    tz = torch.tensor(z.astype(np.float64), requires_grad=True)
    ty = torch.tensor(y) if y.dtype.kind == "i" else torch.tensor(y.astype(np.float64))
    tl = depthlab_loss(name, kw, tz, ty)
    tl.backward()
    assert np.isfinite(value) and np.isfinite(grad).all()
    tol = 1e-12 if dtype == np.float64 else 1e-6
    assert value == pytest.approx(tl.item(), rel=tol, abs=tol)
    np.testing.assert_allclose(grad, tz.grad.numpy(), rtol=tol * 10, atol=tol)


@pytest.mark.parametrize("name,kw,z,y", LOSS_CASES, ids=[f"{c[0]}{c[1]}-{i}" for i, c in
                                                          enumerate(LOSS_CASES)])
def test_loss_gradient_by_finite_differences(name, kw, z, y):
    loss = get_loss(name, **kw)
    z = make_rng(3).standard_normal(z.shape) * 2  # away from kinks and the saturated ends
    loss.forward(z.copy(), y)
    grad = loss.backward()
    assert fd_err(grad, numeric_grad(lambda q: loss.forward(q, y), z.copy())) < 1e-8


def test_loss_column_targets_and_the_batch_mean():
    """(B, 1) predictions with (B,) targets as one column; mean over every element."""
    z = make_rng(0).standard_normal((6, 1))
    y = np.array([0, 1, 1, 0, 1, 0.0])
    for name, ref in (("mse", F.mse_loss), ("binary_cross_entropy",
                                             F.binary_cross_entropy_with_logits)):
        v = get_loss(name).forward(z, y)
        assert v == pytest.approx(ref(torch.tensor(z[:, 0]), torch.tensor(y)).item(), rel=1e-13)


# -- regularizers --------------------------------------------------------------------------


def test_penalty_gradient_by_finite_differences_and_torch_weight_decay():
    g = make_rng(4)
    w = Parameter("w", g.standard_normal((4, 3)), "weight")
    b = Parameter("b", g.standard_normal(3), "bias")
    w.value[0, 0] = 0.0  # sign(0) = 0
    l1, l2 = 0.03, 0.2
    assert penalty([w, b], l1, l2) == pytest.approx(
        l1 * np.abs(w.value).sum() + l2 * (w.value**2).sum(), rel=1e-14)
    add_penalty_gradient([w, b], l1, l2)
    assert (b.grad == 0).all() and w.grad[0, 0] == 0.0
    mask = w.value != 0
    num = numeric_grad(lambda _: penalty([w, b], l1, l2), w.value)
    np.testing.assert_allclose(w.grad[mask], num[mask], rtol=1e-7)
    # l2 = wd / 2 is torch's weight_decay = wd for SGD
    wd = 0.1
    p = Parameter("p", g.standard_normal(5), "weight")
    q = torch.tensor(p.value.copy(), requires_grad=True)
    opt, topt = get_optimizer("sgd", [p], lr=0.5), torch.optim.SGD([q], lr=0.5, weight_decay=wd)
    for _ in range(3):
        p.grad[...] = 0.0
        add_penalty_gradient([p], l2=wd / 2)
        opt.step()
        q.grad = torch.zeros_like(q)
        topt.step()
    np.testing.assert_allclose(p.value, q.detach().numpy(), rtol=1e-14)


# -- bridge and trainer against torch --------------------------------------------------------

SIZES = [5, 8, 8, 8, 3]
NET_KINDS = {
    "plain": dict(activation="tanh", bias_init="normal"),
    "batchnorm": dict(activation="relu", batchnorm=True, bn_momentum=0.1, bn_ema_start="zero"),
    "residual_bn": dict(activation="elu", residual=True, batchnorm=True, bn_momentum=0.3,
                        bn_ema_start="zero", init="he_normal"),
    "residual": dict(activation="selu", residual=True, init="lecun_normal"),
    "leaky_softmax_out": dict(activation="leaky_relu", activation_kwargs={"negative_slope": 0.2},
                              output_activation="softmax"),
}


def _data(n, seed=0):
    g = make_rng(seed)
    return g.standard_normal((n, SIZES[0])), g.integers(0, SIZES[-1], n)


def _torch_batches(n, bs, epochs, seed, has_bn):
    """The trainer's batches: one generator from ``seed``, a permutation per epoch, with batch
    norm a last batch of one row merged into the batch before it."""
    gen = make_rng(seed)
    for _ in range(epochs):
        order = gen.permutation(n)
        for start in range(0, n, bs):
            if has_bn and n - start < 2:
                continue
            end = n if has_bn and n - start - bs == 1 else start + bs
            yield order[start:end]


@pytest.mark.parametrize("kind", [k for k in NET_KINDS if k != "leaky_softmax_out"])
@pytest.mark.parametrize("n,bs", [(30, 7), (29, 7)])
def test_trainer_matches_torch_training_step_for_step(kind, n, bs, f64):
    """mlp + fit (shuffled mini-batches, partial last batch, 2 epochs, SGD with Nesterov and
    weight decay) = the same network copied by to_torch and trained by torch.optim."""
    kw = NET_KINDS[kind]
    x, y = _data(n)
    net = dl.mlp(SIZES, seed=3, dtype="float64", **kw)
    tnet = to_torch(dl.mlp(SIZES, seed=3, dtype="float64", **kw))
    opt_kw = dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)
    with pytest.warns(UserWarning, match="merged") if (n % bs == 1 and "batchnorm" in kw) else \
            _no_warning():
        hist = dl.fit(net, x, y, batch_size=bs, epochs=2, seed=11, optimizer="sgd",
                      **opt_kw)
    topt = torch.optim.SGD(tnet.parameters(), **opt_kw)
    tnet.train()
    losses = []
    for idx in _torch_batches(n, bs, 2, 11, "batchnorm" in kw):
        topt.zero_grad()
        loss = F.cross_entropy(tnet(torch.tensor(x[idx])), torch.tensor(y[idx]))
        loss.backward()
        topt.step()
        losses.append(loss.item())
    assert len(hist.step_loss) == len(losses) == 2 * (math.ceil(n / bs) - (
        n % bs == 1 and "batchnorm" in kw))
    np.testing.assert_allclose(hist.step_loss, losses, rtol=1e-11)
    want = [p.detach().numpy() for p in tnet.parameters()]
    got = [p.value.T if p.value.ndim == 2 else p.value for p in net.parameters()]
    assert len(got) == len(want)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    tbns = [m for m in tnet.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    for bn, tb in zip(net.batchnorms(), tbns, strict=True):
        np.testing.assert_allclose(bn.running_mean, tb.running_mean.numpy(), rtol=1e-10,
                                   atol=1e-12)
        np.testing.assert_allclose(bn.running_var, tb.running_var.numpy(), rtol=1e-10)


class _no_warning:
    def __enter__(self):
        import warnings
        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("error")

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)


def test_trainer_reproducible_from_one_seed():
    x, y = _data(40, 1)

    def run(seed, dtype="float32", dropout=0.2):
        net = dl.mlp(SIZES, "tanh", seed=2, dtype=dtype, dropout=dropout)
        h = dl.fit(net, x, y, batch_size=6, epochs=2, seed=seed, lr=0.1)
        return h.step_loss, [p.value.copy() for p in net.parameters()]

    (l1, w1), (l2, w2), (l3, _) = run(5), run(5), run(6)
    assert l1 == l2 and all(np.array_equal(a, b) for a, b in zip(w1, w2))
    assert l1 != l3
    assert all(w.dtype == np.float32 for w in w1)
    (l32, _), (l64, w64) = run(5, dropout=0.0), run(5, "float64", dropout=0.0)
    assert all(w.dtype == np.float64 for w in w64)
    np.testing.assert_allclose(l64, l32, rtol=1e-4)  # the same weights and batches


@pytest.mark.parametrize("kind", list(NET_KINDS))
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("extra", [{}, {"dropout": 0.3}, {"dropout": 0.2, "input_dropout": 0.1,
                                                          "dropout_type": "alpha"}])
def test_bridge_matches_predict_on_every_network_kind(kind, dtype, extra):
    kw = {**NET_KINDS[kind], **extra}
    x, y = _data(40, 2)
    net = dl.mlp(SIZES, seed=4, dtype=dtype, **kw)
    dl.fit(net, x, y, batch_size=8, epochs=1, seed=0, lr=0.05)  # running stats move
    modes = ["ema", "population"] if net.batchnorms() else ["ema"]
    for mode in modes:
        net.set_bn_inference(mode)
        if mode == "population":
            net.calibrate(x)
        tnet = to_torch(net).eval()
        with torch.no_grad():
            want = tnet(torch.tensor(x.astype(dtype))).numpy()
        got = net.predict(x)
        assert got.dtype == want.dtype == np.dtype(dtype)
        tol = 1e-12 if dtype == "float64" else 2e-5
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
    kinds = {type(m).__name__ for m in tnet.modules()}
    if extra.get("dropout_type") == "alpha" or (extra and kw["activation"] == "selu"):
        assert "AlphaDropout" in kinds
    elif extra:
        assert "Dropout" in kinds


# -- probe recorder against an independent computation -------------------------------------


def test_probe_recorder_quantities_match_an_independent_computation(f64):
    x, y = _data(60, 5)
    px, py = x[:25], y[:25]
    net = dl.mlp(SIZES, "tanh", seed=7, dtype="float64", bias_init="normal")
    tnet = to_torch(dl.mlp(SIZES, "tanh", seed=7, dtype="float64", bias_init="normal"))
    rec = ProbeRecorder(px, py, every=1000, histogram_steps=(), percentiles=(2, 15, 50, 98))
    dl.fit(net, x, y, batch_size=20, max_steps=1, epochs=None, seed=0, lr=0.1,
           callbacks=[rec])  # step 0 is measured before the first update
    frame = rec.frame()
    at0 = frame[frame.step == 0]

    def q(layer, name):
        v = at0[(at0.layer == layer) & (at0.quantity == name)].value
        assert len(v) == 1, (layer, name)
        return float(v.iloc[0])

    # independent pass in torch: pre-activations s, activations a, dL/ds, dL/dW
    linears = [m for m in tnet if isinstance(m, torch.nn.Linear)]
    h = torch.tensor(px)
    pres = []
    for i, lin in enumerate(linears):
        s = lin(h)
        if i < len(linears) - 1:
            s.retain_grad()
            pres.append(s)
            h = torch.tanh(s)
        else:
            h = s
    loss = F.cross_entropy(h, torch.tensor(py))
    loss.backward()
    assert q(0, "loss") == pytest.approx(loss.item(), rel=1e-12)
    acc = float((h.argmax(1).numpy() == py).mean())
    assert q(0, "acc") == pytest.approx(acc)
    for layer, s in enumerate(pres, start=1):
        sv, gv = s.detach().numpy(), s.grad.numpy()
        av = np.tanh(sv)
        wv, wg = linears[layer - 1].weight.detach().numpy(), linears[layer - 1].weight.grad.numpy()
        want = {
            "pre_mean": sv.mean(), "pre_std": sv.std(), "act_mean": av.mean(),
            "act_std": av.std(), "grad_pre_std": gv.std(), "grad_pre_absmean": np.abs(gv).mean(),
            "weight_std": wv.std(), "weight_grad_std": wg.std(),
            "weight_grad_absmean": np.abs(wg).mean(),
            "saturated_frac": (1 - av**2 < 0.05).mean(),
            "dead_frac": ((1 - av**2) == 0).all(axis=0).mean(),
        }
        for k in (2, 15, 50, 98):
            want[f"pre_p{k}"] = np.percentile(sv, k)
            want[f"act_p{k}"] = np.percentile(av, k)
        for name, value in want.items():
            assert q(layer, name) == pytest.approx(float(value), rel=1e-9, abs=1e-14), name
        assert math.isnan(q(layer, "inactive_frac"))


# -- optimizers: every option at once, step for step ---------------------------------------

ALL_OPTIONS = [
    ("sgd", "SGD", dict(lr=0.03, momentum=0.8, dampening=0.25, weight_decay=0.05,
                        maximize=True)),
    ("sgd", "SGD", dict(lr=0.03, momentum=0.95, nesterov=True, weight_decay=0.02,
                        maximize=True)),
    ("adagrad", "Adagrad", dict(lr=0.2, lr_decay=0.03, weight_decay=0.04,
                                initial_accumulator_value=0.3, eps=1e-6, maximize=True)),
    ("adadelta", "Adadelta", dict(lr=0.8, rho=0.7, eps=1e-4, weight_decay=0.03,
                                  maximize=True)),
    ("rmsprop", "RMSprop", dict(lr=0.004, alpha=0.8, eps=1e-5, weight_decay=0.05, momentum=0.6,
                                centered=True, maximize=True)),
    ("adam", "Adam", dict(lr=0.02, betas=(0.7, 0.9), eps=1e-6, weight_decay=0.05, amsgrad=True,
                          maximize=True)),
    ("adam", "Adam", dict(lr=0.02, betas=(0.6, 0.95), eps=1e-6, weight_decay=0.1, amsgrad=True,
                          decoupled_weight_decay=True, maximize=True)),
    ("adam", "AdamW", dict(lr=0.02, betas=(0.6, 0.95), weight_decay=0.1, amsgrad=True)),
    ("adamw", "AdamW", dict(lr=0.02, betas=(0.6, 0.95), eps=1e-6, weight_decay=0.1,
                            amsgrad=True, maximize=True)),
    ("nadam", "NAdam", dict(lr=0.01, betas=(0.75, 0.99), eps=1e-5, weight_decay=0.05,
                            momentum_decay=0.01, maximize=True)),
    ("nadam", "NAdam", dict(lr=0.01, betas=(0.75, 0.99), weight_decay=0.05, momentum_decay=0.01,
                            decoupled_weight_decay=True, maximize=True)),
    # maximize without coupled decay (the sign folded into the coefficients) and lerp
    # weights 1 - beta >= 0.5 (torch's second lerp branch)
    ("adam", "Adam", dict(lr=0.02, betas=(0.2, 0.3), amsgrad=True, maximize=True)),
    ("adam", "Adam", dict(lr=0.02, betas=(0.1, 0.4), weight_decay=0.2,
                          decoupled_weight_decay=True, maximize=True)),
    ("rmsprop", "RMSprop", dict(lr=0.004, alpha=0.3, momentum=0.5, centered=True,
                                maximize=True)),
    ("nadam", "NAdam", dict(lr=0.01, betas=(0.1, 0.5), weight_decay=0.1,
                            decoupled_weight_decay=True, maximize=True)),
    ("sgd", "SGD", dict(lr=0.03, momentum=0.7, dampening=-0.5, maximize=True)),
    ("adagrad", "Adagrad", dict(lr=0.2, lr_decay=0.1, maximize=True)),
    ("adadelta", "Adadelta", dict(lr=0.9, rho=0.2, maximize=True)),
    # the ends of the ranges
    ("adam", "Adam", dict(lr=0.02, betas=(0.0, 0.0))),
    # (alpha = 0 centered is left out: v - m^2 = d^2 - d^2, which torch's fused addcmul
    # rounds below 0 (NaN steps) and depthlab computes as 0)
    ("rmsprop", "RMSprop", dict(lr=0.001, alpha=0.0, eps=1e-3, momentum=0.3)),
    ("adadelta", "Adadelta", dict(lr=0.5, rho=1.0)),
    ("adadelta", "Adadelta", dict(lr=0.5, rho=0.0)),
    ("sgd", "SGD", dict(lr=0.05, momentum=0.9, dampening=1.0)),
    ("nadam", "NAdam", dict(lr=0.01, momentum_decay=0.0)),
    ("adagrad", "Adagrad", dict(lr=0.1, eps=0.0, initial_accumulator_value=0.1)),
    ("radam", "RAdam", dict(lr=0.01, betas=(0.75, 0.99), eps=1e-5, weight_decay=0.05,
                            maximize=True)),
    ("radam", "RAdam", dict(lr=0.01, betas=(0.6, 0.9), weight_decay=0.1,
                            decoupled_weight_decay=True, maximize=True)),
    ("adamax", "Adamax", dict(lr=0.02, betas=(0.7, 0.9), eps=1e-6, weight_decay=0.05,
                              maximize=True)),
]


@pytest.mark.parametrize("name,tname,kw", ALL_OPTIONS,
                         ids=[f"{c[1]}-{i}" for i, c in enumerate(ALL_OPTIONS)])
def test_optimizer_with_every_option_matches_torch_for_30_steps(name, tname, kw, f64):
    g = make_rng(21)
    shapes = [(5, 3), (3,), ()]
    init = [g.standard_normal(s) for s in shapes]
    ps = [Parameter(f"p{i}", v.copy(), "weight") for i, v in enumerate(init)]
    ts = [torch.tensor(v.copy(), requires_grad=True) for v in init]
    dl_kw = {**kw, "decoupled_weight_decay": True} if name == "adam" and tname == "AdamW" else kw
    opt = get_optimizer(name, ps, **dl_kw)
    topt = getattr(torch.optim, tname)(ts, **kw)
    for step in range(30):
        for p, t in zip(ps, ts):
            grad = np.sin(3 * p.value) + 0.1 * g.standard_normal(p.value.shape)
            if step % 7 == 3:
                grad = np.zeros_like(grad)  # a zero gradient (a unit that got none)
            p.grad[...] = grad
            t.grad = torch.tensor(grad.copy())
        opt.step()
        topt.step()
        for p, t in zip(ps, ts):
            np.testing.assert_allclose(p.value, t.detach().numpy(), rtol=1e-12, atol=1e-13,
                                       err_msg=f"step {step + 1}")


def test_probe_on_a_batchnorm_relu_net_matches_torch(f64):
    """probe(): s is the batch norm's output (training-mode batch statistics, running statistics
    untouched), inactive/dead fractions of ReLU, gradients of the Dense feeding each layer."""
    from depthlab.probes.oneshot import probe

    x, y = _data(32, 6)
    x[:, 0] = np.abs(x[:, 0])
    kw = dict(batchnorm=True, bn_momentum=0.1, bn_ema_start="zero", init="he_normal")
    net = dl.mlp(SIZES, "relu", seed=8, dtype="float64", **kw)
    with torch.no_grad():  # make some units dead: a large negative beta in the first BN
        net.batchnorms()[0].beta.value[:3] = -50.0
    tnet = to_torch(net)
    running = [bn.running_mean.copy() for bn in net.batchnorms()]
    df = probe(net, x, y, percentiles=(2, 15, 50, 85, 98))
    for bn, r in zip(net.batchnorms(), running):
        np.testing.assert_array_equal(bn.running_mean, r)
    tnet.train()
    pres, h = [], torch.tensor(x)
    for m in tnet:
        h = m(h)
        if isinstance(m, torch.nn.BatchNorm1d):
            h.retain_grad()
            pres.append(h)
    loss = F.cross_entropy(h, torch.tensor(y))
    loss.backward()
    q = {(r.layer, r.quantity): r.value for r in df.itertuples()}
    assert q[0, "loss"] == pytest.approx(loss.item(), rel=1e-12)
    linears = [m for m in tnet if isinstance(m, torch.nn.Linear)]
    for layer, s in enumerate(pres, start=1):
        sv, gv = s.detach().numpy(), s.grad.numpy()
        wg = linears[layer - 1].weight.grad.numpy()
        want = {"pre_mean": sv.mean(), "pre_std": sv.std(), "pre_p50": np.median(sv),
                "act_mean": np.maximum(sv, 0).mean(), "grad_pre_std": gv.std(),
                "inactive_frac": (sv <= 0).mean(), "dead_frac": (sv <= 0).all(0).mean(),
                "weight_grad_std": wg.std(), "weight_grad_absmean": np.abs(wg).mean()}
        for k in (2, 15, 50, 85, 98):
            want[f"pre_p{k}"] = np.percentile(sv, k)
            want[f"act_p{k}"] = np.percentile(np.maximum(sv, 0), k)
        for name, value in want.items():
            assert q[layer, name] == pytest.approx(float(value), rel=1e-9, abs=1e-14), name
        assert math.isnan(q[layer, "saturated_frac"])
    assert q[1, "dead_frac"] >= 3 / 8


@pytest.mark.parametrize("kind", ["plain", "batchnorm", "residual_bn"])
def test_input_output_jacobian_matches_torch(kind, f64):
    from depthlab.probes.jacobian import input_output_jacobian, jacobian_singular_values

    x, y = _data(30, 3)
    net = dl.mlp(SIZES, seed=5, dtype="float64", **NET_KINDS[kind])
    dl.fit(net, x, y, batch_size=10, epochs=1, seed=1, lr=0.05)
    tnet = to_torch(net).eval()
    jac = input_output_jacobian(net, x[:3])
    for e in range(3):
        want = torch.autograd.functional.jacobian(lambda v: tnet(v[None])[0], torch.tensor(x[e]))
        np.testing.assert_allclose(jac[e], want.numpy(), rtol=1e-11, atol=1e-13)
    sv = jacobian_singular_values(net, x[:3])
    np.testing.assert_allclose(sv, np.linalg.svd(jac, compute_uv=False), rtol=1e-12)


@pytest.mark.parametrize("kind", ["residual", "residual_bn"])
def test_probe_gradients_of_residual_blocks_match_torch(kind, f64):
    """dL/ds of every hidden activation, also the first one of a block without batch norm
    (whose stored gradient the skip connection must not receive in place)."""
    from depthlab.probes.oneshot import probe

    x, y = _data(24, 9)
    net = dl.mlp(SIZES, seed=2, dtype="float64", **NET_KINDS[kind])
    tnet = to_torch(net).train()
    acts = []

    def keep(_m, _inp, out):
        out.retain_grad()
        acts.append(_inp[0])
        _inp[0].retain_grad()

    for m in tnet.modules():
        if isinstance(m, (torch.nn.SELU, torch.nn.ELU)):
            m.register_forward_hook(keep)
    loss = F.cross_entropy(tnet(torch.tensor(x)), torch.tensor(y))
    loss.backward()
    df = probe(net, x, y, percentiles=())
    q = {(r.layer, r.quantity): r.value for r in df.itertuples()}
    assert len(acts) == len(net.probe_points()) == 5
    for layer, s in enumerate(acts, start=1):
        gv = s.grad.numpy()
        assert q[layer, "grad_pre_std"] == pytest.approx(gv.std(), rel=1e-10), layer
        assert q[layer, "grad_pre_absmean"] == pytest.approx(np.abs(gv).mean(), rel=1e-10)
        assert q[layer, "pre_std"] == pytest.approx(s.detach().numpy().std(), rel=1e-10)


@pytest.mark.parametrize("probe_batch", [True, False])
def test_recorder_leaves_training_unchanged_and_update_ratio_is_independent(probe_batch):
    """Same losses, weights, running statistics and dropout masks with and without the recorder;
    update_ratio = ||W_k - W_(k-1)|| / ||W_(k-1)|| of the Dense feeding each layer."""
    x, y = _data(50, 4)
    kw = dict(batchnorm=True, dropout=0.2, bn_momentum=0.2)

    class Weights(dl.training.trainer.Callback):
        def __init__(self):
            self.before, self.after = {}, {}

        def before_update(self, trainer, step):
            self.before[step] = [d.W.value.copy() for d in trainer.net.dense_layers()]

        def after_update(self, trainer, step, loss):
            self.after[step] = [d.W.value.copy() for d in trainer.net.dense_layers()]

    def run(callbacks):
        net = dl.mlp(SIZES, "tanh", seed=1, **kw)
        h = dl.fit(net, x, y, batch_size=8, epochs=2, seed=3, lr=0.1, optimizer="adam",
                   callbacks=callbacks)
        return h, net

    w = Weights()
    rec = ProbeRecorder(x[:20] if probe_batch else None, y[:20] if probe_batch else None,
                        every=3, histogram_steps=())
    h1, n1 = run([rec, w])
    h2, n2 = run([])
    assert h1.step_loss == h2.step_loss
    for a, b in zip(n1.parameters(), n2.parameters()):
        np.testing.assert_array_equal(a.value, b.value)
    for a, b in zip(n1.batchnorms(), n2.batchnorms()):
        np.testing.assert_array_equal(a.running_var, b.running_var)
    f = rec.frame()
    ratios = f[f.quantity == "update_ratio"]
    assert len(ratios) > 0
    for r in ratios.itertuples():
        w0, w1 = w.before[r.step][r.layer - 1], w.after[r.step][r.layer - 1]
        want = np.linalg.norm(w1 - w0) / np.linalg.norm(w0)
        assert r.value == pytest.approx(float(want), rel=1e-5), (r.step, r.layer)


@pytest.mark.parametrize("kind", list(NET_KINDS))
def test_whole_network_parameter_gradients_by_finite_differences(kind):
    x, y = _data(9, 12)
    net = dl.mlp(SIZES, seed=6, dtype="float64", **NET_KINDS[kind])
    loss = get_loss("cross_entropy")
    for bn in net.batchnorms():  # non-trivial gamma and beta
        bn.gamma.value[...] = make_rng(1).uniform(0.5, 1.5, bn.n)
        bn.beta.value[...] = make_rng(2).normal(0, 0.3, bn.n)

    def f(_):
        return loss.forward(net.forward(x, training=True), y)

    f(None)
    net.backward(loss.backward())
    for p in net.parameters():
        analytic = p.grad.copy()
        assert fd_err(analytic, numeric_grad(f, p.value)) < 1e-7, p.name


@pytest.mark.parametrize("n,bs,epochs,bn", [(10, 4, 3, False), (10, 3, 2, True), (7, 7, 2, False),
                                             (5, 1, 1, False), (6, 100, 2, True)])
def test_trainer_epochs_batches_and_last_partial_batch(n, bs, epochs, bn):
    """Every row once per epoch, in the seed's permutation; a last partial batch; with batch
    norm a last batch of one row merged into the one before; full batch when bs >= n."""
    x, y = _data(n, 13)
    x[:, 0] = np.arange(n)  # row ids travel through the first Dense's cached input
    seen: list[np.ndarray] = []

    class Rows(dl.training.trainer.Callback):
        def before_update(self, trainer, step):
            seen.append(trainer.net.dense_layers()[0].x[:, 0].astype(int).copy())

    net = dl.mlp(SIZES, "tanh", seed=0, dtype="float64", batchnorm=bn)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hist = dl.fit(net, x, y, batch_size=bs, epochs=epochs, seed=4, lr=0.01,
                      callbacks=[Rows()])
    b = min(bs, n)
    merge = bn and b < n and n % b == 1
    per_epoch = math.ceil(n / b) - merge
    assert len(seen) == len(hist.step_loss) == per_epoch * epochs
    assert len(hist.epochs) == epochs
    gen = make_rng(4)
    for e in range(epochs):
        rows = np.concatenate(seen[e * per_epoch:(e + 1) * per_epoch])
        want = gen.permutation(n) if b < n else np.arange(n)
        np.testing.assert_array_equal(rows, want)
        sizes = [len(s) for s in seen[e * per_epoch:(e + 1) * per_epoch]]
        assert all(s == b for s in sizes[:-1]) and sizes[-1] == (
            b + 1 if merge else n - b * (per_epoch - 1))


# -- persistence -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(NET_KINDS))
def test_saved_network_predicts_the_same_after_switching_batchnorm_inference(kind, tmp_path):
    """save/load after ``set_bn_inference("population")`` + calibrate (the loaded network used
    the EMA statistics: the recipe still said "ema"), and to_torch of the loaded network."""
    x, y = _data(40, 14)
    net = dl.mlp(SIZES, seed=1, dtype="float64", dropout=0.2, **NET_KINDS[kind])
    dl.fit(net, x, y, batch_size=8, epochs=2, lr=0.1, seed=0)
    for mode in ("population", "ema"):
        net.set_bn_inference(mode)
        if mode == "population":
            net.calibrate(x)
        loaded = dl.load(dl.save(net, tmp_path / f"{kind}-{mode}.npz"))
        np.testing.assert_array_equal(loaded.predict(x), net.predict(x))
        with torch.no_grad():
            want = to_torch(loaded).eval()(torch.tensor(x)).numpy()
        np.testing.assert_allclose(loaded.predict(x), want, rtol=1e-12, atol=1e-13)
    with pytest.raises(ValueError, match="'median'"):
        net.set_bn_inference("median")


@pytest.mark.parametrize("opt,tname,kw", [
    ("sgd", "SGD", dict(lr=0.05, momentum=0.9)), ("adam", "Adam", dict(lr=0.01, amsgrad=True)),
    ("rmsprop", "RMSprop", dict(lr=0.01, centered=True)), ("nadam", "NAdam", dict(lr=2e-3)),
    ("adadelta", "Adadelta", dict(lr=1.0)), ("adagrad", "Adagrad", dict(lr=0.01))])
def test_float32_training_stays_float32_and_tracks_torch_float32(opt, tname, kw):
    x, y = _data(30, 15)
    x = x.astype(np.float32)
    spec = dict(activation="relu", batchnorm=True, bn_momentum=0.1, bn_ema_start="zero")
    net = dl.mlp(SIZES, seed=3, **spec)
    tnet = to_torch(dl.mlp(SIZES, seed=3, **spec))
    hist = dl.fit(net, x, y, batch_size=7, epochs=3, seed=1, optimizer=opt, **kw)
    topt = getattr(torch.optim, tname)(tnet.parameters(), **kw)
    losses = []
    for idx in _torch_batches(30, 7, 3, 1, True):
        topt.zero_grad()
        loss = F.cross_entropy(tnet(torch.tensor(x[idx])), torch.tensor(y[idx]))
        loss.backward()
        topt.step()
        losses.append(loss.item())
    assert all(p.value.dtype == np.float32 and p.grad.dtype == np.float32
               for p in net.parameters())
    np.testing.assert_allclose(hist.step_loss, losses, rtol=1e-4)
    for p, q in zip(net.parameters(), tnet.parameters()):
        w = p.value.T if p.value.ndim == 2 else p.value
        np.testing.assert_allclose(w, q.detach().numpy(), rtol=1e-3, atol=1e-4)


def test_trainer_l1_l2_penalties_on_weights_only_match_torch(f64):
    x, y = _data(24, 16)
    kw = dict(activation="tanh", batchnorm=True, bn_momentum=0.1, bn_ema_start="zero")
    net = dl.mlp(SIZES, seed=2, dtype="float64", **kw)
    tnet = to_torch(dl.mlp(SIZES, seed=2, dtype="float64", **kw))
    l1, l2 = 1e-3, 5e-3
    hist = dl.fit(net, x, y, batch_size=8, epochs=2, seed=5, lr=0.1, l1=l1, l2=l2)
    topt = torch.optim.SGD(tnet.parameters(), lr=0.1)
    weights = [m.weight for m in tnet if isinstance(m, torch.nn.Linear)]
    losses = []
    for idx in _torch_batches(24, 8, 2, 5, True):
        topt.zero_grad()
        loss = F.cross_entropy(tnet(torch.tensor(x[idx])), torch.tensor(y[idx]))
        loss = loss + sum(l1 * w.abs().sum() + l2 * (w * w).sum() for w in weights)
        loss.backward()
        topt.step()
        losses.append(loss.item())
    np.testing.assert_allclose(hist.step_loss, losses, rtol=1e-12)
    for p, q in zip(net.parameters(), tnet.parameters()):
        w = p.value.T if p.value.ndim == 2 else p.value
        np.testing.assert_allclose(w, q.detach().numpy(), rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("name,kw", [
    ("sgd", {"lr": float("inf")}), ("sgd", {"momentum": float("inf")}),
    ("sgd", {"dampening": float("-inf")}), ("adam", {"eps": float("inf")}),
    ("adam", {"weight_decay": float("inf")}), ("nadam", {"momentum_decay": float("inf")}),
    ("adagrad", {"initial_accumulator_value": float("inf")}), ("rmsprop", {"alpha": 1.5}),
    ("rmsprop", {"momentum": float("inf")})])
def test_optimizer_refuses_infinite_hyperparameters_and_rmsprop_alpha_above_one(name, kw):
    """An infinite setting (or RMSprop alpha > 1: a negative square average, NaN steps) was
    accepted; the error names the value and what is accepted."""
    key, value = next(iter(kw.items()))
    with pytest.raises(ValueError, match=f"{key} value: {value!r}; expected a finite number"):
        get_optimizer(name, [Parameter("w", np.zeros(2))], **kw)
    opt = get_optimizer(name, [Parameter("w", np.zeros(2))])
    with pytest.raises(ValueError, match="inf"):
        opt.lr = float("inf")


def test_penalty_strengths_numpy_numbers_accepted_bools_refused():
    """np.float32(0.1) was refused with 'must be a finite number >= 0, got 0.1' and True was
    taken for 1."""
    w = [Parameter("w", np.ones(3), "weight")]
    assert penalty(w, l2=np.float32(0.5)) == pytest.approx(1.5)
    add_penalty_gradient(w, l1=np.float64(0.25))
    np.testing.assert_allclose(w[0].grad, 0.25)
    for bad, exc in ((True, TypeError), ("0.1", TypeError), (-1.0, ValueError),
                     (float("nan"), ValueError)):
        with pytest.raises(exc, match=repr(bad) if bad == bad else "nan"):
            penalty(w, l1=bad)


def test_recorder_training_batch_mode_reads_the_next_updates_batch():
    """probe_x=None: step k's statistics are those of update k + 1's mini-batch (the weights
    after k updates), its loss the history's loss of that update."""
    x, y = _data(40, 17)
    seen = {}

    class Caches(dl.training.trainer.Callback):
        def before_update(self, trainer, step):
            p = trainer.net.probe_points()[1]
            seen[step] = (p.activation.s.std(), np.abs(p.activation.grad_s).mean(),
                          p.dense.W.grad.std())

    net = dl.mlp(SIZES, "tanh", seed=1, dtype="float64")
    rec = ProbeRecorder(every=1, histogram_steps=())
    hist = dl.fit(net, x, y, batch_size=10, epochs=1, lr=0.1, callbacks=[Caches(), rec])
    f = rec.frame()
    for k in range(4):
        row = f[f.step == k].set_index(["layer", "quantity"]).value
        assert row[0, "loss"] == hist.step_loss[k]
        assert row[2, "pre_std"] == pytest.approx(seen[k + 1][0], rel=1e-12)
        assert row[2, "grad_pre_absmean"] == pytest.approx(seen[k + 1][1], rel=1e-12)
        assert row[2, "weight_grad_std"] == pytest.approx(seen[k + 1][2], rel=1e-12)
    assert set(f[f.step == 4].quantity) == {"update_ratio"}


@pytest.mark.parametrize("loss,kw", [("mse", {}), ("huber", {"delta": 0.3}),
                                     ("binary_cross_entropy", {}),
                                     ("cross_entropy", {"label_smoothing": 0.15})])
def test_trainer_with_every_loss_matches_torch(loss, kw, f64):
    x, labels = _data(21, 18)
    g = make_rng(5)
    y = {"mse": g.standard_normal((21, 3)), "huber": g.standard_normal((21, 3)) * 2,
         "binary_cross_entropy": (g.random((21, 3)) < 0.4).astype(float),
         "cross_entropy": labels}[loss]
    net = dl.mlp(SIZES, "softsign", seed=4, dtype="float64", bias_init="normal")
    tnet = to_torch(dl.mlp(SIZES, "softsign", seed=4, dtype="float64", bias_init="normal"))
    hist = dl.fit(net, x, y, loss=loss, loss_kwargs=kw, batch_size=5, epochs=2, seed=2,
                  optimizer="adam", lr=0.01)
    topt = torch.optim.Adam(tnet.parameters(), lr=0.01)
    ref = {"mse": lambda z, t: F.mse_loss(z, t),
           "huber": lambda z, t: F.huber_loss(z, t, delta=0.3),
           "binary_cross_entropy": F.binary_cross_entropy_with_logits,
           "cross_entropy": lambda z, t: F.cross_entropy(z, t, label_smoothing=0.15)}[loss]
    losses = []
    for idx in _torch_batches(21, 5, 2, 2, False):
        topt.zero_grad()
        value = ref(tnet(torch.tensor(x[idx])), torch.tensor(y[idx]))
        value.backward()
        topt.step()
        losses.append(value.item())
    np.testing.assert_allclose(hist.step_loss, losses, rtol=1e-11)
    for p, q in zip(net.parameters(), tnet.parameters()):
        w = p.value.T if p.value.ndim == 2 else p.value
        np.testing.assert_allclose(w, q.detach().numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("eps", [0.0, 0.1])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_cross_entropy_probability_rows_not_summing_to_one(eps, dtype):
    """Multi-hot or unnormalised probability rows: the gradient is softmax(z) sum(y) - y (it
    was softmax(z) - y, disagreeing with its own forward and with torch)."""
    z = make_rng(0).standard_normal((4, 4))
    y = np.array([[1, 1, 0, 0], [0.2, 0.2, 0.2, 0.2], [0.5, 0.5, 0, 0], [0, 0, 0, 0.0]])
    loss = get_loss("cross_entropy", label_smoothing=eps)
    value = loss.forward(z.astype(dtype), y)
    grad = loss.backward()
    assert grad.dtype == dtype
    tz = torch.tensor(z, requires_grad=True)
    tl = F.cross_entropy(tz, torch.tensor(y), label_smoothing=eps)
    tl.backward()
    tol = 1e-12 if dtype == np.float64 else 1e-6
    assert value == pytest.approx(tl.item(), rel=tol)
    np.testing.assert_allclose(grad, tz.grad.numpy(), rtol=10 * tol, atol=tol)
    if dtype == np.float64:
        num = numeric_grad(lambda q: loss.forward(q, y), z.copy())
        assert fd_err(grad, num) < 1e-8


def test_bridge_on_a_hand_built_network_with_standardize_and_nested_residuals(f64):
    """Standardize, Dense without bias, BatchNorm, a residual whose branch ends in an activation
    and holds another residual: forward and every gradient in training mode equal torch's."""
    g = make_rng(19)
    x = g.standard_normal((12, 4)) * [1.0, 10.0, 0.1, 3.0] + 2.0
    up = g.standard_normal((12, 2))
    inner = Residual(Sequential([Activation("gelu"), Dense(6, 6, rng=3, dtype="float64")]))
    branch = Sequential([Dense(6, 6, rng=4, dtype="float64"), inner, Activation("sigmoid")])
    net = Network([Standardize.fit(x, np.float64), Dense(4, 6, bias=False, rng=1,
                                                             dtype="float64"),
                   BatchNorm(6, dtype="float64"), Activation("elu", alpha=0.7), Residual(branch),
                   Dense(6, 2, rng=5, dtype="float64")], n_inputs=4, dtype="float64")
    tnet = to_torch(net).train()
    out = net.forward(x, training=True)
    gx = net.backward(up)
    tx = torch.tensor(x, requires_grad=True)
    tout = tnet(tx)
    tout.backward(torch.tensor(up))
    np.testing.assert_allclose(out, tout.detach().numpy(), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=1e-10, atol=1e-13)
    for p, q in zip(net.parameters(), tnet.parameters(), strict=True):
        grad = p.grad.T if p.grad.ndim == 2 else p.grad
        np.testing.assert_allclose(grad, q.grad.numpy(), rtol=1e-10, atol=1e-13)


def test_every_registered_initializer_is_covered_and_more_torch_equivalents():
    from depthlab.initializers import REGISTRY as INIT_REGISTRY

    covered = {c[0] for c in INIT_VARIANCE} | {"zeros", "constant"}
    assert covered == set(INIT_REGISTRY.names)
    np.testing.assert_array_equal(get_initializer("zeros")((3, 2), 0, "float64"), 0)
    c = get_initializer("constant", value=-0.25)((3, 2), 0, "float32")
    assert c.dtype == np.float32 and (c == -0.25).all()
    assert weight_variance("constant", 3, 2, value=1.0) == 0.0
    fi, fo = 300, 200
    t = torch.nn.init.kaiming_normal_(torch.empty(fo, fi, dtype=torch.float64),
                                      nonlinearity="linear").numpy()  # = LeCun normal
    assert t.var() == pytest.approx(weight_variance("lecun_normal", fi, fo), rel=0.03)
    lin = torch.nn.Linear(fi, fo)  # default kaiming_uniform_(a=sqrt 5) = U(+-1/sqrt fan_in)
    w = get_initializer("fan_in_uniform")((fi, fo), make_rng(0), "float64")
    bound = 1 / math.sqrt(fi)
    assert float(lin.weight.abs().max()) <= bound and np.abs(w).max() <= bound
    assert lin.weight.detach().numpy().var() == pytest.approx(w.var(), rel=0.04)


def test_every_registered_loss_and_optimizer_is_covered():
    from depthlab.losses import LOSSES
    from depthlab.optimizers import OPTIMIZERS

    assert {c[0] for c in LOSS_CASES} == set(LOSSES)
    assert {c[0] for c in ALL_OPTIONS} == set(OPTIMIZERS)


def test_a_second_fit_trains_its_own_epochs_and_continues_the_first():
    """Trainer.fit twice with epochs=1 = once with epochs=2 (same batches, optimizer state and
    weights); max_steps likewise counts per call (the second call trained one epoch, or one
    step, because the counters were compared with the totals of both calls)."""
    from depthlab.training.trainer import Trainer

    x, y = _data(30, 20)

    def trainer(**kw):
        net = dl.mlp(SIZES, "tanh", seed=1, dtype="float64", batchnorm=True, dropout=0.1)
        return Trainer(net, batch_size=7, lr=0.05, optimizer="sgd", momentum=0.9, seed=3, **kw)

    once = trainer(epochs=2)
    h_once = once.fit(x, y)
    twice = trainer(epochs=1)
    twice.fit(x, y)
    h_twice = twice.fit(x, y)
    assert h_twice.step_loss == h_once.step_loss and len(h_once.step_loss) == 10
    assert [e["epoch"] for e in h_twice.epochs] == [1, 2]
    for a, b in zip(once.net.parameters(), twice.net.parameters()):
        np.testing.assert_array_equal(a.value, b.value)
    steps = trainer(epochs=None, max_steps=3)
    steps.fit(x, y)
    assert len(steps.fit(x, y).step_loss) == 6 and steps.step == 6
