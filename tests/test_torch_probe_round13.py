"""depthlab.torch on models and loops the earlier rounds' tests were not shown: packed
multi-layer bidirectional GRU/RNN/LSTM (``proj_size``), ``MultiheadAttention`` with
``kdim``/``vdim`` and ``need_weights``, a full ``nn.Transformer`` with a causal mask,
``ConvTranspose1d/2d/3d``, grouped and depthwise convolutions with reflect/circular/replicate
padding, ``GroupNorm``/``InstanceNorm``/``LayerNorm((C, H, W))`` followers, ``EmbeddingBag``
into a ``Bilinear``, a module called twice on outputs of two shapes, dataclass outputs,
channels-last convolutions, a custom layer returning a transposed view into an in-place ReLU;
a Watch over gradient accumulation with ``every=3`` (RReLU and dropout drawing random numbers),
over ``train()``/``eval()`` switches, inside ``torch.optim.LBFGS`` closures, and under bf16
autocast on the CPU.

Every value is compared with a direct autograd computation (my own hooks, population
statistics in float64) and training with a Watch is compared bit for bit with training without
one.

Bug found this round (regression test ``test_constant_and_nearly_constant_weights``):
``weight_std`` (and ``weight_grad_std``) came from ``sqrt(sum W^2 / n - mean^2)`` with no
guard against cancellation: a (1, 7) learned scale of ones had ``weight_std`` 1.5e-8 instead
of 0, and a float64 weight of mean 1, std 1e-7 gave 7.1e-8 (28% low; 7% on the torch
operations' path). Now the sums are taken again around the mean where they cancel.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

import depthlab.torch as dlt  # noqa: E402
from depthlab.probes.stats import SATURATION_RATIO  # noqa: E402
from depthlab.torch.layers import activation_spec  # noqa: E402
from tests.helpers.torchref import first_tensor as _first  # noqa: E402

CE = nn.CrossEntropyLoss()
D = torch.float64


def _pstd(v: torch.Tensor) -> float:
    return float(v.detach().double().std(unbiased=False))


def _cat(ts) -> torch.Tensor:
    return torch.cat([t.detach().double().reshape(-1) for t in ts])


def _layer_weights(mods: dict, name: str) -> list[torch.Tensor]:
    if name.endswith("out_proj"):
        return [mods[name].weight]
    m = mods[name]
    return [p for k, p in m.named_parameters(recurse=False) if p.dim() >= 2
            and k not in ("bias_k", "bias_v")]


class _Tap:
    """Reference hooks on the layers ``[(number, module name, follower name or None, unit
    axis)]``: every call's output (and follower input/output) and output gradient."""

    def __init__(self, model: nn.Module, layers: list) -> None:
        self.model, self.layers = model, layers
        mods = dict(model.named_modules())
        self.handles = []
        for i, n, fol, _ in layers:
            m = mods[n]
            if isinstance(m, nn.MultiheadAttention):  # the in-projection: weights only
                continue
            if n.endswith("out_proj"):  # the attention's output
                m = mods[n.rsplit(".", 1)[0]] if "." in n else model
            self.handles.append(m.register_forward_hook(self._out(i)))
            if fol is not None:
                f = mods[fol]
                self.handles.append(f.register_forward_pre_hook(self._fin(i)))
                self.handles.append(f.register_forward_hook(self._fout(i)))
        self.reset()

    def _out(self, i):
        def hook(module, args, out):
            t = _first(out)
            self.outs.setdefault(i, []).append(t.detach().double().clone().reshape(-1))
            if t.requires_grad:
                t.register_hook(lambda g: self.grads.setdefault(i, []).append(
                    g.detach().double().reshape(-1)))
        return hook

    def _fin(self, i):
        def hook(module, args):
            self.fin.setdefault(i, []).append(_first(args).detach().clone())
        return hook

    def _fout(self, i):
        def hook(module, args, out):
            self.fout.setdefault(i, []).append(_first(out).detach().double().clone().reshape(-1))
        return hook

    def reset(self) -> None:
        self.outs, self.grads, self.fin, self.fout = {}, {}, {}, {}

    def remove(self) -> None:
        for h in self.handles:
            h.remove()

    def weights(self) -> dict[int, torch.Tensor]:
        mods = dict(self.model.named_modules())
        return {i: _cat(_layer_weights(mods, n)) for i, n, _, _ in self.layers}

    def expected(self, loss, weight_grads=None, before=None, followers=True) -> dict:
        """``(layer, quantity) -> value``; ``weight_grads``: ``id(param) -> grad`` (else
        ``.grad``)."""
        mods = dict(self.model.named_modules())
        want = {(0, "loss"): float(loss)}
        now = self.weights()
        for i, n, fol, axis in self.layers:
            if i in self.outs:
                s = torch.cat(self.outs[i])
                want[(i, "pre_mean")], want[(i, "pre_std")] = float(s.mean()), _pstd(s)
            if i in self.grads:
                g = torch.cat(self.grads[i])
                want[(i, "grad_pre_std")] = _pstd(g)
                want[(i, "grad_pre_absmean")] = float(g.abs().mean())
            ws = _layer_weights(mods, n)
            want[(i, "weight_std")] = _pstd(now[i])
            gs = [weight_grads.get(id(p)) if weight_grads is not None else p.grad for p in ws]
            gs = [g for g in gs if g is not None]
            if gs:
                g = _cat(gs)
                want[(i, "weight_grad_std")] = _pstd(g)
                want[(i, "weight_grad_absmean")] = float(g.abs().mean())
            if before is not None:
                want[(i, "update_ratio")] = float((now[i] - before[i]).norm()
                                                  / before[i].norm())
            if fol is not None and i in self.fout:
                a = torch.cat(self.fout[i])
                want[(i, "act_mean")], want[(i, "act_std")] = float(a.mean()), _pstd(a)
                spec = activation_spec(mods[fol])
                if spec is not None and followers:
                    want.update(self._counts(i, mods[fol], spec, axis))
        return want

    def _counts(self, i, act, spec, axis) -> dict:
        """saturated/inactive/dead fractions from the activation's autograd derivative."""
        out = {}
        ds = []
        for s in list(self.fin[i]):
            leaf = s.detach().clone().requires_grad_(True)
            (d,) = torch.autograd.grad(act(leaf * 1).sum(), leaf)
            ds.append(d)
        d_all, s_all = _cat(ds), _cat(self.fin[i])
        if spec.bounded:
            sat = d_all.abs() < SATURATION_RATIO * spec.max_derivative
            if spec.relu_family:  # ReLU6: s <= 0 is inactive, not saturated
                sat &= s_all > 0
            out[(i, "saturated_frac")] = float(sat.double().mean())
        if spec.relu_family:
            out[(i, "inactive_frac")] = float((s_all <= 0).double().mean())
        alive = None
        for d in ds:
            ax = axis % d.dim()
            dims = [k for k in range(d.dim()) if k != ax]
            u = (d != 0).any(dim=dims) if dims else d != 0
            alive = u if alive is None else alive | u
        out[(i, "dead_frac")] = float((~alive).double().mean())
        return out


