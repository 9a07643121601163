"""Round 37 (sweephunt37): recipe spec, sweeps and reproductions as a demanding user."""

from __future__ import annotations

from depthlab.experiments import run_sweep

BASE = {"name": "s", "data": {"name": "spirals", "n": 60}, "model": {"sizes": ["auto", 3, "auto"]},
        "train": {"epochs": 1, "batch_size": 64}, "probes": {"every": 0}}


def _sweep(tmp_path, grid):
    return run_sweep({**BASE, "sweep": grid}, tmp_path / "out", echo=None)


def test_one_grid_spelled_two_ways_is_one_sweep(tmp_path):
    # lr 1 and 1.0, "ReLU" and "relu", batch_size None and "full" are one point each (one run
    # id), and the same grid is one sweep: each spelling was a sweep id of its own, so the
    # store (and the report) held two sweeps of the same runs; RunSpec.to_toml writes None as
    # "full", so a spec's grid and its TOML file were two sweeps
    a = _sweep(tmp_path, {"train.lr": [1, 0.5], "model.activation": ["ReLU"],
                          "train.batch_size": [None]})
    b = _sweep(tmp_path, {"train.lr": [1.0, 0.5], "model.activation": ["relu"],
                          "train.batch_size": ["full"]})
    assert a.ran == 2 and b.ran == 0 and b.skipped == 2
    assert a.sweep == b.sweep


def test_mistyped_optimizer_hyperparameter_gets_a_hint():
    import pytest

    from depthlab.spec import ConfigError, RunSpec

    base = {"data": {"name": "digits"}, "model": {"sizes": ["auto", 8, "auto"]}}
    with pytest.raises(ConfigError, match=r'momentom .*did you mean "momentum"\?'):
        RunSpec.from_dict({**base, "train": {"optimizer_kwargs": {"momentom": 0.9}}})
    # another optimizer's hyperparameter names the optimizers that take it
    with pytest.raises(ConfigError, match=r"betas is not a hyperparameter of optimizer 'sgd' "
                       r"\(a hyperparameter of adam, adamw, nadam, radam, adamax\); "
                       r"accepted: momentum"):
        RunSpec.from_dict({**base, "train": {"betas": [0.9, 0.99]}})


def test_a_runspec_is_a_config_everywhere(tmp_path):
    # the recipe's one spec: validate, execute, expand and run_sweep take a RunSpec as they
    # take its dict (each refused it: "a config must be a table of sections, got RunSpec")
    from depthlab.experiments import execute, expand, validate
    from depthlab.spec import RunSpec

    raw = {**BASE, "sweep": {"train.seed": [0, 1]}}
    spec = RunSpec.from_dict(raw)
    assert validate(spec) == validate(raw)
    assert [p.id for p in expand(spec)] == [p.id for p in expand(raw)]
    a = run_sweep(spec, tmp_path / "a", echo=None)
    b = run_sweep(raw, tmp_path / "b", echo=None)
    assert (a.sweep, a.ran) == (b.sweep, 2)
    one = RunSpec.from_dict(BASE)
    assert execute(one).id == execute(BASE).id


def test_a_grid_key_two_sections_hold_names_both():
    # "seed" is data.seed (the split) or train.seed (init and batch order): the hint named
    # data.seed alone, the first spelled alike, though a seed sweep is most often train.seed
    import pytest

    from depthlab.spec import ConfigError, RunSpec

    base = {"data": {"name": "digits"}, "model": {"sizes": ["auto", 8, "auto"]}}
    with pytest.raises(ConfigError, match=r'\(did you mean "data.seed" or "train.seed"\?\)'):
        RunSpec.from_dict({**base, "sweep": {"seed": [0, 1]}})
    with pytest.raises(ConfigError, match=r'\(did you mean "train.lr"\?\)'):
        RunSpec.from_dict({**base, "sweep": {"lr": [0.1]}})
    # another library's name of a key, without its section (was no hint at all)
    with pytest.raises(ConfigError, match=r'\(did you mean "train.lr"\?\)'):
        RunSpec.from_dict({**base, "sweep": {"learning_rate": [0.1]}})


def test_reproduce_all_names_a_data_set_that_does_not_exist(tmp_path, capsys):
    # `reproduce all --data nope` said "ioffe2015: data='nope' is not accepted; expected one
    # of: mnist5k, fashion-mnist", as if 'nope' were a data set ioffe2015 does not take
    from depthlab.cli import main

    assert main(["reproduce", "all", "--quick", "--data", "nope", "--out",
                 str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "'nope' is neither a built-in data set nor an existing file" in err
    assert "ioffe2015" not in err


def test_a_grid_of_tables_spelled_two_ways_is_one_sweep(tmp_path):
    # {momentum = 0} and {momentum = 0.0} are one run (the config stores 0.0): one sweep too
    a = _sweep(tmp_path, {"train.optimizer_kwargs": [{"momentum": 0}],
                          "train.loss_kwargs": [{"label_smoothing": 0}]})
    b = _sweep(tmp_path, {"train.optimizer_kwargs": [{"momentum": 0.0}],
                          "train.loss_kwargs": [{"label_smoothing": 0.0}]})
    assert (a.ran, b.ran, b.skipped) == (1, 0, 1)
    assert a.sweep == b.sweep
