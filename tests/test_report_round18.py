"""Round 18: what a person looks at in reports, figures and reproductions (helper reports18).
Each test failed before its fix. Figures are saved as PNGs in the test's folder
(``DEPTHLAB_SCREENSHOTS=DIR`` keeps them)."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import pandas as pd
import pytest
from helpers.browser import screenshot_dir

matplotlib.use("Agg")

from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    return screenshot_dir(tmp_path_factory.mktemp("screenshots18"))


def _drawn_right_edge(fig) -> float:
    """Inches from the figure's left edge to the right end of everything drawn."""
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    return float(fig.get_tightbbox(canvas.get_renderer()).x1)


def test_the_activation_bands_legend_of_long_module_names_stays_inside_the_figure(shots):
    # a Watch run of a ResNet-ish CNN: the legend's module names (40 characters, e.g.
    # residual_stage_one.12.conv_branch_second) ran 6 px past the figure's right edge, their
    # last letters cut off ('..._seconc')
    from depthlab import plot

    names = {1: "stem", 2: "residual_stage_one.6.conv_branch_first",
             3: "residual_stage_one.12.conv_branch_second",
             4: "residual_stage_one.25.conv_branch_second"}
    rows = [{"step": s, "layer": la, "module": m, "quantity": q, "value": v}
            for s in (0, 5, 10) for la, m in names.items()
            for q, v in (("act_mean", 0.1 * la), ("act_std", 0.5))]
    fig = plot.activation_bands(pd.DataFrame(rows))
    fig.savefig(shots / "bands_long_module_names.png")
    legend = fig.axes[0].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == list(names.values())
    assert _drawn_right_edge(fig) <= fig.get_figwidth()
