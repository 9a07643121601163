"""Run ids follow the contents of a user's data file: an edited CSV is not taken for the data
of runs already stored (a sweep re-runs its points), an unchanged one keeps its ids."""

from __future__ import annotations

import numpy as np

from depthlab.data.fingerprint import digest
from depthlab.experiments import validate
from depthlab.experiments.config import run_id
from depthlab.experiments.store import Store
from tests.helpers.cli import run_cli


def _write_csv(path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((40, 3))
    y = (x[:, 0] > 0).astype(int)
    lines = ["a,b,c,label"] + [f"{r[0]:.6f},{r[1]:.6f},{r[2]:.6f},{t}" for r, t in zip(x, y)]
    path.write_text("\n".join(lines) + "\n")


def _config(path) -> dict:
    return validate({"data": {"path": str(path), "label": "label"},
                     "model": {"sizes": ["auto", 4, "auto"]},
                     "train": {"loss": "cross_entropy", "epochs": 1, "batch_size": 20}})


def test_the_run_id_changes_with_the_file_contents_only(tmp_path):
    csv = tmp_path / "d.csv"
    _write_csv(csv, 0)
    first = run_id(_config(csv))
    assert run_id(_config(csv)) == first  # same bytes, same id
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "d.csv").write_bytes(csv.read_bytes())
    assert digest(copy / "d.csv") == digest(csv)
    _write_csv(csv, 1)
    assert run_id(_config(csv)) != first
    _write_csv(csv, 0)  # the old contents again: the old id
    assert run_id(_config(csv)) == first
    assert digest(tmp_path / "missing.csv") is None
    folder = digest(copy)
    (copy / "e.bin").write_bytes(b"x")
    assert digest(copy) != folder


def test_a_sweep_on_an_edited_file_runs_its_points_again(tmp_path, capsys):
    csv = tmp_path / "d.csv"
    _write_csv(csv, 0)
    cfg = tmp_path / "s.toml"
    cfg.write_text(f'name = "fp"\n[data]\npath = "{csv}"\nlabel = "label"\n'
                   '[model]\nsizes = ["auto", 4, "auto"]\n'
                   '[train]\nloss = "cross_entropy"\nepochs = 1\nbatch_size = 20\n'
                   '[sweep]\n"train.lr" = [0.01, 0.1]\n')
    out = tmp_path / "runs"
    code, _, err = run_cli(capsys, "sweep", cfg, "--out", out, "--yes")
    assert code == 0, err
    code, _, err = run_cli(capsys, "sweep", cfg, "--out", out, "--yes")
    assert code == 0, err
    with Store(out / "depthlab.db") as store:
        assert len(store.statuses()) == 2  # unchanged data: both points found finished
    _write_csv(csv, 1)
    code, _, err = run_cli(capsys, "sweep", cfg, "--out", out, "--yes")
    assert code == 0, err
    with Store(out / "depthlab.db") as store:
        assert len(store.statuses()) == 4  # the edited file's points ran, the old ones kept
