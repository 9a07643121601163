"""Round 17b: the doctor's verdicts and findings as a teacher read them in the playground."""

import math

from depthlab.diagnosis.doctor import _better
from depthlab.diagnosis.findings import Verification


def _v(before, after, metric_before=10.25, metric_after=1.0, resolved=True, helped=None,
       kind="vanishing_gradients"):
    from depthlab.diagnosis.doctor import _improved
    from depthlab.diagnosis.rules import RULES

    if helped is None:
        helped = _improved(metric_before, metric_after, resolved) and _better(after, before, 200)
    return Verification(kind=kind, prescription={"batchnorm": True}, before=before, after=after,
                        metric=RULES[kind].metric, metric_before=metric_before,
                        metric_after=metric_after, resolved=resolved, helped=helped)


def test_a_resolved_cure_that_raised_held_out_accuracy_16_points_helped():
    """Measured in the playground (10x32 sigmoid, N(0,1) init, lr 0.1): batch norm resolved the
    vanishing gradients and held-out accuracy rose 0.485 -> 0.645 while the train loss rose
    0.7076 -> 0.722 (+2%); the verdict was 'did not help'. Now it helped, and the line names
    the trade-off; a fall of the accuracy still never helps, nor does a loss rise larger in
    percent than the accuracy gain in points."""
    before = {"train_loss": 0.7076, "val_acc": 0.485}
    after = {"train_loss": 0.722, "val_acc": 0.645}
    v = _v(before, after)
    assert v.helped
    line = v.summary()
    assert "did not help" not in line
    assert "held-out accuracy up 16 points although the train loss rose 2%" in line, line
    # the other way round (loss halved, accuracy 20 points down): still not an improvement
    assert not _better({"train_loss": 0.5, "val_acc": 0.6}, {"train_loss": 1.0, "val_acc": 0.8})
    # a 5-point gain against a 30% loss rise: not clearly better
    assert not _better({"train_loss": 1.3, "val_acc": 0.55}, {"train_loss": 1.0, "val_acc": 0.5})
    # a non-finite loss after the cure: never
    assert not _better({"train_loss": math.inf, "val_acc": 0.9}, {"train_loss": 1.0,
                                                                   "val_acc": 0.5})
    # no trade-off to name when the loss fell too
    assert "although" not in _v(before, {"train_loss": 0.6, "val_acc": 0.645}).summary()
