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


def test_a_json_object_in_a_toml_file_is_named_and_other_names_still_read_toml(tmp_path):
    """A JSON object in ``run.toml`` gets a hint naming the ``.json`` suffix; a valid TOML
    config named ``run.cfg`` (or even ``.yaml``) is still read as TOML."""
    from depthlab.experiments import ConfigError, read_toml

    (tmp_path / "run.toml").write_text('{"model": {"depth": 3}}')
    with pytest.raises(ConfigError, match=r"TOML syntax error.*looks like JSON.*\.json"):
        read_toml(tmp_path / "run.toml")
    for name in ("run.cfg", "run.yaml"):
        (tmp_path / name).write_text('[data]\nname = "digits"\n')
        assert read_toml(tmp_path / name) == {"data": {"name": "digits"}}


# --- 4. reproduce's time left ------------------------------------------------------------------

class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_time_left_is_measured_per_unit_of_work():
    """A ladder of depths 2, 10, 50: after the first two trainings (2 + 10 layer-steps in
    1 + 5 s) the old estimate was their mean, ~3 s, for a depth-50 training of ~25 s (8x
    under). Now the seconds per unit of work measured so far times the work left."""
    from depthlab.progress import ExperimentProgress

    clock, lines = _Clock(), []
    p = ExperimentProgress("lines", write=lines.append, clock=clock)
    p.plan(["depth 2", "depth 10", "depth 50"], work=[2, 10, 50])
    for label, seconds in (("depth 2", 1), ("depth 10", 5)):
        with p.stage(label):
            clock.t += seconds
    p.stage("depth 50").__enter__()
    assert lines[-1] == "stage 3/3: depth 50 (overall ~25 s left)"


def test_time_left_leaves_out_skipped_stages_and_checks_work():
    from depthlab.progress import Stages

    clock, lines = _Clock(), []
    stages = Stages(4, write=lines.append, clock=clock, work=[1, 4, 30, 2])
    with stages.stage("a"):
        clock.t += 2
    stages.skip(2, "failed below")  # 34 units gone, not run
    stages.start("d")
    assert lines[-1] == "stage 4/4: d (overall ~4 s left)"
    for bad in ([1, 2, 3], [1, 2, 0, 1], [1, float("nan"), 1, 1], [1, True, 1, 1]):
        with pytest.raises(ValueError, match="work"):
            Stages(4, work=bad)


def test_depth_ladder_plans_work_growing_with_depth(monkeypatch):
    """The depth ladder declares each training's work (its layers, twice with batch norm):
    depth 100 with batch norm is ~60x a depth-2 plain net, as measured (2.1 s vs 0.03 s)."""
    from depthlab.progress import ExperimentProgress
    from depthlab.reproduce import depth_ladder

    planned = {}

    def plan(self, labels, work=None):
        planned.update(zip(labels, work))
        raise KeyboardInterrupt  # stop before any training

    monkeypatch.setattr(ExperimentProgress, "plan", plan)
    with pytest.raises(KeyboardInterrupt):
        depth_ladder.run(quick=True)
    assert planned["depth 2, relu + he_normal"] == 4
    assert planned["depth 100, relu + he_normal + BN"] == 202
    assert planned["depth 50, selu + lecun_normal"] == 52


def test_reproduce_all_weighs_each_experiment_by_its_measured_seconds():
    """``reproduce all``'s overall estimate weighs the experiments by their measured seconds:
    every registered experiment has them (quick and full)."""
    from depthlab.cli.reproduce import EXPERIMENT_SECONDS
    from depthlab.reproduce import list_experiments

    names = {e.name for e in list_experiments()}
    assert set(EXPERIMENT_SECONDS) == names
    assert all(0 < q <= f for q, f in EXPERIMENT_SECONDS.values())


# --- 3. sizes with unequal hidden widths and depth ---------------------------------------------

@pytest.mark.parametrize(("extra", "key"), [({"depth": 5}, "depth"),
                                            ({"depth": 5, "width": 16}, "depth"),
                                            ({"width": 16}, "width"),
                                            ({"depth": 0}, "depth")])
def test_depth_or_width_do_not_silently_replace_unequal_hidden_widths(extra, key):
    """``sizes = ["auto", 64, 32, "auto"]`` with ``depth = 5`` became 5 hidden layers of 64
    (the first width; the 32 dropped without a word). Now one line names both keys."""
    import depthlab as dl
    from depthlab.experiments import ConfigError

    with pytest.raises(ConfigError, match=rf"{key} = .*unequal hidden widths.*\[\"auto\", "
                                          r"64, 32, \"auto\"\].*sizes alone") as info:
        dl.ModelSpec(sizes=["auto", 64, 32, "auto"], **extra)
    assert "\n" not in str(info.value) and info.value.key == key
    # consistent or equal widths: as before
    assert dl.ModelSpec(sizes=["auto", 64, 32, "auto"], depth=2).sizes == ("auto", 64, 32, "auto")
    assert dl.ModelSpec(sizes=["auto", 64, 64, "auto"], depth=3).sizes == ("auto", 64, 64, 64,
                                                                           "auto")
    assert dl.ModelSpec(sizes=["auto", "auto"], depth=2, width=8).sizes == ("auto", 8, 8, "auto")


