"""Round 38 (viewhunt38): what a reader sees in reports and the playground."""

from __future__ import annotations

import numpy as np
import pandas as pd

LONG = "a_really_long_submodule_name_for_the_projection_layer_of_the_encoder"


def _torch_like_probes(n: int = 12) -> pd.DataFrame:
    """A Watch-style probe table: layers 1..n named ``k.<70 characters>``, two steps."""
    rows = []
    for step in (0, 10):
        for la in range(1, n + 1):
            for q in ("grad_pre_std", "act_std"):
                rows.append({"step": step, "layer": la, "module": f"{la}.{LONG}",
                             "quantity": q, "value": 1e-3 * 1.5 ** la * (1 + step / 100)})
    return pd.DataFrame(rows)


def test_long_module_names_are_cut_on_figures_and_stay_distinct():
    from depthlab import plot
    from depthlab.report import figures

    probes = _torch_like_probes()
    names = figures.layer_names(probes)
    assert len(names) == 12 and len(set(names.values())) == 12
    assert max(len(v) for v in names.values()) <= figures.MAX_MODULE_CHARS
    assert names[12].startswith("12.a_really") and names[12].endswith("of_the_encoder")
    # short names and "$" are kept as they were (escaped, not typeset as math)
    short = pd.DataFrame({"step": [0, 0], "layer": [1, 2], "module": ["fc$1", "0"],
                          "quantity": ["act_std"] * 2, "value": [1.0, 2.0]})
    assert figures.layer_names(short) == {1: r"fc\$1", 2: "[0]"}
    fig = plot.gradient_per_layer({"watch": probes})
    ticks = [t.get_text() for ax in fig.axes for t in ax.get_xticklabels() if t.get_text()]
    assert ticks and max(len(t) for t in ticks) <= figures.MAX_MODULE_CHARS, ticks
    # the panels keep most of the figure's height (70-character names took most of it)
    ax = fig.axes[0]
    assert ax.get_position().height > 0.35, ax.get_position()
    assert np.isfinite(fig.get_figheight())


def test_gradient_flow_row_of_a_run_whose_gradients_all_died_says_zero_not_not_finite(tmp_path):
    """A finished ReLU run at lr 3 (spirals, 6 x 16) whose units all died after step 5: every
    layer's gradient exactly 0 from step 10 on. Its row read "0.07333 at step 5, then not
    finite" beside a finished run, a finite loss and a figure titled "step 5, the last above
    0": nothing was ever non-finite."""
    from depthlab.experiments.store import RunRecord, Store
    from depthlab.report import build

    grads = {0: (1.35e-4, 1.9e-4, 2.9e-4, 4.5e-4, 6.3e-4, 7.9e-4),
             5: (3.0e-5, 4.7e-5, 6.3e-5, 1.15e-4, 1.89e-4, 4.14e-4),
             10: (0.0,) * 6, 15: (0.0,) * 6}
    rows = [{"step": s, "layer": la, "quantity": "grad_pre_std", "value": v}
            for s, values in grads.items() for la, v in enumerate(values, 1)]
    config = {"data": {"name": "spirals"},
              "model": {"sizes": [2] + [16] * 6 + [2], "activation": "relu",
                        "init": "glorot_uniform"},
              "train": {"optimizer": "sgd", "lr": 3.0}}
    record = RunRecord(id="dead-relu", name="dead-relu", kind="run", sweep=None,
                       status="finished", config=config, metrics={"steps": 16}, seconds=1.0,
                       steps=pd.DataFrame({"step": range(1, 17), "loss": [0.7] * 16}),
                       probes=pd.DataFrame(rows))
    with Store(tmp_path) as store:
        store.add_run(record)
    store = Store(tmp_path)
    group = build._Group("all", "All runs", "runs", build._runs_table(store))
    text = build._flow_section(store, group, build._Pngs())
    row = text[text.index("<td>dead-relu</td>"):]
    row = row[:row.index("</tr>")]
    assert "not finite" not in row, row
    assert "0 / 0: no gradient in any layer" in row, row
    assert "at the end no gradient at all (0 in every layer)" in row, row


def test_activation_bands_right_margin_holds_its_legend_not_more():
    """The bands' figure kept a fixed 1.75 in right margin for a 0.9 in legend ("layer 10"):
    the report scaled the 7.6 in PNG down in its half column, its text smaller than the
    figures beside it. The margin is now the legend's width plus a small pad."""
    from depthlab import plot

    rows = [{"step": s, "layer": la, "quantity": q, "value": v}
            for s in (0, 10, 20) for la in range(1, 11)
            for q, v in (("act_mean", 0.01 * la), ("act_std", 0.6 / la))]
    fig = plot.activation_bands(pd.DataFrame(rows))
    ax = fig.axes[0]
    renderer = fig.canvas.get_renderer()
    legend_right = ax.get_legend().get_window_extent(renderer).x1 / fig.dpi
    blank = fig.get_figwidth() - legend_right
    assert 0 < blank <= 0.35, (fig.get_figwidth(), legend_right)
    # the axes and the legend keep their room: nothing drawn past the figure's edge
    title = ax.title.get_window_extent(renderer)
    assert title.x0 >= 0 and title.x1 / fig.dpi <= fig.get_figwidth()
    assert ax.get_position().width * fig.get_figwidth() > 4.5
