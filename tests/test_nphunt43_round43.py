"""Round 43 (nphunt43): torch options of the NumPy engine that nobody had tried.

BatchNorm's ``affine=False`` and ``track_running_stats=False`` (torch's BatchNorm1d options,
absent before: a TypeError, and ``from_torch`` refused such a module), and torch's RAdam and
Adamax optimizers (unknown names before), each against torch (float64 to 1e-12, float32 to
1e-6, over many steps; derivatives also by finite differences and autograd), carried both ways
by ``depthlab.bridge``. Each test was seen failing on the code before (the handoff quotes the
failures)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import depthlab as dl
from depthlab.layers import Activation, BatchNorm, Dense
from depthlab.parameter import Parameter

torch = pytest.importorskip("torch")

_TORCH_DTYPE = {np.float64: torch.float64, np.float32: torch.float32}
_BN_OPTIONS = [(affine, track, momentum) for affine in (True, False)
               for track in (True, False) for momentum in (0.1, None)]


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 2e-6)])
@pytest.mark.parametrize("affine, track, momentum", _BN_OPTIONS)
def test_batchnorm_affine_and_track_running_stats_match_torch(affine, track, momentum, dtype,
                                                              tol) -> None:
    """Before: ``BatchNorm(5, affine=False)`` was a TypeError (no such option). Outputs,
    dL/dx, dL/dgamma, dL/dbeta and the running statistics follow ``nn.BatchNorm1d`` with the
    same options over training and eval passes (eval with ``track_running_stats=False``
    normalizes with the batch's own statistics, as torch)."""
    rng = np.random.default_rng(0)
    bn = BatchNorm(5, eps=1e-3, momentum=momentum, ema_start="zero", dtype=dtype,
                   affine=affine, track_running_stats=track)
    tb = torch.nn.BatchNorm1d(5, eps=1e-3, momentum=momentum, affine=affine,
                              track_running_stats=track, dtype=_TORCH_DTYPE[dtype])
    assert len(bn.parameters()) == len(list(tb.parameters())) == (2 if affine else 0)
    if affine:
        g0, b0 = rng.normal(size=5).astype(dtype), rng.normal(size=5).astype(dtype)
        bn.gamma.value[...], bn.beta.value[...] = g0, b0
        with torch.no_grad():
            tb.weight.copy_(torch.from_numpy(g0))
            tb.bias.copy_(torch.from_numpy(b0))
    for step in range(9):
        training = step % 3 != 2
        tb.train(training)
        x = (rng.normal(size=(8, 5)) * 3 + 1).astype(dtype)
        gy = rng.normal(size=(8, 5)).astype(dtype)
        y = bn.forward(x, training=training)
        gx = bn.backward(gy.copy())
        tx = torch.tensor(x, requires_grad=True)
        ty = tb(tx)
        ty.backward(torch.from_numpy(gy))
        np.testing.assert_allclose(y, ty.detach().numpy(), rtol=tol, atol=tol)
        np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=tol, atol=tol)
        assert y.dtype == gx.dtype == dtype
        if affine:
            np.testing.assert_allclose(bn.gamma.grad, tb.weight.grad.numpy(), rtol=tol, atol=tol)
            np.testing.assert_allclose(bn.beta.grad, tb.bias.grad.numpy(), rtol=tol, atol=tol)
            tb.weight.grad = tb.bias.grad = None
        if track:
            np.testing.assert_allclose(bn.running_mean, tb.running_mean.numpy(), rtol=tol,
                                       atol=tol)
            np.testing.assert_allclose(bn.running_var, tb.running_var.numpy(), rtol=tol,
                                       atol=tol)
            assert bn.num_batches == int(tb.num_batches_tracked)
        else:
            assert tb.running_mean is None
            np.testing.assert_array_equal(bn.running_mean, np.zeros(5, dtype))
            assert bn.num_batches == 0


