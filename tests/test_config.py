"""Experiment config validation: one-line messages naming key, value and what is accepted."""

from __future__ import annotations

import copy
import json

import pytest
from helpers.cli import ISSUE_EXAMPLE

from depthlab.experiments.config import (
    ConfigError,
    load_config,
    read_toml,
    run_id,
    validate,
)

BASE = {
    "data": {"name": "digits"},
    "model": {"sizes": [64, 32, 10], "activation": "tanh"},
    "train": {"lr": 0.1},
}


def with_(section: str, key: str, value) -> dict:
    cfg = copy.deepcopy(BASE)
    cfg.setdefault(section, {})[key] = value
    return cfg


def test_issue_example_validates(tmp_path):
    path = tmp_path / "ex.toml"
    path.write_text(ISSUE_EXAMPLE)
    cfg = load_config(path)
    assert cfg["model"]["sizes"] == [64, 128, 128, 10]
    assert cfg["model"]["depth"] == 2 and cfg["model"]["width"] == 128
    assert cfg["train"]["lr"] == 0.05 and cfg["train"]["epochs"] == 3
    assert cfg["probes"]["every"] == 10
    assert cfg["sweep"] == {"model.activation": ["tanh", "relu"], "train.seed": [0, 1]}


def test_defaults_filled_and_idempotent():
    cfg = validate(copy.deepcopy(BASE))
    assert cfg["data"]["standardize"] is True
    assert cfg["data"]["val_fraction"] == 0.1 and cfg["data"]["test_fraction"] == 0.2
    assert cfg["model"]["init"] == "glorot_uniform" and cfg["model"]["dropout"] == 0.0
    assert cfg["model"]["bn_inference"] == "ema" and cfg["model"]["dtype"] == "float32"
    assert cfg["train"]["loss"] == "cross_entropy" and cfg["train"]["optimizer"] == "sgd"
    assert cfg["train"]["batch_size"] == 32 and cfg["train"]["epochs"] == 1
    assert cfg["probes"] == {"every": 10, "batch": 300, "histogram_steps": None,
                             "jacobian": []}
    assert validate(copy.deepcopy(cfg)) == cfg
    json.dumps(cfg)  # JSON-serialisable


def test_names_canonicalised_and_direct_optimizer_keys_merged():
    cfg = copy.deepcopy(BASE)
    cfg["model"].update(activation="Logistic", init="xavier_uniform")
    cfg["train"].update(optimizer="SGD", momentum=0.9, nesterov=True)
    out = validate(cfg)
    assert out["model"]["activation"] == "sigmoid"
    assert out["model"]["init"] == "glorot_uniform"
    assert out["train"]["optimizer_kwargs"] == {"momentum": 0.9, "nesterov": True}
    assert "momentum" not in out["train"]
    assert validate(out) == out


def test_depth_rebuilds_sizes():
    out = validate(with_("model", "depth", 4))
    assert out["model"]["sizes"] == [64, 32, 32, 32, 32, 10]
    out = validate({**BASE, "model": {"depth": 3, "width": 16}})
    assert out["model"]["sizes"] == ["auto", 16, 16, 16, "auto"]
    # non-uniform sizes survive re-validation
    out = validate(with_("model", "sizes", [64, 40, 20, 10]))
    assert out["model"]["width"] is None and validate(out) == out


def test_run_id_stable_and_sensitive():
    a = validate(copy.deepcopy(BASE))
    b = validate(copy.deepcopy(BASE))
    assert run_id(a) == run_id(b) and len(run_id(a)) == 12
    assert run_id(a) != run_id(validate(with_("train", "seed", 1)))
    assert run_id(a) != run_id(a, kind="doctor")
    assert run_id({**a, "name": "x"}) == run_id(a)


BAD = [
    # (section, key, value, fragments expected in the message)
    ("model", "activaton", "tanh", ["unknown key 'model.activaton'", "did you mean",
                                    '"activation"']),
    ("train", "learning_rate", 0.1, ["unknown key 'train.learning_rate'", "accepted keys"]),
    ("train", "lr", -0.1, ["train.lr = -0.1", "out of range", "> 0"]),
    ("train", "lr", 0, ["train.lr = 0", "> 0"]),
    ("train", "lr", "fast", ["train.lr = \"fast\"", "wrong type", "number"]),
    ("model", "dropout", 1.0, ["model.dropout = 1.0", "< 1"]),
    ("model", "dropout", -0.2, ["model.dropout = -0.2", ">= 0"]),
    ("train", "batch_size", 0, ["train.batch_size = 0", "integer >= 1"]),
    ("train", "batch_size", 2.5, ["train.batch_size = 2.5", "wrong type"]),
    ("train", "epochs", 0, ["train.epochs = 0", ">= 1"]),
    ("model", "batchnorm", "yes", ["model.batchnorm = \"yes\"", "true or false"]),
    ("model", "activation", "tanhh", ["model.activation = \"tanhh\"", "not a known activation",
                                      "did you mean \"tanh\"", "relu"]),
    ("model", "init", "glorot", ["model.init = \"glorot\"", "initializer", "he_normal"]),
    ("train", "optimizer", "adamx", ["train.optimizer = \"adamx\"", "optimizer", "nadam"]),
    ("train", "loss", "hinge", ["train.loss = \"hinge\"", "loss", "cross_entropy"]),
    ("data", "name", "mnits", ["data.name = \"mnits\"", "built-in data set", "digits"]),
    ("model", "sizes", [64, 0, 10], ["model.sizes[1] = 0", "positive integers"]),
    ("model", "sizes", [64], ["model.sizes = [64]", "too short"]),
    ("model", "bn_inference", "batch", ["model.bn_inference = \"batch\"", '"population"']),
    ("train", "momentum", -1.0, ["train.momentum = -1.0", ">= 0"]),
    ("probes", "every", -1, ["probes.every = -1", ">= 0"]),
    ("data", "val_fraction", 1.5, ["data.val_fraction = 1.5", "< 1"]),
]


