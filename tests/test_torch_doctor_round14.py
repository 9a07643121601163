"""depthlab.torch.doctor, round 14: a DataLoader's sampler and collate_fn decide the data (were
ignored: the doctor took the loader's whole dataset, raw), and random draws of data are seeded;
``depthlab doctor --torch --loss`` (regression files, binary labels); activations a custom
forward applies after a norm module; batch-norm and activation-swap cures that would never run
are not verified as if they had."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, SubsetRandomSampler, TensorDataset

import depthlab.torch as dlt
from depthlab.torch.doctor import tensor_data

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _restore_torch_rng():
    """torch.manual_seed / torch.rand in these tests: the global generator left as found."""
    state = torch.get_rng_state()
    yield
    torch.set_rng_state(state)


def data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = 10.0 * torch.randn(100, 6, generator=g) + 5.0
    return x, (x[:, 0] > 5).long()


def normalize(batch: list) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*batch)
    return (torch.stack(xs) - 5.0) / 10.0, torch.stack(ys)


def test_a_loaders_collate_fn_makes_the_data():
    """A collate_fn that normalizes: the doctor trained on the raw items (x mean 5.34, std
    10.07) instead of the loader's batches (mean 0.03, std 1.007)."""
    x, y = data()
    d = tensor_data(DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True,
                               collate_fn=normalize), CPU, torch.float32, 0)
    got = torch.cat([d.x, d.x_val])
    assert torch.allclose(got.sort(dim=0).values, ((x - 5.0) / 10.0).sort(dim=0).values)
    # the loader's collate_fn and the same data already normalized: the same diagnosis
    make = lambda: nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 2))  # noqa: E731
    want = dlt.doctor(make, ((x - 5.0) / 10.0, y), steps=4, batch_size=16, verify=False)
    got = dlt.doctor(make, DataLoader(TensorDataset(x, y), batch_size=8, collate_fn=normalize),
                     steps=4, batch_size=16, verify=False)
    assert got.baseline["train_loss"] == pytest.approx(want.baseline["train_loss"], rel=1e-6)


def test_a_subset_sampler_split_is_kept():
    """Train and validation loaders over one dataset split by SubsetRandomSampler: each was
    taken as the whole dataset (100 and 100 rows, the validation set inside the training
    set); now 80 and 20, the sampled rows."""
    x, y = data()
    ds = TensorDataset(x, y)
    tr = DataLoader(ds, batch_size=8, sampler=SubsetRandomSampler(range(20, 100)))
    va = DataLoader(ds, batch_size=8, sampler=SubsetRandomSampler(range(20)))
    d = tensor_data((tr, va), CPU, torch.float32, 0)
    assert torch.equal(d.x, x[20:]) and torch.equal(d.y, y[20:])
    assert torch.equal(d.x_val, x[:20]) and torch.equal(d.y_val, y[:20])


class Dicts(Dataset):
    def __init__(self, x: torch.Tensor, y: torch.Tensor, lengths: bool = False) -> None:
        self.x, self.y, self.lengths = x, y, lengths

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        n = 3 + i % 4 if self.lengths else self.x.shape[1]  # sequences of varied length
        return {"input": self.x[i, :n], "label": self.y[i]}


def from_dicts(batch: list) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(b["input"]) for b in batch)  # padded to the batch's longest
    xs = torch.stack([nn.functional.pad(b["input"], (0, width - len(b["input"])))
                      for b in batch])
    return xs, torch.stack([b["label"] for b in batch])


def test_dict_items_through_a_collate_fn_and_ragged_batches_named():
    x, y = data()
    d = tensor_data(DataLoader(Dicts(x, y), batch_size=16, collate_fn=from_dicts), CPU,
                    torch.float32, 0)
    assert sorted(torch.cat([d.y, d.y_val]).tolist()) == sorted(y.tolist())
    with pytest.raises(ValueError, match=r"collate_fn from_dicts makes batches of different "
                                         r"shapes .*pad to one fixed length"):
        tensor_data(DataLoader(Dicts(x, y, lengths=True), batch_size=2, collate_fn=from_dicts),
                    CPU, torch.float32, 0)
    with pytest.raises(TypeError, match=r"Dicts\[0\] is a dict \(keys \['input', 'label'\]\): "
                                        r"give a DataLoader whose collate_fn returns"):
        tensor_data(DataLoader(Dicts(x, y), batch_size=16), CPU, torch.float32, 0)
    with pytest.raises(TypeError, match=r"collate_fn <lambda> returns a dict with keys "
                                        r"\['input', 'label'\]; expected an \(x, y\) pair"):
        tensor_data(DataLoader(Dicts(x, y), batch_size=16,
                               collate_fn=lambda b: torch.utils.data.default_collate(b)),
                    CPU, torch.float32, 0)


