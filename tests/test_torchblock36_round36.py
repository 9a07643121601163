"""Residual blocks whose sum is in the caller's forward (``h = h + blk(h)`` in a loop): each
``blk`` gets a ``block_grad_std`` row, the std (ddof=0) of dL/d(the sum); a module whose output
is added to something other than its input (``a(x) + b(x)``, ``h + self.pos``) does not."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import depthlab.torch as dlt


def _mlp() -> nn.Module:
    return nn.Sequential(nn.ReLU(), nn.Linear(6, 6), nn.Tanh(), nn.Linear(6, 6))


class _Loop(nn.Module):
    """``style`` picks how the caller writes the residual sum."""

    def __init__(self, style: str) -> None:
        super().__init__()
        self.style = style
        self.inp = nn.Linear(4, 6)
        self.blocks = nn.ModuleList([_mlp() for _ in range(3)])
        self.out = nn.Linear(6, 2)
        self.sums: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        self.sums = []
        for blk in self.blocks:
            if self.style == "plus":
                h = h + blk(h)
            elif self.style == "swapped":
                h = blk(h) + h
            elif self.style == "inplace":
                h += blk(h)
            else:
                h = torch.add(h, blk(h))
            if h.requires_grad:
                h.retain_grad()
            self.sums.append(h)
        return self.out(h)


def _autograd_stds(model: _Loop, x: torch.Tensor, y: torch.Tensor) -> list[float]:
    """std (ddof=0) of dL/d(each sum), by autograd; the sum of an in-place add is the tensor
    ``h`` right after it, so its gradient is taken at that point of the graph."""
    if model.style == "inplace":  # one tensor h for every sum: each add's own gradient
        outs: dict[int, torch.Tensor] = {}
        h = model.inp(x)
        for i, blk in enumerate(model.blocks):
            h += blk(h)
            h.grad_fn.register_prehook(lambda g, i=i: outs.__setitem__(i, g[0]))
        nn.MSELoss()(model.out(h), y).backward()
        grads = [outs[i] for i in range(3)]
    else:
        grads = list(torch.autograd.grad(nn.MSELoss()(model(x), y), model.sums))
    return [float(np.std(g.detach().numpy().ravel())) for g in grads]


@pytest.mark.parametrize("style", ["plus", "swapped", "inplace", "torch_add"])
def test_sum_in_caller_makes_each_block(style: str) -> None:
    torch.manual_seed(0)
    model = _Loop(style).double()
    x, y = torch.randn(5, 4, dtype=torch.float64), torch.randn(5, 2, dtype=torch.float64)
    df = dlt.probe(model, x, y, nn.MSELoss())
    rows = df[df.quantity == "block_grad_std"]
    assert list(rows.module) == ["blocks.0", "blocks.1", "blocks.2"]
    want = _autograd_stds(model, x, y)
    np.testing.assert_allclose(rows.value.to_numpy(), want, rtol=1e-9)


def test_watch_records_the_same_rows() -> None:
    torch.manual_seed(1)
    model = _Loop("plus").double()
    x, y = torch.randn(5, 4, dtype=torch.float64), torch.randn(5, 2, dtype=torch.float64)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: every step the same model
    with dlt.Watch(model, every=1) as watch:
        for _ in range(3):
            opt.zero_grad()
            loss = nn.MSELoss()(model(x), y)
            loss.backward()
            watch.step(loss)
            opt.step()
    frame = watch.frame()
    want = _autograd_stds(model, x, y)
    for step in frame.step.unique():
        rows = frame[(frame.step == step) & (frame.quantity == "block_grad_std")]
        assert list(rows.module) == ["blocks.0", "blocks.1", "blocks.2"], step
        np.testing.assert_allclose(rows.value.to_numpy(), want, rtol=1e-9)


class _NotBlocks(nn.Module):
    """``a(x) + b(x)`` (a's output added to b's, not to a's input), ``h + self.pos`` (a
    parameter), ``c(h) + 2 h``, ``h + same(h)`` with ``same`` returning its input: none is a
    residual block."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = _mlp(), _mlp(), _mlp()
        self.pos = nn.Parameter(torch.randn(6))
        self.same = nn.Sequential(nn.Identity())  # returns its input: h + same(h) is 2 h
        self.out = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.a(x) + self.b(x)
        h = h + self.pos
        h = h + self.same(h)
        h = self.c(h) + h * 2.0
        return self.out(h)


