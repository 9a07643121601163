"""Each layer's explicit backward against finite differences (float64) and PyTorch autograd."""

import numpy as np
import pytest
import torch  # a dev dependency: required, never skipped
from helpers.gradcheck import fd_err, numeric_grad, rel_err

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

F64 = "float64"


def check_layer_fd(layer, x, training=True, tol=1e-6, seed=0):
    """Finite differences of L = sum(u * layer(x)) w.r.t. x and every parameter."""
    rng = np.random.default_rng(seed)
    y = layer.forward(x, training)
    u = rng.standard_normal(y.shape)
    gx = layer.backward(u.copy())
    analytic = [p.grad.copy() for p in layer.parameters()]

    def loss_of(_):
        return float(np.sum(u * layer.forward(x, training)))

    if isinstance(layer, BatchNorm):
        layer.update_stats = False
    assert fd_err(gx, numeric_grad(loss_of, x)) < tol
    for p, g in zip(layer.parameters(), analytic):
        assert fd_err(g, numeric_grad(loss_of, p.value)) < tol, p.name


def test_dense_finite_differences():
    rng = np.random.default_rng(0)
    layer = Dense(5, 4, init="glorot_normal", bias_init="normal", rng=1, dtype=F64)
    check_layer_fd(layer, rng.standard_normal((6, 5)))


def test_dense_matches_torch_and_skips_input_grad():
    rng = np.random.default_rng(1)
    layer = Dense(7, 3, bias_init="normal", rng=2, dtype=F64)
    x = rng.standard_normal((5, 7))
    u = rng.standard_normal((5, 3))
    y = layer.forward(x)
    gx = layer.backward(u.copy())
    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(layer.W.value, requires_grad=True)
    tb = torch.tensor(layer.b.value, requires_grad=True)
    ty = tx @ tw + tb
    ty.backward(torch.tensor(u))
    assert rel_err(y, ty.detach().numpy()) < 1e-12
    assert rel_err(gx, tx.grad.numpy()) < 1e-12
    assert rel_err(layer.W.grad, tw.grad.numpy()) < 1e-12
    assert rel_err(layer.b.grad, tb.grad.numpy()) < 1e-12
    assert layer.backward(u.copy(), input_grad=False) is None


@pytest.mark.parametrize("name", ["sigmoid", "tanh", "relu", "selu", "swish"])
def test_activation_layer_keeps_probe_arrays(name):
    rng = np.random.default_rng(2)
    layer = Activation(name)
    x = rng.standard_normal((4, 3)) + 0.1
    check_layer_fd(layer, x)
    assert layer.s is x and layer.a is not None and layer.grad_s is not None


def test_batchnorm_training_finite_differences():
    rng = np.random.default_rng(3)
    bn = BatchNorm(4, dtype=F64)
    bn.gamma.value[:] = rng.standard_normal(4)
    bn.beta.value[:] = rng.standard_normal(4)
    check_layer_fd(bn, rng.standard_normal((6, 4)) * 3 + 1)


@pytest.mark.parametrize("mode", ["ema", "population"])
def test_batchnorm_inference_finite_differences(mode):
    rng = np.random.default_rng(4)
    bn = BatchNorm(3, dtype=F64, inference=mode)
    bn.gamma.value[:] = rng.standard_normal(3)
    bn.forward(rng.standard_normal((8, 3)), training=True)
    if mode == "population":
        bn.calibrate(rng.standard_normal((50, 3)) * 2)
    check_layer_fd(bn, rng.standard_normal((5, 3)), training=False)


def _torch_bn(bn, momentum):
    t = torch.nn.BatchNorm1d(bn.n, eps=bn.eps, momentum=momentum, dtype=torch.float64)
    with torch.no_grad():
        t.weight.copy_(torch.tensor(bn.gamma.value))
        t.bias.copy_(torch.tensor(bn.beta.value))
    return t


