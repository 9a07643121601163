"""depthlab.torch probes and Watch on the call styles and models practitioners use (round 15):
modules called by keyword (``act(input=h)``, ``blk(hidden=h)``), layer outputs reshaped
before their activation, recurrent, attention and convolution variants, several inputs,
gradient accumulation, dtype changes and hooks left behind. Every value is compared with a
direct computation by plain torch operations and autograd in float64 (population std).
"""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import depthlab.torch as dlt  # noqa: E402
from depthlab.probes import accel  # noqa: E402
from depthlab.probes.stats import SATURATION_RATIO  # noqa: E402

CE = nn.CrossEntropyLoss()
D = torch.float64


def _pstd(v: torch.Tensor) -> float:
    return float(v.detach().double().std(unbiased=False))


def _mean(v: torch.Tensor) -> float:
    return float(v.detach().double().mean())


def _values(frame, step: int = 0):
    return frame[frame.step == step].set_index(["layer", "quantity"]).value


def _hook_dicts(model: nn.Module) -> dict[str, int]:
    """Every hook registry of every module (and the with_kwargs/always-called marks): name ->
    number of entries, the non-empty ones."""
    names = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
             "_forward_hooks_with_kwargs", "_forward_pre_hooks_with_kwargs",
             "_forward_hooks_always_called", "_state_dict_hooks", "_load_state_dict_pre_hooks")
    out = {}
    for mname, m in model.named_modules():
        for n in names:
            d = getattr(m, n, None)
            if d:
                out[f"{mname or '<model>'}.{n}"] = len(d)
    return out


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


# -- fix 1: modules called by keyword ----------------------------------------------------------

class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin, self.act = nn.Linear(8, 8), nn.Tanh()

    def forward(self, hidden):
        return hidden + self.act(self.lin(hidden))


class _KeywordNet(nn.Module):
    """Every module called by keyword: a Linear, a Tanh, a residual block, a BatchNorm and a
    ReLU, a LeakyReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.inp, self.act = nn.Linear(4, 8), nn.Tanh()
        self.blk = _Block()
        self.mid, self.bn, self.relu = nn.Linear(8, 8), nn.BatchNorm1d(8), nn.ReLU()
        self.mid2, self.leaky = nn.Linear(8, 8), nn.LeakyReLU(0.1)
        self.out = nn.Linear(8, 3)

    def forward(self, x):
        h = self.act(input=self.inp(input=x))
        h = self.blk(hidden=h)
        h = self.relu(input=self.bn(input=self.mid(input=h)))
        h = self.leaky(input=self.mid2(input=h))
        return self.out(input=h)


def _keyword_reference(model: _KeywordNet, x: torch.Tensor, y: torch.Tensor) -> dict:
    """The values by plain operations and autograd."""
    s1 = model.inp(x)
    a1 = torch.tanh(s1)
    h = model.blk(a1)
    s3 = model.mid(h)
    b3 = model.bn(s3)
    a3 = torch.relu(b3)
    s4 = model.mid2(a3)
    a4 = nn.functional.leaky_relu(s4, 0.1)
    loss = CE(model.out(a4), y)
    g_s1, g_h, g_s4 = torch.autograd.grad(loss, [s1, h, s4])
    return {"a1": a1, "a3": a3, "a4": a4, "s4": s4, "g_s1": g_s1, "g_h": g_h, "g_s4": g_s4}


def test_modules_called_by_keyword_are_measured_as_positional_ones(paths):
    """``act(input=s)``, ``blk(hidden=h)``, ``bn(input=s)``, ``relu(input=s)``: the hooks read
    positional arguments only, so the Tanh's, ReLU's and LeakyReLU's layers had no ``act_*``,
    ``saturated_frac``, ``inactive_frac`` or ``dead_frac`` rows and the block no
    ``block_grad_std`` (5 rows of 8 missing); now the rows equal autograd's."""
    torch.manual_seed(0)
    model = _KeywordNet().double()
    x = torch.randn(16, 4, dtype=D)
    y = torch.randint(0, 3, (16,))
    ref = _keyword_reference(model, x, y)
    q = _values(dlt.probe(model, x, y, CE, percentiles=()))
    assert q[(1, "act_mean")] == pytest.approx(_mean(ref["a1"]), rel=1e-9)
    assert q[(1, "act_std")] == pytest.approx(_pstd(ref["a1"]), rel=1e-9)
    assert (1, "saturated_frac") in q.index
    assert q[(1, "grad_pre_std")] == pytest.approx(_pstd(ref["g_s1"]), rel=1e-9)
    blk = frame_block(dlt.probe(model, x, y, CE, percentiles=()), "blk")
    assert blk == pytest.approx(_pstd(ref["g_h"]), rel=1e-9)
    # layer 3 (mid): BatchNorm then ReLU, both by keyword
    assert q[(3, "act_std")] == pytest.approx(_pstd(ref["a3"]), rel=1e-9)
    want = float((ref["a3"] == 0).double().mean())
    assert q[(3, "inactive_frac")] == pytest.approx(want, abs=1e-12)
    # layer 4 (mid2): LeakyReLU by keyword
    assert q[(4, "act_std")] == pytest.approx(_pstd(ref["a4"]), rel=1e-9)
    assert q[(4, "inactive_frac")] == pytest.approx(float((ref["s4"] <= 0).double().mean()),
                                                    abs=1e-12)
    assert q[(4, "grad_pre_std")] == pytest.approx(_pstd(ref["g_s4"]), rel=1e-9)


