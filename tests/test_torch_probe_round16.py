"""depthlab.torch probes and Watch on models and call styles the earlier rounds did not cover
(round 16). Every value is compared with a direct computation by plain torch operations and
autograd in float64 (population std, ddof = 0)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import depthlab.torch as dlt  # noqa: E402
from depthlab.probes import accel  # noqa: E402

CE = nn.CrossEntropyLoss()
D = torch.float64


def _pstd(v: torch.Tensor) -> float:
    return float(v.detach().double().std(unbiased=False))


def _mean(v: torch.Tensor) -> float:
    return float(v.detach().double().mean())


@pytest.fixture(params=["kernels", "torch"])
def paths(request):
    """Both statistic paths: the compiled CPU kernels (when Numba is there) and torch's."""
    if request.param == "torch":
        with accel.numpy_only():
            yield request.param
    else:
        if accel.kernels() is None:
            pytest.skip("Numba not installed: no compiled kernels' path")
        yield request.param


# -- fix 1: layers that run inside torch.vmap / torch.func.grad in the model's forward -----------

class _Vmapped(nn.Module):
    """Two layers run per time step through ``torch.vmap`` (over axis 1 of ``(T, N, F)``)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.act, self.b, self.head = nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 6), \
            nn.Linear(6, 3)

    def forward(self, x):
        z = torch.vmap(lambda r: self.b(self.act(self.a(r))), in_dims=1, out_dims=1)(x)
        return self.head(z.mean(0))


class _Energy(nn.Module):
    """The input's gradient of an energy ``sum tanh(a(x))`` by ``torch.func.grad``, fed to a
    head (a Hamiltonian/energy-model pattern)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.head = nn.Linear(4, 6), nn.Linear(4, 3)

    def forward(self, x):
        return self.head(torch.func.grad(lambda v: self.a(v).tanh().sum())(x))


def test_layers_inside_vmap_in_the_forward_are_measured(paths):
    """Layers called inside ``torch.vmap`` within the model's forward had no number and no row
    at all (not even ``weight_std``): the hooks skipped every call inside a torch.func
    transform. Now they are measured on the tensor under vmap's wrapper (all vmapped calls),
    their gradients by autograd; the table equals the direct computation."""
    torch.manual_seed(0)
    model = _Vmapped().to(D)
    x, y = torch.randn(3, 5, 4, dtype=D), torch.randint(0, 3, (5,))
    table = dlt.probe(model, x, y, CE, percentiles=(15, 50))
    assert list(dict.fromkeys(table[table.layer > 0].module)) == ["a", "b", "head"]
    got = table.set_index(["module", "quantity"]).value
    s1 = F.linear(x, model.a.weight, model.a.bias)
    s2 = F.linear(torch.tanh(s1), model.b.weight, model.b.bias)
    s3 = model.head(s2.mean(0))
    loss = CE(s3, y)
    grads = torch.autograd.grad(loss, [s1, s2, s3, model.a.weight, model.b.weight])
    for name, s, g, gw in (("a", s1, grads[0], grads[3]), ("b", s2, grads[1], grads[4])):
        assert got[(name, "pre_mean")] == pytest.approx(_mean(s), rel=1e-10, abs=1e-14)
        assert got[(name, "pre_std")] == pytest.approx(_pstd(s), rel=1e-10)
        assert got[(name, "pre_p15")] == pytest.approx(
            np.percentile(s.detach().numpy(), 15), rel=1e-10)
        assert got[(name, "grad_pre_std")] == pytest.approx(_pstd(g), rel=1e-10)
        assert got[(name, "grad_pre_absmean")] == pytest.approx(_mean(g.abs()), rel=1e-10)
        assert got[(name, "weight_grad_std")] == pytest.approx(_pstd(gw), rel=1e-10)
    assert got[("head", "grad_pre_std")] == pytest.approx(_pstd(grads[2]), rel=1e-10)


