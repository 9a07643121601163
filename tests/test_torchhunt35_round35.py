"""Round 35 (torchhunt35): dlt.probe / dlt.Watch on hand-written layers whose bias is a
broadcast-shaped parameter of >= 2 dimensions (``(1, out)``, ``(1, C, 1, 1)``), checked against
a direct autograd computation."""

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

import depthlab.torch as dlt  # noqa: E402


class _Conv(nn.Module):
    """A convolution written by hand: its bias a (1, C, 1, 1) parameter, as often written."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(cout, cin, 3, 3, dtype=torch.float64) * 0.2)
        self.b = nn.Parameter(torch.zeros(1, cout, 1, 1, dtype=torch.float64))

    def forward(self, x):
        return F.conv2d(x, self.w, padding=1) + self.b


class _Linear(nn.Module):
    """``x @ W + b`` with ``W`` (in, out) and ``b`` (1, out)."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.W = nn.Parameter(torch.randn(n_in, n_out, dtype=torch.float64) / n_in ** 0.5)
        self.b = nn.Parameter(torch.full((1, n_out), 0.5, dtype=torch.float64))

    def forward(self, x):
        return x @ self.W + self.b


def _std(t) -> float:
    return float(t.detach().double().std(unbiased=False))


def _rows(df, module: str) -> dict:
    return {q: v for m, q, v in zip(df.module, df.quantity, df.value) if m == module}


def test_a_hand_written_convs_broadcast_bias_is_no_weight_and_its_dead_channel_counts():
    torch.manual_seed(0)
    model = nn.Sequential(_Conv(3, 4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 3).double())
    with torch.no_grad():
        model[0].b[0, 0] = -50.0  # channel 0 below 0 everywhere: dead
    x = torch.randn(8, 3, 6, 6, dtype=torch.float64)
    y = torch.randint(0, 3, (8,))
    df = dlt.probe(model, x, y, nn.CrossEntropyLoss())
    got = _rows(df, "0")
    nn.CrossEntropyLoss()(model(x), y).backward()
    w = model[0].w
    # the bias pooled with the kernel made weight_std 4.71 (0.21); the units were read along
    # the image width (two weights, so no convolution layout): dead_frac 0.0 for 1 of 4
    assert got["weight_std"] == pytest.approx(_std(w), rel=1e-9)
    assert got["weight_grad_std"] == pytest.approx(_std(w.grad), rel=1e-9)
    assert got["dead_frac"] == pytest.approx(0.25)


