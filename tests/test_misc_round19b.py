"""Round 19b (misc19b): the accuracy of a model returning a dataclass, the batch-norm cure on a
layer the forward runs several times, predict's messages for a CSV's cells."""

from __future__ import annotations

import dataclasses

import numpy as np
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


@pytest.mark.parametrize("name,content,fragment", [
    ("empty_cell.csv", b"a,b,c\n1,2,3\n4,,6\n",
     "line 3 has an empty cell in column 'b'; expected a number in every cell"),
    ("headerless.csv", b"1,2,3\n4,,6\n", "line 2 has an empty cell in column 2 of 3"),
    ("short_after_blank.csv", b"a,b,c\n1,2,3\n\n4,5\n",
     "line 4 has 2 values but the file has 3 columns"),
    ("na.csv", b"a,b,c\n1,2,3\n4,n/a,6\n",
     "line 3 holds 'n/a' in column 'b' (read as a missing value)"),
    ("inf.csv", b"a,b,c\n1,2,3\n4,inf,6\n",
     "contains NaN or infinity (first on line 3, column 'b': 'inf'); accepted: finite"),
    ("f32.csv", b"a,b,c\n1,2,3\n4,1e39,6\n",
     "value 1e+39 (line 3, column 'b') does not fit in float32"),
    ("nul.csv", b"a,b,c\n1,2,3\n4\x005,6\n", "could not be read: line 3 holds a NUL byte"),
    ("long.csv", b"a,b,c\n1,2,3\n4,5,6,7\n",
     "could not be read: line 3 has 4 cells but the lines before it have 3"),
    ("latin1.csv", b"a,b,c\n1,2,3\n4,\xe9,6\n",
     "could not be read: line 3 is not UTF-8 text (byte 0xe9)"),
    ("blank.csv", b"", "could not be read: the file is empty (no header, no rows)"),
    ("damaged.csv.gz", b"not gzip", "could not be read: corrupt gzip data (Not a gzipped"),
])
def test_predict_names_a_csv_cell_by_its_line_and_column(tmp_path, capsys, monkeypatch, name,
                                                         content, fragment):
    """predict named a CSV's missing cell by 0-based row and column index ('row 1 has an empty
    cell in column 1') where training names the file line and the column name, a NaN or inf
    cell as 'first at row 1, column 1', and some messages said "DATA 'x.csv' could not be
    read: DATA 'x.csv': ..." (the file twice; a Latin-1 file as "'utf-8' codec can't decode
    byte 0xe9 in position 14"). Now one line naming the file once, the line and the column."""
    import depthlab as dl
    from depthlab.cli import main

    monkeypatch.chdir(tmp_path)
    dl.save(dl.mlp([3, 5, 2], seed=0), tmp_path / "net.npz")
    (tmp_path / name).write_bytes(content)
    assert main(["predict", "net.npz", name]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and fragment in err, err
    assert err.count(repr(name)) == 1 and "row 1" not in err, err


def test_a_runs_csv_names_the_feature_column_past_its_dropped_label(tmp_path):
    from depthlab.inference import read_input_file

    path = tmp_path / "train.csv"
    path.write_text("label,a,b\n0,1,2\n1,3,\n")
    with pytest.raises(ValueError, match=r"line 3 has an empty cell in column 'b';"):
        read_input_file(str(path), "label")
    path.write_text("a,label,b\n1,0,2\n3,1,4\n")
    found = read_input_file(str(path), "label")
    assert found.x.tolist() == [[1.0, 2.0], [3.0, 4.0]] and found.labels.tolist() == [0, 1]
    assert found.where(1, 1) == "line 3, column 'b'" and found.where(0, 0) == "line 2, column 'a'"
    assert np.array_equal(found.x, np.array([[1.0, 2.0], [3.0, 4.0]]))


def test_batchnorm_cure_goes_after_a_conv_transpose_too():
    """A ConvTranspose layer followed by an activation got no batch norm (a decoder's norms
    went after its Conv layers only, 2 of 3 hidden layers, verified as "after each layer")."""
    from depthlab.torch import prescriptions as rx

    torch.manual_seed(0)
    x = torch.randn(8, 1, 8, 8)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(),
                          nn.ConvTranspose2d(4, 6, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(6, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 8 * 8, 3))
    assert rx.insert_batchnorm(model, x) == 3
    norm = model._modules["2_bn"]  # right after the ConvTranspose2d
    assert isinstance(norm, nn.BatchNorm2d) and norm.num_features == 6
    assert model(x).shape == (8, 3)

    class Decoder(nn.Module):  # a custom forward: the layer's slot is wrapped
        def __init__(self):
            super().__init__()
            self.up = nn.ConvTranspose1d(3, 5, 2, stride=2)
            self.out = nn.Linear(5 * 8, 2)

        def forward(self, x):
            return self.out(torch.relu(self.up(x)).flatten(1))

    dec = Decoder()
    assert rx.insert_batchnorm(dec, torch.randn(6, 3, 4)) == 1
    assert isinstance(dec.up[1], nn.BatchNorm1d) and dec.up[1].num_features == 5


def test_an_activation_swap_that_leaves_a_functional_activation_is_not_applicable():
    """A forward mixing an activation module (``self.act(self.l1(x))``) and a function
    (``torch.sigmoid(self.l2(h))``): the swap to ReLU replaced the module only and reported 1
    swap, so 'ReLU with He initialization' trained a half-sigmoid model under its name. Now
    NotApplicable naming the layer; a model of modules only is swapped as before."""
    from depthlab.torch import prescriptions as rx

    class Mixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.l1, self.l2, self.l3 = nn.Linear(6, 8), nn.Linear(8, 8), nn.Linear(8, 2)
            self.act = nn.Sigmoid()

        def forward(self, x):
            return self.l3(torch.sigmoid(self.l2(self.act(self.l1(x)))))

    torch.manual_seed(0)
    x = torch.randn(5, 6)
    with pytest.raises(rx.NotApplicable, match=r"after 'l2' \(sigmoid\) itself.*relu would "
                                               r"replace 1 of the 2 hidden"):
        rx.swap_activations(Mixed(), "relu", x)
    seq = nn.Sequential(nn.Linear(6, 8), nn.Sigmoid(), nn.Linear(8, 8), nn.Sigmoid(),
                        nn.Linear(8, 1), nn.Sigmoid())  # the output's sigmoid is kept
    assert rx.swap_activations(seq, "relu", x) == 2 and isinstance(seq[5], nn.Sigmoid)


def test_a_binary_cross_entropy_in_a_partial_has_an_accuracy():
    """evaluate's accuracy of partial(F.binary_cross_entropy_with_logits, pos_weight=w) (or of
    a partial of the module) was NaN: binary_threshold did not look inside the partial, as
    the loss's ignore_index and mean mass do."""
    import functools

    import torch.nn.functional as F

    from depthlab.torch.train import binary_threshold, evaluate

    torch.manual_seed(0)
    model, x = nn.Linear(5, 3), torch.randn(40, 5)
    y = (torch.rand(40, 3) > 0.5).float()
    with torch.no_grad():
        direct = float(((model(x) > 0) == (y == 1)).double().mean())
    for loss_fn in (functools.partial(F.binary_cross_entropy_with_logits, pos_weight=torch.ones(3)),
                    functools.partial(nn.BCEWithLogitsLoss())):
        assert evaluate(model, x, y, loss_fn)["acc"] == pytest.approx(direct, abs=1e-12)
    assert binary_threshold(functools.partial(F.binary_cross_entropy, reduction="mean")) == 0.5


def test_predict_leaves_out_a_pandas_index_column_as_training_does(tmp_path):
    """A CSV written by pandas' to_csv with its index (a first column without a name holding
    0, 1, 2, ...): training leaves it out of the features with a warning, predict read it as a
    feature, so a run's own training CSV was refused ('has 4 features per row; the network
    expects 3')."""
    import pandas as pd

    from depthlab.data import load_dataset
    from depthlab.inference import read_input_file

    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.normal(size=(40, 3)), columns=["a", "b", "c"])
    df["label"] = rng.integers(0, 2, 40)
    path = tmp_path / "indexed.csv"
    df.to_csv(path)
    with pytest.warns(UserWarning, match="no name and holds 0, 1, 2"):
        load_dataset(str(path))  # training: 3 features
    with pytest.warns(UserWarning, match=r"'.*indexed.csv': its first column has no name"):
        found = read_input_file(str(path), "label")
    assert np.array_equal(found.x, df[["a", "b", "c"]].to_numpy())
    assert found.labels.tolist() == df["label"].tolist()
    assert found.where(2, 1) == "line 4, column 'b'"
    df.loc[3, "b"] = np.nan
    df.to_csv(path)
    with pytest.warns(UserWarning), pytest.raises(ValueError,
                                                  match=r"line 5 has an empty cell in column 'b'"):
        read_input_file(str(path), "label")


