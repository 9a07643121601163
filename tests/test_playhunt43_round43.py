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


# -- two tabs, each a network of 60% of the free memory ------------------------------------------
def _answer(ws, timeout: float = 60) -> dict:
    """The first ``accepted`` or ``error`` the server sends on ``ws``."""
    import json
    import time

    deadline = time.monotonic() + timeout
    while True:
        m = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
        if m["type"] in ("accepted", "error"):
            return m


def test_a_second_tab_cannot_take_the_memory_a_first_tabs_network_was_accepted_with(
        monkeypatch):
    # a teacher's two tabs (or two students) each chose a network needing 60% of the free
    # memory: the second was checked while the first was being built (or paused at step 0, its
    # gradients and momentum not written yet, so the machine still reported them free), both
    # were accepted, and together they asked for 120% of it
    import json

    from websockets.sync.client import connect

    from depthlab.memory import format_bytes
    from depthlab.playground.memory_check import setup_bytes
    from depthlab.playground.server import Background

    big = {"model.depth": "4", "model.width": "512"}
    need = setup_bytes(parse_setup(big))[0]
    budget = int(need / 0.6)
    monkeypatch.setenv("DEPTHLAB_MEMORY_LIMIT", str(budget))  # the memory the machine has free
    with Background() as server:
        url = server.url.replace("http://", "ws://") + "ws"
        with connect(url) as a, connect(url) as b:
            a.send(json.dumps({"cmd": "setup", "query": big}))
            assert _answer(a)["type"] == "accepted"
            b.send(json.dumps({"cmd": "setup", "query": big}))
            m = _answer(b)
            assert m["type"] == "error" and m["key"] == "model.width", m
            assert m["message"].endswith(
                f"nothing was allocated ({format_bytes(need)} of the free memory is set aside "
                "for another tab's network: close it, or choose a smaller network)"), m
            # a network that fits in what is left is accepted, and the first tab changing its
            # own network is not held back by the memory its network holds itself
            b.send(json.dumps({"cmd": "setup", "query": {"model.depth": "2",
                                                         "model.width": "8"}}))
            assert _answer(b)["type"] == "accepted"
            a.send(json.dumps({"cmd": "setup", "query": {**big, "train.lr": "0.01"}}))
            assert _answer(a)["type"] == "accepted"
        # both tabs closed: a new tab has all of it
        with connect(url) as c:
            c.send(json.dumps({"cmd": "setup", "query": big}))
            assert _answer(c)["type"] == "accepted"


def test_networks_that_have_taken_their_memory_are_not_counted_twice(monkeypatch):
    # the process's resident memory is read from /proc/self/statm; here it is a controlled
    # number (the real one moves with whatever else the test process frees or allocates: a
    # CI worker's other threads gave back 64 MiB while this test wrote 64 MiB)
    from depthlab.playground import memory_check as mc

    assert mc.process_rss() > 0  # Linux: statm is read
    monkeypatch.delenv("DEPTHLAB_MEMORY_LIMIT", raising=False)
    nbytes = 64 << 20
    rss = [1 << 30]
    monkeypatch.setattr(mc, "process_rss", lambda: rss[0])
    base = mc.process_rss()
    assert mc.unclaimed_bytes(nbytes, base) == nbytes  # nothing allocated yet
    rss[0] += nbytes // 4  # built, a quarter written
    assert mc.unclaimed_bytes(nbytes, base) == nbytes - nbytes // 4
    rss[0] += nbytes  # trained: all of it resident (and more)
    assert mc.unclaimed_bytes(nbytes, base) == 0  # the machine's free memory shows it
    monkeypatch.setenv("DEPTHLAB_MEMORY_LIMIT", "8G")  # a fixed budget: all of it, always
    assert mc.unclaimed_bytes(nbytes, base) == nbytes
    assert mc.unclaimed_bytes(0, base) == 0


