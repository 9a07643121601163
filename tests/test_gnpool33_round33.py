"""Round 33 (gnpool33): predict() of a GroupNorm CNN under a global average pool."""

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
dlt = pytest.importorskip("depthlab.torch")


@pytest.mark.parametrize("act", [nn.ReLU, nn.Tanh])
def test_groupnorm_one_channel_per_group_under_a_global_pool_is_predicted(act):
    """Conv -> GroupNorm(C, C) -> act -> global average pool -> Linear: the pool sends each
    channel one gradient, alike over its positions, most of which GroupNorm's mean (and, for
    ReLU, its xhat direction) removes; the measured grad_pre_std was 0.41-0.43x the
    prediction (tanh 0.46-0.48x) at every conv; now each conv within 0.8-1.25x."""
    torch.manual_seed(0)
    c = 32
    model = nn.Sequential(nn.Conv2d(3, c, 3, padding=1), nn.GroupNorm(c, c), act(),
                          nn.Conv2d(c, c, 3, padding=1), nn.GroupNorm(c, c), act(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 10))
    x, y = torch.randn(32, 3, 8, 8), torch.randint(0, 10, (32,))
    df = dlt.predict(model, x, y, nn.CrossEntropyLoss())
    g = df[(df.quantity == "grad_pre_std") & (df.module != "8")]
    ratio = (g.value / g.predicted).tolist()
    assert len(ratio) == 2
    assert all(0.8 < v < 1.25 for v in ratio), ratio
