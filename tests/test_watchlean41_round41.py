"""Round 41 (watchlean41): a ``Watch`` records the pass whose backward produced the loss's
gradients, not an input-gradient (saliency) pass run between ``loss.backward()`` and
``watch.step(loss)``; map layers get their ``update_ratio`` rows."""

from __future__ import annotations

import warnings

import pandas as pd
import pytest
import torch
from helpers.torchmodels import ParameterListMaps, TiedEmbeddingHead
from torch import nn

import depthlab.torch as dlt

KEY = ["step", "layer", "module", "quantity"]


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))


def _data():
    g = torch.Generator().manual_seed(1)
    return (torch.randn(16, 6, generator=g), torch.randint(0, 3, (16,), generator=g),
            5 * torch.randn(4, 6, generator=g))


def _run(saliency: str | None, every: int = 1, steps: int = 3) -> pd.DataFrame:
    """Train the MLP, one saliency pass (``saliency``) between backward and ``Watch.step``."""
    x, y, xs = _data()
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    watch = dlt.Watch(model, every=every)
    for _ in range(steps):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        if saliency is not None:
            xi = xs.clone().requires_grad_()
            if saliency == "grad":
                torch.autograd.grad(model(xi).sum(), xi)
            elif saliency == "sub":  # a submodule's input gradient
                torch.autograd.grad(model[0](xi).sum(), xi)
            else:  # "backward": the input's gradient, the weights' .grad added to
                grads = [p.grad.clone() for p in model.parameters()]
                model(xi).sum().backward()
                with torch.no_grad():  # (the loop restores them: training unchanged)
                    for p, g in zip(model.parameters(), grads):
                        p.grad.copy_(g)
        watch.step(loss)
        opt.step()
    return watch.frame()


@pytest.mark.parametrize("how", ["grad", "backward", "sub"])
@pytest.mark.parametrize("every", [1, 2])
def test_a_saliency_pass_before_the_step_does_not_replace_the_recorded_pass(how, every):
    """The rows are the training pass's: those of the same loop without the saliency pass,
    exactly (the saliency pass's ``pre_std`` of layer 2 was 1.6 where the training batch's is
    0.57, its ``grad_pre_std`` 0, the gradient of ``sum()``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plain = _run(None, every)
        salient = _run(how, every)
    pd.testing.assert_frame_equal(plain.reset_index(drop=True), salient.reset_index(drop=True),
                                  check_exact=True)


D = torch.float64


class _RootWeight(nn.Module):
    """The model's own weight as ``F.linear`` beside a head."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(8, 5, dtype=D) / 5 ** 0.5)
        self.head = nn.Linear(8, 3, dtype=D)

    def forward(self, x):
        return self.head(torch.tanh(nn.functional.linear(x, self.weight)))


class _Cell(nn.Module):
    """A layer of the user's class mapping two of its weights."""

    def __init__(self) -> None:
        super().__init__()
        self.W1 = nn.Parameter(torch.randn(5, 6, dtype=D) / 5 ** 0.5)
        self.W2 = nn.Parameter(torch.randn(6, 3, dtype=D) / 6 ** 0.5)

    def forward(self, x):
        return torch.tanh(x @ self.W1) @ self.W2


@pytest.mark.parametrize("every", [1, 2])
@pytest.mark.parametrize("cls", [_RootWeight, ParameterListMaps, TiedEmbeddingHead, _Cell])
def test_map_layers_have_their_update_ratio(cls, every):
    """Each map layer of a recorded step after the first has ``update_ratio`` =
    ``||W_n - W_{n-1}|| / ||W_{n-1}||`` of its weight between the previous ``Watch.step`` call
    and this one (they had none); training is bit-identical to an unwatched twin."""
    torch.manual_seed(0)
    model = cls()
    twin = cls()
    twin.load_state_dict(model.state_dict())
    g = torch.Generator().manual_seed(2)
    if cls is TiedEmbeddingHead:
        x, y = torch.randint(0, 5, (6, 3), generator=g), torch.randint(0, 5, (6,), generator=g)
    else:
        x, y = torch.randn(6, 5, dtype=D, generator=g), torch.randint(0, 3, (6,), generator=g)
    opts = [torch.optim.SGD(m.parameters(), lr=0.3, momentum=0.5) for m in (model, twin)]
    watch = dlt.Watch(model, every=every)
    seen = []  # the parameters at each Watch.step call
    for _ in range(3):
        for m, opt in zip((model, twin), opts):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(m(x), y)
            loss.backward()
            if m is model:
                seen.append({n: p.detach().clone() for n, p in m.named_parameters()})
                watch.step(loss)
            opt.step()
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.equal(a, b)
    frame = watch.frame()
    maps = {"weight", "ws.0", "ws.1", "emb.weight", "W1", "W2"}
    named = set(frame.module) & maps
    assert named  # (the map layers are there)
    for step in range(every, 3, every):
        rows = frame[(frame.step == step) & (frame.quantity == "update_ratio")]
        got = dict(zip(rows.module, rows.value))
        for name in named:
            w0, w1 = seen[step - 1][name], seen[step][name]
            want = float((w1 - w0).norm() / w0.norm())
            assert name in got, (step, name, sorted(got))
            assert got[name] == pytest.approx(want, rel=1e-12), (step, name)


def _critic_frame(saliency: bool) -> pd.DataFrame:
    """A WGAN-GP critic (penalty computed last, its interpolates graded through the
    gradient's graph), then maybe a saliency pass, recorded at every step."""
    torch.manual_seed(0)
    critic = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1)).double()
    g = torch.Generator().manual_seed(1)
    real = torch.randn(8, 4, dtype=D, generator=g)
    fake = 2 * torch.randn(8, 4, dtype=D, generator=g) + 1
    eps = torch.rand(8, 1, dtype=D, generator=g)
    opt = torch.optim.SGD(critic.parameters(), lr=0.05)
    watch = dlt.Watch(critic, every=1, theory=False)
    for _ in range(2):
        opt.zero_grad()
        interp = (eps * real + (1 - eps) * fake).requires_grad_(True)
        loss = critic(fake).mean() - critic(real).mean()
        (gx,) = torch.autograd.grad(critic(interp).sum(), interp, create_graph=True)
        loss = loss + 10 * ((gx.norm(2, dim=1) - 1) ** 2).mean()
        loss.backward()
        if saliency:
            xi = real.clone().requires_grad_()
            torch.autograd.grad(critic(xi).sum(), xi)
        watch.step(loss)
        opt.step()
    return watch.frame().reset_index(drop=True)


def test_a_gradient_penalty_pass_stays_pooled_and_a_saliency_pass_after_it_is_left_out():
    """The penalty's interpolates forward, whose output the loss's graph does not hold (only
    its gradient's graph), is graded by the loss's backward: still pooled; a saliency pass
    after the backward is not (the rows equal those without it, exactly)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plain, salient = _critic_frame(False), _critic_frame(True)
    pd.testing.assert_frame_equal(plain, salient, check_exact=True)
