"""Round 44 (torchhunt44): depthlab.torch's probe / predict on models not tried before."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import depthlab.torch as dlt  # noqa: E402

CE = nn.CrossEntropyLoss()


def _zero_width_models() -> list[tuple[str, nn.Module, tuple[int, ...], str]]:
    """Models with a layer of no units or no inputs, the input shape and the refused layer."""
    return [
        ("no outputs", nn.Sequential(nn.Linear(5, 0), nn.ReLU(), nn.Linear(0, 3)), (4, 5),
         "'0' (Linear)"),
        ("conv", nn.Sequential(nn.Conv2d(3, 0, 3), nn.ReLU(), nn.Flatten(), nn.Linear(0, 3)),
         (4, 3, 5, 5), "'0' (Conv2d)"),
    ]


@pytest.mark.parametrize("fn", [dlt.probe, dlt.predict], ids=["probe", "predict"])
@pytest.mark.parametrize("case", _zero_width_models(), ids=lambda c: c[0])
def test_layer_without_entries_is_refused_in_one_line(fn, case):
    """A layer whose weight has no entries: probe divided by zero (ZeroDivisionError) and
    predict failed in a reshape; a conv with no output channels was reported as an x of the
    wrong shape. Now one ValueError naming the layer and its weight's shape."""
    _, model, shape, layer = case
    torch.manual_seed(0)
    x, y = torch.randn(*shape), torch.randint(0, 3, (shape[0],))
    with pytest.raises(ValueError, match="no entries") as info:
        fn(model, x, y, CE)
    text = str(info.value)
    assert "\n" not in text
    assert layer in text and str(tuple(model[0].weight.shape)) in text


def test_empty_weight_beside_a_real_one_is_measured():
    """A module whose own weights are not all empty (a placeholder of shape (0, 4) beside its
    matrix) is still measured: its weight_std is the matrix's."""

    class Layer(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(5, 4) * 0.5)
            self.spare = nn.Parameter(torch.empty(0, 4))

        def forward(self, x):
            return x @ self.w

    torch.manual_seed(0)
    model = nn.Sequential(Layer(), nn.Tanh(), nn.Linear(4, 3))
    df = dlt.probe(model, torch.randn(8, 5), torch.randint(0, 3, (8,)), CE)
    got = df[(df.module == "0") & (df.quantity == "weight_std")].value
    assert len(got) == 1
    assert got.iloc[0] == pytest.approx(model[0].w.detach().double().std(unbiased=False).item(),
                                        rel=1e-6)
