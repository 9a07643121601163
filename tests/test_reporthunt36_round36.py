"""Round 36 (reporthunt36): figures and report pages that mislead, playground, Dask sweeps."""

from __future__ import annotations

import re


def _tiny_config(depth: int, **train) -> dict:
    return {"name": "edge", "data": {"name": "spirals", "seed": 0, "n": 200},
            "model": {"sizes": ["auto", "auto"], "depth": depth, "width": 8,
                      "activation": "tanh", "init": "glorot_uniform"},
            "train": {"loss": "cross_entropy", "optimizer": "sgd", "lr": 0.05,
                      "batch_size": "full", "epochs": 1, "seed": 0, **train},
            "probes": {"every": 1}}


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def _tiny_png() -> bytes:
    import io

    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(0.2, 0.2))
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


class _NoFigures:
    """The report's figure collector without the drawing (the tests read its HTML)."""

    def __init__(self) -> None:
        self.png = _tiny_png()

    def add(self, name, fig_fn, *args, **kwargs) -> bytes:
        return self.png


def test_a_network_without_hidden_layer_is_not_told_its_watch_came_too_late(tmp_path):
    """`depth = 0` (sizes = [in, out], a logistic regression, the bottom rung of a depth
    ladder): the report's run page said "Only the loss was probed: no layer ran while the
    hooks were on (a Watch created after its step's forward, ...)", a depthlab.torch
    diagnosis for a NumPy run that has no layer to probe, and the overview's gradient table
    read "not measured" as if its probes had failed."""
    from depthlab.experiments import Store, execute
    from depthlab.report import build

    store = Store(tmp_path)
    store.add_run(execute(_tiny_config(0)))
    row = build._runs_table(store).iloc[0]
    text = _text(build._run_section(store, row, "", True, _NoFigures(), [], None))
    assert "a Watch created after" not in text
    assert "This network has no hidden layer (depth 0)" in text
    # the overview's ratio table (beside a run of 2 hidden layers)
    store.add_run(execute(_tiny_config(2)))
    runs = build._runs_table(store)
    flow = _text(build._flow_section(store, build._Group("all", "All", "overview", runs),
                                     _NoFigures()))
    store.close()
    row = flow[flow.index("depth=0"):]
    row = row[:row.index("depth=2")]
    assert "not measured" not in row and "no hidden layer (depth 0)" in row, row


class _Runs:
    """A store's ``runs()`` alone: what the report's runs table is built from."""

    def __init__(self, configs: list[dict]) -> None:
        self.configs = configs

    def runs(self):
        import pandas as pd

        return pd.DataFrame({"id": [f"r{i}" for i in range(len(self.configs))],
                             "config": self.configs, "status": "finished",
                             "val_acc": [0.5 + 0.01 * i for i in range(len(self.configs))]})


def test_a_depth_sweep_from_depth_0_is_drawn_over_depth_and_lr_not_a_phantom_width():
    """A sweep of model.depth [0, 1, 4] x train.lr (the depth ladder's bottom rung is a
    linear model): the depth-0 net has no width, and its blank beside the others' 16 listed
    "width" as a varying key: the runs table got a width column, and the sweep's figures were
    bars "by train.lr × depth × width: 3 keys vary (not every combination was run)" instead
    of the full depth × lr heatmap."""
    from depthlab import plot
    from depthlab.report import build

    configs = [{"name": "g", "model": {"sizes": [2, *[16] * d, 2], "activation": "relu"},
                "train": {"lr": lr}} for d in (0, 1, 4) for lr in (0.001, 0.5)]
    runs = build._runs_table(_Runs(configs))
    keys = build.varying_keys(runs)
    assert keys == ["depth", "train.lr"], keys
    assert plot.forms_grid(build._plain(runs, tuple(keys)), *keys)
    # unequal widths still vary (a width of None there is "not one width", not "no width")
    configs.append({"name": "g", "model": {"sizes": [2, 16, 8, 2], "activation": "relu"},
                    "train": {"lr": 0.5}})
    assert "width" in build.varying_keys(build._runs_table(_Runs(configs)))


def test_a_probe_recorders_card_gives_no_ratio_for_one_hidden_layer():
    """A ProbeRecorder on a net of one hidden layer: its Jupyter card read "Gradient ratio
    (first / last hidden layer) at the first probed step: 1" (the layer against itself, read
    as a gradient that flows intact), where the Watch card and the report say there is none;
    two hidden layers still give their measured ratio."""
    import numpy as np

    import depthlab as dl
    from depthlab import plot

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 3)), rng.integers(0, 2, 40)
    for sizes in ([3, 6, 2], [3, 6, 6, 2]):
        net = dl.mlp(sizes, activation="tanh", seed=0)
        rec = dl.ProbeRecorder(x, y, every=1)
        dl.fit(net, x, y, loss="cross_entropy", epochs=1, batch_size=40, callbacks=[rec])
        card = rec._repr_html_()
        if len(sizes) == 3:
            assert "one hidden layer: no first/last ratio to take" in card
            assert "<b>1</b>" not in card
        else:
            ratio = plot.gradient_ratio(rec.frame())
            assert ratio != 1.0 and f"<b>{ratio:.4g}</b>" in card, card[:600]


