"""Round 15 of adversarial report reading (a teacher and a learner looking at the figures).

* the pre-activation percentile figure of a run that diverged after one step (its last
  layer's step 1 NaN) drew step 0 alone on an axis from step -0.045 to 0.045 and said nothing
  of step 1;
* the activations' mean ± std figure of that run ended the lines of its overflowed layers
  (8 and 10 of 10) at step 0 without a word;
* the xu2016 reproduction page drew the sigmoid blue and tanh orange in its activation figure,
  and tanh blue and the sigmoid orange in its gradient figure just below;
* the ioffe2015 figure's percentile legends sat on their lines (with BN the 85th percentile
  ran behind the box at the top left: three lines across the width leave no free corner);
* on a phone, a report table's numbers broke over two lines ("1.464e-" above "12" in the demo's
  gradient-flow table).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from helpers.browser import checked_page, screenshot_dir

from depthlab import plot
from depthlab.report import figures


def _table(values: dict[int, float], layer: int = 3) -> pd.DataFrame:
    """A probe table of ``pre_p*`` rows of ``layer`` (and act rows, so it feeds an activation)
    at the given steps, the percentiles spread around each step's median."""
    rows = []
    for step, v in values.items():
        for q, d in (("p2", -3), ("p15", -1), ("p50", 0), ("p85", 1), ("p98", 3)):
            rows.append((step, layer, f"pre_{q}", v + d if np.isfinite(v) else v))
        rows.append((step, layer, "act_mean", 0.0))
    return pd.DataFrame(rows, columns=["step", "layer", "quantity", "value"])


def test_percentiles_of_a_run_that_diverged_after_one_step():
    fig = figures.percentile_bands(_table({0: 0.5, 1: np.nan}))
    ax = fig.axes[0]
    # was: xlim (-0.045, 0.045) with ticks at -0.04, -0.02, 0, 0.02, 0.04 and no word on step 1
    assert list(ax.get_xticks()) == [0.0], ax.get_xticks()
    assert ax.get_xlim() == (-1.0, 1.0), ax.get_xlim()
    assert "not drawn: not finite (NaN/inf) at step 1" in ax.get_title(), ax.get_title()
    # a run whose values stop later says from which step
    ax = figures.percentile_bands(_table({0: 0.5, 10: 0.4, 20: 0.3, 30: np.nan,
                                          40: np.inf})).axes[0]
    assert "not finite (NaN/inf) from step 30" in ax.get_title(), ax.get_title()
    # every step finite: the title as before
    ax = figures.percentile_bands(_table({0: 0.5, 10: 0.4, 20: 0.3})).axes[0]
    assert "not drawn" not in ax.get_title(), ax.get_title()


def test_percentiles_never_finite_say_so():
    for values in ({0: np.nan, 1: np.inf}, {0: np.nan, 1: np.nan}):
        ax = figures.percentile_bands(_table(values)).axes[0]
        texts = [t.get_text() for t in ax.texts]
        # was: no word, or "no 'pre_p50' probes recorded" when every value was NaN
        assert any("not finite (NaN/inf) at every recorded step" in t for t in texts), texts


def test_activation_bands_name_the_layers_that_overflowed():
    rows = []
    for step in (0, 1):
        for layer in (1, 2, 3):
            over = step == 1 and layer == 3
            rows += [(step, layer, "act_mean", np.nan if over else 0.1 * layer),
                     (step, layer, "act_std", np.inf if over else 0.5)]
    table = pd.DataFrame(rows, columns=["step", "layer", "quantity", "value"])
    fig = plot.activation_bands(table)
    title = fig.axes[0].title
    # was: "Mean ± std of the activations\nall 3 layers" and layer 3's line ending at step 0
    assert "not drawn: not finite (NaN/inf) in layer 3 at step 1" in title.get_text()
    renderer = fig.canvas.get_renderer()
    top = title.get_window_extent(renderer).y1
    assert top <= fig.bbox.height, (top, fig.bbox.height)  # the third line is not cut off
    ok = table.assign(value=table["value"].where(np.isfinite(table["value"]), 0.3))
    assert "not drawn" not in plot.activation_bands(ok).axes[0].get_title()


