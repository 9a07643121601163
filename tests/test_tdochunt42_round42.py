"""Round 42 (tdochunt42): the torch doctor's command-line refusals leave no results store
behind and name a bad ``--optimizer`` in the other options' words; the torch doctor on
cases with known answers."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F  # noqa: N812

import depthlab.torch as dlt

MODELS = '''
from torch import nn


def make_model():
    return nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))


def raises():
    raise RuntimeError("boom")


def not_a_module():
    return 3


def no_return():
    nn.Sequential(nn.Linear(64, 10))


def a_class():
    return nn.Linear
'''


def _doctor_cli(tmp_path, capsys, spec: str, *extra: str) -> tuple[int, list[str]]:
    from depthlab.cli import main

    (tmp_path / "m.py").write_text(MODELS)
    data = () if "--data" in extra else ("--data", "digits")
    code = main(["doctor", "--torch", spec.replace("M", str(tmp_path / "m.py")), *data,
                 "--n", "60", "--steps", "2", "--out", str(tmp_path / "out"), *extra])
    return code, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize("spec, extra, words", [
    ("nofile.py:make_model", (), "no such file"),
    ("M:nothere", (), "has no 'nothere'"),
    ("M:raises", (), "raised RuntimeError: boom"),
    ("M:not_a_module", (), "returned an int, not a torch.nn.Module"),
    ("M:no_return", (), "returned None (it returns nothing: end it with `return model`), not "
                        "a torch.nn.Module"),
    ("M:a_class", (), "returned the class Linear (not an instance: return Linear(...)), not a "
                      "torch.nn.Module"),
    ("M:make_model", ("--data", "no-such-set"), "--data 'no-such-set': unknown data set"),
    ("M:make_model", ("--optimizer", "nope"), "--optimizer 'nope' is not accepted; accepted: "
                                              "sgd, adam, adamw, nadam, rmsprop, adagrad, "
                                              "adadelta"),
    ("M:make_model", ("--optimizer", "Adamm"), "--optimizer 'Adamm' is not accepted (did you "
                                               "mean 'adam'?); accepted: sgd, adam,"),
])
def test_a_bad_torch_doctor_command_is_one_line_exit_2_and_writes_no_store(
        tmp_path, capsys, spec, extra, words):
    """Each refusal is one line with exit status 2, and no results folder is created: the
    store was created (empty) before the factory and the data set were read."""
    code, err = _doctor_cli(tmp_path, capsys, spec, *extra)
    assert code == 2 and len(err) == 1, err
    assert words in err[0], err[0]
    assert not (tmp_path / "out").exists(), list((tmp_path / "out").iterdir())


def _classes(n: int = 128, d: int = 6):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=g)
    return x, (x[:, 0] + x[:, 1] > 0).long()


def _small_mlp() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))


@pytest.mark.parametrize("loss_fn", [
    lambda o, t: F.cross_entropy(o, t) * float("nan"),
    lambda o, t: torch.log(o - o.abs().max() - 1.0).mean(),  # a log of negative numbers
    lambda o, t: F.cross_entropy(o[t > 5], t[t > 5]),  # a mean over no example
])
def test_a_loss_non_finite_on_finite_outputs_is_refused_in_one_clear_line(loss_fn):
    """A loss that is NaN from step 0 on the model's finite outputs was diagnosed as
    'divergence ... the initial weights overflow', and every re-initialization and smaller
    learning rate was re-trained to NaN ('did not help'): the loss function, not the model,
    is at fault, and the doctor now says so before any training."""
    with pytest.raises(ValueError) as info:
        dlt.doctor(_small_mlp, _classes(), loss_fn=loss_fn, steps=3, verify=True)
    text = str(info.value)
    assert "\n" not in text and "loss_fn returned nan" in text, text
    assert "on finite model outputs" in text, text


def test_a_loss_overflowing_on_huge_outputs_is_still_diagnosed_as_divergence():
    """Outputs so large that the loss overflows in float32 (MSE of outputs ~1e20) are the
    initial weights' fault: still the divergence finding, not the loss function's refusal."""
    def make() -> torch.nn.Module:
        m = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1),
                                torch.nn.Flatten(0))
        torch.nn.init.constant_(m[2].weight, 1e19)
        return m

    x, y = _classes()
    diag = dlt.doctor(make, (x, y.float()), loss_fn="mse", steps=3, verify=False)
    assert "divergence" in [f.kind for f in diag.findings], str(diag)


def test_a_divergence_from_unscaled_targets_is_cured_first_by_standardizing_them():
    """MSE on targets of scale 1000 at SGD lr 0.1 diverges at step 4: the divergence's own
    cures (lr/10, warm-up) diverged too ('none of the 2 cures verified helped') while the
    same run's unscaled_targets finding's standardization trained it (nan -> 2.4e5). A
    divergence beside an unscaled_targets finding verifies the standardization first (the
    run is shared: no extra training)."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(256, 8, generator=g)
    y = 1000 * (x @ torch.randn(8, 1, generator=g))[:, 0] + 3000

    def make() -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(),
                                   torch.nn.Linear(16, 1), torch.nn.Flatten(0))

    diag = dlt.doctor(make, (x, y), loss_fn="mse", steps=10, max_cures=1)
    kinds = [f.kind for f in diag.findings]
    assert "divergence" in kinds and "unscaled_targets" in kinds, str(diag)
    cured = [v for v in diag.verifications if v.kind == "divergence"]
    assert cured and cured[0].prescription == {"target_scale": "standardize"}, str(diag)
    assert cured[0].helped, str(diag)
    div = next(f for f in diag.findings if f.kind == "divergence")
    assert div.prescription == {"target_scale": "standardize"}, str(diag)


def test_the_fitted_constant_loss_keeps_named_tuples_lists_and_other_parts_of_an_output():
    """Pins ``fitted_constant_loss``'s tree map (one helper now for taking the model's output
    apart and putting the constants back): a named tuple stays that named tuple, a list a list,
    a non-tensor part as it was; the fitted loss is the label entropy of a cross-entropy."""
    from collections import namedtuple

    from depthlab.torch.baselines import fitted_constant_loss

    out_type = namedtuple("Out", "logits extra")
    y = torch.tensor([0, 0, 1, 2] * 8)
    out = out_type(torch.randn(len(y), 3), [torch.zeros(len(y), 2), 7])

    def loss(o, t):
        assert type(o) is out_type and isinstance(o.extra, list) and o.extra[1] == 7, o
        assert o.logits.shape == (len(t), 3) and o.extra[0].shape == (len(t), 2), o
        return F.cross_entropy(o.logits, t) + 0.0 * o.extra[0].sum()

    p = torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64)
    assert fitted_constant_loss(loss, y, out, rows=len(y)) == pytest.approx(
        float(-(p * p.log()).sum()), abs=1e-6)


@pytest.mark.parametrize("make, words", [
    (lambda: None, "got None (it returns nothing: end it with `return model`)"),
    (lambda: torch.nn.Linear, "got the class Linear (not an instance: return Linear(...))"),
])
def test_a_factory_returning_none_or_a_module_class_is_told_what_to_return(make, words):
    """'returned a NoneType' (a factory without its return line) and 'returned a type' (the
    class, not an instance) named Python's internals, not the mistake."""
    with pytest.raises(TypeError) as info:
        dlt.doctor(make, _classes(), steps=2, verify=False)
    assert words in str(info.value), info.value
