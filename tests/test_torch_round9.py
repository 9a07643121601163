"""depthlab.torch on model families and loops the other torch tests do not cover (round 9):
nn.RNN/nn.GRU in both layouts, a TransformerDecoder reading an encoder memory, Embedding with
EmbeddingBag (every mode, per-sample weights, sparse gradients), grouped/dilated/strided convs
in channels_last, Sequentials nested in a ModuleList, parametrized layers
(``torch.nn.utils.parametrizations``), a registered 2-D buffer, frozen parameters with
optimizer param groups, a loss with ``reduction='sum'`` and the user's own module hooks; each
against autograd (the reference of tests/test_torch_probe.py, or autograd written here), and a
Watch's rows against a probe of the same batch with the training left bit-identical.
Regressions: ``predict`` of a model whose forward hook rescales a layer's output (every row
3.0x the prediction, silently); and, waiting for patches to the lead's files, a user's hook
registered after the Watch (step 0 measured before it, step 2 after it: pre_std 0.207 then
0.415) and a recorded step on an empty batch (an IndexError inside the user's forward)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_torch_probe_round5 import CE, _r, check
from torch import nn
from torch.nn.utils import parametrizations

import depthlab.torch as dlt
from depthlab.probes.stats import PERCENTILES

# ---------------------------------------------------------------------------------------------
# probe against autograd (coverage: these passed)


class _Recurrent(nn.Module):
    def __init__(self, cls, **kw):
        super().__init__()
        self.rnn = cls(4, 6, **kw)
        self.head = nn.Linear(6 * (2 if self.rnn.bidirectional else 1), 3)

    def forward(self, x):
        o = self.rnn(x)[0]
        return self.head(o[:, -1] if self.rnn.batch_first else o[-1])


@pytest.mark.parametrize("cls, kw", [
    (nn.RNN, dict(num_layers=2, bidirectional=True, batch_first=True)),
    (nn.RNN, dict(num_layers=3, nonlinearity="relu")),
    (nn.GRU, dict(num_layers=2, bidirectional=True, batch_first=True)),
    (nn.GRU, dict(num_layers=1)),
], ids=["rnn-bidir-batch-first", "rnn-relu-3-layers", "gru-bidir-batch-first", "gru-time-first"])
def test_rnn_and_gru_in_both_layouts(cls, kw):
    torch.manual_seed(1)
    x = _r(3, 5, 4) if kw.get("batch_first") else _r(5, 3, 4)
    check(_Recurrent(cls, **kw), x, ["rnn", "head"], y=torch.randint(0, 3, (3,)))


class _Decoder(nn.Module):
    """Token embedding, a projected memory, a causal 2-layer TransformerDecoder, a head."""

    def __init__(self, norm_first):
        super().__init__()
        self.emb = nn.Embedding(11, 8)
        layer = nn.TransformerDecoderLayer(8, 2, 16, dropout=0.0, batch_first=True,
                                           norm_first=norm_first)
        self.dec = nn.TransformerDecoder(layer, 2)
        self.mem, self.head = nn.Linear(4, 8), nn.Linear(8, 3)

    def forward(self, ids, memory):
        t = self.emb(ids)
        mask = nn.Transformer.generate_square_subsequent_mask(ids.shape[1], dtype=t.dtype)
        return self.head(self.dec(t, self.mem(memory), tgt_mask=mask)[:, -1])


def _dec_layers(i):
    p = f"dec.layers.{i}."
    return [p + "self_attn", p + "self_attn.out_proj", p + "multihead_attn",
            p + "multihead_attn.out_proj", p + "linear1", p + "linear2"]


@pytest.mark.parametrize("norm_first", [False, True])
def test_transformer_decoder_with_a_memory(norm_first):
    """Every projection (self- and cross-attention), both decoder layers as residual blocks;
    pre-norm: the first decoder layer's norm1 reads the embedding, its follower."""
    torch.manual_seed(2)
    ids, memory = torch.randint(0, 11, (3, 5)), _r(3, 4, 4)
    model = _Decoder(norm_first)
    df = check(model, (ids, memory),
               ["emb", "mem", *_dec_layers(0), *_dec_layers(1), "head"],
               {"emb": ("dec.layers.0.norm1",)} if norm_first else {},
               blocks=["dec.layers.0", "dec.layers.1"], y=torch.randint(0, 3, (3,)),
               own_follower_rows=[7, 13])
    # linear1's F.relu (round 22: functional activations): the ReLU's rows of linear1's output
    outs = {}
    hooks = [model.dec.layers[i].linear1.register_forward_hook(
        lambda m, a, o, i=i: outs.__setitem__(i, o.detach())) for i in range(2)]
    with torch.no_grad():
        model(ids, memory)
    for h in hooks:
        h.remove()
    for i, layer in ((0, 7), (1, 13)):
        s = outs[i]
        a = torch.relu(s)
        rows = df[df.layer == layer].set_index("quantity").value
        assert rows["act_mean"] == pytest.approx(a.mean().item(), rel=1e-10, abs=1e-14)
        assert rows["act_std"] == pytest.approx(a.std(unbiased=False).item(), rel=1e-10)
        assert rows["inactive_frac"] == pytest.approx((s <= 0).double().mean().item())
        dead = (s <= 0).reshape(-1, s.shape[-1]).all(0).double().mean().item()
        assert rows["dead_frac"] == pytest.approx(dead)


