"""A new user's walk through the command line and the Python API, round 15: the rough edges the
brief named and the odd but legal inputs a user tries next. One regression test per bug."""

from __future__ import annotations

import pytest
from helpers.cli import assert_one_line_error, one_blas_thread, run_cli

MODEL = """import torch.nn as nn


def make():
    return nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, {out}))
"""


def _target_csv(path, n=40, label="target", first=False):
    """A CSV of three features whose 0/1 class is in a column named ``label`` (last, or first
    with ``first=True``)."""
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 3))
    y = (x[:, 0] + x[:, 1] > 0).astype(int)
    head = ["a", "b", "c"]
    rows = [[f"{v:.4f}" for v in r] for r in x]
    if first:
        lines = [",".join([label, *head])] + [",".join([str(c), *r]) for c, r in zip(y, rows)]
    else:
        lines = [",".join([*head, label])] + [",".join([*r, str(c)]) for c, r in zip(y, rows)]
    path.write_text("\n".join(lines) + "\n")


# --- 1. doctor --torch --label ---------------------------------------------------------------

@pytest.mark.parametrize("label", ["target", "3", " target "])
def test_torch_doctor_reads_a_csv_label_column_named_by_label(tmp_path, monkeypatch, capsys,
                                                              label):
    """``depthlab doctor --torch`` on a CSV whose labels are in a column ``target``: there was
    no way to name it (``--label`` was an unrecognized argument, exit 2), while a config's
    ``data.label`` names it for ``depthlab run``/``doctor``. Now ``--label target`` (or the
    0-based index 3) reads it."""
    pytest.importorskip("torch")
    one_blas_thread(monkeypatch)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.py").write_text(MODEL.format(out=2))
    _target_csv(tmp_path / "d.csv")
    code, out, err = run_cli(capsys, "doctor", "--torch", "m.py:make", "--data", "d.csv",
                             "--label", label, "--steps", "3", "--out", "res", "--json")
    assert code == 0, err
    import json

    assert json.loads(out)["config"]["framework"] == "torch"


def test_torch_doctor_label_index_is_a_column_name_first(tmp_path, monkeypatch, capsys):
    """``--label 0`` where a column is named "0": that column (here the last), not the first
    one (regression targets in the column "0", read with ``--loss mse``)."""
    pytest.importorskip("torch")
    one_blas_thread(monkeypatch)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.py").write_text(MODEL.format(out=1))
    import numpy as np

    rng = np.random.default_rng(1)
    x = rng.normal(size=(30, 3))
    lines = ["a,b,c,0"] + [f"{a:.3f},{b:.3f},{c:.3f},{a + 0.5 * b:.3f}" for a, b, c in x]
    (tmp_path / "r.csv").write_text("\n".join(lines) + "\n")
    code, _, err = run_cli(capsys, "doctor", "--torch", "m.py:make", "--data", "r.csv",
                           "--label", "0", "--loss", "mse", "--steps", "3", "--out", "res",
                           "--quiet")
    assert code == 0, err


@pytest.mark.parametrize(("args", "fragments"), [
    (["--data", "d.csv"], ["no label column 'label'", "'target'", "--label COLUMN"]),
    (["--data", "d.csv", "--label", "nope"], ["no label column 'nope'", "--label COLUMN"]),
    (["--data", "d.csv", "--label", "9"], ["--label 9", "0 to 3"]),
    (["--data", "d.csv", "--label", ""], ["--label ''", "column name"]),
    (["--data", "digits", "--label", "target"], ["--label 'target'", "built-in"]),
])
def test_torch_doctor_label_errors_are_one_line(tmp_path, monkeypatch, capsys, args, fragments):
    """Each wrong ``--label`` (or none where the CSV has no ``label`` column) is one line
    naming the value and what is accepted, exit 2; the hint names ``--label``, not the
    config key or a Python argument."""
    pytest.importorskip("torch")
    one_blas_thread(monkeypatch)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.py").write_text(MODEL.format(out=2))
    _target_csv(tmp_path / "d.csv")
    code, _, err = run_cli(capsys, "doctor", "--torch", "m.py:make", *args, "--steps", "3",
                           "--out", "res", "--quiet")
    line = assert_one_line_error(code, err, *fragments)
    assert "data.label" not in line and "load_dataset" not in line


def test_label_without_torch_is_refused(tmp_path, monkeypatch, capsys):
    """``doctor CONFIG --label x``: a config names its label column in ``data.label``."""
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, "doctor", "c.toml", "--label", "x")
    assert_one_line_error(code, err, "--label", "only with --torch")


# --- 2. a YAML config --------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["run.yaml", "run.yml", "run.YAML"])
@pytest.mark.parametrize("command", ["run", "doctor", "sweep"])
def test_a_yaml_config_says_which_formats_are_read(tmp_path, monkeypatch, capsys, name, command):
    """A YAML config was reported as "TOML syntax error: Expected '=' after a key ... (at line
    1, column 6)", as if a TOML file were broken. Now one line names the format and the ones
    read (TOML, JSON); nothing is written."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / name).write_text("data:\n  name: digits\nmodel:\n  depth: 3\n")
    code, _, err = run_cli(capsys, command, name, "--out", "res")
    line = assert_one_line_error(code, err, name, "YAML", ".toml", ".json")
    assert "syntax error" not in line
    assert not (tmp_path / "res").exists()


def test_toml_syntax_error_of_another_suffix_names_the_formats(tmp_path):
    """A config named ``run.txt`` is read as TOML (as before); its syntax error now says so and
    which formats are read. A ``.toml`` file's message is unchanged."""
    from depthlab.experiments import ConfigError, read_toml

    (tmp_path / "run.txt").write_text("model:\n  depth: 3\n")
    with pytest.raises(ConfigError, match=r"TOML syntax error.*read as TOML.*\.json"):
        read_toml(tmp_path / "run.txt")
    (tmp_path / "run.toml").write_text("model:\n  depth: 3\n")
    with pytest.raises(ConfigError) as info:
        read_toml(tmp_path / "run.toml")
    assert "read as TOML" not in str(info.value)
