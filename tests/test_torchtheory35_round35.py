"""Round 35 (torchtheory35): dlt.predict against autograd on inputs nobody tried before."""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import depthlab.torch as dlt  # noqa: E402


def _ratio(build, make_x, seeds, layer):
    """sqrt(mean measured^2 / mean predicted^2) of ``layer``'s grad_pre_std over seeds."""
    meas, pred = [], []
    for s in seeds:
        torch.manual_seed(s)
        model = build().double()
        x = make_x()
        y = torch.randint(0, 10, (x.shape[0],))
        df = dlt.predict(model, x, y, "cross_entropy")
        row = df[(df.layer == layer) & (df.quantity == "grad_pre_std")].iloc[0]
        meas.append(row.value ** 2)
        pred.append(row.predicted ** 2)
    return math.sqrt(np.mean(meas) / np.mean(pred))


def test_unit_means_wider_than_the_batch_spread_keep_the_slope_of_a_saturating_unit():
    # inputs of mean 5 and std 0.01: every example alike, so each tanh unit of layer 1 sits
    # at its own W_j E[x] + b_j, spread N(0, ~8) over units, and hardly moves over the batch.
    # E tanh'(s)^2 over those units is ~0.18; 16 Gauss-Hermite atoms of the units' means
    # gave 0.07 (grad_pre_std of layer 1 predicted 0.6x the measurement)
    def build():
        return nn.Sequential(nn.Linear(64, 128), nn.Tanh(), nn.Linear(128, 128), nn.Tanh(),
                             nn.Linear(128, 10))

    r = _ratio(build, lambda: 5.0 + 0.01 * torch.randn(64, 64, dtype=torch.float64),
               (0, 1), 1)
    assert 0.8 < r < 1.25, r


def test_a_hard_edged_activation_of_alike_examples_gets_its_slope_from_the_units_spread():
    # Hardtanh's slope is 1 on |s| < 1 and 0 beyond: with every example alike, the fraction of
    # units inside is P(|N(0, ~8)| < 1) ~ 0.28; atoms of the units' means put none there
    # (layer 1's grad_pre_std was predicted 0.1x the measurement)
    def build():
        return nn.Sequential(nn.Linear(64, 128), nn.Hardtanh(), nn.Linear(128, 128),
                             nn.Hardtanh(), nn.Linear(128, 10))

    r = _ratio(build, lambda: 5.0 + 0.01 * torch.randn(64, 64, dtype=torch.float64), (0,), 1)
    assert 0.75 < r < 1.33, r


def test_the_approximation_note_names_an_overlapping_pool_under_a_global_average_pool():
    # a global average pool gives a channel's positions alike gradients, which an
    # AvgPool2d(3, 2, 1) below it adds up over its overlapping windows: the conv below was
    # measured 1.44x the prediction (3 seeds, 32 channels, 16x16), with a flatten head 0.97x;
    # the note said only that pooling windows are taken as independent draws
    def build(head):
        return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AvgPool2d(3, 2, 1),
                             nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), *head)

    torch.manual_seed(0)
    x = torch.randn(4, 3, 8, 8)
    gap = dlt.predict(build([nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10)]), x)
    note = gap.attrs["approximation"]
    assert "'2' (AvgPool2d), whose windows overlap" in note, note
    assert "1.44x" in note, note
    flat = dlt.predict(build([nn.Flatten(), nn.Linear(8 * 16, 10)]), x)
    assert "overlap" not in flat.attrs["approximation"]


def test_a_single_image_into_conv_batchnorm_is_normalized_over_its_positions():
    # BatchNorm2d normalizes a channel over the batch and the positions: one image still has
    # 64 values per channel. The input's batch variance was taken over the examples only, 0
    # for a batch of one, so BN's 1 / (qb + eps) was eps's: layer 1's grad_pre_std predicted
    # ~150x the measurement
    def build():
        return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                             nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                             nn.Flatten(), nn.Linear(16 * 64, 10))

    r = _ratio(build, lambda: torch.randn(1, 3, 8, 8, dtype=torch.float64), (0,), 1)
    assert 0.8 < r < 1.25, r