def test_run_refuses_sizes_and_depth_that_disagree(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.toml").write_text('[data]\nname = "spirals"\n[model]\n'
                                     'sizes = ["auto", 64, 32, "auto"]\ndepth = 5\n')
    code, _, err = run_cli(capsys, "run", "c.toml", "--out", "res")
    assert_one_line_error(code, err, "model.depth = 5", "model.sizes", "64, 32")
    assert not (tmp_path / "res").exists()


# --- 5. overlay styles beyond the palette ------------------------------------------------------

def _overlay_runs(n):
    import numpy as np
    import pandas as pd

    runs, theory = {}, {}
    for i in range(n):
        rows = [{"step": step, "layer": layer, "quantity": "grad_pre_std",
                 "value": float(np.exp(-0.03 * (i + 1) * layer) * (1 + 0.05 * i))}
                for step in (0, 100) for layer in range(1, 11)]
        runs[f"run {i}"] = pd.DataFrame(rows)
        theory[f"run {i}"] = pd.DataFrame({"layer": range(1, 11), "grad_pre_var": [
            float(np.exp(-0.05 * (i + 1) * la)) for la in range(1, 11)], "act_var": 1.0})
    return runs, theory


def test_overlay_of_sixteen_runs_draws_each_run_and_theory_distinctly():
    """The report overlays up to 16 runs; with 7 colours, run 8 was run 1's colour and solid
    line (a square marker of 4 points instead of a circle) and its dashed theory was drawn
    exactly as run 1's. Now each run's (colour, line style) differs, and so does each theory
    line's (colour, marker)."""
    import matplotlib.pyplot as plt

    from depthlab import plot

    runs, theory = _overlay_runs(16)
    fig = plot.gradient_per_layer(runs, theory=theory)
    try:
        lines = fig.axes[0].get_lines()
        # (unlabelled '_...' lines: measured points drawn again over the theory, round 18)
        measured = [ln for ln in lines if not ln.get_label().endswith(": theory")
                    and not ln.get_label().startswith("_")]
        theories = [ln for ln in lines if ln.get_label().endswith(": theory")]
        assert len(measured) == len(theories) == 16
        looks = {(ln.get_color(), ln.get_linestyle()) for ln in measured}
        assert len(looks) == 16
        assert len({(ln.get_color(), ln.get_marker()) for ln in theories}) == 16
        assert {ln.get_linestyle() for ln in theories} == {"--"}  # dashes stay the theory's
        assert "--" not in {ln.get_linestyle() for ln in measured}
    finally:
        plt.close(fig)


def test_run_styles_are_distinct_for_eighty_four_runs():
    from depthlab.plot import RUN_COLORS, run_style

    n = len(RUN_COLORS) * 12
    assert len({run_style(i) for i in range(n)}) == n
    assert len({run_style(i)[::2] for i in range(3 * len(RUN_COLORS))}) == 3 * len(RUN_COLORS)
    assert run_style(0) == (RUN_COLORS[0], "o", "-")


def test_an_experiment_without_measured_seconds_counts_as_the_median():
    """A user's own registered experiment has no measured seconds: ``reproduce`` must not fail
    on it (KeyError as an internal error, exit 1), it counts as the median experiment."""
    import statistics

    from depthlab.cli.reproduce import EXPERIMENT_SECONDS, experiment_seconds

    assert experiment_seconds("mine", True) == statistics.median(
        q for q, _ in EXPERIMENT_SECONDS.values())
    assert experiment_seconds("he2015", False) == EXPERIMENT_SECONDS["he2015"][1]


def test_starter_config_says_how_to_give_unequal_widths(tmp_path):
    """The starter config (``depthlab init``) sets depth and width; a user who lists unequal
    widths in its sizes line is now refused (5ac33ca), so its comment says how: the sizes
    without depth and width, which validates."""
    import re
    from importlib import resources

    from depthlab.experiments import read_toml, validate

    text = resources.files("depthlab").joinpath("examples", "starter.toml").read_text()
    example = re.search(r"\(unequal widths: (sizes = \[.*?\]) without depth and width\)", text)
    assert example, "the starter's comment on unequal widths"
    edited = re.sub(r"^sizes = .*$", example.group(1), text, count=1, flags=re.M)
    edited = re.sub(r"^(depth|width) = .*$", "", edited, flags=re.M)
    (tmp_path / "s.toml").write_text(edited)
    sizes = validate(read_toml(tmp_path / "s.toml"))["model"]["sizes"]
    assert sizes == ["auto", 128, 64, "auto"]


