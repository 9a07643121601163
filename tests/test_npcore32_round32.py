"""Round 32 (npcore32): the NumPy engine's researcher-facing API against direct computations.

Each test checks what a user reads (a finding's text, a number) against a computation written
here: a forward pass, a closed form.
"""

from __future__ import annotations

import numpy as np

import depthlab as dl


def _blobs(n: int = 300, d: int = 8, k: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    return x, (x @ rng.standard_normal((d, k))).argmax(1)


def test_a_step_network_is_not_told_its_output_ignores_its_input():
    """The Heaviside step has f' = 0 everywhere: every unit reads "dead" (zero derivative on
    every probe example), but its output still follows the input. The finding said "No
    signal passes that layer: the network's output does not depend on its input" and blamed
    units "already off at initialization" as in deep ReLU nets; it must say that no gradient
    passes the step, and not that the output ignores the input."""
    x, y = _blobs()
    cfg = dict(sizes=[8, 32, 32, 3], activation="step", init="glorot_uniform", seed=0)
    net = dl.mlp(**cfg)
    # a direct check of the claim: the step units' outputs (and the network's) vary with x
    hidden = (x[:50] @ net.dense_layers()[0].W.value > 0).astype(float)
    assert 0.1 < hidden.mean() < 0.9 and hidden.std(axis=0).min() > 0
    out = net.predict(x[:50].astype(np.float32))
    assert np.ptp(out, axis=0).min() > 0
    d = dl.doctor(cfg, (x, y), steps=30, probe_every=10)
    (f,) = [f for f in d.findings if f.kind == "dead_relu"]
    assert "does not depend on its input" not in f.message
    assert "f'(s) = 0 everywhere" in f.message and "no gradient" in f.message
    assert "already off at initialization" not in f.prescription_text
    assert "ReLU" not in f.prescription_text and "step" in f.prescription_text
    assert f.prescription.get("activation") == "leaky_relu"


def _dead_second_layer(residual: bool):
    """A ReLU network whose second hidden layer is off for every input: its weights are made
    negative, and its input (a ReLU layer's output, or relu(x) in a residual branch) is >= 0."""
    net = dl.mlp([8, 32, 32, 32, 3], "relu", "he_normal", residual=residual, seed=0)
    w = net.dense_layers()[1].W
    w.value[...] = -np.abs(w.value)
    return net


def test_a_dead_layer_inside_a_residual_branch_is_not_said_to_cut_the_output_off():
    """A residual block whose ReLU units are all off passes its input on through the skip
    connection: the output still follows the input (checked directly) and the network learns.
    The dead_relu finding said "the network's output does not depend on its input"; in a
    plain network, where it is true (checked directly), it still says so."""
    x, y = _blobs()
    xs = x[:40].astype(np.float32)
    res = _dead_second_layer(residual=True)
    assert np.ptp(res.predict(xs), axis=0).min() > 0.1  # the output follows the input
    d = dl.doctor(res, (x, y), steps=30, probe_every=10)
    (f,) = [f for f in d.findings if f.kind == "dead_relu"]
    assert f.evidence["dead_frac_worst"] == 1.0
    assert "does not depend on its input" not in f.message
    assert "skip connection" in f.message
    plain = _dead_second_layer(residual=False)
    assert np.ptp(plain.predict(xs), axis=0).max() == 0.0  # the claim is true here
    d = dl.doctor(plain, (x, y), steps=30, probe_every=10)
    (f,) = [f for f in d.findings if f.kind == "dead_relu"]
    assert "the network's output does not depend on its input" in f.message



def _measured_relative_grad_std(net, x, y) -> np.ndarray:
    df = dl.probe(net, x, y, percentiles=())
    g = df[df.quantity == "grad_pre_std"].sort_values("layer")["value"].to_numpy()
    return g / g[-1]


def test_predict_gradients_of_a_network_whose_weights_left_its_recipe():
    """dl.lsuv rescales a Glorot ReLU network's weights in place (its config still says
    glorot_uniform); predict_gradients(net) predicted the recipe's vanishing gradients (layer 1
    at 0.0014x the top in 20 layers) for a network whose gradients measure 0.93x. The
    prediction must follow the weights the network has (each layer's E[W^2]), and say so; a
    network still at its recipe keeps the recipe's numbers."""
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((256, 32)), rng.integers(0, 10, 256)
    fresh = dl.mlp([32] + [128] * 12 + [10], "relu", "glorot_uniform", dtype="float64", seed=1)
    recipe = dl.theory.predict_gradients(fresh.config)
    assert dl.theory.predict_gradients(fresh).relative_std == recipe.relative_std
    assert recipe.relative_std[0] < 0.03  # the recipe's vanishing profile
    net = dl.mlp([32] + [128] * 12 + [10], "relu", "glorot_uniform", dtype="float64", seed=1)
    dl.lsuv(net, x)
    pred = dl.theory.predict_gradients(net)
    meas = _measured_relative_grad_std(net, x, y)
    assert pred.covered and "weights" in pred.note
    assert np.allclose(pred.relative_std, meas, rtol=0.3)
    # each layer scaled by its own factor, as a direct rescale
    scaled = dl.mlp([32] + [128] * 12 + [10], "tanh", "glorot_uniform", dtype="float64", seed=1)
    for k, d in enumerate(scaled.dense_layers()):
        d.W.value *= 1.0 + 0.1 * k
    pred = dl.theory.predict_gradients(scaled)
    meas = _measured_relative_grad_std(scaled, x, y)
    assert np.allclose(pred.relative_std, meas, rtol=0.3)


def test_divergence_advice_does_not_credit_an_init_the_weights_have_left():
    """A He-built ReLU network whose weights were scaled x10 by hand (100x He's variance)
    diverges; the advice said "the network already has a variance-preserving initializer,
    he_normal" from its recipe. It must not; a network still at its He draw keeps it."""
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((200, 8)), rng.integers(0, 3, 200)
    net = dl.mlp([8] + [64] * 10 + [3], "relu", "he_normal", seed=0)
    for d in net.dense_layers():
        d.W.value *= 10.0
    w = net.dense_layers()[1].W.value
    assert np.mean(w.astype(np.float64) ** 2) / (2.0 / 64) > 50  # far from He's variance
    hist = dl.fit(net, x, y, epochs=2, lr=0.01)
    assert hist.divergence is not None
    assert "already has a variance-preserving initializer" not in hist.divergence.message
    fresh = dl.mlp([8] + [64] * 10 + [3], "relu", "he_normal", seed=0)
    hist = dl.fit(fresh, x * 1e3, y, epochs=2, lr=10.0)
    assert hist.divergence is not None
    assert "already has a variance-preserving initializer, he_normal" in \
        hist.divergence.message
