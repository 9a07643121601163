"""depthlab.torch probe and predict, round 18b: findings left open by round 18. Measured values
are compared with a direct computation by plain torch operations and autograd in float64
(population std, ddof = 0); predictions with the measurement at initialization."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import depthlab.torch as dlt  # noqa: E402

CE = nn.CrossEntropyLoss()
D = torch.float64


def _pstd(v: torch.Tensor) -> float:
    return float(v.detach().double().std(unbiased=False))


def _tanh_net(w: int = 64) -> tuple[nn.Sequential, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, w), nn.Tanh(), nn.Linear(w, w), nn.Tanh(),
                          nn.Linear(w, 10)).to(D)
    return model, torch.randn(128, 32, dtype=D), torch.randint(0, 10, (128,))


def _grad_pre(model: nn.Sequential, x: torch.Tensor, y: torch.Tensor, at: int) -> float:
    """dL/ds of layer ``model[at]``'s output, by autograd (no hooks of depthlab)."""
    h = x
    for i, m in enumerate(model):
        h = m(h)
        if i == at:
            s = h
    (g,) = torch.autograd.grad(CE(h, y), s)
    return _pstd(g)


@pytest.mark.parametrize("kind", ["log", "same", "pre", "global"])
def test_predict_takes_backward_hooks_that_only_read(kind):
    """A full backward hook that only reads (a logging hook returning None, or one returning
    the gradient as given) leaves the gradient as it is; predict() refused every such model
    ("custom autograd Function 'BackwardHookFunctionBackward'")."""
    from torch.nn.modules import module as torch_module

    model, x, y = _tanh_net()
    seen: list[int] = []
    if kind == "log":
        h = model[2].register_full_backward_hook(lambda m, gi, go: seen.append(1))
    elif kind == "same":
        h = model[3].register_full_backward_hook(lambda m, gi, go: gi)
    elif kind == "pre":
        h = model[1].register_full_backward_pre_hook(lambda m, go: seen.append(1))
    else:
        h = torch_module.register_module_full_backward_hook(lambda m, gi, go: seen.append(1))
    try:
        df = dlt.predict(model, x, y, CE)
    finally:
        h.remove()
    g = df[df.quantity == "grad_pre_std"].set_index("module")
    assert g.loc["2", "value"] == pytest.approx(_grad_pre(model, x, y, 2), rel=1e-9)
    assert ((g.predicted / g.value).between(0.9, 1.1)).all()
    assert kind == "same" or seen  # the user's hook ran


@pytest.mark.parametrize("kind,who", [("full", r"full backward hook on '2' \(Linear\)"),
                                      ("pre", r"full backward pre-hook on '3' \(Tanh\)")])
def test_predict_refuses_a_backward_hook_that_changes_the_gradient(kind, who):
    """A full backward (pre-)hook returning a scaled gradient is refused by name."""
    model, x, y = _tanh_net()
    if kind == "full":
        h = model[2].register_full_backward_hook(lambda m, gi, go: (gi[0] * 10,))
    else:
        h = model[3].register_full_backward_pre_hook(lambda m, go: (go[0] * 3,))
    try:
        with pytest.raises(ValueError, match=who + " returned a changed gradient"):
            dlt.predict(model, x, y, CE)
    finally:
        h.remove()


class _Block(nn.Module):
    """``post(x + fc2(relu(fc1(x))))``, ``post`` an activation module inside the block or
    None."""

    def __init__(self, w: int, post: nn.Module | None = None) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(w, w), nn.ReLU(), nn.Linear(w, w)
        self.post = post

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x + self.fc2(self.act(self.fc1(x)))
        return out if self.post is None else self.post(out)


@pytest.mark.parametrize("inplace", [False, True])
def test_predict_models_an_activation_module_after_a_residual_block(inplace):
    """``Sequential(..., Block(), nn.ReLU(), Linear)``: the activation after the block,
    outside it, is the f of ``f(x + F(x))``, as if the block called it; predict() refused it
    ("the input of '4' is not the previous layer's output; it is the output of '3' (ReLU)")."""
    w = 64
    x, y = torch.randn(128, 16, dtype=D), torch.randint(0, 10, (128,))
    torch.manual_seed(1)
    outside = nn.Sequential(nn.Linear(16, w), nn.ReLU(), _Block(w), nn.ReLU(inplace=inplace),
                            nn.Linear(w, 10)).to(D)
    torch.manual_seed(1)
    inside = nn.Sequential(nn.Linear(16, w), nn.ReLU(), _Block(w, nn.ReLU()),
                           nn.Linear(w, 10)).to(D)
    got, want = dlt.predict(outside, x, y, CE), dlt.predict(inside, x, y, CE)
    assert got.predicted.tolist() == pytest.approx(want.predicted.tolist(), rel=1e-12)
    assert got.value.tolist() == pytest.approx(want.value.tolist(), rel=1e-9)
    g = got[got.quantity == "grad_pre_std"].set_index("module")
    assert g.loc["2.fc1", "value"] == pytest.approx(_grad_pre_block(outside, x, y), rel=1e-9)
    assert ((g.predicted / g.value).between(0.85, 1.15)).all()


