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


def _playground_bn_net(**extra):
    from depthlab.experiments.runner import prepare
    from depthlab.playground.setup import parse_setup, to_config

    setup = parse_setup({"model.depth": "20", "model.activation": "relu",
                         "model.init": "he_normal", "model.batchnorm": "true", **extra})
    prep = prepare(to_config(setup))
    t, ds = prep.config["train"], prep.data
    return (dict(prep.net.config), (ds.x_train, prep.y_train, ds.x_val, prep.y_val),
            dict(lr=t["lr"], optimizer_kwargs=t["optimizer_kwargs"], seed=0))


def test_compounded_bn_drift_that_breaks_inference_is_no_clean_bill_of_health():
    """Measured in the playground: 20 ReLU layers with batch norm (bn_momentum 0.01), spirals,
    200 steps: held-out loss 6.2 at chance (0.485) while the batch statistics give 0.63, yet
    'Clean bill of health: no findings' (no single BN layer's running statistics were off by
    more than 0.25, below the 0.5 threshold; the drifts compound over 20 layers). Now a
    bn_drift finding names both losses, and its prescription (population statistics) is
    verified to help; the same net with bn_momentum 0.1 (held-out loss 0.64) stays clean."""
    from depthlab.diagnosis.doctor import doctor

    config, data, kw = _playground_bn_net()
    dg = doctor(config, data, steps=200, verify=True, **kw)
    assert dg.baseline["val_acc"] < 0.55  # the broken inference the finding is about
    f = dg.finding("bn_drift")
    assert f is not None, str(dg)
    assert f.evidence["loss_inference"] > 3 * f.evidence["loss_batch_stats"]
    assert "inference mode" in f.message and "compound" in f.message
    assert f.prescription == {"bn_inference": "population"}
    v = next(v for v in dg.verifications if v.kind == "bn_drift")
    assert v.helped and v.resolved and v.after["val_acc"] > dg.baseline["val_acc"] + 0.05

    config, data, kw = _playground_bn_net(**{"model.bn_momentum": "0.1"})
    assert "bn_drift" not in doctor(config, data, steps=200, **kw).kinds


def test_a_negative_gradient_depth_says_the_gradients_now_grow_toward_the_input():
    """Measured in the playground: batch norm resolved vanishing gradients and the line read
    'depth in gradient depth scales 10.25 -> -2.595', a negative depth that read as a bug (the
    metric is signed: below 0 the gradients grow toward the input). The metric's name, which
    the playground and the report print, now says so; read back from JSON it says it once."""
    from depthlab.diagnosis.rules import gradient_depth_scales

    # the signed metric itself: a first/last ratio below 1 is a depth below 0
    assert gradient_depth_scales(0.5, 10)[1] < 0
    v = _v({"train_loss": 0.7076, "val_acc": 0.485}, {"train_loss": 0.722, "val_acc": 0.645},
           metric_before=10.25, metric_after=-2.595)
    assert "grow toward the input" in v.metric
    assert "-2.595" in v.summary() and "grow toward the input" in v.summary()
    back = Verification.from_dict(v.to_dict())
    assert back.metric == v.metric and back.metric.count("grow toward") == 1
    e = _v({"train_loss": 1.0}, {"train_loss": 0.5}, metric_before=9.0, metric_after=-1.0,
           kind="exploding_gradients")
    assert "shrink toward the input" in e.metric
    # a positive metric keeps the plain name
    assert _v({"train_loss": 1.0}, {"train_loss": 0.5}, metric_after=3.0).metric == \
        "depth in gradient depth scales"
