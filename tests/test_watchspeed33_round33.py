"""Round 33 (watchspeed33): a recorded step on the CPU kernels' path reads its loss once.

A step that records reads its CPU loss to a host float in ``Watch.step`` (the record needs
the value; it read the kept tensor twice: the ``loss`` row and the loss history), while
unrecorded steps still keep a detached tensor and read nothing. Checked for what a user sees:
the same losses and rows as the loop's own ``loss.item()``, mixed float/tensor histories
between records, a refused call, half-precision losses, and no warning.
"""

from __future__ import annotations

import warnings

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

import depthlab.torch as dlt  # noqa: E402
from depthlab.probes import accel  # noqa: E402

pytestmark = pytest.mark.skipif(not accel.available(), reason="Numba (depthlab[fast]) is not "
                                "installed: the CPU kernels' path")

STEPS = 7


def _setup():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(inplace=True), nn.Linear(5, 3))
    g = torch.Generator().manual_seed(1)
    xs = [torch.randn(8, 6, generator=g) for _ in range(STEPS)]
    ys = [torch.randint(0, 3, (8,), generator=g) for _ in range(STEPS)]
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return model, xs, ys, opt


class _Reads(TorchDispatchMode):
    """Counts the tensor-to-number reads (``aten._local_scalar_dense``)."""

    def __init__(self) -> None:
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.n += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("every", [1, 3])
def test_a_record_reads_each_loss_once(every):
    """Inside a recorded ``Watch.step`` each loss since the last record becomes a number once:
    every=1, one read per step (HEAD: 2, the loss row and the history each read the last
    loss); every=3, the 3 losses of the cycle (HEAD: 4). Unrecorded steps read none."""
    model, xs, ys, opt = _setup()
    watch = dlt.Watch(model, every=every, theory=False)
    reads, mine = [], []
    for x, y in zip(xs, ys):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        mine.append(loss.item())
        with _Reads() as r:
            watch.step(loss)
        reads.append(r.n)
        opt.step()
    watch.close()
    if every == 1:
        assert reads == [1] * STEPS
    else:  # steps 0, 3, 6 record: 1, then 3 losses each
        assert reads == [1, 0, 0, 3, 0, 0, 3]
    losses = watch.losses()
    assert losses.step.tolist() == list(range(STEPS))
    assert losses.loss.tolist() == mine  # the loop's own loss.item(), to the bit
    frame = watch.frame()
    rows = frame[frame.quantity == "loss"]
    assert rows.step.tolist() == list(range(0, STEPS, every))
    assert rows.value.tolist() == mine[::every]


def test_losses_between_records_and_a_refused_call():
    """``losses()`` between records (kept tensors only), then a recorded call refused (no
    backward since the previous one) leaves no number behind: the next recorded call's loss
    history has one value per step, each the loop's."""
    model, xs, ys, opt = _setup()
    watch = dlt.Watch(model, every=3, theory=False)
    mine = []
    for k, (x, y) in enumerate(zip(xs[:5], ys[:5])):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        mine.append(loss.item())
        watch.step(loss)
        if k == 2:
            assert watch.losses().loss.tolist() == mine  # 0 (recorded), 1, 2 (kept tensors)
            opt.step()
            with pytest.raises(ValueError, match="without a backward"):
                watch.step(loss)  # call 3 records: refused, its number dropped
        else:
            opt.step()
    watch.close()
    losses = watch.losses()
    assert losses.step.tolist() == [0, 1, 2, 3, 4]
    assert losses.loss.tolist() == mine
    frame = watch.frame()
    assert frame[frame.quantity == "loss"].value.tolist() == [mine[0], mine[3]]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_other_loss_dtypes_are_read_exactly_without_warning(dtype):
    """A loss in half precision or float64 is the same number as its float64 conversion (the
    history kept as float64), and reading a loss that requires grad warns nothing."""
    model, xs, ys, opt = _setup()
    watch = dlt.Watch(model, every=2, theory=False)
    mine = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for x, y in zip(xs[:4], ys[:4]):
            opt.zero_grad()
            out = nn.functional.cross_entropy(model(x), y)
            out.backward()
            loss = out.to(dtype)  # (a loss tensor of that dtype, with its graph)
            assert loss.requires_grad
            mine.append(float(loss.detach().to(torch.float64)))
            watch.step(loss)
            opt.step()
    watch.close()
    assert watch.losses().loss.tolist() == mine
    frame = watch.frame()
    assert frame[frame.quantity == "loss"].value.tolist() == mine[::2]
