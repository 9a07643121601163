"""depthlab.progress: plain status lines for logs, labelled stages with the time left."""

from __future__ import annotations

import pytest
from helpers.cli import cli

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
    r = cli("run", cfg, "--out", tmp_path / "out")
    assert r.returncode == 0, r.stderr
    assert "\r" not in r.stderr
    assert "step 20/20 (100%)" in r.stderr and "elapsed" in r.stderr
    r = cli("run", cfg, "--out", tmp_path / "out2", "--quiet")
    assert r.returncode == 0 and r.stderr == "" and r.stdout == ""
