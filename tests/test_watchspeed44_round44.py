"""Round 44 (watchspeed44): ``Acc.add`` reads a plain tensor outside autograd (a gradient in a
backward hook) as it is, without a detached alias (one dispatched op less per gradient of a
recorded step); its sums are those of the detached tensor, bit for bit. The Watch's stored
losses stay the loop's own (``loss.item()``), bit for bit, also for bf16 losses and a
running-loss tensor the loop writes in place.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import depthlab.torch as dlt
from depthlab.torch.accumulators import Acc, watch_kernels

needs_kernels = pytest.mark.skipif(watch_kernels() is None,
                                   reason="the CPU kernels (depthlab[fast], Numba) are off")


def _model(kind: str) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    if kind == "mlp":
        return nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 16),
                             nn.ReLU(inplace=True), nn.Linear(16, 4)), torch.randn(8, 12)
    return nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 4 * 4, 4)), torch.randn(8, 2, 6, 6)


def _train(kind: str, every: int, steps: int = 7, bf16: bool = False, running: bool = False):
    """Train with a Watch; the loop's own losses (``loss.item()`` at each step)."""
    model, x = _model(kind)
    y = torch.arange(8) % 4
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    watch = dlt.Watch(model, every=every, theory=False)
    total = torch.zeros(())
    losses = []
    for i in range(steps):
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = nn.functional.cross_entropy(model(x + 0.01 * i), y)
        loss.backward()
        if running:  # a running-loss tensor the loop reuses: its value at this step
            total.zero_()
            total += loss.detach()
            watch.step(total)
            losses.append(total.item())
        else:
            watch.step(loss)
            losses.append(loss.item())
        opt.step()
    return watch, losses


@needs_kernels
@pytest.mark.parametrize("bf16", [False, True])
@pytest.mark.parametrize("running", [False, True])
def test_losses_are_the_loops_own_to_the_bit(bf16, running):
    """bf16 losses (autocast) and a running-loss tensor written in place each step: the stored
    loss of every step is that step's value, exactly."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        watch, losses = _train("mlp", 3, steps=8, bf16=bf16, running=running)
    assert watch.losses()["loss"].tolist() == losses
    assert watch.losses()["step"].tolist() == list(range(8))
    watch.close()


@needs_kernels
def test_a_refused_step_keeps_no_loss():
    """A recorded call without a backward is refused and its loss is not kept: the next
    step's loss is numbered as before."""
    model, x = _model("mlp")
    y = torch.arange(8) % 4
    watch = dlt.Watch(model, every=1, theory=False)
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    watch.step(loss)
    with pytest.raises(ValueError, match="without a backward"):
        watch.step(loss)
    loss2 = nn.functional.cross_entropy(model(x), y)
    loss2.backward()
    watch.step(loss2)
    table = watch.losses()
    assert table["step"].tolist() == [0, 1]
    assert table["loss"].tolist() == [loss.item(), loss2.item()]
    watch.close()


def _sums(acc: Acc) -> tuple:
    return tuple(acc.ns), tuple(acc.cs), tuple(map(float, acc.a)), tuple(map(float, acc.b)), \
        tuple(map(float, acc.abs))


@pytest.mark.parametrize("kernels", [True, False])
@pytest.mark.parametrize("shape", [(64, 10), (3,), (5, 1, 7)])
def test_acc_reads_a_plain_tensor_as_its_detached_alias(kernels, shape):
    """The sums of a tensor outside autograd, read as it is, are those of its detached alias
    (kernels path, torch path, a tensor that cancels around its mean, a transposed one)."""
    k = watch_kernels() if kernels else None
    if kernels and k is None:
        pytest.skip("the CPU kernels are off")
    torch.manual_seed(1)
    reversed_dims = range(len(shape) - 1, -1, -1)  # (a non-contiguous layout)
    for x in (torch.randn(shape), torch.randn(shape) * 1e-3 + 5.0, torch.randn(shape).double(),
              torch.randn(*shape[::-1]).permute(*reversed_dims)):
        a, b = Acc(want_abs=True), Acc(want_abs=True)
        a.add(x, None, k)
        b.add(x.detach().requires_grad_(True).detach(), None, k)  # (another alias)
        if not a.host:  # the torch path: values read after a transfer
            continue
        assert _sums(a) == _sums(b)
    g = torch.randn(shape, requires_grad=True)  # still detached where it requires grad
    c, d = Acc(want_abs=True), Acc(want_abs=True)
    c.add(g, None, k)
    d.add(g.detach(), None, k)
    if c.host:
        assert _sums(c) == _sums(d)
