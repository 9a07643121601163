"""Round 46 (torchhunt46): dlt.probe / dlt.predict on model kinds not tried before, each
quantity against a direct float64 autograd computation in this file (forward hooks on the
weight layers, ``torch.autograd.grad`` of the loss with respect to each call's output and
every weight, population statistics)."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402
from torch.nn.utils import parametrize  # noqa: E402

import depthlab.torch as dlt  # noqa: E402

D = torch.float64
CE = nn.CrossEntropyLoss()
RTOL = 1e-9


# ---------------------------------------------------------------------------------------------
# the reference


def _weights(module: nn.Module) -> list[torch.Tensor]:
    """The tensors whose entries are the layer's ``W``: its own >= 2-dim parameters, a
    parametrized weight's trainable original(s) instead of the computed weight, and for the
    deprecated ``nn.utils.weight_norm`` the direction ``weight_v`` (not the magnitudes)."""
    ws = [p for p in module.parameters(recurse=False) if p.dim() >= 2]
    if parametrize.is_parametrized(module):
        for plist in module.parametrizations.values():
            ws += [p for p in plist.parameters(recurse=False) if p.dim() >= 2]
    for hook in module._forward_pre_hooks.values():
        if type(hook).__name__ == "WeightNorm":
            ws = [p for p in ws if p is not getattr(module, hook.name + "_g")]
    return ws


def _stats(ts: list[torch.Tensor]) -> tuple[float, float, float]:
    """mean, population std and mean |.| of the entries of ``ts`` pooled (float64)."""
    v = torch.cat([t.detach().double().reshape(-1) for t in ts])
    return float(v.mean()), float(v.std(correction=0)), float(v.abs().mean())


def reference(model: nn.Module, x, y, loss_fn, names: list[str]) -> dict:
    """``{name: {quantity: value}}`` for the modules ``names`` of ``model`` (the weight
    layers and residual blocks of the probe's table) and ``{"": {"loss": L}}``:
    ``pre_mean/pre_std`` of each call's output ``s`` (first tensor; a PackedSequence's data),
    ``grad_pre_std/absmean`` of ``dL/ds``, ``weight_std`` of :func:`_weights`,
    ``weight_grad_std/absmean`` of ``dL/dW``; calls pooled."""
    outs: dict[str, list[torch.Tensor]] = {}

    def keep(name, _mod, _inp, out):
        t = out[0] if isinstance(out, tuple) else out
        if isinstance(t, nn.utils.rnn.PackedSequence):
            t = t.data
        outs.setdefault(name, []).append(t)

    handles = [model.get_submodule(n).register_forward_hook(functools.partial(keep, n))
               for n in names]
    try:
        out = model(*x) if isinstance(x, tuple) else model(**x) if isinstance(x, dict) \
            else model(x)
    finally:
        for h in handles:
            h.remove()
    loss = loss_fn(out, y)
    calls = [t for n in names for t in outs.get(n, []) if t.requires_grad]
    weights = {n: _weights(model.get_submodule(n)) for n in names}
    trained = [w for n in names for w in weights[n] if w.requires_grad]
    grads = torch.autograd.grad(loss, calls + trained, allow_unused=True)
    by_id = dict(zip(map(id, calls + trained), grads))
    table: dict[str, dict[str, float]] = {"": {"loss": float(loss.detach())}}
    for n in names:
        row = table.setdefault(n, {})
        if n in outs:
            row["pre_mean"], row["pre_std"], _ = _stats(outs[n])
            gs = [by_id[id(t)] for t in outs[n] if by_id.get(id(t)) is not None]
            if gs:
                _, row["grad_pre_std"], row["grad_pre_absmean"] = _stats(gs)
        if weights[n]:
            _, row["weight_std"], _ = _stats(weights[n])
            wg = [by_id[id(w)] for w in weights[n] if by_id.get(id(w)) is not None]
            if wg:
                _, row["weight_grad_std"], row["weight_grad_absmean"] = _stats(wg)
    return table


def table_of(df) -> dict[tuple[str, str], float]:
    return {(m, q): v for m, q, v in zip(df.module, df.quantity, df.value)}


def assert_matches(model, x, y, loss_fn, layers: list[str], blocks: tuple[str, ...] = ()):
    """Every probe row of ``layers`` (and ``block_grad_std`` of ``blocks``, the std of
    dL/d(block output)) equals the reference to RTOL; no layer row the reference lacks."""
    df = dlt.probe(model, x, y, loss_fn)
    got = table_of(df)
    ref = reference(model, x, y, loss_fn, [*layers, *blocks])
    assert math.isclose(got[("", "loss")], ref[""]["loss"], rel_tol=RTOL)
    assert set(df.module) - {""} == set(layers) | set(blocks)
    for n in layers:
        for q, v in ref[n].items():
            assert math.isclose(got[(n, q)], v, rel_tol=RTOL, abs_tol=1e-15), (n, q)
        for q in ("grad_pre_std", "weight_grad_std"):
            assert ((n, q) in got) == (q in ref[n]), (n, q)
    for n in blocks:
        assert math.isclose(got[(n, "block_grad_std")], ref[n]["grad_pre_std"], rel_tol=RTOL)
    return df


def mlp(i: int = 6, h: int = 8, o: int = 4, act=nn.Tanh) -> nn.Sequential:
    return nn.Sequential(nn.Linear(i, h), act(), nn.Linear(h, h), nn.ReLU(),
                         nn.Linear(h, o)).to(D)


# ---------------------------------------------------------------------------------------------
# losses: every quantity and the acc row


def _loss_cases():
    g = torch.Generator().manual_seed(1)
    yc = torch.randint(0, 4, (10,), generator=g)
    ignored = yc.clone()
    ignored[:3] = -100
    probs = torch.softmax(torch.randn(10, 4, generator=g, dtype=D), 1)
    hard = (torch.rand(10, 4, generator=g) > 0.5).to(D)
    reg = torch.randn(10, 4, generator=g, dtype=D)
    logsm = lambda: nn.Sequential(mlp(), nn.LogSoftmax(1))  # noqa: E731
    return [
        ("ce label smoothing", mlp, yc, nn.CrossEntropyLoss(label_smoothing=0.2), "argmax"),
        ("ce probabilities", mlp, probs, nn.CrossEntropyLoss(), None),
        ("ce ignore_index", mlp, ignored, nn.CrossEntropyLoss(), "argmax"),
        ("ce class weights", mlp, yc,
         nn.CrossEntropyLoss(weight=torch.tensor([1.0, 2, 3, 4], dtype=D)), "argmax"),
        ("nll after logsoftmax", logsm, yc, nn.NLLLoss(), "argmax"),
        ("bce pos_weight", mlp, hard,
         nn.BCEWithLogitsLoss(pos_weight=torch.tensor([1.0, 2, 3, 0.5], dtype=D)), "binary"),
        ("kl div", logsm, probs, nn.KLDivLoss(reduction="batchmean"), None),
        ("kl div log target", logsm, probs.log(),
         nn.KLDivLoss(reduction="batchmean", log_target=True), None),
        ("smooth l1", mlp, reg, nn.SmoothL1Loss(beta=0.5), None),
        ("huber", mlp, reg, nn.HuberLoss(delta=0.3), None),
        ("python function", mlp, yc,
         lambda o, t: (o.logsumexp(1) - o.gather(1, t[:, None])[:, 0]).mean()
         + 0.01 * o.pow(2).sum(), "argmax"),
        ("multi margin", mlp, yc, nn.MultiMarginLoss(), "argmax"),
    ]


@pytest.mark.parametrize("case", _loss_cases(), ids=lambda c: c[0])
def test_every_quantity_and_acc_under_many_losses(case):
    _, make, y, loss_fn, acc = case
    torch.manual_seed(0)
    model = make()
    x = torch.randn(10, 6, dtype=D)
    layers = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    df = assert_matches(model, x, y, loss_fn, layers)
    with torch.no_grad():
        out = model(x)
    got = table_of(df).get(("", "acc"))
    if acc is None:
        assert got is None
    elif acc == "binary":
        assert got == pytest.approx(float(((out > 0) == (y == 1)).double().mean()))
    else:
        valid = y != -100
        assert got == pytest.approx(float(((out.argmax(1) == y) & valid).sum() / valid.sum()))


def test_mse_on_a_multi_dim_output():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Unflatten(1, (3, 4)),
                          nn.Linear(4, 5)).to(D)
    x, y = torch.randn(10, 6, dtype=D), torch.randn(10, 3, 5, dtype=D)
    assert_matches(model, x, y, nn.MSELoss(), ["0", "3"])


# ---------------------------------------------------------------------------------------------
# weight parametrizations and frozen weights: the layer is the parametrized module, its
# weight rows are the trainable original's


class _Symmetric(nn.Module):
    def forward(self, w):
        return w.triu() + w.triu(1).transpose(-1, -2)


class _Scaled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.g = nn.Parameter(torch.tensor(2.0, dtype=D))

    def forward(self, w):
        return w * self.g


def _parametrized(kind: str) -> nn.Sequential:
    torch.manual_seed(0)
    m = mlp(h=8)
    if kind == "symmetric":
        parametrize.register_parametrization(m[2], "weight", _Symmetric())
    elif kind == "scaled":
        parametrize.register_parametrization(m[2], "weight", _Scaled())
    elif kind == "scaled bias":
        parametrize.register_parametrization(m[0], "bias", _Scaled())
    elif kind == "old weight_norm":
        nn.utils.weight_norm(m[2])
    elif kind == "old spectral_norm":
        nn.utils.spectral_norm(m[2])
    elif kind == "frozen weight":
        m[2].weight.requires_grad_(False)
    elif kind == "frozen mix":
        m[0].bias.requires_grad_(False)
        m[4].requires_grad_(False)
    elif kind == "only a bias trains":
        m.requires_grad_(False)
        m[2].bias.requires_grad_(True)
    return m


@pytest.mark.parametrize("kind", ["symmetric", "scaled", "scaled bias", "old weight_norm",
                                  "old spectral_norm", "frozen weight", "frozen mix",
                                  "only a bias trains"])
def test_parametrized_and_frozen_weights(kind):
    model = _parametrized(kind)
    x, y = torch.randn(10, 6, dtype=D), torch.randint(0, 4, (10,))
    assert_matches(model, x, y, CE, ["0", "2", "4"])


# ---------------------------------------------------------------------------------------------
# transformer decoders with masks, attention with kdim/vdim, several inputs


class _Decoder(nn.Module):
    def __init__(self, batch_first: bool, causal: bool) -> None:
        super().__init__()
        self.batch_first, self.causal = batch_first, causal
        self.emb = nn.Embedding(11, 16)
        layer = nn.TransformerDecoderLayer(16, 4, 32, dropout=0.0, batch_first=batch_first)
        self.dec = nn.TransformerDecoder(layer, 2)
        self.head = nn.Linear(16, 11)

    def forward(self, tgt, memory):
        t = self.emb(tgt)
        if not self.batch_first:
            t, memory = t.transpose(0, 1), memory.transpose(0, 1)
        n = tgt.shape[1]
        mask = nn.Transformer.generate_square_subsequent_mask(n, dtype=D) if self.causal \
            else None
        h = self.dec(t, memory, tgt_mask=mask, tgt_is_causal=self.causal,
                     tgt_key_padding_mask=tgt == 0)
        if not self.batch_first:
            h = h.transpose(0, 1)
        return self.head(h), h


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("causal", [True, False])
def test_transformer_decoder_with_masks(batch_first, causal):
    """Every layer; an attention's out_proj rows are those of the attention's output; the
    decoder layers' block_grad_std."""
    torch.manual_seed(0)
    model = _Decoder(batch_first, causal).to(D)
    tgt = torch.randint(1, 11, (3, 5))
    tgt[0, 3:] = 0
    x = (tgt, torch.randn(3, 4, 16, dtype=D))
    y = torch.randint(0, 11, (3, 5))
    loss = lambda o, t: F.cross_entropy(o[0].reshape(-1, 11), t.reshape(-1))  # noqa: E731
    attn = [n for n, m in model.named_modules() if isinstance(m, nn.MultiheadAttention)]
    plain = [n for n, m in model.named_modules()
             if isinstance(m, (nn.Linear, nn.Embedding)) and not n.endswith("out_proj")]
    blocks = ("dec.layers.0", "dec.layers.1")
    df = dlt.probe(model, x, y, loss)
    got = table_of(df)
    ref = reference(model, x, y, loss, [*plain, *attn, *blocks])
    for n in plain:
        for q, v in ref[n].items():
            assert math.isclose(got[(n, q)], v, rel_tol=RTOL), (n, q)
    for n in attn:
        assert math.isclose(got[(n, "weight_std")], ref[n]["weight_std"], rel_tol=RTOL)
        assert math.isclose(got[(n, "weight_grad_std")], ref[n]["weight_grad_std"],
                            rel_tol=RTOL)
        for q in ("pre_mean", "pre_std", "grad_pre_std", "grad_pre_absmean"):
            assert math.isclose(got[(n + ".out_proj", q)], ref[n][q], rel_tol=RTOL), (n, q)
    for n in blocks:
        assert math.isclose(got[(n, "block_grad_std")], ref[n]["grad_pre_std"], rel_tol=RTOL)