def _layers(model, x) -> list:
    infos = dlt.discover(model, *x) if isinstance(x, tuple) else dlt.discover(model, x)
    return [(li.index, li.name, li.activation or li.norm, li.feature_axis) for li in infos]


def _check(frame, want: dict, rel: float, step: int = 0) -> None:
    got = frame[frame.step == step].set_index(["layer", "quantity"]).value
    for key, value in want.items():
        assert key in got.index, (step, key)
        assert got[key] == pytest.approx(value, rel=rel, abs=1e-12), (step, key)
    skip = ("acc", "block_grad_std")
    extra = [k for k in got.index if k not in want and k[1] not in skip
             and not k[1].startswith(("pre_p", "act_p"))]
    assert not extra, extra


def _probe_matches(model, x, y, loss_fn=CE, rel=1e-6, names=None, functional=()):
    """dlt.probe's table equals the reference on (x, y); returns the table. ``functional``:
    layers followed by an activation function (a transformer's linear1 and its F.relu), whose
    act_*/fraction rows the reference (activation modules only) does not compute: they must
    be there and are left out of the comparison (checked in tests/test_torchfunc_round22.py)."""
    frame = dlt.probe(model, x, y, loss_fn, percentiles=())
    if functional:
        fr = frame.quantity.str.startswith(("act_", "saturated_", "inactive_", "dead_"))
        assert set(frame.layer[fr & (frame.quantity == "act_std")]) >= set(functional)
        frame = frame[~(fr & frame.layer.isin(functional))]
    layers = _layers(model, x)
    if names is not None:
        assert [n for _, n, _, _ in layers] == names
    tap = _Tap(model, layers)
    params = [p for p in model.parameters() if p.requires_grad]
    try:
        loss = loss_fn(model(*x) if isinstance(x, tuple) else model(x), y)
        grads = dict(zip(map(id, params), torch.autograd.grad(loss, params, allow_unused=True)))
    finally:
        tap.remove()  # (before expected(), which calls the activation modules)
    want = tap.expected(loss.detach(), weight_grads=grads)
    _check(frame, want, rel)
    mods = frame[frame.layer > 0].groupby("layer").module.first()
    assert mods.to_dict() == {i: n for i, n, _, _ in layers}
    return frame


