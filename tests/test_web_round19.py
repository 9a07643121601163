"""Round 19 of adversarial testing of the web pages: the playground in a real browser, the HTML
reports and the reproduction pages.

* a doctor record stored without its finding's kind (an older or hand-written one) had its
  verification line end with the report's own bare verdict ("did not help"), not the doctor's
  (which says what decided it: the constant prediction's loss);
* the report's gradient-flow table took a PyTorch run's ratio of its first layer against its
  output layer (the head), a NumPy run's against its last hidden layer: a torch doctor's
  section said "8.06e+05x smaller" (its hidden layers) under the table's "1e+07x less";
* the playground's update rate of the previous network ("8.5 updates/s") stayed beside the new
  network's "step 0, epoch 0" while the new one was built (up to 2 s, the rate's window);
* while a new setup was built (seconds for the 1000-layer preset, more for fashion-mnist), the
  panels drew the replaced network at full strength (its loss curve to step 1800, its boundary,
  a theory note of "tanh, glorot_uniform") beside the new "relu, he_normal" controls, "step 0"
  and its parameter count.

Browser tests use Debian's Chromium (they fail, not skip, without it); screenshots go to a
temporary folder (``DEPTHLAB_SCREENSHOTS=DIR`` keeps them in DIR).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.browser import checked_page, screenshot_dir

MEASURED = ("document.getElementById('grad-summary').dataset.step !== '' && "
            "document.body.dataset.state !== 'loading'")


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    return screenshot_dir(tmp_path_factory.mktemp("web19_screenshots"))


@pytest.fixture()
def page(browser, server):
    with checked_page(browser) as pg:
        yield pg


# -- a doctor record without a kind: the doctor's verdict ----------------------------------------
def test_a_verification_stored_without_a_kind_ends_with_the_doctors_verdict():
    from depthlab.diagnosis.findings import Verification
    from depthlab.report.build import _findings_html

    v = Verification(kind="saturation", prescription={"batchnorm": True},
                     before={"train_loss": 1.36, "val_acc": 0.5},
                     after={"train_loss": 0.7089, "val_acc": 0.5}, metric="saturated",
                     metric_before=0.9, metric_after=0.1, resolved=True, helped=False,
                     chance_loss=0.6931).to_dict()
    del v["kind"]
    payload = {"findings": [{"severity": "high", "layers": [1, 2], "message": "saturated",
                             "prescription": {"batchnorm": True}}],
               "verifications": [v]}
    html = _findings_html(payload).replace("&#x27;", "'")
    # was: "saturated 0.9 → 0.1: did not help (resolved)", without the reason
    assert ("saturated 0.9 → 0.1: did not help (the train loss did not end below a constant "
            "prediction's, 0.6931)") in html, html


# -- a PyTorch run's gradient ratio is of its hidden layers, as a NumPy run's ---------------------
def test_a_torch_runs_gradient_ratio_leaves_its_output_layer_out(tmp_path):
    import html
    import re

    import torch
    from torch import nn

    import depthlab.torch as dlt
    from depthlab.experiments.store import Store
    from depthlab.report.build import write_report

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Sigmoid(), nn.Linear(16, 16), nn.Sigmoid(),
                          nn.Linear(16, 16), nn.Sigmoid(), nn.Linear(16, 3))
    x, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
    for name in ("torch-sigmoid", "again"):  # two runs: the report's "All runs" table
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        with dlt.Watch(model, every=1, out=tmp_path, name=name) as watch:
            for _ in range(3):
                opt.zero_grad()
                loss = nn.functional.cross_entropy(model(x), y)
                loss.backward()
                watch.step(loss)
                opt.step()
    with Store(tmp_path) as store:
        runs = store.runs()
        t = store.probes(runs.loc[runs["name"] == "torch-sigmoid", "id"].iloc[0])
    g = t[(t["quantity"] == "grad_pre_std") & (t["step"] == t["step"].min())]
    g = g.groupby("layer")["value"].mean()
    assert list(g.index) == [1, 2, 3, 4]  # the output layer [6] is layer 4
    page = write_report(tmp_path)
    raw = (page if page.is_file() else tmp_path / "report.html").read_text()
    text = html.unescape(re.sub(r"<[^>]+>", " ", raw))
    row = re.search(r"torch-sigmoid\s+(\S+)\s+(\S+)", text[text.index("ratio at init"):])
    # was: layer 1 / layer 4 (the head), where a NumPy run's and the doctor's is layer 1 /
    # the last hidden layer
    assert float(row.group(1)) == pytest.approx(g[1] / g[3], rel=1e-3), (row.group(0), g)
    assert float(row.group(1)) != pytest.approx(g[1] / g[4], rel=1e-2)
    assert "its output layer (the last to run: <code>[6]</code>)" in raw  # as the figures name it


# -- a new network starts without the previous one's update rate ---------------------------------
def test_a_new_network_does_not_show_the_previous_ones_update_rate(page, server, shots):
    page.goto(server.url + "?model.depth=3&model.width=8")
    page.wait_for_function(MEASURED, timeout=90_000)
    page.click("#play")
    page.wait_for_function("+document.getElementById('ups').dataset.ups > 0", timeout=30_000)
    # what the status line reads as the new setup is accepted (before it is built)
    page.evaluate("""() => { window.atAccepted = null; const h = handle; window.handle = (m) => {
        h(m); if (m.type === 'accepted' && !m.kept) window.atAccepted = [
            document.getElementById('stepinfo').textContent,
            document.getElementById('ups').textContent]; }; }""")
    page.fill("#f-model-width", "9")
    page.press("#f-model-width", "Tab")
    page.wait_for_function("window.atAccepted !== null", timeout=30_000)
    page.screenshot(path=str(shots / "web19_new_network_rate.png"))
    # was: ['step 0, epoch 0', '8.5 updates/s'] (the rate of the network just replaced)
    assert page.evaluate("window.atAccepted") == ["step 0, epoch 0", "0.0 updates/s"]


# -- the panels of the replaced network are dimmed while the new one is built --------------------
def test_the_replaced_networks_panels_are_dimmed_while_the_new_one_is_built(page, server, shots):
    page.goto(server.url + "?model.depth=3&model.width=8&model.activation=tanh")
    page.wait_for_function(MEASURED, timeout=90_000)
    look = """() => [document.getElementById('panels').getAttribute('aria-busy'),
        ['plot-grad', 'theory-note', 'plot-loss', 'boundary', 'doctor-out', 'grad-summary'].map(
            (id) => +getComputedStyle(document.getElementById(id)).opacity)]"""
    assert page.evaluate(look) == [None, [1, 1, 1, 1, 1, 1]]
    page.evaluate("""(look) => { window.atAccepted = null; const h = handle;
        window.handle = (m) => { h(m); if (m.type === 'accepted' && !m.kept)
            window.atAccepted = eval(look)(); }; }""", look)
    page.select_option("#f-model-activation", "relu")
    page.wait_for_function("window.atAccepted !== null", timeout=30_000)
    # was: [None, [1, 1, 1, 1, 1, 1]]: the tanh network's plots and theory note at full strength
    # beside the relu setup's "step 0" (the summary says it is being built; the doctor panel
    # has its own stale mark)
    assert page.evaluate("window.atAccepted") == ["true", [0.35, 0.35, 0.35, 0.35, 1, 1]]
    page.wait_for_function(MEASURED, timeout=90_000)
    page.screenshot(path=str(shots / "web19_built.png"))
    assert page.evaluate(look) == [None, [1, 1, 1, 1, 1, 1]]


# -- a diverged doctor record in the report --------------------------------------------------------
DIVERGED_DOCTOR = {
    "baseline": {"budget": 200, "diverged": True, "diverged_step": 2, "steps": 1,
                 "train_acc": None, "train_loss": None, "val_acc": None, "val_loss": None},
    "settings": {"steps": 200, "optimizer": "sgd", "lr": 10.0},
    "findings": [{"kind": "divergence", "layers": [], "severity": "high",
                  "evidence": {"lr": 10.0, "metric": None, "ratio": None, "step": 2,
                               "threshold": 1.5},
                  "infinite": {"evidence.metric": "inf", "evidence.ratio": "-inf"},
                  "message": "Training diverged: the loss became non-finite at step 2 with "
                             "learning rate 10.",
                  "prescription": {"lr": 1.0}, "prescription_text": "Use a 10x smaller lr."}]}


def test_a_diverged_doctor_baseline_says_it_diverged():
    from depthlab.report.build import _findings_html

    html = _findings_html(DIVERGED_DOCTOR)
    # was: "Baseline run: 200 steps of sgd lr 10, train loss , val acc ."
    assert ("Baseline run: 200 steps of sgd lr 10, diverged at step 2: no finite train loss or "
            "val acc.") in html, html


def test_a_findings_infinite_or_nan_evidence_is_written_as_such():
    from depthlab.report.build import _findings_html

    html = _findings_html({**DIVERGED_DOCTOR, "findings": [{
        **DIVERGED_DOCTOR["findings"][0],
        "evidence": {**DIVERGED_DOCTOR["findings"][0]["evidence"], "loss": None}}]})
    # was: "lr=10; metric=; ratio=; step=2; threshold=1.5; loss="
    assert "lr=10; metric=inf; ratio=-inf; step=2; threshold=1.5; loss=not finite" in html, html


def test_the_doctor_panel_writes_an_infinite_or_nan_evidence_as_such(page, server, shots):
    page.goto(server.url + "?model.depth=3&model.width=8")
    page.wait_for_function(MEASURED, timeout=90_000)
    finding = {**DIVERGED_DOCTOR["findings"][0], "verifications": [],
               "evidence": {**DIVERGED_DOCTOR["findings"][0]["evidence"], "loss": None},
               "apply": {**page.evaluate("S.query"), "train.lr": "1"}}
    page.evaluate("""([query, f]) => handle({type: "doctor", steps: 200, query,
        baseline: {train_loss: null, val_acc: null, diverged: true, steps: 1},
        findings: [f]})""", [page.evaluate("S.query"), finding])
    text = page.inner_text("#doctor-out .finding .evidence")
    page.locator("#panel-doctor").screenshot(path=str(shots / "web19_evidence.png"))
    # was: "evidence: lr = 10, metric = -, ratio = -, step = 2, threshold = 1.5, loss = -"
    assert text == ("evidence: lr = 10, metric = inf, ratio = -inf, step = 2, threshold = 1.5, "
                    "loss = not finite"), text


def test_a_verification_of_diverged_runs_says_they_diverged():
    from depthlab.report.build import _verification_text

    def run(step):
        return {"budget": 200, "diverged": True, "diverged_step": step, "steps": step - 1,
                "train_acc": None, "train_loss": None, "val_acc": None, "val_loss": None}

    v = {"kind": "divergence", "before": run(2), "after": run(3), "chance_loss": 0.693,
         "helped": False, "resolved": False, "new_findings": [], "prescription": {"lr": 1.0},
         "metric": "loss rise (end / min(step 0, best))", "metric_before": None,
         "metric_after": None, "infinite": {"metric_after": "inf", "metric_before": "inf"}}
    # was: "train loss  → , val acc  → , loss rise (end / min(step 0, best))  → : did not help"
    assert _verification_text(v) == ("train loss diverged at step 2 → diverged at step 3, loss "
                                     "rise (end / min(step 0, best)) inf → inf: did not help")
    # one side diverged, the other measured; a NaN metric without an infinity
    v2 = {**v, "after": {"diverged": False, "train_loss": 0.5, "val_acc": 0.8, "steps": 200},
          "infinite": {}, "metric_after": 1.2}
    assert _verification_text(v2).startswith(
        "train loss diverged at step 2 → 0.5, val acc diverged at step 2 → 0.8, loss rise "
        "(end / min(step 0, best)) not finite → 1.2: "), _verification_text(v2)


def test_a_torch_model_of_one_layer_has_no_hidden_layer_to_take_a_ratio_of(tmp_path):
    import torch
    from torch import nn

    import depthlab.torch as dlt
    from depthlab.report.build import write_report

    torch.manual_seed(0)
    x, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
    for name, model in (("single", nn.Linear(8, 3)),
                        ("two", nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3)))):
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        with dlt.Watch(model, every=1, out=tmp_path, name=name) as watch:
            for _ in range(2):
                opt.zero_grad()
                loss = nn.functional.cross_entropy(model(x), y)
                loss.backward()
                watch.step(loss)
                opt.step()
    page = write_report(tmp_path)
    raw = (page if page.is_file() else tmp_path / "report.html").read_text()
    # its one layer is the output layer, left out of the ratio: the row read "not measured"
    assert ("<td>single</td><td></td><td></td><td>no hidden layer (its one layer is the output "
            "layer): no first/last ratio to take</td>") in raw
    assert "<td>two</td><td></td><td></td><td>one hidden layer: no first/last ratio" in raw


def test_a_regression_doctors_baseline_names_no_accuracy():
    from depthlab.report.build import _findings_html

    html = _findings_html({"baseline": {"diverged": False, "train_loss": 0.0123, "val_acc": None,
                                        "val_loss": 0.02},
                           "settings": {"steps": 200, "optimizer": "sgd", "lr": 0.05},
                           "findings": []})
    # was: "train loss 0.0123, val acc ." (an mse loss measures no accuracy)
    assert "Baseline run: 200 steps of sgd lr 0.05, train loss 0.0123.</p>" in html, html
