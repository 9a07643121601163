"""round 43 (torchleft43): activations written by hand in a torch forward.

- ``dlt.predict`` refused ``t * torch.sigmoid(t)`` (SiLU), ``t * torch.tanh(F.softplus(t))``
  (Mish), ``t - torch.tanh(t)`` (Tanhshrink) as 'the torch operation Mul/Sub'; they are now
  the activation they compute, recognised from the autograd graph (the product reads the very
  tensor its sigmoid reads), never by name.
- ``h.clamp(min=0)``, ``torch.clamp(h, 0)``, ``torch.clamp_min(h, 0)`` (ReLU) and
  ``h.clamp(lo, hi)`` (Hardtanh / ReLU6) had neither ``act_*`` rows in ``dlt.probe`` nor a
  prediction (refused as 'Clamp'); the bounds are the node's saved scalars.
- ``torch.where(h > 0, h, 0.01 * h)`` is still refused, naming 'Where'; a clamp of other
  bounds (``min=1e-3`` alone) is no activation.

Every prediction is compared with a direct float64 autograd ``std(dL/ds)`` per layer, and
every probe row with the values computed directly.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import depthlab.torch as dlt

D = torch.float64
W = 128
CE = nn.CrossEntropyLoss()

HAND = {
    "silu": (lambda t: t * torch.sigmoid(t), nn.SiLU),
    "silu-reversed": (lambda t: torch.sigmoid(t) * t, nn.SiLU),
    "mish": (lambda t: t * torch.tanh(F.softplus(t)), nn.Mish),
    "tanhshrink": (lambda t: t - torch.tanh(t), nn.Tanhshrink),
    "clamp-min": (lambda t: t.clamp(min=0), nn.ReLU),
    "torch.clamp": (lambda t: torch.clamp(t, 0), nn.ReLU),
    "clamp_min": (lambda t: torch.clamp_min(t, 0), nn.ReLU),
    "clamp-hardtanh": (lambda t: t.clamp(-1.0, 1.0), nn.Hardtanh),
    "clamp-relu6": (lambda t: t.clamp(0.0, 6.0), nn.ReLU6),
}


class _Hand(nn.Module):
    def __init__(self, f, depth: int = 4) -> None:
        super().__init__()
        self.f = f
        self.ls = nn.ModuleList([nn.Linear(W, W) for _ in range(depth)])
        self.out = nn.Linear(W, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.ls:
            x = self.f(layer(x))
        return self.out(x)


def _twin(model: _Hand, act: type) -> nn.Sequential:
    """The same weights as a Sequential with the activation module."""
    parts: list[nn.Module] = []
    for layer in model.ls:
        parts += [layer, act()]
    return nn.Sequential(*parts, model.out)


def _data(seed: int, n: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, W, generator=g, dtype=D), torch.randint(0, 10, (n,), generator=g)


def _measured(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[float]:
    """``std(dL/ds)`` (ddof 0) of every Linear output in forward order, by float64 autograd."""
    outs: list[torch.Tensor] = []
    handles = [m.register_forward_hook(lambda m, a, o: outs.append(o))
               for m in model.modules() if isinstance(m, nn.Linear)]
    try:
        loss = CE(model(x), y)
    finally:
        for h in handles:
            h.remove()
    return [float(g.std(unbiased=False)) for g in torch.autograd.grad(loss, outs)]


@pytest.mark.parametrize("name", list(HAND))
def test_predict_takes_a_hand_written_activation_as_its_module(name):
    f, act = HAND[name]
    torch.manual_seed(0)
    model = _Hand(f).to(D)
    x, y = _data(1)
    df = dlt.predict(model, x, y, CE)
    twin = dlt.predict(_twin(model, act), x, y, CE)
    g = df[df.quantity == "grad_pre_std"].sort_values("layer").predicted.to_numpy()
    np.testing.assert_allclose(g, twin[twin.quantity == "grad_pre_std"].sort_values("layer")
                               .predicted.to_numpy(), rtol=1e-9)
    ratio = np.array(_measured(model, x, y)) / g
    assert ((ratio > 0.85) & (ratio < 1.15)).all(), ratio


@pytest.mark.parametrize("name", ["clamp-min", "torch.clamp", "clamp_min", "clamp-hardtanh",
                                  "clamp-relu6", "silu"])
def test_probe_gives_activation_rows_for_a_hand_written_activation(name):
    f, act = HAND[name]
    torch.manual_seed(0)
    model = _Hand(f, depth=2).to(D)
    x, y = _data(2, n=256)
    df = dlt.probe(model, x, y, CE)
    with torch.no_grad():
        s = model.ls[0](x)
        a = act()(s)
    rows = df[df.layer == 1].set_index("quantity").value
    assert rows["act_std"] == pytest.approx(float(a.std(unbiased=False)), rel=1e-10)
    assert rows["act_mean"] == pytest.approx(float(a.mean()), rel=1e-10)
    twin = dlt.probe(_twin(model, act), x, y, CE)
    trow = twin[twin.layer == 1].set_index("quantity").value
    for q in ("dead_frac", "saturated_frac", "inactive_frac"):
        assert (q in rows.index) == (q in trow.index), q
        if q in rows.index:
            assert rows[q] == pytest.approx(trow[q], abs=1e-12), q


def test_a_clamp_of_other_bounds_is_no_activation_and_keeps_the_follower():
    """``h.clamp(min=1e-3)`` read beside ``torch.tanh(h)``: the tanh is the layer's
    activation, the clamp (no module computes it) is not."""
    torch.manual_seed(0)

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(W, W), nn.Linear(W, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.a(x)
            floor = h.clamp(min=1e-3).mean()
            return self.b(torch.tanh(h)) + 0 * floor

    model = Model().to(D)
    x, y = _data(3, n=128)
    rows = dlt.probe(model, x, y, CE)
    rows = rows[rows.layer == 1].set_index("quantity").value
    with torch.no_grad():
        a = torch.tanh(model.a(x))
    assert rows["act_std"] == pytest.approx(float(a.std(unbiased=False)), rel=1e-10)


def test_predict_refuses_a_hand_written_where_naming_it():
    """The slope of ``torch.where(h > 0, h, 0.01 * h)`` sits in saved tensors (never
    unpacked): refused in one line naming the operation."""
    torch.manual_seed(0)
    model = _Hand(lambda t: torch.where(t > 0, t, 0.01 * t), depth=2).to(D)
    x, y = _data(4, n=64)
    with pytest.raises(ValueError, match="'Where'") as info:
        dlt.predict(model, x, y, CE)
    assert "\n" not in str(info.value)
    assert "written out by hand" in str(info.value) and "F.leaky_relu(x, 0.01)" in str(info.value)


def test_predict_refuses_the_hand_written_tanh_gelu_pointing_to_f_gelu():
    """``0.5 * t * (1 + torch.tanh(c * (t + 0.044715 * t ** 3)))``: its constants sit in saved
    tensors; refused in one line naming 'Mul' and ``F.gelu(x, approximate='tanh')``."""
    torch.manual_seed(0)

    def f(t: torch.Tensor) -> torch.Tensor:
        return 0.5 * t * (1 + torch.tanh(0.7978845608028654 * (t + 0.044715 * t ** 3)))

    model = _Hand(f, depth=2).to(D)
    x, y = _data(4, n=64)
    with pytest.raises(ValueError, match=r"'Mul'.*approximate='tanh'") as info:
        dlt.predict(model, x, y, CE)
    assert "\n" not in str(info.value)


def test_a_swish_of_another_beta_is_no_silu():
    """``t * torch.sigmoid(2 * t)`` (swish, beta 2): the sigmoid reads another tensor than
    the product's other factor, so it is no SiLU (nor a sigmoid activation): still refused."""
    torch.manual_seed(0)
    model = _Hand(lambda t: t * torch.sigmoid(2 * t), depth=2).to(D)
    x, y = _data(5, n=64)
    with pytest.raises(ValueError, match="'Mul'"):
        dlt.predict(model, x, y, CE)


