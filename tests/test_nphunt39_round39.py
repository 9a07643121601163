"""nphunt39 (round 39): regressions found hunting the NumPy engine with unusual but legal inputs."""

from __future__ import annotations

import numpy as np

import depthlab as dl


def _data(n: int = 24, d: int = 5, c: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)).astype(np.float32), rng.integers(0, c, n)


def _params(net) -> list[np.ndarray]:
    return [p.value.copy() for p in net.parameters()]


def test_dropout_generator_survives_save_and_load(tmp_path) -> None:
    """Training resumed after dl.save/dl.load follows the uninterrupted run bit for bit: the
    dropout layers' generators are saved with the weights (a reloaded network drew its masks
    from the seed's first state again, so its trajectory left the uninterrupted one)."""
    x, y = _data()
    for options in ({"dropout": 0.3}, {"dropout": 0.2, "dropout_type": "alpha",
                                       "activation": "selu"},
                    {"dropout": 0.25, "input_dropout": 0.1, "residual": True}):
        kw = {"activation": "relu", **options}
        whole = dl.mlp([5, 8, 8, 3], seed=3, **kw)
        dl.fit(whole, x, y, epochs=4, batch_size="full", lr=0.05)
        first = dl.mlp([5, 8, 8, 3], seed=3, **kw)
        dl.fit(first, x, y, epochs=2, batch_size="full", lr=0.05)
        dl.save(first, tmp_path / "half.npz")
        resumed = dl.load(tmp_path / "half.npz")
        dl.fit(resumed, x, y, epochs=2, batch_size="full", lr=0.05)
        for a, b in zip(_params(whole), _params(resumed)):
            np.testing.assert_array_equal(a, b, err_msg=str(options))


def test_damaged_dropout_state_is_one_clear_line(tmp_path) -> None:
    """An archive whose dropout generator state is not one names the file and the entry."""
    import pytest

    net = dl.mlp([3, 4, 2], dropout=0.5, seed=0)
    path = dl.save(net, tmp_path / "n.npz")
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["dropout:0:rng"] = np.frombuffer(b'{"bit_generator": "MT19937"}', dtype=np.uint8)
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=r"dropout:0:rng is not a dropout generator's state"):
        dl.load(path)


_OPTIMIZERS = [
    ("sgd", {"lr": 0.05, "momentum": 0.9, "dampening": 0.1, "weight_decay": 1e-3}),
    ("sgd", {"lr": 0.05, "momentum": 0.8, "nesterov": True}),
    ("adam", {"lr": 0.01, "betas": (0.8, 0.99), "weight_decay": 1e-2, "amsgrad": True}),
    ("adamw", {"lr": 0.01, "eps": 1e-6, "weight_decay": 0.1}),
    ("rmsprop", {"lr": 0.01, "alpha": 0.9, "momentum": 0.5, "centered": True}),
    ("adagrad", {"lr": 0.1, "lr_decay": 0.01, "initial_accumulator_value": 0.1}),
    ("adadelta", {"lr": 0.5, "rho": 0.8, "weight_decay": 1e-3}),
    ("nadam", {"lr": 0.01, "momentum_decay": 0.01, "weight_decay": 1e-2}),
]


def _steps(opt, params, rng, n: int) -> None:
    for _ in range(n):
        for p in params:
            p.grad_buffer()[...] = rng.normal(size=p.value.shape)
        opt.step()


def test_optimizer_state_dict_resumes_bit_for_bit() -> None:
    """``state_dict()`` / ``load_state_dict()`` (torch's names): 5 steps, the state pickled and
    loaded into a fresh optimizer (default hyperparameters) over copies of the parameters, 5
    more steps == 10 uninterrupted steps, bit for bit, for every optimizer (was an
    AttributeError: no way to resume Adam's moments or NAdam's running product)."""
    import pickle

    for name, hyper in _OPTIMIZERS:
        for dtype in ("float32", "float64"):
            whole = dl.mlp([3, 4, 2], seed=0, dtype=dtype).parameters()
            opt = dl.optimizer(name, whole, **hyper)
            _steps(opt, whole, np.random.default_rng(1), 10)

            half = dl.mlp([3, 4, 2], seed=0, dtype=dtype).parameters()
            first = dl.optimizer(name, half, **hyper)
            rng = np.random.default_rng(1)
            _steps(first, half, rng, 5)
            saved = pickle.loads(pickle.dumps(first.state_dict()))
            _steps(first, half, np.random.default_rng(9), 1)  # the dict is a copy
            # the values after 5 steps, on other parameter objects
            replay = dl.mlp([3, 4, 2], seed=0, dtype=dtype).parameters()
            _steps(dl.optimizer(name, replay, **hyper), replay, np.random.default_rng(1), 5)
            resumed = dl.optimizer(name, replay)
            resumed.load_state_dict(saved)
            assert resumed.hyperparameters() == opt.hyperparameters()
            _steps(resumed, replay, rng, 5)
            for a, b in zip(whole, replay):
                np.testing.assert_array_equal(a.value, b.value, err_msg=f"{name} {dtype}")


