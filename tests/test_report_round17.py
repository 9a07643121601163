"""Round 17: what a person looks at in reports, figures and reproductions (helper reports17).
Each test failed before its fix. Figures are saved as PNGs in the test's folder
(``DEPTHLAB_SCREENSHOTS=DIR`` keeps them)."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest
from helpers.browser import screenshot_dir

matplotlib.use("Agg")

from depthlab.report import figures  # noqa: E402


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    return screenshot_dir(tmp_path_factory.mktemp("screenshots17"))


def _probe_rows(layer: int, module: str, quantity: str, values) -> list[dict]:
    return [{"step": s, "layer": layer, "module": module, "quantity": quantity, "value": v}
            for s, v in zip((0, 2, 4), values)]


def test_saturation_panels_colour_a_layer_alike_as_the_legend_says(shots):
    # a CNN whose conv layers feed ReLUs and whose hidden Linear feeds a Tanh: the inactive
    # panel has layers 1-2, the saturated panel layer 3 alone. Each panel coloured its own
    # layers from the start of the palette, and the legend (the last panel's) named them
    # otherwise: the tanh layer's legend colour was the second conv layer's line
    rows = (_probe_rows(1, "features.0", "inactive_frac", (0.45, 0.45, 0.46))
            + _probe_rows(2, "features.2", "inactive_frac", (0.30, 0.31, 0.32))
            + _probe_rows(3, "classifier.1", "saturated_frac", (0.10, 0.20, 0.25))
            + _probe_rows(1, "features.0", "dead_frac", (0.0, 0.0, 0.01))
            + _probe_rows(2, "features.2", "dead_frac", (0.02, 0.02, 0.02))
            + _probe_rows(3, "classifier.1", "dead_frac", (0.0, 0.0, 0.0))
            + _probe_rows(1, "features.0", "pre_std", (1.0, 1.0, 1.0)))
    fig = figures.saturation_dead(pd.DataFrame(rows))
    fig.savefig(shots / "saturation_mixed_activations.png")
    colour: dict[str, tuple] = {}
    for ax in fig.axes:
        for line in ax.get_lines():
            label = line.get_label()
            if label.startswith("_"):
                continue
            rgba = matplotlib.colors.to_rgba(line.get_color())
            assert colour.setdefault(label, rgba) == rgba, (label, ax.get_title())
    legend = [lg for ax in fig.axes for lg in [ax.get_legend()] if lg is not None]
    assert len(legend) == 1
    named = {t.get_text(): matplotlib.colors.to_rgba(h.get_color())
             for t, h in zip(legend[0].get_texts(), legend[0].legend_handles)}
    assert set(named) == {"features.0", "features.2", "classifier.1"}
    for label, rgba in colour.items():
        assert named[label] == rgba, label


def test_sweep_bars_by_run_keep_the_values_that_tell_runs_apart(shots):
    # a sweep's generated names "mixed:depth=2,lr=50,activation=tanh": cut in their middle
    # to 32 characters, the depth-2 lr-0.05 and lr-50 tanh names collided, so two bars read
    # "mixed:depth=2,lr=50,activatio…#1" and nothing on the axis told tanh from relu
    from depthlab import plot

    rows = []
    for depth in (2, 8):
        for lr in (0.05, 50.0):
            for act in ("tanh", "relu"):
                rows.append({"name": f"mixed:depth={depth},lr={lr:g},activation={act}",
                             "depth": depth, "train.lr": lr, "model.activation": act,
                             "status": "finished", "val_acc": 0.1 + 0.01 * len(rows)})
    runs = pd.DataFrame(rows)
    fig = plot.sweep_metric(runs, ["model.activation", "depth", "train.lr"], "val_acc")
    fig.savefig(shots / "sweep_bars_generated_names.png")
    ticks = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert len(ticks) == len(rows)
    # each bar names one run, every run has its bar (the bars follow the grid's order, not
    # the runs', since round 32)
    told = [[i for i, r in enumerate(rows) if r["name"].split(":", 1)[1] in t] for t in ticks]
    assert all(len(m) == 1 for m in told), list(zip(ticks, told))
    assert sorted(m[0] for m in told) == list(range(len(rows))), ticks
    assert not any("#" in t for t in ticks), ticks


def test_cut_labels_drops_a_prefix_every_label_shares():
    names = [f"an-experiment-with-a-long-name:point{k}:lr={lr}" for k, lr in
             enumerate((0.001, 0.01, 0.1))]
    cut = figures.cut_labels(names, 20)
    assert cut == ["…point0:lr=0.001", "…point1:lr=0.01", "…point2:lr=0.1"]
    # a lone label, or labels whose shared start has no separator, are cut as before
    assert figures.cut_labels(["x" * 40, "x" * 40], 10) == ["xxxxx…xxxx", "xxxxxxx…#1"]
    assert figures.cut_labels(["abcdefghijklmnopqrstuvwxyz"], 10) == ["abcde…wxyz"]


def _no_figures(monkeypatch) -> list[str]:
    """The report's figures are not drawn (seconds each); their names are kept."""
    from depthlab.report import build

    drawn: list[str] = []
    monkeypatch.setattr(build._Pngs, "add", lambda self, name, fn, *a, **k: drawn.append(name)
                        or b"")
    return drawn


