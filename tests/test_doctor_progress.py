"""``depthlab doctor CONFIG`` shows its progress: one bar (or, into a log, status lines) per
training run, the baseline and each prescription it verifies; nothing with ``--quiet`` (it
printed nothing for the minutes a deep network's verification takes)."""

from __future__ import annotations

from tests.helpers.cli import run_cli

CONFIG = """\
[data]
name = "digits"
n = 400
[model]
sizes = ["auto", 16, 16, 16, 16, "auto"]
activation = "sigmoid"
init = "normal"
[train]
loss = "cross_entropy"
"""


def test_each_training_run_of_the_doctor_reports_its_steps(tmp_path, capsys):
    cfg = tmp_path / "d.toml"
    cfg.write_text(CONFIG)
    code, out, err = run_cli(capsys, "doctor", cfg, "--verify", "--steps", "40",
                             "--out", tmp_path / "a")
    assert code == 0, err
    assert "doctor baseline step 40/40" in err
    assert "verified:" in out, out  # a prescription was verified: its run has a line too
    assert "doctor check 1 step 40/40" in err, err
    code, out, err = run_cli(capsys, "doctor", cfg, "--verify", "--steps", "40", "--quiet",
                             "--out", tmp_path / "b")
    assert code == 0 and out == "" and err == "", (out, err)
