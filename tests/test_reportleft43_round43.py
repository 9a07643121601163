"""Round 43 (reportleft43): what the report hunt left: gradient ratios past float64's range, a
sweep of one value, and notebook figures of values near float64's largest warning."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pandas as pd
import pytest

STEPS = pd.DataFrame({"step": np.arange(1, 6), "loss": np.linspace(2.0, 1.0, 5)})


def _grads(first: float, last: float) -> pd.DataFrame:
    """``grad_pre_std`` of three layers (first, 0.5, last) at steps 0 and 5."""
    return pd.DataFrame([{"step": s, "layer": k, "quantity": "grad_pre_std",
                          "value": (first, 0.5, last)[k - 1]} for s in (0, 5) for k in (1, 2, 3)])


def _flow_rows(html: str) -> dict[str, list[str]]:
    """The gradient-flow table's rows: run label -> its cells, as text."""
    start = html.index("Gradient flow</h3>")
    table = html[start:html.index("</table>", start)]
    rows = {}
    for row in re.findall(r"<tr[^>]*>(.*?)</tr>", table, re.S)[1:]:
        cells = [re.sub(r"<[^>]+>", "", c).replace("&#x27;", "'").strip()
                 for c in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row, re.S)]
        rows[cells[0]] = cells
    return rows


def test_a_gradient_ratio_past_float64s_range_is_worded_as_measured(tmp_path):
    """A first-layer gradient of 1e-320 under a last of 1e30 (quotient 1e-350: 0 by
    underflow), 1e300 over 1e-300 (1e600: inf) and 1 over 0 were measured. The table read
    "0" and "no gradient at all (0)" for the first, "not measured" for the others, and
    "infx less gradient" for a subnormal 1e-310; 0 / 0 (a gradient only between the two) "not
    measured". Each is now written out in logarithms."""
    from depthlab.experiments.store import RunRecord, Store
    from depthlab.report import write_report

    cases = {"under": (1e-320, 1e30), "over": (1e300, 1e-300), "by0": (1.0, 0.0),
             "subnormal": (1e-300, 1e10), "dead": (0.0, 1.0), "ends0": (0.0, 0.0)}
    with Store(tmp_path) as store:
        for name, (first, last) in cases.items():
            store.add_run(RunRecord(id=name, name=name, steps=STEPS, probes=_grads(first, last)))
    rows = _flow_rows(write_report(tmp_path).read_text())
    for name in ("under", "over", "by0", "subnormal", "ends0"):
        assert "not measured" not in " ".join(rows[name]), rows[name]
        assert "inf" not in rows[name][3] and "no gradient at all" not in rows[name][3], \
            rows[name]
    assert rows["under"][1].startswith("1e-350 (1e-320 / 1e+30"), rows["under"]
    assert "vanishing: the first layer gets 1e+350x less gradient" in rows["under"][3]
    assert rows["over"][1].startswith("1e+600 (1e+300 / 1e-300"), rows["over"]
    assert "exploding: the first layer gets 1e+600x more gradient" in rows["over"][3]
    assert rows["by0"][1].startswith("infinite (1 / 0)"), rows["by0"]
    assert rows["by0"][3].startswith("exploding: the last layer gets no gradient (0)")
    assert "1e+310x less gradient" in rows["subnormal"][3], rows["subnormal"]
    # 0 in the first and the last layer, 0.5 between them: 0 / 0, measured
    assert rows["ends0"][1] == "0 / 0", rows["ends0"]
    assert "no gradient in the first or in the last layer" in rows["ends0"][3], rows["ends0"]
    # a first layer's gradient of exactly 0 is still "no gradient at all" (a float64 ratio)
    assert rows["dead"][1] == "0" and "no gradient at all (0)" in rows["dead"][3], rows["dead"]


def test_a_sweep_of_one_value_names_its_key_and_point(tmp_path):
    """``[sweep] "train.lr" = [0.05]``: the sweep's section said "No configuration key varies
    between runs", its table had no train.lr column and no metric was drawn: the swept key
    and its one value were nowhere in the section."""
    from depthlab.experiments.store import RunRecord, Store
    from depthlab.report import write_report

    probes = _grads(0.2, 0.4)
    config = {"model": {"sizes": [2, 8, 8, 2], "activation": "relu"}, "train": {"lr": 0.05}}
    with Store(tmp_path) as store:
        store.add_run(RunRecord(id="p0", name="one:lr=0.05", sweep="sw-1", config=config,
                                steps=STEPS, probes=probes,
                                metrics={"train_loss": 0.7, "val_acc": 0.585}))
        store.set_sweep_size("sw-1", 1)
        store.set_sweep_grid("sw-1", {"train.lr": []})  # numbers: ordered by the report
    html = write_report(tmp_path).read_text()
    assert "No configuration key varies" not in html
    assert "Swept over one value: train.lr = 0.05." in html
    start = html.index("runs-table-")
    header = html[start:html.index("</tr>", start)]
    assert ">train.lr<" in header, header
    assert 'alt="val_acc by train.lr"' in html  # its one point drawn


