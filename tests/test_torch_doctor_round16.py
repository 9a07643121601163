"""Round 16 of the torch doctor: optimizers given as torch.optim classes, ... (see each test)."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from torch import nn

import depthlab.torch as dlt


def _xy(n=80, d=6, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randint(0, k, (n,), generator=g)


def _mlp():
    return nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 3))


def test_an_optimizer_given_as_a_torch_optim_class_trains_as_its_name():
    x, y = _xy()
    run = functools.partial(dlt.doctor, _mlp, (x, y), steps=4, batch_size=16, verify=False)
    by_name = run(optimizer=("adam", {"lr": 0.01, "betas": (0.8, 0.99)}))
    for opt in ((torch.optim.Adam, {"lr": 0.01, "betas": (0.8, 0.99)}),
                functools.partial(torch.optim.Adam, lr=0.01, betas=(0.8, 0.99))):
        d = run(optimizer=opt)
        assert d.settings["optimizer"] == "adam" and d.settings["lr"] == 0.01
        assert d.baseline["train_loss"] == by_name.baseline["train_loss"]
    d = run(optimizer=torch.optim.RMSprop)
    assert (d.settings["optimizer"], d.settings["lr"]) == ("rmsprop", 1e-3)
    with pytest.raises(TypeError, match=r"torch\.optim\.lbfgs\.LBFGS is not supported; "
                                        r"expected one of torch\.optim\.SGD"):
        run(optimizer=torch.optim.LBFGS)
    with pytest.raises(TypeError) as e:  # an instance: one line, not its many-line repr
        run(optimizer=torch.optim.SGD(_mlp().parameters(), lr=0.05))
    assert "\n" not in str(e.value) and "SGD instance" in str(e.value)
    assert "('sgd', {'lr': 0.05})" in str(e.value)
    with pytest.raises(TypeError) as e:
        run(optimizer=np.float64(0.1))
    assert "optimizer must be a name or (name, kwargs)" in str(e.value)


class _Functional(nn.Module):
    """The layers of ``seq`` (Linear, LayerNorm, _, Linear, _, Linear, _, Linear) with the
    activations applied by the forward: F.relu after the norm, torch.sigmoid, torch.tanh."""

    def __init__(self, seq):
        super().__init__()
        self.seq = seq

    def forward(self, x):
        s = self.seq
        h = torch.relu(s[1](s[0](x)))
        h = torch.sigmoid(s[3](h))
        return s[7](torch.tanh(s[5](h)))


def test_functional_activations_get_the_activation_rows_of_the_same_modules():
    from depthlab.torch import prescriptions as rx
    from depthlab.torch.doctor import _probe_fn

    torch.manual_seed(0)
    mod = nn.Sequential(nn.Linear(6, 10), nn.LayerNorm(10), nn.ReLU(), nn.Linear(10, 10),
                        nn.Sigmoid(), nn.Linear(10, 8), nn.Tanh(), nn.Linear(8, 3))
    with torch.no_grad():  # three dead units, a saturated sigmoid layer
        mod[0].weight[:3] = -10.0
        mod[0].bias[:3] = -50.0
        mod[3].weight.mul_(20.0)
    fun = _Functional(copy_of(mod))
    x, y = _xy(n=50)
    tables = [_probe_fn(True, rx.trace(m, x[:8]))(m, x, y, nn.CrossEntropyLoss())
              for m in (fun, mod)]
    a, b = (t.set_index(["layer", "quantity"])["value"] for t in tables)
    assert list(tables[0]["quantity"]) == list(tables[1]["quantity"])  # rows in the same order
    assert {"dead_frac", "inactive_frac", "saturated_frac", "act_p50"} <= set(tables[0]["quantity"])
    np.testing.assert_allclose(a.to_numpy(), b.to_numpy(), rtol=1e-6, atol=1e-9)
    assert a[(1, "dead_frac")] == pytest.approx(0.3) and a[(2, "saturated_frac")] > 0.2
    assert a[(1, "act_mean")] > 0.2  # the ReLU's output, not the LayerNorm's (mean 0)


def copy_of(module):
    import copy

    return copy.deepcopy(module)


def test_units_killed_behind_F_relu_are_found_as_with_relu_modules():
    from depthlab.data import load_dataset

    ds = load_dataset("digits", seed=0)
    x, y = ds.x_train[:300].astype(np.float32), ds.y_train[:300]

    class FMLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.l1, self.l2, self.l3 = nn.Linear(64, 64), nn.Linear(64, 64), nn.Linear(64, 10)

        def forward(self, x):
            return self.l3(nn.functional.relu(self.l2(nn.functional.relu(self.l1(x)))))

    def seq():
        f = FMLP()
        return nn.Sequential(f.l1, nn.ReLU(), f.l2, nn.ReLU(), f.l3)

    run = functools.partial(dlt.doctor, optimizer=("sgd", {"lr": 3.0}), steps=30,
                            batch_size=32, verify=False, probe_every=10)
    fun, mod = run(FMLP, (x, y)), run(seq, (x, y))
    assert fun.baseline["train_loss"] == mod.baseline["train_loss"]  # the same weights
    assert fun.kinds == mod.kinds and "dead_relu" in fun.kinds  # was: no findings
    f, m = fun.finding("dead_relu"), mod.finding("dead_relu")
    assert f.layers == m.layers and f.evidence["metric"] == pytest.approx(m.evidence["metric"])


def test_a_list_of_mini_batches_is_the_data_it_holds():
    x, y = _xy(n=80)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    run = functools.partial(dlt.doctor, _mlp, steps=4, batch_size=16, verify=False)
    whole = run((x, y))
    for batches in (list(loader), [tuple(b) for b in loader][:2] + [tuple(b) for b in loader][2:],
                    [(bx.numpy(), by.numpy()) for bx, by in loader]):
        d = run(batches)
        assert d.baseline == {**whole.baseline, "seconds": d.baseline["seconds"]}
    # 2 or 4 batches were taken for (x, y) / (x, y, x_val, y_val); an autoencoder's 2 batches
    # of (x_b, x_b) stacked into 2 'examples' of shape (40, 6) and trained silently
    auto = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 6))
    d = dlt.doctor(auto, [(x[:40], x[:40]), (x[40:], x[40:])], loss_fn="mse", steps=2,
                   batch_size=16, verify=False)
    assert d.baseline["train_loss"] == pytest.approx(
        dlt.doctor(auto, (x, x), loss_fn="mse", steps=2, batch_size=16,
                   verify=False).baseline["train_loss"])
    with pytest.raises(ValueError, match=r"batch 1 of the list of \(x, y\) batches has x of "
                                         r"shape \(5,\) per example, batch 0 \(6,\)"):
        run([(x[:40], y[:40]), (x[40:, :5], y[40:])])


class _PosEmb(nn.Module):
    """A positional embedding owned by the model itself, beside its layers."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(4, 8)
        self.pos = nn.Parameter(0.02 * torch.randn(1, 5, 8))
        self.act = nn.ReLU()
        self.norm = nn.RMSNorm(8)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.act(self.norm(self.inp(x) + self.pos)).mean(1))


