"""Round 39 (bridgehunt39): the NumPy <-> PyTorch bridge on the networks ``dl.mlp`` builds.

Each network is copied with ``to_torch``; float64 forward outputs, every parameter gradient
(against torch autograd), every quantity ``dl.probe`` and ``dlt.probe`` share (matched by
layer and name; relative error < 1e-6), a few SGD-momentum and Adam steps on both sides, and
the round trip ``from_torch(to_torch(net))`` (bit for bit) are compared.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import depthlab as dl  # noqa: E402
import depthlab.torch as dlt  # noqa: E402
from depthlab.activations import ACTIVATIONS  # noqa: E402
from depthlab.bridge import from_torch, to_torch  # noqa: E402
from depthlab.losses import CrossEntropy  # noqa: E402
from depthlab.optimizers import SGD, Adam  # noqa: E402

RNG = np.random.default_rng(39)
X = RNG.standard_normal((12, 5))
Y = RNG.integers(0, 3, 12)


def _rel(a: float, b: float, floor: float = 1e-9) -> float:
    if np.isnan(a) and np.isnan(b):
        return 0.0
    return abs(a - b) / max(abs(a), abs(b), floor)


def _torch_params(model) -> list[np.ndarray]:
    """torch's parameters in depthlab's layout (a Linear's weight transposed)."""
    return [p.detach().numpy().T if p.ndim == 2 else p.detach().numpy()
            for p in model.parameters()]


def _torch_grads(model) -> list[np.ndarray]:
    return [p.grad.numpy().T if p.ndim == 2 else p.grad.numpy() for p in model.parameters()]


NETS = [(act, {}) for act in ACTIVATIONS if act != "softmax"] + [
    ("relu", {"batchnorm": True}),
    ("tanh", {"residual": True}),
    ("selu", {"batchnorm": True, "residual": True}),
    ("leaky_relu", {"activation_kwargs": {"negative_slope": 0.2}}),
    ("elu", {"activation_kwargs": {"alpha": 0.5}, "init": "he_normal"}),
    ("gelu", {"activation_kwargs": {"approximate": "tanh"}, "dropout": 0.3}),
    ("swish", {"activation_kwargs": {"beta": 2.0}, "dropout": 0.2, "dropout_type": "alpha"}),
    ("sigmoid", {"sizes": [5, 1, 1, 3], "init": "orthogonal"}),
    ("mish", {"batchnorm": True, "bn_momentum": None, "bn_ema_start": "first_batch"}),
]


def _build(act: str, kw: dict):
    kw = dict(kw)
    sizes = kw.pop("sizes", [5, 6, 6, 3])
    return dl.mlp(sizes, act, dtype="float64", seed=7, **kw)


@pytest.mark.parametrize(("act", "kw"), NETS, ids=[f"{a}-{sorted(k)}" for a, k in NETS])
def test_forward_gradients_probe_and_round_trip(act: str, kw: dict) -> None:
    net = _build(act, kw)
    model = to_torch(net)
    xt, yt = torch.from_numpy(X), torch.from_numpy(Y)
    model.eval()
    with torch.no_grad():
        out_t = model(xt).numpy()
    np.testing.assert_allclose(net.forward(X, training=False), out_t, rtol=1e-10, atol=1e-13)

    # gradients of every parameter (dropout off on both sides: its masks are random)
    model.train()
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout | torch.nn.AlphaDropout):
            m.eval()
    loss = CrossEntropy()
    for p in net.parameters():
        p.grad[...] = 0.0
    loss.forward(_no_dropout_forward(net), Y)
    net.backward(loss.backward())
    model.zero_grad()
    torch.nn.functional.cross_entropy(model(xt), yt).backward()
    for g_np, g_t in zip([p.grad for p in net.parameters()], _torch_grads(model), strict=True):
        np.testing.assert_allclose(g_np, g_t, rtol=1e-9, atol=1e-14)

    # the probe tables (dl.probe: dropout off, batch statistics; the torch copy likewise)
    net = _build(act, kw)
    model = to_torch(net)
    model.train()
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout | torch.nn.AlphaDropout):
            m.eval()
    a = dl.probe(net, X, Y).set_index(["layer", "quantity"])["value"]
    b = dlt.probe(model, xt, yt, "cross_entropy").set_index(["layer", "quantity"])["value"]
    shared = a.index.intersection(b.index)
    if kw.get("batchnorm") or kw.get("residual"):  # README: pre_* differ by definition there
        shared = [k for k in shared if not k[1].startswith(("pre_", "grad_pre_"))]
    assert len(shared) >= 10
    worst = max(_rel(float(a[k]), float(b[k])) for k in shared)
    assert worst < 1e-6, [(k, a[k], b[k]) for k in shared if _rel(float(a[k]), float(b[k])) >= 1e-6]

    # torch -> depthlab gives the same network back, bit for bit
    back = from_torch(to_torch(net))
    assert back.dtype == net.dtype
    for p, q in zip(net.parameters(), back.parameters(), strict=True):
        assert np.array_equal(p.value, q.value)
    assert np.array_equal(net.forward(X, training=False), back.forward(X, training=False))


