"""Training loop, regularization, divergence, MC dropout, LSUV, and the deep-ReLU smoke test."""

import numpy as np
import pytest
from helpers.gradcheck import fd_err, numeric_grad, rel_err

import depthlab as dl


def clusters(n=600, d=10, k=3, seed=0, sep=3.0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((k, d)) * sep
    y = rng.integers(0, k, n)
    x = centers[y] + rng.standard_normal((n, d))
    return x.astype(np.float32), y


@pytest.mark.parametrize("batch_size", [None, 1, 16])
def test_full_stochastic_and_minibatch_descent_reduce_loss(batch_size):
    x, y = clusters(200)
    net = dl.mlp([10, 16, 3], activation="tanh", seed=0)
    hist = dl.fit(
        net,
        x,
        y,
        optimizer="sgd",
        lr=0.05 if batch_size != 1 else 0.01,
        batch_size=batch_size,
        epochs=3 if batch_size != 1 else 1,
        seed=0,
    )
    per_epoch = {None: 1, 1: 200, 16: 13}[batch_size]
    assert hist.steps == per_epoch * (3 if batch_size != 1 else 1)
    assert not hist.diverged and hist.status == "finished"
    assert hist.step_loss[-1] < hist.step_loss[0]
    assert set(hist.final()) >= {"train_loss", "train_acc", "epoch", "step"}


def test_history_has_validation_metrics_and_eval_every():
    x, y = clusters(300)
    net = dl.mlp([10, 16, 3], activation="relu", init="he_normal", seed=0)
    hist = dl.fit(
        net,
        x[:200],
        y[:200],
        x[200:],
        y[200:],
        optimizer="adam",
        lr=1e-2,
        batch_size=20,
        epochs=4,
        eval_every=5,
    )
    ep = hist.epochs_frame()
    assert list(ep["epoch"]) == [1, 2, 3, 4]
    assert ep["val_acc"].iloc[-1] > 0.9
    assert len(hist.evals_frame()) == 40 // 5


def test_bit_for_bit_reproducible_from_one_seed():
    x, y = clusters(200)

    def run():
        net = dl.mlp(
            [10, 16, 16, 3],
            activation="relu",
            init="he_normal",
            dropout=0.2,
            batchnorm=True,
            seed=5,
        )
        return net, dl.fit(net, x, y, optimizer="adam", lr=1e-2, batch_size=32, epochs=2, seed=5)

    (n1, h1), (n2, h2) = run(), run()
    assert h1.step_loss == h2.step_loss
    for p, q in zip(n1.parameters(), n2.parameters()):
        assert np.array_equal(p.value, q.value)


def test_divergence_is_detected_and_reported():
    x, y = clusters(200)
    net = dl.mlp([10, 32, 32, 3], activation="relu", init="he_normal", seed=0)
    hist = dl.fit(net, x * 100, y, optimizer="sgd", lr=50.0, batch_size=50, epochs=20)
    assert hist.diverged and hist.status == "diverged"
    rep = hist.divergence
    assert rep.step <= hist.steps + 1 and not np.isfinite(rep.loss)
    assert "diverged at step" in rep.message and str(rep.step) in rep.message
    assert rep.layer is not None or rep.nonfinite_parameters


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(lr=-0.1), "learning rate"),
        (dict(batch_size=0), "batch_size"),
        (dict(optimizer="adamw2"), "adamw2"),
        (dict(loss="hinge"), "hinge"),
        (dict(l2=-1.0), "l2"),
    ],
)
def test_bad_training_arguments(bad, match):
    x, y = clusters(20)
    with pytest.raises(ValueError, match=match):
        dl.fit(dl.mlp([10, 4, 3]), x, y, **bad)


