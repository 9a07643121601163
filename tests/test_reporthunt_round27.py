"""Round 27 report hunt: what `depthlab report` and the figure functions show for stores
nobody tried (one-point sweeps, diverged points, regression, early stopping, torch runs)."""

from __future__ import annotations

import pandas as pd

from depthlab import plot
from depthlab.report import figures


def test_labels_sharing_only_a_key_are_cut_to_the_values_that_tell_them_apart():
    # two runs of a sweep over activation x lr, both with zero gradients at the end: the
    # panel title cut both to "activation…, lr=1e+07" (then "activation=sigmoid…#1"),
    # naming neither activation
    cut = figures.cut_labels(["activation=tanh, lr=1e+07", "activation=sigmoid, lr=1e+07"], 21)
    assert cut == ["…tanh, lr=1e+07", "…sigmoid, lr=1e+07"]


def _zero_at_end(name: str, top: float) -> pd.DataFrame:
    rows = []
    for step, scale in ((0, 1.0), (10, 0.0)):
        for layer in (1, 2):
            rows.append({"step": step, "layer": layer, "quantity": "grad_pre_std",
                         "value": scale * top * layer})
    return pd.DataFrame(rows)


def test_the_overlay_names_each_run_whose_gradients_are_zero():
    tables = {"activation=tanh, lr=1e+07": _zero_at_end("t", 1e-3),
              "activation=sigmoid, lr=1e+07": _zero_at_end("s", 1e-4),
              "activation=relu, lr=0.05": _zero_at_end("r", 1e-3).assign(
                  value=lambda d: d.value.where(d.value > 0, 5e-4))}
    fig = plot.gradient_per_layer(tables)
    title = fig.axes[1].get_title()
    assert "tanh" in title and "sigmoid" in title and "lr=1e+07" in title, title
    assert "#1" not in title, title


def test_an_early_stopped_run_says_its_metrics_are_the_best_epochs(tmp_path):
    # train.patience: the stored metrics and network are the best epoch's (3) while the
    # curves run to the stopping epoch (4); the run's line and the training figure's caption
    # said nothing of it ("val acc 0.85" beside curves ending at 0.9)
    import dataclasses

    from test_report import synthetic_record

    from depthlab.experiments import Store
    from depthlab.report import build

    r = synthetic_record("es1", sweep=None, depth=2, probes=False)
    r = dataclasses.replace(r, metrics={**r.metrics, "val_acc": 0.85, "best_epoch": 3,
                                        "stopped_epoch": 4})
    plain = synthetic_record("plain1", sweep=None, depth=2, probes=False)
    plain = dataclasses.replace(plain, name="plain", metrics={**plain.metrics,
                                                              "best_epoch": 4,
                                                              "stopped_epoch": None})
    with Store(tmp_path) as store:
        store.add_run(r)
        store.add_run(plain)
    text = build.write_report(tmp_path).read_text()
    note = "early stop after epoch 4; metrics and network of epoch 3"
    assert f"val acc 0.85, test acc 0.89 ({note})" in text
    assert "Early stopping: the curves run to the epoch that ended training" in text
    assert text.count("early stop after") == 2  # the line and the caption; not the plain run


def test_percentile_bands_pair_each_percentile_with_its_mirror():
    # a Watch's percentiles=(10, 50, 90, 99): paired outside-in, the band read "10–99th pct"
    # (not around the median) with the 90th dotted inside it
    import numpy as np

    rows = []
    for step in (0, 5, 10):
        for k, v in ((10, -1.3), (50, 0.0), (90, 1.3), (99, 2.3)):
            rows.append({"step": step, "layer": 1, "quantity": f"pre_p{k}", "value": v})
        rows.append({"step": step, "layer": 1, "quantity": "act_mean", "value": 0.0})
    fig = figures.percentile_bands(pd.DataFrame(rows))
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "10–90th pct" in labels and "99th pct" in labels, labels
    band = next(c for c in fig.axes[0].collections if c.get_label() == "10–90th pct")
    ys = np.concatenate([p.vertices[:, 1] for p in band.get_paths()])
    assert np.isclose(ys.min(), -1.3) and np.isclose(ys.max(), 1.3)
    # the default pairs are unchanged: 2–98 outside, 15–85 inside
    rows = [{"step": s, "layer": 1, "quantity": f"pre_p{k}", "value": (k - 50) / 30}
            for s in (0, 5, 10) for k in (2, 15, 50, 85, 98)]
    labels = [t.get_text() for t in
              figures.percentile_bands(pd.DataFrame(rows)).axes[0].get_legend().get_texts()]
    assert labels[:2] == ["2–98th pct", "15–85th pct"], labels


def test_the_percentile_caption_names_the_percentiles_the_run_recorded():
    # the caption always read "15/50/85th percentiles (and 2–98th band)", also for a Watch
    # that recorded percentiles=(10, 50, 90, 99)
    from depthlab.report import build

    def table(ks):
        return pd.DataFrame([{"step": 0, "layer": 1, "quantity": f"pre_p{k:g}", "value": 0.0}
                             for k in ks])

    assert build._percentiles_text(table((2, 15, 50, 85, 98))) == \
        "median, 15–85th band (and 2–98th, lighter)"
    assert build._percentiles_text(table((10, 50, 90, 99))) == \
        "median, 10–90th band, 99th dotted"
    assert build._percentiles_text(table((50,))) == "median"


def test_a_regression_sweeps_gradient_flow_table_shows_its_validation_loss(tmp_path):
    # mse on real targets: no accuracy; the gradient-flow table's "val acc" column was blank
    # in every row while the runs table beside it showed the validation loss
    import dataclasses
    import re

    from test_report import synthetic_record

    from depthlab.experiments import Store
    from depthlab.report import build

    with Store(tmp_path) as store:
        for k, lr in enumerate((0.01, 0.1)):
            r = synthetic_record(f"reg{k}", lr=lr, depth=2)
            store.add_run(dataclasses.replace(
                r, metrics={"train_loss": 1.0 + k, "val_loss": 1.25 + k, "test_loss": 1.5,
                            "steps": 200, "seconds": 1.0},
                epochs=r.epochs.drop(columns=["train_acc", "val_acc"])))
    text = build.write_report(tmp_path, max_runs=0).read_text()
    flow = text[text.index("ratio at init"):]
    flow = flow[:flow.index("</table>")]
    assert "val loss" in flow and "val acc" not in flow, flow[:300]
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", flow)
    assert "1.25" in cells and "2.25" in cells, cells
