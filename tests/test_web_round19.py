"""Round 19 of adversarial testing of the web pages: the playground in a real browser, the HTML
reports and the reproduction pages.

* a doctor record stored without its finding's kind (an older or hand-written one) had its
  verification line end with the report's own bare verdict ("did not help"), not the doctor's
  (which says what decided it: the constant prediction's loss);
"""

from __future__ import annotations


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