def test_a_layer_inside_func_grad_in_the_forward_is_measured_in_probe_and_watch(paths):
    """``torch.func.grad`` inside the forward: the layer it runs has its output's statistics
    and ``dL/d output`` of the outer loss (the reference differentiates ``create_graph=True``
    input gradients), in ``dlt.probe`` and at every step of a Watch."""
    torch.manual_seed(1)
    model = _Energy().to(D)
    x, y = torch.randn(5, 4, dtype=D), torch.randint(0, 3, (5,))
    xr = x.clone().requires_grad_()
    s = model.a(xr)
    (gx,) = torch.autograd.grad(torch.tanh(s).sum(), xr, create_graph=True)
    g_s, g_w = torch.autograd.grad(CE(model.head(gx), y), [s, model.a.weight])
    got = dlt.probe(model, x, y, CE, percentiles=()).set_index(["module", "quantity"]).value
    assert got[("a", "pre_std")] == pytest.approx(_pstd(s), rel=1e-10)
    assert got[("a", "grad_pre_std")] == pytest.approx(_pstd(g_s), rel=1e-10)
    assert got[("a", "weight_grad_std")] == pytest.approx(_pstd(g_w), rel=1e-10)
    with dlt.Watch(model, every=1, theory=False) as watch:
        for _ in range(2):
            model.zero_grad()
            loss = CE(model(x), y)
            loss.backward()
            watch.step(loss)
    frame = watch.frame()
    rows = frame[(frame.module == "a") & (frame.quantity == "grad_pre_std")]
    assert list(rows.step) == [0, 1]
    assert rows.value.tolist() == pytest.approx([_pstd(g_s)] * 2, rel=1e-10)


# -- fix 2: the ignore_index of a functools.partial loss -----------------------------------------

@pytest.mark.parametrize("make", [
    lambda: __import__("functools").partial(F.cross_entropy, ignore_index=0),
    lambda: __import__("functools").partial(
        __import__("functools").partial(F.cross_entropy, ignore_index=0), reduction="mean"),
    lambda: nn.CrossEntropyLoss(ignore_index=0),
])
def test_acc_leaves_out_the_ignore_index_of_a_partial_loss(make):
    """``partial(F.cross_entropy, ignore_index=0)`` (class 0 = padding): ``acc`` counted the
    padding targets (0.40 where the accuracy over the others was 0.4375, 20 targets); now it
    reads the partial's keyword as it reads ``nn.CrossEntropyLoss(ignore_index=0)``'s
    attribute. Token targets of shape (N, T) for logits (N, C, T)."""
    torch.manual_seed(0)
    model = nn.Conv1d(4, 3, 1).to(D)
    x, y = torch.randn(5, 4, 4, dtype=D), torch.randint(0, 3, (5, 4))
    y[0, :3] = 0
    table = dlt.probe(model, x, y, make()).set_index("quantity").value
    with torch.no_grad():
        hit = model(x).argmax(1) == y
    valid = y != 0
    assert table["acc"] == pytest.approx(int((hit & valid).sum()) / int(valid.sum()), rel=1e-12)
    assert table["acc"] != pytest.approx(float(hit.double().mean()))
    with torch.no_grad():
        want = float(F.cross_entropy(model(x), y, ignore_index=0))
    assert table["loss"] == pytest.approx(want, rel=1e-12)


# -- fix 3: an exported graph that never calls its layers is refused -----------------------------

def test_an_exported_graph_is_refused_and_a_traced_one_is_measured():
    """``torch.export(model, args).module()`` reads every weight as a graph attribute and calls
    no layer: ``dlt.probe`` ran it and blamed 'weights read directly, e.g. F.linear(x,
    self.0.weight)' (a generated graph the user cannot edit), and a Watch accepted it and
    recorded losses only. Both now refuse it with one TypeError naming the layers and the way
    out; a ``torch.fx.symbolic_trace`` graph, which calls its modules, gives the original's
    table."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).to(D)
    x, y = torch.randn(6, 4, dtype=D), torch.randint(0, 3, (6,))
    exported = torch.export.export(model, (x,)).module()
    with pytest.raises(TypeError, match=r"reads the weights of '0', '2' directly.*original"):
        dlt.probe(exported, x, y, CE)
    with pytest.raises(TypeError, match="pass the original nn.Module"):
        dlt.Watch(exported, every=1, theory=False)
    traced = torch.fx.symbolic_trace(model)
    got = dlt.probe(traced, x, y, CE)
    want = dlt.probe(model, x, y, CE)
    assert got.drop(columns="value").equals(want.drop(columns="value"))
    assert got.value.to_numpy() == pytest.approx(want.value.to_numpy(), rel=1e-12, abs=1e-15)


# -- coverage: layer kinds, call styles and Watch schedules measured against autograd ------------

def _r(*shape):
    return torch.randn(*shape, dtype=D)


class _Cells(nn.Module):
    """LSTMCell -> GRUCell -> RNNCell(relu) unrolled over time: each cell called T times."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm, self.gru = nn.LSTMCell(4, 6), nn.GRUCell(6, 5)
        self.rnn, self.head = nn.RNNCell(5, 5, nonlinearity="relu"), nn.Linear(5, 3)

    def forward(self, x):
        h = c = x.new_zeros(x.shape[1], 6)
        g = r = x.new_zeros(x.shape[1], 5)
        for t in range(x.shape[0]):
            h, c = self.lstm(x[t], (h, c))
            g = self.gru(h, g)
            r = self.rnn(g, r)
        return self.head(r)


