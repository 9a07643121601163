"""Round 9: what a person sees in the report's figures and pages (helper "report").

- 62 layers named ``encoder.layers.N.self_attn.out_proj`` (a 60-block torch model watched by
  ``depthlab.torch.Watch``): the rotated module names under the per-layer figures printed over
  each other. The ticks were thinned to a count (40), which left neighbours one layer apart,
  0.065 in on a 4 in axis, under the 0.083 in height of a 6 pt label. Now thinned by the
  axis length (first and last kept, every label a pitch of 1.35 font sizes from the next).
"""

from __future__ import annotations

import pandas as pd
import pytest

from depthlab import plot
from depthlab.report import figures

LONG = ["inp"] + [f"encoder.layers.{i}.self_attn.out_proj" for i in range(60)] + ["out"]


def _named_table(names: list[str], steps=(0, 5)) -> pd.DataFrame:
    rows = [(s, i + 1, n, "grad_pre_std", 1e-3 * 1.5 ** i)
            for s in steps for i, n in enumerate(names)]
    return pd.DataFrame(rows, columns=["step", "layer", "module", "quantity", "value"])


def _tick_pitch_in(fig, ax, axis: str) -> tuple[list[str], float, float]:
    """The labels on ``axis``, the smallest distance between two neighbouring labelled ticks
    in inches, and the labels' font size in inches."""
    ticks = list(ax.get_xticks() if axis == "x" else ax.get_yticks())
    labels = ax.get_xticklabels() if axis == "x" else ax.get_yticklabels()
    lo, hi = sorted(ax.get_xlim() if axis == "x" else ax.get_ylim())
    box = ax.get_position()
    length = box.width * fig.get_figwidth() if axis == "x" else box.height * fig.get_figheight()
    pitch = min(b - a for a, b in zip(ticks, ticks[1:])) * length / (hi - lo)
    return [t.get_text() for t in labels], pitch, max(t.get_fontsize() for t in labels) / 72


@pytest.mark.parametrize("draw, axis", [
    (lambda t: plot.gradient_per_layer(t), "x"),
    (lambda t: figures.gradient_profile(t), "x"),
    (lambda t: plot.gradient_heatmap(t), "y"),
])
def test_sixty_module_names_do_not_overlap(draw, axis):
    fig = draw(_named_table(LONG))
    ax = fig.axes[0]
    texts, pitch, height = _tick_pitch_in(fig, ax, axis)
    assert pitch >= height, (pitch, height)  # was 0.065 in against 0.083 in
    assert texts[0] == "inp" and texts[-1] == "out"
    assert len(texts) >= 20  # thinned, not emptied
    assert len(texts) == len(set(texts))


def test_few_module_names_all_shown():
    names = [f"layer{i}.conv" for i in range(1, 13)]
    fig = plot.gradient_per_layer(_named_table(names))
    texts, pitch, height = _tick_pitch_in(fig, fig.axes[0], "x")
    assert texts == names and pitch >= height


def _diverged_record(rid: str = "diverge-relu"):
    """The probes of ``depthlab run`` at lr 50 (digits, relu 64x3): gradients flowing at
    step 0 (ratio 1.04), exploding at step 2 (1.6e10 / 163), all NaN at step 3."""
    import math

    from depthlab.experiments.store import RunRecord

    grads = {0: (7.21e-4, 6.91e-4, 6.93e-4), 2: (1.563e10, 1.107e6, 163.2),
             3: (math.nan,) * 3}
    rows = [{"step": step, "layer": layer, "quantity": "grad_pre_std", "value": v}
            for step, values in grads.items() for layer, v in enumerate(values, 1)]
    config = {"data": {"name": "digits"}, "model": {"sizes": [64, 64, 64, 64, 10],
                                                    "activation": "relu", "init": "he_normal"},
              "train": {"optimizer": "sgd", "lr": 50.0}}
    return RunRecord(id=rid, name=rid, kind="run", sweep=None, status="diverged",
                     config=config, metrics={"steps": 3}, seconds=1.0,
                     steps=pd.DataFrame({"step": [1, 2, 3], "loss": [3.0, 6.5e5, 4.3e18]}),
                     probes=pd.DataFrame(rows))


