"""Round 41 (clihunt41): run ids of user data, interrupted sweeps, option spellings and other
things a demanding user of the CLI, the store and sweeps meets."""

from __future__ import annotations

import numpy as np
import pytest

TINY = ('[model]\nsizes = ["auto", 4, "auto"]\n'
        '[train]\nepochs = 1\n[probes]\nevery = 0\njacobian = false\n')


def _fashion_copy(folder, seed: int) -> None:
    """Four small Fashion-MNIST IDX files (random images) in ``folder``."""
    from depthlab.data import write_idx

    folder.mkdir()
    r = np.random.default_rng(seed)
    for part, n in (("train", 40), ("t10k", 10)):
        write_idx(folder / f"{part}-images-idx3-ubyte",
                  r.integers(0, 255, (n, 28, 28)).astype(np.uint8))
        write_idx(folder / f"{part}-labels-idx1-ubyte", np.arange(n, dtype=np.uint8) % 10)


def test_a_built_in_data_set_read_from_a_user_copy_has_its_own_run_id(tmp_path, monkeypatch):
    # DEPTHLAB_FASHION_MNIST=copyA and =copyB (other images) gave one run id, the system
    # copy's: the second run was refused as "has this config" and a sweep skipped its points
    from depthlab.experiments.config import run_id, validate
    from depthlab.experiments.executors.base import Task, data_changed

    _fashion_copy(tmp_path / "a", 0)
    _fashion_copy(tmp_path / "b", 1)
    cfg = validate({"data": {"name": "fashion-mnist"}, "model": {"sizes": ["auto", 4, "auto"]}})
    monkeypatch.delenv("DEPTHLAB_FASHION_MNIST", raising=False)
    system = run_id(cfg)
    ids = {}
    for copy in ("a", "b"):
        monkeypatch.setenv("DEPTHLAB_FASHION_MNIST", str(tmp_path / copy))
        ids[copy] = run_id(cfg)
    assert len({system, ids["a"], ids["b"]}) == 3, (system, ids)
    monkeypatch.setenv("DEPTHLAB_FASHION_MNIST", str(tmp_path / "a"))
    assert run_id(cfg) == ids["a"]  # stable
    # data.options.path: the copy's content, not only its name (a copy replaced in place)
    raw = {"data": {"name": "fashion-mnist", "options": {"path": str(tmp_path / "c")}},
           "model": {"sizes": ["auto", 4, "auto"]}}
    _fashion_copy(tmp_path / "c", 2)
    before = run_id(validate(raw))
    labels = tmp_path / "c" / "train-labels-idx1-ubyte"
    labels.write_bytes(labels.read_bytes()[:-1] + b"\3")
    assert run_id(validate(raw)) != before
    # a worker that reads another copy does not store its record under this copy's id
    from depthlab.experiments.config import data_digest

    task = Task(ids["a"], "p", cfg, None, "sweep-point", data_digest(cfg))
    assert data_changed(task) is None
    monkeypatch.setenv("DEPTHLAB_FASHION_MNIST", str(tmp_path / "b"))
    assert "DataChanged" in (data_changed(task) or "")
    # a copy of the packaged files (the same content elsewhere) keeps the packaged copy's id
    import shutil

    from depthlab.data import fashion_mnist

    monkeypatch.setattr(fashion_mnist, "SYSTEM_DIR", tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "same")
    monkeypatch.setenv("DEPTHLAB_FASHION_MNIST", str(tmp_path / "same"))
    same = run_id(cfg)
    monkeypatch.delenv("DEPTHLAB_FASHION_MNIST")
    assert same == run_id(cfg)


def test_runs_finds_a_sweep_stopped_before_its_first_point(tmp_path, monkeypatch, capsys):
    # a sweep interrupted (Ctrl-C, killed) before its first point finished is recorded (its
    # size), but `depthlab runs --sweep ID` said "not a sweep of DIR; its sweeps: none"
    import depthlab.experiments.runner as runner
    from depthlab.cli import main
    from depthlab.experiments import Store

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "train", interrupted)
    cfg = tmp_path / "s.toml"
    cfg.write_text('[data]\nname = "clusters"\nn = 60\n' + TINY
                   + '[sweep]\n"train.lr" = [0.1, 0.2]\n')
    out = str(tmp_path / "r")
    assert main(["sweep", str(cfg), "--out", out, "-q"]) == 130
    capsys.readouterr()
    store = Store(out)
    (sweep,) = store.sweep_sizes()
    assert len(store.runs(sweep=sweep[:7])) == 0  # the API found it already
    store.close()
    for given in (sweep, sweep[:6], sweep[3:8]):
        assert main(["runs", out, "--sweep", given]) == 0, capsys.readouterr().err
        said = capsys.readouterr().out
        assert sweep in said and "none of its 2 point(s)" in said, said
    assert main(["runs", out, "--sweep", "zz"]) == 2
    assert sweep in capsys.readouterr().err  # named among the store's sweeps


