"""Round 9 of the engine checks against torch and float64 references: whole-training-set
batch-norm statistics of a float32 set, centered RMSprop with alpha = 0, LSUV's tolerance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import depthlab as dl
from depthlab.backend import rng as make_rng
from depthlab.bridge.torch_bridge import to_torch
from depthlab.layers import Activation, BatchNorm, Dense, Standardize
from depthlab.network import Network
from depthlab.optimizers import RMSprop, get_optimizer
from depthlab.parameter import Parameter
from depthlab.training.trainer import Trainer

# -- batch norm: population statistics of a large float32 training set ------------------------


def test_float32_calibrate_sums_a_large_set_as_a_training_batch_does():
    """``calibrate`` on 30000 float32 rows (mean 10, std 2): float32 sums down the column gave
    a mean 3.0e-6 and a variance 2.2e-6 off (relative; outputs 1.6e-5 off) the float64
    statistics of the same values; summed in float64 as a training batch is, 4e-8."""
    x = (make_rng(0).standard_normal((30000, 4)) * 2 + 10).astype(np.float32)
    bn = BatchNorm(4, dtype="float32")
    y = bn.calibrate(x)
    ref_var, ref_mean = torch.var_mean(torch.from_numpy(x).double(), dim=0, correction=0)
    ref_mean, ref_var = ref_mean.numpy(), ref_var.numpy()
    assert bn.population_mean.dtype == bn.population_var.dtype == y.dtype == np.float32
    assert np.max(np.abs(bn.population_mean - ref_mean) / ref_mean) < 3e-7
    assert np.max(np.abs(bn.population_var - ref_var) / ref_var) < 3e-7
    ref_y = (x - ref_mean) / np.sqrt(ref_var + 1e-5)
    assert np.max(np.abs(y - ref_y)) < 3e-6
    # the same statistics as a training-mode batch of these rows
    train = BatchNorm(4, dtype="float32")
    np.testing.assert_array_equal(train.forward(x), y)


# -- RMSprop: centered with alpha = 0 ------------------------------------------------------------


@pytest.mark.parametrize("alpha", [0.0, 0])
def test_centered_rmsprop_with_alpha_zero_is_one_clear_value_error(alpha):
    """With alpha = 0 the centered variance v - m^2 is g^2 - g^2: depthlab stepped lr*g/eps
    (|w| ~ 4e6 after 10 steps of lr 0.01) while torch's fused addcmul went below 0 (NaN)."""
    ps = [Parameter("w", np.zeros(3))]
    with pytest.raises(ValueError, match=r"alpha value: 0(\.0)? with centered=True.*\(0, 1\]"):
        RMSprop(ps, alpha=alpha, centered=True)
    with pytest.raises(ValueError, match="centered=True"):
        RMSprop.check_hyperparameters(alpha=alpha, centered=True, momentum=0.9)
    RMSprop(ps, alpha=alpha)  # plain RMSprop at alpha = 0 is torch's (tested in test_engine_more)


