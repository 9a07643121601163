"""Round 19: the torch doctor, its command line and the bridge on losses, models and data
the earlier rounds left out."""

from __future__ import annotations

import functools
import importlib

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

import depthlab.torch as dlt  # noqa: E402

tdoc = importlib.import_module("depthlab.torch.doctor")  # (depthlab.torch.doctor: the function)


def _brute_constant(loss_fn, y: torch.Tensor) -> float:
    """The least mean loss of one constant per target column, by a grid search in float64."""
    total = 0.0
    for col in y.double().reshape(len(y), -1).T:
        grid = torch.linspace(float(col.min()), float(col.max()), 4001, dtype=torch.float64)
        losses = torch.stack([loss_fn(torch.full_like(col, float(c)), col) for c in grid])
        i = int(losses.argmin())
        fine = torch.linspace(float(grid[max(i - 1, 0)]), float(grid[min(i + 1, 4000)]), 2001,
                              dtype=torch.float64)
        total += float(torch.stack([loss_fn(torch.full_like(col, float(c)), col)
                                    for c in fine]).min())
    return total / y.reshape(len(y), -1).shape[1]


@pytest.mark.parametrize("loss_fn", [
    nn.L1Loss(), nn.HuberLoss(), nn.HuberLoss(delta=0.3), nn.SmoothL1Loss(),
    nn.SmoothL1Loss(beta=0.2), nn.SmoothL1Loss(beta=0.0), F.l1_loss,
    functools.partial(F.huber_loss, delta=2.0), functools.partial(F.smooth_l1_loss, beta=0.5)],
    ids=["l1", "huber", "huber0.3", "smooth_l1", "smooth_l1_0.2", "smooth_l1_0", "F.l1",
         "F.huber2", "F.smooth_l1_0.5"])
def test_the_constant_prediction_of_an_l1_or_huber_regression_is_known(loss_fn):
    # constant_loss was NaN for L1Loss, HuberLoss and SmoothL1Loss, so a cure of such a
    # regression that only learned each target's median read "helped" (the constant-prediction
    # condition of the verdict was off); the best constant's mean loss, per column
    g = torch.Generator().manual_seed(1)
    y = torch.cat([torch.randn(301, 1, generator=g) * 2 + 3,
                   torch.rand(301, 1, generator=g).log().neg() * 3,
                   torch.randn(301, 1, generator=g) * 0.1], dim=1)
    got = tdoc.constant_loss(loss_fn, y, None)
    assert got == pytest.approx(_brute_constant(loss_fn, y), rel=1e-6)
    assert tdoc.constant_loss(nn.L1Loss(reduction="sum"), y, None) != \
        tdoc.constant_loss(nn.L1Loss(reduction="sum"), y, None)  # NaN: not a mean


def test_an_l1_regressions_verified_cure_is_judged_against_the_median_prediction():
    # targets unrelated to the inputs: the baseline (a deep sigmoid net) ends at the median's
    # loss; the verifications carry that loss, so a cure reaching it does not read "helped"
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 6, generator=g)
    y = torch.randn(200, 1, generator=g) * 2 + 3

    def make():
        layers = [nn.Linear(6, 16), nn.Sigmoid()]
        for _ in range(7):
            layers += [nn.Linear(16, 16), nn.Sigmoid()]
        model = nn.Sequential(*layers, nn.Linear(16, 1))
        for m in model.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 1.0)
        return model

    d = dlt.doctor(make, (x, y), loss_fn=nn.L1Loss(), steps=20, verify=True, max_cures=1)
    assert d.verifications
    data = tdoc.tensor_data((x, y), torch.device("cpu"), torch.float32, 0, float_targets=True)
    median = float((data.y - data.y.median()).abs().mean())  # 160 rows: any middle value
    for v in d.verifications:
        assert v.chance_loss == pytest.approx(median, rel=1e-6)
        assert not (v.helped and v.after["train_loss"] >= 0.99 * v.chance_loss)


@pytest.mark.parametrize("loss_fn,ignored", [
    (nn.CrossEntropyLoss(ignore_index=-1), -1), (nn.CrossEntropyLoss(), -100),
    (functools.partial(F.cross_entropy, ignore_index=2), 2)], ids=["-1", "default", "partial"])
