"""Round 26 (doctorfix26): the doctor's verdicts and findings, honest in both engines."""

import math

import pytest

from depthlab.diagnosis.doctor import _better, _improved
from depthlab.diagnosis.findings import Verification
from depthlab.diagnosis.rules import RULES


def _verification(kind, before, after, metric_before, metric_after, resolved, chance,
                  chance_acc, n_val, better=_better):
    improved = _improved(metric_before, metric_after, resolved)
    return Verification(
        kind=kind, prescription={"clip_grad_norm": 1.0}, before=before, after=after,
        metric=RULES[kind].metric, metric_before=metric_before, metric_after=metric_after,
        resolved=resolved, helped=bool(improved and better(after, before, n_val, chance,
                                                           chance_acc)),
        chance_loss=chance, chance_acc=chance_acc)


@pytest.mark.parametrize("engine", ["numpy", "torch"])
def test_a_cure_whose_run_did_not_learn_never_helped(engine):
    """Measured (torch doctor, 8-block N(0, 1) ResNet w16 on digits, sgd 0.1, 100 steps): the
    baseline diverged at step 2; gradient clipping kept the loss finite, ending at a train loss
    of 1.378e12 (a constant prediction's: 2.292) with a validation accuracy of 0.1938 against
    that prediction's 0.1437, and read 'helped' for exploding gradients (metric 71.64 -> 68.63)
    and 'helped (finding resolved)' for the divergence. A run whose train loss ends more than
    1.5x a constant prediction's did not learn: 'did not help', the line says why."""
    if engine == "torch":
        pytest.importorskip("torch")
        from depthlab.torch.doctor import _better as better
    else:
        better = _better
    nan = math.nan
    before = {"train_loss": nan, "val_acc": nan, "diverged": True}
    after = {"train_loss": 1.378e12, "val_acc": 0.1938, "diverged": False}
    chance, chance_acc, n_val = 2.292, 0.1437, 160
    assert not better(after, before, n_val, chance, chance_acc)
    v = _verification("exploding_gradients", before, after, 71.64, 68.63, False, chance,
                      chance_acc, n_val, better)
    assert not v.helped
    assert v.verdict() == ("did not help (the train loss ended at 1.378e+12, more than 1.5x a "
                           "constant prediction's 2.292: the run did not learn)"), v.verdict()
    d = _verification("divergence", before, after, math.inf, 0.02753, True, chance, chance_acc,
                      n_val, better)
    assert not d.helped
    assert d.verdict().startswith("did not help (the finding is gone, but the train loss "
                                  "ended at 1.378e+12"), d.verdict()
    # the verdict survives the stored record (the report's line reads it back)
    assert Verification.from_dict(d.to_dict()).verdict() == d.verdict()
    # a cure that learned (the matched init: 1.97, acc 0.31) still helped
    ok = {"train_loss": 1.97, "val_acc": 0.3063, "diverged": False}
    assert better(ok, before, n_val, chance, chance_acc)
    # just above chance (a loss 0.722 against ln 2 = 0.693, accuracy up 16 points): the
    # accuracy's verdict stands, as before
    assert better({"train_loss": 0.722, "val_acc": 0.645},
                  {"train_loss": 0.7076, "val_acc": 0.485}, 200, math.log(2), 0.5)
    # chance unknown: no judgement of learning
    assert better(after, before, n_val, nan, chance_acc)


def _digits(n=400):
    import numpy as np

    from depthlab.data import load_dataset

    ds = load_dataset("digits", seed=0)
    x = ds.x_train[:n].astype(np.float32)
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    return x, ds.y_train[:n], ds.x_val[:120].astype(np.float32), ds.y_val[:120]


