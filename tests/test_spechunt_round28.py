"""Round 28, the recipe spec and what is built on it: one rule for every key through dl.mlp,
dl.fit, a config file, the playground's setup and a stored run's round trip."""

from __future__ import annotations

import numpy as np
import pytest

import depthlab as dl
from depthlab.experiments.config import run_id, validate


def _config(model=None, train=None):
    return {"data": {"name": "digits"},
            "model": {"sizes": ["auto", 8, "auto"], **(model or {})},
            "train": dict(train or {})}


@pytest.mark.parametrize("a, b", [
    (_config({"activation": "elu", "activation_kwargs": {"alpha": 2}}),
     _config({"activation": "elu", "activation_kwargs": {"alpha": 2.0}})),
    (_config({"activation": "leaky_relu", "activation_kwargs": {"negative_slope": -0.0}}),
     _config({"activation": "leaky_relu", "activation_kwargs": {"negative_slope": 0.0}})),
    (_config(train={"loss": "huber", "loss_kwargs": {"delta": 2}}),
     _config(train={"loss": "huber", "loss_kwargs": {"delta": 2.0}})),
])
def test_an_activation_or_loss_argument_written_as_an_int_is_the_same_run(a, b):
    # alpha = 2 and alpha = 2.0 build the same network and train it the same way, but hashed
    # as "2" and "2.0" they had two run ids (a stored run was trained again); an optimizer's
    # momentum = 1 was already the float 1.0
    ca, cb = validate(a), validate(b)
    assert ca == cb
    assert run_id(ca) == run_id(cb)
    kwargs = ca["model"]["activation_kwargs"] or ca["train"]["loss_kwargs"]
    assert all(type(v) is float for v in kwargs.values())


def test_a_numpy_number_in_activation_kwargs_leaves_a_recipe_dl_save_writes(tmp_path):
    # mlp(activation_kwargs={"alpha": np.float32(0.5)}) kept the NumPy scalar in net.config:
    # dl.save refused the network ("the network's recipe ... is not plain JSON")
    net = dl.mlp([4, 8, 3], "elu", activation_kwargs={"alpha": np.float32(0.5)})
    assert net.config["activation_kwargs"] == {"alpha": 0.5}
    assert type(net.config["activation_kwargs"]["alpha"]) is float
    dl.save(net, tmp_path / "n.npz")
    back = dl.load(tmp_path / "n.npz")
    assert back.config == net.config
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    assert np.array_equal(back.predict(x), net.predict(x))
    assert dl.mlp(**net.config).config == net.config


def test_fit_reads_monitor_and_min_delta_by_the_train_sections_rules():
    # a config accepted monitor = "VAL_LOSS" (a choice, case ignored) while fit refused it;
    # min_delta = "0.1" was a ValueError from fit, a TypeError from a config
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 4)), np.arange(40) % 3
    assert validate(_config(train={"patience": 2, "monitor": "VAL_LOSS"}))["train"][
        "monitor"] == "val_loss"
    tr = dl.Trainer(dl.mlp([4, 6, 3]), patience=2, monitor="VAL_LOSS", max_steps=2)
    assert tr.early_stopping.monitor == "val_loss"
    tr.fit(x, y, x, y)
    assert dl.Trainer(dl.mlp([4, 6, 3]), monitor="Val_Loss").early_stopping is None
    with pytest.raises(TypeError, match=r'^min_delta = "0.1" has the wrong type'):
        dl.Trainer(dl.mlp([4, 6, 3]), patience=2, min_delta="0.1")
    with pytest.raises(ValueError, match=r'^monitor = "loss" is not accepted \(did you mean '
                                         r'"val_loss"\?\); accepted: "val_loss"'):
        dl.Trainer(dl.mlp([4, 6, 3]), patience=2, monitor="loss")
    from depthlab.training.early_stopping import EarlyStopping

    assert EarlyStopping(" Train_Loss ").monitor == "train_loss"


