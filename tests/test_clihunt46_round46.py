"""clihunt46: the sweep API's progress and kind arguments are checked before any work."""

from __future__ import annotations

import numpy as np
import pytest

from depthlab.experiments import run_sweep
from depthlab.experiments.sweep import run_points

RAW = {"name": "t", "data": {"name": "spirals", "n": 64}, "model": {"depth": 1, "width": 4},
       "train": {"epochs": 1, "batch_size": 32}, "sweep": {"train.seed": [0, 1]}}


@pytest.mark.parametrize("progress", ["lines", "yes", None, 1, 0.0, "bar"])
def test_a_progress_that_is_not_a_bool_is_refused_naming_it(tmp_path, progress):
    # it was taken for its truth value: "lines" (fit's spelling) drew a bar, None drew none
    with pytest.raises(TypeError, match=r"progress = .* has the wrong type; accepted: True"):
        run_sweep(RAW, tmp_path / "out", progress=progress, echo=None)
    assert not (tmp_path / "out").exists()  # refused before the store was created
    with pytest.raises(TypeError, match="progress = "):
        run_points([], tmp_path / "out2", sweep="s", progress=progress, echo=None)
    assert not (tmp_path / "out2").exists()


def test_a_bool_or_numpy_bool_progress_runs_the_sweep(tmp_path):
    res = run_sweep(RAW, tmp_path / "out", progress=np.bool_(False), echo=None)
    assert res.counts == {"finished": 2}


def test_a_bad_kind_is_refused_before_the_grids_values_are_checked(tmp_path, monkeypatch):
    from depthlab.experiments import sweep as sweep_mod

    def not_reached(*a, **k):
        raise AssertionError("the grid's values were checked before the kind")

    monkeypatch.setattr(sweep_mod, "check_values", not_reached)
    with pytest.raises(ValueError, match=r"kind = 'bogus' is not a run kind; accepted: run"):
        run_sweep(RAW, tmp_path / "out", kind="bogus", echo=None)
    with pytest.raises(ValueError, match=r"kind = \['run'\] is not a run kind"):
        run_sweep(RAW, tmp_path / "out", kind=["run"], echo=None)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("force", [[], ["--force"]])
def test_init_over_a_folder_of_the_files_name_says_it_is_a_folder(tmp_path, monkeypatch,
                                                                   capsys, force):
    # it said "'mine.toml' already exists; pass --force to replace it", and --force then
    # failed as "cannot write ... it is a folder"
    from depthlab.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.toml" / "inner").mkdir(parents=True)
    assert main(["init", "mine", *force]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("depthlab: error: 'mine.toml' is a folder; expected a file name for the "
                   "config (choose another NAME)")
    assert (tmp_path / "mine.toml" / "inner").is_dir()
