"""Round 38 (viewhunt38): what a reader sees in reports and the playground."""

from __future__ import annotations

import numpy as np
import pandas as pd

LONG = "a_really_long_submodule_name_for_the_projection_layer_of_the_encoder"


def _torch_like_probes(n: int = 12) -> pd.DataFrame:
    """A Watch-style probe table: layers 1..n named ``k.<70 characters>``, two steps."""
    rows = []
    for step in (0, 10):
        for la in range(1, n + 1):
            for q in ("grad_pre_std", "act_std"):
                rows.append({"step": step, "layer": la, "module": f"{la}.{LONG}",
                             "quantity": q, "value": 1e-3 * 1.5 ** la * (1 + step / 100)})
    return pd.DataFrame(rows)


def test_long_module_names_are_cut_on_figures_and_stay_distinct():
    from depthlab import plot
    from depthlab.report import figures

    probes = _torch_like_probes()
    names = figures.layer_names(probes)
    assert len(names) == 12 and len(set(names.values())) == 12
    assert max(len(v) for v in names.values()) <= figures.MAX_MODULE_CHARS
    assert names[12].startswith("12.a_really") and names[12].endswith("of_the_encoder")
    # short names and "$" are kept as they were (escaped, not typeset as math)
    short = pd.DataFrame({"step": [0, 0], "layer": [1, 2], "module": ["fc$1", "0"],
                          "quantity": ["act_std"] * 2, "value": [1.0, 2.0]})
    assert figures.layer_names(short) == {1: r"fc\$1", 2: "[0]"}
    fig = plot.gradient_per_layer({"watch": probes})
    ticks = [t.get_text() for ax in fig.axes for t in ax.get_xticklabels() if t.get_text()]
    assert ticks and max(len(t) for t in ticks) <= figures.MAX_MODULE_CHARS, ticks
    # the panels keep most of the figure's height (70-character names took most of it)
    ax = fig.axes[0]
    assert ax.get_position().height > 0.35, ax.get_position()
    assert np.isfinite(fig.get_figheight())