# -- depthlab doctor --torch --loss -------------------------------------------------------------

MODELS = ("import torch\nfrom torch import nn\n\n\n"
          "def regressor():\n"
          "    return nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 1))\n\n\n"
          "def binary():\n"
          "    return nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 1))\n")


def cli_json(tmp_path, capsys, *args: str) -> tuple[int, dict | str]:
    import json

    from depthlab.cli import main

    f = tmp_path / "models.py"
    f.write_text(MODELS)
    code = main(["doctor", "--torch", f"{f}:{args[0]}", *args[1:], "--steps", "3",
                 "--out", str(tmp_path / "out"), "--quiet", "--json"])
    captured = capsys.readouterr()
    return code, json.loads(captured.out) if code == 0 else captured.err


def test_cli_loss_mse_trains_a_regression_on_a_csv(tmp_path, capsys):
    """A CSV with a real-valued target: was refused ('labels must be integers') with no way
    to choose a loss; now --loss mse trains on the real targets, and without it the error
    names --loss."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5))
    frame = pd.DataFrame(x, columns=list("abcde"))
    frame["label"] = x @ rng.normal(size=5) + 0.5
    path = tmp_path / "house.csv"
    frame.to_csv(path, index=False)
    code, out = cli_json(tmp_path, capsys, "regressor", "--data", str(path), "--loss", "mse")
    assert code == 0, out
    assert out["settings"]["loss"] == "MSELoss"
    assert 0 < out["baseline"]["train_loss"] < float(frame["label"].var()) * 3
    code, err = cli_json(tmp_path, capsys, "regressor", "--data", str(path))
    assert code == 2 and "for real-valued targets (regression) give --loss mse" in err


def test_cli_loss_bce_with_logits_on_binary_labels_and_unknown_loss(tmp_path, capsys):
    """A one-output model on spirals (labels 0/1): was 'the labels hold 1 ... but the model
    has 1 outputs' (cross-entropy only); --loss bce_with_logits takes the labels as floats of
    the output's shape. An unknown name is one line, exit 2."""
    code, out = cli_json(tmp_path, capsys, "binary", "--data", "spirals", "--n", "200",
                         "--loss", "bce_with_logits")
    assert code == 0, out
    assert out["settings"]["loss"] == "BCEWithLogitsLoss"
    assert 0.5 < out["baseline"]["train_loss"] < 0.9  # about log 2 after 3 steps
    code, err = cli_json(tmp_path, capsys, "binary", "--data", "spirals", "--loss", "hinge")
    assert code == 2 and err.strip().splitlines() == [
        "depthlab: error: --loss 'hinge' is not accepted; accepted: cross_entropy, nll, mse, "
        "l1, smooth_l1, huber, bce_with_logits, bce"]


def test_float_targets_one_hot_for_one_output_per_class():
    import numpy as np

    from depthlab.cli.torch_doctor import float_targets

    y = np.array([0, 2, 1])
    assert float_targets(y, (3,), y).tolist() == [[1, 0, 0], [0, 0, 1], [0, 1, 0]]
    assert float_targets(y, (1,), y).tolist() == [[0.0], [2.0], [1.0]]
    assert float_targets(y, (), y).tolist() == [0.0, 2.0, 1.0]
    assert dlt.doctor.__kwdefaults__["loss_fn"] is None
    with pytest.raises(ValueError, match="unknown loss 'hinge'; expected one of cross_entropy"):
        dlt.doctor(lambda: nn.Linear(2, 2), (torch.randn(20, 2), torch.zeros(20).long()),
                   loss_fn="hinge", steps=1, verify=False)


# -- activations a custom forward applies after a normalization or dropout module -----------


