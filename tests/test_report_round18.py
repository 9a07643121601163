"""Round 18: what a person looks at in reports, figures and reproductions (helper reports18).
Each test failed before its fix. Figures are saved as PNGs in the test's folder
(``DEPTHLAB_SCREENSHOTS=DIR`` keeps them)."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib
import pandas as pd
import pytest
from helpers.browser import screenshot_dir

matplotlib.use("Agg")

from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    return screenshot_dir(tmp_path_factory.mktemp("screenshots18"))


def _drawn_right_edge(fig) -> float:
    """Inches from the figure's left edge to the right end of everything drawn."""
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    return float(fig.get_tightbbox(canvas.get_renderer()).x1)


def test_the_activation_bands_legend_of_long_module_names_stays_inside_the_figure(shots):
    # a Watch run of a ResNet-ish CNN: the legend's module names (40 characters, e.g.
    # residual_stage_one.12.conv_branch_second) ran 6 px past the figure's right edge, their
    # last letters cut off ('..._seconc')
    from depthlab import plot

    names = {1: "stem", 2: "residual_stage_one.6.conv_branch_first",
             3: "residual_stage_one.12.conv_branch_second",
             4: "residual_stage_one.25.conv_branch_second"}
    rows = [{"step": s, "layer": la, "module": m, "quantity": q, "value": v}
            for s in (0, 5, 10) for la, m in names.items()
            for q, v in (("act_mean", 0.1 * la), ("act_std", 0.5))]
    fig = plot.activation_bands(pd.DataFrame(rows))
    fig.savefig(shots / "bands_long_module_names.png")
    legend = fig.axes[0].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == list(names.values())
    assert _drawn_right_edge(fig) <= fig.get_figwidth()


def _no_figures(monkeypatch) -> list[str]:
    """The report's figures are not drawn (seconds each); their names are kept."""
    from depthlab.report import build

    drawn: list[str] = []
    monkeypatch.setattr(build._Pngs, "add", lambda self, name, fn, *a, **k: drawn.append(name)
                        or b"")
    return drawn


def test_the_layers_table_names_a_sequential_index_as_the_figures_do(tmp_path, monkeypatch):
    # a torch doctor run of an nn.Sequential: the figures' ticks read [0], [2], ... [20]
    # (model[4]), the section's "Layers (module names)" table "layer 3: 4", so layer 3 read
    # as module 4 beside a tick [4] that is layer 3's
    import html as html_lib
    import re

    from test_report import synthetic_record

    from depthlab.experiments.store import Store
    from depthlab.report import write_report

    _no_figures(monkeypatch)
    rec = synthetic_record("torch0000001", depth=3, sweep=None)
    rec.config["model"]["layers"] = {"1": "0", "2": "2", "3": "4", "4": "head.fc"}
    with Store(tmp_path) as store:
        store.add_run(rec)
    text = write_report(tmp_path).read_text()
    block = text[text.index("Layers (module names)"):]
    pairs = dict(re.findall(r"<span>([^<]*)</span><code>([^<]*)</code>",
                            block[:block.index("</div></div>") + 12]))
    pairs = {k: html_lib.unescape(v) for k, v in pairs.items()}
    assert pairs == {"layer 1": "[0]", "layer 2": "[2]", "layer 3": "[4]",
                     "layer 4": "head.fc"}, pairs


