"""depthlab.torch.probe: every quantity against a direct autograd computation (NumPy statistics of
captured tensors, gradients by torch.autograd.grad with respect to them), the NumPy probes on a
bridged MLP, in-place activations, weight sharing, no_grad parts, bf16 autocast, no side effects,
bad inputs. CUDA variants run when a GPU is present."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import depthlab as dl
import depthlab.torch as dlt
from depthlab.bridge.torch_bridge import to_torch
from depthlab.torch import zoo

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device"))]
PCTS = (2, 15, 50, 85, 98)


# ---------------------------------------------------------------------------------------------
# the reference: capture every call on a copy without in-place operations, then NumPy statistics


def _first(obj):
    if isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, (tuple, list)):
        for o in obj:
            t = _first(o)
            if t is not None:
                return t
    return None


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float64).numpy()


def _derivative(module: nn.Module, s: torch.Tensor) -> np.ndarray:
    """f'(s) by autograd on a fresh copy of the activation module."""
    f = copy.deepcopy(module)
    if hasattr(f, "inplace"):
        f.inplace = False
    leaf = s.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(f(leaf).sum(), leaf)
    return _np(g)


def reference(model, x, y, loss_fn, layers, followers, blocks=(), sup=None, feature_axis=None):
    """Expected rows {(layer index, quantity): value}.

    ``layers``: expected module names in execution order (``NAME.out_proj`` for attention
    outputs, the attention module NAME for its input projection, weight rows only);
    ``followers``: layer name -> tuple of follower module names (the first call of each after
    the layer's call); ``blocks``: residual block names; ``sup``: activation class -> sup|f'|.
    """
    sup = sup or {}
    feature_axis = feature_axis or {}
    ref = copy.deepcopy(model)
    for m in ref.modules():
        if hasattr(m, "inplace"):
            m.inplace = False
    names = {id(m): n for n, m in ref.named_modules()}
    mods = dict(ref.named_modules())
    calls = []

    def hook(m, args, out):
        i, o = _first(args), _first(out)
        calls.append((names[id(m)], i, o, None if i is None else i.detach().clone(),
                      None if o is None else o.detach().clone()))

    handles = [m.register_forward_hook(hook) for m in ref.modules()]
    out = ref(x)
    loss = loss_fn(out, y)
    for h in handles:
        h.remove()
    expected = {(0, "loss"): float(loss.detach())}
    if not y.is_floating_point():
        expected[(0, "acc")] = float((out.argmax(1) == y).double().mean())
    elif y.shape == out.shape and bool(((y == 0) | (y == 1)).all()):
        # hard 0/1 targets (round 23): a BCE's share of outputs on the right side of 0, a
        # cross-entropy's one-hot rows scored as their class indices
        if isinstance(loss_fn, nn.BCEWithLogitsLoss):
            expected[(0, "acc")] = float(((out > 0) == (y == 1)).double().mean())
        elif isinstance(loss_fn, nn.CrossEntropyLoss) and bool((y.sum(1) == 1).all()):
            expected[(0, "acc")] = float((out.argmax(1) == y.argmax(1)).double().mean())

    def calls_of(name):
        return [k for k, c in enumerate(calls) if c[0] == name]

    want_grad = []
    for li, lname in enumerate(layers, start=1):
        owner = lname[: -len(".out_proj")] if lname.endswith(".out_proj") else lname
        internal = isinstance(mods[lname], nn.MultiheadAttention)
        if not internal:
            for k in calls_of(owner):
                if calls[k][2].requires_grad:
                    want_grad.append((li, calls[k][2]))
    for bname in blocks:
        for k in calls_of(bname):
            want_grad.append((bname, calls[k][2]))
    weights = {}
    for li, lname in enumerate(layers, start=1):
        m = mods[lname]
        if isinstance(m, nn.MultiheadAttention):
            ws = [p for n, p in m.named_parameters(recurse=False) if p.dim() >= 2]
        elif lname.endswith(".out_proj"):
            ws = [m.weight]
        else:
            ws = [p for n, p in m.named_parameters(recurse=False) if p.dim() >= 2]
        weights[li] = ws
    flat_w = [p for ws in weights.values() for p in ws]
    grads = torch.autograd.grad(loss, [t for _, t in want_grad] + flat_w, allow_unused=True)
    g_out, g_w = grads[: len(want_grad)], grads[len(want_grad):]
    gw = dict(zip(map(id, flat_w), g_w))

    for li, lname in enumerate(layers, start=1):
        m = mods[lname]
        w = np.concatenate([_np(p).ravel() for p in weights[li]])
        expected[(li, "weight_std")] = w.std()
        wg = [gw[id(p)] for p in weights[li] if gw[id(p)] is not None]
        if wg:
            wg = np.concatenate([_np(g).ravel() for g in wg])
            expected[(li, "weight_grad_std")] = wg.std()
            expected[(li, "weight_grad_absmean")] = np.abs(wg).mean()
        if isinstance(m, nn.MultiheadAttention):
            continue
        owner = lname[: -len(".out_proj")] if lname.endswith(".out_proj") else lname
        ks = calls_of(owner)
        s = np.concatenate([_np(calls[k][4]).ravel() for k in ks])
        expected[(li, "pre_mean")] = s.mean()
        expected[(li, "pre_std")] = s.std()
        for q in PCTS:
            expected[(li, f"pre_p{q}")] = np.percentile(s, q)
        g = [gg for (key, _), gg in zip(want_grad, g_out) if key == li and gg is not None]
        if g:
            g = np.concatenate([_np(t).ravel() for t in g])
            expected[(li, "grad_pre_std")] = g.std()
            expected[(li, "grad_pre_absmean")] = np.abs(g).mean()
        chain = followers.get(lname, ())
        if not chain:
            continue
        acts, ss, ds = [], [], []
        axis = feature_axis.get(lname, -1)
        for k in ks:
            j = k
            for fname in chain:  # the first call of each follower after the layer's call
                j = next(i for i in range(j + 1, len(calls)) if calls[i][0] == fname)
            last = calls[j]
            acts.append(_np(last[4]).ravel())
            fm = mods[chain[-1]]
            if type(fm) in sup:
                ss.append(_np(last[3]))
                ds.append(_derivative(fm, last[3]))
        a = np.concatenate(acts)
        expected[(li, "act_mean")] = a.mean()
        expected[(li, "act_std")] = a.std()
        for q in PCTS:
            expected[(li, f"act_p{q}")] = np.percentile(a, q)
        if ds:
            kind = type(mods[chain[-1]])
            d = np.concatenate([np.abs(v).ravel() for v in ds])
            sv = np.concatenate([v.ravel() for v in ss])
            if kind in BOUNDED:
                sat = d < 0.05 * sup[kind]
                if kind in RELU_FAMILY:  # ReLU6: s <= 0 is inactive, not saturated
                    sat &= sv > 0
                expected[(li, "saturated_frac")] = np.mean(sat)
            if kind in RELU_FAMILY:
                expected[(li, "inactive_frac")] = np.mean(sv <= 0)
            alive = None
            for v in ds:
                nz = (np.moveaxis(np.abs(v), axis, -1).reshape(-1, v.shape[axis]) != 0).any(0)
                alive = nz if alive is None else alive | nz
            expected[(li, "dead_frac")] = np.mean(~alive)
    for bname in blocks:
        g = [gg for (key, _), gg in zip(want_grad, g_out) if key == bname]
        expected[(bname, "block_grad_std")] = np.concatenate([_np(t).ravel() for t in g]).std()
    return expected