@pytest.mark.parametrize("key, given, canonical", [
    ("model.activation", "LeakyReLU", "leaky_relu"),
    ("model.activation", "leaky-relu", "leaky_relu"),
    ("model.init", "xavier_uniform", "glorot_uniform"),
    ("train.loss", "CrossEntropyLoss", "cross_entropy"),
    ("data.name", "fashion_mnist", "fashion-mnist"),
    ("model.bias_init", "Zeros", "zeros"),
])
def test_the_playground_reads_a_name_as_a_config_does(key, given, canonical):
    # a URL query ?model.activation=leaky-relu was refused ("expected one of ... leaky_relu")
    # while a config file, dl.mlp and dl.fit read it
    from depthlab.playground.setup import SetupError, parse_setup

    section, _, name = key.partition(".")
    raw = _config()
    raw.setdefault(section, {})[name] = given
    if section == "data":
        raw["data"] = {"name": given}
    assert validate(raw)[section][name] == canonical
    assert parse_setup({key: given})[key] == canonical
    with pytest.raises(SetupError, match="is not accepted; expected one of"):
        parse_setup({key: "no_such_name"})


@pytest.mark.parametrize("options, same", [
    ({"noise": 0}, {"noise": 0.0}),
    ({"noise": -0.0}, {"noise": 0.0}),
    ({"turns": 2}, {"turns": 2.0}),
    ({"n_classes": np.int64(3)}, {"n_classes": 3}),
])
def test_a_generated_data_sets_options_are_read_as_its_generator_reads_them(options, same):
    # options = {noise = 0} and {noise = 0.0} generate the same spirals, but were kept as
    # given: two run ids for one run (a NumPy integer was hashed as its str())
    def cfg(o):
        return validate({"data": {"name": "spirals", "options": o},
                         "model": {"sizes": ["auto", 8, "auto"]}})

    a, b = cfg(options), cfg(same)
    assert a == b and run_id(a) == run_id(b)
    assert [type(v) for v in a["data"]["options"].values()] == \
        [type(v) for v in same.values()]
    assert validate(a) == a


def test_the_probe_recorder_reads_end_as_a_probes_section_does():
    # [probes] histogram_steps = [0, "End"] was accepted (spec: case and blanks ignored) while
    # ProbeRecorder(histogram_steps=[0, "End"]) refused it
    from depthlab.probes.recorder import ProbeRecorder

    cfg = validate({**_config(), "probes": {"histogram_steps": [0, "End"],
                                            "jacobian": [" END "]}})
    assert cfg["probes"]["histogram_steps"] == [0, "end"]
    assert cfg["probes"]["jacobian"] == ["end"]
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(24, 4)), np.arange(24) % 3
    rec = ProbeRecorder(probe_x=x, probe_y=y, every=2, histogram_steps=[0, "End"],
                        jacobian_steps=[" END "])
    dl.fit(dl.mlp([4, 6, 3]), x, y, max_steps=3, callbacks=[rec])
    assert sorted(rec.histograms()["step"].unique()) == [0, 3]  # 3: the end
    assert list(rec.jacobian()["step"].unique()) == [3]


@pytest.mark.parametrize("base, grid", [
    ({"optimizer_kwargs": {"momentum": 0.5, "nesterov": False}},
     {"train.momentum": [0.0, 0.9]}),
    ({"momentum": 0.5, "dampening": 0.1},
     {"train.optimizer_kwargs": [{"momentum": 0.0}, {"momentum": 0.9}]}),
])
def test_a_swept_hyperparameter_replaces_the_bases_in_its_other_spelling(base, grid):
    # "train.momentum" = [...] over a base with optimizer_kwargs = {momentum = 0.5} (or a
    # swept optimizer_kwargs table over a base with momentum = 0.5) refused the whole grid:
    # "sweep point (...): train.momentum is given twice"
    from depthlab.experiments.grid import iter_points

    raw = {**_config(train=base), "sweep": grid}
    points = list(iter_points(raw))
    assert [p.config["train"]["optimizer_kwargs"]["momentum"] for p in points] == [0.0, 0.9]
    kept = {k: v for k, v in (base.get("optimizer_kwargs") or base).items() if k != "momentum"}
    for p in points:  # the base's other hyperparameters stay
        assert {k: p.config["train"]["optimizer_kwargs"][k] for k in kept} == kept
    # one spelling written out as the point means it: the same run
    for p, m in zip(points, (0.0, 0.9), strict=True):
        alone = validate(_config(train={**kept, "momentum": m}))
        assert run_id(alone) == p.id
    both = {**_config(), "sweep": {"train.momentum": [0.9],
                                   "train.optimizer_kwargs": [{"momentum": 0.5}]}}
    with pytest.raises(ValueError, match="given twice"):
        list(iter_points(both))