class _Bag(nn.Module):
    def __init__(self, mode):
        super().__init__()
        self.bag, self.act, self.h = nn.EmbeddingBag(20, 6, mode=mode), nn.Tanh(), \
            nn.Linear(6, 3)

    def forward(self, ids, offsets, weights=None):
        return self.h(self.act(self.bag(ids, offsets, per_sample_weights=weights)))


class _EmbedAndBag(nn.Module):
    def __init__(self, sparse=False):
        super().__init__()
        self.e = nn.Embedding(30, 8, sparse=sparse)
        self.bag = nn.EmbeddingBag(30, 8, mode="sum", sparse=sparse)
        self.act, self.h = nn.Tanh(), nn.Linear(8, 3)

    def forward(self, ids):
        return self.h(self.act(self.e(ids).mean(1) + self.bag(ids)))


@pytest.mark.parametrize("mode", ["mean", "sum", "max", "sum-weighted"])
def test_embedding_bag_modes_with_offsets_and_an_empty_bag(mode):
    torch.manual_seed(3)
    ids, offsets = torch.randint(0, 20, (10,)), torch.tensor([0, 3, 3, 7])  # bag 1 is empty
    x = (ids, offsets, _r(10)) if mode == "sum-weighted" else (ids, offsets)
    check(_Bag(mode.split("-")[0]), x, ["bag", "h"], {"bag": ("act",)},
          y=torch.randint(0, 3, (4,)))


def test_embedding_and_embedding_bag_on_the_same_ids():
    torch.manual_seed(4)
    check(_EmbedAndBag(), torch.randint(0, 30, (4, 5)), ["e", "bag", "h"])


class _Stages(nn.Module):
    """Residual stages, each a Sequential with a nested Sequential, held in a ModuleList; a
    registered 2-D buffer (a fixed projection: not a layer)."""

    def __init__(self):
        super().__init__()
        self.stages = nn.ModuleList([
            nn.Sequential(nn.Linear(6, 6), nn.GELU(),
                          nn.Sequential(nn.Linear(6, 6), nn.LayerNorm(6), nn.SiLU()))
            for _ in range(2)])
        self.register_buffer("proj", torch.randn(6, 6))
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        for stage in self.stages:
            x = x + stage(x)
        return self.head(x @ self.proj)


