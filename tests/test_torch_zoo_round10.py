"""depthlab.torch.probe and Watch on models the other torch tests do not cover (round 10), every
row against the test's own computation, follower rows included: each layer's output and its
followers' inputs and outputs captured by the test's forward hooks, population statistics by
NumPy, ``f'(s)`` by autograd through the activation module itself, gradients by
``torch.autograd.grad``. Models: Conv3d with groups and dilation into GroupNorm and ReLU6,
ConvTranspose1d/3d with groups, Bilinear, a weight tied between an Embedding and the output
layer, a module called three times, a per-channel PReLU, InstanceNorm2d and LayerNorm without
affine parameters, Softplus/LogSigmoid/CELU/Hardswish/Hardtanh, an nn.Threshold (a follower
since round 20),
Identity/Unflatten in a Sequential, a multi-scale conv on three input sizes, bidirectional
2-layer LSTM with proj_size on packed sequences (both layouts), MultiheadAttention with
kdim/vdim, a 2-layer TransformerDecoder with a causal mask; Watch rows equal a probe of the same
batch and training stays bit-identical.

Regressions: a ``MultiheadAttention(add_bias_kv=True)``'s ``bias_k``/``bias_v`` were pooled into
its input projection's weight rows (weight_std 0.2533 where the projections' is 0.2529,
weight_grad_std 0.0125 vs 0.0130); a probe of an ``nn.Embedding(max_norm=...)`` left the user's
weights renormalized (its forward rescales the looked-up rows in place: weight std 0.954 ->
0.514 after ``dlt.probe``); stds of entries far from 0 cancelled, on the compiled kernels
(a saturated sigmoid's act_std 9.6e-5 where it is 5.2e-5) and in the torch operations' float32
weight sums (weight_std 0.4% off for weights of mean 0.05, std 1e-4)."""

from __future__ import annotations

import copy
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import depthlab.torch as dlt
from tests.helpers.torchref import as_numpy as _np
from tests.helpers.torchref import call as _call
from tests.helpers.torchref import first_tensor as _first

D = torch.float64
PCTS = (2, 15, 50, 85, 98)
SAT = 0.05  # depthlab.probes.stats.SATURATION_RATIO
BOUNDED = {nn.Sigmoid: 0.25, nn.Tanh: 1.0, nn.Softsign: 1.0, nn.Hardtanh: 1.0, nn.ReLU6: 1.0,
           nn.Hardsigmoid: 1 / 6}
RELU_FAMILY = (nn.ReLU, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
               nn.Mish, nn.ReLU6, nn.Hardswish)


def _ce(out, y):
    return F.cross_entropy(out, y)


def _weights(mods: dict, name: str) -> list[torch.Tensor]:
    """The projections of an attention (not bias_k/bias_v), else the >= 2-dim parameters."""
    m = mods[name]
    if isinstance(m, nn.MultiheadAttention):
        return [p for n, p in m.named_parameters(recurse=False)
                if p.dim() >= 2 and n not in ("bias_k", "bias_v")]
    return [p for p in m.parameters(recurse=False) if p.dim() >= 2]