def test_predict_names_the_first_text_cell_of_a_non_numeric_column(tmp_path):
    """predict named a non-numeric column only ("non-numeric column(s) ['b']"), where
    training names the cell's text and its line."""
    from depthlab.inference import read_input_file

    path = tmp_path / "t.csv"
    path.write_text("label,a,b,c\n0,1,2,3\n\n1,4,xyz,6\n")
    with pytest.raises(ValueError, match=r"non-numeric column\(s\) \['b'\]: column 'b' holds "
                                         r"'xyz' on line 4, which is not a number; expected"):
        read_input_file(str(path), "label")


def test_the_doctor_says_why_the_rules_batchnorm_cure_does_not_apply_to_a_tied_model():
    """With Glorot weights the vanishing-gradient rule's own cure is batch normalization: on a
    weight-tied model the doctor now names why it left that cure out (before: verified on a
    model with one norm after 'inp')."""
    import depthlab.torch as dlt

    def make():
        model = _Tied()
        for layer in (model.inp, model.h, model.out):
            nn.init.xavier_uniform_(layer.weight)
        return model

    torch.manual_seed(0)
    x = torch.randn(240, 8)
    y = (x[:, 0] + x[:, 1] > 0).long() + (x[:, 2] > 0.5).long()
    diag = dlt.doctor(make, (x[:200], y[:200], x[200:], y[200:]), loss_fn=nn.CrossEntropyLoss(),
                      optimizer=("sgd", {"lr": 0.1}), steps=20, batch_size=32, verify=False)
    vanishing = next(f for f in diag.findings if f.kind == "vanishing_gradients")
    assert vanishing.prescription.get("normalization") is None
    assert ("the rule's own cure {\"normalization\": \"batchnorm\"} does not apply: no batch "
            "norm after 'h': it runs 8 times per forward") in vanishing.prescription_text


def test_a_repeated_layer_no_batch_norm_fits_is_not_given_as_the_reason():
    """The weight-tied refusal named a repeated nn.Bilinear ("'bil': it runs 3 times per
    forward"), which gets no batch norm however often it runs: only layers a norm fits count."""
    from depthlab.torch import prescriptions as rx
    from depthlab.torch.train import TorchTrainSpec

    class Bi(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp, self.bil = nn.Linear(4, 8), nn.Bilinear(8, 8, 8)
            self.out = nn.Linear(8, 2)

        def forward(self, x):
            h = torch.tanh(self.inp(x))
            for _ in range(3):
                h = torch.tanh(self.bil(h, h))
            return self.out(h)

    torch.manual_seed(0)
    model, _ = rx.apply({"normalization": "batchnorm"}, Bi(), TorchTrainSpec(),
                        torch.randn(16, 4))
    assert isinstance(model.inp[1], nn.BatchNorm1d)