@pytest.mark.parametrize("activation", ["leaky_relu", "elu"])
def test_vanishing_gradients_from_negative_biases_are_cured_by_zero_biases_numpy(activation):
    """Measured (dl.doctor, 64-64x5-10 He, biases Constant(-5), digits, sgd 0.1, 100 steps):
    every entry of every hidden layer on the flat side (leaky_relu slope 0.01, elu's exp(-5)),
    gradients 23x / 13x smaller per layer: the vanishing is real, but its cure read 'add
    batch normalization' (verified 2.297 -> 0.156) and the message did not name the biases.
    Zero biases trained to 0.043 / 0.019: the prescription is now the biases, and the
    message names the shift."""
    import depthlab as dl
    from depthlab.initializers import get_initializer

    x, y, xv, yv = _digits()
    cfg = dict(sizes=[64, 32, 32, 32, 32, 32, 10], activation=activation, init="he_normal",
               bias_init=get_initializer("constant", value=-5.0))
    d = dl.doctor(cfg, (x, y, xv, yv), steps=30, lr=0.1, verify=False)
    f = next(f for f in d.findings if f.kind == "vanishing_gradients")
    assert f.prescription == {"bias_init": "zeros"}, f.prescription
    assert "flat side" in f.message and "biases" in f.message, f.message
    assert f.evidence["inactive_frac_init"] > 0.9 and f.evidence["pre_mean_init"] < -4
    # zero biases: no such finding (the cause is gone)
    d0 = dl.doctor(dict(cfg, bias_init="zeros"), (x, y, xv, yv), steps=30, lr=0.1,
                   verify=False)
    assert "vanishing_gradients" not in d0.kinds


@pytest.mark.parametrize("activation", ["LeakyReLU", "ELU"])
def test_vanishing_gradients_from_negative_biases_are_cured_by_zero_biases_torch(activation):
    """The same in the torch doctor (its cure was LSUV: it also zeroes the biases, but the
    message did not say why the gradients vanish); a torch model's default (non-zero, small)
    biases are no such cause."""
    torch = pytest.importorskip("torch")
    from torch import nn

    import depthlab.torch as dlt

    x, y, xv, yv = _digits()

    def make(bias):
        def build():
            mods, c = [], 64
            for _ in range(5):
                mods += [nn.Linear(c, 32), getattr(nn, activation)()]
                c = 32
            m = nn.Sequential(*mods, nn.Linear(32, 10))
            for mod in m.modules():
                if isinstance(mod, nn.Linear):
                    nn.init.kaiming_normal_(mod.weight, nonlinearity="relu")
                    if bias is not None:
                        nn.init.constant_(mod.bias, bias)
            return m
        return build

    torch.manual_seed(0)
    d = dlt.doctor(make(-5.0), (x, y, xv, yv), steps=30, verify=False)
    f = next(f for f in d.findings if f.kind == "vanishing_gradients")
    assert f.prescription == {"bias_init": "zeros"}, f.prescription
    assert "flat side" in f.message and "biases" in f.message, f.message
    assert d.config["biases"] == "nonzero"
    default = dlt.doctor(make(None), (x, y, xv, yv), steps=30, verify=False)
    assert "vanishing_gradients" not in default.kinds and default.config["biases"] == "nonzero"
    # read at initialization (trained biases are never all 0)
    assert dlt.doctor(make(0.0), (x, y, xv, yv), steps=30, verify=False).config["biases"] \
        == "zeros"


def test_numpy_doctor_reads_the_first_updates_for_a_too_high_learning_rate():
    """dl.doctor, 64-32-32-32-10 gelu He, standardized digits, Adam lr 0.3, 60 steps: the run
    ended at chance (train loss 2.317, ln 10 = 2.303) with a clean bill of health: Adam's first
    updates, its largest, rewrite the weights, but the update ratio was read only at the
    probed steps 10, 20, ... Now the first 10 updates are measured too, and with the mean
    training loss of those steps not below step 0's the learning rate is too high."""
    import depthlab as dl

    x, y, xv, yv = _digits(600)
    cfg = dict(sizes=[64, 32, 32, 32, 10], activation="gelu", init="he_normal")
    d = dl.doctor(cfg, (x, y, xv, yv), steps=60, optimizer="adam", lr=0.3, batch_size=32)
    f = next((f for f in d.findings if f.kind == "lr_too_high"), None)
    assert f is not None, d.kinds
    assert "first updates" in f.message, f.message
    assert f.evidence["metric"] >= 0.1 and f.evidence["early_loss_mean"] >= 0.99 * \
        f.evidence["loss_step0"]
    assert f.prescription == {"lr": 0.03}, f.prescription
    # a learning rate whose large first steps lowered the loss: no finding
    ok = dl.doctor(cfg, (x, y, xv, yv), steps=60, optimizer="adam", lr=0.03, batch_size=32)
    assert "lr_too_high" not in ok.kinds, ok.kinds


