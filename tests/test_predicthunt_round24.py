"""Round 24 (predicthunt24): dlt.predict against the measurement at initialization."""

import math

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import depthlab.torch as dlt  # noqa: E402


def _padded_cnn(mode: str, act, seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    layers = [nn.Conv2d(3, 64, 3, padding=1, padding_mode=mode)]
    for _ in range(5):
        layers += [act(), nn.Conv2d(64, 64, 3, padding=1, padding_mode=mode)]
    layers += [act(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)]
    m = nn.Sequential(*layers).double()
    for lay in m.modules():
        if isinstance(lay, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(lay.weight)
            nn.init.zeros_(lay.bias)
    return m


@pytest.mark.parametrize("mode, act", [("zeros", nn.ReLU), ("circular", nn.ReLU),
                                       ("zeros", nn.GELU)])
def test_a_deep_zero_padded_cnn_is_predicted_at_its_border_variances(mode, act):
    # zero padding lowers the variance at the border, which the next conv's border outputs
    # read with fewer taps; averaged fans missed it, compounding with depth (zeros: layer 6
    # pre_std 0.876x before 27387b4; GELU, E f^2 not proportional to q: 0.75x before ad12a5c);
    # circular padding (no border) is the control
    pred, meas = {}, {}
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(16, 3, 8, 8, generator=g, dtype=torch.float64)
        y = torch.randint(0, 10, (16,), generator=g)
        df = dlt.predict(_padded_cnn(mode, act, seed), x, y, nn.CrossEntropyLoss())
        for r in df.itertuples():
            pred.setdefault((r.layer, r.quantity), []).append(r.predicted ** 2)
            meas.setdefault((r.layer, r.quantity), []).append(r.value ** 2)
    for key in [(6, "pre_std"), (1, "grad_pre_std")]:
        ratio = math.sqrt(sum(pred[key]) / sum(meas[key]))
        assert 0.94 < ratio < 1.08, (key, ratio)