def reference(model, x, y, loss_fn, layers, followers=None, axes=None) -> dict:
    """{(layer, quantity): value} computed by hand. ``layers``: module names in execution order
    (``A.out_proj`` for attention ``A``'s output, ``A`` for its input projection);
    ``followers``: layer -> [norm name?, activation name?] (the modules that read its output);
    ``axes``: layer -> the axis of its units (default -1)."""
    followers, axes = followers or {}, axes or {}
    mods = dict(model.named_modules())
    seen: dict[str, list] = {n: [] for n in layers}
    f_in: dict[str, list] = {}
    f_out: dict[str, list] = {}
    handles = []
    for name in layers:
        if isinstance(mods[name], nn.MultiheadAttention):
            continue  # the input projection's output is internal to the attention
        attn = name.endswith(".out_proj") and isinstance(mods[name[:-9]], nn.MultiheadAttention)
        owner = name[:-9] if attn else name

        def hook(module, args, out, name=name):
            seen[name].append(_first(out))
        handles.append(mods[owner].register_forward_hook(hook))
    for chain in followers.values():
        for f in chain:
            f_in[f], f_out[f] = [], []

            def pre(module, args, f=f):
                f_in[f].append(_first(args).detach().clone())

            def post(module, args, out, f=f):
                f_out[f].append(_first(out).detach().clone())
            handles += [mods[f].register_forward_pre_hook(pre), mods[f].register_forward_hook(post)]
    out = _call(model, x)
    for h in handles:
        h.remove()
    loss = loss_fn(out, y)
    exp = {(0, "loss"): float(loss.detach())}
    outs = [(n, t) for n in layers for t in seen[n] if t.requires_grad]
    weights = {n: _weights(mods, n) for n in layers}
    trainable = list({id(p): p for n in layers for p in weights[n] if p.requires_grad}.values())
    got = torch.autograd.grad(loss, [t for _, t in outs] + trainable, allow_unused=True)
    g_out, g_w = got[: len(outs)], dict(zip(map(id, trainable), got[len(outs):]))
    for i, name in enumerate(layers, start=1):
        w = np.concatenate([_np(p).ravel() for p in weights[name]])
        exp[(i, "weight_std")] = w.std()
        gw = [g_w[id(p)] for p in weights[name] if g_w.get(id(p)) is not None]
        if gw:
            v = np.concatenate([_np(g).ravel() for g in gw])
            exp[(i, "weight_grad_std")] = v.std()
            exp[(i, "weight_grad_absmean")] = np.abs(v).mean()
        if seen[name]:
            s = np.concatenate([_np(t).ravel() for t in seen[name]])
            exp[(i, "pre_mean")], exp[(i, "pre_std")] = s.mean(), s.std()
            exp.update({(i, f"pre_p{q}"): np.percentile(s, q) for q in PCTS})
        gs = [g for (n, _), g in zip(outs, g_out) if n == name and g is not None]
        if gs:
            v = np.concatenate([_np(g).ravel() for g in gs])
            exp[(i, "grad_pre_std")], exp[(i, "grad_pre_absmean")] = v.std(), np.abs(v).mean()
        chain = followers.get(name)
        if not chain:
            continue
        a = np.concatenate([_np(t).ravel() for t in f_out[chain[-1]]])
        exp[(i, "act_mean")], exp[(i, "act_std")] = a.mean(), a.std()
        exp.update({(i, f"act_p{q}"): np.percentile(a, q) for q in PCTS})
        act = mods[chain[-1]]
        if isinstance(act, dlt.NORMS):
            continue
        ins = f_in[chain[-1]]
        ds = []
        for s in ins:
            leaf = s.clone().requires_grad_(True)
            ds.append(torch.autograd.grad(act(leaf.clone()).sum(), leaf)[0].abs())
        n = sum(d.numel() for d in ds)
        if type(act) in BOUNDED:
            # ReLU6: its s <= 0 side is inactive, not saturated
            up = isinstance(act, RELU_FAMILY)
            exp[(i, "saturated_frac")] = sum(
                float(((d < SAT * BOUNDED[type(act)]) & ((s > 0) if up else True)).sum())
                for d, s in zip(ds, ins)) / n
        if isinstance(act, RELU_FAMILY):
            exp[(i, "inactive_frac")] = sum(float((s <= 0).sum()) for s in ins) / n
        ax = axes.get(name, -1)
        alive = None
        for d in ds:
            dims = tuple(k for k in range(d.dim()) if k != ax % d.dim())
            u = d.amax(dim=dims) > 0
            alive = u if alive is None else alive | u
        exp[(i, "dead_frac")] = 1.0 - float(alive.double().mean())
    return exp


