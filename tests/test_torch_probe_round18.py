"""depthlab.torch probe and predict on models the earlier rounds did not cover (round 18).
Measured values are compared with a direct computation by plain torch operations and autograd
in float64 (population std, ddof = 0); predictions with the measurement at initialization."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import depthlab.torch as dlt  # noqa: E402

CE = nn.CrossEntropyLoss()
D = torch.float64


def _pstd(v: torch.Tensor) -> float:
    return float(v.detach().double().std(unbiased=False))


def _mean(v: torch.Tensor) -> float:
    return float(v.detach().double().mean())


class _AlphaBlock(nn.Module):
    """``x.add(fc2(relu(fc1(x))), alpha=alpha)``: a residual add that scales its branch."""

    def __init__(self, width: int, alpha: float, fn: str = "method") -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width)
        self.alpha, self.fn = alpha, fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch = self.fc2(self.act(self.fc1(x)))
        if self.fn == "method":
            return x.add(branch, alpha=self.alpha)
        return torch.add(x, branch, alpha=self.alpha)


@pytest.mark.parametrize("alpha,fn", [(0.5, "method"), (2.0, "function")])
def test_predict_models_a_residual_add_with_alpha(alpha, fn):
    """``x.add(F(x), alpha=0.5)`` is ``x + 0.5 F(x)``: the branch's gradient is scaled by
    alpha, which predict() took for a plain sum (grad_pre_std of the layer before the block
    predicted 2.0x the measurement for alpha 0.5, 0.5x for alpha 2); refused in round 18,
    modelled since round 43."""
    torch.manual_seed(0)
    w = 64
    model = nn.Sequential(nn.Linear(w, w), nn.ReLU(), _AlphaBlock(w, alpha, fn),
                          nn.Linear(w, 10)).to(D)
    x, y = torch.randn(128, w, dtype=D), torch.randint(0, 10, (128,))
    df = dlt.predict(model, x, y, CE)
    g = df[df.quantity == "grad_pre_std"]
    assert ((g.predicted / g.value).between(0.8, 1.25)).all()
    plain = nn.Sequential(nn.Linear(w, w), nn.ReLU(), _AlphaBlock(w, 1.0, fn),
                          nn.Linear(w, 10)).to(D)
    df = dlt.predict(plain, x, y, CE)  # alpha 1 is the plain sum: predicted as before
    g = df[df.quantity == "grad_pre_std"]
    assert ((g.predicted / g.value).between(0.8, 1.25)).all()


@pytest.mark.parametrize("on", [3, 2])
def test_predict_refuses_a_deprecated_backward_hook(on):
    """``module.register_backward_hook`` (the deprecated kind) acts on the autograd node of the
    module's output, invisible in the forward: a hook returning ``grad_input * 10`` on a tanh
    had grad_pre_std of the layers below predicted 0.1x the measurement, silently."""
    torch.manual_seed(0)
    w = 64
    model = nn.Sequential(nn.Linear(32, w), nn.Tanh(), nn.Linear(w, w), nn.Tanh(),
                          nn.Linear(w, 10)).to(D)
    x, y = torch.randn(128, 32, dtype=D), torch.randint(0, 10, (128,))
    handle = model[on].register_backward_hook(lambda m, gi, go: (gi[0] * 10,))
    kind = type(model[on]).__name__
    with pytest.raises(ValueError, match=rf"backward hook \(register_backward_hook\) on "
                                         rf"'{on}' \({kind}\)"):
        dlt.predict(model, x, y, CE)
    handle.remove()
    df = dlt.predict(model, x, y, CE)  # without it: predicted as measured
    g = df[df.quantity == "grad_pre_std"]
    assert ((g.predicted / g.value).between(0.8, 1.25)).all()


def test_predict_takes_a_dropout_of_p_one(recwarn):
    """``nn.Dropout(1.0)`` in training mode zeroes every entry: predict() raised
    ZeroDivisionError (after NumPy's divide-by-zero warnings). Now the layer after it reads
    zeros (its pre_std is its biases' spread, exactly) and no gradient reaches the layer
    before it (0, as measured)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Dropout(1.0), nn.Linear(32, 64),
                          nn.Tanh(), nn.Linear(64, 4)).to(D)
    x, y = torch.randn(64, 16, dtype=D), torch.randint(0, 4, (64,))
    df = dlt.predict(model, x, y, CE).set_index(["layer", "quantity"])
    assert df.loc[(1, "grad_pre_std"), "predicted"] == 0.0 == df.loc[(1, "grad_pre_std"), "value"]
    bias = model[3].bias.detach()
    assert df.loc[(2, "pre_std"), "predicted"] == pytest.approx(_pstd(bias), rel=1e-9)
    assert df.loc[(2, "pre_std"), "value"] == pytest.approx(_pstd(bias), rel=1e-9)
    assert df.loc[(2, "act_std"), "predicted"] == pytest.approx(_pstd(torch.tanh(bias)), rel=1e-3)
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


class _BufferOnly(nn.Module):
    """A linear map whose weights were kept with ``register_buffer``."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("w", torch.randn(6, 3))
        self.register_buffer("scale", torch.ones(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.w * self.scale


def test_a_model_with_buffers_only_is_told_its_weights_are_buffers():
    """A model whose 2-dim weights are buffers (register_buffer) got 'has no weight layers
    (modules owning a real floating-point parameter ...)', which did not say why its weight
    was none; now the line names the buffer and its shape."""
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    for call in (lambda: dlt.probe(_BufferOnly(), x, y, CE), lambda: dlt.predict(_BufferOnly(), x),
                 lambda: dlt.discover(_BufferOnly(), x)):
        with pytest.raises(ValueError, match=r"^model _BufferOnly has no weight layers: its "
                                             r"tensor 'w' \(shape \(6, 3\)\) is a buffer "
                                             r"\(register_buffer\), not a parameter") as e:
            call()
        assert "\n" not in str(e.value)


def _patched(which: str) -> nn.Sequential:
    import functools
    import types

    import torch.nn.functional as F

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(),
                          nn.Linear(64, 10)).to(D)
    if which == "layer":
        model[2].forward = types.MethodType(
            lambda self, x: 3 * F.linear(x, self.weight, self.bias), model[2])
    elif which == "activation":
        model[1].forward = types.MethodType(lambda self, x: torch.tanh(3 * x), model[1])
    elif which == "wrapper":  # calls the class's own forward (accelerate's device hooks)
        old = model[2].forward
        model[2].forward = functools.update_wrapper(
            functools.partial(lambda m, *a, **k: old(*a, **k), model[2]), old)
    return model


@pytest.mark.parametrize("which,name", [("layer", r"layer '2' \(Linear\)"),
                                        ("activation", r"activation '1' \(Tanh\)")])
def test_predict_refuses_a_forward_replaced_on_the_instance(which, name):
    """``layer.forward = types.MethodType(f, layer)`` (a patch on the instance, not a subclass)
    was predicted as the class computes it: a Linear returning ``3 * F.linear(...)`` gave the
    next layer's pre_std 0.33x the measurement, a Tanh patched to ``tanh(3 x)`` act_std 0.6x,
    silently. A wrapper that calls the class's own forward is still predicted."""
    x, y = torch.randn(128, 32, dtype=D), torch.randint(0, 10, (128,))
    with pytest.raises(ValueError, match=rf"{name} has its forward\(\) replaced on the "
                                         r"instance"):
        dlt.predict(_patched(which), x, y, CE)
    df = dlt.predict(_patched("wrapper"), x, y, CE)
    assert ((df.predicted / df.value).between(0.8, 1.25)).all()


def test_probe_does_not_count_a_patched_activation_by_its_class_derivative():
    """A Tanh whose forward was replaced on the instance (it computes a ReLU) was counted by
    tanh's derivative: saturated_frac 0.18 for an activation that never saturates. Such a
    module is no recognised activation now, as any custom module; the torch.relu its forward
    applies is (depthlab.torch.functional_acts, round 22): the rows are that ReLU's, no
    saturated_frac; the layer's own rows unchanged."""
    import types

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 2)).to(D)
    x, y = 3 * torch.randn(32, 8, dtype=D), torch.randint(0, 2, (32,))
    plain = dlt.probe(model, x, y, CE, percentiles=())
    model[1].forward = types.MethodType(lambda self, s: torch.relu(s), model[1])
    df = dlt.probe(model, x, y, CE, percentiles=())
    got = df[df.layer == 1].set_index("quantity").value
    assert "saturated_frac" not in got.index
    assert got["pre_std"] == plain[(plain.layer == 1) & (plain.quantity == "pre_std")].value.item()
    s = model[0](x)
    assert got["act_std"] == pytest.approx(_pstd(torch.relu(s)), rel=1e-9)
    assert got["inactive_frac"] == pytest.approx(float((s <= 0).double().mean()))
    assert got["pre_std"] == pytest.approx(_pstd(s), rel=1e-9)
    assert dlt.activation_spec(model[1]) is None and dlt.activation_spec(nn.Tanh()) is not None