def test_reentrant_checkpoint_warning_names_the_missing_activation_rows():
    """Under ``checkpoint(..., use_reentrant=True)`` the wrapped forward builds no graph, so a
    ``torch.relu`` there has no ``act_*`` rows (a module there has them); the warning said only
    that ``grad_pre_*`` rows were missing."""
    from torch.utils.checkpoint import checkpoint

    class Model(nn.Module):
        def __init__(self, act) -> None:
            super().__init__()
            self.act = act
            self.a, self.b, self.c = nn.Linear(16, 32), nn.Linear(32, 32), nn.Linear(32, 3)

        def block(self, h: torch.Tensor) -> torch.Tensor:
            return self.act(self.b(h))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.c(checkpoint(self.block, torch.relu(self.a(x)), use_reentrant=True))

    x, y = torch.randn(64, 16, dtype=D), torch.randint(0, 3, (64,))
    for act, has_rows in ((torch.relu, False), (nn.ReLU(), True)):
        torch.manual_seed(0)
        model = Model(act).to(D)
        with pytest.warns(RuntimeWarning, match=r"reentrant.*grad_pre_\*.*as a function.*act_\*"):
            df = dlt.probe(model, x, y, CE)
        rows = df[df.layer == 2].set_index("quantity").value
        assert ("act_std" in rows.index) is has_rows
        assert "grad_pre_std" not in rows.index
        if has_rows:
            with torch.no_grad():
                a = torch.relu(model.b(torch.relu(model.a(x))))
            assert rows["act_std"] == pytest.approx(float(a.std(unbiased=False)), rel=1e-10)


