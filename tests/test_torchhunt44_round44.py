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
    assert "x has" not in text  # (the conv was said to be given an x of the wrong shape)


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


class _Head(nn.Module):
    """A classifier with an extra head of no outputs (``nn.Linear(8, 0)``), concatenated to
    the logits when ``use``, else never called."""

    def __init__(self, use: bool):
        super().__init__()
        self.a, self.o, self.extra = nn.Linear(4, 8), nn.Linear(8, 3), nn.Linear(8, 0)
        self.use = use

    def forward(self, x):
        h = torch.tanh(self.a(x))
        out = self.o(h)
        return torch.cat([out, self.extra(h)], -1) if self.use else out


def test_unused_layer_without_entries_is_left_alone():
    """The refusal is of layers the forward runs: an empty head it never calls changes
    nothing (probe and predict measure the others, as before)."""
    torch.manual_seed(0)
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    df = dlt.probe(_Head(False), x, y, CE)
    assert set(df.module) == {"", "a", "o"}
    pred = dlt.predict(_Head(False), x, y, CE)
    assert set(pred.module) == {"a", "o"}


def test_used_layer_without_entries_is_named():
    """An empty head the forward runs: probe divided by zero (ZeroDivisionError); now the
    ValueError names it."""
    torch.manual_seed(0)
    with pytest.raises(ValueError, match=r"'extra' \(Linear\) has weight of shape \(0, 8\)"):
        dlt.probe(_Head(True), torch.randn(16, 4), torch.randint(0, 3, (16,)), CE)


def test_watch_names_a_layer_without_entries():
    """Watch on the same model: one ValueError naming 'extra', as probe now gives."""
    torch.manual_seed(0)
    model = _Head(True)
    with pytest.raises(ValueError, match=r"'extra' \(Linear\)"):
        with dlt.Watch(model, every=1) as watch:
            loss = CE(model(torch.randn(8, 4)), torch.randint(0, 3, (8,)))
            loss.backward()
            watch.step(loss)


@pytest.mark.parametrize("act", [nn.PReLU(), nn.CELU(0.5), nn.Hardswish(), nn.Threshold(0.0, 0.0)],
                         ids=lambda a: type(a).__name__)
def test_inactive_frac_is_the_share_of_entries_at_or_below_zero(act):
    """probe's docstring said 'entries on the flat side'; PReLU, CELU and Hardswish have none,
    and their inactive_frac is the share of s <= 0, as in depthlab.probes.stats."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 64), act, nn.Linear(64, 3))
    x = torch.randn(100, 5)
    df = dlt.probe(model, x, torch.randint(0, 3, (100,)), CE)
    got = df[(df.module == "0") & (df.quantity == "inactive_frac")].value
    with torch.no_grad():
        want = (model[0](x) <= 0).double().mean().item()
    assert len(got) == 1 and got.iloc[0] == pytest.approx(want, abs=1e-12)
    assert 0.3 < want < 0.7
