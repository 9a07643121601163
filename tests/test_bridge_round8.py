"""Round 8 (bridge): torch <-> depthlab copies, dl.save/dl.load of bridged networks, tampered
files. Every expected number is computed here from the arrays themselves."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

import depthlab as dl

torch = pytest.importorskip("torch")
nn = torch.nn
tb = pytest.importorskip("depthlab.bridge.torch_bridge")
dlt = pytest.importorskip("depthlab.torch")

ACTS = [("relu", {}), ("leaky_relu", {"negative_slope": 0.2}), ("elu", {"alpha": 0.7}),
        ("selu", {}), ("swish", {"beta": 1.7}), ("swish", {}), ("gelu", {}), ("mish", {}),
        ("softsign", {}), ("penalized_tanh", {"a": 0.4}), ("step", {}), ("tanh", {}),
        ("sigmoid", {}), ("identity", {})]


def _same_state(a, b) -> bool:
    """Parameters and batch-norm buffers equal bit for bit, same dtypes."""
    pa, pb = a.parameters(), b.parameters()
    if len(pa) != len(pb) or len(a.batchnorms()) != len(b.batchnorms()):
        return False
    ok = all(x.value.dtype == y.value.dtype and np.array_equal(x.value, y.value)
             for x, y in zip(pa, pb))
    for x, y in zip(a.batchnorms(), b.batchnorms()):
        ok &= (np.array_equal(x.running_mean, y.running_mean)
               and np.array_equal(x.running_var, y.running_var)
               and x.running_var.dtype == y.running_var.dtype
               and x.num_batches == y.num_batches and x.ema_start == y.ema_start
               and x.momentum == y.momentum and x.eps == y.eps)
    return ok


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("act,kw", ACTS)
def test_round_trip_is_bit_exact_and_outputs_match_for_every_activation(act, kw, dtype):
    net = dl.mlp([5, 7, 7, 3], act, activation_kwargs=kw, dtype=dtype, batchnorm=True,
                 seed=3)
    x = np.random.default_rng(0).standard_normal((16, 5)).astype(dtype)
    net.forward(x, training=True)  # running statistics away from (0, 1), num_batches = 1
    m = tb.to_torch(net)
    back = tb.from_torch(m)
    assert back.dtype == net.dtype and _same_state(net, back)
    m.eval()
    y_t = m(torch.from_numpy(x)).detach().numpy()
    y_n = net.forward(x, training=False)
    assert y_t.dtype == y_n.dtype
    tol = 1e-13 if dtype == "float64" else 1e-5
    np.testing.assert_allclose(y_t, y_n, rtol=tol, atol=tol)


@pytest.mark.parametrize("kw", [{"batchnorm": True}, {"residual": True},
                                {"residual": True, "batchnorm": True},
                                {"output_activation": "sigmoid", "init": "orthogonal"}])
def test_train_mode_forward_and_backward_match_torch_autograd_float64(kw):
    net = dl.mlp([5, 8, 8, 8, 3], "elu", activation_kwargs={"alpha": 0.5}, dtype="float64",
                 seed=1, **kw)
    rng = np.random.default_rng(1)
    x, g = rng.standard_normal((12, 5)), rng.standard_normal((12, 3))
    m = tb.to_torch(net).train()
    xt = torch.from_numpy(x).requires_grad_(True)
    out = m(xt)
    out.backward(torch.from_numpy(g))
    np.testing.assert_allclose(net.forward(x, training=True), out.detach().numpy(),
                               rtol=0, atol=1e-13)
    np.testing.assert_allclose(net.backward(g.copy()), xt.grad.numpy(), rtol=0, atol=1e-13)
    for p, q in zip(net.parameters(), m.parameters()):  # same order: W (fan_in, fan_out) = W_t.T
        want = q.grad.numpy().T if q.ndim == 2 else q.grad.numpy()
        np.testing.assert_allclose(p.grad, want, rtol=0, atol=1e-12)
    for bn, tbn in zip(net.batchnorms(), [t for t in m.modules()
                                          if isinstance(t, nn.BatchNorm1d)]):
        np.testing.assert_allclose(bn.running_var, tbn.running_var.numpy(), rtol=1e-14)


def test_running_statistics_follow_the_formulas_in_torch_and_back():
    # first batch: mu_1 = mean, var_1 = unbiased variance; then mu <- (1 - mom) mu + mom mu_B
    net = dl.mlp([4, 6, 2], "tanh", batchnorm=True, bn_momentum=0.25, dtype="float64", seed=0)
    m = tb.to_torch(net).train()
    rng = np.random.default_rng(5)
    w = net.dense_layers()[0].W.value
    mean = var = None
    for _ in range(3):
        xb = rng.standard_normal((10, 4))
        m(torch.from_numpy(xb))
        h = xb @ w  # the BN input (the Dense before a batch norm has no bias)
        mu_b, v_b = h.mean(axis=0), h.var(axis=0, ddof=1)
        mean = mu_b if mean is None else 0.75 * mean + 0.25 * mu_b
        var = v_b if var is None else 0.75 * var + 0.25 * v_b
    bn = tb.from_torch(m).batchnorms()[0]
    assert bn.num_batches == 3 and bn.ema_start == "first_batch"
    np.testing.assert_allclose(bn.running_mean, mean, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(bn.running_var, var, rtol=1e-13)


def test_round_trip_keeps_first_batch_ema_start_after_depthlab_training(tmp_path):
    # was: to_torch used FirstBatchBatchNorm1d only before the first batch, so a trained
    # network came back with ema_start="zero" and was saved with another recipe
    net = dl.mlp([4, 6, 2], "relu", batchnorm=True, dtype="float64", seed=0)
    net.forward(np.random.default_rng(0).standard_normal((8, 4)), training=True)
    back = tb.from_torch(tb.to_torch(net))
    assert back.batchnorms()[0].ema_start == "first_batch"
    assert _same_state(net, back)
    loaded = dl.load(dl.save(back, tmp_path / "b.npz"))
    assert loaded.config["bn_ema_start"] == net.config["bn_ema_start"] == "first_batch"


@pytest.mark.parametrize("act,kw", [("tanh", {}), ("leaky_relu", {"negative_slope": 0.2}),
                                    ("penalized_tanh", {"a": 0.4})])
def test_trained_in_torch_then_probed_gives_the_same_table(act, kw):
    net = dl.mlp([6, 10, 10, 3], act, activation_kwargs=kw, dtype="float64", seed=2)
    m = tb.to_torch(net)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((64, 6)), rng.integers(0, 3, 64)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        nn.functional.cross_entropy(m(xt), yt).backward()
        opt.step()
    back = tb.from_torch(m)
    w_t = m[0].weight.detach().numpy().T
    assert np.array_equal(back.dense_layers()[0].W.value, w_t)
    a = dl.probe(back, x, y)
    b = dlt.probe(m, xt, yt, nn.CrossEntropyLoss())
    mg = b.merge(a, on=["layer", "quantity"], suffixes=("_t", "_n"))
    assert len(mg) >= 40
    np.testing.assert_allclose(mg.value_t, mg.value_n, rtol=1e-6, atol=1e-12)
    # one row by hand: the first layer's weight std
    w_row = mg[(mg.layer == 1) & (mg.quantity == "weight_std")]
    assert w_row.value_n.iloc[0] == pytest.approx(w_t.std(), rel=1e-12)


@pytest.mark.parametrize("mod,what", [
    (nn.BatchNorm1d(6, momentum=0.0), "momentum"),
    (nn.BatchNorm1d(6, eps=0.0), "eps"),
    (nn.Dropout(1.0), "dropout rate"),
    (nn.Linear(5, 2), "expects 5 features, the modules before it give 6"),
    (nn.BatchNorm1d(5), "expects 5 features, the modules before it give 6"),
])
def test_from_torch_names_the_module_it_cannot_express(mod, what):
    # was: a bare ValueError without the module (momentum, eps, p) or, for widths that do not
    # chain, a network that failed later in a matmul
    seq = nn.Sequential(nn.Linear(4, 6), nn.Sequential(nn.ReLU(), mod)).double()
    with pytest.raises(TypeError) as info:
        tb.from_torch(seq)
    msg = str(info.value)
    assert "module '1.1'" in msg and what in msg and "\n" not in msg


def test_from_torch_refuses_unmappable_modules_by_path():
    for mod in (nn.LayerNorm(6), nn.Hardshrink(), nn.Softmax(dim=0), nn.PReLU()):
        with pytest.raises(TypeError, match=r"module '2'") as info:
            tb.from_torch(nn.Sequential(nn.Linear(4, 6), nn.ReLU(), mod))
        assert type(mod).__name__ in str(info.value) and "\n" not in str(info.value)


def test_residual_branch_must_keep_the_width():
    block = tb._Residual(nn.Sequential(nn.ReLU(), nn.Linear(6, 5)))
    with pytest.raises(TypeError, match=r"module '1'.*6 features to 5"):
        tb.from_torch(nn.Sequential(nn.Linear(4, 6), block))


def test_hand_built_sequential_saves_loads_and_predicts(tmp_path):
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 6, bias=False), nn.BatchNorm1d(6, momentum=0.05, eps=1e-3),
                      nn.ELU(0.5), nn.Dropout(0.2), nn.Linear(6, 3)).double()
    for _ in range(2):
        m(torch.randn(8, 4, dtype=torch.float64))
    m.eval()
    x = np.random.default_rng(0).standard_normal((9, 4))
    net = tb.from_torch(m)
    h = x @ m[0].weight.detach().numpy().T
    bn = m[1]
    z = (h - bn.running_mean.numpy()) / np.sqrt(bn.running_var.numpy() + 1e-3)
    z = z * bn.weight.detach().numpy() + bn.bias.detach().numpy()
    a = np.where(z > 0, z, 0.5 * np.expm1(np.minimum(z, 0)))
    want = a @ m[4].weight.detach().numpy().T + m[4].bias.detach().numpy()
    np.testing.assert_allclose(net.predict(x), want, rtol=1e-13, atol=1e-15)
    path = dl.save(net, tmp_path / "dir with space" / "réseau 網.npz")
    loaded = dl.load(path)
    assert np.array_equal(loaded.predict(x), net.predict(x)) and _same_state(net, loaded)
    assert loaded.config["activation_kwargs"] == {"alpha": 0.5}
    assert loaded.config["bn_momentum"] == 0.05 and loaded.config["dropout"] == 0.2


def test_save_and_load_expand_the_home_folder(tmp_path, monkeypatch):
    # was: dl.save(net, "~/net.npz") wrote ./~/net.npz (the store expands "~")
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    net = dl.mlp([3, 4, 2], "tanh", seed=0)
    path = dl.save(net, "~/nets/n")
    assert path == home / "nets" / "n.npz" and path.is_file()
    assert not (tmp_path / "~").exists()
    x = np.ones((2, 3), dtype=np.float32)
    assert np.array_equal(dl.load("~/nets/n.npz").predict(x), net.predict(x))


def _saved_bn(tmp_path):
    net = dl.mlp([4, 6, 3], "tanh", batchnorm=True, dtype="float64", seed=0)
    net.forward(np.random.default_rng(0).standard_normal((10, 4)), training=True)
    return dl.save(net, tmp_path / "n.npz")


def _rewrite(path, tmp_path, change):
    with np.load(path) as z:
        arrays = dict(z)
    change(arrays)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    out = tmp_path / "tampered.npz"
    out.write_bytes(buf.getvalue())
    return out


@pytest.mark.parametrize("key,value,match", [
    ("bn:0:running_mean", np.zeros(3), r"bn:0:running_mean has shape \(3,\) float64"),
    ("bn:0:running_var", np.ones(6, np.float32), r"running_var has shape \(6,\) float32"),
    ("bn:0:running_var", np.array(["a"] * 6), r"running_var has shape \(6,\) <U1"),
    ("bn:0:num_batches", np.array([1, 2]), r"num_batches is .*expected one integer >= 0"),
    ("bn:0:num_batches", np.array(-1), r"num_batches is .*expected one integer >= 0"),
    ("bn:0:population_mean", np.zeros(6), r"one of population_mean and population_var"),
])
def test_load_refuses_tampered_batchnorm_state(tmp_path, key, value, match):
    # was: loaded silently (a float32 running variance in a float64 network, a 3-vector for
    # 6 units failing later in predict) or a bare TypeError for a count array
    path = _saved_bn(tmp_path)
    bad = _rewrite(path, tmp_path, lambda z: z.__setitem__(key, value))
    with pytest.raises(ValueError, match=match) as info:
        dl.load(bad)
    assert "tampered.npz" in str(info.value) and "\n" not in str(info.value)


def test_load_refuses_truncated_damaged_and_other_version_files(tmp_path):
    path = _saved_bn(tmp_path)
    raw = path.read_bytes()
    for cut in (10, len(raw) // 2, len(raw) - 30):
        (tmp_path / "t.npz").write_bytes(raw[:cut])
        with pytest.raises(ValueError, match="is not a network saved by depthlab.save"):
            dl.load(tmp_path / "t.npz")
    with np.load(path) as z:
        recipe = json.loads(bytes(z["recipe"]).decode())
    recipe["format"] = "depthlab-network/2"
    newer = _rewrite(path, tmp_path, lambda z: z.__setitem__(
        "recipe", np.frombuffer(json.dumps(recipe).encode(), np.uint8)))
    with pytest.raises(ValueError, match="format 'depthlab-network/2'; expected"):
        dl.load(newer)
    recipe["format"] = "depthlab-network/1"
    recipe["config"]["option_from_the_future"] = 1
    future = _rewrite(path, tmp_path, lambda z: z.__setitem__(
        "recipe", np.frombuffer(json.dumps(recipe).encode(), np.uint8)))
    with pytest.raises(ValueError, match="option_from_the_future"):
        dl.load(future)


def test_failed_save_leaves_no_file(tmp_path):
    net = dl.mlp([3, 4, 2], "tanh", seed=0)
    with pytest.raises(TypeError, match=r"meta\['bad'\]"):
        dl.save(net, tmp_path / "n.npz", meta={"bad": object()})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("ema_start", ["first_batch", "zero"])
def test_population_batchnorm_round_trip_keeps_both_statistics(tmp_path, ema_start):
    # was: to_torch wrote the population statistics into running_mean/var, so from_torch gave
    # back inference="ema" with the moving average lost (running_mean = the population mean)
    rng = np.random.default_rng(4)
    net = dl.mlp([4, 6, 2], "tanh", batchnorm=True, bn_inference="population",
                 bn_ema_start=ema_start, bn_momentum=0.3, dtype="float64", seed=0)
    net.forward(rng.standard_normal((8, 4)), training=True)  # moving average: one batch
    x_train = rng.standard_normal((50, 4)) * 2.0 + 1.0
    net.calibrate(x_train)
    m = tb.to_torch(net).eval()
    x = rng.standard_normal((7, 4))
    h = x_train @ net.dense_layers()[0].W.value  # population statistics by hand (biased var)
    z = (x @ net.dense_layers()[0].W.value - h.mean(axis=0)) / np.sqrt(h.var(axis=0) + 1e-5)
    want = np.tanh(z) @ net.dense_layers()[1].W.value + net.dense_layers()[1].b.value
    np.testing.assert_allclose(m(torch.from_numpy(x)).detach().numpy(), want, rtol=1e-12,
                               atol=1e-14)
    back = tb.from_torch(m)
    bn, bb = net.batchnorms()[0], back.batchnorms()[0]
    assert bb.inference == "population" and _same_state(net, back)
    assert np.array_equal(bb.population_mean, bn.population_mean)
    assert np.array_equal(bb.population_var, bn.population_var)
    assert not np.array_equal(bb.running_mean, bb.population_mean)
    assert np.array_equal(back.predict(x), net.predict(x))
    loaded = dl.load(dl.save(back, tmp_path / "pop.npz"))
    assert loaded.config["bn_inference"] == "population"
    assert np.array_equal(loaded.predict(x), net.predict(x))
    m.train()  # training mode: batch statistics, the moving average updated as BatchNorm1d
    xb = rng.standard_normal((8, 4))
    m(torch.from_numpy(xb))
    mu_b = (xb @ net.dense_layers()[0].W.value).mean(axis=0)
    np.testing.assert_allclose(m[1].running_mean.numpy(), 0.7 * bn.running_mean + 0.3 * mu_b,
                               rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("meta,match", [
    ({"input_mean": np.zeros(5), "input_std": np.ones(5)},
     r"meta input_mean is \(5,\) float64; expected 3 finite floats"),
    ({"input_mean": np.zeros(3)}, r"meta input_std is missing; expected 3 finite floats"),
    ({"input_mean": np.zeros(3), "input_std": np.array([1.0, 0.0, 2.0])},
     r"meta input_std holds 0.0; expected every value > 0"),
])
def test_predict_saved_names_a_bad_saved_standardization(tmp_path, meta, match):
    # was: a raw broadcast error, an AttributeError ('NoneType' ... 'astype'), or "the values
    # overflow float64" for a zero std
    from depthlab.inference import predict_saved

    net = dl.mlp([3, 4, 2], "tanh", dtype="float64", seed=0)
    path = dl.save(net, tmp_path / "m.npz", meta=meta)
    with pytest.raises(ValueError, match=match):
        predict_saved(path, np.ones((2, 3)))
    good = dl.save(net, tmp_path / "g.npz",
                   meta={"input_mean": np.full(3, 0.5), "input_std": np.full(3, 2.0)})
    out, classes = predict_saved(good, np.ones((2, 3)))
    np.testing.assert_array_equal(out, net.predict(np.full((2, 3), 0.25)))
    np.testing.assert_array_equal(classes, out.argmax(axis=1))


def test_an_activation_instance_used_twice_is_kept_both_times():
    # was: named_children() skips a module seen before, so the second Tanh was dropped and the
    # network's outputs were 0.029 away from torch's
    torch.manual_seed(0)
    act = nn.Tanh()
    m = nn.Sequential(nn.Linear(4, 6), act, nn.Linear(6, 6), act, nn.Linear(6, 2)).double()
    net = tb.from_torch(m)
    assert [type(la).__name__ for la in net.layers] == ["Dense", "Activation"] * 2 + ["Dense"]
    x = np.random.default_rng(0).standard_normal((3, 4))
    w = [m[i].weight.detach().numpy().T for i in (0, 2, 4)]
    b = [m[i].bias.detach().numpy() for i in (0, 2, 4)]
    want = np.tanh(np.tanh(x @ w[0] + b[0]) @ w[1] + b[1]) @ w[2] + b[2]
    np.testing.assert_allclose(net.predict(x), want, rtol=1e-13, atol=1e-15)


def test_a_weight_module_used_twice_is_refused_by_name():
    # shared weights: torch sums both uses' gradients into one tensor, two depthlab layers
    # would train apart
    lin = nn.Linear(6, 6)
    m = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), lin, nn.ReLU(), lin)
    with pytest.raises(TypeError, match=r"module '4' .* same module as module '2'"):
        tb.from_torch(m)


@pytest.mark.parametrize("which", ["param", "meta"])
def test_an_object_array_in_a_saved_file_is_named(tmp_path, which):
    # was: "Object arrays cannot be loaded when allow_pickle=False", without the file or entry
    from depthlab.persist import load_meta

    net = dl.mlp([3, 4, 2], "tanh", dtype="float64", seed=0)
    path = dl.save(net, tmp_path / "o.npz", meta={"input_mean": np.zeros(3)})
    with np.load(path) as z:
        key = next(k for k in z.files if k.startswith(f"{which}:"))
    bad = _rewrite(path, tmp_path, lambda z: z.__setitem__(key, np.array([{}], dtype=object)))
    read = dl.load if which == "param" else load_meta
    with pytest.raises(ValueError, match=rf"tampered.npz'?: {key} cannot be read"):
        read(bad)
