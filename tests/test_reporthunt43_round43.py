"""Round 43 (reporthunt43): reports of stores nobody tried, and a report stopped midway."""

from __future__ import annotations

import _thread
import threading

import numpy as np
import pandas as pd
import pytest

LONG_READ = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
             "SELECT count(*) FROM c")
"""A statement that never ends by itself (one SQLite call, as a read of a long table is)."""


def _store_with_a_run(path, **record):
    from depthlab.experiments.store import RunRecord, Store

    steps = pd.DataFrame({"step": np.arange(6), "loss": np.linspace(2.0, 1.0, 6)})
    probes = pd.DataFrame([{"step": s, "layer": k, "quantity": q, "value": 0.1 * k + 0.01 * s}
                           for s in (0, 5) for k in (1, 2)
                           for q in ("act_mean", "act_std", "grad_pre_std")])
    with Store(path) as store:
        store.add_run(RunRecord(**{"id": "r1", "name": "one", "steps": steps,
                                   "probes": probes, **record}))


def test_ctrl_c_stops_the_report_inside_a_long_store_read(tmp_path, monkeypatch):
    """A Ctrl-C while one of the report's store reads ran (one SQLite statement, a single C
    call) was acted on only once the statement ended: the report of a store with a long
    table went on reading. With the fix the statement stops at once and the report raises
    KeyboardInterrupt (the CLI's 130), writing nothing, and not as the store's reading
    methods word SQLite's errors ("results store ... cannot be read: interrupted", a damaged
    store, exit 2). Without the fix, the test's own ``conn.interrupt()`` after 30 s ends the
    statement (and the test fails)."""
    from depthlab.experiments.store import Store, _reading
    from depthlab.report import write_report

    _store_with_a_run(tmp_path)
    real = Store.probes
    rescued = threading.Event()

    @_reading  # as the store's own reads are wrapped
    def long_read(self, run_id):
        conn = self._conn
        safety = threading.Timer(30.0, lambda: (rescued.set(), conn.interrupt()))
        safety.start()
        threading.Timer(0.2, _thread.interrupt_main).start()  # Ctrl-C, inside the read
        try:
            conn.execute(LONG_READ).fetchone()
        finally:
            safety.cancel()
        return real(self, run_id)

    monkeypatch.setattr(Store, "probes", long_read)
    with pytest.raises(KeyboardInterrupt):
        write_report(tmp_path)
    assert not rescued.is_set(), "the read went on after Ctrl-C until the statement ended"
    assert not (tmp_path / "report.html").exists()



def test_a_character_only_another_style_of_a_font_has_is_not_an_empty_box():
    """A run named with ``𝛼`` (U+1D6FC, MATHEMATICAL ITALIC SMALL ALPHA): DejaVu Serif
    *Italic* has it, so the family "DejaVu Serif" was added to the upright text's fonts,
    where matplotlib draws from DejaVuSerif.ttf, which lacks it: an empty box and "Glyph
    120572 missing from font(s) DejaVu Serif, DejaVu Sans" twice on the report's stderr. A
    fallback family counts only when the file matplotlib picks for it at the text's style
    has the character (else the character is written as its code point)."""
    import warnings

    from matplotlib import font_manager
    from matplotlib.figure import Figure
    from matplotlib.font_manager import FontProperties

    from depthlab.report import figures, glyphs

    fig = Figure(figsize=(3, 2))
    ax = fig.add_subplot()
    ax.set_title("run 𝛼=0.1")
    ax.plot([0, 1], [0, 1], label="𝛼 run")
    ax.legend()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "Glyph ... missing from font(s)" is a UserWarning
        assert figures.figure_png(fig)[:4] == b"\x89PNG"
    prop = FontProperties()
    for ch in "𝛼𝜷ℵ∑日":
        family = glyphs._fallback_family(ord(ch), prop)
        if family is not None:  # that family's upright file really draws it
            chosen = prop.copy()
            chosen.set_family([family])
            path = font_manager.findfont(chosen, fallback_to_default=False)
            assert ord(ch) in glyphs._charmap(str(path)), (ch, family, path)


def _rows(quantities: dict[str, dict[int, list[float]]], steps=(0, 5)) -> pd.DataFrame:
    """A probe table: ``{quantity: {layer: [value per step]}}``."""
    return pd.DataFrame([{"step": s, "layer": layer, "quantity": q, "value": v}
                         for q, per in quantities.items() for layer, vals in per.items()
                         for s, v in zip(steps, vals)])


