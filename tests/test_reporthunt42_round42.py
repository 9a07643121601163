"""Round 42 (reporthunt42): reports and the playground on inputs nobody tried."""

from __future__ import annotations

import pandas as pd


def _rows(quantities: dict[str, dict[int, list[float]]], steps=(0, 1, 2, 3)) -> pd.DataFrame:
    """A probe table: ``{quantity: {layer: [value per step]}}``."""
    return pd.DataFrame([{"step": s, "layer": layer, "quantity": q, "value": v}
                         for q, per in quantities.items() for layer, vals in per.items()
                         for s, v in zip(steps, vals)])


def test_a_net_whose_pre_activations_are_nan_from_step_0_gets_a_saturation_figure():
    """A torch run whose first weights were NaN (every pre-activation NaN at every recorded
    step, its ReLU's inactive fraction recorded as 0) stopped the whole report with
    ``ValueError: Axis limits cannot be NaN or Inf``: the panel was kept for its finite
    values, which were then left out as NaN-step values, and its y range was NaN. A panel
    left with nothing to draw says why instead."""
    from depthlab.report import figures

    nan = float("nan")
    probes = _rows({"pre_std": {1: [nan] * 4, 2: [nan] * 4},
                    "inactive_frac": {1: [0.0] * 4, 2: [nan] * 4},
                    "dead_frac": {1: [0.0] * 4, 2: [nan] * 4}})
    fig = figures.saturation_dead(probes)
    text = " ".join(t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text")))
    assert figures.figure_png(fig)[:4] == b"\x89PNG"
    assert "pre-activations NaN/inf" in text, text


def _titles(fig) -> list[str]:
    return [ax.get_title() for ax in fig.axes]


def test_each_runs_zero_layers_are_named_as_its_own_in_an_overlay():
    """Two runs overlaid, one dead everywhere (4 layers of 0), one whose layers 2-3 ended at
    0 (3 layers, layer 1 drawn): the end panel's title read "dead, partly: layers 1-4: zero"
    (the union of both runs' zero layers), naming a layer 4 the second run does not have and
    its drawn layer 1 as zero. Each run's zero layers are its own."""
    from depthlab import plot

    dead = _rows({"grad_pre_std": {k: [0.0] * 4 for k in (1, 2, 3, 4)}})
    partly = _rows({"grad_pre_std": {1: [0.1, 0.2, 0.3, 0.4], 2: [0.1, 0.1, 0.1, 0.0],
                                     3: [0.1, 0.1, 0.1, 0.0]}})
    fig = plot.gradient_per_layer({"dead": dead, "partly": partly}, False)
    start, end = _titles(fig)[:2]
    assert "dead: layers 1-4: zero" in start.replace("\n", " "), start
    flat = end.replace("\n", " ")
    assert "dead: layers 1-4" in flat and "partly: layers 2-3" in flat, end
    assert "dead, partly" not in flat, end
    # one span for all of them: said once, as before
    fig = plot.gradient_per_layer({"dead": dead, "dead too": dead.copy(),
                                   "partly": partly}, False)
    assert "dead, dead too: layers 1-4: zero" in _titles(fig)[0].replace("\n", " ")


def test_a_run_with_no_finite_value_is_named_not_left_out_without_a_word():
    """A torch run whose weights were NaN from step 0, overlaid with a healthy one: no line,
    no legend entry, no word (the caption counted it among "one colour per run"). A run with
    rows of the quantity and no finite value is named in the panels' titles; alone, its empty
    figure says the probes are NaN/inf (it read "no positive probes recorded")."""
    from depthlab import plot

    nan = float("nan")
    broken = _rows({"grad_pre_std": {1: [nan] * 4, 2: [nan] * 4}})
    healthy = _rows({"grad_pre_std": {1: [0.1] * 4, 2: [0.2] * 4}})
    fig = plot.gradient_per_layer({"healthy": healthy, "torch-nan0": broken}, False)
    for title in _titles(fig)[:2]:
        assert "torch-nan0" in title and "not finite" in title, title
    fig = plot.gradient_per_layer({"torch-nan0": broken}, False)
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert any("NaN or inf" in t for t in texts), texts
    dead = _rows({"grad_pre_std": {1: [0.0] * 4, 2: [0.0] * 4}})
    fig = plot.gradient_per_layer(dead, False)
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert any("0" in t and "log axis" in t for t in texts), texts
    fig.canvas.draw()  # each message inside its panel (a 62-character line crossed its axis)
    for ax in fig.axes:
        box, inside = ax.get_window_extent(), [t.get_window_extent() for t in ax.texts]
        assert all(b.x0 >= box.x0 and b.x1 <= box.x1 for b in inside), (box, inside)


def test_the_end_panel_says_which_runs_end_early_and_why():
    """A run diverged after step 1 (NaN) and a run whose layers all died (0) after step 2,
    beside a healthy one: the end panel read "2 runs: their last step with values above 0",
    which is wrong for the diverged run (its last finite step) and named neither. Two such
    runs are each named with their step and reason."""
    from depthlab import plot

    nan = float("nan")
    diverged = _rows({"grad_pre_std": {1: [0.1, 0.2, nan, nan], 2: [0.2, 0.3, nan, nan]}})
    died = _rows({"grad_pre_std": {1: [0.1, 0.1, 0.1, 0.0], 2: [0.2, 0.2, 0.2, 0.0]}})
    healthy = _rows({"grad_pre_std": {1: [0.1] * 4, 2: [0.2] * 4}})
    fig = plot.gradient_per_layer({"healthy": healthy, "diverged": diverged, "died": died},
                                  False)
    end = _titles(fig)[1]
    assert "diverged: step 1, the last finite" in end, end
    assert "died: step 2, the last above 0" in end, end
    # more of them: counted, with both reasons
    later = diverged.assign(step=diverged["step"] + 1)
    fig = plot.gradient_per_layer({"healthy": healthy, "diverged": diverged, "later": later,
                                   "died": died}, False)
    end = _titles(fig)[1].replace("\n", " ")
    assert "3 runs: their last step with values (the last finite or above 0)" in end, end


def test_the_weight_std_figure_says_when_the_end_is_not_finite():
    """A torch run whose loss went NaN (the Watch goes on recording, every weight NaN from
    step 2): the figure "Weight std per layer: initialization and end" drew step 1 as its end
    and said nothing of steps 2-3. The recorded steps after the last drawn one are named."""
    from depthlab.report import figures

    nan = float("nan")
    probes = _rows({"weight_std": {1: [0.5, 0.6, nan, nan], 2: [0.2, 0.3, nan, nan]}})
    fig = figures.weight_std_profile(probes)
    title = fig.axes[0].get_title()
    assert "steps 2-3: not finite in any layer" in title, title
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "measured, step 1" in labels, labels
    # every step NaN after the first: one point per layer, and the same note
    probes = _rows({"weight_std": {1: [nan] * 4, 2: [0.2, nan, nan, nan]}})
    title = figures.weight_std_profile(probes).axes[0].get_title()
    assert "steps 1-3: not finite in any layer" in title, title


MEASURED = "document.getElementById('grad-summary').dataset.step !== ''"


def test_the_playground_says_which_layers_its_histogram_panels_leave_out(browser, server):
    """A 7-layer net in the playground: the histogram panel and the activations-over-training
    panel drew layers 1, 2, 3, 5, 6, 7 (six picked: the first, the last, evenly spaced), and
    a learner counting seven layers looked for layer 4 without a word. Each panel now says how
    many it shows; a net of six layers or fewer shows them all and says nothing."""
    from helpers.browser import checked_page

    with checked_page(browser) as page:
        page.goto(server.url + "?model.depth=7&model.width=4")
        page.wait_for_function(f"{MEASURED} && S.ready && S.ready.n_layers === 7",
                               timeout=90_000)
        note = "6 of 7 layers shown: the first, the last and evenly spaced ones between"
        page.wait_for_function(f"document.getElementById('hist-layers').textContent === "
                               f"'{note}'")
        assert page.locator("#evo-layers").inner_text() == note
        assert page.locator("#hist-layers").is_visible()
        depth = page.locator("#f-model-depth")
        depth.fill("3")
        depth.press("Enter")
        page.wait_for_function(f"{MEASURED} && S.ready && S.ready.n_layers === 3",
                               timeout=90_000)
        assert page.locator("#hist-layers").inner_text() == ""
        assert page.locator("#evo-layers").inner_text() == ""


def _heat_runs(values: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"model.depth": [1, 2, 3] * 2, "train.lr": [0.1] * 3 + [0.01] * 3,
                         "val_acc": values, "status": "finished"})