class _TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 6), nn.Conv1d(2, 3, 3)
        self.bil, self.o = nn.Bilinear(6, 3, 5), nn.Linear(5, 2)

    def forward(self, x1, x2, scale=1.0):
        z = self.bil(torch.relu(self.a(x1)), torch.tanh(self.b(x2)).mean(-1)) * scale
        return z, self.o(F.gelu(z))


def test_several_inputs_and_a_tuple_output_the_loss_reads_in_part():
    torch.manual_seed(0)
    model = _TwoInputs().to(D)
    x = (torch.randn(5, 4, dtype=D), torch.randn(5, 2, 7, dtype=D), 0.5)
    y = torch.randint(0, 2, (5,))
    df = assert_matches(model, x, y, lambda o, t: F.cross_entropy(o[1], t),
                        ["a", "b", "bil", "o"])
    with torch.no_grad():
        hits = model(*x)[1].argmax(1) == y
    assert table_of(df)[("", "acc")] == pytest.approx(float(hits.double().mean()))


# ---------------------------------------------------------------------------------------------
# recurrent variants in training mode (dropout between layers), initial states


class _Recurrent(nn.Module):
    def __init__(self, kind: str, batch_first: bool, **kw) -> None:
        super().__init__()
        self.batch_first = batch_first
        self.r = getattr(nn, kind)(5, 6, batch_first=batch_first, **kw)
        width = (kw.get("proj_size") or 6) * (2 if kw.get("bidirectional") else 1)
        self.o = nn.Linear(width, 3)

    def forward(self, x, h0=None):
        if not self.batch_first:
            x = x.transpose(0, 1)
        out, _ = self.r(x) if h0 is None else self.r(x, h0)
        if not self.batch_first:
            out = out.transpose(0, 1)
        return self.o(out[:, -1])