def _hand_silu(t: torch.Tensor) -> torch.Tensor:
    return t * torch.sigmoid(t)


class _Block(nn.Module):
    """``post(x + l2(tanh(l1(x))))``: the block applies its activation to the sum itself."""

    def __init__(self, post) -> None:
        super().__init__()
        self.post = post
        self.l1, self.l2 = nn.Linear(W, W), nn.Linear(W, W)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x + self.l2(torch.tanh(self.l1(x)))
        return s if self.post is None else self.post(s)


class _Outside(nn.Module):
    """``post(block(h))``: the forward applies the activation to each block's output."""

    def __init__(self, post, inside: bool) -> None:
        super().__init__()
        self.post, self.inside = post, inside
        self.a = nn.Linear(W, W)
        self.blocks = nn.ModuleList([_Block(post if inside else None) for _ in range(3)])
        self.out = nn.Linear(W, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.a(x)
        for b in self.blocks:
            x = b(x) if self.inside else self.post(b(x))
        return self.out(x)


@pytest.mark.parametrize("inside", [True, False])
def test_predict_takes_a_hand_written_silu_after_a_residual_sum(inside):
    """``(x + F(x)) * torch.sigmoid(x + F(x))`` in the block, or ``h * torch.sigmoid(h)`` of
    each block's output ``h``: refused before ('not the plain sum'); now the prediction of
    ``F.silu`` there, checked against float64 autograd."""
    torch.manual_seed(0)
    model = _Outside(_hand_silu, inside).to(D)
    x, y = _data(6)
    df = dlt.predict(model, x, y, CE)
    twin = _Outside(F.silu, inside).to(D)
    twin.load_state_dict(model.state_dict())
    want = dlt.predict(twin, x, y, CE)
    g = df[df.quantity == "grad_pre_std"].sort_values("layer").predicted.to_numpy()
    np.testing.assert_allclose(g, want[want.quantity == "grad_pre_std"].sort_values("layer")
                               .predicted.to_numpy(), rtol=1e-9)
    ratio = np.array(_measured(model, x, y)) / g
    assert ((ratio > 0.85) & (ratio < 1.15)).all(), ratio


@pytest.mark.parametrize("act", ["function", "module"])
def test_predict_refuses_reentrant_checkpointing_naming_it(act):
    """``checkpoint(block, h, use_reentrant=True)``: its forward builds no graph. predict
    refused it as 'the torch operation CheckpointFunction ... not by a module' (with
    ``torch.relu`` inside) or as 'a custom autograd Function' (with ``nn.ReLU``); now one line
    naming the reentrant checkpoint and ``use_reentrant=False``."""
    from torch.utils.checkpoint import checkpoint

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.act = torch.relu if act == "function" else nn.ReLU()
            self.a, self.b, self.c = nn.Linear(W, W), nn.Linear(W, W), nn.Linear(W, 10)

        def block(self, h: torch.Tensor) -> torch.Tensor:
            return self.act(self.b(h))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.c(checkpoint(self.block, self.act(self.a(x)), use_reentrant=True))

    torch.manual_seed(0)
    x, y = _data(7, n=64)
    with pytest.raises(ValueError, match=r"reentrant activation checkpointing.*"
                                         r"use_reentrant=False") as info:
        dlt.predict(Model().to(D), x, y, CE)
    assert "\n" not in str(info.value) and "'c'" in str(info.value)