# -- probe: model types -----------------------------------------------------------------------

def _conv_model(body: nn.Module, x: torch.Tensor) -> nn.Module:
    torch.manual_seed(0)
    body = body.double()
    width = body(x).flatten(1).shape[1]
    return nn.Sequential(body, nn.Flatten(), nn.Linear(width, 3)).double()


X2 = torch.randn(5, 4, 9, 9, dtype=D, generator=torch.Generator().manual_seed(3))
Y5 = torch.tensor([0, 2, 1, 1, 0])

CONVS = {
    "convtranspose2d_hardswish": (lambda: nn.Sequential(
        nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1), nn.Hardswish()), X2),
    "grouped_reflect_prelu_per_channel": (lambda: nn.Sequential(
        nn.Conv2d(4, 8, 3, groups=2, padding=1, padding_mode="reflect"), nn.PReLU(8)), X2),
    "depthwise_dilated_circular_softplus": (lambda: nn.Sequential(
        nn.Conv2d(4, 4, 3, groups=4, dilation=2, padding=2, padding_mode="circular"),
        nn.Softplus(beta=2, threshold=1)), X2),
    "strided_groupnorm_hardsigmoid": (lambda: nn.Sequential(
        nn.Conv2d(4, 6, 3, stride=2), nn.GroupNorm(2, 6), nn.Hardsigmoid()), X2),
    "instancenorm_logsigmoid": (lambda: nn.Sequential(
        nn.Conv2d(4, 6, 3), nn.InstanceNorm2d(6, affine=True), nn.LogSigmoid()), X2),
    "layernorm_chw_tanh": (lambda: nn.Sequential(
        nn.Conv2d(4, 3, 3), nn.LayerNorm([3, 7, 7]), nn.Tanh()), X2),
    "conv3d_replicate_elu": (lambda: nn.Sequential(
        nn.Conv3d(1, 3, 3, padding=1, padding_mode="replicate"), nn.ELU()),
        torch.randn(5, 1, 4, 5, 5, dtype=D, generator=torch.Generator().manual_seed(4))),
    "convtranspose1d_dilated_relu6": (lambda: nn.Sequential(
        nn.ConvTranspose1d(4, 5, 4, stride=3, dilation=2), nn.ReLU6()),
        3 * torch.randn(5, 4, 7, dtype=D, generator=torch.Generator().manual_seed(5))),
    "convtranspose3d_celu": (lambda: nn.Sequential(
        nn.ConvTranspose3d(2, 3, 2, stride=2), nn.CELU(0.5)),
        torch.randn(5, 2, 2, 3, 3, dtype=D, generator=torch.Generator().manual_seed(6))),
}


