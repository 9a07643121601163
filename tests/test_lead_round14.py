"""Round 14, lead: a watched loop ended by Ctrl-C is stored with a message that says so."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import depthlab.torch as dlt  # noqa: E402
from depthlab.experiments.store import Store  # noqa: E402


def _loop(watch: dlt.Watch, model: nn.Module, steps: int, stop: BaseException) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    for i in range(steps):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        watch.step(loss)
        opt.step()
        if i == steps - 1:
            raise stop


@pytest.mark.parametrize("stop, text", [
    (KeyboardInterrupt(), "KeyboardInterrupt: interrupted (Ctrl-C) after 3 steps"),
    (RuntimeError(), "RuntimeError: raised after 3 steps"),
    (ValueError("bad batch"), "ValueError: bad batch"),
])
def test_a_watched_loop_ended_by_an_exception_is_stored_with_a_message(tmp_path, stop, text):
    # was: "KeyboardInterrupt: " (the exception's empty message) as the failed run's error
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3))
    with pytest.raises(type(stop)):
        with dlt.Watch(model, every=2, out=tmp_path, theory=False) as watch:
            _loop(watch, model, 3, stop)
    with Store(tmp_path) as store:
        runs = store.runs()
    assert list(runs["status"]) == ["failed"]
    record = watch.record()
    assert record.error == text
    assert len(record.steps) == 3


def _binary_data(n: int = 400, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).float()
    return x, y


@pytest.mark.parametrize("loss_fn, tail, threshold", [
    (nn.BCEWithLogitsLoss(), [], 0.0),
    (nn.functional.binary_cross_entropy_with_logits, [], 0.0),
    (nn.BCELoss(), [nn.Sigmoid()], 0.5),
    (nn.functional.binary_cross_entropy, [nn.Sigmoid()], 0.5),
])
def test_a_binary_cross_entropy_with_hard_targets_has_an_accuracy(loss_fn, tail, threshold):
    # was: NaN (accuracy only for integer labels and one output per class), so the doctor's
    # before/after and its "helped" rule had no accuracy for a binary classifier
    from depthlab.torch.train import evaluate

    x, y = _binary_data(1025)  # two evaluation batches (512 + 513)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 4), nn.Tanh(), nn.Linear(4, 1), *tail, nn.Flatten(0))
    with torch.no_grad():
        want = int(((model(x) > threshold) == (y == 1)).sum()) / len(y)
    got = evaluate(model, x, y, loss_fn)
    assert got["acc"] == pytest.approx(want, abs=1e-12)
    assert 0.0 < got["acc"] < 1.0
    soft = y * 0.9 + 0.05  # soft targets: no accuracy
    assert evaluate(model, x, soft, loss_fn)["acc"] != evaluate(model, x, soft, loss_fn)["acc"]


def test_a_multi_label_accuracy_counts_each_entry():
    from depthlab.torch.train import evaluate

    x, y1 = _binary_data(300)
    y = torch.stack([y1, 1 - y1, torch.ones_like(y1)], dim=1)
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(6, 3))
    with torch.no_grad():
        want = int(((model(x) > 0) == (y == 1)).sum()) / y.numel()
    assert evaluate(model, x, y, nn.BCEWithLogitsLoss())["acc"] == pytest.approx(want)
    # a regression loss on the same float targets keeps no accuracy
    acc = evaluate(model, x, y, nn.MSELoss())["acc"]
    assert acc != acc


def test_the_doctor_reports_a_binary_classifiers_accuracy():
    x, y = _binary_data(400)

    def make():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 1), nn.Flatten(0))

    diag = dlt.doctor(make, (x, y), loss_fn=nn.BCEWithLogitsLoss(),
                      optimizer=("sgd", {"lr": 0.5}), steps=60, batch_size=32, verify=False)
    assert diag.baseline["train_acc"] > 0.8 and diag.baseline["val_acc"] > 0.7