def _grad_pre_block(model: nn.Sequential, x: torch.Tensor, y: torch.Tensor) -> float:
    """dL/ds of the block's first layer (``model[2].fc1``), by autograd."""
    blk = model[2]
    s = blk.fc1(model[1](model[0](x)))
    h = model[1](model[0](x)) + blk.fc2(blk.act(s))
    (g,) = torch.autograd.grad(CE(model[4](torch.relu(h)), y), s)
    return _pstd(g)


class _PoolShortcut(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.c1, self.act = nn.Conv2d(c, c, 3, padding=1, stride=2), nn.ReLU()
        self.c2, self.pool = nn.Conv2d(c, c, 3, padding=1), nn.AvgPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.pool(x) + self.c2(self.act(self.c1(x))))


def test_predict_names_a_pooling_shortcut():
    """A block whose shortcut is a pooling of its input (``pool(x) + F(x)``) is not modelled;
    the refusal said "not the plain sum ... (a scale, another operation ...)" and now names
    the shortcut's module."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), _PoolShortcut(8),
                          nn.Flatten(), nn.Linear(8 * 4 * 4, 10)).to(D)
    x, y = torch.randn(16, 3, 8, 8, dtype=D), torch.randint(0, 10, (16,))
    with pytest.raises(ValueError, match=r"in '2' the shortcut is the output of '2\.pool' "
                                         r"\(AvgPool2d\), not the block's input"):
        dlt.predict(model, x, y, CE)


def test_probe_refuses_a_percentile_copy_that_does_not_fit(monkeypatch):
    """With percentiles on, probe keeps a copy of each layer output until the forward ends;
    a copy larger than the memory available was left to the operating system (Linear(10,
    10**6) on 64 rows: 1.28 GB peak for a 0.92 GB forward). Now one line names the copy and
    the way out; ``percentiles=()`` still measures."""
    from depthlab.memory import MemoryRefusal

    torch.manual_seed(0)
    model = nn.Linear(10, 100_000)  # its output: 64 x 100000 float32, 24.4 MiB
    x, y = torch.randn(64, 10), torch.zeros(64, 100_000)
    monkeypatch.setenv("DEPTHLAB_MEMORY_LIMIT", "20M")
    with pytest.raises(MemoryRefusal, match=r"percentile rows' copy of a tensor of shape "
                                            r"\(64, 100000\).*percentiles=\(\).*24\.4 MiB"):
        dlt.probe(model, x, y, nn.MSELoss())
    assert not model._forward_hooks and not model._forward_pre_hooks
    df = dlt.probe(model, x, y, nn.MSELoss(), percentiles=())
    got = df.set_index("quantity").value
    assert got["pre_std"] == pytest.approx(_pstd(model(x)), rel=1e-5)


class _TwoCalls(nn.Module):
    """One layer called twice, each call's output into its own activation module."""

    def __init__(self, a: nn.Module, b: nn.Module) -> None:
        super().__init__()
        self.fc, self.a, self.b, self.out = nn.Linear(16, 16), a, b, nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.a(self.fc(x)) + self.b(self.fc(2 * x)))


@pytest.mark.parametrize("a,b", [(nn.Tanh(), nn.ReLU()), (nn.ReLU(), nn.Sigmoid()),
                                 (nn.LeakyReLU(0.1), nn.LeakyReLU(0.3))])
def test_a_layer_whose_calls_go_into_different_activations_has_no_act_rows(a, b):
    """``tanh(fc(x)) + relu(fc(2x))``: the act rows pooled tanh's and relu's outputs (act_std,
    saturated_frac and inactive_frac of neither); now there are none, as for an unknown
    follower. Calls into activations of one kind are still pooled, to the direct value."""
    torch.manual_seed(0)
    x, y = torch.randn(64, 16, dtype=D), torch.randint(0, 10, (64,))
    df = dlt.probe(_TwoCalls(a, b).to(D), x, y, CE)
    got = set(df[df.module == "fc"].quantity)
    assert "pre_std" in got and "grad_pre_std" in got
    assert not got & {"act_std", "act_mean", "saturated_frac", "inactive_frac", "dead_frac"}
    same = _TwoCalls(nn.Tanh(), nn.Tanh()).to(D)
    df = dlt.probe(same, x, y, CE)
    act = df[(df.module == "fc") & (df.quantity == "act_std")].value
    want = torch.cat([torch.tanh(same.fc(x)), torch.tanh(same.fc(2 * x))])
    assert float(act.iloc[0]) == pytest.approx(_pstd(want), rel=1e-9)


class _NoTensorOut(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.t, self.b = nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> dict:
        self.cache = self.b(self.t(self.a(x)))
        return {"note": "done"}


def test_predict_with_a_backward_hook_and_no_output_tensor_gives_its_one_line():
    """With a full backward hook on the model, an output holding no tensor (``end`` None) was
    an AttributeError ('NoneType' object has no attribute 'requires_grad') in the hooks'
    check; it is the usual one-line refusal again."""
    model = _NoTensorOut()
    h = model.a.register_full_backward_hook(lambda m, gi, go: None)
    try:
        with pytest.raises(ValueError, match="the output does not reach 'a'"):
            dlt.predict(model, torch.randn(16, 8))
    finally:
        h.remove()