def test_norms_with_multi_axis_gains_and_a_models_own_parameters_are_no_weight_layers():
    from depthlab.torch import prescriptions as rx
    from depthlab.torch.train import TorchTrainSpec

    torch.manual_seed(0)
    cnn = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.LayerNorm([4, 6, 6]), nn.ReLU(),
                        nn.Conv2d(4, 4, 3, padding=1), nn.GroupNorm(2, 4), nn.ReLU(),
                        nn.Flatten(), nn.Linear(144, 3))
    x = torch.randn(16, 1, 6, 6)
    traced = rx.trace(cnn, x[:8])
    assert [(t.name, t.activation_name, t.normalized) for t in traced] == [
        ("0", "relu", True), ("3", "relu", True), ("7", None, False)]  # was: '1' a layer
    cured, _ = rx.apply({"init": "matched"}, copy_of(cnn), TorchTrainSpec(), x)
    assert torch.equal(cured[1].weight, torch.ones(4, 6, 6))  # was: random gains, std 0.17
    assert not torch.equal(cured[0].weight, cnn[0].weight)  # the convolutions re-initialized
    model = _PosEmb()
    xs = torch.randn(16, 5, 4)
    traced = rx.trace(model, xs[:8])
    assert [(t.name, t.activation_name, t.normalized) for t in traced] == [
        ("inp", "relu", True), ("head", None, False)]  # RMSNorm a normalization; no '' layer
    cured, _ = rx.apply({"init": "lsuv"}, copy_of(model), TorchTrainSpec(), xs)
    assert torch.equal(cured.pos, model.pos)  # was: re-initialized as a weight matrix
    y = torch.randint(0, 3, (16,))
    d = dlt.doctor(lambda: nn.Sequential(*[copy_of(m) for m in cnn]), (x, y), steps=2,
                   batch_size=8, verify=False)
    assert d.config["batchnorm"] and d.config["normalization"] == "GroupNorm, LayerNorm"