def test_bad_training_data():
    net = dl.mlp([10, 4, 3])
    x, y = clusters(20)
    xn = x.copy()
    xn[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        dl.fit(net, xn, y)
    with pytest.raises(ValueError, match="empty"):
        dl.fit(net, x[:0], y[:0])
    with pytest.raises(ValueError, match="20 rows but y has 19"):
        dl.fit(net, x, y[:19])
    with pytest.raises(ValueError, match="expects 10"):
        dl.fit(net, x[:, :4], y)


def test_standardization_uses_training_statistics_only():
    x, y = clusters(100)
    x = x * 7 + 3
    net = dl.mlp([10, 8, 3], seed=0)
    layers = list(net.layers)
    hist = dl.fit(net, x[:80], y[:80], x[80:], y[80:], standardize=True, epochs=1)
    assert net.layers == layers  # the caller's network is not changed, only trained
    std = hist.standardizer
    np.testing.assert_allclose(std.mean, x[:80].mean(0), rtol=1e-5)
    np.testing.assert_allclose(std.std, x[:80].std(0), rtol=1e-5)
    # training on standardized data = training on data standardized beforehand
    twin = dl.mlp([10, 8, 3], seed=0)
    z = ((x.astype(np.float64) - std.mean64) / std.std64).astype(np.float32)  # float64, cast
    ref = dl.fit(twin, z[:80], y[:80], z[80:], y[80:], epochs=1)
    assert hist.step_loss == ref.step_loss
    np.testing.assert_array_equal(net.predict(z), twin.predict(z))


def test_l1_l2_penalties_on_weights_only():
    net = dl.mlp([4, 5, 3], batchnorm=True, dtype="float64", seed=1)
    params = net.parameters()
    for p in params:
        p.value[...] = np.random.default_rng(0).standard_normal(p.value.shape)
        p.grad[...] = 0
    dl.add_penalty_gradient(params, l1=0.3, l2=0.2)
    for p in params:
        if p.kind == "weight":
            num = numeric_grad(lambda _: dl.penalty(params, l1=0.3, l2=0.2), p.value)
            assert fd_err(p.grad, num) < 1e-6
        else:
            assert np.all(p.grad == 0)


def test_l2_penalty_equals_torch_weight_decay_with_sgd():
    import torch
    x, y = clusters(40, d=4)
    net = dl.mlp([4, 6, 3], activation="tanh", dtype="float64", seed=2)
    from depthlab.bridge.torch_bridge import to_torch

    tnet = to_torch(net)
    wd = 0.1
    dl.fit(
        net, x, y, optimizer="sgd", lr=0.1, batch_size=None, epochs=3, l2=wd / 2, eval_train=False
    )
    decay = [p for n, p in tnet.named_parameters() if n.endswith("weight")]
    other = [p for n, p in tnet.named_parameters() if n.endswith("bias")]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": wd}, {"params": other}], lr=0.1)
    tx, ty = torch.tensor(x, dtype=torch.float64), torch.tensor(y)
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(tnet(tx), ty).backward()
        opt.step()
    for p, tp in zip(net.parameters(), tnet.parameters()):
        tv = tp.detach().numpy()
        assert rel_err(p.value, tv.T if p.value.ndim == 2 else tv) < 1e-10


def test_mc_dropout_mean_std_with_bn_in_inference():
    x, y = clusters(100)
    net = dl.mlp([10, 32, 32, 3], dropout=0.3, batchnorm=True, seed=0)
    dl.fit(net, x, y, epochs=2, lr=0.05)
    bn = net.batchnorms()[0]
    before = bn.running_mean.copy(), bn.num_batches
    mean, std = dl.mc_dropout_predict(net, x[:7], T=30, seed=1, output="softmax")
    assert mean.shape == std.shape == (7, 3)
    np.testing.assert_allclose(mean.sum(1), 1, rtol=1e-5)
    assert np.all(std > 0)
    assert np.array_equal(bn.running_mean, before[0]) and bn.num_batches == before[1]
    m2, _ = dl.mc_dropout_predict(net, x[:7], T=30, seed=1, output="softmax")
    assert np.array_equal(mean, m2)
    assert not any(d.mc for d in net.dropouts())
    with pytest.raises(ValueError, match="no dropout"):
        dl.mc_dropout_predict(dl.mlp([10, 4, 3]), x, T=3)


def test_batchnorm_inference_modes_agree_after_training():
    x, y = clusters(400, seed=3)
    net = dl.mlp([10, 32, 32, 3], activation="sigmoid", batchnorm=True, seed=0)
    dl.fit(net, x, y, optimizer="sgd", lr=0.5, batch_size=40, epochs=8)
    acc_ema = float(np.mean(net.predict(x).argmax(1) == y))
    net.set_bn_inference("population")
    net.calibrate(x)
    acc_pop = float(np.mean(net.predict(x).argmax(1) == y))
    assert acc_ema > 0.8 and abs(acc_ema - acc_pop) < 0.05


def test_lsuv_gives_unit_output_variance():
    x, _ = clusters(256, d=20)
    net = dl.mlp([20, 64, 64, 64, 5], activation="tanh", init="normal", seed=0)
    variances = dl.lsuv(net, x, tol=0.05)
    assert len(variances) == 4
    assert all(abs(v - 1) < 0.05 for v in variances)
    w = net.dense_layers()[1].W.value
    s = np.linalg.svd(w, compute_uv=False)
    assert s.max() / s.min() < 1.0001  # still orthogonal, only rescaled


def test_deep_relu_he_trains_where_glorot_stalls():
    """He et al. 2015: 30 ReLU layers train with he_normal and stall with glorot_uniform."""
    rng = np.random.default_rng(0)
    d, k = 32, 4
    centers = rng.standard_normal((k, d))
    y = rng.integers(0, k, 512)
    x = (centers[y] + 0.5 * rng.standard_normal((512, d))).astype(np.float32)
    results = {}
    for init in ("glorot_uniform", "he_normal"):
        net = dl.mlp([d] + [64] * 30 + [k], activation="relu", init=init, seed=0)
        out = net.forward(x[:128])
        loss = dl.loss("cross_entropy")
        loss.forward(out, y[:128])
        net.backward(loss.backward())
        g_first = float(np.abs(net.parameters()[0].grad).mean())
        hist = dl.fit(net, x, y, optimizer="sgd", lr=0.01, batch_size=64, epochs=25, seed=0)
        results[init] = (g_first, hist.step_loss[0], hist.final()["train_loss"])
    g_glorot, l0_glorot, l1_glorot = results["glorot_uniform"]
    g_he, l0_he, l1_he = results["he_normal"]
    assert g_he / g_glorot > 100
    assert l1_glorot > 0.95 * l0_glorot  # stalls
    assert l1_he < 0.3 * l0_he  # trains
