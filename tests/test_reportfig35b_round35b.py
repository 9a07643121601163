"""Round 35b (reportfig35b): the report draws the weights (their std per layer beside the
initializer's, their gradients dL/dW, their histograms), which were stored and drawn nowhere."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd


def _report_with_figures(tmp_path, monkeypatch, config: dict):
    """Run ``config`` into a store in ``tmp_path``, write its report; return the HTML, the
    store's probes and histograms, and name -> (fn, args) of every figure the report asked
    for (the weight std and dL/dW figures drawn for real, the others replaced by one tiny PNG)."""
    from depthlab.experiments.runner import execute
    from depthlab.experiments.store import Store
    from depthlab.report import build, figures, write_report

    rec = execute(config)
    assert rec.status == "finished", rec.error
    with Store(tmp_path) as store:
        store.add_run(rec)
        probes = store.probes(rec.id)
        hists = store.histograms(rec.id)
    tiny = figures.figure_png(figures._new_figure()[0])
    asked: dict[str, tuple] = {}
    real_add = build._Pngs.add

    def add(self, name, fn, *a, **k):
        asked[name] = (fn, a, k)
        if name.endswith(("weight_std.png", "weight_grad_heatmap.png")):
            return real_add(self, name, fn, *a, **k)
        self.files[name] = tiny
        return tiny

    monkeypatch.setattr(build._Pngs, "add", add)
    html = re.sub(r'src="data:[^"]*"', "", write_report(tmp_path).read_text())
    return html, probes, hists, asked


def test_the_report_draws_each_layers_weight_std_beside_its_initializer_and_dldw(
        tmp_path, monkeypatch):
    """A NumPy He-normal ReLU run records weight_std, weight_grad_std and weight histograms
    every probe; the report drew none of them. Now: weight std per layer at the first and last
    probed step (= the store's values) beside He's sqrt(2 / fan_in) per layer (computed here
    from the sizes), a layer x step map of std(dL/dW) (= the store's values), and the weight
    histograms."""
    from depthlab.report import build

    sizes = [2, 16, 8, 16, 2]
    config = {"name": "w", "data": {"name": "spirals", "n": 200},
              "model": {"sizes": sizes, "activation": "relu", "init": "he_normal"},
              "train": {"lr": 0.05, "batch_size": 32, "epochs": 1, "seed": 0},
              "probes": {"every": 2, "batch": 50}}
    html, probes, hists, asked = _report_with_figures(tmp_path, monkeypatch, config)
    for title in (build.FIG_WEIGHT_STD, build.FIG_WEIGHT_GRAD, build.FIG_HIST_WEIGHT):
        assert title in html, title
    assert "he_normal" in html[html.index(build.FIG_WEIGHT_STD):][:1500]

    fn, a, k = asked["w_weight_std.png"]
    fig = fn(*a, **k)
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    lines = {ln.get_label(): ln for ln in ax.lines}
    w = probes[(probes["quantity"] == "weight_std") & (probes["layer"] >= 1)]
    first, last = int(w["step"].min()), int(w["step"].max())
    for step in (first, last):
        ln = lines[f"measured, step {step}"]
        want = w[w["step"] == step].set_index("layer")["value"].sort_index()
        np.testing.assert_allclose(ln.get_xdata(), want.index.to_numpy(float))
        np.testing.assert_allclose(np.asarray(ln.get_ydata(), float), want.to_numpy(float),
                                   rtol=1e-12)
    theory = lines["he_normal: sqrt(Var(W))"]
    np.testing.assert_allclose(theory.get_xdata(), [1, 2, 3])
    np.testing.assert_allclose(theory.get_ydata(), [math.sqrt(2 / sizes[i]) for i in range(3)])

    fn, a, k = asked["w_weight_grad_heatmap.png"]
    fig = fn(*a, **k)
    mesh = fig.axes[0].collections[0]
    g = probes[(probes["quantity"] == "weight_grad_std") & (probes["layer"] >= 1)]
    want = g.pivot(index="layer", columns="step", values="value").sort_index()
    np.testing.assert_allclose(np.ma.getdata(mesh.get_array()).reshape(want.shape),
                               want.to_numpy(float), rtol=1e-12)
    assert "dL/dW" in fig.axes[-1].get_ylabel()

    assert "w_histograms_weight.png" in asked
    assert (hists["kind"] == "weight").any()


def test_weight_figures_name_missing_values_and_are_left_out_when_not_recorded(
        tmp_path, monkeypatch):
    """Non-finite and zero weight stds have no point on the log axis and are named in the
    title; a run without weight probes gets no weight figure (and no error); a torch run and
    a residual net get no initializer line (its reason instead)."""
    from depthlab.report import build, figures

    rows = [(s, la, "weight_std", v) for s, vals in ((0, [0.5, 0.25, 0.1]),
                                                     (10, [0.6, np.inf, 0.0]))
            for la, v in zip((1, 2, 3), vals)]
    probes = pd.DataFrame(rows, columns=["step", "layer", "quantity", "value"])
    fig = figures.weight_std_profile(probes, {1: 0.5, 2: 0.25, 3: 0.1}, "he")
    ax = fig.axes[0]
    end = {ln.get_label(): ln for ln in ax.lines}["measured, step 10"]
    y = np.asarray(end.get_ydata(), float)
    assert y[0] == 0.6 and np.isnan(y[1:]).all()
    title = ax.get_title()
    assert "step 10: not finite in layer 2" in title and "step 10: 0 (all weights equal) in " \
        "layer 3" in title
    # depthlab.plot draws the same figure
    from depthlab import plot

    again = {ln.get_label(): ln for ln in plot.weight_std(probes, {1: 0.5}, "he").axes[0].lines}
    np.testing.assert_allclose(again["measured, step 0"].get_ydata(), [0.5, 0.25, 0.1])
    zeros = probes.assign(value=0.0)  # a zeros init: nothing on a log axis, said so
    text = figures.weight_std_profile(zeros).axes[0].texts[0].get_text()
    assert "step 0: 0 (all weights equal) in layers 1-3" in text
    empty = figures.weight_std_profile(probes[probes["quantity"] == "x"])
    assert "no 'weight_std' probes recorded" in empty.axes[0].texts[0].get_text()

    assert build.init_weight_std({"source": "depthlab.torch.Watch",
                                  "model": {"sizes": [2, 3, 2]}})[0] == {}
    assert build.init_weight_std({"model": {"sizes": [2, 3, 3, 2], "residual": True,
                                            "init": "he_normal"}})[0] == {}
    std, label = build.init_weight_std({"model": {"sizes": [4, 6, 3, 2],
                                                  "init": "glorot_uniform"}})
    assert std == {1: math.sqrt(2 / 10), 2: math.sqrt(2 / 9)} and "glorot_uniform" in label

    from test_report import synthetic_record

    from depthlab.experiments.store import Store

    monkeypatch.setattr(build._Pngs, "add", lambda self, name, fn, *a, **k: b"")
    monkeypatch.setattr(build, "_png_width", lambda png: 100)
    rec = synthetic_record("nowts0000001", depth=3, sweep=None)
    rec.probes = rec.probes[~rec.probes["quantity"].str.startswith("weight")]
    rec.histograms = rec.histograms[rec.histograms["kind"] != "weight"]
    with Store(tmp_path) as store:
        store.add_run(rec)
        assert not store.probes(rec.id)["quantity"].str.startswith("weight").any()
    html = build.write_report(tmp_path).read_text()
    for title in (build.FIG_WEIGHT_STD, build.FIG_WEIGHT_GRAD, build.FIG_HIST_WEIGHT):
        assert title not in html