def _flow_note(text: str) -> str:
    from depthlab.report import build

    flow = text[text.index(f"<h3>{build.SECTION_FLOW}</h3>"):]
    return flow[:flow.index("</table>")]


def test_the_overlay_says_a_run_is_missing_because_it_failed_not_because_it_ranked_low(
        tmp_path, monkeypatch):
    # a sweep of two points, one failed (refused before training: no probes): the gradient
    # flow note and the overlay's caption read "Showing 1 of 2 runs: the 1 best.", as if the
    # other had been left out for a lower accuracy
    from test_report import synthetic_record

    from depthlab.experiments.store import Store
    from depthlab.report import write_report

    _no_figures(monkeypatch)
    with Store(tmp_path) as store:
        store.add_run(synthetic_record("okay00000001", depth=2, sweep="s1"))
        store.add_run(synthetic_record("fail00000001", depth=3, sweep="s1", status="failed"))
        store.add_run(synthetic_record("nopr00000001", depth=4, sweep="s1", probes=False))
    text = write_report(tmp_path).read_text()
    note = _flow_note(text)
    assert "the 1 best" not in text
    assert "Showing 1 of 3 runs; 1 failed (no probes); 1 recorded no probes." in note


def test_two_stand_alone_runs_of_one_name_get_sections_told_apart(tmp_path, monkeypatch):
    # `depthlab run` twice with one name and two seeds: two sections and two contents links
    # titled "Run same", which a reader could not tell apart
    import re

    from test_report import synthetic_record

    from depthlab.experiments.store import Store
    from depthlab.report import write_report

    _no_figures(monkeypatch)
    with Store(tmp_path) as store:
        for rid in ("aaaa00000001", "bbbb00000002"):
            rec = synthetic_record(rid, depth=2, sweep=None)
            rec.name = "same"
            store.add_run(rec)
        other = synthetic_record("cccc00000003", depth=3, sweep=None)
        store.add_run(other)
    text = write_report(tmp_path).read_text()
    heads = re.findall(r"<h2 id=\"[^\"]+\">([^<]+)</h2>", text)
    assert "Run same (aaaa00000001)" in heads and "Run same (bbbb00000002)" in heads, heads
    assert f"Run {other.name}" in heads  # a name of its own stays alone
    assert text.count(">Run same (aaaa00000001)<") == 2  # its heading and its contents link


