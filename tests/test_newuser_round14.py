"""A new user's walk through README.md, round 14: every documented example and command tried
with the variations a user tries next (other data sets, options, wrong inputs, Ctrl-C in the
middle of a long command). The bugs it found, one regression test each."""

from __future__ import annotations

import pytest


def test_discover_lists_layers_in_one_short_line_each():
    """README: ``dlt.discover(model, x)`` lists the layers. Its ``LayerInfo`` repr was the
    dataclass's: the whole ``owner`` module and every weight tensor, so printing the list for
    the README's 3-layer MLP gave ~60 lines of numbers. Now one line per layer, the weights
    as their shapes."""
    torch = pytest.importorskip("torch")
    from torch import nn

    import depthlab.torch as dlt

    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(inplace=True), nn.Linear(64, 64),
                          nn.Tanh(), nn.Linear(64, 3))
    layers = dlt.discover(model, torch.randn(8, 20))
    text = repr(layers)
    assert "tensor(" not in text and "Parameter containing" not in text, text
    lines = [repr(info) for info in layers]
    assert all("\n" not in line and len(line) < 160 for line in lines), lines
    assert lines[0] == ("LayerInfo(index=1, name='0', kind='Linear', weights=[(64, 20)], "
                        "feature_axis=-1, norm=None, activation='1', calls=1)")
    assert "weights=[(3, 64)]" in lines[2] and "activation=None" in lines[2]
