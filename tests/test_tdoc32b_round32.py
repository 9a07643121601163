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


def _tiny_tanh() -> nn.Module:
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    width = 64
    for _ in range(5):
        lin = nn.Linear(width, 32)
        nn.init.xavier_normal_(lin.weight)
        with torch.no_grad():
            lin.weight.mul_(0.3)  # 0.09x Glorot's variance
        nn.init.zeros_(lin.bias)
        layers += [lin, nn.Tanh()]
        width = 32
    return nn.Sequential(*layers, nn.Linear(32, 10))


def test_an_lsuv_cure_of_an_init_mismatch_is_judged_by_its_initial_signal() -> None:
    x, y = _digits()
    d = dlt.doctor(_tiny_tanh, (x, y), loss_fn=nn.CrossEntropyLoss(), steps=20, verify=True,
                   max_cures=2, seed=0)
    assert "init_mismatch" in [f.kind for f in d.findings]
    v = next(v for v in d.verifications
             if v.kind == "init_mismatch" and v.prescription == {"init": "lsuv"})
    # LSUV sets every layer's output variance to 1 on the data: its first layer's weights are
    # scaled by the inputs' E[x^2], far from Glorot's formula by design; what it is for is a
    # signal that keeps its scale through the layers at step 0
    assert v.metric.startswith("init signal factor")
    assert v.metric_before > 20 and v.metric_after < 4, (v.metric_before, v.metric_after)
    assert v.after["train_loss"] < 0.5 * v.before["train_loss"]
    assert v.helped and v.resolved
    assert "did not help" not in v.summary()


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
