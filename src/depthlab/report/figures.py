"""One function per report figure. Each takes pandas DataFrames (in the store's layout) and
returns a :class:`matplotlib.figure.Figure` built directly (Agg canvas, no pyplot state), so
figures can be produced from any thread and are freed as soon as they are dropped.

Layouts (see ``depthlab.experiments.store``):
``steps``: step, loss; ``epochs``: epoch, step, train_loss, train_acc, val_loss, val_acc, ...;
``evals``: step, val_loss, val_acc, ...; ``probes``: step, layer, quantity, value (long format,
layer 1 = first hidden layer, step 0 = initialisation); ``histograms``: step, layer, kind,
bin_left, bin_right, count.

Layer names. A probe or histogram table with a ``module`` column (``depthlab.torch`` tables;
the report adds it from a torch run's ``config.model.layers``) labels every per-layer axis,
tick, legend entry and panel title with the module name (``layer1.0.conv1``) instead of the
layer number: :func:`layer_names`, :func:`layer_label`, :func:`layer_ticks`.
"""

from __future__ import annotations

import functools
import io
import math
import os
import re
import textwrap
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib import transforms as mtransforms
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import (
    FixedLocator,
    Formatter,
    FuncFormatter,
    MaxNLocator,
    NullFormatter,
    NullLocator,
    ScalarFormatter,
)

from . import glyphs

# Okabe & Ito (2008) colour-blind-safe qualitative palette.
OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442",
             "#000000")
SPLIT_STYLES = {"train": (OKABE_ITO[1], "o"), "validation": ("#000000", "s"),
                "test": (OKABE_ITO[2], "^")}
"""(colour, marker) of each split's loss and accuracy lines: orange, black and green, 162, 0
and 106 gray levels of 255 when printed in grayscale (the vermillion validation, 119, and the
green test accuracy were one solid line with circles on paper)."""
LAYER_CMAP = "viridis"  # ordered layers: perceptually uniform, colour-blind safe
HEAT_CMAP = "magma"
MAX_LAYER_LINES = 8
DPI = 100


def quiet_extremes(build: Callable[..., Any]) -> Callable[..., Any]:
    """``build`` (a function that makes a figure) run under ``np.errstate`` that ignores
    overflow, underflow, invalid and divide, and without matplotlib's "Attempt to set
    non-positive ylim on a log-scaled axis": with values near float64's largest (1e300), a log
    or symlog axis's own autoscaling computes ``exp(log(1e300) + margin)``, past 1.8e308 (inf,
    which matplotlib handles), and NumPy said "overflow encountered in exp" in a notebook,
    about limits the figure then sets itself. The values stay on the axes (the figures fit
    their limits to them, :func:`huge_log_limits`) and non-finite ones are named in the
    titles, as before; the draw is quiet too (:meth:`NotebookFigure.draw`). Other warnings
    (a character no font draws) still reach the user."""

    @functools.wraps(build)
    def quiet(*args: Any, **kwargs: Any) -> Any:
        with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"), \
                warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Attempt to set non-positive",
                                    category=UserWarning)
            return build(*args, **kwargs)

    return quiet



class NotebookFigure(Figure):
    """A :class:`~matplotlib.figure.Figure` that a Jupyter kernel shows as a picture although
    no pyplot is involved: ipykernel registers matplotlib's PNG printer only once pyplot is
    imported (or ``%matplotlib`` is run), and without it a figure built directly displayed as
    the text ``<Figure size 716x390 with 1 Axes>``. Where that printer is registered it is used
    (it matches this class); ``_repr_png_`` is the fallback, and renders without changing the
    figure."""

    def _repr_png_(self) -> bytes:
        buf = io.BytesIO()
        canvas = self.canvas if isinstance(self.canvas, FigureCanvasAgg) else Canvas(self)
        canvas.print_png(buf)
        return buf.getvalue()

    def draw(self, renderer: Any) -> None:
        """Draw as :class:`~matplotlib.figure.Figure` does, the panel titles placed without
        matplotlib's search (:func:`_place_titles`), every text by the rules of
        :mod:`depthlab.report.glyphs` (a character no font has: its code point, not a box)."""
        _place_titles(self)
        # values near float64's largest (a run's 1e300 gradients): matplotlib's log and
        # symlog transforms overflow to inf on the way, which it handles, with NumPy's
        # "overflow encountered in exp" each time
        with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
            super().draw(glyphs.install(renderer))


class Canvas(FigureCanvasAgg):
    """matplotlib's Agg canvas whose renderer measures and draws every text by the rules of
    :mod:`depthlab.report.glyphs` (also what is measured before drawing: legends, margins)."""

    def get_renderer(self) -> Any:
        return glyphs.install(super().get_renderer())


def _place_titles(fig: Figure) -> None:
    """Fix each axes' titles at ``y = 1`` (axes coordinates) where matplotlib's automatic
    placement would leave them there, so that drawing skips it: before every draw it measured
    the y axis's tight bounding box (every tick label: a sixth of a report's rendering time)
    only to lift the title above an x axis whose ticks or label are on top, or above a y
    offset text (``1e-5``, ``×10^3``) that the title overlaps. An axes with such an x axis,
    with a y offset text, with twins, children or title-aligned siblings keeps the automatic
    placement; the picture is the same pixel for pixel."""
    for ax in fig.axes:
        if not hasattr(ax, "_autotitlepos") or (ax._autotitlepos is False and not getattr(
                ax, "_depthlab_titles_fixed", False)):  # placed by hand: as they are
            continue
        ax._autotitlepos, ax._depthlab_titles_fixed = None, False  # matplotlib's (a redraw)
        try:  # private attributes (matplotlib 3.8-3.11): without them, matplotlib's placement
            shared = (len(ax._twinned_axes.get_siblings(ax)) > 1
                      or len(fig._align_label_groups["title"].get_siblings(ax)) > 1)
            titles = (ax.title, ax._left_title, ax._right_title)
        except (AttributeError, KeyError, TypeError):
            continue
        if (shared or ax.child_axes
                or ax.xaxis.get_ticks_position() in ("top", "unknown")
                or ax.xaxis.get_label_position() == "top"):
            continue
        y = ax.yaxis
        if y.offsetText.get_visible():
            fmt = y.get_major_formatter()
            if isinstance(fmt, ScalarFormatter):  # its offset is set from the ticks' places
                fmt.set_locs(y.get_majorticklocs())  # (again so when the axis is drawn)
            if fmt.get_offset():
                continue
        for title in titles:
            title.set_y(1.0)
        ax._autotitlepos, ax._depthlab_titles_fixed = False, True


# Fixed margins (in inches) for the per-run figures: constrained layout costs more than half of
# the rendering time, and a sweep report draws a hundred or more of them.
_MARGIN_IN = {"left": 0.85, "right": 0.15, "bottom": 0.55, "top": 0.38, "wspace": 0.28}


def _new_figure(width: float = 6.4, height: float = 3.8, ncols: int = 1,
                sharey: bool = False, fixed: bool = True, right: float | None = None,
                top: float | None = None, bottom: float | None = None,
                left: float | None = None) -> tuple[Figure, list]:
    """A figure with ``ncols`` axes in one row: fixed margins (``right``/``top``/``bottom``/
    ``left`` in inches override the defaults) or, with ``fixed=False``, constrained layout."""
    fig = NotebookFigure(figsize=(width, height), dpi=DPI,
                         layout=None if fixed else "constrained")
    Canvas(fig)
    if fixed:
        m = dict(_MARGIN_IN)
        for k, v in (("right", right), ("top", top), ("bottom", bottom), ("left", left)):
            if v is not None:
                m[k] = v
        fig.subplots_adjust(left=m["left"] / width, right=1 - m["right"] / width,
                            bottom=m["bottom"] / height, top=1 - m["top"] / height,
                            wspace=m["wspace"])
    axes = fig.subplots(1, ncols, sharey=sharey, squeeze=False)[0]
    for ax in axes:
        _style(ax)
    return fig, list(axes)


def fit_title_top(fig: Figure, pad_in: float = 0.05) -> None:
    """Grow ``fig`` at the top until its axes' titles fit, every axes keeping its size and its
    place from the bottom in inches: the fixed 0.38 in top margin holds one title line and a
    little, and a heatmap's title of four lines (the heading and three "blank: ..." notes)
    lost its first two above the figure's edge. Measured on the rendered titles."""
    renderer = fig.canvas.get_renderer()
    tops = [ax.title.get_window_extent(renderer).y1 for ax in fig.axes if ax.get_title()]
    if not tops:
        return
    height = fig.get_figheight()
    over = max(tops) / fig.dpi + pad_in - height
    if over <= 0:
        return
    new = height + over
    for ax in fig.axes:
        pos = ax.get_position()
        ax.set_position((pos.x0, pos.y0 * height / new, pos.width, pos.height * height / new))
    fig.set_figheight(new)


def _style(ax) -> None:
    ax.xaxis.set_major_locator(MaxNLocator(nbins="auto", integer=True))
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.grid(True, alpha=0.25, linewidth=0.6)
    ax.tick_params(labelsize=8.5)
    ax.title.set_fontsize(10.5)
    ax.xaxis.label.set_fontsize(9.5)
    ax.yaxis.label.set_fontsize(9.5)


def _legend(ax, **kw) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        kw.setdefault("fontsize", 8.5)
        kw.setdefault("frameon", False)
        ax.legend(**kw)


PERCENTILES_TITLE = "Percentiles of a layer's pre-activation over training"
GRADIENT_PROFILE_TITLE = "Gradient std per layer: initialization vs theory"
WEIGHT_STD_TITLE = "Weight std per layer: initialization and end"
JACOBIAN_TITLE = "Input–output Jacobian singular values"
UPDATE_RATIO_TITLE = "Relative weight update per step"
"""Figure titles, also given to the figure when it has nothing to draw (:func:`_empty`)."""


def _empty(ax, message: str, title: str | None = None) -> None:
    """An empty panel: ``message`` (why nothing is drawn) in its middle, no ticks, and
    ``title``, the title the panel has when it has data. A figure of a run whose probes were
    all NaN (or not recorded) was a bare pair of axes and a grey line: its PNG in
    ``figures/`` did not say what it was a figure of."""
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes,
            color="#666666", fontsize=9.5, wrap=True)
    if title:
        ax.set_title(title, fontsize=10.5)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)


def step_ticks(ax, steps: Sequence[float] | np.ndarray, limit: int = 1) -> None:
    """Ticks at the probed steps themselves when there are at most ``limit`` of them (one step:
    the x-range ``step ± 1``). Over a range narrower than 1 the integer tick locator gives way to
    fractions (a "training step" of -0.045); a heatmap's cells end half a step beyond the data
    (a tick at step -2)."""
    s = np.unique(pd.to_numeric(pd.Series(np.ravel(steps)), errors="coerce").dropna())
    if not 0 < s.size <= limit:
        return
    ax.set_xticks(s, [f"{v:g}" for v in s])
    if s.size == 1:
        ax.set_xlim(s[0] - 1, s[0] + 1)


def _tidy_log_axis(axis, lo: float, hi: float) -> None:
    """On a log axis spanning less than a decade matplotlib labels every minor tick; use a few
    plain ticks instead."""
    # hi < 10 lo, not hi / lo < 10: 1e300 / 1e-300 overflowed with a NumPy warning
    if lo > 0 and np.isfinite(lo) and np.isfinite(hi) and float(hi) < 10 * float(lo):
        axis.set_minor_formatter(NullFormatter())
        locator = _log_nice_locator(lo, hi)
        axis.set_major_locator(locator)
        if isinstance(locator, FixedLocator):  # 0.2, 0.5, 1 (x10^-3 once, beside the axis)
            axis.set_major_formatter(_log_tick_formatter(hi))
        else:
            fmt = ScalarFormatter(useMathText=True)
            fmt.set_powerlimits((-2, 3))
            axis.set_major_formatter(fmt)
    elif lo > 0 and np.isfinite(lo) and np.isfinite(hi) and float(hi) < 100 * float(lo):
        # one to two decades: two labelled powers of ten only; label the 2s and 5s between
        axis.set_minor_formatter(_TwoFiveFormatter())
        axis.set_tick_params(which="minor", labelsize=axis.get_ticklabels()[0].get_fontsize()
                             if axis.get_ticklabels() else 8.5)


# mantissas of a log axis's ticks under a decade, coarsest first: their steps are about even
# in log terms, so the low end of the axis gets labels as the high end does
_LOG_SUBS = ((1.0, 2.0, 5.0), (1.0, 1.5, 2.0, 3.0, 5.0, 7.0),
             (1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0))


def _log_nice_locator(lo: float, hi: float):
    """Ticks for a log axis spanning ``lo``..``hi`` (under a decade): the coarsest of
    :data:`_LOG_SUBS` giving 3 or more ticks within the data. Was ``MaxNLocator(5)``: evenly
    spaced values (0.4, 0.8, ... 2.0e-3) crowd the top of a log axis and left a line at 2.5e-4
    with no label below it. A range too narrow for 3 of them (hi/lo under ~1.5, where a log
    axis is nearly linear) keeps ``MaxNLocator``."""
    decades = range(int(np.floor(np.log10(lo))) - 1, int(np.ceil(np.log10(hi))) + 1)
    for subs in _LOG_SUBS:
        ticks = [float(f"{m:g}e{e}") for e in decades for m in subs]
        if sum(lo * (1 - 1e-9) <= t <= hi * (1 + 1e-9) for t in ticks) >= 3:
            return FixedLocator(ticks)
    return MaxNLocator(5)


def _log_tick_formatter(hi: float) -> FuncFormatter:
    """Labels of :func:`_log_nice_locator`'s ticks: plain from 0.01 to below 1e4 (``0.15``,
    ``20``); else in units of the power of ten at or below ``hi``, which the axis's offset text
    names once (``0.2 0.5 1 2`` and ``×10^-3``), as short as matplotlib's plain ticks were:
    ``1.5×10^-3`` on every tick pushed the axis label off the figure's fixed margin."""
    e = int(np.floor(np.log10(hi) + 1e-9))
    if -2 <= e < 4:
        return FuncFormatter(lambda v, _pos=None: f"{v:g}" if v > 0 else "")
    scale = 10.0 ** e
    fmt = FuncFormatter(lambda v, _pos=None: f"{float(f'{v / scale:.3g}'):g}" if v > 0 else "")
    fmt.set_offset_string(f"$\\times10^{{{e}}}$")
    return fmt


def _label_two_five(v: float, _pos: int | None = None, sci: bool = False) -> str:
    """``0.2``, ``0.5``, ``20``: a minor log tick labelled when its mantissa is 2 or 5
    (``sci``: as ``5×10^-3`` also in the plain range)."""
    if not v > 0:
        return ""
    e = int(np.floor(np.log10(v)))
    m = v / 10.0 ** e
    k = next((k for k in (2, 5) if abs(m - k) < 1e-6), None)
    if k is None:
        return ""
    # plain below 1e4 and from 0.01 (0.2, 50); else like the powers of ten beside it
    return f"{v:g}" if -2 <= e < 4 and not sci else f"${k}\\times10^{{{e}}}$"


