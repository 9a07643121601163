"""Round 40 (poolgrad40): a mean over positions between two hidden layers (global average
pooling, a mean over tokens) divides each position's gradient by the number of positions; the
layers below it read as 'vanishing_gradients' although their weight gradients are not
smaller. The gradient path reads such a layer per channel, summed over the positions that
pool into one (:mod:`depthlab.torch.gradient_path`)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import depthlab.torch as dlt  # noqa: E402


def _he(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return model


def _images(n: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 1, 8, 8, generator=g)
    y = (x[:, 0, :4].mean((1, 2)) > x[:, 0, 4:].mean((1, 2))).long()
    return x, y


def _gap() -> nn.Module:
    torch.manual_seed(0)
    return _he(nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
                             nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 64), nn.ReLU(),
                             nn.Linear(64, 2)))


class _Block(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.b1 = nn.BatchNorm2d(c)
        self.c2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.b2 = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.b2(self.c2(torch.relu(self.b1(self.c1(x))))))


def _resnet_head() -> nn.Module:
    torch.manual_seed(0)
    return _he(nn.Sequential(nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16),
                             nn.ReLU(), _Block(16), _Block(16), nn.AdaptiveAvgPool2d(1),
                             nn.Flatten(), nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 2)))


class _Tokens(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(50, 32)
        self.fc = nn.Linear(32, 32)
        self.out = nn.Linear(32, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.fc(self.emb(x).mean(1))))


def _tokens() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 50, (256, 16), generator=g)
    return x, ((x < 10).float().mean(1) > 0.2).long()


def _kinds(diag: object) -> list[str]:
    return [f.kind for f in diag.findings]  # type: ignore[attr-defined]


def test_global_average_pooling_between_hidden_layers_is_no_vanishing_gradient() -> None:
    diag = dlt.doctor(_gap, _images(), optimizer=("sgd", {"lr": 0.1}), steps=10,
                      batch_size=32, verify=False)
    assert "vanishing_gradients" not in _kinds(diag), [f.message for f in diag.findings]


def test_a_mean_over_tokens_after_an_embedding_is_no_vanishing_gradient() -> None:
    torch.manual_seed(0)
    diag = dlt.doctor(_Tokens, _tokens(), optimizer=("adam", {"lr": 3e-3}), steps=10,
                      batch_size=32, verify=False)
    assert "vanishing_gradients" not in _kinds(diag), [f.message for f in diag.findings]


def test_residual_blocks_pooled_into_a_hidden_head_are_no_vanishing_gradient() -> None:
    # the stages are residual blocks (block_grad_std) and batch-normalized layers (dL/dxhat);
    # the last block's conv is followed by a norm: the factor is read at its own output
    diag = dlt.doctor(_resnet_head, _images(), optimizer=("sgd", {"lr": 0.1}), steps=10,
                      batch_size=32, verify=False)
    assert "vanishing_gradients" not in _kinds(diag), [f.message for f in diag.findings]
