"""depthlab.torch on models, data and inputs beyond the other torch tests: GRU/RNN variants,
Conv1d/Conv3d, ConvTranspose decoders, token ids into an Embedding, MultiheadAttention used
directly, TransformerDecoder/Transformer, tuple and dict outputs, shared and unused modules,
nested containers, frozen layers, bias-free layers, batch size 1, probability targets,
regression. Every reported value is compared with the test's own computation: each layer's
output captured by the test's forward hooks (all calls), NumPy statistics of it, and gradients
by ``torch.autograd.grad`` with respect to those captured outputs and the weights."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import depthlab.torch as dlt
from depthlab.experiments.store import Store
from depthlab.torch import hooks
from tests.helpers.torchref import as_numpy as _np
from tests.helpers.torchref import call as _call
from tests.helpers.torchref import first_tensor as _first

PCTS = (2, 15, 50, 85, 98)
D = torch.float64




def reference(model, x, y, loss_fn, layers, pcts=PCTS, weights_given=None) -> dict:
    """{(layer number, quantity): value} for ``loss``, ``pre_*``, ``grad_pre_*`` and
    ``weight_*``; ``layers``: the expected module names in execution order (``A.out_proj`` for
    the output of attention ``A``, ``A`` for its input projection: weight rows only);
    ``weights_given``: the expected weight tensors of some layers (name -> list)."""
    mods = dict(model.named_modules())
    seen: dict[str, list[torch.Tensor]] = {n: [] for n in layers}
    handles = []
    for name in layers:
        if isinstance(mods[name], nn.MultiheadAttention):
            continue  # the input projection's output is internal to the attention
        owner = name[: -len("out_proj")].rstrip(".") if name.endswith("out_proj") else name

        def hook(module, args, out, name=name):
            seen[name].append(_first(out))
        handles.append(mods[owner].register_forward_hook(hook))
    out = _call(model, x)
    for h in handles:
        h.remove()
    loss = loss_fn(out, y)
    exp = {(0, "loss"): float(loss.detach())}
    outs = [(n, t) for n in layers for t in seen[n] if t.requires_grad]
    weights = {n: ([mods[n].weight] if n.endswith("out_proj") else
                   [p for p in mods[n].parameters(recurse=False) if p.dim() >= 2])
               for n in layers}
    weights.update(weights_given or {})
    trainable = list({id(p): p for n in layers for p in weights[n] if p.requires_grad}.values())
    got = torch.autograd.grad(loss, [t for _, t in outs] + trainable, allow_unused=True)
    g_out, g_w = got[: len(outs)], dict(zip(map(id, trainable), got[len(outs):]))
    for i, name in enumerate(layers, start=1):
        w = np.concatenate([_np(p).ravel() for p in weights[name]])
        exp[(i, "weight_std")] = w.std()
        gw = [g_w.get(id(p)) for p in weights[name]]
        gw = [g for g in gw if g is not None]
        if gw:
            v = np.concatenate([_np(g).ravel() for g in gw])
            exp[(i, "weight_grad_std")] = v.std()
            exp[(i, "weight_grad_absmean")] = np.abs(v).mean()
        if seen[name]:
            s = np.concatenate([_np(t).ravel() for t in seen[name]])
            exp[(i, "pre_mean")] = s.mean()
            exp[(i, "pre_std")] = s.std()
            for q in pcts:
                exp[(i, f"pre_p{q}")] = np.percentile(s, q)
        gs = [g for (n, _), g in zip(outs, g_out) if n == name and g is not None]
        if gs:
            v = np.concatenate([_np(g).ravel() for g in gs])
            exp[(i, "grad_pre_std")] = v.std()
            exp[(i, "grad_pre_absmean")] = np.abs(v).mean()
    return exp


_FOLLOWER = re.compile(r"^(act_|saturated_frac|inactive_frac|dead_frac|acc$|block_grad_std)")


def compare(df, exp: dict, layers, rtol=1e-9, atol=1e-12) -> None:
    """Every row of ``df`` that :func:`reference` computes equals it, and none is missing;
    module names follow the expected execution order."""
    got = {}
    for row in df.itertuples():
        if row.layer > 0 and row.quantity != "block_grad_std":
            assert row.module == layers[row.layer - 1], (row.layer, row.module)
        if not _FOLLOWER.match(row.quantity):
            got[(row.layer, row.quantity)] = row.value
    assert set(got) == set(exp), sorted(map(str, set(got) ^ set(exp)))
    for key, want in exp.items():
        assert got[key] == pytest.approx(want, rel=rtol, abs=atol), key


# ---------------------------------------------------------------------------------------------
# models


class _Recurrent(nn.Module):
    def __init__(self, cls, batch_first, **kw):
        super().__init__()
        self.rnn = cls(4, 5, batch_first=batch_first, **kw)
        self.batch_first = batch_first
        self.head = nn.Linear(5 * (2 if kw.get("bidirectional") else 1), 3)

    def forward(self, x):
        out = self.rnn(x)[0]
        return self.head(out[:, -1] if self.batch_first else out[-1])


class _Text(nn.Module):
    def __init__(self, sparse=False):
        super().__init__()
        self.emb = nn.Embedding(20, 8, sparse=sparse)
        self.fc = nn.Linear(8, 3)

    def forward(self, tokens):
        return self.fc(self.emb(tokens).mean(1))


class _Attention(nn.Module):
    def __init__(self, batch_first):
        super().__init__()
        self.batch_first = batch_first
        self.attn = nn.MultiheadAttention(8, 2, batch_first=batch_first)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.attn(x, x, x)[0].mean(1 if self.batch_first else 0))


class _TwoHeads(nn.Module):
    """F.relu in forward (no activation module), a tuple or dict output, a residual add at the
    top level and a layer that never runs."""

    def __init__(self, as_dict):
        super().__init__()
        self.as_dict = as_dict
        self.a = nn.Linear(6, 8)
        self.res = nn.Linear(8, 8)
        self.b = nn.Linear(8, 3)
        self.c = nn.Linear(8, 1)
        self.unused = nn.Linear(8, 8)

    def forward(self, x):
        h = F.relu(self.a(x))
        h = h + self.res(h)
        b, c = self.b(h), self.c(h)
        return {"logits": b, "aux": c} if self.as_dict else (b, c)


class _Shared(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(6, 8)
        self.mid = nn.Linear(8, 8)
        self.out = nn.Linear(8, 3)

    def forward(self, x):
        h = torch.tanh(self.inp(x))
        h = torch.tanh(self.mid(h))
        return self.out(torch.tanh(self.mid(h)))


class _Nested(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList(
            [nn.Sequential(nn.Linear(6, 6), nn.Sequential(nn.Linear(6, 6), nn.GELU()))
             for _ in range(2)])
        self.heads = nn.ModuleDict({"z": nn.Linear(6, 1), "a": nn.Linear(6, 3)})

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return self.heads["a"](x) + self.heads["z"](x)


class _Decoder(nn.Module):
    def __init__(self):
        super().__init__()
        layer = nn.TransformerDecoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
        self.dec = nn.TransformerDecoder(layer, 1)
        self.head = nn.Linear(8, 3)

    def forward(self, tgt, memory):
        return self.head(self.dec(tgt, memory).mean(1))


class _Transformer(nn.Module):
    def __init__(self):
        super().__init__()
        self.t = nn.Transformer(8, 2, 1, 1, 16, dropout=0.0)
        self.head = nn.Linear(8, 3)

    def forward(self, src, tgt):
        return self.head(self.t(src, tgt).mean(0))


def _attn_names(prefix: str, cross: bool = False) -> list[str]:
    names = [f"{prefix}.self_attn", f"{prefix}.self_attn.out_proj"]
    if cross:
        names += [f"{prefix}.multihead_attn", f"{prefix}.multihead_attn.out_proj"]
    return names + [f"{prefix}.linear1", f"{prefix}.linear2"]


def _ce(out, y):
    return F.cross_entropy(out, y)


def _two_heads_loss(out, y):
    b, c = (out["logits"], out["aux"]) if isinstance(out, dict) else out
    return F.cross_entropy(b, y) + c.pow(2).mean()


def _frozen():
    m = nn.Sequential(nn.Linear(6, 8, bias=False), nn.ReLU(), nn.Linear(8, 8, bias=False),
                      nn.Tanh(), nn.Linear(8, 3, bias=False))
    for layer in (m[0], m[4]):
        layer.weight.requires_grad_(False)
    return m


def _zoo():
    g = torch.Generator().manual_seed(0)

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=D)

    def labels(n):
        return torch.randint(0, 3, (n,), generator=g)

    cases = {}
    for cls, kw in ((nn.GRU, {}), (nn.RNN, {}), (nn.RNN, {"nonlinearity": "relu"}),
                    (nn.GRU, {"bidirectional": True, "num_layers": 2}),
                    (nn.RNN, {"bidirectional": True, "num_layers": 2})):
        for bf in (False, True):
            key = f"{cls.__name__}-{'-'.join(map(str, kw.values())) or 'plain'}-bf{int(bf)}"
            cases[key] = (lambda cls=cls, bf=bf, kw=kw: _Recurrent(cls, bf, **kw),
                          r(3, 5, 4) if bf else r(5, 3, 4), labels(3), _ce, ["rnn", "head"])
    cases.update({
        "conv1d": (lambda: nn.Sequential(nn.Conv1d(2, 4, 3, bias=False), nn.ReLU(),
                                         nn.Conv1d(4, 4, 3), nn.Flatten(), nn.Linear(16, 3)),
                   r(4, 2, 8), labels(4), _ce, ["0", "2", "4"]),
        "conv3d": (lambda: nn.Sequential(nn.Conv3d(2, 3, 2), nn.InstanceNorm3d(3), nn.Tanh(),
                                         nn.Flatten(), nn.Linear(81, 3)),
                   r(4, 2, 4, 4, 4), labels(4), _ce, ["0", "4"]),
        "conv-transpose-decoder": (
            lambda: nn.Sequential(nn.Linear(5, 16), nn.Unflatten(1, (4, 2, 2)),
                                  nn.ConvTranspose2d(4, 3, 2, stride=2), nn.GroupNorm(1, 3),
                                  nn.ReLU(), nn.ConvTranspose2d(3, 1, 3, padding=1)),
            r(4, 5), r(4, 1, 4, 4), nn.MSELoss(), ["0", "2", "5"]),
        "embedding-token-ids": (_Text, torch.randint(0, 20, (4, 7), generator=g), labels(4),
                                _ce, ["emb", "fc"]),
        "sparse-embedding": (lambda: _Text(sparse=True), torch.randint(0, 20, (4, 7), generator=g),
                             labels(4), _ce, ["emb", "fc"]),
        "attention-batch-first": (lambda: _Attention(True), r(3, 5, 8), labels(3), _ce,
                                  ["attn", "attn.out_proj", "head"]),
        "attention-seq-first": (lambda: _Attention(False), r(5, 3, 8), labels(3), _ce,
                                ["attn", "attn.out_proj", "head"]),
        "transformer-decoder": (_Decoder, (r(3, 4, 8), r(3, 5, 8)), labels(3), _ce,
                                [*_attn_names("dec.layers.0", cross=True), "head"]),
        "transformer": (_Transformer, (r(5, 3, 8), r(4, 3, 8)), labels(3), _ce,
                        [*_attn_names("t.encoder.layers.0"),
                         *_attn_names("t.decoder.layers.0", cross=True), "head"]),
        "tuple-output": (lambda: _TwoHeads(False), r(5, 6), labels(5), _two_heads_loss,
                         ["a", "res", "b", "c"]),
        "dict-output": (lambda: _TwoHeads(True), r(5, 6), labels(5), _two_heads_loss,
                        ["a", "res", "b", "c"]),
        "shared-module": (_Shared, r(5, 6), labels(5), _ce, ["inp", "mid", "out"]),
        "nested-containers": (_Nested, r(5, 6), labels(5), _ce,
                              ["blocks.0.0", "blocks.0.1.0", "blocks.1.0", "blocks.1.1.0",
                               "heads.a", "heads.z"]),
        "frozen-bias-free": (_frozen, r(5, 6), labels(5), _ce, ["0", "2", "4"]),
        "layernorm-silu": (lambda: nn.Sequential(nn.Linear(6, 8), nn.LayerNorm(8), nn.SiLU(),
                                                 nn.Linear(8, 3)),
                           r(5, 6), labels(5), _ce, ["0", "3"]),
        "batch-of-one": (lambda: nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)),
                         r(1, 6), labels(1), _ce, ["0", "2"]),
        "probability-targets": (lambda: nn.Sequential(nn.Linear(6, 8), nn.Tanh(),
                                                      nn.Linear(8, 3)),
                                r(5, 6), torch.softmax(r(5, 3), 1), _ce, ["0", "2"]),
        "dropout-train-mode": (lambda: nn.Sequential(nn.Linear(6, 8), nn.Dropout(0.5),
                                                     nn.ReLU(), nn.Linear(8, 3)),
                               r(6, 6), labels(6), _ce, ["0", "3"]),
    })
    return cases


ZOO = _zoo()


@pytest.mark.parametrize("name", list(ZOO))
def test_probe_against_own_hooks_and_autograd(name):
    make, x, y, loss_fn, layers = ZOO[name]
    torch.manual_seed(0)
    model = make().double()
    rng = torch.random.get_rng_state()
    df = dlt.probe(model, x, y, loss_fn)
    assert torch.equal(torch.random.get_rng_state(), rng)  # dropout draws undone
    assert all(p.grad is None for p in model.parameters())
    exp = reference(model, x, y, loss_fn, layers)  # the same dropout mask: same RNG state
    compare(df, exp, layers)
    assert [i.name for i in dlt.discover(model, *(x if isinstance(x, tuple) else (x,)))] == \
        [n for n in layers]


# ---------------------------------------------------------------------------------------------
# regressions


@pytest.mark.parametrize("kind", ["linear", "gru", "attention"])
def test_model_that_is_itself_a_layer_has_its_percentiles(kind):
    """A top-level nn.Linear / nn.GRU / nn.MultiheadAttention: the model's own hook closed the
    pass before the layer's hook ran, so its pre_pK rows were missing."""
    g = torch.Generator().manual_seed(1)
    if kind == "linear":
        model, x, layers = nn.Linear(4, 3), torch.randn(6, 4, generator=g, dtype=D), [""]
    elif kind == "gru":
        model, x, layers = nn.GRU(4, 5), torch.randn(5, 3, 4, generator=g, dtype=D), [""]
    else:
        model, q = nn.MultiheadAttention(8, 2), torch.randn(5, 3, 8, generator=g, dtype=D)
        x, layers = (q, q, q), ["", "out_proj"]
    model = model.double()

    def loss_fn(out, y):
        return _first(out).pow(2).mean()

    df = dlt.probe(model, x, None, loss_fn)
    compare(df, reference(model, x, None, loss_fn, layers), layers)
    with dlt.Watch(model, every=1, percentiles=PCTS) as watch:
        loss_fn(_call(model, x), None).backward()
        watch.step(loss_fn(_call(model, x), None))
    assert set(watch.frame().quantity) >= {f"pre_p{q}" for q in PCTS}