class _TwoFiveFormatter(Formatter):
    """:func:`_label_two_five` of an axis, in one notation: when a labelled 2 or 5 in view
    lies outside the plain range (0.01 to below 1e4) every one is written as ``k×10^e``
    (an axis from 1e-3 to 0.05 read ``2×10^-3, 5×10^-3, 0.02``)."""

    sci = False

    def set_locs(self, locs) -> None:
        super().set_locs(locs)
        lo, hi = sorted(self.axis.get_view_interval()) if self.axis is not None else (0, 0)
        shown = [v for v in locs if lo <= v <= hi and _label_two_five(v)]
        self.sci = any(not -2 <= int(np.floor(np.log10(v))) < 4 for v in shown)

    def __call__(self, x: float, pos: int | None = None) -> str:
        return _label_two_five(x, pos, self.sci)


def figure_png(fig: Figure) -> bytes:
    """Render ``fig`` to PNG bytes (Agg) and release its artists."""
    buf = io.BytesIO()
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else Canvas(fig)
    canvas.print_png(buf)
    for ax in list(fig.axes):  # dropped, not cleared first: Axes.clear rebuilds every tick
        fig.delaxes(ax)        # (a tenth of the rendering time)
    fig.clear()
    return buf.getvalue()


# -- helpers on the long probe table --------------------------------------------------------
def _quantity(probes: pd.DataFrame | None, quantity: str) -> pd.DataFrame:
    """Wide table ``step x layer`` of one probe quantity (layers >= 1 only)."""
    if probes is None or probes.empty:
        return pd.DataFrame()
    sel = probes[(probes["quantity"] == quantity) & (probes["layer"] >= 1)]
    if sel.empty:
        return pd.DataFrame()
    # a layer not finite at every step stays a column (of NaN): the report reads inf as NaN,
    # and pivot_table's dropna left out the first 83 layers of a float64 run whose gradients
    # overflowed there, every figure starting at layer 84 without a word. Steps with no
    # value in any layer are still left out (a diverged run's last steps: see _per_layer)
    wide = sel.pivot_table(index="step", columns="layer", values="value", aggfunc="mean",
                           dropna=False).dropna(how="all")
    wide = wide.sort_index()
    return wide[sorted(wide.columns)]


def nothing_recorded(probes: pd.DataFrame | None, quantity: str) -> str:
    """The note of a figure with no value of ``quantity`` to draw: ``every 'QUANTITY' probe is
    NaN or inf`` when the probes hold rows of it (layers >= 1) and none finite (a diverged or
    overflowed run: recorded, not missing), else ``no 'QUANTITY' probes recorded``."""
    if probes is not None and not probes.empty and {"quantity", "layer"} <= set(probes.columns):
        if ((probes["quantity"] == quantity) & (probes["layer"] >= 1)).any():
            return f"every '{quantity}' probe is NaN or inf: nothing to draw"
    return f"no '{quantity}' probes recorded"


def layer_names(*tables: pd.DataFrame | None) -> dict[int, str]:
    """Layer number -> module label from the ``module`` column of the tables (layers >= 1
    with a non-empty name; a name that is only digits, a ``Sequential`` index, reads
    ``[4]`` as in ``model[4]``); empty without one (NumPy runs). Overlaid tables of different
    models: two names of one layer number are joined (``features.0 / [0]``); with more, that
    number stays unnamed. A ``$`` in a name is drawn as itself (escaped: not typeset as
    math, and ``$\\bad$`` does not stop the figure). Names longer than
    :data:`MAX_MODULE_CHARS` lose their middle (:func:`cut_labels`, kept distinct): 70-character
    names, ``12.a_really_long_sub…_layer_of_the_encoder``, turned every tick of a layer axis
    into a 3-inch column under a squeezed plot."""
    found: dict[int, list[str]] = {}
    for t in tables:
        if t is None or t.empty or "module" not in t.columns or "layer" not in t.columns:
            continue
        pairs = t.loc[t["layer"] >= 1, ["layer", "module"]].drop_duplicates()
        for layer, mod in zip(pairs["layer"].astype(int), pairs["module"]):
            if isinstance(mod, str) and mod:
                mod = glyphs.drawable(mod)  # a character no font has: its code point
                label = f"[{mod}]" if mod.isdigit() else mod
                if label not in found.setdefault(layer, []):
                    found[layer].append(label)
    kept = {k: v for k, v in sorted(found.items()) if len(v) <= 2}
    parts = list(dict.fromkeys(p for v in kept.values() for p in v))
    short = dict(zip(parts, cut_labels(parts, MAX_MODULE_CHARS)  # each name, before "$" is
                     if any(len(p) > MAX_MODULE_CHARS for p in parts) else parts))  # escaped
    return {k: " / ".join(short[p] for p in v).replace("$", r"\$") for k, v in kept.items()}


MAX_MODULE_CHARS = 40
"""Longest module name :func:`layer_names` gives a figure (ticks, legends, titles); two
overlaid models' names of one layer, joined by ``" / "``, are each cut to it."""


def layer_label(layer: int, names: dict[int, str] | None = None) -> str:
    """``names[layer]`` (a module label, :func:`layer_names`) or ``"layer N"``."""
    return (names or {}).get(int(layer)) or f"layer {int(layer)}"


LAYER_TICKS_MAX = 40  # named layer ticks drawn at most; fewer where the axis is short
TICK_PITCH = 1.35  # a tick label's pitch: its font size times this (line height and a gap)


def tick_font_size(n_layers: int) -> float:
    """Points of the module-name ticks of an axis of ``n_layers`` layers: 7, beyond 24: 6."""
    return TICK_NAME_SIZE if n_layers <= 24 else 6.0


def layer_ticks(ax, axis: str, layers: Sequence[int], names: dict[int, str] | None,
                plain_max: int = 12, size: float | None = None,
                max_ticks: int = LAYER_TICKS_MAX) -> None:
    """Ticks at the layers on ``axis`` ("x" or "y"): module names when ``names`` has them
    (small font, x labels rotated 90 degrees), else the numbers when there are at most
    ``plain_max`` (more: automatic ticks, at whole layers only). Named ticks are thinned to
    what the axis holds (:func:`_spaced_layers`: evenly, first and last kept, labels
    ``TICK_PITCH`` font sizes apart, at most
    ``max_ticks``, default :data:`LAYER_TICKS_MAX`), so 60 rotated names do not print over each
    other. Call it after the data are drawn (it reads the axis limits). ``size``: the names'
    points (default :func:`tick_font_size` of the layers; give the one the figure's margin was
    made for)."""
    layers = sorted(int(v) for v in layers)
    if not layers:
        return
    if names and any(la in names for la in layers):
        size = size or tick_font_size(len(layers))
        shown = _spaced_layers(ax, axis, layers, size, max_ticks)
        labels = [layer_label(la, names) for la in shown]
        if axis == "x":
            ax.set_xticks(shown, labels, rotation=90, fontsize=size)
        else:
            ax.set_yticks(shown, labels, fontsize=size)
    elif len(layers) <= plain_max:
        (ax.set_xticks if axis == "x" else ax.set_yticks)(layers)
    else:  # automatic ticks, at whole layers only (a heatmap's rows read "layer 2.5, 7.5")
        (ax.xaxis if axis == "x" else ax.yaxis).set_major_locator(
            MaxNLocator(nbins="auto", integer=True))


def _spaced_layers(ax, axis: str, layers: list[int], size: float,
                   max_ticks: int = LAYER_TICKS_MAX) -> list[int]:
    """The sorted ``layers`` whose labels of ``size`` points fit along ``axis`` of ``ax``:
    consecutive ticks at least ``gap = max(size * TICK_PITCH / 72 in, span / (max_ticks - 1))``
    apart in data units (``in_per_unit`` = the axis length in inches over its data range),
    chosen greedily from the first; the last layer replaces the one before it when too close.
    (Thinning to a count alone left neighbours one layer apart: 0.065 in for 62 layers on a
    4 in axis, under the 0.083 in of a 6 pt label, so the names overlapped.)"""
    fig = ax.figure
    box = ax.get_position()
    length = box.width * fig.get_figwidth() if axis == "x" else box.height * fig.get_figheight()
    lo, hi = sorted(ax.get_xlim() if axis == "x" else ax.get_ylim())
    span = layers[-1] - layers[0]
    if not (length > 0 and hi > lo) or span == 0:
        return _pick_layers(layers, max_ticks)
    gap = max(size * TICK_PITCH / 72 / (length / (hi - lo)), span / (max_ticks - 1))
    shown = [layers[0]]
    for la in layers[1:]:
        if la - shown[-1] >= gap - 1e-9:
            shown.append(la)
    if shown[-1] != layers[-1]:
        if len(shown) > 1 and layers[-1] - shown[-1] < gap - 1e-9:
            shown.pop()
        shown.append(layers[-1])
    return shown


TICK_NAME_SIZE = 7.0
"""The largest font size :func:`layer_ticks` gives module names (6 pt beyond 24 layers)."""


def names_margin(names: dict[int, str] | None, layers: Sequence[int] = (),
                 size: float | None = None) -> float:
    """Inches a rotated (x) or horizontal (y) axis of module names needs beside the axes:
    ``0.15 +`` the longest name's width, measured in DejaVu Sans at ``size`` points
    (tick labels: :data:`TICK_NAME_SIZE`), or estimated at 0.062 in a character without
    ``size`` (legends at 7.5-8 pt). The estimate, used for the ticks too, left 1.3 in of
    blank under 36-character names drawn at 6 pt (1.5 in wide, estimated at 2.2 in)."""
    used = [names[la] for la in layers if la in names] if names and layers else list(
        (names or {}).values())
    if size is None:
        return 0.15 + 0.062 * max((len(v) for v in used), default=0)
    return 0.15 + max((_text_width_in(v, size) for v in set(used)), default=0.0)