@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_without_affine_or_running_stats_derivative_by_finite_differences(
        training) -> None:
    """dL/dx of ``sum(c * y)`` against central differences (float64): ``affine=False`` and
    ``track_running_stats=False`` in eval mode are the batch-statistics derivative."""
    rng = np.random.default_rng(2)
    bn = BatchNorm(4, dtype="float64", affine=False, track_running_stats=False)
    x = rng.normal(size=(6, 4)) * 2
    c = rng.normal(size=(6, 4))
    bn.forward(x, training=training)
    gx = bn.backward(c.copy())
    h = 1e-6
    fd = np.zeros_like(x)
    for i in np.ndindex(*x.shape):
        xp, xm = x.copy(), x.copy()
        xp[i] += h
        xm[i] -= h
        fd[i] = (np.sum(c * bn.forward(xp, training=training))
                 - np.sum(c * bn.forward(xm, training=training))) / (2 * h)
    np.testing.assert_allclose(gx, fd, atol=1e-7)
    # the eval pass normalizes each batch with its own statistics, as torch does
    y = bn.forward(x, training=False)
    np.testing.assert_allclose(y.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=0), x.var(axis=0) / (x.var(axis=0) + 1e-5),
                               rtol=1e-12)


def test_batchnorm_options_refused_in_one_line() -> None:
    """A flag that is not a bool, and ``inference="population"`` with no running statistics
    (torch has no such mode), are refused naming the value; a one-row eval batch without
    running statistics says why it needs 2 rows."""
    with pytest.raises(TypeError, match=r"^BatchNorm affine must be True or False, got 'no'$"):
        BatchNorm(3, affine="no")
    with pytest.raises(TypeError, match=r"track_running_stats must be True or False, got 0$"):
        BatchNorm(3, track_running_stats=0)
    with pytest.raises(ValueError, match=r"inference='population' needs "
                                         r"track_running_stats=True"):
        BatchNorm(3, track_running_stats=False, inference="population")
    bn = BatchNorm(3, track_running_stats=False)
    with pytest.raises(ValueError, match=r"at least 2 rows.*track_running_stats=False"):
        bn.forward(np.ones((1, 3), np.float32), training=False)
    assert "affine=False" in repr(BatchNorm(3, affine=False))
    net = dl.Network([Dense(3, 4, rng=0), BatchNorm(4, track_running_stats=False)])
    net.set_bn_inference("population")  # afterwards: refused at the next pass, not ignored
    with pytest.raises(ValueError, match=r"^bn: inference='population' needs "
                                         r"track_running_stats=True; .*\(set inference='ema'\)$"):
        net.predict(np.ones((5, 3)))


@pytest.mark.parametrize("affine, track", [(False, True), (True, False), (False, False)])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_bridge_carries_batchnorm_options_both_ways(affine, track, dtype) -> None:
    """Before: ``from_torch`` refused ``BatchNorm1d(affine=False)`` and
    ``track_running_stats=False`` ("depthlab's BatchNorm has a trainable gamma and beta and
    running statistics"). Now a torch model with them trains in depthlab as in torch, and
    ``to_torch`` gives back the same options, outputs and statistics."""
    from depthlab.bridge import from_torch, to_torch

    nn = torch.nn
    tdt = torch.float64 if dtype == "float64" else torch.float32
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6, bias=False), nn.BatchNorm1d(
        6, momentum=None, affine=affine, track_running_stats=track), nn.Tanh(),
        nn.Linear(6, 3)).to(tdt)
    net = from_torch(model)
    bn = net.batchnorms()[0]
    assert (bn.affine, bn.track_running_stats, bn.momentum) == (affine, track, None)
    assert len(net.parameters()) == len(list(model.parameters()))
    rng = np.random.default_rng(0)
    opt = dl.optimizer("sgd", net.parameters(), lr=0.1, momentum=0.9)
    topt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss, tloss = dl.loss("cross_entropy"), nn.CrossEntropyLoss()
    tol = 1e-12 if dtype == "float64" else 2e-6
    for _ in range(5):
        x = rng.normal(size=(10, 4)).astype(dtype)
        y = rng.integers(0, 3, 10)
        loss.forward(net.forward(x, training=True), y)
        net.backward(loss.backward())
        opt.step()
        topt.zero_grad()
        tloss(model(torch.from_numpy(x)), torch.from_numpy(y)).backward()
        topt.step()
    model.eval()
    x = rng.normal(size=(7, 4)).astype(dtype)
    np.testing.assert_allclose(net.predict(x), model(torch.from_numpy(x)).detach().numpy(),
                               rtol=tol, atol=tol)
    back = to_torch(net).eval()
    tbn = back[1]
    assert (tbn.affine, tbn.track_running_stats, tbn.momentum) == (affine, track, None)
    if track:
        np.testing.assert_allclose(tbn.running_var.numpy(), model[1].running_var.numpy(),
                                   rtol=tol, atol=tol)
        assert int(tbn.num_batches_tracked) == 5
    np.testing.assert_allclose(back(torch.from_numpy(x)).detach().numpy(), net.predict(x),
                               rtol=tol, atol=tol)
    again = from_torch(back).batchnorms()[0]
    assert (again.affine, again.track_running_stats) == (affine, track)


