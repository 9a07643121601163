"""Round 40 (tdochunt40): the torch doctor's one-line refusals of a model factory (or a
model file) that fails with an exception whose message is empty."""

from __future__ import annotations

import pytest
import torch

import depthlab.torch as dlt

FAILING = '''
import sys


def bare():
    raise RuntimeError()


def quits():
    sys.exit()
'''

FAILING_IMPORT = "raise RuntimeError()\n"


def _xy():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 6, generator=g)
    return x, (x[:, 0] > 0).long()


@pytest.mark.parametrize("name", ["bare", "quits"])
def test_a_factory_failing_without_a_message_is_named_without_a_dangling_colon(
        tmp_path, capsys, name):
    """A factory raising ``RuntimeError()`` (or calling ``sys.exit()``) has an empty message:
    the refusal read '... raised RuntimeError: ' (CLI: '... raised RuntimeError:' and, for
    the API, 'raised RuntimeError: ; expected a function ...'), a colon before nothing."""
    from depthlab.cli import main

    path = tmp_path / "m.py"
    path.write_text(FAILING)
    code = main(["doctor", "--torch", f"{path}:{name}", "--data", "digits", "--n", "60"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    kind = "RuntimeError" if name == "bare" else "SystemExit"
    assert err[0].endswith(f"raised {kind}"), err[0]
    if name == "bare":
        namespace: dict = {}
        exec(compile(FAILING, str(path), "exec"), namespace)
        with pytest.raises(ValueError) as info:
            dlt.doctor(namespace["bare"], _xy(), steps=2, verify=False)
        assert "raised RuntimeError; expected a function" in str(info.value), info.value


def test_a_model_file_failing_on_import_without_a_message_has_no_dangling_colon(
        tmp_path, capsys):
    """A file whose import raises ``RuntimeError()``: '... failed: RuntimeError: ' was the
    line's end."""
    from depthlab.cli import main

    path = tmp_path / "m.py"
    path.write_text(FAILING_IMPORT)
    code = main(["doctor", "--torch", f"{path}:make", "--data", "digits", "--n", "60"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].endswith("failed: RuntimeError"), err[0]
