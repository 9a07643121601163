"""Round 26 hunt on depthlab.torch: models and loops nobody tried before (torchhunt26)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import depthlab.torch as dlt  # noqa: E402
from depthlab.bridge.torch_bridge import TorchStandardize  # noqa: E402

CE = nn.CrossEntropyLoss()


class _Prep(nn.Module):
    """A tanh MLP whose forward first transforms its input without weights."""

    def __init__(self, prep) -> None:
        super().__init__()
        self.prep = prep
        self.register_buffer("mean", torch.full((32,), 3.0, dtype=torch.float64))
        self.register_buffer("std", torch.full((32,), 2.0, dtype=torch.float64))
        self.l1, self.l2, self.l3 = nn.Linear(32, 128), nn.Linear(128, 128), nn.Linear(128, 10)

    def forward(self, x):
        if self.prep is not None:
            x = self.prep(self, x)
        return self.l3(torch.tanh(self.l2(torch.tanh(self.l1(x)))))


_PREPS = {
    "x / 255": lambda m, x: x / 255.0,
    "standardize with buffers": lambda m, x: (x - m.mean) / m.std,
    "clamp": lambda m, x: x.clamp(-1.0, 1.0),
    "x * x": lambda m, x: x * x,
}


@pytest.mark.parametrize("name", list(_PREPS))
def test_predict_starts_at_a_weight_free_preprocessing_of_the_input(name):
    """``dlt.predict`` refused every model whose forward transforms ``x`` before the first
    layer without weights (``x / 255``, a standardization with buffers): "the input of 'l1' is
    not the model's input x ... computed by the torch operation 'Div'". The theory now starts
    from the values the first layer reads: the same prediction as the model without that
    preprocessing given the preprocessed input."""
    torch.manual_seed(0)
    model = _Prep(_PREPS[name]).double()
    plain = _Prep(None).double()
    plain.load_state_dict(model.state_dict())
    x = (torch.randn(256, 32, dtype=torch.float64) * 2 + 3) * (255 if "255" in name else 1)
    y = torch.randint(0, 10, (256,))
    got = dlt.predict(model, x, y, CE)
    with torch.no_grad():
        x_in = _PREPS[name](model, x)
    want = dlt.predict(plain, x_in, y, CE)
    assert list(got.quantity) == list(want.quantity)
    assert np.allclose(got.predicted.to_numpy(), want.predicted.to_numpy(), rtol=1e-12)
    assert np.allclose(got.value.to_numpy(), want.value.to_numpy(), rtol=1e-12)


def test_predict_takes_a_bridged_standardization_before_the_first_layer():
    """A ``TorchStandardize`` module first (what ``to_torch`` makes of a depthlab network's
    input standardization) was refused: "it is the output of '0' (TorchStandardize)"."""
    torch.manual_seed(0)
    body = [nn.Linear(16, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 4)]
    mean, std = torch.full((16,), 3.0), torch.full((16,), 2.0)
    model = nn.Sequential(TorchStandardize(mean, std), *body)
    x = torch.randn(256, 16) * 2 + 3
    y = torch.randint(0, 4, (256,))
    got = dlt.predict(model, x, y, CE)
    want = dlt.predict(nn.Sequential(*body), (x - mean) / std, y, CE)
    assert np.allclose(got.predicted.to_numpy(), want.predicted.to_numpy(), rtol=1e-6)
    grad = got[got.quantity == "grad_pre_std"]
    assert np.allclose(grad.predicted, grad.value, rtol=0.2)


class _Scaled(nn.Module):
    def __init__(self, trainable: bool) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.full((16,), 2.0), requires_grad=trainable)
        self.l1, self.l2 = nn.Linear(16, 64), nn.Linear(64, 4)

    def forward(self, x):
        return self.l2(torch.relu(self.l1(x * self.scale)))


def test_a_preprocessing_with_a_trainable_weight_is_still_refused():
    """The start moves to the first layer's input only when that input depends on ``x`` and on
    no tensor that requires grad: an input scale that is a trainable parameter (a layer the
    theory does not model) is refused as before; frozen, it is a fixed transformation."""
    x, y = torch.randn(64, 16), torch.randint(0, 4, (64,))
    with pytest.raises(ValueError, match="the input of 'l1' is not the model's input x"):
        dlt.predict(_Scaled(True), x, y, CE)
    torch.manual_seed(0)
    frozen = _Scaled(False)
    got = dlt.predict(frozen, x, y, CE)
    assert got.predicted.notna().all() and len(got) == 5


class _Fn(nn.Module):
    """Conv -> an activation the forward applies itself -> pool -> Linear."""

    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn
        self.conv, self.head = nn.Conv2d(3, 8, 3), nn.Linear(8, 3)
        with torch.no_grad():
            self.conv.bias[:2] = -40.0  # two channels far below 0 (saturated, or nearly flat)

    def forward(self, x):
        return self.head(self.fn(self.conv(x)).mean((2, 3)))


_IN_PLACE = {
    "elu_": (lambda h: torch.nn.functional.elu_(h, 0.5),
             lambda h: torch.nn.functional.elu(h, 0.5)),
    "selu": (lambda h: torch.nn.functional.selu(h, inplace=True), torch.nn.functional.selu),
    "celu": (lambda h: torch.nn.functional.celu(h, 2.0, inplace=True),
             lambda h: torch.nn.functional.celu(h, 2.0)),
    "hardsigmoid": (lambda h: torch.nn.functional.hardsigmoid(h, inplace=True),
                    torch.nn.functional.hardsigmoid),
}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", list(_IN_PLACE))
def test_an_in_place_functional_elu_family_activation_gets_its_rows(name, dtype):
    """``F.elu_(h)``, ``F.selu(h, inplace=True)``, ``F.celu(h, inplace=True)`` and
    ``F.hardsigmoid(h, inplace=True)`` on a layer output gave no ``act_*``,
    ``inactive_frac``/``saturated_frac`` or ``dead_frac`` rows (only ReLU, LeakyReLU, Tanh,
    Sigmoid and Hardtanh were read from the output an in-place activation leaves), while the
    same function out of place had them: now the same table (their slopes are functions of
    the output; a unit far below 0 is still alive, as autograd's e^s says)."""
    in_place, plain = _IN_PLACE[name]
    torch.manual_seed(0)
    model = _Fn(in_place).to(dtype)
    twin = _Fn(plain).to(dtype)
    twin.load_state_dict(model.state_dict())
    x, y = torch.randn(16, 3, 6, 6, dtype=dtype), torch.randint(0, 3, (16,))
    got = dlt.probe(model, x, y, CE)
    want = dlt.probe(twin, x, y, CE)
    key = ["layer", "quantity"]
    got, want = got.sort_values(key).reset_index(drop=True), want.sort_values(key).reset_index(
        drop=True)
    assert list(zip(got.layer, got.quantity)) == list(zip(want.layer, want.quantity))
    assert "act_std" in set(got.quantity) and "dead_frac" in set(got.quantity)
    tol = 1e-12 if dtype == torch.float64 else 1e-6
    assert np.allclose(got.value.to_numpy(), want.value.to_numpy(), rtol=tol, atol=1e-30)
    with dlt.Watch(model, every=1) as watch:  # the Watch's record: the same rows
        loss = CE(model(x), y)
        loss.backward()
        watch.step(loss)
    rows = watch.frame()
    assert set(rows.quantity) >= {"act_std", "dead_frac"}


class _Pixels(nn.Module):
    """An Atari DQN's layout: uint8 frames converted in the forward (x.float() / 255)."""

    def __init__(self, convert: bool = True) -> None:
        super().__init__()
        self.convert = convert
        self.c1, self.c2 = nn.Conv2d(2, 16, 4, stride=2), nn.Conv2d(16, 16, 3)
        self.fc = nn.Linear(16 * 3 * 3, 6)

    def forward(self, x):
        if self.convert:
            x = x.float() / 255.0
        h = torch.relu(self.c2(torch.relu(self.c1(x))))
        return self.fc(h.flatten(1))


def test_predict_takes_integer_pixels_that_the_forward_converts():
    """``dlt.predict`` refused any integer ``x`` ("x must be a floating-point tensor, got dtype
    torch.uint8"), also for a model that converts it itself before its first layer (the DQN
    layout, ``x.float() / 255``; a Watch on it had no theory): now predicted from the values
    the first layer reads, as the model without the conversion on ``x.float() / 255``. Token
    ids into an Embedding, and integers read by a layer as they are, are still refused."""
    torch.manual_seed(0)
    model, plain = _Pixels(), _Pixels(convert=False)
    plain.load_state_dict(model.state_dict())
    x = torch.randint(0, 256, (32, 2, 12, 12), dtype=torch.uint8)
    y = torch.randn(32, 6)
    got = dlt.predict(model, x, y, nn.MSELoss())
    want = dlt.predict(plain, x.float() / 255.0, y, nn.MSELoss())
    assert len(got) == len(want) == 8
    assert np.allclose(got.predicted.to_numpy(), want.predicted.to_numpy(), rtol=1e-12)
    assert np.allclose(got.value.to_numpy(), want.value.to_numpy(), rtol=1e-12)
    embed = nn.Sequential(nn.Embedding(10, 8), nn.Flatten(), nn.Linear(24, 3))
    with pytest.raises(TypeError, match="got dtype torch.int64 .*Embedding are not supported"):
        dlt.predict(embed, torch.randint(0, 10, (16, 3)))
    with pytest.raises(TypeError, match="got dtype torch.int64 .*before its first layer"):
        dlt.predict(nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 3)),
                    torch.randint(0, 10, (16, 3)))