def test_plot_figures_show_as_pictures_in_a_jupyter_kernel_without_pyplot(shots):
    # examples/tour.ipynb executed by a Jupyter kernel (ipykernel 7, nbclient): the cells
    # ending in plot.gradient_per_layer(...) and plot.activation_histograms(...) displayed
    # '<Figure size 716x390 with 1 Axes>' as text, no picture: the figures are built without
    # pyplot, and ipykernel registers matplotlib's PNG printer only once pyplot is imported.
    # IPython's PNG formatter falls back to an object's _repr_png_
    import depthlab as dl
    from depthlab import plot

    x = dl.backend.rng(0).standard_normal((64, 8)).astype("float32")
    y = (x[:, 0] > 0).astype(int)
    net = dl.mlp([8, 16, 16, 2], activation="tanh", seed=0)
    recorder = dl.ProbeRecorder(x, y, every=2)
    history = dl.fit(net, x, y, loss="cross_entropy", lr=0.1, batch_size=16, epochs=1,
                     seed=0, callbacks=[recorder])
    shown = {"gradient_per_layer": plot.gradient_per_layer(recorder),
             "training_curves": plot.training_curves(history),
             "activation_histograms": plot.activation_histograms(recorder, "grad"),
             "gradient_heatmap": plot.gradient_heatmap(recorder)}
    for name, fig in shown.items():
        png = fig._repr_png_()
        assert png[:8] == b"\x89PNG\r\n\x1a\n", name
        (shots / f"jupyter_{name}.png").write_bytes(png)
        # shown, not consumed: the figure keeps its drawing for a second display or savefig
        # (constrained layout may move a label by a pixel on a second pass)
        again = fig._repr_png_()
        assert fig.axes and again[:8] == png[:8] and again[16:24] == png[16:24], name


def test_a_one_panel_overlay_legend_keeps_a_short_run_name_whole():
    # the tour notebook's overlay of three recipes at initialization (one panel): its legend
    # read 'sigmoid + gl…ot (step 0)', a 16-character name cut because the entry's
    # " (step 0)" made it 25 characters against a limit of 24
    from depthlab import plot

    def table(scale: float) -> pd.DataFrame:
        return pd.DataFrame([{"step": 0, "layer": la, "quantity": "grad_pre_std",
                              "value": scale * 2.0 ** la} for la in (1, 2, 3)])

    fig = plot.gradient_per_layer({"sigmoid + glorot": table(1e-6), "tanh + glorot": table(1e-3),
                                   "relu + he": table(1e-2)})
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert texts[:3] == ["sigmoid + glorot (step 0)", "tanh + glorot (step 0)",
                         "relu + he (step 0)"], texts
    assert _drawn_right_edge(fig) <= fig.get_figwidth()


def test_the_measured_points_are_drawn_whole_over_the_theory_line(shots):
    # the tour's overlay, where theory and measurement agree (tanh, relu + he): the theory's
    # dashed line, drawn on top with a white halo, bit every measured marker it crossed into
    # a "C"; each measured point of the first panel is now drawn above the theory
    from matplotlib.colors import to_rgba

    from depthlab import plot

    layers = list(range(1, 9))
    measured = pd.DataFrame([{"step": 0, "layer": la, "quantity": "grad_pre_std",
                              "value": 1e-3} for la in layers])
    theory = pd.DataFrame({"layer": layers, "grad_pre_var": [1e-6] * len(layers)})
    fig = plot.gradient_per_layer({"relu + he": measured}, {"relu + he": theory})
    fig.savefig(shots / "theory_over_measurement.png", dpi=200)
    lines = fig.axes[0].get_lines()
    dashed = [ln for ln in lines if ln.get_linestyle() == "--"]
    assert len(dashed) == 1
    colour = to_rgba(dashed[0].get_color())
    above = [ln for ln in lines if ln.get_marker() not in ("None", "", None)
             and to_rgba(ln.get_color()) == colour and ln.get_zorder() > dashed[0].get_zorder()]
    assert above, [(ln.get_linestyle(), ln.get_marker(), ln.get_zorder()) for ln in lines]
    assert sorted(above[0].get_xdata()) == layers


