"""Round 34b (torchzoo34b): small practitioner architectures built from torch.nn modules only.

dlt.predict refuses a DenseNet block (concatenated skips behind a BatchNorm-ReLU) and an
EfficientNet block's squeeze-and-excitation gate (the features multiplied by a sigmoid of their
pooled projection); the refusals named the wrong obstacle or none of the modules: the DenseNet
one said the input of the next conv was "the function relu applied to the result of the torch
operation 'NativeBatchNorm'", a module of the model (the norm) called a torch operation and the
concatenation that stops the chain not named at all; the SE one named 'Mul' but neither path
multiplied. Now each names the operation, the modules whose outputs it joins, and why that is
no chain.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import depthlab.torch as dlt

CE = nn.CrossEntropyLoss()


class _DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(cin)
        self.conv = nn.Conv2d(cin, growth, 3, padding=1, bias=False)

    def forward(self, x):
        return torch.cat([x, self.conv(F.relu(self.bn(x)))], 1)


class _DenseNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.block = nn.Sequential(_DenseLayer(4, 2), _DenseLayer(6, 2))
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc(self.block(self.stem(x)).mean([2, 3]))


class _SE(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(c, c // 2, 1), nn.Conv2d(c // 2, c, 1)

    def forward(self, x):
        w = torch.sigmoid(self.fc2(F.silu(self.fc1(F.adaptive_avg_pool2d(x, 1)))))
        return x * w


class _MBConv(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.expand = nn.Sequential(nn.Conv2d(c, 2 * c, 1, bias=False), nn.BatchNorm2d(2 * c),
                                    nn.SiLU())
        self.se = _SE(2 * c)
        self.project = nn.Sequential(nn.Conv2d(2 * c, c, 1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x):
        return x + self.project(self.se(self.expand(x)))


class _EffNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.SiLU())
        self.blocks = nn.Sequential(_MBConv(4))
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(self.blocks(self.stem(x)).mean([2, 3]))


def _refusal(model: nn.Module, dtype: torch.dtype = torch.float32) -> str:
    torch.manual_seed(0)
    x, y = torch.randn(8, 3, 4, 4, dtype=dtype), torch.randint(0, 3, (8,))
    model = model.to(dtype)
    with pytest.raises(ValueError) as err:
        dlt.predict(model, x, y, CE)
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def test_predict_names_the_concatenation_of_a_dense_block_not_a_torch_operation_batchnorm():
    torch.manual_seed(0)
    msg = _refusal(_DenseNet())
    assert "the input of 'block.1.conv' is not the previous layer's output" in msg
    assert "'NativeBatchNorm'" not in msg  # a module of the model, not a torch operation
    assert "the output of 'block.1.bn' (BatchNorm2d)" in msg
    assert ("computed by the torch operation 'Cat' (autograd node CatBackward0) from the "
            "outputs of 'stem' (Conv2d) and 'block.0.conv' (Conv2d)") in msg
    assert "concatenation" in msg


def test_predict_names_the_gate_of_a_squeeze_and_excitation_block():
    torch.manual_seed(0)
    msg = _refusal(_EffNet())
    assert "the input of 'blocks.0.project.0' is not the previous layer's output" in msg
    assert ("computed by the torch operation 'Mul' (autograd node MulBackward0) from the "
            "outputs of 'blocks.0.expand.2' (SiLU) and the function sigmoid of "
            "'blocks.0.se.fc2' (Conv2d)") in msg
    assert "product of two paths" in msg


class _Fire(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(c, c // 2, 1)
        self.e1, self.e3 = nn.Conv2d(c // 2, c // 2, 1), nn.Conv2d(c // 2, c // 2, 3, padding=1)

    def forward(self, x):
        h = F.relu(self.squeeze(x))
        return torch.cat([F.relu(self.e1(h)), F.relu(self.e3(h))], 1)


def test_predict_says_a_fire_modules_second_branch_reads_an_earlier_layer():
    # SqueezeNet's Fire: e1 and e3 read relu(squeeze(x)) in parallel. The refusal said it was
    # relu "applied to the result of the torch operation 'Convolution' ..., not to a layer's
    # (or normalization's) own output": it is the output of the layer 'f.squeeze'
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), _Fire(4), nn.Flatten(),
                          nn.Linear(64, 3))
    msg = _refusal(model)
    assert "the input of '1.e3' is not the previous layer's output" in msg
    assert "the function relu applied to the output of '1.squeeze' (Conv2d), a layer" in msg
    assert "in parallel" in msg and "'Convolution'" not in msg


class _CheckpointedDenseLayer(nn.Module):
    """torchvision's _DenseLayer with memory_efficient=True: the bottleneck under a
    non-reentrant checkpoint, its input a list of the block's features so far."""

    def __init__(self, cin: int, growth: int) -> None:
        super().__init__()
        self.norm1, self.relu1 = nn.BatchNorm2d(cin), nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(cin, 2 * growth, 1, bias=False)
        self.norm2, self.relu2 = nn.BatchNorm2d(2 * growth), nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(2 * growth, growth, 3, padding=1, bias=False)

    def forward(self, features):
        def bottleneck(*inputs):
            return self.conv1(self.relu1(self.norm1(torch.cat(inputs, 1))))
        b = torch.utils.checkpoint.checkpoint(bottleneck, *features, use_reentrant=False)
        return self.conv2(self.relu2(self.norm2(b)))


class _CheckpointedDenseNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4),
                                  nn.ReLU(inplace=True))
        self.layers = nn.ModuleList([_CheckpointedDenseLayer(4 + 2 * i, 2) for i in range(3)])
        self.fc = nn.Linear(10, 3)

    def forward(self, x):
        features = [self.stem(x)]
        for layer in self.layers:
            features.append(layer(features))
        return self.fc(torch.cat(features, 1).mean([2, 3]))


def test_predict_names_the_concatenation_of_a_checkpointed_dense_block():
    # the storages of tensors a checkpointed segment freed were taken by later outputs, and
    # the refusal walked in a circle: "it is made by 'layers.0.conv1' (Conv2d) ->
    # 'layers.0.norm1' (BatchNorm2d) -> 'layers.0.conv1' (Conv2d) -> ..." (conv1's input made
    # by conv1; float64 here, where the CPU allocator reused them)
    msg = _refusal(_CheckpointedDenseNet(), torch.float64)
    assert "the input of 'layers.0.conv1' is not the previous layer's output" in msg
    assert "'layers.0.norm1' (BatchNorm2d) reads the result of the torch operation 'Cat'" in msg
    assert "-> 'layers.0.conv1'" not in msg