def _text_width_in(text: str, size: float) -> float:
    """Width in inches of ``text`` drawn literally (no math) at ``size`` points."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextToPath

    width, _h, _d = TextToPath().get_text_width_height_descent(
        *glyphs.fitted(text, FontProperties(size=size)), ismath=False)
    return width / 72.0


def hidden_layers(probes: pd.DataFrame | None) -> list[int]:
    """Sorted hidden-layer numbers (>= 1) present in ``probes``."""
    if probes is None or probes.empty:
        return []
    return sorted(int(v) for v in probes.loc[probes["layer"] >= 1, "layer"].unique())


def _pick_layers(layers: Sequence[int], limit: int = MAX_LAYER_LINES) -> list[int]:
    """At most ``limit`` layers, evenly spaced, always keeping the first and the last."""
    layers = list(layers)
    if len(layers) <= limit:
        return layers
    idx = np.unique(np.round(np.linspace(0, len(layers) - 1, limit)).astype(int))
    return [layers[i] for i in idx]


def _layer_colors(layers: Sequence[int]) -> dict[int, tuple]:
    cmap = colormaps[LAYER_CMAP]
    n = len(layers)
    pos = np.linspace(0.0, 0.82, n) if n > 1 else np.array([0.0])
    return {layer: cmap(p) for layer, p in zip(layers, pos)}


def _layers_note(shown: Sequence[int], total: Sequence[int]) -> str:
    """Which layers a figure shows when it cannot show them all, and why (the legend names
    them; a title listing them all ran past a panel beside it)."""
    if len(shown) == len(total):
        return ""
    return f"\n({len(shown)} of {len(total)} layers: first, last and evenly spaced)"


def loss_smoothed(loss: Sequence[float] | np.ndarray) -> bool:
    """Whether :func:`training_curves` draws the per-step ``loss`` faint beside its
    exponential moving average (span n/50): more than 5 finite values and more than 50 steps
    (an EMA of span n/50 <= 1 is the raw loss itself)."""
    y = np.asarray(loss, dtype=float)
    return bool(np.isfinite(y).sum() > 5 and len(y) / 50 > 1)


def _ema(values: np.ndarray, span: float) -> np.ndarray:
    """Exponential moving average ``m_t = (1-a) m_{t-1} + a x_t`` with ``a = 2/(span+1)``,
    debiased at the start (pandas ``ewm(adjust=True)``)."""
    return pd.Series(values).ewm(span=max(span, 1.0), adjust=True, ignore_na=True).mean().to_numpy()


# -- per-run figures ---------------------------------------------------------------------------
@quiet_extremes
def training_curves(steps: pd.DataFrame | None, epochs: pd.DataFrame | None = None,
                    evals: pd.DataFrame | None = None, title: str = "") -> Figure:
    """Left: per-step training loss, raw (faint) and smoothed by an EMA of span ``n/50``
    (over 50 steps; shorter runs: the raw loss alone, solid);
    epoch-level train/val loss as markers. Right: accuracy per epoch (train/val) or, without
    epochs, the periodic evaluations over steps; a run with a loss and no accuracy (a
    ``depthlab.torch`` Watch, a regression loss) gets the loss panel alone."""
    epochs = epochs if epochs is not None else pd.DataFrame()
    evals = evals if evals is not None else pd.DataFrame()
    has_loss = steps is not None and not steps.empty
    loss_note = ""
    loss_label = "loss"
    has_acc = any(key in t and c in t and t[c].notna().any()
                  for t, key in ((epochs, "epoch"), (evals, "step"))
                  for c in ("train_acc", "val_acc", "test_acc"))
    if has_loss and not has_acc:  # was: beside an empty "no accuracy recorded" panel
        fig, (ax_l,) = _new_figure(6.4, 3.6, top=0.62 if title else None)
        ax_a = None
    else:
        fig, (ax_l, ax_a) = _new_figure(9.6, 3.6, ncols=2, top=0.62 if title else None)
    if has_loss:
        s = steps.sort_values("step")
        x = s["step"].to_numpy()
        y = s["loss"].to_numpy(dtype=float)
        finite = np.isfinite(y)
        few = finite.sum() <= 5
        smooth = loss_smoothed(y)
        # the steps from the first finite loss to the last, a non-finite one inside as NaN: the
        # line breaks there (a Watch loop that skipped bad batches, NaN at steps 5 and 6, was
        # drawn as a straight segment from step 4 to step 7, losses never recorded)
        inside = np.flatnonzero(finite)
        span = slice(inside[0], inside[-1] + 1) if inside.size else slice(0, 0)
        gap_y = np.where(finite, y, np.nan)
        ax_l.plot(x[span], gap_y[span], "o-" if few else "-", color=OKABE_ITO[0],
                  alpha=0.25 if smooth else 1.0, linewidth=0.8 if smooth else 1.2,
                  markersize=4, label="per step")
        # a finite step between two that are not is no segment of the line: a dot
        alone = finite & ~np.r_[False, finite[:-1]] & ~np.r_[finite[1:], False]
        if not few and alone.any():
            ax_l.plot(x[alone], y[alone], "o", color=OKABE_ITO[0], markersize=2.5,
                      alpha=0.5 if smooth else 1.0)
        if smooth:
            sm = _ema(gap_y, len(y) / 50)
            ax_l.plot(x[span], np.where(finite, sm, np.nan)[span], color=OKABE_ITO[0],
                      linewidth=1.8, label="smoothed (EMA)")
        pos = y[finite & (y > 0)]
        if pos.size and pos.max() / max(pos.min(), 1e-300) > 30:
            if (y[finite] <= 0).any():
                # a loss reaching 0 (a fit to the last example) or below (a negative
                # log-likelihood): the log axis dropped those steps without a word (the line
                # just stopped, or every negative step vanished); symlog keeps them, linear
                # within the smallest positive loss
                lin = float(max(pos.min(), pos.max() * 1e-8))
                ax_l.set_yscale("symlog", linthresh=lin, linscale=0.5)
                loss_label = f"loss (symlog: linear within ±{lin:.2g})"
            else:
                ax_l.set_yscale("log")
        has_loss = bool(finite.any())
        # a run that trained on past a NaN (a depthlab.torch Watch): the line just stopped
        if has_loss and not finite.all():
            loss_note = f"\nnot drawn: not finite (NaN/inf) {steps_phrase(x[~finite], x)}"
    for col, (color, marker), lab in (("train_loss", SPLIT_STYLES["train"], "train (epoch)"),
                                      ("val_loss", SPLIT_STYLES["validation"], "val (epoch)")):
        if col in epochs and "step" in epochs and epochs[col].notna().any():
            ax_l.plot(epochs["step"], epochs[col], _marked(f"{marker}-", len(epochs)),
                      color=color, markersize=3.5, linewidth=1.0, label=lab)
    every = _eval_period(evals)
    if "val_loss" in evals and "step" in evals and evals["val_loss"].notna().any():
        # `train.eval_every`'s validations: beside the epochs' they were drawn nowhere
        color, marker = SPLIT_STYLES["validation"]
        ax_l.plot(evals["step"], evals["val_loss"], _marked(f"{marker}--", len(evals)),
                  color=color, markersize=2.5, linewidth=0.9, label=f"val ({every})")
    if not has_loss and not any(len(line.get_xdata()) for line in ax_l.lines):
        ax_l.clear()
        _style(ax_l)
        _empty(ax_l, "no loss recorded" if steps is None or steps.empty else
               "no finite loss: every step's loss is NaN or inf", "Training loss")
    else:
        step_ticks(ax_l, np.concatenate([ln.get_xdata() for ln in ax_l.lines]))
        fit_huge_y(ax_l)
        ax_l.set_xlabel("training step")
        ax_l.set_ylabel(loss_label)
        ax_l.set_title("Training loss" + loss_note)
        if loss_note:  # room for the title's second line
            fig.subplots_adjust(top=fig.subplotpars.top - 0.2 / fig.get_figheight())
        _legend(ax_l)
    if ax_a is None:
        if title:
            fig.suptitle(title, fontsize=11)
        return fig

    plotted = False
    acc_cols = [(c, SPLIT_STYLES[lab], lab) for c, lab in (("train_acc", "train"),
                                                            ("val_acc", "validation"),
                                                            ("test_acc", "test"))]
    ev_cols = [a for a in acc_cols if "step" in evals and a[0] in evals
               and evals[a[0]].notna().any()]
    ep_cols = [a for a in acc_cols if "epoch" in epochs and a[0] in epochs
               and epochs[a[0]].notna().any()]
    if ep_cols and ev_cols and "step" in epochs:
        # epochs and `train.eval_every`'s validations (every 25 steps: 12 points beside 7
        # epochs, which were all the panel drew): both over training steps, each epoch's
        # values at the step it ended, as in the loss panel beside
        for c, (color, marker), lab in ep_cols:
            ax_a.plot(epochs["step"], epochs[c], _marked(f"{marker}-", len(epochs)),
                      color=color, markersize=4, linewidth=1.4, label=f"{lab} (epoch)")
        for c, (color, marker), lab in ev_cols:
            ax_a.plot(evals["step"], evals[c], _marked(f"{marker}--", len(evals)),
                      color=color, markersize=2.5, linewidth=0.9, label=f"{lab} ({every})")
        plotted = True
        ax_a.set_xlabel("training step")
    elif ep_cols:
        for c, (color, marker), lab in ep_cols:
            ax_a.plot(epochs["epoch"], epochs[c], _marked(f"{marker}-", len(epochs)),
                      color=color, markersize=4, linewidth=1.4, label=lab)
        plotted = True
        ax_a.set_xlabel("epoch")
        if epochs["epoch"].nunique() <= 12:
            ax_a.set_xticks(sorted(epochs["epoch"].unique()))
    elif ev_cols:
        for c, (color, marker), lab in ev_cols:
            ax_a.plot(evals["step"], evals[c], _marked(f"{marker}-", len(evals)),
                      color=color, markersize=3, linewidth=1.2, label=lab)
            step_ticks(ax_a, evals["step"])
        plotted = True
        ax_a.set_xlabel("training step")
    if plotted:
        ax_a.set_ylabel("accuracy")
        ax_a.set_title("Accuracy")
        # at least 10 points of accuracy on the axis: a net stuck at chance (train 0.0970 ->
        # 0.0986, validation 0.1) filled the panel from bottom to top, as if it learned
        acc = np.concatenate([np.asarray(ln.get_ydata(), float) for ln in ax_a.get_lines()])
        acc = acc[np.isfinite(acc)]
        if acc.size and acc.max() - acc.min() < ACC_MIN_SPAN:
            mid = (acc.max() + acc.min()) / 2
            lo = min(max(mid - ACC_MIN_SPAN / 2, 0.0), 1.0 - ACC_MIN_SPAN)
            pad = 0.05 * ACC_MIN_SPAN
            ax_a.set_ylim(lo - pad, lo + ACC_MIN_SPAN + pad)
        _legend(ax_a)
    else:
        _empty(ax_a, "no accuracy recorded", "Accuracy")
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def divergence_title(divergence: Any, steps: pd.DataFrame | None) -> str:
    """The training figure's title for a run that diverged (``divergence``: a stored run's
    divergence dict or a :class:`~depthlab.training.history.DivergenceReport`) after its last
    recorded step (a NumPy run stops there: its loss curve just ended, the figure saying
    nothing of why): ``diverged at step N (loss not finite): not drawn``; a run whose step N
    is drawn with a finite loss (computed before its update) and whose update made the loss
    over the epoch's data, or the weights, not finite (where the trainer finds it, at that
    same step): ``diverged after the update of step N (loss not finite): not drawn`` (the
    figure drew a finite last point and said nothing); empty otherwise (a depthlab.torch
    Watch records the non-finite steps, which the figure names itself)."""
    div = divergence if isinstance(divergence, Mapping) else (
        {"step": getattr(divergence, "step", None), "loss": getattr(divergence, "loss", None)})
    at = div.get("step")
    if isinstance(at, np.integer):
        at = int(at)
    if not isinstance(at, int) or isinstance(at, bool):
        return ""
    loss = div.get("loss")
    what = ("loss not finite" if not isinstance(loss, (int, float)) or isinstance(loss, bool)
            or not math.isfinite(loss) else f"loss {loss:.4g}")
    if steps is not None and "step" in steps:
        step = pd.to_numeric(steps["step"], errors="coerce")
        if (step > at).any():
            return ""
        if (step == at).any():
            values = (pd.to_numeric(steps["loss"], errors="coerce")[step == at]
                      if "loss" in steps else pd.Series(dtype=float))
            if not np.isfinite(values.to_numpy(float)).all():
                return ""  # the figure names the step whose loss is not finite
            return f"diverged after the update of step {at} ({what}): not drawn"
    return f"diverged at step {at} ({what}): not drawn"


MAX_MARKED_POINTS = 80
"""Most epochs (or periodic validations) a training figure's line marks with a dot each: a
panel is ~3.6 in wide, and the 10,000 dots of a 10,000-epoch run (4 pt each, 0.03 in apart)
drew its accuracy as a band 0.2 wide, hiding the line; beyond, the line alone."""


def _marked(fmt: str, n: int) -> str:
    """``fmt`` (``"o-"``: dots on a line) for ``n`` points, its line alone (``"-"``) beyond
    :data:`MAX_MARKED_POINTS`."""
    return fmt if n <= MAX_MARKED_POINTS else fmt.lstrip("os^")


def _eval_period(evals: pd.DataFrame) -> str:
    """How often the periodic validations ran, for a legend: ``every 25 steps`` when the
    recorded steps are evenly spaced (the first may be the period itself or step 0), else
    ``periodic``."""
    if "step" not in evals:
        return "periodic"
    gaps = np.unique(np.diff(np.sort(pd.to_numeric(evals["step"], errors="coerce").dropna()
                                     .unique())))
    if gaps.size == 1 and gaps[0] > 0:
        k = int(gaps[0]) if float(gaps[0]).is_integer() else gaps[0]
        return f"every {k} steps" if k != 1 else "every step"
    return "periodic"


ACC_MIN_SPAN = 0.1
"""The least range of an accuracy axis (a flat accuracy is drawn flat, not magnified)."""


@quiet_extremes
def activation_mean_std(probes: pd.DataFrame | None, prefix: str = "act",
                        max_points: int = 14) -> Figure:
    """Glorot & Bengio (2010) Fig. 2 style: per layer, the mean of the activations (line) with
    error bars of one standard deviation, over training. The legend sits outside the axes, on
    the right: the bars of every step span the axes' height, so no place inside is free (the
    legend, placed by "best", sat across the last steps' bars), and module names are long."""
    mean, std = _quantity(probes, f"{prefix}_mean"), _quantity(probes, f"{prefix}_std")
    if mean.empty:
        fig, (ax,) = _new_figure()
        _empty(ax, nothing_recorded(probes, f"{prefix}_mean"), "Mean ± std of each layer's "
               + ("activation" if prefix == "act" else "pre-activation"))
        return fig
    layers = list(mean.columns)
    shown = _pick_layers(layers)
    colors = _layer_colors(shown)
    names = layer_names(probes)
    note = _layers_note(shown, layers)
    # a second title line (the layers note) did not fit the 0.38 in top margin: cut at the top
    fig, (ax,) = _new_figure(6.4, 3.8, top=0.55 if note else None)  # widened for the legend
    steps = mean.index.to_numpy()
    stride = max(1, int(np.ceil(len(steps) / max_points)))
    span = (steps.max() - steps.min()) or 1
    for k, layer in enumerate(shown):
        m = mean[layer].to_numpy(dtype=float)
        ax.plot(steps, m, color=colors[layer], linewidth=1.3, label=layer_label(layer, names))
        if not std.empty and layer in std:
            sd = std[layer].reindex(mean.index).to_numpy(dtype=float)
            sel = slice(k % stride, None, stride)
            # a small horizontal offset per layer keeps the error bars apart
            dx = (k - (len(shown) - 1) / 2) * span * 0.004
            ax.errorbar(steps[sel] + dx, m[sel], yerr=sd[sel], fmt="none",
                        ecolor=colors[layer], elinewidth=1.0, capsize=2, alpha=0.8)
    what = "activation" if prefix == "act" else "pre-activation"
    ax.set_xlabel("training step")
    ax.set_ylabel(f"{what} value")
    ax.set_title(f"Mean ± std of each layer's {what}{note}")
    _legend(ax, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _fit_legend_right(fig, ax)
    return fig


def _fit_legend_right(fig: Figure, ax) -> None:
    """Widen ``fig`` so that ``ax``'s legend, placed outside the axes on the right, fits: the
    axes keep their size in inches, the figure grows by the legend's measured width (rendered
    text, not an estimate: 36-character module names ran past the figure's edge) plus 0.15 in."""
    legend = ax.get_legend()
    if legend is None:
        return
    width, dpi = fig.get_figwidth(), fig.dpi
    box = legend.get_window_extent(fig.canvas.get_renderer())
    axes_right = ax.get_position().x1 * width
    need = (box.x1 - box.x0) / dpi + 0.01 * ax.get_position().width * width + 0.15
    new_width = axes_right + need
    if new_width <= width:
        return
    left = ax.get_position().x0 * width
    fig.set_figwidth(new_width)
    fig.subplots_adjust(left=left / new_width, right=axes_right / new_width)


def _percentile_of(quantity: str, prefix: str) -> float | None:
    """``K`` of a ``{prefix}_pK`` quantity name (``pre_p2``, ``act_p97.5``), else None."""
    head = f"{prefix}_p"
    if not quantity.startswith(head):
        return None
    try:
        k = float(quantity[len(head):])
    except ValueError:
        return None
    return k if 0 <= k <= 100 else None


def percentile_pairs(ks: Sequence[float]) -> tuple[list[tuple[float, float]], list[float]]:
    """The bands (``(lo, hi)``, outermost first) and the lone percentiles that
    :func:`percentile_bands` draws of the recorded percentiles ``ks`` (the median left out):
    each percentile with its mirror (``k``, ``100 - k``) first, the others paired from the
    outside in (outside-in alone paired ``(10, 90, 99)`` as a 10–99 band, the 90th dotted
    inside it)."""
    lows = sorted(k for k in ks if k < 50)
    highs = sorted((k for k in ks if k > 50), reverse=True)
    pairs = [(lo, hi) for lo in lows for hi in highs if abs(lo + hi - 100) < 1e-9]
    lows = [k for k in lows if all(k != lo for lo, _ in pairs)]
    highs = [k for k in highs if all(k != hi for _, hi in pairs)]
    n = min(len(lows), len(highs))
    pairs += list(zip(lows, highs))
    pairs.sort(key=lambda p: p[0] - p[1])  # outermost (lightest) first, the inner one last
    return pairs, lows[n:] + highs[n:]


def percentiles_recorded(probes: pd.DataFrame, prefix: str = "pre") -> list[float]:
    """The ``K`` of every ``{prefix}_pK`` quantity in ``probes`` but the median, sorted."""
    return sorted({k for k in (_percentile_of(str(n), prefix)
                               for n in probes["quantity"].unique())
                   if k is not None and k != 50.0})


def _pct(k: float) -> str:
    """The quantity suffix of percentile ``k`` (``p2``, ``p97.5``), as the probes name it."""
    return f"p{k:g}"


@quiet_extremes
def percentile_bands(probes: pd.DataFrame | None, layer: int | None = None,
                     prefix: str = "pre") -> Figure:
    """Ioffe & Szegedy (2015) Fig. 1b/c style: the 15th, 50th and 85th percentiles (and a
    lighter 2nd-98th band when recorded) of one layer's pre-activation over training.
    ``layer`` defaults to the last hidden layer. Other recorded percentiles (a ``Watch`` or
    ``dlt.probe`` with ``percentiles=(5, 50, 95)`` or ``(10, 25, 50, 75, 90)``) are drawn the
    same way: each pair ``(lo, hi)`` around the median a band, outermost lightest; one
    without a partner a dashed line."""
    fig, (ax,) = _new_figure()
    layers = hidden_layers(probes)
    if not layers:
        _empty(ax, "no probes recorded", PERCENTILES_TITLE)
        return fig
    if layer is None:
        layer = layers[-1]
        # the last layer that feeds a nonlinearity (has activation rows): a torch model's
        # output Linear (the logits, no activation after it) was drawn as "its input to the
        # nonlinearity" of a 12-sigmoid-layer model
        fed = probes.loc[(probes["layer"] >= 1)
                         & probes["quantity"].astype(str).str.startswith("act_"), "layer"]
        if prefix == "pre" and len(fed):
            layer = int(fed.max())
    if layer not in layers:
        raise ValueError(f"layer {layer!r} has no probes; recorded layers: {layers}")

    # at every step the layer recorded its median: one where the value is NaN in every layer
    # (which a wide pivot drops) is a step not drawn, not one left out without a word
    mine = probes[probes["layer"] == layer]
    at = sorted(set(mine.loc[mine["quantity"] == f"{prefix}_p50", "step"]))

    def q(name: str) -> pd.Series | None:
        rows = mine[mine["quantity"] == f"{prefix}_{name}"]
        if rows.empty:
            return None
        return pd.to_numeric(rows["value"], errors="coerce").groupby(rows["step"]).mean() \
            .reindex(at)

    p50 = q("p50")
    if p50 is None:
        _empty(ax, f"no '{prefix}_p50' probes recorded", PERCENTILES_TITLE)
        return fig
    x = p50.index.to_numpy()
    what = "pre-activation" if prefix == "pre" else "activation"
    # a diverged run's last steps (NaN, inf) are no points: with one finite step left, the
    # axis ran from step -0.045 to 0.045 and the title said nothing of the steps not drawn
    finite = np.isfinite(p50.to_numpy(float))
    if not finite.any():
        _empty(ax, f"not finite (NaN/inf) at every recorded step: no {what} percentiles",
               PERCENTILES_TITLE)
        return fig
    color = OKABE_ITO[0]
    few = len(x) < 3
    # the recorded percentiles around the median, paired from the outside in (2-98 and 15-85
    # by default; a Watch's percentiles=(5, 50, 95) drew its median alone, p5/p95 not shown)
    pairs, alone = percentile_pairs(percentiles_recorded(mine, prefix))
    for i, (lo, hi) in enumerate(pairs):
        inner = i == len(pairs) - 1
        if not few:
            ax.fill_between(x, q(_pct(lo)).to_numpy(float), q(_pct(hi)).to_numpy(float),
                            color=color, alpha=0.28 if inner else 0.12, linewidth=0,
                            label=f"{lo:g}–{hi:g}th pct")
            if inner:
                for k in (lo, hi):
                    ax.plot(x, q(_pct(k)).to_numpy(float), color=color, linewidth=0.9,
                            linestyle="--")
    if not few:
        for k in alone:
            ax.plot(x, q(_pct(k)).to_numpy(float), color=color, linewidth=0.9, linestyle=":",
                    label=f"{k:g}th pct")
    ax.plot(x, p50.to_numpy(float), "o-" if len(x) < 3 else "-", color=OKABE_ITO[3],
            linewidth=1.8, markersize=4, label="median")
    from matplotlib.lines import Line2D

    bar_lines: list[Line2D] = []
    if few and pairs:
        lo, hi = pairs[-1]
        with np.errstate(invalid="ignore"):  # inf - inf at a step not drawn
            m = p50.to_numpy(float)
            ax.errorbar(x, m, yerr=[m - q(_pct(lo)).to_numpy(float),
                                    q(_pct(hi)).to_numpy(float) - m],
                        fmt="none", ecolor=color, capsize=4,
                        label=f"{lo:g}–{hi:g}th pct (few steps)")
        # the legend's "best" place reads lines, not an error bar's LineCollection: a one-step
        # run's legend sat across its last bar; each bar is shown to it as a line (not drawn)
        bar_lines = [Line2D([xi, xi], [a, b], visible=False) for xi, a, b in
                     zip(x, q(_pct(lo)).to_numpy(float), q(_pct(hi)).to_numpy(float))
                     if np.isfinite(a) and np.isfinite(b)]
    ax.set_xlabel("training step")
    ax.set_ylabel(f"{what} value")
    # a diverged run's band at its last finite step (±1e29) drew every earlier step's (±2)
    # flat on 0 of a linear axis; symlog keeps the first step's range linear, as the
    # activation figure beside it does
    symlog_if_runaway(ax, f"{what} value")
    step_ticks(ax, x[finite])
    note = f"\nnot drawn: not finite (NaN/inf) {steps_phrase(x[~finite], x)}" \
        if not finite.all() else ""
    ax.set_title(f"Percentiles of {layer_label(layer, layer_names(probes))}'s {what} over "
                 f"training{note}", fontsize=10 if note else None)
    for bar in bar_lines:  # what "best" sees of the error bars (see above), not drawn
        ax.add_line(bar)
    _legend(ax, loc="best")
    return fig


HUGE = 1e290
"""Drawn values beyond this reach float64's largest (1.8e308): see :func:`fit_huge_y`."""


def _decade_ticks(axis, bottom: float, top: float) -> None:
    """Major ticks of a log ``axis`` at finite powers of ten from 10^``bottom`` to 10^``top``
    (a step of 1, 2, 5, 10, ... decades, about 8 ticks), no minor ones: matplotlib's locator put
    one beyond float64's largest (10^320 = inf), which its formatter could not write."""
    step = next((k for k in (1, 2, 5, 10, 20, 25, 50, 100, 200) if k >= (top - bottom) / 8),
                1000)
    axis.set_major_locator(FixedLocator(
        [10.0 ** k for k in range(math.ceil(bottom / step) * step, math.floor(top) + 1, step)]))
    axis.set_minor_locator(NullLocator())


def log_margins(lo: float, hi: float) -> tuple[float, float]:
    """The decades (``bottom``, ``top``) a log axis drawing ``lo`` .. ``hi`` (> 0) spans: 5% of
    the data's decades beyond each end (half a decade for one value), the top not past 308."""
    a, b = math.log10(lo), math.log10(hi)
    pad = 0.05 * (b - a) if b > a else 0.5
    return a - pad, min(b + pad, 308.0)


def huge_log_limits(ax, lo: float, hi: float) -> None:
    """Limits and ticks of a log y axis drawing ``lo`` .. ``hi`` (> 0) up to float64's largest
    values (:func:`log_margins`; ticks at finite powers of ten, :func:`_decade_ticks`), where
    matplotlib's own margin above the top overflowed to inf and the axis fell back to 1 .. 10."""
    bottom, top = log_margins(lo, hi)
    ax.set_ylim(10.0 ** bottom, max(10.0 ** top, hi) if hi < math.inf else 10.0 ** top)
    _decade_ticks(ax.yaxis, bottom, top)


def fit_huge_y(ax) -> None:
    """Y limits of ``ax`` when what it draws reaches float64's largest values (a float64 run's
    loss or activations of 1e300 at its last finite step): matplotlib's margins beyond them
    overflowed, and the axis fell back to 1 .. 10 (log) or -0.001 .. 0.001 (symlog), with not
    one value in view. Then the limits are set here (log: 5% of the decades each side; else
    half the largest magnitude beyond it), at most the largest float, a log axis's ticks at
    finite powers of ten (the locator's 10^320 = inf raised OverflowError in its formatter)."""
    parts = [np.ravel(ln.get_ydata()) for ln in ax.lines]
    parts += [p.vertices[:, 1] for c in ax.collections for p in c.get_paths()]
    vals = np.asarray(pd.to_numeric(np.concatenate(parts) if parts else np.array([]),
                                    errors="coerce"), float)
    vals = vals[np.isfinite(vals)]
    if not vals.size or float(np.abs(vals).max()) <= HUGE:
        return
    big = np.finfo(np.float64).max
    if ax.get_yscale() == "log":
        pos = vals[vals > 0]
        huge_log_limits(ax, float(pos.min()), float(pos.max()))
        return
    lo, hi = float(vals.min()), float(vals.max())
    ax.set_ylim(max(lo * 1.5, -big) if lo < 0 else lo * 0.5,
                min(hi * 1.5, big) if hi > 0 else hi * 0.5)


def symlog_if_runaway(ax, label: str) -> None:
    """A y axis whose lines reach more than 1000x their largest value at their first point (a
    diverged run: 0.6 at step 0, 3.5e32 at step 4) becomes symlog, linear within the first
    step's power of ten, ticks at 0 and at most four powers of ten each side; its label
    ``label`` then says so ("... (symlog: linear within ±1)"). Otherwise left as it is."""
    ys = [np.asarray(pd.to_numeric(np.ravel(ln.get_ydata()), errors="coerce"), float)
          for ln in ax.lines]
    top = max((float(np.abs(y[np.isfinite(y)]).max()) for y in ys if np.isfinite(y).any()),
              default=0.0)
    start = max((abs(float(y[0])) for y in ys if len(y) and np.isfinite(y[0])), default=0.0)
    if start > 0 and top > 1e3 * start:
        lin = 10.0 ** math.ceil(math.log10(start))  # a power of ten: ticks 0, ±1, ±10^k
        ax.set_yscale("symlog", linthresh=lin, linscale=0.5)
        # 0 and at most four powers of ten each side (±lin and the default ticks crowded 0)
        # the highest power within the data (in logs: top / lin of 1.7e308 / 1e-3 is past
        # float64's largest, inf, and floor(inf) raised OverflowError: no figure)
        k_top = math.floor(math.log10(top) - math.log10(lin))
        ks = range(k_top, 0, -max(1, math.ceil(k_top / 4)))
        e = round(math.log10(lin))  # lin = 10^e: each tick 10^(e + k) <= top, finite (lin
        # * 10.0 ** k raised OverflowError for k = 311 under 1.7e308 with lin 1e-3)
        ticks = [0.0] + [sign * 10.0 ** (e + k) for k in ks for sign in (1, -1)]
        ax.yaxis.set_major_locator(FixedLocator(sorted(ticks)))
        ax.yaxis.set_minor_locator(NullLocator())
        # two lines where one outgrows the axes' height (3.8 in: "activation / s (each
        # layer's own scale) (symlog: linear within ±1e-305)" ran off both ends)
        sep = "\n" if len(label) + len(f"{lin:g}") > 40 else " "
        ax.set_ylabel(f"{label}{sep}(symlog: linear within ±{lin:g})")
        fit_huge_y(ax)
        _symlog_around_data(ax, lin)
        return
    fit_huge_y(ax)


def _symlog_around_data(ax, lin: float) -> None:
    """Y limits around what ``ax`` (symlog, linear within ``±lin``) draws, where matplotlib's
    own fell short of it: with ``lin`` far below the data (1e-305 under values of 1: each
    layer's bands divided by its scale after a 300-decade blow-up) its margins overflowed and
    the axis fell back to -0.001 .. 0.001, not one line in view. The top is 1.5x the largest
    value (0.5x a negative one), the bottom likewise, or ``-lin`` under values >= 0."""
    parts = [np.ravel(ln.get_ydata()) for ln in ax.lines]
    parts += [p.vertices[:, 1] for c in ax.collections for p in c.get_paths()]
    vals = np.asarray(pd.to_numeric(np.concatenate(parts) if parts else np.array([]),
                                    errors="coerce"), float)
    vals = vals[np.isfinite(vals)]
    if not vals.size:
        return
    lo, hi = float(vals.min()), float(vals.max())
    bottom, top = ax.get_ylim()
    if bottom <= lo and hi <= top:
        return
    big = np.finfo(np.float64).max
    ax.set_ylim(max(lo * 1.5, -big) if lo < 0 else -lin, min(hi * 1.5, big) if hi > 0
                else hi * 0.5)


HEATMAP_TEXTS = {
    "grad_pre_std": ("Back-propagated gradient std per layer", "std of dL/ds"),
    "grad_pre_absmean": ("Back-propagated gradient mean |dL/ds| per layer", "mean |dL/ds|"),
    "act_std": ("Activation std per layer", "std of the activations"),
    "pre_std": ("Pre-activation std per layer", "std of the pre-activations"),
    "weight_std": ("Weight std per layer", "std of the weights"),
    "weight_grad_std": ("Weight gradient std per layer", "std of dL/dW"),
    "weight_grad_absmean": ("Weight gradient mean |dL/dW| per layer", "mean |dL/dW|"),
    "update_ratio": ("Relative weight update per layer", "||ΔW|| / ||W||"),
}
"""Title and colour-bar label of :func:`gradient_heatmap` per quantity (another: its name)."""


HEATMAP_NAMED_ROWS = 80
"""Rows of a heatmap of named modules (a PyTorch run) that each get their name: the figure grows
one label's pitch a row up to this many (a 20-block transformer); beyond, names are thinned and
the axis label says how many of them are shown."""


@quiet_extremes
def gradient_heatmap(probes: pd.DataFrame | None, quantity: str = "grad_pre_std") -> Figure:
    """Back-propagated gradient standard deviation per layer (rows) and step (columns), on a
    logarithmic colour scale; zero or non-finite cells are left blank. Another ``quantity``
    is drawn the same way, titled and labelled by :data:`HEATMAP_TEXTS` (a quantity not
    there: by its name); it was titled "Back-propagated gradient std" whatever it drew."""
    heading, what = HEATMAP_TEXTS.get(quantity, (f"{quantity} per layer", quantity))
    names = layer_names(probes)
    wide = _quantity(probes, quantity)
    size = tick_font_size(len(wide.columns))
    left = max(0.85, names_margin(names, list(wide.columns), size) + 0.35) if names else None
    # named rows: every row drawn (the blank ones of layers without this quantity included)
    # one label's pitch tall, up to HEATMAP_NAMED_ROWS rows. Sized by the measured layers
    # alone, a 6-block transformer's 24 rows got 0.130 in each for labels 0.131 in apart, and
    # every other module went unnamed ('encoder.layers.N.linear1' appeared nowhere)
    rows = int(max(wide.columns) - min(wide.columns) + 1) if len(wide.columns) else 0
    pitch = size * TICK_PITCH / 72
    height = (max(3.8, 1.0 + pitch * 1.05 * min(rows, HEATMAP_NAMED_ROWS)) if names
              else 3.8)
    fig, (ax,) = _new_figure(6.4 + (left or 0.85) - 0.85, height, right=1.3, left=left)
    if wide.empty:
        _empty(ax, nothing_recorded(probes, quantity), heading)
        return fig
    # every recorded step a column: one whose values are all NaN (an fp16 run's overflowed
    # gradients) is blank, not left out (the axis started at the first finite step)
    sel = probes[(probes["quantity"] == quantity) & (probes["layer"] >= 1)]
    wide = wide.reindex(sorted(set(sel["step"]) | set(wide.index)))
    # every layer one row: a layer without this quantity (a transformer's attention, whose
    # in-projection has no output of its own) is a blank row; its neighbours were stretched
    # over it (the embedding drawn two layers tall)
    present = [int(v) for v in wide.columns]
    wide = wide.reindex(columns=range(min(present), max(present) + 1))
    missing = [la for la in wide.columns if la not in present]
    z = wide.to_numpy(dtype=float).T  # layers x steps
    valid = np.isfinite(z) & (z > 0)
    if not valid.any():
        _empty(ax, "gradients are all zero or non-finite" if quantity == "grad_pre_std" else
               f"'{quantity}' is zero or non-finite everywhere", heading)
        return fig
    steps = wide.index.to_numpy(dtype=float)
    layers = np.asarray(wide.columns, dtype=float)
    x_edges = _edges(steps)
    y_edges = _edges(layers)
    lo, hi = z[valid].min(), z[valid].max()
    if hi <= lo:
        hi = lo * 10
    mesh = ax.pcolormesh(x_edges, y_edges, np.ma.masked_where(~valid, z),
                         norm=LogNorm(vmin=lo, vmax=hi), cmap=HEAT_CMAP, shading="flat")
    step_ticks(ax, steps, limit=12)
    ax.set_xlabel("training step")
    ax.set_ylabel("module (first at the bottom)" if names else "layer (1 = first hidden)")
    layer_ticks(ax, "y", [int(v) for v in layers], names, size=size,
                max_ticks=max(LAYER_TICKS_MAX, HEATMAP_NAMED_ROWS))
    if names:
        named = [int(v) for v in layers if int(v) in names]
        ticks = [int(v) for v in ax.get_yticks() if int(v) in names]
        if len(ticks) < len(named):  # beyond HEATMAP_NAMED_ROWS rows: say the rows are thinned
            ax.set_ylabel(f"module (first at the bottom; {len(ticks)} of {len(named)} named)")
    ax.grid(False)
    with np.errstate(over="ignore"):  # its boundaries' midpoints of 1e308: inf, silently
        cb = fig.colorbar(mesh, cax=_side_axis(fig, ax))
    _tidy_log_axis(cb.ax.yaxis, lo, hi)
    if hi > HUGE:  # a float64 run's gradients of 1e300: ticks within float64 (was OverflowError)
        _decade_ticks(cb.ax.yaxis, math.log10(lo), math.log10(hi))
    cb.set_label(f"{what} (log scale)")
    notes = [f"blank: {len(missing)} layer{'s' * (len(missing) > 1)} with no {quantity} "
             "recorded"] if missing else []
    values = pd.to_numeric(sel["value"], errors="coerce")
    for what, bad in (("not finite (NaN/inf)", ~np.isfinite(values)), ("zero", values == 0)):
        if bad.any():  # recorded, but no colour on a log scale: say so, not a silent gap
            notes.append(f"blank: {what} {steps_phrase(sel.loc[bad, 'step'], steps)}")
    # a layer with rows at some steps only (a branch of the forward taken at other steps):
    # its blank cells were unexplained
    recorded = set(zip(sel["step"].astype(float), sel["layer"].astype(int)))
    gaps = {int(la): [s for s in steps if (float(s), int(la)) not in recorded]
            for la in present}
    gaps = {la: v for la, v in gaps.items() if v}
    if len(gaps) == 1:
        (la, at), = gaps.items()
        label = cut_labels([layer_label(la, names)], 28)[0]
        notes.append(f"blank: {label} not recorded {steps_phrase(at, steps)}")
    elif gaps:
        notes.append(f"blank: {len(gaps)} layers not recorded at some steps")
    ax.set_title("\n".join([heading, *notes]),
                 fontsize=11 if notes else None)
    fit_title_top(fig)
    return fig


def steps_phrase(bad: Sequence[float], steps: Sequence[float]) -> str:
    """Where values are missing: ``from step 3`` when every step from the first ``bad`` one
    to the last of ``steps`` is bad, else ``at step 2`` / ``at steps 2, 5, 7`` (the first
    four, then ``...``)."""
    bad_steps = sorted({int(v) for v in bad})
    later = [int(v) for v in sorted(set(steps)) if v >= bad_steps[0]]
    if len(later) > 1 and later == bad_steps:
        return f"from step {bad_steps[0]}"
    shown = ", ".join(map(str, bad_steps[:4])) + (", ..." if len(bad_steps) > 4 else "")
    return f"at step{'s' * (len(bad_steps) > 1)} {shown}"


def _side_axis(fig: Figure, ax, gap_in: float = 0.12, width_in: float = 0.16):
    """An axes for a colour bar just right of ``ax`` (fixed-margin figures)."""
    pos = ax.get_position()
    w = fig.get_figwidth()
    return fig.add_axes((pos.x1 + gap_in / w, pos.y0, width_in / w, pos.height))


def _edges(centres: np.ndarray) -> np.ndarray:
    """Cell edges around sorted centres (midpoints; end cells mirrored)."""
    c = np.asarray(centres, dtype=float)
    if c.size == 1:
        return np.array([c[0] - 0.5, c[0] + 0.5])
    mid = (c[:-1] + c[1:]) / 2
    return np.concatenate([[c[0] - (mid[0] - c[0])], mid, [c[-1] + (c[-1] - mid[-1])]])


@quiet_extremes
def gradient_profile(probes: pd.DataFrame | None, theory: pd.DataFrame | None = None,
                     quantity: str = "grad_pre_std") -> Figure:
    """Gradient std per layer at initialisation (first probed step, log y) and at the last
    probed step, with the theory prediction: ``theory`` has columns ``layer, grad_pre_var``
    (variance relative to any reference); it is shown as ``sqrt(grad_pre_var)`` scaled so that it
    equals the measurement at the top hidden layer."""
    fig, (ax,) = _new_figure()
    wide = _quantity(probes, quantity)
    if wide.empty:
        _empty(ax, nothing_recorded(probes, quantity), GRADIENT_PROFILE_TITLE)
        return fig
    names = layer_names(probes)
    size = tick_font_size(len(wide.columns))
    if names:  # room for the rotated module names under the axis
        bottom = names_margin(names, list(wide.columns), size) + 0.45
        fig.set_figheight(fig.get_figheight() + bottom - 0.55)
        fig.subplots_adjust(bottom=bottom / fig.get_figheight(),
                            top=1 - 0.38 / fig.get_figheight())
    first, last = wide.index.min(), wide.index.max()
    init = wide.loc[first].dropna()
    layers = init.index.to_numpy()
    positive = init[init > 0]
    ax.plot(layers, init.to_numpy(float), "o-", color=OKABE_ITO[0], linewidth=1.8,
            markersize=5, label=f"measured, step {first}")
    if last != first:
        end = wide.loc[last].dropna()
        ax.plot(end.index.to_numpy(), end.to_numpy(float), "s:", color=OKABE_ITO[1],
                linewidth=1.2, markersize=4, label=f"measured, step {last}")
    if theory is not None and not theory.empty and not positive.empty:
        th = theory.set_index("layer")["grad_pre_var"].astype(float)
        common = [layer for layer in positive.index if layer in th.index]
        if common:
            top = max(common)
            pred = np.sqrt(th.loc[common].clip(lower=0))
            ref = pred.loc[top]
            if ref > 0 and np.isfinite(ref):
                pred = pred * (positive.loc[top] / ref)
                ax.plot(common, pred.to_numpy(float), "--", color=OKABE_ITO[3], linewidth=1.6,
                        label="theory (scaled at top layer)")
    vals = np.concatenate([ln.get_ydata() for ln in ax.lines]).astype(float)
    pos = vals[np.isfinite(vals) & (vals > 0)]
    if pos.size:
        ax.set_yscale("log")
        _tidy_log_axis(ax.yaxis, pos.min(), pos.max())
    ax.set_xlabel("module (nearest the input on the left)" if names else
                  "layer (1 = first hidden)")
    ax.set_ylabel("std of dL/ds")
    layer_ticks(ax, "x", [int(v) for v in layers], names, size=size)
    ax.set_title(GRADIENT_PROFILE_TITLE)
    _legend(ax, loc="best")
    return fig


@quiet_extremes
def weight_std_profile(probes: pd.DataFrame | None,
                       init_std: dict[int, float] | None = None,
                       init_label: str = "initializer") -> Figure:
    """Std of each layer's weight entries (``weight_std``, log y) at the first and the last
    probed step, beside the initializer's ``sqrt(Var(W))`` per layer (``init_std``: layer ->
    std, e.g. He's ``sqrt(2 / fan_in)``, Glorot's ``sqrt(2 / (fan_in + fan_out))``; drawn
    dotted, labelled ``init_label``). A layer whose value is not finite at a drawn step has no
    point there and is named in the title; a weight std of exactly 0 (all-equal weights, a
    zeros init) cannot sit on the log axis and is named too."""
    fig, (ax,) = _new_figure()
    wide = _quantity(probes, "weight_std")
    if wide.empty:
        _empty(ax, nothing_recorded(probes, "weight_std"), WEIGHT_STD_TITLE)
        return fig
    names = layer_names(probes)
    layers = [int(v) for v in wide.columns]
    size = tick_font_size(len(layers))
    if names:  # room for the rotated module names under the axis
        bottom = names_margin(names, layers, size) + 0.45
        fig.set_figheight(fig.get_figheight() + bottom - 0.55)
        fig.subplots_adjust(bottom=bottom / fig.get_figheight(),
                            top=1 - 0.38 / fig.get_figheight())
    first, last = wide.index.min(), wide.index.max()
    notes = []
    if init_std:
        th = pd.Series({int(k): float(v) for k, v in init_std.items()
                        if int(k) in layers}).sort_index()
        th = th[np.isfinite(th) & (th > 0)]
        if len(th):
            ax.plot(th.index.to_numpy(), th.to_numpy(float), ":", color=OKABE_ITO[3],
                    linewidth=1.8, marker="_" if len(th) == 1 else None, markersize=14,
                    label=init_label, zorder=3)  # over the measured line it matches
    drawn = ((first, "o-", OKABE_ITO[0], 1.8, 5), (last, "s--", OKABE_ITO[1], 1.4, 4))
    for step, style, colour, width, msize in drawn[:1 if last == first else 2]:
        row = wide.loc[step].astype(float)
        # non-finite and zero values: no point (a log axis), named in the title
        shown = row.where(np.isfinite(row) & (row > 0))
        ax.plot(np.asarray(layers, float), shown.to_numpy(float), style, color=colour,
                linewidth=width, markersize=msize, label=f"measured, step {step}")
        bad = [la for la, v in row.items() if not np.isfinite(v)]
        zero = [la for la, v in row.items() if v == 0]
        if bad:
            notes.append(f"step {step}: not finite in {_span_text(bad, names)}")
        if zero:
            notes.append(f"step {step}: 0 (all weights equal) in {_span_text(zero, names)}")
    # recorded steps after the last drawn one, every layer NaN/inf there (a torch Watch goes
    # on recording a diverged run: its weights NaN from then on): "initialization and end"
    # drew an earlier step as the end without a word
    steps = probes.loc[(probes["quantity"] == "weight_std") & (probes["layer"] >= 1), "step"]
    after = sorted({int(v) for v in steps if v > last})
    if after:
        notes.append((f"steps {after[0]}-{after[-1]}" if len(after) > 1 else f"step {after[0]}")
                     + ": not finite in any layer")
    measured = [ln for ln in ax.lines if str(ln.get_label()).startswith("measured")]
    vals = np.concatenate([np.asarray(ln.get_ydata(), float) for ln in measured])
    if not np.isfinite(vals).any():  # every weight std 0 or not finite: no point to draw
        ax.clear()
        _style(ax)
        _empty(ax, "no weight std to draw on a log axis:\n" + "\n".join(notes),
               WEIGHT_STD_TITLE)
        return fig
    vals = np.concatenate([np.asarray(ln.get_ydata(), float) for ln in ax.lines])
    pos = vals[np.isfinite(vals) & (vals > 0)]
    ax.set_yscale("log")
    _tidy_log_axis(ax.yaxis, pos.min(), pos.max())
    fit_huge_y(ax)  # weights of 1e300..1.7e308 (a float64 run blowing up): the axis fell
    # back to 1 .. 10, not one point in view
    ax.set_xlabel("module (nearest the input on the left)" if names else
                  "layer (1 = first hidden)")
    ax.set_ylabel("std of the weights W")
    layer_ticks(ax, "x", layers, names, size=size)
    if notes:  # room above the axes for the title's extra lines
        extra = 0.19 * len(notes)
        height = fig.get_figheight()
        top_in = (1 - fig.subplotpars.top) * height + extra
        bottom_in = fig.subplotpars.bottom * height
        fig.set_figheight(height + extra)
        fig.subplots_adjust(top=1 - top_in / (height + extra),
                            bottom=bottom_in / (height + extra))
    ax.set_title("\n".join([WEIGHT_STD_TITLE, *notes]),
                 fontsize=10 if notes else 10.5)
    _legend(ax, loc="best")
    return fig


@quiet_extremes
def layer_histograms(histograms: pd.DataFrame | None, kind: str = "act") -> Figure:
    """Glorot & Bengio (2010) Figs. 6-7 style: normalized histograms (density), one curve per
    layer, at initialisation (left) and at the last recorded step (right)."""
    fig, axes = _new_figure(9.6, 3.7, ncols=2, top=0.62)
    what = {"act": "activation", "grad": "back-propagated gradient dL/ds",
            "weight": "weight"}.get(kind, kind)
    h = (histograms[histograms["kind"] == kind] if histograms is not None
         and not histograms.empty else pd.DataFrame())
    if h.empty:
        for ax in axes:
            _empty(ax, f"no '{kind}' histograms recorded")
        fig.suptitle(f"Per-layer histograms: {what}", fontsize=11)
        return fig
    steps = sorted(h["step"].unique())
    chosen = [steps[0], steps[-1]] if len(steps) > 1 else [steps[0]]
    layers = sorted(int(v) for v in h["layer"].unique())
    shown = _pick_layers(layers)
    colors = _layer_colors(shown)
    names = layer_names(histograms)
    for ax, step in zip(axes, chosen):
        hs = h[h["step"] == step]
        for layer in shown:
            hl = hs[hs["layer"] == layer].sort_values("bin_left")
            if hl.empty:
                continue
            left = hl["bin_left"].to_numpy(float)
            right = hl["bin_right"].to_numpy(float)
            cnt = hl["count"].to_numpy(float)
            if cnt.sum() <= 0:  # no finite entry (a diverged layer): its bins are a placeholder
                continue
            width = np.where(right > left, right - left, np.nan)
            dens = cnt / max(cnt.sum(), 1) / width
            ax.stairs(np.nan_to_num(dens), np.append(left, right[-1]), color=colors[layer],
                      linewidth=1.4, label=layer_label(layer, names))
        label = "initialization" if step == 0 else f"step {step}"
        ax.set_title(f"{label}{_layers_note(shown, layers)}")
        ax.set_xlabel(f"{what} value")
        ax.set_ylabel("density")
        ax.xaxis.set_major_locator(MaxNLocator(6))
        ax.ticklabel_format(axis="both", style="sci", scilimits=(-3, 4))
    if len(chosen) == 1:
        _empty(axes[1], "only one step recorded")
    _legend(axes[0], ncols=2 if len(shown) > 4 else 1, loc="best")
    fig.suptitle(f"Per-layer histograms: {what}", fontsize=11)
    return fig


SATURATION_QUANTITIES = (
    ("saturated_frac", "Saturated entries (bounded units)", "fraction of entries"),
    ("inactive_frac", "Inactive entries (ReLU-family units)", "fraction of entries"),
    # dead is f'(s) == 0 on every example: an ELU/GELU unit negative on every example still
    # passes a gradient and is not dead (the title "inactive on every example" said it was)
    ("dead_frac", "Dead units (zero derivative on every example)", "fraction of units"),
)


@quiet_extremes
def saturation_dead(probes: pd.DataFrame | None) -> Figure:
    """Per layer over training, one panel per recorded quantity: ``saturated_frac`` (bounded
    activations: |f'(s)| near 0), ``inactive_frac`` (ReLU-family entries with ``s <= 0``) and
    ``dead_frac`` (units with ``f'(s) == 0`` on every probe example). A quantity that is not
    defined for the network's activation (all NaN) gets no panel."""
    present = []
    for q, title, ylabel in SATURATION_QUANTITIES:
        wide = _quantity(probes, q)
        if not wide.empty and np.isfinite(wide.to_numpy(float)).any():
            present.append((q, title, ylabel, wide))
    # steps where a layer's pre-activations are NaN/inf (a diverged run): its entries count
    # as neither saturated nor inactive there (a NaN derivative is not 0), so the fractions
    # fall to 0, which reads as healthy; those steps are shaded and the legend says why
    pre = (probes[(probes["quantity"] == "pre_std") & (probes["layer"] >= 1)]
           if present else pd.DataFrame(columns=["step", "value"]))
    overflowed = pre[~np.isfinite(pd.to_numeric(pre["value"], errors="coerce"))]
    bad = sorted(set(overflowed["step"]))
    if bad:
        # and those layers' values there are left out (a NaN breaks the line): a 60-layer
        # net diverged at step 1 drew every overflowed layer's line falling to 0 inside the
        # shading, the picture of a healthy net
        pairs = set(zip(overflowed["step"], overflowed["layer"]))
        present = [(q, title, ylabel, wide.mask(pd.DataFrame(
            [[(s, la) in pairs for la in wide.columns] for s in wide.index],
            index=wide.index, columns=wide.columns))) for q, title, ylabel, wide in present]
        # a panel left with no value (a net whose pre-activations are NaN at every recorded
        # step: a ReLU's inactive fraction of 0 there is no measurement) is not drawn: its
        # y range was NaN and stopped the report
        present = [p for p in present if np.isfinite(p[3].to_numpy(float)).any()]
    names = layer_names(probes)
    # one legend for all panels, outside the last one (inside, "best" still covered lines
    # that span the whole panel)
    right = (names_margin(names) + 0.5 if names else 1.1) if present else None
    if bad and right is not None:
        right = max(right, 1.55)  # room for the shading's legend entry
    fig, axes = _new_figure(4.8 * max(len(present), 1) + (right or 0), 3.4,
                            ncols=max(len(present), 1), right=right)
    if not present:
        recorded = probes is not None and not probes.empty and bool((probes["quantity"].isin(
            [q for q, *_ in SATURATION_QUANTITIES]) & (probes["layer"] >= 1)).any())
        _empty(axes[0], "pre-activations NaN/inf wherever these fractions were recorded:"
               "\nnothing to draw" if bad and recorded else
               "every saturation and dead-unit probe is NaN or inf: nothing to draw"
               if recorded else "no saturation or dead-unit probes recorded",
               "Saturated, inactive and dead units")
        return fig
    all_steps = np.array(sorted(set(probes["step"])), dtype=float)
    edges = _edges(all_steps) if bad else np.empty(0)
    # one colour per layer across the panels, and one legend entry per layer drawn in any of
    # them: a CNN's ReLU layers (inactive) and its tanh layer (saturated) each coloured their
    # own panel from the palette's start, and the last panel's legend named those colours
    # otherwise
    union = sorted(set().union(*(wide.columns for *_, wide in present)))
    picked = _pick_layers(union)
    colors = _layer_colors(picked)
    drawn: set[int] = set()
    for ax, (_q, title, ylabel, wide) in zip(axes, present):
        layers = list(wide.columns)
        shown = [la for la in picked if la in layers]
        if not shown:  # many layers, none of this panel's among the picked ones
            shown = _pick_layers(layers)
            extra = _layer_colors(union)
            colors.update({la: extra[la] for la in shown if la not in colors})
        drawn.update(shown)
        for k, step in enumerate(bad):
            i = int(np.searchsorted(all_steps, step))
            ax.axvspan(edges[i], edges[i + 1], color="#999999", alpha=0.25, linewidth=0,
                       label="pre-activation\nNaN/inf" if k == 0 else None)
        for layer in shown:
            ax.plot(wide.index, wide[layer], "o-" if len(wide) < 4 else "-",
                    color=colors[layer], linewidth=1.4, markersize=3.5,
                    label=layer_label(layer, names))
        step_ticks(ax, wide.index)
        top = float(np.nanmax(wide[shown].to_numpy(float))) if len(shown) else 0.0
        ax.set_ylim(-0.02 * max(top, 0.05), min(1.02, max(top * 1.15, 0.05)))
        ax.set_xlabel("training step")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{title}{_layers_note(shown, layers)}{_hidden_lines_note(wide[shown])}",
                     fontsize=9.5)
    lines = max(ax.get_title().count("\n") + 1 for ax in axes)
    if lines > 2:  # the fixed top margin holds two lines of a 9.5 pt title
        extra = 0.17 * (lines - 2)
        height = fig.get_figheight() + extra
        fig.set_figheight(height)
        fig.subplots_adjust(top=1 - (_MARGIN_IN["top"] + extra) / height,
                            bottom=_MARGIN_IN["bottom"] / height)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=colors[la], linewidth=1.4) for la in sorted(drawn)]
    labels = [layer_label(la, names) for la in sorted(drawn)]
    shade = [(h, lab) for ax in axes for h, lab in zip(*ax.get_legend_handles_labels())
             if lab.startswith("pre-activation")][:1]
    axes[-1].legend([h for h, _ in shade] + handles, [lab for _, lab in shade] + labels,
                    loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False,
                    fontsize=7.5 if names else 8.5)
    return fig


