"""Round 27 (torchhunt27): dlt.probe / dlt.predict on models nobody had tried."""

import math

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

import depthlab.torch as dlt  # noqa: E402


def _ratio(make, layer, quantity, seeds=2, channels=64):
    """sqrt(sum predicted^2 / sum measured^2) of one row over seeds (each seed: the model,
    then a batch of 64 (channels, 8, 8) inputs and labels, in that order)."""
    num = den = 0.0
    for seed in range(seeds):
        torch.manual_seed(seed)
        model = make()
        x = torch.randn(64, channels, 8, 8, dtype=torch.float64)
        y = torch.randint(0, 10, (64,))
        df = dlt.predict(model, x, y, nn.CrossEntropyLoss())
        row = df[(df.layer == layer) & (df.quantity == quantity)].iloc[0]
        num += row.predicted ** 2
        den += row.value ** 2
    return math.sqrt(num / den)


def _spread_bn(*between):
    """Conv 1x1 -> BatchNorm2d whose betas are N(0, 1) -> ReLU -> ``between`` -> Conv 1x1 ->
    Tanh -> head (the lazy head materialized)."""
    model = nn.Sequential(nn.Conv2d(64, 64, 1), nn.BatchNorm2d(64), nn.ReLU(), *between,
                          nn.Conv2d(64, 256, 1), nn.Tanh(), nn.Flatten(),
                          nn.LazyLinear(10)).double()
    model(torch.randn(2, 64, 8, 8, dtype=torch.float64))
    with torch.no_grad():
        model[1].bias.normal_(0.0, 1.0)
    return model


@pytest.mark.parametrize("pool", ["global", "avg4"])
@pytest.mark.parametrize("bias_std", [1.0, 0.0])
def test_average_pooling_keeps_each_channels_own_mean(pool, bias_std):
    """A window of an average pool reads one channel, whose mean over the batch is its own
    (its bias, the weights on the inputs' means): that part is averaged like a constant and
    only the batch variance shrinks. With the layer's mean squared as the constant part, the
    channels' spread of means shrank with the window: 1x1 convs (independent positions) with
    biases of std 1 before a global average pool had the next layer's pre_std predicted 0.78x
    the measurement (AvgPool2d(4): 0.82x); the zero-bias twin is the control."""
    def make():
        conv = nn.Conv2d(64, 128, 1).double()
        nn.init.kaiming_normal_(conv.weight)
        nn.init.normal_(conv.bias, 0.0, bias_std)
        layers = [conv, nn.ReLU()]
        if pool == "global":
            layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 128)]
        else:
            layers += [nn.AvgPool2d(4), nn.Conv2d(128, 128, 1), nn.Flatten()]
        layers += [nn.Tanh(), nn.LazyLinear(10)]
        model = nn.Sequential(*layers).double()
        model(torch.randn(2, 64, 8, 8, dtype=torch.float64))
        return model

    ratio = _ratio(make, 2, "pre_std")
    assert 0.94 < ratio < 1.06, ratio


def test_average_pooling_keeps_the_channels_batchnorm_offsets():
    """The same after BatchNorm whose beta is spread over channels (a trained network's last
    BN -> ReLU -> global average pool -> head): the Linear after the pool had pre_std predicted
    0.77x the measurement over these 4 seeds, now 1.01x (each channel's mean, set by its
    beta_c, was averaged like noise)."""
    def make():
        model = nn.Sequential(nn.Conv2d(16, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
                              nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 512),
                              nn.Tanh(), nn.Linear(512, 10)).double()
        with torch.no_grad():
            model[1].bias.normal_(0.0, 1.0)
            model[1].weight.uniform_(0.5, 1.5)
        return model

    ratio = _ratio(make, 2, "pre_std", seeds=4, channels=16)
    assert 0.92 < ratio < 1.08, ratio


@pytest.mark.parametrize("pool, layer, quantity", [("max4", 2, "pre_std"),
                                                   ("global", 2, "pre_std")])
def test_a_max_pool_takes_the_maximum_within_one_channel(pool, layer, quantity):
    """A max pool's window reads one channel: the maximum of draws of that channel's own
    distribution, not of the mixture over channels (wider where the channels' means differ:
    BatchNorm with spread betas, biases). Before: the 1x1 conv after MaxPool2d(4) had pre_std
    predicted 1.23x the measurement (global max pool: 1.3x), now 1.0x."""
    def make():
        mp = nn.MaxPool2d(4) if pool == "max4" else nn.AdaptiveMaxPool2d(1)
        return _spread_bn(mp)

    ratio = _ratio(make, layer, quantity, seeds=3)
    assert 0.92 < ratio < 1.08, ratio


def test_a_dropout_before_a_max_pool_passes_each_units_gradient():
    """Dropout (training) then a max pool after BatchNorm with spread betas: the dropout's
    backward read the max pool's per-unit gradient table at the compressed mixture's group
    means, mixing units: layer 1's grad_pre_std was predicted 1.10x the measurement (6 seeds),
    now 1.00x."""
    ratio = _ratio(lambda: _spread_bn(nn.Dropout(0.3), nn.MaxPool2d(2)), 1, "grad_pre_std",
                   seeds=4)
    assert 0.95 < ratio < 1.05, ratio