def compare(df, exp: dict, layers, rtol=1e-9, atol=1e-12) -> None:
    """Every row of ``df`` but acc/block_grad_std/update_ratio equals ``exp``; none missing."""
    got = {}
    for row in df.itertuples():
        if row.quantity in ("acc", "block_grad_std", "update_ratio"):
            continue
        if row.layer > 0:
            assert row.module == layers[row.layer - 1], (row.layer, row.module)
        got[(row.layer, row.quantity)] = row.value
    assert set(got) == set(exp), sorted(map(str, set(got) ^ set(exp)))
    for key, want in exp.items():
        assert got[key] == pytest.approx(want, rel=rtol, abs=atol), key


# ---------------------------------------------------------------------------------------------
# models


class _Bilinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 6), nn.Bilinear(6, 5, 7)
        self.act, self.h = nn.Tanh(), nn.Linear(7, 3)

    def forward(self, x, z):
        return self.h(self.act(self.b(self.a(x), z)))


class _Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb, self.mid, self.act = nn.Embedding(11, 6), nn.Linear(6, 6), nn.GELU()
        self.out = nn.Linear(6, 11)
        self.out.weight = self.emb.weight

    def forward(self, t):
        return self.out(self.act(self.mid(self.emb(t)))).mean(1)


class _Thrice(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp, self.mid, self.act, self.out = (nn.Linear(5, 6), nn.Linear(6, 6), nn.Softsign(),
                                                  nn.Linear(6, 3))

    def forward(self, x):
        h = self.inp(x)
        for _ in range(3):
            h = self.act(self.mid(h))
        return self.out(h)


class _PReLU(nn.Module):
    def __init__(self):
        super().__init__()
        self.c, self.p, self.h = nn.Conv2d(2, 4, 3), nn.PReLU(4), nn.Linear(64, 3)
        with torch.no_grad():
            self.p.weight.copy_(torch.tensor([0.1, -0.5, 2.0, 0.0]))

    def forward(self, x):
        return self.h(self.p(self.c(x)).flatten(1))


class _Pyramid(nn.Module):
    """One conv and one Hardtanh module on three input sizes."""

    def __init__(self):
        super().__init__()
        self.c, self.act, self.h = nn.Conv2d(2, 4, 3, padding=1), nn.Hardtanh(-0.3, 0.3), \
            nn.Linear(4, 3)

    def forward(self, x):
        return self.h(sum(self.act(self.c(F.avg_pool2d(x, k))).mean((2, 3)) for k in (1, 2, 4)))


class _Packed(nn.Module):
    def __init__(self, batch_first):
        super().__init__()
        self.bf = batch_first
        self.rnn = nn.LSTM(4, 6, num_layers=2, bidirectional=True, proj_size=3,
                           batch_first=batch_first)
        self.head = nn.Linear(6, 3)

    def forward(self, x, lengths):
        p = pack_padded_sequence(x, lengths, batch_first=self.bf, enforce_sorted=False)
        o, _ = pad_packed_sequence(self.rnn(p)[0], batch_first=self.bf)
        return self.head(o.sum(1 if self.bf else 0) / lengths.to(o.dtype)[:, None])


class _Attention(nn.Module):
    def __init__(self, **kw):
        super().__init__()
        self.q = nn.Linear(5, 8)
        self.a = nn.MultiheadAttention(8, 2, batch_first=True, **kw)
        self.h = nn.Linear(8, 3)

    def forward(self, x, k, v):
        return self.h(self.a(self.q(x), k, v)[0].mean(1))


class _Decoder(nn.Module):
    def __init__(self):
        super().__init__()
        layer = nn.TransformerDecoderLayer(8, 2, 16, dropout=0.0, batch_first=True,
                                           activation="gelu")
        self.d, self.h = nn.TransformerDecoder(layer, 2), nn.Linear(8, 3)

    def forward(self, t, m):
        mask = nn.Transformer.generate_square_subsequent_mask(t.shape[1], dtype=t.dtype)
        return self.h(self.d(t, m, tgt_mask=mask, tgt_is_causal=True).mean(1))


def _decoder_layers() -> list[str]:
    names = []
    for i in range(2):
        p = f"d.layers.{i}"
        names += [f"{p}.self_attn", f"{p}.self_attn.out_proj", f"{p}.multihead_attn",
                  f"{p}.multihead_attn.out_proj", f"{p}.linear1", f"{p}.linear2"]
    return names + ["h"]


def _zoo() -> dict:
    g = torch.Generator().manual_seed(0)

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=D)

    def labels(n, c=3):
        return torch.randint(0, c, (n,), generator=g)

    lengths = torch.tensor([5, 2, 4])
    return {
        "conv3d-groups-dilation-groupnorm-relu6": (
            lambda: nn.Sequential(nn.Conv3d(4, 6, 3, groups=2, dilation=2, padding=2),
                                  nn.GroupNorm(3, 6), nn.ReLU6(), nn.Flatten(),
                                  nn.Linear(162, 3)),
            r(2, 4, 3, 3, 3), labels(2), ["0", "4"], {"0": ["1", "2"]}, {"0": -4}),
        "convtranspose1d-groups-hardtanh": (
            lambda: nn.Sequential(nn.ConvTranspose1d(4, 6, 3, groups=2, dilation=2, stride=2,
                                                     output_padding=1),
                                  nn.Hardtanh(-0.5, 0.5), nn.Flatten(), nn.Linear(84, 3)),
            r(3, 4, 5), labels(3), ["0", "3"], {"0": ["1"]}, {"0": -2}),
        "convtranspose3d-instancenorm-hardswish": (
            lambda: nn.Sequential(nn.ConvTranspose3d(2, 4, 2, stride=2, groups=2),
                                  nn.InstanceNorm3d(4, affine=True), nn.Hardswish(),
                                  nn.Flatten(), nn.Linear(256, 3)),
            r(2, 2, 2, 2, 2), labels(2), ["0", "4"], {"0": ["1", "2"]}, {"0": -4}),
        "bilinear": (_Bilinear, (r(5, 4), r(5, 5)), labels(5), ["a", "b", "h"], {"b": ["act"]},
                     {}),
        "tied-embedding-output": (_Tied, torch.randint(0, 11, (4, 5), generator=g),
                                  labels(4, 11), ["emb", "mid", "out"], {"mid": ["act"]}, {}),
        "module-called-thrice": (_Thrice, r(5, 5), labels(5), ["inp", "mid", "out"],
                                 {"mid": ["act"]}, {}),
        "prelu-per-channel": (_PReLU, r(3, 2, 6, 6), labels(3), ["c", "h"], {"c": ["p"]},
                              {"c": -3}),
        "instancenorm2d-no-affine-sigmoid": (
            lambda: nn.Sequential(nn.Conv2d(2, 3, 3), nn.InstanceNorm2d(3), nn.Sigmoid(),
                                  nn.Flatten(), nn.Linear(48, 3)),
            r(3, 2, 6, 6), labels(3), ["0", "4"], {"0": ["1", "2"]}, {"0": -3}),
        "layernorm-no-affine-celu": (
            lambda: nn.Sequential(nn.Linear(5, 8), nn.LayerNorm(8, elementwise_affine=False),
                                  nn.CELU(0.5), nn.Linear(8, 3)),
            r(5, 5), labels(5), ["0", "3"], {"0": ["1", "2"]}, {}),
        "softplus-logsigmoid-threshold": (
            lambda: nn.Sequential(nn.Linear(5, 8), nn.Softplus(beta=2, threshold=1),
                                  nn.Linear(8, 8), nn.LogSigmoid(), nn.Linear(8, 8),
                                  nn.Threshold(0.1, -1.0), nn.Linear(8, 3)),
            r(6, 5), labels(6), ["0", "2", "4", "6"], {"0": ["1"], "2": ["3"], "4": ["5"]},
            {}),
        "identity-unflatten-batch-of-one": (
            lambda: nn.Sequential(nn.Linear(6, 8), nn.Identity(), nn.Tanh(),
                                  nn.Unflatten(1, (2, 4)), nn.Conv1d(2, 3, 2), nn.ELU(),
                                  nn.Flatten(), nn.Linear(9, 3)),
            r(1, 6), labels(1), ["0", "4", "7"], {"0": ["2"], "4": ["5"]}, {"4": -2}),
        "multi-scale-conv": (_Pyramid, r(3, 2, 8, 8), labels(3), ["c", "h"], {"c": ["act"]},
                             {"c": -3}),
        "packed-lstm-proj-seq-first": (lambda: _Packed(False), (r(5, 3, 4), lengths), labels(3),
                                       ["rnn", "head"], {}, {}),
        "packed-lstm-proj-batch-first": (lambda: _Packed(True), (r(3, 5, 4), lengths),
                                         labels(3), ["rnn", "head"], {}, {}),
        "attention-kdim-vdim": (lambda: _Attention(kdim=6, vdim=7),
                                (r(3, 4, 5), r(3, 6, 6), r(3, 6, 7)), labels(3),
                                ["q", "a", "a.out_proj", "h"], {}, {}),
        "attention-add-bias-kv": (lambda: _Attention(add_bias_kv=True, add_zero_attn=True),
                                  (r(3, 4, 5), r(3, 6, 8), r(3, 6, 8)), labels(3),
                                  ["q", "a", "a.out_proj", "h"], {}, {}),
        "attention-kdim-add-bias-kv": (lambda: _Attention(kdim=6, vdim=7, add_bias_kv=True),
                                       (r(3, 4, 5), r(3, 6, 6), r(3, 6, 7)), labels(3),
                                       ["q", "a", "a.out_proj", "h"], {}, {}),
        "transformer-decoder-causal": (_Decoder, (r(3, 4, 8), r(3, 5, 8)), labels(3),
                                       _decoder_layers(), {}, {}),
    }