def test_watch_update_ratio_of_a_hand_written_linear_is_its_matrix_s():
    torch.manual_seed(1)
    model = nn.Sequential(_Linear(6, 16), nn.Tanh(), _Linear(16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    x = torch.randn(32, 6, dtype=torch.float64)
    y = torch.randint(0, 3, (32,))
    before = model[0].W.detach().clone()
    with dlt.Watch(model, every=1, theory=False) as watch:
        for _ in range(2):
            opt.zero_grad()
            loss = nn.CrossEntropyLoss()(model(x), y)
            loss.backward()
            watch.step(loss)
            opt.step()
            if _ == 0:
                after = model[0].W.detach().clone()
    df = watch.frame()
    got = {q: v for s, m, q, v in zip(df.step, df.module, df.quantity, df.value)
           if s == 1 and m == "0"}
    assert got["update_ratio"] == pytest.approx(float((after - before).norm() / before.norm()),
                                                rel=1e-9)
    assert got["weight_std"] == pytest.approx(_std(after), rel=1e-9)


class _Pointwise(nn.Module):
    """A 1x1 convolution written as a product from the left: ``W @ x``, x (N, C, L)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.W = nn.Parameter(torch.randn(cout, cin, dtype=torch.float64) / cin ** 0.5)
        self.b = nn.Parameter(torch.zeros(cout, 1, dtype=torch.float64))

    def forward(self, x):
        return torch.matmul(self.W, x) + self.b


def test_dead_frac_of_a_channel_mixing_product_counts_its_channels():
    torch.manual_seed(2)
    model = nn.Sequential(_Pointwise(3, 4), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 10, 3).double())
    with torch.no_grad():
        model[0].b[1] = -50.0
    x = torch.randn(8, 3, 10, dtype=torch.float64)
    df = dlt.probe(model, x, torch.randint(0, 3, (8,)), nn.CrossEntropyLoss())
    s = model[0](x).detach()
    dead = (s <= 0).all(dim=2).all(dim=0).double().mean()  # channel 1: 1 of 4
    assert _rows(df, "0")["dead_frac"] == pytest.approx(float(dead)) == 0.25  # was 0.0


class _Dense(nn.Module):
    """A Keras-style layer written by hand: its own weight and its activation as a child."""

    def __init__(self, n_in: int, n_out: int, act: nn.Module) -> None:
        super().__init__()
        self.W = nn.Parameter(torch.randn(n_out, n_in, dtype=torch.float64) / n_in ** 0.5)
        self.b = nn.Parameter(torch.randn(n_out, dtype=torch.float64) * 0.5)
        self.act = act

    def forward(self, x):
        return self.act(F.linear(x, self.W, self.b))


def _twin(dense: nn.Sequential) -> nn.Sequential:
    """The same network of nn.Linear and activation modules."""
    mods = []
    for d in dense:
        lin = nn.Linear(d.W.shape[1], d.W.shape[0]).double()
        with torch.no_grad():
            lin.weight.copy_(d.W)
            lin.bias.copy_(d.b)
        mods += [lin, type(d.act)(**({"inplace": True} if isinstance(d.act, nn.ReLU) else {}))]
    return nn.Sequential(*mods[:-1])


def _by_layer(df) -> dict:
    return {(int(s), int(l), q): v for s, l, q, v in zip(df.step, df.layer, df.quantity, df.value)}


def test_a_dense_layer_calling_its_activation_child_is_measured_as_linear_then_activation():
    torch.manual_seed(3)
    model = nn.Sequential(_Dense(6, 16, nn.ReLU(inplace=True)), _Dense(16, 16, nn.Tanh()),
                          _Dense(16, 3, nn.Identity()))
    twin = _twin(model)
    x = torch.randn(32, 6, dtype=torch.float64)
    y = torch.randint(0, 3, (32,))
    got = _by_layer(dlt.probe(model, x, y, nn.CrossEntropyLoss()))
    want = _by_layer(dlt.probe(twin, x, y, nn.CrossEntropyLoss()))
    # pre_* were the activation's output (pre_p15 0.0 after the ReLU), no act_*/dead_frac
    assert set(got) == set(want)
    for k, v in want.items():
        assert got[k] == pytest.approx(v, rel=1e-9, abs=1e-15), k
    losses = []
    for net in (model, twin):
        opt = torch.optim.SGD(net.parameters(), lr=0.2)
        with dlt.Watch(net, every=1, theory=False) as watch:
            for _ in range(2):
                opt.zero_grad()
                loss = nn.CrossEntropyLoss()(net(x), y)
                loss.backward()
                watch.step(loss)
                opt.step()
        losses.append(watch.losses())
        rows = _by_layer(watch.frame())
        if net is model:
            got = rows
    assert losses[0].equals(losses[1])
    assert set(got) == set(rows)
    for k, v in rows.items():
        assert got[k] == pytest.approx(v, rel=1e-9, abs=1e-15), k


class _DenseBN(nn.Module):
    """``h = F.linear(x, W); h = self.bn(h); h = self.act(h); return h``."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.W = nn.Parameter(torch.randn(n_out, n_in, dtype=torch.float64) / n_in ** 0.5)
        self.bn = nn.BatchNorm1d(n_out).double()
        self.act = nn.ReLU()

    def forward(self, x):
        h = F.linear(x, self.W)
        h = self.bn(h)
        h = self.act(h)
        return h


def test_a_dense_layer_with_a_norm_before_its_activation_child_is_its_module_twin():
    torch.manual_seed(4)
    model = nn.Sequential(_DenseBN(6, 16), _DenseBN(16, 16), nn.Linear(16, 3).double())
    twin = nn.Sequential(nn.Linear(6, 16, bias=False), nn.BatchNorm1d(16), nn.ReLU(),
                         nn.Linear(16, 16, bias=False), nn.BatchNorm1d(16), nn.ReLU(),
                         nn.Linear(16, 3)).double()
    with torch.no_grad():
        twin[0].weight.copy_(model[0].W)
        twin[3].weight.copy_(model[1].W)
        twin[6].load_state_dict(model[2].state_dict())
    x = torch.randn(32, 6, dtype=torch.float64)
    y = torch.randint(0, 3, (32,))
    got = _by_layer(dlt.probe(model, x, y, nn.CrossEntropyLoss()))
    want = _by_layer(dlt.probe(twin, x, y, nn.CrossEntropyLoss()))
    assert set(got) == set(want)  # pre_* were the BatchNorm's output (pre_std 0.99998)
    for k, v in want.items():
        assert got[k] == pytest.approx(v, rel=1e-9, abs=1e-15), k
