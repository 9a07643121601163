"""depthlab.progress: plain status lines for logs, labelled stages with the time left."""

from __future__ import annotations

import pytest
from helpers.cli import cli, clis

from depthlab.progress import Stages, StatusLines, make_progress, mode


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_status_lines_every_few_seconds_then_at_the_end():
    clock, lines = Clock(), []
    bar = StatusLines(100, every_s=5, write=lines.append, clock=clock)
    for _ in range(10):
        clock.t += 1.0
        bar.update(2)
        bar.set_postfix(loss="0.5000")
    assert lines == ["step 10/100 (10%): loss 0.5000; 5 s elapsed, ~45 s left",
                     "step 20/100 (20%): loss 0.5000; 10 s elapsed, ~40 s left"]
    bar.close()
    bar.close()  # once only
    assert len(lines) == 3 and "\r" not in "".join(lines)


def test_stages_label_and_estimate_the_time_left():
    clock, lines = Clock(), []
    stages = Stages(4, write=lines.append, clock=clock)
    for label in ("tanh, standard init", "tanh, normalized init"):
        with stages.stage(label):
            clock.t += 30
    stages.start("softsign, standard init")
    assert lines == ["stage 1/4: tanh, standard init",
                     "stage 2/4: tanh, normalized init (overall ~2 min left)",
                     "stage 3/4: softsign, standard init (overall ~60 s left)"]
    with pytest.raises(ValueError, match="total"):
        Stages(0)


def test_modes():
    assert mode(True) == mode("bar") == "bar" and mode(False) is None and mode(None) is None
    assert isinstance(make_progress(10, "lines"), StatusLines)
    assert make_progress(10, False) is None
    with pytest.raises(ValueError, match="progress="):
        mode("sometimes")


def test_run_into_a_pipe_prints_status_lines_not_a_bar(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[data]\nname = "digits"\n[model]\nsizes = ["auto", 8, "auto"]\n'
                   '[train]\nloss = "cross_entropy"\nbatch_size = 64\nepochs = 1\n')
    r, quiet = clis(("run", cfg, "--out", tmp_path / "out"),
                    ("run", cfg, "--out", tmp_path / "out2", "--quiet"))
    assert r.returncode == 0, r.stderr
    assert "\r" not in r.stderr
    assert "step 20/20 (100%)" in r.stderr and "elapsed" in r.stderr
    assert quiet.returncode == 0 and quiet.stderr == "" and quiet.stdout == ""


def test_experiment_progress_plans_labels_and_skips():
    from depthlab.progress import ExperimentProgress

    clock, lines = Clock(), []
    p = ExperimentProgress("lines", write=lines.append, clock=clock)
    with pytest.raises(RuntimeError, match="before the stages were planned"):
        p.stage("too early")
    p.plan(["depth 12, σ_w² = 1", "depth 48, σ_w² = 1.76", "depth 96, σ_w² = 4"])
    assert p.training == "lines" and p.total == 3
    with p.stage("depth 12, σ_w² = 1"):
        clock.t += 10
    p.skip(1, "depth 48 failed below")
    with p.stage("depth 96, σ_w² = 4"):
        pass
    assert lines == ["stage 1/3: depth 12, σ_w² = 1",
                     "stage 2/3 skipped: depth 48 failed below",
                     "stage 3/3: depth 96, σ_w² = 4 (overall ~10 s left)"]
    with pytest.raises(RuntimeError, match="beyond the 3 planned"):
        p.stage("one more")
    quiet = ExperimentProgress.planned(["a"], setting=False)  # the plan holds when quiet too
    with quiet.stage("a"):
        pass
    assert quiet.training is None and quiet.done == 1
    assert ExperimentProgress.of(quiet) is quiet


def test_run_experiment_hands_stages_to_an_experiment_and_checks_its_plan(capsys):
    from depthlab.progress import ExperimentProgress
    from depthlab.reproduce.base import REGISTRY, Result, register, run_experiment

    def fake(n_run: int):
        def run(quick=False, data=None, progress=False):
            p = ExperimentProgress.of(progress)
            p.plan([f"tanh, init {k}" for k in range(3)])
            for k in range(n_run):
                with p.stage(f"tanh, init {k}"):
                    pass
            return Result("fake", "fake")
        return run

    try:
        register("fake-progress", "fake", "none")(fake(3))
        run_experiment("fake-progress", progress="lines", echo=None)
        err = capsys.readouterr().err.splitlines()
        assert [line.split(" (overall")[0] for line in err] == [
            "stage 1/3: tanh, init 0", "stage 2/3: tanh, init 1", "stage 3/3: tanh, init 2"]
        run_experiment("fake-progress", progress=False, echo=None)
        assert capsys.readouterr().err == ""
        register("fake-progress", "fake", "none")(fake(2))
        with pytest.raises(RuntimeError, match="2 of the 3 stages"):
            run_experiment("fake-progress", progress=False, echo=None)
    finally:
        REGISTRY.pop("fake-progress", None)


def test_reproduce_into_a_pipe_labels_every_stage(tmp_path):
    import re

    r = cli("reproduce", "xu2016", "--quick", "--out", tmp_path / "xu")
    assert r.returncode == 0, r.stderr
    assert "\r" not in r.stderr and "\r" not in r.stdout
    stages = re.findall(r"^stage (\d+)/(\d+): (.+)$", r.stderr, flags=re.M)
    totals = {int(n) for _, n, _ in stages}
    assert len(totals) == 1, totals  # N known before the first stage and never changed
    n = totals.pop()
    assert [int(k) for k, _, _ in stages] == list(range(1, n + 1)) and n >= 10
    labels = [label for _, _, label in stages]
    assert "20 layers, penalized tanh, seed 3" in labels[-1]
    assert all("overall ~" in label and "left" in label for label in labels[1:])
    assert "experiment 1/1: xu2016" in r.stderr


def test_reproduce_quiet_prints_no_stage(tmp_path, capsys, monkeypatch):
    """``reproduce --quiet``: nothing on stderr, no stage line on stdout, no warning. In this
    process on a smaller xu2016 (what --quiet silences does not depend on the sizes; the
    test above reads the stage lines of the real quick run from a pipe): a second quick run
    in a subprocess was ~12 s of CPU."""
    import warnings

    from helpers.cli import one_blas_thread, run_cli

    from depthlab.reproduce import xu2016

    real = xu2016.Inputs
    monkeypatch.setattr(xu2016, "Inputs", lambda **kw: real(**{
        **kw, "width": 16, "seeds": [0], "train_width": 8, "train_steps": 5}))
    one_blas_thread(monkeypatch)
    with warnings.catch_warnings(record=True) as caught:  # a subprocess printed them
        warnings.simplefilter("always")
        code, out, err = run_cli(capsys, "reproduce", "xu2016", "--quick", "--out",
                                 tmp_path / "xu-q", "--quiet")
    assert code == 0 and err == "" and "stage" not in out, err
    assert [str(w.message) for w in caught] == []