class _KdimAttention(nn.Module):
    def __init__(self, batch_first: bool) -> None:
        super().__init__()
        self.bf = batch_first
        self.mha = nn.MultiheadAttention(8, 2, kdim=5, vdim=6, batch_first=batch_first)
        self.head = nn.Linear(8, 3)

    def forward(self, q, k, v):
        a, _ = self.mha(q, k, v)
        return self.head(a.mean(1 if self.bf else 0))


class _Decoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(11, 8)
        self.dec = nn.TransformerDecoder(nn.TransformerDecoderLayer(
            8, 2, 16, dropout=0.0, batch_first=True), 2)
        self.head = nn.Linear(8, 11)

    def forward(self, tgt, memory):
        t = self.emb(tgt)
        mask = nn.Transformer.generate_square_subsequent_mask(tgt.shape[1], dtype=t.dtype)
        return self.head(self.dec(t, memory, tgt_mask=mask, tgt_is_causal=True)).transpose(1, 2)


class _ProjLSTM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.LSTM(4, 6, num_layers=2, bidirectional=True, proj_size=3, batch_first=True)
        self.head = nn.Linear(6, 3)

    def forward(self, x, lengths):
        p = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, _ = nn.utils.rnn.pad_packed_sequence(self.rnn(p)[0], batch_first=True)
        return self.head(out.sum(1))


class _DictNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.act, self.b, self.c = nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3), \
            nn.Linear(2, 3)

    def forward(self, x, z):
        h = self.act(self.a(x))
        return {"logits": self.b(h) + self.c(z), "hidden": h}