@pytest.mark.parametrize("kind,batch_first,kw", [
    ("GRU", True, {"num_layers": 3, "bidirectional": True, "dropout": 0.3}),
    ("GRU", False, {"num_layers": 3, "bidirectional": True, "dropout": 0.3}),
    ("LSTM", False, {"num_layers": 2, "bidirectional": True, "proj_size": 2, "dropout": 0.5}),
    ("RNN", True, {"num_layers": 2, "nonlinearity": "relu", "bias": False}),
], ids=["gru batch_first", "gru seq_first", "lstm proj", "rnn relu no bias"])
def test_recurrent_variants_in_training_mode(kind, batch_first, kw):
    torch.manual_seed(0)
    model = _Recurrent(kind, batch_first, **kw).to(D).train()
    x, y = torch.randn(4, 7, 5, dtype=D), torch.randint(0, 3, (4,))
    assert_matches(model, x, y, CE, ["r", "o"])


def test_recurrent_with_an_initial_state():
    torch.manual_seed(0)
    model = _Recurrent("GRU", False, num_layers=2, bidirectional=True).to(D)
    x = (torch.randn(4, 7, 5, dtype=D), torch.randn(4, 4, 6, dtype=D))
    assert_matches(model, x, torch.randint(0, 3, (4,)), CE, ["r", "o"])


