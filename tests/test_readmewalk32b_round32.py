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
