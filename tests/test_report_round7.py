"""Round 7: what a person sees in the report's figures.

- A run name of 28 characters (``activation=sigmoid, depth=10``, the deepest point of a sweep
  over depth and activation) was cut in the legend of the per-layer figures
  (``activation=si…oid, depth=10``) while its 27-character neighbours were shown whole: the
  legend's width in characters came out as 27.999... and was truncated by ``int``.
- A depthlab.torch run whose layers feed no recognised activation module (an LSTM, a
  transformer with functional activations) got two empty panels ("no 'act_mean' probes
  recorded", "no saturation or dead-unit probes recorded") under captions describing curves;
  now one note says why they are absent, and the update-ratio figure stays.
- The gradient-flow table's "meaning" described the ratio at init alone.
- The per-layer overlays labelled layers with the module names of runs they do not draw.
- The update-ratio figure, alone in its row, was drawn in half of it (scaled to 0.7).
"""

from __future__ import annotations

import pandas as pd
import pytest

from depthlab import plot
from depthlab.experiments.store import Store
from depthlab.report import build


def _grad_table(layers: int = 3) -> pd.DataFrame:
    rows = [{"step": step, "layer": layer, "quantity": "grad_pre_std",
             "value": 1e-3 * 2.0 ** layer * (1 + step / 100)}
            for step in (0, 10) for layer in range(1, layers + 1)]
    return pd.DataFrame(rows)


def _legend_texts(fig) -> list[str]:
    return [t.get_text() for legend in fig.legends for t in legend.get_texts()]


@pytest.mark.parametrize("name", ["activation=sigmoid, depth=10",  # 28 characters
                                  "doctor models.py:make_model",   # 27: a torch doctor run
                                  "x" * 40])
def test_per_layer_legend_keeps_a_name_that_fits(name):
    fig = plot.gradient_per_layer({name: _grad_table(), "activation=tanh, depth=2": _grad_table()},
                                  False)
    texts = _legend_texts(fig)
    assert name in texts, texts
    assert "activation=tanh, depth=2" in texts
    assert not any("…" in t for t in texts), texts


def test_per_layer_legend_still_cuts_a_name_beyond_its_widest():
    long = "model.activation=sigmoid, model.init=glorot_uniform, train.lr=0.5, seed=3"
    fig = plot.gradient_per_layer({long: _grad_table()}, False)
    (text,) = _legend_texts(fig)
    assert "…" in text and len(text) < len(long)
    assert text.startswith("model.activation") and text.endswith("seed=3")


@pytest.fixture(scope="module")
def lstm_store(tmp_path_factory):
    torch = pytest.importorskip("torch")
    from torch import nn

    import depthlab.torch as dlt
    from depthlab.torch import zoo

    out = tmp_path_factory.mktemp("lstm")
    torch.manual_seed(0)
    model = zoo.lstm_classifier(features=4, hidden=8, layers=2, classes=3)
    x, y = torch.randn(8, 5, 4), torch.randint(0, 3, (8,))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with dlt.Watch(model, every=1, out=out, name="lstm", theory=False) as watch:
        for _ in range(3):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            watch.step(loss)
            opt.step()
    return out


def test_torch_run_without_activation_modules_gets_a_note_not_empty_panels(lstm_store, tmp_path):
    probes = Store(lstm_store).probes(str(Store(lstm_store).runs()["id"].iloc[0]))
    assert not (probes["quantity"] == "act_mean").any()  # what the fix is about
    page = build.write_report(tmp_path / "rep", Store(lstm_store)).read_text()
    pngs = sorted(p.name for p in (tmp_path / "rep" / "figures").glob("lstm_*.png"))
    assert "lstm_activations.png" not in pngs and "lstm_saturation.png" not in pngs
    assert {"lstm_gradient_per_layer.png", "lstm_gradient_heatmap.png",
            "lstm_update_ratio.png", "lstm_training.png"} <= set(pngs)
    assert "No activation or saturation figure: no layer&#x27;s output goes into a recognised" \
        in page or "No activation or saturation figure: no layer's output goes into a " \
        "recognised" in page
    assert build.FIG_ACTIVATIONS not in page and build.FIG_SATURATION not in page
    # no saturation figure: the update ratio shares its row with the gradient heatmap
    assert f"<figure><h3>{build.FIG_UPDATE_RATIO}</h3>" in page


def _flow_record(rid: str, end_ratio: float):
    import numpy as np

    from depthlab.experiments.store import RunRecord

    rows = []
    for step in (0, 10):
        ratio = 0.5 if step == 0 else end_ratio  # first / last hidden layer's gradient std
        for layer, value in ((1, 1e-2 * ratio), (2, 1e-2 * np.sqrt(ratio)), (3, 1e-2)):
            rows += [{"step": step, "layer": layer, "quantity": "grad_pre_std", "value": value},
                     {"step": step, "layer": layer, "quantity": "act_std", "value": 0.5}]
    config = {"data": {"name": "digits"},
              "model": {"sizes": [64, 16, 16, 16, 10], "activation": "relu"},
              "train": {"optimizer": "sgd", "lr": 0.1}}
    return RunRecord(id=rid, name=rid, kind="run", sweep=None, status="finished", config=config,
                     metrics={"val_acc": 0.5, "steps": 10}, seconds=1.0,
                     steps=pd.DataFrame({"step": range(1, 11), "loss": [1.0] * 10}),
                     probes=pd.DataFrame(rows))


