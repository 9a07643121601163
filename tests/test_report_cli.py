"""Output a script can read: ``--json`` puts JSON alone on stdout (messages on stderr), and
progress into a pipe is plain lines, never carriage-return bars; ``report`` says what it does."""

from __future__ import annotations

import json

import pytest
from helpers.cli import cli, run_cli

CONFIG = """\
name = "tiny"
[data]
name = "digits"
[model]
sizes = ["auto", 16, 16, 16, "auto"]
activation = "tanh"
[train]
loss = "cross_entropy"
optimizer = "sgd"
lr = 0.05
batch_size = 64
epochs = 1
seed = 0
[probes]
every = 5
"""


@pytest.fixture()
def config(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(CONFIG)
    return path


def test_run_json_is_pure_and_progress_is_not_a_bar(stored_run_json):
    r, _ = stored_run_json  # the module's run of CONFIG (--json), which stored_run reads
    assert r.returncode == 0, r.stderr
    rec = json.loads(r.stdout)  # nothing but JSON on stdout
    assert rec["status"] == "finished" and rec["metrics"]["steps"] > 0
    assert rec["network"].endswith(f"{rec['id']}.npz")
    assert f"run {rec['id']}: finished" in r.stderr  # the messages went to stderr
    assert "\r" not in r.stderr  # not a terminal: no progress bar


def test_sweep_json_is_pure(tmp_path, config):
    config.write_text(CONFIG.replace('epochs = 1', 'epochs = 1\nmax_steps = 5')
                      + '[sweep]\n"model.activation" = ["tanh", "relu"]\n')
    r = cli("sweep", config, "--out", tmp_path / "out", "--json")
    assert r.returncode == 0, r.stderr
    payload = json.loads(r.stdout)  # one JSON document, nothing else
    assert payload["points"] == 2
    assert "\r" not in r.stderr and "sweep" in r.stderr


def test_doctor_json_is_pure(tmp_path, config):
    r = cli("doctor", config, "--steps", "20", "--out", tmp_path / "out", "--json")
    assert r.returncode == 0, r.stderr
    payload = json.loads(r.stdout)
    assert "findings" in payload
    assert "stored in" in r.stderr


@pytest.fixture(scope="module")
def stored_run_json(tmp_path_factory):
    """``run CONFIG --json`` in a subprocess, once for the module: (its result, its ``--out``
    folder). The JSON test checks its output; :func:`stored_run` reads the folder it stored
    (one training run of :data:`CONFIG` for both, not two)."""
    tmp = tmp_path_factory.mktemp("stored")
    (tmp / "tiny.toml").write_text(CONFIG)
    r = cli("run", tmp / "tiny.toml", "--out", tmp / "out", "--json")
    return r, tmp / "out"


@pytest.fixture(scope="module")
def stored_run(stored_run_json):
    """A results folder holding one finished run of :data:`CONFIG`, shared by the tests below,
    which add no run to it."""
    r, out = stored_run_json
    assert r.returncode == 0, r.stderr
    return out


def test_report_says_what_it_is_doing(stored_run):
    out = stored_run
    r = cli("report", out)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("report.html")
    assert "report: section 1/1: Run tiny" in r.stderr
    assert "writing" in r.stderr


def test_runs_offers_only_kinds_that_are_stored(stored_run, capsys):
    code, _, err = run_cli(capsys, "runs", stored_run, "--kind", "reproduce")
    assert code == 2 and "invalid choice" in err
    code, out, err = run_cli(capsys, "runs", stored_run, "--kind", "run", "--json")
    assert code == 0, err
    assert [row["kind"] for row in json.loads(out)] == ["run"]


def test_reproduce_json_is_pure_with_labelled_stages(tmp_path, monkeypatch, capsys):
    """In process, with a tiny registered experiment: stdout is one JSON document; the stage
    line, the wrapped claims table and the file paths go to stderr."""
    from depthlab.cli import main
    from depthlab.reproduce.base import REGISTRY, Claim, Experiment, Result

    long = "a measured value described at such length that a terminal must wrap it " * 2

    def fake(quick=False, data=None, progress=False):
        return Result("tiny", "A tiny experiment",
                      claims=[Claim("holds", "1", long, True, value=1.0)])

    monkeypatch.setitem(REGISTRY, "tiny", Experiment("tiny", "A tiny experiment",
                                                     "Nobody 2026", fake))
    assert main(["reproduce", "tiny", "--out", str(tmp_path / "r"), "--json"]) == 0
    out, err = capsys.readouterr()
    payload = json.loads(out)
    assert payload[0]["experiment"] == "tiny" and payload[0]["all_hold"] is True
    assert payload[0]["claims"][0]["measured"] == long
    assert "experiment 1/1: tiny — A tiny experiment" in err
    assert "…" not in err and "wrap it" in err  # wrapped, never cut
    assert (tmp_path / "r" / "report.html").exists()


def test_demo_config_errors_name_the_recipe(tmp_path, capsys):
    from depthlab.cli import main
    from depthlab.demo import demo_recipes, describe_ratio, packaged_example

    recipes = demo_recipes()
    assert [r.name for r in recipes][0] == "sigmoid + glorot" and all(r.meaning for r in recipes)
    assert all(len(r.point.config["model"]["sizes"]) == 22 for r in recipes)  # 20 hidden
    bad = tmp_path / "bad.toml"
    bad.write_text(packaged_example("demo.toml").read_text().replace(
        'model = { activation = "relu", init = "he_normal" }',
        'model = { activation = "rleu", init = "he_normal" }'))
    assert main(["demo", "--config", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "relu + he" in err and "rleu" in err
    assert describe_ratio(1e-12).startswith("vanishing") and describe_ratio(0.5).startswith(
        "flows") and describe_ratio(50).startswith("growing")