ZOO = _zoo()


@pytest.mark.parametrize("kernels", ["compiled", "numpy"])
@pytest.mark.parametrize("name", list(ZOO))
def test_probe_against_hooks_and_autograd(name, kernels, monkeypatch):
    if kernels == "numpy":  # the torch operations (the CUDA path)
        from depthlab.probes import accel

        monkeypatch.setattr(accel, "kernels", lambda: None)
    make, x, y, layers, followers, axes = ZOO[name]
    torch.manual_seed(1)
    model = make().double()
    df = dlt.probe(model, x, y, _ce)
    # a TransformerDecoderLayer applies its activation="gelu" itself (F.gelu): linear1's
    # follower rows since round 22 (functional activations), checked here against gelu(s)
    functional = df.module.str.endswith(".linear1") & df.quantity.str.startswith(
        ("act_", "saturated_", "inactive_", "dead_")) & (name == "transformer-decoder-causal")
    compare(df[~functional], reference(model, x, y, _ce, layers, followers, axes), layers)
    if functional.any():
        outs = {}
        mods = dict(model.named_modules())
        hooks = [mods[n].register_forward_hook(
            lambda m, a, o, n=n: outs.__setitem__(n, o.detach())) for n in layers
            if n.endswith(".linear1")]
        with torch.no_grad():
            _call(model, x)
        for h in hooks:
            h.remove()
        assert set(df[functional].module) == set(outs)
        for n, s in outs.items():
            rows = df[functional & (df.module == n)].set_index("quantity").value
            a = F.gelu(s)
            assert rows["act_mean"] == pytest.approx(a.mean().item(), rel=1e-10)
            assert rows["act_std"] == pytest.approx(a.std(unbiased=False).item(), rel=1e-10)