def test_optimizer_load_state_dict_refuses_mismatches() -> None:
    """A state of another optimizer, of other parameter shapes or of another count is one
    clear line naming the mismatch; nothing is changed."""
    import pytest

    params = dl.mlp([3, 4, 2], seed=0).parameters()
    adam = dl.optimizer("adam", params, lr=0.01)
    _steps(adam, params, np.random.default_rng(0), 2)
    with pytest.raises(ValueError, match=r"'adam' optimizer cannot be loaded into 'sgd'"):
        dl.optimizer("sgd", params, lr=0.1).load_state_dict(adam.state_dict())
    other = dl.mlp([3, 5, 2], seed=0).parameters()
    fresh = dl.optimizer("adam", other)
    with pytest.raises(ValueError, match=r"state\[0\]\['exp_avg'\] has shape \(3, 4\) float32; "
                                         r"parameter '.*' is \(3, 5\) float32"):
        fresh.load_state_dict(adam.state_dict())
    assert fresh.step_count == 0 and not fresh.state and fresh.lr == 1e-3
    with pytest.raises(ValueError, match=r"holds the state of 4 parameters; this adam "
                                         r"optimizes 2"):
        dl.optimizer("adam", other[:2]).load_state_dict(adam.state_dict())


def _torch_cross_entropy(z, target, weight, smoothing, reduction, upstream):
    """torch.nn.functional.cross_entropy's value and dL/dz, without importing torch (the
    suite runs where torch is absent): W_bc = w_c yy_bc (yy: smoothed one-hot or probability
    rows); loss_b = -sum_c W_bc log p_bc; mean over sum_b w[y_b] (labels) or B (rows)."""
    b, c = z.shape
    logp = z - z.max(axis=1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(axis=1, keepdims=True))
    yy = np.eye(c)[target] if target.ndim == 1 else target.astype(np.float64)
    yy = yy * (1 - smoothing) + smoothing / c
    big_w = yy * weight
    rows = -(big_w * logp).sum(axis=1)
    grad = np.exp(logp) * big_w.sum(axis=1, keepdims=True) - big_w
    if reduction == "none":
        return rows, grad * upstream[:, None]
    if reduction == "sum":
        return rows.sum(), grad
    denominator = weight[target].sum() if target.ndim == 1 else b
    return rows.sum() / denominator, grad / denominator


def test_cross_entropy_class_weights_match_torch_formula() -> None:
    """``dl.loss("cross_entropy", weight=w)`` (torch's class weights; was "unknown argument
    'weight'"): labels or probability rows, label smoothing, every reduction; float64 to
    1e-13 (measured against torch 2.13: <= 9e-15), float32 stays float32."""
    rng = np.random.default_rng(0)
    for b, c in ((5, 3), (1, 4), (6, 1)):
        z = rng.normal(size=(b, c)) * 3
        labels = rng.integers(0, c, b)
        rows = rng.random((b, c))
        rows /= rows.sum(axis=1, keepdims=True)
        weight = rng.random(c) * 2 + 0.1
        for target in (labels, rows):
            for smoothing in (0.0, 0.2):
                for reduction in ("mean", "sum", "none"):
                    loss = dl.loss("cross_entropy", weight=list(weight),
                                   label_smoothing=smoothing, reduction=reduction)
                    up = rng.normal(size=b) if reduction == "none" else None
                    value = loss.forward(z, target)
                    grad = loss.backward(up)
                    want, want_grad = _torch_cross_entropy(z, target, weight, smoothing,
                                                           reduction, up)
                    np.testing.assert_allclose(value, want, rtol=1e-13, atol=1e-13)
                    np.testing.assert_allclose(grad, want_grad, rtol=1e-13, atol=1e-13)
        loss = dl.loss("cross_entropy", weight=weight)
        assert isinstance(loss.forward(z.astype(np.float32), labels), float)
        assert loss.backward().dtype == np.float32


