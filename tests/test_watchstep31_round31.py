"""Round 31 (watchstep31): a ``Watch`` record on the CPU kernels sums every weight, its gradient
and its snapshot in ONE compiled call (``kernels.weight_sums_at``, the arrays by address)
instead of one ``kernels.weight_sums`` call per weight (each with three NumPy views and a
dispatch). The batched call must give every weight's seven sums to the bit, copy the snapshot
exactly where the per-weight call does, and a Watch's rows must be those of the per-weight
path (``Recording._weight_sums_at`` refused) on float32 and float64 models, frozen weights, a
weight tied between layers, non-contiguous weights and gradients and a bf16 model; training
stays bit-identical with and without the Watch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from depthlab.probes import accel
from depthlab.torch import Watch
from depthlab.torch.hooks import Recording

pytestmark = pytest.mark.skipif(accel.kernels() is None,
                                reason="the batched weight pass needs the compiled kernels")

SIZES = [(100, 78), (16, 16), (3, 5), (1, 1), (7,), (0, 4), (33, 2)]  # tails, sizes < BLOCK


def _arrays(dtype, seed):
    r = np.random.default_rng(seed)
    ws = [r.standard_normal(s).astype(dtype).reshape(-1) for s in SIZES]
    gs = [(r.standard_normal(w.size) * 1e-3).astype(dtype) for w in ws]
    w0 = [(w + r.standard_normal(w.size) * 1e-4).astype(dtype) for w in ws]
    gs[1] = (gs[1] * 1e-30).astype(dtype)  # squares that underflow float32: the float64 redo
    w0[2] = ws[2].copy()  # a frozen weight: W0 == W (sum (W - W0)^2 = 0)
    gs[2] = ws[2]  # ... whose gradient stands in by W
    w0[3] = np.zeros(1, dtype)  # sum W0^2 = 0: out of range, no copy
    return ws, gs, w0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("copy", [False, True])
def test_batched_weight_pass_equals_one_call_per_weight_to_the_bit(dtype, copy):
    from depthlab.torch import kernels

    ws, gs, w0 = _arrays(dtype, 0)
    ref0 = [a.copy() for a in w0]
    want = [kernels.weight_sums(w, g, z, copy) for w, g, z in zip(ws, gs, ref0)]
    got0 = [a.copy() for a in w0]
    out = np.empty((len(ws), 7))
    addresses = np.array([(w.ctypes.data, g.ctypes.data, z.ctypes.data)
                          for w, g, z in zip(ws, gs, got0)], dtype=np.int64)
    kernels.weight_sums_at(addresses, np.array([w.size for w in ws], dtype=np.int64),
                           np.full(len(ws), copy), np.empty(0, dtype), out)
    for i, row in enumerate(want):
        assert tuple(out[i].tolist()) == row, (SIZES[i], out[i], row)
        assert np.array_equal(got0[i], ref0[i])  # the snapshot copied exactly where it was
    if copy:
        assert np.array_equal(got0[0], ws[0]) and not np.array_equal(got0[3], ws[3])


def _outputs(dtype):
    r = np.random.default_rng(2)
    yield r.standard_normal((37, 100)).astype(dtype)  # a partial last block
    yield (r.standard_normal((8, 16)) * 1e-25).astype(dtype)  # float32 squares underflow
    yield (r.standard_normal((4, 5)) * 1e30 + 3.0).astype(dtype)  # float32 sums overflow
    x = r.standard_normal((6, 7)).astype(dtype)
    x[1, 2] = np.nan
    x[:, 3] = -1.0  # a dead unit
    yield x
    yield np.full((3, 1), 2.5, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernels_by_address_equal_the_kernels_on_views_to_the_bit(dtype):
    from depthlab.torch import kernels

    like = np.empty(0, dtype)
    for x in _outputs(dtype):
        t = torch.from_numpy(x)
        want = kernels.sums(x.reshape(-1))
        got = kernels.sums_at(t.data_ptr(), x.size, like)
        assert np.array_equal(np.array(got), np.array(want), equal_nan=True), (x.shape, got, want)
        a1, a2 = np.zeros(x.shape[1], bool), np.zeros(x.shape[1], bool)
        want = kernels.layer_relu(x, a1)
        got = kernels.layer_relu_at(t.data_ptr(), x.shape[0], x.shape[1], like, a2)
        assert np.array_equal(np.array(got, dtype=float), np.array(want, dtype=float),
                              equal_nan=True), (x.shape, got, want)
        assert np.array_equal(a1, a2)


class _Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Linear(6, 16), nn.Linear(16, 16), nn.Linear(16, 3)

    def forward(self, x):
        h = torch.relu(self.a(x))
        h = torch.relu(self.b(h))
        return self.c(torch.relu(self.b(h)))  # the same weight twice


def _mlp():
    return nn.Sequential(nn.Linear(6, 40), nn.ReLU(), nn.Linear(40, 40), nn.ReLU(),
                         nn.Linear(40, 3))


def _frozen():
    m = _mlp()
    m[0].weight.requires_grad_(False)  # frozen: W0 == W at every record, no gradient
    m[2].bias.requires_grad_(False)
    return m


def _transposed():
    m = _mlp()
    m[2].weight = nn.Parameter(torch.randn(40, 40).t())  # a non-contiguous weight
    return m


def _transpose_grad(p: nn.Parameter) -> None:
    p.grad = p.grad.t().contiguous().t()  # the same values, column-major


class _StridedGrad(nn.Module):  # a weight whose .grad is not contiguous
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(6, 16), nn.Linear(16, 3)
        self.a.weight.register_post_accumulate_grad_hook(_transpose_grad)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


MODELS = [("mlp", _mlp, torch.float32), ("mlp64", _mlp, torch.float64),
          ("frozen", _frozen, torch.float32), ("tied", _Tied, torch.float32),
          ("transposed", _transposed, torch.float32), ("strided-grad", _StridedGrad, torch.float32),
          ("bf16", _mlp, torch.bfloat16)]


def _train(make, dtype, every, batched: bool, steps: int = 4):
    torch.manual_seed(0)
    model = make().to(dtype)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1,
                          momentum=0.9)
    g = torch.Generator().manual_seed(1)
    ran = []
    original = Recording._weight_sums_at

    def spy(self, *args):
        got = original(self, *args) if batched else None
        ran.append(got is not None)
        return got

    Recording._weight_sums_at = spy
    try:
        w = Watch(model, every=every, theory=False) if every else None
        losses = []
        for _ in range(steps):
            x = torch.randn(24, 6, generator=g).to(dtype)
            y = torch.randint(0, 3, (24,), generator=g)
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x).float(), y)
            loss.backward()
            if w is not None:
                w.step(loss)
            opt.step()
            losses.append(loss.item())
        if w is not None:
            w.close()
    finally:
        Recording._weight_sums_at = original
    return (w.frame() if w is not None else None), losses, ran, model


@pytest.mark.parametrize("name,make,dtype", MODELS, ids=[m[0] for m in MODELS])
def test_watch_rows_with_the_batched_pass_equal_the_per_weight_pass(name, make, dtype):
    for every in (1, 2):
        fast, losses_f, ran, model_f = _train(make, dtype, every, batched=True)
        slow, losses_s, _, model_s = _train(make, dtype, every, batched=False)
        assert losses_f == losses_s
        assert len(fast) and fast.equals(slow), (name, every, fast.compare(slow))
        assert {"update_ratio", "weight_std"} <= set(fast["quantity"])
        if name in ("mlp", "mlp64", "frozen", "tied"):
            assert ran and all(ran), (name, ran)  # the batched pass did the records
        elif name in ("transposed", "strided-grad"):
            assert ran and not any(ran), (name, ran)  # refused: one call per weight
        for p, q in zip(model_f.parameters(), model_s.parameters()):
            assert torch.equal(p, q)
    if name in ("frozen", "tied"):
        _, plain, _, model_p = _train(make, dtype, 0, batched=True)
        assert plain == losses_f  # training as without a Watch
        for p, q in zip(model_p.parameters(), model_f.parameters()):
            assert torch.equal(p, q)


def test_frozen_weight_rows_are_its_direct_statistics():
    fast, _, _, model = _train(_frozen, torch.float32, 1, batched=True, steps=2)
    w = model[0].weight.detach().double()
    rows = fast[(fast["layer"] == 1)].set_index(["step", "quantity"])["value"]
    for step in (0, 1):
        assert rows[(step, "weight_std")] == pytest.approx(w.std(unbiased=False).item(),
                                                           rel=1e-6)
    assert rows[(1, "update_ratio")] == 0.0
    assert "weight_grad_std" not in set(rows.loc[1].index)