class CifarBlock(nn.Module):
    """The usual CIFAR ResNet block written with functions: ``F.relu(self.bn1(self.conv1(x)))``
    and ``F.relu(self.bn2(self.conv2(out)) + x)``."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = nn.functional.relu(self.bn1(self.conv1(x)))
        return nn.functional.relu(self.bn2(self.conv2(out)) + x)


class CifarNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.layer = nn.Sequential(CifarBlock(4), CifarBlock(4))
        self.fc = nn.Linear(4 * 16, 16)
        self.bn_fc = nn.BatchNorm1d(16)
        self.drop = nn.Dropout(0.3)
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layer(nn.functional.relu(self.bn1(self.conv1(x))))
        out = nn.functional.avg_pool2d(out, 2).flatten(1)
        return self.head(self.drop(torch.tanh(self.bn_fc(self.fc(out)))))


def test_functional_activation_after_a_norm_module_is_found():
    """conv -> BatchNorm2d -> F.relu and Linear -> BatchNorm1d -> tanh -> Dropout: trace
    compared the next layer's input with the conv's own output only (no norm in between
    allowed), so every such layer had no activation and the doctor said 'no activation
    module' (init rules silent) for the usual functional ResNet; now each gets the function
    applied to its norm's output, with normalized=True."""
    from depthlab.torch import prescriptions as rx

    torch.manual_seed(0)
    layers = rx.trace(CifarNet(), torch.randn(8, 1, 8, 8))
    got = {t.name: (t.activation_name, t.functional, t.normalized) for t in layers}
    assert got == {"conv1": ("relu", True, True),
                   "layer.0.conv1": ("relu", True, True),
                   "layer.0.conv2": (None, False, True),  # relu of a residual sum: not its own
                   "layer.1.conv1": ("relu", True, True),
                   "layer.1.conv2": (None, False, True),
                   "fc": ("tanh", True, True), "head": (None, False, False)}
    x = torch.randn(60, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    diag = dlt.doctor(CifarNet, (x, torch.arange(60) % 10), steps=2, batch_size=16,
                      verify=False)
    assert diag.config["activation"] == "relu" and diag.config["batchnorm"] is True


class ListedLayers(nn.Module):
    """Hidden layers called through a plain Python list (also registered as attributes)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.out = nn.Linear(8, 16), nn.Linear(16, 16), nn.Linear(16, 2)
        self.hidden = [self.fc1, self.fc2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.hidden:
            x = torch.sigmoid(layer(x))
        return self.out(x)


def test_batch_norms_that_would_never_run_are_not_a_cure():
    """insert_batchnorm replaced the attributes fc1, fc2 by nn.Sequential(layer, norm) and
    reported 2 norms inserted, but the forward calls the layers through its list: the norms
    never ran (0 calls) and the doctor verified 'batch norm' on an unchanged model. Now
    NotApplicable naming the layers (the doctor skips that cure)."""
    from depthlab.torch import prescriptions as rx

    torch.manual_seed(0)
    with pytest.raises(rx.NotApplicable, match=r"a batch norm after 'fc1', 'fc2' would never "
                                               r"run: .*plain Python list"):
        rx.insert_batchnorm(ListedLayers(), torch.randn(8, 8))
    listed = nn.ModuleList([nn.Linear(8, 16), nn.Linear(16, 16)])
    model = ListedLayers()
    model.fc1, model.fc2 = listed[0], listed[1]
    model.hidden = listed  # an nn.ModuleList: the same layers, now reachable
    assert rx.insert_batchnorm(model, torch.randn(8, 8)) == 2


class IdleModule(nn.Module):
    """A registered nn.Sigmoid the forward never calls: it applies torch.sigmoid itself."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.out = nn.Linear(8, 16), nn.Linear(16, 16), nn.Linear(16, 2)
        self.act = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.sigmoid(self.fc2(torch.sigmoid(self.fc1(x)))))


def test_an_activation_swap_of_modules_that_never_run_is_not_a_cure():
    """swap_activations replaced the idle self.act and reported 1 swap: the 'ReLU with He
    initialization' cure then trained the unchanged sigmoid network (Glorot-initialized, as
    trace still finds sigmoids) under the ReLU cure's name. Now NotApplicable."""
    from depthlab.torch import prescriptions as rx

    torch.manual_seed(0)
    x = torch.randn(8, 8)
    with pytest.raises(rx.NotApplicable, match=r"the 1 activation module\(s\) replaced by relu "
                                               r"never run: the forward applies"):
        rx.swap_activations(IdleModule(), "relu", x)
    seq = nn.Sequential(nn.Linear(8, 8), nn.Sigmoid(), nn.Linear(8, 2))
    assert rx.swap_activations(seq, "relu", x) == 1 and isinstance(seq[1], nn.ReLU)