def _coverage_cases():
    y3 = torch.randint(0, 3, (3,))
    dec_y = torch.randint(0, 11, (3, 5))
    return {
        "conv1d-bn-grouped": (
            lambda: nn.Sequential(nn.Conv1d(3, 6, 3), nn.BatchNorm1d(6), nn.ReLU(),
                                  nn.Conv1d(6, 4, 3, groups=2), nn.Tanh(), nn.Flatten(),
                                  nn.Linear(24, 3)),
            _r(5, 3, 10), ["0", "3", "6"], {"0": ("1", "2"), "3": ("4",)}, {"0": -2, "3": -2},
            {}),
        "conv3d-convtranspose3d": (
            lambda: nn.Sequential(nn.Conv3d(2, 4, 2), nn.LeakyReLU(0.1),
                                  nn.ConvTranspose3d(4, 3, 2), nn.Sigmoid(), nn.Flatten(),
                                  nn.Linear(81, 3)),
            _r(4, 2, 3, 3, 3), ["0", "2", "5"], {"0": ("1",), "2": ("3",)},
            {"0": -4, "2": -4}, {}),
        "convtranspose1d-grouped": (
            lambda: nn.Sequential(nn.ConvTranspose1d(2, 4, 3, stride=2, groups=2), nn.GELU(),
                                  nn.Flatten(), nn.Linear(36, 3)),
            _r(4, 2, 4), ["0", "3"], {"0": ("1",)}, {"0": -2}, {}),
        "channels-last-depthwise": (
            lambda: nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(), nn.Conv2d(6, 6, 3, groups=6),
                                  nn.BatchNorm2d(6), nn.ReLU(inplace=True), nn.Flatten(),
                                  nn.Linear(6, 3)).to(memory_format=torch.channels_last),
            _r(4, 3, 5, 5).to(memory_format=torch.channels_last), ["0", "2", "6"],
            {"0": ("1",), "2": ("3", "4")}, {"0": -3, "2": -3}, {}),
        "lstm-gru-rnn-cells": (_Cells, _r(4, 3, 4), ["lstm", "gru", "rnn", "head"], {}, {},
                               {"y": y3}),
        "attention-kdim-vdim-batch-first": (
            lambda: _KdimAttention(True), (_r(3, 4, 8), _r(3, 6, 5), _r(3, 6, 6)),
            ["mha", "mha.out_proj", "head"], {}, {}, {"y": y3}),
        "attention-kdim-vdim-time-first": (
            lambda: _KdimAttention(False), (_r(4, 3, 8), _r(6, 3, 5), _r(6, 3, 6)),
            ["mha", "mha.out_proj", "head"], {}, {}, {"y": y3}),
        "transformer-decoder": (
            _Decoder, (torch.randint(0, 11, (3, 5)), _r(3, 4, 8)),
            ["emb"] + [f"dec.layers.{i}.{n}" for i in range(2)
                       for n in ("self_attn", "self_attn.out_proj", "multihead_attn",
                                 "multihead_attn.out_proj", "linear1", "linear2")] + ["head"],
            {}, {}, {"y": dec_y, "blocks": ["dec.layers.0", "dec.layers.1"],
                     # linear1's F.relu: the ReLU's rows (tests/test_torchfunc_round22.py)
                     "own_follower_rows": [6, 12]}),
        "packed-lstm-projections": (_ProjLSTM, (_r(3, 5, 4), torch.tensor([5, 2, 3])),
                                    ["rnn", "head"], {}, {}, {"y": y3}),
        "dict-in-dict-out": (
            _DictNet, {"x": _r(5, 4), "z": _r(5, 2)}, ["a", "b", "c"], {"a": ("act",)}, {},
            {"loss_fn": lambda o, y: F.cross_entropy(o["logits"], y),
             "pick": lambda o: o["logits"], "ref_loss": F.cross_entropy}),
    }


@pytest.mark.parametrize("name", list(_coverage_cases()))
def test_layer_kinds_and_call_styles_match_autograd(name):
    """Every row of ``dlt.probe`` (percentiles included) against the autograd reference of
    tests/test_torch_probe.py, on Conv1d/Conv3d/ConvTranspose, grouped and depthwise convs in
    channels_last, recurrent cells unrolled by hand, attention with kdim/vdim in both layouts,
    a causal TransformerDecoder, a packed bidirectional LSTM with projections, and a model
    taking and returning dicts; the model, its .grad and the RNG are left as found."""
    from test_torch_probe_round5 import check

    make, x, layers, followers, axis, kw = _coverage_cases()[name]
    torch.manual_seed(1)
    check(make(), x, layers, followers, axis, **kw)


class _SpectralWeightNorm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        P = nn.utils.parametrizations
        self.a = P.spectral_norm(nn.Linear(4, 8))
        self.act = nn.ReLU()
        self.b = P.weight_norm(nn.Linear(8, 3))

    def forward(self, x):
        return self.b(self.act(self.a(x)))


