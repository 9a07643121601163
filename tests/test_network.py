"""The public network contract: structure, parameter order, exactness against PyTorch."""

import numpy as np
import pytest
import torch  # a dev dependency: required, never skipped
from helpers.gradcheck import fd_err, numeric_grad, rel_err

import depthlab as dl
from depthlab.bridge.torch_bridge import to_torch
from depthlab.layers import Activation, BatchNorm, Dense


def test_parameter_order_and_names():
    net = dl.mlp([6, 5, 4, 3], activation="sigmoid", init="glorot_uniform", dtype="float64", seed=0)
    names = [p.name for p in net.parameters()]
    assert names == ["dense1.W", "dense1.b", "dense2.W", "dense2.b", "dense3.W", "dense3.b"]
    assert [p.value.shape for p in net.parameters()] == [(6, 5), (5,), (5, 4), (4,), (4, 3), (3,)]
    assert isinstance(net.layers[-1], Dense)  # logits out, no activation
    bn = dl.mlp([6, 5, 4, 3], batchnorm=True, seed=0)
    kinds = [(p.name, p.kind) for p in bn.parameters()]
    assert kinds == [
        ("dense1.W", "weight"),
        ("bn1.gamma", "gamma"),
        ("bn1.beta", "beta"),
        ("dense2.W", "weight"),
        ("bn2.gamma", "gamma"),
        ("bn2.beta", "beta"),
        ("dense3.W", "weight"),
        ("dense3.b", "bias"),
    ]
    out = dl.mlp([6, 5, 3], output_activation="softmax", seed=0)
    y = out.forward(np.random.default_rng(0).standard_normal((4, 6)))
    np.testing.assert_allclose(y.sum(1), 1, rtol=1e-6)
    assert len(out.probe_points()) == 1


def _x(n, d, seed=0):
    return np.random.default_rng(seed).standard_normal((n, d))


NETS = [
    dict(sizes=[7, 6, 6, 6, 4], activation="sigmoid", init="glorot_uniform"),
    dict(sizes=[7, 6, 6, 4], activation="tanh", init="fan_in_uniform", batchnorm=True),
    dict(sizes=[7, 6, 6, 6, 4], activation="relu", init="he_normal", batchnorm=True, residual=True),
    dict(sizes=[7, 6, 6, 6, 4], activation="elu", init="he_uniform", residual=True),
    dict(sizes=[7, 8, 8, 4], activation="selu", init="lecun_normal"),
    dict(sizes=[7, 8, 8, 4], activation="leaky_relu", init="orthogonal", bias_init="normal"),
    dict(sizes=[7, 8, 4], activation="swish", init="glorot_normal", output_activation="softmax"),
]


@pytest.mark.parametrize(
    "cfg",
    NETS,
    ids=lambda c: f"{c['activation']}-bn{c.get('batchnorm', 0)}-res{c.get('residual', 0)}",
)
def test_network_matches_torch_forward_backward(cfg):
    net = dl.mlp(**cfg, dtype="float64", seed=3)
    tnet = to_torch(net)
    x = _x(9, 7, 1)
    y = net.forward(x, training=True)
    u = np.random.default_rng(2).standard_normal(y.shape)
    gx = net.backward(u)
    tx = torch.tensor(x, requires_grad=True)
    ty = tnet(tx)
    ty.backward(torch.tensor(u))
    assert rel_err(y, ty.detach().numpy()) < 1e-10
    assert rel_err(gx, tx.grad.numpy()) < 1e-10
    tparams = list(tnet.parameters())
    assert len(tparams) == len(net.parameters())
    for p, tp in zip(net.parameters(), tparams):
        tg = tp.grad.numpy()
        tg = tg.T if p.value.ndim == 2 else tg
        assert rel_err(p.grad, tg) < 1e-10, p.name