def test_sequentials_nested_in_a_module_list_and_a_2d_buffer():
    torch.manual_seed(5)
    model = _Stages()
    assert [i.name for i in dlt.discover(model.double(), _r(2, 6))] == [
        "stages.0.0", "stages.0.2.0", "stages.1.0", "stages.1.2.0", "head"]
    check(model, _r(5, 6), ["stages.0.0", "stages.0.2.0", "stages.1.0", "stages.1.2.0", "head"],
          {"stages.0.0": ("stages.0.1",), "stages.1.0": ("stages.1.1",),
           "stages.0.2.0": ("stages.0.2.1", "stages.0.2.2"),
           "stages.1.2.0": ("stages.1.2.1", "stages.1.2.2")}, blocks=("stages.1",))
    # (the adds are the parent's, x = x + stage(x): stages.1 is a residual block whose sum is
    # in its caller, its row dL/d(sum) = dL/d(stage output); stages.0 reads the raw data, which
    # has no autograd node to tell its sum from one with any other constant: no row)


def _grouped_convs():
    return nn.Sequential(nn.Conv2d(4, 8, 3, groups=2, dilation=2, padding=2), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, stride=2, groups=8), nn.BatchNorm2d(8), nn.Tanh(),
                         nn.Flatten(), nn.Linear(8 * 3 * 3, 3))


@pytest.mark.parametrize("channels_last", [False, True])
def test_grouped_dilated_strided_convs(channels_last):
    torch.manual_seed(6)
    model, x = _grouped_convs().double(), _r(3, 4, 8, 8)
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), \
            x.to(memory_format=torch.channels_last)
    check(model, x, ["0", "2", "6"], {"0": ("1",), "2": ("3", "4")}, axis={"0": 1, "2": 1})


@pytest.mark.parametrize("kind", ["weight_norm", "spectral_norm", "orthogonal"])
def test_parametrized_layers_against_autograd(kind):
    """A parametrized layer's output and gradient rows are of the weight it computes; its
    weight rows are of the trainable original (the largest: weight norm's direction), as
    depthlab.torch.layers.own_weights documents; here computed with autograd."""
    torch.manual_seed(7)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 8), nn.ReLU(),
                          nn.Linear(8, 3)).double()
    getattr(parametrizations, kind)(model[2])
    x, y = _r(5, 6), torch.randint(0, 3, (5,))
    before = copy.deepcopy(model.state_dict())
    df = dlt.probe(model, x, y, CE, percentiles=())
    for k, v in model.state_dict().items():  # spectral_norm's power iteration buffers too
        assert torch.equal(v, before[k]), k
    original = max(model[2].parametrizations.weight.parameters(), key=lambda p: p.numel())
    outs = {}
    hooks = [m.register_forward_hook(lambda m, a, o, i=i: outs.__setitem__(i, o))
             for i, m in enumerate(model)]
    loss = CE(model(x), y)
    for h in hooks:
        h.remove()
    g_orig, g_out, g_act = torch.autograd.grad(loss, [original, outs[2], outs[3]])
    row = df[df.layer == 2].set_index("quantity").value
    s, a = outs[2].detach(), outs[3].detach()
    want = {"pre_mean": s.mean(), "pre_std": s.std(unbiased=False),
            "grad_pre_std": g_out.std(unbiased=False), "grad_pre_absmean": g_out.abs().mean(),
            "weight_std": original.detach().std(unbiased=False),
            "weight_grad_std": g_orig.std(unbiased=False),
            "weight_grad_absmean": g_orig.abs().mean(),
            "act_mean": a.mean(), "act_std": a.std(unbiased=False),
            "inactive_frac": (s <= 0).double().mean(),
            "dead_frac": (~(s > 0).any(0)).double().mean()}
    assert set(row.index) == set(want)
    for q, v in want.items():
        assert row[q] == pytest.approx(float(v), rel=1e-9, abs=1e-15), q
    assert g_act is not None


# ---------------------------------------------------------------------------------------------
# Watch in the user's loop: rows equal a probe of the same batch, training bit-identical