def test_the_overlay_names_two_runs_with_zero_layers_in_full():
    # five torch Watch runs overlaid, two of which ended with layers 1-3 at exactly 0: the end
    # panel's title named them 'torch-d…-lr1e3, torch-n…-lr1e9' (14 characters each) though
    # both names fit on the line
    from depthlab import plot

    def table(end: float) -> pd.DataFrame:
        return pd.DataFrame([{"step": s, "layer": la, "quantity": "grad_pre_std",
                              "value": (1e-3 * la if s == 0 or la == 4 else end)}
                             for s in (0, 10) for la in (1, 2, 3, 4)])

    runs = {"torch-float64": table(1e-3), "torch-one-step": table(2e-3),
            "torch-diverges-lr1e3": table(0.0), "torch-nan-lr1e9": table(0.0)}
    fig = plot.gradient_per_layer(runs)
    title = fig.axes[1].get_title()
    assert "torch-diverges-lr1e3, torch-nan-lr1e9:" in title, title


def test_a_first_layer_with_no_gradient_at_the_end_is_vanishing_not_unmeasured(
        tmp_path, monkeypatch):
    # a torch Watch run at lr 1e3 whose lower ReLU layers all died: its first layer's
    # gradient at the end was exactly 0, the flow table's ratio at end 0 and its meaning
    # "at the end not measured", though 0 is the measurement: no gradient reaches layer 1
    import html as html_lib
    import re

    from test_report import synthetic_record

    from depthlab.experiments.store import Store
    from depthlab.report import build, write_report

    _no_figures(monkeypatch)
    dead = synthetic_record("dead00000001", depth=4, sweep="s1")
    p = dead.probes
    last = p["step"].max()
    lower = (p["step"] == last) & (p["quantity"] == "grad_pre_std") & p["layer"].between(1, 3)
    p.loc[lower, "value"] = 0.0
    with Store(tmp_path) as store:
        store.add_run(dead)
        store.add_run(synthetic_record("live00000002", depth=4, sweep="s1", lr=0.01))
    text = write_report(tmp_path).read_text()
    flow = text[text.index(f"<h3>{build.SECTION_FLOW}</h3>"):]
    flow = html_lib.unescape(re.sub(r"<[^>]+>", " ", flow[:flow.index("</table>")]))
    row = next(line for line in flow.split("  ") if "not measured" in line
               or "no gradient at all" in line)
    assert "not measured" not in flow, flow
    assert "at the end vanishing: the first layer gets no gradient at all (0)" in row, flow


@pytest.fixture(scope="module")
def saxe_exchanged():
    """saxe2013 (quick) with the inits exchanged: the orthogonal nets drawn Gaussian (run
    once per session, shared with test_reproduce_more.py)."""
    from helpers.background import saxe_inits_exchanged

    return saxe_inits_exchanged()


def test_saxe_learning_time_texts_bound_a_ratio_on_the_side_that_never_learned(
        saxe_exchanged):
    # saxe2013 with the inits exchanged (the orthogonal nets drawn Gaussian): the claims
    # failed, but their texts said 'steps: 2: 20, 8: 31, 32: 33 (ratio ≥ 1.6)' of two measured
    # times, '33 vs > 500 steps (ratio ≥ 0.1)' where the ratio is at most 0.066, and the note
    # explained orthogonal times of 19, 86, > 500 steps as staying 'within a few tens of steps'
    res = saxe_exchanged
    spread, growth, slower = res.claims[-3:]
    assert not (spread.holds or growth.holds or slower.holds)
    assert "> 500" in spread.measured and "(max/min ≥ " in spread.measured, spread.measured
    assert "(ratio " in growth.measured and "≥" not in growth.measured.split("(ratio")[1], \
        growth.measured
    assert "vs > 500 steps (ratio ≤ 0.0" in slower.measured, slower.measured
    note = next(n for n in res.notes if n.startswith("'Learning time roughly"))
    assert "within a few tens of steps" not in note and "fails outright" in note, note


