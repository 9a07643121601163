"""Round 39 (playhunt39): the playground and the reports used as a learner, a teacher and a
hidden test would. Each test failed before its fix."""

from __future__ import annotations

import itertools

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from depthlab import plot  # noqa: E402


def _many_run_sweep(runaway: dict[int, float]) -> pd.DataFrame:
    """48 runs, activation x lr x depth, losses 0.55..0.75 but the ``runaway`` ones."""
    rows = []
    grid = itertools.product(["relu", "tanh", "sigmoid", "selu", "gelu", "elu"],
                             [0.01, 0.1, 1.0, 10.0], [3, 12])
    for i, (act, lr, depth) in enumerate(grid):
        loss = runaway.get(i, 0.55 + 0.2 * ((i * 7) % 11) / 10)
        rows.append({"name": f"playground:activation={act},lr={lr},depth={depth}",
                     "model.activation": act, "train.lr": lr, "model.depth": depth,
                     "train_loss": loss, "status": "finished"})
    return pd.DataFrame(rows)


def _overlap(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_cut_bars_of_a_many_run_sweep_keep_their_legend_line_and_do_not_overprint():
    # a sweep of 48 runs, four neighbours "finished" with losses 8.4 .. 103 beside ~0.6: their
    # written values ran into one another ("8.37 27.25 103 14.03" printed over each other) and
    # into the title, and the title "train_loss by run" had lost the line saying what ↑ means
    runs = _many_run_sweep({10: 8.37, 11: 27.2, 12: 103.0, 13: 14.0, 26: 2.05, 27: 2.21})
    fig = plot.sweep_metric(runs, ["model.activation", "train.lr", "model.depth"],
                            "train_loss", higher_is_better=False)
    ax = fig.axes[0]
    assert "cut" in ax.get_title() and ax.get_title().startswith("train_loss by run")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    marks = [t for t in ax.texts if "↑" in t.get_text()]
    assert len(marks) == 6, [t.get_text() for t in ax.texts]
    boxes = [t.get_window_extent(renderer) for t in marks]
    for a, b in itertools.combinations(boxes, 2):
        assert not _overlap(a, b), (a, b)
    title = ax.title.get_window_extent(renderer)
    for box in boxes:
        assert not _overlap(box, title), (box, title)


def test_diverged_marks_of_a_long_one_key_sweep_do_not_run_into_one_another():
    # 26 learning rates, the 5 largest diverged: their "✗ diverged" texts (wider than a bar's
    # pitch) ran into one another ("✗ diverged✗ diverged...")
    lr = np.logspace(-4, 1, 26)
    acc = 0.5 + 0.4 * np.random.default_rng(0).random(26)
    runs = pd.DataFrame({"train.lr": lr, "val_acc": np.where(lr > 1, np.nan, acc),
                         "status": np.where(lr > 1, "diverged", "finished")})
    fig = plot.sweep_metric(runs, ["train.lr"], "val_acc")
    ax = fig.axes[0]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    marks = [t for t in ax.texts if t.get_text().startswith("✗")]
    values = [t for t in ax.texts if not t.get_text().startswith("✗")]
    assert len(marks) == 5 and len(values) == 21
    boxes = [t.get_window_extent(renderer) for t in ax.texts]
    for a, b in itertools.combinations(boxes, 2):
        assert not _overlap(a, b), (a, b)


def test_the_doctors_answer_is_announced_to_a_screen_reader(browser, server):
    # a learner on a screen reader pressed doctor (keyboard): the findings replaced the panel's
    # content, the focus came back to the doctor button, and nothing said the answer had come
    # (no live region held it); one persistent role=status line now says what it found
    from helpers.browser import checked_page

    with checked_page(browser, 1000, 800) as pg:
        pg.goto(server.url + "?model.depth=2&model.width=4&model.init=zeros")
        pg.wait_for_selector("#f-model-depth")
        status = pg.locator("#panel-doctor [role=status]:not(.applied-note)")
        assert status.count() == 1  # there before the doctor runs: announced when it changes
        pg.locator("#doctor").focus()
        pg.keyboard.press("Enter")
        pg.wait_for_selector("#doctor-out .finding", timeout=60_000)
        said = status.text_content()
        kinds = pg.locator("#doctor-out .finding").evaluate_all(
            "els => els.map(e => e.dataset.kind)")
        # all-zero weights: the doctor finds init_mismatch (at least one finding)
        assert kinds and said.startswith("the doctor's answer: "), (said, kinds)
        assert f"{len(kinds)} finding" in said and all(k in said for k in kinds), (said, kinds)


def test_a_zero_gradient_from_all_zero_weights_is_not_blamed_on_dead_units(browser, server):
    # init zeros, tanh: every hidden gradient is exactly 0 because the weights above each layer
    # are 0 (tanh'(0) = 1: no unit is dead); the summary listed only "a zero derivative: dead
    # units, a step function; or values below the smallest float32 number"
    from helpers.browser import checked_page

    with checked_page(browser, 1000, 800) as pg:
        pg.goto(server.url + "?model.depth=3&model.width=4&model.init=zeros")
        pg.wait_for_function("() => document.getElementById('grad-summary').dataset.zero === '3'")
        text = pg.locator("#grad-summary .zero").text_content()
        assert "weights" in text and "0" in text, text
