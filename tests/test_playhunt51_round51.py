"""Round 51 (playhunt51): what learners and teachers see in the playground and the reports,
hunted with a real browser (Playwright + Debian's Chromium) and by looking at the figures.
Each fix's test failed before it."""

from __future__ import annotations

import time

import pytest


def _set_field(pg, key: str, value: str) -> None:
    el = pg.locator(f'[name="{key}"]')
    el.evaluate("e => { const d = e.closest('details'); if (d) d.open = true; }")
    if el.evaluate("e => e.tagName") == "SELECT":
        el.select_option(value)
    else:
        el.fill(value)
        el.press("Tab")


def test_a_data_set_that_cannot_load_says_failed_and_keeps_saying_why(browser, server,
                                                                       monkeypatch, tmp_path):
    """Fashion-MNIST with no files: the page said "LOADING" and "loading the data and building
    the network…" for good beside the reason (the session told the reason, never its state),
    and pressing play replaced the reason with "nothing to train: fix the setup or press
    reset", which left nothing to fix by."""
    from helpers.browser import checked_page, screenshot_dir

    monkeypatch.setenv("DEPTHLAB_FASHION_MNIST", str(tmp_path))  # an empty folder: no files
    shots = screenshot_dir(tmp_path / "shots")
    with checked_page(browser) as pg:
        pg.goto(server.url)
        pg.wait_for_function("document.getElementById('grad-summary').dataset.step !== ''")
        _set_field(pg, "data.name", "fashion-mnist")
        pg.wait_for_function("document.body.dataset.state === 'failed'", timeout=30_000)
        pg.screenshot(path=str(shots / "playhunt51-data-failed.png"), full_page=False)
        assert pg.locator("#state").text_content() == "failed"
        message = pg.locator("#message")
        assert "Fashion-MNIST files not found" in message.text_content()
        summary = pg.locator("#grad-summary")
        pg.wait_for_function("!document.getElementById('grad-summary').textContent"
                             ".includes('loading')", timeout=5_000)
        assert "failed" in summary.text_content(), summary.text_content()
        pg.click("#play")
        pg.wait_for_function("document.getElementById('message').textContent"
                             ".startsWith('nothing to train')", timeout=10_000)
        text = message.text_content()
        assert "Fashion-MNIST files not found" in text and ".." not in text, text
        assert pg.locator("#state").text_content() == "failed"
        # the tab still trains a setup that loads
        _set_field(pg, "data.name", "spirals")
        pg.wait_for_function("document.body.dataset.state === 'paused'", timeout=60_000)
        time.sleep(0.2)
        assert message.is_hidden()


def test_the_update_ratio_title_says_when_a_drawn_layer_was_unchanged():
    """A 200-sigmoid-layer run's update-ratio figure was titled "not drawn: zero (weights
    unchanged) in layers 1-178" over the line of layer 174, whose update was 0 only at its
    last step: each layer is named with the steps its weights did not change at."""
    import numpy as np
    import pandas as pd

    from depthlab.report.figures import figure_png, update_ratio

    def value(step: int, layer: int) -> float:
        if step == 0:
            return np.nan  # no previous weights
        if layer <= 3 or (layer == 4 and step == 20):
            return 0.0
        return 1e-4 * layer / step

    rows = [{"step": step, "layer": layer, "quantity": "update_ratio",
             "value": value(step, layer)} for step in (0, 10, 20) for layer in range(1, 9)]
    fig = update_ratio(pd.DataFrame(rows))
    title = " ".join(fig.axes[0].get_title().split())
    assert "layers 1-3 from step 10" in title, title
    assert "layer 4 at step 20" in title, title
    assert "layers 1-4" not in title, title
    _, labels = fig.axes[0].get_legend_handles_labels()
    assert "layer 4" in labels  # drawn at step 10
    figure_png(fig)


