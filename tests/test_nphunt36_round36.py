"""Round 36 (nphunt36): the NumPy doctor and the public API under configurations the earlier
tests had not tried."""

from __future__ import annotations

import numpy as np
import pytest

import depthlab as dl


def _data(n: int = 120, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5))
    y = (x @ rng.normal(size=(5, 3))).argmax(axis=1)  # learnable labels
    return x, y


@pytest.mark.parametrize("settings", [
    {"optimizer": "adam", "l2": 1.0},
    {"optimizer": "rmsprop", "l1": 1.0},
    {"optimizer": "adam", "optimizer_kwargs": {"weight_decay": 2.0}},
])
def test_an_adaptive_optimizer_held_at_chance_by_its_penalty_is_told_so(settings):
    # Adam/RMSprop move each weight about lr per step whatever the gradient's size, so a
    # penalty that outweighs the data's gradient shrinks the weights only ~1.4x in 200 steps
    # at lr 1e-3 (the 4x rule never fired) while the probe loss stays at a constant
    # prediction's (ln 3 here; the same net without the penalty ends at 0.59). Before: a clean
    # bill of health.
    x, y = _data()
    net = dl.mlp([5, 16, 16, 3], activation="relu", init="he_normal", seed=0)
    d = dl.doctor(net, (x, y), lr=1e-3, verify=True, **settings)
    f = next((f for f in d.findings if f.kind == "penalty_too_strong"), None)
    assert f is not None, str(d)
    # the evidence: the penalty's gradient outweighs the data's in every hidden layer
    assert f.evidence["penalty_dominance"] >= 5.0
    assert f.evidence["weight_shrink"] < 4.0
    assert "outweighed the data's" in f.message
    v = next(v for v in d.verifications if v.kind == "penalty_too_strong")
    assert v.resolved, str(d)


@pytest.mark.parametrize("settings", [
    {"optimizer": "adam", "l2": 1e-3},                       # a mild penalty: the net learns
    {"optimizer": "adamw", "optimizer_kwargs": {"weight_decay": 0.01}},  # decoupled decay
])
def test_a_penalty_that_does_not_hold_the_net_gives_no_penalty_finding(settings):
    x, y = _data()
    net = dl.mlp([5, 16, 16, 3], activation="relu", init="he_normal", seed=0)
    d = dl.doctor(net, (x, y), lr=1e-3, **settings)
    assert "penalty_too_strong" not in d.kinds, str(d)


def test_two_class_labels_for_one_output_column_name_binary_cross_entropy():
    # a softmax over one column is 1 whatever the logit; labels 0/1 on it were "expected
    # labels in 0..0" with no way out
    x, y = _data()
    y = (y > 0).astype(int)
    with pytest.raises(ValueError) as e:
        dl.fit(dl.mlp([5, 4, 1], seed=0), x, y, loss="cross_entropy")
    assert "label 1 out of range" in str(e.value)
    assert "binary_cross_entropy" in str(e.value)
    # the loss it names trains on those labels
    assert dl.fit(dl.mlp([5, 4, 1], seed=0), x, y, loss="binary_cross_entropy").step_loss


def _toml_error(**model) -> str:
    from depthlab.spec import RunSpec

    net = dl.mlp([4, 6, 3], seed=0, **model)
    config = {k: v for k, v in net.config.items() if k != "seed"}
    spec = RunSpec.from_dict({"data": {"name": "digits"}, "model": config})
    with pytest.raises(ValueError) as e:
        spec.to_toml()
    return str(e.value)


def test_an_object_in_a_recipe_that_toml_cannot_hold_is_named_with_its_spelling():
    # every object was 'use a registered name (e.g. init = "he_normal")', also for an
    # activation, without the key or the config's spelling of the same network
    msg = _toml_error(activation=dl.activation("leaky_relu", negative_slope=0.2))
    assert "model.activation" in msg
    assert 'activation = "leaky_relu" with activation_kwargs = {negative_slope = 0.2}' in msg
    msg = _toml_error(init=dl.initializer("he_normal"))
    assert "model.init" in msg and 'write init = "he_normal"' in msg
    msg = _toml_error(output_init=dl.initializer("orthogonal", gain=2.0))
    assert "model.output_init" in msg and "{gain = 2.0}" in msg
    # the spelling it gives writes and builds the same network
    from depthlab.spec import RunSpec

    spec = RunSpec.from_dict({"data": {"name": "digits"}, "model": {
        "sizes": [4, 6, 3], "activation": "leaky_relu",
        "activation_kwargs": {"negative_slope": 0.2}}})
    assert "negative_slope = 0.2" in spec.to_toml()