def test_cross_entropy_class_weights_in_fit_and_bad_weights() -> None:
    """Weights reach training through ``loss_kwargs``; a wrong count, a negative, NaN or all-0
    weight is one line naming it; rows all of zero-weight classes give NaN (torch's 0/0), not
    a ZeroDivisionError."""
    import pytest

    x, y = _data()
    hist = dl.fit(dl.mlp([5, 8, 3], seed=0), x, y, loss_kwargs={"weight": [1.0, 2.0, 0.5]})
    assert np.isfinite(hist.final()["train_loss"])
    z = np.zeros((2, 3))
    with pytest.raises(ValueError, match=r"weight has 2 entries for pred with 3 classes"):
        dl.loss("cross_entropy", weight=[1, 2]).forward(z, np.array([0, 1]))
    for bad in ([1, -1, 2], [0, 0, 0], [1, float("nan"), 1]):
        with pytest.raises(ValueError, match=r"weight=.* accepted: finite numbers >= 0"):
            dl.loss("cross_entropy", weight=bad)
    with pytest.raises(TypeError, match=r"weight='abc' is not accepted"):
        dl.loss("cross_entropy", weight="abc")
    loss = dl.loss("cross_entropy", weight=[0.0, 1.0, 1.0])
    assert np.isnan(loss.forward(z, np.array([0, 0])))
    assert np.isnan(loss.backward()).all()


def test_binary_cross_entropy_pos_weight_and_weight() -> None:
    """``binary_cross_entropy`` takes torch's ``pos_weight`` (per output column or one number)
    and ``weight`` (broadcast to pred): l = w (p y softplus(-z) + (1 - y) softplus(z)), the mean
    over all N entries (was "unknown argument 'pos_weight'"). Measured against torch 2.13's
    binary_cross_entropy_with_logits: float64 <= 1.5e-14 (values up to ~200)."""
    import pytest

    rng = np.random.default_rng(1)
    z = rng.normal(size=(6, 3)) * 5
    z[0, 0] = 60.0
    y = rng.random((6, 3))
    y[1] = 1.0
    softplus = np.logaddexp(0.0, z)
    sig = 1.0 / (1.0 + np.exp(-z))
    for pos in (None, 2.5, rng.random(3) * 3):
        for w in (None, rng.random((6, 3)) + 0.1, rng.random(3)):
            p = 1.0 if pos is None else pos
            ww = 1.0 if w is None else w
            rows = ww * (p * y * (softplus - z) + (1 - y) * softplus)
            grad = ww * (sig * (p * y + 1 - y) - p * y)
            kw = {k: v for k, v in (("pos_weight", pos), ("weight", w)) if v is not None}
            for reduction, want, want_grad in (("mean", rows.mean(), grad / z.size),
                                               ("sum", rows.sum(), grad), ("none", rows, grad)):
                loss = dl.loss("binary_cross_entropy", reduction=reduction, **kw)
                np.testing.assert_allclose(loss.forward(z, y), want, rtol=1e-13, atol=1e-13)
                np.testing.assert_allclose(loss.backward(), want_grad, rtol=1e-13, atol=1e-13)
    loss = dl.loss("binary_cross_entropy", pos_weight=[1.0, 2.0])
    with pytest.raises(ValueError, match=r"pos_weight of shape \(2,\) for pred of shape \(6, 3\)"):
        loss.forward(z, y)
    with pytest.raises(ValueError, match=r"pos_weight=\[-1.0\] is not accepted"):
        dl.loss("binary_cross_entropy", pos_weight=[-1.0])