def test_a_sweep_heatmap_of_one_value_has_no_colour_scale_and_says_so():
    """A sweep whose metric came out the same in every cell (a zeros init: loss ln 2 in all
    six): a colour bar ran from 0.63 to 0.76 beside six cells of one colour, a scale of
    values nobody measured. The title says every cell holds the same value, and no bar."""
    from depthlab.report import figures

    fig = figures.sweep_heatmap(_heat_runs([0.625] * 6), "model.depth", "train.lr")
    assert len(fig.axes) == 1, "a colour bar for one value"
    assert "0.625 in every cell" in fig.axes[0].get_title(), fig.axes[0].get_title()


def test_sweep_heatmap_cells_of_different_values_read_differently():
    """Cells of 0.6251 and 0.6249 were both written "0.625" in two different colours: the
    numbers said equal where the colours said not. A cell's number has the digits that tell
    the values apart (up to 5 significant); equal values keep one text."""
    from depthlab.report import figures

    fig = figures.sweep_heatmap(_heat_runs([0.6251, 0.6249, 0.5, 0.5, 0.7, 0.9]),
                                "model.depth", "train.lr")
    texts = sorted(t.get_text() for t in fig.axes[0].texts)
    assert "0.6251" in texts and "0.6249" in texts, texts
    assert texts.count("0.5") == 2 and "0.9" in texts, texts


def test_a_saturation_panel_of_a_dead_net_says_every_line_is_1():
    """A zeros-init ReLU net: every unit inactive and dead at every step (fraction 1 in four
    layers, one line showing under a legend of four): the title read "3 layers under another's
    line (same values)", where one value in every layer at every step says it plainly, as
    "0 in every layer at every step" does for a healthy net."""
    from depthlab.report import figures

    ones = {k: [1.0] * 4 for k in (1, 2, 3, 4)}
    fig = figures.saturation_dead(_rows({"pre_std": {k: [0.0] * 4 for k in ones},
                                         "inactive_frac": ones, "dead_frac": ones}))
    for ax in fig.axes:
        assert "1 in every layer at every step" in ax.get_title(), ax.get_title()
