"""Round 36 (reporthunt36): figures and report pages that mislead, playground, Dask sweeps."""

from __future__ import annotations

import re


def _tiny_config(depth: int, **train) -> dict:
    return {"name": "edge", "data": {"name": "spirals", "seed": 0, "n": 200},
            "model": {"sizes": ["auto", "auto"], "depth": depth, "width": 8,
                      "activation": "tanh", "init": "glorot_uniform"},
            "train": {"loss": "cross_entropy", "optimizer": "sgd", "lr": 0.05,
                      "batch_size": "full", "epochs": 1, "seed": 0, **train},
            "probes": {"every": 1}}


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_a_network_without_hidden_layer_is_not_told_its_watch_came_too_late(tmp_path):
    """`depth = 0` (sizes = [in, out], a logistic regression, the bottom rung of a depth
    ladder): the report's run page said "Only the loss was probed: no layer ran while the
    hooks were on (a Watch created after its step's forward, ...)", a depthlab.torch
    diagnosis for a NumPy run that has no layer to probe, and the overview's gradient table
    read "not measured" as if its probes had failed."""
    from depthlab.experiments import Store, execute
    from depthlab.report import build, write_report

    store = Store(tmp_path)
    store.add_run(execute(_tiny_config(0)))
    store.close()
    text = _text(write_report(tmp_path).read_text(encoding="utf-8"))
    assert "a Watch created after" not in text
    assert "This network has no hidden layer (depth 0)" in text
    # the overview's ratio table (beside a run of 2 hidden layers)
    store = Store(tmp_path)
    store.add_run(execute(_tiny_config(2)))
    runs = build._runs_table(store)
    flow = _text(build._flow_section(store, build._Group("all", "All", "overview", runs),
                                     build._Pngs()))
    store.close()
    row = flow[flow.index("depth=0"):]
    row = row[:row.index("depth=2")]
    assert "not measured" not in row and "no hidden layer (depth 0)" in row, row
