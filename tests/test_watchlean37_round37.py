"""Round 37 (watchlean37): a ``PixelShuffle``/``PixelUnshuffle`` between a layer and its
activation (an ESPCN/SRGAN upsampler, ``Conv -> PixelShuffle(r) -> PReLU``) carries the layer's
output to that activation: the layer gets its ``act_*``, ``inactive_frac`` and ``dead_frac``
rows, ``dead_frac`` counted over the layer's own channels (channel ``c r^2 + i r + j`` of the
conv is output channel ``c`` at offset ``(i, j)``). Before, the rows were missing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import depthlab.torch as dlt


def _data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(8, 3, 6, 6, generator=g), torch.randint(0, 5, (8,), generator=g)


def _model(act: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.PixelShuffle(2), act,
                      nn.Conv2d(4, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 144, 5))
    with torch.no_grad():  # some conv channels dead on every entry: a dead_frac that tells
        m[0].bias[:5] = -50.0
    return m


def _rows(df, module: str) -> dict[str, float]:
    sub = df[df.module == module]
    return dict(zip(sub.quantity, sub.value))


@pytest.mark.parametrize("act", [nn.PReLU, nn.ReLU, nn.Tanh])
def test_pixel_shuffle_carries_the_layer_output_to_its_activation(act):
    x, y = _data()
    model = _model(act())
    df = dlt.probe(model, x, y, nn.CrossEntropyLoss())
    rows = _rows(df, "0")
    s32 = model[0](x).detach()
    a = model[2](nn.functional.pixel_shuffle(s32, 2)).detach().double()
    s = s32.double()
    assert rows["act_mean"] == pytest.approx(float(a.mean()), rel=1e-6, abs=1e-9)
    assert rows["act_std"] == pytest.approx(float(a.std(unbiased=False)), rel=1e-6)
    if act is not nn.Tanh:
        # dead: a conv channel (not an output channel of the shuffle) with s <= 0 everywhere
        dead = float((s.amax(dim=(0, 2, 3)) <= 0).double().mean())
        assert dead == 5 / 16
        # (a PReLU's negative side has slope 0.25: no unit is dead, as right after a conv)
        assert rows["dead_frac"] == (dead if act is nn.ReLU else 0.0)
        assert rows["inactive_frac"] == pytest.approx(float((s <= 0).double().mean()))
    # pre_* stay the conv's own output
    assert rows["pre_mean"] == pytest.approx(float(s.mean()), rel=1e-6, abs=1e-9)


def test_watch_rows_through_pixel_shuffle_and_training_unchanged():
    x, y = _data()
    plain, watched = _model(nn.PReLU()), _model(nn.PReLU())
    watch = dlt.Watch(watched, every=2, theory=False)
    for model, w in ((plain, None), (watched, watch)):
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        for _ in range(3):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            if w is not None:
                w.step(loss)
            opt.step()
    watch.close()
    for a, b in zip(plain.parameters(), watched.parameters()):
        assert torch.equal(a, b)
    df = watch.frame()
    for step in (0, 2):
        rows = _rows(df[df.step == step], "0")
        assert "dead_frac" in rows and "act_std" in rows


def test_pixel_unshuffle_of_a_layer_output_is_carried_too():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.PixelUnshuffle(2), nn.ReLU(),
                          nn.Flatten(), nn.Linear(16 * 9, 5))
    x, y = _data()
    df = dlt.probe(model, x, y, nn.CrossEntropyLoss())
    rows = _rows(df, "0")
    s = model[0](x).detach().double()
    assert rows["dead_frac"] == float((s.amax(dim=(0, 2, 3)) <= 0).double().mean())
    np.testing.assert_allclose(rows["act_mean"], float(s.clamp(min=0).mean()), rtol=1e-6)


def test_channel_shuffle_of_a_layer_output_is_carried_too():
    """ShuffleNet's ``ChannelShuffle(g)`` between a conv and its ReLU: dead_frac per conv
    channel (channel k of the conv is output channel (k mod C/g) g + k div (C/g))."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 12, 3, padding=1), nn.ChannelShuffle(4), nn.ReLU(),
                          nn.Flatten(), nn.Linear(12 * 36, 5))
    with torch.no_grad():
        model[0].bias[:3] = -50.0
    x, y = _data()
    df = dlt.probe(model, x, y, nn.CrossEntropyLoss())
    rows = _rows(df, "0")
    s = model[0](x).detach().double()
    assert rows["dead_frac"] == float((s.amax(dim=(0, 2, 3)) <= 0).double().mean()) == 0.25
    np.testing.assert_allclose(rows["act_mean"], float(s.clamp(min=0).mean()), rtol=1e-6)