def test_gradient_flow_table_shows_a_diverged_runs_explosion(tmp_path):
    """A run diverged at lr 50: the figure's 'end of training' panel drew its gradients at
    step 2 falling from 1.6e10 to 163 (ratio 9.6e7), but the table's row read 'ratio at end:
    none (diverged)', 'meaning: flows: within a factor 1 of 1' (its init alone), as the
    last step's NaN ratio was all it looked at."""
    from depthlab.experiments.store import Store
    from depthlab.report import build

    with Store(tmp_path) as store:
        store.add_run(_diverged_record())
    store = Store(tmp_path)
    group = build._Group("all", "All runs", "runs", build._runs_table(store))
    text = build._flow_section(store, group, build._Pngs())
    row = text[text.index("<td>diverge-relu</td>"):]
    row = row[:row.index("</tr>")]
    assert "9.577e+07 at step 2, then not finite" in row
    assert ("flows: within a factor 1.04 of 1; at step 2 (last finite) exploding: the first layer "
            "gets 9.6e+07x more gradient") in row


def test_activation_title_does_not_count_layer_nine_of_eight():
    """A CNN watched by depthlab.torch has activations at layers 2..9 of its 10 (the stem's
    and the head's outputs feed no activation module): the band figure's title read 'layers
    2, 4, 6, 7, 9 of 8'."""
    modules = {i: f"encoder.{(i - 2) // 2}.conv{1 + i % 2}" for i in range(2, 10)}
    rows = [(s, i, m, q, 0.1 * i) for s in (0, 2, 4) for i, m in modules.items()
            for q in ("act_mean", "act_std")]
    table = pd.DataFrame(rows, columns=["step", "layer", "module", "quantity", "value"])
    title = plot.activation_bands(table).axes[0].get_title()
    assert "of 8" not in title.replace("of the 8", "")
    assert "5 of the 8 layers with values" in title
    numpy_rows = table[table["layer"] <= 9].assign(layer=table["layer"] - 1).drop(
        columns="module")  # layers 1..8: numbered as before
    assert "layers 1, 3, 5, 6, 8 of 8" in plot.activation_bands(numpy_rows).axes[0].get_title()


def test_heatmap_says_which_blank_cells_are_not_finite():
    """The diverged run's heatmap left step 3 (every gradient NaN) blank with nothing saying
    why: a blank column read as 'not recorded'."""
    probes = _diverged_record().probes
    title = plot.gradient_heatmap(probes).axes[0].get_title()
    assert "blank: not finite (NaN/inf) at step 3" in title
    healthy = probes[probes["step"] < 3]
    assert "blank" not in plot.gradient_heatmap(healthy).axes[0].get_title()


def test_update_ratio_says_where_it_stopped_drawing():
    """A torch run at lr 1e3: update ratios of 1e6..6e8 up to step 4, then inf and NaN at
    steps 4..7; the lines just stopped at step 3 or 4 (a log axis cannot draw inf)."""
    import math

    rows = [(0, layer, math.nan) for layer in (1, 2, 3)]  # step 0: no previous weights
    rows += [(s, layer, 10.0 ** (s + layer)) for s in (1, 2, 3) for layer in (1, 2, 3)]
    rows += [(4, 1, 3e6), (4, 2, math.inf), (4, 3, 6e8)]
    rows += [(s, layer, v) for s, v in ((5, math.nan), (6, math.inf), (7, math.inf))
             for layer in (1, 2, 3)]
    table = pd.DataFrame(rows, columns=["step", "layer", "value"]).assign(
        quantity="update_ratio")
    title = plot.update_ratio(table).axes[0].get_title()
    assert title.replace("\n", " ").endswith(
        "not drawn: not finite (NaN/inf) in layer 2 from step 4; layers 1, 3 from step 5")
    finite = table[table["step"] <= 3]  # step 0's NaN alone is no note
    assert "not drawn" not in plot.update_ratio(finite).axes[0].get_title()
    gap = table.assign(value=table["value"].where(table["step"] != 5, 1.0))  # 5 finite
    assert plot.update_ratio(gap).axes[0].get_title().replace("\n", " ").endswith(
        "not finite (NaN/inf) in layer 2 at steps 4, 6, 7; layers 1, 3 from step 6")


