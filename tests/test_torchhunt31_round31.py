"""Round 31 (torchhunt31): depthlab.torch on models the other tests do not use."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

import depthlab.torch as dlt  # noqa: E402


class _SqueezeExcite(nn.Module):
    """A squeeze-and-excitation gate: the block's output is ``h * w``, a product."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)
        self.fc1 = nn.Linear(c, c // 4)
        self.fc2 = nn.Linear(c // 4, c)

    def forward(self, x):
        h = F.relu(self.conv(x))
        w = torch.sigmoid(self.fc2(F.relu(self.fc1(h.mean((2, 3))))))
        return h * w[:, :, None, None]


def test_predict_refusal_names_the_gate_not_the_flatten_module_after_it():
    # an nn.Flatten module (a view) after the gate's product: the refusal said "it is the
    # output of 'flat' (Flatten)", a module predict() models, and never named the product
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), _SqueezeExcite(8),
                          nn.Flatten(), nn.Linear(8 * 4 * 4, 3))
    with pytest.raises(ValueError) as info:
        dlt.predict(model, torch.randn(4, 3, 4, 4))
    message = str(info.value)
    assert "\n" not in message
    assert "'3' (Flatten)" in message and "'Mul'" in message, message
