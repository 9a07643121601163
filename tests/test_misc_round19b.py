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


class _Tied(nn.Module):
    """One hidden layer ``h`` applied 8 times after ``inp`` (weight-tied), sigmoid functions."""

    def __init__(self, n_in: int = 8, width: int = 16, n_out: int = 3, std: float | None = None):
        super().__init__()
        self.inp, self.h = nn.Linear(n_in, width), nn.Linear(width, width)
        self.out = nn.Linear(width, n_out)
        if std is not None:
            for m in (self.inp, self.h, self.out):
                nn.init.normal_(m.weight, 0.0, std)

    def forward(self, x):
        x = torch.sigmoid(self.inp(x))
        for _ in range(8):
            x = torch.sigmoid(self.h(x))
        return self.out(x)


def test_batchnorm_cure_is_not_applicable_when_it_skips_a_layer_run_several_times():
    """The batch-norm cure went after 'inp' only (1 of the 9 hidden layer calls: 'h' runs 8
    times and is skipped) and was verified as 'insert BatchNorm after each layer'; now the
    doctor's transform (rx.apply) says it does not apply, naming the layer and its calls.
    insert_batchnorm itself still skips the shared layer (test_torch_functional_act)."""
    from depthlab.torch import prescriptions as rx
    from depthlab.torch.train import TorchTrainSpec

    torch.manual_seed(0)
    x = torch.randn(32, 8)
    model = _Tied()
    assert rx.insert_batchnorm(model, x) == 1 and isinstance(model.h, nn.Linear)
    with pytest.raises(rx.NotApplicable, match=r"'h': it runs 8 times per forward.*1 of the 9 "
                                               r"hidden layer calls"):
        rx.apply({"normalization": "batchnorm"}, _Tied(), TorchTrainSpec(), x)

    class Siamese(nn.Module):  # a shared nn.Sequential gets its norms as children: applies
        def __init__(self):
            super().__init__()
            self.enc = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh())
            self.out = nn.Linear(16, 2)

        def forward(self, x):
            return self.out(torch.cat([self.enc(x[:, :4]), self.enc(x[:, 4:])], 1))

    siamese, _ = rx.apply({"normalization": "batchnorm"}, Siamese(), TorchTrainSpec(), x)
    assert sum(isinstance(m, nn.BatchNorm1d) for m in siamese.modules()) == 2


def test_the_doctor_verifies_no_partial_batchnorm_cure_on_a_weight_tied_model():
    import depthlab.torch as dlt

    torch.manual_seed(0)
    x = torch.randn(240, 8)
    y = (x[:, 0] + x[:, 1] > 0).long() + (x[:, 2] > 0.5).long()
    diag = dlt.doctor(lambda: _Tied(std=0.05), (x[:200], y[:200], x[200:], y[200:]),
                      loss_fn=nn.CrossEntropyLoss(), optimizer=("sgd", {"lr": 0.1}),
                      steps=20, batch_size=32, seed=0, verify=True, max_cures=2)
    kinds = [f.kind for f in diag.findings]
    assert "vanishing_gradients" in kinds, kinds
    assert all(v.prescription.get("normalization") is None for v in diag.verifications), \
        [v.prescription for v in diag.verifications]