def _watch_equals_probe(make, batch, y, loss_fn=CE, every=2, steps=5):
    torch.manual_seed(0)
    model = make()
    ref = copy.deepcopy(model)
    opts = [torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9) for m in (model, ref)]
    watch = dlt.Watch(model, every=every, percentiles=PERCENTILES, theory=False)
    probes, losses = {}, ([], [])
    for step in range(steps):
        x = batch(step)
        if step % every == 0:
            probes[step] = dlt.probe(copy.deepcopy(ref), x, y, loss_fn, percentiles=PERCENTILES)
        for m, opt, seen in zip((model, ref), opts, losses):
            opt.zero_grad()
            loss = loss_fn(m(*x) if isinstance(x, tuple) else m(x), y)
            loss.backward()
            if m is model:
                watch.step(loss)
            opt.step()
            seen.append(loss.item())
    watch.close()
    assert losses[0] == losses[1]
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), ref.parameters()))
    frame = watch.frame()
    for step, df in probes.items():
        got = {(r.module, r.quantity): r.value
               for r in frame[(frame.step == step) & (frame.quantity != "update_ratio")]
               .itertuples()}
        want = {(r.module, r.quantity): r.value for r in df.itertuples() if r.quantity != "acc"}
        assert set(got) == set(want), sorted(set(got) ^ set(want))
        for k, v in want.items():
            assert got[k] == pytest.approx(v, rel=1e-9, abs=1e-12), (step, k)
    return watch


