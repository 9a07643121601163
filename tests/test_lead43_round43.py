"""Round 43, lead: integration fixes between helpers' work."""

from __future__ import annotations

import pytest

import depthlab as dl
from depthlab.layers import Activation, BatchNorm, Dense


@pytest.mark.parametrize("kw", [{"affine": False}, {"track_running_stats": False}])
def test_save_refuses_a_batchnorm_option_dl_mlp_cannot_rebuild(kw, tmp_path) -> None:
    """A BatchNorm without gamma/beta or without running statistics is not what dl.mlp builds:
    saving it as an ordinary BatchNorm recipe would load another network (or fail to load)."""
    net = dl.Network([Dense(4, 6, bias=False, rng=0), BatchNorm(6, **kw), Activation("relu"),
                      Dense(6, 3, rng=1)])
    with pytest.raises(TypeError, match=r"layer 1 \(BatchNorm: .*differs from what dl.mlp"):
        dl.save(net, tmp_path / "m")
    assert not list(tmp_path.iterdir())


def test_save_still_takes_a_default_batchnorm_network(tmp_path) -> None:
    net = dl.mlp([4, 6, 3], activation="relu", batchnorm=True, seed=0)
    dl.save(net, tmp_path / "m")
    back = dl.load(tmp_path / "m")
    import numpy as np
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    assert np.array_equal(net.predict(x), back.predict(x))
