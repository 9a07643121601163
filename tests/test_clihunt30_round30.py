"""Round 30, CLI hunt: the config from standard input (``depthlab run -``), the exit status of
a diverged run, ``export --to`` over a user's own files."""

from __future__ import annotations

import io
import json
import sys

import numpy as np
import pandas as pd
from helpers.cli import TINY, assert_one_line_error, one_blas_thread, run_cli

QUICK = TINY.replace("every = 5", "every = 0")
"""The tiny run without probes (no probe kernels to load: milliseconds)."""
DIVERGES = QUICK.replace("batch_size = 50\n", 'batch_size = 50\nlr = 1e9\nloss = "mse"\n')
"""The tiny run with a step of 1e9: its loss is infinite at the third step."""


def tiny_run(tmp_path, capsys) -> tuple[str, str]:
    """A finished `depthlab run` of :data:`QUICK`: (its id, its results folder)."""
    (tmp_path / "tiny.toml").write_text(QUICK)
    out = str(tmp_path / "out")
    code, printed, err = run_cli(capsys, "run", tmp_path / "tiny.toml", "--out", out,
                                 "--quiet", "--json")
    assert code == 0, err
    return json.loads(printed)["id"], out


class _Stdin(io.TextIOWrapper):
    """A ``sys.stdin`` holding ``text`` (its ``buffer`` too)."""

    def __init__(self, text: str) -> None:
        super().__init__(io.BytesIO(text.encode("utf-8")), encoding="utf-8")


def test_run_reads_its_config_from_stdin_as_the_same_run_as_the_file(tmp_path, capsys,
                                                                    monkeypatch):
    # `generate | depthlab run -` said "config file '-' not found" (exit 2)
    one_blas_thread(monkeypatch)
    rid, out = tiny_run(tmp_path, capsys)  # the file's run
    monkeypatch.setattr(sys, "stdin", _Stdin(QUICK))
    code, _, err = run_cli(capsys, "run", "-", "--out", tmp_path / "piped", "--quiet", "--json")
    piped = json.loads(_)
    assert code == 0, err
    assert piped["id"] == rid and piped["status"] == "finished"
    # the same run: refused as already stored in the file's store
    monkeypatch.setattr(sys, "stdin", _Stdin(QUICK))
    code, _, err = run_cli(capsys, "run", "-", "--out", out, "--quiet")
    assert_one_line_error(code, err, rid, "--overwrite")


def test_a_json_config_from_stdin_and_its_errors_name_stdin(tmp_path, capsys, monkeypatch):
    one_blas_thread(monkeypatch)
    cfg = {"data": {"name": "spirals", "n": 200}, "model": {"sizes": ["auto", 8, "auto"]},
           "train": {"epochs": 1, "lr": -1}}
    monkeypatch.setattr(sys, "stdin", _Stdin(json.dumps(cfg)))
    code, _, err = run_cli(capsys, "run", "-", "--out", tmp_path / "o", "--quiet")
    assert_one_line_error(code, err, "<stdin>: train.lr = -1", "> 0")
    assert not (tmp_path / "o").exists()
    # nothing piped in, or stdin closed (`<&-`: sys.stdin is None, was an internal error)
    for stdin, said in ((_Stdin(""), "standard input is empty"),
                        (None, "standard input is closed")):
        monkeypatch.setattr(sys, "stdin", stdin)
        code, _, err = run_cli(capsys, "run", "-", "--out", tmp_path / "o", "--quiet")
        assert_one_line_error(code, err, f"<stdin>: {said}")
    # a sweep from stdin: its grid's points stored
    grid = QUICK + '[sweep]\n"train.seed" = [0, 1]\n'
    monkeypatch.setattr(sys, "stdin", _Stdin(grid))
    code, out, err = run_cli(capsys, "sweep", "-", "--out", tmp_path / "s", "--quiet", "--json")
    assert code == 0, err
    assert json.loads(out)["counts"] == {"finished": 2}


def test_a_diverged_run_exits_3_and_says_so_in_its_help(tmp_path, capsys, monkeypatch):
    # a run whose loss became infinite exited 0, as a finished one: `depthlab run cfg &&
    # depthlab predict ...` went on to a network that was never saved
    one_blas_thread(monkeypatch)
    (tmp_path / "div.toml").write_text(DIVERGES)
    code, out, err = run_cli(capsys, "run", tmp_path / "div.toml", "--out", tmp_path / "o",
                             "--quiet", "--json")
    assert code == 3, err
    rec = json.loads(out)
    assert rec["status"] == "diverged" and rec["network"] is None
    assert "diverged at step 3" in err
    code, out, _ = run_cli(capsys, "runs", tmp_path / "o", "--json")
    assert code == 0 and [r["status"] for r in json.loads(out)] == ["diverged"]
    # a sweep whose points diverge: they are its results (exit 0), a failed point is 1
    (tmp_path / "grid.toml").write_text(DIVERGES + '[sweep]\n"train.lr" = [1e9, 0.1]\n')
    code, out, err = run_cli(capsys, "sweep", tmp_path / "grid.toml", "--out", tmp_path / "s",
                             "--quiet", "--json")
    assert code == 0, err
    assert json.loads(out)["counts"] == {"diverged": 1, "finished": 1}
    code, helptext, _ = run_cli(capsys, "run", "--help")
    helptext = " ".join(helptext.split())
    assert code == 0
    assert "3 diverged (stored as diverged, no network saved)" in helptext


