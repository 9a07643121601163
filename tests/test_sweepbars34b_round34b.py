"""Round 34b (sweepbars34b): a sweep report over table/list values and --limit reruns."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

BASE = {"data": {"name": "clusters", "n": 60, "options": {"d": 4, "n_classes": 2}},
        "model": {"sizes": ["auto", 4, "auto"]},
        "train": {"lr": 0.05, "batch_size": 16, "max_steps": 2, "optimizer": "sgd"},
        "probes": {"every": 0}}


def test_a_grid_of_tables_and_lists_is_a_heatmap_labelled_by_the_grids_values(tmp_path,
                                                                             monkeypatch):
    # was: varying_keys split the two swept keys into depth, width, momentum, nesterov, so
    # the report drew 6 bars named "optimizer_kwargs={momentum=0.…#1", "…#2": not told apart
    from matplotlib.collections import QuadMesh

    from depthlab import plot
    from depthlab.experiments import run_sweep
    from depthlab.report import write_report

    raw = {**BASE, "sweep": {
        "train.optimizer_kwargs": [{"momentum": 0.9}, {"momentum": 0.0},
                                   {"momentum": 0.5, "nesterov": True}],
        "model.sizes": [["auto", 8, 8, "auto"], ["auto", 4, "auto"]]}}
    run_sweep(raw, tmp_path / "s", echo=None)
    drawn = []
    real = plot.sweep_metric

    def spy(runs, keys, *a, **k):
        fig = real(runs, keys, *a, **k)
        ax = fig.axes[0]
        drawn.append((list(keys), [t.get_text() for t in ax.get_xticklabels()],
                      [t.get_text() for t in ax.get_yticklabels()],
                      any(isinstance(c, QuadMesh) for c in ax.collections)))
        return fig

    monkeypatch.setattr(plot, "sweep_metric", spy)
    write_report(tmp_path / "s", echo=None)
    assert drawn
    for keys, xs, ys, heatmap in drawn:
        assert keys == ["train.optimizer_kwargs", "model.sizes"]
        assert heatmap  # a full 3 x 2 grid
        assert xs == ["momentum=0.9", "momentum=0", "momentum=0.5, nesterov=True"]  # grid order
        assert ys == ["[auto, 8×2, auto]", "[auto, 4, auto]"]


def test_table_labels_name_the_entries_that_differ():
    from depthlab.report.figures import _fmt_values

    assert _fmt_values([{"momentum": 0.9, "dampening": 0.0},
                        {"momentum": 0.0, "dampening": 0.0}]) == ["momentum=0.9", "momentum=0"]
    assert _fmt_values([{"momentum": 0.9}, {"momentum": 0.9, "nesterov": True}]) == [
        "momentum=0.9", "momentum=0.9, nesterov=True"]


def test_a_limit_run_after_a_longer_one_keeps_the_grids_size(tmp_path):
    # was: --limit 1 after a stopped run of the 3-point grid recorded the sweep's size as 1,
    # so its report no longer said "2 of the sweep's 3 points stored"
    from depthlab.experiments import Store, run_sweep
    from depthlab.report import write_report

    raw = {**BASE, "sweep": {"train.seed": [0, 1, 2]}}
    out = tmp_path / "s"
    run_sweep(raw, out, limit=2, echo=None)
    with Store(out) as s:
        (sid, n), = s.sweep_sizes().items()
        assert n == 2  # the first 2 of the grid: "2 of 2"
        s.set_sweep_size(sid, 3)  # as a full run stopped after its second point records it
    res = run_sweep(raw, out, limit=1, echo=None)
    assert res.sweep == sid
    with Store(out, readonly=True) as s:
        assert s.sweep_sizes()[sid] == 3
    page = write_report(out, echo=None)
    assert "2 of the sweep's 3 points stored (1 not run yet" in page.read_text()
    run_sweep(raw, out, echo=None)
    with Store(out, readonly=True) as s:
        assert s.sweep_sizes()[sid] == 3
