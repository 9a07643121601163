"""Small torch models shared by several test files (built from ``torch.nn`` only)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class LstmHead(nn.Module):
    """An LSTM(6 -> 8) over (N, T, 6) sequences, a Linear(8, 3) head on its last step."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(6, 8, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.lstm(x)[0][:, -1])


class EncoderHead(nn.Module):
    """Linear(6, 8), one TransformerEncoderLayer (2 heads, no dropout), mean over positions,
    Linear(8, 3), on (N, T, 6) sequences."""

    def __init__(self) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.0,
                                           batch_first=True)
        self.enc = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.inp = nn.Linear(6, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.enc(self.inp(x)).mean(1))


def sigmoid_cnn(device: str = "cpu", depth: int = 20, ch: int = 4) -> Callable[[], nn.Module]:
    """A factory of issue 8's known-answer model: ``depth`` Conv2d(ch, 3x3, padding 1) +
    Sigmoid layers on (N, 1, 8, 8) images, Flatten, Linear(ch * 64, 10), every weight N(0, 1)
    and every bias 0: gradients vanish towards the input."""
    def make() -> nn.Module:
        mods: list[nn.Module] = [nn.Conv2d(1, ch, 3, padding=1), nn.Sigmoid()]
        for _ in range(depth - 1):
            mods += [nn.Conv2d(ch, ch, 3, padding=1), nn.Sigmoid()]
        model = nn.Sequential(*mods, nn.Flatten(), nn.Linear(ch * 64, 10))
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.normal_(m.weight, 0.0, 1.0)
                nn.init.zeros_(m.bias)
        return model.to(device)
    return make


class ParameterListMaps(nn.Module):
    """Map layers in a ParameterList: Linear(5, 6), ``h = relu(h @ ws[i])`` for i = 0, 1, 0
    (one matrix used twice), Linear(6, 3); float64."""

    def __init__(self) -> None:
        super().__init__()
        d = torch.float64
        self.inp = nn.Linear(5, 6, dtype=d)
        self.ws = nn.ParameterList([nn.Parameter(torch.randn(6, 6, dtype=d) / 6 ** 0.5)
                                    for _ in range(2)])
        self.out = nn.Linear(6, 3, dtype=d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        for i in (0, 1, 0):
            h = torch.relu(h @ self.ws[i])
        return self.out(h)


class TiedEmbeddingHead(nn.Module):
    """An embedding table (5 tokens, 8 wide) used as the output projection too:
    ``mean_t(tanh(fc(emb(t))) @ emb.weight.T)``; float64."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(5, 8, dtype=torch.float64)
        self.fc = nn.Linear(8, 8, dtype=torch.float64)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return (torch.tanh(self.fc(self.emb(t))) @ self.emb.weight.T).mean(1)