def test_a_random_samplers_draw_is_the_same_in_every_call():
    """A WeightedRandomSampler (with replacement) drew its examples from torch's generator as
    the caller had it: a model instance diagnosed twice after torch.manual_seed(1) and (2)
    gave train losses 0.6241 and 0.6031; now the draw is seeded with the doctor's seed (a
    sampler's own generator is used and restored)."""
    from torch.utils.data import WeightedRandomSampler

    g = torch.Generator().manual_seed(0)
    x = torch.randn(100, 6, generator=g)
    y = (x[:, 0] > 1).long()
    weights = torch.where(y == 1, 5.0, 1.0)
    loader = DataLoader(TensorDataset(x, y), batch_size=8,
                        sampler=WeightedRandomSampler(weights, 100))
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 2))
    losses = []
    state = torch.get_rng_state()
    try:
        for s in (1, 2):
            torch.manual_seed(s)
            d = dlt.doctor(model, loader, steps=3, batch_size=16, verify=False)
            losses.append(d.baseline["train_loss"])
    finally:
        torch.set_rng_state(state)
    assert losses[0] == losses[1]
    own = torch.Generator().manual_seed(5)
    sampler = WeightedRandomSampler(weights, 100, generator=own)
    before = own.get_state()
    a = tensor_data(DataLoader(TensorDataset(x, y), sampler=sampler), CPU, torch.float32, 0)
    assert torch.equal(own.get_state(), before)
    b = tensor_data(DataLoader(TensorDataset(x, y), sampler=sampler), CPU, torch.float32, 0)
    assert torch.equal(a.x, b.x) and float(torch.cat([a.y, a.y_val]).float().mean()) > 0.3


class Noisy(Dataset):
    """Items with a random transform drawn from torch's global generator."""

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(100, 6, generator=g)
        self.y = (self.x[:, 0] > 0).long()

    def __len__(self) -> int:
        return 100

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i] + 0.5 * torch.randn(6), self.y[i]


def test_a_datasets_random_transform_is_seeded_for_a_model_instance():
    """A model instance (not a factory, which seeds torch when it builds) and a Dataset with a
    random transform: diagnosed after torch.manual_seed(1) and (2), train losses 0.6338 and
    0.6567 (the transform drew from the caller's generator); now one result, and the
    caller's generator left as found."""
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 2))
    losses = []
    state = torch.get_rng_state()
    try:
        for s in (1, 2):
            torch.manual_seed(s)
            d = dlt.doctor(model, Noisy(), steps=3, batch_size=16, verify=False)
            losses.append(d.baseline["train_loss"])
            assert torch.equal(torch.get_rng_state(), torch.manual_seed(s).get_state())
    finally:
        torch.set_rng_state(state)
    assert losses[0] == losses[1]


class Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(4, 16)
        layer = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.enc(self.inp(x)).mean(1))


def test_a_transform_that_breaks_eval_mode_is_not_applicable():
    """A TransformerEncoderLayer applies F.relu between linear1 and its dropout module, now
    found by trace, so the batch-norm cure wraps linear1 as nn.Sequential(linear1, norm): it
    trains, but eval() (the final metrics) takes torch's fast path, which reads
    self.linear1.weight: AttributeError after training. apply() ran the transformed model in
    training mode only; now in both, and NotApplicable names the mode."""
    from depthlab.torch import prescriptions as rx
    from depthlab.torch.train import TorchTrainSpec

    torch.manual_seed(0)
    x = torch.randn(8, 5, 4)
    layers = rx.trace(Encoder(), x)
    assert [t.activation_name for t in layers if t.name.endswith("linear1")] == ["relu"] * 2
    with pytest.raises(rx.NotApplicable, match=r"does not run in eval mode: AttributeError: "
                                               r"'Sequential' object has no attribute 'weight'"):
        rx.apply({"normalization": "batchnorm"}, Encoder(), TorchTrainSpec(), x)