class _DeepSigmoid(nn.Module):
    """Linear layers in nn.Sequential slots of a ModuleList, torch.sigmoid in forward."""

    def __init__(self, depth=5, width=16):
        super().__init__()
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(8 if i == 0 else width, width))
                                    for i in range(depth))
        self.out = nn.Linear(width, 3)

    def forward(self, x):
        for b in self.blocks:
            x = torch.sigmoid(b(x))
        return self.out(x)


def test_a_cure_that_does_not_apply_is_skipped_with_its_reason():
    x, _ = _xy(n=120, d=8)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    d = dlt.doctor(_DeepSigmoid, (x, y), steps=20, batch_size=32, verify=False)
    f = d.finding("mean_shift")  # found since the sigmoid's act_mean rows exist (f94e776)
    assert f is not None, str(d)
    assert f.prescription == {}  # no module to swap: advice, not a cure to verify
    assert ('{"activation": "tanh", "init": "matched"} does not apply: no activation module '
            'of a hidden layer to replace by tanh: the forward applies its activations itself '
            '(sigmoid as a function)') in f.prescription_text
    assert "advice:" in str(d) and "\n" not in f.prescription_text


def test_bce_on_logits_says_it_takes_probabilities():
    x, _ = _xy(n=40)
    y = (x[:, :1] > 0).float()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 1))
    with torch.no_grad():
        model[2].bias.fill_(5.0)  # logits above 1 on every row
    with pytest.raises(ValueError) as e:
        dlt.doctor(model, (x * 10, y), loss_fn="bce", steps=2, verify=False)
    assert "all elements of input should be between 0 and 1" in str(e.value)
    assert "for logits use nn.BCEWithLogitsLoss ('bce_with_logits')" in str(e.value)
    d = dlt.doctor(nn.Sequential(model, nn.Sigmoid()), (x, y), loss_fn="bce", steps=2,
                   verify=False)
    assert d.baseline["train_loss"] > 0


def test_a_cure_that_diverged_says_so_beside_its_nan_loss():
    from depthlab.diagnosis import Verification

    torch.manual_seed(0)
    x, y = _xy(n=80)
    d = dlt.doctor(_mlp, (x * 1e3, y), optimizer=("sgd", {"lr": 1e3}), steps=20,
                   batch_size=16, verify=False)
    after = d.baseline  # a run that diverged: its metrics as a verification's 'after'
    assert after["diverged"] and 1 <= after["steps"] < 20
    v = Verification("lr_too_high", {"lr": 1e2}, {"train_loss": 1.1, "diverged": False,
                                                  "steps": 20}, after, "m", 2.0, 1.0,
                     False, False)
    assert v.summary().startswith(f"train loss 1.1 -> nan (diverged at step "
                                  f"{after['steps']}), ")  # was: '1.1 -> nan'


def test_class_labels_given_as_a_column_are_named():
    x, y = _xy()
    with pytest.raises(ValueError) as e:  # was torch's 'RuntimeError: 0D or 1D target tensor
        dlt.doctor(_mlp, (x.numpy(), y.numpy()[:, None]), steps=2, verify=False)  # expected'
    assert str(e.value) == ("CrossEntropyLoss takes one class index per example (y of shape "
                            "(N,)), got integer labels of shape (1,) per example (a column "
                            "(N, 1)): give y.reshape(-1)")
    d = dlt.doctor(_mlp, (x.numpy(), y.numpy()), steps=2, verify=False)
    assert d.baseline["steps"] == 2