def frame_block(frame, name: str) -> float:
    rows = frame[(frame.module == name) & (frame.quantity == "block_grad_std")]
    assert len(rows) == 1, frame[frame.quantity == "block_grad_std"]
    return float(rows.value.iloc[0])


def test_keyword_and_positional_calls_give_the_same_table():
    """The same network called positionally and by keyword: the same rows, the same values."""
    class Positional(_KeywordNet):
        def forward(self, x):
            h = self.blk(self.act(self.inp(x)))
            h = self.relu(self.bn(self.mid(h)))
            return self.out(self.leaky(self.mid2(h)))

    torch.manual_seed(0)
    kw = _KeywordNet().double()
    pos = Positional().double()
    pos.load_state_dict(kw.state_dict())
    x = torch.randn(16, 4, dtype=D)
    y = torch.randint(0, 3, (16,))
    a = dlt.probe(kw, x, y, CE)
    b = dlt.probe(pos, x, y, CE)
    assert list(a.quantity) == list(b.quantity)
    assert list(a.module) == list(b.module)
    assert a.value.to_numpy() == pytest.approx(b.value.to_numpy(), rel=1e-12, nan_ok=True)


def test_watch_of_a_model_called_by_keyword_records_its_rows_and_theory():
    """``model(x=x)`` in a watched loop: the block and follower rows at every recorded step,
    and the theory from that keyword input (the note said the forward got no tensor as its
    first positional argument); after the ``with`` block no hook or with_kwargs mark is left
    on any module."""
    class Top(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.act, self.fc2 = nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3)
            self.blk = _Block()
            self.blk.lin = nn.Linear(16, 16)

        def forward(self, x):
            return self.fc2(self.blk(hidden=self.act(input=self.fc1(x))))

    torch.manual_seed(0)
    model = Top().double()
    x = torch.randn(32, 6, dtype=D)
    y = torch.randint(0, 3, (32,))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    seen = {}
    with dlt.Watch(model, every=2) as watch:
        for step in range(4):
            opt.zero_grad()
            s1 = model.fc1(x)
            a1 = torch.tanh(s1)
            h = model.blk(a1)
            g_h, = torch.autograd.grad(CE(model.fc2(h), y), [h])
            seen[step] = (a1.detach(), g_h)
            loss = CE(model(x=x), y)
            loss.backward()
            watch.step(loss)
            opt.step()
    assert _hook_dicts(model) == {}
    frame = watch.frame()
    for step in (0, 2):
        q = _values(frame, step)
        a1, g_h = seen[step]
        assert q[(1, "act_std")] == pytest.approx(_pstd(a1), rel=1e-9)
        rows = frame[(frame.step == step) & (frame.quantity == "block_grad_std")]
        assert rows.value.tolist() == pytest.approx([_pstd(g_h)], rel=1e-9)