def test_xu2016_colours_each_activation_alike_in_both_figures():
    from matplotlib.colors import to_hex

    from depthlab.reproduce import xu2016

    _, tc = xu2016._taylor_table()
    act = xu2016._fig_activations(tc)
    profiles = {c["label"]: (np.geomspace(1e-3, 1, 10), np.geomspace(1e-3, 1, 10))
                for c in xu2016._configs()}
    grad = xu2016._fig_gradients(profiles, 128, 2)

    def colours(ax) -> dict[str, str]:
        return {ln.get_label().removesuffix(" (theory)"): to_hex(ln.get_color())
                for ln in ax.get_lines() if not ln.get_label().startswith("_")
                and not ln.get_label().endswith(" (measured)")}

    left, right = colours(act.axes[0]), colours(grad.axes[0])
    shared = set(left) & set(right)
    assert shared == {"sigmoid", "tanh", "rescaled sigmoid 4σ−2", "penalized tanh"}, shared
    # was: sigmoid #1f77b4 / tanh #ff7f0e on the left, tanh #1f77b4 / sigmoid #ff7f0e on the right
    assert all(left[k] == right[k] for k in shared), (left, right)
    assert len(set(right.values())) == len(right)  # five networks, five colours


def test_ioffe2015_percentile_legends_cover_no_line():
    from types import SimpleNamespace

    from depthlab.reproduce import ioffe2015

    steps = np.arange(0, 3001, 100)
    rise = 1.9 - 0.9 * np.exp(-steps / 300)  # the 85th percentile with BN, as measured

    def rec(shift: float):
        p = np.stack([np.full(steps.size, -1.8), np.zeros(steps.size), rise + shift], axis=1)
        return SimpleNamespace(steps=steps, array=lambda: p[:, :, None].repeat(3, axis=2))

    runs = {k: {"evals": pd.DataFrame({"step": steps[1:], "val_acc": 0.9}), "rec": rec(s)}
            for k, s in (("plain", -0.8), ("bn", 0.0))}
    fig = ioffe2015._figure(runs, {"plain": np.full(3, 0.5), "bn": np.full(3, 0.1)},
                            "mnist5k", 3000)
    fig.canvas.draw()
    for ax in fig.axes[1:]:
        box = ax.get_legend().get_window_extent()
        for line in ax.get_lines():
            xy = line.get_transform().transform(line.get_xydata())
            inside = ((xy[:, 0] > box.x0) & (xy[:, 0] < box.x1) & (xy[:, 1] > box.y0)
                      & (xy[:, 1] < box.y1))
            # was: the legend box at the top left over the 85th percentile's first 500 steps
            assert not inside.any(), (ax.get_title(), line.get_label())
        # and the legend is not cut off below the figure
        assert box.y0 >= 0, box


def test_a_number_in_a_report_table_stays_on_one_line_on_a_phone(browser, tmp_path):
    from depthlab.report import html

    rows = [["sigmoid + glorot", 1.464e-12, 1.409e-12, "vanishing: the first layer gets "
             "6.8e+11x less gradient", 0.1], ["tanh + glorot", 0.2864, 1.021, "flows: within "
             "a factor 3.5 of 1", 0.65]]
    body = html.table(["run", "ratio at init", "ratio at end", "meaning", "val acc"], rows)
    path = tmp_path / "report.html"
    path.write_text(html.page("gradient flow", [("runs", "2")], body), encoding="utf-8")
    shots = screenshot_dir(tmp_path / "shots")
    with checked_page(browser, width=375, height=700) as pg:
        pg.goto(path.as_uri())
        pg.screenshot(path=str(shots / "round15_phone_table.png"))
        lines = pg.evaluate("""[...document.querySelectorAll('td.num')].map((td) => {
            const r = document.createRange(); r.selectNodeContents(td);
            return [td.textContent, new Set([...r.getClientRects()].map((b) => b.top)).size];
        })""")
        # was: 1.464e-12 and 1.409e-12 on two lines each in a 375 px wide window
        assert lines and all(n == 1 for _, n in lines), lines
        assert pg.evaluate("document.documentElement.scrollWidth") <= 375  # the box scrolls
