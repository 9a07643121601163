"""Round 26 of adversarial playground testing (a teacher preparing a class, in a real browser).

* a link whose setup is refused (binary cross-entropy on 5 clusters): the page marked the loss
  control in red with the reason; pressing play or step (or the doctor) then answered "nothing
  to train: fix the setup or press reset" without a key, which took the red mark and the reason
  off the page (the gradient panel still said "change the control marked in red", none was) and
  offered reset, which restarts nothing when no setup was ever accepted; the doctor said "wait
  until the setup has loaded", a setup that never loads.

Browser tests use Debian's Chromium (they fail, not skip, without it); screenshots go to a
temporary folder (``DEPTHLAB_SCREENSHOTS=DIR`` keeps them in DIR).
"""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path

import pytest
from helpers.browser import checked_page, screenshot_dir
from helpers.ws import receive_matching
from websockets.sync.client import connect

REFUSED = {"data.name": "clusters", "data.options.n_classes": "5",
           "train.loss": "binary_cross_entropy"}


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    return screenshot_dir(tmp_path_factory.mktemp("round26_screenshots"))


@pytest.mark.parametrize("cmd", ["play", "step", "doctor", "reset"])
def test_a_command_on_a_refused_setup_repeats_the_refusal_naming_its_control(server, cmd):
    with connect(server.url.replace("http://", "ws://") + "ws") as ws:
        ws.send(json.dumps({"cmd": "setup", "query": REFUSED}))
        first = receive_matching(ws, lambda m: m["type"] == "error")
        assert first["key"] == "train.loss" and "needs 2 classes" in first["message"]
        ws.send(json.dumps({"cmd": cmd}))
        m = receive_matching(ws, lambda m: m["type"] == "error")
        # was key None and "nothing to train: fix the setup or press reset" (the doctor: "wait
        # until the setup has loaded")
        assert m["key"] == "train.loss", m
        # (reset: no answer at all)
        assert "needs 2 classes" in m["message"] and "press reset" not in m["message"]
        # an accepted setup afterwards trains as before
        ws.send(json.dumps({"cmd": "setup", "query": {**REFUSED, "train.loss": "cross_entropy",
                                                      "model.depth": "2", "model.width": "4"}}))
        receive_matching(ws, lambda m: m["type"] == "ready")
        ws.send(json.dumps({"cmd": "step"}))
        assert receive_matching(ws, lambda m: m["type"] == "update" and m["step"] > 0)["step"] == 1


def test_step_pressed_on_a_refused_link_keeps_the_red_mark_and_the_reason(browser, server,
                                                                           shots):
    with checked_page(browser) as pg:
        pg.goto(server.url + "?" + urllib.parse.urlencode(REFUSED))
        pg.wait_for_selector(".field.invalid[data-key='train.loss']", timeout=20_000)
        # count the server's error answers: the state reads 'invalid' before any press, so
        # waiting for it alone read the page before the press was answered
        pg.evaluate("() => { window.ERRS = 0; const h = handle; "
                    "window.handle = (m) => { if (m.type === 'error') ERRS++; h(m); }; }")
        for button in ("#step", "#play", "#doctor"):
            n = pg.evaluate("ERRS")
            pg.click(button)
            pg.wait_for_function("n => ERRS > n && document.getElementById('state')"
                                 ".textContent.toLowerCase() === 'invalid'", arg=n,
                                 timeout=30_000)
            pg.screenshot(path=str(shots / f"refused_link_after_{button[1:]}.png"))
            # was: no control marked, the message "nothing to train: fix the setup or press
            # reset" under a gradient panel saying "change the control marked in red"
            marked = pg.evaluate("[...document.querySelectorAll('.field.invalid')]"
                                 ".map(e => e.dataset.key)")
            assert marked == ["train.loss"], (button, marked)
            note = pg.locator(".field[data-key='train.loss'] .field-error").text_content()
            assert "needs 2 classes" in note
            assert "needs 2 classes" in pg.text_content("#message")
            assert "press reset" not in pg.text_content("#message")


def test_a_refused_data_set_switch_says_which_data_set_the_panels_still_show(browser, server):
    with checked_page(browser) as pg:
        pg.goto(server.url + "?train.loss=binary_cross_entropy&model.depth=2&model.width=4")
        pg.wait_for_function("document.getElementById('grad-summary').dataset.step !== ''",
                             timeout=20_000)
        pg.select_option("select[name='data.name']", "mnist1d")  # 10 classes: refused
        pg.wait_for_selector(".field.invalid", timeout=10_000)
        message = pg.inner_text("#message")
        assert "needs 2 classes but data set 'mnist1d' has 10" in message, message
        # was "(train.loss = binary_cross_entropy)": the loss the control reads, while the menu
        # read mnist1d over the panels of spirals
        assert message.endswith("Still showing the last accepted setup (data.name = spirals)."), \
            message


CLUSTERS = {"data.name": "clusters", "model.depth": "2", "model.width": "4"}


def test_the_held_out_numbers_are_those_of_the_probe_batch_and_the_page_says_so(server, browser):
    from depthlab.experiments.runner import prepare
    from depthlab.losses import get_loss
    from depthlab.playground.setup import parse_setup, to_config

    with connect(server.url.replace("http://", "ws://") + "ws") as ws:
        ws.send(json.dumps({"cmd": "setup", "query": CLUSTERS}))
        ready = receive_matching(ws, lambda m: m["type"] == "ready")
        first = receive_matching(ws, lambda m: m["type"] == "update")
    assert (ready["probe_rows"], ready["probe_of"], ready["probe_held_out"]) == (300, 500, True)
    # an independent forward of the same network: the page's held-out loss is that of the
    # first 300 held-out rows, not of all 500 (what `depthlab run` reports as val_loss)
    prep = prepare(to_config(parse_setup(CLUSTERS)))
    loss = get_loss("cross_entropy")
    x, y = prep.data.x_val, prep.y_val
    on_300 = float(loss.forward(prep.net.forward(x[:300], training=False), y[:300]))
    on_500 = float(loss.forward(prep.net.forward(x, training=False), y))
    assert first["probe_loss"] == pytest.approx(on_300, rel=1e-5)
    assert abs(on_500 - on_300) > 1e-3 * on_300
    with checked_page(browser) as pg:
        pg.goto(server.url + "?" + urllib.parse.urlencode({**CLUSTERS,
                                                           "model.batchnorm": "true"}))
        pg.wait_for_function("document.getElementById('loss-rows').textContent !== ''",
                             timeout=20_000)
        note = pg.inner_text("#loss-rows")
        # was: no word on which examples "held-out loss" and "held-out acc" were measured on
        assert "on the first 300 of the 500 held-out examples" in note, note
        assert "training mode" in note and "inference mode" in note, note
