"""Reference models built from ``torch.nn`` only (torchvision is not imported), for tests,
benchmarks and examples.

* :func:`resnet18` -- torchvision's ResNet-18 layout: stem conv7x7/2-BN-ReLU(inplace)-maxpool,
  four stages of two :class:`BasicBlock` (conv3x3-BN-ReLU(inplace)-conv3x3-BN, plus the
  shortcut, then ReLU(inplace); a 1x1 conv + BN downsampling shortcut where the stride or the
  width changes), global average pooling and a Linear head; torchvision's initialisation
  (Kaiming normal, fan_out, for convolutions; BN weight 1, bias 0).
* :func:`mlp` -- Linear layers with an activation module between them (``ReLU(inplace=True)``
  by default).
* :func:`transformer_classifier` -- token embedding, learned positions, an
  ``nn.TransformerEncoder``, mean pooling and a Linear head.
* :func:`lstm_classifier` -- ``nn.LSTM`` over a sequence, Linear head on the last step.
* :func:`bn_cnn` -- conv3x3-BatchNorm2d-ReLU blocks, global average pooling, Linear head.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

__all__ = ["BasicBlock", "bn_cnn", "lstm_classifier", "mlp", "resnet18", "transformer_classifier"]


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """torchvision's ``BasicBlock``: ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``."""

    expansion = 1

    def __init__(self, cin: int, cout: int, stride: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = _conv3x3(cin, cout, stride)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(cout, cout)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)
        out = self.conv2(out)
        out = self.bn2(out)
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        out = self.relu(out)
        return out


class ResNet(nn.Module):
    """torchvision's ``ResNet`` with :class:`BasicBlock` (module names as in torchvision)."""

    def __init__(self, layers: Sequence[int] = (2, 2, 2, 2), num_classes: int = 1000,
                 in_channels: int = 3) -> None:
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(64, layers[0])
        self.layer2 = self._make_layer(128, layers[1], stride=2)
        self.layer3 = self._make_layer(256, layers[2], stride=2)
        self.layer4 = self._make_layer(512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes))
        layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        layers += [BasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18(num_classes: int = 10, in_channels: int = 3) -> ResNet:
    """ResNet-18 (torchvision layout and initialisation) for ``(N, in_channels, H, W)``."""
    return ResNet((2, 2, 2, 2), num_classes, in_channels)


def mlp(sizes: Sequence[int], activation: Callable[[], nn.Module] | None = None,
        bias: bool = True) -> nn.Sequential:
    """``Linear(sizes[0], sizes[1]), act, ..., Linear(sizes[-2], sizes[-1])``; ``activation``
    is a factory of modules (default ``lambda: nn.ReLU(inplace=True)``); PyTorch's default
    initialisation."""
    sizes = [int(n) for n in sizes]
    if len(sizes) < 2 or min(sizes) < 1:
        raise ValueError(f"sizes must list >= 2 positive widths, got {sizes!r}")
    make = activation if activation is not None else (lambda: nn.ReLU(inplace=True))
    mods: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        mods.append(nn.Linear(sizes[i], sizes[i + 1], bias=bias))
        if i < len(sizes) - 2:
            mods.append(make())
    return nn.Sequential(*mods)


class TransformerClassifier(nn.Module):
    """Token ids ``(N, T)`` -> class logits ``(N, classes)``."""

    def __init__(self, vocab: int = 50, d_model: int = 32, heads: int = 4, layers: int = 2,
                 classes: int = 3, max_len: int = 64, ff: int = 64) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d_model)
        self.pos = nn.Parameter(torch.zeros(max_len, d_model))
        layer = nn.TransformerEncoderLayer(d_model, heads, ff, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.embed(tokens) + self.pos[: tokens.shape[1]]
        return self.head(self.encoder(h).mean(dim=1))


def transformer_classifier(**kw) -> TransformerClassifier:
    """A small ``nn.TransformerEncoder`` classifier (see :class:`TransformerClassifier`)."""
    return TransformerClassifier(**kw)


class LSTMClassifier(nn.Module):
    """Sequences ``(N, T, features)`` -> class logits from the last step's hidden state."""

    def __init__(self, features: int = 8, hidden: int = 16, layers: int = 2,
                 classes: int = 3) -> None:
        super().__init__()
        self.lstm = nn.LSTM(features, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        return self.head(out[:, -1])


def lstm_classifier(**kw) -> LSTMClassifier:
    """A small ``nn.LSTM`` classifier (see :class:`LSTMClassifier`)."""
    return LSTMClassifier(**kw)


def bn_cnn(channels: Sequence[int] = (3, 16, 32), classes: int = 10) -> nn.Sequential:
    """``[Conv3x3 - BatchNorm2d - ReLU] * k``, global average pooling, Linear head."""
    ch = [int(c) for c in channels]
    mods: list[nn.Module] = []
    for cin, cout in zip(ch[:-1], ch[1:]):
        mods += [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]
    mods += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(ch[-1], classes)]
    return nn.Sequential(*mods)
