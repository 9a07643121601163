"""Round 32 (cliux32): the command line's rough edges: NumPy's raw overflow warnings beside a
finished run, `init foo.json`, did-you-mean for every choice-valued config field, "1 rows"."""

from __future__ import annotations

import warnings

import numpy as np
from helpers.cli import assert_one_line_error, one_blas_thread, run_cli

LR_1000 = """name = "hot"
[data]
name = "clusters"
[model]
sizes = ["auto", 16, 16, 16, "auto"]
activation = "relu"
init = "he_normal"
[train]
lr = 1000.0
max_steps = 40
[probes]
every = 0
"""

HUGE = """name = "huge"
[data]
path = "huge.npz"
standardize = false
[model]
sizes = ["auto", 16, 16, "auto"]
activation = "relu"
init = "he_normal"
[train]
epochs = 1
[probes]
every = 0
"""


def _run_recording(capsys, *args):
    """``depthlab ARGS`` in this process with every warning recorded: (code, out, err,
    the warnings' texts) (pytest would swallow them; the CLI prints each as a line)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, out, err = run_cli(capsys, *args)
    return code, out, err, [str(w.message) for w in caught]


def test_finished_run_has_no_raw_numpy_overflow_warning(tmp_path, capsys, monkeypatch):
    """A ReLU/He net at lr 1000 that finishes (loss 572): its final test evaluation printed
    "depthlab: warning: overflow encountered in matmul" (hidden units past float32's range,
    read as 0 by ReLU; the outputs and test_loss are finite), a line naming no run and
    saying nothing a user can act on. Training's own evaluations were already silent."""
    one_blas_thread(monkeypatch)
    config = tmp_path / "hot.toml"
    config.write_text(LR_1000)
    code, out, err, said = _run_recording(capsys, "run", config, "--out", tmp_path / "r",
                                          "--quiet")
    assert code == 0, err
    assert not [s for s in said if "encountered in" in s], said
    from depthlab.experiments import Store

    with Store(tmp_path / "r", create=False, readonly=True) as store:
        runs = store.runs()
        (rid,) = runs["id"]
        metrics = store.run(rid)["metrics"]
    assert runs["status"].tolist() == ["finished"]
    assert np.isfinite(metrics["test_loss"]) and metrics["test_loss"] > 100  # an overflowing net


def test_finished_run_with_non_finite_test_loss_says_so(tmp_path, capsys, monkeypatch):
    """Test rows far outside the training data (1e38 in float32) make the network's outputs
    overflow: test_loss is NaN, stored as missing and left out of the run's line. Before:
    three raw NumPy lines ("overflow encountered in matmul", "invalid value encountered in
    subtract"); now one warning naming the run, the split and the rows, whose count is
    checked against the saved network's own outputs."""
    import depthlab as dl

    one_blas_thread(monkeypatch)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 10))
    xt = np.sign(rng.normal(size=(20, 10))) * 1e38
    np.savez(tmp_path / "huge.npz", x_train=x, y_train=(x[:, 0] > 0).astype(int), x_test=xt,
             y_test=(xt[:, 0] > 0).astype(int))
    config = tmp_path / "huge.toml"
    config.write_text(HUGE)
    out_dir = tmp_path / "r"
    code, out, err, said = _run_recording(capsys, "run", config, "--out", out_dir)
    assert code == 0, err
    assert not [s for s in said if "encountered in" in s], said
    rid = out.split()[1].rstrip(":")
    assert "finished" in out and "test_loss" not in out
    net = dl.load(out_dir / "models" / f"{rid}.npz")
    with np.errstate(all="ignore"):
        bad = int((~np.isfinite(net.predict(xt.astype(np.float32)))).any(axis=1).sum())
    assert 0 < bad <= 20
    (line,) = [s for s in said if s.startswith(f"run {rid}:")]
    assert "test_loss is nan (not stored)" in line, line
    assert f"not finite on {bad} of 20 test rows (they overflow float32" in line, line
    # predict of one row: "1 row", not "1 rows" (the same network)
    np.savez(tmp_path / "one.npz", x=x[:1], y=np.array([1]))
    code, _, err = run_cli(capsys, "predict", out_dir / "models" / f"{rid}.npz",
                           tmp_path / "one.npz", "--to", tmp_path / "p.csv")
    assert code == 0, err
    assert "predictions for 1 row: " in err and ": 1 row, accuracy " in err, err
    assert "1 rows" not in err