def compare(df: pd.DataFrame, expected: dict, layers, blocks=(), rtol=1e-9, atol=0.0):
    """Every row of ``df`` has an expected value (and vice versa), within tolerance."""
    got = {}
    for row in df.itertuples():
        if row.quantity == "block_grad_std":
            assert row.module in blocks, row.module
            got[(row.module, row.quantity)] = row.value
        else:
            got[(row.layer, row.quantity)] = row.value
            if row.layer > 0:
                assert row.module == layers[row.layer - 1]
    assert set(got) == set(expected), (sorted(map(str, set(got) ^ set(expected))))
    for key, want in expected.items():
        assert got[key] == pytest.approx(want, rel=rtol, abs=atol), key
    assert (df.step == 0).all()
    assert list(df.columns) == ["step", "layer", "module", "quantity", "value"]


TANH_SUP = {nn.Tanh: 1.0, nn.Sigmoid: 0.25, nn.ReLU: 1.0}
# as depthlab.probes.stats: saturation for bounded activations, inactivity for the ReLU family
BOUNDED = (nn.Tanh, nn.Sigmoid, nn.Softsign, nn.Hardtanh, nn.ReLU6, nn.Hardsigmoid)
RELU_FAMILY = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
               nn.ReLU6, nn.Hardswish)


