"""Round 27 (daskhunt27): sweeps on the local pool and Dask."""
from __future__ import annotations

_TWO_REFUSED = """\
name = "two"
[data]
name = "digits"
val_fraction = 0.0
[model]
sizes = ["auto", 8, "auto"]
batchnorm = true
[train]
epochs = 1
max_steps = 3
batch_size = 1
patience = 2
[probes]
every = 0
[sweep]
"train.batch_size" = [8, 16]
{monitor}
"""


def _grid(tmp_path, monitor='"train.monitor" = ["train_loss", "train_acc"]'):
    path = tmp_path / "grid.toml"
    path.write_text(_TWO_REFUSED.format(monitor=monitor))
    return path


def test_a_base_refused_for_two_swept_keys_at_once_is_not_refused(tmp_path):
    # batch_size 1 beside batchnorm AND the default monitor val_loss with val_fraction 0:
    # every point sets both keys, but the base was validated with only the first refused
    # key replaced, so the grid was refused naming train.batch_size = 1
    from depthlab.experiments import read_toml
    from depthlab.experiments.grid import expand, validate_base

    raw = read_toml(_grid(tmp_path))
    base = validate_base(raw, base_dir=tmp_path)
    assert base["train"]["batch_size"] == 8 and base["train"]["monitor"] == "train_loss"
    points = expand(raw, base_dir=tmp_path)
    assert all(p.error is None for p in points)
    assert sorted((p.config["train"]["batch_size"], p.config["train"]["monitor"])
                  for p in points) == [(8, "train_acc"), (8, "train_loss"),
                                       (16, "train_acc"), (16, "train_loss")]


def test_a_sweep_of_a_base_refused_for_two_swept_keys_runs_every_point(tmp_path, capsys):
    from depthlab.experiments import Store
    from tests.helpers.cli import run_cli

    code, _, err = run_cli(capsys, "sweep", _grid(tmp_path), "--out", tmp_path / "out")
    assert code == 0, err
    runs = Store(tmp_path / "out").runs()
    assert sorted(runs.status) == ["finished"] * 4


def test_a_base_refused_for_a_key_the_grid_does_not_sweep_names_that_key(tmp_path, capsys):
    # the swept batch_size = 1 is replaced; what no point can train with is the monitor (not
    # swept): the refusal named train.batch_size = 1, a value no point uses
    from tests.helpers.cli import assert_one_line_error, run_cli

    code, _, err = run_cli(capsys, "sweep", _grid(tmp_path, monitor=""), "--out",
                           tmp_path / "out")
    assert_one_line_error(code, err, 'train.monitor = "val_loss"')
    assert "batch_size = 1" not in err
    assert not (tmp_path / "out").exists()


def _csv(path, shift=0.0):
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3)) + shift
    rows = "".join(f"{a:.6f},{b:.6f},{c:.6f},{int(a > shift)}\n" for a, b, c in x)
    path.write_text("a,b,c,label\n" + rows)


def test_a_sweep_resumed_after_its_data_file_changed_holds_only_the_new_datas_runs(tmp_path):
    # the run ids name the file's content, so the rerun after the edit ran every point again;
    # but the sweep id did not, so the old data's runs stayed points of "the" sweep: its
    # runs (and report) held 6 runs for a 4-point grid, two data sets mixed
    from depthlab.experiments import Store, read_toml
    from depthlab.experiments.sweep import run_sweep

    _csv(tmp_path / "d.csv")
    (tmp_path / "g.toml").write_text(
        'name = "r"\n[data]\npath = "d.csv"\n[model]\nsizes = ["auto", 4, "auto"]\n'
        '[train]\nepochs = 1\n[probes]\nevery = 0\n[sweep]\n"train.seed" = [0, 1, 2, 3]\n')
    raw = read_toml(tmp_path / "g.toml")
    first = run_sweep(raw, tmp_path / "out", base_dir=tmp_path, limit=2)
    again = run_sweep(raw, tmp_path / "out", base_dir=tmp_path, limit=3)
    assert again.sweep == first.sweep and again.skipped == 2  # same file: resumed
    _csv(tmp_path / "d.csv", shift=0.5)
    new = run_sweep(raw, tmp_path / "out", base_dir=tmp_path)
    assert new.sweep != first.sweep and new.skipped == 0
    store = Store(tmp_path / "out", create=False)
    assert len(store.runs(sweep=new.sweep)) == 4
    assert len(store.runs(sweep=first.sweep)) == 3
    assert not set(store.runs(sweep=new.sweep).id) & set(store.runs(sweep=first.sweep).id)


def test_a_base_data_file_no_point_reads_is_not_read_for_the_sweep_id(tmp_path, monkeypatch):
    # the grid sweeps data.path: the base's file (too large for the memory limit) is read by
    # no point, so naming the sweep by the data's content must not refuse it
    from depthlab.experiments import read_toml
    from depthlab.experiments.sweep import run_sweep

    _csv(tmp_path / "small.csv")
    (tmp_path / "huge.csv").write_text("a,b,c,d,e,label\n" + "0.1,0.2,0.3,0.4,0.5,1\n" * 400_000)
    (tmp_path / "g.toml").write_text(
        'name = "r"\n[data]\npath = "huge.csv"\n[model]\nsizes = ["auto", 4, "auto"]\n'
        '[train]\nepochs = 1\n[probes]\nevery = 0\n[sweep]\n"data.path" = ["small.csv"]\n'
        '"train.seed" = [0, 1]\n')
    monkeypatch.setenv("DEPTHLAB_MEMORY_LIMIT", "20M")
    res = run_sweep(read_toml(tmp_path / "g.toml"), tmp_path / "out", base_dir=tmp_path)
    assert res.counts == {"finished": 2}


def test_jobs_beside_a_cluster_is_refused_as_on_the_command_line(tmp_path):
    # run_sweep(jobs=4, cluster="local:2") ran on 2 Dask workers, the 4 silently ignored
    # (the CLI refuses --jobs with --cluster)
    import pytest

    from depthlab.experiments.executors import make_executor
    from depthlab.experiments.sweep import run_sweep

    raw = {"data": {"name": "digits"}, "model": {"sizes": ["auto", 4, "auto"]},
           "train": {"epochs": 1}, "sweep": {"train.seed": [0, 1]}}
    with pytest.raises(ValueError, match=r"jobs = 4 and cluster = 'local:2' do not go together"):
        run_sweep(raw, tmp_path / "out", jobs=4, cluster="local:2")
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="jobs = 3"):
        make_executor(3, "tcp://127.0.0.1:1")
    assert make_executor(1, "local:2").description  # jobs' default beside a cluster


def test_an_executor_beside_jobs_or_a_cluster_is_refused(tmp_path):
    import pytest

    from depthlab.experiments.executors import InProcess
    from depthlab.experiments.sweep import run_points, run_sweep

    raw = {"data": {"name": "digits"}, "model": {"sizes": ["auto", 4, "auto"]},
           "train": {"epochs": 1}, "sweep": {"train.seed": [0, 1]}}
    with pytest.raises(ValueError, match=r"executor = .* and cluster = 'local:2' do not go"):
        run_sweep(raw, tmp_path / "out", executor=InProcess(), cluster="local:2")
    with pytest.raises(ValueError, match=r"executor = .* and jobs = 2 do not go together"):
        run_points([], tmp_path / "out", sweep="s", executor=InProcess(), jobs=2)
    assert not (tmp_path / "out").exists()
    res = run_sweep(raw, tmp_path / "out", executor=InProcess(), echo=None)
    assert res.counts == {"finished": 2}