def test_ioffe_percentile_panels_mark_where_the_drift_is_measured_from(shots):
    # the claims' drift runs from t0 = the first record at 10% of training to the end, but
    # panels (b) and (c) drew the whole run unmarked: with BN the 15-85 band widened from
    # 2.1 to 3.8 in the first steps, and "drift 0.14" beside it read as a wrong number
    from types import SimpleNamespace

    import numpy as np

    from depthlab.reproduce import ioffe2015

    steps = list(range(0, 3001, 100))
    g = np.random.default_rng(0)
    runs = {}
    for k in ("plain", "bn"):
        widen = np.minimum(np.array(steps) / 300.0, 1.0)[:, None]
        p = np.stack([-1 - widen, 0.05 * g.standard_normal((len(steps), 1)), 1 + widen],
                     axis=1) + 0.01 * g.standard_normal((len(steps), 3, 100))
        runs[k] = {"evals": pd.DataFrame({"step": steps[1:], "val_acc": np.linspace(
                       0.5, 0.9, len(steps) - 1)}),
                   "rec": SimpleNamespace(steps=steps, array=lambda p=p: p)}
    d = {k: ioffe2015.drift(steps, runs[k]["rec"].array()) for k in runs}
    fig = ioffe2015._figure(runs, d, "mnist5k", 3000)
    fig.savefig(shots / "ioffe2015_fig1_t0.png")
    t0 = steps[int(np.argmax(np.array(steps) >= ioffe2015.EARLY_FRACTION * steps[-1]))]
    for ax in fig.axes[1:3]:
        spans = [c for c in ax.patches if c.get_label().startswith("before")]
        assert spans, [c.get_label() for c in ax.patches]
        assert spans[0].get_x() + spans[0].get_width() == pytest.approx(t0)
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        assert any("drift" in t for t in legend), legend


def _verification(kind: str, changes: dict, after_loss: float, helped: bool,
                  resolved: bool, metric_after: float) -> dict:
    return {"kind": kind, "prescription": changes, "helped": helped, "resolved": resolved,
            "before": {"train_loss": 2.307, "val_acc": 0.094},
            "after": {"train_loss": after_loss, "val_acc": 0.5},
            "metric": "max |mean activation|", "metric_before": 0.52,
            "metric_after": metric_after, "new_findings": []}


def test_a_doctor_report_shows_every_verified_cure_of_a_finding(tmp_path, monkeypatch):
    # the doctor verified two cures of one finding (tanh helped, a re-initialization did not);
    # the report's verification cell kept the first alone, so the cure that did not help,
    # which the command line prints, was missing from the page
    import html as html_lib
    import re

    from test_report import synthetic_record

    from depthlab.experiments.store import Store
    from depthlab.report import write_report

    _no_figures(monkeypatch)
    payload = {
        "findings": [{"kind": "mean_shift", "severity": "high", "layers": [1, 2],
                      "message": "sigmoid activations are not zero-centred",
                      "prescription": {"activation": "tanh", "init": "matched"}}],
        "verifications": [
            _verification("mean_shift", {"activation": "tanh", "init": "matched"}, 0.26,
                          True, True, 0.02),
            _verification("mean_shift", {"activation": "relu", "init": "matched"}, 1.41,
                          True, True, 0.55),
            _verification("mean_shift", {"init": "matched"}, 2.31, False, False, 0.51)]}
    with Store(tmp_path) as store:
        store.add_run(synthetic_record("doc000000001", depth=2, sweep=None, findings=payload))
    text = write_report(tmp_path).read_text()
    table = text[text.index("<th>verification</th>"):]
    row = html_lib.unescape(re.sub(r"<[^>]+>", " ", table[table.index("<tbody>"):
                                                         table.index("</tbody>")]))
    assert "activation=tanh; init=matched" in row and "activation=relu; init=matched" in row
    assert "2.307 → 2.31" in row and "did not help" in row, row
    # the relu cure: gone although its metric rose (as the command line says)
    assert "although the metric did not fall" in row, row


def test_notebook_views_draw_a_name_with_dollar_signs_as_text():
    # a run or Watch named "cost $\frac{1$ run": the report escapes "$" for matplotlib, the
    # notebook views did not, and Jupyter showed a mathtext ParseSyntaxException traceback
    # in place of the card
    import torch
    from test_report import synthetic_record

    import depthlab.torch as dlt

    record = synthetic_record("nbrec0000001", depth=3, sweep=None)
    record.name = "cost $\\frac{1$ run"
    card = record._repr_html_()
    assert "<img" in card and "frac{1$ run" in card

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    x, y = torch.randn(16, 4), torch.randint(0, 2, (16,))
    with dlt.Watch(model, every=1, name="$\\frac{1$ model") as watch:
        for _ in range(2):
            model.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            watch.step(loss)
    assert "<img" in watch._repr_html_()