def test_watch_takes_the_theory_input_of_a_model_called_by_keyword():
    """``model(x=x)``: the theory is computed from that keyword input (the note said 'the
    model's forward got no tensor as its first positional argument')."""
    class Top(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.act, self.fc2 = nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3)

        def forward(self, x):
            return self.fc2(self.act(self.fc1(x)))

    torch.manual_seed(0)
    model = Top().double()
    x = torch.randn(32, 6, dtype=D)
    y = torch.randint(0, 3, (32,))
    with dlt.Watch(model, every=2) as watch:
        loss = CE(model(x=x), y)
        loss.backward()
        watch.step(loss)
    want = dlt.predict(model, x)
    assert watch.theory is not None, watch.theory_note
    got = watch.theory.set_index("layer").act_var
    pred = want[want.quantity == "act_std"].set_index("layer").predicted
    assert list(pred.index) == [1]
    assert got[1] == pytest.approx(pred[1] ** 2, rel=1e-9)


def test_keyword_input_of_a_block_without_gradient_is_found_as_a_block():
    """A residual block whose keyword input is the raw data (no autograd node): its input is
    replaced by an equal copy that requires grad for the block search, passed on by keyword
    (the search read ``args[0]`` only)."""
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blk = _Block()
            self.head = nn.Linear(8, 3)

        def forward(self, x):
            return self.head(self.blk(hidden=x))

    torch.manual_seed(0)
    model = Net().double()
    x = torch.randn(16, 8, dtype=D)
    y = torch.randint(0, 3, (16,))
    h = model.blk(x)
    g_h, = torch.autograd.grad(CE(model.head(h), y), [h])
    frame = dlt.probe(model, x, y, CE, percentiles=())
    assert frame_block(frame, "blk") == pytest.approx(_pstd(g_h), rel=1e-9)
    assert not x.requires_grad


# -- fix 2: a layer output reshaped (or transposed) before its activation ----------------------

def _dead(a: torch.Tensor, unit_axis: int) -> float:
    """Fraction of units (``unit_axis`` of ``a``, an activation output in the layer output's
    layout) whose every entry is 0."""
    a = a.movedim(unit_axis, 0).reshape(a.shape[unit_axis], -1)
    return float((a == 0).all(dim=1).double().mean())


@pytest.mark.parametrize("act", ["tanh", "relu", "relu_inplace", "leaky", "gelu"])
def test_an_activation_after_unflatten_is_the_layers_follower(paths, act):
    """``Linear(6, 24) -> Unflatten(1, (4, 6)) -> activation``: the activation read a view of
    the layer output, which no link matched, so layer 1 had no ``act_*``, ``dead_frac``,
    ``saturated_frac``/``inactive_frac`` rows; now they are the activation's, with the dead
    units counted among the layer's 24 features (3 of them dead: 0.125; none for the
    LeakyReLU), not the view's 6."""
    make = {"tanh": nn.Tanh, "relu": nn.ReLU, "relu_inplace": lambda: nn.ReLU(inplace=True),
            "leaky": lambda: nn.LeakyReLU(0.1), "gelu": nn.GELU}[act]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 24), nn.Unflatten(1, (4, 6)), make(), nn.Flatten(),
                          nn.Linear(24, 3)).double()
    with torch.no_grad():
        model[0].bias[[0, 7, 13]] = -60.0  # three dead units (tanh: saturated to -1)
    x = torch.randn(16, 6, dtype=D)
    y = torch.randint(0, 3, (16,))
    s = model[0](x).detach()
    a = make()(s.clone())
    q = _values(dlt.probe(model, x, y, CE, percentiles=()))
    assert q[(1, "act_mean")] == pytest.approx(_mean(a), rel=1e-9)
    assert q[(1, "act_std")] == pytest.approx(_pstd(a), rel=1e-9)
    deriv = torch.func.vmap(torch.func.grad(lambda v: make()(v.clone())))(s.reshape(-1)) \
        .reshape(s.shape)
    assert q[(1, "dead_frac")] == pytest.approx(_dead(deriv, 1), abs=1e-12)
    assert q[(1, "dead_frac")] == pytest.approx(0.0 if act == "leaky" else 3 / 24, abs=1e-12)
    if act == "tanh":
        assert (1, "saturated_frac") in q.index
    else:
        assert q[(1, "inactive_frac")] == pytest.approx(float((s <= 0).double().mean()),
                                                        abs=1e-12)


