"""Shared building blocks: the name registry, scalar validators, jsonable, optimizer
hyperparameters from the signature, initializers as VarianceScaling specializations."""

from __future__ import annotations

import math

import numpy as np
import pytest

import depthlab as dl
from depthlab import activations, initializers, losses, optimizers
from depthlab.jsonable import jsonable
from depthlab.parameter import Parameter
from depthlab.registry import Registry
from depthlab.validators import as_number, positive_int, rate, real


def test_registry_normalises_aliases_and_rejects_with_the_names():
    reg = Registry("thing", {"big_one": dict, "small": list}, aliases={"large": "big_one"})
    assert reg.key(" Big-One ") == "big_one" and reg.key("LARGE") == "big_one"
    assert "large" in reg and "huge" not in reg and 3 not in reg
    with pytest.raises(ValueError, match=r"^unknown thing 'huge'; expected one of: big_one, "
                                         r"small$"):
        reg.key("huge")
    with pytest.raises(ValueError, match="points to unregistered"):
        Registry("thing", {"a": dict}, aliases={"b": "c"})


@pytest.mark.parametrize("module,getter,name,alias", [
    (activations, activations.get_activation, "leaky_relu", "LReLU"),
    (initializers, initializers.get_initializer, "glorot_uniform", "xavier-uniform"),
    (losses, losses.get_loss, "cross_entropy", "CE"),
])
def test_the_four_lookups_share_the_registry(module, getter, name, alias):
    assert isinstance(module.REGISTRY, Registry)
    assert getter(alias).name == name
    with pytest.raises(ValueError, match=f"unknown {module.REGISTRY.kind} 'nope'"):
        getter("nope")
    with pytest.raises(TypeError, match=rf"unknown argument 'bogus' for {module.REGISTRY.kind} "
                                        rf"'{name}'; accepted: "):
        getter(name, bogus=1)
    built = getter(name)
    assert getter(built) is built  # built objects pass through


def test_optimizer_lookup_and_hyperparameters_from_the_signature():
    p = [Parameter("w", np.zeros(3))]
    assert isinstance(optimizers.REGISTRY, Registry)
    with pytest.raises(TypeError, match="unknown argument 'betas' for optimizer 'sgd'"):
        optimizers.get_optimizer("SGD", p, betas=(0.9, 0.99))
    for name in optimizers.OPTIMIZERS:
        cls = optimizers.optimizer_class(name)
        opt = optimizers.get_optimizer(name, p, lr=0.5)
        hp = opt.hyperparameters()
        assert list(hp) == cls.hyperparameter_names() and hp["lr"] == 0.5
        twin = cls(p, **hp)  # the hyperparameters rebuild the optimizer
        assert twin.hyperparameters() == hp
        assert cls.check_hyperparameters(**hp) == hp
    with pytest.raises(ValueError, match="Nesterov"):
        optimizers.optimizer_class("sgd").check_hyperparameters(nesterov=True)
    with pytest.raises(ValueError, match="empty parameter list"):
        optimizers.SGD(())


def test_initializers_are_variance_scaling_specializations():
    cases = {"glorot_normal": (1.0, "fan_avg", "normal"), "glorot_uniform": (1.0, "fan_avg",
             "uniform"), "he_normal": (2.0, "fan_in", "normal"), "he_uniform": (2.0, "fan_in",
             "uniform"), "lecun_normal": (1.0, "fan_in", "normal"),
             "lecun_uniform": (1.0, "fan_in", "uniform")}
    for name, (scale, mode, dist) in cases.items():
        init = initializers.get_initializer(name)
        assert isinstance(init, initializers.VarianceScaling) and type(init).name == name
        ref = initializers.VarianceScaling(scale, mode, dist)
        assert init.variance(30, 50) == ref.variance(30, 50)
        np.testing.assert_array_equal(init((30, 50), 4), ref((30, 50), 4))
        assert "Var(W)" in type(init).__doc__  # the class's own docstring, not rewritten
    assert initializers.he_normal is initializers.HeNormal
    assert initializers.HeNormal(mode="fan_out").variance(30, 50) == 2 / 50


def test_activations_without_their_own_backward_use_the_base_rule():
    s = np.linspace(-3, 3, 13)
    for name in activations.ACTIVATIONS:
        fn = activations.get_activation(name)
        a = fn.forward(s.copy())
        g = fn.backward(s, a, np.ones_like(s))
        if fn.elementwise:
            np.testing.assert_allclose(g, fn.derivative(s, a), rtol=1e-12, err_msg=name)
    own = [c.__name__ for c in activations.REGISTRY.factories.values()
           if "backward" in vars(c)]
    # Tanh's own backward is the base rule in one pass (depthlab.kernels.tanh_backward)
    assert set(own) == {"Sigmoid", "Identity", "Step", "ReLU", "Softmax", "Softsign", "Tanh"}


def test_validators():
    assert real("x", 2) == 2.0 and type(real("x", np.float32(1.5))) is float
    with pytest.raises(TypeError, match="x must be a real number"):
        real("x", True)
    with pytest.raises(ValueError, match="x must be a finite number > 0, got 0"):
        real("x", 0, positive=True)
    assert positive_int("n", np.int64(3)) == 3
    with pytest.raises(ValueError, match="n must be an integer >= 2, got 1"):
        positive_int("n", 1, minimum=2)
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\), got 1"):
        rate("p", 1)
    assert math.isnan(as_number(None)) and math.isnan(as_number("1")) and as_number(True) == 1


def test_jsonable():
    out = jsonable({1: (np.float32(0.5), np.array([1.0, np.inf])), "n": np.int64(2),
                    "x": float("nan"), "p": dl})
    assert out["1"] == [0.5, [1.0, None]] and out["n"] == 2 and out["x"] is None
    assert isinstance(out["p"], str)
