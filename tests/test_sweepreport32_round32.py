"""Round 32 (sweepreport32): what a researcher reads from a finished sweep's report and exports."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from depthlab import plot  # noqa: E402


def _bar_values(fig) -> list[float]:
    """Heights of the drawn (blue, finite) bars from left to right."""
    ax = fig.axes[0]
    bars = [p for p in ax.patches if p.get_height() > 0 and p.get_facecolor()[3] > 0]
    bars.sort(key=lambda p: p.get_x())
    return [round(p.get_height(), 6) for p in bars]


def test_a_three_key_sweeps_bars_follow_the_grid_in_numeric_order_not_finishing_order():
    # a sweep of lr x optimizer x seed run with --jobs 2 stores its points in the order they
    # finished; the bar chart drew them in that order (lr=0.01 between two lr=0.001 bars), and
    # 1e-05 sorts after 0.0001 as text: the bars must follow lr ascending, then the other keys
    rng = np.random.default_rng(0)
    rows = [(lr, opt, seed) for lr in (1e-05, 0.0001, 0.01, 0.1) for opt in ("sgd", "adam")
            for seed in (0, 1)]
    order = rng.permutation(len(rows))
    runs = pd.DataFrame(
        [{"train.lr": rows[i][0], "train.optimizer": rows[i][1], "train.seed": rows[i][2],
          "name": f"s:lr={rows[i][0]},optimizer={rows[i][1]},seed={rows[i][2]}",
          "status": "finished", "val_acc": 0.01 * (i + 1)} for i in order])
    fig = plot.sweep_metric(runs, ["train.lr", "train.optimizer", "train.seed"], "val_acc")
    # text values keep the order in which they first appear; numbers ascend
    first = list(dict.fromkeys(runs["train.optimizer"]))
    grid = sorted(range(len(rows)), key=lambda i: (rows[i][0], first.index(rows[i][1]),
                                                   rows[i][2]))
    expected = [round(0.01 * (i + 1), 6) for i in grid]
    assert _bar_values(fig) == expected
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert "lr=1e-05" in labels[0] and "lr=0.1" in labels[-1], labels


def test_a_key_mixing_numbers_and_a_word_orders_its_numbers_ascending():
    # "train.batch_size" = [8, 16, 32, "full"] run with --jobs 2: a mixed key kept the store's
    # (finishing) order, 32, full, 8, 16 on the axis; its numbers ascend, the word after them
    runs = pd.DataFrame({"train.batch_size": [32, "full", 8, 16], "status": ["finished"] * 4,
                         "val_acc": [0.3, 0.4, 0.1, 0.2]})
    fig = plot.sweep_metric(runs, "train.batch_size", "val_acc")
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels == ["8", "16", "32", "full"], labels
    assert _bar_values(fig) == [0.1, 0.2, 0.3, 0.4]


def _store_with_a_sweep(tmp_path):
    from test_report import synthetic_record

    from depthlab.experiments import Store

    s = Store(tmp_path / "st")
    for k in range(2):
        s.add_run(synthetic_record(f"pt{k}abcdef01", sweep="sw-0123456789",
                                   lr=0.1 * (k + 1), probes=k == 0))
    return s


def test_store_reads_of_an_unknown_run_or_sweep_say_so_instead_of_an_empty_table(tmp_path):
    # `depthlab runs --sweep sw-01` takes the start of a sweep's id; Store.runs(sweep="sw-01")
    # returned an empty table, and Store.probes("nope") / steps(...) of a mistyped run id an
    # empty one too, read as "this run recorded nothing"
    import pytest

    with _store_with_a_sweep(tmp_path) as s:
        assert len(s.runs(sweep="sw-0123456789")) == 2
        assert list(s.runs(sweep="sw-01")["id"]) == list(s.runs(sweep="sw-0123456789")["id"])
        with pytest.raises(ValueError, match=r"'sw-99' is not a sweep of .*sw-0123456789"):
            s.runs(sweep="sw-99")
        assert len(s.probes("pt0abcdef01")) > 0
        for read in (s.steps, s.probes, s.histograms, s.epochs, s.evals, s.jacobian):
            with pytest.raises(KeyError, match="no run with id 'nope'"):
                read("nope")
        with pytest.raises(KeyError, match="'pt1abcdef01'"):  # the start of one run's id
            s.steps("pt1")


def test_the_exported_runs_table_keeps_its_counts_whole_numbers(tmp_path):
    # runs.csv wrote steps as "200.0" (and runs.parquet as float64) because a failed run
    # has none: the counts are whole numbers, blank / null where a run has none
    import csv
    import dataclasses

    from test_report import synthetic_record

    with _store_with_a_sweep(tmp_path) as s:
        failed = synthetic_record("failed000001", status="failed", sweep="sw-0123456789",
                                  probes=False)
        s.add_run(dataclasses.replace(failed, metrics={}))  # no step counted
        s.export(tmp_path / "csv")
        s.export(tmp_path / "pq", fmt="parquet")
    with open(tmp_path / "csv" / "runs.csv", newline="") as fh:
        rows = {r["id"]: r for r in csv.DictReader(fh)}
    assert rows["pt0abcdef01"]["steps"] == "200", rows["pt0abcdef01"]["steps"]
    assert rows["pt0abcdef01"]["seconds"] == "1.5" and rows["failed000001"]["steps"] == ""
    pq = pd.read_parquet(tmp_path / "pq" / "runs.parquet").set_index("id")
    assert str(pq["steps"].dtype).lower() == "int64", pq.dtypes
    assert pq.loc["pt0abcdef01", "steps"] == 200 and pd.isna(pq.loc["failed000001", "steps"])
