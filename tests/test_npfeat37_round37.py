"""npfeat37 (round 37): dl.doctor takes fit's direct optimizer hyperparameters
(momentum=0.9), and the theory prediction covers random zero-mean biases."""
from __future__ import annotations

import numpy as np
import pytest

import depthlab as dl


def _data(n: int = 64, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 4))
    y = (x[:, 0] + x[:, 1] > 0).astype(int)
    return x[:48], y[:48], x[48:], y[48:]




def _loss_recorder():
    from depthlab.training.trainer import Callback

    class Rec(Callback):
        def __init__(self) -> None:
            self.losses: list[float] = []

        def after_update(self, trainer, step, loss) -> None:
            self.losses.append(loss)
    return Rec()


def test_doctor_takes_fits_direct_hyperparameters_and_trains_as_fit() -> None:
    # was TypeError "doctor() got an unexpected keyword argument 'momentum'"
    x, y, xv, yv = _data()
    rec = _loss_recorder()
    dg = dl.doctor(dl.mlp([4, 6, 2], seed=1), (x, y, xv, yv), steps=12, lr=0.05,
                   momentum=0.9, batch_size=8, seed=3, callbacks=[rec])
    assert dg.settings["optimizer_kwargs"] == {"momentum": 0.9}
    fit_rec = _loss_recorder()
    dl.fit(dl.mlp([4, 6, 2], seed=1), x, y, xv, yv, loss="cross_entropy", lr=0.05,
           momentum=0.9, batch_size=8, seed=3, max_steps=12, callbacks=[fit_rec])
    assert len(rec.losses) == 12 and rec.losses == fit_rec.losses
    # the same as optimizer_kwargs (the existing spelling)
    rec2 = _loss_recorder()
    dl.doctor(dl.mlp([4, 6, 2], seed=1), (x, y, xv, yv), steps=12, lr=0.05,
              optimizer_kwargs={"momentum": 0.9}, batch_size=8, seed=3, callbacks=[rec2])
    assert rec2.losses == rec.losses


@pytest.mark.parametrize("kw, err, msg", [
    ({"momentum": 0.9, "optimizer_kwargs": {"momentum": 0.5}}, ValueError, "given twice"),
    ({"optimizer": "adam", "momentum": 0.9}, TypeError, "unknown argument 'momentum' for "
                                                        "optimizer 'adam'"),
    ({"momentum": -1.0}, ValueError, "invalid momentum value"),
    ({"momentm": 0.9}, TypeError, "did you mean 'momentum'"),
])
def test_doctor_refuses_direct_hyperparameters_as_fit_does(kw, err, msg) -> None:
    x, y, xv, yv = _data()
    with pytest.raises(err, match=msg) as e:
        dl.doctor(dl.mlp([4, 6, 2], seed=1), (x, y, xv, yv), steps=2, **kw)
    assert "\n" not in str(e.value)
    if "momentm" not in kw:  # fit's own message, word for word
        fit_kw = {k: v for k, v in kw.items()}
        with pytest.raises(err) as f:
            dl.fit(dl.mlp([4, 6, 2], seed=1), x, y, **fit_kw)
        assert str(f.value) == str(e.value)


def test_doctor_direct_hyperparameter_beside_an_optimizer_object_is_refused() -> None:
    x, y, xv, yv = _data()
    net = dl.mlp([4, 6, 2], seed=1)
    opt = dl.optimizer("sgd", net.parameters(), lr=0.1)
    with pytest.raises(TypeError, match="momentum=0.9 is not used"):
        dl.doctor(net, (x, y, xv, yv), optimizer=opt, momentum=0.9, steps=2)


def test_doctor_cures_keep_the_direct_hyperparameters() -> None:
    # a learning-rate cure re-trains with the same momentum
    import importlib

    doc = importlib.import_module("depthlab.diagnosis.doctor")

    seen: list[dict] = []
    real = doc._train

    def spy(net, config, data, settings, callbacks=()):
        seen.append(dict(settings))
        return real(net, config, data, settings, callbacks)

    x, y, xv, yv = _data()
    doc._train = spy
    try:
        dg = dl.doctor({"sizes": [4, 16, 16, 2], "activation": "relu"}, (x, y, xv, yv),
                       steps=10, lr=50.0, momentum=0.9, batch_size=8, verify=True)
    finally:
        doc._train = real
    assert dg.verifications, dg
    assert len(seen) >= 2
    for s in seen:
        if s["optimizer"] == "sgd":
            assert s["optimizer_kwargs"] == {"momentum": 0.9}, s
    assert any(s["lr"] != 50.0 for s in seen), seen


# -- (2) the theory prediction for random zero-mean Gaussian biases ----------------------------
def _grad_profile(net, n_in: int, seed: int) -> np.ndarray:
    from depthlab.losses import get_loss
    from depthlab.probes.stats import layer_quantities, measurement_pass, network_stats

    grad = layer_quantities(()).index("grad_pre_std")
    r = np.random.default_rng(seed + 100)
    x = r.standard_normal((200, n_in))
    measurement_pass(net, x, r.integers(0, 10, 200), get_loss("cross_entropy"))
    g = np.array([s[grad] for _, s in network_stats(net, ())])
    return g / g[-1]


