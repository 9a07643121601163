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


def test_doctor_on_a_network_of_several_activations_names_each_layers_own():
    # a hand-built tanh -> relu -> sigmoid net with N(0, 9) weights: "2 of 3 hidden tanh layers
    # are saturated" (layer 3 is sigmoid) and "layer 2 is 158x the glorot_uniform variance
    # recommended for tanh units" (layer 2 is relu: He's is recommended, 72x)
    from depthlab.layers import Activation, Dense

    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((200, 8)), rng.integers(0, 4, 200)
    big = dl.initializer("normal", std=3.0)
    seeds = iter(range(10))
    acts = ["tanh", "relu", "sigmoid"]
    layers = [Dense(8, 16, init=big, rng=next(seeds))]
    for i, name in enumerate(acts):
        layers += [Activation(name), Dense(16, 16 if i < 2 else 4, init=big, rng=next(seeds))]
    net = dl.Network(layers, n_inputs=8)
    found = {f.kind: f for f in dl.doctor(net, (x, y), steps=20).findings}
    sat = found["saturation"]
    assert sat.layers == [1, 3]
    assert "tanh" in sat.message and "sigmoid" in sat.message
    assert "hidden tanh layers" not in sat.message
    mis = found["init_mismatch"]
    worst = mis.evidence["worst_layer"]
    own = acts[worst - 1]
    assert f"recommended for {own} units" in mis.message
    # the ratio is the layer's own: its Var(W) over its own activation's recommended variance
    w = net.dense_layers()[worst - 1].W.value
    rec = {"tanh": "glorot_uniform", "relu": "he_normal", "sigmoid": "glorot_uniform"}[own]
    assert f"the {rec} variance" in mis.message
    # over the nearer of its two modes, the recommended variance for a square layer of fan_in
    # and of fan_out units (He: 2/fan_in, 2/fan_out; Glorot: its forward and backward
    # conditions 1/fan_in, 1/fan_out; dochealth34b), when outside both
    modes = [dl.initializers.weight_variance(rec, n, n) for n in w.shape]
    var = float(w.var())
    want = var / max(modes) if var > max(modes) else var / min(modes)
    assert mis.evidence["variance_ratio"] == pytest.approx(want, rel=0.05)


def test_doctor_finds_saturated_layers_behind_a_first_relu_layer():
    # relu -> tanh -> sigmoid with N(0, 9) weights: the tanh layer 97% saturated, the loss far
    # above a constant prediction's; no saturation finding (the rule read the first layer's
    # activation only, relu, which cannot saturate)
    from depthlab.layers import Activation, Dense

    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((200, 8)), rng.integers(0, 4, 200)
    big, seeds = dl.initializer("normal", std=3.0), iter(range(10))
    layers = [Dense(8, 16, init=big, rng=next(seeds))]
    for i, name in enumerate(["relu", "tanh", "sigmoid"]):
        layers += [Activation(name), Dense(16, 16 if i < 2 else 4, init=big, rng=next(seeds))]
    net = dl.Network(layers, n_inputs=8)
    found = {f.kind: f for f in dl.doctor(net, (x, y), steps=20).findings}
    sat = found["saturation"]
    assert 2 in sat.layers and 1 not in sat.layers
    assert "layer 2: tanh" in sat.message


def test_doctor_finds_dead_relu_layers_behind_a_first_tanh_layer():
    # tanh -> relu -> relu, the first relu layer fed by biases of -3: 94% of its units dead on
    # every example; the doctor said only "lr_too_low" (the rule read the first layer's tanh,
    # which has no zero-derivative region)
    from depthlab.layers import Activation, Dense

    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((200, 8)), rng.integers(0, 4, 200)
    neg, seeds = dl.initializer("constant", value=-3.0), iter(range(10))
    layers = [Dense(8, 16, init="he_normal", rng=next(seeds))]
    for i, name in enumerate(["tanh", "relu", "relu"]):
        layers += [Activation(name), Dense(16, 16 if i < 2 else 4, init="he_normal",
                                           rng=next(seeds), bias_init=neg if i == 0 else "zeros")]
    net = dl.Network(layers, n_inputs=8)
    found = {f.kind: f for f in dl.doctor(net, (x, y), steps=20).findings}
    assert 2 in found["dead_relu"].layers and 1 not in found["dead_relu"].layers


def test_doctor_finds_the_mean_shift_of_sigmoid_layers_behind_a_first_tanh_layer():
    # tanh then five sigmoid layers, N(0, 1) weights: sigmoid means up to ~0.5, no mean_shift
    # finding (the rule read the first layer's tanh, which is zero-centred)
    from depthlab.layers import Activation, Dense

    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((200, 8)), rng.integers(0, 4, 200)
    acts, seeds = ["tanh"] + ["sigmoid"] * 5, iter(range(20))
    layers = [Dense(8, 32, init="normal", rng=next(seeds))]
    for i, name in enumerate(acts):
        layers += [Activation(name), Dense(32, 32 if i < 5 else 4, init="normal",
                                           rng=next(seeds))]
    net = dl.Network(layers, n_inputs=8)
    found = {f.kind: f for f in dl.doctor(net, (x, y), steps=20).findings}
    shift = found["mean_shift"]
    assert 1 not in shift.layers and shift.layers
    assert shift.message.startswith("sigmoid activations")
