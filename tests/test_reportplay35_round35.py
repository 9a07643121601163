"""Round 35 (reportplay35): what a person sees in the HTML report and the playground."""

from __future__ import annotations

import numpy as np
import pandas as pd


def _drawn_segments(line) -> list[tuple[float, float]]:
    """The (x0, x1) of every segment a matplotlib line draws: consecutive points both finite
    (a NaN point breaks the line)."""
    xy = np.asarray(line.get_xydata(), float)
    ok = np.isfinite(xy).all(axis=1)
    return [(xy[i, 0], xy[i + 1, 0]) for i in range(len(xy) - 1) if ok[i] and ok[i + 1]]


def test_the_training_loss_is_not_drawn_across_steps_whose_loss_was_not_finite():
    """A depthlab.torch Watch run whose loop skipped two bad batches (loss NaN at steps 5, 6,
    as a GradScaler skips an overflowed step) and trained on. The figure's title said "not
    drawn: not finite (NaN/inf) at steps 5, 6", but the per-step line joined step 4 to step 7
    with a straight segment: losses never recorded, drawn as if they were (the update-ratio
    and activation figures beside it break their lines there). Also 120 steps (with the EMA):
    the smoothed line must not cross the gap either, and a finite step alone between two NaN
    steps is still shown (a dot)."""
    from depthlab.report import figures

    for n, bad in ((20, [5, 6]), (120, [40, 41, 42, 60, 62])):
        x = np.arange(n)
        loss = 1.1 - 0.002 * x
        loss[bad] = np.nan
        fig = figures.training_curves(pd.DataFrame({"step": x, "loss": loss}))
        ax = fig.axes[0]
        assert "not finite (NaN/inf)" in ax.get_title()
        finite = set(x[np.isfinite(loss)].tolist())
        drawn: set[float] = set()
        for line in ax.lines:
            for x0, x1 in _drawn_segments(line):
                # every drawn segment joins two recorded neighbours (was: 4 -> 7)
                assert (x0, x1) in {(a, a + 1) for a in finite if a + 1 in finite}, \
                    (line.get_label(), x0, x1)
            xy = np.asarray(line.get_xydata(), float)
            drawn |= set(xy[np.isfinite(xy).all(axis=1), 0].tolist())
        assert finite <= drawn  # step 61 (NaN at 60 and 62) is still drawn
        import matplotlib.pyplot as plt
        plt.close(fig)