def test_torch_doctor_reads_the_first_updates_for_a_too_high_learning_rate():
    """dlt.doctor, a post-norm nn.TransformerEncoder (2 layers, d 16, sequences of 12) at Adam
    lr 0.1: train loss 1.33 at 4-class chance (ln 4 = 1.386; lr 0.01: 0.02) and no finding.
    Its updates rewrote 0.67 of the weights at step 1, 0.26 at step 3, while the probed steps
    (10, 20, ...) read 0.075 and less, and the training loss over the first 10 updates stayed
    above step 0's (1.03-1.14x over seeds 0-2). Now lr_too_high; at lr 0.03, whose large first
    steps lowered the loss (0.71-0.85x), none."""
    torch = pytest.importorskip("torch")
    import numpy as np
    from torch import nn

    import depthlab.torch as dlt

    g = np.random.default_rng(0)
    n, t, dim = 600, 12, 16
    xs = g.normal(size=(n, t, dim)).astype(np.float32)
    ys = (xs[:, :, 0].sum(1) > 0).astype(np.int64) + 2 * (xs[:, :, 1].sum(1) > 0)

    class TF(nn.Module):
        def __init__(self):
            super().__init__()
            layer = nn.TransformerEncoderLayer(dim, 2, 32, dropout=0.0, batch_first=True)
            self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
            self.head = nn.Linear(dim, 4)

        def forward(self, x):
            return self.head(self.enc(x).mean(1))

    torch.manual_seed(0)
    d = dlt.doctor(TF, (xs, ys), optimizer=("adam", {"lr": 0.1}), steps=100, verify=False)
    f = next((f for f in d.findings if f.kind == "lr_too_high"), None)
    assert f is not None, d.kinds
    assert "first updates" in f.message and f.evidence["metric"] > 0.3, f.message
    ok = dlt.doctor(TF, (xs, ys), optimizer=("adam", {"lr": 0.03}), steps=100, verify=False)
    assert "lr_too_high" not in ok.kinds, ok.kinds


_NOT_LEARNED = (" (the finding is gone, but the train loss ended at 1.378e+12, more than 1.5x "
                "a constant prediction's 2.292: the run did not learn)")


def _not_learned_verification():
    return Verification(
        "divergence", {"clip_grad_norm": 1.0}, {"train_loss": math.nan, "val_acc": math.nan},
        {"train_loss": 1.378e12, "val_acc": 0.1938}, RULES["divergence"].metric, math.inf,
        0.02753, True, False, chance_loss=2.292, chance_acc=0.1437)


def test_the_playground_doctor_sends_why_a_cure_did_not_help(monkeypatch):
    """The command line and the report say why a cure did not help (a run that did not learn,
    a loss at chance); the playground's doctor sent only 'helped' and the trade-off."""
    from helpers.doctor import playground_doctor

    ver = [_not_learned_verification()]
    out = playground_doctor(monkeypatch, ver)
    assert [v["reason"] for v in out["verifications"]] == [_NOT_LEARNED]
    assert ver[0].verdict() == "did not help" + _NOT_LEARNED


def test_the_playground_page_says_why_a_cure_did_not_help(browser, server):
    from helpers.browser import checked_page

    with checked_page(browser) as page:
        page.goto(server.url + "?model.depth=3&model.width=8")
        page.wait_for_function("document.getElementById('grad-summary').dataset.step !== ''",
                               timeout=60_000)
        query = page.evaluate("S.query")
        v = {"kind": "divergence", "prescription": {}, "metric": "loss rise",
             "before": {"train_loss": None, "val_acc": None, "diverged": True, "steps": 2},
             "after": {"train_loss": 1.378e12, "val_acc": 0.1938, "diverged": False},
             "metric_before": None, "metric_after": 0.02753, "resolved": True,
             "helped": False, "trade_off": "", "reason": _NOT_LEARNED}
        page.evaluate("""([query, v]) => handle({type: "doctor", steps: 200, query,
            baseline: {train_loss: null, val_acc: null, diverged: true},
            findings: [{kind: "divergence", severity: "high", layers: [],
                        message: "m", evidence: {}, prescription_text: "p",
                        verifications: [v], prescription: {}, apply: null}]})""", [query, v])
        text = page.locator("#doctor-out .verified").text_content()
        assert text.endswith(": did not help" + _NOT_LEARNED), text
