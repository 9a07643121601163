"""Round 33b (mixcure33): the doctor's cures for a network of several hidden activations."""
import functools

import numpy as np
import pytest

import depthlab as dl

ACTS = ["tanh", "relu", "sigmoid"]
REC = {"tanh": "glorot_uniform", "relu": "he_normal", "sigmoid": "glorot_uniform"}


def _mixed(std, acts=tuple(ACTS)):
    """8 -> 16 -> 16 -> 16 -> 4 with the hidden activations ``acts`` and N(0, std^2) weights."""
    from depthlab.layers import Activation, Dense
    init, seeds = dl.initializer("normal", std=std), iter(range(10))
    layers = [Dense(8, 16, init=init, rng=next(seeds))]
    for i, name in enumerate(acts):
        layers += [Activation(name), Dense(16, 16 if i < 2 else 4, init=init, rng=next(seeds))]
    return dl.Network(layers, n_inputs=8)


@functools.lru_cache(maxsize=1)
def _mixed_findings():
    """The findings of the tanh -> relu -> sigmoid net with N(0, 0.0025) weights (shared)."""
    return {f.kind: f for f in dl.doctor(_mixed(0.05), _data(), steps=20).findings}


def _data():
    rng = np.random.default_rng(0)
    return rng.standard_normal((200, 8)), rng.integers(0, 4, 200)


def test_numpy_cures_of_a_mixed_net_name_each_layers_own_initializer():
    # tanh -> relu -> sigmoid with N(0, 0.0025) weights: init_mismatch said "layer 2 is 0.0166x
    # the he_normal variance recommended for relu units" and prescribed glorot_uniform for the
    # whole net; vanishing_gradients "Initialize with glorot_uniform" (the first layer's)
    found = _mixed_findings()
    for kind in ("init_mismatch", "vanishing_gradients"):
        f = found[kind]
        assert f.prescription["init"] == "matched", (kind, f.prescription)
        for i, name in enumerate(ACTS, 1):
            assert f"layer {i} ({name}): {REC[name]}" in f.prescription_text, (kind, f)
    assert "layer 1: tanh, layer 2: relu, layer 3: sigmoid" in found["vanishing_gradients"].message


def test_numpy_cures_of_a_single_activation_net_unchanged():
    x, y = _data()
    net = dl.mlp([8, 16, 16, 16, 4], activation="tanh", init=dl.initializer("normal", std=0.05),
                 seed=0)
    found = {f.kind: f for f in dl.doctor(net, (x, y), steps=20).findings}
    f = found["init_mismatch"]
    assert f.prescription == {"init": "glorot_uniform"}
    assert f.prescription_text.startswith("Use glorot_uniform, Glorot & Bengio (2010)")


def test_torch_cure_of_a_mixed_model_reinitializes_each_layer_for_its_own_activation():
    torch = pytest.importorskip("torch")
    from torch import nn

    from depthlab.torch import prescriptions as trx
    from depthlab.torch.train import TorchTrainSpec

    # the rules' cure of a torch model's init finding is applied by translate + apply (what
    # dlt.doctor(verify=True) runs): here the NumPy finding's, its rules being shared
    f = _mixed_findings()["init_mismatch"]
    # each Linear's variance after the cure is its own activation's formula (160,000 weights a
    # layer: the sample variance tells he_normal's 2/fan_in from Glorot's 2/(fan_in + fan_out))
    changes = trx.translate(f.prescription, TorchTrainSpec())
    wide = nn.Sequential(nn.Linear(400, 400), nn.Tanh(), nn.Linear(400, 400), nn.ReLU(),
                         nn.Linear(400, 400), nn.Sigmoid(), nn.Linear(400, 4))
    torch.manual_seed(1)
    wide, _ = trx.apply(changes, wide, TorchTrainSpec(), torch.randn(8, 400))
    var = [float(m.weight.var()) for m in wide if isinstance(m, nn.Linear)]
    want = [dl.initializers.weight_variance(REC[a], 400, 400) for a in ACTS]
    assert var[:3] == pytest.approx(want, rel=0.05)
    assert want[1] == pytest.approx(2 * want[0])  # he (2/400) vs glorot (2/800): told apart


def test_step_layer_behind_a_tanh_layer_is_told_flat_everywhere():
    # tanh -> step -> tanh: layer 2 (step) passes no gradient; the dead-unit text read the first
    # layer's activation (tanh, not flat) and told of units off, not of f' = 0 everywhere
    net = _mixed(0.5, ("tanh", "step", "tanh"))
    f = next(f for f in dl.doctor(net, _data(), steps=10).findings if f.kind == "dead_relu")
    assert f.layers == [2]
    assert "step has f'(s) = 0 everywhere" in f.message
    assert "no update to the weights into layer 2 or any layer below it" in f.message
    assert f.prescription_text.startswith("Use leaky_relu: step's derivative is 0")


def test_dead_relu_cure_of_a_mixed_net_reinitializes_each_layer_for_its_own_activation():
    # tanh -> relu -> relu, N(0, 0.0025) weights, lr 0.5: layer 3's units die; the cure was
    # "Initialize with he_normal" for the whole net, the tanh layer included (Glorot's its own)
    net = _mixed(0.05, ("tanh", "relu", "relu"))
    f = next(f for f in dl.doctor(net, _data(), steps=20, lr=0.5).findings
             if f.kind == "dead_relu")
    assert f.prescription == {"init": "matched"}
    assert ("layer 1 (tanh): glorot_uniform; layer 2 (relu): he_normal; layer 3 (relu): "
            "he_normal") in f.prescription_text


def test_init_of_layers_behind_a_first_step_layer_is_judged():
    # step -> relu -> tanh with N(0, 0.0004) weights: the relu layer at 0.0027x He's variance;
    # no init_mismatch (the init ratios were read only when the first layer's activation, the
    # step, has a recommended initializer)
    net = _mixed(0.02, ("step", "relu", "tanh"))
    f = next(f for f in dl.doctor(net, _data(), steps=10).findings if f.kind == "init_mismatch")
    assert f.layers == [2, 3]
    w = net.dense_layers()[1].W.value
    want = float(w.var()) / dl.initializers.weight_variance("he_normal", *w.shape)
    assert f.evidence["worst_layer"] == 2
    assert f.evidence["variance_ratio"] == pytest.approx(want, rel=0.05)
    assert "recommended for relu units" in f.message
