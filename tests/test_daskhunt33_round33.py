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
    "probes": {"every": 1},
}


class _LastFirst(Executor):
    """Finishes the grid's points last first, as Dask workers may deliver them."""

    description = "last point first"

    def run(self, tasks, done):
        for task in reversed(list(tasks)):
            done(task, compute_point(task))


def test_report_draws_a_dask_sweeps_text_values_in_the_grids_order(tmp_path, monkeypatch):
    raw = {**BASE, "sweep": {"train.optimizer": ["SGD", "adam"],
                             "model.activation": ["tanh", "relu"]}}
    run_sweep(raw, tmp_path, executor=_LastFirst(), echo=None)
    drawn = []
    real = plot.sweep_metric

    def spy(runs, keys, *args, **kwargs):
        fig = real(runs, keys, *args, **kwargs)
        ax = fig.axes[0]
        drawn.append(([t.get_text() for t in ax.get_xticklabels()],
                      [t.get_text() for t in ax.get_yticklabels()]))
        return fig

    monkeypatch.setattr(plot, "sweep_metric", spy)
    write_report(tmp_path, max_runs=0, max_diverged=0, echo=None)
    assert drawn
    for xs, ys in drawn:  # a heatmap: one axis each key, values as the grid lists them
        axes = {tuple(xs), tuple(ys)}
        assert axes == {("sgd", "adam"), ("tanh", "relu")}, (xs, ys)
