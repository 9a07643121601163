"""The ``depthlab`` command line, run as ``python -m depthlab`` in subprocesses (runs,
sweeps, exit statuses of real processes); the listings that check what a run stored, and the
one-line refusals of bad configs and arguments, in this process (``depthlab.cli.main``: the
same status and output; ``test_debug_shows_traceback`` refuses a config in a real process)."""

from __future__ import annotations

import json
import sqlite3

import pandas as pd
import pytest
from helpers.cli import assert_one_line_error, cli, one_blas_thread, run_cli

TINY = """\
name = "tiny"
[data]
name = "clusters"
n = 300
options = {{d = 8, n_classes = 3}}
[model]
sizes = {sizes}
activation = "{act}"
init = "glorot_uniform"
[train]
lr = {lr}
batch_size = 16
epochs = 1
[probes]
every = {every}
"""


def tiny(tmp_path, name="c.toml", sizes='["auto", 8, "auto"]', lr=0.1, every=0,
         extra="", act="tanh") -> str:
    path = tmp_path / name
    path.write_text(TINY.format(sizes=sizes, lr=lr, every=every, act=act) + extra)
    return str(path)


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory):
    """One finished run (with probes) in a results folder, shared by the read-only tests."""
    tmp = tmp_path_factory.mktemp("cli")
    cfg = tiny(tmp, every=5, extra="jacobian = true\n")
    res = cli("run", cfg, "--out", tmp / "out")
    assert res.returncode == 0, res.stderr
    assert "finished" in res.stdout and "test_acc=" in res.stdout
    return tmp / "out"


def test_run_writes_store(store_dir):
    conn = sqlite3.connect(store_dir / "depthlab.db")
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    (rid, status, kind, metrics), = conn.execute(
        "SELECT id, status, kind, metrics FROM runs").fetchall()
    m = json.loads(metrics)
    assert status == "finished" and kind == "run" and len(rid) == 12
    assert 0.0 <= m["test_acc"] <= 1.0 and m["test_loss"] > 0 and m["steps"] == 14
    n_steps = conn.execute("SELECT COUNT(*) FROM steps WHERE run_id = ?", (rid,)).fetchone()[0]
    assert n_steps == m["steps"]
    assert conn.execute("SELECT COUNT(*) FROM epochs").fetchone()[0] == 1
    quantities = {q for (q,) in conn.execute("SELECT DISTINCT quantity FROM probes")}
    assert {"act_std", "grad_pre_std", "loss"} <= quantities
    assert conn.execute("SELECT COUNT(*) FROM jacobian").fetchone()[0] > 0
    conn.close()


def test_runs_json_structure(store_dir, capsys):
    res = cli("runs", store_dir, "--json")
    assert res.returncode == 0, res.stderr
    runs = json.loads(res.stdout)
    assert isinstance(runs, list) and len(runs) == 1
    r = runs[0]
    for key in ("id", "status", "config", "metrics", "train_loss", "val_acc", "test_acc",
                "name", "kind", "created"):
        assert key in r, key
    assert r["status"] in ("finished", "diverged", "failed") and r["name"] == "tiny"
    assert r["config"]["model"]["sizes"] == [8, 8, 3]  # "auto" resolved from the data
    for k in ("train_loss", "val_acc", "test_acc"):
        assert r[k] == r["metrics"][k] and isinstance(r[k], float)
    code, table, err = run_cli(capsys, "runs", store_dir)
    assert code == 0 and r["id"] in table and "test_acc" in table, err


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_export(store_dir, tmp_path, fmt, capsys, monkeypatch):
    if fmt == "parquet":
        import pyarrow  # noqa: F401  (a dev dependency: required)
    one_blas_thread(monkeypatch)
    code, _, err = run_cli(capsys, "export", store_dir, "--format", fmt, "--to", tmp_path / "x")
    assert code == 0, err
    read = pd.read_csv if fmt == "csv" else pd.read_parquet
    runs = read(tmp_path / "x" / f"runs.{fmt}")
    assert len(runs) == 1 and "test_acc" in runs.columns
    probes = read(tmp_path / "x" / f"probes.{fmt}")
    assert set(probes.columns) >= {"run_id", "step", "layer", "quantity", "value"}
    assert len(probes) > 0


def test_datasets(capsys):
    res = cli("datasets")
    assert res.returncode == 0, res.stderr
    assert "digits" in res.stdout and "clusters" in res.stdout and "64" in res.stdout
    code, out, err = run_cli(capsys, "datasets", "--json")
    assert code == 0, err
    js = json.loads(out)
    assert {d["name"] for d in js} >= {"digits", "clusters"}


def test_diverged_run_recorded(tmp_path, capsys):
    cfg = tiny(tmp_path, lr=1e9, sizes='["auto", 8, 8, "auto"]', act="relu")
    res = cli("run", cfg, "--out", tmp_path / "o", "--quiet")
    assert res.returncode == 3, res.stderr  # round 30: a diverged run is no success (was 0)
    assert "diverged" in res.stderr
    runs = json.loads(run_cli(capsys, "runs", tmp_path / "o", "--json")[1])
    assert [r["status"] for r in runs] == ["diverged"]
    assert runs[0]["divergence"]["step"] >= 1