def test_a_run_records_one_line_counts_its_steps_not_its_last_step_plus_one():
    # a NumPy run numbers its steps 1..N (a torch Watch 0..N-1): "max + 1" read
    # "RunRecord('…', finished, 201 steps, …)" for a run of 200 steps (metrics: steps 200)
    from test_report import synthetic_record

    record = synthetic_record("steps0000001", depth=2, sweep=None)
    assert record.metrics["steps"] == 200 and int(record.steps["step"].min()) == 1
    assert ", 200 steps" in repr(record), repr(record)
    record.steps = record.steps.assign(step=record.steps["step"] - 1)  # torch: 0..199
    assert ", 200 steps" in repr(record), repr(record)


def test_a_sweep_of_failed_runs_says_none_finished(tmp_path, monkeypatch):
    # every point failed (a size the data refuse): the runs note read "Showing 0 of 0
    # finished runs; 2 failed runs (errors only). The best run is expanded", with no best run
    import re

    from test_report import synthetic_record

    from depthlab.experiments.store import Store
    from depthlab.report import write_report

    _no_figures(monkeypatch)
    with Store(tmp_path) as store:
        for k, rid in enumerate(("fail00000001", "fail00000002")):
            rec = synthetic_record(rid, depth=2 + k, sweep="s1", status="failed", probes=False)
            rec.metrics = {}
            store.add_run(rec)
    text = write_report(tmp_path).read_text()
    note = re.search(r"<h3>Runs</h3><p class=\"note\">([^<]*)</p>", text).group(1)
    assert "0 of 0" not in note and "best" not in note, note
    assert note.startswith("No run finished; 2 failed runs (errors only)."), note
    # one failed run: singular
    with Store(tmp_path) as store:
        store.add_run(synthetic_record("okay00000003", depth=4, sweep="s1"))
    text = write_report(tmp_path).read_text()
    note = re.search(r"<h3>Runs</h3><p class=\"note\">([^<]*)</p>", text).group(1)
    assert note.startswith("Showing 1 of 1 finished run; 2 failed runs (errors only)."), note
    # a later section opens no run: its note must not say one is expanded
    with Store(tmp_path) as store:
        store.add_run(synthetic_record("othr00000004", depth=2, sweep="s0", val_acc=0.5))
    text = write_report(tmp_path).read_text()
    notes = re.findall(r"<h3>Runs</h3><p class=\"note\">([^<]*)</p>", text)
    opened = re.findall(r"<details class=\"run\" id=\"[^\"]+\" open>", text)
    assert len(notes) == 2 and len(opened) == 1, (notes, opened)
    assert "is expanded" in notes[0] and "is expanded" not in notes[1], notes


def test_the_overlay_names_the_run_whose_last_finite_step_it_draws_in_full(shots):
    # a sweep's overlay labels "activation=relu, depth=8, lr=50": the end panel's title cut
    # the diverged run's name to 24 characters, "activation=r…th=8, lr=50: step 120, the last
    # finite", which named neither its activation nor its depth
    from test_report import synthetic_probes

    from depthlab import plot

    runs = {"activation=tanh, depth=8, lr=0.05": synthetic_probes(8),
            "activation=relu, depth=8, lr=50": synthetic_probes(8, diverge_at=140)}
    fig = plot.gradient_per_layer(runs, False)
    fig.savefig(shots / "overlay_diverged_named.png")
    title = fig.axes[1].get_title()
    assert "activation=relu, depth=8, lr=50" in title, title
    assert "step 120, the last finite" in title, title
    # the title stays within its panel (it ran into the left panel's)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    box = fig.axes[1].title.get_window_extent(renderer)
    panel = fig.axes[1].get_window_extent(renderer)
    assert box.x0 >= fig.axes[0].get_window_extent(renderer).x1 and box.width <= panel.width * 1.15


