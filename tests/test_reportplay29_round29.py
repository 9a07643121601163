"""Round 29 (reportplay29): what a person sees in the HTML report and the browser playground."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from helpers.browser import checked_page

from depthlab.report import html as H

SWEEP_NAMES = ["base:activation=tanh,lr=0.01", "base:activation=sigmoid,lr=10000",
               "base:activation=relu,lr=10000", "base:activation=tanh,lr=10000"]


def _runs_table_page(tmp_path: Path, names: list[str]) -> Path:
    """A report page holding a sweep's runs table as build._group_section writes it (ten
    columns: a linked id, the name, a status badge, two swept values and five metrics)."""
    cols = ["id", "name", "status", "model.activation", "train.lr", "train loss", "val acc",
            "test acc", "steps", "seconds"]
    rows = [[f"<a href=\"#run-{k:012x}\"><code>{k:012x}</code></a>", name, H.badge("finished"),
             "sigmoid", 1e4, 2.534e4, 0.515, 0.5925, 44, 0.02445] for k, name in enumerate(names)]
    body = "<div class=\"card\">" + H.table(cols, rows, sortable=True, table_id="runs-table-t",
                                             raw_html_columns=("id", "status")) + "</div>"
    path = tmp_path / "report.html"
    path.write_text(H.page("t", [], body), encoding="utf-8")
    return path


def test_a_sweeps_runs_table_fits_a_1400_px_page_without_scrolling(browser, tmp_path):
    # the runs table of a 3 x 3 sweep (names "base:activation=sigmoid,lr=10000", no space to
    # break at) was 17 px wider than its 1146 px box at 1400 px: the seconds column was cut off
    # behind a scroll bar although the names could wrap at their commas
    path = _runs_table_page(tmp_path, SWEEP_NAMES)
    with checked_page(browser, width=1400) as pg:
        pg.goto(path.as_uri())
        box = pg.eval_on_selector(".scroll", "e => [e.scrollWidth, e.clientWidth]")
        assert box[0] <= box[1], box
        # a name breaks at its punctuation, never in the middle of a word; the id stays whole
        lines = pg.eval_on_selector_all("#runs-table-t tbody tr td:nth-child(2)", """tds =>
            tds.map(td => { const r = document.createRange(); r.selectNodeContents(td);
                            const tops = Array.from(r.getClientRects(), q => Math.round(q.top));
                            return new Set(tops).size; })""")
        ids = pg.eval_on_selector_all("#runs-table-t code", "cs => cs.map(c => "
                                      "c.getClientRects().length)")
        assert set(ids) == {1}, ids
        assert max(lines) <= 2, lines


def test_a_name_wraps_at_its_punctuation_and_a_long_unbroken_name_does_not_squeeze_the_text(
        browser, tmp_path):
    # a 100-character run name without a space took 680 of the gradient-flow table's 1146 px
    # and left the "meaning" column 130 px wide (seven lines of text per row)
    long = "a_very_long_run_name_that_keeps_going_and_going_without_any_spaces_at_all_x" * 2
    path = _runs_table_page(tmp_path, [long, *SWEEP_NAMES])
    # the written page keeps each name whole in its cell: a search for it finds it
    assert f"<td>{long}</td>" in path.read_text(encoding="utf-8")
    with checked_page(browser, width=1400) as pg:
        pg.goto(path.as_uri())
        box = pg.eval_on_selector(".scroll", "e => [e.scrollWidth, e.clientWidth]")
        assert box[0] <= box[1], box
        # the name's text is all there (a <wbr> is no character: sorting and copying see it)
        text = pg.eval_on_selector("#runs-table-t tbody td:nth-child(2)", "td => td.textContent")
        assert text == long
    with checked_page(browser, width=390) as pg:
        pg.goto(path.as_uri())
        # the comma-separated name breaks at ",": "base:activation=sigmoid," then "lr=10000"
        words = pg.eval_on_selector_all("#runs-table-t tbody tr:nth-child(3) td:nth-child(2)",
                                        """tds => { const t = tds[0].firstChild ? tds[0] : null;
            const r = document.createRange(); const out = []; let top = null, cur = '';
            const walker = document.createTreeWalker(t, NodeFilter.SHOW_TEXT);
            for (let n = walker.nextNode(); n; n = walker.nextNode())
              for (let i = 0; i < n.length; i++) { r.setStart(n, i); r.setEnd(n, i + 1);
                const y = r.getBoundingClientRect().top;
                if (top !== null && Math.abs(y - top) > 2) { out.push(cur); cur = ''; }
                top = y; cur += n.data[i]; }
            out.push(cur); return out; }""")
        assert len(words) >= 2, words
        for line in words[:-1]:
            assert line[-1] in ",=:._/", words



def test_a_table_of_long_underscored_headers_fits_a_1400_px_page(browser, tmp_path):
    # he2015's results table: eleven columns headed "loss_max_late", "grad_w30_step0",
    # "final/initial" (never wrapped) was 1253 px in its 1146 px box at 1400 px: the last
    # column cut off behind a scroll bar
    cols = ["init", "seed", "loss_first", "loss_last", "loss_min10", "loss_max_late",
            "grad_w1_step0", "grad_w30_step0", "diverged", "seconds", "final/initial"]
    rows = [["glorot_uniform", 1, 2.302596, 2.301984, 2.300802, 2.310977, 1.704437e-07,
             6.952167e-08, False, 102.805399, 0.999734],
            ["he_normal", 1, 2.361, 0.06067, 0.04261, 0.5999, 0.002904, 0.001798, False,
             83.35, 0.0257]]
    path = tmp_path / "page.html"
    path.write_text(H.page("t", [], "<div class=\"card\">" + H.table(cols, rows, sortable=True)
                           + "</div>"), encoding="utf-8")
    with checked_page(browser, width=1400) as pg:
        pg.goto(path.as_uri())
        box = pg.eval_on_selector(".scroll", "e => [e.scrollWidth, e.clientWidth]")
        assert box[0] <= box[1], box
        headers = pg.eval_on_selector_all("thead th", "ths => ths.map(t => t.textContent)")
        assert headers == cols  # the text itself is unchanged
        # a header breaks at its underscore, never inside a word
        lines = pg.eval_on_selector_all("thead th", """ths => ths.map(th => {
            const r = document.createRange(); r.selectNodeContents(th);
            return new Set(Array.from(r.getClientRects(), q => Math.round(q.top))).size; })""")
        assert max(lines) <= 2, lines


def test_a_refusal_while_a_deep_network_is_built_neither_says_invalid_nor_outlives_its_fix(
        browser, server):
    from test_playground_browser import set_field

    with checked_page(browser, width=1300) as pg:
        pg.goto(server.url)
        pg.wait_for_selector("#f-model-depth")
        pg.wait_for_function("document.body.dataset.state === 'paused'", timeout=30_000)
        # each wait also needs the change accepted (the page's URL is the accepted setup):
        # the state alone was still the previous setup's under load (CI: the width-128
        # network's "loading" passed for the 1000-layer one's, whose refusal message then
        # named the setup before it)
        set_field(pg, "model.width", "128")
        pg.wait_for_function("location.search.includes('model.width=128') && "
                             "document.body.dataset.state === 'paused'", timeout=60_000)
        set_field(pg, "model.depth", "1000")  # a network that takes seconds to build
        pg.wait_for_function("location.search.includes('model.depth=1000') && "
                             "document.body.dataset.state === 'loading'", timeout=30_000)
        set_field(pg, "model.depth", "0")
        pg.wait_for_function("!document.getElementById('message').hidden", timeout=10_000)
        # the 1000-layer network is still being built: the state said "invalid" (as if nothing
        # were accepted) and the message did not say which setup goes on
        state = pg.evaluate("document.body.dataset.state")
        message = pg.text_content("#message")
        assert state == "loading", state
        assert "model.depth = 1000" in message, message
        # corrected while the deep network is still built: the server checks the new setup,
        # then answers "waiting" until the old network is built; the refusal of depth 0 stayed
        # above it (it no longer applied) and depth stayed marked in red. The answer is given
        # to the page's handler here: when it comes depends on the machine's speed
        pg.fill('[name="model.depth"]', "3")
        pg.evaluate("() => handle({type: 'waiting', message: 'waiting for the previous "
                    "session to stop; this setup starts then'})")
        assert pg.is_hidden("#message")
        assert pg.locator(".field.invalid").count() == 0


def _texts(fig) -> str:
    return " ".join(t.get_text() for ax in fig.axes for t in ax.texts)


def test_an_update_ratio_of_zero_at_every_step_is_said_not_called_unrecorded():
    # a tanh net at lr=1e6 saturated at once: its 68 update_ratio probes were all exactly 0
    # (no gradient, the weights never moved) and the report's figure said "no 'update_ratio'
    # probes recorded", the one thing it could not mean
    import pandas as pd

    from depthlab.report import figures as F

    def ratios(values) -> pd.DataFrame:
        return pd.DataFrame([{"step": s, "layer": la, "quantity": "update_ratio",
                              "value": float("nan") if s == 0 else v}
                             for s, v in zip((0, 5, 10, 15), values) for la in (1, 2, 3)])

    text = _texts(F.update_ratio(ratios([0.0, 0.0, 0.0, 0.0])))
    assert "not recorded" not in text and "no 'update_ratio'" not in text, text
    assert "0 at every" in text and "never changed" in text, text
    text = _texts(F.update_ratio(ratios([0.0, float("inf"), float("nan"), float("inf")])))
    assert "not finite" in text and "no 'update_ratio'" not in text, text
    # none recorded at all still says so
    assert "no 'update_ratio' probes recorded" in _texts(F.update_ratio(None))


def test_the_loss_panels_accuracy_and_the_gradient_panels_dashed_lines_read_in_the_legend(
        browser, server):
    # held-out loss (#ff7f0e) and held-out acc (#2ca02c) become two olive-yellows for a
    # deuteranope (195,174,5 and 150,136,56): both solid lines with solid legend squares. And
    # the gradient panel's dashed "at init" and dotted "theory" had solid legend squares too
    with checked_page(browser, width=1300) as pg:
        pg.goto(server.url)
        pg.wait_for_function("document.body.dataset.state === 'paused'", timeout=30_000)
        styles = pg.evaluate("""() => Object.fromEntries([...document.querySelectorAll(
            '#panel-loss .u-legend .u-series, #panel-grad .u-legend .u-series')].map(row => {
              const m = row.querySelector('.u-marker');
              return [row.textContent.trim(), m && getComputedStyle(m).borderTopStyle]; }))""")
        assert styles["held-out acc"] == "dashed", styles
        assert styles["held-out loss"] == "solid" and styles["train loss"] == "solid", styles
        assert styles["at init"] == "dashed" and styles["theory"] == "dotted", styles
        assert styles["now"] == "solid", styles


def test_the_worst_sane_cell_and_a_runaway_cell_of_a_heatmap_differ_in_colour():
    # a 3 x 3 sweep (lr 0.01, 0.1, 1e4): the colour bar stops at the sane losses' largest,
    # 0.705, and the runaway 7416 and 25340 beyond it took the bar's end colour, the very
    # purple of the two 0.705 cells: by colour, the worst good run read as a blown-up one
    import pandas as pd

    from depthlab import plot

    loss = {("sigmoid", 0.01): 0.7046, ("tanh", 0.01): 0.6764, ("relu", 0.01): 0.7046,
            ("sigmoid", 0.1): 0.6931, ("tanh", 0.1): 0.6719, ("relu", 0.1): 0.6738,
            ("sigmoid", 1e4): 7416.0, ("tanh", 1e4): 25340.0}
    runs = pd.DataFrame([{"model.activation": a, "train.lr": lr, "train_loss": v,
                          "status": "finished"} for (a, lr), v in loss.items()]
                        + [{"model.activation": "relu", "train.lr": 1e4,
                            "train_loss": float("nan"), "status": "diverged"}])
    fig = plot.sweep_metric(runs, ["model.activation", "train.lr"], "train_loss",
                            higher_is_better=False)
    mesh = fig.axes[0].collections[0]
    assert mesh.colorbar.extend == "max"
    worst_sane = np.array(mesh.cmap(mesh.norm(0.7046)))
    runaway = np.array(mesh.cmap(mesh.norm(7416.0)))
    assert np.abs(worst_sane[:3] - runaway[:3]).max() > 0.25, (worst_sane, runaway)
    # and the cell's number stays readable on it
    texts = {t.get_text(): t.get_color() for t in fig.axes[0].texts}
    rgb = runaway[:3]
    lum = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
    assert texts["7.42e+03"] == ("black" if lum > 0.55 else "white")


def test_figures_of_probes_that_are_all_nan_say_so_not_that_none_were_recorded():
    # a run whose every probe is NaN (an fp16 run's overflowed gradients, a diverged run's
    # activations): the heatmap, the profile and the activation bands said "no 'grad_pre_std'
    # probes recorded" of a table holding 12 such rows
    import pandas as pd

    from depthlab import plot
    from depthlab.report import figures as F

    table = pd.DataFrame([{"step": s, "layer": la, "quantity": q, "value": float("nan")}
                          for s in (0, 10) for la in (1, 2, 3)
                          for q in ("grad_pre_std", "act_mean", "act_std", "update_ratio",
                                    "saturated_frac", "dead_frac")])
    for fig, q in ((F.gradient_heatmap(table), "grad_pre_std"),
                   (F.gradient_profile(table), "grad_pre_std"),
                   (plot.activation_bands(table), "act_mean"),
                   (F.activation_mean_std(table), "act_mean"),
                   (F.update_ratio(table), "update_ratio")):
        text = _texts(fig)
        assert f"every '{q}' probe is NaN or inf" in text, text
    assert "every saturation and dead-unit probe is NaN or inf" in _texts(F.saturation_dead(table))
    # a quantity with no rows at all is still "not recorded"
    assert "no 'grad_pre_std' probes recorded" in _texts(F.gradient_heatmap(
        table[table.quantity != "grad_pre_std"]))


def test_activation_bands_of_an_overflowed_run_warn_nothing():
    # a diverged network's act_mean and act_std of inf in one layer: the band's mean - std
    # computed inf - inf, and plot.activation_bands leaked "RuntimeWarning: invalid value
    # encountered in subtract"
    import warnings

    import pandas as pd

    from depthlab import plot

    vals = {(0, 1): (0.1, 0.6), (0, 2): (0.0, 0.4), (5, 1): (np.inf, np.inf),
            (5, 2): (3.0, 2.0), (10, 1): (np.inf, np.inf), (10, 2): (4.0, 2.5)}
    table = pd.DataFrame([{"step": s, "layer": la, "quantity": q, "value": v}
                          for (s, la), pair in vals.items()
                          for q, v in zip(("act_mean", "act_std"), pair)])
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        fig = plot.activation_bands(table)
    assert "not finite" in fig.axes[0].get_title()


def test_the_training_figure_of_a_run_that_diverged_after_its_last_step_says_so(
        tmp_path, monkeypatch):
    # a NumPy run that diverged at step 121 stores its losses to step 120: its training
    # figure's curve just ended there, nothing in the figure (a PNG also written alone to
    # figures/) saying why
    from test_report import synthetic_record

    from depthlab import plot
    from depthlab.experiments.store import Store
    from depthlab.report import write_report

    titles: list[str] = []
    original = plot.training_curves

    def recording(*args, **kwargs):
        fig = original(*args, **kwargs)
        titles.append(fig._suptitle.get_text() if fig._suptitle else "")
        return fig

    monkeypatch.setattr(plot, "training_curves", recording)
    with Store(tmp_path) as store:
        store.add_run(synthetic_record("d1", status="diverged", sweep=None, probes=False))
    write_report(tmp_path)
    assert titles == ["diverged at step 121 (loss not finite): not drawn"], titles