class _Parametrized(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = parametrizations.weight_norm(nn.Linear(6, 8))
        self.act = nn.ReLU(inplace=True)
        self.b = parametrizations.orthogonal(nn.Linear(8, 8))
        self.t, self.c = nn.Tanh(), nn.Linear(8, 3)

    def forward(self, x):
        return self.c(self.t(self.b(self.act(self.a(x)))))


def _watch_cases():
    torch.manual_seed(1)
    seq_t, seq_b, ids, memory, x6, x4 = (_r(5, 3, 4), _r(3, 5, 4), torch.randint(0, 11, (3, 5)),
                                         _r(3, 4, 4), _r(3, 6), _r(3, 4))
    img = _r(3, 4, 8, 8).to(memory_format=torch.channels_last)
    return {
        "rnn-time-first": (lambda: _Recurrent(nn.RNN, num_layers=2, bidirectional=True)
                           .double(), lambda s: seq_t + 0.1 * s, CE),
        "gru-batch-first": (lambda: _Recurrent(nn.GRU, num_layers=2, batch_first=True)
                            .double(), lambda s: seq_b + 0.1 * s, CE),
        "decoder-pre-norm": (lambda: _Decoder(True).double(), lambda s: (ids, memory), CE),
        "parametrized": (lambda: _Parametrized().double(), lambda s: x6 * (1 + s), CE),
        "sum-loss": (lambda: nn.Sequential(nn.Linear(4, 8), nn.SiLU(), nn.Linear(8, 3))
                     .double(), lambda s: x4, nn.CrossEntropyLoss(reduction="sum")),
        "grouped-convs-channels-last": (
            lambda: _grouped_convs().double().to(memory_format=torch.channels_last),
            lambda s: img, CE),
    }


@pytest.mark.parametrize("name", list(_watch_cases()))
def test_watch_rows_equal_a_probe_of_the_same_batch(name):
    make, batch, loss_fn = _watch_cases()[name]
    _watch_equals_probe(make, batch, torch.tensor([0, 2, 1]), loss_fn)


@pytest.mark.parametrize("sparse", [False, True])
def test_sparse_embedding_gradients_in_a_watch(sparse):
    """``weight_grad_*`` of an Embedding/EmbeddingBag trained with SparseAdam read the sparse
    ``.grad`` as the dense gradient it stands for (repeated ids summed)."""
    torch.manual_seed(8)
    ids, y = torch.randint(0, 30, (6, 4)), torch.randint(0, 3, (6,))
    ids[:, 1] = ids[:, 0]  # every row repeats an id
    model = _EmbedAndBag(sparse).double()
    tables = [model.e.weight, model.bag.weight]
    opt = (torch.optim.SparseAdam if sparse else torch.optim.Adam)(tables, lr=0.1)
    head = torch.optim.SGD(model.h.parameters(), lr=0.1)
    watch = dlt.Watch(model, every=1, theory=False)
    ratios = []
    for _ in range(3):
        opt.zero_grad()
        head.zero_grad()
        loss = CE(model(ids), y)
        loss.backward()
        watch.step(loss)
        f = watch.frame()
        rows = f[f.step == f.step.max()].set_index(["module", "quantity"]).value
        for name, t, r in zip(("e", "bag"), tables, ratios[-1] if ratios else (None, None)):
            assert t.grad.is_sparse == sparse
            g = t.grad.to_dense()
            assert rows[(name, "weight_grad_std")] == pytest.approx(
                g.std(unbiased=False).item(), rel=1e-9)
            assert rows[(name, "weight_grad_absmean")] == pytest.approx(g.abs().mean().item(),
                                                                        rel=1e-9)
            if r is not None:  # ||W_n - W_{n-1}|| / ||W_{n-1}|| of the last update
                assert rows[(name, "update_ratio")] == pytest.approx(r, rel=1e-9)
        prev = [t.detach().clone() for t in tables]
        opt.step()
        head.step()
        ratios.append([((t.detach() - p).norm() / p.norm()).item()
                       for t, p in zip(tables, prev)])
    watch.close()


def test_frozen_parameters_and_param_groups():
    """A frozen first layer (no ``weight_grad_*`` rows, update ratio 0), a group with
    ``lr=0`` (update ratio 0, gradient rows present) and a group with momentum: every row of
    the trained layers equals autograd; the update ratio is ``||W_n - W_{n-1}|| / ||W_{n-1}||``
    from the weights themselves."""
    torch.manual_seed(9)
    model = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 16), nn.ReLU(),
                          nn.Linear(16, 3)).double()
    model[0].requires_grad_(False)
    opt = torch.optim.SGD([{"params": model[2].parameters(), "lr": 0.0},
                           {"params": model[4].parameters(), "lr": 0.5, "momentum": 0.9}],
                          lr=0.1)
    x, y = _r(32, 5), torch.randint(0, 3, (32,))
    watch = dlt.Watch(model, every=1, theory=False)
    prev = None
    outs, grads = {}, {}

    def tap(m, a, o, i):
        outs[i] = o
        if o.requires_grad:  # dL/d output, as backward passes it (one backward per step)
            o.register_hook(lambda g: grads.__setitem__(i, g))

    hooks = [model[i].register_forward_hook(lambda m, a, o, i=i: tap(m, a, o, i))
             for i in (0, 2, 4)]
    for step in range(3):
        opt.zero_grad()
        loss = CE(model(x), y)
        loss.backward()
        g2, g4 = grads[2], grads[4]
        watch.step(loss)
        f = watch.frame()
        rows = f[f.step == step].set_index(["module", "quantity"]).value
        assert ("0", "weight_grad_std") not in rows and ("0", "grad_pre_std") not in rows
        assert rows[("0", "pre_std")] == pytest.approx(outs[0].std(unbiased=False).item(),
                                                       rel=1e-9)
        for name, g, w in (("2", g2, model[2].weight), ("4", g4, model[4].weight)):
            assert rows[(name, "grad_pre_std")] == pytest.approx(
                g.std(unbiased=False).item(), rel=1e-9)
            assert rows[(name, "weight_grad_std")] == pytest.approx(
                w.grad.std(unbiased=False).item(), rel=1e-9)
        now = [model[i].weight.detach().clone() for i in (0, 2, 4)]
        if prev is not None:
            for name, a, b in zip(("0", "2", "4"), prev, now):
                assert rows[(name, "update_ratio")] == pytest.approx(
                    ((b - a).norm() / a.norm()).item(), rel=1e-9, abs=1e-300)
            assert rows[("0", "update_ratio")] == rows[("2", "update_ratio")] == 0.0
            assert rows[("4", "update_ratio")] > 0
        prev = now
        opt.step()
    watch.close()
    for h in hooks:
        h.remove()