def test_dict_output_finds_residual_blocks_once(monkeypatch):
    """A model returning a dict: the pass must count as one with gradients, so the search for
    residual blocks (a walk of the autograd graph from each container) runs in the first
    recorded pass only, not again on every recorded step."""
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.f = nn.Linear(6, 6)

        def forward(self, x):
            return x + self.f(x)

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 6)
            self.body = nn.Sequential(Block(), nn.Tanh())  # a container that is no block
            self.b = nn.Linear(6, 3)

        def forward(self, x):
            return {"logits": self.b(self.body(self.a(x)))}

    calls = []
    real = hooks._residual_adds
    monkeypatch.setattr(hooks, "_residual_adds", lambda *a: calls.append(1) or real(*a))
    torch.manual_seed(0)
    model = Model().double()
    x, y = torch.randn(8, 4, dtype=D), torch.randint(0, 3, (8,))
    seen = []
    with dlt.Watch(model, every=2) as watch:
        for _ in range(6):
            model.zero_grad()
            loss = F.cross_entropy(model(x)["logits"], y)
            loss.backward()
            watch.step(loss)
            seen.append(len(calls))
    assert seen[0] > 0 and seen[-1] == seen[0], seen
    # block_grad_std against autograd on the block's output
    captured = []
    h = model.body[0].register_forward_hook(lambda m, a, o: captured.append(o))
    loss = F.cross_entropy(model(x)["logits"], y)
    h.remove()
    (g,) = torch.autograd.grad(loss, captured)
    df = watch.frame()
    last = df[(df.step == 4) & (df.quantity == "block_grad_std")]
    assert list(last.module) == ["body.0"]
    assert last.value.iloc[0] == pytest.approx(_np(g).std(), rel=1e-9)


