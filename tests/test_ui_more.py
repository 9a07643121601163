"""What a learner or a teacher sees in a real browser (Playwright for Python driving Debian's
Chromium), beyond the first browser tests: the playground and a report on a phone-size screen
(nothing wider than the screen), keyboard-only use of the playground (Tab order, Enter, the
Space shortcut its play button advertises, a visible focus ring), play pressed on a diverged
run, gradients that underflow to exactly 0, long run names in the figures' legends, and the
captions of sweep metrics that have no value. Screenshots go to a temporary folder
(``DEPTHLAB_SCREENSHOTS=DIR`` keeps them in DIR)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from helpers.browser import screenshot_dir
from test_report import synthetic_record

from depthlab.experiments.store import Store
from depthlab.playground.server import Background

PHONE = {"width": 375, "height": 667}
DESKTOP = {"width": 1400, "height": 1000}
FITS = "document.documentElement.scrollWidth <= window.innerWidth"


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    return screenshot_dir(tmp_path_factory.mktemp("ui_screenshots"))


class _Page:
    """A page in its own browser context that records page errors, console errors and failed
    requests; ``close()`` asserts there were none."""

    def __init__(self, browser, url: str, viewport: dict) -> None:
        self.context = browser.new_context(viewport=viewport)
        self.pg = self.context.new_page()
        self.problems: list[str] = []
        self.pg.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        self.pg.on("console", lambda m: self.problems.append(f"console: {m.text}")
                   if m.type == "error" else None)
        self.pg.on("requestfailed", lambda r: self.problems.append(f"failed: {r.url}"))
        self.pg.goto(url)

    def close(self) -> None:
        self.context.close()
        assert not self.problems, self.problems


def _measured(pg, timeout: int = 60_000) -> None:
    pg.wait_for_function("document.getElementById('grad-summary').dataset.step !== ''",
                         timeout=timeout)


# -- the playground --------------------------------------------------------------------------
def test_the_playground_fits_a_phone_screen(browser, server, shots):
    # was: the controls (290 px) beside panels of at least 390 px: 692 px of page on a
    # 375 px screen, every panel cut at the right edge
    p = _Page(browser, server.url, PHONE)
    _measured(p.pg)
    p.pg.screenshot(path=str(shots / "playground_phone.png"), full_page=True)
    assert p.pg.evaluate(FITS), p.pg.evaluate("document.documentElement.scrollWidth")
    # every panel and the decision boundary lie inside the screen
    right = p.pg.eval_on_selector_all(
        ".panel, canvas#boundary, aside#controls",
        "els => Math.max(...els.map(e => e.getBoundingClientRect().right))")
    assert right <= PHONE["width"], right
    p.close()


def test_keyboard_only_tab_enter_space_and_a_visible_focus(browser, server, shots):
    p = _Page(browser, server.url, DESKTOP)
    pg = p.pg
    _measured(pg)
    pg.evaluate("document.activeElement.blur()")
    order = []
    for _ in range(4):
        pg.keyboard.press("Tab")
        order.append(pg.evaluate("document.activeElement.id"))
    assert order == ["play", "pause", "step", "reset"], order
    # every control has a name a screen reader can say (a label, text or aria-label)
    unnamed = pg.evaluate("""Array.from(document.querySelectorAll(
        'button, input, select, a, canvas')).filter(e => !(e.labels && e.labels.length) &&
        !e.textContent.trim() && !e.getAttribute('aria-label')).map(e => e.outerHTML)""")
    assert not unnamed, unnamed
    pg.keyboard.press("Shift+Tab")
    pg.keyboard.press("Shift+Tab")
    pg.keyboard.press("Shift+Tab")
    assert pg.evaluate("document.activeElement.id") == "play"
    ring = pg.evaluate("(() => { const s = getComputedStyle(document.activeElement);"
                       " return [s.outlineStyle, parseFloat(s.outlineWidth)]; })()")
    assert ring[0] != "none" and ring[1] >= 2, ring
    pg.screenshot(path=str(shots / "playground_focus_ring.png"),
                  clip={"x": 0, "y": 0, "width": 300, "height": 90})
    pg.keyboard.press("Enter")
    pg.wait_for_selector("body[data-state=running]", timeout=5000)
    # the play button's title promises Space: was a tooltip only, Space did nothing
    assert "Space" in pg.get_attribute("#play", "title")
    pg.evaluate("document.activeElement.blur()")
    pg.keyboard.press("Space")
    pg.wait_for_selector("body[data-state=paused]", timeout=5000)
    pg.keyboard.press("Space")
    pg.wait_for_selector("body[data-state=running]", timeout=5000)
    # Space inside a text field types a space: it neither plays nor pauses
    pg.focus("#f-train-lr")
    pg.keyboard.press("Space")
    assert pg.evaluate("document.body.dataset.state") == "running"
    assert pg.input_value("#f-train-lr").endswith(" ")
    pg.click("#pause")
    pg.wait_for_selector("body[data-state=paused]", timeout=5000)
    p.close()


def test_play_on_a_diverged_run_does_not_claim_to_be_running(browser, server, shots):
    # was: the label said RUNNING (set as play was pressed) while the server refused to train
    p = _Page(browser, server.url + "?model.activation=relu&model.init=normal&train.lr=10"
              "&model.width=32", DESKTOP)
    pg = p.pg
    _measured(pg)
    pg.click("#play")
    banner = pg.locator("#diverged")
    banner.wait_for(state="visible", timeout=30_000)
    # was: "training diverged at step 2 (epoch 1): training diverged at step 2 (epoch 1): ..."
    assert banner.text_content().count("training diverged") == 1, banner.text_content()
    # the last measurement's gradients overflowed: said in words, not "layer 1 -"
    summary = pg.locator("#grad-summary").text_content()
    assert " - " not in summary + " " and "-," not in summary, summary
    # was: ticks 3.5e5, 4e5, 4.5e5 of the exploding loss all read "4e+5" or "5e+5"
    ticks = pg.evaluate("[350000, 400000, 450000, 2.5e-4, 3e-4].map(tick)")
    assert len(set(ticks)) == 5, ticks
    # the step axis of one or two steps: whole steps only (was 0, 0.2, 0.4, ... 1)
    splits = pg.evaluate("S.plots['plot-loss'].axes[0]._splits")
    assert splits and all(float(v).is_integer() for v in splits), splits
    pg.click("#play")
    pg.locator("#message").wait_for(state="visible")
    assert "press reset" in pg.locator("#message").text_content()
    pg.wait_for_selector("body[data-state=diverged]")
    assert pg.locator("#state").text_content() == "diverged"
    pg.screenshot(path=str(shots / "playground_play_after_divergence.png"))
    pg.click("#reset")  # reset trains again
    _measured(pg)
    pg.wait_for_selector("body[data-state=paused]", timeout=10_000)
    p.close()


def test_gradients_that_underflow_to_zero_are_named_not_silently_missing(browser, server,
                                                                        shots):
    # a 200-layer sigmoid net with N(0, 1) weights: the gradient of the first ~80 layers is
    # below float32's smallest number; the log-scale line just stopped, unexplained
    p = _Page(browser, server.url + "?model.depth=200&model.width=8&model.activation=sigmoid"
              "&model.init=normal", DESKTOP)
    pg = p.pg
    _measured(pg)
    zero = int(pg.get_attribute("#grad-summary", "data-zero"))
    assert zero > 10, zero
    note = pg.locator("#grad-summary .zero").text_content()
    assert "exactly 0 in layers 1-" in note and "float32" in note, note
    pg.locator("#panel-grad").screenshot(path=str(shots / "playground_zero_gradients.png"))
    assert pg.locator("#update-note").text_content() == "measured from the first step on"
    # a healthy net has no such note
    pg.click("button[data-preset=he]")
    pg.wait_for_function("new URLSearchParams(location.search).get('model.init') === "
                         "'he_normal'", timeout=30_000)
    _measured(pg)
    assert pg.locator("#grad-summary .zero").count() == 0
    assert pg.get_attribute("#grad-summary", "data-zero") == "0"
    p.close()


# -- reports ---------------------------------------------------------------------------------
def _report(folder: Path, records) -> Path:
    from depthlab.report import write_report

    with Store(folder) as store:
        for r in records:
            store.add_run(r)
    return write_report(folder)


def test_a_report_fits_a_phone_screen(browser, shots, tmp_path):
    # was: figure grids of columns at least 540 px wide: 587 px of page on a 375 px screen
    # and a closed run whose name has no space to wrap at (a sweep point's name) was wider
    # than the screen
    long = dataclasses.replace(synthetic_record("nm", sweep=None, depth=2, probes=False),
                               name="teach:activation=sigmoid,init=glorot_uniform,lr=0.1")
    path = _report(tmp_path, [synthetic_record("f1", status="failed", sweep=None,
                                               probes=False),
                              synthetic_record("ok", sweep=None, depth=3, probes=False), long])
    p = _Page(browser, path.resolve().as_uri(), PHONE)
    p.pg.screenshot(path=str(shots / "report_phone.png"), full_page=True)
    assert p.pg.evaluate(FITS), p.pg.evaluate("document.documentElement.scrollWidth")
    widths = p.pg.eval_on_selector_all("figure img", "els => els.map(e => "
                                       "e.getBoundingClientRect().right)")
    assert widths and max(widths) <= PHONE["width"], widths
    assert "ValueError: boom" in p.pg.locator(".alert").first.text_content()
    p.close()


def test_long_run_names_stay_distinct_in_the_legend(tmp_path, shots):
    from depthlab import plot
    from depthlab.report import figures

    stem = "a-very-long-run-name-that-a-student-typed-" * 3
    runs = {stem + "1": synthetic_record("l1", sweep=None).probes,
            stem + "2": synthetic_record("l2", sweep=None, depth=6).probes}
    fig = plot.gradient_per_layer(runs)
    texts = [t for leg in fig.legends for t in (x.get_text() for x in leg.get_texts())]
    # was: both names drawn in full and cut by the figure's edge at the same character
    runs_shown = [t for t in texts if "theory" not in t]
    assert len(runs_shown) == 2 and len(set(runs_shown)) == 2, runs_shown
    assert runs_shown[0].endswith("1") and runs_shown[1].endswith("2"), runs_shown
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    right = max(t.get_window_extent(renderer).x1 for leg in fig.legends
                for t in leg.get_texts())
    assert right <= fig.bbox.x1, (right, fig.bbox.x1)  # the names end inside the figure
    (shots / "report_long_names_legend.png").write_bytes(figures.figure_png(fig))


def test_category_ticks_of_names_sharing_a_long_start_stay_distinct():
    import pandas as pd

    from depthlab.report import figures

    names = [f"{'experiment-with-a-long-common-prefix-' * 2}{k}" for k in range(3)]
    runs = pd.DataFrame({"run": names, "val_acc": [0.5, 0.6, 0.7],
                         "status": ["finished"] * 3})
    fig = figures.sweep_bars(runs, "run")
    ticks = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert len(set(ticks)) == 3 and all(len(t) <= figures.MAX_TICK_CHARS for t in ticks), ticks
    assert figures.cut_labels(["x" * 40, "x" * 40], 10) == ["xxxxx…xxxx", "xxxxxxx…#1"]


def test_a_metric_without_a_value_is_not_called_diverged_or_failed(browser, shots, tmp_path):
    # finished runs whose val_acc was NaN or inf (stored as null): the hatched bars said
    # "every run there diverged or failed", and each badge says "finished"
    records = []
    for k, lr in enumerate((0.01, 0.1, 1.0)):
        r = synthetic_record(f"n{k}", lr=lr, probes=False)
        bad = {0: float("nan"), 2: float("inf")}
        records.append(dataclasses.replace(r, metrics={**r.metrics,
                                                       "val_acc": bad.get(k, 0.8)}))
    path = _report(tmp_path, records)
    p = _Page(browser, path.resolve().as_uri(), DESKTOP)
    caps = p.pg.eval_on_selector_all("figure", "els => els.map(f => [f.querySelector('h3')"
                                     ".textContent, f.querySelector('figcaption').textContent])")
    cap = dict(caps)["val_acc by train.lr"]
    assert "finished without a finite value (n/a)" in cap, cap
    assert "full grid" not in cap  # one swept key: nothing to form a grid with
    p.pg.locator("figure", has_text="val_acc by train.lr").screenshot(
        path=str(shots / "report_metric_without_value.png"))
    p.close()


def test_doctor_findings_of_an_earlier_setup_are_marked(browser, server, shots, monkeypatch):
    # was: after changing the network the panel kept the old network's findings (and their
    # "apply" buttons) with nothing to say they describe another setup
    from depthlab.playground import app as playground_app
    from depthlab.playground.doctor_task import run_doctor

    monkeypatch.setattr(playground_app, "run_doctor",
                        lambda prep, setup, steps=None, stop=None:
                        run_doctor(prep, setup, 20, stop))
    p = _Page(browser, server.url + "?model.depth=3&model.width=8&model.activation=sigmoid"
              "&model.init=normal", DESKTOP)
    pg = p.pg
    _measured(pg)
    pg.click("#doctor")
    pg.wait_for_selector("#doctor-out .finding", timeout=60_000)
    assert pg.locator("#doctor-out .stale-note").count() == 0
    pg.fill("#f-model-depth", "4")
    pg.press("#f-model-depth", "Tab")
    note = pg.locator("#doctor-out .stale-note")
    note.wait_for(timeout=10_000)
    assert "earlier setup" in note.text_content()
    pg.locator("#panel-doctor").screenshot(path=str(shots / "playground_doctor_stale.png"))
    pg.fill("#f-model-depth", "3")  # back to the examined setup: the findings apply again
    pg.press("#f-model-depth", "Tab")
    note.wait_for(state="detached", timeout=10_000)
    p.close()


def test_quick_changes_while_training_keep_training(browser, server, shots):
    p = _Page(browser, server.url + "?model.depth=3&model.width=8", DESKTOP)
    pg = p.pg
    _measured(pg)
    pg.click("#play")
    pg.wait_for_selector("body[data-state=running]", timeout=5000)
    # was: the second change was sent while the first one's network was loading, with
    # "play" read off the state label ("loading"): training stopped
    for depth in ("5", "2", "4"):
        pg.fill("#f-model-depth", depth)
        pg.press("#f-model-depth", "Tab")
    pg.select_option("#f-model-activation", "relu")
    pg.select_option("#f-model-activation", "selu")
    pg.wait_for_function("S.ready && S.ready.config.model.activation === 'selu' && "
                         "S.ready.n_layers === 4 && S.last && S.last.step > 0", timeout=30_000)
    pg.wait_for_selector("body[data-state=running]", timeout=10_000)
    # a refused value says which setup is still on show
    pg.fill("#f-train-lr", "-1")
    pg.press("#f-train-lr", "Tab")
    msg = pg.locator("#message")
    msg.wait_for(state="visible", timeout=10_000)
    assert "train.lr" in msg.text_content() and "last accepted setup (train.lr = 0.05)" \
        in msg.text_content(), msg.text_content()
    pg.screenshot(path=str(shots / "playground_refused_value_while_training.png"))
    pg.click("#pause")
    p.close()


def test_report_tables_sort_from_the_keyboard(browser, shots, tmp_path):
    # was: the headers sorted on a mouse click only; Tab never reached them
    path = _report(tmp_path, [synthetic_record(f"k{k}", lr=lr, val_acc=acc, probes=False)
                              for k, (lr, acc) in enumerate([(0.01, 0.7), (0.1, 0.9),
                                                             (1.0, 0.8)])])
    p = _Page(browser, path.resolve().as_uri(), DESKTOP)
    pg = p.pg
    table = "table.sortable[id^=runs-table]"
    for _ in range(60):
        pg.keyboard.press("Tab")
        if pg.evaluate("(() => { const e = document.activeElement; return e.tagName === 'TH'"
                       " && e.textContent.trim() === 'val acc'; })()"):
            break
    else:
        raise AssertionError("Tab never reached the 'val acc' header of the runs table")
    pg.keyboard.press("Enter")
    assert pg.evaluate("document.activeElement.getAttribute('aria-sort')") == "ascending"
    col = pg.evaluate(f"""Array.from(document.querySelectorAll('{table} thead th'))
                         .findIndex(h => h.textContent.trim() === 'val acc')""")
    values = pg.eval_on_selector_all(f"{table} tbody tr",
                                     f"rows => rows.map(r => r.cells[{col}].textContent)")
    assert values == ["0.7", "0.8", "0.9"], values
    pg.keyboard.press("Space")
    values = pg.eval_on_selector_all(f"{table} tbody tr",
                                     f"rows => rows.map(r => r.cells[{col}].textContent)")
    assert values == ["0.9", "0.8", "0.7"], values
    pg.locator(table).screenshot(path=str(shots / "report_sorted_by_keyboard.png"))
    p.close()


def test_stopping_the_server_does_not_wait_for_a_running_doctor(monkeypatch):
    # was: the doctor ran in the event loop's executor, which the server joins on the way
    # out: Ctrl-C during a 1000-layer doctor took 27 s (the rest of the doctor's run)
    import json
    import threading
    import time

    from websockets.sync.client import connect

    from depthlab.playground import app as playground_app

    release, started = threading.Event(), threading.Event()

    def long_doctor(prep, setup, steps=None, stop=None):
        started.set()
        release.wait(60)  # a doctor run of a minute
        return {}

    monkeypatch.setattr(playground_app, "run_doctor", long_doctor)
    bg = Background()
    try:
        with connect(bg.url.replace("http://", "ws://") + "ws") as ws:
            ws.send(json.dumps({"cmd": "setup", "query": {"model.depth": "2",
                                                          "model.width": "4"}}))
            while json.loads(ws.recv(timeout=30))["type"] != "ready":
                pass
            ws.send(json.dumps({"cmd": "doctor"}))
            assert started.wait(30)
            t0 = time.monotonic()
            bg.stop()  # what Ctrl-C does: uvicorn's should_exit
            waited = time.monotonic() - t0
        assert not bg.thread.is_alive() and waited < 8, waited
    finally:
        release.set()


def test_a_step_activation_says_why_its_panels_are_empty(browser, server, shots):
    # the step function's derivative is 0: no gradient, no update; the log-scale panels were
    # empty boxes and the ratio read "first / last = -"
    p = _Page(browser, server.url + "?model.depth=3&model.width=8&model.activation=step",
              DESKTOP)
    pg = p.pg
    _measured(pg)
    summary = pg.locator("#grad-summary").text_content()
    # (round 18b: "no ratio", was "undefined")
    assert "first / last = no ratio" in summary and "exactly 0 in layers 1-3" in summary
    assert "zero derivative" in summary, summary
    pg.click("#step")
    pg.wait_for_function("S.last && S.last.step >= 1", timeout=30_000)
    pg.wait_for_function("document.getElementById('update-note').textContent"
                         ".startsWith(\"no hidden layer's weights changed\")", timeout=10_000)
    pg.screenshot(path=str(shots / "playground_step_activation.png"), full_page=True)
    p.close()


def test_a_run_without_percentiles_or_accuracy_gets_no_empty_figure(tmp_path):
    # a depthlab.torch Watch run records the loss and no percentiles: the report showed an
    # empty "Pre-activation percentiles" box and a caption pointing at an empty accuracy panel
    import re

    from depthlab.report import build

    r = synthetic_record("w1", sweep=None)
    probes = r.probes[~r.probes["quantity"].str.startswith("pre_p")]
    text = _report(tmp_path, [dataclasses.replace(r, probes=probes, epochs=None)]).read_text()
    titles = re.findall(r"<figure[^>]*><h3>([^<]*)</h3>", text)
    assert build.FIG_PERCENTILES not in titles and build.FIG_ACTIVATIONS in titles, titles
    # round 10: no empty panel; round 11: its metrics hold a final val_acc, which the caption
    # no longer denies
    assert "at the end only (above), so no accuracy curve is drawn" in text
    full = _report(tmp_path / "with", [synthetic_record("w2", sweep=None)]).read_text()
    assert build.FIG_PERCENTILES in full and build.FIG_TRAINING_CAP in full


def test_a_busy_port_is_refused_in_one_line(capsys):
    import socket

    from helpers.cli import assert_one_line_error, run_cli

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        code, out, err = run_cli(capsys, "playground", "--no-browser", "--port", str(port))
    line = assert_one_line_error(code, err, f"127.0.0.1:{port}", "in use")
    assert "cannot listen" in line and out == "", (line, out)


def test_a_presets_explanation_goes_when_the_setup_changes(browser, server):
    # was: "Var(W) = 2 / fan_in makes up for ReLU ..." stayed under the controls after the
    # activation was changed to sigmoid
    p = _Page(browser, server.url + "?model.depth=3&model.width=8", DESKTOP)
    pg = p.pg
    _measured(pg)
    pg.click("button[data-preset=he]")
    pg.wait_for_function("document.getElementById('preset-why').textContent.includes('ReLU')",
                         timeout=10_000)
    pg.select_option("#f-model-activation", "sigmoid")
    pg.wait_for_function("new URLSearchParams(location.search).get('model.activation') === "
                         "'sigmoid'", timeout=30_000)
    assert pg.locator("#preset-why").text_content() == ""
    p.close()


def test_after_the_server_stopped_play_does_not_claim_to_run(browser):
    # was: the page said "lost the connection", yet play turned the label to RUNNING
    bg = Background()
    try:
        p = _Page(browser, bg.url + "?model.depth=2&model.width=4", DESKTOP)
        _measured(p.pg)
    finally:
        bg.stop()
    p.pg.wait_for_selector("body[data-state=disconnected]", timeout=10_000)
    p.pg.click("#play", force=True)  # disabled once disconnected: forced, it does nothing
    assert p.pg.evaluate("document.body.dataset.state") == "disconnected"
    assert "reload" in p.pg.locator("#message").text_content()
    p.problems.clear()  # the lost WebSocket is logged as a console error: expected here
    p.close()


def test_layer_axis_labels_fit_a_phone_wide_plot(browser, server, shots):
    # was: "nonlinearity (two per residual block; input left)" ran past the plot's edge
    p = _Page(browser, server.url + "?model.depth=20&model.width=8&model.residual=true"
              "&model.batchnorm=true&model.activation=relu&model.init=he_normal", PHONE)
    pg = p.pg
    _measured(pg)
    sizes = pg.evaluate("""['plot-grad', 'plot-sat', 'plot-update'].map((id) => {
        const u = S.plots[id], c = document.createElement('canvas').getContext('2d');
        c.font = u.axes[0].labelFont[0];
        // the label is centred under the plotting area: its right end must be on the canvas
        const w = c.measureText(u.axes[0].label).width;
        return [u.axes[0].label, u.bbox.left + u.bbox.width / 2 + w / 2,
                u.ctx.canvas.width]; })""")
    for label, right, canvas in sizes:
        assert label.startswith("nonlinearity") and right <= canvas, (label, right, canvas)
    pg.locator("#panel-sat").screenshot(path=str(shots / "playground_phone_axis_label.png"))
    p.close()


def test_a_double_click_on_doctor_starts_one_doctor(browser, server, monkeypatch):
    # was: the button stayed enabled until the server's answer, so a double click sent two
    # commands and the page showed "the doctor is already running" as an error
    from depthlab.playground import app as playground_app
    from depthlab.playground.doctor_task import run_doctor

    calls = []

    def counted(prep, setup, steps=None, stop=None):
        calls.append(1)
        return run_doctor(prep, setup, 20, stop)

    monkeypatch.setattr(playground_app, "run_doctor", counted)
    p = _Page(browser, server.url + "?model.depth=2&model.width=4", DESKTOP)
    pg = p.pg
    _measured(pg)
    pg.dblclick("#doctor")
    pg.wait_for_selector("#doctor-out .finding, #doctor-out .healthy", timeout=60_000)
    assert pg.locator("#message").is_hidden(), pg.locator("#message").text_content()
    assert pg.locator("#doctor").is_enabled() and len(calls) == 1
    p.close()


def test_the_gradient_flow_table_says_why_a_diverged_run_has_no_end_ratio(browser, tmp_path,
                                                                         monkeypatch):
    # was: an empty "ratio at end" cell beside "shrinking: ..." (read as "not measured")
    from depthlab.report import build

    # the table's words are under test, not the two runs' figures: not drawn (seconds each)
    monkeypatch.setattr(build._Pngs, "add", lambda self, name, fn, *a, **k: b"")
    path = _report(tmp_path, [synthetic_record("d1", status="diverged", sweep=None, depth=5),
                              synthetic_record("ok", sweep=None, depth=3)])
    p = _Page(browser, path.resolve().as_uri(), DESKTOP)
    rows = p.pg.eval_on_selector_all(
        "h3:has-text('Gradient flow') + p + div table tbody tr",
        "rows => rows.map(r => Array.from(r.cells).map(c => c.textContent))")
    ends = {row[0]: row[2] for row in rows}
    # its last finite ratio and the step it was measured at (was 'none (diverged)')
    assert re.fullmatch(r"[0-9.e+-]+ at step \d+, then not finite", ends["depth5-lr0.1"]), rows
    assert float(ends["depth3-lr0.1"]) > 0, rows
    p.close()


def test_the_activations_over_training_panel_says_which_colour_is_which_layer(browser, server,
                                                                            shots):
    # was: six coloured lines and no legend at all
    p = _Page(browser, server.url + "?model.depth=10&model.width=8", DESKTOP)
    pg = p.pg
    _measured(pg)
    shown = pg.eval_on_selector_all(
        "#plot-evo .u-legend .u-series",
        "rows => rows.filter(r => r.offsetParent !== null).map(r => r.textContent.trim())")
    layers = pg.evaluate("S.ready.hist_layers.map(l => `layer ${l}`)")
    assert shown == layers, (shown, layers)
    pg.locator("#panel-evo").screenshot(path=str(shots / "playground_evo_legend.png"))
    p.close()


def test_the_first_training_step_is_drawn(browser, server):
    # was: a line needs two points, and the train loss has none at step 0: after "step" the
    # loss panel showed no train loss at all
    p = _Page(browser, server.url + "?model.depth=3&model.width=8", DESKTOP)
    pg = p.pg
    _measured(pg)
    pg.click("#step")
    pg.wait_for_function("S.last && S.last.step >= 1 && S.plots['plot-loss'].data[1]"
                         ".filter(v => v !== null).length === 1", timeout=30_000)
    # uPlot draws on the next animation frame: a fixed 100 ms can be short on a loaded host,
    # so the pixels are looked at until they are drawn (or 10 s have passed)
    ink = """(() => {
        const u = S.plots['plot-loss'], d = u.data, i = d[1].findIndex(v => v !== null);
        const x = Math.round(u.valToPos(d[0][i], 'x', true));
        const y = Math.round(u.valToPos(d[1][i], 'y', true));
        const px = u.ctx.getImageData(x - 6, y - 6, 13, 13).data;
        let n = 0;  // pixels of the train loss's colour #1f5fa8 around its one value
        for (let k = 0; k < px.length; k += 4) {
          if (Math.abs(px[k] - 31) < 40 && Math.abs(px[k + 1] - 95) < 40 &&
              Math.abs(px[k + 2] - 168) < 40 && px[k + 3] > 100) n++;
        }
        return n; })()"""
    inked = pg.evaluate(ink)
    for _ in range(100):
        if inked >= 5:
            break
        pg.wait_for_timeout(100)
        inked = pg.evaluate(ink)
    assert inked >= 5, inked
    p.close()


def test_the_status_line_keeps_each_item_on_one_line(browser, server):
    # was: at 701 px "step 0, epoch" / "0" and "0.0" / "updates/s" split over two lines
    for width in (701, PHONE["width"]):
        p = _Page(browser, server.url + "?model.depth=2&model.width=4",
                  {"width": width, "height": 800})
        _measured(p.pg)
        lines = p.pg.eval_on_selector_all("#status > span", """els => els.filter(e =>
            e.textContent.trim()).map(e => [e.textContent, Math.round(e.getBoundingClientRect()
            .height / parseFloat(getComputedStyle(e).lineHeight || 17))])""")
        assert all(n <= 1 for _, n in lines), (width, lines)
        p.close()


def test_on_a_phone_the_transport_buttons_stay_at_hand_below_the_panels(browser, server,
                                                                        shots):
    # was: the panels follow the controls, so play and pause scrolled away as soon as one
    # looked at a plot
    p = _Page(browser, server.url + "?model.depth=3&model.width=8", PHONE)
    pg = p.pg
    _measured(pg)
    pg.locator("#panel-loss").scroll_into_view_if_needed()
    assert pg.evaluate("window.scrollY") > 500
    box = pg.locator("#play").bounding_box()
    assert box and 0 <= box["y"] and box["y"] + box["height"] <= PHONE["height"], box
    pg.click("#play")  # not covered by anything
    pg.wait_for_selector("body[data-state=running]", timeout=5000)
    pg.screenshot(path=str(shots / "playground_phone_transport.png"))
    pg.click("#pause")
    # the bar covers nothing: the end of the page scrolls clear of it
    pg.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    last = pg.locator("#panel-doctor").bounding_box()
    bar = pg.locator("#transport").bounding_box()
    assert last["y"] + last["height"] <= bar["y"] + 1, (last, bar)
    p.close()
