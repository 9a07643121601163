"""Round 28 (reportplay28): the HTML report's figures and the browser playground."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

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