def test_export_to_a_folder_holding_the_users_own_runs_csv_is_refused(tmp_path, capsys,
                                                                    monkeypatch):
    # `depthlab export results --to .` replaced the user's own runs.csv without a word
    one_blas_thread(monkeypatch)
    rid, out = tiny_run(tmp_path, capsys)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "runs.csv").write_text("my,own\n1,2\n")
    code, _, err = run_cli(capsys, "export", out, "--to", mine)
    assert_one_line_error(code, err, "runs.csv", "--force")
    assert (mine / "runs.csv").read_text() == "my,own\n1,2\n"
    assert sorted(p.name for p in mine.iterdir()) == ["runs.csv"]
    # --force replaces it; the export's numbers are the stored run's
    code, printed, err = run_cli(capsys, "export", out, "--to", mine, "--force")
    assert code == 0, err
    assert str(mine / "runs.csv") in printed.split()
    runs = pd.read_csv(mine / "runs.csv")
    code, listed, _ = run_cli(capsys, "runs", out, "--json")
    stored = json.loads(listed)[0]
    assert runs["id"].tolist() == [rid]
    for key in ("train_loss", "val_acc", "test_acc"):
        assert np.isclose(runs[key][0], stored["metrics"][key], rtol=1e-12), key
    # an earlier export's folder is replaced without --force, as the default one is
    code, _, err = run_cli(capsys, "export", out, "--to", mine)
    assert code == 0, err
    for _ in range(2):
        code, _, err = run_cli(capsys, "export", out)
        assert code == 0, err
    # the default folder named with --to, as an older depthlab left it (no marker): its own
    (tmp_path / "out" / "export" / ".depthlab-export").unlink()
    code, _, err = run_cli(capsys, "export", out, "--to", tmp_path / "out" / "export")
    assert code == 0, err


def test_data_subsampled_to_one_class_is_refused_as_a_file_of_one_class(tmp_path, capsys,
                                                                       monkeypatch):
    # data.n = 1 (digits, or a file of two classes) trained a classifier on one row of one
    # class ("finished", train_acc 1), while a data file of one class is refused when loaded
    one_blas_thread(monkeypatch)
    rows = "".join(f"{i},{i % 3},{i % 2}\n" for i in range(20))
    (tmp_path / "two.csv").write_text("a,b,label\n" + rows)
    (tmp_path / "one.toml").write_text(QUICK.replace('name = "spirals"\nn = 200',
                                                    'path = "two.csv"\nn = 1'))
    code, _, err = run_cli(capsys, "run", tmp_path / "one.toml", "--out", tmp_path / "o")
    assert_one_line_error(code, err, "two.csv (n=1)", "a single class", "at least 2 classes")
    from depthlab.data import load_dataset

    d = load_dataset(str(tmp_path / "two.csv"), n=10, seed=0)  # both classes kept: as before
    assert len(np.unique(np.concatenate([d.y_train, d.y_val, d.y_test]))) == 2


def test_init_dash_prints_the_starter_config_that_run_dash_reads(tmp_path, capsys,
                                                                 monkeypatch):
    # `depthlab init -` wrote a file named "-.toml"; with `run -` reading stdin, it prints
    import tomllib

    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, "init", "-")
    assert code == 0, err
    assert tomllib.loads(out)["name"] == "starter" and "THIS_FILE" not in out
    assert list(tmp_path.iterdir()) == []


def test_a_parquet_export_does_not_make_the_users_csv_files_an_exports(tmp_path, capsys,
                                                                       monkeypatch):
    # the marker names the files exports wrote: a Parquet export beside the user's runs.csv
    # leaves that file the user's
    import pytest

    pytest.importorskip("pyarrow")
    one_blas_thread(monkeypatch)
    _, out = tiny_run(tmp_path, capsys)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "runs.csv").write_text("my,own\n")
    code, _, err = run_cli(capsys, "export", out, "--to", mine, "--format", "parquet")
    assert code == 0, err
    code, _, err = run_cli(capsys, "export", out, "--to", mine)
    assert_one_line_error(code, err, "runs.csv", "--force")
    assert (mine / "runs.csv").read_text() == "my,own\n"
    code, _, err = run_cli(capsys, "export", out, "--to", mine, "--format", "parquet")
    assert code == 0, err  # its own files: replaced


def test_a_large_grid_with_stdin_closed_asks_for_limit_or_yes(tmp_path, capsys, monkeypatch):
    # `depthlab sweep big.toml <&-` (a cron job, nohup): sys.stdin is None and the
    # confirmation's isatty() was an internal error (exit 1)
    values = ", ".join(str(v) for v in range(400))
    (tmp_path / "big.toml").write_text(
        '[data]\nname = "spirals"\n[model]\nsizes = ["auto", 4, "auto"]\n[sweep]\n'
        f'"train.seed" = [{values}]\n"data.seed" = [{values}]\n')
    monkeypatch.setattr(sys, "stdin", None)
    code, _, err = run_cli(capsys, "sweep", tmp_path / "big.toml", "--out", tmp_path / "out")
    assert_one_line_error(code, err, "160,000 points", "--limit N", "--yes")
    assert not (tmp_path / "out").exists()
