"""A verified cure whose finding is gone although its metric did not fall says why."""

from __future__ import annotations

from depthlab.diagnosis.findings import Verification


def _verification(before: float, after: float, resolved: bool) -> Verification:
    return Verification(kind="mean_shift", prescription={"activation": "relu"},
                        before={"train_loss": 1.0}, after={"train_loss": 0.5},
                        metric="max |mean activation|", metric_before=before,
                        metric_after=after, resolved=resolved, helped=True)


def test_resolved_with_a_metric_that_rose_names_the_rule_not_the_metric():
    text = _verification(0.587, 0.640, True).summary()
    assert "0.587 -> 0.64" in text
    assert text.endswith("helped (finding resolved: its rule no longer applies to this setup, "
                         "although the metric did not fall)")


def test_resolved_with_a_metric_that_fell_stays_short():
    assert _verification(0.587, 0.1, True).summary().endswith(": helped (finding resolved)")
    assert _verification(0.587, 0.3, False).summary().endswith(": helped")
