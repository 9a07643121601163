"""Round 32 (playground32b): the playground as a teacher's lecture on vanishing and exploding
gradients. One browser page (Playwright + Debian's Chromium), kept small for the suite's time."""

from __future__ import annotations

import pytest

pytest.importorskip("playwright")


@pytest.fixture(scope="module")
def page(browser, server):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(server.url + "?data.name=clusters&model.depth=3&model.width=8")
    pg.wait_for_function("document.body.dataset.state === 'paused'", timeout=60_000)
    yield pg
    context.close()
    assert not errors, errors


def test_applying_a_doctor_prescription_drops_the_presets_explanation(page):
    """A teacher picks the Glorot preset (its paragraph explains tanh + glorot_uniform), runs
    the doctor and presses its "apply: activation relu, init he_normal": the controls now read
    relu + he_normal, and the preset's paragraph must not go on explaining a setup the page no
    longer shows (a control changed by hand already cleared it; "apply" left it)."""
    pg = page
    pg.locator("#preset-buttons button", has_text="Glorot").click()
    pg.wait_for_function("document.getElementById('preset-why').textContent.includes('Glorot')"
                         " && new URLSearchParams(location.search).get('model.init')"
                         " === 'glorot_uniform'", timeout=60_000)
    # the doctor's answer for this setup, as the server sends it (the doctor itself trains for
    # seconds; its numbers are not what this test is about)
    pg.evaluate("""() => {
      const q = readControls();
      onDoctor({type: "doctor", query: q, steps: 200,
        baseline: {train_loss: 0.69, val_acc: 0.5, steps: 200, diverged: false},
        findings: [{kind: "vanishing_gradients", severity: "high", layers: [1, 2],
          message: "gradients vanish", evidence: {metric: 7}, verifications: [],
          prescription: {activation: "relu", init: "he_normal"},
          apply: {...q, "model.activation": "relu", "model.init": "he_normal"}}]});
    }""")
    pg.locator("#doctor-out button.apply").click()
    pg.wait_for_function("new URLSearchParams(location.search).get('model.init') === 'he_normal'",
                         timeout=60_000)
    assert pg.input_value('[name="model.activation"]') == "relu"
    why = pg.inner_text("#preset-why")
    assert "glorot" not in why.lower() and "tanh" not in why, why