def test_batchnorm_training_and_running_stats_match_torch():
    rng = np.random.default_rng(5)
    bn = BatchNorm(6, dtype=F64, momentum=0.1, ema_start="zero")
    bn.gamma.value[:] = rng.standard_normal(6)
    bn.beta.value[:] = rng.standard_normal(6)
    t = _torch_bn(bn, 0.1)
    for _ in range(5):
        x = rng.standard_normal((10, 6)) * 2 + 0.5
        u = rng.standard_normal((10, 6))
        y = bn.forward(x, True)
        gx = bn.backward(u.copy())
        tx = torch.tensor(x, requires_grad=True)
        t.zero_grad()
        ty = t(tx)
        ty.backward(torch.tensor(u))
        assert rel_err(y, ty.detach().numpy()) < 1e-10
        assert rel_err(gx, tx.grad.numpy()) < 1e-10
        assert rel_err(bn.gamma.grad, t.weight.grad.numpy()) < 1e-10
        assert rel_err(bn.beta.grad, t.bias.grad.numpy()) < 1e-10
        assert rel_err(bn.running_mean, t.running_mean.numpy()) < 1e-12
        assert rel_err(bn.running_var, t.running_var.numpy()) < 1e-12


def test_batchnorm_seed_ema_starts_from_first_batch():
    """The seed's rule: mu_1 = mu_B1, then mu <- 0.99 mu + 0.01 mu_B (torch with the first
    batch's statistics as its starting point)."""
    rng = np.random.default_rng(6)
    bn = BatchNorm(4, dtype=F64)  # momentum 0.01, first_batch
    t = _torch_bn(bn, 0.01)
    xs = [rng.standard_normal((12, 4)) + 3 for _ in range(4)]
    for i, x in enumerate(xs):
        bn.forward(x, True)
        if i == 0:
            t.running_mean.copy_(torch.tensor(x.mean(0)))
            t.running_var.copy_(torch.tensor(x.var(0, ddof=1)))
        else:
            t(torch.tensor(x))
    assert (
        rel_err(
            bn.running_mean,
            xs[0].mean(0) * 0.99**3
            + sum(0.01 * 0.99 ** (3 - k) * xs[k].mean(0) for k in range(1, 4)),
        )
        < 1e-12
    )
    assert rel_err(bn.running_mean, t.running_mean.numpy()) < 1e-12
    assert rel_err(bn.running_var, t.running_var.numpy()) < 1e-12


@pytest.mark.parametrize("mode", ["ema", "population"])
def test_batchnorm_inference_matches_torch_eval(mode):
    rng = np.random.default_rng(7)
    bn = BatchNorm(5, dtype=F64, inference=mode, ema_start="zero", momentum=0.3)
    bn.gamma.value[:] = rng.standard_normal(5)
    bn.beta.value[:] = rng.standard_normal(5)
    t = _torch_bn(bn, 0.3)
    for _ in range(3):
        x = rng.standard_normal((9, 5)) * 1.5 - 2
        bn.forward(x, True)
        t(torch.tensor(x))
    if mode == "population":
        data = rng.standard_normal((200, 5)) * 1.5 - 2
        bn.calibrate(data)
        assert rel_err(bn.population_mean, data.mean(0)) < 1e-12
        assert rel_err(bn.population_var, data.var(0)) < 1e-12  # whole set as one big batch
        t.running_mean.copy_(torch.tensor(data.mean(0)))
        t.running_var.copy_(torch.tensor(data.var(0)))
    t.eval()
    x = rng.standard_normal((4, 5))
    u = rng.standard_normal((4, 5))
    y = bn.forward(x, False)
    gx = bn.backward(u.copy())
    tx = torch.tensor(x, requires_grad=True)
    ty = t(tx)
    ty.backward(torch.tensor(u))
    assert rel_err(y, ty.detach().numpy()) < 1e-10
    assert rel_err(gx, tx.grad.numpy()) < 1e-10
    assert rel_err(bn.gamma.grad, t.weight.grad.numpy()) < 1e-10


def test_batchnorm_population_requires_calibration():
    bn = BatchNorm(3, inference="population")
    with pytest.raises(RuntimeError, match="calibrate"):
        bn.forward(np.zeros((2, 3), dtype=np.float32), training=False)


