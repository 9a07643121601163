"""Round 25: the figures a learner or teacher looks at (helper figures25). Each test failed
before its fix; they check the figures' data (ticks, lines, texts), not pixels."""

from __future__ import annotations

import matplotlib
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