def test_the_activation_bands_of_a_diverged_torch_run_name_the_modules_not_drawn():
    """A diverged ``dlt.Watch`` run's bands were titled "not drawn: not finite (NaN/inf) at
    step 5" under the lines of modules [0] and [2], drawn at step 5: the title named no module
    (the NumPy run's named its layers). It names the modules with their steps."""
    import numpy as np
    import pandas as pd

    from depthlab import plot

    modules = {1: "[0]", 2: "[2]", 3: "[4]", 4: "[6]"}
    rows = []
    for step in range(6):
        for layer, module in modules.items():
            bad = step == 5 and layer >= 3
            rows += [{"step": step, "layer": layer, "module": module, "quantity": q,
                      "value": np.nan if bad else v}
                     for q, v in (("act_mean", 0.1 * layer), ("act_std", 0.5))]
    title = " ".join(plot.activation_bands(pd.DataFrame(rows)).axes[0].get_title().split())
    assert "not drawn: not finite (NaN/inf) in [4], [6] at step 5" in title, title
    # a NumPy table says it as before
    numpy_rows = pd.DataFrame(rows).drop(columns="module")
    title = " ".join(plot.activation_bands(numpy_rows).axes[0].get_title().split())
    assert "not drawn: not finite (NaN/inf) in layers 3-4 at step 5" in title, title


def test_the_end_panel_names_the_modules_that_overflowed_as_its_axis_does():
    """A diverged torch run's "at the end of training" panel said "layers 3-6: not finite
    (NaN/inf)" under an axis whose ticks are the modules [0], [2], ..., [12]: no layer 3 or 6
    to find. It names the modules, neighbours joined (``modules [4] to [10]``)."""
    import numpy as np
    import pandas as pd

    from depthlab import plot

    modules = {k: f"[{2 * (k - 1)}]" for k in range(1, 8)}
    rows = []
    for step in (0, 5):
        for layer, module in modules.items():
            bad = step == 5 and 3 <= layer <= 6
            rows.append({"step": step, "layer": layer, "module": module,
                         "quantity": "act_std", "value": np.nan if bad else 0.5 + layer})
    fig = plot.activation_per_layer(pd.DataFrame(rows))
    end = " ".join(fig.axes[1].get_title().split())
    assert "modules [4] to [10]: not finite (NaN/inf)" in end, end
    assert "layers 3-6" not in end, end


def test_a_zero_gradient_summary_names_saturated_bounded_units(browser, server):
    """tanh trained by Adam at lr 10 saturates every unit at ±1 (tanh' = 1 - 1 = 0 in float32):
    the summary "The gradient is exactly 0 in layers 1-6" listed dead units, a step function,
    zero weights and underflow, never the saturation its histograms showed."""
    from helpers.browser import checked_page

    with checked_page(browser, 1000, 800) as pg:
        pg.goto(server.url + "?model.depth=3&model.width=4&model.init=zeros")
        pg.wait_for_function("() => document.getElementById('grad-summary').dataset.zero === '3'")
        text = " ".join(pg.locator("#grad-summary .zero").text_content().split())
        assert "saturated at their bounds (tanh, sigmoid" in text, text


@pytest.mark.parametrize("steps", [(0, 1), (0, 5)])
def test_the_percentile_legend_of_a_short_run_covers_no_error_bar(steps):
    """A one-step run (``batch_size = "full"``, one epoch) draws its layer's percentiles as an
    error bar per step: the legend ("median", "15–85th pct (few steps)"), placed by
    matplotlib's "best", which does not see an error bar's lines, sat across the last bar."""
    import numpy as np
    import pandas as pd

    from depthlab.report.figures import percentile_bands

    # (a 3 x 16 ReLU net's last layer: its median drifts a little, its bars span the axes)
    values = {"pre_p2": (-0.538, -0.538), "pre_p15": (-0.177, -0.174),
              "pre_p50": (0.0196, 0.0177), "pre_p85": (0.297, 0.281),
              "pre_p98": (0.864, 0.821), "pre_std": (0.295, 0.287), "act_std": (0.221, 0.212)}
    rows = [{"step": step, "layer": 3, "quantity": q, "value": v[i]}
            for i, step in enumerate(steps) for q, v in values.items()]
    fig = percentile_bands(pd.DataFrame(rows))
    ax = fig.axes[0]
    fig.canvas.draw()
    box = ax.get_legend().get_window_extent(fig.canvas.get_renderer())
    bars = [c for c in ax.collections if len(c.get_segments())]
    assert bars, "no error bars drawn"
    for c in bars:
        for seg in c.get_segments():
            (x0, y0), (x1, y1) = ax.transData.transform(np.asarray(seg, float))
            crosses = box.x0 <= x0 <= box.x1 and min(y0, y1) <= box.y1 and max(y0, y1) >= box.y0
            assert not crosses, (box, seg)


