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


def _transposed_as_conv(ct: nn.ConvTranspose2d) -> nn.Conv2d:
    """The Conv2d computing what a stride-1 ConvTranspose2d computes: weight (in, out/g, k, k)
    per group transposed to (out, in/g, k, k) and flipped, padding k - 1 - p."""
    g, k, p = ct.groups, ct.kernel_size[0], ct.padding[0]
    conv = nn.Conv2d(ct.in_channels, ct.out_channels, k, padding=k - 1 - p, groups=g)
    w = ct.weight.detach()
    cin, cout = w.shape[0] // g, w.shape[1]
    w = w.reshape(g, cin, cout, k, k).transpose(1, 2).reshape(g * cout, cin, k, k)
    with torch.no_grad():
        conv.weight.copy_(w.flip(-1, -2))
        conv.bias.copy_(ct.bias)
    return conv


def test_predict_models_a_conv_transpose_as_the_conv_it_equals():
    """ConvTranspose layers were refused ('predict() supports chains of Linear/Conv layers;
    layer '0' is a ConvTranspose2d'): a DCGAN generator or a decoder had no theory. Its weight
    is (in, out / groups, *kernel), the reverse of a conv's: a stride-1 ConvTranspose2d with
    groups is a conv with the weights transposed per group, and predicted as that conv."""
    torch.manual_seed(0)
    t = nn.Sequential(nn.ConvTranspose2d(6, 8, 3, padding=1, groups=2), nn.BatchNorm2d(8),
                      nn.Tanh(), nn.ConvTranspose2d(8, 4, 3, groups=2), nn.GELU(),
                      nn.Flatten(), nn.Linear(4 * 7 * 7, 3))
    c = nn.Sequential(_transposed_as_conv(t[0]), t[1], t[2], _transposed_as_conv(t[3]), t[4],
                      t[5], t[6])
    x = torch.randn(8, 6, 5, 5, generator=torch.Generator().manual_seed(5))
    y = torch.randint(0, 3, (8,), generator=torch.Generator().manual_seed(6))
    assert torch.allclose(t(x), c(x), atol=1e-5)
    got = dlt.predict(t, x, y, nn.CrossEntropyLoss())
    ref = dlt.predict(c, x, y, nn.CrossEntropyLoss())
    assert got[["layer", "quantity"]].equals(ref[["layer", "quantity"]])
    assert got["predicted"].to_numpy() == pytest.approx(ref["predicted"].to_numpy(), rel=1e-6)


def test_predict_of_a_strided_conv_transpose_chain_matches_the_measurement():
    """Stride 2 (an output position receives k / s taps on average, the cropped border fewer):
    predicted within 10% of the measurement on a tanh chain of 64 channels (with torch.nn.init's
    fans, out_channels * k for the fan-in, the second layer's pre_std was 1.4x off)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.ConvTranspose1d(16, 64, 4, stride=2, padding=1), nn.Tanh(),
                          nn.ConvTranspose1d(64, 64, 3, stride=2), nn.Tanh(),
                          nn.ConvTranspose1d(64, 64, 5, stride=2, padding=2, output_padding=1),
                          nn.Tanh(), nn.Conv1d(64, 64, 3))
    x = torch.randn(64, 16, 6)
    y = torch.randn(64, 64, 48)
    df = dlt.predict(model, x, y, nn.MSELoss())
    ratio = (df.predicted / df.value).to_numpy()
    assert len(df) == 11 and ratio.min() > 0.9 and ratio.max() < 1.1, df


class _ClipsInForward(nn.Module):
    """Clips and rescales its own weights in place inside the forward (a WGAN critic's clipping
    or a max-norm constraint written into ``forward``)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2)

    def forward(self, x):
        with torch.no_grad():
            self.a.weight.clamp_(-0.1, 0.1)
            self.b.weight.data.mul_(0.5)
            torch.clamp(self.b.bias, -0.01, 0.01, out=self.b.bias)
        return self.b(torch.relu(self.a(x)))


@pytest.mark.parametrize("fn", ["probe", "predict"])
def test_weights_the_forward_changes_in_place_are_left_as_found(fn):
    """dlt.probe/dlt.predict left the weights a forward clips or rescales in place changed
    (the docstring promises the parameters as found)."""
    torch.manual_seed(0)
    model = _ClipsInForward()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    x, y = torch.randn(5, 4), torch.randint(0, 2, (5,))
    try:
        getattr(dlt, fn)(model, x, y, nn.CrossEntropyLoss())
    except ValueError:
        pass  # predict may refuse the model; it must still leave it as found
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]), n


class _ActBranch(nn.Module):
    """``x + f(l(x))``: a branch that ends with its activation."""

    def __init__(self, functional: bool) -> None:
        super().__init__()
        self.l = nn.Linear(16, 16)
        self.act = nn.Tanh()
        self.functional = functional

    def forward(self, x):
        return x + (torch.tanh(self.l(x)) if self.functional else self.act(self.l(x)))


def test_predict_takes_a_branch_ending_with_a_functional_activation():
    """x + torch.tanh(self.l(x)) was refused ('not the plain sum of the branch and the
    shortcut': only what layers read was searched for functional activations) while
    x + nn.Tanh()(self.l(x)) was predicted: now the same prediction."""
    x = torch.randn(64, 8, generator=torch.Generator().manual_seed(7))
    y = torch.randint(0, 3, (64,), generator=torch.Generator().manual_seed(8))
    preds = []
    for functional in (False, True):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), _ActBranch(functional),
                              _ActBranch(functional), nn.Linear(16, 3))
        preds.append(dlt.predict(model, x, y, nn.CrossEntropyLoss()))
    assert preds[1][["layer", "quantity"]].equals(preds[0][["layer", "quantity"]])
    assert preds[1]["predicted"].to_numpy() == pytest.approx(preds[0]["predicted"].to_numpy(),
                                                             rel=1e-9)


@pytest.mark.parametrize("kind", ["conv", "conv_transpose"])
def test_predict_of_one_unbatched_image_is_that_of_a_batch_of_one(kind):
    """An unbatched image, which torch's convs take ((C, H, W) for a Conv2d), had its first
    dimension read as the examples (channels taken for examples): the second layer's pre_std
    was predicted 1.17x that of the same image as a batch of one."""
    torch.manual_seed(0)
    first = nn.Conv2d(3, 6, 3) if kind == "conv" else nn.ConvTranspose2d(3, 6, 3, padding=2)
    model = nn.Sequential(first, nn.Tanh(), nn.Conv2d(6, 2, 3))
    x = torch.randn(3, 7, 7) * torch.tensor([0.2, 1.0, 3.0])[:, None, None]
    y = torch.randn(2, 3, 3)
    got = dlt.predict(model, x, y, nn.MSELoss())
    ref = dlt.predict(model, x[None], y[None], nn.MSELoss())
    assert got["predicted"].to_numpy() == pytest.approx(ref["predicted"].to_numpy(), rel=1e-9)