@pytest.mark.parametrize("name", ["attention-add-bias-kv", "attention-kdim-add-bias-kv"])
def test_attention_bias_kv_is_not_a_projection_weight(name):
    """``bias_k``/``bias_v`` (shape (1, 1, E)) are biases appended to the keys and values: the
    input projection's weight rows are of ``in_proj_weight`` (or ``q/k/v_proj_weight``) alone,
    and so is a Watch's update ratio."""
    make, x, y, layers, followers, axes = ZOO[name]
    torch.manual_seed(1)
    model = make().double()
    proj = _weights(dict(model.named_modules()), "a")
    assert len(proj) in (1, 3) and model.a.bias_k is not None
    df = dlt.probe(model, x, y, _ce)
    row = df[(df.module == "a") & (df.quantity == "weight_std")]
    assert row.value.item() == pytest.approx(
        np.concatenate([_np(p).ravel() for p in proj]).std(), rel=1e-12)
    gw = torch.autograd.grad(_ce(model(*x), y), proj)
    row = df[(df.module == "a") & (df.quantity == "weight_grad_std")]
    assert row.value.item() == pytest.approx(
        np.concatenate([_np(g).ravel() for g in gw]).std(), rel=1e-9)

    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    watch = dlt.Watch(model, every=1, theory=False)
    before = [p.detach().clone() for p in proj]
    for _ in range(2):
        opt.zero_grad()
        loss = _ce(model(*x), y)
        loss.backward()
        watch.step(loss)  # step 1: ||W_1 - W_0|| / ||W_0||
        opt.step()
        if _ == 0:
            after = [p.detach().clone() for p in proj]
    watch.close()
    num = sum(float(((a - b) ** 2).sum()) for a, b in zip(after, before))
    den = sum(float((b ** 2).sum()) for b in before)
    got = watch.frame().query("module == 'a' and quantity == 'update_ratio'").value.item()
    assert got == pytest.approx((num / den) ** 0.5, rel=1e-9)