def _hidden_lines_note(wide: pd.DataFrame) -> str:
    """A title's note on the lines of ``wide`` (one column a layer, drawn in column order)
    that lie under a later one with the same values: ``0 in every layer at every step`` when
    all are 0 (a healthy net's dead units: the legend named 3 layers, one line showed), ``1 in
    ...`` when all are 1 (a dead net), any one value so, else
    ``k layers under another's line (same values)``; empty when every line shows."""
    vals = wide.to_numpy(float)
    if vals.shape[1] < 2:
        return ""
    if np.isfinite(vals).all() and np.all(vals == vals.flat[0]):  # one value: 0 in a healthy
        return f"\n{vals.flat[0]:g} in every layer at every step"  # net, 1 in a dead one
    hidden = sum(np.isfinite(vals[:, i]).any() and any(
        np.array_equal(vals[:, i], vals[:, j], equal_nan=True)
        for j in range(i + 1, vals.shape[1])) for i in range(vals.shape[1]))
    if not hidden:
        return ""
    return f"\n{hidden} layer{'s' * (hidden > 1)} under another's line (same values)"


def _no_update_ratio_drawn(wide: pd.DataFrame) -> str:
    """Why the update-ratio figure, a log axis, draws no line: no probes; the ratio exactly 0
    at every probed step after the first (the weights never changed: a saturated or dead net's
    zero gradients, or steps below the weights' float resolution); not finite at every one;
    or 0 where finite. The first probed step's NaN (no weights before it) is no value."""
    if wide.empty:
        return "no 'update_ratio' probes recorded"
    # the first probed step's NaN row: no weights before it (step 0 of a NumPy run)
    later = wide.iloc[1:] if wide.iloc[0].isna().all() else wide
    if later.empty:
        return "update ratio: one probed step only (the ratio needs the weights before it)"
    vals = later.to_numpy(float).ravel()
    if (vals == 0).all():
        return ("update ratio 0 at every probed step:\nthe weights never changed (zero gradients,"
                "\nor steps below their float resolution); a log axis has no 0")
    if (~np.isfinite(vals)).all():
        return "update ratio not finite (NaN/inf)\nat every probed step: not drawn"
    return "update ratio 0 or not finite (NaN/inf)\nat every probed step: nothing to draw"


