"""Round 42 (tdochunt42): the torch doctor's command-line refusals leave no results store
behind and name a bad ``--optimizer`` in the other options' words; the torch doctor on
cases with known answers."""

from __future__ import annotations

import pytest

MODELS = '''
from torch import nn


def make_model():
    return nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))


def raises():
    raise RuntimeError("boom")


def not_a_module():
    return 3
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