def _embedding_model(bag: bool) -> nn.Module:
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.e = (nn.EmbeddingBag(10, 4, max_norm=1.0, mode="mean") if bag
                      else nn.Embedding(10, 4, max_norm=1.0))
            self.h = nn.Linear(4, 3)

        def forward(self, t):
            return self.h(self.e(t) if bag else self.e(t).mean(1))
    return M()


@pytest.mark.parametrize("bag", [False, True])
def test_probe_leaves_max_norm_embedding_weights_as_found(bag):
    """``nn.Embedding(max_norm=1)`` rescales the rows it looks up, in place, in its forward:
    the probe measures the pass (the rows the forward used) and then puts the user's weights
    back (they stayed renormalized: weight std 0.954 -> 0.514), as it does buffers."""
    torch.manual_seed(0)
    model = _embedding_model(bag)
    with torch.no_grad():
        model.e.weight.mul_(3.0)  # every row's norm above max_norm
    w0 = model.e.weight.detach().clone()
    t, y = torch.randint(0, 10, (5, 3)), torch.randint(0, 3, (5,))
    df = dlt.probe(model, t, y, _ce)
    assert torch.equal(model.e.weight, w0)
    dlt.discover(model, t)
    assert torch.equal(model.e.weight, w0)
    # the rows are those of the pass: the reference's own forward renormalizes the same rows
    ref = copy.deepcopy(model)
    compare(df, reference(ref, t, y, _ce, ["e", "h"]), ["e", "h"])
    assert not torch.equal(ref.e.weight, w0)  # (the renormalization did happen)


# ---------------------------------------------------------------------------------------------
# Watch: rows equal a probe of the same batch, training bit-identical


WATCHED = ["conv3d-groups-dilation-groupnorm-relu6", "tied-embedding-output",
           "module-called-thrice", "prelu-per-channel", "multi-scale-conv",
           "packed-lstm-proj-batch-first", "attention-kdim-add-bias-kv",
           "transformer-decoder-causal"]