# -- RAdam and Adamax -----------------------------------------------------------------------
_NEW_OPTIMIZERS = [
    ("radam", "RAdam", {"lr": 0.01}),
    ("RAdam", "RAdam", {"lr": 0.01, "weight_decay": 0.1}),
    ("radam", "RAdam", {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True,
                        "maximize": True}),
    ("radam", "RAdam", {"lr": 0.01, "betas": (0.5, 0.9), "eps": 1e-3, "maximize": True}),
    ("radam", "RAdam", {"lr": 0.01, "betas": (0.0, 0.0)}),
    ("adamax", "Adamax", {"lr": 0.01}),
    ("Adamax", "Adamax", {"lr": 0.01, "weight_decay": 0.1, "maximize": True}),
    ("adamax", "Adamax", {"lr": 0.01, "betas": (0.5, 0.6), "eps": 1e-3}),
]


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 1e-6)])
@pytest.mark.parametrize("name, torch_name, kwargs", _NEW_OPTIMIZERS)
def test_radam_and_adamax_step_as_torch(name, torch_name, kwargs, dtype, tol) -> None:
    """Before: ``dl.optimizer("radam", ...)`` was "unknown optimizer 'radam'". 200 steps
    (RAdam's unrectified first steps and its rectified ones) from the same gradients: the
    weights stay within ``tol`` of torch's, relative to their size."""
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(5, 4)).astype(dtype)
    p = Parameter("w", w0.copy())
    opt = dl.optimizer(name, [p], **kwargs)
    tp = torch.nn.Parameter(torch.from_numpy(w0.copy()))
    topt = getattr(torch.optim, torch_name)([tp], **kwargs)
    a = rng.normal(size=(4, 4)).astype(dtype)
    for _ in range(200):
        g = (p.value @ a + rng.normal(size=w0.shape)).astype(dtype)
        p.grad = g
        tp.grad = torch.from_numpy(g.copy())
        opt.step()
        topt.step()
        ref = tp.detach().numpy()
        assert p.value.dtype == dtype
        assert np.max(np.abs(p.value - ref)) <= tol * np.max(np.abs(ref))
    for key, buf in opt.state[p].items():
        ref = topt.state[tp][key].numpy()
        assert np.max(np.abs(buf - ref)) <= tol * np.max(np.abs(ref)), key


