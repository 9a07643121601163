"""The report pages in a real headless browser (Playwright for Python driving Debian's
Chromium): the demo's report, a sweep report and a reproduction page. The overlaid
gradient-per-layer figure comes first, every figure has a caption and alt text, the demo's
gradient ratios tell the story, wide tables scroll inside their box. Screenshots go to the
test's temporary folder (``DEPTHLAB_SCREENSHOTS=DIR`` keeps them in DIR)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers.browser import screenshot_dir
from helpers.cli import cli

from depthlab.report import build  # noqa: E402


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    return screenshot_dir(tmp_path_factory.mktemp("screenshots"))


def _open(browser, path: Path):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(path.resolve().as_uri())
    return context, page, errors


def _figures(page) -> list[dict]:
    return page.eval_on_selector_all("figure", """els => els.map(f => ({
        title: (f.querySelector('h3') || {}).textContent || '',
        alt: (f.querySelector('img') || {}).alt || '',
        caption: (f.querySelector('figcaption') || {}).textContent || '',
        loaded: !!(f.querySelector('img') && f.querySelector('img').naturalWidth > 100)}))""")


def _check_figures(figs: list[dict]) -> None:
    assert figs
    for f in figs:
        assert f["loaded"], f
        assert len(f["caption"]) > 30, f  # a caption that says what to look for
        assert f["alt"].strip(), f


def test_demo_report_tells_the_story(browser, shots, tmp_path):
    from depthlab.report import write_report

    out = tmp_path / "demo"
    r = cli("demo", "--epochs", "1", "--jobs", "1", "--out", out, "--no-report", timeout=400)
    assert r.returncode == 0, r.stderr
    assert "ratio" in r.stdout and "vanishing" in r.stdout and "flows" in r.stdout
    # the demo's report (details drawn for one run only, to keep the test short: the
    # overlaid figures and the gradient-flow table cover every run regardless)
    context, page, errors = _open(browser, write_report(out, max_runs=1))
    figs = _figures(page)
    assert figs[0]["title"] == build.FIG_GRAD_OVERLAY
    assert figs[1]["title"] == build.FIG_ACT_OVERLAY
    _check_figures(figs)
    # the headline numbers: the naive sigmoid vanishes by orders of magnitude, the cures flow
    rows = page.eval_on_selector_all(
        "h3:has-text('Gradient flow') + p + div table tbody tr",
        "rows => rows.map(r => Array.from(r.cells).map(c => c.getAttribute('data-v') "
        "|| c.textContent))")
    ratios = {row[0]: float(row[1]) for row in rows}
    assert ratios["sigmoid + glorot"] < 1e-6
    for name in ("tanh + glorot", "relu + he", "sigmoid + glorot + batchnorm"):
        assert 0.1 < ratios[name] < 10, (name, ratios[name])
    page.screenshot(path=str(shots / "demo_report.png"))
    page.locator("figure").first.screenshot(path=str(shots / "demo_gradient_figure.png"))
    context.close()
    assert not errors, errors


def test_sweep_report_in_the_browser(browser, shots, tmp_path):
    from test_report import synthetic_record

    from depthlab.experiments.store import Store
    from depthlab.report import write_report

    with Store(tmp_path) as store:
        for k, (depth, lr) in enumerate([(2, 0.01), (2, 0.1), (4, 0.01), (4, 0.1)]):
            store.add_run(synthetic_record(f"s{k}", depth=depth, lr=lr, val_acc=0.7 + 0.05 * k))
        store.add_run(synthetic_record("alone", depth=3, sweep=None))
    path = write_report(tmp_path)
    context, page, errors = _open(browser, path)
    figs = _figures(page)
    assert figs[0]["title"] == build.FIG_GRAD_OVERLAY
    _check_figures(figs)
    headings = page.eval_on_selector_all("h2", "els => els.map(e => e.textContent)")
    assert headings == ["Sweep s1", "Run depth3-lr0.1"]  # the stand-alone run: own section
    header = page.eval_on_selector_all("#runs-table-sweep-s1 thead th",
                                       "els => els.map(e => e.textContent)")
    assert "depth" in header and "train.lr" in header and "model.sizes" not in header
    # a 2 x 2 grid of depth x lr: a heatmap, named in its caption
    assert any("every pair of values was run" in f["caption"] for f in figs)
    page.screenshot(path=str(shots / "sweep_report.png"), full_page=False)
    context.close()
    assert not errors, errors


def test_reproduction_page_in_the_browser(browser, shots, tmp_path):
    from matplotlib.figure import Figure

    from depthlab.reproduce.base import Claim, Experiment, Result
    from depthlab.reproduce.page import write_result

    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    depth = np.arange(1, 31)
    ax.semilogy(depth, 2.0 ** (depth / 2), "--", label="theory 2^(L/2)")
    ax.set_xlabel("depth L")
    ax.set_ylabel("gradient ratio")
    ax.set_title("He vs Xavier")
    wide = pd.DataFrame({f"column number {k}": np.linspace(0, 1, 4) * k for k in range(24)})
    result = Result(
        "fake", "A fake reproduction",
        claims=[Claim("ratio grows like 2^(L/2)", "Fig. 2: ~2.3e4", "4.9e4", True,
                      computed="theory 2^(29/2) = 2.3e4"),
                Claim("a failing claim", "1", "2", False)],
        figures={"ratio": fig}, tables={"wide": wide}, notes=["a note"],
        captions={"ratio": "Gradient ratio against depth: the dashed line is the 2^(L/2) "
                           "the paper quotes; measured points should follow it."})
    report = write_result(result, tmp_path, Experiment("fake", "A fake reproduction",
                                                       "Someone et al. 2015", lambda **k: None))
    context, page, errors = _open(browser, report)
    _check_figures(_figures(page))
    header = page.eval_on_selector_all("#claims ~ .card table thead th",
                                       "els => els.map(e => e.textContent)")
    assert header[:4] == ["claim", "paper", "measured here", "our computation"]
    nav = page.eval_on_selector_all("nav.toc a", "els => els.map(e => e.textContent)")
    assert nav == ["Claims", "Notes", "Figures", "Tables"]
    # the wide table scrolls inside its box; the page itself does not overflow
    box = page.eval_on_selector("#tables ~ .card .scroll",
                                "e => [e.scrollWidth, e.clientWidth]")
    assert box[0] > box[1]
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    page.screenshot(path=str(shots / "reproduction_page.png"), full_page=True)
    context.close()
    assert not errors, errors