def test_the_flow_table_gives_no_ratio_for_a_network_of_one_hidden_layer(tmp_path,
                                                                          monkeypatch):
    # one hidden layer is its own first and last: its ratio is 1 by construction, and the
    # table read "1, 1, flows: within a factor 1 of 1" as if the gradient had been measured
    # to flow
    import re

    from test_report import synthetic_probes, synthetic_record

    from depthlab.experiments.store import Store
    from depthlab.report import write_report

    _no_figures(monkeypatch)
    with Store(tmp_path) as store:
        one = synthetic_record("one000000001", depth=1, sweep="s1")
        one.probes = synthetic_probes(1)
        store.add_run(one)
        store.add_run(synthetic_record("four00000001", depth=4, sweep="s1"))
    text = write_report(tmp_path).read_text()
    flow = _flow_note(text)
    rows = {r[0]: r for r in (re.findall(r"<td[^>]*>([^<]*)</td>", row) for row in
                              re.findall(r"<tr>(.*?)</tr>", flow, re.S)) if r}
    row = rows["depth1-lr0.1"]
    assert "within a factor 1 of 1" not in row[3], row
    assert "one hidden layer" in row[3] and row[1] == "" and row[2] == "", row
    assert "less gradient" in rows["depth4-lr0.1"][3]  # four layers: a ratio, described


def test_a_reproduction_into_a_folder_of_another_leaves_only_its_own_figures(tmp_path):
    # `depthlab reproduce he2015 --out DIR`, then `reproduce xu2016 --out DIR`: figures/ kept
    # he2015's loss_and_gradients.png beside xu2016's PNGs (the page's own report removes the
    # figures it drew before); a file the reproduction did not write stays
    from matplotlib.figure import Figure

    from depthlab.reproduce.base import Claim, Experiment, Result
    from depthlab.reproduce.page import write_result

    def figure() -> Figure:
        fig = Figure(figsize=(2, 2))
        fig.subplots().plot([0, 1], [1, 0])
        return fig

    exp = Experiment("t", "T", "paper", lambda **kw: None)
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "mine.png").write_bytes(b"user's own")
    write_result(Result("he", "He", claims=[Claim("c", "p", "m", True, 1.0)],
                        figures={"loss_and_gradients": figure()}), tmp_path, exp)
    assert (tmp_path / "figures" / "loss_and_gradients.png").exists()
    write_result(Result("xu", "Xu", claims=[Claim("c", "p", "m", True, 1.0)],
                        figures={"gradients": figure(), "activations": figure()}), tmp_path, exp)
    pngs = sorted(p.name for p in (tmp_path / "figures").glob("*.png"))
    assert pngs == ["activations.png", "gradients.png", "mine.png"], pngs


def test_a_failed_runs_summary_lists_no_metrics_it_never_measured(tmp_path, monkeypatch):
    # a point refused before training (a size the data refuse) stores its metrics as None:
    # its section listed "seconds none, test_acc none, test_loss none, train_acc none,
    # train_loss none, val_acc none, val_loss none" above its error
    import re

    from test_report import synthetic_record

    from depthlab.experiments.store import Store
    from depthlab.report import write_report

    _no_figures(monkeypatch)
    with Store(tmp_path) as store:
        rec = synthetic_record("fail00000009", depth=2, sweep=None, status="failed",
                               probes=False)
        rec.metrics = {"train_loss": None, "val_acc": None, "test_acc": None, "seconds": None,
                       "steps": 0}
        store.add_run(rec)
    text = write_report(tmp_path).read_text()
    section = text[text.index('id="run-fail00000009"'):]
    keys = re.findall(r"<div><span>([^<]*)</span><code>", section)
    assert keys and "model.activation" in keys, section[:2000]
    assert not {"train_loss", "val_acc", "test_acc", "seconds"} & set(keys), keys
    assert "ValueError: boom" in section


