"""End-to-end tests of ``depthlab playground`` in a real headless browser (Playwright for Python
driving Debian's Chromium): vanishing gradients read from the page, the residual + batch-norm
preset, bad input, the doctor and its "apply", reload from the URL, and the exported TOML run
by ``depthlab run``. Screenshots of each state go to the test's temporary folder; with
``DEPTHLAB_UPDATE_DOCS=1`` the first one also replaces ``docs/playground.png``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs" / "playground.png"


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1500, "height": 1150},
                                  accept_downloads=True)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(server.url)
    pg.wait_for_selector("#f-model-depth")
    yield pg
    context.close()
    assert not errors, errors


def set_field(pg, key: str, value: str) -> None:
    el = pg.locator(f'[name="{key}"]')
    el.evaluate("e => { const d = e.closest('details'); if (d) d.open = true; }")
    if el.evaluate("e => e.tagName") == "SELECT":
        el.select_option(value)
    else:
        el.fill(value)
        el.press("Tab")  # fires "change"


def measured(pg, min_step: int = 0) -> dict[str, float]:
    """The numbers of the gradient summary once a measurement at ``min_step`` or later of the
    current setup is shown."""
    pg.wait_for_function(
        "n => { const d = document.getElementById('grad-summary').dataset;"
        " return d.step !== '' && +d.step >= n && d.ratio !== ''; }", arg=min_step,
        timeout=60_000)
    d = pg.locator("#grad-summary")
    return {k: float(d.get_attribute(f"data-{k}")) for k in ("first", "last", "ratio", "step")}


def wait_query(pg, **expected: str) -> None:
    for key, value in expected.items():
        pg.wait_for_function(
            "([k, v]) => new URLSearchParams(location.search).get(k) === v",
            arg=[key, value], timeout=60_000)


def test_vanishing_then_residual_batchnorm(page, tmp_path):
    pg = page
    set_field(pg, "model.activation", "sigmoid")
    set_field(pg, "model.init", "normal")
    set_field(pg, "model.width", "32")
    set_field(pg, "model.depth", "30")
    wait_query(pg, **{"model.depth": "30", "model.activation": "sigmoid",
                      "model.init": "normal"})
    at_init = measured(pg)
    pg.click("#play")
    pg.wait_for_selector("body[data-state=running]")
    trained = measured(pg, int(at_init["step"]) + 30)
    shot = tmp_path / "1-naive-sigmoid-normal.png"
    pg.screenshot(path=str(shot), full_page=True)
    if os.environ.get("DEPTHLAB_UPDATE_DOCS") == "1":
        DOCS.parent.mkdir(exist_ok=True)
        shutil.copyfile(shot, DOCS)
    # the first layer's gradient is orders of magnitude below the last one's
    assert at_init["ratio"] < 1e-2, at_init
    assert trained["ratio"] < 1e-2, trained
    assert float(pg.get_attribute("#ups", "data-ups")) > 0

    pg.click("button[data-preset=residual]")
    wait_query(pg, **{"model.residual": "true", "model.batchnorm": "true",
                      "model.depth": "1000"})
    res = measured(pg)
    pg.screenshot(path=str(tmp_path / "2-residual-batchnorm-1000.png"), full_page=True)
    assert res["ratio"] > 0.1, res  # not vanishing: within an order of magnitude
    # the theory line is drawn for residual + batch-norm nets too (theory.predict_gradients)
    note = pg.locator("#theory-note").text_content()
    assert "predict_gradients" in note and "no theory line" not in note, note
    assert pg.evaluate("S.theory.relative_std.filter((v) => v !== null).length") == 1999
    # 2000 activation layers (two per block) on the page, controls still answer
    # (the server sends the first measurement, then the state: the page may be read between)
    pg.wait_for_function("document.body.dataset.state !== 'loading'", timeout=10_000)
    assert pg.locator("#state").text_content() == "paused"
    pg.click("#play")
    pg.wait_for_selector("body[data-state=running]", timeout=2000)
    pg.click("#pause")
    pg.wait_for_selector("body[data-state=paused]", timeout=2000)


def test_bad_input_doctor_apply_reload_and_export(page, tmp_path):
    pg = page
    set_field(pg, "train.lr", "abc")
    msg = pg.locator("#message")
    msg.wait_for(state="visible")
    assert "train.lr" in msg.text_content() and "abc" in msg.text_content()
    assert "invalid" in pg.locator('.field[data-key="train.lr"]').get_attribute("class")
    pg.screenshot(path=str(tmp_path / "3-bad-input.png"), full_page=True)
    set_field(pg, "train.lr", "0.1")
    msg.wait_for(state="hidden")

    # a diverging run says where, and the page keeps working
    set_field(pg, "model.activation", "relu")
    set_field(pg, "model.init", "normal")
    set_field(pg, "train.lr", "10")
    wait_query(pg, **{"train.lr": "10.0", "model.init": "normal"})
    measured(pg)
    pg.click("#play")
    banner = pg.locator("#diverged")
    banner.wait_for(state="visible", timeout=30_000)
    assert "diverged at step" in banner.text_content()
    assert pg.locator("body").get_attribute("data-state") == "diverged"
    pg.screenshot(path=str(tmp_path / "3b-diverged.png"), full_page=True)

    pg.click("button[data-preset=naive]")
    wait_query(pg, **{"model.activation": "sigmoid", "model.init": "normal"})
    measured(pg)
    pg.click("#doctor")
    finding = pg.locator("#doctor-out .finding").first
    finding.wait_for(timeout=90_000)
    kinds = pg.locator("#doctor-out .finding").evaluate_all("els => els.map(e => e.dataset.kind)")
    assert kinds and all(kinds), kinds
    assert pg.locator("#doctor-out .verified").count() >= 1
    pg.screenshot(path=str(tmp_path / "4-doctor.png"), full_page=True)
    apply = pg.locator("#doctor-out button.apply").first
    label = apply.text_content()
    apply.click()
    pg.wait_for_function("() => !new URLSearchParams(location.search).get('model.init')"
                         " || new URLSearchParams(location.search).get('model.init') !== 'normal'"
                         " || new URLSearchParams(location.search).get('model.batchnorm') === "
                         "'true' || new URLSearchParams(location.search).get('model.activation')"
                         " !== 'sigmoid'", timeout=30_000)
    assert label.startswith("apply: ")  # (round 18b: controls and values, no longer JSON)

    # the URL holds the whole setup: a reload restores it
    set_field(pg, "train.epochs", "1")
    wait_query(pg, **{"train.epochs": "1"})
    before = {k: pg.locator(f'[name="{k}"]').input_value()
              for k in ("model.depth", "model.activation", "model.init", "model.batchnorm",
                        "train.lr", "train.epochs")}
    pg.reload()
    pg.wait_for_selector("#f-model-depth")
    measured(pg)
    after = {k: pg.locator(f'[name="{k}"]').input_value() for k in before}
    assert after == before

    with pg.expect_download() as dl:
        pg.click("#export")
    toml_path = tmp_path / dl.value.suggested_filename
    dl.value.save_as(toml_path)
    assert toml_path.suffix == ".toml"
    out = tmp_path / "results"
    proc = subprocess.run([sys.executable, "-m", "depthlab", "run", str(toml_path), "--out",
                           str(out), "--quiet"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    assert (out / "depthlab.db").exists()