@pytest.mark.parametrize("name", ["radam", "adamax"])
def test_radam_and_adamax_resume_and_take_groups(name) -> None:
    """``state_dict`` / ``load_state_dict`` resume bit for bit; parameter groups step each with
    its own hyperparameters; found by torch's class name, not offered among the config names;
    a bad beta is one line naming it."""
    def steps(opt, params, rng, n):
        for _ in range(n):
            for q in params:
                q.grad_buffer()[...] = rng.normal(size=q.value.shape)
            opt.step()

    whole = dl.mlp([3, 4, 2], seed=0, dtype="float64").parameters()
    steps(dl.optimizer(name, whole, lr=0.01, weight_decay=0.01), whole,
          np.random.default_rng(1), 10)
    half = dl.mlp([3, 4, 2], seed=0, dtype="float64").parameters()
    first = dl.optimizer(name, half, lr=0.01, weight_decay=0.01)
    rng = np.random.default_rng(1)
    steps(first, half, rng, 5)
    saved = pickle.loads(pickle.dumps(first.state_dict()))
    resumed = dl.optimizer(name, half)
    resumed.load_state_dict(saved)
    steps(resumed, half, rng, 5)
    for a, b in zip(whole, half):
        np.testing.assert_array_equal(a.value, b.value)

    net = dl.mlp([3, 4, 2], seed=0, dtype="float64")
    tnet = [torch.nn.Parameter(torch.from_numpy(q.value.copy())) for q in net.parameters()]
    ws, bs = net.parameters()[::2], net.parameters()[1::2]
    opt = dl.optimizer(name, [{"params": ws, "weight_decay": 0.1}, {"params": bs, "lr": 0.1}],
                       lr=0.01)
    cls = {"radam": torch.optim.RAdam, "adamax": torch.optim.Adamax}[name]
    topt = cls([{"params": tnet[::2], "weight_decay": 0.1}, {"params": tnet[1::2], "lr": 0.1}],
               lr=0.01)
    rng = np.random.default_rng(3)
    for _ in range(30):
        for q, tq in zip(net.parameters(), tnet):
            q.grad = rng.normal(size=q.value.shape)
            tq.grad = torch.from_numpy(q.grad.copy())
        opt.step()
        topt.step()
    for q, tq in zip(net.parameters(), tnet):
        np.testing.assert_allclose(q.value, tq.detach().numpy(), rtol=1e-12, atol=1e-14)

    assert name in dl.OPTIMIZERS
    assert type(dl.optimizer(name.upper(), whole)).__name__ in ("RAdam", "Adamax")
    with pytest.raises(ValueError, match=r"^invalid beta2 \(betas\[1\]\) value: 1\.0; expected "
                                         r"a finite number in \[0\.0, 1\.0\)$"):
        dl.optimizer(name, whole, betas=(0.9, 1.0))