def _overlaps(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_a_three_line_panel_title_stays_clear_of_the_figure_title():
    """Two runs of the same values named in another script (``日本語のラン — naïve``,
    ``Ünïcödé/run:1``), gradients near 1e-3 (a ``×10^-3`` offset over the axis): each
    panel's title is three lines ("...: same values as / ... (under it)") and the left one
    is lifted by the offset text; the figure's title "Back-propagated gradient std per layer"
    was drawn across them (the margin counted 0.22 in a line). The top margin is measured."""
    from depthlab import plot

    same = {"grad_pre_std": {1: [1.1e-3, 1.075e-3], 2: [1.128e-3, 1.107e-3]}}
    fig = plot.gradient_per_layer({"日本語のラン — naïve ✓ 𝛼β": _rows(same),
                                   "Ünïcödé/run:1": _rows(same)}, False)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    sup = fig._suptitle.get_window_extent(renderer)
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert any(ax.get_title().count("\n") >= 2 for ax in panels)  # the case drawn
    for ax in panels:
        title = ax.title.get_window_extent(renderer)
        assert not _overlaps(sup, title), (ax.get_title(), sup, title)
        assert title.y1 <= fig.bbox.y1, ax.get_title()  # inside the figure


def test_long_module_names_that_differ_in_the_middle_keep_what_tells_them_apart():
    """A Watch run's modules ``encoder_block_with_a_very_long_name.transformer_layer_number_
    zero_feedforward_projection.0`` and ``..._number_one_feedforward_projection.0``: their
    first letters (``e.t.0``) coincide and the middle cut kept only the shared start and end,
    so the second read ``encoder_block_with_a_very_long_name.t…#1`` on the figures' axes and
    legends, a tag that names neither. A cut keeping the end (or the start) that tells the
    names apart is taken instead."""
    from depthlab.report import figures

    stem = "encoder_block_with_a_very_long_name.transformer_layer_number_"
    mods = [stem + "zero_feedforward_projection.0", stem + "zero_feedforward_projection.2",
            stem + "one_feedforward_projection.0", "head"]
    table = pd.DataFrame({"layer": [1, 2, 3, 4], "module": mods})
    names = figures.layer_names(table)
    labels = [names[k] for k in (1, 2, 3, 4)]
    assert len(set(labels)) == 4, labels
    assert all(len(t) <= figures.MAX_MODULE_CHARS for t in labels), labels
    assert not any("#" in t for t in labels), labels
    assert "zero" in labels[0] and "one" in labels[2], labels
    assert labels[3] == "head"


def test_a_cut_name_never_shows_part_of_a_code_point():
    """A run named ``ウォッチ-long-names`` on a machine without a Japanese font is drawn as
    ``‹U+30A6 U+30A9 U+30C3 U+30C1›-long-names``; its legend entry, cut to 24 characters,
    read ``‹U+30A6 U+30…es (step 0)``: a code point U+30 the name does not hold. The cut
    keeps whole code points only."""
    import re

    from depthlab.report import figures, glyphs

    for name, limit in (("ウォッチ-long-names (step 0)", 24), ("ウォッチ-long-names", 24),
                        ("abc 日本語のランabc 日本語のランabc 日本語のラン", 30),
                        ("日本語のラン — naïve ✓ 𝛼β", 18)):
        drawn = glyphs.drawable(name)
        if drawn == name:  # a font here has these characters: nothing written as code points
            continue
        whole = set(re.findall(r"U\+[0-9A-F]{4,6}", drawn))
        for cut in figures.cut_labels([name, "other"], limit)[:1]:
            assert len(cut) <= limit, cut
            shown = re.findall(r"U\+[0-9A-F]*", cut)
            assert shown and all(c in whole for c in shown), (name, cut)


@pytest.mark.parametrize(("kwargs", "error", "named"), [
    ({"title": 5}, TypeError, "title"),
    ({"percentile_layer": "x"}, TypeError, "percentile_layer"),
    ({"percentile_layer": 2.5}, TypeError, "percentile_layer"),
    ({"percentile_layer": True}, TypeError, "percentile_layer"),
    ({"percentile_layer": 0}, ValueError, "percentile_layer"),
    ({"echo": 5}, TypeError, "echo"),
])
def test_write_report_refuses_options_of_the_wrong_kind(tmp_path, kwargs, error, named):
    """``write_report(dir, title=5)`` wrote a report titled "5", ``percentile_layer="x"`` (or
    2.5, 0) was ignored without a word, and ``echo=5`` stopped the report after reading the
    store with ``'int' object is not callable``: each is one line naming the argument and
    the value, before anything is written."""
    from depthlab.report import write_report

    _store_with_a_run(tmp_path)
    with pytest.raises(error) as e:
        write_report(tmp_path, **kwargs)
    msg = str(e.value)
    assert named in msg and repr(next(iter(kwargs.values()))) in msg, msg
    assert "\n" not in msg
    assert not (tmp_path / "report.html").exists()


def test_write_report_takes_a_numpy_layer_number(tmp_path):
    from depthlab.report import write_report

    _store_with_a_run(tmp_path)
    assert write_report(tmp_path, percentile_layer=np.int64(2), title="t").is_file()


def _hist_rows(layer_bins: dict[int, list[tuple[float, float, int]]], steps=(0, 5)):
    return pd.DataFrame([{"step": s, "layer": layer, "kind": "act", "bin_left": lo,
                          "bin_right": hi, "count": c, "n_neginf": 0, "n_posinf": 0,
                          "n_nan": 0}
                         for s in steps for layer, bins in layer_bins.items()
                         for lo, hi, c in bins])


def test_a_histogram_of_bins_without_width_is_drawn_as_the_entries_share():
    """A histogram table whose layer holds every entry in a bin of no width (all 300 entries
    0.5, ``bin_left == bin_right``, as a hand-made table or another tool writes a constant
    layer) was drawn with a density of 4e+298 (the width taken as 1e-300). It is a stem of
    height 1 (the entries' share) at 0.5, the panel titled ``all 300 entries = 0.5``."""
    from depthlab import plot

    edges = np.linspace(-1, 1, 11)
    table = _hist_rows({1: [(a, b, 30) for a, b in zip(edges[:-1], edges[1:])],
                        2: [(0.5, 0.5, 100)] * 3})  # the value's bins, one stem
    fig = plot.activation_histograms(table, "act")
    fig.canvas.draw()
    flat = [ax for ax in fig.axes if ax.get_title().startswith("layer 2")]
    assert flat, [ax.get_title() for ax in fig.axes]
    for ax in flat:
        assert "all 300 entries = 0.5" in ax.get_title(), ax.get_title()
        lo, hi = ax.get_ylim()
        assert hi <= 1.1, (lo, hi)  # a share, not an infinite density
        x0, x1 = ax.get_xlim()
        assert x0 < 0.5 < x1
    for ax in fig.axes:  # the other layer keeps its density
        if ax.get_title().startswith("layer 1"):
            assert ax.get_ylabel() == "density"


def test_a_report_of_values_near_float64s_largest_prints_no_numpy_warnings(tmp_path):
    """A run whose layer-1 probes are 1e300 and layer-2 probes 1e-300 (a float64 run that
    blew up beside one that vanished): matplotlib's autoscaling of the log axes overflowed,
    and ``depthlab report`` printed "warning: overflow encountered in exp", "in scalar
    divide" and "Attempt to set non-positive ylim on a log-scaled axis" 15 times, about
    limits the figures then set themselves. The report is drawn without them."""
    import warnings

    from depthlab.experiments.store import RunRecord, Store
    from depthlab.report import write_report

    quantities = ("act_mean", "act_std", "grad_pre_std", "pre_std", "weight_std",
                  "weight_grad_std", "update_ratio")
    probes = pd.DataFrame([{"step": s, "layer": k, "quantity": q,
                            "value": 1e300 if k == 1 else 1e-300}
                           for s in (0, 5, 10) for k in (1, 2) for q in quantities])
    steps = pd.DataFrame({"step": np.arange(1, 11), "loss": np.linspace(2.0, 1.0, 10)})
    with Store(tmp_path) as store:
        store.add_run(RunRecord(id="x1", name="extreme", steps=steps, probes=probes))
        store.add_run(RunRecord(id="x2", name="calm", steps=steps, probes=probes.assign(
            value=0.5)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert write_report(tmp_path).is_file()


def test_a_notebook_heatmap_of_gradients_near_float64s_largest_warns_nothing():
    """``plot.gradient_heatmap`` of a float64 run's gradients reaching 1.7e308 (drawn in a
    notebook, outside the report) raised NumPy's "overflow encountered in add" (the colour
    bar's boundary midpoints) and "in scalar divide" (the colour bar's decade test, hi / lo)
    beside a figure that draws them right."""
    import warnings

    from depthlab import plot

    table = _rows({"grad_pre_std": {1: [1e-3, 1e100, 1e301], 2: [1e-2, 1e200, 1e305],
                                    3: [1e-1, 1e300, 1.7e308]}}, steps=(0, 10, 20))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = plot.gradient_heatmap(table)
        fig.canvas.draw()
