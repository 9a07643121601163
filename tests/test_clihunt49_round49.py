"""Round 49 CLI/store hunt: ASCII-only output streams with unicode names, init of every
shipped example, pipes that close early."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

from depthlab.cli import main
from depthlab.experiments.store import RunRecord, Store

TINY_SWEEP = """name = "tiny"
[data]
name = "clusters"
n = 60
[model]
sizes = ["auto", 4, "auto"]
[train]
epochs = 1
batch_size = 20
[probes]
every = 0
[sweep]
"train.lr" = [0.01, 0.1]
"train.seed" = [0]
"""


def _depthlab(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """``python -m depthlab ARGS`` in ``cwd`` with ``env`` added to the environment."""
    full = {**os.environ, "OMP_NUM_THREADS": "1", **env}
    full.pop("PYTHONUTF8", None)
    return subprocess.run([sys.executable, "-m", "depthlab", *args], cwd=cwd, env=full,
                          capture_output=True, timeout=300)


def _ascii_stdout() -> io.TextIOWrapper:
    """A stdout that can write ASCII only, as ``PYTHONIOENCODING=ascii`` gives."""
    return io.TextIOWrapper(io.BytesIO(), encoding="ascii", errors="strict")


def _unicode_store(folder: Path) -> None:
    with Store(folder) as store:
        store.add_run(RunRecord(id="a1b2c3d4e5f6", name="nämé☃", status="finished"))


def test_runs_of_a_unicode_name_on_an_ascii_stdout(tmp_path, monkeypatch, capsys):
    _unicode_store(tmp_path / "r")
    out = _ascii_stdout()
    monkeypatch.setattr(sys, "stdout", out)
    code = main(["runs", str(tmp_path / "r")])
    out.flush()
    text = out.buffer.getvalue().decode("ascii")
    assert code == 0, capsys.readouterr().err  # was 1: "UnicodeEncodeError ... internal error"
    assert "n\\xe4m\\xe9\\u2603" in text
    assert out.errors == "strict"  # set back after the command


def test_init_with_a_unicode_name_under_pythonioencoding_ascii(tmp_path):
    done = _depthlab(["init", "ä-x"], tmp_path, PYTHONIOENCODING="ascii")
    assert done.returncode == 0, done.stderr  # was 1, after writing the file
    assert (tmp_path / "ä-x.toml").is_file()
    assert done.stdout.decode("ascii").startswith("wrote \\xe4-x.toml; ")
    assert done.stderr == b""


def test_sweep_under_pythonioencoding_ascii(tmp_path):
    """Any sweep of two or more keys printed its size line with "×" first: it failed before
    running a point (exit 1), with ASCII names only."""
    (tmp_path / "g.toml").write_text(TINY_SWEEP, encoding="utf-8")
    done = _depthlab(["sweep", "g.toml", "--out", "r", "--limit", "1"], tmp_path,
                     PYTHONIOENCODING="ascii")
    assert done.returncode == 0, done.stderr
    assert b"\\xd7" in done.stdout and b"1 finished" in done.stdout
    with Store(tmp_path / "r", create=False) as store:
        assert len(store.runs()) == 1


def test_a_utf8_stdout_is_left_as_it_is(tmp_path, monkeypatch, capsys):
    _unicode_store(tmp_path / "r")
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict")
    monkeypatch.setattr(sys, "stdout", out)
    assert main(["runs", str(tmp_path / "r")]) == 0
    out.flush()
    assert "nämé☃" in out.buffer.getvalue().decode("utf-8")


def test_init_example_starter_writes_starter_toml(tmp_path, monkeypatch, capsys):
    """``--list`` names starter.toml, and ``--example EX`` without NAME writes the example's
    own file name; for the starter it was "give NAME" (exit 2)."""
    monkeypatch.chdir(tmp_path)
    assert main(["init", "--example", "starter"]) == 0, capsys.readouterr().err
    text = (tmp_path / "starter.toml").read_text(encoding="utf-8")
    assert 'name = "starter"' in text and "THIS_FILE" not in text
    assert main(["run", "starter.toml", "--out", "r", "-q"]) == 0


def test_export_to_a_file_name_is_refused(tmp_path, capsys):
    """``--to runs.csv`` made a folder named runs.csv holding runs.csv, steps.csv, ..."""
    _unicode_store(tmp_path / "r")
    for name in ("tables.csv", "out.PARQUET", "x.json"):
        code = main(["export", str(tmp_path / "r"), "--to", str(tmp_path / name)])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1, err
        assert name in err and "expected a folder" in err
        assert not (tmp_path / name).exists()
    (tmp_path / "old.csv").mkdir()  # an existing folder of such a name: written into
    assert main(["export", str(tmp_path / "r"), "--to", str(tmp_path / "old.csv")]) == 0
    assert (tmp_path / "old.csv" / "runs.csv").is_file()
    assert main(["export", str(tmp_path / "r"), "--to", str(tmp_path / "v1.2")]) == 0


def test_a_long_export_says_which_table_it_writes(tmp_path, monkeypatch, capsys):
    """An export of a 5000-run store (12M histogram rows) was silent for over ten minutes."""
    import time

    from depthlab.cli import export as export_cli

    _unicode_store(tmp_path / "r")
    slow = Store._write_table

    def write_slowly(self, name, fh, fmt):
        time.sleep(0.3)
        return slow(self, name, fh, fmt)

    monkeypatch.setattr(Store, "_write_table", write_slowly)
    monkeypatch.setattr(export_cli, "LINE_EVERY_S", 0.1, raising=False)
    assert main(["export", str(tmp_path / "r"), "--to", str(tmp_path / "e")]) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("export: ")]
    assert lines, err
    assert "\r" not in err
    assert any("; writing histograms.csv, file 6 of 9" in line for line in lines), lines
    assert (tmp_path / "e" / "histograms.csv").is_file()
