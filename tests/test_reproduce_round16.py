"""Round 16: the reproductions and the ``depthlab reproduce`` CLI against the papers' setups
and the project's bad-input rule (one line, exit status 2)."""

from __future__ import annotations

import dataclasses
import json
import tempfile

import pytest
from helpers.cli import assert_one_line_error, run_cli

import depthlab.reproduce as reproduce_pkg
from depthlab.reproduce import (
    REGISTRY,
    Result,
    experiments,  # noqa: F401  (registers the built-ins)
    run_experiment,
)
from depthlab.reproduce.base import ExperimentDataError

OWN_DATA = ("glorot2010", "he2015", "saxe2013")  # Shapeset + MNIST; clusters; a linear teacher


@pytest.mark.parametrize("name", OWN_DATA)
def test_a_data_set_given_to_an_experiment_that_takes_none_is_refused(name, capsys,
                                                                     monkeypatch):
    """was: ``depthlab reproduce glorot2010 --data mnist5k`` (he2015, saxe2013 alike) ran
    the whole experiment (glorot2010 full: ~9 minutes) on its own data and only said so in a
    note of the report; now one line and exit status 2 before anything runs, and the same
    refusal from the API."""
    ran = []
    monkeypatch.setitem(REGISTRY, name, dataclasses.replace(REGISTRY[name],
                                                             run=lambda **kw: ran.append(kw)))
    code, out, err = run_cli(capsys, "reproduce", name, "--data", "mnist5k", "--quiet")
    line = assert_one_line_error(code, err, name, "takes no data set", "'mnist5k'", "ioffe2015")
    assert name not in line.split("take one:")[1]  # not listed among the ones that take data
    with pytest.raises(ExperimentDataError, match=f"{name} takes no data set"):
        run_experiment(name, data="digits", echo=None)
    assert not ran


def test_all_with_data_runs_the_experiments_without_data_on_their_own(capsys, monkeypatch):
    """``reproduce all --data fashion-mnist``: ioffe2015 and the others that take a data set
    get it; glorot2010, he2015 and saxe2013 run on their own data (data=None), not refused."""
    seen: dict[str, object] = {}

    def fake(name, *, quick=False, out=None, data=None, progress=False, echo=print):
        seen[name] = data
        return Result(name, name)

    monkeypatch.setattr(reproduce_pkg, "run_experiment", fake)
    monkeypatch.chdir(tempfile.mkdtemp())
    code, _, err = run_cli(capsys, "reproduce", "all", "--data", "fashion-mnist", "--quiet")
    assert code == 0, err
    assert set(seen) == set(REGISTRY)
    for name in OWN_DATA:
        assert seen[name] is None
    assert seen["ioffe2015"] == "fashion-mnist" and seen["klambauer2017"] == "fashion-mnist"


def test_the_list_says_which_experiments_take_no_data(capsys):
    code, out, _ = run_cli(capsys, "reproduce", "--list", "--json")
    data = {e["name"]: e["data"] for e in json.loads(out)}
    assert code == 0
    assert all(data[n] == [] for n in OWN_DATA)
    assert data["ioffe2015"] == ["mnist5k", "fashion-mnist"] and data["xu2016"] is None


@pytest.mark.parametrize("alias", ["fashion-mnist", "fashion_mnist", "fmnist", "FashionMNIST",
                                   "Fashion-MNIST"])
def test_ioffe2015_trains_on_the_whole_fashion_mnist_set_under_any_of_its_names(alias):
    """was: only the spellings 'fashion-mnist'/'fashion_mnist' (any case) set val_fraction=0;
    '--data fmnist' (an accepted alias) held out 10% for validation, so the same experiment
    trained on 54,000 images instead of 60,000."""
    from depthlab.reproduce.ioffe2015 import full_training_set

    assert full_training_set(alias) == {"val_fraction": 0.0}
    assert full_training_set("mnist5k") == {} and full_training_set(None) == {}


@pytest.mark.parametrize("spelling", ["Depth_Ladder", " XU2016 ", "depth_ladder"])
def test_run_experiment_takes_the_names_the_command_line_takes(spelling, monkeypatch):
    """was: run_experiment('depth_ladder') raised "unknown experiment 'depth_ladder'" though
    `depthlab reproduce depth_ladder` (and XU2016) ran it; now the same names resolve."""
    from depthlab.reproduce.base import experiment_name

    ran = []
    want = spelling.strip().lower().replace("_", "-")

    def fake(**kw):
        ran.append(kw)
        return Result(want, want)

    monkeypatch.setitem(REGISTRY, want, dataclasses.replace(REGISTRY[want], run=fake))
    assert experiment_name(spelling) == want
    result = run_experiment(spelling, quick=True, echo=None)
    assert result.name == want and len(ran) == 1
    with pytest.raises(ValueError, match=r"unknown experiment 'glorot-2010'; expected one of"):
        run_experiment("glorot-2010", echo=None)
