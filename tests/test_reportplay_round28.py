"""Round 28 (reportplay28): the HTML report's figures and the browser playground."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from helpers.ws import receive_matching
from websockets.sync.client import connect

from depthlab import plot


def _table(rows: dict[int, list[float]], quantity: str = "act_std") -> pd.DataFrame:
    return pd.DataFrame([{"step": s, "layer": i + 1, "quantity": quantity, "value": v}
                         for s, vals in rows.items() for i, v in enumerate(vals)])


def _decades(ax) -> float:
    lo, hi = ax.get_ylim()
    return math.log10(hi / lo)


def test_a_diverged_run_does_not_flatten_the_other_panels_profiles():
    # a learning-rate sweep whose largest rate blew up: its activations at the diverging step
    # reach 1e17..1e32 (finite), the sane runs sit between 0.3 and 0.7. One shared y axis
    # (0.3 .. 1e32) drew every run's profile at initialization as a flat line at the bottom
    sane = {0: [0.65, 0.5, 0.4, 0.35], 30: [0.7, 0.6, 0.5, 0.45]}
    blown = {0: [0.65, 0.5, 0.4, 0.35], 30: [1e17, 1e32, np.nan, np.nan]}
    fig = plot.activation_per_layer({"lr=0.1": _table(sane), "lr=80": _table(blown)})
    init, end = fig.axes[:2]
    assert _decades(init) < 2, init.get_ylim()  # the profiles at init fill their panel
    assert _decades(end) > 20, end.get_ylim()   # the explosion keeps its place at the end
    # each panel reads its own numbers: the right one has tick labels of its own
    fig.canvas.draw()
    assert any(t.get_visible() and t.get_text() for t in end.get_yticklabels())
    assert "own scale" in end.get_ylabel()


def test_panels_of_one_range_still_share_their_axis():
    # init and end within a decade or two of each other: one axis, so the eye compares them
    a = {0: [0.65, 0.5, 0.4, 0.35], 30: [0.9, 0.8, 0.7, 0.6]}
    b = {0: [1.0, 0.9, 0.8, 0.7], 30: [3.0, 2.0, 1.5, 1.2]}
    fig = plot.activation_per_layer({"a": _table(a), "b": _table(b)})
    init, end = fig.axes[:2]
    assert init.get_ylim() == end.get_ylim()
    assert end.get_ylabel() == ""


def _grid(values: list[list[float]]) -> pd.DataFrame:
    return pd.DataFrame([{"train.lr": lr, "model.activation": act, "train_loss": v,
                          "status": "finished"}
                         for act, row in zip(("tanh", "relu", "sigmoid", "selu"), values)
                         for lr, v in zip((0.001, 0.01, 0.1, 1.0, 50.0), row)])


def _cell_colours(fig) -> np.ndarray:
    mesh = fig.axes[0].collections[0]
    return mesh.cmap(mesh.norm(mesh.get_array()))


def test_one_runaway_loss_does_not_paint_every_other_cell_of_the_heatmap_one_colour():
    # an lr sweep where one relu run "finished" with a train loss of 8.5e17: a linear colour
    # scale 0 .. 8.5e17 painted the 19 other cells (0.64 .. 31) the very same yellow
    values = [[2.38, 2.32, 1.9, 0.643, 31.1], [2.35, 2.33, 2.16, 1.23, 8.52e17],
              [2.42, 2.41, 2.35, 2.3, 14.6], [2.86, 2.48, 1.1, 3.61, 2.5]]
    fig = plot.sweep_metric(_grid(values), ["train.lr", "model.activation"], "train_loss",
                            higher_is_better=False)
    rgba = _cell_colours(fig).reshape(4, 5, 4)
    best, typical = rgba[0, 3, :3], rgba[2, 0, :3]  # 0.643 and 2.42
    assert np.abs(best - typical).max() > 0.3, (best, typical)
    # the runaway cells take the scale's end colour, the bar says the scale stops (an arrow)
    cb = fig.axes[-1]
    assert len(fig.axes) == 2 and cb is not fig.axes[0]
    mesh = fig.axes[0].collections[0]
    assert mesh.norm.vmax < 100 and mesh.colorbar.extend in ("max", "both")
    # the numbers written in the cells stay the measured ones
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "8.52e+17" in texts and "0.643" in texts


def test_a_heatmap_without_a_runaway_value_keeps_its_full_colour_range():
    values = [[2.38, 2.32, 1.9, 0.643, 3.1], [2.35, 2.33, 2.16, 1.23, 4.0],
              [2.42, 2.41, 2.35, 2.3, 2.6], [2.86, 2.48, 1.1, 3.61, 2.5]]
    fig = plot.sweep_metric(_grid(values), ["train.lr", "model.activation"], "train_loss",
                            higher_is_better=False)
    mesh = fig.axes[0].collections[0]
    assert (mesh.norm.vmin, mesh.norm.vmax) == (0.643, 4.0)
    assert mesh.colorbar.extend == "neither"


def test_one_runaway_loss_does_not_flatten_the_other_bars():
    # one key swept: bars. The run that "finished" with a loss of 8.5e17 made the other bars
    # (0.6 .. 2.3) slivers at the bottom of a 1e17 axis
    runs = pd.DataFrame({"train.lr": [0.001, 0.01, 0.1, 1.0, 50.0, 100.0],
                         "train_loss": [2.3, 2.1, 1.2, 0.6, 8.5e17, np.nan],
                         "status": ["finished"] * 5 + ["diverged"]})
    fig = plot.sweep_metric(runs, ["train.lr"], "train_loss", higher_is_better=False)
    ax = fig.axes[0]
    assert ax.get_ylim()[1] < 10, ax.get_ylim()
    texts = [t.get_text() for t in ax.texts]
    assert "8.5e+17 ↑" in texts and "0.6" in texts and "✗ diverged" in texts
    assert "cut" in ax.get_title()
    # without a runaway value: the bars' own heights, no mark
    fig = plot.sweep_metric(runs.iloc[:4], ["train.lr"], "train_loss", higher_is_better=False)
    assert not any("↑" in t.get_text() for t in fig.axes[0].texts)
    assert fig.axes[0].get_title() == "train_loss by train.lr"


def _percentile_rows(steps: dict[int, float]) -> pd.DataFrame:
    rows = []
    for s, scale in steps.items():
        for k, z in ((2, -2.0), (15, -1.0), (50, 0.1), (85, 1.0), (98, 2.0)):
            rows.append({"step": s, "layer": 1, "quantity": f"pre_p{k}", "value": z * scale})
        rows.append({"step": s, "layer": 1, "quantity": "act_std", "value": scale})
    return pd.DataFrame(rows)


def test_a_diverged_runs_percentiles_keep_the_first_steps_readable():
    # the percentile bands of a diverged run: 1e29 at its last finite step drew every earlier
    # step's band (about ±2) as a flat line on 0 of a linear axis; the activation figure beside
    # it already switches to symlog for this
    from depthlab.report import figures

    for steps in ({0: 1.0, 10: 1.2, 20: 1.1, 30: 7e28}, {0: 1.0, 3: 7e28}):  # band, few steps
        ax = figures.percentile_bands(_percentile_rows(steps), layer=1).axes[0]
        assert ax.get_yscale() == "symlog", (steps, ax.get_yscale())
        assert "symlog" in ax.get_ylabel() and "±1" in ax.get_ylabel()
    # a run that stays in range: linear as before
    ax = figures.percentile_bands(_percentile_rows({0: 1.0, 10: 3.0, 20: 5.0}), 1).axes[0]
    assert ax.get_yscale() == "linear" and ax.get_ylabel() == "pre-activation value"


@pytest.mark.parametrize("frame", [
    '{"cmd": "setup", "query": ' + "[" * 100_000 + "]" * 100_000 + "}",
    "[" * 100_000 + "]" * 100_000])
def test_a_json_frame_nested_too_deeply_is_one_error_and_the_tab_goes_on(server, frame):
    # JSON nested 100,000 deep makes json.loads raise RecursionError (not ValueError): a frame
    # naming "setup" killed the tab's loop (the connection dropped, a traceback in the server's
    # log); another one was answered "RecursionError: maximum recursion depth exceeded ..."
    with connect(server.url.replace("http://", "ws://") + "ws", max_size=None) as ws:
        ws.send(json.dumps({"cmd": "setup", "query": {"model.depth": "2", "model.width": "4"}}))
        receive_matching(ws, lambda m: m["type"] == "ready")
        ws.send(frame)
        m = receive_matching(ws, lambda m: m["type"] == "error")
        assert m["message"].startswith("not a command"), m["message"][:200]
        assert "Recursion" not in m["message"]
        ws.send(json.dumps({"cmd": "step"}))
        assert receive_matching(ws, lambda m: m["type"] == "update" and m["step"] > 0)["step"] == 1


def test_the_best_runs_of_a_sweep_where_most_failed_keep_their_place_on_the_scale():
    # eight runs that learned nothing (accuracy about 0.1) and four that learned: the runaway
    # rule must not cut the good runs' bars or give them the bar's end colour
    acc = [0.098, 0.1, 0.102, 0.11, 0.095, 0.1, 0.105, 0.099, 0.85, 0.9, 0.88, 0.3]
    runs = pd.DataFrame({"train.lr": [10.0 ** -k for k in range(12)], "val_acc": acc,
                         "status": ["finished"] * 12})
    ax = plot.sweep_metric(runs, ["train.lr"], "val_acc").axes[0]
    assert ax.get_ylim()[1] >= 0.9 and not any("↑" in t.get_text() for t in ax.texts)
    grid = _grid([[0.098, 0.1, 0.102, 0.11, 0.095], [0.1, 0.105, 0.099, 0.85, 0.9],
                  [0.88, 0.3, 0.1, 0.1, 0.101], [0.097, 0.1, 0.1, 0.103, 0.1]])
    grid = grid.rename(columns={"train_loss": "val_acc"})
    mesh = plot.sweep_metric(grid, ["train.lr", "model.activation"], "val_acc").axes[0] \
        .collections[0]
    assert mesh.norm.vmax == 0.9 and mesh.colorbar.extend == "neither"


def test_a_float64_runs_activations_near_the_largest_float_are_on_the_axis():
    # a float64 run diverging: act_std 1e300 at its last finite step. matplotlib's log margin
    # above 1e300 overflowed and the axis fell back to 1 .. 10: no line of either run shown
    fig = plot.activation_per_layer({
        "lr=0.1": _table({0: [0.6, 0.5, 0.4], 10: [0.7, 0.6, 0.5]}),
        "lr=1e3": _table({0: [0.6, 0.5, 0.4], 10: [np.inf, 1e300, 2.0]})})
    fig.canvas.draw()
    end = fig.axes[1]
    lo, hi = end.get_ylim()
    assert lo <= 0.5 and 1e300 <= hi < np.inf, (lo, hi)


@pytest.mark.parametrize("big", [1e300, 1e307])
def test_values_near_the_largest_float_stay_on_the_one_run_figures_axes(big):
    # a float64 run diverging: its loss, activation means and percentiles reach 1e300 at the
    # last finite step. matplotlib's margins beyond that overflowed, and the axes fell back to
    # 1 .. 10 (the loss, log) or -0.001 .. 0.001 (symlog): not one value drawn in view
    from depthlab.report import figures

    rows = _percentile_rows({0: 1.0, 10: 1.2, 20: big / 3})
    rows = pd.concat([rows, rows[rows.quantity == "act_std"].assign(quantity="act_mean")])
    loss = pd.DataFrame({"step": np.arange(1, 21),
                         "loss": np.r_[np.linspace(2, 1, 10), np.geomspace(10, big, 10)]})
    for fig in (figures.percentile_bands(rows, 1), plot.activation_bands(rows),
                figures.training_curves(loss, None, None)):
        fig.canvas.draw()  # (ticks at 10^320 = inf raised OverflowError)
        ax = fig.axes[0]
        lo, hi = ax.get_ylim()
        assert np.isfinite([lo, hi]).all() and hi >= big * 0.99 and lo <= 1.0, (ax.title, lo, hi)


def test_gradients_near_the_largest_float_are_drawn_in_the_heatmap_and_update_figure():
    # a float64 run's gradients / update ratios of 1e300..1.7e308: the heatmap's colour bar put
    # a tick at 10^310 = inf (OverflowError, no figure); the update ratio's log axis fell back
    # to 1 .. 10 with no line in view
    for q, draw in (("grad_pre_std", plot.gradient_heatmap), ("update_ratio", plot.update_ratio)):
        table = _table({0: [1e-3, 1e-2, 1e-1], 10: [1e100, 1e200, 1e300],
                        20: [1e301, 1e305, 1.7e308]}, q)
        fig = draw(table)
        fig.canvas.draw()
        if q == "update_ratio":
            lo, hi = fig.axes[0].get_ylim()
            assert lo <= 1e-3 and 1.7e308 <= hi < np.inf, (lo, hi)


def test_layers_not_finite_at_every_step_are_named_not_dropped_from_the_report_figures():
    # the report reads inf as NaN: a float64 run whose first layers' gradients overflowed at
    # every recorded step lost those layers from the wide table, so its gradient figure and
    # heatmap started at layer 4 of 6 and said nothing about layers 1-3
    from depthlab.report import build, figures

    table = build._clean_probes(_table({0: [np.inf, np.inf, np.inf, 1e150, 1e100, 1e50],
                                        5: [np.nan] * 6}, "grad_pre_std"))
    fig = plot.gradient_per_layer(table)
    assert "layers 1-3: not finite" in fig.axes[0].get_title(), fig.axes[0].get_title()
    heat = figures.gradient_heatmap(table)
    assert min(heat.axes[0].get_ylim()) <= 1, heat.axes[0].get_ylim()  # rows from layer 1