def test_centered_rmsprop_with_a_tiny_alpha_still_matches_torch():
    """Small alphas stay accepted and match torch step for step (float64). The tolerance is
    that of v - m^2 at a small alpha: torch's CPU kernels (addcmul, lerp) round a fused
    multiply-add once, NumPy twice; the last-bit differences grow by m^2 / (v - m^2)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        g = make_rng(5)
        w0 = g.standard_normal((4, 3))
        kw = dict(lr=0.01, alpha=0.05, centered=True, momentum=0.5, eps=1e-3)
        p = Parameter("w", w0.copy())
        opt = get_optimizer("rmsprop", [p], **kw)
        t = torch.tensor(w0.copy(), requires_grad=True)
        topt = torch.optim.RMSprop([t], **kw)
        for _ in range(20):
            grad = np.sin(2 * p.value) + 0.3 * g.standard_normal(w0.shape)
            p.grad[...] = grad
            t.grad = torch.tensor(grad.copy())
            opt.step()
            topt.step()
            np.testing.assert_allclose(p.value, t.detach().numpy(), rtol=1e-9, atol=1e-12)
    finally:
        torch.set_default_dtype(old)


# -- LSUV ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("tol", "exc", "match"), [
    ("0.1", TypeError, r"tol must be a real number, got '0.1'"),
    (float("inf"), ValueError, r"tol must be a finite number > 0, got inf"),
    (0.0, ValueError, r"tol must be a finite number > 0, got 0.0"),
    (float("nan"), ValueError, r"tol must be a finite number > 0, got nan"),
])
def test_lsuv_tolerance_is_checked_with_one_clear_error(tol, exc, match):
    """A string was a bare "'>' not supported" TypeError; tol=inf was accepted and returned
    after the first pass without rescaling anything."""
    net = dl.mlp([3, 8, 2], "tanh", seed=0)
    x = make_rng(1).standard_normal((16, 3))
    before = [d.W.value.copy() for d in net.dense_layers()]
    with pytest.raises(exc, match=match):
        dl.lsuv(net, x, tol=tol)
    for d, w in zip(net.dense_layers(), before):
        np.testing.assert_array_equal(d.W.value, w)  # refused before any weight changed


# -- Trainer(standardize=True): the float64 statistics standardize --------------------------


def test_trainer_standardize_centres_a_feature_whose_mean_float32_rounds():
    """x = 1e8 + 3.7 + N(0, 1) for a float32 network: the stored float32 mean is 1e8, and the
    standardized feature came out with mean 3.67 (not 0) in training and through
    ``History.standardizer``; the float64 statistics centre it."""
    g = make_rng(0)
    noise = g.standard_normal(2000)
    x = np.c_[1e8 + 3.7 + noise, g.standard_normal(2000)]
    y = (noise > 0).astype(int)
    tr = Trainer(dl.mlp([2, 4, 2], seed=0), optimizer="sgd", lr=0.1, batch_size=100,
                 max_steps=1, standardize=True)
    hist = tr.fit(x, y)
    z = tr.transform(x)
    assert z.dtype == np.float32
    exact = (noise - noise.mean()) / noise.std()
    np.testing.assert_allclose(z[:, 0], exact, atol=1e-5)
    assert abs(float(z[:, 0].astype(np.float64).mean())) < 1e-5
    applied = hist.standardizer.forward(x)  # what the README says to do before predict
    assert applied.dtype == np.float32
    np.testing.assert_array_equal(applied, z)


def test_standardize_fit_in_float64_is_unchanged_and_a_hand_built_layer_keeps_its_arrays():
    g = make_rng(2)
    x = np.c_[g.standard_normal(50) * 3 + 1, np.full(50, 0.3)]
    st = Standardize.fit(x, "float64")
    np.testing.assert_array_equal(st.forward(x), (x - st.mean) / st.std)
    assert np.all(st.forward(x)[:, 1] == 0.0)
    hand = Standardize(np.array([1.0, 2.0], np.float32), np.array([2.0, 0.0], np.float32))
    out = hand.forward(np.array([[3.0, 5.0]], np.float32))
    assert out.dtype == np.float32 and out.tolist() == [[1.0, 3.0]]


# -- torch training loop: whole-training-set batch-norm statistics --------------------------


def test_torch_population_batchnorm_variance_of_a_feature_with_a_large_mean():
    """``population_batchnorm`` summed v and v^2 (float64) and took S2 - S1^2 / n: a channel
    of mean 1e7 and std 1 got a variance 2% off (mean 1e8: 227%); sums of v minus the first
    batch's mean keep it to rounding. A BatchNorm2d (channel dim 1 of 4) too."""
    from depthlab.torch.train import population_batchnorm

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3000, 3, generator=gen, dtype=torch.float64) * torch.tensor(
        [1.0, 0.5, 3.0], dtype=torch.float64) + torch.tensor([1e7, 1e8, -2.0],
                                                             dtype=torch.float64)
    model = torch.nn.Sequential(torch.nn.BatchNorm1d(3).double())
    assert population_batchnorm(model, x) == 1
    bn = model[0]
    np.testing.assert_allclose(bn.running_mean.numpy(), x.mean(0).numpy(), rtol=1e-15)
    np.testing.assert_allclose(bn.running_var.numpy(), x.var(0).numpy(), rtol=1e-8)
    assert bn.momentum == 0.1 and model.training  # restored
    img = torch.randn(40, 2, 3, 3, generator=gen, dtype=torch.float64) + 5e6
    conv_bn = torch.nn.Sequential(torch.nn.BatchNorm2d(2).double())
    population_batchnorm(conv_bn, img)
    np.testing.assert_allclose(conv_bn[0].running_mean.numpy(),
                               img.mean((0, 2, 3)).numpy(), rtol=1e-15)
    np.testing.assert_allclose(conv_bn[0].running_var.numpy(),
                               img.var((0, 2, 3)).numpy(), rtol=1e-9)