def test_saturation_lines_of_layers_that_overflowed_are_not_drawn_falling_to_zero():
    """A ReLU net that diverged at step 1: layers 2-3's pre-activations are NaN there, so
    their inactive and dead fractions are measured as 0 (a NaN is not <= 0). The figure shaded
    the step but still drew those lines falling to 0 inside the shading, the picture of a
    healthy net; layer 1, still finite, keeps its value."""
    import matplotlib.pyplot as plt
    import numpy as np
    import pandas as pd

    from depthlab.report import figures

    rows = []
    for step in (0, 1, 2):
        for layer in (1, 2, 3):
            nan = step >= 1 and layer >= 2
            rows += [(step, layer, "pre_std", np.nan if nan else 1.0 + layer),
                     (step, layer, "inactive_frac", 0.0 if nan else 0.4 + 0.01 * layer),
                     (step, layer, "dead_frac", 0.0 if nan else 0.2)]
    probes = pd.DataFrame(rows, columns=["step", "layer", "quantity", "value"])
    fig = figures.saturation_dead(probes)
    for ax in fig.axes[:2]:
        lines = {ln.get_label(): np.asarray(ln.get_ydata(), float) for ln in ax.lines}
        assert np.isfinite(lines["layer 1"]).all(), lines  # finite everywhere: drawn
        for name in ("layer 2", "layer 3"):
            y = lines[name]
            assert np.isfinite(y[0]) and np.isnan(y[1:]).all(), (name, y)  # was 0, 0
    plt.close(fig)


def _bands_table(scales: dict[int, float], steps: tuple = (0, 2, 4)):
    import pandas as pd

    rows = []
    for step in steps:
        for layer, s in scales.items():
            rows += [(step, layer, "act_mean", 0.4 * s), (step, layer, "act_std", 0.6 * s)]
    return pd.DataFrame(rows, columns=["step", "layer", "quantity", "value"])


def test_activation_bands_of_an_exploding_net_draw_each_layer_over_its_own_scale():
    """The report's "Activations over training" of a ReLU net with N(0, 1) weights, 20 layers
    (act std 0.28 in layer 1, 4.6e10 in layer 20): one linear axis up to 7e10 drew layers 1-15
    as one flat line on 0, read as dead layers in a net whose activations explode. Layers
    whose scales (max |mean| + std) are more than 1000x apart are now each divided by their
    own s (the playground's rule), the axis, title and legend say so; closer scales keep one
    axis of values."""
    import matplotlib.pyplot as plt
    import numpy as np

    from depthlab import plot

    exploding = {1: 0.3, 6: 2e2, 11: 3e5, 16: 5e7, 20: 7e10}
    fig = plot.activation_bands(_bands_table(exploding))
    ax = fig.axes[0]
    means = {ln.get_label(): np.asarray(ln.get_ydata(), float) for ln in ax.lines
             if not ln.get_label().startswith("_")}
    assert len(means) == 5, list(means)
    for layer, s in exploding.items():
        label = next(k for k in means if k.startswith(f"layer {layer} "))
        assert f"s = {s:.2g}" in label, label
        np.testing.assert_allclose(means[label], 0.4, rtol=1e-9)  # mean / (|mean| + std)
    assert "own scale" in ax.get_ylabel() and "divided by its s" in ax.get_title()
    plt.close(fig)
    # with a layer that overflowed too, the title's four lines stay inside the figure
    table = _bands_table(exploding)
    table.loc[(table.step == 4) & (table.layer == 20), "value"] = np.inf
    fig = plot.activation_bands(table)
    fig.canvas.draw()
    title = fig.axes[0].title
    assert title.get_text().count("\n") == 3
    assert title.get_window_extent().y1 <= fig.bbox.height, "the title's first line cut off"
    plt.close(fig)
    fig = plot.activation_bands(_bands_table({1: 0.3, 6: 2.0, 11: 90.0}))  # 300x apart
    ax = fig.axes[0]
    assert ax.get_ylabel() == "activation value" and "divided" not in ax.get_title()
    assert max(np.nanmax(np.abs(ln.get_ydata())) for ln in ax.lines) > 50
    plt.close(fig)


def test_a_run_records_card_of_a_depth_0_net_draws_no_empty_gradient_panel():
    """``execute(config)`` of a net without hidden layers: its RunRecord card (Jupyter) drew
    the gradient-per-layer figure as an empty panel reading "no positive 'grad_pre_std'
    probes recorded", as if its gradients had vanished; it now says it has no hidden layer,
    and a net of 2 hidden layers keeps its figure."""
    import re

    from depthlab.experiments import execute

    for depth in (0, 2):
        card = execute(_tiny_config(depth))._repr_html_()
        images = len(re.findall(r"<img ", card))
        if depth == 0:
            assert "No hidden layer (depth 0)" in card and images == 1, images  # training
        else:
            assert "No hidden layer" not in card and images == 2, images


