"""Round 38 (clihunt38): the CLI, config files and data loading as a demanding user meets them."""

from __future__ import annotations

import pytest

BASE = '[data]\nname = "spirals"\n[model]\nsizes = ["auto", 8, "auto"]\n'


@pytest.mark.parametrize(("recipes", "expected"), [
    # was "recipe 1 = {'nmae': 'a', ...} needs a string 'name'": no word on the typo
    ('[[recipes]]\nnmae = "a"\nmodel = {activation = "relu"}\n',
     "recipe 1 has the unknown key 'nmae' (did you mean \"name\"?)"),
    ('[[recipes]]\nname = "a"\nmodle = {activation = "relu"}\n',
     "recipe 'a' has the unknown key 'modle' (did you mean \"model\"?)"),
    # was "no [[recipes]] entries": the table was there, with single brackets
    ('[recipes]\nname = "a"\n', "[recipes] is one table; accepted: [[recipes]]"),
    # was accepted, the number shown as the recipe's meaning
    ('[[recipes]]\nname = "a"\nmeaning = 3\n', "recipe 'a': meaning = 3 has the wrong type"),
    # was "recipe 1 = 1 needs a string 'name'"
    ('recipes = [1, 2]\n', "recipe 1 = 1 is not accepted; accepted: a table"),
])
def test_demo_config_recipe_mistakes_are_named(tmp_path, recipes, expected):
    from depthlab.demo import demo_recipes
    from depthlab.experiments import ConfigError

    path = tmp_path / "dm.toml"
    path.write_text(BASE + recipes if not recipes.startswith("recipes =") else recipes + BASE)
    with pytest.raises(ConfigError) as err:
        demo_recipes(path)
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


def test_every_help_ends_with_examples_that_parse(capsys):
    # was: no command's --help showed a single example command line
    import shlex

    from depthlab.cli import EXAMPLES, build_parser, commands

    parser = build_parser()
    assert set(EXAMPLES) == {""} | {c.name for c in commands()}
    for name, lines in EXAMPLES.items():
        with pytest.raises(SystemExit):
            parser.parse_args([name, "--help"] if name else ["--help"])
        shown = capsys.readouterr().out
        assert "\nexamples:\n" in shown
        for line in lines:
            assert f"\n  {line}\n" in shown + "\n"  # kept on one line, not wrapped
            for part in line.replace("&&", "|").split("|"):
                words = shlex.split(part.split(">")[0])
                if words[0] != "depthlab" or "--help" in words:
                    continue
                assert parser.parse_args(words[1:]).command == words[1], line


def test_text_labels_and_too_large_n_say_what_is_accepted(tmp_path):
    # was "labels must be integers, got dtype <U4" and "digits: n=100000000 is larger than the
    # 1797 samples available": neither said what to give instead
    import numpy as np

    from depthlab.data import load_dataset

    path = tmp_path / "named.npz"
    np.savez(path, x=np.arange(12.0).reshape(6, 2), y=np.array(["cat", "dog", "cat"] * 2))
    with pytest.raises(ValueError, match=r"got text such as 'cat' \(dtype <U3\); accepted: "
                       r"class numbers 0, 1, \.\.\."):
        load_dataset(str(path))
    with pytest.raises(ValueError, match=r"n=100000000 is larger than the 1797 samples "
                       r"available; accepted: n <= 1797"):
        load_dataset("digits", n=100_000_000)


@pytest.mark.parametrize("echo", [3, "print"])
def test_run_sweep_refuses_an_echo_that_cannot_be_called(tmp_path, echo):
    # was TypeError "'int' object is not callable" from inside the sweep, after the grid was
    # read; now named before anything is created
    from depthlab.experiments import run_sweep

    raw = {"data": {"name": "clusters", "n": 60}, "model": {"sizes": ["auto", 4, "auto"]},
           "train": {"epochs": 1}, "sweep": {"train.seed": [0]}}
    with pytest.raises(TypeError, match=r"^echo = .* has the wrong type; accepted: a function"):
        run_sweep(raw, tmp_path / "out", echo=echo)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("key", "word", "meant"), [
    ("model.init", "xavier", "glorot_normal"), ("model.init", "kaiming", "he_normal"),
    ("model.activation", "logistc", "sigmoid"),
])
def test_a_mistyped_name_is_hinted_through_the_registry_aliases(key, word, meant):
    # was `model.init = "xavier" is not a known initializer; accepted: ...` with no hint,
    # although "xavier_normal" and "kaiming_normal" are accepted aliases
    from depthlab.experiments import ConfigError, validate

    section, field = key.split(".")
    raw = {"data": {"name": "clusters"}, "model": {"sizes": ["auto", 4, "auto"], field: word}}
    with pytest.raises(ConfigError, match=f'{key} = "{word}" is not a known .* '
                       f'\\(did you mean "{meant}"\\?\\)'):
        validate(raw)


