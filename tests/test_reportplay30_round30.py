"""Round 30 (reportplay30): what a teacher sees in the report's figures and the playground."""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd

matplotlib.use("Agg")


def _profile(depth: int, steps=(0, 10), decay: float = 0.97) -> pd.DataFrame:
    """A NumPy probe table of ``depth`` hidden layers: a gradient std shrinking towards layer 1
    by ``decay`` a layer and an activation std of 0.5, at ``steps``."""
    rows = []
    for s in steps:
        for la in range(1, depth + 1):
            rows.append((s, la, "grad_pre_std", 1e-3 * decay ** (depth - la)))
            rows.append((s, la, "act_std", 0.5))
    return pd.DataFrame(rows, columns=["step", "layer", "quantity", "value"])


def _line_width_px(fig, label: str) -> float:
    """Horizontal extent, in pixels, of the first panel's line labelled ``label``."""
    ax = fig.axes[0]
    line = next(ln for ln in ax.get_lines() if ln.get_label() == label)
    x = np.asarray(line.get_xdata(), float)
    px = ax.transData.transform(np.column_stack([x, np.ones_like(x)]))[:, 0]
    return float(px.max() - px.min())


def test_a_shallow_run_beside_a_200_layer_run_is_not_squeezed_into_a_dot():
    # depth 2 and depth 10 beside depth 200 on one linear layer axis: the 2-layer run was one
    # dot (its two layers 2 px apart) and the 10-layer run a smudge of 19 px on a 400 px panel
    from depthlab import plot

    runs = {"depth2": _profile(2), "depth10": _profile(10), "depth200": _profile(200, (0,))}
    for draw in (plot.gradient_per_layer,):  # activation_per_layer: the same _per_layer
        fig = draw(runs, theory=False)
        fig.canvas.draw()
        ax = fig.axes[0]
        panel = ax.get_window_extent().width
        assert _line_width_px(fig, "depth2") > 0.08 * panel, draw
        assert _line_width_px(fig, "depth10") > 0.3 * panel, draw
        # the axis says it is not linear, and still reads in layer numbers
        assert "log" in ax.get_xlabel() and "layer" in ax.get_xlabel(), ax.get_xlabel()
        ticks = {t.get_text() for t in ax.get_xticklabels() if t.get_text()}
        assert {"1", "10", "100"} <= ticks, ticks
    # runs of similar depths keep the linear axis (3 beside 12 reads well)
    fig = plot.gradient_per_layer({"a": _profile(3), "b": _profile(12)}, theory=False)
    assert fig.axes[0].get_xscale() == "linear"


def _transformer_table(blocks: int) -> pd.DataFrame:
    """A probe table shaped like a ``depthlab.torch`` Watch of an ``nn.TransformerEncoder`` of
    ``blocks`` layers and a head: per block ``self_attn`` (weights only: its in-projection has
    no output of its own, so no ``grad_pre_std``), ``self_attn.out_proj``, ``linear1``,
    ``linear2``; steps 0 and 2."""
    rows, layer = [], 0
    for b in range(blocks):
        for part in ("self_attn", "self_attn.out_proj", "linear1", "linear2"):
            layer += 1
            name = f"encoder.layers.{b}.{part}"
            for s in (0, 2):
                rows.append((s, layer, name, "weight_std", 0.1))
                if part != "self_attn":
                    rows.append((s, layer, name, "grad_pre_std", 1e-3 * (1 + layer % 3)))
    layer += 1
    for s in (0, 2):
        rows.append((s, layer, "head", "weight_std", 0.1))
        rows.append((s, layer, "head", "grad_pre_std", 3e-2))
    return pd.DataFrame(rows, columns=["step", "layer", "module", "quantity", "value"])


def test_every_module_of_a_transformers_gradient_heatmap_is_named():
    # a 6-block encoder's heatmap (24 rows, 5 of them blank self_attn rows) named every other
    # row: 'encoder.layers.N.linear1' appeared nowhere, so its row could not be identified;
    # a 12-block one (49 rows) lost half its names to the 40-tick cap too
    from depthlab.report import figures as F

    for blocks in (6, 12):
        table = _transformer_table(blocks)
        fig = F.gradient_heatmap(table)
        fig.canvas.draw()
        ax = fig.axes[0]
        shown = {t.get_text() for t in ax.get_yticklabels() if t.get_text()}
        measured = set(table.loc[table["quantity"] == "grad_pre_std", "module"])
        assert measured <= shown, (blocks, sorted(measured - shown))
        # and the names do not print over each other
        boxes = sorted((t.get_window_extent() for t in ax.get_yticklabels() if t.get_text()),
                       key=lambda b: b.y0)
        assert all(a.y1 <= b.y0 + 0.5 for a, b in zip(boxes, boxes[1:])), blocks