# ---------------------------------------------------------------------------------------------
# NumPy probes on the same network


@pytest.mark.parametrize("activation", ["tanh", "relu", "sigmoid"])
def test_bridged_mlp_matches_numpy_probe(activation):
    net = dl.mlp([6, 12, 10, 8, 3], activation=activation, seed=1, dtype="float64")
    g = np.random.default_rng(0)
    x = g.standard_normal((40, 6)) * 2.0
    y = g.integers(0, 3, 40)
    want = dl.probe(net, x, y).dropna()
    model = to_torch(net)
    got = dlt.probe(model, torch.from_numpy(x), torch.from_numpy(y), nn.CrossEntropyLoss())
    hidden = got[got.layer < 4]  # the output layer has no NumPy probe point
    merged = want.merge(hidden, on=["layer", "quantity"], how="outer", indicator=True)
    assert (merged["_merge"] == "both").all(), merged[merged["_merge"] != "both"]
    np.testing.assert_allclose(merged.value_y, merged.value_x, rtol=1e-6, atol=1e-300)
    assert len(merged) >= 3 * 20


# ---------------------------------------------------------------------------------------------
# every quantity against autograd, on the models of the issue


def _mlp_inplace(device):
    torch.manual_seed(0)
    model = zoo.mlp([7, 16, 16, 4]).double().to(device)
    assert model[1].inplace
    x = torch.randn(24, 7, dtype=torch.float64, device=device)
    y = torch.randint(0, 4, (24,), device=device)
    return model, x, y


@pytest.mark.parametrize("device", DEVICES)
def test_mlp_with_inplace_relu(device):
    model, x, y = _mlp_inplace(device)
    df = dlt.probe(model, x, y, nn.CrossEntropyLoss())
    layers = ["0", "2", "4"]
    exp = reference(model, x, y, nn.CrossEntropyLoss(), layers, {"0": ("1",), "2": ("3",)},
                    sup=TANH_SUP)
    compare(df, exp, layers)
    # the pre-activation is the Linear output, not the ReLU output written over it
    pre_p2 = df[(df.layer == 1) & (df.quantity == "pre_p2")].value.item()
    assert pre_p2 < 0
    assert 0.2 < df[(df.layer == 1) & (df.quantity == "inactive_frac")].value.item() < 0.8


