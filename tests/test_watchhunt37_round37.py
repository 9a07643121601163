"""Round 37 (watchhunt37): Watch.step's loss argument, as a user passes it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import depthlab.torch as dlt


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))


def _losses_of(value, steps: int = 3) -> list[float]:
    m = _model()
    x, y = torch.randn(16, 4), torch.randn(16, 1)
    w = dlt.Watch(m, every=2, theory=False)
    for _ in range(steps):
        m.zero_grad()
        ((m(x) - y) ** 2).mean().backward()
        w.step(value)
    w.close()
    return w.losses()["loss"].tolist()


@pytest.mark.parametrize("value", [np.array(0.5), np.array([0.5]), np.array([[0.5]], np.float32),
                                   np.array(0.5, dtype=np.float16)])
def test_numpy_array_loss_of_one_element_is_a_number(value):
    # loss.detach().cpu().numpy() (a 0-d array) was "got ndarray", a float32 scalar accepted
    assert _losses_of(value) == [0.5, 0.5, 0.5]


@pytest.mark.parametrize("value,words", [(np.array([0.5, 0.25]), "shape (2,)"),
                                         (np.array(True), "dtype bool"),
                                         (np.array("0.5"), "dtype <U3"),
                                         (np.array(1 + 2j), "dtype complex128")])
def test_numpy_array_loss_refused_in_one_line(value, words):
    with pytest.raises((ValueError, TypeError)) as info:
        _losses_of(value, steps=1)
    text = str(info.value)
    assert words in text and "\n" not in text


def test_meta_loss_refused_in_one_line_and_run_intact():
    m = _model()
    x, y = torch.randn(16, 4), torch.randn(16, 1)
    w = dlt.Watch(m, every=1, theory=False)
    loss = ((m(x) - y) ** 2).mean()
    loss.backward()
    with pytest.raises(ValueError, match="meta"):
        w.step(torch.empty((), device="meta"))
    w.step(loss)  # the refused call was not a step
    w.close()
    assert w.losses()["step"].tolist() == [0]
    assert w.losses()["loss"].tolist() == [pytest.approx(float(loss.detach()))]
