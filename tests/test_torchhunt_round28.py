"""Round 28 (torchhunt28): dlt.probe / dlt.predict on models nobody had tried."""

import math

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

import depthlab.torch as dlt  # noqa: E402


def _rows(df, module):
    return {r.quantity: r.value for r in df[df.module == module].itertuples()}


def test_a_training_rrelu_whose_mean_slope_is_zero_has_no_dead_units():
    """RReLU(-1, 1) in training draws each negative entry's slope from U(-1, 1): a unit whose
    inputs are all negative still passes a gradient (autograd's dead_frac is 0); the mean slope
    (0) counted such units as dead (0.2 of 40 units on 4 rows)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 40), nn.RReLU(-1.0, 1.0), nn.Linear(40, 3)).double()
    x = torch.randn(4, 6, dtype=torch.float64)
    y = torch.randint(0, 3, (4,))
    s = model[0](x)
    assert bool(((s <= 0).all(0)).any())  # some unit is below 0 on every row
    df = dlt.probe(model, x, y, nn.CrossEntropyLoss())
    # autograd: the derivative of the RReLU output wrt its input, per unit
    s = s.detach().requires_grad_(True)
    torch.manual_seed(1)
    (d,) = torch.autograd.grad(model[1](s).sum(), s)
    assert (d != 0).any(0).all()
    assert _rows(df, "0")["dead_frac"] == 0.0
    model.eval()  # the mean slope 0: those units are dead
    df = dlt.probe(model, x, y, nn.CrossEntropyLoss())
    assert _rows(df, "0")["dead_frac"] == pytest.approx(float((s <= 0).all(0).double().mean()))


@pytest.mark.parametrize("lower, upper, bn", [(0.0, 1.0, False), (-1.0, 1.0, False),
                                              (-1.0, 1.0, True)])
def test_predict_takes_a_training_rrelus_random_slope_at_its_mean_square(lower, upper, bn):
    """In training mode RReLU's slope below 0 is a fresh U(lower, upper) draw per entry, so
    E f^2 and E f'^2 hold E a^2 (not (E a)^2); E f holds E a. With the mean slope, 5 layers of
    RReLU(0, 1) had layer 1's grad_pre_std predicted 0.83x the measurement, RReLU(-1, 1)
    0.48x (act_std 0.65-0.83x); after BatchNorm (E f of the root-mean-square slope: Var f 0.64
    for 0.51) RReLU(-1, 1)'s act_std 1.12x, grad_pre_std 0.80x."""
    num: dict = {}
    for seed in range(2):
        torch.manual_seed(seed)
        layers = [nn.Linear(32, 128), nn.RReLU(lower, upper)]
        for _ in range(4):
            layers += [nn.Linear(128, 128), *([nn.BatchNorm1d(128)] if bn else []),
                       nn.RReLU(lower, upper)]
        model = nn.Sequential(*layers, nn.Linear(128, 10)).double()
        x = torch.randn(128, 32, dtype=torch.float64)
        y = torch.randint(0, 10, (128,))
        df = dlt.predict(model, x, y, nn.CrossEntropyLoss())
        for r in df[df.layer <= 5].itertuples():
            a = num.setdefault((r.layer, r.quantity), [0.0, 0.0])
            a[0] += r.predicted ** 2
            a[1] += r.value ** 2
    ratios = {k: math.sqrt(p / m) for k, (p, m) in num.items()}
    assert set(q for _, q in ratios) == {"pre_std", "act_std", "grad_pre_std"}
    for k, v in ratios.items():
        assert 0.9 < v < 1.1, (k, v, ratios)


def test_predicts_refusal_of_an_unmodelled_activation_lists_only_modelled_ones():
    """A Softmax between layers is refused with the list of modelled activations; that list
    named Hardshrink and Softshrink, which predict() refuses in turn ('does not model')."""
    model = nn.Sequential(nn.Linear(6, 16), nn.Softmax(-1), nn.Linear(16, 3))
    with pytest.raises(ValueError, match="Softmax") as err:
        dlt.predict(model, torch.randn(8, 6))
    listed = str(err.value).split("modelled: ")[1]
    assert "Tanhshrink" in listed and "ReLU" in listed
    assert "Hardshrink" not in listed and "Softshrink" not in listed
    with pytest.raises(ValueError, match="does not model") as err:
        dlt.predict(nn.Sequential(nn.Linear(6, 16), nn.Hardshrink(), nn.Linear(16, 3)),
                    torch.randn(8, 6))
    assert "Hardshrink" not in str(err.value).split("modelled: ")[1]


def _channel_dropout_ratio(pool, layer, quantity, functional=False):
    """sqrt(sum predicted^2 / sum measured^2) of one row over 2 seeds: Conv 3x3 (circular) ->
    ReLU -> Dropout2d(0.5) -> ``pool`` -> Flatten -> Linear(256) -> Tanh -> Linear(10)."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(16, 64, 3, padding=1, padding_mode="circular")
            self.drop = nn.Dropout2d(0.5)
            self.pool = pool
            self.fc = nn.LazyLinear(256)
            self.out = nn.Linear(256, 10)

        def forward(self, x):
            h = torch.relu(self.conv(x))
            h = (nn.functional.dropout2d(h, 0.5, self.training) if functional
                 else self.drop(h))
            h = self.pool(h).flatten(1)
            return self.out(torch.tanh(self.fc(h)))

    num = den = 0.0
    for seed in range(2):
        torch.manual_seed(seed)
        model = Net().double()
        model(torch.randn(2, 16, 8, 8, dtype=torch.float64))
        x = torch.randn(64, 16, 8, 8, dtype=torch.float64)
        y = torch.randint(0, 10, (64,))
        df = dlt.predict(model, x, y, nn.CrossEntropyLoss())
        row = df[(df.layer == layer) & (df.quantity == quantity)].iloc[0]
        num += row.predicted ** 2
        den += row.value ** 2
    return math.sqrt(num / den)


@pytest.mark.parametrize("pool, layer, quantity, functional", [
    (nn.AdaptiveAvgPool2d(1), 2, "pre_std", False),  # was 0.78
    (nn.AdaptiveAvgPool2d(1), 2, "pre_std", True),
    (nn.AvgPool2d(2), 2, "pre_std", False),  # was 0.90
    (nn.MaxPool2d(2), 1, "grad_pre_std", False),  # was 1.20
], ids=["gap", "gap-functional", "avg2", "max2"])
def test_channel_dropout_before_a_pool_keeps_one_mask_per_window(pool, layer, quantity,
                                                                 functional):
    """Dropout2d zeroes a whole channel of an example: a pool's window shares its mask, so the
    pool of the dropped channel is the dropped pool of the channel (the mask is not averaged
    away over the window)."""
    assert 0.92 < _channel_dropout_ratio(pool, layer, quantity, functional) < 1.08
