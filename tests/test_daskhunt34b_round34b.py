"""Round 34b (daskhunt34b): sweeps on a Dask cluster give the numbers of ``--jobs 1``.

A Dask worker runs as many points at once as it has threads (a notebook's
``LocalCluster(processes=False)``, ``dask worker --nthreads 4``); nothing a point computes may
depend on what another thread of the same process does meanwhile.
"""

from __future__ import annotations

import json
import sqlite3

import pytest

from depthlab.experiments import run_sweep

distributed = pytest.importorskip("distributed")
pytest.importorskip("mnist1d")


def _metrics(out) -> dict[str, dict]:
    with sqlite3.connect(f"{out}/depthlab.db") as con:
        rows = con.execute("SELECT id, metrics FROM runs").fetchall()
    return {i: {k: v for k, v in json.loads(m).items() if k != "seconds"} for i, m in rows}


def test_a_threaded_dask_worker_trains_each_point_on_its_own_seeded_data(tmp_path):
    # mnist1d's generator seeds NumPy's global RNG and draws from it: 4 points generating
    # their data at once in one worker's 4 threads drew from each other's streams, so every
    # run stored under its id (data.seed 0..3) had trained on other data than --jobs 1's
    # (train_loss 2.531 vs 2.575; 4 of 4 runs differing)
    raw = {"data": {"name": "mnist1d", "n": 100}, "model": {"sizes": ["auto", 4, "auto"]},
           "train": {"lr": 0.05, "batch_size": 32, "max_steps": 1}, "probes": {"every": 0},
           "sweep": {"data.seed": [0, 1, 2, 3]}}
    run_sweep(raw, tmp_path / "one", echo=None)
    with distributed.LocalCluster(processes=False, n_workers=1, threads_per_worker=4,
                                  dashboard_address=None) as lc, distributed.Client(lc) as c:
        run_sweep(raw, tmp_path / "dask", cluster=c, echo=None)
    one, dask = _metrics(tmp_path / "one"), _metrics(tmp_path / "dask")
    assert sorted(one) == sorted(dask) and len(one) == 4
    differ = {i: (one[i].get("train_loss"), dask[i].get("train_loss"))
              for i in one if one[i] != dask[i]}
    assert not differ, differ


def test_swept_floats_that_print_alike_are_told_apart_on_the_sweep_figures():
    # a grid computed in floats ("train.lr" = [0.1, 0.1 + 0.2, 0.3]) holds two learning rates
    # that %g prints as 0.3: the heatmap's axis read "0.1, 0.3, 0.3#1" (which is which?), and
    # 1-key bars likewise
    import pandas as pd

    from depthlab import plot

    lrs = [0.1, 0.1 + 0.2, 0.3, 1234567.0, 1234568.0]
    runs = pd.DataFrame([{"train.lr": lr, "model.activation": act, "val_acc": 0.5 + i / 20,
                          "status": "finished", "name": f"p{i}"}
                         for i, (lr, act) in enumerate((lr, act) for lr in lrs
                                                       for act in ("tanh", "relu"))])
    fig = plot.sweep_metric(runs, ["train.lr", "model.activation"])
    ticks = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert ticks == ["0.1", "0.3", "0.30000000000000004", "1234567.0", "1234568.0"], ticks
    fig = plot.sweep_metric(runs[runs["model.activation"] == "tanh"], ["train.lr"])
    ticks = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert ticks == ["0.1", "0.3", "0.30000000000000004", "1234567.0", "1234568.0"], ticks


@pytest.mark.parametrize("key, want", [
    ("model.activation_kwargs.negative_slope",
     '"model.activation_kwargs" = [{negative_slope = ...}, ...]'),
    ("train.loss_kwargs.label_smoothing", '"train.loss_kwargs" = [{label_smoothing = ...}, ...]'),
    ("data.options.noise", '"data.options" = [{noise = ...}, ...]'),
])
def test_a_grid_key_inside_a_table_setting_names_the_tables_grid(tmp_path, key, want):
    # the nested dotted keys of other sweep tools (Hydra, W&B): "did you mean
    # "model.activation"?" / "train.loss" sent the user to another setting
    from depthlab.experiments.config import ConfigError

    raw = {"data": {"name": "clusters", "n": 60}, "model": {"sizes": ["auto", 4, "auto"]},
           "sweep": {key: [0.1, 0.2]}}
    with pytest.raises(ConfigError) as e:
        run_sweep(raw, tmp_path, echo=None)
    assert want in str(e.value) and "did you mean" not in str(e.value), str(e.value)
    assert not (tmp_path / "depthlab.db").exists()
