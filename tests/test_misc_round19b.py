"""Round 19b (misc19b): the accuracy of a model returning a dataclass, the batch-norm cure on a
layer the forward runs several times, predict's messages for a CSV's cells."""

from __future__ import annotations

import dataclasses

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402


@dataclasses.dataclass
class _Output:
    loss: torch.Tensor | None
    aux: torch.Tensor  # (N, C) too: the logits field is read first (ACC_KEYS)
    logits: torch.Tensor


class _DataclassNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 4))
        self.aux = nn.Linear(6, 4)

    def forward(self, x):
        return _Output(loss=None, aux=self.aux(x), logits=self.body(x))


def _dataclass_loss(out, y):
    return nn.functional.cross_entropy(out.logits, y)


def test_accuracy_of_a_model_returning_a_dataclass_in_probe_and_evaluate():
    """A model returning @dataclass Output(loss=None, logits=...) had no ``acc`` row in
    dlt.probe and NaN accuracy in the doctor's evaluate (dicts and tuples had one): its
    fields are now read as a dict's values, ACC_KEYS ('logits') first."""
    import depthlab.torch as dlt
    from depthlab.torch.train import accuracy_output, evaluate

    torch.manual_seed(0)
    model = _DataclassNet()
    x, y = torch.randn(60, 6), torch.randint(0, 4, (60,))
    with torch.no_grad():
        out = model(x)
    direct = float((out.logits.argmax(1) == y).double().mean())
    aux_acc = float((out.aux.argmax(1) == y).double().mean())
    assert direct != aux_acc  # the test tells the two fields apart
    assert accuracy_output(out, y, None) is out.logits
    df = dlt.probe(model, x, y, _dataclass_loss)
    acc = df[df.quantity == "acc"]
    assert len(acc) == 1 and int(acc.layer.iloc[0]) == 0
    assert float(acc.value.iloc[0]) == pytest.approx(direct, abs=1e-12)
    got = evaluate(model, x, y, _dataclass_loss)
    assert got["acc"] == pytest.approx(direct, abs=1e-12)
    # a binary cross-entropy's accuracy: the first field shaped like the 0/1 targets
    yb = (torch.rand(60, 4) > 0.5).float()
    assert accuracy_output(out, yb, 0.0) is out.logits


def test_the_torch_doctor_reports_the_accuracy_of_a_dataclass_model():
    import depthlab.torch as dlt

    torch.manual_seed(1)
    x = torch.randn(200, 6)
    y = (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long()
    diag = dlt.doctor(_DataclassNet, (x[:160], y[:160], x[160:], y[160:]),
                      loss_fn=_dataclass_loss, optimizer=("sgd", {"lr": 0.1}), steps=20,
                      batch_size=32, seed=0, verify=False)
    assert 0.0 <= diag.baseline["val_acc"] <= 1.0
    assert 0.0 <= diag.baseline["train_acc"] <= 1.0
