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
