"""Round 17: what a person looks at in reports, figures and reproductions (helper reports17).
Each test failed before its fix. Figures are saved as PNGs in the test's folder
(``DEPTHLAB_SCREENSHOTS=DIR`` keeps them)."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import pandas as pd
import pytest
from helpers.browser import screenshot_dir

matplotlib.use("Agg")

from depthlab.report import figures  # noqa: E402


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    return screenshot_dir(tmp_path_factory.mktemp("screenshots17"))


def _probe_rows(layer: int, module: str, quantity: str, values) -> list[dict]:
    return [{"step": s, "layer": layer, "module": module, "quantity": quantity, "value": v}
            for s, v in zip((0, 2, 4), values)]


def test_saturation_panels_colour_a_layer_alike_as_the_legend_says(shots):
    # a CNN whose conv layers feed ReLUs and whose hidden Linear feeds a Tanh: the inactive
    # panel has layers 1-2, the saturated panel layer 3 alone. Each panel coloured its own
    # layers from the start of the palette, and the legend (the last panel's) named them
    # otherwise: the tanh layer's legend colour was the second conv layer's line
    rows = (_probe_rows(1, "features.0", "inactive_frac", (0.45, 0.45, 0.46))
            + _probe_rows(2, "features.2", "inactive_frac", (0.30, 0.31, 0.32))
            + _probe_rows(3, "classifier.1", "saturated_frac", (0.10, 0.20, 0.25))
            + _probe_rows(1, "features.0", "dead_frac", (0.0, 0.0, 0.01))
            + _probe_rows(2, "features.2", "dead_frac", (0.02, 0.02, 0.02))
            + _probe_rows(3, "classifier.1", "dead_frac", (0.0, 0.0, 0.0))
            + _probe_rows(1, "features.0", "pre_std", (1.0, 1.0, 1.0)))
    fig = figures.saturation_dead(pd.DataFrame(rows))
    fig.savefig(shots / "saturation_mixed_activations.png")
    colour: dict[str, tuple] = {}
    for ax in fig.axes:
        for line in ax.get_lines():
            label = line.get_label()
            if label.startswith("_"):
                continue
            rgba = matplotlib.colors.to_rgba(line.get_color())
            assert colour.setdefault(label, rgba) == rgba, (label, ax.get_title())
    legend = [lg for ax in fig.axes for lg in [ax.get_legend()] if lg is not None]
    assert len(legend) == 1
    named = {t.get_text(): matplotlib.colors.to_rgba(h.get_color())
             for t, h in zip(legend[0].get_texts(), legend[0].legend_handles)}
    assert set(named) == {"features.0", "features.2", "classifier.1"}
    for label, rgba in colour.items():
        assert named[label] == rgba, label