class _Conformerish(nn.Module):
    """A Linear on ``(N, T, C)``, transposed to ``(N, C, T)`` for a BatchNorm1d, then ReLU; and a
    DCGAN-style Linear reshaped to ``(N, C, H, W)`` for a BatchNorm2d, then a PReLU per
    channel."""

    def __init__(self) -> None:
        super().__init__()
        self.proj, self.bn, self.act = nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU()
        self.fc, self.bn2, self.prelu = nn.Linear(8 * 7, 4 * 3 * 3), nn.BatchNorm2d(4), \
            nn.PReLU(4, init=0.0)
        self.head = nn.Linear(36, 3)

    def forward(self, x):
        h = self.act(self.bn(self.proj(x).transpose(1, 2)))  # (N, 8, T)
        g = self.fc(h.flatten(1)).view(-1, 4, 3, 3)
        return self.head(self.prelu(self.bn2(g)).flatten(1))


def test_a_transposed_or_viewed_layer_output_through_a_norm_keeps_the_layers_units(paths):
    """A norm between the reshape and the activation: the norm's rows and the activation's,
    ``dead_frac`` per the layer's own units (``proj``'s 8 features, ``fc``'s 36), the PReLU's
    slope per channel of the view (a derivative taken on the layer's layout would have
    mixed them up)."""
    torch.manual_seed(0)
    model = _Conformerish().double()
    with torch.no_grad():
        model.bn.weight[[1, 5]] = 0.0
        model.bn.bias[[1, 5]] = -1.0  # units 1 and 5 of proj: dead after the ReLU
        model.prelu.weight[2] = 0.25  # channel 2 leaks; the others are ReLUs
        model.bn2.bias[:] = torch.tensor([0.0, -30.0, -30.0, 0.0], dtype=D)
    x = torch.randn(6, 7, 5, dtype=D)
    y = torch.randint(0, 3, (6,))
    s1 = model.proj(x)
    b1 = model.bn(s1.transpose(1, 2))
    a1 = torch.relu(b1)  # (N, 8, T)
    s2 = model.fc(a1.flatten(1))
    b2 = model.bn2(s2.view(-1, 4, 3, 3))
    a2 = model.prelu(b2)
    q = _values(dlt.probe(model, x, y, CE, percentiles=()))
    assert q[(1, "act_std")] == pytest.approx(_pstd(a1), rel=1e-9)
    assert q[(1, "dead_frac")] == pytest.approx(_dead(a1, 1), abs=1e-12)
    assert q[(1, "dead_frac")] == pytest.approx(2 / 8, abs=1e-12)
    assert q[(2, "act_std")] == pytest.approx(_pstd(a2), rel=1e-9)
    # fc's units: its 36 features; channel 1 (bias -30, slope 0): 9 dead features, channel 2
    # (slope 0.25): none
    d2 = torch.where(b2 > 0, 1.0, model.prelu.weight.detach().view(1, 4, 1, 1).expand_as(b2))
    assert q[(2, "dead_frac")] == pytest.approx(_dead(d2.reshape(6, 36), 1), abs=1e-12)
    assert q[(2, "dead_frac")] == pytest.approx(9 / 36, abs=1e-12)


