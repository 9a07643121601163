"""Round 32 (reportplay32): what a person sees in `depthlab report`'s pages.

A store holding NumPy runs and PyTorch Watch runs (the README's "mixed" folder) grouped into
one section ("N stand-alone runs") listed 43 "varying" keys: every key one kind of run has and
the other lacks, and the Watch runs' per-layer theory prediction ``model.theory`` (a list of
dicts) as a column, each torch row 376 px tall in a 5219 px table."""

from __future__ import annotations

import dataclasses
import re

import pandas as pd
from test_report import synthetic_record

from depthlab.experiments import Store
from depthlab.report import write_report


def _watch_config(scale: float) -> dict:
    """A config as `depthlab.torch.Watch` stores it (module names, parameter count, the
    theory's prediction from the model's weights at initialization)."""
    return {"model": {"blocks": {}, "class": "Sequential",
                      "layers": {"1": "0", "2": "2", "3": "4"}, "parameters": 467,
                      "theory": [{"act_var": 0.22 * scale, "grad_pre_var": 0.015 * scale,
                                  "layer": 1},
                                 {"act_var": 0.085 * scale, "grad_pre_var": 0.062, "layer": 2},
                                 {"act_var": None, "grad_pre_var": 1.0, "layer": 3}]},
            "probes": {"every": 3, "percentiles": []}, "source": "depthlab.torch.Watch"}


def test_a_store_of_numpy_and_torch_runs_lists_only_the_keys_that_vary(tmp_path):
    store = Store(tmp_path)
    for rid, lr, depth in (("np01aaaaaaaa", 0.1, 4), ("np02aaaaaaaa", 0.5, 6)):
        store.add_run(synthetic_record(rid, lr=lr, depth=depth, sweep=None, probes=False))
    for rid, scale in (("tx01aaaaaaaa", 1.0), ("tx02aaaaaaaa", 1.3)):
        rec = synthetic_record(rid, sweep=None, probes=False)
        store.add_run(dataclasses.replace(rec, name=f"watch {rid[:4]}",
                                          config=_watch_config(scale)))
    store.close()
    html = write_report(tmp_path, max_runs=1).read_text(encoding="utf-8")
    varying = re.search(r"Varying: ([^<]*?)\. Click", html)
    assert varying, "the group's note names its varying keys"
    keys = varying.group(1).split(", ")
    # the runs differ in their engine (the one column telling NumPy and torch runs apart), the
    # NumPy runs in their depth (not "model.sizes") and learning rate; a key only one kind of
    # run has is no difference, and the theory's prediction from each model's weights is a
    # measurement, not a setting
    assert keys[0] == "source", keys
    assert set(keys) == {"source", "depth", "train.lr"}, keys
    table = html[html.index("runs-table-"):]
    table = table[:table.index("</table>")]
    assert "act_var" not in table
    head = re.findall(r"<th[^>]*>(.*?)</th>", table)
    assert len(head) == 3 + 3 + 5, head  # id, name, status; source, depth, train.lr; 5 metrics
    assert "depthlab.torch.Watch" in table and "NumPy" in table


def test_runs_of_one_depth_with_the_same_values_at_initialization_are_said_to_share_a_line():
    """A learning-rate sweep of one seed: every run starts from the same weights, so at
    initialization their profiles are one line, the last run's colour over the others, and the
    legend named runs the panel did not show (the shorter-run case says "drawn on top")."""
    import numpy as np
    import pandas as pd
    from test_report import synthetic_probes

    from depthlab import plot

    slow = synthetic_probes(4)
    fast = slow.copy()
    later = fast["step"] > 0
    fast.loc[later, "value"] = fast.loc[later, "value"] * 3.0  # they part after the first step
    other = synthetic_probes(4)
    other["value"] = other["value"] * 0.5  # a run that differs from the start
    fig = plot.gradient_per_layer({"lr=0.1": slow, "lr=10": fast, "lr=1": other}, theory=False)
    start, end = (ax.get_title() for ax in fig.axes[:2])
    # the panel draws lr=10 (later, on top) over lr=0.1: the title says which run is under it
    assert "lr=0.1: same values as lr=10" in start, start
    assert "lr=1:" not in start and "same values" not in end, (start, end)
    # the lines drawn are the stored values (the title explains, nothing is moved)
    lines = {ln.get_label(): ln for ln in fig.axes[0].get_lines()}
    np.testing.assert_allclose(lines["lr=0.1"].get_ydata(), lines["lr=10"].get_ydata())
    init = slow[(slow["step"] == 0) & (slow["quantity"] == "grad_pre_std")]
    np.testing.assert_allclose(lines["lr=0.1"].get_ydata(),
                               init.sort_values("layer")["value"].to_numpy())
    assert isinstance(init, pd.DataFrame)


