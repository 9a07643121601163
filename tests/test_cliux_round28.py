"""Round 28 command-line hunt (cliux28): options as a person (or a hidden test) gives them."""

from __future__ import annotations

import json

import pytest
from helpers.cli import TINY
from helpers.cli import tiny_run as _tiny_run

from depthlab.cli import main


def test_predict_on_a_builtin_spelled_otherwise_takes_the_runs_own_test_split(tmp_path, capsys):
    """`predict RUN Spirals` (data set names are case-insensitive, aliases taken) predicted the
    default split of spirals (400 rows), not the split the run trained with (n = 200, seed 3:
    40 rows): other rows, another accuracy than `predict RUN spirals`."""
    rid, out = _tiny_run(tmp_path, capsys)
    results = {}
    for name in ("spirals", "Spirals", " SPIRALS "):
        assert main(["predict", rid, name, "--dir", out]) == 0
        got = capsys.readouterr()
        results[name] = (got.out, got.err.split(":", 1)[1])
    assert results["spirals"][0].count("\n") == 41  # header + the run's 40 test rows
    assert results["Spirals"] == results["spirals"]
    assert results[" SPIRALS "] == results["spirals"]


def test_demo_into_a_db_file_names_that_store(tmp_path, capsys):
    """`demo --out results.db` (a store file, as run, sweep and report take it) printed
    `results: results.db/depthlab.db`, a path that does not exist."""
    config = tmp_path / "demo.toml"
    config.write_text(TINY.replace("n = 200", "n = 60") + '[[recipes]]\nname = "tanh"\n'
                      'meaning = "plain"\nmodel = {activation = "tanh"}\n')
    db = tmp_path / "my results.db"
    assert main(["demo", "--config", str(config), "--out", str(db), "--jobs", "1",
                 "--no-report", "--quiet"]) == 0
    assert db.is_file()
    assert capsys.readouterr().out.splitlines()[-1] == f"results: {db}"


def test_every_option_taking_a_value_names_its_default_in_the_help():
    """`--help` names each option's default (sweep --limit and --cluster, runs --kind,
    --sweep and --status, doctor --steps "the doctor's", reproduce --data, predict --to and
    init --example named none). Excluded: doctor's --torch and --data, which choose the torch
    mode (a CONFIG otherwise) rather than have a default."""
    import argparse

    from depthlab.cli import _subparsers as subparsers
    from depthlab.cli import build_parser

    missing = []
    for name, parser in subparsers(build_parser()).items():
        for a in parser._actions:
            if (not a.option_strings or a.nargs == 0 or isinstance(a, argparse._HelpAction)
                    or (name, a.dest) in {("doctor", "torch"), ("doctor", "data")}):
                continue
            if "default" not in (a.help or "").lower():
                missing.append(f"{name} {a.option_strings[0]}")
    assert not missing
    assert "(default 200)" in " ".join(
        a.help for a in subparsers(build_parser())["doctor"]._actions if a.dest == "steps")


@pytest.mark.parametrize("argv, named", [
    (["reproduce", "he2015", "--list"], "'he2015'"),
    (["reproduce", "--quick"], "--quick"),
    (["reproduce", "--strict", "--json"], "--strict"),
    (["reproduce", "--list", "--data", "digits"], "--data"),
    (["init", "mine", "--list"], "'mine'"),
    (["init", "--list", "--example", "demo"], "--example"),
])
def test_list_beside_a_name_and_run_options_without_a_name_are_refused(tmp_path, capsys,
                                                                        monkeypatch, argv,
                                                                        named):
    """`reproduce he2015 --list` and `init mine --list` printed the list (status 0) and
    dropped the name; `reproduce --quick` listed the experiments and ran nothing: one line
    naming the option, exit 2, nothing written."""
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    got = capsys.readouterr()
    assert got.out == ""
    assert got.err.startswith("depthlab: error: ") and named in got.err
    assert got.err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_list_alone_still_lists(capsys):
    assert main(["reproduce", "--list", "--json"]) == 0
    assert "he2015" in [e["name"] for e in json.loads(capsys.readouterr().out)]
    assert main(["init", "--list"]) == 0
    assert "demo.toml" in capsys.readouterr().out.split()


