"""Round 25: the figures a learner or teacher looks at (helper figures25). Each test failed
before its fix; they check the figures' data (ticks, lines, texts), not pixels."""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd

matplotlib.use("Agg")


def _probe_rows(layers: int, steps=(0, 10, 20), quantity: str = "grad_pre_std"):
    return pd.DataFrame([{"step": s, "layer": la, "quantity": quantity,
                          "value": 10.0 ** (la - layers)}
                         for s in steps for la in range(1, layers + 1)])


def test_the_gradient_heatmap_numbers_its_rows_by_whole_layers():
    # a 20-layer run's heatmap read "layer 2.5, 5.0, 7.5, ..." on its y axis (matplotlib's
    # automatic ticks; layers are whole numbers): the x axes had an integer locator, this
    # one did not
    from depthlab import plot

    fig = plot.gradient_heatmap(_probe_rows(20))
    ax = fig.axes[0]
    fig.canvas.draw()
    lo, hi = sorted(ax.get_ylim())
    ticks = [t for t in ax.get_yticks() if lo <= t <= hi]
    assert len(ticks) >= 3
    assert all(float(t).is_integer() for t in ticks), ticks
    labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    assert labels and all("." not in s for s in labels), labels


def test_a_diverged_runs_gradient_profile_says_its_later_steps_were_not_finite():
    # a run that diverged by its second probe (every layer's gradient NaN there) drew one
    # panel, "at initialization", with not a word about the step recorded after it: the
    # reader could not tell the run had been probed later at all
    from depthlab import plot

    table = _probe_rows(4, steps=(0, 3))
    table.loc[table["step"] == 3, "value"] = np.nan
    fig = plot.gradient_per_layer({"div": table})
    titles = [ax.get_title() for ax in fig.axes]
    assert len(fig.axes) == 2, titles
    assert "step 0, the last finite" in titles[1], titles
    # the drawn end line is step 0's, as the stored table holds it
    line = fig.axes[1].lines[0]
    np.testing.assert_allclose(line.get_ydata(), table[table["step"] == 0]["value"])