def test_end_panel_names_the_step_a_diverged_run_is_drawn_at():
    """The per-layer figure's 'at the end of training' panel drew the diverged run at step 2
    (its step 3 is all NaN) with nothing saying so: a reader took 1.6e10 for the end."""
    import math

    probes = _diverged_record().probes
    fig = plot.gradient_per_layer({"diverge-relu": probes}, False)
    assert fig.axes[1].get_title() == ("at the end of training\n"
                                       "diverge-relu: step 2, the last finite")
    line = fig.axes[1].lines[0]
    assert list(line.get_xdata()) == [1, 2, 3]
    assert line.get_ydata()[0] == pytest.approx(1.563e10)
    # inf rather than NaN (a table not cleaned by the report): the same, not an empty panel
    inf = probes.assign(value=probes["value"].where(probes["step"] < 3, math.inf))
    fig = plot.gradient_per_layer({"diverge-relu": inf}, False)
    assert fig.axes[1].get_title().endswith("step 2, the last finite")
    assert len(fig.axes[1].lines) == 1
    finished = plot.gradient_per_layer({"ok": probes[probes["step"] < 3]}, False)
    assert finished.axes[1].get_title() == "at the end of training"


def test_runs_sharing_a_name_keep_it_in_the_legend_and_table(tmp_path):
    """Five torch runs (Watch on CNN, on M twice, on Sequential, a doctor): the two named 'M'
    made every run of the page's overlay and gradient-flow table an id ('8c4b6dcab7e8'),
    which no section heading ('Run CNN') matches."""
    from depthlab.experiments.store import Store
    from depthlab.report import build

    with Store(tmp_path) as store:
        for rid, name in (("aaa111", "CNN"), ("bbb222", "M"), ("ccc333", "M"), ("ddd444", "")):
            rec = _diverged_record(rid)
            rec.name = name
            store.add_run(rec)
    runs = build._runs_table(Store(tmp_path))
    assert build._labels(runs) == {"aaa111": "CNN", "bbb222": "M (bbb222)",
                                   "ccc333": "M (ccc333)", "ddd444": "ddd444"}
    unique = runs[runs["id"].isin(["aaa111", "bbb222"])]
    assert build._labels(unique) == {"aaa111": "CNN", "bbb222": "M"}


def test_reproduction_figure_heading_from_its_panels():
    """glorot2010's Table 1 figure (two panels 'Table 1 analogue: shapeset, ...' and '...:
    mnist5k, ...', no suptitle) was headed 'Table1' on the reproduction page."""
    from depthlab.reproduce.page import figure_title

    fig, axes = figures._new_figure(ncols=2)
    axes[0].set_title("Table 1 analogue: shapeset, 5 hidden layers")
    axes[1].set_title("Table 1 analogue: mnist5k, 5 hidden layers")
    assert figure_title("table1", fig) == "Table 1 analogue"
    axes[1].set_title("something else")
    assert figure_title("table1", fig) == "Table 1"
    assert figure_title("fig6_7_at_init", fig) == "Fig 6 7 at init"


def _bottom_blank_in(fig) -> float:
    """Inches between the figure's bottom edge and the lowest text of its first axes."""
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    ax = fig.axes[0]
    texts = [ax.xaxis.label, *ax.get_xticklabels()]
    return min(t.get_window_extent(r).y0 for t in texts if t.get_text()) / fig.dpi