@pytest.mark.parametrize("name", ["radam", "adamax"])
def test_fit_trains_with_radam_and_adamax(name) -> None:
    """``dl.fit(..., optimizer="radam")`` trains (the loss goes down) and its optimizer is the
    one asked for."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4))
    y = (x[:, 0] + x[:, 1] > 0).astype(int)
    net = dl.mlp([4, 8, 2], seed=0, dtype="float64")
    hist = dl.fit(net, x, y, optimizer=name, lr=0.01, epochs=20, batch_size=16, seed=0)
    losses = hist.epochs_frame()["train_loss"].to_numpy()
    assert losses[-1] < 0.8 * losses[0]


def test_network_with_batchnorm_options_trains_and_predicts() -> None:
    """A hand-built network with the new BatchNorm options trains in ``fit`` and its
    ``predict`` uses the batch statistics when there are no running ones."""
    rng = np.random.default_rng(0)
    net = dl.Network([Dense(4, 6, bias=False, dtype="float64", rng=0),
                      BatchNorm(6, dtype="float64", affine=False, track_running_stats=False),
                      Activation("relu"), Dense(6, 2, dtype="float64", rng=1)])
    assert len(net.parameters()) == 3  # W of each Dense, b of the last: no gamma, beta
    x = rng.normal(size=(40, 4))
    y = (x[:, 0] > 0).astype(int)
    hist = dl.fit(net, x, y, lr=0.05, optimizer="adam", epochs=10, batch_size=8, seed=0)
    assert np.isfinite(hist.epochs_frame()["train_loss"]).all()
    z = x @ net.layers[0].W.value
    h = np.maximum((z - z.mean(axis=0)) / np.sqrt(z.var(axis=0) + 1e-5), 0)
    np.testing.assert_allclose(net.predict(x), h @ net.layers[3].W.value + net.layers[3].b.value,
                               atol=1e-12)


@pytest.mark.parametrize("flag", ["foreach", "fused", "capturable", "differentiable"])
def test_torch_implementation_flags_are_refused_saying_what_they_are(flag) -> None:
    """torch.optim's ``foreach=``/``fused=``/``capturable=``/``differentiable=`` choose how
    torch runs an update. Before: ``Adam(params, fused=True)`` was Python's "Adam.__init__() got
    an unexpected keyword argument 'fused'"; now the class and ``dl.optimizer`` say what the
    flag is and list the accepted hyperparameters, and a typo gets the closest name."""
    from depthlab.optimizers import SGD, Adam

    params = dl.mlp([3, 4, 2], seed=0).parameters()
    want = (rf"^unknown argument '{flag}' for optimizer 'adam' \(torch's {flag}= chooses how "
            r"torch runs the update, not what it computes; depthlab has one NumPy update: leave "
            r"it out\); accepted: lr, betas, eps, weight_decay, amsgrad, maximize")
    with pytest.raises(TypeError, match=want):
        Adam(params, lr=1e-3, **{flag: False})
    with pytest.raises(TypeError, match=want):
        dl.optimizer("adam", params, lr=1e-3, **{flag: False})
    with pytest.raises(TypeError, match=r"^unknown argument 'momentun' for optimizer 'sgd' "
                                        r"\(did you mean 'momentum'\?\); accepted: lr, momentum"):
        SGD(params, lr=0.1, momentun=0.9)


@pytest.mark.parametrize("name, torch_name", [("sgd", "SGD"), ("adam", "Adam"),
                                              ("radam", "RAdam")])
def test_step_takes_torchs_closure(name, torch_name) -> None:
    """torch's ``opt.step(closure)``: the closure recomputes the loss and the gradients, is
    called first, and its loss is returned. Before: "step() takes 1 positional argument but 2
    were given". 20 closure steps of a network and of its torch copy agree (float64)."""
    from depthlab.bridge import to_torch

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 3)), rng.integers(0, 2, 16)
    net = dl.mlp([3, 5, 2], seed=0, dtype="float64")
    model = to_torch(net)
    loss = dl.loss("cross_entropy")
    opt = dl.optimizer(name, net.parameters(), lr=0.05)
    topt = getattr(torch.optim, torch_name)(model.parameters(), lr=0.05)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)

    def closure() -> float:
        value = loss.forward(net.forward(x, training=True), y)
        net.backward(loss.backward())
        return value

    def tclosure():
        topt.zero_grad()
        out = torch.nn.functional.cross_entropy(model(tx), ty)
        out.backward()
        return out

    for _ in range(20):
        got, want = opt.step(closure), topt.step(tclosure)
        assert got == pytest.approx(want.item(), rel=1e-12)
    for p, tp in zip(net.parameters(), model.parameters()):
        value = tp.detach().numpy()
        np.testing.assert_allclose(p.value, value.T if value.ndim == 2 else value, rtol=1e-12,
                                   atol=1e-14)
    assert opt.step() is None
    with pytest.raises(TypeError, match=r"^closure must be a function .*got float 0\.5$"):
        opt.step(0.5)


