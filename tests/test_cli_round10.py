"""Round 10 CLI hardening: adversarial flags, config values, data files and stores, each a
regression test of a bug found (run in-process through :func:`depthlab.cli.main`)."""

from __future__ import annotations

import json

import pytest

from depthlab.cli import main


def _strict_json(text: str):
    """``json.loads`` that refuses NaN/Infinity (not JSON)."""

    def refuse(constant: str):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("argv", [["reproduce", "--list", "--json"], ["reproduce", "--json"]])
def test_reproduce_list_with_json_prints_a_json_list(argv, capsys):
    # was: the text table on stdout (not JSON) although --json was given
    assert main(argv) == 0
    listed = _strict_json(capsys.readouterr().out)
    names = [e["name"] for e in listed]
    assert "glorot2010" in names and all(e["title"] and e["paper"] for e in listed)


def _one_line_error(code: int, err: str, *parts: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("depthlab: error: "), err
    assert "Traceback" not in err
    for part in parts:
        assert part in lines[0], (part, lines[0])


@pytest.mark.parametrize("content", ["npy", "toml"])
def test_predict_with_a_model_file_that_is_no_npz_says_what_it_is(tmp_path, capsys, content):
    # was: "(only integers, slices (`:`), ellipsis (`...`) ... are valid indices)" for a .npy
    # and "(This file contains pickled (object) data. If you trust the file you can load it
    # unsafely ...)" for a text file given as RUN_OR_FILE
    import numpy as np

    model = tmp_path / ("net.npy" if content == "npy" else "run.toml")
    if content == "npy":
        np.save(model, np.ones((3, 2)))
    else:
        model.write_text('[data]\nname = "digits"\n')
    np.save(tmp_path / "x.npy", np.ones((2, 2)))
    code = main(["predict", str(model), str(tmp_path / "x.npy")])
    err = capsys.readouterr().err
    why = "a single .npy array" if content == "npy" else "not a .npz (zip) archive"
    _one_line_error(code, err, model.name, "is not a network saved by depthlab.save", why)
    assert "pickle" not in err and "indices" not in err


def test_a_store_locked_by_another_process_is_named_when_read_only_too(tmp_path):
    # `depthlab runs/export/report` open the store read-only: while another process held it
    # (EXCLUSIVE locking mode) that open waited silently and deaf to Ctrl-C, once per open
    # mode (twice the timeout), then said only "database is locked"
    import sqlite3
    import warnings

    from depthlab.experiments import Store
    from depthlab.experiments.store import StoreError

    Store(tmp_path).close()
    other = sqlite3.connect(tmp_path / "depthlab.db", isolation_level=None)
    try:
        other.execute("PRAGMA locking_mode=EXCLUSIVE")
        other.execute("BEGIN EXCLUSIVE")
        other.execute("CREATE TABLE other_program (a)")
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            with pytest.raises(StoreError, match="stayed locked by another process for 0.6 s"):
                Store(tmp_path, readonly=True, timeout=0.6)
        assert any("is locked by another process; waiting" in str(w.message) for w in seen)
    finally:
        other.execute("ROLLBACK")
        other.close()
    with Store(tmp_path, readonly=True, timeout=0.6) as store:  # readable once released
        assert len(store.runs()) == 0


@pytest.mark.parametrize(("name", "text"), [
    ("deep.json", '{"data": {"name": "digits", "options": {"a": ' + "[" * 5000 + "]" * 5000
     + "}}}"),
    ("deep.toml", "x = " + "[" * 5000 + "]" * 5000 + "\n"),
    ("name.toml", "name = " + "[" * 400 + "]" * 400 + '\n[data]\nname = "digits"\n'),
    ("sweep.toml", '[data]\nname = "digits"\n[model]\nsizes = ["auto", 4, "auto"]\n[sweep]\n'
     '"train.seed" = [' + "[" * 400 + "]" * 400 + "]\n"),
])
@pytest.mark.parametrize("command", ["run", "sweep"])
def test_a_config_nested_thousands_deep_is_one_line_not_an_internal_error(
        tmp_path, capsys, name, text, command):
    # was: exit 1, "RecursionError: maximum recursion depth exceeded (internal error ...)"
    # from the JSON/TOML parser or from the message naming the value
    (tmp_path / name).write_text(text)
    code = main([command, str(tmp_path / name), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    _one_line_error(code, err, name, "nested", "accepted: at most 32 levels")
    assert not (tmp_path / "out").exists()


def test_config_error_message_of_a_deeply_nested_value_is_short():
    from depthlab.spec import ConfigError, RunSpec

    value: list = []
    for _ in range(3000):
        value = [value]
    with pytest.raises(ConfigError, match=r"name = \[\[\[\[\[\[\[\[\[\.\.\.\]\]\]") as info:
        RunSpec.from_dict({"name": value, "data": {"name": "digits"},
                           "model": {"sizes": ["auto", 4, "auto"]}})
    assert len(str(info.value)) < 200


DEMO_BASE = ('[data]\nname = "clusters"\nn = 200\n[model]\nsizes = ["auto", 4, 4, "auto"]\n'
             '[train]\nepochs = 1\n')


@pytest.mark.parametrize(("text", "named"), [
    (DEMO_BASE + '[[recipes]]\nname = "a"\nmodel = "relu"\n', 'model = "relu" must be a table'),
    (DEMO_BASE + '[[recipes]]\nname = "a"\nmodel = [1, 2]\n', "model = [1, 2] must be a table"),
    (DEMO_BASE + '[[recipes]]\nname = "a"\nmodel = 3\n', "model = 3 must be a table"),
    ('model = "x"\n' + DEMO_BASE.replace('[model]\nsizes = ["auto", 4, 4, "auto"]\n', "")
     + '[[recipes]]\nname = "a"\n', 'model = "x" must be a table'),
])
def test_demo_config_whose_model_is_not_a_table_is_one_line(tmp_path, capsys, text, named):
    # was: exit 1, "ValueError: dictionary update sequence element #0 has length 1; 2 is
    # required" (or TypeError/AttributeError) as an internal error
    (tmp_path / "demo.toml").write_text(text)
    code = main(["demo", "--config", str(tmp_path / "demo.toml"), "--out",
                 str(tmp_path / "out"), "--jobs", "1", "--no-report", "-q"])
    _one_line_error(code, capsys.readouterr().err, "demo.toml", named)
    assert not (tmp_path / "out").exists()


def test_demo_on_a_data_file_names_the_file_not_none(tmp_path, capsys):
    # was: "depthlab demo: None, 1 hidden layers of 4 units, 1 recipes"
    rows = "".join(f"{i % 7},{(i * 3) % 5},{i % 2}\n" for i in range(40))
    (tmp_path / "my data.csv").write_text("a,b,label\n" + rows)
    (tmp_path / "demo.toml").write_text(
        '[data]\npath = "my data.csv"\n[model]\nsizes = ["auto", 4, "auto"]\n[train]\n'
        'epochs = 1\n[probes]\nevery = 0\n[[recipes]]\nname = "plain"\n')
    code = main(["demo", "--config", str(tmp_path / "demo.toml"), "--out",
                 str(tmp_path / "out"), "--jobs", "1", "--no-report"])
    out = capsys.readouterr().out
    assert code == 0
    assert "depthlab demo: my data.csv, 1 hidden layers of 4 units, 1 recipes" in out


RUN_JSON = ('{"data": {"name": "clusters", "n": 60}, "model": {"sizes": ["auto", 4, "auto"]}, '
            '"train": {"epochs": 1}, "probes": {"every": 0}')


@pytest.mark.parametrize("where", ["config", "--name"])
def test_a_name_that_is_not_unicode_text_is_refused_before_training(tmp_path, capsys, where):
    # was: the run trained, then exit 1 "UnicodeEncodeError: ... surrogates not allowed
    # (internal error)" when its name was stored (a JSON "\ud800", or --name of bytes that are
    # not UTF-8, which Python decodes to "\udcff")
    name = '"name": "a\\ud800b", ' if where == "config" else ""
    (tmp_path / "c.json").write_text("{" + name + RUN_JSON[1:] + "}")
    argv = ["run", str(tmp_path / "c.json"), "--out", str(tmp_path / "out")]
    if where == "--name":
        argv += ["--name", "x\udcff"]
    code = main(argv)
    err = capsys.readouterr().err
    _one_line_error(code, err, "\\ud800" if where == "config" else "\\udcff",
                    "is not accepted")
    assert not (tmp_path / "out").exists()


def test_doctor_of_a_config_file_named_in_bytes_that_are_not_utf8_stores_its_diagnosis(
        tmp_path, capsys):
    # was: the diagnosis ran, then exit 1 "UnicodeEncodeError: ... surrogates not allowed"
    # storing its default name "doctor c\udcff.toml"
    import os
    import sys

    if sys.getfilesystemencoding().lower() != "utf-8":
        pytest.skip("needs a UTF-8 file system encoding")
    path = os.fsencode(tmp_path) + b"/c\xff.toml"
    with open(path, "wb") as fh:
        fh.write(b'[data]\nname = "clusters"\nn = 60\n[model]\nsizes = ["auto", 4, "auto"]\n')
    code = main(["doctor", os.fsdecode(path), "--out", str(tmp_path / "out"), "-q",
                 "--steps", "3"])
    assert code == 0, capsys.readouterr().err
    assert main(["runs", str(tmp_path / "out"), "--json"]) == 0
    runs = _strict_json(capsys.readouterr().out)
    assert [r["name"] for r in runs] == ["doctor c\ufffd.toml"]


def test_torch_doctor_of_a_file_named_in_bytes_that_are_not_utf8_stores_its_diagnosis(
        tmp_path, capsys):
    # the same for `doctor --torch FILE.py:FUNCTION` (was: the diagnosis ran, then exit 2
    # "doctor: 'utf-8' codec can't encode character '\\udcff' ...")
    import os
    import sys

    pytest.importorskip("torch")
    if sys.getfilesystemencoding().lower() != "utf-8":
        pytest.skip("needs a UTF-8 file system encoding")
    path = os.fsencode(tmp_path) + b"/m\xff.py"
    with open(path, "wb") as fh:
        fh.write(b"import torch\n\ndef make():\n    return torch.nn.Sequential(torch.nn.Linear("
                 b"64, 8), torch.nn.ReLU(), torch.nn.Linear(8, 10))\n")
    code = main(["doctor", "--torch", os.fsdecode(path) + ":make", "--data", "clusters",
                 "--n", "80", "--steps", "3", "--out", str(tmp_path / "out"), "-q"])
    assert code == 0, capsys.readouterr().err
    assert main(["runs", str(tmp_path / "out"), "--json"]) == 0
    runs = _strict_json(capsys.readouterr().out)
    assert [r["name"] for r in runs] == ["doctor m\ufffd.py:make"]


@pytest.mark.parametrize("argv", [
    ["export", "res", "--to", "e\x00x"], ["runs", "r\x00"],
    ["predict", "net.npz", "x.npy", "--to", "p\x00.csv"], ["reproduce", "he2015", "--out", "a\x00"],
    ["doctor", "--torch", "m\x00.py:make", "--data", "digits"], ["init", "a\x00b"],
])
def test_an_argument_with_a_nul_byte_is_one_line(tmp_path, capsys, monkeypatch, argv):
    # was: exit 1, "ValueError: embedded null byte (internal error ...)" from the first os call
    # (run --out, export --to, predict --to, reproduce --out, doctor --torch, init)
    monkeypatch.chdir(tmp_path)
    code = main(argv)
    _one_line_error(code, capsys.readouterr().err, "\\x00", "holds a NUL byte")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", [".", "..", "/", "./", "sub/.."])
def test_init_with_a_folder_for_name_is_one_line(tmp_path, capsys, monkeypatch, name):
    # was: exit 1 "ValueError: PosixPath('.') has an empty name"; '..' wrote a file '...toml'
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    code = main(["init", name])
    _one_line_error(code, capsys.readouterr().err, repr(name), "names a folder, not a file")
    assert [p.name for p in tmp_path.iterdir()] == ["sub"]


def test_a_huge_negative_label_is_named_as_written(tmp_path, capsys):
    # was: "depthlab: warning: invalid value encountered in cast" then "labels must be
    # non-negative integers, got -9223372036854775808" for a label -1e30
    rows = "".join(f"{i},{i % 2}\n" for i in range(10))
    (tmp_path / "d.csv").write_text("a,label\n" + rows + "3,-1e30\n")
    (tmp_path / "c.toml").write_text('[data]\npath = "d.csv"\n[model]\n'
                                     'sizes = ["auto", 4, "auto"]\n')
    code = main(["run", str(tmp_path / "c.toml"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    _one_line_error(code, err, "d.csv", "labels must be non-negative integers, got -1e+30")
    assert "warning" not in err


@pytest.mark.parametrize(("section", "key", "meant"), [
    ("model", "weight_init", "init"),  # was: did you mean "bias_init"
    ("model", "dropout_rate", "dropout"),  # was: "dropout_type"
    ("model", "bn", "batchnorm"),  # was: "bn_eps"
    ("train", "learning_rate", "lr"),  # was: no hint
    ("train", "lr_decay_rate", "lr_decay"),
    ("model", "hidden_sizes", "sizes"),  # was: no hint
    ("model", "initializer", "init"),
    ("data", "val_split", "val_fraction"),
    ("data", "label_column", "label"),
])
def test_a_misspelled_key_suggests_the_key_it_means(tmp_path, capsys, section, key, meant):
    text = ('[data]\nname = "digits"\n[model]\nsizes = ["auto", 4, "auto"]\n[train]\n'
            '[probes]\n').replace(f"[{section}]\n", f"[{section}]\n{key} = 1\n")
    (tmp_path / "c.toml").write_text(text)
    code = main(["run", str(tmp_path / "c.toml"), "--out", str(tmp_path / "out")])
    _one_line_error(code, capsys.readouterr().err, f"unknown key '{section}.{key}'",
                    f'(did you mean "{meant}"?)')


@pytest.mark.parametrize(("section", "meant"), [("optimizer", "train"), ("network", "model")])
def test_a_misnamed_section_suggests_the_section_it_means(tmp_path, capsys, section, meant):
    (tmp_path / "c.toml").write_text(f'[data]\nname = "digits"\n[{section}]\nlr = 0.1\n')
    code = main(["run", str(tmp_path / "c.toml"), "--out", str(tmp_path / "out")])
    _one_line_error(code, capsys.readouterr().err, f"unknown section [{section}]",
                    f"(did you mean [{meant}]?)")


def test_a_misspelled_data_option_suggests_the_option(tmp_path, capsys):
    # was: "data.options.seperation is not an option of data set 'clusters'; accepted: ..."
    (tmp_path / "c.toml").write_text('[data]\nname = "clusters"\noptions = {seperation = 2}\n'
                                     '[model]\nsizes = ["auto", 4, "auto"]\n')
    code = main(["run", str(tmp_path / "c.toml"), "--out", str(tmp_path / "out")])
    _one_line_error(code, capsys.readouterr().err, "data.options.seperation",
                    '(did you mean "separation"?)', "accepted: d, n_classes, separation")
