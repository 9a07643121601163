"""Round 17 of adversarial playground testing (a teacher preparing a class and a learner, in a
real browser).

* the doctor's "apply" changed the controls without a word (the panel then said only that its
  findings were for an earlier setup), and findings of a setup changed since the doctor ran
  silently put back the doctor's other settings too: an lr changed from 0.1 to 0.05 after the
  doctor ran went back to 0.1;
* the gradient panel's theory note dropped the prediction's own terms (wide layers, large
  batches, a white input batch): the batch-norm preset on the 2-D spirals drew a theory line
  3.7x off the measured one at layer 1 (first / last 140 measured, 38 predicted) with nothing
  saying what the prediction assumes, and the page never put the gap into words;
* the naive preset (sigmoid + N(0, 1), 10 layers) said "weights N(0, 1) saturate every sigmoid
  and the gradient shrinks by orders of magnitude towards the input", while its panels showed
  1% to 27% of the units saturated and first / last = 0.08 (12x) at step 0;
* a screen reader announced the buttons as "black right-pointing triangle play", "light
  vertical bar light vertical bar pause" and "staff of aesculapius doctor" (their accessible
  names held the decorative glyphs); the data set's menu was labelled "name" ("name, combobox,
  spirals") and the clusters' input dimension "d";
* reset pressed eight times in a row on the 1000-layer residual preset built eight networks one
  after the other (a network being built cannot be stopped): ready after 15 s, where one build
  takes 2 s;
* while a session loaded its data set (fashion-mnist: 5-9 s on every setup change) the gradient
  panel said "building the network…";
* the doctor pressed from the keyboard dropped the focus to the page's body (its button is
  disabled while it runs, the cancel button goes when it ends): Tab went on from the top of the
  page and Space played the network;

Browser tests use Debian's Chromium (they fail, not skip, without it); screenshots go to a
temporary folder (``DEPTHLAB_SCREENSHOTS=DIR`` keeps them in DIR).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from helpers.browser import checked_page, screenshot_dir, url_param

MEASURED = "document.getElementById('grad-summary').dataset.step !== ''"
DOCTOR_DONE = "!document.getElementById('doctor').disabled && " \
              "document.querySelector('#doctor-out .finding') !== null"
NAIVE = "?model.depth=10&model.width=32&model.activation=sigmoid&model.init=normal&train.lr=0.1"


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    return screenshot_dir(tmp_path_factory.mktemp("round17_screenshots"))


@pytest.fixture()
def page(browser, server):
    with checked_page(browser) as pg:
        yield pg


def _commit(pg, selector: str, value: str) -> None:
    pg.fill(selector, value)
    pg.press(selector, "Tab")


# -- the doctor's apply says what it changed --------------------------------------------------
def test_apply_names_every_control_it_changes(page, server, shots):
    page.goto(server.url + NAIVE)
    page.wait_for_function(MEASURED, timeout=90_000)
    page.click("#doctor")
    page.wait_for_function(DOCTOR_DONE, timeout=120_000)
    # the learner changes the learning rate after the doctor ran
    _commit(page, "#f-train-lr", "0.05")
    page.wait_for_function("new URLSearchParams(location.search).get('train.lr') === '0.05'")
    finding = page.locator("#doctor-out .finding[data-kind=mean_shift]")
    finding.locator("button.apply").click()
    page.wait_for_function("new URLSearchParams(location.search).get('model.activation') "
                           "=== 'tanh'", timeout=30_000)
    note = page.locator("#doctor-out .applied-note")
    note.wait_for(state="visible", timeout=5_000)
    page.locator("#panel-doctor").screenshot(path=str(shots / "round17_applied_note.png"))
    text = note.text_content()
    # was: no word of what changed (only "These findings are for an earlier setup")
    assert "applied the mean_shift prescription: activation sigmoid \u2192 tanh, " \
           "init normal \u2192 glorot_uniform" in text, text
    # the doctor examined lr 0.1: the apply put it back, which the note says
    assert url_param(page, "train.lr") == "0.1"
    assert "back to the setup the doctor examined: lr 0.05 \u2192 0.1" in text, text
    # controls the click did not change are not listed ("dropout 0 -> 0.0")
    assert "dropout" not in text and "l2" not in text, text
    assert note.get_attribute("role") == "status"
    # one note, not the stale note beside it
    assert page.locator("#doctor-out .stale-note").count() == 0


# -- the theory line says what it assumes -----------------------------------------------------
@pytest.mark.parametrize("query", [
    {"model.activation": "relu", "model.init": "he_normal", "model.batchnorm": "true"},
    {"model.activation": "relu", "model.batchnorm": "true", "model.residual": "true",
     "model.depth": "6"},
    {"model.activation": "selu", "model.init": "lecun_normal", "model.depth": "7"},
    {"model.residual": "true", "model.depth": "3", "data.name": "clusters",
     "data.options.d": "9"},
])
def test_the_theory_note_keeps_the_predictions_terms(query):
    from depthlab.experiments.runner import prepare
    from depthlab.playground.prediction import theory_profile
    from depthlab.playground.setup import parse_setup, to_config
    from depthlab.theory import predict_gradients

    config = prepare(to_config(parse_setup(query))).config
    pred = predict_gradients(config["model"])
    assert pred.covered and pred.note
    note = theory_profile(config)["note"]
    # was: "theory at initialization (...), scaled to the last layer's value at step 0 (the
    # 'at init' line)" without "large-width, large-batch limit" or "a white input batch"
    assert note.endswith(f"; the prediction's terms: {pred.note.rstrip('.')}"), note
    assert "scaled to the last layer's value at step 0" in note


BN_SPIRALS = "?model.depth=20&model.width=32&model.activation=relu&model.init=he_normal" \
             "&model.batchnorm=true"


def test_the_theory_note_says_how_far_the_line_is_from_the_measurement(page, server, shots):
    page.goto(server.url + BN_SPIRALS)
    page.wait_for_function(MEASURED, timeout=90_000)
    page.locator("#panel-grad").screenshot(path=str(shots / "round17_theory_gap.png"))
    measured, predicted = page.evaluate(
        "[S.init.grad_std[0] / S.init.grad_std[19], S.theory.relative_std[0]]")
    apart = max(measured / predicted, predicted / measured)
    assert apart > 2, (measured, predicted)  # the gap this test is about
    note = page.locator("#theory-note").text_content()
    # was: the note ended with "(the 'at init' line)"; only the plot showed the lines apart
    assert "At step 0 the measured layer 1 / layer 20 ratio is " in note, note
    fmt = "n => fmt(n)"
    expected = (f"ratio is {page.evaluate(fmt, measured)}, the theory's "
                f"{page.evaluate(fmt, predicted)}")
    # (since round 44 the note gives measured / theory along the layers between the two)
    assert expected in note and note.endswith(f": a factor {page.evaluate(fmt, apart)} apart"), \
        (note, expected)


def test_the_theory_note_says_nothing_of_a_gap_where_the_lines_agree(page, server):
    # 64 input features: the measured ratio is within 10% of the theory's (the same net on the
    # 2-D spirals: 3.7x apart)
    page.goto(server.url + BN_SPIRALS.replace("width=32", "width=128")
              + "&data.name=clusters&data.options.d=64&train.batch_size=128")
    page.wait_for_function(MEASURED, timeout=90_000)
    measured, predicted = page.evaluate(
        "[S.init.grad_std[0] / S.init.grad_std[19], S.theory.relative_std[0]]")
    assert max(measured / predicted, predicted / measured) < 2, (measured, predicted)
    note = page.locator("#theory-note").text_content()
    assert "apart" not in note and note.endswith("(K'(0) = 0.7335, D'(1) = 1)"), note


# -- screen readers ---------------------------------------------------------------------------
def test_the_buttons_accessible_names_are_their_words(page, server, shots):
    page.goto(server.url + "?model.depth=3&model.width=8")
    page.wait_for_function(MEASURED, timeout=90_000)
    page.locator("#controls").screenshot(path=str(shots / "round17_buttons.png"))
    tree = page.locator("#controls").aria_snapshot()
    # was: button "▶ play", button "❙❙ pause", button "⚕ doctor"
    for name in ("play", "pause", "step", "reset", "doctor"):
        assert f'button "{name}"' in tree, tree
        assert page.get_by_role("button", name=name, exact=True).count() == 1, name
    # the glyphs are still shown
    assert page.locator("#play").inner_text().startswith("\u25b6")
    assert page.locator("#doctor").inner_text().startswith("\u2695")


# -- the presets' words match their panels ----------------------------------------------------
@pytest.mark.parametrize("data", ["spirals", "clusters", "digits", "mnist1d"])
@pytest.mark.parametrize("seed", [0, 2])
def test_the_naive_preset_shows_what_it_says(data, seed):
    import numpy as np

    from depthlab.experiments.runner import make_trainer, prepare
    from depthlab.playground.measure import Monitor
    from depthlab.playground.presets import PRESETS, apply_preset
    from depthlab.playground.setup import DEFAULTS, to_config

    # the preset keeps the learner's data set and seed
    setup = apply_preset({**DEFAULTS, "data.name": data, "train.seed": seed}, "naive")
    prep = prepare(to_config(setup))
    ds = prep.data
    trainer = make_trainer(prep, epochs=None, max_steps=10, eval_every=None)
    snap = Monitor(prep.net, ds.x_val, prep.y_val, trainer.loss, ds.x_train,
                   prep.y_train).measure(0)
    why = PRESETS["naive"]["why"]
    assert "orders of magnitude" in why and "every" not in why, why
    g = snap["grad_std"]
    # "shrinks by orders of magnitude": was 0.081 (10 layers, spirals, seed 0)
    assert g[0] / g[-1] < 1e-2, g[0] / g[-1]
    # "many sigmoid units in their flat tails", not every one
    sat = np.asarray(snap["saturated"], dtype=float)
    assert 0.1 < sat.mean() < 0.9 and sat.min() < 0.5, sat


def test_the_data_set_controls_name_what_they_set(page, server, shots):
    page.goto(server.url + "?model.depth=3&model.width=8&data.name=clusters&data.options.d=5")
    page.wait_for_function(MEASURED, timeout=90_000)
    page.locator("#controls").screenshot(path=str(shots / "round17_data_labels.png"))
    # was: combobox "name" and textbox "d"
    assert page.get_by_role("combobox", name="name", exact=True).count() == 0
    data_set = page.get_by_role("combobox", name="data set", exact=True)
    dims = page.get_by_role("textbox", name="input dims (d)", exact=True)
    assert data_set.count() == 1 and dims.count() == 1
    assert data_set.input_value() == "clusters" and dims.input_value() == "5"


# -- keyboard only ----------------------------------------------------------------------------
ACTIVE = "document.activeElement.id || document.activeElement.tagName"


def test_the_doctor_from_the_keyboard_keeps_the_focus_on_its_buttons(page, server, shots):
    page.goto(server.url + "?model.depth=4&model.width=8")
    page.wait_for_function(MEASURED, timeout=90_000)
    page.focus("#doctor")
    page.keyboard.press("Enter")
    # (no wait for the cancel button: a 4x8 network's doctor may answer, and remove it, before
    # a wait sees it; CI on 39e5ea9 timed out there)
    # was: BODY (the disabled doctor button lost it)
    page.wait_for_function(f"({ACTIVE}) === 'doctor-cancel' || "
                           "!document.getElementById('doctor').disabled", timeout=30_000)
    # read in one go: the doctor may answer between two reads (CI: the cancel button still
    # there, the focus already back on the doctor button)
    state = page.evaluate("() => ({active: " + ACTIVE + ", "
                          "running: document.getElementById('doctor').disabled})")
    if state["running"]:  # not answered yet
        assert state["active"] == "doctor-cancel", state
    page.wait_for_function(DOCTOR_DONE.replace(".finding", "p"), timeout=120_000)
    page.locator("#panel-doctor").screenshot(path=str(shots / "round17_doctor_keyboard.png"))
    # was: BODY; Space then played the network
    assert page.evaluate(ACTIVE) == "doctor"
    page.keyboard.press("Tab")
    assert page.evaluate(ACTIVE) == "export"
    # cancelled from the keyboard: the focus comes back to the doctor button as well (a
    # network whose doctor trains long enough to be cancelled)
    page.goto(server.url + "?model.depth=100&model.width=64")
    page.wait_for_function(MEASURED, timeout=90_000)
    # the state follows the first measurement (a loaded host may answer the doctor first)
    page.wait_for_function("document.body.dataset.state !== 'loading'", timeout=10_000)
    page.focus("#doctor")
    page.keyboard.press("Enter")
    page.wait_for_function(f"({ACTIVE}) === 'doctor-cancel'", timeout=30_000)
    page.keyboard.press("Enter")
    page.wait_for_function("!document.getElementById('doctor').disabled", timeout=60_000)
    page.wait_for_function(f"({ACTIVE}) === 'doctor'", timeout=5_000)
    assert page.locator("body").get_attribute("data-state") == "paused"


def test_the_doctor_pressed_with_the_mouse_leaves_the_focus_alone(page, server):
    page.goto(server.url + "?model.depth=4&model.width=8")
    page.wait_for_function(MEASURED, timeout=90_000)
    page.click("#doctor")
    page.wait_for_function(DOCTOR_DONE.replace(".finding", "p"), timeout=120_000)
    # Space still plays: the focus was not moved onto a button
    assert page.evaluate(ACTIVE) == "BODY"
    page.keyboard.press("Space")
    page.wait_for_function("document.body.dataset.state === 'running'", timeout=10_000)


# -- a slow server: presses pile up -----------------------------------------------------------
def test_reset_pressed_again_and_again_builds_one_network(page, server, shots):
    page.goto(server.url + "?model.depth=1000&model.width=16&model.residual=true"
              "&model.batchnorm=true&model.activation=relu&model.init=he_normal")
    page.wait_for_function(MEASURED, timeout=60_000)
    page.evaluate("""() => { window.SEEN = []; const handle0 = S.ws.onmessage;
        S.ws.onmessage = (ev) => { SEEN.push(JSON.parse(ev.data).type); handle0(ev); }; }""")
    page.evaluate("() => { for (let i = 0; i < 8; i++) document.getElementById('reset').click(); }")
    page.wait_for_function("SEEN.includes('ready') && document.body.dataset.state === 'paused' "
                           "&& document.getElementById('grad-summary').dataset.step === '0'",
                           timeout=120_000)
    registry = server.app.state.registry
    deadline = time.monotonic() + 60
    while registry.threads_alive() != 1:  # the replaced sessions' threads end
        assert time.monotonic() < deadline, registry.threads_alive()
        time.sleep(0.05)
    page.screenshot(path=str(shots / "round17_resets.png"))
    seen = page.evaluate("SEEN")
    # was: 8 networks built one after the other ("accepted" 8 times)
    assert seen.count("accepted") <= 2, seen
    assert seen.count("ready") == 1, seen
    assert len(server.app.state.registry.sessions) == 1


def test_the_page_says_the_data_is_loaded_while_a_session_prepares(page, server, monkeypatch):
    from depthlab.playground import session as session_module

    real = session_module.prepare

    def slow(config):  # a data set that takes seconds to load (fashion-mnist: 5-9 s)
        time.sleep(2)
        return real(config)

    monkeypatch.setattr(session_module, "prepare", slow)
    page.goto(server.url + "?model.depth=2&model.width=4")
    page.wait_for_selector("body[data-state=loading]", timeout=10_000)
    # was: "building the network…" while the data set was read
    assert page.locator("#grad-summary").text_content() == \
        "loading the data and building the network\u2026"
    page.wait_for_function(MEASURED, timeout=90_000)