@pytest.mark.parametrize("n", [20, 62])  # 7 pt names, then 6 pt ones
def test_rotated_module_names_fit_without_a_blank_band(n):
    """Under 36-character module names the per-layer figures kept 1.3 in of blank (the
    margin was estimated at 0.062 in a character; at 6 pt they take 0.041)."""
    names = LONG[:n - 1] + ["out"]
    for fig in (plot.gradient_per_layer(_named_table(names)),
                figures.gradient_profile(_named_table(names))):
        blank = _bottom_blank_in(fig)
        assert 0 <= blank < 0.45, blank  # inside the figure, no band below


def test_saturation_figure_shades_steps_whose_pre_activations_are_not_finite():
    """A torch MLP at lr 1e3: from step 5 every pre-activation is NaN, and its inactive and
    dead fractions read 0.0 (a NaN entry is not on the flat side), drawn as a healthy drop
    from 0.98 to 0 with nothing saying the values behind it were NaN."""
    import math

    rows = []
    for step in range(8):
        for layer in (1, 2):
            finite = step < 3 or (step < 5 and layer == 1)
            rows += [(step, layer, "pre_std", 1.0 * 10 ** step if finite else math.nan),
                     (step, layer, "inactive_frac", 0.5 if step < 5 else 0.0),
                     (step, layer, "dead_frac", 0.1 if step < 5 else 0.0)]
    table = pd.DataFrame(rows, columns=["step", "layer", "quantity", "value"])
    fig = plot.saturation(table)
    ax = fig.axes[0]
    spans = [p.get_x() for p in ax.patches]  # one shaded band per step from step 3
    assert sorted(spans) == pytest.approx([2.5, 3.5, 4.5, 5.5, 6.5])
    texts = [t.get_text() for t in fig.axes[-1].get_legend().get_texts()]
    assert texts[0] == "pre-activation\nNaN/inf"
    healthy = plot.saturation(table[table["step"] < 3])
    assert not healthy.axes[0].patches


def test_a_ratio_near_one_is_not_within_a_factor_1_of_1():
    """The diverged run's ratio at init, 1.04, was described as 'flows: within a factor 1 of
    1' (two digits round 1.04 to 1)."""
    from depthlab.demo import describe_ratio

    assert describe_ratio(1.0404) == "flows: within a factor 1.04 of 1"
    assert describe_ratio(1 / 1.0404) == "flows: within a factor 1.04 of 1"
    assert describe_ratio(0.5) == "flows: within a factor 2 of 1"
    assert describe_ratio(1.9) == "flows: within a factor 1.9 of 1"


def test_a_diverged_runs_missing_values_are_said(tmp_path):
    """The diverged run's section listed 'train_loss', 'val_acc' and its divergence's 'loss'
    and 'max_grad' as keys with nothing after them (None and NaN were formatted as '')."""
    from depthlab.experiments.store import Store
    from depthlab.report import build
    from depthlab.report import html as H

    assert H.key_values([("loss", None), ("q", float("nan")), ("lr", 50.0)]) == (
        '<div class="kv"><div><span>loss</span><code>none</code></div><div><span>q</span>'
        '<code>nan</code></div><div><span>lr</span><code>50</code></div></div>')
    record = _diverged_record()
    record.metrics = {"steps": 3, "train_loss": None, "val_acc": None}
    record.divergence = {"message": "training diverged at step 4: loss = nan", "loss": None,
                         "step": 4}
    with Store(tmp_path) as store:
        store.add_run(record)
    page = build.write_report(tmp_path).read_text()
    assert "<span>train_loss</span><code>none</code>" in page
    # round 11: a divergence's null loss is the NaN/inf it stopped on, said so
    assert "<span>loss</span><code>not finite (NaN/inf)</code>" in page
    assert "<code></code>" not in page