JACOBIAN_MAX_STEPS = 5
"""The most recorded steps the Jacobian figure draws (the first, the last, evenly between)."""


def jacobian_summary(jac: pd.DataFrame) -> list[tuple[int, int, float, float, float, int]]:
    """Per recorded step of a run's input-output Jacobian singular values (``Store.jacobian``:
    step, example, idx, value), pooled over its examples: ``(step, n, mean σ², min σ, max σ,
    n_bad)`` over the ``n`` finite values; ``n_bad`` counts those that are not finite. The mean
    of σ² is (1/n) Σ σ_i², i.e. the mean over the examples of ||J||_F² / min(n_in, n_out) (for a
    square Jacobian of a wide net at initialization, mean-field theory's product of the layers'
    χ, Pennington et al. 2017)."""
    out = []
    for step, rows in jac.groupby("step", sort=True):
        v = pd.to_numeric(rows["value"], errors="coerce").to_numpy(float)
        ok = v[np.isfinite(v)]
        with np.errstate(over="ignore"):
            out.append((int(step), int(ok.size), float(np.mean(ok ** 2)) if ok.size else np.nan,
                        float(ok.min()) if ok.size else np.nan,
                        float(ok.max()) if ok.size else np.nan, int(v.size - ok.size)))
    return out


@quiet_extremes
def jacobian_spectrum(jac: pd.DataFrame | None) -> Figure:
    """The input-output Jacobian's singular values σ of each shown recorded step, pooled over
    the probe examples, as a cumulative distribution (fraction of σ ≤ x) on a log σ axis,
    with σ = 1 marked: dynamical isometry (Saxe et al. 2014, Pennington et al. 2017) is every σ
    near 1; a spectrum far below 1 is a vanishing, far above an exploding input-output map."""
    fig, (ax,) = _new_figure(6.4, 3.6, right=2.6)
    if jac is None or jac.empty:
        _empty(ax, "no Jacobian singular values recorded", JACOBIAN_TITLE)
        return fig
    stats = {s[0]: s for s in jacobian_summary(jac)}
    steps = sorted(stats)
    if len(steps) > JACOBIAN_MAX_STEPS:
        pick = np.unique(np.linspace(0, len(steps) - 1, JACOBIAN_MAX_STEPS).round().astype(int))
        steps = [steps[i] for i in pick]
    colors = plt_colors(len(steps))
    drawn, zero, bad = 0, 0, []
    for color, step in zip(colors, steps, strict=True):
        v = pd.to_numeric(jac.loc[jac["step"] == step, "value"], errors="coerce").to_numpy(float)
        pos = np.sort(v[np.isfinite(v) & (v > 0)])
        zero += int(np.sum(v == 0))
        n_bad = int(np.sum(~np.isfinite(v)))
        if n_bad:  # which step: "8 not finite" did not say it was all of step 1's (diverged)
            bad.append(f"step {step}: " + (f"all {n_bad}" if n_bad == v.size
                                           else f"{n_bad} of {v.size}"))
        if not pos.size:
            continue
        _, n, ms, lo, hi, _ = stats[step]
        frac = np.arange(1, pos.size + 1) / pos.size
        ax.step(pos, frac, where="post", color=color, linewidth=1.6,
                label=f"step {step}: mean σ² {ms:.3g}\nσ {lo:.3g} to {hi:.3g}")
        drawn += 1
    if not drawn:
        ax.clear()
        _style(ax)
        _empty(ax, "no finite, nonzero singular value: nothing to draw on a log axis",
               JACOBIAN_TITLE)
        return fig
    ax.set_xscale("log")
    ax.axvline(1.0, color="#555555", linestyle=":", linewidth=1.0, label="σ = 1 (isometry)")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("singular value σ of ∂(outputs)/∂(inputs) (log scale)")
    ax.set_ylabel("fraction of σ ≤ x")
    note = []
    if zero:
        note.append(f"{zero} zero")
    if bad:
        note.append("not finite at " + "; ".join(bad[:3]) + ("; ..." if len(bad) > 3 else ""))
    n_ex = int(jac["example"].nunique()) if "example" in jac else 0
    ax.set_title(JACOBIAN_TITLE + (f" ({n_ex} examples)" if n_ex else "")
                 + (f"\nnot drawn: {', '.join(note)}" if note else ""), fontsize=10)
    _legend(ax, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    return fig


def plt_colors(n: int) -> list:
    """``n`` colours from viridis, dark (first) to light (last), as the layer figures use."""
    from matplotlib import colormaps

    return [colormaps["viridis"](x) for x in np.linspace(0.0, 0.85, max(n, 1))][:n]


@quiet_extremes
def update_ratio(probes: pd.DataFrame | None) -> Figure:
    """Per layer over training: ``update_ratio = ||W_n - W_{n-1}|| / ||W_{n-1}||`` (the
    relative size of one optimizer step, log scale; ~1e-3 is the usual healthy order). The
    legend sits outside the axes (module names can be long)."""
    wide = _quantity(probes, "update_ratio")
    names = layer_names(probes)
    right = names_margin(names) + 0.5 if names else 1.3
    fig, (ax,) = _new_figure(6.0 + right, 3.6, right=right)
    vals = wide.to_numpy(float) if not wide.empty else np.empty(0)
    pos = vals[np.isfinite(vals) & (vals > 0)]
    if not pos.size:
        _empty(ax, _no_update_ratio_drawn(wide) if not wide.empty else
               nothing_recorded(probes, "update_ratio"), UPDATE_RATIO_TITLE)
        return fig
    # the lines shown are picked among the layers with a value to draw: 8 evenly spaced of
    # 122 layers, 100 of them unchanged (ratio 0), were 8 legend entries and 2 lines
    drawn = wide.apply(lambda c: bool((np.isfinite(c) & (c > 0)).any()))
    layers = [la for la in wide.columns if drawn[la]]
    shown = _pick_layers(layers)
    colors = _layer_colors(shown)
    for layer in shown:
        col = wide[layer].where(wide[layer] > 0)
        ax.plot(wide.index, col, "o-" if len(wide) < 4 else "-", color=colors[layer],
                linewidth=1.4, markersize=3.5, label=layer_label(layer, names))
    ax.set_yscale("log")
    _tidy_log_axis(ax.yaxis, pos.min(), pos.max())
    fit_huge_y(ax)  # (1e300: the axis fell back to 1 .. 10)
    step_ticks(ax, wide.index)
    ax.set_xlabel("training step")
    ax.set_ylabel("||ΔW|| / ||W|| (log scale)")
    # a diverged run's updates (inf, NaN) have no place on a log axis: the title says where
    # they are instead of the lines just stopping (step 0's NaN, no previous weights, is none)
    sel = probes[(probes["quantity"] == "update_ratio") & (probes["layer"].isin(wide.columns))]
    values = pd.to_numeric(sel["value"], errors="coerce")
    bad = ~np.isfinite(values) & (sel["step"] > sel.loc[np.isfinite(values), "step"].min())
    note = (f"\nnot drawn: not finite (NaN/inf) {_bad_layers_text(sel[bad], sel, names)}"
            if bad.any() else "")
    # an update below the float resolution of the weights leaves them unchanged: ratio 0, no
    # place on a log axis (a 12-sigmoid-layer model's first layers were legend entries with
    # no line and no word)
    # (each layer with the steps it is 0 at: a 200-sigmoid-layer run's "zero in layers 1-178"
    # sat over layer 174's line, 0 only at its last step)
    every = probes[(probes["quantity"] == "update_ratio") & (probes["layer"] >= 1)]
    zero = pd.to_numeric(every["value"], errors="coerce") == 0
    if zero.any():
        where = _bad_layers_text(every[zero], every, names)
        note += f"\nnot drawn: zero (weights unchanged) {where}"
    title = wrap_lines(f"{UPDATE_RATIO_TITLE}{_layers_note(shown, layers)}{note}",
                       ax.get_position().width * fig.get_figwidth(), 9.5)
    ax.set_title(title, fontsize=9.5)
    lines = title.count("\n") + 1
    if lines > 2:  # the fixed 0.38 in top margin holds two lines: the third was cut off
        extra = 0.17 * (lines - 2)
        height = fig.get_figheight() + extra
        fig.set_figheight(height)
        fig.subplots_adjust(top=1 - (_MARGIN_IN["top"] + extra) / height,
                            bottom=_MARGIN_IN["bottom"] / height)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7.5, frameon=False)
    return fig


