"""Round 32 (tdoc32b): the torch doctor's LSUV cure of an init mismatch is judged by the
signal it gives at initialization, not by its weights' distance from the variance formula."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
dlt = pytest.importorskip("depthlab.torch")


def _digits(n: int = 300) -> tuple:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.data[:n] / 16.0, dtype=torch.float32)  # inputs in [0, 1]
    return x, torch.tensor(d.target[:n])


def _tiny_tanh_cnn() -> nn.Module:
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    c = 1
    for _ in range(4):
        conv = nn.Conv2d(c, 8, 3, padding=1)
        nn.init.xavier_normal_(conv.weight)
        with torch.no_grad():
            conv.weight.mul_(0.3)  # 0.09x Glorot's variance
        nn.init.zeros_(conv.bias)
        layers += [conv, nn.Tanh()]
        c = 8
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(8 * 64, 10))


def test_an_lsuv_cure_of_an_init_mismatch_is_judged_by_its_initial_signal() -> None:
    x, y = _digits()
    d = dlt.doctor(_tiny_tanh_cnn, (x.reshape(-1, 1, 8, 8), y), loss_fn=nn.CrossEntropyLoss(),
                   steps=20, verify=True, max_cures=2, seed=0)
    f = d.finding("init_mismatch")
    assert f is not None, str(d)
    by = {v.prescription.get("init"): v for v in d.verifications if v.kind == "init_mismatch"}
    lsuv, glorot = by["lsuv"], by["matched"]
    # LSUV sets every layer's output variance to 1 on the data: its first layer's weights are
    # scaled by the inputs' E[x^2] (in [0, 1] here), far from Glorot's formula by design (the
    # weight factor rose 12 -> 27: "did not help" at train loss 2.30 -> 0.14, Glorot's 0.52
    # prescribed); what it is for is a signal that keeps its scale through the layers at step 0
    assert lsuv.metric.startswith("init signal factor")
    assert lsuv.metric_before > 20 and lsuv.metric_after < 4, (lsuv.metric_before,
                                                               lsuv.metric_after)
    assert lsuv.after["train_loss"] < glorot.after["train_loss"] < lsuv.before["train_loss"]
    assert lsuv.helped and lsuv.resolved and "did not help" not in lsuv.summary()
    assert f.prescription == {"init": "lsuv"}  # the cure that trained best is prescribed
    assert glorot.metric == "init variance factor" and glorot.helped  # formula inits: as before


def test_the_init_signal_factor_is_the_step0_end_to_end_ratio() -> None:
    from depthlab.diagnosis.rules import init_signal_factor

    class Ctx:
        def at(self, step: int, q: str):
            import pandas as pd
            return pd.Series({1: 1.0, 2: 0.5, 3: 0.25}) if q == "pre_std" else pd.Series()

        def gradient_stds(self, step: int):
            import pandas as pd
            return pd.Series({1: 0.01, 2: 0.1, 3: 1.0})

    assert init_signal_factor(Ctx()) == pytest.approx(100.0)  # max(4, 1/0.01)
    assert math.isfinite(init_signal_factor(Ctx()))
    assert np.isnan(init_signal_factor(type("E", (), {
        "at": lambda self, s, q: __import__("pandas").Series(dtype=float),
        "gradient_stds": lambda self, s: __import__("pandas").Series(dtype=float)})()))
