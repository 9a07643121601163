"""The run spec: one declaration per setting gives defaults, checks, TOML and the UI schema."""

from __future__ import annotations

import dataclasses
import json
import tomllib

import numpy as np
import pytest

import depthlab as dl
from depthlab.experiments.config import validate
from depthlab.spec import (
    ConfigError,
    DataSpec,
    ModelSpec,
    ProbeSpec,
    RunSpec,
    TrainSpec,
    fields_schema,
)

RAW = {
    "name": "spec test",
    "data": {"name": "digits", "n": 200},
    "model": {"sizes": ["auto", 16, 16, "auto"], "activation": "Tanh", "init": "xavier_uniform",
              "batchnorm": True, "bn_ema_start": "zero", "activation_kwargs": {}},
    "train": {"lr": 0.05, "optimizer": "sgd", "momentum": 0.9, "max_steps": 7},
    "probes": {"every": 2, "jacobian": True, "histogram_steps": [5, "end", 0]},
    "sweep": {"model.depth": [1, 2]},
}


def test_defaults_and_normalisation():
    m = ModelSpec(sizes=[3, 8, 2], activation="ReLU", init="Xavier_Uniform")
    assert m.activation == "relu" and m.init == "glorot_uniform"
    assert m.sizes == (3, 8, 2) and m.depth == 1 and m.width == 8
    assert m.dropout == 0.0 and m.bn_ema_start == "first_batch" and m.dtype == "float32"
    assert ModelSpec(sizes=[3, 2], dtype=np.float64).dtype == "float64"
    t = TrainSpec()
    assert (t.lr, t.batch_size, t.epochs, t.optimizer_kwargs) == (0.01, 32, 1, {})
    assert ProbeSpec(jacobian=True).jacobian == (0, "end")
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.dropout = 0.5  # type: ignore[misc]


def test_replace_revalidates_and_rebuilds():
    m = ModelSpec(sizes=[3, 8, 8, 2], activation="tanh")
    he = dataclasses.replace(m, init="he_normal")
    assert he.init == "he_normal" and he.sizes == m.sizes
    assert dataclasses.replace(m, depth=4).sizes == (3, 8, 8, 8, 8, 2)
    assert dataclasses.replace(m, sizes=[3, 5, 2], depth=None, width=None).sizes == (3, 5, 2)
    five = m.with_sizes([3, 5, 5, 5, 2])
    assert (five.sizes, five.depth, five.width) == ((3, 5, 5, 5, 2), 3, 5)
    with pytest.raises(ConfigError, match=r"^dropout = 1\.5 is out of range; accepted: a dropout "
                                          r"rate >= 0 and < 1$"):
        dataclasses.replace(m, dropout=1.5)
    with pytest.raises(TypeError, match="batchnorm = \"yes\" has the wrong type"):
        dataclasses.replace(m, batchnorm="yes")


def test_round_trip_dict_toml_and_validate():
    spec = RunSpec.from_dict(RAW)
    d = spec.to_dict()
    assert d == validate(RAW)
    assert RunSpec.from_dict(d) == spec
    assert d["train"]["optimizer_kwargs"] == {"momentum": 0.9}
    assert d["model"]["bn_ema_start"] == "zero"
    assert d["probes"]["histogram_steps"] == [0, 5, "end"]
    text = spec.to_toml()
    assert "momentum = 0.9" in text and 'bn_ema_start = "zero"' in text
    assert validate(tomllib.loads(text)) == d


def test_to_toml_refuses_objects():
    m = ModelSpec(sizes=[3, 2], init=dl.initializers.orthogonal(2.0))
    spec = RunSpec(data=DataSpec(name="digits"), model=m)
    with pytest.raises(ValueError, match="cannot write .* to TOML"):
        spec.to_toml()


def test_dotted_keys_inside_a_run_plain_keys_outside():
    with pytest.raises(ConfigError, match=r"^model\.bn_ema_start = \"late\" is not accepted"):
        RunSpec.from_dict({"data": {"name": "digits"},
                           "model": {"sizes": [64, 10], "bn_ema_start": "late"}})
    with pytest.raises(ConfigError, match=r"^bn_ema_start = \"late\" is not accepted"):
        ModelSpec(sizes=[3, 2], bn_ema_start="late")


def test_lr_one_rule_everywhere():
    with pytest.raises(ConfigError, match=r"lr = 0 is out of range; accepted: a learning rate, a "
                                          r"finite number > 0"):
        TrainSpec(lr=0)
    net = dl.mlp([3, 4, 2])
    x, y = np.zeros((4, 3), np.float32), np.zeros(4, np.int64)
    with pytest.raises(ValueError, match=r"^lr = 0 is out of range"):
        dl.fit(net, x, y, lr=0)


def test_mlp_is_built_from_the_spec():
    net = dl.mlp([5, 7, 7, 3], activation="selu", init="lecun_normal", dropout=0.1,
                 batchnorm=True, bn_ema_start="zero", seed=3)
    assert net.config["bn_ema_start"] == "zero" and net.config["seed"] == 3
    assert all(bn.ema_start == "zero" for bn in net.batchnorms())
    assert type(net.dropouts()[0]).__name__ == "AlphaDropout"
    again = dl.mlp(**net.config)
    x = np.linspace(-1, 1, 20, dtype=np.float32).reshape(4, 5)
    assert np.array_equal(net.predict(x), again.predict(x))
    with pytest.raises(TypeError, match="unknown option 'batch_norm' .*; accepted: .*batchnorm"):
        dl.mlp([3, 2], batch_norm=True)
    with pytest.raises(ValueError, match="auto"):
        dl.mlp(["auto", 4, 2])