def _watch_reference(make, batches, every: int, lr: float, weights) -> tuple[dict, dict]:
    """Train ``make()`` with and without a Watch(every) on ``batches`` (SGD with momentum);
    the expected rows of each recorded step by autograd on the unwatched twin: pre_mean/std,
    grad_pre_std/absmean (layer outputs by forward hooks), weight_std, weight_grad_std/absmean
    and update_ratio over the tensors ``weights[name](module)``."""
    import copy

    torch.manual_seed(0)
    watched = make().to(D)
    twin = copy.deepcopy(watched)
    opts = [torch.optim.SGD(m.parameters(), lr=lr, momentum=0.9) for m in (watched, twin)]
    mods = dict(twin.named_modules())
    want: dict = {}
    before: dict = {}
    watch = dlt.Watch(watched, every=every, theory=False)
    for step, (x, y) in enumerate(batches):
        outs: dict = {}
        hooks = [mods[n].register_forward_hook(
            lambda m, a, o, n=n, outs=outs: outs.setdefault(n, []).append(
                o[0] if isinstance(o, tuple) else o))
            for n in weights]
        opts[1].zero_grad()
        loss = CE(twin(x), y)
        for h in hooks:
            h.remove()
        flat = [t for n in weights for t in outs[n]]
        grads = iter(torch.autograd.grad(loss, flat, retain_graph=True))
        loss.backward()
        for layer, (n, get) in enumerate(weights.items(), start=1):
            s = torch.cat([t.detach().reshape(-1) for t in outs[n]])
            g = torch.cat([next(grads).reshape(-1) for _ in outs[n]])
            if step % every:
                continue
            ws = get(mods[n])
            w = torch.cat([t.detach().reshape(-1) for t in ws])
            gw = torch.cat([t.grad.reshape(-1) for t in ws])
            row = {"pre_mean": _mean(s), "pre_std": _pstd(s), "grad_pre_std": _pstd(g),
                   "grad_pre_absmean": _mean(g.abs()), "weight_std": _pstd(w),
                   "weight_grad_std": _pstd(gw), "weight_grad_absmean": _mean(gw.abs())}
            if step:
                num = sum(float((t.detach() - b).norm() ** 2) for t, b in zip(ws, before[n]))
                den = sum(float(b.norm() ** 2) for b in before[n])
                row["update_ratio"] = (num / den) ** 0.5
            want[(step, layer)] = row
        if (step + 1) % every == 0:
            before = {n: [t.detach().clone() for t in get(mods[n])] for n, get in weights.items()}
        opts[1].step()
        opts[0].zero_grad()
        loss_w = CE(watched(x), y)
        loss_w.backward()
        watch.step(loss_w)
        opts[0].step()
        assert torch.equal(loss_w, loss)  # training unchanged by the Watch
    watch.close()
    for a, b in zip(watched.parameters(), twin.parameters()):
        assert torch.equal(a, b)
    return want, {"frame": watch.frame(), "losses": watch.losses()}


def _weight(m):
    return [m.weight]


def _original(m):  # the parametrization's trainable original (weight norm: the direction v)
    return [max((p for p in m.parametrizations.weight.parameters(recurse=False)
                 if p.dim() >= 2), key=lambda p: p.numel())]


def _recurrent(m):
    return [p for p in m.parameters(recurse=False) if p.dim() >= 2]


class _GRUNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn, self.head = nn.GRU(4, 6, num_layers=2, bidirectional=True), nn.Linear(12, 3)

    def forward(self, x):
        return self.head(self.rnn(x.transpose(0, 1))[0][-1])