def _bad_layers_text(bad: pd.DataFrame, rows: pd.DataFrame,
                     names: dict[int, str] | None) -> str:
    """Where the ``bad`` rows (of ``rows``: ``step``, ``layer``) lie: ``from step 4`` where
    every layer of ``rows`` is bad at the same steps, else each layer's own steps, layers of
    one phrase together: ``in layer 2 at step 10; layer 1 at step 20`` (one pooled ``from step
    10`` said nothing was drawn after step 10 beside layer 3's line at step 20). Layers whose
    first bad step comes first are named first."""
    phrases: dict[str, list[int]] = {}
    # the earliest first: "in layer 2 from step 4; layers 1, 3 from step 5"
    for layer, g in sorted(bad.groupby("layer"), key=lambda lg: (lg[1]["step"].min(), lg[0])):
        phrases.setdefault(steps_phrase(g["step"], rows["step"]), []).append(int(layer))
    every = {int(v) for v in rows["layer"]}
    if len(phrases) == 1 and set(next(iter(phrases.values()))) == every:
        return next(iter(phrases))
    return "in " + "; ".join(f"{_span_text(layers, names)} {phrase}"
                             for phrase, layers in phrases.items())


CHAR_EM = 0.62
"""A text's widest average character, in ems (DejaVu Sans: lower case ~0.55, digits 0.64)."""