def test_sparse_embedding_gradient_in_a_watch():
    """nn.Embedding(sparse=True) gives a sparse .grad: its statistics are those of the dense
    dL/dW (zeros of the rows not looked up included), not a crash in the norm."""
    tokens, y = torch.randint(0, 20, (6, 5)), torch.randint(0, 3, (6,))
    frames = []
    for sparse in (True, False):
        torch.manual_seed(0)
        model = _Text(sparse=sparse).double()
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        with dlt.Watch(model, every=2) as watch:
            for _ in range(5):
                opt.zero_grad()
                loss = F.cross_entropy(model(tokens), y)
                loss.backward()
                if sparse:
                    assert model.emb.weight.grad.is_sparse
                    dense = model.emb.weight.grad.to_dense()
                watch.step(loss)
                opt.step()
        frames.append(watch.frame())
    sparse_df, dense_df = frames
    assert list(sparse_df.quantity) == list(dense_df.quantity)
    np.testing.assert_allclose(sparse_df.value, dense_df.value, rtol=1e-9, atol=1e-15)
    last = sparse_df[(sparse_df.step == 4) & (sparse_df.layer == 1)].set_index("quantity").value
    assert last["weight_grad_std"] == pytest.approx(_np(dense).std(), rel=1e-9)
    assert last["weight_grad_absmean"] == pytest.approx(np.abs(_np(dense)).mean(), rel=1e-9)


