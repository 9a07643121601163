"""Round 33 (reportplay33): what a person sees in `depthlab report`'s pages.

Runs that share a name (`depthlab run cfg.toml` again with another depth, seed or activation,
each stored under the config's name) were told apart by their ids alone in every figure and
table of the overview: 30 runs of one name gave a legend and bar charts of "same (a3c391b49157)",
"same (2261521b505b)", ... while the note above the runs table said what varies among them
(depth, model.activation, data.seed)."""

from __future__ import annotations

import dataclasses
import re

from test_report import synthetic_record

from depthlab.experiments import Store
from depthlab.report import write_report


def test_runs_sharing_a_name_are_labelled_by_the_settings_that_tell_them_apart(tmp_path):
    store = Store(tmp_path)
    # the best run (the one drawn in detail) has no probes, to keep the test short: the
    # gradient-flow table lists the other one
    runs = (("aa01aaaaaaaa", 2, "tanh", 0.95, False), ("aa02aaaaaaaa", 3, "relu", 0.9, True))
    for rid, depth, act, acc, probes in runs:
        rec = synthetic_record(rid, depth=depth, act=act, val_acc=acc, sweep=None,
                               probes=probes)
        store.add_run(dataclasses.replace(rec, name="same"))
    store.close()
    html = write_report(tmp_path, max_runs=1, max_diverged=0).read_text(encoding="utf-8")
    flow = html[html.index("Gradient flow"):]
    flow = flow[:flow.index("</table>")]
    shown = set(re.findall(r"<tr><td>([^<]*)</td>", flow))
    # each row names the run by what differs among the runs of that name (the section's
    # varying keys), not by an id the reader has to look up in the runs table below (the
    # overview, where every run is "same", may leave the shared name out)
    assert not any("aa0" in label for label in shown), shown
    told = {tuple(sorted(re.findall(r"\w+=\w+", label))) for label in shown}
    assert told == {("activation=relu", "depth=3")}, shown


def test_a_run_with_no_gradient_in_any_layer_at_initialization_is_not_called_unmeasured(
        tmp_path):
    """A network whose every hidden layer gets a gradient of exactly 0 at step 0 (weights
    initialized to zeros: `init = "zeros"`; every ReLU unit dead) has a measured 0 / 0 there;
    the gradient-flow table left its "ratio at init" blank and read "not measured", while the
    overlay's title said "layers 1-6: zero (a log axis has no 0)"."""
    store = Store(tmp_path)
    best = synthetic_record("bb01aaaaaaaa", depth=2, val_acc=0.95, sweep=None, probes=False)
    store.add_run(best)
    rec = synthetic_record("zz01aaaaaaaa", depth=3, act="relu", val_acc=0.1, sweep=None)
    probes = rec.probes.copy()
    zero = (probes["quantity"] == "grad_pre_std") & (probes["step"] == 0)
    probes.loc[zero, "value"] = 0.0
    store.add_run(dataclasses.replace(rec, name="zero-init", probes=probes))
    store.close()
    html = write_report(tmp_path, max_runs=1, max_diverged=0).read_text(encoding="utf-8")
    flow = html[html.index("Gradient flow"):]
    flow = flow[:flow.index("</table>")]
    row = re.search(r"<tr><td>zero-init</td>(.*?)</tr>", flow)
    assert row, flow
    cells = [re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<td[^>]*>(.*?)</td>", row.group(1))]
    init, end, meaning = cells[:3]
    assert "0 / 0" in init, cells  # measured: no gradient in any layer
    assert "not measured" not in meaning and "no gradient" in meaning, cells
    # the end's reading (0.4^2 = 0.16, shrinking) is still given
    assert float(end) == __import__("pytest").approx(0.16, rel=1e-3), cells
    assert "at the end" in meaning and "shrinking" in meaning, cells