def wrap_lines(text: str, width_in: float, fontsize: float) -> str:
    """``text`` with each line longer than ``width_in`` inches at ``fontsize`` points broken
    at spaces: at most ``width_in * 72 / (CHAR_EM * fontsize)`` characters a line (a title
    naming four long module names ran past both edges of its figure and was cut off)."""
    chars = max(int(width_in * 72 / (CHAR_EM * fontsize)), 20)
    return "\n".join(textwrap.fill(line, chars, break_long_words=False, break_on_hyphens=False)
                     if len(line) > chars else line for line in text.split("\n"))


def _span_text(layers: Sequence[int], names: dict[int, str] | None, shown: int = 4) -> str:
    """``layers 1-3, 7`` (numbered layers, runs of neighbours joined) or the first ``shown``
    module names, then ``...`` after the count (``29 layers: input_embedding, ...``)."""
    if names:
        cut = [layer_label(v, names) for v in layers[:shown]]
        if len(layers) <= shown:
            return ", ".join(cut_labels(cut, 24))
        return f"{len(layers)} layers: " + ", ".join(cut_labels(cut, 24)) + ", ..."
    word = "layers" if len(layers) > 1 else "layer"
    return f"{word} " + number_runs(layers, shown)


def number_runs(numbers: Sequence[int], shown: int = 4) -> str:
    """``1-3, 7, 9-12`` for ascending ``numbers``: neighbours joined into runs, the first
    ``shown`` runs written, then ``...``."""
    runs: list[list[int]] = []
    for v in numbers:
        if runs and v == runs[-1][-1] + 1:
            runs[-1].append(v)
        else:
            runs.append([v])
    parts = [f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs[:shown]]
    return ", ".join(parts) + (", ..." if len(runs) > shown else "")


# -- sweep figures -----------------------------------------------------------------------------
def _fmt_value(v, exact: bool = False) -> str:
    """Short tick label: floats with ``%g`` (``exact``: Python's shortest repr that reads back
    as the same float, ``0.30000000000000004``); lists run-length encoded (``[64, 32×4,
    10]``)."""
    if isinstance(v, float):
        return repr(float(v)) if exact else f"{v:g}"
    if isinstance(v, (list, tuple)):
        parts: list[str] = []
        k = 0
        while k < len(v):
            j = k
            while j + 1 < len(v) and v[j + 1] == v[k]:
                j += 1
            n = j - k + 1
            parts.append(_fmt_value(v[k], exact) + (f"×{n}" if n > 1 else ""))
            k = j + 1
        return "[" + ", ".join(parts) + "]"
    if isinstance(v, dict):  # a table (optimizer_kwargs): its entries, "momentum=0.9"
        return ", ".join(f"{k}={_fmt_value(x, exact)}" for k, x in v.items()) or "{}"
    return str(v)


def _fmt_values(values: Sequence) -> list[str]:
    """:func:`_fmt_value` of each of ``values`` (an axis's distinct categories), the values
    whose ``%g`` texts coincide written exactly (a grid computed in floats: ``0.1 + 0.2`` and
    ``0.3`` were both "0.3", told apart only as "0.3" and "0.3#1"; 1234567.0 and 1234568.0
    both "1.23457e+06"). Tables (dicts) are written by the entries that differ between them
    (``{momentum = 0.9, dampening = 0}`` beside ``{momentum = 0, dampening = 0}``:
    "momentum=0.9", "momentum=0"), every entry when that leaves two alike."""
    tables = [v for v in values if isinstance(v, dict)]
    if len(tables) > 1:
        shared = {k for k in tables[0]
                  if all(k in t and value_key(t[k]) == value_key(tables[0][k]) for t in tables)}
        short = [{k: x for k, x in v.items() if k not in shared} if isinstance(v, dict)
                 else v for v in values]
        texts = [_fmt_value(v) for v in short]
        # a table of shared entries alone: all written ("nesterov=True" beside "momentum=0.9"
        # read as if the first had no momentum)
        if all(s for s in short if isinstance(s, dict)) and len(set(texts)) == len(
                {value_key(v) for v in values}):
            values = short
    labels = [_fmt_value(v) for v in values]
    seen: dict[str, set] = {}
    for v, t in zip(values, labels):
        seen.setdefault(t, set()).add(value_key(v))
    return [_fmt_value(v, exact=True) if len(seen[t]) > 1 else t
            for v, t in zip(values, labels)]


MAX_CATEGORY_TICKS = 25
"""Most category tick labels on one axis; with more categories every k-th is labelled."""

MAX_TICK_CHARS = 32
"""Longer category labels are cut (``…``): a few long ones would squeeze the axes to nothing."""



SHARED_PREFIX_SEPARATORS = (":", ",", ";", "/", "|")
"""Where a start that every label shares may end to be dropped by :func:`cut_labels`; when the
labels still do not fit, a shared start may also end at ``=`` (a key every label starts with,
``activation=`` of ``activation=tanh, lr=1e+07`` and ``activation=sigmoid, lr=1e+07``, whose
middle cut read ``activation…, lr=1e+07`` twice)."""


