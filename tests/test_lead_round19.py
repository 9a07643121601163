"""Round 19, the lead's own fixes."""

from __future__ import annotations

import json

from helpers.cli import run_cli


def test_the_cli_doctor_trains_an_mse_config_on_the_targets_run_trains_on(tmp_path, capsys):
    """`depthlab run` trains an mse config of a classification set on one-hot rows; the doctor
    of the same config failed: "mse: pred shape (1400, 2) and target shape (1400,) differ"."""
    cfg = tmp_path / "mse.toml"
    cfg.write_text('[data]\nname = "spirals"\n[model]\nsizes = [2, 16, 16, 2]\n'
                   'activation = "tanh"\n[train]\nloss = "mse"\nlr = 0.05\nepochs = 1\n')
    code, _, err = run_cli(capsys, "run", str(cfg), "--out", str(tmp_path / "run"))
    assert code == 0, err
    code, out, err = run_cli(capsys, "doctor", str(cfg), "--steps", "30", "--json",
                             "--out", str(tmp_path / "doc"))
    assert code == 0, err
    baseline = json.loads(out)["baseline"]
    assert 0 < baseline["train_loss"] < 1  # a mean squared error on one-hot rows of 2 classes
