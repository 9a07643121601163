"""depthlab.torch runs in the report: a Watch run on a small CNN and a torch doctor run stored in
one results folder; every per-layer figure labels its layers with the module names
(``features.0``, ``head``), readable for deep models; NumPy runs keep their layer numbers."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
from helpers.browser import screenshot_dir
from helpers.cli import run_cli
from torch import nn

import depthlab.torch as dlt
from depthlab import plot
from depthlab.experiments.store import Store
from depthlab.report import build, figures


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.Tanh(),
                                      nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(8 * 8 * 8, 4)

    def forward(self, x):
        return self.head(torch.flatten(self.features(x), 1))


CNN_NAMES = ["features.0", "features.2", "head"]
DOC_NAMES = ["[0]", "[2]", "[4]"]  # the doctor's Sequential: model[0], model[2], model[4]


def _texts(fig) -> list[str]:
    """Every tick label, legend entry, title and axis label of a figure."""
    out = [t.get_text() for t in fig.texts]
    for ax in fig.axes:
        out += [t.get_text() for t in ax.get_xticklabels() + ax.get_yticklabels()]
        out += [ax.get_title(), ax.get_xlabel(), ax.get_ylabel()]
        leg = ax.get_legend()
        if leg is not None:
            out += [t.get_text() for t in leg.get_texts()]
    for leg in fig.legends:
        out += [t.get_text() for t in leg.get_texts()]
    return out


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("torch_runs")
    torch.manual_seed(0)
    model = SmallCNN()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = torch.randn(64, 1, 8, 8), torch.randint(0, 4, (64,))
    with dlt.Watch(model, every=4, out=out, name="watched cnn") as watch:
        for i in range(12):
            xb, yb = x[16 * (i % 4):16 * (i % 4 + 1)], y[16 * (i % 4):16 * (i % 4 + 1)]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(xb), yb)
            loss.backward()
            watch.step(loss)
            opt.step()

    def mlp():
        return nn.Sequential(nn.Linear(16, 32), nn.Sigmoid(), nn.Linear(32, 32), nn.Sigmoid(),
                             nn.Linear(32, 3))

    g = torch.Generator().manual_seed(1)
    dlt.doctor(mlp, (torch.randn(96, 16, generator=g), torch.randint(0, 3, (96,), generator=g)),
               steps=12, batch_size=32, verify=False, probe_every=4, out=out, name="doc mlp")
    return out


def test_report_figures_of_torch_runs_are_labelled_by_module(folder, monkeypatch, tmp_path):
    drawn: list = []
    real = figures.figure_png

    def keep(fig):
        drawn.append(_texts(fig))
        return real(fig)

    monkeypatch.setattr(figures, "figure_png", keep)
    page = build.write_report(tmp_path / "rep", Store(folder)).read_text()
    assert build.FIG_UPDATE_RATIO in page  # the Watch run records update ratios
    text = "\n".join("\n".join(t) for t in drawn)
    for name in CNN_NAMES + DOC_NAMES:
        assert name in text
    assert "[0] / features.0" in text  # both models overlaid: both names of layer 1
    named = [t for t in drawn if any(n in t for n in CNN_NAMES + DOC_NAMES)]
    # per run: gradient profile, activation bands, heatmap, saturation, update ratio
    assert len(named) >= 10
    # the last layer feeding a nonlinearity ([2], into a Sigmoid), not the logits of [4]
    assert "Percentiles of [2]'s pre-activation over training" in text
    for t in named:  # no layer of a torch run is called by its number
        assert not any(s.startswith("layer ") and s[6:].isdigit() for s in t), t


def test_plot_functions_use_the_module_column_and_numpy_keeps_numbers(folder):
    store = Store(folder)
    runs = build._runs_table(store)
    rid = str(runs[runs["name"] == "watched cnn"]["id"].iloc[0])
    config = runs[runs["name"] == "watched cnn"]["config"].iloc[0]
    probes = build._named(build._clean_probes(store.probes(rid)), config)
    fig = plot.gradient_per_layer({"cnn": probes}, False)
    ticks = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert ticks == CNN_NAMES
    assert all(t.get_rotation() == 90 for t in fig.axes[0].get_xticklabels())
    heat = [t.get_text() for t in plot.gradient_heatmap(probes).axes[0].get_yticklabels()]
    assert heat == CNN_NAMES
    assert "features.2" in _texts(plot.update_ratio(probes))
    assert "features.0" in _texts(plot.activation_bands(probes))
    # a NumPy table (no module column) keeps "layer N" and numeric ticks
    numpy_table = probes.drop(columns="module")
    assert "layer 1" in _texts(plot.activation_bands(numpy_table))
    assert [t.get_text() for t in plot.gradient_per_layer(
        {"np": numpy_table}, False).axes[0].get_xticklabels()] == ["1", "2", "3"]


def test_deep_model_names_stay_readable():
    """ResNet-18's 21 weight layers: every name a tick (rotated, small font), the figure
    grown to fit them; 60 layers: the ticks thinned, first and last kept."""
    from depthlab.torch import zoo

    model = zoo.resnet18()
    names = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(names) == 21
    rows = [(s, i + 1, n, "grad_pre_std", 1e-3 * (1 + i) * (1 + s))
            for s in (0, 10) for i, n in enumerate(names)]
    table = pd.DataFrame(rows, columns=["step", "layer", "module", "quantity", "value"])
    fig = plot.gradient_per_layer(table)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == names
    assert all(t.get_rotation() == 90 and t.get_fontsize() <= 7 for t in ax.get_xticklabels())
    fig.canvas.draw()  # the rotated names fit inside the figure
    renderer = fig.canvas.get_renderer()
    assert min(t.get_window_extent(renderer).y0 for t in ax.get_xticklabels()) >= 0
    heat = plot.gradient_heatmap(table)
    assert [t.get_text() for t in heat.axes[0].get_yticklabels()] == names
    heat.canvas.draw()
    assert min(t.get_window_extent(heat.canvas.get_renderer()).x0
               for t in heat.axes[0].get_yticklabels()) >= 0
    deep = pd.DataFrame([(0, i, f"blocks.{i}.conv", "grad_pre_std", 1.0) for i in range(1, 61)],
                        columns=["step", "layer", "module", "quantity", "value"])
    ticks = [t.get_text() for t in plot.gradient_per_layer(deep).axes[0].get_xticklabels()]
    # thinned to what the axis holds without overlap (tests/test_report_round9.py)
    assert 20 <= len(ticks) <= figures.LAYER_TICKS_MAX
    assert ticks[0] == "blocks.1.conv" and ticks[-1] == "blocks.60.conv"


def test_cli_report_and_browser_screenshot(folder, tmp_path, capsys, browser):
    # `depthlab report` in this process and the session's Chromium (conftest.py): the report
    # and the page are the subject, not a fresh interpreter's or browser's start-up
    code, _, err = run_cli(capsys, "report", folder)
    assert code == 0, err
    page = Path(folder) / "report.html"
    html = page.read_text()
    assert "watched cnn" in html and "doc mlp" in html
    shots = screenshot_dir(tmp_path)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        pg = context.new_page()
        pg.goto(page.resolve().as_uri())
        pg.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
        broken = pg.evaluate("[...document.images].filter(i => !i.complete || "
                             "i.naturalWidth === 0).length")
        assert broken == 0
        assert pg.evaluate("document.images.length") >= 8
        pg.screenshot(path=str(shots / "report_torch.png"), full_page=True)
    finally:
        context.close()
    assert (shots / "report_torch.png").stat().st_size > 10_000
