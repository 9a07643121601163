"""Round 44 (playhunt44): the live playground and the reports as a learner and a teacher see
them. Each test failed before its fix. Screenshots go to a temporary folder
(``DEPTHLAB_SCREENSHOTS=DIR`` keeps them in DIR)."""

from __future__ import annotations

import pytest
from helpers.browser import checked_page, screenshot_dir

MEASURED = "document.getElementById('grad-summary').dataset.step !== ''"
RESIDUAL = {"model.activation": "relu", "model.init": "he_normal", "model.batchnorm": "true",
            "model.residual": "true", "train.lr": "0.01"}


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    return screenshot_dir(tmp_path_factory.mktemp("playhunt44"))


def _measured(query: dict[str, str]):
    """(grad_std at step 0, the theory profile) as the page takes them, on its probe rows."""
    from depthlab.experiments.runner import make_trainer, prepare
    from depthlab.playground.measure import Monitor
    from depthlab.playground.prediction import theory_profile
    from depthlab.playground.setup import parse_setup, to_config

    prep = prepare(to_config(parse_setup(query)))
    trainer = make_trainer(prep, callbacks=[], epochs=None, max_steps=1, eval_every=None)
    ds = prep.data
    px, py = (ds.x_val, prep.y_val) if prep.y_val is not None else (ds.x_train, prep.y_train)
    mon = Monitor(prep.net, px, py, trainer.loss, ds.x_train, prep.y_train)
    return mon.measure(0)["grad_std"], theory_profile(prep.config, x=mon.x)


# -- the residual preset's theory line: 10.6x apart, and why ------------------------------------
def test_a_residual_batch_norm_net_on_2d_inputs_says_the_gap_is_the_inputs_rank():
    # was: the residual preset (1000 blocks of 16 on the spirals) read "a factor 10.62 apart"
    # and the only reason given was the narrow layers' one draw, whose own example said the gap
    # narrows at larger widths: at 512 units it is still 4.7x, made in the first blocks by the
    # 2-D inputs that the skip path carries into every block
    g, prof = _measured({**RESIDUAL, "model.depth": "20", "model.width": "16"})
    note = prof["inputs"]
    assert note is not None and "the probe rows span 2 dimensions, fewer than the 16 units" in note
    assert "10.6x of 16 (the residual preset)" in note and "4.7x at 200 blocks of 512" in note
    # not said where the inputs span as many dimensions as a layer has units, nor of other nets
    _, digits = _measured({**RESIDUAL, "model.depth": "2", "model.width": "16",
                           "data.name": "digits"})
    assert digits["inputs"] is None
    _, plain = _measured({"model.depth": "3", "model.width": "16"})
    assert plain["inputs"] is None
    # no theory line: the key is there, empty
    _, none = _measured({**RESIDUAL, "model.depth": "2", "model.activation": "identity"})
    assert none["relative_std"] is None and none["inputs"] is None


def test_input_rank_is_the_rank_about_the_mean():
    import numpy as np

    from depthlab.playground.prediction import input_rank, input_rank_note

    rng = np.random.default_rng(0)
    flat = rng.normal(size=(200, 2)) @ rng.normal(size=(2, 10)) + 5.0  # rank 2, offset
    assert input_rank(flat) == 2
    assert input_rank(rng.normal(size=(50, 8))) == 8
    assert input_rank(None) is None and input_rank(np.ones((1, 3))) is None
    assert input_rank(np.array([[np.nan, 1.0], [2.0, 3.0]])) is None
    assert input_rank_note(2, [16, 16], "residual+batchnorm") is not None
    assert input_rank_note(16, [16, 16], "residual+batchnorm") is None
    assert input_rank_note(2, [16, 16], "batchnorm") is None  # the theory's own note says it


def test_the_gap_the_note_blames_on_the_inputs_is_the_inputs():
    # what the note claims, measured: the same residual batch-norm net is 2x or more apart on
    # the 2-feature spirals at 128 units (not a narrow draw), within 2x on 64-feature digits
    q = {**RESIDUAL, "model.depth": "50", "model.width": "128", "train.seed": "0"}
    g, prof = _measured(q)
    spirals = g[0] / g[-1] / prof["relative_std"][0]
    g, prof = _measured({**q, "data.name": "digits"})
    digits = g[0] / g[-1] / prof["relative_std"][0]
    assert spirals > 2.5 and digits < 2, (spirals, digits)


