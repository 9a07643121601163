"""tdochunt51 (round 51): dlt.doctor's robustness on models, data and budgets not shown."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import depthlab.torch as dlt


def _images(n: int = 40, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


def test_an_instance_norm_given_one_position_is_named():
    """Regression: an InstanceNorm2d reached by a 1x1 map (Conv2d(3, 4, 8) on 8x8 images)
    failed the doctor's first check with torch's bare 'Expected more than 1 spatial element
    when training', naming neither the module nor a remedy; now the probe's one line."""
    def make() -> nn.Module:
        return nn.Sequential(nn.Conv2d(3, 4, 8), nn.InstanceNorm2d(4), nn.ReLU(), nn.Flatten(),
                             nn.Linear(4, 10))

    with pytest.raises(ValueError, match=r"^InstanceNorm2d '1' normalizes each example's "
                                         r"channels over their positions.*one position per "
                                         r"channel.*expected an x whose input reaches it with 2 "
                                         r"or more positions"):
        dlt.doctor(make, _images(), steps=2, verify=False)


def test_a_batch_norm_at_batch_size_one_is_named_with_the_batch_size():
    """Regression: ``batch_size=1`` on a model with BatchNorm1d failed with torch's bare
    'Expected more than 1 value per channel when training'; now the norm is named and the
    remedy is a batch_size of 2 or more."""
    def make() -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(192, 16), nn.BatchNorm1d(16), nn.ReLU(),
                             nn.Linear(16, 10))

    with pytest.raises(ValueError, match=r"^BatchNorm1d '2' is in training mode.*expected "
                                         r"batch_size 2 or more \(got 1\)"):
        dlt.doctor(make, _images(), steps=2, batch_size=1, verify=False)