# ---------------------------------------------------------------------------------------------
# a ConvNeXt block: depthwise conv, permute, LayerNorm, Linear, a 3-dim layer scale


class _ConvNeXtBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(c, c, 7, padding=3, groups=c)
        self.norm = nn.LayerNorm(c)
        self.pw1, self.act, self.pw2 = nn.Linear(c, 4 * c), nn.GELU(), nn.Linear(4 * c, c)
        self.layer_scale = nn.Parameter(torch.full((c, 1, 1), 0.5))

    def forward(self, x):
        h = self.dw(x).permute(0, 2, 3, 1)
        h = self.pw2(self.act(self.pw1(self.norm(h)))).permute(0, 3, 1, 2)
        return x + self.layer_scale * h


class _ConvNeXt(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 2, 2)
        self.b1, self.b2 = _ConvNeXtBlock(8), _ConvNeXtBlock(8)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.b2(self.b1(self.stem(x))).mean((2, 3)))


def test_convnext_blocks():
    torch.manual_seed(0)
    model = _ConvNeXt().to(D)
    x, y = torch.randn(4, 3, 8, 8, dtype=D), torch.randint(0, 3, (4,))
    layers = ["stem", "b1.dw", "b1.pw1", "b1.pw2", "b2.dw", "b2.pw1", "b2.pw2", "head"]
    df = assert_matches(model, x, y, CE, layers, blocks=("b1", "b2"))
    got = table_of(df)
    seen = {}
    handle = model.b1.act.register_forward_hook(lambda m, i, o: seen.setdefault("a", o))
    with torch.no_grad():
        model(x)
    handle.remove()
    a = seen["a"]
    assert got[("b1.pw1", "act_mean")] == pytest.approx(float(a.mean()), rel=RTOL)
    assert got[("b1.pw1", "act_std")] == pytest.approx(float(a.std(correction=0)), rel=RTOL)
    # the follower of a depthwise conv is the LayerNorm after the permute
    normed = model.b1.norm(model.b1.dw(model.stem(x)).permute(0, 2, 3, 1)).detach()
    assert got[("b1.dw", "act_std")] == pytest.approx(float(normed.std(correction=0)),
                                                      rel=RTOL)