def test_the_residual_theory_note_says_why_and_where_the_line_is_apart(browser, server, shots):
    q = "&".join(f"{k}={v}" for k, v in {**RESIDUAL, "model.depth": "50",
                                          "model.width": "16"}.items())
    with checked_page(browser, 1280, 800) as pg:
        pg.goto(server.url + "?" + q)
        pg.wait_for_function("S.ready && S.ready.n_layers === 99 && document.getElementById("
                             "'theory-note').textContent.includes(' apart')", timeout=120_000)
        pg.locator("#panel-grad").screenshot(path=str(shots / "playhunt44_residual_note.png"))
        note = pg.locator("#theory-note").text_content()
        why = "; part of the gap, at any width, is the inputs': the probe rows span 2 dimensions"
        assert why in note, note
        at = note.index(". At step 0 the measured nonlinearity 1 / nonlinearity 99 ratio is ")
        assert note.index(why) < at and note.index("; the line is the mean over random") < at
        # where along the depth the two curves part, relative to the last layer
        along = note[note.index("(measured / theory along the nonlinearities: "):]
        assert ", 1 at 99): a factor " in along and note.endswith(" apart"), note
        for layer in (1, 10, 50):
            assert f" at {layer}," in along, along
        assert "NaN" not in note and "undefined" not in note


# -- a server restarted: the page reconnects by itself ------------------------------------------
def test_the_page_reconnects_when_the_server_comes_back_and_trains_again(browser, shots):
    from urllib.parse import urlsplit

    from depthlab.playground.server import Background

    # was: "lost the connection to the server; reload the page to reconnect" for ever beside a
    # server that was back on the same port, every button disabled
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    try:
        first = Background()
        port = urlsplit(first.url).port
        try:
            pg.goto(first.url + "?model.depth=3&model.width=8&train.lr=0.02")
            pg.wait_for_function(MEASURED, timeout=90_000)
            pg.fill("#f-train-seed", "7")  # a setting of the learner's, kept through
            pg.press("#f-train-seed", "Enter")
            pg.wait_for_function("new URLSearchParams(location.search).get('train.seed') === "
                                 "'7'", timeout=60_000)
            pg.click("#play")
            pg.wait_for_selector("body[data-state=running]", timeout=30_000)
        finally:
            first.stop()
        pg.wait_for_selector("body[data-state=disconnected]", timeout=15_000)
        msg = pg.locator("#message").text_content()
        assert "trying again every few seconds" in msg and "reload the page" in msg, msg
        with Background(port=port) as again:
            pg.wait_for_selector("body[data-state=running]", timeout=90_000)
            pg.wait_for_function("S.ready !== null && S.last !== null", timeout=90_000)
            pg.screenshot(path=str(shots / "playhunt44_reconnected.png"))
            msg = pg.locator("#message").text_content()
            assert msg.startswith("reconnected to the server: the network was built afresh"), msg
            assert msg.endswith("and trains again"), msg
            assert pg.locator("#message").is_visible()
            for name in ("play", "pause", "step", "reset", "doctor"):
                assert not pg.locator(f"#{name}").is_disabled(), name
            assert pg.input_value("#f-train-seed") == "7"
            assert again.app.state.registry.sessions, "no session on the new server"
            # the new session answers presses (its press count starts at 0 again)
            pg.click("#pause")
            pg.wait_for_selector("body[data-state=paused]", timeout=30_000)
        assert not errors, errors
    finally:
        context.close()


# -- the report's list of runs: where a diverged run diverged -----------------------------------
def _diverged_store(path):
    import numpy as np
    import pandas as pd

    from depthlab.experiments.store import RunRecord, Store

    probes = pd.DataFrame([{"step": s, "layer": k, "quantity": q, "value": 0.1 * k + 0.01 * s}
                           for s in (0, 2) for k in (1, 2)
                           for q in ("act_mean", "act_std", "grad_pre_std")])
    numpy_steps = pd.DataFrame({"step": np.arange(3), "loss": [2.3, 40.0, 9e6]})
    watch_steps = pd.DataFrame({"step": np.arange(6),
                                "loss": [2.3, 50.0, 7e9, np.nan, np.nan, np.inf]})
    with Store(path) as store:
        store.add_run(RunRecord(id="np1", name="numpy-lr10", status="diverged",
                                steps=numpy_steps, probes=probes,
                                divergence={"step": 3, "epoch": 1, "loss": None,
                                            "layer": "dense6", "message": "diverged"}))
        store.add_run(RunRecord(id="tw1", name="torch-nan", status="diverged",
                                steps=watch_steps, probes=probes))
        store.add_run(RunRecord(id="ok1", name="fine", steps=numpy_steps.assign(loss=[2, 1, .5]),
                                probes=probes, metrics={"train_loss": 0.5}))