@pytest.mark.parametrize("kind", sorted(CONVS))
def test_convolutions_with_followers_equal_autograd(kind):
    make, x = CONVS[kind]
    model = _conv_model(make(), x)
    frame = _probe_matches(model, x, Y5, names=["0.0", "2"])
    assert {"act_std", "dead_frac"} <= set(frame[frame.layer == 1].quantity)


class _PackedRNN(nn.Module):
    def __init__(self, cell, hidden_out: int, **kw) -> None:
        super().__init__()
        self.emb = nn.Embedding(11, 5, padding_idx=0)
        self.rnn = cell(5, 6, num_layers=2, bidirectional=True, batch_first=True, **kw)
        self.act = nn.Tanh()
        self.head = nn.Linear(2 * hidden_out, 3)

    def forward(self, ids, lengths):
        packed = pack_padded_sequence(self.emb(ids), lengths, batch_first=True,
                                      enforce_sorted=False)
        out, _ = self.rnn(packed)
        out, _ = pad_packed_sequence(out, batch_first=True)
        return self.head(self.act(out).mean(1))


@pytest.mark.parametrize("cell,kw,hidden", [(nn.GRU, {}, 6),
                                            (nn.RNN, {"nonlinearity": "relu"}, 6),
                                            (nn.LSTM, {"proj_size": 4}, 4)])
def test_packed_bidirectional_two_layer_recurrent_nets(cell, kw, hidden):
    torch.manual_seed(0)
    model = _PackedRNN(cell, hidden, **kw).double()
    ids = torch.randint(1, 11, (5, 7))
    lengths = torch.tensor([7, 3, 5, 2, 6])
    for i, n in enumerate(lengths):
        ids[i, n:] = 0
    frame = _probe_matches(model, (ids, lengths), Y5, names=["emb", "rnn", "head"])
    # the padded positions are not in the recurrent layer's output (packed data only)
    assert frame.set_index(["layer", "quantity"]).value[(2, "pre_std")] > 0


class _CrossAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q = nn.Linear(6, 8)
        self.att = nn.MultiheadAttention(8, 2, kdim=5, vdim=3, batch_first=True)
        self.ln = nn.LayerNorm(8)
        self.head = nn.Linear(8, 3)

    def forward(self, q, k, v):
        o, w = self.att(self.q(q), k, v, need_weights=True, average_attn_weights=False)
        return self.head(self.ln(o).mean(1)) + 0.0 * w.sum()


def test_attention_with_kdim_vdim_and_weights_returned():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    x = (torch.randn(4, 5, 6, dtype=D, generator=g), torch.randn(4, 7, 5, dtype=D, generator=g),
         torch.randn(4, 7, 3, dtype=D, generator=g))
    model = _CrossAttention().double()
    frame = _probe_matches(model, x, torch.tensor([0, 1, 2, 1]),
                           names=["q", "att", "att.out_proj", "head"])
    q = frame.set_index(["layer", "quantity"]).value
    # the separate q/k/v projections pooled as the in-projection's W
    w = _cat([model.att.q_proj_weight, model.att.k_proj_weight, model.att.v_proj_weight])
    assert q[(2, "weight_std")] == pytest.approx(_pstd(w), rel=1e-9)
    assert (2, "pre_std") not in q.index