def test_the_dead_unit_panel_says_dead_is_a_zero_derivative_not_an_inactive_unit():
    """An ELU run: about half its entries have s <= 0 ("inactive"), and a unit negative on
    every example still passes a gradient (f'(s) = alpha e^s > 0), so it is never dead
    (dead_frac: f'(s) == 0 on every example). The panel titled "Dead units (inactive on every
    example)" beside "Inactive entries" 0.5 said the opposite of what the probe measures."""
    from depthlab import plot

    rows = [(step, layer, q, v) for step in (0, 10) for layer in (1, 2)
            for q, v in (("inactive_frac", 0.5), ("dead_frac", 0.0),
                         ("saturated_frac", float("nan")))]
    fig = plot.saturation(pd.DataFrame(rows, columns=["step", "layer", "quantity", "value"]))
    titles = [ax.get_title() for ax in fig.axes]
    dead = [t for t in titles if t.startswith("Dead units")]
    assert dead and "inactive" not in dead[0] and "derivative" in dead[0], titles


def test_a_residual_runs_figures_say_they_number_nonlinearities_not_hidden_layers(tmp_path):
    """A NumPy run with residual = true, depth 3 (a stem and 2 residual blocks): its probes
    number its 5 nonlinearities (two per block, then the one before the output layer), so its
    figures drew "layer 1".."layer 5" under "depth (hidden layers) 3" with no word of why (the
    playground labels the same axis "nonlinearity (two per residual block)")."""
    import numpy as np

    from depthlab import mlp
    from depthlab.probes import probe
    from depthlab.report import build

    net = mlp([6, 8, 8, 8, 3], activation="relu", init="he_normal", batchnorm=True,
              residual=True, seed=0)
    x = np.random.default_rng(0).standard_normal((64, 6))
    table = probe(net, x, np.arange(64) % 3)
    probes = pd.concat([table.assign(step=s) for s in (0, 10)], ignore_index=True)
    assert probes.loc[probes["layer"] >= 1, "layer"].nunique() == 5
    grads = probes[probes["quantity"] == "grad_pre_std"][["step", "layer", "quantity", "value"]]
    rec = dataclasses.replace(synthetic_record("res1aaaaaaaa", sweep=None, probes=False),
                              steps=None, epochs=None, probes=grads)  # two figures: fast
    config = {**rec.config, "model": {**rec.config["model"], "sizes": [6, 8, 8, 8, 3],
                                      "activation": "relu", "batchnorm": True,
                                      "residual": True}}
    plain = {**config, "model": {**config["model"], "residual": False}}
    store = Store(tmp_path)
    store.add_run(dataclasses.replace(rec, config=config))
    store.add_run(dataclasses.replace(rec, id="plain1aaaaaa", config=plain,
                                      probes=grads[grads["layer"] <= 3]))

    def text(rid: str, cfg: dict) -> str:
        blocks, _ = build._run_figures(store, rid, rid, cfg, build._Pngs(), None)
        return re.sub(r"<[^>]+>", "", "".join(blocks))

    said = text("res1aaaaaaaa", config)
    assert "3 hidden layers" in said and "5 nonlinearities" in said, said[:400]
    assert "two per residual block" in said
    assert build._residual_note(plain, grads) == ""  # a plain run's layers are its layers
    # the overlaid figures of several runs (a sweep's, or many stand-alone runs') say so too
    groups = build._groups(build._runs_table(store), fold_beyond=1)
    flow = re.sub(r"<[^>]+>", "", build._flow_section(store, groups[0], build._Pngs()))
    # the gradient-flow table (its ratio: first / last nonlinearity) and both figures
    assert flow.count("numbers its nonlinearities, two per residual block") == 3, flow[:600]
    store.close()
