"""Round 50 (playhunt50): what learners and teachers see, hunted on new ground: the playground
server's HTTP endpoints driven directly, two tabs, phone and wide windows, and the reports of
torch runs. Each fix's test failed before it."""

from __future__ import annotations

import http.client
import json
from urllib.parse import urlsplit

import pytest


@pytest.fixture(scope="module")
def server():
    from depthlab.playground.server import Background

    with Background(memory_limit=256 * 2**20) as bg:
        yield bg


def _http(server, method: str, path: str, body: bytes | None = None):
    """``(status, content type, body text, Allow header)`` of one request to the server."""
    u = urlsplit(server.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    try:
        conn.request(method, path, body=body)
        r = conn.getresponse()
        return (r.status, r.getheader("content-type") or "", r.read().decode("utf-8", "replace"),
                r.getheader("allow"))
    finally:
        conn.close()


def _message(ctype: str, text: str) -> str:
    """The refusal's message: the JSON API's ``message``, or the text's one line."""
    if ctype.startswith("application/json"):
        body = json.loads(text)
        assert body["ok"] is False
        return body["message"]
    assert text.startswith("depthlab playground: ") and text.count("\n") == 1, text
    return text.removeprefix("depthlab playground: ").strip()


@pytest.mark.parametrize(("path", "json_api"), [
    ("/nope", False), ("/api/nope", True), ("/static/nope.js", False),
    ("/static/../server.py", False), ("/api/check/x", True)])
def test_an_unknown_path_is_a_404_that_names_the_paths_there_are(server, path, json_api):
    """It said ``Not Found`` alone: now one line naming the path asked and the page's and the
    API's paths; the API answers JSON as its other refusals do."""
    status, ctype, text, _ = _http(server, "GET", path)
    assert status == 404
    assert ctype.startswith("application/json") == json_api, ctype
    message = _message(ctype, text)
    assert "no page at" in message and "/api/check" in message and "/api/schema" in message
    assert "the playground is at /" in message


def test_a_plain_request_to_the_websocket_path_says_what_it_is(server):
    status, ctype, text, _ = _http(server, "GET", "/ws")
    assert status == 404
    assert "WebSocket" in _message(ctype, text) and "open / in a browser" in text


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/api/check"), ("PUT", "/"), ("DELETE", "/api/schema"), ("OPTIONS", "/api/export"),
    ("POST", "/api/preset")])
def test_a_method_a_route_does_not_take_is_a_405_naming_the_methods_it_takes(server, method,
                                                                              path):
    """It said ``Method Not Allowed`` alone."""
    status, ctype, text, allow = _http(server, method, path, body=b'{"model.depth": 3')
    assert status == 405
    message = _message(ctype, text)
    assert message == f"{method} is not accepted at {path!r}; expected GET or HEAD", message
    assert allow and "GET" in allow


def test_the_server_still_serves_after_bad_requests(server):
    for method, path in (("POST", "/api/check"), ("GET", "/nope"), ("GET", "/api/check?%ff=1"),
                         ("GET", "/api/check?model.depth=" + "9" * 50_000)):
        status, ctype, text, _ = _http(server, method, path, body=b"x" * 2_000_000)
        assert 200 <= status < 500
    status, ctype, text, _ = _http(server, "GET", "/api/check?model.depth=3")
    assert status == 200 and json.loads(text)["ok"] is True
