"""Small helpers of the tests that compute depthlab.torch's quantities by hand (autograd)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def first_tensor(obj: Any) -> torch.Tensor | None:
    """The first tensor in a model's output (a tensor, or nested tuples/lists/dicts/
    dataclasses)."""
    if isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, dict):
        obj = list(obj.values())
    if fields := getattr(obj, "__dataclass_fields__", None):
        obj = [getattr(obj, k) for k in fields]
    if isinstance(obj, (tuple, list)):
        for v in obj:
            t = first_tensor(v)
            if t is not None:
                return t
    return None


def as_numpy(t: torch.Tensor) -> np.ndarray:
    """A detached float64 CPU copy (sparse tensors made dense)."""
    t = t.detach()
    return (t if t.layout == torch.strided else t.to_dense()).to("cpu", torch.float64).numpy()


def call(model: nn.Module, x: Any) -> Any:
    """``model(*x)`` for a tuple, ``model(**x)`` for a dict, else ``model(x)``."""
    if isinstance(x, tuple):
        return model(*x)
    if isinstance(x, dict):
        return model(**x)
    return model(x)


class FunctionalReluNet(nn.Module):
    """6 -> 16 -> 16 -> 3 with functional ReLUs (the first in place): activations the forward
    applies itself."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Linear(6, 16), nn.Linear(16, 16), nn.Linear(16, 3)

    def forward(self, x):
        return self.c(F.relu(self.b(F.relu(self.a(x), inplace=True))))


class ResidualReluNet(nn.Module):
    """6 -> 16, one residual block ``h + f2(relu(f1(h)))`` of width 16, -> 3 (functional
    ReLUs)."""

    def __init__(self) -> None:
        super().__init__()
        self.inp, self.f1, self.f2, self.out = (nn.Linear(6, 16), nn.Linear(16, 16),
                                                nn.Linear(16, 16), nn.Linear(16, 3))

    def forward(self, x):
        h = torch.relu(self.inp(x))
        h = h + self.f2(torch.relu(self.f1(h)))
        return self.out(h)


def depthlab_loss(name: str, kwargs: dict[str, Any], z: torch.Tensor,
                  y: torch.Tensor) -> torch.Tensor:
    """PyTorch's twin of depthlab's loss ``name`` (canonical name, its keyword arguments) on
    logits ``z`` and targets ``y``: mse, huber (``delta``), binary cross-entropy on logits,
    else cross-entropy (``label_smoothing``)."""
    if name == "mse":
        return F.mse_loss(z, y)
    if name == "huber":
        return F.huber_loss(z, y, delta=kwargs.get("delta", 1.0))
    if name == "binary_cross_entropy":
        return F.binary_cross_entropy_with_logits(z, y)
    return F.cross_entropy(z, y, label_smoothing=kwargs.get("label_smoothing", 0.0))
