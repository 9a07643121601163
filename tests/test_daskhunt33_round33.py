"""Round 33 (daskhunt33): sweeps on Dask against the local pool.

A sweep's points finish in another order on Dask (or ``--jobs N``) than in the grid; the
report must draw them in the grid's order whatever the executor.
"""

from __future__ import annotations

from depthlab import plot
from depthlab.experiments import run_sweep
from depthlab.experiments.executors import Executor, compute_point
from depthlab.report import write_report

BASE = {
    "data": {"name": "clusters", "n": 60, "options": {"d": 4, "n_classes": 2}},
    "model": {"sizes": ["auto", 4, "auto"]},
    "train": {"lr": 0.05, "batch_size": 16, "max_steps": 2},
    "probes": {"every": 0},  # no per-layer figures: the sweep figures alone
}


class _LastFirst(Executor):
    """Finishes the grid's points last first, as Dask workers may deliver them."""

    description = "last point first"

    def run(self, tasks, done):
        for task in reversed(list(tasks)):
            done(task, compute_point(task))


def test_a_dask_sweeps_report_draws_its_points_in_the_grids_order(tmp_path, monkeypatch):
    # two sweeps of one store, their points stored last first as Dask may deliver them: the
    # heatmap of optimizer x activation drew adam before "SGD" and relu before tanh, and the
    # bars of three keys went by the report's key ranking (activation, then lr, then
    # optimizer), the labels naming the optimizer first reading sgd/adam/sgd/adam
    two = {**BASE, "sweep": {"train.optimizer": ["SGD", "adam"],
                             "model.activation": ["tanh", "relu"]}}
    three = {**BASE, "sweep": {"train.optimizer": ["sgd", "adam"],
                               "model.activation": ["tanh", "relu"],
                               "train.lr": [0.1, 0.01]}}
    for raw in (two, three):
        run_sweep(raw, tmp_path, executor=_LastFirst(), echo=None)
    heatmaps, bars = [], []
    real = plot.sweep_metric

    def spy(runs, keys, *args, **kwargs):
        fig = real(runs, keys, *args, **kwargs)
        ax = fig.axes[0]
        xs = [t.get_text() for t in ax.get_xticklabels()]
        (heatmaps if len(keys) == 2 else bars).append(
            (xs, [t.get_text() for t in ax.get_yticklabels()]))
        return fig

    monkeypatch.setattr(plot, "sweep_metric", spy)
    write_report(tmp_path, max_runs=0, max_diverged=0, echo=None)
    assert heatmaps and bars
    for xs, ys in heatmaps:  # one axis each key, values as the grid lists them
        assert {tuple(xs), tuple(ys)} == {("sgd", "adam"), ("tanh", "relu")}, (xs, ys)
    want = [(o, a, lr) for o in ("sgd", "adam") for a in ("tanh", "relu")
            for lr in ("0.01", "0.1")]  # numbers ascending, as the report orders them
    for labels, _ in bars:
        got = [(next(o for o in ("sgd", "adam") if o in t),
                next(a for a in ("tanh", "relu") if a in t), t.rsplit("=", 1)[-1])
               for t in labels]
        assert got == want, labels
