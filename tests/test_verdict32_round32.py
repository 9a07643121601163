"""Round 32 (verdict32): the doctor's verdict on a verified cure follows the held-out result.

The accuracy-vs-loss trade-off compared accuracy points with the train loss's rise in percent,
so no accuracy gain could outweigh a loss rise over 100%: measured (torch doctor, 6 ReLU conv
layers at 9x He's variance, digits, sgd 0.01, 40 steps, seed 1), the baseline stayed at chance
(train loss 2.303, val acc 0.078) and Adam's cure of dead_relu reached val acc 0.774 at a train
loss of 5.615 (+144%, over-confident logits): "did not help", and warm-up's cure (val acc 0.159)
was prescribed. Both doctors share the rule (``diagnosis.doctor._better``)."""

import math

import pytest

from depthlab.diagnosis.doctor import _better, rank_findings
from depthlab.diagnosis.findings import Finding, Verification
from depthlab.torch.doctor import _better as torch_better

BASE = {"train_loss": 2.3029, "val_acc": 0.078}
ADAM = {"train_loss": 5.6152, "val_acc": 0.7744}
WARMUP = {"train_loss": 2.268, "val_acc": 0.159}
CHANCE, CHANCE_ACC, N_VAL = 2.302, 0.117, 360


def _v(kind, after, before=BASE, prescription=None, helped=None, chance=CHANCE,
       chance_acc=CHANCE_ACC):
    if helped is None:
        helped = _better(after, before, N_VAL, chance, chance_acc)
    return Verification(kind=kind, prescription=prescription or {"optimizer": "adam"},
                        before=before, after=after, metric="metric", metric_before=0.62,
                        metric_after=0.1, resolved=True, helped=helped, chance_loss=chance,
                        chance_acc=chance_acc)


def test_a_cure_that_takes_chance_accuracy_far_above_chance_helped_whatever_its_loss():
    for better in (_better, torch_better):
        assert better(ADAM, BASE, N_VAL, CHANCE, CHANCE_ACC)
    v = _v("dead_relu", ADAM)
    assert v.helped
    assert v.verdict() == ("helped (finding resolved), held-out accuracy up 69.6 points "
                           "although the train loss rose 144%"), v.verdict()
    # ...unless its run diverged: a non-finite loss or accuracy never helped
    assert not _better({"train_loss": math.nan, "val_acc": 0.7744}, BASE, N_VAL, CHANCE,
                       CHANCE_ACC)
    assert not _better({"train_loss": math.inf, "val_acc": 0.7744}, BASE, N_VAL, CHANCE,
                       CHANCE_ACC)
    assert not _better({"train_loss": 3.0, "val_acc": math.nan}, BASE, N_VAL, CHANCE,
                       CHANCE_ACC)


def test_the_cure_that_helped_most_is_prescribed_first():
    """dead_relu's Adam cure (val acc 0.774) ranks before another finding's warm-up cure
    (0.159): it was ranked last, as a cure that did not help."""
    findings = [Finding(kind="lr_too_high", layers=[], evidence={}, message="m"),
                Finding(kind="dead_relu", layers=[], evidence={}, message="m")]
    verifications = [_v("lr_too_high", WARMUP, prescription={"warmup": 10}),
                     _v("dead_relu", ADAM)]
    assert verifications[0].helped and verifications[1].helped
    assert [f.kind for f in rank_findings(findings, verifications)] == ["dead_relu",
                                                                       "lr_too_high"]


@pytest.mark.parametrize("before,after,helped", [
    # a learned baseline: the error fell 4x (0.4 -> 0.1), the loss rose 2.5x: helped (the
    # points-vs-percent rule refused it: 30 points < 150%)
    ({"train_loss": 1.0, "val_acc": 0.6}, {"train_loss": 2.5, "val_acc": 0.9}, True),
    # the error fell 1.14x (0.4 -> 0.35), the loss rose 2x: not an improvement
    ({"train_loss": 1.0, "val_acc": 0.6}, {"train_loss": 2.0, "val_acc": 0.65}, False),
    # unchanged known answers: +16 points for +2% helped; +5 points for +30% did not
    ({"train_loss": 0.7076, "val_acc": 0.485}, {"train_loss": 0.722, "val_acc": 0.645}, True),
    ({"train_loss": 1.0, "val_acc": 0.5}, {"train_loss": 1.3, "val_acc": 0.55}, False),
    # regression (no accuracy): the loss alone decides, as before
    ({"train_loss": 0.6, "val_acc": math.nan}, {"train_loss": 0.3, "val_acc": math.nan}, True),
    ({"train_loss": 0.3, "val_acc": math.nan}, {"train_loss": 0.6, "val_acc": math.nan}, False),
])
def test_the_trade_off_compares_the_error_s_fall_with_the_loss_s_rise(before, after, helped):
    assert _better(after, before, N_VAL, CHANCE, CHANCE_ACC) is helped


def test_a_cure_refused_by_the_trade_off_says_by_how_much():
    v = _v("dead_relu", {"train_loss": 2.0, "val_acc": 0.65},
           before={"train_loss": 1.0, "val_acc": 0.6})
    assert not v.helped
    assert v.verdict() == ("did not help (the validation accuracy rose 5 points, but its error "
                           "fell only 1.14x, 0.4 -> 0.35, while the train loss rose 2x)"), \
        v.verdict()


def test_the_torch_doctor_scores_mse_on_one_hot_rows_by_arg_max():
    """`depthlab doctor --torch ... --loss mse --data digits` (one-hot rows) reported no val
    acc, where `depthlab run` and the NumPy doctor score mse on one-hot rows by the arg-max."""
    import torch
    from torch import nn

    import depthlab.torch as dlt
    from depthlab.torch.baselines import constant_accuracy
    from depthlab.torch.train import evaluate

    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 5, generator=g)
    labels = torch.arange(60) % 3
    labels[:6] = 0  # class 0 the most frequent
    oh = nn.functional.one_hot(labels, 3).float()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))
    for loss_fn in (nn.MSELoss(), nn.functional.mse_loss, nn.HuberLoss()):
        got = evaluate(model, x, oh, loss_fn)["acc"]
        with torch.no_grad():
            want = float((model(x).argmax(dim=1) == labels).double().mean())
        assert got == pytest.approx(want, abs=1e-12), loss_fn
    assert constant_accuracy(nn.MSELoss(), oh, oh) == pytest.approx(24 / 60)
    # soft targets name no class: still no accuracy
    assert math.isnan(evaluate(model, x, oh * 0.9 + 0.05, nn.MSELoss())["acc"])
    d = dlt.doctor(lambda: nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)),
                   (x, oh), loss_fn=nn.MSELoss(), steps=3, verify=False)
    assert math.isfinite(d.baseline["val_acc"]), d.baseline