# ---------------------------------------------------------------------------------------------
# dead units through reshapes and permutes between a layer and its activation


class _Permute(nn.Module):
    def __init__(self, *dims: int) -> None:
        super().__init__()
        self.dims = dims

    def forward(self, x):
        return x.permute(*self.dims)


def _killed(layer: nn.Module, k: int) -> nn.Module:
    with torch.no_grad():
        layer.bias[:k] = -100.0
    return layer.to(D)


def _dead_cases():
    return [
        ("linear unflatten relu", lambda: nn.Sequential(
            _killed(nn.Linear(5, 12), 4), nn.Unflatten(1, (3, 4)), nn.ReLU(), nn.Flatten(),
            nn.Linear(12, 3).to(D)), (8, 5), -1),
        ("conv flatten relu", lambda: nn.Sequential(
            _killed(nn.Conv2d(2, 4, 3), 2), nn.Flatten(), nn.ReLU(),
            nn.Linear(36, 3).to(D)), (8, 2, 5, 5), 1),
        ("conv1d permute relu", lambda: nn.Sequential(
            _killed(nn.Conv1d(2, 4, 3), 1), _Permute(0, 2, 1), nn.ReLU(), nn.Flatten(),
            nn.Linear(20, 3).to(D)), (8, 2, 7), 1),
        ("linear 3-d permute relu", lambda: nn.Sequential(
            _killed(nn.Linear(5, 7), 3), _Permute(0, 2, 1), nn.ReLU(), nn.Flatten(),
            nn.Linear(42, 3).to(D)), (8, 6, 5), -1),
    ]


