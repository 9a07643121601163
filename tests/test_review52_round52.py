"""review52 (round 52): guards for behaviours the round's commits changed, checked in review.

The Watch now names, once, a weight layer whose module the forward bypassed (d81f3795,
5f9fd6ff). Modules whose weights torch itself uses without calling their forward
(``nn.MultiheadAttention``'s ``out_proj``, inside ``F.multi_head_attention_forward``), a
weight tied to another module that ran (``F.linear(h, self.wte.weight)``, GPT's output head)
and recurrent layers must not be named: each such warning would be a false alarm on an
ordinary model.
"""

from __future__ import annotations

import warnings

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn


class _Attention(nn.Module):
    """Linear -> MultiheadAttention -> TransformerEncoderLayer -> Linear on (N, T, 8)."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(8, 16)
        self.att = nn.MultiheadAttention(16, 2, batch_first=True)
        self.enc = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True)
        self.out = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        h, _ = self.att(h, h, h)
        return self.out(self.enc(h).mean(1))


class _TiedRecurrent(nn.Module):
    """Embedding -> LSTM -> GRU -> LayerNorm, logits through the embedding's own table."""

    def __init__(self) -> None:
        super().__init__()
        self.wte = nn.Embedding(20, 16)
        self.lstm = nn.LSTM(16, 16, batch_first=True)
        self.gru = nn.GRU(16, 16, batch_first=True)
        self.ln = nn.LayerNorm(16)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h, _ = self.lstm(self.wte(ids))
        h, _ = self.gru(h)
        return nn.functional.linear(self.ln(h)[:, -1], self.wte.weight)


def _watch_warnings(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[str]:
    """The RuntimeWarnings of 3 watched SGD steps (Watch.step after backward, before step)."""
    import depthlab.torch as dlt

    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with dlt.Watch(model) as watch:
            for _ in range(3):
                opt.zero_grad()
                loss = nn.functional.cross_entropy(model(x), y)
                loss.backward()
                watch.step(loss)
                opt.step()
    return [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]


@pytest.mark.parametrize("case", ["attention", "tied_recurrent"])
def test_watch_names_no_bypassed_layer_in_ordinary_models(case: str) -> None:
    torch.manual_seed(0)
    if case == "attention":
        model, x = _Attention(), torch.randn(4, 5, 8)
        y = torch.randint(0, 3, (4,))
    else:
        model, x = _TiedRecurrent(), torch.randint(0, 20, (4, 6))
        y = torch.randint(0, 20, (4,))
    said = _watch_warnings(model, x, y)
    assert not [m for m in said if "without calling the module" in m], said
    assert said == [], said


def test_watch_still_names_a_linear_called_through_forward() -> None:
    """The guard above can fail: the same check names a layer the forward bypasses."""
    torch.manual_seed(0)

    class Bypass(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(8, 16), nn.Linear(16, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return nn.functional.linear(torch.tanh(self.a(x)), self.b.weight, self.b.bias)

    said = _watch_warnings(Bypass(), torch.randn(6, 8), torch.randint(0, 3, (6,)))
    assert any("without calling the module" in m and "'b'" in m for m in said), said