def test_a_shallow_run_with_the_same_values_as_a_deeper_one_is_not_hidden_under_it():
    # runs of one seed and width share their first layers' weights: at initialization the
    # activation std of the 2-, 10- and 50-layer runs equals the 200-layer run's on their
    # layers, and the deepest run, drawn last, covered them all: the teacher saw one orange
    # line and four names in the legend
    from matplotlib.colors import to_rgb

    from depthlab import plot

    runs = {"depth2": _profile(2), "depth200": _profile(200, decay=0.99)}
    fig = plot.activation_per_layer(runs, theory=False)
    fig.canvas.draw()
    ax = fig.axes[0]
    shallow = next(ln for ln in ax.get_lines() if ln.get_label() == "depth2")
    x, y = ax.transData.transform((1.0, 0.5))  # its first point, pixels from the bottom left
    rgba = np.asarray(fig.canvas.buffer_rgba())
    pixel = rgba[int(round(rgba.shape[0] - y)), int(round(x)), :3] / 255
    assert np.allclose(pixel, to_rgb(shallow.get_color()), atol=0.1), pixel
    # and the panel says why the deeper run's line starts in another colour
    assert "same values" in ax.get_title(), ax.get_title()


def _sequential_table(n: int = 9) -> pd.DataFrame:
    """A depthlab.torch table of an ``nn.Sequential`` of ``n`` Linear + Sigmoid pairs: layer k
    is module ``2 (k - 1)``, as the report names it ``[0], [2], [4], ...``; steps 0 and 5."""
    rows = []
    for s in (0, 5):
        for la in range(1, n + 1):
            mod = str(2 * (la - 1))
            rows += [(s, la, mod, "act_mean", 0.5), (s, la, mod, "act_std", 0.2)]
    return pd.DataFrame(rows, columns=["step", "layer", "module", "quantity", "value"])


def test_a_figure_naming_modules_does_not_list_layer_numbers_that_read_as_other_modules():
    # the activation bands of a 9-layer nn.Sequential were titled 'layers 1, 3, 5, 7, 9 of
    # 9' above a legend '[0], [4], [8], [12], [16]': a student read '[4]' and 'layer 3' as
    # two layers (module [4] is layer 3), and looked for layers 1, 3, 5 in the legend
    from depthlab import plot

    fig = plot.activation_bands(_sequential_table())
    ax = fig.axes[0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[:2] == ["[0]", "[4]"], legend
    assert "layers 1, 3" not in ax.get_title(), ax.get_title()
    assert "5 of 9 layers" in ax.get_title(), ax.get_title()


def test_a_transformers_module_heatmap_is_shown_at_its_drawn_size_in_the_browser(
        browser, tmp_path):
    # a PyTorch run's heatmap (module names on its rows, 7.6 in wide) sat in a half-width
    # column of the page: shown at 74% of its size at 1400 px, the 7 pt names read at 5 pt
    from helpers.browser import checked_page, screenshot_dir

    from depthlab.report import build, figures
    from depthlab.report import html as H

    table = _transformer_table(6)
    beside = figures.figure_png(figures._new_figure(6.4, 3.8)[0])  # the activations' place
    blocks = [build._heatmap_block(table, "t", build._Pngs()),
              H.figure_block(beside, "a figure beside it", "its caption")]
    page = tmp_path / "report.html"  # a run's figures as its report section lays them out
    page.write_text(H.page("t", [], f"<div class=\"grid\">{''.join(blocks)}</div>"),
                    encoding="utf-8")
    with checked_page(browser, width=1400) as pg:
        pg.goto(page.resolve().as_uri())
        fig = pg.locator("figure", has=pg.locator(f"h3:text-is('{build.FIG_GRAD_HEATMAP}')"))
        shown, natural = fig.locator("img").evaluate("i => [i.clientWidth, i.naturalWidth]")
        fig.screenshot(path=str(screenshot_dir(tmp_path / "shots") / "torch_heatmap.png"))
    assert natural > 700 and shown >= 0.97 * natural, (shown, natural)


def test_the_playground_takes_no_first_last_ratio_of_a_single_hidden_layer(browser, server):
    # depth 1: 'layer 1 0.001194, layer 1 0.001194; first / last = 1 (10^0.0)', a ratio of 1
    # by construction read as a gradient that flows perfectly (the report says "one hidden
    # layer: no first/last ratio to take")
    from helpers.browser import checked_page

    with checked_page(browser, width=1300) as pg:
        pg.goto(server.url + "?model.depth=1&model.width=8")
        pg.wait_for_function("document.getElementById('grad-summary').textContent"
                             ".startsWith('step ')", timeout=30_000)
        text = pg.text_content("#grad-summary")
        assert "first / last =" not in text, text
        assert "one hidden layer" in text and "no first / last ratio" in text, text
        value = pg.evaluate("S.last.grad_std[0]")  # the layer's value is still shown
        shown = float(text.split("layer 1 ", 1)[1].split(";", 1)[0])
        assert abs(shown - value) <= 0.01 * value, (text, value)