@pytest.mark.parametrize("device", DEVICES)
def test_resnet18(device):
    torch.manual_seed(0)
    model = zoo.resnet18(num_classes=5).double().to(device)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64, device=device)
    y = torch.randint(0, 5, (2,), device=device)
    df = dlt.probe(model, x, y, nn.CrossEntropyLoss())
    layers, followers, blocks, axis = ["conv1"], {"conv1": ("bn1", "relu")}, [], {"conv1": 1}
    for stage in range(1, 5):
        for b in range(2):
            p = f"layer{stage}.{b}"
            layers += [f"{p}.conv1", f"{p}.conv2"]
            followers[f"{p}.conv1"] = (f"{p}.bn1", f"{p}.relu")
            followers[f"{p}.conv2"] = (f"{p}.bn2",)
            axis[f"{p}.conv1"] = axis[f"{p}.conv2"] = 1
            if stage > 1 and b == 0:
                layers.append(f"{p}.downsample.0")
                followers[f"{p}.downsample.0"] = (f"{p}.downsample.1",)
            blocks.append(p)
    layers.append("fc")
    exp = reference(model, x, y, nn.CrossEntropyLoss(), layers, followers, blocks,
                    sup=TANH_SUP, feature_axis=axis)
    compare(df, exp, layers, blocks, rtol=1e-7, atol=1e-12)
    # block rows sit beside the last layer of the block
    rows = df[df.quantity == "block_grad_std"]
    assert rows[rows.module == "layer1.0"].layer.item() == layers.index("layer1.0.conv2") + 1


@pytest.mark.parametrize("device", DEVICES)
def test_transformer_encoder(device):
    torch.manual_seed(0)
    model = zoo.transformer_classifier(vocab=20, d_model=16, heads=2, layers=2, classes=3,
                                       ff=24).double().to(device)
    x = torch.randint(0, 20, (4, 6), device=device)
    y = torch.randint(0, 3, (4,), device=device)
    df = dlt.probe(model, x, y, nn.CrossEntropyLoss())
    layers = ["embed"]
    for i in range(2):
        p = f"encoder.layers.{i}"
        layers += [f"{p}.self_attn", f"{p}.self_attn.out_proj", f"{p}.linear1", f"{p}.linear2"]
    layers.append("head")
    blocks = ["encoder.layers.0", "encoder.layers.1"]
    exp = reference(model, x, y, nn.CrossEntropyLoss(), layers, {}, blocks)
    # the feed-forward's F.relu (the layer's activation function, applied in its forward)
    # gives linear1 the rows of its ReLU (depthlab.torch.functional_acts; checked below)
    act_q = ("act_", "saturated_frac", "dead_frac", "inactive_frac")
    ff = df.quantity.str.startswith(act_q) & df.layer.isin([4, 8])
    compare(df[~ff], exp, layers, blocks)
    seen = []
    hs = [model.encoder.layers[i].linear1.register_forward_hook(
        lambda m, a, o: seen.append(o.detach())) for i in range(2)]
    model(x)
    for h in hs:
        h.remove()
    got = df[ff].set_index(["layer", "quantity"]).value
    for layer, s in zip((4, 8), seen):
        a = torch.relu(s)
        assert got[(layer, "act_mean")] == pytest.approx(float(a.mean()), rel=1e-10)
        assert got[(layer, "act_std")] == pytest.approx(float(a.std(unbiased=False)), rel=1e-10)
        assert got[(layer, "inactive_frac")] == pytest.approx(float((s <= 0).double().mean()))
        dead = float((a.reshape(-1, s.shape[-1]).amax(0) <= 0).double().mean())
        assert got[(layer, "dead_frac")] == pytest.approx(dead)


@pytest.mark.parametrize("device", DEVICES)
def test_lstm_classifier(device):
    torch.manual_seed(0)
    model = zoo.lstm_classifier(features=5, hidden=8, layers=2, classes=3).double().to(device)
    x = torch.randn(6, 7, 5, dtype=torch.float64, device=device)
    y = torch.randint(0, 3, (6,), device=device)
    df = dlt.probe(model, x, y, nn.CrossEntropyLoss())
    layers = ["lstm", "head"]
    exp = reference(model, x, y, nn.CrossEntropyLoss(), layers, {})
    compare(df, exp, layers)
    # all four weight matrices of both LSTM layers are pooled
    n = sum(p.numel() for n_, p in model.lstm.named_parameters() if n_.startswith("weight"))
    assert n == 4 * 8 * 5 + 4 * 8 * 8 + 2 * 4 * 8 * 8


