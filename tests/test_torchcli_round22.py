"""Round 22 (torchcli22): the user-facing paths of depthlab.torch runs: ``depthlab doctor
--torch`` and the report of Watch and torch doctor runs."""

from __future__ import annotations

import math

import pandas as pd

from depthlab import plot


def _branching_table(nan_at: tuple[int, int] | None = None) -> pd.DataFrame:
    """A Watch-like table of a model whose forward runs module ``b`` at even steps and ``c``
    at odd ones: ``c`` (numbered 4, first run at step 1) has no rows at step 0, ``b`` none at
    step 1. ``nan_at``: (step, layer) recorded as NaN (a diverged value)."""
    names = {1: "a", 2: "b", 3: "o", 4: "c"}
    rows = []
    for step in (0, 1):
        for layer in (1, 2, 3) if step == 0 else (1, 3, 4):
            value = 1e-3 * layer * (1 + step)
            if nan_at == (step, layer):
                value = math.nan
            for q in ("grad_pre_std", "act_std"):
                rows.append({"step": step, "layer": layer, "module": names[layer],
                             "quantity": q, "value": value})
        rows.append({"step": step, "layer": 0, "module": "", "quantity": "loss",
                     "value": 1.0})
    return pd.DataFrame(rows)


def _titles(fig) -> str:
    return "\n".join(ax.get_title() for ax in fig.axes)


def test_a_layer_not_run_at_a_step_is_not_called_not_finite():
    # a layer that did not run at the panel's step (no rows there) was titled
    # "c: not finite (NaN/inf)": nothing was measured, nothing diverged
    for draw in (plot.gradient_per_layer, plot.activation_per_layer):
        titles = _titles(draw({"branching": _branching_table()}))
        assert "not finite" not in titles, titles
        assert "c: not recorded at this step" in titles
        assert "b: not recorded at this step" in titles
    # a value recorded as NaN is still named as such
    titles = _titles(plot.gradient_per_layer({"nan": _branching_table(nan_at=(1, 1))}))
    assert "a: not finite (NaN/inf)" in titles, titles
    assert "b: not recorded at this step" in titles


def _watch_record(rid: str, name: str, status: str, probes: pd.DataFrame | None):
    from depthlab.experiments.store import RunRecord

    config = {"source": "depthlab.torch.Watch",
              "model": {"class": "Net", "layers": {"1": "a", "2": "b", "3": "o"}},
              "probes": {"every": 1}}
    rec = RunRecord(id=rid, name=name, kind="run", status=status, config=config,
                    metrics={"train_loss": 1.0, "steps": 2},
                    error="RuntimeError: out of memory" if status == "failed" else None)
    if probes is not None:
        rec.probes = probes[["step", "layer", "quantity", "value"]]
    return rec


def test_a_failed_watch_run_with_probes_is_in_the_overview(tmp_path):
    # a Watch whose training loop raised after some recorded steps (an out-of-memory error)
    # holds its probes and its own section draws them, but the overview left it out and
    # said "1 failed (no probes)"
    from depthlab.experiments.store import Store
    from depthlab.report import build

    table = _branching_table()
    steady = table[table["layer"] != 4].copy()
    steady.loc[steady["layer"] == 2, "value"] = 2e-3  # b at both steps
    extra = steady[(steady["layer"] == 2) & (steady["step"] == 0)].assign(step=1)
    steady = pd.concat([steady, extra], ignore_index=True)
    with Store(tmp_path / "r") as store:
        store.add_run(_watch_record("bbbbbbbbbbbb", "crashed", "failed", steady))
        store.add_run(_watch_record("cccccccccccc", "crashed early", "failed", None))
    with Store(tmp_path / "r", create=False) as store:
        page = build.write_report(tmp_path / "rep", store).read_text()
    flow = page[page.index("Gradient flow"):]
    flow = flow[:flow.index("Activation std per layer")]
    assert "Showing 1 of 2 runs; 1 failed (no probes)" in flow, flow
    assert "crashed</td>" in flow  # the failed run with probes has its ratio row
    assert "at step 1, then failed" in flow
    assert "crashed early</td>" not in flow


def test_the_type_named_in_a_torch_refusal_has_its_article(tmp_path, capsys):
    # "returned a int" / "is a int"
    from helpers.cli import assert_one_line_error, run_cli

    (tmp_path / "m.py").write_text("width = 3\n\ndef make():\n    return 3\n")
    for spec, fragment in (("make", "returned an int, not a torch.nn.Module"),
                           ("width", "'width' in")):
        code, out, err = run_cli(capsys, "doctor", "--torch", f"{tmp_path}/m.py:{spec}",
                                 "--data", "digits", "--out", tmp_path / "runs")
        line = assert_one_line_error(code, err, fragment)
        assert " a int" not in line and ("is an int," in line or spec == "make"), line


def test_a_layer_first_run_after_the_first_step_is_not_taken_for_the_output_layer(tmp_path):
    # module c, first run at step 1 (numbered 4, after the output layer o = 3), was taken for
    # the output layer ("the highest number"): the ratio table read a / o (the head: 0.3333
    # at both steps) and named c as the output layer left out
    from depthlab.experiments.store import Store
    from depthlab.report import build
    from depthlab.report.notebook import _watch_ratio_text

    table = _branching_table()
    record = _watch_record("dddddddddddd", "branching", "finished", table)
    record.config["model"]["layers"]["4"] = "c"
    with Store(tmp_path / "r") as store:
        store.add_run(record)
        store.add_run(_watch_record("eeeeeeeeeeee", "no probes", "failed", None))
    with Store(tmp_path / "r", create=False) as store:
        page = build.write_report(tmp_path / "rep", store).read_text()
    flow = page[page.index("Gradient flow"):]
    flow = flow[:flow.index("Activation std per layer")]
    row = flow[flow.index("branching</td>"):]
    row = row[:row.index("</tr>")]
    assert 'data-v="0.5"' in row and 'data-v="0.25"' in row, row  # a / b, then a / c
    assert "the last to run: <code>o</code>)" in flow, flow
    # the notebook card of the Watch: the ratio at the first recorded step, o left out
    card = _watch_ratio_text(table)
    assert "<code>o</code>" in card and "<b>0.5</b>" in card, card


def test_the_heatmap_says_which_layer_was_not_recorded_at_a_step():
    # the blank cells of a layer not run at some steps were unexplained (a blank reads as a
    # gradient of 0 or NaN elsewhere in the figure's notes)
    from depthlab.report import figures

    table = _branching_table()  # b missing at step 1, c at step 0
    both = figures.gradient_heatmap(table).axes[0].get_title()
    assert "blank: 2 layers not recorded at some steps" in both, both
    b_back = table[(table["layer"] == 2) & (table["step"] == 0)].assign(step=1)
    one = figures.gradient_heatmap(pd.concat([table, b_back])).axes[0].get_title()
    assert "blank: c not recorded at step 0" in one, one
    assert "not finite" not in one