@pytest.mark.parametrize("case", _dead_cases(), ids=lambda c: c[0])
def test_dead_and_inactive_units_through_reshapes(case):
    """dead_frac: the share of the layer's units (features; channels of a conv) whose every
    entry is <= 0 before the ReLU; inactive_frac: the share of entries <= 0."""
    _, make, shape, axis = case
    torch.manual_seed(0)
    model = make()
    x, y = torch.randn(*shape, dtype=D), torch.randint(0, 3, (shape[0],))
    got = table_of(dlt.probe(model, x, y, CE))
    with torch.no_grad():
        s = model[0](x)
    off = s <= 0
    other = tuple(d for d in range(s.dim()) if d != axis % s.dim())
    assert got[("0", "dead_frac")] == pytest.approx(float(off.all(dim=other).double().mean()))
    assert got[("0", "inactive_frac")] == pytest.approx(float(off.double().mean()))
    assert 0 < got[("0", "dead_frac")] < 1


# ---------------------------------------------------------------------------------------------
# lazy and meta modules are refused in one line


def test_lazy_and_meta_modules_are_refused_in_one_line():
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    for fn in (dlt.probe, dlt.predict):
        lazy = nn.Sequential(nn.LazyLinear(5), nn.ReLU(), nn.Linear(5, 3))
        with pytest.raises(ValueError, match=r"'0' \(LazyLinear\).*uninitialized lazy") as e:
            fn(lazy, x, y, CE)
        assert "\n" not in str(e.value)
        with torch.device("meta"):
            meta = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
        with pytest.raises(ValueError, match=r"'0.weight'.*'meta' device") as e:
            fn(meta, x, y, CE)
        assert "\n" not in str(e.value)


# ---------------------------------------------------------------------------------------------
# predict on chains with flatten/unflatten, pools and the less common activations


def _chain(act) -> nn.Sequential:
    c = 32
    return nn.Sequential(nn.Conv2d(3, c, 3, padding=1), act(), nn.AvgPool2d(2),
                         nn.Conv2d(c, c, 3, padding=1), act(), nn.Flatten(),
                         nn.Linear(c * 64, 128), act(), nn.Unflatten(1, (2, 64)),
                         nn.Flatten(), nn.Linear(128, 10))


@pytest.mark.parametrize("act", [nn.Hardtanh, nn.ReLU6, lambda: nn.PReLU(init=0.1),
                                 lambda: nn.CELU(0.7), nn.Hardswish, nn.LogSigmoid,
                                 lambda: nn.Softplus(beta=3)],
                         ids=["hardtanh", "relu6", "prelu", "celu", "hardswish", "logsigmoid",
                              "softplus beta 3"])
def test_predict_on_conv_chains_with_flatten_and_pools(act):
    """Hidden rows (every row but the 10-unit head's pre_std) within 10% of the
    measurement, mean over 6 seeds."""
    g = torch.Generator().manual_seed(100)
    x = torch.randn(128, 3, 16, 16, generator=g)
    y = torch.randint(0, 10, (128,), generator=g)
    ratios = []
    for seed in range(6):
        torch.manual_seed(seed)
        p = dlt.predict(_chain(act), x, y, CE)
        p = p[p.quantity.isin(["pre_std", "act_std", "grad_pre_std"])]
        ratios.append((p.value / p.predicted).to_numpy())
    r = np.mean(ratios, axis=0)
    head = (p.layer == p.layer.max()) & (p.quantity == "pre_std")
    hidden = r[~head.to_numpy()]
    hidden = hidden[np.isfinite(hidden)]
    assert hidden.size >= 8
    assert np.all(np.abs(hidden - 1) < 0.10), hidden


# ---------------------------------------------------------------------------------------------
# the doctor's gradient through time: the recurrent layer the forward runs first, a (1,) loss