# -- a hand-built Network takes its dtype from its layers ---------------------------------------


def test_a_hand_built_float64_network_computes_in_float64_end_to_end():
    """Network's dtype defaulted to float32 whatever its layers: float64 layers got inputs and
    the output gradient rounded to float32 (outputs 1.9e-8, dW 9e-8 off torch float64; to_torch
    built a float32 model). It is now the layers' dtype; a different one is refused."""
    g = make_rng(0)
    layers = [Dense(4, 8, rng=1, dtype="float64"), Activation("tanh"),
              Dense(8, 3, rng=2, dtype="float64")]
    net = Network(layers, n_inputs=4)
    assert net.dtype == np.float64
    x, up = g.standard_normal((5, 4)), g.standard_normal((5, 3))
    y = net.forward(x)
    gx = net.backward(up)
    tnet = to_torch(net)
    tx = torch.tensor(x, requires_grad=True)
    ty = tnet(tx)
    ty.backward(torch.tensor(up))
    assert ty.dtype == torch.float64
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=1e-13, atol=1e-15)
    for dense, lin in ((layers[0], tnet[0]), (layers[2], tnet[2])):
        np.testing.assert_allclose(dense.W.grad, lin.weight.grad.numpy().T, rtol=1e-13,
                                   atol=1e-15)
    assert Network([Activation("relu")], n_inputs=3).dtype == np.float32  # no parameters
    assert Network([Dense(4, 3, rng=1)], n_inputs=4, dtype="float32").dtype == np.float32


def test_a_network_dtype_other_than_its_layers_is_one_clear_error():
    with pytest.raises(ValueError, match=r"dtype='float32' is not the dtype of the layers' "
                                         r"parameters \(float64\); expected dtype='float64'"):
        Network([Dense(4, 3, rng=1, dtype="float64")], n_inputs=4, dtype="float32")
    with pytest.raises(ValueError, match=r"parameters mix float32 and float64"):
        Network([Dense(4, 3, rng=1), Dense(3, 2, rng=1, dtype="float64")], n_inputs=4)


# -- Dense: the bias gradient of a large float32 batch ------------------------------------------


def test_float32_dense_bias_gradient_of_a_large_batch_is_summed_as_torch_does():
    """dL/db = sum over the batch: float32 sums down 60000 rows erred by 1e-5 relative (torch's
    cascade sum 8e-8); summed in float64 from 1024 rows, about 3e-8."""
    g = make_rng(0)
    dense = Dense(8, 16, rng=1)  # float32
    x = g.standard_normal((60000, 8)).astype(np.float32)
    up = (g.standard_normal((60000, 16)) * 1e-3 + 1e-3).astype(np.float32)
    dense.forward(x)
    dense.backward(up.copy(), input_grad=False)
    assert dense.b.grad.dtype == np.float32
    ref = up.astype(np.float64).sum(axis=0)
    assert np.max(np.abs(dense.b.grad - ref) / np.abs(ref)) < 3e-7
    torch_sum = torch.from_numpy(up).sum(dim=0).numpy()
    assert np.max(np.abs(dense.b.grad - torch_sum) / np.abs(ref)) < 3e-7
    small = up[:100]  # below 1024 rows: the float32 sum, as before
    dense.forward(x[:100])
    dense.backward(small.copy(), input_grad=False)
    np.testing.assert_array_equal(dense.b.grad, small.sum(axis=0))
