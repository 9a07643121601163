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


# -- reports: a failed verification --------------------------------------------------------------
def test_a_cure_whose_retraining_failed_is_said_failed_not_not_finite():
    """A torch doctor's cure whose re-training raised has no 'after' numbers: the report read
    ``train loss 1.095 → not finite, val acc 0.4118 → not finite, depth ... → not finite``, as
    if the cured run had diverged; the command line says ``train loss 1.095 -> none``."""
    from depthlab.report.build import _verification_text

    v = {"kind": "vanishing_gradients", "prescription": {"activation": "tanh"},
         "before": {"train_loss": 1.095, "val_acc": 0.4118}, "after": {},
         "metric": "depth in gradient depth scales", "metric_before": 34.86,
         "metric_after": None, "resolved": False, "helped": False,
         "error": "RuntimeError: this model only trains with its own sigmoid"}
    text = _verification_text(v)
    assert "not finite" not in text, text
    assert text.startswith("train loss 1.095 → none: did not help"), text
    assert "its re-training failed: RuntimeError: this model only trains" in text
    partial = _verification_text({k: x for k, x in v.items() if k != "kind"})
    assert "not finite" not in partial and "re-training failed" in partial, partial


# -- figures in grayscale (printed) --------------------------------------------------------------
GRAY_APART = 40
"""Gray levels (of 255) two lines drawn alike (same line style and marker) must differ by."""


def _gray(color, alpha: float | None = None) -> float:
    """The gray level a printer or a grayscale screen gives a colour (ITU-R 601 luma, 0-255),
    drawn with ``alpha`` over white paper."""
    from matplotlib.colors import to_rgba

    r, g, b, a = to_rgba(color)
    a = a if alpha is None else alpha
    return 255 - a * (255 - 255 * (0.299 * r + 0.587 * g + 0.114 * b))


def _alike_in_gray(ax) -> list[tuple[str, str, float]]:
    """The pairs of legend-labelled lines of ``ax`` a grayscale print cannot tell apart: the
    same line style and marker, gray levels closer than :data:`GRAY_APART`."""
    lines = [ln for ln in ax.get_lines() if not ln.get_label().startswith("_")
             and len(ln.get_xdata())]
    out = []
    for i, a in enumerate(lines):
        for b in lines[i + 1:]:
            same = (a.get_linestyle() == b.get_linestyle()
                    and str(a.get_marker()) == str(b.get_marker()))
            gap = abs(_gray(a.get_color(), a.get_alpha()) - _gray(b.get_color(), b.get_alpha()))
            if same and gap < GRAY_APART:
                out.append((a.get_label(), b.get_label(), round(gap, 1)))
    return out


@pytest.mark.parametrize("n_epochs", [6, 200])  # markers drawn; too many points for markers
def test_train_validation_and_test_curves_differ_in_grayscale(n_epochs):
    """Validation (#D55E00, gray 119) and test accuracy (#009E73, gray 106) were both solid
    lines with circles, 13 gray levels apart: one line on a printed page."""
    import matplotlib.pyplot as plt
    import numpy as np
    import pandas as pd

    from depthlab.report import figures

    e = np.arange(1, n_epochs + 1)
    steps = pd.DataFrame({"step": np.arange(10 * n_epochs), "loss": np.linspace(2, 0.1,
                                                                                 10 * n_epochs)})
    epochs = pd.DataFrame({"epoch": e, "step": 10 * e, "train_loss": 1 / e, "val_loss": 1.2 / e,
                           "train_acc": 1 - 0.5 / e, "val_acc": 0.9 - 0.4 / e,
                           "test_acc": 0.88 - 0.4 / e})
    fig = figures.training_curves(steps, epochs)
    try:
        assert len(fig.axes) == 2
        for ax in fig.axes:
            assert _alike_in_gray(ax) == [], ax.get_title()
    finally:
        plt.close(fig)


@pytest.mark.parametrize("n", [3, 7, 14])
def test_an_overlay_of_runs_tells_every_run_apart_in_grayscale(n):
    """Run colours 2, 5 and 6 (#E69F00, #CC79A7, #56B4E9: gray 162, 151, 158) were drawn with
    the same circle and solid line: three runs of a sweep were one line on paper."""
    import matplotlib.pyplot as plt
    import numpy as np
    import pandas as pd

    from depthlab import plot

    runs = {f"run {i}": pd.DataFrame([
        {"step": s, "layer": k, "quantity": "grad_pre_std",
         "value": float(np.exp(-0.03 * (i + 1) * k))} for s in (0, 50) for k in range(1, 9)])
        for i in range(n)}
    fig = plot.gradient_per_layer(runs)
    try:
        for ax in fig.axes:
            assert _alike_in_gray(ax) == [], ax.get_title()
    finally:
        plt.close(fig)


# -- the playground in a browser ------------------------------------------------------------------
MEASURED = "document.getElementById('grad-summary').dataset.step !== ''"
NAMED_SERIES_PLOTS = ("plot-grad", "plot-loss", "plot-sat", "plot-update")
"""The playground's plots whose lines are named quantities (the others colour layers along
viridis, whose gray levels rise with the layer)."""


@pytest.fixture()
def page(browser, server):
    from helpers.browser import checked_page

    with checked_page(browser) as pg:
        yield pg


def test_the_playgrounds_named_lines_differ_in_grayscale(page, server):
    """Printed in grayscale, the saturation panel's 'saturated' (#d62728, gray 91) and
    'inactive' (#1f77b4, gray 100) were two solid lines with the same dots, and their legend
    squares the same gray: each now has its own line style, and its square follows it."""
    page.goto(server.url + "?model.activation=relu&model.init=he_normal")
    page.wait_for_function(MEASURED, timeout=180_000)  # a loaded host: minutes
    series = page.evaluate("""(ids) => ids.flatMap(id => S.plots[id].series.slice(1).map(s =>
        [id, s.label, s.stroke(S.plots[id], 1) || s._stroke, (s.dash || []).join(",")]))""",
                           list(NAMED_SERIES_PLOTS))
    alike = []
    for i, (plot, label, stroke, dash) in enumerate(series):
        for plot_b, label_b, stroke_b, dash_b in series[i + 1:]:
            if plot == plot_b and dash == dash_b and abs(_gray(stroke) - _gray(stroke_b)) < \
                    GRAY_APART:
                alike.append((plot, label, label_b))
    assert alike == [], alike
    # the legend's squares are drawn as the lines are: solid, dashed, dotted
    styles = page.evaluate("""() => [...document.querySelectorAll('#plot-sat .u-legend .u-marker')]
        .map(m => getComputedStyle(m).borderTopStyle)""")
    assert len(set(styles)) == len(styles) == 3, styles