def test_a_diverged_runs_line_in_the_report_says_where_it_diverged(tmp_path):
    import re

    from depthlab.report import write_report

    # was: "np1 numpy-lr10 diverged" and nothing else in the folded line (a finished run's
    # says its train loss): a sweep's many diverged points had to be opened one by one
    _diverged_store(tmp_path)
    html = write_report(tmp_path).read_text()
    subs = dict(re.findall(r"<summary><code>(\w+)</code>.*?<span class=\"sub\">(.*?)</span>",
                           html))
    assert subs["np1"] == "diverged at step 3 (loss not finite, layer dense6)", subs
    assert subs["tw1"] == "loss not finite from step 3", subs
    assert subs["ok1"] == "train loss 0.5", subs


# -- the doctor's findings on a narrow page: one card per finding -------------------------------
LONG = ("sigmoid activations are not zero-centred: the mean activation reaches 0.63 (layer 6) "
        "in a 20-hidden-layer network, shifting every next layer's input; the probe batch's loss "
        "ended at 2.393, 1.05x a constant prediction's 2.287")
STACKED = """() => { const t = [...document.querySelectorAll('table')].find(
    (t) => t.querySelector('th') && t.querySelector('th').textContent === 'severity');
  const box = t.parentElement.getBoundingClientRect(), r = t.getBoundingClientRect();
  const td = t.querySelector('tbody td:nth-child(4)');
  return { table: r.width, box: box.width, cell: td.getBoundingClientRect().width,
           display: getComputedStyle(td).display,
           head: getComputedStyle(t.querySelector('thead')).display,
           label: getComputedStyle(td, '::before').content, height: r.height }; }"""


@pytest.mark.parametrize("width", [375, 800, 1280])
def test_the_doctors_findings_table_is_one_card_per_finding_on_a_narrow_page(
        browser, tmp_path, shots, width):
    from test_report import synthetic_record

    from depthlab.experiments.store import Store
    from depthlab.report import write_report

    # was: 7 columns 740 px wide in a 281 px sideways-scrolling box at 375 px (706 px at 800),
    # each text column 122 px, the table 1988 px tall for three findings
    payload = {"findings": [
        {"kind": k, "severity": "high", "layers": [1, 20], "message": LONG,
         "evidence": {"chance_loss": 2.287, "metric": 0.6282, "worst_layer": 6},
         "prescription": {"activation": "tanh"}, "prescription_text": LONG}
        for k in ("mean_shift", "saturation", "vanishing_gradients")]}
    with Store(tmp_path) as store:
        store.add_run(synthetic_record("doc000000001", depth=2, sweep=None, findings=payload,
                                       histograms=False))
    html = write_report(tmp_path)
    with checked_page(browser, width, 800) as pg:
        pg.goto(html.as_uri())
        pg.evaluate("document.querySelectorAll('details').forEach((d) => { d.open = true; })")
        got = pg.evaluate(STACKED)
        pg.evaluate("[...document.querySelectorAll('table')].find((t) => t.querySelector('th')"
                    " && t.querySelector('th').textContent === 'severity').scrollIntoView()")
        pg.screenshot(path=str(shots / f"playhunt44_findings_{width}.png"))
    if width <= 900:
        assert got["display"] == "block" and got["head"] == "none", got
        assert got["label"] == '"finding: "', got
        assert got["table"] <= got["box"] + 1, got  # nothing to scroll sideways
        assert got["cell"] >= 0.8 * got["box"], got  # the finding reads across the card
    else:
        assert got["display"] == "table-cell" and got["head"] != "none", got
        assert got["table"] <= got["box"] + 1, got