def test_fields_schema_covers_every_key():
    rows = fields_schema()
    keys = {r["key"] for r in rows}
    for section, spec_cls in (("data", DataSpec), ("model", ModelSpec), ("train", TrainSpec),
                              ("probes", ProbeSpec)):
        for f in dataclasses.fields(spec_cls):
            assert f"{section}.{f.name}" in keys
    by_key = {r["key"]: r for r in rows}
    assert by_key["model.dropout"]["min"] == 0.0 and by_key["model.dropout"]["max"] == 1.0
    assert by_key["model.dropout"]["max_open"] is True
    assert "he_normal" in by_key["model.init"]["choices"]
    assert by_key["model.bn_ema_start"]["choices"] == ["first_batch", "zero"]
    assert by_key["train.lr"]["default"] == 0.01 and by_key["train.lr"]["min_open"] is True
    assert all(r["doc"] for r in rows)
    assert json.loads(json.dumps(rows)) == rows  # plain data, ready for a web page


def test_input_dropout_option_everywhere():
    net = dl.mlp([6, 5, 2], input_dropout=0.2, seed=1)
    first = net.layers[0]
    assert type(first).__name__ == "Dropout" and first.p == 0.2
    assert net.config["input_dropout"] == 0.2
    x = np.ones((50, 6), np.float32)
    assert not np.array_equal(net.forward(x, training=True), net.forward(x, training=True))
    assert dl.mlp([6, 5, 2], seed=1).layers[0].name == "dense1"  # default: no input dropout
    raw = {"data": {"name": "digits"}, "model": {"sizes": [64, 8, 10], "input_dropout": 0.2}}
    assert "input_dropout = 0.2" in RunSpec.from_dict(raw).to_toml()
    with pytest.raises(ConfigError, match=r"model\.input_dropout = 1\.0 is out of range"):
        validate({**raw, "model": {"sizes": [64, 10], "input_dropout": 1.0}})


def test_new_options_keep_the_run_ids_of_configs_that_do_not_use_them():
    from depthlab.experiments.config import run_id

    # ids computed by the first schema (before bn_ema_start and input_dropout existed)
    plain = {"data": {"name": "digits"}, "model": {"sizes": [64, 32, 10], "activation": "tanh"},
             "train": {"lr": 0.1}}
    other = {"data": {"name": "digits", "n": 300},
             "model": {"depth": 3, "width": 16, "batchnorm": True, "init": "xavier_normal"},
             "train": {"optimizer": "sgd", "momentum": 0.9, "max_steps": 5},
             "probes": {"jacobian": True}}
    assert run_id(validate(plain)) == "f65d7ca60a08"
    assert run_id(validate(other)) == "5932f4a71831"
    used = validate({**plain, "model": {**plain["model"], "bn_ema_start": "zero"}})
    assert run_id(used) != "f65d7ca60a08"


def test_trainer_takes_the_train_section_by_name_with_its_defaults():
    import inspect

    from depthlab.training import Trainer

    sig = inspect.signature(Trainer.__init__).parameters
    for f in dataclasses.fields(TrainSpec):
        assert f.name in sig, f.name
        if f.default is not dataclasses.MISSING and f.name != "epochs":
            assert sig[f.name].default == f.default, f.name


def test_to_toml_runs_unchanged(tmp_path):
    from helpers.cli import cli

    spec = RunSpec(data=DataSpec(name="spirals", n=200), name="from a spec",
                   model=ModelSpec(sizes=["auto", 8, 8, "auto"], activation="tanh"),
                   train=TrainSpec(max_steps=3, optimizer_kwargs={"momentum": 0.5}),
                   probes=ProbeSpec(every=0))
    path = tmp_path / "run.toml"
    path.write_text(spec.to_toml())
    res = cli("run", path, "--out", tmp_path / "out")
    assert res.returncode == 0, res.stderr
    from depthlab.experiments import Store

    runs = Store(tmp_path / "out" / "depthlab.db").runs()
    assert list(runs["status"]) == ["finished"] and list(runs["name"]) == ["from a spec"]


def test_direct_optimizer_keys_join_optimizer_kwargs_and_field_errors_come_first():
    out = validate({"data": {"name": "digits"}, "model": {"sizes": [64, 10]},
                    "train": {"optimizer_kwargs": {"momentum": 0.9}, "nesterov": True}})
    assert out["train"]["optimizer_kwargs"] == {"momentum": 0.9, "nesterov": True}
    # a bad value anywhere is reported before a conflict between values
    with pytest.raises(ConfigError, match=r"^train\.seed = -1"):
        validate({"data": {"name": "digits", "val_fraction": 0.6, "test_fraction": 0.6},
                  "model": {"sizes": [64, 10]}, "train": {"seed": -1}})