@pytest.mark.parametrize("cfg", NETS[:4], ids=lambda c: c["activation"])
def test_network_finite_differences(cfg):
    net = dl.mlp(**cfg, dtype="float64", seed=4)
    for bn in net.batchnorms():
        bn.update_stats = False
    x = _x(5, 7, 5)
    u = np.random.default_rng(6).standard_normal((5, 4))
    net.forward(x)
    gx = net.backward(u)
    grads = [p.grad.copy() for p in net.parameters()]

    def f(_):
        return float(np.sum(u * net.forward(x)))

    assert fd_err(gx, numeric_grad(f, x)) < 1e-6
    for p, g in zip(net.parameters(), grads):
        assert fd_err(g, numeric_grad(f, p.value)) < 1e-6, p.name


def test_backward_does_not_modify_callers_gradient():
    net = dl.mlp([4, 5, 3], activation="sigmoid", seed=0)
    net.forward(_x(6, 4))
    g = np.ones((6, 3), dtype=np.float32)
    net.backward(g)
    assert np.all(g == 1)


def test_float32_by_default_float64_on_request():
    net = dl.mlp([4, 8, 8, 3], activation="tanh", batchnorm=True, dropout=0.2, seed=0)
    y = net.forward(_x(6, 4))  # float64 input is cast
    assert y.dtype == np.float32
    gx = net.backward(np.ones_like(y))
    assert gx.dtype == np.float32
    assert all(p.value.dtype == np.float32 and p.grad.dtype == np.float32 for p in net.parameters())
    for layer in net.leaves():
        for arr in (
            getattr(layer, "s", None),
            getattr(layer, "a", None),
            getattr(layer, "grad_s", None),
        ):
            assert arr is None or arr.dtype == np.float32
    net64 = dl.mlp([4, 8, 3], dtype="float64", seed=0)
    assert net64.forward(_x(2, 4)).dtype == np.float64


def test_same_seed_same_network_different_seed_different():
    a = dl.mlp([5, 6, 3], seed=11, dropout=0.5)
    b = dl.mlp([5, 6, 3], seed=11, dropout=0.5)
    c = dl.mlp([5, 6, 3], seed=12, dropout=0.5)
    for p, q in zip(a.parameters(), b.parameters()):
        assert np.array_equal(p.value, q.value)
    assert not np.array_equal(a.parameters()[0].value, c.parameters()[0].value)
    x = _x(4, 5)
    assert np.array_equal(a.forward(x), b.forward(x))  # dropout masks too


def test_residual_structure_and_depth():
    net = dl.mlp(
        [10] + [16] * 5 + [3], activation="relu", init="he_normal", residual=True, batchnorm=True
    )
    assert net.depth == 1 + 2 * 4 + 1
    assert len(net.probe_points()) == 2 * 4 + 1
    assert all(isinstance(pp.activation, Activation) for pp in net.probe_points())
    assert sum(isinstance(layer, BatchNorm) for layer in net.leaves()) == 9
    with pytest.raises(ValueError, match="equal hidden widths"):
        dl.mlp([10, 16, 8, 3], residual=True)


def test_thousand_layer_residual_network_is_finite():
    net = dl.mlp(
        [8] + [8] * 500 + [2],
        activation="relu",
        init="he_normal",
        batchnorm=True,
        residual=True,
        seed=0,
    )
    assert net.depth == 1000
    y = net.forward(_x(16, 8))
    gx = net.backward(np.ones_like(y))
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(gx))
    assert all(np.isfinite(p.grad).all() for p in net.parameters())


def test_clear_errors_for_bad_input():
    with pytest.raises(ValueError, match='activation = "sigmod" is not a known activation'):
        dl.mlp([3, 4, 2], activation="sigmod")
    with pytest.raises(ValueError, match="xavier"):
        dl.mlp([3, 4, 2], init="xavier")
    with pytest.raises(ValueError, match="dropout rate"):
        dl.mlp([3, 4, 2], dropout=1.5)
    with pytest.raises(ValueError, match="positive integer"):
        dl.mlp([3, 0, 2])
    with pytest.raises(ValueError, match="float16"):
        dl.mlp([3, 4, 2], dtype="float16")
    net = dl.mlp([3, 4, 2])
    with pytest.raises(ValueError, match=r"shape \(5, 4\); expected \(batch, 3\)"):
        net.forward(np.zeros((5, 4)))
    net.forward(np.zeros((5, 3)))
    with pytest.raises(ValueError, match="expected the output shape"):
        net.backward(np.zeros((5, 3)))