@pytest.mark.parametrize("section,key,value,fragments", BAD,
                         ids=[f"{s}.{k}={v!r}" for s, k, v, _ in BAD])
def test_bad_values_one_line_message(section, key, value, fragments):
    with pytest.raises(ConfigError) as err:
        validate(with_(section, key, value))
    msg = str(err.value)
    assert "\n" not in msg
    for frag in fragments:
        assert frag in msg, (frag, msg)


def test_optimizer_hyperparameter_of_another_optimizer():
    cfg = with_("train", "optimizer", "adam")
    cfg["train"]["momentum"] = 0.9
    # (since round 37 the line also names the optimizers that take it)
    with pytest.raises(ConfigError, match=r"train.momentum is not a hyperparameter of "
                                          r"optimizer 'adam' \(a hyperparameter of sgd, "
                                          r"rmsprop\); accepted: .*betas"):
        validate(cfg)


@pytest.mark.parametrize("raw,fragments", [
    ({**BASE, "trian": {"lr": 0.1}}, ["unknown section [trian]", "did you mean [train]?"]),
    ({"model": BASE["model"]}, ["missing [data]"]),
    ({"data": {}, "model": BASE["model"]}, ["exactly one of name", "path"]),
    ({**BASE, "sweep": {"model.actvation": ["relu"]}}, ["unknown key 'sweep.model.actvation'",
                                                        "model.activation"]),
    ({**BASE, "sweep": {"train.lr": []}}, ["sweep.train.lr = []", "is empty"]),
    ({**BASE, "sweep": {"train.lr": 0.1}}, ["sweep.train.lr = 0.1", "list"]),
    ({**BASE, "model": {"activation": "relu"}}, ["[model] needs sizes"]),
    ({**BASE, "data": {"path": "/no/such/file.csv"}}, ["data.path", "no such file"]),
    ({**BASE, "data": {"name": "digits", "options": {"d": 3}}},
     ["data.options.d", "digits"]),
])
def test_structural_errors(raw, fragments):
    with pytest.raises(ConfigError) as err:
        validate(copy.deepcopy(raw))
    msg = str(err.value)
    assert "\n" not in msg
    for frag in fragments:
        assert frag in msg, (frag, msg)


def test_toml_syntax_error_names_file_and_line(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[data]\nname = "digits"\n[model]\nsizes = [64, 10\nactivation = "relu"\n')
    with pytest.raises(ConfigError) as err:
        read_toml(path)
    msg = str(err.value)
    assert str(path) in msg and "TOML syntax error" in msg and "line" in msg
    assert "\n" not in msg


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="config file .*nope.toml.* not found"):
        load_config(tmp_path / "nope.toml")


def test_load_config_prefixes_file_name(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[data]\nname = "digits"\n[model]\nsizes = [64, 10]\n[train]\nlr = -1\n')
    with pytest.raises(ConfigError, match=r"c.toml: train.lr = -1 is out of range"):
        load_config(path)


def test_relative_data_path_resolved_against_config(tmp_path):
    (tmp_path / "d.csv").write_text("a,b,label\n1,2,0\n3,4,1\n")
    path = tmp_path / "c.toml"
    path.write_text('[data]\npath = "d.csv"\nlabel = "label"\n[model]\nsizes = ["auto", 4, '
                    '"auto"]\n')
    cfg = load_config(path)
    assert cfg["data"]["path"] == str((tmp_path / "d.csv").resolve())
    assert cfg["data"]["label"] == "label"


def test_example_configs_validate():
    from pathlib import Path

    from depthlab.experiments.sweep import expand

    examples = sorted((Path(__file__).parent.parent / "examples").glob("*.toml"))
    assert examples, "examples/*.toml missing"
    for path in examples:
        if "[[recipes]]" in path.read_text():  # the demo: a run config plus its recipes
            from depthlab.demo import demo_recipes

            assert len(demo_recipes(path)) > 1
            continue
        cfg = load_config(path)
        if "sweep" in cfg:
            points = expand(read_toml(path), base_dir=path.parent)
            assert len(points) > 1
    sweep = expand(read_toml(examples[0].parent / "digits_sweep.toml"))
    assert sorted({p.config["model"]["depth"] for p in sweep}) == [2, 6, 10]
    assert all(set(p.config["model"]["sizes"][1:-1]) == {64} for p in sweep)