class _SparseText(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(30, 8, sparse=True)
        self.fc = nn.Linear(8, 16)
        self.act = nn.Sigmoid()
        self.out = nn.Linear(16, 3)

    def forward(self, tokens):
        return self.out(self.act(self.fc(self.emb(tokens).mean(1))))


def test_doctor_on_sparse_gradients_refuses_adam_and_skips_cures_that_cannot_train():
    """Adam cannot take the sparse gradients of nn.Embedding(sparse=True): as the user's
    optimizer a clear ValueError before training; as a cure (SGD -> Adam) it is left out,
    instead of a RuntimeError from inside the verification run."""
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 30, (120, 5), generator=g)
    y = tokens[:, 0] % 3
    with pytest.raises(ValueError, match=r"optimizer 'adam' fails .*sparse gradients"):
        dlt.doctor(_SparseText, (tokens, y), optimizer=("adam", {"lr": 0.01}), steps=4,
                   batch_size=16)
    diag = dlt.doctor(_SparseText, (tokens, y), optimizer=("sgd", {"lr": 5.0}), steps=12,
                      batch_size=16, verify=True, max_cures=6)
    assert diag.findings and diag.verifications  # a learning rate this high is found
    tried = [v.prescription for v in diag.verifications]
    assert all(p.get("optimizer", "sgd") == "sgd" for p in tried), tried
    assert any("lr" in p for p in tried)