def test_a_sweep_of_three_keys_does_not_say_its_values_miss_a_grid(tmp_path, monkeypatch):
    # depth x lr x activation, every combination run: the bar chart's caption said "the
    # values do not form a full grid, so bars instead of a heatmap" (a heatmap has two axes;
    # the grid was full)
    from test_report import synthetic_record

    from depthlab.experiments.store import Store
    from depthlab.report import write_report

    _no_figures(monkeypatch)
    with Store(tmp_path) as store:
        k = 0
        for depth in (2, 4):
            for lr in (0.01, 0.1):
                for act in ("tanh", "relu"):
                    store.add_run(synthetic_record(f"grid{k:08d}", depth=depth, lr=lr, act=act,
                                                   probes=False, val_acc=0.5 + 0.01 * k))
                    k += 1
    text = write_report(tmp_path).read_text()
    assert "do not form a full grid" not in text
    assert "3 keys vary (every combination was run): one bar per combination" in text
    with Store(tmp_path) as store:  # a fourth value of one key, run once: no longer full
        store.add_run(synthetic_record("grid00000099", depth=8, lr=0.1, act="tanh",
                                       probes=False))
    text = write_report(tmp_path).read_text()
    assert "3 keys vary (not every combination was run)" in text


def test_the_overlay_names_the_run_whose_layers_are_zero_in_full(shots):
    # "activation=relu, depth=2, lr=50" with every gradient 0 at the end: the end panel's
    # title read "activation…=2, lr=50: layers 1-2: zero", cut to 20 characters
    from test_report import synthetic_probes

    from depthlab import plot

    dead = synthetic_probes(2)
    dead.loc[(dead["quantity"] == "grad_pre_std") & (dead["step"] > 0), "value"] = 0.0
    runs = {"activation=tanh, depth=2, lr=0.05": synthetic_probes(2),
            "activation=relu, depth=2, lr=50": dead}
    fig = plot.gradient_per_layer(runs, False)
    fig.savefig(shots / "overlay_zero_named.png")
    title = fig.axes[1].get_title()
    assert "activation=relu, depth=2, lr=50" in title, title
    assert "layers 1-2: zero" in title, title
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    box = fig.axes[1].title.get_window_extent(renderer)
    assert box.x0 >= fig.axes[0].get_window_extent(renderer).x1, title


def test_the_depth_ladders_bn_claim_cites_what_the_papers_say():
    # the claims table put "BN: around 100 layers" in the paper column beside the measured
    # 10: no paper states that; Yang et al. 2019 (papers.md) predict plain BN nets' gradients
    # explode with depth at init, which is what the ladder measured
    from depthlab.reproduce import depth_ladder

    deep = {k: 2 for k in depth_ladder.NAIVE} | {k: 20 for k in depth_ladder.GOOD}
    deep |= {depth_ladder.BN: 10, depth_ladder.RES: 100}
    claims = {c.claim: c for c in depth_ladder.claims(deep, [3, 10, 20, 50, 100])}
    bn = claims["relu + he_normal + BN trains at depth ≥ 50"]
    assert "around 100" not in bn.paper and "Yang et al. 2019" in bn.paper, bn.paper
    assert not bn.holds and bn.value == 10 and bn.measured == "10"
    assert claims["residual + BN trains at the largest depth of the grid (100)"].holds


def test_the_overlay_says_which_layers_of_a_run_are_not_finite(shots):
    # a diverged run's last step with values: layers 1-4 finite (1e18 ... 1e32), layers 5-8
    # inf; its line stopped at layer 4 and nothing said where layers 5-8 had gone
    from test_report import synthetic_probes

    from depthlab import plot

    broken = synthetic_probes(8)
    end = (broken["quantity"] == "grad_pre_std") & (broken["step"] == 200)
    broken.loc[end & (broken["layer"] >= 5), "value"] = np.nan
    runs = {"tanh, lr=0.05": synthetic_probes(8), "relu, lr=50": broken}
    fig = plot.gradient_per_layer(runs, False)
    fig.savefig(shots / "overlay_nonfinite_layers.png")
    title = fig.axes[1].get_title()
    assert "relu, lr=50: layers 5-8: not finite (NaN/inf)" in title, title
    assert "not finite" not in fig.axes[0].get_title()
    # one run alone: the layers, without its name
    fig = plot.gradient_per_layer({"relu, lr=50": broken}, False)
    assert fig.axes[1].get_title().endswith("\nlayers 5-8: not finite (NaN/inf)")