# -- every pre_*, grad_pre_*, weight_* row against a direct autograd computation ----------------

def _first(o):
    if isinstance(o, torch.Tensor):
        return o
    if isinstance(o, nn.utils.rnn.PackedSequence):
        return o.data
    for e in (o.values() if isinstance(o, dict) else o if isinstance(o, (tuple, list)) else ()):
        t = _first(e)
        if t is not None:
            return t
    return None


def _reference(model: nn.Module, x, y, loss_fn) -> dict[tuple[str, str], float]:
    """The definitions, by forward hooks and one ``autograd.grad``: layers = modules owning a
    weight of >= 2 dims (attention: ``NAME`` weights only, ``NAME.out_proj`` its output), each
    call's output pooled; population std (ddof 0) in float64."""
    from depthlab.torch.layers import weight_modules

    outs: dict[str, list[torch.Tensor]] = {}
    handles = []
    infos = weight_modules(model)
    for info in infos:
        if info.has_output:
            def hook(m, a, o, name=info.name):
                t = _first(o)
                if t is not None and t.is_floating_point():
                    outs.setdefault(name, []).append(t)
            handles.append(info.owner.register_forward_hook(hook))
    with torch.random.fork_rng():
        out = model(**x) if isinstance(x, dict) else model(*x) if isinstance(x, tuple) \
            else model(x)
        for h in handles:
            h.remove()
        loss = loss_fn(out, y)
        params = [p for p in model.parameters() if p.requires_grad]
        tensors = [t for ts in outs.values() for t in ts if t.requires_grad]
        got = torch.autograd.grad(loss, params + tensors, allow_unused=True)
    pg = {id(p): g for p, g in zip(params, got)}
    tg = dict(zip(map(id, tensors), got[len(params):]))
    ref = {}
    for name, ts in outs.items():
        v = torch.cat([t.detach().double().reshape(-1) for t in ts])
        ref[name, "pre_mean"], ref[name, "pre_std"] = _mean(v), _pstd(v)
        gs = [tg[id(t)] for t in ts if tg.get(id(t)) is not None]
        if gs:
            g = torch.cat([g.double().reshape(-1) for g in gs])
            ref[name, "grad_pre_std"], ref[name, "grad_pre_absmean"] = _pstd(g), _mean(g.abs())
    for info in infos:
        ref[info.name, "weight_std"] = _pstd(torch.cat([w.reshape(-1) for w in info.weights]))
        gw = [pg[id(w)] for w in info.weights if pg.get(id(w)) is not None]
        if gw:
            ref[info.name, "weight_grad_std"] = _pstd(torch.cat(
                [(g.to_dense() if g.is_sparse else g).reshape(-1) for g in gw]))
    return ref


