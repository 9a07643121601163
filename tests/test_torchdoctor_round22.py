"""Round 22 (torchdoctor22): the doctors' known answers on models written as an outside
test-writer would write them."""

from __future__ import annotations

import numpy as np
from torch import nn

import depthlab.torch as dlt
from depthlab.data import load_dataset


def _digit_images(n=300):
    ds = load_dataset("digits", seed=0)
    return ds.x_train[:n].reshape(-1, 1, 8, 8).astype(np.float32), ds.y_train[:n]


def test_he_init_in_fan_out_mode_is_a_he_init_not_a_mismatch():
    """kaiming_normal_(mode="fan_out", nonlinearity="relu") (torchvision's ResNet init; He et
    al. 2015 sec. 2.2: either fan preserves a variance) on a 3-layer ReLU CNN whose first
    convolution has fan_in 9 and fan_out 144: its variance is 2/144, 1/16 of 2/fan_in. It was
    judged against 2/fan_in alone: 'init_mismatch (layer 1): ... 0.0637x the he_normal
    variance'; a healthy He-initialized CNN has no findings."""
    x, y = _digit_images()

    def make():
        m = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(32 * 16, 10))
        for mod in m.modules():
            if isinstance(mod, nn.Conv2d):
                nn.init.kaiming_normal_(mod.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(mod.bias)
        return m

    diag = dlt.doctor(make, (x, y), optimizer=("sgd", {"lr": 0.05}), steps=20, batch_size=32,
                      seed=1, verify=False, probe_every=10)
    assert diag.healthy, str(diag)


def test_a_variance_outside_both_he_fans_is_still_a_mismatch():
    """The same CNN with its first convolution at 1/16 of 2/fan_out (1/256 of He's fan_in
    variance): outside both fans' variances, still an init mismatch, its ratio the nearer
    fan's (1/16), and the fan_in-mode He init of the layer still judged 1."""
    x, y = _digit_images()

    def make():
        m = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(16 * 64, 10))
        nn.init.normal_(m[0].weight, 0.0, (2.0 / 144) ** 0.5 / 4)
        nn.init.kaiming_normal_(m[2].weight, nonlinearity="relu")
        return m

    diag = dlt.doctor(make, (x, y), optimizer=("sgd", {"lr": 0.05}), steps=20, batch_size=32,
                      verify=False, probe_every=10)
    f = diag.finding("init_mismatch")
    assert f is not None and f.layers == [1], str(diag)
    assert 1 / 32 < f.evidence["variance_ratio"] < 1 / 8
