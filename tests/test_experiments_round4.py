"""Adversarial tests of experiments run by a user who outgrows one machine: sweep point names of
floats that ``{:g}`` prints alike, a store given as a ``.db`` file to every command that reads
or writes it, and the store's messages on a read-only disk. Each test failed before the fix it
names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.cli import one_blas_thread, run_cli

from depthlab.experiments import Store, expand, read_toml
from depthlab.experiments.grid import value_str

SWEEP = """\
name = "r4"
[data]
name = "spirals"
n = 60
[model]
sizes = ["auto", 4, "auto"]
[train]
max_steps = 2
batch_size = 8
[probes]
every = 1
batch = 5
[sweep]
{grid}
"""


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    one_blas_thread(monkeypatch)


def _config(tmp_path: Path, grid: str) -> Path:
    path = tmp_path / "sweep.toml"
    path.write_text(SWEEP.format(grid=grid))
    return path


# -- point names ------------------------------------------------------------------------------


def test_floats_that_print_alike_with_g_get_distinct_point_names(tmp_path, capsys):
    # {:g} printed 0.1 and 0.1000001 both as "0.1": two different runs named
    # "r4:lr=0.1" in `runs`, the report's headings and its figure file names
    cfg = _config(tmp_path, '"train.lr" = [0.1, 0.1000001, 1e-05, 1.000001e-05]')
    names = [p.name for p in expand(read_toml(cfg))]
    assert names == ["r4:lr=0.1", "r4:lr=0.1000001", "r4:lr=1e-05", "r4:lr=1.000001e-05"]
    code, _out, err = run_cli(capsys, "sweep", cfg, "--out", tmp_path / "o", "-q")
    assert code == 0, err
    with Store(tmp_path / "o", create=False) as s:
        assert sorted(s.runs()["name"]) == sorted(names)
    assert [value_str(v) for v in (0.5, 1e-30, 3.0, [64, 0.30000000000000004], True)] == \
        ["0.5", "1e-30", "3", "[64,0.30000000000000004]", "true"]


# -- a store named as a .db file --------------------------------------------------------------


def test_sweep_report_and_export_with_a_db_file_as_the_store(tmp_path, capsys):
    # sweep --json said "store": "o/r.db/depthlab.db" (a path that does not exist), and report
    # and export refused the same r.db ("a file with that name exists", "Not a directory")
    cfg = _config(tmp_path, '"train.seed" = [0, 1]')
    db = tmp_path / "o" / "r.db"
    code, out, err = run_cli(capsys, "sweep", cfg, "--out", db, "--json")
    assert code == 0, err
    assert json.loads(out)["store"] == str(db) and db.is_file()
    assert f"results: {db}\n" in err
    code, out, err = run_cli(capsys, "report", db, "-q")
    assert code == 0, err
    assert out.strip() == str(tmp_path / "o" / "report.html")
    assert (tmp_path / "o" / "report.html").is_file()
    code, out, err = run_cli(capsys, "export", db)
    assert code == 0, err
    assert Path(out.split()[0]).parent == tmp_path / "o" / "export"
    assert (tmp_path / "o" / "export" / "runs.csv").read_text().count("r4:seed=") == 2
