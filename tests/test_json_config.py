"""A run, sweep or doctor config may be a JSON object with the TOML config's sections."""

from __future__ import annotations

import json

import pytest

from depthlab.experiments import ConfigError, load_config, read_toml, run_id
from depthlab.spec import to_toml
from tests.helpers.cli import assert_one_line_error, run_cli

CONFIG = {"name": "json run",
          "model": {"sizes": ["auto", 16, "auto"], "activation": "tanh", "init": "glorot_normal"},
          "data": {"name": "digits", "n": 200},
          "train": {"max_steps": 4, "batch_size": 32, "lr": 0.05}}


def test_a_json_config_is_the_same_config_as_its_toml(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps(CONFIG))
    (tmp_path / "a.toml").write_text(to_toml(CONFIG))
    as_json, as_toml = load_config(tmp_path / "a.json"), load_config(tmp_path / "a.toml")
    assert as_json == as_toml and as_json["model"]["activation"] == "tanh"
    assert run_id(as_json) == run_id(as_toml)


def test_depthlab_run_and_sweep_take_json(tmp_path, capsys):
    path = tmp_path / "run.json"
    path.write_text(json.dumps(CONFIG))
    code, out, err = run_cli(capsys, "run", path, "--out", tmp_path / "out", "--quiet")
    assert code == 0, err
    sweep = {**CONFIG, "sweep": {"model.activation": ["tanh", "relu"]}}
    path.write_text(json.dumps(sweep))
    code, out, err = run_cli(capsys, "sweep", path, "--out", tmp_path / "out", "--quiet")
    assert code == 0, err
    code, out, err = run_cli(capsys, "runs", tmp_path / "out")
    assert code == 0 and out.count("finished") >= 2, out


@pytest.mark.parametrize("text,fragment", [
    ('{"model": {"sizes": [64, 10],}}', "JSON syntax error"),
    ('[{"model": {}}]', "a JSON config is an object of sections"),
    ('{"model": {"dropout": NaN}}', "JSON value NaN is not accepted"),
    ('{"model": {"sizes": [64, 10]}, "model": {}}', "JSON key 'model' appears twice"),
    ('{"modle": {"sizes": [64, 10]}}', "modle"),
    ('{"data": {"name": "digits"}, "model": {"dropout": 1.5}}', "model.dropout"),
])
def test_bad_json_configs_are_one_line_errors(tmp_path, capsys, text, fragment):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match="bad.json"):
        load_config(path)
    code, _, err = run_cli(capsys, "run", path, "--out", tmp_path / "out")
    assert_one_line_error(code, err, fragment)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_toml_file_is_still_read_as_toml_whatever_its_text(tmp_path):
    path = tmp_path / "x.toml"
    path.write_text('{"model": {}}')
    with pytest.raises(ConfigError, match="TOML syntax error"):
        read_toml(path)
