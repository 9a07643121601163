"""Round 16b: report/plot figures, the report table, divergence advice, playground, sweep."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg

from depthlab import plot
from depthlab.report import figures as f


def _visible_ticks(ax) -> list[tuple[float, str]]:
    FigureCanvasAgg(ax.figure).draw()
    lo, hi = ax.get_ylim()
    return [(t.get_loc(), t.label1.get_text()) for t in ax.yaxis.get_major_ticks()
            if lo <= t.get_loc() <= hi and t.label1.get_text()]


def test_a_log_axis_under_one_decade_labels_its_low_end():
    """Values 2.1e-4 .. 2e-3 got MaxNLocator's 0.5, 1.0, 1.5, 2.0 x10^-3: a line at
    2.2-2.6e-4 had no label below it."""
    fig, (ax,) = f._new_figure()
    ax.plot([1, 2, 3], [2.1e-4, 1e-3, 2.0e-3])
    ax.plot([1, 2, 3], [2.2e-4, 2.4e-4, 2.6e-4])
    ax.set_yscale("log")
    f._tidy_log_axis(ax.yaxis, 2.1e-4, 2.0e-3)
    ticks = _visible_ticks(ax)
    locs = [v for v, _ in ticks]
    assert min(locs) <= 2.6e-4, ticks
    assert [t for _, t in ticks] == ["0.2", "0.5", "1", "2"]
    assert ax.yaxis.get_offset_text().get_text() == "$\\times10^{-3}$"
    # plain numbers in the plain range; a very narrow range keeps evenly spaced ticks
    fig, (ax,) = f._new_figure()
    ax.plot([1, 2], [0.3, 2.5])
    ax.set_yscale("log")
    f._tidy_log_axis(ax.yaxis, 0.3, 2.5)
    assert [t for _, t in _visible_ticks(ax)] == ["0.5", "1", "2"]
    fig, (ax,) = f._new_figure()
    ax.plot([1, 2], [1.0, 1.3])
    ax.set_yscale("log")
    f._tidy_log_axis(ax.yaxis, 1.0, 1.3)
    assert len(_visible_ticks(ax)) >= 3


def _probes(zero_layer: int | None) -> pd.DataFrame:
    rows = [(s, la, "grad_pre_std", 0.0 if la == zero_layer else 1e-3 * la)
            for s in (0, 10) for la in (1, 2, 3)]
    return pd.DataFrame(rows, columns=["step", "layer", "quantity", "value"])


def test_an_overlay_names_the_runs_whose_layers_are_zero():
    """3 of 4 runs with a zero layer: the title said "3 runs: layer 1: zero" without naming
    them."""
    runs = {"relu-he": _probes(1), "tanh-xavier": _probes(1), "selu-lecun": _probes(1),
            "ok-run": _probes(None)}
    fig = plot.gradient_per_layer(runs, theory=False)
    title = fig.axes[0].get_title()
    assert "\nrelu-he, tanh-xavier, selu-lecun:\nlayer 1: zero" in title, title
    every = plot.gradient_per_layer({k: _probes(2) for k in ("a", "b", "c")}, theory=False)
    assert "all 3 runs: layer 2: zero" in every.axes[0].get_title()
    many = plot.gradient_per_layer({f"run-{i}": _probes(1 if i else None) for i in range(6)},
                                   theory=False)
    assert "5 runs (run-1, run-2, …):\nlayer 1: zero" in many.axes[0].get_title()
    assert np.isfinite(fig.axes[0].get_ylim()).all()
    # the two panels' titles do not run into each other
    FigureCanvasAgg(fig).draw()
    left, right = (ax.title.get_window_extent() for ax in fig.axes[:2])
    assert left.x1 < right.x0, (left, right)
    # the "x10^-3" over the axis lifts the left title: it stays below the figure's title
    assert left.y1 <= fig._suptitle.get_window_extent().y0 + 1


def test_divergence_advice_does_not_recommend_the_initializer_the_network_has():
    """A SELU + lecun_normal net that diverged was told to "use a variance-preserving
    initializer"; a glorot_uniform SELU net still is."""
    import depthlab as dl
    from depthlab.training.history import DivergenceReport
    from depthlab.training.trainer import fit

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8)).astype(np.float32)
    y = rng.integers(0, 3, 64)
    messages = {}
    for init in ("lecun_normal", "glorot_uniform"):
        net = dl.mlp([8, 16, 16, 3], activation="selu", init=init, seed=0)
        hist = fit(net, x, y, epochs=2, lr=1e4, batch_size=16)
        assert hist.divergence is not None
        messages[init] = hist.divergence.message
    assert "use a variance-preserving" not in messages["lecun_normal"]
    assert ("Lower the learning rate or add batch normalization (the network already has a "
            "variance-preserving initializer, lecun_normal)") in messages["lecun_normal"]
    assert "use a variance-preserving initializer" in messages["glorot_uniform"]
    first = DivergenceReport(step=1, epoch=1, loss=float("nan"), layer="dense1",
                             nonfinite_parameters=[], batchnorm=True, before_update=True,
                             matched_init="he_uniform")
    assert "use a variance-preserving" not in first.message
    assert "he_uniform, and batch normalization" in first.message
    assert "standardize them" in first.message