def test_full_transformer_with_causal_mask_norm_first():
    torch.manual_seed(0)
    with warnings.catch_warnings():  # 'enable_nested_tensor is True, but ... norm_first'
        warnings.simplefilter("ignore", UserWarning)
        tr = nn.Transformer(d_model=8, nhead=2, num_encoder_layers=1, num_decoder_layers=1,
                            dim_feedforward=12, dropout=0.0, batch_first=True,
                            norm_first=True)

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.tr, self.head = tr, nn.Linear(8, 3)

        def forward(self, a, b):
            mask = nn.Transformer.generate_square_subsequent_mask(b.shape[1], dtype=D)
            return self.head(self.tr(a, b, tgt_mask=mask, tgt_is_causal=True).mean(1))

    g = torch.Generator().manual_seed(2)
    x = (torch.randn(4, 6, 8, dtype=D, generator=g), torch.randn(4, 5, 8, dtype=D, generator=g))
    model = Model().double()
    frame = _probe_matches(model, x, torch.tensor([0, 1, 2, 1]), functional=(3, 9))
    enc, dec = "tr.encoder.layers.0", "tr.decoder.layers.0"
    assert [n for _, n, _, _ in _layers(model, x)] == [
        f"{enc}.self_attn", f"{enc}.self_attn.out_proj", f"{enc}.linear1", f"{enc}.linear2",
        f"{dec}.self_attn", f"{dec}.self_attn.out_proj", f"{dec}.multihead_attn",
        f"{dec}.multihead_attn.out_proj", f"{dec}.linear1", f"{dec}.linear2", "head"]
    blocks = frame[frame.quantity == "block_grad_std"]
    assert set(blocks.module) == {enc, dec}


class _BagBilinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.bag = nn.EmbeddingBag(10, 4, mode="mean")
        self.lin = nn.Linear(3, 5)
        self.bil = nn.Bilinear(4, 5, 6)
        self.act = nn.SiLU()
        self.head = nn.Linear(6, 3)

    def forward(self, ids, offsets, z):
        return self.head(self.act(self.bil(self.bag(ids, offsets), self.lin(z))))


def test_embedding_bag_into_bilinear():
    torch.manual_seed(0)
    x = (torch.randint(0, 10, (12,)), torch.tensor([0, 3, 5, 9]), torch.randn(4, 3, dtype=D))
    _probe_matches(_BagBilinear().double(), x, torch.tensor([2, 0, 1, 1]),
                   names=["bag", "lin", "bil", "head"])


class _TwoShapes(nn.Module):
    """One layer and its tanh called on a (6, 4) batch and on its output reshaped (3, 2, 4)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.act, self.b = nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 3)

    def forward(self, x):
        h = self.act(self.a(x))
        return self.b(self.act(self.a(h.reshape(-1, 2, 4))).mean(1))


def test_module_called_twice_on_two_shapes_pools_both_calls():
    torch.manual_seed(0)
    model = _TwoShapes().double()
    with torch.no_grad():
        model.a.bias[:] = torch.tensor([-50.0, 0.0, 0.0, 0.2])  # unit 0 saturated: dead
    x = torch.randn(6, 4, dtype=D, generator=torch.Generator().manual_seed(7))
    frame = _probe_matches(model, x, torch.tensor([0, 2, 1]))
    q = frame.set_index(["layer", "quantity"]).value
    assert q[(1, "dead_frac")] == 0.25


@dataclass
class _Out:
    logits: torch.Tensor
    aux: torch.Tensor


class _DataclassModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.act, self.b = nn.Linear(5, 8), nn.Mish(), nn.Linear(8, 3)

    def forward(self, x):
        h = self.act(self.a(x))
        return _Out(self.b(h), h.square().mean())


def test_dataclass_output_and_channels_last_convolutions():
    torch.manual_seed(0)
    x = torch.randn(6, 5, dtype=D)
    _probe_matches(_DataclassModel().double(), x, torch.tensor([0, 1, 2, 0, 1, 2]),
                   loss_fn=lambda o, y: CE(o.logits, y) + 0.1 * o.aux)
    conv = nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(), nn.Conv2d(6, 4, 3), nn.ReLU(inplace=True),
                         nn.Flatten(), nn.Linear(64, 3)).double()
    conv = conv.to(memory_format=torch.channels_last)
    xc = torch.randn(5, 3, 8, 8, dtype=D).to(memory_format=torch.channels_last)
    _probe_matches(conv, xc, Y5)


class _TransposedLayer(nn.Module):
    """A custom layer whose output is a transposed view, into an in-place ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(6, 5))

    def forward(self, x):
        return (self.w @ x.transpose(0, 1)).transpose(0, 1)