def test_the_doctor_on_a_setup_that_failed_to_load_says_why(server, monkeypatch, tmp_path):
    """The doctor pressed on a setup whose data set could not load answered "the doctor needs a
    network: wait until the setup has loaded" (a wait for nothing), over the failure's reason."""
    import json

    from websockets.sync.client import connect

    monkeypatch.setenv("DEPTHLAB_FASHION_MNIST", str(tmp_path))  # an empty folder: no files
    with connect(server.url.replace("http://", "ws://") + "ws") as ws:
        ws.send(json.dumps({"cmd": "setup", "query": {"data.name": "fashion-mnist"}}))
        deadline = time.monotonic() + 60
        while True:
            m = json.loads(ws.recv(timeout=max(deadline - time.monotonic(), 0.1)))
            if m["type"] == "error" and "Fashion-MNIST" in m["message"]:
                break  # the session's failure (its "failed" state follows)
        ws.send(json.dumps({"cmd": "doctor"}))
        while True:
            m = json.loads(ws.recv(timeout=max(deadline - time.monotonic(), 0.1)))
            if m["type"] == "error" and m.get("doctor"):
                break
    assert "wait until" not in m["message"], m
    assert m["message"].startswith("the doctor needs a network: this setup failed: "), m
    assert "Fashion-MNIST files not found" in m["message"], m


def test_the_loss_panel_says_the_train_loss_includes_the_weight_penalty(browser, server):
    """With l2 = 1 the train loss read 300 beside a held-out loss of 0.69 (the trainer's loss
    is the data loss plus l2 · Σw², the held-out loss the data loss alone): the loss panel said
    nothing of the penalty."""
    from helpers.browser import checked_page

    with checked_page(browser, 1000, 800) as pg:
        pg.goto(server.url + "?model.depth=2&model.width=4&train.l2=0.5")
        pg.wait_for_function("() => document.getElementById('loss-rows').textContent !== ''")
        text = " ".join(pg.locator("#loss-rows").text_content().split())
        assert "the train loss includes the weight penalty 0.5 · Σw²" in text, text
        assert "the held-out loss does not" in text, text
        pg.goto(server.url + "?model.depth=2&model.width=4&train.l2=0")
        pg.wait_for_function("() => document.getElementById('loss-rows').textContent !== ''")
        assert "penalty" not in pg.locator("#loss-rows").text_content()


def test_the_reports_training_caption_says_the_step_loss_includes_the_penalty(tmp_path):
    """A run with ``l2 = 0.5``: its per-step loss (the trainer's, the penalty included) fell from
    20 to 0.7 beside epoch losses of 0.7 (the data loss alone), and the caption said neither."""
    import subprocess
    import sys

    from depthlab.report import write_report

    cfg = tmp_path / "l2.toml"
    cfg.write_text('[data]\nname = "spirals"\n[model]\ndepth = 2\nwidth = 4\n'
                   "[train]\nepochs = 1\nlr = 0.05\nl2 = 0.5\n", encoding="utf-8")
    out = tmp_path / "out"
    subprocess.run([sys.executable, "-m", "depthlab", "run", str(cfg), "--out", str(out), "-q"],
                   check=True, timeout=120)
    html = write_report(out).read_text(encoding="utf-8")
    assert "the data loss plus the weight penalty 0.5 · Σw²" in html
    assert "the epoch losses are the data loss alone" in html