def test_cli_shapes_sequences_for_a_recurrent_first_layer(tmp_path):
    """``depthlab doctor --torch`` on a GRU model and a 1-D signal data set: rows become
    sequences ``(N, D / input_size, input_size)``, not flat rows that a GRU takes as one
    unbatched sequence (which broke the head, or silently trained on the batch as time)."""
    from depthlab.cli.torch_doctor import shape_inputs

    rows = np.arange(2 * 48, dtype=np.float32).reshape(2, 48)
    for size, want in ((8, (2, 6, 8)), (1, (2, 48, 1)), (48, (2, 1, 48)), (5, (2, 48))):
        model = _Recurrent(nn.GRU, True)
        model.rnn = nn.GRU(size, 5, batch_first=True)
        got = shape_inputs(rows, None, model)
        assert got.shape == want, (size, got.shape)
        if len(want) == 3:  # each example's values in order, one time step after another
            np.testing.assert_array_equal(got[1].reshape(-1), rows[1])
    model_file = tmp_path / "model.py"
    model_file.write_text(
        "from torch import nn\n\n\n"
        "class M(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.gru = nn.GRU(4, 8, batch_first=True)\n"
        "        self.head = nn.Linear(8, 10)\n\n"
        "    def forward(self, x):\n"
        "        return self.head(self.gru(x)[0][:, -1])\n\n\n"
        "def make():\n"
        "    return M()\n")
    from depthlab.cli import main

    code = main(["doctor", "--torch", f"{model_file}:make", "--data", "mnist1d", "--n", "200",
                 "--steps", "4", "--batch-size", "16", "--out", str(tmp_path / "runs")])
    assert code == 0


def test_parametrized_weights_are_the_layer_not_its_parametrization():
    """weight_norm / spectral_norm (torch.nn.utils.parametrize): the layer is the Linear, whose
    output is pre_* and whose follower gives act_*; its W is the trainable original (weight
    norm's direction v). The parametrization module computing the weight was taken for the
    layer (pre_* = the weight matrix, no activation rows). predict leaves the spectral norm's
    power-iteration buffers as found; the doctor's trace sees the same layers."""
    from torch.nn.utils.parametrizations import spectral_norm, weight_norm

    from depthlab.torch import prescriptions as rx

    torch.manual_seed(0)
    model = nn.Sequential(weight_norm(nn.Linear(6, 8)), nn.ReLU(),
                          spectral_norm(nn.Linear(8, 8)), nn.Tanh(), nn.Linear(8, 3)).double()
    x, y = torch.randn(7, 6, dtype=D), torch.randint(0, 3, (7,))
    layers = ["0", "2", "4"]
    df = dlt.probe(model, x, y, _ce)  # buffers restored: the reference's pass is the same
    given = {"0": [model[0].parametrizations.weight.original1],
             "2": [model[2].parametrizations.weight.original]}
    acts = {}
    for layer, act in (("0", model[1]), ("2", model[3])):
        act.register_forward_hook(lambda m, a, o, k=layer: acts.update({k: o.detach()}))
    exp = reference(model, x, y, _ce, layers, weights_given=given)
    compare(df, exp, layers)
    wide = df.pivot_table(index="module", columns="quantity", values="value")
    for name, a in acts.items():
        assert wide.loc[name, "act_std"] == pytest.approx(_np(a).std(), rel=1e-9)
    assert [t.name for t in rx.trace(model, x)] == layers
    before = [b.clone() for b in model.buffers()]
    dlt.predict(model, x, y, _ce)
    assert all(torch.equal(a, b) for a, b in zip(before, model.buffers()))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_parameters_give_float32_statistics(dtype):
    """A model converted with .half() / .to(bfloat16) (not autocast): the weight and weight
    gradient sums were taken in the parameters' dtype and rounded there (weight_grad_absmean
    0.046875 for 0.046883); every statistic is computed in float32 from the raw values."""
    make, x, y, _, layers = ZOO["conv1d"]
    torch.manual_seed(0)
    model = make().to(dtype)
    x = x.to(dtype)

    def loss_fn(out, target):
        return F.cross_entropy(out.float(), target)

    df = dlt.probe(model, x, y, loss_fn, percentiles=(10, 50))
    compare(df, reference(model, x, y, loss_fn, layers, pcts=(10, 50)), layers, rtol=2e-6,
            atol=1e-9)
    model.zero_grad()
    with dlt.Watch(model, every=1) as watch:
        loss = loss_fn(model(x), y)
        loss.backward()
        watch.step(loss)
    exp = reference(model, x, y, loss_fn, layers, pcts=())
    compare(watch.frame(), exp, layers, rtol=2e-6, atol=1e-9)


def test_empty_batch_is_refused():
    """A batch of 0 examples measured nothing (a table of weight rows and a NaN loss) in probe
    and failed inside the theory in predict; both say what is wrong."""
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3))
    x, y = torch.randn(0, 4), torch.randint(0, 3, (0,))
    for call in (lambda: dlt.probe(model, x, y, _ce), lambda: dlt.predict(model, x, y, _ce),
                 lambda: dlt.probe(model, (x,), y, _ce), lambda: dlt.probe(
                     _TwoHeads(True), {"x": torch.randn(0, 6)}, y, _two_heads_loss)):
        with pytest.raises(ValueError, match=r"empty batch .*\(0, [46]\)"):
            call()


def test_watch_step_takes_a_tensor_a_float_or_a_numpy_number():
    """The loss of each step as a 0-d tensor, a Python float or a NumPy scalar (e.g. a loss
    computed in NumPy): the same losses; a bool or a string is refused in one line."""
    model = nn.Sequential(nn.Linear(3, 2))
    x = torch.randn(4, 3)
    values = [torch.tensor(0.5), 0.25, np.float32(0.125), np.float64(2.0), 3]
    with dlt.Watch(model, every=2) as watch:
        for v in values:
            model(x).sum().backward()
            watch.step(v)
        for bad in (True, "0.5", np.bool_(True)):
            with pytest.raises(TypeError, match="loss must be a scalar tensor or a number"):
                watch.step(bad)
    assert watch.losses().loss.tolist() == [0.5, 0.25, 0.125, 2.0, 3.0]
    assert watch.losses().step.tolist() == [0, 1, 2, 3, 4]