def test_a_tab_whose_trained_network_holds_most_of_the_memory_can_still_change_it(monkeypatch):
    # a network of 60% of the free memory, trained (its gradients and momentum written): the
    # machine reported 40% free, and every change of the tab (a learning rate, reset itself)
    # was refused for needing 60%, although the tab's network is freed before the next is built
    import json

    from websockets.sync.client import connect

    from depthlab import memory
    from depthlab.playground import app as app_module
    from depthlab.playground import memory_check
    from depthlab.playground.memory_check import setup_bytes
    from depthlab.playground.server import Background

    monkeypatch.delenv("DEPTHLAB_MEMORY_LIMIT", raising=False)
    big = {"model.depth": "4", "model.width": "512"}
    need = setup_bytes(parse_setup(big))[0]
    # a machine with 1.8 networks of memory free, of which this process has taken ``taken``
    taken = [0]
    monkeypatch.setattr(memory, "available_memory", lambda: int(1.8 * need) - taken[0])
    monkeypatch.setattr(app_module, "available_memory", memory.available_memory, raising=False)
    for module in (memory_check, app_module):
        monkeypatch.setattr(module, "process_rss", lambda: (1 << 30) + taken[0], raising=False)
    with Background() as server:
        url = server.url.replace("http://", "ws://") + "ws"
        with connect(url) as a:
            a.send(json.dumps({"cmd": "setup", "query": big}))
            assert _answer(a)["type"] == "accepted"
            taken[0] = need  # trained: its pages written, the machine shows them taken
            a.send(json.dumps({"cmd": "setup", "query": {**big, "train.lr": "0.01"}}))
            m = _answer(a)
            assert m["type"] == "accepted", m
            a.send(json.dumps({"cmd": "reset"}))
            m = _answer(a)
            assert m["type"] == "accepted", m
            # a second tab still has only what the first one left
            with connect(url) as b:
                b.send(json.dumps({"cmd": "setup", "query": big}))
                m = _answer(b)
                assert m["type"] == "error" and "needs about" in m["message"], m


def test_a_setup_refused_for_memory_starts_on_play_or_reset_once_the_memory_is_free(
        monkeypatch):
    # a page opened while another tab (or another program) held the memory: refused ("set
    # aside for another tab's network: close it"); the learner closed it and pressed play or
    # reset, and the server repeated the refusal word for word without looking again
    import json

    from websockets.sync.client import connect

    from depthlab import memory
    from depthlab.playground import app as app_module
    from depthlab.playground.memory_check import setup_bytes
    from depthlab.playground.server import Background

    big = {"model.depth": "4", "model.width": "512"}
    need = setup_bytes(parse_setup(big))[0]
    free = [need // 2]
    monkeypatch.delenv("DEPTHLAB_MEMORY_LIMIT", raising=False)
    monkeypatch.setattr(memory, "available_memory", lambda: free[0])
    monkeypatch.setattr(app_module, "available_memory", memory.available_memory, raising=False)
    with Background() as server:
        with connect(server.url.replace("http://", "ws://") + "ws") as ws:
            ws.send(json.dumps({"cmd": "setup", "query": big}))
            m = _answer(ws)
            assert m["type"] == "error" and "needs about" in m["message"], m
            ws.send(json.dumps({"cmd": "reset"}))  # still not free: refused again
            m = _answer(ws)
            assert m["type"] == "error" and m["message"].startswith("nothing to reset"), m
            free[0] = 4 * need
            ws.send(json.dumps({"cmd": "play", "press": 1}))
            m = _answer(ws)
            assert m["type"] == "accepted" and m["query"]["model.width"] == "512", m
            while True:  # and it trains
                m = json.loads(ws.recv(timeout=60))
                assert m["type"] != "error", m
                if m["type"] == "update" and m["step"] > 0:
                    break
        with connect(server.url.replace("http://", "ws://") + "ws") as ws:
            free[0] = need // 2
            ws.send(json.dumps({"cmd": "setup", "query": big}))
            assert _answer(ws)["type"] == "error"
            free[0] = 4 * need
            ws.send(json.dumps({"cmd": "reset"}))
            assert _answer(ws)["type"] == "accepted"


# -- where a divergence started, in the panels' numbering ---------------------------------------
def test_the_layer_a_divergence_started_in_is_placed_in_the_panels(browser, server):
    # "first non-finite values came out of layer 'dense11'" beside panels of layers 1-10: the
    # trainer's name of the output layer, which the page shows nowhere
    with checked_page(browser, 1280, 800) as pg:
        pg.goto(server.url + "?model.depth=10&model.width=8")
        pg.wait_for_function(MEASURED, timeout=90_000)
        said = {}
        for layer in ("dense11", "dense3", "act10", "bn2", "input", "dense12"):
            pg.evaluate("""(layer) => onDiverged({type: "diverged", step: 4, epoch: 1, layer,
              loss: null, losses: [], nonfinite_parameters: [],
              message: `training diverged at step 4 (epoch 1): loss = nan; first non-finite ` +
                `values came out of layer '${layer}'. Lower the learning rate.`})""", layer)
            pg.wait_for_function("(l) => document.getElementById('diverged').dataset.layer === l",
                                 arg=layer)
            said[layer] = pg.text_content("#diverged")
        assert "layer 'dense11' (the output layer, after the last hidden one)." in said["dense11"]
        assert "layer 'dense3' (the weighted sum into layer 3 of the panels)" in said["dense3"]
        assert "layer 'act10' (layer 10 of the panels)" in said["act10"]
        assert "layer 'bn2' (the batch norm before layer 2 of the panels)" in said["bn2"]
        for other in ("input", "dense12"):  # no such layer in the panels: as the trainer says
            assert f"layer '{other}'. " in said[other], said[other]