@pytest.mark.parametrize("case", ["spectral-weight-norm", "bidirectional-gru", "tied-embedding"])
def test_watch_every_three_steps_matches_autograd_with_update_ratios(paths, case):
    """A Watch(every=3) over 8 SGD+momentum steps: recorded steps 0, 3, 6; every layer row
    and update_ratio (||W_n - W_{n-3}|| / ||W_{n-3}|| over the layer's weight tensors: the
    parametrizations' originals, a GRU's four weight matrices per layer, a weight tied
    between an Embedding and the output Linear) equal the autograd computation on an
    unwatched twin; every step's loss is kept; training is bit-identical."""
    g = torch.Generator().manual_seed(5)
    if case == "tied-embedding":
        class Tied(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.e, self.mid, self.out = nn.Embedding(7, 5), nn.Linear(5, 5), \
                    nn.Linear(5, 7, bias=False)
                self.out.weight = self.e.weight

            def forward(self, ids):
                return self.out(torch.tanh(self.mid(self.e(ids))).mean(1))
        make, weights = Tied, {"e": _weight, "mid": _weight, "out": _weight}
        batches = [(torch.randint(0, 7, (4, 3), generator=g), torch.randint(0, 7, (4,),
                                                                               generator=g))
                   for _ in range(8)]
    else:
        make, weights = ((_SpectralWeightNorm, {"a": _original, "b": _original})
                         if case == "spectral-weight-norm" else
                         (_GRUNet, {"rnn": _recurrent, "head": _weight}))
        shape = (6, 4) if case == "spectral-weight-norm" else (3, 5, 4)
        batches = [(torch.randn(*shape, generator=g, dtype=D),
                    torch.randint(0, 3, shape[:1], generator=g)) for _ in range(8)]
    want, got = _watch_reference(make, batches, 3, 0.2, weights)
    frame = got["frame"]
    assert sorted(set(frame.step)) == [0, 3, 6]
    assert list(got["losses"].step) == list(range(8))
    names = frame[frame.layer > 0].drop_duplicates("layer").set_index("layer").module
    assert names.to_dict() == dict(enumerate(weights, start=1))
    for (step, layer), row in want.items():
        have = frame[(frame.step == step) & (frame.layer == layer)].set_index("quantity").value
        for q, v in row.items():
            assert have[q] == pytest.approx(v, rel=1e-9, abs=1e-15), (step, layer, q)
        if not step:
            assert "update_ratio" not in have


# -- fix 4: the units of a custom convolution are its channels -----------------------------------

class _WSConv(nn.Module):
    """A weight-standardized 3x3 convolution written with F.conv2d (no nn.Conv2d subclass)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(c_out, c_in, 3, 3) * 0.3)
        self.bias = nn.Parameter(torch.zeros(c_out))

    def forward(self, x):
        w = self.weight
        w = (w - w.mean((1, 2, 3), keepdim=True)) / w.std((1, 2, 3), keepdim=True)
        return F.conv2d(x, w, self.bias, padding=1)


class _BilinearLike(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(5, 3, 4) * 0.3)

    def forward(self, a, b):
        return torch.einsum("ni,oij,nj->no", a, self.weight, b)


@pytest.mark.parametrize("batched", [True, False])
def test_dead_channels_of_a_custom_convolution(paths, batched):
    """A custom conv module (weight (C_out, C_in, 3, 3), F.conv2d) before a ReLU: its
    dead_frac was counted along the image width (0.0 with 1 of its 4 channels dead, bias
    -100); now along the channels as for nn.Conv2d (0.25), batched or not, in dlt.probe and
    a Watch; a bilinear-like 3-D weight with a (N, C_out) output keeps its last axis."""
    torch.manual_seed(0)
    model = nn.Sequential(_WSConv(2, 4), nn.ReLU(), nn.Flatten(0 if not batched else 1),
                          nn.Linear(4 * 25, 3)).to(D)
    with torch.no_grad():
        model[0].bias[2] = -100.0
    x = torch.randn(6, 2, 5, 5, dtype=D) if batched else torch.randn(2, 5, 5, dtype=D)
    y = torch.randint(0, 3, (6,)) if batched else torch.randint(0, 3, ())
    s = model[0](x).detach()
    ch = 1 if batched else 0
    dead = (torch.relu(s).amax(dim=[d for d in range(s.dim()) if d != ch]) <= 0)
    assert float(dead.double().mean()) == 0.25
    got = dlt.probe(model, x, y, CE, percentiles=()).set_index(["layer", "quantity"]).value
    assert got[(1, "dead_frac")] == 0.25
    assert got[(1, "inactive_frac")] == pytest.approx(float((s <= 0).double().mean()))
    assert got[(1, "act_std")] == pytest.approx(_pstd(torch.relu(s)), rel=1e-10)
    with dlt.Watch(model, every=1, theory=False) as watch:
        for _ in range(2):
            model.zero_grad()
            loss = CE(model(x), y)
            loss.backward()
            watch.step(loss)
    frame = watch.frame()
    assert frame[frame.quantity == "dead_frac"].value.tolist() == [0.25, 0.25]
    model.zero_grad()

    bil = _BilinearLike().to(D)
    head = nn.Sequential(nn.ReLU())
    with torch.no_grad():
        bil.weight[1] = 0.0  # unit 1 always 0: dead
    net = nn.ModuleDict({"bil": bil, "act": head[0]})

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, a, b):
            return self.net["act"](self.net["bil"](a, b))
    a, b = torch.randn(5, 3, dtype=D), torch.randn(5, 4, dtype=D)
    table = dlt.probe(Net(), (a, b), torch.randn(5, 5, dtype=D), nn.MSELoss(),
                      percentiles=()).set_index(["layer", "quantity"]).value
    out = torch.relu(bil(a, b)).detach()
    assert table[(1, "dead_frac")] == float((out.amax(0) <= 0).double().mean())
