"""Lead's round-17 playground test: the doctor panel's verdict says what it weighed."""

from __future__ import annotations

from helpers.browser import checked_page

MEASURED = "document.getElementById('grad-summary').dataset.step !== ''"


def test_run_doctor_sends_each_verdicts_trade_off(monkeypatch):
    """A cure that helped by the held-out accuracy while the train loss rose (batch norm on a
    10x32 sigmoid net: accuracy 0.485 -> 0.645, loss 0.7076 -> 0.722) showed only 'helped' in
    the page, while the doctor's own line says what it weighed (found by doctor17b)."""
    from helpers.doctor import playground_doctor

    from depthlab.diagnosis.findings import Verification

    ver = [Verification("vanishing_gradients", {"batchnorm": True},
                        {"train_loss": 0.7076, "val_acc": 0.485},
                        {"train_loss": 0.722, "val_acc": 0.645}, "ratio", 10.0, 1.0, True, True),
           Verification("init_mismatch", {"init": "glorot_uniform"},
                        {"train_loss": 0.7, "val_acc": 0.5}, {"train_loss": 0.6, "val_acc": 0.6},
                        "ratio", 3.0, 1.0, True, True)]

    out = playground_doctor(monkeypatch, ver)
    assert [v["trade_off"] for v in out["verifications"]] == [
        ", held-out accuracy up 16 points although the train loss rose 2%", ""]


def test_the_page_says_what_a_helped_verdict_weighed(browser, server):
    with checked_page(browser) as page:
        page.goto(server.url + "?model.depth=3&model.width=8")
        page.wait_for_function(MEASURED, timeout=60_000)
        query = page.evaluate("S.query")
        v = {"kind": "vanishing_gradients", "prescription": {}, "metric": "ratio",
             "before": {"train_loss": 0.7076, "val_acc": 0.485, "diverged": False},
             "after": {"train_loss": 0.722, "val_acc": 0.645, "diverged": False},
             "metric_before": 10.0, "metric_after": 1.0, "resolved": True, "helped": True,
             "trade_off": ", held-out accuracy up 16 points although the train loss rose 2%"}
        page.evaluate("""([query, v]) => handle({type: "doctor", steps: 200, query,
            baseline: {train_loss: 0.7, val_acc: 0.5, diverged: false},
            findings: [{kind: "vanishing_gradients", severity: "high", layers: [1, 2, 3],
                        message: "m", evidence: {}, prescription_text: "p",
                        verifications: [v], prescription: {}, apply: null}]})""", [query, v])
        text = page.locator("#doctor-out .verified").text_content()
        # was: "...: helped", the rise of the train loss unsaid
        assert text.endswith("(resolved): helped, held-out accuracy up 16 points although the "
                             "train loss rose 2%"), text