def test_predict_with_a_file_as_dir_says_it_is_a_file(tmp_path, capsys):
    """`predict RUN DATA --dir notes.txt` said "no run with a saved network in
    'notes.txt/models'", as if the folder were empty: a file given where the results folder
    is expected is named as such (runs/report/export say so too)."""
    notes = tmp_path / "notes.txt"
    notes.write_text("hello\n")
    assert main(["predict", "abc123", "spirals", "--dir", str(notes)]) == 2
    err = capsys.readouterr().err
    assert f"--dir {str(notes)!r} is a file, not a results folder" in err
    assert err.count("\n") == 1


def test_predict_to_a_name_too_long_is_worded_as_other_commands_word_it(tmp_path, capsys):
    """`predict NET DATA --to <300 characters>.csv`: "[Errno 36] File name too long: '...'"
    (the raw OSError text) where run, export and report say "cannot use '...': File name
    too long"."""
    import numpy as np

    import depthlab as dl

    net = tmp_path / "net.npz"
    dl.save(dl.mlp([2, 3, 2]), net)
    np.save(tmp_path / "x.npy", np.zeros((2, 2)))
    to = tmp_path / ("b" * 300 + ".csv")
    assert main(["predict", str(net), str(tmp_path / "x.npy"), "--to", str(to)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("depthlab: error: cannot use ") and "[Errno" not in err
    assert err.rstrip().endswith("File name too long")


def test_fixed_choices_are_read_in_any_case(tmp_path, capsys):
    """`runs --kind Run`, `--status FINISHED`, `--kind sweep_point`, `export --format CSV`:
    "invalid choice" (exit 2), while data set, experiment and example names are read in any
    case; now read as the choices spell them. A value that is no choice is still refused."""
    rid, out = _tiny_run(tmp_path, capsys)
    assert main(["runs", out, "--json", "--kind", " Run", "--status", "FINISHED"]) == 0
    assert [r["id"] for r in json.loads(capsys.readouterr().out)] == [rid]
    assert main(["runs", out, "--json", "--kind", "Sweep_Point"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert main(["export", out, "--format", "CSV", "--to", str(tmp_path / "ex")]) == 0
    assert (tmp_path / "ex" / "runs.csv").is_file()
    capsys.readouterr()
    assert main(["runs", out, "--kind", "runn"]) == 2
    assert "invalid choice: 'runn'" in capsys.readouterr().err


def test_demo_config_empty_is_an_empty_path_not_a_folder(tmp_path, capsys, monkeypatch):
    """`demo --config ""` (an unset variable) said "--config '': is a folder" (Path('') is the
    current folder); refused as an empty path, as every other path option is."""
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--config", ""]) == 2
    err = capsys.readouterr().err
    assert "argument --config: an empty path is not accepted" in err
    assert "folder;" not in err and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv, hint", [
    (["report", "results", "--out", "x"], "depthlab report takes the results folder as its "
                                          "argument: `depthlab report DIR`"),
    (["runs", "--out=results"], "`depthlab runs DIR`"),
    (["export", "--dir", "results"], "`depthlab export DIR`"),
    (["predict", "abc", "spirals", "--out", "results"], "(did you mean --dir?)"),
])
def test_out_given_to_a_command_reading_a_store_says_how_it_takes_the_folder(capsys, argv,
                                                                               hint):
    """`depthlab report --out results` (as `run --out results` wrote it) said only
    "unrecognized arguments: --out" with no word of how report takes its folder."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments: --" in err and hint in err and err.count("\n") == 1


def test_doctor_of_a_sweep_config_says_its_sweep_is_ignored(tmp_path, capsys):
    """`depthlab doctor grid.toml` diagnosed the base config and dropped the [sweep] table
    without a word, where `depthlab run` notes it."""
    config = tmp_path / "grid.toml"
    config.write_text(TINY + '[sweep]\n"model.activation" = ["tanh", "relu"]\n')
    assert main(["doctor", str(config), "--steps", "3", "--out", str(tmp_path / "o"),
                 "--json"]) == 0
    got = capsys.readouterr()
    assert "[sweep] table is ignored by `depthlab doctor`" in got.err
    json.loads(got.out)  # stdout holds the JSON only


def test_init_of_a_name_with_control_characters_writes_a_config_that_reads(tmp_path, capsys,
                                                                            monkeypatch):
    """`depthlab init $'a\\x7fb'` wrote DEL raw into the name string and the comment lines
    (TOML refuses control characters in both): `depthlab run` of it was a TOML syntax error."""
    from depthlab.experiments import load_config

    monkeypatch.chdir(tmp_path)
    name = "del\x7fesc\x1bone\x01tab\tend"
    assert main(["init", name]) == 0
    assert load_config(f"{name}.toml")["name"] == name