@pytest.mark.parametrize("given", ["LOCAL:2", "Local:2", " local:2 "])
def test_a_cluster_address_is_read_in_any_case_as_the_other_choices(given, tmp_path, capsys):
    # --cluster LOCAL:2 was read as the bare HOST:PORT 'LOCAL', port 2: a name lookup, then
    # "cannot reach the Dask scheduler at tcp://LOCAL:2: Name or service not known", where
    # --kind RUN, --format PARQUET (every fixed choice) are read in any case
    from depthlab.cli import main
    from depthlab.experiments.executors import make_executor
    from depthlab.experiments.executors.dask import check_address

    assert check_address(given) == "local:2"
    ex = make_executor(1, given)  # nothing started
    assert ex.local_workers == 2 and "LocalCluster of 2" in ex.description
    assert check_address("TCP://Host:8786") == "tcp://Host:8786"  # the host as given
    cfg = tmp_path / "s.toml"
    cfg.write_text('[data]\nname = "clusters"\nn = 60\n' + TINY
                   + '[sweep]\n"train.lr" = [0.1, 0.2]\n')
    # LOCAL:0 is refused as local:0 (not a name lookup), before any store is made
    assert main(["sweep", str(cfg), "--out", str(tmp_path / "r"), "--cluster",
                 given.replace("2", "0")]) == 2
    err = capsys.readouterr().err
    assert "'local:0' is not accepted" in err and err.count("\n") == 1, err
    assert not (tmp_path / "r").exists()


def test_a_built_in_data_folder_is_relative_to_the_toml_file_as_data_path(tmp_path, monkeypatch):
    # data.options.path = "fm" (fashion-mnist's folder) was read relative to the working
    # folder, data.path relative to the TOML file: the same config found its files only when
    # started beside them ("Fashion-MNIST files not found (searched: fm)") or other files
    from depthlab.experiments.config import load_config

    (tmp_path / "proj").mkdir()
    _fashion_copy(tmp_path / "proj" / "fm", 0)
    toml = tmp_path / "proj" / "c.toml"
    toml.write_text('[data]\nname = "fashion-mnist"\noptions = {path = "fm"}\n' + TINY)
    monkeypatch.chdir(tmp_path)
    cfg = load_config(toml)
    assert cfg["data"]["options"]["path"] == str((tmp_path / "proj" / "fm").resolve())


def test_a_long_data_preparation_shows_progress(tmp_path, monkeypatch, capsys):
    # `depthlab run` of a 1 GB .npz said nothing for 34 s (its fingerprint, load and
    # standardization) before the first training line; now a line every few seconds
    import threading

    import depthlab.cli.run as cli_run
    from depthlab.cli import main
    from depthlab.progress import waiting

    lines: list[str] = []
    two = threading.Event()

    def write(line: str) -> None:
        lines.append(line)
        if len(lines) >= 2:
            two.set()

    with waiting("preparing the data", "lines", every_s=0.01, write=write):
        assert two.wait(60)
    for t in threading.enumerate():
        if t.name == "depthlab-waiting":
            t.join(60)
    said = len(lines)
    assert lines[0].startswith("preparing the data: ") and lines[0].endswith(" elapsed")
    assert not any(t.name == "depthlab-waiting" for t in threading.enumerate())
    assert len(lines) == said  # none after the block
    with waiting("x", False, every_s=0.0, write=write):
        pass
    assert len(lines) == said
    # the CLI's run waits so for its data (and not with --quiet)
    used: list = []
    real = cli_run.waiting
    monkeypatch.setattr(cli_run, "waiting", lambda label, progress: used.append(
        (label, progress)) or real(label, progress))
    (tmp_path / "c.toml").write_text('[data]\nname = "clusters"\nn = 60\n' + TINY)
    for quiet in ([], ["-q"]):
        assert main(["run", str(tmp_path / "c.toml"), "--out", str(tmp_path / "r"),
                     "--overwrite", *quiet]) == 0
    assert [u[0] for u in used] == ["preparing the data"] * 2 and used[1][1] is False


def test_a_sweep_reading_a_large_data_file_shows_progress(tmp_path, monkeypatch):
    # `depthlab sweep` of a 1 GB .npz said nothing for 21 s (the file's check and
    # fingerprint) before "sweep ID: N points"; now its echo gets a line every few seconds
    import depthlab.experiments.sweep as sweep_mod
    from depthlab.experiments import run_sweep

    used: list = []
    real = sweep_mod.waiting
    monkeypatch.setattr(sweep_mod, "waiting", lambda label, progress, write: used.append(
        (label, progress, write)) or real(label, progress, write=write))
    raw = {"data": {"name": "clusters", "n": 60}, "model": {"sizes": ["auto", 4, "auto"]},
           "train": {"epochs": 1}, "probes": {"every": 0, "jacobian": False},
           "sweep": {"train.lr": [0.1]}}
    lines: list[str] = []
    run_sweep(raw, tmp_path / "a", echo=lines.append)
    run_sweep(raw, tmp_path / "b", echo=None)
    assert [(u[0], u[1]) for u in used] == [("sweep: reading its data", "lines"),
                                           ("sweep: reading its data", None)]
    used[0][2]("x")
    assert lines[-1] == "x"  # written through the sweep's echo