def test_the_step_activation_has_no_critical_line_and_is_told_why():
    # chi1 = sigma_w2 E[f'(s)^2] = 0 at any sigma_w2 for the step: "pass a wider bracket"
    # sent the user after a root that does not exist
    with pytest.raises(ValueError) as e:
        dl.theory.critical_sigma_w2("step", sigma_b2=0.1, bracket=(1e-3, 1e6))
    assert "wider bracket" not in str(e.value)
    assert "'step' has no critical sigma_w2" in str(e.value) and "chi1" in str(e.value)
    # an activation with a critical line is unchanged (Schoenholz et al.: tanh, 0.05 -> 1.76)
    assert dl.theory.critical_sigma_w2("tanh", sigma_b2=0.05) == pytest.approx(1.7609546, 1e-6)


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_targets_held_as_python_objects_are_told_the_conversion(loss):
    # a pandas column of dtype object holding numbers: x was told np.asarray(x, dtype=float),
    # y only "must be a numeric array, got dtype object"
    x, y = _data(30)
    target = y if loss == "cross_entropy" else x[:, :3]
    with pytest.raises(TypeError) as e:
        dl.fit(dl.mlp([5, 4, 3], seed=0), x, target.astype(object), loss=loss)
    assert "training y" in str(e.value) and "np.asarray(y, dtype=int)" in str(e.value)
    dl.fit(dl.mlp([5, 4, 3], seed=0), x, np.asarray(target.astype(object),
                                                    dtype=int if loss == "cross_entropy"
                                                    else float), loss=loss)


def test_the_doctor_takes_an_optimizer_built_on_the_network_it_diagnoses():
    # the doctor trains copies; the object stepped the original's parameters and was refused
    # as "built on none of this network's parameters (another network's?)"
    x, y = _data()
    net = dl.mlp([5, 16, 3], activation="relu", init="he_normal", seed=0)
    opt = dl.optimizer("sgd", net.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    d = dl.doctor(net, (x, y), optimizer=opt, steps=30)
    by_name = dl.doctor(net, (x, y), optimizer="sgd", lr=0.05, steps=30,
                        optimizer_kwargs={"momentum": 0.9, "nesterov": True})
    assert d.settings["optimizer"] == "sgd" and d.settings["lr"] == 0.05
    assert d.settings["optimizer_kwargs"] == {"momentum": 0.9, "nesterov": True}
    assert d.baseline["train_loss"] == by_name.baseline["train_loss"]  # the same training
    # settings beside the object are refused as fit refuses them (it keeps its own)
    with pytest.raises(TypeError, match="momentum=0.5 is not used"):
        dl.doctor(net, (x, y), optimizer=opt, optimizer_kwargs={"momentum": 0.5})
    with pytest.raises(TypeError, match="lr=0.2 is not used"):
        dl.doctor(net, (x, y), optimizer=opt, lr=0.2)



def test_the_torch_doctor_cures_a_too_strong_weight_decay_by_lowering_it():
    # the NumPy rule's cure {"optimizer_kwargs": {..., "weight_decay": wd / 10}} had no torch
    # counterpart (translate returned None), so the torch doctor prescribed lr / 10 instead
    torch = pytest.importorskip("torch")
    import depthlab.torch as dlt

    x, y = _data()

    def make():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.ReLU(),
                                   torch.nn.Linear(16, 16), torch.nn.ReLU(),
                                   torch.nn.Linear(16, 3))

    d = dlt.doctor(make, (torch.tensor(x, dtype=torch.float32), torch.tensor(y)),
                   loss_fn="cross_entropy", steps=30,
                   optimizer=("sgd", {"lr": 0.1, "momentum": 0.5, "weight_decay": 2.0}))
    f = next((f for f in d.findings if f.kind == "penalty_too_strong"), None)
    assert f is not None, str(d)
    assert f.prescription == {"optimizer_kwargs": {"momentum": 0.5, "weight_decay": 0.2}}
