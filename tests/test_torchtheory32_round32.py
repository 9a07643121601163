"""Round 32 (torchtheory32): theory beside the measurement in `depthlab report`.

A Watch run whose model the theory does not cover (attention) stores no ``model.theory``
rows, only its ``theory_note``; its gradient figure's caption said "dashed: theory." and then
"no theory curve: ... MultiheadAttention ...": a dashed line that is not drawn."""

from __future__ import annotations

import dataclasses
import html as html_module
import re

import pandas as pd
from test_report import synthetic_record

from depthlab.experiments import Store
from depthlab.report import build

NOTE = ("no theory: predict() supports chains of Linear/Conv/ConvTranspose layers; layer 'att' "
        "is a MultiheadAttention.in_proj")


def _caption(tmp_path, model: dict) -> str:
    grads = pd.DataFrame({"step": [0, 0, 0, 9, 9, 9], "layer": [1, 2, 3] * 2,
                          "quantity": "grad_pre_std",
                          "value": [1e-3, 2e-3, 5e-3, 1.1e-3, 2.2e-3, 5e-3]})
    rec = dataclasses.replace(synthetic_record("tth1aaaaaaaa", sweep=None, probes=False),
                              steps=None, epochs=None, probes=grads)
    config = {"model": {"blocks": {}, "class": "M", "layers": {"1": "e", "2": "att.in_proj",
                                                              "3": "o"}, **model},
              "probes": {"every": 3, "percentiles": []}, "source": "depthlab.torch.Watch"}
    store = Store(tmp_path)
    store.add_run(dataclasses.replace(rec, config=config))
    blocks, _ = build._run_figures(store, rec.id, rec.id, config, build._Pngs(), None)
    html = "".join(blocks)
    assert "gradient_per_layer" in html or "Std of dL/ds" in html
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_a_watch_run_without_theory_rows_is_not_captioned_with_a_dashed_theory(tmp_path):
    said = _caption(tmp_path, {"theory_note": NOTE})
    assert "no theory curve" in said and "MultiheadAttention" in said, said[:600]
    assert "dashed: theory" not in said and "ring: theory" not in said, said[:600]


def test_a_watch_run_with_theory_rows_keeps_its_dashed_theory_caption(tmp_path):
    rows = [{"layer": 1, "grad_pre_var": 0.04, "act_var": 0.2},
            {"layer": 2, "grad_pre_var": 0.16, "act_var": 0.1},
            {"layer": 3, "grad_pre_var": 1.0, "act_var": None}]
    said = _caption(tmp_path, {"theory": rows})
    assert "dashed: theory" in said and "depthlab.torch.predict" in said, said[:600]


def _overlay(tmp_path, models: list[dict]) -> str:
    store = Store(tmp_path)
    grads = pd.DataFrame({"step": [0, 0, 0, 9, 9, 9], "layer": [1, 2, 3] * 2,
                          "quantity": "grad_pre_std",
                          "value": [1e-3, 2e-3, 5e-3, 1.1e-3, 2.2e-3, 5e-3]})
    for k, model in enumerate(models):
        rec = synthetic_record(f"tta{k}aaaaaaaa", sweep=None, probes=False)
        config = {"model": {"blocks": {}, "class": "M", **model,
                            "layers": {"1": "e", "2": "att.in_proj", "3": "o"}},
                  "probes": {"every": 3, "percentiles": []}, "source": "depthlab.torch.Watch"}
        store.add_run(dataclasses.replace(rec, name=f"watch {k}", config=config, steps=None,
                                          epochs=None, probes=grads * [1, 1, 1, 1 + k]))
    runs = build._runs_table(store)
    group = build._Group("g", "2 stand-alone runs", "runs", runs, by_run=True)
    html = build._flow_section(store, group, build._Pngs())
    return html_module.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)))


def test_an_overlay_of_runs_without_theory_rows_says_no_dashed_theory(tmp_path):
    """Two Watch runs of an attention model in one store: their overlaid per-layer figures said
    "Dashed: the theory's prediction for the same network" and "dashed: theory for
    unit-variance inputs" with no dashed line drawn (neither run stored theory rows)."""
    said = _overlay(tmp_path, [{"theory_note": NOTE}] * 2)
    assert "one colour per run" in said, said[:400]
    assert "dashed" not in said.lower(), said[:1200]
    # with theory rows: dashed, and the activation theory is from the recorded batch (a torch
    # run's depthlab.torch.predict), not "for unit-variance inputs" (depthlab's recursion)
    rows = [{"layer": 1, "grad_pre_var": 0.04, "act_var": 0.2},
            {"layer": 2, "grad_pre_var": 0.16, "act_var": 0.1},
            {"layer": 3, "grad_pre_var": 1.0, "act_var": None}]
    said = _overlay(tmp_path / "b", [{"theory": rows}, {"theory_note": NOTE}])
    assert "Dashed: the theory's prediction" in said and "drawn for 1 of the 2 runs" in said
    assert "unit-variance" not in said and "from the recorded batch" in said, said[:1200]


def test_from_torch_keeps_a_final_softmax_an_output_activation_not_a_hidden_layer():
    """``mlp(..., output_activation="softmax")`` copied to torch and back: ``dl.probe`` of the
    copy had a third 'hidden' layer, the output Dense with the softmax's act_* rows (90 rows
    for the original's 68), as if the softmax were a hidden nonlinearity; ``dl.save`` of the
    copy (its recipe reads a final activation as the output's) gave the original's table."""
    import numpy as np

    import depthlab as dl
    from depthlab.bridge.torch_bridge import from_torch, to_torch

    g = np.random.default_rng(0)
    x, y = g.standard_normal((40, 6)), g.integers(0, 3, 40)
    net = dl.mlp([6, 12, 12, 3], activation="tanh", seed=1, dtype="float64",
                 output_activation="softmax")
    back = from_torch(to_torch(net))
    want, got = dl.probe(net, x, y), dl.probe(back, x, y)
    assert sorted(set(got.layer)) == sorted(set(want.layer)) == [0, 1, 2]
    merged = want.merge(got, on=["layer", "quantity"], how="outer", indicator=True)
    assert (merged["_merge"] == "both").all()
    np.testing.assert_allclose(merged.value_y, merged.value_x, rtol=1e-12, equal_nan=True)