def test_a_doctor_section_title_does_not_say_doctor_twice(tmp_path, monkeypatch):
    # `depthlab doctor --torch models.py:make_model --out DIR` stores the run as
    # "doctor models.py:make_model": its section and contents link read
    # "Doctor: doctor models.py:make_model"
    import re

    from test_report import synthetic_record

    from depthlab.experiments.store import Store
    from depthlab.report import write_report

    _no_figures(monkeypatch)
    rec = synthetic_record("doc000000009", depth=2, sweep=None)
    rec.kind, rec.name = "doctor", "doctor models.py:make_model"
    with Store(tmp_path) as store:
        store.add_run(rec)
    text = write_report(tmp_path).read_text()
    heads = re.findall(r"<h2 id=\"[^\"]+\">([^<]+)</h2>", text)
    assert "Doctor: models.py:make_model" in heads, heads
    assert "Doctor: doctor" not in text


def test_a_divergence_with_finite_weights_says_so_not_an_empty_list(tmp_path, monkeypatch):
    # `depthlab run` at lr 20 diverged at step 3 with every weight still finite: the report's
    # Divergence block listed "nonfinite_parameters []"
    import html as html_lib
    import re

    from test_report import synthetic_record

    from depthlab.experiments.store import Store
    from depthlab.report import write_report

    _no_figures(monkeypatch)
    rec = synthetic_record("div000000001", depth=3, sweep=None, status="diverged")
    rec.divergence = dict(rec.divergence, nonfinite_parameters=[])
    other = synthetic_record("div000000002", depth=3, sweep=None, status="diverged", lr=0.5)
    with Store(tmp_path) as store:
        store.add_run(rec)
        store.add_run(other)
    text = html_lib.unescape(write_report(tmp_path).read_text())
    pairs = re.findall(r"<span>([^<]*)</span><code>([^<]*)</code>", text)
    shown = [v for k, v in pairs if "parameters" in k]
    assert sorted(shown) == ["dense3.W", "none (every weight still finite)"], pairs
    assert "[]" not in [v for _, v in pairs]


def test_an_accuracy_stuck_at_chance_is_drawn_flat_not_magnified(shots):
    # the tour's 20-layer sigmoid net: train accuracy 0.0970 -> 0.0986 and validation 0.1 at
    # both epochs; the accuracy axis ran from 0.097 to 0.100, so the train line climbed the
    # whole panel as if the net learned
    from depthlab.report import figures

    steps = pd.DataFrame({"step": range(1, 41), "loss": [2.3] * 40})
    epochs = pd.DataFrame({"epoch": [1, 2], "step": [20, 40], "train_loss": [2.31, 2.305],
                           "train_acc": [0.0970, 0.0986], "val_loss": [2.32, 2.316],
                           "val_acc": [0.1, 0.1]})
    fig = figures.training_curves(steps, epochs, None)
    fig.savefig(shots / "accuracy_at_chance.png")
    lo, hi = fig.axes[1].get_ylim()
    assert hi - lo >= 0.1 and lo <= 0.097 and hi >= 0.1, (lo, hi)
    # a real rise keeps its own range (not squeezed into the minimum)
    epochs = epochs.assign(train_acc=[0.3, 0.9], val_acc=[0.25, 0.85])
    lo, hi = figures.training_curves(steps, epochs, None).axes[1].get_ylim()
    assert lo < 0.3 and 0.9 < hi < 1.0, (lo, hi)


@pytest.mark.parametrize("name", ["saxe2013", "all"])
def test_a_reproduction_out_that_is_a_file_is_named_as_a_file(tmp_path, capsys, name):
    # `depthlab reproduce saxe2013 --out results.txt` (an existing file) said "cannot be used
    # as a folder: File exists", and with 'all' ("results.txt/depth-ladder") "Not a
    # directory", neither naming the file in the way
    from helpers.cli import assert_one_line_error, run_cli

    afile = tmp_path / "results.txt"
    afile.write_text("mine\n")
    code, out, err = run_cli(capsys, "reproduce", name, "--quick", "-q", "--out", str(afile))
    assert_one_line_error(code, err, f"'{afile}' is a file, not a folder")
    assert afile.read_text() == "mine\n"


