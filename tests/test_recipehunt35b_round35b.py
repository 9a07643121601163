"""Round 35b (recipehunt35b): one recipe through every door (config dict/JSON/TOML, RunSpec,
``dl.fit``, a sweep grid) gives one run and one file."""

from __future__ import annotations

import json
import tomllib

import numpy as np
import pytest

import depthlab as dl
from depthlab.experiments import runner
from depthlab.experiments.config import load_config, validate
from depthlab.spec import RunSpec, TrainSpec

BASE = {"data": {"name": "spirals", "n": 80}, "model": {"depth": 2, "width": 5},
        "train": {"epochs": 2, "optimizer": "adam", "lr": 0.01}}


def _raw(**train):
    raw = json.loads(json.dumps(BASE))
    raw["train"].update(train)
    return raw


def test_batch_size_null_is_full_batch_as_in_fit(tmp_path):
    # dl.fit(batch_size=None) (and Trainer) train full-batch; the same recipe as a JSON config
    # ("batch_size": null), a TrainSpec or a RunSpec trained mini-batches of 32 (the default)
    assert TrainSpec(batch_size=None, epochs=1).batch_size == "full"
    p = tmp_path / "r.json"
    p.write_text(json.dumps(_raw(batch_size=None)))
    cfg = load_config(p)
    assert cfg["train"]["batch_size"] == "full"
    rec = runner.execute(cfg, catch=False)
    prep = runner.prepare(validate(BASE))
    net = dl.mlp(prep.config["model"]["sizes"], seed=0)
    hist = dl.fit(net, prep.data.x_train, prep.y_train, prep.data.x_val, prep.y_val,
                  **{**validate(BASE)["train"], "batch_size": None})
    assert len(hist.step_loss) == 2  # one step per epoch
    np.testing.assert_array_equal(rec.steps["loss"].to_numpy(),
                                  np.asarray(hist.step_loss, dtype=float))
    # a grid listing null beside numbers: full batch too, and written as "full" in TOML
    spec = RunSpec.from_dict({**BASE, "sweep": {"train.batch_size": [None, 8]}})
    again = RunSpec.from_dict(tomllib.loads(spec.to_toml()))
    assert again.sweep == {"train.batch_size": ["full", 8]}


@pytest.mark.parametrize("sweep", [
    {"train.optimizer_kwargs": [{"betas": np.array([0.8, 0.9])}, {"eps": np.float64(1e-7)}]},
    {"model.depth": [np.int64(1), np.int32(3)], "model.batchnorm": [np.bool_(True)]},
    {"model.sizes": [np.array([2, 3, 2]), ["auto", np.int64(4), "auto"]],
     "train.lr": [np.float32(0.5), np.float64(0.1) + 0.2],
     "probes.histogram_steps": [[np.int64(0), "end"]]},
])
def test_sweep_of_numpy_values_is_plain_data_and_writes_valid_toml(sweep):
    # a grid built with NumPy (np.arange, array elements) was kept as NumPy objects:
    # to_toml() wrote np.float64(1e-07) into the file (invalid TOML) or raised "cannot write
    # np.int64(1) ... use a registered name", and json.dumps(spec.to_dict()) failed
    spec = RunSpec.from_dict({**BASE, "sweep": sweep})
    text = json.dumps(spec.to_dict())  # plain data
    assert RunSpec.from_dict(json.loads(text)) == spec
    assert RunSpec.from_dict(tomllib.loads(spec.to_toml())) == spec


def test_sweep_null_without_a_toml_spelling_is_one_clear_line():
    spec = RunSpec.from_dict({**BASE, "sweep": {"train.patience": [None, 3],
                                                 "model.output_activation": [None, "sigmoid"]}})
    with pytest.raises(ValueError) as e:
        spec.to_toml()
    msg = str(e.value)
    assert "\n" not in msg and '"train.patience"' in msg and "null" in msg
    # output_activation's null has a word ("none") and reads back alike
    only = RunSpec.from_dict({**BASE, "sweep": {"model.output_activation": [None, "sigmoid"]}})
    back = RunSpec.from_dict(tomllib.loads(only.to_toml()))
    assert back.sweep == {"model.output_activation": ["none", "sigmoid"]}
    assert [validate({**BASE, "model": {**BASE["model"], "output_activation": v}})
            for v in back.sweep["model.output_activation"]] == \
        [validate({**BASE, "model": {**BASE["model"], "output_activation": v}})
         for v in only.sweep["model.output_activation"]]


def test_a_raw_config_written_as_toml_keeps_nones_that_are_values(tmp_path):
    # to_toml left every None out: a raw config's bn_momentum None (torch's cumulative
    # average) or batch_size None (full batch) came back from the TOML file as 0.01 and 32
    from depthlab.spec import to_toml

    raw = json.loads(json.dumps(BASE))
    raw["model"].update(batchnorm=True, bn_momentum=None, output_init=None)
    raw["train"].update(batch_size=None, patience=None)
    (tmp_path / "r.toml").write_text(to_toml(raw))
    (tmp_path / "r.json").write_text(json.dumps(raw))
    from_toml = load_config(tmp_path / "r.toml")
    assert from_toml == load_config(tmp_path / "r.json") == validate(raw)
    assert (from_toml["model"]["bn_momentum"], from_toml["train"]["batch_size"]) == \
        ("cumulative", "full")


def test_doctor_takes_batch_size_none_as_fit_does():
    # fit(batch_size=None) trains full-batch; dl.doctor(batch_size=None) raised
    # 'batch_size = None has the wrong type; accepted: an integer >= 1 or "full"'
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 2)).astype(np.float32), np.arange(40) % 2
    none = dl.doctor(dl.mlp([2, 4, 2], seed=1), (x, y), batch_size=None, steps=3)
    full = dl.doctor(dl.mlp([2, 4, 2], seed=1), (x, y), batch_size="full", steps=3)
    assert none.settings["batch_size"] == "full"
    assert none.baseline["train_loss"] == full.baseline["train_loss"]