def _no_dropout_forward(net):
    from depthlab.layers import Dropout

    saved = []

    def walk(layer):
        if isinstance(layer, Dropout):
            saved.append((layer, layer.p))
            layer.p = 0.0
        for sub in getattr(layer, "layers", None) or []:
            walk(sub)
        if hasattr(layer, "branch"):
            walk(layer.branch)

    walk(net)
    try:
        return net.forward(X, training=True)
    finally:
        for layer, p in saved:
            layer.p = p


@pytest.mark.parametrize("kw", [{}, {"batchnorm": True, "residual": True}])
@pytest.mark.parametrize("opt", ["sgd_momentum", "adam"])
def test_training_steps_agree(kw: dict, opt: str) -> None:
    net = dl.mlp([5, 6, 6, 3], "tanh", dtype="float64", seed=3, **kw)
    model = to_torch(net)
    model.train()
    if opt == "adam":
        o_np, o_t = Adam(net.parameters(), lr=0.01), torch.optim.Adam(model.parameters(), lr=0.01)
    else:
        o_np = SGD(net.parameters(), lr=0.1, momentum=0.9)
        o_t = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss = CrossEntropy()
    xt, yt = torch.from_numpy(X), torch.from_numpy(Y)
    for _ in range(4):
        o_np.zero_grad()
        loss.forward(net.forward(X, training=True), Y)
        net.backward(loss.backward())
        o_np.step()
        o_t.zero_grad()
        torch.nn.functional.cross_entropy(model(xt), yt).backward()
        o_t.step()
    for p, q in zip([p.value for p in net.parameters()], _torch_params(model), strict=True):
        np.testing.assert_allclose(p, q, rtol=1e-12, atol=1e-14)
    bufs = [b.numpy() for name, b in model.named_buffers() if name.endswith(("running_mean",
                                                                             "running_var"))]
    assert len(bufs) == (6 if kw else 0)
    model.eval()
    np.testing.assert_allclose(net.forward(X, training=False),
                               model(xt).detach().numpy(), rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize(("fn", "arg", "words"), [
    (to_torch, "net", "to_torch expects a depthlab Network"),
    (to_torch, torch.nn.Linear(2, 2), "to_torch expects a depthlab Network"),
    (from_torch, dl.mlp([2, 3, 1]), "from_torch expects a torch.nn.Module"),
    (from_torch, torch.nn.Sequential(torch.nn.Conv1d(1, 2, 3)), "cannot express module '0'"),
    (from_torch, torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(4, 2)),
     "expects 4 features, the modules before it give 3"),
    (from_torch, torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 2).double()),
     "float32 or float64 parameters (one dtype)"),
])
def test_bad_input_one_clear_line(fn, arg, words: str) -> None:
    with pytest.raises(TypeError) as info:
        fn(arg)
    assert words in str(info.value)
    assert "\n" not in str(info.value)


