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


class _BiasedOff(torch.nn.Module):
    """Two He-initialized ReLU layers applied with ``F.relu`` (no activation module), the
    second's biases at -3: every unit of layer 2 is off for every input from the start."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = torch.nn.Linear(6, 32), torch.nn.Linear(32, 32)
        self.fc3 = torch.nn.Linear(32, 2)
        for layer in (self.fc1, self.fc2):
            torch.nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            torch.nn.init.zeros_(layer.bias)
        torch.nn.init.constant_(self.fc2.bias, -3.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


def test_units_held_off_by_negative_biases_get_the_zero_bias_cure():
    """Dead units after a big negative bias, in a model applying ``F.relu`` itself: the rule's
    leaky-ReLU swap does not apply (no module to swap), and the cures verified instead (a 10x
    smaller lr, warm-up, Adam) cannot turn on units that no input reaches: 'none of the 3
    cures verified helped'. Zero biases (a cure the torch prescriptions apply) is now verified
    for a most-dead layer that started off with a negative mean, and helps."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 6, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).long()
    d = dlt.doctor(_BiasedOff, (x, y), steps=30, batch_size=32, max_cures=1)
    dead = next(f for f in d.findings if f.kind == "dead_relu")
    assert dead.evidence["worst_layer"] == 2 and dead.evidence["dead_frac_worst_init"] > 0.5
    tried = {str(sorted(v.prescription.items())): v for v in d.verifications
             if v.kind == "dead_relu"}
    cure = tried.get(str([("bias_init", "zeros")]))
    assert cure is not None, list(tried)
    assert cure.helped and cure.after["train_loss"] < 0.5 * cure.before["train_loss"], cure