def test_the_playgrounds_doctor_writes_a_verifications_metric_as_the_command_line_does():
    """A zeros-initialized net's init_mismatch finding: its metric is inf before the cure and
    none after (he_normal leaves nothing the metric measures). JSON carries both as null, and
    the playground wrote "init variance factor not finite → not finite (resolved)", a cure
    that broke the measurement; the command line writes "inf -> none (the cure left nothing
    this metric measures)". The page now gets that text from the server."""
    import json
    import math

    from depthlab.diagnosis.findings import Verification
    from depthlab.jsonable import jsonable
    from depthlab.playground.doctor_task import verification_texts

    v = Verification(kind="init_mismatch", prescription={"init": "he_normal"},
                     before={"train_loss": 4.769, "val_acc": 0.485},
                     after={"train_loss": 1.02, "val_acc": 0.515}, metric="init variance factor",
                     metric_before=math.inf, metric_after=math.nan, resolved=True, helped=False,
                     chance_loss=0.6931)
    texts = json.loads(json.dumps(jsonable(verification_texts(v))))
    assert texts["metric_change"] == (
        "inf → none judged (the cure's weights are a random draw, whose variance is judged "
        "only in a layer of 20 weights or more; every layer has fewer than 20 weights)")
    assert "-> " + texts["metric_change"].split(" → ")[1] in v.summary()
    # the report's line of the stored verification says it so too (was "inf → not finite")
    from depthlab.report.build import _verification_text

    line = _verification_text(json.loads(json.dumps(v.to_dict())))
    assert "init variance factor inf → none judged (the cure's weights are a random draw" \
        in line, line
    v.metric_before, v.metric_after = 2.5, 0.8
    assert verification_texts(v)["metric_change"] == "2.5 → 0.8"
    v.after = {"train_loss": math.nan, "diverged": True}  # the cure diverged: the page's word
    v.metric_after = math.nan
    assert verification_texts(v)["metric_change"] == "2.5 → not finite"


def test_a_jacobian_step_that_overflowed_is_named_in_the_figure_and_caption(tmp_path):
    """A 60-layer ReLU N(0, 1) run that diverged: its Jacobian at step 0 is finite (σ up to
    2e25), every σ at step 1 is NaN. The figure said "not drawn: 8 not finite" (of which
    step?) and the caption listed step 0 alone, as if step 1 had not been recorded."""
    import dataclasses

    import matplotlib.pyplot as plt
    import numpy as np
    import pandas as pd
    from test_report import synthetic_record

    from depthlab.experiments import Store
    from depthlab.report import build, figures

    rows = [(step, ex, i, np.nan if step else 10.0 ** (22 + ex + i))
            for step in (0, 1) for ex in range(4) for i in range(2)]
    jac = pd.DataFrame(rows, columns=["step", "example", "idx", "value"])
    fig = figures.jacobian_spectrum(jac)
    assert "not finite at step 1: all 8" in fig.axes[0].get_title(), fig.axes[0].get_title()
    plt.close(fig)
    store = Store(tmp_path)
    rec = synthetic_record("jj36aaaaaaaa", depth=3, sweep=None, probes=False)
    store.add_run(dataclasses.replace(rec, name="overflowed", jacobian=jac))
    row = build._runs_table(store).iloc[0]
    text = _text(build._run_section(store, row, "", True, _NoFigures(), [], None))
    store.close()
    assert "step 1: all 8 σ not finite" in text and "step 0: mean σ²" in text, text[-600:]


def test_a_sweep_figure_without_any_value_draws_no_scale_of_values():
    """``plot.sweep_metric`` of a grid whose every point failed or diverged: every cell is
    hatched, beside a colour bar from 0 to 1 that scaled nothing (read as values 0..1)."""
    import matplotlib.pyplot as plt
    import numpy as np
    import pandas as pd

    from depthlab import plot

    runs = pd.DataFrame([(d, lr, np.nan, "failed" if d == 1 else "diverged")
                         for d in (1, 2) for lr in (0.1, 1.0)],
                        columns=["depth", "train.lr", "val_acc", "status"])
    fig = plot.sweep_metric(runs, ["depth", "train.lr"], "val_acc")
    assert len(fig.axes) == 1, [ax.get_label() for ax in fig.axes]
    plt.close(fig)
    # one key: the bars' placeholders on a 0 .. 0.15 axis read as values of 0.15, and their
    # "✗ diverged" texts stood above the axes, over the title
    fig = plot.sweep_metric(runs[runs.depth == 2], ["train.lr"], "val_acc")
    ax = fig.axes[0]
    assert len(ax.get_yticks()) == 0 and ax.get_ylabel() == "val_acc: no value"
    fig.canvas.draw()
    top = ax.get_window_extent().y1
    assert all(t.get_window_extent().y1 <= top for t in ax.texts), "a text above the axes"
    plt.close(fig)
    runs.loc[0, ["val_acc", "status"]] = [0.5, "finished"]
    fig = plot.sweep_metric(runs, ["depth", "train.lr"], "val_acc")
    assert len(fig.axes) == 2  # a value: its colour bar
    plt.close(fig)