def test_histogram_panels_have_no_offset_text_over_their_titles():
    """The diverged run's gradient histograms at step 3 (densities ~1e-15, values ~1e16) drew
    matplotlib's shared '1e-15' and '1e16' offsets above and below each panel, into the
    panel titles ('1e−8layer 3, step 3: range ...')."""
    import numpy as np

    rows = []
    for step, scale in ((0, 1e-3), (3, 1.8e16)):
        edges = np.linspace(-scale, scale, 51)
        for layer in (1, 2):
            rows += [(step, layer, "grad", a, b, 100 if k == 25 else 1)
                     for k, (a, b) in enumerate(zip(edges[:-1], edges[1:]))]
    hist = pd.DataFrame(rows, columns=["step", "layer", "kind", "bin_left", "bin_right",
                                       "count"])
    fig = plot.activation_histograms(hist, "grad")
    fig.canvas.draw()
    for ax in fig.axes:
        assert ax.xaxis.get_offset_text().get_text() == ""
        assert ax.yaxis.get_offset_text().get_text() == ""
    labels = [t.get_text() for t in fig.axes[1].get_xticklabels() if t.get_text()]
    assert any("e+16" in t for t in labels), labels


def test_theory_dashes_stay_visible_where_they_meet_the_measurement():
    """A torch Sequential (ReLU, default init) whose depthlab.torch.predict theory equals its
    measured gradients: the dashed theory, in the run's colour, thinner and under its solid
    line, could not be seen, though the legend listed it."""
    from matplotlib.colors import to_hex

    rows = [(0, layer, "grad_pre_std", v) for layer, v in ((1, 1.5e-4), (2, 3.6e-4), (3, 4e-3))]
    table = pd.DataFrame(rows, columns=["step", "layer", "quantity", "value"])
    theory = pd.DataFrame({"layer": [1, 2, 3], "grad_pre_var": [(1.5e-4 / 4e-3) ** 2,
                                                                 (3.6e-4 / 4e-3) ** 2, 1.0]})
    ax = plot.gradient_per_layer({"Sequential": table}, {"Sequential": theory}).axes[0]
    measured, = (ln for ln in ax.lines if not ln.get_label().endswith(": theory")
                 and not ln.get_label().startswith("_"))  # (not its points drawn again)
    drawn, = (ln for ln in ax.lines if ln.get_label().endswith(": theory"))
    assert drawn.get_ydata() == pytest.approx(measured.get_ydata())  # they coincide
    assert drawn.get_zorder() > measured.get_zorder()
    halo = drawn.get_path_effects()[0]
    assert to_hex(halo._gc["foreground"]) == "#ffffff"
    assert halo._gc["linewidth"] > drawn.get_linewidth()


def test_activation_bands_of_a_diverged_run_keep_its_early_steps_visible():
    """A torch MLP at lr 1e3: activations 0.3 at step 0, 3.5e32 at step 4; on the linear axis
    (offset 1e32) every step before the last lay flat on 0."""
    rows = []
    for step, scale in enumerate((0.3, 4.0, 6e4, 5e10, 3.5e32)):
        for layer in (1, 2):
            rows += [(step, layer, "act_mean", scale * layer), (step, layer, "act_std", scale)]
    table = pd.DataFrame(rows, columns=["step", "layer", "quantity", "value"])
    ax = plot.activation_bands(table).axes[0]
    assert ax.get_yscale() == "symlog"
    assert ax.yaxis.get_transform().linthresh == 1.0  # 0.6 rounded up to a power of ten
    ticks = list(ax.get_yticks())
    assert 0.0 in ticks and max(ticks) > 1e30 and len(ticks) <= 9
    assert "symlog" in ax.get_ylabel()
    healthy = table[table["step"] <= 1]
    assert plot.activation_bands(healthy).axes[0].get_yscale() == "linear"