def test_the_final_accuracy_leaves_out_the_rows_the_loss_ignores(loss_fn, ignored):
    # train.evaluate (the doctor's final train/val accuracy) counted the rows labelled with the
    # loss's ignore_index as misses for (N, C) outputs (CrossEntropyLoss(ignore_index=-1), a
    # quarter of the rows -1: train acc 0.5875 where 0.7966 of the labelled rows were right);
    # probe.accuracy and the (N, C, H, W) case already left them out
    ttrain = importlib.import_module("depthlab.torch.train")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 10, generator=g)
    y = x[:, :3].argmax(1)
    y[::4] = ignored
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 16), nn.Tanh(), nn.Linear(16, 3))
    with torch.no_grad():
        out = model(x)
    keep = y != ignored
    want = float((out.argmax(1)[keep] == y[keep]).double().mean())
    got = ttrain.evaluate(model, x, y, loss_fn)
    assert got["acc"] == pytest.approx(want, abs=1e-12)
    assert got["loss"] == pytest.approx(float(loss_fn(out, y)), rel=1e-6)


@pytest.mark.parametrize("loss_fn", [
    nn.CrossEntropyLoss(), nn.CrossEntropyLoss(weight=torch.tensor([1.0, 5.0, 20.0])),
    nn.CrossEntropyLoss(weight=torch.tensor([1.0, 5.0, 20.0]), label_smoothing=0.1),
    functools.partial(F.cross_entropy, ignore_index=1),
    functools.partial(F.nll_loss, weight=torch.tensor([2.0, 1.0, 0.5]))],
    ids=["ce", "weighted", "weighted-smoothed", "partial-ignore-1", "nll-weighted"])
@pytest.mark.parametrize("dense", [False, True], ids=["rows", "per-position"])
def test_the_final_loss_over_several_batches_is_the_whole_sets_loss(loss_fn, dense):
    # evaluate weighed each batch's mean by its number of rows, but a class-index loss with
    # class weights or ignored labels divides by the sum of its labels' weights: 2000 rows in
    # two batches, the first mostly the ignored -100: 1.2265 for a whole-set loss of 1.2377
    ttrain = importlib.import_module("depthlab.torch.train")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2000, 10, generator=g)
    y = x[:, :3].argmax(1)
    y[:1000][torch.rand(1000, generator=g) < 0.9] = -100
    y[:1000][torch.rand(1000, generator=g) < 0.5] = 1
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 16), nn.Tanh(), nn.Linear(16, 3))
    if isinstance(loss_fn, functools.partial) and loss_fn.func is F.nll_loss:
        model.append(nn.LogSoftmax(dim=1))
        y[y == -100] = 0  # (the weighted NLL case: no ignored labels, weights alone)
    elif isinstance(loss_fn, functools.partial):
        y[y == -100] = 1  # its ignore_index
    if dense:  # (N, C, L) scores, (N, L) labels
        model.append(nn.Unflatten(1, (3, 1)))
        y = y.unsqueeze(1)
    with torch.no_grad():
        want = float(loss_fn(model(x), y))
    assert len(x) > ttrain.EVAL_BATCH
    assert ttrain.evaluate(model, x, y, loss_fn)["loss"] == pytest.approx(want, rel=1e-6)


def test_a_time_first_lstm_is_named_with_its_batch_first():
    # nn.LSTM(8, 16) (batch_first=False, torch's default) reads the doctor's examples (N, T, 8)
    # with the T time steps as its batch: 'Expected input batch_size (8) to match target
    # batch_size (2)' said nothing of why; the error names the layer and batch_first=True
    class TimeFirst(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = nn.LSTM(8, 16)
            self.head = nn.Linear(16, 3)

        def forward(self, x):
            _, (h, _) = self.rnn(x)
            return self.head(h[-1])

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 8, 8, generator=g), torch.randint(0, 3, (40,), generator=g)
    with pytest.raises(ValueError, match=r"LSTM 'rnn' has batch_first=False .* its outputs "
                                         r"have 8 rows \(the time steps\) for 2 examples; build "
                                         r"it with batch_first=True$"):
        dlt.doctor(TimeFirst, (x, y), steps=2, verify=False)

    class BatchFirst(TimeFirst):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = nn.LSTM(8, 16, batch_first=True)

    with pytest.raises(ValueError) as e:  # another failure of a batch-first one: no such hint
        dlt.doctor(BatchFirst, (x, torch.randint(0, 3, (40, 2), generator=g)), steps=2,
                   verify=False)
    assert "batch_first" not in str(e.value)
