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

    with pytest.raises(ValueError, match=r"^a training step .* fails on mini-batches of 1 row "
                                         r"\(batch_size 1, .*BatchNorm1d '2' is in training "
                                         r"mode.*expected batch_size 2 or more \(got 1\)"):
        dlt.doctor(make, _images(), steps=2, batch_size=1, verify=False)


def _he_relu_cnn() -> nn.Module:
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                          nn.ReLU(), nn.Flatten(), nn.Linear(8 * 32 * 32, 10))
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            nn.init.zeros_(m.bias)
    return model


def test_a_he_relu_cnn_on_cifar_like_images_has_no_dead_units_by_its_kernel_size():
    """Regression: the dead-unit statistics counted a convolution's units as its fan_out
    (out_channels x kernel size: 72 for 8 channels of 3x3) while ``dead_frac`` is a fraction
    of its 8 channels, so 5 of 8 channels off after 20 steps read as 'died in training, 8.09
    standard errors' and a healthy He-initialized ReLU CNN on CIFAR-like 3x32x32 images (train
    loss 0.002) got a dead_relu finding; with 8 units it is 2.7 standard errors, within
    chance."""
    import numpy as np

    g = np.random.default_rng(0)
    templates = g.normal(size=(10, 3, 32, 32)).astype(np.float32)
    y = g.integers(0, 10, 400)
    x = (templates[y] + 2 * g.normal(size=(400, 3, 32, 32))).astype(np.float32)
    diag = dlt.doctor(_he_relu_cnn, (x, y), steps=20, verify=False)
    assert diag.finding("dead_relu") is None, str(diag)
    assert diag.healthy, str(diag)


def test_the_dead_unit_count_of_a_layer_is_its_units_not_its_fan_out():
    """The rules read a layer's units from ``dense.units`` where given (a convolution's
    channels), else ``dense.fan_out`` (a Dense layer's units, the NumPy engine's)."""
    from types import SimpleNamespace

    from depthlab.diagnosis.rules import _layer_units
    from depthlab.torch.doctor import _Fans

    ctx = SimpleNamespace(points=[SimpleNamespace(index=1, dense=_Fans(27, 72, units=8)),
                                  SimpleNamespace(index=2, dense=_Fans(64, 32)),
                                  SimpleNamespace(index=3, dense=None)])
    assert _layer_units(ctx) == {1: 8, 2: 32}
