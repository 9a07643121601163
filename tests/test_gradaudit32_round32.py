"""Gradient audit (round 32): every registered differentiable component of the NumPy engine,
checked by float64 central differences and against torch autograd on the same numbers, at the
awkward points the older tests step around: kinks at exactly 0, ``x = +-1e-8``, saturation at
``|x| = 30``, logits of 1e3, ties in a row's max, BCE targets of exactly 0 and 1, Huber at
``|r| = delta`` exactly, a batch of one row, every loss alias with its keyword arguments, the
activations' less common settings (``gelu(approximate="tanh")``, ``swish(beta=0 / -1)``,
``leaky_relu(negative_slope=0)``, ``elu(alpha<0)``, ``penalized_tanh(a<0)``), Dense without a
bias, BatchNorm with a constant feature and torch's cumulative momentum, Dropout and
AlphaDropout with their mask held fixed, Residual branches of every shape, and whole networks
with L1 (at w = 0) and L2 penalties through the trainer's ``copy=False`` backward."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.gradcheck import fd_err, numeric_grad, rel_err
from helpers.torchref import depthlab_loss

from depthlab import regularizers
from depthlab.activations import ACTIVATIONS, get_activation
from depthlab.layers import (
    Activation,
    AlphaDropout,
    BatchNorm,
    Dense,
    Dropout,
    Residual,
    Sequential,
)
from depthlab.losses import LOSSES, get_loss
from depthlab.losses import REGISTRY as LOSS_REGISTRY
from depthlab.models import mlp
from depthlab.parameter import Parameter

F = torch.nn.functional
T64 = torch.float64


def _t(x, grad=False):
    return torch.tensor(np.asarray(x), dtype=T64, requires_grad=grad)


def _pen_tanh(a):
    return lambda s: torch.where(s > 0, torch.tanh(s), a * torch.tanh(s))


# (name, kwargs, torch reference, kinked at 0): every registered activation, plus the settings
# test_activations.py does not reach
ACT_CASES = [
    ("sigmoid", {}, torch.sigmoid, False),
    ("tanh", {}, torch.tanh, False),
    ("identity", {}, lambda s: s.clone(), False),
    ("step", {}, lambda s: (s > 0).to(s.dtype) + 0 * s, True),
    ("relu", {}, F.relu, True),
    ("leaky_relu", {"negative_slope": 0.0}, lambda s: F.leaky_relu(s, 0.0), True),
    ("leaky_relu", {"negative_slope": 2.0}, lambda s: F.leaky_relu(s, 2.0), True),
    ("elu", {"alpha": -0.5}, lambda s: F.elu(s, -0.5), True),
    ("selu", {}, F.selu, True),
    ("swish", {"beta": 0.0}, lambda s: s * torch.sigmoid(0.0 * s), False),
    ("swish", {"beta": -1.0}, lambda s: s * torch.sigmoid(-s), False),
    ("softmax", {}, lambda s: torch.softmax(s, dim=-1), False),
    ("softsign", {}, F.softsign, False),
    ("gelu", {}, F.gelu, False),
    ("gelu", {"approximate": "tanh"}, lambda s: F.gelu(s, approximate="tanh"), False),
    ("mish", {}, F.mish, False),
    ("penalized_tanh", {"a": -1.0}, _pen_tanh(-1.0), True),
    ("softplus", {"beta": -1.5}, lambda s: F.softplus(s, -1.5), False),
    ("logsigmoid", {}, F.logsigmoid, False),
    ("hardtanh", {"min_val": 0.0, "max_val": 4.0}, lambda s: F.hardtanh(s, 0.0, 4.0), True),
    ("relu6", {}, F.relu6, True),
    ("hardsigmoid", {}, F.hardsigmoid, False),
    ("hardswish", {}, F.hardswish, False),
]
ACT_IDS = [n + "".join(f"-{k}={v}" for k, v in kw.items()) for n, kw, _, _ in ACT_CASES]

# rows: exact zeros (and -0.0), +-1e-8, saturation at 30, 1e3, ties, an ordinary row
AWKWARD = np.array([
    [0.0, -0.0, 0.0, 0.0],
    [1e-8, -1e-8, 2e-8, -3e-8],
    [30.0, -30.0, 29.5, -29.5],
    [1e3, -1e3, 1e3, 0.0],
    [5.0, 5.0, 5.0, 5.0],
    [-2.3, -0.7, 0.4, 1.9],
])


def test_every_registered_activation_and_loss_is_audited():
    assert {c[0] for c in ACT_CASES} == set(ACTIVATIONS)
    assert set(LOSS_CASES) == set(LOSSES)


@pytest.mark.parametrize("name,kwargs,tfn,kink", ACT_CASES, ids=ACT_IDS)
def test_activation_backward_at_awkward_points(name, kwargs, tfn, kink):
    """backward == torch autograd (1e-10) on every row, == f'(s) * g, and == central
    differences (1e-6) wherever the step h = 1e-6 does not straddle a kink."""
    f = get_activation(name, **kwargs)
    g = np.random.default_rng(0).standard_normal(AWKWARD.shape)
    for x in (AWKWARD, AWKWARD[5:, :1]):  # the last: a batch of one row, one unit
        gx = g[:x.shape[0], :x.shape[1]]
        st = _t(x, grad=True)
        at = tfn(st)
        at.backward(_t(gx))
        a = f.forward(x.copy())
        got = f.backward(x.copy(), a.copy(), gx.copy())
        assert rel_err(a, at.detach().numpy(), 1e-300) < 1e-12, name
        assert rel_err(got, st.grad.numpy(), 1e-300) < 1e-10, (name, got, st.grad.numpy())
        if f.elementwise:
            assert rel_err(f.derivative(x.copy(), a) * gx, got, 1e-300) < 1e-12, name
    if name == "step":
        return  # f' = 0 by convention; the difference quotient at 0 is not a derivative
    a = f.forward(AWKWARD.copy())
    got = f.backward(AWKWARD.copy(), a, g.copy())
    num = numeric_grad(lambda z: float(np.sum(f.forward(z.copy()) * g)), AWKWARD.copy())
    if kink:  # no difference across s = 0: compared where |s| > h only
        off = np.abs(AWKWARD) > 1e-5
        got, num = got[off], num[off]
    assert fd_err(got, num) < 1e-6, (name, got, num)


Z = np.array([[1.0, -2.0, 0.5], [0.3, 0.3, -1.0]])
# canonical name -> [(kwargs, logits, target)]
LOSS_CASES = {
    "mse": [({}, Z, np.array([[0.0, 1, 2], [1, 1, -1]])),
            ({}, np.array([[0.3]]), np.array([0.4]))],  # batch of one, (B, 1) with (B,)
    "huber": [({"delta": d}, Z, Z - np.array([[d, -d, 0.0], [0.3 * d, 3 * d, -d]]))
              for d in (1.0, 0.25, 3.0)],  # |r| = delta exactly, inside and outside
    "binary_cross_entropy": [
        ({}, Z, np.array([[0.0, 1, 1], [1, 0, 0.3]])),
        ({}, np.array([[1e3, -1e3, 30.0, -30.0]]), np.array([[0.0, 1, 1, 0]])),  # wrong 1e3
        ({}, np.array([[0.0, 1e-8, -1e-8]]), np.array([[0.0, 1, 0.5]])),
    ],
    "cross_entropy": [
        ({"label_smoothing": eps}, z, y)
        for eps in (0.0, 0.1, 1.0)
        for z, y in (
            (Z, np.array([2, 0])),
            (np.array([[1e3, -1e3, 0.0]]), np.array([1])),  # batch of one, confidently wrong
            (np.array([[5.0, 5.0, 5.0], [1e3, 1e3, -1e3]]), np.array([0, 1])),  # ties in max
            (Z, np.array([[0.2, 0.5, 0.3], [0.0, 0.0, 1.0]])),  # probability rows
            (Z, np.array([[0.2, 0.5, 0.9], [0.0, 0.0, 0.0]])),  # rows not summing to 1
        )
    ],
}
LOSS_PARAMS = [(n, kw, z, y) for n, cases in LOSS_CASES.items() for kw, z, y in cases]


@pytest.mark.parametrize("name,kwargs,z,y", LOSS_PARAMS)
def test_loss_every_alias_matches_torch_and_finite_differences(name, kwargs, z, y):
    """Each name and alias of the loss gives torch's value and gradient (1e-10) and the
    central differences of its own forward (1e-6)."""
    names = [name] + [a for a, t in LOSS_REGISTRY.aliases.items() if t == name]
    zt = _t(z, grad=True)
    if name == "cross_entropy" and y.ndim == 1:
        yt = torch.tensor(y, dtype=torch.long)
    else:
        yt = _t(y).reshape(z.shape)
    ref = depthlab_loss(name, kwargs, zt, yt)
    ref.backward()
    for alias in names:
        loss = get_loss(alias, **kwargs)
        v = loss.forward(z.copy(), y.copy())
        g = loss.backward()
        assert abs(v - ref.item()) <= 1e-12 * max(1.0, abs(ref.item())), (alias, v, ref.item())
        assert rel_err(g, zt.grad.numpy(), 1e-300) < 1e-10, (alias, g, zt.grad.numpy())
    # Huber: h = 1e-7, as at |r| = delta it is C1 but not C2 and a central difference errs by
    # about h / 4 there (1e-6 relative at h = 1e-6: the difference's truncation error); the
    # others keep h = 1e-6 (round-off eps |L| / h of a loss of 1e3 at h = 1e-7: 2e-6)
    h = 1e-7 if name == "huber" else 1e-6
    num = numeric_grad(lambda p: get_loss(name, **kwargs).forward(p.copy(), y), z.copy(), h)
    assert fd_err(g, num) < 1e-6, (name, g, num)


def _layer_fd(layer, x, g, training=True, reset=lambda: None):
    """max fd_err of dL/dx and each dL/dp of L = sum(g * layer(x)) (float64)."""
    def f(_=None):
        reset()
        return float(np.sum(layer.forward(x, training) * g))
    reset()
    layer.forward(x, training)
    dx = layer.backward(g.copy())
    errs = [fd_err(dx, numeric_grad(f, x))]
    grads = [p.grad.copy() for p in layer.parameters()]
    errs += [fd_err(gp, numeric_grad(f, p.value)) for gp, p in zip(grads, layer.parameters())]
    return max(errs), dx, grads


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batch", [1, 3])
def test_dense_with_and_without_bias(bias, batch):
    d = Dense(4, 3, bias=bias, rng=0, dtype="float64", init="he_normal", bias_init="normal")
    r = np.random.default_rng(1)
    x, g = r.standard_normal((batch, 4)), r.standard_normal((batch, 3))
    err, dx, grads = _layer_fd(d, x, g)
    assert err < 1e-6
    lin = torch.nn.Linear(4, 3, bias=bias, dtype=T64)
    with torch.no_grad():
        lin.weight.copy_(_t(d.W.value.T))
        if bias:
            lin.bias.copy_(_t(d.b.value))
    xt = _t(x, grad=True)
    lin(xt).backward(_t(g))
    assert rel_err(dx, xt.grad.numpy(), 1e-300) < 1e-12
    assert rel_err(grads[0], lin.weight.grad.numpy().T, 1e-300) < 1e-12
    if bias:
        assert rel_err(grads[1], lin.bias.grad.numpy(), 1e-300) < 1e-12
    assert len(grads) == (2 if bias else 1)


@pytest.mark.parametrize("momentum", [0.1, None])
def test_batchnorm_constant_feature_cumulative_momentum_train_and_eval(momentum):
    """Training backward (a batch of 2, and a batch of 5 with a constant feature) by finite
    differences and against torch's BatchNorm1d over three steps, running statistics included
    (``momentum=None``: torch's cumulative average); eval backward with a batch of one row."""
    r = np.random.default_rng(2)
    gamma, beta = np.array([1.5, -0.5, 0.7]), np.array([0.1, 0.2, -0.3])
    bn = BatchNorm(3, dtype="float64", momentum=momentum, ema_start="zero")
    bn.gamma.value[...], bn.beta.value[...] = gamma, beta
    tb = torch.nn.BatchNorm1d(3, momentum=momentum, dtype=T64)
    with torch.no_grad():
        tb.weight.copy_(_t(gamma))
        tb.bias.copy_(_t(beta))
    for step, batch in enumerate((2, 5, 5)):
        x = r.standard_normal((batch, 3))
        if step == 1:
            x[:, 2] = 4.0  # a constant feature: var 0, only eps in the denominator
        g = r.standard_normal((batch, 3))
        bn.update_stats = False
        err, _, _ = _layer_fd(bn, x, g)
        assert err < 1e-6, (step, err)
        bn.update_stats = True
        y = bn.forward(x.copy(), True)
        dx = bn.backward(g.copy())
        xt = _t(x, grad=True)
        yt = tb(xt)
        yt.backward(_t(g))
        for ours, ref in ((y, yt.detach()), (dx, xt.grad), (bn.gamma.grad, tb.weight.grad),
                          (bn.beta.grad, tb.bias.grad), (bn.running_mean, tb.running_mean),
                          (bn.running_var, tb.running_var)):
            assert rel_err(ours, ref.numpy(), 1e-300) < 1e-10, step
        tb.weight.grad = tb.bias.grad = None
    tb.eval()
    bn.update_stats = False
    x, g = r.standard_normal((1, 3)), r.standard_normal((1, 3))
    err, dx, grads = _layer_fd(bn, x, g, training=False)
    assert err < 1e-6
    xt = _t(x, grad=True)
    tb(xt).backward(_t(g))
    assert rel_err(dx, xt.grad.numpy(), 1e-300) < 1e-12
    assert rel_err(grads[0], tb.weight.grad.numpy(), 1e-300) < 1e-12
    assert rel_err(grads[1], tb.bias.grad.numpy(), 1e-300) < 1e-12


@pytest.mark.parametrize("cls", [Dropout, AlphaDropout])
def test_dropout_and_alpha_dropout_with_a_fixed_mask(cls):
    """With the mask held fixed (the generator's state restored before each forward) the
    backward is the derivative of the forward, and equals torch autograd through the written
    formula with that mask: x m / (1 - p), or A (x m + a'(1 - m)) + B."""
    p = 0.3
    layer = cls(p, rng=0)
    r = np.random.default_rng(3)
    x, g = r.standard_normal((3, 4)), r.standard_normal((3, 4))
    state = layer.rng.bit_generator.state

    def reset():
        layer.rng.bit_generator.state = state

    err, dx, _ = _layer_fd(layer, x, g, reset=reset)
    assert err < 1e-6
    reset()
    y = layer.forward(x.copy(), True)
    m = _t(layer.mask != 0)
    assert 0 < m.sum() < m.numel()  # some dropped, some kept
    xt = _t(x, grad=True)
    if cls is Dropout:
        yt = xt * m / (1 - p)
    else:
        a_prime = -1.0507009873554804934193349852946 * 1.6732632423543772848170429916717
        big_a = ((1 - p) * (1 + p * a_prime**2)) ** -0.5
        yt = big_a * (xt * m + a_prime * (1 - m)) - big_a * a_prime * p
    yt.backward(_t(g))
    assert rel_err(y, yt.detach().numpy(), 1e-300) < 1e-12
    assert rel_err(dx, xt.grad.numpy(), 1e-300) < 1e-12
    err, dx, _ = _layer_fd(layer, x, g, training=False)  # inference: the identity
    assert err < 1e-6 and np.array_equal(dx, g)


def _branches():
    return {
        "dense-tanh-dense": Sequential([Dense(3, 3, rng=0, dtype="float64", bias_init="normal"),
                                        Activation("tanh"), Dense(3, 3, rng=1, dtype="float64")]),
        "relu-first": Sequential([Activation("relu"), Dense(3, 3, rng=2, dtype="float64")]),
        "ends-with-bn": Sequential([Dense(3, 3, rng=3, dtype="float64"),
                                    BatchNorm(3, dtype="float64")]),
        "ends-with-act": Sequential([Dense(3, 3, rng=4, dtype="float64"), Activation("elu")]),
        "empty": Sequential([]),
    }


@pytest.mark.parametrize("kind", list(_branches()))
def test_residual_branches(kind):
    branch = _branches()[kind]
    res = Residual(branch)
    for leaf in res.leaves():
        if isinstance(leaf, BatchNorm):
            leaf.update_stats = False
    r = np.random.default_rng(4)
    x, g = r.standard_normal((4, 3)), r.standard_normal((4, 3))
    err, dx, grads = _layer_fd(res, x, g)
    assert err < 1e-6
    if kind == "dense-tanh-dense":  # torch: x + L2(tanh(L1 x))
        d1, d2 = branch.layers[0], branch.layers[2]
        xt = _t(x, grad=True)
        w1, b1, w2, b2 = (_t(v, grad=True) for v in (d1.W.value, d1.b.value, d2.W.value,
                                                     d2.b.value))
        (xt + torch.tanh(xt @ w1 + b1) @ w2 + b2).backward(_t(g))
        for ours, ref in zip([dx, *grads], [xt, w1, b1, w2, b2]):
            assert rel_err(ours, ref.grad.numpy(), 1e-300) < 1e-12
    if kind == "empty":
        assert np.allclose(dx, 2 * g)


def test_penalty_gradient_at_zero_weights_matches_torch():
    """l1 sign(w) + 2 l2 w with sign(0) = 0 (torch's abs backward at 0), at w = 0 and
    w = +-1e-8; a bias is never penalized."""
    w = Parameter("w", np.array([[0.0, -0.5], [1e-8, -1e-8]]), "weight")
    b = Parameter("b", np.array([0.0, 2.0]), "bias")
    for l1, l2 in ((0.3, 0.0), (0.0, 0.2), (0.3, 0.2)):
        w.grad[...] = 0
        b.grad[...] = 0
        regularizers.add_penalty_gradient([w, b], l1, l2)
        wt = _t(w.value, grad=True)
        ref = l1 * wt.abs().sum() + l2 * (wt * wt).sum()
        ref.backward()
        assert rel_err(w.grad, wt.grad.numpy(), 1e-300) < 1e-15
        assert regularizers.penalty([w, b], l1, l2) == pytest.approx(ref.item(), rel=1e-14)
        assert not b.grad.any()


NET_CASES = [
    dict(activation="selu", dropout=0.3, init="lecun_normal"),
    dict(activation="swish", residual=True, batchnorm=True, bn_momentum=None, dropout=0.2,
         output_activation="softmax"),
]


@pytest.mark.parametrize("cfg", NET_CASES, ids=["selu-alphadropout", "res-bn-dropout-softmax"])
@pytest.mark.parametrize("loss_name,kwargs", [("ce", {"label_smoothing": 0.1}),
                                              ("huber_loss", {"delta": 0.3})])
def test_whole_network_with_penalties_by_finite_differences(cfg, loss_name, kwargs):
    """The trainer's gradient (net.backward(copy=False, input_grad=False) plus the L1/L2
    penalty gradient, one weight at exactly 0) is the derivative of loss + penalty, dropout
    masks held fixed; the input gradient too."""
    net = mlp([3, 4, 4, 3], seed=1, dtype="float64", **cfg)
    drops = [leaf for leaf in net.leaves() if isinstance(leaf, Dropout)]
    for leaf in net.leaves():
        if isinstance(leaf, BatchNorm):
            leaf.update_stats = False
    states = [d.rng.bit_generator.state for d in drops]

    def reset():
        for d, s in zip(drops, states):
            d.rng.bit_generator.state = s

    r = np.random.default_rng(5)
    x = r.standard_normal((4, 3))
    y = np.array([0, 2, 1, 2]) if loss_name == "ce" else r.uniform(0, 1, (4, 3))
    loss = get_loss(loss_name, **kwargs)
    params = net.parameters()
    params[0].value[0, 0] = 0.0
    l1, l2 = 0.01, 0.02

    def objective(_=None):
        reset()
        return loss.forward(net.forward(x, True), y) + regularizers.penalty(params, l1, l2)

    objective()
    net.backward(loss.backward(), input_grad=False, copy=False)
    regularizers.add_penalty_gradient(params, l1, l2)
    grads = [p.grad.copy() for p in params]
    for gp, p in zip(grads, params):  # a central difference of |w| at 0 is 0 = sign(0)
        num = numeric_grad(objective, p.value)
        assert fd_err(gp, num) < 1e-6, p.name
    objective()
    gx = net.backward(loss.backward(), input_grad=True, copy=True)
    assert fd_err(gx, numeric_grad(objective, x)) < 1e-6