def test_layers_used_directly_refuse_bad_calls_in_one_line() -> None:
    """A Dense given the wrong width, and Dense/Activation/BatchNorm/Dropout asked for backward
    before any forward or with a gradient of another shape, say so naming the layer (NumPy's
    broadcast error, or silently the gradient itself for a Dropout; were NumPy's
    "matmul: Input operand 1 has a mismatch in its core dimension 0", "'NoneType' object has
    no attribute 'ndim'", "unsupported operand type(s) for -: 'int' and 'NoneType'" and an
    einsum subscripts message)."""
    import pytest

    from depthlab.layers import Activation, AlphaDropout, BatchNorm, Dense, Dropout

    dense = Dense(3, 2)
    with pytest.raises(ValueError, match=r"input of shape \(4, 5\); expected \(batch, 3\)"):
        dense.forward(np.ones((4, 5), np.float32))
    for layer in (Dense(3, 2), Activation("tanh"), BatchNorm(2), Dropout(0.5)):
        with pytest.raises(RuntimeError, match=r"backward\(\) called before forward\(\)"):
            layer.backward(np.ones((4, 2), np.float32))
    for layer, width in ((Dense(3, 2), 3), (Activation("relu"), 2), (BatchNorm(2), 2),
                         (Dropout(0.5), 2), (AlphaDropout(0.2), 2)):
        layer.forward(np.ones((4, width), np.float32) + np.arange(4)[:, None])
        with pytest.raises(ValueError, match=r"gradient of shape \(5, 2\); expected the "
                                             r"forward output's shape \(4, 2\)"):
            layer.backward(np.ones((5, 2), np.float32))
    # the legal cases are unchanged: a 1-D input and a (*, fan_in) input
    assert dense.forward(np.ones(3, np.float32)).shape == (2,)
    out = dense.forward(np.ones((2, 4, 3), np.float32))
    assert dense.backward(np.ones_like(out)).shape == (2, 4, 3)


def test_labels_along_columns_get_the_way_out() -> None:
    """y of shape (1, n) (``np.matrix(y)``, ``y[None, :]``) or a transposed (k, n) table: the
    row-count message says the columns are the samples and how to fix it (fit, doctor, probe,
    ProbeRecorder), not only "x has 24 rows but y has 1"."""
    import pytest

    x, y = _data()
    net = dl.mlp([5, 8, 3], seed=0)
    ravel = (r"\(y has shape \(1, 24\): its 24 columns are the samples; y.ravel\(\) gives the "
             r"labels\)")
    with pytest.raises(ValueError, match=r"training x has 24 rows but y has 1 " + ravel):
        dl.fit(net, x, y[None, :])
    with pytest.raises(ValueError, match=r"x has 24 rows but y has 3 \(y has shape \(3, 24\): .*"
                                         r"y.T gives one row per sample\)"):
        dl.doctor(net, (x, np.eye(3)[y].T))
    with pytest.raises(ValueError, match=r"y has 1 rows but x has 24 " + ravel):
        dl.probe(net, x, y[None, :])
    with pytest.raises(ValueError, match=r"probe_y has 1 rows but probe_x has 24 " + ravel):
        dl.ProbeRecorder(probe_x=x, probe_y=y[None, :])


def test_adam_training_resumed_from_files_follows_the_whole_run(tmp_path) -> None:
    """The whole resume workflow: Trainer 3 epochs, dl.save + the optimizer's state_dict
    pickled, dl.load + load_state_dict + a Trainer on that optimizer, 3 more epochs == 6
    uninterrupted epochs, bit for bit (Adam's moments, the dropout masks, BN statistics)."""
    import pickle

    x, y = _data()
    kw = {"activation": "relu", "dropout": 0.3, "batchnorm": True}
    whole = dl.mlp([5, 6, 6, 3], seed=1, **kw)
    dl.Trainer(whole, optimizer="adam", lr=0.01, batch_size="full", epochs=6).fit(x, y)
    first = dl.mlp([5, 6, 6, 3], seed=1, **kw)
    trainer = dl.Trainer(first, optimizer="adam", lr=0.01, batch_size="full", epochs=3)
    trainer.fit(x, y)
    (tmp_path / "opt.pkl").write_bytes(pickle.dumps(trainer.optimizer.state_dict()))
    dl.save(first, tmp_path / "net.npz")
    net = dl.load(tmp_path / "net.npz")
    opt = dl.optimizer("adam", net.parameters())
    opt.load_state_dict(pickle.loads((tmp_path / "opt.pkl").read_bytes()))
    dl.Trainer(net, optimizer=opt, batch_size="full", epochs=3).fit(x, y)
    for a, b in zip(_params(whole), _params(net)):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(whole.batchnorms(), net.batchnorms()):
        np.testing.assert_array_equal(a.running_var, b.running_var)