@pytest.mark.parametrize("device", DEVICES)
def test_bn_cnn_in_eval_mode(device):
    torch.manual_seed(0)
    model = zoo.bn_cnn((3, 6, 8), classes=4).double().to(device)
    with torch.no_grad():  # non-trivial running statistics
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    model.eval()
    x = torch.randn(5, 3, 8, 8, dtype=torch.float64, device=device)
    y = torch.randint(0, 4, (5,), device=device)
    df = dlt.probe(model, x, y, nn.CrossEntropyLoss())
    layers = ["0", "3", "8"]
    followers = {"0": ("1", "2"), "3": ("4", "5")}
    exp = reference(model, x, y, nn.CrossEntropyLoss(), layers, followers, sup=TANH_SUP,
                    feature_axis={"0": 1, "3": 1})
    compare(df, exp, layers, atol=1e-12)
    assert not model.training


class _Shared(nn.Module):
    """One Linear applied twice (weight sharing), a Tanh after each call."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(5, 8)
        self.shared = nn.Linear(8, 8)
        self.act = nn.Tanh()
        self.out = nn.Linear(8, 3)

    def forward(self, x):
        h = self.act(self.inp(x))
        h = self.act(self.shared(h))
        h = self.act(self.shared(h))
        return self.out(h)


def test_weight_sharing_pools_every_call():
    torch.manual_seed(0)
    model = _Shared().double()
    x = torch.randn(10, 5, dtype=torch.float64)
    y = torch.randint(0, 3, (10,))
    df = dlt.probe(model, x, y, nn.CrossEntropyLoss())
    layers = ["inp", "shared", "out"]
    exp = reference(model, x, y, nn.CrossEntropyLoss(), layers,
                    {"inp": ("act",), "shared": ("act",)}, sup=TANH_SUP)
    compare(df, exp, layers)


class _Frozen(nn.Module):
    """A feature extractor run under torch.no_grad, then a trained head."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Linear(5, 8), nn.Tanh())
        self.head = nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 3))

    def forward(self, x):
        with torch.no_grad():
            h = self.features(x)
        return self.head(h)


def test_no_grad_parts_have_no_gradient_rows():
    torch.manual_seed(0)
    model = _Frozen().double()
    x = torch.randn(10, 5, dtype=torch.float64)
    y = torch.randint(0, 3, (10,))
    df = dlt.probe(model, x, y, nn.CrossEntropyLoss())
    layers = ["features.0", "head.0", "head.2"]
    exp = reference(model, x, y, nn.CrossEntropyLoss(), layers,
                    {"features.0": ("features.1",), "head.0": ("head.1",)}, sup=TANH_SUP)
    compare(df, exp, layers)
    q1 = set(df[df.layer == 1].quantity)
    assert "pre_std" in q1 and "grad_pre_std" not in q1 and "weight_grad_std" not in q1
    assert "grad_pre_std" in set(df[df.layer == 2].quantity)