class _Converts(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.l1, self.l2 = nn.Linear(16, 128), nn.Linear(128, 4)

    def forward(self, x):
        return self.l2(torch.tanh(self.l1(x.float())))


def test_predict_takes_float64_rows_that_the_forward_converts():
    """Float64 rows (``torch.from_numpy``) for a float32 model whose forward converts them
    (``x.float()``) were refused ("x has dtype torch.float64 but the model's weights are
    torch.float32") though the model runs on them: now the prediction of ``x.float()``; a model
    that does not convert still gets that TypeError."""
    torch.manual_seed(0)
    model = _Converts()
    x, y = torch.randn(64, 16, dtype=torch.float64), torch.randint(0, 4, (64,))
    got = dlt.predict(model, x, y, CE)
    want = dlt.predict(model, x.float(), y, CE)
    assert np.allclose(got.predicted.to_numpy(), want.predicted.to_numpy(), rtol=1e-12)
    with pytest.raises(TypeError, match="x has dtype torch.float64 but the model's weights are "
                                        r"torch.float32; expected x of the model's dtype"):
        dlt.predict(nn.Sequential(nn.Linear(16, 4)), x)


def test_a_watch_says_when_the_model_ran_only_inside_a_torch_func_transform():
    """Per-example gradients by ``torch.func`` (``vmap(grad(...))`` of ``functional_call``, as
    DP-SGD computes them) run the model only inside the transform, which is not measured: the
    warning blamed a Watch created after the forward or a compiled model; it names the
    transform."""
    from torch.func import functional_call, grad, vmap

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
    x, y = torch.randn(6, 5), torch.randint(0, 3, (6,))

    def loss_one(params, xi, yi):
        return CE(functional_call(model, params, (xi[None],)), yi[None])

    with dlt.Watch(model, every=1) as watch:
        params = {k: v.detach() for k, v in model.named_parameters()}
        grads = vmap(grad(loss_one), in_dims=(None, 0, 0))(params, x, y)
        for k, p in model.named_parameters():
            p.grad = grads[k].mean(0)
        with torch.no_grad():
            loss = CE(model(x), y)
        with pytest.warns(RuntimeWarning, match="only inside a torch.func transform") as got:
            watch.step(loss)
    assert not any("created after" in str(w.message) for w in got)
    assert set(watch.frame().quantity) == {"loss"}
