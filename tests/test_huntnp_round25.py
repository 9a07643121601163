"""Round 25 (huntnp25): NumPy engine vs PyTorch under settings nobody combined yet."""

from __future__ import annotations

import pytest


def test_from_torch_softmax_over_the_batch_is_refused_for_its_dim_not_its_class():
    # torch's own nn.Softmax(dim=0) was refused as "torch.nn.modules.activation.Softmax, not
    # torch.nn's", which contradicts the accepted list naming Softmax
    torch = pytest.importorskip("torch")
    from depthlab.bridge import from_torch

    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Softmax(dim=0))
    with pytest.raises(TypeError) as info:
        from_torch(model)
    msg = str(info.value)
    assert "not torch.nn's" not in msg
    assert "dim 0" in msg and "Softmax(dim=1)" in msg


def test_mc_dropout_refuses_a_softmax_the_network_already_applies():
    # output="softmax" on a network ending in softmax squashed the probabilities twice,
    # silently (3 classes: means ~0.32/0.34/0.34 instead of 0.29/0.35/0.35)
    import numpy as np

    import depthlab as dl

    x = np.random.default_rng(0).normal(size=(5, 4))
    for act in ("softmax", "sigmoid"):
        net = dl.mlp([4, 8, 3], dropout=0.5, output_activation=act, seed=0)
        with pytest.raises(ValueError, match=f"already ends in {act}"):
            dl.mc_dropout_predict(net, x, T=4, seed=0, output=act)
        mean, _ = dl.mc_dropout_predict(net, x, T=4, seed=0)  # its own outputs: accepted
        assert mean.shape == (5, 3)
    logits = dl.mlp([4, 8, 3], dropout=0.5, seed=0)
    mean, _ = dl.mc_dropout_predict(logits, x, T=4, seed=0, output="softmax")
    np.testing.assert_allclose(mean.sum(1), 1, rtol=1e-5)
