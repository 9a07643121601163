"""Round 23 (huntdoc23): the torch doctor's prescriptions and bad input, as an outside user."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import depthlab.torch as dlt  # noqa: E402
from depthlab.torch import prescriptions as rx  # noqa: E402
from depthlab.torch.train import TorchTrainSpec  # noqa: E402


class _SharedSigmoid(nn.Module):
    """One nn.Sigmoid instance after the hidden layers and the output layer (a BCELoss
    model): no module swap can change the hidden activations alone."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Linear(6, 12), nn.Linear(12, 12), nn.Linear(12, 1)
        self.act = nn.Sigmoid()

    def forward(self, x):
        return self.act(self.c(self.act(self.b(self.act(self.a(x))))))


def test_a_swap_refused_for_an_activation_module_shared_with_the_output_says_why():
    torch.manual_seed(0)
    x = torch.randn(32, 6)
    spec = TorchTrainSpec(optimizer="sgd", lr=0.1, steps=5, batch_size=16, seed=0,
                          probe_every=1)
    with pytest.raises(rx.NotApplicable) as e:
        rx.apply({"activation": "relu", "init": "matched"}, _SharedSigmoid(), spec, x)
    msg = str(e.value)
    assert "'act'" in msg and "output layer" in msg and "'c'" in msg, msg
    assert "\n" not in msg