def _user_hooks(model, log):
    """Hooks of the kinds a user or a library attaches (they only read)."""
    return [model[0].register_forward_pre_hook(lambda m, a: log.append("pre")),
            model[0].register_forward_hook(lambda m, a, o: log.append("post")),
            model[2].register_forward_hook(lambda m, a, kw, o: log.append("kw"),
                                           with_kwargs=True),
            model[1].register_forward_hook(lambda m, a, o: log.append("act"), prepend=True),
            model[2].register_full_backward_hook(lambda m, gi, go: log.append("back")),
            model.register_forward_hook(lambda m, a, o: log.append("model"))]


def test_the_users_hooks_coexist_and_stay_after_close():
    """Hooks registered before and while the Watch is on run as often as without it, are
    still there (the same functions, in the same order) after ``close()``, and the rows equal
    a probe of the same batch; removing one of the user's handles mid-run removes only it."""
    torch.manual_seed(10)
    x, y = _r(16, 5), torch.randint(0, 3, (16,))

    def run(watched):
        torch.manual_seed(11)
        model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double()
        log = []
        before = _user_hooks(model, log)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        watch = dlt.Watch(model, every=2, theory=False) if watched else None
        _user_hooks(model, log)  # and more while it is on
        probes = []
        for step in range(5):
            if step == 3:
                before[1].remove()
            if watched and step % 2 == 0:  # the same weights without the user's hooks
                snapshot = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double()
                snapshot.load_state_dict(model.state_dict())
                probes.append(dlt.probe(snapshot, x, y, CE, percentiles=()))
            opt.zero_grad()
            loss = CE(model(x), y)
            loss.backward()
            if watched:
                watch.step(loss)
            opt.step()
        if watched:
            watch.close()
        hooks = [(k, list(getattr(m, k).values())) for m in model.modules()
                 for k in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks")]
        return model, log, hooks, watch, probes

    plain, log0, hooks0, _, _ = run(False)
    model, log1, hooks1, watch, probes = run(True)
    assert log1 == log0 and len(log0) > 40
    assert [(k, len(v)) for k, v in hooks1] == [(k, len(v)) for k, v in hooks0]
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), plain.parameters()))
    frame = watch.frame()
    for i, df in enumerate(probes):
        got = frame[(frame.step == 2 * i) & (frame.quantity != "update_ratio")]
        got = dict(zip(zip(got.module, got.quantity), got.value))
        want = {(r.module, r.quantity): r.value for r in df.itertuples() if r.quantity != "acc"}
        assert set(got) == set(want)
        for k, v in want.items():
            assert got[k] == pytest.approx(v, rel=1e-9), (2 * i, k)


# ---------------------------------------------------------------------------------------------
# regressions waiting for the lead's patches (hooks.py, accumulators.py)


def test_a_users_hook_added_after_the_watch_is_measured_alike_at_every_record():
    """A forward hook that doubles a layer's output and a pre-hook that halves its input,
    registered after ``Watch(model)`` (which arms the hooks for step 0). depthlab's hooks ran
    before the user's at step 0 and after them from the next arm on: layer 2's pre_std 0.207
    at step 0 (the output before the doubling), 0.415 at step 2 (after it), its grad_pre_std
    0.0049 then 0.0025. Now every record measures what the layer hands on (the user's hooks
    applied), as a probe does; here against hooks written in this test."""
    torch.manual_seed(12)
    model = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 16), nn.ReLU(),
                          nn.Linear(16, 3)).double()
    x, y = _r(32, 5), torch.randint(0, 3, (32,))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    watch = dlt.Watch(model, every=2, theory=False)
    model[2].register_forward_pre_hook(lambda m, a: (a[0] * 0.5,))
    model[2].register_forward_hook(lambda m, a, o: o * 2)
    seen = {}

    def tap(m, a, o):  # what the layer hands on, and dL/d of it in the step's backward
        seen["out"] = o
        o.register_hook(lambda g: seen.__setitem__("grad", g))

    model[2].register_forward_hook(tap)
    for step in range(3):
        opt.zero_grad()
        loss = CE(model(x), y)
        loss.backward()
        g = seen["grad"]
        watch.step(loss)
        if step % 2 == 0:
            f = watch.frame()
            rows = f[f.step == step].set_index(["module", "quantity"])
            out = seen["out"].detach()
            assert rows.value[("2", "pre_std")] == pytest.approx(
                out.std(unbiased=False).item(), rel=1e-9), step
            assert rows.value[("2", "grad_pre_std")] == pytest.approx(
                g.std(unbiased=False).item(), rel=1e-9), step
        opt.step()
    watch.close()


