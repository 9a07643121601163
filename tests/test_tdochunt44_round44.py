"""Round 44 (tdochunt44): the torch doctor on a learning rate that the model's floating type
cannot hold (the optimizer's first step overflows the parameters' dtype)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers.cli import one_blas_thread, run_cli
from torch import nn

import depthlab.torch as dlt


def _data(n: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 16, generator=g)
    return x, x[:, :4].argmax(1)


def _mlp(dtype: torch.dtype = torch.float32) -> nn.Module:
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)).to(dtype)


@pytest.mark.parametrize("dtype, optimizer, lr, largest", [
    (torch.float32, "sgd", 1e39, "3.4e+38"),  # sgd's lr cast to float32 overflows
    (torch.float32, "adam", 1e300, "3.4e+38"),
    (torch.float16, "sgd", 1e5, "6.55e+04"),  # float16's largest value: 65504
    (torch.bfloat16, "sgd", 1e39, "3.39e+38"),
])
def test_a_learning_rate_the_parameters_dtype_cannot_hold_is_named(dtype, optimizer, lr,
                                                                    largest):
    # before: 'a training step with optimizer 'sgd' fails on mini-batches of 64 rows ...:
    # RuntimeError: value cannot be converted to type float without overflow', naming no lr
    kind = str(dtype).removeprefix("torch.")
    with pytest.raises(ValueError) as e:
        dlt.doctor(lambda: _mlp(dtype), _data(), optimizer=(optimizer, {"lr": lr}), steps=3,
                   verify=False)
    msg = str(e.value)
    assert "\n" not in msg
    assert f"lr {lr:g}" in msg and f"{optimizer!r}" in msg, msg
    assert f"{kind} parameters" in msg and f"largest {kind} value {largest}" in msg, msg
    assert "far smaller lr" in msg


def test_an_lr_within_the_dtype_still_diagnoses_the_divergence():
    # 1e38 < float32's 3.4e38: sgd steps, and the run diverges (a finding, not a refusal)
    d = dlt.doctor(_mlp, _data(), optimizer=("sgd", {"lr": 1e38}), steps=3, verify=False)
    assert "divergence" in d.kinds, str(d)


def test_other_step_failures_keep_their_own_message():
    # batch norm on 1-row mini-batches: the step's own failure, not an overflow
    def bn() -> nn.Module:
        return nn.Sequential(nn.Linear(16, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 4))

    with pytest.raises(ValueError, match="Expected more than 1 value per channel") as e:
        dlt.doctor(bn, _data(), batch_size=1, steps=3, verify=False)
    assert "overflows" not in str(e.value)


def test_the_cli_refuses_the_overflowing_lr_in_one_line_exit_2(tmp_path: Path, capsys,
                                                               monkeypatch):
    f = tmp_path / "m.py"
    f.write_text("from torch import nn\n"
                 "def make():\n"
                 "    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(),\n"
                 "                         nn.Linear(16, 10))\n")
    # `depthlab doctor` in this process (the message and the exit status are the subject, not
    # the process: a subprocess imported torch and depthlab anew, ~10 s of CPU)
    one_blas_thread(monkeypatch)
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, "doctor", "--torch", f"{f}:make", "--data", "digits",
                           "--lr", "1e39", "--steps", "3", "--out", tmp_path / "out")
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "lr 1e+39" in lines[0] and "float32" in lines[0], err