class MnistExample(nn.Module):
    """pytorch/examples' MNIST Net: F.relu, F.max_pool2d, dropout modules, log_softmax."""

    def __init__(self, pool=nn.functional.max_pool2d, act=nn.functional.relu) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 4, 3, 1), nn.Conv2d(4, 8, 3, 1)
        self.dropout1, self.dropout2 = nn.Dropout(0.25), nn.Dropout(0.5)
        self.fc1, self.fc2 = nn.Linear(8 * 6 * 6, 16), nn.Linear(16, 10)
        self.pool, self.act = pool, act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.conv1(x))
        x = self.pool(self.act(self.conv2(x)), 2)
        x = torch.flatten(self.dropout1(x), 1)
        x = self.dropout2(self.act(self.fc1(x)))
        return nn.functional.log_softmax(self.fc2(x), dim=1)


def test_an_activation_before_a_functional_max_pool_is_found():
    """conv2 -> F.relu -> F.max_pool2d -> Dropout: the pool changes the number of entries, so
    the activation was not found (conv2: None, left out of the hidden layers); a max pool
    picks entries, so the next input's entries are all among relu(conv2's output)."""
    from depthlab.torch import prescriptions as rx

    torch.manual_seed(0)
    x = torch.randn(8, 1, 16, 16)
    acts = [t.activation_name for t in rx.trace(MnistExample(), x)]
    assert acts == ["relu", "relu", "relu", None]
    sig = [t.activation_name for t in rx.trace(MnistExample(act=torch.sigmoid), x)]
    assert sig == ["sigmoid"] * 3 + [None]
    # an average pool's means are no entries of anything (no value match), but F.relu was
    # applied to conv2's output itself (tdochunt28: read from the call); a max pool alone is
    # no activation
    assert rx.activation_name(
        rx.trace(MnistExample(pool=nn.functional.avg_pool2d), x)[1].activation) == "relu"
    assert rx.trace(MnistExample(act=lambda t: t), x)[1].activation is None
    s = torch.randn(4, 3, 8, 8)
    assert rx.pooled_activation(s, nn.functional.max_pool2d(s, 2)) is None
    assert rx.activation_name(rx.pooled_activation(s, nn.functional.max_pool2d(s.tanh(), 2))) \
        == "tanh"
    wide = 4.0 * s  # float32 GELU of s < -3: 1 + erf cancels, off float64's by 1e-3 relative
    gelu = nn.functional.max_pool2d(nn.functional.gelu(wide), 2)
    assert rx.activation_name(rx.pooled_activation(wide, gelu)) == "gelu"
    means = nn.functional.avg_pool2d(torch.relu(wide), 2)
    assert rx.pooled_activation(wide, means) is None


class FunctionalDropout(nn.Module):
    """F.dropout after F.relu in the forward, in training mode (as the doctor traces)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.out = nn.Linear(8, 32), nn.Linear(32, 32), nn.Linear(32, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.dropout(torch.relu(self.a(x)), 0.5, self.training)
        return self.out(nn.functional.dropout(torch.tanh(self.b(x)), 0.2, self.training))


def test_an_activation_before_a_functional_dropout_is_found():
    """F.dropout(F.relu(self.a(x)), 0.5, self.training): the next input is 0 or 2 relu(s), so
    no activation was found in training mode (the doctor traces a model as built, in
    training mode): 'no activation module'. Now the activation with one scale 1 / (1 - p)
    above 1 and some nonzero entries dropped; a dropout alone, or 2 tanh(s), is none."""
    from depthlab.torch import prescriptions as rx

    torch.manual_seed(0)
    layers = rx.trace(FunctionalDropout().train(), torch.randn(8, 8))
    assert [t.activation_name for t in layers] == ["relu", "tanh", None]
    s = torch.randn(64, 30, generator=torch.Generator().manual_seed(2))
    assert rx.functional_activation(s, nn.functional.dropout(s, 0.5)) is None
    assert rx.functional_activation(s, 2.0 * torch.tanh(s)) is None
    masked = torch.relu(s) * (torch.rand(64, 30) > 0.5)  # dropped but not rescaled
    assert rx.functional_activation(s, masked) is None


def test_cli_output_shape_leaves_the_users_instance_as_found():
    """--loss of floats reads the model's output shape with one forward; on the file's module
    instance it must not switch a frozen batch norm's mode or initialize lazy modules."""
    from depthlab.cli.torch_doctor import _output_shape

    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.LazyLinear(1))
    model[1].eval()  # frozen statistics inside a model in training mode
    assert _output_shape(model, torch.randn(2, 4).numpy(), torch) == (1,)
    assert model.training and not model[1].training
    assert model[2].has_uninitialized_params()
