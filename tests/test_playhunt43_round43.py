"""Round 43 (playhunt43): the browser playground as a learner and a teacher use it. Each test
failed before its fix. Screenshots go to a temporary folder (``DEPTHLAB_SCREENSHOTS=DIR``
keeps them in DIR)."""

from __future__ import annotations

import pytest
from helpers.browser import checked_page, screenshot_dir

from depthlab.playground.app import check
from depthlab.playground.setup import BY_KEY, SetupError, parse_setup

MEASURED = "document.getElementById('grad-summary').dataset.step !== ''"


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    return screenshot_dir(tmp_path_factory.mktemp("playhunt43"))


# -- a learning rate too small to change a weight -------------------------------------------------
@pytest.mark.parametrize("lr", ["5e-324", "1e-40", "1e-20", "9.9e-9"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_learning_rate_too_small_to_train_is_refused_naming_the_smallest(lr, dtype):
    # was accepted: 5e-324 is 0 to a float32 network, and lr * g underflows to 0 in float64;
    # the page trained with a learning rate of 0 (which it refuses) and only the update panel
    # said "no hidden layer's weights changed"
    with pytest.raises(SetupError) as e:
        check({"train.lr": lr, "model.dtype": dtype})
    assert e.value.key == "train.lr"
    assert str(e.value) == (f"train.lr = {lr!r} is not accepted; expected a number >= 1e-8 "
                            "and <= 10")


def test_the_smallest_learning_rate_and_the_usual_ones_are_accepted():
    from depthlab.playground.setup import MIN_LR

    assert MIN_LR == 1e-8
    for lr in ("1e-8", "0.00001", "0.05", "10"):
        assert parse_setup({"train.lr": lr})["train.lr"] == float(lr)
    assert "1e-8" in BY_KEY["train.lr"].to_json()["accepts"]


def test_typing_a_tiny_learning_rate_is_refused_beside_the_control(browser, server):
    with checked_page(browser, 1280, 800) as pg:
        pg.goto(server.url + "?model.depth=2&model.width=8")
        pg.wait_for_function(MEASURED, timeout=90_000)
        pg.fill("#f-train-lr", "5e-324")
        pg.press("#f-train-lr", "Enter")
        note = pg.locator(".field[data-key='train.lr'] .field-error")
        note.wait_for(state="visible", timeout=30_000)
        assert "expected a number >= 1e-8 and <= 10" in note.text_content()
        assert pg.get_attribute("#f-train-lr", "aria-invalid") == "true"


# -- the preset's explanation is in sight --------------------------------------------------------
IN_VIEW = """() => { const r = document.getElementById('preset-why').getBoundingClientRect();
  return [r.top, r.bottom, r.height, window.innerHeight]; }"""


@pytest.mark.parametrize("size", [(1280, 800), (800, 800)])
def test_a_presets_explanation_is_shown_in_the_window(browser, server, shots, size):
    # a learner at 1280 x 800 clicked "naive: sigmoid + N(0, 1)": its story ("the textbook net
    # of the 1990s: weights N(0, 1) push many sigmoid units into saturation ...") was written at
    # the foot of the controls, 782 px down a column cut at 800 px: one line showed, the rest
    # was out of sight with nothing saying there was more
    w, h = size
    with checked_page(browser, w, h) as pg:
        pg.goto(server.url + "?model.depth=2&model.width=8")
        pg.wait_for_function(MEASURED, timeout=90_000)
        for name in ("naive", "residual"):
            pg.click(f"[data-preset={name}]")
            pg.wait_for_function(f"document.getElementById('preset-why').textContent === "
                                 f"S.schema.presets['{name}'].why", timeout=60_000)
            top, bottom, height, inner = pg.evaluate(IN_VIEW)
            assert height > 0 and 0 <= top and bottom <= inner, (name, top, bottom, inner)
            pg.screenshot(path=str(shots / f"playhunt43_preset_{name}_{w}x{h}.png"))
        # a change by hand clears it, and nothing of it stays on the page (no empty box)
        pg.fill("#f-train-seed", "3")
        pg.press("#f-train-seed", "Tab")
        pg.wait_for_function("document.getElementById('preset-why').textContent === ''")
        assert pg.evaluate(IN_VIEW)[2] == 0
