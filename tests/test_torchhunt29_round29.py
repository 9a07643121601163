"""Round 29 (torchhunt29): dlt.probe / dlt.predict on models nobody had shown them."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

import depthlab.torch as dlt  # noqa: E402


class _Block(nn.Module):
    """A residual block ``post(x + c2(relu(c1(x))))`` written in one of several styles."""

    def __init__(self, c: int, style: str) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(c, c, 3, padding=1)
        self.c2 = nn.Conv2d(c, c, 3, padding=1)
        self.style = style
        if style == "module":
            self.act = nn.LeakyReLU(0.1)

    def forward(self, x):
        h = self.c2(F.relu(self.c1(x)))
        if self.style == "module":
            return self.act(x + h)
        if self.style == "functional":  # kuangliu's pytorch-cifar BasicBlock: F.relu(out)
            return F.leaky_relu(x + h, 0.1)
        if self.style == "inplace":
            h += x
            return F.leaky_relu(h, 0.1, inplace=True)
        x = x.clone()  # "clone": the sum built in place on a copy of the input
        x += h
        return F.leaky_relu(x, 0.1)


class _Net(nn.Module):
    def __init__(self, style: str) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.b1 = _Block(8, style)
        self.pool = nn.MaxPool2d(2)
        self.b2 = _Block(8, style)
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        return self.head(self.b2(self.pool(self.b1(F.relu(self.stem(x))))).mean((2, 3)))


_X = torch.randn(6, 3, 8, 8, generator=torch.Generator().manual_seed(1))
_Y = torch.randint(0, 5, (6,), generator=torch.Generator().manual_seed(2))


@pytest.fixture(scope="module")
def module_post_prediction():
    torch.manual_seed(0)
    return dlt.predict(_Net("module"), _X, _Y, nn.CrossEntropyLoss())


@pytest.mark.parametrize("style", ["functional", "inplace", "clone"])
def test_predict_takes_a_functional_activation_after_a_residual_add(style,
                                                                    module_post_prediction):
    """F.leaky_relu(x + F(x)) (also in place, and x = x.clone(); x += h) was refused as 'not
    the plain sum of the branch and the shortcut'; it is the block with the module."""
    x, y, ref = _X, _Y, module_post_prediction
    torch.manual_seed(0)
    got = dlt.predict(_Net(style), x, y, nn.CrossEntropyLoss())
    assert got[["layer", "module", "quantity"]].equals(ref[["layer", "module", "quantity"]])
    assert got["predicted"].to_numpy() == pytest.approx(ref["predicted"].to_numpy(), rel=1e-9)
    assert got["value"].to_numpy() == pytest.approx(ref["value"].to_numpy(), rel=1e-6)


class _Sum(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.l = nn.Linear(16, 16)

    def forward(self, x):
        return x + self.l(x)


class _OuterAct(nn.Module):
    """Blocks returning the plain sum, the activation applied by the model's forward."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.a, self.b1, self.b2, self.h = nn.Linear(8, 16), _Sum(), _Sum(), nn.Linear(16, 2)
        self.r = nn.ELU(0.5)
        self.mode = mode

    def forward(self, x):
        h = F.relu(self.a(x))
        if self.mode == "module":
            h = self.r(self.b1(h))
        elif self.mode == "function":
            h = F.elu(self.b1(h), 0.5)
        else:  # in place on the block's output
            h = F.elu(self.b1(h), 0.5, inplace=True)
        return self.h(self.b2(h))


@pytest.mark.parametrize("mode", ["function", "inplace"])
def test_predict_takes_a_functional_activation_on_a_blocks_output(mode):
    """F.elu(block(h), 0.5) was refused ('the input of residual block 'b2' is not the previous
    layer's output') and its in-place form too ('changed in place after x made it'), while
    nn.ELU(0.5) after the block was its post activation: now the same prediction."""
    x = torch.randn(64, 8, generator=torch.Generator().manual_seed(3))
    y = torch.randint(0, 2, (64,), generator=torch.Generator().manual_seed(4))
    torch.manual_seed(0)
    ref = dlt.predict(_OuterAct("module"), x, y, nn.CrossEntropyLoss())
    torch.manual_seed(0)
    got = dlt.predict(_OuterAct(mode), x, y, nn.CrossEntropyLoss())
    assert got["predicted"].to_numpy() == pytest.approx(ref["predicted"].to_numpy(), rel=1e-9)


class _LazyHead(nn.Module):
    """Creates a submodule and a parameter in its first forward (a lazily built head)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 8)

    def forward(self, x):
        if not hasattr(self, "head"):
            self.head = nn.Linear(8, 3)
        if "scale" not in self._parameters:
            self.scale = nn.Parameter(torch.ones(()))
        return self.head(torch.relu(self.a(x))) * self.scale


@pytest.mark.parametrize("fn", ["probe", "predict"])
def test_a_submodule_the_forward_creates_is_not_left_behind(fn):
    """A submodule and a parameter created in the model's first forward stayed after
    dlt.probe/dlt.predict (the model grew a 'head' the caller's optimizer never saw)."""
    model = _LazyHead()
    x, y = torch.randn(5, 4), torch.randint(0, 3, (5,))
    if fn == "probe":  # not measured, and said so
        with pytest.warns(RuntimeWarning, match="created the weight layer.*'head'"):
            df = dlt.probe(model, x, y, nn.CrossEntropyLoss())
        assert set(df.module) == {"", "a"}
    else:
        try:
            dlt.predict(model, x, y, nn.CrossEntropyLoss())
        except ValueError:
            pass  # predict may refuse the model; it must still leave it as found
    assert not hasattr(model, "head") and "scale" not in model._parameters
    assert [n for n, _ in model.named_parameters()] == ["a.weight", "a.bias"]


class _CountingLoss:
    """A loss that is no nn.Module and keeps state: a counter, a list, a tensor, a module."""

    def __init__(self) -> None:
        self.calls = 0
        self.seen: list[int] = []
        self.total = torch.zeros(())
        self.inner = nn.CrossEntropyLoss()
        self.inner.register_buffer("n", torch.zeros(()))

    def __call__(self, out, y):
        self.calls += 1
        self.seen.append(len(y))
        self.total += 1
        self.inner.n += 1
        return self.inner(out, y)


@pytest.mark.parametrize("fn", ["probe", "predict"])
def test_a_stateful_loss_object_that_is_no_module_is_left_as_found(fn):
    """A callable loss object (not an nn.Module) had its counter, list, tensor and inner
    module's buffer advanced by dlt.probe (1) and dlt.predict (3 calls)."""
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    x, y = torch.randn(5, 4), torch.randint(0, 3, (5,))
    loss = _CountingLoss()
    getattr(dlt, fn)(model, x, y, loss)
    assert (loss.calls, loss.seen, float(loss.total), float(loss.inner.n)) == (0, [], 0.0, 0.0)