def test_dense_measured_points_leave_the_theory_dashes_on_top(shots):
    # 100 layers whose theory equals the measurement: the measured markers drawn again over
    # the theory (for sparse points, above) touch each other and hid every dash, while the
    # legend said "dashed: theory"
    from depthlab import plot

    layers = list(range(1, 101))
    measured = pd.DataFrame([{"step": 0, "layer": la, "quantity": "grad_pre_std",
                              "value": 1e-3 * 1.05 ** la} for la in layers])
    theory = pd.DataFrame({"layer": layers, "grad_pre_var": [(1e-3 * 1.05 ** la) ** 2
                                                             for la in layers]})
    fig = plot.gradient_per_layer({"deep": measured}, {"deep": theory})
    fig.savefig(shots / "theory_over_100_layers.png")
    lines = fig.axes[0].get_lines()
    dashed = [ln for ln in lines if ln.get_linestyle() == "--"]
    assert len(dashed) == 1
    assert max(ln.get_zorder() for ln in lines) == dashed[0].get_zorder(), \
        [(ln.get_linestyle(), ln.get_marker(), ln.get_zorder()) for ln in lines]


def test_the_flow_meaning_quotes_the_end_ratio_when_it_moved_within_one_class(tmp_path,
                                                                                monkeypatch):
    # a tanh depth-20 he_normal sweep point: ratio 1.715 at init, 3.271 at the end, both
    # 'flows'; the meaning read "flows: within a factor 1.7 of 1" beside 3.271, the init's
    # number alone. A ratio that barely moved keeps one reading
    from depthlab.experiments.store import RunRecord, Store
    from depthlab.report import build

    _no_figures(monkeypatch)

    def row_of(folder, end_first: float) -> str:
        rows = [{"step": step, "layer": layer, "quantity": "grad_pre_std", "value": v}
                for step, values in {0: (1.715e-3, 1.2e-3, 1e-3),
                                     10: (end_first, 1.2e-3, 1e-3)}.items()
                for layer, v in enumerate(values, 1)]
        config = {"data": {"name": "digits"}, "model": {"sizes": [64, 48, 48, 48, 10],
                                                        "activation": "tanh",
                                                        "init": "he_normal"},
                  "train": {"optimizer": "sgd", "lr": 0.05}}
        with Store(folder) as store:
            store.add_run(RunRecord(id="r", name="r", kind="run", sweep=None,
                                    status="finished", config=config,
                                    metrics={"steps": 10, "val_acc": 0.83}, seconds=1.0,
                                    steps=pd.DataFrame({"step": [1, 10], "loss": [2.0, 1.0]}),
                                    probes=pd.DataFrame(rows)))
        store = Store(folder)
        group = build._Group("all", "All runs", "runs", build._runs_table(store))
        text = build._flow_section(store, group, build._Pngs())
        row = text[text.index("<td>r</td>"):]
        return row[:row.index("</tr>")]

    moved = row_of(tmp_path / "a", 3.271e-3)
    assert ("flows: within a factor 1.7 of 1; at the end within a factor 3.3 of 1"
            in moved), moved
    kept = row_of(tmp_path / "b", 1.9e-3)
    assert "<td>flows: within a factor 1.7 of 1</td>" in kept, kept


def test_saxe_numbers_meant_to_be_one_are_readable_when_they_are_not(saxe_exchanged):
    # the same exchanged run: the heavy-tail claim read '(orthogonal 5820155003.771299)' and
    # the condition-number claim 'orthogonal at 32: 1017064102436335616.000000'
    texts = {c.claim[:10]: c.measured for c in saxe_exchanged.claims}
    tail, cond = texts["heavy tail"], texts["Gaussian: "]
    # the numbers themselves are rounding noise of the exchanged run (1e+18 on one CPU's BLAS,
    # 4.4e+18 on another's): their format is what is pinned
    assert re.search(r"\(orthogonal \d(\.\d)?e\+\d\d\)", tail), tail
    assert re.search(r"orthogonal at 32: \d(\.\d)?e\+\d\d\b", cond), cond
    assert not any(len(w) > 12 for w in (tail + " " + cond).replace(",", " ").split()), \
        (tail, cond)
