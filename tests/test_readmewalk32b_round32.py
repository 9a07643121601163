"""README walk (round 32): "A misspelled keyword of a theory function is a TypeError naming it
and the likely one". The theory has two names for the bias variance: the mean-field functions'
``sigma_b2`` (Poole et al., Schoenholz et al.) and the variance propagation's ``bias_var``. A user
who passed one to a function taking the other was told the keyword was an unknown argument *of
the activation* ("unknown argument 'sigma_b2' for activation 'tanh'; accepted: (none)")."""

from __future__ import annotations

import pytest

import depthlab as dl


@pytest.mark.parametrize("call, meant", [
    (lambda: dl.theory.propagate([64, 64, 64], "tanh", sigma_b2=0.1), "bias_var"),
    (lambda: dl.theory.gradient_ratio([64, 64, 64], "relu", "he_normal", sigma_b2=0.1),
     "bias_var"),
    (lambda: dl.theory.meanfield("tanh", 1.5, bias_var=0.1), "sigma_b2"),
    (lambda: dl.theory.q_map("tanh", 1.0, 1.5, bias_var=0.1), "sigma_b2"),
])
def test_the_other_name_of_the_bias_variance_is_named_not_blamed_on_the_activation(call, meant):
    with pytest.raises(TypeError) as err:
        call()
    msg = str(err.value)
    assert "for activation" not in msg, msg
    assert f"'{meant}'" in msg, msg


def test_the_right_name_still_gives_the_same_numbers():
    a = dl.theory.propagate([64, 64, 64], "tanh", bias_var=0.1)
    b = dl.theory.propagate([64, 64, 64], "tanh", "glorot_uniform", 1.0, 0.0, 0.1)
    assert a.equals(b)
    assert dl.theory.meanfield("tanh", 1.5, sigma_b2=0.1).q_star == pytest.approx(
        dl.theory.meanfield("tanh", 1.5, 0.1).q_star, rel=0, abs=0)


@pytest.mark.parametrize("kwargs, key", [
    ({"min_delta": "0.1"}, "min_delta"),
    ({"monitor": 3}, "monitor"),
    ({"patience": "3"}, "patience"),
])
def test_early_stopping_reads_its_settings_by_the_train_rules_a_wrong_type_a_type_error(kwargs,
                                                                                          key):
    # README: "`monitor` and `min_delta` are read by the config's [train] rules: ... a wrong
    # type a TypeError". dl.EarlyStopping(min_delta="0.1") was a plain ValueError, while
    # dl.fit(..., patience=2, min_delta="0.1") (the same setting) was a TypeError.
    with pytest.raises(TypeError, match=rf"^{key} = .* has the wrong type; accepted: ") as err:
        dl.EarlyStopping(**kwargs)
    assert isinstance(err.value, ValueError)  # as before, for code catching ValueError
    with pytest.raises(TypeError) as via_fit:
        dl.Trainer(dl.mlp([4, 6, 3]), **{"patience": 2, **kwargs})
    assert str(via_fit.value) == str(err.value)


def test_early_stopping_values_out_of_range_and_case_as_a_config_reads_them():
    assert dl.EarlyStopping(" VAL_ACC ").monitor == "val_acc"
    with pytest.raises(ValueError, match=r'^min_delta = -1 is out of range'):
        dl.EarlyStopping(min_delta=-1)
    with pytest.raises(ValueError, match=r'^monitor = "loss" is not accepted \(did you mean'):
        dl.EarlyStopping("loss")
    with pytest.raises(ValueError, match=r"^patience"):
        dl.EarlyStopping(patience=0)
    with pytest.raises(ValueError, match=r"^patience"):
        dl.EarlyStopping(patience=None)