def cut_labels(labels: Sequence[str], limit: int,
               among: Sequence[str] | None = None) -> list[str]:
    """``labels`` shortened to at most ``limit`` characters each: when one is longer, a start
    they all share up to a separator (``sweep:``) gives way to ``…``, then the longer ones
    lose their middle (``start…end``: names that differ only at the end, ``run-1``/``run-2``,
    stay apart); when two still coincide, the later ones end in ``#k``, so every label stays
    distinct. ``among``: every label of the figure when ``labels`` names some of them (a
    panel's title naming two runs of a legend of four); only a start that all of them share
    is dropped, as the legend drops it (``lr=100,`` of the two runs named is what tells them
    from the ``lr=0.05`` runs)."""
    limit = max(limit, 5)
    keep = limit - 1
    # a character no installed font draws counts as the code point it is drawn as
    texts = given = [glyphs.drawable(t) for t in labels]
    whole = given + [glyphs.drawable(t) for t in among or ()]
    keyless: list[str] = []  # the labels without a shared key, when that did not make all fit
    if len(set(whole)) > 1 and any(len(t) > limit for t in texts):
        # a start every label shares up to a separator (a sweep's "name:" before each
        # point's values) tells no label apart: dropped before cutting, as the middle cut
        # of "mixed:depth=2,lr=50,activation=tanh" kept the shared start and lost the values
        shared = os.path.commonprefix(whole)
        for seps in (SHARED_PREFIX_SEPARATORS, SHARED_PREFIX_SEPARATORS + ("=",)):
            cut = max(shared.rfind(c) for c in seps) + 1
            if cut and all(t[cut:].strip() for t in whole):
                dropped = ["…" + t[cut:].lstrip() for t in given]  # "…": a start was dropped
                # a key ("=") is dropped only where that makes every label fit
                if seps is SHARED_PREFIX_SEPARATORS or all(len(t) <= limit for t in dropped):
                    texts = dropped
                else:
                    keyless = dropped
            if all(len(t) <= limit for t in texts):
                break

    def middle(ts: list[str]) -> list[str]:
        return [t if len(t) <= limit else _code_point_whole(t[:(keep + 1) // 2], "start")
                + "…" + _code_point_whole(t[len(t) - keep // 2:], "end") for t in ts]

    paths = [_abbreviated_path(t, limit) for t in texts]
    if paths != texts and len(set(paths)) == len(set(texts)):
        texts = paths  # module paths: their numbers and last part kept, not the middle cut
    out = middle(texts)
    if keyless and len(set(out)) < len(out) and len(set(middle(keyless))) > len(set(out)):
        # four runs of "sweep:model.activation=tanh,train.lr=10.0" cut to 14 characters read
        # "…model.…r=10.0", "…model.acti…#1", "#2", "#3": without the shared key they differ
        texts, out = keyless, middle(keyless)
    if len(set(out)) < len(set(texts)):
        # names that differ in their middle only: the end (or the start) they keep may tell
        # them apart where the middle cut does not (modules "enc.layer_zero_ffn_proj.0" and
        # "enc.layer_one_ffn_proj.0" at 40 read "enc…proj.0" and "enc…#1")
        for other in (_end_cut(texts, limit), _start_cut(texts, limit)):
            if len(set(other)) > len(set(out)):
                out = other
    taken, first = set(out), set()
    for i, t in enumerate(out):
        if t not in first:
            first.add(t)
            continue
        k = 0
        while out[i] in taken:  # the next "#k" no other label reads (also of another text)
            k += 1
            tag = f"#{k}"
            out[i] = (texts[i][:limit - len(tag) - 1] + "…" + tag
                      if len(texts[i]) + len(tag) > limit else texts[i] + tag)
        taken.add(out[i])
    return out


def _end_cut(texts: Sequence[str], limit: int) -> list[str]:
    """Each text longer than ``limit`` as ``…`` and its last ``limit - 1`` characters."""
    return [t if len(t) <= limit else "…" + _code_point_whole(t[len(t) - (limit - 1):], "end")
            for t in texts]


def _start_cut(texts: Sequence[str], limit: int) -> list[str]:
    """Each text longer than ``limit`` as its first ``limit - 1`` characters and ``…``."""
    return [t if len(t) <= limit else _code_point_whole(t[:limit - 1], "start") + "…"
            for t in texts]


def _code_point_whole(piece: str, side: str) -> str:
    """``piece``, the ``"start"`` or ``"end"`` of a cut label, without a partial code point
    of a ``‹U+65E5 U+672C›`` run (:func:`glyphs.drawable`): a cut inside one read
    ``‹U+30A6 U+30…es``, a code point U+30 that the name does not hold. The start keeps its
    whole code points (``‹U+30A6``), the end starts after the partial one."""
    if side == "start":
        opened = piece.rfind("‹")
        if opened < 0 or "›" in piece[opened:]:
            return piece
        inner = piece[opened + 1:]
        whole = inner.split(" ")
        if not re.fullmatch(r"U\+[0-9A-F]{4,6}", whole[-1]):  # the last one is cut
            whole = whole[:-1]
        return piece[:opened] + ("‹" + " ".join(whole) if whole else "")
    closed = piece.find("›")
    if closed < 0 or "‹" in piece[:closed]:
        return piece
    inner = piece[:closed]
    parts = inner.split(" ")
    if not re.fullmatch(r"U\+[0-9A-F]{4,6}", parts[0]):  # the first one is cut
        parts = parts[1:]
    return " ".join(parts) + piece[closed:]


_PATH_PART = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|[0-9]+")


def _abbreviated_path(text: str, limit: int) -> str:
    """A module path (``a.b.c``: names and indices joined by dots) longer than ``limit``
    with its leading names shortened to their first letter, left to right, until it fits;
    indices and the last part stay whole (``bert.encoder.layer.10.attention.self.query`` ->
    ``b.e.l.10.attention.self.query`` at 32): the middle cut of such names lost the block's
    number. Any other text is returned as it is."""
    parts = text.split(".")
    if len(text) <= limit or len(parts) < 2 or not all(map(_PATH_PART.fullmatch, parts)):
        return text
    for i in range(len(parts) - 1):
        if len(".".join(parts)) <= limit:
            break
        if not parts[i].isdigit():
            parts[i] = parts[i][0]
    return ".".join(parts)


MAX_LABELLED_CELLS = 30
"""Most bars (or heatmap cells along an axis) that carry their value as text; beyond it the
texts would overlap, so the axis and colours carry the values alone."""


def _set_category_ticks(ax, axis: str, values: Sequence, width_in: float,
                        offset: float = 0.5, upright: bool = False) -> None:
    """Category tick labels at cell centres, rotated when they would collide; of more than
    :data:`MAX_CATEGORY_TICKS` categories every k-th is labelled (k = ceil(n / max)), unless
    ``upright``: then every one, turned 90° (:func:`_upright_labels` says when they fit)."""
    labels = cut_labels(_fmt_values(values), MAX_TICK_CHARS)
    pos = np.arange(len(labels)) + offset
    if axis == "x" and upright:
        ax.set_xticks(pos, labels, rotation=90, ha="center", va="top")
        return
    every = -(-len(labels) // MAX_CATEGORY_TICKS)
    pos, labels = pos[::every], labels[::every]
    if axis == "y":
        ax.set_yticks(pos, labels)
        return
    # about 11 characters per inch at 8.5 pt
    crowded = sum(len(t) + 2 for t in labels) > width_in * 0.75 * 11
    if crowded:
        ax.set_xticks(pos, labels, rotation=30, ha="right", rotation_mode="anchor")
    else:
        ax.set_xticks(pos, labels)


@quiet_extremes
def sweep_heatmap(runs: pd.DataFrame, x_key: str, y_key: str, metric: str = "val_acc",
                  higher_is_better: bool = True) -> Figure:
    """Heatmap of ``metric`` over two configuration keys. Each cell shows the best run with that
    pair (over the other keys); cells whose runs all diverged or failed are hatched and
    labelled (the texts are left out when the cells are too small for them)."""
    for key in (x_key, y_key, metric, "status"):
        if key not in runs:
            raise ValueError(f"column {key!r} not in the runs table; columns: {list(runs.columns)}")
    xs = _ordered_values(runs[x_key])
    ys = _ordered_values(runs[y_key])
    z = np.full((len(ys), len(xs)), np.nan)
    label = np.full((len(ys), len(xs)), "", dtype=object)
    cells = dict(iter(runs.groupby([runs[y_key].map(value_key).to_numpy(),
                                    runs[x_key].map(value_key).to_numpy()], sort=False)))
    for (i, yv), (j, xv) in ((a, b) for a in enumerate(ys) for b in enumerate(xs)):
        cell = cells.get((value_key(yv), value_key(xv)))
        if cell is None:
            continue
        vals = pd.to_numeric(cell[metric], errors="coerce")
        ok = vals[np.isfinite(vals) & (cell["status"] == "finished")]
        if not ok.empty:
            z[i, j] = ok.max() if higher_is_better else ok.min()
        statuses = set(cell["status"])
        if ok.empty:
            label[i, j] = "/".join(sorted(statuses - {"finished"})) or "n/a"
    w = max(5.0, min(11.0, 1.3 + 0.85 * len(xs)))
    h = max(3.0, min(8.0, 1.3 + 0.5 * len(ys)))
    fig, (ax,) = _new_figure(w, h, fixed=False)
    ax.grid(False)
    finite = np.isfinite(z)
    vmin, vmax, extend = (_colour_limits(z[finite], "min" if higher_is_better else "max")
                          if finite.any() else (0.0, 1.0, "neither"))
    digits = distinct_digits(z[finite])
    # (two cells or more: a single cell's value keeps its colour bar)
    one_value = finite.sum() >= 2 and bool(np.all(z[finite] == z[finite][0]))
    # one value: the middle colour (the scale's end colour read as the worst or the best)
    norm = Normalize(vmin=vmin - 1, vmax=vmax + 1) if one_value else \
        Normalize(vmin=vmin, vmax=vmax)
    # cells beyond the bar (runaway values) in a grey of their own, lighter than viridis's
    # purple end and darker than its yellow one and than the missing cells' light grey: they
    # took the bar's end colour, that of the worst (or best) cell on the scale
    cmap = colormaps["viridis" if higher_is_better else "viridis_r"].with_extremes(
        bad="#dddddd", over=BEYOND_BAR, under=BEYOND_BAR)
    mesh = ax.pcolormesh(np.arange(len(xs) + 1), np.arange(len(ys) + 1),
                         np.ma.masked_invalid(z), cmap=cmap, norm=norm, edgecolors="white",
                         linewidth=1.5)
    # a value's text needs about 0.35 in of cell width; narrower cells show colours only
    texts = 0.35 * len(xs) <= w - 1.3 and len(ys) <= MAX_LABELLED_CELLS
    for i in range(len(ys)):
        for j in range(len(xs)):
            if not texts:
                if not finite[i, j] and label[i, j]:
                    ax.add_patch(_hatch_rect(j, i))
                continue
            if finite[i, j]:
                v = z[i, j]
                rgba = cmap(norm(v))
                lum = 0.299 * rgba[0] + 0.587 * rgba[1] + 0.114 * rgba[2]
                ax.text(j + 0.5, i + 0.5, f"{v:.{digits}g}", ha="center", va="center",
                        fontsize=9 if digits == 3 else 8.5,
                        color="black" if lum > 0.55 else "white")
            elif label[i, j]:
                ax.add_patch(_hatch_rect(j, i))
                ax.text(j + 0.5, i + 0.5, "✗ " + label[i, j], ha="center", va="center",
                        fontsize=8.5, color="#8B0000", fontweight="bold")
    _set_category_ticks(ax, "x", xs, w)
    _set_category_ticks(ax, "y", ys, h)
    ax.set_xlabel(x_key)
    ax.set_ylabel(y_key)
    best = "best" if higher_is_better else "lowest"
    # one run per cell (the two keys are all that varies): no other keys to be best over
    alone = all(len(c) == 1 for c in cells.values())
    title = (f"{metric} (one run per cell)" if alone else
             f"{metric} ({best} over the other keys)")
    if one_value:  # one value in every cell: a colour bar of 0.63 .. 0.76 scaled nothing
        n = int(finite.sum())
        title += (f"\n{z[finite][0]:.{digits}g} in every cell" if n == finite.size else
                  f"\n{z[finite][0]:.{digits}g} in every cell with a value")
    ax.set_title(title)
    if finite.any() and not one_value:  # no value in any cell: a 0..1 colour bar scaled nothing
        cb = fig.colorbar(mesh, ax=ax, pad=0.01, extend=extend)
        cb.set_label(metric if extend == "neither" else
                     f"{metric} (arrow: cells beyond the bar)")
    _fit_status_texts(fig, ax, len(xs))
    return fig


BEYOND_BAR = "#a0a0a0"  # a sweep heatmap's cells beyond its colour bar (see _colour_limits)


def distinct_digits(values: np.ndarray, fewest: int = 3, most: int = 5) -> int:
    """The fewest significant digits, from ``fewest`` to ``most``, that write the distinct
    ``values`` as distinct texts (0.6251 and 0.6249: 4; both read "0.625" at 3, beside two
    different colours)."""
    uniq = np.unique(np.asarray(values, float))
    for d in range(fewest, most + 1):
        if len({f"{v:.{d}g}" for v in uniq}) == len(uniq):
            return d
    return most


def _colour_limits(values: np.ndarray, worse: str) -> tuple[float, float, str]:
    """The colour scale of a heatmap of ``values`` (finite): their range, unless a few runaway
    values on the ``worse`` side (``"max"`` for a loss: a run that "finished" with a loss of
    8.5e17 beside losses of 0.6 .. 3.6) stretch it more than tenfold; then it stops at the
    values within 10 median absolute deviations of the median, and the third item says which
    end the colour bar extends past (else ``"neither"``): those cells take the grey
    :data:`BEYOND_BAR` (the bar's arrow), their numbers written as measured. Was always the
    full range, which painted every cell but the runaway one in one colour. The better side
    is never cut: the best runs of a sweep where most failed (accuracy 0.85 beside many 0.1)
    keep their place on the scale."""
    v = np.asarray(values, float)
    lo, hi = float(v.min()), float(v.max())
    if len(v) >= 4:
        med = float(np.median(v))
        mad = float(np.median(np.abs(v - med)))
        inside = v[np.abs(v - med) <= 10 * mad]
        if mad > 0 and len(inside) >= 2:
            klo, khi = float(inside.min()), float(inside.max())
            if worse == "max" and hi > khi and hi - lo > 10 * (khi - lo):
                return lo, khi, "max"
            if worse == "min" and lo < klo and hi - lo > 10 * (hi - klo):
                return klo, hi, "min"
    return lo, hi, "neither"


def _fit_status_texts(fig: Figure, ax, n_columns: int) -> None:
    """A heatmap's "✗ diverged" texts wider than their cell (12 learning rates: 0.75 in of text
    in 0.6 in cells, running into the neighbours' as "✗ diverged✗ diverged") become "✗"
    alone, and the title says what the mark means."""
    marks = [t for t in ax.texts if t.get_text().startswith("✗ ")]
    if not marks:
        return
    renderer = fig.canvas.get_renderer()
    fig.canvas.draw()  # the constrained layout sets the cells' size
    cell = ax.get_window_extent(renderer).width / max(n_columns, 1)
    wide = [t for t in marks if t.get_window_extent(renderer).width > 0.92 * cell]
    if not wide:
        return
    what = sorted({t.get_text()[2:] for t in wide})
    for t in wide:
        t.set_text("✗")
    ax.set_title(f"{ax.get_title()}\n✗: every run there {' or '.join(what)}")


def _hatch_rect(x: float, y: float):
    from matplotlib.patches import Rectangle

    return Rectangle((x, y), 1, 1, fill=False, hatch="///", edgecolor="#c77", linewidth=0)


UPRIGHT_PITCH_IN = 0.16
"""Narrowest bar pitch (inches) at which every bar's label is written turned 90° (an 8.5 pt line
is ~0.12 in): thinning to every k-th label of a sweep's bars named every 2nd run of a grid
whose last key has two values, so one value's bars (a sweep's best runs) stood unnamed."""


def _upright_labels(n: int, width_in: float) -> bool:
    """Whether ``n`` bars across a figure ``width_in`` wide name each bar (turned 90°) rather
    than every k-th: more than :data:`MAX_CATEGORY_TICKS` of them, at a pitch of at least
    :data:`UPRIGHT_PITCH_IN` (the axes take the width less ~1.5 in of margins)."""
    return n > MAX_CATEGORY_TICKS and (width_in - 1.5) / n >= UPRIGHT_PITCH_IN


@quiet_extremes
def sweep_bars(runs: pd.DataFrame, key: str, metric: str = "val_acc",
               higher_is_better: bool = True) -> Figure:
    """Bar chart of ``metric`` against one configuration key (best run per value); values whose
    runs all diverged or failed get a marked placeholder bar. Beyond
    :data:`MAX_LABELLED_CELLS` bars the per-bar texts give way to one legend entry; beyond
    :data:`MAX_CATEGORY_TICKS` each bar keeps its name, turned 90°, while the bars are at least
    :data:`UPRIGHT_PITCH_IN` apart, and past that every k-th value is labelled, so hundreds of
    values stay readable."""
    for col in (key, metric, "status"):
        if col not in runs:
            raise ValueError(f"column {col!r} not in the runs table; columns: {list(runs.columns)}")
    xs = _ordered_values(runs[key])
    width = max(5.0, min(11.0, 1.5 + 0.7 * len(xs)))
    upright = _upright_labels(len(xs), width)
    # upright labels (~0.065 in a character at 8.5 pt) take more height than the 30° ones
    longest = max((len(t) for t in cut_labels(_fmt_values(xs), MAX_TICK_CHARS)),
                  default=0)
    fig, (ax,) = _new_figure(width, 3.6 + (max(0.0, 0.065 * longest - 1.0) if upright else 0.0),
                             fixed=False)
    heights, notes = [], []
    cells = dict(iter(runs.groupby(runs[key].map(value_key).to_numpy(), sort=False)))
    for xv in xs:
        cell = cells[value_key(xv)]
        vals = pd.to_numeric(cell[metric], errors="coerce")
        ok = vals[np.isfinite(vals) & (cell["status"] == "finished")]
        if ok.empty:
            heights.append(np.nan)
            notes.append("/".join(sorted(set(cell["status"]) - {"finished"})) or "n/a")
        else:
            heights.append(ok.max() if higher_is_better else ok.min())
            notes.append("")
    pos = np.arange(len(xs))
    hv = np.array(heights, dtype=float)
    ok_mask = np.isfinite(hv)
    texts = len(xs) <= MAX_LABELLED_CELLS  # more bars: their labels would overlap
    # a runaway bar (a run that "finished" with a train loss of 8.5e17 beside 0.6 .. 2.3) made
    # every other bar a sliver at the bottom of a 1e17 axis: it is cut at the top of an axis
    # fitted to the others, marked ↑, its value written (the heatmap's colour rule)
    shown = hv.copy()
    cut = np.zeros(len(hv), bool)
    if ok_mask.any():
        _, khi, extend = _colour_limits(hv[ok_mask], "min" if higher_is_better else "max")
        if extend == "max" and khi > 0:
            cut = ok_mask & (hv > khi)
            shown[cut] = khi * 1.12
    ax.bar(pos[ok_mask], shown[ok_mask], color=OKABE_ITO[0], width=0.7)
    if cut.any():
        ax.bar(pos[cut], shown[cut] * 0.04, bottom=shown[cut] * 0.9, color="white",
               width=0.72, hatch="////", edgecolor=OKABE_ITO[0], linewidth=0)
        ax.set_title(f"{metric} by {key}\n↑: bar cut at the axis top, its value written",
                     fontsize=10.5)
    values = []  # (text, where a value turned 90° starts inside its bar: under a cut's band)
    if texts or cut.any():
        for p, v, top, c in zip(pos[ok_mask], hv[ok_mask], shown[ok_mask], cut[ok_mask]):
            if texts or c:
                values.append((ax.text(p, top, f"{v:.3g}" + (" ↑" if c else ""), ha="center",
                                       va="bottom", fontsize=8.5,
                                       fontweight="bold" if c else "normal"),
                               top * 0.88 if c else top))
    ymax = np.nanmax(shown) if ok_mask.any() else 1.0
    marks = []
    for p, note in zip(pos, notes):
        if note:
            ax.bar([p], [ymax * 0.15 if ymax > 0 else 0.1], color="none", edgecolor="#c77",
                   hatch="///", width=0.7)
            if texts:
                marks.append(ax.text(p, (ymax * 0.17 if ymax > 0 else 0.11), "✗ " + note,
                                     ha="center", va="bottom", fontsize=8.5, color="#8B0000",
                                     fontweight="bold"))
    if not texts and any(notes):
        from matplotlib.patches import Patch

        what = "/".join(sorted({n for note in notes if note for n in note.split("/")}))
        # above the axes' right end, outside them: inside ("upper right") it covered the
        # tallest bars, which a sweep sorted by its metric puts exactly there
        ax.legend([Patch(facecolor="none", edgecolor="#c77", hatch="///")],
                  [f"✗ every run {what}"], fontsize=8.5, loc="lower right",
                  bbox_to_anchor=(1.0, 1.0), borderaxespad=0.2)
    _set_category_ticks(ax, "x", xs, fig.get_figwidth(), offset=0.0, upright=upright)
    ax.set_xlabel(key)
    ax.set_ylabel(metric)
    if not cut.any():
        ax.set_title(f"{metric} by {key}")
    ax.grid(True, axis="y", alpha=0.25)
    ax.grid(False, axis="x")
    if not ok_mask.any():
        # no value at all: the placeholders on an axis of 0 .. 0.15 read as values of 0.15,
        # their "✗ diverged" texts above the axes, over the title
        ax.set_ylim(0, 1)
        ax.set_yticks([])
        ax.set_ylabel(f"{metric}: no value")
    _turn_bar_texts(fig, ax, values, marks, len(xs))
    _room_above_bar_texts(fig, ax, [t for t, _ in values] + marks)
    return fig


def _room_above_bar_texts(fig: Figure, ax, texts: list) -> None:
    """Raise the y-axis top until every text written above a bar ends inside the axes, 2 pt
    under their top: a bar at height v has its text's top at
    ``y0 + (v - lo) / (hi - lo) * H + h`` pixels, which the axis' 5% margin does not hold
    when the axes are short (a sweep over three keys, its long run names under the bars):
    the tallest bar's value, "0.684", was written over the title "train_loss by run"."""
    if not texts:
        return
    renderer = fig.canvas.get_renderer()
    pad = 2.0 * fig.dpi / 72
    for _ in range(4):  # the constrained layout moves the axes as the limits change
        fig.canvas.draw()
        box = ax.get_window_extent(renderer)
        over = max(t.get_window_extent(renderer).y1 for t in texts) - (box.y1 - pad)
        if over <= 0.5:
            return
        lo, hi = ax.get_ylim()
        ax.set_ylim(lo, hi + (over + pad) / box.height * (hi - lo) * 1.1)


def _turn_bar_texts(fig: Figure, ax, values: list, marks: list, n_bars: int) -> None:
    """Bar texts wider than the bars' pitch are turned 90°: a sweep of 48 runs whose four
    neighbours' runaway losses were written level ("8.37 ↑" beside "27.2 ↑" ...) printed them
    over one another and into the title. ``values``: (text, height where the value starts
    inside its bar); a turned value is written there, down the bar in white, where the bar
    is long enough to hold it, else above the bar; ``marks`` ("✗ diverged") stay above their
    placeholder bar, turned."""
    if not values and not marks:
        return
    renderer = fig.canvas.get_renderer()
    fig.canvas.draw()  # the constrained layout sets the bars' width
    pitch = ax.get_window_extent(renderer).width / max(n_bars, 1)
    every = [t for t, _ in values] + marks
    if max(t.get_window_extent(renderer).width for t in every) <= 0.92 * pitch:
        return
    for t in every:
        t.set_rotation(90)
    base = ax.transData.transform((0, max(0.0, ax.get_ylim()[0])))[1]
    pad = 3.0 * fig.dpi / 72  # 3 pt
    down = mtransforms.offset_copy(ax.transData, fig=fig, y=-3, units="points")
    for t, inside in values:
        length = t.get_window_extent(renderer).height
        if ax.transData.transform((0, inside))[1] - base >= length + 2 * pad:
            t.set_y(inside)
            t.set_verticalalignment("top")
            t.set_color("white")
            t.set_transform(down)


def value_key(v) -> str:
    """Hashable, comparable identity of a config value (lists and dicts included)."""
    if isinstance(v, float) and np.isnan(v):
        return "nan"
    return repr(v)


def _ordered_values(col: pd.Series) -> list:
    """Distinct values in a natural order: numbers ascending (NaN last), then the other values
    (``"full"`` beside batch sizes, names, lists) in the order they first appear. A key mixing
    numbers and a word (``batch_size = [8, 16, "full"]``) kept the store's order, the order in
    which a sweep's points finished."""
    seen: dict[str, object] = {}
    for v in col:
        seen.setdefault(value_key(v), v)
    vals = list(seen.values())

    def number(v: object) -> bool:
        return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)

    nums = [v for v in vals if number(v)]
    return (sorted(nums, key=lambda v: (bool(np.isnan(v)), 0.0 if np.isnan(v) else v))
            + [v for v in vals if not number(v)])


__all__ = [
    "OKABE_ITO",
    "activation_mean_std",
    "figure_png",
    "gradient_heatmap",
    "gradient_profile",
    "hidden_layers",
    "layer_histograms",
    "percentile_bands",
    "saturation_dead",
    "sweep_bars",
    "sweep_heatmap",
    "training_curves",
]