BAD_CONFIGS = {
    "unknown key": ('[data]\nname = "clusters"\n[model]\nsizes = ["auto", "auto"]\n'
                    'actvation = "relu"\n', ["unknown key 'model.actvation'", "activation"]),
    "bad value": ('[data]\nname = "clusters"\n[model]\nsizes = ["auto", "auto"]\n[train]\n'
                  'lr = -1\n', ["train.lr = -1", "> 0"]),
    "bad name": ('[data]\nname = "clusters"\n[model]\nsizes = ["auto", "auto"]\n'
                 'activation = "rleu"\n', ["model.activation", "rleu", "relu"]),
    "syntax": ('[data]\nname = "clusters"\n[model\n', ["TOML syntax error", "line 3"]),
    "size mismatch": ('[data]\nname = "clusters"\nn = 100\n[model]\nsizes = [5, 4, "auto"]\n',
                      ["model.sizes[0] = 5", "64 input features"]),
    "unknown data set": ('[data]\nname = "mnist9"\n[model]\nsizes = ["auto", "auto"]\n',
                         ["data.name", "mnist9", "digits"]),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_bad_config_exit_2(tmp_path, case, capsys, monkeypatch):
    text, fragments = BAD_CONFIGS[case]
    path = tmp_path / "bad.toml"
    path.write_text(text)
    one_blas_thread(monkeypatch)
    code, _, err = run_cli(capsys, "run", path, "--out", tmp_path / "o")
    assert_one_line_error(code, err, *fragments)
    assert not (tmp_path / "o").exists()  # nothing written for a rejected config


@pytest.mark.parametrize("args,fragments", [
    (["run", "missing.toml"], ["missing.toml", "not found"]),
    (["run"], ["config"]),
    (["frobnicate"], ["frobnicate"]),
    (["runs", "no-such-dir"], ["no results store"]),
    (["export", "no-such-dir", "--format", "xlsx"], ["xlsx"]),
    (["report", "no-such-dir"], ["no results store"]),
    (["sweep", "c.toml", "--jobs", "0"], ["--jobs 0"]),
    (["sweep", "c.toml"], ["no [sweep] table"]),
])
def test_user_errors_exit_2(tmp_path, args, fragments, capsys, monkeypatch):
    tiny(tmp_path)
    monkeypatch.chdir(tmp_path)
    one_blas_thread(monkeypatch)
    code, _, err = run_cli(capsys, *args)
    assert_one_line_error(code, err, *fragments)


def test_debug_shows_traceback(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(BAD_CONFIGS["size mismatch"][0])
    res = cli("run", path, "--out", tmp_path / "o", "--debug")
    assert res.returncode == 2 and "Traceback" in res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith("depthlab: error:")


def test_every_command_module_is_one_subcommand(capsys):
    from depthlab import cli as cli_mod

    cmds = cli_mod.commands()
    assert [c.name for c in cmds] == [m for m in cli_mod.COMMAND_MODULES]
    parser = cli_mod.build_parser()
    for c in cmds:  # each parses its own --help and exits 0
        with pytest.raises(SystemExit) as e:
            parser.parse_args([c.name, "--help"])
        assert e.value.code == 0
    capsys.readouterr()
    assert cli_mod.main(["run"]) == 2  # argparse errors are one line, status 2
    err = capsys.readouterr().err
    assert err.startswith("depthlab: error:") and len(err.strip().splitlines()) == 1


def test_doctor_command(tmp_path, capsys):
    cfg = tiny(tmp_path, sizes='["auto", 8, 8, 8, "auto"]')
    res = cli("doctor", cfg, "--out", tmp_path / "o", timeout=300)
    assert res.returncode == 0, res.stderr
    runs = json.loads(run_cli(capsys, "runs", tmp_path / "o", "--json")[1])
    assert [r["kind"] for r in runs] == ["doctor"]
    conn = sqlite3.connect(tmp_path / "o" / "depthlab.db")
    (payload,), = conn.execute("SELECT payload FROM findings").fetchall()
    diagnosis = json.loads(payload)
    assert isinstance(diagnosis, dict) and "findings" in diagnosis
    # the doctor's probe table is stored with it, so the report can draw its figures
    (n_probes,), = conn.execute("SELECT COUNT(*) FROM probes").fetchall()
    assert n_probes > 0


def test_demo_quick(tmp_path, capsys):
    res = cli("demo", "--out", tmp_path / "d", "--epochs", "1", "--no-report", "--jobs", "2")
    assert res.returncode == 0, res.stderr
    for recipe in ("sigmoid + glorot", "tanh + glorot", "relu + he",
                   "sigmoid + glorot + batchnorm"):  # the recipes of examples/demo.toml
        assert recipe in res.stdout
    runs = json.loads(run_cli(capsys, "runs", tmp_path / "d", "--json")[1])
    assert len(runs) == 4 and {r["sweep"] for r in runs} == {"demo"}
    assert all(r["config"]["model"]["depth"] == 20 for r in runs)
    assert all(r["status"] == "finished" for r in runs)
    # the gradient ratio at init, one line each: the naive sigmoid's vanishes, the cures flow
    ratios = {ln.split("  ratio")[0].strip(): float(ln.split("ratio")[1].split()[0])
              for ln in res.stdout.splitlines() if "  ratio " in ln}
    assert ratios["sigmoid + glorot"] < 1e-6
    assert all(0.1 < r < 10 for name, r in ratios.items() if name != "sigmoid + glorot")


def test_module_help():
    res = cli("--help")
    assert res.returncode == 0
    for name in ("run", "sweep", "runs", "export", "report", "doctor", "datasets", "demo"):
        assert name in res.stdout


def test_start_up_imports_no_numerics():
    """`import depthlab` and the parser import no numerical library: the command starts fast
    and a Ctrl-C during start-up reaches main() (exit 130, one line) instead of a traceback."""
    import subprocess
    import sys

    code = ("import sys, depthlab, depthlab.cli as c; c.build_parser(); "
            "print(sorted(m for m in ('numpy', 'pandas', 'scipy', 'matplotlib', 'torch') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
