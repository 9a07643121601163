"""``depthlab doctor CONFIG`` and ``depthlab doctor --torch`` show their progress: one bar (or,
into a log, status lines) per training run, the baseline and each prescription they verify;
nothing with ``--quiet`` (they printed nothing for the minutes a deep network's verification
takes)."""

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


FACTORY = """\
import torch


def make_model():
    layers = []
    for n_in in (64, 32, 32, 32):
        layers += [torch.nn.Linear(n_in, 32), torch.nn.Sigmoid()]
    return torch.nn.Sequential(*layers, torch.nn.Linear(32, 10))
"""


def test_the_torch_doctor_reports_each_training_run(tmp_path, capsys):
    import pytest

    pytest.importorskip("torch")
    from depthlab.torch.train import _RUN_PROGRESS

    src = tmp_path / "net.py"
    src.write_text(FACTORY)
    code, out, err = run_cli(capsys, "doctor", "--torch", f"{src}:make_model", "--data",
                             "digits", "--steps", "30", "--verify", "--out", tmp_path / "t")
    assert code == 0, err
    assert "doctor run 1 step 30/30" in err, err  # the baseline
    assert "verified" in out and "doctor run 2 step 30/30" in err, (out, err)  # a cure's run
    assert _RUN_PROGRESS.get() is None  # nothing left set after the command
    code, out, err = run_cli(capsys, "doctor", "--torch", f"{src}:make_model", "--data",
                             "digits", "--steps", "30", "--quiet", "--out", tmp_path / "q")
    assert code == 0 and "doctor run" not in err, err