def _transformer():
    torch.manual_seed(0)
    model = nn.Transformer(d_model=16, nhead=2, num_encoder_layers=2, num_decoder_layers=1,
                           dim_feedforward=32, dropout=0.1).to(D)
    pad = torch.zeros(3, 7, dtype=torch.bool)
    pad[0, -2:] = True
    x = dict(src=torch.randn(7, 3, 16, dtype=D), tgt=torch.randn(5, 3, 16, dtype=D),
             tgt_mask=nn.Transformer.generate_square_subsequent_mask(5, dtype=D),
             src_key_padding_mask=pad, memory_key_padding_mask=pad)
    return model, x, torch.randn(5, 3, 16, dtype=D), nn.MSELoss()


class _Attend(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.MultiheadAttention(16, 2, kdim=8, vdim=12, add_bias_kv=True)

    def forward(self, q, k, v):
        return self.a(q, k, v, need_weights=False)[0]


def _attention():
    torch.manual_seed(0)
    x = (torch.randn(5, 3, 16, dtype=D), torch.randn(6, 3, 8, dtype=D),
         torch.randn(6, 3, 12, dtype=D))
    return _Attend().to(D), x, torch.randn(5, 3, 16, dtype=D), nn.MSELoss()


class _Packed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(20, 8, padding_idx=0)
        self.rnn = nn.GRU(8, 16, num_layers=2, bidirectional=True, dropout=0.3,
                          batch_first=True)
        self.fc = nn.Linear(32, 3)

    def forward(self, ids, lengths):
        packed = nn.utils.rnn.pack_padded_sequence(self.emb(ids), lengths, batch_first=True,
                                                   enforce_sorted=False)
        out, _ = nn.utils.rnn.pad_packed_sequence(self.rnn(packed)[0], batch_first=True)
        return self.fc(out.sum(1))


def _packed():
    torch.manual_seed(0)
    lengths = torch.tensor([9, 3, 5, 7, 2])
    ids = torch.randint(1, 20, (5, 9))
    for i, n in enumerate(lengths):
        ids[i, n:] = 0
    return _Packed().to(D), (ids, lengths), torch.randint(0, 3, (5,)), CE


class _Cells(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c, self.r, self.fc = nn.LSTMCell(8, 16), nn.RNNCell(16, 16), nn.Linear(16, 2)

    def forward(self, x):
        h = c = h2 = x.new_zeros(x.shape[1], 16)
        for t in range(x.shape[0]):
            h, c = self.c(x[t], (h, c))
            h2 = self.r(h, h2)
        return self.fc(h2)


def _convs():
    torch.manual_seed(0)
    from torch.nn.utils.parametrizations import spectral_norm, weight_norm

    model = nn.Sequential(
        nn.Conv1d(4, 8, 3, groups=2, dilation=2, padding=2, padding_mode="reflect"), nn.PReLU(8),
        nn.Conv1d(8, 8, 3, padding=1, padding_mode="circular", groups=8),
        weight_norm(nn.Conv1d(8, 6, 1)), nn.Hardswish(), nn.AdaptiveAvgPool1d(1), nn.Flatten(),
        spectral_norm(nn.Linear(6, 3))).to(D)
    return model, torch.randn(5, 4, 12, dtype=D), torch.randint(0, 3, (5,)), CE


def _upsampling():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.ConvTranspose2d(4, 8, 3, stride=2, groups=2, dilation=2, output_padding=1),
        nn.GroupNorm(2, 8, affine=False), nn.Hardtanh(-0.5, 0.5), nn.Conv2d(8, 16, 3, padding=1),
        nn.PixelShuffle(2), nn.Upsample(scale_factor=2, mode="bilinear"),
        nn.Conv2d(4, 2, 1), nn.LogSigmoid(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten()).to(D).to(memory_format=torch.channels_last)
    x = torch.randn(3, 4, 5, 5, dtype=D).to(memory_format=torch.channels_last)
    return model, x, torch.randint(0, 2, (3,)), CE


class _Bags(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.bag = nn.EmbeddingBag(30, 8, mode="sum", padding_idx=0)
        self.bi = nn.Bilinear(8, 5, 7)
        self.fc = nn.Linear(7, 2)

    def forward(self, ids, offsets, other):
        import torch.nn.functional as F

        return self.fc(F.softplus(self.bi(F.relu(self.bag(ids, offsets)), other)))


def _bags():
    torch.manual_seed(0)
    x = (torch.randint(0, 30, (20,)), torch.tensor([0, 5, 9, 15]), torch.randn(4, 5, dtype=D))
    return _Bags().to(D), x, torch.randint(0, 2, (4,)), CE


def _bf16():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.InstanceNorm2d(8), nn.CELU(0.5),
                          nn.Flatten(), nn.Linear(8 * 25, 16),
                          nn.LayerNorm(16, elementwise_affine=False), nn.Softplus(beta=2),
                          nn.Linear(16, 3)).to(torch.bfloat16)
    return (model, torch.randn(6, 3, 5, 5).to(torch.bfloat16), torch.randint(0, 3, (6,)),
            lambda o, y: CE(o.float(), y))


CASES = {"transformer-masks-dropout": _transformer, "attention-kdim-vdim-bias-kv": _attention,
         "packed-bigru-dropout-padding-idx": _packed,
         "cells-in-a-loop": lambda: (_Cells().to(D), torch.randn(5, 4, 8, dtype=D),
                                     torch.randint(0, 2, (4,)), CE),
         "conv1d-groups-reflect-circular-norm-parametrizations": _convs,
         "convtranspose-pixelshuffle-upsample-channels-last": _upsampling,
         "embeddingbag-bilinear-functional": _bags, "bf16": _bf16}


@pytest.mark.filterwarnings("ignore:enable_nested_tensor is True")
@pytest.mark.parametrize("case", list(CASES))
def test_probe_rows_equal_the_autograd_definitions(case):
    """Each model's pre_*, grad_pre_*, weight_* rows equal the definitions computed directly
    (hooks, one autograd.grad, float64; bf16 to its rounding), and probe leaves the
    parameters, buffers, .grad and the random number generators as found."""
    model, x, y, loss_fn = CASES[case]()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    grads = [p.grad for p in model.parameters()]
    rng = torch.random.get_rng_state()
    df = dlt.probe(model, x, y, loss_fn, percentiles=())
    assert torch.equal(torch.random.get_rng_state(), rng)
    assert all(g is None for g in grads) and all(p.grad is None for p in model.parameters())
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    ref = _reference(model, x, y, loss_fn)
    got = {(m, q): v for m, q, v in zip(df.module, df.quantity, df.value)
           if q in ("pre_mean", "pre_std", "grad_pre_std", "grad_pre_absmean", "weight_std",
                    "weight_grad_std")}
    assert set(got) == set(ref)
    rel = 2e-3 if case == "bf16" else 1e-7
    for key, v in ref.items():
        assert got[key] == pytest.approx(v, rel=rel, abs=1e-12), key


@pytest.mark.parametrize("value", [float("inf"), float("nan")])
def test_predict_refuses_non_finite_weights_by_name(value):
    """A diverged model (an inf weight) was predicted act_std 0.0 and grad_pre_std 0.0 at the
    layer and pre_std 0.50 at the next, beside NaN measurements (a NaN weight: NaN rows
    throughout); non-finite parameters are refused by name, as non-finite inputs are."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(),
                          nn.Linear(32, 4))
    with torch.no_grad():
        model[2].weight[0, 0] = value
    x = torch.randn(64, 16)
    for args in ((), (torch.randint(0, 4, (64,)), CE)):
        with pytest.raises(ValueError, match=r"^parameter '2\.weight' holds 1 non-finite value "
                                             r"\(NaN or inf\) of 1024"):
            dlt.predict(model, x, *args)
