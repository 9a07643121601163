"""Round 33 (nphunt33): the NumPy side's public Python API as a practitioner uses it."""

import numpy as np
import pytest

import depthlab as dl


def _data():
    rng = np.random.default_rng(0)
    return rng.standard_normal((10, 4)), np.arange(10) % 3


def test_fit_names_an_optimizer_built_on_part_of_the_network_and_what_to_do():
    # a practitioner freezing layers as in torch (optim.SGD(model.fc.parameters())) passed an
    # optimizer over the last layer only: "SGD instance was built on other parameters than the
    # ones given" (fit's user gave no parameters)
    x, y = _data()
    net = dl.mlp([4, 5, 3], seed=0)
    opt = dl.optimizer("sgd", net.parameters()[-2:], lr=0.1)
    before = [p.value.copy() for p in net.parameters()]
    with pytest.raises(ValueError) as err:
        dl.fit(net, x, y, optimizer=opt)
    msg = str(err.value)
    assert "2 of the network's 4 parameters" in msg
    assert "not on dense1.W" in msg
    assert "net.parameters()" in msg and "net.backward" in msg  # the two ways on
    assert all(np.array_equal(a, p.value) for a, p in zip(before, net.parameters()))


def test_fit_names_an_optimizer_built_on_another_network():
    x, y = _data()
    net, other = dl.mlp([4, 5, 3], seed=0), dl.mlp([4, 5, 3], seed=1)
    with pytest.raises(ValueError, match=r"none of this network's 4 parameters.*another "
                                         r"network.*net\.parameters\(\)"):
        dl.fit(net, x, y, optimizer=dl.optimizer("adam", other.parameters(), lr=0.1))