def test_transposed_view_output_into_inplace_relu():
    torch.manual_seed(0)
    model = nn.Sequential(_TransposedLayer(), nn.ReLU(inplace=True), nn.Linear(6, 3)).double()
    x = torch.randn(7, 5, dtype=D)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    frame = dlt.probe(model, x, y, CE, percentiles=())
    q = frame.set_index(["layer", "quantity"]).value
    s = model[0](x).detach().requires_grad_()
    (g,) = torch.autograd.grad(CE(model[2](torch.relu(s)), y), s)
    assert q[(1, "grad_pre_std")] == pytest.approx(_pstd(g), rel=1e-9)
    assert q[(1, "grad_pre_absmean")] == pytest.approx(float(g.abs().mean()), rel=1e-9)
    assert q[(1, "pre_std")] == pytest.approx(_pstd(s), rel=1e-9)
    assert q[(1, "act_std")] == pytest.approx(_pstd(torch.relu(s)), rel=1e-9)
    assert q[(1, "inactive_frac")] == pytest.approx(float((s <= 0).double().mean()))


# -- the bug of this round -------------------------------------------------------------------

class _Scale(nn.Module):
    """A learned per-feature scale of shape (1, C): a weight layer (a >= 2-dim parameter)."""

    def __init__(self, c: int, value: float) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.full((1, c), value))

    def forward(self, x):
        return x * self.w


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("value", [1.0, 3.7])
def test_constant_and_nearly_constant_weights(dtype, value):
    """A weight of one value has weight_std 0 (it was 1.5e-8 for ones, 4.2e-8 for 3.7: the
    square root of a rounding error of sum W^2 / n - mean^2); nearly constant weights (a
    float64 weight of mean 1, std 1e-7: 7.1e-8 where it is 1.0e-7) have the std of their
    entries."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), _Scale(7, value), nn.Linear(7, 3)).to(dtype)
    x, y = torch.randn(8, 5, dtype=dtype), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    q = dlt.probe(model, x, y, CE, percentiles=()).set_index(["layer", "quantity"]).value
    assert q[(2, "weight_std")] == 0.0
    big = nn.Linear(300, 200).to(dtype)
    with torch.no_grad():  # ratio mean / std of 1e7 (float64) and 1e4 (float32)
        spread = 1e-7 if dtype == torch.float64 else 1e-4
        big.weight.copy_(value + spread * torch.randn(200, 300, dtype=D))
    model = nn.Sequential(big, nn.Tanh(), nn.Linear(200, 3)).to(dtype)
    x = 1e-3 * torch.randn(8, 300, dtype=dtype)
    _probe_matches(model, x, y, rel=1e-6)

    with dlt.Watch(model, every=1, theory=False) as watch:  # the Watch's weight pass too
        opt = torch.optim.SGD(model.parameters(), lr=1e-3)
        want = []
        for _ in range(2):
            opt.zero_grad()
            CE(model(x), y).backward()
            want.append(_pstd(big.weight.detach()))
            watch.step(0.0)
            opt.step()
    rows = watch.frame().query("layer == 1 and quantity == 'weight_std'").value
    assert rows.tolist() == pytest.approx(want, rel=1e-6)


# -- Watch loops ------------------------------------------------------------------------------

def _loop(make, steps, every, data, *, watch=True, accum=1, opt="sgd", dtype=D, switch=None,
          autocast=False):
    """The user's loop; returns (losses, parameters, frame, expected rows per record)."""
    torch.manual_seed(0)
    model = make().to(dtype)
    optim = (torch.optim.LBFGS(model.parameters(), lr=0.5, max_iter=3, history_size=3)
             if opt == "lbfgs" else torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
    w = dlt.Watch(model, every=every) if watch else None  # theory on: its isolated pass too
    tap = _Tap(model, _layers(model, data(0)[0].to(dtype))) if watch else None
    losses, want = [], {}
    state = {"before": tap.weights() if tap else None, "calls": 0}

    def forward_backward(n, k):
        x, y = data(n * accum + k)
        if tap:
            tap.reset()  # the layer rows are the last micro-batch's
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = model(x.to(dtype))
        loss = CE(out.float(), y) / accum
        loss.backward()
        return loss

    def record(c, loss):
        if tap and c % every == 0:
            want[c] = tap.expected(loss.detach(), before=state["before"] if c else None,
                                   followers=False)
        if tap:
            state["before"] = tap.weights()
        if w:
            w.step(loss)

    for n in range(steps):
        if switch:
            switch(model, n)
        if opt == "lbfgs":
            def closure(n=n):
                optim.zero_grad()
                loss = forward_backward(n, 0)
                record(state["calls"], loss)
                state["calls"] += 1
                losses.append(loss.item())
                return loss
            optim.step(closure)
            continue
        optim.zero_grad()
        for k in range(accum):
            loss = forward_backward(n, k)
        record(n, loss)
        optim.step()
        losses.append(loss.item())
    if w:
        w.close()
    if tap:
        tap.remove()
    return losses, [p.detach().clone() for p in model.parameters()], w and w.frame(), want


def _same_training(make, steps, every, rel=1e-6, **kw):
    l0, p0, _, _ = _loop(make, steps, every, _DATA, watch=False, **kw)
    l1, p1, frame, want = _loop(make, steps, every, _DATA, **kw)
    assert l0 == l1
    assert all(torch.equal(a, b) for a, b in zip(p0, p1))
    assert sorted(want) == sorted(set(frame.step))
    for n, rows in want.items():
        got = frame[frame.step == n].set_index(["layer", "quantity"]).value
        for key, value in rows.items():
            assert got[key] == pytest.approx(value, rel=rel, abs=1e-12), (n, key)
    return frame


_G = torch.Generator().manual_seed(1)
_X = torch.randn(40, 8, 10, generator=_G, dtype=D)
_Y = torch.randint(0, 3, (40, 8), generator=_G)


def _DATA(i):
    return _X[i], _Y[i]


def _noisy_mlp():
    return nn.Sequential(nn.Linear(10, 16), nn.RReLU(), nn.Dropout(0.2), nn.Linear(16, 16),
                         nn.Tanh(), nn.Linear(16, 3))


def _bn_mlp():
    return nn.Sequential(nn.Linear(10, 16), nn.BatchNorm1d(16), nn.PReLU(16), nn.Linear(16, 3))


def test_watch_every_3_over_gradient_accumulation_with_random_layers():
    frame = _same_training(_noisy_mlp, 7, 3, accum=2)
    assert sorted(set(frame.step)) == [0, 3, 6]
    assert (frame.quantity == "update_ratio").any()


def test_watch_across_train_eval_switches():
    frame = _same_training(_bn_mlp, 5, 1, switch=lambda m, n: m.train(n % 2 == 0))
    assert set(frame.step) == set(range(5))


def test_watch_inside_lbfgs_closures():
    frame = _same_training(_noisy_mlp, 2, 2, opt="lbfgs")
    assert len(set(frame.step)) >= 2


def test_watch_float32_and_bf16_autocast():
    _same_training(_bn_mlp, 4, 2, dtype=torch.float32, rel=2e-5)

    def mlp():
        return nn.Sequential(nn.Linear(10, 16), nn.Hardswish(), nn.Linear(16, 16), nn.Sigmoid(),
                             nn.Linear(16, 3))
    frame = _same_training(mlp, 3, 2, dtype=torch.float32, autocast=True, rel=1e-5)
    assert not frame.value.isna().any()
    assert all(math.isfinite(v) for v in frame.value)
