"""Round 45 (clihunt45): the CLI, sweeps and the store, as a hostile but realistic user."""

from __future__ import annotations

import pytest

from tests.helpers.cli import assert_one_line_error, one_blas_thread, run_cli

_GRID = ('[data]\nname = "spirals"\nn = 60\n[model]\nsizes = ["auto", 4, "auto"]\n'
         '[train]\nepochs = 1\n[probes]\nevery = 0\n[sweep]\n{key} = [{values}]\n')


def _stored(out):
    """Runs stored in ``out``; a store holding none must record no sweep either (a refused
    sweep was listed by `depthlab runs --sweep` as one of the folder's sweeps)."""
    from depthlab.experiments import Store

    if not (out / "depthlab.db").exists():
        return 0
    with Store(out, readonly=True) as s:
        n = len(s.runs())
        assert n or not s.sweep_sizes(), s.sweep_sizes()
        return n


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_grid_point_too_large_even_alone_is_refused_before_any_point_runs(
        tmp_path, capsys, monkeypatch, jobs):
    # --jobs 1: the first point trained, the second was stored as failed with the memory
    # line, the third trained, exit 1. --jobs 2: refused, but told "at most 1 of these points
    # fit at once: use 1 worker process", a cure that cannot work (the point alone needs more)
    one_blas_thread(monkeypatch)
    monkeypatch.setenv("DEPTHLAB_MEMORY_LIMIT", "2G")
    cfg = tmp_path / "g.toml"
    cfg.write_text(_GRID.format(key='"model.sizes"', values='["auto", 4, "auto"], '
                                '["auto", 100000000, "auto"], ["auto", 5, "auto"]'))
    out = tmp_path / "o"
    code, _, err = run_cli(capsys, "sweep", cfg, "--out", out, "--jobs", jobs)
    line = assert_one_line_error(code, err, "a point of the grid",
                                 "model.sizes = [2, 100000000, 2]", "nothing was allocated",
                                 "no point ran")
    assert "at most 1" not in line and "use 1 worker" not in line
    assert _stored(out) == 0


def test_points_that_fit_alone_still_run_one_at_a_time(tmp_path, capsys, monkeypatch):
    # the check of the largest point alone refuses nothing that fits
    one_blas_thread(monkeypatch)
    cfg = tmp_path / "g.toml"
    cfg.write_text(_GRID.format(key='"train.seed"', values="0, 1"))
    out = tmp_path / "o"
    code, _, err = run_cli(capsys, "sweep", cfg, "--out", out, "--quiet")
    assert code == 0, err
    assert _stored(out) == 2


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_grid_point_whose_history_cannot_fit_is_refused_before_any_point_runs(
        tmp_path, capsys, monkeypatch, jobs):
    # train.epochs = 10**12 in a grid: the points before it trained and it was stored as
    # failed ("the training history of ... steps needs about ... PiB"), exit 1
    one_blas_thread(monkeypatch)
    cfg = tmp_path / "g.toml"
    cfg.write_text(_GRID.format(key='"train.epochs"', values="1, 1000000000000, 2"))
    out = tmp_path / "o"
    code, _, err = run_cli(capsys, "sweep", cfg, "--out", out, "--jobs", jobs)
    assert_one_line_error(code, err, "a point of the grid", "train.epochs = 1000000000000",
                          "training history", "nothing was allocated", "no point ran")
    assert _stored(out) == 0


def test_a_history_bounded_by_max_steps_or_patience_is_not_refused(tmp_path, capsys,
                                                                   monkeypatch):
    # the screen reads min(epochs, max_steps): a huge epochs count bounded by max_steps fits
    one_blas_thread(monkeypatch)
    cfg = tmp_path / "g.toml"
    cfg.write_text(_GRID.format(key='"train.epochs"', values="1000000000000")
                   .replace("epochs = 1\n", "epochs = 1\nmax_steps = 3\n"))
    out = tmp_path / "o"
    code, _, err = run_cli(capsys, "sweep", cfg, "--out", out, "--quiet")
    assert code == 0, err
    assert _stored(out) == 1