def test_bf16_autocast_statistics_in_float32():
    torch.manual_seed(0)
    model = zoo.mlp([7, 16, 16, 4])
    x = torch.randn(32, 7)
    y = torch.randint(0, 4, (32,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        df = dlt.probe(model, x, y, nn.CrossEntropyLoss())
        exp = reference(model, x, y, nn.CrossEntropyLoss(), ["0", "2", "4"],
                        {"0": ("1",), "2": ("3",)}, sup=TANH_SUP)
    # the layer outputs are bf16; their statistics are float32 sums over the bf16 values
    compare(df, exp, ["0", "2", "4"], rtol=2e-5, atol=1e-7)
    assert np.isfinite(df.value).all()


def test_model_grads_mode_buffers_and_rng_left_as_found():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU(inplace=True),
                          nn.Dropout(0.5), nn.Linear(8, 3))
    x = torch.randn(12, 5)
    y = torch.randint(0, 3, (12,))
    nn.CrossEntropyLoss()(model(x), y).backward()  # existing .grad
    model[4].weight.grad = None  # and one missing
    model[3].eval()  # a mixed mode
    state = {k: v.clone() for k, v in model.state_dict().items()}
    grads = [(p, p.grad, None if p.grad is None else p.grad.clone()) for p in model.parameters()]
    modes = [m.training for m in model.modules()]
    rng = torch.get_rng_state()
    df = dlt.probe(model, x, y, nn.CrossEntropyLoss())
    assert len(df) > 20
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    for p, g, gv in grads:
        assert p.grad is g
        if g is not None:
            assert torch.equal(g, gv)
    assert [m.training for m in model.modules()] == modes
    assert torch.equal(torch.get_rng_state(), rng)
    # the probe ran BN in training mode (batch statistics), as the model was found
    twin = copy.deepcopy(model)
    want = twin[2](twin[1](twin[0](x))).detach().mean().item()
    assert df[(df.layer == 1) & (df.quantity == "act_mean")].value.item() == pytest.approx(
        want, rel=1e-6)


def test_discover_numbers_layers_in_execution_order():
    class Rev(nn.Module):
        def __init__(self):
            super().__init__()
            self.b = nn.Linear(4, 4)
            self.a = nn.Linear(3, 4)
            self.unused = nn.Linear(4, 4)

        def forward(self, x):
            return self.b(torch.relu(self.a(x)))

    layers = dlt.discover(Rev(), torch.randn(2, 3))
    assert [(i.index, i.name) for i in layers] == [(1, "a"), (2, "b")]
    assert [i.name for i in dlt.weight_modules(Rev())] == ["b", "a", "unused"]


def test_percentiles_option_and_acc():
    model, x, y = _mlp_inplace("cpu")
    df = dlt.probe(model, x, y, nn.CrossEntropyLoss(), percentiles=())
    assert not df.quantity.str.contains(r"_p\d").any()
    assert "pre_std" in set(df.quantity)
    assert df[df.quantity == "acc"].value.item() == pytest.approx(
        float((model(x).argmax(1) == y).double().mean()))
    reg = dlt.probe(model, x, torch.randn(24, 4, dtype=torch.float64), nn.MSELoss())
    assert "acc" not in set(reg.quantity)


@pytest.mark.parametrize("bad, error, match", [
    (lambda m, x, y: dlt.probe("model", x, y, nn.CrossEntropyLoss()), TypeError, "nn.Module"),
    (lambda m, x, y: dlt.probe(nn.Sequential(nn.ReLU()), x, y, nn.CrossEntropyLoss()),
     ValueError, "no weight layers"),
    (lambda m, x, y: dlt.probe(m, x, y, nn.CrossEntropyLoss(reduction="none")), ValueError,
     "scalar"),
    (lambda m, x, y: dlt.probe(m, x, y, lambda o, t: 3.0), TypeError, "scalar torch.Tensor"),
    (lambda m, x, y: dlt.probe(m, x, y, 3), TypeError, "callable"),  # a name is taken (16b)
    (lambda m, x, y: dlt.probe(nn.DataParallel(m), x, y, nn.CrossEntropyLoss()), TypeError,
     "model.module"),
    (lambda m, x, y: dlt.probe(m, x, y, nn.CrossEntropyLoss(), percentiles=(101,)),
     ValueError, "percentile"),
])
def test_bad_input(bad, error, match):
    model, x, y = _mlp_inplace("cpu")
    with pytest.raises(error, match=match):
        bad(model, x, y)


def test_compiled_model_refused(monkeypatch):
    """torch.compile wraps the model in torch._dynamo.eval_frame.OptimizedModule; importing
    dynamo takes seconds, so a stand-in module of that name is registered instead (the check
    looks the class up only once dynamo is imported, as it is whenever a model was compiled)."""
    import sys
    import types

    class OptimizedModule(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self._orig_mod = inner

    fake = types.ModuleType("torch._dynamo.eval_frame")
    fake.OptimizedModule = OptimizedModule
    monkeypatch.setitem(sys.modules, "torch._dynamo.eval_frame", fake)
    model, x, y = _mlp_inplace("cpu")
    with pytest.raises(TypeError, match="_orig_mod"):
        dlt.probe(OptimizedModule(model), x, y, nn.CrossEntropyLoss())
    with pytest.raises(TypeError, match="_orig_mod"):
        dlt.Watch(OptimizedModule(model))


def test_activation_derivatives_match_autograd():
    s = torch.linspace(-6, 6, 2001, dtype=torch.float64)
    built = {nn.Threshold: lambda: nn.Threshold(0.5, -1.0)}  # (needs its two arguments)
    for cls in dlt.ACTIVATIONS:
        # PReLU holds a float32 slope; RReLU in eval mode: its mean slope, not random ones
        module = built.get(cls, cls)().double().eval()
        spec = dlt.activation_spec(module)
        want = _derivative(module, s)
        np.testing.assert_allclose(_np(spec.derivative(s)), want, atol=1e-12, err_msg=cls.__name__)
        np.testing.assert_allclose(_np(spec.function(s)), _np(module(s.clone())), atol=1e-12)
        assert np.abs(want).max() <= spec.max_derivative * (1 + 1e-6), cls.__name__


class _Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, kdim=6, vdim=5, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, q, k, v):
        return self.head(self.attn(q, k, v)[0].mean(1))


class _GRU(nn.Module):
    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(4, 6, batch_first=True)
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        return self.head(self.gru(x)[0][:, -1])


def _more_models():
    g = torch.Generator().manual_seed(0)

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    return [
        (nn.Sequential(nn.Conv1d(2, 4, 3), nn.GroupNorm(2, 4), nn.SiLU(), nn.Flatten(),
                       nn.Linear(24, 3)), r(5, 2, 8), ["0", "4"], {"0": ("1", "2")}, {"0": 1}),
        (nn.Sequential(nn.ConvTranspose2d(2, 3, 2, stride=2), nn.ELU(), nn.Conv2d(3, 3, 3),
                       nn.Sigmoid(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 3)),
         r(4, 2, 4, 4), ["0", "2", "6"], {"0": ("1",), "2": ("3",)}, {"0": 1, "2": 1}),
        (nn.Sequential(nn.Embedding(10, 6), nn.LayerNorm(6), nn.Mish(), nn.Flatten(),
                       nn.Linear(30, 3)), torch.randint(0, 10, (4, 5), generator=g),
         ["0", "4"], {"0": ("1", "2")}, {}),
        (_Attention(), (r(3, 4, 8), r(3, 5, 6), r(3, 5, 5)), ["attn", "attn.out_proj", "head"],
         {}, {}),
        (_GRU(), r(3, 5, 4), ["gru", "head"], {}, {}),
    ]


@pytest.mark.parametrize("case", range(5))
def test_more_layer_kinds_against_autograd(case):
    torch.manual_seed(case)
    model, x, layers, followers, axis = _more_models()[case]
    model = model.double()
    y = torch.randint(0, 3, (x[0] if isinstance(x, tuple) else x).shape[:1])
    sup = {nn.Sigmoid: 0.25, nn.ELU: 1.0, nn.SiLU: 1.0998, nn.Mish: 1.0886}
    df = dlt.probe(model, x, y, nn.CrossEntropyLoss())
    call = (lambda m, x: m(*x)) if isinstance(x, tuple) else (lambda m, x: m(x))

    class Wrap(nn.Module):  # the reference calls model(x)
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            return call(self.m, x)

    exp = reference(Wrap(model), x, y, nn.CrossEntropyLoss(), [f"m.{n}" for n in layers],
                    {f"m.{k}": tuple(f"m.{f}" for f in v) for k, v in followers.items()},
                    sup=sup, feature_axis={f"m.{k}": v for k, v in axis.items()})
    compare(df, exp, layers, atol=1e-12)