def test_probe_recorder_refuses_a_per_item_loss() -> None:
    """``ProbeRecorder(loss=<reduction 'none'>)`` is refused when built, as ``dl.probe`` refuses
    it (was NumPy's "only 0-dimensional arrays can be converted to Python scalars" at the first
    probe of a fit with probe_x)."""
    import pytest

    x, y = _data()
    with pytest.raises(ValueError, match=r"a probe measures one loss per batch; accepted: "
                                         r"reduction='mean'"):
        dl.ProbeRecorder(loss=dl.loss("cross_entropy", reduction="none"), probe_x=x[:8],
                         probe_y=y[:8])
    rec = dl.ProbeRecorder(loss=dl.loss("cross_entropy", reduction="sum"), probe_x=x[:8],
                           probe_y=y[:8])
    dl.fit(dl.mlp([5, 4, 3], seed=0), x, y, callbacks=[rec])


def test_optimizer_params_mistakes_name_the_way_out() -> None:
    """``net.parameters`` passed uncalled says to call it; torch's parameter groups (dicts with
    'params') are taken (a list mixing dicts and Parameters is one line)."""
    import pytest

    net = dl.mlp([3, 4, 2], seed=0)
    with pytest.raises(TypeError, match=r"got method; call it: parameters\(\)"):
        dl.optimizer("sgd", net.parameters, lr=0.1)
    opt = dl.optimizer("adam", [{"params": net.parameters(), "lr": 0.1}])  # torch's groups
    assert len(opt.param_groups) == 1 and opt.param_groups[0]["lr"] == 0.1
    with pytest.raises(TypeError, match="mixes parameter groups"):
        dl.optimizer("adam", [{"params": net.parameters()[:1]}, net.parameters()[1]])


def test_hand_built_dropout_with_any_numpy_bit_generator_saves_and_loads(tmp_path) -> None:
    """A hand-built Dropout on MT19937, Philox, SFC64 or PCG64DXSM is saved (their states hold
    arrays: "Object of type ndarray is not JSON serializable" refused the save) and loaded with
    a generator of its kind in the saved state (PCG64DXSM was refused as "not a PCG64 state");
    an unknown bit generator's name is one line."""
    import pytest

    from depthlab.layers import Activation, Dense, Dropout

    x = np.ones((5, 3), np.float32)
    for kind in (np.random.MT19937, np.random.Philox, np.random.SFC64, np.random.PCG64DXSM):
        drop = Dropout(0.5, rng=np.random.Generator(kind(3)))
        net = dl.Network([Dense(3, 4), Activation("relu"), drop, Dense(4, 2)])
        net.forward(x)
        loaded = dl.load(dl.save(net, tmp_path / "n.npz"))
        again = loaded.dropouts()[0].rng
        assert type(again.bit_generator) is kind
        np.testing.assert_array_equal(again.random(8), drop.rng.random(8))
    path = tmp_path / "n.npz"
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["dropout:0:rng"] = np.frombuffer(b'{"bit_generator": "Mersenne"}', dtype=np.uint8)
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=r"dropout:0:rng is not a dropout generator's state "
                                         r"\(bit_generator 'Mersenne'\); expected .* MT19937"):
        dl.load(path)


def test_weighted_cross_entropy_with_logits_far_apart_is_finite() -> None:
    """Class weights with logits 2e308 apart (log p = -inf for the far class): the loss takes
    -w[y] log p[y] only, as torch's (0.30570447 here, torch 2.13 the same), without NumPy's
    "invalid value" warning (0 * -inf made it NaN in the first weighted version)."""
    import warnings

    z = np.array([[1e308, -1e308, 0.0], [0.0, 1.0, 2.0]])
    y = np.array([0, 2])
    loss = dl.loss("cross_entropy", weight=[1.0, 2.0, 3.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        value = loss.forward(z, y)
        grad = loss.backward()
    logp = 2.0 - np.log(np.exp([0.0, 1.0, 2.0]).sum())
    np.testing.assert_allclose(value, -3.0 * logp / 4.0, rtol=1e-15)
    np.testing.assert_array_equal(grad[0], 0.0)
