"""Round 50 CLI/store hunt: paths with an unknown ``~user``, ..."""

from __future__ import annotations

from pathlib import Path

import pytest

import depthlab as dl
from depthlab.cli import main
from depthlab.experiments.store import RunRecord, Store

NO_SUCH_USER = "~nosuchuser-depthlab50"


def test_expand_home_keeps_an_unknown_user_as_written():
    from depthlab.atomic import expand_home

    assert expand_home(NO_SUCH_USER + "/runs") == Path(NO_SUCH_USER, "runs")
    assert expand_home("~") == Path.home()


def test_store_and_cli_paths_with_an_unknown_home(tmp_path, monkeypatch, capsys):
    """``--out ~nobody`` was "RuntimeError: Could not determine home directory. (internal
    error)", exit 1, in runs/export/report/run/sweep/predict --dir: ``Path.expanduser``
    raises where bash leaves the word as written."""
    monkeypatch.chdir(tmp_path)
    assert main(["runs", NO_SUCH_USER]) == 2  # was 1 (internal error)
    err = capsys.readouterr().err
    assert "no results store" in err and "internal error" not in err
    with Store(NO_SUCH_USER) as store:  # was RuntimeError
        store.add_run(RunRecord(id="a1b2c3d4e5f6", name="r", status="finished"))
    assert (tmp_path / NO_SUCH_USER / "depthlab.db").is_file()
    assert main(["runs", NO_SUCH_USER, "--json"]) == 0
    capsys.readouterr()
    assert main(["export", NO_SUCH_USER, "--to", NO_SUCH_USER + "/tables"]) == 0
    assert (tmp_path / NO_SUCH_USER / "tables" / "runs.csv").is_file()
    assert main(["predict", "abc", "digits", "--dir", NO_SUCH_USER + "x"]) == 2
    assert "internal error" not in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="no saved network"):  # was RuntimeError
        dl.load(NO_SUCH_USER + "/net.npz")


def test_run_points_refuses_a_bad_grid_or_limited_before_the_store(tmp_path):
    """``run_points(..., grid=5)`` was "AttributeError: 'int' object has no attribute
    'items'" after the store was created and the sweep's size recorded in it;
    ``limited="no"`` was taken as True."""
    from depthlab.experiments import run_points

    out = tmp_path / "store"
    for bad, kw in ((TypeError, {"grid": 5}), (TypeError, {"grid": {"train.lr": 0.1}}),
                    (TypeError, {"limited": "no"})):
        with pytest.raises(bad, match=f"{next(iter(kw))}.* has the wrong type"):
            run_points([], out, sweep="sw-x", echo=None, **kw)
        assert not out.exists()
    res = run_points([], out, sweep="sw-x", echo=None, grid={"train.lr": [0.1]}, limited=False)
    assert res.total == 0


def test_runs_table_columns_line_up_in_an_ascii_stdout(tmp_path, monkeypatch, capsys):
    """In an ASCII-only stdout a unicode name is written escaped (``\\xe4``) but its column was
    measured unescaped: the columns after it were shifted right of the header's."""
    import io
    import sys

    with Store(tmp_path / "r") as store:
        for rid, name in (("a1b2c3d4e5f6", "nämé☃"), ("b1b2c3d4e5f6", "plain")):
            store.add_run(RunRecord(id=rid, name=name, status="finished",
                                    metrics={"train_loss": 0.5}))
    out = io.TextIOWrapper(io.BytesIO(), encoding="ascii", errors="strict")
    monkeypatch.setattr(sys, "stdout", out)
    assert main(["runs", str(tmp_path / "r")]) == 0, capsys.readouterr().err
    out.flush()
    header, _rule, *rows = out.buffer.getvalue().decode("ascii").splitlines()
    assert any("n\\xe4m\\xe9\\u2603" in row for row in rows)
    assert [row.index("0.5") for row in rows] == [header.index("train_loss")] * 2


def _limited(limit: int):
    """A ``preexec_fn`` setting this address-space limit (``ulimit -v``) in the child."""
    import resource

    def set_limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return set_limit


def test_available_memory_and_run_respect_ulimit_v(tmp_path):
    """A ``ulimit -v`` below the machine's free memory was not read: ``available_memory()``
    said the machine's ``MemAvailable``, and a config that fits the machine but not the limit
    was accepted and ended in "MemoryError ... (internal error)", exit 1."""
    import os
    import subprocess
    import sys

    limit = 3 << 30
    env = {k: v for k, v in os.environ.items() if k != "DEPTHLAB_MEMORY_LIMIT"}
    env["OMP_NUM_THREADS"] = "1"
    probe = subprocess.run(
        [sys.executable, "-c", "from depthlab.memory import available_memory as a; print(a())"],
        capture_output=True, text=True, env=env, preexec_fn=_limited(limit), timeout=120)
    assert probe.returncode == 0, probe.stderr
    assert 0 <= int(probe.stdout) < limit
    config = tmp_path / "wide.toml"  # ~7.7 GB of float32 parameters and gradients
    config.write_text('name = "wide"\n[data]\nname = "digits"\n[model]\ndepth = 60\n'
                      'width = 4000\n[train]\nepochs = 1\n[probes]\nevery = 0\n')
    run = subprocess.run([sys.executable, "-m", "depthlab", "run", str(config), "--out",
                          str(tmp_path / "out"), "--quiet"], capture_output=True, text=True,
                         env=env, preexec_fn=_limited(limit), timeout=300)
    assert run.returncode == 2, run.stderr
    assert "needs about" in run.stderr and "nothing was allocated" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1


def _store_damaged_in_its_middle(folder: Path) -> Path:
    """A store of ~1 MB whose middle 40 KB are overwritten (its first pages intact)."""
    import numpy as np
    import pandas as pd

    with Store(folder) as store:
        for i in range(3):
            steps = pd.DataFrame({"step": np.arange(5000), "loss": np.linspace(1, 0, 5000)})
            store.add_run(RunRecord(id=f"{i:012x}", name=f"r{i}", status="finished",
                                    steps=steps))
    path = folder / "depthlab.db"
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.seek(size // 2)
        f.write(bytes(range(256)) * 160)
    return path


def test_run_and_sweep_refuse_a_store_damaged_in_its_middle(tmp_path, capsys):
    """A store overwritten in its middle was written to: `run` and `sweep` exited 0 and
    changed it, while `export` and `report` refused it as malformed (clihunt48's left-alone
    item)."""
    path = _store_damaged_in_its_middle(tmp_path / "s")
    before = path.read_bytes()
    config = tmp_path / "c.toml"
    config.write_text('name = "c"\n[data]\nname = "clusters"\nn = 60\n[model]\n'
                      'sizes = ["auto", 4, "auto"]\n[train]\nepochs = 1\n[probes]\nevery = 0\n'
                      '[sweep]\n"train.lr" = [0.1]\n')
    assert main(["sweep", str(config), "--out", str(tmp_path / "s"), "--quiet"]) == 2
    assert main(["run", str(config), "--out", str(tmp_path / "s"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all("is damaged" in line for line in err), err
    assert path.read_bytes() == before
    with Store(tmp_path / "s") as store, pytest.raises(Exception, match="is damaged"):
        store.check_writable()
