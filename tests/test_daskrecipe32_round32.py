"""Round 32 (daskrecipe32): the recipe spec's conflicting fields and hints, and sweeps' refused
combinations."""

from __future__ import annotations

import pytest

from depthlab.experiments import run_sweep
from depthlab.experiments.config import ConfigError, validate
from depthlab.experiments.store import Store

BASE = {"data": {"name": "digits", "n": 120}, "model": {"sizes": ["auto", 4, "auto"]},
        "train": {"max_steps": 1}, "probes": {"every": 0}}


@pytest.mark.parametrize("probes, key", [
    ({"every": 0, "jacobian": True}, "probes.jacobian"),
    ({"every": 0, "histogram_steps": [0, "end"]}, "probes.histogram_steps"),
])
def test_probe_steps_asked_with_probes_off_are_refused_not_silently_dropped(probes, key):
    # every = 0 turns the recorder off: the Jacobian spectra / histograms asked for were never
    # recorded, the run finished with exit 0 and an empty jacobian table
    with pytest.raises(ConfigError) as err:
        validate({**BASE, "probes": probes})
    message = str(err.value)
    assert err.value.key == key and message.startswith(key) and "probes.every = 0" in message
    assert "\n" not in message
    # nothing asked, or probes on: accepted as before
    for ok in ({"every": 0, "jacobian": False, "histogram_steps": []},
               {"every": 3, **{k: v for k, v in probes.items() if k != "every"}}):
        validate({**BASE, "probes": ok})


def test_a_refused_combination_listed_twice_in_equal_spellings_is_one_failed_point(tmp_path):
    # lr 1 and 1.0 (and "SGD" and "sgd") are one config: the adam points were said repeated,
    # but the refused sgd points got one id per spelling, each stored as its own failed run
    raw = {**BASE, "sweep": {"train.lr": [1, 1.0], "train.optimizer": ["sgd", "SGD", "adam"],
                             "train.betas": [[0.9, 0.99]]}}
    result = run_sweep(raw, tmp_path, echo=None)
    assert result.counts == {"failed": 1, "finished": 1}
    assert result.repeated == 4
    with Store(tmp_path) as store:
        runs = store.runs()
    assert sorted(runs["status"]) == ["failed", "finished"]


@pytest.mark.parametrize("key, meant", [
    ("train.learning_rate", "train.lr"),  # was: (did you mean "train.dampening"?)
    ("optimizer.lr", "train.lr"),  # was: "train.optimizer"
    ("train.bs", "train.batch_size"),
    ("lr", "train.lr"),
])
def test_a_mistyped_sweep_key_gets_the_hint_its_section_gives(key, meant):
    with pytest.raises(ConfigError) as err:
        validate({**BASE, "sweep": {key: [0.1]}})
    assert f'(did you mean "{meant}"?)' in str(err.value)


def test_a_spec_constructor_names_the_field_another_librarys_keyword_means():
    from depthlab.spec import ModelSpec, TrainSpec

    with pytest.raises(TypeError, match=r"'learning_rate' \(did you mean 'lr'\?\)"):
        TrainSpec(learning_rate=0.1)  # as [train] learning_rate = 0.1 and fit() say
    with pytest.raises(TypeError, match=r"'bn' \(did you mean 'batchnorm'\?\)"):
        ModelSpec(sizes=[2, 3, 2], bn=True)
    with pytest.raises(TypeError, match=r"optimizer_kwargs=\{'momentum': \.\.\.\}"):
        TrainSpec(momentum=0.9)
    assert TrainSpec(optimizer_kwargs={"momentum": 0.9}) == TrainSpec.from_dict({"momentum": 0.9})


def test_a_data_files_unknown_option_is_refused_when_the_config_is_checked(tmp_path):
    # validated, then each run (each sweep point) failed at its load: "file data: unknown
    # option(s) ['noise']"; a grid over such a config stored every point failed
    import numpy as np

    np.savez(tmp_path / "d.npz", x=np.zeros((20, 3)), y=np.arange(20) % 2)
    raw = {**BASE, "data": {"path": str(tmp_path / "d.npz"), "options": {"nois": 0.1}}}
    with pytest.raises(ConfigError) as err:
        validate(raw)
    assert err.value.key == "data.options" and "data.options.nois" in str(err.value)
    assert "accepted: label, scale" in str(err.value)
    validate({**raw, "data": {**raw["data"], "options": {"scale": 2.0}}})  # an IDX option


@pytest.mark.parametrize("base, grid", [
    # monitor without patience: every point sets train.patience
    ({"train": {"max_steps": 1, "monitor": "train_loss"}}, {"train.patience": [1, 2]}),
    # batch_size 1 beside batch norm: every point turns batch norm off
    ({"model": {"sizes": ["auto", 4, "auto"], "batchnorm": True},
      "train": {"max_steps": 1, "batch_size": 1}}, {"model.batchnorm": [False]}),
    # the Jacobian asked with the probes off: every point turns them on
    ({"probes": {"every": 0, "jacobian": True}}, {"probes.every": [5, 10]}),
])
def test_a_base_refusal_that_every_point_lifts_through_the_other_key_runs_the_grid(base, grid):
    # the refusal names the key the grid does not sweep (train.monitor), its partner is swept:
    # the whole grid was refused, though each of its points is accepted alone
    from depthlab.experiments.grid import expand

    raw = {**BASE, **base, "sweep": grid}
    points = expand(raw)
    assert len(points) == len(next(iter(grid.values())))
    assert all(p.error is None for p in points)


@pytest.mark.parametrize("raw, words", [
    # a loss's / an activation's argument in the grid: "did you mean train.dampening?"
    ({"sweep": {"train.label_smoothing": [0.1]}},
     'sweep "train.loss_kwargs" = [{label_smoothing = ...}]'),
    ({"sweep": {"model.negative_slope": [0.1]}},
     'sweep "model.activation_kwargs" = [{negative_slope = ...}]'),
    # beside the activation's other keys: no hint at all
    ({"model": {"sizes": ["auto", 4, "auto"], "negative_slope": 0.1}},
     "activation_kwargs = {negative_slope = ...}"),
])
def test_an_argument_of_the_loss_or_activation_given_as_a_key_names_its_table(raw, words):
    with pytest.raises(ConfigError) as err:
        validate({**BASE, **raw})
    hint = str(err.value).split("; accepted keys:")[0]
    assert words in hint and "did you mean" not in hint


def test_a_base_refused_twice_over_still_runs_when_the_grid_also_sweeps_a_seed():
    # batch_size 1 beside batch norm and the default monitor val_loss without validation
    # rows, both lifted by swept keys (round 27): with a third key swept ("train.seed") each
    # seed was checked beside ONE other swept value and the grid was refused
    from depthlab.experiments.grid import iter_points

    raw = {"data": {"name": "digits", "n": 120, "val_fraction": 0.0},
           "model": {"sizes": ["auto", 4, "auto"], "batchnorm": True},
           "train": {"max_steps": 1, "batch_size": 1, "patience": 2}, "probes": {"every": 0},
           "sweep": {"train.batch_size": [8, 16], "train.monitor": ["train_loss", "train_acc"],
                     "train.seed": [0, 1]}}
    points = list(iter_points(raw))  # every single value checked first, as run_sweep does
    assert len(points) == 8 and all(p.error is None for p in points)
    # a value wrong whatever the others are is still named
    raw["sweep"]["train.seed"] = [0, -1]
    with pytest.raises(ConfigError, match=r"train\.seed = -1"):
        next(iter_points(raw))