class _TwoRecurrent(nn.Module):
    """A GRU registered first that the forward never runs (or runs second), then the RNN it
    runs on x."""

    def __init__(self, spare_runs: bool) -> None:
        super().__init__()
        self.spare_runs = spare_runs
        self.spare = nn.GRU(8, 8, batch_first=True)
        self.r = nn.RNN(4, 8, batch_first=True)
        self.o = nn.Linear(8, 3)

    def forward(self, x):
        h = self.r(x)[0]
        if self.spare_runs:
            h = self.spare(h)[0]
        return self.o(h[:, -1])


def _input_grad_norms(model, layer, x, y, loss_fn) -> torch.Tensor:
    """||dL/dx_t|| per time step of ``layer``'s input (the doctor's reading, by hand)."""
    seen = {}

    def leaf(_m, args):
        seen["x"] = args[0].detach().requires_grad_(True)
        return (seen["x"], *args[1:])

    handle = layer.register_forward_pre_hook(leaf)
    try:
        loss = loss_fn(model(x), y).reshape(())
    finally:
        handle.remove()
    (g,) = torch.autograd.grad(loss, seen["x"])
    return g.double().transpose(0, 1).reshape(g.shape[1], -1).norm(dim=1)


@pytest.mark.parametrize("spare_runs", [False, True], ids=["never runs", "runs second"])
@pytest.mark.parametrize("one_dim_loss", [False, True], ids=["() loss", "(1,) loss"])
def test_through_time_reads_the_recurrent_layer_the_forward_runs_first(spare_runs,
                                                                         one_dim_loss):
    """A recurrent module registered before the one the forward runs first (a spare GRU, or
    a second GRU run on the first one's output) made through_time return None, as did a loss
    of shape (1,) (the doctor trains on one: train.scalar_loss); both silenced the doctor's
    vanishing/exploding_through_time. Now: the first recurrent layer that runs, its norms."""
    from depthlab.torch.through_time import through_time

    torch.manual_seed(0)
    model = _TwoRecurrent(spare_runs).to(D)
    x, y = torch.randn(5, 6, 4, dtype=D), torch.randint(0, 3, (5,))
    loss_fn = (lambda o, t: F.cross_entropy(o, t).reshape(1)) if one_dim_loss else CE
    got = through_time(model, x, y, loss_fn)
    assert got is not None
    norms = _input_grad_norms(model, model.r, x, y, loss_fn)
    assert (got["layer"], got["module"], got["steps"]) == ("r", "RNN", 6)
    assert got["ratio"] == pytest.approx(float(norms.min() / norms.max()), rel=1e-12)
    assert got["first"] == pytest.approx(float(norms[0]), rel=1e-12)
    assert got["last"] == pytest.approx(float(norms[-1]), rel=1e-12)
    assert (got["weakest"], got["strongest"]) == (int(norms.argmin()), int(norms.argmax()))
    assert all(p.grad is None for p in model.parameters())


class _PackedThenPlain(nn.Module):
    """A GRU run on a PackedSequence, then an RNN on its padded output."""

    def __init__(self) -> None:
        super().__init__()
        self.first, self.second, self.o = nn.GRU(4, 8, batch_first=True), \
            nn.RNN(8, 8, batch_first=True), nn.Linear(8, 3)

    def forward(self, x):
        lengths = torch.full((x.shape[0],), x.shape[1], dtype=torch.int64)
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True)
        h, _ = nn.utils.rnn.pad_packed_sequence(self.first(packed)[0], batch_first=True)
        return self.o(self.second(h)[0][:, -1])


def test_through_time_does_not_take_a_later_layer_for_a_packed_first_one():
    """The first recurrent layer runs on a PackedSequence (no per-step tensor to read): no
    reading, rather than the second layer's input reported as the first's (guard: passes on
    the original code, which hooked the first registered module only)."""
    from depthlab.torch.through_time import through_time

    torch.manual_seed(0)
    model = _PackedThenPlain().to(D)
    x, y = torch.randn(5, 6, 4, dtype=D), torch.randint(0, 3, (5,))
    assert through_time(model, x, y, CE) is None
