"""Round 35 (lead): the report's weight-std figure of a run probed at one step only."""

from __future__ import annotations

import numpy as np
import pandas as pd


def test_the_weight_std_figure_of_a_run_probed_at_one_step_draws_that_step():
    """A torch ``Watch`` with ``every=10`` over 10 steps or fewer records one step: the figure's
    loop stopped before drawing it, and ``depthlab report`` failed ("need at least one array to
    concatenate"). The one step is drawn, with its values."""
    from depthlab.report import figures

    values = {1: 0.31, 2: 0.12, 3: 0.07}
    probes = pd.DataFrame({"step": 0, "layer": list(values), "quantity": "weight_std",
                           "value": list(values.values())})
    fig = figures.weight_std_profile(probes, {1: 0.3, 2: 0.1, 3: 0.08}, "he")
    lines = [ln for ln in fig.axes[0].lines if str(ln.get_label()).startswith("measured")]
    assert [ln.get_label() for ln in lines] == ["measured, step 0"]
    np.testing.assert_allclose(lines[0].get_ydata(), list(values.values()))
    np.testing.assert_allclose(lines[0].get_xdata(), list(values))
