"""Round 41 (reporthunt41): what a person sees in the report's figures."""

from __future__ import annotations

import io
import unicodedata
import warnings

import pandas as pd

CJK_RUN = "日本語の実験"
MODULES = ("入力層", "隠れ層", "ठीक", "出力")  # Japanese and Devanagari module names


def _missing_glyph_warnings(record) -> list[str]:
    return [str(w.message) for w in record if "missing from font" in str(w.message)]


def _probe_rows(names, quantity: str = "grad_pre_std", steps=(0, 1, 2)) -> pd.DataFrame:
    return pd.DataFrame([{"step": s, "layer": k, "module": m, "quantity": quantity,
                          "value": (1.0 + k) * (1 + s / 10)}
                         for s in steps for k, m in enumerate(names, 1)])


def _drawn_as(ch: str) -> str:
    """What a figure must show for ``ch``: itself where an installed font has it, else its
    code point."""
    from matplotlib.font_manager import FontProperties

    from depthlab.report import glyphs

    drawn = ord(ch) in glyphs._covered(FontProperties()) or glyphs._fallback_family(ord(ch))
    return ch if drawn else f"U+{ord(ch):04X}"


def test_names_in_scripts_no_font_here_has_are_drawn_readably_without_missing_glyphs(
        tmp_path, capsys):
    """A run named in Japanese and modules named in Japanese and Devanagari drew every such
    character as the same empty box (DejaVu Sans lacks them; matplotlib warned "Glyph 26085
    missing from font(s) DejaVu Sans"): four module ticks read as rows of boxes, and the
    figure files of the run were named ``__training.png``. Every character is now drawn by an
    installed font that has it, or written as its code point (``‹U+65E5 U+672C›``): no
    missing-glyph warning, distinct names stay distinct, and the report says why."""
    from depthlab import plot
    from depthlab.cli import main
    from depthlab.report import figures, write_report

    probes = _probe_rows(MODULES)
    figs = []
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for make in (lambda: figures.gradient_heatmap(probes),
                     lambda: plot.gradient_per_layer({CJK_RUN: probes}, False),
                     lambda: figures.update_ratio(_probe_rows(MODULES, "update_ratio"))):
            fig = make()
            fig.canvas.draw()
            texts = [t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text"))]
            figs.append(texts)
            fig.savefig(io.BytesIO(), format="svg")  # another renderer: the same rule
            figures.figure_png(fig)
        fig, (ax,) = figures._new_figure()  # any text: a title, a legend, a tight PDF
        ax.set_title(f"{CJK_RUN} run")
        ax.plot([1, 2], label=MODULES[2])
        ax.legend()
        fig.savefig(io.BytesIO(), format="pdf", bbox_inches="tight")
        figures.figure_png(fig)
    assert _missing_glyph_warnings(record) == []
    heat = " ".join(figs[0])
    for name in MODULES:  # each module's characters: drawn or written as code points
        for ch in name:
            if unicodedata.category(ch) != "Mn":
                assert _drawn_as(ch) in heat, (ch, heat)
    ticks = [t for t in figs[0] if any(_drawn_as(name[0]) in t for name in MODULES)]
    assert len(set(ticks)) >= len(MODULES), ticks  # four names, four labels
    legend = " ".join(figs[1])
    assert _drawn_as(CJK_RUN[0]) in legend

    # the report of a NumPy run named in Japanese: no warning, a note, files named by the id
    config = tmp_path / "run.toml"
    config.write_text(f'name = "{CJK_RUN}"\n[data]\nname = "spirals"\nn = 120\n'
                      '[model]\nsizes = ["auto", 6, "auto"]\n[train]\nepochs = 1\n'
                      'batch_size = 40\n[probes]\nevery = 2\n', encoding="utf-8")
    out = tmp_path / "out"
    assert main(["run", str(config), "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        html = write_report(out).read_text(encoding="utf-8")
    assert _missing_glyph_warnings(record) == []
    names = [p.name for p in (out / "figures").glob("*.png")]
    assert names and not any(n.startswith("_") for n in names), names
    if _drawn_as(CJK_RUN[0]) != CJK_RUN[0]:  # no font here has them: the report says so
        assert "Unicode code points" in html and "‹U+" in html


def test_a_character_another_installed_font_has_is_drawn_with_it():
    """The fallback half of the rule: a character the figure's font lacks but another
    installed font has (matplotlib's own STIX fonts have hundreds) is drawn with that font,
    kept as itself in the label, with no missing-glyph warning."""
    from matplotlib.font_manager import FontProperties

    from depthlab.report import figures, glyphs

    base = glyphs._covered(FontProperties())
    ch = next(chr(c) for c in range(0x2100, 0x2C00)
              if c not in base and chr(c).isprintable()
              and not unicodedata.category(chr(c)).startswith(("M", "Z", "C"))
              and glyphs._fallback_family(c))
    names = [f"block{ch}.0", "block.1"]
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        fig = figures.gradient_heatmap(_probe_rows(names))
        fig.canvas.draw()
        labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
        figures.figure_png(fig)
    assert _missing_glyph_warnings(record) == [], ch
    assert f"block{ch}.0" in labels, labels


def test_the_update_ratio_legend_names_only_layers_it_draws():
    """A 122-layer torch Watch run whose first 100 layers' updates were below float32's
    resolution (ratio 0, no place on a log axis): the legend listed 8 evenly spaced layers,
    6 of them unchanged, with no line (the title said "not drawn: zero ... in 101 layers"),
    so 2 lines stood for "8 of 122 layers". The layers shown are picked among those with a
    value to draw, and every legend entry has a line on the axes."""
    import numpy as np

    from depthlab.report.figures import figure_png, update_ratio

    n = 122
    rows = [{"step": step, "layer": k, "module": f"[{2 * k}]", "quantity": "update_ratio",
             "value": np.nan if step == 0 else (0.0 if k <= 100 else 1e-3 * k / n)}
            for step in (0, 1, 2, 3) for k in range(1, n + 1)]
    fig = update_ratio(pd.DataFrame(rows))
    ax = fig.axes[0]
    handles, labels = ax.get_legend_handles_labels()
    assert len(labels) == 8, labels
    for line in handles:
        y = np.asarray(line.get_ydata(), float)
        assert (np.isfinite(y) & (y > 0)).any(), (line.get_label(), y)
    assert "zero (weights unchanged) in 100 layers" in ax.get_title()
    figure_png(fig)


def test_a_one_layer_figure_names_its_layer_as_its_legend_does():
    """A one-step torch Watch run of ``Linear, ReLU, Linear``: its activation figure's title
    said "layer 1, the only one" above a legend naming the layer ``[0]`` (the module), two
    names for one layer. A figure whose legend names modules says "the only layer"."""
    from depthlab import plot

    table = pd.DataFrame([{"step": 0, "layer": 1, "module": "0", "quantity": q, "value": v}
                          for q, v in (("act_mean", 0.2), ("act_std", 0.3))])
    fig = plot.activation_bands(table)
    ax = fig.axes[0]
    assert ax.get_legend_handles_labels()[1] == ["[0]"]
    assert "layer 1" not in ax.get_title() and "the only layer" in ax.get_title(), \
        ax.get_title()
    numbered = plot.activation_bands(table.drop(columns="module")).axes[0]
    assert "layer 1, the only one" in numbered.get_title()  # numbers: as before


def test_a_saturation_panel_says_when_its_lines_lie_on_top_of_each_other():
    """A healthy tanh net: no saturated entry and no dead unit in any of its 3 layers. Each
    panel drew 3 lines at exactly 0, one on top of the others: the legend named 3 layers and
    one line showed. The panel's title says so, and stays inside the figure."""
    from depthlab.report.figures import figure_png, saturation_dead

    rows = [{"step": s, "layer": k, "quantity": q, "value": v}
            for s in (0, 1, 2) for k in (1, 2, 3)
            for q, v in (("saturated_frac", 0.0), ("dead_frac", 0.0),
                         ("pre_std", 1.0))]
    fig = saturation_dead(pd.DataFrame(rows))
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        assert "0 in every layer at every step" in ax.get_title(), ax.get_title()
        box = ax.title.get_window_extent(renderer)
        assert box.y1 <= fig.bbox.height and box.x0 >= 0, (box, ax.get_title())
    # lines that differ: no such note; a layer hidden under another's line: said
    rows = [{"step": s, "layer": k, "quantity": "saturated_frac",
             "value": 0.1 * s if k != 2 else 0.2 * s} for s in (0, 1, 2) for k in (1, 2, 3)]
    ax = saturation_dead(pd.DataFrame(rows)).axes[0]
    assert "1 layer under another's line (same values)" in ax.get_title(), ax.get_title()
    figure_png(ax.figure)
