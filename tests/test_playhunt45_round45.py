"""Round 45 (playhunt45): the live playground as a learner meets it. Each test failed before its
fix. Screenshots go to a temporary folder (``DEPTHLAB_SCREENSHOTS=DIR`` keeps them in DIR)."""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request

import pytest
from helpers.browser import checked_page, screenshot_dir
from websockets.sync.client import connect

from depthlab.playground.server import Background

DIVERGES = {"model.activation": "relu", "model.init": "he_normal", "train.lr": "10",
            "model.depth": "6", "model.width": "32"}
"""A setup whose loss is not finite within a few steps (relu + He at lr 10)."""


@pytest.fixture(scope="module")
def server():
    with Background(memory_limit=256 * 2**20) as bg:
        yield bg


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    return screenshot_dir(tmp_path_factory.mktemp("playhunt45"))


def _receive_until(ws, predicate, timeout: float = 60.0) -> list[dict]:
    """The messages received up to and including the first that ``predicate`` accepts."""
    deadline = time.monotonic() + timeout
    got: list[dict] = []
    while True:
        m = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
        got.append(m)
        if predicate(m):
            return got


def _ws(server):
    return connect(server.url.replace("http://", "ws://") + "ws")


# -- pause on a run that diverged --------------------------------------------------------------
def test_pause_on_a_diverged_run_is_answered_with_its_state_not_an_error(server):
    # was: a learner who pressed pause once the run had diverged (the natural "stop it") got a
    # red alert "nothing to train: fix the setup or press reset" above the divergence's own
    # explanation; play and step on it still say so (there is nothing to train)
    with _ws(server) as ws:
        ws.send(json.dumps({"cmd": "setup", "query": DIVERGES, "play": True}))
        _receive_until(ws, lambda m: m["type"] == "diverged")
        ws.send(json.dumps({"cmd": "pause", "press": 7}))
        said = _receive_until(ws, lambda m: m["type"] == "state" and m.get("press") == 7)
        assert [m for m in said if m["type"] == "error"] == [], said
        assert said[-1]["state"] == "diverged"
        ws.send(json.dumps({"cmd": "play", "press": 8}))
        said = _receive_until(ws, lambda m: m["type"] == "state" and m.get("press") == 8)
        assert any(m["type"] == "error" and "nothing to train" in m["message"] for m in said)
        assert said[-1]["state"] == "diverged"


def test_the_page_keeps_the_divergence_and_no_alert_when_pause_is_pressed_after_it(server, shots,
                                                                                   browser):
    query = urllib.parse.urlencode(DIVERGES)
    with checked_page(browser, 1280, 800) as pg:
        pg.goto(server.url + "?" + query)
        pg.wait_for_function("document.getElementById('grad-summary').dataset.step !== ''")
        pg.click("#play")
        pg.wait_for_function("!document.getElementById('diverged').hidden")
        pg.click("#pause")
        pg.wait_for_function("document.getElementById('state').textContent === 'diverged'")
        time.sleep(1.0)  # the server's answer to the press
        pg.screenshot(path=str(shots / "playhunt45_pause_after_divergence.png"))
        assert pg.evaluate("document.getElementById('message').hidden"), \
            pg.inner_text("#message")
        assert pg.inner_text("#state").lower() == "diverged"
        assert "training diverged at step" in pg.inner_text("#diverged")