class _DropGRU(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(4, 5, num_layers=2, bidirectional=True)
        self.drop = nn.Dropout(0.3)
        self.head = nn.Linear(10, 3)

    def forward(self, x):
        return self.head(self.drop(self.rnn(x)[0][-1]))


def _weights_of(model, layers):
    mods = dict(model.named_modules())
    return [[p for p in mods[n].parameters(recurse=False) if p.dim() >= 2] for n in layers]


def _train(make, x, y, loss_fn, layers, steps, every=None, out=None):
    """SGD with momentum; with ``every``: a Watch, and the reference rows of each recorded
    step (own hooks and autograd on the same batch and dropout draw, before the real
    forward) with the update ratio from the test's own copy of the previous weights."""
    torch.manual_seed(0)
    model = make().double()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    watch = None if every is None else dlt.Watch(model, every=every, out=out)
    refs, previous, losses = {}, None, []
    for step in range(steps):
        opt.zero_grad()
        if watch is not None and step % every == 0:
            rng = torch.random.get_rng_state()
            refs[step] = reference(model, x, y, loss_fn, layers, pcts=())
            torch.random.set_rng_state(rng)
            if previous is not None:
                for i, (ws, olds) in enumerate(zip(_weights_of(model, layers), previous), 1):
                    num = sum(float((w.detach() - o).pow(2).sum()) for w, o in zip(ws, olds))
                    den = sum(float(o.pow(2).sum()) for o in olds)
                    refs[step][(i, "update_ratio")] = (num / den) ** 0.5
        loss = loss_fn(_call(model, x), y)
        loss.backward()
        losses.append(float(loss))
        if watch is not None:
            watch.step(loss if step % 2 else float(loss))  # a tensor or a float
        previous = [[w.detach().clone() for w in ws] for ws in _weights_of(model, layers)]
        opt.step()
    if watch is not None:
        watch.close()
        watch.close()  # idempotent
    return model, losses, watch, refs


@pytest.mark.parametrize("every", [1, 7])
@pytest.mark.parametrize("name", ["dropout-gru", "dict-output", "transformer-decoder"])
def test_watch_is_exact_and_leaves_training_bit_identical(name, every, tmp_path):
    if name == "dropout-gru":
        g = torch.Generator().manual_seed(3)
        make, x, y, loss_fn, layers = (_DropGRU, torch.randn(5, 3, 4, generator=g, dtype=D),
                                       torch.tensor([0, 2, 1]), _ce, ["rnn", "head"])
    else:
        make, x, y, loss_fn, layers = ZOO[name]
    steps = 9
    plain, plain_losses, _, _ = _train(make, x, y, loss_fn, layers, steps)
    out = tmp_path / "runs"
    watched, losses, watch, refs = _train(make, x, y, loss_fn, layers, steps, every, out)
    assert losses == plain_losses
    assert all(torch.equal(a, b) for a, b in zip(plain.parameters(), watched.parameters()))
    df = watch.frame()
    assert sorted(set(df.step)) == list(range(0, steps, every)) == sorted(refs)
    for step, exp in refs.items():
        compare(df[df.step == step], exp, layers)
    assert watch.losses().loss.tolist() == pytest.approx(losses, rel=1e-12)
    with Store(out) as store:
        assert len(store.runs()) == 1


def test_report_renders_watch_runs_of_unusual_models(tmp_path):
    """``depthlab report DIR`` on a store holding Watch runs of a model that is itself a GRU
    (its layer's module name is empty) and of a dict-output model."""
    from depthlab.cli import main

    out = tmp_path / "runs"
    g = torch.Generator().manual_seed(0)
    cases = [("gru-alone", lambda: nn.GRU(4, 5), torch.randn(5, 3, 4, generator=g),
              lambda o: o[0].pow(2).mean()),
             ("two-heads", lambda: _TwoHeads(True), torch.randn(5, 6, generator=g),
              lambda o: _two_heads_loss(o, torch.tensor([0, 1, 2, 0, 1])))]
    for name, make, x, loss_of in cases:
        torch.manual_seed(0)
        model = make()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        with dlt.Watch(model, every=2, out=out, name=name) as watch:
            for _ in range(5):
                opt.zero_grad()
                loss = loss_of(model(x))
                loss.backward()
                watch.step(loss)
                opt.step()
    assert main(["report", str(out)]) == 0
    html = (out / "report.html").read_text()
    assert "gru-alone" in html and "two-heads" in html
    assert any(p.name.startswith("two-heads") for p in (out / "figures").iterdir())


def test_batchnorm_cure_normalizes_the_features_of_a_linear_on_sequences():
    """The doctor's "add batch norm" cure after a Linear applied to sequences (N, T, C): a
    BatchNorm1d(C) normalized over T (silently, when T == C; otherwise the cure failed to
    run); it now normalizes each feature over every (example, position)."""
    from depthlab.torch import prescriptions as rx
    from depthlab.torch.train import TorchTrainSpec

    torch.manual_seed(0)
    for shape in ((16, 8, 8), (16, 5, 8), (16, 8)):
        model = nn.Sequential(nn.Linear(8, 8), nn.Sigmoid(), nn.Linear(8, 3))
        x = torch.randn(*shape) * 3 + 1
        model, _ = rx.apply({"normalization": "batchnorm"}, model, TorchTrainSpec(), x)
        norm = model[1]
        assert isinstance(norm, nn.BatchNorm1d)
        assert (type(norm) is nn.BatchNorm1d) == (len(shape) == 2)  # plain rows: as before
        h = _np(norm(model[0](x))).reshape(-1, 8)
        np.testing.assert_allclose(h.mean(0), 0.0, atol=1e-5)
        np.testing.assert_allclose(h.std(0), 1.0, rtol=1e-3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cpu_kernels_and_torch_ops_agree_on_the_zoo(monkeypatch, dtype):
    """Every model of the zoo under a Watch (every step, percentiles on the odd steps' own
    Watch): the compiled CPU path and the torch operations (the CUDA path) give the same
    rows, values to rounding, fractions exactly."""
    from depthlab.probes import accel

    if not accel.available():
        pytest.skip("Numba (depthlab[fast]) is not installed")
    for name, (make, x, y, loss_fn, _) in ZOO.items():
        frames = []
        for kernels in (True, False):
            if not kernels:
                monkeypatch.setattr(accel, "kernels", lambda: None)
            torch.manual_seed(0)
            model = make().to(dtype)
            xs = tuple(t.to(dtype) for t in x) if isinstance(x, tuple) else \
                x.to(dtype) if x.is_floating_point() else x
            target = y.to(dtype) if y.is_floating_point() else y
            opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
            with dlt.Watch(model, every=1, percentiles=(10, 90) if kernels else ()) as watch:
                for _ in range(3):
                    opt.zero_grad()
                    loss = loss_fn(_call(model, xs), target)
                    loss.backward()
                    watch.step(loss)
                    opt.step()
            monkeypatch.undo()
            df = watch.frame()
            frames.append(df[~df.quantity.str.contains(r"_p\d")].reset_index(drop=True))
        fast, slow = frames
        key = ["step", "layer", "module", "quantity"]
        assert fast[key].equals(slow[key]), name
        exact = fast.quantity.str.endswith("_frac")
        np.testing.assert_array_equal(fast.value[exact], slow.value[exact], err_msg=name)
        # both paths sum in float64 (accumulators.Acc), so the stds agree even where the mean is
        # large against the std (heads.z: mean -0.35, std 0.004; 4e-4 with float32 sums)
        np.testing.assert_allclose(fast.value[~exact], slow.value[~exact], err_msg=name,
                                   rtol=1e-5 if dtype == torch.float32 else 1e-9, atol=1e-12)


class _Tagger(nn.Module):
    """Token classification: (N, T) ids -> (N, C, T) scores, CrossEntropyLoss's layout."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(20, 8)
        self.out = nn.Linear(8, 4)

    def forward(self, tokens):
        return self.out(self.emb(tokens)).transpose(1, 2)


def test_accuracy_leaves_out_padding_targets():
    """Padded positions (target -100, CrossEntropyLoss's ignore_index, or the loss's own
    ignore_index) are no class: acc counted them as wrong predictions."""
    torch.manual_seed(0)
    model = _Tagger()
    tokens = torch.randint(0, 20, (6, 7))
    padded = torch.randint(0, 4, (6, 7))
    padded[:, 4:] = -100
    padded_with_3 = torch.where(padded < 0, 3, padded)
    pred = model(tokens).argmax(1)
    for loss_fn, y, ignore in ((nn.CrossEntropyLoss(), padded, -100), (_ce, padded, -100),
                               (nn.CrossEntropyLoss(ignore_index=3), padded_with_3, 3)):
        valid = (y >= 0) & (y != ignore)
        want = float((pred == y)[valid].double().mean())
        df = dlt.probe(model, tokens, y, loss_fn)
        acc = df[df.quantity == "acc"].value
        assert acc.tolist() == [pytest.approx(want, rel=1e-12)]
        assert df[df.quantity == "loss"].value.iloc[0] == pytest.approx(
            float(loss_fn(model(tokens), y)), rel=1e-6)


class _EncoderHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(4, 6), nn.ReLU())
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        return self.head(self.enc(x))


def test_watch_when_the_loop_calls_submodules_not_the_model():
    """A loop that runs ``model.head(model.enc(x))`` (GANs, encode/decode methods) never calls
    the model: each record pooled its calls with every earlier record's (step 2's pre_std was
    that of steps 0 and 2 together), and percentiles were never computed."""
    torch.manual_seed(0)
    model = _EncoderHead().double()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    seen = []
    model.enc[0].register_forward_hook(lambda m, a, out: seen.append(out))
    expected = {}
    with dlt.Watch(model, every=2, percentiles=(50,)) as watch:
        for step in range(5):
            x = torch.randn(8, 4, dtype=D) * (step + 1)
            y = torch.randint(0, 2, (8,))
            opt.zero_grad()
            seen.clear()
            loss = F.cross_entropy(model.head(model.enc(x)), y)
            (g,) = torch.autograd.grad(loss, seen, retain_graph=True)
            s = _np(seen[0])
            expected[step] = {"pre_std": s.std(), "pre_p50": np.percentile(s, 50),
                              "grad_pre_std": _np(g).std()}
            loss.backward()
            watch.step(loss)
            opt.step()
    df = watch.frame()
    first = df[df.layer == 1].pivot(index="step", columns="quantity", values="value")
    assert list(first.index) == [0, 2, 4]
    for step in first.index:
        for q, want in expected[step].items():
            assert first.loc[step, q] == pytest.approx(want, rel=1e-9), (step, q)


class _Checkpointed(nn.Module):
    def __init__(self, mode):
        super().__init__()
        self.mode = mode
        self.body = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 8), nn.ReLU())
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        from torch.utils.checkpoint import checkpoint

        h = self.body(x) if self.mode is None else checkpoint(self.body, x,
                                                               use_reentrant=self.mode)
        return self.head(h)


def test_activation_checkpointing_measures_as_without_it():
    """torch.utils.checkpoint recomputes the body in backward: the same table as without it
    (probe: non-reentrant; Watch: both kinds, its hooks seeing the recomputation's calls)."""
    x = torch.randn(6, 4, dtype=D, requires_grad=True)  # else a reentrant one trains nothing
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    tables = {}
    for mode in (None, False, True):
        torch.manual_seed(0)
        model = _Checkpointed(mode).double()
        if mode is not True:
            tables[("probe", mode)] = dlt.probe(model, x, y, _ce)
        with dlt.Watch(model, every=1) as watch:
            loss = _ce(model(x), y)
            loss.backward()
            watch.step(loss)
        tables[("watch", mode)] = watch.frame()
    for (kind, mode), df in tables.items():
        base = tables[(kind, None)]
        assert df[["layer", "quantity"]].equals(base[["layer", "quantity"]]), (kind, mode)
        np.testing.assert_allclose(df.value, base.value, rtol=1e-12, atol=1e-15)


class _NaNNet(nn.Module):
    """Two branches on the input: Conv1d-ReLU (units on axis 1) and Linear-ReLU-Linear-Tanh
    (units last)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(2, 4, 3)
        self.relu1 = nn.ReLU()
        self.fc = nn.Linear(10, 6)
        self.relu2 = nn.ReLU()
        self.mid = nn.Linear(6, 6)
        self.tanh = nn.Tanh()
        self.out = nn.Linear(12 + 6, 3)

    def forward(self, x):
        a = self.relu1(self.conv(x)).flatten(1)
        b = self.tanh(self.mid(self.relu2(self.fc(x.flatten(1)))))
        return self.out(torch.cat([a, b], 1))


@pytest.mark.parametrize("kernels", [True, False])
def test_nan_outputs_give_the_same_fractions_on_both_paths(monkeypatch, kernels):
    """A model whose outputs hold NaN (a NaN weight): NaN entries are neither inactive
    (NaN <= 0 is false, as in the NumPy probes) nor 0-derivative (a unit with one is not
    dead). The torch path (CUDA) counted them inactive and called every unit with a NaN dead
    (after the Tanh all of them); the CPU kernels counted them inactive after a convolution
    but not after a Linear."""
    from depthlab.probes import accel

    if not kernels:
        monkeypatch.setattr(accel, "kernels", lambda: None)
    elif not accel.available():
        pytest.skip("Numba (depthlab[fast]) is not installed")
    torch.manual_seed(0)
    model = _NaNNet().double()
    with torch.no_grad():
        for layer in (model.conv, model.fc):  # unit 0 NaN on every entry, unit 1 dead
            layer.weight[0].view(-1)[0] = float("nan")
            layer.bias[1] = -100.0
    x = torch.randn(5, 2, 5, dtype=D)
    y = torch.tensor([0, 1, 2, 0, 1])
    seen = {}
    for name in ("conv", "fc", "mid"):
        getattr(model, name).register_forward_hook(
            lambda m, a, out, name=name: seen.update({name: _np(out)}))
    with dlt.Watch(model, every=1) as watch:
        loss = _ce(model(x), y)
        loss.backward()
        watch.step(loss)
    df = watch.frame().set_index(["module", "quantity"]).value
    for name, axis in (("conv", 1), ("fc", -1)):
        s = np.moveaxis(seen[name], axis, -1).reshape(-1, seen[name].shape[axis])
        assert df[(name, "inactive_frac")] == pytest.approx(np.mean(s <= 0), abs=1e-15)
        dead = np.all(s <= 0, axis=0)  # NaN <= 0 is false: a NaN entry keeps a unit alive
        assert dead[1] and not dead[0]
        assert df[(name, "dead_frac")] == pytest.approx(dead.mean(), abs=1e-15)
        assert math.isnan(df[(name, "pre_std")]) and math.isnan(df[(name, "act_mean")])
    assert df[("mid", "dead_frac")] == 0.0  # tanh of NaN: a NaN derivative, not 0
    assert df[("mid", "saturated_frac")] == 0.0
