"""Round 40 (reporthunt40): what a person reads in the report's figures."""

from __future__ import annotations

import pandas as pd

_BERT_PARTS = ("attention.self.query", "attention.self.key", "attention.self.value",
               "attention.output.dense", "intermediate.dense", "output.dense")


def _bert_names() -> list[str]:
    return (["bert.embeddings.word_embeddings"]
            + [f"bert.encoder.layer.{i}.{p}" for i in range(12) for p in _BERT_PARTS]
            + ["classifier"])


def test_long_module_paths_keep_their_index_and_leaf_and_stay_distinct():
    """BERT-base's module names on a layer axis (cut to 40 characters by ``layer_names``):
    ``bert.encoder.layer.10.attention.self.query`` and ``...self.value`` both read
    ``bert.encoder.layer.10.attention.self.…#1`` (two layers, one tick label; layer 11's pair
    ``…#2``), and cut to a tick's 32 characters the block's number was gone
    (``bert.encoder.lay…tion.self.query`` for every block). A module path too long keeps its
    numbers and its last part: its leading names shorten to their first letter
    (``b.encoder.layer.10.attention.self.query``), and no two labels coincide."""
    from depthlab.report.figures import cut_labels, layer_names

    names = _bert_names()
    for limit in (40, 32, 24):
        out = cut_labels(names, limit)
        assert len(set(out)) == len(out), [o for o in out if out.count(o) > 1]
        assert all(len(o) <= limit for o in out), out
    for limit in (40, 32):
        for name, o in zip(names, cut_labels(names, limit)):
            parts = name.split(".")
            assert o.endswith(parts[-1]), (name, o)  # the leaf: query, key, value, dense
            for p in parts:
                if p.isdigit():
                    assert f".{p}." in o, (name, o)  # the block's number
    table = pd.DataFrame({"layer": range(1, len(names) + 1), "module": names,
                          "quantity": "grad_pre_std", "value": 1.0, "step": 0})
    labels = layer_names(table)
    assert len(set(labels.values())) == len(names)
    assert labels[1 + 6 * 10 + 1] == "b.encoder.layer.10.attention.self.query", labels[62]
    # a name that fits, and labels that are not module paths, are cut as before
    assert cut_labels(["short.name", "lr=0.05,activation=tanh"], 40) == \
        ["short.name", "lr=0.05,activation=tanh"]
    assert cut_labels(["sweep:x=1", "sweep:x=2"], 5) == ["…x=1", "…x=2"]


def test_the_update_ratio_title_naming_unchanged_layers_fits_the_figure():
    """A 62-layer torch Watch run (``encoder_stack_with_long_name.N.very_long_projection_
    layer_name`` blocks) whose first layers' updates were below float32's resolution: the
    title's line "not drawn: zero (weights unchanged) in input_embedding, encoder_stac…, ..."
    was wider than the figure and cut off on the left ("hts unchanged) in ..."). Every line
    of the title lies inside the figure (a long one wraps), and the plot stays below it."""
    import numpy as np

    from depthlab.report.figures import update_ratio

    names = (["input_embedding"]
             + [f"encoder_stack_with_long_name.{i}.very_long_projection_layer_name"
                for i in range(60)] + ["classifier_head"])
    rows = [{"step": step, "layer": k, "module": m, "quantity": "update_ratio",
             "value": np.nan if step == 0 else (0.0 if k < 30 else 10.0 ** (k / 10 - 12))}
            for step in (0, 2, 4) for k, m in enumerate(names, 1)]
    fig = update_ratio(pd.DataFrame(rows))
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    title = ax.title.get_window_extent(renderer)
    width = fig.bbox.width
    assert title.x0 >= 0 and title.x1 <= width, (title, width, ax.get_title())
    assert title.y1 <= fig.bbox.height and title.y0 >= ax.get_window_extent(renderer).y1 - 1
    assert "unchanged" in ax.get_title() and "input_embedding" in ax.get_title()


def test_the_training_caption_names_a_moving_average_only_where_one_is_drawn():
    """A 12-step torch Watch run's (and a one-step run's) training caption read "Loss per step
    (over 50 steps faint, beside its exponential moving average)": its figure draws the
    loss alone, no moving average. The caption names one only for a run whose figure has
    it (more than 50 steps), with the same rule as the figure."""
    import numpy as np

    from depthlab.report import build, figures

    for n, smoothed in ((1, False), (12, False), (50, False), (51, True), (400, True)):
        steps = pd.DataFrame({"step": np.arange(n), "loss": np.linspace(2.0, 1.0, n)})
        fig = figures.training_curves(steps, pd.DataFrame(), pd.DataFrame())
        drawn = any(line.get_label() == "smoothed (EMA)" for line in fig.axes[0].lines)
        cap = build._training_caption(steps, has_acc=False, final=False)
        assert drawn == smoothed and ("moving average" in cap) == smoothed, (n, cap)
        assert cap.startswith("Loss per step") and "no accuracy" in cap, cap
    cap = build._training_caption(pd.DataFrame({"loss": [np.nan] * 60}), True, False)
    assert "moving average" not in cap and "right: accuracy" in cap, cap


def test_a_log_axis_labels_its_twos_and_fives_in_one_notation():
    """A one-step torch run's gradients span 1e-3 .. 0.05: its log axis read "10^-3,
    2×10^-3, 5×10^-3, 10^-2, 0.02" (the 2s and 5s of one axis in two notations, plain from
    0.01 on). On an axis whose labelled 2s and 5s do not all lie in the plain range, every
    one is written as the powers of ten are; an axis within it keeps its plain ones."""
    from matplotlib.figure import Figure

    from depthlab.report.figures import _tidy_log_axis

    def labels(lo: float, hi: float) -> list[str]:
        fig = Figure()
        ax = fig.add_subplot()
        ax.plot([0, 1], [lo, hi])
        ax.set_yscale("log")
        _tidy_log_axis(ax.yaxis, lo, hi)
        fig.canvas.draw()
        return [t.get_text() for t in ax.yaxis.get_ticklabels(minor=True) if t.get_text()]

    mixed = labels(1e-3, 0.05)
    assert mixed and all("times" in t for t in mixed), mixed
    plain = labels(0.02, 1.5)
    assert plain and not any("times" in t for t in plain), plain


def test_a_list_of_named_layers_cut_short_says_how_many_it_names():
    """The update-ratio title of the 62-layer Watch run read "zero (weights unchanged) in
    input_embedding, e.0…, e.1…, e.2…, ...": 29 layers, of which the reader learnt four and
    not how many more. A list of module names cut short says the count first."""
    from depthlab.report.figures import _span_text

    names = {k: f"block.{k}.fc" for k in range(1, 41)}
    assert _span_text(list(range(1, 30)), names) == \
        "29 layers: block.1.fc, block.2.fc, block.3.fc, block.4.fc, ..."
    assert _span_text([3, 7], names) == "block.3.fc, block.7.fc"  # all named: no count
    assert _span_text([1, 2, 3], None) == "layers 1-3"