def _flow_row(tmp_path, grads: dict, status: str) -> str:
    from depthlab.experiments.store import RunRecord, Store
    from depthlab.report import build

    rows = [{"step": step, "layer": layer, "quantity": "grad_pre_std", "value": v}
            for step, values in grads.items() for layer, v in enumerate(values, 1)]
    config = {"data": {"name": "digits"}, "model": {"sizes": [64, 64, 64, 64, 10],
                                                    "activation": "relu", "init": "he_normal"},
              "train": {"optimizer": "sgd", "lr": 50.0}}
    with Store(tmp_path) as store:
        store.add_run(RunRecord(id="r", name="r", kind="run", sweep=None, status=status,
                                config=config, metrics={"steps": 3}, seconds=1.0,
                                steps=pd.DataFrame({"step": [1, 2, 3], "loss": [3.0, 4, 5]}),
                                probes=pd.DataFrame(rows)))
    store = Store(tmp_path)
    group = build._Group("all", "All runs", "runs", build._runs_table(store))
    text = build._flow_section(store, group, build._Pngs())
    row = text[text.index("<td>r</td>"):]
    return row[:row.index("</tr>")]


def test_a_diverged_runs_meaning_says_its_flow_reading_is_the_inits(tmp_path):
    """A run NaN after init: 'ratio at end: none (diverged)' beside 'flows: within a factor
    1.04 of 1', its init's reading presented as the run's state."""
    nan = float("nan")
    row = _flow_row(tmp_path / "a", {0: (7.21e-4, 6.91e-4, 6.93e-4), 2: (nan,) * 3},
                    "diverged")
    assert ("at init, flows: within a factor 1.04 of 1; no finite ratio after it (diverged)"
            in row), row
    # still flowing at its last finite step
    row = _flow_row(tmp_path / "b", {0: (7.21e-4, 6.91e-4, 6.93e-4), 2: (8e-4, 7e-4, 7e-4),
                                     3: (nan,) * 3}, "diverged")
    assert "at init, flows: within a factor 1.04 of 1; at step 2 (last finite) too" in row, row
    # a finished run flowing at init and at the end: one reading for both, no prefix
    row = _flow_row(tmp_path / "c", {0: (7.21e-4, 6.91e-4, 6.93e-4), 2: (8e-4, 7e-4, 7e-4)},
                    "finished")
    assert "<td>flows: within a factor" in row and "at init" not in row, row


def test_the_playground_batch_norm_message_offers_no_full_batch_and_presets_answer_200():
    """The playground's batch-norm message said 'accepted: train.batch_size >= 2 or "full"',
    which its integer control refuses; /api/preset answered a page with a bad seed 400 (a
    console error in the browser beside the page's message)."""
    import json
    import urllib.error
    import urllib.parse
    import urllib.request

    import pytest

    from depthlab.playground import setup as S
    from depthlab.playground.server import Background

    with pytest.raises(S.SetupError) as err:
        S.to_config(S.parse_setup({"model.batchnorm": "true", "train.batch_size": "1"}))
    assert "full" not in str(err.value)
    assert "accepted: train.batch_size >= 2 (or model.batchnorm = false)" in str(err.value)
    assert err.value.key == "train.batch_size"

    seed = next(k for k in S.DEFAULTS if k.endswith(".seed"))
    with Background(memory_limit=256 * 2**20) as bg:
        def get(params):
            url = bg.url + "api/preset?" + urllib.parse.urlencode(params)
            try:
                with urllib.request.urlopen(url, timeout=10) as r:
                    return r.status, json.loads(r.read())
            except urllib.error.HTTPError as e:
                return e.code, json.loads(e.read())

        status, body = get({"name": "he", seed: "abc"})
        assert status == 200 and body["ok"] is False and body["key"] == seed, body
        assert "abc" in body["message"]
        status, body = get({"name": "he"})
        assert status == 200 and body["ok"] is True
        status, body = get({"name": "no-such-preset"})
        assert status == 400 and "unknown preset 'no-such-preset'" in body["message"]


SWEEP_TOML = """\
name = "r16b"
[data]
name = "spirals"
n = 60
[model]
sizes = ["auto", 4, "auto"]
[train]
max_steps = 2
batch_size = 8
[probes]
every = 0
[sweep]
"train.seed" = [7, 7, 8]
"""


def test_a_value_listed_twice_in_a_grid_is_a_repeated_point_not_a_stored_one(
        tmp_path, capsys, monkeypatch):
    """A grid [7, 7, 8] on a new store ended 'skipped 1 already stored', though nothing was
    stored before the sweep."""
    import json

    from helpers.cli import one_blas_thread, run_cli

    one_blas_thread(monkeypatch)
    cfg = tmp_path / "sweep.toml"
    cfg.write_text(SWEEP_TOML)
    code, out, err = run_cli(capsys, "sweep", cfg, "--out", tmp_path / "out")
    assert code == 0, err
    assert "skipped 0 already stored and 1 repeated grid point (" in out, out
    code, out, err = run_cli(capsys, "sweep", cfg, "--out", tmp_path / "out", "--json")
    res = json.loads(out)
    assert code == 0 and res["skipped"] == 3 and res["repeated"] == 1, res
