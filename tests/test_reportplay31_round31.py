"""Round 31 (reportplay31): what a teacher sees in the report and the reproductions' pages."""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd

matplotlib.use("Agg")


def test_a_sortable_table_of_many_worded_headers_fits_a_1400_px_page(browser, tmp_path):
    # saxe2013's "products" table: sortable headers never wrapped (white-space:nowrap), so
    # "median condition number" and "expected mean σ⁴ (Gaussian)" made the table 1183 px in
    # its 1146 px box at 1400 px: the last column was cut off behind a scroll bar
    from helpers.browser import checked_page

    from depthlab.report import html as H

    cols = ["init", "n", "factors", "mean σ²", "mean σ⁴", "median σ²", "max σ", "min σ",
            "median condition number", "expected mean σ⁴ (Gaussian)"]
    rows = [["orthogonal", 100, 32, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
            ["scaled Gaussian N(0, 1/n)", 100, 32, 1.205, 78.64, 2.071e-10, 12.67, 3.294e-18,
             1.017e18, 38.6]]
    small = H.table(["run", "train loss", "val acc"], [["a", 0.5, 0.9]], sortable=True)
    path = tmp_path / "page.html"  # the wide table in a section opened by the reader
    path.write_text(H.page("t", [], f"<div class=\"card\" id=\"small\">{small}</div><details>"
                           "<summary>open</summary><div class=\"card\" id=\"wide\">"
                           + H.table(cols, rows, sortable=True) + "</div></details>"),
                    encoding="utf-8")
    lines = """ths => ths.map(th => {
        const r = document.createRange(); r.selectNodeContents(th);
        return new Set(Array.from(r.getClientRects(), q => Math.round(q.top))).size; })"""
    with checked_page(browser, width=1400) as pg:
        pg.goto(path.as_uri())
        pg.click("summary")
        box = pg.eval_on_selector("#wide .scroll", "e => [e.scrollWidth, e.clientWidth]")
        assert box[0] <= box[1], box
        wide = pg.eval_on_selector_all("#wide thead th", "ths => ths.map(t => t.textContent)")
        assert wide == cols  # the text itself is unchanged
        # a header breaks between its words, and its sort mark stays on the last word's line
        # (never a line of its own)
        assert max(pg.eval_on_selector_all("#wide thead th", lines)) <= 3
        marks = pg.eval_on_selector_all(
            "thead th", "ths => ths.map(th => getComputedStyle(th, '::after').content)")
        assert all("\u00a0" in after for after in marks), marks
        # a table that fits keeps each header on one line ("train loss", not "train" / "loss")
        assert pg.eval_on_selector_all("#small thead th", lines) == [1, 1, 1]


def _watch_table(names: list[str]) -> pd.DataFrame:
    """A Watch's probe table of layers named ``names`` (each feeding a ReLU), steps 0 and 2."""
    rows = []
    for s in (0, 2):
        for la, name in enumerate(names, start=1):
            for q, v in (("grad_pre_std", 1e-3 * la), ("act_mean", 0.2 + 0.01 * la),
                         ("act_std", 0.5), ("inactive_frac", 0.4), ("dead_frac", 0.0),
                         ("pre_std", 1.0)):
                rows.append((s, la, name, q, v))
    return pd.DataFrame(rows, columns=["step", "layer", "module", "quantity", "value"])


def test_a_torch_runs_activation_figure_naming_modules_is_shown_at_its_drawn_size(
        browser, tmp_path):
    # a transformer's activation bands (module names in the legend, 9.2 in wide) sat in a
    # half-width column: shown at 61% at 1400 px, its 7.5 pt legend read at 4.6 pt; its
    # neighbour, the named heatmap, takes a row of its own, so the other half stayed empty
    from helpers.browser import checked_page

    from depthlab.report import build
    from depthlab.report import html as H

    # (round 40: a module path's leading names are abbreviated, e.<...>.layers.0.linear1 drew
    # as narrow as a NumPy run's legend; the last name is kept whole, so it widens the figure)
    names = [f"encoder.layers.{b}.feed_forward_expansion_linear1" for b in range(4)]
    numpy_run = _watch_table(["", "", "", ""]).drop(columns="module")  # layer numbers
    blocks = [build._activations_block(_watch_table(names), "TX", build._Pngs()),
              build._activations_block(numpy_run, "np", build._Pngs())]
    page = tmp_path / "report.html"
    page.write_text(H.page("t", [], f"<div class=\"grid\">{''.join(blocks)}</div>"),
                    encoding="utf-8")
    with checked_page(browser, width=1400) as pg:
        pg.goto(page.resolve().as_uri())
        sizes = pg.eval_on_selector_all("figure img",
                                        "im => im.map(i => [i.clientWidth, i.naturalWidth])")
    (shown, natural), (np_shown, np_natural) = sizes
    assert shown >= 0.97 * natural, (shown, natural)
    # a NumPy run's (layer numbers, about 700 px since its legend margin is the legend's
    # width) keeps its half column beside the percentiles: narrower than drawn, at most half
    # of the 1400 px page
    assert np_natural <= build.ACTIVATIONS_HALF_PX and np_shown < np_natural, sizes
    assert np_shown <= 0.5 * 1400 < shown, sizes


def test_every_bar_of_a_three_key_sweep_is_named_under_it():
    # 4 depths x 4 activations x 2 learning rates: 32 bars, of which every 2nd was labelled
    # (more than 25 categories), so every lr=5 bar, the two best runs of the sweep among them,
    # stood unnamed beside a neighbour's "...,lr=0.05" label
    from depthlab import plot

    rows = []
    for d in (1, 3, 12, 40):
        for act in ("sigmoid", "tanh", "relu", "selu"):
            for lr in (0.05, 5.0):
                rows.append({"name": f"grid:depth={d},activation={act},lr={lr:g}",
                             "status": "finished", "val_acc": 0.1 + 0.8 * (lr == 5.0) / d})
    runs = pd.DataFrame(rows)
    fig = plot.sweep_metric(runs.assign(run=runs["name"]), ["run"], "val_acc")
    fig.canvas.draw()
    ax = fig.axes[0]
    bars = sorted(p.get_x() + p.get_width() / 2 for p in ax.patches)
    ticks = [(t.get_position()[0], t.get_text()) for t in ax.get_xticklabels() if t.get_text()]
    assert len(ticks) == len(rows) == len(bars), [t for _, t in ticks]
    assert np.allclose(sorted(x for x, _ in ticks), bars)
    for (_x, text), row in zip(sorted(ticks), rows):  # each label names its own bar's run
        assert text.endswith(row["name"].rsplit(",", 1)[1]), (text, row["name"])
        assert row["name"].split(":", 1)[1].endswith(text.lstrip("…")), (text, row["name"])
    boxes = [t.get_window_extent() for t in ax.get_xticklabels() if t.get_text()]
    assert not any(a.overlaps(b) for a, b in zip(boxes, boxes[1:])), "labels overlap"
    # and the labels stay inside the figure, below the axes
    fig_box = fig.bbox
    assert all(b.y0 >= fig_box.y0 - 1 and b.y1 <= ax.get_window_extent().y0 + 1 for b in boxes)


def test_a_doctor_run_of_a_config_is_told_apart_from_the_run_of_that_config(tmp_path):
    # `depthlab run sig.toml` and `depthlab doctor sig.toml` store runs of one name: the
    # overview's gradient-flow table and legend read "sig (id1)" and "sig (id2)", the doctor's
    # 200-step baseline indistinguishable from the trained run (the torch doctor's runs are
    # stored as "doctor FILE:FUNCTION" and read as doctor runs)
    from test_report import synthetic_record

    from depthlab.experiments import Store
    from depthlab.report import build

    store = Store(tmp_path)
    run = synthetic_record("run0000abcd", sweep=None)
    doc = synthetic_record("doc0000abcd", sweep=None)
    doc.kind = "doctor"
    for rec in (run, doc):
        store.add_run(rec)
    runs = build._runs_table(store)
    html = build._flow_section(store, build._Group("all", "All runs", "overview", runs),
                               build._Pngs())
    rows = [r.split("</td>", 1)[0].rsplit(">", 1)[-1] for r in html.split("<tr")[2:]]
    assert sorted(rows) == sorted([run.name, f"doctor {doc.name}"]), rows
