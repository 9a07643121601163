"""depthlab.plot: the public figures (the report draws with the same functions), and the
notebook views (short reprs, _repr_html_) of History, ProbeRecorder and Diagnosis."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from matplotlib.figure import Figure
from test_report import synthetic_histograms, synthetic_probes, synthetic_record

import depthlab as dl
from depthlab import plot


def _labelled(fig: Figure) -> None:
    """Every axes that shows data has both axis labels."""
    drawn = [ax for ax in fig.axes if ax.lines or ax.collections or ax.patches]
    assert drawn
    for ax in drawn:
        if ax.get_label() == "<colorbar>":
            continue
        assert ax.get_xlabel() or ax.get_ylabel(), ax.get_title()
    assert any(ax.get_xlabel() for ax in drawn) and any(ax.get_ylabel() for ax in drawn)


@pytest.fixture(scope="module")
def trained():
    from depthlab.data import load_dataset

    data = load_dataset("digits", seed=0, standardize=True)
    net = dl.mlp([64] + [32] * 6 + [10], activation="sigmoid", init="glorot_uniform", seed=0)
    rec = dl.ProbeRecorder(data.x_val, data.y_val, every=10)
    hist = dl.fit(net, data.x_train, data.y_train, data.x_val, data.y_val,
                  loss="cross_entropy", lr=0.1, batch_size=64, epochs=1, seed=0,
                  callbacks=[rec])
    return data, hist, rec


def test_gradient_per_layer_overlays_runs_with_theory():
    runs = {"deep": synthetic_record("a", depth=4), "shallow": synthetic_record("b", depth=2)}
    fig = plot.gradient_per_layer(runs)
    init, end = fig.axes[:2]
    assert init.get_yscale() == "log" and end.get_yscale() == "log"
    # (unlabelled: each run's measured points drawn again over its theory)
    labels = [ln.get_label() for ln in init.lines if not ln.get_label().startswith("_")]
    assert labels == ["deep", "deep: theory", "shallow", "shallow: theory"]
    assert init.lines[1].get_linestyle() == "--"
    # theory scaled to the measured top layer, same colour as its run
    assert init.lines[1].get_ydata()[-1] == pytest.approx(init.lines[0].get_ydata()[-1])
    assert init.lines[0].get_color() == init.lines[1].get_color()
    assert init.get_title() == "at initialization" and "end" in end.get_title()
    _labelled(fig)
    assert len(plot.gradient_per_layer(runs, theory=False).axes[0].lines) == 2


def test_activation_per_layer_and_ratio():
    table = synthetic_probes(4)
    fig = plot.activation_per_layer({"one": table})
    _labelled(fig)
    assert fig.axes[0].get_yscale() == "log"
    # synthetic gradients shrink by 0.4 per layer going down: ratio 0.4^3
    assert plot.gradient_ratio(table) == pytest.approx(0.4 ** 3)
    assert plot.gradient_ratio(table, step=200) == pytest.approx(0.4 ** 3)
    assert math.isnan(plot.gradient_ratio(table[table.quantity != "grad_pre_std"]))


def test_inputs_recorder_history_and_probe_table(trained):
    data, hist, rec = trained
    for fig in (plot.gradient_per_layer(rec), plot.activation_bands(rec),
                plot.training_curves(hist), plot.gradient_heatmap(rec), plot.saturation(rec),
                plot.activation_histograms(rec, "act"), plot.activation_histograms(rec, "grad")):
        _labelled(fig)
    one = dl.probe(dl.mlp([64, 32, 32, 10], seed=0), data.x_val, data.y_val,
                   loss="cross_entropy")  # no step column: one instant
    assert len(plot.gradient_per_layer(one).axes) == 1
    with pytest.raises(TypeError, match="probe table"):
        plot.gradient_per_layer(42)
    with pytest.raises(ValueError, match="no runs"):
        plot.gradient_per_layer({})


def test_histograms_each_panel_states_its_range(trained):
    _, _, rec = trained
    fig = plot.activation_histograms(rec, "grad")
    titles = [ax.get_title() for ax in fig.axes]
    assert len(titles) == 5 * 2  # 6 layers -> 5 shown (first, last, evenly spaced) x 2 steps
    assert all("range [" in t for t in titles)
    assert "layers 1, 2, 3, 5, 6 of 6" in fig._suptitle.get_text()
    with pytest.raises(ValueError, match="recorded"):
        plot.activation_histograms(rec, "act", steps=[12345])
    hist = synthetic_histograms(3)
    assert len(plot.activation_histograms(hist, "act").axes) == 6


def test_sweep_metric_heatmap_only_over_a_grid():
    full = pd.DataFrame({"a": [1, 1, 2, 2], "b": ["x", "y", "x", "y"],
                         "status": ["finished"] * 4, "val_acc": [0.1, 0.2, 0.3, 0.4],
                         "name": ["r1", "r2", "r3", "r4"]})
    assert plot.forms_grid(full, "a", "b")
    heat = plot.sweep_metric(full, ["a", "b"])
    assert heat.axes[0].collections  # pcolormesh
    partial = full.iloc[:3]
    assert not plot.forms_grid(partial, "a", "b")
    bars = plot.sweep_metric(partial, ["a", "b"])
    ax = bars.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["r1", "r2", "r3"]
    assert "varying: a, b" in ax.get_xlabel()
    _labelled(bars)


def test_short_reprs_and_html(trained):
    _, hist, rec = trained
    r = repr(hist)
    assert r.startswith("History(") and len(r) < 200 and "val_acc=" in r
    assert "<img" in hist._repr_html_() and "val_acc" in hist._repr_html_()
    assert repr(rec).startswith("ProbeRecorder(every=10") and len(repr(rec)) < 200
    assert "Gradient ratio" in rec._repr_html_()


def test_diagnosis_repr_is_short():
    from depthlab.data import load_dataset

    data = load_dataset("digits", seed=0, standardize=True)
    net = dl.mlp([64] + [32] * 6 + [10], activation="sigmoid", init="normal", seed=0)
    dg = dl.doctor(net, data, steps=30)
    r = repr(dg)
    assert r.startswith("Diagnosis(") and len(r) < 300 and "step" not in r
    html = dg._repr_html_()
    assert html.index(dg.findings[0].kind) < html.index("<img")  # findings lead


def test_training_curves_of_a_torch_watch_plots_every_steps_loss():
    torch = pytest.importorskip("torch")
    from depthlab.torch import Watch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    x, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    losses = []
    with Watch(model, every=5) as watch:
        for _ in range(12):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            watch.step(loss)
            opt.step()
            losses.append(loss.item())
    fig = plot.training_curves(watch)
    line = fig.axes[0].lines[0]  # the raw per-step loss: every step, not only recorded ones
    assert list(line.get_xdata()) == list(range(12))
    assert line.get_ydata() == pytest.approx(losses, rel=1e-6)
    with pytest.raises(TypeError, match="History, a RunRecord, a Watch"):
        plot.training_curves(object())


def test_gradient_ratio_names_a_step_that_was_not_probed_and_ignores_infinite_values():
    table = synthetic_probes()
    steps = sorted(table.loc[table.quantity == "grad_pre_std", "step"].unique())
    with pytest.raises(ValueError, match=r"step 12345 has no 'grad_pre_std' probes; recorded "
                                         r"steps: " + str(steps[0])):
        plot.gradient_ratio(table, step=12345)
    bad = pd.DataFrame({"step": [0, 0], "layer": [1, 2], "quantity": ["grad_pre_std"] * 2,
                        "value": [1.0, math.inf]})
    assert math.isnan(plot.gradient_ratio(bad))
    bad.loc[0, "value"] = math.inf
    bad.loc[1, "value"] = 2.0
    assert math.isnan(plot.gradient_ratio(bad))
    bad.loc[0, "value"] = 1.0
    assert plot.gradient_ratio(bad) == 0.5
