"""Round 10: what a learner or a teacher sees in a real browser (helper "ui").

* a shared link spelled as a person types it (``model.activation=TANH``,
  ``model.batchnorm=1``, ``train.optimizer=SGD``) put a second entry "TANH" beside "tanh" into
  the menu, and "SGD" hid the momentum control (its optimizers are spelled "sgd"): the page
  left the link's ``train.momentum=0`` out of the setup and trained with 0.9;
* a doctor's "apply" button on a 320 px phone ran 10 px past its panel (its settings are JSON:
  no space to break the line at);
* a doctor could not be stopped: on a 300-layer residual network it trained for a minute after
  the setup was changed, the doctor button disabled ("already running") all the while; now
  "cancel the doctor" ends it within a training step;
* after the server stopped, the preset buttons took clicks and threw "Failed to fetch";
* the training figure of every run without accuracy (each depthlab.torch Watch run) was two
  panels, the right one empty but for "no accuracy recorded"; now the loss panel alone;
* a diverged Watch run's report said "Training diverged. status is 'diverged' (no report)";
  now it names the step whose loss was first not finite;
* its training-loss panel drew steps 0-3 of 30 without a word on the NaN losses after them;
* a report of a sweep of more than 16 runs drew and tabled the 16 best by validation accuracy
  only: its diverged runs (the explosions), ranked last, were in no overlay and no row of the
  gradient-flow table, which did not say it was cut; now 4 places are kept for them;
* a sweep heatmap of 13 learning rates wrote "✗ diverged" (75 px) into 71 px cells: the marks
  of neighbouring cells ran together; now "✗" alone there, and the title says what it means;
* on a phone, what Tab or a link scrolled into view stopped at the screen's bottom edge,
  under the fixed play/pause bar (the status line entirely, the doctor button's lower edge);
* "export TOML" clicked right after typing a value (no Tab) downloaded the accepted setup's
  value (width 8 in the file, 64 on the page): the link pointed at the last accepted setup;
* "copy link" likewise copied the page's URL, of the last accepted setup (width=8 with 64 on
  the page);
* a report of an empty store said "The store holds no runs yet." and not how to add one;
* the metric-by-run figure of a report of 50 runs (some diverged) put its legend over the
  tallest bars, which a sweep sorted by its metric draws exactly there.

Browser tests use Debian's Chromium (they fail, not skip, without it); screenshots go to a
temporary folder (``DEPTHLAB_SCREENSHOTS=DIR`` keeps them in DIR).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers.browser import checked_page, screenshot_dir, url_param

from depthlab.playground.server import Background
from depthlab.report import figures

MEASURED = "document.getElementById('grad-summary').dataset.step !== ''"


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    return screenshot_dir(tmp_path_factory.mktemp("round10_screenshots"))


@pytest.fixture()
def page(browser, server):
    with checked_page(browser) as pg:
        yield pg


def menu(pg, key: str) -> list:
    return pg.evaluate("k => { const e = document.querySelector(`[name=\"${k}\"]`);"
                       " return [e.value, [...e.options].map((o) => o.value)]; }", key)


# -- the URL as a person types it ------------------------------------------------------------
def test_a_link_with_capitals_keeps_its_menus_and_its_momentum(page, server, shots):
    page.goto(server.url + "?model.activation=TANH&model.batchnorm=1&train.optimizer=SGD"
              "&train.momentum=0&model.depth=4")
    page.wait_for_function(MEASURED, timeout=90_000)
    page.locator("#controls").screenshot(path=str(shots / "round10_link_capitals.png"))
    # was: momentum hidden (its optimizers are spelled "sgd") and left out: 0.9 trained
    assert url_param(page, "train.momentum") == "0.0"
    assert page.locator("#f-train-momentum").is_visible()
    value, options = menu(page, "model.activation")
    # was: "TANH" chosen, an option of its own beside "tanh"
    assert value == "tanh" and "TANH" not in options and options.count("tanh") == 1, options
    assert menu(page, "model.batchnorm") == ["true", ["false", "true"]]
    assert menu(page, "train.optimizer")[0] == "sgd"
    assert url_param(page, "model.activation") == "tanh"


def test_a_link_with_an_unknown_choice_is_still_named_beside_its_menu(page, server):
    page.goto(server.url + "?model.activation=tanhh")
    page.wait_for_selector('.field.invalid[data-key="model.activation"]', timeout=30_000)
    assert "'tanhh' is not accepted" in page.locator("#message").text_content()
    assert menu(page, "model.activation")[0] == "tanhh"  # shown as the link has it


# -- report figures ----------------------------------------------------------------------------
def test_the_metric_by_run_legend_covers_no_bar(shots):
    n = 50  # beyond MAX_LABELLED_CELLS: one legend entry instead of a text per bar
    runs = pd.DataFrame({"run": [f"depth{2 + k % 7}-lr{0.01 * (k + 1):.2f}" for k in range(n)],
                         "val_acc": np.linspace(0.5, 0.91, n),
                         "status": ["diverged" if k % 9 == 0 else "finished"
                                    for k in range(n)]})
    fig = figures.sweep_bars(runs, "run")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["✗ every run diverged"]
    box = legend.get_window_extent(renderer)
    covered = [i for i, p in enumerate(ax.patches) if p.get_window_extent(renderer).overlaps(box)]
    # was: the legend (upper right, inside the axes) over the bars of the 4 best runs
    assert not covered, covered
    assert fig.bbox.contains(box.x0, box.y0) and fig.bbox.contains(box.x1, box.y1)
    assert not box.overlaps(ax.title.get_window_extent(renderer))
    (shots / "round10_bars_50.png").write_bytes(figures.figure_png(fig))


# -- the doctor on a phone ---------------------------------------------------------------------
def test_an_apply_button_wraps_inside_a_phone_wide_panel(browser, server, shots):
    context = browser.new_context(viewport={"width": 320, "height": 640})
    pg = context.new_page()
    try:
        pg.goto(server.url + "?model.depth=4&model.width=8")
        pg.wait_for_function(MEASURED, timeout=90_000)
        query = pg.evaluate("S.query")
        apply = {**query, "model.activation": "tanh", "model.init": "glorot_uniform"}
        # the doctor's answer as the server sends it (a real doctor run takes seconds)
        pg.evaluate("""([query, apply]) => handle({type: "doctor", steps: 200, query,
            baseline: {train_loss: 0.69, val_acc: 0.5}, findings: [{kind: "mean_shift",
            severity: "high", layers: [1, 2, 3, 4], message: "not zero-centred",
            evidence: {metric: 0.61}, prescription_text: "use tanh",
            prescription: {activation: "tanh", init: "glorot_uniform"}, apply}]})""",
                    [query, apply])
        button = pg.locator("#doctor-out button.apply")
        # (round 18b: the label names controls and values, no longer JSON)
        assert button.text_content() == "apply: activation tanh, init glorot_uniform"
        button.scroll_into_view_if_needed()
        pg.locator("#panel-doctor").screenshot(path=str(shots / "round10_apply_phone.png"))
        # was: the settings (JSON: no space to break at) ran past the button and the panel
        sizes = button.evaluate("b => [b.scrollWidth, b.clientWidth, b.getBoundingClientRect()"
                                ".right, b.closest('.panel').getBoundingClientRect().right]")
        assert sizes[0] <= sizes[1] and sizes[2] <= sizes[3], sizes
    finally:
        context.close()


# -- a slow doctor ---------------------------------------------------------------------------
def _doctor_threads() -> list:
    import threading

    return [t for t in threading.enumerate() if t.name == "depthlab-playground-doctor"]


def test_a_running_doctor_can_be_cancelled_from_the_page(page, server, shots, monkeypatch):
    from depthlab.playground import app as playground_app
    from depthlab.playground import doctor_task

    trained: list[int] = []

    class Counting(doctor_task._StopWhenSet):
        def after_update(self, trainer, step, loss):
            trained.append(step)
            super().after_update(trainer, step, loss)

    monkeypatch.setattr(doctor_task, "_StopWhenSet", Counting)
    # a doctor of hours, as a deep network's feels: it ends only when stopped
    monkeypatch.setattr(playground_app, "run_doctor", lambda prep, setup, steps=None, stop=None:
                        doctor_task.run_doctor(prep, setup, 10**7, stop))
    page.goto(server.url + "?model.depth=3&model.width=8")
    page.wait_for_function(MEASURED, timeout=90_000)
    for attempt in range(2):  # cancelled, then the doctor button works again
        trained.clear()
        page.click("#doctor")
        # was: no way out; the doctor button stayed disabled until the doctor ended
        cancel = page.locator("#doctor-cancel")
        cancel.wait_for(timeout=10_000)
        for _ in range(300):
            if trained:
                break
            page.wait_for_timeout(50)
        assert trained, "the doctor did not start training"
        assert page.locator("#doctor").is_disabled()
        if attempt == 0:
            page.locator("#panel-doctor").screenshot(path=str(shots / "round10_doctor_cancel.png"))
        cancel.click()
        page.wait_for_function("document.getElementById('doctor-out').textContent"
                               ".includes('the doctor was cancelled')", timeout=10_000)
        assert not page.locator("#doctor").is_disabled()
        for _ in range(200):  # its thread ends within one training step
            if not _doctor_threads():
                break
            page.wait_for_timeout(50)
        assert not _doctor_threads(), "the cancelled doctor kept training"
    assert "already running" not in (page.locator("#message").text_content() or "")


def test_a_stopped_server_disables_the_presets_and_the_doctors_cancel(browser, monkeypatch):
    from depthlab.playground import app as playground_app
    from depthlab.playground import doctor_task

    monkeypatch.setattr(playground_app, "run_doctor", lambda prep, setup, steps=None, stop=None:
                        doctor_task.run_doctor(prep, setup, 10**7, stop))
    context = browser.new_context(viewport={"width": 1300, "height": 950})
    pg = context.new_page()
    problems: list[str] = []
    pg.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    pg.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    try:
        with Background() as own:  # stopped below, not the module's server
            pg.goto(own.url + "?model.depth=3&model.width=8")
            pg.wait_for_function(MEASURED, timeout=90_000)
            pg.click("#doctor")
            pg.locator("#doctor-cancel").wait_for(timeout=10_000)
        pg.wait_for_selector("body[data-state=disconnected]", timeout=15_000)
        # was: a preset took the click and threw 'Failed to fetch' (nothing on the page)
        presets = pg.locator("#preset-buttons button")
        assert presets.count() >= 5
        assert all(presets.nth(i).is_disabled() for i in range(presets.count()))
        # the running doctor's panel says its answer is lost; no cancel button is left (was
        # disabled, beside "the doctor is training copies ..." for ever: round 15, b021f44)
        assert pg.locator("#doctor-cancel").count() == 0
        assert "the doctor's answer is lost" in pg.locator("#doctor-out").text_content()
        presets.first.click(force=True)  # a click on it does nothing, and says nothing wrong
        pg.evaluate("() => new Promise((r) => setTimeout(r, 500))")
        assert not problems, problems
    finally:
        context.close()


def test_a_run_without_accuracy_gets_its_loss_panel_alone():
    steps = pd.DataFrame({"step": np.arange(120), "loss": 2.0 * np.exp(-np.arange(120) / 40)})
    fig = figures.training_curves(steps)  # as a depthlab.torch Watch records: the loss only
    # was: two panels, the right one empty but for "no accuracy recorded"
    assert len(fig.axes) == 1, [ax.get_title() for ax in fig.axes]
    assert fig.axes[0].get_title() == "Training loss"
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert not texts, texts
    epochs = pd.DataFrame({"epoch": [1, 2], "step": [60, 120], "val_acc": [0.5, 0.7]})
    both = figures.training_curves(steps, epochs)
    assert [ax.get_title() for ax in both.axes] == ["Training loss", "Accuracy"]


def test_a_diverged_run_without_a_report_says_where_its_loss_stopped_being_finite(tmp_path,
                                                                                 monkeypatch):
    import dataclasses

    from test_report import synthetic_record

    from depthlab.experiments.store import Store
    from depthlab.report import build, write_report

    # the page's words are under test, not its 7 figures: not drawn (seconds each)
    monkeypatch.setattr(build._Pngs, "add", lambda self, name, fn, *a, **k: b"")
    r = synthetic_record("watchboom01", sweep=None, status="diverged")
    loss = [1.2, 4e3, 2.6e11, 2e28] + [float("nan")] * 26  # a Watch trained on past the NaN
    r = dataclasses.replace(r, divergence=None,
                            steps=pd.DataFrame({"step": np.arange(30), "loss": loss}))
    with Store(tmp_path) as store:
        store.add_run(r)
    text = write_report(tmp_path).read_text()
    # was: "Training diverged. status is 'diverged' (no report)"
    assert "(no report)" not in text
    assert ("The loss was first not finite (NaN or inf) at step 4; it stayed so to the last "
            "recorded step, 29.") in text


def test_a_loss_that_went_nan_says_from_which_step_it_is_not_drawn():
    loss = [1.2, 4e3, 2.6e11, 2e28] + [float("nan")] * 26
    fig = figures.training_curves(pd.DataFrame({"step": np.arange(30), "loss": loss}))
    # was: "Training loss" over a line that stopped at step 3 of 29 without a word
    assert fig.axes[0].get_title() == ("Training loss\nnot drawn: not finite (NaN/inf) "
                                       "from step 4")
    fig.canvas.draw()
    top = fig.axes[0].title.get_window_extent(fig.canvas.get_renderer()).y1
    assert top <= fig.bbox.y1, (top, fig.bbox.y1)  # both lines inside the picture
    fig = figures.training_curves(pd.DataFrame({"step": [0, 1, 2, 3], "loss": [1.0, np.inf,
                                                                                0.9, 0.8]}))
    assert fig.axes[0].get_title().endswith("not finite (NaN/inf) at step 1")


def test_a_sweep_of_many_runs_keeps_its_diverged_runs_in_the_gradient_flow(tmp_path,
                                                                           monkeypatch):
    import re

    from test_report import synthetic_record

    from depthlab.experiments.store import Store
    from depthlab.report import build, write_report

    n = build.MAX_OVERLAY_RUNS + 4
    with Store(tmp_path) as store:
        for k in range(n):
            store.add_run(synthetic_record(f"p{k:03d}abcdef", depth=2 + k % 5, lr=0.01 * (k + 1),
                                           status="diverged" if k % 7 == 3 else "finished",
                                           val_acc=0.5 + k / 100))
    drawn: list[str] = []  # the figures are not drawn (seconds each); their names are kept
    monkeypatch.setattr(build._Pngs, "add", lambda self, name, fn, *a, **k: drawn.append(name)
                        or b"")
    text = write_report(tmp_path, max_runs=1, max_diverged=0).read_text()
    assert any(name.endswith("_gradient_per_layer.png") for name in drawn), drawn
    flow = text[text.index(f"<h3>{build.SECTION_FLOW}</h3>"):]
    flow = flow[:flow.index("</table>")]
    names = re.findall(r"<td[^>]*>(depth[^<]*)</td>", flow)
    # was: the 16 best by validation accuracy, all finished: the 3 diverged runs, ranked
    # last, were in no overlay and no row of the table, which did not say it was cut
    assert len(names) == build.MAX_OVERLAY_RUNS, names
    assert sum("not finite" in row or "diverged" in row
               for row in re.findall(r"<tr>.*?</tr>", flow, re.S)) == 3
    assert f"Showing 16 of {n} runs: the 13 best and 3 diverged." in flow


def test_heatmap_status_marks_never_run_into_their_neighbours(shots):
    lrs = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 2.0]
    runs = pd.DataFrame([{"train.lr": lr, "model.activation": act, "val_acc": 0.3 + lr / 10,
                          "status": "diverged" if lr >= 0.5 and act == "relu" else "finished"}
                         for lr in lrs for act in ("sigmoid", "tanh", "relu")])
    fig = figures.sweep_heatmap(runs, "train.lr", "model.activation")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    cell = ax.get_window_extent(renderer).width / len(lrs)
    marks = [t for t in ax.texts if "✗" in t.get_text()]
    assert len(marks) == 4
    widths = [t.get_window_extent(renderer).width for t in marks]
    # was: "✗ diverged" 1.2 cells wide: "✗ diverged✗ diverged" across neighbouring cells
    assert max(widths) < cell, (widths, cell)
    assert ax.get_title().endswith("\n✗: every run there diverged")
    (shots / "round10_heatmap_marks.png").write_bytes(figures.figure_png(fig))
    wide = figures.sweep_heatmap(runs[runs["train.lr"] >= 0.7], "train.lr",
                                 "model.activation")  # 3 columns: room for the words
    assert sorted(t.get_text() for t in wide.axes[0].texts if "✗" in t.get_text()) == [
        "✗ diverged"] * 3
    assert "\n" not in wide.axes[0].get_title()


def test_on_a_phone_tab_never_leaves_the_focus_under_the_play_bar(browser, server, shots):
    context = browser.new_context(viewport={"width": 360, "height": 740})
    pg = context.new_page()
    try:
        pg.goto(server.url + "?model.depth=4&model.width=8")
        pg.wait_for_function(MEASURED, timeout=90_000)
        pg.evaluate("document.activeElement.blur(); window.scrollTo(0, 0)")
        under = []
        for _ in range(30):  # the presets, every control, doctor, export, copy link
            pg.keyboard.press("Tab")
            box = pg.evaluate("""(() => { const e = document.activeElement,
                r = e.getBoundingClientRect(), bar = document.getElementById('transport');
                return [e.id || e.textContent, r.bottom, bar.getBoundingClientRect().top,
                        bar.contains(e) || e === document.body]; })()""")
            if not box[3] and box[1] > box[2] + 0.5:
                under.append(box)
        pg.screenshot(path=str(shots / "round10_phone_tab.png"))
        # was: doctor, export TOML and copy link were scrolled to the bottom edge of the page's
        # padding, their lower edge under the fixed play/pause bar (703 px, the bar from 699)
        assert not under, under
        pg.locator("#status").scroll_into_view_if_needed()
        bottom, top = pg.evaluate("[document.getElementById('status').getBoundingClientRect()"
                                  ".bottom, document.getElementById('transport')"
                                  ".getBoundingClientRect().top]")
        assert bottom <= top + 0.5, (bottom, top)  # was: the status line behind the bar
    finally:
        context.close()


# -- export ----------------------------------------------------------------------------------
def test_export_writes_the_value_typed_into_a_control_even_before_tab(browser, server,
                                                                       tmp_path):
    import tomllib

    from depthlab.experiments.config import validate

    context = browser.new_context(viewport={"width": 1300, "height": 950}, accept_downloads=True)
    pg = context.new_page()
    try:
        pg.goto(server.url + "?model.depth=4&model.width=8")
        pg.wait_for_function(MEASURED, timeout=90_000)
        pg.fill("#f-model-width", "64")  # typed, then the export link clicked at once
        with pg.expect_download(timeout=15_000) as download:
            pg.click("#export")
        path = tmp_path / download.value.suggested_filename
        download.value.save_as(path)
        config = validate(tomllib.loads(path.read_text()))  # as `depthlab run` reads it
        # was: width = 8, the accepted setup the link still pointed at
        assert config["model"]["width"] == 64 and config["model"]["depth"] == 4, config["model"]
        assert path.name == "playground-spirals-4x64-tanh.toml"
        # a typed value the server refuses downloads nothing and says why beside the control
        downloads = []
        pg.on("download", lambda d: downloads.append(d.suggested_filename))
        pg.fill("#f-model-depth", "0")
        with pg.expect_response(lambda r: "/api/check?" in r.url) as checked:
            pg.click("#export")
        assert checked.value.json()["key"] == "model.depth"
        pg.wait_for_selector('.field.invalid[data-key="model.depth"]', timeout=10_000)
        pg.evaluate("() => new Promise((r) => setTimeout(r, 300))")  # the answer is handled
        assert "model.depth = '0' is not accepted" in pg.locator("#message").text_content()
        assert not downloads, downloads
    finally:
        context.close()


def test_copy_link_copies_the_value_typed_into_a_control_even_before_tab(browser, server):
    context = browser.new_context(viewport={"width": 1300, "height": 950})
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    pg = context.new_page()
    try:
        pg.goto(server.url + "?model.depth=4&model.width=8")
        pg.wait_for_function(MEASURED, timeout=90_000)
        pg.fill("#f-model-width", "64")
        pg.click("#share")
        pg.wait_for_function("document.getElementById('share').textContent === 'link copied'",
                             timeout=10_000)
        link = pg.evaluate("navigator.clipboard.readText()")
        # was: the page's URL, of the accepted setup: width=8
        assert "model.width=64" in link and "model.depth=4" in link, link
        pg.goto(link)  # the link opens the setup that was on the page
        pg.wait_for_function("new URLSearchParams(location.search).get('model.width') === '64'",
                             timeout=30_000)
    finally:
        context.close()


def test_a_report_of_an_empty_store_says_how_to_fill_it(browser, tmp_path, shots):
    from depthlab.experiments.store import Store
    from depthlab.report import write_report

    Store(tmp_path).close()
    path = write_report(tmp_path)
    context = browser.new_context(viewport={"width": 375, "height": 667})
    pg = context.new_page()
    try:
        pg.goto(path.resolve().as_uri())
        pg.screenshot(path=str(shots / "round10_empty_report.png"))
        text = pg.locator("body").inner_text()
        # was: "The store holds no runs yet." and nothing on how to add one
        assert "The store holds no runs yet. Add some with depthlab run CONFIG --out DIR" in text
        assert "depthlab report DIR" in text
        assert pg.evaluate("document.documentElement.scrollWidth") <= 375
    finally:
        context.close()
