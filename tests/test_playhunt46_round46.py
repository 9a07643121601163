"""Round 46 (playhunt46): what learners meet in the playground. Each test failed before its fix.
Screenshots go to a temporary folder (``DEPTHLAB_SCREENSHOTS=DIR`` keeps them in DIR)."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request

import pytest
from helpers.browser import checked_page, screenshot_dir

from depthlab.playground.server import Background
from depthlab.playground.setup import SetupError, parse_setup

MEASURED = "document.getElementById('grad-summary').dataset.step !== ''"
INVALID = "[...document.querySelectorAll('.field.invalid')].map((e) => e.dataset.key)"


@pytest.fixture(scope="module")
def server():
    with Background(memory_limit=256 * 2**20) as bg:
        yield bg


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    return screenshot_dir(tmp_path_factory.mktemp("playhunt46"))


# -- a link with several bad settings names them all --------------------------------------------
def test_parse_setup_names_every_bad_setting_in_one_line():
    # was: only the first (model.width); the learner met the activation's refusal after fixing it
    with pytest.raises(SetupError) as e:
        parse_setup({"model.activation": "nope", "model.width": "0", "train.lr": ["0.1", "5"]})
    text = str(e.value)
    assert "\n" not in text
    assert text.startswith("3 settings are not accepted: model.width = '0' is not accepted")
    assert "model.activation = 'nope' is not accepted; expected one of sigmoid, tanh" in text
    assert "train.lr is given 2 different values ('0.1', '5'); expected one" in text
    assert e.value.key == "model.width"  # the first in the controls' order is marked first


def test_one_bad_setting_keeps_its_own_message():
    with pytest.raises(SetupError) as e:
        parse_setup({"model.width": "0", "model.depth": "5"})
    assert str(e.value) == "model.width = '0' is not accepted; expected an integer >= 1 and " \
        "<= 4096"
    assert e.value.key == "model.width"


def test_the_check_route_names_every_bad_setting(server):
    query = urllib.parse.urlencode({"model.depth": "0", "train.seed": "x"})
    with urllib.request.urlopen(server.url + "api/check?" + query) as r:
        body = json.loads(r.read())
    assert body["ok"] is False and body["key"] == "model.depth"
    assert "model.depth = '0'" in body["message"] and "train.seed = 'x'" in body["message"]


def test_a_link_with_two_bad_settings_outlines_both_controls(server, shots, browser):
    with checked_page(browser, 1280, 800) as pg:
        pg.goto(server.url + "?model.width=0&model.activation=nope")
        pg.wait_for_function("document.getElementById('state').textContent === 'invalid'")
        pg.wait_for_function("document.querySelectorAll('.field.invalid').length > 0")
        pg.screenshot(path=str(shots / "playhunt46_two_bad_settings.png"))
        assert sorted(pg.evaluate(INVALID)) == ["model.activation", "model.width"]
        message = pg.inner_text("#message")
        assert "model.width = '0'" in message and "model.activation = 'nope'" in message
        assert pg.get_attribute("#f-model-activation", "aria-invalid") == "true"
        # fixing one leaves the other refused, outlined alone
        pg.fill("#f-model-width", "16")
        pg.press("#f-model-width", "Enter")
        pg.wait_for_function(f"JSON.stringify({INVALID}) === '[\"model.activation\"]'")
        assert "model.width" not in pg.inner_text("#message")


# -- a link's setting that its own choices leave unused is said ---------------------------------
def test_a_links_data_option_of_another_data_set_is_said_not_dropped_silently(server, shots,
                                                                              browser):
    query = urllib.parse.urlencode({"data.name": "digits", "data.options.noise": "0.5",
                                    "train.optimizer": "adam", "train.momentum": "0.5",
                                    "data.options.n_classes": "2"})  # the default: not said
    with checked_page(browser, 1280, 800) as pg:
        pg.goto(server.url + "?" + query)
        pg.wait_for_function(MEASURED)
        pg.screenshot(path=str(shots / "playhunt46_unused_link_settings.png"))
        note = pg.evaluate("(document.getElementById('link-note') || {}).textContent")
        assert note == ('Not used from the link: data.options.noise = "0.5": data set digits '
                        'does not take it, only spirals; train.momentum = "0.5": optimizer adam '
                        'has none, only sgd or rmsprop.'), note
        assert pg.is_visible("#link-note")
        # the page's own link (its URL) has the default: the note is the only trace of 0.5
        assert pg.evaluate("new URLSearchParams(location.search).get('train.optimizer')") == \
            "adam"
        pg.select_option("#f-model-activation", "relu")  # a change: the note no longer applies
        pg.wait_for_function("document.getElementById('link-note').textContent === ''")
        assert not pg.is_visible("#link-note")


def test_a_link_without_unused_settings_shows_no_note(server, browser):
    with checked_page(browser, 1280, 800) as pg:
        pg.goto(server.url + "?data.name=spirals&data.options.noise=0.5&data.options.d=&"
                "train.momentum=0.9")
        pg.wait_for_function(MEASURED)
        assert pg.inner_text("#link-note") == ""
        assert not pg.is_visible("#link-note")


# -- a torch doctor's diverged cure says the step, as the command line does ---------------------
def _torch_verification(after: dict) -> dict:
    """A torch doctor's stored verification (as ``Store.findings`` reads it back): a diverged
    run keeps ``steps`` (the count including the step whose loss was not finite) and no
    ``diverged_step``."""
    before = {"budget": 60, "diverged": False, "steps": 60, "train_acc": 0.104,
              "train_loss": 2.3154, "val_acc": 0.0944, "val_loss": 2.3239}
    return {"kind": "dead_relu", "prescription": {"activation": "leaky_relu", "init": "matched"},
            "before": before, "after": after, "metric": "max dead fraction",
            "metric_before": 1.0, "metric_after": 0.0, "resolved": True, "helped": False,
            "new_findings": [], "chance_loss": 2.301}


def test_a_torch_doctors_diverged_cure_names_its_step_in_the_report():
    from depthlab.diagnosis.findings import Verification
    from depthlab.report.build import _verification_text

    v = _torch_verification({"budget": 60, "diverged": True, "steps": 8, "train_acc": None,
                             "train_loss": None, "val_acc": None, "val_loss": None})
    text = _verification_text(v)
    # was: "train loss 2.315 → diverged, val acc 0.0944 → diverged, ..." beside the command
    # line's "train loss 2.315 -> nan (diverged at step 8)"
    assert text.startswith("train loss 2.315 → diverged at step 8, val acc 0.0944 → diverged "
                           "at step 8, max dead fraction 1 → 0: did not help"), text
    assert "(diverged at step 8)" in Verification.from_dict(v).summary()


def test_a_numpy_doctors_diverged_step_is_preferred_and_a_missing_one_is_not_invented():
    from depthlab.report.build import _verification_text

    v = _torch_verification({"diverged": True, "diverged_step": 3, "steps": 4,
                             "train_loss": None, "val_acc": None})
    assert "train loss 2.315 → diverged at step 3," in _verification_text(v)
    v = _torch_verification({"diverged": True, "train_loss": None, "val_acc": None})
    assert "train loss 2.315 → diverged, val acc" in _verification_text(v)


def test_a_torch_doctors_diverged_baseline_names_its_step_in_the_report():
    from depthlab.report.build import _findings_html

    html = _findings_html({"findings": [], "baseline": {"diverged": True, "steps": 5,
                                                        "train_loss": None, "val_acc": None},
                           "settings": {"steps": 60, "optimizer": "sgd", "lr": 30.0}})
    # was: "Baseline run: 60 steps of sgd lr 30, diverged: no finite train loss or val acc."
    assert "Baseline run: 60 steps of sgd lr 30, diverged at step 5: no finite train loss" in \
        html, html


# -- a Watch run of one recorded step: the gradient figure's caption says so --------------------
def test_the_gradient_profile_caption_of_a_one_step_watch_run_names_its_one_step(tmp_path):
    torch = pytest.importorskip("torch")
    import depthlab.torch as dlt
    from depthlab.report import write_report

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 8),
                                torch.nn.Tanh(), torch.nn.Linear(8, 3))
    x, y = torch.randn(32, 6), torch.randint(0, 3, (32,))
    with dlt.Watch(model, every=1, out=tmp_path) as watch:
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        watch.step(loss)
    html = write_report(tmp_path).read_text()
    # was: "at initialization and at the end" over the figure's one panel ("at initialization")
    assert "Std of dL/ds per hidden layer (log scale) at step 0, the only step recorded (no " \
        "later one to compare with)" in html
    assert "at initialization and at the end" not in html


# -- the gradient-flow table of Watch runs shows what they measured ----------------------------
def _watch_runs(out, names_steps_lrs):
    torch = pytest.importorskip("torch")
    import depthlab.torch as dlt

    torch.manual_seed(0)
    x, y = torch.randn(32, 6), torch.randint(0, 3, (32,))
    for name, steps, lr in names_steps_lrs:
        model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(),
                                    torch.nn.Linear(8, 8), torch.nn.Tanh(),
                                    torch.nn.Linear(8, 3))
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        with dlt.Watch(model, every=1, out=out, name=name) as watch:
            for _ in range(steps):
                opt.zero_grad()
                loss = torch.nn.functional.cross_entropy(model(x), y)
                loss.backward()
                watch.step(loss)
                opt.step()


def _flow_table_header(html: str) -> list[str]:
    import re

    flow = html[html.index("<h3>Gradient flow</h3>"):]
    head = flow[flow.index("<thead>"):flow.index("</thead>")]
    return [re.sub(r"<[^>]+>", "", h).strip() for h in re.findall(r"<th[^>]*>.*?</th>", head)]


def test_the_gradient_flow_table_of_watch_runs_shows_their_train_loss_not_a_blank_val_acc(
        tmp_path):
    from depthlab.report import write_report

    _watch_runs(tmp_path, [("slow", 3, 0.01), ("fast", 3, 0.5)])
    html = write_report(tmp_path).read_text()
    # was: a "val acc" column blank in every row (a Watch measures no validation set)
    header = _flow_table_header(html)
    assert header[-1] == "train loss", header
    assert "val acc" not in header


def test_the_gradient_flow_table_without_any_metric_has_no_blank_column():
    import pandas as pd

    from depthlab.report.build import _flow_score

    runs = pd.DataFrame({"val_acc": [None, float("nan")], "train_loss": [float("nan"), None]})
    assert _flow_score(runs) is None
    assert _flow_score(runs.assign(val_loss=[0.5, None])) == "val_loss"
    assert _flow_score(runs.assign(val_acc=[0.9, None], val_loss=[0.5, 1.0])) == "val_acc"


def test_the_gradient_flow_table_says_a_one_step_watch_run_has_no_end_reading(tmp_path):
    import re

    from depthlab.report import write_report

    _watch_runs(tmp_path, [("once", 1, 0.1), ("thrice", 3, 0.1)])
    html = write_report(tmp_path).read_text()
    flow = html[html.index("<h3>Gradient flow</h3>"):]
    rows = [re.sub(r"<[^>]+>", "|", r) for r in re.findall(r"<tr>.*?</tr>", flow[
        :flow.index("</table>")], flags=re.S)]
    once = next(r for r in rows if "|once|" in r)
    # was: its step-0 ratio in "ratio at end" too, as if a later step had measured the same
    assert "step 0 is the only one recorded" in once, once
    thrice = next(r for r in rows if "|thrice|" in r)
    assert "only one recorded" not in thrice, thrice