class _PartlyShared(nn.Module):
    """Layer 'a' has its own Tanh; 'b' shares the output layer's Sigmoid instance."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Linear(6, 12), nn.Linear(12, 12), nn.Linear(12, 1)
        self.t, self.act = nn.Tanh(), nn.Sigmoid()

    def forward(self, x):
        return self.act(self.c(self.act(self.b(self.t(self.a(x))))))


def test_a_swap_that_would_leave_a_hidden_layer_on_the_shared_output_activation_is_refused():
    # swapping 'a's Tanh alone trained "ReLU with He initialization" with 'b' still sigmoid
    torch.manual_seed(0)
    x = torch.randn(32, 6)
    spec = TorchTrainSpec(optimizer="sgd", lr=0.1, steps=5, batch_size=16, seed=0,
                          probe_every=1)
    model = _PartlyShared()
    with pytest.raises(rx.NotApplicable, match="'act' \\(Sigmoid\\) follows the hidden layer"
                                               "\\(s\\) 'b' and also the output layer 'c'"):
        rx.apply({"activation": "relu", "init": "matched"}, model, spec, x)
    # an activation module of its own at the output: swapped, the output's kept
    plain = nn.Sequential(nn.Linear(6, 12), nn.Sigmoid(), nn.Linear(12, 12), nn.Sigmoid(),
                          nn.Linear(12, 1), nn.Sigmoid())
    rx.apply({"activation": "relu", "init": "matched"}, plain, spec, x)
    assert [type(m).__name__ for m in plain if not isinstance(m, nn.Linear)] == \
        ["ReLU", "ReLU", "Sigmoid"]


class _DeepShared(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp, self.out = nn.Linear(6, 16), nn.Linear(16, 1)
        self.hid = nn.ModuleList(nn.Linear(16, 16) for _ in range(8))
        self.act = nn.Sigmoid()
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 1.0)

    def forward(self, x):
        h = self.act(self.inp(x))
        for lin in self.hid:
            h = self.act(lin(h))
        return self.act(self.out(h))


def test_the_doctor_names_the_shared_output_activation_when_no_swap_applies():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 6, generator=g)
    y = (x[:, 0] > 0).float()[:, None]
    d = dlt.doctor(_DeepShared, (x, y), loss_fn=nn.BCELoss(), steps=30, batch_size=32,
                   verify=False)
    f = d.finding("mean_shift")
    assert f is not None and f.prescription == {}, str(d)
    assert "'act' (Sigmoid) follows the hidden layer(s) 'inp', 'hid.0', 'hid.1' and 6 more " \
           "and also the output layer 'out'" in f.prescription_text, str(d)


def _mlp():
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))


@pytest.mark.parametrize("y, said", [
    (np.array(["a", "b", "c"] * 10), "dtype <U1 (strings) (class names: give their indices"),
    (np.array(["a", "b", "c"] * 10, dtype=object), "dtype object (Python objects) (class names"),
    (np.array([None] * 30), "dtype object (Python objects)"),
    (np.array(["2020-01-01"] * 30, dtype="datetime64[D]"), "dtype datetime64[D] (datetimes)"),
])
def test_targets_that_are_not_numbers_are_named_in_one_line(y, said):
    # was 'y must be an array or a tensor, got ndarray: can't convert np.ndarray of type
    # numpy.str_. The only supported types are: float64, ...' (an ndarray it was given)
    x = np.random.default_rng(0).normal(size=(30, 4)).astype(np.float32)
    with pytest.raises(TypeError) as e:
        dlt.doctor(_mlp, (x, y), steps=2, verify=False)
    msg = str(e.value)
    assert msg.startswith("y must hold numbers, got ndarray of ") and said in msg, msg
    assert "\n" not in msg and "only supported types" not in msg


def test_numbers_held_as_python_objects_train_as_numbers():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 4)).astype(np.float32)
    y = rng.integers(0, 3, 30)
    plain = dlt.doctor(_mlp, (x, y), steps=3, verify=False)
    objects = dlt.doctor(_mlp, (x.astype(object), y.astype(object)), steps=3, verify=False)
    assert objects.baseline["train_loss"] == plain.baseline["train_loss"]
    with pytest.raises(TypeError, match="^x must be an array or a tensor, got object$"):
        dlt.doctor(_mlp, (object(), y), steps=3, verify=False)


class _DictOut(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 2), nn.Linear(2, 3)  # 2 features: no class scores

    def forward(self, x):
        h = torch.relu(self.a(x))
        return {"features": h, "logits": self.b(h)}


class _TupleOut(_DictOut):
    def forward(self, x):
        out = super().forward(x)
        return out["features"], out["logits"]


@pytest.mark.parametrize("make, loss_fn, part", [
    (_DictOut, None, "nn.CrossEntropyLoss()(out['logits'], y)"),
    (_TupleOut, None, "nn.CrossEntropyLoss()(out[1], y)"),
    (_DictOut, nn.NLLLoss(), "nn.NLLLoss()(out['logits'], y)"),
])
def test_a_model_returning_a_dict_or_tuple_is_told_the_loss_of_its_class_scores(make, loss_fn,
                                                                               part):
    # a dict was told 'e.g. lambda out, y: nn.functional.cross_entropy(out[0], y)': out[0] is a
    # KeyError, and for a tuple out[0] was the features, not the class scores
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 4)).astype(np.float32)
    y = rng.integers(0, 3, 30)
    with pytest.raises(ValueError) as e:
        dlt.doctor(make, (x, y), loss_fn=loss_fn, steps=2, verify=False)
    assert str(e.value).endswith(f"give a loss_fn that takes it, e.g. lambda out, y: {part}")
    fixed = eval("lambda out, y: " + part, {"nn": nn})  # the hint, as given, trains
    assert np.isfinite(dlt.doctor(make, (x, y), loss_fn=fixed, steps=2,
                                  verify=False).baseline["train_loss"])


class _FeaturesAndLogits(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 3)

    def forward(self, x):
        h = torch.relu(self.a(x))
        return h, self.b(h)


def test_the_accuracy_of_a_features_and_logits_pair_is_read_off_what_the_loss_reads():
    # the first (N, C > 1) tensor 'fit' the labels: the 8 features' arg-max was scored
    # (val acc 0.017 at train loss 0.43)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0.5)

    def loss_fn(out, t):
        return nn.functional.cross_entropy(out[1], t)

    d = dlt.doctor(_FeaturesAndLogits, (x[60:], y[60:], x[:60], y[:60]), loss_fn=loss_fn,
                   steps=60, verify=False)
    torch.manual_seed(0)
    model = _FeaturesAndLogits()
    assert d.baseline["val_acc"] > 0.6, d.baseline
    table = dlt.probe(model, torch.as_tensor(x[:60]), torch.as_tensor(y[:60]), loss_fn)
    acc = table[(table.layer == 0) & (table.quantity == "acc")]["value"].item()
    with torch.no_grad():
        expected = (model(torch.as_tensor(x[:60]))[1].argmax(1) ==
                    torch.as_tensor(y[:60])).double().mean().item()
    assert acc == pytest.approx(expected)


def test_the_part_the_loss_reads_is_found_in_tuples_lists_namedtuples_dicts_dataclasses():
    import collections
    import dataclasses

    from depthlab.torch.train import accuracy_output

    torch.manual_seed(0)
    f, logits, y = torch.randn(6, 8), torch.randn(6, 3), torch.randint(0, 3, (6,))
    pair = collections.namedtuple("Pair", "feat logits")

    @dataclasses.dataclass
    class Out:  # no 'logits' field: the accuracy's keys would pick that one first
        feat: torch.Tensor
        scores: torch.Tensor

    ce = nn.functional.cross_entropy
    for out, loss_fn in (((f, logits), lambda o, t: ce(o[1], t)),
                         ([f, logits], lambda o, t: ce(o[1], t)),
                         (pair(f, logits), lambda o, t: ce(o.logits, t)),
                         ({"a": f, "b": logits}, lambda o, t: ce(o["b"], t)),
                         (Out(f, logits), lambda o, t: ce(o.scores, t))):
        assert accuracy_output(out, y, None) is f  # the first tensor that fits the labels
        assert accuracy_output(out, y, None, (loss_fn, y)) is logits, type(out)