@pytest.mark.parametrize("name", WATCHED)
def test_watch_equals_probe_and_leaves_training_bit_identical(name):
    make, x, y, layers, followers, axes = ZOO[name]
    torch.manual_seed(1)
    base = make().double()
    plain, watched = copy.deepcopy(base), copy.deepcopy(base)
    opts = [torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9) for m in (plain, watched)]
    every, steps = 2, 5
    probes, plain_losses, losses = {}, [], []
    for step in range(steps):
        if step % every == 0:
            probes[step] = dlt.probe(plain, x, y, _ce, percentiles=())
        opts[0].zero_grad()
        loss = _ce(_call(plain, x), y)
        loss.backward()
        opts[0].step()
        plain_losses.append(loss.item())
    watch = dlt.Watch(watched, every=every, theory=False)
    for _ in range(steps):
        opts[1].zero_grad()
        loss = _ce(_call(watched, x), y)
        loss.backward()
        watch.step(loss)
        opts[1].step()
        losses.append(loss.item())
    watch.close()
    assert losses == plain_losses
    assert all(torch.equal(a, b) for a, b in zip(plain.parameters(), watched.parameters()))
    df = watch.frame()
    for step, ref in probes.items():
        got = {(r.layer, r.module, r.quantity): r.value for r in df[df.step == step].itertuples()
               if r.quantity != "update_ratio"}
        exp = {(r.layer, r.module, r.quantity): r.value for r in ref.itertuples()
               if r.quantity != "acc" and not re.search(r"_p\d+$", r.quantity)}
        assert set(got) == set(exp), sorted(map(str, set(got) ^ set(exp)))
        for key, want in exp.items():
            assert got[key] == pytest.approx(want, rel=1e-9, abs=1e-12), (step, key)


# ---------------------------------------------------------------------------------------------
# statistics of entries far from 0 (compiled CPU kernels)


def _compiled_kernels() -> bool:
    from depthlab.probes import accel

    return accel.kernels() is not None


@pytest.mark.skipif(not _compiled_kernels(), reason="the compiled CPU kernels (Numba) are off")
@pytest.mark.parametrize("bias", [5.0, 7.0])
def test_std_of_entries_far_from_zero_on_the_compiled_kernels(bias):
    """A saturated sigmoid layer (pre-activations near ``bias``, activations near 1): the
    compiled pass sums x^2 in float32 lanes, so ``sum x^2 / n - mean^2`` cancelled (act_std
    9.6e-5 where it is 5.2e-5 at bias 7, 2% off at bias 5; pre_std 1.4e-4 off); the NumPy
    probes take the sums again around the mean there (probes.kernels.mean_std), and so must
    the torch probe and Watch. Float32 model; the reference is float64 NumPy of the same
    float32 values."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 256), nn.Sigmoid(), nn.Linear(256, 10))
    with torch.no_grad():
        model[0].weight.mul_(0.1)
        model[0].bias.fill_(bias)
    x, y = torch.randn(256, 32), torch.randint(0, 10, (256,))
    s = _np(model[0](x))
    a = _np(torch.sigmoid(model[0](x)))
    df = dlt.probe(model, x, y, _ce, percentiles=())
    watch = dlt.Watch(model, every=1, theory=False)
    loss = _ce(model(x), y)
    loss.backward()
    watch.step(loss)
    watch.close()
    for table in (df, watch.frame()):
        got = table[table.layer == 1].set_index("quantity").value
        assert got["act_std"] == pytest.approx(a.std(), rel=1e-6)
        assert got["pre_std"] == pytest.approx(s.std(), rel=1e-6)
        assert got["act_mean"] == pytest.approx(a.mean(), rel=1e-6)


def test_weight_std_of_weights_far_from_zero_on_the_torch_operations(monkeypatch):
    """Weights of mean 0.05 and std 1e-4 (float32), on the torch operations' path (CUDA, or no
    Numba): ``sum W`` was taken in float32, so ``sum W^2 / n - mean^2`` left weight_std 0.4%
    off (1.0075e-4 where it is 1.0032e-4), 3% after one SGD step; Acc sums in float64 for this
    reason, and the compiled weight pass was exact."""
    from depthlab.probes import accel

    monkeypatch.setattr(accel, "kernels", lambda: None)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 256), nn.Tanh(), nn.Linear(256, 10))
    with torch.no_grad():
        model[0].weight.copy_(0.05 + 1e-4 * torch.randn(256, 64))
    x, y = torch.randn(64, 64), torch.randint(0, 10, (64,))
    df = dlt.probe(model, x, y, _ce, percentiles=())
    got = df[(df.layer == 1) & (df.quantity == "weight_std")].value.item()
    assert got == pytest.approx(_np(model[0].weight).std(), rel=1e-6)