def test_a_slice_of_a_layer_output_is_no_follower():
    """An activation of part of a layer's output (a slice: a view with fewer entries) is not
    the layer's follower: its statistics would be of another tensor."""
    class Half(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc, self.act, self.head = nn.Linear(4, 8), nn.Tanh(), nn.Linear(4, 2)

        def forward(self, x):
            return self.head(self.act(self.fc(x)[:, :4]))

    torch.manual_seed(0)
    model = Half().double()
    x = torch.randn(8, 4, dtype=D)
    q = _values(dlt.probe(model, x, torch.randint(0, 2, (8,)), CE, percentiles=()))
    assert (1, "pre_std") in q.index and (1, "act_std") not in q.index


def test_watch_of_a_relu_after_a_view_at_every_step(paths):
    """The same in a watched loop, every step recorded (the kernels' fused layer+ReLU read
    applies only to a ReLU reading the layer output itself): each step's ``act_*`` and
    ``dead_frac`` those of its own batch."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 12), nn.Unflatten(1, (3, 4)), nn.ReLU(), nn.Flatten(),
                          nn.Linear(12, 3)).double()
    with torch.no_grad():
        model[0].bias[[2, 9]] = -60.0
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    seen = []
    with dlt.Watch(model, every=1, theory=False) as watch:
        for _ in range(3):
            x = torch.randn(16, 6, dtype=D)
            y = torch.randint(0, 3, (16,))
            opt.zero_grad()
            a = torch.relu(model[0](x)).detach()
            seen.append(a)
            loss = CE(model(x), y)
            loss.backward()
            watch.step(loss)
            opt.step()
    frame = watch.frame()
    for step, a in enumerate(seen):
        q = _values(frame, step)
        assert q[(1, "act_std")] == pytest.approx(_pstd(a), rel=1e-9)
        assert q[(1, "dead_frac")] == pytest.approx(_dead(a, 1), abs=1e-12)
        assert q[(1, "dead_frac")] == pytest.approx(2 / 12, abs=1e-12)
    assert _hook_dicts(model) == {}


# -- checked and found correct (coverage: each row against autograd) --------------------------

class _Recurrent(nn.Module):
    def __init__(self, kind: str, batch_first: bool, bidirectional: bool, layers: int,
                 packed: bool = False, nonlinearity: str = "tanh") -> None:
        super().__init__()
        cls = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}[kind]
        kw = {"nonlinearity": nonlinearity} if kind == "rnn" else {}
        self.bf, self.packed = batch_first, packed
        self.rnn = cls(4, 6, num_layers=layers, batch_first=batch_first,
                       bidirectional=bidirectional, **kw)
        self.head = nn.Linear(6 * (2 if bidirectional else 1), 3)

    def forward(self, x, lengths=None):
        if self.packed:
            p = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=self.bf,
                                                  enforce_sorted=False)
            _, h = self.rnn(p)
            h = h[0] if isinstance(h, tuple) else h
            return self.head(torch.cat([h[-2], h[-1]], 1) if self.rnn.bidirectional else h[-1])
        out, _ = self.rnn(x)
        return self.head(out[:, -1] if self.bf else out[-1])


class _Attention(nn.Module):
    def __init__(self, batch_first: bool) -> None:
        super().__init__()
        self.bf = batch_first
        self.inp, self.mha = nn.Linear(4, 8), nn.MultiheadAttention(8, 2, batch_first=batch_first)
        self.head = nn.Linear(8, 3)

    def forward(self, x, mask=None, pad=None):
        h = self.inp(x)
        a, _ = self.mha(h, h, h, attn_mask=mask, key_padding_mask=pad, need_weights=False)
        return self.head(a.mean(1 if self.bf else 0))


class _Bags(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.e, self.bag = nn.Embedding(10, 6), nn.EmbeddingBag(10, 6, mode="mean")
        self.act, self.h = nn.Tanh(), nn.Linear(6, 3)

    def forward(self, ids):
        return self.h(self.act(self.e(ids).mean(1) + self.bag(ids)))


def _cases():
    r = lambda *s: torch.randn(*s, dtype=D)  # noqa: E731
    causal = torch.triu(torch.ones(5, 5, dtype=torch.bool), 1)
    pad = torch.tensor([[False] * 5, [False] * 3 + [True] * 2, [False] * 4 + [True]])
    lengths = torch.tensor([5, 2, 3])
    return {
        "rnn-relu-time-first-2-layers": (lambda: _Recurrent("rnn", False, False, 2, False, "relu"),
                                         r(5, 3, 4), ["rnn", "head"], {}, {}),
        "gru-time-first-bidirectional": (lambda: _Recurrent("gru", False, True, 2),
                                         r(5, 3, 4), ["rnn", "head"], {}, {}),
        "lstm-batch-first-bidirectional": (lambda: _Recurrent("lstm", True, True, 2),
                                           r(3, 5, 4), ["rnn", "head"], {}, {}),
        "gru-packed-bidirectional": (lambda: _Recurrent("gru", True, True, 2, True),
                                     (r(3, 5, 4), lengths), ["rnn", "head"], {}, {}),
        "lstm-packed": (lambda: _Recurrent("lstm", True, False, 2, True),
                        (r(3, 5, 4), lengths), ["rnn", "head"], {}, {}),
        "attention-masks-time-first": (lambda: _Attention(False), (r(5, 3, 4), causal, pad),
                                       ["inp", "mha", "mha.out_proj", "head"], {}, {}),
        "attention-masks-batch-first": (lambda: _Attention(True), (r(3, 5, 4), causal, pad),
                                        ["inp", "mha", "mha.out_proj", "head"], {}, {}),
        "grouped-and-depthwise-conv": (
            lambda: nn.Sequential(nn.Conv2d(4, 8, 3, groups=2), nn.ReLU(),
                                  nn.Conv2d(8, 8, 3, groups=8), nn.BatchNorm2d(8), nn.SiLU(),
                                  nn.Flatten(), nn.Linear(8, 3)),
            r(3, 4, 5, 5), ["0", "2", "6"], {"0": ("1",), "2": ("3", "4")}, {"0": 1, "2": 1}),
        "conv-transpose-elu": (
            lambda: nn.Sequential(nn.ConvTranspose2d(2, 4, 3, stride=2), nn.ELU(), nn.Flatten(),
                                  nn.Linear(4 * 49, 3)),
            r(3, 2, 3, 3), ["0", "3"], {"0": ("1",)}, {"0": 1}),
        "embedding-and-bag": (_Bags, torch.randint(0, 10, (3, 5)), ["e", "bag", "h"], {}, {}),
    }


@pytest.mark.parametrize("name", list(_cases()))
def test_recurrent_attention_conv_and_embedding_rows_match_autograd(name):
    """Every row of ``dlt.probe`` against the autograd reference of tests/test_torch_probe.py
    (layer outputs: the first output tensor, a packed sequence's data; followers per unit;
    time-first inputs; causal and padding masks with ``need_weights=False``)."""
    from test_torch_probe_round5 import check

    make, x, layers, followers, axis = _cases()[name]
    torch.manual_seed(1)
    check(make(), x, layers, followers, axis, y=torch.randint(0, 3, (3,)))


def test_accumulation_with_no_grad_validation_between_micro_batches():
    """Three micro-batches per step with a validation forward under ``no_grad`` before each
    and before ``watch.step``: the layer rows are the last micro-batch's (its own loss / 3
    as the gradient), ``weight_grad_*`` the accumulated ``.grad``; no hook left after."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    want = {}
    with dlt.Watch(model, every=2, theory=False) as watch:
        for step in range(3):
            batches = [(torch.randn(6, 5, dtype=D), torch.randint(0, 3, (6,)))
                       for _ in range(3)]
            ref = copy.deepcopy(model)  # (a copy: the Watch's hooks on it are inert)
            x, y = batches[-1]
            s = ref[0](x)
            a = torch.tanh(s)
            g_s, = torch.autograd.grad(CE(ref[2](a), y) / 3, [s])
            opt.zero_grad()
            for x, y in batches:
                with torch.no_grad():
                    model(torch.randn(20, 5, dtype=D))
                loss = CE(model(x), y) / 3
                loss.backward()
            with torch.no_grad():
                model(torch.randn(20, 5, dtype=D))
            want[step] = (s.detach(), a.detach(), g_s, model[0].weight.grad.clone())
            watch.step(loss)
            opt.step()
    assert _hook_dicts(model) == {}
    frame = watch.frame()
    for step in (0, 2):
        q = _values(frame, step)
        s, a, g_s, gw = want[step]
        assert q[(1, "pre_std")] == pytest.approx(_pstd(s), rel=1e-9)
        assert q[(1, "act_std")] == pytest.approx(_pstd(a), rel=1e-9)
        assert q[(1, "grad_pre_std")] == pytest.approx(_pstd(g_s), rel=1e-9)
        assert q[(1, "weight_grad_std")] == pytest.approx(_pstd(gw), rel=1e-9)