def test_a_table_declared_twice_is_named(tmp_path):
    # was only tomllib's "Cannot declare ('data',) twice (at line 4, column 6)"
    from depthlab.experiments import ConfigError, read_toml

    path = tmp_path / "twice.toml"
    path.write_text('[data]\nname = "digits"\n[data]\nseed = 1\n')
    with pytest.raises(ConfigError, match=r"table \[data\] is declared twice; accepted: each "
                       r"table once \(put all its keys under one \[data\]\)"):
        read_toml(path)


def test_store_runs_selects_a_status_and_hints_a_mistyped_kind_or_status(tmp_path):
    # was TypeError "Store.runs() got an unexpected keyword argument 'status'" (the CLI's
    # `runs --status` had no Python spelling) and kind = 'sweep' had no did-you-mean
    from depthlab.experiments import Store
    from depthlab.experiments.store import RunRecord

    store = Store(tmp_path / "r.db")
    for rid, status in (("a1", "finished"), ("b2", "failed"), ("c3", "finished")):
        store.add_run(RunRecord(id=rid, name=rid, kind="run", sweep=None, status=status,
                                config={}, metrics={}))
    assert list(store.runs(status="finished")["id"]) == ["a1", "c3"]
    assert list(store.runs(status="failed", kind="run")["id"]) == ["b2"]
    with pytest.raises(ValueError, match=r"status = 'finsihed' is not a run status; accepted: "
                       r"finished, diverged, failed, interrupted .*\(did you mean 'finished'\?\)$"):
        store.runs(status="finsihed")
    with pytest.raises(ValueError, match=r"kind = 'sweep' is not a run kind; .*\(did you mean "
                       r"'sweep-point'\?\)$"):
        store.runs(kind="sweep")


@pytest.mark.parametrize(("args", "expected"), [
    (["sweep", "g.toml", "--limit", "1e3"], "argument --limit: '1e3' is not a whole number; "
     "accepted: an integer written with digits only (did you mean 1000?)"),
    (["demo", "--epochs", "1.5"], "argument --epochs: '1.5' is not a whole number; accepted: "
     "an integer written with digits only (see"),
    (["sweep", "g.toml", "--jobs", "two"], "argument --jobs/-j: 'two' is not a whole number"),
])
def test_a_count_that_is_not_an_integer_says_what_is_accepted(capsys, args, expected):
    # was argparse's "argument --limit: invalid int value: '1e3'": Python's type name, and no
    # word that 1e3 is 1000
    from depthlab.cli import main

    code = main(args)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert expected in err


@pytest.mark.parametrize(("arrays", "expected"), [
    ({"arr_0": 0, "arr_1": 1}, "np.savez(path, x, y) without names writes arr_0, arr_1: save "
     "with np.savez(path, x=x, y=y)"),
    ({"features": 0, "Labels": 1}, "rename 'features' to 'x' and 'Labels' to 'y'"),
    ({"inputs": 0, "targets": 1}, "rename 'inputs' to 'x' and 'targets' to 'y'"),
])
def test_an_npz_of_two_arrays_under_other_names_says_how_to_save_it(tmp_path, arrays,
                                                                   expected):
    # was only "unrecognised .npz keys ['arr_0', 'arr_1']; accepted layouts: x, y; ..."
    import numpy as np

    from depthlab.data import load_dataset

    x = np.random.default_rng(0).normal(size=(20, 3))
    y = np.arange(20) % 2
    path = tmp_path / "d.npz"
    np.savez(path, **{k: (x, y)[v] for k, v in arrays.items()})
    with pytest.raises(ValueError, match="unrecognised .npz keys") as err:
        load_dataset(str(path))
    assert expected in str(err.value)


def test_a_sweep_over_a_data_file_no_point_can_read_is_bad_input(tmp_path, capsys):
    # was: every point stored `failed` with the same labels message, exit 1 (`depthlab run`
    # of the same config exits 2 before anything runs); now one line, exit 2, no store
    from depthlab.cli import main

    (tmp_path / "named.csv").write_text("a,b,label\n" + "".join(
        f"{i},{i % 3},{'cat' if i % 2 else 'dog'}\n" for i in range(12)))
    grid = tmp_path / "g.toml"
    grid.write_text('[data]\npath = "named.csv"\n[model]\nsizes = ["auto", 4, "auto"]\n'
                    '[train]\nepochs = 1\n[sweep]\n"train.seed" = [0, 1]\n')
    code = main(["sweep", str(grid), "--out", str(tmp_path / "out"), "-q"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "holds 'dog' on line 2" in err and "every point of the grid reads this data" in err
    assert not (tmp_path / "out").exists()
