"""depthlab.torch probes and Watch on the call styles and models practitioners use (round 15):
modules called by keyword (``act(input=h)``, ``blk(hidden=h)``), layer outputs reshaped
before their activation, recurrent, attention and convolution variants, several inputs,
gradient accumulation, dtype changes and hooks left behind. Every value is compared with a
direct computation by plain torch operations and autograd in float64 (population std).
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import depthlab.torch as dlt  # noqa: E402
from depthlab.probes import accel  # noqa: E402

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