def test_no_hook_left_after_a_forward_that_raises():
    """A forward raising inside ``with Watch`` and inside ``dlt.probe``: no hook, no
    with_kwargs mark left on any module, and the model runs without them afterwards."""
    class Boom(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.t, self.b, self.go = nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 2), True

        def forward(self, x):
            h = self.t(input=self.a(x))
            if self.go:
                raise RuntimeError("boom")
            return self.b(h)

    model = Boom()
    with pytest.raises(RuntimeError, match="boom"):
        with dlt.Watch(model, every=1, theory=False):
            model(torch.randn(3, 4))
    assert _hook_dicts(model) == {}
    with pytest.raises(RuntimeError, match="boom"):
        dlt.probe(model, torch.randn(3, 4), torch.randint(0, 2, (3,)), CE)
    assert _hook_dicts(model) == {}


def test_a_model_moved_to_float64_mid_run():
    """``model.double()`` between recorded steps: the later rows equal float64 autograd, the
    update ratio is that of the float64 weights against their values before the step."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.GELU(), nn.Linear(8, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    want = {}
    with dlt.Watch(model, every=1, theory=False) as watch:
        for step in range(4):
            if step == 2:
                model.double()
                opt = torch.optim.SGD(model.parameters(), lr=0.1)
            dtype = model[0].weight.dtype
            x, y = torch.randn(6, 5, dtype=dtype), torch.randint(0, 3, (6,))
            want[step] = (nn.functional.gelu(model[0](x)).detach(),
                          model[2].weight.detach().clone().double())
            opt.zero_grad()
            loss = CE(model(x), y)
            loss.backward()
            watch.step(loss)
            opt.step()
    frame = watch.frame()
    for step in (2, 3):
        q = _values(frame, step)
        a, w = want[step]
        assert a.dtype == D
        assert q[(1, "act_std")] == pytest.approx(_pstd(a), rel=1e-12)
        before = want[step - 1][1]
        assert q[(2, "update_ratio")] == pytest.approx(
            float((w - before).norm() / before.norm()), rel=1e-6)


# -- fix 3: two activation modules reading one layer output ------------------------------------

@pytest.mark.parametrize("second", ["sigmoid", "relu"])
def test_a_gate_reading_the_layer_output_is_not_pooled_with_its_activation(paths, second):
    """``tanh(h) * sigmoid(h)`` (a gated unit on one pre-activation): both modules read ``h``
    and both were taken for its follower, their outputs pooled (at unit scale: ``act_std``
    0.465, the std of neither, tanh's 0.505 or the sigmoid's 0.150), saturation counted
    against two thresholds, a ReLU gate's inactive entries given to the tanh's layer;
    now the first module to read the output is its follower (rows of tanh(h) alone, named by
    it) and a second one adds nothing."""
    class Gated(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin, self.act, self.head = nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)
            self.gate = nn.Sigmoid() if second == "sigmoid" else nn.ReLU()

        def forward(self, x):
            h = self.lin(x)
            return self.head(self.act(h) * self.gate(h))

    torch.manual_seed(0)
    model = Gated().double()
    x = torch.randn(8, 4, dtype=D) * 4  # some saturated entries
    y = torch.randint(0, 3, (8,))
    h = model.lin(x).detach()
    a = torch.tanh(h)
    frame = dlt.probe(model, x, y, CE, percentiles=())
    q = _values(frame)
    assert q[(1, "act_mean")] == pytest.approx(_mean(a), rel=1e-9)
    assert q[(1, "act_std")] == pytest.approx(_pstd(a), rel=1e-9)
    saturated = float((1 - a ** 2 < SATURATION_RATIO).double().mean())  # tanh: sup|f'| = 1
    assert 0 < saturated < 1
    assert q[(1, "saturated_frac")] == pytest.approx(saturated, abs=1e-12)
    assert (1, "inactive_frac") not in q.index  # the ReLU gate's count: not the tanh's layer
    assert [i.activation for i in dlt.discover(model, x)][0] == "act"
