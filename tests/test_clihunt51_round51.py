"""Round 51 CLI/store hunt: streamed grids' history screen, ..."""

from __future__ import annotations

import pytest

SMALL = {"name": "h51", "data": {"name": "clusters", "n": 64},
         "model": {"sizes": ["auto", 4, "auto"], "activation": "tanh"},
         "train": {"loss": "cross_entropy", "optimizer": "sgd", "lr": 0.1,
                   "batch_size": 16, "epochs": 1}, "probes": {"every": 0}}


def test_a_streamed_grid_whose_history_cannot_fit_is_refused_before_any_point(tmp_path,
                                                                              monkeypatch):
    """A grid above WORK_POINTS (2,000) points, streamed, was not screened for its history:
    ``train.epochs = 10**12`` over 2,001 points stored 2,001 failed points (77 s, exit 1) where
    a grid of 3 was refused at once (exit 2, nothing stored). Now refused likewise."""
    import depthlab.experiments.sweep as sweep_mod
    from depthlab.experiments import ExperimentError, run_sweep

    monkeypatch.setattr(sweep_mod, "WORK_POINTS", 2)  # 3 points: streamed, as 2,001 are
    raw = {**SMALL, "train": {**SMALL["train"], "epochs": 10**15},
           "sweep": {"train.seed": [0, 1, 2]}}
    out = tmp_path / "out"
    with pytest.raises(ExperimentError, match=r"train\.epochs = 10+ .*history.*no point ran"):
        run_sweep(raw, out, echo=None)
    assert not (out / "depthlab.db").exists()
    # a grid whose large-epochs point is one value of a swept epochs is refused too
    raw = {**SMALL, "sweep": {"train.epochs": [1, 10**15], "train.seed": [0, 1]}}
    with pytest.raises(ExperimentError, match="no point ran"):
        run_sweep(raw, out, echo=None)
    assert not (out / "depthlab.db").exists()
    # a grid that fits runs
    raw = {**SMALL, "sweep": {"train.seed": [0, 1, 2]}}
    assert run_sweep(raw, out, echo=None).count("finished") == 3