# --- 4b. a sweep's time left -------------------------------------------------------------------

def test_sweep_time_left_weighs_points_by_their_work():
    """A depth sweep 1..128 on digits said "~2 s left" after depth 16 with 10 s to go (points
    counted alike). Now each point's work (its layer-steps) weighs the time left, measured
    from the first result on (its one-time costs left out)."""
    from depthlab.experiments.progress import SweepProgress

    now, lines = [0.0], []
    work = [("a", 1000.0), ("b", 1000.0), ("c", 10000.0)]
    prog = SweepProgress(3, lines.append, clock=lambda: now[0], work=work)
    prog.started()
    now[0] = 5.0  # the first point: imports and the data's first load
    prog.point("a", "depth=1", "finished", {}, None)
    assert lines[-1].endswith("depth=1: finished")  # no estimate from one result
    now[0] = 6.0
    prog.point("b", "depth=2", "finished", {}, None)
    assert lines[-1].endswith("(0 failed, ~10 s left)"), lines[-1]  # was ~3 s


def test_point_work_follows_depth_width_and_steps():
    from depthlab.experiments.config import validate
    from depthlab.experiments.progress import POINT_FIXED, point_work

    def work(**model):
        cfg = validate({"data": {"name": "digits"}, "model": {"sizes": ["auto", "auto"],
                                                              "width": 64, **model},
                        "train": {"epochs": 2}})
        return point_work(cfg) - POINT_FIXED

    # measured (digits, 80 steps): depth 2 0.2 s, 64 3.2 s; width 64 0.36 s, 1024 17 s
    assert 20 < work(depth=64) / work(depth=2) < 30
    assert 30 < work(depth=8, width=1024) / work(depth=8) < 70
    assert work(depth=8, batchnorm=True) == 2 * work(depth=8)
    assert point_work({"model": {}}) == 1.0  # unreadable: one unit


def test_ctrl_c_while_a_grid_is_listed_is_an_interrupted_sweep(tmp_path, monkeypatch):
    """Listing a grid of up to 2,000 points for the time left takes seconds (1.9 s for 2,000):
    a Ctrl-C then must be the sweep's own interrupt (SweepInterrupted, the store closed), not
    a bare KeyboardInterrupt from before its handling."""
    from depthlab.experiments import progress as sweep_progress
    from depthlab.experiments import sweep as sweep_module
    from depthlab.experiments.sweep import SweepInterrupted, run_sweep

    def ctrl_c(config):
        raise KeyboardInterrupt

    monkeypatch.setattr(sweep_module, "point_work", ctrl_c)
    assert sweep_progress.point_work is not ctrl_c
    raw = {"data": {"name": "spirals", "n": 100}, "model": {"sizes": ["auto", 4, "auto"]},
           "train": {"epochs": 1}, "sweep": {"train.seed": [0, 1]}}
    with pytest.raises(KeyboardInterrupt) as info:  # a bare one would stop pytest itself
        run_sweep(raw, tmp_path / "out", echo=None)
    assert isinstance(info.value, SweepInterrupted), type(info.value)


def test_a_label_copied_with_the_headers_spaces_is_found(tmp_path, monkeypatch, capsys):
    """A header written "a, b, c, target" is read as the columns 'a', 'b', 'c', 'target' (names
    stripped), so data.label = " target", copied from it, was "no label column ' target'"
    beside a list holding 'target'. Now the label is stripped as the names are."""
    from depthlab.data import load_dataset

    _target_csv(tmp_path / "raw.csv")
    text = (tmp_path / "raw.csv").read_text().splitlines()
    (tmp_path / "d.csv").write_text("\n".join([", ".join(text[0].split(","))] + text[1:]) + "\n")
    ds = load_dataset(tmp_path / "d.csv", label=" target")
    assert ds.n_features == 3
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.toml").write_text('[data]\npath = "d.csv"\nlabel = " target"\n[model]\n'
                                     'sizes = ["auto", 4, "auto"]\n[train]\nepochs = 1\n')
    code, _, err = run_cli(capsys, "run", "c.toml", "--out", "res", "--quiet")
    assert code == 0, err


def test_overlay_legend_of_sixteen_runs_stays_inside_the_figure():
    """d51c45b's legend entry 'dashed: theory (run's colour, hollow marker)' ran past the
    figure's right edge (cut at 'ho' in a report of 12 runs); the entry keeps its old text."""
    import matplotlib.pyplot as plt

    from depthlab import plot

    runs, theory = _overlay_runs(16)
    fig = plot.gradient_per_layer(runs, theory=theory)
    try:
        fig.canvas.draw()
        legend = fig.legends[0] if fig.legends else fig.axes[-1].get_legend()
        right = max(t.get_window_extent().x1 for t in legend.get_texts())
        assert right <= fig.bbox.x1 + 0.5, (right, fig.bbox.x1)
    finally:
        plt.close(fig)