def test_dropout_inverted_scaling_and_gradient():
    rng = np.random.default_rng(8)
    d = Dropout(0.3, rng=0)
    x = rng.standard_normal((2000, 50)).astype(np.float32)
    y = d.forward(x, True)
    assert y.dtype == np.float32
    kept = d.mask != 0
    assert abs(kept.mean() - 0.7) < 0.01
    np.testing.assert_allclose(y[kept], x[kept] / 0.7, rtol=1e-6)
    g = rng.standard_normal(x.shape).astype(np.float32)
    np.testing.assert_allclose(d.backward(g.copy()), g * d.mask)
    assert d.forward(x, False) is x


def test_alpha_dropout_keeps_mean_and_variance_and_gradient():
    rng = np.random.default_rng(9)
    d = AlphaDropout(0.1, rng=1)
    x = rng.standard_normal((4000, 200))
    y = d.forward(x, True)
    assert abs(y.mean()) < 0.01 and abs(y.var() - 1) < 0.02
    xs = rng.standard_normal((3, 4))
    d.forward(xs, True)
    mask = d.mask.copy()
    u = rng.standard_normal((3, 4))
    g = d.backward(u.copy())
    # the map is affine in x for a fixed mask: dy/dx = mask
    np.testing.assert_allclose(g, u * mask)


def test_residual_finite_differences():
    rng = np.random.default_rng(10)
    branch = Sequential(
        [
            BatchNorm(4, dtype=F64),
            Activation("relu"),
            Dense(4, 4, rng=1, dtype=F64),
            BatchNorm(4, dtype=F64),
            Activation("tanh"),
            Dense(4, 4, rng=2, dtype=F64),
        ]
    )
    res = Residual(branch)
    for bn in branch.layers[::3]:
        bn.update_stats = False
    check_layer_fd(res, rng.standard_normal((7, 4)))


def test_standardize_layer():
    rng = np.random.default_rng(11)
    data = rng.standard_normal((100, 3)) * [1, 5, 0] + [2, -1, 4]
    s = Standardize.fit(data, np.float64)
    out = s.forward(data)
    np.testing.assert_allclose(out[:, :2].mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(out[:, :2].std(0), 1, atol=1e-12)
    assert np.all(np.isfinite(out))
    check_layer_fd(s, rng.standard_normal((4, 3)))


def test_bad_layer_arguments():
    with pytest.raises(ValueError, match="fan_in"):
        Dense(0, 3)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        Dropout(1.0)
    with pytest.raises(ValueError, match="inference"):
        BatchNorm(3, inference="median")
    with pytest.raises(ValueError, match="at least 2"):
        BatchNorm(3).forward(np.zeros((1, 3), dtype=np.float32))


@pytest.mark.parametrize("kind", ["standard", "alpha"])
def test_dropout_masks_are_the_same_in_float32_and_float64(kind):
    """Same seed, either dtype: the same units dropped (the uniforms are float32 draws), so
    float32 and float64 training differ only by rounding, as their weights do."""
    import depthlab as dl

    x = np.random.default_rng(0).normal(size=(32, 5))
    y = np.arange(32) % 3
    losses = {}
    for dtype in ("float32", "float64"):
        net = dl.mlp([5, 16, 16, 3], activation="selu" if kind == "alpha" else "tanh",
                     dropout=0.3, dropout_type=kind, seed=4, dtype=dtype)
        net.forward(x.astype(dtype), training=True)
        masks = [layer.mask != 0 for layer in net.layers if getattr(layer, "mask", None)
                 is not None]
        assert len(masks) == 2
        hist = dl.fit(net, x, y, loss="cross_entropy", lr=0.05, batch_size=8, epochs=3, seed=1)
        losses[dtype] = (np.array(hist.step_loss), masks)
    (l32, m32), (l64, m64) = losses["float32"], losses["float64"]
    for a, b in zip(m32, m64):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(l32, l64, rtol=1e-4)