def _tables(model, net):
    a = dl.probe(net, X, Y).set_index(["layer", "quantity"])["value"]
    b = dlt.probe(model, torch.from_numpy(X), torch.from_numpy(Y),
                  "cross_entropy").set_index(["layer", "quantity"])["value"]
    return a, b


@pytest.mark.parametrize("mods", [
    lambda nn: [nn.Linear(5, 6), nn.Tanh(), nn.Identity(), nn.Linear(6, 6), nn.ReLU(),
                nn.Linear(6, 3)],
    lambda nn: [nn.Linear(5, 6), nn.Identity(), nn.Sigmoid(), nn.Linear(6, 3)],
    lambda nn: [nn.Linear(5, 6), nn.ELU(), nn.Dropout(0.2), nn.Identity(), nn.Identity(),
                nn.Linear(6, 6), nn.Sequential(nn.Identity(), nn.Dropout(0.1), nn.Tanh()),
                nn.Linear(6, 3)],
], ids=["after-act", "before-act", "beside-dropout"])
def test_from_torch_identity_beside_an_activation_adds_no_probe_layer(mods) -> None:
    """An nn.Identity next to an activation was an extra depthlab identity layer: dl.probe's
    layer 2 had the tanh's act_mean (-0.173) where dlt.probe's layer 2 has the ReLU's (0.211)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(*mods(torch.nn)).double()
    model.train()
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.eval()
    net = from_torch(model)
    np.testing.assert_allclose(net.forward(X, training=False),
                               model.eval()(torch.from_numpy(X)).detach().numpy(), rtol=1e-12)
    model.train()
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.eval()
    a, b = _tables(model, net)
    n_hidden = sum(isinstance(m, torch.nn.Linear) for m in model.modules()) - 1
    assert sorted(a.index.get_level_values(0).unique()) == list(range(n_hidden + 1))
    shared = a.index.intersection(b.index)
    bad = [(k, a[k], b[k]) for k in shared if _rel(float(a[k]), float(b[k])) >= 1e-6]
    assert not bad


def test_identity_activation_network_keeps_its_layers_through_the_round_trip() -> None:
    net = dl.mlp([5, 6, 6, 3], "identity", dtype="float64", seed=2)
    back = from_torch(to_torch(net))
    assert repr(back).replace("from_torch", "glorot_uniform") == repr(net)
    assert dl.probe(back, X, Y).equals(dl.probe(net, X, Y))
    out = torch.nn.Sequential(torch.nn.Linear(5, 3), torch.nn.Identity()).double()
    assert from_torch(out).layers[-1].is_output


@pytest.mark.parametrize("mods", [
    lambda nn: [nn.Linear(5, 6), nn.Linear(6, 6), nn.Tanh(), nn.Linear(6, 3)],
    lambda nn: [nn.Linear(5, 6), nn.BatchNorm1d(6), nn.Dropout(0.1), nn.Linear(6, 6), nn.ReLU(),
                nn.Linear(6, 3)],
], ids=["linear-linear", "linear-bn-linear"])
def test_from_torch_weight_layer_feeding_a_weight_layer_is_a_hidden_layer(mods) -> None:
    """``Linear, Linear, Tanh, Linear`` gave dl.probe one hidden layer, numbered 1 but the
    second Linear's (pre_mean 0.141 against dlt.probe's layer 1, the first Linear, -0.225);
    ``Linear, BatchNorm1d, Linear`` gave none."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(*mods(torch.nn)).double()
    net = from_torch(model)
    model.eval()
    np.testing.assert_allclose(net.forward(X, training=False),
                               model(torch.from_numpy(X)).detach().numpy(), rtol=1e-12)
    model.train()
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.eval()
    a, b = _tables(model, net)
    assert sorted(a.index.get_level_values(0).unique()) == [0, 1, 2]
    shared = a.index.intersection(b.index)
    if any(isinstance(m, torch.nn.BatchNorm1d) for m in model.modules()):
        shared = [k for k in shared if not k[1].startswith(("pre_", "grad_pre_"))]
    for k in shared:
        assert _rel(float(a[k]), float(b[k])) < 1e-6, (k, a[k], b[k])