@pytest.mark.parametrize("kernels", ["numba", "numpy"])
def test_a_recorded_step_on_an_empty_batch(monkeypatch, kernels):
    """A data loader's last batch can be empty (a filtered or bucketed data set). The loop
    without a Watch trains through it (loss NaN for a mean, 0 for a sum); with one, the
    recorded step raised ``IndexError: amax(): Expected reduction dim 0 to have non-zero
    size`` from the Tanh's pre-hook inside the user's forward. Now that step records its loss
    and the weights' rows (``.grad`` as left by the backward) and no layer rows; the training
    stays bit-identical and the next steps are measured as usual."""
    if kernels == "numpy":
        monkeypatch.setenv("DEPTHLAB_PROBE_KERNELS", "numpy")

    def make():
        torch.manual_seed(13)
        return nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 16), nn.ReLU(),
                             nn.Linear(16, 3)).double()

    x, y = _r(8, 5), torch.randint(0, 3, (8,))
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    runs = []
    for watched in (False, True):
        model = make()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        watch = dlt.Watch(model, every=1, percentiles=(50,), theory=False) if watched else None
        losses = []
        for step in range(3):
            n = 0 if step == 1 else 8
            opt.zero_grad()
            loss = loss_fn(model(x[:n]), y[:n])
            loss.backward()
            if watched:
                watch.step(loss)
            losses.append(loss.item())
            opt.step()
        runs.append((model, losses, watch))
    (plain, l0, _), (model, l1, watch) = runs
    watch.close()
    assert l1 == l0 and l1[1] == 0.0
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), plain.parameters()))
    f = watch.frame()
    empty = f[f.step == 1]
    assert set(empty.quantity) == {"loss", "weight_std", "weight_grad_std",
                                   "weight_grad_absmean", "update_ratio"}
    assert (empty.query("quantity == 'weight_grad_std'").value == 0).all()
    assert set(f[f.step == 2].quantity) == set(f[f.step == 0].quantity) | {"update_ratio"}


def test_the_theory_of_a_watch_whose_first_recorded_batch_is_empty():
    """The theory is computed at the first recorded step from its input; an empty first batch
    (after the fix above, recorded) left ``theory`` None for the whole run with the note
    'x is an empty batch'. Now the next recorded batch (step 2) is taken."""
    torch.manual_seed(16)
    model = nn.Sequential(nn.Linear(32, 64), nn.Tanh(), nn.Linear(64, 10))
    x, y = torch.randn(48, 32), torch.randint(0, 10, (48,))
    with dlt.Watch(model, every=2) as watch:
        for step in range(3):
            n = 0 if step == 0 else 48
            loss = nn.CrossEntropyLoss(reduction="sum")(model(x[:n]), y[:n])
            loss.backward()
            watch.step(loss)
    assert watch.theory is not None, watch.theory_note
    assert set(watch.theory.layer) == {1, 2} and "empty" not in watch.theory_note


# ---------------------------------------------------------------------------------------------
# predict: a user's forward hook that changes an output


def _tanh_chain():
    torch.manual_seed(14)
    return nn.Sequential(nn.Linear(32, 128), nn.Tanh(), nn.Linear(128, 128), nn.Tanh(),
                         nn.Linear(128, 10))


