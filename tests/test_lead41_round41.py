"""Round 41, lead: the theory reads a fan-based bias initializer with its layer weight's fans
(nphunt41 made Dense draw the bias so, torch's nn.Linear rule), and the doctor's input-scale
limit for losses on logits names them (torch's BCELoss/NLLLoss take probabilities)."""

from __future__ import annotations

import numpy as np

import depthlab as dl
from depthlab.theory.predict import random_bias_variances


def test_the_predicted_bias_variances_are_those_the_network_drew():
    net = dl.mlp([400, 3000, 2000, 10], activation="tanh", bias_init="fan_in_uniform", seed=0)
    dense = [layer for layer in net.layers if hasattr(layer, "fan_in")][:2]
    fans = [(d.fan_in, d.fan_out) for d in dense]
    assert fans == [(400, 3000), (3000, 2000)]
    predicted = random_bias_variances("fan_in_uniform", fans)
    drawn = [float(np.var(d.b.value.astype(np.float64))) for d in dense]
    # U(+-1/sqrt(fan_in)): variance 1/(3 fan_in); the sample variance of n draws is within
    # a few relative sds sqrt(0.8/n) of it (0.8: the uniform's excess kurtosis -1.2 + 2)
    for p, d, (fan_in, _), n in zip(predicted, drawn, fans, (3000, 2000)):
        assert np.isclose(p, 1.0 / (3 * fan_in), rtol=1e-12)
        assert abs(d / p - 1) < 5 * np.sqrt(0.8 / n)
    note = dl.theory.predict_gradients(net).note
    assert "0.000833, 0.000111" in note


def test_the_input_scale_limit_of_probability_losses_is_the_regression_one():
    from depthlab.diagnosis import rules

    class Ctx:
        def __init__(self, loss):
            self.settings = {"loss": loss}

    assert rules._input_scale_limit(Ctx("cross_entropy")) == rules.INPUT_SCALE_LOGITS
    assert rules._input_scale_limit(Ctx("BCEWithLogitsLoss")) == rules.INPUT_SCALE_LOGITS
    assert rules._input_scale_limit(Ctx("BCELoss")) == rules.INPUT_SCALE
    assert rules._input_scale_limit(Ctx("NLLLoss")) == rules.INPUT_SCALE
    assert rules._input_scale_limit(Ctx("mse")) == rules.INPUT_SCALE


def test_a_config_naming_torchs_probability_losses_is_refused_naming_the_logit_loss(tmp_path):
    import subprocess
    import sys

    import pytest

    from depthlab.spec import ConfigError, RunSpec

    for name, twin in (("BCELoss", "binary_cross_entropy"), ("log_loss", "binary_cross_entropy"),
                       ("NLLLoss", "cross_entropy"), ("nll", "cross_entropy")):
        with pytest.raises(ConfigError, match=f'accepted: "{twin}"'):
            RunSpec.from_dict({"data": {"name": "digits"}, "train": {"loss": name},
                               "model": {"sizes": ["auto", 8, "auto"]}})
    config = tmp_path / "c.toml"
    config.write_text('[data]\nname = "digits"\n[model]\nsizes = ["auto", 8, "auto"]\n'
                      '[train]\nloss = "BCELoss"\nepochs = 1\n')
    out = subprocess.run([sys.executable, "-m", "depthlab", "run", str(config), "--out",
                          str(tmp_path / "out")], capture_output=True, text=True)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "BCELoss" in lines[0] and "binary_cross_entropy" in lines[0]
    assert not (tmp_path / "out").exists()


def _open_font_files() -> int:
    import os

    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            n += os.readlink(f"/proc/self/fd/{fd}").lower().endswith((".ttf", ".otf", ".ttc"))
        except OSError:
            pass
    return n


def test_a_report_of_a_non_latin_name_leaves_few_font_files_open(tmp_path):
    """The glyph fallback reads every installed font's character map once; through
    matplotlib's get_font each of those files stayed open for the process's life (128 here)."""
    import os

    import pandas as pd
    import pytest

    from depthlab.experiments.store import RunRecord, Store
    from depthlab.report import write_report

    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("no /proc/self/fd to count open files")
    rows = [(s, layer, q, 0.5) for s in (0, 10) for layer in (1, 2)
            for q in ("grad_pre_std", "act_mean", "act_std")]
    with Store(tmp_path) as store:
        store.add_run(RunRecord(
            id="r1", name="入力層 ह", kind="run", config={"model": {}}, metrics={"steps": 10},
            steps=pd.DataFrame({"step": range(1, 11), "loss": np.linspace(2.4, 2.3, 10)}),
            probes=pd.DataFrame(rows, columns=["step", "layer", "quantity", "value"])))
    before = _open_font_files()
    write_report(tmp_path)
    assert _open_font_files() - before <= 10


def test_the_report_and_the_notebook_say_a_run_without_findings_did_not_learn():
    """diaghunt41's text for a no-findings diagnosis at a constant prediction's loss reaches
    the HTML report's doctor section and the notebook's repr (both said "clean bill of
    health"/"healthy")."""
    import math

    import pandas as pd

    from depthlab.diagnosis.findings import Diagnosis
    from depthlab.report.build import _findings_html
    from depthlab.report.notebook import diagnosis_repr

    def healthy(loss: float, chance: float) -> Diagnosis:
        return Diagnosis(findings=[], baseline={"train_loss": loss, "val_acc": 0.1},
                         probes=pd.DataFrame(columns=["step", "layer", "quantity", "value"]),
                         config={"model": "GapCNN"},
                         settings={"steps": 60, "optimizer": "sgd", "lr": 0.01,
                                   "batch_size": 32, "seed": 0}, chance_loss=chance)

    stuck, fit, old = healthy(2.275, 2.303), healthy(0.4, 2.303), healthy(2.275, math.nan)
    html = _findings_html(stuck.to_dict())
    assert "No findings, but the run did not learn: train loss 2.275" in html
    assert "Clean bill of health" not in html
    assert "Clean bill of health" in _findings_html(fit.to_dict())
    assert "Clean bill of health" in _findings_html(old.to_dict())  # stored before: unknown
    assert diagnosis_repr(stuck) == "Diagnosis(no findings, but the run did not learn)"
    assert diagnosis_repr(fit) == diagnosis_repr(old) == "Diagnosis(healthy: no findings)"


def test_an_interrupted_sweep_called_as_main_in_a_program_arms_no_exit_timer(tmp_path,
                                                                              monkeypatch):
    """`depthlab.cli.main(["sweep", ...])` inside a program (a notebook, a test) that was
    interrupted armed a daemon timer ending the whole process 10 s later (os._exit(130)): in
    CI it killed a pytest-xdist worker during whichever test ran then. Only the process's own
    command arms it."""
    import depthlab.cli.common as common
    import depthlab.experiments.runner as runner
    from depthlab.cli import main

    armed = []
    monkeypatch.setattr(common, "exit_within", lambda s, code: armed.append((s, code)))

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "train", interrupted)
    cfg = tmp_path / "s.toml"
    cfg.write_text('[data]\nname = "clusters"\nn = 60\n[model]\nsizes = ["auto", 4, "auto"]\n'
                   '[train]\nepochs = 1\n[sweep]\n"train.lr" = [0.1, 0.2]\n')
    assert main(["sweep", str(cfg), "--out", str(tmp_path / "r"), "-q"]) == 130
    assert armed == []