@pytest.mark.parametrize("act, init, std, dist", [("tanh", "glorot_normal", 0.5, "normal"),
                                                  ("relu", "he_normal", 0.5, "normal"),
                                                  ("sigmoid", "glorot_normal", 1.0, "normal"),
                                                  ("tanh", "glorot_normal", 1.0, "uniform")])
def test_random_biases_are_predicted_and_match_measurement(act, init, std, dist) -> None:
    # was covered=False, "no prediction: bias_init = normal(std=0.5); the recursion assumes
    # zero biases": q_l = n v E[f^2] + sigma_b^2 covers zero-mean random biases
    from depthlab.initializers import Normal, Uniform

    W, D = 256, 10
    binit = Normal(std) if dist == "normal" else Uniform(std * 3**0.5)
    cfg = {"sizes": [W] + [W] * D + [10], "activation": act, "init": init,
           "bias_init": binit, "dtype": "float64"}
    p = dl.theory.predict_gradients(cfg)
    assert p.covered and "sigma_b^2" in p.note and dist in p.note, p.note
    ref = dl.theory.propagate([W] * (D + 1), act, init, bias_var=std**2,
                              bias_dist=dist)["grad_pre_var"]
    np.testing.assert_allclose(p.frame["grad_pre_var"], ref, rtol=1e-12)
    pred = np.asarray(p.relative_std, dtype=float)
    ratio = np.mean([_grad_profile(dl.mlp(seed=s, **cfg), W, s) / pred for s in range(3)],
                    axis=0)
    assert np.all(np.abs(ratio - 1) < 0.1), ratio
    if act != "relu":  # the zero-bias number is far off here (relu: the same profile)
        zero = np.asarray(dl.theory.predict_gradients({**cfg, "bias_init": "zeros"})
                          .relative_std, dtype=float)
        assert abs(ratio[0] * pred[0] / zero[0] - 1) > 0.25


def test_zero_bias_prediction_is_bit_identical_and_constant_biases_refused() -> None:
    from depthlab.initializers import Constant

    cfg = {"sizes": [16, 32, 32, 32, 2], "activation": "tanh"}
    p = dl.theory.predict_gradients({**cfg, "bias_init": "zeros"})
    ref = dl.theory.propagate([16, 32, 32, 32], "tanh", "glorot_uniform")
    assert p.covered and p.frame.equals(ref)
    q = dl.theory.predict_gradients({**cfg, "bias_init": Constant(0.5)})
    assert not q.covered and "zero-mean" in q.note, q.note
    for b in ("uniform", "he_uniform", "normal", "lecun_normal"):
        assert dl.theory.predict_gradients({**cfg, "bias_init": b}).covered, b
    assert not dl.theory.predict_gradients({**cfg, "bias_init": "normal",
                                            "residual": True}).covered


def test_propagate_takes_one_bias_variance_per_layer() -> None:
    a = dl.theory.propagate([8, 16, 16], "tanh", bias_var=0.3)
    b = dl.theory.propagate([8, 16, 16], "tanh", bias_var=[0.3, 0.3])
    assert a.equals(b)
    c = dl.theory.propagate([8, 16, 16], "tanh", bias_var=(0.0, 0.3))
    assert c.pre_var.iloc[0] == dl.theory.propagate([8, 16, 16], "tanh").pre_var.iloc[0]
    with pytest.raises(ValueError, match="bias_var has 3 entries"):
        dl.theory.propagate([8, 16, 16], "tanh", bias_var=[0.1, 0.2, 0.3])


def test_uniform_bias_moments_are_exact() -> None:
    # s = z + b, z ~ N(0, qw), b ~ U[-a, a]: symmetric, so relu's E[f^2] = q / 2 and
    # E[f'^2] = 1/2 exactly; tanh's differ from the Gaussian of the same variance
    u = dl.theory.propagate([64, 64, 64], "relu", "he_normal", bias_var=0.5,
                            bias_dist="uniform")
    np.testing.assert_allclose(u.act_sq, u.pre_var / 2, rtol=1e-10)
    np.testing.assert_allclose(u.deriv_sq, 0.5, rtol=1e-10)
    t_u = dl.theory.propagate([64, 64], "tanh", bias_var=2.0, bias_dist="uniform")
    t_n = dl.theory.propagate([64, 64], "tanh", bias_var=2.0)
    assert t_u.pre_var.iloc[0] == t_n.pre_var.iloc[0]
    assert abs(t_u.act_sq.iloc[0] / t_n.act_sq.iloc[0] - 1) > 1e-3
    with pytest.raises(ValueError, match="bias_dist='cauchy' is not accepted"):
        dl.theory.propagate([4, 4], "tanh", bias_var=1.0, bias_dist="cauchy")