# -- a setting given twice in a link or a request -------------------------------------------
def _get(server, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(server.url + path, timeout=60) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_a_setting_given_twice_with_different_values_is_refused_naming_them(server):
    # was: /api/check?train.lr=0.1&train.lr=5 said ok and the export wrote lr = 5.0 (the last
    # value taken silently, the first one read by whoever looked at the link)
    status, body = _get(server, "api/check?train.lr=0.1&train.lr=5")
    answer = json.loads(body)
    assert status == 200 and answer["ok"] is False and answer["key"] == "train.lr"
    assert answer["message"] == ("train.lr is given 2 different values ('0.1', '5'); "
                                 "expected one")
    status, body = _get(server, "api/export?model.depth=3&model.depth=4")
    assert status == 400 and "model.depth is given 2 different values ('3', '4')" in body
    # the same value twice is one value
    status, body = _get(server, "api/check?model.depth=3&model.depth=3")
    assert json.loads(body)["ok"] is True
    status, body = _get(server, "api/export?model.depth=3&model.depth=3")
    assert status == 200 and "depth = 3\n" in body
    status, body = _get(server, "api/export?train.lr=0.1&train.lr=0.10")
    assert status == 200 and "lr = 0.1\n" in body
    # a preset sets the depth anyway: the doubled value does not stop it
    status, body = _get(server, "api/preset?name=he&model.depth=3&model.depth=4")
    assert json.loads(body)["ok"] is True
    # and over the WebSocket, as the page sends a doubled link's values
    with _ws(server) as ws:
        ws.send(json.dumps({"cmd": "setup", "query": {"train.seed": ["1", "2"]}}))
        m = _receive_until(ws, lambda m: m["type"] in ("error", "accepted"))[-1]
        assert m["type"] == "error" and m["key"] == "train.seed", m
        assert "train.seed is given 2 different values ('1', '2')" in m["message"]


def test_one_value_of_a_setting():
    from depthlab.playground.setup import SetupError, one_value, parse_setup

    assert one_value("train.lr", "0.1") == "0.1" and one_value("train.lr", ["0.1"]) == "0.1"
    assert one_value("train.lr", ["0.1", " 0.1"]) == "0.1"
    with pytest.raises(SetupError, match=r"^model.width is given 5 different values "
                                         r"\('1', '2', '3', '4', \.\.\.\); expected one$"):
        one_value("model.width", [str(i) for i in range(1, 6)])
    assert parse_setup({"model.depth": ["3", "3"]})["model.depth"] == 3
    # one value written two ways is one value; a bad one among them is named as it is alone
    assert parse_setup({"train.lr": ["0.1", "0.10", "1e-1"]})["train.lr"] == 0.1
    assert parse_setup({"model.activation": ["ReLU", "relu"]})["model.activation"] == "relu"
    with pytest.raises(SetupError, match=r"^model.depth = 'abc' is not accepted"):
        parse_setup({"model.depth": ["3", "abc"]})
    with pytest.raises(SetupError, match=r"^model.depth is given no value \(an empty list\); "
                                         r"expected one$"):
        parse_setup({"model.depth": []})
    with pytest.raises(SetupError, match=r"^model.depth = \{'a': 1\} is not accepted"):
        parse_setup({"model.depth": [{"a": 1}]})


def test_a_link_with_a_setting_given_twice_marks_it_and_a_change_starts(server, shots, browser):
    # was: ?train.lr=0.1&train.lr=5 trained at lr 5 with nothing said
    with checked_page(browser, 1280, 800) as pg:
        pg.goto(server.url + "?model.depth=3&train.lr=0.1&train.lr=5")
        pg.wait_for_function("['invalid', 'paused'].includes("
                             "document.getElementById('state').textContent)")
        pg.screenshot(path=str(shots / "playhunt45_link_with_a_doubled_setting.png"))
        assert pg.inner_text("#state").lower() == "invalid"
        assert "train.lr is given 2 different values ('0.1', '5'); expected one" in \
            pg.inner_text("#message")
        assert pg.get_attribute("#f-train-lr", "aria-invalid") == "true"
        pg.fill("#f-train-lr", "0.2")
        pg.press("#f-train-lr", "Tab")
        pg.wait_for_function("document.getElementById('grad-summary').dataset.step !== ''")
        assert pg.evaluate("new URLSearchParams(location.search).getAll('train.lr')") == ["0.2"]
        assert pg.evaluate("document.getElementById('message').hidden")