@pytest.mark.parametrize("where, hook, fragment", [
    ("2", lambda m, a, o: o * 3, r"'2' \(Linear\)"),
    ("2", lambda m, a, o: o.mul_(3), r"'2' \(Linear\)"),
    ("1", lambda m, a, o: o * 0.5, r"'1' \(Tanh\)"),
], ids=["layer-returns-3x", "layer-in-place-3x", "activation-returns-half"])
def test_predict_refuses_a_forward_hook_that_changes_an_output(where, hook, fragment):
    """Regression: a user's forward hook returning ``3 * out`` on a layer was measured but not
    seen by the theory: every row of the layers from there on 3.0x the prediction (pre_std,
    grad_pre_std; act_std 0.72x), silently. Now such a hook (a new tensor, or an in-place
    change) is a ValueError naming the module."""
    model = _tanh_chain()
    model[int(where)].register_forward_hook(hook)
    with pytest.raises(ValueError, match="forward hook on " + fragment):
        dlt.predict(model, torch.randn(64, 32), torch.randint(0, 10, (64,)), CE)


def test_predict_keeps_hooks_that_only_read():
    """Hooks that return None and change nothing (logging, feature capture) are accepted and
    leave the prediction exactly as without them."""
    x, y = torch.randn(128, 32), torch.randint(0, 10, (128,))
    plain = dlt.predict(_tanh_chain(), x, y, CE)
    reading, seen = _tanh_chain(), []
    for m in reading:
        m.register_forward_hook(lambda m, a, o: seen.append(o.shape))
    got = dlt.predict(reading, x, y, CE)
    assert seen and got.equals(plain)
    r = (plain.value / plain.predicted).to_numpy()
    assert np.abs(r - 1).max() < 0.15


def test_a_watch_notes_why_a_hooked_model_has_no_theory():
    model = _tanh_chain()
    model[2].register_forward_hook(lambda m, a, o: o * 3)
    with dlt.Watch(model, every=1) as watch:
        loss = CE(model(torch.randn(32, 32)), torch.randint(0, 10, (32,)))
        loss.backward()
        watch.step(loss)
    assert watch.theory is None and "forward hook on '2' (Linear)" in watch.theory_note


# ---------------------------------------------------------------------------------------------
# doctor on a model with unusual parts


class _Odd(nn.Module):
    """Sigmoid stages in a ModuleList of Sequentials with N(0, 1) weights behind a frozen,
    weight-normed stem; a registered buffer scales the input; the forward returns a dict."""

    def __init__(self):
        super().__init__()
        self.register_buffer("scale", torch.full((6,), 0.5))
        self.stem = parametrizations.weight_norm(nn.Linear(6, 12))
        self.stem.requires_grad_(False)
        self.stages = nn.ModuleList([nn.Sequential(nn.Linear(12, 12), nn.Sigmoid())
                                     for _ in range(5)])
        for s in self.stages:  # N(0, 100): 1200x Glorot's, beyond the sigmoid's critical 103x
            nn.init.normal_(s[0].weight, 0.0, 10.0)
        self.head = nn.Linear(12, 3)

    def forward(self, x):
        h = torch.tanh(self.stem(x * self.scale))
        for s in self.stages:
            h = s(h)
        return {"logits": self.head(h)}


def test_doctor_on_a_model_with_unusual_parts():
    torch.manual_seed(15)
    x = torch.randn(192, 6)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    d = dlt.doctor(_Odd, (x, y), loss_fn=lambda o, t: F.cross_entropy(o["logits"], t),
                   steps=20, batch_size=32, probe_every=10, verify=False)
    kinds = {f.kind for f in d.findings}
    assert {"init_mismatch", "mean_shift"} <= kinds, d.findings
    # the frozen stem (layer 1) is neither judged for its init nor re-initialized
    assert all(1 not in f.layers for f in d.findings if f.kind == "init_mismatch")
    layers = d.probes.query("quantity == 'grad_pre_std' and step == 0")
    assert set(layers.layer) == {2, 3, 4, 5, 6, 7}