@pytest.mark.parametrize("optimizer, given, stored", [
    ("adam", {"amsgrad": np.bool_(True)}, {"amsgrad": True}),
    ("sgd", {"momentum": 0.9, "nesterov": np.bool_(True)}, {"momentum": 0.9, "nesterov": True}),
    ("adam", {"betas": np.array([0.8, 0.99])}, {"betas": [0.8, 0.99]}),
    ("adam", {"betas": (0.8, 0.99)}, {"betas": [0.8, 0.99]}),
])
def test_optimizer_hyperparameters_fit_takes_are_taken_by_a_config(optimizer, given, stored):
    # fit(optimizer="adam", amsgrad=np.True_) trained; the same [train] values refused as
    # 'train.amsgrad = true has the wrong type; accepted: true or false' (a NumPy bool), and
    # betas as a NumPy array as 'train.betas = array([0.8 , 0.99]) is not accepted'
    rng = np.random.default_rng(0)
    dl.fit(dl.mlp([4, 5, 3]), rng.normal(size=(12, 4)), np.arange(12) % 3,
           optimizer=optimizer, max_steps=1, **given)
    cfg = validate(_config(train={"optimizer": optimizer, **given}))
    assert cfg["train"]["optimizer_kwargs"] == stored
    assert [type(v) for v in cfg["train"]["optimizer_kwargs"].values()] == \
        [type(v) for v in stored.values()]
    with pytest.raises(ValueError, match=r"^train\.betas = \[0\.9, 1\.0\] is not accepted"):
        validate(_config(train={"optimizer": "adam", "betas": np.array([0.9, 1.0])}))


def test_a_width_without_a_hidden_layer_is_refused_not_dropped():
    # mlp([4, 3], width=64) and [model] sizes = ["auto", "auto"] + width = 64 built a linear
    # model, the width silently dropped (a sweep of model.width ran one network N times)
    with pytest.raises(ValueError, match=r"^width = 64 has no hidden layer to size"):
        dl.mlp([4, 3], width=64)
    with pytest.raises(ValueError, match=r"^model\.width = 64 has no hidden layer to size"):
        validate(_config({"sizes": ["auto", "auto"], "width": 64}))
    # depth given (0 too) keeps its meaning; a net's own recipe rebuilds it
    assert validate(_config({"sizes": ["auto", "auto"], "width": 64, "depth": 0}))[
        "model"]["sizes"] == ["auto", "auto"]
    assert dl.mlp(**dl.mlp([4, 3]).config).config["sizes"] == [4, 3]
    from depthlab.experiments.grid import iter_points

    with pytest.raises(ValueError, match="has no hidden layer to size"):
        list(iter_points({**_config({"sizes": ["auto", "auto"]}),
                          "sweep": {"model.width": [8, 16]}}))


@pytest.mark.parametrize("model", [{"width": 16}, {"sizes": ["auto", "auto"], "width": 16}])
def test_a_grid_of_depths_over_a_base_with_only_a_width_runs(model):
    # [model] width = 16 with "model.depth" = [1, 2] swept: the base alone has no depth, and
    # was refused ("[model] needs sizes ... or depth and width") although every point has one
    from depthlab.experiments.grid import iter_points

    points = list(iter_points({**_config(), "model": model,
                               "sweep": {"model.depth": [1, 2]}}))
    assert [p.config["model"]["sizes"] for p in points] == [["auto", 16, "auto"],
                                                            ["auto", 16, 16, "auto"]]