def test_sums_with_something_else_are_not_blocks() -> None:
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(4, 6), _NotBlocks()).double()
    x, y = torch.randn(5, 4, dtype=torch.float64), torch.randn(5, 2, dtype=torch.float64)
    df = dlt.probe(model, x, y, nn.MSELoss())
    assert df[df.quantity == "block_grad_std"].empty


class _OwnSum(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.branch = _mlp()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.branch(x)


def test_module_adding_its_own_input_stays_the_block() -> None:
    """``x + self.branch(x)`` inside a module: that module is the block, not its branch."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(4, 6), _OwnSum(), _OwnSum(), nn.Linear(6, 2)).double()
    x, y = torch.randn(5, 4, dtype=torch.float64), torch.randn(5, 2, dtype=torch.float64)
    df = dlt.probe(model, x, y, nn.MSELoss())
    assert list(df[df.quantity == "block_grad_std"].module) == ["1", "2"]


class _Body(nn.Module):
    """The loop in a submodule's forward; with one block it is ``x + blk(x)``: its own sum."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList([_mlp() for _ in range(n)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.layers:
            x = x + blk(x)
        return x


def test_loop_in_a_submodule_and_shared_and_nested_blocks() -> None:
    torch.manual_seed(4)
    x, y = torch.randn(5, 4), torch.randn(5, 2)
    model = nn.Sequential(nn.Linear(4, 6), _Body(3), _Body(1), nn.Linear(6, 2))
    df = dlt.probe(model, x, y, nn.MSELoss())
    names = list(df[df.quantity == "block_grad_std"].module)
    assert names == ["1.layers.0", "1.layers.1", "1.layers.2", "2"]
    shared, nested = _mlp(), nn.Sequential(_mlp())

    class Shared(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inp, self.blk, self.nest, self.out = nn.Linear(4, 6), shared, nested, \
                nn.Linear(6, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.inp(x)
            sums = []
            for _ in range(2):
                h = h + self.blk(h)
                sums.append(h)
            h = self.nest(h) + h
            sums.append(h)
            self.sums = sums
            return self.out(h)

    model = Shared().double()
    x, y = x.double(), y.double()
    rows = dlt.probe(model, x, y, nn.MSELoss())
    rows = rows[rows.quantity == "block_grad_std"].set_index("module").value
    assert sorted(rows.index) == ["blk", "nest"]  # the outer of nest and nest.0
    g = torch.autograd.grad(nn.MSELoss()(model(x), y), model.sums)
    pooled = torch.cat([g[0].ravel(), g[1].ravel()])
    np.testing.assert_allclose(rows["blk"], float(pooled.std(unbiased=False)), rtol=1e-9)
    np.testing.assert_allclose(rows["nest"], float(g[2].std(unbiased=False)), rtol=1e-9)


class _OnInput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blk, self.out = _mlp(), nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(x + self.blk(x))


def test_block_on_an_input_that_requires_grad_every_step() -> None:
    """The model's input is a leaf that requires grad (an adversarial-example loop): the
    block on it has its row at every recorded step, not only the first."""
    torch.manual_seed(5)
    model = _OnInput().double()
    x = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)
    y = torch.randn(5, 2, dtype=torch.float64)
    with dlt.Watch(model, every=1) as watch:
        for _ in range(3):
            loss = nn.MSELoss()(model(x), y)
            loss.backward()
            watch.step(loss)
    frame = watch.frame()
    rows = frame[frame.quantity == "block_grad_std"]
    assert list(rows.step) == [0, 1, 2] and set(rows.module) == {"blk"}
