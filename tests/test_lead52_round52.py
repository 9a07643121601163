"""Round 52, lead: review52's findings F2-F4 (overflow warnings and a bare OverflowError left
beside the round's fixes; number hints for huge or non-ASCII numbers)."""

import warnings

import numpy as np
import pytest

import depthlab.initializers as inits
from depthlab.losses import MSE


@pytest.mark.parametrize("reduction", ["sum", "none", "mean"])
def test_mse_backward_past_the_float32_range_is_inf_without_a_warning(reduction):
    f = MSE(reduction=reduction)
    p = np.array([2e38, 1.0], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        f.forward(p, np.zeros_like(p))
        g = f.backward()
    scale = 0.5 if reduction == "mean" else 1.0
    assert g[0] == (np.inf if reduction != "mean" else np.float32(2e38) * np.float32(2 * scale))
    assert g[1] == np.float32(2.0 * scale)


def test_truncated_normal_variance_past_float64_is_inf_not_a_bare_overflow_error():
    init = inits.TruncNormal(std=1e200, a=-1e200, b=1e200)
    assert init.variance(10, 10) == np.inf
    small = inits.TruncNormal(std=1e200, a=-1e197, b=1e197)  # the series branch (beta < 1e-3)
    assert small.variance(10, 10) == np.inf
    # ordinary values unchanged: b^2/3 (1 - 2 beta^2/15) and std^2 (1 - 2 beta pdf / mass)
    assert inits.TruncNormal(std=1.0, a=-2.0, b=2.0).variance(3, 3) == pytest.approx(
        0.7737413035499232, rel=1e-15)


def test_number_hint_gives_no_301_digit_number_and_reads_ascii_digits_only():
    from depthlab.fieldcheck import number_hint

    assert number_hint(1e300, True) == ""
    assert number_hint("1e300", True) == ""
    assert number_hint("\u0661", False) == ""  # an Arabic-Indic one: no TOML number either
    assert number_hint(8.0, True) == " (did you mean 8?)"
    assert number_hint("8.0", True) == " (did you mean 8, without quotes?)"
    assert number_hint("1e-3", False) == " (did you mean 1e-3, without quotes?)"


def test_no_channel_axis_hint_for_a_model_that_adds_the_axis_itself():
    """review52 F5: the (N, H, W) hint named the channel axis for any failure of a model with a
    Conv2d(1, ...), here a Linear's size after a forward that adds the axis itself."""
    torch = pytest.importorskip("torch")
    from torch import nn

    import depthlab.torch as dlt

    class AddsAxis(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(1, 4, 3)
            self.fc = nn.Linear(99, 10)

        def forward(self, x):
            return self.fc(torch.relu(self.c(x.unsqueeze(1))).flatten(1))

    class Plain(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(1, 4, 3)
            self.fc = nn.Linear(144, 10)

        def forward(self, x):
            return self.fc(torch.relu(self.c(x)).flatten(1))

    torch.manual_seed(0)
    x, y = torch.randn(32, 8, 8), torch.randint(0, 10, (32,))
    with pytest.raises(Exception) as got:
        dlt.doctor(AddsAxis(), (x, y), steps=2, verify=False)
    assert "mat1 and mat2" in str(got.value) and "channel axis" not in str(got.value)
    with pytest.raises(Exception) as got:  # the case the hint is for keeps it
        dlt.doctor(Plain(), (x, y), steps=2, verify=False)
    assert "no channel axis" in str(got.value) and "x[:, None]" in str(got.value)
