"""Round 52 CLI hunt (clihunt52): README commands typed outside a checkout, ..."""

from __future__ import annotations

import pytest


def _main(args: list[str], capsys) -> tuple[int, str, str]:
    from depthlab.cli import main

    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("command", [
    ["run", "examples/digits_run.toml", "--out", "results"],
    ["sweep", "examples/digits_sweep.toml", "--out", "results", "--jobs", "2"],
    ["doctor", "examples/digits_run.toml"],
    ["demo", "--config", "examples/demo.toml"],
])
def test_a_readme_example_path_outside_a_checkout_names_depthlab_init_example(
        command, tmp_path, monkeypatch, capsys):
    """README's ``depthlab run examples/digits_run.toml --out results``, typed in a folder
    without the repository's ``examples/`` (depthlab installed with pip), said only "config
    file 'examples/digits_run.toml' not found": now the line names the shipped example and
    the command that writes it; with that file in the current folder, it is suggested."""
    monkeypatch.chdir(tmp_path)
    code, _, err = _main(command, capsys)
    stem = command[1 if command[0] != "demo" else 2].split("/")[1].removesuffix(".toml")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"`depthlab init --example {stem}` writes {stem}.toml here" in err
    assert not (tmp_path / "results").exists()
    assert _main(["init", "--example", stem], capsys)[0] == 0
    code, _, err = _main(command, capsys)
    assert code == 2 and f"(did you mean {stem}.toml, in this folder?)" in err
    # a missing config of another name gets no hint
    code, _, err = _main(["run", "examples/mine.toml"], capsys)
    assert code == 2 and "not found" in err and "did you mean" not in err
    assert "init --example" not in err


@pytest.mark.parametrize(("arrays", "hint"), [
    ({"X": 0, "labels": 1}, "(rename 'labels' to 'y'"),
    ({"x": 0, "target": 1}, "(rename 'target' to 'y'"),
    ({"features": 0, "y": 1}, "(rename 'features' to 'x'"),
])
def test_a_npz_with_one_array_named_as_read_names_the_others_rename(arrays, hint, tmp_path,
                                                                    capsys):
    """``np.savez(f, X=X, labels=y)`` (scikit-learn's ``X`` beside another library's
    ``labels``) was refused with the accepted layouts but no hint, where ``features``/
    ``labels`` got "rename 'features' to 'x' and 'labels' to 'y'": now the one array not
    named as read is named, from ``load_dataset`` and from ``depthlab run``."""
    import numpy as np

    from depthlab.data import load_dataset

    x = np.random.default_rng(0).normal(size=(40, 3))
    y = (x[:, 0] > 0).astype(int)
    path = tmp_path / "d.npz"
    np.savez(path, **{k: (x, y)[v] for k, v in arrays.items()})
    with pytest.raises(ValueError, match="unrecognised .npz keys") as info:
        load_dataset(str(path))
    assert hint in str(info.value)
    config = tmp_path / "c.toml"
    config.write_text(f'name = "n"\n[data]\npath = "{path.name}"\n[model]\n'
                      'sizes = ["auto", 4, "auto"]\n[train]\nepochs = 1\n')
    code, _, err = _main(["run", str(config), "--out", str(tmp_path / "r"), "-q"], capsys)
    assert code == 2 and hint in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(("line", "hint"), [
    ('seed = "0"', 'train.seed = "0" has the wrong type; accepted: an integer >= 0 (did you '
                   'mean 0, without quotes?)'),
    ('batch_size = 8.0', "(did you mean 8?)"),
    ('batch_size = "8"', "(did you mean 8, without quotes?)"),
    ('epochs = 2.0', "(did you mean 2?)"),
    ('lr = "1e-3"', "(did you mean 1e-3, without quotes?)"),
])
def test_a_number_written_as_text_or_a_whole_float_says_how_to_write_it(line, hint, tmp_path,
                                                                        capsys):
    """``seed = "0"`` (a number in quotes, as JSON-minded users write it) and ``batch_size =
    8.0`` were refused with "has the wrong type; accepted: an integer ..." and no word on what
    to write, where the CLI's own options say ``--limit 1e3``: '... (did you mean 1000?)'.
    Now the config's line names the number meant; the Python API's error too."""
    config = tmp_path / "c.toml"
    config.write_text('name = "n"\n[data]\nname = "clusters"\nn = 60\n[model]\n'
                      f'sizes = ["auto", 4, "auto"]\n[train]\n{line}\n')
    code, _, err = _main(["run", str(config), "--out", str(tmp_path / "r"), "-q"], capsys)
    assert code == 2 and hint in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("line", ['seed = "x"', 'seed = "nan"', "batch_size = 8.5",
                                  'lr = "inf"', 'batch_size = "ful"'])
def test_no_number_hint_where_no_number_is_meant(line, tmp_path, capsys):
    config = tmp_path / "c.toml"
    config.write_text('name = "n"\n[data]\nname = "clusters"\nn = 60\n[model]\n'
                      f'sizes = ["auto", 4, "auto"]\n[train]\n{line}\n')
    code, _, err = _main(["run", str(config), "--out", str(tmp_path / "r"), "-q"], capsys)
    assert code == 2 and "without quotes" not in err
    assert ("did you mean" in err) == ("ful" in line)


def test_the_python_api_names_the_number_meant_too():
    import numpy as np

    import depthlab as dl

    x = np.random.default_rng(0).normal(size=(20, 3))
    y = (x[:, 0] > 0).astype(int)
    with pytest.raises(TypeError, match=r"batch_size = 8\.0 .*\(did you mean 8\?\)"):
        dl.fit(dl.mlp([3, 4, 2], seed=0), x, y, batch_size=8.0, epochs=1)


@pytest.mark.parametrize(("column", "hinted"), [
    ("target", True), ("class", True), ("y", True), ("Species", True), ("score", False)])
def test_a_csv_whose_label_column_has_another_tools_name_suggests_it(column, hinted, tmp_path,
                                                                     capsys):
    """A CSV whose label column is ``target`` (scikit-learn's ``frame.to_csv``), ``class`` or
    ``y`` was refused as "no label column 'label'" with its columns listed and no hint, where
    ``Label`` got "(did you mean 'Label'?)": now the one such column is suggested."""
    from depthlab.data import load_dataset

    path = tmp_path / "d.csv"
    path.write_text(f"a,b,{column}\n" + "".join(f"{i},{i % 3},{i % 2}\n" for i in range(30)))
    with pytest.raises(ValueError, match="no label column 'label'") as info:
        load_dataset(str(path))
    assert (f"(did you mean {column!r}?)" in str(info.value)) == hinted
    config = tmp_path / "c.toml"
    config.write_text(f'name = "n"\n[data]\npath = "{path.name}"\n[model]\n'
                      'sizes = ["auto", 4, "auto"]\n[train]\nepochs = 1\n')
    code, _, err = _main(["run", str(config), "--out", str(tmp_path / "r"), "-q"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert (f"(did you mean {column!r}?)" in err) == hinted
    # two such columns: no guess
    path.write_text("a,target,y\n" + "".join(f"{i},{i % 2},{i % 2}\n" for i in range(30)))
    with pytest.raises(ValueError, match="no label column 'label'") as info:
        load_dataset(str(path))
    assert "did you mean" not in str(info.value)