def test_init_refuses_a_name_of_another_format(tmp_path, capsys, monkeypatch):
    """`depthlab init foo.json` wrote a TOML file named foo.json.toml. Now one line naming the
    suffix and the names accepted, exit 2, nothing written; a dotted name of no file format
    (run.v2) is still a name."""
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, "init", "foo.json")
    assert_one_line_error(code, err, "'foo.json' ends in .json", "'foo' or 'foo.toml'")
    assert list(tmp_path.iterdir()) == []
    code, out, err = run_cli(capsys, "init", "run.v2")
    assert code == 0, err
    assert (tmp_path / "run.v2.toml").is_file()


def test_choice_fields_hint_the_value_meant(tmp_path, capsys):
    """`data.targets = "value"` got the accepted list but no did-you-mean (registry fields
    such as model.activation had one): every choice-valued field now names the closest."""
    base = '[data]\nname = "spirals"\n{data}[model]\nsizes = ["auto", 4, "auto"]\n{model}' \
           '[train]\nloss = "mse"\n{train}'
    cases = [({"data": 'targets = "value"\n'}, 'data.targets = "value"', '"values"'),
             ({"train": 'monitor = "val_los"\n'}, 'train.monitor = "val_los"', '"val_loss"'),
             ({"model": 'dtype = "flot32"\n'}, 'model.dtype = "flot32"', '"float32"'),
             ({"train": 'batch_size = "ful"\n'}, 'train.batch_size = "ful"', '"full"')]
    for i, (parts, said, meant) in enumerate(cases):
        config = tmp_path / f"c{i}.toml"
        config.write_text(base.format(**{"data": "", "model": "", "train": "", **parts}))
        code, _, err = run_cli(capsys, "run", config, "--out", tmp_path / "r")
        assert_one_line_error(code, err, said, f"(did you mean {meant}?); accepted:")


def test_one_point_sweep_says_point(tmp_path, capsys, monkeypatch):
    """`depthlab sweep` of a grid of one point said "1 points"."""
    one_blas_thread(monkeypatch)
    config = tmp_path / "one.toml"
    config.write_text('name = "one"\n[data]\nname = "spirals"\nn = 60\n[model]\nsizes = '
                      '["auto", 4, "auto"]\n[train]\nepochs = 1\n[probes]\nevery = 0\n'
                      '[sweep]\n"train.seed" = [0]\n')
    code, out, err = run_cli(capsys, "sweep", config, "--out", tmp_path / "r")
    assert code == 0, err
    assert ": 1 point (train.seed 1)" in out + err, out + err


def test_test_rows_too_large_once_standardized_are_one_line(tmp_path, capsys):
    """Test rows of 3e38 (float32 holds them) standardized with a training spread of 0.5 are
    6e38: the cast made them inf, the run trained, then failed with "internal error ... x
    contains NaN or infinity" (exit 1). Now one line before training, naming the split."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3)) * 0.5
    xt = np.full((5, 3), 3e38)
    np.savez(tmp_path / "big.npz", x_train=x, y_train=(x[:, 0] > 0).astype(int), x_test=xt,
             y_test=np.ones(5, int))
    config = tmp_path / "big.toml"
    config.write_text('name = "big"\n[data]\npath = "big.npz"\n[model]\nsizes = ["auto", 4, '
                      '"auto"]\n[train]\nepochs = 1\n[probes]\nevery = 0\n')
    code, out, err = run_cli(capsys, "run", config, "--out", tmp_path / "r")
    assert_one_line_error(code, err, "the test split's x, standardized with the training "
                          "split's mean and std, holds ", "(row 0 of the split, column 0), "
                          "which does not fit in float32", 'model.dtype = "float64"')
    assert not (tmp_path / "r" / "models").exists()