def test_gradient_flow_meaning_says_when_the_end_differs_from_init(tmp_path):
    """The 'meaning' column described the ratio at init alone: a ResNet-18 Watch run read
    'flows: within a factor 1.9 of 1' beside a ratio at the end of 0.024."""
    with Store(tmp_path) as store:
        store.add_run(_flow_record("gets-worse", 0.024))
        store.add_run(_flow_record("stays", 0.4))
    store = Store(tmp_path)
    group = build._Group("all", "All runs", "runs", build._runs_table(store))
    text = build._flow_section(store, group, build._Pngs())
    assert ("flows: within a factor 2 of 1; at the end shrinking: the first layer gets 42x "
            "less gradient") in text
    assert text.count("; at the end") == 1  # "stays" flows at both ends: nothing added


def _torch_table(modules: list[str], quantities: tuple[str, ...]) -> pd.DataFrame:
    return pd.DataFrame([{"step": step, "layer": i, "module": m, "quantity": q,
                          "value": 0.1 * i + 0.01 * step}
                         for step in (0, 5) for i, m in enumerate(modules, 1)
                         for q in quantities])


def test_overlay_names_only_the_layers_of_runs_it_draws():
    """The all-runs activation figure of a ResNet-18 beside a transformer Watch run (which
    records no activations) labelled ResNet points 'layer1.1.conv2 / encoder.layers.0.linear2'."""
    resnet = _torch_table(["conv1", "layer1.0.conv1", "layer1.0.conv2"],
                          ("grad_pre_std", "act_std"))
    transformer = _torch_table(["embed", "encoder.layers.0.self_attn.out_proj",
                                "encoder.layers.0.linear1"], ("grad_pre_std",))
    runs = {"resnet18": resnet, "transformer": transformer}
    act = plot.activation_per_layer(runs, False)
    ticks = [t.get_text() for t in act.axes[0].get_xticklabels()]
    assert ticks == ["conv1", "layer1.0.conv1", "layer1.0.conv2"]
    assert _legend_texts(act) == ["resnet18"]
    grad = plot.gradient_per_layer(runs, False)  # both runs drawn: both names
    ticks = [t.get_text() for t in grad.axes[0].get_xticklabels()]
    assert ticks == ["conv1 / embed", "layer1.0.conv1 / encoder.layers.0.self_attn.out_proj",
                     "layer1.0.conv2 / encoder.layers.0.linear1"]


def test_update_ratio_after_the_saturation_figure_is_full_width(tmp_path):
    """After the full-width saturation figure the update ratio is alone in its row: drawn in
    half of it, its 8-inch figure was scaled to 0.7 and its legend was unreadable."""
    record = _flow_record("sat", 0.4)
    extra = [{"step": step, "layer": layer, "quantity": q, "value": 0.01 * layer}
             for step in (0, 10) for layer in (1, 2, 3)
             for q in ("saturated_frac", "update_ratio")]
    record.probes = pd.concat([record.probes, pd.DataFrame(extra)], ignore_index=True)
    with Store(tmp_path) as store:
        store.add_run(record)
    store = Store(tmp_path)
    blocks, _ = build._run_figures(store, "sat", "sat", record.config, build._Pngs(), None)
    heads = [b[:b.index("</h3>")] for b in blocks if b.startswith("<figure")]
    assert heads[-2:] == [f'<figure class="wide"><h3>{build.FIG_SATURATION}',
                          f'<figure class="wide"><h3>{build.FIG_UPDATE_RATIO}']


def test_run_lines_are_never_pale_yellow_and_stay_distinct():
    """The seventh run of a sweep (sigmoid, depth 2 in a 3x3 grid) was drawn in Okabe-Ito
    yellow #F0E442, barely visible on white."""
    from matplotlib.colors import to_hex

    runs = {f"run {k}": _grad_table() for k in range(10)}
    fig = plot.gradient_per_layer(runs, False)
    styles = [(to_hex(line.get_color()), line.get_marker()) for line in fig.axes[0].lines]
    assert len(styles) == 10
    assert "#f0e442" not in {c for c, _ in styles}
    assert len(set(styles)) == 10  # colour and marker together tell every run apart


def test_gradient_heatmap_keeps_one_row_per_layer_when_a_layer_has_no_gradient():
    """A transformer's self_attn layers (their in-projection has no output of its own) record
    weights but no grad_pre_std: the heatmap stretched the embedding's row over the missing
    layer, drawing it two layers tall, with nothing saying a layer was left out."""
    import numpy as np

    rows = _torch_table(["embed", "encoder.layers.0.self_attn", "encoder.layers.0.linear1"],
                        ("weight_std",))
    grads = _torch_table(["embed", "encoder.layers.0.self_attn", "encoder.layers.0.linear1"],
                         ("grad_pre_std",))
    probes = pd.concat([rows, grads[grads["layer"] != 2]], ignore_index=True)
    fig = plot.gradient_heatmap(probes)
    ax = fig.axes[0]
    y_edges = ax.collections[0].get_coordinates()[:, 0, 1]
    np.testing.assert_allclose(np.diff(y_edges), 1.0)  # three rows, each one layer tall
    assert [t.get_text() for t in ax.get_yticklabels()] == [
        "embed", "encoder.layers.0.self_attn", "encoder.layers.0.linear1"]
    assert "blank: 1 layer with no grad_pre_std recorded" in ax.get_title()
    full = plot.gradient_heatmap(_grad_table())  # nothing missing: no note
    assert full.axes[0].get_title() == "Back-propagated gradient std per layer"
