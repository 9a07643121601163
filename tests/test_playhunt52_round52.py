"""Round 52 (playhunt52): what learners and teachers see in the playground and the reports,
hunted with a real browser (Playwright + Debian's Chromium) and by looking at the figures.
Each fix's test failed before it."""

from __future__ import annotations

import json
import urllib.error
import urllib.request


def _get(url: str) -> tuple[int, dict]:
    """The status and JSON body of a GET (an HTTP error's too)."""
    try:
        with urllib.request.urlopen(url) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_a_preset_link_naming_two_presets_is_refused_naming_both(server):
    """``/api/preset?name=he&name=glorot`` answered 200 with Glorot's setup (the last name,
    taken silently), where a setting given two values is refused naming both."""
    status, body = _get(server.url + "api/preset?name=he&name=glorot")
    assert status == 400, body
    assert body["ok"] is False
    assert "'he', 'glorot'" in body["message"] and "expected one" in body["message"], body
    # the same name twice is one preset
    status, body = _get(server.url + "api/preset?name=he&name=he")
    assert status == 200 and body["ok"], body
    assert body["query"]["model.activation"] == "relu"
