"""Round 33 (torchhunt33): dlt.probe, dlt.Watch and dlt.predict on models not used before."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import depthlab.torch as dlt  # noqa: E402


def _prelu_net(per_channel: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(12, 32), nn.PReLU(per_channel), nn.Linear(32, 32),
                         nn.PReLU(per_channel), nn.Linear(32, 4)).double()


def test_predict_takes_a_per_channel_prelu_whose_slopes_are_all_equal():
    """nn.PReLU(C) at its init has C equal slopes (0.25): one leaky ReLU, as nn.PReLU() is.
    predict refused it ("has a learned slope per channel (32 of them)") and so the Watch of
    such a model had no theory; the prediction is that of the single-slope model."""
    x = torch.randn(64, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 4, (64,), generator=torch.Generator().manual_seed(2))
    one = dlt.predict(_prelu_net(1), x, y, nn.CrossEntropyLoss())
    per = dlt.predict(_prelu_net(32), x, y, nn.CrossEntropyLoss())
    assert list(per.quantity) == list(one.quantity)
    assert per.predicted.to_numpy() == pytest.approx(one.predicted.to_numpy(), rel=1e-9)
    assert per.value.to_numpy() == pytest.approx(one.value.to_numpy(), rel=1e-9)
    model = _prelu_net(32)
    with torch.no_grad():  # slopes that differ stay refused by name
        model[1].weight[0] = 0.5
    with pytest.raises(ValueError, match=r"'1' \(PReLU\) has a learned slope per channel"):
        dlt.predict(model, x, y, nn.CrossEntropyLoss())