def _table(values: dict[int, list[float]], quantity: str) -> pd.DataFrame:
    return pd.DataFrame([{"step": s, "layer": k + 1, "quantity": quantity, "value": v}
                         for s, row in values.items() for k, v in enumerate(row)])


FIGURES = ["update_ratio", "activation_per_layer", "activation_bands", "training_curves",
           "gradient_per_layer", "weight_std"]
BIG = {0: [1e-3, 1e-2, 1e-1], 10: [1e100, 1e200, 1e300], 20: [1e301, 1e305, 1.7e308]}


def _figure(figure: str):
    from depthlab import plot

    if figure == "activation_bands":
        return plot.activation_bands(pd.concat([_table(BIG, "act_mean"), _table(BIG, "act_std")]))
    if figure == "training_curves":
        return plot.training_curves(pd.DataFrame({"step": np.arange(1, 21), "loss": np.r_[
            np.linspace(2, 1, 10), np.geomspace(10, 1e300, 10)]}))
    if figure == "activation_per_layer":
        return plot.activation_per_layer({"calm": _table({0: [0.6, 0.5, 0.4], 20: [
            0.7, 0.6, 0.5]}, "act_std"), "blown": _table(BIG, "act_std")})
    if figure == "gradient_per_layer":
        return plot.gradient_per_layer(_table(BIG, "grad_pre_std"))
    if figure == "weight_std":
        return plot.weight_std(_table(BIG, "weight_std"))
    return plot.update_ratio(_table(BIG, "update_ratio"))


def _assert_in_view(fig) -> None:
    drawn = 0
    for ax in fig.axes:
        lo, hi = ax.get_ylim()
        assert np.isfinite([lo, hi]).all(), (ax.get_title(), lo, hi)
        for line in ax.lines:  # every value drawn in view (the axis fell back to 1 .. 10 or
            y = np.asarray(line.get_ydata(), float)  # -0.001 .. 0.001 beside 1e300)
            y = y[np.isfinite(y)]
            drawn += y.size
            assert ((lo <= y) & (y <= hi)).all(), (ax.get_title(), lo, hi, y)
    assert drawn


@pytest.mark.parametrize("figure", FIGURES)
def test_notebook_figures_of_values_near_float64s_largest_warn_nothing(figure):
    """``plot.update_ratio`` / the activation figures of a float64 run reaching 1e300..1.7e308
    printed NumPy's "overflow encountered in exp" (matplotlib's own log/symlog autoscaling,
    while the figure was built) in a notebook. Built and drawn silently now, the values still
    on the axes."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = _figure(figure)
        fig.canvas.draw()
    _assert_in_view(fig)


@pytest.mark.parametrize("figure", ["activation_bands", "weight_std"])
def test_values_near_float64s_largest_are_in_view_whatever_the_warnings(figure):
    """Warnings aside: ``plot.activation_bands`` of means and stds reaching 1.7e308 from 1e-3
    raised OverflowError (a symlog tick at ``1e-3 * 10.0 ** 311``), then drew its lines far
    outside a -0.001 .. 0.001 axis (the top layer's scale taken from an earlier step, its
    ``|mean| + std`` overflowing); ``plot.weight_std`` of such weights fell back to a 1 .. 10
    axis with no point in view."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fig = _figure(figure)
        fig.canvas.draw()
    _assert_in_view(fig)
    if figure == "activation_bands":  # each layer divided by a scale of its own values
        assert "layer 3 (s = 1.7e+308)" in [t.get_text() for t in fig.axes[0].get_legend(
            ).get_texts()]


def test_a_watch_cards_ratio_past_float64s_range_is_written_out():
    """A Watch card's gradient ratio of 1e300 over 1e-300 read ``inf``."""
    from depthlab.report import notebook

    table = _grads(1e300, 1e-300).assign(module=lambda t: t["layer"].map(
        {1: "0", 2: "2", 3: "4"}))
    head = table[table["layer"] == 3].assign(layer=4, module="6", value=0.5)
    text = notebook._watch_ratio_text(pd.concat([table, head], ignore_index=True))
    assert "<b>1e+600 (1e+300 / 1e-300, past float64&#x27;s largest)</b>" in text, text


def test_the_update_ratio_names_which_layer_is_not_finite_where():
    """Layer 2's update ratio inf at step 10, layer 1's NaN at step 20, layer 3 finite: the
    title said "not drawn: not finite (NaN/inf) from step 10" beside layer 3's line at step 20
    and layer 1's point at step 10. Each layer's steps are named now."""
    from depthlab import plot

    table = _table({0: [1e-3, 1e-2, 1e-1], 10: [1e-3, np.inf, 1e-2], 20: [np.nan, 1e-3, 1e-2]},
                   "update_ratio")
    title = plot.update_ratio(table).axes[0].get_title().replace("\n", " ")
    assert title.endswith("not drawn: not finite (NaN/inf) in layer 2 at step 10; layer 1 at "
                          "step 20"), title
    every = _table({0: [1e-3, 1e-2], 10: [np.inf, np.nan], 20: [np.nan, np.inf]}, "update_ratio")
    title = plot.update_ratio(every).axes[0].get_title().replace("\n", " ")
    assert title.endswith("not drawn: not finite (NaN/inf) from step 10"), title  # as before
