"""Round 37 (reportspeed37): report figures place their panel titles without matplotlib's
search (which measured every titled axes' y axis before drawing it) and look the same."""

from __future__ import annotations

import io

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from depthlab.report import figures as F


def _png(fig: Figure) -> np.ndarray:
    buf = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buf)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())))


def _build(cls, case: str) -> Figure:
    fig = cls(figsize=(4, 3), dpi=60)
    ax = fig.subplots()
    title = "a title wide enough to reach the left edge of the axes, over the offset"
    if case == "plain":
        ax.plot([0, 1, 2], [1, 3, 2])
    elif case == "offset":  # ScalarFormatter's "1e-5" offset text above the y axis
        ax.plot([0, 1], [1e-5, 3e-5])
    elif case == "top":
        ax.plot([0, 1], [0, 1])
        ax.xaxis.tick_top()
    elif case == "twin":
        ax.plot([0, 1], [0, 1])
        ax.twinx().plot([0, 1], [1e6 + 1, 1e6 + 3])
    elif case == "log":
        ax.semilogy([1, 2, 3], [1e-8, 1e-3, 10])
    ax.set_title(title, fontsize=9)
    ax.set_title("left", loc="left", fontsize=7)
    return fig


def test_titles_drawn_where_matplotlib_puts_them() -> None:
    """Pixel for pixel the picture matplotlib's own title placement gives: a plain axes, a y
    offset text under a wide title (lifted above it), x ticks on top, a twin, a log axis."""
    for case in ("plain", "offset", "top", "twin", "log"):
        ours, theirs = _png(_build(F.NotebookFigure, case)), _png(_build(Figure, case))
        assert ours.shape == theirs.shape and (ours == theirs).all(), case


def test_plain_axes_skip_the_y_axis_measurement() -> None:
    """Drawing a titled axes without top ticks or offset text no longer measures the y axis's
    tight bounding box (every tick label; a sixth of a report's rendering time)."""
    fig = _build(F.NotebookFigure, "plain")
    ax = fig.axes[0]
    calls = []
    orig = ax.yaxis.get_tightbbox

    def counting(*a, **k):
        calls.append(1)
        return orig(*a, **k)

    ax.yaxis.get_tightbbox = counting
    FigureCanvasAgg(fig).draw()
    assert calls == []
    assert ax.title.get_text() and ax.title.get_position()[1] == 1.0


def test_redraw_after_change_places_titles_again() -> None:
    """A figure drawn once, then given an offset text (or top ticks), is placed again as
    matplotlib would; a title placed by hand (``y=``) stays where it was put."""
    ours, theirs = _build(F.NotebookFigure, "plain"), _build(Figure, "plain")
    _png(ours), _png(theirs)
    for fig in (ours, theirs):
        fig.axes[0].set_ylim(1e-5, 3e-5)
    a, b = _png(ours), _png(theirs)
    assert (a == b).all()
    assert ours.axes[0].title.get_position()[1] > 1.0  # lifted above "1e-5"
    fig = F.NotebookFigure(figsize=(4, 3), dpi=60)
    ax = fig.subplots()
    ax.set_title("by hand", y=0.5)
    _png(fig)
    assert ax.title.get_position()[1] == 0.5