@pytest.mark.parametrize("name", ["radam", "adamax"])
def test_zero_eps_divergence_names_eps_without_a_numpy_warning(name) -> None:
    """``eps = 0`` (accepted, as torch accepts it) and a weight whose gradient is 0: 0 / 0, NaN
    weights; the run stops with a report naming ``eps`` (``zero_eps``), as for Adam, and
    without NumPy's "divide by zero encountered in reciprocal" (RAdam printed it)."""
    import warnings

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 4))
    x[:, 3] = 0.0  # the weights of this input get a zero gradient
    y = (x[:, 0] > 0).astype(int)
    net = dl.mlp([4, 8, 2], seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        hist = dl.fit(net, x, y, optimizer=name, lr=0.01, eps=0.0, epochs=10, batch_size=8,
                      seed=0)
    assert hist.divergence is not None
    assert hist.divergence.zero_eps == {"radam": "RAdam", "adamax": "Adamax"}[name]


def test_losses_take_torch_tensors_for_weights_and_inputs() -> None:
    """A port passes torch's class weights as a tensor (``weight=torch.tensor(w)``, often one
    that requires grad, or bfloat16): the values are taken, as the engine takes tensors for
    data. Before: "Can't call numpy() on Tensor that requires grad" (a RuntimeError) and
    "Got unsupported ScalarType BFloat16"."""
    rng = np.random.default_rng(0)
    z, y = rng.normal(size=(6, 3)), np.array([0, 1, 2, 1, 0, 2])
    w = [1.0, 2.0, 0.5]
    cases = [("cross_entropy", "weight", y), ("nll_loss", "weight", y),
             ("binary_cross_entropy", "pos_weight", np.eye(3)[y]),
             ("binary_cross_entropy", "weight", np.eye(3)[y])]
    for name, key, target in cases:
        want = dl.loss(name, **{key: w}).forward(z, target)
        for tensor in (torch.tensor(w, requires_grad=True), torch.tensor(w).bfloat16()):
            loss = dl.loss(name, **{key: tensor})
            assert loss.forward(torch.tensor(z, requires_grad=True), torch.tensor(target)) == want
            np.testing.assert_array_equal(loss.backward(), _fresh_grad(name, key, w, z, target))
    per = dl.loss("mse", reduction="none")
    per.forward(z, np.zeros_like(z))
    np.testing.assert_array_equal(per.backward(torch.ones(6, 3, requires_grad=True)), 2 * z)


def _fresh_grad(name: str, key: str, w: list, z: np.ndarray, target: np.ndarray) -> np.ndarray:
    loss = dl.loss(name, **{key: w})
    loss.forward(z, target)
    return loss.backward()


def test_layers_and_network_backward_take_torch_tensors() -> None:
    """Layers used on their own take a torch tensor's values (one that requires grad, bfloat16)
    as ``Network.forward`` does, and ``net.backward`` takes a tensor gradient. Before: torch's
    "Can't call numpy() on Tensor that requires grad" (Dense, Activation, Residual,
    ``net.backward``) or "'torch.dtype' object has no attribute 'kind'" (Dense)."""
    from depthlab.layers import Residual, Sequential

    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 3))
    layers = [Dense(3, 3, dtype="float64", rng=0), BatchNorm(3, dtype="float64"),
              Activation("tanh"), Residual([Dense(3, 3, dtype="float64", rng=1),
                                            Activation("relu")]),
              Sequential([Dense(3, 3, dtype="float64", rng=2), Activation("relu")])]
    for layer in layers:
        want = layer.forward(x, training=False)
        got = layer.forward(torch.tensor(x, requires_grad=True), training=False)
        assert isinstance(got, np.ndarray)
        np.testing.assert_array_equal(got, want)
    net = dl.mlp([3, 4, 2], batchnorm=True, seed=0, dtype="float64")
    g = rng.normal(size=(5, 2))
    net.forward(x)
    want = net.backward(g)
    net.forward(torch.tensor(x, requires_grad=True))
    np.testing.assert_array_equal(net.backward(torch.tensor(g, requires_grad=True)), want)


def test_parameters_and_optimizer_grads_take_torch_tensors() -> None:
    """A ``Parameter`` made from a tensor that requires grad holds its values, and a ``.grad``
    set to such a tensor (or a bfloat16 one) is taken by ``step()`` as a list is. Before:
    torch's "Can't call numpy() on Tensor that requires grad"."""
    p = Parameter("w", torch.ones(2, 3, dtype=torch.float64, requires_grad=True))
    assert isinstance(p.value, np.ndarray) and p.value.dtype == np.float64
    opt = dl.optimizer("sgd", [p], lr=0.1)
    p.grad = torch.full((2, 3), 2.0, dtype=torch.float64, requires_grad=True)
    opt.step()
    np.testing.assert_array_equal(p.value, np.full((2, 3), 0.8))
    p.grad = torch.full((2, 3), 2.0).bfloat16()
    opt.step()
    np.testing.assert_array_equal(p.value, np.full((2, 3), 0.8 - 0.1 * 2.0))
